//! `vsva-proto`: the wire protocol between `vsvad` and its clients.
//!
//! A connection is a stream of frames ([`frame`]): a 16-byte header (body length, kind,
//! flags, file-descriptor count, request id) and a body. The first request must be a
//! [`Hello`] that agrees on a version; after it, any number of requests may be in flight, each
//! answered by a reply frame with the same id. A request carries VFIO ioctl arguments as the
//! uAPI bytes, unchanged, so the daemon validates them exactly as the kernel would; a reply
//! carries a result (`>= 0`, or `-errno`), a message naming the field at fault, and a
//! kind-specific payload. `docs/protocol.md` describes every byte.
//!
//! Decoding is strict and total: [`Request::decode`], [`Reply::decode`] and every payload
//! decoder return a [`ProtoError`] (with the errno the daemon answers with) for any input they
//! do not accept, never panic, and never allocate more than the input's length; headers are
//! checked against a size limit before any body byte is buffered.
//!
//! ```
//! use vsva_proto::{encode_request, FrameDecoder, Request, DEFAULT_MAX_BODY};
//!
//! let bytes = encode_request(7, &Request::SetQuota { pid: 42, quota: 10 });
//! let mut dec = FrameDecoder::new(DEFAULT_MAX_BODY);
//! dec.push(&bytes);
//! let frame = dec.next_frame()?.expect("a whole frame");
//! assert_eq!(frame.header.id, 7);
//! let req = Request::decode(frame.header.kind, &frame.body)?;
//! assert_eq!(req, Request::SetQuota { pid: 42, quota: 10 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod frame;
mod msg;
pub mod paths;
pub mod wire;

pub use error::ProtoError;
pub use frame::{
    encode_frame, Frame, FrameDecoder, FrameHeader, HeaderError, DEFAULT_MAX_BODY, FLAG_REPLY,
    HARD_MAX_BODY, HEADER_LEN, MAX_FDS_PER_FRAME, MAX_HELLO_BODY,
};
pub use msg::{
    negotiate_version, AtsAnswer, AtsRequest, Credentials, DeviceConfig, DeviceDma, DeviceInfo,
    DeviceOpened, DeviceRegion, Event, EventAck, FaultRecord, FaultsReply, FaultsSinceReply, Hello,
    HelloReply, Invalidation, Kind, NestingRefusal, NumberedFault, PageRequest, PageResponse,
    RaisedPage, Reply, Request, ResponseTranslation, ResumeToken, SetEntry, SetState, SetsReply,
    StatusReply, ACK_KIND, ATS_EXEC, ATS_RAISE_PAGE_REQUEST, ATS_READ, ATS_USER, ATS_WRITE,
    CONFIG_WRITE, DEVICE_TOKEN_LEN, DMA_EXEC, DMA_FLAGS, DMA_PASID, DMA_PRIV, DMA_WRITE,
    EVENT_DEVICE_REVOKED, EVENT_DMA_FAULT, EVENT_INVALIDATE, EVENT_OVERFLOW, EVENT_PAGE_REQUEST,
    EVENT_PAGE_RESPONSE, HELLO_ADMIN, HELLO_RESUMED, INVAL_ALL, INVAL_PASID, MAGIC,
    MAX_DEVICE_REGIONS, MAX_LIST, MAX_PASID_LIST, MAX_STRING, MIN_PROTOCOL_VERSION,
    PAGE_REQUEST_LAST, PAGE_REQUEST_PASID, PERM_EXEC, PERM_PRIV, PERM_READ, PERM_WRITE,
    PGFAULT_LAST_PAGE, PGFAULT_PASID_VALID, PROTOCOL_VERSION, RESP_FAILURE, RESP_INVALID,
    RESP_SUCCESS, RESP_TRANSLATION, RESUME_TOKEN_LEN,
};
pub use msg::{
    IommufdObject, IommufdObjectsReply, IommufdRequest, IOMMUFD_KIND_NAMES, IOMMUFD_NONE,
    PAGE_RESPONSE_LEN,
};
pub use vsva_uapi::Errno;

/// The complete frame of request `req` with id `id` (its `nfds` field set to what the
/// request needs).
pub fn encode_request(id: u64, req: &Request) -> Vec<u8> {
    encode_frame(req.kind() as u16, 0, req.nfds(), id, &req.encode_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate_version(3, 3), Ok(3));
        assert_eq!(negotiate_version(1, 9), Ok(3));
        assert_eq!(
            negotiate_version(1, 2).unwrap_err().to_string(),
            "hello versions 1..=2 do not include any supported version (3..=3)"
        );
        assert_eq!(
            negotiate_version(4, 5).unwrap_err().to_string(),
            "hello versions 4..=5 do not include any supported version (3..=3)"
        );
        assert!(negotiate_version(0, 0).is_err());
    }
}
