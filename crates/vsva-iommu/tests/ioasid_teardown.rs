//! A PASID allocated from `vsva_ioasid`, bound on two devices, then freed: the IOMMU (a
//! teardown subscriber) clears it everywhere before the number can be allocated again, so DMA
//! with it faults and a rebind of the same number starts clean.

use std::sync::Arc;

use vsva_ioasid::{IoasidSpace, TeardownSubscriber};
use vsva_iommu::paging::{fl_map, RW, SIZE_4K, US};
use vsva_iommu::{
    Access, DeviceOptions, FaultReason, HostMemory, Iommu, IommuConfig, PasidEntry, SourceId,
};

const MB: u64 = 1 << 20;

#[test]
fn freed_pasid_faults_on_every_device() {
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
    let io = Arc::new(Iommu::new(IommuConfig::default(), mem, 8 * MB, 8 * MB).unwrap());
    assert_eq!(io.name(), "vsva-iommu");
    let space = IoasidSpace::new(20).unwrap();
    space.subscribe(io.clone());
    let mut set = space.create_set(42, 10).unwrap();
    let pasid = set.alloc(1, (1 << 20) - 1).unwrap();

    let devs = [SourceId::new(0, 1, 0), SourceId::new(2, 0, 1)];
    let root = io.table_pool().alloc(io.memory()).unwrap();
    fl_map(
        &mut io.host_table_store(),
        root,
        4,
        0x1000,
        0x20_0000,
        SIZE_4K,
        RW | US,
    )
    .unwrap();
    for d in devs {
        io.attach_device(
            d,
            DeviceOptions {
                ats: true,
                ..DeviceOptions::default()
            },
        )
        .unwrap();
        io.set_pasid_entry(d, pasid, &PasidEntry::first_level(7, root))
            .unwrap();
        let mut buf = [0u8; 4];
        io.dma_write(d, Some(pasid), 0x1000, b"vsva").unwrap();
        io.dma_read(d, Some(pasid), 0x1000, &mut buf).unwrap();
        assert_eq!(&buf, b"vsva");
    }

    set.free(pasid).unwrap();
    assert_eq!(
        space.find(pasid),
        None,
        "teardown completed: the PASID is free again"
    );
    for d in devs {
        let f = io
            .translate(d, Some(pasid), 0x1000, Access::READ)
            .unwrap_err();
        // The PASID was its table's only entry: the table went back to the pool with it.
        assert_eq!(f.reason, FaultReason::PasidDirNotPresent, "{d}");
        let mut buf = [0u8; 4];
        assert!(io.dma_read(d, Some(pasid), 0x1000, &mut buf).is_err());
    }
    // The same number comes back and can be bound to a new table.
    let again = set.alloc(pasid, pasid).unwrap();
    assert_eq!(again, pasid);
    let root2 = io.table_pool().alloc(io.memory()).unwrap();
    fl_map(
        &mut io.host_table_store(),
        root2,
        4,
        0x1000,
        0x30_0000,
        SIZE_4K,
        RW | US,
    )
    .unwrap();
    io.set_pasid_entry(devs[0], pasid, &PasidEntry::first_level(7, root2))
        .unwrap();
    let t = io
        .translate(devs[0], Some(pasid), 0x1000, Access::READ)
        .unwrap();
    assert_eq!(
        t.host_addr, 0x30_0000,
        "no stale translation survived the teardown"
    );
}
