//! The word tags the owner table lends to sets, and what each tag stands for right now.
//!
//! A level-0 word names its single owner in 8 bits (see the `bitmap` module), too few for a
//! set id, which is never reused. So the table lends each new set one of the 254 tags, and
//! takes it back when the set is retired, by which time no word carries it. A set created
//! while all 254 are lent gets [`NO_TAG`]: it owns PASIDs only in mixed words, whose leaves
//! record set ids, which is correct at any number of sets and costs a leaf per word it uses
//! (the fast paths are the tagged sets').
//!
//! Readers turn a word's tag into a set id through [`Tags::entry`]: the entry holds the id
//! beside a sequence number that every change bumps, so a reader that reads the entry, then
//! the word again unchanged, then the same entry again, knows that the tag meant that set
//! while the word held that value (see `OwnerTable::resolve`). Whoever makes a word mixed
//! reads the tag under the word's chunk lock, and a returned tag is lent again only after
//! every chunk lock has been taken once ([`crate::owners::OwnerTable::retire_tag`]), so that a
//! word cannot come back to the same value under a new owner before that compare-and-swap.
//!
//! Lending and returning take a lock of their own; they happen only when a set is created or
//! retired.

use crate::bitmap::MAX_TAG;
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// The tag of a set that holds none: no word carries it (tags are at most [`MAX_TAG`]).
pub(crate) const NO_TAG: u32 = MAX_TAG + 2;

/// Who a table call acts for: the set's id (what leaves record and lookups report) and the
/// tag its single-owner words carry ([`NO_TAG`] if it holds none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) id: u32,
    pub(crate) tag: u32,
}

/// The set id in an entry (0: the tag is not lent).
#[inline]
pub(crate) fn entry_id(entry: u64) -> u32 {
    entry as u32
}

/// The largest tag lent: [`MAX_TAG`], or 3 in the `loom` models, so that each of their
/// executions creates four atomics here rather than 255.
const LAST_TAG: u32 = if cfg!(loom) { 3 } else { MAX_TAG };

/// Tags `1..=MAX_TAG` and the set each is lent to.
pub(crate) struct Tags {
    /// Per tag: `sequence << 32 | set id`, the id 0 while the tag is not lent.
    entries: Box<[AtomicU64]>,
    /// Tags free to lend, bit `t` for tag `t`.
    free: Mutex<[u64; 4]>,
}

impl Tags {
    /// Every tag free.
    pub(crate) fn new() -> Self {
        let mut free = [0u64; 4];
        for t in 1..=LAST_TAG {
            free[t as usize / 64] |= 1 << (t % 64);
        }
        Tags {
            entries: (0..=LAST_TAG).map(|_| AtomicU64::new(0)).collect(),
            free: Mutex::new(free),
        }
    }

    /// The current entry of `tag` (1 to [`MAX_TAG`]).
    #[inline]
    pub(crate) fn entry(&self, tag: u32) -> u64 {
        self.entries[tag as usize].load(Ordering::SeqCst)
    }

    /// Lends the lowest free tag to set `id` and returns it, or [`NO_TAG`] if all are lent.
    /// The entry names `id` before the tag is returned, so before any word carries it.
    pub(crate) fn lend(&self, id: u32) -> u32 {
        debug_assert!(id != 0);
        let mut free = lock(&self.free);
        let Some(i) = free.iter().position(|&bits| bits != 0) else {
            return NO_TAG;
        };
        let tag = i as u32 * 64 + free[i].trailing_zeros();
        free[i] &= free[i] - 1;
        self.set_entry(tag, id);
        tag
    }

    /// Marks `tag`, which no word carries any more, as lent to nobody. It is not lent again
    /// until [`give_back`](Self::give_back).
    pub(crate) fn unlend(&self, tag: u32) {
        self.set_entry(tag, 0);
    }

    /// Makes `tag`, unlent, free to lend again.
    pub(crate) fn give_back(&self, tag: u32) {
        debug_assert_eq!(entry_id(self.entry(tag)), 0);
        lock(&self.free)[tag as usize / 64] |= 1 << (tag % 64);
    }

    /// Writes `id` into `tag`'s entry with the next sequence number (only the lender and
    /// the returner write entries, and both hold the lock or own the tag).
    fn set_entry(&self, tag: u32, id: u32) {
        let entry = &self.entries[tag as usize];
        let sequence = (entry.load(Ordering::SeqCst) >> 32).wrapping_add(1);
        entry.store(sequence << 32 | u64::from(id), Ordering::SeqCst);
    }

    /// Bytes the tags occupy.
    pub(crate) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.entries.len() * std::mem::size_of::<AtomicU64>()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lent_lowest_first_and_come_back() {
        let tags = Tags::new();
        let lent: Vec<u32> = (1..=MAX_TAG).map(|id| tags.lend(id + 1000)).collect();
        assert_eq!(lent, (1..=MAX_TAG).collect::<Vec<_>>());
        assert_eq!(tags.lend(5000), NO_TAG, "all 254 lent");
        assert_eq!(entry_id(tags.entry(7)), 1007);
        let before = tags.entry(7);
        tags.unlend(7);
        assert_eq!(entry_id(tags.entry(7)), 0);
        assert_eq!(tags.lend(5001), NO_TAG, "unlent is not yet free");
        tags.give_back(7);
        assert_eq!(tags.lend(5002), 7);
        let after = tags.entry(7);
        assert_eq!(entry_id(after), 5002);
        assert_eq!(
            after >> 32,
            (before >> 32) + 2,
            "every change bumps the sequence"
        );
    }
}
