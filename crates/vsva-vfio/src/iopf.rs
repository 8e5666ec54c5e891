//! I/O page faults: page requests (PCIe PRI) routed to the process that owns the PASID (the
//! one that bound its table), that process's page responses routed back to the device, and
//! DMA faults on a PASID reported to its owner.
//!
//! The router keeps, under one lock that is a leaf of the crate's lock order (no other lock
//! is taken and no IOMMU or sink call is made while it is held):
//!
//! * the owners: which process bound each (device, PASID), recorded at bind and forgotten at
//!   unbind, PASID free (a teardown subscriber of the PASID space) and device detach;
//! * requests of groups whose last request has not come yet, and the groups waiting for a
//!   response, each with a cookie (iommufd's `iommu_hwpt_pgfault.cookie`), its owner and a
//!   deadline;
//! * the outstanding count of each device, bounded by [`crate::VfioConfig::page_requests_per_device`]
//!   (the PRI capability's outstanding page request allocation).
//!
//! The rules (Linux `io-pgfault.c` and iommufd's fault queue): a group is reported to its
//! owner once its last request arrives, every request of the group with the same cookie; a
//! response names the cookie and must come from the owner (else `EINVAL`, nothing changes);
//! an unanswered group is answered FAILURE when it expires ([`crate::Vfio::expire_page_requests`]);
//! unbind, free, detach and the owner's death answer every pending group of the PASID
//! FAILURE. A request the router cannot hand to anyone (no PASID, no owner, no sink) is
//! answered INVALID at once, as the kernel answers a fault no handler takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use vsva_ioasid::{Pasid, TeardownSubscriber, TeardownTicket};
use vsva_iommu::{
    Access, Fault, FaultObserver, Iommu, PageRequest, PageResponse, ResponseCode, SourceId,
};

use crate::error::VfioError;
use crate::sync::lock;
use crate::types::ProcessToken;

// The record's flags and permissions are iommufd's (`iommu_hwpt_pgfault`), defined once in
// `vsva-uapi`.
pub use vsva_uapi::iommufd::{
    IOMMU_PGFAULT_FLAGS_LAST_PAGE as PGFAULT_FLAGS_LAST_PAGE,
    IOMMU_PGFAULT_FLAGS_PASID_VALID as PGFAULT_FLAGS_PASID_VALID,
    IOMMU_PGFAULT_PERM_EXEC as PGFAULT_PERM_EXEC, IOMMU_PGFAULT_PERM_PRIV as PGFAULT_PERM_PRIV,
    IOMMU_PGFAULT_PERM_READ as PGFAULT_PERM_READ, IOMMU_PGFAULT_PERM_WRITE as PGFAULT_PERM_WRITE,
};

/// One page request as its owner receives it: the fields of iommufd's
/// `struct iommu_hwpt_pgfault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageFaultRecord {
    /// [`PGFAULT_FLAGS_PASID_VALID`] (always: only PASID requests are routed) and
    /// [`PGFAULT_FLAGS_LAST_PAGE`] on the last request of the group.
    pub flags: u32,
    /// The device: its requester id (`bus << 8 | devfn`).
    pub dev_id: u32,
    /// The PASID of the request.
    pub pasid: u32,
    /// The page request group index (9 bits).
    pub grpid: u32,
    /// `PGFAULT_PERM_*` bits of the access asked for.
    pub perm: u32,
    /// The page address (4 KiB aligned).
    pub addr: u64,
    /// Bytes asked for: one page.
    pub length: u32,
    /// Names the group in the response; every request of a group has the same one.
    pub cookie: u32,
}

impl PageFaultRecord {
    /// The access asked for.
    pub fn access(&self) -> Access {
        Access {
            write: self.perm & PGFAULT_PERM_WRITE != 0,
            execute: self.perm & PGFAULT_PERM_EXEC != 0,
            privileged: self.perm & PGFAULT_PERM_PRIV != 0,
        }
    }
}

/// Where page requests and DMA faults go: the embedder's delivery to the owning process (an
/// event queue of a daemon, or a thread in process). It must not block (queue and return).
/// `page_request` is called on the device's thread with no lock of the VFIO layer held, and
/// may call [`crate::Vfio::page_response`]; `dma_fault` is called where the fault happened,
/// possibly with the IOMMU's or the VFIO layer's locks held, and must not call back into
/// either.
pub trait FaultSink: Send + Sync {
    /// One request of a group that is now complete, for `owner` to answer with the cookie.
    fn page_request(&self, owner: &ProcessToken, rec: PageFaultRecord);
    /// A DMA fault on a PASID `owner` bound (also in the IOMMU's fault log).
    fn dma_fault(&self, owner: &ProcessToken, fault: &Fault);
}

/// A group reported to its owner and not answered yet.
struct Group {
    owner: ProcessToken,
    source_id: SourceId,
    pasid: Pasid,
    grpid: u16,
    /// Requests of the group, counted against the device's outstanding bound.
    requests: u32,
    deadline: Instant,
}

/// Requests of a group whose last request has not arrived.
struct Partial {
    requests: Vec<PageRequest>,
    deadline: Instant,
}

#[derive(Default)]
struct RouterState {
    owners: HashMap<(SourceId, Pasid), ProcessToken>,
    partial: HashMap<(SourceId, Pasid, u16), Partial>,
    groups: HashMap<u32, Group>,
    outstanding: HashMap<SourceId, u32>,
    next_cookie: u32,
}

impl RouterState {
    fn release(&mut self, sid: SourceId, n: u32) {
        if let Some(count) = self.outstanding.get_mut(&sid) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.outstanding.remove(&sid);
            }
        }
    }

    /// Forgets the incomplete groups and the pending groups the predicates pick, and frees
    /// their share of the outstanding bound; returns the FAILURE responses the pending ones
    /// are owed.
    fn drop_where(
        &mut self,
        partial: impl Fn(SourceId, Pasid, &Partial) -> bool,
        group: impl Fn(&Group) -> bool,
    ) -> Vec<PageResponse> {
        let mut released = Vec::new();
        self.partial.retain(|&(sid, pasid, _), p| {
            let gone = partial(sid, pasid, p);
            if gone {
                released.push((sid, p.requests.len() as u32));
            }
            !gone
        });
        let mut answers = Vec::new();
        self.groups.retain(|_, g| {
            let gone = group(g);
            if gone {
                released.push((g.source_id, g.requests));
                answers.push(response(g, ResponseCode::Failure));
            }
            !gone
        });
        for (sid, n) in released {
            self.release(sid, n);
        }
        answers
    }
}

fn response(g: &Group, code: ResponseCode) -> PageResponse {
    PageResponse {
        source_id: g.source_id,
        pasid: Some(g.pasid),
        group: g.grpid,
        code,
    }
}

/// The page-request router of one host (see the module docs).
pub(crate) struct Router {
    iommu: Arc<Iommu>,
    timeout: Duration,
    state: Mutex<RouterState>,
    sink: RwLock<Option<Arc<dyn FaultSink>>>,
}

impl Router {
    pub(crate) fn new(iommu: Arc<Iommu>, timeout: Duration) -> Arc<Self> {
        let router = Arc::new(Router {
            iommu,
            timeout,
            state: Mutex::new(RouterState::default()),
            sink: RwLock::new(None),
        });
        let observer: Arc<dyn FaultObserver> = Arc::new(DmaFaults(Arc::downgrade(&router)));
        router.iommu.fault_log().set_observer(Some(observer));
        router
    }

    pub(crate) fn set_sink(&self, sink: Option<Arc<dyn FaultSink>>) {
        *self.sink.write().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    fn sink(&self) -> Option<Arc<dyn FaultSink>> {
        self.sink.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends responses to their devices (with no lock held).
    fn answer(&self, answers: Vec<PageResponse>) -> usize {
        let n = answers.len();
        for resp in answers {
            self.iommu.deliver_page_response(resp);
        }
        n
    }

    /// `owner` bound `pasid` on `sid`.
    pub(crate) fn record_owner(&self, sid: SourceId, pasid: Pasid, owner: ProcessToken) {
        lock(&self.state).owners.insert((sid, pasid), owner);
    }

    /// `pasid` is no longer bound on `sid` (`None`: on any device): its owner is forgotten
    /// and every pending group answered FAILURE.
    pub(crate) fn forget_pasid(&self, sid: Option<SourceId>, pasid: Pasid) {
        let pick = |s: SourceId, p: Pasid| p == pasid && sid.is_none_or(|want| want == s);
        let answers = {
            let mut st = lock(&self.state);
            st.owners.retain(|&(s, p), _| !pick(s, p));
            st.drop_where(|s, p, _| pick(s, p), |g| pick(g.source_id, g.pasid))
        };
        self.answer(answers);
    }

    /// `sid` left its domain (detach, reset): every owner of its PASIDs is forgotten and every
    /// pending group answered FAILURE.
    pub(crate) fn forget_device(&self, sid: SourceId) {
        let answers = {
            let mut st = lock(&self.state);
            st.owners.retain(|&(s, _), _| s != sid);
            st.drop_where(|s, _, _| s == sid, |g| g.source_id == sid)
        };
        self.answer(answers);
    }

    /// Routes `req` (see [`crate::Vfio::page_request`]); the device may have at most `limit`
    /// requests outstanding.
    pub(crate) fn page_request(
        &self,
        req: PageRequest,
        now: Instant,
        limit: u32,
    ) -> Result<(), VfioError> {
        let invalid = |req: &PageRequest| PageResponse {
            source_id: req.source_id,
            pasid: req.pasid,
            group: req.group & 0x1ff,
            code: ResponseCode::InvalidRequest,
        };
        let Some(pasid) = req.pasid else {
            // Only PASID requests have an owner to resolve them (the stage 2 of requests
            // without PASID is pinned): the VT-d driver answers them INVALID.
            if req.last {
                self.iommu.deliver_page_response(invalid(&req));
            }
            return Ok(());
        };
        self.iommu
            .check_page_request(&req)
            .map_err(|e| VfioError::iommu("page request", e))?;
        let sid = req.source_id;
        let grpid = req.group & 0x1ff;
        let sink = self.sink();
        let (owner, records) = {
            let mut st = lock(&self.state);
            let outstanding = st.outstanding.get(&sid).copied().unwrap_or(0);
            if outstanding >= limit {
                return Err(VfioError::PageRequestLimit {
                    source_id: sid,
                    limit,
                });
            }
            let owner = st.owners.get(&(sid, pasid)).copied();
            let (Some(owner), Some(_)) = (owner, sink.as_ref()) else {
                // Nobody to resolve it: the group's requests so far are dropped.
                if let Some(p) = st.partial.remove(&(sid, pasid, grpid)) {
                    st.release(sid, p.requests.len() as u32);
                }
                drop(st);
                if req.last {
                    self.iommu.deliver_page_response(invalid(&req));
                }
                return Ok(());
            };
            *st.outstanding.entry(sid).or_default() += 1;
            if !req.last {
                st.partial
                    .entry((sid, pasid, grpid))
                    .or_insert_with(|| Partial {
                        requests: Vec::new(),
                        deadline: now + self.timeout,
                    })
                    .requests
                    .push(req);
                return Ok(());
            }
            let mut requests = st
                .partial
                .remove(&(sid, pasid, grpid))
                .map(|p| p.requests)
                .unwrap_or_default();
            requests.push(req);
            // A cookie names one pending group: skip any still pending after a wrap.
            let mut cookie = st.next_cookie;
            while st.groups.contains_key(&cookie) {
                cookie = cookie.wrapping_add(1);
            }
            st.next_cookie = cookie.wrapping_add(1);
            st.groups.insert(
                cookie,
                Group {
                    owner,
                    source_id: sid,
                    pasid,
                    grpid,
                    requests: requests.len() as u32,
                    deadline: now + self.timeout,
                },
            );
            drop(st);
            let last = requests.len() - 1;
            let records: Vec<PageFaultRecord> = requests
                .iter()
                .enumerate()
                .map(|(i, r)| record(r, pasid, cookie, i == last))
                .collect();
            (owner, records)
        };
        if let Some(sink) = sink {
            for rec in records {
                sink.page_request(&owner, rec);
            }
        }
        Ok(())
    }

    pub(crate) fn page_response(
        &self,
        owner: ProcessToken,
        cookie: u32,
        code: ResponseCode,
    ) -> Result<(), VfioError> {
        let resp = {
            let mut st = lock(&self.state);
            match st.groups.get(&cookie) {
                None => {
                    return Err(VfioError::UnknownPageGroup {
                        cookie,
                        caller: owner,
                    })
                }
                Some(g) if g.owner != owner => {
                    return Err(VfioError::UnknownPageGroup {
                        cookie,
                        caller: owner,
                    })
                }
                Some(_) => {}
            }
            let g = st.groups.remove(&cookie).expect("checked above");
            st.release(g.source_id, g.requests);
            response(&g, code)
        };
        self.iommu.deliver_page_response(resp);
        Ok(())
    }

    /// Answers FAILURE to every group whose deadline is at or before `now`, and drops the
    /// requests of incomplete groups as old. Returns the groups answered.
    pub(crate) fn expire(&self, now: Instant) -> usize {
        let answers =
            lock(&self.state).drop_where(|_, _, p| p.deadline <= now, |g| g.deadline <= now);
        self.answer(answers)
    }

    /// Pending page requests of `sid`: requests of incomplete groups and of groups waiting
    /// for their response.
    pub(crate) fn outstanding(&self, sid: SourceId) -> u32 {
        lock(&self.state)
            .outstanding
            .get(&sid)
            .copied()
            .unwrap_or(0)
    }

    fn owner(&self, sid: SourceId, pasid: Pasid) -> Option<ProcessToken> {
        lock(&self.state).owners.get(&(sid, pasid)).copied()
    }
}

fn record(r: &PageRequest, pasid: Pasid, cookie: u32, last: bool) -> PageFaultRecord {
    let a = r.access;
    let perm = if a.write {
        PGFAULT_PERM_WRITE
    } else {
        PGFAULT_PERM_READ
    } | if a.execute { PGFAULT_PERM_EXEC } else { 0 }
        | if a.privileged { PGFAULT_PERM_PRIV } else { 0 };
    PageFaultRecord {
        flags: PGFAULT_FLAGS_PASID_VALID | if last { PGFAULT_FLAGS_LAST_PAGE } else { 0 },
        dev_id: u32::from(r.source_id.0),
        pasid,
        grpid: u32::from(r.group & 0x1ff),
        perm,
        addr: r.addr & !0xfff,
        length: 4096,
        cookie,
    }
}

/// The IOMMU fault log's observer: a recorded fault on a PASID goes to its owner.
struct DmaFaults(Weak<Router>);

impl FaultObserver for DmaFaults {
    fn fault(&self, fault: &Fault) {
        let Some(router) = self.0.upgrade() else {
            return;
        };
        let Some(pasid) = fault.pasid else {
            return;
        };
        let Some(owner) = router.owner(fault.source_id, pasid) else {
            return;
        };
        if let Some(sink) = router.sink() {
            sink.dma_fault(&owner, fault);
        }
    }
}

/// The router as a teardown subscriber of the PASID space: a freed PASID (freed by its
/// process, or with every other PASID when the process goes) has its pending groups answered
/// FAILURE before the number can be reused.
pub(crate) struct FreedPasids(pub(crate) Weak<Router>);

impl TeardownSubscriber for FreedPasids {
    fn teardown(&self, pasid: Pasid, ticket: TeardownTicket) {
        if let Some(router) = self.0.upgrade() {
            router.forget_pasid(None, pasid);
        }
        ticket.complete();
    }

    fn name(&self) -> &str {
        "vsva-vfio page requests"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(access: Access, last: bool) -> PageRequest {
        PageRequest {
            source_id: SourceId::new(0, 3, 0),
            pasid: Some(7),
            addr: 0x1234_5678,
            access,
            group: 0x3ff,
            last,
        }
    }

    #[test]
    fn records_carry_the_iommufd_fields() {
        let cases = [
            (Access::READ, PGFAULT_PERM_READ),
            (Access::WRITE, PGFAULT_PERM_WRITE),
            (Access::EXEC, PGFAULT_PERM_READ | PGFAULT_PERM_EXEC),
            (
                Access::WRITE.privileged(),
                PGFAULT_PERM_WRITE | PGFAULT_PERM_PRIV,
            ),
        ];
        for (access, perm) in cases {
            let rec = record(&req(access, false), 7, 99, false);
            assert_eq!(rec.perm, perm, "{access:?}");
            assert_eq!(rec.access(), access);
            assert_eq!(rec.flags, PGFAULT_FLAGS_PASID_VALID);
            assert_eq!(
                (rec.addr, rec.length, rec.grpid),
                (0x1234_5000, 4096, 0x1ff)
            );
            assert_eq!((rec.dev_id, rec.cookie), (0x18, 99));
        }
        let last = record(&req(Access::READ, true), 7, 1, true);
        assert_eq!(
            last.flags,
            PGFAULT_FLAGS_PASID_VALID | PGFAULT_FLAGS_LAST_PAGE
        );
    }

    #[test]
    fn dropping_groups_frees_their_share_of_the_bound() {
        let sid = SourceId::new(0, 3, 0);
        let other = SourceId::new(0, 4, 0);
        let owner = ProcessToken::new(1, 1);
        let now = Instant::now();
        let mut st = RouterState::default();
        st.outstanding.insert(sid, 5);
        st.outstanding.insert(other, 1);
        st.partial.insert(
            (sid, 7, 1),
            Partial {
                requests: vec![req(Access::READ, false); 2],
                deadline: now,
            },
        );
        for (cookie, (s, requests)) in [(sid, 3), (other, 1)].into_iter().enumerate() {
            let g = Group {
                owner,
                source_id: s,
                pasid: 7,
                grpid: 2,
                requests,
                deadline: now,
            };
            st.groups.insert(cookie as u32, g);
        }
        let answers = st.drop_where(|s, _, _| s == sid, |g| g.source_id == sid);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].code, ResponseCode::Failure);
        assert_eq!(st.outstanding.get(&sid), None, "2 partial + 3 in the group");
        assert_eq!(st.outstanding.get(&other), Some(&1));
        assert_eq!(st.groups.len(), 1);
    }
}
