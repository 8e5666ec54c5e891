//! The handshake: the hello request, the peer's credentials and the hello reply, and the
//! version and resume-token rules they carry.

use super::MAX_PASID_LIST;
use super::MAX_STRING;
use crate::error::ProtoError;
use crate::wire::{Decode, Encode, Reader, Writer};

/// The handshake magic: the bytes `V S V A` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VSVA");
/// The protocol version this crate speaks. Version 2 added the NESTING_OP refusal counts to
/// the STATUS payload; version 3 the request, translation and store-commit totals in STATUS,
/// the events channel, replies that carry descriptors, the device side (kinds `0x06xx`,
/// events `0x07xx`) and iommufd (kinds `0x05xx`).
pub const PROTOCOL_VERSION: u16 = 3;
/// The lowest protocol version this crate speaks: an older peer is refused at HELLO
/// (`EINVAL` naming both ranges), since its STATUS decoder would refuse this version's
/// payload and it would not read a reply that carries descriptors.
pub const MIN_PROTOCOL_VERSION: u16 = 3;
/// Length of a resume token.
pub const RESUME_TOKEN_LEN: usize = 16;

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

impl Encode for Hello {
    fn write(&self, w: &mut Writer) {
        w.u32(MAGIC)
            .u16(self.min_version)
            .u16(self.max_version)
            .raw(&self.resume.0)
            .string(&self.client);
    }
}

impl Decode for Hello {
    /// Reads a hello body; a wrong magic or `min_version > max_version` is refused.
    fn read(r: &mut Reader<'_>) -> Result<Hello, ProtoError> {
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
        Ok(Hello {
            min_version,
            max_version,
            resume,
            client,
        })
    }
}

/// Picks the version to speak with a client offering `min..=max`, or the error to reply.
pub fn negotiate_version(min: u16, max: u16) -> Result<u16, ProtoError> {
    let hi = max.min(PROTOCOL_VERSION);
    if hi < min.max(MIN_PROTOCOL_VERSION) {
        return Err(ProtoError::UnsupportedVersion {
            min,
            max,
            supported_min: MIN_PROTOCOL_VERSION,
            supported_max: PROTOCOL_VERSION,
        });
    }
    Ok(hi)
}

/// The peer's socket credentials, as the daemon established them: pid, uid and gid from
/// `SO_PEERCRED`, and the start time that makes the pid unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Credentials {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot).
    pub start_time: u64,
}

impl Encode for Credentials {
    fn write(&self, w: &mut Writer) {
        w.u32(self.pid)
            .u32(self.uid)
            .u32(self.gid)
            .u64(self.start_time);
    }
}

impl Decode for Credentials {
    fn read(r: &mut Reader<'_>) -> Result<Credentials, ProtoError> {
        Ok(Credentials {
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
    pub credentials: Credentials,
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
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<HelloReply, ProtoError> {
        HelloReply::from_body(payload, "hello reply")
    }
}

impl Encode for HelloReply {
    fn write(&self, w: &mut Writer) {
        w.u16(self.version).u16(self.flags);
        self.credentials.write(w);
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
    }
}

impl Decode for HelloReply {
    fn read(r: &mut Reader<'_>) -> Result<HelloReply, ProtoError> {
        let version = r.u16("version")?;
        let flags = r.u16("flags")?;
        let credentials = Credentials::read(r)?;
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
        Ok(HelloReply {
            version,
            flags,
            credentials,
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
