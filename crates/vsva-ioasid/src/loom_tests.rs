//! `loom` models of the lock-free bitmap and its word tags (the stale mark moving between
//! words included), down to a bitmap deep enough
//! that one update changes every summary level, and of the owner table's lock-free steps in
//! mixed words (claim, release, lookup, collapse, teardown, a set reading what it owns in a
//! word). Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p vsva-ioasid --release --lib loom`.

use loom::sync::Arc;
use loom::thread;

use crate::bitmap::{pack, slots_of, tag_of, Bitmap, Claim, TAG_MIXED, TAG_NONE, WORD_SLOTS};
use crate::owners::{OwnerTable, SlotState};
use crate::tags::Owner;

/// PASIDs per level-0 word.
const S: u64 = WORD_SLOTS;
/// Two level-0 words under one summary word.
const LEN: u64 = 2 * S;
/// The tag (and, in the owner table, the set id) most models claim for, and a second one.
const A: u32 = 1;
const B: u32 = 2;

fn claim(b: &Bitmap, tag: u32) -> Option<u64> {
    b.claim_lowest(0, LEN - 1, tag).map(|(i, how)| {
        assert!(
            matches!(how, Claim::Claimed | Claim::Opened),
            "word of another set"
        );
        i
    })
}

fn claimed(got: Option<(u64, Claim)>) -> u64 {
    match got {
        Some((i, Claim::Claimed | Claim::Opened)) => i,
        other => panic!("{other:?}"),
    }
}

fn release(b: &Bitmap, i: u64, tag: u32) {
    assert!(b
        .release_as(i / WORD_SLOTS, 1 << (i % WORD_SLOTS), tag)
        .is_ok());
}

#[test]
fn loom_concurrent_claims_are_unique_and_lowest() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(LEN, S - 2, A));
        let t: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || claim(&b, A).unwrap())
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![S - 2, S - 1]);
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, A), Some(S));
    });
}

#[test]
fn loom_fill_racing_release_leaves_exact_summary() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(LEN, S - 1, A));
        let filler = {
            let b = b.clone();
            thread::spawn(move || claim(&b, A).unwrap())
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || release(&b, 10, A))
        };
        let filled = filler.join().unwrap();
        releaser.join().unwrap();
        assert!(b.summaries_exact());
        // Whichever bit the filler did not get is found next: no stale "full" hides it.
        let next = match filled {
            10 => S - 1,
            i if i == S - 1 => 10,
            other => panic!("filler claimed {other}"),
        };
        assert_eq!(claim(&b, A), Some(next));
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_claim_never_misses_a_bit_released_before_it_started() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(LEN, LEN, A));
        let releaser = {
            let b = b.clone();
            thread::spawn(move || {
                release(&b, S + 8, A);
                release(&b, 5, A);
            })
        };
        let claimer = {
            let b = b.clone();
            thread::spawn(move || claim(&b, A))
        };
        releaser.join().unwrap();
        let got = claimer.join().unwrap();
        // Whatever the interleaving, the claimer gets a released bit or nothing, never twice.
        match got {
            Some(i) => {
                assert!(i == 5 || i == S + 8);
                let other = if i == 5 { S + 8 } else { 5 };
                assert_eq!(claim(&b, A), Some(other));
            }
            None => {
                assert_eq!(claim(&b, A), Some(5));
                assert_eq!(claim(&b, A), Some(S + 8));
            }
        }
        assert_eq!(claim(&b, A), None);
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_hint_never_hides_a_release_racing_its_advance() {
    loom::model(|| {
        // Word 0 full, so a claim lands in word 1 and moves the search hint past word 0.
        let b = Arc::new(Bitmap::prefilled(LEN, S, A));
        let claimer = {
            let b = b.clone();
            thread::spawn(move || claim(&b, A).unwrap())
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || release(&b, 3, A))
        };
        let got = claimer.join().unwrap();
        releaser.join().unwrap();
        assert!(got == 3 || got == S, "claimed {got}");
        // Whatever the interleaving, bit 3 (if not taken) is found again before anything above.
        let next = claim(&b, A).unwrap();
        assert_eq!(next, if got == 3 { S } else { 3 });
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_two_sets_never_share_a_single_owner_word() {
    loom::model(|| {
        // Both sets want the lowest free bit of an empty word: one tags the word, the other
        // is sent to the slow path (or finds the next word once the first has it).
        let b = Arc::new(Bitmap::prefilled(LEN, 0, A));
        let t: Vec<_> = [A, B]
            .into_iter()
            .map(|tag| {
                let b = b.clone();
                thread::spawn(move || (tag, b.claim_lowest(0, LEN - 1, tag).unwrap()))
            })
            .collect();
        let got: Vec<(u32, (u64, Claim))> = t.into_iter().map(|t| t.join().unwrap()).collect();
        let claimed: Vec<(u32, u64)> = got
            .iter()
            .filter(|&&(_, (_, how))| matches!(how, Claim::Claimed | Claim::Opened))
            .map(|&(tag, (i, _))| (tag, i))
            .collect();
        assert!(!claimed.is_empty());
        for &(tag, i) in &claimed {
            // Every claimed bit sits in a word tagged with its claimer.
            assert_eq!(tag_of(b.word(i / WORD_SLOTS)), tag);
        }
        for &(_, (i, how)) in &got {
            assert_ne!(how, Claim::Mixed, "no word was mixed");
            if how == Claim::Foreign {
                // Sent away only from a free bit of a word another set holds.
                let v = b.word(i / WORD_SLOTS);
                assert_eq!(slots_of(v) & 1 << (i % WORD_SLOTS), 0);
                assert_ne!(tag_of(v), TAG_NONE);
            }
        }
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_release_to_none_racing_another_sets_claim() {
    loom::model(|| {
        // A holds bit 0 only; B wants a bit of the same word while A frees it.
        let b = Arc::new(Bitmap::prefilled(LEN, 0, A));
        assert_eq!(b.claim_as(0, A), Claim::Opened);
        let releaser = {
            let b = b.clone();
            thread::spawn(move || release(&b, 0, A))
        };
        let claimer = {
            let b = b.clone();
            thread::spawn(move || b.claim_as(1, B))
        };
        releaser.join().unwrap();
        let got = claimer.join().unwrap();
        let v = b.word(0);
        match got {
            // B got the word only after A's last bit left it: nobody's, then B's.
            Claim::Opened => assert_eq!(v, pack(B, 0b10)),
            Claim::Foreign => assert_eq!(v, pack(TAG_NONE, 0)),
            Claim::Claimed | Claim::Taken | Claim::Mixed => {
                panic!("bit 1 was free, the word never B's nor mixed")
            }
        }
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_retag_to_mixed_covers_every_bit_the_owner_claims() {
    loom::model(|| {
        // The slow path builds a leaf from one value of the word and swaps the tag against
        // it, while the word's owner claims lock-free.
        let b = Arc::new(Bitmap::prefilled(LEN, 3, A));
        let owner = {
            let b = b.clone();
            thread::spawn(move || b.claim_lowest(0, LEN - 1, A).unwrap())
        };
        let slow = {
            let b = b.clone();
            thread::spawn(move || loop {
                let v = b.word(0);
                if b.retag(0, v, pack(TAG_MIXED, slots_of(v))) {
                    return v;
                }
            })
        };
        let (i, how) = owner.join().unwrap();
        let snapshot = slots_of(slow.join().unwrap());
        let now = b.word(0);
        assert_eq!(tag_of(now), TAG_MIXED);
        assert_eq!(i, 3);
        match how {
            // Claimed as the word's owner: then before the retag, so the snapshot (the leaf)
            // has it.
            Claim::Claimed => assert_ne!(snapshot & 1 << i, 0),
            // Claimed in the mixed word: after the snapshot, and the claimer records itself
            // in the leaf.
            Claim::Mixed => assert_eq!(snapshot & 1 << i, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(snapshot | 1 << i, slots_of(now));
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_stale_word_hand_off_never_hides_a_release() {
    loom::model(|| {
        // Both words full; each thread frees a bit in its own word and allocates again. The
        // first release leaves its summary "full" and marks its word stale; the other clears
        // its summary; refills take the stale mark back. No bit may be lost on the way.
        let b = Arc::new(Bitmap::prefilled(LEN, LEN, A));
        let t: Vec<_> = [3u64, S + 8]
            .into_iter()
            .map(|i| {
                let b = b.clone();
                thread::spawn(move || {
                    release(&b, i, A);
                    claim(&b, A).expect("a bit was released")
                })
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![3, S + 8]);
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, A), None);
        // Whatever was left stale, a later release is found by a later search.
        release(&b, S + 8, A);
        assert_eq!(claim(&b, A), Some(S + 8));
        assert!(b.summaries_exact());
    });
}

/// Releases two of set A's bits from two threads at once.
fn release_at_once(b: &Arc<Bitmap>, bits: [u64; 2]) {
    let t = bits.map(|i| {
        let b = b.clone();
        thread::spawn(move || release(&b, i, A))
    });
    for t in t {
        t.join().unwrap();
    }
}

#[test]
fn loom_stale_mark_moves_while_its_old_word_is_released_again() {
    loom::model(|| {
        // Word 0 was un-filled and refilled: full, and still holding the stale mark. A
        // release in word 1 takes the mark (and must set word 0's summary) while another
        // release un-fills word 0 again: whichever order, neither freed bit may be hidden.
        let b = Arc::new(Bitmap::prefilled(LEN, LEN, A));
        release(&b, 3, A);
        assert_eq!(claim(&b, A), Some(3));
        release_at_once(&b, [S + 8, 5]);
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, A), Some(5));
        assert_eq!(claim(&b, A), Some(S + 8));
        assert_eq!(claim(&b, A), None);
        assert!(b.summaries_exact());
    });
}

#[test]
fn loom_stale_mark_moves_while_its_old_word_is_refilled() {
    loom::model(|| {
        // Word 0 stale with one free bit: a claim refills it (keeping the mark) while a
        // release in word 1 tries to take the mark, which it may only do once word 0 is full.
        let b = Arc::new(Bitmap::prefilled(LEN, LEN, A));
        release(&b, 3, A);
        let claimer = {
            let b = b.clone();
            thread::spawn(move || claim(&b, A))
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || release(&b, S + 8, A))
        };
        let got = claimer.join().unwrap();
        releaser.join().unwrap();
        // Bit 3 was free before the claim started, and nothing below it.
        assert_eq!(got, Some(3));
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, A), Some(S + 8));
        assert_eq!(claim(&b, A), None);
        assert!(b.summaries_exact());
    });
}

/// 65 level-0 words, two level-1 summary words, one level-2 word: a bitmap deep enough that
/// filling or emptying one word changes every summary level above it.
const DEEP: u64 = 65 * S;
/// The first bit past the 64 words of the first level-1 summary word.
const TOP: u64 = 64 * S;

#[test]
fn loom_cascade_through_every_level_racing_a_release() {
    loom::model(|| {
        // Everything below the last bit of word 63 taken: claiming it fills word 63, which
        // fills summary word 0, which sets the top bit; releasing 5 empties word 0 and clears
        // the same path.
        let b = Arc::new(Bitmap::prefilled(DEEP, TOP - 1, A));
        assert_eq!(b.depth(), 3);
        let claimer = {
            let b = b.clone();
            thread::spawn(move || claimed(b.claim_lowest(0, DEEP - 1, A)))
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || release(&b, 5, A))
        };
        let got = claimer.join().unwrap();
        releaser.join().unwrap();
        assert!(got == 5 || got == TOP - 1, "claimed {got}");
        assert!(b.summaries_exact());
        let next = claimed(b.claim_lowest(0, DEEP - 1, A));
        assert_eq!(next, if got == 5 { TOP - 1 } else { 5 });
        assert!(b.summaries_exact());
        // Every bit below word 64 is taken again: the top level says so, and a search skips
        // it.
        assert!(b.summary_bit(1, 0));
        assert_eq!(b.claim_lowest(0, DEEP - 1, A), Some((TOP, Claim::Opened)));
    });
}

#[test]
fn loom_two_claims_complete_the_cascade_once() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(DEEP, TOP - 2, A));
        let t: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || claimed(b.claim_lowest(62 * S, DEEP - 1, A)))
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![TOP - 2, TOP - 1]);
        assert!(b.summaries_exact());
        assert!(b.summary_bit(1, 0));
        // Releasing the last claimed bit marks its word stale: no summary changes.
        release(&b, TOP - 1, A);
        assert!(b.summaries_exact());
        assert!(b.summary_bit(1, 0));
        assert_eq!(
            b.claim_lowest(0, DEEP - 1, A),
            Some((TOP - 1, Claim::Claimed))
        );
    });
}

#[test]
fn loom_stale_mark_move_racing_a_release_through_every_level() {
    loom::model(|| {
        // Words 0 to 63 full, so summary word 0 is full and its top-level bit set. Word 0 is
        // un-filled and refilled (full, marked); then a release in word 63 takes the mark
        // while word 0 is released again: the level-1 bit must end up clear, and both bits
        // found.
        let b = Arc::new(Bitmap::prefilled(DEEP, TOP, A));
        release(&b, 5, A);
        assert_eq!(claimed(b.claim_lowest(0, DEEP - 1, A)), 5);
        release_at_once(&b, [TOP - 1, 6]);
        assert!(b.summaries_exact());
        assert!(!b.summary_bit(1, 0));
        for expect in [6, TOP - 1, TOP] {
            assert_eq!(claimed(b.claim_lowest(0, DEEP - 1, A)), expect);
        }
        assert!(b.summaries_exact());
    });
}

/// Sets A and B of the owner-table models, lent tags A and B by [`new_table`].
const OA: Owner = Owner { id: A, tag: A };
const OB: Owner = Owner { id: B, tag: B };

/// An owner table for `LEN` PASIDs that has lent sets A and B their tags.
fn new_table() -> OwnerTable {
    let t = OwnerTable::new(LEN);
    assert_eq!((t.owner_for(A), t.owner_for(B)), (OA, OB));
    t
}

/// Allocates the lowest free PASID of `t` for `set`, with `data`.
fn alloc(t: &OwnerTable, set: Owner, data: u64) -> Option<u32> {
    t.alloc(set, 1, LEN as u32 - 1, data)
        .map(|(pasid, _)| pasid)
}

/// An owner table of two words whose word 0 is mixed, holding `a` for set A and `b` for B.
fn mixed_table(a: &[u32], b: &[u32]) -> Arc<OwnerTable> {
    let t = new_table();
    for &p in a {
        assert!(t.alloc_exact(p, OA, 0));
    }
    for &p in b {
        assert!(t.alloc_exact(p, OB, 0));
    }
    assert_eq!(tag_of(t.taken_word(0)), TAG_MIXED);
    Arc::new(t)
}

#[test]
fn loom_mixed_claim_release_and_find() {
    // Three threads: bounding preemptions keeps the model to minutes while still covering
    // every interleaving with up to three forced switches.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        // A claims the lowest free PASID (3) of a mixed word while B frees its 2 and a reader
        // looks at both: each answer is a state the PASID really passes through.
        let t = mixed_table(&[1], &[2]);
        let claimer = {
            let t = t.clone();
            thread::spawn(move || alloc(&t, OA, 0))
        };
        let releaser = {
            let t = t.clone();
            thread::spawn(move || t.free_one(2, OB))
        };
        // 2 may already be A's again once B has freed it.
        let seen = (t.get(2).0, t.get(3).0);
        assert!(matches!(seen.0, SlotState::Owned(A | B) | SlotState::Free));
        assert!(matches!(seen.1, SlotState::Owned(A) | SlotState::Free));
        let got = claimer.join().unwrap().unwrap();
        releaser.join().unwrap();
        // 2 if B's free came first, else 3.
        assert!(got == 2 || got == 3);
        assert_eq!(t.get(got).0, SlotState::Owned(A));
        let other = 5 - got;
        assert_eq!(t.get(other).0, SlotState::Free);
        assert_eq!(t.get(1).0, SlotState::Owned(A));
        // Only A's PASIDs are left: the word collapsed to A, or A's next claim collapses it.
        t.free_one(got, OA);
        assert_eq!(alloc(&t, OA, 0), Some(2));
        assert_eq!(t.taken_word(0), pack(A, 0b111));
        assert_eq!(t.mixed_words(), 0);
        assert!(t.summaries_exact());
    });
}

#[test]
fn loom_collapse_never_swallows_a_claim_in_flight() {
    loom::model(|| {
        // Word 0 mixed with only A's 1 left in it. A claims (and then tries to collapse the
        // word to itself) while B claims in the same word: B's claim must never end up in a
        // word tagged A, nor in a leaf the word no longer uses.
        let t = mixed_table(&[1], &[2]);
        t.free_one(2, OB);
        let a = {
            let t = t.clone();
            thread::spawn(move || alloc(&t, OA, 0).unwrap())
        };
        let b = {
            let t = t.clone();
            thread::spawn(move || alloc(&t, OB, 0).unwrap())
        };
        let (pa, pb) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(pa, pb);
        assert_eq!(t.get(pa).0, SlotState::Owned(A));
        assert_eq!(t.get(pb).0, SlotState::Owned(B));
        assert!(t.summaries_exact());
    });
}

#[test]
fn loom_last_release_racing_a_new_mixed_word() {
    loom::model(|| {
        // A frees the last PASID of a mixed word (tagging it "nobody" and giving its leaf
        // back) while B allocates there with data, which needs the word mixed again with a
        // new leaf: the old leaf's hand-back must not take the new one.
        let t = mixed_table(&[1], &[2]);
        t.free_one(2, OB);
        let a = {
            let t = t.clone();
            thread::spawn(move || t.free_one(1, OA))
        };
        let b = {
            let t = t.clone();
            thread::spawn(move || alloc(&t, OB, 7).unwrap())
        };
        a.join().unwrap();
        let pb = b.join().unwrap();
        assert!(pb == 1 || pb == 2);
        assert_eq!(t.get(pb), (SlotState::Owned(B), 7));
        assert_eq!(t.get(3 - pb).0, SlotState::Free);
        assert_eq!(tag_of(t.taken_word(0)), TAG_MIXED);
        assert_eq!(t.mixed_words(), 1);
        t.free_one(pb, OB);
        assert_eq!((t.taken_word(0), t.mixed_words()), (pack(TAG_NONE, 1), 0));
        assert!(t.summaries_exact());
    });
}

#[test]
fn loom_last_teardown_racing_a_claim() {
    loom::model(|| {
        // A's 1 is being torn down by one subscriber in a word B shares; the subscriber
        // finishes while B claims.
        let t = mixed_table(&[1], &[2]);
        t.begin_teardown(1, OA, 1);
        let finisher = {
            let t = t.clone();
            thread::spawn(move || t.finish_one(1))
        };
        let b = {
            let t = t.clone();
            thread::spawn(move || alloc(&t, OB, 0).unwrap())
        };
        assert!(finisher.join().unwrap());
        let pb = b.join().unwrap();
        // 1 only once its teardown finished, else 3.
        assert!(pb == 1 || pb == 3);
        assert_eq!(t.get(pb).0, SlotState::Owned(B));
        assert_eq!(t.get(4 - pb).0, SlotState::Free);
        // Only B's PASIDs are left: B's next call in the word collapses it to B.
        assert_eq!(alloc(&t, OB, 0), Some(4 - pb));
        assert_eq!(tag_of(t.taken_word(0)), B);
        assert_eq!(t.mixed_words(), 0);
        assert!(t.summaries_exact());
    });
}

#[test]
fn loom_owned_words_read_while_another_set_makes_the_word_mixed() {
    loom::model(|| {
        // A owns 1 and 3 in a word tagged A and frees them the way a range free does — read
        // what it owns in the word, free that, learn whether anything of its own is left —
        // while B's claim makes the word mixed: A must see exactly its own PASIDs, never B's
        // in-flight bit, and the "anything left" answers must be exact.
        let t = new_table();
        assert!(t.alloc_exact(1, OA, 0) && t.alloc_exact(3, OA, 0));
        assert_eq!(tag_of(t.taken_word(0)), A);
        let t = Arc::new(t);
        let b = {
            let t = t.clone();
            thread::spawn(move || alloc(&t, OB, 0).unwrap())
        };
        assert_eq!(t.owned_in(0, OA), 0b1010);
        assert!(t.free(0, 0b10, OA), "A keeps 3");
        assert_eq!(t.owned_in(0, OA), 0b1000);
        let pb = b.join().unwrap();
        // 1 if A's free came first, else 2.
        assert!(pb == 1 || pb == 2);
        assert_eq!(t.owned_in(0, OB), 1 << pb);
        assert!(!t.free(0, 0b1000, OA), "nothing of A's left");
        assert_eq!(t.owned_in(0, OA), 0);
        assert_eq!(t.get(pb).0, SlotState::Owned(B));
        assert!(t.summaries_exact());
    });
}

#[test]
fn loom_free_and_alloc_again_through_the_sets_fast_path() {
    loom::model(|| {
        // Both words full of set A's PASIDs. Each thread frees one the way a set's free does
        // (the release in a word tagged A, then the guides' upkeep it owes) and allocates
        // again the way a set's allocation does (the first step, whose claim may refill the
        // stale word with no upkeep, then its out-of-line rest): a2 from two threads. Each
        // freed PASID comes back exactly once, the words stay A's and the summaries exact.
        let t = new_table();
        for p in 1..LEN as u32 {
            assert!(t.alloc_exact(p, OA, 0));
        }
        let t = Arc::new(t);
        let threads: Vec<_> = [5u32, S as u32 + 8]
            .into_iter()
            .map(|p| {
                let t = t.clone();
                thread::spawn(move || {
                    let (kept, unfilled) = t.release_tagged(p, A).expect("A's own PASID");
                    assert!(kept && unfilled);
                    assert!(t.released(p, unfilled));
                    alloc(&t, OA, 0).expect("a PASID was freed")
                })
            })
            .collect();
        let mut got: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![5, S as u32 + 8]);
        assert!(t.summaries_exact());
        assert_eq!(alloc(&t, OA, 0), None);
        assert_eq!((tag_of(t.taken_word(0)), tag_of(t.taken_word(1))), (A, A));
        // The guides are kept before anyone allocates again: the word a free un-fills is the
        // stale one or its summary says it has room.
        let (_, unfilled) = t.release_tagged(S as u32 + 8, A).unwrap();
        assert!(t.released(S as u32 + 8, unfilled));
        assert!(t.summaries_exact());
        assert_eq!(alloc(&t, OA, 0), Some(S as u32 + 8));
    });
}

/// Set A (alone in word 0, owning `pasid`) frees it and is retired, and its tag is lent to a
/// new set C (id 3), which claims `next`: the word may carry tag A again, now standing for C.
fn retire_a_and_reuse_its_tag(t: &OwnerTable, pasid: u32, next: u32) {
    assert!(!t.free_one(pasid, OA));
    t.retire_tag(OA);
    let c = t.owner_for(3);
    assert_eq!(c.tag, A, "the lowest free tag is A's again");
    assert!(t.alloc_exact(next, c, 0));
}

#[test]
fn loom_find_never_names_the_next_holder_of_a_tag() {
    loom::model(|| {
        // A reader of PASID 1 racing A's retirement and C's claim of 2 under A's old tag may
        // see 1 as A's or as free, never as C's.
        let t = new_table();
        assert!(t.alloc_exact(1, OA, 0));
        let t = Arc::new(t);
        let reader = {
            let t = t.clone();
            thread::spawn(move || t.get(1).0)
        };
        retire_a_and_reuse_its_tag(&t, 1, 2);
        let seen = reader.join().unwrap();
        assert!(
            matches!(seen, SlotState::Owned(A) | SlotState::Free),
            "{seen:?}"
        );
        assert_eq!(
            (t.get(1).0, t.get(2).0),
            (SlotState::Free, SlotState::Owned(3))
        );
    });
}

#[test]
fn loom_a_word_made_mixed_never_names_the_tags_old_holder() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        // B claims 2 in A's word, which makes the word mixed with a leaf built from one value
        // of it, while A frees 1 and is retired and C claims 1 under A's old tag: the word can
        // come back to the very value B's leaf was built from. The leaf must name C, never A.
        let t = new_table();
        assert!(t.alloc_exact(1, OA, 0));
        let t = Arc::new(t);
        let b = {
            let t = t.clone();
            thread::spawn(move || assert!(t.alloc_exact(2, OB, 0)))
        };
        retire_a_and_reuse_its_tag(&t, 1, 1);
        b.join().unwrap();
        assert_eq!(
            (t.get(1).0, t.get(2).0),
            (SlotState::Owned(3), SlotState::Owned(B))
        );
        assert!(t.summaries_exact());
    });
}
