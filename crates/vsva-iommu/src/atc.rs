//! The address translation cache a device keeps (PCIe ATS): translations the IOMMU answered
//! to its translation requests ([`crate::Iommu::ats_translate`]), keyed by PASID and page,
//! bounded, dropped by the device-TLB invalidations the IOMMU sends ([`DevTlbScope`]).
//!
//! Pure logic, no I/O and no lock: one per device, owned by whatever emulates the device
//! (wrap it in a lock if several threads of the device share it).
//!
//! A fill races invalidations: the device asks the IOMMU, an invalidation covering the page
//! arrives before the answer, then the answer arrives (already stale). So a fill carries the
//! cache's [`Atc::generation`] read *before* the request was sent, and is dropped if any
//! invalidation came in since — as a device must discard a translation completion that an
//! invalidation overtook.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::ats::DevTlbScope;
use crate::fault::Access;
use crate::iommu::{Perms, Translation};

/// The page sizes a translation can have: 4 KiB, 2 MiB, 1 GiB.
const PAGE_SIZES: [u64; 3] = [1 << 12, 1 << 21, 1 << 30];

/// (PASID, page base).
type Key = (Option<u32>, u64);

#[derive(Debug, Clone, Copy)]
struct Entry {
    host_page: u64,
    size: u64,
    perms: Perms,
    /// Insertion number, to tell a live entry from an older one in the eviction queue.
    stamp: u64,
}

/// A device's translation cache: at most `capacity` translations; the oldest fill is evicted
/// first.
#[derive(Debug, Clone)]
pub struct Atc {
    capacity: usize,
    entries: FxHashMap<Key, Entry>,
    /// Fills in insertion order (entries since removed are skipped at eviction).
    order: VecDeque<(Key, u64)>,
    next_stamp: u64,
    generation: u64,
    hits: u64,
    misses: u64,
}

impl Atc {
    /// An empty cache of at most `capacity` translations (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: FxHashMap::default(),
            order: VecDeque::new(),
            next_stamp: 0,
            generation: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// How many translations it may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many translations it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lookups answered and not answered so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The invalidation count: read it before sending a translation request and pass it to
    /// [`Atc::insert`] with the answer.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The cached translation of `iova` for `pasid` if it allows `access` (a write needs the
    /// write right, which the IOMMU grants only with the dirty bits set; execute needs
    /// execute; an unprivileged request needs the user right). `None`: ask the IOMMU.
    pub fn lookup(&mut self, pasid: Option<u32>, iova: u64, access: Access) -> Option<Translation> {
        let found = self.peek(pasid, iova, access);
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    /// [`Atc::lookup`] without counting.
    pub fn peek(&self, pasid: Option<u32>, iova: u64, access: Access) -> Option<Translation> {
        for size in PAGE_SIZES {
            let Some(e) = self.entries.get(&(pasid, iova & !(size - 1))) else {
                continue;
            };
            if e.size != size {
                continue;
            }
            let p = e.perms;
            let allowed = (if access.write { p.write } else { p.read })
                && (!access.execute || p.execute)
                && (access.privileged || p.user);
            return allowed.then_some(Translation {
                host_addr: e.host_page | (iova & (size - 1)),
                page_size: size,
                perms: p,
            });
        }
        None
    }

    /// Caches the answer `t` to a translation request for `iova` sent when the cache's
    /// generation was `generation`. Returns false, caching nothing, when an invalidation came
    /// in since (the answer may be stale) or `t`'s page size is not 4 KiB, 2 MiB or 1 GiB.
    /// A full cache evicts its oldest fill.
    pub fn insert(
        &mut self,
        generation: u64,
        pasid: Option<u32>,
        iova: u64,
        t: &Translation,
    ) -> bool {
        if generation != self.generation || !PAGE_SIZES.contains(&t.page_size) {
            return false;
        }
        let size = t.page_size;
        // A page of another size over the same address would answer first: drop it.
        for other in PAGE_SIZES {
            let k = (pasid, iova & !(other - 1));
            if other != size && self.entries.get(&k).is_some_and(|e| e.size == other) {
                self.entries.remove(&k);
            }
        }
        let key = (pasid, iova & !(size - 1));
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                self.evict_oldest();
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.entries.insert(
            key,
            Entry {
                host_page: t.host_addr & !(size - 1),
                size,
                perms: t.perms,
                stamp,
            },
        );
        self.order.push_back((key, stamp));
        if self.order.len() > 2 * self.capacity {
            self.compact_order();
        }
        true
    }

    fn evict_oldest(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.entries.remove(&key);
                return;
            }
        }
        // The queue lists every live entry, so it is never empty while entries remain.
        debug_assert!(self.entries.is_empty(), "eviction queue lost an entry");
    }

    /// Drops the queue's records of removed or replaced entries.
    fn compact_order(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(key, stamp)| entries.get(key).is_some_and(|e| e.stamp == *stamp));
    }

    /// Drops every translation `scope` covers (a page that overlaps a range is dropped
    /// whole) and counts an invalidation, so a fill whose request was sent before it is
    /// refused. Returns how many translations were dropped.
    pub fn invalidate(&mut self, scope: &DevTlbScope) -> usize {
        self.generation += 1;
        let before = self.entries.len();
        match scope {
            DevTlbScope::All => self.entries.clear(),
            _ => self
                .entries
                .retain(|&(pasid, page), e| !scope.covers(pasid, page, e.size)),
        }
        if self.entries.is_empty() {
            self.order.clear();
        }
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: u64, size: u64, write: bool) -> Translation {
        Translation {
            host_addr: host,
            page_size: size,
            perms: Perms {
                read: true,
                write,
                execute: false,
                user: true,
            },
        }
    }

    #[test]
    fn lookup_checks_the_access() {
        let mut atc = Atc::new(8);
        let g = atc.generation();
        assert!(atc.insert(g, Some(1), 0x5123, &t(0x9000, 1 << 12, false)));
        let hit = atc.lookup(Some(1), 0x5456, Access::READ).unwrap();
        assert_eq!(hit.host_addr, 0x9456);
        assert_eq!(
            atc.lookup(Some(1), 0x5456, Access::WRITE),
            None,
            "read-only"
        );
        assert_eq!(atc.lookup(Some(1), 0x5000, Access::EXEC), None);
        assert_eq!(
            atc.lookup(Some(2), 0x5000, Access::READ),
            None,
            "other PASID"
        );
        assert_eq!(atc.lookup(None, 0x5000, Access::READ), None, "no PASID");
        assert_eq!(atc.hits_and_misses(), (1, 4));
        // A 2 MiB page answers for any address in it.
        assert!(atc.insert(g, None, 0x40_1000, &t(0x80_0000, 1 << 21, true)));
        let hit = atc.lookup(None, 0x5f_f008, Access::WRITE).unwrap();
        assert_eq!((hit.host_addr, hit.page_size), (0x9f_f008, 1 << 21));
    }

    #[test]
    fn a_fill_overtaken_by_an_invalidation_is_dropped() {
        let mut atc = Atc::new(8);
        let g = atc.generation();
        atc.invalidate(&DevTlbScope::Pasid(Some(7)));
        assert!(!atc.insert(g, Some(1), 0x1000, &t(0x2000, 1 << 12, true)));
        assert!(atc.is_empty());
        assert!(atc.insert(atc.generation(), Some(1), 0x1000, &t(0x2000, 1 << 12, true)));
        assert!(!atc.insert(atc.generation(), Some(1), 0x1000, &t(0x2000, 0x3000, true)));
    }

    #[test]
    fn invalidation_scopes() {
        let fill = |atc: &mut Atc| {
            let g = atc.generation();
            for (pasid, page) in [(Some(1), 0x1000), (Some(1), 0x3000), (Some(2), 0x1000)] {
                assert!(atc.insert(g, pasid, page, &t(0x10_0000 + page, 1 << 12, true)));
            }
            assert!(atc.insert(g, Some(1), 0x20_0000, &t(0x40_0000, 1 << 21, true)));
        };
        let range = |addr, len| DevTlbScope::Range {
            pasid: Some(1),
            addr,
            len,
        };
        let cases = [
            (DevTlbScope::All, 4),
            (DevTlbScope::Pasid(Some(1)), 3),
            (DevTlbScope::Pasid(Some(3)), 0),
            (range(0x1000, 0x1000), 1),
            (range(0x0, 0x4000), 2),
            // One 4 KiB page inside the 2 MiB page drops the whole large page.
            (range(0x30_0000, 0x1000), 1),
        ];
        for (scope, dropped) in cases {
            let mut atc = Atc::new(16);
            fill(&mut atc);
            assert_eq!(atc.invalidate(&scope), dropped, "{scope:?}");
            assert_eq!(atc.len(), 4 - dropped, "{scope:?}");
        }
    }

    #[test]
    fn the_oldest_fill_is_evicted_first() {
        let mut atc = Atc::new(3);
        let g = atc.generation();
        for i in 0..5u64 {
            assert!(atc.insert(
                g,
                Some(1),
                i << 12,
                &t(0x10_0000 + (i << 12), 1 << 12, true)
            ));
            assert!(atc.len() <= 3);
        }
        assert_eq!(atc.peek(Some(1), 0x0, Access::READ), None);
        assert_eq!(atc.peek(Some(1), 0x1000, Access::READ), None);
        assert!(atc.peek(Some(1), 0x2000, Access::READ).is_some());
        assert!(atc.peek(Some(1), 0x4000, Access::READ).is_some());
        // Refilling a cached page does not evict another one.
        assert!(atc.insert(g, Some(1), 0x4000, &t(0x20_0000, 1 << 12, true)));
        assert_eq!(atc.len(), 3);
        // Many fills and removals keep the bookkeeping bounded.
        for i in 0..100u64 {
            let g = atc.generation();
            assert!(atc.insert(g, Some(2), i << 12, &t(0x10_0000, 1 << 12, true)));
            atc.invalidate(&DevTlbScope::Range {
                pasid: Some(2),
                addr: i << 12,
                len: 0x1000,
            });
        }
        assert!(atc.order.len() <= 2 * atc.capacity());
    }
}
