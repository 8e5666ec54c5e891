//! IOMMU_HWPT_ALLOC cases that need their own host or a later attach: what current Linux
//! checks of the VT-d stage 1 at allocation (nothing but its copy) and at attach
//! (`intel_pasid_setup_nested`), the parent check before the driver's nesting check, and a
//! nest parent on an IOMMU without nesting.

use std::sync::Arc;

use vsva_iommu::{HostMemory, Iommu, IommuConfig};
use vsva_vfio::{Vfio, VfioConfig};

use super::*;

/// A host whose IOMMU is the default one changed by `change` (the rest as [`host`]), with
/// device 3 bound to a context of process 1 and an IOAS: the host, the context, the
/// device's id and the IOAS's.
fn bound_on(change: impl FnOnce(&mut IommuConfig)) -> (Vfio, IommufdCtx, u32, u32) {
    let mut cfg = IommuConfig {
        iotlb_entries: 1024,
        ..IommuConfig::default()
    };
    change(&mut cfg);
    let mem = HostMemory::anonymous(&[(0, HOST_SIZE as usize)]).unwrap();
    let iommu = Arc::new(Iommu::new(cfg, mem, POOL, HOST_SIZE - POOL).unwrap());
    let vfio = Vfio::new(iommu, VfioConfig::default()).unwrap();
    function(&vfio, 3);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev = bind(&ctx, 3);
    let ioas = ioas_alloc(&ctx);
    (vfio, ctx, dev, ioas)
}

/// A nested HWPT (PASID-capable) with stage 1 `s1` over `parent`.
fn nested_with(f: &Fx, s1: &IommuHwptVtdS1) -> Result<u32, Errno> {
    let mut buf = nested_buf(f.dev, f.parent, s1, IOMMU_HWPT_ALLOC_PASID, 0);
    call(&f.ctx, IOMMU_HWPT_ALLOC, &mut buf)?;
    Ok(back::<IommuHwptAlloc>(&buf).out_hwpt_id)
}

/// `intel_iommu_domain_alloc_nested` (intel/nested.c) copies the stage 1 and checks none of
/// its fields: unknown `flags` bits and `__reserved` are accepted, and ignored at attach
/// (`intel_pasid_setup_nested` looks only at SRE, EAFE and WPE).
#[test]
fn vtd_s1_flags_and_reserved_are_not_checked() {
    let f = fixture();
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    for s1 in [
        IommuHwptVtdS1 {
            flags: 1 << 5,
            ..s1(MB)
        },
        IommuHwptVtdS1 {
            reserved: 1,
            ..s1(MB)
        },
    ] {
        let hwpt = nested_with(&f, &s1).expect("allocated");
        assert_eq!(attach(&f.ctx, 3, hwpt, Some(pasid)), Ok(hwpt));
        let mut buf = VfioDeviceDetachIommufdPt {
            argsz: 12,
            flags: VFIO_DEVICE_DETACH_PASID,
            pasid,
        }
        .as_bytes()
        .to_vec();
        f.ctx
            .device_ioctl(sid(3), VFIO_DEVICE_DETACH_IOMMUFD_PT, &mut buf)
            .unwrap();
    }
}

/// The stage 1's address width is checked when a device is attached
/// (`intel_pasid_setup_nested`: `EINVAL`), not at allocation.
#[test]
fn vtd_s1_addr_width_is_checked_at_attach() {
    let f = fixture();
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    let hwpt = nested_with(
        &f,
        &IommuHwptVtdS1 {
            addr_width: 39,
            ..s1(MB)
        },
    )
    .expect("allocated");
    assert_eq!(attach(&f.ctx, 3, hwpt, Some(pasid)), Err(Errno::EINVAL));
}

/// SRE on an IOMMU without ECAP.SRS: allocated, refused at attach with `EINVAL`
/// (`intel_pasid_setup_nested`).
#[test]
fn vtd_s1_sre_without_srs_is_einval_at_attach() {
    let (_vfio, ctx, dev, ioas) = bound_on(|c| c.srs = false);
    map_guest_ram(&ctx, ioas);
    let parent = hwpt_paging(&ctx, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let s1 = IommuHwptVtdS1 {
        flags: IOMMU_VTD_S1_SRE,
        ..s1(MB)
    };
    let mut buf = nested_buf(dev, parent, &s1, IOMMU_HWPT_ALLOC_PASID, 0);
    call(&ctx, IOMMU_HWPT_ALLOC, &mut buf).expect("allocated");
    let hwpt = back::<IommuHwptAlloc>(&buf).out_hwpt_id;
    let pasid = ctx.alloc_pasid(1, 100).unwrap();
    assert_eq!(attach(&ctx, 3, hwpt, Some(pasid)), Err(Errno::EINVAL));
}

/// `iommufd_hwpt_nested_alloc` (hw_pagetable.c) refuses a parent that is not a nest parent
/// (`EINVAL`) before the driver's `intel_iommu_domain_alloc_nested` refuses an IOMMU
/// without nesting (`EOPNOTSUPP`).
#[test]
fn a_plain_parent_is_einval_before_no_nesting() {
    let (_vfio, ctx, dev, ioas) = bound_on(|c| c.nesting = false);
    let plain = hwpt_paging(&ctx, dev, ioas, 0).unwrap();
    let mut buf = nested_buf(dev, plain, &s1(MB), 0, 0);
    assert_eq!(call(&ctx, IOMMU_HWPT_ALLOC, &mut buf), Err(Errno::EINVAL));
}

/// The VT-d driver's `intel_iommu_domain_alloc_second_stage` (intel/iommu.c, reached from
/// `intel_iommu_domain_alloc_paging_flags`) refuses a nest parent on an IOMMU without
/// nesting (`nested_supported`): `EOPNOTSUPP`, and nothing is made; a plain paging HWPT is.
#[test]
fn a_nest_parent_needs_an_iommu_with_nesting() {
    let (_vfio, ctx, dev, ioas) = bound_on(|c| c.nesting = false);
    let before = ctx.objects();
    assert_eq!(
        hwpt_paging(&ctx, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT),
        Err(Errno::EOPNOTSUPP)
    );
    assert_eq!(ctx.objects(), before);
    hwpt_paging(&ctx, dev, ioas, 0).unwrap();
}

/// `iommufd_hwpt_alloc` checks `__reserved` only; `__reserved2` is not looked at.
#[test]
fn reserved2_is_not_checked() {
    let f = fixture();
    let mut buf = arg(
        &IommuHwptAlloc {
            dev_id: f.dev,
            pt_id: f.ioas,
            reserved2: 1,
            ..Default::default()
        },
        0,
    );
    assert_eq!(call(&f.ctx, IOMMU_HWPT_ALLOC, &mut buf), Ok(()));
}
