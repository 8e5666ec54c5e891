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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsvad"));
    cmd.arg("--state-dir").arg(dir.join("state")).args(args);
    refused_by(cmd)
}

/// Runs `cmd` (a `vsvad`) expecting it to refuse to start; returns its stderr.
fn refused_by(mut cmd: Command) -> String {
    let mut child = cmd
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
            panic!("vsvad started: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "vsvad exited 0: {cmd:?}");
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

/// A state file that is a symbolic link (dangling or not) or not a regular file is refused at
/// start, naming it, and nothing it points to is created, read into the state or written.
#[test]
fn state_files_that_are_links_or_not_regular_files_are_refused_and_untouched() {
    for name in ["state.log", "vsvad.lock"] {
        let dir = TestDir::new("statelink");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, state.join(name)).unwrap();
        let sock = dir.path().join("vsvad.sock");
        let args = ["--socket", sock.to_str().unwrap()];
        let err = refused(dir.path(), &args);
        assert!(
            err.contains(name) && err.contains("not a regular file"),
            "{err}"
        );
        assert!(
            !target.exists(),
            "{name}: the daemon created the link's target"
        );
        std::fs::write(&target, "precious").unwrap();
        let err = refused(dir.path(), &args);
        assert!(err.contains("not a regular file"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(state.join(name))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // A FIFO where the log belongs would block the replay forever.
    let dir = TestDir::new("statefifo");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        state.join("state.log"),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let sock = dir.path().join("vsvad.sock");
    let err = refused(dir.path(), &["--socket", sock.to_str().unwrap()]);
    assert!(
        err.contains("state.log") && err.contains("not a regular file"),
        "{err}"
    );
}

/// A leftover `state.log.tmp` that is a symbolic link is replaced, never written through: the
/// file it points to keeps its bytes.
#[test]
fn a_linked_temporary_log_is_not_written_through() {
    let dir = TestDir::new("tmplink");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("state.log.tmp")).unwrap();
    let d = Daemon::start(dir.path(), "", &[]);
    d.client("tmplink").ping(b"x").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(state.join("state.log"))
        .unwrap()
        .file_type()
        .is_file());
    drop(d);
}

/// A configuration that is not a regular file is refused at once, naming what it is: a FIFO
/// nobody writes to would otherwise hold the start forever, and a device like `/dev/zero`
/// never ends. So is a file over 1 MiB.
#[test]
fn a_config_that_is_not_a_regular_file_or_is_huge_is_refused() {
    let dir = TestDir::new("cfgkind");
    let fifo = dir.path().join("fifo.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let huge = dir.path().join("huge.toml");
    std::fs::write(&huge, "#".repeat((1 << 20) + 1)).unwrap();
    for (path, why) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (dir.path(), "a directory"),
        (huge.as_path(), "larger than 1048576 bytes"),
    ] {
        let err = refused(dir.path(), &["--config", path.to_str().unwrap()]);
        assert!(err.contains(why), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// A parse error that quotes a very long line of the file still says what is wrong: the
/// quoted line is cut, not the whole message dropped.
#[test]
fn a_config_error_on_a_very_long_line_is_still_reported() {
    let dir = TestDir::new("cfglong");
    let config = dir.path().join("long.toml");
    std::fs::write(&config, format!("nonsense = \"{}\"\n", "x".repeat(600_000))).unwrap();
    let err = refused(dir.path(), &["--config", config.to_str().unwrap()]);
    assert!(err.contains("unknown field `nonsense`"), "{err}");
    assert!(err.contains("more bytes)"), "{err}");
    assert!(err.len() < 8192, "{} bytes of error", err.len());
}

/// A log filter with a bad directive is refused at start, naming where it came from, instead
/// of the directive being dropped and the daemon starting with less logging than asked for.
#[test]
fn a_bad_log_filter_is_refused() {
    let dir = TestDir::new("logfilter");
    let err = refused(dir.path(), &["--log", "info,[[[{"]);
    assert!(err.contains("--log \"info,[[[{\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A refused value is reported under the name of the place it came from — the flag, the
/// environment variable or the file's key — whichever supplied it, so the user fixes the
/// right one (a too-long `--socket` once read "config key socket").
#[test]
fn a_refused_value_names_the_flag_variable_or_key_that_gave_it() {
    let dir = TestDir::new("origin");
    let long = format!("/tmp/{}/vsvad.sock", "s".repeat(120));
    let config = dir.path().join("vsvad.toml");
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let cases: &[(&[&str], Option<&str>, &str, &str)] = &[
        // (flags, VSVA_SOCKET, file, the error's start)
        (&["--socket", &long], None, "", "vsvad: --socket /tmp/sss"),
        (
            &[],
            Some(&long),
            "",
            "vsvad: environment variable VSVA_SOCKET = /tmp/sss",
        ),
        (
            &[],
            None,
            &format!("socket = \"{long}\""),
            "vsvad: config key socket = /tmp/sss",
        ),
        // The flag wins over the variable, and the variable over the file.
        (
            &["--socket", &long],
            Some("/tmp/v.sock"),
            "",
            "vsvad: --socket /tmp/sss",
        ),
        (
            &[],
            Some(&long),
            "socket = \"/tmp/f.sock\"",
            "vsvad: environment variable",
        ),
        (
            &[],
            None,
            "state_dir = \"\"",
            "vsvad: config key state_dir = \"\":",
        ),
        (
            &["--pasid-quota", "0"],
            None,
            "",
            "vsvad: --pasid-quota 0: must be at least 1",
        ),
        (
            &["--grace-period-secs", "86401"],
            None,
            "",
            "vsvad: --grace-period-secs 86401:",
        ),
        (
            &["--durability", "fast"],
            None,
            "",
            "vsvad: --durability fast: must be sync",
        ),
        (
            &["--metrics-addr", "10.0.0.1:9"],
            None,
            "",
            "vsvad: --metrics-addr 10.0.0.1:9:",
        ),
        (
            &["--metrics-addr", "nowhere"],
            None,
            "",
            "vsvad: --metrics-addr nowhere:",
        ),
        (
            &["--admin-group", "no-such-group-x"],
            None,
            "",
            "vsvad: --admin-group no-such",
        ),
        (
            &[],
            None,
            "admin_group = \"no-such-group-x\"",
            "vsvad: config key admin_group =",
        ),
        (
            &[],
            None,
            "pasid_quota = 0",
            "vsvad: config key pasid_quota = 0:",
        ),
    ];
    for (flags, env_socket, file, want) in cases {
        std::fs::write(&config, format!("{file}\n")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsvad"));
        cmd.arg("--config").arg(&config).env_remove("VSVA_SOCKET");
        if !file.contains("state_dir") {
            cmd.args(["--state-dir", state]);
        }
        cmd.args(*flags);
        if let Some(v) = env_socket {
            cmd.env("VSVA_SOCKET", v);
        }
        let err = refused_by(cmd);
        assert!(
            err.starts_with(want),
            "{flags:?} {env_socket:?} {file:?}:\n{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// `--ephemeral DIR` keeps everything in DIR and needs a pipe from its parent as standard
/// input; each refusal names the flag, DIR and what is wrong.
#[test]
fn an_ephemeral_daemon_refuses_paths_outside_its_directory_and_a_stdin_not_a_pipe() {
    let dir = TestDir::new("ephemeral-refused");
    let d = dir.path().to_str().unwrap();
    let (inside, outside) = (format!("{d}/e"), format!("{d}/other"));
    let cases: &[(String, String, &str)] = &[
        (
            format!("{outside}/s.sock"),
            format!("{inside}/state"),
            "the socket",
        ),
        (
            format!("{inside}/s.sock"),
            outside.clone(),
            "the state directory",
        ),
        (
            format!("{inside}/s.sock"),
            format!("{inside}/state"),
            "standard input is a character device",
        ),
    ];
    for (socket, state, want) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsvad"));
        cmd.args([
            "--ephemeral",
            &inside,
            "--socket",
            socket,
            "--state-dir",
            state,
        ]);
        let err = refused_by(cmd);
        assert!(
            err.starts_with(&format!("vsvad: --ephemeral {inside}: {want}")),
            "{socket} {state}: {err}"
        );
    }
}

/// An ephemeral daemon whose parent goes (the write end of its standard input closes) stops
/// cleanly and removes its directory; one stopped by SIGTERM leaves the directory to its
/// parent. It removes only what a private daemon's directory holds: a file of someone
/// else's in DIR stays, and so does DIR.
#[test]
fn an_ephemeral_daemon_stops_and_removes_its_directory_when_its_parent_goes() {
    let dir = TestDir::new("ephemeral");
    for (parent_goes, foreign) in [(true, false), (false, false), (true, true)] {
        let e = dir.path().join(format!("e-{parent_goes}-{foreign}"));
        std::fs::create_dir(&e).unwrap();
        // What a starting tool leaves there (`vsva_client::PrivateDaemon`).
        std::fs::write(e.join("vsvad.log"), "").unwrap();
        std::fs::write(e.join("vsvad.toml"), "").unwrap();
        if foreign {
            std::fs::write(e.join("notes.txt"), "mine").unwrap();
        }
        let socket = e.join("vsvad.sock");
        let (stdin, parent) = std::io::pipe().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vsvad"))
            .arg("--ephemeral")
            .arg(&e)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(e.join("state"))
            .args(["--log", "warn"])
            .stdin(stdin)
            .spawn()
            .unwrap();
        common::wait_until("vsvad to accept connections", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        let status = if parent_goes {
            drop(parent);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let Some(status) = child.try_wait().unwrap() else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vsvad still runs 10 s after its parent's pipe closed");
            };
            status
        } else {
            let status = common::sigterm(&mut child);
            drop(parent);
            status
        };
        assert!(status.success(), "parent goes: {parent_goes}: {status:?}");
        assert_eq!(e.exists(), !parent_goes || foreign, "{}", e.display());
        if parent_goes && foreign {
            let left: Vec<_> = std::fs::read_dir(&e)
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(left, ["notes.txt"], "{}", e.display());
        }
    }
}
