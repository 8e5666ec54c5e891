//! Side-by-side timing: interleaved rounds of vsva and a peer, best round of each kept.

use std::time::Instant;

use crate::HIT_PAGES;

/// Rounds of every side-by-side measurement: the best round of each side is kept, and the
/// two sides' rounds alternate, so a change of load on a shared machine hits both alike.
/// Rounds are short (well under a scheduler time slice), so on a loaded machine some of them
/// run undisturbed.
pub(crate) const ROUNDS: u64 = 50;
/// Rounds of the two-thread measurements (each round starts its threads).
pub(crate) const THREAD_ROUNDS: u64 = 10;

/// ns per call of `f` over `iters` calls (one round).
pub(crate) fn time(iters: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// Best-of-`ROUNDS` ns per call of `ours` and of `theirs`, `iters` calls in all for each,
/// rounds interleaved.
pub(crate) fn pair(iters: u64, mut ours: impl FnMut(), mut theirs: impl FnMut()) -> (f64, f64) {
    let (mut a, mut b) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        a = a.min(time(iters / ROUNDS, &mut ours));
        b = b.min(time(iters / ROUNDS, &mut theirs));
    }
    (a, b)
}

/// Aggregate ns per call with `threads` threads making `per_thread` calls each, over
/// `HIT_PAGES` pages (`f` gets the page index).
pub(crate) fn throughput(threads: usize, per_thread: u64, f: &(impl Fn(u64) + Sync)) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..threads {
            s.spawn(move || {
                for i in 0..per_thread {
                    f(i.wrapping_mul(31).wrapping_add(k as u64) % HIT_PAGES);
                }
            });
        }
    });
    t.elapsed().as_nanos() as f64 / (threads as f64 * per_thread as f64)
}

/// [`pair`] for [`throughput`] at `threads` threads.
pub(crate) fn pair_threads(
    threads: usize,
    per_thread: u64,
    ours: impl Fn(u64) + Sync,
    theirs: impl Fn(u64) + Sync,
) -> (f64, f64) {
    let (mut a, mut b) = (f64::MAX, f64::MAX);
    for _ in 0..THREAD_ROUNDS {
        a = a.min(throughput(threads, per_thread / THREAD_ROUNDS, &ours));
        b = b.min(throughput(threads, per_thread / THREAD_ROUNDS, &theirs));
    }
    (a, b)
}

/// One line of the summary: vsva against one peer.
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) ours: f64,
    pub(crate) peer: &'static str,
    pub(crate) theirs: f64,
}

pub(crate) fn row(
    scenario: impl Into<String>,
    (ours, theirs): (f64, f64),
    peer: &'static str,
) -> Row {
    Row {
        scenario: scenario.into(),
        ours,
        peer,
        theirs,
    }
}
