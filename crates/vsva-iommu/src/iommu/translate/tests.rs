//! Tests of the translate path through `Iommu::translate`.

use crate::iommu::test_support::*;

#[test]
fn front_ctrl_memo_equals_the_check_of_every_access_kind() {
    use super::PasidInfo;
    use crate::cache::{flag, value_is_dirty, value_size_code, F_PERMS_PRIV};
    use crate::cache::{F_PERMS_USER, F_RID_PRIV};
    use crate::pasid_entry::Pgtt;
    let io = iommu();
    let (dom, pg) = (io.caches.domain(1), io.caches.domain(1).pasids.get(1));
    // The word computed the long way, as every IOTLB hit checks it.
    let reference = |info: &PasidInfo<'_>, v: u64| {
        let c = io.fl_controls(&info.entry);
        let (pgtt, level) = (info.entry.pgtt, value_size_code(v) as u8 + 1);
        let mut ctrl = flag(info.flags.rid_priv(), F_RID_PRIV);
        for kind in 0..8u64 {
            let a = Access::from_kind(kind);
            let needs_walk = a.write && !value_is_dirty(v);
            if !needs_walk && io.check_cached(pgtt, v, a, c, level).is_ok() {
                ctrl |= 1 << kind;
            }
        }
        for (privileged, shift) in [(false, F_PERMS_USER), (true, F_PERMS_PRIV)] {
            let a = Access {
                privileged,
                ..Access::READ
            };
            ctrl |= io.make_translation(pgtt, v, 0, a, c).perms.bits() << shift;
        }
        ctrl
    };
    let types = [Pgtt::FirstLevel, Pgtt::SecondLevel, Pgtt::Nested];
    // Twice over, so the second pass is served by the memo.
    for _ in 0..2 {
        for (pgtt, controls, rid_priv) in
            (0..3 * 8 * 2).map(|i| (types[i / 16], i / 2 % 8, i % 2 == 1))
        {
            let mut entry = PasidEntry::first_level(1, 0x1000);
            entry.pgtt = pgtt;
            (entry.sre, entry.wpe, entry.ere) =
                (controls & 1 != 0, controls & 2 != 0, controls & 4 != 0);
            let flags = crate::cache::PasidFlags::new(1, false, false, rid_priv, false);
            let info = PasidInfo {
                entry: entry.cached(),
                flags,
                stamp: [super::STALE; 3],
                dev: io.caches.device(1),
                dom,
                pg,
            };
            // Every rights and dirty bit and every page size, on an ordinary page (a value in
            // the interrupt range never reaches a fill, see `front_ctrl`).
            for v in (0..0x200u64).map(|bits| 0x5000_0000 | bits) {
                if value_size_code(v) > 2 {
                    continue;
                }
                assert_eq!(
                    io.front_ctrl(&info, v),
                    reference(&info, v),
                    "{pgtt:?} {controls} {rid_priv} {v:#x}"
                );
            }
        }
    }
}

#[test]
fn context_chain_fault_reasons_through_translate() {
    let io = iommu();
    attach(&io, SID);
    fl_pasid(&io, SID, 1, 1);
    // (device, PASID, reason) for requests that stop in the chain.
    let missing = [
        (SourceId::new(9, 0, 0), 1, FaultReason::RootEntryNotPresent),
        (
            SourceId::new(0, 4, 0),
            1,
            FaultReason::ContextEntryNotPresent,
        ),
        (SID, 64, FaultReason::PasidDirNotPresent),
        (SID, 2, FaultReason::PasidEntryNotPresent),
    ];
    for (sid, pasid, want) in missing {
        let got = reason(io.translate(sid, Some(pasid), 0, Access::READ));
        assert_eq!(got, want, "{sid} pasid {pasid}");
    }
    // (PASID, raw entry words, reason) for entries the chain refuses.
    let refused: [(u32, [u64; 8], FaultReason); 4] = [
        (
            3,
            [1 | 1 << 10, 0, 0, 0, 0, 0, 0, 0],
            FaultReason::PasidEntryReserved,
        ),
        (
            4,
            [1 | 6 << 6, 0, 0, 0, 0, 0, 0, 0],
            FaultReason::PasidEntryInvalid,
        ),
        (
            6,
            [1 | 1 << 6, 1, 1 << 50, 0, 0, 0, 0, 0],
            FaultReason::FirstLevelPointerInvalid,
        ),
        (
            7,
            [1 | 2 << 2 | 2 << 6 | 1 << 50, 1, 0, 0, 0, 0, 0, 0],
            FaultReason::SecondLevelPointerInvalid,
        ),
    ];
    for (pasid, words, want) in refused {
        io.write_pasid_entry_raw(SID, pasid, words).unwrap();
        let got = reason(io.translate(SID, Some(pasid), 0, Access::READ));
        assert_eq!(got, want, "pasid {pasid}");
    }
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
fn a_fault_records_the_access_as_requested_not_as_rid_priv_checks_it() {
    let io = iommu();
    let opts = DeviceOptions {
        rid_priv: true,
        ..DeviceOptions::default()
    };
    io.attach_device(SID, opts).unwrap();
    fl_pasid(&io, SID, 0, 1);
    // Checked as privileged (RID_PRIV), recorded as the device sent it.
    let f = io.translate(SID, None, 0x2000, Access::READ).unwrap_err();
    assert_eq!((f.access, f.pasid), (Access::READ, None));
    assert_eq!(io.faults(), vec![f]);
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
fn fpd_never_hides_table_access_errors() {
    let io = iommu();
    let opts = DeviceOptions {
        fpd: true,
        ..DeviceOptions::default()
    };
    io.attach_device(SID, opts).unwrap();
    let root = fl_pasid(&io, SID, 1, 1);
    map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
    // A first-level table pointer outside memory: 0x70 is recorded despite FPD.
    let pde = entry_addr(&io, root, 0x1000, 2);
    io.memory()
        .store_u64(pde, 0x1_0000_0000 | paging::P | RW | US)
        .unwrap();
    let f = io
        .translate(SID, Some(1), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!(
        (f.reason, f.recorded),
        (FaultReason::FirstLevelAccess, true)
    );
    // A PASID directory outside memory: 0x50 is recorded despite the context entry's FPD.
    let ct = io.control().ctx_tables[&(0, false)];
    let ce = ContextEntry::address(ct, SID.devfn());
    let q0 = io.memory().load_u64(ce).unwrap();
    io.memory()
        .store_u64(ce, q0 & 0xfff | 0x1_0000_0000)
        .unwrap();
    io.invalidate(&Invalidation::ContextCache(ContextCacheScope::Device {
        source_id: SID,
    }))
    .unwrap();
    let f = io
        .translate(SID, Some(1), 0x1000, Access::READ)
        .unwrap_err();
    assert_eq!((f.reason, f.recorded), (FaultReason::PasidDirAccess, true));
    assert_eq!(io.faults().len(), 2);
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

#[test]
fn nothing_is_cached_from_a_pasid_entry_invalidated_during_its_walk() {
    let io = iommu();
    attach(&io, SID);
    let root = fl_pasid(&io, SID, 1, 1);
    map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
    // A walk reads the PASID entry; then the entry is torn down and its IOTLB flushed,
    // before the walk reads the IOTLB generations.
    let walk = crate::pool::WalkGuard::enter();
    let mem = io.mem.pinned(walk.pin());
    let st = &io.stats.local();
    let info = io.pasid_info(st, mem, SID, Some(1)).unwrap();
    io.clear_pasid_entry(SID, 1).unwrap();
    let r = io.translate_paged(st, mem, &info, 0x1000, Access::READ);
    assert!(
        matches!(r, Ok(None)),
        "the walk must read the entry again, not fill caches under the new generations"
    );
    assert_eq!(io.stats().walks, 0);
    assert_eq!(
        reason(io.translate(SID, Some(1), 0x1000, Access::READ)),
        FaultReason::PasidDirNotPresent,
        "the entry was its table's last: the table went back to the pool"
    );
}

/// The front-cache key of (`sid`, `pasid`, the 4 KiB page of `va`).
fn front_key(sid: SourceId, pasid: Option<u32>, va: u64) -> (u64, u64) {
    use crate::cache::{device_tag, page_key, pasid_key};
    (page_key(va, 0), device_tag(sid.0, pasid_key(pasid)))
}

#[test]
fn a_device_with_ats_is_served_by_its_device_tlb_never_by_the_front_cache() {
    let io = iommu();
    let opts = DeviceOptions {
        ats: true,
        ..DeviceOptions::default()
    };
    io.attach_device(SID, opts).unwrap();
    let root = fl_pasid(&io, SID, 8, 2);
    map(&io, root, 0x5000, 0x10_0000, SIZE_4K, RW | US);
    map(&io, root, 0x6000, 0x11_0000, SIZE_4K, RW | US);
    for _ in 0..2 {
        assert_eq!(read_addr(&io, SID, Some(8), 0x5000), 0x10_0000);
    }
    assert_eq!(
        io.stats().devtlb_hits,
        1,
        "the second request: its device TLB"
    );
    let reply = io
        .ats_translate(SID, Some(8), 0x6000, Access::READ)
        .unwrap();
    assert!(matches!(reply, crate::AtsReply::Translated(t) if t.host_addr == 0x11_0000));
    for va in [0x5000, 0x6000] {
        let (k0, k1) = front_key(SID, Some(8), va);
        assert_eq!(
            io.caches.front.lookup(k0, k1),
            None,
            "{va:#x} in the front cache"
        );
    }
    // Without ATS, the same translations are front-cache hits.
    let plain = iommu();
    attach(&plain, SID);
    let root = fl_pasid(&plain, SID, 8, 2);
    map(&plain, root, 0x5000, 0x10_0000, SIZE_4K, RW | US);
    for _ in 0..2 {
        assert_eq!(read_addr(&plain, SID, Some(8), 0x5000), 0x10_0000);
    }
    let (k0, k1) = front_key(SID, Some(8), 0x5000);
    assert!(plain.caches.front.lookup(k0, k1).is_some());
    let s = plain.stats();
    assert_eq!(
        (s.translations, s.iotlb_hits, s.pasid_cache_hits),
        (2, 1, 0)
    );
}

#[test]
fn attaching_a_device_with_ats_retires_what_the_front_cache_holds_of_it() {
    use crate::cache::{F_PERMS_PRIV, F_PERMS_USER};
    use std::sync::atomic::Ordering;
    let io = iommu();
    // A front-cache entry of the device from before the attach (from a translation through
    // tables of the embedder's, say) that no invalidation retired: every access kind, an
    // output page the device's tables will not name.
    let c = &io.caches;
    let delta = 0xdead_0000u64.wrapping_sub(0x5000);
    let ctrl = 0xff | 0xf << F_PERMS_USER | 0xf << F_PERMS_PRIV;
    let epoch = c.epoch.load(Ordering::Acquire);
    let (k0, k1) = front_key(SID, Some(8), 0x5000);
    assert!(c.front.insert(k0, k1, [epoch, delta, ctrl], || true));
    c.front_sizes.fetch_or(1, Ordering::AcqRel);
    let opts = DeviceOptions {
        ats: true,
        ..DeviceOptions::default()
    };
    io.attach_device(SID, opts).unwrap();
    let root = fl_pasid(&io, SID, 8, 2);
    map(&io, root, 0x5000, 0x10_0000, SIZE_4K, RW | US);
    assert_eq!(read_addr(&io, SID, Some(8), 0x5000), 0x10_0000);
    assert_eq!(io.stats().walks, 1);
}
