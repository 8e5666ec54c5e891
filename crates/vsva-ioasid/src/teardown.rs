//! Safe reuse: components with per-PASID state tear it down before a PASID is reused.
//!
//! This module holds the public side of the protocol (the subscriber trait and its ticket);
//! the space's core decides when a PASID enters and leaves the freeing state.

use std::fmt;

use crate::ids::Pasid;
use crate::sync::Arc;

/// A component that keeps per-PASID state (an IOMMU's PASID entries and caches, a device
/// TLB) and must drop it before a freed PASID can be handed out again.
///
/// Register one with [`IoasidSpace::subscribe`](crate::IoasidSpace::subscribe). For every
/// PASID freed afterwards, [`teardown`](Self::teardown) is called once, on the freeing thread.
/// The PASID stays in the *freeing* state — visible through
/// [`IoasidSpace::find`](crate::IoasidSpace::find) and not allocatable — until every
/// subscriber has completed or dropped its [`TeardownTicket`]. A subscriber may finish before
/// returning (drop the ticket) or keep the ticket and complete it later from any thread.
pub trait TeardownSubscriber: Send + Sync {
    /// Called once for each freed PASID, before the number can be allocated again.
    /// The PASID stays in the "freeing" state until `ticket` is completed or dropped.
    fn teardown(&self, pasid: Pasid, ticket: TeardownTicket);

    /// A short name for logs and statistics.
    fn name(&self) -> &str;
}

/// Whoever counts a PASID's outstanding tickets: the space's core.
///
/// The ticket reaches the core through this trait rather than by naming it, so the core can
/// hand tickets out without this module depending on it back (one indirect call per finished
/// ticket, next to the subscriber's own indirect `teardown` call).
pub(crate) trait TeardownSink: Send + Sync {
    /// One ticket of `pasid` completed; the last one makes the number allocatable again.
    fn finish_teardown(&self, pasid: Pasid);
}

/// Handle on one subscriber's part of one PASID's teardown.
///
/// Completing it — with [`complete`](Self::complete) or by dropping it — tells the allocator
/// that this subscriber holds no more state for the PASID. When the last ticket of a PASID
/// completes, the PASID becomes free.
#[must_use = "the PASID stays in the freeing state until the ticket is completed or dropped"]
pub struct TeardownTicket {
    sink: Arc<dyn TeardownSink>,
    pasid: Pasid,
}

impl TeardownTicket {
    pub(crate) fn new(sink: Arc<dyn TeardownSink>, pasid: Pasid) -> Self {
        TeardownTicket { sink, pasid }
    }

    /// The PASID being torn down.
    pub fn pasid(&self) -> Pasid {
        self.pasid
    }

    /// Reports this subscriber's teardown as finished (same as dropping the ticket).
    pub fn complete(self) {}
}

impl Drop for TeardownTicket {
    fn drop(&mut self) {
        self.sink.finish_teardown(self.pasid);
    }
}

impl fmt::Debug for TeardownTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeardownTicket")
            .field("pasid", &self.pasid)
            .finish()
    }
}
