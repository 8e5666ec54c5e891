//! What a successful container ioctl did, in typed form ([`IoctlOutcome`]).

use vsva_ioasid::Pasid;
use vsva_uapi::NestingOpKind;

use crate::types::IommuType;

/// What a successful [`crate::Container::ioctl`] did: the embedder can log or journal it
/// without decoding the argument again, and [`IoctlOutcome::value`] is the ioctl's return
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoctlOutcome {
    /// `VFIO_GET_API_VERSION` or `VFIO_CHECK_EXTENSION`: the value the ioctl returns.
    Value(u64),
    /// `VFIO_SET_IOMMU` set this type.
    IommuSet(IommuType),
    /// `VFIO_IOMMU_GET_INFO` wrote the info (and the capability chain, if it fit) into the
    /// argument.
    InfoWritten,
    /// `VFIO_IOMMU_MAP_DMA` mapped the range.
    Mapped,
    /// `VFIO_IOMMU_UNMAP_DMA` unmapped `size` bytes and wrote that into the argument's `size`.
    Unmapped {
        /// Bytes unmapped (0 if nothing was mapped there).
        size: u64,
    },
    /// PASID_REQUEST ALLOC allocated this PASID to the process.
    PasidAllocated(Pasid),
    /// PASID_REQUEST FREE freed the process's PASIDs in `[min, max]`.
    PasidsFreed {
        /// Lowest PASID of the range asked for.
        min: u32,
        /// Highest PASID of the range asked for.
        max: u32,
        /// How many the process owned there and gave back.
        count: u32,
    },
    /// NESTING_OP ran this op.
    Nesting(NestingOpKind),
}

impl IoctlOutcome {
    /// The ioctl's non-negative return value: the new PASID for PASID_REQUEST ALLOC, the
    /// answer of `VFIO_GET_API_VERSION` / `VFIO_CHECK_EXTENSION`, 0 for everything else.
    #[inline]
    pub const fn value(&self) -> u64 {
        match *self {
            IoctlOutcome::Value(v) => v,
            IoctlOutcome::PasidAllocated(pasid) => pasid as u64,
            _ => 0,
        }
    }

    /// Whether the ioctl wrote results back into its argument (`GET_INFO`, `UNMAP_DMA`), so
    /// the argument must go back to the caller.
    #[inline]
    pub const fn wrote_back(&self) -> bool {
        matches!(
            self,
            IoctlOutcome::InfoWritten | IoctlOutcome::Unmapped { .. }
        )
    }
}
