//! Page requests into the guest's page request queue (VT-d 7.5): a 256-bit page request
//! descriptor at PQT, PQT advanced, PPR set with the page request event; a full or unset
//! queue sets PRO and drops the request. Where requests come from is the hook of
//! `page_source.rs`.

use vsva_iommu::prq::PageRequest;

use crate::interrupt::{raise, PRQ_EVENT};
use crate::regs::{ADDR_MASK, PQA, PQH, PQT, PQ_OFFSET_MASK, PRS, PRS_PPR, PRS_PRO};
use crate::unit::Unit;

/// Size of a page request descriptor.
const PRQ_DESC: u64 = 32;

impl Unit {
    /// Writes `req` into the guest's page request queue; returns whether it landed.
    pub(crate) fn deliver_page_request(&mut self, req: &PageRequest) -> bool {
        let Some(guest) = self.guest_sid(req.source_id) else {
            return false;
        };
        let pqa = self.regs.get(PQA);
        let size = 4096u64 << (pqa & 7);
        let head = self.regs.get(PQH) & PQ_OFFSET_MASK;
        let tail = self.regs.get(PQT) & PQ_OFFSET_MASK;
        let next = (tail + PRQ_DESC) % size;
        let mut desc = [0u64; 4];
        desc[0] = 1 | u64::from(guest.0) << 16;
        if let Some(p) = req.pasid {
            desc[0] |= 1 << 8 | u64::from(p & 0xf_ffff) << 32;
        }
        desc[0] |= u64::from(req.access.execute) << 52 | u64::from(req.access.privileged) << 53;
        desc[1] = 1
            | u64::from(req.access.write) << 1
            | u64::from(req.last) << 2
            | u64::from(req.group & 0x1ff) << 3
            | (req.addr & ADDR_MASK);
        let mut bytes = [0u8; 32];
        for (i, w) in desc.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let ok = self.id.prs
            && pqa & ADDR_MASK != 0
            && tail < size
            && next != head
            && self.mem.write((pqa & ADDR_MASK) + tail, &bytes).is_ok();
        let prs = self.regs.get32(PRS);
        if !ok {
            self.stats.page_requests_overflowed += 1;
            if prs & PRS_PRO == 0 {
                self.regs.set32(PRS, prs | PRS_PRO);
            }
            return false;
        }
        self.regs.set(PQT, next);
        self.stats.page_requests += 1;
        if prs & PRS_PPR == 0 {
            self.regs.set32(PRS, prs | PRS_PPR);
            let m = raise(&mut self.regs, PRQ_EVENT);
            self.send(m);
        }
        true
    }

    /// Takes the source's requests and delivers the guest's; returns how many landed.
    pub(crate) fn pump_page_requests(&mut self) -> usize {
        let Some(src) = self.page_requests.as_mut() else {
            return 0;
        };
        let reqs = src.take();
        reqs.iter().filter(|r| self.deliver_page_request(r)).count()
    }
}
