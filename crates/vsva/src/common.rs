//! What every daemon command shares: where the daemon is, `--json`, the one-line error, and
//! the printing helpers.

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;
use vsva_client::{default_socket, Client, ClientError, LaunchError, Options};

/// Where the daemon is and how to print.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The daemon's socket (default: $VSVA_SOCKET, $XDG_RUNTIME_DIR/vsva/vsvad.sock, or /run/vsva/vsvad.sock for root).
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) socket: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Common {
    /// The socket to use.
    pub(crate) fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket)
    }

    pub(crate) fn connect(&self, name: &str) -> Result<Client, CliError> {
        let socket = self.socket();
        Client::connect(Options::new(&socket, name)).map_err(|e| match e {
            ClientError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                CliError(format!(
                    "no vsvad is running on {} (start one with `vsvad`, or pass --socket)",
                    socket.display()
                ))
            }
            other => CliError(format!("{}: {other}", socket.display())),
        })
    }
}

/// A command failure: one readable line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CliError(pub(crate) String);

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<LaunchError> for CliError {
    fn from(e: LaunchError) -> Self {
        CliError(e.to_string())
    }
}

pub(crate) fn print_json(v: &Value) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| CliError(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

/// Compresses an ascending list into ranges: `1-4,7,9-10`.
pub(crate) fn ranges(pasids: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pasids.len() {
        let start = pasids[i];
        let mut end = start;
        while i + 1 < pasids.len() && pasids[i + 1] == end + 1 {
            i += 1;
            end = pasids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges(&[9]), "9");
    }
}
