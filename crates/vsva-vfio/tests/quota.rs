//! Quotas: one per process across its containers, default 1000, returned when the context
//! goes, changed only by the admin path, visible through GET_INFO.

mod common;

use common::*;
use vsva_uapi::vfio::{VFIO_IOMMU_GET_INFO, VFIO_IOMMU_PASID_REQUEST};
use vsva_uapi::{Errno, PasidRequestOp};
use vsva_vfio::{Container, InfoCapPasidQuota, IommuType, VSVA_INFO_CAP_PASID_QUOTA};
use zerocopy::FromBytes;

fn alloc(c: &Container) -> Result<u64, Errno> {
    let mut arg = PasidRequestOp::alloc(1, u32::MAX).unwrap().to_bytes();
    call(c, VFIO_IOMMU_PASID_REQUEST, &mut arg)
}

/// The quota capability from GET_INFO's chain (the last one, after the series' capabilities).
fn quota_cap(c: &Container) -> InfoCapPasidQuota {
    let mut arg = vec![0u8; 256];
    arg[..4].copy_from_slice(&256u32.to_le_bytes());
    assert_eq!(call(c, VFIO_IOMMU_GET_INFO, &mut arg), Ok(0));
    let next = |at: usize| u32::from_le_bytes(arg[at + 4..at + 8].try_into().unwrap()) as usize;
    let mut at = u32::from_le_bytes(arg[16..20].try_into().unwrap()) as usize;
    while next(at) != 0 {
        at = next(at);
    }
    let cap = InfoCapPasidQuota::read_from_prefix(&arg[at..]).unwrap().0;
    assert_eq!(cap.header.id, VSVA_INFO_CAP_PASID_QUOTA);
    cap
}

#[test]
fn the_1001st_allocation_fails_at_the_default_quota() {
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    for i in 1..=1000 {
        assert_eq!(alloc(&c), Ok(i), "allocation {i}");
    }
    assert_eq!(alloc(&c), Err(Errno::ENOSPC));
    let err = c.alloc_pasid(1, u32::MAX).unwrap_err();
    assert!(err.to_string().contains("quota"), "{err}");
    let cap = quota_cap(&c);
    assert_eq!((cap.quota, cap.owned), (1000, 1000));
    // Freeing one makes room for exactly one.
    c.free_pasids(500, 500).unwrap();
    assert_eq!(alloc(&c), Ok(500));
    assert_eq!(alloc(&c), Err(Errno::ENOSPC));
}

#[test]
fn containers_of_one_process_share_one_quota_and_release_returns_it() {
    let vfio = host();
    for dev in 3..=5 {
        function(&vfio, dev);
    }
    let vm = process(1);
    let c1 = container(&vfio, vm, 3, IommuType::Nesting);
    let c2 = container(&vfio, vm, 4, IommuType::Nesting);
    let other = container(&vfio, process(2), 5, IommuType::Nesting);
    for _ in 0..600 {
        alloc(&c1).unwrap();
    }
    for _ in 0..400 {
        alloc(&c2).unwrap();
    }
    assert_eq!(alloc(&c1), Err(Errno::ENOSPC));
    assert_eq!(alloc(&c2), Err(Errno::ENOSPC));
    // Another process has its own quota.
    assert_eq!(alloc(&other), Ok(1001));
    assert_eq!(quota_cap(&c1).owned, 1000);
    assert_eq!(quota_cap(&c2).owned, 1000);
    // A free through one container makes room for the other.
    assert_eq!(c2.free_pasids(1, 1).unwrap(), 1);
    assert_eq!(alloc(&c1), Ok(1));

    // Closing one container keeps the context (the other holds it).
    drop(c1);
    assert_eq!(vfio.find_process_context(vm).unwrap().owned(), 1000);
    // Closing the last returns the whole quota: every PASID freed, the set retired.
    let stats_before = vfio.pasid_space().stats();
    assert_eq!(stats_before.allocated, 1001);
    drop(c2);
    assert!(vfio.find_process_context(vm).is_none());
    assert_eq!(vfio.pasid_space().stats().allocated, 1);
    assert_eq!(vfio.processes().len(), 1);

    // A new container of the same process starts over with the full default quota.
    let c3 = container(&vfio, vm, 3, IommuType::Nesting);
    for _ in 0..1000 {
        alloc(&c3).unwrap();
    }
    assert_eq!(alloc(&c3), Err(Errno::ENOSPC));
}

#[test]
fn admin_path_changes_the_quota() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let vm = process(1);
    let c = container(&vfio, vm, 3, IommuType::Nesting);
    let other = container(&vfio, process(2), 4, IommuType::Nesting);
    vfio.set_pasid_quota(vm, 3).unwrap();
    assert_eq!(quota_cap(&c).quota, 3);
    assert_eq!(c.info().unwrap().pasid_quota.unwrap().quota, 3);
    for _ in 0..3 {
        alloc(&c).unwrap();
    }
    assert_eq!(alloc(&c), Err(Errno::ENOSPC));
    // Lowering below what it owns frees nothing.
    vfio.set_pasid_quota(vm, 1).unwrap();
    assert_eq!(c.process_context().unwrap().owned(), 3);
    c.free_pasids(1, 1).unwrap();
    assert_eq!(alloc(&c), Err(Errno::ENOSPC));
    vfio.set_pasid_quota(vm, 10).unwrap();
    assert!(alloc(&c).is_ok());
    // Another process is unaffected; the admin report lists both.
    assert_eq!(quota_cap(&other).quota, 1000);
    let report = vfio.processes();
    assert_eq!(report.len(), 2);
    assert_eq!(report[0].process, vm);
    assert_eq!((report[0].set.quota, report[0].set.owned), (10, 3));
    // A process without a context: ESRCH.
    let err = vfio.set_pasid_quota(process(9), 5).unwrap_err();
    assert_eq!(err.errno(), Errno::ESRCH);
}

#[test]
fn configured_quota_applies_to_new_contexts() {
    let vfio = host_with(
        small_iommu_config(),
        vsva_vfio::VfioConfig {
            pasid_quota: 2,
            ..vsva_vfio::VfioConfig::default()
        },
    );
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    assert_eq!(alloc(&c), Ok(1));
    assert_eq!(alloc(&c), Ok(2));
    assert_eq!(alloc(&c), Err(Errno::ENOSPC));
    assert_eq!(vfio.process_context(process(1)).unwrap().quota(), 2);
}
