//! Multi-threaded stress: threads allocate, free, range-free and release concurrently while a
//! subscriber finishes teardowns late, from another thread. Checked throughout:
//! no PASID is ever owned twice, no PASID is handed out while its teardown is unfinished, and
//! at the end every counter balances.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use vsva_ioasid::{IoasidSpace, TeardownSubscriber, TeardownTicket};

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
