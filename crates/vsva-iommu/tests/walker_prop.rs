//! Property tests: random first-level tables (mixed page sizes, shared subtrees, not-present,
//! reserved and out-of-memory entries) walked by the crate's walker and by the IOMMU's
//! translate (with its caches), both checked against the simple reference walk in `common`.

mod common;

use std::collections::HashMap;

use common::{in_interrupt_range, ref_check, ref_walk, RefResult, MB};
use proptest::prelude::*;
use vsva_iommu::paging::{self, FlParams, Identity, WalkFault};
use vsva_iommu::{Access, DeviceOptions, HostMemory, Iommu, IommuConfig, PasidEntry, SourceId};

const TABLES: u64 = 12;
const TABLE_BASE: u64 = 0x10_0000;
const MEM: u64 = 8 * MB;

fn table_addr(i: u64) -> u64 {
    TABLE_BASE + i * 0x1000
}

/// One random entry.
fn entry() -> impl Strategy<Value = u64> {
    let flags = prop::sample::subsequence(
        vec![
            1u64 << 1,
            1 << 1,
            1 << 2,
            1 << 2,
            1 << 3,
            1 << 4,
            1 << 5,
            1 << 6,
            1 << 8,
            1 << 9,
            1 << 10,
            1 << 11,
            1 << 52,
            1 << 62,
            1 << 63,
        ],
        2..8,
    )
    .prop_map(|v| v.into_iter().fold(0, |a, b| a | b));
    prop_oneof![
        1 => Just(0u64),
        1 => any::<u64>().prop_map(|v| v & !1),
        30 => (0..TABLES, flags.clone()).prop_map(|(j, f)| table_addr(j) | 1 | f),
        1 => flags.clone().prop_map(|f| 0x4000_0000 | 1 | f),
        3 => (0u64..8, flags.clone(), any::<bool>()).prop_map(|(p, f, big)| {
            let addr = if big { p << 30 } else { p << 21 };
            addr | 1 | 1 << 7 | f
        }),
        1 => (flags.clone(), 0u64..3).prop_map(|(f, kind)| match kind {
            0 => 0x20_0000 | 1 << 13 | 1 | 1 << 7 | f,
            1 => 1 << 49 | 1 | f,
            _ => 0xfee0_0000 | 1 | f,
        }),
        3 => (0u64..2048, flags).prop_map(|(p, f)| (p << 12) | 1 | f),
        1 => any::<u64>().prop_map(|v| v | 1),
    ]
}

/// Tables: for each table, entries at indices 0..4 (index 4 of each table is left empty).
fn tables() -> impl Strategy<Value = Vec<[u64; 4]>> {
    prop::collection::vec(prop::array::uniform4(entry()), TABLES as usize)
}

fn va_strategy() -> impl Strategy<Value = u64> {
    (
        prop::array::uniform5(prop_oneof![16 => 0u64..4, 1 => 0u64..512]),
        0u64..4096,
        0u8..16,
    )
        .prop_map(|(idx, off, hi)| {
            let mut va = off;
            for (l, i) in idx.iter().enumerate() {
                va |= i << (12 + 9 * l);
            }
            match hi {
                0 => va | 0xabc0_0000_0000_0000, // non-canonical for both
                1 => va | 0xff00_0000_0000_0000, // canonical for 5 levels if bit 56 set
                _ => {
                    // Canonical for 4 levels: sign-extend bit 47.
                    let v = va & ((1 << 48) - 1);
                    if v >> 47 & 1 == 1 {
                        v | 0xffff_0000_0000_0000
                    } else {
                        v
                    }
                }
            }
        })
}

fn image(tables: &[[u64; 4]]) -> HashMap<u64, u64> {
    let mut img = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        for (j, &e) in t.iter().enumerate() {
            img.insert(table_addr(i as u64) + j as u64 * 8, e);
        }
    }
    img
}

fn reader(img: &HashMap<u64, u64>) -> impl Fn(u64) -> Option<u64> + '_ {
    move |a| (a < MEM).then(|| img.get(&a).copied().unwrap_or(0))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn walker_matches_reference(tbl in tables(), vas in prop::collection::vec(va_strategy(), 24), root in 0..TABLES, five in any::<bool>(), fl1gp in any::<bool>()) {
        let mem = HostMemory::anonymous(&[(0, MEM as usize)]).unwrap();
        let img = image(&tbl);
        for (&a, &v) in &img {
            mem.store_u64(a, v).unwrap();
        }
        let levels = if five { 5 } else { 4 };
        let p = FlParams { levels, haw: 48, fl1gp };
        let snap = mem.snapshot();
        let m: &vm_memory::GuestMemoryMmap = &snap;
        let read = reader(&img);
        for va in vas {
            let got = paging::walk_first_level(m, &mut Identity, &p, table_addr(root), va, None);
            let want = ref_walk(&read, table_addr(root), va, levels, 48, fl1gp);
            match (got, want) {
                (Ok(w), RefResult::Ok { pa, size, w: wr, u, x }) => {
                    prop_assert_eq!(w.translate(va), pa, "va {:#x}", va);
                    prop_assert_eq!(w.page_size, size);
                    prop_assert_eq!((w.rights.write, w.rights.user_or_read, w.rights.exec), (wr, u, x));
                }
                (Err(WalkFault { reason, level, .. }), RefResult::Fault { code, level: l }) => {
                    prop_assert_eq!(reason.code(), code, "va {:#x}", va);
                    prop_assert_eq!(level, l);
                }
                (g, w) => prop_assert!(false, "va {:#x}: walker {:?} reference {:?}", va, g, w),
            }
        }
    }

    #[test]
    fn translate_with_caches_matches_reference(
        tbl in tables(),
        reqs in prop::collection::vec((va_strategy(), 0u8..8), 32),
        root in 0..TABLES,
        five in any::<bool>(),
        sre in any::<bool>(),
        wpe in any::<bool>(),
        ere in any::<bool>(),
    ) {
        let mem = HostMemory::anonymous(&[(0, MEM as usize)]).unwrap();
        let img = image(&tbl);
        for (&a, &v) in &img {
            mem.store_u64(a, v).unwrap();
        }
        let io = Iommu::new(IommuConfig { iotlb_entries: 256, ..IommuConfig::default() }, mem, 4 * MB, 4 * MB).unwrap();
        let sid = SourceId::new(0, 1, 0);
        io.attach_device(sid, DeviceOptions::default()).unwrap();
        let mut e = PasidEntry::first_level(3, table_addr(root));
        e.flpm = u8::from(five);
        e.sre = sre;
        e.wpe = wpe;
        e.ere = ere;
        io.set_pasid_entry(sid, 1, &e).unwrap();
        let levels = if five { 5 } else { 4 };
        // Repeat the requests so that the second round is served from the caches.
        for round in 0..2 {
            for &(va, a) in &reqs {
                let access = Access { write: a & 1 != 0, execute: a & 2 != 0, privileged: a & 4 != 0 };
                // The reference reads the current memory (accessed/dirty bits may have changed).
                let read = |addr: u64| io.memory().load_u64(addr).ok();
                let want = match ref_walk(&read, table_addr(root), va, levels, 48, true) {
                    RefResult::Fault { code, .. } => Err(code),
                    RefResult::Ok { pa, size, w, u, x } => {
                        match ref_check(w, u, x, access.write, access.execute, access.privileged, sre, wpe, ere) {
                            Some(code) => Err(code),
                            None if in_interrupt_range(pa, size) => Err(0x87),
                            None => Ok((pa, size)),
                        }
                    }
                };
                let before: Vec<Option<u64>> = img.keys().map(|&a| read(a)).collect();
                let got = io.translate(sid, Some(1), va, access).map(|t| (t.host_addr, t.page_size)).map_err(|f| f.reason.code());
                prop_assert_eq!(got, want, "round {} va {:#x} access {:?}", round, va, access);
                if got.is_err() {
                    let after: Vec<Option<u64>> = img.keys().map(|&a| read(a)).collect();
                    prop_assert!(before == after, "a faulting request changed A/D bits (va {:#x})", va);
                }
            }
        }
        // The accessed flag is set on the leaf of every translation that succeeded.
        for &(va, a) in &reqs {
            let access = Access { write: a & 1 != 0, execute: a & 2 != 0, privileged: a & 4 != 0 };
            if io.translate(sid, Some(1), va, access).is_ok() {
                let snap = io.memory().snapshot();
                let m: &vm_memory::GuestMemoryMmap = &snap;
                let w = paging::walk_first_level(m, &mut Identity, &FlParams { levels, haw: 48, fl1gp: true }, table_addr(root), va, None).unwrap();
                prop_assert!(w.used().iter().all(|u| u.value & paging::A != 0));
                if access.write {
                    prop_assert!(w.leaf & paging::D != 0);
                }
            }
        }
    }
}
