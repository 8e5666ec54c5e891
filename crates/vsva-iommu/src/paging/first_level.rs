//! The first-level (x86-64 IA-32e, 4- and 5-level) walk, its permission check and the
//! accessed/dirty update that follows an allowed access.

use super::*;

/// Checks `va` is canonical for a `levels`-level first-level table.
#[inline]
pub fn is_canonical(va: u64, levels: u8) -> bool {
    let bits = if levels == 5 { 57 } else { 48 };
    let shift = 64 - bits;
    ((va << shift) as i64 >> shift) as u64 == va
}

fn fl_reserved(e: u64, level: u8, p: &FlParams) -> bool {
    let addr_hi = (e & ADDR_MASK) >> p.haw;
    if addr_hi != 0 {
        return true;
    }
    match level {
        4 | 5 => e & PS != 0,
        3 if e & PS != 0 => !p.fl1gp || e & 0x3fff_e000 != 0,
        2 if e & PS != 0 => e & 0x1f_e000 != 0,
        _ => false,
    }
}

/// Walks the first-level table rooted at `root` (or resumed at `start`) for input `va`.
///
/// Faults: 0x73 when `p.levels` is not 4 or 5 or the root entry (read through FLPTR) is outside
/// memory, 0x80 non-canonical, 0x70 an entry below the root outside memory (including
/// addresses that overflow), 0x71 not present, 0x72 reserved bits, plus whatever
/// `tables` reports for a table address. No access check is made here
/// (see [`check_fl_access`]) and memory is not changed.
pub fn walk_first_level<M: EntryMemory + ?Sized, T: TableTranslator + ?Sized>(
    mem: &M,
    tables: &mut T,
    p: &FlParams,
    root: u64,
    va: u64,
    start: Option<WalkStart>,
) -> Result<Walk, WalkFault> {
    let mut w = Walk::EMPTY;
    walk_first_level_into(mem, tables, p, root, va, start, &mut w)?;
    Ok(w)
}

/// [`walk_first_level`] writing its result into `out` (no copy of the result on the hot path).
#[inline]
pub fn walk_first_level_into<M: EntryMemory + ?Sized, T: TableTranslator + ?Sized>(
    mem: &M,
    tables: &mut T,
    p: &FlParams,
    root: u64,
    va: u64,
    start: Option<WalkStart>,
    out: &mut Walk,
) -> Result<(), WalkFault> {
    if !matches!(p.levels, 4 | 5) || start.is_some_and(|s| !(1..=p.levels).contains(&s.level)) {
        return Err(WalkFault::first(FaultReason::FirstLevelPointerInvalid, 0));
    }
    if !is_canonical(va, p.levels) {
        return Err(WalkFault::first(FaultReason::NonCanonical, 0));
    }
    let (mut level, mut table, mut rights, mut is_root) = match start {
        Some(s) => (s.level, s.table, s.rights, false),
        None => (p.levels, root, Rights::ALL, true),
    };
    let used = &mut out.used;
    let mut n = 0;
    loop {
        let (hpa, writable) = tables.table(table, level, is_root)?;
        // An error reading the root entry (through FLPTR) is 0x73; below it, 0x70.
        let access = if is_root {
            FaultReason::FirstLevelPointerInvalid
        } else {
            FaultReason::FirstLevelAccess
        };
        is_root = false;
        let addr = hpa
            .checked_add(level_index(va, level) * 8)
            .ok_or(WalkFault::first(access, level))?;
        let e = mem
            .load_entry(addr)
            .ok_or(WalkFault::first(access, level))?;
        if e & P == 0 {
            return Err(WalkFault::first(FaultReason::FirstLevelNotPresent, level));
        }
        if fl_reserved(e, level, p) {
            return Err(WalkFault::first(FaultReason::FirstLevelReserved, level));
        }
        used[n] = UsedEntry {
            addr,
            value: e,
            level,
            writable,
        };
        n += 1;
        rights.write &= e & RW != 0;
        rights.user_or_read &= e & US != 0;
        rights.exec &= e & XD == 0;
        let leaf = level == 1 || (level <= 3 && e & PS != 0);
        if leaf {
            let size = level_size(level);
            let pt = (level == 1).then(|| {
                let prev = rights_before_leaf(&used[..n]);
                WalkStart {
                    level: 1,
                    table,
                    rights: prev,
                }
            });
            out.output = e & ADDR_MASK & !(size - 1);
            out.page_size = size;
            out.leaf_level = level;
            out.rights = rights;
            out.used_len = n;
            out.pt = match (pt, start) {
                // Resumed walks report the resume point they were given.
                (Some(_), Some(s)) => Some(s),
                (pt, _) => pt,
            };
            out.leaf = e;
            return Ok(());
        }
        table = e & ADDR_MASK;
        level -= 1;
    }
}

fn rights_before_leaf(used: &[UsedEntry]) -> Rights {
    let mut r = Rights::ALL;
    for u in &used[..used.len() - 1] {
        r.write &= u.value & RW != 0;
        r.user_or_read &= u.value & US != 0;
        r.exec &= u.value & XD == 0;
    }
    r
}

/// Controls from the PASID entry that shape first-level access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlControls {
    /// Supervisor requests enabled.
    pub sre: bool,
    /// Write protect enable.
    pub wpe: bool,
    /// Execute requests supported (ECAP.ERS).
    pub ers: bool,
}

/// Checks a request against first-level rights, in the hardware's order: supervisor (0x5d),
/// execute enable (0x5c), user to supervisor page (0x81), execute-disabled (0x82), write (0x85).
pub fn check_fl_access(
    rights: Rights,
    write: bool,
    execute: bool,
    privileged: bool,
    c: FlControls,
) -> Result<(), FaultReason> {
    if privileged && !c.sre {
        return Err(FaultReason::SupervisorNotEnabled);
    }
    if execute && !c.ers {
        return Err(FaultReason::ExecuteNotEnabled);
    }
    if !privileged && !rights.user_or_read {
        return Err(FaultReason::UserToSupervisor);
    }
    if execute && !rights.exec {
        return Err(FaultReason::ExecuteDisabled);
    }
    if write && !rights.write && (!privileged || c.wpe) {
        return Err(FaultReason::NoWrite);
    }
    Ok(())
}

/// Outcome of an accessed/dirty update attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdUpdate {
    /// Every entry now has the bits it needs.
    Done,
    /// An entry changed since it was read: walk again.
    Changed,
}

/// The bits [`set_accessed_dirty`] wants in entry `i` of `walk`: A (first level: and EA when
/// `ea`), and D on the leaf when `write`.
#[inline(always)]
fn ad_bits_wanted(walk: &Walk, i: usize, write: bool, ea: bool, stage: Stage) -> u64 {
    let (a, d) = match stage {
        Stage::Second => (SL_A, SL_D),
        _ => (A | if ea { EA } else { 0 }, D),
    };
    a | if write && i + 1 == walk.used_len {
        d
    } else {
        0
    }
}

/// Sets the accessed bit (and EA when `ea`) on every used entry and the dirty bit on the leaf
/// when `write`, by compare-and-swap on memory. Entries that already have the bits are not
/// written.
///
/// # Errors
///
/// An entry that needs an update but whose table is not writable faults with 0x77 (nested)
/// at its level, before any entry is written. A compare-and-swap that cannot reach memory
/// faults with 0x91 (first level) or 0x78 (second level); the entries before it keep the
/// bits already set, as on hardware.
// Inlined: the common case, every entry already holding its bits once a page has been used,
// is then a test per entry in the walk; the updates are out of line.
#[inline(always)]
pub fn set_accessed_dirty<M: EntryMemory + ?Sized>(
    mem: &M,
    walk: &Walk,
    write: bool,
    ea: bool,
    stage: Stage,
) -> Result<AdUpdate, WalkFault> {
    let has = |i: usize, u: &UsedEntry| {
        let want = ad_bits_wanted(walk, i, write, ea, stage);
        u.value & want == want
    };
    if walk.used().iter().enumerate().all(|(i, u)| has(i, u)) {
        return Ok(AdUpdate::Done);
    }
    set_accessed_dirty_slow(mem, walk, write, ea, stage)
}

/// [`set_accessed_dirty`] when at least one entry needs a bit.
#[inline(never)]
fn set_accessed_dirty_slow<M: EntryMemory + ?Sized>(
    mem: &M,
    walk: &Walk,
    write: bool,
    ea: bool,
    stage: Stage,
) -> Result<AdUpdate, WalkFault> {
    let want = |i: usize| ad_bits_wanted(walk, i, write, ea, stage);
    // Only called with an entry to update (the caller found one), so the first pass only
    // checks that every table to be written is writable, before anything is written.
    for (i, u) in walk.used().iter().enumerate() {
        if u.value & want(i) != want(i) && !u.writable {
            return Err(WalkFault::first(FaultReason::NestedNoWriteEntry, u.level));
        }
    }
    let failed = match stage {
        Stage::Second => FaultReason::SecondLevelAccess,
        _ => FaultReason::FirstLevelAdUpdate,
    };
    for (i, u) in walk.used().iter().enumerate() {
        let want = want(i);
        if u.value & want == want {
            continue;
        }
        match mem.cas_entry(u.addr, u.value, u.value | want) {
            None => {
                return Err(WalkFault {
                    reason: failed,
                    stage,
                    level: u.level,
                })
            }
            Some(Err(_)) => return Ok(AdUpdate::Changed),
            Some(Ok(_)) => {}
        }
    }
    Ok(AdUpdate::Done)
}

/// Whether an update by [`set_accessed_dirty`] would write the entry `i` of `walk`.
pub(crate) fn needs_ad_update(walk: &Walk, i: usize, write: bool, ea: bool) -> bool {
    let want = ad_bits_wanted(walk, i, write, ea, Stage::First);
    walk.used()[i].value & want != want
}
