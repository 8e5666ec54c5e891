//! Which words of the space a set owns PASIDs in: a direct-mapped two-level bitmap of word
//! indexes, private to the set's handle.
//!
//! Who owns each PASID is recorded once, in the space (the bitmap word's tag, or a mixed
//! word's leaf). A set keeps only one bit per 56-PASID word of the space, set while it may own
//! a PASID in that word, so that range frees, release and listing visit its own words and
//! nothing else. The bit is set by an allocation whose claim found the word nobody's (or
//! mixed): a word already tagged with the set holds PASIDs of the set, so its bit is set
//! already, and such an allocation (most of a fill, a1, a2) never reads this map. It is
//! cleared when the set's last PASID in the word leaves it — which in a single-owner word is
//! the release that tags the word "nobody" again, so a free that leaves other PASIDs of the
//! set in its word never reads this map either.
//!
//! The words are cut into blocks of 1 024 (16 `u64`s, 57 344 PASIDs); a block is created by
//! the set's first PASID in it and given back when a range free or the release empties it.
//! Tests and updates are two dependent loads, no hashing; range walks visit only the blocks
//! the set has (at most 19 block slots for a 2^20 space), never the width of the range.

const BITS_PER_BLOCK: usize = 1024;
const BLOCK_WORDS: usize = BITS_PER_BLOCK / 64;

type Block = [u64; BLOCK_WORDS];

/// The space words (`pasid / 56`) in which one set owns PASIDs.
#[derive(Default)]
pub(crate) struct Members {
    blocks: Vec<Option<Box<Block>>>,
}

impl Members {
    #[inline]
    fn locate(word: u32) -> (usize, usize, u64) {
        let word = word as usize;
        (
            word / BITS_PER_BLOCK,
            (word / 64) % BLOCK_WORDS,
            1 << (word % 64),
        )
    }

    /// Notes that the set may own PASIDs in space word `word`.
    #[inline]
    pub(crate) fn insert(&mut self, word: u32) {
        let (b, w, bit) = Self::locate(word);
        if let Some(Some(block)) = self.blocks.get_mut(b) {
            block[w] |= bit;
            return;
        }
        self.insert_new_block(b, w, bit);
    }

    #[cold]
    fn insert_new_block(&mut self, b: usize, w: usize, bit: u64) {
        if b >= self.blocks.len() {
            self.blocks.resize_with(b + 1, || None);
        }
        let block = self.blocks[b].get_or_insert_with(|| Box::new([0; BLOCK_WORDS]));
        block[w] |= bit;
    }

    /// Whether space word `word` is noted (for debug checks).
    pub(crate) fn contains(&self, word: u32) -> bool {
        let (b, w, bit) = Self::locate(word);
        matches!(self.blocks.get(b), Some(Some(block)) if block[w] & bit != 0)
    }

    /// Notes that the set owns no PASID in space word `word` any more. The block stays even
    /// if it empties (a set that frees and allocates again in one place does not churn
    /// memory); range walks give empty blocks back.
    #[inline]
    pub(crate) fn remove(&mut self, word: u32) {
        let (b, w, bit) = Self::locate(word);
        if let Some(Some(block)) = self.blocks.get_mut(b) {
            block[w] &= !bit;
        }
    }

    /// Calls `visit(word)` for every noted word from `first` to `last`, ascending; `visit`
    /// returns whether the set still owns PASIDs in the word (otherwise its bit is cleared).
    /// Blocks the walk leaves empty are given back.
    pub(crate) fn retain_words(
        &mut self,
        first: u32,
        last: u32,
        mut visit: impl FnMut(u32) -> bool,
    ) {
        if self.blocks.is_empty() || first > last {
            return;
        }
        let (first, last) = (first as usize, last as usize);
        let last_block = (last / BITS_PER_BLOCK).min(self.blocks.len() - 1);
        for b in first / BITS_PER_BLOCK..=last_block {
            let Some(block) = self.blocks[b].as_mut() else {
                continue;
            };
            let base = b * BITS_PER_BLOCK;
            for (i, bits) in block.iter_mut().enumerate() {
                let word_base = base + i * 64;
                let mut todo = *bits & window_mask(word_base as u64, first as u64, last as u64);
                while todo != 0 {
                    let bit = todo.trailing_zeros();
                    todo &= todo - 1;
                    if !visit((word_base + bit as usize) as u32) {
                        *bits &= !(1 << bit);
                    }
                }
            }
            if block.iter().all(|&bits| bits == 0) {
                self.blocks[b] = None;
            }
        }
        while matches!(self.blocks.last(), Some(None)) {
            self.blocks.pop();
        }
    }

    /// Every noted word, ascending.
    pub(crate) fn words(&self) -> impl Iterator<Item = u32> + '_ {
        self.blocks.iter().enumerate().flat_map(|(b, block)| {
            block.iter().flat_map(move |block| {
                block.iter().enumerate().flat_map(move |(i, &bits)| {
                    let base = (b * BITS_PER_BLOCK + i * 64) as u32;
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

/// The bits of a 64-bit window whose bit 0 stands for index `base` that fall inside
/// `[first, last]` (map words here; the set also takes the low 56 for a space word).
pub(crate) fn window_mask(base: u64, first: u64, last: u64) -> u64 {
    if last < base || first > base + 63 {
        return 0;
    }
    let from = first.max(base) - base;
    let to = last.min(base + 63) - base;
    (u64::MAX << from) & (u64::MAX >> (63 - to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_mask_edges() {
        assert_eq!(window_mask(0, 0, u64::MAX), u64::MAX);
        assert_eq!(window_mask(64, 64, 64), 1);
        assert_eq!(window_mask(64, 0, 63), 0);
        assert_eq!(window_mask(64, 70, 71), 0b11 << 6);
        assert_eq!(window_mask(128, 0, 130), 0b111);
        // The low bits of a window, which a space word's mask keeps.
        assert_eq!(window_mask(32, 38, 39) as u32, 0b11 << 6);
        assert_eq!(window_mask(64, 0, 66) as u32, 0b111);
        assert_eq!(
            window_mask(u64::from(u32::MAX) - 31, 0, u64::from(u32::MAX)) as u32,
            u32::MAX
        );
    }

    #[test]
    fn insert_remove_and_walk() {
        let mut m = Members::default();
        for w in [1u32, 63, 64, 1023, 1024, 30_000] {
            m.insert(w);
        }
        m.insert(64);
        m.remove(63);
        assert_eq!(
            m.words().collect::<Vec<_>>(),
            vec![1, 64, 1023, 1024, 30_000]
        );
        // The walk sees only the noted words in its span, and clears those it is told to.
        let mut seen = Vec::new();
        m.retain_words(2, 1024, |w| {
            seen.push(w);
            w == 1023
        });
        assert_eq!(seen, vec![64, 1023, 1024]);
        assert_eq!(m.words().collect::<Vec<_>>(), vec![1, 1023, 30_000]);
        // A block the walk empties is given back; the last one leaves nothing but the table.
        m.retain_words(0, u32::MAX, |_| false);
        assert!(m.blocks.is_empty());
        assert_eq!(m.memory_bytes(), m.blocks.capacity() * 8);
    }
}
