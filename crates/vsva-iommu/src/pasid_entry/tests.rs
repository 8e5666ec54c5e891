//! The PASID-table entry's unit tests.

use super::*;

fn full() -> PasidEntry {
    PasidEntry {
        fpd: true,
        aw: 2,
        pgtt: Pgtt::Nested,
        slee: true,
        ssade: true,
        ssptptr: 0x1234_5000,
        did: 0xbeef,
        pwsnp: true,
        pgsnp: true,
        cd: true,
        emte: true,
        emt: 6,
        pwt: true,
        pcd: true,
        pat: 0x0706_0504,
        sre: true,
        ere: true,
        flpm: 1,
        wpe: true,
        nxe: true,
        smep: true,
        eafe: true,
        flptr: 0xabc_d000,
    }
}

#[test]
fn every_field_lands_on_its_bits() {
    let v = full().to_raw();
    assert_eq!(
        v[0],
        1 | 1 << 1 | 2 << 2 | 1 << 5 | 3 << 6 | 1 << 9 | 0x1234_5000
    );
    assert_eq!(
        v[1],
        0xbeef
            | 1 << 23
            | 1 << 24
            | 1 << 25
            | 1 << 26
            | 6 << 27
            | 1 << 30
            | 1 << 31
            | 0x0706_0504 << 32
    );
    assert_eq!(
        v[2],
        1 | 1 << 1 | 1 << 2 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 0xabc_d000
    );
    assert_eq!(&v[3..], &[0; 5]);
    assert_eq!(PasidEntry::from_raw(&v), Ok(full()));
}

#[test]
fn cached_decode_matches_full_decode() {
    for e in [
        full(),
        PasidEntry::first_level(3, 0x5000),
        PasidEntry::pass_through(9),
    ] {
        let v = e.to_raw();
        let c = CachedEntry::decode(v[0], v[1], v[2]);
        assert_eq!(c, e.cached());
        assert_eq!(
            (c.pgtt, c.did(), CachedEntry::did_of(v[1])),
            (e.pgtt, e.did, e.did)
        );
        assert_eq!(
            (c.aw(), c.slee(), c.ssade(), c.ssptptr()),
            (e.aw, e.slee, e.ssade, e.ssptptr)
        );
        assert_eq!(
            (c.sre(), c.ere(), c.flpm(), c.wpe()),
            (e.sre, e.ere, e.flpm, e.wpe)
        );
        assert_eq!((c.eafe(), c.flptr()), (e.eafe, e.flptr));
        assert_eq!(
            (c.fl_levels(), c.sl_levels()),
            (e.fl_levels(), e.sl_levels())
        );
    }
}

#[test]
fn decode_errors_carry_the_vtd_reason() {
    let mut v = full().to_raw();
    v[0] &= !1;
    assert_eq!(
        PasidEntry::from_raw(&v).unwrap_err().reason,
        FaultReason::PasidEntryNotPresent
    );
    for (word, bit) in [(0, 10), (0, 11), (1, 16), (2, 8), (2, 11), (3, 0), (7, 63)] {
        let mut v = full().to_raw();
        v[word] |= 1 << bit;
        let e = PasidEntry::from_raw(&v).unwrap_err();
        assert_eq!(
            e.reason,
            FaultReason::PasidEntryReserved,
            "word {word} bit {bit}"
        );
    }
    let mut v = full().to_raw();
    v[0] = v[0] & !(7 << 6) | 5 << 6;
    let e = PasidEntry::from_raw(&v).unwrap_err();
    assert_eq!(
        (e.reason, e.field, e.value),
        (FaultReason::PasidEntryInvalid, "PGTT", 5)
    );
    let mut v = full().to_raw();
    v[2] |= 2 << 2;
    assert_eq!(PasidEntry::from_raw(&v).unwrap_err().field, "FLPM");
}

#[test]
fn validation_against_capabilities() {
    let cfg = IommuConfig::default();
    let mut e = full();
    e.aw = 3; // 5-level second level, not in default SAGAW
    assert_eq!(e.validate(&cfg).unwrap_err().field, "AW");
    e.aw = 2;
    e.validate(&cfg).unwrap();
    let no_nest = IommuConfig {
        nesting: false,
        ..cfg.clone()
    };
    assert_eq!(e.validate(&no_nest).unwrap_err().field, "PGTT");
    let no_srs = IommuConfig {
        srs: false,
        ..cfg.clone()
    };
    assert_eq!(e.validate(&no_srs).unwrap_err().field, "SRE");
    let no_ers = IommuConfig {
        ers: false,
        ..cfg.clone()
    };
    assert_eq!(e.validate(&no_ers).unwrap_err().field, "ERE");
    let no5 = IommuConfig {
        fl5lp: false,
        ..cfg.clone()
    };
    assert_eq!(e.validate(&no5).unwrap_err().field, "FLPM");
    let mut big = full();
    big.ssptptr = 1 << 50;
    assert_eq!(
        big.validate(&cfg).unwrap_err().reason,
        FaultReason::SecondLevelPointerInvalid
    );
    let mut big = PasidEntry::first_level(1, 1 << 49);
    assert_eq!(
        big.validate(&cfg).unwrap_err().reason,
        FaultReason::FirstLevelPointerInvalid
    );
    big.flptr = 0x1000;
    big.validate(&cfg).unwrap();
    let small_did = IommuConfig {
        domain_bits: 8,
        ..cfg
    };
    assert_eq!(full().validate(&small_did).unwrap_err().field, "DID");
    assert_eq!(PasidEntry::second_level(1, 0x1000, 4).sl_levels(), 4);
    assert_eq!(PasidEntry::pass_through(1).pgtt, Pgtt::PassThrough);
}

/// The scalable-mode PASID-table entry as the VT-d specification lays it out (chapter 9,
/// "Scalable-Mode PASID Table Entry"): each field's first bit in the 512-bit entry and its
/// width. Every bit not listed is reserved.
const LAYOUT: &[(&str, u32, u32)] = &[
    ("P", 0, 1),
    ("FPD", 1, 1),
    ("AW", 2, 3),
    ("SLEE", 5, 1),
    ("PGTT", 6, 3),
    ("SLADE", 9, 1),
    ("SSPTPTR", 12, 52),
    ("DID", 64, 16),
    ("PWSNP", 87, 1),
    ("PGSNP", 88, 1),
    ("CD", 89, 1),
    ("EMTE", 90, 1),
    ("EMT", 91, 3),
    ("PWT", 94, 1),
    ("PCD", 95, 1),
    ("PAT", 96, 32),
    ("SRE", 128, 1),
    ("ERE", 129, 1),
    ("FLPM", 130, 2),
    ("WPE", 132, 1),
    ("NXE", 133, 1),
    ("SMEP", 134, 1),
    ("EAFE", 135, 1),
    ("FLPTR", 140, 52),
];

/// A field of `v` by its name in [`LAYOUT`].
fn spec_field(v: &[u64; 8], name: &str) -> u64 {
    let &(_, lo, bits) = LAYOUT.iter().find(|f| f.0 == name).unwrap();
    (v[lo as usize / 64] >> (lo % 64)) & ((1u64 << bits) - 1)
}

/// The defined bits of each word, from [`LAYOUT`].
fn spec_defined() -> [u64; 8] {
    let mut m = [0u64; 8];
    for &(_, lo, bits) in LAYOUT {
        m[lo as usize / 64] |= ((1u64 << bits) - 1) << (lo % 64);
    }
    m
}

/// The reference decode, from the layout: (reason, value) of the first rule broken (P,
/// reserved bits word by word, PGTT in 1..=4, FLPM in 0..=1), or `None`.
fn spec_rejects(v: &[u64; 8]) -> Option<(FaultReason, u64)> {
    if spec_field(v, "P") == 0 {
        return Some((FaultReason::PasidEntryNotPresent, 0));
    }
    let defined = spec_defined();
    if let Some(i) = (0..8).find(|&i| v[i] & !defined[i] != 0) {
        return Some((FaultReason::PasidEntryReserved, v[i] & !defined[i]));
    }
    let pgtt = spec_field(v, "PGTT");
    if !(1..=4).contains(&pgtt) {
        return Some((FaultReason::PasidEntryInvalid, pgtt));
    }
    let flpm = spec_field(v, "FLPM");
    (flpm > 1).then_some((FaultReason::PasidEntryInvalid, flpm))
}

/// Every field of a decoded entry, by its name in [`LAYOUT`] (P is implied).
fn decoded_fields(e: &PasidEntry) -> Vec<(&'static str, u64)> {
    vec![
        ("FPD", u64::from(e.fpd)),
        ("AW", u64::from(e.aw)),
        ("SLEE", u64::from(e.slee)),
        ("PGTT", e.pgtt as u64),
        ("SLADE", u64::from(e.ssade)),
        ("SSPTPTR", e.ssptptr >> 12),
        ("DID", u64::from(e.did)),
        ("PWSNP", u64::from(e.pwsnp)),
        ("PGSNP", u64::from(e.pgsnp)),
        ("CD", u64::from(e.cd)),
        ("EMTE", u64::from(e.emte)),
        ("EMT", u64::from(e.emt)),
        ("PWT", u64::from(e.pwt)),
        ("PCD", u64::from(e.pcd)),
        ("PAT", u64::from(e.pat)),
        ("SRE", u64::from(e.sre)),
        ("ERE", u64::from(e.ere)),
        ("FLPM", u64::from(e.flpm)),
        ("WPE", u64::from(e.wpe)),
        ("NXE", u64::from(e.nxe)),
        ("SMEP", u64::from(e.smep)),
        ("EAFE", u64::from(e.eafe)),
        ("FLPTR", e.flptr >> 12),
    ]
}

/// The reference of `validate`: the capability rules in the hardware's order, written
/// from the fields' meaning, as (reason, field) of the first broken one.
fn spec_invalid(e: &PasidEntry, cfg: &IommuConfig) -> Option<(FaultReason, &'static str)> {
    let inv = FaultReason::PasidEntryInvalid;
    let fl = matches!(e.pgtt, Pgtt::FirstLevel | Pgtt::Nested);
    let sl = matches!(e.pgtt, Pgtt::SecondLevel | Pgtt::Nested);
    let sl_levels = u32::from(e.aw) + 2;
    let haw = u32::from(cfg.mgaw.min(52));
    let fl_limit = if e.pgtt == Pgtt::Nested {
        (12 + 9 * sl_levels).min(haw)
    } else {
        haw
    };
    let rules = [
        (e.sre && !cfg.srs, FaultReason::PasidEntryReserved, "SRE"),
        (u64::from(e.did) >= 1 << cfg.domain_bits, inv, "DID"),
        (e.pgtt == Pgtt::Nested && !cfg.nesting, inv, "PGTT"),
        (
            e.pgtt == Pgtt::PassThrough && !cfg.pass_through,
            inv,
            "PGTT",
        ),
        (
            sl && (!(1..=3).contains(&e.aw) || !cfg.sagaw_levels.contains(&(sl_levels as u8))),
            inv,
            "AW",
        ),
        (sl && e.ssade && !cfg.slads, inv, "SSADE"),
        (e.ere && !cfg.ers, inv, "ERE"),
        (fl && e.flpm == 1 && !cfg.fl5lp, inv, "FLPM"),
        (fl && e.eafe && !cfg.eafs, inv, "EAFE"),
        (
            sl && e.ssptptr >= 1 << haw,
            FaultReason::SecondLevelPointerInvalid,
            "SSPTPTR",
        ),
        (
            fl && e.flptr >= 1 << fl_limit,
            FaultReason::FirstLevelPointerInvalid,
            "FLPTR",
        ),
    ];
    rules.iter().find(|r| r.0).map(|r| (r.1, r.2))
}

use proptest::prelude::*;

/// Raw entries: three random words with the reserved bits clear and P set, then (most
/// of the time) one bit of the 512 flipped, so every reserved bit, P, PGTT and FLPM value
/// is reached.
fn raw_entry() -> impl Strategy<Value = [u64; 8]> {
    (
        any::<[u64; 3]>(),
        proptest::option::weighted(0.7, 0u32..512),
    )
        .prop_map(|(w, flip)| {
            let defined = spec_defined();
            let mut v = [0u64; 8];
            for i in 0..3 {
                v[i] = w[i] & defined[i] | 1;
            }
            if let Some(b) = flip {
                v[b as usize / 64] ^= 1 << (b % 64);
            }
            v
        })
}

fn config() -> impl Strategy<Value = IommuConfig> {
    (
        any::<[bool; 8]>(),
        (2u8..=8).prop_map(|n| 2 * n),
        39u8..=57,
        proptest::sample::subsequence(vec![3u8, 4, 5], 0..=3),
    )
        .prop_map(|(b, domain_bits, mgaw, sagaw_levels)| IommuConfig {
            nesting: b[0],
            pass_through: b[1],
            slads: b[2],
            ers: b[3],
            fl5lp: b[4],
            srs: b[5],
            eafs: b[6],
            domain_bits,
            mgaw,
            sagaw_levels,
            ..IommuConfig::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn from_raw_follows_the_specification_layout(v in raw_entry()) {
        match (PasidEntry::from_raw(&v), spec_rejects(&v)) {
            (Ok(e), None) => {
                for (name, value) in decoded_fields(&e) {
                    prop_assert_eq!(value, spec_field(&v, name), "field {}", name);
                }
                prop_assert_eq!(e.to_raw(), v);
            }
            (Err(e), Some((reason, value))) => {
                prop_assert_eq!((e.reason, e.value), (reason, value));
            }
            (got, want) => prop_assert!(false, "decoded {:?}, reference {:?}", got, want),
        }
    }

    #[test]
    fn validate_follows_the_reference_rules(
        v in raw_entry(),
        cfg in config(),
        widths in (30u32..=60, 30u32..=60, 2u32..=16),
    ) {
        // Table pointers and domain ids of random widths around the limits, so that each
        // rule is reached with the others met.
        let (fl, sl, did) = widths;
        if let Ok(mut e) = PasidEntry::from_raw(&v) {
            e.flptr &= (1u64 << fl) - 1;
            e.ssptptr &= (1u64 << sl) - 1;
            e.did &= ((1u32 << did) - 1) as u16;
            let got = e.validate(&cfg).err().map(|x| (x.reason, x.field));
            prop_assert_eq!(got, spec_invalid(&e, &cfg));
        }
    }
}

/// `val[2]` bits 5 and 6 (entry bits 133 and 134) are NXE and SMEP, not reserved: Linux's
/// `pasid_set_nxe` (6.2 to 6.10) sets bit 133 in every first-level entry it writes, and
/// VirtualBox's `iommu-intel.h` defines both. Such an entry decodes, and keeps them.
#[test]
fn nxe_and_smep_are_fields_not_reserved() {
    let mut v = PasidEntry::first_level(1, 0x5000).to_raw();
    v[2] |= 1 << 5 | 1 << 6;
    let e = PasidEntry::from_raw(&v).unwrap();
    assert_eq!((e.nxe, e.smep), (true, true));
    assert_eq!(e.to_raw(), v);
}

/// SRE without ECAP.SRS is a reserved-bit error (0x5a) for every translation type, not only
/// those with a first level (Linux commit "iommu/vt-d: Set SRE bit only when hardware has SRS
/// cap": a pass-through entry with SRE set faulted 0x5a on hardware without SRS).
#[test]
fn sre_without_srs_is_reserved_for_every_type() {
    let no_srs = IommuConfig {
        srs: false,
        ..IommuConfig::default()
    };
    for e in [
        PasidEntry::first_level(1, 0x5000),
        PasidEntry::second_level(1, 0x5000, 4),
        PasidEntry::nested(1, 0x5000, 0x6000, 4),
        PasidEntry::pass_through(1),
    ] {
        let e = PasidEntry { sre: true, ..e };
        let got = e.validate(&no_srs).unwrap_err();
        assert_eq!(
            (got.reason, got.field),
            (FaultReason::PasidEntryReserved, "SRE"),
            "{:?}",
            e.pgtt
        );
        e.validate(&IommuConfig::default()).unwrap();
    }
}
