//! `vsva-client`: the client library for `vsvad`, for VMMs, device emulators and tools.
//!
//! A [`Client`] is one connection to the daemon. [`Client::connect`] does the handshake;
//! after it, every request of the protocol has a typed method. All connections of one
//! process share the process's PASID context in the daemon, so a VMM may open one connection
//! per thread and they see the same PASIDs and quota.
//!
//! * Containers: [`Client::open_container`], [`Client::attach_group`],
//!   [`Client::nesting_container`] (open + attach + `VFIO_SET_IOMMU(NESTING)`), and the raw
//!   [`Client::ioctl`], which carries uAPI bytes unchanged. Typed wrappers build those bytes
//!   with `vsva-uapi`: [`Client::pasid_alloc`], [`Client::pasid_free`], [`Client::bind`],
//!   [`Client::unbind`], [`Client::invalidate`], [`Client::map_dma`], [`Client::unmap_dma`],
//!   [`Client::nesting_info`].
//! * Guest memory: [`GuestMemory::new`] makes a sealed memfd mapped in this process;
//!   [`Client::register_memory`] passes it to the daemon with `SCM_RIGHTS`, so the IOMMU
//!   walks page tables the client writes.
//! * Devices: [`Client::dma_read`], [`Client::dma_write`] issue DMA through the IOMMU from a
//!   device the process has attached.
//! * Admin and inspection: [`Client::status`], [`Client::sets`], [`Client::set_quota`],
//!   [`Client::force_release`], [`Client::faults`].
//! * Pipelining: [`Client::call_many`] sends several requests before reading any reply.
//! * Restarts: [`Client::reconnect`] presents the resume token from the first handshake, so
//!   after a daemon restart the process gets its PASIDs back ([`Client::hello`] tells which);
//!   containers do not survive a restart and are opened again.
//!
//! ```no_run
//! use vsva_client::Client;
//!
//! let mut client = Client::connect_default("my-vmm")?;
//! let c = client.nesting_container(1)?;
//! let pasid = client.pasid_alloc(c, 1, u32::MAX)?;
//! client.pasid_free(c, pasid, pasid)?;
//! # Ok::<(), vsva_client::ClientError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
mod memory;
pub mod pgtable;

use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vsva_proto::{
    encode_request, DeviceConfig, DeviceDma, FaultRecord, FaultsReply, FrameDecoder, Hello,
    HelloReply, Kind, ProtoError, Reply, Request, ResumeToken, SetsReply, StatusReply,
    CONFIG_WRITE, DEFAULT_MAX_BODY, DMA_EXEC, DMA_PASID, DMA_PRIV, DMA_WRITE, HARD_MAX_BODY,
    HELLO_ADMIN, HELLO_RESUMED, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use vsva_uapi::vfio::{
    DmaMap, DmaUnmap, Type1Info, VFIO_CHECK_EXTENSION, VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_WRITE, VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_NESTING_OP,
    VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU, VFIO_TYPE1_NESTING_IOMMU,
};
use vsva_uapi::{
    decode_nesting_info, BindRequest, CacheInvalidateRequest, NestingCapability, NestingOp,
    PasidRequestOp,
};

pub use memory::GuestMemory;
pub use vsva_proto::{
    DeviceInfo, Errno, FaultsReply as Faults, HelloReply as HelloInfo, Identity, SetEntry,
    SetState, StatusReply as Status,
};

/// A container handle, valid on every connection of the process that opened it.
pub type ContainerHandle = u32;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The daemon answered with an error.
    #[error("{}: {message}", errno.name())]
    Daemon {
        /// The request kind.
        kind: Kind,
        /// The errno.
        errno: Errno,
        /// The daemon's explanation, naming the field and value.
        message: String,
    },
    /// A DMA faulted in the IOMMU.
    #[error("DMA fault: {} ({:#04x}) at {:#x}", .0.description, .0.reason, .0.addr)]
    DmaFault(FaultRecord),
    /// The daemon sent something this library cannot decode.
    #[error("bad reply to {kind:?}: {error}")]
    Protocol {
        /// The request kind.
        kind: Kind,
        /// What is wrong.
        error: ProtoError,
    },
    /// The daemon closed the connection.
    #[error("the daemon closed the connection{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    Closed(String),
}

impl ClientError {
    /// The errno, when the daemon refused the request (`EFAULT` for a DMA fault).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ClientError::Daemon { errno, .. } => Some(*errno),
            ClientError::DmaFault(_) => Some(Errno::EFAULT),
            _ => None,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// A name for this client, shown by `sets`.
    pub name: String,
    /// A resume token from an earlier handshake (after a daemon restart).
    pub resume: ResumeToken,
    /// How long to wait for a reply before giving up (None: forever).
    pub timeout: Option<Duration>,
}

impl Options {
    /// Options for `socket` with the given client name.
    pub fn new(socket: impl Into<PathBuf>, name: impl Into<String>) -> Options {
        Options {
            socket: socket.into(),
            name: name.into(),
            resume: ResumeToken::default(),
            timeout: Some(Duration::from_secs(60)),
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
    next_id: u64,
    hello: HelloReply,
    options: Options,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.options.socket)
            .field("pid", &self.hello.identity.pid)
            .finish_non_exhaustive()
    }
}

/// A DMA direction and privilege for [`Client::dma`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DmaAccess {
    /// Write (otherwise read).
    pub write: bool,
    /// Instruction fetch.
    pub execute: bool,
    /// Supervisor request.
    pub privileged: bool,
}

impl Client {
    /// Connects to the default socket and does the handshake.
    pub fn connect_default(name: &str) -> Result<Client, ClientError> {
        Client::connect(Options::new(default_socket(), name))
    }

    /// Connects and does the handshake.
    pub fn connect(options: Options) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(&options.socket).map_err(io_err(format!(
            "cannot connect to {}",
            options.socket.display()
        )))?;
        stream
            .set_read_timeout(options.timeout)
            .map_err(io_err("cannot set the read timeout"))?;
        let mut client = Client {
            stream,
            dec: FrameDecoder::new(HARD_MAX_BODY),
            next_id: 1,
            hello: HelloReply {
                version: 0,
                flags: 0,
                identity: Identity::default(),
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

    fn send(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = encode_request(id, req);
        if fds.is_empty() {
            self.stream
                .write_all(&frame)
                .map_err(io_err("cannot send the request"))?;
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
        .map_err(|e| ClientError::Io {
            what: "cannot send the request with its file descriptors".into(),
            source: e.into(),
        })?;
        self.stream
            .write_all(&frame[sent..])
            .map_err(io_err("cannot send the request"))?;
        Ok(id)
    }

    fn recv(&mut self, kind: Kind) -> Result<(u64, Reply), ClientError> {
        loop {
            match self.dec.next_frame() {
                Ok(Some(frame)) => {
                    let reply = Reply::decode(&frame.body)
                        .map_err(|error| ClientError::Protocol { kind, error })?;
                    return Ok((frame.header.id, reply));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::Protocol {
                        kind,
                        error: e.error,
                    })
                }
            }
            let buf = self.dec.spare(16 * 1024);
            let n = self
                .stream
                .read(buf)
                .map_err(io_err("cannot read the reply"))?;
            if n == 0 {
                return Err(ClientError::Closed(String::new()));
            }
            self.dec.commit(n);
        }
    }

    /// Sends one request and returns its reply; a failure reply becomes
    /// [`ClientError::Daemon`].
    pub fn call(&mut self, req: Request) -> Result<Reply, ClientError> {
        self.call_with_fds(req, &[])
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
            return Err(ClientError::Protocol {
                kind,
                error: ProtoError::BadValue {
                    message: "reply",
                    field: "id",
                    value: got,
                    why: "does not match the request",
                },
            });
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
        self.stream
            .write_all(&bytes)
            .map_err(io_err("cannot send the requests"))?;
        let mut out = Vec::with_capacity(reqs.len());
        for (r, id) in reqs.iter().zip(ids) {
            let (got, reply) = self.recv(r.kind())?;
            if got != id {
                return Err(ClientError::Protocol {
                    kind: r.kind(),
                    error: ProtoError::BadValue {
                        message: "reply",
                        field: "id",
                        value: got,
                        why: "does not match the request",
                    },
                });
            }
            out.push(reply);
        }
        Ok(out)
    }

    /// Sends raw bytes on the connection (for tests of the daemon's robustness).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(io_err("cannot send raw bytes"))
    }

    /// Reads the next reply frame, whatever its id (for tests of the daemon's robustness).
    pub fn recv_raw(&mut self) -> Result<(u64, Reply), ClientError> {
        self.recv(Kind::Ping)
    }

    /// The underlying socket (for tests that need to send descriptors by hand).
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }

    /// Echo: returns the bytes sent.
    pub fn ping(&mut self, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(self.call(Request::Ping(data.to_vec()))?.payload)
    }

    // ---------------------------------------------------------------- containers

    /// Opens a container; returns its handle.
    pub fn open_container(&mut self) -> Result<ContainerHandle, ClientError> {
        Ok(self.call(Request::OpenContainer)?.result as u32)
    }

    /// Closes a container.
    pub fn close_container(&mut self, handle: ContainerHandle) -> Result<(), ClientError> {
        self.call(Request::CloseContainer { handle }).map(drop)
    }

    /// Attaches IOMMU group `group` to a container (`VFIO_GROUP_SET_CONTAINER`).
    pub fn attach_group(&mut self, handle: ContainerHandle, group: u32) -> Result<(), ClientError> {
        self.call(Request::AttachGroup { handle, group }).map(drop)
    }

    /// Detaches IOMMU group `group` (`VFIO_GROUP_UNSET_CONTAINER`).
    pub fn detach_group(&mut self, handle: ContainerHandle, group: u32) -> Result<(), ClientError> {
        self.call(Request::DetachGroup { handle, group }).map(drop)
    }

    /// Runs a container ioctl with the uAPI argument bytes `arg`; bytes the daemon writes back
    /// (`GET_INFO`, `UNMAP_DMA`) are copied into `arg`. Returns the ioctl's result.
    pub fn ioctl(
        &mut self,
        handle: ContainerHandle,
        cmd: u32,
        arg: &mut [u8],
    ) -> Result<u64, ClientError> {
        let reply = self.call(Request::Ioctl {
            handle,
            cmd,
            arg: arg.to_vec(),
        })?;
        if reply.payload.len() == arg.len() {
            arg.copy_from_slice(&reply.payload);
        }
        Ok(reply.result as u64)
    }

    /// Opens a container, attaches `group` and makes it a nesting container
    /// (`VFIO_SET_IOMMU(VFIO_TYPE1_NESTING_IOMMU)`), ready for PASID requests.
    pub fn nesting_container(&mut self, group: u32) -> Result<ContainerHandle, ClientError> {
        let c = self.open_container()?;
        let r = self.attach_group(c, group).and_then(|()| {
            self.ioctl(
                c,
                VFIO_SET_IOMMU,
                &mut u64::from(VFIO_TYPE1_NESTING_IOMMU).to_le_bytes(),
            )
        });
        if let Err(e) = r {
            let _ = self.close_container(c);
            return Err(e);
        }
        Ok(c)
    }

    /// Opens a nesting container on the first of `groups` that is free.
    pub fn nesting_container_any(
        &mut self,
        groups: impl IntoIterator<Item = u32>,
    ) -> Result<(ContainerHandle, u32), ClientError> {
        let mut last = None;
        for g in groups {
            match self.nesting_container(g) {
                Ok(c) => return Ok((c, g)),
                Err(
                    e @ ClientError::Daemon {
                        errno: Errno::EBUSY,
                        ..
                    },
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Daemon {
            kind: Kind::AttachGroup,
            errno: Errno::ENODEV,
            message: "no group to try".into(),
        }))
    }

    /// `VFIO_CHECK_EXTENSION`.
    pub fn check_extension(
        &mut self,
        handle: ContainerHandle,
        ext: u32,
    ) -> Result<bool, ClientError> {
        Ok(self.ioctl(
            handle,
            VFIO_CHECK_EXTENSION,
            &mut u64::from(ext).to_le_bytes(),
        )? != 0)
    }

    /// `VFIO_IOMMU_PASID_REQUEST` ALLOC: the lowest free PASID in `[min, max]` the quota
    /// allows.
    pub fn pasid_alloc(
        &mut self,
        handle: ContainerHandle,
        min: u32,
        max: u32,
    ) -> Result<u32, ClientError> {
        let mut arg = PasidRequestOp::Alloc { min, max }.to_bytes();
        Ok(self.ioctl(handle, VFIO_IOMMU_PASID_REQUEST, &mut arg)? as u32)
    }

    /// `VFIO_IOMMU_PASID_REQUEST` FREE of this process's PASIDs in `[min, max]`.
    pub fn pasid_free(
        &mut self,
        handle: ContainerHandle,
        min: u32,
        max: u32,
    ) -> Result<(), ClientError> {
        let mut arg = PasidRequestOp::Free { min, max }.to_bytes();
        self.ioctl(handle, VFIO_IOMMU_PASID_REQUEST, &mut arg)
            .map(drop)
    }

    /// `VFIO_IOMMU_NESTING_OP` BIND_PGTBL.
    pub fn bind(&mut self, handle: ContainerHandle, req: &BindRequest) -> Result<(), ClientError> {
        let mut arg = NestingOp::Bind(*req).to_bytes();
        self.ioctl(handle, VFIO_IOMMU_NESTING_OP, &mut arg)
            .map(drop)
    }

    /// `VFIO_IOMMU_NESTING_OP` UNBIND_PGTBL of `hpasid`.
    pub fn unbind(
        &mut self,
        handle: ContainerHandle,
        req: &BindRequest,
    ) -> Result<(), ClientError> {
        let mut arg = NestingOp::Unbind(*req).to_bytes();
        self.ioctl(handle, VFIO_IOMMU_NESTING_OP, &mut arg)
            .map(drop)
    }

    /// `VFIO_IOMMU_NESTING_OP` CACHE_INVLD.
    pub fn invalidate(
        &mut self,
        handle: ContainerHandle,
        req: &CacheInvalidateRequest,
    ) -> Result<(), ClientError> {
        let mut arg = NestingOp::Invalidate(*req).to_bytes();
        self.ioctl(handle, VFIO_IOMMU_NESTING_OP, &mut arg)
            .map(drop)
    }

    /// `VFIO_IOMMU_MAP_DMA`: maps `[iova, iova + size)` of the container's stage 2 to this
    /// process's registered memory at `vaddr` (an address inside a
    /// [`register_memory`](Self::register_memory) region).
    pub fn map_dma(
        &mut self,
        handle: ContainerHandle,
        vaddr: u64,
        iova: u64,
        size: u64,
        write: bool,
    ) -> Result<(), ClientError> {
        let map = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: VFIO_DMA_MAP_FLAG_READ | if write { VFIO_DMA_MAP_FLAG_WRITE } else { 0 },
            vaddr,
            iova,
            size,
        };
        let mut arg = zerocopy_bytes(&[
            &map.argsz.to_le_bytes()[..],
            &map.flags.to_le_bytes(),
            &map.vaddr.to_le_bytes(),
            &map.iova.to_le_bytes(),
            &map.size.to_le_bytes(),
        ]);
        self.ioctl(handle, VFIO_IOMMU_MAP_DMA, &mut arg).map(drop)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`; returns the bytes unmapped.
    pub fn unmap_dma(
        &mut self,
        handle: ContainerHandle,
        iova: u64,
        size: u64,
    ) -> Result<u64, ClientError> {
        let unmap_len = size_of::<DmaUnmap>();
        let mut arg = zerocopy_bytes(&[
            &(unmap_len as u32).to_le_bytes()[..],
            &0u32.to_le_bytes(),
            &iova.to_le_bytes(),
            &size.to_le_bytes(),
        ]);
        self.ioctl(handle, VFIO_IOMMU_UNMAP_DMA, &mut arg)?;
        let mut s = [0u8; 8];
        s.copy_from_slice(&arg[16..24]);
        Ok(u64::from_le_bytes(s))
    }

    /// `VFIO_IOMMU_GET_INFO`: the nesting capability of a nesting container (what a vIOMMU
    /// reports to its guest), if the chain has one.
    pub fn nesting_info(
        &mut self,
        handle: ContainerHandle,
    ) -> Result<Option<NestingCapability>, ClientError> {
        let mut arg = vec![0u8; 256];
        arg[..4].copy_from_slice(&256u32.to_le_bytes());
        self.ioctl(handle, VFIO_IOMMU_GET_INFO, &mut arg)?;
        let info_len = size_of::<Type1Info>();
        let cap_offset = u32::from_le_bytes([arg[16], arg[17], arg[18], arg[19]]) as usize;
        let mut off = cap_offset;
        while off >= info_len && off + 8 <= arg.len() {
            let id = u16::from_le_bytes([arg[off], arg[off + 1]]);
            let next = u32::from_le_bytes([arg[off + 4], arg[off + 5], arg[off + 6], arg[off + 7]])
                as usize;
            if id == vsva_uapi::vfio::VFIO_IOMMU_TYPE1_INFO_CAP_NESTING {
                return decode_nesting_info(&arg[off..])
                    .map(|(_, cap)| Some(cap))
                    .map_err(|e| ClientError::Daemon {
                        kind: Kind::Ioctl,
                        errno: e.errno(),
                        message: e.to_string(),
                    });
            }
            if next <= off {
                break;
            }
            off = next;
        }
        Ok(None)
    }

    // ---------------------------------------------------------------- memory and DMA

    /// Registers guest memory: `fd` (a memfd sealed with `F_SEAL_SHRINK`, see
    /// [`GuestMemory`]) from `offset`, `size` bytes, named `addr` by this process in MAP_DMA.
    /// Returns the region id.
    pub fn register_memory(
        &mut self,
        fd: BorrowedFd<'_>,
        addr: u64,
        size: u64,
        offset: u64,
    ) -> Result<u32, ClientError> {
        let reply = self.call_with_fds(
            Request::MemRegister {
                addr,
                size,
                offset,
                flags: 0,
            },
            &[fd],
        )?;
        Ok(reply.result as u32)
    }

    /// Registers a [`GuestMemory`] at its guest-physical base and maps it 1:1 (iova = gpa)
    /// into the stage 2 of container `handle`: after this, the IOMMU reaches every guest page.
    pub fn attach_guest_memory(
        &mut self,
        handle: ContainerHandle,
        mem: &GuestMemory,
    ) -> Result<u32, ClientError> {
        let region = self.register_memory(mem.fd(), mem.base(), mem.size(), 0)?;
        self.map_dma(handle, mem.base(), mem.base(), mem.size(), true)?;
        Ok(region)
    }

    /// Unregisters a memory region (MAP_DMA can no longer name it).
    pub fn unregister_memory(&mut self, region: u32) -> Result<(), ClientError> {
        self.call(Request::MemUnregister { region }).map(drop)
    }

    /// A device DMA through the IOMMU: `len` bytes read at `addr` (or `data` written), from
    /// requester `source_id`, with `pasid` if given. A translation fault is
    /// [`ClientError::DmaFault`] with the fault record.
    pub fn dma(
        &mut self,
        source_id: u16,
        pasid: Option<u32>,
        addr: u64,
        access: DmaAccess,
        len: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let mut flags = 0;
        if pasid.is_some() {
            flags |= DMA_PASID;
        }
        if access.write {
            flags |= DMA_WRITE;
        }
        if access.execute {
            flags |= DMA_EXEC;
        }
        if access.privileged {
            flags |= DMA_PRIV;
        }
        let req = Request::DeviceDma(DeviceDma {
            source_id,
            flags,
            pasid: pasid.unwrap_or(0),
            addr,
            len,
            data: if access.write {
                data.to_vec()
            } else {
                Vec::new()
            },
        });
        let id = self.send(&req, &[])?;
        let (got, reply) = self.recv(Kind::DeviceDma)?;
        if got != id {
            return Err(ClientError::Closed("reply out of order".into()));
        }
        if reply.result == -i64::from(Errno::EFAULT.raw()) && !reply.payload.is_empty() {
            if let Ok(f) = FaultRecord::decode(&reply.payload) {
                return Err(ClientError::DmaFault(f));
            }
        }
        Ok(check(Kind::DeviceDma, reply)?.payload)
    }

    /// Reads `width` (1, 2 or 4) bytes of device `source_id`'s configuration space at
    /// `offset`.
    pub fn config_read(
        &mut self,
        source_id: u16,
        offset: u32,
        width: u8,
    ) -> Result<u32, ClientError> {
        let r = self.call(Request::DeviceConfig(DeviceConfig {
            source_id,
            flags: 0,
            width,
            offset,
            value: 0,
        }))?;
        Ok(r.result as u32)
    }

    /// Writes `width` (1, 2 or 4) bytes of device `source_id`'s configuration space.
    pub fn config_write(
        &mut self,
        source_id: u16,
        offset: u32,
        width: u8,
        value: u32,
    ) -> Result<(), ClientError> {
        self.call(Request::DeviceConfig(DeviceConfig {
            source_id,
            flags: CONFIG_WRITE,
            width,
            offset,
            value,
        }))
        .map(drop)
    }

    /// Enables the device's PASID capability as a guest driver does (PASID Enable, plus
    /// Execute and Privileged Mode Enable where the capability offers them); returns the
    /// control word written. `ENODEV` if the device has no PASID capability.
    pub fn enable_pasid(&mut self, source_id: u16) -> Result<u16, ClientError> {
        const PASID_CAP: u32 = 0x100;
        let header = self.config_read(source_id, PASID_CAP, 4)?;
        if header & 0xffff != 0x1b {
            return Err(ClientError::Daemon {
                kind: Kind::DeviceConfig,
                errno: Errno::ENODEV,
                message: format!("device {source_id:#06x} has no PASID capability at {PASID_CAP:#x} (header {header:#010x})"),
            });
        }
        let cap = self.config_read(source_id, PASID_CAP + 4, 2)? as u16;
        let ctrl = 1 | (cap & 0b110);
        self.config_write(source_id, PASID_CAP + 6, 2, ctrl.into())?;
        Ok(ctrl)
    }

    /// A user read of `len` bytes at `addr`.
    pub fn dma_read(
        &mut self,
        source_id: u16,
        pasid: Option<u32>,
        addr: u64,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        self.dma(source_id, pasid, addr, DmaAccess::default(), len, &[])
    }

    /// A user write of `data` at `addr`.
    pub fn dma_write(
        &mut self,
        source_id: u16,
        pasid: Option<u32>,
        addr: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let len = u32::try_from(data.len()).map_err(|_| ClientError::Daemon {
            kind: Kind::DeviceDma,
            errno: Errno::E2BIG,
            message: format!("data of {} bytes is too long for one DMA", data.len()),
        })?;
        self.dma(
            source_id,
            pasid,
            addr,
            DmaAccess {
                write: true,
                ..DmaAccess::default()
            },
            len,
            data,
        )
        .map(drop)
    }

    // ---------------------------------------------------------------- admin

    /// Daemon status.
    pub fn status(&mut self) -> Result<StatusReply, ClientError> {
        let r = self.call(Request::Status)?;
        StatusReply::decode(&r.payload).map_err(|error| ClientError::Protocol {
            kind: Kind::Status,
            error,
        })
    }

    /// Per-process sets: every process's for an admin, this process's otherwise.
    pub fn sets(&mut self) -> Result<Vec<SetEntry>, ClientError> {
        let r = self.call(Request::Sets)?;
        SetsReply::decode(&r.payload)
            .map(|s| s.sets)
            .map_err(|error| ClientError::Protocol {
                kind: Kind::Sets,
                error,
            })
    }

    /// Changes process `pid`'s quota (admin).
    pub fn set_quota(&mut self, pid: u32, quota: u32) -> Result<(), ClientError> {
        self.call(Request::SetQuota { pid, quota }).map(drop)
    }

    /// Releases everything process `pid` holds and closes its connections (admin); returns
    /// how many PASIDs were freed.
    pub fn force_release(&mut self, pid: u32) -> Result<u32, ClientError> {
        Ok(self.call(Request::ForceRelease { pid })?.result as u32)
    }

    /// The most recent DMA faults this process may see (all of them for an admin).
    pub fn faults(&mut self, max: u32) -> Result<FaultsReply, ClientError> {
        let r = self.call(Request::Faults { max })?;
        FaultsReply::decode(&r.payload).map_err(|error| ClientError::Protocol {
            kind: Kind::Faults,
            error,
        })
    }
}

fn zerocopy_bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn check(kind: Kind, reply: Reply) -> Result<Reply, ClientError> {
    match reply.errno() {
        None => Ok(reply),
        Some(errno) => Err(ClientError::Daemon {
            kind,
            errno,
            message: reply.message,
        }),
    }
}

/// Whether a daemon answers on `socket` (a connect, without a handshake).
pub fn daemon_running(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}
