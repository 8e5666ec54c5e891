//! What every daemon command shares: where the daemon is and how long to wait for it,
//! `--json`, the one-line error, and the printing helpers.
//!
//! Output goes through `outln!` (never `println!`), so a closed stdout
//! (`vsva status | head -1`) ends the command quietly instead of panicking.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vsva_client::{default_socket, Client, ClientError, LaunchError, Options};

use crate::number::parse_u64;

/// How long a command waits for the daemon by default, per read or write.
const DEFAULT_TIMEOUT_S: &str = "10";

/// Where the daemon is, how long to wait for it, and how to print.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The daemon's socket (default: $VSVA_SOCKET, else $XDG_RUNTIME_DIR/vsva/vsvad.sock, else
    /// /tmp/vsva-$UID/vsvad.sock; /run/vsva/vsvad.sock for root).
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) socket: Option<PathBuf>,
    /// Print JSON instead of text: one compact JSON document on one line.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Seconds to wait for the daemon to answer before giving up (0: wait forever).
    #[arg(long, value_name = "SECONDS", global = true, default_value = DEFAULT_TIMEOUT_S,
          value_parser = parse_u64, allow_negative_numbers = true)]
    pub(crate) timeout: u64,
}

impl Common {
    /// The socket to use.
    pub(crate) fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket)
    }

    /// The connection options for this command's socket and timeout.
    pub(crate) fn options(&self, socket: PathBuf, name: &str) -> Options {
        let mut o = Options::new(socket, name);
        o.timeout = (self.timeout > 0).then(|| Duration::from_secs(self.timeout));
        o
    }

    /// Connects to the daemon, with a message a user can act on when it is not there or does
    /// not answer.
    pub(crate) fn connect(&self, name: &str) -> Result<Client, CliError> {
        let socket = self.socket();
        Client::connect(self.options(socket.clone(), name)).map_err(|e| match e {
            ClientError::Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                CliError::Message(format!(
                    "no vsvad is running on {} (start one with `vsvad`, or pass --socket)",
                    socket.display()
                ))
            }
            other => match CliError::from(other) {
                CliError::Message(m) => CliError::Message(format!("{}: {m}", socket.display())),
                closed => closed,
            },
        })
    }
}

/// A command failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// One readable line for stderr.
    #[error("{0}")]
    Message(String),
    /// Stdout was closed by its reader (`| head`): the command stops quietly.
    #[error("stdout was closed")]
    StdoutClosed,
}

impl CliError {
    /// A failure described by `msg`.
    pub(crate) fn msg(msg: impl Into<String>) -> Self {
        CliError::Message(msg.into())
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::TimedOut { after, .. } => CliError::Message(format!(
                "the daemon did not answer within {} s (is it stopped or overloaded? --timeout sets the wait)",
                after.as_secs()
            )),
            e => CliError::Message(e.to_string()),
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::StdoutClosed
        } else {
            CliError::Message(e.to_string())
        }
    }
}

impl From<LaunchError> for CliError {
    fn from(e: LaunchError) -> Self {
        CliError::Message(e.to_string())
    }
}

/// Writes one line to stdout; a failure (a closed stdout) returns from the calling function
/// with a [`CliError`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::common::CliError::from)?
    }};
}
pub(crate) use outln;

/// Waits `wait`, or less if stdout's reader goes away meanwhile: then
/// [`CliError::StdoutClosed`]. A command that waits between lines (`faults --follow`,
/// `top` into a pipe) would otherwise notice a reader that stopped (`| head -1`) only at its
/// next line, which may never come. A pipe whose reader closed reports `POLLERR`, a socket
/// or terminal that hung up `POLLHUP`; a file never reports either, so this is a plain wait.
pub(crate) fn wait_unless_stdout_closed(wait: Duration) -> Result<(), CliError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let out = io::stdout();
    let mut fds = [PollFd::new(&out, PollFlags::empty())];
    let timeout = Timespec {
        tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(wait.subsec_nanos()),
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(n) if n > 0 && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) => {
            Err(CliError::StdoutClosed)
        }
        Ok(_) => Ok(()),
        // Interrupted by a signal, or poll refused: wait the plain way.
        Err(_) => {
            std::thread::sleep(wait);
            Ok(())
        }
    }
}

/// Prints `v` as one compact JSON line: every `--json` output of every command has this
/// form, so scripts may read any of them line by line.
pub(crate) fn print_json(v: &Value) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Prints `vsva: {line}` on stderr. A stderr that cannot be written is ignored: there is
/// nowhere left to report it, and the exit code still tells.
pub(crate) fn warn(line: &dyn std::fmt::Display) {
    if writeln!(io::stderr().lock(), "vsva: {line}").is_err() {
        // Nothing to do: see above.
    }
}

/// A PCI requester id as `bus:device.function` (`01:00.0`), the form every output uses.
pub(crate) fn bdf(source_id: u16) -> String {
    format!(
        "{:02x}:{:02x}.{}",
        source_id >> 8,
        (source_id >> 3) & 0x1f,
        source_id & 7
    )
}

/// `s` safe to show on a terminal: control characters (escape sequences, newlines, bells) and
/// bidirectional overrides become `?`, as `ps` shows them. Another process's command line is
/// whatever that process chose; printed raw, it could recolour or clear the reader's terminal
/// or forge whole rows of the table.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// `s` cut to at most `max` characters; a cut is marked with a final "…" (which counts).
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_characters_not_bytes() {
        let cases: &[(&str, usize, &str)] = &[
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("abcdefghijk", 10, "abcdefghi…"),
            // A two-byte character straddles byte 10: a byte cut would panic.
            ("aéééééééééé", 10, "aéééééééé…"),
            ("日本語のコマンドライン", 4, "日本語…"),
        ];
        for &(s, max, want) in cases {
            assert_eq!(clip(s, max), want, "{s:?}");
            assert!(clip(s, max).chars().count() <= max);
        }
    }

    #[test]
    fn printable_defuses_terminal_controls() {
        assert_eq!(printable("qemu -m 1G"), "qemu -m 1G");
        assert_eq!(printable("a\u{1b}[31mb\nc\u{7}"), "a?[31mb?c?");
        assert_eq!(printable("x\u{202e}y\u{9b}z"), "x?y?z");
        assert_eq!(printable("é日本"), "é日本");
    }

    #[test]
    fn bdf_reads_like_lspci() {
        assert_eq!(bdf(0x0100), "01:00.0");
        assert_eq!(bdf(0x020a), "02:01.2");
    }
}
