//! A lock-free hierarchical bitmap: which PASIDs are taken and, per word, by which set.
//!
//! Level 0 is one `AtomicU64` per 56 PASIDs: the low 56 bits hold one bit per PASID (set =
//! allocated or still being torn down), the high 8 bits the word's *tag*, who those bits
//! belong to:
//!
//! | tag | meaning |
//! |---|---|
//! | [`TAG_NONE`] | no PASID of the word is taken (only the fixed bits: PASID 0, bits past the end) |
//! | `1 ..= 254` | every taken PASID of the word is owned by the set holding that tag, with no private data |
//! | [`TAG_MIXED`] | ask the owner table's leaf for the word (several owners, data, teardowns) |
//!
//! A tag is not a set id: the owner table lends each live set one of the 254 tags while
//! there is one to lend (see `tags`), and a set without a tag keeps its PASIDs in mixed words.
//! Eight tag bits leave 56 PASIDs per word, so a sparsely used region costs 8 bytes per 56
//! PASIDs at level 0 (32 bits of tag would leave 32, and cost 75 % more).
//!
//! Because the owner of a single-owner word sits in the same atomic as its bits, claiming a
//! PASID and recording its owner is one compare-and-swap, freeing it another, and no reader
//! can ever see a bit without its owner. A claim takes a bit in a word tagged with the
//! claimer's own set ([`Claim::Claimed`]) or [`TAG_NONE`] ([`Claim::Opened`]), or in a [`TAG_MIXED`] word
//! ([`Claim::Mixed`]: the claimer then records itself in the word's leaf); a word of another
//! set is [`Claim::Foreign`] and the owner table first retags it [`TAG_MIXED`] with a
//! compare-and-swap against the exact value it built the leaf from. All of these are
//! compare-and-swaps on the one word; none takes a lock.
//!
//! Each higher level holds one bit per word of the level below, set when that word is full,
//! so the lowest free bit at or above any index is found in a handful of loads whatever the
//! fill: for a 2^20 space the levels have 18 725, 293, 5 and 1 words (level 0, 146 KiB, is
//! created in 2 KiB chunks by the first claim in each; the summaries take 2.4 KiB). The
//! thread whose update made a word full or not full writes the summary bit and then re-reads
//! the word, and writes again if a concurrent update changed the answer in between. Whoever
//! writes a summary bit last has therefore seen the word agree with it, so once the updates
//! touching a word have returned, its summary bit is exact (the `loom` tests check this).
//! The one exception is the *stale* word: a release that un-fills a word marks it instead of
//! clearing summary bits, and whoever later moves the mark sets the word's bit (the
//! `guides` module says how). Searches start at the stale word or the hint (every word
//! below it full but the stale one), and claim in that first word, or the next one with room,
//! without reading further summaries when they can.
//! While updates are in flight a summary may lag by one step: a search can then skip a word
//! whose bit is just being released, and it never returns a bit it did not claim.
//! [`Bitmap::claim_lowest`] re-checks level 0 itself before it reports that a range has no
//! free bit, so a lagging summary never causes a false "full".

mod guides;

use std::sync::OnceLock;

use crate::sync::{AtomicU64, Ordering};

/// PASIDs per level-0 word.
pub(crate) const WORD_SLOTS: u64 = 56;
/// Bits per summary word.
const SUMMARY_BITS: u64 = 64;
const FULL: u64 = u64::MAX;
/// The taken bits of a full word.
pub(crate) const SLOTS_FULL: u64 = (1 << WORD_SLOTS) - 1;

/// Tag of a word none of whose PASIDs is taken.
pub(crate) const TAG_NONE: u32 = 0;
/// Tag of a word whose owners are recorded per PASID in the owner table.
pub(crate) const TAG_MIXED: u32 = 0xff;
/// The largest tag a set can hold.
pub(crate) const MAX_TAG: u32 = TAG_MIXED - 1;

/// The tag of a level-0 word.
#[inline]
pub(crate) fn tag_of(word: u64) -> u32 {
    (word >> WORD_SLOTS) as u32
}

/// The taken bits of a level-0 word.
#[inline]
pub(crate) fn slots_of(word: u64) -> u64 {
    word & SLOTS_FULL
}

/// A level-0 word from its tag (at most [`TAG_MIXED`]) and taken bits.
#[inline]
pub(crate) fn pack(tag: u32, slots: u64) -> u64 {
    debug_assert!(tag <= TAG_MIXED && slots <= SLOTS_FULL);
    u64::from(tag) << WORD_SLOTS | slots
}

/// Indexes of the bitmap are below this (a 20-bit space has 2^20).
pub(crate) const MAX_LEN: u64 = 1 << 21;
/// 2^26 / 56 rounded up: `i * WORD_RECIPROCAL >> 26` is `i / 56` for every `i` below
/// [`MAX_LEN`] (the error, `i * 24 / (56 * 2^26)`, stays below 1/56; a unit test checks every
/// `i`). A `u64` division by 56 compiles to a longer sequence, and the hot paths split an
/// index into word and bit several times per call.
const WORD_RECIPROCAL: u64 = 1_198_373;
const RECIPROCAL_SHIFT: u32 = 26;

/// The level-0 word of index `i` (below [`MAX_LEN`]): `i / WORD_SLOTS`.
#[inline(always)]
pub(crate) fn word_of(i: u64) -> u64 {
    debug_assert!(i < MAX_LEN, "index {i}");
    (i * WORD_RECIPROCAL) >> RECIPROCAL_SHIFT
}

/// The word of index `i` (below [`MAX_LEN`]) and its bit in the word.
#[inline(always)]
pub(crate) fn split(i: u64) -> (u64, u64) {
    let w = word_of(i);
    (w, i - w * WORD_SLOTS)
}

/// The slot bits of a word from bit `b` (below [`WORD_SLOTS`]) up.
#[inline]
pub(crate) fn slots_from(b: u64) -> u64 {
    SLOTS_FULL << b & SLOTS_FULL
}

/// What an attempt to claim one bit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The bit is now taken in a word that was already tagged with the claimer.
    Claimed,
    /// The bit is now taken in a word that was nobody's, now tagged with the claimer: its
    /// first PASID there (the set notes the word; after a [`Claim::Claimed`] it has already).
    Opened,
    /// The bit was already taken.
    Taken,
    /// The bit is now taken in a [`TAG_MIXED`] word: the claimer must record itself in the
    /// word's leaf (until it does, the PASID reads as free).
    Mixed,
    /// The bit is free but its word belongs to another set (or, for a claim that needs a
    /// leaf, is not mixed): the owner table must make the word mixed first.
    Foreign,
}

/// Why [`Bitmap::release_as`] released nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The word is not tagged with the releaser (mixed, another set's, or nobody's).
    OtherTag,
    /// The word is the releaser's but a bit to release is clear.
    NotTaken,
}

/// Why [`Bitmap::claim_in_first_word`] claimed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotClaimed {
    /// The word has no clear bit from the search's start to its end (or the range's).
    NoRoom,
    /// It may have one the search must take.
    Search,
}

/// What the first step of a search did ([`Bitmap::claim_first`]): the claim in the word the
/// search starts at, which a fill, a1 and a2 end with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstStep {
    /// Bit `.0` claimed in a word already tagged with the claimer, at or below the hint or
    /// too far above it to move it, not filling it unless it is the stale word: nothing is
    /// left to do.
    Done(u64),
    /// Bit `i` claimed, `how` [`Claim::Claimed`] or [`Claim::Opened`]; the guides still need
    /// [`Bitmap::first_claim_done`] (with `hint` as the search read it) if the claim `filled`
    /// its word or landed above the hint.
    Claimed {
        i: u64,
        how: Claim,
        filled: bool,
        hint: u64,
    },
    /// Nothing claimed: [`Bitmap::claim_lowest_on`] searches on, with `hint` and `stale` as
    /// the first step read them (where it started follows from them) and `why` it stopped.
    Search {
        hint: u64,
        stale: u64,
        why: NotClaimed,
    },
}

/// One summary level.
struct Level {
    words: Box<[AtomicU64]>,
}

/// Level-0 words per chunk (8 192 PASIDs, 2 KiB), the unit in which level 0 is allocated.
const CHUNK_SHIFT: u32 = 8;
const CHUNK_WORDS: u64 = 1 << CHUNK_SHIFT;

/// One chunk of level 0, always whole (the last one's words past the end are never used), so
/// that indexing a word in it needs no length check.
type Chunk = [AtomicU64; CHUNK_WORDS as usize];

/// A chunk holding `value(w)` for each word `w` from `first` on.
fn new_chunk(first: u64, value: impl Fn(u64) -> u64) -> Box<Chunk> {
    Box::new(std::array::from_fn(|i| {
        AtomicU64::new(value(first + i as u64))
    }))
}

/// The hierarchical bitmap over `[0, len)`.
pub(crate) struct Bitmap {
    /// Level 0: tag and taken bits per 56 PASIDs, in chunks of [`CHUNK_WORDS`] created by
    /// the first claim in them (an absent chunk reads as all free). An empty 20-bit space
    /// then costs its summaries and this table, not 256 KiB of words.
    chunks: Box<[OnceLock<Box<Chunk>>]>,
    /// How many level-0 words there are.
    nwords: u64,
    /// `levels[0]` has one bit per level-0 word; `levels[k]` one per word of `levels[k - 1]`.
    levels: Box<[Level]>,
    len: u64,
    /// Bits of word 0 taken for good (PASID 0 when the owner reserves it).
    fixed_first: u64,
    /// Bits of the last word past `len`, taken for good.
    fixed_last: u64,
    /// A level-0 word index below which every word is full except the stale one: searches
    /// start at the lower of the two. A pure accelerator, kept conservative as described at
    /// [`Bitmap::advance_hint`] and [`Bitmap::released_in`].
    hint: AtomicU64,
    /// The one level-0 word whose summary bit need not agree with it ([`NO_STALE`] if none):
    /// a release that un-fills a word records it here instead of clearing the summary bits
    /// above it, and every search looks at it directly. The mark stays when the word fills
    /// again, until a release elsewhere takes it and sets the word's summary bit. A
    /// free-and-allocate-again pair in a full region then changes no summary at all, and a
    /// pair in another word moves the mark once. See [`Bitmap::make_stale`].
    stale: AtomicU64,
}

/// `stale` when no word is stale.
const NO_STALE: u64 = u64::MAX;

/// How many words a search may move the hint forward in one step (the re-check it must do
/// costs one load per word moved over).
const HINT_STEP: u64 = 4;

impl Bitmap {
    /// Creates a bitmap of `len` clear bits (`len >= 1`); with `reserve_first`, bit 0 is taken
    /// for good (it belongs to nobody and is never released).
    pub(crate) fn new(len: u64, reserve_first: bool) -> Self {
        Self::with_prefix_set(len, reserve_first, 0, TAG_NONE)
    }

    /// Creates a bitmap of `len` bits whose first `set` bits are taken by `tag`, with exact
    /// summaries (the models start from deep fills this way without claiming bit by bit).
    fn with_prefix_set(len: u64, reserve_first: bool, set: u64, tag: u32) -> Self {
        assert!(
            (1..=MAX_LEN / 2).contains(&len),
            "bitmap length {len} out of range"
        );
        assert!(set <= len);
        let nwords = len.div_ceil(WORD_SLOTS);
        let fixed_last = match len % WORD_SLOTS {
            0 => 0,
            valid => slots_from(valid),
        };
        let fixed_first = u64::from(reserve_first);
        let values: Vec<u64> = (0..nwords)
            .map(|w| {
                let first = w * WORD_SLOTS;
                let mut fixed = if w + 1 == nwords { fixed_last } else { 0 };
                if w == 0 {
                    fixed |= fixed_first;
                }
                let taken = (0..WORD_SLOTS)
                    .filter(|&b| first + b < set)
                    .fold(0u64, |s, b| s | 1 << b);
                let tag = if taken & !fixed == 0 { TAG_NONE } else { tag };
                pack(tag, fixed | taken)
            })
            .collect();
        let mut full: Vec<bool> = values.iter().map(|&v| slots_of(v) == SLOTS_FULL).collect();
        let mut levels = Vec::new();
        while full.len() > 1 {
            let children = full.len() as u64;
            let nsum = children.div_ceil(SUMMARY_BITS);
            let summary: Vec<u64> = (0..nsum)
                .map(|s| {
                    (0..SUMMARY_BITS).fold(0u64, |acc, b| {
                        let child = s * SUMMARY_BITS + b;
                        // Children past the end count as full, so a search never looks there.
                        if child >= children || full[child as usize] {
                            acc | 1 << b
                        } else {
                            acc
                        }
                    })
                })
                .collect();
            full = summary.iter().map(|&w| w == FULL).collect();
            levels.push(Level {
                words: summary.into_iter().map(AtomicU64::new).collect(),
            });
        }
        let chunks: Box<[OnceLock<Box<Chunk>>]> = (0..nwords.div_ceil(CHUNK_WORDS))
            .map(|_| OnceLock::new())
            .collect();
        for (c, chunk) in chunks.iter().enumerate() {
            let range =
                c * CHUNK_WORDS as usize..((c + 1) * CHUNK_WORDS as usize).min(values.len());
            // Chunks with any PASID taken are created now, the others on their first claim.
            // The `loom` models create them all: a `OnceLock`'s hand-off is invisible to loom.
            if cfg!(loom) || values[range].iter().any(|&v| tag_of(v) != TAG_NONE) {
                let words = new_chunk(c as u64 * CHUNK_WORDS, |w| {
                    values.get(w as usize).copied().unwrap_or(0)
                });
                chunk
                    .set(words)
                    .unwrap_or_else(|_| unreachable!("a fresh chunk"));
            }
        }
        Bitmap {
            chunks,
            nwords,
            levels: levels.into_boxed_slice(),
            len,
            fixed_first,
            fixed_last,
            hint: AtomicU64::new(0),
            stale: AtomicU64::new(NO_STALE),
        }
    }

    /// A bitmap of `len` bits with the first `set` taken by `tag` (for the `loom` models).
    #[cfg(all(test, loom))]
    pub(crate) fn prefilled(len: u64, set: u64, tag: u32) -> Self {
        Self::with_prefix_set(len, false, set, tag)
    }

    /// How many levels the bitmap has (level 0 and its summaries).
    #[cfg(all(test, loom))]
    pub(crate) fn depth(&self) -> usize {
        self.levels.len() + 1
    }

    /// The bits of level-0 word `w` that are taken for good (never owned by anyone).
    #[inline]
    pub(crate) fn fixed(&self, w: u64) -> u64 {
        // Every word but the first and the last: one compare.
        if w.wrapping_sub(1) < self.nwords.wrapping_sub(2) {
            return 0;
        }
        let mut fixed = if w == 0 { self.fixed_first } else { 0 };
        if w + 1 == self.nwords {
            fixed |= self.fixed_last;
        }
        fixed
    }

    /// The current value (tag and taken bits) of level-0 word `w`.
    #[inline]
    pub(crate) fn word(&self, w: u64) -> u64 {
        match self.cell(w) {
            Some(cell) => cell.load(Ordering::SeqCst),
            None => pack(TAG_NONE, self.fixed(w)),
        }
    }

    /// The atomic of level-0 word `w`, if its chunk exists (`w` is below `nwords`; a word
    /// past the end reads as an absent chunk, with no panic path in the callers' fast paths).
    #[inline]
    fn cell(&self, w: u64) -> Option<&AtomicU64> {
        let chunk = self.chunks.get((w >> CHUNK_SHIFT) as usize)?.get()?;
        Some(&chunk[(w % CHUNK_WORDS) as usize])
    }

    /// The atomic of level-0 word `w`, creating its chunk (all free) if need be.
    #[inline]
    fn cell_or_create(&self, w: u64) -> &AtomicU64 {
        let c = w >> CHUNK_SHIFT;
        let chunk = self.chunks[c as usize]
            .get_or_init(|| new_chunk(c * CHUNK_WORDS, |w| pack(TAG_NONE, self.fixed(w))));
        &chunk[(w % CHUNK_WORDS) as usize]
    }

    /// Whether every summary bit at every level agrees with the word it describes (the stale
    /// word's may not), every word below the hint is full or stale,
    /// and every [`TAG_NONE`] word has only its fixed bits: the invariants once no update is
    /// in flight.
    #[cfg(test)]
    pub(crate) fn summaries_exact(&self) -> bool {
        let tags_ok = (0..self.nwords).all(|w| {
            let v = self.word(w);
            tag_of(v) != TAG_NONE || slots_of(v) == self.fixed(w)
        });
        let stale = self.stale.load(Ordering::SeqCst);
        let hint_ok = (0..self.hint.load(Ordering::SeqCst).min(self.nwords))
            .all(|w| w == stale || slots_of(self.word(w)) == SLOTS_FULL);
        tags_ok
            && hint_ok
            && (0..self.levels.len()).all(|level| {
                let children = if level == 0 {
                    self.nwords as usize
                } else {
                    self.levels[level - 1].words.len()
                };
                (0..children as u64).all(|c| {
                    let (bit, full) = (self.summary_bit(level, c), self.child_full(level, c));
                    bit == full || (level == 0 && c == stale)
                })
            })
    }

    /// Claims the lowest clear bit in `[lo, hi]` (`hi < len`) for `tag` (a set id).
    ///
    /// Returns the bit and what happened to it: [`Claim::Claimed`] or [`Claim::Opened`] (its
    /// word tagged `tag`, already or from now on), [`Claim::Mixed`] (claimed in a mixed word:
    /// the caller records the owner in the leaf) or [`Claim::Foreign`] (the lowest clear bit
    /// lies in another set's word; nothing changed). `None` if every bit in the range is
    /// taken. Its first step is [`claim_first`](Self::claim_first), which a set's allocation
    /// inlines; the rest of the search is out of line.
    #[inline]
    pub(crate) fn claim_lowest(&self, lo: u64, hi: u64, tag: u32) -> Option<(u64, Claim)> {
        match self.claim_first(lo, hi, tag) {
            FirstStep::Done(i) => Some((i, Claim::Claimed)),
            FirstStep::Claimed {
                i,
                how,
                filled,
                hint,
            } => {
                self.first_claim_done(hint, i, filled);
                Some((i, how))
            }
            FirstStep::Search { hint, stale, why } => {
                self.claim_lowest_on(lo, hi, tag, hint, stale, why)
            }
        }
    }

    /// The first step of [`claim_lowest`](Self::claim_lowest), for callers to inline: a claim
    /// in the word the search starts at, with no call (the callers finish the claim or go
    /// on with the search out of line, as the [`FirstStep`] says).
    #[inline(always)]
    pub(crate) fn claim_first(&self, lo: u64, hi: u64, tag: u32) -> FirstStep {
        debug_assert!(hi < self.len && tag != TAG_NONE && tag <= MAX_TAG);
        let hint = self.hint.load(Ordering::SeqCst);
        // Below the hint every word is full but the stale one: start at the lower of the two
        // (in a2's free-one-and-get-it-back, the stale word holds the bit just released). A
        // stale word that filled again keeps its mark: then go on at the hint, or every
        // search would end in the summaries.
        let stale = self.stale.load(Ordering::SeqCst);
        // Where the search starts (`search_start`), as a word and a bit.
        let (w, b) = Self::start_in(lo, hint.min(stale));
        let mut first = self.claim_word_from(w, b, hi, tag);
        if first == Err(NotClaimed::NoRoom) {
            // As the search would go on (see `claim_lowest_on`): at the hint's word if the
            // search started at the stale word below it (a stale word that filled again keeps
            // its mark), then at the next word with room that the first summary level shows
            // (a set allocating in its own range above the hint, a fill crossing into the next
            // word), unless the stale word, whose summary may hide room, lies in between.
            let mut w = w;
            if stale < hint {
                let b;
                (w, b) = Self::start_in(lo, hint);
                first = self.claim_word_from(w, b, hi, tag);
            }
            if first == Err(NotClaimed::NoRoom) {
                if let Some(next) = self.next_with_room(w) {
                    if !(w < stale && stale < next) {
                        first = self.claim_word_from(next, 0, hi, tag);
                    }
                }
            }
        }
        match first {
            // A claim that fills the stale word (a2's) changes no summary (see
            // `became_full`), and one far above the hint does not move it (`advance_hint`).
            Ok((i, w, Claim::Claimed, filled))
                if (w <= hint || w - hint > HINT_STEP)
                    && (!filled || self.stale.load(Ordering::SeqCst) == w) =>
            {
                FirstStep::Done(i)
            }
            Ok((i, _, how, filled)) => FirstStep::Claimed {
                i,
                how,
                filled,
                hint,
            },
            Err(why) => FirstStep::Search { hint, stale, why },
        }
    }

    /// `lo.max(word * WORD_SLOTS)` as a word and a bit: `word`'s first bit unless `lo` lies
    /// above it (so that the common case needs no split).
    #[inline(always)]
    fn start_in(lo: u64, word: u64) -> (u64, u64) {
        if lo <= word * WORD_SLOTS {
            (word, 0)
        } else {
            split(lo)
        }
    }

    /// Where a search of `[lo, ..]` starts, given the hint and the stale word it read.
    #[inline(always)]
    fn search_start(lo: u64, hint: u64, stale: u64) -> u64 {
        lo.max(hint.min(stale) * WORD_SLOTS)
    }

    /// Keeps the guides after the search's first step claimed bit `i`: the summaries if it
    /// `filled` its word, the hint (read as `hint`) if the word lies above it.
    #[inline(never)]
    pub(crate) fn first_claim_done(&self, hint: u64, i: u64, filled: bool) {
        let w = word_of(i);
        if filled {
            self.became_full(w);
        }
        if w > hint {
            self.advance_hint(hint, w);
        }
    }

    /// [`claim_lowest`](Self::claim_lowest) after its first step, which claimed nothing
    /// (`first` says why) with `hint` and `stale` as it read them: searches on.
    #[inline(never)]
    pub(crate) fn claim_lowest_on(
        &self,
        lo: u64,
        hi: u64,
        tag: u32,
        hint: u64,
        stale: u64,
        first: NotClaimed,
    ) -> Option<(u64, Claim)> {
        let mut from = Self::search_start(lo, hint, stale);
        let mut first = Err(first);
        if first == Err(NotClaimed::NoRoom) && stale < hint {
            // Everything from `from` to the hint is full: start at the hint.
            from = lo.max(hint * WORD_SLOTS);
            first = self.claim_in_first_word(from, hi, tag);
        }
        if first == Err(NotClaimed::NoRoom) {
            // Full from `from` on (a set allocating from its own range above the hint): try
            // the next word with room that the first summary level shows, unless the stale
            // word, whose summary may hide room, lies in between.
            let w = word_of(from);
            if let Some(next) = self.next_with_room(w) {
                if !(w < stale && stale < next) {
                    first = self.claim_in_first_word(next * WORD_SLOTS, hi, tag);
                }
            }
        }
        if let Ok((i, how)) = first {
            if word_of(i) > hint {
                self.advance_hint(hint, word_of(i));
            }
            return Some((i, how));
        }
        loop {
            let i = self.lowest_clear_from(lo, from, hi)?;
            match self.claim_as(i, tag) {
                // Lost a race for bit `i`; everything below it was seen taken, carry on.
                Claim::Taken => from = i,
                Claim::Foreign => return Some((i, Claim::Foreign)),
                claimed => {
                    self.advance_hint(hint, word_of(i));
                    return Some((i, claimed));
                }
            }
        }
    }

    /// The search's first step without the search: claims for `tag` the lowest clear bit of
    /// `[from, hi]` if it lies in the word of `from` and that word is tagged `tag` or
    /// [`TAG_NONE`]. No bit of `[from, hi]` is lower, so this is the bit the summaries would
    /// lead to; one load and one compare-and-swap while the word has room (a fill, or a1).
    /// Otherwise it says whether the word is full from `from` on, or has room the search must
    /// take (a mixed word, another set's, or a chunk not created yet).
    #[inline]
    fn claim_in_first_word(
        &self,
        from: u64,
        hi: u64,
        tag: u32,
    ) -> Result<(u64, Claim), NotClaimed> {
        let (i, w, how, filled) = self.claim_first_word(from, hi, tag)?;
        if filled {
            self.became_full(w);
        }
        Ok((i, how))
    }

    /// [`claim_in_first_word`](Self::claim_in_first_word) without its summary update, which
    /// is the caller's when the claim `filled` the word (the last value; the second is the
    /// bit's word): no call inside, so that the inlined copy keeps its values in registers.
    #[inline(always)]
    fn claim_first_word(
        &self,
        from: u64,
        hi: u64,
        tag: u32,
    ) -> Result<(u64, u64, Claim, bool), NotClaimed> {
        let (w, b) = split(from);
        self.claim_word_from(w, b, hi, tag)
    }

    /// [`claim_first_word`](Self::claim_first_word) from bit `b` of word `w`, with the
    /// split already made.
    #[inline(always)]
    fn claim_word_from(
        &self,
        w: u64,
        b: u64,
        hi: u64,
        tag: u32,
    ) -> Result<(u64, u64, Claim, bool), NotClaimed> {
        let first = w * WORD_SLOTS;
        if first + b > hi {
            return Err(NotClaimed::Search);
        }
        let cell = self.cell(w).ok_or(NotClaimed::Search)?;
        let room = slots_from(b);
        // The last bit of the range in this word. With no clear bit from `b` on, the bit
        // index below is one past the word, so one compare answers both.
        let last = hi.min(first + WORD_SLOTS - 1);
        let mut v = cell.load(Ordering::SeqCst);
        loop {
            // `room` holds slot bits only, so the tag's bits drop out.
            let free = !v & room;
            let i = first + u64::from(free.trailing_zeros());
            if i > last {
                return Err(NotClaimed::NoRoom);
            }
            if tag_of(v) != tag && tag_of(v) != TAG_NONE {
                return Err(NotClaimed::Search);
            }
            // The word is `tag`'s or nobody's: or-ing the tag in tags it either way.
            let new = v | free & free.wrapping_neg() | u64::from(tag) << WORD_SLOTS;
            match cell.compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    let how = if tag_of(v) == TAG_NONE {
                        Claim::Opened
                    } else {
                        Claim::Claimed
                    };
                    return Ok((i, w, how, slots_of(new) == SLOTS_FULL));
                }
                Err(current) => v = current,
            }
        }
    }

    /// The lowest bit in `[lo, hi]` that looks clear, searching from `from` (`from >= lo`,
    /// everything in `[lo, from)` having been seen taken) with the summaries, then confirming
    /// a "none" against level 0 from `lo`.
    pub(crate) fn lowest_clear_from(&self, lo: u64, from: u64, hi: u64) -> Option<u64> {
        // The stale word's summary may hide its free bits: look at it directly, and search
        // with the summaries only below what it offers.
        let stale = self.stale.load(Ordering::SeqCst);
        let offered = if stale == NO_STALE || from > hi {
            None
        } else {
            let first = from.max(stale * WORD_SLOTS);
            let last = hi.min(stale * WORD_SLOTS + WORD_SLOTS - 1);
            (first <= last)
                .then(|| self.scan_clear(first, last))
                .flatten()
        };
        let below = match offered {
            Some(0) => None,
            Some(c) => self.find_clear(from, hi.min(c - 1)),
            None => self.find_clear(from, hi),
        };
        match (below, offered) {
            (Some(i), _) | (None, Some(i)) => Some(i),
            // The summaries may lag a concurrent release: confirm against level 0 itself,
            // from the caller's own bound, before reporting that the range is full.
            (None, None) => self.scan_clear(lo, hi),
        }
    }

    /// Claims bit `i` for `tag` if it is clear and its word is tagged `tag`, [`TAG_NONE`] or
    /// [`TAG_MIXED`]. With `tag` = [`TAG_MIXED`] (a claim that needs a leaf, for private
    /// data) only a mixed word will do.
    #[inline]
    pub(crate) fn claim_as(&self, i: u64, tag: u32) -> Claim {
        let (w, b) = split(i);
        let bit = 1u64 << b;
        let mut outcome = Claim::Taken;
        let done = self.update(w, |v| {
            outcome = if slots_of(v) & bit != 0 {
                Claim::Taken
            } else if tag_of(v) == TAG_MIXED {
                Claim::Mixed
            } else if tag != TAG_MIXED && tag_of(v) == tag {
                Claim::Claimed
            } else if tag != TAG_MIXED && tag_of(v) == TAG_NONE {
                Claim::Opened
            } else {
                Claim::Foreign
            };
            match outcome {
                Claim::Mixed => Some(v | bit),
                Claim::Claimed | Claim::Opened => Some(pack(tag, slots_of(v) | bit)),
                Claim::Taken | Claim::Foreign => None,
            }
        });
        debug_assert_eq!(
            done.is_ok(),
            matches!(outcome, Claim::Claimed | Claim::Opened | Claim::Mixed)
        );
        outcome
    }

    /// Releases the bits `mask` of word `w` if the word is tagged `tag` and they are all
    /// taken; the word becomes [`TAG_NONE`] when nothing but its fixed bits stays taken.
    /// Returns whether the word still holds bits of `tag` (`Ok(false)` once it is
    /// [`TAG_NONE`] again). Changes nothing and says why if the word carries another tag
    /// ([`Refused::OtherTag`]: if it is mixed, the owner table's slow path releases it) or a
    /// bit of `mask` is clear ([`Refused::NotTaken`]).
    #[inline]
    pub(crate) fn release_as(&self, w: u64, mask: u64, tag: u32) -> Result<bool, Refused> {
        let (kept, unfilled) = self.release_first(w, mask, tag)?;
        self.released(w, unfilled);
        Ok(kept)
    }

    /// [`release_as`](Self::release_as) without the upkeep of the guides, which the caller
    /// owes through [`released`](Self::released) (with the second value, whether the release
    /// un-filled the word): no call inside, so that the inlined copy keeps its values in
    /// registers.
    #[inline(always)]
    pub(crate) fn release_first(
        &self,
        w: u64,
        mask: u64,
        tag: u32,
    ) -> Result<(bool, bool), Refused> {
        // No chunk: nothing in it was ever claimed.
        let cell = self.cell(w).ok_or(Refused::NotTaken)?;
        let fixed = self.fixed(w);
        let mut v = cell.load(Ordering::SeqCst);
        loop {
            if tag_of(v) != tag {
                return Err(Refused::OtherTag);
            }
            if slots_of(v) & mask != mask {
                return Err(Refused::NotTaken);
            }
            let rest = slots_of(v) & !mask;
            let kept = rest & !fixed != 0;
            // The word keeps its tag (`v`'s) while bits of `tag` stay, else becomes nobody's.
            let new = if kept {
                v & !mask
            } else {
                pack(TAG_NONE, rest)
            };
            match cell.compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok((kept, slots_of(v) == SLOTS_FULL)),
                Err(current) => v = current,
            }
        }
    }

    /// Keeps the guides after a release in word `w` that `unfilled` it or not: the
    /// summaries or the stale mark, then the hint.
    #[inline(always)]
    pub(crate) fn released(&self, w: u64, unfilled: bool) {
        if unfilled {
            self.became_not_full(w);
        }
        self.released_in(w);
    }

    /// [`released`](Self::released) for a release that un-filled word `w`, out of line.
    /// Returns `true`, so that a caller that answers `true` next can make it a tail call.
    #[inline(never)]
    pub(crate) fn unfilled(&self, w: u64) -> bool {
        self.keep_not_full(w);
        self.released_in(w);
        true
    }

    /// Releases the bits `mask` of the [`TAG_MIXED`] word `w`; the word becomes [`TAG_NONE`]
    /// when nothing but its fixed bits stays taken, and the call then returns `true` (the
    /// caller gives the leaf back). The word cannot leave [`TAG_MIXED`] while the caller's
    /// bits are taken in it (see the owner table).
    pub(crate) fn release_mixed(&self, w: u64, mask: u64) -> bool {
        let fixed = self.fixed(w);
        let done = self.update(w, |v| {
            debug_assert_eq!(tag_of(v), TAG_MIXED);
            debug_assert_eq!(slots_of(v) & mask, mask, "released clear bits in word {w}");
            let slots = slots_of(v) & !mask;
            let tag = if slots & !fixed == 0 {
                TAG_NONE
            } else {
                TAG_MIXED
            };
            Some(pack(tag, slots))
        });
        debug_assert!(done.is_ok());
        matches!(done, Ok(v) if (slots_of(v) & !mask) & !fixed == 0)
    }

    /// Replaces word `w` by `new` if it still holds `old` (both with the same taken bits, or
    /// the summaries are kept by the caller's later updates); returns whether it did.
    pub(crate) fn retag(&self, w: u64, old: u64, new: u64) -> bool {
        debug_assert_eq!(slots_of(old), slots_of(new));
        self.update(w, |v| (v == old).then_some(new)).is_ok()
    }

    /// Applies `f` to word `w` with a compare-and-swap loop until it succeeds (`Ok(old)`) or
    /// `f` declines (`Err(current)`), then keeps the summaries and the hint.
    #[inline]
    fn update(&self, w: u64, mut f: impl FnMut(u64) -> Option<u64>) -> Result<u64, u64> {
        let word = self.cell_or_create(w);
        let mut v = word.load(Ordering::SeqCst);
        loop {
            let new = f(v).ok_or(v)?;
            match word.compare_exchange(v, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    match (slots_of(v) == SLOTS_FULL, slots_of(new) == SLOTS_FULL) {
                        (false, true) => self.became_full(w),
                        (true, false) => self.became_not_full(w),
                        _ => {}
                    }
                    if slots_of(v) & !slots_of(new) != 0 {
                        self.released_in(w);
                    }
                    return Ok(v);
                }
                Err(current) => v = current,
            }
        }
    }

    /// Counts the taken bits in `[0, len)`, fixed ones excluded (a racy snapshot).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn count_set(&self) -> u64 {
        (0..self.nwords)
            .map(|w| u64::from((slots_of(self.word(w)) & !self.fixed(w)).count_ones()))
            .sum()
    }

    /// Bytes of memory the bitmap occupies.
    pub(crate) fn memory_bytes(&self) -> usize {
        let words = self.chunks.iter().filter_map(|c| c.get()).map(|c| c.len());
        (words.sum::<usize>() + self.levels.iter().map(|l| l.words.len()).sum::<usize>())
            * std::mem::size_of::<AtomicU64>()
            + self.chunks.len() * std::mem::size_of::<OnceLock<Box<Chunk>>>()
            + std::mem::size_of::<Self>()
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
mod tests;
