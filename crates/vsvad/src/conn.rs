//! One client connection as a state machine the event loop drives: reading frames (and the
//! file descriptors sent with them) without blocking, handling them, queueing replies and
//! writing them without blocking.
//!
//! # Driven, never blocking
//!
//! The connection's socket is non-blocking; a worker of the event loop (see
//! `crate::event_loop`) calls [`Conn::read_and_handle`] when it is readable, [`Conn::settle`]
//! once per wake-up after every ready connection has been read, and [`Conn::write`] when
//! there is something to write or the socket became writable. Nothing here waits on a
//! socket. A client that stalls — half a frame, or never reading its replies — costs its
//! worker nothing but a deadline: the connection is cut off when a frame is not complete
//! `limits.frame_timeout_ms` after its first byte (however slowly the bytes trickle in), when
//! its hello does not come within `limits.handshake_timeout_ms`, when a reply makes no
//! progress into the socket for `limits.write_timeout_ms`, or, if configured, when it is
//! silent between frames for `limits.idle_timeout_secs`.
//!
//! # Pipelining, bounded queues and group commit
//!
//! Each wake-up handles every complete frame the socket has (up to `limits.max_in_flight`
//! requests), and their replies go out together in one `write`. Replies not yet written are
//! bounded: once they reach `limits.max_queued_bytes` the connection reads nothing more (the
//! kernel's socket buffer then pushes back on the client) until they are written; each such
//! pause is counted in `vsvad_read_pauses_total`. A change is acknowledged only once its
//! store record is durable: [`Conn::settle`] waits for the tickets of the requests handled in
//! this wake-up, after the worker has handled every ready connection's requests, so one
//! group commit covers them all. Replies go out in request order, each with its request's id.
//!
//! # Parking
//!
//! A request that may wait for a device process (`Daemon::may_wait`: an invalidating kind
//! while some device process could be waited for) is not handled in the worker: it goes,
//! with the session, to the daemon's blocking pool (`crate::parked`), and the connection is
//! parked — it reads no further frame (so its replies stay in request order), its frame and
//! idle deadlines stop, and it is not closed, even if its peer has gone, until the request
//! comes back ([`Conn::resume`]). The reply then queues behind those before it and reading
//! resumes. A connection whose client closed meanwhile finds out when it next reads or
//! writes: the request was handled in full, its reply is dropped, and the connection closes
//! with its own session.
//!
//! # File descriptors
//!
//! A frame's descriptors must be sent with `SCM_RIGHTS` in the `sendmsg` that carries the
//! frame's first byte, and that `sendmsg` must carry no bytes of an earlier frame. The
//! kernel stops a `recvmsg` right after the segment that carried descriptors, so they arrive
//! with a read whose last byte belongs to their frame: each batch is tagged with the stream
//! offset of that byte and handed to the frame containing it. A frame whose declared `nfds`
//! differs from what arrived with it gets `EBADF` (and the descriptors are closed). A reply
//! that carries descriptors (`EVENTS_OPEN`) is sent by a `sendmsg` of its own that starts at
//! its first byte.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use vsva_proto::{
    Errno, Frame, FrameDecoder, FrameHeader, Kind, ProtoError, Reply, Request, HEADER_LEN,
    MAX_HELLO_BODY,
};

use crate::config::Limits;
use crate::daemon::{Daemon, Outcome, Session};
use crate::parked::{self, Park, Returned};

/// Most descriptors one `recvmsg` takes; more are closed by the kernel and reported as
/// truncated (`EBADF` for their frame).
const MAX_FDS_PER_READ: usize = 8;

/// The reply buffer's usual capacity; a larger one is given back once it is written.
const OUT_CAPACITY: usize = 4096;

/// Bytes one `recvmsg` asks for.
const READ_CHUNK: usize = 16 * 1024;

struct Pending {
    header: FrameHeader,
    kind: Option<Kind>,
    started: Instant,
    outcome: Outcome,
}

/// What a connection wants its worker to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interest {
    /// It reads more when the socket is readable.
    pub read: bool,
    /// It has bytes waiting for room in the socket.
    pub write: bool,
}

/// One client connection: its socket, session, decoder, and replies not yet written.
pub struct Conn {
    daemon: Arc<Daemon>,
    limits: Limits,
    stream: UnixStream,
    session: Session,
    dec: FrameDecoder,
    /// Received descriptors, each tagged with the stream offset of the last byte of the read
    /// that brought it.
    fds: VecDeque<(u64, OwnedFd)>,
    /// Tags of reads whose descriptors the kernel truncated.
    truncated: Vec<u64>,
    /// Requests handled in this wake-up, their replies not yet settled.
    pending: Vec<Pending>,
    /// Encoded replies; `out[written..]` is not yet in the socket.
    out: Vec<u8>,
    /// Replies in `out` that carry descriptors: the frame's start and end offsets, and the
    /// descriptors to send with its first byte.
    out_fds: VecDeque<(usize, usize, Vec<OwnedFd>)>,
    written: usize,
    hello_deadline: Option<Instant>,
    /// When the frame being received must be complete.
    frame_deadline: Option<Instant>,
    /// When the reply bytes waiting for room must have moved.
    write_deadline: Option<Instant>,
    /// The last time a read or a write moved bytes (for the idle limit).
    last_active: Instant,
    /// Reading stopped for good (the client closed its side, the daemon is stopping, or a
    /// bad header ended the stream): the connection closes once its replies are written.
    closing: Option<&'static str>,
    /// The connection must close now, with this reason.
    dead: Option<&'static str>,
    /// Reading was paused because the queued replies reached `max_queued_bytes`.
    paused: bool,
    /// The last call to [`Conn::read_and_handle`] stopped at a limit with frames possibly
    /// still buffered: call it again once the replies are written.
    more: bool,
    /// Where a request that may wait for a device process goes and comes back.
    park: Park,
    /// A request of this connection is in the blocking pool, with the session: nothing more
    /// is read, and the connection is not closed, until [`Conn::resume`].
    parked: bool,
}

impl Conn {
    /// Takes over an accepted connection the daemon registered, its socket already
    /// non-blocking. [`Conn::finish`] unregisters it.
    pub fn new(daemon: Arc<Daemon>, stream: UnixStream, session: Session, park: Park) -> Conn {
        let limits = daemon.settings().limits.clone();
        let now = Instant::now();
        Conn {
            hello_deadline: Some(now + limits.handshake_timeout()),
            limits,
            daemon,
            stream,
            session,
            dec: FrameDecoder::new(MAX_HELLO_BODY),
            fds: VecDeque::new(),
            truncated: Vec::new(),
            pending: Vec::new(),
            out: Vec::with_capacity(OUT_CAPACITY),
            out_fds: VecDeque::new(),
            written: 0,
            frame_deadline: None,
            write_deadline: None,
            last_active: now,
            closing: None,
            dead: None,
            paused: false,
            more: false,
            park,
            parked: false,
        }
    }

    /// The daemon's number for this connection (in its log lines).
    pub fn id(&self) -> u64 {
        self.session.conn
    }

    /// The socket, for the worker's `epoll` registration.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Reads what the socket has and handles every complete frame, until the socket is empty,
    /// `max_in_flight` requests are handled, or the unwritten replies reach
    /// `max_queued_bytes`. Their replies are queued for [`Conn::settle`].
    pub fn read_and_handle(&mut self) {
        self.more = false;
        if self.closing.is_some() || self.dead.is_some() {
            return;
        }
        let mut drained = false;
        loop {
            // Handle everything buffered, as far as the limits allow.
            loop {
                if self.at_limit() {
                    self.more = true;
                    if self.paused || self.parked {
                        // The client cannot finish a frame the daemon does not read: while
                        // reading is paused only the write deadline runs.
                        self.frame_deadline = None;
                    } else {
                        self.update_frame_deadline();
                    }
                    return;
                }
                match self.dec.next_frame() {
                    Ok(Some(frame)) => {
                        // The next frame's clock starts when its first byte is seen.
                        self.frame_deadline = None;
                        self.handle_frame(frame);
                        if self.hello_deadline.is_some() && self.session.process.is_some() {
                            self.hello_deadline = None;
                            self.dec.set_max_body(self.limits.max_frame);
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
                        self.closing = Some("bad frame header");
                        return;
                    }
                }
            }
            self.update_frame_deadline();
            if drained {
                return;
            }
            match self.read_some() {
                Ok((0, _)) => {
                    self.closing = Some("closed by the client");
                    return;
                }
                Ok((n, asked)) => {
                    self.last_active = Instant::now();
                    // A short read took all the socket had: skip the read that would only
                    // say so (the socket stays readable, level-triggered, if more came).
                    drained = n < asked;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = Some("read failed");
                    return;
                }
            }
        }
    }

    /// Whether reading must stop until the replies are written.
    fn at_limit(&mut self) -> bool {
        if self.parked || self.pending.len() >= self.limits.max_in_flight as usize {
            return true;
        }
        let full = self.queued_bytes_total() >= self.limits.max_queued_bytes as usize;
        if full && !self.paused {
            self.paused = true;
            self.daemon
                .metrics()
                .read_pauses
                .fetch_add(1, Ordering::Relaxed);
        }
        full
    }

    /// A started frame must complete within `frame_timeout` of its first byte.
    fn update_frame_deadline(&mut self) {
        if self.dec.buffered() == 0 {
            self.frame_deadline = None;
        } else if self.frame_deadline.is_none() {
            self.frame_deadline = Some(Instant::now() + self.limits.frame_timeout());
        }
    }

    /// Waits for the store to make the handled requests' records durable (undoing a change
    /// that could not be), records their metrics, and encodes their replies for writing.
    pub fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Borrowed, not cloned: an `Arc` clone per wake-up of every connection would bounce
        // the count's cache line between the workers.
        let metrics = self.daemon.metrics();
        for p in self.pending.drain(..) {
            let Outcome {
                mut reply,
                ticket,
                rollback,
                fds,
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
            let start = self.out.len();
            let nfds = if fds.is_empty() || reply.result < 0 {
                0
            } else {
                u8::try_from(fds.len()).unwrap_or(u8::MAX)
            };
            push_reply_frame(&mut self.out, &p.header, nfds, &reply);
            if nfds > 0 {
                self.out_fds.push_back((start, self.out.len(), fds));
            }
        }
    }

    /// Writes as much of the encoded replies as the socket takes, without blocking.
    pub fn write(&mut self) {
        if self.dead.is_some() {
            return;
        }
        let mut moved = false;
        while self.written < self.out.len() {
            match self.write_some() {
                Ok(0) => {
                    self.dead = Some("write failed");
                    return;
                }
                Ok(n) => {
                    self.written += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = Some("write failed");
                    return;
                }
            }
        }
        let now = Instant::now();
        if moved {
            self.last_active = now;
        }
        if self.written == self.out.len() {
            self.written = 0;
            self.out.clear();
            self.write_deadline = None;
            // Give back what a large reply made the buffers grow by.
            if self.out.capacity() > OUT_CAPACITY {
                self.out = Vec::with_capacity(OUT_CAPACITY);
            }
            if self.dec.buffered() == 0 {
                self.dec.release_memory();
            }
        } else if moved || self.write_deadline.is_none() {
            self.write_deadline = Some(now + self.limits.write_timeout());
        }
        if self.paused && self.queued_bytes_total() < self.limits.max_queued_bytes as usize {
            self.paused = false;
            self.more = true;
        }
    }

    /// One `write` of the replies, or one `sendmsg` of a reply that carries descriptors:
    /// never bytes of an earlier frame with them, as the protocol requires.
    fn write_some(&mut self) -> io::Result<usize> {
        let next = self.out_fds.front().map(|f| f.0);
        if next != Some(self.written) {
            let end = next.unwrap_or(self.out.len());
            return (&self.stream).write(&self.out[self.written..end]);
        }
        let Some((_, end, fds)) = self.out_fds.front() else {
            return Ok(0);
        };
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !cmsg.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let n = rustix::net::sendmsg(
            &self.stream,
            &[IoSlice::new(&self.out[self.written..*end])],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        )?;
        // The descriptors went with the first byte: the rest is plain bytes.
        self.out_fds.pop_front();
        Ok(n)
    }

    /// Whether [`Conn::read_and_handle`] should run again without waiting for the socket
    /// (frames may be buffered that a limit kept back).
    pub fn has_more(&self) -> bool {
        self.more && !self.paused && !self.parked && self.closing.is_none() && self.dead.is_none()
    }

    /// What to wait for on the socket; `None`: nothing, and the socket must leave the
    /// worker's `epoll` set (a parked connection whose peer hung up would otherwise report
    /// `HUP` at every wait until its request comes back).
    pub fn interest(&self) -> Option<Interest> {
        let want = Interest {
            read: self.closing.is_none() && self.dead.is_none() && !self.paused && !self.parked,
            write: self.dead.is_none() && self.written < self.out.len(),
        };
        (!self.parked || want.write).then_some(want)
    }

    /// Whether a request of this connection is in the blocking pool.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Takes back a parked request's session and result: the reply is queued behind the
    /// replies before it (for [`Conn::settle`]), and reading resumes with the frames that
    /// arrived meanwhile.
    pub fn resume(&mut self, r: Returned) {
        debug_assert!(self.parked, "a result came back to a connection not parked");
        self.session = r.session;
        self.parked = false;
        self.more = true;
        self.pending.push(Pending {
            header: r.header,
            kind: r.kind,
            started: r.started,
            outcome: r.outcome,
        });
    }

    /// The earliest deadline of this connection, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle_deadline();
        [
            self.hello_deadline,
            self.frame_deadline,
            self.write_deadline,
            idle,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Between frames, with everything written, a connection past its hello may be silent
    /// for `idle_timeout` (forever by default).
    fn idle_deadline(&self) -> Option<Instant> {
        let between = self.hello_deadline.is_none()
            && !self.parked
            && self.frame_deadline.is_none()
            && self.written == self.out.len()
            && self.pending.is_empty()
            && self.closing.is_none();
        between
            .then(|| self.limits.idle_timeout().map(|t| self.last_active + t))
            .flatten()
    }

    /// Cuts the connection off if a deadline has passed (counted in the timeouts metric).
    pub fn check_deadlines(&mut self, now: Instant) {
        if self.dead.is_some() {
            return;
        }
        let passed = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let why = if passed(self.write_deadline) {
            "a reply could not be written in time"
        } else if passed(self.hello_deadline) {
            "no hello in time"
        } else if passed(self.frame_deadline) {
            "a frame did not complete in time"
        } else if passed(self.idle_deadline()) {
            "idle for longer than limits.idle_timeout_secs"
        } else {
            return;
        };
        self.daemon
            .metrics()
            .timeouts
            .fetch_add(1, Ordering::Relaxed);
        self.dead = Some(why);
    }

    /// Why the connection must be closed now, if it must: it failed or timed out, or it
    /// stopped reading and has written everything.
    pub fn finished(&self) -> Option<&'static str> {
        if self.parked {
            // Closed once its request is back: the session must be disconnected, not its
            // stand-in.
            return None;
        }
        self.dead.or_else(|| {
            self.closing
                .filter(|_| self.pending.is_empty() && self.written == self.out.len())
        })
    }

    /// Closes the connection: unregisters it from the daemon, which closes its containers
    /// and, for its process's last connection, releases the process.
    pub fn finish(mut self, why: &str) {
        if self.parked {
            // Only after an `epoll` failure, or when the workers stop, with a request still
            // in the blocking pool, which has the session: the worker unregisters it when it
            // comes back (a shutdown keeps every process's state anyway).
            tracing::warn!(
                conn = self.session.conn,
                why,
                "connection closed while its request is still being handled"
            );
            return;
        }
        tracing::debug!(
            conn = self.session.conn,
            pid = self.session.credentials.pid,
            why,
            "connection closed"
        );
        self.daemon.disconnect(&mut self.session);
    }

    /// One `recvmsg`: the bytes received and the room it offered.
    fn read_some(&mut self) -> io::Result<(usize, usize)> {
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
        let buf = dec.spare(READ_CHUNK);
        let asked = buf.len();
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
        Ok((r.bytes, asked))
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
        if header.is_reply() {
            self.daemon
                .metrics()
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
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
                let metrics = self.daemon.metrics();
                if matches!(e, ProtoError::UnknownKind { .. }) {
                    metrics.unknown_requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    metrics.malformed_frames.fetch_add(1, Ordering::Relaxed);
                }
                self.push_error(header, kind, &e);
                return;
            }
        };
        if self.daemon.may_wait(&self.session, &req) {
            // It may wait for a device process: the blocking pool handles it, and this
            // connection reads nothing more until it comes back.
            let stand_in = parked::stand_in(&self.session);
            let session = std::mem::replace(&mut self.session, stand_in);
            self.parked = true;
            parked::hand_off(&self.daemon, &self.park, session, header, req, fds);
            return;
        }
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

    /// Bytes of replies not yet written: queued in this wake-up, and encoded but not yet in
    /// the socket.
    fn queued_bytes_total(&self) -> usize {
        self.queued_bytes() + (self.out.len() - self.written)
    }
}

/// Appends the reply frame answering `request` to `out`: room for the header, the body
/// written behind it, then the header with the body's length; no body or frame is built
/// apart and copied in.
fn push_reply_frame(out: &mut Vec<u8>, request: &FrameHeader, nfds: u8, reply: &Reply) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    reply.append_body(out);
    let header = FrameHeader {
        body_len: u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX),
        kind: request.kind,
        flags: vsva_proto::FLAG_REPLY,
        nfds,
        id: request.id,
    };
    out[start..start + HEADER_LEN].copy_from_slice(&header.encode());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_frame_is_built_in_place_as_the_protocol_encodes_it() {
        let request = FrameHeader {
            body_len: 9,
            kind: Kind::Ioctl as u16,
            flags: 0,
            nfds: 0,
            id: 0x0102_0304_0506_0708,
        };
        for reply in [
            Reply::ok(7, vec![1, 2, 3]),
            Reply::error(Errno::EINVAL, "bad field"),
        ] {
            let mut out = vec![0xaa];
            push_reply_frame(&mut out, &request, 0, &reply);
            assert_eq!(out[0], 0xaa, "what was queued before stays");
            assert_eq!(out[1..], reply.encode_frame(&request)[..]);
        }
        let mut out = Vec::new();
        push_reply_frame(&mut out, &request, 2, &Reply::ok(0, Vec::new()));
        let header = FrameHeader::parse(out[..16].try_into().unwrap());
        assert_eq!((header.nfds, header.id), (2, request.id));
        assert!(header.is_reply());
    }
}
