//! Root table, scalable-mode context entries, PASID directory entries, and the lookup chain
//! from (source id, PASID) to a PASID table entry, all read from memory as the hardware does.

use crate::fault::{FaultReason, SourceId};
use crate::memory::EntryMemory;
use crate::pasid_entry::{PasidEntry, PasidEntryError};
use crate::regs::IommuConfig;

const ADDR_MASK: u64 = 0xffff_ffff_ffff_f000;

/// Size in bytes of the root table (256 × 128-bit entries).
pub const ROOT_TABLE_BYTES: u64 = 4096;
/// Size in bytes of one scalable context table (128 × 256-bit entries).
pub const CONTEXT_TABLE_BYTES: u64 = 4096;
/// Size in bytes of one PASID table (64 × 512-bit entries).
pub const PASID_TABLE_BYTES: u64 = 4096;

/// A 128-bit root entry: the low half points at the context table for devfn 0..=127, the high
/// half for devfn 128..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootEntry {
    /// Low 64 bits: bit 0 LP, 63:12 LCTP.
    pub lo: u64,
    /// High 64 bits: bit 0 UP, 63:12 UCTP.
    pub hi: u64,
}

impl RootEntry {
    /// Address of the root entry for `bus` in the root table at `rtaddr`.
    pub fn address(rtaddr: u64, bus: u8) -> u64 {
        rtaddr + u64::from(bus) * 16
    }
    /// Address of the root-entry half that covers `devfn` for `bus`: LCTP (bytes 7:0) for
    /// devfn 0..127, UCTP (bytes 15:8) for devfn 128..255.
    pub(crate) fn half_address(rtaddr: u64, bus: u8, devfn: u8) -> u64 {
        Self::address(rtaddr, bus) + if devfn >= 128 { 8 } else { 0 }
    }
    /// The half that covers `devfn`: (present, context table pointer, raw).
    pub fn half(&self, devfn: u8) -> (bool, u64, u64) {
        let raw = if devfn < 128 { self.lo } else { self.hi };
        (raw & 1 != 0, raw & ADDR_MASK, raw)
    }
    /// Encodes a present half pointing at `table`.
    pub fn encode_half(table: u64) -> u64 {
        (table & ADDR_MASK) | 1
    }
}

/// A scalable-mode context entry (256 bits, only the first two words carry fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextEntry {
    /// Fault processing disable.
    pub fpd: bool,
    /// Device-TLB (ATS) enable.
    pub dte: bool,
    /// PASID enable: requests with PASID are allowed.
    pub pasid_enable: bool,
    /// Page-request enable.
    pub pre: bool,
    /// PASID directory size: the directory has `2^(pdts + 7)` entries.
    pub pdts: u8,
    /// PASID directory pointer (host physical).
    pub pasid_dir: u64,
    /// PASID used for requests without PASID.
    pub rid_pasid: u32,
    /// Requests without PASID are treated as privileged.
    pub rid_priv: bool,
}

const CTX_Q0_RESERVED: u64 = 0xf << 5;
const CTX_Q1_RESERVED: u64 = !0x1f_ffff;
const DIR_RESERVED: u64 = 0x3ff << 2;

impl ContextEntry {
    /// Address of the entry for `devfn` in the context table at `table`.
    pub fn address(table: u64, devfn: u8) -> u64 {
        table + u64::from(devfn & 0x7f) * 32
    }

    /// Number of PASID directory entries.
    pub fn dir_entries(&self) -> u32 {
        1 << (self.pdts + 7)
    }

    /// Number of PASIDs the directory covers (64 per entry).
    pub fn pasid_limit(&self) -> u32 {
        self.dir_entries() * 64
    }

    /// The PDTS value for a directory covering at least `pasids` PASIDs (capped at 2^20).
    pub fn pdts_for(pasids: u32) -> u8 {
        let entries = pasids.div_ceil(64).max(128);
        (entries.next_power_of_two().trailing_zeros().min(14) - 7) as u8
    }

    /// Encodes the four words, with P set.
    pub fn to_raw(&self) -> [u64; 4] {
        [
            1 | u64::from(self.fpd) << 1
                | u64::from(self.dte) << 2
                | u64::from(self.pasid_enable) << 3
                | u64::from(self.pre) << 4
                | u64::from(self.pdts & 7) << 9
                | (self.pasid_dir & ADDR_MASK),
            u64::from(self.rid_pasid & 0xf_ffff) | u64::from(self.rid_priv) << 20,
            0,
            0,
        ]
    }

    /// Decodes: not present → 0x41, reserved bits → 0x42, features the IOMMU lacks → 0x43.
    pub fn from_raw(q: &[u64; 4], cfg: &IommuConfig) -> Result<Self, FaultReason> {
        if q[0] & 1 == 0 {
            return Err(FaultReason::ContextEntryNotPresent);
        }
        if q[0] & CTX_Q0_RESERVED != 0
            || q[1] & CTX_Q1_RESERVED != 0
            || q[2] != 0
            || q[3] != 0
            || (q[0] & ADDR_MASK) >> cfg.haw() != 0
        {
            return Err(FaultReason::ContextEntryReserved);
        }
        let e = Self {
            fpd: q[0] >> 1 & 1 != 0,
            dte: q[0] >> 2 & 1 != 0,
            pasid_enable: q[0] >> 3 & 1 != 0,
            pre: q[0] >> 4 & 1 != 0,
            pdts: (q[0] >> 9 & 7) as u8,
            pasid_dir: q[0] & ADDR_MASK,
            rid_pasid: (q[1] & 0xf_ffff) as u32,
            rid_priv: q[1] >> 20 & 1 != 0,
        };
        if (e.dte && !cfg.device_tlb) || (e.pre && !cfg.prs) || e.rid_pasid >> cfg.pasid_bits != 0 {
            return Err(FaultReason::ContextEntryInvalid);
        }
        Ok(e)
    }
}

/// A PASID directory entry: (present, FPD, PASID table pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasidDirEntry {
    /// Fault processing disable for every PASID of this table.
    pub fpd: bool,
    /// PASID table pointer (host physical).
    pub table: u64,
}

impl PasidDirEntry {
    /// Address of the directory entry covering `pasid`.
    pub fn address(dir: u64, pasid: u32) -> u64 {
        dir + u64::from(pasid_dir_index(pasid)) * 8
    }
    /// Encodes a present entry.
    pub fn to_raw(&self) -> u64 {
        1 | u64::from(self.fpd) << 1 | (self.table & ADDR_MASK)
    }
    /// Decodes: not present → 0x51, reserved bits → 0x52.
    pub fn from_raw(v: u64, cfg: &IommuConfig) -> Result<Self, FaultReason> {
        if v & 1 == 0 {
            return Err(FaultReason::PasidDirNotPresent);
        }
        if v & DIR_RESERVED != 0 || (v & ADDR_MASK) >> cfg.haw() != 0 {
            return Err(FaultReason::PasidDirReserved);
        }
        Ok(Self {
            fpd: v >> 1 & 1 != 0,
            table: v & ADDR_MASK,
        })
    }
}

/// PASID entries in one PASID table (indexed by PASID bits 5:0).
pub(crate) const PASID_TABLE_ENTRIES: u32 = 64;

/// The PASID-directory index of `pasid`: its bits 19:6.
pub(crate) const fn pasid_dir_index(pasid: u32) -> u32 {
    pasid >> 6
}

/// The PASID of entry `slot` (PASID bits 5:0) in the table at directory index `index`.
pub(crate) const fn pasid_at(index: u32, slot: u32) -> u32 {
    index << 6 | slot
}

/// Address of the PASID table entry for `pasid` in the table at `table`.
pub fn pasid_entry_address(table: u64, pasid: u32) -> u64 {
    table + u64::from(pasid & 0x3f) * 64
}

/// Everything the lookup chain yields for one (source id, PASID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedPasid {
    /// The decoded, validated PASID entry.
    pub entry: PasidEntry,
    /// The PASID whose entry was used (RID_PASID for requests without PASID).
    pub pasid: u32,
    /// The device's context entry.
    pub context: ContextEntry,
    /// True if any FPD bit along the chain (context, directory, PASID entry) is set.
    pub fpd: bool,
}

/// A lookup-chain failure: the reason and whether fault recording is suppressed (FPD seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainFault {
    /// The VT-d fault reason to report.
    pub reason: FaultReason,
    /// An FPD bit was set on the way, so the fault is not recorded.
    pub fpd: bool,
}

fn cf(reason: FaultReason, fpd: bool) -> ChainFault {
    ChainFault { reason, fpd }
}

/// Walks root → context for a request from `sid`, validating both entries: the context entry
/// the IOMMU would use. A fault at the context entry carries that entry's FPD (only a present
/// entry's FPD counts).
pub fn resolve_context<M: EntryMemory + ?Sized>(
    mem: &M,
    cfg: &IommuConfig,
    rtaddr: u64,
    sid: SourceId,
) -> Result<ContextEntry, ChainFault> {
    if rtaddr & !ADDR_MASK != 0 || rtaddr >> cfg.haw() != 0 {
        return Err(cf(FaultReason::RootTableAddressInvalid, false));
    }
    let re_addr = RootEntry::address(rtaddr, sid.bus()) + if sid.devfn() < 128 { 0 } else { 8 };
    let half = mem
        .load_entry(re_addr)
        .ok_or(cf(FaultReason::RootEntryAccess, false))?;
    if half & 1 == 0 {
        return Err(cf(FaultReason::RootEntryNotPresent, false));
    }
    if half & 0xffe != 0 || (half & ADDR_MASK) >> cfg.haw() != 0 {
        return Err(cf(FaultReason::RootEntryReserved, false));
    }
    let ce_addr = ContextEntry::address(half & ADDR_MASK, sid.devfn());
    let mut q = [0u64; 4];
    for (i, w) in q.iter_mut().enumerate() {
        *w = mem
            .load_entry(ce_addr + 8 * i as u64)
            .ok_or(cf(FaultReason::ContextEntryAccess, false))?;
    }
    // FPD of a present context entry applies even if the rest of it is bad.
    let ctx_fpd = q[0] & 3 == 3;
    ContextEntry::from_raw(&q, cfg).map_err(|r| cf(r, ctx_fpd))
}

/// Walks root → context → PASID directory → PASID table for a request, as VT-d scalable mode
/// does, validating every entry. `rtaddr` is the root table address register.
pub fn resolve<M: EntryMemory + ?Sized>(
    mem: &M,
    cfg: &IommuConfig,
    rtaddr: u64,
    sid: SourceId,
    pasid: Option<u32>,
) -> Result<ResolvedPasid, ChainFault> {
    let ctx = resolve_context(mem, cfg, rtaddr, sid)?;
    resolve_pasid(mem, cfg, &ctx, pasid)
}

/// The part of [`resolve`] below the context entry: PASID directory → PASID table under `ctx`
/// (a context entry the caller already holds, e.g. from its own context cache, as returned by
/// [`resolve_context`]), with the same checks and the same faults. `None` asks for the
/// entry's RID_PASID. Reads memory only; nothing is cached.
///
/// # Errors
///
/// The [`ChainFault`] of the first check that fails after the context entry: PASID
/// disabled, beyond the directory, directory or PASID-table entry unreadable, not present or
/// invalid; `fpd` as [`resolve`] reports it.
#[inline]
pub fn resolve_pasid<M: EntryMemory + ?Sized>(
    mem: &M,
    cfg: &IommuConfig,
    ctx: &ContextEntry,
    pasid: Option<u32>,
) -> Result<ResolvedPasid, ChainFault> {
    let ctx = *ctx;
    let mut fpd = ctx.fpd;
    let pasid = match pasid {
        Some(p) => {
            if !ctx.pasid_enable {
                return Err(cf(FaultReason::PasidDisabled, fpd));
            }
            p
        }
        None => ctx.rid_pasid,
    };
    if pasid >= ctx.pasid_limit() || pasid >> cfg.pasid_bits != 0 {
        return Err(cf(FaultReason::PasidBeyondDirectory, fpd));
    }
    let de = mem
        .load_entry(PasidDirEntry::address(ctx.pasid_dir, pasid))
        .ok_or(cf(FaultReason::PasidDirAccess, fpd))?;
    if de & 3 == 3 {
        fpd = true;
    }
    let dir = PasidDirEntry::from_raw(de, cfg).map_err(|r| cf(r, fpd))?;
    let pe_addr = pasid_entry_address(dir.table, pasid);
    let mut v = [0u64; 8];
    mem.load_entries(pe_addr, &mut v)
        .ok_or(cf(FaultReason::PasidEntryAccess, fpd))?;
    if v[0] & 3 == 3 {
        fpd = true;
    }
    let map = |e: PasidEntryError| cf(e.reason, fpd);
    let entry = PasidEntry::from_raw(&v).map_err(map)?;
    entry.validate(cfg).map_err(map)?;
    Ok(ResolvedPasid {
        entry,
        pasid,
        context: ctx,
        fpd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HostMemory;

    const RT: u64 = 0x1000;
    const CT: u64 = 0x2000;
    const DIR: u64 = 0x3000;
    const PT: u64 = 0x4000;

    fn setup() -> (HostMemory, IommuConfig, SourceId) {
        let mem = HostMemory::anonymous(&[(0, 0x10000)]).unwrap();
        let cfg = IommuConfig::default();
        let sid = SourceId::new(3, 4, 1);
        mem.store_u64(RootEntry::address(RT, 3), RootEntry::encode_half(CT))
            .unwrap();
        let ctx = ContextEntry {
            pasid_enable: true,
            pdts: 0,
            pasid_dir: DIR,
            rid_pasid: 0,
            ..Default::default()
        };
        for (i, w) in ctx.to_raw().iter().enumerate() {
            mem.store_u64(ContextEntry::address(CT, sid.devfn()) + 8 * i as u64, *w)
                .unwrap();
        }
        mem.store_u64(
            PasidDirEntry::address(DIR, 5),
            PasidDirEntry {
                fpd: false,
                table: PT,
            }
            .to_raw(),
        )
        .unwrap();
        let pe = PasidEntry::first_level(9, 0x8000).to_raw();
        for (i, w) in pe.iter().enumerate() {
            mem.store_u64(pasid_entry_address(PT, 5) + 8 * i as u64, *w)
                .unwrap();
        }
        (mem, cfg, sid)
    }

    fn reason(
        mem: &HostMemory,
        cfg: &IommuConfig,
        rt: u64,
        sid: SourceId,
        p: Option<u32>,
    ) -> FaultReason {
        resolve(&**mem.snapshot(), cfg, rt, sid, p)
            .unwrap_err()
            .reason
    }

    #[test]
    fn chain_resolves_a_present_entry() {
        let (mem, cfg, sid) = setup();
        let r = resolve(&**mem.snapshot(), &cfg, RT, sid, Some(5)).unwrap();
        assert_eq!(r.entry.did, 9);
        assert_eq!(r.pasid, 5);
        assert!(!r.fpd);
    }

    #[test]
    fn a_held_context_entry_resolves_like_the_whole_chain() {
        let (mem, cfg, sid) = setup();
        let m = &**mem.snapshot();
        let ctx = resolve_context(m, &cfg, RT, sid).unwrap();
        for p in [Some(5), Some(6), Some(1 << 19), None] {
            assert_eq!(
                resolve_pasid(m, &cfg, &ctx, p),
                resolve(m, &cfg, RT, sid, p),
                "{p:?}"
            );
        }
        assert_eq!(resolve_pasid(m, &cfg, &ctx, Some(5)).unwrap().entry.did, 9);
    }

    #[test]
    fn root_faults() {
        let (mem, cfg, sid) = setup();
        assert_eq!(
            reason(&mem, &cfg, RT | 0x10, sid, Some(5)),
            FaultReason::RootTableAddressInvalid
        );
        assert_eq!(
            reason(&mem, &cfg, 0x10_0000, sid, Some(5)),
            FaultReason::RootEntryAccess
        );
        assert_eq!(
            reason(&mem, &cfg, RT, SourceId::new(4, 0, 0), Some(5)),
            FaultReason::RootEntryNotPresent
        );
        assert_eq!(
            reason(&mem, &cfg, RT, SourceId::new(3, 31, 0), Some(5)),
            FaultReason::RootEntryNotPresent,
            "upper half absent"
        );
        mem.store_u64(RootEntry::address(RT, 3), RootEntry::encode_half(CT) | 0x10)
            .unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::RootEntryReserved
        );
    }

    #[test]
    fn context_faults() {
        let (mem, cfg, sid) = setup();
        let ce = ContextEntry::address(CT, sid.devfn());
        assert_eq!(
            reason(&mem, &cfg, RT, SourceId::new(3, 4, 2), Some(5)),
            FaultReason::ContextEntryNotPresent
        );
        let q0 = mem.load_u64(ce).unwrap();
        mem.store_u64(ce, q0 | 1 << 6).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::ContextEntryReserved
        );
        mem.store_u64(ce, q0).unwrap();
        mem.store_u64(ce + 16, 1).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::ContextEntryReserved
        );
        mem.store_u64(ce + 16, 0).unwrap();
        let no_dt = IommuConfig {
            device_tlb: false,
            ..cfg.clone()
        };
        mem.store_u64(ce, q0 | 1 << 2).unwrap();
        assert_eq!(
            reason(&mem, &no_dt, RT, sid, Some(5)),
            FaultReason::ContextEntryInvalid
        );
        mem.store_u64(ce, q0 & !(1 << 3)).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::PasidDisabled
        );
        mem.store_u64(ce, q0).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(128 * 64)),
            FaultReason::PasidBeyondDirectory
        );
        // The root entry pointing at a context table outside memory.
        mem.store_u64(RootEntry::address(RT, 3), RootEntry::encode_half(0x20_0000))
            .unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::ContextEntryAccess
        );
    }

    #[test]
    fn pasid_directory_and_table_faults() {
        let (mem, cfg, sid) = setup();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(64)),
            FaultReason::PasidDirNotPresent
        );
        let de = PasidDirEntry::address(DIR, 5);
        mem.store_u64(de, PT | 1 | 1 << 4).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::PasidDirReserved
        );
        mem.store_u64(de, 0x30_0000 | 1).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::PasidEntryAccess
        );
        mem.store_u64(de, PT | 1).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(6)),
            FaultReason::PasidEntryNotPresent
        );
        let pe = pasid_entry_address(PT, 5);
        mem.store_u64(pe + 24, 1).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::PasidEntryReserved
        );
        mem.store_u64(pe + 24, 0).unwrap();
        let v0 = mem.load_u64(pe).unwrap();
        mem.store_u64(pe, v0 & !(7 << 6) | 6 << 6).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::PasidEntryInvalid
        );
        // The directory pointer of the context entry outside memory.
        let ce = ContextEntry::address(CT, sid.devfn());
        let q0 = mem.load_u64(ce).unwrap();
        mem.store_u64(ce, q0 & 0xfff | 0x40_0000).unwrap();
        assert_eq!(
            reason(&mem, &cfg, RT, sid, Some(5)),
            FaultReason::PasidDirAccess
        );
    }

    #[test]
    fn fpd_is_collected_along_the_chain() {
        let (mem, cfg, sid) = setup();
        let de = PasidDirEntry::address(DIR, 5);
        mem.store_u64(de, PT | 3).unwrap();
        let r = resolve(&**mem.snapshot(), &cfg, RT, sid, Some(5)).unwrap();
        assert!(r.fpd);
        let f = resolve(&**mem.snapshot(), &cfg, RT, sid, Some(7)).unwrap_err();
        assert_eq!((f.reason, f.fpd), (FaultReason::PasidEntryNotPresent, true));
    }

    #[test]
    fn request_without_pasid_uses_rid_pasid() {
        let (mem, cfg, sid) = setup();
        let ce = ContextEntry::address(CT, sid.devfn());
        mem.store_u64(ce + 8, 5 | 1 << 20).unwrap();
        let r = resolve(&**mem.snapshot(), &cfg, RT, sid, None).unwrap();
        assert_eq!(r.pasid, 5);
        assert!(r.context.rid_priv);
        assert_eq!(ContextEntry::pdts_for(1 << 20), 7);
        assert_eq!(ContextEntry::pdts_for(100), 0);
        assert_eq!(ContextEntry::pdts_for(128 * 64 + 1), 1);
    }
}
