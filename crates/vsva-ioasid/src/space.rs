//! The host-wide PASID space.

use std::fmt;

use crate::backend::PasidBackend;
use crate::error::Error;
use crate::ids::{Pasid, SetId, SubscriberId};
use crate::inner::{SetShared, SpaceInner};
use crate::owners::{SlotState, MAX_SET_ID};
use crate::set::{IoasidSet, SetStats};
use crate::sync::{lock, Arc, Ordering};
use crate::teardown::TeardownSubscriber;

/// The widest PASID space VT-d and PCIe support.
pub const MAX_PASID_BITS: u8 = 20;

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

/// What [`IoasidSpace::find`] reports about an allocated or freeing PASID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidState {
    /// Allocated to a set.
    Allocated {
        /// The set that owns it.
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

/// Space-wide counters, as [`IoasidSpace::stats`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStats {
    /// Bits in a PASID of this space (1 to 20).
    pub pasid_bits: u8,
    /// How many PASIDs can be allocated at once: `2^pasid_bits - 1` (PASID 0 is reserved).
    pub capacity: u32,
    /// PASIDs owned by sets.
    pub allocated: u64,
    /// PASIDs freed whose teardown has not finished.
    pub freeing: u64,
    /// Sets created and not yet released or dropped.
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
        Ok(IoasidSpace {
            inner: Arc::new(SpaceInner::new(pasid_bits, backend)),
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
        let shared = Arc::new(SetShared::new(
            self.inner.owners.owner_for(id),
            token,
            quota,
        ));
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
        lock(&self.inner.registry)
            .get(&set.0)
            .map(|s| SetStats::from(&**s))
    }

    /// The counters of every live set, in id order.
    pub fn sets(&self) -> Vec<SetStats> {
        let mut all: Vec<SetStats> = lock(&self.inner.registry)
            .values()
            .map(|s| SetStats::from(&**s))
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

    /// Bytes of memory the space's own structures occupy now (the owner table with its bitmap,
    /// and the registry's entries; each set's record of the words it holds PASIDs in is
    /// reported by [`IoasidSet::memory_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        let registry = lock(&self.inner.registry);
        std::mem::size_of::<SpaceInner>()
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
