//! Virtual commands (VT-d 3.3 layout, as Linux's `pasid.h` encodes it): VCMD allocate / free
//! PASID become PASID_REQUEST on the host (guest PASID = host PASID); VCRSP carries the
//! in-progress bit, the status code and the result.

use tracing::warn;

use crate::regs::{VCMD, VCRSP};
use crate::unit::Unit;

/// VCMD command: allocate a PASID.
pub const VCMD_ALLOC: u64 = 1;
/// VCMD command: free the PASID in the operand.
pub const VCMD_FREE: u64 = 2;
/// VCMD operand / VCRSP result position (bits 63:16 / the PASID in 35:16).
pub const VCMD_OPERAND_SHIFT: u32 = 16;
/// VCRSP in-progress bit.
pub const VCRSP_IP: u64 = 1;
/// VCRSP status code position (bits 7:1).
pub const VCRSP_SC_SHIFT: u32 = 1;
/// VCRSP status: success.
pub const VCRSP_SC_SUCCESS: u64 = 0;
/// VCRSP status: no PASID available (allocate) / invalid PASID (free). The model also
/// answers it for a command it does not implement.
pub const VCRSP_SC_FAILED: u64 = 16;

impl Unit {
    /// Runs the command in VCMD. IP is set while it runs; the command completes within the
    /// guest's write, so a later read sees IP clear and the outcome.
    pub(crate) fn virtual_command(&mut self) {
        let v = self.regs.get(VCMD);
        self.regs.set(VCRSP, VCRSP_IP);
        self.stats.virtual_commands += 1;
        let failed = VCRSP_SC_FAILED << VCRSP_SC_SHIFT;
        let rsp = match v & 0xff {
            VCMD_ALLOC => {
                let max = (1u32 << self.id.pasid_bits) - 1;
                match self.backend.pasid_alloc(1, max) {
                    Ok(p) => {
                        self.allocated.insert(p, ());
                        u64::from(p) << VCMD_OPERAND_SHIFT
                    }
                    Err(e) => {
                        warn!(error = %e, "VCMD allocate: the host refused");
                        failed
                    }
                }
            }
            VCMD_FREE => {
                let operand = v >> VCMD_OPERAND_SHIFT;
                match u32::try_from(operand) {
                    Ok(p) if self.allocated.contains_key(&p) => {
                        self.unshadow(p);
                        match self.backend.pasid_free(p) {
                            Ok(()) => {
                                self.allocated.remove(&p);
                                VCRSP_SC_SUCCESS
                            }
                            Err(e) => {
                                warn!(pasid = p, error = %e, "VCMD free: the host refused");
                                failed
                            }
                        }
                    }
                    // Not a PASID this guest holds: never freed, whoever owns it.
                    _ => failed,
                }
            }
            _ => failed,
        };
        self.regs.set(VCRSP, rsp);
    }
}
