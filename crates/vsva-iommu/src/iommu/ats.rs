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
use std::sync::{Arc, Mutex, MutexGuard};

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

/// The ATS state of the IOMMU: the sink, the fenced devices and the holders.
pub(super) struct AtsTracking {
    sink: ArcSwapOption<Arc<dyn DevTlbSink>>,
    fenced: Box<[AtomicBool]>,
    holders: Box<[Mutex<FxHashMap<SourceId, Held>>]>,
}

impl AtsTracking {
    pub(super) fn new() -> Self {
        Self {
            sink: ArcSwapOption::empty(),
            fenced: (0..1usize << 16).map(|_| AtomicBool::new(false)).collect(),
            holders: (0..HOLDER_SHARDS)
                .map(|_| Mutex::new(FxHashMap::default()))
                .collect(),
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
    /// Nothing is recorded as held then.
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
        self.ats_state.hold(sid, pasid);
        match self.translate_slow(sid, pasid, iova, access, Requester::Ats) {
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
        let send: Vec<DevTlbInvalidation> = batch
            .iter()
            .copied()
            .filter(|inv| self.ats_state.take(inv))
            .collect();
        if send.is_empty() {
            return Vec::new();
        }
        let answers = sink.invalidate(&send);
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
