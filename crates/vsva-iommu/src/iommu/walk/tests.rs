//! Tests of the walks: first-level, second-level and nested translation, the accessed and
//! dirty updates, and what each caches.

use crate::iommu::test_support::*;

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
fn second_level_only_translation_and_faults() {
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
    // (address, access, reason) for requests the second level refuses.
    let refused = [
        (0x1000, Access::WRITE, FaultReason::NoWrite),
        (0x2000, Access::READ, FaultReason::NoRead),
        (1 << 48, Access::READ, FaultReason::InputBeyondMax),
    ];
    for (addr, access, want) in refused {
        let got = reason(io.translate(SID, None, addr, access));
        assert_eq!(got, want, "{addr:#x} {access}");
    }
    let f = io.translate(SID, None, 0x3000, Access::READ).unwrap_err();
    assert_eq!(
        (f.reason, f.stage, f.level),
        (FaultReason::SecondLevelPermission, Stage::Second, 1)
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
        .store_u64(root + 16, 0x7000 | SL_R | 1 << 11)
        .unwrap();
    assert_eq!(
        reason(io.translate(SID, None, 2 << 39, Access::READ)),
        FaultReason::SecondLevelReserved
    );
}

#[test]
fn pass_through_is_identity_within_haw() {
    let io = iommu();
    attach(&io, SID);
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
fn file_backed_memory_translates() {
    use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap};
    let io = iommu();
    let file = crate::memory::tests::unlinked_temp_file(2 * MB);
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

/// The host address of the second-level leaf that maps `gpa` in the stage-2 table `s2`.
fn sl_leaf(io: &Iommu, s2: Stage2Id, gpa: u64) -> u64 {
    let (root, levels) = io.stage2_root(s2).unwrap();
    let p = paging::SlParams {
        levels,
        haw: 48,
        sl_2m: true,
        sl_1g: true,
        slee: false,
        tm: true,
    };
    let snap = io.memory().snapshot();
    let m: &vm_memory::GuestMemoryMmap = &snap;
    let w = paging::walk_second_level(m, &p, root, gpa, None).unwrap();
    w.used().last().unwrap().addr
}

/// Every entry of a first-level walk of `va` (identity tables), root first.
fn fl_entries(io: &Iommu, root: u64, va: u64) -> Vec<u64> {
    (1..=4)
        .rev()
        .map(|l| io.memory().load_u64(entry_addr(io, root, va, l)).unwrap())
        .collect()
}

#[test]
fn execute_requests_need_ere() {
    let io = iommu();
    attach(&io, SID);
    let root = io.table_pool().alloc(io.memory()).unwrap();
    map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
    let mut e = PasidEntry::first_level(1, root);
    io.set_pasid_entry(SID, 1, &e).unwrap();
    // A read fills the caches; an execute request still needs ERE.
    io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(1), 0x1000, Access::EXEC)),
        FaultReason::ExecuteNotEnabled
    );
    io.clear_pasid_entry(SID, 1).unwrap();
    e.ere = true;
    io.set_pasid_entry(SID, 1, &e).unwrap();
    let t = io.translate(SID, Some(1), 0x1000, Access::EXEC).unwrap();
    assert!(t.perms.execute);
}

#[test]
fn second_level_execute_follows_slee() {
    let io = iommu();
    attach(&io, SID);
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::R)
        .unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    let mut e = PasidEntry {
        ere: true,
        ..PasidEntry::second_level(7, root, levels)
    };
    // Without SLEE, X is ignored: a readable page may be executed.
    io.set_pasid_entry(SID, 1, &e).unwrap();
    assert!(io.translate(SID, Some(1), 0x1000, Access::EXEC).is_ok());
    io.clear_pasid_entry(SID, 1).unwrap();
    e.slee = true;
    io.set_pasid_entry(SID, 1, &e).unwrap();
    let f = io
        .translate(SID, Some(1), 0x1000, Access::EXEC)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage),
        (FaultReason::ExecuteDisabled, Stage::Second)
    );
    assert!(io.translate(SID, Some(1), 0x1000, Access::READ).is_ok());
}

#[test]
fn flptr_outside_memory_is_0x73() {
    let io = iommu();
    attach(&io, SID);
    io.set_pasid_entry(SID, 1, &PasidEntry::first_level(1, 1 << 40))
        .unwrap();
    let f = io
        .translate(SID, Some(1), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage, f.level),
        (FaultReason::FirstLevelPointerInvalid, Stage::First, 4)
    );
}

#[test]
fn refused_requests_leave_accessed_dirty_alone() {
    let io = iommu();
    attach(&io, SID);
    // First level only: an output in the interrupt range is refused after the walk.
    let root = fl_pasid(&io, SID, 1, 1);
    map(&io, root, 0x1000, 0xfee0_0000, SIZE_4K, RW | US);
    let before = fl_entries(&io, root, 0x1000);
    assert_eq!(
        reason(io.translate(SID, Some(1), 0x1000, Access::WRITE)),
        FaultReason::InterruptRange
    );
    assert_eq!(fl_entries(&io, root, 0x1000), before);
    // Second level only with SSADE: a write to a read-only page.
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::R)
        .unwrap();
    let (sroot, levels) = io.stage2_root(s2).unwrap();
    let e = PasidEntry {
        ssade: true,
        ..PasidEntry::second_level(7, sroot, levels)
    };
    io.set_pasid_entry(SID, 2, &e).unwrap();
    let leaf = sl_leaf(&io, s2, 0x1000);
    let (root_e, leaf_e) = (io.memory().load_u64(sroot), io.memory().load_u64(leaf));
    assert_eq!(
        reason(io.translate(SID, Some(2), 0x1000, Access::WRITE)),
        FaultReason::NoWrite
    );
    assert_eq!(io.memory().load_u64(sroot), root_e);
    assert_eq!(io.memory().load_u64(leaf), leaf_e);
    io.translate(SID, Some(2), 0x1000, Access::READ).unwrap();
    let a = io.memory().load_u64(leaf).unwrap();
    assert_eq!(a & (paging::SL_A | paging::SL_D), paging::SL_A);
}

#[test]
fn eafe_sets_extended_accessed() {
    for eafe in [false, true] {
        let io = iommu();
        attach(&io, SID);
        let root = io.table_pool().alloc(io.memory()).unwrap();
        map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
        let e = PasidEntry {
            eafe,
            ..PasidEntry::first_level(1, root)
        };
        io.set_pasid_entry(SID, 1, &e).unwrap();
        io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
        for v in fl_entries(&io, root, 0x1000) {
            assert_eq!(v & paging::EA != 0, eafe, "{v:#x}");
            assert_eq!(v & A, A);
        }
    }
}

/// Nested with SSADE (see `nested`); the guest maps VA 0x1000 to GPA 4 MiB, another 2 MiB
/// stage-2 leaf than the tables.
fn nested_ssade(io: &Iommu) -> (Stage2Id, u64) {
    let (s2, mut g, gpgd) = nested_with(io, 3, |e| e.ssade = true);
    fl_map(&mut g, gpgd, 4, 0x1000, 4 * MB, SIZE_4K, RW | US).unwrap();
    (s2, gpgd)
}

#[test]
fn nested_ssade_first_level_ad_writes_set_stage2_dirty() {
    let io = iommu();
    let (s2, gpgd) = nested_ssade(&io);
    let tables = sl_leaf(&io, s2, gpgd);
    let output = sl_leaf(&io, s2, 4 * MB);
    let ad = paging::SL_A | paging::SL_D;
    // A refused request (not present in the guest's PT) changes no A/D bit anywhere.
    let pml4e = io.memory().load_u64(GUEST_BASE + gpgd).unwrap();
    assert_eq!(
        reason(io.translate(SID, Some(3), 0x2000, Access::READ)),
        FaultReason::FirstLevelNotPresent
    );
    assert_eq!(io.memory().load_u64(tables).unwrap() & ad, 0);
    assert_eq!(io.memory().load_u64(GUEST_BASE + gpgd).unwrap(), pml4e);
    // A read sets A in the guest's entries: a write through stage 2 (A and D on the leaf
    // mapping the tables); the output page is only read (A).
    io.translate(SID, Some(3), 0x1000, Access::READ).unwrap();
    assert_eq!(io.memory().load_u64(tables).unwrap() & ad, ad);
    assert_eq!(io.memory().load_u64(output).unwrap() & ad, paging::SL_A);
    assert_eq!(io.memory().load_u64(GUEST_BASE + gpgd).unwrap() & A, A);
}

#[test]
fn nested_table_read_needs_stage2_read() {
    let io = iommu();
    attach(&io, SID);
    let s2 = io.create_stage2(4).unwrap();
    let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0x1000);
    let gpgd = g.alloc_table().unwrap();
    fl_map(&mut g, gpgd, 4, 0x1000, 0x10_0000, SIZE_4K, RW | US).unwrap();
    let pt = g.next_table() - 0x1000; // the last table fl_map created
    let write_only = S2Perms {
        read: false,
        write: true,
        execute: false,
    };
    for gpa in (0x1000..g.next_table()).step_by(0x1000) {
        let perms = if gpa == pt { write_only } else { S2Perms::RW };
        io.stage2_map(s2, gpa, GUEST_BASE + gpa, 0x1000, perms)
            .unwrap();
    }
    io.stage2_map(s2, 0x10_0000, GUEST_BASE + 0x10_0000, 0x1000, S2Perms::RW)
        .unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    io.set_pasid_entry(SID, 1, &PasidEntry::nested(4, gpgd, root, levels))
        .unwrap();
    let f = io
        .translate(SID, Some(1), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.stage),
        (FaultReason::NestedNoReadEntry, Stage::Second)
    );
}

/// A supervisor request through a second-level-only or pass-through entry needs the entry's
/// SRE, as through a first-level one (0x5d, before the walk and the caches). Linux's
/// `intel_pasid_setup_second_level` and `intel_pasid_setup_pass_through` set SRE in those
/// entries (until 6.4) so that supervisor requests, whose addresses are GPAs, get through.
#[test]
fn supervisor_requests_need_sre_in_every_type() {
    let io = iommu();
    attach(&io, SID);
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0x4000, 0x9000, 0x1000, S2Perms::RW)
        .unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    for (pasid, e) in [
        (3, PasidEntry::second_level(7, root, levels)),
        (4, PasidEntry::pass_through(7)),
    ] {
        io.set_pasid_entry(SID, pasid, &e).unwrap();
        // A user read fills the caches; the supervisor request is refused all the same.
        io.translate(SID, Some(pasid), 0x4000, Access::READ)
            .unwrap();
        for access in [Access::READ.privileged(), Access::WRITE.privileged()] {
            let f = io.translate(SID, Some(pasid), 0x4000, access).unwrap_err();
            assert_eq!(
                f.reason,
                FaultReason::SupervisorNotEnabled,
                "{e:?} {access}"
            );
        }
        io.clear_pasid_entry(SID, pasid).unwrap();
        io.set_pasid_entry(SID, pasid, &PasidEntry { sre: true, ..e })
            .unwrap();
        let t = io
            .translate(SID, Some(pasid), 0x4000, Access::WRITE.privileged())
            .unwrap();
        assert_eq!(t.host_addr & 0xfff, 0, "{e:?}");
    }
}
