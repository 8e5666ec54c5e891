//! The host-physical address space the IOMMU sees, and a page allocator for IOMMU-owned tables.
//!
//! Memory is a [`GuestMemoryMmap`] (anonymous or file-backed regions, e.g. a memfd shared by a
//! client process) that is replaced as a whole when a region is added or removed, so regions
//! can change at run time while translations go on: a translation works on one consistent
//! snapshot of the region list.
//!
//! # Two ways to hold a snapshot
//!
//! * [`HostMemory::snapshot`] and [`HostMemory::snapshot_arc`] (an [`ArcSwap`] load): for DMA,
//!   the control path and the users of this crate. The snapshot lives as long as its guard or
//!   `Arc`.
//! * `HostMemory::pinned`: for the table walks of translation, which already run under an
//!   epoch pin (`crossbeam-epoch`) so that table pages freed meanwhile are not reused (see
//!   [`crate::pool`]). The same pin keeps the memory snapshot alive: a walk reads the current
//!   snapshot's address with one load and borrows it for as long as its pin is held, with no
//!   reference count to raise and drop again (the `ArcSwap` load takes and releases one with
//!   two locked instructions).
//!
//! # Why a replaced snapshot outlives the walks that read it
//!
//! A change publishes the new snapshot to both places (one change at a time, under a mutex),
//! and hands the old epoch-side reference to `crossbeam-epoch` to drop once every thread pinned
//! at that moment has unpinned (`defer_destroy`). A walk loads the snapshot's address only
//! while pinned, and uses it only while still pinned (the borrow cannot outlive the pin). So
//! either the walk pinned after the swap, and loaded the new snapshot, or it was pinned when
//! the old one was retired, and the old one is dropped only after that walk has ended. The old
//! snapshot's regions (and a removed region's mapping and file) therefore stay open until the
//! last walk that may read them has finished and the collector has run, and not longer: the
//! retiring thread flushes its deferred work to the global queue at once, so the next pins of
//! any thread can free it. The `walk_guard` integration test pauses a walk in the middle of a
//! region that is removed under it and checks both halves: the snapshot stays while the walk
//! runs, and is dropped after it ended.
//!
//! Every table the IOMMU reads (root, context, PASID directory and tables, first- and
//! second-level page tables) lives in this memory at a 4 KiB-aligned address. Entries are read
//! and updated as naturally aligned 64-bit atomics, so accessed/dirty updates are
//! compare-and-swap operations on the memory itself, as the hardware's locked updates are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use crossbeam_epoch as epoch;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, VolatileMemory,
};
use vsva_uapi::Errno;

/// Size of a table page (and of the smallest translation page).
pub const PAGE_SIZE: u64 = 4096;

/// Errors of the memory layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// No region is exactly the range asked to be removed.
    #[error("cannot remove memory region [{base:#x}, +{size:#x}): {reason}")]
    RemoveRegion {
        /// Base of the range asked for.
        base: u64,
        /// Size of the range asked for.
        size: u64,
        /// What vm-memory reported.
        reason: String,
    },
    /// A region could not be added (overlap or invalid placement).
    #[error("cannot add memory region at {base:#x} (size {size:#x}): {reason}")]
    AddRegion {
        /// Guest-physical base of the rejected region.
        base: u64,
        /// Size of the rejected region.
        size: u64,
        /// What vm-memory reported.
        reason: String,
    },
    /// The table-page pool has no free page left.
    #[error("table page pool at {base:#x} (size {size:#x}) is exhausted")]
    PoolExhausted {
        /// Base of the pool.
        base: u64,
        /// Size of the pool in bytes.
        size: u64,
    },
    /// The pool range is not page aligned, empty, or not backed by memory.
    #[error("invalid table page pool: base {base:#x} size {size:#x}: {reason}")]
    InvalidPool {
        /// Requested base.
        base: u64,
        /// Requested size.
        size: u64,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A page handed back to the pool does not belong to it or is not allocated.
    #[error("page {addr:#x} does not belong to the table page pool or is not allocated")]
    BadFree {
        /// Address of the page.
        addr: u64,
    },
    /// An access to an address with no memory behind it.
    #[error("no memory at address {addr:#x} (length {len:#x})")]
    Unbacked {
        /// First address of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
    },
}

impl MemoryError {
    /// The errno a uAPI caller sees: `ENOMEM` for an exhausted table pool, `EFAULT` for
    /// everything else (memory that is missing or misplaced).
    pub fn errno(&self) -> Errno {
        match self {
            MemoryError::PoolExhausted { .. } => Errno::ENOMEM,
            MemoryError::AddRegion { .. }
            | MemoryError::RemoveRegion { .. }
            | MemoryError::InvalidPool { .. }
            | MemoryError::BadFree { .. }
            | MemoryError::Unbacked { .. } => Errno::EFAULT,
        }
    }
}

/// Reads and compare-and-swaps of 64-bit table entries by host-physical address.
///
/// This is how every walker reaches memory. `None` means "no memory there" (an access error
/// fault for the walker, never a panic).
pub trait EntryMemory {
    /// Loads the naturally aligned 64-bit entry at `addr` (acquire ordering).
    fn load_entry(&self, addr: u64) -> Option<u64>;
    /// Atomically replaces `current` by `new` at `addr`. `Some(Ok(current))` on success,
    /// `Some(Err(actual))` when the entry no longer holds `current`, `None` when unbacked.
    fn cas_entry(&self, addr: u64, current: u64, new: u64) -> Option<Result<u64, u64>>;

    /// Loads the consecutive entries from `addr` into `out` (a multi-qword entry, such as a
    /// 64-byte PASID entry); `None` when any of them is unbacked. By default one
    /// [`EntryMemory::load_entry`] per qword; a memory that can copy a run in one access
    /// (guest memory read through a VMM) overrides it.
    fn load_entries(&self, addr: u64, out: &mut [u64]) -> Option<()> {
        for (i, w) in out.iter_mut().enumerate() {
            *w = self.load_entry(addr + 8 * i as u64)?;
        }
        Some(())
    }
}

fn atomic_at(mem: &GuestMemoryMmap, addr: u64) -> Option<&AtomicU64> {
    if addr & 7 != 0 {
        return None;
    }
    let region = mem.find_region(GuestAddress(addr))?;
    let offset = addr - region.start_addr().0;
    // The region is a `GuestRegionMmap`, which dereferences to an `MmapRegion` implementing
    // `VolatileMemory`; the atomic reference is checked for bounds and alignment there.
    region.get_atomic_ref::<AtomicU64>(offset as usize).ok()
}

impl EntryMemory for GuestMemoryMmap {
    #[inline]
    fn load_entry(&self, addr: u64) -> Option<u64> {
        atomic_at(self, addr).map(|a| a.load(Ordering::Acquire))
    }

    #[inline]
    fn cas_entry(&self, addr: u64, current: u64, new: u64) -> Option<Result<u64, u64>> {
        atomic_at(self, addr)
            .map(|a| a.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire))
    }
}

/// Stores a 64-bit entry (release ordering). Returns `false` when `addr` is unbacked or
/// misaligned.
pub fn store_entry(mem: &GuestMemoryMmap, addr: u64, value: u64) -> bool {
    match atomic_at(mem, addr) {
        Some(a) => {
            a.store(value, Ordering::Release);
            true
        }
        None => false,
    }
}

/// The IOMMU's view of host-physical memory: a swappable [`GuestMemoryMmap`].
#[derive(Debug)]
pub struct HostMemory {
    current: ArcSwap<GuestMemoryMmap>,
    /// The same snapshot as `current`, for readers under an epoch pin; never null. Replaced
    /// only under `grow`, the old one dropped after a grace period (module documentation).
    pinned: epoch::Atomic<Arc<GuestMemoryMmap>>,
    grow: Mutex<()>,
    /// Bumped by every change of the region list, after the new snapshot is published (so
    /// that whoever reads the new value then loads the new snapshot); starts at 1. A
    /// [`BackedSpan`] recorded at one value is good while the value stays.
    generation: AtomicU64,
}

/// A span of host memory that [`HostMemory::is_backed_cached`] found backed, and the memory's
/// generation then: a later check inside the span, with no region added or removed since,
/// is answered from it, with one load and no snapshot (a snapshot is an `ArcSwap` load, with
/// two locked instructions). It holds no reference to the memory, so a removed region's
/// mapping is not kept open by it. The default span answers nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackedSpan {
    generation: u64,
    start: u64,
    end: u64,
}

impl HostMemory {
    /// Wraps an existing memory map.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        let mem = Arc::new(mem);
        Self {
            current: ArcSwap::new(mem.clone()),
            pinned: epoch::Atomic::new(mem),
            grow: Mutex::new(()),
            generation: AtomicU64::new(1),
        }
    }

    /// The current snapshot, borrowed for as long as `pin` is held: a replaced snapshot is
    /// dropped only after every pin held when it was replaced has ended (module
    /// documentation). One load; no reference count is touched.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn pinned<'a>(&'a self, pin: &'a epoch::Guard) -> &'a GuestMemoryMmap {
        let snap = self.pinned.load(Ordering::Acquire, pin);
        // SAFETY: `pinned` is never null (set in `new`, replaced by a non-null value in
        // `publish`, nulled only in `drop`, which has `&mut self` and so runs after every
        // borrow of `self` has ended). The value loaded is dropped only through
        // `defer_destroy` in `publish`, after every thread pinned when it was unlinked has
        // unpinned; `pin` is held for the whole returned borrow, so it cannot be dropped
        // before that borrow ends.
        unsafe { snap.deref() }
    }

    /// Creates anonymous memory for the given `(base, size)` ranges (sorted, non-overlapping).
    pub fn anonymous(ranges: &[(u64, usize)]) -> Result<Self, MemoryError> {
        let ranges: Vec<_> = ranges.iter().map(|&(b, s)| (GuestAddress(b), s)).collect();
        GuestMemoryMmap::from_ranges(&ranges)
            .map(Self::new)
            .map_err(|e| MemoryError::AddRegion {
                base: ranges.first().map_or(0, |r| r.0 .0),
                size: ranges.first().map_or(0, |r| r.1 as u64),
                reason: e.to_string(),
            })
    }

    /// A consistent snapshot of the region list, cheap to take (no lock).
    #[inline]
    pub fn snapshot(&self) -> Guard<Arc<GuestMemoryMmap>> {
        self.current.load()
    }

    /// A snapshot as an owned `Arc` (for longer-lived users).
    pub fn snapshot_arc(&self) -> Arc<GuestMemoryMmap> {
        self.current.load_full()
    }

    /// Adds a region (anonymous or file-backed). Translations running concurrently keep using
    /// the snapshot they started with.
    pub fn add_region(&self, region: GuestRegionMmap) -> Result<(), MemoryError> {
        let base = region.start_addr().0;
        let size = region.len();
        self.publish(|now| {
            now.insert_region(Arc::new(region))
                .map_err(|e| MemoryError::AddRegion {
                    base,
                    size,
                    reason: e.to_string(),
                })
        })
    }

    /// Publishes the snapshot `next` builds from the current one (one change at a time).
    #[allow(unsafe_code)]
    fn publish(
        &self,
        next: impl FnOnce(&GuestMemoryMmap) -> Result<GuestMemoryMmap, MemoryError>,
    ) -> Result<(), MemoryError> {
        let _serialize = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let next = Arc::new(next(&self.current.load())?);
        self.current.store(next.clone());
        let pin = epoch::pin();
        let old = self
            .pinned
            .swap(epoch::Owned::new(next), Ordering::AcqRel, &pin);
        // After both places hold the new snapshot: a reader of the new generation then
        // loads it (`is_backed_cached`).
        self.generation.fetch_add(1, Ordering::Release);
        // SAFETY: `old` is no longer reachable from `pinned`: only readers pinned now can
        // hold it, and the destruction waits until each of them has unpinned.
        unsafe { pin.defer_destroy(old) };
        // Hand the deferred drop to the global queue now, so that other threads' pins can run
        // it (a removed region is unmapped soon after the last walk that may read it).
        pin.flush();
        Ok(())
    }

    /// Removes the region that starts at `base` and is `size` bytes long. Translations and
    /// accesses already running finish on the snapshot they started with (which keeps the
    /// region mapped until the last of them ends); every later one sees no memory there, so a
    /// DMA to it faults. The region's mapping (and its file, e.g. a client's memfd) is closed
    /// when the last snapshot holding it goes.
    ///
    /// # Errors
    ///
    /// [`MemoryError::RemoveRegion`] when no region is exactly `[base, base + size)`; nothing
    /// changes then.
    pub fn remove_region(&self, base: u64, size: u64) -> Result<(), MemoryError> {
        self.publish(|now| {
            now.remove_region(GuestAddress(base), size)
                .map(|(next, _region)| next)
                .map_err(|e| MemoryError::RemoveRegion {
                    base,
                    size,
                    reason: e.to_string(),
                })
        })
    }

    /// Reads bytes at host-physical `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.snapshot()
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| MemoryError::Unbacked {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Writes bytes at host-physical `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), MemoryError> {
        self.snapshot()
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| MemoryError::Unbacked {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Loads a 64-bit entry at an 8-byte aligned `addr`.
    pub fn load_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        self.snapshot()
            .load_entry(addr)
            .ok_or(MemoryError::Unbacked { addr, len: 8 })
    }

    /// Stores a 64-bit entry at an 8-byte aligned `addr`.
    pub fn store_u64(&self, addr: u64, value: u64) -> Result<(), MemoryError> {
        if store_entry(&self.snapshot(), addr, value) {
            Ok(())
        } else {
            Err(MemoryError::Unbacked { addr, len: 8 })
        }
    }

    /// Fills `len` bytes at `addr` with zeroes.
    pub fn zero(&self, addr: u64, len: u64) -> Result<(), MemoryError> {
        let zeroes = [0u8; PAGE_SIZE as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(PAGE_SIZE);
            self.write(addr + done, &zeroes[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// [`Self::is_backed`], answered from `span` when `[addr, addr + len)` lies inside it and
    /// no region was added or removed since `span` was recorded: one atomic load (no locked
    /// instruction) and two compares. Otherwise the range is checked on a snapshot, as
    /// `is_backed` does, and when one region holds all of it, `span` records that region.
    /// The answer is the same as `is_backed`'s at a moment during the call.
    #[inline]
    pub fn is_backed_cached(&self, addr: u64, len: u64, span: &mut BackedSpan) -> bool {
        // Acquire: a span recorded from a snapshot loaded after this generation was read
        // (below) is at least as new as the change that set it.
        let generation = self.generation.load(Ordering::Acquire);
        if generation == span.generation
            && addr >= span.start
            && addr.checked_add(len).is_some_and(|end| end <= span.end)
        {
            return true;
        }
        self.is_backed_recording(addr, len, generation, span)
    }

    /// [`Self::is_backed_cached`] past its span: the check on a snapshot loaded after
    /// `generation` was read, and the region that holds the whole range, if one does,
    /// recorded in `span` with that generation (a change since then has bumped it, so the
    /// span cannot answer for a newer region list than the one it was read from).
    #[inline(never)]
    fn is_backed_recording(
        &self,
        addr: u64,
        len: u64,
        generation: u64,
        span: &mut BackedSpan,
    ) -> bool {
        let mem = self.snapshot();
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        if let Some(r) = mem.find_region(GuestAddress(addr)) {
            let (start, region_end) = (r.start_addr().0, r.start_addr().0 + r.len());
            if end <= region_end {
                *span = BackedSpan {
                    generation,
                    start,
                    end: region_end,
                };
                return true;
            }
        }
        backed_in(&mem, addr, end)
    }

    /// True when `[addr, addr + len)` is entirely backed by memory.
    pub fn is_backed(&self, addr: u64, len: u64) -> bool {
        let mem = self.snapshot();
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        backed_in(&mem, addr, end)
    }
}

/// True when `[addr, end)` is entirely backed by regions of `mem` (adjacent regions count).
fn backed_in(mem: &GuestMemoryMmap, addr: u64, end: u64) -> bool {
    let mut a = addr;
    while a < end {
        match mem.find_region(GuestAddress(a)) {
            Some(r) => a = r.start_addr().0 + r.len(),
            None => return false,
        }
    }
    true
}

impl Drop for HostMemory {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let last = std::mem::replace(&mut self.pinned, epoch::Atomic::null());
        // SAFETY: `&mut self`: every borrow returned by `pinned` has ended, and the value is
        // not shared with anything else (older values were handed to `defer_destroy`).
        drop(unsafe { last.into_owned() });
    }
}

/// Reads the 64-bit word at `offset` words into the region at `MemoryRegionAddress` (helper for
/// tests and tools that want to inspect a single region).
pub fn region_load(region: &GuestRegionMmap, offset: u64) -> Option<u64> {
    region
        .load(MemoryRegionAddress(offset), Ordering::Acquire)
        .ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A read-write temporary file of `len` zero bytes, already unlinked (unique per process
    /// and thread), to back a file-backed region.
    pub(crate) fn unlinked_temp_file(len: u64) -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "vsva-iommu-mem-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file.set_len(len).unwrap();
        file
    }
    use vm_memory::FileOffset;

    #[test]
    fn a_removed_region_is_gone_for_later_accesses_only() {
        let mem = HostMemory::anonymous(&[(0, 0x10000)]).unwrap();
        mem.add_region(GuestRegionMmap::from_range(GuestAddress(0x10_0000), 0x4000, None).unwrap())
            .unwrap();
        mem.store_u64(0x10_0008, 7).unwrap();
        let before = mem.snapshot_arc();
        assert!(matches!(
            mem.remove_region(0x10_0000, 0x1000),
            Err(MemoryError::RemoveRegion { .. })
        ));
        mem.remove_region(0x10_0000, 0x4000).unwrap();
        assert!(!mem.is_backed(0x10_0000, 0x1000));
        assert!(matches!(
            mem.load_u64(0x10_0008),
            Err(MemoryError::Unbacked { .. })
        ));
        assert!(mem.is_backed(0, 0x10000), "the other region stays");
        // A snapshot taken before still reads it.
        assert_eq!(before.load_entry(0x10_0008), Some(7));
        // The range can be backed again.
        mem.add_region(GuestRegionMmap::from_range(GuestAddress(0x10_0000), 0x4000, None).unwrap())
            .unwrap();
        assert_eq!(mem.load_u64(0x10_0008), Ok(0));
    }

    /// The span answers what `is_backed` answers, across a removal and a re-add of the
    /// region it recorded, and for ranges that reach past it, span two regions or overflow.
    #[test]
    fn a_backed_span_answers_as_is_backed_does() {
        let mem = HostMemory::anonymous(&[(0, 0x10000), (0x10000, 0x4000)]).unwrap();
        let region = || GuestRegionMmap::from_range(GuestAddress(0x10_0000), 0x4000, None);
        mem.add_region(region().unwrap()).unwrap();
        let mut span = BackedSpan::default();
        let agree = |span: &mut BackedSpan, addr: u64, len: u64| {
            let direct = mem.is_backed(addr, len);
            assert_eq!(
                mem.is_backed_cached(addr, len, span),
                direct,
                "[{addr:#x}, +{len:#x}) with {span:?}"
            );
            direct
        };
        assert!(agree(&mut span, 0x10_1000, 0x1000));
        let recorded = span;
        assert_ne!(
            recorded,
            BackedSpan::default(),
            "one region holds it: recorded"
        );
        assert!(agree(&mut span, 0x10_2000, 0x2000), "inside the span");
        assert_eq!(span, recorded, "answered from the span");
        assert!(!agree(&mut span, 0x10_2000, 0x3000), "past the region");
        assert!(!agree(&mut span, u64::MAX - 0xfff, 0x1000), "overflow");
        assert!(
            !agree(&mut span, 0x10_2000, u64::MAX),
            "overflow inside the span"
        );
        assert!(agree(&mut span, 0xf000, 0x2000), "two adjacent regions");
        assert!(agree(&mut span, 0x10_1000, 0x1000));
        mem.remove_region(0x10_0000, 0x4000).unwrap();
        assert!(
            !agree(&mut span, 0x10_1000, 0x1000),
            "removed: the span is stale"
        );
        mem.add_region(region().unwrap()).unwrap();
        assert!(agree(&mut span, 0x10_1000, 0x1000), "added again");
    }

    #[test]
    fn entries_load_store_cas() {
        let mem = HostMemory::anonymous(&[(0, 0x10000)]).unwrap();
        mem.store_u64(0x1008, 0xdead_beef).unwrap();
        let snap = mem.snapshot();
        assert_eq!(snap.load_entry(0x1008), Some(0xdead_beef));
        assert_eq!(snap.cas_entry(0x1008, 1, 2), Some(Err(0xdead_beef)));
        assert_eq!(
            snap.cas_entry(0x1008, 0xdead_beef, 2),
            Some(Ok(0xdead_beef))
        );
        assert_eq!(snap.load_entry(0x1008), Some(2));
        assert_eq!(snap.load_entry(0x10000), None, "past the end is unbacked");
        assert_eq!(snap.load_entry(0x1004), None, "misaligned is refused");
        assert_eq!(
            mem.load_u64(0x20000),
            Err(MemoryError::Unbacked {
                addr: 0x20000,
                len: 8
            })
        );
    }

    #[test]
    fn regions_can_be_added_while_snapshots_live() {
        let mem = HostMemory::anonymous(&[(0, 0x1000)]).unwrap();
        let old = mem.snapshot_arc();
        let r = GuestRegionMmap::from_range(GuestAddress(0x10_0000), 0x2000, None).unwrap();
        mem.add_region(r).unwrap();
        mem.store_u64(0x10_1000, 7).unwrap();
        assert_eq!(old.load_entry(0x10_1000), None, "old snapshot unchanged");
        assert_eq!(mem.load_u64(0x10_1000), Ok(7));
        let overlap = GuestRegionMmap::from_range(GuestAddress(0x10_1000), 0x1000, None).unwrap();
        assert!(matches!(
            mem.add_region(overlap),
            Err(MemoryError::AddRegion {
                base: 0x10_1000,
                ..
            })
        ));
    }

    #[test]
    fn file_backed_region_is_shared_with_the_file() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut file = unlinked_temp_file(0x4000);
        file.seek(SeekFrom::Start(0x2000)).unwrap();
        file.write_all(&0x1122_3344_5566_7788u64.to_le_bytes())
            .unwrap();
        let clone = file.try_clone().unwrap();
        let region = GuestRegionMmap::from_range(
            GuestAddress(0x8000),
            0x4000,
            Some(FileOffset::new(clone, 0)),
        )
        .unwrap();
        let mem = HostMemory::anonymous(&[(0, 0x1000)]).unwrap();
        mem.add_region(region).unwrap();
        assert_eq!(mem.load_u64(0xa000), Ok(0x1122_3344_5566_7788));
        mem.store_u64(0xa008, 0xabcd).unwrap();
        let mut buf = [0u8; 8];
        file.seek(SeekFrom::Start(0x2008)).unwrap();
        file.read_exact(&mut buf).unwrap();
        assert_eq!(
            u64::from_le_bytes(buf),
            0xabcd,
            "write visible through the fd"
        );
    }
}
