//! PASIDs with iommufd: allocated from the process's own set in the host-wide space, and a
//! PASID attach allowed only for a PASID that set owns. Devices: one holder at a time.

mod common;

use common::*;
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use vsva_vfio::{GroupId, IommuType};

/// A context of `proc` with function `dev` bound and a PASID-capable nested HWPT.
fn nested_ctx(vfio: &vsva_vfio::Vfio, proc: u32, dev: u8) -> (IommufdCtx, u32) {
    let ctx = IommufdCtx::open(vfio, process(proc)).unwrap();
    let dev_id = bind(&ctx, dev);
    let ioas = ioas_alloc(&ctx);
    map_guest_ram(&ctx, ioas);
    let parent = hwpt_paging(&ctx, dev_id, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let nested = hwpt_nested(&ctx, dev_id, parent, MB, IOMMU_HWPT_ALLOC_PASID, 0).unwrap();
    (ctx, nested)
}

#[test]
fn one_context_cannot_use_another_process_pasid() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let (a, nested_a) = nested_ctx(&vfio, 1, 3);
    let (b, nested_b) = nested_ctx(&vfio, 2, 4);
    let pa = a.alloc_pasid(1, 100).unwrap();
    let pb = b.alloc_pasid(1, 100).unwrap();
    assert_ne!(pa, pb, "one host-wide space");
    assert_eq!(attach(&b, 4, nested_b, Some(pa)), Err(Errno::EACCES));
    assert_eq!(attach(&a, 3, nested_a, Some(pb)), Err(Errno::EACCES));
    assert_eq!(attach(&b, 4, nested_b, Some(pb)), Ok(nested_b));
    assert_eq!(attach(&a, 3, nested_a, Some(pa)), Ok(nested_a));
}

#[test]
fn the_process_set_is_shared_with_its_containers_and_freed_pasids_detach_quietly() {
    let vfio = host();
    let dev = function(&vfio, 3);
    let (ctx, nested) = nested_ctx(&vfio, 1, 3);
    // The same process's other contexts share its set (and quota).
    let other = IommufdCtx::open(&vfio, process(1)).unwrap();
    let p = other.alloc_pasid(1, 100).unwrap();
    assert_eq!(attach(&ctx, 3, nested, Some(p)), Ok(nested));
    let mm = vfio.find_process_context(process(1)).unwrap();
    assert_eq!(mm.pasids(), vec![p]);
    drop(mm);
    // Freeing the PASID tears its entry down; DMA with it faults, detach still answers 0.
    assert_eq!(other.free_pasids(p, p).unwrap(), 1);
    assert!(dev.dma_read(Some(p), 0, &mut [0u8; 4]).is_err());
    ctx.detach(1, Some(p)).unwrap();
    assert_eq!(attach(&ctx, 3, nested, Some(p)), Err(Errno::ENOENT));
}

#[test]
fn a_bound_device_has_one_holder() {
    let vfio = host();
    function(&vfio, 3);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev_id = bind(&ctx, 3);
    let container = vfio.open_container(process(2));
    assert_eq!(
        container.attach_group(GroupId(3)).unwrap_err().errno(),
        Errno::EBUSY
    );
    let other = IommufdCtx::open(&vfio, process(2)).unwrap();
    assert_eq!(other.bind_device(sid(3)).unwrap_err().errno(), Errno::EBUSY);
    ctx.unbind_device(dev_id).unwrap();
    container.attach_group(GroupId(3)).unwrap();
    container.set_iommu(IommuType::Nesting).unwrap();
    assert_eq!(ctx.bind_device(sid(3)).unwrap_err().errno(), Errno::EBUSY);
}
