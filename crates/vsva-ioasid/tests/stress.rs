//! Multi-threaded stress: threads allocate, free, range-free and release concurrently while a
//! subscriber finishes teardowns late, from another thread. Checked throughout:
//! no PASID is ever owned twice, no PASID is handed out while its teardown is unfinished, and
//! at the end every counter balances.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use vsva_ioasid::{IoasidSpace, PasidState, TeardownSubscriber, TeardownTicket};

const BITS: u8 = 12;
const THREADS: u32 = 4;
const ROUNDS: u32 = 200_000;

/// Finishes half of the teardowns at once and sends the rest to a completer thread.
struct Tracker {
    in_teardown: Mutex<HashSet<u32>>,
    later: Mutex<mpsc::Sender<TeardownTicket>>,
    calls: AtomicU32,
}

impl Tracker {
    fn finish(&self, ticket: TeardownTicket) {
        // Forget the PASID first: once the ticket completes the number may be reused at once.
        assert!(self.in_teardown.lock().unwrap().remove(&ticket.pasid()));
        ticket.complete();
    }
}

impl TeardownSubscriber for Tracker {
    fn teardown(&self, pasid: u32, ticket: TeardownTicket) {
        assert!(
            self.in_teardown.lock().unwrap().insert(pasid),
            "PASID {pasid} torn down twice at once"
        );
        if self.calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
            self.finish(ticket);
        } else {
            // Once the completer has gone (end of test), finish here instead.
            let unsent = self.later.lock().unwrap().send(ticket).err();
            if let Some(mpsc::SendError(ticket)) = unsent {
                self.finish(ticket);
            }
        }
    }
    fn name(&self) -> &str {
        "tracker"
    }
}

#[test]
fn concurrent_sets_never_share_a_pasid() {
    let space = IoasidSpace::new(BITS).unwrap();
    let (tx, rx) = mpsc::channel::<TeardownTicket>();
    let tracker = Arc::new(Tracker {
        in_teardown: Mutex::new(HashSet::new()),
        later: Mutex::new(tx),
        calls: AtomicU32::new(0),
    });
    space.subscribe(tracker.clone());
    let completer = {
        let tracker = tracker.clone();
        thread::spawn(move || {
            for ticket in rx {
                tracker.finish(ticket);
            }
        })
    };

    // owner[p] = thread number + 1 while a thread believes it owns p.
    let owner: Arc<Vec<AtomicU32>> =
        Arc::new((0..1u32 << BITS).map(|_| AtomicU32::new(0)).collect());
    let start = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let space = space.clone();
            let owner = owner.clone();
            let tracker = tracker.clone();
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let me = t + 1;
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(t);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut set = space.create_set(u64::from(me), 300).unwrap();
                let mut mine: Vec<u32> = Vec::new();
                for round in 0..ROUNDS {
                    match next() % 16 {
                        0..=8 => {
                            let min = (next() % 4096) as u32 / 2;
                            if let Ok(p) = set.alloc(min, u32::MAX) {
                                assert!(
                                    !tracker.in_teardown.lock().unwrap().contains(&p),
                                    "PASID {p} reused before its teardown finished"
                                );
                                let prev = owner[p as usize].swap(me, Ordering::SeqCst);
                                assert_eq!(prev, 0, "PASID {p} owned by {prev} and {me}");
                                mine.push(p);
                            }
                        }
                        9..=12 if !mine.is_empty() => {
                            let p = mine.swap_remove(next() as usize % mine.len());
                            assert_eq!(owner[p as usize].swap(0, Ordering::SeqCst), me);
                            set.free(p).unwrap();
                        }
                        13 => {
                            let lo = (next() % 4096) as u32;
                            let hi = lo.saturating_add((next() % 600) as u32);
                            mine.retain(|&p| {
                                let doomed = (lo..=hi).contains(&p);
                                if doomed {
                                    assert_eq!(owner[p as usize].swap(0, Ordering::SeqCst), me);
                                }
                                !doomed
                            });
                            let before = set.owned();
                            let freed = set.free_range(lo, hi).unwrap();
                            assert_eq!(before - freed, mine.len() as u32);
                        }
                        14 if round % 64 == 0 => {
                            for &p in &mine {
                                assert_eq!(owner[p as usize].swap(0, Ordering::SeqCst), me);
                            }
                            assert_eq!(set.release(), mine.len() as u32);
                            mine.clear();
                            set = space.create_set(u64::from(me), 300).unwrap();
                        }
                        _ => {
                            // Another thread's PASID is never ours to free.
                            let p = 1 + (next() % 4095) as u32;
                            if !mine.contains(&p) {
                                assert!(set.free(p).is_err());
                            }
                        }
                    }
                    assert_eq!(set.owned(), mine.len() as u32);
                }
                (set, mine)
            })
        })
        .collect();

    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let owned_total: u64 = results.iter().map(|(set, _)| u64::from(set.owned())).sum();
    assert_eq!(space.stats().allocated, owned_total);
    for (set, mine) in &results {
        for &p in mine {
            assert!(set.owns(p));
        }
    }
    drop(results);
    // Every set is gone; once the completer drains, nothing is allocated or freeing.
    let stats = space.stats();
    assert_eq!(stats.allocated, 0);
    assert_eq!(stats.sets, 0);
    // Close the channel so the completer finishes what is queued and exits.
    *tracker.later.lock().unwrap() = mpsc::channel().0;
    completer.join().unwrap();
    assert_eq!(space.stats().freeing, 0);
    assert!(tracker.in_teardown.lock().unwrap().is_empty());
    // The whole space is allocatable again.
    let mut all = space.create_set(0, u32::MAX).unwrap();
    for expect in 1..(1u32 << BITS) {
        assert_eq!(all.alloc(1, u32::MAX), Ok(expect));
    }
}

/// Sets come and go by the hundred (more than the 254 that can hold a word tag at once, so
/// tags are handed back and lent again to new sets all the time, and some sets hold none),
/// all allocating in the same few words, while every thread asks who owns PASIDs at random:
/// `find` must never name a live set for a PASID that set does not own, and always names
/// a set for the PASIDs it does own.
#[test]
fn sets_coming_and_going_never_confuse_find() {
    const SETS_PER_THREAD: usize = 150;
    const ROUNDS: u32 = 40_000;
    let space = IoasidSpace::new(BITS).unwrap();
    let start = Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let space = space.clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (t << 32);
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut sets: Vec<(vsva_ioasid::IoasidSet, Vec<u32>)> = Vec::new();
                start.wait();
                for _ in 0..ROUNDS {
                    match next() % 8 {
                        0 if !sets.is_empty() => {
                            let (set, mine) = sets.swap_remove(next() as usize % sets.len());
                            assert_eq!(set.release(), mine.len() as u32);
                        }
                        1 | 2 if sets.len() < SETS_PER_THREAD => {
                            sets.push((space.create_set(t, 8).unwrap(), Vec::new()));
                        }
                        3 | 4 if !sets.is_empty() => {
                            let i = next() as usize % sets.len();
                            let (set, mine) = &mut sets[i];
                            if let Ok(p) = set.alloc(1, 600) {
                                mine.push(p);
                            } else if let Some(p) = mine.pop() {
                                set.free(p).unwrap();
                            }
                        }
                        _ if !sets.is_empty() => {
                            // Every PASID this thread's set owns is reported as the set's;
                            // any other PASID that `find` gives to one of this thread's
                            // sets must be one it owns.
                            let (set, mine) = &sets[next() as usize % sets.len()];
                            for &p in mine {
                                assert!(matches!(
                                    space.find(p),
                                    Some(PasidState::Allocated { set: s, .. }) if s == set.id()
                                ));
                            }
                            let p = 1 + (next() % 700) as u32;
                            if let Some(PasidState::Allocated { set: owner, .. }) = space.find(p) {
                                if let Some((_, mine)) = sets.iter().find(|(s, _)| s.id() == owner)
                                {
                                    assert!(mine.contains(&p), "PASID {p} named {owner:?}");
                                }
                            }
                        }
                        _ => {}
                    }
                }
                for (set, mine) in sets {
                    assert_eq!(set.release(), mine.len() as u32);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let stats = space.stats();
    assert_eq!((stats.allocated, stats.sets), (0, 0));
}
