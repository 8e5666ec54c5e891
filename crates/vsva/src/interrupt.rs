//! Ctrl-C, `kill` and a closed terminal: a command that started a private `vsvad` stops it
//! and removes its temporary directory before it ends on SIGINT, SIGTERM or SIGHUP. (SIGKILL
//! cannot be handled: then the daemon notices its parent has gone and cleans up itself; see
//! `vsva_client::PrivateDaemon`.)
//!
//! Every long-running command ends the same way when interrupted: it cleans up, then ends by
//! the signal itself ([`end_by`]), so the shell reports 128 + the signal number (130 for
//! Ctrl-C, 143 for SIGTERM) and a shell script that ran it stops too, as it does for any
//! command Ctrl-C kills. Exiting with status 0 instead would tell a caller that the command
//! finished, and a script's loop would go on to its next command. Commands with nothing to
//! clean up (`faults --follow`, a `--hold` session) keep the default action, which is the
//! same ending.
//!
//! The daemon lives in a slot shared with a watcher thread. The command holds the slot's
//! lock while it starts or stops the daemon, so the watcher, woken by a signal, either finds
//! a whole daemon to stop or none at all; it never races a half-done start or stop.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vsva_client::PrivateDaemon;

use crate::common::CliError;

/// A private daemon that is stopped when the command ends, normally or by a signal.
pub(crate) struct Guarded {
    slot: Arc<Mutex<Option<PrivateDaemon>>>,
}

impl Guarded {
    /// Installs the SIGINT/SIGTERM/SIGHUP handling, then runs `start` with the signals held off
    /// until the daemon it returns is in place.
    ///
    /// # Errors
    ///
    /// The signal handlers could not be installed (nothing was started), or `start` failed
    /// (its error, unchanged).
    pub(crate) fn start(
        start: impl FnOnce() -> Result<PrivateDaemon, CliError>,
    ) -> Result<Guarded, CliError> {
        let slot: Arc<Mutex<Option<PrivateDaemon>>> = Arc::default();
        // SIGHUP too: a terminal or ssh session closed under the demo would otherwise leave
        // its daemon running and its directory behind.
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| CliError::msg(format!("cannot handle SIGINT/SIGTERM/SIGHUP: {e}")))?;
        let mut held = lock(&slot);
        let watched = Arc::clone(&slot);
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Waits for a start or stop in progress; dropping stops the daemon and
                // removes its directory.
                drop(lock(&watched).take());
                end_by(signal);
            }
        });
        *held = Some(start()?);
        drop(held);
        Ok(Guarded { slot })
    }

    /// The daemon's socket.
    pub(crate) fn socket(&self) -> std::path::PathBuf {
        lock(&self.slot)
            .as_ref()
            .map(|d| d.socket().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Stopped under the lock: a signal meanwhile waits for the stop to finish.
        let mut held = lock(&self.slot);
        drop(held.take());
    }
}

/// Ends the process by `signal` (SIGINT, SIGTERM, SIGHUP), as its default action would have,
/// once the caller has cleaned up: the parent sees a process the signal killed, and a shell
/// reports 128 + the signal number.
pub(crate) fn end_by(signal: i32) -> ! {
    // Restores the default action and raises the signal again (it never returns for these
    // signals; it aborts should the signal not end the process).
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    // Only for a signal it does not know: the status a shell would have reported.
    std::process::exit(128 + signal)
}

/// The slot, also after a panic elsewhere: stopping the daemon must still happen.
fn lock(slot: &Mutex<Option<PrivateDaemon>>) -> MutexGuard<'_, Option<PrivateDaemon>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
