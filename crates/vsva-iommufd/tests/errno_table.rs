//! The errno table: per ioctl, one malformed field per case, each row naming the Linux
//! function (and file) whose check it follows. Every row runs against the same fixture and
//! must leave the context's objects as they were.

mod common;

use common::*;
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use zerocopy::IntoBytes;

/// The fixture: device 3 bound (id `dev`), an IOAS with guest RAM, a nest-parent HWPT, a
/// nested HWPT on it, a fault queue, and a PASID of the process.
struct Fx {
    _vfio: vsva_vfio::Vfio,
    ctx: IommufdCtx,
    dev: u32,
    ioas: u32,
    parent: u32,
    nested: u32,
    fault: u32,
}

fn fixture() -> Fx {
    let vfio = host();
    function(&vfio, 3);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev = bind(&ctx, 3);
    let ioas = ioas_alloc(&ctx);
    map_guest_ram(&ctx, ioas);
    let parent = hwpt_paging(&ctx, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let fault = fault_alloc(&ctx);
    let nested = hwpt_nested(&ctx, dev, parent, MB, IOMMU_HWPT_ALLOC_PASID, 0).unwrap();
    Fx {
        _vfio: vfio,
        ctx,
        dev,
        ioas,
        parent,
        nested,
        fault,
    }
}

/// One row: what is malformed, the Linux check it follows, the ioctl and its bytes, the
/// errno.
struct Row {
    what: &'static str,
    linux: &'static str,
    cmd: u32,
    buf: Vec<u8>,
    errno: Errno,
}

fn row(what: &'static str, linux: &'static str, cmd: u32, buf: Vec<u8>, errno: Errno) -> Row {
    Row {
        what,
        linux,
        cmd,
        buf,
        errno,
    }
}

fn with_size(mut buf: Vec<u8>, size: u32) -> Vec<u8> {
    buf[..4].copy_from_slice(&size.to_le_bytes());
    buf
}

fn rows(f: &Fx) -> Vec<Row> {
    const MAIN: &str = "iommufd_fops_ioctl (main.c)";
    let map = map_cmd(f.ioas, GUEST_HPA, 64 * MB, 0x1000);
    let unmap = IommuIoasUnmap {
        ioas_id: f.ioas,
        iova: 0,
        length: 0x1000,
        ..Default::default()
    };
    let copy = IommuIoasCopy {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
        dst_ioas_id: f.ioas,
        src_ioas_id: f.ioas,
        length: 0x1000,
        dst_iova: 64 * MB,
        src_iova: 0,
        ..Default::default()
    };
    let ranges = IommuIoasIovaRanges {
        ioas_id: f.ioas,
        ..Default::default()
    };
    let allow = IommuIoasAllowIovas {
        ioas_id: f.ioas,
        num_iovas: 1,
        allowed_iovas: 24,
        ..Default::default()
    };
    let allow_buf = |a: &IommuIoasAllowIovas, r: IommuIovaRange| {
        let mut b = arg(a, 0);
        b.extend_from_slice(r.as_bytes());
        b
    };
    let paging = IommuHwptAlloc {
        dev_id: f.dev,
        pt_id: f.ioas,
        ..Default::default()
    };
    let nested = |s1: &IommuHwptVtdS1| nested_buf(f.dev, f.parent, s1, 0, 0);
    let inv = |hwpt: u32, e: IommuHwptVtdS1Invalidate, len: u32| {
        let cmd = IommuHwptInvalidate {
            hwpt_id: hwpt,
            data_uptr: 32,
            data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
            entry_len: len,
            entry_num: 1,
            ..Default::default()
        };
        let mut b = arg(&cmd, 0);
        b.extend_from_slice(e.as_bytes());
        b.resize(32 + len.max(24) as usize, 0);
        b
    };
    let entry = IommuHwptVtdS1Invalidate {
        addr: 0,
        npages: 1,
        flags: 0,
        reserved: 0,
    };
    let hw = IommuHwInfo {
        dev_id: f.dev,
        ..Default::default()
    };
    vec![
        // The argument reader, for every ioctl.
        row(
            "size below the minimum",
            MAIN,
            IOMMU_IOAS_ALLOC,
            with_size(arg(&IommuIoasAlloc::default(), 0), 8),
            Errno::EINVAL,
        ),
        row(
            "non-zero tail past the known struct",
            "copy_struct_from_user (include/linux/uaccess.h)",
            IOMMU_IOAS_ALLOC,
            {
                let mut b = with_size(arg(&IommuIoasAlloc::default(), 4), 16);
                b[15] = 1;
                b
            },
            Errno::E2BIG,
        ),
        row(
            "size past the buffer",
            "copy_struct_from_user (include/linux/uaccess.h)",
            IOMMU_IOAS_ALLOC,
            with_size(arg(&IommuIoasAlloc::default(), 0), 64),
            Errno::EFAULT,
        ),
        row(
            "fewer than 4 bytes",
            MAIN,
            IOMMU_DESTROY,
            vec![8, 0],
            Errno::EFAULT,
        ),
        row(
            "unknown ioctl number",
            MAIN,
            0x3b87,
            arg(&IommuDestroy::default(), 0),
            Errno::ENOTTY,
        ),
        // IOMMU_DESTROY.
        row(
            "unknown id",
            "iommufd_destroy (main.c)",
            IOMMU_DESTROY,
            arg(&IommuDestroy { size: 8, id: 99 }, 0),
            Errno::ENOENT,
        ),
        row(
            "IOAS held by an HWPT",
            "iommufd_object_remove (main.c)",
            IOMMU_DESTROY,
            arg(
                &IommuDestroy {
                    size: 8,
                    id: f.ioas,
                },
                0,
            ),
            Errno::EBUSY,
        ),
        row(
            "parent held by a nested HWPT",
            "iommufd_object_remove (main.c)",
            IOMMU_DESTROY,
            arg(
                &IommuDestroy {
                    size: 8,
                    id: f.parent,
                },
                0,
            ),
            Errno::EBUSY,
        ),
        row(
            "a bound device",
            "iommufd_device_bind holds its object (device.c)",
            IOMMU_DESTROY,
            arg(&IommuDestroy { size: 8, id: f.dev }, 0),
            Errno::EBUSY,
        ),
        // IOMMU_IOAS_ALLOC.
        row(
            "flags",
            "iommufd_ioas_alloc_ioctl (ioas.c)",
            IOMMU_IOAS_ALLOC,
            arg(
                &IommuIoasAlloc {
                    flags: 1,
                    ..Default::default()
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        // IOMMU_IOAS_MAP.
        row(
            "size below offsetofend(iova)",
            MAIN,
            IOMMU_IOAS_MAP,
            with_size(arg(&map, 0), 32),
            Errno::EINVAL,
        ),
        row(
            "unknown flag",
            "iommufd_ioas_map (ioas.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    flags: 1 << 3,
                    ..map
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "__reserved",
            "iommufd_ioas_map (ioas.c)",
            IOMMU_IOAS_MAP,
            arg(&IommuIoasMap { reserved: 1, ..map }, 0),
            Errno::EOPNOTSUPP,
        ),
        row(
            "length ULONG_MAX",
            "iommufd_ioas_map (ioas.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    length: u64::MAX,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "unknown IOAS",
            "iommufd_get_ioas (iommufd_private.h)",
            IOMMU_IOAS_MAP,
            arg(&IommuIoasMap { ioas_id: 99, ..map }, 0),
            Errno::ENOENT,
        ),
        row(
            "IOAS id of an HWPT",
            "iommufd_get_object by type (main.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    ioas_id: f.parent,
                    ..map
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "zero length",
            "iopt_map_pages (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(&IommuIoasMap { length: 0, ..map }, 0),
            Errno::EINVAL,
        ),
        row(
            "unaligned iova",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: 64 * MB + 8,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "iova + length wraps",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: u64::MAX - 0xfff - 0x1000,
                    length: 0x3000,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "iova in the reserved space",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: 1 << 60,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "overlaps a mapping",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(&IommuIoasMap { iova: 0, ..map }, 0),
            Errno::EEXIST,
        ),
        row(
            "user_va not backed",
            "iopt_pages pinning (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: HOST_SIZE,
                    ..map
                },
                0,
            ),
            Errno::EFAULT,
        ),
        // IOMMU_IOAS_UNMAP.
        row(
            "size below offsetofend(length)",
            MAIN,
            IOMMU_IOAS_UNMAP,
            with_size(arg(&unmap, 0), 20),
            Errno::EINVAL,
        ),
        row(
            "unknown IOAS",
            "iommufd_ioas_unmap (ioas.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    ioas_id: 99,
                    ..unmap
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "iova ULONG_MAX",
            "iommufd_ioas_unmap (ioas.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: u64::MAX,
                    ..unmap
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "zero length",
            "iopt_unmap_iova (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(&IommuIoasUnmap { length: 0, ..unmap }, 0),
            Errno::EINVAL,
        ),
        row(
            "splits a mapping",
            "iopt_unmap_iova_range (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(&unmap, 0),
            Errno::ENOENT,
        ),
        row(
            "nothing mapped there",
            "iopt_unmap_iova_range (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: 32 * MB,
                    ..unmap
                },
                0,
            ),
            Errno::ENOENT,
        ),
        // IOMMU_IOAS_COPY.
        row(
            "length ULONG_MAX",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    length: u64::MAX,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "unknown flag",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    flags: 1 << 4,
                    ..copy
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "unknown source",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    src_ioas_id: 99,
                    ..copy
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "source not mapped",
            "iopt_get_pages (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    src_iova: 40 * MB,
                    ..copy
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "unknown destination",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_ioas_id: 99,
                    ..copy
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "destination overlaps",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_iova: 0,
                    ..copy
                },
                0,
            ),
            Errno::EEXIST,
        ),
        // IOMMU_IOAS_IOVA_RANGES.
        row(
            "__reserved",
            "iommufd_ioas_iova_ranges (ioas.c)",
            IOMMU_IOAS_IOVA_RANGES,
            arg(
                &IommuIoasIovaRanges {
                    reserved: 1,
                    ..ranges
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "unknown IOAS",
            "iommufd_ioas_iova_ranges (ioas.c)",
            IOMMU_IOAS_IOVA_RANGES,
            arg(
                &IommuIoasIovaRanges {
                    ioas_id: 99,
                    ..ranges
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "num_iovas too small",
            "iommufd_ioas_iova_ranges (ioas.c)",
            IOMMU_IOAS_IOVA_RANGES,
            arg(&ranges, 0),
            Errno::EMSGSIZE,
        ),
        row(
            "array outside the buffer",
            "iommufd_ioas_iova_ranges copy_to_user (ioas.c)",
            IOMMU_IOAS_IOVA_RANGES,
            arg(
                &IommuIoasIovaRanges {
                    num_iovas: 1,
                    allowed_iovas: 4096,
                    ..ranges
                },
                0,
            ),
            Errno::EFAULT,
        ),
        // IOMMU_IOAS_ALLOW_IOVAS.
        row(
            "__reserved",
            "iommufd_ioas_allow_iovas (ioas.c)",
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(
                &IommuIoasAllowIovas {
                    reserved: 1,
                    ..allow
                },
                IommuIovaRange { start: 0, last: MB },
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "unknown IOAS",
            "iommufd_ioas_allow_iovas (ioas.c)",
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(
                &IommuIoasAllowIovas {
                    ioas_id: 99,
                    ..allow
                },
                IommuIovaRange { start: 0, last: MB },
            ),
            Errno::ENOENT,
        ),
        row(
            "array outside the buffer",
            "iommufd_ioas_load_iovas (ioas.c)",
            IOMMU_IOAS_ALLOW_IOVAS,
            arg(&allow, 0),
            Errno::EFAULT,
        ),
        row(
            "start >= last",
            "iommufd_ioas_load_iovas (ioas.c)",
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(
                &allow,
                IommuIovaRange {
                    start: MB,
                    last: MB,
                },
            ),
            Errno::EINVAL,
        ),
        row(
            "range into the reserved space",
            "iopt_set_allow_iova (io_pagetable.c)",
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(
                &allow,
                IommuIovaRange {
                    start: 0,
                    last: u64::MAX,
                },
            ),
            Errno::EADDRINUSE,
        ),
        // IOMMU_HWPT_ALLOC.
        row(
            "__reserved",
            "iommufd_hwpt_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    reserved: 1,
                    ..paging
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "data_len without data_type",
            "iommufd_hwpt_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    data_len: 24,
                    ..paging
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "unknown device",
            "iommufd_get_device (iommufd_private.h)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    dev_id: 99,
                    ..paging
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "unknown pt_id",
            "iommufd_hwpt_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    pt_id: 99,
                    ..paging
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "pt_id a fault queue",
            "iommufd_hwpt_alloc default case (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    pt_id: f.fault,
                    ..paging
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "unknown flag (paging)",
            "iommufd_hwpt_paging_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    flags: 1 << 7,
                    ..paging
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "dirty tracking",
            "intel_iommu_domain_alloc_paging_flags (intel/iommu.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    flags: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                    ..paging
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "unknown fault queue",
            "iommufd_get_fault (eventq.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    flags: IOMMU_HWPT_FAULT_ID_VALID,
                    fault_id: 99,
                    ..paging
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "parent without NEST_PARENT",
            "iommufd_hwpt_nested_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            nested_buf(f.dev, f.nested, &s1(MB), 0, 0),
            Errno::EINVAL,
        ),
        row(
            "nested flag NEST_PARENT",
            "iommufd_hwpt_nested_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            nested_buf(f.dev, f.parent, &s1(MB), IOMMU_HWPT_ALLOC_NEST_PARENT, 0),
            Errno::EOPNOTSUPP,
        ),
        row(
            "data type not VTD_S1",
            "intel_iommu_domain_alloc_nested (intel/nested.c)",
            IOMMU_HWPT_ALLOC,
            {
                let mut b = nested(&s1(MB));
                b[24] = 2;
                b
            },
            Errno::EOPNOTSUPP,
        ),
        row(
            "data_len below the struct",
            "iommu_copy_struct_from_user (include/linux/iommu.h)",
            IOMMU_HWPT_ALLOC,
            {
                let mut b = nested(&s1(MB));
                b[28] = 16;
                b
            },
            Errno::EINVAL,
        ),
        row(
            "non-zero tail of the data",
            "copy_struct_from_user (include/linux/uaccess.h)",
            IOMMU_HWPT_ALLOC,
            {
                let mut b = nested(&s1(MB));
                b[28] = 32;
                b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
                b
            },
            Errno::E2BIG,
        ),
        row(
            "data outside the buffer",
            "copy_struct_from_user (include/linux/uaccess.h)",
            IOMMU_HWPT_ALLOC,
            {
                let mut b = nested(&s1(MB));
                b.truncate(60);
                b
            },
            Errno::EFAULT,
        ),
        row(
            "vtd_s1 unknown flag",
            "intel_iommu_domain_alloc_nested (intel/nested.c)",
            IOMMU_HWPT_ALLOC,
            nested(&IommuHwptVtdS1 {
                flags: 1 << 5,
                ..s1(MB)
            }),
            Errno::EOPNOTSUPP,
        ),
        row(
            "vtd_s1 __reserved",
            "intel_iommu_domain_alloc_nested (intel/nested.c)",
            IOMMU_HWPT_ALLOC,
            nested(&IommuHwptVtdS1 {
                reserved: 1,
                ..s1(MB)
            }),
            Errno::EOPNOTSUPP,
        ),
        row(
            "vtd_s1 addr_width 39",
            "intel_pasid_setup_nested (intel/pasid.c)",
            IOMMU_HWPT_ALLOC,
            nested(&IommuHwptVtdS1 {
                addr_width: 39,
                ..s1(MB)
            }),
            Errno::EINVAL,
        ),
        // IOMMU_HWPT_INVALIDATE.
        row(
            "__reserved",
            "iommufd_hwpt_invalidate (hw_pagetable.c)",
            IOMMU_HWPT_INVALIDATE,
            {
                let mut b = inv(f.nested, entry, 24);
                b[28] = 1;
                b
            },
            Errno::EOPNOTSUPP,
        ),
        row(
            "entries without entry_len",
            "iommufd_hwpt_invalidate (hw_pagetable.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(f.nested, entry, 0),
            Errno::EINVAL,
        ),
        row(
            "unknown HWPT",
            "iommufd_hwpt_invalidate (hw_pagetable.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(99, entry, 24),
            Errno::ENOENT,
        ),
        row(
            "a paging HWPT",
            "iommufd_hwpt_invalidate (hw_pagetable.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(f.parent, entry, 24),
            Errno::EINVAL,
        ),
        row(
            "data type",
            "intel_nested_cache_invalidate_user (intel/nested.c)",
            IOMMU_HWPT_INVALIDATE,
            {
                let mut b = inv(f.nested, entry, 24);
                b[16] = 5;
                b
            },
            Errno::EINVAL,
        ),
        row(
            "entry_len below the entry",
            "iommu_copy_struct_from_user_array (include/linux/iommu.h)",
            IOMMU_HWPT_INVALIDATE,
            inv(f.nested, entry, 16),
            Errno::EINVAL,
        ),
        row(
            "non-zero entry tail",
            "copy_struct_from_user (include/linux/uaccess.h)",
            IOMMU_HWPT_INVALIDATE,
            {
                let mut b = inv(f.nested, entry, 32);
                b[60] = 1;
                b
            },
            Errno::E2BIG,
        ),
        row(
            "entry unknown flag",
            "intel_nested_cache_invalidate_user (intel/nested.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(f.nested, IommuHwptVtdS1Invalidate { flags: 2, ..entry }, 24),
            Errno::EOPNOTSUPP,
        ),
        row(
            "entry __reserved",
            "intel_nested_cache_invalidate_user (intel/nested.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(
                f.nested,
                IommuHwptVtdS1Invalidate {
                    reserved: 1,
                    ..entry
                },
                24,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "entry addr unaligned",
            "intel_nested_cache_invalidate_user (intel/nested.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(
                f.nested,
                IommuHwptVtdS1Invalidate {
                    addr: 0x800,
                    ..entry
                },
                24,
            ),
            Errno::EINVAL,
        ),
        row(
            "entry all with an address",
            "intel_nested_cache_invalidate_user (intel/nested.c)",
            IOMMU_HWPT_INVALIDATE,
            inv(
                f.nested,
                IommuHwptVtdS1Invalidate {
                    addr: 0x1000,
                    npages: u64::MAX,
                    ..entry
                },
                24,
            ),
            Errno::EINVAL,
        ),
        // IOMMU_GET_HW_INFO.
        row(
            "unknown flag",
            "iommufd_get_hw_info (device.c)",
            IOMMU_GET_HW_INFO,
            arg(&IommuHwInfo { flags: 2, ..hw }, 0),
            Errno::EOPNOTSUPP,
        ),
        row(
            "__reserved",
            "iommufd_get_hw_info (device.c)",
            IOMMU_GET_HW_INFO,
            arg(
                &IommuHwInfo {
                    reserved: [0, 1, 0],
                    ..hw
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "unknown device",
            "iommufd_get_hw_info (device.c)",
            IOMMU_GET_HW_INFO,
            arg(
                &IommuHwInfo {
                    dev_id: f.ioas,
                    ..hw
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "input type ARM",
            "intel_iommu_hw_info (intel/iommu.c)",
            IOMMU_GET_HW_INFO,
            arg(
                &IommuHwInfo {
                    flags: IOMMU_HW_INFO_FLAG_INPUT_TYPE,
                    out_data_type: 2,
                    ..hw
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "data outside the buffer",
            "iommufd_get_hw_info copy_to_user (device.c)",
            IOMMU_GET_HW_INFO,
            arg(
                &IommuHwInfo {
                    data_len: 24,
                    data_uptr: 4096,
                    ..hw
                },
                0,
            ),
            Errno::EFAULT,
        ),
        // IOMMU_FAULT_QUEUE_ALLOC.
        row(
            "flags",
            "iommufd_fault_alloc (eventq.c)",
            IOMMU_FAULT_QUEUE_ALLOC,
            arg(
                &IommuFaultAlloc {
                    flags: 1,
                    ..Default::default()
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
    ]
}

#[test]
fn every_row_answers_its_errno_and_changes_nothing() {
    let f = fixture();
    let before = f.ctx.objects();
    for mut r in rows(&f) {
        let got = f.ctx.ioctl(r.cmd, &mut r.buf).map_err(|e| e.errno());
        assert_eq!(got, Err(r.errno), "{} (follows {})", r.what, r.linux);
        assert_eq!(f.ctx.objects(), before, "{} changed the context", r.what);
    }
}

/// A device-ioctl row: what, the Linux check, function, cmd, bytes, errno.
type DevRow = (&'static str, &'static str, u8, u32, Vec<u8>, Errno);

/// The device ioctls.
#[test]
fn device_ioctl_rows() {
    let f = fixture();
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    let attach = |flags: u32, argsz: u32, pt_id: u32, pasid: u32| {
        VfioDeviceAttachIommufdPt {
            argsz,
            flags,
            pt_id,
            pasid,
        }
        .as_bytes()
        .to_vec()
    };
    let bind = |flags: u32, fd: i32| {
        VfioDeviceBindIommufd {
            argsz: 16,
            flags,
            iommufd: fd,
            out_devid: 0,
        }
        .as_bytes()
        .to_vec()
    };
    let detach = |flags: u32, argsz: u32| {
        VfioDeviceDetachIommufdPt {
            argsz,
            flags,
            pasid,
        }
        .as_bytes()
        .to_vec()
    };
    let fd = f.ctx.fd();
    let cases: Vec<DevRow> = vec![
        (
            "bind: argsz short",
            "vfio_df_ioctl_bind_iommufd (vfio/device_cdev.c)",
            5,
            VFIO_DEVICE_BIND_IOMMUFD,
            {
                let mut b = bind(0, fd);
                b[0] = 8;
                b
            },
            Errno::EINVAL,
        ),
        (
            "bind: flags",
            "vfio_df_ioctl_bind_iommufd (vfio/device_cdev.c)",
            5,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(4, fd),
            Errno::EINVAL,
        ),
        (
            "bind: another fd",
            "iommufd_ctx_from_fd (main.c)",
            5,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(0, fd + 1000),
            Errno::EBADF,
        ),
        (
            "bind: twice",
            "vfio_df_ioctl_bind_iommufd (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(0, fd),
            Errno::EINVAL,
        ),
        (
            "bind: unknown device",
            "vfio_device_fops_cdev_open (vfio/device_cdev.c)",
            9,
            VFIO_DEVICE_BIND_IOMMUFD,
            bind(0, fd),
            Errno::ENODEV,
        ),
        (
            "attach: not bound",
            "vfio_df_ioctl_attach_pt (vfio/device_cdev.c)",
            5,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(0, 16, f.nested, 0),
            Errno::EINVAL,
        ),
        (
            "attach: flags",
            "vfio_df_ioctl_attach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(2, 16, f.nested, 0),
            Errno::EINVAL,
        ),
        (
            "attach: PASID flag, argsz without pasid",
            "vfio_df_ioctl_attach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 12, f.nested, pasid),
            Errno::EINVAL,
        ),
        (
            "attach: unknown pt_id",
            "iommufd_device_change_pt (device.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(0, 16, 99, 0),
            Errno::ENOENT,
        ),
        (
            "attach: pt_id a fault queue",
            "iommufd_device_change_pt (device.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(0, 16, f.fault, 0),
            Errno::EINVAL,
        ),
        (
            "attach: PASID on an HWPT without ALLOC_PASID",
            "iommufd_hwpt_pasid_compat (device.c)",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 16, f.parent, pasid),
            Errno::EINVAL,
        ),
        (
            "attach: PASID 0",
            "vsva: PASID 0 is never handed out",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 16, f.nested, 0),
            Errno::EINVAL,
        ),
        (
            "attach: PASID nobody owns",
            "vsva: ownership in the host-wide space",
            3,
            VFIO_DEVICE_ATTACH_IOMMUFD_PT,
            attach(VFIO_DEVICE_ATTACH_PASID, 16, f.nested, pasid + 1),
            Errno::ENOENT,
        ),
        (
            "detach: flags",
            "vfio_df_ioctl_detach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            detach(2, 12),
            Errno::EINVAL,
        ),
        (
            "detach: PASID flag, argsz without pasid",
            "vfio_df_ioctl_detach_pt (vfio/device_cdev.c)",
            3,
            VFIO_DEVICE_DETACH_IOMMUFD_PT,
            detach(VFIO_DEVICE_DETACH_PASID, 8),
            Errno::EINVAL,
        ),
        (
            "unknown device ioctl",
            "vfio_device_fops_unl_ioctl (vfio/vfio_main.c)",
            3,
            0x3b79,
            detach(0, 12),
            Errno::ENOTTY,
        ),
    ];
    let before = f.ctx.objects();
    for (what, linux, dev, cmd, mut buf, errno) in cases {
        let got = f
            .ctx
            .device_ioctl(sid(dev), cmd, &mut buf)
            .map_err(|e| e.errno());
        assert_eq!(got, Err(errno), "{what} (follows {linux})");
        assert_eq!(f.ctx.objects(), before, "{what} changed the context");
    }
}
