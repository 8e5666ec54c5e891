//! One connection to the daemon: connecting and the handshake, resume, and sending requests
//! and reading their replies (one at a time, with descriptors, or pipelined).

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use vsva_proto::{
    encode_request, Credentials, FrameDecoder, Hello, HelloReply, Kind, ProtoError, Reply, Request,
    ResumeToken, DEFAULT_MAX_BODY, HARD_MAX_BODY, HELLO_ADMIN, HELLO_RESUMED, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

use crate::error::{check, io_err, ClientError};

/// The socket error `source` while doing `what`: [`ClientError::TimedOut`] when the socket's
/// timeout expired, [`ClientError::Io`] otherwise.
/// A reply whose id is not its request's.
fn wrong_id(kind: Kind, got: u64) -> ClientError {
    ClientError::Protocol {
        kind,
        error: ProtoError::BadValue {
            message: "reply",
            field: "id",
            value: got,
            why: "does not match the request",
        },
    }
}

fn socket_err(
    what: &'static str,
    timeout: Option<Duration>,
) -> impl FnOnce(io::Error) -> ClientError {
    move |source| match (source.kind(), timeout) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(after)) => {
            ClientError::TimedOut { what, after }
        }
        _ => ClientError::Io {
            what: what.into(),
            source,
        },
    }
}

/// Where and as whom to connect, and how long to wait for replies.
#[derive(Debug, Clone)]
pub struct Options {
    /// Path of the daemon's Unix socket.
    pub socket: PathBuf,
    /// A name for this client, shown by `sets`.
    pub name: String,
    /// A resume token from an earlier handshake (after a daemon restart).
    pub resume: ResumeToken,
    /// How long one read or write on the socket may wait before the call gives up with
    /// [`ClientError::TimedOut`] (None: forever). A stopped or wedged daemon is noticed after
    /// this long.
    pub timeout: Option<Duration>,
    /// How long a call busy-waits for its reply before it sleeps until the reply comes (None,
    /// the default: it sleeps at once). A thread woken from sleep on another CPU's behalf
    /// pays the wake-up, which on a virtual machine whose idle CPUs halt is tens of
    /// microseconds per reply; waiting awake does not, but keeps a CPU busy for as long as it
    /// waits, up to this long per call. For one latency-critical client on a machine with a
    /// CPU to spare, not for many clients sharing few CPUs (see `docs/performance.md`).
    pub reply_spin: Option<Duration>,
}

impl Options {
    /// Options for `socket` with the given client name.
    pub fn new(socket: impl Into<PathBuf>, name: impl Into<String>) -> Options {
        Options {
            socket: socket.into(),
            name: name.into(),
            resume: ResumeToken::default(),
            timeout: Some(Duration::from_secs(60)),
            reply_spin: None,
        }
    }
}

/// The default socket path for this user (see `vsva_proto::paths`).
pub fn default_socket() -> PathBuf {
    vsva_proto::paths::default_socket_path(rustix::process::geteuid().as_raw(), &|k| {
        std::env::var_os(k)
    })
}

/// One connection to `vsvad`.
pub struct Client {
    stream: UnixStream,
    dec: FrameDecoder,
    /// Descriptors received, each tagged with the stream offset of the last byte of the read
    /// that brought it (the frame containing that byte carried them).
    fds: VecDeque<(u64, OwnedFd)>,
    next_id: u64,
    hello: HelloReply,
    options: Options,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.options.socket)
            .field("pid", &self.hello.credentials.pid)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `e`, after closing the connection if `e` is a timeout: a request or reply cut off
    /// mid-frame leaves the stream out of step with the requests, so the connection is not
    /// used again; [`Client::reconnect`] resumes the process's context on a new one.
    fn broken(&self, e: ClientError) -> ClientError {
        if matches!(e, ClientError::TimedOut { .. }) {
            // Fails only when the peer already closed it: closed either way.
            self.stream.shutdown(std::net::Shutdown::Both).ok();
        }
        e
    }

    /// Connects to the default socket and does the handshake.
    pub fn connect_default(name: &str) -> Result<Client, ClientError> {
        Client::connect(Options::new(default_socket(), name))
    }

    /// Connects and does the handshake.
    ///
    /// # Errors
    ///
    /// [`ClientError::TimedOut`] when the daemon does not take the connection (its backlog
    /// is full) or does not answer the handshake within `options.timeout` (it is stopped or
    /// wedged); nothing is left behind, the connection is closed. [`ClientError::Io`] when
    /// there is no daemon on the socket.
    pub fn connect(options: Options) -> Result<Client, ClientError> {
        let stream = connect_within(&options.socket, options.timeout)?;
        stream
            .set_read_timeout(options.timeout)
            .map_err(io_err("cannot set the read timeout"))?;
        stream
            .set_write_timeout(options.timeout)
            .map_err(io_err("cannot set the write timeout"))?;
        let mut client = Client {
            stream,
            dec: FrameDecoder::new(HARD_MAX_BODY),
            fds: VecDeque::new(),
            next_id: 1,
            hello: HelloReply {
                version: 0,
                flags: 0,
                credentials: Credentials::default(),
                resume: ResumeToken::default(),
                instance: 0,
                pasid_bits: 0,
                quota: 0,
                max_body: DEFAULT_MAX_BODY,
                max_in_flight: 1,
                restored: Vec::new(),
                server: String::new(),
            },
            options,
        };
        client.handshake()?;
        Ok(client)
    }

    fn handshake(&mut self) -> Result<(), ClientError> {
        let hello = Request::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            resume: self.options.resume,
            client: self.options.name.clone(),
        });
        let reply = self.call(hello)?;
        self.hello = HelloReply::decode(&reply.payload).map_err(|error| ClientError::Protocol {
            kind: Kind::Hello,
            error,
        })?;
        self.options.resume = self.hello.resume;
        Ok(())
    }

    /// Connects again to the same socket, presenting the resume token this client got, so
    /// that after a daemon restart the process gets its held PASIDs back. Returns whether
    /// they were (see [`hello`](Self::hello)`.restored`). Container handles from before are
    /// gone either way.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect). The client then keeps its old connection (unusable if
    /// the daemon went away) and its token, so the call can be retried.
    pub fn reconnect(&mut self) -> Result<bool, ClientError> {
        let fresh = Client::connect(self.options.clone())?;
        *self = fresh;
        Ok(self.resumed())
    }

    /// What the daemon said at the handshake.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// Whether the last handshake gave back state held across a daemon restart.
    pub fn resumed(&self) -> bool {
        self.hello.flags & HELLO_RESUMED != 0
    }

    /// Whether this process may use the admin requests.
    pub fn is_admin(&self) -> bool {
        self.hello.flags & HELLO_ADMIN != 0
    }

    /// The resume token (keep it to resume from another connection or after a restart).
    pub fn resume_token(&self) -> ResumeToken {
        self.hello.resume
    }

    /// The options this client connected with (its resume token included).
    pub fn options(&self) -> &Options {
        &self.options
    }

    pub(crate) fn send(
        &mut self,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_request(id, req);
        if fds.is_empty() {
            self.stream.write_all(&frame).map_err(|e| {
                self.broken(socket_err("cannot send the request", self.options.timeout)(
                    e,
                ))
            })?;
            return Ok(id);
        }
        // The descriptors travel with the frame's first byte, in a sendmsg of this frame only.
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(ClientError::Io {
                what: "cannot attach the file descriptors".into(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        let sent = rustix::net::sendmsg(
            &self.stream,
            &[IoSlice::new(&frame)],
            &mut cmsg,
            SendFlags::empty(),
        )
        .map_err(|e| {
            socket_err(
                "cannot send the request with its file descriptors",
                self.options.timeout,
            )(e.into())
        })?;
        self.stream.write_all(&frame[sent..]).map_err(|e| {
            self.broken(socket_err("cannot send the request", self.options.timeout)(
                e,
            ))
        })?;
        Ok(id)
    }

    /// Reads the next reply frame (blocking, within the timeout).
    pub(crate) fn recv(&mut self, kind: Kind) -> Result<(u64, Reply), ClientError> {
        self.recv_fds(kind).map(|(id, reply, _)| (id, reply))
    }

    /// Reads the next reply frame and the descriptors that came with it.
    pub(crate) fn recv_fds(
        &mut self,
        kind: Kind,
    ) -> Result<(u64, Reply, Vec<OwnedFd>), ClientError> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(frame)) => {
                    let reply = Reply::decode(&frame.body)
                        .map_err(|error| ClientError::Protocol { kind, error })?;
                    let end = frame.end();
                    let mut fds = Vec::new();
                    while self.fds.front().is_some_and(|(tag, _)| *tag < end) {
                        if let Some((_, fd)) = self.fds.pop_front() {
                            fds.push(fd);
                        }
                    }
                    return Ok((frame.header.id, reply, fds));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::Protocol {
                        kind,
                        error: e.error,
                    })
                }
            }
            self.wait_readable()?;
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let buf = self.dec.spare(16 * 1024);
            let mut iov = [IoSliceMut::new(buf)];
            let r = loop {
                match rustix::net::recvmsg(
                    &self.stream,
                    &mut iov,
                    &mut cmsg,
                    RecvFlags::CMSG_CLOEXEC,
                ) {
                    Err(rustix::io::Errno::INTR) => {}
                    other => break other,
                }
            };
            let r = r.map_err(|e| {
                self.broken(socket_err("cannot read the reply", self.options.timeout)(
                    e.into(),
                ))
            })?;
            let mut received = Vec::new();
            for msg in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = msg {
                    received.extend(fds);
                }
            }
            if r.bytes == 0 {
                return Err(ClientError::Closed(String::new()));
            }
            self.dec.commit(r.bytes);
            let tag = self.dec.received().saturating_sub(1);
            self.fds.extend(received.into_iter().map(|fd| (tag, fd)));
        }
    }

    /// Waits, within the timeout, until the socket has something to read.
    ///
    /// A reader asleep in `recvmsg` on a Unix stream socket sleeps on the socket's one wait
    /// queue, which the daemon's read of our request also wakes (it frees our send buffer):
    /// every round trip would wake this thread once for nothing and cost the daemon a second
    /// wake-up of a sleeping process. `poll`'s wait is filtered by event, so only the reply
    /// (or the connection closing) wakes it.
    ///
    /// With [`Options::reply_spin`], it first checks the socket without sleeping, over and
    /// over, for up to that long (and no longer than the timeout, which the spin counts
    /// toward).
    fn wait_readable(&mut self) -> Result<(), ClientError> {
        let mut spun = Duration::ZERO;
        if let Some(spin) = self.options.reply_spin {
            let spin = self.options.timeout.map_or(spin, |t| spin.min(t));
            let started = Instant::now();
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            loop {
                let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
                // An error or a signal: the sleeping wait below reports or retries it.
                if matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0) {
                    return Ok(());
                }
                spun = started.elapsed();
                if spun >= spin {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let timeout = self.options.timeout.map(|d| {
            let d = d.saturating_sub(spun);
            rustix::time::Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        loop {
            let mut fds = [PollFd::new(&self.stream, PollFlags::IN)];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) => {
                    return Err(self
                        .broken(socket_err("cannot read the reply", self.options.timeout)(
                            io::ErrorKind::TimedOut.into(),
                        )))
                }
                Ok(_) => return Ok(()),
                // A signal: wait again (the timeout starts over, as `recvmsg`'s did).
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(self.broken(socket_err(
                        "cannot wait for the reply",
                        self.options.timeout,
                    )(e.into())))
                }
            }
        }
    }

    /// Sends one request and returns its reply; a failure reply becomes
    /// [`ClientError::Daemon`].
    pub fn call(&mut self, req: Request) -> Result<Reply, ClientError> {
        self.call_with_fds(req, &[])
    }

    /// Sends one request whose successful reply carries descriptors (at most its kind's
    /// `reply_nfds`), and returns the reply and the descriptors.
    pub fn call_for_fds(&mut self, req: Request) -> Result<(Reply, Vec<OwnedFd>), ClientError> {
        let kind = req.kind();
        let id = self.send(&req, &[])?;
        let (got, reply, fds) = self.recv_fds(kind)?;
        if got != id {
            return Err(wrong_id(kind, got));
        }
        let reply = check(kind, reply)?;
        if fds.len() > usize::from(kind.reply_nfds()) {
            return Err(ClientError::Protocol {
                kind,
                error: ProtoError::BadValue {
                    message: "reply",
                    field: "nfds",
                    value: fds.len() as u64,
                    why: "is not what a reply of this kind carries",
                },
            });
        }
        Ok((reply, fds))
    }

    /// As [`call`](Self::call), passing file descriptors with the request.
    pub fn call_with_fds(
        &mut self,
        req: Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Reply, ClientError> {
        let kind = req.kind();
        let id = match self.send(&req, fds) {
            Ok(id) => id,
            Err(e) => {
                // The daemon may have refused the connection (e.g. at its connection limit)
                // and closed it before the request went out: its reason is still readable.
                if let Ok((0, reply)) = self.recv(kind) {
                    if reply.result < 0 {
                        return Err(ClientError::Closed(reply.message));
                    }
                }
                return Err(e);
            }
        };
        let (got, reply) = self.recv(kind)?;
        if got != id {
            // The daemon answers in order; a reply with id 0 is a refusal before any request.
            if got == 0 && reply.result < 0 {
                return Err(ClientError::Closed(reply.message));
            }
            return Err(wrong_id(kind, got));
        }
        check(kind, reply)
    }

    /// Sends every request before reading any reply (they are in flight together), then
    /// returns the replies in order. Failure replies are returned as they are.
    pub fn call_many(&mut self, reqs: &[Request]) -> Result<Vec<Reply>, ClientError> {
        let mut ids = Vec::with_capacity(reqs.len());
        let mut bytes = Vec::new();
        for r in reqs {
            ids.push(self.next_id);
            bytes.extend_from_slice(&encode_request(self.next_id, r));
            self.next_id += 1;
        }
        self.stream.write_all(&bytes).map_err(|e| {
            self.broken(socket_err("cannot send the requests", self.options.timeout)(e))
        })?;
        let mut out = Vec::with_capacity(reqs.len());
        for (r, id) in reqs.iter().zip(ids) {
            let (got, reply) = self.recv(r.kind())?;
            if got != id {
                return Err(wrong_id(r.kind(), got));
            }
            out.push(reply);
        }
        Ok(out)
    }

    /// Sends raw bytes on the connection, for tests of the daemon's robustness (feature
    /// `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(io_err("cannot send raw bytes"))
    }

    /// Reads the next reply frame, whatever its id, for tests of the daemon's robustness
    /// (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn recv_raw(&mut self) -> Result<(u64, Reply), ClientError> {
        self.recv(Kind::Ping)
    }

    /// The underlying socket, for tests that send descriptors by hand (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }

    /// Echo: returns the bytes sent.
    pub fn ping(&mut self, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(self.call(Request::Ping(data.to_vec()))?.payload)
    }
}

/// Connects to `socket`, waiting at most `timeout` while the daemon's backlog is full (a
/// stopped daemon stops accepting; a blocking connect would then wait forever).
fn connect_within(socket: &Path, timeout: Option<Duration>) -> Result<UnixStream, ClientError> {
    let what = || format!("cannot connect to {}", socket.display());
    let Some(timeout) = timeout else {
        return UnixStream::connect(socket).map_err(io_err(what()));
    };
    let addr = SocketAddrUnix::new(socket).map_err(|e| io_err(what())(e.into()))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io_err(what())(e.into()))?;
    let deadline = Instant::now() + timeout;
    loop {
        // A Unix socket connects at once or fails with EAGAIN while the backlog is full.
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::AGAIN) => {
                return Err(ClientError::TimedOut {
                    what: "cannot connect",
                    after: timeout,
                })
            }
            Err(e) => return Err(io_err(what())(e.into())),
        }
    }
    let stream = UnixStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(io_err("cannot make the connection blocking"))?;
    Ok(stream)
}

/// Whether a daemon answers on `socket` (a connect, without a handshake).
pub fn daemon_running(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}
