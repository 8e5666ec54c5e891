//! The state of one virtual DMA-remapping unit: its registers, identity, back end, guest
//! memory, shadowed PASIDs, counters, and the interrupts raised while it was locked. The
//! operations on it live in the files named for them (`mmio`, `queue`, `vcmd`, `shadow`,
//! `faults`, `prq`).

use std::sync::Arc;

use vsva_iommu::context::ContextEntry;
use vsva_iommu::{IommuConfig, SourceId};
use vsva_uapi::BindRequest;

use crate::backend::{Backend, BackendError};
use crate::caps::{identity, Identity, ViommuConfig};
use crate::interrupt::MsiMessage;
use crate::memory::GuestMemory;
use crate::page_source::PageRequestSource;
use crate::pasids::PasidMap;
use crate::regs::{RegisterFile, CAP, ECAP, VCCAP, VER};
use crate::tables::guest_config;

/// Counters of what the unit did, for tests, metrics and the VMM's logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViommuStats {
    /// Invalidation descriptors carried out.
    pub descriptors: u64,
    /// Host binds made from guest PASID entries.
    pub binds: u64,
    /// Host unbinds made when guest entries changed or went away.
    pub unbinds: u64,
    /// Guest PASID entries the host refused to bind (or that name a PASID the guest did not
    /// allocate through VCMD).
    pub bind_refusals: u64,
    /// CACHE_INVLD calls passed to the host.
    pub host_invalidations: u64,
    /// Virtual commands executed.
    pub virtual_commands: u64,
    /// Host faults written to the guest's fault recording registers.
    pub faults_recorded: u64,
    /// Host faults lost because every fault recording register was full (PFO).
    pub faults_overflowed: u64,
    /// Page requests written to the guest's page request queue.
    pub page_requests: u64,
    /// Page requests lost because the guest's queue was full or not set up (PRO).
    pub page_requests_overflowed: u64,
    /// Invalidation queue errors (IQE) raised.
    pub queue_errors: u64,
}

/// A host bind made for a guest PASID entry, and the domain id the guest gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shadowed {
    pub(crate) bind: BindRequest,
    pub(crate) did: u16,
}

/// One virtual IOMMU's state (behind the facade's lock).
pub(crate) struct Unit {
    pub(crate) regs: RegisterFile,
    pub(crate) id: Identity,
    pub(crate) cfg: ViommuConfig,
    /// The guest's view of the IOMMU, to check its entries.
    pub(crate) guest_cfg: IommuConfig,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) mem: Arc<dyn GuestMemory>,
    pub(crate) page_requests: Option<Box<dyn PageRequestSource>>,
    /// RTADDR as the last SRTP latched it.
    pub(crate) root: Option<u64>,
    /// The guest's context entry of each of its devices (`cfg.devices` order), once read:
    /// the context cache. Only present, valid entries are kept (with CAP.CM clear hardware
    /// caches no not-present entry, so software makes an entry present without invalidating);
    /// dropped on SRTP, on a context-cache invalidation (register or descriptor) and when
    /// translation is switched, which the specification requires software to issue after it
    /// changes a present root or context entry (VT-d 6.5.3.3, "Guidance to Software for
    /// Invalidations").
    pub(crate) contexts: Vec<Option<ContextEntry>>,
    /// PASIDs the guest holds through VCMD (guest PASID = host PASID).
    pub(crate) allocated: PasidMap<()>,
    /// PASIDs bound on the host for the guest.
    pub(crate) shadow: PasidMap<Shadowed>,
    /// Fault recording register hardware writes next.
    pub(crate) next_fault_record: usize,
    pub(crate) stats: ViommuStats,
    /// Interrupts raised under the lock, delivered after it is released.
    pub(crate) irqs: Vec<MsiMessage>,
}

impl Unit {
    /// A unit in its reset state over `backend`.
    pub(crate) fn new(
        cfg: ViommuConfig,
        mut backend: Box<dyn Backend>,
        mem: Arc<dyn GuestMemory>,
    ) -> Result<Unit, BackendError> {
        let host = backend.host_caps()?;
        if host.pasid_bits == 0 {
            return Err(BackendError::unusable(
                "the host container has no PASID support",
            ));
        }
        let id = identity(&host, &cfg);
        let mut regs = RegisterFile::new(usize::from(cfg.fault_records.clamp(1, 256)));
        regs.set32(VER, id.ver);
        regs.set(CAP, id.cap);
        regs.set(ECAP, id.ecap);
        regs.set(VCCAP, id.vccap);
        let contexts = vec![None; cfg.devices.len()];
        Ok(Unit {
            regs,
            guest_cfg: guest_config(&id),
            id,
            cfg,
            backend,
            mem,
            page_requests: None,
            root: None,
            contexts,
            allocated: PasidMap::default(),
            shadow: PasidMap::default(),
            next_fault_record: 0,
            stats: ViommuStats::default(),
            irqs: Vec::new(),
        })
    }

    /// The guest requester id of host device `host`, if it is the guest's.
    pub(crate) fn guest_sid(&self, host: SourceId) -> Option<SourceId> {
        self.cfg
            .devices
            .iter()
            .find(|d| d.host == host)
            .map(|d| d.guest)
    }

    /// The host requester id of guest device `guest`, if it is the guest's.
    pub(crate) fn host_sid(&self, guest: SourceId) -> Option<SourceId> {
        self.cfg
            .devices
            .iter()
            .find(|d| d.guest == guest)
            .map(|d| d.host)
    }

    /// Drops the context cache (see `contexts`).
    pub(crate) fn drop_contexts(&mut self) {
        self.contexts.iter_mut().for_each(|c| *c = None);
    }

    /// Queues an interrupt for delivery after the lock is released.
    pub(crate) fn send(&mut self, msg: Option<MsiMessage>) {
        self.irqs.extend(msg);
    }
}
