//! Reading the guest's scalable-mode translation structures (root table, context entries,
//! PASID directory and tables) from guest memory. The formats and their checks are the
//! software IOMMU's own, run over guest-physical memory with the capabilities the guest was
//! offered: `vsva_iommu::context::resolve_context` for a device's context entry and
//! `resolve_pasid` for a PASID's entry under it. The shadowing reads an entry on every
//! PASID-cache invalidation, so guest memory is read as the lookup needs it: one qword for
//! the first load of a context walk, a 64-byte line for the loads after it; for a PASID
//! lookup, the directory entry alone and the PASID entry in one 64-byte read
//! (`EntryMemory::load_entries`), not eight accesses.

use std::cell::Cell;

use vsva_iommu::context::{resolve_context, resolve_pasid, ContextEntry};
use vsva_iommu::memory::EntryMemory;
use vsva_iommu::{IommuConfig, PasidEntry, SourceId};

use crate::caps::Identity;
use crate::memory::GuestMemory;

/// Guest memory as the context lookup reads it. The first load of a walk (the root entry:
/// one qword needed) is a single read; after it, a load reads the 64-byte line around it,
/// kept for the loads that follow. A context entry is half of one such line, so the chain's
/// loads of an entry are one copy from guest memory, not one access each.
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

/// Guest memory read entry by entry, with no line kept: what a PASID lookup needs (one
/// directory entry, then one 64-byte PASID entry in a single read).
struct GuestReads<'a>(&'a dyn GuestMemory);

impl EntryMemory for GuestReads<'_> {
    #[inline]
    fn load_entry(&self, addr: u64) -> Option<u64> {
        if addr & 7 != 0 {
            return None;
        }
        self.0.read_u64(addr).ok()
    }

    fn cas_entry(&self, _addr: u64, _current: u64, _new: u64) -> Option<Result<u64, u64>> {
        // The lookup chain never updates memory.
        None
    }

    /// A run of qwords (a PASID entry) is one read of guest memory.
    #[inline]
    fn load_entries(&self, addr: u64, out: &mut [u64]) -> Option<()> {
        if addr & 7 != 0 {
            return None;
        }
        self.0.read_qwords(addr, out).ok()
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
///
/// Inlined into the shadowing's caller, so the entry is decoded where it is used (no copy
/// of the resolved entry into an `Option` returned through memory).
#[inline(always)]
pub(crate) fn guest_pasid_entry(
    mem: &dyn GuestMemory,
    cfg: &IommuConfig,
    ctx: &ContextEntry,
    pasid: u32,
) -> Option<PasidEntry> {
    resolve_pasid(&GuestReads(mem), cfg, ctx, Some(pasid))
        .ok()
        .map(|r| r.entry)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vsva_iommu::context::{pasid_entry_address, PasidDirEntry};
    use vsva_iommu::{HostMemory, Iommu};

    use super::*;
    use crate::memory::HostWindow;

    const DIR: u64 = 0x3000;
    const TABLE: u64 = 0x4000;
    const PASID: u32 = 5;

    /// One change to the guest's tables or context entry, by name; it returns the PASID to
    /// look up.
    type Case = (&'static str, fn(&HostWindow, &mut ContextEntry) -> u32);

    /// The lookup over guest memory (one qword for the directory entry, one 64-byte read for
    /// the PASID entry) finds a valid entry and refuses each way a level can be absent,
    /// unreadable or invalid.
    #[test]
    fn the_pasid_lookup_over_guest_memory_finds_valid_entries_only() {
        let mem = HostMemory::anonymous(&[(0, 8 << 20)]).unwrap();
        let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 4 << 20, 4 << 20).unwrap());
        let cfg = IommuConfig::default();
        let dir_entry = |w: &HostWindow, v: u64| {
            w.write(PasidDirEntry::address(DIR, PASID), &v.to_le_bytes())
                .unwrap()
        };
        let entry_word = |w: &HostWindow, i: u64, v: u64| {
            let at = pasid_entry_address(TABLE, PASID) + 8 * i;
            w.write(at, &v.to_le_bytes()).unwrap()
        };
        let cases: &[Case] = &[
            ("valid first-level entry", |_, _| PASID),
            ("PASIDs disabled", |_, c| {
                c.pasid_enable = false;
                PASID
            }),
            // 2^(pdts + 7) directory entries of 64 PASIDs each: with pdts = 0, PASID
            // 128 * 64 + 5 is beyond, though its directory entry and PASID entry are valid.
            ("PASID beyond the directory", |w, c| {
                c.pdts = 0;
                let p = c.pasid_limit() + PASID;
                let v = PasidDirEntry {
                    fpd: false,
                    table: TABLE,
                }
                .to_raw();
                w.write(PasidDirEntry::address(DIR, p), &v.to_le_bytes())
                    .unwrap();
                p
            }),
            ("directory entry absent", |w, _| {
                w.write(PasidDirEntry::address(DIR, PASID), &[0; 8])
                    .unwrap();
                PASID
            }),
            ("directory entry reserved bit", |w, _| {
                let v = (TABLE | 1 | 1 << 4).to_le_bytes();
                w.write(PasidDirEntry::address(DIR, PASID), &v).unwrap();
                PASID
            }),
            ("table outside guest RAM", |w, _| {
                let v = (0x7fff_f000u64 | 1).to_le_bytes();
                w.write(PasidDirEntry::address(DIR, PASID), &v).unwrap();
                PASID
            }),
            ("entry absent", |w, _| {
                w.write(pasid_entry_address(TABLE, PASID), &[0; 8]).unwrap();
                PASID
            }),
            ("entry reserved bits", |w, _| {
                let at = pasid_entry_address(TABLE, PASID) + 24;
                w.write(at, &u64::MAX.to_le_bytes()).unwrap();
                PASID
            }),
            ("entry with second-level type", |w, _| {
                let raw = PasidEntry::second_level(1, 0x9000, 4).to_raw();
                for (i, v) in raw.iter().enumerate() {
                    let at = pasid_entry_address(TABLE, PASID) + 8 * i as u64;
                    w.write(at, &v.to_le_bytes()).unwrap();
                }
                PASID
            }),
        ];
        let mut found = 0;
        for (name, change) in cases {
            let w = HostWindow::new(iommu.clone(), 4 << 20, 4 << 20);
            w.write(0, &[0; 0x8000]).unwrap();
            dir_entry(
                &w,
                PasidDirEntry {
                    fpd: false,
                    table: TABLE,
                }
                .to_raw(),
            );
            for (i, v) in PasidEntry::first_level(3, 0x20_0000)
                .to_raw()
                .iter()
                .enumerate()
            {
                entry_word(&w, i as u64, *v);
            }
            let mut ctx = ContextEntry {
                pasid_enable: true,
                pdts: 1,
                pasid_dir: DIR,
                ..ContextEntry::default()
            };
            let pasid = change(&w, &mut ctx);
            let entry = guest_pasid_entry(&w, &cfg, &ctx, pasid);
            match *name {
                "valid first-level entry" => {
                    assert_eq!(entry, Some(PasidEntry::first_level(3, 0x20_0000)), "{name}")
                }
                // Valid for the walk; the shadowing binds first-level entries only.
                "entry with second-level type" => {
                    assert_eq!(
                        entry,
                        Some(PasidEntry::second_level(1, 0x9000, 4)),
                        "{name}"
                    )
                }
                _ => assert_eq!(entry, None, "{name}"),
            }
            found += usize::from(entry.is_some());
        }
        assert_eq!(found, 2);
    }
}
