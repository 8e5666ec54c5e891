//! Reading the guest's scalable-mode translation structures (root table, context entries,
//! PASID directory and tables) from guest memory. The formats and their checks are the
//! software IOMMU's own (`vsva_iommu::context::resolve_context` for a device's context entry,
//! `resolve_pasid` for a PASID's entry under it), run over guest-physical memory with the
//! capabilities the guest was offered.

use std::cell::Cell;

use vsva_iommu::context::{resolve_context, resolve_pasid, ContextEntry};
use vsva_iommu::memory::EntryMemory;
use vsva_iommu::{IommuConfig, PasidEntry, SourceId};

use crate::caps::Identity;
use crate::memory::GuestMemory;

/// Guest memory as the lookup chain reads it. The first load of a walk (the root entry, the
/// PASID-directory entry: one qword needed) is a single read; after it, a load reads the
/// 64-byte line around it, kept for the loads that follow. A PASID entry is one such line
/// (and a context entry half of one), so the chain's eight loads of an entry are one copy
/// from guest memory, not eight accesses.
struct GuestEntries<'a> {
    mem: &'a dyn GuestMemory,
    /// Address of the line last read: `FIRST` before any load, `NO_LINE` after a single
    /// read.
    at: Cell<u64>,
    /// Its qwords.
    line: [Cell<u64>; 8],
}

/// Not line addresses (lines are 64-byte aligned).
const FIRST: u64 = 1;
const NO_LINE: u64 = 2;

impl<'a> GuestEntries<'a> {
    fn new(mem: &'a dyn GuestMemory) -> Self {
        GuestEntries {
            mem,
            at: Cell::new(FIRST),
            line: Default::default(),
        }
    }
}

impl GuestEntries<'_> {
    /// A load outside the line held: the first load of a walk alone, any later one with the
    /// line around it (kept for the loads that follow).
    #[cold]
    fn miss(&self, addr: u64) -> Option<u64> {
        if addr & 7 != 0 {
            return None;
        }
        if self.at.get() == FIRST {
            self.at.set(NO_LINE);
            return self.mem.read_u64(addr).ok();
        }
        let base = addr & !63;
        let mut q = [0u64; 8];
        if self.mem.read_qwords(base, &mut q).is_err() {
            // The line runs past guest RAM: the entry alone.
            return self.mem.read_u64(addr).ok();
        }
        self.at.set(base);
        for (c, v) in self.line.iter().zip(q) {
            c.set(v);
        }
        Some(q[(addr - base) as usize / 8])
    }
}

impl EntryMemory for GuestEntries<'_> {
    /// A qword of the line held is one compare and a load (`FIRST` and `NO_LINE` are odd
    /// and even-but-not-qword offsets from any aligned address, so they never match).
    #[inline]
    fn load_entry(&self, addr: u64) -> Option<u64> {
        let off = addr.wrapping_sub(self.at.get());
        if off < 64 && off & 7 == 0 {
            return Some(self.line[off as usize / 8].get());
        }
        self.miss(addr)
    }

    fn cas_entry(&self, _addr: u64, _current: u64, _new: u64) -> Option<Result<u64, u64>> {
        // The lookup chain never updates memory.
        None
    }
}

/// The IOMMU configuration the guest's entries are checked against: what its CAP / ECAP
/// offer (first level only, no nesting or pass-through for the guest).
pub(crate) fn guest_config(id: &Identity) -> IommuConfig {
    let cap = id.cap;
    let ecap = id.ecap;
    IommuConfig {
        pasid_bits: id.pasid_bits.max(1),
        mgaw: ((cap >> 16 & 0x3f) + 1) as u8,
        sagaw_levels: vec![4],
        domain_bits: 16,
        nesting: false,
        fl1gp: cap >> 56 & 1 != 0,
        fl5lp: cap >> 60 & 1 != 0,
        ers: ecap >> 30 & 1 != 0,
        srs: ecap >> 31 & 1 != 0,
        prs: ecap >> 29 & 1 != 0,
        eafs: ecap >> 34 & 1 != 0,
        pass_through: false,
        slads: false,
        device_tlb: ecap >> 2 & 1 != 0,
        ..IommuConfig::default()
    }
}

/// The guest's present, valid scalable-mode context entry for `sid` under the root table at
/// `rtaddr`, or `None` when the root or context entry is absent, unreadable or invalid.
pub(crate) fn guest_context(
    mem: &dyn GuestMemory,
    cfg: &IommuConfig,
    rtaddr: u64,
    sid: SourceId,
) -> Option<ContextEntry> {
    resolve_context(&GuestEntries::new(mem), cfg, rtaddr, sid).ok()
}

/// The guest's valid PASID entry for `pasid` under context entry `ctx` (PASID directory →
/// PASID table, with the software IOMMU's own checks after the context entry), or `None`
/// when any level is absent, unreadable or invalid (as hardware would fault).
///
/// The directory entry is read on every call, never kept: Linux installs a new PASID table in
/// a present directory with no invalidation of any kind (`intel_pasid_get_entry`), so only
/// the root and context entries above it may be cached (see `Unit::contexts`).
pub(crate) fn guest_pasid_entry(
    mem: &dyn GuestMemory,
    cfg: &IommuConfig,
    ctx: &ContextEntry,
    pasid: u32,
) -> Option<PasidEntry> {
    resolve_pasid(&GuestEntries::new(mem), cfg, ctx, Some(pasid))
        .ok()
        .map(|r| r.entry)
}
