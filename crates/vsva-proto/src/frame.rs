//! Frames: a fixed 16-byte header and a body of at most the negotiated size.
//!
//! ```text
//! off size field
//!  0   4   body_len   u32 LE, bytes of body after the header
//!  4   2   kind       u16 LE, the message kind (see `Kind`)
//!  6   1   flags      bit 0 = REPLY; every other bit must be 0
//!  7   1   nfds       file descriptors sent with this frame (SCM_RIGHTS), at most 4
//!  8   8   id         u64 LE, chosen by the requester; the reply carries the same id
//! ```
//!
//! [`FrameDecoder`] accumulates bytes from a stream and cuts complete frames out of it. A
//! header that is invalid (oversize body, undefined flags, too many fds) cannot be skipped
//! safely, so it is a [`HeaderError`]: the stream is finished after an error reply.

use crate::error::ProtoError;

/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// Header flag: this frame is a reply.
pub const FLAG_REPLY: u8 = 1 << 0;
/// Every header flag this version defines.
pub const DEFINED_FLAGS: u8 = FLAG_REPLY;
/// The most file descriptors one frame may carry.
pub const MAX_FDS_PER_FRAME: u8 = 4;
/// The body limit a daemon uses unless configured otherwise (1 MiB).
pub const DEFAULT_MAX_BODY: u32 = 1 << 20;
/// The largest body limit a daemon may be configured with (16 MiB).
pub const HARD_MAX_BODY: u32 = 16 << 20;
/// A decoder's buffer before a large frame makes it grow.
const INITIAL_BUFFER: usize = 64 * 1024;
/// The largest body any hello may have, before a limit is negotiated (4 KiB).
pub const MAX_HELLO_BODY: u32 = 4096;

/// A frame header, as it sits in the first [`HEADER_LEN`] bytes of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Length of the body that follows the header.
    pub body_len: u32,
    /// Message kind (a [`Kind`](crate::Kind) value, or an unknown one).
    pub kind: u16,
    /// Flag bits ([`FLAG_REPLY`]).
    pub flags: u8,
    /// Number of file descriptors passed with the frame.
    pub nfds: u8,
    /// Request id: any value the requester picks; replies echo it.
    pub id: u64,
}

impl FrameHeader {
    /// Reads the header fields from 16 bytes. Never fails: [`check`](Self::check) validates.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..16]);
        FrameHeader {
            body_len: u32_at(0),
            kind: u16::from_le_bytes([bytes[4], bytes[5]]),
            flags: bytes[6],
            nfds: bytes[7],
            id: u64::from_le_bytes(id),
        }
    }

    /// The 16 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.kind.to_le_bytes());
        out[6] = self.flags;
        out[7] = self.nfds;
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out
    }

    /// Checks the header against the limits: body at most `max_body`, only defined flags,
    /// at most [`MAX_FDS_PER_FRAME`] descriptors. The kind is not checked here: an unknown
    /// kind with a valid header gets an `ENOSYS` reply and the stream goes on.
    pub fn check(&self, max_body: u32) -> Result<(), ProtoError> {
        if self.body_len > max_body {
            return Err(ProtoError::FrameTooLarge {
                len: self.body_len,
                max: max_body,
            });
        }
        if self.flags & !DEFINED_FLAGS != 0 {
            return Err(ProtoError::BadFlags {
                flags: self.flags,
                defined: DEFINED_FLAGS,
            });
        }
        if self.nfds > MAX_FDS_PER_FRAME {
            return Err(ProtoError::TooManyFds {
                nfds: self.nfds,
                max: MAX_FDS_PER_FRAME,
            });
        }
        Ok(())
    }

    /// Whether the frame is a reply.
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }
}

/// One complete frame cut out of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its header.
    pub header: FrameHeader,
    /// Its body, exactly `header.body_len` bytes.
    pub body: Vec<u8>,
    /// Stream offset of the frame's first header byte.
    pub start: u64,
}

impl Frame {
    /// Stream offset one past the frame's last byte.
    pub fn end(&self) -> u64 {
        self.start + HEADER_LEN as u64 + u64::from(self.header.body_len)
    }
}

/// A header that failed [`FrameHeader::check`]: the stream cannot continue after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct HeaderError {
    /// The header as received (its id and kind address the error reply).
    pub header: FrameHeader,
    /// What is wrong with it.
    pub error: ProtoError,
}

/// Builds the bytes of one frame.
pub fn encode_frame(kind: u16, flags: u8, nfds: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        body_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
        kind,
        flags,
        nfds,
        id,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out
}

/// Cuts frames out of a byte stream.
///
/// Feed it with [`spare`](Self::spare) + [`commit`](Self::commit) (read straight into its
/// buffer) or [`push`](Self::push); take frames with [`next_frame`](Self::next_frame). It
/// keeps stream offsets, so a reader can tell which frame a batch of received file
/// descriptors arrived with. Memory is bounded by one maximal frame plus one read.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    max_body: u32,
}

impl FrameDecoder {
    /// A decoder refusing bodies above `max_body` bytes.
    pub fn new(max_body: u32) -> Self {
        FrameDecoder {
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            offset: 0,
            max_body,
        }
    }

    /// Changes the body limit (after the handshake negotiated one).
    pub fn set_max_body(&mut self, max_body: u32) {
        self.max_body = max_body;
    }

    /// The current body limit.
    pub fn max_body(&self) -> u32 {
        self.max_body
    }

    /// A writable slice of at least `min` bytes after the buffered data; fill some of it and
    /// call [`commit`](Self::commit) with the count.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start > 0 && self.buf.len() - self.end < min {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the slice returned by [`spare`](Self::spare) as received.
    /// `n` is clamped to the spare room.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.spare(bytes.len());
        room[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Gives back memory a large frame made the buffer grow by, keeping what is buffered;
    /// call it between frames so an idle connection holds only the initial buffer.
    pub fn release_memory(&mut self) {
        let keep = INITIAL_BUFFER.max(self.end - self.start);
        if self.buf.len() > keep {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(keep);
            self.buf.shrink_to_fit();
        }
    }

    /// Bytes buffered that do not yet make a complete frame (after taking all frames).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Stream offset one past the last byte received.
    pub fn received(&self) -> u64 {
        self.offset + (self.end - self.start) as u64
    }

    /// Stream offset of the next frame's first byte.
    pub fn next_start(&self) -> u64 {
        self.offset
    }

    /// The header of the frame being received, once its 16 bytes are in.
    pub fn pending_header(&self) -> Option<FrameHeader> {
        let bytes: &[u8; HEADER_LEN] = self
            .buf
            .get(self.start..self.start + HEADER_LEN)?
            .try_into()
            .ok()?;
        (self.end - self.start >= HEADER_LEN).then(|| FrameHeader::parse(bytes))
    }

    /// The next complete frame, `None` if more bytes are needed, or the header error that
    /// ends the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, HeaderError> {
        let Some(header) = self.pending_header() else {
            return Ok(None);
        };
        header
            .check(self.max_body)
            .map_err(|error| HeaderError { header, error })?;
        let total = HEADER_LEN + header.body_len as usize;
        if self.end - self.start < total {
            // Make room for the whole frame now so the caller's reads can complete it.
            let _ = self.spare(total - (self.end - self.start));
            return Ok(None);
        }
        let body = self.buf[self.start + HEADER_LEN..self.start + total].to_vec();
        let frame = Frame {
            header,
            body,
            start: self.offset,
        };
        self.start += total;
        self.offset += total as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_little_endian() {
        let h = FrameHeader {
            body_len: 0x0102_0304,
            kind: 0x0506,
            flags: FLAG_REPLY,
            nfds: 2,
            id: 0x1122_3344_5566_7788,
        };
        let bytes = h.encode();
        assert_eq!(&bytes[..8], &[4, 3, 2, 1, 6, 5, 1, 2]);
        assert_eq!(FrameHeader::parse(&bytes), h);
        assert!(h.is_reply());
    }

    #[test]
    fn checks_name_the_field() {
        let mut h = FrameHeader {
            body_len: 11,
            kind: 1,
            flags: 0,
            nfds: 0,
            id: 7,
        };
        assert_eq!(
            h.check(10).unwrap_err().to_string(),
            "frame body_len 11 exceeds the maximum of 10 bytes"
        );
        h.body_len = 10;
        h.flags = 0x82;
        assert_eq!(
            h.check(10).unwrap_err().to_string(),
            "frame flags 0x82 has undefined bits set (defined: 0x01)"
        );
        h.flags = 0;
        h.nfds = 5;
        assert_eq!(
            h.check(10).unwrap_err().to_string(),
            "frame nfds 5 exceeds the maximum of 4 file descriptors per frame"
        );
        h.nfds = 4;
        assert!(h.check(10).is_ok());
    }

    #[test]
    fn decoder_cuts_frames_byte_by_byte() {
        let mut stream = encode_frame(1, 0, 0, 1, b"abc");
        stream.extend(encode_frame(2, 0, 1, 2, b""));
        stream.extend(encode_frame(3, 0, 0, 3, &[7; 100]));
        let mut dec = FrameDecoder::new(1000);
        let mut frames = Vec::new();
        for b in &stream {
            dec.push(std::slice::from_ref(b));
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].body, b"abc");
        assert_eq!(frames[1].header.nfds, 1);
        assert_eq!(frames[1].start, 19);
        assert_eq!(frames[1].end(), 35);
        assert_eq!(frames[2].body, vec![7; 100]);
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.received(), stream.len() as u64);
    }

    #[test]
    fn oversize_header_is_an_error_carrying_the_id() {
        let mut dec = FrameDecoder::new(8);
        dec.push(&encode_frame(1, 0, 0, 99, &[0; 9]));
        let err = dec.next_frame().unwrap_err();
        assert_eq!(err.header.id, 99);
        assert!(matches!(
            err.error,
            ProtoError::FrameTooLarge { len: 9, max: 8 }
        ));
    }

    #[test]
    fn release_memory_shrinks_after_a_large_frame_and_keeps_a_partial_one() {
        let mut d = FrameDecoder::new(DEFAULT_MAX_BODY);
        let big = encode_frame(1, 0, 0, 1, &[7; 512 * 1024]);
        let small = encode_frame(1, 0, 0, 2, b"abc");
        d.push(&big);
        d.push(&small[..5]);
        assert_eq!(d.next_frame().unwrap().unwrap().body.len(), 512 * 1024);
        assert!(d.next_frame().unwrap().is_none());
        d.release_memory();
        assert_eq!(d.buf.len(), INITIAL_BUFFER);
        d.push(&small[5..]);
        assert_eq!(d.next_frame().unwrap().unwrap().body, b"abc");
    }
}
