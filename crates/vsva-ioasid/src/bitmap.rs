//! A lock-free hierarchical bitmap: the "is this PASID taken" state of the whole space.
//!
//! Level 0 holds one bit per PASID (set = allocated or still being torn down). Each higher
//! level holds one bit per word of the level below, set when that word is full, so the lowest
//! free bit at or above any index is found in a handful of loads whatever the fill: for a
//! 2^20 space the levels have 16 384, 256, 4 and 1 words (about 130 KiB in all).
//!
//! Claiming a bit is one `fetch_or`, releasing one `fetch_and`. The summary levels are
//! maintained without locks by the thread whose update made a word full or not full: it
//! writes the summary bit and then re-reads the word, and writes again if a concurrent update
//! changed the answer in between. Whoever writes a summary bit last has therefore seen the
//! word agree with it, so once the updates touching a word have returned, its summary bit is
//! exact (the `loom` tests check this). While updates are in flight a summary may lag by one
//! step: a search can then skip a word whose bit is just being released, and it never returns
//! a bit it did not claim. [`Bitmap::claim_lowest`] re-checks level 0 itself before it reports
//! that a range has no free bit, so a lagging summary never causes a false "full".

use crate::sync::{AtomicU64, Ordering};

const WORD_BITS: u64 = 64;
const FULL: u64 = u64::MAX;

/// One level of the hierarchy.
struct Level {
    words: Box<[AtomicU64]>,
}

/// The hierarchical bitmap over `[0, len)`.
pub(crate) struct Bitmap {
    /// `levels[0]` is one bit per index; `levels[k]` has one bit per word of `levels[k - 1]`.
    levels: Box<[Level]>,
    len: u64,
    /// A level-0 word index below which every word is full: searches start here. A pure
    /// accelerator, kept conservative as described at [`Bitmap::advance_hint`].
    hint: AtomicU64,
}

/// How many words a search may move the hint forward in one step (the re-check it must do
/// costs one load per word moved over).
const HINT_STEP: u64 = 4;

impl Bitmap {
    /// Creates a bitmap of `len` clear bits (`len >= 1`).
    ///
    /// Bits past `len` in the last word of every level are set once and for all, so a search
    /// never has to compare against the end.
    pub(crate) fn new(len: u64) -> Self {
        Self::with_prefix_set(len, 0)
    }

    /// Creates a bitmap of `len` bits whose first `set` bits are already set, with exact
    /// summaries (the models start from deep fills this way without claiming bit by bit).
    fn with_prefix_set(len: u64, set: u64) -> Self {
        assert!(len >= 1, "bitmap length must be at least 1");
        assert!(set <= len);
        let mut levels = Vec::new();
        let mut bits = len;
        // The bits of the level being built: set below `set` at level 0, and at each level
        // above, set for the words of the level below that are full.
        let mut bit_set: Box<dyn Fn(u64) -> bool> = Box::new(move |i| i < set);
        loop {
            let nwords = bits.div_ceil(WORD_BITS);
            let values: Vec<u64> = (0..nwords)
                .map(|w| {
                    let first = w * WORD_BITS;
                    let valid = (bits - first).min(WORD_BITS);
                    let padding = if valid == WORD_BITS { 0 } else { FULL << valid };
                    (0..valid)
                        .filter(|&b| bit_set(first + b))
                        .fold(padding, |word, b| word | 1 << b)
                })
                .collect();
            let words: Box<[AtomicU64]> = values.iter().map(|&v| AtomicU64::new(v)).collect();
            levels.push(Level { words });
            if nwords == 1 {
                break;
            }
            bit_set = Box::new(move |w| values[w as usize] == FULL);
            bits = nwords;
        }
        Bitmap {
            levels: levels.into_boxed_slice(),
            len,
            hint: AtomicU64::new(0),
        }
    }

    /// A bitmap of `len` bits with the first `set` already set (for the `loom` models).
    #[cfg(loom)]
    pub(crate) fn prefilled(len: u64, set: u64) -> Self {
        Self::with_prefix_set(len, set)
    }

    /// How many levels the bitmap has (level 0 and its summaries).
    #[cfg(loom)]
    pub(crate) fn depth(&self) -> usize {
        self.levels.len()
    }

    /// Whether every summary bit at every level agrees with the word it describes: the
    /// invariant once no update is in flight.
    #[cfg(any(test, loom))]
    pub(crate) fn summaries_exact(&self) -> bool {
        (1..self.levels.len()).all(|level| {
            self.levels[level - 1]
                .words
                .iter()
                .enumerate()
                .all(|(w, word)| {
                    let w = w as u64;
                    let summary = self.levels[level].words[(w / WORD_BITS) as usize]
                        .load(Ordering::SeqCst)
                        & (1 << (w % WORD_BITS))
                        != 0;
                    (word.load(Ordering::SeqCst) == FULL) == summary
                })
        })
    }

    /// Claims the lowest clear bit in `[lo, hi]` (`hi < len`), or returns `None` if every bit
    /// in the range is set.
    #[inline]
    pub(crate) fn claim_lowest(&self, lo: u64, hi: u64) -> Option<u64> {
        debug_assert!(hi < self.len);
        let hint = self.hint.load(Ordering::SeqCst);
        let mut from = lo.max(hint * WORD_BITS);
        loop {
            let found = match self.find_clear(0, from, hi) {
                Some(i) => Some(i),
                // The summaries may lag a concurrent release: confirm against level 0 itself,
                // from the caller's own bound, before reporting that the range is full.
                None => self.scan_clear(lo, hi),
            };
            let i = found?;
            if self.claim(i) {
                self.advance_hint(hint, i / WORD_BITS);
                return Some(i);
            }
            // Lost a race for bit `i`; everything below it was seen set, carry on from it.
            from = i;
        }
    }

    /// Moves the hint from `seen` to `word` when a claim landed in `word`, a few words past the
    /// hint, and every word in between is full.
    ///
    /// A release below the hint lowers it ([`Bitmap::lower_hint`]). The race to close is a
    /// release in `[seen, word)` that read the hint before it moved: after moving it, the
    /// search re-reads those words and lowers the hint again if one is no longer full. Either
    /// the releaser's update of the word precedes the re-read (which then sees the clear bit)
    /// or follows it (and the releaser then reads the moved hint). Steps longer than
    /// `HINT_STEP` words are not taken, so the re-check stays a few operations.
    fn advance_hint(&self, seen: u64, word: u64) {
        if word <= seen || word - seen > HINT_STEP {
            return;
        }
        if (seen..word).any(|w| self.levels[0].words[w as usize].load(Ordering::Relaxed) != FULL) {
            return;
        }
        if self
            .hint
            .compare_exchange(seen, word, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        for w in seen..word {
            // A read-modify-write, not a load: it reads the latest value of the word, so if
            // the releaser's update comes first we see it, and if it comes after ours the
            // releaser's own read of the hint is ordered after our move (acquire/release
            // suffices; no reliance on a single total order of plain loads).
            if self.levels[0].words[w as usize].fetch_or(0, Ordering::AcqRel) != FULL {
                self.lower_hint(w);
                return;
            }
        }
    }

    /// Keeps the hint at or below `word`, which just gained a clear bit.
    #[inline]
    fn lower_hint(&self, word: u64) {
        if word < self.hint.load(Ordering::SeqCst) {
            self.hint.fetch_min(word, Ordering::SeqCst);
        }
    }

    /// Claims bit `i`; returns `false` if it was already set.
    #[inline]
    pub(crate) fn claim(&self, i: u64) -> bool {
        self.set_bit(0, i)
    }

    /// Releases bit `i`, which must be set.
    #[inline]
    pub(crate) fn release(&self, i: u64) {
        let was_set = self.clear_bit(0, i);
        debug_assert!(was_set, "released a clear bit {i}");
        self.lower_hint(i / WORD_BITS);
    }

    /// Releases every bit of `mask` in level-0 word `word`; all of them must be set.
    pub(crate) fn release_word(&self, word: u64, mask: u64) {
        let old = self.levels[0].words[word as usize].fetch_and(!mask, Ordering::SeqCst);
        debug_assert_eq!(old & mask, mask, "released clear bits in word {word}");
        if old == FULL && mask != 0 && self.levels.len() > 1 {
            self.summary_clear(1, word);
        }
        self.lower_hint(word);
    }

    /// Counts the set bits in `[0, len)` (a racy snapshot under concurrent use).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn count_set(&self) -> u64 {
        let words = &self.levels[0].words;
        let total: u64 = words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum();
        // Padding bits past `len` are permanently set.
        total - (words.len() as u64 * WORD_BITS - self.len)
    }

    /// Bytes of memory the bitmap occupies.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.levels
            .iter()
            .map(|l| l.words.len() * std::mem::size_of::<AtomicU64>())
            .sum::<usize>()
            + std::mem::size_of::<Self>()
    }

    /// Whether summary `level` says word `child` of the level below is full.
    #[cfg(loom)]
    pub(crate) fn summary_bit(&self, level: usize, child: u64) -> bool {
        let word = self.levels[level].words[(child / WORD_BITS) as usize].load(Ordering::SeqCst);
        word & (1 << (child % WORD_BITS)) != 0
    }

    /// The lowest index in `[lo, hi]` whose bit at `level` looks clear, guided by the summaries.
    fn find_clear(&self, level: usize, mut lo: u64, hi: u64) -> Option<u64> {
        let words = &self.levels[level].words;
        loop {
            if lo > hi {
                return None;
            }
            let w = lo / WORD_BITS;
            let free = !words[w as usize].load(Ordering::Acquire) & (FULL << (lo % WORD_BITS));
            if free != 0 {
                let i = w * WORD_BITS + u64::from(free.trailing_zeros());
                return (i <= hi).then_some(i);
            }
            if level + 1 == self.levels.len() {
                return None;
            }
            // Word `w` is full from `lo` on: ask the level above for the next non-full word.
            let next = self.find_clear(level + 1, w + 1, hi / WORD_BITS)?;
            lo = next * WORD_BITS;
        }
    }

    /// The lowest clear bit in `[lo, hi]` at level 0, reading every word (no summaries).
    fn scan_clear(&self, lo: u64, hi: u64) -> Option<u64> {
        let words = &self.levels[0].words;
        let mut w = lo / WORD_BITS;
        let mut mask = FULL << (lo % WORD_BITS);
        while w <= hi / WORD_BITS {
            let free = !words[w as usize].load(Ordering::SeqCst) & mask;
            if free != 0 {
                let i = w * WORD_BITS + u64::from(free.trailing_zeros());
                return (i <= hi).then_some(i);
            }
            w += 1;
            mask = FULL;
        }
        None
    }

    /// Sets bit `i` of `level`; returns whether it was clear. Propagates "full" upwards.
    #[inline]
    fn set_bit(&self, level: usize, i: u64) -> bool {
        let w = i / WORD_BITS;
        let bit = 1u64 << (i % WORD_BITS);
        let old = self.levels[level].words[w as usize].fetch_or(bit, Ordering::SeqCst);
        if old & bit != 0 {
            return false;
        }
        if old | bit == FULL && level + 1 < self.levels.len() {
            self.summary_set(level + 1, w);
        }
        true
    }

    /// Clears bit `i` of `level`; returns whether it was set. Propagates "not full" upwards.
    #[inline]
    fn clear_bit(&self, level: usize, i: u64) -> bool {
        let w = i / WORD_BITS;
        let bit = 1u64 << (i % WORD_BITS);
        let old = self.levels[level].words[w as usize].fetch_and(!bit, Ordering::SeqCst);
        if old == FULL && level + 1 < self.levels.len() {
            self.summary_clear(level + 1, w);
        }
        old & bit != 0
    }

    /// Records at `level` that word `child` of `level - 1` is full, then re-checks the child:
    /// if a release emptied a bit meanwhile, the record is corrected.
    fn summary_set(&self, level: usize, child: u64) {
        self.set_bit(level, child);
        if self.levels[level - 1].words[child as usize].load(Ordering::SeqCst) != FULL {
            self.summary_clear(level, child);
        }
    }

    /// Records at `level` that word `child` of `level - 1` is not full, then re-checks the
    /// child: if a claim filled it meanwhile, the record is corrected.
    fn summary_clear(&self, level: usize, child: u64) {
        self.clear_bit(level, child);
        if self.levels[level - 1].words[child as usize].load(Ordering::SeqCst) == FULL {
            self.summary_set(level, child);
        }
    }
}

/// Iterates the positions of the set bits of a word, lowest first.
pub(crate) struct Bits(pub(crate) u64);

impl Iterator for Bits {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Every summary bit agrees with the word below it (valid when no one is mutating).
    fn assert_summaries_exact(b: &Bitmap) {
        for level in 1..b.levels.len() {
            for (w, word) in b.levels[level - 1].words.iter().enumerate() {
                let full = word.load(Ordering::Relaxed) == FULL;
                let w = w as u64;
                let summary = b.levels[level].words[(w / WORD_BITS) as usize]
                    .load(Ordering::Relaxed)
                    & (1 << (w % WORD_BITS))
                    != 0;
                assert_eq!(full, summary, "level {level} word {w}");
            }
        }
    }

    #[test]
    fn level_shape_for_twenty_bits() {
        let b = Bitmap::new(1 << 20);
        let sizes: Vec<usize> = b.levels.iter().map(|l| l.words.len()).collect();
        assert_eq!(sizes, vec![16384, 256, 4, 1]);
        assert!(b.memory_bytes() < 132 * 1024);
    }

    #[test]
    fn claims_lowest_and_fills_exactly() {
        for len in [1u64, 2, 63, 64, 65, 4095, 4096, 4097, 300_000] {
            let b = Bitmap::new(len);
            for expect in 0..len {
                assert_eq!(b.claim_lowest(0, len - 1), Some(expect), "len {len}");
            }
            assert_eq!(b.claim_lowest(0, len - 1), None);
            assert_eq!(b.count_set(), len);
            assert_summaries_exact(&b);
        }
    }

    #[test]
    fn prefix_set_matches_claiming_bit_by_bit() {
        for (len, set) in [
            (1u64, 1u64),
            (65, 64),
            (4160, 4095),
            (4160, 4160),
            (300_000, 262_144),
        ] {
            let b = Bitmap::with_prefix_set(len, set);
            assert_eq!(b.count_set(), set);
            assert_summaries_exact(&b);
            assert!(b.summaries_exact());
            assert_eq!(b.claim_lowest(0, len - 1), (set < len).then_some(set));
        }
    }

    #[test]
    fn release_makes_bit_lowest_again() {
        let b = Bitmap::new(1 << 14);
        for _ in 0..(1 << 14) {
            b.claim_lowest(0, (1 << 14) - 1).unwrap();
        }
        for i in [9000u64, 77, 4096, 16383] {
            b.release(i);
            assert_summaries_exact(&b);
        }
        assert_eq!(b.claim_lowest(0, 16383), Some(77));
        assert_eq!(b.claim_lowest(100, 16383), Some(4096));
        assert_eq!(b.claim_lowest(9001, 16383), Some(16383));
        assert_eq!(b.claim_lowest(0, 16383), Some(9000));
        assert_eq!(b.claim_lowest(0, 16383), None);
        assert_summaries_exact(&b);
    }

    #[test]
    fn respects_bounds() {
        let b = Bitmap::new(1000);
        assert_eq!(b.claim_lowest(500, 500), Some(500));
        assert_eq!(b.claim_lowest(500, 500), None);
        assert_eq!(b.claim_lowest(499, 501), Some(499));
        assert_eq!(b.claim_lowest(499, 501), Some(501));
        assert_eq!(b.claim_lowest(499, 501), None);
        assert_eq!(b.claim_lowest(999, 999), Some(999));
    }

    #[test]
    fn release_word_clears_many_and_summaries() {
        let b = Bitmap::new(256);
        for _ in 0..256 {
            b.claim_lowest(0, 255).unwrap();
        }
        b.release_word(1, 0xF0F0);
        assert_summaries_exact(&b);
        assert_eq!(b.count_set(), 256 - 8);
        assert_eq!(b.claim_lowest(0, 255), Some(68));
    }

    #[test]
    fn concurrent_claims_are_unique() {
        let b = std::sync::Arc::new(Bitmap::new(1 << 16));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    for round in 0..20_000u64 {
                        let i = b.claim_lowest(0, (1 << 16) - 1).unwrap();
                        got.push(i);
                        if round % 3 == 0 {
                            b.release(got.swap_remove(got.len() / 2));
                        }
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a bit was claimed twice");
        assert_eq!(b.count_set(), n as u64);
        assert_summaries_exact(&b);
    }
}
