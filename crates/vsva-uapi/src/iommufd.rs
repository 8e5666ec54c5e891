//! The iommufd uAPI (`/dev/iommu`, Linux `include/uapi/linux/iommufd.h`) and the VFIO device
//! ioctls that join a device to it: every argument struct byte-identical to Linux, the ioctl
//! numbers, and [`read_iommufd_arg`], the argument reader of iommufd's ioctl entry
//! (`copy_struct_from_user`).
//!
//! Upstream Linux replaced the series' NESTING_OP with iommufd: a nested page table is
//! `IOMMU_HWPT_ALLOC` with [`IommuHwptVtdS1`], invalidation is `IOMMU_HWPT_INVALIDATE` with an
//! array of [`IommuHwptVtdS1Invalidate`], hardware info is [`IommuHwInfoVtd`], and a PASID is
//! attached to a device with [`VfioDeviceAttachIommufdPt`]. iommufd's general rules: unknown
//! flags or non-zero reserved fields → `EOPNOTSUPP`, unknown object → `ENOENT`, object in use →
//! `EBUSY`, attaching an already attached PASID → `EBUSY`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::errno::{Errno, UapiError};
use crate::ioctl::io;
use crate::vfio::{VFIO_BASE, VFIO_TYPE};

/// `IOMMUFD_TYPE`: the ioctl type of `/dev/iommu`, `';'` like VFIO's.
pub const IOMMUFD_TYPE: u8 = b';';
/// `IOMMUFD_CMD_BASE`: the first iommufd command number.
pub const IOMMUFD_CMD_BASE: u8 = 0x80;
/// `IOMMU_DESTROY`: destroy any object by id ([`IommuDestroy`]).
pub const IOMMU_DESTROY: u32 = io(IOMMUFD_TYPE, 0x80);
/// `IOMMU_IOAS_ALLOC` ([`IommuIoasAlloc`]).
pub const IOMMU_IOAS_ALLOC: u32 = io(IOMMUFD_TYPE, 0x81);
/// `IOMMU_IOAS_ALLOW_IOVAS` ([`IommuIoasAllowIovas`]).
pub const IOMMU_IOAS_ALLOW_IOVAS: u32 = io(IOMMUFD_TYPE, 0x82);
/// `IOMMU_IOAS_COPY` ([`IommuIoasCopy`]).
pub const IOMMU_IOAS_COPY: u32 = io(IOMMUFD_TYPE, 0x83);
/// `IOMMU_IOAS_IOVA_RANGES` ([`IommuIoasIovaRanges`]).
pub const IOMMU_IOAS_IOVA_RANGES: u32 = io(IOMMUFD_TYPE, 0x84);
/// `IOMMU_IOAS_MAP` ([`IommuIoasMap`]).
pub const IOMMU_IOAS_MAP: u32 = io(IOMMUFD_TYPE, 0x85);
/// `IOMMU_IOAS_UNMAP` ([`IommuIoasUnmap`]).
pub const IOMMU_IOAS_UNMAP: u32 = io(IOMMUFD_TYPE, 0x86);
/// `IOMMU_HWPT_ALLOC` ([`IommuHwptAlloc`]).
pub const IOMMU_HWPT_ALLOC: u32 = io(IOMMUFD_TYPE, 0x89);
/// `IOMMU_GET_HW_INFO` ([`IommuHwInfo`]).
pub const IOMMU_GET_HW_INFO: u32 = io(IOMMUFD_TYPE, 0x8a);
/// `IOMMU_HWPT_INVALIDATE` ([`IommuHwptInvalidate`]).
pub const IOMMU_HWPT_INVALIDATE: u32 = io(IOMMUFD_TYPE, 0x8d);
/// `IOMMU_FAULT_QUEUE_ALLOC` ([`IommuFaultAlloc`]).
pub const IOMMU_FAULT_QUEUE_ALLOC: u32 = io(IOMMUFD_TYPE, 0x8e);

/// Reads an iommufd ioctl argument the way Linux `iommufd_fops_ioctl` (`main.c`) does, with
/// `copy_struct_from_user` semantics: the leading `u32 size` is read (fewer than 4 bytes in
/// `buf` → `EFAULT`); `size < minsz` → `EINVAL`; a `size` beyond `size_of::<T>()` (a newer,
/// larger struct) is accepted only if every byte past the known struct is zero (`E2BIG`
/// otherwise, `EFAULT` when those bytes are not in `buf`); then `min(size, size_of::<T>())`
/// bytes are copied into a zeroed `T` (`EFAULT` when not in `buf`). Returns the struct and
/// the caller's `size`, which bounds what an answer writes back ([`write_iommufd_arg`]).
///
/// # Errors
///
/// `EFAULT`, `EINVAL` or `E2BIG` as above, naming `what`; nothing is read then.
pub fn read_iommufd_arg<T>(buf: &[u8], minsz: usize, what: &str) -> Result<(T, u32), UapiError>
where
    T: FromBytes + IntoBytes,
{
    debug_assert!((4..=size_of::<T>()).contains(&minsz));
    if buf.len() < 4 {
        return Err(UapiError::fault(format!(
            "the buffer holds {} bytes, fewer than the 4 bytes of the size of {what}",
            buf.len()
        )));
    }
    let size = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let usize_ = usize::try_from(size).unwrap_or(usize::MAX);
    if usize_ < minsz {
        return Err(UapiError::invalid(format!(
            "size {size} is smaller than the {minsz} bytes {what} needs"
        )));
    }
    let known = size_of::<T>();
    if usize_ > known {
        let Some(tail) = buf.get(known..usize_) else {
            return Err(UapiError::fault(format!(
                "size {size} of {what} reaches past the {} bytes of the buffer",
                buf.len()
            )));
        };
        if let Some(at) = tail.iter().position(|&b| b != 0) {
            return Err(UapiError::new(
                Errno::E2BIG,
                format!(
                    "{what} byte {} (past the {known} bytes known here) is {:#x}, not zero",
                    known + at,
                    tail[at]
                ),
            ));
        }
    }
    let copy = usize_.min(known);
    let Some(src) = buf.get(..copy) else {
        return Err(UapiError::fault(format!(
            "size {size} covers {copy} bytes of {what}, but the buffer holds {}",
            buf.len()
        )));
    };
    let mut value = T::new_zeroed();
    value.as_mut_bytes()[..copy].copy_from_slice(src);
    Ok((value, size))
}

/// Writes an answer back the way `iommufd_ucmd_respond` does: the first `min(size,
/// size_of::<T>())` bytes of `value` over the start of `buf`.
///
/// # Errors
///
/// `EFAULT` when `buf` is shorter than that; nothing is written then.
pub fn write_iommufd_arg<T: IntoBytes + Immutable>(
    buf: &mut [u8],
    size: u32,
    value: &T,
) -> Result<(), UapiError> {
    let bytes = value.as_bytes();
    let n = usize::try_from(size).unwrap_or(usize::MAX).min(bytes.len());
    let len = buf.len();
    let dst = buf.get_mut(..n).ok_or_else(|| {
        UapiError::fault(format!(
            "the answer needs {n} bytes, the buffer holds {len}"
        ))
    })?;
    dst.copy_from_slice(&bytes[..n]);
    Ok(())
}

/// Declares `#[repr(C)]` uAPI structs with the crate's usual derives.
macro_rules! uapi_structs {
    ($($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)+ })+) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[derive(
                Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout,
                Immutable,
            )]
            pub struct $name { $($(#[$fm])* pub $f: $t,)+ }
        )+
    };
}

uapi_structs! {
    /// `iommu_destroy` (8 bytes): destroy the object `id`.
    pub struct IommuDestroy {
        /// `sizeof(struct iommu_destroy)`.
        pub size: u32,
        /// Any destroyable object.
        pub id: u32,
    }
    /// `iommu_ioas_alloc` (12 bytes).
    pub struct IommuIoasAlloc {
        /// `sizeof(struct iommu_ioas_alloc)`.
        pub size: u32,
        /// Must be 0.
        pub flags: u32,
        /// Out: the new IOAS.
        pub out_ioas_id: u32,
    }
    /// `iommu_iova_range` (16 bytes): an inclusive IOVA interval.
    pub struct IommuIovaRange {
        /// First IOVA.
        pub start: u64,
        /// Last IOVA (inclusive).
        pub last: u64,
    }
    /// `iommu_ioas_iova_ranges` (32 bytes).
    pub struct IommuIoasIovaRanges {
        /// `sizeof(struct iommu_ioas_iova_ranges)`.
        pub size: u32,
        /// The IOAS.
        pub ioas_id: u32,
        /// In: room in `allowed_iovas`; out: how many ranges there are.
        pub num_iovas: u32,
        /// Linux `__reserved`; must be zero.
        pub reserved: u32,
        /// Where the [`IommuIovaRange`] array goes (see the crate's pointer model).
        pub allowed_iovas: u64,
        /// Out: the alignment every mapped IOVA and length needs.
        pub out_iova_alignment: u64,
    }
    /// `iommu_ioas_allow_iovas` (24 bytes).
    pub struct IommuIoasAllowIovas {
        /// `sizeof(struct iommu_ioas_allow_iovas)`.
        pub size: u32,
        /// The IOAS.
        pub ioas_id: u32,
        /// How many ranges `allowed_iovas` holds.
        pub num_iovas: u32,
        /// Linux `__reserved`; must be zero.
        pub reserved: u32,
        /// Where the [`IommuIovaRange`] array is.
        pub allowed_iovas: u64,
    }
    /// `iommu_ioas_map` (40 bytes).
    pub struct IommuIoasMap {
        /// `sizeof(struct iommu_ioas_map)`.
        pub size: u32,
        /// `IOMMU_IOAS_MAP_*` bits.
        pub flags: u32,
        /// The IOAS.
        pub ioas_id: u32,
        /// Linux `__reserved`; must be zero.
        pub reserved: u32,
        /// The memory to map (in vsva: a host-physical address of the IOMMU's memory).
        pub user_va: u64,
        /// Bytes to map.
        pub length: u64,
        /// In with `FIXED_IOVA`, else out: where the mapping is.
        pub iova: u64,
    }
    /// `iommu_ioas_copy` (40 bytes).
    pub struct IommuIoasCopy {
        /// `sizeof(struct iommu_ioas_copy)`.
        pub size: u32,
        /// `IOMMU_IOAS_MAP_*` bits.
        pub flags: u32,
        /// The IOAS to map into.
        pub dst_ioas_id: u32,
        /// The IOAS to copy from.
        pub src_ioas_id: u32,
        /// Bytes to copy.
        pub length: u64,
        /// In with `FIXED_IOVA`, else out: where the copy is mapped.
        pub dst_iova: u64,
        /// Where the mapped range starts in the source IOAS.
        pub src_iova: u64,
    }
    /// `iommu_ioas_unmap` (24 bytes).
    pub struct IommuIoasUnmap {
        /// `sizeof(struct iommu_ioas_unmap)`.
        pub size: u32,
        /// The IOAS.
        pub ioas_id: u32,
        /// First IOVA; 0 with `length == u64::MAX` unmaps everything.
        pub iova: u64,
        /// In: bytes to unmap; out: bytes unmapped.
        pub length: u64,
    }
    /// `iommu_hwpt_alloc` (48 bytes).
    pub struct IommuHwptAlloc {
        /// `sizeof(struct iommu_hwpt_alloc)`.
        pub size: u32,
        /// `IOMMU_HWPT_ALLOC_*` / `IOMMU_HWPT_FAULT_ID_VALID` bits.
        pub flags: u32,
        /// The device the HWPT is for.
        pub dev_id: u32,
        /// An IOAS (paging HWPT) or a nest-parent paging HWPT (nested HWPT).
        pub pt_id: u32,
        /// Out: the new HWPT.
        pub out_hwpt_id: u32,
        /// Linux `__reserved`; must be zero.
        pub reserved: u32,
        /// `IOMMU_HWPT_DATA_*`.
        pub data_type: u32,
        /// Bytes at `data_uptr`.
        pub data_len: u32,
        /// Where the driver data ([`IommuHwptVtdS1`]) is.
        pub data_uptr: u64,
        /// A fault queue, with `IOMMU_HWPT_FAULT_ID_VALID`.
        pub fault_id: u32,
        /// Linux `__reserved2`; must be zero.
        pub reserved2: u32,
    }
    /// `iommu_hw_info` (40 bytes).
    pub struct IommuHwInfo {
        /// `sizeof(struct iommu_hw_info)`.
        pub size: u32,
        /// `IOMMU_HW_INFO_FLAG_INPUT_TYPE` or 0.
        pub flags: u32,
        /// A device bound to the context.
        pub dev_id: u32,
        /// In: room at `data_uptr`; out: the bytes of data the IOMMU has.
        pub data_len: u32,
        /// Where the type-specific data ([`IommuHwInfoVtd`]) goes.
        pub data_uptr: u64,
        /// In (with `IOMMU_HW_INFO_FLAG_INPUT_TYPE`): the type wanted; out: the type given.
        pub out_data_type: u32,
        /// Out: the PASID width, 0 without PASID support.
        pub out_max_pasid_log2: u8,
        /// Linux `__reserved[3]`; must be zero.
        pub reserved: [u8; 3],
        /// Out: `IOMMU_HW_CAP_*` bits.
        pub out_capabilities: u64,
    }
    /// `iommu_hwpt_invalidate` (32 bytes).
    pub struct IommuHwptInvalidate {
        /// `sizeof(struct iommu_hwpt_invalidate)`.
        pub size: u32,
        /// A nested HWPT.
        pub hwpt_id: u32,
        /// Where the entry array is.
        pub data_uptr: u64,
        /// `IOMMU_HWPT_INVALIDATE_DATA_*`.
        pub data_type: u32,
        /// Bytes per entry.
        pub entry_len: u32,
        /// In: entries; out: entries handled.
        pub entry_num: u32,
        /// Linux `__reserved`; must be zero.
        pub reserved: u32,
    }
    /// `iommu_hwpt_pgfault` (40 bytes): one page request as read from a fault queue.
    pub struct IommuHwptPgfault {
        /// `IOMMU_PGFAULT_FLAGS_*` bits.
        pub flags: u32,
        /// The requesting device's id in the context.
        pub dev_id: u32,
        /// The PASID, valid with `IOMMU_PGFAULT_FLAGS_PASID_VALID`.
        pub pasid: u32,
        /// The page request group index.
        pub grpid: u32,
        /// `IOMMU_PGFAULT_PERM_*` bits.
        pub perm: u32,
        /// Linux `__reserved`; zero.
        pub reserved: u32,
        /// The faulting address.
        pub addr: u64,
        /// A length hint; 0 here.
        pub length: u32,
        /// The group's cookie, echoed in the response.
        pub cookie: u32,
    }
    /// `iommu_hwpt_page_response` (8 bytes): the answer to a fault group.
    pub struct IommuHwptPageResponse {
        /// The cookie of the group's faults.
        pub cookie: u32,
        /// `IOMMUFD_PAGE_RESP_*`.
        pub code: u32,
    }
    /// `iommu_fault_alloc` (16 bytes).
    pub struct IommuFaultAlloc {
        /// `sizeof(struct iommu_fault_alloc)`.
        pub size: u32,
        /// Must be 0.
        pub flags: u32,
        /// Out: the new fault queue.
        pub out_fault_id: u32,
        /// Out: its file descriptor (in vsva: the fault queue's id again).
        pub out_fault_fd: u32,
    }
    /// `vfio_device_bind_iommufd` (16 bytes).
    pub struct VfioDeviceBindIommufd {
        /// Size of this struct as the caller knows it.
        pub argsz: u32,
        /// Must be 0.
        pub flags: u32,
        /// The iommufd to bind to.
        pub iommufd: i32,
        /// Out: the device's id in that context.
        pub out_devid: u32,
    }
    /// `vfio_device_detach_iommufd_pt` (12 bytes).
    pub struct VfioDeviceDetachIommufdPt {
        /// Size of this struct as the caller knows it.
        pub argsz: u32,
        /// [`VFIO_DEVICE_DETACH_PASID`] or 0.
        pub flags: u32,
        /// The PASID, valid with [`VFIO_DEVICE_DETACH_PASID`].
        pub pasid: u32,
    }
}

/// `IOMMU_IOAS_MAP_FIXED_IOVA`: map at the given IOVA instead of choosing one.
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
/// `IOMMU_IOAS_MAP_WRITEABLE`: DMA may write.
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
/// `IOMMU_IOAS_MAP_READABLE`: DMA may read.
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;
/// Every defined map / copy flag.
pub const IOMMU_IOAS_MAP_FLAGS: u32 =
    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;

/// `IOMMU_HWPT_ALLOC_NEST_PARENT`: the paging HWPT may parent nested HWPTs.
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = 1 << 0;
/// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: dirty tracking enforced (not offered here).
pub const IOMMU_HWPT_ALLOC_DIRTY_TRACKING: u32 = 1 << 1;
/// `IOMMU_HWPT_FAULT_ID_VALID`: [`IommuHwptAlloc::fault_id`] names a fault queue.
pub const IOMMU_HWPT_FAULT_ID_VALID: u32 = 1 << 2;
/// `IOMMU_HWPT_ALLOC_PASID`: the HWPT may be attached to PASIDs.
pub const IOMMU_HWPT_ALLOC_PASID: u32 = 1 << 3;

/// `IOMMU_HW_INFO_FLAG_INPUT_TYPE`: [`IommuHwInfo::out_data_type`] carries the type wanted.
pub const IOMMU_HW_INFO_FLAG_INPUT_TYPE: u32 = 1 << 0;
/// `IOMMU_HW_INFO_TYPE_DEFAULT`: whatever the IOMMU reports.
pub const IOMMU_HW_INFO_TYPE_DEFAULT: u32 = 0;
/// `IOMMU_HW_CAP_PCI_PASID_EXEC`: PASID requests may ask for execute.
pub const IOMMU_HW_CAP_PCI_PASID_EXEC: u64 = 1 << 1;
/// `IOMMU_HW_CAP_PCI_PASID_PRIV`: PASID requests may be privileged.
pub const IOMMU_HW_CAP_PCI_PASID_PRIV: u64 = 1 << 2;

/// `IOMMU_PGFAULT_FLAGS_PASID_VALID`: [`IommuHwptPgfault::pasid`] is valid.
pub const IOMMU_PGFAULT_FLAGS_PASID_VALID: u32 = 1 << 0;
/// `IOMMU_PGFAULT_FLAGS_LAST_PAGE`: the last fault of its group.
pub const IOMMU_PGFAULT_FLAGS_LAST_PAGE: u32 = 1 << 1;
/// `IOMMU_PGFAULT_PERM_READ`.
pub const IOMMU_PGFAULT_PERM_READ: u32 = 1 << 0;
/// `IOMMU_PGFAULT_PERM_WRITE`.
pub const IOMMU_PGFAULT_PERM_WRITE: u32 = 1 << 1;
/// `IOMMU_PGFAULT_PERM_EXEC`.
pub const IOMMU_PGFAULT_PERM_EXEC: u32 = 1 << 2;
/// `IOMMU_PGFAULT_PERM_PRIV`.
pub const IOMMU_PGFAULT_PERM_PRIV: u32 = 1 << 3;
/// `IOMMUFD_PAGE_RESP_SUCCESS`: the fault is handled, retry.
pub const IOMMUFD_PAGE_RESP_SUCCESS: u32 = 0;
/// `IOMMUFD_PAGE_RESP_INVALID`: the fault cannot be handled, do not retry.
pub const IOMMUFD_PAGE_RESP_INVALID: u32 = 1;

/// `VFIO_DEVICE_BIND_IOMMUFD`: `_IO(';', 100 + 18)` on a device fd.
pub const VFIO_DEVICE_BIND_IOMMUFD: u32 = io(VFIO_TYPE, VFIO_BASE + 18);
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT`: `_IO(';', 100 + 20)` on a device fd.
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u32 = io(VFIO_TYPE, VFIO_BASE + 20);
/// `VFIO_DEVICE_DETACH_PASID`: [`VfioDeviceDetachIommufdPt::pasid`] is valid.
pub const VFIO_DEVICE_DETACH_PASID: u32 = 1 << 0;

/// `IOMMU_HWPT_DATA_NONE`: no driver-specific data (a plain paging domain).
pub const IOMMU_HWPT_DATA_NONE: u32 = 0;
/// `IOMMU_HWPT_DATA_VTD_S1`: the `IOMMU_HWPT_ALLOC` data is an [`IommuHwptVtdS1`].
pub const IOMMU_HWPT_DATA_VTD_S1: u32 = 1;

/// `IOMMU_VTD_S1_SRE`: supervisor requests allowed.
pub const IOMMU_VTD_S1_SRE: u64 = 1 << 0;
/// `IOMMU_VTD_S1_EAFE`: extended access flag enable.
pub const IOMMU_VTD_S1_EAFE: u64 = 1 << 1;
/// `IOMMU_VTD_S1_WPE`: write protect enable.
pub const IOMMU_VTD_S1_WPE: u64 = 1 << 2;
/// Every defined [`IommuHwptVtdS1::flags`] bit.
pub const IOMMU_VTD_S1_FLAGS_MASK: u64 = IOMMU_VTD_S1_SRE | IOMMU_VTD_S1_EAFE | IOMMU_VTD_S1_WPE;

/// `iommu_hwpt_vtd_s1`: the VT-d stage-1 page table of a nested HWPT (24 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IommuHwptVtdS1 {
    /// `IOMMU_VTD_S1_*` bits.
    pub flags: u64,
    /// Guest-physical address of the stage-1 root table.
    pub pgtbl_addr: u64,
    /// Stage-1 input address width (48 or 57).
    pub addr_width: u32,
    /// Linux `__reserved`; must be zero.
    pub reserved: u32,
}

impl IommuHwptVtdS1 {
    /// Applies iommufd's general rules: unknown `flags` bits or a non-zero `reserved` field →
    /// `EOPNOTSUPP`, checked in that order. The address width is left to the IOMMU model, which
    /// knows what it supports.
    pub fn validate(&self) -> Result<(), UapiError> {
        if self.flags & !IOMMU_VTD_S1_FLAGS_MASK != 0 {
            return Err(UapiError::new(
                Errno::EOPNOTSUPP,
                format!(
                    "iommu_hwpt_vtd_s1 flags {:#x}: bits {:#x} are not defined (known: {:#x})",
                    self.flags,
                    self.flags & !IOMMU_VTD_S1_FLAGS_MASK,
                    IOMMU_VTD_S1_FLAGS_MASK
                ),
            ));
        }
        if self.reserved != 0 {
            return Err(UapiError::new(
                Errno::EOPNOTSUPP,
                format!(
                    "iommu_hwpt_vtd_s1 __reserved {:#x} must be zero",
                    self.reserved
                ),
            ));
        }
        Ok(())
    }
}

/// `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`: the `IOMMU_HWPT_INVALIDATE` array holds
/// [`IommuHwptVtdS1Invalidate`] entries.
pub const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: u32 = 0;
/// `IOMMU_VTD_INV_FLAGS_LEAF`: only leaf entries changed.
pub const IOMMU_VTD_INV_FLAGS_LEAF: u32 = 1 << 0;
/// The page size [`IommuHwptVtdS1Invalidate::addr`] must be aligned to (4 KiB).
pub const IOMMU_VTD_INV_PAGE_SIZE: u64 = 4096;

/// `iommu_hwpt_vtd_s1_invalidate`: one VT-d stage-1 invalidation request (24 bytes).
///
/// `addr == 0` with `npages == u64::MAX` means "everything".
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IommuHwptVtdS1Invalidate {
    /// First address, 4 KiB aligned.
    pub addr: u64,
    /// Number of 4 KiB pages.
    pub npages: u64,
    /// `IOMMU_VTD_INV_FLAGS_*` bits.
    pub flags: u32,
    /// Linux `__reserved`; must be zero.
    pub reserved: u32,
}

impl IommuHwptVtdS1Invalidate {
    /// Checks one entry, in this order: unknown `flags` bits → `EOPNOTSUPP`; non-zero
    /// `reserved` → `EOPNOTSUPP`; `addr` not 4 KiB aligned → `EINVAL`; `npages == u64::MAX`
    /// with a non-zero `addr` (only "all" may use that count) → `EINVAL`.
    ///
    /// An invalidation array is checked entry by entry on its caller's hot path, so the
    /// passing case is inlined and the error is built out of line.
    #[inline]
    pub fn validate(&self) -> Result<(), UapiError> {
        let passes = self.flags & !IOMMU_VTD_INV_FLAGS_LEAF == 0
            && self.reserved == 0
            && self.addr.is_multiple_of(IOMMU_VTD_INV_PAGE_SIZE)
            && !(self.npages == u64::MAX && self.addr != 0);
        if passes {
            Ok(())
        } else {
            self.refusal()
        }
    }

    /// The error [`Self::validate`] returns, from the first check that fails.
    #[cold]
    #[inline(never)]
    fn refusal(&self) -> Result<(), UapiError> {
        if self.flags & !IOMMU_VTD_INV_FLAGS_LEAF != 0 {
            return Err(UapiError::new(
                Errno::EOPNOTSUPP,
                format!(
                    "iommu_hwpt_vtd_s1_invalidate flags {:#x}: only LEAF ({:#x}) is defined",
                    self.flags, IOMMU_VTD_INV_FLAGS_LEAF
                ),
            ));
        }
        if self.reserved != 0 {
            return Err(UapiError::new(
                Errno::EOPNOTSUPP,
                format!(
                    "iommu_hwpt_vtd_s1_invalidate __reserved {:#x} must be zero",
                    self.reserved
                ),
            ));
        }
        if !self.addr.is_multiple_of(IOMMU_VTD_INV_PAGE_SIZE) {
            return Err(UapiError::invalid(format!(
                "iommu_hwpt_vtd_s1_invalidate addr {:#x} is not 4 KiB aligned",
                self.addr
            )));
        }
        if self.npages == u64::MAX && self.addr != 0 {
            return Err(UapiError::invalid(format!(
                "iommu_hwpt_vtd_s1_invalidate npages u64::MAX (all) needs addr 0, not {:#x}",
                self.addr
            )));
        }
        Ok(())
    }

    /// Whether this entry asks for everything to be invalidated.
    #[inline]
    pub fn is_all(&self) -> bool {
        self.addr == 0 && self.npages == u64::MAX
    }
}

/// `IOMMU_HW_INFO_TYPE_INTEL_VTD`: `IOMMU_GET_HW_INFO` data is an [`IommuHwInfoVtd`].
pub const IOMMU_HW_INFO_TYPE_INTEL_VTD: u32 = 1;
/// `IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17`: the stage-2 read-only erratum applies.
pub const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: u32 = 1 << 0;

/// `iommu_hw_info_vtd`: VT-d hardware information (24 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IommuHwInfoVtd {
    /// `IOMMU_HW_INFO_VTD_*` bits.
    pub flags: u32,
    /// Linux `__reserved`; zero.
    pub reserved: u32,
    /// The VT-d capability register.
    pub cap_reg: u64,
    /// The VT-d extended capability register.
    pub ecap_reg: u64,
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: `_IO(';', 100 + 19)` on a *device* fd. It shares its number
/// with the series' container ioctl `VFIO_IOMMU_NESTING_OP`; the fd kind tells them apart.
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u32 = io(VFIO_TYPE, VFIO_BASE + 19);
/// `VFIO_DEVICE_ATTACH_PASID`: [`VfioDeviceAttachIommufdPt::pasid`] is valid.
pub const VFIO_DEVICE_ATTACH_PASID: u32 = 1 << 0;

/// `vfio_device_attach_iommufd_pt`: attach a device (or one of its PASIDs) to an IOAS or HWPT
/// (16 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct VfioDeviceAttachIommufdPt {
    /// Size of this struct as the caller knows it.
    pub argsz: u32,
    /// [`VFIO_DEVICE_ATTACH_PASID`] or 0.
    pub flags: u32,
    /// The IOAS or HWPT id; the kernel writes back the HWPT actually attached.
    pub pt_id: u32,
    /// The PASID, valid with [`VFIO_DEVICE_ATTACH_PASID`].
    pub pasid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(size_of::<IommuHwptVtdS1>(), 24);
        assert_eq!(size_of::<IommuHwptVtdS1Invalidate>(), 24);
        assert_eq!(size_of::<IommuHwInfoVtd>(), 24);
        assert_eq!(size_of::<VfioDeviceAttachIommufdPt>(), 16);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
        assert_eq!(IOMMU_DESTROY, 0x3b80);
        assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
        assert_eq!(IOMMU_FAULT_QUEUE_ALLOC, 0x3b8e);
    }

    fn arg(size: u32, len: usize, fill: u8) -> Vec<u8> {
        let mut buf = vec![fill; len];
        buf[..4].copy_from_slice(&size.to_le_bytes());
        buf
    }

    #[test]
    fn copy_struct_from_user_semantics() {
        let read = |buf: &[u8]| read_iommufd_arg::<IommuIoasAlloc>(buf, 12, "iommu_ioas_alloc");
        assert_eq!(read(&[1, 0]).unwrap_err().errno(), Errno::EFAULT);
        assert_eq!(read(&arg(8, 12, 0)).unwrap_err().errno(), Errno::EINVAL);
        // A larger struct with a zero tail is accepted; a non-zero tail is E2BIG.
        let mut big = arg(16, 16, 0);
        big[4] = 0;
        assert_eq!(read(&big).unwrap().1, 16);
        big[13] = 1;
        assert_eq!(read(&big).unwrap_err().errno(), Errno::E2BIG);
        // The tail must be readable.
        assert_eq!(read(&arg(64, 16, 0)).unwrap_err().errno(), Errno::EFAULT);
        // The known struct must be in the buffer.
        assert_eq!(read(&arg(12, 10, 0)).unwrap_err().errno(), Errno::EFAULT);
        let (v, size) = read(&arg(12, 12, 7)).unwrap();
        assert_eq!(
            (v.flags, v.out_ioas_id, size),
            (0x0707_0707, 0x0707_0707, 12)
        );
    }

    #[test]
    fn answers_write_back_at_most_size_bytes() {
        let mut buf = vec![0xffu8; 16];
        let v = IommuIoasAlloc {
            size: 8,
            flags: 0,
            out_ioas_id: 3,
        };
        write_iommufd_arg(&mut buf, 8, &v).unwrap();
        assert_eq!(
            &buf[..12],
            &[8, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        write_iommufd_arg(&mut buf, 64, &v).unwrap();
        assert_eq!(buf[8], 3);
        assert_eq!(
            write_iommufd_arg(&mut buf[..4], 12, &v)
                .unwrap_err()
                .errno(),
            Errno::EFAULT
        );
    }

    #[test]
    fn hwpt_vtd_s1_rules() {
        let ok = IommuHwptVtdS1 {
            flags: IOMMU_VTD_S1_SRE | IOMMU_VTD_S1_WPE,
            pgtbl_addr: 0x1000,
            addr_width: 48,
            reserved: 0,
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad_flags = IommuHwptVtdS1 {
            flags: 1 << 3,
            ..ok
        };
        assert_eq!(bad_flags.validate().unwrap_err().errno(), Errno::EOPNOTSUPP);
        let bad_reserved = IommuHwptVtdS1 { reserved: 1, ..ok };
        assert_eq!(
            bad_reserved.validate().unwrap_err().errno(),
            Errno::EOPNOTSUPP
        );
    }

    #[test]
    fn vtd_s1_invalidate_rules() {
        let all = IommuHwptVtdS1Invalidate {
            addr: 0,
            npages: u64::MAX,
            flags: 0,
            reserved: 0,
        };
        assert!(all.is_all());
        assert_eq!(all.validate(), Ok(()));
        let leaf = IommuHwptVtdS1Invalidate {
            addr: 0x20_0000,
            npages: 4,
            flags: IOMMU_VTD_INV_FLAGS_LEAF,
            reserved: 0,
        };
        assert!(!leaf.is_all());
        assert_eq!(leaf.validate(), Ok(()));
        let cases = [
            (
                IommuHwptVtdS1Invalidate { flags: 2, ..leaf },
                Errno::EOPNOTSUPP,
            ),
            (
                IommuHwptVtdS1Invalidate {
                    reserved: 1,
                    ..leaf
                },
                Errno::EOPNOTSUPP,
            ),
            (
                IommuHwptVtdS1Invalidate {
                    addr: 0x20_0800,
                    ..leaf
                },
                Errno::EINVAL,
            ),
            (
                IommuHwptVtdS1Invalidate {
                    npages: u64::MAX,
                    ..leaf
                },
                Errno::EINVAL,
            ),
        ];
        for (entry, errno) in cases {
            assert_eq!(entry.validate().unwrap_err().errno(), errno, "{entry:?}");
        }
    }
}
