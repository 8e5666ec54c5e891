//! Operations: the Prometheus endpoint of the real daemon, and `SIGTERM` finishing the
//! requests already sent before exiting cleanly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{free_loopback_addr, scrape, Daemon, Helper, TestDir};
use vsva_client::{Errno, MachineConfig};
use vsva_proto::{encode_request, FrameHeader, Reply, Request};
use vsva_uapi::vfio::VFIO_IOMMU_PASID_REQUEST;
use vsva_uapi::{AddrWidth, BindRequest, PasidRequestOp};

/// Entry point of the helper client processes the tests spawn.
#[test]
#[ignore = "helper process entry point, run by the other tests"]
fn helper_process() {
    if let Ok(script) = std::env::var("VSVA_HELPER") {
        common::helper_main(&script);
    }
}

/// Reads one reply frame; `None` once the connection is closed.
fn read_reply(s: &mut UnixStream) -> Option<Reply> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    let mut body = vec![0u8; FrameHeader::parse(&h).body_len as usize];
    s.read_exact(&mut body).ok()?;
    Some(Reply::decode(&body).unwrap())
}

/// A raw connection of this process, past its hello.
fn raw_connection(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let hello = Request::Hello(vsva_proto::Hello {
        min_version: vsva_proto::PROTOCOL_VERSION,
        max_version: vsva_proto::PROTOCOL_VERSION,
        resume: vsva_proto::ResumeToken::default(),
        client: "raw".into(),
    });
    s.write_all(&encode_request(1, &hello)).unwrap();
    assert_eq!(read_reply(&mut s).unwrap().result, 0);
    s
}

#[test]
fn metrics_report_pasids_requests_errors_and_latency() {
    let dir = TestDir::new("metrics");
    let addr = free_loopback_addr();
    let d = Daemon::start(dir.path(), "", &["--metrics-addr", &addr]);
    let mut c = d.client("metrics");
    let h = c.nesting_container(1).unwrap();
    for _ in 0..3 {
        c.pasid_alloc(h, 1, u32::MAX).unwrap();
    }
    assert_eq!(
        c.pasid_alloc(h, 9, 8).unwrap_err().errno(),
        Some(Errno::EINVAL)
    );
    // An unbind of a PASID the process does not own answers 0, as the series does; the
    // refusal shows in the metrics instead.
    c.unbind(h, &BindRequest::new(777, 0x1000, AddrWidth::Bits48))
        .unwrap();
    let page = scrape(&addr);
    let refused_unbinds: u64 = page
        .lines()
        .filter(|l| l.starts_with("vsvad_nesting_refusals_total{op=\"unbind\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(refused_unbinds, 1, "{page}");
    // ...and in STATUS, for clients and `vsva status`.
    let refused: u64 = c
        .status()
        .unwrap()
        .nesting_refusals
        .iter()
        .filter(|n| n.op == "unbind")
        .map(|n| n.count)
        .sum();
    assert_eq!(refused, 1);
    let pid = std::process::id();
    for line in [
        "vsvad_pasid_capacity 1048575\n".to_string(),
        "vsvad_pasids_allocated 3\n".to_string(),
        format!("vsvad_process_pasids{{pid=\"{pid}\""),
        "vsvad_request_errors_total{kind=\"ioctl\",errno=\"EINVAL\"} 1\n".to_string(),
        "vsvad_request_duration_seconds_count{kind=\"ioctl\"}".to_string(),
        "vsvad_store_commits_total".to_string(),
        "vsvad_iotlb_hit_ratio".to_string(),
        "vsvad_connections 1\n".to_string(),
    ] {
        assert!(page.contains(&line), "missing {line:?} in\n{page}");
    }
    // PASID_REQUEST and NESTING_OP are ioctls: SET_IOMMU to make the container, 4 PASID
    // requests, 1 unbind.
    let ioctls: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("vsvad_requests_total{kind=\"ioctl\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ioctls, 6);
}

#[test]
fn sigterm_answers_requests_already_sent_then_exits_cleanly() {
    let dir = TestDir::new("drain");
    let mut d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("drain");
    let h = c.nesting_container(1).unwrap();
    let p = c.pasid_alloc(h, 1, u32::MAX).unwrap();
    // 200 requests in flight on a raw connection, then SIGTERM at once.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let bytes = encode_request(
        1,
        &Request::Hello(vsva_proto::Hello {
            min_version: vsva_proto::PROTOCOL_VERSION,
            max_version: vsva_proto::PROTOCOL_VERSION,
            resume: vsva_proto::ResumeToken::default(),
            client: "drain".into(),
        }),
    );
    // The hello's reply proves the daemon accepted this connection before the signal.
    s.write_all(&bytes).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let mut body = vec![0u8; FrameHeader::parse(&h).body_len as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(Reply::decode(&body).unwrap().result, 0);
    let mut pings = Vec::new();
    for id in 2..202u64 {
        pings.extend(encode_request(
            id,
            &Request::Ping(id.to_le_bytes().to_vec()),
        ));
    }
    s.write_all(&pings).unwrap();
    let status = d.terminate();
    assert!(status.success(), "{status}");
    let mut got = 0;
    loop {
        let mut h = [0u8; 16];
        if s.read_exact(&mut h).is_err() {
            break;
        }
        let header = FrameHeader::parse(&h);
        let mut body = vec![0u8; header.body_len as usize];
        s.read_exact(&mut body).unwrap();
        let reply = Reply::decode(&body).unwrap();
        assert_eq!(reply.result, 0, "{}", reply.message);
        got += 1;
    }
    assert_eq!(got, 200, "every request sent before SIGTERM was answered");
    // The PASID of the still-connected client stays recorded: held for it at the next start.
    d.restart();
    assert!(c.reconnect().unwrap());
    assert_eq!(c.hello().restored, vec![p]);
}

/// Issue 12, item 1: a process idling while the daemon shuts down keeps its PASIDs (they are
/// not freed in memory and handed to a process still streaming ALLOCs), and after the restart
/// both processes own exactly what they were acknowledged.
#[test]
fn sigterm_hands_no_idle_process_pasids_to_another() {
    let dir = TestDir::new("keep");
    let mut d = Daemon::start(
        dir.path(),
        &MachineConfig::new(4)
            .settings("grace_period_secs = 60")
            .to_toml(),
        &[],
    );
    let idle = Helper::spawn(&d.socket, "hold:1:100");
    let expected: Vec<String> = (1..=100).map(|p| p.to_string()).collect();
    assert_eq!(idle.expect("PASIDS"), expected.join(" "));
    let mut c = d.client("streamer");
    let h = c.nesting_container(2).unwrap();
    // Stream ALLOCs in [1, 200] on a raw connection of this process until the daemon goes.
    let s = raw_connection(&d);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let arg = PasidRequestOp::Alloc { min: 1, max: 200 }.to_bytes();
        let mut id = 2u64;
        loop {
            let mut chunk = Vec::new();
            for _ in 0..64 {
                let req = Request::Ioctl {
                    handle: h,
                    cmd: VFIO_IOMMU_PASID_REQUEST,
                    arg: arg.clone(),
                };
                chunk.extend(encode_request(id, &req));
                id += 1;
            }
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut acked, mut refused) = (Vec::new(), 0);
        while let Some(reply) = read_reply(&mut r) {
            if reply.result >= 0 {
                acked.push(reply.result as u32);
            } else {
                refused += 1;
            }
            if refused == 2000 {
                tx.send(()).unwrap();
            }
        }
        acked
    });
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(d.terminate().success());
    writer.join().unwrap();
    let mut acked = reader.join().unwrap();
    acked.sort_unstable();
    assert_eq!(
        acked,
        (101..=200).collect::<Vec<u32>>(),
        "the streaming process was acknowledged PASIDs of the idle one"
    );
    d.restart();
    assert!(c.reconnect().unwrap());
    assert_eq!(c.hello().restored, acked);
    assert_eq!(
        c.status().unwrap().allocated,
        200,
        "the idle process's PASIDs are held for it"
    );
    drop(idle);
}

/// Issue 12, item 12: with its standard error a pipe nobody reads any more (`vsvad 2>&1 |
/// head -2`), the daemon still serves, and SIGTERM still stops it cleanly.
#[test]
fn a_closed_stderr_neither_kills_the_daemon_nor_stalls_sigterm() {
    let dir = TestDir::new("epipe");
    let socket = dir.path().join("vsvad.sock");
    let mut child = common::spawn_logging(dir.path(), &[]);
    drop(child.stderr.take());
    drop(child.stdout.take());
    common::wait_until("the socket", || UnixStream::connect(&socket).is_ok());
    let mut opts = vsva_client::Options::new(&socket, "epipe");
    opts.timeout = Some(Duration::from_secs(20));
    let mut c = vsva_client::Client::connect(opts).unwrap();
    assert_eq!(c.ping(b"still here").unwrap(), b"still here");
    assert!(child.try_wait().unwrap().is_none(), "vsvad died");
    let status = common::sigterm(&mut child);
    assert!(status.success(), "{status:?}");
}

/// Issue 16 / issue 12 item 12: a standard error nobody reads (a full pipe) never blocks a
/// connection: log lines past what the pipe takes are dropped and counted, connections keep
/// being served and closed, and SIGTERM still stops the daemon. A daemon whose threads wrote
/// the log themselves would block in the first write to the full pipe, keep those connections
/// registered, and refuse every later one at the connection limit.
#[test]
fn a_stderr_nobody_reads_blocks_no_connection() {
    let dir = TestDir::new("fullpipe");
    let socket = dir.path().join("vsvad.sock");
    let addr = free_loopback_addr();
    let config = dir.path().join("vsvad.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_connections = 8\nmax_connections_per_uid = 8\n",
    )
    .unwrap();
    let mut child = common::spawn_logging(
        dir.path(),
        &[
            "--config".as_ref(),
            config.as_ref(),
            "--metrics-addr".as_ref(),
            addr.as_ref(),
        ],
    );
    // Kept open and never read: the pipe fills and stays full.
    let _stderr = child.stderr.take();
    common::wait_until("the socket", || UnixStream::connect(&socket).is_ok());
    let mut opts = vsva_client::Options::new(&socket, "fullpipe");
    opts.timeout = Some(Duration::from_secs(20));
    // Each connection logs a few debug lines: together far more than a pipe holds.
    for i in 0..3000u32 {
        let mut c = None;
        common::wait_until("a connection under the limit", || {
            c = vsva_client::Client::connect(opts.clone()).ok();
            c.is_some()
        });
        let data = i.to_le_bytes();
        assert_eq!(c.unwrap().ping(&data).unwrap(), data);
    }
    let page = scrape(&addr);
    let dropped = common::metric(&page, "vsvad_log_lines_dropped_total");
    assert!(dropped > 0, "no log line was dropped:\n{page}");
    let status = common::sigterm(&mut child);
    assert!(status.success(), "{status:?}");
}

/// Issue 12, smaller things: `VSVA_SOCKET` overrides the config file's `socket`, a short-lived
/// client that owns nothing leaves no INFO line, and a daemon that cannot bind its metrics
/// port leaves no socket behind.
#[test]
fn vsva_socket_wins_quiet_status_and_a_metrics_clash_leaves_no_socket() {
    let dir = TestDir::new("env");
    let from_file = dir.path().join("file.sock");
    let from_env = dir.path().join("env.sock");
    let config = dir.path().join("vsvad.toml");
    std::fs::write(&config, format!("socket = \"{}\"\n", from_file.display())).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let vsvad = |metrics: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vsvad"));
        cmd.arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join(if metrics.is_some() { "s2" } else { "s1" }))
            .env("VSVA_SOCKET", &from_env)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(addr) = metrics {
            cmd.arg("--metrics-addr").arg(addr);
        }
        cmd.spawn().unwrap()
    };
    let d = vsvad(None);
    common::wait_until("the socket", || UnixStream::connect(&from_env).is_ok());
    assert!(!from_file.exists());
    let mut c =
        vsva_client::Client::connect(vsva_client::Options::new(&from_env, "quiet")).unwrap();
    c.status().unwrap();
    drop(c);
    // A second daemon on another socket whose metrics port is taken.
    std::fs::remove_file(&from_env).ok();
    let clash = vsvad(Some(&format!("127.0.0.1:{port}")));
    let out = clash.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!from_env.exists(), "the failed daemon left its socket");
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&d),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = d.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("process context released"),
        "a status call was logged at INFO:\n{log}"
    );
}

/// Issue 12, smaller things: a slow client on the metrics endpoint delays no scrape — the
/// scrape is answered while the slow connection is still open.
#[test]
fn a_slow_metrics_client_does_not_hold_up_a_scrape() {
    let dir = TestDir::new("scrape");
    let addr = free_loopback_addr();
    let mut d = Daemon::start(dir.path(), "", &["--metrics-addr", &addr]);
    // Served once a hello is answered: the metrics endpoint is up before the accept loop.
    d.client("ready").ping(b"x").unwrap();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    let page = scrape(&addr);
    assert!(page.contains("vsvad_pasid_capacity"));
    slow.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let e = slow
        .read(&mut buf)
        .expect_err("the slow connection was closed before the scrape");
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    assert!(d.terminate().success());
}

/// Clients that trickle their request one byte at a time into every scrape slot are cut off
/// once a request has taken too long as a whole (not only between two reads), so scrapes are
/// served again while they go on trickling.
#[test]
fn tricklers_cannot_hold_every_metrics_slot() {
    let dir = TestDir::new("trickle");
    let addr = free_loopback_addr();
    let mut d = Daemon::start(dir.path(), "", &["--metrics-addr", &addr]);
    d.client("ready").ping(b"x").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (connected, tricklers_in) = std::sync::mpsc::channel();
    let tricklers: Vec<_> = (0..16)
        .map(|_| {
            let (addr, stop, connected) = (addr.clone(), stop.clone(), connected.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                // Whether or not it got a slot (one past them is closed at once).
                let started = s.write_all(b"G").is_ok();
                connected.send(()).unwrap();
                if !started {
                    return;
                }
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if s.write_all(b"G").is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    // Every trickler has connected and sent its first byte (not a fixed pause, which a loaded
    // machine can outlast): every slot is taken, and the tricklers keep each one busy between
    // reads.
    for _ in 0..16 {
        tricklers_in
            .recv_timeout(Duration::from_secs(30))
            .expect("a trickler neither connected nor wrote within 30 s");
    }
    let try_scrape = || -> bool {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_err() {
            return false;
        }
        let mut page = String::new();
        let _ = s.read_to_string(&mut page);
        page.starts_with("HTTP/1.1 200 OK")
    };
    common::wait_until("a scrape while clients trickle", try_scrape);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tricklers {
        t.join().unwrap();
    }
    assert!(d.terminate().success());
}

/// A request head of several MB gets `431 Request Header Fields Too Large`, not a connection
/// reset: the daemon reads at most its limit (plus one read) of the head, answers, and then
/// reads and drops the rest for a bounded time (1 s) before it closes, so a client that sends
/// its whole request before reading (as curl does) gets to read the answer.
#[test]
fn a_huge_metrics_request_head_gets_431_not_a_reset() {
    let dir = TestDir::new("bighead");
    let addr = free_loopback_addr();
    let mut d = Daemon::start(dir.path(), "", &["--metrics-addr", &addr]);
    d.client("ready").ping(b"x").unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    head.resize(4 << 20, b'a');
    s.write_all(&head)
        .expect("the daemon cut the connection while the head was sent");
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("the daemon reset the connection instead of answering");
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    // What the client sends after the answer is dropped for a bounded time only: one that
    // goes on sending is cut off (its writes then fail) and cannot keep the slot.
    common::wait_until("the answered connection to be closed", || {
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(&[b'a'; 100]).is_err()
    });
    // The endpoint still serves.
    assert!(scrape(&addr).contains("vsvad_pasid_capacity"));
    assert!(d.terminate().success());
}

/// A request head that has not arrived whole 2 s after the connection gets `408 Request
/// Timeout` (not a silent close), and then the connection ends as after any answer.
#[test]
fn a_metrics_request_that_misses_its_deadline_gets_408() {
    let dir = TestDir::new("slowhead");
    let addr = free_loopback_addr();
    let mut d = Daemon::start(dir.path(), "", &["--metrics-addr", &addr]);
    d.client("ready").ping(b"x").unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    // A hang guard well past the daemon's 2 s deadline, not a timing assertion.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .expect("the daemon neither answered nor closed within 10 s");
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "answer: {answer:?}"
    );
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    // The endpoint still serves.
    assert!(scrape(&addr).contains("vsvad_pasid_capacity"));
    assert!(d.terminate().success());
}

/// A SIGINT that arrives while the daemon starts — here while it replays a log of 30 000
/// PASIDs and gives them back to their live process — is served as soon as it is up: it
/// stops cleanly (exit status 0, socket removed) instead of dying of the signal with its
/// socket file left behind.
#[test]
fn sigint_during_start_up_stops_the_daemon_cleanly() {
    let dir = TestDir::new("startsig");
    let mut d = Daemon::start(
        dir.path(),
        "pasid_quota = 100000\ngrace_period_secs = 600\ndurability = \"async\"\n",
        &[],
    );
    let mut c = d.client("many");
    let handle = c.nesting_container(1).unwrap();
    let alloc = Request::Ioctl {
        handle,
        cmd: VFIO_IOMMU_PASID_REQUEST,
        arg: PasidRequestOp::Alloc {
            min: 1,
            max: u32::MAX,
        }
        .to_bytes(),
    };
    for _ in 0..30_000 / 60 {
        for r in c.call_many(&vec![alloc.clone(); 60]).unwrap() {
            assert!(r.result > 0, "{}", r.message);
        }
    }
    d.kill9();
    std::fs::remove_file(&d.socket).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vsvad"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(&d.state)
        .arg("--config")
        .arg(&d.config)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The socket is bound before the log is replayed: interrupt the start there.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !d.socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no socket file");
        std::thread::sleep(Duration::from_millis(1));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "vsvad did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "the socket file was left behind");
    // Nothing was lost: the PASIDs are held for this process at the next start.
    d.restart();
    assert!(c.reconnect().unwrap());
    assert_eq!(c.hello().restored.len(), 30_000);
}
