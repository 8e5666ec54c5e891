//! Translation benchmarks, side by side with faithful peers in the same run:
//!
//! * an **IOTLB-first map** keyed by (source id, PASID, page), looked up before anything else,
//!   as a plain `FxHashMap` (one thread, no lock), in a `Mutex` and in an `RwLock`; on a miss
//!   it resolves the context chain and walks the tables uncached, then fills the map;
//! * a **bare walk**: the 4-level first-level walk (and the nested 4-over-4 walk) over the
//!   same tables, uncached, with no context chain, no caches, no statistics, no faults: one
//!   entry load per level, its present and page-size bits, nothing else;
//! * the crate's own walker (`walk_first_level`, every reserved-bit and canonical check,
//!   the record of the entries used) over the same tables, uncached.
//!
//! Scenarios: IOTLB hit (one page, and hits cycling over 256 pages at one and two threads);
//! 4-level first-level miss and nested 4-over-4 miss, with paging-structure caches warm and
//! off; PASID-granular invalidation with an empty and a full IOTLB; page-selective
//! invalidation of 1 and 16 pages. Criterion groups record the main ones; a final summary (own
//! `Instant` timing, each pair in interleaved rounds, best round kept) prints ns/op and the
//! vsva/peer ratios.
//!
//! `TRANSLATE_PROFILE=hit|plain_hit|mutex_hit|fl_miss|nested_miss|pasid_miss|bare_walk|walker`
//! runs only that loop (for a profiler or an instruction counter) and exits; `plain_hit` and
//! `mutex_hit` are the IOTLB-first map's hit without a lock and in a `Mutex`; `pasid_miss`
//! flushes PASID 1's PASID-cache entry before each first-level translation, so every one
//! reads the PASID entry from its table (count it with `--toggle-collect='*pasid_info_miss*'`).

mod peers;
mod timing;

use std::hint::black_box;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use criterion::{criterion_group, Criterion};
use vsva_iommu::paging::{fl_map, FlParams, SlParams, TableStore, RW, SIZE_4K, US};
use vsva_iommu::{
    Access, DeviceOptions, GuestTableStore, HostMemory, Invalidation, Iommu, IommuConfig,
    PageRange, PasidCacheScope, PasidEntry, S2Perms, SourceId,
};

use peers::{FxMap, Walker};
use timing::{pair, pair_threads, row, Row, ROUNDS};

const MB: u64 = 1 << 20;
const SID: SourceId = SourceId::new(0, 1, 0);
/// Pages mapped per PASID.
const PAGES: u64 = 65536;
/// Pages cycled through by the miss benchmarks: 16× the IOTLB capacity of the miss instances
/// (256 entries), few enough that tables and cache arrays stay in the CPU caches ("hot
/// caches", as the targets are stated).
const MISS_PAGES: u64 = 4096;
/// Pages cycled through by the hit loops (all cached on both sides).
const HIT_PAGES: u64 = 256;
const GUEST_BASE: u64 = 64 * MB;

const FL: FlParams = FlParams {
    levels: 4,
    haw: 48,
    fl1gp: true,
};
const SL: SlParams = SlParams {
    levels: 4,
    haw: 48,
    sl_2m: true,
    sl_1g: true,
    slee: false,
    tm: true,
};

fn va(i: u64) -> u64 {
    0x10_0000_0000 + i * SIZE_4K
}

/// An IOMMU with PASID 1 first-level-only and PASID 2 nested (4-level over 4-level), each
/// mapping `PAGES` 4 KiB pages at `va(i)`.
struct Instance {
    io: Iommu,
    /// The first-level root of PASID 1 (host address).
    fl_root: u64,
    /// The guest first-level root of PASID 2 (guest-physical) and its stage-2 root.
    nested_roots: (u64, u64),
}

fn setup(psc: bool, iotlb_entries: usize) -> Instance {
    let mem = HostMemory::anonymous(&[(0, 128 * MB as usize)]).unwrap();
    let cfg = IommuConfig {
        paging_structure_caches: psc,
        iotlb_entries,
        ..IommuConfig::default()
    };
    let io = Iommu::new(cfg, mem, 32 * MB, 32 * MB).unwrap();
    io.attach_device(SID, DeviceOptions::default()).unwrap();
    let root = io.table_pool().alloc(io.memory()).unwrap();
    let mut store = io.host_table_store();
    for i in 0..PAGES {
        let pa = 0x1_0000_0000 + i * SIZE_4K;
        fl_map(&mut store, root, 4, va(i), pa, SIZE_4K, RW | US).unwrap();
    }
    io.set_pasid_entry(SID, 1, &PasidEntry::first_level(1, root))
        .unwrap();
    // Nested: guest tables in guest-physical [0, 4 MiB) (host 64 MiB + gpa), guest data pages
    // at GPA 16 MiB + i*4K; stage 2 maps everything with 4 KiB pages.
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0, GUEST_BASE, 4 * MB, S2Perms::RW)
        .unwrap();
    let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0);
    let gpgd = g.alloc_table().unwrap();
    for i in 0..PAGES {
        let gpa = 16 * MB + i * SIZE_4K;
        fl_map(&mut g, gpgd, 4, va(i), gpa, SIZE_4K, RW | US).unwrap();
        // Stage 2 as 4 KiB pages (not large pages).
        io.stage2_map(s2, gpa, 0x2_0000_0000 + gpa, SIZE_4K, S2Perms::RW)
            .unwrap();
    }
    let (sroot, levels) = io.stage2_root(s2).unwrap();
    io.set_pasid_entry(SID, 2, &PasidEntry::nested(2, gpgd, sroot, levels))
        .unwrap();
    Instance {
        io,
        fl_root: root,
        nested_roots: (gpgd, sroot),
    }
}

struct Env {
    /// Default configuration (4096-entry IOTLB): hits, invalidations, throughput.
    main: Instance,
    /// 256-entry IOTLB, paging-structure caches on: misses with warm PSCs.
    warm: Instance,
    /// 256-entry IOTLB, paging-structure caches off: misses walk every level.
    cold: Instance,
}

fn env() -> &'static Env {
    static ENV: std::sync::OnceLock<Env> = std::sync::OnceLock::new();
    ENV.get_or_init(|| Env {
        main: setup(true, IommuConfig::default().iotlb_entries),
        warm: setup(true, 256),
        cold: setup(false, 256),
    })
}

/// A cycling counter over `MISS_PAGES` pages (stride coprime to it, so consecutive misses
/// touch different 2 MiB regions and page tables).
struct Cycle(u64);
impl Cycle {
    fn next(&mut self) -> u64 {
        self.0 = (self.0 + 7919) % MISS_PAGES;
        va(self.0)
    }
}

/// A cycling counter over the `HIT_PAGES` pages the hit loops use.
struct HitCycle(u64);
impl HitCycle {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(31);
        va(self.0 % HIT_PAGES)
    }
}

fn translate(io: &Iommu, pasid: u32, iova: u64) -> u64 {
    io.translate(SID, Some(pasid), iova, Access::READ)
        .unwrap()
        .host_addr
}

fn bench_groups(c: &mut Criterion) {
    let e = env();
    let snap = e.main.io.memory().snapshot();
    let wk = Walker {
        inst: &e.main,
        mem: &snap,
    };
    let mut plain = FxMap::default();
    let locked = Mutex::new(FxMap::default());
    let mut g = c.benchmark_group("iotlb_hit");
    translate(&e.main.io, 1, va(0));
    g.bench_function("vsva", |bn| {
        bn.iter(|| translate(&e.main.io, 1, black_box(va(0))))
    });
    wk.peer(&mut plain, 1, va(0));
    g.bench_function("fxhashmap", |bn| {
        bn.iter(|| wk.peer(&mut plain, 1, black_box(va(0))).unwrap())
    });
    wk.peer(&mut &locked, 1, va(0));
    g.bench_function("mutex_fxhashmap", |bn| {
        bn.iter(|| wk.peer(&mut &locked, 1, black_box(va(0))).unwrap())
    });
    g.finish();

    let cold_snap = e.cold.io.memory().snapshot();
    let cold_wk = Walker {
        inst: &e.cold,
        mem: &cold_snap,
    };
    for (name, pasid) in [("fl_miss", 1u32), ("nested_miss", 2)] {
        let mut g = c.benchmark_group(name);
        let mut cy = Cycle(0);
        g.bench_function("vsva_psc_warm", |bn| {
            bn.iter(|| translate(&e.warm.io, pasid, cy.next()))
        });
        g.bench_function("vsva_psc_cold", |bn| {
            bn.iter(|| translate(&e.cold.io, pasid, cy.next()))
        });
        g.bench_function("bare_walk", |bn| {
            bn.iter(|| {
                let iova = cy.next();
                if pasid == 1 {
                    cold_wk.bare_fl(iova).unwrap()
                } else {
                    cold_wk.bare_nested(iova).unwrap()
                }
            })
        });
        g.bench_function("crate_walker_uncached", |bn| {
            bn.iter(|| {
                let iova = cy.next();
                if pasid == 1 {
                    cold_wk.walker_fl(iova).unwrap()
                } else {
                    cold_wk.walker_nested(iova).unwrap()
                }
            })
        });
        g.finish();
    }
}

fn hit_rows(e: &Env, n: u64, rows: &mut Vec<Row>) {
    let io = &e.main.io;
    let snap = io.memory().snapshot();
    let wk = Walker {
        inst: &e.main,
        mem: &snap,
    };
    let mut plain = FxMap::default();
    let locked = Mutex::new(FxMap::default());
    let rw = RwLock::new(FxMap::default());
    for i in 0..HIT_PAGES {
        translate(io, 1, va(i));
        wk.peer(&mut plain, 1, va(i));
        wk.peer(&mut &locked, 1, va(i));
        wk.peer(&mut &rw, 1, va(i));
    }
    let ours = || {
        black_box(translate(io, 1, black_box(va(0))));
    };
    let page = "IOTLB hit, one page, 1 thread";
    let plain_hit = || {
        black_box(wk.peer(&mut plain, 1, black_box(va(0))));
    };
    rows.push(row(page, pair(n, ours, plain_hit), "FxHashMap, no lock"));
    let locked_hit = || {
        black_box(wk.peer(&mut &locked, 1, black_box(va(0))));
    };
    rows.push(row(page, pair(n, ours, locked_hit), "Mutex<FxHashMap>"));

    // One thread, 256 pages: plain loops on this thread (the plain map cannot be shared).
    let cycling = "IOTLB hits over 256 pages, 1 thread";
    let (mut c1, mut c2) = (HitCycle(0), HitCycle(0));
    let ours = || {
        black_box(translate(io, 1, c1.next()));
    };
    let plain_hits = || {
        black_box(wk.peer(&mut plain, 1, c2.next()));
    };
    rows.push(row(
        cycling,
        pair(n, ours, plain_hits),
        "FxHashMap, no lock",
    ));
    let ours = || {
        black_box(translate(io, 1, c1.next()));
    };
    let locked_hits = || {
        black_box(wk.peer(&mut &locked, 1, c2.next()));
    };
    rows.push(row(cycling, pair(n, ours, locked_hits), "Mutex<FxHashMap>"));

    let two = "IOTLB hits over 256 pages, 2 threads, aggregate";
    let ours = |i| {
        black_box(translate(io, 1, va(i)));
    };
    let rw_hits = |i| {
        black_box(wk.peer(&mut &rw, 1, va(i)));
    };
    rows.push(row(
        two,
        pair_threads(2, n, ours, rw_hits),
        "RwLock<FxHashMap>",
    ));
    let locked_hits = |i| {
        black_box(wk.peer(&mut &locked, 1, va(i)));
    };
    rows.push(row(
        two,
        pair_threads(2, n, ours, locked_hits),
        "Mutex<FxHashMap>",
    ));
}

fn miss_rows(e: &Env, n: u64, rows: &mut Vec<Row>) {
    let snap = e.cold.io.memory().snapshot();
    let wk = Walker {
        inst: &e.cold,
        mem: &snap,
    };
    let locked = Mutex::new(FxMap::default());
    for (label, pasid) in [("4-level FL miss", 1u32), ("nested 4-over-4 miss", 2)] {
        let (mut c1, mut c2) = (Cycle(0), Cycle(0));
        let bare = |iova| {
            if pasid == 1 {
                wk.bare_fl(iova)
            } else {
                wk.bare_nested(iova)
            }
        };
        let walker = |iova| {
            if pasid == 1 {
                wk.walker_fl(iova)
            } else {
                wk.walker_nested(iova)
            }
        };
        let warm = || {
            black_box(translate(&e.warm.io, pasid, c1.next()));
        };
        let theirs = || {
            black_box(bare(c2.next()));
        };
        rows.push(row(
            format!("{label}, PSC warm"),
            pair(n, warm, theirs),
            "bare walk",
        ));
        let cold = || {
            black_box(translate(&e.cold.io, pasid, c1.next()));
        };
        let theirs = || {
            black_box(bare(c2.next()));
        };
        rows.push(row(
            format!("{label}, PSC off"),
            pair(n, cold, theirs),
            "bare walk",
        ));
        let cold = || {
            black_box(translate(&e.cold.io, pasid, c1.next()));
        };
        let theirs = || {
            black_box(walker(c2.next()));
        };
        let uncached = "the crate's walker, uncached";
        rows.push(row(
            format!("{label}, PSC off"),
            pair(n, cold, theirs),
            uncached,
        ));
        let warm = || {
            black_box(translate(&e.warm.io, pasid, c1.next()));
        };
        let theirs = || {
            locked.lock().unwrap().clear();
            black_box(wk.peer(&mut &locked, pasid, c2.next()));
        };
        let chain = "Mutex<FxHashMap> miss: chain + walk";
        rows.push(row(
            format!("{label}, PSC warm"),
            pair(n, warm, theirs),
            chain,
        ));
    }
}

fn invalidation_rows(e: &Env, n: u64, rows: &mut Vec<Row>) {
    let io = &e.main.io;
    let locked = Mutex::new(FxMap::default());
    let peer = "Mutex<FxHashMap>";
    for filled in [0u64, 4096] {
        io.invalidate(&Invalidation::IotlbGlobal).unwrap();
        for i in 0..filled {
            translate(io, 1, va(i));
        }
        let ours = || {
            io.invalidate(&Invalidation::PasidIotlb { did: 1, pasid: 1 })
                .unwrap()
        };
        let refill = || {
            let mut m = locked.lock().unwrap();
            for i in 0..filled {
                m.insert((SID.0, 1, i), 0);
            }
        };
        let scan = || locked.lock().unwrap().retain(|k, _| k.1 != 1);
        let (a, b) = if filled == 0 {
            pair(n, ours, scan)
        } else {
            // The peer's scan empties the map on its first call: time a refill + scan per
            // call over a smaller sample and subtract the refill.
            let reps = 2 * ROUNDS;
            let (refill_ns, with_scan) = pair(reps, refill, || {
                refill();
                scan();
            });
            let (a, _) = pair(n, ours, || {});
            (a, (with_scan - refill_ns).max(0.1))
        };
        rows.push(row(
            format!("PASID invalidation, {filled} cached"),
            (a, b),
            peer,
        ));
    }
    for am in [0u8, 4] {
        for i in 0..4096 {
            translate(io, 1, va(i));
            locked.lock().unwrap().insert((SID.0, 1, va(i) >> 12), 0);
        }
        let ours = || {
            io.invalidate(&Invalidation::PasidIotlbPages {
                did: 1,
                pasid: 1,
                range: PageRange { addr: va(64), am },
                ih: true,
            })
            .unwrap()
        };
        let theirs = || {
            let mut m = locked.lock().unwrap();
            for p in 0..1u64 << am {
                m.remove(&(SID.0, 1, (va(64) >> 12) + p));
            }
        };
        let scenario = format!("page-selective invalidation, {} page(s)", 1u64 << am);
        rows.push(row(scenario, pair(n, ours, theirs), peer));
    }
}

/// Every peer answers what vsva answers, for a sample of pages of both PASIDs.
fn check_peers(e: &Env) {
    let snap = e.cold.io.memory().snapshot();
    let wk = Walker {
        inst: &e.cold,
        mem: &snap,
    };
    let mut plain = FxMap::default();
    for i in (0..PAGES).step_by(997) {
        let iova = va(i) + 0x123;
        let fl = translate(&e.cold.io, 1, iova);
        let nested = translate(&e.cold.io, 2, iova);
        assert_eq!(wk.bare_fl(iova), Some(fl));
        assert_eq!(wk.walker_fl(iova), Some(fl));
        assert_eq!(wk.peer(&mut plain, 1, iova), Some(fl));
        assert_eq!(wk.bare_nested(iova), Some(nested));
        assert_eq!(wk.walker_nested(iova), Some(nested));
        assert_eq!(wk.peer(&mut plain, 2, iova), Some(nested));
    }
}

fn summary(_c: &mut Criterion) {
    let e = env();
    check_peers(e);
    let n = 1_000_000;
    let mut rows = Vec::new();
    hit_rows(e, n, &mut rows);
    miss_rows(e, n / 5, &mut rows);
    invalidation_rows(e, n / 5, &mut rows);
    println!();
    println!("| scenario | vsva ns/op | peer | peer ns/op | vsva / peer |");
    println!("|---|---:|---|---:|---:|");
    for r in &rows {
        let ratio = r.ours / r.theirs;
        let ratio = if ratio < 0.1 {
            format!("1/{:.0}", 1.0 / ratio)
        } else {
            format!("{ratio:.2}x")
        };
        println!(
            "| {} | {:.1} | {} | {:.1} | {ratio} |",
            r.scenario, r.ours, r.peer, r.theirs
        );
    }
    println!();
    println!("vsva stats, main instance: {:?}", e.main.io.stats());
    println!(
        "vsva stats, miss instance with PSC: {:?}",
        e.warm.io.stats()
    );
}

/// `TRANSLATE_PROFILE`: one loop only, for a profiler.
fn profile(what: &str) {
    let e = env();
    let n = 1_000_000u64;
    let snap = e.cold.io.memory().snapshot();
    let wk = Walker {
        inst: &e.cold,
        mem: &snap,
    };
    let mut cy = Cycle(0);
    let main_snap = e.main.io.memory().snapshot();
    let main_wk = Walker {
        inst: &e.main,
        mem: &main_snap,
    };
    match what {
        // The hits go through function pointers: one out-of-line call per hit on each side,
        // as in the timed rows (where neither `translate` nor `Walker::peer` is inlined), and
        // not a peer inlined into this loop with its PASID folded in against a vsva call.
        "hit" => {
            let f: fn(&Iommu, u32, u64) -> u64 = black_box(translate);
            f(&e.main.io, 1, va(0));
            profile_loop(n, || {
                black_box(f(&e.main.io, 1, black_box(va(0))));
            });
        }
        "plain_hit" => {
            let f: fn(&Walker<'_>, &mut FxMap, u32, u64) -> Option<u64> = black_box(plain_hit);
            let mut plain = FxMap::default();
            f(&main_wk, &mut plain, 1, va(0));
            profile_loop(n, || {
                black_box(f(&main_wk, &mut plain, 1, black_box(va(0))));
            });
        }
        "mutex_hit" => {
            let f: fn(&Walker<'_>, &Mutex<FxMap>, u32, u64) -> Option<u64> = black_box(mutex_hit);
            let locked = Mutex::new(FxMap::default());
            f(&main_wk, &locked, 1, va(0));
            profile_loop(n, || {
                black_box(f(&main_wk, &locked, 1, black_box(va(0))));
            });
        }
        "fl_miss" | "nested_miss" => {
            let pasid = if what == "fl_miss" { 1 } else { 2 };
            for _ in 0..n {
                black_box(translate(&e.warm.io, pasid, cy.next()));
            }
        }
        "pasid_miss" => {
            let flush = Invalidation::PasidCache(PasidCacheScope::Pasid { did: 1, pasid: 1 });
            for _ in 0..n {
                e.warm.io.invalidate(&flush).unwrap();
                black_box(translate(&e.warm.io, 1, cy.next()));
            }
        }
        "bare_walk" => {
            for _ in 0..n {
                black_box(wk.bare_fl(cy.next()));
            }
        }
        "walker" => {
            for _ in 0..n {
                black_box(wk.walker_fl(cy.next()));
            }
        }
        other => panic!(
            "TRANSLATE_PROFILE={other}: hit, plain_hit, mutex_hit, fl_miss, nested_miss, \
             pasid_miss, bare_walk, walker"
        ),
    }
}

/// A hit of the IOTLB-first map without a lock, as a function of its own (as `translate`).
fn plain_hit(wk: &Walker<'_>, map: &mut FxMap, pasid: u32, iova: u64) -> Option<u64> {
    wk.peer(map, pasid, iova)
}

/// A hit of the IOTLB-first map in a `Mutex`, as a function of its own (as `translate`).
fn mutex_hit(wk: &Walker<'_>, map: &Mutex<FxMap>, pasid: u32, iova: u64) -> Option<u64> {
    wk.peer(&mut { map }, pasid, iova)
}

/// `n` calls of `f`: the loop of a `TRANSLATE_PROFILE` hit mode, whose instructions a
/// counter takes with `--toggle-collect='*profile_loop*'` (the same loop for vsva and the
/// peers, so per call the two counts differ only by what the calls do).
#[inline(never)]
fn profile_loop(n: u64, mut f: impl FnMut()) {
    for _ in 0..n {
        f();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_groups, summary
}

fn main() {
    if let Ok(what) = std::env::var("TRANSLATE_PROFILE") {
        profile(&what);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
