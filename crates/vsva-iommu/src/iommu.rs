//! The [`Iommu`]: device attachment, PASID entries, stage-2 tables, translation with caches,
//! invalidation, faults, page requests, DMA helpers and PASID teardown.
//!
//! Locking: one control mutex serializes the table-building operations (attach, detach, PASID
//! entry writes, stage-2 map/unmap). `translate`, the DMA helpers and `invalidate` never take
//! it: translation reads tables from memory and consults the lock-free caches.

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use vm_memory::GuestMemoryMmap;

use crate::cache::{
    pack, page_key, psc_key, size_code, tag_key, Caches, DomainGens, PasidGens, NO_PASID,
    PAGE_INVALIDATION_LIMIT,
};
use crate::context::{pasid_entry_address, resolve, ContextEntry, PasidDirEntry, RootEntry};
use crate::fault::{Access, Fault, FaultLog, FaultReason, SourceId, Stage};
use crate::invalidate::{
    ContextCacheScope, Invalidation, InvalidationError, PageRange, PasidCacheScope,
};
use crate::memory::{HostMemory, MemoryError, TablePool, PAGE_SIZE};
use crate::paging::{
    self, check_fl_access, set_accessed_dirty, walk_first_level_into, walk_second_level_into,
    AdUpdate, FlControls, FlParams, Rights, SlParams, TableStore, TableTranslator, Walk, WalkFault,
    WalkStart, ADDR_MASK, SIZE_4K, SL_PS, SL_R, SL_W, SL_X,
};
use crate::pasid_entry::{PasidEntry, PasidEntryError, Pgtt};
use crate::prq::{PageRequest, PageRequestQueue, PageResponse, PrqError};
use crate::regs::{sl_width, ConfigError, IommuConfig};
use crate::stats::{Counter, Stats, StatsSnapshot};

/// Errors of the control path (attach, PASID entries, stage 2, invalidation requests).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IommuError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Memory or table-pool failure.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The device is already attached.
    #[error("device {source_id} is already attached")]
    AlreadyAttached {
        /// Device.
        source_id: SourceId,
    },
    /// The device is not attached.
    #[error("device {source_id} is not attached")]
    NotAttached {
        /// Device.
        source_id: SourceId,
    },
    /// A PASID beyond the device's directory or the IOMMU's PASID width.
    #[error("pasid {pasid:#x} is outside the device's PASID range (limit {limit:#x})")]
    PasidOutOfRange {
        /// PASID.
        pasid: u32,
        /// First PASID not covered.
        limit: u32,
    },
    /// The PASID entry is already present (clear it first).
    #[error("pasid {pasid:#x} of {source_id} already has a present entry")]
    PasidEntryPresent {
        /// Device.
        source_id: SourceId,
        /// PASID.
        pasid: u32,
    },
    /// The PASID entry is not present.
    #[error("pasid {pasid:#x} of {source_id} has no present entry")]
    PasidEntryAbsent {
        /// Device.
        source_id: SourceId,
        /// PASID.
        pasid: u32,
    },
    /// The PASID entry is not acceptable to this IOMMU.
    #[error(transparent)]
    PasidEntry(#[from] PasidEntryError),
    /// A device option is out of range.
    #[error("device option {field} = {value:#x} is invalid: {expected}")]
    DeviceOption {
        /// Field.
        field: &'static str,
        /// Value.
        value: u64,
        /// What is allowed.
        expected: &'static str,
    },
    /// No stage-2 table with this id.
    #[error("no stage-2 table with id {id}")]
    NoStage2 {
        /// Id.
        id: u32,
    },
    /// Unsupported stage-2 depth.
    #[error("stage-2 depth of {levels} levels is not supported (SAGAW)")]
    Stage2Levels {
        /// Levels asked for.
        levels: u8,
    },
    /// An address or length is not 4 KiB aligned, or zero.
    #[error("{field} = {value:#x} must be a non-zero multiple of 4096")]
    Unaligned {
        /// Field.
        field: &'static str,
        /// Value.
        value: u64,
    },
    /// An address beyond what the table can map.
    #[error("{field} range ending at {end:#x} exceeds the {width}-bit limit")]
    TooWide {
        /// Field.
        field: &'static str,
        /// End of the range.
        end: u64,
        /// Width in bits.
        width: u8,
    },
    /// The range overlaps an existing stage-2 mapping.
    #[error("stage-2 mapping at iova {iova:#x} overlaps an existing mapping")]
    Overlap {
        /// First overlapping address.
        iova: u64,
    },
    /// An unmap that would split a large page.
    #[error("unmap of [{start:#x}, {end:#x}) would split the {size:#x}-byte page at {page:#x}")]
    PartialLargePage {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Page start.
        page: u64,
        /// Page size.
        size: u64,
    },
    /// Invalid invalidation request.
    #[error(transparent)]
    Invalidation(#[from] InvalidationError),
    /// Page request path error.
    #[error(transparent)]
    PageRequest(#[from] PrqError),
}

/// A DMA helper failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DmaError {
    /// The translation faulted.
    #[error(transparent)]
    Fault(#[from] Fault),
    /// The translation succeeded but no host memory backs the output address.
    #[error("translated address {host_addr:#x} (iova {iova:#x}) is not backed by memory")]
    Unbacked {
        /// Input address.
        iova: u64,
        /// Output address.
        host_addr: u64,
    },
}

/// Permissions of a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed (for the privilege of the request that produced the translation).
    pub write: bool,
    /// Execute allowed.
    pub execute: bool,
    /// User (unprivileged) requests allowed.
    pub user: bool,
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// Host-physical address of the input address.
    pub host_addr: u64,
    /// Size of the page (the smaller of the two stages when nested) containing it.
    pub page_size: u64,
    /// Permissions of the page.
    pub perms: Perms,
}

/// Stage-2 mapping permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct S2Perms {
    /// Read.
    pub read: bool,
    /// Write.
    pub write: bool,
    /// Execute.
    pub execute: bool,
}

impl S2Perms {
    /// Read only.
    pub const R: S2Perms = S2Perms {
        read: true,
        write: false,
        execute: false,
    };
    /// Read and write.
    pub const RW: S2Perms = S2Perms {
        read: true,
        write: true,
        execute: false,
    };
    /// Read, write and execute.
    pub const RWX: S2Perms = S2Perms {
        read: true,
        write: true,
        execute: true,
    };
    fn bits(self) -> u64 {
        flag(self.read, SL_R) | flag(self.write, SL_W) | flag(self.execute, SL_X)
    }
}

/// Identifies a stage-2 (second-level) table created by [`Iommu::create_stage2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stage2Id(pub u32);

/// How a device is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Number of PASIDs the PASID directory covers (rounded up to a power of two, ≥ 8192).
    pub pasids: u32,
    /// PASID used for requests without PASID.
    pub rid_pasid: u32,
    /// Requests without PASID are privileged.
    pub rid_priv: bool,
    /// The device has a device TLB (ATS): translations are cached in it.
    pub ats: bool,
    /// The device may send page requests (PRI).
    pub pri: bool,
    /// Fault processing disable for the whole device.
    pub fpd: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            pasids: 1 << 20,
            rid_pasid: 0,
            rid_priv: false,
            ats: false,
            pri: false,
            fpd: false,
        }
    }
}

struct DeviceCtl {
    dir: u64,
    dir_pages: u64,
    limit: u32,
    tables: HashMap<u32, u64>,
    opts: DeviceOptions,
}

struct Stage2Ctl {
    root: u64,
    levels: u8,
    pages: Vec<u64>,
}

#[derive(Default)]
struct Control {
    devices: HashMap<SourceId, DeviceCtl>,
    ctx_tables: HashMap<(u8, bool), u64>,
    stage2: HashMap<u32, Stage2Ctl>,
    next_stage2: u32,
}

/// Cached PASID-table information for one (source id, PASID).
#[derive(Debug, Clone, Copy)]
struct PasidInfo {
    entry: PasidEntry,
    pasid: u32,
    fpd: bool,
    rid_priv: bool,
}

// IOTLB value bits (low 12 bits of the value word; the rest is the output page).
const V_FL_W: u64 = 1 << 0;
const V_FL_U: u64 = 1 << 1;
const V_FL_X: u64 = 1 << 2;
const V_SL_R: u64 = 1 << 3;
const V_SL_W: u64 = 1 << 4;
const V_SL_X: u64 = 1 << 5;
const V_DIRTY: u64 = 1 << 6;
const V_SIZE_SHIFT: u32 = 7;

const INTERRUPT_RANGE: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);

// Front-cache control word: bits 7:0 = access kinds allowed without a walk (bit
// `access_kind(..)`), then the permissions (read, write, execute, user) reported to user and to
// privileged requests, then RID_PRIV.
const F_PERMS_USER: u64 = 8;
const F_PERMS_PRIV: u64 = 12;
const F_RID_PRIV: u64 = 1 << 16;

/// Index of an access kind: write | execute << 1 | privileged << 2.
#[inline(always)]
fn access_kind(write: bool, execute: bool, privileged: bool) -> u64 {
    u64::from(write) | u64::from(execute) << 1 | u64::from(privileged) << 2
}

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
    ats: Box<[AtomicBool]>,
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

/// A [`TableStore`] over host memory and the IOMMU's table pool (identity addresses): for
/// building first-level tables of first-level-only PASIDs, or any table at host addresses.
pub struct HostTableStore<'a> {
    mem: &'a HostMemory,
    pool: &'a TablePool,
}

impl TableStore for HostTableStore<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.pool.alloc(self.mem).ok()
    }
    fn read(&self, addr: u64) -> u64 {
        self.mem.load_u64(addr).unwrap_or(0)
    }
    fn write(&mut self, addr: u64, value: u64) {
        // Table pages come from the pool, which is backed: a failure cannot happen for them;
        // for other addresses the write is dropped, like a write to nowhere.
        let _ = self.mem.store_u64(addr, value);
    }
}

/// `mask` when `on`, else 0.
#[inline(always)]
fn flag(on: bool, mask: u64) -> u64 {
    if on {
        mask
    } else {
        0
    }
}

fn unaligned(field: &'static str, value: u64) -> IommuError {
    IommuError::Unaligned { field, value }
}

fn size_of_code(code: u64) -> u64 {
    1 << (12 + 9 * code)
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
            ats: (0..1usize << 16).map(|_| AtomicBool::new(false)).collect(),
            cfg,
            mem,
            pool,
            rtaddr: AtomicU64::new(root),
            ctl: Mutex::new(Control::default()),
            stats: Stats::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IommuConfig {
        &self.cfg
    }
    /// CAP register value.
    pub fn cap(&self) -> u64 {
        self.cap
    }
    /// ECAP register value.
    pub fn ecap(&self) -> u64 {
        self.ecap
    }
    /// Host memory.
    pub fn memory(&self) -> &HostMemory {
        &self.mem
    }
    /// The table page pool.
    pub fn table_pool(&self) -> &TablePool {
        &self.pool
    }
    /// A table store over host memory and the pool, for building first-level tables.
    pub fn host_table_store(&self) -> HostTableStore<'_> {
        HostTableStore {
            mem: &self.mem,
            pool: &self.pool,
        }
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
    /// The fault log.
    pub fn fault_log(&self) -> &FaultLog {
        &self.faults
    }
    /// Fault records currently held, oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.records()
    }
    /// Statistics.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ------------------------------------------------------------------ devices

    /// Attaches a device: writes its scalable-mode context entry (PASID enabled, a new PASID
    /// directory of `opts.pasids` PASIDs), creating the context table if needed.
    pub fn attach_device(&self, sid: SourceId, opts: DeviceOptions) -> Result<(), IommuError> {
        let limit_all = 1u32 << self.cfg.pasid_bits;
        if opts.pasids == 0 || opts.pasids > 1 << 20 {
            return Err(IommuError::DeviceOption {
                field: "pasids",
                value: u64::from(opts.pasids),
                expected: "1..=2^20",
            });
        }
        if opts.rid_pasid >= limit_all {
            return Err(IommuError::DeviceOption {
                field: "rid_pasid",
                value: u64::from(opts.rid_pasid),
                expected: "below 2^pasid_bits",
            });
        }
        if opts.ats && !self.cfg.device_tlb {
            return Err(IommuError::DeviceOption {
                field: "ats",
                value: 1,
                expected: "false: the IOMMU has no device-TLB support (ECAP.DT)",
            });
        }
        if opts.pri && !self.cfg.prs {
            return Err(IommuError::DeviceOption {
                field: "pri",
                value: 1,
                expected: "false: the IOMMU has no page-request support (ECAP.PRS)",
            });
        }
        let mut ctl = self.control();
        if ctl.devices.contains_key(&sid) {
            return Err(IommuError::AlreadyAttached { source_id: sid });
        }
        let upper = sid.devfn() >= 128;
        let ct = match ctl.ctx_tables.get(&(sid.bus(), upper)) {
            Some(&t) => t,
            None => {
                let t = self.pool.alloc(&self.mem)?;
                let re = RootEntry::address(self.root_table_address(), sid.bus())
                    + if upper { 8 } else { 0 };
                self.mem.store_u64(re, RootEntry::encode_half(t))?;
                ctl.ctx_tables.insert((sid.bus(), upper), t);
                t
            }
        };
        let pdts = ContextEntry::pdts_for(opts.pasids);
        let ctx = ContextEntry {
            fpd: opts.fpd,
            dte: opts.ats,
            pasid_enable: true,
            pre: opts.pri,
            pdts,
            pasid_dir: 0,
            rid_pasid: opts.rid_pasid,
            rid_priv: opts.rid_priv,
        };
        let dir_bytes = u64::from(ctx.dir_entries()) * 8;
        let dir_pages = dir_bytes.div_ceil(PAGE_SIZE);
        let dir = self.pool.alloc_contiguous(&self.mem, dir_pages)?;
        let ctx = ContextEntry {
            pasid_dir: dir,
            ..ctx
        };
        let ce = ContextEntry::address(ct, sid.devfn());
        let raw = ctx.to_raw();
        for i in (0..4).rev() {
            self.mem.store_u64(ce + 8 * i as u64, raw[i])?;
        }
        self.ats[usize::from(sid.0)].store(opts.ats, Ordering::Release);
        ctl.devices.insert(
            sid,
            DeviceCtl {
                dir,
                dir_pages,
                limit: ctx.pasid_limit().min(limit_all),
                tables: HashMap::default(),
                opts,
            },
        );
        Ok(())
    }

    /// Detaches a device: clears its context entry, frees its PASID directory and tables, and
    /// flushes the context cache, the PASID cache and IOTLB entries of its present PASIDs, and
    /// its device TLB.
    pub fn detach_device(&self, sid: SourceId) -> Result<(), IommuError> {
        let mut ctl = self.control();
        let dev = ctl
            .devices
            .remove(&sid)
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        let upper = sid.devfn() >= 128;
        if let Some(&ct) = ctl.ctx_tables.get(&(sid.bus(), upper)) {
            self.mem
                .store_u64(ContextEntry::address(ct, sid.devfn()), 0)?;
        }
        self.apply(&Invalidation::ContextCache(ContextCacheScope::Device {
            source_id: sid,
        }));
        let mut tables: Vec<_> = dev.tables.iter().map(|(&i, &t)| (i, t)).collect();
        tables.sort_unstable();
        for (idx, table) in tables {
            for slot in 0..64u32 {
                let pasid = idx << 6 | slot;
                let addr = pasid_entry_address(table, pasid);
                let v0 = self.mem.load_u64(addr)?;
                if v0 & 1 != 0 {
                    let v1 = self.mem.load_u64(addr + 8)?;
                    let pgtt = Pgtt::from_bits(v0 >> 6 & 7);
                    self.flush_pasid(sid, pasid, v1 as u16, pgtt, dev.opts.rid_pasid);
                }
            }
            self.pool.free(table)?;
        }
        for i in 0..dev.dir_pages {
            self.pool.free(dev.dir + i * PAGE_SIZE)?;
        }
        self.apply(&Invalidation::DeviceTlbAll { source_id: sid });
        self.ats[usize::from(sid.0)].store(false, Ordering::Release);
        Ok(())
    }

    /// Attached devices.
    pub fn devices(&self) -> Vec<SourceId> {
        let mut v: Vec<_> = self.control().devices.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn pasid_table(
        &self,
        ctl: &mut Control,
        sid: SourceId,
        pasid: u32,
        create: bool,
    ) -> Result<Option<u64>, IommuError> {
        let dev = ctl
            .devices
            .get_mut(&sid)
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        if pasid >= dev.limit {
            return Err(IommuError::PasidOutOfRange {
                pasid,
                limit: dev.limit,
            });
        }
        let idx = pasid >> 6;
        if let Some(&t) = dev.tables.get(&idx) {
            return Ok(Some(t));
        }
        if !create {
            return Ok(None);
        }
        let t = self.pool.alloc(&self.mem)?;
        dev.tables.insert(idx, t);
        let de = PasidDirEntry {
            fpd: false,
            table: t,
        };
        self.mem
            .store_u64(PasidDirEntry::address(dev.dir, pasid), de.to_raw())?;
        Ok(Some(t))
    }

    fn write_entry_words(&self, addr: u64, words: &[u64; 8]) -> Result<(), IommuError> {
        // Clear P first, then the body, then word 0: the entry is never seen half written.
        self.mem.store_u64(addr, words[0] & !1)?;
        for (i, &w) in words.iter().enumerate().skip(1) {
            self.mem.store_u64(addr + 8 * i as u64, w)?;
        }
        self.mem.store_u64(addr, words[0])?;
        Ok(())
    }

    /// Sets the PASID entry of a device. The entry must be valid for this IOMMU and the slot
    /// must be empty (clear it first): since not-present entries are never cached, no
    /// invalidation is needed afterwards.
    pub fn set_pasid_entry(
        &self,
        sid: SourceId,
        pasid: u32,
        entry: &PasidEntry,
    ) -> Result<(), IommuError> {
        entry.validate(&self.cfg)?;
        let mut ctl = self.control();
        let table = self
            .pasid_table(&mut ctl, sid, pasid, true)?
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        let addr = pasid_entry_address(table, pasid);
        if self.mem.load_u64(addr)? & 1 != 0 {
            return Err(IommuError::PasidEntryPresent {
                source_id: sid,
                pasid,
            });
        }
        self.write_entry_words(addr, &entry.to_raw())
    }

    /// Writes raw PASID entry words with no validation and no cache flush, as a guest driver
    /// editing its table in memory would (to reproduce missing-invalidation bugs).
    pub fn write_pasid_entry_raw(
        &self,
        sid: SourceId,
        pasid: u32,
        words: [u64; 8],
    ) -> Result<(), IommuError> {
        let mut ctl = self.control();
        let table = self
            .pasid_table(&mut ctl, sid, pasid, true)?
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        self.write_entry_words(pasid_entry_address(table, pasid), &words)
    }

    /// The raw words of a PASID entry (`None` when its PASID table does not exist).
    pub fn read_pasid_entry(
        &self,
        sid: SourceId,
        pasid: u32,
    ) -> Result<Option<[u64; 8]>, IommuError> {
        let mut ctl = self.control();
        let Some(table) = self.pasid_table(&mut ctl, sid, pasid, false)? else {
            return Ok(None);
        };
        let addr = pasid_entry_address(table, pasid);
        let mut w = [0u64; 8];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self.mem.load_u64(addr + 8 * i as u64)?;
        }
        Ok(Some(w))
    }

    /// Clears a present PASID entry and flushes, like the Linux driver's teardown: PASID cache
    /// for (DID, PASID), the IOTLB (PASID-based for first-level/nested, domain for
    /// second-level/pass-through), and the device TLB for the PASID.
    pub fn clear_pasid_entry(&self, sid: SourceId, pasid: u32) -> Result<(), IommuError> {
        let mut ctl = self.control();
        self.clear_locked(&mut ctl, sid, pasid)
    }

    fn clear_locked(&self, ctl: &mut Control, sid: SourceId, pasid: u32) -> Result<(), IommuError> {
        let absent = IommuError::PasidEntryAbsent {
            source_id: sid,
            pasid,
        };
        let table = self.pasid_table(ctl, sid, pasid, false)?.ok_or(absent)?;
        let addr = pasid_entry_address(table, pasid);
        let v0 = self.mem.load_u64(addr)?;
        if v0 & 1 == 0 {
            return Err(IommuError::PasidEntryAbsent {
                source_id: sid,
                pasid,
            });
        }
        let did = self.mem.load_u64(addr + 8)? as u16;
        self.write_entry_words(addr, &[0; 8])?;
        let rid_pasid = ctl.devices.get(&sid).map_or(0, |d| d.opts.rid_pasid);
        self.flush_pasid(sid, pasid, did, Pgtt::from_bits(v0 >> 6 & 7), rid_pasid);
        Ok(())
    }

    fn flush_pasid(&self, sid: SourceId, pasid: u32, did: u16, pgtt: Option<Pgtt>, rid_pasid: u32) {
        self.apply(&Invalidation::PasidCache(PasidCacheScope::Pasid {
            did,
            pasid,
        }));
        match pgtt {
            Some(Pgtt::FirstLevel | Pgtt::Nested) => {
                self.apply(&Invalidation::PasidIotlb { did, pasid })
            }
            _ => self.apply(&Invalidation::IotlbDomain { did }),
        }
        self.apply(&Invalidation::DeviceTlb {
            source_id: sid,
            pasid: Some(pasid),
            pages: None,
        });
        if pasid == rid_pasid {
            // Requests without PASID were translated through this entry too.
            self.apply(&Invalidation::DeviceTlb {
                source_id: sid,
                pasid: None,
                pages: None,
            });
        }
    }

    /// Clears `pasid`'s entry on every device where it is present and flushes every cache
    /// that could hold it (PASID cache, IOTLB and paging-structure caches, device TLBs).
    /// Returns the devices it was cleared on.
    pub fn teardown_pasid(&self, pasid: u32) -> Vec<SourceId> {
        let mut ctl = self.control();
        let sids: Vec<SourceId> = ctl.devices.keys().copied().collect();
        let mut cleared: Vec<SourceId> = sids
            .into_iter()
            .filter(|&sid| self.clear_locked(&mut ctl, sid, pasid).is_ok())
            .collect();
        cleared.sort_unstable();
        cleared
    }

    // ------------------------------------------------------------------ stage 2

    /// Creates an empty second-level table of `levels` levels (3, 4 or 5, per SAGAW).
    pub fn create_stage2(&self, levels: u8) -> Result<Stage2Id, IommuError> {
        if !self.cfg.supports_sl_levels(levels) {
            return Err(IommuError::Stage2Levels { levels });
        }
        let root = self.pool.alloc(&self.mem)?;
        let mut ctl = self.control();
        ctl.next_stage2 += 1;
        let id = ctl.next_stage2;
        ctl.stage2.insert(
            id,
            Stage2Ctl {
                root,
                levels,
                pages: vec![root],
            },
        );
        Ok(Stage2Id(id))
    }

    /// Root (SSPTPTR) and depth of a stage-2 table.
    pub fn stage2_root(&self, id: Stage2Id) -> Result<(u64, u8), IommuError> {
        let ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        Ok((s.root, s.levels))
    }

    /// Destroys a stage-2 table and frees its pages. PASID entries still naming it must be
    /// cleared by the caller first.
    pub fn destroy_stage2(&self, id: Stage2Id) -> Result<(), IommuError> {
        let s = self
            .control()
            .stage2
            .remove(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        for p in s.pages {
            self.pool.free(p)?;
        }
        Ok(())
    }

    /// Maps `[iova, iova + len)` to `[hpa, hpa + len)` with `perms`, using 1 GiB and 2 MiB
    /// pages where both addresses are aligned (and SLLPS allows). Fails without changing
    /// anything on unaligned input, a range beyond the table's width or HAW, or overlap with an
    /// existing mapping. Like hardware page tables, a new mapping needs no invalidation (nothing
    /// not-present is cached).
    pub fn stage2_map(
        &self,
        id: Stage2Id,
        iova: u64,
        hpa: u64,
        len: u64,
        perms: S2Perms,
    ) -> Result<(), IommuError> {
        for (f, v) in [("iova", iova), ("hpa", hpa), ("len", len)] {
            if v % PAGE_SIZE != 0 || (f == "len" && v == 0) {
                return Err(unaligned(f, v));
            }
        }
        let mut ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        let (root, levels) = (s.root, s.levels);
        let width = sl_width(levels);
        let end = iova.checked_add(len).ok_or(IommuError::TooWide {
            field: "iova",
            end: u64::MAX,
            width,
        })?;
        if end > 1u64 << width {
            return Err(IommuError::TooWide {
                field: "iova",
                end,
                width,
            });
        }
        let hend = hpa.saturating_add(len);
        if hend > 1u64 << self.cfg.haw() {
            return Err(IommuError::TooWide {
                field: "hpa",
                end: hend,
                width: self.cfg.haw(),
            });
        }
        let mut new_pages = Vec::new();
        let mut off = 0;
        let mut result = Ok(());
        while off < len {
            let (va, pa, rest) = (iova + off, hpa + off, len - off);
            match self.s2_map_one(root, levels, va, pa, rest, perms, &mut new_pages) {
                Ok(size) => off += size,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() && off > 0 {
            // Roll back what was mapped; it cannot split pages we created ourselves.
            self.s2_unmap_range(root, levels, iova, off, false)?;
        }
        let s = ctl
            .stage2
            .get_mut(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        s.pages.extend(new_pages);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn s2_map_one(
        &self,
        root: u64,
        levels: u8,
        va: u64,
        pa: u64,
        rest: u64,
        perms: S2Perms,
        new_pages: &mut Vec<u64>,
    ) -> Result<u64, IommuError> {
        let mut table = root;
        let mut level = levels;
        loop {
            let size = paging::level_size(level);
            let addr = table + paging::level_index(va, level) * 8;
            let e = self.mem.load_u64(addr)?;
            let present = e & (SL_R | SL_W | SL_X) != 0;
            let large_ok = match level {
                3 => self.cfg.sl_1g,
                2 => self.cfg.sl_2m,
                1 => true,
                _ => false,
            };
            if large_ok
                && !present
                && va.is_multiple_of(size)
                && pa.is_multiple_of(size)
                && rest >= size
            {
                let ps = if level > 1 { SL_PS } else { 0 };
                self.mem.store_u64(addr, pa | ps | perms.bits())?;
                return Ok(size);
            }
            if level == 1 || (present && (e & SL_PS != 0)) {
                return Err(IommuError::Overlap { iova: va });
            }
            table = if present {
                e & ADDR_MASK
            } else {
                let t = self.pool.alloc(&self.mem)?;
                new_pages.push(t);
                self.mem.store_u64(addr, t | SL_R | SL_W | SL_X)?;
                t
            };
            level -= 1;
        }
    }

    /// Unmaps `[iova, iova + len)`; holes are skipped. Fails without changing anything if the
    /// range would split a large page. Returns the bytes unmapped. Cached translations stay
    /// until the caller invalidates ([`Invalidation::IotlbDomainPages`] for each DID using the
    /// table), as on hardware.
    pub fn stage2_unmap(&self, id: Stage2Id, iova: u64, len: u64) -> Result<u64, IommuError> {
        for (f, v) in [("iova", iova), ("len", len)] {
            if v % PAGE_SIZE != 0 || (f == "len" && v == 0) {
                return Err(unaligned(f, v));
            }
        }
        let ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        let (root, levels) = (s.root, s.levels);
        self.s2_unmap_range(root, levels, iova, len, true)?;
        self.s2_unmap_range(root, levels, iova, len, false)
    }

    fn s2_unmap_range(
        &self,
        root: u64,
        levels: u8,
        iova: u64,
        len: u64,
        check_only: bool,
    ) -> Result<u64, IommuError> {
        let end = iova.saturating_add(len).min(1u64 << sl_width(levels));
        let mut va = iova;
        let mut unmapped = 0;
        while va < end {
            let mut table = root;
            let mut level = levels;
            let step = loop {
                let size = paging::level_size(level);
                let addr = table + paging::level_index(va, level) * 8;
                let e = self.mem.load_u64(addr)?;
                if e & (SL_R | SL_W | SL_X) == 0 {
                    break size - (va & (size - 1));
                }
                if level == 1 || e & SL_PS != 0 {
                    let page = va & !(size - 1);
                    if page < iova || page + size > end {
                        return Err(IommuError::PartialLargePage {
                            start: iova,
                            end,
                            page,
                            size,
                        });
                    }
                    if !check_only {
                        self.mem.store_u64(addr, 0)?;
                        unmapped += size;
                    }
                    break size;
                }
                table = e & ADDR_MASK;
                level -= 1;
            };
            va = va.saturating_add(step);
        }
        Ok(unmapped)
    }

    // ------------------------------------------------------------------ invalidation

    /// Processes an invalidation request (as a completed queued-invalidation descriptor: when
    /// this returns, no lookup starting afterwards uses an entry it covers).
    pub fn invalidate(&self, inv: &Invalidation) -> Result<(), IommuError> {
        let did_ok = |did: u16| {
            if u32::from(did) >> self.cfg.domain_bits != 0 {
                Err(InvalidationError::Domain {
                    did,
                    bits: self.cfg.domain_bits,
                })
            } else {
                Ok(())
            }
        };
        let pasid_ok = |pasid: u32| {
            if pasid >> self.cfg.pasid_bits != 0 {
                Err(InvalidationError::Pasid {
                    pasid,
                    bits: self.cfg.pasid_bits,
                })
            } else {
                Ok(())
            }
        };
        let am_ok = |r: &PageRange| {
            if r.am > self.cfg.mamv {
                Err(InvalidationError::AddressMask {
                    am: r.am,
                    max: self.cfg.mamv,
                })
            } else {
                Ok(())
            }
        };
        match *inv {
            Invalidation::IotlbGlobal | Invalidation::ContextCache(_) => {}
            Invalidation::IotlbDomain { did } | Invalidation::PasidIotlbAll { did } => did_ok(did)?,
            Invalidation::IotlbDomainPages { did, ref range, .. } => {
                did_ok(did)?;
                am_ok(range)?;
            }
            Invalidation::PasidIotlb { did, pasid } => {
                did_ok(did)?;
                pasid_ok(pasid)?;
            }
            Invalidation::PasidIotlbPages {
                did,
                pasid,
                ref range,
                ..
            } => {
                did_ok(did)?;
                pasid_ok(pasid)?;
                am_ok(range)?;
            }
            Invalidation::PasidCache(PasidCacheScope::All) => {}
            Invalidation::PasidCache(PasidCacheScope::Domain { did }) => did_ok(did)?,
            Invalidation::PasidCache(PasidCacheScope::Pasid { did, pasid }) => {
                did_ok(did)?;
                pasid_ok(pasid)?;
            }
            Invalidation::DeviceTlb { pasid, pages, .. } => {
                if let Some(p) = pasid {
                    pasid_ok(p)?;
                }
                if let Some(r) = pages {
                    am_ok(&r)?;
                }
            }
            Invalidation::DeviceTlbAll { .. } => {}
        }
        self.apply(inv);
        Ok(())
    }

    fn apply(&self, inv: &Invalidation) {
        self.stats.inc(Counter::Invalidations);
        self.apply_scoped(inv);
        // Every invalidation retires the whole front cache (after the scoped work, so a lookup
        // that sees the new epoch also sees the scoped removals).
        self.caches.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn apply_scoped(&self, inv: &Invalidation) {
        let c = &self.caches;
        match *inv {
            Invalidation::IotlbGlobal => c.global.iotlb.bump(),
            Invalidation::IotlbDomain { did } => c.domain(did).iotlb.bump(),
            Invalidation::IotlbDomainPages { did, range, ih } => {
                let dom = c.domain(did);
                dom.sl_psi.bump();
                dom.nested.bump();
                let (start, len) = range.span();
                if range.pages() > PAGE_INVALIDATION_LIMIT {
                    dom.iotlb.bump();
                    return;
                }
                let sizes = dom.sl_sizes.load(Ordering::Acquire);
                Caches::remove_range(&c.iotlb, tag_key(did, NO_PASID), start, len, sizes);
                if !ih {
                    Caches::remove_psc_range(&c.sl_psc, u64::from(did), start, len);
                }
            }
            Invalidation::PasidIotlbAll { did } => c.domain(did).fl.bump(),
            Invalidation::PasidIotlb { did, pasid } => c.domain(did).pasids.get(pasid).iotlb.bump(),
            Invalidation::PasidIotlbPages {
                did,
                pasid,
                range,
                ih,
            } => {
                let pg = c.domain(did).pasids.get(pasid);
                pg.psi.bump();
                if range.pages() > PAGE_INVALIDATION_LIMIT {
                    pg.iotlb.bump();
                    return;
                }
                let (start, len) = range.span();
                let tag = tag_key(did, pasid);
                Caches::remove_range(&c.iotlb, tag, start, len, pg.sizes.load(Ordering::Acquire));
                if !ih {
                    Caches::remove_psc_range(&c.fl_psc, tag, start, len);
                }
            }
            Invalidation::PasidCache(PasidCacheScope::All) => c.global.pc.bump(),
            Invalidation::PasidCache(PasidCacheScope::Domain { did }) => c.domain(did).pc.bump(),
            Invalidation::PasidCache(PasidCacheScope::Pasid { did, pasid }) => {
                c.domain(did).pasids.get(pasid).pc.bump()
            }
            Invalidation::ContextCache(ContextCacheScope::All) => c.global.ctx.bump(),
            Invalidation::ContextCache(ContextCacheScope::Device { source_id }) => {
                c.device(source_id.0).ctx.bump()
            }
            Invalidation::DeviceTlbAll { source_id } => c.device(source_id.0).devtlb.bump(),
            Invalidation::DeviceTlb {
                source_id,
                pasid,
                pages,
            } => {
                let p = pasid.unwrap_or(NO_PASID);
                let dp = c.device(source_id.0).pasids.get(p);
                match pages {
                    None => dp.devtlb.bump(),
                    Some(range) => {
                        dp.psi.bump();
                        if range.pages() > PAGE_INVALIDATION_LIMIT {
                            dp.devtlb.bump();
                            return;
                        }
                        let (start, len) = range.span();
                        let tag = u64::from(source_id.0) << 21 | u64::from(p);
                        Caches::remove_range(
                            &c.devtlb,
                            tag,
                            start,
                            len,
                            dp.sizes.load(Ordering::Acquire),
                        );
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ page requests

    /// A device posts a page request (PCIe PRI). The device must be attached with `pri`.
    pub fn page_request(&self, req: PageRequest) -> Result<(), IommuError> {
        let enabled = self
            .control()
            .devices
            .get(&req.source_id)
            .is_some_and(|d| d.opts.pri);
        if !enabled {
            return Err(PrqError::NotEnabled {
                source_id: req.source_id,
            }
            .into());
        }
        Ok(self.prq.push(req)?)
    }

    /// Takes the queued page requests.
    pub fn take_page_requests(&self) -> Vec<PageRequest> {
        self.prq.take_requests()
    }

    /// Answers a page-request group; the device collects it with
    /// [`Iommu::take_page_responses`].
    pub fn page_response(&self, resp: PageResponse) -> Result<(), IommuError> {
        Ok(self.prq.respond(resp)?)
    }

    /// Responses delivered to a device.
    pub fn take_page_responses(&self, sid: SourceId) -> Vec<PageResponse> {
        self.prq.take_responses(sid)
    }

    // ------------------------------------------------------------------ translation

    fn fault(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        addr: u64,
        access: Access,
        wf: WalkFault,
        suppressed: bool,
    ) -> Fault {
        self.stats.inc(Counter::Faults);
        let f = Fault {
            source_id: sid,
            pasid,
            addr,
            access,
            reason: wf.reason,
            stage: wf.stage,
            level: wf.level,
            recorded: !suppressed,
        };
        if !suppressed {
            self.faults.record(f);
        }
        f
    }

    /// Translates one DMA request: device TLB (if the device has ATS), PASID cache, IOTLB,
    /// then the walk (first level, second level, nested or pass-through) with the
    /// paging-structure caches, permission checks and accessed/dirty updates. A failure is
    /// recorded in the fault log unless an FPD bit applies, and returned.
    pub fn translate(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, Fault> {
        let ats = self.ats[usize::from(sid.0)].load(Ordering::Acquire);
        if !ats {
            if let Some(t) = self.front_lookup(sid, pasid, iova, access) {
                return Ok(t);
            }
        }
        self.translate_slow(sid, pasid, iova, access, ats)
    }

    /// The front-cache fast path: `None` on a miss.
    #[inline(always)]
    fn front_lookup(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Option<Translation> {
        let epoch = self.caches.epoch.load(Ordering::Acquire);
        let pkey = pasid.map_or(NO_PASID, |p| p & 0xf_ffff);
        let front_tag = u64::from(sid.0) << 21 | u64::from(pkey);
        let sizes = self.caches.front_sizes.load(Ordering::Acquire);
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let Some([e, v, ctrl]) = self.caches.front.lookup(page_key(iova, code), front_tag)
            else {
                continue;
            };
            if e != epoch {
                return None;
            }
            let privileged = access.privileged || (pasid.is_none() && ctrl & F_RID_PRIV != 0);
            let kind = access_kind(access.write, access.execute, privileged);
            if ctrl >> kind & 1 == 0 {
                // Denied, or a write that must set dirty bits: the full path decides.
                return None;
            }
            self.stats.inc(Counter::FrontHits);
            let size = size_of_code(code);
            let p = ctrl
                >> if privileged {
                    F_PERMS_PRIV
                } else {
                    F_PERMS_USER
                };
            return Some(Translation {
                host_addr: (v & !0xfff) | (iova & (size - 1)),
                page_size: size,
                perms: Perms {
                    read: p & 1 != 0,
                    write: p & 2 != 0,
                    execute: p & 4 != 0,
                    user: p & 8 != 0,
                },
            });
        }
        None
    }

    /// The front-cache control word of a translation: which of the 8 access kinds the cached
    /// IOTLB value allows without a walk (computed with the same check as every IOTLB hit)
    /// and the permissions reported to user and privileged requests.
    fn front_ctrl(&self, info: &PasidInfo, v: u64) -> u64 {
        let e = &info.entry;
        let c = FlControls {
            sre: e.sre,
            wpe: e.wpe,
            ers: self.cfg.ers,
        };
        let level = (v >> V_SIZE_SHIFT & 3) as u8 + 1;
        let mut ctrl = flag(info.rid_priv, F_RID_PRIV);
        for kind in 0..8u64 {
            let a = Access {
                write: kind & 1 != 0,
                execute: kind & 2 != 0,
                privileged: kind & 4 != 0,
            };
            let needs_walk = a.write && v & V_DIRTY == 0;
            if !needs_walk && self.check_cached(e.pgtt, v, a, c, level).is_ok() {
                ctrl |= 1 << kind;
            }
        }
        for (privileged, shift) in [(false, F_PERMS_USER), (true, F_PERMS_PRIV)] {
            let a = Access {
                privileged,
                ..Access::READ
            };
            let p = self.make_translation(e.pgtt, v, 0, a, c).perms;
            ctrl |= (flag(p.read, 1) | flag(p.write, 2) | flag(p.execute, 4) | flag(p.user, 8))
                << shift;
        }
        ctrl
    }

    #[inline(never)]
    fn translate_slow(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
        ats: bool,
    ) -> Result<Translation, Fault> {
        let epoch = self.caches.epoch.load(Ordering::Acquire);
        let pkey = pasid.map_or(NO_PASID, |p| p & 0xf_ffff);
        let front_tag = u64::from(sid.0) << 21 | u64::from(pkey);
        let mut devtlb_stamp = None;
        if ats {
            match self.devtlb_lookup(sid, pasid, iova, access) {
                Ok(t) => {
                    self.stats.inc(Counter::Translations);
                    self.stats.inc(Counter::DevTlbHits);
                    return Ok(t);
                }
                Err(stamp) => devtlb_stamp = Some(stamp),
            }
            if let Some(t) = self.front_lookup(sid, pasid, iova, access) {
                return Ok(t);
            }
        }
        self.stats.inc(Counter::Translations);
        let mem = LazySnapshot::new(&self.mem);
        let info = match self.pasid_info(&mem, sid, pasid) {
            Ok(i) => i,
            Err((reason, fpd)) => {
                let wf = WalkFault {
                    reason,
                    stage: Stage::Context,
                    level: 0,
                };
                return Err(self.fault(sid, pasid, iova, access, wf, fpd));
            }
        };
        let access = if pasid.is_none() && info.rid_priv {
            access.privileged()
        } else {
            access
        };
        let result = if info.entry.pgtt == Pgtt::PassThrough {
            self.pass_through(iova, access)
        } else {
            self.translate_paged(&mem, &info, iova, access)
        };
        match result {
            Ok((t, v)) => {
                if let Some(stamp) = devtlb_stamp {
                    self.devtlb_fill(sid, pasid, iova, &t, v & V_DIRTY != 0, stamp);
                }
                let e = &info.entry;
                if e.pgtt != Pgtt::PassThrough {
                    let ctrl = self.front_ctrl(&info, v);
                    let code = v >> V_SIZE_SHIFT & 3;
                    let c = &self.caches;
                    if c.front_sizes.load(Ordering::Acquire) & (1 << code) == 0 {
                        c.front_sizes.fetch_or(1 << code, Ordering::AcqRel);
                    }
                    c.front
                        .insert(page_key(iova, code), front_tag, [epoch, v, ctrl], || {
                            c.epoch.load(Ordering::Acquire) == epoch
                        });
                }
                Ok(t)
            }
            Err(wf) => Err(self.fault(sid, pasid, iova, access, wf, info.fpd)),
        }
    }

    fn pass_through(&self, iova: u64, access: Access) -> Result<(Translation, u64), WalkFault> {
        if access.execute && !self.cfg.ers {
            return Err(WalkFault {
                reason: FaultReason::ExecuteNotEnabled,
                stage: Stage::Context,
                level: 0,
            });
        }
        if iova >> self.cfg.haw() != 0 {
            return Err(WalkFault::second(FaultReason::InputBeyondMax, 0));
        }
        Ok((
            Translation {
                host_addr: iova,
                page_size: SIZE_4K,
                perms: Perms {
                    read: true,
                    write: true,
                    execute: self.cfg.ers,
                    user: true,
                },
            },
            V_DIRTY,
        ))
    }

    fn pasid_info(
        &self,
        mem: &LazySnapshot<'_>,
        sid: SourceId,
        pasid: Option<u32>,
    ) -> Result<PasidInfo, (FaultReason, bool)> {
        let c = &self.caches;
        let pkey = pasid.map_or(NO_PASID, |p| p & 0xf_ffff);
        let k0 = u64::from(pkey) << 12 | 1;
        let k1 = u64::from(sid.0);
        let dev = c.device(sid.0);
        let s0 = pack(c.global.ctx.get(), dev.ctx.get());
        let gpc = c.global.pc.get();
        if let Some(d) = c.pasid_cache.lookup(k0, k1) {
            if d[0] == s0 && d[1] as u32 == gpc {
                {
                    let entry = PasidEntry::decode_cached(d[3], d[4], d[5]);
                    let dom = c.domain(entry.did);
                    let p = (d[6] >> 8) as u32;
                    if (d[1] >> 32) as u32 == dom.pc.get()
                        && d[2] == u64::from(dom.pasids.get(p).pc.get())
                    {
                        self.stats.inc(Counter::PasidCacheHits);
                        return Ok(PasidInfo {
                            entry,
                            pasid: p,
                            fpd: d[6] & 1 != 0,
                            rid_priv: d[6] & 2 != 0,
                        });
                    }
                }
            }
        }
        self.stats.inc(Counter::PasidCacheMisses);
        let rt = self.root_table_address();
        let mem = mem.get();
        let r = resolve(mem, &self.cfg, rt, sid, pasid).map_err(|f| (f.reason, f.fpd))?;
        let dom = c.domain(r.entry.did);
        let pg = dom.pasids.get(r.pasid);
        let (dpc, ppc) = (dom.pc.get(), pg.pc.get());
        // The generations of the DID and PASID are known only now: read the chain again so the
        // cached entry is one that was current after those generations were read.
        if resolve(mem, &self.cfg, rt, sid, pasid).ok() == Some(r) {
            let raw = r.entry.to_raw();
            let flags =
                u64::from(r.fpd) | u64::from(r.context.rid_priv) << 1 | u64::from(r.pasid) << 8;
            c.pasid_cache.insert(
                k0,
                k1,
                [
                    s0,
                    pack(gpc, dpc),
                    u64::from(ppc),
                    raw[0],
                    raw[1],
                    raw[2],
                    flags,
                ],
                || true,
            );
        }
        Ok(PasidInfo {
            entry: r.entry,
            pasid: r.pasid,
            fpd: r.fpd,
            rid_priv: r.context.rid_priv,
        })
    }

    fn fl_params(&self, e: &PasidEntry) -> FlParams {
        FlParams {
            levels: e.fl_levels(),
            haw: self.cfg.haw(),
            fl1gp: self.cfg.fl1gp,
        }
    }

    fn sl_params(&self, e: &PasidEntry) -> SlParams {
        SlParams {
            levels: e.sl_levels(),
            haw: self.cfg.haw(),
            sl_2m: self.cfg.sl_2m,
            sl_1g: self.cfg.sl_1g,
        }
    }

    #[inline(always)]
    fn check_cached(
        &self,
        pgtt: Pgtt,
        v: u64,
        access: Access,
        c: FlControls,
        level: u8,
    ) -> Result<(), WalkFault> {
        if access.execute && !self.cfg.ers {
            return Err(WalkFault::first(FaultReason::ExecuteNotEnabled, 0));
        }
        if pgtt.uses_first_level() {
            let rights = Rights {
                write: v & V_FL_W != 0,
                user_or_read: v & V_FL_U != 0,
                exec: v & V_FL_X != 0,
            };
            check_fl_access(rights, access.write, access.execute, access.privileged, c)
                .map_err(|r| WalkFault::first(r, level))?;
        }
        if pgtt.uses_second_level() {
            if access.write && v & V_SL_W == 0 {
                return Err(WalkFault::second(FaultReason::NoWrite, level));
            }
            if !access.write && v & V_SL_R == 0 {
                return Err(WalkFault::second(FaultReason::NoRead, level));
            }
        }
        let base = v & !0xfff;
        let size = size_of_code(v >> V_SIZE_SHIFT & 3);
        if base <= INTERRUPT_RANGE.1 && base + size > INTERRUPT_RANGE.0 {
            let stage = if pgtt.uses_second_level() {
                Stage::Second
            } else {
                Stage::First
            };
            return Err(WalkFault {
                reason: FaultReason::InterruptRange,
                stage,
                level,
            });
        }
        Ok(())
    }

    #[inline(always)]
    fn make_translation(
        &self,
        pgtt: Pgtt,
        v: u64,
        iova: u64,
        access: Access,
        c: FlControls,
    ) -> Translation {
        let size = size_of_code(v >> V_SIZE_SHIFT & 3);
        let fl = pgtt.uses_first_level();
        let sl = pgtt.uses_second_level();
        let fl_w = !fl || v & V_FL_W != 0 || (access.privileged && !c.wpe);
        Translation {
            host_addr: (v & !0xfff) | (iova & (size - 1)),
            page_size: size,
            perms: Perms {
                read: !sl || v & V_SL_R != 0,
                write: fl_w && (!sl || v & V_SL_W != 0),
                execute: self.cfg.ers && (!fl || v & V_FL_X != 0),
                user: !fl || v & V_FL_U != 0,
            },
        }
    }

    fn translate_paged(
        &self,
        mem: &LazySnapshot<'_>,
        info: &PasidInfo,
        iova: u64,
        access: Access,
    ) -> Result<(Translation, u64), WalkFault> {
        let e = &info.entry;
        let c = &self.caches;
        let dom = c.domain(e.did);
        let pgtt = e.pgtt;
        let pg: Option<&PasidGens> =
            (pgtt != Pgtt::SecondLevel).then(|| dom.pasids.get(info.pasid));
        let tag = tag_key(e.did, pg.map_or(NO_PASID, |_| info.pasid));
        let s0 = pack(c.global.iotlb.get(), dom.iotlb.get());
        let s1 = match pgtt {
            Pgtt::FirstLevel => pack(dom.fl.get(), 0),
            Pgtt::Nested => pack(dom.fl.get(), dom.nested.get()),
            _ => 0,
        };
        let s2 = pg.map_or(0, |p| u64::from(p.iotlb.get()));
        let ctl = FlControls {
            sre: e.sre,
            wpe: e.wpe,
            ers: self.cfg.ers,
        };
        let sizes = match pg {
            Some(p) => p.sizes.load(Ordering::Acquire),
            None => dom.sl_sizes.load(Ordering::Acquire),
        };
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let Some(d) = c.iotlb.lookup(page_key(iova, code), tag) else {
                continue;
            };
            if d[0] != s0 || d[1] != s1 || d[2] != s2 {
                continue;
            }
            let v = d[3];
            if access.write && v & V_DIRTY == 0 {
                // A write through an entry filled by a read: walk to set the dirty bits.
                break;
            }
            self.stats.inc(Counter::IotlbHits);
            self.check_cached(pgtt, v, access, ctl, code as u8 + 1)?;
            return Ok((self.make_translation(pgtt, v, iova, access, ctl), v));
        }
        self.stats.inc(Counter::IotlbMisses);
        self.stats.inc(Counter::Walks);
        let mem = mem.get();
        let psi_p = pg.map(|p| p.psi.get());
        let psi_sl = dom.sl_psi.get();
        let (v, page_base) = match pgtt {
            Pgtt::SecondLevel => self.walk_sl_only(mem, e, dom, s0, iova, access)?,
            _ => self.walk_fl(
                mem,
                e,
                dom,
                pg.unwrap_or_else(|| dom.pasids.get(info.pasid)),
                tag,
                [s0, s1, s2],
                iova,
                access,
                ctl,
            )?,
        };
        let code = v >> V_SIZE_SHIFT & 3;
        self.check_cached(pgtt, v, access, ctl, code as u8 + 1)?;
        let sizes_seen = match pg {
            Some(p) => &p.sizes,
            None => &dom.sl_sizes,
        };
        if sizes_seen.load(Ordering::Acquire) & (1 << code) == 0 {
            sizes_seen.fetch_or(1 << code, Ordering::AcqRel);
        }
        c.iotlb
            .insert(page_key(page_base, code), tag, [s0, s1, s2, v], || {
                pg.map(|p| p.psi.get()) == psi_p && dom.sl_psi.get() == psi_sl
            });
        Ok((self.make_translation(pgtt, v, iova, access, ctl), v))
    }

    /// Second-level translation of a guest-physical address with the SL paging-structure
    /// cache; sets SL accessed/dirty bits when SSADE.
    #[allow(clippy::too_many_arguments)]
    fn sl_translate(
        &self,
        mem: &GuestMemoryMmap,
        e: &PasidEntry,
        dom: &DomainGens,
        s0: u64,
        gpa: u64,
        ad: Option<bool>,
    ) -> Result<SlOut, WalkFault> {
        let p = self.sl_params(e);
        let tag = u64::from(e.did);
        let psi = dom.sl_psi.get();
        let psc = self.cfg.paging_structure_caches;
        let start = psc
            .then(|| self.caches.sl_psc.lookup(psc_key(gpa), tag))
            .flatten()
            .and_then(|d| {
                (d[0] == s0).then(|| {
                    self.stats.inc(Counter::SlPscHits);
                    WalkStart {
                        level: 1,
                        table: d[1] & ADDR_MASK,
                        rights: Rights {
                            user_or_read: d[1] & SL_R != 0,
                            write: d[1] & SL_W != 0,
                            exec: d[1] & SL_X != 0,
                        },
                    }
                })
            });
        let mut w = Walk::EMPTY;
        loop {
            walk_second_level_into(mem, &p, e.ssptptr, gpa, start, &mut w)?;
            if let (true, Some(write)) = (e.ssade, ad) {
                if set_accessed_dirty(mem, &w, write, false, Stage::Second)? == AdUpdate::Changed {
                    self.stats.inc(Counter::AdRetries);
                    continue;
                }
            }
            // Only entries whose accessed bits are set may be cached (SSADE).
            if psc && start.is_none() && (!e.ssade || ad.is_some()) {
                if let Some(pt) = w.pt {
                    let r = pt.rights;
                    let v = pt.table
                        | flag(r.user_or_read, SL_R)
                        | flag(r.write, SL_W)
                        | flag(r.exec, SL_X);
                    self.caches
                        .sl_psc
                        .insert(psc_key(gpa), tag, [s0, v], || dom.sl_psi.get() == psi);
                }
            }
            return Ok(SlOut {
                output: w.output,
                page_size: w.page_size,
                leaf: w.leaf,
                leaf_level: w.leaf_level,
                rights: w.rights,
            });
        }
    }

    fn walk_sl_only(
        &self,
        mem: &GuestMemoryMmap,
        e: &PasidEntry,
        dom: &DomainGens,
        s0: u64,
        iova: u64,
        access: Access,
    ) -> Result<(u64, u64), WalkFault> {
        let width = sl_width(e.sl_levels());
        if iova >> width != 0 {
            return Err(WalkFault::second(FaultReason::InputBeyondMax, 0));
        }
        // Permissions are checked by the caller on the value; A/D are set only when allowed.
        let probe = self.sl_translate(mem, e, dom, s0, iova, None)?;
        let allowed = if access.write {
            probe.rights.write
        } else {
            probe.rights.user_or_read
        };
        let w = if allowed && e.ssade {
            self.sl_translate(mem, e, dom, s0, iova, Some(access.write))?
        } else {
            probe
        };
        let dirty = !e.ssade || w.leaf & paging::SL_D != 0;
        let v = (w.output & !0xfff)
            | V_FL_W
            | V_FL_U
            | V_FL_X
            | flag(w.rights.user_or_read, V_SL_R)
            | flag(w.rights.write, V_SL_W)
            | flag(w.rights.exec, V_SL_X)
            | flag(dirty, V_DIRTY)
            | size_code(w.page_size) << V_SIZE_SHIFT;
        Ok((v, iova & !(w.page_size - 1)))
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_fl(
        &self,
        mem: &GuestMemoryMmap,
        e: &PasidEntry,
        dom: &DomainGens,
        pg_gens: &PasidGens,
        tag: u64,
        stamp: [u64; 3],
        iova: u64,
        access: Access,
        ctl: FlControls,
    ) -> Result<(u64, u64), WalkFault> {
        let p = self.fl_params(e);
        let nested = e.pgtt == Pgtt::Nested;
        let pg = pg_gens;
        let psi = pg.psi.get();
        let psc_stamp = [stamp[0], stamp[1] & 0xffff_ffff, stamp[2]];
        let psc = self.cfg.paging_structure_caches;
        let start = psc
            .then(|| self.caches.fl_psc.lookup(psc_key(iova), tag))
            .flatten()
            .and_then(|d| {
                (d[0] == psc_stamp[0] && d[1] == psc_stamp[1] && d[2] == psc_stamp[2]).then(|| {
                    self.stats.inc(Counter::FlPscHits);
                    WalkStart {
                        level: 1,
                        table: d[3] & paging::ADDR_MASK,
                        rights: Rights {
                            write: d[3] & V_FL_W != 0,
                            user_or_read: d[3] & V_FL_U != 0,
                            exec: d[3] & V_FL_X != 0,
                        },
                    }
                })
            });
        let mut nt = NestedTables {
            iommu: self,
            mem,
            e,
            dom,
            s0: stamp[0],
            width: sl_width(e.sl_levels()),
        };
        let mut walk = Walk::EMPTY;
        loop {
            if nested {
                walk_first_level_into(mem, &mut nt, &p, e.flptr, iova, start, &mut walk)?;
            } else {
                walk_first_level_into(
                    mem,
                    &mut paging::Identity,
                    &p,
                    e.flptr,
                    iova,
                    start,
                    &mut walk,
                )?;
            }
            let w = &walk;
            let level = w.leaf_level;
            check_fl_access(
                w.rights,
                access.write,
                access.execute,
                access.privileged,
                ctl,
            )
            .map_err(|r| WalkFault::first(r, level))?;
            // Nested: the output goes through the second level, whose permission is checked
            // before any accessed/dirty bit is set.
            let gpa = w.translate(iova);
            let sl = if nested {
                if gpa >> nt.width != 0 {
                    return Err(WalkFault::first(
                        FaultReason::FirstLevelAddressBeyondMgaw,
                        level,
                    ));
                }
                let probe = self.sl_translate(mem, e, dom, stamp[0], gpa, None)?;
                if access.write && !probe.rights.write {
                    return Err(WalkFault::second(FaultReason::NoWrite, probe.leaf_level));
                }
                if !access.write && !probe.rights.user_or_read {
                    return Err(WalkFault::second(FaultReason::NoRead, probe.leaf_level));
                }
                Some(if e.ssade {
                    self.sl_translate(mem, e, dom, stamp[0], gpa, Some(access.write))?
                } else {
                    probe
                })
            } else {
                None
            };
            match set_accessed_dirty(mem, w, access.write, e.eafe, Stage::First)? {
                AdUpdate::Changed => {
                    self.stats.inc(Counter::AdRetries);
                    continue;
                }
                AdUpdate::Done => {}
            }
            if psc && start.is_none() {
                if let Some(pt) = w.pt {
                    let r = pt.rights;
                    let v = pt.table
                        | flag(r.write, V_FL_W)
                        | flag(r.user_or_read, V_FL_U)
                        | flag(r.exec, V_FL_X);
                    let k = psc_key(iova);
                    self.caches.fl_psc.insert(
                        k,
                        tag,
                        [psc_stamp[0], psc_stamp[1], psc_stamp[2], v],
                        || pg.psi.get() == psi,
                    );
                }
            }
            let fl_dirty = access.write || w.leaf & paging::D != 0;
            let (out, size, sl_bits, sl_dirty) = match sl {
                Some(s) => {
                    let size = w.page_size.min(s.page_size);
                    let out = s.translate(gpa) & !(size - 1);
                    let bits = flag(s.rights.user_or_read, V_SL_R)
                        | flag(s.rights.write, V_SL_W)
                        | flag(s.rights.exec, V_SL_X);
                    let dirty = !e.ssade || access.write || s.leaf & paging::SL_D != 0;
                    (out, size, bits, dirty)
                }
                None => (w.output, w.page_size, V_SL_R | V_SL_W | V_SL_X, true),
            };
            let v = out
                | flag(w.rights.write, V_FL_W)
                | flag(w.rights.user_or_read, V_FL_U)
                | flag(w.rights.exec, V_FL_X)
                | sl_bits
                | flag(fl_dirty && sl_dirty, V_DIRTY)
                | size_code(size) << V_SIZE_SHIFT;
            return Ok((v, iova & !(size - 1)));
        }
    }

    /// A device-TLB hit, or the generations to stamp a fill with (read before the
    /// translation that will produce it).
    fn devtlb_lookup(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, [u64; 3]> {
        let c = &self.caches;
        let p = pasid.map_or(NO_PASID, |p| p & 0xf_ffff);
        let dev = c.device(sid.0);
        let dp = dev.pasids.get(p);
        let s0 = pack(c.global.devtlb.get(), dev.devtlb.get());
        let s1 = u64::from(dp.devtlb.get());
        let tag = u64::from(sid.0) << 21 | u64::from(p);
        let psi = u64::from(dp.psi.get());
        let miss = [s0, s1, psi];
        let sizes = dp.sizes.load(Ordering::Acquire);
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let Some(d) = c.devtlb.lookup(page_key(iova, code), tag) else {
                continue;
            };
            if d[0] != s0 || d[1] != s1 {
                continue;
            }
            let v = d[2];
            let perms = Perms {
                read: v & 1 != 0,
                write: v & 2 != 0,
                execute: v & 4 != 0,
                user: v & 8 != 0,
            };
            let ok = (if access.write {
                perms.write
            } else {
                perms.read
            }) && (!access.execute || perms.execute)
                && (access.privileged || perms.user);
            if !ok {
                // The device asks the IOMMU again (an ATS translation request).
                return Err(miss);
            }
            let size = size_of_code(code);
            return Ok(Translation {
                host_addr: (v & !0xfff) | (iova & (size - 1)),
                page_size: size,
                perms,
            });
        }
        Err(miss)
    }

    fn devtlb_fill(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        t: &Translation,
        dirty: bool,
        [s0, s1, psi]: [u64; 3],
    ) {
        let c = &self.caches;
        let p = pasid.map_or(NO_PASID, |p| p & 0xf_ffff);
        let dp = c.device(sid.0).pasids.get(p);
        let code = size_code(t.page_size);
        let base = t.host_addr & !(t.page_size - 1);
        let v = base
            | u64::from(t.perms.read)
            | u64::from(t.perms.write && dirty) << 1
            | u64::from(t.perms.execute) << 2
            | u64::from(t.perms.user) << 3;
        if dp.sizes.load(Ordering::Acquire) & (1 << code) == 0 {
            dp.sizes.fetch_or(1 << code, Ordering::AcqRel);
        }
        let tag = u64::from(sid.0) << 21 | u64::from(p);
        c.devtlb.insert(page_key(iova, code), tag, [s0, s1, v], || {
            u64::from(dp.psi.get()) == psi
        });
    }

    // ------------------------------------------------------------------ DMA

    fn dma(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        len: usize,
        write: bool,
        mut op: impl FnMut(u64, usize, usize) -> Result<(), MemoryError>,
    ) -> Result<(), DmaError> {
        let access = if write { Access::WRITE } else { Access::READ };
        let mut done = 0usize;
        while done < len {
            let va = iova.wrapping_add(done as u64);
            let t = self.translate(sid, pasid, va, access)?;
            let in_page = (t.page_size - (t.host_addr & (t.page_size - 1))) as usize;
            let n = in_page.min(len - done);
            op(t.host_addr, done, n).map_err(|_| DmaError::Unbacked {
                iova: va,
                host_addr: t.host_addr,
            })?;
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of DMA from `iova`, translating page by page (user read).
    pub fn dma_read(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), DmaError> {
        let len = buf.len();
        self.dma(sid, pasid, iova, len, false, |hpa, off, n| {
            self.mem.read(hpa, &mut buf[off..off + n])
        })
    }

    /// Writes `buf` by DMA at `iova`, translating page by page (user write).
    pub fn dma_write(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        buf: &[u8],
    ) -> Result<(), DmaError> {
        self.dma(sid, pasid, iova, buf.len(), true, |hpa, off, n| {
            self.mem.write(hpa, &buf[off..off + n])
        })
    }
}

/// The part of a second-level walk its users need.
#[derive(Debug, Clone, Copy)]
struct SlOut {
    output: u64,
    page_size: u64,
    leaf: u64,
    leaf_level: u8,
    rights: Rights,
}

impl SlOut {
    fn translate(&self, gpa: u64) -> u64 {
        self.output | (gpa & (self.page_size - 1))
    }
}

/// The memory snapshot of one translation, taken only if a table must be read (cache hits
/// never touch memory).
struct LazySnapshot<'a> {
    mem: &'a HostMemory,
    snap: std::cell::OnceCell<arc_swap::Guard<std::sync::Arc<GuestMemoryMmap>>>,
}

impl<'a> LazySnapshot<'a> {
    fn new(mem: &'a HostMemory) -> Self {
        Self {
            mem,
            snap: std::cell::OnceCell::new(),
        }
    }
    fn get(&self) -> &GuestMemoryMmap {
        self.snap.get_or_init(|| self.mem.snapshot())
    }
}

/// Nested first-level table access: every table address goes through the second level.
struct NestedTables<'a> {
    iommu: &'a Iommu,
    mem: &'a GuestMemoryMmap,
    e: &'a PasidEntry,
    dom: &'a DomainGens,
    s0: u64,
    width: u8,
}

impl TableTranslator for NestedTables<'_> {
    fn table(&mut self, gpa: u64, level: u8, is_root: bool) -> Result<(u64, bool), WalkFault> {
        if gpa >> self.width != 0 {
            return Err(WalkFault::first(
                FaultReason::FirstLevelAddressBeyondMgaw,
                level,
            ));
        }
        let no_read = if is_root {
            FaultReason::NestedNoReadRoot
        } else {
            FaultReason::NestedNoReadEntry
        };
        let ad = self.e.ssade.then_some(false);
        let w = match self
            .iommu
            .sl_translate(self.mem, self.e, self.dom, self.s0, gpa, ad)
        {
            Ok(w) => w,
            Err(f) if f.reason == FaultReason::SecondLevelPermission => {
                return Err(WalkFault::second(no_read, f.level))
            }
            Err(f) => return Err(f),
        };
        if !w.rights.user_or_read {
            return Err(WalkFault::second(no_read, w.leaf_level));
        }
        Ok((w.translate(gpa), w.rights.write))
    }
}

#[cfg(test)]
mod tests;
