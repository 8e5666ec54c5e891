//! The [`Iommu`]: construction, register and memory accessors, and the control lock.
//!
//! The rest of the IOMMU is split by job: `devices.rs` (attach/detach), `pasid_table.rs` (PASID
//! entries and PASID teardown), `stage2.rs` (second-level tables), `invalidation.rs`,
//! `page_requests.rs`, `translate.rs` (the cached front of translation), `walk.rs` (the table
//! walks), `devtlb.rs` (the in-model device TLB), `ats.rs` (translation requests of devices
//! that cache translations themselves, and the device-TLB invalidations sent to them) and
//! `dma.rs`.
//!
//! Locking: one control mutex serializes the table-building operations (attach, detach, PASID
//! entry writes, stage-2 map/unmap). `translate`, the DMA helpers and `invalidate` never take
//! it: translation reads tables from memory and consults the lock-free caches. A PASID entry
//! the control path writes is written in a write section of its device's entry sequence
//! (`entry_seq.rs`), which a PASID-cache miss checks around its read: a translation never
//! goes on with a half-written entry, so a replace (`replace_pasid_entry`) is hitless.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cache::{boxed_array, Caches, SOURCE_IDS};
use crate::fault::{Fault, FaultLog};
use crate::memory::HostMemory;
use crate::pool::TablePool;
use crate::prq::PageRequestQueue;
use crate::regs::IommuConfig;
use crate::stats::{Stats, StatsSnapshot};

// The public items of the split files, at the paths they had before the split.
pub use self::ats::AtsReply;
pub use self::devices::DeviceOptions;
pub use self::dma::DmaError;
pub use self::error::IommuError;
pub use self::stage2::{S2Perms, Stage2Id};
pub use self::translate::{Perms, Translation};
pub use crate::table_store::HostTableStore;

use self::ats::AtsTracking;
use self::control::Control;

mod ats;
mod control;
mod devices;
mod devtlb;
mod dma;
mod error;
mod invalidation;
mod page_requests;
mod pasid_table;
mod stage2;
mod translate;
mod walk;

/// The software IOMMU. `Send + Sync`; share it with an `Arc`.
pub struct Iommu {
    cfg: IommuConfig,
    cap: u64,
    ecap: u64,
    mem: HostMemory,
    pool: TablePool,
    rtaddr: AtomicU64,
    ctl: Mutex<Control>,
    caches: Caches,
    /// Per source id: the device was attached with ATS (a device TLB).
    ats: Box<[AtomicBool; SOURCE_IDS]>,
    ats_state: AtsTracking,
    faults: FaultLog,
    prq: PageRequestQueue,
    stats: Stats,
}

impl std::fmt::Debug for Iommu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iommu")
            .field("cap", &format_args!("{:#x}", self.cap))
            .field("ecap", &format_args!("{:#x}", self.ecap))
            .field(
                "rtaddr",
                &format_args!("{:#x}", self.rtaddr.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

impl Iommu {
    /// Creates an IOMMU over `mem`, owning the table pool `[pool_base, pool_base + pool_size)`
    /// (page aligned, backed by `mem`), with a root table allocated from the pool.
    pub fn new(
        cfg: IommuConfig,
        mem: HostMemory,
        pool_base: u64,
        pool_size: u64,
    ) -> Result<Self, IommuError> {
        cfg.validate()?;
        let pool = TablePool::new(&mem, pool_base, pool_size)?;
        let root = pool.alloc(&mem)?;
        Ok(Self {
            cap: cfg.cap(),
            ecap: cfg.ecap(),
            caches: Caches::new(cfg.domain_bits, cfg.iotlb_entries),
            faults: FaultLog::new(cfg.fault_log_capacity),
            prq: PageRequestQueue::new(cfg.prq_capacity),
            ats: boxed_array(|| AtomicBool::new(false)),
            ats_state: AtsTracking::new(),
            cfg,
            mem,
            pool,
            rtaddr: AtomicU64::new(root),
            ctl: Mutex::new(Control::default()),
            stats: Stats::new(),
        })
    }

    /// The configuration the IOMMU was built with (validated).
    pub fn config(&self) -> &IommuConfig {
        &self.cfg
    }
    /// The CAP register (offset 0x8) derived from the configuration.
    pub fn cap(&self) -> u64 {
        self.cap
    }
    /// The ECAP register (offset 0x10) derived from the configuration.
    pub fn ecap(&self) -> u64 {
        self.ecap
    }
    /// The host memory every table and DMA access goes through.
    pub fn memory(&self) -> &HostMemory {
        &self.mem
    }
    /// The pool that context tables, PASID directories and tables and stage-2 tables use.
    pub fn table_pool(&self) -> &TablePool {
        &self.pool
    }
    /// A table store over host memory and the pool, for building first-level tables.
    pub fn host_table_store(&self) -> HostTableStore<'_> {
        HostTableStore::new(&self.mem, &self.pool)
    }
    /// The root table address register (RTADDR).
    pub fn root_table_address(&self) -> u64 {
        self.rtaddr.load(Ordering::Acquire)
    }
    /// Programs RTADDR, as a driver does before SRTP. Cached context and PASID entries stay
    /// until a context-cache invalidation, as on hardware.
    pub fn set_root_table_address(&self, addr: u64) {
        self.rtaddr.store(addr, Ordering::Release);
    }
    /// The bounded log of recorded faults (query, drain, drop counts).
    pub fn fault_log(&self) -> &FaultLog {
        &self.faults
    }
    /// Fault records currently held, oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.records()
    }
    /// A snapshot of the translation and cache counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn registers_and_invalidation_validation() {
        let io = iommu();
        assert_eq!(io.ecap() >> 35 & 0x1f, 19, "PSS: 20-bit PASIDs");
        // The registers follow the configuration the IOMMU was built with.
        let cfg = IommuConfig {
            fl5lp: false,
            ers: false,
            pasid_bits: 10,
            ..IommuConfig::default()
        };
        let other = iommu_with(cfg.clone());
        assert_eq!(other.cap() >> 60 & 1, 0, "FL5LP");
        assert_eq!(other.ecap() >> 30 & 1, 0, "ERS");
        assert_eq!(other.ecap() >> 35 & 0x1f, 9, "PSS");
        assert_ne!(other.cap(), io.cap());
        // The debug form shows the register values themselves.
        let shown = format!("cap: {:#x}, ecap: {:#x}", cfg.cap(), cfg.ecap());
        assert!(format!("{other:?}").contains(&shown), "{other:?}");
        assert!(matches!(
            io.invalidate(&Invalidation::PasidIotlb {
                did: 1,
                pasid: 1 << 20
            }),
            Err(IommuError::Invalidation(InvalidationError::Pasid { .. }))
        ));
        let small = iommu_with(IommuConfig {
            domain_bits: 8,
            ..IommuConfig::default()
        });
        assert!(matches!(
            small.invalidate(&Invalidation::IotlbDomain { did: 300 }),
            Err(IommuError::Invalidation(InvalidationError::Domain {
                did: 300,
                bits: 8
            }))
        ));
    }
}
