//! The daemon's files: the socket path replaces only a stale socket, the socket's directory
//! and the state directory are refused when another user controls them, the state is private,
//! and a damaged log is never silently wiped.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, TestDir};

/// Runs `vsvad` with `args` expecting it to refuse to start; returns its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsvad"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vsvad started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "vsvad exited 0 with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn socket_path_holding_another_file_is_refused_and_kept() {
    let dir = TestDir::new("notsock");
    let victim = dir.path().join("notes.toml");
    std::fs::write(&victim, "precious").unwrap();
    let err = refused(dir.path(), &["--socket", victim.to_str().unwrap()]);
    assert!(err.contains("not a socket"), "{err}");
    assert!(err.contains(victim.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = TestDir::new("stale");
    let sock = dir.path().join("vsvad.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let d = Daemon::start(dir.path(), "", &[]);
    d.client("after-stale").ping(b"x").unwrap();
}

#[test]
fn a_socket_directory_others_may_write_is_refused() {
    let dir = TestDir::new("wwdir");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = run.join("vsvad.sock");
    let err = refused(dir.path(), &["--socket", sock.to_str().unwrap()]);
    assert!(err.contains("other users may write"), "{err}");
    assert!(!sock.exists());
}

#[test]
fn state_directory_and_files_are_private() {
    let dir = TestDir::new("private");
    let mut d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("private");
    let h = c.nesting_container(1).unwrap();
    c.pasid_alloc(h, 1, u32::MAX).unwrap();
    assert_eq!(mode(&d.state), 0o700);
    for f in std::fs::read_dir(&d.state).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    // A state directory left open by an earlier version is narrowed at the next start.
    assert!(d.terminate().success());
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = d.state.join("state.log");
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart();
    // The store is open once the daemon answers.
    d.client("again").ping(b"x").unwrap();
    assert_eq!(mode(&d.state), 0o700);
    assert_eq!(mode(&log), 0o600);
}

/// A size-limited tmpfs mounted for one test (needs root), unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(at: &Path, size: &str) -> Option<SmallFs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(at.to_owned()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 12, item 6, on a real full disk: allocations are refused with ENOSPC and not
/// acknowledged, reads go on, the daemon recovers by itself once space returns, and after a
/// restart the process owns exactly what it was acknowledged.
#[test]
fn a_full_disk_refuses_changes_keeps_serving_reads_and_recovers() {
    let dir = TestDir::new("fulldisk");
    let Some(fs) = SmallFs::mount(&dir.path().join("fs"), "128k") else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let mut d = Daemon::start(dir.path(), "grace_period_secs = 60\n", &[]);
    d.state = fs.0.join("state");
    d.kill9();
    d.restart();
    let mut c = d.client("fill");
    let h = c.nesting_container(1).unwrap();
    let mut acked = vec![c.pasid_alloc(h, 1, u32::MAX).unwrap()];
    // Fill the filesystem.
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &[0; 4096]).is_ok() {}
    drop(f);
    let errno = loop {
        match c.pasid_alloc(h, 1, u32::MAX) {
            Ok(p) => acked.push(p),
            Err(e) => break e.errno(),
        }
        assert!(acked.len() < 100_000, "the log never filled the disk");
    };
    assert_eq!(errno, Some(vsva_client::Errno::ENOSPC));
    assert_eq!(c.status().unwrap().allocated as usize, acked.len());
    std::fs::remove_file(&filler).unwrap();
    common::wait_until("the store to take changes again", || {
        match c.pasid_alloc(h, 1, u32::MAX) {
            Ok(p) => {
                acked.push(p);
                true
            }
            Err(_) => false,
        }
    });
    d.kill9();
    d.restart();
    assert!(c.reconnect().unwrap());
    acked.sort_unstable();
    assert_eq!(c.hello().restored, acked);
    drop(d);
}
