//! [`Viommu`], the device a VMM embeds: MMIO reads and writes of the register page, the
//! polling that brings host faults and page requests to the guest, and interrupt delivery
//! after the unit's lock is released.
//!
//! The unit's lock is `parking_lot`'s [`Mutex`], not the standard library's: every guest
//! register access takes it, and a standard mutex checks and maintains its poison flag on
//! each lock and release (about ten instructions of a PASID-based IOTLB descriptor's whole
//! MMIO write). Poisoning would add nothing here: the standard mutex's poison was ignored
//! (a poisoned lock's state was taken and used), which is what this lock does.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use vsva_iommu::prq::PageRequest;

use crate::backend::{Backend, BackendError, HostFault};
use crate::caps::ViommuConfig;
use crate::interrupt::InterruptSink;
use crate::memory::GuestMemory;
use crate::page_source::PageRequestSource;
use crate::unit::{Unit, ViommuStats};

/// What one [`Viommu::poll`] brought to the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Host faults written to the guest's fault recording registers (or lost to PFO).
    pub faults: usize,
    /// Page requests written to the guest's page request queue.
    pub page_requests: usize,
}

/// A virtual VT-d DMA-remapping unit in scalable mode, for one guest and one host container.
///
/// Every guest access runs to completion inside [`Viommu::write`]: a command, a virtual
/// command or a queue of invalidations is done, and its host calls made, when the write
/// returns. Interrupts raised on the way are delivered to the [`InterruptSink`] after the
/// internal lock is released.
pub struct Viommu {
    unit: Mutex<Unit>,
    interrupts: Arc<dyn InterruptSink>,
}

impl std::fmt::Debug for Viommu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viommu")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Viommu {
    /// A unit in its reset state: registers zero but VER, CAP, ECAP and VCCAP, which are
    /// derived from the back end's host capabilities and `config`.
    ///
    /// # Errors
    ///
    /// The back end's refusal to report its capabilities, or
    /// [`BackendErrorKind::Unusable`](crate::BackendErrorKind::Unusable) when the host container has no PASID support.
    pub fn new(
        config: ViommuConfig,
        backend: Box<dyn Backend>,
        memory: Arc<dyn GuestMemory>,
        interrupts: Arc<dyn InterruptSink>,
    ) -> Result<Viommu, BackendError> {
        Ok(Viommu {
            unit: Mutex::new(Unit::new(config, backend, memory)?),
            interrupts,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Unit> {
        self.unit.lock()
    }

    /// Releases the lock, then delivers the interrupts raised under it.
    #[inline]
    fn finish(&self, unit: MutexGuard<'_, Unit>) {
        if !unit.irqs.is_empty() {
            self.deliver(unit);
        }
    }

    /// The interrupt hand-off of [`Viommu::finish`], out of line: most accesses raise none.
    #[cold]
    #[inline(never)]
    fn deliver(&self, mut unit: MutexGuard<'_, Unit>) {
        let irqs = std::mem::take(&mut unit.irqs);
        drop(unit);
        for m in irqs {
            self.interrupts.deliver(m);
        }
    }

    /// A guest read of `size` (4 or 8) bytes at `offset` in the register page; other
    /// accesses read zero.
    pub fn read(&self, offset: u64, size: usize) -> u64 {
        self.lock().regs.read(offset, size)
    }

    /// A guest write of `size` (4 or 8) bytes at `offset`, with every effect it has (host
    /// calls included) done on return; other accesses are ignored.
    pub fn write(&self, offset: u64, size: usize, value: u64) {
        let mut unit = self.lock();
        unit.mmio_write(offset, size, value);
        self.finish(unit);
    }

    /// Installs the hook page requests come from (and page group responses go to).
    pub fn set_page_request_source(&self, source: Box<dyn PageRequestSource>) {
        self.lock().page_requests = Some(source);
    }

    /// Brings the host's new faults on the guest's devices into the guest's fault recording
    /// registers, and the page-request source's requests into its page request queue.
    ///
    /// # Errors
    ///
    /// The back end's refusal to list faults; page requests are still delivered.
    pub fn poll(&self) -> Result<PollOutcome, BackendError> {
        let mut unit = self.lock();
        let page_requests = unit.pump_page_requests();
        let faults = unit.backend.take_faults();
        let outcome = faults.map(|fs| PollOutcome {
            faults: fs.iter().filter(|f| unit.record_fault(f)).count(),
            page_requests,
        });
        self.finish(unit);
        outcome
    }

    /// Records one host fault as if the back end had reported it; `false` when it is not
    /// from one of the guest's devices.
    pub fn inject_fault(&self, fault: HostFault) -> bool {
        let mut unit = self.lock();
        let r = unit.record_fault(&fault);
        self.finish(unit);
        r
    }

    /// Delivers one page request to the guest's queue; `false` when it did not land (not the
    /// guest's device, page requests not offered, queue unset or full).
    pub fn inject_page_request(&self, req: PageRequest) -> bool {
        let mut unit = self.lock();
        let r = unit.deliver_page_request(&req);
        self.finish(unit);
        r
    }

    /// The counters.
    pub fn stats(&self) -> ViommuStats {
        self.lock().stats
    }

    /// PASIDs the guest holds through VCMD, ascending.
    pub fn allocated_pasids(&self) -> Vec<u32> {
        self.lock().allocated.keys().copied().collect()
    }

    /// PASIDs bound on the host for the guest, ascending.
    pub fn bound_pasids(&self) -> Vec<u32> {
        self.lock().shadow.keys().copied().collect()
    }

    /// Runs `f` on the back end (for the VMM's own calls on the same container).
    pub fn with_backend<R>(&self, f: impl FnOnce(&mut dyn Backend) -> R) -> R {
        f(&mut *self.lock().backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_can_be_shared_between_vcpu_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Viommu>();
    }
}
