//! Pins every size, alignment and field offset to the tables of `shared/design/uapi.md` and
//! Linux `include/uapi/linux/{vfio,iommu,iommufd}.h`.

use core::mem::{align_of, offset_of, size_of};

use vsva_uapi::iommu::*;
use vsva_uapi::iommufd::*;
use vsva_uapi::vfio::*;

/// Asserts a struct's size and alignment and the offset of each listed field; the fields must
/// cover the struct exactly, in order and without gaps, so a missed or extra field fails too.
macro_rules! assert_layout {
    ($ty:ty, size $size:expr, align $align:expr, { $($field:ident: $fty:ty => $off:expr),+ $(,)? }) => {{
        assert_eq!(size_of::<$ty>(), $size, "size of {}", stringify!($ty));
        assert_eq!(align_of::<$ty>(), $align, "align of {}", stringify!($ty));
        let mut end = 0usize;
        $(
            assert_eq!(
                offset_of!($ty, $field),
                $off,
                "offset of {}::{}",
                stringify!($ty),
                stringify!($field)
            );
            assert_eq!($off, end, "gap before {}::{}", stringify!($ty), stringify!($field));
            end = $off + size_of::<$fty>();
        )+
        assert_eq!(end, $size, "fields of {} do not reach its end", stringify!($ty));
    }};
}

#[test]
fn vfio_info_cap_header() {
    assert_layout!(InfoCapHeader, size 8, align 4, {
        id: u16 => 0,
        version: u16 => 2,
        next: u32 => 4,
    });
}

#[test]
fn vfio_iommu_type1_info() {
    assert_layout!(Type1Info, size 24, align 8, {
        argsz: u32 => 0,
        flags: u32 => 4,
        iova_pgsizes: u64 => 8,
        cap_offset: u32 => 16,
        pad: u32 => 20,
    });
}

#[test]
fn vfio_iommu_type1_dma_map() {
    assert_layout!(DmaMap, size 32, align 8, {
        argsz: u32 => 0,
        flags: u32 => 4,
        vaddr: u64 => 8,
        iova: u64 => 16,
        size: u64 => 24,
    });
}

#[test]
fn vfio_iommu_type1_dma_unmap() {
    assert_layout!(DmaUnmap, size 24, align 8, {
        argsz: u32 => 0,
        flags: u32 => 4,
        iova: u64 => 8,
        size: u64 => 16,
    });
}

#[test]
fn vfio_iommu_type1_pasid_request() {
    assert_layout!(PasidRequest, size 16, align 4, {
        argsz: u32 => 0,
        flags: u32 => 4,
        range: PasidRange => 8,
    });
    assert_layout!(PasidRange, size 8, align 4, {
        min: u32 => 0,
        max: u32 => 4,
    });
    // The table's absolute offsets of range.min and range.max.
    assert_eq!(
        offset_of!(PasidRequest, range) + offset_of!(PasidRange, min),
        8
    );
    assert_eq!(
        offset_of!(PasidRequest, range) + offset_of!(PasidRange, max),
        12
    );
}

#[test]
fn vfio_iommu_type1_nesting_op() {
    assert_layout!(NestingOpHeader, size 8, align 4, {
        argsz: u32 => 0,
        flags: u32 => 4,
    });
}

#[test]
fn iommu_nesting_info() {
    assert_layout!(NestingInfo, size 24, align 4, {
        size: u32 => 0,
        format: u32 => 4,
        features: u32 => 8,
        flags: u32 => 12,
        addr_width: u16 => 16,
        pasid_bits: u16 => 18,
        padding: u32 => 20,
    });
    assert_layout!(NestingInfoVtd, size 24, align 8, {
        flags: u32 => 0,
        padding: u32 => 4,
        cap_reg: u64 => 8,
        ecap_reg: u64 => 16,
    });
    // The info's data starts at offset 24, and the capability is header + info + vtd.
    assert_layout!(InfoCapNesting, size 56, align 8, {
        header: InfoCapHeader => 0,
        info: NestingInfo => 8,
        vtd: NestingInfoVtd => 32,
    });
}

#[test]
fn iommu_gpasid_bind_data() {
    assert_layout!(GpasidBindData, size 72, align 8, {
        argsz: u32 => 0,
        version: u32 => 4,
        format: u32 => 8,
        addr_width: u32 => 12,
        flags: u64 => 16,
        gpgd: u64 => 24,
        hpasid: u64 => 32,
        gpasid: u64 => 40,
        padding: [u8; 8] => 48,
        vtd: GpasidBindDataVtd => 56,
    });
    assert_layout!(GpasidBindDataVtd, size 16, align 8, {
        flags: u64 => 0,
        pat: u32 => 8,
        emt: u32 => 12,
    });
    assert_eq!(GpasidBindData::MIN_SIZE, 56);
    // The table's absolute offsets of vendor.vtd.{flags,pat,emt}.
    let vendor = offset_of!(GpasidBindData, vtd);
    assert_eq!(vendor + offset_of!(GpasidBindDataVtd, flags), 56);
    assert_eq!(vendor + offset_of!(GpasidBindDataVtd, pat), 64);
    assert_eq!(vendor + offset_of!(GpasidBindDataVtd, emt), 68);
}

#[test]
fn iommu_cache_invalidate_info() {
    assert_layout!(CacheInvalidateInfo, size 56, align 8, {
        argsz: u32 => 0,
        version: u32 => 4,
        cache: u8 => 8,
        granularity: u8 => 9,
        padding: [u8; 6] => 10,
        granu: InvGranu => 16,
    });
    assert_eq!(size_of::<InvGranu>(), 40);
    assert_eq!(align_of::<InvGranu>(), 8);
    assert_eq!(CacheInvalidateInfo::MIN_SIZE, 16);
    assert_eq!(CacheInvalidateInfo::PASID_INFO_END, 16 + 16);
    assert_eq!(CacheInvalidateInfo::ADDR_INFO_END, 16 + 40);
}

#[test]
fn iommu_inv_pasid_info() {
    assert_layout!(InvPasidInfo, size 16, align 8, {
        flags: u32 => 0,
        archid: u32 => 4,
        pasid: u64 => 8,
    });
}

#[test]
fn iommu_inv_addr_info() {
    assert_layout!(InvAddrInfo, size 40, align 8, {
        flags: u32 => 0,
        archid: u32 => 4,
        pasid: u64 => 8,
        addr: u64 => 16,
        granule_size: u64 => 24,
        nb_granules: u64 => 32,
    });
}

#[test]
fn iommu_hwpt_vtd_s1() {
    assert_layout!(IommuHwptVtdS1, size 24, align 8, {
        flags: u64 => 0,
        pgtbl_addr: u64 => 8,
        addr_width: u32 => 16,
        reserved: u32 => 20,
    });
}

#[test]
fn iommu_hwpt_vtd_s1_invalidate() {
    assert_layout!(IommuHwptVtdS1Invalidate, size 24, align 8, {
        addr: u64 => 0,
        npages: u64 => 8,
        flags: u32 => 16,
        reserved: u32 => 20,
    });
}

#[test]
fn iommu_hw_info_vtd() {
    assert_layout!(IommuHwInfoVtd, size 24, align 8, {
        flags: u32 => 0,
        reserved: u32 => 4,
        cap_reg: u64 => 8,
        ecap_reg: u64 => 16,
    });
}

#[test]
fn vfio_device_attach_iommufd_pt() {
    assert_layout!(VfioDeviceAttachIommufdPt, size 16, align 4, {
        argsz: u32 => 0,
        flags: u32 => 4,
        pt_id: u32 => 8,
        pasid: u32 => 12,
    });
}

#[test]
fn ioctl_numbers() {
    assert_eq!(vsva_uapi::io(b';', 100 + 18), 0x3b76);
    assert_eq!(VFIO_TYPE, 0x3b);
    assert_eq!(VFIO_BASE, 100);
    assert_eq!(VFIO_SET_IOMMU, 0x3b66);
    assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
    assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
    assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    assert_eq!(VFIO_IOMMU_PASID_REQUEST, 0x3b76);
    assert_eq!(VFIO_IOMMU_NESTING_OP, 0x3b77);
    assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
}

#[test]
fn constants() {
    // VFIO.
    assert_eq!(VFIO_TYPE1_IOMMU, 1);
    assert_eq!(VFIO_TYPE1v2_IOMMU, 3);
    assert_eq!(VFIO_TYPE1_NESTING_IOMMU, 6);
    assert_eq!(VFIO_IOMMU_TYPE1_INFO_CAP_NESTING, 3);
    assert_eq!(VFIO_IOMMU_INFO_PGSIZES, 1);
    assert_eq!(VFIO_IOMMU_INFO_CAPS, 2);
    assert_eq!(VFIO_DMA_MAP_FLAG_READ, 1);
    assert_eq!(VFIO_DMA_MAP_FLAG_WRITE, 2);
    assert_eq!(VFIO_IOMMU_FLAG_ALLOC_PASID, 1);
    assert_eq!(VFIO_IOMMU_FLAG_FREE_PASID, 2);
    assert_eq!(VFIO_PASID_REQUEST_MASK, 3);
    assert_eq!(VFIO_IOMMU_NESTING_OP_BIND_PGTBL, 0);
    assert_eq!(VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL, 1);
    assert_eq!(VFIO_IOMMU_NESTING_OP_CACHE_INVLD, 2);
    assert_eq!(VFIO_NESTING_OP_MASK, 0xffff);
    // Nesting info.
    assert_eq!(IOMMU_PASID_FORMAT_INTEL_VTD, 1);
    assert_eq!(IOMMU_NESTING_FEAT_SYSWIDE_PASID, 1 << 0);
    assert_eq!(IOMMU_NESTING_FEAT_BIND_PGTBL, 1 << 1);
    assert_eq!(IOMMU_NESTING_FEAT_CACHE_INVLD, 1 << 2);
    // Bind data.
    assert_eq!(IOMMU_GPASID_BIND_VERSION_1, 1);
    assert_eq!(IOMMU_SVA_GPASID_VAL, 1);
    let vtd = [
        IOMMU_SVA_VTD_GPASID_SRE,
        IOMMU_SVA_VTD_GPASID_EAFE,
        IOMMU_SVA_VTD_GPASID_PCD,
        IOMMU_SVA_VTD_GPASID_PWT,
        IOMMU_SVA_VTD_GPASID_EMTE,
        IOMMU_SVA_VTD_GPASID_CD,
        IOMMU_SVA_VTD_GPASID_WPE,
        IOMMU_SVA_VTD_GPASID_LAST,
    ];
    for (bit, flag) in vtd.into_iter().enumerate() {
        assert_eq!(flag, 1 << bit);
    }
    // Cache invalidation.
    assert_eq!(IOMMU_CACHE_INVALIDATE_INFO_VERSION_1, 1);
    assert_eq!(IOMMU_CACHE_INV_TYPE_IOTLB, 1 << 0);
    assert_eq!(IOMMU_CACHE_INV_TYPE_DEV_IOTLB, 1 << 1);
    assert_eq!(IOMMU_CACHE_INV_TYPE_PASID, 1 << 2);
    assert_eq!(IOMMU_CACHE_INV_TYPE_NR, 3);
    assert_eq!(IOMMU_INV_GRANU_DOMAIN, 0);
    assert_eq!(IOMMU_INV_GRANU_PASID, 1);
    assert_eq!(IOMMU_INV_GRANU_ADDR, 2);
    assert_eq!(IOMMU_INV_GRANU_NR, 3);
    assert_eq!(IOMMU_INV_PASID_FLAGS_PASID, 1 << 0);
    assert_eq!(IOMMU_INV_PASID_FLAGS_ARCHID, 1 << 1);
    assert_eq!(IOMMU_INV_ADDR_FLAGS_PASID, 1 << 0);
    assert_eq!(IOMMU_INV_ADDR_FLAGS_ARCHID, 1 << 1);
    assert_eq!(IOMMU_INV_ADDR_FLAGS_LEAF, 1 << 2);
    // iommufd.
    assert_eq!(IOMMU_HWPT_DATA_VTD_S1, 1);
    assert_eq!(IOMMU_VTD_S1_SRE, 1 << 0);
    assert_eq!(IOMMU_VTD_S1_EAFE, 1 << 1);
    assert_eq!(IOMMU_VTD_S1_WPE, 1 << 2);
    assert_eq!(IOMMU_VTD_INV_FLAGS_LEAF, 1 << 0);
    assert_eq!(VFIO_DEVICE_ATTACH_PASID, 1 << 0);
}

#[test]
fn iommufd_object_structs() {
    assert_layout!(IommuDestroy, size 8, align 4, { size: u32 => 0, id: u32 => 4 });
    assert_layout!(IommuIoasAlloc, size 12, align 4, {
        size: u32 => 0, flags: u32 => 4, out_ioas_id: u32 => 8,
    });
    assert_layout!(IommuIovaRange, size 16, align 8, { start: u64 => 0, last: u64 => 8 });
    assert_layout!(IommuIoasIovaRanges, size 32, align 8, {
        size: u32 => 0, ioas_id: u32 => 4, num_iovas: u32 => 8, reserved: u32 => 12,
        allowed_iovas: u64 => 16, out_iova_alignment: u64 => 24,
    });
    assert_layout!(IommuIoasAllowIovas, size 24, align 8, {
        size: u32 => 0, ioas_id: u32 => 4, num_iovas: u32 => 8, reserved: u32 => 12,
        allowed_iovas: u64 => 16,
    });
    assert_layout!(IommuIoasMap, size 40, align 8, {
        size: u32 => 0, flags: u32 => 4, ioas_id: u32 => 8, reserved: u32 => 12,
        user_va: u64 => 16, length: u64 => 24, iova: u64 => 32,
    });
    assert_layout!(IommuIoasCopy, size 40, align 8, {
        size: u32 => 0, flags: u32 => 4, dst_ioas_id: u32 => 8, src_ioas_id: u32 => 12,
        length: u64 => 16, dst_iova: u64 => 24, src_iova: u64 => 32,
    });
    assert_layout!(IommuIoasUnmap, size 24, align 8, {
        size: u32 => 0, ioas_id: u32 => 4, iova: u64 => 8, length: u64 => 16,
    });
    assert_layout!(IommuFaultAlloc, size 16, align 4, {
        size: u32 => 0, flags: u32 => 4, out_fault_id: u32 => 8, out_fault_fd: u32 => 12,
    });
}

#[test]
fn iommufd_hwpt_structs() {
    assert_layout!(IommuHwptAlloc, size 48, align 8, {
        size: u32 => 0, flags: u32 => 4, dev_id: u32 => 8, pt_id: u32 => 12,
        out_hwpt_id: u32 => 16, reserved: u32 => 20, data_type: u32 => 24, data_len: u32 => 28,
        data_uptr: u64 => 32, fault_id: u32 => 40, reserved2: u32 => 44,
    });
    assert_layout!(IommuHwInfo, size 40, align 8, {
        size: u32 => 0, flags: u32 => 4, dev_id: u32 => 8, data_len: u32 => 12,
        data_uptr: u64 => 16, out_data_type: u32 => 24, out_max_pasid_log2: u8 => 28,
        reserved: [u8; 3] => 29, out_capabilities: u64 => 32,
    });
    assert_layout!(IommuHwptInvalidate, size 32, align 8, {
        size: u32 => 0, hwpt_id: u32 => 4, data_uptr: u64 => 8, data_type: u32 => 16,
        entry_len: u32 => 20, entry_num: u32 => 24, reserved: u32 => 28,
    });
    assert_layout!(IommuHwptPgfault, size 40, align 8, {
        flags: u32 => 0, dev_id: u32 => 4, pasid: u32 => 8, grpid: u32 => 12, perm: u32 => 16,
        reserved: u32 => 20, addr: u64 => 24, length: u32 => 32, cookie: u32 => 36,
    });
    assert_layout!(IommuHwptPageResponse, size 8, align 4, { cookie: u32 => 0, code: u32 => 4 });
}

#[test]
fn vfio_device_iommufd_structs() {
    assert_layout!(VfioDeviceBindIommufd, size 16, align 4, {
        argsz: u32 => 0, flags: u32 => 4, iommufd: i32 => 8, out_devid: u32 => 12,
    });
    assert_layout!(VfioDeviceDetachIommufdPt, size 12, align 4, {
        argsz: u32 => 0, flags: u32 => 4, pasid: u32 => 8,
    });
}
