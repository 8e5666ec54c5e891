//! The first-level (x86-64 4/5-level) and second-level (stage 2) page-table walkers.
//!
//! Both walkers only *read* memory; accessed/dirty updates are a separate step
//! ([`set_accessed_dirty`]) done by compare-and-swap after the access has been allowed, so a
//! tool (the `vsva pgwalk` inspector) can walk a memory image without changing it and the
//! IOMMU can restart a walk whose entries changed under it.
//!
//! The first-level walker is generic over a [`TableTranslator`], which turns the address of each
//! first-level table (the root FLPTR and every pointer found in an entry) into a host address:
//! [`Identity`] for plain first-level translation and for the inspector, a second-level walk for
//! nested translation. Every table read therefore goes through the same code in all three uses.

use crate::fault::{FaultReason, Stage};
use crate::memory::EntryMemory;

// First-level (x86-64 IA-32e) entry bits.

/// P (bit 0): present; clear stops the walk with a not-present fault.
pub const P: u64 = 1 << 0;
/// R/W (bit 1): writes allowed only if set at every level.
pub const RW: u64 = 1 << 1;
/// U/S (bit 2): user requests allowed only if set at every level.
pub const US: u64 = 1 << 2;
/// PWT (bit 3): page-level write-through (recorded, not simulated).
pub const PWT: u64 = 1 << 3;
/// PCD (bit 4): page-level cache disable (recorded, not simulated).
pub const PCD: u64 = 1 << 4;
/// A (bit 5): set by a successful walk on every entry it used.
pub const A: u64 = 1 << 5;
/// D (bit 6, leaf only): set by a successful write.
pub const D: u64 = 1 << 6;
/// PS (bit 7): a 2 MiB leaf in a PDE, a 1 GiB leaf in a PDPTE; reserved above.
pub const PS: u64 = 1 << 7;
/// G (bit 8, leaf only): global (ignored by the IOMMU).
pub const G: u64 = 1 << 8;
/// EA (bit 10): extended accessed, set with A when the PASID entry's EAFE = 1.
pub const EA: u64 = 1 << 10;
/// XD (bit 63): execute requests fault if set at any level.
pub const XD: u64 = 1 << 63;
/// The next table or page frame of an entry of either level: bits 51:12.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

// Second-level entry bits.

/// R (bit 0): reads allowed.
pub const SL_R: u64 = 1 << 0;
/// W (bit 1): writes allowed.
pub const SL_W: u64 = 1 << 1;
/// X (bit 2): execute allowed, honoured only when the PASID entry's SLEE = 1.
pub const SL_X: u64 = 1 << 2;
/// Bits 11 and 62 of a second-level non-leaf entry: reserved (in a leaf they are SNP and TM).
const SL_NONLEAF_RSVD: u64 = 1 << 11 | 1 << 62;
/// TM (bit 62 of a second-level leaf): transient mapping, Reserved(0) without ECAP.DT.
const SL_TM: u64 = 1 << 62;
/// PS (bit 7): a 2 MiB leaf at level 2, a 1 GiB leaf at level 3.
pub const SL_PS: u64 = 1 << 7;
/// A (bit 8): accessed, set by the walk when the PASID entry's SSADE = 1.
pub const SL_A: u64 = 1 << 8;
/// D (bit 9): dirty, set by a write when SSADE = 1.
pub const SL_D: u64 = 1 << 9;

/// The address an entry (either level) points at: bits 51:12.
#[inline(always)]
pub(crate) const fn entry_addr(e: u64) -> u64 {
    e & ADDR_MASK
}
/// Whether a first-level leaf is dirty: D, bit 6.
#[inline(always)]
pub(crate) const fn fl_entry_is_dirty(e: u64) -> bool {
    e & D != 0
}
/// Whether a second-level entry is present: any of R, W, X (bits 2:0) set.
#[inline(always)]
pub(crate) const fn sl_entry_is_present(e: u64) -> bool {
    e & (SL_R | SL_W | SL_X) != 0
}
/// Whether a second-level entry maps a large page: PS, bit 7.
#[inline(always)]
pub(crate) const fn sl_entry_is_large(e: u64) -> bool {
    e & SL_PS != 0
}
/// Whether a second-level leaf is dirty: D, bit 9 (with SSADE).
#[inline(always)]
pub(crate) const fn sl_entry_is_dirty(e: u64) -> bool {
    e & SL_D != 0
}
/// A second-level non-leaf entry pointing at `table` (bits 51:12) with R, W, X set (bits 2:0),
/// so the leaves below decide.
pub(crate) const fn sl_make_table(table: u64) -> u64 {
    (table & ADDR_MASK) | SL_R | SL_W | SL_X
}
/// A second-level leaf at `level` mapping `addr` (bits 51:12) with R (bit 0), W (bit 1),
/// X (bit 2), and PS (bit 7) above level 1.
pub(crate) const fn sl_make_leaf(addr: u64, level: u8, read: bool, write: bool, exec: bool) -> u64 {
    let ps = if level > 1 { SL_PS } else { 0 };
    let r = if read { SL_R } else { 0 };
    let w = if write { SL_W } else { 0 };
    let x = if exec { SL_X } else { 0 };
    (addr & ADDR_MASK) | ps | r | w | x
}

/// 4 KiB.
pub const SIZE_4K: u64 = 1 << 12;
/// 2 MiB.
pub const SIZE_2M: u64 = 1 << 21;
/// 1 GiB.
pub const SIZE_1G: u64 = 1 << 30;

/// Page size mapped by a leaf at `level` (1 → 4 KiB, 2 → 2 MiB, 3 → 1 GiB).
pub const fn level_size(level: u8) -> u64 {
    1 << (12 + 9 * (level as u32 - 1))
}

/// Table index of `addr` at `level`.
#[inline]
pub const fn level_index(addr: u64, level: u8) -> u64 {
    (addr >> (12 + 9 * (level as u32 - 1))) & 0x1ff
}

/// A walk failure: reason, stage and the level of the entry that failed (0 when the failure is
/// not at a paging entry, e.g. a non-canonical input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkFault {
    /// The VT-d fault reason to report.
    pub reason: FaultReason,
    /// The stage whose entry (or input) failed.
    pub stage: Stage,
    /// Level of the failing entry, 5..=1, or 0.
    pub level: u8,
}

impl WalkFault {
    /// A first-level fault.
    pub const fn first(reason: FaultReason, level: u8) -> Self {
        Self {
            reason,
            stage: Stage::First,
            level,
        }
    }
    /// A second-level fault.
    pub const fn second(reason: FaultReason, level: u8) -> Self {
        Self {
            reason,
            stage: Stage::Second,
            level,
        }
    }
}

/// Turns the address of a first-level table into the host address to read it from.
pub trait TableTranslator {
    /// `gpa` is the table's address as the first level names it; `level` is the level of the
    /// entries in that table (5 or 4 for the root). Returns the host address and whether the
    /// table may be written (for accessed/dirty updates).
    fn table(&mut self, gpa: u64, level: u8, is_root: bool) -> Result<(u64, bool), WalkFault>;
}

/// Tables are at host addresses already (first-level only translation, memory images).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl TableTranslator for Identity {
    #[inline]
    fn table(&mut self, gpa: u64, _level: u8, _is_root: bool) -> Result<(u64, bool), WalkFault> {
        Ok((gpa, true))
    }
}

/// Parameters of a first-level walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlParams {
    /// 4 or 5 levels.
    pub levels: u8,
    /// Host (output) address width: address bits at or above it are reserved.
    pub haw: u8,
    /// 1 GiB pages allowed (CAP.FL1GP); a PS bit in a PDPTE is reserved otherwise.
    pub fl1gp: bool,
}

/// Accumulated rights of the entries above a point in a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rights {
    /// Read/write (FL: R/W at every level; SL: W at every level).
    pub write: bool,
    /// FL: U/S at every level; SL: R at every level.
    pub user_or_read: bool,
    /// FL: no XD at any level; SL: X at every level.
    pub exec: bool,
}

impl Rights {
    /// All rights (the state before the first entry).
    pub const ALL: Rights = Rights {
        write: true,
        user_or_read: true,
        exec: true,
    };
}

/// A point to resume a walk from: the table at `level` (its entries are at that level),
/// reached with `rights` accumulated above it. Paging-structure caches hold these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStart {
    /// Level of the entries in `table`.
    pub level: u8,
    /// Table address (guest-physical for a nested first level).
    pub table: u64,
    /// Rights accumulated above.
    pub rights: Rights,
}

/// One entry the walk used, for accessed/dirty updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsedEntry {
    /// Host address of the entry.
    pub addr: u64,
    /// Value read.
    pub value: u64,
    /// The level the entry was read at (1 = leaf table).
    pub level: u8,
    /// Whether the entry may be written (second-level write permission on its table).
    pub writable: bool,
}

/// The result of a successful walk (before any access check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Base of the output page (guest-physical for a nested first level).
    pub output: u64,
    /// Page size: 4 KiB, 2 MiB or 1 GiB.
    pub page_size: u64,
    /// Level of the leaf.
    pub leaf_level: u8,
    /// Rights accumulated over every level, leaf included.
    pub rights: Rights,
    /// Entries used, root first (only `used[..used_len]` are meaningful).
    pub used: [UsedEntry; 5],
    /// Number of entries used.
    pub used_len: usize,
    /// The level-1 table this walk went through (what a paging-structure cache stores), if
    /// the leaf is a 4 KiB page.
    pub pt: Option<WalkStart>,
    /// The leaf entry's value.
    pub leaf: u64,
}

impl Walk {
    /// An empty walk, to be filled by the `_into` walkers.
    pub const EMPTY: Walk = Walk {
        output: 0,
        page_size: 0,
        leaf_level: 0,
        rights: Rights::ALL,
        used: [UsedEntry {
            addr: 0,
            value: 0,
            level: 0,
            writable: false,
        }; 5],
        used_len: 0,
        pt: None,
        leaf: 0,
    };

    /// Output address for input `addr`.
    pub fn translate(&self, addr: u64) -> u64 {
        self.output | (addr & (self.page_size - 1))
    }
    /// Entries used, root first.
    pub fn used(&self) -> &[UsedEntry] {
        &self.used[..self.used_len]
    }
}

mod build;
mod first_level;
mod second_level;

pub use build::*;
pub use first_level::*;
pub use second_level::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HostMemory;
    use crate::pool::TablePool;
    use crate::table_store::HostTableStore;
    use vm_memory::GuestMemoryMmap;

    const P4: FlParams = FlParams {
        levels: 4,
        haw: 48,
        fl1gp: true,
    };

    fn setup() -> (HostMemory, TablePool) {
        let mem = HostMemory::anonymous(&[(0, 0x40_0000)]).unwrap();
        let pool = TablePool::new(&mem, 0x10_0000, 0x10_0000).unwrap();
        (mem, pool)
    }

    fn walk(mem: &HostMemory, p: &FlParams, root: u64, va: u64) -> Result<Walk, WalkFault> {
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        walk_first_level(m, &mut Identity, p, root, va, None)
    }

    #[test]
    fn four_level_pages_of_every_size() {
        let (mem, pool) = setup();
        let mut s = HostTableStore::new(&mem, &pool);
        let root = s.alloc_table().unwrap();
        fl_map(&mut s, root, 4, 0x7000_1000, 0x5000, SIZE_4K, RW | US).unwrap();
        fl_map(&mut s, root, 4, 0x4000_0000, 0x20_0000, SIZE_2M, US).unwrap();
        fl_map(
            &mut s,
            root,
            4,
            0x80_0000_0000,
            0x4000_0000,
            SIZE_1G,
            RW | XD,
        )
        .unwrap();
        let w = walk(&mem, &P4, root, 0x7000_1abc).unwrap();
        assert_eq!(
            (w.translate(0x7000_1abc), w.page_size, w.leaf_level),
            (0x5abc, SIZE_4K, 1)
        );
        assert!(w.rights.write && w.rights.user_or_read && w.rights.exec);
        assert!(w.pt.is_some());
        let w = walk(&mem, &P4, root, 0x4012_3456).unwrap();
        assert_eq!(
            (w.translate(0x4012_3456), w.page_size),
            (0x32_3456, SIZE_2M)
        );
        assert!(!w.rights.write);
        let w = walk(&mem, &P4, root, 0x80_1234_5678).unwrap();
        assert_eq!(
            (w.translate(0x80_1234_5678), w.page_size),
            (0x5234_5678, SIZE_1G)
        );
        assert!(!w.rights.exec && !w.rights.user_or_read);
        assert_eq!(w.used().len(), 2);
        assert_eq!(
            fl_map(&mut s, root, 4, 0x4000_0000, 0, SIZE_4K, 0),
            Err(BuildError::Overlap {
                addr: 0x4000_0000,
                level: 2
            })
        );
        assert_eq!(
            fl_map(&mut s, root, 4, 0x1000, 0, SIZE_2M, 0),
            Err(BuildError::Unaligned {
                addr: 0x1000,
                size: SIZE_2M
            })
        );
        assert_eq!(
            fl_map(&mut s, root, 4, 0, 0, 8192, 0),
            Err(BuildError::BadSize { size: 8192 })
        );
    }

    #[test]
    fn five_level_and_canonical_checks() {
        let (mem, pool) = setup();
        let mut s = HostTableStore::new(&mem, &pool);
        let root = s.alloc_table().unwrap();
        let va = 0xff12_3456_7800_0000u64; // canonical for 5 levels only
        fl_map(&mut s, root, 5, va, 0x9000, SIZE_4K, RW).unwrap();
        let p5 = FlParams { levels: 5, ..P4 };
        assert_eq!(
            walk(&mem, &p5, root, va | 0x10)
                .unwrap()
                .translate(va | 0x10),
            0x9010
        );
        assert_eq!(
            walk(&mem, &P4, root, va).unwrap_err(),
            WalkFault::first(FaultReason::NonCanonical, 0)
        );
        assert_eq!(
            walk(&mem, &p5, root, 1 << 57).unwrap_err().reason,
            FaultReason::NonCanonical
        );
        assert!(is_canonical(0xffff_8000_0000_0000, 4));
        assert!(!is_canonical(0x0000_8000_0000_0000, 4));
    }

    #[test]
    fn fault_reasons_and_levels() {
        let (mem, pool) = setup();
        let mut s = HostTableStore::new(&mem, &pool);
        let root = s.alloc_table().unwrap();
        fl_map(&mut s, root, 4, 0x1000, 0x5000, SIZE_4K, RW | US).unwrap();
        assert_eq!(
            walk(&mem, &P4, root, 0x2000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelNotPresent, 1)
        );
        assert_eq!(
            walk(&mem, &P4, root, 0x80_0000_0000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelNotPresent, 4)
        );
        // PS in a PML4E is reserved.
        let pml4e = mem.load_u64(root).unwrap();
        mem.store_u64(root, pml4e | PS).unwrap();
        assert_eq!(
            walk(&mem, &P4, root, 0x1000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelReserved, 4)
        );
        // Address bits above HAW are reserved.
        mem.store_u64(root, pml4e | 1 << 50).unwrap();
        assert_eq!(
            walk(&mem, &P4, root, 0x1000).unwrap_err().reason,
            FaultReason::FirstLevelReserved
        );
        // A table pointer outside memory is an access error at the level it points to.
        mem.store_u64(root, 0x1000_0000 | P | RW | US).unwrap();
        assert_eq!(
            walk(&mem, &P4, root, 0x1000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelAccess, 3)
        );
        mem.store_u64(root, pml4e).unwrap();
        // 1 GiB leaf without FL1GP, and with low reserved bits; 2 MiB leaf with reserved bits.
        let pdpt = pml4e & ADDR_MASK;
        let pdpte = mem.load_u64(pdpt).unwrap();
        mem.store_u64(pdpt, 0x4000_0000 | P | PS).unwrap();
        let no1g = FlParams { fl1gp: false, ..P4 };
        assert_eq!(
            walk(&mem, &no1g, root, 0x1000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelReserved, 3)
        );
        assert!(walk(&mem, &P4, root, 0x1000).is_ok());
        mem.store_u64(pdpt, 0x4000_0000 | 1 << 13 | P | PS).unwrap();
        assert_eq!(
            walk(&mem, &P4, root, 0x1000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelReserved, 3)
        );
        mem.store_u64(pdpt, pdpte).unwrap();
        let pd = pdpte & ADDR_MASK;
        mem.store_u64(pd, 0x20_0000 | 1 << 13 | P | PS).unwrap();
        assert_eq!(
            walk(&mem, &P4, root, 0x1000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelReserved, 2)
        );
        // Ignored bits 62:52 and 11:9 do not fault.
        mem.store_u64(pd, 0x20_0000 | 0x7ff << 52 | 0x7 << 9 | P | PS)
            .unwrap();
        assert_eq!(walk(&mem, &P4, root, 0x1000).unwrap().output, 0x20_0000);
        // Bad paging modes and roots whose entry address overflows fault instead of panicking.
        let p3 = FlParams { levels: 3, ..P4 };
        assert_eq!(
            walk(&mem, &p3, root, 0x1000).unwrap_err().reason,
            FaultReason::FirstLevelPointerInvalid
        );
        // An error reading the root entry through FLPTR is 0x73, not 0x70.
        assert_eq!(
            walk(&mem, &P4, u64::MAX - 7, 0x7f80_0000_0000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelPointerInvalid, 4)
        );
        assert_eq!(
            walk(&mem, &P4, 0x8000_0000, 0x1000).unwrap_err(),
            WalkFault::first(FaultReason::FirstLevelPointerInvalid, 4)
        );
    }

    #[test]
    fn access_checks_in_order() {
        let all = FlControls {
            sre: true,
            wpe: true,
            ers: true,
        };
        let ro_sup = Rights {
            write: false,
            user_or_read: false,
            exec: false,
        };
        assert_eq!(
            check_fl_access(ro_sup, false, false, true, FlControls { sre: false, ..all }),
            Err(FaultReason::SupervisorNotEnabled)
        );
        assert_eq!(
            check_fl_access(ro_sup, false, true, true, FlControls { ers: false, ..all }),
            Err(FaultReason::ExecuteNotEnabled)
        );
        assert_eq!(
            check_fl_access(ro_sup, false, false, false, all),
            Err(FaultReason::UserToSupervisor)
        );
        assert_eq!(
            check_fl_access(ro_sup, false, true, true, all),
            Err(FaultReason::ExecuteDisabled)
        );
        assert_eq!(
            check_fl_access(ro_sup, true, false, true, all),
            Err(FaultReason::NoWrite)
        );
        // Without WPE a supervisor write ignores R/W.
        assert_eq!(
            check_fl_access(ro_sup, true, false, true, FlControls { wpe: false, ..all }),
            Ok(())
        );
        assert_eq!(check_fl_access(ro_sup, false, false, true, all), Ok(()));
    }

    #[test]
    fn accessed_and_dirty_are_set_by_cas() {
        let (mem, pool) = setup();
        let mut s = HostTableStore::new(&mem, &pool);
        let root = s.alloc_table().unwrap();
        fl_map(&mut s, root, 4, 0x1000, 0x5000, SIZE_4K, RW | US).unwrap();
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        let w = walk(&mem, &P4, root, 0x1000).unwrap();
        assert_eq!(
            set_accessed_dirty(m, &w, false, true, Stage::First),
            Ok(AdUpdate::Done)
        );
        for u in w.used() {
            let v = mem.load_u64(u.addr).unwrap();
            assert_eq!(v & (A | EA | D), A | EA, "level {}", u.level);
        }
        // The entries changed (A set): a stale walk must restart.
        let w2 = walk(&mem, &P4, root, 0x1000).unwrap();
        assert_eq!(
            set_accessed_dirty(m, &w, true, false, Stage::First),
            Ok(AdUpdate::Changed)
        );
        assert_eq!(
            set_accessed_dirty(m, &w2, true, false, Stage::First),
            Ok(AdUpdate::Done)
        );
        let leaf = w2.used().last().unwrap();
        assert_eq!(mem.load_u64(leaf.addr).unwrap() & D, D);
        // Non-writable table (nested, read-only stage 2) faults 0x77.
        let mut ro = walk(&mem, &P4, root, 0x1000).unwrap();
        ro.used[0].value &= !A;
        ro.used[0].writable = false;
        assert_eq!(
            set_accessed_dirty(m, &ro, false, false, Stage::First),
            Err(WalkFault::first(FaultReason::NestedNoWriteEntry, 4))
        );
    }

    #[test]
    fn second_level_walk() {
        let (mem, pool) = setup();
        let root = pool.alloc(&mem).unwrap();
        let l3 = pool.alloc(&mem).unwrap();
        let l2 = pool.alloc(&mem).unwrap();
        let l1 = pool.alloc(&mem).unwrap();
        mem.store_u64(root, l3 | SL_R | SL_W).unwrap();
        mem.store_u64(l3, l2 | SL_R | SL_W).unwrap();
        mem.store_u64(l2, l1 | SL_R | SL_W).unwrap();
        mem.store_u64(l1 + 8, 0x7000 | SL_R).unwrap();
        mem.store_u64(l2 + 8, 0x60_0000 | SL_R | SL_W | SL_PS)
            .unwrap();
        let p = SlParams {
            levels: 4,
            haw: 48,
            sl_2m: true,
            sl_1g: false,
            slee: false,
            tm: true,
        };
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        let w = walk_second_level(m, &p, root, 0x1234, None).unwrap();
        assert_eq!(w.translate(0x1234), 0x7234);
        assert!(w.rights.user_or_read && !w.rights.write);
        let w = walk_second_level(m, &p, root, 0x2f_0000, None).unwrap();
        assert_eq!((w.translate(0x2f_0000), w.page_size), (0x6f_0000, SIZE_2M));
        assert!(w.rights.write);
        assert_eq!(
            walk_second_level(m, &p, root, 0x2000, None).unwrap_err(),
            WalkFault::second(FaultReason::SecondLevelPermission, 1)
        );
        mem.store_u64(l3 + 8, SL_R | SL_PS).unwrap();
        assert_eq!(
            walk_second_level(m, &p, root, SIZE_1G, None).unwrap_err(),
            WalkFault::second(FaultReason::SecondLevelReserved, 3)
        );
        // A leaf whose output is at or above HAW: 0x84, the fault the specification names
        // for it, not the reserved-bit fault.
        mem.store_u64(l2 + 16, 1 << 50 | SL_R | SL_PS).unwrap();
        assert_eq!(
            walk_second_level(m, &p, root, 2 * SIZE_2M, None).unwrap_err(),
            WalkFault::second(FaultReason::OutputBeyondMax, 2)
        );
        mem.store_u64(l2 + 24, 0x9000_0000 | SL_R).unwrap();
        assert_eq!(
            walk_second_level(m, &p, root, 3 * SIZE_2M, None).unwrap_err(),
            WalkFault::second(FaultReason::SecondLevelAccess, 1)
        );
        // Bit 11 of a non-leaf entry is reserved.
        mem.store_u64(l2 + 32, l1 | SL_R | 1 << 11).unwrap();
        assert_eq!(
            walk_second_level(m, &p, root, 4 * SIZE_2M, None).unwrap_err(),
            WalkFault::second(FaultReason::SecondLevelReserved, 2)
        );
    }

    /// A four-level second-level table with one leaf at 0x1000 (`leaf` at level 1) below
    /// non-leaf entries `upper` (their flag bits); returns (root, l2 table, l1 table).
    fn sl_tables(mem: &HostMemory, pool: &TablePool, upper: u64, leaf: u64) -> (u64, u64, u64) {
        let root = pool.alloc(mem).unwrap();
        let l3 = pool.alloc(mem).unwrap();
        let l2 = pool.alloc(mem).unwrap();
        let l1 = pool.alloc(mem).unwrap();
        mem.store_u64(root, l3 | upper).unwrap();
        mem.store_u64(l3, l2 | upper).unwrap();
        mem.store_u64(l2, l1 | upper).unwrap();
        mem.store_u64(l1 + 8, leaf).unwrap();
        (root, l2, l1)
    }

    const SL4: SlParams = SlParams {
        levels: 4,
        haw: 48,
        sl_2m: true,
        sl_1g: true,
        slee: false,
        tm: true,
    };

    #[test]
    fn second_level_non_leaf_bits_6_3_are_ignored() {
        let (mem, pool) = setup();
        let (root, _, _) = sl_tables(&mem, &pool, SL_R | SL_W | 0x78, 0x7000 | SL_R);
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        assert_eq!(
            walk_second_level(m, &SL4, root, 0x1000, None)
                .unwrap()
                .output,
            0x7000
        );
    }

    /// Bit 62 of a second-level non-leaf entry is reserved (VT-d second-level paging-entry
    /// formats: SL-PML5E/PML4E/PDPE/PDE bit 62 "R"); bits 63 and 61:52 are ignored.
    #[test]
    fn second_level_non_leaf_bit_62_is_reserved() {
        let (mem, pool) = setup();
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        let (root, _, _) = sl_tables(&mem, &pool, SL_R | SL_W | 1 << 62, 0x7000 | SL_R);
        assert_eq!(
            walk_second_level(m, &SL4, root, 0x1000, None).unwrap_err(),
            WalkFault::second(FaultReason::SecondLevelReserved, 4)
        );
        let (root, _, _) = sl_tables(
            &mem,
            &pool,
            SL_R | SL_W | 1 << 63 | 0x3ff << 52,
            0x7000 | SL_R,
        );
        assert_eq!(
            walk_second_level(m, &SL4, root, 0x1000, None)
                .unwrap()
                .output,
            0x7000
        );
    }

    /// TM (bit 62 of a second-level leaf) is Reserved(0) when device TLBs are not supported
    /// (ECAP.DT = 0), and a field the walk ignores when they are. QEMU's
    /// `VTD_SPTE_PAGE_L1_RSVD_MASK` / `VTD_SPTE_LPAGE_L2/L3_RSVD_MASK` leave TM out of the
    /// reserved mask only with `dt_supported` (and, since QEMU 9.2, only with `stale-tm`, the
    /// specification having made it Reserved(0) in every case from revision 3.2).
    #[test]
    fn second_level_leaf_tm_is_reserved_without_device_tlbs() {
        let (mem, pool) = setup();
        let (root, l2, _) = sl_tables(&mem, &pool, SL_R | SL_W, 0x7000 | SL_R | 1 << 62);
        mem.store_u64(l2 + 16, 0x40_0000 | SL_R | SL_PS | 1 << 62)
            .unwrap();
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        let no_dt = SlParams { tm: false, ..SL4 };
        for (gpa, level) in [(0x1000, 1), (2 * SIZE_2M, 2)] {
            assert_eq!(
                walk_second_level(m, &no_dt, root, gpa, None).unwrap_err(),
                WalkFault::second(FaultReason::SecondLevelReserved, level),
                "{gpa:#x}"
            );
            assert!(walk_second_level(m, &SL4, root, gpa, None).is_ok());
        }
    }

    #[test]
    fn second_level_large_leaf_reserved_bits() {
        let (mem, pool) = setup();
        let (root, l2, _) = sl_tables(&mem, &pool, SL_R | SL_W, 0x7000 | SL_R);
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        // A 2 MiB leaf: address bits 20:12 are reserved.
        for bit in [12, 16, 20] {
            mem.store_u64(l2 + 8, 0x20_0000 | 1 << bit | SL_R | SL_PS)
                .unwrap();
            assert_eq!(
                walk_second_level(m, &SL4, root, SIZE_2M, None).unwrap_err(),
                WalkFault::second(FaultReason::SecondLevelReserved, 2),
                "bit {bit}"
            );
        }
        mem.store_u64(l2 + 8, 0x20_0000 | SL_R | SL_PS).unwrap();
        assert!(walk_second_level(m, &SL4, root, SIZE_2M, None).is_ok());
    }

    #[test]
    fn second_level_x_counts_only_with_slee() {
        let (mem, pool) = setup();
        // Non-leaf entries and the leaf carry X only.
        let (root, _, _) = sl_tables(&mem, &pool, SL_X, 0x7000 | SL_X);
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        assert_eq!(
            walk_second_level(m, &SL4, root, 0x1000, None).unwrap_err(),
            WalkFault::second(FaultReason::SecondLevelPermission, 4),
            "without SLEE an X-only entry is not present"
        );
        let slee = SlParams { slee: true, ..SL4 };
        let w = walk_second_level(m, &slee, root, 0x1000, None).unwrap();
        assert!(w.rights.exec && !w.rights.user_or_read && !w.rights.write);
        // A readable leaf without X: execute allowed only when X is ignored.
        let (root, _, _) = sl_tables(&mem, &pool, SL_R | SL_W | SL_X, 0x7000 | SL_R);
        assert!(
            !walk_second_level(m, &slee, root, 0x1000, None)
                .unwrap()
                .rights
                .exec
        );
        assert!(
            walk_second_level(m, &SL4, root, 0x1000, None)
                .unwrap()
                .rights
                .exec
        );
    }

    #[test]
    fn accessed_dirty_refused_before_any_write() {
        let (mem, pool) = setup();
        let mut s = HostTableStore::new(&mem, &pool);
        let root = s.alloc_table().unwrap();
        fl_map(&mut s, root, 4, 0x1000, 0x5000, SIZE_4K, RW | US).unwrap();
        let snap = mem.snapshot();
        let m: &GuestMemoryMmap = &snap;
        // The leaf's table is not writable (nested, read-only stage 2): nothing is written,
        // not even the A bits of the entries above it.
        let mut w = walk(&mem, &P4, root, 0x1000).unwrap();
        w.used[3].writable = false;
        assert_eq!(
            set_accessed_dirty(m, &w, true, false, Stage::First),
            Err(WalkFault::first(FaultReason::NestedNoWriteEntry, 1))
        );
        for u in w.used() {
            assert_eq!(mem.load_u64(u.addr).unwrap(), u.value, "level {}", u.level);
        }
    }
}
