//! `docs/protocol.md` read byte by byte: every frame here is built by hand from the doc's
//! tables (no `vsva-proto` encoder or decoder), sent to the real daemon, and its replies are
//! taken apart at the offsets the doc gives, checking that nothing is left over.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Daemon, TestDir};

/// A frame as the doc's "Frame" table lays it out.
fn frame(kind: u16, flags: u8, nfds: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&kind.to_le_bytes());
    f.push(flags);
    f.push(nfds);
    f.extend_from_slice(&id.to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// A reply: header fields, then the "Reply body" table's result, message and payload.
struct Reply {
    kind: u16,
    flags: u8,
    nfds: u8,
    id: u64,
    result: i64,
    message: String,
    payload: Vec<u8>,
}

fn read_reply(s: &mut UnixStream) -> Option<Reply> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let mut r = Cursor(&body);
    let result = r.u64() as i64;
    let message = r.string();
    Some(Reply {
        kind: u16::from_le_bytes([h[4], h[5]]),
        flags: h[6],
        nfds: h[7],
        id: u64::from_le_bytes(h[8..16].try_into().unwrap()),
        result,
        message,
        payload: r.0.to_vec(),
    })
}

/// Reads little-endian fields off the front of a payload.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.0.len() >= n,
            "payload ends {} bytes short",
            n - self.0.len()
        );
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u32() as usize;
        assert!(n <= 4096, "a string of {n} bytes");
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn end(&self) {
        assert!(
            self.0.is_empty(),
            "{} bytes after the last field",
            self.0.len()
        );
    }
}

fn call(s: &mut UnixStream, kind: u16, id: u64, body: &[u8]) -> Reply {
    s.write_all(&frame(kind, 0, 0, id, body)).unwrap();
    let r = read_reply(s).expect("a reply");
    assert_eq!(
        (r.kind, r.flags, r.nfds, r.id),
        (kind, 1, 0, id),
        "reply header"
    );
    r
}

fn hello_body(resume: [u8; 16], client: &[u8]) -> Vec<u8> {
    let mut b = b"VSVA".to_vec();
    b.extend_from_slice(&3u16.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes());
    b.extend_from_slice(&resume);
    b.extend_from_slice(&(client.len() as u32).to_le_bytes());
    b.extend_from_slice(client);
    b
}

/// One fault record of the "Fault record" table.
fn fault_record(r: &mut Cursor<'_>) -> (u16, u16, u32, u64, u8, u8, u8, String) {
    (
        r.u16(),
        r.u16(),
        r.u32(),
        r.u64(),
        r.u8(),
        r.u8(),
        r.u8(),
        r.string(),
    )
}

#[test]
fn every_documented_layout_matches_the_daemon() {
    let dir = TestDir::new("docbytes");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // PING before the hello is answered; anything else is EPERM with a message.
    let r = call(&mut s, 0x0002, 1, b"hi");
    assert_eq!((r.result, r.payload.as_slice()), (0, &b"hi"[..]));
    let r = call(&mut s, 0x0401, 2, b"");
    assert_eq!(r.result, -1, "{}", r.message);
    assert!(r.payload.is_empty() && !r.message.is_empty());

    // HELLO, its reply at the doc's offsets.
    let r = call(&mut s, 0x0001, 3, &hello_body([0; 16], "doc".as_bytes()));
    assert_eq!(r.result, 0, "{}", r.message);
    let p = &r.payload;
    let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    assert_eq!(u16::from_le_bytes([p[0], p[1]]), 3, "version");
    assert_eq!(u16::from_le_bytes([p[2], p[3]]) & !0b11, 0, "flags");
    assert_eq!(u32_at(4), std::process::id(), "pid");
    assert_eq!(u32_at(8), rustix::process::getuid().as_raw(), "uid");
    assert_ne!(&p[24..40], &[0; 16], "resume_token");
    assert_eq!(p[48], 20, "pasid_bits");
    assert_eq!(u32_at(49), 1000, "quota");
    assert_eq!(u32_at(53), 1 << 20, "max_body");
    assert_eq!(u32_at(57), 64, "max_in_flight");
    assert_eq!(u32_at(61), 0, "restored: none");
    let mut rest = Cursor(&p[65..]);
    assert!(rest.string().starts_with("vsvad "), "server");
    rest.end();

    // OPEN_CONTAINER, ATTACH_GROUP, IOCTL(SET_IOMMU nesting), then a DMA with no mapping:
    // EFAULT with one fault record as its payload.
    let h = call(&mut s, 0x0101, 4, b"").result as u32;
    let mut b = h.to_le_bytes().to_vec();
    b.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(call(&mut s, 0x0103, 5, &b).result, 0);
    let mut b = h.to_le_bytes().to_vec();
    b.extend_from_slice(&0x3b66u32.to_le_bytes());
    b.extend_from_slice(&6u64.to_le_bytes());
    assert_eq!(call(&mut s, 0x0105, 6, &b).result, 0);
    // The doc's PASID_REQUEST ALLOC example, on this handle.
    let mut b = h.to_le_bytes().to_vec();
    for v in [0x3b76u32, 16, 1, 1, 0xfffff] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let r = call(&mut s, 0x0105, 7, &b);
    assert_eq!((r.result, r.payload.len()), (1, 0), "{}", r.message);
    let mut b = 0x0018u16.to_le_bytes().to_vec();
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0x1000u64.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    let r = call(&mut s, 0x0301, 8, &b);
    assert_eq!(r.result, -14, "{}", r.message);
    let mut c = Cursor(&r.payload);
    let dma_fault = fault_record(&mut c);
    c.end();
    assert_eq!((dma_fault.0, dma_fault.3), (0x0018, 0x1000));

    // STATUS, every field of its table in order.
    let r = call(&mut s, 0x0401, 9, b"");
    assert_eq!(r.result, 0);
    let mut c = Cursor(&r.payload);
    assert!(c.string().starts_with("vsvad "));
    let (_uptime, _instance) = (c.u64(), c.u64());
    assert_eq!(c.u8(), 20, "pasid_bits");
    assert_eq!(c.u32(), (1 << 20) - 1, "capacity");
    assert_eq!(c.u64(), 1, "allocated");
    assert_eq!(c.u64(), 0, "freeing");
    assert_eq!(c.u32(), 1, "processes");
    assert_eq!(c.u32(), 0, "held");
    assert_eq!(c.u32(), 1, "connections");
    assert_eq!(c.u32(), 1000, "default_quota");
    assert_eq!(c.u8(), 1, "durable");
    let (_hits, _misses) = (c.u64(), c.u64());
    assert_eq!(c.u64(), 1, "faults");
    let n = c.u32();
    let devices: Vec<_> = (0..n)
        .map(|_| (c.u16(), c.u32(), c.u8(), c.string()))
        .collect();
    assert_eq!(devices[0], (0x0018, 1, 20, "0000:00:03.0".to_string()));
    assert_eq!(devices.len(), 4);
    let n = c.u32();
    let refusals: Vec<_> = (0..n).map(|_| (c.string(), c.string(), c.u64())).collect();
    assert_eq!(refusals.len(), 12, "every (op, reason), zeros included");
    assert!(refusals
        .iter()
        .all(|(op, _, _)| op == "unbind" || op == "invalidate"));
    let requests = c.u64();
    assert!(requests >= 8, "requests {requests}");
    let (_translations, _commits, _page_requests) = (c.u64(), c.u64(), c.u64());
    assert_eq!(c.u32(), 0, "page_requests_pending");
    c.end();

    // SET_QUOTA of this process (root is an admin), then SETS.
    let mut b = std::process::id().to_le_bytes().to_vec();
    b.extend_from_slice(&7u32.to_le_bytes());
    assert_eq!(call(&mut s, 0x0403, 10, &b).result, 0);
    let r = call(&mut s, 0x0402, 11, b"");
    let mut c = Cursor(&r.payload);
    let n = c.u32();
    assert_eq!(i64::from(n), r.result);
    let mut mine = None;
    for _ in 0..n {
        let (pid, uid, _gid, _start) = (c.u32(), c.u32(), c.u32(), c.u64());
        let (state, conns, quota) = (c.u8(), c.u32(), c.u32());
        let pasids: Vec<u32> = (0..c.u32()).map(|_| c.u32()).collect();
        let command = c.string();
        assert!(command.len() <= 200);
        if pid == std::process::id() {
            mine = Some((uid, state, conns, quota, pasids));
        }
    }
    c.end();
    let uid = rustix::process::getuid().as_raw();
    assert_eq!(mine, Some((uid, 0, 1, 7, vec![1])));

    // FAULTS and FAULTS_SINCE.
    let r = call(&mut s, 0x0405, 12, &10u32.to_le_bytes());
    assert_eq!(r.result, 1);
    let mut c = Cursor(&r.payload);
    assert_eq!(
        (c.u64(), c.u64(), c.u32()),
        (1, 0, 1),
        "total, dropped, count"
    );
    assert_eq!(fault_record(&mut c), dma_fault);
    c.end();
    let mut b = 0u64.to_le_bytes().to_vec();
    b.extend_from_slice(&10u32.to_le_bytes());
    let r = call(&mut s, 0x0406, 13, &b);
    assert_eq!(r.result, 1);
    let mut c = Cursor(&r.payload);
    assert_eq!(
        (c.u64(), c.u64(), c.u32()),
        (1, 0, 1),
        "next, missed, count"
    );
    assert_eq!(c.u64(), 1, "number");
    assert_eq!(fault_record(&mut c), dma_fault);
    c.end();

    // FORCE_RELEASE of a pid with no context: ESRCH.
    let r = call(&mut s, 0x0404, 14, &u32::MAX.to_le_bytes());
    assert_eq!(r.result, -3, "{}", r.message);

    // A body one byte short names the field; an unknown kind is ENOSYS; both go on.
    let r = call(&mut s, 0x0403, 15, &[0; 7]);
    assert_eq!(r.result, -22);
    assert!(r.message.contains("quota"), "{}", r.message);
    assert_eq!(call(&mut s, 0x7fff, 16, b"").result, -38);
    // A header that cannot be trusted: the error reply with its id and kind, then the close.
    s.write_all(&frame(0x0002, 0, 5, 17, b"")).unwrap();
    let r = read_reply(&mut s).expect("an error reply");
    assert_eq!((r.kind, r.id, r.result), (0x0002, 17, -9), "{}", r.message);
    assert!(read_reply(&mut s).is_none(), "closed");
}
