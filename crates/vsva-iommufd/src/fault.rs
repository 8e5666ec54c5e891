//! Fault queues (Linux `eventq.c`, formerly `fault.c`): `IOMMU_FAULT_QUEUE_ALLOC`, page
//! requests of devices attached through an HWPT that names a queue delivered to it as
//! `iommu_hwpt_pgfault` records, reading them, and writing `iommu_hwpt_page_response`s back
//! to the IOMMU.
//!
//! # Joining the page-request path
//!
//! The IOMMU queues page requests host-wide ([`vsva_iommu::Iommu::page_request`]). Whoever
//! drains that queue hands each request to the context that owns the device with
//! [`IommufdCtx::deliver_page_request`], which takes it if the device (and PASID) is attached
//! here through an HWPT with a fault queue, and gives it back otherwise. Until the daemon
//! routes requests to their owners, [`route_page_requests`] drains the queue for a set of
//! contexts; a router joins by calling `deliver_page_request` for the owning context
//! instead.

use vsva_iommu::prq::{PageRequest, PageResponse, ResponseCode};
use vsva_iommu::Iommu;
use vsva_uapi::iommufd::{
    IommuFaultAlloc, IommuHwptPageResponse, IommuHwptPgfault, IOMMUFD_PAGE_RESP_INVALID,
    IOMMUFD_PAGE_RESP_SUCCESS,
};

use crate::ctx::IommufdCtx;
use crate::error::IommufdError;
use crate::fault_queue::{FaultGroup, FaultQueue};
use crate::objects::Object;

impl IommufdCtx {
    /// `IOMMU_FAULT_QUEUE_ALLOC` (`iommufd_fault_alloc`): a new, empty fault queue; its id
    /// goes to `out_fault_id` and (standing for its fd) `out_fault_fd`.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` for non-zero `flags`.
    pub fn fault_queue_alloc(&self, cmd: &mut IommuFaultAlloc) -> Result<(), IommufdError> {
        if cmd.flags != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "must be 0",
            ));
        }
        let id = self.lock().insert(Object::Fault(FaultQueue::default()));
        cmd.out_fault_id = id;
        cmd.out_fault_fd = id;
        Ok(())
    }

    /// Takes a page request if its device is bound here and the request's PASID (or its
    /// requests without PASID) is attached through an HWPT with a fault queue: the request
    /// joins that queue (a group is readable once its last request arrived). Gives the
    /// request back otherwise.
    pub fn deliver_page_request(&self, req: PageRequest) -> Result<(), PageRequest> {
        let mut objs = self.lock();
        let target = objs.iter().find_map(|(id, e)| match &e.object {
            Object::Device(d) if d.sid == req.source_id => {
                d.attached.get(&req.pasid).map(|&hwpt| (id, hwpt))
            }
            _ => None,
        });
        let Some((dev_id, hwpt)) = target else {
            return Err(req);
        };
        let fault = match objs.get(hwpt).map(|e| &e.object) {
            Ok(Object::HwptNested(h)) => h.fault,
            Ok(Object::HwptPaging(h)) => h.fault,
            _ => None,
        };
        let Some(queue) = fault.and_then(|f| objs.fault_mut(f, Self::WRONG_KIND).ok()) else {
            return Err(req);
        };
        queue.push(dev_id, &req);
        Ok(())
    }

    /// Reads complete fault groups from queue `fault_id`, oldest first, as many whole groups
    /// as fit in `max` records (`read(2)` on the fault fd). Each group read gets a cookie and
    /// waits for its response.
    ///
    /// # Errors
    ///
    /// `ENOENT` when `fault_id` is not a fault queue of this context.
    pub fn read_faults(
        &self,
        fault_id: u32,
        max: usize,
    ) -> Result<Vec<IommuHwptPgfault>, IommufdError> {
        let mut objs = self.lock();
        Ok(objs.fault_mut(fault_id, Self::WRONG_KIND)?.read(max))
    }

    /// Writes page responses to queue `fault_id` (`write(2)` on the fault fd,
    /// `iommufd_fault_fops_write`), in order: each answers the group of its cookie in the
    /// IOMMU, which delivers it to the device. Returns how many were taken; a refused one
    /// stops the write, and is the error only when it was the first.
    ///
    /// # Errors
    ///
    /// `ENOENT` when `fault_id` is not a fault queue here; for the first response: a code
    /// other than SUCCESS or INVALID, or a cookie naming no group waiting for its response →
    /// `EINVAL`, and nothing changes.
    pub fn respond_faults(
        &self,
        fault_id: u32,
        responses: &[IommuHwptPageResponse],
    ) -> Result<usize, IommufdError> {
        let mut objs = self.lock();
        let queue = objs.fault_mut(fault_id, Self::WRONG_KIND)?;
        let mut done = 0;
        for r in responses {
            let code = match r.code {
                IOMMUFD_PAGE_RESP_SUCCESS => ResponseCode::Success,
                IOMMUFD_PAGE_RESP_INVALID => ResponseCode::InvalidRequest,
                other => {
                    return refused(
                        done,
                        IommufdError::invalid(
                            "code",
                            other.into(),
                            "must be IOMMUFD_PAGE_RESP_SUCCESS or IOMMUFD_PAGE_RESP_INVALID",
                        ),
                    );
                }
            };
            if !queue.is_awaiting(r.cookie) {
                return refused(
                    done,
                    IommufdError::invalid(
                        "cookie",
                        r.cookie.into(),
                        "no fault group read from this queue waits for this cookie",
                    ),
                );
            }
            let group = queue.take_awaiting(r.cookie).expect("checked above");
            self.answer(&group, code);
            done += 1;
        }
        Ok(done)
    }

    /// Answers `groups` "invalid request" (their device or queue is going away, as
    /// `iommufd_auto_response_faults` does).
    pub(crate) fn answer_invalid(&self, groups: Vec<FaultGroup>) {
        for g in groups {
            self.answer(&g, ResponseCode::InvalidRequest);
        }
    }

    fn answer(&self, group: &FaultGroup, code: ResponseCode) {
        let resp = PageResponse {
            source_id: group.sid,
            pasid: group.pasid,
            group: group.grpid,
            code,
        };
        // The IOMMU recorded the group when its last request was queued; an answer it does
        // not expect means the device was reset meanwhile, which only loses this answer.
        if let Err(e) = self.vfio.iommu().page_response(resp) {
            tracing::warn!("page response for {} group {}: {e}", group.sid, group.grpid);
        }
    }
}

/// The answer of a write refused at response `done`: the count when some were taken.
fn refused(done: usize, err: IommufdError) -> Result<usize, IommufdError> {
    if done > 0 {
        Ok(done)
    } else {
        Err(err)
    }
}

/// Drains the IOMMU's page-request queue into the contexts that own the requesting devices;
/// returns the requests none of them took (for the embedder's other consumers).
pub fn route_page_requests(iommu: &Iommu, contexts: &[&IommufdCtx]) -> Vec<PageRequest> {
    let mut left = Vec::new();
    'next: for mut req in iommu.take_page_requests() {
        for ctx in contexts {
            match ctx.deliver_page_request(req) {
                Ok(()) => continue 'next,
                Err(back) => req = back,
            }
        }
        left.push(req);
    }
    left
}
