//! The log's record format: one [`Record`] per ownership change, its payload written with
//! the protocol's field codec, framed as `len: u32 LE | crc32: u32 LE | payload[len]`.

use vsva_proto::wire::{crc32, Decode, Encode, Reader, Writer};
use vsva_proto::{ProtoError, ResumeToken};
use vsva_vfio::ProcessToken;

/// Largest record payload accepted on replay.
const MAX_RECORD: u32 = 1 << 16;
/// Magic of the header record.
const HEADER_MAGIC: [u8; 8] = *b"VSVAWAL1";

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// First record of a file: the format and the daemon instance that wrote it.
    Header {
        /// Instance id of the daemon that created the file.
        instance: u64,
    },
    /// A process got a context.
    Begin {
        /// Whose change it is.
        token: ProcessToken,
        /// Its user.
        uid: u32,
        /// Its quota.
        quota: u32,
        /// Its resume token.
        resume: ResumeToken,
    },
    /// A process was given a PASID.
    Alloc {
        /// Whose change it is.
        token: ProcessToken,
        /// The PASID.
        pasid: u32,
    },
    /// A process freed its PASIDs in `[min, max]`.
    FreeRange {
        /// Whose change it is.
        token: ProcessToken,
        /// Lowest PASID of the range.
        min: u32,
        /// Highest PASID of the range.
        max: u32,
    },
    /// A process's quota changed.
    Quota {
        /// Whose change it is.
        token: ProcessToken,
        /// New quota.
        quota: u32,
    },
    /// A process's context ended: everything it owned is free.
    End {
        /// Whose change it is.
        token: ProcessToken,
    },
}

fn write_token(w: &mut Writer, t: &ProcessToken) {
    w.u32(t.pid()).u64(t.start_time());
}

fn read_token(r: &mut Reader<'_>) -> Result<ProcessToken, ProtoError> {
    let pid = r.u32("pid")?;
    let start_time = r.u64("start_time")?;
    Ok(ProcessToken::new(pid, start_time))
}

impl Encode for Record {
    fn write(&self, w: &mut Writer) {
        match self {
            Record::Header { instance } => {
                w.u8(0).raw(&HEADER_MAGIC).u64(*instance);
            }
            Record::Begin {
                token,
                uid,
                quota,
                resume,
            } => {
                write_token(w.u8(1), token);
                w.u32(*uid).u32(*quota).raw(&resume.0);
            }
            Record::Alloc { token, pasid } => {
                write_token(w.u8(2), token);
                w.u32(*pasid);
            }
            Record::FreeRange { token, min, max } => {
                write_token(w.u8(3), token);
                w.u32(*min).u32(*max);
            }
            Record::Quota { token, quota } => {
                write_token(w.u8(4), token);
                w.u32(*quota);
            }
            Record::End { token } => {
                write_token(w.u8(5), token);
            }
        }
    }
}

impl Decode for Record {
    fn read(r: &mut Reader<'_>) -> Result<Record, ProtoError> {
        let tag = r.u8("tag")?;
        Ok(match tag {
            0 => {
                if r.fixed::<8>("magic")? != HEADER_MAGIC {
                    return Err(r.bad_value("magic", 0, "not a vsvad log"));
                }
                Record::Header {
                    instance: r.u64("instance")?,
                }
            }
            1 => Record::Begin {
                token: read_token(r)?,
                uid: r.u32("uid")?,
                quota: r.u32("quota")?,
                resume: ResumeToken(r.fixed("resume")?),
            },
            2 => Record::Alloc {
                token: read_token(r)?,
                pasid: r.u32("pasid")?,
            },
            3 => Record::FreeRange {
                token: read_token(r)?,
                min: r.u32("min")?,
                max: r.u32("max")?,
            },
            4 => Record::Quota {
                token: read_token(r)?,
                quota: r.u32("quota")?,
            },
            5 => Record::End {
                token: read_token(r)?,
            },
            v => return Err(r.bad_value("tag", v.into(), "not a record kind")),
        })
    }
}

impl Record {
    /// Appends the framed record (length, checksum, payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let payload = self.to_body();
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }

    /// The first framed record of `data` and its framed length; `None` if the frame is torn,
    /// its checksum is wrong, or its payload is not exactly one record.
    pub fn decode_framed(data: &[u8]) -> Option<(Record, usize)> {
        let mut h = Reader::new(data, "log record");
        let len = h.u32("len").ok()?;
        let crc = h.u32("crc").ok()?;
        if len > MAX_RECORD {
            return None;
        }
        let payload = data.get(8..8 + len as usize)?;
        if crc32(payload) != crc {
            return None;
        }
        let rec = Record::from_body(payload, "log record").ok()?;
        Some((rec, 8 + len as usize))
    }
}
