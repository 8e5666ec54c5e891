//! vsvad under systemd: the unit files in `dist/` pass `systemd-analyze verify`, a socket
//! created before the daemon (socket activation, driven by `systemd-socket-activate`) is
//! served — including the connection that started it — and left in place at exit, and
//! readiness and stopping are notified on `$NOTIFY_SOCKET` once the socket accepts.
//!
//! The systemd tools are part of the machines this project runs on; where one is missing
//! its test says SKIPPED on stderr and checks nothing.

mod common;

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sigterm, wait_until, Spawned, TestDir};
use vsva_client::{Client, Options};

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

fn client(socket: &Path) -> Client {
    let mut o = Options::new(socket, "systemd-test");
    o.timeout = Some(Duration::from_secs(20));
    Client::connect(o).expect("connect to vsvad")
}

#[test]
fn the_unit_files_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let dir = TestDir::new("units");
    for unit in ["vsvad.service", "vsvad.socket"] {
        let text = std::fs::read_to_string(dist().join("systemd").join(unit)).unwrap();
        // The unit names the installed binary; verify checks that it exists and runs.
        let text = text.replace("/usr/local/bin/vsvad", env!("CARGO_BIN_EXE_vsvad"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "vsvad.socket", "vsvad.service"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown or misspelt keys are only warnings: none may appear.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze warned:\n{stderr}"
    );
    let tmpfiles = std::fs::read_to_string(dist().join("tmpfiles.d/vsva.conf")).unwrap();
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["d", "/run/vsva", "0755", "root", "root", "-"]),
        "{tmpfiles}"
    );
}

#[test]
fn a_socket_made_before_the_daemon_is_served_and_left_in_place() {
    if !have("systemd-socket-activate") {
        return;
    }
    let dir = TestDir::new("activate");
    let socket = dir.path().join("vsvad.sock");
    // The activator creates and listens on the socket, and starts vsvad on the first
    // connection, handing the socket over as descriptor 3.
    let mut child = Spawned(
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .arg(env!("CARGO_BIN_EXE_vsvad"))
            // A different path than the socket's: the daemon must use the descriptor, not bind.
            .arg("--socket")
            .arg(dir.path().join("unused.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the activator's socket", || socket.exists());
    // This connection exists before the daemon does; it is served once vsvad runs.
    let mut first = client(&socket);
    let status = first.status().expect("STATUS through the inherited socket");
    assert_eq!(status.pasid_bits, 20);
    let mut second = client(&socket);
    assert_eq!(second.status().unwrap().connections, 2);
    drop((first, second));
    assert!(
        !dir.path().join("unused.sock").exists(),
        "vsvad bound its own socket"
    );
    assert!(sigterm(&mut child).success());
    // The socket file belongs to the service manager: still there after the daemon exits.
    assert!(socket.exists(), "vsvad removed the activated socket");
}

#[test]
fn readiness_and_stopping_are_notified() {
    let dir = TestDir::new("notify");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let socket = dir.path().join("vsvad.sock");
    let mut child = Spawned(
        Command::new(env!("CARGO_BIN_EXE_vsvad"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).expect("a READY notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(msg.contains("STATUS=serving"), "{msg}");
    // Ready means ready: the socket accepts at once, no polling needed.
    UnixStream::connect(&socket).expect("the socket accepts once READY=1 is sent");
    assert!(sigterm(&mut child).success());
    let n = notify.recv(&mut buf).expect("a STOPPING notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
}

#[test]
fn the_manual_page_the_units_name_is_generated() {
    let out = Command::new(env!("CARGO_BIN_EXE_vsvad"))
        .arg("--man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    // `man:vsvad(8)` in the units: section 8, every option documented.
    assert!(page.contains(".TH vsvad 8"), "{page}");
    for opt in [
        "config",
        "socket",
        "state\\-dir",
        "durability",
        "check\\-config",
    ] {
        assert!(
            page.contains(&format!("\\fB\\-\\-{opt}\\fR")),
            "--{opt} missing:\n{page}"
        );
    }
    assert!(page.contains("socket\\-activated"), "{page}");
}
