//! The demo's two pictures, as text: the two-stage walk a PASID-tagged DMA takes (guest
//! virtual → the guest's first-level tables, each table itself found through stage 2 → guest
//! physical → stage 2 → the shared memory), and the stale IOTLB entry that keeps serving an
//! unmapped page until the guest invalidates it.
//!
//! The walk is read from the guest's real tables with the IOMMU's own walker (the one
//! `pgwalk --trace` draws), so the picture shows what the device's DMA went through.

use vm_memory::GuestMemoryMmap;
use vsva_iommu::paging::FlParams;

use crate::pgwalk::watched_walk;

/// Every line of a picture starts with this, to sit under the step's text.
const INDENT: &str = "      ";

/// The two-stage walk of `va` (PASID `pasid`) from the guest table at `root`, with stage 2
/// mapping guest-physical `gpa` to offset `gpa - ram_base` of the shared memory.
pub(crate) fn two_stage_walk(
    mem: &GuestMemoryMmap,
    root: u64,
    va: u64,
    pasid: u32,
    ram_base: u64,
) -> String {
    let p = FlParams {
        levels: 4,
        haw: 48,
        fl1gp: true,
    };
    let (visited, result) = watched_walk(mem, &p, root, va);
    let mut lines = vec![
        format!("guest virtual {va:#x}, PASID {pasid}"),
        format!(
            "  {:<34}  stage 2 (MAP_DMA, 1:1) → shared memory",
            "first level: the guest's tables"
        ),
    ];
    for v in &visited {
        let entry = format!("{} in table {:#x}", v.name, v.table);
        lines.push(format!(
            "  {entry:<34}  {:#x} → offset {:#x}",
            v.table,
            v.table - ram_base
        ));
    }
    match result {
        Ok(w) => {
            let gpa = w.translate(va);
            lines.push(format!(
                "  {:<34}  {gpa:#x} → offset {:#x}: the data",
                format!("= guest physical {gpa:#x}"),
                gpa - ram_base
            ));
        }
        Err(f) => lines.push(format!(
            "  walk stops: fault {:#04x} ({}) at level {}",
            f.reason.code(),
            f.reason.describe(),
            f.level
        )),
    }
    indent(&lines)
}

/// The stale IOTLB entry: the guest cleared the PTE of `va` (which mapped `gpa`), the IOTLB
/// still holds the translation, and the device's read `read` came from the old page.
pub(crate) fn stale_iotlb(pasid: u32, va: u64, gpa: u64, pte: &str, read: &str) -> String {
    indent(&[
        format!("guest table  {pte} = 0 (not present)           ← changed in memory"),
        format!("IOTLB        PASID {pasid}, {va:#x} → {gpa:#x}   ← still cached"),
        format!("device read  IOTLB hit → {gpa:#x} → {read:?}"),
        "until CACHE_INVLD drops the entry, the IOMMU never looks at the table again".to_owned(),
    ])
}

fn indent(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("{INDENT}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    /// A 4-level table at 0x1000.. mapping `va` → 0x40_0000 in 1 MiB of memory at 0.
    fn tables(va: u64) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let idx = |l: u32| (va >> (12 + 9 * (l - 1))) & 511;
        let set = |a: u64, v: u64| mem.write_obj(v, GuestAddress(a)).unwrap();
        set(0x1000 + idx(4) * 8, 0x2000 | 7);
        set(0x2000 + idx(3) * 8, 0x3000 | 7);
        set(0x3000 + idx(2) * 8, 0x4000 | 7);
        set(0x4000 + idx(1) * 8, 0x40_0000 | 7);
        mem
    }

    #[test]
    fn the_walk_picture_names_every_table_and_the_data() {
        let va = 0x7f00_1234_0000;
        let pic = two_stage_walk(&tables(va), 0x1000, va, 1, 0);
        let lines: Vec<&str> = pic.lines().collect();
        assert_eq!(lines.len(), 7, "{pic}");
        assert!(lines[0].trim() == "guest virtual 0x7f0012340000, PASID 1");
        assert!(
            lines[2].contains("PML4[254] in table 0x1000")
                && lines[2].contains("0x1000 → offset 0x1000"),
            "{pic}"
        );
        assert!(lines[5].contains("PT[320] in table 0x4000"), "{pic}");
        assert!(
            lines[6].contains("= guest physical 0x400000")
                && lines[6].contains("offset 0x400000: the data"),
            "{pic}"
        );
    }

    #[test]
    fn a_walk_that_faults_says_where() {
        let va = 0x7f00_1234_0000;
        let pic = two_stage_walk(&tables(va), 0x1000, va + 0x1000, 1, 0);
        assert!(pic.contains("walk stops: fault 0x71"), "{pic}");
        assert!(pic.contains("PT[321]"), "{pic}");
    }

    #[test]
    fn the_stale_picture_says_what_is_cached() {
        let pic = stale_iotlb(1, 0x7f00_1234_0000, 0x40_0000, "PT[320]", "hello");
        assert!(pic.contains("PASID 1, 0x7f0012340000 → 0x400000"), "{pic}");
        assert!(pic.contains("\"hello\""), "{pic}");
    }
}
