//! The daemon commands of the `vsva` binary against a real `vsvad`: status, sets, pasid
//! alloc --hold and its stdin session, pasid free, quota (set and release), faults (and
//! `faults --follow`), and the demo, with and without a running daemon, in text and JSON.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{vsvad, wait_until, Daemon};

#[test]
fn status_sets_pasid_quota_and_faults() {
    let d = Daemon::start("cmds");
    let st = d.json(&["status"]);
    assert_eq!(st["pasid_bits"], 20);
    assert_eq!(st["allocated"], 0);
    assert_eq!(st["devices"].as_array().unwrap().len(), 4);
    let text = d.vsva(&["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("PASIDs: 0 of 1048575 allocated"));

    // A holder process with 3 PASIDs, driven through its stdin session.
    let mut holder = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["pasid", "alloc", "-n", "3", "--hold", "--json", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["pasids"], serde_json::json!([1, 2, 3]));
    let pid = first["pid"].as_u64().unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "free 2").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), r#"{"freed":[2]}"#);

    assert_eq!(d.json(&["sets"])["complete"], true);
    let entry = d.set_of(pid);
    assert_eq!(entry["pasids"], serde_json::json!([1, 3]));
    assert_eq!(entry["quota"], 1000);

    // Only the owner may free: `pasid free` from another process explains who owns it.
    let out = d.vsva(&["pasid", "free", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("belongs to pid {pid}")), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // Admin: lower the quota; the holder can then allocate only up to it.
    assert_eq!(d.json(&["quota", &pid.to_string(), "4"])["quota"], 4);
    writeln!(stdin, "alloc 5").unwrap();
    let got: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(got["allocated"], serde_json::json!([2, 4]));
    assert!(
        got["error"].as_str().unwrap().starts_with("ENOSPC"),
        "{got}"
    );
    let q = d.json(&["quota"]);
    let p = q["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap()
        .clone();
    assert_eq!(
        (p["owned"].as_u64(), p["quota"].as_u64()),
        (Some(4), Some(4))
    );

    // Admin: release the holder; its session ends.
    let r = d.json(&["quota", "--release", &pid.to_string()]);
    assert_eq!(r["freed"], 4);
    writeln!(stdin, "list").unwrap();
    let after = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    assert!(after.contains("error") || after.is_empty(), "{after}");
    drop(stdin);
    let _ = holder.wait();
    wait_until("the release", || d.json(&["status"])["allocated"] == 0);

    // The demo against this daemon, then its faults are visible.
    let demo = d.json(&["demo"]);
    assert_eq!(demo["ok"], true, "{demo}");
    assert_eq!(demo["private_daemon"], false);
    let f = d.json(&["faults"]);
    assert!(f["total"].as_u64().unwrap() >= 2);
    let reasons: Vec<&str> = f["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"0x71") && reasons.contains(&"0x59"),
        "{reasons:?}"
    );
}

#[test]
fn demo_starts_a_private_daemon_when_none_runs() {
    let dir = std::env::temp_dir().join(format!("vsva-cli-{}-nodaemon", std::process::id()));
    let socket = dir.join("none.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["demo", "--json", "--socket"])
        .arg(&socket)
        .env("VSVA_VSVAD", vsvad())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["private_daemon"], true);
    // The story's 14 steps and the page-fault chapter's 4 (the private daemon has the
    // ATS + PRI device the chapter needs).
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 18);
    assert!(steps[17]["title"]
        .as_str()
        .unwrap()
        .contains("its DMA completes"));
    // Its temporary directory is gone.
    let private = PathBuf::from(v["socket"].as_str().unwrap());
    assert!(!private.parent().unwrap().exists());
    // Without a daemon and without permission to start one: one readable line, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("vsva: no vsvad is running on"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

/// `vsva faults --follow` prints each record once, as it is logged, numbered: the demo's
/// faults appear on the running follower, and a second demo's identical faults appear again
/// with new numbers rather than being taken for the first ones.
#[test]
fn faults_follow_prints_each_new_record_once() {
    let d = Daemon::start("follow");
    let mut follower = Command::new(env!("CARGO_BIN_EXE_vsva"))
        .args([
            "faults",
            "--follow",
            "--json",
            "--interval-ms",
            "20",
            "--socket",
        ])
        .arg(&d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut read_faults = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| {
                let line = lines.next().expect("the follower stopped").unwrap();
                serde_json::from_str(&line).unwrap()
            })
            .collect()
    };
    let demo = d.json(&["demo"]);
    assert_eq!(demo["ok"], true, "{demo}");
    let total = d.json(&["faults"])["total"].as_u64().unwrap() as usize;
    assert!(total >= 2, "the demo logged {total} faults");
    let first = read_faults(total);
    assert_eq!(d.json(&["demo"])["ok"], true);
    let second = read_faults(total);
    let _ = follower.kill();
    let _ = follower.wait();
    let numbers: Vec<u64> = first
        .iter()
        .chain(&second)
        .map(|f| f["number"].as_u64().expect("a number on every record"))
        .collect();
    assert_eq!(numbers, (1..=2 * total as u64).collect::<Vec<_>>());
    // The second demo's records repeat the first's reasons: alike, yet each printed.
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["reason"], b["reason"]);
    }
}
