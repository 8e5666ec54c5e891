//! Translations running while another thread remaps and invalidates never return a
//! translation that was invalidated before the lookup began; translations running while the
//! memory their tables live in is removed and added again finish on the memory they started
//! with.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap};
use vsva_iommu::paging::{fl_map, TableStore, P, RW, SIZE_4K, US};
use vsva_iommu::{
    Access, DeviceOptions, FaultReason, HostMemory, Invalidation, Iommu, IommuConfig, PageRange,
    PasidCacheScope, PasidEntry, SourceId,
};

const MB: u64 = 1 << 20;
const PAGES: u64 = 8;
const OUT_BASE: u64 = 0x100_0000;

fn pa(generation: u64) -> u64 {
    OUT_BASE + generation * SIZE_4K
}

/// Waits until `counter` reaches `target`. A reader stops only when told to or when one of
/// its assertions fails, so a reader that has finished meanwhile has failed: then this joins
/// it and fails the test with its panic, instead of waiting for a count that never comes.
fn wait_for(counter: &AtomicU64, target: u64, readers: &mut Vec<JoinHandle<()>>) {
    while counter.load(Ordering::Relaxed) < target {
        if let Some(i) = readers.iter().position(JoinHandle::is_finished) {
            let reader = readers.swap_remove(i);
            match reader.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("a reader stopped before it was told to"),
            }
        }
        std::thread::yield_now();
    }
}

#[test]
fn remap_and_invalidate_while_translating_mixed_granularities() {
    run(true, false);
}

#[test]
fn remap_and_invalidate_while_translating_page_selective_only() {
    run(false, true);
}

fn run(ats: bool, page_only: bool) {
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
    let io = Arc::new(Iommu::new(IommuConfig::default(), mem, 8 * MB, 8 * MB).unwrap());
    let sid = SourceId::new(0, 1, 0);
    io.attach_device(
        sid,
        DeviceOptions {
            ats,
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    let root = io.table_pool().alloc(io.memory()).unwrap();
    let mut store = io.host_table_store();
    for i in 0..PAGES {
        fl_map(&mut store, root, 4, i * SIZE_4K, pa(i), SIZE_4K, RW | US).unwrap();
    }
    // PTE addresses (all in one page table).
    let pt = {
        let mut t = root;
        for level in [4u8, 3, 2] {
            t = store.read(t + vsva_iommu::paging::level_index(0, level) * 8)
                & vsva_iommu::paging::ADDR_MASK;
        }
        t
    };
    io.set_pasid_entry(sid, 5, &PasidEntry::first_level(3, root))
        .unwrap();
    // published[i] = newest generation of page i whose invalidation has completed.
    let published: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(AtomicU64::new).collect());
    let done = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let mut readers: Vec<_> = (0..2)
        .map(|t| {
            let (io, published, done, checked) = (io.clone(), published.clone(), done.clone(), checked.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(Ordering::Acquire) {
                    for i in 0..PAGES {
                        let min = published[i as usize].load(Ordering::Acquire);
                        // Half the lookups are device-TLB lookups (PASID 5 via ATS), half through
                        // requests with a fresh access kind.
                        let access = if (n + t).is_multiple_of(2) { Access::READ } else { Access::WRITE };
                        let tr = io.translate(sid, Some(5), i * SIZE_4K + 8, access).expect("mapped");
                        let g = (tr.host_addr - 8 - OUT_BASE) / SIZE_4K;
                        assert_eq!(g % PAGES, i, "page {i} translated to another page's frame");
                        assert!(g >= min, "page {i}: generation {g} served after generation {min} was invalidated");
                        n += 1;
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_for(&checked, 100, &mut readers);
    let rounds = 2500u64;
    for g in PAGES..PAGES + rounds {
        // Let the readers run between remaps (2 cores, 3 threads).
        let seen = checked.load(Ordering::Relaxed);
        wait_for(&checked, seen + 4, &mut readers);
        let i = g % PAGES;
        io.memory()
            .store_u64(pt + i * 8, pa(g) | P | RW | US)
            .unwrap();
        let range = PageRange {
            addr: i * SIZE_4K,
            am: 0,
        };
        let inv = match if page_only { 0 } else { g % 4 } {
            0 => Invalidation::PasidIotlbPages {
                did: 3,
                pasid: 5,
                range,
                ih: true,
            },
            1 => Invalidation::PasidIotlb { did: 3, pasid: 5 },
            2 => Invalidation::IotlbDomain { did: 3 },
            _ => Invalidation::IotlbGlobal,
        };
        io.invalidate(&inv).unwrap();
        let dev = if g % 2 == 0 {
            Invalidation::DeviceTlb {
                source_id: sid,
                pasid: Some(5),
                pages: Some(range),
            }
        } else {
            Invalidation::DeviceTlb {
                source_id: sid,
                pasid: Some(5),
                pages: None,
            }
        };
        if ats {
            io.invalidate(&dev).unwrap();
        }
        if g % 64 == 0 {
            io.invalidate(&Invalidation::PasidCache(PasidCacheScope::Pasid {
                did: 3,
                pasid: 5,
            }))
            .unwrap();
        }
        published[i as usize].store(g, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        checked.load(Ordering::Relaxed) > 1000,
        "readers made progress"
    );
    let s = io.stats();
    assert!(s.iotlb_hits > 0 && s.walks > rounds / 4, "{s:?}");
    assert_eq!(s.devtlb_hits > 0, ats, "{s:?}");
}

/// Where the first-level tables of the memory-replacement test live: a file-backed region
/// that is removed and mapped again from the same file while translations run.
const TABLES_HPA: u64 = 32 * MB;
const TABLES_LEN: u64 = 4 * SIZE_4K;

fn tables_region(file: &std::fs::File) -> GuestRegionMmap {
    GuestRegionMmap::from_range(
        GuestAddress(TABLES_HPA),
        TABLES_LEN as usize,
        Some(FileOffset::new(file.try_clone().unwrap(), 0)),
    )
    .unwrap()
}

#[test]
fn memory_replaced_while_translating() {
    let file = std::fs::File::from(
        rustix::fs::memfd_create("vsva-tables", rustix::fs::MemfdFlags::CLOEXEC).unwrap(),
    );
    file.set_len(TABLES_LEN).unwrap();
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
    mem.add_region(tables_region(&file)).unwrap();
    let io = Arc::new(Iommu::new(IommuConfig::default(), mem, 8 * MB, 8 * MB).unwrap());
    let sid = SourceId::new(0, 2, 0);
    io.attach_device(sid, DeviceOptions::default()).unwrap();
    // L4[0] -> L3[0] -> L2[0] -> L1[i] -> pa(i), every table in the file.
    let m = io.memory();
    for level in 0..3 {
        let table = TABLES_HPA + level * SIZE_4K;
        m.store_u64(table, (table + SIZE_4K) | P | RW | US).unwrap();
    }
    for i in 0..PAGES {
        m.store_u64(TABLES_HPA + 3 * SIZE_4K + i * 8, pa(i) | P | RW | US)
            .unwrap();
    }
    io.set_pasid_entry(sid, 5, &PasidEntry::first_level(3, TABLES_HPA))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let walked = Arc::new(AtomicU64::new(0));
    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let (io, done, walked) = (io.clone(), done.clone(), walked.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Acquire) {
                    for i in 0..PAGES {
                        // Every lookup walks: the IOTLB is flushed before each.
                        io.invalidate(&Invalidation::PasidIotlb { did: 3, pasid: 5 })
                            .unwrap();
                        match io.translate(sid, Some(5), i * SIZE_4K, Access::READ) {
                            Ok(t) => assert_eq!(t.host_addr, pa(i), "page {i}"),
                            // Begun while the region was out: no memory behind the tables.
                            Err(f) => assert!(
                                matches!(
                                    f.reason,
                                    FaultReason::FirstLevelAccess
                                        | FaultReason::FirstLevelPointerInvalid
                                ),
                                "{f:?}"
                            ),
                        }
                        walked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for _ in 0..300 {
        // Let the readers run between replacements (2 cores, 3 threads).
        let seen = walked.load(Ordering::Relaxed);
        wait_for(&walked, seen + 4, &mut readers);
        m.remove_region(TABLES_HPA, TABLES_LEN).unwrap();
        m.add_region(tables_region(&file)).unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    assert!(io.stats().walks > 1000, "{:?}", io.stats());
}
