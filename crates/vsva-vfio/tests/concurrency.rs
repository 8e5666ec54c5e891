//! Threads: bind, unbind and invalidate of one process race with its frees from another
//! container, and several processes allocate in parallel. Afterwards the IOMMU must hold a
//! PASID entry exactly for the PASIDs recorded as bound, and those only for PASIDs the
//! process still owns.

mod common;

use std::collections::BTreeSet;
use std::sync::Barrier;
use std::thread;

use common::*;
use vsva_ioasid::Pasid;
use vsva_uapi::vfio::{VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Errno, Granularity, NestingOp,
    PasidRequestOp,
};
use vsva_vfio::IommuType;

const ROUNDS: u32 = 3000;
const RANGE: u32 = 16;

#[test]
fn binds_and_frees_of_one_process_are_serialized() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let vm = process(1);
    let c1 = container(&vfio, vm, 3, IommuType::Nesting);
    let c2 = container(&vfio, vm, 4, IommuType::Nesting);
    let barrier = Barrier::new(3);
    thread::scope(|s| {
        // Binder: allocate, bind (through the other container), sometimes unbind.
        s.spawn(|| {
            barrier.wait();
            for i in 0..ROUNDS {
                let mut arg = PasidRequestOp::alloc(1, RANGE).unwrap().to_bytes();
                let Ok(p) = c2
                    .ioctl(VFIO_IOMMU_PASID_REQUEST, &mut arg)
                    .map(|o| o.value())
                else {
                    continue;
                };
                let bind = BindRequest::new(p, 0x10_0000, AddrWidth::Bits48);
                let mut arg = NestingOp::Bind(bind).to_bytes();
                // The PASID may be freed by the other thread at any moment.
                match c1.ioctl(VFIO_IOMMU_NESTING_OP, &mut arg) {
                    Ok(_) => {}
                    Err(e) => assert_eq!(e.errno(), Errno::ENOENT, "{e}"),
                }
                if i % 3 == 0 {
                    let mut arg = NestingOp::Unbind(bind).to_bytes();
                    if let Err(e) = c1.ioctl(VFIO_IOMMU_NESTING_OP, &mut arg) {
                        assert_eq!(e.errno(), Errno::ENOENT, "{e}");
                    }
                }
            }
        });
        // Freer: frees ranges of the process's PASIDs through the second container.
        s.spawn(|| {
            barrier.wait();
            for i in 0..ROUNDS {
                let lo = i % RANGE;
                c2.free_pasids(lo, lo + 3).unwrap();
            }
        });
        // Invalidator: passes invalidations for whatever PASID, owned or not.
        s.spawn(|| {
            barrier.wait();
            for i in 0..ROUNDS {
                let pasid = u64::from(1 + i % RANGE);
                let req = CacheInvalidateRequest::new(
                    CacheSet::ALL,
                    Granularity::Pasid {
                        pasid: Some(pasid),
                        archid: None,
                    },
                )
                .unwrap();
                let mut arg = NestingOp::Invalidate(req).to_bytes();
                if let Err(e) = c1.ioctl(VFIO_IOMMU_NESTING_OP, &mut arg) {
                    assert_eq!(e.errno(), Errno::ENOENT, "{e}");
                }
            }
        });
    });
    let mm = c1.process_context().unwrap();
    let owned: BTreeSet<Pasid> = mm.pasids().into_iter().collect();
    let bound: BTreeSet<Pasid> = c1.bound_pasids().into_iter().collect();
    assert!(bound.is_subset(&owned), "bound {bound:?} owned {owned:?}");
    for p in 1..=RANGE {
        let present = vfio
            .iommu()
            .read_pasid_entry(sid(3), p)
            .unwrap()
            .is_some_and(|w| w[0] & 1 == 1);
        assert_eq!(
            present,
            bound.contains(&p),
            "PASID {p}: entry present = {present}"
        );
        // The other container's device never gets entries: binds went through c1 only.
        let other = vfio
            .iommu()
            .read_pasid_entry(sid(4), p)
            .unwrap()
            .is_some_and(|w| w[0] & 1 == 1);
        assert!(!other, "PASID {p} on 00:04.0");
    }
}

#[test]
fn processes_allocate_in_parallel_without_sharing_a_pasid() {
    let vfio = host();
    let containers: Vec<_> = (0..4u8)
        .map(|i| {
            function(&vfio, 3 + i);
            container(
                &vfio,
                process(u32::from(i)),
                3 + u32::from(i),
                IommuType::Nesting,
            )
        })
        .collect();
    thread::scope(|s| {
        for c in &containers {
            s.spawn(move || {
                let mut held = Vec::new();
                for i in 0..300u32 {
                    held.push(c.alloc_pasid(1, u32::MAX).unwrap());
                    if i % 4 == 3 {
                        let victim = held.remove((i as usize * 7) % held.len());
                        assert_eq!(c.free_pasids(victim, victim).unwrap(), 1);
                    }
                }
                assert_eq!(
                    c.process_context().unwrap().pasids(),
                    held.iter()
                        .copied()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                );
            });
        }
    });
    let mut all = BTreeSet::new();
    for c in &containers {
        for p in c.process_context().unwrap().pasids() {
            assert!(all.insert(p), "PASID {p} owned twice");
        }
    }
    assert_eq!(vfio.pasid_space().stats().allocated, all.len() as u64);
}
