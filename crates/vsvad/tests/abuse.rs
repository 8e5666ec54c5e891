//! Abuse tests: malformed, truncated and oversize frames, unknown kinds, wrong descriptor
//! counts, a client that stalls in the middle of a frame, a client that never reads its
//! replies, the connection limit, and random garbage. The daemon answers each with an error
//! (or closes that one connection) and keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Daemon, TestDir};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vsva_client::{Client, Errno, GuestMemory, MachineConfig};
use vsva_proto::{
    encode_frame, encode_request, Hello, Kind, Reply, Request, ResumeToken, FLAG_REPLY,
};

fn hello_frame() -> Vec<u8> {
    encode_request(
        1,
        &Request::Hello(Hello {
            min_version: vsva_proto::PROTOCOL_VERSION,
            max_version: vsva_proto::PROTOCOL_VERSION,
            resume: ResumeToken::default(),
            client: "raw".into(),
        }),
    )
}

/// A raw connection that has done its hello. Its read timeout (30 s) only guards against a
/// hang.
fn raw(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&hello_frame()).unwrap();
    let (id, r) = read_reply(&mut s).expect("hello reply");
    assert_eq!((id, r.result), (1, 0), "{}", r.message);
    s
}

/// Reads one reply frame; None at EOF.
fn read_reply(s: &mut UnixStream) -> Option<(u64, Reply)> {
    let mut h = [0u8; 16];
    if s.read_exact(&mut h).is_err() {
        return None;
    }
    let header = vsva_proto::FrameHeader::parse(&h);
    assert!(header.is_reply());
    let mut body = vec![0u8; header.body_len as usize];
    s.read_exact(&mut body).ok()?;
    Some((header.id, Reply::decode(&body).unwrap()))
}

/// Asserts that the daemon closed `s` without a reply: the read ends at EOF (or a reset), not
/// at the socket's read timeout, which only guards against a hang.
#[track_caller]
fn assert_closed_by_daemon(s: &mut UnixStream, what: &str) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("{what}: {n} bytes instead of the close: {:?}", &buf[..n]),
        Err(e) => panic!("{what}: not closed by the daemon: {e}"),
    }
}

fn ping(s: &mut UnixStream, id: u64) {
    s.write_all(&encode_request(id, &Request::Ping(b"hi".to_vec())))
        .unwrap();
    let (got, r) = read_reply(s).expect("ping reply");
    assert_eq!((got, r.result, r.payload.as_slice()), (id, 0, &b"hi"[..]));
}

fn errno_of(r: &Reply) -> Errno {
    r.errno()
        .unwrap_or_else(|| panic!("expected an error, got {r:?}"))
}

#[test]
fn malformed_frames_get_error_replies_and_the_connection_goes_on() {
    let dir = TestDir::new("malformed");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut s = raw(&d);
    // Truncated body of a known kind.
    s.write_all(&encode_frame(
        Kind::AttachGroup as u16,
        0,
        0,
        10,
        &[1, 0, 0, 0, 1, 0, 0],
    ))
    .unwrap();
    let (id, r) = read_reply(&mut s).unwrap();
    assert_eq!((id, errno_of(&r)), (10, Errno::EINVAL));
    assert!(r.message.contains("field group"), "{}", r.message);
    // Trailing bytes.
    s.write_all(&encode_frame(Kind::Status as u16, 0, 0, 11, &[0]))
        .unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EINVAL);
    // Unknown kind.
    s.write_all(&encode_frame(0x7abc, 0, 0, 12, b"whatever"))
        .unwrap();
    let (id, r) = read_reply(&mut s).unwrap();
    assert_eq!((id, errno_of(&r)), (12, Errno::ENOSYS));
    // A frame with the REPLY flag.
    s.write_all(&encode_frame(Kind::Ping as u16, FLAG_REPLY, 0, 13, b""))
        .unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EINVAL);
    // A second hello.
    s.write_all(&hello_frame()).unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EINVAL);
    // Bad uAPI bytes are the VFIO layer's EINVAL/EFAULT, not a protocol error.
    s.write_all(&encode_request(14, &Request::OpenContainer))
        .unwrap();
    let (_, r) = read_reply(&mut s).unwrap();
    let handle = r.result as u32;
    s.write_all(&encode_request(
        15,
        &Request::Ioctl {
            handle,
            cmd: 0x3b76,
            arg: vec![1, 2],
        },
    ))
    .unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EINVAL);
    s.write_all(&encode_request(
        16,
        &Request::Ioctl {
            handle: 999,
            cmd: 0x3b76,
            arg: vec![],
        },
    ))
    .unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EBADF);
    // Still serving this connection.
    ping(&mut s, 17);
    // Several requests in flight at once, answered in order with their ids.
    let mut burst = Vec::new();
    for id in 100..164u64 {
        burst.extend(encode_request(
            id,
            &Request::Ping(id.to_le_bytes().to_vec()),
        ));
    }
    s.write_all(&burst).unwrap();
    for id in 100..164u64 {
        let (got, r) = read_reply(&mut s).unwrap();
        assert_eq!((got, r.payload), (id, id.to_le_bytes().to_vec()));
    }
    // An oversize header: E2BIG with its id, then the connection is closed.
    let mut h = encode_frame(Kind::Ping as u16, 0, 0, 18, b"");
    h[..4].copy_from_slice(&(64u32 << 20).to_le_bytes());
    s.write_all(&h).unwrap();
    let (id, r) = read_reply(&mut s).unwrap();
    assert_eq!((id, errno_of(&r)), (18, Errno::E2BIG));
    assert!(
        read_reply(&mut s).is_none(),
        "closed after an oversize header"
    );
    // Everyone else is fine.
    let mut c = d.client("after");
    assert_eq!(c.ping(b"ok").unwrap(), b"ok");
}

#[test]
fn requests_before_hello_and_bad_hellos_are_refused() {
    let dir = TestDir::new("hello");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&encode_request(1, &Request::Status)).unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EPERM);
    let mut bad = hello_frame();
    bad[16] = b'X';
    s.write_all(&bad).unwrap();
    let r = read_reply(&mut s).unwrap().1;
    assert!(r.message.contains("magic"), "{}", r.message);
    let future = encode_request(
        3,
        &Request::Hello(Hello {
            min_version: 7,
            max_version: 9,
            resume: ResumeToken::default(),
            client: String::new(),
        }),
    );
    s.write_all(&future).unwrap();
    let r = read_reply(&mut s).unwrap().1;
    assert!(r.message.contains("7..=9"), "{}", r.message);
    // A hello body over the pre-handshake limit closes the connection.
    s.write_all(&encode_frame(Kind::Hello as u16, 0, 0, 4, &vec![0; 8192]))
        .unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::E2BIG);
    assert!(read_reply(&mut s).is_none());
}

fn send_with_fd(s: &UnixStream, frame: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    assert!(cmsg.push(SendAncillaryMessage::ScmRights(fds)));
    let n = rustix::net::sendmsg(
        s,
        &[std::io::IoSlice::new(frame)],
        &mut cmsg,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, frame.len());
}

#[test]
fn wrong_descriptor_counts_are_ebadf() {
    let dir = TestDir::new("fds");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut s = raw(&d);
    let mem = GuestMemory::new(0, 1 << 20).unwrap();
    let reg = |id: u64, nfds: u8| {
        let body = Request::MemRegister {
            addr: 0,
            size: 1 << 20,
            offset: 0,
            flags: 0,
        }
        .encode_body();
        encode_frame(Kind::MemRegister as u16, 0, nfds, id, &body)
    };
    // Declares one, sends none.
    s.write_all(&reg(1, 1)).unwrap();
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EBADF);
    // Declares none, sends one: with a request that takes none, and with one that takes one.
    send_with_fd(&s, &encode_request(2, &Request::Ping(vec![])), &[mem.fd()]);
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EBADF);
    send_with_fd(&s, &reg(3, 0), &[mem.fd()]);
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EBADF);
    // Declares one, sends two.
    send_with_fd(&s, &reg(4, 1), &[mem.fd(), mem.fd()]);
    assert_eq!(errno_of(&read_reply(&mut s).unwrap().1), Errno::EBADF);
    // An fd that is not a sealed memfd (a socket) is refused.
    send_with_fd(&s, &reg(5, 1), &[s.as_fd()]);
    let r = read_reply(&mut s).unwrap().1;
    assert_eq!(errno_of(&r), Errno::EINVAL, "{}", r.message);
    // A region past the end of the file.
    let body = Request::MemRegister {
        addr: 0,
        size: 2 << 20,
        offset: 0,
        flags: 0,
    }
    .encode_body();
    send_with_fd(
        &s,
        &encode_frame(Kind::MemRegister as u16, 0, 1, 6, &body),
        &[mem.fd()],
    );
    let r = read_reply(&mut s).unwrap().1;
    assert!(r.message.contains("past the end"), "{}", r.message);
    // The right count works, and the connection is still in step.
    send_with_fd(&s, &reg(7, 1), &[mem.fd()]);
    let (id, r) = read_reply(&mut s).unwrap();
    assert_eq!((id, r.result), (7, 1), "{}", r.message);
    ping(&mut s, 8);
}

/// A connection stalled in the middle of a frame, and one that never says hello, are each
/// closed by the daemon once its timeout (400 ms) has passed, and not before; meanwhile
/// another client is served (its calls' 20 s timeout bounds any stall).
#[test]
fn a_stalled_half_frame_does_not_stall_others_and_is_cut_off() {
    let dir = TestDir::new("stall");
    let d = Daemon::start(
        dir.path(),
        &MachineConfig::new(2)
            .settings("[limits]\nframe_timeout_ms = 400\nhandshake_timeout_ms = 400")
            .to_toml(),
        &[],
    );
    let mut stalled = raw(&d);
    let started = Instant::now();
    stalled
        .write_all(&encode_request(2, &Request::Ping(vec![0; 100]))[..10])
        .unwrap();
    // A connection that never says hello.
    let mut silent = UnixStream::connect(&d.socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut c = d.client("busy");
    let h = c.nesting_container(1).unwrap();
    for _ in 0..200 {
        let p = c.pasid_alloc(h, 1, u32::MAX).unwrap();
        c.pasid_free(h, p, p).unwrap();
    }
    // Both are closed by the daemon after their timeouts. Only a lower bound on when: how
    // much later depends on the machine's load.
    assert_closed_by_daemon(&mut stalled, "the stalled connection");
    assert_closed_by_daemon(&mut silent, "the silent connection");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "cut off after {took:?}");
    assert_eq!(c.ping(b"x").unwrap(), b"x");
}

/// A client that pipelines requests and never reads the replies is cut off (its writes fail)
/// once a reply has waited past `write_timeout_ms`, while another client is served (its
/// calls' 20 s timeout bounds any stall; that others are not stalled even by a client that
/// the daemon does not cut off is checked by
/// `a_client_that_never_reads_has_a_bounded_amount_read_from_it`).
#[test]
fn a_client_that_never_reads_is_cut_off_without_stalling_others() {
    let dir = TestDir::new("noread");
    let d = Daemon::start(dir.path(), "[limits]\nwrite_timeout_ms = 300\n", &[]);
    let s = raw(&d);
    let mut w = s.try_clone().unwrap();
    // Pipeline 64 MiB of pings and never read the echoes.
    let writer = std::thread::spawn(move || {
        let frame = encode_request(5, &Request::Ping(vec![7; 64 * 1024]));
        for _ in 0..1024 {
            if w.write_all(&frame).is_err() {
                return true;
            }
        }
        false
    });
    let mut c = d.client("other");
    for _ in 0..100 {
        c.ping(b"fine").unwrap();
    }
    assert!(
        writer.join().unwrap(),
        "the daemon cut the non-reading client off"
    );
    drop(s);
}

#[test]
fn the_connection_limit_is_enforced() {
    let dir = TestDir::new("limit");
    let d = Daemon::start(dir.path(), "[limits]\nmax_connections = 3\n", &[]);
    // The harness's readiness probes may still be closing: retry until three are in.
    let mut keep: Vec<Client> = Vec::new();
    common::wait_until("three connections", || {
        while keep.len() < 3 {
            match Client::connect(d.options("keep")) {
                Ok(c) => keep.push(c),
                Err(_) => return false,
            }
        }
        true
    });
    let e = Client::connect(d.options("fourth")).unwrap_err();
    assert!(e.to_string().contains("too many connections"), "{e}");
    drop(keep);
    common::wait_until("connections to close", || {
        Client::connect(d.options("again")).is_ok()
    });
}

#[test]
fn random_garbage_never_takes_the_daemon_down() {
    let dir = TestDir::new("garbage");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..40 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if i % 2 == 0 {
            s.write_all(&hello_frame()).unwrap();
        }
        let len = (next() % 300) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 && junk.len() >= 16 {
            // Plausible headers with random kinds and small lengths.
            junk[0..4].copy_from_slice(&((next() % 64) as u32).to_le_bytes());
            junk[6] = 0;
            junk[7] = 0;
        }
        let _ = s.write_all(&junk);
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
    }
    let mut c = d.client("survivor");
    assert_eq!(c.ping(b"alive").unwrap(), b"alive");
}

/// Issue 12, item 8: `frame_timeout_ms` bounds a whole frame, so a client that sends one byte
/// at a time is cut off before its frame completes; and past the hello, a silent connection
/// is closed after `idle_timeout_secs`.
#[test]
fn a_trickled_frame_and_an_idle_connection_are_cut_off() {
    let dir = TestDir::new("trickle");
    let d = Daemon::start(
        dir.path(),
        "[limits]\nframe_timeout_ms = 500\nidle_timeout_secs = 1\n",
        &[],
    );
    let mut trickler = raw(&d);
    let frame = encode_request(2, &Request::Ping(vec![1; 200]));
    // One byte every 50 ms: each read is well inside the timeout, the frame is not.
    let mut sent = 0;
    for b in &frame {
        if trickler.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sent < frame.len(), "the whole trickled frame was accepted");
    assert_closed_by_daemon(&mut trickler, "the trickler");
    // A connection past its hello that stays silent is closed; one that talks is served.
    let mut idle = raw(&d);
    assert_closed_by_daemon(&mut idle, "the idle connection");
    let mut busy = raw(&d);
    ping(&mut busy, 2);
}

/// Issue 12, item 8: one uid cannot take every connection.
#[test]
fn the_per_uid_connection_limit_is_enforced() {
    let dir = TestDir::new("peruid");
    let d = Daemon::start(
        dir.path(),
        "[limits]\nmax_connections = 100\nmax_connections_per_uid = 2\n",
        &[],
    );
    let mut keep: Vec<Client> = Vec::new();
    common::wait_until("two connections", || {
        while keep.len() < 2 {
            match Client::connect(d.options("keep")) {
                Ok(c) => keep.push(c),
                Err(_) => return false,
            }
        }
        true
    });
    let e = Client::connect(d.options("third")).unwrap_err();
    assert!(e.to_string().contains("max_connections_per_uid = 2"), "{e}");
}

/// Issue 16: connections are served by a fixed set of worker threads, not a thread each: 64
/// open connections, each served, leave the daemon with far fewer than 64 threads.
#[test]
fn many_connections_share_a_few_worker_threads() {
    let dir = TestDir::new("workers");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut conns: Vec<UnixStream> = (0..64).map(|_| raw(&d)).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        ping(s, i as u64 + 2);
    }
    let pid = d.child.as_ref().unwrap().id();
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(
        threads < 32,
        "{threads} daemon threads serve {} connections",
        conns.len()
    );
}

/// Issue 12, item 11: a client that pipelines large requests and never reads its replies
/// gets only a bounded amount read from it: once its unwritten replies reach
/// `limits.max_queued_bytes` the daemon stops reading (counted in `vsvad_read_pauses_total`),
/// so the requests it has handled (`vsvad_requests_total`), and the memory their replies
/// hold, stay bounded however much the client sends.
#[test]
fn a_client_that_never_reads_has_a_bounded_amount_read_from_it() {
    let dir = TestDir::new("bounded");
    let addr = common::free_loopback_addr();
    let d = Daemon::start(
        dir.path(),
        "[limits]\nwrite_timeout_ms = 60000\n",
        &["--metrics-addr", &addr],
    );
    let mut s = raw(&d);
    s.set_nonblocking(true).unwrap();
    const BODY: usize = 256 * 1024;
    let frame = encode_request(5, &Request::Ping(vec![7; BODY]));
    let (mut accepted, mut at, mut stalls) = (0usize, 0usize, 0);
    // Write until the daemon has taken nothing for a while and says it paused reading (or
    // far more than it should have been taken). A daemon slowed by a loaded machine may take
    // nothing for a while before it pauses: that alone does not end the writing.
    // The deadline only guards against a hang: the assertions below then say what is wrong.
    let paused = || common::metric(&common::scrape(&addr), "vsvad_read_pauses_total") >= 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted < 64 << 20 {
        match s.write(&frame[at..]) {
            Ok(n) => {
                accepted += n;
                at = (at + n) % frame.len();
                stalls = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalls += 1;
                if stalls >= 10 {
                    if paused() || Instant::now() > deadline {
                        break;
                    }
                    stalls = 0;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the daemon cut the connection: {e}"),
        }
    }
    assert!(
        accepted < 4 << 20,
        "{accepted} bytes were taken from a client that reads nothing"
    );
    let page = common::scrape(&addr);
    let pings = common::metric(&page, "vsvad_requests_total{kind=\"ping\"}");
    assert!(
        pings * (BODY as u64) < 4 << 20,
        "{pings} pings of {BODY} bytes handled for a client that reads nothing"
    );
    assert!(
        common::metric(&page, "vsvad_read_pauses_total") >= 1,
        "{page}"
    );
    // Everyone else is served meanwhile.
    let mut other = raw(&d);
    ping(&mut other, 2);
}
