//! The side effects of guest register writes: global commands (SRTP, TE, QIE; one command per
//! write, status reflecting after it), register-based context-cache and IOTLB invalidation,
//! the status registers' write-1-to-clear consequences, event control unmasking, and the
//! triggers of the invalidation queue and of virtual commands.

use tracing::warn;
use vsva_uapi::iommu::CacheSet;
use vsva_uapi::Granularity;

use crate::interrupt::{condition_cleared, control_written, FAULT_EVENT, INV_EVENT, PRQ_EVENT};
use crate::regs::{
    Touched, CCMD, CCMD_CAIG_SHIFT, CCMD_CIRG_SHIFT, CCMD_ICC, FECTL, FSTS, FSTS_ICE, FSTS_IQE,
    FSTS_ITE, FSTS_PFO, FSTS_PPF, GCMD, GCMD_ONE_SHOT, GCMD_PERSISTENT, GCMD_QIE, GCMD_SRTP,
    GCMD_TE, GSTS, ICS, ICS_IWC, IECTL, IOTLB, IOTLB_IAIG_SHIFT, IOTLB_IIRG_SHIFT, IOTLB_IVT, IQH,
    IQT, IQ_OFFSET_MASK, PECTL, PRS, PRS_PPR, RTADDR, VCMD,
};
use crate::shadow::SyncScope;
use crate::unit::Unit;

/// FSTS bits that raise fault events.
const FAULT_CONDITIONS: u32 = FSTS_PFO | FSTS_PPF | FSTS_IQE | FSTS_ICE | FSTS_ITE;

impl Unit {
    /// A guest write of `size` bytes at `offset`.
    #[inline]
    pub(crate) fn mmio_write(&mut self, offset: u64, size: usize, value: u64) {
        // The two writes a guest makes per operation, whole 64-bit writes of registers with
        // no read-only or write-1-to-clear bits: the access rules reduce to the register's
        // writable mask, so the general decode (`register_write`) is skipped (same result).
        match (offset, size) {
            (IQT, 8) => {
                self.regs.set(IQT, value & IQ_OFFSET_MASK);
                self.process_queue();
            }
            (VCMD, 8) => {
                self.regs.set(VCMD, value);
                self.virtual_command();
            }
            _ => self.register_write(offset, size, value),
        }
    }

    /// Any other write: the general register decode and the write's side effects.
    #[inline(never)]
    fn register_write(&mut self, offset: u64, size: usize, value: u64) {
        let Some((touched, old)) = self.regs.write(offset, size, value) else {
            return;
        };
        let reg = match touched {
            Touched::FaultRecord(_) => return self.fault_records_changed(),
            Touched::Reg(r) => r,
        };
        match reg {
            GCMD => self.global_command(),
            CCMD => self.context_command(),
            IOTLB => self.iotlb_command(),
            FSTS => {
                let now = self.regs.get32(FSTS);
                if now & FAULT_CONDITIONS == 0 {
                    condition_cleared(&mut self.regs, FAULT_EVENT);
                }
                if old as u32 & FSTS_IQE != 0 && now & FSTS_IQE == 0 {
                    // Software fixed the queue: fetching resumes at IQH.
                    self.process_queue();
                }
            }
            FECTL => {
                let m = control_written(&mut self.regs, FAULT_EVENT);
                self.send(m);
            }
            ICS if self.regs.get32(ICS) & ICS_IWC == 0 => {
                condition_cleared(&mut self.regs, INV_EVENT);
            }
            IECTL => {
                let m = control_written(&mut self.regs, INV_EVENT);
                self.send(m);
            }
            PRS if self.regs.get32(PRS) & PRS_PPR == 0 => {
                condition_cleared(&mut self.regs, PRQ_EVENT);
            }
            PECTL => {
                let m = control_written(&mut self.regs, PRQ_EVENT);
                self.send(m);
            }
            IQT if offset == IQT || size == 8 => self.process_queue(),
            VCMD if offset == VCMD || size == 8 => self.virtual_command(),
            _ => {}
        }
    }

    /// GCMD: the command is the one-shot bit written as 1, or the enable bit that differs
    /// from GSTS. A write asking for more than one is ignored (the specification requires
    /// software to serialize them); one asking for none does nothing.
    fn global_command(&mut self) {
        let cmd = self.regs.get32(GCMD);
        let mut sts = self.regs.get32(GSTS);
        let asked = (cmd & GCMD_ONE_SHOT) | ((cmd ^ sts) & GCMD_PERSISTENT);
        if asked.count_ones() != 1 {
            if asked != 0 {
                warn!(
                    gcmd = cmd,
                    gsts = sts,
                    "GCMD write asks for several commands: ignored"
                );
            }
            return;
        }
        match asked {
            GCMD_SRTP => {
                self.root = Some(self.regs.get(RTADDR));
                self.drop_contexts();
                sts |= GCMD_SRTP;
                self.regs.set32(GSTS, sts);
                self.sync(SyncScope::All);
            }
            GCMD_TE => {
                sts ^= GCMD_TE;
                self.drop_contexts();
                self.regs.set32(GSTS, sts);
                self.sync(SyncScope::All);
            }
            GCMD_QIE => {
                sts ^= GCMD_QIE;
                if sts & GCMD_QIE != 0 {
                    self.regs.set(IQH, 0);
                }
                self.regs.set32(GSTS, sts);
            }
            // Write-buffer flush completes at once; fault log, interrupt remapping and
            // compatibility-format interrupts are not offered (CAP / ECAP), so their
            // commands change nothing.
            _ => {}
        }
    }

    /// CCMD with ICC: a register-based context-cache invalidation, done at once (ICC clears,
    /// CAIG reports the granularity asked).
    fn context_command(&mut self) {
        let v = self.regs.get(CCMD);
        if v & CCMD_ICC == 0 {
            return;
        }
        self.drop_contexts();
        self.sync(SyncScope::All);
        let cirg = v >> CCMD_CIRG_SHIFT & 3;
        let v = (v & !CCMD_ICC & !(3 << CCMD_CAIG_SHIFT)) | cirg << CCMD_CAIG_SHIFT;
        self.regs.set(CCMD, v);
    }

    /// IOTLB register with IVT: a register-based IOTLB invalidation (requests without PASID),
    /// passed to the host as a domain-wide IOTLB invalidation; IVT clears, IAIG reports the
    /// granularity asked.
    fn iotlb_command(&mut self) {
        let v = self.regs.get(IOTLB);
        if v & IOTLB_IVT == 0 {
            return;
        }
        self.host_invalidate(CacheSet::IOTLB, Granularity::Domain);
        let iirg = v >> IOTLB_IIRG_SHIFT & 3;
        let v = (v & !IOTLB_IVT & !(3 << IOTLB_IAIG_SHIFT)) | iirg << IOTLB_IAIG_SHIFT;
        self.regs.set(IOTLB, v);
    }
}
