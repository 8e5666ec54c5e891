//! Tests of the PASID table: teardown, and the hitless replace.

use crate::iommu::test_support::*;

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
            FaultReason::PasidDirNotPresent
        );
        // PASID 77 was its table's only entry: the table went back to the pool.
        assert_eq!(io.read_pasid_entry(s, 77).unwrap(), None);
    }
    assert!(io.teardown_pasid(77).is_empty());
    // The number can be bound again at once.
    io.set_pasid_entry(SID, 77, &PasidEntry::first_level(5, root))
        .unwrap();
    assert!(io.translate(SID, Some(77), 0x1000, Access::READ).is_ok());
}

/// A teardown visits only the devices that hold the PASID, and finds every one that
/// does: entries set and cleared one by one, written raw (as a guest driver would), and
/// on a device detached meanwhile.
#[test]
fn teardown_finds_every_holder_and_only_holders() {
    let io = iommu();
    let (a, b, c) = (SID, SourceId::new(1, 0, 0), SourceId::new(2, 0, 0));
    for s in [a, b, c] {
        io.attach_device(s, DeviceOptions::default()).unwrap();
    }
    let root = io.table_pool().alloc(io.memory()).unwrap();
    let entry = PasidEntry::first_level(5, root);
    io.set_pasid_entry(a, 9, &entry).unwrap();
    io.set_pasid_entry(c, 9, &entry).unwrap();
    io.set_pasid_entry(b, 10, &entry).unwrap();
    io.clear_pasid_entry(c, 9).unwrap();
    assert_eq!(io.teardown_pasid(9), vec![a]);
    // A raw-written present entry is torn down too.
    io.write_pasid_entry_raw(c, 9, entry.to_raw()).unwrap();
    assert_eq!(io.teardown_pasid(9), vec![c]);
    // A detached device holds nothing; the others still hold theirs.
    io.set_pasid_entry(a, 10, &entry).unwrap();
    io.detach_device(b).unwrap();
    assert_eq!(io.teardown_pasid(10), vec![a]);
    assert!(io.teardown_pasid(10).is_empty());
    // Re-attached, it starts empty and is found once it holds the PASID again.
    io.attach_device(b, DeviceOptions::default()).unwrap();
    io.set_pasid_entry(b, 10, &entry).unwrap();
    assert_eq!(io.teardown_pasid(10), vec![b]);
}

// ---------------------------------------------------------------- replace

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::context::pasid_entry_address;

/// The address every replace test translates, and the two pages it lands on.
const VA: u64 = 0x40_1000;
const PAGE_A: u64 = 0x10_0000;
const PAGE_B: u64 = 0x20_0000;

/// Two first-level entries whose tables map `VA` to `PAGE_A` and `PAGE_B`. They differ in
/// two words (DID in word 1, FLPTR in word 2), so half of one with half of the other is a
/// third entry.
fn fl_pair(io: &Iommu) -> [(PasidEntry, u64); 2] {
    [(5, PAGE_A), (6, PAGE_B)].map(|(did, page)| {
        let root = io.table_pool().alloc(io.memory()).unwrap();
        map(io, root, VA, page, SIZE_4K, RW | US);
        (PasidEntry::first_level(did, root), page)
    })
}

/// Two second-level entries whose stage-2 tables map `VA` to `PAGE_A` and `PAGE_B` (DID in
/// word 1, SSPTPTR in word 0).
fn sl_pair(io: &Iommu) -> [(PasidEntry, u64); 2] {
    [(7, PAGE_A), (8, PAGE_B)].map(|(did, page)| {
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, VA & !0xfff, page, SIZE_4K, S2Perms::RW)
            .unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        (PasidEntry::second_level(did, root, levels), page)
    })
}

/// One translation of `VA` through `pasid`: an ATS translation request when `ats` asks for
/// one, otherwise `translate` (through the in-model device TLB for a device with ATS).
fn translate_va(io: &Iommu, sid: SourceId, pasid: Option<u32>, ats: bool) -> Result<u64, Fault> {
    if ats {
        match io.ats_translate(sid, pasid, VA, Access::READ) {
            Ok(crate::AtsReply::Translated(t)) => Ok(t.host_addr),
            Ok(crate::AtsReply::NoTranslation { fault, .. }) => Err(fault),
            Err(e) => panic!("ATS translation request refused: {e}"),
        }
    } else {
        io.translate(sid, pasid, VA, Access::READ)
            .map(|t| t.host_addr)
    }
}

/// Sets its flag when dropped: a thread told to stop by it stops even when the one that
/// holds it panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Two threads, for about a third of a second (sized for two cores): one translates `VA`
/// through `pasid` without a pause, the other replaces the entry by the second of `pair`,
/// then the first, back and forth. Every translation must succeed and land on one of the
/// two pages, and one made after a replace has returned must land on the new entry's page.
fn translate_while_replacing(io: &Iommu, sid: SourceId, pasid: u32, pair: [(PasidEntry, u64); 2]) {
    let ats = io.ats[usize::from(sid.0)].load(Ordering::Relaxed);
    let [(a, page_a), (b, page_b)] = pair;
    io.set_pasid_entry(sid, pasid, &a).unwrap();
    let stop = AtomicBool::new(false);
    let (seen, replaces) = std::thread::scope(|s| {
        // The translator stops when this thread is done, a failed assertion included.
        let stop_translator = StopOnDrop(&stop);
        let translator = s.spawn(|| {
            let mut seen = [0u64; 2];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A device with ATS alternates its two paths: requests through its device TLB
                // and translation requests.
                let got = translate_va(io, sid, Some(pasid), ats && n % 2 == 1);
                match got {
                    Ok(p) if p == page_a => seen[0] += 1,
                    Ok(p) if p == page_b => seen[1] += 1,
                    other => panic!("translation {n} during replaces: {other:x?}"),
                }
                n += 1;
            }
            seen
        });
        let start = Instant::now();
        let mut replaces = 0u32;
        while (start.elapsed() < Duration::from_millis(300) || replaces < 100)
            && !translator.is_finished()
        {
            for (e, page) in [(&b, page_b), (&a, page_a)] {
                io.replace_pasid_entry(sid, pasid, e).unwrap();
                replaces += 1;
                for via_ats in [false, ats] {
                    assert_eq!(
                        translate_va(io, sid, Some(pasid), via_ats),
                        Ok(page),
                        "replace {replaces} has returned (ATS request: {via_ats})"
                    );
                }
            }
        }
        drop(stop_translator);
        (translator.join().unwrap(), replaces)
    });
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "the translator saw both entries: {seen:?} over {replaces} replaces"
    );
    // Still held: the PASID's teardown finds the device.
    assert_eq!(io.teardown_pasid(pasid), vec![sid]);
}

#[test]
fn first_level_replace_under_translation_never_faults() {
    let io = iommu();
    attach(&io, SID);
    let pair = fl_pair(&io);
    translate_while_replacing(&io, SID, 9, pair);
    assert_eq!(io.stats().faults, 0);
}

#[test]
fn second_level_replace_under_translation_never_faults() {
    let io = iommu();
    attach(&io, SID);
    let pair = sl_pair(&io);
    translate_while_replacing(&io, SID, 9, pair);
    assert_eq!(io.stats().faults, 0);
}

/// The same with a device that has ATS: its requests go through its device TLB, and half of
/// them are translation requests (`ats_translate`), which a replace must not fail either.
#[test]
fn replace_under_translation_requests_never_faults() {
    let io = iommu();
    io.attach_device(
        SID,
        DeviceOptions {
            ats: true,
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    let pair = fl_pair(&io);
    translate_while_replacing(&io, SID, 9, pair);
    assert_eq!(io.stats().faults, 0);
}

/// A PASID-cache miss that meets a write of the API half done waits for it to finish: held
/// half way (the new entry's DID over the old entry's table pointer, an entry nobody wrote),
/// the write keeps the translation waiting; finished, the translation uses the new entry.
#[test]
fn a_translation_waits_out_a_half_done_write() {
    let io = iommu();
    attach(&io, SID);
    let [(a, _), (b, page_b)] = fl_pair(&io);
    io.set_pasid_entry(SID, 9, &a).unwrap();
    let table = io
        .pasid_table(&mut io.control(), SID, 9, false)
        .unwrap()
        .unwrap();
    let addr = pasid_entry_address(table, 9);
    let new = b.to_raw();
    let seq = &io.caches.device(SID.0).entries;
    std::thread::scope(|s| {
        // `write_entry`, stopped after its first store.
        let open = seq.write_begin();
        io.memory().store_u64(addr + 8, new[1]).unwrap();
        let translator = s.spawn(|| read_addr(&io, SID, Some(9), VA));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !translator.is_finished(),
            "a translation went on with half of each entry"
        );
        for i in (2..8).chain([0]) {
            io.memory()
                .store_u64(addr + 8 * i, new[i as usize])
                .unwrap();
        }
        seq.write_end(open);
        assert_eq!(translator.join().unwrap(), page_b);
    });
}

/// A replace changes the translation type (first level, second level, pass-through and
/// back), flushes what the old entry left (each one was translated through, so cached,
/// before it was replaced) and works for requests without PASID (the RID_PASID entry).
#[test]
fn replace_changes_the_type_and_flushes_the_old_entry() {
    let io = iommu();
    attach(&io, SID);
    let [fl, _] = fl_pair(&io);
    let [_, sl] = sl_pair(&io);
    let pt = (PasidEntry::pass_through(3), VA);
    for pasid in [Some(9), None] {
        let p = pasid.unwrap_or(0);
        io.set_pasid_entry(SID, p, &fl.0).unwrap();
        assert_eq!(read_addr(&io, SID, pasid, VA), fl.1);
        for (e, page) in [sl, pt, fl, pt, sl, fl] {
            io.replace_pasid_entry(SID, p, &e).unwrap();
            assert_eq!(read_addr(&io, SID, pasid, VA), page, "{pasid:?} {e:?}");
            assert_eq!(io.read_pasid_entry(SID, p).unwrap(), Some(e.to_raw()));
        }
        io.clear_pasid_entry(SID, p).unwrap();
    }
    assert_eq!(io.stats().faults, 0);
}

/// A refused replace (an entry the IOMMU does not accept, an absent entry, an unknown
/// device, a PASID beyond the directory) changes nothing: the old entry stays in the table,
/// translations still use it, and nothing was flushed.
#[test]
fn a_refused_replace_leaves_the_old_entry() {
    let io = iommu();
    attach(&io, SID);
    let [(a, page_a), (b, _)] = fl_pair(&io);
    io.set_pasid_entry(SID, 9, &a).unwrap();
    assert_eq!(read_addr(&io, SID, Some(9), VA), page_a);
    let before = io.read_pasid_entry(SID, 9).unwrap();
    let flushes = io.stats().invalidations;
    let bad = PasidEntry::first_level(5, 1 << 60);
    assert!(matches!(
        io.replace_pasid_entry(SID, 9, &bad),
        Err(IommuError::PasidEntry(e)) if e.field == "FLPTR"
    ));
    let absent = |pasid| IommuError::PasidEntryAbsent {
        source_id: SID,
        pasid,
    };
    // An empty slot of the same PASID table, and a PASID whose table does not exist.
    assert_eq!(io.replace_pasid_entry(SID, 10, &b), Err(absent(10)));
    assert_eq!(
        io.replace_pasid_entry(SID, 1 << 12, &b),
        Err(absent(1 << 12))
    );
    let other = SourceId::new(9, 0, 0);
    assert_eq!(
        io.replace_pasid_entry(other, 9, &b),
        Err(IommuError::NotAttached { source_id: other })
    );
    assert!(matches!(
        io.replace_pasid_entry(SID, 1 << 20, &b),
        Err(IommuError::PasidOutOfRange { pasid, .. }) if pasid == 1 << 20
    ));
    assert_eq!(io.read_pasid_entry(SID, 9).unwrap(), before);
    assert_eq!(io.read_pasid_entry(SID, 10).unwrap(), Some([0; 8]));
    assert_eq!(io.stats().invalidations, flushes, "nothing flushed");
    assert_eq!(read_addr(&io, SID, Some(9), VA), page_a);
    // A cleared entry is absent: a replace does not set it.
    io.clear_pasid_entry(SID, 9).unwrap();
    assert_eq!(io.replace_pasid_entry(SID, 9, &b), Err(absent(9)));
    assert_eq!(io.read_pasid_entry(SID, 9).unwrap(), None, "table freed");
    assert_eq!(
        reason(io.translate(SID, Some(9), VA, Access::READ)),
        FaultReason::PasidDirNotPresent
    );
}
