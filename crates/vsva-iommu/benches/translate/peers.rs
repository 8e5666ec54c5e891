//! The peers of the translate benchmark: an IOTLB-first map (plain, in a `Mutex`, in an
//! `RwLock`) with the context chain and an uncached walk behind it, a bare 4-level walk, and the
//! crate's walkers uncached, all over the tables of one [`Instance`].

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use rustc_hash::FxBuildHasher;
use vm_memory::GuestMemoryMmap;
use vsva_iommu::context::resolve;
use vsva_iommu::memory::EntryMemory;
use vsva_iommu::paging::{
    level_index, level_size, walk_first_level, walk_second_level, Identity, TableTranslator,
    WalkFault, ADDR_MASK, P, PS,
};
use vsva_iommu::Pgtt;

use crate::{Instance, FL, SID, SL};

/// Key of the IOTLB-first peer: source id, PASID, page number.
pub(crate) type Key = (u16, u32, u64);
pub(crate) type FxMap = HashMap<Key, u64, FxBuildHasher>;

/// The map behind an IOTLB-first peer: plain (one thread, no lock), `Mutex` or `RwLock`.
pub(crate) trait PeerMap {
    fn get(&mut self, k: &Key) -> Option<u64>;
    fn put(&mut self, k: Key, v: u64);
}

impl PeerMap for FxMap {
    #[inline]
    fn get(&mut self, k: &Key) -> Option<u64> {
        HashMap::get(self, k).copied()
    }
    fn put(&mut self, k: Key, v: u64) {
        self.insert(k, v);
    }
}

impl PeerMap for &Mutex<FxMap> {
    #[inline]
    fn get(&mut self, k: &Key) -> Option<u64> {
        self.lock().unwrap().get(k).copied()
    }
    fn put(&mut self, k: Key, v: u64) {
        self.lock().unwrap().insert(k, v);
    }
}

impl PeerMap for &RwLock<FxMap> {
    #[inline]
    fn get(&mut self, k: &Key) -> Option<u64> {
        self.read().unwrap().get(k).copied()
    }
    fn put(&mut self, k: Key, v: u64) {
        self.write().unwrap().insert(k, v);
    }
}

/// The uncached walks of the peers over an instance's tables.
pub(crate) struct Walker<'a> {
    pub(crate) inst: &'a Instance,
    pub(crate) mem: &'a GuestMemoryMmap,
}

/// Nested first-level table access with a full second-level walk for every table.
struct UncachedNested<'a> {
    mem: &'a GuestMemoryMmap,
    root: u64,
}

impl TableTranslator for UncachedNested<'_> {
    #[inline]
    fn table(&mut self, gpa: u64, _level: u8, _is_root: bool) -> Result<(u64, bool), WalkFault> {
        let w = walk_second_level(self.mem, &SL, self.root, gpa, None)?;
        Ok((w.translate(gpa), w.rights.write))
    }
}

/// The bare 4-level walk: per level one entry load and its present (first level: P; second
/// level: R or W) and page-size bits. `present` tells the two formats apart.
#[inline]
pub(crate) fn bare_walk4(
    mem: &GuestMemoryMmap,
    present: u64,
    table: impl Fn(u64) -> Option<u64>,
    root: u64,
    va: u64,
) -> Option<u64> {
    let mut t = table(root)?;
    for level in (1..=4u8).rev() {
        let e = mem.load_entry(t + level_index(va, level) * 8)?;
        if e & present == 0 {
            return None;
        }
        if level == 1 || (level <= 3 && e & PS != 0) {
            let size = level_size(level);
            return Some(e & ADDR_MASK & !(size - 1) | va & (size - 1));
        }
        t = table(e & ADDR_MASK)?;
    }
    None
}

impl Walker<'_> {
    /// The bare 4-level first-level walk of PASID 1's tables: no chain, no cache.
    #[inline]
    pub(crate) fn bare_fl(&self, iova: u64) -> Option<u64> {
        bare_walk4(self.mem, P, Some, self.inst.fl_root, iova)
    }

    /// The bare nested 4-over-4 walk of PASID 2's tables: every guest table address and the
    /// output through a bare second-level walk.
    #[inline]
    pub(crate) fn bare_nested(&self, iova: u64) -> Option<u64> {
        let (gpgd, sroot) = self.inst.nested_roots;
        // Second-level entries are present when R or W (bits 0 and 1) is set.
        let sl = |gpa| bare_walk4(self.mem, 3, Some, sroot, gpa);
        sl(bare_walk4(self.mem, P, sl, gpgd, iova)?)
    }

    /// The crate's first-level walker over PASID 1's tables, uncached.
    #[inline]
    pub(crate) fn walker_fl(&self, iova: u64) -> Option<u64> {
        let w = walk_first_level(self.mem, &mut Identity, &FL, self.inst.fl_root, iova, None);
        Some(w.ok()?.translate(iova))
    }

    /// The crate's walkers over PASID 2's nested tables, uncached.
    #[inline]
    pub(crate) fn walker_nested(&self, iova: u64) -> Option<u64> {
        let (gpgd, sroot) = self.inst.nested_roots;
        self.nested_from(gpgd, sroot, iova)
    }

    fn nested_from(&self, gpgd: u64, sroot: u64, iova: u64) -> Option<u64> {
        let mut t = UncachedNested {
            mem: self.mem,
            root: sroot,
        };
        let w = walk_first_level(self.mem, &mut t, &FL, gpgd, iova, None).ok()?;
        let gpa = w.translate(iova);
        let s = walk_second_level(self.mem, &SL, sroot, gpa, None).ok()?;
        Some(s.translate(gpa))
    }

    /// What an IOTLB-first peer does on a miss: the context chain, then an uncached walk.
    fn chain_and_walk(&self, pasid: u32, iova: u64) -> Option<u64> {
        let io = &self.inst.io;
        let rt = io.root_table_address();
        let r = resolve(self.mem, io.config(), rt, SID, Some(pasid)).ok()?;
        if r.entry.pgtt == Pgtt::Nested {
            self.nested_from(r.entry.flptr, r.entry.ssptptr, iova)
        } else {
            let w = walk_first_level(self.mem, &mut Identity, &FL, r.entry.flptr, iova, None);
            Some(w.ok()?.translate(iova))
        }
    }

    /// The IOTLB-first peer: the map first, the chain and the walk only on a miss.
    #[inline]
    pub(crate) fn peer(&self, map: &mut impl PeerMap, pasid: u32, iova: u64) -> Option<u64> {
        let key = (SID.0, pasid, iova >> 12);
        if let Some(out) = map.get(&key) {
            return Some(out | (iova & 0xfff));
        }
        let out = self.chain_and_walk(pasid, iova)?;
        map.put(key, out & !0xfff);
        Some(out)
    }
}
