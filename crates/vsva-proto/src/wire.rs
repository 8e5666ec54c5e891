//! The one body codec: little-endian field readers and writers with bounds checks, the
//! [`Encode`] / [`Decode`] pair every message implements, and the record checksum.
//!
//! [`Reader`] never panics: every read checks the remaining length first and returns
//! [`ProtoError::Truncated`] naming the message and field when the body is short. Counts read
//! from the wire are checked against what the remaining bytes could possibly hold before any
//! allocation, so a hostile count cannot make the decoder allocate more than the frame size.

use crate::error::ProtoError;

/// Reads the fields of one message body in order.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `message` names the message in errors.
    pub fn new(buf: &'a [u8], message: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            message,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < n {
            return Err(ProtoError::Truncated {
                message: self.message,
                field,
                need: n,
                have: self.pos,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A little-endian `i64`.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, ProtoError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// Exactly `N` raw bytes.
    pub fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        self.array(field)
    }

    /// A `u32` length followed by that many bytes; the length may not exceed `max`.
    pub fn bytes(&mut self, field: &'static str, max: u32) -> Result<&'a [u8], ProtoError> {
        let len = self.u32(field)?;
        if len > max {
            return Err(ProtoError::TooLong {
                message: self.message,
                field,
                value: len.into(),
                max: max.into(),
            });
        }
        self.take(len as usize, field)
    }

    /// A `u32` length followed by that many bytes of UTF-8; the length may not exceed `max`.
    pub fn string(&mut self, field: &'static str, max: u32) -> Result<String, ProtoError> {
        let bytes = self.bytes(field, max)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(ProtoError::BadUtf8 {
                message: self.message,
                field,
            }),
        }
    }

    /// A `u32` element count, checked against `max` and against the bytes left (each element
    /// takes at least `min_elem` bytes), so the caller may allocate that many elements.
    pub fn count(
        &mut self,
        field: &'static str,
        max: u32,
        min_elem: usize,
    ) -> Result<usize, ProtoError> {
        let count = self.u32(field)?;
        if count > max {
            return Err(ProtoError::TooLong {
                message: self.message,
                field,
                value: count.into(),
                max: max.into(),
            });
        }
        let count = count as usize;
        let need = count.saturating_mul(min_elem.max(1));
        if need > self.remaining() {
            return Err(ProtoError::Truncated {
                message: self.message,
                field,
                need,
                have: self.pos,
            });
        }
        Ok(count)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Checks that the whole body was read.
    pub fn finish(self) -> Result<(), ProtoError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(ProtoError::TrailingBytes {
                message: self.message,
                extra,
            }),
        }
    }

    /// An error for a field whose value is not allowed.
    pub fn bad_value(&self, field: &'static str, value: u64, why: &'static str) -> ProtoError {
        ProtoError::BadValue {
            message: self.message,
            field,
            value,
            why,
        }
    }
}

/// Appends fields to a body, little-endian.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// A writer that appends to `buf`, after what it holds (so a frame's body can be written
    /// straight behind its header, with no body built apart and copied).
    pub fn after(buf: Vec<u8>) -> Self {
        Writer { buf }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes with no length.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a `u32` length and the bytes. Lengths above `u32::MAX` are cut to it; no frame
    /// can carry them anyway and the peer's decoder refuses the frame.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(&v[..len as usize]);
        self
    }

    /// Appends a `u32` length and the UTF-8 bytes of `s`.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// Appends a `u32` count.
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The body written so far.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// A message body that writes itself field by field; the one encoding style of this crate.
pub trait Encode {
    /// Appends the fields, in wire order.
    fn write(&self, w: &mut Writer);

    /// The fields as a fresh body.
    fn to_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_vec()
    }
}

/// A message body that reads itself field by field, the inverse of [`Encode`].
pub trait Decode: Sized {
    /// Reads the fields, in wire order, leaving the reader after the last.
    fn read(r: &mut Reader<'_>) -> Result<Self, ProtoError>;

    /// Reads a whole body named `message` in errors, refusing trailing bytes.
    fn from_body(body: &[u8], message: &'static str) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body, message);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), for checksummed records.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn reads_what_was_written() {
        let mut w = Writer::new();
        w.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .i64(-5)
            .string("hé")
            .bytes(&[9, 9]);
        let buf = w.into_vec();
        let mut r = Reader::new(&buf, "test");
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 2);
        assert_eq!(r.u32("c").unwrap(), 3);
        assert_eq!(r.u64("d").unwrap(), 4);
        assert_eq!(r.i64("e").unwrap(), -5);
        assert_eq!(r.string("f", 10).unwrap(), "hé");
        assert_eq!(r.bytes("g", 2).unwrap(), &[9, 9]);
        r.finish().unwrap();
    }

    #[test]
    fn short_reads_name_the_field() {
        let mut r = Reader::new(&[1, 2, 3], "hello");
        let err = r.u32("max_version").unwrap_err();
        assert_eq!(
            err.to_string(),
            "hello body ends at byte 0 but field max_version needs 4 bytes from there"
        );
    }

    #[test]
    fn counts_are_bounded_by_the_remaining_bytes() {
        let mut w = Writer::new();
        w.u32(1_000_000);
        let buf = w.into_vec();
        let err = Reader::new(&buf, "sets")
            .count("entries", u32::MAX, 8)
            .unwrap_err();
        assert!(matches!(
            err,
            ProtoError::Truncated {
                field: "entries",
                ..
            }
        ));
        let err = Reader::new(&buf, "sets")
            .count("entries", 10, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sets field entries is 1000000, above its limit of 10"
        );
    }

    #[test]
    fn trailing_bytes_and_bad_utf8_are_refused() {
        let mut r = Reader::new(&[0, 0], "ping");
        r.u8("x").unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            ProtoError::TrailingBytes {
                message: "ping",
                extra: 1
            }
        );
        let mut w = Writer::new();
        w.bytes(&[0xff, 0xfe]);
        let buf = w.into_vec();
        assert!(matches!(
            Reader::new(&buf, "hello").string("client", 10),
            Err(ProtoError::BadUtf8 {
                field: "client",
                ..
            })
        ));
    }
}
