//! `loom` models of the lock-free bitmap, down to a bitmap deep enough that one update
//! changes every summary level. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p vsva-ioasid --release --lib loom`.

use loom::sync::Arc;
use loom::thread;

use crate::bitmap::Bitmap;

/// 128 bits: two level-0 words under one summary word.
const LEN: u64 = 128;

fn fill(b: &Bitmap, upto: u64) {
    for i in 0..upto {
        assert!(b.claim(i));
    }
}

/// In a quiescent state every summary bit must match its word exactly.
fn summaries_exact(b: &Bitmap) -> bool {
    b.summaries_exact()
}

#[test]
fn loom_concurrent_claims_are_unique_and_lowest() {
    loom::model(|| {
        let b = Arc::new(Bitmap::new(LEN));
        fill(&b, 62);
        let t: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.claim_lowest(0, LEN - 1).unwrap())
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![62, 63]);
        assert!(summaries_exact(&b));
        assert_eq!(b.claim_lowest(0, LEN - 1), Some(64));
    });
}

#[test]
fn loom_fill_racing_release_leaves_exact_summary() {
    loom::model(|| {
        let b = Arc::new(Bitmap::new(LEN));
        fill(&b, 63);
        let filler = {
            let b = b.clone();
            thread::spawn(move || b.claim_lowest(0, LEN - 1).unwrap())
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || b.release(10))
        };
        let filled = filler.join().unwrap();
        releaser.join().unwrap();
        assert!(summaries_exact(&b));
        // Whichever bit the filler did not get is found next: no stale "full" hides it.
        let next = match filled {
            63 => 10,
            10 => 63,
            other => panic!("filler claimed {other}"),
        };
        assert_eq!(b.claim_lowest(0, LEN - 1), Some(next));
        assert!(summaries_exact(&b));
    });
}

#[test]
fn loom_claim_never_misses_a_bit_released_before_it_started() {
    loom::model(|| {
        let b = Arc::new(Bitmap::new(LEN));
        fill(&b, LEN);
        let releaser = {
            let b = b.clone();
            thread::spawn(move || {
                b.release(70);
                b.release(5);
            })
        };
        let claimer = {
            let b = b.clone();
            thread::spawn(move || b.claim_lowest(0, LEN - 1))
        };
        releaser.join().unwrap();
        let got = claimer.join().unwrap();
        // Whatever the interleaving, the claimer gets a released bit or nothing, never twice.
        match got {
            Some(i) => {
                assert!(i == 5 || i == 70);
                let other = if i == 5 { 70 } else { 5 };
                assert_eq!(b.claim_lowest(0, LEN - 1), Some(other));
            }
            None => {
                assert_eq!(b.claim_lowest(0, LEN - 1), Some(5));
                assert_eq!(b.claim_lowest(0, LEN - 1), Some(70));
            }
        }
        assert_eq!(b.claim_lowest(0, LEN - 1), None);
        assert!(summaries_exact(&b));
    });
}

#[test]
fn loom_hint_never_hides_a_release_racing_its_advance() {
    loom::model(|| {
        let b = Arc::new(Bitmap::new(LEN));
        // Word 0 full, so a claim lands in word 1 and moves the search hint past word 0.
        fill(&b, 64);
        let claimer = {
            let b = b.clone();
            thread::spawn(move || b.claim_lowest(0, LEN - 1).unwrap())
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || b.release(3))
        };
        let got = claimer.join().unwrap();
        releaser.join().unwrap();
        assert!(got == 3 || got == 64, "claimed {got}");
        // Whatever the interleaving, bit 3 (if not taken) is found again before anything above.
        let next = b.claim_lowest(0, LEN - 1).unwrap();
        assert_eq!(next, if got == 3 { 64 } else { 3 });
        assert!(summaries_exact(&b));
    });
}

/// 65 level-0 words, two level-1 words, one level-2 word: a bitmap deep enough that filling
/// or emptying one word changes every summary level above it.
const DEEP: u64 = 64 * 64 + 64;

#[test]
fn loom_cascade_through_every_level_racing_a_release() {
    loom::model(|| {
        // Everything below 4 095 set: claiming 4 095 fills word 63, which fills level-1 word 0,
        // which sets the top bit; releasing 5 empties word 0 and clears the same path.
        let b = Arc::new(Bitmap::prefilled(DEEP, 4095));
        assert_eq!(b.depth(), 3);
        let claimer = {
            let b = b.clone();
            thread::spawn(move || b.claim_lowest(0, DEEP - 1).unwrap())
        };
        let releaser = {
            let b = b.clone();
            thread::spawn(move || b.release(5))
        };
        let got = claimer.join().unwrap();
        releaser.join().unwrap();
        assert!(got == 5 || got == 4095, "claimed {got}");
        assert!(b.summaries_exact());
        let next = b.claim_lowest(0, DEEP - 1).unwrap();
        assert_eq!(next, if got == 5 { 4095 } else { 5 });
        assert!(b.summaries_exact());
        // Every bit below 4 096 is set again: the top level says so, and a search skips it all.
        assert!(b.summary_bit(2, 0));
        assert_eq!(b.claim_lowest(0, DEEP - 1), Some(4096));
    });
}

#[test]
fn loom_two_claims_complete_the_cascade_once() {
    loom::model(|| {
        let b = Arc::new(Bitmap::prefilled(DEEP, 4094));
        let t: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.claim_lowest(4000, DEEP - 1).unwrap())
            })
            .collect();
        let mut got: Vec<u64> = t.into_iter().map(|t| t.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, vec![4094, 4095]);
        assert!(b.summaries_exact());
        assert!(b.summary_bit(2, 0));
        // Releasing the last claimed bit walks the cascade back down, exactly.
        b.release(4095);
        assert!(b.summaries_exact());
        assert!(!b.summary_bit(2, 0));
        assert_eq!(b.claim_lowest(0, DEEP - 1), Some(4095));
    });
}
