//! Requests: the typed request a client sends, and its body encoding.

use super::device_side::{read_response_code, AtsRequest, RaisedPage, DEVICE_TOKEN_LEN};
use super::handshake::Hello;
use super::iommufd::IommufdRequest;
use super::kind::Kind;
use crate::error::ProtoError;
use crate::frame::MAX_HELLO_BODY;
use crate::wire::{Decode, Encode, Reader, Writer};

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

impl Encode for DeviceDma {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id)
            .u16(self.flags)
            .u32(self.pasid)
            .u64(self.addr)
            .u32(self.len)
            .raw(&self.data);
    }
}

impl Decode for DeviceDma {
    /// Reads a DMA body (it runs to the end of the frame): undefined flags, WRITE with EXEC,
    /// and data that is not exactly `len` bytes for a write (none for a read) are refused.
    fn read(r: &mut Reader<'_>) -> Result<DeviceDma, ProtoError> {
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
            return Err(r.bad_value("flags", flags.into(), "WRITE and EXEC exclude each other"));
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
        Ok(DeviceDma {
            source_id,
            flags,
            pasid,
            addr,
            len,
            data,
        })
    }
}

impl Encode for DeviceConfig {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id)
            .u8(self.flags)
            .u8(self.width)
            .u32(self.offset)
            .u32(self.value);
    }
}

impl Decode for DeviceConfig {
    /// Reads a configuration access: undefined flags and widths other than 1, 2, 4 are refused.
    fn read(r: &mut Reader<'_>) -> Result<DeviceConfig, ProtoError> {
        let source_id = r.u16("source_id")?;
        let flags = r.u8("flags")?;
        if flags & !CONFIG_WRITE != 0 {
            return Err(r.bad_value("flags", flags.into(), "only WRITE (0x1) is defined"));
        }
        let width = r.u8("width")?;
        if !matches!(width, 1 | 2 | 4) {
            return Err(r.bad_value("width", width.into(), "must be 1, 2 or 4"));
        }
        Ok(DeviceConfig {
            source_id,
            flags,
            width,
            offset: r.u32("offset")?,
            value: r.u32("value")?,
        })
    }
}

/// A request, as the daemon decodes it from a frame.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The handshake; the first request of every connection.
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
        /// The pid of the process to act on (every process with that pid).
        pid: u32,
        /// Its new quota.
        quota: u32,
    },
    /// Release everything process `pid` holds (admin).
    ForceRelease {
        /// The pid of the process to act on (every process with that pid).
        pid: u32,
    },
    /// The most recent DMA faults, at most `max`.
    Faults {
        /// How many to return at most.
        max: u32,
    },
    /// The faults the caller may see numbered above `since`, oldest first, at most `max`.
    FaultsSince {
        /// The number of the last record already read (the previous reply's `next`; 0 for
        /// every record the log still holds).
        since: u64,
        /// How many to return at most.
        max: u32,
    },
    /// An iommufd request (kinds `0x0501`..).
    Iommufd(IommufdRequest),
    /// Open the process's events channel.
    EventsOpen,
    /// Grant device `source_id` to another process.
    DeviceGrant {
        /// The device (the caller must drive it).
        source_id: u16,
    },
    /// Act as the device a grant's token names.
    DeviceOpen {
        /// The token `DEVICE_GRANT` returned.
        token: [u8; DEVICE_TOKEN_LEN],
    },
    /// End every grant of device `source_id`.
    DeviceRevoke {
        /// The device (the caller must drive it).
        source_id: u16,
    },
    /// A translation request.
    AtsTranslate(AtsRequest),
    /// A page request.
    PageRequest(RaisedPage),
    /// A page response.
    PageResponse {
        /// The cookie of the group's `PAGE_REQUEST` event.
        cookie: u32,
        /// `RESP_*` code.
        code: u32,
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
            Request::FaultsSince { .. } => Kind::FaultsSince,
            Request::Iommufd(r) => r.kind(),
            Request::EventsOpen => Kind::EventsOpen,
            Request::DeviceGrant { .. } => Kind::DeviceGrant,
            Request::DeviceOpen { .. } => Kind::DeviceOpen,
            Request::DeviceRevoke { .. } => Kind::DeviceRevoke,
            Request::AtsTranslate(_) => Kind::AtsTranslate,
            Request::PageRequest(_) => Kind::PageRequest,
            Request::PageResponse { .. } => Kind::PageResponse,
        }
    }

    /// How many file descriptors must travel with the request.
    pub fn nfds(&self) -> u8 {
        self.kind().nfds()
    }

    /// The request's body.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Hello(h) => h.write(&mut w),
            Request::Ping(data) => {
                w.raw(data);
            }
            Request::OpenContainer | Request::Status | Request::Sets | Request::EventsOpen => {}
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
            Request::DeviceDma(d) => d.write(&mut w),
            Request::DeviceConfig(c) => c.write(&mut w),
            Request::SetQuota { pid, quota } => {
                w.u32(*pid).u32(*quota);
            }
            Request::ForceRelease { pid } => {
                w.u32(*pid);
            }
            Request::Faults { max } => {
                w.u32(*max);
            }
            Request::FaultsSince { since, max } => {
                w.u64(*since).u32(*max);
            }
            Request::Iommufd(r) => r.write(&mut w),
            Request::DeviceGrant { source_id } | Request::DeviceRevoke { source_id } => {
                w.u16(*source_id);
            }
            Request::DeviceOpen { token } => {
                w.raw(token);
            }
            Request::AtsTranslate(a) => a.write(&mut w),
            Request::PageRequest(p) => p.write(&mut w),
            Request::PageResponse { cookie, code } => {
                w.u32(*cookie).u32(*code);
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
                Request::Hello(Hello::read(&mut r)?)
            }
            Kind::Ping => Request::Ping(r.rest().to_vec()),
            Kind::OpenContainer => Request::OpenContainer,
            Kind::Status => Request::Status,
            Kind::Sets => Request::Sets,
            Kind::EventsOpen => Request::EventsOpen,
            Kind::DeviceGrant => Request::DeviceGrant {
                source_id: r.u16("source_id")?,
            },
            Kind::DeviceOpen => Request::DeviceOpen {
                token: r.fixed("token")?,
            },
            Kind::DeviceRevoke => Request::DeviceRevoke {
                source_id: r.u16("source_id")?,
            },
            Kind::AtsTranslate => Request::AtsTranslate(AtsRequest::read(&mut r)?),
            Kind::PageRequest => Request::PageRequest(RaisedPage::read(&mut r)?),
            Kind::PageResponse => Request::PageResponse {
                cookie: r.u32("cookie")?,
                code: read_response_code(&mut r)?,
            },
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
            Kind::DeviceDma => Request::DeviceDma(DeviceDma::read(&mut r)?),
            Kind::DeviceConfig => Request::DeviceConfig(DeviceConfig::read(&mut r)?),
            Kind::SetQuota => Request::SetQuota {
                pid: r.u32("pid")?,
                quota: r.u32("quota")?,
            },
            Kind::ForceRelease => Request::ForceRelease { pid: r.u32("pid")? },
            Kind::Faults => Request::Faults { max: r.u32("max")? },
            Kind::FaultsSince => Request::FaultsSince {
                since: r.u64("since")?,
                max: r.u32("max")?,
            },
            Kind::IommufdIoctl
            | Kind::IommufdDevice
            | Kind::IommufdReadFaults
            | Kind::IommufdRespond
            | Kind::IommufdObjects => Request::Iommufd(IommufdRequest::read(kind, &mut r)?),
        };
        r.finish()?;
        Ok(req)
    }
}
