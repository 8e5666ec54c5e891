//! Table pages go back to the pool when their tables go: a PASID table when its last entry is
//! cleared, a stage-2 table when it is destroyed, a device's directory when it detaches. Many
//! more cycles than the pool has pages leave its allocated count where it started.

use vsva_iommu::paging::{fl_map, RW, SIZE_4K, US};
use vsva_iommu::{
    Access, DeviceOptions, FaultReason, HostMemory, Iommu, IommuConfig, PasidEntry, S2Perms,
    SourceId,
};

const MB: u64 = 1 << 20;
/// A pool of 256 pages: every loop below runs far more cycles than that.
const POOL: u64 = MB;
const SID: SourceId = SourceId::new(0, 4, 0);

fn iommu() -> Iommu {
    let mem = HostMemory::anonymous(&[(0, 4 * MB as usize)]).unwrap();
    Iommu::new(IommuConfig::default(), mem, 3 * MB, POOL).unwrap()
}

/// A first-level table mapping IOVA 0x1000 to 0x10_0000.
fn fl_root(io: &Iommu) -> u64 {
    let root = io.table_pool().alloc(io.memory()).unwrap();
    fl_map(
        &mut io.host_table_store(),
        root,
        4,
        0x1000,
        0x10_0000,
        SIZE_4K,
        RW | US,
    )
    .unwrap();
    root
}

#[test]
fn pasid_tables_return_when_their_last_entry_is_cleared() {
    let io = iommu();
    io.attach_device(SID, DeviceOptions::default()).unwrap();
    let root = fl_root(&io);
    let start = io.table_pool().allocated();
    // A different 64-PASID chunk each cycle: each needs its own PASID table.
    for chunk in 1..2000u32 {
        let pasid = chunk * 64 + chunk % 64;
        io.set_pasid_entry(SID, pasid, &PasidEntry::first_level(1, root))
            .unwrap_or_else(|e| panic!("cycle {chunk}: {e}"));
        assert!(io.translate(SID, Some(pasid), 0x1000, Access::READ).is_ok());
        io.clear_pasid_entry(SID, pasid).unwrap();
        assert_eq!(io.read_pasid_entry(SID, pasid).unwrap(), None, "table gone");
        assert_eq!(
            io.translate(SID, Some(pasid), 0x1000, Access::READ)
                .unwrap_err()
                .reason,
            FaultReason::PasidDirNotPresent
        );
    }
    assert_eq!(io.table_pool().allocated(), start);
}

#[test]
fn a_table_with_another_entry_stays() {
    let io = iommu();
    io.attach_device(SID, DeviceOptions::default()).unwrap();
    let root = fl_root(&io);
    let start = io.table_pool().allocated();
    io.set_pasid_entry(SID, 128, &PasidEntry::first_level(1, root))
        .unwrap();
    io.set_pasid_entry(SID, 129, &PasidEntry::first_level(1, root))
        .unwrap();
    io.clear_pasid_entry(SID, 128).unwrap();
    assert!(io.translate(SID, Some(129), 0x1000, Access::READ).is_ok());
    assert_eq!(io.table_pool().allocated(), start + 1);
    io.clear_pasid_entry(SID, 129).unwrap();
    assert_eq!(io.table_pool().allocated(), start);
}

#[test]
fn stage2_and_device_cycles_return_every_page() {
    let io = iommu();
    // The bus's context table stays once made (one per bus half, bounded): count from there.
    io.attach_device(SID, DeviceOptions::default()).unwrap();
    io.detach_device(SID).unwrap();
    let start = io.table_pool().allocated();
    for cycle in 0..600u64 {
        io.attach_device(SID, DeviceOptions::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, (cycle % 8) << 30, 0x10_0000, 4 * SIZE_4K, S2Perms::RW)
            .unwrap();
        io.destroy_stage2(s2).unwrap();
        io.detach_device(SID).unwrap();
    }
    assert_eq!(io.table_pool().allocated(), start);
}
