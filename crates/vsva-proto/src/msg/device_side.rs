//! The device side's requests: handing a device to another process (grant, open, revoke),
//! ATS translation requests and their answer, page requests and page responses.

use super::report::FaultRecord;
use crate::error::ProtoError;
use crate::wire::{Decode, Encode, Reader, Writer};

/// Page request flag: the request carries `pasid`.
pub const PAGE_REQUEST_PASID: u16 = 1 << 0;
/// Page request flag: the last request of its group.
pub const PAGE_REQUEST_LAST: u16 = 1 << 1;

pub use vsva_uapi::iommufd::{
    IOMMUFD_PAGE_RESP_INVALID as RESP_INVALID, IOMMUFD_PAGE_RESP_SUCCESS as RESP_SUCCESS,
};
/// Page response code (`IOMMU_PAGE_RESP_FAILURE`): the owner cannot serve it (also what
/// a time-out, or an owner that unbinds, frees or dies, answers).
pub const RESP_FAILURE: u32 = 2;

/// Length of a device capability token.
pub const DEVICE_TOKEN_LEN: usize = 16;
/// Most memory regions a `DEVICE_OPEN` reply hands over (one descriptor each).
pub const MAX_DEVICE_REGIONS: usize = 4;

/// Translation request flag (bit 4): when the answer would be "no translation, raise a page
/// request", the daemon raises it itself (a one-page group with index
/// [`AtsRequest::page_request_group`]), as a PCIe device's Page Request Message follows its
/// failed translation; the answer is then [`AtsAnswer::PageRequested`]. On the wire the flag
/// is set exactly when the request carries the group index (2 more bytes).
pub const ATS_RAISE_PAGE_REQUEST: u16 = 1 << 4;

/// A translation request (PCIe ATS): flags as `DEVICE_DMA`'s (`DMA_PASID`, `DMA_WRITE`,
/// `DMA_EXEC`, `DMA_PRIV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtsRequest {
    /// The device.
    pub source_id: u16,
    /// `DMA_*` flags.
    pub flags: u16,
    /// The PASID, when `flags` has `DMA_PASID`.
    pub pasid: u32,
    /// The untranslated address.
    pub addr: u64,
    /// With a group index (below 512): raise the page request for the page of `addr` in
    /// that group if the answer would ask for one (flag [`ATS_RAISE_PAGE_REQUEST`] on the
    /// wire; `flags` itself never carries it). `None`: only translate.
    pub page_request_group: Option<u16>,
}

/// A page request as a device raises it (`PAGE_REQUEST`): the PCIe PRI request's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaisedPage {
    /// The device.
    pub source_id: u16,
    /// `PAGE_REQUEST_PASID`, `PAGE_REQUEST_LAST`.
    pub flags: u16,
    /// The PASID, with `PAGE_REQUEST_PASID`.
    pub pasid: u32,
    /// The page address.
    pub addr: u64,
    /// Page request group index (0..512).
    pub grpid: u16,
    /// `PERM_*` bits asked for.
    pub perm: u16,
}

/// Translation answer flag: readable.
pub const ATS_READ: u8 = 1 << 0;
/// Translation answer flag: writable.
pub const ATS_WRITE: u8 = 1 << 1;
/// Translation answer flag: executable.
pub const ATS_EXEC: u8 = 1 << 2;
/// Translation answer flag: usable by unprivileged requests.
pub const ATS_USER: u8 = 1 << 3;
const ATS_PERMS: u8 = ATS_READ | ATS_WRITE | ATS_EXEC | ATS_USER;

/// The payload of a successful `ATS_TRANSLATE` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtsAnswer {
    /// The translation: where the page is in host memory, its size, its rights.
    Translated {
        /// Host address of the requested address.
        host_addr: u64,
        /// Page size in bytes.
        page_size: u64,
        /// `ATS_*` rights.
        perms: u8,
    },
    /// No translation (a completion without rights): the fault, and whether the device
    /// should raise a page request for the page (PRI).
    NoTranslation {
        /// Raise a page request.
        page_request: bool,
        /// Why there is none.
        fault: FaultRecord,
    },
    /// No translation, and the daemon raised the page request the request's
    /// [`AtsRequest::page_request_group`] named: wait for the group's `PAGE_RESPONSE`
    /// event. Only the answer to a request with that group.
    PageRequested {
        /// Why there is no translation (what the DMA fails with unless the owner answers
        /// SUCCESS).
        fault: FaultRecord,
    },
}

/// A memory region a device process maps (its descriptor travels with the reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRegion {
    /// Where the region sits in host memory: translated addresses fall in
    /// `[host_addr, host_addr + size)`.
    pub host_addr: u64,
    /// Bytes.
    pub size: u64,
    /// Offset into the descriptor's file.
    pub offset: u64,
}

/// The payload of a successful `DEVICE_OPEN` reply: the device, and the regions whose
/// descriptors came with the reply, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOpened {
    /// The device the capability is for.
    pub source_id: u16,
    /// The owner's memory regions.
    pub regions: Vec<DeviceRegion>,
}

impl Encode for AtsRequest {
    fn write(&self, w: &mut Writer) {
        let raise = if self.page_request_group.is_some() {
            ATS_RAISE_PAGE_REQUEST
        } else {
            0
        };
        w.u16(self.source_id)
            .u16(self.flags | raise)
            .u32(self.pasid)
            .u64(self.addr);
        if let Some(g) = self.page_request_group {
            w.u16(g);
        }
    }
}

impl Decode for AtsRequest {
    fn read(r: &mut Reader<'_>) -> Result<AtsRequest, ProtoError> {
        let source_id = r.u16("source_id")?;
        let flags = r.u16("flags")?;
        if flags & !(super::DMA_FLAGS | ATS_RAISE_PAGE_REQUEST) != 0 {
            return Err(r.bad_value(
                "flags",
                flags.into(),
                "only PASID (0x1), WRITE (0x2), EXEC (0x4), PRIV (0x8) and RAISE_PAGE_REQUEST \
                 (0x10) are defined",
            ));
        }
        let pasid = r.u32("pasid")?;
        let addr = r.u64("addr")?;
        let page_request_group = if flags & ATS_RAISE_PAGE_REQUEST != 0 {
            let g = r.u16("grpid")?;
            if g >= 512 {
                return Err(r.bad_value("grpid", g.into(), "a group index has 9 bits"));
            }
            Some(g)
        } else {
            None
        };
        Ok(AtsRequest {
            source_id,
            flags: flags & !ATS_RAISE_PAGE_REQUEST,
            pasid,
            addr,
            page_request_group,
        })
    }
}

impl Encode for RaisedPage {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id)
            .u16(self.flags)
            .u32(self.pasid)
            .u64(self.addr)
            .u16(self.grpid)
            .u16(self.perm);
    }
}

impl Decode for RaisedPage {
    fn read(r: &mut Reader<'_>) -> Result<RaisedPage, ProtoError> {
        let source_id = r.u16("source_id")?;
        let flags = r.u16("flags")?;
        if flags & !(PAGE_REQUEST_PASID | PAGE_REQUEST_LAST) != 0 {
            return Err(r.bad_value(
                "flags",
                flags.into(),
                "only PASID (0x1) and LAST (0x2) are defined",
            ));
        }
        let pasid = r.u32("pasid")?;
        let addr = r.u64("addr")?;
        let grpid = r.u16("grpid")?;
        if grpid >= 512 {
            return Err(r.bad_value("grpid", grpid.into(), "a group index has 9 bits"));
        }
        let perm = r.u16("perm")?;
        if perm & !0xf != 0 {
            return Err(r.bad_value("perm", perm.into(), "only bits 0-3 are defined"));
        }
        Ok(RaisedPage {
            source_id,
            flags,
            pasid,
            addr,
            grpid,
            perm,
        })
    }
}

impl Encode for AtsAnswer {
    fn write(&self, w: &mut Writer) {
        match self {
            AtsAnswer::Translated {
                host_addr,
                page_size,
                perms,
            } => {
                w.u8(0).u64(*host_addr).u64(*page_size).u8(*perms);
            }
            AtsAnswer::NoTranslation {
                page_request,
                fault,
            } => {
                w.u8(1).u8(u8::from(*page_request));
                fault.write(w);
            }
            AtsAnswer::PageRequested { fault } => {
                w.u8(2);
                fault.write(w);
            }
        }
    }
}

impl Decode for AtsAnswer {
    fn read(r: &mut Reader<'_>) -> Result<AtsAnswer, ProtoError> {
        match r.u8("status")? {
            0 => {
                let host_addr = r.u64("host_addr")?;
                let page_size = r.u64("page_size")?;
                if !page_size.is_power_of_two() || page_size < 4096 {
                    return Err(r.bad_value(
                        "page_size",
                        page_size,
                        "must be a power of two of at least 4096",
                    ));
                }
                let perms = r.u8("perms")?;
                if perms & !ATS_PERMS != 0 {
                    return Err(r.bad_value("perms", perms.into(), "only bits 0-3 are defined"));
                }
                Ok(AtsAnswer::Translated {
                    host_addr,
                    page_size,
                    perms,
                })
            }
            1 => {
                let pr = r.u8("page_request")?;
                if pr > 1 {
                    return Err(r.bad_value("page_request", pr.into(), "must be 0 or 1"));
                }
                Ok(AtsAnswer::NoTranslation {
                    page_request: pr == 1,
                    fault: FaultRecord::read(r)?,
                })
            }
            2 => Ok(AtsAnswer::PageRequested {
                fault: FaultRecord::read(r)?,
            }),
            s => Err(r.bad_value(
                "status",
                s.into(),
                "must be 0 (translated), 1 (none) or 2 (page request raised)",
            )),
        }
    }
}

impl AtsAnswer {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<AtsAnswer, ProtoError> {
        AtsAnswer::from_body(payload, "ats_translate reply")
    }
}

impl Encode for DeviceOpened {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id).count(self.regions.len());
        for g in &self.regions {
            w.u64(g.host_addr).u64(g.size).u64(g.offset);
        }
    }
}

impl Decode for DeviceOpened {
    fn read(r: &mut Reader<'_>) -> Result<DeviceOpened, ProtoError> {
        let source_id = r.u16("source_id")?;
        let n = r.count("regions", MAX_DEVICE_REGIONS as u32, 24)?;
        let mut regions = Vec::with_capacity(n);
        for _ in 0..n {
            regions.push(DeviceRegion {
                host_addr: r.u64("host_addr")?,
                size: r.u64("size")?,
                offset: r.u64("offset")?,
            });
        }
        Ok(DeviceOpened { source_id, regions })
    }
}

impl DeviceOpened {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<DeviceOpened, ProtoError> {
        DeviceOpened::from_body(payload, "device_open reply")
    }
}

/// Reads a page response code (the `PAGE_RESPONSE` request's, the `PAGE_RESPONSE` event's):
/// SUCCESS, INVALID or FAILURE.
pub(crate) fn read_response_code(r: &mut Reader<'_>) -> Result<u32, ProtoError> {
    let code = r.u32("code")?;
    if code > RESP_FAILURE {
        return Err(r.bad_value(
            "code",
            code.into(),
            "must be SUCCESS (0), INVALID (1) or FAILURE (2)",
        ));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, DMA_PASID, DMA_WRITE};

    #[test]
    fn a_raising_translation_request_is_two_bytes_longer() {
        let mut a = AtsRequest {
            source_id: 0x0100,
            flags: DMA_PASID | DMA_WRITE,
            pasid: 5,
            addr: 0x7f00_0010_0000,
            page_request_group: Some(7),
        };
        // The protocol document's example.
        let body = Request::AtsTranslate(a).encode_body();
        assert_eq!(
            body,
            [0, 1, 0x13, 0, 5, 0, 0, 0, 0, 0, 0x10, 0, 0, 0x7f, 0, 0, 7, 0]
        );
        assert_eq!(AtsRequest::from_body(&body, "t"), Ok(a));
        a.page_request_group = None;
        let plain = Request::AtsTranslate(a).encode_body();
        assert_eq!(
            &plain[..],
            &[&body[..2], &[3, 0], &body[4..16]].concat()[..]
        );
        // A group index has 9 bits; the flag without the index is short.
        let mut big = body.clone();
        big[16..].copy_from_slice(&512u16.to_le_bytes());
        assert!(AtsRequest::from_body(&big, "t").is_err());
        assert!(AtsRequest::from_body(&body[..16], "t").is_err());
    }
}
