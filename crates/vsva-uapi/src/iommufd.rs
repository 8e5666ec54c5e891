//! The modern (iommufd) equivalents of the vSVA uAPI, for a later compatible front end.
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
    pub fn validate(&self) -> Result<(), UapiError> {
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
