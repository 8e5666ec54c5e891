//! Decoding and encoding `VFIO_IOMMU_PASID_REQUEST`.

use core::ops::RangeInclusive;

use zerocopy::IntoBytes;

use crate::arg::read_arg;
use crate::errno::UapiError;
use crate::vfio::{
    PasidRange, PasidRequest, VFIO_IOMMU_FLAG_ALLOC_PASID, VFIO_IOMMU_FLAG_FREE_PASID,
};

/// A validated `VFIO_IOMMU_PASID_REQUEST`.
///
/// Both variants carry an inclusive range with `min <= max`; [`decode_pasid_request`] never
/// produces anything else, and [`PasidRequestOp::alloc`] / [`PasidRequestOp::free`] refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasidRequestOp {
    /// Allocate the lowest free PASID in `[min, max]` the caller's quota allows.
    Alloc {
        /// Lowest acceptable PASID.
        min: u32,
        /// Highest acceptable PASID.
        max: u32,
    },
    /// Free the caller's own PASIDs in `[min, max]`; `[0, u32::MAX]` frees all of them.
    Free {
        /// Lowest PASID to free.
        min: u32,
        /// Highest PASID to free.
        max: u32,
    },
}

impl PasidRequestOp {
    /// An ALLOC request for `[min, max]`; `EINVAL` if `min > max`.
    #[inline]
    pub fn alloc(min: u32, max: u32) -> Result<Self, UapiError> {
        check_range(min, max)?;
        Ok(Self::Alloc { min, max })
    }

    /// A FREE request for `[min, max]`; `EINVAL` if `min > max`.
    #[inline]
    pub fn free(min: u32, max: u32) -> Result<Self, UapiError> {
        check_range(min, max)?;
        Ok(Self::Free { min, max })
    }

    /// A FREE request for every PASID the caller owns (`[0, u32::MAX]`).
    pub const fn free_all() -> Self {
        Self::Free {
            min: 0,
            max: u32::MAX,
        }
    }

    /// The inclusive range the request applies to.
    pub const fn range(&self) -> RangeInclusive<u32> {
        match *self {
            Self::Alloc { min, max } | Self::Free { min, max } => min..=max,
        }
    }

    /// The `flags` value that selects this operation.
    pub const fn flags(&self) -> u32 {
        match self {
            Self::Alloc { .. } => VFIO_IOMMU_FLAG_ALLOC_PASID,
            Self::Free { .. } => VFIO_IOMMU_FLAG_FREE_PASID,
        }
    }

    /// The request as the C struct, with `argsz` = 16.
    pub fn to_raw(&self) -> PasidRequest {
        let range = self.range();
        PasidRequest {
            argsz: size_of::<PasidRequest>() as u32,
            flags: self.flags(),
            range: PasidRange {
                min: *range.start(),
                max: *range.end(),
            },
        }
    }

    /// The request as the 16 bytes a caller passes to the ioctl.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_raw().as_bytes().to_vec()
    }
}

/// `min > max` → `EINVAL`: the one range check of a PASID request, made where the kernel
/// makes it (after the flags).
#[inline]
fn check_range(min: u32, max: u32) -> Result<(), UapiError> {
    if min > max {
        return Err(inverted_range(min, max));
    }
    Ok(())
}

#[cold]
fn inverted_range(min: u32, max: u32) -> UapiError {
    UapiError::invalid(format!("range.min {min} is greater than range.max {max}"))
}

/// A `vfio_iommu_type1_pasid_request` that passed the series' checks of the argument
/// ([`read_pasid_request`]); which operation it is ([`PasidRequestArg::op`]) is decided next.
/// In v5 07/15 that is the `switch` whose `default:` answers `EINVAL` for `flags` 0 or both
/// whatever the container, and only its ALLOC and FREE cases ask for the container's PASID
/// context (`EOPNOTSUPP`); v6 moved the context check before the `switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasidRequestArg {
    /// The `flags`: no bit other than ALLOC and FREE, but possibly neither or both.
    pub flags: u32,
    /// `range.min`, at most `max`.
    pub min: u32,
    /// `range.max`.
    pub max: u32,
}

impl PasidRequestArg {
    /// The operation: `flags` exactly ALLOC or exactly FREE.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `flags` 0 or both bits (the series' `default:` case).
    #[inline]
    pub fn op(&self) -> Result<PasidRequestOp, UapiError> {
        let Self { flags, min, max } = *self;
        match flags {
            VFIO_IOMMU_FLAG_ALLOC_PASID => Ok(PasidRequestOp::Alloc { min, max }),
            VFIO_IOMMU_FLAG_FREE_PASID => Ok(PasidRequestOp::Free { min, max }),
            _ => Err(not_one_op(flags)),
        }
    }
}

/// `EINVAL`: `flags` selects neither or both operations.
#[cold]
#[inline(never)]
fn not_one_op(flags: u32) -> UapiError {
    UapiError::invalid(format!(
        "flags {flags:#x}: exactly one of ALLOC ({VFIO_IOMMU_FLAG_ALLOC_PASID:#x}) and FREE \
         ({VFIO_IOMMU_FLAG_FREE_PASID:#x}) must be set"
    ))
}

/// `EINVAL`: `flags` has bits other than ALLOC and FREE.
#[cold]
#[inline(never)]
fn undefined_flags(flags: u32, known: u32) -> UapiError {
    UapiError::invalid(format!(
        "flags {flags:#x}: bits {:#x} are not defined (ALLOC {VFIO_IOMMU_FLAG_ALLOC_PASID:#x}, \
         FREE {VFIO_IOMMU_FLAG_FREE_PASID:#x})",
        flags & !known
    ))
}

/// Reads a `vfio_iommu_type1_pasid_request` as the series does
/// (`vfio_iommu_type1_pasid_request`, v5 07/15). `buf` holds every byte the caller supplied.
/// Checks, in order, each failing with the errno shown:
///
/// 1. `buf.len() < 16`: the struct cannot be read → `EFAULT`.
/// 2. `argsz < 16`, or a `flags` bit other than `ALLOC` (0x1) and `FREE` (0x2) → `EINVAL`.
/// 3. `range.min > range.max` → `EINVAL`.
///
/// An `argsz` above 16 is accepted, even beyond the buffer: the bytes past the known struct
/// are never read (the series copies only `minsz`).
///
/// # Errors
///
/// As listed.
#[inline(always)]
pub fn read_pasid_request(buf: &[u8]) -> Result<PasidRequestArg, UapiError> {
    let req: PasidRequest = read_arg(
        buf,
        size_of::<PasidRequest>(),
        "vfio_iommu_type1_pasid_request",
    )?
    .value;
    let known = VFIO_IOMMU_FLAG_ALLOC_PASID | VFIO_IOMMU_FLAG_FREE_PASID;
    if req.flags & !known != 0 {
        return Err(undefined_flags(req.flags, known));
    }
    let PasidRange { min, max } = req.range;
    check_range(min, max)?;
    Ok(PasidRequestArg {
        flags: req.flags,
        min,
        max,
    })
}

/// Decodes and validates a whole `vfio_iommu_type1_pasid_request`: [`read_pasid_request`],
/// then [`PasidRequestArg::op`] (`flags` 0 or both → `EINVAL`).
///
/// # Errors
///
/// The first failing check's `EFAULT` / `EINVAL`.
#[inline]
pub fn decode_pasid_request(buf: &[u8]) -> Result<PasidRequestOp, UapiError> {
    read_pasid_request(buf)?.op()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;

    #[test]
    fn round_trip() {
        for op in [
            PasidRequestOp::alloc(1, 100).unwrap(),
            PasidRequestOp::free(5, 5).unwrap(),
            PasidRequestOp::free_all(),
        ] {
            assert_eq!(op.to_bytes().len(), 16);
            assert_eq!(decode_pasid_request(&op.to_bytes()), Ok(op));
        }
    }

    #[test]
    fn constructors_refuse_inverted_ranges() {
        assert_eq!(
            PasidRequestOp::alloc(2, 1).unwrap_err().errno(),
            Errno::EINVAL
        );
        assert_eq!(
            PasidRequestOp::free(2, 1).unwrap_err().errno(),
            Errno::EINVAL
        );
    }

    #[test]
    fn messages_name_field_and_value() {
        let mut raw = PasidRequestOp::alloc(1, 2).unwrap().to_raw();
        raw.argsz = 12;
        assert_eq!(
            decode_pasid_request(raw.as_bytes()).unwrap_err().message(),
            "argsz 12 is smaller than the 16 bytes of vfio_iommu_type1_pasid_request"
        );
        raw.argsz = 16;
        raw.flags = 3;
        assert_eq!(
            decode_pasid_request(raw.as_bytes()).unwrap_err().message(),
            "flags 0x3: exactly one of ALLOC (0x1) and FREE (0x2) must be set"
        );
        raw.flags = 1;
        raw.range = PasidRange { min: 9, max: 8 };
        assert_eq!(
            decode_pasid_request(raw.as_bytes()).unwrap_err().message(),
            "range.min 9 is greater than range.max 8"
        );
    }
}
