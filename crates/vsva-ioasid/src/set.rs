//! PASID sets: who may allocate, how many, and what they own.

use std::fmt;

use crate::bitmap::{Bits, WORD_SLOTS};
use crate::error::Error;
use crate::ids::{Pasid, SetId};
use crate::inner::{SetShared, SpaceInner};
use crate::members::{window_mask, Members};
use crate::sync::{Arc, Ordering};

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
    /// The 32-PASID words the set owns PASIDs in (who owns each PASID is in the space).
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
            && self.space.owners.is_owner(pasid, self.id().0)
    }

    /// Every PASID the set owns, in ascending order.
    pub fn pasids(&self) -> Vec<Pasid> {
        let mut all = Vec::with_capacity(self.owned as usize);
        for word in self.members.words() {
            let mask = self.space.owned_in(self.id(), word);
            all.extend(Bits(u64::from(mask)).map(|bit| word * WORD + bit));
        }
        all
    }

    /// Allocates the lowest free PASID in `[min, max] ∩ [1, 2^pasid_bits - 1]`.
    ///
    /// Errors: `min > max` → [`Error::InvalidRange`]; quota used up →
    /// [`Error::QuotaExceeded`]; nothing free in the range → [`Error::NoSpace`]. With a
    /// delegated backend, the backend picks the number.
    pub fn alloc(&mut self, min: u32, max: u32) -> Result<Pasid, Error> {
        self.alloc_with_data(min, max, 0)
    }

    /// As [`alloc`](Self::alloc), attaching `data` to the PASID (returned by `find`).
    pub fn alloc_with_data(&mut self, min: u32, max: u32, data: u64) -> Result<Pasid, Error> {
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
        let pasid = self.space.alloc_number(self.id(), lo, hi, data)?;
        self.members.insert(pasid / WORD);
        self.set_owned(self.owned + 1);
        Ok(pasid)
    }

    /// Replaces the private data of a PASID the set owns.
    pub fn set_data(&mut self, pasid: Pasid, data: u64) -> Result<(), Error> {
        if !self.owns(pasid) {
            return Err(self.space.not_mine(self.id(), pasid));
        }
        self.space.owners.set_data(pasid, self.id().0, data);
        Ok(())
    }

    /// Frees a PASID the set owns. Teardown subscribers are told before this returns; the
    /// number becomes allocatable again once they have all finished.
    ///
    /// Errors (nothing changes): [`Error::PasidOutOfRange`], [`Error::NotAllocated`],
    /// [`Error::NotOwner`], or [`Error::Freeing`] if it was already freed and is still being
    /// torn down.
    pub fn free(&mut self, pasid: Pasid) -> Result<(), Error> {
        let Some(kept) = self.space.retire_owned(self.id(), pasid) else {
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
        let (space, id) = (&self.space, self.shared.id);
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

/// PASIDs per word of the space.
const WORD: u32 = WORD_SLOTS as u32;

/// The bits of 32-PASID word `word` that fall inside `[min, max]`.
fn word_range(word: u32, min: u32, max: u32) -> u32 {
    window_mask(
        u64::from(word) * u64::from(WORD),
        u64::from(min),
        u64::from(max),
    ) as u32
}

impl Drop for IoasidSet {
    fn drop(&mut self) {
        self.free_members(0, u32::MAX);
        self.space.unregister(self.id());
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
