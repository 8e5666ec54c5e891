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
    /// NXE, no-execute enable (`val[2]` bit 5, entry bit 133). A field, not reserved: Linux's
    /// `pasid_set_nxe` set it in first-level entries from 6.2 (dropped in 6.11, when the
    /// specification deprecated execute requests); VirtualBox's `iommu-intel.h` names it.
    /// Kept and written back; its effect on the XD bit is not modelled (XD is always honoured).
    pub nxe: bool,
    /// SMEP, supervisor-mode execute prevention (`val[2]` bit 6, entry bit 134; VirtualBox's
    /// `iommu-intel.h`). A field, not reserved; kept and written back, not enforced.
    pub smep: bool,
    /// Extended accessed flag enable.
    pub eafe: bool,
    /// First-level table root (guest physical when nested, 4 KiB aligned).
    pub flptr: u64,
}

const ADDR_MASK: u64 = 0xffff_ffff_ffff_f000;

/// What translation reads of a PASID entry: the translation type, decoded once (every step of
/// a translation branches on it), and the entry's first three words (as [`PasidEntry::to_raw`]
/// writes them), from which each other field is taken where it is read. The PASID cache
/// answers with this: a hit carries three words instead of decoding every field up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedEntry {
    pub(crate) pgtt: Pgtt,
    v: [u64; 3],
}

impl CachedEntry {
    /// The first three words of an entry already validated by [`PasidEntry::from_raw`] and
    /// [`PasidEntry::validate`] (the PASID cache holds only such entries); an undefined PGTT
    /// decodes as pass-through, which a validated entry never has.
    #[inline]
    pub(crate) fn decode(v0: u64, v1: u64, v2: u64) -> Self {
        Self {
            pgtt: Pgtt::from_bits(v0 >> 6 & 7).unwrap_or(Pgtt::PassThrough),
            v: [v0, v1, v2],
        }
    }

    /// DID of word 1 `v1`, without the rest of the entry: bits 15:0.
    #[inline]
    pub(crate) fn did_of(v1: u64) -> u16 {
        v1 as u16
    }

    /// AW: word 0, bits 4:2.
    #[inline]
    pub(crate) fn aw(&self) -> u8 {
        (self.v[0] >> 2 & 7) as u8
    }
    /// SLEE: word 0, bit 5.
    #[inline]
    pub(crate) fn slee(&self) -> bool {
        self.v[0] >> 5 & 1 != 0
    }
    /// SSADE: word 0, bit 9.
    #[inline]
    pub(crate) fn ssade(&self) -> bool {
        self.v[0] >> 9 & 1 != 0
    }
    /// SSPTPTR: word 0, bits 63:12.
    #[inline]
    pub(crate) fn ssptptr(&self) -> u64 {
        self.v[0] & ADDR_MASK
    }
    /// DID: word 1, bits 15:0.
    #[inline]
    pub(crate) fn did(&self) -> u16 {
        Self::did_of(self.v[1])
    }
    /// SRE: word 2, bit 0.
    #[inline]
    pub(crate) fn sre(&self) -> bool {
        self.v[2] & 1 != 0
    }
    /// ERE: word 2, bit 1.
    #[inline]
    pub(crate) fn ere(&self) -> bool {
        self.v[2] >> 1 & 1 != 0
    }
    /// FLPM: word 2, bits 3:2.
    #[inline]
    pub(crate) fn flpm(&self) -> u8 {
        (self.v[2] >> 2 & 3) as u8
    }
    /// WPE: word 2, bit 4.
    #[inline]
    pub(crate) fn wpe(&self) -> bool {
        self.v[2] >> 4 & 1 != 0
    }
    /// EAFE: word 2, bit 7.
    #[inline]
    pub(crate) fn eafe(&self) -> bool {
        self.v[2] >> 7 & 1 != 0
    }
    /// FLPTR: word 2, bits 63:12.
    #[inline]
    pub(crate) fn flptr(&self) -> u64 {
        self.v[2] & ADDR_MASK
    }

    /// Number of first-level paging levels (as [`PasidEntry::fl_levels`]).
    #[inline]
    pub(crate) fn fl_levels(&self) -> u8 {
        fl_levels(self.flpm())
    }

    /// Number of second-level paging levels (as [`PasidEntry::sl_levels`]).
    #[inline]
    pub(crate) fn sl_levels(&self) -> u8 {
        sl_levels(self.aw())
    }
}

/// First-level paging levels of FLPM: 5 when 1, otherwise 4.
fn fl_levels(flpm: u8) -> u8 {
    if flpm == 1 {
        5
    } else {
        4
    }
}

/// Second-level paging levels of AW: 3, 4 or 5; 0 when AW is invalid.
fn sl_levels(aw: u8) -> u8 {
    match aw {
        1..=3 => aw + 2,
        _ => 0,
    }
}

const VAL0_RESERVED: u64 = 0b11 << 10;
const VAL1_RESERVED: u64 = 0x7f << 16;
const VAL2_RESERVED: u64 = 0xf << 8;
/// FLPM's high bit (val[2] bit 3): set, FLPM is 2 or 3, both undefined.
const FLPM_HIGH: u64 = 1 << 3;

/// Whether a raw entry is present: P, val[0] bit 0.
#[inline]
pub(crate) const fn pasid_pte_is_present(val0: u64) -> bool {
    val0 & 1 != 0
}
/// val[0] with P (bit 0) clear (the raw-write test hook clears P first, as a guest would).
#[cfg(any(test, feature = "test-hooks"))]
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
            nxe: false,
            smep: false,
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
        fl_levels(self.flpm)
    }

    /// Number of second-level paging levels from AW (3, 4 or 5; 0 when AW is invalid).
    pub fn sl_levels(&self) -> u8 {
        sl_levels(self.aw)
    }

    /// What translation reads of the entry (see [`CachedEntry`]).
    pub(crate) fn cached(&self) -> CachedEntry {
        let v = self.to_raw();
        CachedEntry::decode(v[0], v[1], v[2])
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
            | u64::from(self.nxe) << 5
            | u64::from(self.smep) << 6
            | u64::from(self.eafe) << 7
            | (self.flptr & ADDR_MASK);
        v
    }

    /// Decodes eight words: not present → 0x59, reserved bits → 0x5a, an undefined PGTT or
    /// FLPM → 0x5b (the first of these, in that order, is the error).
    #[inline]
    pub fn from_raw(v: &[u64; 8]) -> Result<Self, PasidEntryError> {
        // P first (a cleared entry, as an unbind leaves it, is common and needs no other
        // look), then every other rule at once: no reserved bit in any word, PGTT one of
        // 1..=4, FLPM 0 or 1 (its bit 1, val[2] bit 3, clear). Which of those failed, in the
        // hardware's order, is worked out off the success path.
        if v[0] & 1 == 0 {
            return Err(err(FaultReason::PasidEntryNotPresent, "P", 0));
        }
        let pgtt_bits = v[0] >> 6 & 7;
        let broken = (v[0] & VAL0_RESERVED)
            | (v[1] & VAL1_RESERVED)
            | (v[2] & (VAL2_RESERVED | FLPM_HIGH))
            | v[3]
            | v[4]
            | v[5]
            | v[6]
            | v[7];
        let Some(pgtt) = Pgtt::from_bits(pgtt_bits) else {
            return Err(Self::raw_error(v));
        };
        if broken != 0 {
            return Err(Self::raw_error(v));
        }
        Ok(Self::fields(v[0], v[1], v[2], pgtt))
    }

    /// The first rule a raw entry with P set breaks, in the order the hardware checks them
    /// (called only when [`Self::from_raw`] found one).
    #[cold]
    #[inline(never)]
    fn raw_error(v: &[u64; 8]) -> PasidEntryError {
        let reserved = [
            ("val[0] reserved", v[0] & VAL0_RESERVED),
            ("val[1] reserved", v[1] & VAL1_RESERVED),
            ("val[2] reserved", v[2] & VAL2_RESERVED),
            ("val[3]", v[3]),
            ("val[4]", v[4]),
            ("val[5]", v[5]),
            ("val[6]", v[6]),
            ("val[7]", v[7]),
        ];
        if let Some(&(field, value)) = reserved.iter().find(|r| r.1 != 0) {
            return err(FaultReason::PasidEntryReserved, field, value);
        }
        let pgtt_bits = v[0] >> 6 & 7;
        if Pgtt::from_bits(pgtt_bits).is_none() {
            return err(FaultReason::PasidEntryInvalid, "PGTT", pgtt_bits);
        }
        err(FaultReason::PasidEntryInvalid, "FLPM", v[2] >> 2 & 3)
    }

    /// Every field of the first three words (the others hold none), with the translation
    /// type already decoded; no rule is checked.
    #[inline]
    fn fields(v0: u64, v1: u64, v2: u64, pgtt: Pgtt) -> Self {
        // The fields translation reads have their bit ranges in `CachedEntry` only.
        let c = CachedEntry::decode(v0, v1, v2);
        Self {
            fpd: v0 >> 1 & 1 != 0,
            aw: c.aw(),
            pgtt,
            slee: c.slee(),
            ssade: c.ssade(),
            ssptptr: c.ssptptr(),
            did: c.did(),
            pwsnp: v1 >> 23 & 1 != 0,
            pgsnp: v1 >> 24 & 1 != 0,
            cd: v1 >> 25 & 1 != 0,
            emte: v1 >> 26 & 1 != 0,
            emt: (v1 >> 27 & 7) as u8,
            pwt: v1 >> 30 & 1 != 0,
            pcd: v1 >> 31 & 1 != 0,
            pat: (v1 >> 32) as u32,
            sre: c.sre(),
            ere: c.ere(),
            flpm: c.flpm(),
            wpe: c.wpe(),
            nxe: v2 >> 5 & 1 != 0,
            smep: v2 >> 6 & 1 != 0,
            eafe: c.eafe(),
            flptr: c.flptr(),
        }
    }

    /// Checks the entry against what the configured IOMMU supports, in the order the hardware
    /// would: SRE without ECAP.SRS (0x5a, any type), features (0x5b), then table pointers (0x7b
    /// for SSPTPTR, 0x73 for FLPTR).
    #[inline]
    pub fn validate(&self, cfg: &IommuConfig) -> Result<(), PasidEntryError> {
        if self.fits(cfg) {
            Ok(())
        } else {
            Err(self.violation(cfg))
        }
    }

    /// Whether the entry breaks none of [`Self::validate`]'s rules: each rule is evaluated
    /// (no early exit on the success path), and the second-level ones only for a type that
    /// walks a second level.
    #[inline]
    fn fits(&self, cfg: &IommuConfig) -> bool {
        let fl = self.pgtt.uses_first_level();
        let haw = u32::from(cfg.haw());
        let mut bad = (self.sre & !cfg.srs)
            | !domain_fits(self.did, cfg.domain_bits)
            | (self.pgtt == Pgtt::Nested && !cfg.nesting)
            | (self.pgtt == Pgtt::PassThrough && !cfg.pass_through)
            | (self.ere & !cfg.ers)
            | (fl & ((self.flpm == 1 && !cfg.fl5lp) | (self.eafe & !cfg.eafs)));
        if self.pgtt.uses_second_level() {
            let levels = self.sl_levels();
            bad |= levels == 0
                || !cfg.supports_sl_levels(levels)
                || (self.ssade && !cfg.slads)
                || !below(self.ssptptr, haw);
        }
        if fl {
            bad |= !below(self.flptr, self.fl_pointer_width(haw));
        }
        !bad
    }

    /// Width of the FLPTR field's valid range: the host address width, and for a nested
    /// entry no more than the second level's input width (FLPTR is an address it translates).
    #[inline]
    fn fl_pointer_width(&self, haw: u32) -> u32 {
        if self.pgtt == Pgtt::Nested {
            u32::from(sl_width(self.sl_levels())).min(haw)
        } else {
            haw
        }
    }

    /// The first rule of [`Self::validate`] the entry breaks, in the hardware's order (called
    /// only when [`Self::fits`] found one).
    #[cold]
    #[inline(never)]
    fn violation(&self, cfg: &IommuConfig) -> PasidEntryError {
        let inv = FaultReason::PasidEntryInvalid;
        // SRE is Reserved(0) without ECAP.SRS, whatever the translation type: hardware
        // reports 0x5a for it, before any invalid-entry rule (Linux commit "iommu/vt-d: Set
        // SRE bit only when hardware has SRS cap", which quotes that fault for a
        // pass-through entry).
        if self.sre && !cfg.srs {
            return err(FaultReason::PasidEntryReserved, "SRE", 1);
        }
        if !domain_fits(self.did, cfg.domain_bits) {
            return err(inv, "DID", u64::from(self.did));
        }
        match self.pgtt {
            Pgtt::Nested if !cfg.nesting => return err(inv, "PGTT", 3),
            Pgtt::PassThrough if !cfg.pass_through => return err(inv, "PGTT", 4),
            _ => {}
        }
        if self.pgtt.uses_second_level() {
            let levels = self.sl_levels();
            if levels == 0 || !cfg.supports_sl_levels(levels) {
                return err(inv, "AW", u64::from(self.aw));
            }
            if self.ssade && !cfg.slads {
                return err(inv, "SSADE", 1);
            }
        }
        if self.ere && !cfg.ers {
            return err(inv, "ERE", 1);
        }
        if self.pgtt.uses_first_level() {
            if self.flpm == 1 && !cfg.fl5lp {
                return err(inv, "FLPM", 1);
            }
            if self.eafe && !cfg.eafs {
                return err(inv, "EAFE", 1);
            }
        }
        let haw = u32::from(cfg.haw());
        if self.pgtt.uses_second_level() && !below(self.ssptptr, haw) {
            return err(
                FaultReason::SecondLevelPointerInvalid,
                "SSPTPTR",
                self.ssptptr,
            );
        }
        debug_assert!(!below(self.flptr, self.fl_pointer_width(haw)));
        err(FaultReason::FirstLevelPointerInvalid, "FLPTR", self.flptr)
    }
}

/// Whether domain id `did` fits in `bits` bits.
#[inline]
fn domain_fits(did: u16, bits: u8) -> bool {
    u32::from(did).checked_shr(u32::from(bits)).unwrap_or(0) == 0
}

/// Whether `addr` lies below `2^bits`.
#[inline]
fn below(addr: u64, bits: u32) -> bool {
    addr.checked_shr(bits).unwrap_or(0) == 0
}

#[cfg(test)]
mod tests;
