//! The host-wide VFIO object ([`Vfio`]): created over one IOMMU, it opens containers and
//! hands out the per-process mm contexts. Registering devices is in `crate::devices`; the
//! shared core every container holds is `crate::host`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vsva_ioasid::{IoasidSpace, SetStats};
use vsva_iommu::{Iommu, PageRequest, ResponseCode, SourceId};

use crate::container::Container;
use crate::error::VfioError;
use crate::host::VfioInner;
use crate::iopf::{FaultSink, FreedPasids, Router};
use crate::mm::{MmRegistry, VfioMm};
use crate::refusal::{RefusalCounts, Refusals};
use crate::registry::Registry;
use crate::sync::lock;
use crate::types::{ContainerId, ProcessToken, VfioConfig};

/// The token of the host's own PASID set (mdev default PASIDs).
const HOST_SET_TOKEN: u64 = 0;

/// The VFIO layer of one host: create one per IOMMU and share it (`Clone` is a new handle on
/// the same host).
#[derive(Clone)]
pub struct Vfio {
    pub(crate) inner: Arc<VfioInner>,
}

/// One process's PASID usage, as [`Vfio::processes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPasids {
    /// The process whose context this is.
    pub process: ProcessToken,
    /// Its set's counters (id, owned, quota).
    pub set: SetStats,
    /// How many of its PASIDs are bound to guest page tables.
    pub bound: usize,
}

impl Vfio {
    /// Creates the VFIO layer over `iommu`: a PASID space of `min(IOMMU PASID width, 20)` bits
    /// with the IOMMU registered as its teardown subscriber.
    ///
    /// Errors (`EINVAL`): a `stage2_levels` the IOMMU does not offer.
    pub fn new(iommu: Arc<Iommu>, config: VfioConfig) -> Result<Self, VfioError> {
        let cfg = iommu.config();
        let stage2_levels = match config.stage2_levels {
            Some(levels) if cfg.supports_sl_levels(levels) => levels,
            Some(levels) => {
                return Err(VfioError::invalid(
                    "stage2_levels",
                    u64::from(levels),
                    "the IOMMU's SAGAW does not offer this stage-2 depth",
                ))
            }
            None if cfg.supports_sl_levels(4) => 4,
            None => cfg.sagaw_levels.iter().copied().max().unwrap_or(4),
        };
        let bits = cfg.pasid_bits.min(vsva_ioasid::MAX_PASID_BITS);
        let space = IoasidSpace::new(bits)?;
        // The IOMMU clears a freed PASID's entries and flushes its caches before the
        // allocator may hand the number out again.
        let subscriber = space.subscribe(iommu.clone());
        let host_set = space.create_set(HOST_SET_TOKEN, u32::MAX)?;
        let iopf = Router::new(iommu.clone(), config.page_request_timeout);
        // A freed PASID's pending page requests are answered before the number is reused.
        let iopf_subscriber = space.subscribe(Arc::new(FreedPasids(Arc::downgrade(&iopf))));
        Ok(Vfio {
            inner: Arc::new(VfioInner {
                config,
                iommu,
                space,
                subscriber,
                mms: Arc::new(MmRegistry::default()),
                registry: Mutex::new(Registry::default()),
                host_set: Mutex::new(host_set),
                dids: Mutex::new(BTreeSet::new()),
                next_container: AtomicU64::new(1),
                stage2_levels,
                refusals: Refusals::default(),
                iopf,
                iopf_subscriber,
            }),
        })
    }

    /// The configuration the layer was created with.
    pub fn config(&self) -> &VfioConfig {
        &self.inner.config
    }

    /// The IOMMU every container of this host programs.
    pub fn iommu(&self) -> &Arc<Iommu> {
        &self.inner.iommu
    }

    /// The host-wide PASID space (for statistics, `find`, and extra teardown subscribers).
    pub fn pasid_space(&self) -> &IoasidSpace {
        &self.inner.space
    }

    /// Width of the host-wide PASID space: `min(IOMMU PASID width, 20)`.
    pub fn pasid_bits(&self) -> u8 {
        self.inner.space.pasid_bits()
    }

    /// Depth of every container's stage-2 table.
    pub fn stage2_levels(&self) -> u8 {
        self.inner.stage2_levels
    }

    /// The refusal counters: how many UNBIND_PGTBL and CACHE_INVLD requests were answered 0
    /// (as the series does) although they changed nothing, by op and reason. Each refusal is
    /// also logged with `tracing::warn!`. Reading takes no lock.
    pub fn refusals(&self) -> RefusalCounts {
        self.inner.refusals.snapshot()
    }

    /// Opens a container for `process`. It holds nothing until a group is attached.
    pub fn open_container(&self, process: ProcessToken) -> Container {
        let id = ContainerId(self.inner.next_container.fetch_add(1, Ordering::Relaxed));
        Container::new(self.inner.clone(), id, process)
    }

    /// A reference on the PASID context of `process`, created (with a set of
    /// [`VfioConfig::pasid_quota`]) if it has none. The reference keeps the context alive
    /// like a container does.
    ///
    /// Errors: `ENOTTY` when PASID support is off; `ENOSPC` if the allocator has no set id left.
    pub fn process_context(&self, process: ProcessToken) -> Result<VfioMm, VfioError> {
        let inner = &self.inner;
        if !inner.config.pasid_enabled {
            return Err(VfioError::PasidSupportDisabled);
        }
        let slot = inner.mms.slot(process);
        slot.acquire(&inner.space, inner.config.pasid_quota)?;
        Ok(VfioMm::held(slot))
    }

    /// A reference on the live PASID context of `process`, without creating one.
    pub fn find_process_context(&self, process: ProcessToken) -> Option<VfioMm> {
        let slot = self.inner.mms.find(process)?;
        VfioMm::existing(&slot)
    }

    /// The admin path: changes how many PASIDs `process` may own. Lowering the quota below
    /// what it owns frees nothing; it just cannot allocate until it is back under the quota.
    /// The change lasts as long as the context; a new context starts at the configured quota.
    ///
    /// Errors: `ESRCH` ([`VfioError::UnknownProcess`]) when the process has no live context.
    pub fn set_pasid_quota(&self, process: ProcessToken, quota: u32) -> Result<(), VfioError> {
        let mm = self
            .find_process_context(process)
            .ok_or(VfioError::UnknownProcess { process })?;
        self.inner.space.set_quota(mm.set_id(), quota)?;
        Ok(())
    }

    /// Every process with a live context and its PASID usage, ordered by set id.
    pub fn processes(&self) -> Vec<ProcessPasids> {
        let mut all: Vec<ProcessPasids> = self
            .inner
            .mms
            .contexts(&self.inner.space)
            .into_iter()
            .map(|(process, set, bound)| ProcessPasids {
                process,
                set,
                bound,
            })
            .collect();
        all.sort_by_key(|p| p.set.id);
        all
    }
}

/// I/O page faults: page requests routed to the process that owns the PASID, its responses
/// routed back to the device (see the `iopf` module).
impl Vfio {
    /// Sets (or with `None` removes) where page requests and DMA faults on a PASID go: to the
    /// process that bound the PASID. Without a sink every page request is answered INVALID at
    /// once and DMA faults stay in the IOMMU's log only.
    pub fn set_fault_sink(&self, sink: Option<Arc<dyn FaultSink>>) {
        self.inner.iopf.set_sink(sink);
    }

    /// A device raises a page request (PCIe PRI), at time `now` (the clock of
    /// [`Vfio::expire_page_requests`]). A request with PASID whose PASID is bound on the
    /// device goes to the binding process's [`FaultSink::page_request`] once the last request
    /// of its group arrives (every request of the group then, with one cookie); one without
    /// PASID, or that nobody can resolve (not bound, no sink), is answered INVALID to the
    /// device at once if it is the last of its group.
    ///
    /// # Errors
    ///
    /// Nothing is queued and nothing answered then. `EPERM` when the function's PRI
    /// capability has Enable clear; `EINVAL` when the device's context entry does not enable
    /// page requests (PRE clear, or PASIDE clear for a PASID request; the IOMMU records fault
    /// 0x47 / 0x45); `ENOSPC` when the device already has as many requests outstanding as its
    /// PRI capability allows (min(Outstanding Page Request Allocation, Capacity); the
    /// capacity is [`VfioConfig::page_requests_per_device`], which also bounds a device
    /// without a registered function).
    pub fn page_request(&self, req: PageRequest, now: std::time::Instant) -> Result<(), VfioError> {
        let function = lock(&self.inner.registry)
            .functions
            .get(&req.source_id)
            .map(|f| f.inner.clone());
        let mut limit = self.inner.config.page_requests_per_device;
        if let Some((enabled, allowed)) = function.and_then(|f| f.pri_state()) {
            if !enabled {
                return Err(VfioError::CapabilityDisabled {
                    source_id: req.source_id,
                    what: "a page request",
                    reason: "PRI Enable is clear in the Page Request control register",
                });
            }
            limit = allowed;
        }
        self.inner.iopf.page_request(req, now, limit)
    }

    /// The owner answers the page-request group named by `cookie` (iommufd's
    /// `iommu_hwpt_page_response`): the device gets a page-group response with `code` and
    /// retries (SUCCESS) or fails its requests.
    ///
    /// # Errors
    ///
    /// `EINVAL` when no group with this cookie is pending, or `owner` is not the process it
    /// was reported to; nothing changes then.
    pub fn page_response(
        &self,
        owner: ProcessToken,
        cookie: u32,
        code: ResponseCode,
    ) -> Result<(), VfioError> {
        self.inner.iopf.page_response(owner, cookie, code)
    }

    /// Answers FAILURE to every page-request group reported at least
    /// [`VfioConfig::page_request_timeout`] before `now` and not answered, and drops requests
    /// of groups that stayed incomplete that long. The embedder calls it periodically.
    /// Returns how many groups were answered.
    pub fn expire_page_requests(&self, now: std::time::Instant) -> usize {
        self.inner.iopf.expire(now)
    }

    /// Page requests of `device` not answered yet (incomplete groups included), which
    /// [`VfioConfig::page_requests_per_device`] bounds.
    pub fn outstanding_page_requests(&self, device: SourceId) -> u32 {
        self.inner.iopf.outstanding(device)
    }
}

impl fmt::Debug for Vfio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vfio")
            .field("pasid_bits", &self.pasid_bits())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}
