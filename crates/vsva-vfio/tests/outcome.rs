//! The typed outcome of each container ioctl, and the journal hook: one process's PASID
//! changes are journaled in the order they happened, under its own lock.

mod common;

use std::collections::BTreeSet;
use std::sync::{Barrier, Mutex};
use std::thread;

use common::*;
use vsva_uapi::vfio::{
    DmaUnmap, Type1Info, VFIO_CHECK_EXTENSION, VFIO_GET_API_VERSION, VFIO_IOMMU_GET_INFO,
    VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU,
    VFIO_UNMAP_ALL,
};
use vsva_uapi::{AddrWidth, BindRequest, Errno, NestingOp, NestingOpKind, PasidRequestOp};
use vsva_vfio::{GroupId, IoctlOutcome, IommuType};
use zerocopy::IntoBytes;

/// A command, its argument, and the outcome, return value and write-back it must give.
type Row = (&'static str, u32, Vec<u8>, IoctlOutcome, u64, bool);

#[test]
fn each_command_says_what_it_did() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let fresh = vfio.open_container(process(2));
    fresh.attach_group(GroupId(4)).unwrap();
    let set = fresh
        .ioctl(VFIO_SET_IOMMU, &mut 6u64.to_le_bytes())
        .unwrap();
    assert_eq!(set, IoctlOutcome::IommuSet(IommuType::Nesting));
    assert_eq!(set.value(), 0);

    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    let info = Type1Info {
        argsz: 256,
        ..Type1Info::default()
    };
    let mut info_arg = info.as_bytes().to_vec();
    info_arg.resize(256, 0);
    let unmap = DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        flags: 0,
        iova: 0,
        size: GUEST_SIZE,
    };
    let alloc = PasidRequestOp::alloc(5, 100).unwrap().to_bytes();
    let bind = NestingOp::Bind(BindRequest::new(5, 0x10_0000, AddrWidth::Bits48)).to_bytes();
    let unbind = NestingOp::Unbind(BindRequest::new(5, 0, AddrWidth::Bits48)).to_bytes();
    let free = PasidRequestOp::free(0, 10).unwrap().to_bytes();
    // In order: each row may rely on the ones before it.
    let rows: Vec<Row> = vec![
        (
            "api version",
            VFIO_GET_API_VERSION,
            vec![],
            IoctlOutcome::Value(0),
            0,
            false,
        ),
        (
            "extension",
            VFIO_CHECK_EXTENSION,
            VFIO_UNMAP_ALL.to_le_bytes().to_vec(),
            IoctlOutcome::Value(1),
            1,
            false,
        ),
        (
            "get info",
            VFIO_IOMMU_GET_INFO,
            info_arg,
            IoctlOutcome::InfoWritten,
            0,
            true,
        ),
        (
            "map",
            MAP_DMA,
            map_dma_bytes(GUEST_HPA, 0, GUEST_SIZE, 3),
            IoctlOutcome::Mapped,
            0,
            false,
        ),
        (
            "unmap",
            VFIO_IOMMU_UNMAP_DMA,
            unmap.as_bytes().to_vec(),
            IoctlOutcome::Unmapped { size: GUEST_SIZE },
            0,
            true,
        ),
        (
            "alloc",
            VFIO_IOMMU_PASID_REQUEST,
            alloc,
            IoctlOutcome::PasidAllocated(5),
            5,
            false,
        ),
        (
            "bind",
            VFIO_IOMMU_NESTING_OP,
            bind,
            IoctlOutcome::Nesting(NestingOpKind::BindPgtbl),
            0,
            false,
        ),
        (
            "unbind",
            VFIO_IOMMU_NESTING_OP,
            unbind,
            IoctlOutcome::Nesting(NestingOpKind::UnbindPgtbl),
            0,
            false,
        ),
        (
            "free",
            VFIO_IOMMU_PASID_REQUEST,
            free,
            IoctlOutcome::PasidsFreed {
                min: 0,
                max: 10,
                count: 1,
            },
            0,
            false,
        ),
    ];
    for (name, cmd, mut arg, want, value, wrote_back) in rows {
        let mut journaled = Vec::new();
        let got = c
            .ioctl_journaled(cmd, &mut arg, |o| journaled.push(*o))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
        assert_eq!(got.value(), value, "{name}");
        assert_eq!(got.wrote_back(), wrote_back, "{name}");
        assert_eq!(journaled, vec![want], "{name}: journaled once");
    }
    let mut bad = PasidRequestOp::alloc(1, 2).unwrap().to_bytes();
    bad[4] = 3;
    let mut called = false;
    assert!(c
        .ioctl_journaled(VFIO_IOMMU_PASID_REQUEST, &mut bad, |_| called = true)
        .is_err());
    assert!(!called, "no journal for a failed request");
}

#[test]
fn one_process_is_journaled_in_the_order_of_its_changes() {
    const ROUNDS: u32 = 5000;
    const RANGE: u32 = 8;
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let vm = process(1);
    let containers = [
        container(&vfio, vm, 3, IommuType::Nesting),
        container(&vfio, vm, 4, IommuType::Nesting),
    ];
    let journal = Mutex::new(Vec::new());
    let barrier = Barrier::new(4);
    thread::scope(|s| {
        for (i, c) in containers.iter().enumerate() {
            let (journal, barrier) = (&journal, &barrier);
            // An allocator and a freer on each container of the process.
            s.spawn(move || {
                barrier.wait();
                for _ in 0..ROUNDS {
                    let mut arg = PasidRequestOp::alloc(1, RANGE).unwrap().to_bytes();
                    let record = |o: &IoctlOutcome| journal.lock().unwrap().push(*o);
                    if let Err(e) = c.ioctl_journaled(VFIO_IOMMU_PASID_REQUEST, &mut arg, record) {
                        assert_eq!(e.errno(), Errno::ENOSPC, "{e}");
                    }
                }
            });
            s.spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    let lo = (round + i as u32) % RANGE;
                    let mut arg = PasidRequestOp::free(lo, lo + 2).unwrap().to_bytes();
                    let record = |o: &IoctlOutcome| journal.lock().unwrap().push(*o);
                    c.ioctl_journaled(VFIO_IOMMU_PASID_REQUEST, &mut arg, record)
                        .unwrap();
                }
            });
        }
    });
    // Replaying the journal must reproduce every step: an allocation never names a PASID
    // the process holds, a free counts exactly what it held in the range.
    let mut owned = BTreeSet::new();
    for (i, record) in journal.into_inner().unwrap().into_iter().enumerate() {
        match record {
            IoctlOutcome::PasidAllocated(p) => assert!(owned.insert(p), "record {i}: {p} twice"),
            IoctlOutcome::PasidsFreed { min, max, count } => {
                let gone: Vec<u32> = owned.range(min..=max).copied().collect();
                assert_eq!(gone.len() as u32, count, "record {i}: free [{min}, {max}]");
                for p in gone {
                    owned.remove(&p);
                }
            }
            other => panic!("record {i}: {other:?}"),
        }
    }
    let mm = containers[0].process_context().unwrap();
    assert_eq!(mm.pasids(), owned.into_iter().collect::<Vec<_>>());
}
