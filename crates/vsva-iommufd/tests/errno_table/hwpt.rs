//! The rows of IOMMU_HWPT_ALLOC, IOMMU_HWPT_INVALIDATE, IOMMU_GET_HW_INFO and IOMMU_FAULT_QUEUE_ALLOC.

use super::*;

pub(super) fn rows(f: &Fx) -> Vec<Row> {
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
            "iommufd_hwpt_alloc: a failed iommufd_get_object is -EINVAL (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    pt_id: 99,
                    ..paging
                },
                0,
            ),
            Errno::EINVAL,
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
            "FAULT_ID_VALID with NEST_PARENT, unknown fault queue (before the lookup)",
            "iommufd_hwpt_paging_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_NEST_PARENT,
                    fault_id: 99,
                    ..paging
                },
                0,
            ),
            Errno::EOPNOTSUPP,
        ),
        row(
            "FAULT_ID_VALID with NEST_PARENT, a fault queue",
            "iommufd_hwpt_paging_alloc (hw_pagetable.c)",
            IOMMU_HWPT_ALLOC,
            arg(
                &IommuHwptAlloc {
                    flags: IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_NEST_PARENT,
                    fault_id: f.fault,
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
