//! The bitmap's unit tests.

use super::*;

const A: u32 = 7;
const B: u32 = 8;

fn claim(b: &Bitmap, lo: u64, hi: u64) -> Option<u64> {
    b.claim_lowest(lo, hi, A).map(|(i, how)| {
        assert!(
            matches!(how, Claim::Claimed | Claim::Opened),
            "one tag only"
        );
        i
    })
}

#[test]
fn level_shape_for_twenty_bits() {
    let b = Bitmap::new(1 << 20, true);
    let sizes: Vec<usize> = b.levels.iter().map(|l| l.words.len()).collect();
    assert_eq!(b.nwords, 18725);
    assert_eq!(sizes, vec![293, 5, 1]);
    // Empty: summaries and the chunk table only; a claim creates one 2 KiB chunk.
    let empty = b.memory_bytes();
    assert!(empty < 8 * 1024, "{empty}");
    assert_eq!(claim(&b, 0, (1 << 20) - 1), Some(1));
    assert_eq!(b.memory_bytes(), empty + 2048);
    assert_eq!(claim(&b, 500_000, (1 << 20) - 1), Some(500_000));
    assert_eq!(b.memory_bytes(), empty + 4096);
}

#[test]
fn claims_lowest_and_fills_exactly() {
    for len in [1u64, 2, 31, 32, 33, 63, 64, 65, 2047, 2048, 2049, 300_000] {
        let b = Bitmap::new(len, false);
        for expect in 0..len {
            assert_eq!(claim(&b, 0, len - 1), Some(expect), "len {len}");
        }
        assert_eq!(claim(&b, 0, len - 1), None);
        assert_eq!(b.count_set(), len);
        assert!(b.summaries_exact());
    }
}

#[test]
fn reserved_first_bit_is_never_claimed_nor_owned() {
    let b = Bitmap::new(2, true);
    assert_eq!(tag_of(b.word(0)), TAG_NONE);
    assert_eq!(claim(&b, 0, 1), Some(1));
    assert_eq!(tag_of(b.word(0)), A);
    assert_eq!(b.release_as(0, 0b10, A), Ok(false), "no bit of A left");
    assert_eq!(
        b.release_as(0, 0b10, A),
        Err(Refused::OtherTag),
        "nobody's word"
    );
    assert_eq!(b.word(0), pack(TAG_NONE, b.fixed(0)));
    assert!(b.summaries_exact());
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
        let b = Bitmap::with_prefix_set(len, false, set, A);
        assert_eq!(b.count_set(), set);
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, 0, len - 1), (set < len).then_some(set));
    }
}

#[test]
fn release_makes_bit_lowest_again() {
    let b = Bitmap::new(1 << 14, false);
    for _ in 0..(1 << 14) {
        claim(&b, 0, (1 << 14) - 1).unwrap();
    }
    for i in [9000u64, 77, 4096, 16383] {
        assert!(b
            .release_as(i / WORD_SLOTS, 1 << (i % WORD_SLOTS), A)
            .is_ok());
        assert!(b.summaries_exact());
    }
    assert_eq!(claim(&b, 0, 16383), Some(77));
    assert_eq!(claim(&b, 100, 16383), Some(4096));
    assert_eq!(claim(&b, 9001, 16383), Some(16383));
    assert_eq!(claim(&b, 0, 16383), Some(9000));
    assert_eq!(claim(&b, 0, 16383), None);
    assert!(b.summaries_exact());
}

#[test]
fn stale_word_is_found_though_its_summary_says_full() {
    let b = Bitmap::with_prefix_set(4096, false, 4096, A);
    let release = |i: u64| {
        assert!(b
            .release_as(i / WORD_SLOTS, 1 << (i % WORD_SLOTS), A)
            .is_ok())
    };
    let word = |i: u64| i / WORD_SLOTS;
    // The first word a release un-fills keeps its "full" summary bit: it is the stale one.
    release(100);
    assert!(b.summary_bit(0, word(100)));
    // Releases in other words clear their summaries as usual.
    release(3000);
    release(50);
    assert!(!b.summary_bit(0, word(3000)) && !b.summary_bit(0, word(50)));
    assert!(b.summaries_exact());
    assert_eq!(claim(&b, 0, 4095), Some(50));
    assert_eq!(claim(&b, 0, 4095), Some(100));
    // Refilling the stale word leaves it marked: a later release there changes nothing.
    release(101);
    assert_eq!(claim(&b, 102, 4095), Some(3000));
    assert_eq!(claim(&b, 0, 4095), Some(101));
    assert_eq!(claim(&b, 0, 4095), None);
    assert!(b.summaries_exact());
}

#[test]
fn a_claim_above_the_hint_never_skips_the_stale_word() {
    // All full; word 5 un-filled first (stale, its summary still "full"), then word 10
    // (summary cleared). A search from word 3 up must not take the summary's word 10 over
    // the stale word 5 that lies between.
    let b = Bitmap::with_prefix_set(4096, false, 4096, A);
    assert!(b.release_as(5, 1 << 7, A).is_ok());
    assert!(b.release_as(10, 1 << 2, A).is_ok());
    assert!(b.summary_bit(0, 5) && !b.summary_bit(0, 10));
    assert_eq!(claim(&b, 3 * WORD_SLOTS, 4095), Some(5 * WORD_SLOTS + 7));
    assert_eq!(claim(&b, 3 * WORD_SLOTS, 4095), Some(10 * WORD_SLOTS + 2));
    assert!(b.summaries_exact());
}

#[test]
fn a_release_outside_the_stale_word_clears_the_summaries_up_the_tree() {
    // 65 words, the first 64 full: one summary word of the first level covers them.
    let (len, full) = (65 * WORD_SLOTS, 64 * WORD_SLOTS);
    let b = Bitmap::with_prefix_set(len, false, full, A);
    assert!(b.summary_bit(1, 0));
    assert!(b.release_as(63, 1 << (WORD_SLOTS - 1), A).is_ok());
    assert!(b.summary_bit(1, 0), "the stale word changes no summary");
    assert!(b.release_as(0, 1 << 5, A).is_ok());
    assert!(!b.summary_bit(0, 0) && !b.summary_bit(1, 0));
    assert!(b.summaries_exact());
    assert_eq!(claim(&b, 0, len - 1), Some(5));
    assert_eq!(claim(&b, 0, len - 1), Some(full - 1));
    assert!(b.summary_bit(1, 0));
    assert!(b.summaries_exact());
}

#[test]
fn respects_bounds() {
    let b = Bitmap::new(1000, false);
    assert_eq!(claim(&b, 500, 500), Some(500));
    assert_eq!(claim(&b, 500, 500), None);
    assert_eq!(claim(&b, 499, 501), Some(499));
    assert_eq!(claim(&b, 499, 501), Some(501));
    assert_eq!(claim(&b, 499, 501), None);
    assert_eq!(claim(&b, 999, 999), Some(999));
}

#[test]
fn tags_keep_other_sets_out_of_a_word() {
    let b = Bitmap::new(128, false);
    assert_eq!(b.claim_lowest(0, 127, A), Some((0, Claim::Opened)));
    assert_eq!(b.claim_lowest(0, 127, A), Some((1, Claim::Claimed)));
    assert!(b.release_as(0, 0b10, A).is_ok());
    assert_eq!(b.release_as(0, 0b10, A), Err(Refused::NotTaken));
    // B's lowest free bit is in A's word: reported, not claimed.
    assert_eq!(b.claim_lowest(0, 127, B), Some((1, Claim::Foreign)));
    let second = WORD_SLOTS;
    assert_eq!(b.claim_as(second + 8, B), Claim::Opened);
    assert_eq!(b.claim_as(second + 9, B), Claim::Claimed);
    assert_eq!(tag_of(b.word(1)), B);
    // A release by the wrong tag changes nothing.
    assert_eq!(b.release_as(0, 1, B), Err(Refused::OtherTag));
    assert!(b.release_as(0, 1, A).is_ok());
    assert_eq!(b.claim_lowest(0, 127, B), Some((0, Claim::Opened)));
    // A mixed word takes any set's claim, which must then record itself in the leaf.
    let v = b.word(0);
    assert!(b.retag(0, v, pack(TAG_MIXED, slots_of(v))));
    assert!(!b.retag(0, v, pack(TAG_MIXED, slots_of(v))));
    assert_eq!(b.claim_as(1, B), Claim::Mixed);
    assert_eq!(b.claim_as(1, A), Claim::Taken);
    // A claim that needs a leaf takes a bit only in a mixed word.
    assert_eq!(b.claim_as(2, TAG_MIXED), Claim::Mixed);
    assert_eq!(b.claim_as(second + 1, TAG_MIXED), Claim::Foreign);
    assert_eq!(b.claim_lowest(0, 127, B), Some((3, Claim::Mixed)));
    // The last release of a mixed word tags it "nobody" again.
    assert!(!b.release_mixed(0, 0b1110));
    assert!(b.release_mixed(0, 0b1));
    assert_eq!(b.word(0), pack(TAG_NONE, 0));
    assert!(b.summaries_exact());
}

#[test]
fn concurrent_claims_are_unique() {
    let b = std::sync::Arc::new(Bitmap::new(1 << 16, false));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for round in 0..20_000u64 {
                    let i = claim(&b, 0, (1 << 16) - 1).unwrap();
                    got.push(i);
                    if round % 3 == 0 {
                        let i = got.swap_remove(got.len() / 2);
                        assert!(b
                            .release_as(i / WORD_SLOTS, 1 << (i % WORD_SLOTS), A)
                            .is_ok());
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
    assert!(b.summaries_exact());
}

#[test]
fn word_of_divides_every_index_exactly() {
    for i in 0..MAX_LEN {
        assert_eq!(split(i), (i / WORD_SLOTS, i % WORD_SLOTS), "index {i}");
    }
}
