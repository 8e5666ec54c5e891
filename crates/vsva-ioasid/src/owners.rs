//! Who owns each PASID, and its private data: the taken bitmap with its word tags, plus
//! per-PASID leaves for the few words that need them, all read and changed without locks
//! except to make a word mixed.
//!
//! Most words of the space are taken by a single set: the bitmap's level-0 word then carries
//! that set's tag beside its bits (see the `bitmap` module, and the `tags` module for how
//! a tag stands for a set), and allocation and free touch that one word and nothing else;
//! `find` also reads the tag's entry. A word needs a *leaf* — 56 owner slots and 56
//! private-data slots — only while it is mixed: PASIDs of several sets, private data, a
//! PASID being torn down, or a set that holds no tag. A leaf slot is one `AtomicU32`:
//!
//! | value | meaning |
//! |---|---|
//! | `0` | free, or its bit is being claimed or released right now |
//! | `1 ..= 2^31 - 1` | allocated to the set with that id |
//! | `FREEING \| n` | freed; `n` teardown subscribers have not finished |
//!
//! In a mixed word every step is a compare-and-swap or a store:
//!
//! * **claim**: set the bit in the word (it must still be mixed), then publish the owner in
//!   the slot (data first). Until then the slot reads 0, "not allocated": a lookup or a free
//!   by someone else in that window fails as if it came just before the allocation.
//! * **release**: swap the slot from the owner to 0 (a compare-and-swap: the ownership
//!   check), zero the data, then clear the bit; the release that leaves no bit taken tags
//!   the word "nobody" in the same compare-and-swap and gives the leaf back.
//! * **teardown**: the owner's slot becomes `FREEING | n`; the last subscriber to finish sets
//!   it to 0 and clears the bit like a release.
//!
//! A word becomes mixed under its chunk's lock (57 344 PASIDs per chunk, taken only here and
//! once by each retired tag): the leaf is built from one exact value of the word, its tag
//! read as a set id, and the tag swapped in with a compare-and-swap against that value, so
//! the leaf covers every PASID taken when the tag changes. It goes back to one owner (*collapses*) when every taken PASID belongs to one set
//! with no data and no teardown pending — lazily, only on that set's own calls (its claims in
//! the word, and clearing its data), since a set's handle serializes its calls.
//! That is what makes the lock-free steps safe against a collapse: a bit being claimed or
//! released has a 0 slot and a teardown a `FREEING` one, either of which stops the collapse;
//! and a set can only be collapsed *to*, by its own thread, so its own in-flight release
//! never races one. While one of a thread's bits is taken in a mixed word, the word stays
//! mixed with the same leaf; so the leaf a releaser loads is the word's current one, and a
//! claimer loads it after setting its bit. Leaves are shared through `ArcSwapOption`, so a
//! `find` that raced a collapse still reads a leaf that was exact when it was replaced. The
//! table of leaf pointers of a chunk (8 bytes per 56 PASIDs) is created the first time a word
//! of the chunk becomes mixed and kept for the life of the space.

use std::sync::OnceLock;

use arc_swap::ArcSwapOption;

use crate::bitmap::{
    pack, slots_of, split, tag_of, Bitmap, Bits, Claim, FirstStep, NotClaimed, Refused, MAX_TAG,
    TAG_MIXED, TAG_NONE, WORD_SLOTS,
};
use crate::ids::Pasid;
use crate::sync::{lock, Arc, AtomicU32, AtomicU64, Mutex, Ordering};
use crate::tags::{entry_id, Owner, Tags, NO_TAG};

const SLOTS: usize = WORD_SLOTS as usize;
const CHUNK_SHIFT: u32 = 10;
const CHUNK_WORDS: usize = 1 << CHUNK_SHIFT;

/// Slot flag: the PASID is being torn down; the low bits count unfinished subscribers.
pub(crate) const FREEING: u32 = 1 << 31;
/// Largest set id a slot can hold.
pub(crate) const MAX_SET_ID: u32 = FREEING - 1;

/// The owners and data of the 56 PASIDs of one mixed word.
struct Leaf {
    owners: [AtomicU32; SLOTS],
    data: [AtomicU64; SLOTS],
}

impl Leaf {
    fn new() -> Self {
        Leaf {
            owners: std::array::from_fn(|_| AtomicU32::new(0)),
            data: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A lock-free reader's hold on a word's leaf.
type LeafGuard = arc_swap::Guard<Option<Arc<Leaf>>>;

/// The leaves of one chunk of words, and the lock that serializes making its words mixed.
struct Chunk {
    lock: Mutex<()>,
    leaves: OnceLock<Box<[ArcSwapOption<Leaf>]>>,
}

/// The owner table for `[0, len)`.
pub(crate) struct OwnerTable {
    taken: Bitmap,
    chunks: Box<[Chunk]>,
    tags: Tags,
}

/// What the table says about a PASID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Not allocated to anyone.
    Free,
    /// Allocated to this set id.
    Owned(u32),
    /// Being torn down; this many subscribers have not finished.
    Freeing(u32),
}

impl SlotState {
    fn decode(raw: u32) -> SlotState {
        match raw {
            0 => SlotState::Free,
            r if r & FREEING != 0 => SlotState::Freeing(r & !FREEING),
            r => SlotState::Owned(r),
        }
    }
}

/// Reports a free or teardown of a PASID that the freeing set did not hold, though an
/// ownership check or a range walk of the set's words had just found it did: only the set's
/// own calls change what it owns, so this is a bug, never a caller error.
fn report_owner_mismatch(w: u64, b: u32, set: u32, found: u32) {
    let pasid = w * WORD_SLOTS + u64::from(b);
    tracing::error!(
        pasid,
        set,
        found,
        "owner slot does not hold the freeing set"
    );
    debug_assert!(false, "PASID {pasid}: slot {found:#x}, freed by set {set}");
}

/// Word index and bit of a PASID.
#[inline]
fn locate(pasid: Pasid) -> (u64, usize) {
    let (w, b) = split(u64::from(pasid));
    (w, b as usize)
}

impl OwnerTable {
    /// Creates an empty table for `len` PASIDs; PASID 0 is reserved for good.
    pub(crate) fn new(len: u64) -> Self {
        let nchunks = len.div_ceil(WORD_SLOTS << CHUNK_SHIFT) as usize;
        OwnerTable {
            taken: Bitmap::new(len, true),
            chunks: (0..nchunks)
                .map(|_| Chunk {
                    lock: Mutex::new(()),
                    leaves: OnceLock::new(),
                })
                .collect(),
            tags: Tags::new(),
        }
    }

    /// Lends set `id` a word tag: the [`Owner`] its calls act as ([`NO_TAG`] if all 254 tags
    /// are lent; the set then keeps its PASIDs in mixed words).
    pub(crate) fn owner_for(&self, id: u32) -> Owner {
        Owner {
            id,
            tag: self.tags.lend(id),
        }
    }

    /// Takes back the tag of a set being retired, which owns no PASID any more (so no word
    /// carries its tag). The tag is lent again only after every chunk lock has been taken
    /// once: a [`make_mixed`](Self::make_mixed) that read the tag as this set finishes first,
    /// so its compare-and-swap cannot succeed on a word that a new holder of the tag brought
    /// back to the same value.
    pub(crate) fn retire_tag(&self, owner: Owner) {
        if owner.tag == NO_TAG {
            return;
        }
        debug_assert_eq!(entry_id(self.tags.entry(owner.tag)), owner.id);
        self.tags.unlend(owner.tag);
        for chunk in self.chunks.iter() {
            drop(lock(&chunk.lock));
        }
        self.tags.give_back(owner.tag);
    }

    /// The id of the set whose tag word `w` carried when it held `v` (tagged, neither
    /// [`TAG_NONE`] nor [`TAG_MIXED`]), or `None` if that cannot be told any more (the word
    /// or the tag's entry changed: read the word again).
    ///
    /// The entry is read before and after a second read of the word. If that read finds `v`
    /// again and the entry did not change (its sequence number moves with every change), the
    /// word held `v` while the tag stood for the entry's set.
    #[inline]
    fn resolve(&self, w: u64, v: u64) -> Option<u32> {
        let tag = tag_of(v);
        debug_assert!(tag != TAG_NONE && tag <= MAX_TAG);
        let before = self.tags.entry(tag);
        let again = self.taken.word(w);
        let after = self.tags.entry(tag);
        (again == v && before == after && entry_id(before) != 0).then_some(entry_id(before))
    }

    /// The leaf pointer of word `w`. Its chunk's table exists: it was created before any of
    /// the chunk's words became mixed.
    #[inline]
    fn slot(&self, w: u64) -> &ArcSwapOption<Leaf> {
        let chunk = &self.chunks[(w >> CHUNK_SHIFT) as usize];
        let leaves = chunk.leaves.get().expect("a mixed word's chunk has leaves");
        &leaves[w as usize % CHUNK_WORDS]
    }

    /// Allocates the lowest free PASID in `[lo, hi]` to `owner` with `data`, or `None` if all
    /// are taken. Also says whether the PASID's word may be new to the set: `false` only when
    /// the word was already tagged with it, which it is only while the set owns PASIDs there.
    pub(crate) fn alloc(
        &self,
        owner: Owner,
        lo: Pasid,
        hi: Pasid,
        data: u64,
    ) -> Option<(Pasid, bool)> {
        debug_assert!(owner.id != 0 && owner.id <= MAX_SET_ID);
        if data != 0 || owner.tag == NO_TAG {
            return self.alloc_search(owner, lo, hi, data, u64::from(lo));
        }
        match self.claim_first(owner.tag, lo, hi) {
            FirstStep::Done(i) => Some((i as Pasid, false)),
            FirstStep::Claimed {
                i,
                how,
                filled,
                hint,
            } => {
                self.taken.first_claim_done(hint, i, filled);
                Some((i as Pasid, how != Claim::Claimed))
            }
            FirstStep::Search { hint, stale, why } => {
                self.alloc_on(owner, lo, hi, hint, stale, why)
            }
        }
    }

    /// The first step of an allocation without data for the set holding `tag` (never
    /// [`NO_TAG`]) in `[lo, hi]`, for the set's allocation to inline: a claim in the word the
    /// search starts at (see [`Bitmap::claim_first`]). A [`FirstStep::Claimed`] is finished by
    /// [`first_claim_done`](Self::first_claim_done), a [`FirstStep::Search`] by
    /// [`alloc_on`](Self::alloc_on).
    #[inline(always)]
    pub(crate) fn claim_first(&self, tag: u32, lo: Pasid, hi: Pasid) -> FirstStep {
        self.taken.claim_first(u64::from(lo), u64::from(hi), tag)
    }

    /// Finishes a [`FirstStep::Claimed`]: the bitmap's guides.
    pub(crate) fn first_claim_done(&self, hint: u64, i: u64, filled: bool) {
        self.taken.first_claim_done(hint, i, filled);
    }

    /// Finishes an allocation without data after a [`FirstStep::Search`] (given its `hint`,
    /// `stale` and `why`); answers as [`alloc`](Self::alloc). Inlined into its callers,
    /// themselves out of line.
    #[inline(always)]
    pub(crate) fn alloc_on(
        &self,
        owner: Owner,
        lo: Pasid,
        hi: Pasid,
        hint: u64,
        stale: u64,
        why: NotClaimed,
    ) -> Option<(Pasid, bool)> {
        let found = self.taken.claim_lowest_on(
            u64::from(lo),
            u64::from(hi),
            owner.tag,
            hint,
            stale,
            why,
        )?;
        match found {
            (i, Claim::Claimed) => Some((i as Pasid, false)),
            (i, Claim::Opened) => Some((i as Pasid, true)),
            (i, how) => self.alloc_found(owner, lo, hi, i, how),
        }
    }

    /// [`alloc`](Self::alloc) (without data) after its search found bit `i` in a mixed word,
    /// claimed (`how` = [`Claim::Mixed`]), or free in another set's word.
    #[inline(never)]
    fn alloc_found(
        &self,
        owner: Owner,
        lo: Pasid,
        hi: Pasid,
        i: u64,
        how: Claim,
    ) -> Option<(Pasid, bool)> {
        if how == Claim::Mixed {
            self.publish(i as Pasid, owner, 0);
            return Some((i as Pasid, true));
        }
        if self.claim_slow(i as Pasid, owner, 0) {
            return Some((i as Pasid, true));
        }
        // Someone took `i` first; it is taken now, so the search moves past it.
        self.alloc_search(owner, lo, hi, 0, i)
    }

    /// The search of [`alloc`](Self::alloc) from `from` (every PASID in `[lo, from)` seen
    /// taken), claiming through the slow path whatever the first step does not take.
    #[inline(never)]
    fn alloc_search(
        &self,
        owner: Owner,
        lo: Pasid,
        hi: Pasid,
        data: u64,
        mut from: u64,
    ) -> Option<(Pasid, bool)> {
        let (lo, hi) = (u64::from(lo), u64::from(hi));
        loop {
            let i = if data == 0 && owner.tag != NO_TAG {
                match self.taken.claim_lowest(from, hi, owner.tag)? {
                    (i, Claim::Claimed) => return Some((i as Pasid, false)),
                    (i, Claim::Opened) => return Some((i as Pasid, true)),
                    (i, Claim::Mixed) => {
                        self.publish(i as Pasid, owner, 0);
                        return Some((i as Pasid, true));
                    }
                    (i, _) => i,
                }
            } else {
                self.taken.lowest_clear_from(lo, from, hi)?
            };
            if self.claim_slow(i as Pasid, owner, data) {
                return Some((i as Pasid, true));
            }
            // Someone took `i` first; it is taken now, so the search moves past it.
            from = i;
        }
    }

    /// Allocates exactly `pasid` to `owner` with `data`; `false` if it is taken.
    pub(crate) fn alloc_exact(&self, pasid: Pasid, owner: Owner, data: u64) -> bool {
        self.claim_slow(pasid, owner, data)
    }

    /// Claims `pasid` for `owner`, making its word mixed first if it belongs to another set,
    /// `data` is not zero or the set holds no tag; `false` if it is taken.
    fn claim_slow(&self, pasid: Pasid, owner: Owner, data: u64) -> bool {
        let w = locate(pasid).0;
        // With data or without a tag, only a mixed word has room for the owner.
        let tag = if data == 0 && owner.tag != NO_TAG {
            owner.tag
        } else {
            TAG_MIXED
        };
        loop {
            match self.taken.claim_as(u64::from(pasid), tag) {
                Claim::Claimed | Claim::Opened => return true,
                Claim::Mixed => {
                    self.publish(pasid, owner, data);
                    return true;
                }
                Claim::Taken => return false,
                // The word may collapse again before our claim; then we come back here.
                Claim::Foreign => self.make_mixed(w),
            }
        }
    }

    /// Records `owner` (and `data`) as the owner of `pasid`, whose bit it has just set in a
    /// mixed word; then, with no data, lets the word collapse if it is all the set's.
    #[inline]
    fn publish(&self, pasid: Pasid, owner: Owner, data: u64) {
        let (w, b) = locate(pasid);
        // Our bit is taken and our slot still 0: the word keeps this leaf.
        let slot = self.slot(w);
        let guard = slot.load();
        let leaf = guard.as_ref().expect("a mixed word has a leaf");
        if data != 0 {
            leaf.data[b].store(data, Ordering::Relaxed);
        }
        // Release: a reader that sees the owner also sees the data.
        leaf.owners[b].store(owner.id, Ordering::Release);
        if data == 0 {
            self.try_collapse(w, owner, slot, &guard);
        }
    }

    /// Makes word `w` mixed, its leaf recording the owner of every PASID taken in it, unless
    /// it is mixed already.
    fn make_mixed(&self, w: u64) {
        let chunk = &self.chunks[(w >> CHUNK_SHIFT) as usize];
        let _guard = lock(&chunk.lock);
        let leaves = chunk
            .leaves
            .get_or_init(|| (0..CHUNK_WORDS).map(|_| ArcSwapOption::empty()).collect());
        let slot = &leaves[w as usize % CHUNK_WORDS];
        loop {
            // Only this function, under this lock, makes a word mixed.
            let v = self.taken.word(w);
            let owner = match tag_of(v) {
                TAG_MIXED => return,
                TAG_NONE => 0,
                // The tag's set, unless the word or the tag changed meanwhile: read again.
                _ => match self.resolve(w, v) {
                    Some(id) => id,
                    None => continue,
                },
            };
            let leaf = Leaf::new();
            for b in Bits(slots_of(v) & !self.taken.fixed(w)) {
                leaf.owners[b as usize].store(owner, Ordering::Relaxed);
            }
            slot.store(Some(Arc::new(leaf)));
            // Exactly the value the leaf was built from, or build again: the word's owner may
            // have claimed or freed lock-free meanwhile. (Its tag cannot have been lent to
            // another set since `resolve`: that waits for this lock.)
            if self.taken.retag(w, v, pack(TAG_MIXED, slots_of(v))) {
                return;
            }
        }
    }

    /// Gives word `w` back to `owner` as its single owner, and drops its leaf (`leaf`, loaded
    /// from `slot`), if every PASID taken in it belongs to the set with no data and no
    /// teardown pending, and the set holds a tag.
    ///
    /// Only the set's own calls may run this (see the module note), and only while one of
    /// its PASIDs is taken in the word, so that `leaf` is still the word's: a claim or
    /// release of another set in flight has a 0 slot or changes the word, and either stops it.
    fn try_collapse(&self, w: u64, owner: Owner, slot: &ArcSwapOption<Leaf>, leaf: &LeafGuard) {
        if owner.tag == NO_TAG {
            return;
        }
        let v = self.taken.word(w);
        let taken = slots_of(v) & !self.taken.fixed(w);
        if tag_of(v) != TAG_MIXED || taken == 0 {
            return;
        }
        let Some(l) = leaf.as_ref() else {
            return;
        };
        // Owners first: in a word shared by two sets the first or second slot decides.
        let all_mine = Bits(taken)
            .all(|b| l.owners[b as usize].load(Ordering::Acquire) == owner.id)
            && Bits(taken).all(|b| l.data[b as usize].load(Ordering::Acquire) == 0);
        if all_mine && self.taken.retag(w, v, pack(owner.tag, slots_of(v))) {
            slot.compare_and_swap(leaf, None);
        }
    }

    /// Replaces the private data of `pasid`, which `owner` owns.
    pub(crate) fn set_data(&self, pasid: Pasid, owner: Owner, data: u64) {
        let (w, b) = locate(pasid);
        if tag_of(self.taken.word(w)) != TAG_MIXED {
            if data == 0 {
                // A single-owner word carries no data.
                return;
            }
            self.make_mixed(w);
        }
        // Our bit is taken: the word stays mixed with this leaf.
        let slot = self.slot(w);
        let guard = slot.load();
        let leaf = guard.as_ref().expect("a mixed word has a leaf");
        debug_assert_eq!(leaf.owners[b].load(Ordering::Relaxed), owner.id);
        leaf.data[b].store(data, Ordering::Release);
        if data == 0 {
            self.try_collapse(w, owner, slot, &guard);
        }
    }

    /// Whether `owner` owns `pasid` (not 0, inside the space, so never a fixed bit): one load
    /// of its word unless the word is mixed. Exact when the set's own calls are not running
    /// (only they change what it owns); lock-free.
    #[inline(always)]
    pub(crate) fn is_owner(&self, pasid: Pasid, owner: Owner) -> bool {
        let (w, b) = locate(pasid);
        debug_assert!(pasid != 0 && self.taken.fixed(w) & (1 << b) == 0);
        let v = self.taken.word(w);
        if tag_of(v) == owner.tag {
            return slots_of(v) & (1 << b) != 0;
        }
        tag_of(v) == TAG_MIXED && self.get(pasid).0 == SlotState::Owned(owner.id)
    }

    /// The state and data of `pasid`, read without locks.
    pub(crate) fn get(&self, pasid: Pasid) -> (SlotState, u64) {
        let (w, b) = locate(pasid);
        loop {
            let v = self.taken.word(w);
            match tag_of(v) {
                TAG_NONE => return (SlotState::Free, 0),
                TAG_MIXED => {
                    let leaf = self.slot(w).load();
                    // No leaf: the word collapsed since we read it; read it again.
                    let Some(leaf) = leaf.as_ref() else {
                        continue;
                    };
                    loop {
                        let before = leaf.owners[b].load(Ordering::Acquire);
                        let data = leaf.data[b].load(Ordering::Acquire);
                        // The data belongs to the owner we report only if the slot did not
                        // change while we read it; set ids are never reused.
                        if leaf.owners[b].load(Ordering::Acquire) == before {
                            let data = if before == 0 { 0 } else { data };
                            return (SlotState::decode(before), data);
                        }
                    }
                }
                _ if slots_of(v) & (1 << b) == 0 => return (SlotState::Free, 0),
                // The tag's set; if the word or the tag changed meanwhile, read again.
                _ => {
                    if let Some(id) = self.resolve(w, v) {
                        return (SlotState::Owned(id), 0);
                    }
                }
            }
        }
    }

    /// Frees `pasid`, owned by `owner`; returns whether the set still owns PASIDs in its
    /// word.
    #[inline]
    pub(crate) fn free_one(&self, pasid: Pasid, owner: Owner) -> bool {
        let (w, b) = locate(pasid);
        self.free(w, 1 << b, owner)
    }

    /// Frees the PASIDs `mask` of word `w`, all owned by `owner`; returns whether the set
    /// still owns PASIDs in the word.
    #[inline]
    pub(crate) fn free(&self, w: u64, mask: u64, owner: Owner) -> bool {
        match self.taken.release_as(w, mask, owner.tag) {
            Ok(kept) => kept,
            Err(Refused::OtherTag) => self.free_mixed(w, mask, owner),
            Err(Refused::NotTaken) => {
                report_owner_mismatch(w, mask.trailing_zeros(), owner.id, 0);
                self.owned_in(w, owner) != 0
            }
        }
    }

    /// Frees `pasid` if it is taken in a word tagged `tag` (so the set holding `tag` owns
    /// it: the release's compare-and-swap is the ownership check), except for the upkeep of
    /// the bitmap's guides, which the caller owes through [`released`](Self::released).
    /// Returns whether the set still owns PASIDs in its word and whether the release
    /// un-filled the word, or `None`, changing nothing, if the word carries another tag
    /// (mixed, another set's, nobody's; always, for [`NO_TAG`]) or the bit is clear:
    /// [`free_owned`](Self::free_owned) decides then.
    #[inline(always)]
    pub(crate) fn release_tagged(&self, pasid: Pasid, tag: u32) -> Option<(bool, bool)> {
        let (w, b) = locate(pasid);
        self.taken.release_first(w, 1 << b, tag).ok()
    }

    /// The guides' upkeep owed after [`release_tagged`](Self::release_tagged) freed `pasid`
    /// and `unfilled` its word or not (out of line when it did). Returns `true`, so that a
    /// caller answering `true` next can make the out-of-line call a tail call.
    #[inline(always)]
    pub(crate) fn released(&self, pasid: Pasid, unfilled: bool) -> bool {
        let w = locate(pasid).0;
        if unfilled {
            return self.taken.unfilled(w);
        }
        self.taken.released(w, false);
        true
    }

    /// Frees `pasid` if `owner` owns it (`None`, changing nothing, if not); returns whether
    /// the set still owns PASIDs in its word. In a word tagged with the set the ownership
    /// check is the release's own compare-and-swap.
    #[inline]
    pub(crate) fn free_owned(&self, pasid: Pasid, owner: Owner) -> Option<bool> {
        let (w, b) = locate(pasid);
        match self.taken.release_as(w, 1 << b, owner.tag) {
            Ok(kept) => Some(kept),
            Err(Refused::NotTaken) => None,
            // Only the set's own calls change what it owns: the check holds for the release.
            Err(Refused::OtherTag) => (self.get(pasid).0 == SlotState::Owned(owner.id))
                .then(|| self.free_mixed(w, 1 << b, owner)),
        }
    }

    /// The PASIDs of word `w` that `owner` owns, as a mask of the word's 56 bits. Exact when
    /// the set's own calls are not running (only they change what it owns); lock-free.
    pub(crate) fn owned_in(&self, w: u64, owner: Owner) -> u64 {
        loop {
            let v = self.taken.word(w);
            match tag_of(v) {
                TAG_MIXED => {
                    let leaf = self.slot(w).load();
                    // No leaf: the word collapsed or emptied since we read it; read it again.
                    let Some(l) = leaf.as_ref() else {
                        continue;
                    };
                    return Bits(slots_of(v))
                        .filter(|&b| l.owners[b as usize].load(Ordering::Acquire) == owner.id)
                        .fold(0, |mask, b| mask | 1 << b);
                }
                tag if tag == owner.tag => return slots_of(v) & !self.taken.fixed(w),
                _ => return 0,
            }
        }
    }

    /// [`free`](Self::free) in a word that is not tagged with the set.
    #[inline(never)]
    fn free_mixed(&self, w: u64, mask: u64, owner: Owner) -> bool {
        // Not tagged with the set though it holds bits in it: mixed, and it stays so until
        // we act.
        let slot = self.slot(w);
        let leaf = slot.load();
        let emptied = {
            let l = leaf.as_ref().expect("a mixed word has a leaf");
            for b in Bits(mask) {
                let owned = l.owners[b as usize].compare_exchange(
                    owner.id,
                    0,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if let Err(found) = owned {
                    report_owner_mismatch(w, b, owner.id, found);
                }
                l.data[b as usize].store(0, Ordering::Relaxed);
            }
            self.taken.release_mixed(w, mask)
        };
        // A word left with other PASIDs stays mixed: with none of ours left in it, the leaf
        // we hold may be replaced at any time, and its owners collapse it on their claims.
        if emptied {
            slot.compare_and_swap(&leaf, None);
            return false;
        }
        // Any PASID the set still owns here keeps the word mixed with this leaf.
        self.owned_in(w, owner) != 0
    }

    /// Marks `pasid`, owned by `owner`, as being torn down by `pending` subscribers.
    pub(crate) fn begin_teardown(&self, pasid: Pasid, owner: Owner, pending: u32) {
        debug_assert!(pending > 0 && pending < FREEING);
        let (w, b) = locate(pasid);
        if tag_of(self.taken.word(w)) != TAG_MIXED {
            self.make_mixed(w);
        }
        // Our bit is taken: the word stays mixed with this leaf.
        let leaf = self.slot(w).load();
        let leaf = leaf.as_ref().expect("a mixed word has a leaf");
        let owned = leaf.owners[b].compare_exchange(
            owner.id,
            FREEING | pending,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if let Err(found) = owned {
            report_owner_mismatch(w, b as u32, owner.id, found);
        }
    }

    /// One subscriber finished tearing `pasid` down. The last one frees the number and
    /// returns `true`.
    pub(crate) fn finish_one(&self, pasid: Pasid) -> bool {
        let (w, b) = locate(pasid);
        // A freeing slot keeps its word mixed with this leaf.
        let slot = self.slot(w);
        let leaf = slot.load();
        let emptied = {
            let l = leaf.as_ref().expect("a freeing PASID sits in a mixed word");
            let prev = l.owners[b].fetch_sub(1, Ordering::AcqRel);
            debug_assert!(
                prev & FREEING != 0 && prev & !FREEING >= 1,
                "slot {prev:#x}"
            );
            if prev != FREEING | 1 {
                return false;
            }
            l.data[b].store(0, Ordering::Relaxed);
            l.owners[b].store(0, Ordering::Release);
            self.taken.release_mixed(w, 1 << b)
        };
        if emptied {
            slot.compare_and_swap(&leaf, None);
        }
        true
    }

    /// Bytes of memory the table occupies now, bitmap included.
    pub(crate) fn memory_bytes(&self) -> usize {
        let mut bytes = std::mem::size_of::<Self>()
            + self.taken.memory_bytes()
            + self.tags.memory_bytes()
            + self.chunks.len() * std::mem::size_of::<Chunk>();
        for leaves in self.chunks.iter().filter_map(|c| c.leaves.get()) {
            bytes += leaves.len() * std::mem::size_of::<ArcSwapOption<Leaf>>();
            bytes +=
                leaves.iter().filter(|l| l.load().is_some()).count() * std::mem::size_of::<Leaf>();
        }
        bytes
    }

    /// The current value of level-0 word `w` of the bitmap.
    #[cfg(all(test, loom))]
    pub(crate) fn taken_word(&self, w: u64) -> u64 {
        self.taken.word(w)
    }

    /// Whether the bitmap's summaries agree with its words (see [`Bitmap::summaries_exact`]).
    #[cfg(all(test, loom))]
    pub(crate) fn summaries_exact(&self) -> bool {
        self.taken.summaries_exact()
    }

    /// How many words are mixed now (each holding a leaf).
    #[cfg(test)]
    pub(crate) fn mixed_words(&self) -> usize {
        self.chunks
            .iter()
            .filter_map(|c| c.leaves.get())
            .map(|leaves| leaves.iter().filter(|l| l.load().is_some()).count())
            .sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
