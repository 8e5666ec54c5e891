//! Interrupts out of the unit: the MSI message a VMM delivers, the sink it wires to its
//! interrupt controller, and the three event sources (fault, invalidation completion, page
//! request) with their control / data / address registers and the IM / IP rules.

use crate::regs::{
    RegisterFile, ECTL_IM, ECTL_IP, FEADDR, FECTL, FEDATA, FEUADDR, IEADDR, IECTL, IEDATA, IEUADDR,
    PEADDR, PECTL, PEDATA, PEUADDR,
};

/// An MSI the guest programmed into an event's data and address registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Address: the upper address register in bits 63:32, the address register in 31:0.
    pub address: u64,
    /// Data register value.
    pub data: u32,
}

/// Where the unit's interrupts go: the VMM's MSI delivery. Called without any lock of the
/// unit held, so it may call back into it.
pub trait InterruptSink: Send + Sync {
    /// Delivers one message.
    fn deliver(&self, msg: MsiMessage);
}

impl<F: Fn(MsiMessage) + Send + Sync> InterruptSink for F {
    fn deliver(&self, msg: MsiMessage) {
        self(msg)
    }
}

/// One event source's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) ctl: u64,
    data: u64,
    addr: u64,
    uaddr: u64,
}

/// Fault events (primary faults, IQE / ICE / ITE).
pub(crate) const FAULT_EVENT: Event = Event {
    ctl: FECTL,
    data: FEDATA,
    addr: FEADDR,
    uaddr: FEUADDR,
};
/// Invalidation completion events (wait descriptors with IF).
pub(crate) const INV_EVENT: Event = Event {
    ctl: IECTL,
    data: IEDATA,
    addr: IEADDR,
    uaddr: IEUADDR,
};
/// Page request events.
pub(crate) const PRQ_EVENT: Event = Event {
    ctl: PECTL,
    data: PEDATA,
    addr: PEADDR,
    uaddr: PEUADDR,
};

fn message(regs: &RegisterFile, ev: Event) -> MsiMessage {
    MsiMessage {
        address: u64::from(regs.get32(ev.uaddr)) << 32 | u64::from(regs.get32(ev.addr)),
        data: regs.get32(ev.data),
    }
}

/// The event's condition arose: with IM clear the message goes out (IP stays clear),
/// with IM set IP is set and the message waits for the unmask.
pub(crate) fn raise(regs: &mut RegisterFile, ev: Event) -> Option<MsiMessage> {
    let ctl = regs.get32(ev.ctl);
    if ctl & ECTL_IM != 0 {
        regs.set32(ev.ctl, ctl | ECTL_IP);
        return None;
    }
    regs.set32(ev.ctl, ctl & !ECTL_IP);
    Some(message(regs, ev))
}

/// After a write to the control register: IM cleared with IP set sends the pending message.
pub(crate) fn control_written(regs: &mut RegisterFile, ev: Event) -> Option<MsiMessage> {
    let ctl = regs.get32(ev.ctl);
    if ctl & ECTL_IM == 0 && ctl & ECTL_IP != 0 {
        regs.set32(ev.ctl, ctl & !ECTL_IP);
        return Some(message(regs, ev));
    }
    None
}

/// The condition was cleared by software before the message went out: IP clears.
pub(crate) fn condition_cleared(regs: &mut RegisterFile, ev: Event) {
    let ctl = regs.get32(ev.ctl);
    regs.set32(ev.ctl, ctl & !ECTL_IP);
}
