//! A device handle's events thread, and what it shares with the DMA path: it applies
//! device-TLB invalidations and acknowledges them, records page responses (with the
//! translation a response may carry), and notes the end of the device's capability.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use vsva_iommu::{Atc, DevTlbScope};
use vsva_proto::{Event, ResponseTranslation, INVAL_ALL, INVAL_PASID};

use crate::events::EventChannel;

/// Locks `m`; a poisoned lock's data is used as it is, so the events thread keeps applying
/// invalidations after a panic elsewhere.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the events thread and the DMA path share.
pub(crate) struct Shared {
    /// The device TLB.
    pub(crate) atc: Mutex<Atc>,
    /// Page responses received: (group, code, the daemon's translation with a SUCCESS to a
    /// group a translation request raised).
    pub(crate) responses: Mutex<Vec<(u16, u32, Option<ResponseTranslation>)>>,
    /// Notified when a response comes in or the capability ends.
    pub(crate) changed: Condvar,
    /// Why the capability ended, once it did.
    pub(crate) ended: Mutex<Option<String>>,
    /// Invalidations applied and acknowledged.
    pub(crate) invalidations: AtomicU64,
}

/// The device's events thread: applies invalidations to the device TLB and acknowledges
/// them, records page responses, notes the end of the capability. It never waits for
/// anything but the channel.
pub(crate) fn serve_events(mut channel: EventChannel, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let (seq, ev) = match channel.next_event() {
            Ok(e) => e,
            Err(_) => break,
        };
        match ev {
            Event::Invalidate(inv) => {
                let pasid = (inv.flags & INVAL_PASID != 0).then_some(inv.pasid);
                let scope = if inv.flags & INVAL_ALL != 0 {
                    DevTlbScope::All
                } else if inv.size == u64::MAX {
                    DevTlbScope::Pasid(pasid)
                } else {
                    DevTlbScope::Range {
                        pasid,
                        addr: inv.addr,
                        len: inv.size,
                    }
                };
                lock(&shared.atc).invalidate(&scope);
                shared.invalidations.fetch_add(1, Ordering::Relaxed);
                if channel.ack(seq).is_err() {
                    break;
                }
            }
            Event::Overflow { .. } => {
                // An invalidation may have been lost: drop everything (the daemon fences a
                // device it could not reach, so nothing is acknowledged for it).
                lock(&shared.atc).invalidate(&DevTlbScope::All);
            }
            Event::PageResponse(r) => {
                lock(&shared.responses).push((r.grpid as u16, r.code, r.translation));
                shared.changed.notify_all();
            }
            Event::DeviceRevoked { reason, .. } => {
                *lock(&shared.ended) = Some(reason);
                lock(&shared.atc).invalidate(&DevTlbScope::All);
                shared.changed.notify_all();
            }
            Event::DmaFault(_) | Event::PageRequest(_) => {}
        }
    }
    let mut ended = lock(&shared.ended);
    if ended.is_none() {
        *ended = Some("the events channel closed".into());
    }
    drop(ended);
    lock(&shared.atc).invalidate(&DevTlbScope::All);
    shared.changed.notify_all();
}
