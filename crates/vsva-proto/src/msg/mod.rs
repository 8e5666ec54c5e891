//! Typed requests and replies, and their body encodings, one message family per file.
//!
//! Every body is a sequence of little-endian fields with no padding and no implicit
//! alignment; `u32`-prefixed byte strings carry variable data. `docs/protocol.md` lists every
//! body byte by byte; the [`Encode`](crate::wire::Encode) / [`Decode`](crate::wire::Decode)
//! implementations here are its reference implementation.

mod device_side;
mod event;
mod handshake;
mod iommufd;
mod kind;
mod reply;
mod report;
mod request;

pub use device_side::{
    AtsAnswer, AtsRequest, DeviceOpened, DeviceRegion, RaisedPage, ATS_EXEC,
    ATS_RAISE_PAGE_REQUEST, ATS_READ, ATS_USER, ATS_WRITE, DEVICE_TOKEN_LEN, MAX_DEVICE_REGIONS,
    PAGE_REQUEST_LAST, PAGE_REQUEST_PASID, RESP_FAILURE, RESP_INVALID, RESP_SUCCESS,
};
pub use event::{
    Event, EventAck, Invalidation, PageRequest, PageResponse, ResponseTranslation, ACK_KIND,
    EVENT_DEVICE_REVOKED, EVENT_DMA_FAULT, EVENT_INVALIDATE, EVENT_OVERFLOW, EVENT_PAGE_REQUEST,
    EVENT_PAGE_RESPONSE, INVAL_ALL, INVAL_PASID, PERM_EXEC, PERM_PRIV, PERM_READ, PERM_WRITE,
    PGFAULT_LAST_PAGE, PGFAULT_PASID_VALID, RESP_TRANSLATION,
};
pub use handshake::{
    negotiate_version, Credentials, Hello, HelloReply, ResumeToken, HELLO_ADMIN, HELLO_RESUMED,
    MAGIC, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RESUME_TOKEN_LEN,
};
pub use iommufd::{
    IommufdObject, IommufdObjectsReply, IommufdRequest, IOMMUFD_KIND_NAMES, IOMMUFD_NONE,
    PAGE_RESPONSE_LEN,
};
pub use kind::Kind;
pub use reply::Reply;
pub use report::{
    DeviceInfo, FaultRecord, FaultsReply, FaultsSinceReply, NestingRefusal, NumberedFault,
    SetEntry, SetState, SetsReply, StatusReply,
};
pub use request::{
    DeviceConfig, DeviceDma, Request, CONFIG_WRITE, DMA_EXEC, DMA_FLAGS, DMA_PASID, DMA_PRIV,
    DMA_WRITE,
};

/// Longest string field (client name, messages, command lines), in bytes.
pub const MAX_STRING: u32 = 4096;
/// Most PASIDs listed in one reply (the whole 20-bit space).
pub const MAX_PASID_LIST: u32 = 1 << 20;
/// Most entries in a sets, faults or devices list.
pub const MAX_LIST: u32 = 65_536;

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
