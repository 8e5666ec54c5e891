//! The VT-d register file as bytes: every register's offset, width, writable bits and
//! write-1-to-clear bits, and the raw store behind `read` / `write`. All register bit positions
//! of the model live here; the device logic names them, it never spells a bit number.
//!
//! Access rules (VT-d specification, chapter 10): 32-bit registers take 4-byte accesses,
//! 64-bit registers take 8-byte accesses or 4-byte accesses to either half. Reserved bits read
//! as zero and ignore writes; read-only registers ignore writes; RW1C bits clear where a 1 is
//! written. Any other access (size not 4 or 8, misaligned, outside a register) reads zero and
//! is ignored.

/// Version register (32-bit, RO).
pub const VER: u64 = 0x000;
/// Capability register (64-bit, RO).
pub const CAP: u64 = 0x008;
/// Extended capability register (64-bit, RO).
pub const ECAP: u64 = 0x010;
/// Global command register (32-bit, WO: reads return 0).
pub const GCMD: u64 = 0x018;
/// Global status register (32-bit, RO).
pub const GSTS: u64 = 0x01c;
/// Root table address register (64-bit).
pub const RTADDR: u64 = 0x020;
/// Context command register (64-bit).
pub const CCMD: u64 = 0x028;
/// Fault status register (32-bit).
pub const FSTS: u64 = 0x034;
/// Fault event control register (32-bit).
pub const FECTL: u64 = 0x038;
/// Fault event data register (32-bit).
pub const FEDATA: u64 = 0x03c;
/// Fault event address register (32-bit).
pub const FEADDR: u64 = 0x040;
/// Fault event upper address register (32-bit).
pub const FEUADDR: u64 = 0x044;
/// Invalidation queue head (64-bit, RO).
pub const IQH: u64 = 0x080;
/// Invalidation queue tail (64-bit).
pub const IQT: u64 = 0x088;
/// Invalidation queue address (64-bit).
pub const IQA: u64 = 0x090;
/// Invalidation completion status (32-bit).
pub const ICS: u64 = 0x09c;
/// Invalidation event control (32-bit).
pub const IECTL: u64 = 0x0a0;
/// Invalidation event data (32-bit).
pub const IEDATA: u64 = 0x0a4;
/// Invalidation event address (32-bit).
pub const IEADDR: u64 = 0x0a8;
/// Invalidation event upper address (32-bit).
pub const IEUADDR: u64 = 0x0ac;
/// Invalidation queue error record (64-bit, RO).
pub const IQERCD: u64 = 0x0b0;
/// Page request queue head (64-bit).
pub const PQH: u64 = 0x0c0;
/// Page request queue tail (64-bit).
pub const PQT: u64 = 0x0c8;
/// Page request queue address (64-bit).
pub const PQA: u64 = 0x0d0;
/// Page request status (32-bit).
pub const PRS: u64 = 0x0dc;
/// Page request event control (32-bit).
pub const PECTL: u64 = 0x0e0;
/// Page request event data (32-bit).
pub const PEDATA: u64 = 0x0e4;
/// Page request event address (32-bit).
pub const PEADDR: u64 = 0x0e8;
/// Page request event upper address (32-bit).
pub const PEUADDR: u64 = 0x0ec;
/// Invalidate address register of the IOTLB register pair (64-bit); ECAP.IRO = 0xf.
pub const IVA: u64 = 0x0f0;
/// IOTLB invalidate register (64-bit), right after IVA.
pub const IOTLB: u64 = 0x0f8;
/// First fault recording register (128 bits each); CAP.FRO = 0x22.
pub const FRCD_BASE: u64 = 0x220;
/// Virtual command register (64-bit), VT-d 3.3 layout (Linux `DMAR_VCMD_REG`).
pub const VCMD: u64 = 0xe00;
/// Virtual command response register (64-bit, RO).
pub const VCRSP: u64 = 0xe10;
/// Virtual command capability register (64-bit, RO).
pub const VCCAP: u64 = 0xe30;
/// Size of the register page.
pub const MMIO_SIZE: u64 = 0x1000;

/// ECAP.IRO value: IVA at `IRO * 16`.
pub(crate) const IRO: u64 = IVA / 16;
/// CAP.FRO value: fault records at `FRO * 16`.
pub(crate) const FRO: u64 = FRCD_BASE / 16;

// GCMD / GSTS bits (the status bit of each command sits at the same position).
pub(crate) const GCMD_TE: u32 = 1 << 31;
pub(crate) const GCMD_SRTP: u32 = 1 << 30;
pub(crate) const GCMD_SFL: u32 = 1 << 29;
pub(crate) const GCMD_EAFL: u32 = 1 << 28;
pub(crate) const GCMD_WBF: u32 = 1 << 27;
pub(crate) const GCMD_QIE: u32 = 1 << 26;
pub(crate) const GCMD_IRE: u32 = 1 << 25;
pub(crate) const GCMD_SIRTP: u32 = 1 << 24;
pub(crate) const GCMD_CFI: u32 = 1 << 23;
/// Commands that act once when written as 1 (their status bit is not persistent state).
pub(crate) const GCMD_ONE_SHOT: u32 = GCMD_SRTP | GCMD_SFL | GCMD_WBF | GCMD_SIRTP;
/// Commands whose bit is an enable: a change from the status is the command.
pub(crate) const GCMD_PERSISTENT: u32 = GCMD_TE | GCMD_EAFL | GCMD_QIE | GCMD_IRE | GCMD_CFI;

/// RTADDR: translation table mode, bits 11:10 (01b = scalable mode).
pub(crate) const RTADDR_TTM_SHIFT: u32 = 10;
pub(crate) const RTADDR_TTM_SCALABLE: u64 = 1;
/// RTADDR.TTM 10b: reserved (00b legacy, 01b scalable, 11b abort-DMA mode, which needs
/// ECAP.ADMS); VirtualBox's `iommu-intel.h` `VTD_TTM_RSVD`.
pub(crate) const RTADDR_TTM_RESERVED: u64 = 2;
pub(crate) const ADDR_MASK: u64 = !0xfff;

// CCMD.
pub(crate) const CCMD_ICC: u64 = 1 << 63;
pub(crate) const CCMD_CIRG_SHIFT: u32 = 61;
pub(crate) const CCMD_CAIG_SHIFT: u32 = 59;
// IOTLB register.
pub(crate) const IOTLB_IVT: u64 = 1 << 63;
pub(crate) const IOTLB_IIRG_SHIFT: u32 = 60;
pub(crate) const IOTLB_IAIG_SHIFT: u32 = 57;

// FSTS.
pub(crate) const FSTS_PFO: u32 = 1 << 0;
pub(crate) const FSTS_PPF: u32 = 1 << 1;
pub(crate) const FSTS_IQE: u32 = 1 << 4;
pub(crate) const FSTS_ICE: u32 = 1 << 5;
pub(crate) const FSTS_ITE: u32 = 1 << 6;
pub(crate) const FSTS_FRI_SHIFT: u32 = 8;
// Event control registers (FECTL, IECTL, PECTL).
pub(crate) const ECTL_IM: u32 = 1 << 31;
pub(crate) const ECTL_IP: u32 = 1 << 30;
// ICS.
pub(crate) const ICS_IWC: u32 = 1;
// PRS.
pub(crate) const PRS_PPR: u32 = 1 << 0;
pub(crate) const PRS_PRO: u32 = 1 << 1;
// IQA.
pub(crate) const IQA_DW: u64 = 1 << 11;
pub(crate) const IQA_QS_MASK: u64 = 7;
// Queue offsets.
pub(crate) const IQ_OFFSET_MASK: u64 = 0x7fff0;
pub(crate) const PQ_OFFSET_MASK: u64 = 0x7ffe0;
// Fault recording register, high qword.
pub(crate) const FRCD_F: u64 = 1 << 63;
pub(crate) const FRCD_T1: u64 = 1 << 62;
pub(crate) const FRCD_PV_SHIFT: u32 = 40;
pub(crate) const FRCD_FR_SHIFT: u32 = 32;
pub(crate) const FRCD_PP: u64 = 1 << 31;
pub(crate) const FRCD_EXE: u64 = 1 << 30;
pub(crate) const FRCD_PRIV: u64 = 1 << 29;
// VCCAP.
pub(crate) const VCCAP_PAS: u64 = 1;

/// One register: where, how wide, which bits software may write and which clear on a 1.
#[derive(Debug, Clone, Copy)]
struct Spec {
    offset: u64,
    /// 4 or 8 bytes.
    width: u8,
    rw: u64,
    w1c: u64,
}

const fn reg(offset: u64, width: u8, rw: u64, w1c: u64) -> Spec {
    Spec {
        offset,
        width,
        rw,
        w1c,
    }
}

/// Every register of the page except the fault recording registers, which depend on how many
/// the configuration asks for.
const SPECS: &[Spec] = &[
    reg(VER, 4, 0, 0),
    reg(CAP, 8, 0, 0),
    reg(ECAP, 8, 0, 0),
    reg(GCMD, 4, 0xff80_0000, 0),
    reg(GSTS, 4, 0, 0),
    reg(RTADDR, 8, !0x3ff, 0),
    // CCMD: DID, SID, FM, CIRG, ICC writable; CAIG read-only.
    reg(
        CCMD,
        8,
        0xffff_ffff | 0x3 << 32 | 0x3 << CCMD_CIRG_SHIFT | CCMD_ICC,
        0,
    ),
    reg(
        FSTS,
        4,
        0,
        (FSTS_PFO | FSTS_IQE | FSTS_ICE | FSTS_ITE) as u64,
    ),
    reg(FECTL, 4, ECTL_IM as u64, 0),
    reg(FEDATA, 4, 0xffff, 0),
    reg(FEADDR, 4, 0xffff_fffc, 0),
    reg(FEUADDR, 4, 0xffff_ffff, 0),
    reg(IQH, 8, 0, 0),
    reg(IQT, 8, IQ_OFFSET_MASK, 0),
    reg(IQA, 8, ADDR_MASK | IQA_DW | IQA_QS_MASK, 0),
    reg(ICS, 4, 0, ICS_IWC as u64),
    reg(IECTL, 4, ECTL_IM as u64, 0),
    reg(IEDATA, 4, 0xffff, 0),
    reg(IEADDR, 4, 0xffff_fffc, 0),
    reg(IEUADDR, 4, 0xffff_ffff, 0),
    reg(IQERCD, 8, 0, 0),
    reg(PQH, 8, PQ_OFFSET_MASK, 0),
    reg(PQT, 8, PQ_OFFSET_MASK, 0),
    reg(PQA, 8, ADDR_MASK | 7, 0),
    reg(PRS, 4, 0, (PRS_PPR | PRS_PRO) as u64),
    reg(PECTL, 4, ECTL_IM as u64, 0),
    reg(PEDATA, 4, 0xffff, 0),
    reg(PEADDR, 4, 0xffff_fffc, 0),
    reg(PEUADDR, 4, 0xffff_ffff, 0),
    // IVA: ADDR, IH, AM.
    reg(IVA, 8, ADDR_MASK | 0x7f, 0),
    // IOTLB: DID, DW, DR, IIRG, IVT; IAIG read-only.
    reg(
        IOTLB,
        8,
        0xffff << 32 | 0x3 << 48 | 0x3 << IOTLB_IIRG_SHIFT | IOTLB_IVT,
        0,
    ),
    reg(VCMD, 8, !0, 0),
    reg(VCRSP, 8, 0, 0),
    reg(VCCAP, 8, 0, 0),
];

/// Dwords in the register page.
const DWORDS: usize = (MMIO_SIZE / 4) as usize;

/// For each dword of the page, 1 + the index in [`SPECS`] of the register covering it (0 for
/// none): the register of an access is one table load, not a search, on every MMIO access.
const SPEC_OF_DWORD: [u8; (MMIO_SIZE / 4) as usize] = {
    let mut t = [0u8; (MMIO_SIZE / 4) as usize];
    let mut i = 0;
    while i < SPECS.len() {
        let s = SPECS[i];
        let mut d = s.offset / 4;
        while d < (s.offset + s.width as u64) / 4 {
            t[d as usize] = (i + 1) as u8;
            d += 1;
        }
        i += 1;
    }
    t
};

/// The register the access touched, for the device's side effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touched {
    /// A register at this offset (its start).
    Reg(u64),
    /// The high qword of fault recording register `index` (where F lives).
    FaultRecord(usize),
}

/// The raw register values, in dwords over the 4 KiB page.
#[derive(Debug, Clone)]
pub(crate) struct RegisterFile {
    /// A fixed-size array, so that accesses at constant offsets need no bounds check, held
    /// in the unit itself: a register is one load at a constant offset from the unit, with
    /// no pointer to the file to load first (the queue pass reads and writes five).
    dwords: [u32; DWORDS],
    fault_records: usize,
}

impl RegisterFile {
    /// A file with every register zero and `fault_records` recording registers.
    pub(crate) fn new(fault_records: usize) -> Self {
        RegisterFile {
            dwords: [0; DWORDS],
            fault_records,
        }
    }

    fn spec(&self, offset: u64) -> Option<Spec> {
        let slot = SPEC_OF_DWORD
            .get((offset / 4) as usize)
            .copied()
            .unwrap_or(0);
        if slot != 0 {
            return Some(SPECS[usize::from(slot) - 1]);
        }
        let end = FRCD_BASE + 16 * self.fault_records as u64;
        if (FRCD_BASE..end).contains(&offset) {
            let base = offset & !0x7;
            // Low qword read-only; high qword: F is RW1C, the rest read-only.
            let high = (base - FRCD_BASE) % 16 == 8;
            return Some(reg(base, 8, 0, if high { FRCD_F } else { 0 }));
        }
        None
    }

    /// The register's value as the device sees it (no access rules).
    #[inline]
    pub(crate) fn get(&self, offset: u64) -> u64 {
        let i = (offset / 4) as usize;
        u64::from(self.dwords[i]) | u64::from(self.dwords.get(i + 1).copied().unwrap_or(0)) << 32
    }

    /// The 32-bit register's value.
    #[inline]
    pub(crate) fn get32(&self, offset: u64) -> u32 {
        self.dwords[(offset / 4) as usize]
    }

    /// Sets a 64-bit register (both dwords) without access rules.
    #[inline]
    pub(crate) fn set(&mut self, offset: u64, value: u64) {
        let i = (offset / 4) as usize;
        self.dwords[i] = value as u32;
        self.dwords[i + 1] = (value >> 32) as u32;
    }

    /// Sets a 32-bit register without access rules.
    #[inline]
    pub(crate) fn set32(&mut self, offset: u64, value: u32) {
        self.dwords[(offset / 4) as usize] = value;
    }

    /// Whether `(offset, size)` is an access the register at `offset` takes, and that register.
    fn access(&self, offset: u64, size: usize) -> Option<Spec> {
        let spec = self.spec(offset)?;
        let ok = match (size, spec.width) {
            (4, 4) => offset == spec.offset,
            (4, 8) => offset == spec.offset || offset == spec.offset + 4,
            (8, 8) => offset == spec.offset,
            _ => false,
        };
        ok.then_some(spec)
    }

    /// A guest read. Write-only GCMD reads zero.
    pub(crate) fn read(&self, offset: u64, size: usize) -> u64 {
        let Some(spec) = self.access(offset, size) else {
            return 0;
        };
        if spec.offset == GCMD {
            return 0;
        }
        let v = self.get(offset);
        if size == 4 {
            v & 0xffff_ffff
        } else {
            v
        }
    }

    /// A guest write with the access rules applied; returns the register it reached (and its
    /// value before the write) so the device can act, or `None` if the access was ignored.
    pub(crate) fn write(&mut self, offset: u64, size: usize, value: u64) -> Option<(Touched, u64)> {
        let spec = self.access(offset, size)?;
        let old = self.get(spec.offset);
        let (shift, mask) = match (size, offset - spec.offset) {
            (8, _) => (0, !0u64),
            (_, 0) => (0, 0xffff_ffffu64),
            _ => (32, 0xffff_ffff_0000_0000u64),
        };
        let value = (value << shift) & mask;
        let rw = spec.rw & mask;
        let w1c = spec.w1c & mask;
        let mut new = (old & !rw) | (value & rw);
        new &= !(value & w1c);
        if spec.width == 4 {
            self.set32(spec.offset, new as u32);
        } else {
            self.set(spec.offset, new);
        }
        let touched = if spec.offset >= FRCD_BASE
            && spec.offset < FRCD_BASE + 16 * self.fault_records as u64
        {
            Touched::FaultRecord(((spec.offset - FRCD_BASE) / 16) as usize)
        } else {
            Touched::Reg(spec.offset)
        };
        Some((touched, old))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_reserved_bits_and_rw1c() {
        let mut r = RegisterFile::new(4);
        // Read-only registers ignore writes.
        r.write(CAP, 8, !0);
        assert_eq!(r.read(CAP, 8), 0);
        // Reserved bits read as zero: FEDATA keeps only 15:0.
        r.write(FEDATA, 4, 0xdead_beef);
        assert_eq!(r.read(FEDATA, 4), 0xbeef);
        // A 64-bit register by halves.
        r.write(IQA, 4, 0x1234_5807);
        r.write(IQA + 4, 4, 0x1);
        assert_eq!(
            r.read(IQA, 8),
            0x1_1234_5807 & (ADDR_MASK | IQA_DW | IQA_QS_MASK)
        );
        assert_eq!(r.read(IQA + 4, 4), 1);
        // Bad sizes and misaligned accesses are ignored.
        assert!(r.write(IQA + 2, 4, 0).is_none());
        assert!(r.write(FEDATA, 8, 0).is_none());
        assert!(r.write(IQA, 2, 0).is_none());
        assert_eq!(r.read(0x300, 4), 0);
        // RW1C.
        r.set32(FSTS, FSTS_IQE | FSTS_PPF | FSTS_PFO);
        r.write(FSTS, 4, u64::from(FSTS_IQE | FSTS_PPF));
        assert_eq!(
            r.get32(FSTS),
            FSTS_PPF | FSTS_PFO,
            "PPF is read-only, IQE clears"
        );
        // GCMD reads zero.
        r.write(GCMD, 4, u64::from(GCMD_TE));
        assert_eq!(r.read(GCMD, 4), 0);
        // Fault records: F clears on 1, the rest is read-only.
        r.set(FRCD_BASE + 16 + 8, FRCD_F | 0x55);
        assert_eq!(
            r.write(FRCD_BASE + 16 + 8, 8, FRCD_F | 0xff).map(|t| t.0),
            Some(Touched::FaultRecord(1))
        );
        assert_eq!(r.get(FRCD_BASE + 16 + 8), 0x55);
        assert!(
            r.write(FRCD_BASE + 16 * 4, 8, 0).is_none(),
            "past the last record"
        );
    }
}
