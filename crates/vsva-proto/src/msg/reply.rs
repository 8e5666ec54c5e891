//! Replies: result, message and payload of the daemon's answer to one request.

use super::MAX_STRING;
use crate::error::ProtoError;
use crate::frame::FrameHeader;
use crate::wire::{Reader, Writer};

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
        let mut body = Vec::new();
        self.append_body(&mut body);
        body
    }

    /// Appends the reply's body to `out` (the daemon writes it behind the frame header it
    /// has already queued).
    pub fn append_body(&self, out: &mut Vec<u8>) {
        let mut w = Writer::after(std::mem::take(out));
        w.i64(self.result).string(&self.message).raw(&self.payload);
        *out = w.into_vec();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_appended_behind_other_bytes_is_the_body_alone() {
        for reply in [
            Reply::ok(7, vec![1, 2, 3]),
            Reply::error(vsva_uapi::Errno::EINVAL, "bad field"),
        ] {
            let mut out = vec![0xaa, 0xbb];
            reply.append_body(&mut out);
            assert_eq!(out[..2], [0xaa, 0xbb], "what was there stays");
            assert_eq!(out[2..], reply.encode_body()[..]);
            assert_eq!(Reply::decode(&out[2..]), Ok(reply));
        }
    }
}
