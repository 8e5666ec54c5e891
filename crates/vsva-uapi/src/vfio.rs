//! VFIO container uAPI: ioctl numbers, IOMMU types and the `#[repr(C)]` argument structs of
//! Linux `include/uapi/linux/vfio.h`, plus the two container ioctls the vSVA series adds
//! (`VFIO_IOMMU_PASID_REQUEST`, `VFIO_IOMMU_NESTING_OP`) and its nesting capability id.
//!
//! Every struct here is byte-identical to its C counterpart on a little-endian 64-bit target;
//! `tests/layout.rs` pins each size and field offset.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ioctl::io;
use crate::iommu::{NestingInfo, NestingInfoVtd};

/// The ioctl "magic" of every VFIO ioctl (`VFIO_TYPE`, the character `';'`).
pub const VFIO_TYPE: u8 = b';';
/// The first VFIO ioctl number (`VFIO_BASE`).
pub const VFIO_BASE: u8 = 100;

/// `VFIO_GET_API_VERSION`: `_IO(';', 100 + 0)`, returns [`VFIO_API_VERSION`].
pub const VFIO_GET_API_VERSION: u32 = io(VFIO_TYPE, VFIO_BASE);
/// `VFIO_CHECK_EXTENSION`: `_IO(';', 100 + 1)`, asks whether an IOMMU type is supported.
pub const VFIO_CHECK_EXTENSION: u32 = io(VFIO_TYPE, VFIO_BASE + 1);
/// `VFIO_SET_IOMMU`: `_IO(';', 100 + 2)`, selects the container's IOMMU type.
pub const VFIO_SET_IOMMU: u32 = io(VFIO_TYPE, VFIO_BASE + 2);
/// `VFIO_IOMMU_GET_INFO`: `_IO(';', 100 + 12)`, argument [`Type1Info`] plus a capability chain.
pub const VFIO_IOMMU_GET_INFO: u32 = io(VFIO_TYPE, VFIO_BASE + 12);
/// `VFIO_IOMMU_MAP_DMA`: `_IO(';', 100 + 13)`, argument [`DmaMap`].
pub const VFIO_IOMMU_MAP_DMA: u32 = io(VFIO_TYPE, VFIO_BASE + 13);
/// `VFIO_IOMMU_UNMAP_DMA`: `_IO(';', 100 + 14)`, argument [`DmaUnmap`].
pub const VFIO_IOMMU_UNMAP_DMA: u32 = io(VFIO_TYPE, VFIO_BASE + 14);
/// `VFIO_IOMMU_PASID_REQUEST`: `_IO(';', 100 + 18)`, argument [`PasidRequest`].
pub const VFIO_IOMMU_PASID_REQUEST: u32 = io(VFIO_TYPE, VFIO_BASE + 18);
/// `VFIO_IOMMU_NESTING_OP`: `_IO(';', 100 + 19)`, argument [`NestingOpHeader`] plus payload.
pub const VFIO_IOMMU_NESTING_OP: u32 = io(VFIO_TYPE, VFIO_BASE + 19);

/// The VFIO API version `VFIO_GET_API_VERSION` reports (`VFIO_API_VERSION`).
pub const VFIO_API_VERSION: u32 = 0;

/// IOMMU type `VFIO_TYPE1_IOMMU` (1) for `VFIO_SET_IOMMU`.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
/// IOMMU type `VFIO_TYPE1v2_IOMMU` (3) for `VFIO_SET_IOMMU`; the name keeps Linux's spelling.
#[allow(non_upper_case_globals)]
pub const VFIO_TYPE1v2_IOMMU: u32 = 3;
/// IOMMU type `VFIO_TYPE1_NESTING_IOMMU` (6): type1v2 semantics with a nested (dual-stage)
/// IOMMU, required for PASID_REQUEST and NESTING_OP.
pub const VFIO_TYPE1_NESTING_IOMMU: u32 = 6;

/// `vfio_info_cap_header`: one link of a `*_GET_INFO` capability chain (8 bytes).
///
/// `next` is the offset of the following capability from the start of the info struct, 0 at
/// the end of the chain.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InfoCapHeader {
    /// Capability id, e.g. [`VFIO_IOMMU_TYPE1_INFO_CAP_NESTING`].
    pub id: u16,
    /// Version of the capability's layout.
    pub version: u16,
    /// Offset of the next capability, or 0.
    pub next: u32,
}

/// `vfio_iommu_type1_info_cap_nesting` with its VT-d vendor data: the whole
/// `VFIO_IOMMU_TYPE1_INFO_CAP_NESTING` capability as it sits in the chain (56 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InfoCapNesting {
    /// `id` = [`VFIO_IOMMU_TYPE1_INFO_CAP_NESTING`], `version` =
    /// [`VFIO_IOMMU_TYPE1_INFO_CAP_NESTING_VERSION`].
    pub header: InfoCapHeader,
    /// The nesting info; its `size` counts itself and `vtd` (48).
    pub info: NestingInfo,
    /// The info's VT-d vendor data.
    pub vtd: NestingInfoVtd,
}

/// `VFIO_IOMMU_INFO_PGSIZES`: [`Type1Info::iova_pgsizes`] is valid.
pub const VFIO_IOMMU_INFO_PGSIZES: u32 = 1 << 0;
/// `VFIO_IOMMU_INFO_CAPS`: [`Type1Info::cap_offset`] points at a capability chain.
pub const VFIO_IOMMU_INFO_CAPS: u32 = 1 << 1;

/// Capability id `VFIO_IOMMU_TYPE1_INFO_CAP_NESTING` (3) in the `VFIO_IOMMU_GET_INFO` chain:
/// an [`InfoCapHeader`] followed by [`NestingInfo`] and its vendor data ([`InfoCapNesting`]).
///
/// This is the vSVA series' id. Mainline Linux later gave id 3 to
/// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`; this crate follows the series.
pub const VFIO_IOMMU_TYPE1_INFO_CAP_NESTING: u16 = 3;
/// Version 1 of the nesting capability's layout, the only one defined.
pub const VFIO_IOMMU_TYPE1_INFO_CAP_NESTING_VERSION: u16 = 1;

/// Capability id `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE` (1): [`InfoCapIovaRange`] followed by
/// `nr_iovas` [`IovaRange`]s.
pub const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: u16 = 1;
/// Capability id `VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION` (2): [`InfoCapMigration`].
pub const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: u16 = 2;
/// Version 1 of the IOVA-range and migration capabilities, the only one (Linux 5.8).
pub const VFIO_IOMMU_TYPE1_INFO_CAP_VERSION: u16 = 1;
/// `DIRTY_BITMAP_SIZE_MAX` of Linux 5.8 `vfio_iommu_type1.c`: the largest dirty bitmap in
/// bytes, for `INT_MAX` pages (`ALIGN(INT_MAX, 64) / 8`).
pub const VFIO_DIRTY_BITMAP_SIZE_MAX: u64 = (i32::MAX as u64).next_multiple_of(64) / 8;

/// `vfio_iommu_type1_info_cap_iova_range` without its flexible `iova_ranges[]` (16 bytes):
/// the IOVA ranges a container can map, each an [`IovaRange`] following this struct.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InfoCapIovaRange {
    /// `id` = [`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`], `version` = 1.
    pub header: InfoCapHeader,
    /// How many [`IovaRange`]s follow.
    pub nr_iovas: u32,
    /// Zero.
    pub reserved: u32,
}

/// `vfio_iova_range`: one mappable IOVA range, both ends inclusive (16 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IovaRange {
    /// First mappable IOVA.
    pub start: u64,
    /// Last mappable IOVA.
    pub end: u64,
}

/// `vfio_iommu_type1_info_cap_migration` (32 bytes): what dirty-page tracking the container
/// offers.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InfoCapMigration {
    /// `id` = [`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`], `version` = 1.
    pub header: InfoCapHeader,
    /// Zero.
    pub flags: u32,
    /// Padding (implicit in the C struct), zero.
    pub pad: u32,
    /// The dirty-tracking page size: the smallest IOVA page size.
    pub pgsize_bitmap: u64,
    /// The largest dirty bitmap, in bytes.
    pub max_dirty_bitmap_size: u64,
}

/// The IOVA page sizes `VFIO_IOMMU_GET_INFO` reports: every power of two from 4 KiB up, as the
/// VT-d driver reports (the stage-2 mapper splits into 4 KiB, 2 MiB and 1 GiB pages itself).
pub const VFIO_IOMMU_INFO_PGSIZES_ALL: u64 = !0xfff;

/// `VFIO_UNMAP_ALL`: the `VFIO_CHECK_EXTENSION` value for `VFIO_DMA_UNMAP_FLAG_ALL` support.
pub const VFIO_UNMAP_ALL: u64 = 9;

/// Capability id of the vsva extension in the `VFIO_IOMMU_GET_INFO` chain that reports the
/// process's PASID quota: [`InfoCapPasidQuota`]. The id is outside the range Linux assigns to
/// type1 capabilities (1–3), so clients that do not know it skip it.
pub const VSVA_INFO_CAP_PASID_QUOTA: u16 = 0xff00;
/// Version 1 of [`InfoCapPasidQuota`], the only one.
pub const VSVA_INFO_CAP_PASID_QUOTA_VERSION: u16 = 1;

/// The vsva PASID quota capability (16 bytes): how many PASIDs the calling process may own
/// at once, and how many it owns, across all its containers. Follows the nesting capability
/// in the chain of a container with a PASID context.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InfoCapPasidQuota {
    /// `id` = [`VSVA_INFO_CAP_PASID_QUOTA`], `version` = 1, `next` = 0 (it is last).
    pub header: InfoCapHeader,
    /// The process's quota.
    pub quota: u32,
    /// PASIDs the process owns now.
    pub owned: u32,
}

impl InfoCapPasidQuota {
    /// The capability for `quota` and `owned`, last in its chain.
    pub fn new(quota: u32, owned: u32) -> Self {
        InfoCapPasidQuota {
            header: InfoCapHeader {
                id: VSVA_INFO_CAP_PASID_QUOTA,
                version: VSVA_INFO_CAP_PASID_QUOTA_VERSION,
                next: 0,
            },
            quota,
            owned,
        }
    }
}

/// `vfio_iommu_type1_info`: argument of `VFIO_IOMMU_GET_INFO` (24 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Type1Info {
    /// Size of the caller's buffer; the kernel reports the size it needs if larger.
    pub argsz: u32,
    /// `VFIO_IOMMU_INFO_*` bits.
    pub flags: u32,
    /// Bitmap of supported IOVA page sizes.
    pub iova_pgsizes: u64,
    /// Offset of the first [`InfoCapHeader`] from the start of this struct, or 0.
    pub cap_offset: u32,
    /// Padding, zero.
    pub pad: u32,
}

/// `VFIO_DMA_MAP_FLAG_READ`: the device may read the mapping.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_WRITE`: the device may write the mapping.
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;
/// `VFIO_DMA_MAP_FLAG_VADDR`: update the virtual address of an existing mapping.
pub const VFIO_DMA_MAP_FLAG_VADDR: u32 = 1 << 2;

/// `vfio_iommu_type1_dma_map`: argument of `VFIO_IOMMU_MAP_DMA` (32 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DmaMap {
    /// Size of this struct as the caller knows it.
    pub argsz: u32,
    /// `VFIO_DMA_MAP_FLAG_*` bits.
    pub flags: u32,
    /// Process virtual address of the memory to map.
    pub vaddr: u64,
    /// I/O virtual address to map it at.
    pub iova: u64,
    /// Length of the mapping in bytes.
    pub size: u64,
}

/// `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: a dirty bitmap follows the struct.
pub const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
/// `VFIO_DMA_UNMAP_FLAG_ALL`: unmap everything (`iova` and `size` must be 0).
pub const VFIO_DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
/// `VFIO_DMA_UNMAP_FLAG_VADDR`: invalidate the virtual address only, keep the mapping.
pub const VFIO_DMA_UNMAP_FLAG_VADDR: u32 = 1 << 2;

/// `vfio_iommu_type1_dma_unmap`: argument of `VFIO_IOMMU_UNMAP_DMA` (24 bytes, optional data
/// follows).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DmaUnmap {
    /// Size of this struct (and any trailing data) as the caller knows it.
    pub argsz: u32,
    /// `VFIO_DMA_UNMAP_FLAG_*` bits.
    pub flags: u32,
    /// First I/O virtual address to unmap.
    pub iova: u64,
    /// Length to unmap in bytes; the kernel writes back how much it unmapped.
    pub size: u64,
}

/// `VFIO_IOMMU_FLAG_ALLOC_PASID`: allocate one PASID within the range.
pub const VFIO_IOMMU_FLAG_ALLOC_PASID: u32 = 1 << 0;
/// `VFIO_IOMMU_FLAG_FREE_PASID`: free the caller's PASIDs within the range.
pub const VFIO_IOMMU_FLAG_FREE_PASID: u32 = 1 << 1;
/// `VFIO_PASID_REQUEST_MASK`: every defined PASID_REQUEST flag.
pub const VFIO_PASID_REQUEST_MASK: u32 = VFIO_IOMMU_FLAG_ALLOC_PASID | VFIO_IOMMU_FLAG_FREE_PASID;

/// The anonymous `range` member of `vfio_iommu_type1_pasid_request` (8 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct PasidRange {
    /// Lowest PASID of the range, inclusive.
    pub min: u32,
    /// Highest PASID of the range, inclusive.
    pub max: u32,
}

/// `vfio_iommu_type1_pasid_request`: argument of `VFIO_IOMMU_PASID_REQUEST` (16 bytes).
///
/// Decode and validate one with [`crate::decode_pasid_request`].
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct PasidRequest {
    /// Size of this struct as the caller knows it; at least 16.
    pub argsz: u32,
    /// Exactly one of [`VFIO_IOMMU_FLAG_ALLOC_PASID`] and [`VFIO_IOMMU_FLAG_FREE_PASID`].
    pub flags: u32,
    /// The inclusive PASID range the request applies to.
    pub range: PasidRange,
}

/// `VFIO_IOMMU_NESTING_OP_BIND_PGTBL`: bind a guest first-level page table to a PASID; payload
/// [`crate::GpasidBindData`].
pub const VFIO_IOMMU_NESTING_OP_BIND_PGTBL: u32 = 0;
/// `VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL`: undo a bind; payload [`crate::GpasidBindData`].
pub const VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL: u32 = 1;
/// `VFIO_IOMMU_NESTING_OP_CACHE_INVLD`: invalidate IOMMU caches; payload
/// [`crate::CacheInvalidateInfo`].
pub const VFIO_IOMMU_NESTING_OP_CACHE_INVLD: u32 = 2;
/// `VFIO_NESTING_OP_MASK`: the low 16 bits of [`NestingOpHeader::flags`] hold the op; every
/// higher bit must be zero.
pub const VFIO_NESTING_OP_MASK: u32 = 0xffff;

/// `vfio_iommu_type1_nesting_op` without its flexible `data[]` member (8 bytes); the payload
/// starts at offset 8.
///
/// Decode and validate one with [`crate::decode_nesting_op`].
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct NestingOpHeader {
    /// Size of the header plus the payload.
    pub argsz: u32,
    /// Op in bits 15:0 (`VFIO_IOMMU_NESTING_OP_*`), zero above.
    pub flags: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(VFIO_IOMMU_PASID_REQUEST, 0x3b76);
        assert_eq!(VFIO_IOMMU_NESTING_OP, 0x3b77);
    }

    #[test]
    fn sizes() {
        assert_eq!(size_of::<InfoCapHeader>(), 8);
        assert_eq!(size_of::<InfoCapNesting>(), 56);
        assert_eq!(size_of::<InfoCapIovaRange>(), 16);
        assert_eq!(size_of::<IovaRange>(), 16);
        assert_eq!(size_of::<InfoCapMigration>(), 32);
        assert_eq!(VFIO_DIRTY_BITMAP_SIZE_MAX, 256 << 20);
        assert_eq!(size_of::<Type1Info>(), 24);
        assert_eq!(size_of::<DmaMap>(), 32);
        assert_eq!(size_of::<DmaUnmap>(), 24);
        assert_eq!(size_of::<PasidRange>(), 8);
        assert_eq!(size_of::<PasidRequest>(), 16);
        assert_eq!(size_of::<NestingOpHeader>(), 8);
    }

    #[test]
    fn quota_capability_layout() {
        assert_eq!(size_of::<InfoCapPasidQuota>(), 16);
        let cap = InfoCapPasidQuota::new(1000, 3);
        assert_eq!(
            cap.as_bytes(),
            &[0x00, 0xff, 1, 0, 0, 0, 0, 0, 0xe8, 0x03, 0, 0, 3, 0, 0, 0]
        );
    }
}
