//! What users hit with the daemon commands: a closed stdout, other processes' command lines,
//! a stopped daemon, Ctrl-C during the demo, a daemon restart under a `--hold` session, and
//! the number and PASID-list syntax shared by every command.

mod support;

use std::io::{BufRead, BufReader, Lines, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::{json, Value};
use support::{vsvad, wait_until, Daemon};

/// A `vsva pasid alloc -n N --hold --json` session: its first line, stdin and stdout.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    first: Value,
}

impl Holder {
    fn start(d: &Daemon, n: &str, arg0: Option<&str>) -> Holder {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vsva"));
        if let Some(a) = arg0 {
            cmd.arg0(a);
        }
        let mut child = cmd
            .args(["pasid", "alloc", "-n", n, "--hold", "--json", "--socket"])
            .arg(&d.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        Holder {
            child,
            stdin,
            lines,
            first,
        }
    }

    /// Sends one session command and parses its answer.
    fn ask(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap();
        let answer = self.lines.next().unwrap().unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{line}: {e}: {answer}"))
    }

    fn pid(&self) -> u64 {
        self.first["pid"].as_u64().unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let d = Daemon::start("closed");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["sets"],
        &["quota"],
        &["faults"],
    ] {
        // The reader is gone before the command writes anything: every write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn sets_cuts_a_multibyte_command_line_by_characters() {
    let d = Daemon::start("utf8");
    // Byte 40, where the COMMAND column is cut, falls inside a two-byte character.
    let arg0 = format!("a{}", "é".repeat(60));
    let holder = Holder::start(&d, "1", Some(&arg0));
    let out = d.vsva(&["sets"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with(&holder.pid().to_string()))
        .unwrap_or_else(|| panic!("holder listed: {text}"));
    assert!(row.ends_with(&format!("a{}…", "é".repeat(38))), "{row}");
    // JSON carries the command line whole.
    let entry = d.set_of(holder.pid());
    assert!(entry["command"].as_str().unwrap().starts_with(&arg0));
}

/// Another process's command line is shown with its control characters defused: an escape
/// sequence cannot reach the reader's terminal, nor a newline forge a row of the table.
#[test]
fn sets_shows_no_terminal_control_from_a_command_line() {
    let d = Daemon::start("controls");
    let holder = Holder::start(&d, "1", Some("evil\u{1b}[2J\nFAKE 1 0 live\u{7}"));
    let out = d.vsva(&["sets"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(['\u{1b}', '\u{7}']), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("FAKE")), "{text:?}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with(&holder.pid().to_string()))
        .unwrap_or_else(|| panic!("holder listed: {text}"));
    assert!(row.contains("evil?[2J?FAKE 1 0 live?"), "{row:?}");
}

/// A `--hold` session answers a line that is not UTF-8 as a bad command and goes on holding
/// its PASIDs.
#[test]
fn a_hold_session_survives_a_line_that_is_not_utf8() {
    let d = Daemon::start("holdutf8");
    let mut holder = Holder::start(&d, "2", None);
    holder.stdin.write_all(b"free \xff\xfe\n").unwrap();
    let answer: Value = serde_json::from_str(&holder.lines.next().unwrap().unwrap()).unwrap();
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(error.contains("not UTF-8"), "{error}");
    assert_eq!(holder.ask("list")["pasids"], json!([1, 2]));
}

/// `vsva status --timeout 1` against a stopped daemon fails with one line saying so, and not
/// before the second has passed: once when the connection is taken but never answered, once
/// when the listen backlog is full and the connect itself cannot complete. The daemon answers
/// again once it runs.
#[test]
fn a_stopped_daemon_is_reported_after_the_timeout() {
    use std::time::{Duration, Instant};
    let d = Daemon::start("stopped");
    let pid = Pid::from_child(&d.child);
    stop(pid);
    let timed = |d: &Daemon| {
        let started = Instant::now();
        let out = d.vsva(&["status", "--timeout", "1"]);
        (out, started.elapsed())
    };
    let answered = timed(&d);
    // With its listen backlog full as well, the connect itself gives up after the timeout.
    let held = fill_backlog(&d.socket);
    let refused = timed(&d);
    drop(held);
    kill_process(pid, Signal::CONT).unwrap();
    for (out, took) in [answered, refused] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("the daemon did not answer within 1 s"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        // Only a lower bound: how much later it fires depends on the machine's load.
        assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    }
    // Answering again once it runs (the timeout in hexadecimal, as the parser allows). The
    // daemon first drains the backlog of connections held above, all closed by now: the
    // timeout is generous so that this does not depend on how fast it gets through them.
    assert_eq!(d.json(&["status", "--timeout", "0x1e"])["allocated"], 0);
}

/// Stops `pid` with SIGSTOP and waits until every thread of it is stopped (the signal takes
/// effect asynchronously, and a thread still running could answer in between).
fn stop(pid: Pid) {
    kill_process(pid, Signal::STOP).unwrap();
    let state = |stat: &str| -> Option<String> {
        Some(
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string(),
        )
    };
    wait_until("every thread of the daemon to stop", || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", pid.as_raw_nonzero())) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|stat| state(&stat))
                .is_some_and(|s| s == "T" || s == "t")
        })
    });
}

/// Connections that fill the listen backlog of a daemon that does not accept.
fn fill_backlog(socket: &std::path::Path) -> Vec<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let addr = SocketAddrUnix::new(socket).unwrap();
    let mut held = Vec::new();
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => held.push(fd),
            Err(rustix::io::Errno::AGAIN) => return held,
            Err(e) => panic!("connect {}: {e}", held.len()),
        }
        assert!(held.len() < 65_536, "the backlog never filled");
    }
}

/// An empty scratch directory for a test's `TMPDIR`.
fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vsva-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a scratch directory; what was left in it.
fn remove_scratch(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    let left = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let _ = std::fs::remove_dir_all(dir);
    left
}

/// The pid of a running child of `parent` whose command name is `name`.
fn child_named(parent: u32, name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm == name).then_some(pid)
    })
}

/// `vsva demo` in scratch directory `tmp` (its `TMPDIR`), blocked on its first line right
/// after its private daemon has started, with that daemon's pid. Its stdout is a pipe that is
/// already full: it blocks until the pipe's reader (returned) reads, or a signal comes.
fn blocked_demo(tmp: &std::path::Path) -> (Child, std::io::PipeReader, u32) {
    let (reader, writer) = std::io::pipe().unwrap();
    let flags = rustix::fs::fcntl_getfl(&writer).unwrap();
    rustix::fs::fcntl_setfl(&writer, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    while rustix::io::write(&writer, &[0u8; 4096]).is_ok() {}
    rustix::fs::fcntl_setfl(&writer, flags).unwrap();
    let demo = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["demo", "--socket"])
        .arg(tmp.join("none.sock"))
        .env("VSVA_VSVAD", vsvad())
        .env("TMPDIR", tmp)
        .stdout(writer)
        .spawn()
        .unwrap();
    let mut daemon = None;
    wait_until("the private vsvad", || {
        daemon = child_named(demo.id(), "vsvad");
        daemon.is_some()
    });
    (demo, reader, daemon.unwrap())
}

/// Whether process `pid` runs (a zombie nobody has reaped yet does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// `kill -9` runs no clean-up in the demo: its private daemon sees the pipe from its parent
/// close, stops by itself and removes its temporary directory.
#[test]
fn a_killed_demo_leaves_no_daemon_and_no_directory() {
    let tmp = scratch("sigkill");
    let (mut demo, reader, daemon) = blocked_demo(&tmp);
    kill_process(Pid::from_child(&demo), Signal::KILL).unwrap();
    assert_eq!(demo.wait().unwrap().signal(), Some(9));
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while running(daemon) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let alive = running(daemon);
    if alive {
        let _ = kill_process(Pid::from_raw(daemon as i32).unwrap(), Signal::KILL);
    }
    let left = remove_scratch(&tmp);
    assert!(
        !alive,
        "the private vsvad {daemon} still runs after its parent was killed"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_interrupted_demo_stops_its_private_daemon() {
    // It ends by the signal after its clean-up (the shell reports 130, 143 and 129), as
    // every long-running command does (tests/interrupt.rs). SIGHUP is what a closed terminal
    // or ssh session sends.
    for (signal, number, tag) in [
        (Signal::INT, 2, "sigint"),
        (Signal::TERM, 15, "sigterm"),
        (Signal::HUP, 1, "sighup"),
    ] {
        let tmp = scratch(tag);
        let (mut demo, reader, daemon) = blocked_demo(&tmp);
        kill_process(Pid::from_child(&demo), signal).unwrap();
        let status = demo.wait().unwrap();
        drop(reader);
        let alive = std::path::Path::new(&format!("/proc/{daemon}")).exists();
        if alive {
            let _ = kill_process(Pid::from_raw(daemon as i32).unwrap(), Signal::KILL);
        }
        let left = remove_scratch(&tmp);
        assert_eq!(
            status.signal(),
            Some(number),
            "{tag}: {status:?} ({:?})",
            status.code()
        );
        assert!(!alive, "{tag}: the private vsvad {daemon} still runs");
        assert!(left.is_empty(), "{tag}: left behind: {left:?}");
    }
}

#[test]
fn a_hold_session_resumes_after_a_daemon_restart() {
    let mut d = Daemon::start("resume");
    let mut holder = Holder::start(&d, "3", None);
    assert_eq!(holder.first["pasids"], json!([1, 2, 3]));
    d.restart();
    assert_eq!(holder.ask("list"), json!({ "pasids": [1, 2, 3] }));
    let got = holder.ask("alloc");
    assert_eq!(got["allocated"], json!([4]), "{got}");
    assert_eq!(d.set_of(holder.pid())["pasids"], json!([1, 2, 3, 4]));
}

#[test]
fn numbers_and_pasid_lists_read_the_same_everywhere() {
    let d = Daemon::start("numbers");
    // Hex counts; negative numbers get a message, not clap's "unexpected argument".
    let got = d.json(&["pasid", "alloc", "-n", "0x2"]);
    assert_eq!(got["pasids"].as_array().unwrap().len(), 2, "{got}");
    for args in [
        &["pasid", "alloc", "-n", "-1"][..],
        &["quota", "-5", "10"],
        &["pasid", "free", "-3"],
    ] {
        let out = d.vsva(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("negative numbers are not accepted"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }

    // Ranges and `all`, in the session and from outside, read what `list` prints.
    let mut holder = Holder::start(&d, "4", None);
    let pid = holder.pid();
    assert_eq!(holder.ask("free 2-3"), json!({ "freed": [2, 3] }));
    let out = d.vsva(&["pasid", "free", "1-0x4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    for p in [1, 4] {
        assert!(
            err.contains(&format!("PASID {p} belongs to pid {pid}")),
            "{err}"
        );
    }
    let out = d.vsva(&["pasid", "free", "all"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("PASID 4 belongs"));
    assert_eq!(holder.ask("free all"), json!({ "freed": [1, 4] }));
    assert_eq!(holder.ask("list"), json!({ "pasids": [] }));
}

#[test]
fn json_names_devices_one_way_on_one_line() {
    let d = Daemon::start("json");
    // `json` checks the document is one compact line.
    let status = d.json(&["status"]);
    assert_eq!(status["devices"][0]["source_id"], "00:03.0", "{status}");
    assert_eq!(d.json(&["demo"])["ok"], true);
    let faults = d.json(&["faults"]);
    for f in faults["faults"].as_array().unwrap() {
        let sid = f["source_id"].as_str().unwrap_or_default();
        assert!(sid.len() == 7 && sid.contains(':'), "{f}");
    }
}

#[test]
fn a_demo_whose_daemon_cannot_start_leaves_nothing_behind() {
    let tmp = scratch("nospawn");
    let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["demo", "--vsvad"])
        .arg(tmp.join("no-such-vsvad"))
        .arg("--socket")
        .arg(tmp.join("none.sock"))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let left = remove_scratch(&tmp);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot start"), "{err}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A `TMPDIR` that does not exist (a typo) is an error, not a directory tree the demo makes.
#[test]
fn a_demo_does_not_create_a_missing_tmpdir() {
    let tmp = scratch("notmp");
    let missing = tmp.join("no").join("such");
    let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["demo", "--vsvad", vsvad().to_str().unwrap(), "--socket"])
        .arg(tmp.join("none.sock"))
        .env("TMPDIR", &missing)
        .output()
        .unwrap();
    let made = tmp.join("no").exists();
    let left = remove_scratch(&tmp);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!made, "the demo created {}", missing.display());
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Connects with `options` (whose timeout is the short one under test), retrying while the
/// handshake itself times out: a daemon on a loaded machine may take longer than that timeout
/// to answer the hello, which is not what the callers test. The retries are bounded by a
/// generous deadline that only guards against a hang.
fn connect_short(options: &vsva_client::Options) -> vsva_client::Client {
    use std::time::{Duration, Instant};
    use vsva_client::{Client, ClientError};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(options.clone()) {
            Ok(client) => return client,
            Err(e @ ClientError::TimedOut { .. }) => {
                assert!(Instant::now() < deadline, "no handshake within 30 s: {e:?}");
            }
            Err(e) => panic!("connect: {e:?}"),
        }
    }
}

/// A call that times out (the daemon is stopped) closes its connection: the late reply the
/// daemon sends once it runs again is never taken for the next request's, which fails as a
/// disconnect instead; `reconnect` then gives a working connection.
#[test]
fn a_connection_that_timed_out_is_not_used_again() {
    use std::time::{Duration, Instant};
    use vsva_client::{Client, ClientError, Options};
    let d = Daemon::start("timed-out");
    let timeout = Duration::from_millis(300);
    let mut options = Options::new(&d.socket, "timed-out");
    options.timeout = Some(timeout);
    let mut client = connect_short(&options);
    let pid = Pid::from_child(&d.child);
    stop(pid);
    let started = Instant::now();
    let first = client.status();
    let took = started.elapsed();
    kill_process(pid, Signal::CONT).unwrap();
    assert!(
        matches!(first, Err(ClientError::TimedOut { .. })),
        "{first:?}"
    );
    // Only a lower bound: how much later it fires depends on the machine's load.
    assert!(took >= timeout, "timed out after {took:?}");
    // The late reply to the first request must not be taken for the second one's: wait until
    // the daemon, running again, has read that request and closed the connection (an
    // observer with a generous timeout is then its only one).
    let mut observer = Options::new(&d.socket, "observer");
    observer.timeout = Some(Duration::from_secs(30));
    let mut observer = Client::connect(observer).unwrap();
    wait_until("the daemon to close the timed-out connection", || {
        observer.status().unwrap().connections == 1
    });
    let second = client.status().unwrap_err();
    assert!(second.is_disconnect(), "{second:?}");
    // A new connection works (its handshake and call under the same short timeout: retried
    // only if the loaded machine makes that timeout expire).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match client.reconnect().and_then(|_| client.status()) {
            Ok(status) => break status,
            Err(e @ ClientError::TimedOut { .. }) => {
                assert!(Instant::now() < deadline, "no answer within 30 s: {e:?}");
            }
            Err(e) => panic!("after reconnecting: {e:?}"),
        }
    };
    assert_eq!(status.allocated, 0);
}

/// A call that busy-waits for its reply (`reply_spin` longer than the timeout) still times
/// out, at the timeout, against a stopped daemon: the spin counts toward the timeout.
#[test]
fn a_call_that_spins_for_its_reply_still_times_out() {
    use std::time::{Duration, Instant};
    use vsva_client::{ClientError, Options};
    let d = Daemon::start("spin-timeout");
    let timeout = Duration::from_millis(300);
    let mut options = Options::new(&d.socket, "spin-timeout");
    options.timeout = Some(timeout);
    // Longer than the timeout: the spin counts toward it.
    options.reply_spin = Some(Duration::from_secs(5));
    let mut client = connect_short(&options);
    let pid = Pid::from_child(&d.child);
    stop(pid);
    // On a thread, so that a spin that never ends fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let got = client.status();
        tx.send((got, started.elapsed())).ok()
    });
    let got = rx.recv_timeout(Duration::from_secs(60));
    kill_process(pid, Signal::CONT).unwrap();
    let (got, took) = got.expect("the call neither answered nor timed out within a minute");
    assert!(matches!(got, Err(ClientError::TimedOut { .. })), "{got:?}");
    // Only a lower bound: how much later it fires depends on the machine's load.
    assert!(took >= timeout, "timed out after {took:?}");
}

/// A command that waits between lines ends as soon as its reader is gone, not at a next line
/// that may never come: `vsva faults --follow | head -1` on a daemon that logs no more
/// faults, and `vsva top -d 3600 | head -1`.
#[test]
fn a_reader_that_leaves_ends_a_waiting_command() {
    let d = Daemon::start("leaves");
    for args in [&["faults", "--follow"][..], &["top", "-d", "3600"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vsva"))
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `top` prints its first reading before it waits; `faults --follow`, with no fault
        // logged, prints nothing. Either way the reader then goes.
        if args[0] == "top" {
            let mut first = String::new();
            BufReader::new(&reader).read_line(&mut first).unwrap();
            assert!(first.starts_with("up "), "{first}");
        }
        drop(reader);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} went on after its reader left");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// A socket path that is not UTF-8 (reached here through a link of that name) is printed
/// lossily in JSON, as in text, instead of panicking.
#[test]
fn json_names_a_socket_path_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let d = Daemon::start("nonutf8");
    let link = d.dir.join(std::ffi::OsStr::from_bytes(b"sock-\xff\xfe"));
    std::os::unix::fs::symlink(&d.socket, &link).unwrap();
    for args in [&["status", "--json"][..], &["demo", "--no-spawn", "--json"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
            .args(args)
            .arg("--socket")
            .arg(&link)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["socket"]
                .as_str()
                .unwrap()
                .ends_with("sock-\u{fffd}\u{fffd}"),
            "{v}"
        );
    }
}
