//! Long-running watchers (`top`, `faults --follow`) outlive the daemon they watch: stopped,
//! it is said once on stderr and the watcher goes on asking; restarted, it is said once more
//! and the watcher reads the new daemon (a restarted daemon's fault log from its first
//! record).

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Daemon;

/// A running `vsva` whose stdout and stderr lines arrive on channels; killed on drop.
struct Watcher {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Watcher {
    fn start(d: &Daemon, args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vsva"))
            .args(args)
            .arg("--socket")
            .arg(&d.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Watcher { child, out, err }
    }

    /// The next stdout line (as JSON) for which `want` holds; panics after 10 s (a hang
    /// guard, not a timing assertion).
    fn out_until(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .out
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no stdout line with {what}: {e}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if want(&v) {
                return v;
            }
        }
    }

    /// The next stderr line; panics after 10 s.
    fn err_line(&self, what: &str) -> String {
        self.err
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no stderr line {what}: {e}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `r`, read on a thread of their own.
fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn watchers_keep_running_through_a_daemon_restart_and_say_so_once_each_way() {
    let cases: &[(&str, &[&str])] = &[
        ("top", &["top", "-d", "0.1", "--json"]),
        (
            "faults",
            &["faults", "--follow", "--interval-ms", "50", "--json"],
        ),
    ];
    for &(name, args) in cases {
        let mut d = Daemon::start(&format!("watch-{name}"));
        // Faults for `faults --follow` to print at once (the demo's story makes some).
        assert_eq!(d.json(&["demo"])["ok"], true);
        let mut w = Watcher::start(&d, args);
        let first = w.out_until("a first reading", |_| true);

        d.stop();
        let lost = w.err_line("about the stopped daemon");
        assert!(
            lost.starts_with(&format!("vsva: {name}: no answer from the daemon on ")),
            "{name}: {lost}"
        );
        // Many intervals go by: the watcher runs on and says nothing more.
        std::thread::sleep(Duration::from_millis(500));
        assert!(w.child.try_wait().unwrap().is_none(), "{name} exited");
        assert!(w.err.try_recv().is_err(), "{name}: more than one notice");
        while w.out.try_recv().is_ok() {}

        d.start_again();
        let back = w.err_line("about the daemon back");
        assert!(
            back.starts_with(&format!("vsva: {name}: the daemon on "))
                && back.ends_with(" answers again (restarted)"),
            "{name}: {back}"
        );
        if name == "top" {
            w.out_until("a reading of the restarted daemon", |v| {
                v["instance"] != first["instance"]
            });
        } else {
            // The restarted daemon's log numbers from 1 again; its first fault is shown.
            assert_eq!(d.json(&["demo"])["ok"], true);
            w.out_until("the restarted daemon's first fault", |v| v["number"] == 1);
        }
        assert!(w.child.try_wait().unwrap().is_none(), "{name} exited");
    }
}
