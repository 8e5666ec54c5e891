//! `loom` models of the lock-free bitmap and its word tags, down to a bitmap deep enough
//! that one update changes every summary level. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p vsva-ioasid --release --lib loom`.

use loom::sync::Arc;
use loom::thread;

use crate::bitmap::{pack, slots_of, tag_of, Bitmap, Claim, TAG_MIXED, TAG_NONE, WORD_SLOTS};

/// 64 bits: two level-0 words under one summary word.
const LEN: u64 = 64;
/// The set most models claim for, and a second one.
const A: u32 = 1;
const B: u32 = 2;

fn claim(b: &Bitmap, tag: u32) -> Option<u64> {
    b.claim_lowest(0, LEN - 1, tag)
        .map(|r| r.expect("word of another set"))
}

fn release(b: &Bitmap, i: u64, tag: u32) {
    assert!(b.release_as(i / WORD_SLOTS, 1 << (i % WORD_SLOTS), tag));
}

#[test]
fn loom_concurrent_claims_are_unique_and_lowest() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(LEN, 30, A));
        let t: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || claim(&b, A).unwrap())
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![30, 31]);
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, A), Some(32));
    });
}

#[test]
fn loom_fill_racing_release_leaves_exact_summary() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(LEN, 31, A));
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
            31 => 10,
            10 => 31,
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
                release(&b, 40, A);
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
                assert!(i == 5 || i == 40);
                let other = if i == 5 { 40 } else { 5 };
                assert_eq!(claim(&b, A), Some(other));
            }
            None => {
                assert_eq!(claim(&b, A), Some(5));
                assert_eq!(claim(&b, A), Some(40));
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
        let b = Arc::new(Bitmap::prefilled(LEN, 32, A));
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
        assert!(got == 3 || got == 32, "claimed {got}");
        // Whatever the interleaving, bit 3 (if not taken) is found again before anything above.
        let next = claim(&b, A).unwrap();
        assert_eq!(next, if got == 3 { 32 } else { 3 });
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
        let got: Vec<(u32, Result<u64, u64>)> = t.into_iter().map(|t| t.join().unwrap()).collect();
        let claimed: Vec<(u32, u64)> = got
            .iter()
            .filter_map(|&(tag, r)| r.ok().map(|i| (tag, i)))
            .collect();
        assert!(!claimed.is_empty());
        for &(tag, i) in &claimed {
            // Every claimed bit sits in a word tagged with its claimer.
            assert_eq!(tag_of(b.word(i / WORD_SLOTS)), tag);
        }
        for &(_, r) in &got {
            if let Err(i) = r {
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
        assert_eq!(b.claim_as(0, A), Claim::Claimed);
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
            // B got the word only after A's last bit left it.
            Claim::Claimed => assert_eq!(v, pack(B, 0b10)),
            Claim::Foreign => assert_eq!(v, pack(TAG_NONE, 0)),
            Claim::Taken => panic!("bit 1 was free"),
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
        let got = owner.join().unwrap();
        let snapshot = slots_of(slow.join().unwrap());
        let now = b.word(0);
        assert_eq!(tag_of(now), TAG_MIXED);
        match got {
            // Claimed lock-free: then before the retag, so the snapshot (the leaf) has it.
            Ok(i) => assert_ne!(snapshot & 1 << i, 0),
            // Sent to the slow path: nothing changed after the snapshot.
            Err(i) => {
                assert_eq!(i, 3);
                assert_eq!(snapshot, slots_of(now));
            }
        }
        assert_eq!(snapshot, slots_of(now));
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
        let t: Vec<_> = [3u64, 40]
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
        assert_eq!(got, vec![3, 40]);
        assert!(b.summaries_exact());
        assert_eq!(claim(&b, A), None);
        // Whatever was left stale, a later release is found by a later search.
        release(&b, 40, A);
        assert_eq!(claim(&b, A), Some(40));
        assert!(b.summaries_exact());
    });
}

/// 65 level-0 words, two level-1 summary words, one level-2 word: a bitmap deep enough that
/// filling or emptying one word changes every summary level above it.
const DEEP: u64 = 64 * 32 + 32;

#[test]
fn loom_cascade_through_every_level_racing_a_release() {
    loom::model(|| {
        // Everything below 2 047 taken: claiming 2 047 fills word 63, which fills summary word
        // 0, which sets the top bit; releasing 5 empties word 0 and clears the same path.
        let b = Arc::new(Bitmap::prefilled(DEEP, 2047, A));
        assert_eq!(b.depth(), 3);
        let claimer = {
            let b = b.clone();
            thread::spawn(move || b.claim_lowest(0, DEEP - 1, A).unwrap().unwrap())
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || release(&b, 5, A))
        };
        let got = claimer.join().unwrap();
        releaser.join().unwrap();
        assert!(got == 5 || got == 2047, "claimed {got}");
        assert!(b.summaries_exact());
        let next = b.claim_lowest(0, DEEP - 1, A).unwrap().unwrap();
        assert_eq!(next, if got == 5 { 2047 } else { 5 });
        assert!(b.summaries_exact());
        // Every bit below 2 048 is taken again: the top level says so, and a search skips it.
        assert!(b.summary_bit(1, 0));
        assert_eq!(b.claim_lowest(0, DEEP - 1, A), Some(Ok(2048)));
    });
}

#[test]
fn loom_two_claims_complete_the_cascade_once() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(DEEP, 2046, A));
        let t: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.claim_lowest(2000, DEEP - 1, A).unwrap().unwrap())
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![2046, 2047]);
        assert!(b.summaries_exact());
        assert!(b.summary_bit(1, 0));
        // Releasing the last claimed bit marks its word stale: no summary changes.
        release(&b, 2047, A);
        assert!(b.summaries_exact());
        assert!(b.summary_bit(1, 0));
        assert_eq!(b.claim_lowest(0, DEEP - 1, A), Some(Ok(2047)));
    });
}
