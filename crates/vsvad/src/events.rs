//! The events channels: each process's bounded, ordered queue of events, and the one thread
//! (with its own `epoll`) that writes them to the processes' channel sockets and reads the
//! acknowledgements that come back.
//!
//! # Why a thread of its own
//!
//! A request that invalidates what devices cached waits, in a connection worker, until every
//! device process has acknowledged. If acknowledgements were read by the workers, a device
//! whose worker is itself waiting for acknowledgements would never be heard: with as many
//! invalidating requests as workers, the daemon would stop. Here the channels are served by
//! a thread that never waits for anything but its sockets, so an acknowledgement is always
//! read, whatever the workers are doing.
//!
//! # Never blocking a producer
//!
//! [`EventQueue::push`] takes the queue's lock for a few instructions and never waits on a
//! socket. A queue holds at most `limits.event_queue_len` events not yet handed to the
//! socket; an event that finds it full is dropped and counted, and an [`Event::Overflow`]
//! marker with the count follows the last event queued before the loss (or precedes the next
//! event that fits, whichever comes first). The channel's socket
//! buffer is fixed at [`CHANNEL_SNDBUF`] bytes, so a client that does not read holds at most
//! that much of the daemon's memory in the kernel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use rustix::event::epoll;
use vsva_proto::{Event, EventAck, FrameDecoder};

use crate::wake::Wake;

/// The `epoll` data of the hub's wake-up `eventfd`.
const WAKE: u64 = u64::MAX;
/// Send buffer of the daemon's end of a channel, in bytes.
pub const CHANNEL_SNDBUF: usize = 32 * 1024;
/// Encoded events moved from a queue to its channel's buffer before a write.
const OUT_BATCH: usize = 16 * 1024;
/// Largest frame a client may send on its channel (an acknowledgement is 24 bytes).
const MAX_CLIENT_BODY: u32 = 64;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct QueueState {
    /// Events not yet handed to the socket, with their sequence numbers.
    pending: VecDeque<(u64, Event)>,
    next_seq: u64,
    /// Dropped since the last overflow marker.
    dropped: u64,
    /// Dropped since the channel opened.
    dropped_total: u64,
    /// A channel is open: events are queued (otherwise they are discarded).
    open: bool,
    /// Invalidations sent and not yet acknowledged, by sequence number.
    awaited: HashSet<u64>,
}

/// One process's events: the bounded queue, and the acknowledgements its devices owe.
pub struct EventQueue {
    id: u64,
    cap: usize,
    state: Mutex<QueueState>,
    /// Signalled when an acknowledgement arrives or the channel closes.
    acked: Condvar,
    hub: Arc<Shared>,
}

impl EventQueue {
    /// Queues `ev` for the channel and returns its sequence number, or `None` when it was not
    /// queued: no channel is open (the event is discarded, nobody listens), or the queue is
    /// full (dropped and counted; the client sees an overflow marker).
    pub fn push(&self, ev: Event) -> Option<u64> {
        self.push_inner(ev, false)
    }

    /// Queues an invalidation whose acknowledgement [`EventQueue::wait_ack`] waits for.
    /// `None` as for [`EventQueue::push`]: a dropped invalidation is never acknowledged.
    pub fn push_awaited(&self, ev: Event) -> Option<u64> {
        self.push_inner(ev, true)
    }

    fn push_inner(&self, ev: Event, awaited: bool) -> Option<u64> {
        let mut st = lock(&self.state);
        if !st.open {
            return None;
        }
        if st.dropped > 0 && st.pending.len() < self.cap {
            let seq = st.next_seq;
            st.next_seq += 1;
            let marker = Event::Overflow {
                dropped: st.dropped,
                total: st.dropped_total,
            };
            st.pending.push_back((seq, marker));
            st.dropped = 0;
        }
        if st.pending.len() >= self.cap {
            st.dropped += 1;
            st.dropped_total += 1;
            return None;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.pending.push_back((seq, ev));
        if awaited {
            st.awaited.insert(seq);
        }
        drop(st);
        self.hub.wake();
        Some(seq)
    }

    /// Waits until the invalidation `seq` is acknowledged, the channel closes, or `deadline`
    /// passes. True only for an acknowledgement.
    pub fn wait_ack(&self, seq: u64, deadline: Instant) -> bool {
        let mut st = lock(&self.state);
        loop {
            if !st.awaited.contains(&seq) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !st.open || left.is_zero() {
                st.awaited.remove(&seq);
                return false;
            }
            st = self
                .acked
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether a channel is open.
    pub fn is_open(&self) -> bool {
        lock(&self.state).open
    }

    /// Ends the channel (the process is released): queued events are discarded and the hub
    /// closes the socket.
    pub fn close(&self) {
        let mut st = lock(&self.state);
        st.open = false;
        st.pending.clear();
        drop(st);
        self.acked.notify_all();
        self.hub.wake();
    }

    fn ack(&self, seq: u64) {
        if lock(&self.state).awaited.remove(&seq) {
            self.acked.notify_all();
        }
    }
}

/// What the hub thread and the rest of the daemon share.
struct Shared {
    epoll: OwnedFd,
    wake: Wake,
    stop: AtomicBool,
    /// Channels opened, not yet taken by the thread.
    new: Mutex<Vec<(UnixStream, Arc<EventQueue>)>>,
    next_id: AtomicU64,
}

impl Shared {
    fn wake(&self) {
        if let Err(e) = self.wake.wake() {
            tracing::debug!(error = %e, "cannot wake the events thread");
        }
    }
}

/// The events thread and the queues it serves.
pub struct Hub {
    shared: Arc<Shared>,
    cap: usize,
    thread: Option<JoinHandle<()>>,
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The process has a channel open already.
    #[error("the process already has an events channel open")]
    Busy,
    /// The socket pair could not be made.
    #[error("cannot create the channel's sockets: {0}")]
    Io(#[from] io::Error),
}

impl Hub {
    /// Starts the events thread; every queue holds at most `cap` events.
    ///
    /// # Errors
    ///
    /// The `epoll` instance, the `eventfd` or the thread could not be created.
    pub fn start(cap: usize) -> io::Result<Hub> {
        let wake = Wake::new()?;
        let epoll = wake.epoll(WAKE)?;
        let shared = Arc::new(Shared {
            epoll,
            wake,
            stop: AtomicBool::new(false),
            new: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vsvad-events".into())
            .spawn(move || run(&s))?;
        Ok(Hub {
            shared,
            cap: cap.max(1),
            thread: Some(thread),
        })
    }

    /// A new, closed queue for a process.
    pub fn queue(&self) -> Arc<EventQueue> {
        Arc::new(EventQueue {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            cap: self.cap,
            state: Mutex::new(QueueState {
                pending: VecDeque::new(),
                next_seq: 1,
                dropped: 0,
                dropped_total: 0,
                open: false,
                awaited: HashSet::new(),
            }),
            acked: Condvar::new(),
            hub: self.shared.clone(),
        })
    }

    /// Opens `q`'s channel: returns the client's end of a new socket pair, whose other end
    /// the events thread serves. Sequence numbers go on from the process's previous channel,
    /// so an acknowledgement can never name the wrong invalidation.
    ///
    /// # Errors
    ///
    /// [`OpenError::Busy`] if `q` has a channel; nothing changes on any error.
    pub fn open(&self, q: &Arc<EventQueue>) -> Result<OwnedFd, OpenError> {
        let mut st = lock(&q.state);
        if st.open {
            return Err(OpenError::Busy);
        }
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        rustix::net::sockopt::set_socket_send_buffer_size(&ours, CHANNEL_SNDBUF)
            .map_err(io::Error::from)?;
        st.open = true;
        st.dropped = 0;
        st.dropped_total = 0;
        st.pending.clear();
        drop(st);
        lock(&self.shared.new).push((ours, q.clone()));
        self.shared.wake();
        Ok(theirs.into())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the events thread panicked");
                debug_assert!(false, "the events thread panicked");
            }
        }
    }
}

/// One open channel, as the thread keeps it.
struct Channel {
    stream: UnixStream,
    queue: Arc<EventQueue>,
    out: Vec<u8>,
    written: usize,
    dec: FrameDecoder,
    /// Registered for writability too.
    want_out: bool,
}

impl Channel {
    /// Moves queued events into the buffer and writes what the socket takes. False when the
    /// channel must close.
    fn flush(&mut self) -> bool {
        loop {
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
                let mut st = lock(&self.queue.state);
                if !st.open {
                    return false;
                }
                while self.out.len() < OUT_BATCH {
                    let Some((seq, ev)) = st.pending.pop_front() else {
                        break;
                    };
                    self.out.extend_from_slice(&ev.encode_frame(seq));
                }
                // Everything queued is out: the client learns of what was lost now, not at
                // the next event.
                if st.pending.is_empty() && st.dropped > 0 {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    let marker = Event::Overflow {
                        dropped: st.dropped,
                        total: st.dropped_total,
                    };
                    st.dropped = 0;
                    self.out.extend_from_slice(&marker.encode_frame(seq));
                }
                if self.out.is_empty() {
                    return true;
                }
            }
            match (&self.stream).write(&self.out[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads the acknowledgements the client sent. False when the channel must close (the
    /// client closed it, or sent something other than acknowledgements).
    fn read_acks(&mut self) -> bool {
        loop {
            let buf = self.dec.spare(4096);
            match (&self.stream).read(buf) {
                Ok(0) => return false,
                Ok(n) => self.dec.commit(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
            loop {
                match self.dec.next_frame() {
                    Ok(Some(f)) => match EventAck::decode(f.header.kind, &f.body) {
                        Ok(a) => self.queue.ack(a.seq),
                        Err(e) => {
                            tracing::warn!(error = %e, "events channel: not an acknowledgement; closing it");
                            return false;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e.error, "events channel: bad frame; closing it");
                        return false;
                    }
                }
            }
        }
    }

    fn interest(&self) -> epoll::EventFlags {
        if self.written < self.out.len() {
            epoll::EventFlags::IN | epoll::EventFlags::OUT
        } else {
            epoll::EventFlags::IN
        }
    }
}

fn run(shared: &Shared) {
    let mut channels: HashMap<u64, Channel> = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        events.clear();
        match epoll::wait(
            &shared.epoll,
            rustix::buffer::spare_capacity(&mut events),
            None,
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "events thread: epoll_wait failed; it stops");
                debug_assert!(false, "epoll_wait failed: {e}");
                return;
            }
        }
        let mut woken = false;
        let mut close = Vec::new();
        for ev in &events {
            let id = ev.data.u64();
            if id == WAKE {
                woken = true;
                continue;
            }
            let Some(c) = channels.get_mut(&id) else {
                continue;
            };
            let flags = ev.flags;
            if flags
                .intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP | epoll::EventFlags::ERR)
                && !c.read_acks()
            {
                close.push(id);
            }
        }
        if woken {
            shared.wake.clear();
            for (stream, queue) in std::mem::take(&mut *lock(&shared.new)) {
                let id = queue.id;
                if let Err(e) = epoll::add(
                    &shared.epoll,
                    stream.as_fd(),
                    epoll::EventData::new_u64(id),
                    epoll::EventFlags::IN,
                ) {
                    tracing::error!(error = %e, "cannot watch an events channel; closing it");
                    queue.close();
                    continue;
                }
                channels.insert(
                    id,
                    Channel {
                        stream,
                        queue,
                        out: Vec::new(),
                        written: 0,
                        dec: FrameDecoder::new(MAX_CLIENT_BODY),
                        want_out: false,
                    },
                );
            }
        }
        // Every channel is flushed on every wake-up: producers only wake the thread.
        for (&id, c) in &mut channels {
            if close.contains(&id) || !c.flush() {
                close.push(id);
                continue;
            }
            let want = c.interest();
            let want_out = want.contains(epoll::EventFlags::OUT);
            if want_out != c.want_out {
                if let Err(e) = epoll::modify(
                    &shared.epoll,
                    c.stream.as_fd(),
                    epoll::EventData::new_u64(id),
                    want,
                ) {
                    tracing::error!(error = %e, "cannot change an events channel's interest");
                    close.push(id);
                    continue;
                }
                c.want_out = want_out;
            }
        }
        for id in close {
            if let Some(c) = channels.remove(&id) {
                if let Err(e) = epoll::delete(&shared.epoll, c.stream.as_fd()) {
                    tracing::debug!(error = %e, "epoll delete of an events channel failed");
                }
                c.queue.close();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use vsva_proto::{Event, EventAck, FrameDecoder, Invalidation};

    use super::*;

    fn inval() -> Event {
        Event::Invalidate(Invalidation {
            source_id: 8,
            flags: 0,
            pasid: 0,
            addr: 0,
            size: 4096,
        })
    }

    fn read_events(s: &mut UnixStream, n: usize) -> Vec<(u64, Event)> {
        let mut dec = FrameDecoder::new(1 << 16);
        let mut out = Vec::new();
        while out.len() < n {
            let mut buf = [0u8; 4096];
            let got = s.read(&mut buf).unwrap();
            assert!(got > 0, "channel closed");
            dec.push(&buf[..got]);
            while let Some(f) = dec.next_frame().unwrap() {
                out.push((f.header.id, Event::decode(f.header.kind, &f.body).unwrap()));
            }
        }
        out
    }

    #[test]
    fn closed_queue_discards_and_full_queue_counts() {
        let hub = Hub::start(2).unwrap();
        let q = hub.queue();
        assert_eq!(q.push(inval()), None, "no channel: discarded");
        // Not served by the thread: fill the queue directly.
        lock(&q.state).open = true;
        assert_eq!(q.push(inval()), Some(1));
        assert_eq!(q.push(inval()), Some(2));
        assert_eq!(q.push(inval()), None);
        assert_eq!(q.push(inval()), None);
        let mut st = lock(&q.state);
        assert_eq!((st.dropped, st.dropped_total), (2, 2));
        st.pending.clear();
        drop(st);
        assert_eq!(q.push(inval()), Some(4), "the marker took 3");
        let st = lock(&q.state);
        assert_eq!(
            st.pending.front(),
            Some(&(
                3,
                Event::Overflow {
                    dropped: 2,
                    total: 2
                }
            ))
        );
        drop(st);
        q.close();
    }

    #[test]
    fn acknowledgement_ends_the_wait_and_timeout_ends_it_too() {
        let hub = Hub::start(16).unwrap();
        let q = hub.queue();
        let mut client = UnixStream::from(hub.open(&q).unwrap());
        assert!(matches!(hub.open(&q), Err(OpenError::Busy)));
        let seq = q.push_awaited(inval()).unwrap();
        let got = read_events(&mut client, 1);
        assert_eq!(got, vec![(seq, inval())]);
        let deadline = Instant::now() + Duration::from_secs(60);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| q.wait_ack(seq, deadline));
            use std::io::Write;
            client.write_all(&EventAck { seq }.encode_frame()).unwrap();
            assert!(waiter.join().unwrap());
        });
        let seq2 = q.push_awaited(inval()).unwrap();
        assert!(
            !q.wait_ack(seq2, Instant::now()),
            "no ack: the deadline ends it"
        );
        // The client going away ends every wait at once.
        let seq3 = q.push_awaited(inval()).unwrap();
        drop(client);
        assert!(!q.wait_ack(seq3, deadline));
    }
}
