//! PASID sets: who may allocate, how many, and what they own.

use std::fmt;

use crate::bitmap::{Bits, Claim, FirstStep, NotClaimed, SLOTS_FULL, WORD_SLOTS};
use crate::error::Error;
use crate::ids::{Pasid, SetId};
use crate::inner::{SetShared, SpaceInner};
use crate::members::{window_mask, Members};
use crate::sync::{Arc, Ordering};
use crate::tags::NO_TAG;

/// Per-set counters, as [`IoasidSpace::set_stats`](crate::IoasidSpace::set_stats) and
/// [`IoasidSpace::sets`](crate::IoasidSpace::sets) report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetStats {
    /// The set these counters describe.
    pub id: SetId,
    /// The token it was created with.
    pub token: u64,
    /// PASIDs it owns now.
    pub owned: u32,
    /// How many it may own at once.
    pub quota: u32,
}

impl From<&SetShared> for SetStats {
    fn from(shared: &SetShared) -> Self {
        SetStats {
            id: shared.id,
            token: shared.token,
            owned: shared.owned.load(Ordering::Relaxed),
            quota: shared.quota.load(Ordering::Relaxed),
        }
    }
}

/// A set of PASIDs with one owner and a quota: the only way to allocate and free.
///
/// The handle is the owner's capability: operations take `&mut self`, so a set's own
/// operations are serialized by whoever holds it (the VFIO layer keeps one per process behind
/// the process's lock), while different sets run fully in parallel. Freeing a PASID through a
/// set that does not own it is refused.
///
/// Dropping the handle releases the set (see [`release`](Self::release)).
pub struct IoasidSet {
    space: Arc<SpaceInner>,
    shared: Arc<SetShared>,
    /// The space words the set owns PASIDs in (who owns each PASID is in the space).
    members: Members,
    owned: u32,
}

impl IoasidSet {
    pub(crate) fn new(space: Arc<SpaceInner>, shared: Arc<SetShared>) -> Self {
        IoasidSet {
            space,
            shared,
            members: Members::default(),
            owned: 0,
        }
    }

    /// The set's id: what [`IoasidSpace::find`](crate::IoasidSpace::find) reports as a
    /// PASID's owner, and what the admin path names.
    pub fn id(&self) -> SetId {
        self.shared.id
    }

    /// The token the set was created with.
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    /// How many PASIDs the set may own at once (changed only by
    /// [`IoasidSpace::set_quota`](crate::IoasidSpace::set_quota)).
    pub fn quota(&self) -> u32 {
        self.shared.quota.load(Ordering::Relaxed)
    }

    /// How many PASIDs the set owns.
    pub fn owned(&self) -> u32 {
        self.owned
    }

    /// Whether the set owns `pasid`.
    pub fn owns(&self, pasid: Pasid) -> bool {
        pasid != 0
            && pasid <= self.space.max_pasid
            && self.space.owners.is_owner(pasid, self.shared.owner())
    }

    /// Every PASID the set owns, in ascending order.
    pub fn pasids(&self) -> Vec<Pasid> {
        let mut all = Vec::with_capacity(self.owned as usize);
        for word in self.members.words() {
            let mask = self.space.owned_in(self.shared.owner(), word);
            all.extend(Bits(mask).map(|bit| word * WORD + bit));
        }
        all
    }

    /// Allocates the lowest free PASID in `[min, max] ∩ [1, 2^pasid_bits - 1]`.
    ///
    /// Errors: `min > max` → [`Error::InvalidRange`]; quota used up →
    /// [`Error::QuotaExceeded`]; nothing free in the range → [`Error::NoSpace`]. With a
    /// delegated backend, the backend picks the number.
    #[inline]
    pub fn alloc(&mut self, min: u32, max: u32) -> Result<Pasid, Error> {
        match self.alloc_local(min, max) {
            NOT_HERE => self.alloc_checked(min, max, 0),
            pasid => Ok(pasid),
        }
    }

    /// As [`alloc`](Self::alloc), attaching `data` to the PASID (returned by `find`).
    #[inline]
    pub fn alloc_with_data(&mut self, min: u32, max: u32, data: u64) -> Result<Pasid, Error> {
        if data == 0 {
            return self.alloc(min, max);
        }
        self.alloc_checked(min, max, data)
    }

    /// The common allocation in one call with nothing out of line, its answer in a register:
    /// no backend, no data, the set holds a tag, the range and quota checks pass and a PASID
    /// is free in the range.
    /// [`NOT_HERE`], having changed nothing, sends the caller to
    /// [`alloc_checked`](Self::alloc_checked), which checks again in the documented order and
    /// says why (or allocates, if a PASID was freed meanwhile).
    #[inline(never)]
    fn alloc_local(&mut self, min: u32, max: u32) -> Pasid {
        let space = &*self.space;
        // `min > max` makes `lo > hi` as well, and so does a backend (`local_max` is 0).
        let (lo, hi) = (min.max(1), max.min(space.local_max));
        let tag = self.shared.tag;
        if lo > hi || self.owned >= self.shared.quota.load(Ordering::Relaxed) || tag == NO_TAG {
            return NOT_HERE;
        }
        match space.owners.claim_first(tag, lo, hi) {
            FirstStep::Done(i) => {
                // A word tagged with the set before this claim holds PASIDs of the set, so
                // its bit is already in the set's record: only a word new to the set needs
                // noting.
                debug_assert!(self.members.contains(i as u32 / WORD), "PASID {i}");
                self.set_owned(self.owned + 1);
                i as Pasid
            }
            // Out of line, as tail calls: the common path above keeps few values live.
            FirstStep::Claimed {
                i,
                how,
                filled,
                hint,
            } => self.alloc_claimed(i, how, filled, hint),
            FirstStep::Search { hint, stale, why } => {
                self.alloc_searching(lo, hi, hint, stale, why)
            }
        }
    }

    /// [`alloc_local`](Self::alloc_local) after a [`FirstStep::Claimed`].
    #[inline(never)]
    fn alloc_claimed(&mut self, i: u64, how: Claim, filled: bool, hint: u64) -> Pasid {
        self.space.owners.first_claim_done(hint, i, filled);
        self.note_claimed(i as Pasid, how != Claim::Claimed)
    }

    /// [`alloc_local`](Self::alloc_local) after a [`FirstStep::Search`] (whose `from` is
    /// `lo`, `hint` and `stale` again).
    #[inline(never)]
    fn alloc_searching(
        &mut self,
        lo: Pasid,
        hi: Pasid,
        hint: u64,
        stale: u64,
        why: NotClaimed,
    ) -> Pasid {
        let set = self.shared.owner();
        let Some((pasid, new_word)) = (self.space.owners).alloc_on(set, lo, hi, hint, stale, why)
        else {
            return NOT_HERE;
        };
        self.note_claimed(pasid, new_word)
    }

    /// Records a PASID the set has just claimed: its word (if `new_word`, the word may be new
    /// to the set) and its count.
    #[inline(always)]
    fn note_claimed(&mut self, pasid: Pasid, new_word: bool) -> Pasid {
        if new_word {
            self.members.insert(pasid / WORD);
        }
        debug_assert!(self.members.contains(pasid / WORD), "PASID {pasid}");
        self.set_owned(self.owned + 1);
        pasid
    }

    /// Every allocation [`alloc_local`](Self::alloc_local) does not finish: the refusals, in
    /// the documented order, a delegated backend, and private data.
    #[cold]
    #[inline(never)]
    fn alloc_checked(&mut self, min: u32, max: u32, data: u64) -> Result<Pasid, Error> {
        if min > max {
            return Err(Error::InvalidRange { min, max });
        }
        let quota = self.shared.quota.load(Ordering::Relaxed);
        if self.owned >= quota {
            return Err(Error::QuotaExceeded {
                set: self.id(),
                quota,
            });
        }
        let lo = min.max(1);
        let hi = max.min(self.space.max_pasid);
        if lo > hi {
            return Err(Error::NoSpace { min: lo, max: hi });
        }
        let pasid = self.space.alloc_number(self.shared.owner(), lo, hi, data)?;
        self.members.insert(pasid / WORD);
        self.set_owned(self.owned + 1);
        Ok(pasid)
    }

    /// Replaces the private data of a PASID the set owns.
    pub fn set_data(&mut self, pasid: Pasid, data: u64) -> Result<(), Error> {
        if !self.owns(pasid) {
            return Err(self.space.not_mine(self.id(), pasid));
        }
        self.space.owners.set_data(pasid, self.shared.owner(), data);
        Ok(())
    }

    /// Frees a PASID the set owns. Teardown subscribers are told before this returns; the
    /// number becomes allocatable again once they have all finished.
    ///
    /// Errors (nothing changes): [`Error::PasidOutOfRange`], [`Error::NotAllocated`],
    /// [`Error::NotOwner`], or [`Error::Freeing`] if it was already freed and is still being
    /// torn down.
    #[inline]
    pub fn free(&mut self, pasid: Pasid) -> Result<(), Error> {
        if self.free_local(pasid) {
            return Ok(());
        }
        self.free_checked(pasid)
    }

    /// The common free in one call: a PASID of a word tagged with the set, with no
    /// subscriber and no backend to tell. The release's compare-and-swap is the ownership
    /// check. `false`, having changed nothing, sends the caller to
    /// [`free_checked`](Self::free_checked).
    #[inline(never)]
    fn free_local(&mut self, pasid: Pasid) -> bool {
        let space = &*self.space;
        // Out of range, or any PASID with a backend (`local_max` is 0).
        if pasid == 0
            || pasid > space.local_max
            || space.subscriber_count.load(Ordering::Acquire) != 0
        {
            return false;
        }
        let Some((kept, unfilled)) = space.owners.release_tagged(pasid, self.shared.tag) else {
            return false;
        };
        self.set_owned(self.owned - 1);
        if !kept {
            self.members.remove(pasid / WORD);
        }
        // Last, so that an un-filled word's upkeep is a tail call.
        self.space.owners.released(pasid, unfilled)
    }

    /// Every free [`free_local`](Self::free_local) does not finish: mixed words, teardown
    /// subscribers, a backend, and the refusals.
    #[cold]
    #[inline(never)]
    fn free_checked(&mut self, pasid: Pasid) -> Result<(), Error> {
        let Some(kept) = self.space.retire_owned(self.shared.owner(), pasid) else {
            return Err(self.space.not_mine(self.id(), pasid));
        };
        self.set_owned(self.owned - 1);
        if !kept {
            self.members.remove(pasid / WORD);
        }
        Ok(())
    }

    /// Frees every PASID the set owns in `[min, max]` and returns how many.
    ///
    /// The cost is bounded by what the set owns, never by the width of the range:
    /// `[0, u32::MAX]` visits only the set's own blocks. Other sets' PASIDs are untouched.
    pub fn free_range(&mut self, min: u32, max: u32) -> Result<u32, Error> {
        if min > max {
            return Err(Error::InvalidRange { min, max });
        }
        Ok(self.free_members(min, max))
    }

    /// Frees everything the set owns and retires it; returns how many PASIDs were freed.
    /// Teardowns still pending finish on their own; the set is gone at once.
    pub fn release(mut self) -> u32 {
        self.free_members(0, u32::MAX)
    }

    /// Frees every PASID the set owns in `[min, max]`; returns how many.
    #[inline]
    fn free_members(&mut self, min: u32, max: u32) -> u32 {
        let (space, id) = (&self.space, self.shared.owner());
        let mut freed = 0;
        self.members.retain_words(min / WORD, max / WORD, |word| {
            let owned = space.owned_in(id, word);
            let mask = owned & word_range(word, min, max);
            if mask == 0 {
                return owned != 0;
            }
            freed += mask.count_ones();
            space.retire_word(id, word, mask)
        });
        self.set_owned(self.owned - freed);
        freed
    }

    /// Bytes of memory the set's own record of its words occupies now.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of::<SetShared>() + self.members.memory_bytes()
    }

    fn set_owned(&mut self, owned: u32) {
        self.owned = owned;
        self.shared.owned.store(owned, Ordering::Relaxed);
    }
}

/// What [`IoasidSet::alloc_local`] answers when it allocated nothing (PASID 0 is never
/// handed out).
const NOT_HERE: Pasid = 0;

/// PASIDs per word of the space.
const WORD: u32 = WORD_SLOTS as u32;

/// The bits of space word `word` that fall inside `[min, max]`.
fn word_range(word: u32, min: u32, max: u32) -> u64 {
    window_mask(
        u64::from(word) * u64::from(WORD),
        u64::from(min),
        u64::from(max),
    ) & SLOTS_FULL
}

impl Drop for IoasidSet {
    fn drop(&mut self) {
        self.free_members(0, u32::MAX);
        self.space.unregister(self.shared.owner());
    }
}

impl fmt::Debug for IoasidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoasidSet")
            .field("id", &self.id())
            .field("token", &self.token())
            .field("owned", &self.owned)
            .field("quota", &self.quota())
            .finish()
    }
}
