//! The connection workers: one thread per core, each serving its share of the connections
//! with one `epoll` instance.
//!
//! # Why an event loop, and why `rustix`
//!
//! A thread per connection made 64 clients slower than 8 on two cores: every request woke
//! its own thread, and the scheduler's switches between 64 runnable threads cost more than
//! the requests. Here a few workers each wait on many sockets and handle, per wake-up, every
//! ready connection's complete frames. `epoll` is reached through `rustix`, which the daemon
//! already uses for `recvmsg` with `SCM_RIGHTS`, credentials and signals: the connections
//! stay plain `UnixStream`s read with the same call, and no second I/O abstraction (`mio`'s
//! registry and tokens over the same `epoll`) is added for the few calls needed here
//! (create, add, modify, wait, and an `eventfd` to wake a worker).
//!
//! # One wake-up
//!
//! 1. Connections handed over by the accept loop are registered, and requests that came
//!    back from the blocking pool are given to their parked connections ([`Conn::resume`]).
//! 2. Every ready connection reads what its socket has and handles its complete frames
//!    ([`Conn::read_and_handle`]); changes queue their store records. A request that may
//!    wait for a device process is handed to the blocking pool instead, and its connection
//!    parked (see `crate::conn`); a parked connection with nothing to write leaves the
//!    `epoll` set until its request comes back.
//! 3. Every connection that handled requests waits for its records to be durable
//!    ([`Conn::settle`]): the first wait covers the records of all of them, so one group
//!    commit serves the whole wake-up.
//! 4. Their replies are written, one `write` per connection ([`Conn::write`]).
//! 5. Deadlines are checked, finished connections closed, and each socket's `epoll` interest
//!    set to what its connection waits for (reading stops while a connection's unwritten
//!    replies are at `limits.max_queued_bytes`).
//!
//! Level-triggered `epoll` is used: a connection that stops early (a limit) is simply asked
//! again, and nothing is lost if a wake-up does not drain a socket.
//!
//! # Shutdown
//!
//! The accept loop stops first; `Daemon::begin_shutdown` shuts every connection's reading
//! side, so each reads what the client already sent, answers it, sees the end of its stream
//! and closes. [`Workers::drain`] waits for every connection to close, then
//! [`Workers::stop`] ends the threads.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{epoll, Timespec};

use crate::conn::{Conn, Interest};
use crate::daemon::{Daemon, Session};
use crate::parked::{Park, Returns};
use crate::wake::Wake;

/// The `epoll` data of a worker's wake-up `eventfd` (a connection's is its slot).
const WAKE: u64 = u64::MAX;

/// The `epoll` data of the `eventfd` that says parked requests came back.
const RETURNS: u64 = u64::MAX - 1;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Stack size of a worker thread.
const WORKER_STACK: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the accept loop and a worker share.
struct Inbox {
    /// Connections accepted and registered with the daemon, not yet taken by the worker.
    new: Mutex<Vec<(UnixStream, Session)>>,
    /// Written to wake the worker.
    wake: Wake,
    /// Connections the worker serves (or has been handed).
    load: AtomicUsize,
}

impl Inbox {
    fn wake(&self) {
        if let Err(e) = self.wake.wake() {
            // A full counter (2^64 - 2 wake-ups pending) already wakes the worker.
            tracing::debug!(error = %e, "cannot wake a worker");
        }
    }
}

/// Counts the connections of all workers, so a shutdown can wait for them.
#[derive(Default)]
struct Live {
    count: Mutex<usize>,
    zero: Condvar,
}

impl Live {
    fn add(&self, n: usize) {
        *lock(&self.count) += n;
    }

    fn remove(&self, n: usize) {
        let mut c = lock(&self.count);
        *c = c.saturating_sub(n);
        if *c == 0 {
            self.zero.notify_all();
        }
    }
}

/// The running workers.
pub struct Workers {
    inboxes: Vec<Arc<Inbox>>,
    threads: Vec<JoinHandle<()>>,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    /// Starts `n` workers (at least one).
    ///
    /// # Errors
    ///
    /// An `epoll` instance, an `eventfd` or a thread could not be created; the workers
    /// already started are stopped.
    pub fn start(daemon: &Arc<Daemon>, n: usize) -> io::Result<Workers> {
        let mut w = Workers {
            inboxes: Vec::new(),
            threads: Vec::new(),
            live: Arc::new(Live::default()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for i in 0..n.max(1) {
            let started = (|| {
                let wake = Wake::new()?;
                let epoll = wake.epoll(WAKE)?;
                let returns = Arc::new(Returns::new()?);
                epoll::add(
                    &epoll,
                    returns.fd(),
                    epoll::EventData::new_u64(RETURNS),
                    epoll::EventFlags::IN,
                )?;
                let inbox = Arc::new(Inbox {
                    new: Mutex::new(Vec::new()),
                    wake,
                    load: AtomicUsize::new(0),
                });
                let worker = Worker {
                    daemon: daemon.clone(),
                    epoll,
                    inbox: inbox.clone(),
                    live: w.live.clone(),
                    stop: w.stop.clone(),
                    conns: Slots::default(),
                    returns,
                };
                let thread = std::thread::Builder::new()
                    .name(format!("vsvad-worker-{i}"))
                    .stack_size(WORKER_STACK)
                    .spawn(move || {
                        crate::metrics::use_worker_shard(i);
                        worker.run();
                    })?;
                io::Result::Ok((inbox, thread))
            })();
            match started {
                Ok((inbox, thread)) => {
                    w.inboxes.push(inbox);
                    w.threads.push(thread);
                }
                Err(e) => {
                    w.stop();
                    return Err(e);
                }
            }
        }
        Ok(w)
    }

    /// Hands an accepted connection (registered with the daemon) to the least loaded worker.
    pub fn assign(&self, stream: UnixStream, session: Session) {
        let Some(inbox) = self
            .inboxes
            .iter()
            .min_by_key(|i| i.load.load(Ordering::Relaxed))
        else {
            return;
        };
        inbox.load.fetch_add(1, Ordering::Relaxed);
        self.live.add(1);
        lock(&inbox.new).push((stream, session));
        inbox.wake();
    }

    /// Waits until every connection has closed, for at most `timeout`. Returns how many are
    /// still open.
    pub fn drain(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut n = lock(&self.live.count);
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = self
                .live
                .zero
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *n
    }

    /// Stops the workers and waits for them; connections still open are closed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for i in &self.inboxes {
            i.wake();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a connection worker panicked");
                debug_assert!(false, "a connection worker panicked");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One worker thread's state.
struct Worker {
    daemon: Arc<Daemon>,
    epoll: OwnedFd,
    inbox: Arc<Inbox>,
    live: Arc<Live>,
    stop: Arc<AtomicBool>,
    /// Each connection with the interest its socket is registered for (`None`: not in the
    /// `epoll` set, while it is parked with nothing to write).
    conns: Slots<(Conn, Option<Interest>)>,
    /// Parked requests coming back from the blocking pool.
    returns: Arc<Returns>,
}

/// A worker's connections, each in a numbered slot that is also its `epoll` data: an event
/// finds its connection by index, with no hashing. A closed connection's slot is reused.
struct Slots<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// The slot the next [`Slots::insert`] takes.
    fn vacant(&self) -> u64 {
        self.free.last().copied().unwrap_or(self.slots.len()) as u64
    }

    fn insert(&mut self, entry: T) -> u64 {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        i as u64
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.slots.get_mut(usize::try_from(id).ok()?)?.as_mut()
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let i = usize::try_from(id).ok()?;
        let entry = self.slots.get_mut(i)?.take();
        if entry.is_some() {
            self.free.push(i);
        }
        entry
    }

    /// The slots in use.
    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u64)
    }
}

impl Worker {
    fn run(mut self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        // Connections to read this round, and to write.
        let mut ready: Vec<u64> = Vec::new();
        let mut again: Vec<u64> = Vec::new();
        let mut writable: Vec<u64> = Vec::new();
        let mut touched: Vec<u64> = Vec::new();
        // A deadline no later than every connection's earliest one.
        let mut next_check: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let timeout = if again.is_empty() {
                next_check.map(|t| {
                    let d = t.saturating_duration_since(Instant::now());
                    Timespec {
                        tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
                        // Round up so a wake-up is never early.
                        tv_nsec: i64::from((d.subsec_micros() + 1).min(999_999)) * 1000,
                    }
                })
            } else {
                Some(Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                })
            };
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timeout.as_ref(),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait failed; the worker stops");
                    debug_assert!(false, "epoll_wait failed: {e}");
                    break;
                }
            }
            ready.clear();
            writable.clear();
            for ev in &events {
                let id = ev.data.u64();
                if id == WAKE {
                    self.take_new(&mut ready);
                    continue;
                }
                if id == RETURNS {
                    self.take_returned(&mut ready);
                    continue;
                }
                let f = ev.flags;
                if f.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    ready.push(id);
                }
                // A peer gone (HUP, ERR) makes a waiting write fail, which closes the
                // connection even while it reads nothing.
                if f.intersects(
                    epoll::EventFlags::OUT | epoll::EventFlags::HUP | epoll::EventFlags::ERR,
                ) {
                    writable.push(id);
                }
            }
            ready.append(&mut again);
            ready.sort_unstable();
            ready.dedup();
            // Read and handle every ready connection's frames.
            for &id in &ready {
                if let Some((c, _)) = self.conns.get_mut(id) {
                    c.read_and_handle();
                }
            }
            // Make their changes durable (one group commit for all), then write.
            for &id in &ready {
                if let Some((c, _)) = self.conns.get_mut(id) {
                    c.settle();
                }
            }
            writable.extend_from_slice(&ready);
            writable.sort_unstable();
            writable.dedup();
            for &id in &writable {
                if let Some((c, _)) = self.conns.get_mut(id) {
                    c.write();
                }
            }
            // Deadlines: a full pass only when the earliest one may have passed.
            let now = Instant::now();
            touched.clear();
            touched.extend_from_slice(&writable);
            if next_check.is_some_and(|t| t <= now) {
                next_check = None;
                touched.extend(self.conns.ids());
                touched.sort_unstable();
                touched.dedup();
                for &id in &touched {
                    if let Some((c, _)) = self.conns.get_mut(id) {
                        c.check_deadlines(now);
                    }
                }
            }
            for &id in &touched {
                let Some((c, registered)) = self.conns.get_mut(id) else {
                    continue;
                };
                if c.finished().is_some() {
                    self.close(id);
                    continue;
                }
                let want = c.interest();
                if want != *registered {
                    let data = epoll::EventData::new_u64(id);
                    let changed = match (*registered, want) {
                        (Some(_), Some(w)) => epoll::modify(&self.epoll, c.fd(), data, flags(w)),
                        (None, Some(w)) => epoll::add(&self.epoll, c.fd(), data, flags(w)),
                        (_, None) => epoll::delete(&self.epoll, c.fd()),
                    };
                    if let Err(e) = changed {
                        tracing::error!(conn = c.id(), error = %e, "cannot change a connection's epoll interest; closing it");
                        self.close(id);
                        continue;
                    }
                    *registered = want;
                }
                if c.has_more() {
                    again.push(id);
                }
                if let Some(d) = c.next_deadline() {
                    next_check = Some(next_check.map_or(d, |t| t.min(d)));
                }
            }
        }
        // Stopping: close what is left (a shutdown keeps every process's state), parked
        // connections with their sessions back if their requests came back.
        let mut back = Vec::new();
        self.take_returned(&mut back);
        let ids: Vec<u64> = self.conns.ids().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Registers the connections the accept loop handed over; each is read this round.
    fn take_new(&mut self, ready: &mut Vec<u64>) {
        self.inbox.wake.clear();
        let new = std::mem::take(&mut *lock(&self.inbox.new));
        for (stream, session) in new {
            let slot = self.conns.vacant();
            let park = Park {
                returns: self.returns.clone(),
                slot,
            };
            let c = Conn::new(self.daemon.clone(), stream, session, park);
            let want = c.interest().unwrap_or(Interest {
                read: true,
                write: false,
            });
            let id = self.conns.insert((c, Some(want)));
            debug_assert_eq!(
                id, slot,
                "a connection's parked requests return to its slot"
            );
            let Some((c, _)) = self.conns.get_mut(id) else {
                continue;
            };
            match epoll::add(
                &self.epoll,
                c.fd(),
                epoll::EventData::new_u64(id),
                flags(want),
            ) {
                Ok(()) => ready.push(id),
                Err(e) => {
                    tracing::error!(conn = c.id(), error = %e, "cannot watch a connection; closing it");
                    if let Some((c, _)) = self.conns.remove(id) {
                        c.finish("cannot watch its socket");
                    }
                    self.inbox.load.fetch_sub(1, Ordering::Relaxed);
                    self.live.remove(1);
                }
            }
        }
    }

    /// Gives parked requests that came back to their connections; each is handled further
    /// this round (its reply settled and written, the frames behind it read).
    fn take_returned(&mut self, ready: &mut Vec<u64>) {
        for r in self.returns.take() {
            let slot = r.slot;
            match self.conns.get_mut(slot) {
                Some((c, _)) if c.is_parked() && c.id() == r.session.conn => {
                    c.resume(r);
                    ready.push(slot);
                }
                _ => {
                    // Its connection was closed while parked (only after an `epoll` failure):
                    // the reply has nowhere to go, and the session is unregistered here.
                    tracing::error!(
                        slot,
                        conn = r.session.conn,
                        "a request came back for a connection that is gone"
                    );
                    let mut session = r.session;
                    self.daemon.disconnect(&mut session);
                }
            }
        }
    }

    fn close(&mut self, id: u64) {
        let Some((c, registered)) = self.conns.remove(id) else {
            return;
        };
        if registered.is_some() {
            if let Err(e) = epoll::delete(&self.epoll, c.fd()) {
                tracing::debug!(conn = c.id(), error = %e, "epoll delete failed");
            }
        }
        let why = c.finished().unwrap_or("the daemon stopped");
        c.finish(why);
        self.inbox.load.fetch_sub(1, Ordering::Relaxed);
        self.live.remove(1);
    }
}

fn flags(want: Interest) -> epoll::EventFlags {
    // No RDHUP: level-triggered, it would wake a worker forever for a client that shut its
    // writing side while its connection reads nothing; the end of stream shows as IN.
    let mut f = epoll::EventFlags::empty();
    if want.read {
        f |= epoll::EventFlags::IN;
    }
    if want.write {
        f |= epoll::EventFlags::OUT;
    }
    f
}

/// The default number of workers: one per core.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connections_slot_is_reused_and_the_others_keep_theirs() {
        let mut s = Slots::default();
        let (a, b, c) = (s.insert('a'), s.insert('b'), s.insert('c'));
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(s.remove(b), Some('b'));
        assert_eq!(s.remove(b), None, "a slot is given back once");
        assert_eq!(s.get_mut(b), None);
        assert_eq!(s.ids().collect::<Vec<_>>(), [a, c]);
        let d = s.insert('d');
        assert_eq!(d, b);
        assert_eq!(s.get_mut(a), Some(&mut 'a'));
        assert_eq!(s.get_mut(d), Some(&mut 'd'));
        assert_eq!(
            s.insert('e'),
            3,
            "a slot given back twice is not handed out twice"
        );
        assert_eq!(s.get_mut(WAKE), None);
        assert_eq!(s.ids().count(), 4);
    }
}
