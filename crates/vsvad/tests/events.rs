//! The events channel against the real daemon: a DMA fault reaches the process on its
//! channel, in order and numbered; one channel per process; a client that does not read
//! loses events to a counted overflow marker while its requests go on; a version-2 peer is
//! refused at the handshake.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Daemon, TestDir};
use vsva_client::{Client, ClientError, Errno, Event};
use vsva_proto::{encode_request, Hello, Reply, Request, ResumeToken};

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

fn errno(e: ClientError) -> Errno {
    match e {
        ClientError::Daemon { errno, .. } => errno,
        other => panic!("not a daemon error: {other}"),
    }
}

/// A client with a container holding a device and 1 MiB of guest memory mapped 1:1 in its
/// stage 2 at 0: returns the client and the device's source id.
fn with_device(d: &Daemon, name: &str) -> (Client, u16, vsva_client::GuestMemory) {
    let mut c = d.client(name);
    let dev = c
        .status()
        .unwrap()
        .devices
        .into_iter()
        .find(|d| d.group != u32::MAX)
        .expect("a device in a group");
    let h = c.nesting_container(dev.group).unwrap();
    let mem = vsva_client::GuestMemory::new(0, 1 << 20).unwrap();
    c.attach_guest_memory(h, &mem).unwrap();
    (c, dev.source_id, mem)
}

#[test]
fn dma_faults_arrive_numbered_on_the_channel_and_one_channel_per_process() {
    let dir = TestDir::new("events-fault");
    let d = Daemon::start(dir.path(), "", &[]);
    let (mut c, sid, _mem) = with_device(&d, "events");
    let mut ch = c.open_events().unwrap();
    assert_eq!(errno(c.open_events().unwrap_err()), Errno::EBUSY);
    // Another connection of the same process shares its one channel.
    let mut other = d.client("events-2");
    assert_eq!(errno(other.open_events().unwrap_err()), Errno::EBUSY);
    for addr in [0x4000_0000u64, 0x5000_0000] {
        assert!(c.dma_read(sid, None, addr, 4).is_err());
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (seq, ev) = ch.next_timeout(WAIT).unwrap().expect("an event in time");
        let Event::DmaFault(f) = ev else {
            panic!("not a fault: {ev:?}")
        };
        assert_eq!(f.source_id, sid);
        seen.push((seq, f.addr));
    }
    assert_eq!(seen, vec![(1, 0x4000_0000), (2, 0x5000_0000)]);
    // Dropping the channel frees the slot (once the daemon has seen it close).
    drop(ch);
    common::wait_until("the channel slot is free", || match c.open_events() {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(errno(e), Errno::EBUSY);
            false
        }
    });
}

#[test]
fn a_client_that_does_not_read_loses_events_to_a_counted_marker() {
    let dir = TestDir::new("events-overflow");
    let d = Daemon::start(dir.path(), "[limits]\nevent_queue_len = 4\n", &[]);
    let (mut c, sid, _mem) = with_device(&d, "overflow");
    let mut ch = c.open_events().unwrap();
    // Far more faults than the queue and the channel's socket buffer hold; the requests are
    // answered all the same (the daemon never waits for the reader).
    let n: u64 = 2000;
    let reqs: Vec<Request> = (0..n)
        .map(|i| {
            Request::DeviceDma(vsva_proto::DeviceDma {
                source_id: sid,
                flags: 0,
                pasid: 0,
                addr: 0x4000_0000 + i * 4096,
                len: 4,
                data: Vec::new(),
            })
        })
        .collect();
    for batch in reqs.chunks(50) {
        for r in c.call_many(batch).unwrap() {
            assert_eq!(r.errno(), Some(Errno::EFAULT));
        }
    }
    // Everything that was queued, then the marker, then what comes after it.
    let (mut faults, mut dropped, mut last) = (0u64, 0u64, 0u64);
    let mut marker = None;
    while faults + dropped < n {
        let (seq, ev) = ch.next_timeout(WAIT).unwrap().expect("an event in time");
        assert_eq!(seq, last + 1, "sequence numbers have no gaps");
        last = seq;
        match ev {
            Event::DmaFault(_) => faults += 1,
            Event::Overflow { dropped: k, total } => {
                dropped += k;
                assert_eq!(total, dropped);
                marker = Some(seq);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(marker.is_some(), "no overflow marker");
    assert!(
        dropped > 0 && faults > 0,
        "faults {faults} dropped {dropped}"
    );
}

#[test]
fn a_version_2_peer_is_refused_at_hello() {
    let dir = TestDir::new("events-v2");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(WAIT).unwrap();
    s.write_all(&encode_request(
        1,
        &Request::Hello(Hello {
            min_version: 2,
            max_version: 2,
            resume: ResumeToken::default(),
            client: "old".into(),
        }),
    ))
    .unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    let header = vsva_proto::FrameHeader::parse(&h);
    let mut body = vec![0u8; header.body_len as usize];
    s.read_exact(&mut body).unwrap();
    let r = Reply::decode(&body).unwrap();
    assert_eq!(r.errno(), Some(Errno::EINVAL));
    assert!(
        r.message.contains("2..=2") && r.message.contains("3..=3"),
        "{}",
        r.message
    );
}
