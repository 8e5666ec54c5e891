//! Nested translation against a reference: random stage-1 tables placed in guest memory and
//! random stage-2 mappings (including unmapped and read-only guest pages). The reference
//! resolves each guest-physical address through its own map of the stage-2 mappings and walks
//! the first level with the simple reference walker; the composed result and the faulting
//! stage must match.

mod common;

use std::collections::HashMap;

use common::{ref_check, MB};
use proptest::prelude::*;
use vsva_iommu::paging::{self, A, D};
use vsva_iommu::{
    Access, DeviceOptions, HostMemory, Iommu, IommuConfig, PasidEntry, S2Perms, SourceId, Stage,
};

/// Guest-physical space: 64 pages; tables live in the first 16.
const GPAGES: u64 = 64;
const TABLE_PAGES: u64 = 16;
/// Host pages backing the guest: [8 MiB, 8 MiB + 128 pages).
const HOST_BASE: u64 = 8 * MB;
/// A 2 MiB stage-2 page some requests draw: GPA [2 MiB, 4 MiB) → host [12 MiB, 14 MiB).
const BIG_GPA: u64 = 2 * MB;
const BIG_HOST: u64 = 12 * MB;
/// The part of that range requests reach (VA bits 20:12 are at most 3, the offset < 4 KiB).
const BIG_SMALL: u64 = 4 * 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S2 {
    None,
    R,
    /// Write-only: present, but neither a table nor a read may go through it.
    W,
    Rw,
}

fn s2_entry() -> impl Strategy<Value = (S2, u64)> {
    (
        prop_oneof![1 => Just(S2::None), 1 => Just(S2::R), 1 => Just(S2::W), 6 => Just(S2::Rw)],
        0u64..128,
    )
}

fn fl_entry() -> impl Strategy<Value = u64> {
    let random = prop::sample::subsequence(vec![1u64 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 63], 1..4)
        .prop_map(|v| v.into_iter().fold(0, |a, b| a | b));
    let flags = prop_oneof![3 => (any::<bool>(), any::<bool>()).prop_map(|(a, d)| 0b110 | u64::from(a) << 5 | u64::from(d) << 6), 1 => random];
    prop_oneof![
        1 => Just(0u64),
        16 => (0..TABLE_PAGES, flags.clone()).prop_map(|(p, f)| p << 12 | 1 | f),
        2 => (0..GPAGES, flags.clone()).prop_map(|(p, f)| p << 12 | 1 | f),
        1 => flags.clone().prop_map(|f| 1 << 21 | 1 | 1 << 7 | f),
        1 => flags.prop_map(|f| 0x4000_0000 | 1 | f),
    ]
}

/// Every guest table entry the tests write (indices 0..4 of each table page).
fn guest_tables(io: &Iommu) -> Vec<u64> {
    (0..TABLE_PAGES * 4)
        .map(|i| {
            io.memory()
                .load_u64(HOST_BASE + i / 4 * 4096 + i % 4 * 8)
                .unwrap()
        })
        .collect()
}

/// The stage-2 leaf of every mapped guest page.
fn stage2_leaves(io: &Iommu, root: u64, levels: u8, pages: &[u64]) -> Vec<u64> {
    let p = paging::SlParams {
        levels,
        haw: 48,
        sl_2m: true,
        sl_1g: true,
        slee: false,
        tm: true,
    };
    let snap = io.memory().snapshot();
    let m: &vm_memory::GuestMemoryMmap = &snap;
    pages
        .iter()
        .map(|&g| paging::walk_second_level(m, &p, root, g << 12, None).map_or(0, |w| w.leaf))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn nested_matches_reference(
        s2 in prop::collection::vec(s2_entry(), GPAGES as usize),
        fl in prop::collection::vec(prop::array::uniform4(fl_entry()), TABLE_PAGES as usize),
        root in 0..TABLE_PAGES,
        reqs in prop::collection::vec((prop::array::uniform5(0u64..4), 0u64..4096, 0u8..6), 24),
        ere in any::<bool>(),
        ssade in any::<bool>(),
        sre in any::<bool>(),
        five in any::<bool>(),
        big in 0u8..3,
    ) {
        let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
        let io = Iommu::new(IommuConfig { iotlb_entries: 256, ..IommuConfig::default() }, mem, 4 * MB, 4 * MB).unwrap();
        let sid = SourceId::new(0, 8, 0);
        io.attach_device(sid, DeviceOptions::default()).unwrap();
        let s2id = io.create_stage2(4).unwrap();
        // Stage 2: guest page g → host page HOST_BASE + h*4K. Distinct guest table pages get
        // distinct host pages (h is offset by the guest page) so tables do not alias.
        let mut map: HashMap<u64, (u64, S2)> = HashMap::new();
        for (g, &(perm, h)) in s2.iter().enumerate() {
            let g = g as u64;
            let hpa = HOST_BASE + ((g + h * GPAGES) % 128) * 4096;
            let hpa = if g < TABLE_PAGES { HOST_BASE + g * 4096 } else { hpa };
            let p = match perm {
                S2::None => continue,
                S2::R => S2Perms::R,
                S2::W => S2Perms { read: false, write: true, execute: false },
                S2::Rw => S2Perms::RW,
            };
            io.stage2_map(s2id, g << 12, hpa, 4096, p).unwrap();
            map.insert(g, (hpa, perm));
        }
        // The guest's 2 MiB page (GPA 2 MiB) lands in one 2 MiB stage-2 page (big = 1) or in
        // 4 KiB stage-2 pages covering the offsets requests use (big = 2).
        match big {
            1 => io.stage2_map(s2id, BIG_GPA, BIG_HOST, 2 * MB, S2Perms::RW).unwrap(),
            2 => io.stage2_map(s2id, BIG_GPA, BIG_HOST, BIG_SMALL, S2Perms::RW).unwrap(),
            _ => {}
        }
        // Guest tables: entries at indices 0..4 of each table page, written at their host page.
        for (t, entries) in fl.iter().enumerate() {
            for (i, &e) in entries.iter().enumerate() {
                io.memory().store_u64(HOST_BASE + t as u64 * 4096 + i as u64 * 8, e).unwrap();
            }
        }
        let (sroot, levels) = io.stage2_root(s2id).unwrap();
        let entry = PasidEntry { ere, ssade, sre, flpm: u8::from(five), ..PasidEntry::nested(9, root << 12, sroot, levels) };
        let mut mapped: Vec<u64> = map.keys().copied().collect();
        mapped.sort_unstable();
        io.set_pasid_entry(sid, 2, &entry).unwrap();
        for (round, &(idx, off, w)) in reqs.iter().enumerate().flat_map(|r| [r, r]) {
            let used = if five { 5 } else { 4 };
            let va = idx.iter().take(used).enumerate().fold(off, |a, (l, i)| a | i << (12 + 9 * l));
            let access = match w % 3 {
                0 => Access::READ,
                1 => Access::WRITE,
                _ => Access::EXEC,
            };
            let access = if w >= 3 { access.privileged() } else { access };
            let read = |a: u64| io.memory().load_u64(a).ok();
            let fl_levels = if five { 5 } else { 4 };
            let want = ref_nested(&read, (&map, big), (root << 12, fl_levels), va, access, (ere, sre));
            let before = guest_tables(&io);
            let s2_before = stage2_leaves(&io, sroot, levels, &mapped);
            let got = io.translate(sid, Some(2), va, access)
                .map(|t| (t.host_addr, t.page_size))
                .map_err(|f| (f.reason.code(), f.stage));
            prop_assert_eq!(got, want, "req {} va {:#x} write {}", round, va, w);
            if got.is_err() {
                prop_assert_eq!(guest_tables(&io), before, "a faulting request changed A/D bits");
                prop_assert_eq!(
                    stage2_leaves(&io, sroot, levels, &mapped),
                    s2_before,
                    "a faulting request changed stage-2 A/D bits"
                );
            }
        }
    }
}

/// Reference nested walk (4- or 5-level first level, no WPE, no SLEE): every table address and the
/// output go through `map` (guest page → host page, permission). A table is read only through
/// a readable stage-2 page; execute requests need ERE, supervisor requests SRE.
fn ref_nested(
    read: &dyn Fn(u64) -> Option<u64>,
    (map, big): (&HashMap<u64, (u64, S2)>, u8),
    (root, levels): (u64, u8),
    va: u64,
    access: Access,
    (ere, sre): (bool, bool),
) -> Result<(u64, u64), (u8, Stage)> {
    let (write, exec) = (access.write, access.execute);
    let sl = |gpa: u64| -> Option<(u64, S2)> {
        let big_len = [0, 2 * MB, BIG_SMALL][usize::from(big)];
        if (BIG_GPA..BIG_GPA + big_len).contains(&gpa) {
            return Some((BIG_HOST + gpa - BIG_GPA, S2::Rw));
        }
        if gpa >= GPAGES << 12 {
            return None;
        }
        map.get(&(gpa >> 12)).map(|&(h, p)| (h | (gpa & 0xfff), p))
    };
    let s2_page = |gpa: u64| {
        if big == 1 && gpa >= BIG_GPA {
            2 * MB
        } else {
            4096
        }
    };
    let (mut wr, mut us, mut nx) = (true, true, false);
    let mut ad_ro = false;
    let mut table = root;
    for level in (1..=levels).rev() {
        let no_read = (if level == levels { 0x75 } else { 0x76 }, Stage::Second);
        let Some((h, perm)) = sl(table) else {
            return Err(no_read);
        };
        if perm == S2::W {
            return Err(no_read);
        }
        let e = read(h + ((va >> (12 + 9 * (u64::from(level) - 1))) & 511) * 8)
            .expect("host page backed");
        if e & 1 == 0 {
            return Err((0x71, Stage::First));
        }
        let addr = e & 0x000f_ffff_ffff_f000;
        let ps = e & (1 << 7) != 0;
        if addr >> 48 != 0 || (level >= 4 && ps) {
            return Err((0x72, Stage::First));
        }
        wr &= e & 2 != 0;
        us &= e & 4 != 0;
        nx |= e >> 63 != 0;
        let leaf = level == 1 || (level <= 3 && ps);
        if leaf {
            let size = 1u64 << (12 + 9 * (u64::from(level) - 1));
            let low_reserved = match level {
                3 => (e >> 13) & 0x1_ffff,
                2 => (e >> 13) & 0xff,
                _ => 0,
            };
            if low_reserved != 0 {
                return Err((0x72, Stage::First));
            }
            if perm == S2::R && (e & A == 0 || (write && e & D == 0)) {
                ad_ro = true;
            }
            if let Some(code) =
                ref_check(wr, us, !nx, write, exec, access.privileged, sre, false, ere)
            {
                return Err((code, Stage::First));
            }
            let gpa = (addr & !(size - 1)) | (va & (size - 1));
            return match sl(gpa) {
                None => Err((0x79, Stage::Second)),
                Some((_, S2::R)) if write => Err((0x85, Stage::Second)),
                Some((_, S2::W)) if !write => Err((0x86, Stage::Second)),
                Some(_) if ad_ro => Err((0x77, Stage::First)),
                Some((h, _)) => Ok((h, size.min(s2_page(gpa)))),
            };
        }
        if perm == S2::R && e & A == 0 {
            ad_ro = true;
        }
        table = addr;
    }
    unreachable!("level 1 is always a leaf")
}

#[test]
fn accessed_bits_written_through_stage2() {
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
    let io = Iommu::new(IommuConfig::default(), mem, 4 * MB, 4 * MB).unwrap();
    let sid = SourceId::new(0, 8, 0);
    io.attach_device(sid, DeviceOptions::default()).unwrap();
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0, HOST_BASE, 16 * 4096, S2Perms::RW)
        .unwrap();
    // Guest tables at GPA 0 (PML4), 0x1000, 0x2000, 0x3000 (PT) mapping VA 0 → GPA 0x5000.
    for (g, next) in [
        (0u64, 0x1000u64),
        (0x1000, 0x2000),
        (0x2000, 0x3000),
        (0x3000, 0x5000),
    ] {
        io.memory().store_u64(HOST_BASE + g, next | 0b111).unwrap();
    }
    let (r, l) = io.stage2_root(s2).unwrap();
    io.set_pasid_entry(sid, 1, &PasidEntry::nested(1, 0, r, l))
        .unwrap();
    let t = io.translate(sid, Some(1), 0x10, Access::WRITE).unwrap();
    assert_eq!(t.host_addr, HOST_BASE + 0x5010);
    for g in [0u64, 0x1000, 0x2000] {
        assert_eq!(io.memory().load_u64(HOST_BASE + g).unwrap() & (A | D), A);
    }
    assert_eq!(
        io.memory().load_u64(HOST_BASE + 0x3000).unwrap() & (A | D),
        A | D
    );
    let _ = paging::SIZE_4K;
}
