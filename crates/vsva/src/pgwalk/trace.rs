//! `vsva pgwalk --trace`: the walk drawn level by level, the way a person reads it —
//! `PML4[254] → PDPT[0] → PD[0] → PT[1]`, each entry with its address, value and flags, then
//! the page it maps or the fault that stopped it.
//!
//! The walk itself is the IOMMU's (`walk_first_level`); this file only watches it: every
//! entry the walker loads goes through [`Watched`], which records it, so a walk that faults
//! is drawn up to the entry that failed.

use std::cell::RefCell;
use std::io::{self, Write};

use vm_memory::GuestMemoryMmap;
use vsva_iommu::memory::EntryMemory;
use vsva_iommu::paging::{
    level_index, level_size, walk_first_level, FlParams, Identity, Walk, WalkFault, A, ADDR_MASK,
    D, G, P, PCD, PS, PWT, RW, US, XD,
};

/// The name of the table whose entries are at `level` (5 → `PML5` … 1 → `PT`).
fn table_name(level: u8) -> &'static str {
    match level {
        5 => "PML5",
        4 => "PML4",
        3 => "PDPT",
        2 => "PD",
        _ => "PT",
    }
}

/// The flags set in a first-level entry, in bit order (`P RW US A D PS XD`).
pub(super) fn flags(e: u64) -> String {
    const NAMES: [(u64, &str); 10] = [
        (P, "P"),
        (RW, "RW"),
        (US, "US"),
        (PWT, "PWT"),
        (PCD, "PCD"),
        (A, "A"),
        (D, "D"),
        (PS, "PS"),
        (G, "G"),
        (XD, "XD"),
    ];
    let set: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| e & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "-".to_owned()
    } else {
        set.join(" ")
    }
}

/// A page size in words: `4 KiB`, `2 MiB`, `1 GiB`.
fn size_name(size: u64) -> String {
    match size {
        s if s >= 1 << 30 => format!("{} GiB", s >> 30),
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}

/// Entry memory that records every entry loaded, in order.
struct Watched<'a> {
    mem: &'a GuestMemoryMmap,
    loads: RefCell<Vec<(u64, u64)>>,
}

impl EntryMemory for Watched<'_> {
    fn load_entry(&self, addr: u64) -> Option<u64> {
        let v = self.mem.load_entry(addr)?;
        self.loads.borrow_mut().push((addr, v));
        Some(v)
    }

    fn cas_entry(&self, addr: u64, current: u64, new: u64) -> Option<Result<u64, u64>> {
        self.mem.cas_entry(addr, current, new)
    }
}

/// One entry a walk read: where (a table name with its index, `PML4[254]`), the table's
/// address, the entry's address and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Visited {
    pub(crate) name: String,
    pub(crate) table: u64,
    pub(crate) addr: u64,
    pub(crate) value: u64,
}

/// Walks `va` from `root` with the IOMMU's walker (tables at the addresses they name) and
/// returns every entry it read, root first, with the outcome.
pub(crate) fn watched_walk(
    mem: &GuestMemoryMmap,
    p: &FlParams,
    root: u64,
    va: u64,
) -> (Vec<Visited>, Result<Walk, WalkFault>) {
    let watched = Watched {
        mem,
        loads: RefCell::new(Vec::new()),
    };
    let result = walk_first_level(&watched, &mut Identity, p, root, va, None);
    let visited = watched
        .loads
        .into_inner()
        .into_iter()
        .enumerate()
        .map(|(i, (addr, value))| {
            let level = p.levels - i as u8;
            Visited {
                name: format!("{}[{}]", table_name(level), level_index(va, level)),
                table: addr & !0xfff,
                addr,
                value,
            }
        })
        .collect();
    (visited, result)
}

/// Writes the drawing of the walk of `va` from `root`.
pub(super) fn draw(
    out: &mut impl Write,
    mem: &GuestMemoryMmap,
    p: &FlParams,
    root: u64,
    va: u64,
) -> io::Result<()> {
    let (visited, result) = watched_walk(mem, p, root, va);
    writeln!(out, "va {va:#x} ({}-level, root {root:#x})", p.levels)?;
    if !visited.is_empty() {
        let path: Vec<&str> = visited.iter().map(|v| v.name.as_str()).collect();
        writeln!(out, "  {}", path.join(" → "))?;
    }
    for (i, v) in visited.iter().enumerate() {
        let level = p.levels - i as u8;
        let e = v.value;
        let next = if e & P == 0 {
            "not present".to_owned()
        } else if level == 1 || (level <= 3 && e & PS != 0) {
            let size = level_size(level);
            format!(
                "{} page {:#x}",
                size_name(size),
                e & ADDR_MASK & !(size - 1)
            )
        } else {
            format!("table {:#x}", e & ADDR_MASK)
        };
        writeln!(
            out,
            "  {:<10} @ {:#x}+{:#05x} = {e:#018x}  {:<20} → {next}",
            v.name,
            v.table,
            v.addr - v.table,
            flags(e)
        )?;
    }
    match result {
        Ok(w) => writeln!(
            out,
            "  = pa {:#x}, {} page, {}{}{}",
            w.translate(va),
            size_name(w.page_size),
            if w.rights.write {
                "writable"
            } else {
                "read-only"
            },
            if w.rights.user_or_read {
                ", user"
            } else {
                ", supervisor"
            },
            if w.rights.exec {
                ", executable"
            } else {
                ", no-execute"
            },
        ),
        Err(f) => writeln!(
            out,
            "  fault {:#04x} at level {}: {}",
            f.reason.code(),
            f.level,
            f.reason.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_the_bits_set() {
        assert_eq!(flags(0), "-");
        assert_eq!(flags(P | RW | US | A), "P RW US A");
        assert_eq!(flags(P | PS | D | XD), "P D PS XD");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size_name(4096), "4 KiB");
        assert_eq!(size_name(2 << 20), "2 MiB");
        assert_eq!(size_name(1 << 30), "1 GiB");
    }
}
