//! `vsva top` against a real `vsvad`: the full-screen view in a real terminal (a detached
//! `tmux` session: open it, capture the pane, check it shows the processes and their counts,
//! quit with `q` (status 0), and interrupt it with Ctrl-C (status 130, as a shell reports a
//! command Ctrl-C ended)), and the line-per-reading form a pipe gets.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use support::{wait_until, Daemon};

/// A process holding `n` PASIDs until its stdin closes; returns it and its pid.
fn holder(d: &Daemon, n: u32) -> (Child, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args([
            "pasid",
            "alloc",
            "-n",
            &n.to_string(),
            "--hold",
            "--json",
            "--socket",
        ])
        .arg(&d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let pid = first["pid"].as_u64().unwrap();
    (child, pid)
}

/// A private tmux server (its own socket name, no user configuration), killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    /// `None` when tmux is not installed: the terminal test is then skipped, loudly.
    fn start(tag: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("SKIPPED: tmux is not installed; the full-screen view is not exercised");
            return None;
        }
        Some(Tmux {
            name: format!("vsva-top-{}-{tag}", std::process::id()),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.name, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    }

    /// The visible text of the pane.
    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Opens `vsva top` in a 120×40 terminal, waits until it shows both holders with their
/// counts, sends `keys`, and checks it ended with status `code` and left the alternate
/// screen.
fn view_quits_on(d: &Daemon, holders: &[(u64, u32)], keys: &str, code: u8, tag: &str) {
    let Some(tmux) = Tmux::start(tag) else {
        return;
    };
    // The shell reports how `vsva top` ended on the terminal's main screen, where it shows
    // only once the view has left its alternate screen, and stays (tmux's own record of a
    // dead pane's exit status and last output is not always kept).
    let cmd = format!(
        "{} top -d 0.2 --socket {}; echo \"vsva top exited with $?\"; sleep 60",
        env!("CARGO_BIN_EXE_vsva"),
        d.socket.display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut screen = String::new();
    wait_until("vsva top to show both holders and a rate", || {
        screen = tmux.capture();
        screen.contains("requests/s")
            && holders.iter().all(|(pid, n)| {
                screen.lines().any(|l| {
                    let w: Vec<&str> = l.trim_start_matches('│').split_whitespace().collect();
                    w.first() == Some(&pid.to_string().as_str())
                        && w.get(2) == Some(&n.to_string().as_str())
                })
            })
    });
    let owned: u32 = holders.iter().map(|h| h.1).sum();
    assert!(
        screen.contains(&format!("PASIDs {owned} / 1048575 owned")),
        "{screen}"
    );
    assert!(screen.contains("recent faults"), "{screen}");
    tmux.run(&["send-keys", "-t", "top", keys]);
    let mut after = String::new();
    wait_until("vsva top to exit", || {
        after = tmux.capture();
        after.contains("vsva top exited with")
    });
    assert!(
        after.contains(&format!("vsva top exited with {code}\n")),
        "after {keys}:\n{after}"
    );
    // The terminal was restored: the view's alternate screen is gone.
    assert!(
        !after.contains("recent faults"),
        "alternate screen left behind:\n{after}"
    );
}

#[test]
fn the_full_screen_view_shows_processes_quits_on_q_and_is_interrupted_by_ctrl_c() {
    let d = Daemon::start("top-view");
    let (mut a, pa) = holder(&d, 3);
    let (mut b, pb) = holder(&d, 5);
    view_quits_on(&d, &[(pa, 3), (pb, 5)], "q", 0, "q");
    view_quits_on(&d, &[(pa, 3), (pb, 5)], "C-c", 130, "ctrl-c");
    for c in [&mut a, &mut b] {
        drop(c.stdin.take());
        c.wait().unwrap();
    }
}

#[test]
fn a_pipe_gets_one_line_per_reading() {
    let d = Daemon::start("top-lines");
    let (mut a, pa) = holder(&d, 2);
    let out = d.vsva(&["top", "-n", "3", "-d", "0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("pasids 2/1048575"), "{text}");
    assert!(lines[0].contains("rates from the next reading"), "{text}");
    // Each reading is three requests, so the later lines see a non-zero request rate; no
    // device raised a page request.
    let value = |name: &str| {
        let words: Vec<&str> = lines[2].split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| *w == name)
            .unwrap_or_else(|| panic!("{name}: {text}"));
        words[i + 1].to_owned()
    };
    assert_ne!(value("requests/s"), "0", "{text}");
    assert_eq!(value("page-requests/s"), "0", "{text}");
    assert_eq!(value("pending-page-requests"), "0", "{text}");

    let out = d.vsva(&["top", "-n", "2", "-d", "0.1", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{text}");
    assert_eq!(docs[0]["rates"], Value::Null);
    assert!(
        docs[1]["rates"]["requests_per_s"].as_f64().unwrap() > 0.0,
        "{text}"
    );
    let set = docs[1]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pid"] == pa)
        .unwrap_or_else(|| panic!("holder listed: {text}"));
    assert_eq!(set["owned"], 2);
    drop(a.stdin.take());
    a.wait().unwrap();
}

#[test]
fn bad_intervals_and_a_missing_daemon_are_one_line_errors() {
    let d = Daemon::start("top-errors");
    for bad in ["0", "abc", "-2"] {
        let out = d.vsva(&["top", "-d", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("interval")
                || String::from_utf8_lossy(&out.stderr).contains("number"),
            "{bad}"
        );
    }
    // Zero readings is a mistyped command (it printed one reading).
    let out = d.vsva(&["top", "-n", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0: must be at least 1"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["top", "-n", "1", "--socket", "/nonexistent/vsvad.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no vsvad is running"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
