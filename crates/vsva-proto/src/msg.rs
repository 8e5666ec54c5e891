//! Typed requests and replies, and their body encodings.
//!
//! Every body is a sequence of little-endian fields with no padding and no implicit
//! alignment; `u32`-prefixed byte strings carry variable data. `docs/protocol.md` lists every
//! body byte by byte; the `encode`/`decode` pairs here are its reference implementation.

use crate::error::ProtoError;
use crate::frame::{FrameHeader, MAX_HELLO_BODY};
use crate::wire::{Reader, Writer};

/// The handshake magic: the bytes `V S V A` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VSVA");
/// The protocol version this crate speaks (the only one so far).
pub const PROTOCOL_VERSION: u16 = 1;
/// The lowest protocol version this crate speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Longest string field (client name, messages, command lines), in bytes.
pub const MAX_STRING: u32 = 4096;
/// Most PASIDs listed in one reply (the whole 20-bit space).
pub const MAX_PASID_LIST: u32 = 1 << 20;
/// Most entries in a sets, faults or devices list.
pub const MAX_LIST: u32 = 65_536;
/// Length of a resume token.
pub const RESUME_TOKEN_LEN: usize = 16;

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $label:literal;)+) => {
        /// A message kind: the `kind` field of a frame header. A reply has the kind of its
        /// request and the `REPLY` flag.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Kind {
            $($(#[$doc])* $name = $value,)+
        }

        impl Kind {
            /// Every kind, in numeric order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)+];

            /// The kind with this number, if this version defines it.
            pub const fn from_u16(raw: u16) -> Option<Kind> {
                match raw {
                    $($value => Some(Kind::$name),)+
                    _ => None,
                }
            }

            /// A short lower-case label for logs and metrics (`"ioctl"`).
            pub const fn label(self) -> &'static str {
                match self {
                    $(Kind::$name => $label,)+
                }
            }
        }
    };
}

kinds! {
    /// Handshake: first frame of every connection.
    Hello = 0x0001, "hello";
    /// Echo: the reply carries the request's bytes back.
    Ping = 0x0002, "ping";
    /// Open a VFIO container; the result is its handle.
    OpenContainer = 0x0101, "open_container";
    /// Close a container handle.
    CloseContainer = 0x0102, "close_container";
    /// Attach an IOMMU group to a container (`VFIO_GROUP_SET_CONTAINER`).
    AttachGroup = 0x0103, "attach_group";
    /// Detach an IOMMU group from its container (`VFIO_GROUP_UNSET_CONTAINER`).
    DetachGroup = 0x0104, "detach_group";
    /// A container ioctl: command number and the uAPI argument bytes, unchanged.
    Ioctl = 0x0105, "ioctl";
    /// Register guest memory, shared by a file descriptor.
    MemRegister = 0x0201, "mem_register";
    /// Unregister guest memory.
    MemUnregister = 0x0202, "mem_unregister";
    /// A device DMA through the IOMMU.
    DeviceDma = 0x0301, "device_dma";
    /// A read or write of a device's PCI configuration space (as vfio-pci virtualizes it).
    DeviceConfig = 0x0302, "device_config";
    /// Daemon status: capacity, usage, uptime, devices.
    Status = 0x0401, "status";
    /// Per-process PASID sets (all of them for an admin, one's own otherwise).
    Sets = 0x0402, "sets";
    /// Change a process's quota (admin).
    SetQuota = 0x0403, "set_quota";
    /// Release everything a process holds (admin).
    ForceRelease = 0x0404, "force_release";
    /// Recent DMA faults (all for an admin, those on one's own PASIDs otherwise).
    Faults = 0x0405, "faults";
}

/// A resume token: 16 random bytes the daemon gives at handshake and persists; presenting it
/// after a daemon restart gets the process its held PASIDs back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResumeToken(pub [u8; RESUME_TOKEN_LEN]);

impl ResumeToken {
    /// Whether this is the all-zero "no token" value.
    pub fn is_none(&self) -> bool {
        self.0 == [0; RESUME_TOKEN_LEN]
    }

    /// The token as 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hex digits; `None` if `s` is anything else.
    pub fn from_hex(s: &str) -> Option<ResumeToken> {
        if s.len() != 2 * RESUME_TOKEN_LEN || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; RESUME_TOKEN_LEN];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ResumeToken(out))
    }
}

impl std::fmt::Debug for ResumeToken {
    /// Shows only whether a token is present: the value is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_none() {
            f.write_str("ResumeToken(none)")
        } else {
            f.write_str("ResumeToken(..)")
        }
    }
}

/// The handshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
    /// The token from an earlier handshake, to get held state back; all zero for none.
    pub resume: ResumeToken,
    /// A free-form name of the client (logged, shown by `sets`).
    pub client: String,
}

/// Device DMA flag: `pasid` is meaningful (a request with PASID).
pub const DMA_PASID: u16 = 1 << 0;
/// Device DMA flag: a write (otherwise a read).
pub const DMA_WRITE: u16 = 1 << 1;
/// Device DMA flag: an execute (instruction fetch) read.
pub const DMA_EXEC: u16 = 1 << 2;
/// Device DMA flag: a privileged (supervisor) request.
pub const DMA_PRIV: u16 = 1 << 3;
/// Every device DMA flag this version defines.
pub const DMA_FLAGS: u16 = DMA_PASID | DMA_WRITE | DMA_EXEC | DMA_PRIV;

/// A device DMA request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDma {
    /// Requester id (`bus << 8 | devfn`).
    pub source_id: u16,
    /// `DMA_*` flags.
    pub flags: u16,
    /// The PASID, when `flags` has [`DMA_PASID`].
    pub pasid: u32,
    /// Input (I/O virtual) address.
    pub addr: u64,
    /// Bytes to transfer.
    pub len: u32,
    /// For a write, exactly `len` bytes; for a read, empty.
    pub data: Vec<u8>,
}

/// Device config flag: a write (otherwise a read).
pub const CONFIG_WRITE: u8 = 1 << 0;

/// A PCI configuration-space access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Requester id of the function.
    pub source_id: u16,
    /// [`CONFIG_WRITE`] or 0.
    pub flags: u8,
    /// Access width in bytes: 1, 2 or 4.
    pub width: u8,
    /// Offset in the 4 KiB configuration space.
    pub offset: u32,
    /// The value to write (ignored for a read).
    pub value: u32,
}

/// A request, as the daemon decodes it from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Handshake.
    Hello(Hello),
    /// Echo these bytes.
    Ping(Vec<u8>),
    /// Open a container.
    OpenContainer,
    /// Close a container.
    CloseContainer {
        /// The container's handle.
        handle: u32,
    },
    /// Attach IOMMU group `group` to a container.
    AttachGroup {
        /// The container's handle.
        handle: u32,
        /// The group number.
        group: u32,
    },
    /// Detach IOMMU group `group` from a container.
    DetachGroup {
        /// The container's handle.
        handle: u32,
        /// The group number.
        group: u32,
    },
    /// A container ioctl.
    Ioctl {
        /// The container's handle.
        handle: u32,
        /// The ioctl number (`VFIO_IOMMU_PASID_REQUEST`, ...).
        cmd: u32,
        /// The argument bytes, exactly as a caller would pass them to the kernel.
        arg: Vec<u8>,
    },
    /// Register guest memory (one file descriptor travels with the frame).
    MemRegister {
        /// The address this process names the memory by: the `vaddr` of a later
        /// `VFIO_IOMMU_MAP_DMA` must fall inside `[addr, addr + size)`. A VMM typically uses
        /// the guest-physical base, or where it has the memory mapped itself. 4 KiB aligned.
        addr: u64,
        /// Length in bytes (a non-zero multiple of 4 KiB).
        size: u64,
        /// Offset into the file where the memory starts (a multiple of 4 KiB).
        offset: u64,
        /// Reserved, 0.
        flags: u32,
    },
    /// Unregister guest memory.
    MemUnregister {
        /// The region id the registration returned.
        region: u32,
    },
    /// A device DMA.
    DeviceDma(DeviceDma),
    /// A configuration-space access.
    DeviceConfig(DeviceConfig),
    /// Daemon status.
    Status,
    /// PASID sets.
    Sets,
    /// Change the quota of process `pid` (admin).
    SetQuota {
        /// The process.
        pid: u32,
        /// Its new quota.
        quota: u32,
    },
    /// Release everything process `pid` holds (admin).
    ForceRelease {
        /// The process.
        pid: u32,
    },
    /// The most recent DMA faults, at most `max`.
    Faults {
        /// How many to return at most.
        max: u32,
    },
}

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Hello(_) => Kind::Hello,
            Request::Ping(_) => Kind::Ping,
            Request::OpenContainer => Kind::OpenContainer,
            Request::CloseContainer { .. } => Kind::CloseContainer,
            Request::AttachGroup { .. } => Kind::AttachGroup,
            Request::DetachGroup { .. } => Kind::DetachGroup,
            Request::Ioctl { .. } => Kind::Ioctl,
            Request::MemRegister { .. } => Kind::MemRegister,
            Request::MemUnregister { .. } => Kind::MemUnregister,
            Request::DeviceDma(_) => Kind::DeviceDma,
            Request::DeviceConfig(_) => Kind::DeviceConfig,
            Request::Status => Kind::Status,
            Request::Sets => Kind::Sets,
            Request::SetQuota { .. } => Kind::SetQuota,
            Request::ForceRelease { .. } => Kind::ForceRelease,
            Request::Faults { .. } => Kind::Faults,
        }
    }

    /// How many file descriptors must travel with the request.
    pub fn nfds(&self) -> u8 {
        match self {
            Request::MemRegister { .. } => 1,
            _ => 0,
        }
    }

    /// The request's body.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Hello(h) => {
                w.u32(MAGIC)
                    .u16(h.min_version)
                    .u16(h.max_version)
                    .raw(&h.resume.0)
                    .string(&h.client);
            }
            Request::Ping(data) => {
                w.raw(data);
            }
            Request::OpenContainer | Request::Status | Request::Sets => {}
            Request::CloseContainer { handle } => {
                w.u32(*handle);
            }
            Request::AttachGroup { handle, group } | Request::DetachGroup { handle, group } => {
                w.u32(*handle).u32(*group);
            }
            Request::Ioctl { handle, cmd, arg } => {
                w.u32(*handle).u32(*cmd).raw(arg);
            }
            Request::MemRegister {
                addr,
                size,
                offset,
                flags,
            } => {
                w.u64(*addr).u64(*size).u64(*offset).u32(*flags);
            }
            Request::MemUnregister { region } => {
                w.u32(*region);
            }
            Request::DeviceDma(d) => {
                w.u16(d.source_id)
                    .u16(d.flags)
                    .u32(d.pasid)
                    .u64(d.addr)
                    .u32(d.len)
                    .raw(&d.data);
            }
            Request::DeviceConfig(c) => {
                w.u16(c.source_id)
                    .u8(c.flags)
                    .u8(c.width)
                    .u32(c.offset)
                    .u32(c.value);
            }
            Request::SetQuota { pid, quota } => {
                w.u32(*pid).u32(*quota);
            }
            Request::ForceRelease { pid } => {
                w.u32(*pid);
            }
            Request::Faults { max } => {
                w.u32(*max);
            }
        }
        w.into_vec()
    }

    /// Decodes the body of a request of kind `kind`.
    ///
    /// Unknown kinds are [`ProtoError::UnknownKind`] (`ENOSYS`); short, long or otherwise
    /// malformed bodies name the field at fault (`EINVAL`). Never panics, and never
    /// allocates more than the body's length.
    pub fn decode(kind: u16, body: &[u8]) -> Result<Request, ProtoError> {
        let kind = Kind::from_u16(kind).ok_or(ProtoError::UnknownKind { kind })?;
        let mut r = Reader::new(body, kind.label());
        let req = match kind {
            Kind::Hello => {
                if body.len() > MAX_HELLO_BODY as usize {
                    return Err(ProtoError::TooLong {
                        message: "hello",
                        field: "body_len",
                        value: body.len() as u64,
                        max: MAX_HELLO_BODY.into(),
                    });
                }
                let magic = r.u32("magic")?;
                if magic != MAGIC {
                    return Err(ProtoError::BadMagic {
                        magic,
                        expected: MAGIC,
                    });
                }
                let min_version = r.u16("min_version")?;
                let max_version = r.u16("max_version")?;
                if min_version > max_version {
                    return Err(r.bad_value(
                        "min_version",
                        min_version.into(),
                        "must not be above max_version",
                    ));
                }
                let resume = ResumeToken(r.fixed("resume_token")?);
                let client = r.string("client", MAX_STRING)?;
                Request::Hello(Hello {
                    min_version,
                    max_version,
                    resume,
                    client,
                })
            }
            Kind::Ping => Request::Ping(r.rest().to_vec()),
            Kind::OpenContainer => Request::OpenContainer,
            Kind::Status => Request::Status,
            Kind::Sets => Request::Sets,
            Kind::CloseContainer => Request::CloseContainer {
                handle: r.u32("handle")?,
            },
            Kind::AttachGroup => Request::AttachGroup {
                handle: r.u32("handle")?,
                group: r.u32("group")?,
            },
            Kind::DetachGroup => Request::DetachGroup {
                handle: r.u32("handle")?,
                group: r.u32("group")?,
            },
            Kind::Ioctl => Request::Ioctl {
                handle: r.u32("handle")?,
                cmd: r.u32("cmd")?,
                arg: r.rest().to_vec(),
            },
            Kind::MemRegister => {
                let addr = r.u64("addr")?;
                let size = r.u64("size")?;
                let offset = r.u64("offset")?;
                let flags = r.u32("flags")?;
                if flags != 0 {
                    return Err(r.bad_value("flags", flags.into(), "no flags are defined"));
                }
                Request::MemRegister {
                    addr,
                    size,
                    offset,
                    flags,
                }
            }
            Kind::MemUnregister => Request::MemUnregister {
                region: r.u32("region")?,
            },
            Kind::DeviceDma => {
                let source_id = r.u16("source_id")?;
                let flags = r.u16("flags")?;
                if flags & !DMA_FLAGS != 0 {
                    return Err(r.bad_value(
                        "flags",
                        flags.into(),
                        "only PASID (0x1), WRITE (0x2), EXEC (0x4) and PRIV (0x8) are defined",
                    ));
                }
                if flags & DMA_WRITE != 0 && flags & DMA_EXEC != 0 {
                    return Err(r.bad_value(
                        "flags",
                        flags.into(),
                        "WRITE and EXEC exclude each other",
                    ));
                }
                let pasid = r.u32("pasid")?;
                let addr = r.u64("addr")?;
                let len = r.u32("len")?;
                let data = r.rest().to_vec();
                let expected = if flags & DMA_WRITE != 0 {
                    len as usize
                } else {
                    0
                };
                if data.len() != expected {
                    return Err(r.bad_value(
                        "data",
                        data.len() as u64,
                        "a write carries exactly len bytes, a read none",
                    ));
                }
                Request::DeviceDma(DeviceDma {
                    source_id,
                    flags,
                    pasid,
                    addr,
                    len,
                    data,
                })
            }
            Kind::DeviceConfig => {
                let source_id = r.u16("source_id")?;
                let flags = r.u8("flags")?;
                if flags & !CONFIG_WRITE != 0 {
                    return Err(r.bad_value("flags", flags.into(), "only WRITE (0x1) is defined"));
                }
                let width = r.u8("width")?;
                if !matches!(width, 1 | 2 | 4) {
                    return Err(r.bad_value("width", width.into(), "must be 1, 2 or 4"));
                }
                Request::DeviceConfig(DeviceConfig {
                    source_id,
                    flags,
                    width,
                    offset: r.u32("offset")?,
                    value: r.u32("value")?,
                })
            }
            Kind::SetQuota => Request::SetQuota {
                pid: r.u32("pid")?,
                quota: r.u32("quota")?,
            },
            Kind::ForceRelease => Request::ForceRelease { pid: r.u32("pid")? },
            Kind::Faults => Request::Faults { max: r.u32("max")? },
        };
        r.finish()?;
        Ok(req)
    }
}

/// A reply: the result (a non-negative value, or `-errno`), a message (empty on success
/// unless the daemon has something to say), and a kind-specific payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The result: `>= 0` on success (a handle, a PASID, a count), `-errno` on failure.
    pub result: i64,
    /// Why it failed, naming the field and value; may be empty on success.
    pub message: String,
    /// Kind-specific payload (see each `*Reply` type); empty on failure unless documented.
    pub payload: Vec<u8>,
}

impl Reply {
    /// A success with `result` and `payload`.
    pub fn ok(result: i64, payload: Vec<u8>) -> Reply {
        Reply {
            result,
            message: String::new(),
            payload,
        }
    }

    /// A failure with errno `errno` and a message.
    pub fn error(errno: vsva_uapi::Errno, message: impl Into<String>) -> Reply {
        Reply {
            result: errno.to_ioctl_return().into(),
            message: message.into(),
            payload: Vec::new(),
        }
    }

    /// The errno, if the reply is a failure. A negative result that is not a known errno is
    /// reported as `EIO`.
    pub fn errno(&self) -> Option<vsva_uapi::Errno> {
        if self.result >= 0 {
            return None;
        }
        let raw = self
            .result
            .checked_neg()
            .and_then(|v| i32::try_from(v).ok());
        Some(
            raw.and_then(vsva_uapi::Errno::from_raw)
                .unwrap_or(vsva_uapi::Errno::EIO),
        )
    }

    /// The reply's body.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.result).string(&self.message).raw(&self.payload);
        w.into_vec()
    }

    /// Decodes a reply body.
    pub fn decode(body: &[u8]) -> Result<Reply, ProtoError> {
        let mut r = Reader::new(body, "reply");
        let result = r.i64("result")?;
        let message = r.string("message", MAX_STRING)?;
        let payload = r.rest().to_vec();
        Ok(Reply {
            result,
            message,
            payload,
        })
    }

    /// The complete reply frame for the request with header `request`.
    pub fn encode_frame(&self, request: &FrameHeader) -> Vec<u8> {
        crate::frame::encode_frame(
            request.kind,
            crate::frame::FLAG_REPLY,
            0,
            request.id,
            &self.encode_body(),
        )
    }
}

/// Who a process is, as the daemon established it from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot).
    pub start_time: u64,
}

impl Identity {
    fn write(&self, w: &mut Writer) {
        w.u32(self.pid)
            .u32(self.uid)
            .u32(self.gid)
            .u64(self.start_time);
    }

    fn read(r: &mut Reader<'_>) -> Result<Identity, ProtoError> {
        Ok(Identity {
            pid: r.u32("pid")?,
            uid: r.u32("uid")?,
            gid: r.u32("gid")?,
            start_time: r.u64("start_time")?,
        })
    }
}

/// Hello reply flag: the process's held state was given back.
pub const HELLO_RESUMED: u16 = 1 << 0;
/// Hello reply flag: the caller may use the admin requests.
pub const HELLO_ADMIN: u16 = 1 << 1;

/// The payload of a successful hello reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    /// The version both sides now speak.
    pub version: u16,
    /// `HELLO_*` flags.
    pub flags: u16,
    /// Who the daemon thinks the caller is.
    pub identity: Identity,
    /// The token that gets this process's state back after a daemon restart.
    pub resume: ResumeToken,
    /// Changes every time the daemon starts: a client seeing a new value knows it restarted.
    pub instance: u64,
    /// Width of the host PASID space.
    pub pasid_bits: u8,
    /// The process's quota.
    pub quota: u32,
    /// Largest body the daemon accepts from now on.
    pub max_body: u32,
    /// Requests the daemon reads ahead on one connection before replying.
    pub max_in_flight: u32,
    /// PASIDs given back by a resume, ascending.
    pub restored: Vec<u32>,
    /// The daemon's name and version.
    pub server: String,
}

impl HelloReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(self.version).u16(self.flags);
        self.identity.write(&mut w);
        w.raw(&self.resume.0)
            .u64(self.instance)
            .u8(self.pasid_bits)
            .u32(self.quota)
            .u32(self.max_body)
            .u32(self.max_in_flight)
            .count(self.restored.len());
        for p in &self.restored {
            w.u32(*p);
        }
        w.string(&self.server);
        w.into_vec()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<HelloReply, ProtoError> {
        let mut r = Reader::new(payload, "hello reply");
        let version = r.u16("version")?;
        let flags = r.u16("flags")?;
        let identity = Identity::read(&mut r)?;
        let resume = ResumeToken(r.fixed("resume_token")?);
        let instance = r.u64("instance")?;
        let pasid_bits = r.u8("pasid_bits")?;
        let quota = r.u32("quota")?;
        let max_body = r.u32("max_body")?;
        let max_in_flight = r.u32("max_in_flight")?;
        let n = r.count("restored", MAX_PASID_LIST, 4)?;
        let mut restored = Vec::with_capacity(n);
        for _ in 0..n {
            restored.push(r.u32("restored")?);
        }
        let server = r.string("server", MAX_STRING)?;
        r.finish()?;
        Ok(HelloReply {
            version,
            flags,
            identity,
            resume,
            instance,
            pasid_bits,
            quota,
            max_body,
            max_in_flight,
            restored,
            server,
        })
    }
}

/// A device the daemon's machine has, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Requester id.
    pub source_id: u16,
    /// IOMMU group.
    pub group: u32,
    /// Max PASID width the device's PASID capability advertises (0 = no PASID).
    pub pasid_width: u8,
    /// A name (`"0000:00:03.0"`).
    pub name: String,
}

/// The payload of a successful status reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReply {
    /// The daemon's name and version.
    pub server: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Changes at every daemon start.
    pub instance: u64,
    /// Width of the PASID space.
    pub pasid_bits: u8,
    /// PASIDs that can be allocated at once (`2^bits - 1`).
    pub capacity: u32,
    /// PASIDs owned now.
    pub allocated: u64,
    /// PASIDs freed whose teardown has not finished.
    pub freeing: u64,
    /// Processes with a live context.
    pub processes: u32,
    /// PASIDs held for processes that have not reconnected since a restart.
    pub held: u32,
    /// Open connections.
    pub connections: u32,
    /// Quota a new process gets.
    pub default_quota: u32,
    /// Whether allocations are on disk before they are acknowledged.
    pub durable: bool,
    /// IOTLB hits so far.
    pub iotlb_hits: u64,
    /// IOTLB misses so far.
    pub iotlb_misses: u64,
    /// DMA faults so far.
    pub faults: u64,
    /// The machine's devices.
    pub devices: Vec<DeviceInfo>,
}

impl StatusReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.string(&self.server)
            .u64(self.uptime_ms)
            .u64(self.instance)
            .u8(self.pasid_bits)
            .u32(self.capacity)
            .u64(self.allocated)
            .u64(self.freeing)
            .u32(self.processes)
            .u32(self.held)
            .u32(self.connections)
            .u32(self.default_quota)
            .u8(self.durable.into())
            .u64(self.iotlb_hits)
            .u64(self.iotlb_misses)
            .u64(self.faults)
            .count(self.devices.len());
        for d in &self.devices {
            w.u16(d.source_id)
                .u32(d.group)
                .u8(d.pasid_width)
                .string(&d.name);
        }
        w.into_vec()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<StatusReply, ProtoError> {
        let mut r = Reader::new(payload, "status reply");
        let server = r.string("server", MAX_STRING)?;
        let uptime_ms = r.u64("uptime_ms")?;
        let instance = r.u64("instance")?;
        let pasid_bits = r.u8("pasid_bits")?;
        let capacity = r.u32("capacity")?;
        let allocated = r.u64("allocated")?;
        let freeing = r.u64("freeing")?;
        let processes = r.u32("processes")?;
        let held = r.u32("held")?;
        let connections = r.u32("connections")?;
        let default_quota = r.u32("default_quota")?;
        let durable = read_bool(&mut r, "durable")?;
        let iotlb_hits = r.u64("iotlb_hits")?;
        let iotlb_misses = r.u64("iotlb_misses")?;
        let faults = r.u64("faults")?;
        let n = r.count("devices", MAX_LIST, 11)?;
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            devices.push(DeviceInfo {
                source_id: r.u16("source_id")?,
                group: r.u32("group")?,
                pasid_width: r.u8("pasid_width")?,
                name: r.string("name", MAX_STRING)?,
            });
        }
        r.finish()?;
        Ok(StatusReply {
            server,
            uptime_ms,
            instance,
            pasid_bits,
            capacity,
            allocated,
            freeing,
            processes,
            held,
            connections,
            default_quota,
            durable,
            iotlb_hits,
            iotlb_misses,
            faults,
            devices,
        })
    }
}

fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, ProtoError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(r.bad_value(field, v.into(), "must be 0 or 1")),
    }
}

/// State of a process's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SetState {
    /// The process is connected.
    Live = 0,
    /// The daemon restarted and holds the process's PASIDs until it resumes or the grace
    /// period ends.
    Held = 1,
}

/// One process's set, as `sets` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetEntry {
    /// The process.
    pub identity: Identity,
    /// Live or held.
    pub state: SetState,
    /// Its open connections.
    pub connections: u32,
    /// Its quota.
    pub quota: u32,
    /// The PASIDs it owns, ascending.
    pub pasids: Vec<u32>,
    /// Its command line (from `/proc/<pid>/cmdline`), or the client name.
    pub command: String,
}

/// The payload of a successful sets reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetsReply {
    /// One entry per process, by pid.
    pub sets: Vec<SetEntry>,
}

impl SetsReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.count(self.sets.len());
        for s in &self.sets {
            s.identity.write(&mut w);
            w.u8(s.state as u8)
                .u32(s.connections)
                .u32(s.quota)
                .count(s.pasids.len());
            for p in &s.pasids {
                w.u32(*p);
            }
            w.string(&s.command);
        }
        w.into_vec()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<SetsReply, ProtoError> {
        let mut r = Reader::new(payload, "sets reply");
        let n = r.count("sets", MAX_LIST, 37)?;
        let mut sets = Vec::with_capacity(n);
        for _ in 0..n {
            let identity = Identity::read(&mut r)?;
            let state = match r.u8("state")? {
                0 => SetState::Live,
                1 => SetState::Held,
                v => return Err(r.bad_value("state", v.into(), "must be 0 (live) or 1 (held)")),
            };
            let connections = r.u32("connections")?;
            let quota = r.u32("quota")?;
            let np = r.count("pasids", MAX_PASID_LIST, 4)?;
            let mut pasids = Vec::with_capacity(np);
            for _ in 0..np {
                pasids.push(r.u32("pasids")?);
            }
            let command = r.string("command", MAX_STRING)?;
            sets.push(SetEntry {
                identity,
                state,
                connections,
                quota,
                pasids,
                command,
            });
        }
        r.finish()?;
        Ok(SetsReply { sets })
    }
}

/// One DMA fault record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// Requester id.
    pub source_id: u16,
    /// `DMA_*` flags of the faulting request (PASID, WRITE, EXEC, PRIV).
    pub flags: u16,
    /// The PASID, when `flags` has [`DMA_PASID`].
    pub pasid: u32,
    /// Input address.
    pub addr: u64,
    /// VT-d fault reason code.
    pub reason: u8,
    /// Stage: 0 context/PASID tables, 1 first level, 2 second level.
    pub stage: u8,
    /// Paging level of the failing entry, 0 if none.
    pub level: u8,
    /// The reason in words.
    pub description: String,
}

impl FaultRecord {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id)
            .u16(self.flags)
            .u32(self.pasid)
            .u64(self.addr)
            .u8(self.reason)
            .u8(self.stage)
            .u8(self.level)
            .string(&self.description);
    }

    fn read(r: &mut Reader<'_>) -> Result<FaultRecord, ProtoError> {
        Ok(FaultRecord {
            source_id: r.u16("source_id")?,
            flags: r.u16("flags")?,
            pasid: r.u32("pasid")?,
            addr: r.u64("addr")?,
            reason: r.u8("reason")?,
            stage: r.u8("stage")?,
            level: r.u8("level")?,
            description: r.string("description", MAX_STRING)?,
        })
    }

    /// The record as a DMA failure payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }

    /// Decodes a DMA failure payload.
    pub fn decode(payload: &[u8]) -> Result<FaultRecord, ProtoError> {
        let mut r = Reader::new(payload, "fault record");
        let f = FaultRecord::read(&mut r)?;
        r.finish()?;
        Ok(f)
    }
}

/// The payload of a successful faults reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultsReply {
    /// Faults recorded since the daemon started.
    pub total: u64,
    /// Faults dropped because the log was full.
    pub dropped: u64,
    /// The most recent records the caller may see, oldest first.
    pub faults: Vec<FaultRecord>,
}

impl FaultsReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.total).u64(self.dropped).count(self.faults.len());
        for f in &self.faults {
            f.write(&mut w);
        }
        w.into_vec()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<FaultsReply, ProtoError> {
        let mut r = Reader::new(payload, "faults reply");
        let total = r.u64("total")?;
        let dropped = r.u64("dropped")?;
        let n = r.count("faults", MAX_LIST, 23)?;
        let mut faults = Vec::with_capacity(n);
        for _ in 0..n {
            faults.push(FaultRecord::read(&mut r)?);
        }
        r.finish()?;
        Ok(FaultsReply {
            total,
            dropped,
            faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsva_uapi::Errno;

    #[test]
    fn kinds_round_trip_and_are_sorted() {
        assert!(Kind::ALL.windows(2).all(|w| w[0] < w[1]));
        for &k in Kind::ALL {
            assert_eq!(Kind::from_u16(k as u16), Some(k));
        }
        assert_eq!(Kind::from_u16(0), None);
    }

    #[test]
    fn hello_bytes_are_as_documented() {
        let h = Request::Hello(Hello {
            min_version: 1,
            max_version: 1,
            resume: ResumeToken([0xab; 16]),
            client: "qemu".into(),
        });
        let body = h.encode_body();
        assert_eq!(&body[..4], b"VSVA");
        assert_eq!(&body[4..8], &[1, 0, 1, 0]);
        assert_eq!(&body[8..24], &[0xab; 16]);
        assert_eq!(&body[24..28], &[4, 0, 0, 0]);
        assert_eq!(&body[28..], b"qemu");
        assert_eq!(Request::decode(1, &body), Ok(h));
    }

    #[test]
    fn errors_name_the_field() {
        let mut body = Request::Hello(Hello {
            min_version: 1,
            max_version: 1,
            resume: ResumeToken::default(),
            client: String::new(),
        })
        .encode_body();
        body[0] = b'X';
        let err = Request::decode(1, &body).unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(
            err.to_string(),
            "hello magic 0x41565358 is not 0x41565356 (\"VSVA\")"
        );
        let err = Request::decode(0x0103, &[1, 0, 0, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "attach_group body ends at byte 4 but field group needs 4 bytes from there"
        );
        let err = Request::decode(0x0401, &[0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "status body has 1 bytes after its last field"
        );
        let err = Request::decode(0x7777, &[]).unwrap_err();
        assert_eq!(err.errno(), Errno::ENOSYS);
        assert_eq!(err.to_string(), "unknown frame kind 0x7777");
    }

    #[test]
    fn dma_body_rules() {
        let write = Request::DeviceDma(DeviceDma {
            source_id: 0x18,
            flags: DMA_PASID | DMA_WRITE,
            pasid: 5,
            addr: 0x1000,
            len: 3,
            data: vec![1, 2, 3],
        });
        let body = write.encode_body();
        assert_eq!(Request::decode(Kind::DeviceDma as u16, &body), Ok(write));
        let err = Request::decode(Kind::DeviceDma as u16, &body[..body.len() - 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "device_dma field data has invalid value 0x2: a write carries exactly len bytes, a read none"
        );
        let mut bad = body.clone();
        bad[2] = 0x30;
        assert!(Request::decode(Kind::DeviceDma as u16, &bad)
            .unwrap_err()
            .to_string()
            .starts_with("device_dma field flags has invalid value 0x30"));
    }

    #[test]
    fn reply_errno_mapping() {
        let r = Reply::error(Errno::ENOSPC, "quota");
        assert_eq!(r.result, -28);
        assert_eq!(r.errno(), Some(Errno::ENOSPC));
        assert_eq!(Reply::ok(3, vec![]).errno(), None);
        let odd = Reply {
            result: -4000,
            message: String::new(),
            payload: vec![],
        };
        assert_eq!(odd.errno(), Some(Errno::EIO));
        let min = Reply {
            result: i64::MIN,
            message: String::new(),
            payload: vec![],
        };
        assert_eq!(min.errno(), Some(Errno::EIO));
        assert_eq!(Reply::decode(&r.encode_body()), Ok(r));
    }

    #[test]
    fn resume_token_hex() {
        let t = ResumeToken([0x0f; 16]);
        assert_eq!(ResumeToken::from_hex(&t.to_hex()), Some(t));
        assert_eq!(ResumeToken::from_hex("xyz"), None);
        assert_eq!(format!("{t:?}"), "ResumeToken(..)");
    }
}
