//! What a long-running watcher (`top`, `faults --follow`) does when the daemon goes away: it
//! keeps running. It says so once on stderr, asks again at each interval, and says once when
//! the daemon answers again (and whether it is a restarted one). Only its first connection
//! must succeed: a mistyped `--socket` is an error, not a wait.
//!
//! Why not exit: a daemon restart is routine (an upgrade, `systemctl restart`, recovery after
//! a crash) and loses nothing a client holds, so what watches it should outlive it, as
//! `tail -F` and `journalctl -f` outlive what they follow. A pipeline such as
//! `vsva faults --follow --json | alerting` would otherwise need a retry loop of its own, and
//! would miss the faults logged between the restart and its next start. Whoever wants a
//! watcher to end presses Ctrl-C, or bounds it (`timeout 1h`, `top -n COUNT`).

use std::path::PathBuf;

use crate::common::{warn, CliError};

/// A watcher's stderr notices about the daemon going away and coming back: one line each
/// per outage, however many readings fail in between.
pub(crate) struct Outage {
    /// `top` or `faults`: the notices' prefix.
    command: &'static str,
    socket: PathBuf,
    /// How often the watcher asks again, as said in the notice.
    interval: String,
    /// The daemon instance last read from (it changes when the daemon restarts).
    instance: u64,
    /// Whether the daemon is away (its notice printed).
    away: bool,
}

impl Outage {
    /// Notices for `command` watching the daemon on `socket`, instance `instance`, asked every
    /// `interval`.
    pub(crate) fn new(
        command: &'static str,
        socket: PathBuf,
        interval: std::time::Duration,
        instance: u64,
    ) -> Outage {
        Outage {
            command,
            socket,
            interval: format!("{} s", interval.as_secs_f64()),
            instance,
            away: false,
        }
    }

    /// A reading failed with `error`: said on stderr, the first time of an outage only.
    pub(crate) fn lost(&mut self, error: &CliError) {
        if !self.away {
            self.away = true;
            warn(&format_args!(
                "{}: no answer from the daemon on {} ({error}); asking again every {} until it answers",
                self.command,
                self.socket.display(),
                self.interval
            ));
        }
    }

    /// A reading of daemon instance `instance` succeeded; returns whether that is another
    /// instance than the last one read (the daemon restarted). The end of an outage is said
    /// on stderr.
    pub(crate) fn answered(&mut self, instance: u64) -> bool {
        let restarted = instance != self.instance;
        self.instance = instance;
        if std::mem::take(&mut self.away) {
            warn(&format_args!(
                "{}: the daemon on {} answers again{}",
                self.command,
                self.socket.display(),
                if restarted { " (restarted)" } else { "" }
            ));
        }
        restarted
    }
}
