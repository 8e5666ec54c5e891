//! The guides a search of level 0 follows, and their upkeep after each update: the summary
//! levels (one bit per word of the level below, set when that word is full), the stale mark
//! (the one word whose summary bit need not agree with it) and the search hint (every word
//! below it full but the stale one). The module note of `bitmap` gives the protocol; the
//! words themselves and the claims and releases that change them are in `bitmap.rs`.

use super::{
    slots_from, slots_of, split, word_of, Bitmap, FULL, HINT_STEP, NO_STALE, SLOTS_FULL,
    SUMMARY_BITS, WORD_SLOTS,
};
use crate::sync::{AtomicU64, Ordering};

impl Bitmap {
    /// Keeps the summaries after an update made word `w` full. The stale word keeps its mark
    /// and its summary bit as they are: whoever takes the mark from it re-reads it and sets
    /// the bit ([`Bitmap::make_stale`]), so a release and a refill in the same word, over and
    /// over (a2), change no summary.
    #[inline(never)]
    pub(super) fn became_full(&self, w: u64) {
        if !self.levels.is_empty() && self.stale.load(Ordering::SeqCst) != w {
            self.summary_set(0, w);
        }
    }

    /// Keeps the summaries after an update made word `w` not full.
    #[inline(never)]
    pub(super) fn became_not_full(&self, w: u64) {
        self.keep_not_full(w);
    }

    /// [`became_not_full`](Self::became_not_full), inlined (into the release that un-fills a
    /// word, a2's).
    #[inline(always)]
    pub(super) fn keep_not_full(&self, w: u64) {
        if !self.levels.is_empty() && !self.make_stale(w) {
            self.summary_clear(0, w);
        }
    }

    /// Records word `w`, which a release just made not full, as the stale word, taking the
    /// mark from the word that held it if that one is full again; returns whether `w` is now
    /// stale (then its summary bits need not change), `false` if the mark stays elsewhere.
    ///
    /// The word that loses the mark is re-read after the move and its summary set to what it
    /// holds then (and the hint lowered if it has room): a release or refill there that still
    /// saw it stale, and so left the summary alone, either came before that re-read or reads
    /// the moved mark itself and keeps the summary on its own. Searches read `stale` before
    /// they trust the summaries, so a release that returned before a search began is seen by
    /// it either through the summaries or directly. The one window is the move itself: until
    /// the mover's re-read has corrected the old word's summary, a search may skip that word,
    /// as it may skip any word whose update is in flight; it never returns a bit it did not
    /// claim.
    #[inline(always)]
    fn make_stale(&self, w: u64) -> bool {
        let old = self.stale.load(Ordering::SeqCst);
        if old == w {
            return true;
        }
        let full = |cell: &AtomicU64| slots_of(cell.load(Ordering::SeqCst)) == SLOTS_FULL;
        // A stale word that has room still needs the mark; a full one (refilled) gives it up.
        // (Its chunk exists: a release un-filled it. An absent one would read as all free.)
        let old_cell = match (old != NO_STALE).then(|| self.cell(old)) {
            None => None,
            Some(Some(cell)) if full(cell) => Some(cell),
            Some(_) => return false,
        };
        if self
            .stale
            .compare_exchange(old, w, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        if let Some(cell) = old_cell {
            self.set_summary_bit(0, old);
            if !full(cell) {
                self.summary_clear(0, old);
                self.lower_hint(old);
            }
        }
        true
    }

    /// Moves the hint from `seen` to `word` when a claim landed in `word`, a few words past the
    /// hint, and every word in between is full.
    ///
    /// A release below the hint lowers it ([`Bitmap::lower_hint`]). The race to close is a
    /// release in `[seen, word)` that read the hint before it moved: after moving it, the
    /// search re-reads those words and lowers the hint again if one is no longer full. Either
    /// the releaser's update of the word precedes the re-read (which then sees the clear bit)
    /// or follows it (and the releaser then reads the moved hint). Steps longer than
    /// `HINT_STEP` words are not taken, so the re-check stays a few operations (and a claim
    /// far above the hint, a set allocating in its own range, costs one compare here).
    #[inline(always)]
    pub(super) fn advance_hint(&self, seen: u64, word: u64) {
        if word > seen && word - seen <= HINT_STEP {
            self.advance_hint_near(seen, word);
        }
    }

    /// [`advance_hint`](Self::advance_hint) once `word` is a step past `seen`.
    #[inline(never)]
    fn advance_hint_near(&self, seen: u64, word: u64) {
        let full = |v: u64| slots_of(v) == SLOTS_FULL;
        if (seen..word).any(|w| !full(self.word(w))) {
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
            // releaser's own read of the hint is ordered after our move.
            // An absent chunk has had no claim, so nothing of it is full.
            let latest = self.cell(w).map(|cell| cell.fetch_or(0, Ordering::AcqRel));
            if !latest.is_some_and(full) {
                self.lower_hint(w);
                return;
            }
        }
    }

    /// Keeps the hint's promise after a release in word `w` (and its summary update): every
    /// word below the hint is full or the stale one, which searches look at directly, so the
    /// hint is lowered only for a word that is not stale. A claim taking the stale mark back
    /// from `w` re-reads the word after it, and lowers the hint itself if it finds room.
    #[inline]
    pub(super) fn released_in(&self, w: u64) {
        if self.stale.load(Ordering::SeqCst) != w {
            self.lower_hint(w);
        }
    }

    /// Keeps the hint at or below `word`, which just gained a clear bit.
    #[inline]
    fn lower_hint(&self, word: u64) {
        if word < self.hint.load(Ordering::SeqCst) {
            self.hint.fetch_min(word, Ordering::SeqCst);
        }
    }

    /// The first word after `w` that the first summary level says is not full, if it lies in
    /// the same summary word as `w + 1` (one load; `None` also for a single-word bitmap).
    #[inline]
    pub(super) fn next_with_room(&self, w: u64) -> Option<u64> {
        let next = w + 1;
        let summary = self
            .levels
            .first()?
            .words
            .get((next / SUMMARY_BITS) as usize)?;
        let room = !summary.load(Ordering::SeqCst) & (FULL << (next % SUMMARY_BITS));
        (room != 0).then(|| next - next % SUMMARY_BITS + u64::from(room.trailing_zeros()))
    }

    /// Whether summary `level` says child `child` (a level-0 word for level 0) is full.
    #[cfg(test)]
    pub(crate) fn summary_bit(&self, level: usize, child: u64) -> bool {
        let word = self.levels[level].words[(child / SUMMARY_BITS) as usize].load(Ordering::SeqCst);
        word & (1 << (child % SUMMARY_BITS)) != 0
    }

    /// Whether child `child` of summary `level` is full now.
    #[inline]
    pub(super) fn child_full(&self, level: usize, child: u64) -> bool {
        if level == 0 {
            slots_of(self.word(child)) == SLOTS_FULL
        } else {
            self.levels[level - 1].words[child as usize].load(Ordering::SeqCst) == FULL
        }
    }

    /// The lowest index in `[lo, hi]` whose bit looks clear, guided by the summaries.
    pub(super) fn find_clear(&self, mut lo: u64, hi: u64) -> Option<u64> {
        loop {
            if lo > hi {
                return None;
            }
            let (w, b) = split(lo);
            let slots = slots_of(self.word(w));
            let free = !slots & slots_from(b);
            if free != 0 {
                let i = w * WORD_SLOTS + u64::from(free.trailing_zeros());
                return (i <= hi).then_some(i);
            }
            if self.levels.is_empty() {
                return None;
            }
            // Word `w` is full from `lo` on: ask the summaries for the next non-full word.
            let next = self.find_clear_summary(0, w + 1, word_of(hi))?;
            lo = next * WORD_SLOTS;
        }
    }

    /// The lowest child index in `[lo, hi]` that summary `level` says is not full.
    fn find_clear_summary(&self, level: usize, mut lo: u64, hi: u64) -> Option<u64> {
        let words = &self.levels[level].words;
        loop {
            if lo > hi {
                return None;
            }
            let w = lo / SUMMARY_BITS;
            let free = !words[w as usize].load(Ordering::Acquire) & (FULL << (lo % SUMMARY_BITS));
            if free != 0 {
                let i = w * SUMMARY_BITS + u64::from(free.trailing_zeros());
                return (i <= hi).then_some(i);
            }
            if level + 1 == self.levels.len() {
                return None;
            }
            let next = self.find_clear_summary(level + 1, w + 1, hi / SUMMARY_BITS)?;
            lo = next * SUMMARY_BITS;
        }
    }

    /// The lowest clear bit in `[lo, hi]` at level 0, reading every word (no summaries).
    pub(super) fn scan_clear(&self, lo: u64, hi: u64) -> Option<u64> {
        let (mut w, b) = split(lo);
        let mut mask = slots_from(b);
        while w <= word_of(hi) {
            let free = !slots_of(self.word(w)) & mask;
            if free != 0 {
                let i = w * WORD_SLOTS + u64::from(free.trailing_zeros());
                return (i <= hi).then_some(i);
            }
            w += 1;
            mask = SLOTS_FULL;
        }
        None
    }

    /// Sets bit `child` of summary `level`. Propagates "full" upwards.
    // Always inlined: the stale mark's move sets a bit on every a2 pair.
    #[inline(always)]
    fn set_summary_bit(&self, level: usize, child: u64) {
        let w = child / SUMMARY_BITS;
        let bit = 1u64 << (child % SUMMARY_BITS);
        let old = self.levels[level].words[w as usize].fetch_or(bit, Ordering::SeqCst);
        if old & bit == 0 && old | bit == FULL && level + 1 < self.levels.len() {
            self.summary_set(level + 1, w);
        }
    }

    /// Clears bit `child` of summary `level`. Propagates "not full" upwards.
    #[inline]
    fn clear_summary_bit(&self, level: usize, child: u64) {
        let w = child / SUMMARY_BITS;
        let bit = 1u64 << (child % SUMMARY_BITS);
        let old = self.levels[level].words[w as usize].fetch_and(!bit, Ordering::SeqCst);
        if old == FULL && level + 1 < self.levels.len() {
            self.summary_clear(level + 1, w);
        }
    }

    /// Records at `level` that `child` is full, then re-checks the child: if a release
    /// emptied a bit meanwhile, the record is corrected.
    fn summary_set(&self, level: usize, child: u64) {
        self.set_summary_bit(level, child);
        if !self.child_full(level, child) {
            self.summary_clear(level, child);
        }
    }

    /// Records at `level` that `child` is not full, then re-checks the child: if a claim
    /// filled it meanwhile, the record is corrected.
    fn summary_clear(&self, level: usize, child: u64) {
        self.clear_summary_bit(level, child);
        if self.child_full(level, child) {
            self.summary_set(level, child);
        }
    }
}
