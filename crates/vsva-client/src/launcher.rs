//! A private `vsvad` for tools, examples and tests: the machine configuration it is given
//! ([`MachineConfig`]), finding the binary ([`find_vsvad`]), and starting and stopping it
//! ([`PrivateDaemon`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::connection::daemon_running;

/// Why a private daemon could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Its directory, configuration or log file could not be written.
    #[error("cannot prepare the private vsvad's directory: {0}")]
    Io(#[from] std::io::Error),
    /// The binary could not be run.
    #[error("cannot start {}: {source}", .vsvad.display())]
    Spawn {
        /// The binary that was run.
        vsvad: PathBuf,
        /// Why the spawn failed.
        source: std::io::Error,
    },
    /// It exited before accepting connections; `last_log_line` is its last word.
    #[error("the private vsvad exited at start ({status}): {last_log_line}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last line of its log.
        last_log_line: String,
    },
    /// It did not accept connections within 10 s.
    #[error("the private vsvad did not start in 10 s")]
    Timeout,
}

/// The daemon's TOML configuration for a machine of PASID-capable PCI functions, each in its
/// own IOMMU group.
///
/// Device `i` (from 0) gets BDF `{1 + i / 32}:{i % 32}.0` and group `i + 1`, so up to 8 160
/// devices fit. Top-level settings and sections (`pasid_quota`, `[limits]`, ...) given with
/// [`settings`](Self::settings) come first.
///
/// ```
/// let toml = vsva_client::MachineConfig::new(2)
///     .settings("pasid_quota = 100000")
///     .to_toml();
/// assert!(toml.starts_with("pasid_quota = 100000\n"));
/// assert_eq!(toml.matches("[[devices]]").count(), 2);
/// assert!(toml.contains("bdf = \"01:01.0\"\ngroup = 2\n"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineConfig {
    devices: u32,
    settings: String,
}

impl MachineConfig {
    /// A machine with `devices` PASID-capable functions and no other settings.
    pub fn new(devices: u32) -> Self {
        MachineConfig {
            devices,
            settings: String::new(),
        }
    }

    /// Adds TOML text (settings and whole sections) placed before the devices.
    pub fn settings(mut self, toml: &str) -> Self {
        self.settings.push_str(toml);
        self.settings.push('\n');
        self
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let mut s = self.settings.clone();
        for i in 0..self.devices {
            s.push_str(&format!(
                "[[devices]]\nbdf = \"{:02x}:{:02x}.0\"\ngroup = {}\n",
                1 + i / 32,
                i % 32,
                i + 1
            ));
        }
        s
    }
}

/// A `vsvad` started on a temporary socket and state directory, stopped (and its directory
/// removed) on drop.
///
/// The daemon is started `--ephemeral`: its standard input is a pipe whose write end only this
/// value holds (close-on-exec, so no program this process runs inherits it). Should this
/// process die without dropping it — `kill -9`, a crash, an abort — the kernel closes that
/// end, and the daemon stops by itself and removes its temporary directory (which a dead
/// process cannot), so nothing is left behind. (Not `PR_SET_PDEATHSIG`: it fires when the
/// *thread* that started the daemon exits, and a daemon started from a short-lived thread
/// would die with it; see `vsvad::ephemeral`.) A process that this one forks without `exec`
/// inherits the write end, and the daemon then lives until that process ends too.
///
/// A process that is ended by a catchable signal (Ctrl-C) runs no drop either; the daemon
/// then stops as above, once the process is gone. A tool that wants to end by the signal
/// after a clean stop handles SIGINT and SIGTERM and drops its `PrivateDaemon` first, as
/// `vsva demo` does.
pub struct PrivateDaemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    /// The write end of the daemon's standard input: its closing tells the daemon that this
    /// process has gone. Dropped after the daemon is stopped (fields drop after `drop`).
    _parent: Option<std::io::PipeWriter>,
}

impl std::fmt::Debug for PrivateDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateDaemon")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl PrivateDaemon {
    /// Starts `vsvad` with its default machine and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// See [`start_with`](Self::start_with).
    pub fn start(vsvad: &Path) -> Result<PrivateDaemon, LaunchError> {
        PrivateDaemon::start_with(vsvad, None, &[])
    }

    /// As [`start`](Self::start), with a TOML configuration (e.g. from [`MachineConfig`]) and
    /// extra command-line flags (`--log warn` unless `args` has a `--log`).
    ///
    /// # Errors
    ///
    /// A [`LaunchError`]. Nothing is left behind: a daemon that was spawned is stopped, and
    /// the temporary directory is removed, before the error returns.
    pub fn start_with(
        vsvad: &Path,
        config: Option<&str>,
        args: &[&str],
    ) -> Result<PrivateDaemon, LaunchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("vsva-demo-{}-{nanos}", std::process::id()));
        // Only the directory itself: a temporary directory that does not exist (a mistyped
        // `TMPDIR`) is an error, not a tree to make; and one already there is not taken over.
        std::fs::create_dir(&dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        // From here on, dropping `d` on an error removes the directory (and stops the
        // daemon once there is one).
        let mut d = PrivateDaemon {
            child: None,
            socket: dir.join(vsva_proto::paths::SOCKET_NAME),
            dir,
            _parent: None,
        };
        let dir = d.dir.clone();
        let mut cmd = Command::new(vsvad);
        if let Some(text) = config {
            let path = dir.join(vsva_proto::paths::PRIVATE_CONFIG_NAME);
            std::fs::write(&path, text)?;
            cmd.arg("--config").arg(path);
        }
        if !args.contains(&"--log") {
            cmd.args(["--log", "warn"]);
        }
        let log = std::fs::File::create(dir.join(vsva_proto::paths::PRIVATE_LOG_NAME))?;
        // Both ends close-on-exec; the daemon gets the read end as its standard input (which
        // is not), and only this value keeps the write end.
        let (to_daemon, parent) = std::io::pipe()?;
        d._parent = Some(parent);
        let child = cmd
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--ephemeral")
            .arg(&dir)
            .stdin(to_daemon)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                vsvad: vsvad.to_owned(),
                source,
            })?;
        d.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !daemon_running(&d.socket) {
            if let Some(Ok(Some(status))) = d.child.as_mut().map(|c| c.try_wait()) {
                let log = std::fs::read_to_string(d.dir.join("vsvad.log")).unwrap_or_default();
                let last_log_line = log.lines().last().unwrap_or("").to_string();
                return Err(LaunchError::Exited {
                    status,
                    last_log_line,
                });
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(d)
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id, until [`wait`](Self::wait) has seen it exit.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for the daemon to exit (after the caller stopped it, e.g. with `SIGTERM` to
    /// [`pid`](Self::pid)) and returns its exit status; `None` if it was already waited for.
    ///
    /// # Errors
    ///
    /// `waitpid` failed; the daemon is then still tracked, and dropping this stops it.
    pub fn wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        let Some(c) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = c.wait()?;
        self.child = None;
        Ok(Some(status))
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        // Stopping is best effort: a daemon that already exited cannot be signalled or
        // killed, and a directory already gone needs no removal.
        if let Some(mut c) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::TERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finds a `vsvad` binary: `explicit`, `$VSVA_VSVAD`, next to this program (or one directory
/// up, for test and example binaries), or in `PATH`.
pub fn find_vsvad(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("VSVA_VSVAD") {
        return Some(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join("vsvad");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("vsvad"))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_config_lays_out_devices_after_the_settings() {
        let cases: &[(u32, &[&str], &str)] = &[
            (0, &[], ""),
            (1, &[], "[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\n"),
            (
                2,
                &["pasid_quota = 7", "[limits]\nmax_connections = 4"],
                "pasid_quota = 7\n[limits]\nmax_connections = 4\n\
                 [[devices]]\nbdf = \"01:00.0\"\ngroup = 1\n\
                 [[devices]]\nbdf = \"01:01.0\"\ngroup = 2\n",
            ),
        ];
        for &(devices, settings, want) in cases {
            let config = settings
                .iter()
                .fold(MachineConfig::new(devices), |c, s| c.settings(s));
            assert_eq!(config.to_toml(), want, "{devices} devices, {settings:?}");
        }
        // The 33rd device starts the next bus.
        let toml = MachineConfig::new(33).to_toml();
        assert!(toml.ends_with("[[devices]]\nbdf = \"02:00.0\"\ngroup = 33\n"));
    }
}
