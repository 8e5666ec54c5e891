//! The control path's error: why attaching a device, writing a PASID entry, building a
//! stage-2 table or accepting an invalidation or page request was refused.

use vsva_uapi::Errno;

use crate::fault::SourceId;
use crate::invalidate::InvalidationError;
use crate::memory::MemoryError;
use crate::pasid_entry::PasidEntryError;
use crate::prq::PrqError;
use crate::regs::ConfigError;

/// Errors of the control path (attach, PASID entries, stage 2, invalidation requests).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IommuError {
    /// `Iommu::new` was given a configuration the model cannot honour.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Host memory or the table pool failed (a full pool, or a table outside memory).
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The device is already attached.
    #[error("device {source_id} is already attached")]
    AlreadyAttached {
        /// The device (bus:device.function) the call named.
        source_id: SourceId,
    },
    /// The device is not attached.
    #[error("device {source_id} is not attached")]
    NotAttached {
        /// The device (bus:device.function) the call named.
        source_id: SourceId,
    },
    /// A PASID beyond the device's directory or the IOMMU's PASID width.
    #[error("pasid {pasid:#x} is outside the device's PASID range (limit {limit:#x})")]
    PasidOutOfRange {
        /// The PASID asked for.
        pasid: u32,
        /// First PASID not covered.
        limit: u32,
    },
    /// The PASID entry is already present (clear it first).
    #[error("pasid {pasid:#x} of {source_id} already has a present entry")]
    PasidEntryPresent {
        /// The device (bus:device.function) the call named.
        source_id: SourceId,
        /// The PASID whose entry was named.
        pasid: u32,
    },
    /// The PASID entry is not present.
    #[error("pasid {pasid:#x} of {source_id} has no present entry")]
    PasidEntryAbsent {
        /// The device (bus:device.function) the call named.
        source_id: SourceId,
        /// The PASID whose entry was named.
        pasid: u32,
    },
    /// The PASID entry is not acceptable to this IOMMU.
    #[error(transparent)]
    PasidEntry(#[from] PasidEntryError),
    /// A device option is out of range.
    #[error("device option {field} = {value:#x} is invalid: {expected}")]
    DeviceOption {
        /// The `DeviceOptions` field at fault.
        field: &'static str,
        /// Its value (1 for a flag that was set).
        value: u64,
        /// What is allowed.
        expected: &'static str,
    },
    /// No stage-2 table with this id.
    #[error("no stage-2 table with id {id}")]
    NoStage2 {
        /// The `Stage2Id` number named.
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
        /// `"iova"`, `"hpa"` or `"len"`.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// An address beyond what the table can map.
    #[error("{field} range ending at {end:#x} exceeds the {width}-bit limit")]
    TooWide {
        /// `"iova"` (beyond the table's input width) or `"hpa"` (beyond the host address width).
        field: &'static str,
        /// End of the range (exclusive; `u64::MAX` when it overflows).
        end: u64,
        /// The width it exceeds, in bits.
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
        /// Start of the range asked for.
        start: u64,
        /// End of the range asked for (exclusive, clipped to the table's width).
        end: u64,
        /// Start of the large page the range cuts.
        page: u64,
        /// Size of that page (2 MiB or 1 GiB).
        size: u64,
    },
    /// The invalidation names a DID, PASID or address mask beyond what the IOMMU supports.
    #[error(transparent)]
    Invalidation(#[from] InvalidationError),
    /// A page request or response was refused (queue full, PRI off, unknown group).
    #[error(transparent)]
    PageRequest(#[from] PrqError),
    /// A translation request from a device whose context entry has DTE clear (ATS not
    /// enabled): the hardware's Unsupported Request.
    #[error("device {source_id} has no device TLB enabled (context entry DTE clear)")]
    AtsDisabled {
        /// The requesting device.
        source_id: SourceId,
    },
    /// A translation request from a device fenced for not completing a device-TLB
    /// invalidation.
    #[error("device {source_id} is fenced: it did not complete a device-TLB invalidation")]
    AtsFenced {
        /// The requesting device.
        source_id: SourceId,
    },
    /// Devices did not complete a device-TLB invalidation in time (VT-d's invalidation
    /// time-out, ITE). Everything else of the call was done: the IOMMU's caches are
    /// invalidated, every other device completed, and these are fenced.
    #[error("device-TLB invalidation timed out on {fenced:?}: fenced")]
    DevTlbTimeout {
        /// The devices fenced, ascending.
        fenced: Vec<SourceId>,
    },
}

impl IommuError {
    /// The errno a uAPI caller sees, as the Linux VT-d driver reports the same conditions:
    /// the memory layer's own errno (`ENOMEM` for an exhausted table pool, else `EFAULT`),
    /// `EBUSY` for what is already attached or present, `ENODEV` for a device not attached,
    /// `ENOENT` for an absent PASID entry or stage-2 table, `EEXIST` for an overlapping
    /// mapping, and `EINVAL` for every input the IOMMU refuses.
    ///
    /// ATS: `EOPNOTSUPP` for a translation request with DTE clear (the hardware's Unsupported
    /// Request); `ENODEV` for a fenced device (the driver stops retrying an invalidation
    /// whose device no longer answers and treats it as gone); `EIO` for a device-TLB
    /// invalidation that timed out. The driver's `qi_submit_sync` returns `-ETIMEDOUT` there,
    /// which the errno table does not have yet: `EIO` stands in for it.
    pub fn errno(&self) -> Errno {
        match self {
            IommuError::Memory(e) => e.errno(),
            IommuError::AlreadyAttached { .. } | IommuError::PasidEntryPresent { .. } => {
                Errno::EBUSY
            }
            IommuError::NotAttached { .. } => Errno::ENODEV,
            IommuError::PasidEntryAbsent { .. } | IommuError::NoStage2 { .. } => Errno::ENOENT,
            IommuError::Overlap { .. } => Errno::EEXIST,
            IommuError::Config(e) => e.errno(),
            IommuError::PasidEntry(e) => e.errno(),
            IommuError::Invalidation(e) => e.errno(),
            IommuError::PageRequest(e) => e.errno(),
            IommuError::AtsDisabled { .. } => Errno::EOPNOTSUPP,
            IommuError::AtsFenced { .. } => Errno::ENODEV,
            IommuError::DevTlbTimeout { .. } => Errno::EIO,
            IommuError::PasidOutOfRange { .. }
            | IommuError::DeviceOption { .. }
            | IommuError::Stage2Levels { .. }
            | IommuError::Unaligned { .. }
            | IommuError::TooWide { .. }
            | IommuError::PartialLargePage { .. } => Errno::EINVAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultReason;
    use crate::invalidate::InvalidationError;

    #[test]
    fn every_variant_maps_like_the_vtd_driver() {
        let sid = SourceId::new(0, 3, 1);
        let mem = |e: MemoryError| IommuError::Memory(e);
        let cases = [
            (
                mem(MemoryError::PoolExhausted {
                    base: 0,
                    size: 4096,
                }),
                Errno::ENOMEM,
            ),
            (
                mem(MemoryError::AddRegion {
                    base: 0,
                    size: 1,
                    reason: String::new(),
                }),
                Errno::EFAULT,
            ),
            (
                mem(MemoryError::InvalidPool {
                    base: 0,
                    size: 1,
                    reason: "",
                }),
                Errno::EFAULT,
            ),
            (mem(MemoryError::BadFree { addr: 0 }), Errno::EFAULT),
            (
                mem(MemoryError::Unbacked { addr: 0, len: 8 }),
                Errno::EFAULT,
            ),
            (IommuError::AlreadyAttached { source_id: sid }, Errno::EBUSY),
            (
                IommuError::PasidEntryPresent {
                    source_id: sid,
                    pasid: 1,
                },
                Errno::EBUSY,
            ),
            (IommuError::NotAttached { source_id: sid }, Errno::ENODEV),
            (
                IommuError::PasidEntryAbsent {
                    source_id: sid,
                    pasid: 1,
                },
                Errno::ENOENT,
            ),
            (IommuError::NoStage2 { id: 1 }, Errno::ENOENT),
            (
                IommuError::AtsDisabled { source_id: sid },
                Errno::EOPNOTSUPP,
            ),
            (IommuError::AtsFenced { source_id: sid }, Errno::ENODEV),
            (IommuError::DevTlbTimeout { fenced: vec![sid] }, Errno::EIO),
            (IommuError::Overlap { iova: 0 }, Errno::EEXIST),
            (
                IommuError::Config(ConfigError::Invalid {
                    field: "pasid_bits",
                    value: String::new(),
                    expected: "",
                }),
                Errno::EINVAL,
            ),
            (
                IommuError::PasidOutOfRange {
                    pasid: 9000,
                    limit: 8192,
                },
                Errno::EINVAL,
            ),
            (
                IommuError::PasidEntry(PasidEntryError {
                    reason: FaultReason::PasidEntryInvalid,
                    field: "PGTT",
                    value: 0,
                }),
                Errno::EINVAL,
            ),
            (
                IommuError::DeviceOption {
                    field: "pasids",
                    value: 0,
                    expected: "",
                },
                Errno::EINVAL,
            ),
            (IommuError::Stage2Levels { levels: 2 }, Errno::EINVAL),
            (
                IommuError::Unaligned {
                    field: "iova",
                    value: 1,
                },
                Errno::EINVAL,
            ),
            (
                IommuError::TooWide {
                    field: "iova",
                    end: 1 << 50,
                    width: 48,
                },
                Errno::EINVAL,
            ),
            (
                IommuError::PartialLargePage {
                    start: 0,
                    end: 4096,
                    page: 0,
                    size: 1 << 21,
                },
                Errno::EINVAL,
            ),
            (
                IommuError::Invalidation(InvalidationError::AddressMask { am: 9, max: 8 }),
                Errno::EINVAL,
            ),
            (
                IommuError::PageRequest(PrqError::NotEnabled { source_id: sid }),
                Errno::EINVAL,
            ),
        ];
        for (err, errno) in cases {
            assert_eq!(err.errno(), errno, "{err:?}");
        }
    }
}
