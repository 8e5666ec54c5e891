//! An ephemeral daemon (`vsvad --ephemeral DIR`): the private daemon a tool starts for itself
//! (`vsva demo`, `vsva_client::PrivateDaemon`) in a temporary directory, which must not outlive
//! that tool.
//!
//! The tool gives the daemon the read end of a pipe as its standard input and keeps the write
//! end (close-on-exec, so no program it runs inherits it). The daemon reads its standard input
//! until end of file, which comes when the last write end closes — when the tool exits, however
//! it ends: the kernel closes a killed process's descriptors too, SIGKILL included. The daemon
//! then stops as on SIGTERM (drains, flushes its state log, removes its socket) and removes
//! DIR, which nobody else would: a killed tool cleans up nothing.
//!
//! Why a pipe and not `PR_SET_PDEATHSIG`: the death signal is sent when the *thread* that
//! started the child exits, not the process, so a library that starts the daemon from a
//! short-lived thread (a test, a worker) would see it killed early; it needs `unsafe` code
//! between `fork` and `exec`, plus a check that the parent did not die before it was set; it
//! is Linux-only; and a signal would not tell the daemon that its directory is now its own to
//! remove. A pipe has no such race: a parent that died before the daemon first reads still
//! leaves an end of file to read. Its one gap: a process the tool forked without `exec`
//! inherits the write end, and the daemon lives until that process ends too.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::server::Handle;

/// Why `--ephemeral` was refused.
#[derive(Debug, thiserror::Error)]
pub enum EphemeralError {
    /// The socket or the state directory is outside DIR, which is cleared when the tool goes.
    #[error(
        "--ephemeral {}: the {what} {} is not inside it (an ephemeral daemon keeps everything \
         in the directory it clears when its parent exits)",
        .dir.display(), .path.display()
    )]
    Outside {
        /// DIR.
        dir: PathBuf,
        /// `socket` or `state directory`.
        what: &'static str,
        /// The path outside DIR.
        path: PathBuf,
    },
    /// Standard input is not a pipe or socket, so it cannot tell when the parent exits.
    #[error(
        "--ephemeral {}: standard input is {kind}, not a pipe from the process that started \
         the daemon (its end of file is how the daemon learns that process has gone)",
        .dir.display()
    )]
    NotAPipe {
        /// DIR.
        dir: PathBuf,
        /// What standard input is.
        kind: String,
    },
}

/// An ephemeral daemon's directory, checked; [`watch`](Self::watch) starts watching the
/// parent.
#[derive(Debug)]
pub struct Ephemeral {
    dir: PathBuf,
    socket: PathBuf,
    state_dir: PathBuf,
    orphaned: Arc<AtomicBool>,
}

impl Ephemeral {
    /// Checks that `socket` is directly in `dir`, that `state_dir` is inside it, and that
    /// standard input is a pipe (or a socket).
    ///
    /// # Errors
    ///
    /// An [`EphemeralError`] naming DIR and what is wrong.
    pub fn check(dir: &Path, socket: &Path, state_dir: &Path) -> Result<Ephemeral, EphemeralError> {
        let outside = |what, path: &Path| EphemeralError::Outside {
            dir: dir.to_owned(),
            what,
            path: path.to_owned(),
        };
        if socket.parent() != Some(dir) {
            return Err(outside("socket", socket));
        }
        if !state_dir.starts_with(dir) || state_dir == dir {
            return Err(outside("state directory", state_dir));
        }
        use rustix::fs::FileType;
        let kind = match rustix::fs::fstat(io::stdin().as_fd()) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::Fifo | FileType::Socket => None,
                FileType::CharacterDevice => Some("a character device (a terminal, /dev/null)"),
                FileType::RegularFile => Some("a regular file"),
                FileType::Directory => Some("a directory"),
                _ => Some("neither a pipe nor a socket"),
            },
            Err(_) => Some("not open"),
        };
        if let Some(kind) = kind {
            return Err(EphemeralError::NotAPipe {
                dir: dir.to_owned(),
                kind: kind.to_owned(),
            });
        }
        Ok(Ephemeral {
            dir: dir.to_owned(),
            socket: socket.to_owned(),
            state_dir: state_dir.to_owned(),
            orphaned: Arc::default(),
        })
    }

    /// Reads standard input on a thread of its own until end of file (or an error), then
    /// stops the server through `handle`. Call it once the server runs; an end of file that
    /// came earlier (the parent died while the daemon started) is read at once.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub fn watch(&self, handle: &Handle) -> io::Result<()> {
        let (handle, orphaned) = (handle.clone(), Arc::clone(&self.orphaned));
        std::thread::Builder::new()
            .name("vsvad-parent".into())
            .spawn(move || {
                let mut stdin = io::stdin().lock();
                let mut buf = [0u8; 64];
                // What the parent writes means nothing; only the end counts.
                loop {
                    match stdin.read(&mut buf) {
                        Ok(0) => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the pipe from the parent; taking it as gone");
                            break;
                        }
                        Ok(_) => {}
                    }
                }
                orphaned.store(true, Ordering::SeqCst);
                handle.stop();
                tracing::info!("the process that started this ephemeral daemon has gone; shutting down");
            })
            .map(drop)
    }

    /// Whether the daemon stopped because its parent had gone.
    pub fn orphaned(&self) -> bool {
        self.orphaned.load(Ordering::SeqCst)
    }

    /// Removes what a private daemon's directory holds — the socket, the state directory,
    /// and the configuration and log its starter names `PRIVATE_CONFIG_NAME` and
    /// `PRIVATE_LOG_NAME` (`vsva_proto::paths`) — and then the directory if that left it
    /// empty, once the daemon has stopped because its parent had gone: nobody else is left to
    /// do it. Nothing else is touched, so a DIR given by mistake (a home directory) loses no
    /// file the daemon did not own; it just stays.
    ///
    /// # Errors
    ///
    /// Something could not be removed; what could be is removed all the same.
    pub fn remove(&self) -> io::Result<()> {
        let gone = |result: io::Result<()>, path: &Path| match result {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                e.kind(),
                format!("cannot remove {}: {e}", path.display()),
            )),
            _ => Ok(()),
        };
        let files = [
            self.socket.clone(),
            self.dir.join(vsva_proto::paths::PRIVATE_CONFIG_NAME),
            self.dir.join(vsva_proto::paths::PRIVATE_LOG_NAME),
        ];
        let mut first_error = Ok(());
        for file in &files {
            first_error = first_error.and(gone(std::fs::remove_file(file), file));
        }
        first_error = first_error.and(gone(
            std::fs::remove_dir_all(&self.state_dir),
            &self.state_dir,
        ));
        // The state directory may sit deeper inside DIR: its parents inside DIR go if empty.
        let mut parent = self.state_dir.parent();
        while let Some(p) = parent.filter(|p| p.starts_with(&self.dir) && *p != self.dir) {
            let _ = std::fs::remove_dir(p);
            parent = p.parent();
        }
        first_error.and(gone(std::fs::remove_dir(&self.dir), &self.dir))
    }
}
