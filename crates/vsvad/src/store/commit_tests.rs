//! Who commits: the first waiter of a queued record writes the batch itself, the writer
//! thread writes what nobody waits for, and many waiters at once lose nothing.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use vsva_proto::ResumeToken;

use super::log::replay_bytes;
use super::*;
use crate::store::test_token as token;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vsvad-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn begin(pid: u32) -> Record {
    Record::Begin {
        token: token(pid),
        uid: 0,
        quota: 10_000,
        resume: ResumeToken([pid as u8; 16]),
    }
}

/// What the log in `dir` replays to now (the store still open).
fn on_disk(dir: &Path) -> StoreState {
    replay_bytes(&std::fs::read(dir.join(LOG_NAME)).unwrap()).0
}

/// Lets the writer thread of a store just opened reach its sleep (it wakes only when a
/// record nobody waits for is appended, or after an hour), so that what happens next is not
/// its first look at the queue.
fn let_the_writer_thread_sleep() {
    std::thread::sleep(Duration::from_millis(100));
}

/// Runs `f` on a thread; fails the test if it has not returned within a minute (a wait that
/// nobody ends would otherwise hang it).
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).ok());
    rx.recv_timeout(Duration::from_secs(60))
        .expect("still waiting after a minute")
}

#[test]
fn a_waiter_writes_its_record_itself() {
    let dir = scratch("leader");
    let (store, _) = Store::open(&dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
    let store = Arc::new(store);
    let_the_writer_thread_sleep();
    // `append` does not wake the writer thread: only the wait can write these.
    let _begin = store.append(begin(1));
    let alloc = store.append(Record::Alloc {
        token: token(1),
        pasid: 7,
    });
    let s = store.clone();
    within_a_minute(move || s.wait(alloc)).unwrap();
    assert_eq!(on_disk(&dir).owners.get(&7), Some(&token(1)));
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_nobody_waits_for_is_written_by_the_writer_thread() {
    let dir = scratch("unwaited");
    let (store, _) = Store::open(&dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
    let_the_writer_thread_sleep();
    store.append_unwaited(begin(2));
    let d = dir.clone();
    within_a_minute(move || {
        while !on_disk(&d).processes.contains_key(&token(2)) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn many_waiters_at_once_lose_no_record() {
    const THREADS: u32 = 4;
    const EACH: u32 = 200;
    let dir = scratch("waiters");
    let metrics = Arc::new(Metrics::new());
    let (store, _) = Store::open(&dir, Durability::Sync, 1, metrics.clone()).unwrap();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.wait(store.append(begin(t + 1))).unwrap();
                for i in 0..EACH {
                    let pasid = 1 + t * EACH + i;
                    let ticket = store.append(Record::Alloc {
                        token: token(t + 1),
                        pasid,
                    });
                    store.wait(ticket).unwrap();
                    // Acknowledged: on disk before the wait returned.
                    if i % 50 == 0 {
                        assert_eq!(on_disk_of(&store).owners.get(&pasid), Some(&token(t + 1)));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store.close().unwrap();
    drop(store);
    let (_, state) = Store::open(&dir, Durability::Sync, 2, metrics).unwrap();
    assert_eq!(state.owners.len(), (THREADS * EACH) as usize);
    for t in 0..THREADS {
        assert_eq!(state.processes[&token(t + 1)].pasids.len(), EACH as usize);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What the log of `store` replays to now.
fn on_disk_of(store: &Store) -> StoreState {
    let dir = lock_ignoring_poison(store.leader.as_ref().unwrap())
        .dir
        .clone();
    on_disk(&dir)
}

#[test]
fn after_a_waiters_commit_in_async_mode_the_writer_thread_syncs_in_the_background() {
    let dir = scratch("async");
    let (store, _) = Store::open(&dir, Durability::Async, 1, Arc::new(Metrics::new())).unwrap();
    let store = Arc::new(store);
    let_the_writer_thread_sleep();
    // Written (not synced) by the waiter; the sync is owed to the writer thread.
    store.wait(store.append(begin(3))).unwrap();
    let s = store.clone();
    within_a_minute(move || {
        while lock_ignoring_poison(s.leader.as_ref().unwrap()).unsynced {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_log_the_disk_refused_under_a_waiter_is_rewritten_with_no_further_request() {
    const ENOSPC: i32 = 28;
    let dir = scratch("refused");
    let (store, _) = Store::open(&dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
    let store = Arc::new(store);
    store.wait(store.append(begin(4))).unwrap();
    let_the_writer_thread_sleep();
    // The waiter's own commit fails; a free made in memory must still reach the log, which
    // only the writer thread's retries can do when no request follows.
    store.inject_failures(1, ENOSPC);
    let e = store
        .wait(store.append(Record::FreeRange {
            token: token(4),
            min: 1,
            max: 1,
        }))
        .unwrap_err();
    assert_eq!(e.errno(), Errno::ENOSPC, "{e}");
    let s = store.clone();
    within_a_minute(move || {
        while lock_ignoring_poison(&s.shared.progress).degraded.is_some() {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
