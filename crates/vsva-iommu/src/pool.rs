//! The table-page pool: zeroed 4 KiB pages of an IOMMU-owned range of host memory for root,
//! context, PASID-directory, PASID and stage-2 tables, and the grace period a freed page waits
//! out before it is handed out again.
//!
//! # Why a freed page waits
//!
//! Translations walk the tables without the IOMMU's control lock. A walk that read a PASID
//! directory entry just before the table it names was cleared and freed may still read that
//! table page a moment later, and a walk of a stage-2 table may still follow (and set the
//! accessed/dirty bits of) its entries after the stage 2 was destroyed. Were the page handed to
//! another device's table at once, that walk would read, and could write, the other owner's
//! entries. Hardware has the same window, and drivers close it the same way: a page is reused
//! only after the invalidation that removed it has completed, which means after every walk that
//! began before it has finished.
//!
//! Here that wait is an epoch-based grace period from `crossbeam-epoch` (the well-kept
//! implementation of exactly this; nothing is hand-written): every walk runs inside a
//! `WalkGuard`, and [`TablePool::free`] defers the page's return until every guard that was
//! held when the page was unlinked has been dropped. The deferred step only pushes the page on
//! a lock-free queue, so a translating thread that happens to run it never takes the pool's
//! lock; the pool takes the queued pages back on its next allocation. An allocation that finds
//! no page while some are still waiting drives the grace period forward itself, for at most
//! `RECLAIM_WAIT` (one second), before it reports the pool exhausted.
//!
//! The same pin keeps the memory snapshot a walk reads alive (`HostMemory::pinned`, whose
//! replaced snapshots are retired through the same epochs), so a walk needs no second
//! protection for memory.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_epoch as epoch;
use crossbeam_queue::SegQueue;

use crate::memory::{HostMemory, MemoryError, PAGE_SIZE};

/// How long an allocation that found no page drives the grace period forward (yielding in
/// between) before it reports the pool exhausted. A walk is short and never blocks, so a few
/// rounds normally suffice; the bound keeps a stalled thread from hanging the control path.
const RECLAIM_WAIT: Duration = Duration::from_secs(1);

/// Held by every walk that reads table pages without the control lock: no page freed while
/// the guard is held is handed out again before it is dropped.
#[must_use = "a walk is protected only while its guard is held"]
pub(crate) struct WalkGuard {
    pinned: epoch::Guard,
}

impl WalkGuard {
    /// Marks the calling thread as walking tables until the guard is dropped.
    #[inline]
    pub(crate) fn enter() -> Self {
        WalkGuard {
            pinned: epoch::pin(),
        }
    }

    /// The epoch pin, which also keeps the memory snapshot the walk reads alive
    /// (`HostMemory::pinned`).
    #[inline]
    pub(crate) fn pin(&self) -> &epoch::Guard {
        &self.pinned
    }
}

/// A page allocator for an IOMMU-owned range of host memory, handing out zeroed 4 KiB pages
/// for tables. Allocation and free take a small mutex (control path only, never translate);
/// freed pages come back after a grace period (see the module documentation).
#[derive(Debug)]
pub struct TablePool {
    base: u64,
    size: u64,
    state: Mutex<PoolState>,
    /// Pages whose grace period has ended, pushed by the deferred step; taken back into
    /// `PoolState::free` under the lock.
    reclaimed: Arc<SegQueue<u64>>,
}

#[derive(Debug)]
struct PoolState {
    /// First page never handed out (or given back from the top).
    next: u64,
    /// Freed pages below `next` that may be handed out, ascending, so contiguous runs can be
    /// found again.
    free: BTreeSet<u64>,
    /// Pages held by tables.
    allocated: HashSet<u64>,
    /// Pages freed whose grace period has not been seen to end (queued or still deferred).
    waiting: usize,
}

impl PoolState {
    /// Takes the pages whose grace period has ended back into the free set, lowering `next`
    /// past free pages at the top so a large block can be carved there again.
    fn take_reclaimed(&mut self, queue: &SegQueue<u64>, base: u64) {
        while let Some(p) = queue.pop() {
            self.waiting -= 1;
            self.free.insert(p);
        }
        while self.next > base {
            let top = self.next - PAGE_SIZE;
            if !self.free.remove(&top) {
                break;
            }
            self.next = top;
        }
    }

    /// Takes `n` (at least 2) contiguous pages from the free set, lowest run first.
    fn take_free_run(&mut self, n: u64) -> Option<u64> {
        let mut run_start = 0;
        let mut run_len = 0;
        let mut found = None;
        for &p in &self.free {
            if run_len > 0 && p == run_start + run_len * PAGE_SIZE {
                run_len += 1;
            } else {
                run_start = p;
                run_len = 1;
            }
            if run_len == n {
                found = Some(run_start);
                break;
            }
        }
        let start = found?;
        for i in 0..n {
            self.free.remove(&(start + i * PAGE_SIZE));
        }
        Some(start)
    }

    /// `n` contiguous pages from the free set or the never-used part, marked allocated.
    fn take(&mut self, n: u64, end: u64) -> Option<u64> {
        let start = if n == 1 {
            self.free.pop_first()
        } else {
            self.take_free_run(n)
        };
        let start = match start {
            Some(s) => s,
            None if self.next + n * PAGE_SIZE <= end => {
                let s = self.next;
                self.next += n * PAGE_SIZE;
                s
            }
            None => return None,
        };
        for i in 0..n {
            self.allocated.insert(start + i * PAGE_SIZE);
        }
        Some(start)
    }
}

impl TablePool {
    /// A pool over `[base, base + size)`, which must be page aligned and backed by `mem`.
    pub fn new(mem: &HostMemory, base: u64, size: u64) -> Result<Self, MemoryError> {
        let bad = |reason| MemoryError::InvalidPool { base, size, reason };
        if !base.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(bad("base and size must be multiples of 4096"));
        }
        if size == 0 {
            return Err(bad("size must not be zero"));
        }
        if !mem.is_backed(base, size) {
            return Err(bad("range is not backed by memory"));
        }
        Ok(Self {
            base,
            size,
            state: Mutex::new(PoolState {
                next: base,
                free: BTreeSet::new(),
                allocated: HashSet::new(),
                waiting: 0,
            }),
            reclaimed: Arc::new(SegQueue::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates `n` physically contiguous zeroed pages (for a PASID directory larger than one
    /// page): the lowest run of `n` free pages, else the never-used part of the pool. Freeing
    /// returns the pages one by one; freed neighbours form a run again.
    ///
    /// # Errors
    ///
    /// [`MemoryError::PoolExhausted`] when no run is free even after waiting out the grace
    /// period of the pages freed before; nothing is allocated then.
    pub fn alloc_contiguous(&self, mem: &HostMemory, n: u64) -> Result<u64, MemoryError> {
        let n = n.max(1);
        let end = self.base + self.size;
        let mut wait = GraceWait::default();
        let start = loop {
            let mut st = self.lock();
            st.take_reclaimed(&self.reclaimed, self.base);
            if let Some(s) = st.take(n, end) {
                break s;
            }
            if st.waiting == 0 || !wait.advance() {
                return Err(MemoryError::PoolExhausted {
                    base: self.base,
                    size: self.size,
                });
            }
        };
        mem.zero(start, n * PAGE_SIZE)?;
        Ok(start)
    }

    /// Allocates one page and zeroes it in `mem`.
    ///
    /// # Errors
    ///
    /// As [`TablePool::alloc_contiguous`].
    pub fn alloc(&self, mem: &HostMemory) -> Result<u64, MemoryError> {
        self.alloc_contiguous(mem, 1)
    }

    /// Gives a page back. It is handed out again only once every `WalkGuard` held now has
    /// been dropped, so the caller must have unlinked the page (cleared every entry that
    /// names it) before freeing it.
    ///
    /// # Errors
    ///
    /// [`MemoryError::BadFree`] for a page the pool did not hand out (or already took back);
    /// nothing changes then.
    pub fn free(&self, addr: u64) -> Result<(), MemoryError> {
        {
            let mut st = self.lock();
            if !st.allocated.remove(&addr) {
                return Err(MemoryError::BadFree { addr });
            }
            st.waiting += 1;
        }
        let queue = Arc::clone(&self.reclaimed);
        let guard = epoch::pin();
        guard.defer(move || queue.push(addr));
        guard.flush();
        Ok(())
    }

    /// Waits out the grace period of every freed page (a bounded number of rounds) and takes
    /// them back. Returns how many are still waiting: non-zero only while some walk that began
    /// before their free is still running. Allocation does this by itself when it needs to;
    /// this is for accounting that wants every freed page back now.
    pub fn reclaim(&self) -> usize {
        let mut wait = GraceWait::default();
        loop {
            let mut st = self.lock();
            st.take_reclaimed(&self.reclaimed, self.base);
            if st.waiting == 0 {
                return 0;
            }
            let waiting = st.waiting;
            drop(st);
            if !wait.advance() {
                return waiting;
            }
        }
    }

    /// Number of pages held by tables.
    pub fn allocated(&self) -> usize {
        self.lock().allocated.len()
    }

    /// Number of freed pages still waiting out their grace period.
    pub fn waiting(&self) -> usize {
        let mut st = self.lock();
        st.take_reclaimed(&self.reclaimed, self.base);
        st.waiting
    }

    /// The pool's range `(base, size)`.
    pub fn range(&self) -> (u64, u64) {
        (self.base, self.size)
    }
}

/// Drives the epoch collector forward for at most [`RECLAIM_WAIT`].
#[derive(Default)]
struct GraceWait {
    started: Option<Instant>,
}

impl GraceWait {
    /// One round: pin and flush (which tries to advance the global epoch and runs deferred
    /// steps whose grace period has ended), and from the second round on yield so a walking
    /// thread can finish. `false`, doing nothing, once the wait has lasted [`RECLAIM_WAIT`].
    fn advance(&mut self) -> bool {
        match self.started {
            None => self.started = Some(Instant::now()),
            Some(t) if t.elapsed() >= RECLAIM_WAIT => return false,
            Some(_) => std::thread::yield_now(),
        }
        epoch::pin().flush();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_allocates_zeroed_pages_and_reuses_freed_ones() {
        let mem = HostMemory::anonymous(&[(0, 0x4000)]).unwrap();
        mem.write(0x1000, &[0xff; 4096]).unwrap();
        let pool = TablePool::new(&mem, 0x1000, 0x2000).unwrap();
        let a = pool.alloc(&mem).unwrap();
        let b = pool.alloc(&mem).unwrap();
        assert_eq!((a, b), (0x1000, 0x2000));
        assert_eq!(mem.load_u64(0x1ff8), Ok(0), "allocated page is zeroed");
        assert_eq!(
            pool.alloc(&mem),
            Err(MemoryError::PoolExhausted {
                base: 0x1000,
                size: 0x2000
            })
        );
        mem.store_u64(a, 7).unwrap();
        pool.free(a).unwrap();
        assert_eq!(pool.free(a), Err(MemoryError::BadFree { addr: a }));
        assert_eq!(pool.alloc(&mem), Ok(a));
        assert_eq!(mem.load_u64(a), Ok(0), "a reused page is zeroed again");
        assert_eq!(pool.allocated(), 2);
        assert!(matches!(
            TablePool::new(&mem, 0x3000, 0x2000),
            Err(MemoryError::InvalidPool { .. })
        ));
    }

    #[test]
    fn freed_pages_form_runs_again() {
        let mem = HostMemory::anonymous(&[(0, 0x10000)]).unwrap();
        let pool = TablePool::new(&mem, 0, 0x10000).unwrap();
        let pages: Vec<u64> = (0..16).map(|_| pool.alloc(&mem).unwrap()).collect();
        // Free the middle eight: a run of eight below pages still held.
        for &p in &pages[4..12] {
            pool.free(p).unwrap();
        }
        assert_eq!(pool.alloc_contiguous(&mem, 8), Ok(pages[4]));
        assert!(pool.alloc_contiguous(&mem, 2).is_err(), "the pool is full");
        for &p in &pages {
            pool.free(p).unwrap();
        }
        assert_eq!(pool.reclaim(), 0);
        assert_eq!(pool.allocated(), 0);
        assert_eq!(
            pool.alloc_contiguous(&mem, 16),
            Ok(0),
            "the whole range is one run"
        );
    }

    #[test]
    fn a_page_freed_during_a_walk_waits_for_it() {
        let mem = HostMemory::anonymous(&[(0, 0x2000)]).unwrap();
        let pool = TablePool::new(&mem, 0x1000, 0x1000).unwrap();
        let page = pool.alloc(&mem).unwrap();
        let (entered, walking) = (
            std::sync::mpsc::channel::<()>(),
            std::sync::mpsc::channel::<()>(),
        );
        let (entered_tx, entered_rx) = entered;
        let (done_tx, done_rx) = walking;
        let walker = std::thread::spawn(move || {
            let guard = WalkGuard::enter();
            entered_tx.send(()).unwrap();
            done_rx.recv().unwrap();
            drop(guard);
        });
        entered_rx.recv().unwrap();
        pool.free(page).unwrap();
        // The walk that began before the free may still read the page: however far the
        // collector is driven, the page stays out. (The real allocation would wait out its
        // whole bound here, and the pinned walker would hold up every other test's reclaim
        // meanwhile, so the collector is driven by hand.)
        for _ in 0..1000 {
            epoch::pin().flush();
        }
        assert_eq!(pool.waiting(), 1);
        done_tx.send(()).unwrap();
        walker.join().unwrap();
        assert_eq!(
            pool.alloc(&mem),
            Ok(page),
            "the walk ended: the page is back"
        );
        assert_eq!(pool.waiting(), 0);
    }
}
