//! The 512-bit scalable-mode PASID table entry, as a typed value and as `[u64; 8]`.

use vsva_uapi::Errno;

use crate::fault::FaultReason;
use crate::regs::{sl_width, IommuConfig};

/// PASID granular translation type (bits 8:6 of word 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pgtt {
    /// First-level only (stage 1: x86-64 page tables at FLPTR).
    FirstLevel = 1,
    /// Second-level only (stage 2 at SSPTPTR).
    SecondLevel = 2,
    /// Nested: first level at a guest-physical FLPTR, every GPA through the second level.
    Nested = 3,
    /// Pass-through: output = input.
    PassThrough = 4,
}

impl Pgtt {
    /// Decodes the 3-bit field.
    pub fn from_bits(v: u64) -> Option<Self> {
        match v {
            1 => Some(Pgtt::FirstLevel),
            2 => Some(Pgtt::SecondLevel),
            3 => Some(Pgtt::Nested),
            4 => Some(Pgtt::PassThrough),
            _ => None,
        }
    }
    /// Whether this type walks a first-level table.
    pub fn uses_first_level(self) -> bool {
        matches!(self, Pgtt::FirstLevel | Pgtt::Nested)
    }
    /// Whether this type walks a second-level table.
    pub fn uses_second_level(self) -> bool {
        matches!(self, Pgtt::SecondLevel | Pgtt::Nested)
    }
}

/// A present PASID table entry. Every field of the scalable-mode entry is here; `to_raw` sets P.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PasidEntry {
    /// Fault processing disable: faults fail the request but are not recorded.
    pub fpd: bool,
    /// Second-level address width: 1 = 39-bit/3-level, 2 = 48-bit/4-level, 3 = 57-bit/5-level.
    pub aw: u8,
    /// Translation type.
    pub pgtt: Pgtt,
    /// Second-level execute enable (`val[0]` bit 5): the X bit of second-level entries is
    /// honoured; without it X is ignored and an entry with R = W = 0 is not present.
    pub slee: bool,
    /// Second-level accessed/dirty enable.
    pub ssade: bool,
    /// Second-level table root (host physical, 4 KiB aligned).
    pub ssptptr: u64,
    /// Domain id, tags IOTLB entries.
    pub did: u16,
    /// Page-walk snoop.
    pub pwsnp: bool,
    /// Page snoop.
    pub pgsnp: bool,
    /// Cache disable.
    pub cd: bool,
    /// Extended memory type enable.
    pub emte: bool,
    /// Extended memory type (3 bits).
    pub emt: u8,
    /// Page-level write-through for the first-level root.
    pub pwt: bool,
    /// Page-level cache disable for the first-level root.
    pub pcd: bool,
    /// Page attribute table.
    pub pat: u32,
    /// Supervisor requests enabled.
    pub sre: bool,
    /// Execute requests enabled (`val[2]` bit 1, needs ECAP.ERS): an execute request to an entry
    /// without it faults 0x5c.
    pub ere: bool,
    /// First-level paging mode: 0 = 4-level, 1 = 5-level.
    pub flpm: u8,
    /// Write protect enable: supervisor writes honour R/W.
    pub wpe: bool,
    /// Extended accessed flag enable.
    pub eafe: bool,
    /// First-level table root (guest physical when nested, 4 KiB aligned).
    pub flptr: u64,
}

const ADDR_MASK: u64 = 0xffff_ffff_ffff_f000;
const VAL0_RESERVED: u64 = 0b11 << 10;
const VAL1_RESERVED: u64 = 0x7f << 16;
const VAL2_RESERVED: u64 = 1 << 5 | 1 << 6 | 0xf << 8;

/// Whether a raw entry is present: P, val[0] bit 0.
#[inline]
pub(crate) const fn pasid_pte_is_present(val0: u64) -> bool {
    val0 & 1 != 0
}
/// val[0] with P (bit 0) clear.
#[inline]
pub(crate) const fn pasid_clear_present(val0: u64) -> u64 {
    val0 & !1
}
/// The translation type of a raw entry: PGTT, val[0] bits 8:6 (`None` when undefined).
#[inline]
pub(crate) fn pasid_pte_get_pgtt(val0: u64) -> Option<Pgtt> {
    Pgtt::from_bits(val0 >> 6 & 7)
}
/// The domain id of a raw entry: DID, val[1] bits 15:0.
#[inline]
pub(crate) const fn pasid_get_domain_id(val1: u64) -> u16 {
    val1 as u16
}

/// Why a raw PASID entry could not be used: the fault reason plus the field and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PASID entry field {field} = {value:#x} rejected ({reason})")]
pub struct PasidEntryError {
    /// Fault reason the hardware would report for it.
    pub reason: FaultReason,
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
}

impl PasidEntryError {
    /// The errno a uAPI caller sees: `EINVAL`.
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

fn err(reason: FaultReason, field: &'static str, value: u64) -> PasidEntryError {
    PasidEntryError {
        reason,
        field,
        value,
    }
}

impl PasidEntry {
    /// A first-level-only entry with the common defaults (4-level, no SRE).
    pub fn first_level(did: u16, flptr: u64) -> Self {
        Self {
            fpd: false,
            aw: 0,
            pgtt: Pgtt::FirstLevel,
            slee: false,
            ssade: false,
            ssptptr: 0,
            did,
            pwsnp: false,
            pgsnp: false,
            cd: false,
            emte: false,
            emt: 0,
            pwt: false,
            pcd: false,
            pat: 0,
            sre: false,
            ere: false,
            flpm: 0,
            wpe: false,
            eafe: false,
            flptr,
        }
    }

    /// A second-level-only entry for a stage-2 table of `levels` levels (3, 4 or 5).
    pub fn second_level(did: u16, ssptptr: u64, levels: u8) -> Self {
        Self {
            pgtt: Pgtt::SecondLevel,
            aw: levels.saturating_sub(2),
            ssptptr,
            ..Self::first_level(did, 0)
        }
    }

    /// A nested entry: guest first level at `gpgd` over the stage-2 table at `ssptptr`.
    pub fn nested(did: u16, gpgd: u64, ssptptr: u64, sl_levels: u8) -> Self {
        Self {
            pgtt: Pgtt::Nested,
            aw: sl_levels.saturating_sub(2),
            ssptptr,
            ..Self::first_level(did, gpgd)
        }
    }

    /// A pass-through entry.
    pub fn pass_through(did: u16) -> Self {
        Self {
            pgtt: Pgtt::PassThrough,
            ..Self::first_level(did, 0)
        }
    }

    /// Number of first-level paging levels (4 or 5).
    pub fn fl_levels(&self) -> u8 {
        if self.flpm == 1 {
            5
        } else {
            4
        }
    }

    /// Number of second-level paging levels from AW (3, 4 or 5; 0 when AW is invalid).
    pub fn sl_levels(&self) -> u8 {
        match self.aw {
            1..=3 => self.aw + 2,
            _ => 0,
        }
    }

    /// Encodes as eight 64-bit words, with P set and reserved bits clear. Fields wider than
    /// their bit range are truncated to it.
    pub fn to_raw(&self) -> [u64; 8] {
        let mut v = [0u64; 8];
        v[0] = 1
            | u64::from(self.fpd) << 1
            | u64::from(self.aw & 7) << 2
            | u64::from(self.slee) << 5
            | (self.pgtt as u64) << 6
            | u64::from(self.ssade) << 9
            | (self.ssptptr & ADDR_MASK);
        v[1] = u64::from(self.did)
            | u64::from(self.pwsnp) << 23
            | u64::from(self.pgsnp) << 24
            | u64::from(self.cd) << 25
            | u64::from(self.emte) << 26
            | u64::from(self.emt & 7) << 27
            | u64::from(self.pwt) << 30
            | u64::from(self.pcd) << 31
            | u64::from(self.pat) << 32;
        v[2] = u64::from(self.sre)
            | u64::from(self.ere) << 1
            | u64::from(self.flpm & 3) << 2
            | u64::from(self.wpe) << 4
            | u64::from(self.eafe) << 7
            | (self.flptr & ADDR_MASK);
        v
    }

    /// Decodes eight words: not present → 0x59, reserved bits → 0x5a, an undefined PGTT or
    /// FLPM → 0x5b.
    pub fn from_raw(v: &[u64; 8]) -> Result<Self, PasidEntryError> {
        if v[0] & 1 == 0 {
            return Err(err(FaultReason::PasidEntryNotPresent, "P", 0));
        }
        if v[0] & VAL0_RESERVED != 0 {
            return Err(err(
                FaultReason::PasidEntryReserved,
                "val[0] reserved",
                v[0] & VAL0_RESERVED,
            ));
        }
        if v[1] & VAL1_RESERVED != 0 {
            return Err(err(
                FaultReason::PasidEntryReserved,
                "val[1] reserved",
                v[1] & VAL1_RESERVED,
            ));
        }
        if v[2] & VAL2_RESERVED != 0 {
            return Err(err(
                FaultReason::PasidEntryReserved,
                "val[2] reserved",
                v[2] & VAL2_RESERVED,
            ));
        }
        for (i, &w) in v.iter().enumerate().skip(3) {
            if w != 0 {
                let field = ["", "", "", "val[3]", "val[4]", "val[5]", "val[6]", "val[7]"][i];
                return Err(err(FaultReason::PasidEntryReserved, field, w));
            }
        }
        let pgtt_bits = v[0] >> 6 & 7;
        let pgtt = Pgtt::from_bits(pgtt_bits).ok_or(err(
            FaultReason::PasidEntryInvalid,
            "PGTT",
            pgtt_bits,
        ))?;
        let flpm = (v[2] >> 2 & 3) as u8;
        if flpm > 1 {
            return Err(err(FaultReason::PasidEntryInvalid, "FLPM", u64::from(flpm)));
        }
        Ok(Self {
            fpd: v[0] >> 1 & 1 != 0,
            aw: (v[0] >> 2 & 7) as u8,
            pgtt,
            slee: v[0] >> 5 & 1 != 0,
            ssade: v[0] >> 9 & 1 != 0,
            ssptptr: v[0] & ADDR_MASK,
            did: v[1] as u16,
            pwsnp: v[1] >> 23 & 1 != 0,
            pgsnp: v[1] >> 24 & 1 != 0,
            cd: v[1] >> 25 & 1 != 0,
            emte: v[1] >> 26 & 1 != 0,
            emt: (v[1] >> 27 & 7) as u8,
            pwt: v[1] >> 30 & 1 != 0,
            pcd: v[1] >> 31 & 1 != 0,
            pat: (v[1] >> 32) as u32,
            sre: v[2] & 1 != 0,
            ere: v[2] >> 1 & 1 != 0,
            flpm,
            wpe: v[2] >> 4 & 1 != 0,
            eafe: v[2] >> 7 & 1 != 0,
            flptr: v[2] & ADDR_MASK,
        })
    }

    /// Decodes the first three words of an entry already validated by [`Self::from_raw`] and
    /// [`Self::validate`] (the PASID cache holds only such entries); an undefined PGTT decodes
    /// as pass-through, which a validated entry never has.
    #[inline]
    pub(crate) fn decode_cached(v0: u64, v1: u64, v2: u64) -> Self {
        Self {
            fpd: v0 >> 1 & 1 != 0,
            aw: (v0 >> 2 & 7) as u8,
            pgtt: Pgtt::from_bits(v0 >> 6 & 7).unwrap_or(Pgtt::PassThrough),
            slee: v0 >> 5 & 1 != 0,
            ssade: v0 >> 9 & 1 != 0,
            ssptptr: v0 & ADDR_MASK,
            did: v1 as u16,
            pwsnp: v1 >> 23 & 1 != 0,
            pgsnp: v1 >> 24 & 1 != 0,
            cd: v1 >> 25 & 1 != 0,
            emte: v1 >> 26 & 1 != 0,
            emt: (v1 >> 27 & 7) as u8,
            pwt: v1 >> 30 & 1 != 0,
            pcd: v1 >> 31 & 1 != 0,
            pat: (v1 >> 32) as u32,
            sre: v2 & 1 != 0,
            ere: v2 >> 1 & 1 != 0,
            flpm: (v2 >> 2 & 3) as u8,
            wpe: v2 >> 4 & 1 != 0,
            eafe: v2 >> 7 & 1 != 0,
            flptr: v2 & ADDR_MASK,
        }
    }

    /// Checks the entry against what the configured IOMMU supports, in the order the hardware
    /// would: features (0x5b), then table pointers (0x7b for SSPTPTR, 0x73 for FLPTR).
    pub fn validate(&self, cfg: &IommuConfig) -> Result<(), PasidEntryError> {
        let inv = FaultReason::PasidEntryInvalid;
        if u32::from(self.did) >> cfg.domain_bits != 0 {
            return Err(err(inv, "DID", u64::from(self.did)));
        }
        match self.pgtt {
            Pgtt::Nested if !cfg.nesting => return Err(err(inv, "PGTT", 3)),
            Pgtt::PassThrough if !cfg.pass_through => return Err(err(inv, "PGTT", 4)),
            _ => {}
        }
        if self.pgtt.uses_second_level() {
            let levels = self.sl_levels();
            if levels == 0 || !cfg.supports_sl_levels(levels) {
                return Err(err(inv, "AW", u64::from(self.aw)));
            }
            if self.ssade && !cfg.slads {
                return Err(err(inv, "SSADE", 1));
            }
        }
        if self.ere && !cfg.ers {
            return Err(err(inv, "ERE", 1));
        }
        if self.pgtt.uses_first_level() {
            if self.flpm == 1 && !cfg.fl5lp {
                return Err(err(inv, "FLPM", 1));
            }
            if self.sre && !cfg.srs {
                return Err(err(inv, "SRE", 1));
            }
            if self.eafe && !cfg.eafs {
                return Err(err(inv, "EAFE", 1));
            }
        }
        let haw = cfg.haw();
        if self.pgtt.uses_second_level() && self.ssptptr >> haw != 0 {
            return Err(err(
                FaultReason::SecondLevelPointerInvalid,
                "SSPTPTR",
                self.ssptptr,
            ));
        }
        if self.pgtt.uses_first_level() {
            let limit = if self.pgtt == Pgtt::Nested {
                sl_width(self.sl_levels()).min(haw)
            } else {
                haw
            };
            if self.flptr >> limit != 0 {
                return Err(err(
                    FaultReason::FirstLevelPointerInvalid,
                    "FLPTR",
                    self.flptr,
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(v[2], 1 | 1 << 1 | 1 << 2 | 1 << 4 | 1 << 7 | 0xabc_d000);
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
            assert_eq!(PasidEntry::decode_cached(v[0], v[1], v[2]), e);
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
        for (word, bit) in [(0, 10), (0, 11), (1, 16), (2, 5), (2, 8), (3, 0), (7, 63)] {
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
}
