//! The IOMMU's side of ATS for devices that cache translations themselves: translation
//! requests ([`Iommu::ats_translate`]), the record of which PASIDs each device may hold
//! translations for, the fan-out of device-TLB invalidations to the registered
//! [`DevTlbSink`], and fencing a device that does not complete one.
//!
//! Ordering: a translation request records its PASID as held *before* it walks, and an
//! invalidation reads the holders *after* the IOMMU's own caches are invalidated, both under
//! the same shard lock. So either the invalidation sees the holder (and the device is told,
//! which makes it drop the answer of a request it issued before — see [`crate::atc::Atc`]),
//! or the request's walk begins after the invalidation and reads the new tables.
//!
//! None of this is on the `translate` path: untranslated requests and the in-model device
//! TLB never touch the holder shards or the sink.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use rustc_hash::{FxHashMap, FxHashSet};
use vm_memory::GuestMemoryMmap;

use super::error::IommuError;
use super::translate::{Requester, Translation};
use super::Iommu;
use crate::ats::{Completion, DevTlbInvalidation, DevTlbScope, DevTlbSink};
use crate::context::resolve_context;
use crate::fault::{Access, Fault, FaultReason, SourceId, Stage};
use crate::invalidate::Invalidation;
use crate::stats::Counter;

/// Shards of the holder record (by source id): devices on different shards never contend.
const HOLDER_SHARDS: usize = 16;

/// The answer to an ATS translation request ([`Iommu::ats_translate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtsReply {
    /// The translation the device may cache: the host address of the requested address,
    /// the page size and the rights. `perms.write` is granted only when the page's dirty bits
    /// are set (a request for write access sets them), so a device that asked for read only
    /// must ask again before it writes.
    Translated(Translation),
    /// A completion without rights (R = W = 0). The fault says why; one in the page tables is
    /// not recorded in the fault log (the VT-d rule for translation requests), one in the
    /// context or PASID chain is.
    NoTranslation {
        /// The refused request and the reason, as a fault record would hold it.
        fault: Fault,
        /// Whether the device should raise a page request (PCIe PRI) for the page: its
        /// context entry enables page requests (PRE) and a first-level entry is not present
        /// or lacks the right asked for.
        page_request: bool,
    },
}

impl AtsReply {
    /// The translation, if the request got one.
    pub fn translation(&self) -> Option<Translation> {
        match self {
            AtsReply::Translated(t) => Some(*t),
            AtsReply::NoTranslation { .. } => None,
        }
    }
}

/// Whether a refused translation request is one the PASID's owner can fix by mapping the
/// page: a first-level entry is missing, or it lacks the right asked for.
fn recoverable(f: &Fault) -> bool {
    f.stage == Stage::First
        && matches!(
            f.reason,
            FaultReason::FirstLevelNotPresent
                | FaultReason::NoWrite
                | FaultReason::NoRead
                | FaultReason::UserToSupervisor
                | FaultReason::ExecuteDisabled
        )
}

/// The PASIDs (`None`: requests without PASID) one device may hold translations for.
type Held = FxHashSet<Option<u32>>;

/// Sink calls in flight (see [`AtsTracking`]).
#[derive(Default)]
pub(super) struct InFlight {
    calls: FxHashMap<SourceId, Vec<u64>>,
    next: u64,
    /// Threads asleep in `wait_for_earlier`: an answer wakes the condition variable only
    /// when there are some (the standard library's notify makes a system call either way).
    waiters: usize,
}

/// The ATS state of the IOMMU: the sink, the fenced devices, the holders, and the
/// invalidations in flight.
pub(super) struct AtsTracking {
    sink: ArcSwapOption<Arc<dyn DevTlbSink>>,
    fenced: Box<[AtomicBool]>,
    holders: Box<[Mutex<FxHashMap<SourceId, Held>>]>,
    /// Sink calls not yet answered: the ticket of each, per device, and the next ticket.
    /// Sending an invalidation forgets what it covers (`take`), so a later invalidation of
    /// the same device may find nothing to send while the device has not completed the
    /// earlier one: it waits for those instead, as VT-d's invalidation wait descriptor
    /// completes only after every earlier descriptor. Only earlier calls are waited for, so a
    /// stream of new invalidations never holds an older one up.
    in_flight: Mutex<InFlight>,
    /// Signalled whenever a sink call is answered.
    answered: Condvar,
}

impl AtsTracking {
    pub(super) fn new() -> Self {
        Self {
            sink: ArcSwapOption::empty(),
            fenced: (0..1usize << 16).map(|_| AtomicBool::new(false)).collect(),
            holders: (0..HOLDER_SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
            in_flight: Mutex::new(InFlight::default()),
            answered: Condvar::new(),
        }
    }

    fn in_flight(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a sink call to `devices` as started; returns its ticket.
    fn start(&self, devices: &[SourceId]) -> u64 {
        let mut g = self.in_flight();
        let ticket = g.next;
        g.next += 1;
        for &sid in devices {
            g.calls.entry(sid).or_default().push(ticket);
        }
        ticket
    }

    /// Marks the sink call `ticket` to `devices` as answered.
    fn answered(&self, devices: &[SourceId], ticket: u64) {
        let mut g = self.in_flight();
        for sid in devices {
            if let Some(calls) = g.calls.get_mut(sid) {
                calls.retain(|&t| t != ticket);
                if calls.is_empty() {
                    g.calls.remove(sid);
                }
            }
        }
        let wake = g.waiters > 0;
        drop(g);
        if wake {
            self.answered.notify_all();
        }
    }

    /// Waits until no sink call to any of `devices` older than `ticket` is in flight. Each
    /// such call is bounded by its sink's own time-out, so this is too.
    fn wait_for_earlier(&self, devices: &[SourceId], ticket: u64) {
        let mut g = self.in_flight();
        while devices.iter().any(|sid| {
            g.calls
                .get(sid)
                .is_some_and(|calls| calls.iter().any(|&t| t < ticket))
        }) {
            g.waiters += 1;
            g = self.answered.wait(g).unwrap_or_else(|p| p.into_inner());
            g.waiters -= 1;
        }
    }

    fn shard(&self, sid: SourceId) -> MutexGuard<'_, FxHashMap<SourceId, Held>> {
        self.holders[usize::from(sid.0) % HOLDER_SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, sid: SourceId, pasid: Option<u32>) {
        self.shard(sid).entry(sid).or_default().insert(pasid);
    }

    /// Whether `inv`'s device may hold a translation it covers; a PASID-wide or device-wide
    /// invalidation also forgets what it covers (the device holds none of it afterwards).
    fn take(&self, inv: &DevTlbInvalidation) -> bool {
        let mut shard = self.shard(inv.source_id);
        let Some(held) = shard.get_mut(&inv.source_id) else {
            return false;
        };
        let hit = match inv.scope {
            DevTlbScope::All => {
                let any = !held.is_empty();
                held.clear();
                any
            }
            DevTlbScope::Pasid(p) => held.remove(&p),
            DevTlbScope::Range { pasid, .. } => held.contains(&pasid),
        };
        if held.is_empty() {
            shard.remove(&inv.source_id);
        }
        hit
    }
}

impl Iommu {
    /// An ATS translation request from device `sid`: the translation its own cache may keep
    /// (see [`crate::atc::Atc`]). The PASID is recorded as held by the device before the walk,
    /// so every later invalidation that covers it reaches the device through the
    /// [`DevTlbSink`]. The walk is the one of [`Iommu::translate`] (same caches, same
    /// accessed/dirty updates: a write request sets the dirty bits), but the answer never goes
    /// into the in-model device TLB.
    ///
    /// Register a sink ([`Iommu::set_devtlb_sink`]) before handing out translations: without
    /// one, invalidations reach only the in-model caches and a device's own cache goes stale.
    ///
    /// # Errors
    ///
    /// No translation is handed out then (a refused request may still leave its PASID
    /// recorded as held, which costs at most one invalidation sent for nothing):
    /// * [`IommuError::AtsFenced`] (`ENODEV`): the device was fenced for not completing an
    ///   invalidation; it stays fenced until it is detached and attached again (a reset).
    /// * [`IommuError::AtsDisabled`] (`EOPNOTSUPP`): the device's context entry, as it is in
    ///   memory, has DTE clear (the hardware answers Unsupported Request and records fault
    ///   0x44).
    pub fn ats_translate(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<AtsReply, IommuError> {
        if self.is_fenced(sid) {
            return Err(IommuError::AtsFenced { source_id: sid });
        }
        self.stats.inc(Counter::AtsRequests);
        self.ats_state.hold(sid, pasid);
        let epoch = self.caches.epoch.load(Ordering::Acquire);
        let front_epoch = self.front_fill_epoch(sid, epoch);
        match self.translate_slow(sid, pasid, iova, access, Requester::Ats, front_epoch) {
            Ok((t, dirty)) => {
                let mut t = t;
                t.perms.write &= dirty;
                Ok(AtsReply::Translated(t))
            }
            Err(f) if f.reason == FaultReason::DeviceTlbDisabled => {
                Err(IommuError::AtsDisabled { source_id: sid })
            }
            Err(fault) => {
                let page_request = recoverable(&fault) && self.page_requests_enabled(sid);
                Ok(AtsReply::NoTranslation {
                    fault,
                    page_request,
                })
            }
        }
    }

    /// Whether `sid`'s context entry, as it is in memory, has PRE set.
    fn page_requests_enabled(&self, sid: SourceId) -> bool {
        let snap = self.mem.snapshot();
        let mem: &GuestMemoryMmap = &snap;
        resolve_context(mem, &self.cfg, self.root_table_address(), sid).is_ok_and(|c| c.pre)
    }

    /// Registers the sink that carries device-TLB invalidations and page-group responses to
    /// devices that cache translations themselves (`None` removes it: invalidations then
    /// reach only the in-model caches, page-group responses wait in
    /// [`Iommu::take_page_responses`]).
    pub fn set_devtlb_sink(&self, sink: Option<Arc<dyn DevTlbSink>>) {
        self.ats_state.sink.store(sink.map(Arc::new));
    }

    /// The registered sink, if any.
    pub(super) fn devtlb_sink(&self) -> Option<Arc<dyn DevTlbSink>> {
        self.ats_state
            .sink
            .load()
            .as_ref()
            .map(|s| Arc::clone(&**s))
    }

    /// Whether `sid` is fenced: it did not complete a device-TLB invalidation in time, its
    /// translation requests are refused and its in-model device TLB is off, until it is
    /// detached and attached again.
    pub fn is_fenced(&self, sid: SourceId) -> bool {
        self.ats_state.fenced[usize::from(sid.0)].load(Ordering::Acquire)
    }

    /// The PASIDs (`None`: requests without PASID) `sid` may hold translations for, as the
    /// IOMMU tracks them for invalidation, ascending.
    pub fn ats_holdings(&self, sid: SourceId) -> Vec<Option<u32>> {
        let mut v: Vec<_> = self
            .ats_state
            .shard(sid)
            .get(&sid)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Sends the device-TLB invalidations of `batch` whose device may hold a covered
    /// translation to the sink, in one call, and fences every device that does not complete.
    /// Returns the devices fenced (none without a sink). The IOMMU's own caches must already
    /// be invalidated.
    pub(super) fn devtlb_notify(&self, batch: &[DevTlbInvalidation]) -> Vec<SourceId> {
        let Some(sink) = self.devtlb_sink() else {
            return Vec::new();
        };
        if batch.is_empty() {
            // No device to order against or to wait for.
            return Vec::new();
        }
        let mut covered: Vec<SourceId> = batch.iter().map(|inv| inv.source_id).collect();
        covered.sort_unstable();
        covered.dedup();
        // Marked in flight before anything is forgotten, so a concurrent invalidation that
        // finds nothing left to send still waits for this one.
        let ticket = self.ats_state.start(&covered);
        let send: Vec<DevTlbInvalidation> = batch
            .iter()
            .copied()
            .filter(|inv| self.ats_state.take(inv))
            .collect();
        let answers = if send.is_empty() {
            Vec::new()
        } else {
            self.stats.add(Counter::DevTlbSent, send.len() as u64);
            sink.invalidate(&send)
        };
        self.ats_state.answered(&covered, ticket);
        // Never report done while an earlier invalidation of these devices is unanswered.
        self.ats_state.wait_for_earlier(&covered, ticket);
        if send.is_empty() {
            return Vec::new();
        }
        let mut devices: Vec<SourceId> = send.iter().map(|inv| inv.source_id).collect();
        devices.sort_unstable();
        devices.dedup();
        devices.retain(|sid| {
            let done = answers
                .iter()
                .any(|&(s, c)| s == *sid && c == Completion::Done);
            let late = answers
                .iter()
                .any(|&(s, c)| s == *sid && c == Completion::TimedOut);
            !done || late
        });
        for &sid in &devices {
            self.fence(sid);
        }
        devices
    }

    /// Fences `sid`: translation requests refused, the in-model device TLB off and flushed,
    /// nothing recorded as held, and a fault record (reason 0x44, address 0) naming it.
    fn fence(&self, sid: SourceId) {
        tracing::warn!(%sid, "device did not complete a device-TLB invalidation: fenced");
        self.stats.inc(Counter::Fences);
        self.ats_state.fenced[usize::from(sid.0)].store(true, Ordering::Release);
        self.ats[usize::from(sid.0)].store(false, Ordering::Release);
        self.apply(&Invalidation::DeviceTlbAll { source_id: sid });
        self.ats_state.shard(sid).remove(&sid);
        self.faults.record(Fault {
            source_id: sid,
            pasid: None,
            addr: 0,
            access: Access::READ,
            reason: FaultReason::DeviceTlbDisabled,
            stage: Stage::Context,
            level: 0,
            recorded: true,
        });
    }

    /// Lifts a fence (the device was reset: attached anew) and forgets its holdings.
    pub(super) fn unfence(&self, sid: SourceId) {
        self.ats_state.fenced[usize::from(sid.0)].store(false, Ordering::Release);
        self.ats_state.shard(sid).remove(&sid);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::ats::{Completion, DevTlbInvalidation, DevTlbScope, DevTlbSink};
    use crate::iommu::test_support::*;
    use crate::AtsReply;

    const OTHER: SourceId = SourceId::new(0, 4, 0);

    /// What a [`Recorder`] translates inside each call: the IOMMU, the device, the PASID, the
    /// address and the host address it must no longer get.
    type Probe = (Arc<Iommu>, SourceId, u32, u64, u64);

    /// A sink that records what it is sent; `mute` devices never complete.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<DevTlbInvalidation>>,
        responses: Mutex<Vec<PageResponse>>,
        mute: Mutex<Vec<SourceId>>,
        /// Set when a call found the IOMMU's own caches still serving the old translation.
        saw_stale: AtomicBool,
        /// (device, PASID, address, old host address) to probe through `translate` inside
        /// each call.
        probe: Mutex<Option<Probe>>,
        /// When set, each call checks from another thread that the IOMMU's control lock is
        /// free while the devices are waited for, and records the answer in `control_free`.
        control_probe: Mutex<Option<Arc<Iommu>>>,
        control_free: Mutex<Vec<bool>>,
    }

    impl DevTlbSink for Recorder {
        fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)> {
            self.sent.lock().unwrap().extend_from_slice(batch);
            if let Some((io, sid, pasid, va, old)) = &*self.probe.lock().unwrap() {
                let now = io.translate(*sid, Some(*pasid), *va, Access::READ);
                if now.is_ok_and(|t| t.host_addr == *old) {
                    self.saw_stale.store(true, Ordering::SeqCst);
                }
            }
            if let Some(io) = self.control_probe.lock().unwrap().clone() {
                // Another client's control operation must not wait for these devices. The
                // bound only fails a test that would otherwise hang; it measures nothing.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = io.devices();
                    let _ = tx.send(());
                });
                let free = rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok();
                self.control_free.lock().unwrap().push(free);
            }
            let mute = self.mute.lock().unwrap();
            batch
                .iter()
                .map(|inv| {
                    let c = if mute.contains(&inv.source_id) {
                        Completion::TimedOut
                    } else {
                        Completion::Done
                    };
                    (inv.source_id, c)
                })
                .collect()
        }

        fn page_response(&self, resp: PageResponse) {
            self.responses.lock().unwrap().push(resp);
        }
    }

    fn ats_device(io: &Iommu, sid: SourceId, pri: bool) -> u64 {
        let opts = DeviceOptions {
            ats: true,
            pri,
            ..DeviceOptions::default()
        };
        io.attach_device(sid, opts).unwrap();
        let root = fl_pasid(io, sid, 5, 2);
        map(io, root, 0x1000, 0x10_0000, SIZE_4K, RW | US);
        root
    }

    /// An IOMMU with a recording sink and two ATS devices (`SID`, `OTHER`) set up by
    /// [`ats_device`].
    fn two_ats_devices() -> (Arc<Iommu>, Arc<Recorder>) {
        let io = Arc::new(iommu());
        let sink = Arc::new(Recorder::default());
        io.set_devtlb_sink(Some(sink.clone() as Arc<dyn DevTlbSink>));
        ats_device(&io, SID, false);
        ats_device(&io, OTHER, false);
        (io, sink)
    }

    #[test]
    fn translation_requests_answer_rights_and_page_requests() {
        let io = iommu();
        let root = ats_device(&io, SID, true);
        map(&io, root, 0x2000, 0x11_0000, SIZE_4K, US);
        // A read request: write is granted only once the dirty bit is set.
        let t = io
            .ats_translate(SID, Some(5), 0x1234, Access::READ)
            .unwrap();
        let t = t.translation().unwrap();
        assert_eq!(
            (t.host_addr, t.perms.read, t.perms.write),
            (0x10_0234, true, false)
        );
        let t = io
            .ats_translate(SID, Some(5), 0x1000, Access::WRITE)
            .unwrap();
        assert!(t.translation().unwrap().perms.write);
        let t = io
            .ats_translate(SID, Some(5), 0x1000, Access::READ)
            .unwrap();
        assert!(t.translation().unwrap().perms.write, "dirty now");
        assert_eq!(io.ats_holdings(SID), vec![Some(5)]);
        let faults = io.fault_log().total();
        // Not present, and present without the write right: page requests, not logged.
        for (va, access, reason) in [
            (0x9000, Access::READ, FaultReason::FirstLevelNotPresent),
            (0x2000, Access::WRITE, FaultReason::NoWrite),
        ] {
            let reply = io.ats_translate(SID, Some(5), va, access).unwrap();
            let AtsReply::NoTranslation {
                fault,
                page_request,
            } = reply
            else {
                panic!("{reply:?}");
            };
            assert_eq!(
                (fault.reason, page_request, fault.recorded),
                (reason, true, false)
            );
        }
        assert_eq!(io.fault_log().total(), faults);
        // A chain fault (no PASID entry) is no page request, and is logged.
        let reply = io
            .ats_translate(SID, Some(6), 0x1000, Access::READ)
            .unwrap();
        assert!(matches!(
            reply,
            AtsReply::NoTranslation {
                page_request: false,
                ..
            }
        ));
        assert_eq!(io.fault_log().total(), faults + 1);
    }

    #[test]
    fn without_pre_or_dte_no_page_request_and_no_translation_request() {
        let io = iommu();
        ats_device(&io, SID, false);
        let reply = io
            .ats_translate(SID, Some(5), 0x9000, Access::READ)
            .unwrap();
        assert!(matches!(
            reply,
            AtsReply::NoTranslation {
                page_request: false,
                ..
            }
        ));
        attach(&io, OTHER);
        let err = io
            .ats_translate(OTHER, Some(5), 0x1000, Access::READ)
            .unwrap_err();
        assert_eq!(err, IommuError::AtsDisabled { source_id: OTHER });
        assert_eq!(err.errno(), vsva_uapi::Errno::EOPNOTSUPP);
        assert_eq!(
            io.faults().last().unwrap().reason,
            FaultReason::DeviceTlbDisabled
        );
    }

    #[test]
    fn invalidations_reach_only_devices_that_may_hold_the_pasid() {
        let (io, sink) = two_ats_devices();
        io.ats_translate(SID, Some(5), 0x1000, Access::READ)
            .unwrap();
        let inv = |sid, pasid| Invalidation::DeviceTlb {
            source_id: sid,
            pasid: Some(pasid),
            pages: Some(PageRange {
                addr: 0x1000,
                am: 0,
            }),
        };
        io.invalidate_batch(&[inv(SID, 5), inv(OTHER, 5), inv(SID, 6)])
            .unwrap();
        let want = DevTlbInvalidation {
            source_id: SID,
            scope: DevTlbScope::Range {
                pasid: Some(5),
                addr: 0x1000,
                len: 0x1000,
            },
        };
        assert_eq!(*sink.sent.lock().unwrap(), vec![want]);
        // A PASID-wide invalidation (here: the entry cleared) ends the holding.
        io.clear_pasid_entry(SID, 5).unwrap();
        assert_eq!(
            sink.sent.lock().unwrap()[1],
            DevTlbInvalidation {
                source_id: SID,
                scope: DevTlbScope::Pasid(Some(5)),
            }
        );
        assert!(io.ats_holdings(SID).is_empty());
        io.detach_device(SID).unwrap();
        assert_eq!(sink.sent.lock().unwrap().len(), 2, "nothing held any more");
    }

    /// The sink is called after the IOMMU's own caches dropped the translation: a device
    /// that translates again from inside the call gets the new page.
    #[test]
    fn the_sink_runs_after_the_iommus_own_caches_are_invalidated() {
        let io = Arc::new(iommu());
        let sink = Arc::new(Recorder::default());
        io.set_devtlb_sink(Some(sink.clone() as Arc<dyn DevTlbSink>));
        let root = ats_device(&io, SID, false);
        io.ats_translate(SID, Some(5), 0x1000, Access::READ)
            .unwrap();
        assert_eq!(read_addr(&io, SID, Some(5), 0x1000), 0x10_0000);
        remap_fl(&io, root, 0x1000, 0x20_0000);
        *sink.probe.lock().unwrap() = Some((io.clone(), SID, 5, 0x1000, 0x10_0000));
        let page = PageRange {
            addr: 0x1000,
            am: 0,
        };
        io.invalidate_batch(&[
            Invalidation::PasidIotlbPages {
                did: 2,
                pasid: 5,
                range: page,
                ih: false,
            },
            Invalidation::DeviceTlb {
                source_id: SID,
                pasid: Some(5),
                pages: Some(page),
            },
        ])
        .unwrap();
        assert_eq!(sink.sent.lock().unwrap().len(), 1);
        assert!(!sink.saw_stale.load(Ordering::SeqCst));
        *sink.probe.lock().unwrap() = None;
    }

    #[test]
    fn devices_are_waited_for_without_the_control_lock() {
        let (io, sink) = two_ats_devices();
        *sink.control_probe.lock().unwrap() = Some(io.clone());
        // Unbind, PASID teardown and detach each wait for a device that holds a translation.
        io.ats_translate(SID, Some(5), 0x1000, Access::READ)
            .unwrap();
        io.clear_pasid_entry(SID, 5).unwrap();
        io.ats_translate(OTHER, Some(5), 0x1000, Access::READ)
            .unwrap();
        assert_eq!(io.teardown_pasid(5), vec![OTHER]);
        let root = fl_pasid(&io, SID, 6, 3);
        map(&io, root, 0x1000, 0x10_0000, SIZE_4K, RW | US);
        io.ats_translate(SID, Some(6), 0x1000, Access::READ)
            .unwrap();
        io.detach_device(SID).unwrap();
        *sink.control_probe.lock().unwrap() = None;
        assert_eq!(*sink.control_free.lock().unwrap(), vec![true; 3]);
    }

    /// A sink whose first call waits until the test lets it answer.
    struct Gate {
        entered: Mutex<Option<std::sync::mpsc::Sender<()>>>,
        release: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        /// Set just before the held call answers.
        answering: AtomicBool,
    }

    impl DevTlbSink for Gate {
        fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)> {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                entered.send(()).unwrap();
                let release = self.release.lock().unwrap().take().unwrap();
                release.recv().unwrap();
                self.answering.store(true, Ordering::SeqCst);
            }
            batch
                .iter()
                .map(|inv| (inv.source_id, Completion::Done))
                .collect()
        }

        fn page_response(&self, _: PageResponse) {}
    }

    #[test]
    fn a_later_invalidation_waits_for_an_earlier_one_still_unanswered() {
        use std::sync::mpsc::channel;
        let io = Arc::new(iommu());
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel();
        let gate = Arc::new(Gate {
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(Some(release_rx)),
            answering: AtomicBool::new(false),
        });
        io.set_devtlb_sink(Some(gate.clone() as Arc<dyn DevTlbSink>));
        ats_device(&io, SID, false);
        io.ats_translate(SID, Some(5), 0x1000, Access::READ)
            .unwrap();
        std::thread::scope(|s| {
            // The owner's invalidation reaches the device, which has not answered yet.
            s.spawn(|| {
                io.invalidate(&Invalidation::DeviceTlb {
                    source_id: SID,
                    pasid: Some(5),
                    pages: None,
                })
                .unwrap()
            });
            entered.recv().unwrap();
            // Meanwhile the PASID is torn down: nothing is left to send, and it must still
            // not return before the device answered the earlier invalidation.
            let (done_tx, done) = channel();
            let gate = &gate;
            let io = &io;
            s.spawn(move || {
                io.teardown_pasid(5);
                done_tx.send(gate.answering.load(Ordering::SeqCst)).unwrap();
            });
            // The bound only lets the test go on; it measures nothing: a teardown that
            // returned early has answered by now.
            let early = done.recv_timeout(std::time::Duration::from_millis(300));
            release.send(()).unwrap();
            let answered_first = match early {
                Ok(answered) => answered,
                Err(_) => done.recv().unwrap(),
            };
            assert!(
                answered_first,
                "the teardown returned while the device had not answered"
            );
        });
    }

    #[test]
    fn a_device_that_does_not_complete_is_fenced() {
        let (io, sink) = two_ats_devices();
        for sid in [SID, OTHER] {
            io.ats_translate(sid, Some(5), 0x1000, Access::READ)
                .unwrap();
        }
        sink.mute.lock().unwrap().push(OTHER);
        let err = io
            .invalidate_batch(&[
                Invalidation::DeviceTlbAll { source_id: SID },
                Invalidation::DeviceTlbAll { source_id: OTHER },
            ])
            .unwrap_err();
        assert_eq!(
            err,
            IommuError::DevTlbTimeout {
                fenced: vec![OTHER]
            }
        );
        assert_eq!(err.errno(), vsva_uapi::Errno::ETIMEDOUT);
        assert!(io.is_fenced(OTHER) && !io.is_fenced(SID));
        let stats = io.stats();
        assert_eq!(
            (stats.fences, stats.devtlb_sent, stats.ats_requests),
            (1, 2, 2)
        );
        let f = *io.faults().last().unwrap();
        assert_eq!(
            (f.source_id, f.reason),
            (OTHER, FaultReason::DeviceTlbDisabled)
        );
        let refused = io.ats_translate(OTHER, Some(5), 0x1000, Access::READ);
        assert_eq!(refused.unwrap_err().errno(), vsva_uapi::Errno::ENODEV);
        // Untranslated requests still work; the completing device keeps its ATS.
        assert_eq!(read_addr(&io, OTHER, Some(5), 0x1000), 0x10_0000);
        assert!(io.ats_translate(SID, Some(5), 0x1000, Access::READ).is_ok());
        // A reset (detach and attach) ends the fence.
        sink.mute.lock().unwrap().clear();
        io.detach_device(OTHER).unwrap();
        ats_device(&io, OTHER, false);
        assert!(!io.is_fenced(OTHER));
        assert!(io
            .ats_translate(OTHER, Some(5), 0x1000, Access::READ)
            .is_ok());
    }

    #[test]
    fn page_responses_go_through_the_sink_when_there_is_one() {
        let io = iommu();
        let resp = PageResponse {
            source_id: SID,
            pasid: Some(1),
            group: 2,
            code: crate::prq::ResponseCode::Success,
        };
        io.deliver_page_response(resp);
        assert_eq!(io.take_page_responses(SID), vec![resp]);
        let sink = Arc::new(Recorder::default());
        io.set_devtlb_sink(Some(sink.clone() as Arc<dyn DevTlbSink>));
        io.deliver_page_response(resp);
        assert!(io.take_page_responses(SID).is_empty());
        assert_eq!(*sink.responses.lock().unwrap(), vec![resp]);
    }
}
