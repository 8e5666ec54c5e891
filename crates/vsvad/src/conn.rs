//! One client connection: reading frames (and the file descriptors sent with them), handling
//! them, and writing replies.
//!
//! # Threading
//!
//! Each connection has its own thread, which blocks only on its own socket. A client that
//! stalls — half a frame, or never reading its replies — holds up nothing but that thread,
//! and is cut off when a frame is not complete `limits.frame_timeout_ms` after its first
//! byte (however slowly the bytes trickle in), when a write blocks for
//! `limits.write_timeout_ms`, or, if configured, when it is silent between frames for
//! `limits.idle_timeout_secs`. Requests touch
//! shared state only through short per-process or lock-free paths, never while blocked on a
//! socket.
//!
//! # Pipelining and group commit
//!
//! The thread handles every complete frame it has buffered (up to `limits.max_in_flight`
//! requests, or replies of `limits.max_queued_bytes`, whichever comes first; it reads
//! nothing more until they are written) before writing their replies in one `write`, waiting once for the store to make the last
//! of their records durable. Replies go out in request order, each with its request's id.
//!
//! # File descriptors
//!
//! A frame's descriptors must be sent with `SCM_RIGHTS` in the `sendmsg` that carries the
//! frame's first byte, and that `sendmsg` must carry no bytes of an earlier frame. The
//! kernel stops a `recvmsg` right after the segment that carried descriptors, so they arrive
//! with a read whose last byte belongs to their frame: each batch is tagged with the stream
//! offset of that byte and handed to the frame containing it. A frame whose declared `nfds`
//! differs from what arrived with it gets `EBADF` (and the descriptors are closed).

use std::collections::VecDeque;
use std::io::{self, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use vsva_proto::{
    Errno, Frame, FrameDecoder, FrameHeader, Kind, ProtoError, Reply, Request, MAX_HELLO_BODY,
};

use crate::daemon::{Daemon, Outcome, Session};

/// Most descriptors one `recvmsg` takes; more are closed by the kernel and reported as
/// truncated (`EBADF` for their frame).
const MAX_FDS_PER_READ: usize = 8;

/// The reply buffer's usual capacity; a larger one is given back after a flush.
const OUT_CAPACITY: usize = 4096;

struct Pending {
    header: FrameHeader,
    kind: Option<Kind>,
    started: Instant,
    outcome: Outcome,
}

/// Serves one connection until it closes, fails, or the daemon shuts it down.
pub fn serve(daemon: Arc<Daemon>, stream: UnixStream, session: Session) {
    let conn = session.conn;
    let pid = session.credentials.pid;
    let daemon_max_queued = daemon.settings().limits.max_queued_bytes as usize;
    let mut c = Conn {
        max_in_flight: daemon.settings().limits.max_in_flight as usize,
        daemon,
        stream,
        session,
        dec: FrameDecoder::new(MAX_HELLO_BODY),
        fds: VecDeque::new(),
        truncated: Vec::new(),
        pending: Vec::new(),
        out: Vec::with_capacity(OUT_CAPACITY),
        max_queued: daemon_max_queued,
        timeout: None,
        hello_deadline: None,
        frame_deadline: None,
    };
    let why = c.run();
    tracing::debug!(conn, pid, why, "connection closed");
    c.daemon.disconnect(&c.session);
}

struct Conn {
    daemon: Arc<Daemon>,
    stream: UnixStream,
    session: Session,
    dec: FrameDecoder,
    /// Received descriptors, each tagged with the stream offset of the last byte of the read
    /// that brought it.
    fds: VecDeque<(u64, OwnedFd)>,
    /// Tags of reads whose descriptors the kernel truncated.
    truncated: Vec<u64>,
    pending: Vec<Pending>,
    out: Vec<u8>,
    timeout: Option<Duration>,
    hello_deadline: Option<Instant>,
    /// When the frame being received must be complete.
    frame_deadline: Option<Instant>,
    max_in_flight: usize,
    /// Reply bytes queued past which the connection writes before it reads more.
    max_queued: usize,
}

impl Conn {
    fn run(&mut self) -> &'static str {
        let limits = self.daemon.settings().limits.clone();
        if self
            .stream
            .set_write_timeout(Some(limits.write_timeout()))
            .is_err()
        {
            return "cannot set the write timeout";
        }
        self.hello_deadline = Some(Instant::now() + limits.handshake_timeout());
        loop {
            // Handle everything buffered, flushing every `max_in_flight` requests.
            loop {
                match self.dec.next_frame() {
                    Ok(Some(frame)) => {
                        // The next frame's clock starts when its first byte is seen.
                        self.frame_deadline = None;
                        self.handle_frame(frame);
                        // Nothing more is read until the replies queued so far are written:
                        // a client that does not read its replies holds a bounded amount.
                        let full = self.pending.len() >= self.max_in_flight
                            || self.queued_bytes() >= self.max_queued;
                        if full && self.flush().is_err() {
                            return "write failed";
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.daemon
                            .metrics()
                            .malformed_frames
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(conn = self.session.conn, error = %e.error, "bad frame header; closing");
                        self.push_error(e.header, None, &e.error);
                        let _ = self.flush();
                        return "bad frame header";
                    }
                }
            }
            if self.flush().is_err() {
                return "write failed";
            }
            // Between frames: give back what a large frame or reply made the buffers grow by.
            self.dec.release_memory();
            if self.out.capacity() > OUT_CAPACITY {
                self.out = Vec::with_capacity(OUT_CAPACITY);
            }
            if self.session.process.is_some() {
                self.hello_deadline = None;
                if self.dec.max_body() != limits.max_frame {
                    self.dec.set_max_body(limits.max_frame);
                }
            }
            // A started frame must complete within `frame_timeout` of its first byte, however
            // slowly its bytes trickle in; a connection between frames may wait for
            // `idle_timeout` (forever by default), except before its hello.
            if self.dec.buffered() == 0 {
                self.frame_deadline = None;
            } else if self.frame_deadline.is_none() {
                self.frame_deadline = Some(Instant::now() + limits.frame_timeout());
            }
            let deadline = match (self.hello_deadline, self.frame_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let want = match deadline {
                Some(d) => Some(
                    d.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ),
                None => limits.idle_timeout(),
            };
            if want != self.timeout {
                if self.stream.set_read_timeout(want).is_err() {
                    return "cannot set the read timeout";
                }
                self.timeout = want;
            }
            match self.read_some() {
                Ok(0) => return "closed by the client",
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    self.daemon
                        .metrics()
                        .timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return if self.hello_deadline.is_some() {
                        "no hello in time"
                    } else if self.frame_deadline.is_some() {
                        "a frame did not complete in time"
                    } else {
                        "idle for longer than limits.idle_timeout_secs"
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return "read failed",
            }
        }
    }

    fn read_some(&mut self) -> io::Result<usize> {
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let Conn {
            stream,
            dec,
            fds,
            truncated,
            ..
        } = self;
        let buf = dec.spare(16 * 1024);
        let mut iov = [IoSliceMut::new(buf)];
        let r = rustix::net::recvmsg(&*stream, &mut iov, &mut cmsg, RecvFlags::CMSG_CLOEXEC)
            .map_err(io::Error::from)?;
        dec.commit(r.bytes);
        let tag = dec.received().saturating_sub(1);
        for msg in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = msg {
                for fd in received {
                    fds.push_back((tag, fd));
                }
            }
        }
        if r.flags.contains(ReturnFlags::CTRUNC) {
            truncated.push(tag);
        }
        Ok(r.bytes)
    }

    fn handle_frame(&mut self, frame: Frame) {
        let end = frame.end();
        let mut fds = Vec::new();
        while self.fds.front().is_some_and(|(tag, _)| *tag < end) {
            if let Some((_, fd)) = self.fds.pop_front() {
                fds.push(fd);
            }
        }
        let before = self.truncated.len();
        self.truncated.retain(|&t| t >= end);
        let truncated = self.truncated.len() != before;
        let header = frame.header;
        let kind = Kind::from_u16(header.kind);
        let metrics = self.daemon.metrics().clone();
        if header.is_reply() {
            metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
            self.push_error(
                header,
                kind,
                &ProtoError::BadValue {
                    message: "frame",
                    field: "flags",
                    value: header.flags.into(),
                    why: "a client sends requests; the REPLY flag is the daemon's",
                },
            );
            return;
        }
        if truncated {
            self.push_reply(header, kind, Reply::error(Errno::EBADF, format!("more than {MAX_FDS_PER_READ} file descriptors arrived with one read; the kernel dropped the rest")));
            return;
        }
        // The one descriptor-count check: what arrived must be what the frame declares and
        // what its kind takes, so a handler gets exactly the descriptors it needs.
        let arrived = fds.len();
        let mismatch = if arrived != usize::from(header.nfds) {
            Some(format!(
                "frame declares nfds {} but {arrived} file descriptor(s) arrived with it",
                header.nfds
            ))
        } else {
            kind.filter(|k| usize::from(k.nfds()) != arrived).map(|k| {
                format!(
                    "{} takes {} file descriptor(s) but {arrived} arrived with it",
                    k.label(),
                    k.nfds()
                )
            })
        };
        if let Some(message) = mismatch {
            self.push_reply(header, kind, Reply::error(Errno::EBADF, message));
            return;
        }
        let req = match Request::decode(header.kind, &frame.body) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProtoError::UnknownKind { .. }) {
                    metrics.unknown_requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                }
                self.push_error(header, kind, &e);
                return;
            }
        };
        let started = Instant::now();
        let outcome = self.daemon.handle(&mut self.session, req, fds);
        self.pending.push(Pending {
            header,
            kind,
            started,
            outcome,
        });
    }

    /// Bytes of the replies waiting to be written.
    fn queued_bytes(&self) -> usize {
        self.pending
            .iter()
            .map(|p| p.outcome.reply.payload.len() + p.outcome.reply.message.len())
            .sum()
    }

    fn push_error(&mut self, header: FrameHeader, kind: Option<Kind>, e: &ProtoError) {
        self.push_reply(header, kind, Reply::error(e.errno(), e.to_string()));
    }

    fn push_reply(&mut self, header: FrameHeader, kind: Option<Kind>, reply: Reply) {
        self.pending.push(Pending {
            header,
            kind,
            started: Instant::now(),
            outcome: reply.into(),
        });
    }

    /// Waits for the store to make the pending replies' records durable, then writes them.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let metrics = self.daemon.metrics().clone();
        for p in self.pending.drain(..) {
            let Outcome {
                mut reply,
                ticket,
                rollback,
            } = p.outcome;
            // Each change is acknowledged only once its own record is durable.
            let failed = ticket.and_then(|t| self.daemon.store().wait(t).err());
            if let Some(e) = failed {
                reply = match rollback {
                    Some(rb) => {
                        self.daemon.rollback(rb);
                        Reply::error(
                            e.errno(),
                            format!("the change could not be made durable and was undone: {e}"),
                        )
                    }
                    // A free or release cannot be undone: it stays in effect, and its record
                    // is written once the disk accepts it.
                    None => Reply::error(
                        e.errno(),
                        format!(
                            "the change was made but is not durable yet (it is written once \
                             the disk accepts it): {e}"
                        ),
                    ),
                };
            }
            if let Some(kind) = p.kind {
                metrics.request(kind, p.started.elapsed(), reply.errno());
            }
            self.out.extend_from_slice(&reply.encode_frame(&p.header));
        }
        let r = self.stream.write_all(&self.out);
        self.out.clear();
        if let Err(e) = &r {
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
                metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}
