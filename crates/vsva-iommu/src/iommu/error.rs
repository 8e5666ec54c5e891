//! The control path's error: why attaching a device, writing a PASID entry, building a
//! stage-2 table or accepting an invalidation or page request was refused.

use crate::fault::SourceId;
use crate::invalidate::InvalidationError;
use crate::memory::MemoryError;
use crate::pasid_entry::PasidEntryError;
use crate::prq::PrqError;
use crate::regs::ConfigError;

/// Errors of the control path (attach, PASID entries, stage 2, invalidation requests).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IommuError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Memory or table-pool failure.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The device is already attached.
    #[error("device {source_id} is already attached")]
    AlreadyAttached {
        /// Device.
        source_id: SourceId,
    },
    /// The device is not attached.
    #[error("device {source_id} is not attached")]
    NotAttached {
        /// Device.
        source_id: SourceId,
    },
    /// A PASID beyond the device's directory or the IOMMU's PASID width.
    #[error("pasid {pasid:#x} is outside the device's PASID range (limit {limit:#x})")]
    PasidOutOfRange {
        /// PASID.
        pasid: u32,
        /// First PASID not covered.
        limit: u32,
    },
    /// The PASID entry is already present (clear it first).
    #[error("pasid {pasid:#x} of {source_id} already has a present entry")]
    PasidEntryPresent {
        /// Device.
        source_id: SourceId,
        /// PASID.
        pasid: u32,
    },
    /// The PASID entry is not present.
    #[error("pasid {pasid:#x} of {source_id} has no present entry")]
    PasidEntryAbsent {
        /// Device.
        source_id: SourceId,
        /// PASID.
        pasid: u32,
    },
    /// The PASID entry is not acceptable to this IOMMU.
    #[error(transparent)]
    PasidEntry(#[from] PasidEntryError),
    /// A device option is out of range.
    #[error("device option {field} = {value:#x} is invalid: {expected}")]
    DeviceOption {
        /// Field.
        field: &'static str,
        /// Value.
        value: u64,
        /// What is allowed.
        expected: &'static str,
    },
    /// No stage-2 table with this id.
    #[error("no stage-2 table with id {id}")]
    NoStage2 {
        /// Id.
        id: u32,
    },
    /// Unsupported stage-2 depth.
    #[error("stage-2 depth of {levels} levels is not supported (SAGAW)")]
    Stage2Levels {
        /// Levels asked for.
        levels: u8,
    },
    /// An address or length is not 4 KiB aligned, or zero.
    #[error("{field} = {value:#x} must be a non-zero multiple of 4096")]
    Unaligned {
        /// Field.
        field: &'static str,
        /// Value.
        value: u64,
    },
    /// An address beyond what the table can map.
    #[error("{field} range ending at {end:#x} exceeds the {width}-bit limit")]
    TooWide {
        /// Field.
        field: &'static str,
        /// End of the range.
        end: u64,
        /// Width in bits.
        width: u8,
    },
    /// The range overlaps an existing stage-2 mapping.
    #[error("stage-2 mapping at iova {iova:#x} overlaps an existing mapping")]
    Overlap {
        /// First overlapping address.
        iova: u64,
    },
    /// An unmap that would split a large page.
    #[error("unmap of [{start:#x}, {end:#x}) would split the {size:#x}-byte page at {page:#x}")]
    PartialLargePage {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Page start.
        page: u64,
        /// Page size.
        size: u64,
    },
    /// Invalid invalidation request.
    #[error(transparent)]
    Invalidation(#[from] InvalidationError),
    /// Page request path error.
    #[error(transparent)]
    PageRequest(#[from] PrqError),
}
