//! Host faults on the guest's devices become guest fault records: the primary fault logging
//! of the VT-d specification (7.2.1) over the fault recording registers — written in turn,
//! F set, PPF while any F is set, FRI naming the record that set PPF, PFO (and the fault
//! lost) when the next register still holds an unread fault — and the fault event.

use crate::backend::HostFault;
use crate::interrupt::{condition_cleared, raise, FAULT_EVENT};
use crate::regs::{
    FRCD_BASE, FRCD_EXE, FRCD_F, FRCD_FR_SHIFT, FRCD_PP, FRCD_PRIV, FRCD_PV_SHIFT, FRCD_T1, FSTS,
    FSTS_FRI_SHIFT, FSTS_ICE, FSTS_IQE, FSTS_ITE, FSTS_PFO, FSTS_PPF,
};
use crate::unit::Unit;

impl Unit {
    fn fault_records(&self) -> usize {
        usize::from(self.cfg.fault_records.clamp(1, 256))
    }

    /// Records `f` if it comes from one of the guest's devices; returns whether it was.
    pub(crate) fn record_fault(&mut self, f: &HostFault) -> bool {
        let Some(guest) = self.guest_sid(f.source_id) else {
            return false;
        };
        let i = self.next_fault_record;
        let at = FRCD_BASE + 16 * i as u64;
        let fsts = self.regs.get32(FSTS);
        if self.regs.get(at + 8) & FRCD_F != 0 {
            self.stats.faults_overflowed += 1;
            if fsts & FSTS_PFO == 0 {
                self.regs.set32(FSTS, fsts | FSTS_PFO);
                let m = raise(&mut self.regs, FAULT_EVENT);
                self.send(m);
            }
            return true;
        }
        let mut hi = FRCD_F | u64::from(guest.0) | u64::from(f.reason) << FRCD_FR_SHIFT;
        if !f.write {
            hi |= FRCD_T1;
        }
        if f.execute {
            hi |= FRCD_EXE;
        }
        if f.privileged {
            hi |= FRCD_PRIV;
        }
        if let Some(p) = f.pasid {
            hi |= FRCD_PP | u64::from(p & 0xf_ffff) << FRCD_PV_SHIFT;
        }
        self.regs.set(at, f.addr & !0xfff);
        self.regs.set(at + 8, hi);
        self.next_fault_record = (i + 1) % self.fault_records();
        self.stats.faults_recorded += 1;
        if fsts & FSTS_PPF == 0 {
            let fsts = (fsts & !(0xff << FSTS_FRI_SHIFT)) | FSTS_PPF | (i as u32) << FSTS_FRI_SHIFT;
            self.regs.set32(FSTS, fsts);
            let m = raise(&mut self.regs, FAULT_EVENT);
            self.send(m);
        }
        true
    }

    /// Software cleared F in a record: PPF follows whether any record is still pending.
    pub(crate) fn fault_records_changed(&mut self) {
        let pending = (0..self.fault_records())
            .any(|i| self.regs.get(FRCD_BASE + 16 * i as u64 + 8) & FRCD_F != 0);
        if pending {
            return;
        }
        let fsts = self.regs.get32(FSTS) & !FSTS_PPF;
        self.regs.set32(FSTS, fsts);
        if fsts & (FSTS_PFO | FSTS_IQE | FSTS_ICE | FSTS_ITE) == 0 {
            condition_cleared(&mut self.regs, FAULT_EVENT);
        }
    }
}
