//! vsva-iommu: a software IOMMU modelled on Intel VT-d scalable mode.
//!
//! It translates PASID-tagged DMA the way the hardware does: root table → scalable context
//! entry → PASID directory → PASID table entry, then a first-level (x86-64 4/5-level),
//! second-level, nested or pass-through translation, every table read from memory
//! ([`memory::HostMemory`], a `vm-memory` `GuestMemoryMmap`). Faults carry the VT-d fault
//! reason codes ([`FaultReason`]) and are recorded in a bounded log unless an FPD bit applies.
//!
//! Caches (PASID cache, IOTLB, first- and second-level paging-structure caches, device TLB)
//! behave like the hardware's: an entry is never used after an invalidation that covers it,
//! and an entry whose invalidation is missing keeps being used, so guest bugs reproduce.
//! Whole-scope invalidations are O(1) (generation counters); page-selective ones cost one probe
//! per page named. `translate` takes no lock shared between translators.
//!
//! Modules, one job each:
//!
//! * formats: [`context`] (root, context and PASID-directory entries and the lookup chain),
//!   [`pasid_entry`], [`paging`] (first- and second-level entries and the walkers, shared
//!   with the `vsva pgwalk` inspector), [`fault`] (fault reasons, records, the log, access
//!   kinds and the interrupt range), [`invalidate`] (the requests and their checks), [`prq`]
//!   (page requests and responses), [`ats`] (device-TLB invalidation requests, completions and
//!   the [`DevTlbSink`] that carries them to devices), [`regs`] (configuration and CAP/ECAP);
//! * the device side of ATS: [`atc`] (the bounded translation cache a device keeps, filled
//!   from [`Iommu::ats_translate`]);
//! * memory: [`memory`] (address space and table page pool), [`table_store`] (the stores
//!   tables are built in, for the IOMMU's users and tests);
//! * the IOMMU: [`Iommu`] in `iommu/` — the facade (`mod.rs`), devices, the PASID table,
//!   stage 2, invalidation, page requests, translate (the cached front), walk (the slow path),
//!   the in-model device TLB, ATS translation requests with the fan-out of device-TLB
//!   invalidations and fencing, and DMA; the caches and their value words in `cache.rs`, the lock-free
//!   slot arrays in `slots.rs`, the write sequence that keeps a PASID entry from being read
//!   half rewritten in `entry_seq.rs`, counters in [`stats`];
//! * [`teardown`]: the IOMMU as a PASID-allocator teardown subscriber;
//! * `fuzzing` (feature `fuzzing`): the input interpreter of the fuzz target and its proptest
//!   twin.
//!
//! Every error that can reach a uAPI caller has `errno()` giving the Linux errno.
//!
//! Cargo features: `test-hooks` builds `Iommu::write_pasid_entry_raw` (a guest-driver-style
//! raw write for tests elsewhere); `fuzzing` builds the `fuzzing` module (and the hooks).
//!
//! The lock-free slot arrays, the generation / epoch invalidation scheme and the PASID entries'
//! write sequence are model-checked with loom:
//! `RUSTFLAGS="--cfg loom" cargo test -p vsva-iommu --release --lib loom`.

// The one unsafe step is in `memory.rs` (a memory snapshot borrowed under an epoch pin):
// everywhere else unsafe code is refused.
#![deny(unsafe_code)]

pub mod atc;
pub mod ats;
pub(crate) mod cache;
pub mod context;
pub(crate) mod entry_seq;
pub mod fault;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod invalidate;
pub mod iommu;
pub mod memory;
pub mod paging;
pub mod pasid_entry;
pub mod pool;
pub mod prq;
pub mod regs;
pub(crate) mod slots;
pub mod stats;
pub mod table_store;
pub mod teardown;

pub use atc::Atc;
pub use ats::{Completion, DevTlbInvalidation, DevTlbScope, DevTlbSink};
pub use cache::PAGE_INVALIDATION_LIMIT;
pub use fault::{
    Access, Fault, FaultLog, FaultObserver, FaultReason, RecordsAfter, SourceId, Stage,
    INTERRUPT_RANGE,
};
pub use invalidate::{
    ContextCacheScope, Invalidation, InvalidationError, PageRange, PasidCacheScope,
};
pub use iommu::{
    AtsReply, DeviceOptions, DmaError, Iommu, IommuError, Perms, S2Perms, Stage2Id, Translation,
};
pub use memory::{BackedSpan, HostMemory, MemoryError};
pub use pasid_entry::{PasidEntry, PasidEntryError, Pgtt};
pub use pool::TablePool;
pub use prq::{PageRequest, PageResponse, ResponseCode};
pub use regs::{ConfigError, IommuConfig};
pub use stats::StatsSnapshot;
pub use table_store::{GuestTableStore, HostTableStore};
