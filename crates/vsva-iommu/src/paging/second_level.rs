//! The second-level (stage 2) walk.

use super::*;

/// Parameters of a second-level walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlParams {
    /// 3, 4 or 5 levels.
    pub levels: u8,
    /// Host address width.
    pub haw: u8,
    /// 2 MiB pages allowed.
    pub sl_2m: bool,
    /// 1 GiB pages allowed.
    pub sl_1g: bool,
    /// The PASID entry's SLEE: X is honoured (and counts for presence) only when set.
    pub slee: bool,
    /// Device TLBs supported (ECAP.DT): bit 62 of a leaf is TM (transient mapping, ignored
    /// by the walk). Without them TM is Reserved(0) and a leaf with it set faults 0x7a.
    pub tm: bool,
}

impl SlParams {
    /// Input width in bits.
    pub fn width(&self) -> u8 {
        crate::regs::sl_width(self.levels)
    }
}

/// Walks the second-level table at `root` (or resumed at `start`) for guest-physical `gpa`.
/// `rights` of the result: `user_or_read` = R, `write` = W, `exec` = X at every level.
///
/// Faults (stage Second): 0x7b when `p.levels` is not 3, 4 or 5, 0x78 entry outside memory,
/// 0x79 not present (R = W = 0, and X = 0 or SLEE clear), 0x7a reserved bits (in a non-leaf
/// entry, address bits 51:HAW among them; in a leaf, TM when `p.tm` is clear), 0x84 a leaf whose output address is at or above
/// HAW ("second-level entry address beyond the max"). The caller checks that `gpa` fits the
/// input width and the request's permissions.
pub fn walk_second_level<M: EntryMemory + ?Sized>(
    mem: &M,
    p: &SlParams,
    root: u64,
    gpa: u64,
    start: Option<WalkStart>,
) -> Result<Walk, WalkFault> {
    let mut w = Walk::EMPTY;
    walk_second_level_into(mem, p, root, gpa, start, &mut w)?;
    Ok(w)
}

/// [`walk_second_level`] writing its result into `out`.
#[inline]
pub fn walk_second_level_into<M: EntryMemory + ?Sized>(
    mem: &M,
    p: &SlParams,
    root: u64,
    gpa: u64,
    start: Option<WalkStart>,
    out: &mut Walk,
) -> Result<(), WalkFault> {
    let (mut level, mut table, mut rights) = match start {
        Some(s) => (s.level, s.table, s.rights),
        None => (p.levels, root, Rights::ALL),
    };
    if !(3..=5).contains(&p.levels) || start.is_some_and(|s| !(1..=p.levels).contains(&s.level)) {
        return Err(WalkFault::second(FaultReason::SecondLevelPointerInvalid, 0));
    }
    let used = &mut out.used;
    let mut n = 0;
    loop {
        let addr = table
            .checked_add(level_index(gpa, level) * 8)
            .ok_or(WalkFault::second(FaultReason::SecondLevelAccess, level))?;
        let e = mem
            .load_entry(addr)
            .ok_or(WalkFault::second(FaultReason::SecondLevelAccess, level))?;
        let present = SL_R | SL_W | if p.slee { SL_X } else { 0 };
        if e & present == 0 {
            return Err(WalkFault::second(FaultReason::SecondLevelPermission, level));
        }
        let ps = e & SL_PS != 0;
        let leaf = level == 1 || (ps && level <= 3);
        let reserved = if leaf {
            // TM is Reserved(0) without device TLBs.
            let tm = !p.tm && e & SL_TM != 0;
            tm || match level {
                3 => !p.sl_1g || e & 0x3fff_f000 != 0,
                2 => !p.sl_2m || e & 0x1f_f000 != 0,
                _ => false,
            }
        } else {
            // Bits 6:3 of a non-leaf entry are ignored.
            ps || e & SL_NONLEAF_RSVD != 0 || (e & ADDR_MASK) >> p.haw != 0
        };
        if reserved {
            return Err(WalkFault::second(FaultReason::SecondLevelReserved, level));
        }
        used[n] = UsedEntry {
            addr,
            value: e,
            level,
            writable: true,
        };
        n += 1;
        let before = rights;
        rights.user_or_read &= e & SL_R != 0;
        rights.write &= e & SL_W != 0;
        rights.exec &= !p.slee || e & SL_X != 0;
        if leaf {
            if (e & ADDR_MASK) >> p.haw != 0 {
                return Err(WalkFault::second(FaultReason::OutputBeyondMax, level));
            }
            let size = level_size(level);
            out.pt = (level == 1).then_some(WalkStart {
                level: 1,
                table,
                rights: before,
            });
            out.output = e & ADDR_MASK & !(size - 1);
            out.page_size = size;
            out.leaf_level = level;
            out.rights = rights;
            out.used_len = n;
            out.leaf = e;
            return Ok(());
        }
        table = e & ADDR_MASK;
        level -= 1;
    }
}
