//! The fixture the daemon-command tests share: this build's `vsvad`, a daemon on a private
//! socket and state directory (restartable), running `vsva` against it.

#![allow(dead_code)] // Each test binary uses its own part of the fixture.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `vsvad` binary of this build, brought up to date first: `cargo test -p vsva` does not
/// rebuild it, and a stale daemon from an earlier build would speak an older protocol.
pub fn vsvad() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    BUILT.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "vsvad"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p vsvad failed");
    });
    dir.join("vsvad")
}

/// A `vsvad` whose configuration makes the test's own group the admin group, so the admin
/// path is exercised whoever runs the tests. Killed, and its directory removed, on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    /// A daemon in a fresh directory named after the test binary's pid and `tag`.
    pub fn start(tag: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vsva-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vsvad.sock");
        let gid = rustix::process::getgid().as_raw();
        std::fs::write(dir.join("c.toml"), format!("admin_group = \"{gid}\"\n")).unwrap();
        let child = Daemon::spawn(&dir, &socket);
        Daemon { child, dir, socket }
    }

    fn spawn(dir: &Path, socket: &Path) -> Child {
        let child = Command::new(vsvad())
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(dir.join("c.toml"))
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("vsvad to accept connections", || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        });
        child
    }

    /// Kills the daemon (SIGKILL: nothing acknowledged may be lost) and starts it again on
    /// the same socket and state directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills the daemon (SIGKILL); [`start_again`](Self::start_again) brings it back.
    pub fn stop(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the daemon again on the same socket and state directory, after
    /// [`stop`](Self::stop).
    pub fn start_again(&mut self) {
        self.child = Daemon::spawn(&self.dir, &self.socket);
    }

    /// Runs `vsva ARGS --socket SOCKET`.
    pub fn vsva(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vsva"))
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    /// Runs `vsva ARGS --json`, which must succeed, and parses its one JSON line.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.vsva(&a);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().count(),
            1,
            "{args:?}: one compact line: {text}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// The `vsva sets --json` entry of process `pid`.
    pub fn set_of(&self, pid: u64) -> Value {
        let sets = self.json(&["sets"]);
        sets["sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["pid"] == pid)
            .unwrap_or_else(|| panic!("pid {pid} listed: {sets}"))
            .clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` until it holds; panics after 10 s (a hang guard, not a timing assertion).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
