//! The per-process PASID context (`vfio_mm` of the series): one per process, shared by every
//! container the process opens.
//!
//! Each process known to the layer (it has a container, or someone holds a [`VfioMm`]) has one
//! `MmSlot`; every container of the process keeps the slot for its whole life. The
//! context proper — the process's [`IoasidSet`] and its binds — lives inside the slot's
//! mutex, next to the count of its holders (nesting containers and [`VfioMm`] handles). The
//! first holder creates it; when the last lets go it is released: every PASID the process
//! owns is freed through the allocator (the IOMMU tears their entries down before any number
//! is reused) and the quota is returned. A container that is not a holder never touches it.
//!
//! The slot's mutex is the per-process lock: it serializes alloc, free, bind, unbind and
//! invalidate of the process, from any of its containers; different processes never contend
//! on it. PASID_REQUEST takes this one lock and nothing else.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vsva_ioasid::{IoasidSet, IoasidSpace, Pasid, SetId, SetStats};

use crate::error::VfioError;
use crate::sync::lock;
use crate::types::{ContainerId, ProcessToken};

/// What the per-process lock protects.
#[derive(Default)]
pub(crate) struct MmSlotState {
    /// The context, while it has holders.
    pub(crate) mm: Option<MmState>,
    /// Nesting containers and [`VfioMm`] handles holding the context.
    holders: usize,
}

/// The context proper: the process's PASIDs and its binds.
pub(crate) struct MmState {
    /// The process's PASIDs.
    pub(crate) set: IoasidSet,
    /// (PASID, container) pairs where the PASID is bound to a guest page table. A B-tree of
    /// pairs (not a map of vectors) so binding and unbinding allocate nothing in the steady
    /// state and a PASID range is one contiguous key range.
    pub(crate) binds: BTreeSet<(Pasid, ContainerId)>,
}

impl MmState {
    pub(crate) fn is_bound(&self, pasid: Pasid, container: ContainerId) -> bool {
        self.binds.contains(&(pasid, container))
    }

    pub(crate) fn record_bind(&mut self, pasid: Pasid, container: ContainerId) {
        self.binds.insert((pasid, container));
    }

    /// Forgets a bind; returns whether it was recorded.
    pub(crate) fn forget_bind(&mut self, pasid: Pasid, container: ContainerId) -> bool {
        self.binds.remove(&(pasid, container))
    }

    /// The PASIDs bound in `container`, ascending.
    pub(crate) fn bound_in(&self, container: ContainerId) -> Vec<Pasid> {
        self.binds
            .iter()
            .filter(|(_, c)| *c == container)
            .map(|&(p, _)| p)
            .collect()
    }

    /// Every bound PASID, ascending, once each.
    pub(crate) fn bound(&self) -> Vec<Pasid> {
        let mut all: Vec<Pasid> = self.binds.iter().map(|&(p, _)| p).collect();
        all.dedup();
        all
    }

    /// Frees the process's PASIDs in `[min, max]` and forgets their binds (the IOMMU's
    /// teardown subscriber has cleared their entries on every device by the time the
    /// allocator returns). Costs what the process owns and has bound, not the range's width.
    pub(crate) fn free_range(&mut self, min: u32, max: u32) -> Result<u32, VfioError> {
        let freed = self.set.free_range(min, max)?;
        if freed > 0 && !self.binds.is_empty() {
            let low = (min, ContainerId(0));
            let high = (max, ContainerId(u64::MAX));
            let gone: Vec<(Pasid, ContainerId)> = self.binds.range(low..=high).copied().collect();
            for key in gone {
                self.binds.remove(&key);
            }
        }
        Ok(freed)
    }
}

/// One process's slot: its token and the per-process lock over its context.
pub(crate) struct MmSlot {
    token: ProcessToken,
    state: Mutex<MmSlotState>,
    registry: Arc<MmRegistry>,
    /// Table-pool pages the stage-2 tables of the process's containers hold.
    table_pages: AtomicUsize,
}

impl MmSlot {
    /// Table-pool pages the process's stage-2 tables hold (as charged by its containers).
    pub(crate) fn table_pages(&self) -> usize {
        self.table_pages.load(Ordering::Acquire)
    }

    /// Counts `n` more table-pool pages against the process; returns the new total.
    pub(crate) fn charge_table_pages(&self, n: usize) -> usize {
        self.table_pages.fetch_add(n, Ordering::AcqRel) + n
    }

    /// Stops counting `n` table-pool pages (their stage 2 was destroyed).
    pub(crate) fn uncharge_table_pages(&self, n: usize) {
        let before = self.table_pages.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "uncharged {n} table pages of {before}");
    }

    /// The per-process lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, MmSlotState> {
        lock(&self.state)
    }

    /// Becomes a holder of the context, creating it (a set of `quota` in `space`) if it has
    /// none.
    pub(crate) fn acquire(&self, space: &IoasidSpace, quota: u32) -> Result<(), VfioError> {
        let mut st = self.lock();
        if st.mm.is_none() {
            let set = space.create_set(self.token.set_token(), quota)?;
            st.mm = Some(MmState {
                set,
                binds: BTreeSet::new(),
            });
        }
        st.holders += 1;
        Ok(())
    }

    /// Becomes one more holder of an existing context; false if there is none.
    fn acquire_existing(&self) -> bool {
        let mut st = self.lock();
        if st.mm.is_none() {
            return false;
        }
        st.holders += 1;
        true
    }

    /// Stops holding the context; the last holder releases it (every PASID freed, set
    /// retired), after the lock is dropped.
    pub(crate) fn release(&self) {
        let released = {
            let mut st = self.lock();
            debug_assert!(st.holders > 0, "release without acquire");
            st.holders = st.holders.saturating_sub(1);
            if st.holders == 0 {
                st.mm.take()
            } else {
                None
            }
        };
        drop(released);
    }
}

impl Drop for MmSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.registry.map);
        // A new slot for the same process may already have replaced this one; only a dead
        // entry is ours to remove.
        if map
            .get(&self.token)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            map.remove(&self.token);
        }
    }
}

/// A reference on a process's PASID context: while any exists (or a nesting container of
/// the process is open), the context lives. Obtained from [`crate::Vfio::process_context`],
/// [`crate::Vfio::find_process_context`] or [`crate::Container::process_context`]; cloning
/// takes another reference, dropping gives it back (the last one releases the context: every
/// PASID of the process is freed and its quota returned).
pub struct VfioMm {
    slot: Arc<MmSlot>,
}

impl VfioMm {
    /// The handle of a holder that has already acquired the context.
    pub(crate) fn held(slot: Arc<MmSlot>) -> VfioMm {
        VfioMm { slot }
    }

    /// A handle on `slot`'s context if it has one.
    pub(crate) fn existing(slot: &Arc<MmSlot>) -> Option<VfioMm> {
        slot.acquire_existing()
            .then(|| VfioMm { slot: slot.clone() })
    }

    fn with<T>(&self, f: impl FnOnce(&MmState) -> T) -> T {
        let st = self.slot.lock();
        // A handle is a holder, so the context exists while it does.
        let mm = st.mm.as_ref().expect("a held context exists");
        f(mm)
    }

    /// Runs `f` on the context under the per-process lock.
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut MmState) -> T) -> T {
        let mut st = self.slot.lock();
        // A handle is a holder, so the context exists while it does.
        let mm = st.mm.as_mut().expect("a held context exists");
        f(mm)
    }

    /// The process this context belongs to.
    pub fn token(&self) -> ProcessToken {
        self.slot.token
    }

    /// The process's PASID set in the host-wide space (for the admin path and statistics).
    pub fn set_id(&self) -> SetId {
        self.with(|mm| mm.set.id())
    }

    /// How many PASIDs the process may own at once.
    pub fn quota(&self) -> u32 {
        self.with(|mm| mm.set.quota())
    }

    /// How many PASIDs the process owns now.
    pub fn owned(&self) -> u32 {
        self.with(|mm| mm.set.owned())
    }

    /// Every PASID the process owns, ascending.
    pub fn pasids(&self) -> Vec<Pasid> {
        self.with(|mm| mm.set.pasids())
    }

    /// Every PASID of the process bound to a guest page table in some container, ascending.
    pub fn bound_pasids(&self) -> Vec<Pasid> {
        self.with(MmState::bound)
    }
}

impl Clone for VfioMm {
    fn clone(&self) -> Self {
        let held = self.slot.acquire_existing();
        debug_assert!(held, "a held context exists");
        VfioMm {
            slot: self.slot.clone(),
        }
    }
}

impl Drop for VfioMm {
    fn drop(&mut self) {
        self.slot.release();
    }
}

impl fmt::Debug for VfioMm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfioMm")
            .field("token", &self.slot.token)
            .field("set_id", &self.set_id())
            .finish_non_exhaustive()
    }
}

/// A process's share of the IOMMU's table pool, for a front end other than the VFIO
/// containers (the iommufd IOASes): pages it charges here count in the same total as the
/// process's containers' stage-2 pages, against the same limit
/// ([`VfioConfig::table_pages_per_process`](crate::VfioConfig::table_pages_per_process)).
/// Obtained from [`crate::Vfio::table_page_share`]; the holder uncharges what it charged.
pub struct TablePageShare {
    slot: Arc<MmSlot>,
    limit: usize,
}

impl TablePageShare {
    /// The process the share belongs to.
    pub fn process(&self) -> ProcessToken {
        self.slot.token
    }

    /// Table-pool pages the process's stage-2 tables hold now, through containers and every
    /// other holder of its share.
    pub fn held(&self) -> usize {
        self.slot.table_pages()
    }

    /// The most pages the process may hold before a map is refused.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// `ENOMEM` ([`VfioError::TablePoolShare`]) when the process holds its share already,
    /// the check a container makes before it maps.
    pub fn check(&self) -> Result<(), VfioError> {
        let held = self.held();
        if held >= self.limit {
            return Err(self.exceeded(held));
        }
        Ok(())
    }

    /// Counts `n` more pages against the process; returns the new total (which may exceed
    /// the limit: the caller decides whether to undo what created them).
    pub fn charge(&self, n: usize) -> usize {
        self.slot.charge_table_pages(n)
    }

    /// Stops counting `n` pages charged here (their stage 2 was destroyed).
    pub fn uncharge(&self, n: usize) {
        self.slot.uncharge_table_pages(n);
    }

    /// The refusal for a process holding `held` pages.
    pub fn exceeded(&self, held: usize) -> VfioError {
        VfioError::TablePoolShare {
            process: self.slot.token,
            held,
            limit: self.limit,
        }
    }
}

impl fmt::Debug for TablePageShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TablePageShare")
            .field("process", &self.slot.token)
            .field("held", &self.held())
            .field("limit", &self.limit)
            .finish()
    }
}

impl crate::Vfio {
    /// The table-pool share of `process` (the one its containers charge), for a front end
    /// that makes stage-2 tables of its own. It keeps the process's count alive while held.
    pub fn table_page_share(&self, process: ProcessToken) -> TablePageShare {
        TablePageShare {
            slot: self.inner.mms.slot(process),
            limit: self.inner.config.table_pages_per_process,
        }
    }
}

/// The slots of every process, by token (the series' `vfio_mm_list`).
///
/// Lock order: this map's lock is taken on its own, or when a slot's last reference goes
/// (after whatever its holder had locked); never before a container's or a slot's lock.
#[derive(Default)]
pub(crate) struct MmRegistry {
    map: Mutex<HashMap<ProcessToken, Weak<MmSlot>>>,
}

impl MmRegistry {
    /// The slot of `token`, created if the process has none.
    pub(crate) fn slot(self: &Arc<Self>, token: ProcessToken) -> Arc<MmSlot> {
        let mut map = lock(&self.map);
        if let Some(slot) = map.get(&token).and_then(Weak::upgrade) {
            return slot;
        }
        let slot = Arc::new(MmSlot {
            token,
            state: Mutex::new(MmSlotState::default()),
            registry: self.clone(),
            table_pages: AtomicUsize::new(0),
        });
        map.insert(token, Arc::downgrade(&slot));
        slot
    }

    /// The live slot of `token`, if any.
    pub(crate) fn find(&self, token: ProcessToken) -> Option<Arc<MmSlot>> {
        lock(&self.map).get(&token).and_then(Weak::upgrade)
    }

    /// Every process with a live context: its token, set counters and bound PASIDs.
    pub(crate) fn contexts(&self, space: &IoasidSpace) -> Vec<(ProcessToken, SetStats, usize)> {
        let slots: Vec<Arc<MmSlot>> = lock(&self.map).values().filter_map(Weak::upgrade).collect();
        slots
            .iter()
            .filter_map(|slot| {
                let st = slot.lock();
                let mm = st.mm.as_ref()?;
                let stats = space.set_stats(mm.set.id())?;
                Some((slot.token, stats, mm.bound().len()))
            })
            .collect()
    }
}
