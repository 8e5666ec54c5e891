//! A fixed-size, 2-way set-associative array of seqlock-protected, cache-line-aligned slots:
//! the storage of every translation cache (front cache, IOTLB, PASID cache, paging-structure
//! caches, device TLB).
//!
//! Readers never block and never write: a lookup reads the slot's sequence number, its key and
//! data words, and the sequence number again; a changed or odd sequence means "not found".
//! Writers (fills and invalidations) take a slot by moving its sequence number from even to
//! odd with a compare-and-swap, write, and release it with the next even value.
//!
//! Fills and page-selective invalidations are ordered per slot: a fill re-checks, while holding
//! the slot, a caller-supplied condition (an invalidation sequence counter unchanged since the
//! walk began). An invalidation bumps that counter first and then takes every way of the set
//! of the key in turn (whatever key it holds), clearing the matching ones. The slot's sequence
//! number orders the two: either the invalidation takes the way after the fill released it and
//! clears the entry, or the fill takes it after the invalidation and sees the bumped counter.
//! So a translation read before an invalidation is never stored after it. The `loom` tests in
//! this module check both properties; run them with
//! `RUSTFLAGS="--cfg loom" cargo test -p vsva-iommu --release --lib loom`.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Ways per set.
pub(crate) const WAYS: usize = 2;

/// One entry; cache-line aligned so a probe touches one line per way.
#[repr(align(64))]
struct Slot<const W: usize> {
    seq: AtomicU64,
    k0: AtomicU64,
    k1: AtomicU64,
    data: [AtomicU64; W],
}

impl<const W: usize> Slot<W> {
    fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            k0: AtomicU64::new(0),
            k1: AtomicU64::new(0),
            data: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Takes the slot if it is free right now.
    fn try_lock(&self) -> Option<u64> {
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 != 0 {
            return None;
        }
        self.seq
            .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        fence(Ordering::Release);
        Some(s)
    }

    fn unlock(&self, s: u64) {
        self.seq.store(s + 2, Ordering::Release);
    }
}

/// A cache of `W` data words per entry keyed by two words; key word `k0` must not be zero
/// (zero marks an empty slot).
pub(crate) struct SlotArray<const W: usize> {
    /// The sets, `WAYS` slots each: finding a set is one bounds check.
    sets: Box<[[Slot<W>; WAYS]]>,
    set_mask: usize,
}

#[inline]
fn hash(k0: u64, k1: u64) -> u64 {
    let h = (k0 ^ k1.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

impl<const W: usize> SlotArray<W> {
    /// An array of at least `entries` entries (rounded up to a power of two of sets).
    pub(crate) fn new(entries: usize) -> Self {
        let sets = entries.div_ceil(WAYS).max(1).next_power_of_two();
        Self {
            sets: (0..sets)
                .map(|_| std::array::from_fn(|_| Slot::new()))
                .collect(),
            set_mask: sets - 1,
        }
    }

    /// Number of entries.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    #[inline]
    fn set(&self, k0: u64, k1: u64) -> &[Slot<W>; WAYS] {
        &self.sets[(hash(k0, k1) as usize) & self.set_mask]
    }

    /// The data of the entry with key `(k0, k1)`, read consistently, if present.
    #[inline]
    pub(crate) fn lookup(&self, k0: u64, k1: u64) -> Option<[u64; W]> {
        for slot in self.set(k0, k1) {
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 & 1 != 0 {
                continue;
            }
            if slot.k0.load(Ordering::Relaxed) != k0 || slot.k1.load(Ordering::Relaxed) != k1 {
                continue;
            }
            let data: [u64; W] = std::array::from_fn(|i| slot.data[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == s1 {
                return Some(data);
            }
        }
        None
    }

    /// Stores an entry, replacing one with the same key, an empty way, or a victim. While the
    /// slot is held, `still_valid` decides whether the data may still be stored. Returns
    /// whether it was stored (a busy slot or a false `still_valid` skips the fill).
    // Inlined: the fills of a translation miss then need no call, and their data words go
    // straight from registers into the slot.
    #[inline(always)]
    pub(crate) fn insert(
        &self,
        k0: u64,
        k1: u64,
        data: [u64; W],
        still_valid: impl FnOnce() -> bool,
    ) -> bool {
        debug_assert!(k0 != 0);
        let set = self.set(k0, k1);
        let mut victim = None;
        for (i, slot) in set.iter().enumerate() {
            let key0 = slot.k0.load(Ordering::Relaxed);
            if (key0 == k0 && slot.k1.load(Ordering::Relaxed) == k1) || key0 == 0 {
                victim = Some(i);
                break;
            }
        }
        let way = victim.unwrap_or_else(|| (hash(k1, k0) >> 40) as usize % WAYS);
        let slot = &set[way];
        let Some(s) = slot.try_lock() else {
            return false;
        };
        // Another way may hold the same key (a racing fill): drop it so lookups stay unique.
        for (i, other) in set.iter().enumerate() {
            if i != way
                && other.k0.load(Ordering::Relaxed) == k0
                && other.k1.load(Ordering::Relaxed) == k1
            {
                if let Some(os) = other.try_lock() {
                    other.k0.store(0, Ordering::Relaxed);
                    other.unlock(os);
                }
            }
        }
        let ok = still_valid();
        if ok {
            slot.k0.store(k0, Ordering::Relaxed);
            slot.k1.store(k1, Ordering::Relaxed);
            for (d, v) in slot.data.iter().zip(data) {
                d.store(v, Ordering::Relaxed);
            }
        }
        slot.unlock(s);
        ok
    }

    /// Removes every entry with key `(k0, k1)`, waiting for ways being written. Entries stored
    /// by fills that held a slot when this began are removed too.
    pub(crate) fn remove(&self, k0: u64, k1: u64) {
        for slot in self.set(k0, k1) {
            // Taking every way (even one whose key differs) orders this removal after any fill
            // holding it, through the slot's sequence number.
            let s = loop {
                if let Some(s) = slot.try_lock() {
                    break s;
                }
                std::hint::spin_loop();
                #[cfg(loom)]
                loom::thread::yield_now();
            };
            if slot.k0.load(Ordering::Relaxed) == k0 && slot.k1.load(Ordering::Relaxed) == k1 {
                slot.k0.store(0, Ordering::Relaxed);
            }
            slot.unlock(s);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_replace_remove() {
        let a = SlotArray::<2>::new(64);
        assert_eq!(a.capacity(), 64);
        assert_eq!(a.lookup(1, 2), None);
        assert!(a.insert(1, 2, [3, 4], || true));
        assert_eq!(a.lookup(1, 2), Some([3, 4]));
        assert_eq!(a.lookup(1, 3), None);
        assert!(a.insert(1, 2, [5, 6], || true));
        assert_eq!(a.lookup(1, 2), Some([5, 6]));
        assert!(!a.insert(9, 9, [0, 0], || false));
        assert_eq!(a.lookup(9, 9), None);
        a.remove(1, 2);
        assert_eq!(a.lookup(1, 2), None);
    }

    #[test]
    fn full_sets_evict_but_keep_keys_unique() {
        let a = SlotArray::<1>::new(WAYS); // one set
        for k in 1..=20u64 {
            assert!(a.insert(k, 0, [k * 10], || true));
            assert_eq!(a.lookup(k, 0), Some([k * 10]));
        }
        let present = (1..=20u64).filter(|&k| a.lookup(k, 0).is_some()).count();
        assert!((1..=WAYS).contains(&present));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU64 as Counter;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_reader_never_sees_torn_entries() {
        loom::model(|| {
            let a = Arc::new(SlotArray::<2>::new(4));
            a.insert(1, 1, [1, 1], || true);
            let w = a.clone();
            let t = thread::spawn(move || {
                w.insert(1, 1, [2, 2], || true);
            });
            if let Some([x, y]) = a.lookup(1, 1) {
                assert_eq!(x, y, "torn read");
            }
            t.join().unwrap();
            assert_eq!(a.lookup(1, 1), Some([2, 2]));
        });
    }

    #[test]
    fn loom_fill_racing_invalidation_is_never_left_behind() {
        loom::model(|| {
            let a = Arc::new(SlotArray::<1>::new(4));
            let psi = Arc::new(Counter::new(0));
            let (fa, fp) = (a.clone(), psi.clone());
            let filler = thread::spawn(move || {
                // The walk reads the mapping after taking this snapshot.
                let seen = fp.load(Ordering::Acquire);
                fa.insert(7, 1, [0xdead], || fp.load(Ordering::Acquire) == seen);
                seen
            });
            // Invalidation: bump the sequence, then clear the key.
            psi.fetch_add(1, Ordering::AcqRel);
            a.remove(7, 1);
            let seen = filler.join().unwrap();
            if seen == 0 {
                // The fill's walk began before the invalidation: it must not survive it.
                assert_eq!(a.lookup(7, 1), None, "stale fill survived the invalidation");
            }
        });
    }
}
