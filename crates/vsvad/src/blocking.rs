//! The pool of blocking threads: where requests that may wait for a device process run, so
//! that no connection worker waits.
//!
//! A connection worker serves many connections; a request that waits in it (an invalidation
//! waiting up to `limits.invalidation_timeout_ms` for a device process's acknowledgement)
//! would stall every other connection of that worker. Such requests are handed here instead
//! (which requests, decided once where a request enters: `Daemon::may_wait`), and their
//! connection is parked until the reply comes back (see `crate::conn`).
//!
//! The pool is bounded: threads are started as jobs arrive, at most
//! `limits.blocking_threads`, and stay until the daemon stops. A job that finds every thread
//! busy waits in the queue; none is dropped. The queue itself is bounded by the connections:
//! a parked connection reads nothing more, so each has at most one job here.
//!
//! # One process's share
//!
//! Each job names the process it runs for, and one process's jobs run on at most
//! [`share`]`(max)` threads at once — half the pool, rounded up. A process whose own device
//! process is slow (or hostile) therefore holds at most half the threads while its
//! invalidations wait, and the other half keeps serving other processes' requests. A thread
//! takes the oldest queued job whose process is under its share; a process's own jobs keep
//! their order.
//!
//! # Stopping
//!
//! [`Pool::stop`] lets the threads finish every job queued (each ends within the
//! invalidation timeout once started: acknowledged, or the device fenced) and joins them, so
//! no change is left half made and every record is queued before the store closes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

use vsva_vfio::ProcessToken;

/// Work for a blocking thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Stack size of a blocking thread.
const STACK: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A queued job and the process it runs for.
struct Queued {
    owner: ProcessToken,
    job: Job,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Jobs running now, per process (no entry: none).
    running: HashMap<ProcessToken, usize>,
    /// Threads waiting for a job.
    idle: usize,
    threads: Vec<JoinHandle<()>>,
    stopping: bool,
}

/// Whether a new thread must start for the jobs waiting: when they outnumber the idle
/// threads (an idle thread counts as idle until it wakes, so two jobs queued at once for one
/// idle thread must not wait for each other), and the pool is under its limit.
fn needs_thread(queued: usize, idle: usize, threads: usize, max: usize) -> bool {
    queued > idle && threads < max
}

/// How many threads of a pool of `max` one process's jobs may hold at once: half, rounded
/// up (so a pool of one thread is all one process's when it is the only one asking).
pub(crate) fn share(max: usize) -> usize {
    max.div_ceil(2)
}

impl State {
    /// Takes the oldest queued job whose process holds fewer than `share` threads.
    fn take_runnable(&mut self, share: usize) -> Option<Queued> {
        let running = &self.running;
        let i = self
            .queue
            .iter()
            .position(|q| running.get(&q.owner).copied().unwrap_or(0) < share)?;
        self.queue.remove(i)
    }
}

/// A bounded pool of threads that run jobs which may block.
pub(crate) struct Pool {
    max: usize,
    state: Mutex<State>,
    work: Condvar,
}

impl Pool {
    /// A pool of at most `max` threads (at least one); none is started yet.
    pub(crate) fn new(max: usize) -> Pool {
        Pool {
            max: max.max(1),
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        }
    }

    /// Queues `job`, run for process `owner`; an idle thread takes it, or a new one if fewer
    /// than the limit run, once `owner` holds fewer than its [`share`] of the threads. Runs
    /// it here if the pool has no thread and none can be started (or it is stopped), so a
    /// job is never lost.
    pub(crate) fn submit(self: &std::sync::Arc<Self>, owner: ProcessToken, job: Job) {
        let mut st = lock(&self.state);
        if st.stopping {
            drop(st);
            job();
            return;
        }
        st.queue.push_back(Queued { owner, job });
        if !needs_thread(st.queue.len(), st.idle, st.threads.len(), self.max) {
            drop(st);
            // Every idle thread looks: the one woken might not be allowed this job's
            // process while another queued job is runnable.
            self.work.notify_all();
            return;
        }
        let pool = self.clone();
        let n = st.threads.len();
        match std::thread::Builder::new()
            .name(format!("vsvad-blocking-{n}"))
            .stack_size(STACK)
            .spawn(move || pool.serve())
        {
            Ok(t) => st.threads.push(t),
            Err(e) if st.threads.is_empty() => {
                tracing::warn!(error = %e, "cannot start a blocking thread: running the request here");
                let job = st.queue.pop_back();
                drop(st);
                if let Some(q) = job {
                    (q.job)();
                }
            }
            // The threads already running take it in turn.
            Err(e) => tracing::warn!(error = %e, "cannot start another blocking thread"),
        }
    }

    /// A thread's loop: jobs until the pool stops and the queue is empty.
    fn serve(&self) {
        let share = share(self.max);
        let mut st = lock(&self.state);
        loop {
            if let Some(Queued { owner, job }) = st.take_runnable(share) {
                *st.running.entry(owner).or_default() += 1;
                drop(st);
                job();
                st = lock(&self.state);
                if let Some(n) = st.running.get_mut(&owner) {
                    *n -= 1;
                    if *n == 0 {
                        st.running.remove(&owner);
                    }
                }
                // A job of `owner` held back by its share may run now, on an idle thread
                // if this one takes another; and a stopping pool's idle threads must see
                // the queue empty.
                if !st.queue.is_empty() || st.stopping {
                    self.work.notify_all();
                }
                continue;
            }
            if st.stopping && st.queue.is_empty() {
                return;
            }
            st.idle += 1;
            st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }

    /// Runs every queued job to its end, then joins the threads. Jobs submitted afterwards
    /// run in the caller.
    pub(crate) fn stop(&self) {
        let threads = {
            let mut st = lock(&self.state);
            st.stopping = true;
            std::mem::take(&mut st.threads)
        };
        self.work.notify_all();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a blocking thread panicked");
                debug_assert!(false, "a blocking thread panicked");
            }
        }
    }

    /// Threads started so far.
    #[cfg(test)]
    fn threads(&self) -> usize {
        lock(&self.state).threads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    const BOUND: Duration = Duration::from_secs(20);

    fn process(n: u32) -> ProcessToken {
        ProcessToken::new(n, 1000 + u64::from(n))
    }

    #[test]
    fn a_full_pool_queues_and_runs_every_job_in_order() {
        let pool = Arc::new(Pool::new(2));
        let gate = Arc::new(Barrier::new(3));
        let (tx, rx) = mpsc::channel();
        // Two jobs hold both threads until the gate opens.
        for i in 0..2u32 {
            let (gate, tx) = (gate.clone(), tx.clone());
            pool.submit(
                process(i),
                Box::new(move || {
                    gate.wait();
                    tx.send(i).unwrap();
                }),
            );
        }
        for i in 2..6u32 {
            let tx = tx.clone();
            pool.submit(process(i), Box::new(move || tx.send(i).unwrap()));
        }
        assert_eq!(pool.threads(), 2, "never more threads than the limit");
        assert!(rx.try_recv().is_err(), "the queued jobs wait for a thread");
        gate.wait();
        let mut got: Vec<u32> = (0..6).map(|_| rx.recv_timeout(BOUND).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3, 4, 5], "none dropped");
        pool.stop();
    }

    #[test]
    fn a_thread_starts_when_the_jobs_waiting_outnumber_the_idle_threads() {
        // (queued, idle, threads, max) -> a new thread
        let cases = [
            ((1, 0, 0, 4), true),
            ((1, 1, 1, 4), false),
            ((2, 1, 1, 4), true),
            ((2, 2, 2, 4), false),
            ((3, 0, 4, 4), false),
            ((1, 0, 3, 4), true),
        ];
        for ((q, i, t, m), want) in cases {
            assert_eq!(
                needs_thread(q, i, t, m),
                want,
                "{q} queued, {i} idle, {t} of {m}"
            );
        }
    }

    #[test]
    fn a_job_never_waits_behind_another_while_the_pool_has_room() {
        let pool = Arc::new(Pool::new(3));
        let (tx, rx) = mpsc::channel();
        pool.submit(process(1), Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(BOUND).unwrap();
        // Two jobs at once: the first holds its thread until the second has run.
        let (ran, second) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        pool.submit(
            process(1),
            Box::new(move || {
                second.recv_timeout(BOUND).unwrap();
                tx.send(()).unwrap();
            }),
        );
        pool.submit(process(1), Box::new(move || ran.send(()).unwrap()));
        rx.recv_timeout(BOUND)
            .expect("the second job ran on a thread of its own");
        assert!(pool.threads() <= 3);
        pool.stop();
    }

    #[test]
    fn stop_finishes_the_queued_jobs_and_later_ones_run_in_the_caller() {
        let pool = Arc::new(Pool::new(1));
        let (tx, rx) = mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            pool.submit(process(1), Box::new(move || tx.send(i).unwrap()));
        }
        pool.stop();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
        let tx2 = tx.clone();
        pool.submit(process(1), Box::new(move || tx2.send(9).unwrap()));
        assert_eq!(rx.try_recv(), Ok(9));
    }

    #[test]
    fn one_process_holds_at_most_half_the_pool() {
        assert_eq!([1, 2, 3, 4, 5].map(share), [1, 1, 2, 2, 3]);
        // A pool of 4: process 1's jobs block (its device process does not answer); only
        // two of them may hold threads, so process 2's job runs on a third while they wait.
        let pool = Arc::new(Pool::new(4));
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Arc::new(Mutex::new(blocked));
        let (done, finished) = mpsc::channel();
        for i in 0..4u32 {
            let (blocked, done) = (blocked.clone(), done.clone());
            pool.submit(
                process(1),
                Box::new(move || {
                    lock(&blocked).recv_timeout(BOUND).unwrap();
                    done.send(i).unwrap();
                }),
            );
        }
        let (tx, rx) = mpsc::channel();
        pool.submit(process(2), Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(BOUND)
            .expect("another process's job ran while the first one's waited");
        {
            let st = lock(&pool.state);
            assert_eq!(
                st.running.get(&process(1)),
                Some(&2),
                "process 1 holds its share"
            );
            assert_eq!(st.queue.len(), 2, "its other jobs wait");
        }
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        let mut got: Vec<u32> = (0..4)
            .map(|_| finished.recv_timeout(BOUND).unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [0, 1, 2, 3],
            "process 1's held-back jobs ran once it had room"
        );
        pool.stop();
    }
}
