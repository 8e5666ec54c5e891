//! The private core every handle shares: the space's owner table (with its bitmap), set
//! registry and subscriber list, and the allocate / retire / finish-teardown steps that move
//! a PASID between free, owned and freeing.
//!
//! The public handles ([`IoasidSpace`](crate::IoasidSpace), [`IoasidSet`](crate::IoasidSet),
//! [`TeardownTicket`](crate::TeardownTicket)) are built on this module; it names none of them.

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;

use crate::backend::PasidBackend;
use crate::bitmap::{Bits, WORD_SLOTS};
use crate::error::Error;
use crate::ids::{Pasid, SetId, SubscriberId};
use crate::owners::{OwnerTable, SlotState};
use crate::sync::{Arc, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::tags::Owner;
use crate::teardown::{TeardownSink, TeardownSubscriber, TeardownTicket};

/// PASIDs per word of the space's bitmap.
const WORD: u32 = WORD_SLOTS as u32;

pub(crate) type Subscribers = Vec<(SubscriberId, Arc<dyn TeardownSubscriber>)>;

/// The state of one space, shared by its `IoasidSpace` clones, its sets and its tickets.
pub(crate) struct SpaceInner {
    pub(crate) pasid_bits: u8,
    pub(crate) max_pasid: Pasid,
    /// `max_pasid` when the space allocates locally, 0 with a backend: the one bound a set's
    /// lock-free fast paths check, so that a backend sends every call to the checked paths.
    pub(crate) local_max: Pasid,
    pub(crate) owners: OwnerTable,
    pub(crate) backend: Option<Arc<dyn PasidBackend>>,
    pub(crate) subscribers: ArcSwap<Subscribers>,
    /// How many subscribers are registered: lets free skip the list when there are none.
    pub(crate) subscriber_count: AtomicUsize,
    /// Serializes subscriber list updates; holds the last subscriber id handed out.
    pub(crate) subscriber_lock: Mutex<u64>,
    pub(crate) registry: Mutex<FxHashMap<u32, Arc<SetShared>>>,
    pub(crate) next_set_id: AtomicU32,
    pub(crate) freeing: AtomicU64,
}

/// The part of a set others may read: identity and counters.
///
/// Aligned to two cache lines so that sets written by different threads (each handle stores
/// its count on every operation) never share a line.
#[repr(align(128))]
pub(crate) struct SetShared {
    pub(crate) id: SetId,
    /// The tag the set's single-owner words carry (lent by the owner table; `NO_TAG` if
    /// none was left to lend).
    pub(crate) tag: u32,
    pub(crate) token: u64,
    pub(crate) quota: AtomicU32,
    /// Mirror of the owning handle's count, for statistics (single writer: the handle).
    pub(crate) owned: AtomicU32,
}

impl SetShared {
    pub(crate) fn new(owner: Owner, token: u64, quota: u32) -> Self {
        SetShared {
            id: SetId(owner.id),
            tag: owner.tag,
            token,
            quota: AtomicU32::new(quota),
            owned: AtomicU32::new(0),
        }
    }

    /// Who the set's calls act as in the owner table.
    #[inline(always)]
    pub(crate) fn owner(&self) -> Owner {
        Owner {
            id: self.id.0,
            tag: self.tag,
        }
    }
}

impl SpaceInner {
    /// An empty space of `2^pasid_bits` numbers (`pasid_bits` already checked), with PASID 0
    /// reserved.
    pub(crate) fn new(pasid_bits: u8, backend: Option<Arc<dyn PasidBackend>>) -> Self {
        let len = 1u64 << pasid_bits;
        SpaceInner {
            pasid_bits,
            max_pasid: (len - 1) as Pasid,
            local_max: if backend.is_some() {
                0
            } else {
                (len - 1) as Pasid
            },
            // PASID 0 means "no PASID" (RID2PASID): the table never hands it out.
            owners: OwnerTable::new(len),
            backend,
            subscribers: ArcSwap::from_pointee(Vec::new()),
            subscriber_count: AtomicUsize::new(0),
            subscriber_lock: Mutex::new(0),
            registry: Mutex::new(FxHashMap::default()),
            next_set_id: AtomicU32::new(1),
            freeing: AtomicU64::new(0),
        }
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
            SlotState::Owned(owner) => Error::NotOwner {
                pasid,
                owner: SetId(owner),
                caller,
            },
            SlotState::Freeing(pending) => Error::Freeing { pasid, pending },
        }
    }

    /// Allocates a PASID in `[lo, hi]` (already clamped to the space) and records `set` as its
    /// owner.
    #[inline]
    pub(crate) fn alloc_number(
        &self,
        set: Owner,
        lo: Pasid,
        hi: Pasid,
        data: u64,
    ) -> Result<Pasid, Error> {
        match &self.backend {
            None => self
                .owners
                .alloc(set, lo, hi, data)
                .map(|(pasid, _)| pasid)
                .ok_or(Error::NoSpace { min: lo, max: hi }),
            Some(backend) => self.alloc_delegated(backend.as_ref(), set, lo, hi, data),
        }
    }

    fn alloc_delegated(
        &self,
        backend: &dyn PasidBackend,
        set: Owner,
        lo: Pasid,
        hi: Pasid,
        data: u64,
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
        if !self.owners.alloc_exact(pasid, set, data) {
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

    /// Frees `pasid`, which `set` owns: tells the subscribers and, once they have all
    /// finished, makes the number allocatable again. Never fails. Returns whether `set` still
    /// owns PASIDs in the space word of `pasid`.
    #[inline]
    pub(crate) fn retire(self: &Arc<Self>, set: Owner, pasid: Pasid) -> bool {
        // The count spares the hot path the list's load when nobody subscribed.
        if self.subscriber_count.load(Ordering::Acquire) == 0 {
            let kept = self.owners.free_one(pasid, set);
            self.backend_free(pasid);
            kept
        } else {
            self.retire_subscribed(set, pasid)
        }
    }

    /// [`retire`](Self::retire) if `set` owns `pasid`; `None`, changing nothing, if it does
    /// not. Without subscribers the ownership check is the release itself.
    #[inline(always)]
    pub(crate) fn retire_owned(self: &Arc<Self>, set: Owner, pasid: Pasid) -> Option<bool> {
        if pasid == 0 || pasid > self.max_pasid {
            return None;
        }
        if self.subscriber_count.load(Ordering::Acquire) == 0 {
            let kept = self.owners.free_owned(pasid, set)?;
            self.backend_free(pasid);
            Some(kept)
        } else {
            // Only `set`'s own calls change what it owns: the check holds for the retire.
            self.owners
                .is_owner(pasid, set)
                .then(|| self.retire_subscribed(set, pasid))
        }
    }

    /// [`retire`](Self::retire) once a subscriber may exist: each one gets a ticket.
    #[inline(never)]
    fn retire_subscribed(self: &Arc<Self>, set: Owner, pasid: Pasid) -> bool {
        let subscribers = self.subscribers.load();
        if subscribers.is_empty() {
            let kept = self.owners.free_one(pasid, set);
            self.backend_free(pasid);
            return kept;
        }
        self.freeing.fetch_add(1, Ordering::Relaxed);
        self.owners
            .begin_teardown(pasid, set, subscribers.len() as u32);
        // The freeing PASID is no longer the set's; what else it owns in the word stays.
        let kept = self.owners.owned_in(u64::from(pasid / WORD), set) != 0;
        for (_, subscriber) in subscribers.iter() {
            subscriber.teardown(pasid, TeardownTicket::new(self.clone(), pasid));
        }
        kept
    }

    /// Frees the PASIDs `word * 56 + bit` for every bit of `mask`, all owned by `set`.
    /// Without subscribers or a backend this is one update of the word. Returns whether `set`
    /// still owns PASIDs in the word.
    #[inline]
    pub(crate) fn retire_word(self: &Arc<Self>, set: Owner, word: u32, mask: u64) -> bool {
        if self.backend.is_none() && self.subscriber_count.load(Ordering::Acquire) == 0 {
            return self.owners.free(u64::from(word), mask, set);
        }
        let mut kept = true;
        for bit in Bits(mask) {
            kept = self.retire(set, word * WORD + bit);
        }
        kept
    }

    /// The PASIDs of space word `word` that `set` owns, as a mask (exact while `set`'s own
    /// calls are not running).
    #[inline]
    pub(crate) fn owned_in(&self, set: Owner, word: u32) -> u64 {
        self.owners.owned_in(u64::from(word), set)
    }

    /// Tells the backend, if any, that `pasid` is free again.
    #[inline]
    fn backend_free(&self, pasid: Pasid) {
        if let Some(backend) = &self.backend {
            backend.free(pasid);
        }
    }

    /// Removes a retired set, which owns nothing any more, from the registry, and takes
    /// back its tag.
    pub(crate) fn unregister(&self, set: Owner) {
        crate::sync::lock(&self.registry).remove(&set.id);
        self.owners.retire_tag(set);
    }
}

impl TeardownSink for SpaceInner {
    fn finish_teardown(&self, pasid: Pasid) {
        if self.owners.finish_one(pasid) {
            self.freeing.fetch_sub(1, Ordering::Relaxed);
            self.backend_free(pasid);
        }
    }
}
