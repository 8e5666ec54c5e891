//! The allocator's error type.

use crate::ids::{Pasid, SetId};
use vsva_uapi::Errno;

/// Why an allocator operation was refused. Every variant maps to the errno the kernel would
/// return ([`Error::errno`]); its message names the field and value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `pasid_bits` is outside `1..=20`.
    #[error("pasid_bits {bits} is outside the supported range 1..=20")]
    InvalidPasidBits {
        /// The width asked for.
        bits: u8,
    },
    /// A range whose lower bound is above its upper bound.
    #[error("range min {min} is greater than max {max}")]
    InvalidRange {
        /// Lower bound asked for.
        min: u32,
        /// Upper bound asked for.
        max: u32,
    },
    /// A PASID that cannot exist in this space (0, or not below `2^pasid_bits`).
    #[error("PASID {pasid} is outside the valid range [1, {max}]")]
    PasidOutOfRange {
        /// The PASID named.
        pasid: u32,
        /// The largest valid PASID of the space.
        max: Pasid,
    },
    /// Every PASID in the range is taken (allocated or still being torn down).
    #[error("no free PASID in [{min}, {max}]")]
    NoSpace {
        /// Lower bound searched, after clamping to the space.
        min: u32,
        /// Upper bound searched, after clamping to the space.
        max: u32,
    },
    /// The set already owns as many PASIDs as its quota allows.
    #[error("set {set} already owns {quota} PASIDs, its whole quota")]
    QuotaExceeded {
        /// The set that asked.
        set: SetId,
        /// Its quota when the allocation was refused.
        quota: u32,
    },
    /// The PASID is not allocated to anyone.
    #[error("PASID {pasid} is not allocated")]
    NotAllocated {
        /// The PASID named.
        pasid: Pasid,
    },
    /// The PASID belongs to another set.
    #[error("PASID {pasid} belongs to set {owner}, not to set {caller}")]
    NotOwner {
        /// The PASID named.
        pasid: Pasid,
        /// The set that owns it.
        owner: SetId,
        /// The set that named it.
        caller: SetId,
    },
    /// The PASID was freed and its teardown has not finished.
    #[error("PASID {pasid} is being torn down ({pending} subscriber(s) have not finished)")]
    Freeing {
        /// The PASID named.
        pasid: Pasid,
        /// Subscribers still working on it.
        pending: u32,
    },
    /// No live set has this id.
    #[error("set {set} does not exist")]
    UnknownSet {
        /// The id the caller named.
        set: SetId,
    },
    /// Set ids are exhausted (more than 2^31 sets were created over the space's life).
    #[error("no set ids left: {created} sets have been created")]
    SetIdsExhausted {
        /// How many sets were created.
        created: u32,
    },
    /// The delegated backend refused or failed the allocation.
    #[error("{backend} backend: {message}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// The errno the backend reported.
        errno: Errno,
        /// What it said.
        message: String,
    },
}

impl Error {
    /// The Linux errno a kernel would return for this error.
    pub fn errno(&self) -> Errno {
        match self {
            Error::InvalidPasidBits { .. }
            | Error::InvalidRange { .. }
            | Error::PasidOutOfRange { .. } => Errno::EINVAL,
            Error::NoSpace { .. } | Error::QuotaExceeded { .. } => Errno::ENOSPC,
            Error::NotAllocated { .. } | Error::UnknownSet { .. } => Errno::ENOENT,
            Error::NotOwner { .. } => Errno::EACCES,
            Error::Freeing { .. } => Errno::EBUSY,
            Error::SetIdsExhausted { .. } => Errno::ENOSPC,
            Error::Backend { errno, .. } => *errno,
        }
    }
}
