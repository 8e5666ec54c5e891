//! The host-wide PASID space.

use std::fmt;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::backend::PasidBackend;
use crate::bitmap::{Bitmap, Bits};
use crate::owners::{OwnerTable, SlotState, MAX_SET_ID};
use crate::set::{IoasidSet, SetShared};
use crate::sync::{lock, Arc, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::teardown::{SubscriberId, TeardownSubscriber, TeardownTicket};
use crate::{Error, Pasid, SetId};

/// The widest PASID space VT-d and PCIe support.
pub const MAX_PASID_BITS: u8 = 20;

type Subscribers = Vec<(SubscriberId, Arc<dyn TeardownSubscriber>)>;

/// One host-wide PASID space: `[1, 2^pasid_bits - 1]`, shared by every set.
///
/// Cloning gives another handle on the same space. Allocation and free go through the
/// [`IoasidSet`] handles made by [`create_set`](Self::create_set); the space itself answers
/// lookups ([`find`](Self::find)), statistics, and the administrative quota change.
///
/// Thread safety: every method takes `&self` and may run concurrently with any other. No
/// global lock is taken by allocation, free or `find`; the set registry's lock is taken only
/// to create or retire a set, change a quota, and read statistics.
#[derive(Clone)]
pub struct IoasidSpace {
    pub(crate) inner: Arc<SpaceInner>,
}

pub(crate) struct SpaceInner {
    pasid_bits: u8,
    max_pasid: Pasid,
    pub(crate) bitmap: Bitmap,
    pub(crate) owners: OwnerTable,
    pub(crate) backend: Option<Arc<dyn PasidBackend>>,
    subscribers: ArcSwap<Subscribers>,
    /// How many subscribers are registered: lets free skip the list when there are none.
    subscriber_count: AtomicUsize,
    subscriber_lock: Mutex<u64>,
    registry: Mutex<FxHashMap<u32, Arc<SetShared>>>,
    next_set_id: AtomicU32,
    freeing: AtomicU64,
}

/// What [`IoasidSpace::find`] reports about an allocated or freeing PASID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidState {
    /// Allocated to a set.
    Allocated {
        /// The owner.
        set: SetId,
        /// The private data attached at allocation (or by `set_data`), 0 if none.
        data: u64,
    },
    /// Freed; teardown subscribers have not all finished, so it cannot be allocated yet.
    Freeing {
        /// Subscribers still working on it.
        pending: u32,
    },
}

/// Per-set counters, as [`IoasidSpace::set_stats`] and [`IoasidSpace::sets`] report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetStats {
    /// The set.
    pub id: SetId,
    /// The token it was created with.
    pub token: u64,
    /// PASIDs it owns now.
    pub owned: u32,
    /// How many it may own at once.
    pub quota: u32,
}

/// Space-wide counters, as [`IoasidSpace::stats`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStats {
    /// The PASID width.
    pub pasid_bits: u8,
    /// How many PASIDs can be allocated at once: `2^pasid_bits - 1` (PASID 0 is reserved).
    pub capacity: u32,
    /// PASIDs owned by sets.
    pub allocated: u64,
    /// PASIDs freed whose teardown has not finished.
    pub freeing: u64,
    /// Live sets.
    pub sets: usize,
}

impl IoasidSpace {
    /// Creates a space of `2^pasid_bits` PASIDs that allocates locally (lowest free first).
    pub fn new(pasid_bits: u8) -> Result<Self, Error> {
        Self::build(pasid_bits, None)
    }

    /// Creates a space whose numbers come from `backend` (e.g. a guest asking its host).
    pub fn with_backend(pasid_bits: u8, backend: Arc<dyn PasidBackend>) -> Result<Self, Error> {
        Self::build(pasid_bits, Some(backend))
    }

    fn build(pasid_bits: u8, backend: Option<Arc<dyn PasidBackend>>) -> Result<Self, Error> {
        if !(1..=MAX_PASID_BITS).contains(&pasid_bits) {
            return Err(Error::InvalidPasidBits { bits: pasid_bits });
        }
        let len = 1u64 << pasid_bits;
        let bitmap = Bitmap::new(len);
        // PASID 0 means "no PASID" (RID2PASID) and is never handed out.
        let reserved = bitmap.claim(0);
        debug_assert!(reserved);
        Ok(IoasidSpace {
            inner: Arc::new(SpaceInner {
                pasid_bits,
                max_pasid: (len - 1) as Pasid,
                bitmap,
                owners: OwnerTable::new(len),
                backend,
                subscribers: ArcSwap::from_pointee(Vec::new()),
                subscriber_count: AtomicUsize::new(0),
                subscriber_lock: Mutex::new(0),
                registry: Mutex::new(FxHashMap::default()),
                next_set_id: AtomicU32::new(1),
                freeing: AtomicU64::new(0),
            }),
        })
    }

    /// The PASID width of the space.
    pub fn pasid_bits(&self) -> u8 {
        self.inner.pasid_bits
    }

    /// The largest PASID of the space, `2^pasid_bits - 1`.
    pub fn max_pasid(&self) -> Pasid {
        self.inner.max_pasid
    }

    /// Creates a set owned by `token` (e.g. a process identity) that may own at most `quota`
    /// PASIDs at once. Tokens are recorded for reporting; the layer above keeps them unique.
    pub fn create_set(&self, token: u64, quota: u32) -> Result<IoasidSet, Error> {
        let id = self
            .inner
            .next_set_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| {
                (id <= MAX_SET_ID).then_some(id + 1)
            })
            .map_err(|created| Error::SetIdsExhausted {
                created: created - 1,
            })?;
        let shared = Arc::new(SetShared::new(SetId(id), token, quota));
        lock(&self.inner.registry).insert(id, shared.clone());
        Ok(IoasidSet::new(self.inner.clone(), shared))
    }

    /// Who owns `pasid` and with what data, or whether it is being torn down; `None` if it is
    /// free or outside the space. Lock-free and O(1); safe concurrently with everything.
    pub fn find(&self, pasid: Pasid) -> Option<PasidState> {
        if pasid == 0 || pasid > self.inner.max_pasid {
            return None;
        }
        match self.inner.owners.get(pasid) {
            (SlotState::Free, _) => None,
            (SlotState::Owned(set), data) => Some(PasidState::Allocated {
                set: SetId(set),
                data,
            }),
            (SlotState::Freeing(pending), _) => Some(PasidState::Freeing { pending }),
        }
    }

    /// Changes a set's quota: the privileged path. Lowering it below what the set owns frees
    /// nothing; the set just cannot allocate until it is back under the quota.
    pub fn set_quota(&self, set: SetId, quota: u32) -> Result<(), Error> {
        let registry = lock(&self.inner.registry);
        let shared = registry.get(&set.0).ok_or(Error::UnknownSet { set })?;
        shared.quota.store(quota, Ordering::Relaxed);
        Ok(())
    }

    /// The counters of one live set.
    pub fn set_stats(&self, set: SetId) -> Option<SetStats> {
        lock(&self.inner.registry).get(&set.0).map(|s| s.stats())
    }

    /// The counters of every live set, in id order.
    pub fn sets(&self) -> Vec<SetStats> {
        let mut all: Vec<SetStats> = lock(&self.inner.registry)
            .values()
            .map(|s| s.stats())
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Space-wide counters. Reading them never stops allocation or free; under concurrent
    /// use each counter is a recent value, not a single atomic snapshot of all of them.
    pub fn stats(&self) -> SpaceStats {
        let registry = lock(&self.inner.registry);
        SpaceStats {
            pasid_bits: self.inner.pasid_bits,
            capacity: self.inner.max_pasid,
            allocated: registry
                .values()
                .map(|s| u64::from(s.owned.load(Ordering::Relaxed)))
                .sum(),
            freeing: self.inner.freeing.load(Ordering::Relaxed),
            sets: registry.len(),
        }
    }

    /// Registers a teardown subscriber: from now on it is told of every freed PASID, and each
    /// PASID freed stays unallocatable until it has finished.
    pub fn subscribe(&self, subscriber: Arc<dyn TeardownSubscriber>) -> SubscriberId {
        let mut next = lock(&self.inner.subscriber_lock);
        *next += 1;
        let id = SubscriberId(*next);
        let mut list = Vec::clone(&self.inner.subscribers.load());
        list.push((id, subscriber));
        self.inner
            .subscriber_count
            .store(list.len(), Ordering::SeqCst);
        self.inner.subscribers.store(Arc::new(list));
        id
    }

    /// Removes a subscriber; returns whether it was registered. Teardowns it already started
    /// still complete through their tickets.
    pub fn unsubscribe(&self, id: SubscriberId) -> bool {
        let _guard = lock(&self.inner.subscriber_lock);
        let mut list = Vec::clone(&self.inner.subscribers.load());
        let before = list.len();
        list.retain(|(sid, _)| *sid != id);
        let removed = list.len() != before;
        self.inner
            .subscriber_count
            .store(list.len(), Ordering::SeqCst);
        self.inner.subscribers.store(Arc::new(list));
        removed
    }

    /// Bytes of memory the space's own structures occupy now (bitmap, owner table and the
    /// registry's entries; each set's membership is reported by
    /// [`IoasidSet::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        let registry = lock(&self.inner.registry);
        std::mem::size_of::<SpaceInner>()
            + self.inner.bitmap.memory_bytes()
            + self.inner.owners.memory_bytes()
            + registry.capacity()
                * (std::mem::size_of::<(u32, Arc<SetShared>)>() + std::mem::size_of::<SetShared>())
    }
}

impl fmt::Debug for IoasidSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("IoasidSpace")
            .field("pasid_bits", &stats.pasid_bits)
            .field("allocated", &stats.allocated)
            .field("freeing", &stats.freeing)
            .field("sets", &stats.sets)
            .finish()
    }
}

impl SpaceInner {
    pub(crate) fn max_pasid(&self) -> Pasid {
        self.max_pasid
    }

    /// Explains why `caller` may not operate on `pasid`, which it does not own.
    pub(crate) fn not_mine(&self, caller: SetId, pasid: Pasid) -> Error {
        if pasid == 0 || pasid > self.max_pasid {
            return Error::PasidOutOfRange {
                pasid,
                max: self.max_pasid,
            };
        }
        match self.owners.get(pasid).0 {
            SlotState::Free => Error::NotAllocated { pasid },
            SlotState::Owned(owner) if owner == caller.0 => {
                // Only reachable if the slot was recorded but the set's membership was not,
                // which the set's `&mut self` API rules out; report it as not allocated.
                Error::NotAllocated { pasid }
            }
            SlotState::Owned(owner) => Error::NotOwner {
                pasid,
                owner: SetId(owner),
                caller,
            },
            SlotState::Freeing(pending) => Error::Freeing { pasid, pending },
        }
    }

    /// Takes a PASID in `[lo, hi]` (already clamped to the space) for the set `set`.
    #[inline]
    pub(crate) fn take(&self, set: SetId, lo: Pasid, hi: Pasid, data: u64) -> Result<Pasid, Error> {
        let pasid = match &self.backend {
            None => self
                .bitmap
                .claim_lowest(u64::from(lo), u64::from(hi))
                .ok_or(Error::NoSpace { min: lo, max: hi })? as Pasid,
            Some(backend) => self.take_delegated(backend.as_ref(), lo, hi)?,
        };
        self.owners.record(pasid, set.0, data);
        Ok(pasid)
    }

    fn take_delegated(
        &self,
        backend: &dyn PasidBackend,
        lo: Pasid,
        hi: Pasid,
    ) -> Result<Pasid, Error> {
        let failed = |errno, message: String| Error::Backend {
            backend: backend.name().to_owned(),
            errno,
            message,
        };
        let pasid = backend
            .alloc(lo, hi)
            .map_err(|(errno, msg)| failed(errno, msg))?;
        if pasid < lo || pasid > hi {
            backend.free(pasid);
            return Err(failed(
                vsva_uapi::Errno::EINVAL,
                format!("returned PASID {pasid} outside the requested range [{lo}, {hi}]"),
            ));
        }
        if !self.bitmap.claim(u64::from(pasid)) {
            // Locally taken (owned, or still being torn down): never own a number twice.
            // The backend still believes it handed `pasid` out, so give it back.
            backend.free(pasid);
            return Err(failed(
                vsva_uapi::Errno::EBUSY,
                format!("returned PASID {pasid}, which is still in use here"),
            ));
        }
        Ok(pasid)
    }

    /// Frees an owned PASID that its set has already forgotten: tells the subscribers and, once
    /// they have all finished, makes the number allocatable again. Never fails.
    #[inline]
    pub(crate) fn retire(self: &Arc<Self>, pasid: Pasid) {
        // The count spares the hot path the list's load when nobody subscribed.
        let subscribers = (self.subscriber_count.load(Ordering::Acquire) != 0)
            .then(|| self.subscribers.load())
            .filter(|list| !list.is_empty());
        let Some(subscribers) = subscribers else {
            self.owners.clear(pasid);
            self.release_number(pasid);
            return;
        };
        self.freeing.fetch_add(1, Ordering::Relaxed);
        self.owners.begin_teardown(pasid, subscribers.len() as u32);
        for (_, subscriber) in subscribers.iter() {
            subscriber.teardown(pasid, TeardownTicket::new(self.clone(), pasid));
        }
    }

    /// Frees the owned PASIDs `word * 64 + bit` for every bit of `mask`, which their set has
    /// already forgotten. Without subscribers or a backend this is one bitmap update.
    #[inline]
    pub(crate) fn retire_word(self: &Arc<Self>, word: u32, mask: u64) {
        if self.backend.is_none() && self.subscriber_count.load(Ordering::Acquire) == 0 {
            for bit in Bits(mask) {
                self.owners.clear(word * 64 + bit);
            }
            self.bitmap.release_word(u64::from(word), mask);
            return;
        }
        for bit in Bits(mask) {
            self.retire(word * 64 + bit);
        }
    }

    /// One ticket of `pasid` completed.
    pub(crate) fn finish_teardown(&self, pasid: Pasid) {
        if self.owners.finish_one(pasid) {
            self.owners.clear(pasid);
            self.freeing.fetch_sub(1, Ordering::Relaxed);
            self.release_number(pasid);
        }
    }

    #[inline]
    fn release_number(&self, pasid: Pasid) {
        self.bitmap.release(u64::from(pasid));
        if let Some(backend) = &self.backend {
            backend.free(pasid);
        }
    }

    /// Removes a retired set from the registry.
    pub(crate) fn unregister(&self, set: SetId) {
        lock(&self.registry).remove(&set.0);
    }
}
