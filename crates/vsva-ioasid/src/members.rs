//! What one set owns: a direct-mapped two-level bitmap, private to the set's handle.
//!
//! The PASID space is cut into blocks of 4 096 (64 words of 64 bits). A set keeps a vector of
//! optional blocks indexed by `pasid / 4096`, created when it first owns a PASID in the block
//! and dropped when a range free spanning the whole block, or the set's release, empties it. Membership tests and updates are two
//! dependent loads, no hashing; range operations visit only the blocks the set has, so their
//! cost is bounded by what the set owns (at most 256 block slots plus 64 words per block it
//! holds), never by the width of the range asked for.

const WORDS_PER_BLOCK: usize = 64;
const BLOCK_SHIFT: u32 = 12;

type Block = [u64; WORDS_PER_BLOCK];

/// A set's own PASIDs.
#[derive(Default)]
pub(crate) struct Members {
    blocks: Vec<Option<Box<Block>>>,
}

impl Members {
    #[inline]
    fn locate(pasid: u32) -> (usize, usize, u64) {
        (
            (pasid >> BLOCK_SHIFT) as usize,
            (pasid as usize / 64) % WORDS_PER_BLOCK,
            1 << (pasid % 64),
        )
    }

    /// Whether `pasid` is a member.
    #[inline]
    pub(crate) fn contains(&self, pasid: u32) -> bool {
        let (b, w, bit) = Self::locate(pasid);
        matches!(self.blocks.get(b), Some(Some(block)) if block[w] & bit != 0)
    }

    /// Adds `pasid`, which must not be a member.
    #[inline]
    pub(crate) fn insert(&mut self, pasid: u32) {
        let (b, w, bit) = Self::locate(pasid);
        if b >= self.blocks.len() {
            self.blocks.resize_with(b + 1, || None);
        }
        let block = self.blocks[b].get_or_insert_with(|| Box::new([0; WORDS_PER_BLOCK]));
        debug_assert_eq!(block[w] & bit, 0);
        block[w] |= bit;
    }

    /// Removes `pasid`; returns whether it was a member. The block stays allocated even if it
    /// empties (a set that frees and reallocates in one block does not churn memory); range
    /// frees spanning a whole block and release give empty blocks back.
    #[inline]
    pub(crate) fn remove(&mut self, pasid: u32) -> bool {
        let (b, w, bit) = Self::locate(pasid);
        match self.blocks.get_mut(b) {
            Some(Some(block)) if block[w] & bit != 0 => {
                block[w] &= !bit;
                true
            }
            _ => false,
        }
    }

    /// Removes every member in `[min, max]`, calling `f(word, mask)` once per space word
    /// (`pasid / 64`) that had members in the range, in ascending order. Returns how many.
    #[inline]
    pub(crate) fn remove_range(&mut self, min: u32, max: u32, mut f: impl FnMut(u32, u64)) -> u32 {
        if min / 64 == max / 64 {
            // Within one word (e.g. one PASID): one lookup, and never a whole block to return.
            let (b, w, _) = Self::locate(min);
            let Some(Some(block)) = self.blocks.get_mut(b) else {
                return 0;
            };
            let mask = block[w] & range_mask(min / 64, min, max);
            if mask != 0 {
                block[w] &= !mask;
                f(min / 64, mask);
            }
            return mask.count_ones();
        }
        let first = (min >> BLOCK_SHIFT) as usize;
        let last = ((max >> BLOCK_SHIFT) as usize).min(self.blocks.len().saturating_sub(1));
        let (first_word, last_word) = ((min / 64) as usize, (max / 64) as usize);
        let mut taken = 0;
        for b in first..=last {
            let Some(block) = self.blocks.get_mut(b).and_then(Option::as_mut) else {
                continue;
            };
            // Only the block's words that the range reaches: a narrow range costs its width.
            let base = b * WORDS_PER_BLOCK;
            let lo = first_word.max(base) - base;
            let hi = last_word.min(base + WORDS_PER_BLOCK - 1) - base;
            for (w, bits) in block.iter_mut().enumerate().take(hi + 1).skip(lo) {
                let word = (base + w) as u32;
                let mask = *bits & range_mask(word, min, max);
                if mask != 0 {
                    *bits &= !mask;
                    taken += mask.count_ones();
                    f(word, mask);
                }
            }
            // Give the block back only when the range spans all of it, so a set that frees and
            // reallocates within one block (e.g. `free_range(p, p)`) does not churn memory.
            let spans_block = lo == 0
                && hi == WORDS_PER_BLOCK - 1
                && min <= (base * 64) as u32
                && max >= ((base + WORDS_PER_BLOCK) * 64 - 1) as u32;
            if spans_block && block.iter().all(|&bits| bits == 0) {
                self.blocks[b] = None;
            }
        }
        while matches!(self.blocks.last(), Some(None)) {
            self.blocks.pop();
        }
        taken
    }

    /// Every member, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.blocks.iter().enumerate().flat_map(|(b, block)| {
            block.iter().flat_map(move |block| {
                block.iter().enumerate().flat_map(move |(w, &bits)| {
                    let base = ((b * WORDS_PER_BLOCK + w) * 64) as u32;
                    crate::bitmap::Bits(bits).map(move |bit| base + bit)
                })
            })
        })
    }

    /// Heap bytes held.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Option<Box<Block>>>()
            + self.blocks.iter().flatten().count() * std::mem::size_of::<Block>()
    }
}

/// The bits of space word `word` that fall inside `[min, max]`.
fn range_mask(word: u32, min: u32, max: u32) -> u64 {
    let (lo, hi) = (u64::from(word) * 64, u64::from(word) * 64 + 63);
    let (min, max) = (u64::from(min), u64::from(max));
    if max < lo || min > hi {
        return 0;
    }
    let from = min.max(lo) - lo;
    let to = max.min(hi) - lo;
    (u64::MAX << from) & (u64::MAX >> (63 - to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_mask_edges() {
        assert_eq!(range_mask(0, 0, u32::MAX), u64::MAX);
        assert_eq!(range_mask(1, 64, 64), 1);
        assert_eq!(range_mask(1, 0, 63), 0);
        assert_eq!(range_mask(1, 70, 71), 0b11 << 6);
        assert_eq!(range_mask(2, 0, 130), 0b111);
    }

    #[test]
    fn insert_remove_range() {
        let mut m = Members::default();
        for p in [1u32, 63, 64, 4095, 4096, 100_000] {
            m.insert(p);
            assert!(m.contains(p));
        }
        assert!(!m.contains(2) && !m.contains(1 << 20));
        assert!(m.remove(63) && !m.remove(63));
        let mut seen = Vec::new();
        assert_eq!(m.remove_range(64, 4096, |w, mask| seen.push((w, mask))), 3);
        assert_eq!(seen, vec![(1, 1), (63, 1 << 63), (64, 1)]);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![1, 100_000]);
        // A narrow range free keeps the emptied block for reuse; a whole-block one returns it.
        assert_eq!(m.remove_range(100_000, 100_000, |_, _| {}), 1);
        assert!(m.blocks[24].is_some());
        assert_eq!(m.remove_range(0, u32::MAX, |_, _| {}), 1);
        assert_eq!(m.memory_bytes(), m.blocks.capacity() * 8);
        assert!(m.blocks.is_empty());
    }
}
