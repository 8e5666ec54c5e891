//! Shared helpers for the integration tests: a deliberately simple reference first-level walk,
//! written from the VT-d first-level paging rules without using the crate's walker.

#![allow(dead_code)]

pub const MB: u64 = 1 << 20;

/// What the reference says about a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefResult {
    /// Output address, page size, writable, user, executable.
    Ok {
        pa: u64,
        size: u64,
        w: bool,
        u: bool,
        x: bool,
    },
    /// Fault code and level.
    Fault { code: u8, level: u8 },
}

/// Reference walk. `read` returns `None` for addresses with no memory.
pub fn ref_walk(
    read: &dyn Fn(u64) -> Option<u64>,
    root: u64,
    va: u64,
    levels: u8,
    haw: u8,
    fl1gp: bool,
) -> RefResult {
    let top = if levels == 5 { 56 } else { 47 };
    let sign = (va >> top) & 1;
    for bit in top + 1..64 {
        if (va >> bit) & 1 != sign {
            return RefResult::Fault {
                code: 0x80,
                level: 0,
            };
        }
    }
    let (mut w, mut u, mut x) = (true, true, true);
    let mut table = root;
    let mut level = levels;
    loop {
        let idx = (va >> (12 + 9 * (u64::from(level) - 1))) & 511;
        let Some(e) = read(table + idx * 8) else {
            return RefResult::Fault { code: 0x70, level };
        };
        if e & 1 == 0 {
            return RefResult::Fault { code: 0x71, level };
        }
        let addr = e & 0x000f_ffff_ffff_f000;
        let ps = (e >> 7) & 1 == 1;
        if addr >> haw != 0 || (level >= 4 && ps) {
            return RefResult::Fault { code: 0x72, level };
        }
        w = w && (e >> 1) & 1 == 1;
        u = u && (e >> 2) & 1 == 1;
        x = x && (e >> 63) == 0;
        if level == 3 && ps {
            if !fl1gp || (e >> 13) & 0x1_ffff != 0 {
                return RefResult::Fault { code: 0x72, level };
            }
            let size = 1 << 30;
            return RefResult::Ok {
                pa: (addr & !(size - 1)) | (va & (size - 1)),
                size,
                w,
                u,
                x,
            };
        }
        if level == 2 && ps {
            if (e >> 13) & 0xff != 0 {
                return RefResult::Fault { code: 0x72, level };
            }
            let size = 1 << 21;
            return RefResult::Ok {
                pa: (addr & !(size - 1)) | (va & (size - 1)),
                size,
                w,
                u,
                x,
            };
        }
        if level == 1 {
            return RefResult::Ok {
                pa: addr | (va & 0xfff),
                size: 4096,
                w,
                u,
                x,
            };
        }
        table = addr;
        level -= 1;
    }
}

/// Reference access check for a successful walk: returns the fault code, if any.
#[allow(clippy::too_many_arguments)]
pub fn ref_check(
    w: bool,
    u: bool,
    x: bool,
    write: bool,
    exec: bool,
    privileged: bool,
    sre: bool,
    wpe: bool,
    ere: bool,
) -> Option<u8> {
    if privileged && !sre {
        return Some(0x5d);
    }
    if exec && !ere {
        return Some(0x5c);
    }
    if !privileged && !u {
        return Some(0x81);
    }
    if exec && !x {
        return Some(0x82);
    }
    if write && !w && (!privileged || wpe) {
        return Some(0x85);
    }
    None
}

/// Does `[pa_page, pa_page + size)` touch the interrupt range?
pub fn in_interrupt_range(pa: u64, size: u64) -> bool {
    let base = pa & !(size - 1);
    base <= 0xfeef_ffff && base + size > 0xfee0_0000
}
