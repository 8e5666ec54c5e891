//! The protocol's error type.

use vsva_uapi::Errno;

/// Why a frame or a message body was refused.
///
/// Every variant maps to the errno the daemon puts in its error reply ([`ProtoError::errno`]),
/// and its message names the field and the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The header announces a body longer than the negotiated maximum.
    #[error("frame body_len {len} exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The length the header announced.
        len: u32,
        /// The largest body allowed.
        max: u32,
    },
    /// The header's flags byte has bits this version does not define.
    #[error("frame flags {flags:#04x} has undefined bits set (defined: {defined:#04x})")]
    BadFlags {
        /// The flags byte received.
        flags: u8,
        /// The bits this version defines.
        defined: u8,
    },
    /// The header announces more file descriptors than a frame may carry.
    #[error("frame nfds {nfds} exceeds the maximum of {max} file descriptors per frame")]
    TooManyFds {
        /// The count announced.
        nfds: u8,
        /// The largest count allowed.
        max: u8,
    },
    /// The frame kind is not one this version knows.
    #[error("unknown frame kind {kind:#06x}")]
    UnknownKind {
        /// The kind received.
        kind: u16,
    },
    /// A message body ended before a field it must contain.
    #[error("{message} body ends at byte {have} but field {field} needs {need} bytes from there")]
    Truncated {
        /// The message being decoded.
        message: &'static str,
        /// The field that could not be read.
        field: &'static str,
        /// Bytes the field needs.
        need: usize,
        /// Offset at which the body ended short.
        have: usize,
    },
    /// A message body has bytes after its last field.
    #[error("{message} body has {extra} bytes after its last field")]
    TrailingBytes {
        /// The message being decoded.
        message: &'static str,
        /// How many bytes are left over.
        extra: usize,
    },
    /// A string field is not valid UTF-8.
    #[error("{message} field {field} is not valid UTF-8")]
    BadUtf8 {
        /// The message being decoded.
        message: &'static str,
        /// The field at fault.
        field: &'static str,
    },
    /// A length or count field is larger than its limit.
    #[error("{message} field {field} is {value}, above its limit of {max}")]
    TooLong {
        /// The message being decoded.
        message: &'static str,
        /// The field at fault.
        field: &'static str,
        /// The value received.
        value: u64,
        /// Its limit.
        max: u64,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{message} field {field} has invalid value {value:#x}: {why}")]
    BadValue {
        /// The message being decoded.
        message: &'static str,
        /// The field at fault.
        field: &'static str,
        /// The value received.
        value: u64,
        /// What the protocol allows.
        why: &'static str,
    },
    /// The handshake's magic is not `VSVA`.
    #[error("hello magic {magic:#010x} is not {expected:#010x} (\"VSVA\")")]
    BadMagic {
        /// The magic received.
        magic: u32,
        /// The magic expected.
        expected: u32,
    },
    /// The client's version range does not include any version the daemon speaks.
    #[error("hello versions {min}..={max} do not include any supported version ({supported_min}..={supported_max})")]
    UnsupportedVersion {
        /// Lowest version the client speaks.
        min: u16,
        /// Highest version the client speaks.
        max: u16,
        /// Lowest version this side speaks.
        supported_min: u16,
        /// Highest version this side speaks.
        supported_max: u16,
    },
}

impl ProtoError {
    /// The errno the daemon returns in its error reply for this frame.
    ///
    /// Oversize frames and lists are `E2BIG`, unknown kinds `ENOSYS`, everything else
    /// malformed `EINVAL`.
    pub fn errno(&self) -> Errno {
        match self {
            ProtoError::FrameTooLarge { .. } | ProtoError::TooLong { .. } => Errno::E2BIG,
            ProtoError::UnknownKind { .. } => Errno::ENOSYS,
            ProtoError::TooManyFds { .. } => Errno::EBADF,
            ProtoError::BadFlags { .. }
            | ProtoError::Truncated { .. }
            | ProtoError::TrailingBytes { .. }
            | ProtoError::BadUtf8 { .. }
            | ProtoError::BadValue { .. }
            | ProtoError::BadMagic { .. }
            | ProtoError::UnsupportedVersion { .. } => Errno::EINVAL,
        }
    }
}
