//! A request handed from its connection's worker to the blocking pool, and the way its
//! result comes back: the pool thread handles it with the connection's session, then puts
//! session and outcome in the worker's [`Returns`] and wakes the worker, which gives them
//! back to the parked connection (`Conn::resume`).
//!
//! While the request runs the connection is parked: it reads no further request, so its
//! replies stay in request order, and it is not closed, so the session (and with it the
//! process's connection count) comes back before the connection is unregistered.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vsva_proto::{FrameHeader, Kind, Request};
use vsva_vfio::ProcessToken;

use crate::daemon::{Daemon, Outcome, Session};
use crate::wake::Wake;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A parked request's result, on its way back to its connection.
pub(crate) struct Returned {
    /// The connection's slot in its worker.
    pub(crate) slot: u64,
    /// The connection's session, as the handler left it.
    pub(crate) session: Session,
    /// The request's frame header (its reply answers it).
    pub(crate) header: FrameHeader,
    /// The request's kind.
    pub(crate) kind: Option<Kind>,
    /// When the request was handed over (its duration counts from here).
    pub(crate) started: Instant,
    /// What handling it produced.
    pub(crate) outcome: Outcome,
}

/// One worker's results coming back from the pool, with the wake-up its `epoll` watches.
pub(crate) struct Returns {
    done: Mutex<Vec<Returned>>,
    wake: Wake,
}

impl Returns {
    /// An empty mailbox.
    ///
    /// # Errors
    ///
    /// Its `eventfd` could not be created.
    pub(crate) fn new() -> io::Result<Returns> {
        Ok(Returns {
            done: Mutex::new(Vec::new()),
            wake: Wake::new()?,
        })
    }

    /// What the worker's `epoll` watches (readable once a result came back).
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wake.as_fd()
    }

    fn give(&self, r: Returned) {
        lock(&self.done).push(r);
        if let Err(e) = self.wake.wake() {
            // A full counter (2^64 - 2 wake-ups pending) already wakes the worker.
            tracing::debug!(error = %e, "cannot wake a worker");
        }
    }

    /// The results that came back since the last call.
    pub(crate) fn take(&self) -> Vec<Returned> {
        self.wake.clear();
        std::mem::take(&mut *lock(&self.done))
    }
}

/// Where a connection's parked requests return: its worker's mailbox and its slot there.
pub(crate) struct Park {
    pub(crate) returns: Arc<Returns>,
    pub(crate) slot: u64,
}

/// A session that stands in for a parked connection's own while the pool thread has it:
/// same connection and peer, no process and no iommufd context. It is never handled or
/// disconnected (a parked connection reads nothing and is not closed).
pub(crate) fn stand_in(s: &Session) -> Session {
    Session {
        conn: s.conn,
        credentials: s.credentials,
        admin: s.admin,
        process: None,
        iommufd: None,
    }
}

/// Hands `req` with the connection's `session` to the daemon's blocking pool; the result
/// goes back to `park`'s worker.
pub(crate) fn hand_off(
    daemon: &Arc<Daemon>,
    park: &Park,
    session: Session,
    header: FrameHeader,
    req: Request,
    fds: Vec<OwnedFd>,
) {
    let d = daemon.clone();
    let returns = park.returns.clone();
    let slot = park.slot;
    let kind = Kind::from_u16(header.kind);
    let started = Instant::now();
    // The process the request runs for: its jobs hold at most its share of the pool.
    let owner = ProcessToken::new(session.credentials.pid, session.credentials.start_time);
    daemon.blocking().submit(
        owner,
        Box::new(move || {
            let mut session = session;
            let outcome = d.handle(&mut session, req, fds);
            returns.give(Returned {
                slot,
                session,
                header,
                kind,
                started,
                outcome,
            });
        }),
    );
}
