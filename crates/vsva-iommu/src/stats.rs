//! Translation statistics: atomic counters sharded per thread, summed when read.
//!
//! Each thread gets a process-wide index once; the first `EXCLUSIVE` threads own their shard
//! outright and update it with a plain load and store (no locked instruction on the translate
//! path: the counter is atomic only so readers may sum it at any time). Later threads share an
//! overflow shard updated with `fetch_add`. A translation that counts several events looks its
//! shard up once (`Stats::local`) and counts through the `LocalStats` handle it gets.
//!
//! A single count (`Stats::inc`, the front-cache hit's) costs a thread with an exclusive shard
//! one thread-local load, one compare and the increment: a thread without an index yet reads
//! as above every exclusive index, so the index is assigned (and the overflow shard used) out
//! of line, behind the one compare the exclusive case needs anyway.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Threads with an exclusive shard.
const EXCLUSIVE: usize = 64;

/// Counter names, in [`StatsSnapshot`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    Translations,
    IotlbHits,
    IotlbMisses,
    PasidCacheHits,
    PasidCacheMisses,
    Walks,
    FlPscHits,
    SlPscHits,
    DevTlbHits,
    Faults,
    Invalidations,
    AdRetries,
    /// Front-cache hits: counted once, reported as both a translation and an IOTLB hit.
    FrontHits,
    AtsRequests,
    DevTlbSent,
    Fences,
}

const COUNTERS: usize = 16;

#[repr(align(128))]
struct Shard([AtomicU64; COUNTERS]);

/// Sharded counters.
pub(crate) struct Stats {
    /// `EXCLUSIVE` exclusive shards, then the overflow shard.
    shards: Box<[Shard; EXCLUSIVE + 1]>,
}

/// The index of a thread that has not counted yet (above every assigned index).
const UNASSIGNED: usize = EXCLUSIVE + 1;

thread_local! {
    /// This thread's shard index: `< EXCLUSIVE` for an exclusive shard, `EXCLUSIVE` for the
    /// shared overflow shard, [`UNASSIGNED`] before the thread's first count.
    static INDEX: Cell<usize> = const { Cell::new(UNASSIGNED) };
}

/// This thread's shard index as [`INDEX`] holds it (possibly [`UNASSIGNED`]).
#[inline(always)]
fn raw_shard_index() -> usize {
    INDEX.with(Cell::get)
}

/// This thread's shard index, assigned on its first count: `< EXCLUSIVE` for an exclusive
/// shard, `EXCLUSIVE` for the shared overflow shard.
#[inline]
fn shard_index() -> usize {
    let i = raw_shard_index();
    if i <= EXCLUSIVE {
        i
    } else {
        assign_shard_index()
    }
}

#[cold]
#[inline(never)]
fn assign_shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let v = NEXT.fetch_add(1, Ordering::Relaxed).min(EXCLUSIVE);
    INDEX.with(|i| i.set(v));
    v
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            shards: Box::new(std::array::from_fn(|_| {
                Shard(std::array::from_fn(|_| AtomicU64::new(0)))
            })),
        }
    }

    /// The calling thread's shard: one thread-local lookup for every count made through it.
    /// Meant for one call (a translation), on the thread that took it.
    #[inline]
    pub(crate) fn local(&self) -> LocalStats<'_> {
        let i = shard_index();
        LocalStats {
            shard: &self.shards[i].0,
            exclusive: i < EXCLUSIVE,
            _this_thread: PhantomData,
        }
    }

    /// Adds `n` to counter `c`: on a thread with an exclusive shard one thread-local load,
    /// one compare (the shard array's length is a constant, so the index needs no other
    /// check) and the addition; everything else out of line.
    #[inline(always)]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        let i = raw_shard_index();
        if i < EXCLUSIVE {
            let a = &self.shards[i].0[c as usize];
            // Single writer: no read-modify-write needed.
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            self.add_cold(c, n);
        }
    }

    /// [`Self::add`] for a thread without an exclusive shard (or without an index yet).
    #[cold]
    #[inline(never)]
    fn add_cold(&self, c: Counter, n: u64) {
        self.local().add(c, n)
    }

    #[inline(always)]
    pub(crate) fn inc(&self, c: Counter) {
        self.add(c, 1)
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let sum = |c: Counter| {
            self.shards
                .iter()
                .map(|s| s.0[c as usize].load(Ordering::Relaxed))
                .sum()
        };
        StatsSnapshot {
            translations: sum(Counter::Translations) + sum(Counter::FrontHits),
            iotlb_hits: sum(Counter::IotlbHits) + sum(Counter::FrontHits),
            iotlb_misses: sum(Counter::IotlbMisses),
            pasid_cache_hits: sum(Counter::PasidCacheHits),
            pasid_cache_misses: sum(Counter::PasidCacheMisses),
            walks: sum(Counter::Walks),
            fl_psc_hits: sum(Counter::FlPscHits),
            sl_psc_hits: sum(Counter::SlPscHits),
            devtlb_hits: sum(Counter::DevTlbHits),
            faults: sum(Counter::Faults),
            invalidations: sum(Counter::Invalidations),
            ad_retries: sum(Counter::AdRetries),
            ats_requests: sum(Counter::AtsRequests),
            devtlb_sent: sum(Counter::DevTlbSent),
            fences: sum(Counter::Fences),
        }
    }
}

/// The calling thread's shard of a [`Stats`] (see [`Stats::local`]).
pub(crate) struct LocalStats<'a> {
    shard: &'a [AtomicU64; COUNTERS],
    /// True when the shard is this thread's alone (not the shared overflow shard).
    exclusive: bool,
    /// Not `Send`: an exclusive shard has one writer, the thread that looked it up.
    _this_thread: PhantomData<*const ()>,
}

impl LocalStats<'_> {
    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        let a = &self.shard[c as usize];
        if self.exclusive {
            // Single writer: no read-modify-write needed.
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn inc(&self, c: Counter) {
        self.add(c, 1)
    }
}

/// Counter values at one moment (each counter is exact once the threads updating it have
/// been joined; the set is not an atomic snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// `translate` calls (including those from the DMA helpers).
    pub translations: u64,
    /// IOTLB hits.
    pub iotlb_hits: u64,
    /// IOTLB misses (a walk followed).
    pub iotlb_misses: u64,
    /// PASID-cache hits.
    pub pasid_cache_hits: u64,
    /// PASID-cache misses (root/context/PASID tables read from memory).
    pub pasid_cache_misses: u64,
    /// Page walks started (first level, second level or nested count once each).
    pub walks: u64,
    /// First-level paging-structure-cache hits.
    pub fl_psc_hits: u64,
    /// Second-level paging-structure-cache hits.
    pub sl_psc_hits: u64,
    /// Device-TLB hits.
    pub devtlb_hits: u64,
    /// Failed translations.
    pub faults: u64,
    /// Invalidation requests processed.
    pub invalidations: u64,
    /// Walks restarted because an entry changed during an accessed/dirty update.
    pub ad_retries: u64,
    /// ATS translation requests (`Iommu::ats_translate`).
    pub ats_requests: u64,
    /// Device-TLB invalidation requests sent to devices through the `DevTlbSink`.
    pub devtlb_sent: u64,
    /// Devices fenced for not completing a device-TLB invalidation.
    pub fences: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_threads() {
        let s = std::sync::Arc::new(Stats::new());
        let hs: Vec<_> = (0..80)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        s.inc(Counter::IotlbHits);
                    }
                    s.add(Counter::Walks, 2);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let snap = s.snapshot();
        assert_eq!(
            snap.iotlb_hits, 8000,
            "exclusive and shared shards both count"
        );
        assert_eq!(snap.walks, 160);
        assert_eq!(snap.faults, 0);
    }

    #[test]
    fn a_single_count_goes_to_the_thread_s_shard_whatever_its_index() {
        let s = Stats::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for (k, index) in [0, EXCLUSIVE - 1, EXCLUSIVE, UNASSIGNED]
                    .into_iter()
                    .enumerate()
                {
                    INDEX.with(|i| i.set(index));
                    s.inc(Counter::IotlbHits);
                    s.add(Counter::Walks, 2);
                    let snap = s.snapshot();
                    let n = k as u64 + 1;
                    assert_eq!((snap.iotlb_hits, snap.walks), (n, 2 * n), "index {index}");
                    let used = raw_shard_index();
                    assert!(
                        used <= EXCLUSIVE,
                        "index {index}: assigned on the first count"
                    );
                    if index <= EXCLUSIVE {
                        assert_eq!(used, index);
                        let a = &s.shards[index].0[Counter::IotlbHits as usize];
                        assert_eq!(a.load(Ordering::Relaxed), 1, "index {index}: its own shard");
                    }
                }
            });
        });
    }

    #[test]
    fn counts_through_one_shard_lookup_are_summed() {
        let s = std::sync::Arc::new(Stats::new());
        // More threads than exclusive shards: the last ones count on the shared shard.
        let hs: Vec<_> = (0..EXCLUSIVE + 8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let local = s.local();
                    for _ in 0..50 {
                        local.inc(Counter::Walks);
                        s.inc(Counter::Walks);
                    }
                    local.add(Counter::Faults, 3);
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let snap = s.snapshot();
        let threads = (EXCLUSIVE + 8) as u64;
        assert_eq!(
            snap.walks,
            threads * 100,
            "a handle and `inc` count together"
        );
        assert_eq!(snap.faults, threads * 3);
    }
}
