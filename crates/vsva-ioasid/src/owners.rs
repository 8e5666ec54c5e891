//! Who owns each PASID, and its private data: the taken bitmap with its word tags, plus
//! per-PASID leaves for the few words that need them, all read without locks.
//!
//! Most words of the space are taken by a single set: the bitmap's level-0 word then carries
//! that set's id beside its bits (see the `bitmap` module), and allocation, free and `find`
//! touch that one word and nothing else. A word needs a *leaf* — 32 owner slots and 32
//! private-data slots — only while it is mixed: PASIDs of several sets, private data, or a
//! PASID being torn down. A leaf slot is one `AtomicU32`:
//!
//! | value | meaning |
//! |---|---|
//! | `0` | free (or claimed in the bitmap and not yet recorded) |
//! | `1 ..= 2^31 - 1` | allocated to the set with that id |
//! | `FREEING \| n` | freed; `n` teardown subscribers have not finished |
//!
//! Every change to a mixed word, and every change of a word's tag to or from mixed, is made
//! under the lock of the word's chunk (32 768 PASIDs); the lock-free paths never act on a
//! mixed word. A word becomes mixed by building its leaf from one exact value of the word
//! and then swapping the tag in with a compare-and-swap against that value, so the leaf
//! covers every PASID taken when the tag changes. It collapses back to one owner (or none)
//! as soon as every taken PASID belongs to one set with no data and no teardown pending,
//! and its leaf is given back. Leaves are shared through `ArcSwapOption`, so a `find` that
//! raced a collapse still reads a leaf that was exact when it was replaced. The table of
//! leaf pointers of a chunk (8 bytes per 32 PASIDs) is created the first time a word of the
//! chunk becomes mixed and kept for the life of the space.

use std::sync::OnceLock;

use arc_swap::ArcSwapOption;

use crate::bitmap::{pack, slots_of, tag_of, Bitmap, Bits, Claim, TAG_MIXED, TAG_NONE, WORD_SLOTS};
use crate::ids::Pasid;
use crate::sync::{lock, Arc, AtomicU32, AtomicU64, Mutex, Ordering};

const WORD_SHIFT: u32 = 5;
const SLOTS: usize = WORD_SLOTS as usize;
const CHUNK_SHIFT: u32 = 10;
const CHUNK_WORDS: usize = 1 << CHUNK_SHIFT;

/// Slot flag: the PASID is being torn down; the low bits count unfinished subscribers.
pub(crate) const FREEING: u32 = 1 << 31;
/// Largest set id a slot or a word tag can hold.
pub(crate) const MAX_SET_ID: u32 = FREEING - 1;

/// The owners and data of the 32 PASIDs of one mixed word.
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

/// The leaves of one chunk of words, and the lock that serializes its mixed words.
struct Chunk {
    lock: Mutex<()>,
    leaves: OnceLock<Box<[ArcSwapOption<Leaf>]>>,
}

/// The owner table for `[0, len)`.
pub(crate) struct OwnerTable {
    taken: Bitmap,
    chunks: Box<[Chunk]>,
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

/// Word index and bit of a PASID.
#[inline]
fn locate(pasid: Pasid) -> (u64, usize) {
    (u64::from(pasid >> WORD_SHIFT), (pasid as usize) % SLOTS)
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
        }
    }

    #[inline]
    fn chunk(&self, w: u64) -> (&Chunk, usize) {
        (
            &self.chunks[(w >> CHUNK_SHIFT) as usize],
            w as usize % CHUNK_WORDS,
        )
    }

    fn leaves(chunk: &Chunk) -> &[ArcSwapOption<Leaf>] {
        chunk
            .leaves
            .get_or_init(|| (0..CHUNK_WORDS).map(|_| ArcSwapOption::empty()).collect())
    }

    /// Allocates the lowest free PASID in `[lo, hi]` to `set` with `data`, or `None` if all
    /// are taken.
    #[inline]
    pub(crate) fn alloc(&self, set: u32, lo: Pasid, hi: Pasid, data: u64) -> Option<Pasid> {
        debug_assert!(set != TAG_NONE && set <= MAX_SET_ID);
        let (lo, hi) = (u64::from(lo), u64::from(hi));
        let mut from = lo;
        loop {
            let i = if data == 0 {
                match self.taken.claim_lowest(from, hi, set)? {
                    Ok(i) => return Some(i as Pasid),
                    Err(i) => i,
                }
            } else {
                self.taken.lowest_clear_from(lo, from, hi)?
            };
            if self.claim_slow(i as Pasid, set, data) {
                return Some(i as Pasid);
            }
            // Someone took `i` first; it is taken now, so the search moves past it.
            from = i;
        }
    }

    /// Allocates exactly `pasid` to `set` with `data`; `false` if it is taken.
    pub(crate) fn alloc_exact(&self, pasid: Pasid, set: u32, data: u64) -> bool {
        if data == 0 {
            match self.taken.claim_as(u64::from(pasid), set) {
                Claim::Claimed => return true,
                Claim::Taken => return false,
                Claim::Foreign => {}
            }
        }
        self.claim_slow(pasid, set, data)
    }

    /// Claims `pasid` for `set` under its chunk's lock, making its word mixed if it belongs
    /// to another set or `data` is not zero; `false` if it is taken.
    fn claim_slow(&self, pasid: Pasid, set: u32, data: u64) -> bool {
        let (w, b) = locate(pasid);
        let (chunk, index) = self.chunk(w);
        let _guard = lock(&chunk.lock);
        if data == 0 && tag_of(self.taken.word(w)) != TAG_MIXED {
            match self.taken.claim_as(u64::from(pasid), set) {
                Claim::Claimed => return true,
                Claim::Taken => return false,
                Claim::Foreign => {}
            }
        }
        let slot = &Self::leaves(chunk)[index];
        let leaf = self.make_mixed(w, slot);
        // Nobody changes a mixed word without this lock, so it is still mixed.
        if !self.taken.claim_mixed(u64::from(pasid)) {
            return false;
        }
        leaf.data[b].store(data, Ordering::Relaxed);
        // Release: a reader that sees the owner also sees the data.
        leaf.owners[b].store(set, Ordering::Release);
        if data == 0 {
            self.try_collapse(w, slot);
        }
        true
    }

    /// Makes word `w` mixed, its leaf recording the owner of every PASID taken in it, and
    /// returns the leaf. The caller holds the word's chunk lock.
    fn make_mixed(&self, w: u64, slot: &ArcSwapOption<Leaf>) -> Arc<Leaf> {
        loop {
            let v = self.taken.word(w);
            if tag_of(v) == TAG_MIXED {
                return slot.load_full().expect("a mixed word has a leaf");
            }
            let leaf = Arc::new(Leaf::new());
            for b in Bits(u64::from(slots_of(v) & !self.taken.fixed(w))) {
                leaf.owners[b as usize].store(tag_of(v), Ordering::Relaxed);
            }
            slot.store(Some(leaf.clone()));
            // Exactly the value the leaf was built from, or build again: the word's owner may
            // have claimed or freed lock-free meanwhile.
            if self.taken.retag(w, v, pack(TAG_MIXED, slots_of(v))) {
                return leaf;
            }
        }
    }

    /// Gives word `w` back its single owner (or none) and drops its leaf if every PASID taken
    /// in it belongs to one set with no data and no teardown pending. The caller holds the
    /// word's chunk lock.
    fn try_collapse(&self, w: u64, slot: &ArcSwapOption<Leaf>) {
        let v = self.taken.word(w);
        if tag_of(v) != TAG_MIXED {
            return;
        }
        let Some(leaf) = slot.load_full() else {
            return;
        };
        let mut owner = TAG_NONE;
        for b in Bits(u64::from(slots_of(v) & !self.taken.fixed(w))) {
            let (o, data) = (
                leaf.owners[b as usize].load(Ordering::Acquire),
                leaf.data[b as usize].load(Ordering::Acquire),
            );
            if o == 0 || o & FREEING != 0 || data != 0 || (owner != TAG_NONE && o != owner) {
                return;
            }
            owner = o;
        }
        if self.taken.retag(w, v, pack(owner, slots_of(v))) {
            slot.store(None);
        }
    }

    /// Replaces the private data of `pasid`, which `set` owns.
    pub(crate) fn set_data(&self, pasid: Pasid, set: u32, data: u64) {
        let (w, b) = locate(pasid);
        let (chunk, index) = self.chunk(w);
        let _guard = lock(&chunk.lock);
        if data == 0 && tag_of(self.taken.word(w)) == set {
            return;
        }
        let slot = &Self::leaves(chunk)[index];
        let leaf = self.make_mixed(w, slot);
        debug_assert_eq!(leaf.owners[b].load(Ordering::Relaxed), set);
        leaf.data[b].store(data, Ordering::Release);
        if data == 0 {
            self.try_collapse(w, slot);
        }
    }

    /// The state and data of `pasid`, read without locks.
    pub(crate) fn get(&self, pasid: Pasid) -> (SlotState, u64) {
        let (w, b) = locate(pasid);
        loop {
            let v = self.taken.word(w);
            match tag_of(v) {
                TAG_NONE => return (SlotState::Free, 0),
                TAG_MIXED => {
                    let (chunk, index) = self.chunk(w);
                    let guard = chunk.leaves.get().map(|leaves| leaves[index].load());
                    // No leaf: the word collapsed since we read it; read it again.
                    let Some(leaf) = guard.as_ref().and_then(|g| g.as_ref()) else {
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
                owner if slots_of(v) & (1 << b) != 0 => return (SlotState::Owned(owner), 0),
                _ => return (SlotState::Free, 0),
            }
        }
    }

    /// Frees `pasid`, owned by `set`.
    #[inline]
    pub(crate) fn free_one(&self, pasid: Pasid, set: u32) {
        let (w, b) = locate(pasid);
        self.free(w, 1 << b, set);
    }

    /// Frees the PASIDs `mask` of word `w` (`pasid / 32`), all owned by `set`.
    #[inline]
    pub(crate) fn free(&self, w: u64, mask: u32, set: u32) {
        if self.taken.release_as(w, mask, set) {
            return;
        }
        let (chunk, index) = self.chunk(w);
        let _guard = lock(&chunk.lock);
        // The word may have collapsed back to `set` while we waited.
        if self.taken.release_as(w, mask, set) {
            return;
        }
        let slot = &Self::leaves(chunk)[index];
        let leaf = slot.load_full().expect("a mixed word has a leaf");
        for b in Bits(u64::from(mask)) {
            debug_assert_eq!(leaf.owners[b as usize].load(Ordering::Relaxed), set);
            leaf.owners[b as usize].store(0, Ordering::Release);
            leaf.data[b as usize].store(0, Ordering::Relaxed);
        }
        self.taken.release_mixed(w, mask);
        self.try_collapse(w, slot);
    }

    /// Marks `pasid`, owned by `set`, as being torn down by `pending` subscribers.
    pub(crate) fn begin_teardown(&self, pasid: Pasid, set: u32, pending: u32) {
        debug_assert!(pending > 0 && pending < FREEING);
        let (w, b) = locate(pasid);
        let (chunk, index) = self.chunk(w);
        let _guard = lock(&chunk.lock);
        let leaf = self.make_mixed(w, &Self::leaves(chunk)[index]);
        debug_assert_eq!(leaf.owners[b].load(Ordering::Relaxed), set);
        leaf.owners[b].store(FREEING | pending, Ordering::Release);
    }

    /// One subscriber finished tearing `pasid` down. The last one frees the number and
    /// returns `true`.
    pub(crate) fn finish_one(&self, pasid: Pasid) -> bool {
        let (w, b) = locate(pasid);
        let (chunk, index) = self.chunk(w);
        let _guard = lock(&chunk.lock);
        let slot = &Self::leaves(chunk)[index];
        let leaf = slot
            .load_full()
            .expect("a freeing PASID sits in a mixed word");
        let prev = leaf.owners[b].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(
            prev & FREEING != 0 && prev & !FREEING >= 1,
            "slot {prev:#x}"
        );
        if prev != FREEING | 1 {
            return false;
        }
        leaf.owners[b].store(0, Ordering::Release);
        leaf.data[b].store(0, Ordering::Relaxed);
        self.taken.release_mixed(w, 1 << b);
        self.try_collapse(w, slot);
        true
    }

    /// Bytes of memory the table occupies now, bitmap included.
    pub(crate) fn memory_bytes(&self) -> usize {
        let mut bytes = std::mem::size_of::<Self>()
            + self.taken.memory_bytes()
            + self.chunks.len() * std::mem::size_of::<Chunk>();
        for leaves in self.chunks.iter().filter_map(|c| c.leaves.get()) {
            bytes += leaves.len() * std::mem::size_of::<ArcSwapOption<Leaf>>();
            bytes +=
                leaves.iter().filter(|l| l.load().is_some()).count() * std::mem::size_of::<Leaf>();
        }
        bytes
    }

    /// How many words are mixed now (each holding a leaf).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn mixed_words(&self) -> usize {
        self.chunks
            .iter()
            .filter_map(|c| c.leaves.get())
            .map(|leaves| leaves.iter().filter(|l| l.load().is_some()).count())
            .sum()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_mixed_only_while_it_needs_a_leaf() {
        let t = OwnerTable::new(1 << 12);
        assert_eq!(t.alloc(1, 1, 100, 0), Some(1));
        assert_eq!(t.mixed_words(), 0);
        // Another set in the same word: mixed, both owners reported.
        assert_eq!(t.alloc(2, 1, 100, 0), Some(2));
        assert_eq!(t.mixed_words(), 1);
        assert_eq!(t.get(1), (SlotState::Owned(1), 0));
        assert_eq!(t.get(2), (SlotState::Owned(2), 0));
        assert_eq!(t.get(3), (SlotState::Free, 0));
        // Set 2 leaves: single owner again, leaf given back.
        t.free(0, 1 << 2, 2);
        assert_eq!(t.mixed_words(), 0);
        assert_eq!(tag_of(t.taken.word(0)), 1);
        // Data and teardown need a leaf; finishing them gives it back.
        t.set_data(1, 1, 9);
        assert_eq!((t.get(1), t.mixed_words()), ((SlotState::Owned(1), 9), 1));
        t.set_data(1, 1, 0);
        assert_eq!(t.mixed_words(), 0);
        t.begin_teardown(1, 1, 2);
        assert_eq!(t.get(1), (SlotState::Freeing(2), 0));
        assert!(!t.finish_one(1));
        assert!(t.finish_one(1));
        assert_eq!((t.get(1), t.mixed_words()), ((SlotState::Free, 0), 0));
        assert_eq!(t.taken.word(0), pack(TAG_NONE, t.taken.fixed(0)));
        // Exact claims (a delegated backend) follow the same rules.
        assert!(t.alloc_exact(40, 3, 0) && !t.alloc_exact(40, 4, 0));
        assert!(t.alloc_exact(41, 4, 0));
        assert_eq!(
            (t.get(40).0, t.get(41).0),
            (SlotState::Owned(3), SlotState::Owned(4))
        );
    }
}
