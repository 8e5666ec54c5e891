//! The crate's error type: every variant maps to the Linux errno the kernel would return.

use vsva_ioasid::SetId;
use vsva_iommu::{DmaError, IommuError, SourceId};
use vsva_uapi::{Errno, UapiError};

use crate::types::{ContainerId, GroupId, MdevId, ProcessToken};

/// Why a VFIO operation was refused.
///
/// [`VfioError::errno`] gives the errno the kernel would return (an ioctl returns it negated,
/// see [`VfioError::to_ioctl_return`]); the message (`Display`) names the field and the value at
/// fault. A refused operation changes nothing, except where a variant says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// A uAPI argument failed the argument reader's or a decoder's checks (`EFAULT` or
    /// `EINVAL`): a buffer shorter than the mandatory part, an `argsz` below it or beyond the
    /// buffer, or a field the decoder refuses.
    #[error("{}", .0.message())]
    Uapi(#[from] UapiError),
    /// A field holds a value the operation does not accept (`EINVAL`).
    #[error("{field} {value:#x}: {reason}")]
    InvalidField {
        /// The field, as the uAPI names it (e.g. `"flags"`, `"granu.addr_info.granule_size"`).
        field: &'static str,
        /// The value the caller passed.
        value: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The ioctl number is not one a VFIO container with this IOMMU answers (`ENOTTY`).
    #[error("cmd {cmd:#x} is not a VFIO container ioctl this IOMMU driver implements")]
    UnknownIoctl {
        /// The ioctl number.
        cmd: u32,
    },
    /// An IOMMU ioctl on a container whose IOMMU type is not set yet (`EINVAL`, as the VFIO
    /// core answers every driver ioctl before `VFIO_SET_IOMMU`).
    #[error(
        "container {container} has no IOMMU type yet: VFIO_SET_IOMMU must come before cmd {cmd:#x}"
    )]
    NoIommu {
        /// The container the ioctl was made on.
        container: ContainerId,
        /// The ioctl number (0 for the typed API).
        cmd: u32,
    },
    /// `VFIO_SET_IOMMU` on a container whose type is already set (`EINVAL`).
    #[error("container {container} already has IOMMU type {current}")]
    IommuAlreadySet {
        /// The container the ioctl was made on.
        container: ContainerId,
        /// The IOMMU type it already has (`VFIO_SET_IOMMU` value).
        current: u32,
    },
    /// `VFIO_SET_IOMMU` on a container with no group (`EINVAL`): attaching a group is what
    /// entitles a user to IOMMU resources.
    #[error("container {container} has no group: attach one before VFIO_SET_IOMMU")]
    NoGroup {
        /// The container the ioctl was made on.
        container: ContainerId,
    },
    /// `VFIO_SET_IOMMU` with a type this layer does not offer (`ENODEV`).
    #[error("IOMMU type {requested}: {reason}")]
    UnsupportedIommuType {
        /// The type asked for.
        requested: u64,
        /// Why it is not available.
        reason: &'static str,
    },
    /// A nesting container holds exactly one group (`EINVAL`, as v5 04/15 answers).
    #[error("container {container} is a nesting container and already holds group {group}; a nesting container holds exactly one group")]
    NestingOneGroup {
        /// The nesting container the group was offered to.
        container: ContainerId,
        /// The group it holds (or one of those it holds).
        group: GroupId,
    },
    /// PASID_REQUEST on a container without a per-process PASID context (`EOPNOTSUPP`).
    #[error("container {container} has no per-process PASID context: {reason}")]
    NoPasidContext {
        /// The container the request was made on.
        container: ContainerId,
        /// Why (not a nesting container, or PASID support off).
        reason: &'static str,
    },
    /// PASID support is switched off in [`crate::VfioConfig::pasid_enabled`]: no per-process
    /// context, no mdev default PASIDs (`ENOTTY`, as with `CONFIG_VFIO_PASID` compiled out).
    #[error("PASID support is disabled in the VFIO configuration (pasid_enabled = false)")]
    PasidSupportDisabled,
    /// A NESTING_OP the container cannot do (`EOPNOTSUPP`).
    #[error("container {container} cannot {op}: {reason}")]
    NestingUnsupported {
        /// The container the op was asked of.
        container: ContainerId,
        /// The operation (`"bind"`, `"unbind"`, `"invalidate"`).
        op: &'static str,
        /// Why (not nesting, or the nesting info lacks the feature).
        reason: &'static str,
    },
    /// The PASID allocator refused (`ENOSPC` for an exhausted range or quota, ...).
    #[error(transparent)]
    Pasid(#[from] vsva_ioasid::Error),
    /// A PASID outside `[1, 2^pasid_bits - 1]` (`EINVAL`).
    #[error("{field} {pasid}: outside the PASID space [1, {max}]")]
    PasidOutOfRange {
        /// The field that named it (`"hpasid"`, `"granu.pasid_info.pasid"`, ...).
        field: &'static str,
        /// The value the caller named (it may not fit a PASID).
        pasid: u64,
        /// The largest PASID of the space.
        max: u32,
    },
    /// The PASID belongs to another process (`EACCES`).
    #[error("{field} {pasid} belongs to another process (PASID set {owner}), not to the caller (set {caller})")]
    PasidNotOwned {
        /// The field that named it.
        field: &'static str,
        /// The PASID the caller named.
        pasid: u32,
        /// Its owner's set.
        owner: SetId,
        /// The caller's set.
        caller: SetId,
    },
    /// Nobody owns the PASID (`ENOENT`); it may still be being torn down after a free.
    #[error("{field} {pasid} is not allocated to anyone{}", if *.freeing { " (it was freed and is still being torn down)" } else { "" })]
    PasidNotAllocated {
        /// The field that named it.
        field: &'static str,
        /// The PASID the caller named.
        pasid: u32,
        /// Whether it is in the allocator's freeing state.
        freeing: bool,
    },
    /// The PASID is already bound to a guest page table in this container (`EBUSY`): unbind
    /// it first.
    #[error("hpasid {pasid} is already bound in container {container}; unbind it first")]
    AlreadyBound {
        /// The PASID the caller named.
        pasid: u32,
        /// The container it is bound in.
        container: ContainerId,
    },
    /// Binding failed on one device of the container; the bind was undone on every device
    /// it had reached (errno of the IOMMU's refusal).
    #[error("bind of hpasid {pasid} failed on device {device} (undone on every device): {source}")]
    BindFailed {
        /// The PASID whose bind was undone.
        pasid: u32,
        /// The device that refused.
        device: SourceId,
        /// The IOMMU's reason.
        source: IommuError,
    },
    /// The IOMMU refused an operation (errno by the IOMMU's reason: `ENOMEM` when its table
    /// pool is exhausted, `EINVAL` for out-of-range input, ...).
    #[error("IOMMU {op}: {source}")]
    Iommu {
        /// What was being done.
        op: &'static str,
        /// The IOMMU's reason.
        source: IommuError,
    },
    /// A DMA mapping overlaps an existing one (`EEXIST`).
    #[error("iova range [{iova:#x}, +{size:#x}) overlaps the existing mapping [{existing_iova:#x}, +{existing_size:#x})")]
    DmaExists {
        /// Requested IOVA.
        iova: u64,
        /// Requested size.
        size: u64,
        /// The existing mapping's IOVA.
        existing_iova: u64,
        /// The existing mapping's size.
        existing_size: u64,
    },
    /// A DMA mapping's `vaddr` range is not host memory (`EFAULT`, as a failed pin).
    #[error("vaddr range [{vaddr:#x}, +{size:#x}) is not backed by host memory")]
    DmaUnbacked {
        /// Start of the host range asked for.
        vaddr: u64,
        /// Length of the host range asked for.
        size: u64,
    },
    /// The container already holds as many DMA mappings as allowed (`ENOSPC`).
    #[error("container {container} already holds {limit} DMA mappings, the dma_entry_limit")]
    DmaLimit {
        /// The container that is full.
        container: ContainerId,
        /// Its `dma_entry_limit`.
        limit: usize,
    },
    /// The process's stage-2 tables already hold its share of the IOMMU's table pool
    /// (`ENOMEM`).
    #[error("process {process} holds {held} table-pool pages; its share is {limit}")]
    TablePoolShare {
        /// The process over its share.
        process: ProcessToken,
        /// Pages its stage-2 tables hold.
        held: usize,
        /// The share ([`VfioConfig::table_pages_per_process`](crate::VfioConfig::table_pages_per_process)).
        limit: usize,
    },
    /// An unmap would split an existing mapping, which type1 v2 forbids (`EINVAL`).
    #[error(
        "unmap of [{iova:#x}, +{size:#x}) would split the mapping [{map_iova:#x}, +{map_size:#x})"
    )]
    DmaSplit {
        /// Requested IOVA.
        iova: u64,
        /// Requested size.
        size: u64,
        /// The mapping it would split.
        map_iova: u64,
        /// Size of the mapping it would split.
        map_size: u64,
    },
    /// No group with this id exists (`ENODEV`).
    #[error("group {group} does not exist")]
    UnknownGroup {
        /// The group asked for.
        group: GroupId,
    },
    /// The group is attached to a container (`EBUSY`).
    #[error("group {group} is in use by container {container}")]
    GroupInUse {
        /// The group asked for.
        group: GroupId,
        /// The container holding it.
        container: ContainerId,
    },
    /// The group is not attached to this container (`EINVAL`).
    #[error("group {group} is not attached to container {container}")]
    GroupNotAttached {
        /// The group asked for.
        group: GroupId,
        /// The container it was to be detached from.
        container: ContainerId,
    },
    /// A group or device with this identity already exists (`EEXIST`).
    #[error("{what} already exists")]
    Exists {
        /// What (e.g. `"device 00:03.0"`, `"group 7"`).
        what: String,
    },
    /// No PCI function with this source id is registered (`ENODEV`).
    #[error("no PCI function {source_id} is registered")]
    UnknownDevice {
        /// The requester id asked for.
        source_id: SourceId,
    },
    /// The process has no live PASID context (`ESRCH`).
    #[error("{process} has no PASID context")]
    UnknownProcess {
        /// The process asked for.
        process: ProcessToken,
    },
    /// No mdev with this id exists (`ENODEV`).
    #[error("mdev {mdev} does not exist")]
    UnknownMdev {
        /// The mdev asked for.
        mdev: MdevId,
    },
    /// The device cannot be removed or repurposed now (`EBUSY`).
    #[error("device {source_id} is busy: {reason}")]
    DeviceBusy {
        /// The device asked for.
        source_id: SourceId,
        /// What keeps it busy.
        reason: &'static str,
    },
    /// Every domain id of the IOMMU is in use (`ENOSPC`).
    #[error("every {bits}-bit domain id is in use")]
    DomainIdsExhausted {
        /// The IOMMU's domain-id width.
        bits: u8,
    },
    /// A configuration-space access with a bad offset, width or alignment (`EINVAL`).
    #[error("config access of {width} byte(s) at offset {offset:#x}: {reason}")]
    ConfigAccess {
        /// Offset of the access in the configuration space.
        offset: u32,
        /// The access width in bytes.
        width: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A device tried a PASID-tagged request its PASID control register does not allow
    /// (`EPERM`): PASID Enable, Execute Permission Enable or Privileged Mode Enable clear, or
    /// a PASID wider than its Max PASID Width.
    #[error("device {source_id} cannot issue {what} with PASID {pasid:?}: {reason}")]
    PasidRequestRefused {
        /// The requester id of the request.
        source_id: SourceId,
        /// The PASID of the request.
        pasid: Option<u32>,
        /// What kind of request.
        what: &'static str,
        /// Which register setting forbids it.
        reason: &'static str,
    },
    /// A device has as many page requests outstanding as its PRI allocation allows
    /// (`ENOSPC`).
    #[error("device {source_id} already has {limit} page requests outstanding")]
    PageRequestLimit {
        /// The requesting device.
        source_id: SourceId,
        /// Its allocation ([`crate::VfioConfig::page_requests_per_device`]).
        limit: u32,
    },
    /// A device tried a request its ATS or PRI capability does not allow now (`EPERM`): the
    /// capability's Enable is clear.
    #[error("device {source_id} cannot issue {what}: {reason}")]
    CapabilityDisabled {
        /// The requesting device.
        source_id: SourceId,
        /// What kind of request.
        what: &'static str,
        /// Which register setting forbids it.
        reason: &'static str,
    },
    /// A page response names no group pending for the caller (`EINVAL`): an unknown or
    /// answered cookie, or a group reported to another process.
    #[error("no page-request group with cookie {cookie} is pending for {caller}")]
    UnknownPageGroup {
        /// The cookie the response named.
        cookie: u32,
        /// The process that answered.
        caller: ProcessToken,
    },
    /// The IOMMU faulted the DMA, or its output is not backed by memory (`EFAULT`).
    #[error("DMA from {source_id}: {source}")]
    Dma {
        /// The requester id of the DMA.
        source_id: SourceId,
        /// The IOMMU's fault (or the unbacked output).
        source: DmaError,
    },
}

impl VfioError {
    /// The Linux errno the kernel would return for this error.
    pub fn errno(&self) -> Errno {
        match self {
            VfioError::Uapi(e) => e.errno(),
            VfioError::DmaUnbacked { .. } | VfioError::Dma { .. } => Errno::EFAULT,
            VfioError::InvalidField { .. }
            | VfioError::NoIommu { .. }
            | VfioError::IommuAlreadySet { .. }
            | VfioError::NoGroup { .. }
            | VfioError::PasidOutOfRange { .. }
            | VfioError::DmaSplit { .. }
            | VfioError::GroupNotAttached { .. }
            | VfioError::ConfigAccess { .. }
            | VfioError::UnknownPageGroup { .. }
            | VfioError::NestingOneGroup { .. } => Errno::EINVAL,
            VfioError::UnknownIoctl { .. } | VfioError::PasidSupportDisabled => Errno::ENOTTY,
            VfioError::UnsupportedIommuType { .. }
            | VfioError::UnknownGroup { .. }
            | VfioError::UnknownDevice { .. }
            | VfioError::UnknownMdev { .. } => Errno::ENODEV,
            VfioError::AlreadyBound { .. }
            | VfioError::GroupInUse { .. }
            | VfioError::DeviceBusy { .. } => Errno::EBUSY,
            VfioError::NoPasidContext { .. } | VfioError::NestingUnsupported { .. } => {
                Errno::EOPNOTSUPP
            }
            VfioError::Pasid(e) => e.errno(),
            VfioError::PasidNotOwned { .. } => Errno::EACCES,
            VfioError::PasidNotAllocated { .. } => Errno::ENOENT,
            VfioError::BindFailed { source, .. } | VfioError::Iommu { source, .. } => {
                source.errno()
            }
            VfioError::DmaExists { .. } | VfioError::Exists { .. } => Errno::EEXIST,
            VfioError::DmaLimit { .. }
            | VfioError::DomainIdsExhausted { .. }
            | VfioError::PageRequestLimit { .. } => Errno::ENOSPC,
            VfioError::PasidRequestRefused { .. } | VfioError::CapabilityDisabled { .. } => {
                Errno::EPERM
            }
            VfioError::TablePoolShare { .. } => Errno::ENOMEM,
            VfioError::UnknownProcess { .. } => Errno::ESRCH,
        }
    }

    /// The value an ioctl returns for this error: the errno negated (`-22` for `EINVAL`).
    pub fn to_ioctl_return(&self) -> i64 {
        i64::from(self.errno().to_ioctl_return())
    }

    pub(crate) fn iommu(op: &'static str, source: IommuError) -> Self {
        VfioError::Iommu { op, source }
    }

    pub(crate) fn invalid(field: &'static str, value: u64, reason: &'static str) -> Self {
        VfioError::InvalidField {
            field,
            value,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsva_iommu::MemoryError;

    #[test]
    fn iommu_errors_map_like_the_vtd_driver() {
        let pool = IommuError::Memory(MemoryError::PoolExhausted {
            base: 0,
            size: 4096,
        });
        assert_eq!(VfioError::iommu("map", pool).errno(), Errno::ENOMEM);
        let range = IommuError::PasidOutOfRange {
            pasid: 9000,
            limit: 8192,
        };
        let err = VfioError::BindFailed {
            pasid: 9000,
            device: SourceId::new(0, 3, 1),
            source: range,
        };
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(err.to_ioctl_return(), -22);
        assert!(err.to_string().contains("00:03.1"), "{err}");
    }

    #[test]
    fn uapi_errors_keep_their_errno_and_message() {
        let err = VfioError::from(UapiError::invalid("flags 0x3: bad"));
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(err.to_string(), "flags 0x3: bad");
    }

    #[test]
    fn not_allocated_message_mentions_teardown() {
        let err = VfioError::PasidNotAllocated {
            field: "hpasid",
            pasid: 7,
            freeing: true,
        };
        assert_eq!(err.errno(), Errno::ENOENT);
        assert!(err.to_string().contains("torn down"));
    }
}
