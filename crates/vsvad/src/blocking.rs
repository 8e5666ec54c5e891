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
//! busy waits in the queue, in arrival order; none is dropped. The queue itself is bounded by
//! the connections: a parked connection reads nothing more, so each has at most one job here.
//!
//! # Stopping
//!
//! [`Pool::stop`] lets the threads finish every job queued (each ends within the
//! invalidation timeout once started: acknowledged, or the device fenced) and joins them, so
//! no change is left half made and every record is queued before the store closes.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

/// Work for a blocking thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Stack size of a blocking thread.
const STACK: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
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

    /// Queues `job`; an idle thread takes it, or a new one if fewer than the limit run.
    /// Runs it here if the pool has no thread and none can be started (or it is stopped),
    /// so a job is never lost.
    pub(crate) fn submit(self: &std::sync::Arc<Self>, job: Job) {
        let mut st = lock(&self.state);
        if st.stopping {
            drop(st);
            job();
            return;
        }
        st.queue.push_back(job);
        if !needs_thread(st.queue.len(), st.idle, st.threads.len(), self.max) {
            drop(st);
            self.work.notify_one();
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
                if let Some(job) = job {
                    job();
                }
            }
            // The threads already running take it in turn.
            Err(e) => tracing::warn!(error = %e, "cannot start another blocking thread"),
        }
    }

    /// A thread's loop: jobs until the pool stops and the queue is empty.
    fn serve(&self) {
        let mut st = lock(&self.state);
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = lock(&self.state);
                continue;
            }
            if st.stopping {
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

    #[test]
    fn a_full_pool_queues_and_runs_every_job_in_order() {
        let pool = Arc::new(Pool::new(2));
        let gate = Arc::new(Barrier::new(3));
        let (tx, rx) = mpsc::channel();
        // Two jobs hold both threads until the gate opens.
        for i in 0..2 {
            let (gate, tx) = (gate.clone(), tx.clone());
            pool.submit(Box::new(move || {
                gate.wait();
                tx.send(i).unwrap();
            }));
        }
        for i in 2..6 {
            let tx = tx.clone();
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        assert_eq!(pool.threads(), 2, "never more threads than the limit");
        assert!(rx.try_recv().is_err(), "the queued jobs wait for a thread");
        gate.wait();
        let mut got: Vec<i32> = (0..6).map(|_| rx.recv_timeout(BOUND).unwrap()).collect();
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
        pool.submit(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(BOUND).unwrap();
        // Two jobs at once: the first holds its thread until the second has run.
        let (ran, second) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || {
            second.recv_timeout(BOUND).unwrap();
            tx.send(()).unwrap();
        }));
        pool.submit(Box::new(move || ran.send(()).unwrap()));
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
            pool.submit(Box::new(move || tx.send(i).unwrap()));
        }
        pool.stop();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
        let tx2 = tx.clone();
        pool.submit(Box::new(move || tx2.send(9).unwrap()));
        assert_eq!(rx.try_recv(), Ok(9));
    }
}
