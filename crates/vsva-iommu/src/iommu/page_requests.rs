//! Page-request forwarding (PCIe PRI) between devices and the queue of `prq.rs`.

use vm_memory::GuestMemoryMmap;

use super::error::IommuError;
use super::Iommu;
use crate::context::{resolve_context, ChainFault};
use crate::fault::{FaultReason, SourceId, Stage};
use crate::paging::WalkFault;
use crate::prq::{PageRequest, PageResponse, PrqError};

impl Iommu {
    /// A device posts a page request (PCIe PRI). The IOMMU reads the device's context entry
    /// as it is in memory (the guest or host may have changed it): it must be present with
    /// PRE set (else fault 0x47), and PASIDE set for a request with PASID (else 0x45).
    ///
    /// # Errors
    ///
    /// [`PrqError::NotEnabled`] when the context entry refuses the request; the fault is
    /// recorded (unless the context entry's FPD suppresses it) and nothing is queued.
    pub fn page_request(&self, req: PageRequest) -> Result<(), IommuError> {
        self.check_page_request(&req)?;
        Ok(self.prq.push(req)?)
    }

    /// The checks of [`Iommu::page_request`] without queueing: for an embedder that routes
    /// page requests itself (to the owner of the PASID) instead of through the IOMMU's queue.
    ///
    /// # Errors
    ///
    /// As [`Iommu::page_request`]: [`PrqError::NotEnabled`], with the fault recorded.
    pub fn check_page_request(&self, req: &PageRequest) -> Result<(), IommuError> {
        let snap = self.mem.snapshot();
        let mem: &GuestMemoryMmap = &snap;
        let checked = resolve_context(mem, &self.cfg, self.root_table_address(), req.source_id)
            .and_then(|ctx| {
                let refuse = |reason| {
                    Err(ChainFault {
                        reason,
                        fpd: ctx.fpd,
                    })
                };
                if !ctx.pre {
                    return refuse(FaultReason::PageRequestDisabled);
                }
                if req.pasid.is_some() && !ctx.pasid_enable {
                    return refuse(FaultReason::PasidDisabled);
                }
                Ok(())
            });
        if let Err(f) = checked {
            let wf = WalkFault {
                reason: f.reason,
                stage: Stage::Context,
                level: 0,
            };
            self.fault(req.source_id, req.pasid, req.addr, req.access, wf, f.fpd);
            return Err(PrqError::NotEnabled {
                source_id: req.source_id,
            }
            .into());
        }
        Ok(())
    }

    /// Takes the queued page requests.
    pub fn take_page_requests(&self) -> Vec<PageRequest> {
        self.prq.take_requests()
    }

    /// Answers a page-request group queued by [`Iommu::page_request`]; the response goes to
    /// the device as [`Iommu::deliver_page_response`] sends it.
    ///
    /// # Errors
    ///
    /// [`PrqError::NoSuchGroup`] when no request of the group with the last-request flag is
    /// outstanding; nothing is delivered.
    pub fn page_response(&self, resp: PageResponse) -> Result<(), IommuError> {
        self.prq.accept_response(&resp)?;
        self.deliver_page_response(resp);
        Ok(())
    }

    /// Sends a page-group response to its device (a page group response descriptor): through
    /// the registered [`crate::DevTlbSink`], or, without one, into the queue the device
    /// reads with [`Iommu::take_page_responses`]. The caller has matched it to a group.
    pub fn deliver_page_response(&self, resp: PageResponse) {
        match self.devtlb_sink() {
            Some(sink) => sink.page_response(resp),
            None => self.prq.deliver(resp),
        }
    }

    /// Responses delivered to a device.
    pub fn take_page_responses(&self, sid: SourceId) -> Vec<PageResponse> {
        self.prq.take_responses(sid)
    }
}

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn page_requests_and_responses() {
        use crate::prq::ResponseCode;
        let io = iommu();
        let req = PageRequest {
            source_id: SID,
            pasid: Some(4),
            addr: 0x1000,
            access: Access::WRITE,
            group: 3,
            last: true,
        };
        assert!(matches!(
            io.page_request(req),
            Err(IommuError::PageRequest(PrqError::NotEnabled { .. }))
        ));
        io.attach_device(
            SID,
            DeviceOptions {
                pri: true,
                ..DeviceOptions::default()
            },
        )
        .unwrap();
        io.page_request(req).unwrap();
        assert_eq!(io.take_page_requests(), vec![req]);
        assert_eq!(io.faults()[0].reason, FaultReason::RootEntryNotPresent);
        let resp = PageResponse {
            source_id: SID,
            pasid: Some(4),
            group: 3,
            code: ResponseCode::Success,
        };
        io.page_response(resp).unwrap();
        assert_eq!(io.take_page_responses(SID), vec![resp]);
    }

    /// Sets or clears `bit` of the first word of `sid`'s context entry in memory, as a guest
    /// driver would, and invalidates the context cache.
    fn set_context_bit(io: &Iommu, sid: SourceId, bit: u32, on: bool) {
        let ct = io.control().ctx_tables[&(sid.bus(), sid.devfn() >= 128)];
        let ce = ContextEntry::address(ct, sid.devfn());
        let q0 = io.memory().load_u64(ce).unwrap();
        let q0 = if on { q0 | 1 << bit } else { q0 & !(1 << bit) };
        io.memory().store_u64(ce, q0).unwrap();
        io.invalidate(&Invalidation::ContextCache(ContextCacheScope::Device {
            source_id: sid,
        }))
        .unwrap();
    }

    #[test]
    fn page_requests_follow_pre_in_memory() {
        let io = iommu();
        attach(&io, SID); // PRE clear
        let req = PageRequest {
            source_id: SID,
            pasid: Some(4),
            addr: 0x1000,
            access: Access::READ,
            group: 1,
            last: true,
        };
        assert!(io.page_request(req).is_err());
        assert_eq!(io.faults()[0].reason, FaultReason::PageRequestDisabled);
        set_context_bit(&io, SID, 4, true); // PRE
        io.page_request(req).unwrap();
        assert_eq!(io.take_page_requests(), vec![req]);
        set_context_bit(&io, SID, 3, false); // PASIDE
        assert!(io.page_request(req).is_err());
        assert_eq!(io.faults()[1].reason, FaultReason::PasidDisabled);
        set_context_bit(&io, SID, 3, true);
        set_context_bit(&io, SID, 4, false);
        assert!(io.page_request(req).is_err());
        assert!(io.take_page_requests().is_empty());
    }

    #[test]
    fn translation_requests_follow_dte_in_memory() {
        let io = iommu();
        let opts = DeviceOptions {
            ats: true,
            ..DeviceOptions::default()
        };
        io.attach_device(SID, opts).unwrap();
        let root = fl_pasid(&io, SID, 1, 1);
        map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
        assert_eq!(read_addr(&io, SID, Some(1), 0x1000), 0x5000);
        set_context_bit(&io, SID, 2, false); // DTE
                                             // The device TLB keeps what it has; a new translation request is refused.
        assert_eq!(read_addr(&io, SID, Some(1), 0x1000), 0x5000);
        let f = io
            .translate(SID, Some(1), 0x2000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage),
            (FaultReason::DeviceTlbDisabled, Stage::Context)
        );
        // Also ahead of a PASID-chain fault.
        assert_eq!(
            reason(io.translate(SID, Some(9), 0x1000, Access::READ)),
            FaultReason::DeviceTlbDisabled
        );
        set_context_bit(&io, SID, 2, true);
        assert_eq!(
            reason(io.translate(SID, Some(1), 0x2000, Access::READ)),
            FaultReason::FirstLevelNotPresent
        );
    }
}
