//! Reading the guest's scalable-mode translation structures (root table, context entries,
//! PASID directory and tables) from guest memory. The formats and their checks are the
//! software IOMMU's own (`vsva_iommu::context::resolve_context`, then the directory and
//! PASID-table steps of its `resolve`), run over guest-physical memory with the capabilities
//! the guest was offered.

use vsva_iommu::context::{pasid_entry_address, resolve_context, ContextEntry, PasidDirEntry};
use vsva_iommu::memory::EntryMemory;
use vsva_iommu::{IommuConfig, PasidEntry, SourceId};

use crate::caps::Identity;
use crate::memory::GuestMemory;

/// Guest memory as the lookup chain reads it.
struct GuestEntries<'a>(&'a dyn GuestMemory);

impl EntryMemory for GuestEntries<'_> {
    fn load_entry(&self, addr: u64) -> Option<u64> {
        self.0.read_u64(addr).ok()
    }

    fn cas_entry(&self, _addr: u64, _current: u64, _new: u64) -> Option<Result<u64, u64>> {
        // The chain up to the context entry never updates memory.
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
    resolve_context(&GuestEntries(mem), cfg, rtaddr, sid).ok()
}

/// The guest's valid PASID entry for `pasid` under context entry `ctx` (PASID directory →
/// PASID table, with the checks of the software IOMMU's own lookup after the context entry),
/// or `None` when any level is absent, unreadable or invalid (as hardware would fault).
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
    if !ctx.pasid_enable || pasid >= ctx.pasid_limit() || pasid >> cfg.pasid_bits != 0 {
        return None;
    }
    let de = mem
        .read_u64(PasidDirEntry::address(ctx.pasid_dir, pasid))
        .ok()?;
    let dir = PasidDirEntry::from_raw(de, cfg).ok()?;
    let mut v = [0u64; 8];
    mem.read_qwords(pasid_entry_address(dir.table, pasid), &mut v)
        .ok()?;
    let entry = PasidEntry::from_raw(&v).ok()?;
    entry.validate(cfg).ok()?;
    Some(entry)
}
