//! The rows of the argument reader, IOMMU_DESTROY and the IOAS ioctls.

use super::*;

pub(super) fn rows(f: &Fx) -> Vec<Row> {
    let (map, unmap, copy) = ioas_cmds(f);
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
            "no READABLE or WRITEABLE, unknown IOAS (flags are checked first)",
            "iommufd_ioas_map (ioas.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    flags: IOMMU_IOAS_MAP_FIXED_IOVA,
                    ioas_id: 99,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length ULONG_MAX, unknown IOAS (before iommufd_get_ioas)",
            "iommufd_ioas_map (ioas.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    length: u64::MAX,
                    ioas_id: 99,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "user_va + length wraps",
            "iopt_alloc_user_pages (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: u64::MAX - 0xfff,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "unaligned length",
            "iopt_alloc_area_pages (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    length: 0x1800,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "user_va not backed at an IOVA already mapped (the IOVA is checked before pinning)",
            "iopt_alloc_area_pages before iopt_area_fill_domains (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: HOST_SIZE,
                    iova: 0,
                    ..map
                },
                0,
            ),
            Errno::EEXIST,
        ),
        row(
            "unaligned user_va at an IOVA already mapped (the IOVA is checked first)",
            "iopt_check_iova before iopt_insert_area (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: GUEST_HPA + 0x800,
                    iova: 0,
                    ..map
                },
                0,
            ),
            Errno::EEXIST,
        ),
        row(
            "unaligned user_va",
            "iopt_insert_area (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: GUEST_HPA + 0x800,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length 2^63 without FIXED_IOVA",
            "iopt_alloc_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    flags: IOMMU_IOAS_MAP_READABLE,
                    length: 1 << 63,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
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
            "unknown flag with length ULONG_MAX (flags are checked first)",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    flags: 1 << 4,
                    length: u64::MAX,
                    ..copy
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "no READABLE or WRITEABLE, unknown source (before iommufd_get_ioas)",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    flags: IOMMU_IOAS_MAP_FIXED_IOVA,
                    src_ioas_id: 99,
                    ..copy
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "zero length, unknown destination",
            "iopt_get_pages (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    length: 0,
                    dst_ioas_id: 99,
                    ..copy
                },
                0,
            ),
            Errno::EINVAL,
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
            "a bad first range, the second outside the buffer (read one at a time)",
            "iommufd_ioas_load_iovas (ioas.c)",
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(
                &IommuIoasAllowIovas {
                    num_iovas: 2,
                    ..allow
                },
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
    ]
}
