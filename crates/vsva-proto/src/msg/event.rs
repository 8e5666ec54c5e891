//! Events: the frames the daemon pushes on a process's events channel, and the
//! acknowledgement a device process sends back on it.
//!
//! An event frame has the event's kind (`0x07xx`), flags 0, no descriptors, and the event's
//! sequence number in the `id` field: 1 for the first event of a channel, then consecutive
//! (an overflow marker takes a number too, so a gap never happens). The only frame a client
//! sends on the channel is [`EventAck`] (kind [`ACK_KIND`]), which answers an
//! [`Event::Invalidate`] by its sequence number; the daemon sends nothing in return.

use super::device_side::{read_response_code, AtsAnswer, RESP_SUCCESS};
use super::report::FaultRecord;
use super::MAX_STRING;
use crate::error::ProtoError;
use crate::frame::encode_frame;
use crate::wire::{Decode, Encode, Reader, Writer};

/// Event kind: events were dropped because the queue was full.
pub const EVENT_OVERFLOW: u16 = 0x0701;
/// Event kind: an unrecoverable DMA fault.
pub const EVENT_DMA_FAULT: u16 = 0x0702;
/// Event kind: drop cached translations, then acknowledge.
pub const EVENT_INVALIDATE: u16 = 0x0703;
/// Event kind: a page request for a PASID the receiver owns.
pub const EVENT_PAGE_REQUEST: u16 = 0x0704;
/// Event kind: the owner's answer to a page request the receiving device raised.
pub const EVENT_PAGE_RESPONSE: u16 = 0x0705;
/// Event kind: a device capability the receiver held ended.
pub const EVENT_DEVICE_REVOKED: u16 = 0x0706;
/// Kind of the acknowledgement frame a client sends on its events channel.
pub const ACK_KIND: u16 = 0x0780;

/// Invalidation flag: `pasid` is meaningful (otherwise requests without PASID).
pub const INVAL_PASID: u16 = 1 << 0;
/// Invalidation flag: every translation of the device (address, size and PASID ignored).
pub const INVAL_ALL: u16 = 1 << 1;
const INVAL_FLAGS: u16 = INVAL_PASID | INVAL_ALL;

// The page request's flags and permissions are iommufd's (`iommu_hwpt_pgfault`), defined
// once in `vsva-uapi`.
pub use vsva_uapi::iommufd::{
    IOMMU_PGFAULT_FLAGS_LAST_PAGE as PGFAULT_LAST_PAGE,
    IOMMU_PGFAULT_FLAGS_PASID_VALID as PGFAULT_PASID_VALID, IOMMU_PGFAULT_PERM_EXEC as PERM_EXEC,
    IOMMU_PGFAULT_PERM_PRIV as PERM_PRIV, IOMMU_PGFAULT_PERM_READ as PERM_READ,
    IOMMU_PGFAULT_PERM_WRITE as PERM_WRITE,
};
const PGFAULT_FLAGS: u32 = PGFAULT_PASID_VALID | PGFAULT_LAST_PAGE;
const PERMS: u32 = PERM_READ | PERM_WRITE | PERM_EXEC | PERM_PRIV;

/// Page response flag (bit 8): the event carries the daemon's translation of the faulting
/// address ([`PageResponse::translation`]).
pub const RESP_TRANSLATION: u32 = 1 << 8;

/// A device-TLB invalidation: which cached translations of device `source_id` to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidation {
    /// Requester id of the device.
    pub source_id: u16,
    /// `INVAL_*` flags.
    pub flags: u16,
    /// The PASID, when `flags` has [`INVAL_PASID`].
    pub pasid: u32,
    /// First address of the range (page aligned).
    pub addr: u64,
    /// Length of the range in bytes; `u64::MAX` for every address of the PASID.
    pub size: u64,
}

/// A page request with the fields of iommufd's `iommu_hwpt_pgfault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// `PGFAULT_*` flags.
    pub flags: u32,
    /// The device (its requester id).
    pub dev_id: u32,
    /// The PASID, when `flags` has [`PGFAULT_PASID_VALID`].
    pub pasid: u32,
    /// Page request group index.
    pub grpid: u32,
    /// `PERM_*` permissions asked for.
    pub perm: u32,
    /// Page-aligned address.
    pub addr: u64,
    /// Bytes the request covers (a page).
    pub length: u32,
    /// What the owner's page response names the group by.
    pub cookie: u32,
}

/// What a device is told when the owner answered (or the daemon answered for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageResponse {
    /// The device the group came from.
    pub source_id: u16,
    /// `PGFAULT_PASID_VALID` if `pasid` is meaningful.
    pub flags: u32,
    /// The PASID of the group.
    pub pasid: u32,
    /// The group index the device raised.
    pub grpid: u32,
    /// `RESP_*` code.
    pub code: u32,
    /// With a SUCCESS to a group the daemon raised for a translation request
    /// ([`crate::ATS_RAISE_PAGE_REQUEST`]): that request's address and the daemon's
    /// translation of it, made as the device's own `ATS_TRANSLATE` would be, after the
    /// owner's answer (flag [`RESP_TRANSLATION`] on the wire; `flags` itself never carries
    /// it). `None` otherwise, or when the daemon could not ask the IOMMU (the device asks).
    pub translation: Option<ResponseTranslation>,
}

/// The translation a page response carries: [`AtsAnswer::Translated`] to install in the
/// device TLB, or [`AtsAnswer::NoTranslation`] when the page is still missing (never
/// [`AtsAnswer::PageRequested`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTranslation {
    /// The address the translation request asked for.
    pub addr: u64,
    /// The IOMMU's answer for it.
    pub answer: AtsAnswer,
}

/// An event on a process's events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `dropped` events were lost because the queue was full, since the previous marker;
    /// `total` since the channel opened.
    Overflow {
        /// Events lost since the previous marker.
        dropped: u64,
        /// Events lost since the channel opened.
        total: u64,
    },
    /// An unrecoverable DMA fault on a device or PASID of the receiver.
    DmaFault(FaultRecord),
    /// Drop these cached translations, then acknowledge with [`EventAck`].
    Invalidate(Invalidation),
    /// A device asks for a page of a PASID the receiver owns.
    PageRequest(PageRequest),
    /// The answer to a page request the receiving device raised.
    PageResponse(PageResponse),
    /// The capability for device `source_id` ended (revoked, or its owner is gone).
    DeviceRevoked {
        /// The device.
        source_id: u16,
        /// Why, for logs.
        reason: String,
    },
}

/// A client's acknowledgement of an [`Event::Invalidate`], naming it by sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventAck {
    /// The sequence number of the invalidation acknowledged.
    pub seq: u64,
}

impl Encode for Invalidation {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id)
            .u16(self.flags)
            .u32(self.pasid)
            .u64(self.addr)
            .u64(self.size);
    }
}

impl Decode for Invalidation {
    fn read(r: &mut Reader<'_>) -> Result<Invalidation, ProtoError> {
        let source_id = r.u16("source_id")?;
        let flags = r.u16("flags")?;
        if flags & !INVAL_FLAGS != 0 {
            return Err(r.bad_value(
                "flags",
                flags.into(),
                "only PASID (0x1) and ALL (0x2) are defined",
            ));
        }
        Ok(Invalidation {
            source_id,
            flags,
            pasid: r.u32("pasid")?,
            addr: r.u64("addr")?,
            size: r.u64("size")?,
        })
    }
}

impl Encode for PageRequest {
    fn write(&self, w: &mut Writer) {
        w.u32(self.flags)
            .u32(self.dev_id)
            .u32(self.pasid)
            .u32(self.grpid)
            .u32(self.perm)
            .u64(self.addr)
            .u32(self.length)
            .u32(self.cookie);
    }
}

impl Decode for PageRequest {
    fn read(r: &mut Reader<'_>) -> Result<PageRequest, ProtoError> {
        let flags = r.u32("flags")?;
        if flags & !PGFAULT_FLAGS != 0 {
            return Err(r.bad_value(
                "flags",
                flags.into(),
                "only PASID_VALID (0x1) and LAST_PAGE (0x2) are defined",
            ));
        }
        let dev_id = r.u32("dev_id")?;
        let pasid = r.u32("pasid")?;
        let grpid = r.u32("grpid")?;
        let perm = r.u32("perm")?;
        if perm & !PERMS != 0 {
            return Err(r.bad_value(
                "perm",
                perm.into(),
                "only READ (0x1), WRITE (0x2), EXEC (0x4) and PRIV (0x8) are defined",
            ));
        }
        Ok(PageRequest {
            flags,
            dev_id,
            pasid,
            grpid,
            perm,
            addr: r.u64("addr")?,
            length: r.u32("length")?,
            cookie: r.u32("cookie")?,
        })
    }
}

impl Encode for PageResponse {
    fn write(&self, w: &mut Writer) {
        let translated = if self.translation.is_some() {
            RESP_TRANSLATION
        } else {
            0
        };
        w.u16(self.source_id)
            .u32(self.flags | translated)
            .u32(self.pasid)
            .u32(self.grpid)
            .u32(self.code);
        if let Some(t) = &self.translation {
            w.u64(t.addr);
            t.answer.write(w);
        }
    }
}

impl Decode for PageResponse {
    fn read(r: &mut Reader<'_>) -> Result<PageResponse, ProtoError> {
        let source_id = r.u16("source_id")?;
        let flags = r.u32("flags")?;
        if flags & !(PGFAULT_PASID_VALID | RESP_TRANSLATION) != 0 {
            return Err(r.bad_value(
                "flags",
                flags.into(),
                "only PASID_VALID (0x1) and TRANSLATION (0x100) are defined",
            ));
        }
        let pasid = r.u32("pasid")?;
        let grpid = r.u32("grpid")?;
        let code = read_response_code(r)?;
        let translation = if flags & RESP_TRANSLATION != 0 {
            if code != RESP_SUCCESS {
                return Err(r.bad_value(
                    "flags",
                    flags.into(),
                    "only a SUCCESS response carries a translation",
                ));
            }
            let addr = r.u64("addr")?;
            let answer = AtsAnswer::read(r)?;
            if matches!(answer, AtsAnswer::PageRequested { .. }) {
                return Err(r.bad_value(
                    "status",
                    2,
                    "a page response carries a translation or its fault",
                ));
            }
            Some(ResponseTranslation { addr, answer })
        } else {
            None
        };
        Ok(PageResponse {
            source_id,
            flags: flags & !RESP_TRANSLATION,
            pasid,
            grpid,
            code,
            translation,
        })
    }
}

impl Event {
    /// The event's kind (the frame header's `kind`).
    pub fn kind(&self) -> u16 {
        match self {
            Event::Overflow { .. } => EVENT_OVERFLOW,
            Event::DmaFault(_) => EVENT_DMA_FAULT,
            Event::Invalidate(_) => EVENT_INVALIDATE,
            Event::PageRequest(_) => EVENT_PAGE_REQUEST,
            Event::PageResponse(_) => EVENT_PAGE_RESPONSE,
            Event::DeviceRevoked { .. } => EVENT_DEVICE_REVOKED,
        }
    }

    /// A short lower-case label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Event::Overflow { .. } => "overflow",
            Event::DmaFault(_) => "dma_fault",
            Event::Invalidate(_) => "invalidate",
            Event::PageRequest(_) => "page_request",
            Event::PageResponse(_) => "page_response",
            Event::DeviceRevoked { .. } => "device_revoked",
        }
    }

    /// The event's body.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Event::Overflow { dropped, total } => {
                w.u64(*dropped).u64(*total);
            }
            Event::DmaFault(f) => f.write(&mut w),
            Event::Invalidate(i) => i.write(&mut w),
            Event::PageRequest(p) => p.write(&mut w),
            Event::PageResponse(p) => p.write(&mut w),
            Event::DeviceRevoked { source_id, reason } => {
                w.u16(*source_id).string(reason);
            }
        }
        w.into_vec()
    }

    /// The complete frame of this event with sequence number `seq`.
    pub fn encode_frame(&self, seq: u64) -> Vec<u8> {
        encode_frame(self.kind(), 0, 0, seq, &self.encode_body())
    }

    /// Decodes the body of an event frame of kind `kind`.
    ///
    /// An unknown kind is [`ProtoError::UnknownKind`]; a short, long or malformed body names
    /// the field at fault. Never panics, never allocates more than the body's length.
    pub fn decode(kind: u16, body: &[u8]) -> Result<Event, ProtoError> {
        let label = match kind {
            EVENT_OVERFLOW => "overflow event",
            EVENT_DMA_FAULT => "dma_fault event",
            EVENT_INVALIDATE => "invalidate event",
            EVENT_PAGE_REQUEST => "page_request event",
            EVENT_PAGE_RESPONSE => "page_response event",
            EVENT_DEVICE_REVOKED => "device_revoked event",
            _ => return Err(ProtoError::UnknownKind { kind }),
        };
        let mut r = Reader::new(body, label);
        let ev = match kind {
            EVENT_OVERFLOW => Event::Overflow {
                dropped: r.u64("dropped")?,
                total: r.u64("total")?,
            },
            EVENT_DMA_FAULT => Event::DmaFault(FaultRecord::read(&mut r)?),
            EVENT_INVALIDATE => Event::Invalidate(Invalidation::read(&mut r)?),
            EVENT_PAGE_REQUEST => Event::PageRequest(PageRequest::read(&mut r)?),
            EVENT_PAGE_RESPONSE => Event::PageResponse(PageResponse::read(&mut r)?),
            _ => Event::DeviceRevoked {
                source_id: r.u16("source_id")?,
                reason: r.string("reason", MAX_STRING)?,
            },
        };
        r.finish()?;
        Ok(ev)
    }
}

impl EventAck {
    /// The complete acknowledgement frame.
    pub fn encode_frame(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.seq);
        encode_frame(ACK_KIND, 0, 0, 0, &w.into_vec())
    }

    /// Decodes a frame a client sent on its events channel: only an acknowledgement is
    /// accepted (another kind is `ENOSYS`, a malformed body `EINVAL`).
    pub fn decode(kind: u16, body: &[u8]) -> Result<EventAck, ProtoError> {
        if kind != ACK_KIND {
            return Err(ProtoError::UnknownKind { kind });
        }
        let mut r = Reader::new(body, "event ack");
        let seq = r.u64("seq")?;
        r.finish()?;
        Ok(EventAck { seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_frame_bytes() {
        let f = Event::Overflow {
            dropped: 2,
            total: 5,
        }
        .encode_frame(9);
        assert_eq!(&f[..16], &[16, 0, 0, 0, 1, 7, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&f[16..24], &[2, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_page_response_with_its_translation() {
        let mut r = PageResponse {
            source_id: 0x0100,
            flags: PGFAULT_PASID_VALID,
            pasid: 5,
            grpid: 7,
            code: RESP_SUCCESS,
            translation: Some(ResponseTranslation {
                addr: 0x1234,
                answer: AtsAnswer::Translated {
                    host_addr: 0x9000,
                    page_size: 4096,
                    perms: 3,
                },
            }),
        };
        let b = Event::PageResponse(r.clone()).encode_body();
        assert_eq!(
            &b[..18],
            &[0, 1, 1, 1, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&b[18..26], &0x1234u64.to_le_bytes());
        assert_eq!(b[26], 0, "status: translated");
        assert_eq!(b.len(), 18 + 8 + 1 + 8 + 8 + 1);
        assert_eq!(
            Event::decode(EVENT_PAGE_RESPONSE, &b),
            Ok(Event::PageResponse(r.clone()))
        );
        // Only a SUCCESS carries one.
        let mut failed = b.clone();
        failed[14] = 2;
        assert!(Event::decode(EVENT_PAGE_RESPONSE, &failed).is_err());
        r.translation = None;
        assert_eq!(
            Event::PageResponse(r).encode_body(),
            [&b[..2], &[1, 0], &b[4..18]].concat()
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let mut b = Event::PageResponse(PageResponse {
            source_id: 1,
            flags: 0,
            pasid: 0,
            grpid: 0,
            code: 3,
            translation: None,
        })
        .encode_body();
        assert!(Event::decode(EVENT_PAGE_RESPONSE, &b)
            .unwrap_err()
            .to_string()
            .contains("field code has invalid value 0x3"));
        b[14] = 0;
        assert!(Event::decode(EVENT_PAGE_RESPONSE, &b[..b.len() - 1]).is_err());
        assert_eq!(
            EventAck::decode(0x0703, &[0; 8]).unwrap_err().errno(),
            vsva_uapi::Errno::ENOSYS
        );
        assert_eq!(
            EventAck::decode(ACK_KIND, &[0; 9]).unwrap_err().to_string(),
            "event ack body has 1 bytes after its last field"
        );
    }
}
