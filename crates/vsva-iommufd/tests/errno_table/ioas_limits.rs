//! The rows of the IOAS ioctls at the top of the range (Linux 6.17): each limit of
//! `IOMMU_IOAS_MAP`, `IOMMU_IOAS_UNMAP` and `IOMMU_IOAS_COPY` with the value just under it,
//! which a later check refuses (or the pin, for memory not backed).

use super::*;

pub(super) fn rows(f: &Fx) -> Vec<Row> {
    let (map, unmap, copy) = ioas_cmds(f);
    vec![
        // IOMMU_IOAS_MAP at the top of the range.
        row(
            "iova ULONG_MAX",
            "iommufd_ioas_map (ioas.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: u64::MAX,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "iova ULONG_MAX - 1 (just under: an unaligned IOVA)",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: u64::MAX - 1,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length ULONG_MAX - 1, user_va 0 (just under ULONG_MAX: over SIZE_MAX - PAGE_SIZE)",
            "iopt_alloc_pages (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: 0,
                    length: u64::MAX - 1,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length SIZE_MAX - PAGE_SIZE + 1 (page aligned), user_va 0",
            "iopt_alloc_pages (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: 0,
                    length: u64::MAX - 0xfff,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length SIZE_MAX - PAGE_SIZE - 0xfff (page aligned, just under), user_va 0: iova + length wraps",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: 0,
                    length: u64::MAX - 0x1fff,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "length SIZE_MAX - PAGE_SIZE - 0xfff, user_va 0, iova 0: reaches the reserved space",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: 0,
                    length: u64::MAX - 0x1fff,
                    iova: 0,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length SIZE_MAX - PAGE_SIZE + 1, user_va 0x1000: user_va + length is 2^64",
            "iopt_alloc_user_pages before iopt_alloc_pages (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: 0x1000,
                    length: u64::MAX - 0xfff,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "zero length, user_va ULONG_MAX (user_va + 0 does not wrap)",
            "iopt_alloc_pages (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: u64::MAX,
                    length: 0,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "user_va + length one page under 2^64 (just under the wrap): not backed",
            "iopt_alloc_user_pages, then the pin (pages.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    user_va: u64::MAX - 0x1fff,
                    ..map
                },
                0,
            ),
            Errno::EFAULT,
        ),
        row(
            "iova + length exactly 2^64 (last byte ULONG_MAX): reserved",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: u64::MAX - 0xfff,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "iova + length one page past 2^64",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    iova: u64::MAX - 0xfff,
                    length: 0x2000,
                    ..map
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "length ULONG_MAX / 2 without FIXED_IOVA: unaligned, refused before iopt_alloc_iova's EOVERFLOW",
            "iopt_alloc_area_pages before iopt_alloc_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    flags: IOMMU_IOAS_MAP_READABLE,
                    length: u64::MAX / 2,
                    ..map
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "length 2^63 - 0x1000 without FIXED_IOVA (just under ULONG_MAX / 2): no room",
            "iopt_alloc_iova (io_pagetable.c)",
            IOMMU_IOAS_MAP,
            arg(
                &IommuIoasMap {
                    flags: IOMMU_IOAS_MAP_READABLE,
                    length: (1 << 63) - 0x1000,
                    ..map
                },
                0,
            ),
            Errno::ENOSPC,
        ),
        // IOMMU_IOAS_UNMAP at the top of the range.
        row(
            "length ULONG_MAX with iova not 0 (only iova 0 means everything)",
            "iommufd_ioas_unmap (ioas.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: 0x1000,
                    length: u64::MAX,
                    ..unmap
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "length ULONG_MAX - 1 from iova 1 (just under): the mapping at 0 sticks out",
            "iopt_unmap_iova_range (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: 1,
                    length: u64::MAX - 1,
                    ..unmap
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "iova ULONG_MAX - 1 (just under), length 1: nothing mapped",
            "iopt_unmap_iova_range (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: u64::MAX - 1,
                    length: 1,
                    ..unmap
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "iova + length exactly 2^64 (last byte ULONG_MAX): nothing mapped",
            "iopt_unmap_iova (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: u64::MAX - 0xfff,
                    length: 0x1000,
                    ..unmap
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "iova + length one page past 2^64",
            "iopt_unmap_iova (io_pagetable.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: u64::MAX - 0xfff,
                    length: 0x2000,
                    ..unmap
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "zero length, iova ULONG_MAX (the ULONG_MAX check first)",
            "iommufd_ioas_unmap before iopt_unmap_iova (ioas.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    iova: u64::MAX,
                    length: 0,
                    ..unmap
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "length ULONG_MAX, unknown IOAS (the IOAS is looked up first)",
            "iommufd_ioas_unmap (ioas.c)",
            IOMMU_IOAS_UNMAP,
            arg(
                &IommuIoasUnmap {
                    ioas_id: 99,
                    iova: 0x1000,
                    length: u64::MAX,
                    ..unmap
                },
                0,
            ),
            Errno::ENOENT,
        ),
        // IOMMU_IOAS_COPY at the top of the range.
        row(
            "src_iova ULONG_MAX",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    src_iova: u64::MAX,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "dst_iova ULONG_MAX",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_iova: u64::MAX,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "dst_iova ULONG_MAX, unknown source (before iommufd_get_ioas)",
            "iommufd_ioas_copy (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_iova: u64::MAX,
                    src_ioas_id: 99,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "zero length, src_iova ULONG_MAX (the ULONG_MAX checks first)",
            "iommufd_ioas_copy before iopt_get_pages (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    length: 0,
                    src_iova: u64::MAX,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "length ULONG_MAX - 1 from src_iova 0 (just under): not wholly mapped",
            "iopt_get_pages (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    length: u64::MAX - 1,
                    ..copy
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "length ULONG_MAX - 1 from src_iova 2 (last byte ULONG_MAX): mapped at the start only",
            "iopt_get_pages (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    length: u64::MAX - 1,
                    src_iova: 2,
                    ..copy
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "length ULONG_MAX - 1 from src_iova 3: src_iova + length wraps",
            "iopt_get_pages (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    length: u64::MAX - 1,
                    src_iova: 3,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "src_iova + length exactly 2^64 (last byte ULONG_MAX): not mapped",
            "iopt_get_pages (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    src_iova: u64::MAX - 0xfff,
                    ..copy
                },
                0,
            ),
            Errno::ENOENT,
        ),
        row(
            "src_iova + length one page past 2^64, unknown destination",
            "iopt_get_pages before the destination's iommufd_get_ioas (ioas.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    src_iova: u64::MAX - 0xfff,
                    length: 0x2000,
                    dst_ioas_id: 99,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
        row(
            "dst_iova + length exactly 2^64 (last byte ULONG_MAX): reserved",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_iova: u64::MAX - 0xfff,
                    ..copy
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "dst_iova + length one page past 2^64",
            "iopt_check_iova (io_pagetable.c)",
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_iova: u64::MAX - 0xfff,
                    length: 0x2000,
                    ..copy
                },
                0,
            ),
            Errno::EOVERFLOW,
        ),
    ]
}
