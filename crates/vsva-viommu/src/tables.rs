//! Reading the guest's scalable-mode translation structures (root table, context entries,
//! PASID directory and tables) from guest memory. The formats and their checks are the
//! software IOMMU's own (`vsva_iommu::context::resolve`), run over guest-physical memory with
//! the capabilities the guest was offered.

use vsva_iommu::context::resolve;
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
        // The chain up to the PASID entry never updates memory.
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

/// The guest's valid PASID entry for (`sid`, `pasid`) under the root table at `rtaddr`, or
/// `None` when any level is absent, unreadable or invalid (as hardware would fault).
pub(crate) fn guest_pasid_entry(
    mem: &dyn GuestMemory,
    cfg: &IommuConfig,
    rtaddr: u64,
    sid: SourceId,
    pasid: u32,
) -> Option<PasidEntry> {
    resolve(&GuestEntries(mem), cfg, rtaddr, sid, Some(pasid))
        .ok()
        .map(|r| r.entry)
}
