//! IOMMU uAPI payloads of Linux 5.10–5.16 `include/uapi/linux/iommu.h` as used by the vSVA
//! series: the nesting info a container reports, the guest PASID bind data, and the cache
//! invalidation descriptor.
//!
//! Every struct is byte-identical to its C counterpart on a little-endian target;
//! `tests/layout.rs` pins each size and field offset. The C union `granu` is modelled without
//! `unsafe` as [`InvGranu`], an 8-byte-aligned 40-byte array with typed accessors.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::bitset::bitset;

/// `IOMMU_PASID_FORMAT_INTEL_VTD`: PASID table / bind data in Intel VT-d format (1).
pub const IOMMU_PASID_FORMAT_INTEL_VTD: u32 = 1;

/// `IOMMU_NESTING_FEAT_SYSWIDE_PASID`: PASIDs are allocated host-wide through
/// `VFIO_IOMMU_PASID_REQUEST`.
pub const IOMMU_NESTING_FEAT_SYSWIDE_PASID: u32 = 1 << 0;
/// `IOMMU_NESTING_FEAT_BIND_PGTBL`: guest page tables can be bound with NESTING_OP.
pub const IOMMU_NESTING_FEAT_BIND_PGTBL: u32 = 1 << 1;
/// `IOMMU_NESTING_FEAT_CACHE_INVLD`: guest cache invalidations can be passed with NESTING_OP.
pub const IOMMU_NESTING_FEAT_CACHE_INVLD: u32 = 1 << 2;

bitset! {
    /// The `features` of [`NestingInfo`] as a typed set (`IOMMU_NESTING_FEAT_*`).
    pub struct NestingFeatures: u32 {
        /// `IOMMU_NESTING_FEAT_SYSWIDE_PASID`.
        const SYSWIDE_PASID = IOMMU_NESTING_FEAT_SYSWIDE_PASID;
        /// `IOMMU_NESTING_FEAT_BIND_PGTBL`.
        const BIND_PGTBL = IOMMU_NESTING_FEAT_BIND_PGTBL;
        /// `IOMMU_NESTING_FEAT_CACHE_INVLD`.
        const CACHE_INVLD = IOMMU_NESTING_FEAT_CACHE_INVLD;
    }
}

/// `iommu_nesting_info` without its vendor data (24 bytes); reported through the
/// `VFIO_IOMMU_TYPE1_INFO_CAP_NESTING` capability and followed by [`NestingInfoVtd`].
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct NestingInfo {
    /// Total size including the vendor data (48 for VT-d).
    pub size: u32,
    /// PASID table / bind format, [`IOMMU_PASID_FORMAT_INTEL_VTD`].
    pub format: u32,
    /// `IOMMU_NESTING_FEAT_*` bits.
    pub features: u32,
    /// Zero.
    pub flags: u32,
    /// The domain's address width (`dmar_domain->gaw`: the smaller of the stage-2 AGAW width
    /// and CAP.MGAW), which bounds the guest-physical addresses of a first-level table.
    pub addr_width: u16,
    /// PASID width in bits; 0 means no PASID support.
    pub pasid_bits: u16,
    /// Padding, zero.
    pub padding: u32,
}

/// `iommu_nesting_info_vtd`: the VT-d vendor data of [`NestingInfo`] (24 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct NestingInfoVtd {
    /// Zero.
    pub flags: u32,
    /// Padding, zero.
    pub padding: u32,
    /// The VT-d capability register, masked with [`VTD_CAP_MASK`].
    pub cap_reg: u64,
    /// The VT-d extended capability register, masked with [`VTD_ECAP_MASK`].
    pub ecap_reg: u64,
}

/// `VTD_CAP_MASK`: the CAP bits the series' VT-d driver reports in [`NestingInfoVtd::cap_reg`]
/// (`intel_iommu_get_nesting_info`): FL1GP (bit 56) and FL5LP (bit 60).
pub const VTD_CAP_MASK: u64 = 1 << 56 | 1 << 60;
/// `VTD_ECAP_MASK`: the ECAP bits it reports in [`NestingInfoVtd::ecap_reg`]: PRS (29), ERS
/// (30), SRS (31), EAFS (34) and PASID (40).
pub const VTD_ECAP_MASK: u64 = 1 << 29 | 1 << 30 | 1 << 31 | 1 << 34 | 1 << 40;

/// `IOMMU_GPASID_BIND_VERSION_1`: the only defined [`GpasidBindData::version`].
pub const IOMMU_GPASID_BIND_VERSION_1: u32 = 1;
/// `IOMMU_SVA_GPASID_VAL`: [`GpasidBindData::gpasid`] is meaningful.
pub const IOMMU_SVA_GPASID_VAL: u64 = 1 << 0;

/// `IOMMU_SVA_VTD_GPASID_SRE`: supervisor requests allowed.
pub const IOMMU_SVA_VTD_GPASID_SRE: u64 = 1 << 0;
/// `IOMMU_SVA_VTD_GPASID_EAFE`: extended access flag enable.
pub const IOMMU_SVA_VTD_GPASID_EAFE: u64 = 1 << 1;
/// `IOMMU_SVA_VTD_GPASID_PCD`: page-level cache disable.
pub const IOMMU_SVA_VTD_GPASID_PCD: u64 = 1 << 2;
/// `IOMMU_SVA_VTD_GPASID_PWT`: page-level write through.
pub const IOMMU_SVA_VTD_GPASID_PWT: u64 = 1 << 3;
/// `IOMMU_SVA_VTD_GPASID_EMTE`: extended memory type enable.
pub const IOMMU_SVA_VTD_GPASID_EMTE: u64 = 1 << 4;
/// `IOMMU_SVA_VTD_GPASID_CD`: PASID-level cache disable.
pub const IOMMU_SVA_VTD_GPASID_CD: u64 = 1 << 5;
/// `IOMMU_SVA_VTD_GPASID_WPE`: write protect enable.
pub const IOMMU_SVA_VTD_GPASID_WPE: u64 = 1 << 6;
/// `IOMMU_SVA_VTD_GPASID_LAST`: first undefined VT-d bind flag; this bit and above are invalid.
pub const IOMMU_SVA_VTD_GPASID_LAST: u64 = 1 << 7;

bitset! {
    /// The `vendor.vtd.flags` of [`GpasidBindData`] as a typed set (`IOMMU_SVA_VTD_GPASID_*`).
    pub struct VtdBindFlags: u64 {
        /// `IOMMU_SVA_VTD_GPASID_SRE`.
        const SRE = IOMMU_SVA_VTD_GPASID_SRE;
        /// `IOMMU_SVA_VTD_GPASID_EAFE`.
        const EAFE = IOMMU_SVA_VTD_GPASID_EAFE;
        /// `IOMMU_SVA_VTD_GPASID_PCD`.
        const PCD = IOMMU_SVA_VTD_GPASID_PCD;
        /// `IOMMU_SVA_VTD_GPASID_PWT`.
        const PWT = IOMMU_SVA_VTD_GPASID_PWT;
        /// `IOMMU_SVA_VTD_GPASID_EMTE`.
        const EMTE = IOMMU_SVA_VTD_GPASID_EMTE;
        /// `IOMMU_SVA_VTD_GPASID_CD`.
        const CD = IOMMU_SVA_VTD_GPASID_CD;
        /// `IOMMU_SVA_VTD_GPASID_WPE`.
        const WPE = IOMMU_SVA_VTD_GPASID_WPE;
    }
}

/// `iommu_gpasid_bind_data_vtd`: the VT-d vendor part of [`GpasidBindData`] (16 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct GpasidBindDataVtd {
    /// `IOMMU_SVA_VTD_GPASID_*` bits; bits at or above [`IOMMU_SVA_VTD_GPASID_LAST`] are invalid.
    pub flags: u64,
    /// Page attribute table, for the PASID entry's PAT field.
    pub pat: u32,
    /// Extended memory type, for the PASID entry's EMT field.
    pub emt: u32,
}

/// `iommu_gpasid_bind_data`: payload of NESTING_OP bind and unbind (56-byte generic part plus
/// the 16-byte VT-d part, 72 bytes).
///
/// Decode and validate one with [`crate::decode_bind_data`].
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct GpasidBindData {
    /// Size of this struct as the caller knows it; at least [`GpasidBindData::MIN_SIZE`].
    pub argsz: u32,
    /// [`IOMMU_GPASID_BIND_VERSION_1`].
    pub version: u32,
    /// [`IOMMU_PASID_FORMAT_INTEL_VTD`].
    pub format: u32,
    /// Guest first-level input address width: 48 (4-level) or 57 (5-level).
    pub addr_width: u32,
    /// [`IOMMU_SVA_GPASID_VAL`] or 0.
    pub flags: u64,
    /// Guest-physical address of the guest's first-level root table.
    pub gpgd: u64,
    /// Host PASID to bind; must be owned by the caller.
    pub hpasid: u64,
    /// Guest PASID, for fault reporting; meaningful only with [`IOMMU_SVA_GPASID_VAL`].
    pub gpasid: u64,
    /// Padding, zero.
    pub padding: [u8; 8],
    /// The `vendor.vtd` union member.
    pub vtd: GpasidBindDataVtd,
}

impl GpasidBindData {
    /// Offset of the vendor union: the smallest `argsz` accepted (56).
    pub const MIN_SIZE: usize = core::mem::offset_of!(GpasidBindData, vtd);
}

/// `IOMMU_CACHE_INVALIDATE_INFO_VERSION_1`: the only defined
/// [`CacheInvalidateInfo::version`].
pub const IOMMU_CACHE_INVALIDATE_INFO_VERSION_1: u32 = 1;

/// `IOMMU_CACHE_INV_TYPE_IOTLB`: the IOMMU's IOTLB (and paging-structure caches).
pub const IOMMU_CACHE_INV_TYPE_IOTLB: u8 = 1 << 0;
/// `IOMMU_CACHE_INV_TYPE_DEV_IOTLB`: device TLBs (ATS).
pub const IOMMU_CACHE_INV_TYPE_DEV_IOTLB: u8 = 1 << 1;
/// `IOMMU_CACHE_INV_TYPE_PASID`: the PASID cache.
pub const IOMMU_CACHE_INV_TYPE_PASID: u8 = 1 << 2;
/// `IOMMU_CACHE_INV_TYPE_NR`: number of cache types; bits at or above `1 << 3` are invalid.
pub const IOMMU_CACHE_INV_TYPE_NR: u8 = 3;

bitset! {
    /// The `cache` field of [`CacheInvalidateInfo`] as a typed set (`IOMMU_CACHE_INV_TYPE_*`).
    pub struct CacheSet: u8 {
        /// `IOMMU_CACHE_INV_TYPE_IOTLB`.
        const IOTLB = IOMMU_CACHE_INV_TYPE_IOTLB;
        /// `IOMMU_CACHE_INV_TYPE_DEV_IOTLB`.
        const DEV_IOTLB = IOMMU_CACHE_INV_TYPE_DEV_IOTLB;
        /// `IOMMU_CACHE_INV_TYPE_PASID`.
        const PASID = IOMMU_CACHE_INV_TYPE_PASID;
    }
}

/// `IOMMU_INV_GRANU_DOMAIN`: everything of the domain; no union member.
pub const IOMMU_INV_GRANU_DOMAIN: u8 = 0;
/// `IOMMU_INV_GRANU_PASID`: everything of one PASID; union member [`InvPasidInfo`].
pub const IOMMU_INV_GRANU_PASID: u8 = 1;
/// `IOMMU_INV_GRANU_ADDR`: an address range; union member [`InvAddrInfo`].
pub const IOMMU_INV_GRANU_ADDR: u8 = 2;
/// `IOMMU_INV_GRANU_NR`: number of granularities; this value and above are invalid.
pub const IOMMU_INV_GRANU_NR: u8 = 3;

/// `IOMMU_INV_PASID_FLAGS_PASID`: [`InvPasidInfo::pasid`] is valid.
pub const IOMMU_INV_PASID_FLAGS_PASID: u32 = 1 << 0;
/// `IOMMU_INV_PASID_FLAGS_ARCHID`: [`InvPasidInfo::archid`] is valid.
pub const IOMMU_INV_PASID_FLAGS_ARCHID: u32 = 1 << 1;

/// `IOMMU_INV_ADDR_FLAGS_PASID`: [`InvAddrInfo::pasid`] is valid.
pub const IOMMU_INV_ADDR_FLAGS_PASID: u32 = 1 << 0;
/// `IOMMU_INV_ADDR_FLAGS_ARCHID`: [`InvAddrInfo::archid`] is valid.
pub const IOMMU_INV_ADDR_FLAGS_ARCHID: u32 = 1 << 1;
/// `IOMMU_INV_ADDR_FLAGS_LEAF`: only leaf entries changed; paging-structure caches may stay.
pub const IOMMU_INV_ADDR_FLAGS_LEAF: u32 = 1 << 2;

/// `iommu_inv_pasid_info`: union member for PASID granularity (16 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InvPasidInfo {
    /// `IOMMU_INV_PASID_FLAGS_*` bits.
    pub flags: u32,
    /// Architecture-specific id (e.g. an ASID), valid with `ARCHID`.
    pub archid: u32,
    /// The PASID, valid with `PASID`.
    pub pasid: u64,
}

/// `iommu_inv_addr_info`: union member for address granularity (40 bytes).
///
/// The range is `[addr, addr + granule_size * nb_granules)`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InvAddrInfo {
    /// `IOMMU_INV_ADDR_FLAGS_*` bits.
    pub flags: u32,
    /// Architecture-specific id (e.g. an ASID), valid with `ARCHID`.
    pub archid: u32,
    /// The PASID, valid with `PASID`.
    pub pasid: u64,
    /// First I/O virtual address of the range.
    pub addr: u64,
    /// Size of one granule in bytes.
    pub granule_size: u64,
    /// Number of contiguous granules.
    pub nb_granules: u64,
}

/// The `granu` union of `iommu_cache_invalidate_info` (40 bytes, 8-byte aligned, like the C
/// union), stored as raw bytes and read through typed accessors.
///
/// Which member is meaningful depends on [`CacheInvalidateInfo::granularity`]; reading the other
/// one is harmless and yields whatever the bytes say. The conversions are compile-time checked
/// byte copies (`zerocopy::transmute!`), so none of them can fail.
#[repr(C, align(8))]
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct InvGranu {
    /// The bytes `pasid_info` covers.
    head: [u8; 16],
    /// The bytes only `addr_info` covers.
    tail: [u8; 24],
}

impl InvGranu {
    /// The union read as its `pasid_info` member (its first 16 bytes).
    pub fn pasid_info(&self) -> InvPasidInfo {
        zerocopy::transmute!(self.head)
    }

    /// The union read as its `addr_info` member (all 40 bytes).
    pub fn addr_info(&self) -> InvAddrInfo {
        zerocopy::transmute!(*self)
    }
}

impl Default for InvGranu {
    /// All-zero bytes.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl core::fmt::Debug for InvGranu {
    /// Shows both interpretations of the union, as a debugger would.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InvGranu")
            .field("pasid_info", &self.pasid_info())
            .field("addr_info", &self.addr_info())
            .finish()
    }
}

impl From<InvPasidInfo> for InvGranu {
    /// The union with `pasid_info` written and the remaining 24 bytes zero.
    fn from(info: InvPasidInfo) -> Self {
        Self {
            head: zerocopy::transmute!(info),
            tail: [0; 24],
        }
    }
}

impl From<InvAddrInfo> for InvGranu {
    /// The union with `addr_info` written.
    fn from(info: InvAddrInfo) -> Self {
        zerocopy::transmute!(info)
    }
}

/// `iommu_cache_invalidate_info`: payload of NESTING_OP cache invalidation (56 bytes).
///
/// Decode and validate one with [`crate::decode_cache_invalidate`].
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct CacheInvalidateInfo {
    /// Size of this struct as the caller knows it; at least [`CacheInvalidateInfo::MIN_SIZE`]
    /// and at least the end of the union member `granularity` selects.
    pub argsz: u32,
    /// [`IOMMU_CACHE_INVALIDATE_INFO_VERSION_1`].
    pub version: u32,
    /// `IOMMU_CACHE_INV_TYPE_*` bits.
    pub cache: u8,
    /// `IOMMU_INV_GRANU_*` value.
    pub granularity: u8,
    /// Padding, zero.
    pub padding: [u8; 6],
    /// The `granu` union.
    pub granu: InvGranu,
}

impl CacheInvalidateInfo {
    /// Offset of the `granu` union: the smallest `argsz` accepted (16).
    pub const MIN_SIZE: usize = core::mem::offset_of!(CacheInvalidateInfo, granu);
    /// End of the `pasid_info` member: the smallest `argsz` for PASID granularity (32).
    pub const PASID_INFO_END: usize = Self::MIN_SIZE + size_of::<InvPasidInfo>();
    /// End of the `addr_info` member: the smallest `argsz` for address granularity (56).
    pub const ADDR_INFO_END: usize = Self::MIN_SIZE + size_of::<InvAddrInfo>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_of::<NestingInfo>(), 24);
        assert_eq!(size_of::<NestingInfoVtd>(), 24);
        assert_eq!(size_of::<GpasidBindDataVtd>(), 16);
        assert_eq!(size_of::<GpasidBindData>(), 72);
        assert_eq!(GpasidBindData::MIN_SIZE, 56);
        assert_eq!(size_of::<InvPasidInfo>(), 16);
        assert_eq!(size_of::<InvAddrInfo>(), 40);
        assert_eq!(size_of::<InvGranu>(), 40);
        assert_eq!(align_of::<InvGranu>(), 8);
        assert_eq!(size_of::<CacheInvalidateInfo>(), 56);
        assert_eq!(CacheInvalidateInfo::MIN_SIZE, 16);
        assert_eq!(CacheInvalidateInfo::PASID_INFO_END, 32);
        assert_eq!(CacheInvalidateInfo::ADDR_INFO_END, 56);
    }

    #[test]
    fn granu_union_members_share_their_prefix() {
        let addr = InvAddrInfo {
            flags: IOMMU_INV_ADDR_FLAGS_PASID | IOMMU_INV_ADDR_FLAGS_LEAF,
            archid: 7,
            pasid: 0x1234,
            addr: 0xdead_b000,
            granule_size: 4096,
            nb_granules: 3,
        };
        let granu = InvGranu::from(addr);
        assert_eq!(granu.addr_info(), addr);
        assert_eq!(
            granu.pasid_info(),
            InvPasidInfo {
                flags: addr.flags,
                archid: 7,
                pasid: 0x1234
            }
        );

        let pasid = InvPasidInfo {
            flags: IOMMU_INV_PASID_FLAGS_ARCHID,
            archid: 9,
            pasid: 5,
        };
        let granu = InvGranu::from(pasid);
        assert_eq!(granu.pasid_info(), pasid);
        assert_eq!(&granu.as_bytes()[16..], &[0u8; 24]);
    }

    #[test]
    fn bitsets_reject_undefined_bits() {
        assert_eq!(CacheSet::ALL.bits(), 0x7);
        assert_eq!(CacheSet::from_bits(0x8), None);
        assert_eq!(CacheSet::from_bits_truncate(0xff), CacheSet::ALL);
        assert_eq!(VtdBindFlags::ALL.bits(), IOMMU_SVA_VTD_GPASID_LAST - 1);
        assert_eq!(NestingFeatures::ALL.bits(), 0x7);
        assert!(CacheSet::empty().is_empty());
        let set = CacheSet::IOTLB | CacheSet::PASID;
        assert!(set.contains(CacheSet::IOTLB));
        assert!(!set.contains(CacheSet::DEV_IOTLB));
        assert!(set.intersects(CacheSet::PASID | CacheSet::DEV_IOTLB));
        assert_eq!(set.difference(CacheSet::IOTLB), CacheSet::PASID);
        assert_eq!(format!("{set:?}"), "CacheSet(IOTLB | PASID)");
        assert_eq!(format!("{:?}", CacheSet::empty()), "CacheSet(empty)");
    }
}
