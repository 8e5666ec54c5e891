//! Unit tests of the IOMMU: translation per mode, every fault reason the model produces,
//! caches and every invalidation granularity, stage-2 management, DMA, page requests.

use super::*;
use crate::context::ContextEntry;
use crate::fault::{Access, Fault, FaultReason, SourceId, Stage};
use crate::invalidate::{
    ContextCacheScope, Invalidation, InvalidationError, PageRange, PasidCacheScope,
};
use crate::paging::{
    self, fl_map, TableStore, A, ADDR_MASK, D, PS, RW, SIZE_1G, SIZE_2M, SIZE_4K, SL_R, US, XD,
};
use crate::pasid_entry::PasidEntry;
use crate::prq::{PageRequest, PageResponse, PrqError};
use crate::{DeviceOptions, DmaError, GuestTableStore, Perms, S2Perms, Stage2Id, Translation};

pub(crate) const MB: u64 = 1 << 20;
const POOL: u64 = 48 * MB;
const SID: SourceId = SourceId::new(0, 3, 0);

fn iommu_with(cfg: IommuConfig) -> Iommu {
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)]).unwrap();
    Iommu::new(cfg, mem, POOL, 16 * MB).unwrap()
}

fn iommu() -> Iommu {
    iommu_with(IommuConfig::default())
}

fn attach(io: &Iommu, sid: SourceId) {
    io.attach_device(sid, DeviceOptions::default()).unwrap();
}

/// A first-level-only PASID with a fresh table; returns the table root.
fn fl_pasid(io: &Iommu, sid: SourceId, pasid: u32, did: u16) -> u64 {
    let root = io.table_pool().alloc(io.memory()).unwrap();
    io.set_pasid_entry(sid, pasid, &PasidEntry::first_level(did, root))
        .unwrap();
    root
}

fn map(io: &Iommu, root: u64, va: u64, pa: u64, size: u64, flags: u64) {
    fl_map(&mut io.host_table_store(), root, 4, va, pa, size, flags).unwrap();
}

fn reason(r: Result<Translation, Fault>) -> FaultReason {
    r.unwrap_err().reason
}

/// The host address of the entry at `level` used to translate `va` (identity tables).
fn entry_addr(io: &Iommu, root: u64, va: u64, level: u8) -> u64 {
    let mut table = root;
    for l in (level + 1..=4).rev() {
        table = io
            .memory()
            .load_u64(table + paging::level_index(va, l) * 8)
            .unwrap()
            & ADDR_MASK;
    }
    table + paging::level_index(va, level) * 8
}

#[test]
fn first_level_translation_sets_ad_and_caches() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 5, 1);
    map(&io, root, 0x40_0000, 0x10_0000, SIZE_4K, RW | US);
    map(&io, root, 0x80_0000, 0x20_0000, SIZE_2M, US | XD);
    let t = io.translate(SID, Some(5), 0x40_0123, Access::READ).unwrap();
    assert_eq!(t.host_addr, 0x10_0123);
    assert_eq!(t.page_size, SIZE_4K);
    assert_eq!(
        t.perms,
        Perms {
            read: true,
            write: true,
            execute: true,
            user: true
        }
    );
    let pte = entry_addr(&io, root, 0x40_0000, 1);
    assert_eq!(
        io.memory().load_u64(pte).unwrap() & (A | D),
        A,
        "read sets A only"
    );
    let before = io.stats();
    io.translate(SID, Some(5), 0x40_0456, Access::READ).unwrap();
    let after = io.stats();
    assert_eq!(after.iotlb_hits, before.iotlb_hits + 1);
    assert_eq!(after.walks, before.walks);
    // A write through the read-filled entry walks again and sets D.
    io.translate(SID, Some(5), 0x40_0000, Access::WRITE)
        .unwrap();
    assert_eq!(io.memory().load_u64(pte).unwrap() & D, D);
    let t = io.translate(SID, Some(5), 0x81_2345, Access::READ).unwrap();
    assert_eq!((t.host_addr, t.page_size), (0x21_2345, SIZE_2M));
    assert!(!t.perms.write && !t.perms.execute);
    assert_eq!(
        reason(io.translate(SID, Some(5), 0x81_0000, Access::WRITE)),
        FaultReason::NoWrite
    );
    assert_eq!(
        reason(io.translate(SID, Some(5), 0x81_0000, Access::EXEC)),
        FaultReason::ExecuteDisabled
    );
    assert_eq!(io.faults().len(), 2);
    assert_eq!(io.faults()[0].level, 2);
}

#[test]
fn supervisor_requests_sre_and_wpe() {
    let io = iommu();
    attach(&io, SID);
    let root = io.table_pool().alloc(io.memory()).unwrap();
    map(&io, root, 0x1000, 0x5000, SIZE_4K, 0); // supervisor, read-only
    let mut e = PasidEntry::first_level(1, root);
    io.set_pasid_entry(SID, 1, &e).unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(1), 0x1000, Access::READ.privileged())),
        FaultReason::SupervisorNotEnabled
    );
    assert_eq!(
        reason(io.translate(SID, Some(1), 0x1000, Access::READ)),
        FaultReason::UserToSupervisor
    );
    io.clear_pasid_entry(SID, 1).unwrap();
    e.sre = true;
    io.set_pasid_entry(SID, 1, &e).unwrap();
    // Without WPE a supervisor write ignores R/W.
    let t = io
        .translate(SID, Some(1), 0x1000, Access::WRITE.privileged())
        .unwrap();
    assert!(t.perms.write && !t.perms.user);
    io.clear_pasid_entry(SID, 1).unwrap();
    e.wpe = true;
    io.set_pasid_entry(SID, 1, &e).unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(1), 0x1000, Access::WRITE.privileged())),
        FaultReason::NoWrite
    );
}

#[test]
fn first_level_fault_reasons() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 2, 1);
    map(&io, root, 0x1000, 0x5000, SIZE_4K, RW);
    let f = io
        .translate(SID, Some(2), 0x2000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage, f.level),
        (FaultReason::FirstLevelNotPresent, Stage::First, 1)
    );
    assert_eq!(
        reason(io.translate(SID, Some(2), 0x8000_0000_0000, Access::READ)),
        FaultReason::NonCanonical
    );
    let pde = entry_addr(&io, root, 0x1000, 2);
    let v = io.memory().load_u64(pde).unwrap();
    io.memory().store_u64(pde, v | 1 << 47 | 1 << 50).unwrap();
    let f = io
        .translate(SID, Some(2), 0x3000, Access::READ)
        .unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::FirstLevelReserved, 2));
    io.memory()
        .store_u64(pde, 0x7000_0000 | paging::P | RW)
        .unwrap();
    let f = io
        .translate(SID, Some(2), 0x3000, Access::READ)
        .unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::FirstLevelAccess, 1));
    // Output in the interrupt range.
    io.memory().store_u64(pde, v).unwrap();
    map(&io, root, 0x20_0000, 0xfee0_0000, SIZE_4K, RW | US);
    assert_eq!(
        reason(io.translate(SID, Some(2), 0x20_0000, Access::WRITE)),
        FaultReason::InterruptRange
    );
}

#[test]
fn context_chain_fault_reasons_through_translate() {
    let io = iommu();
    attach(&io, SID);
    fl_pasid(&io, SID, 1, 1);
    assert_eq!(
        reason(io.translate(SourceId::new(9, 0, 0), Some(1), 0, Access::READ)),
        FaultReason::RootEntryNotPresent
    );
    assert_eq!(
        reason(io.translate(SourceId::new(0, 4, 0), Some(1), 0, Access::READ)),
        FaultReason::ContextEntryNotPresent
    );
    assert_eq!(
        reason(io.translate(SID, Some(64), 0, Access::READ)),
        FaultReason::PasidDirNotPresent
    );
    assert_eq!(
        reason(io.translate(SID, Some(2), 0, Access::READ)),
        FaultReason::PasidEntryNotPresent
    );
    io.write_pasid_entry_raw(SID, 3, [1 | 1 << 5, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(3), 0, Access::READ)),
        FaultReason::PasidEntryReserved
    );
    io.write_pasid_entry_raw(SID, 4, [1 | 6 << 6, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(4), 0, Access::READ)),
        FaultReason::PasidEntryInvalid
    );
    io.write_pasid_entry_raw(SID, 6, [1 | 1 << 6, 1, 1 << 50, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(6), 0, Access::READ)),
        FaultReason::FirstLevelPointerInvalid
    );
    io.write_pasid_entry_raw(SID, 7, [1 | 2 << 2 | 2 << 6 | 1 << 50, 1, 0, 0, 0, 0, 0, 0])
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(7), 0, Access::READ)),
        FaultReason::SecondLevelPointerInvalid
    );
    let small = SourceId::new(0, 5, 0);
    io.attach_device(
        small,
        DeviceOptions {
            pasids: 100,
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        reason(io.translate(small, Some(9000), 0, Access::READ)),
        FaultReason::PasidBeyondDirectory
    );
    // Root table address: misaligned, then outside memory.
    let rt = io.root_table_address();
    io.set_root_table_address(rt | 0x800);
    io.invalidate(&Invalidation::ContextCache(ContextCacheScope::All))
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(1), 0, Access::READ)),
        FaultReason::RootTableAddressInvalid
    );
    io.set_root_table_address(0x1_0000_0000);
    assert_eq!(
        reason(io.translate(SID, Some(1), 0, Access::READ)),
        FaultReason::RootEntryAccess
    );
    io.set_root_table_address(rt);
    let f = io.translate(SID, Some(2), 0, Access::READ).unwrap_err();
    assert_eq!(
        (f.stage, f.level, f.pasid, f.source_id),
        (Stage::Context, 0, Some(2), SID)
    );
}

#[test]
fn pasid_disabled_and_execute_not_enabled() {
    let io = iommu_with(IommuConfig {
        ers: false,
        ..IommuConfig::default()
    });
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 0, 1);
    map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
    assert_eq!(
        reason(io.translate(SID, None, 0x1000, Access::EXEC)),
        FaultReason::ExecuteNotEnabled
    );
    assert!(
        io.translate(SID, None, 0x1000, Access::READ).is_ok(),
        "RID_PASID 0 serves requests without PASID"
    );
    // Clear PASIDE in the context entry.
    let ct = io.control().ctx_tables[&(0, false)];
    let ce = ContextEntry::address(ct, SID.devfn());
    let q0 = io.memory().load_u64(ce).unwrap();
    io.memory().store_u64(ce, q0 & !(1 << 3)).unwrap();
    io.invalidate(&Invalidation::ContextCache(ContextCacheScope::Device {
        source_id: SID,
    }))
    .unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(0), 0x1000, Access::READ)),
        FaultReason::PasidDisabled
    );
}

#[test]
fn fpd_suppresses_recording_but_still_faults() {
    let io = iommu();
    io.attach_device(
        SID,
        DeviceOptions {
            fpd: true,
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    let f = io.translate(SID, Some(1), 0, Access::READ).unwrap_err();
    assert!(!f.recorded);
    let mut e = PasidEntry::first_level(1, 0x1000);
    let other = SourceId::new(0, 6, 0);
    attach(&io, other);
    e.fpd = true;
    io.set_pasid_entry(other, 1, &e).unwrap();
    let f = io
        .translate(other, Some(1), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.recorded),
        (FaultReason::FirstLevelNotPresent, false)
    );
    assert!(io.faults().is_empty());
    assert_eq!(io.stats().faults, 2);
    let f = io.translate(other, Some(2), 0, Access::READ).unwrap_err();
    assert!(f.recorded);
    assert_eq!(io.faults(), vec![f]);
}

#[test]
fn second_level_only_and_pass_through() {
    let io = iommu();
    attach(&io, SID);
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0x4000_0000, 0x40_0000, 4 * MB, S2Perms::RW)
        .unwrap();
    io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::R)
        .unwrap();
    io.stage2_map(
        s2,
        0x2000,
        0xa000,
        0x1000,
        S2Perms {
            read: false,
            write: true,
            execute: false,
        },
    )
    .unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    io.set_pasid_entry(SID, 0, &PasidEntry::second_level(7, root, levels))
        .unwrap();
    let t = io.translate(SID, None, 0x4012_3456, Access::WRITE).unwrap();
    assert_eq!(
        (t.host_addr, t.page_size),
        (0x52_3456, SIZE_2M),
        "2 MiB page used when aligned"
    );
    assert_eq!(
        reason(io.translate(SID, None, 0x1000, Access::WRITE)),
        FaultReason::NoWrite
    );
    assert_eq!(
        reason(io.translate(SID, None, 0x2000, Access::READ)),
        FaultReason::NoRead
    );
    let f = io.translate(SID, None, 0x3000, Access::READ).unwrap_err();
    assert_eq!(
        (f.reason, f.stage, f.level),
        (FaultReason::SecondLevelPermission, Stage::Second, 1)
    );
    assert_eq!(
        reason(io.translate(SID, None, 1 << 48, Access::READ)),
        FaultReason::InputBeyondMax
    );
    // Leaf output beyond HAW and reserved bits, written behind the IOMMU's back.
    let l1 = {
        let m = io.memory();
        let l3 = m.load_u64(root).unwrap() & ADDR_MASK;
        let l2 = m.load_u64(l3).unwrap() & ADDR_MASK;
        m.load_u64(l2).unwrap() & ADDR_MASK
    };
    io.memory().store_u64(l1 + 5 * 8, 1 << 49 | SL_R).unwrap();
    assert_eq!(
        reason(io.translate(SID, None, 0x5000, Access::READ)),
        FaultReason::OutputBeyondMax
    );
    io.memory()
        .store_u64(io.stage2_root(s2).unwrap().0 + 8, 0x7000_0000 | SL_R)
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, None, 1 << 39, Access::READ)),
        FaultReason::SecondLevelAccess
    );
    io.memory()
        .store_u64(root + 16, 0x7000 | SL_R | 1 << 5)
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, None, 2 << 39, Access::READ)),
        FaultReason::SecondLevelReserved
    );
    // Pass-through.
    io.set_pasid_entry(SID, 9, &PasidEntry::pass_through(3))
        .unwrap();
    let t = io
        .translate(SID, Some(9), 0x1234_5678, Access::WRITE)
        .unwrap();
    assert_eq!(t.host_addr, 0x1234_5678);
    assert_eq!(
        reason(io.translate(SID, Some(9), 1 << 48, Access::READ)),
        FaultReason::InputBeyondMax
    );
}

/// Guest memory for nested tests: guest-physical [0, 16 MiB) is host [16 MiB, 32 MiB).
const GUEST_BASE: u64 = 16 * MB;

/// Nested setup: stage 2 maps GPA [0, 16 MiB) → HPA [16, 32 MiB); guest FL root at GPA 0x1000.
fn nested(io: &Iommu, pasid: u32) -> (Stage2Id, GuestTableStore<'_>, u64) {
    attach(io, SID);
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0, GUEST_BASE, 16 * MB, S2Perms::RW)
        .unwrap();
    let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0x1000);
    let gpgd = g.alloc_table().unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    io.set_pasid_entry(SID, pasid, &PasidEntry::nested(4, gpgd, root, levels))
        .unwrap();
    (s2, g, gpgd)
}

#[test]
fn nested_translation_composes_both_stages() {
    let io = iommu();
    let (s2, mut g, gpgd) = nested(&io, 3);
    fl_map(&mut g, gpgd, 4, 0x7000_0000, 0x20_0000, SIZE_2M, RW | US).unwrap();
    fl_map(&mut g, gpgd, 4, 0x1000, 0x30_5000, SIZE_4K, RW | US).unwrap();
    let t = io
        .translate(SID, Some(3), 0x7001_2345, Access::WRITE)
        .unwrap();
    assert_eq!(t.host_addr, GUEST_BASE + 0x21_2345);
    assert_eq!(t.page_size, SIZE_2M);
    let t = io.translate(SID, Some(3), 0x1abc, Access::READ).unwrap();
    assert_eq!(
        (t.host_addr, t.page_size),
        (GUEST_BASE + 0x30_5abc, SIZE_4K)
    );
    // The guest's PDE got its accessed bit, written through stage 2.
    let pml4e = g.read(gpgd);
    assert_eq!(pml4e & A, A);
    // Output beyond the stage-2 mapping: second-level permission fault at level 4? No: a
    // not-present stage-2 entry below the mapped 16 MiB.
    fl_map(&mut g, gpgd, 4, 0x2000, 0x200_0000, SIZE_4K, RW | US).unwrap();
    let f = io
        .translate(SID, Some(3), 0x2000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage),
        (FaultReason::SecondLevelPermission, Stage::Second)
    );
    // A guest table outside stage 2.
    let pml4 = gpgd;
    g.write(pml4 + 8 * 3, 0x300_0000 | paging::P | RW | US);
    let f = io
        .translate(SID, Some(3), 3 << 39, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage),
        (FaultReason::NestedNoReadEntry, Stage::Second)
    );
    // A guest table address beyond the stage-2 input width.
    g.write(pml4 + 8 * 4, 1 << 49 | paging::P | RW | US);
    let f = io
        .translate(SID, Some(3), 4 << 39, Access::READ)
        .unwrap_err();
    assert_eq!(
        f.reason,
        FaultReason::FirstLevelReserved,
        "beyond HAW is reserved first"
    );
    g.write(pml4 + 8 * 4, 1 << 47 | paging::P | RW | US);
    let cfg39 = IommuConfig::default();
    assert!(cfg39.haw() == 48);
    // Stage 2 read-only on the table page: A update needs write (0x77).
    io.stage2_unmap(s2, 0, 2 * MB).unwrap();
    io.stage2_map(s2, 0, GUEST_BASE, 2 * MB, S2Perms::R)
        .unwrap();
    io.invalidate(&Invalidation::IotlbDomain { did: 4 })
        .unwrap();
    let pml4e = g.read(gpgd);
    g.write(gpgd, pml4e & !A);
    let f = io
        .translate(SID, Some(3), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!((f.reason, f.level), (FaultReason::NestedNoWriteEntry, 4));
    // Root table not readable through stage 2: 0x75.
    io.stage2_unmap(s2, 0, 2 * MB).unwrap();
    io.invalidate(&Invalidation::IotlbDomain { did: 4 })
        .unwrap();
    let f = io
        .translate(SID, Some(3), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage),
        (FaultReason::NestedNoReadRoot, Stage::Second)
    );
}

#[test]
fn nested_first_level_address_beyond_stage2_width() {
    let io = iommu();
    attach(&io, SID);
    let s2 = io.create_stage2(3).unwrap(); // 39-bit input
    io.stage2_map(s2, 0, GUEST_BASE, 16 * MB, S2Perms::RW)
        .unwrap();
    let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0x1000);
    let gpgd = g.alloc_table().unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    io.set_pasid_entry(SID, 1, &PasidEntry::nested(2, gpgd, root, levels))
        .unwrap();
    g.write(gpgd, 1 << 40 | paging::P | RW | US);
    let f = io
        .translate(SID, Some(1), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.level),
        (FaultReason::FirstLevelAddressBeyondMgaw, 3)
    );
}

fn remap_fl(io: &Iommu, root: u64, va: u64, pa: u64) {
    let pte = entry_addr(io, root, va, 1);
    io.memory()
        .store_u64(pte, pa | paging::P | RW | US)
        .unwrap();
}

/// For each PASID-based IOTLB granularity: without the invalidation the old page is served,
/// with it the new one is.
#[test]
fn iotlb_invalidation_granularities() {
    type Make = Box<dyn Fn(u16, u32, u64) -> Invalidation>;
    let cases: Vec<(&str, Make)> = vec![
        ("global", Box::new(|_, _, _| Invalidation::IotlbGlobal)),
        (
            "domain",
            Box::new(|did, _, _| Invalidation::IotlbDomain { did }),
        ),
        (
            "all pasids of did",
            Box::new(|did, _, _| Invalidation::PasidIotlbAll { did }),
        ),
        (
            "pasid",
            Box::new(|did, pasid, _| Invalidation::PasidIotlb { did, pasid }),
        ),
        (
            "page",
            Box::new(|did, pasid, va| Invalidation::PasidIotlbPages {
                did,
                pasid,
                range: PageRange { addr: va, am: 0 },
                ih: true,
            }),
        ),
        (
            "page range",
            Box::new(|did, pasid, va| Invalidation::PasidIotlbPages {
                did,
                pasid,
                range: PageRange {
                    addr: va & !0xffff,
                    am: 4,
                },
                ih: false,
            }),
        ),
    ];
    for (name, inv) in cases {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 8, 2);
        let va = 0x1234_5000;
        map(&io, root, va, 0x10_0000, SIZE_4K, RW | US);
        map(&io, root, va + 0x1000, 0x11_0000, SIZE_4K, RW | US);
        assert_eq!(
            io.translate(SID, Some(8), va, Access::READ)
                .unwrap()
                .host_addr,
            0x10_0000
        );
        remap_fl(&io, root, va, 0x20_0000);
        assert_eq!(
            io.translate(SID, Some(8), va, Access::READ)
                .unwrap()
                .host_addr,
            0x10_0000,
            "{name}: stale entry served without invalidation"
        );
        // An unrelated invalidation does not cover it.
        io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 9 })
            .unwrap();
        io.invalidate(&Invalidation::PasidIotlbPages {
            did: 2,
            pasid: 8,
            range: PageRange {
                addr: va + 0x1000,
                am: 0,
            },
            ih: false,
        })
        .unwrap();
        io.invalidate(&Invalidation::IotlbDomain { did: 3 })
            .unwrap();
        assert_eq!(
            io.translate(SID, Some(8), va, Access::READ)
                .unwrap()
                .host_addr,
            0x10_0000,
            "{name}: unrelated invalidation"
        );
        io.invalidate(&inv(2, 8, va)).unwrap();
        assert_eq!(
            io.translate(SID, Some(8), va, Access::READ)
                .unwrap()
                .host_addr,
            0x20_0000,
            "{name}: new mapping after invalidation"
        );
    }
}

#[test]
fn page_selective_invalidation_covers_large_pages() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 8, 2);
    map(&io, root, 0x4000_0000, 0x20_0000, SIZE_2M, RW | US);
    assert_eq!(
        io.translate(SID, Some(8), 0x4010_0000, Access::READ)
            .unwrap()
            .host_addr,
        0x30_0000
    );
    let pde = entry_addr(&io, root, 0x4000_0000, 2);
    io.memory()
        .store_u64(pde, 0x60_0000 | paging::P | PS | RW | US)
        .unwrap();
    // Naming a single 4 KiB page inside the 2 MiB page drops the 2 MiB entry.
    io.invalidate(&Invalidation::PasidIotlbPages {
        did: 2,
        pasid: 8,
        range: PageRange {
            addr: 0x4010_0000,
            am: 0,
        },
        ih: true,
    })
    .unwrap();
    assert_eq!(
        io.translate(SID, Some(8), 0x4010_0000, Access::READ)
            .unwrap()
            .host_addr,
        0x70_0000
    );
    assert!(matches!(
        io.invalidate(&Invalidation::PasidIotlbPages {
            did: 2,
            pasid: 8,
            range: PageRange { addr: 0, am: 40 },
            ih: true
        }),
        Err(IommuError::Invalidation(InvalidationError::AddressMask {
            am: 40,
            max: 18
        }))
    ));
}

#[test]
fn paging_structure_cache_and_leaf_hint() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 8, 2);
    map(&io, root, 0x20_0000, 0x10_0000, SIZE_4K, RW | US);
    map(&io, root, 0x20_1000, 0x11_0000, SIZE_4K, RW | US);
    io.translate(SID, Some(8), 0x20_0000, Access::READ).unwrap();
    // Point the PDE at a new page table mapping 0x20_1000 elsewhere.
    let mut store = io.host_table_store();
    let new_pt = store.alloc_table().unwrap();
    store.write(new_pt + 8, 0x33_0000 | paging::P | RW | US);
    let pde = entry_addr(&io, root, 0x20_0000, 2);
    let old = io.memory().load_u64(pde).unwrap();
    io.memory().store_u64(pde, new_pt | (old & 0xfff)).unwrap();
    // IH = 1 keeps the paging-structure cache: the old page table is still used.
    io.invalidate(&Invalidation::PasidIotlbPages {
        did: 2,
        pasid: 8,
        range: PageRange {
            addr: 0x20_0000,
            am: 1,
        },
        ih: true,
    })
    .unwrap();
    assert_eq!(
        io.translate(SID, Some(8), 0x20_1000, Access::READ)
            .unwrap()
            .host_addr,
        0x11_0000
    );
    assert!(io.stats().fl_psc_hits >= 1);
    io.invalidate(&Invalidation::PasidIotlbPages {
        did: 2,
        pasid: 8,
        range: PageRange {
            addr: 0x20_0000,
            am: 1,
        },
        ih: false,
    })
    .unwrap();
    assert_eq!(
        io.translate(SID, Some(8), 0x20_1000, Access::READ)
            .unwrap()
            .host_addr,
        0x33_0000
    );
}

#[test]
fn pasid_cache_invalidation_granularities() {
    for scope in [
        PasidCacheScope::All,
        PasidCacheScope::Domain { did: 2 },
        PasidCacheScope::Pasid { did: 2, pasid: 8 },
    ] {
        let io = iommu();
        attach(&io, SID);
        let root1 = fl_pasid(&io, SID, 8, 2);
        map(&io, root1, 0x1000, 0x10_0000, SIZE_4K, RW | US);
        map(&io, root1, 0x2000, 0x10_1000, SIZE_4K, RW | US);
        io.translate(SID, Some(8), 0x1000, Access::READ).unwrap();
        // The guest points the entry at another table and forgets the PASID-cache flush.
        let root2 = io.table_pool().alloc(io.memory()).unwrap();
        map(&io, root2, 0x2000, 0x20_1000, SIZE_4K, RW | US);
        io.write_pasid_entry_raw(SID, 8, PasidEntry::first_level(2, root2).to_raw())
            .unwrap();
        assert_eq!(
            io.translate(SID, Some(8), 0x2000, Access::READ)
                .unwrap()
                .host_addr,
            0x10_1000,
            "{scope:?}: stale PASID entry"
        );
        io.invalidate(&Invalidation::PasidCache(PasidCacheScope::Pasid {
            did: 2,
            pasid: 9,
        }))
        .unwrap();
        io.invalidate(&Invalidation::PasidCache(PasidCacheScope::Domain {
            did: 3,
        }))
        .unwrap();
        io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 8 })
            .unwrap();
        assert_eq!(
            io.translate(SID, Some(8), 0x2000, Access::READ)
                .unwrap()
                .host_addr,
            0x10_1000,
            "{scope:?}: IOTLB flush alone keeps the PASID entry"
        );
        io.invalidate(&Invalidation::PasidCache(scope)).unwrap();
        // The IOTLB refilled from the stale entry keeps its (DID, PASID) tag: VT-d requires
        // the IOTLB flush after the PASID-cache flush, and so does this model.
        assert_eq!(
            io.translate(SID, Some(8), 0x2000, Access::READ)
                .unwrap()
                .host_addr,
            0x10_1000,
            "{scope:?}: IOTLB still holds it"
        );
        assert_eq!(
            io.translate(SID, Some(8), 0x3000, Access::READ)
                .unwrap_err()
                .reason,
            FaultReason::FirstLevelNotPresent,
            "{scope:?}: new table walked"
        );
        io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 8 })
            .unwrap();
        assert_eq!(
            io.translate(SID, Some(8), 0x2000, Access::READ)
                .unwrap()
                .host_addr,
            0x20_1000,
            "{scope:?}"
        );
    }
}

#[test]
fn context_cache_invalidation_granularities() {
    for scope in [
        ContextCacheScope::All,
        ContextCacheScope::Device { source_id: SID },
    ] {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 0, 2);
        map(&io, root, 0x1000, 0x10_0000, SIZE_4K, RW | US);
        io.translate(SID, None, 0x1000, Access::READ).unwrap();
        // Point RID_PASID at PASID 1 (not present) without flushing.
        let ct = io.control().ctx_tables[&(0, false)];
        let ce = ContextEntry::address(ct, SID.devfn());
        io.memory().store_u64(ce + 8, 1).unwrap();
        assert!(
            io.translate(SID, None, 0x1000, Access::READ).is_ok(),
            "{scope:?}: stale context"
        );
        io.invalidate(&Invalidation::ContextCache(ContextCacheScope::Device {
            source_id: SourceId::new(0, 9, 0),
        }))
        .unwrap();
        assert!(io.translate(SID, None, 0x1000, Access::READ).is_ok());
        io.invalidate(&Invalidation::ContextCache(scope)).unwrap();
        assert_eq!(
            reason(io.translate(SID, None, 0x1000, Access::READ)),
            FaultReason::PasidEntryNotPresent,
            "{scope:?}"
        );
    }
}

#[test]
fn domain_page_invalidation_for_stage2_changes() {
    let io = iommu();
    let (s2, mut g, gpgd) = nested(&io, 3);
    fl_map(&mut g, gpgd, 4, 0x1000, 0x30_0000, SIZE_4K, RW | US).unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    let other = SourceId::new(0, 7, 0);
    attach(&io, other);
    io.set_pasid_entry(other, 0, &PasidEntry::second_level(4, root, levels))
        .unwrap();
    assert_eq!(
        io.translate(SID, Some(3), 0x1000, Access::READ)
            .unwrap()
            .host_addr,
        GUEST_BASE + 0x30_0000
    );
    assert_eq!(
        io.translate(other, None, 0x30_0000, Access::READ)
            .unwrap()
            .host_addr,
        GUEST_BASE + 0x30_0000
    );
    // The host moves guest page 0x30_0000 elsewhere in a 2 MiB mapping it rebuilds with 4 KiB pages.
    io.stage2_unmap(s2, 0x20_0000, 2 * MB).unwrap();
    io.stage2_map(s2, 0x20_0000, 40 * MB, 2 * MB, S2Perms::RW)
        .unwrap();
    assert_eq!(
        io.translate(SID, Some(3), 0x1000, Access::READ)
            .unwrap()
            .host_addr,
        GUEST_BASE + 0x30_0000,
        "stale nested"
    );
    assert_eq!(
        io.translate(other, None, 0x30_0000, Access::READ)
            .unwrap()
            .host_addr,
        GUEST_BASE + 0x30_0000,
        "stale second level"
    );
    io.invalidate(&Invalidation::IotlbDomainPages {
        did: 4,
        range: PageRange {
            addr: 0x20_0000,
            am: 9,
        },
        ih: false,
    })
    .unwrap();
    assert_eq!(
        io.translate(SID, Some(3), 0x1000, Access::READ)
            .unwrap()
            .host_addr,
        40 * MB + 0x10_0000
    );
    assert_eq!(
        io.translate(other, None, 0x30_0000, Access::READ)
            .unwrap()
            .host_addr,
        40 * MB + 0x10_0000
    );
}

#[test]
fn device_tlb_invalidation_granularities() {
    type Make = Box<dyn Fn(Option<u32>, u64) -> Invalidation>;
    let cases: Vec<(&str, Make)> = vec![
        (
            "all",
            Box::new(|_, _| Invalidation::DeviceTlbAll { source_id: SID }),
        ),
        (
            "pasid",
            Box::new(|p, _| Invalidation::DeviceTlb {
                source_id: SID,
                pasid: p,
                pages: None,
            }),
        ),
        (
            "page",
            Box::new(|p, va| Invalidation::DeviceTlb {
                source_id: SID,
                pasid: p,
                pages: Some(PageRange { addr: va, am: 0 }),
            }),
        ),
    ];
    for (name, inv) in cases {
        for pasid in [Some(8), None] {
            let io = iommu();
            io.attach_device(
                SID,
                DeviceOptions {
                    ats: true,
                    rid_pasid: 8,
                    ..DeviceOptions::default()
                },
            )
            .unwrap();
            let root = fl_pasid(&io, SID, 8, 2);
            map(&io, root, 0x5000, 0x10_0000, SIZE_4K, RW | US);
            io.translate(SID, pasid, 0x5000, Access::READ).unwrap();
            remap_fl(&io, root, 0x5000, 0x20_0000);
            io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 8 })
                .unwrap();
            assert_eq!(
                io.translate(SID, pasid, 0x5000, Access::READ)
                    .unwrap()
                    .host_addr,
                0x10_0000,
                "{name} {pasid:?}: device TLB still holds it"
            );
            io.invalidate(&Invalidation::DeviceTlb {
                source_id: SID,
                pasid: Some(9),
                pages: None,
            })
            .unwrap();
            assert_eq!(
                io.translate(SID, pasid, 0x5000, Access::READ)
                    .unwrap()
                    .host_addr,
                0x10_0000
            );
            io.invalidate(&inv(pasid, 0x5000)).unwrap();
            assert_eq!(
                io.translate(SID, pasid, 0x5000, Access::READ)
                    .unwrap()
                    .host_addr,
                0x20_0000,
                "{name} {pasid:?}"
            );
            assert!(io.stats().devtlb_hits >= 2);
        }
    }
}

#[test]
fn teardown_pasid_clears_every_device_and_flushes() {
    let io = iommu();
    let sids = [SID, SourceId::new(1, 0, 0)];
    for s in sids {
        io.attach_device(
            s,
            DeviceOptions {
                ats: true,
                ..DeviceOptions::default()
            },
        )
        .unwrap();
    }
    let root = io.table_pool().alloc(io.memory()).unwrap();
    map(&io, root, 0x1000, 0x10_0000, SIZE_4K, RW | US);
    for s in sids {
        io.set_pasid_entry(s, 77, &PasidEntry::first_level(5, root))
            .unwrap();
        io.translate(s, Some(77), 0x1000, Access::WRITE).unwrap();
    }
    assert_eq!(io.teardown_pasid(77), sids.to_vec());
    for s in sids {
        assert_eq!(
            reason(io.translate(s, Some(77), 0x1000, Access::READ)),
            FaultReason::PasidEntryNotPresent
        );
        assert_eq!(io.read_pasid_entry(s, 77).unwrap(), Some([0; 8]));
    }
    assert!(io.teardown_pasid(77).is_empty());
    // The number can be bound again at once.
    io.set_pasid_entry(SID, 77, &PasidEntry::first_level(5, root))
        .unwrap();
    assert!(io.translate(SID, Some(77), 0x1000, Access::READ).is_ok());
}

#[test]
fn stage2_map_errors_and_rollback() {
    let io = iommu();
    let s2 = io.create_stage2(4).unwrap();
    assert_eq!(
        io.create_stage2(5),
        Err(IommuError::Stage2Levels { levels: 5 })
    );
    assert_eq!(
        io.stage2_map(s2, 0x1001, 0, 0x1000, S2Perms::R),
        Err(IommuError::Unaligned {
            field: "iova",
            value: 0x1001
        })
    );
    assert_eq!(
        io.stage2_map(s2, 0, 0, 0, S2Perms::R),
        Err(IommuError::Unaligned {
            field: "len",
            value: 0
        })
    );
    assert!(matches!(
        io.stage2_map(s2, 1 << 48, 0, 0x1000, S2Perms::R),
        Err(IommuError::TooWide { field: "iova", .. })
    ));
    io.stage2_map(s2, 0x20_0000, 0x20_0000, 2 * MB, S2Perms::RW)
        .unwrap();
    assert_eq!(
        io.stage2_map(s2, 0x3f_f000, 0, 0x2000, S2Perms::R),
        Err(IommuError::Overlap { iova: 0x3f_f000 })
    );
    // The part before the overlap was rolled back.
    assert_eq!(
        io.stage2_map(s2, 0x1f_f000, 0x1000, 0x1000, S2Perms::R),
        Ok(())
    );
    assert_eq!(
        io.stage2_map(s2, 0x1f_e000, 0, 0x3000, S2Perms::R),
        Err(IommuError::Overlap { iova: 0x1f_f000 })
    );
    assert_eq!(
        io.stage2_map(s2, 0x1f_e000, 0, 0x1000, S2Perms::R),
        Ok(()),
        "rolled back"
    );
    assert!(matches!(
        io.stage2_unmap(s2, 0x20_0000, 0x1000),
        Err(IommuError::PartialLargePage { size: SIZE_2M, .. })
    ));
    assert_eq!(
        io.stage2_unmap(s2, 0x1f_c000, 0x20_4000),
        Ok(0x20_2000),
        "holes skipped"
    );
    assert_eq!(io.stage2_unmap(s2, 0, 0x4000_0000), Ok(0));
    io.stage2_map(s2, SIZE_1G, 0, SIZE_1G, S2Perms::R).unwrap();
    assert_eq!(io.stage2_unmap(s2, SIZE_1G, SIZE_1G), Ok(SIZE_1G));
    io.destroy_stage2(s2).unwrap();
    assert_eq!(io.stage2_root(s2), Err(IommuError::NoStage2 { id: s2.0 }));
}

#[test]
fn dma_helpers_cross_pages() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 1, 1);
    map(&io, root, 0x1000, 0x30_0000, SIZE_4K, RW | US);
    map(&io, root, 0x2000, 0x10_0000, SIZE_4K, RW | US);
    map(&io, root, 0x3000, 0x7000_0000, SIZE_4K, RW | US); // not backed
    let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    io.dma_write(SID, Some(1), 0x1100, &data).unwrap();
    let mut back = vec![0u8; 6000];
    io.dma_read(SID, Some(1), 0x1100, &mut back).unwrap();
    assert_eq!(back, data);
    let mut first = [0u8; 4];
    io.memory().read(0x30_0100, &mut first).unwrap();
    assert_eq!(first, [0, 1, 2, 3]);
    let mut split = [0u8; 2];
    io.memory().read(0x10_0000, &mut split).unwrap();
    assert_eq!(split, [(0xf00u32 & 0xff) as u8, 0x01]);
    assert!(matches!(
        io.dma_read(SID, Some(1), 0x3000, &mut first),
        Err(DmaError::Unbacked { iova: 0x3000, .. })
    ));
    assert!(matches!(
        io.dma_read(SID, Some(1), 0x4000, &mut first),
        Err(DmaError::Fault(Fault {
            reason: FaultReason::FirstLevelNotPresent,
            ..
        }))
    ));
}

#[test]
fn attach_detach_and_errors() {
    let io = iommu();
    attach(&io, SID);
    assert_eq!(
        io.attach_device(SID, DeviceOptions::default()),
        Err(IommuError::AlreadyAttached { source_id: SID })
    );
    let root = fl_pasid(&io, SID, 1, 1);
    assert_eq!(
        io.set_pasid_entry(SID, 1, &PasidEntry::first_level(1, root)),
        Err(IommuError::PasidEntryPresent {
            source_id: SID,
            pasid: 1
        })
    );
    assert!(matches!(
        io.set_pasid_entry(SID, 1 << 20, &PasidEntry::first_level(1, root)),
        Err(IommuError::PasidOutOfRange { .. })
    ));
    assert!(matches!(
        io.set_pasid_entry(SID, 2, &PasidEntry::first_level(1, 1 << 50)),
        Err(IommuError::PasidEntry(_))
    ));
    assert_eq!(
        io.clear_pasid_entry(SID, 2),
        Err(IommuError::PasidEntryAbsent {
            source_id: SID,
            pasid: 2
        })
    );
    let pages = io.table_pool().allocated();
    io.detach_device(SID).unwrap();
    assert!(
        io.table_pool().allocated() < pages,
        "directory and tables freed"
    );
    assert_eq!(
        reason(io.translate(SID, Some(1), 0, Access::READ)),
        FaultReason::ContextEntryNotPresent
    );
    assert_eq!(
        io.detach_device(SID),
        Err(IommuError::NotAttached { source_id: SID })
    );
    assert!(io.devices().is_empty());
    assert!(matches!(
        io.attach_device(
            SID,
            DeviceOptions {
                pasids: 0,
                ..DeviceOptions::default()
            }
        ),
        Err(IommuError::DeviceOption {
            field: "pasids",
            ..
        })
    ));
}

#[test]
fn page_requests_and_responses() {
    use crate::prq::ResponseCode;
    let io = iommu();
    let req = PageRequest {
        source_id: SID,
        pasid: Some(4),
        addr: 0x1000,
        access: Access::WRITE,
        group: 3,
        last: true,
    };
    assert!(matches!(
        io.page_request(req),
        Err(IommuError::PageRequest(PrqError::NotEnabled { .. }))
    ));
    io.attach_device(
        SID,
        DeviceOptions {
            pri: true,
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    io.page_request(req).unwrap();
    assert_eq!(io.take_page_requests(), vec![req]);
    let resp = PageResponse {
        source_id: SID,
        pasid: Some(4),
        group: 3,
        code: ResponseCode::Success,
    };
    io.page_response(resp).unwrap();
    assert_eq!(io.take_page_responses(SID), vec![resp]);
}

#[test]
fn registers_and_invalidation_validation() {
    let io = iommu();
    assert_eq!(io.cap(), IommuConfig::default().cap());
    assert_eq!(io.ecap() >> 35 & 0x1f, 19);
    assert!(matches!(
        io.invalidate(&Invalidation::PasidIotlb {
            did: 1,
            pasid: 1 << 20
        }),
        Err(IommuError::Invalidation(InvalidationError::Pasid { .. }))
    ));
    let small = iommu_with(IommuConfig {
        domain_bits: 8,
        ..IommuConfig::default()
    });
    assert!(matches!(
        small.invalidate(&Invalidation::IotlbDomain { did: 300 }),
        Err(IommuError::Invalidation(InvalidationError::Domain {
            did: 300,
            bits: 8
        }))
    ));
    assert!(format!("{io:?}").contains("cap"));
}

#[test]
fn file_backed_memory_translates() {
    use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap};
    let io = iommu();
    let path = std::env::temp_dir().join(format!("vsva-iommu-fb-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(2 * MB).unwrap();
    let region = GuestRegionMmap::from_range(
        GuestAddress(1 << 32),
        2 * MB as usize,
        Some(FileOffset::new(file.try_clone().unwrap(), 0)),
    )
    .unwrap();
    io.memory().add_region(region).unwrap();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 1, 1);
    map(&io, root, 0x1000, 1 << 32, SIZE_4K, RW | US);
    io.dma_write(SID, Some(1), 0x1010, b"shared").unwrap();
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 6];
    file.read_exact_at(&mut buf, 0x10).unwrap();
    assert_eq!(&buf, b"shared");
}

#[test]
fn second_level_accessed_dirty_with_ssade() {
    let io = iommu();
    attach(&io, SID);
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::RW)
        .unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    let mut e = PasidEntry::second_level(7, root, levels);
    e.ssade = true;
    io.set_pasid_entry(SID, 0, &e).unwrap();
    let leaf = {
        let m = io.memory();
        let l3 = m.load_u64(root).unwrap() & ADDR_MASK;
        let l2 = m.load_u64(l3).unwrap() & ADDR_MASK;
        (m.load_u64(l2).unwrap() & ADDR_MASK) + 8
    };
    io.translate(SID, None, 0x1000, Access::READ).unwrap();
    let v = io.memory().load_u64(leaf).unwrap();
    assert_eq!(v & (paging::SL_A | paging::SL_D), paging::SL_A);
    io.translate(SID, None, 0x1000, Access::WRITE).unwrap();
    let v = io.memory().load_u64(leaf).unwrap();
    assert_eq!(
        v & (paging::SL_A | paging::SL_D),
        paging::SL_A | paging::SL_D
    );
    assert_eq!(
        io.memory().load_u64(root).unwrap() & paging::SL_A,
        paging::SL_A
    );
}

#[test]
fn statistics_count_every_path() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 1, 1);
    map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
    io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
    io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
    io.invalidate(&Invalidation::PasidCache(PasidCacheScope::All))
        .unwrap();
    io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
    let _ = io.translate(SID, Some(1), 0x2000, Access::READ);
    let s = io.stats();
    assert_eq!(s.translations, 4);
    assert_eq!(
        s.iotlb_hits, 2,
        "front-cache hit and IOTLB hit after the PASID-cache flush"
    );
    assert_eq!(s.iotlb_misses, 2);
    assert_eq!(s.walks, 2);
    assert_eq!(s.pasid_cache_misses, 2, "first lookup and after the flush");
    assert_eq!(s.faults, 1);
    assert_eq!(s.invalidations, 1);
}
