//! The device side: devices handed to other processes (grant, open, revoke), ATS
//! translation requests, page requests and responses, and the daemon's delivery of the
//! IOMMU's device-TLB invalidations, page-group responses and PASID faults to processes as
//! events.
//!
//! # Who is told what
//!
//! A process that asked for a translation of a device (its owner, or the holder of a grant)
//! may cache it: it is recorded as a **user** of the device, and every device-TLB
//! invalidation of that device is sent to each user's events channel as an `INVALIDATE`
//! event. The invalidating request waits (in its worker, never on a socket) until each user
//! acknowledged, for at most `limits.invalidation_timeout_ms`; acknowledgements are read by
//! the events thread, which never waits, so the wait ends however many workers wait at once.
//! A device whose user does not acknowledge in time (or whose user's channel is gone or
//! full) is reported timed out, and the IOMMU fences it.
//!
//! The wait runs in the thread that invalidates, with no daemon lock held: a thread of the
//! blocking pool for the owner's own requests (`CACHE_INVLD`, unbind, `UNMAP_DMA`, a PASID
//! free, revoke, and the iommufd equivalents; see [`super::waits`], which also keeps them
//! in the connection worker while no process could be waited for), a releaser thread for a
//! process's release (see [`super::release`]). No connection worker waits for a device
//! process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use vsva_iommu::{
    Access, AtsReply, Completion, DevTlbInvalidation, DevTlbScope, DevTlbSink, Fault, PageRequest,
    PageResponse as IommuPageResponse, ResponseCode, SourceId,
};
use vsva_proto::{
    AtsAnswer, AtsRequest, DeviceOpened, DeviceRegion, Errno, Event, Invalidation,
    PageRequest as PageRequestEvent, PageResponse, RaisedPage, Reply, ResponseTranslation,
    ATS_EXEC, ATS_READ, ATS_USER, ATS_WRITE, DEVICE_TOKEN_LEN, DMA_EXEC, DMA_PASID, DMA_PRIV,
    DMA_WRITE, INVAL_ALL, INVAL_PASID, MAX_DEVICE_REGIONS, PAGE_REQUEST_LAST, PAGE_REQUEST_PASID,
    PERM_EXEC, PERM_PRIV, PERM_READ, PERM_WRITE, PGFAULT_PASID_VALID, RESP_FAILURE, RESP_INVALID,
    RESP_SUCCESS,
};
use vsva_vfio::{FaultSink, PageFaultRecord, PciFunction, ProcessToken};

use super::device::fault_record;
use super::ioctl::Outcome;
use super::process::Process;
use super::{lock, random_bytes, revoked, vfio_reply, Daemon};

/// A device handed to another process.
struct Grant {
    source_id: SourceId,
    owner: ProcessToken,
    /// The process that opened it (one per grant).
    holder: Option<ProcessToken>,
}

/// What the device side keeps.
#[derive(Default)]
pub(super) struct DeviceSide {
    grants: Mutex<HashMap<[u8; DEVICE_TOKEN_LEN], Grant>>,
    /// Holders whose capability ended, by device, until they next ask (then `ENODEV`).
    ended: Mutex<HashMap<(ProcessToken, SourceId), String>>,
    /// Processes that may cache translations of a device, or wait for its page responses.
    users: Mutex<HashMap<SourceId, Vec<Weak<Process>>>>,
    /// Page-request groups raised by translation requests, until answered: the translation
    /// request to repeat for the device when the owner answers SUCCESS.
    raised: Mutex<HashMap<GroupKey, Raised>>,
    /// Page requests raised by translation requests (`STATUS` counts them with
    /// `PAGE_REQUEST`'s).
    raised_total: AtomicU64,
    /// Entries in `users` (gone processes' included until pruned), stored under its lock.
    user_entries: AtomicUsize,
    /// Grants with a holder, stored under the grants' lock.
    held_grants: AtomicUsize,
}

/// A page-request group: device, PASID, group index.
type GroupKey = (SourceId, Option<u32>, u16);

/// A translation request that raised a page-request group.
struct Raised {
    /// The process that asked.
    by: Weak<Process>,
    /// Its address and `DMA_*` flags.
    addr: u64,
    flags: u16,
}

impl DeviceSide {
    /// Whether some process could be waited for by an invalidation: a user of a device, or
    /// the holder of a grant (one atomic load each; see `super::waits`).
    pub(super) fn may_wait(&self) -> bool {
        self.user_entries.load(Ordering::Acquire) > 0
            || self.held_grants.load(Ordering::Acquire) > 0
    }

    /// Stores the count of `users` (its lock held).
    fn count_users(&self, users: &HashMap<SourceId, Vec<Weak<Process>>>) {
        let n = users.values().map(Vec::len).sum();
        self.user_entries.store(n, Ordering::Release);
    }

    /// Stores the count of held grants (the grants' lock held).
    fn count_held(&self, grants: &HashMap<[u8; DEVICE_TOKEN_LEN], Grant>) {
        let n = grants.values().filter(|g| g.holder.is_some()).count();
        self.held_grants.store(n, Ordering::Release);
    }

    fn add_user(&self, sid: SourceId, p: &Arc<Process>) {
        let mut users = lock(&self.users);
        let list = users.entry(sid).or_default();
        list.retain(|w| w.strong_count() > 0);
        if !list.iter().any(|w| w.as_ptr() == Arc::as_ptr(p)) {
            list.push(Arc::downgrade(p));
        }
        self.count_users(&users);
    }

    /// `token` no longer acts as device `sid` (its grant ended): it is sent nothing more of
    /// the device.
    fn remove_user(&self, sid: SourceId, token: ProcessToken) {
        let mut users = lock(&self.users);
        if let Some(list) = users.get_mut(&sid) {
            list.retain(|w| w.upgrade().is_some_and(|p| p.token != token));
            if list.is_empty() {
                users.remove(&sid);
            }
        }
        self.count_users(&users);
    }

    fn users(&self, sid: SourceId) -> Vec<Arc<Process>> {
        lock(&self.users)
            .get(&sid)
            .map(|l| l.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// Whether `p` holds an open grant of `sid`.
    fn holds(&self, p: &Process, sid: SourceId) -> bool {
        lock(&self.grants)
            .values()
            .any(|g| g.source_id == sid && g.holder == Some(p.token))
    }
}

/// Delivers the IOMMU's and the VFIO layer's messages to processes as events.
pub(super) struct Delivery {
    pub(super) daemon: Weak<Daemon>,
}

/// Per device: the users whose invalidation could not be queued, and the acknowledgements
/// owed.
type Sent = (Vec<Arc<Process>>, Vec<(Arc<Process>, u64)>);

/// Why a grant ends when its holder does not complete an invalidation.
const FENCED: &str = "fenced: it did not acknowledge a device-TLB invalidation in time";

fn invalidation_event(inv: &DevTlbInvalidation) -> Event {
    let (flags, pasid, addr, size) = match inv.scope {
        DevTlbScope::All => (INVAL_ALL, None, 0, u64::MAX),
        DevTlbScope::Pasid(p) => (0, p, 0, u64::MAX),
        DevTlbScope::Range { pasid, addr, len } => (0, pasid, addr, len),
    };
    Event::Invalidate(Invalidation {
        source_id: inv.source_id.0,
        flags: flags | if pasid.is_some() { INVAL_PASID } else { 0 },
        pasid: pasid.unwrap_or(0),
        addr,
        size,
    })
}

impl DevTlbSink for Delivery {
    fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)> {
        let Some(d) = self.daemon.upgrade() else {
            return batch
                .iter()
                .map(|i| (i.source_id, Completion::TimedOut))
                .collect();
        };
        let deadline = Instant::now() + d.settings.limits.invalidation_timeout();
        // Send everything first, then wait: the devices work in parallel.
        let mut sent: HashMap<SourceId, Sent> = HashMap::new();
        for inv in batch {
            let entry = sent.entry(inv.source_id).or_default();
            for user in d.device_side.users(inv.source_id) {
                match user.events.push_awaited(invalidation_event(inv)) {
                    Some(seq) => entry.1.push((user, seq)),
                    None => entry.0.push(user),
                }
            }
        }
        sent.into_iter()
            .map(|(sid, (mut failed, waits))| {
                for (user, seq) in waits {
                    if !user.events.wait_ack(seq, deadline) {
                        failed.push(user);
                    }
                }
                let done = failed.is_empty();
                if !done {
                    tracing::warn!(device = %sid, "a device process did not acknowledge an invalidation in time");
                }
                for user in failed {
                    d.end_grant_of_unresponsive(&user, sid);
                }
                (
                    sid,
                    if done {
                        Completion::Done
                    } else {
                        Completion::TimedOut
                    },
                )
            })
            .collect()
    }

    fn page_response(&self, resp: IommuPageResponse) {
        let Some(d) = self.daemon.upgrade() else {
            return;
        };
        let raised = lock(&d.device_side.raised).remove(&(resp.source_id, resp.pasid, resp.group));
        let ev = PageResponse {
            source_id: resp.source_id.0,
            flags: if resp.pasid.is_some() {
                PGFAULT_PASID_VALID
            } else {
                0
            },
            pasid: resp.pasid.unwrap_or(0),
            grpid: resp.group.into(),
            code: match resp.code {
                ResponseCode::Success => RESP_SUCCESS,
                ResponseCode::InvalidRequest => RESP_INVALID,
                ResponseCode::Failure => RESP_FAILURE,
            },
            translation: None,
        };
        // The device that asked gets the translation with the answer, made as its own
        // request would be, so it retries with no further round trip.
        let retranslated = raised
            .filter(|_| resp.code == ResponseCode::Success)
            .and_then(|r| {
                let p = r.by.upgrade()?;
                let answer = d
                    .translation(&p, resp.source_id, resp.pasid, r.addr, r.flags)
                    .ok()?;
                Some((
                    p,
                    ResponseTranslation {
                        addr: r.addr,
                        answer,
                    },
                ))
            });
        for user in d.device_side.users(resp.source_id) {
            let translation = match &retranslated {
                Some((p, t)) if Arc::ptr_eq(p, &user) => Some(t.clone()),
                _ => None,
            };
            user.events.push(Event::PageResponse(PageResponse {
                translation,
                ..ev.clone()
            }));
        }
    }
}

impl FaultSink for Delivery {
    fn page_request(&self, owner: &ProcessToken, rec: PageFaultRecord) {
        let Some(p) = self.daemon.upgrade().and_then(|d| d.process(owner)) else {
            return;
        };
        // Dropped when the owner's queue is full: the group then times out (FAILURE).
        p.events.push(Event::PageRequest(PageRequestEvent {
            flags: rec.flags,
            dev_id: rec.dev_id,
            pasid: rec.pasid,
            grpid: rec.grpid,
            perm: rec.perm,
            addr: rec.addr,
            length: rec.length,
            cookie: rec.cookie,
        }));
    }

    fn dma_fault(&self, owner: &ProcessToken, fault: &Fault) {
        if let Some(p) = self.daemon.upgrade().and_then(|d| d.process(owner)) {
            p.events.push(Event::DmaFault(fault_record(fault)));
        }
    }
}

fn access_of(flags: u16) -> Access {
    Access {
        write: flags & DMA_WRITE != 0,
        execute: flags & DMA_EXEC != 0,
        privileged: flags & DMA_PRIV != 0,
    }
}

impl Daemon {
    /// The live process with this identity.
    fn process(&self, token: &ProcessToken) -> Option<Arc<Process>> {
        lock(&self.processes).get(token).cloned()
    }

    /// The function `sid` if `p` holds an open grant of it; `ENODEV` naming why if its grant
    /// ended; `None` if it never held one.
    pub(super) fn granted_function(
        &self,
        p: &Arc<Process>,
        sid: SourceId,
    ) -> Option<Result<PciFunction, Reply>> {
        if self.device_side.holds(p, sid) {
            return Some(self.vfio.pci_function(sid).map_err(|e| vfio_reply(&e)));
        }
        lock(&self.device_side.ended)
            .get(&(p.token, sid))
            .map(|why| {
                Err(Reply::error(
                    Errno::ENODEV,
                    format!("the capability for device {sid} ended: {why}"),
                ))
            })
    }

    /// Grants device `sid`, which `p` drives, to whoever presents the returned token.
    pub(super) fn device_grant(&self, p: &Arc<Process>, sid: u16) -> Reply {
        let sid = SourceId(sid);
        if let Err(r) = self.owned_function(p, sid, "device_grant") {
            return r;
        }
        let token = match random_bytes() {
            Ok(t) => t,
            Err(e) => return Reply::error(Errno::EIO, format!("no random token: {e}")),
        };
        lock(&self.device_side.grants).insert(
            token,
            Grant {
                source_id: sid,
                owner: p.token,
                holder: None,
            },
        );
        Reply::ok(0, token.to_vec())
    }

    /// `p` takes the grant `token` names: it may act as the device from now on, and gets
    /// the owner's guest memory (descriptors with the reply) to DMA into directly.
    pub(super) fn device_open(&self, p: &Arc<Process>, token: &[u8; DEVICE_TOKEN_LEN]) -> Outcome {
        if lock(&p.state).revoked {
            return revoked(p).into();
        }
        let (sid, owner) = {
            let mut grants = lock(&self.device_side.grants);
            let Some(g) = grants.get_mut(token) else {
                return Reply::error(Errno::EACCES, "device_open token names no grant").into();
            };
            match g.holder {
                Some(h) if h != p.token => {
                    return Reply::error(
                        Errno::EBUSY,
                        format!(
                            "the grant of device {} is held by pid {}",
                            g.source_id,
                            h.pid()
                        ),
                    )
                    .into()
                }
                _ => g.holder = Some(p.token),
            }
            let opened = (g.source_id, g.owner);
            self.device_side.count_held(&grants);
            opened
        };
        lock(&self.device_side.ended).remove(&(p.token, sid));
        let Some(o) = self.process(&owner) else {
            return Reply::error(Errno::ENODEV, "the device's owner is gone").into();
        };
        let st = lock(&o.state);
        if st.regions.len() > MAX_DEVICE_REGIONS {
            return Reply::error(
                Errno::E2BIG,
                format!(
                    "the owner has {} memory regions; a device takes at most {MAX_DEVICE_REGIONS}",
                    st.regions.len()
                ),
            )
            .into();
        }
        let mut fds = Vec::new();
        let mut regions = Vec::new();
        for r in &st.regions {
            let Some(file) = &r.file else { continue };
            match file.try_clone() {
                Ok(fd) => fds.push(fd),
                Err(e) => {
                    return Reply::error(Errno::ENOMEM, format!("cannot share a region: {e}"))
                        .into()
                }
            }
            regions.push(DeviceRegion {
                host_addr: r.hpa,
                size: r.size,
                offset: r.offset,
            });
        }
        drop(st);
        Outcome {
            fds,
            ..Reply::ok(
                sid.0.into(),
                DeviceOpened {
                    source_id: sid.0,
                    regions,
                }
                .encode(),
            )
            .into()
        }
    }

    /// Ends every grant of device `sid`, which `p` drives; each holder gets a
    /// `DEVICE_REVOKED` event. The result is how many grants ended.
    pub(super) fn device_revoke(&self, p: &Arc<Process>, sid: u16) -> Reply {
        let sid = SourceId(sid);
        if let Err(r) = self.owned_function(p, sid, "device_revoke") {
            return r;
        }
        let n = self.end_grants(|g| g.source_id == sid, "revoked by its owner", true);
        Reply::ok(n as i64, Vec::new())
    }

    /// Ends the grants `pick` selects: their holders are refused from now on and told, and
    /// their device TLBs are invalidated; with `wait`, the call returns once each holder
    /// acknowledged (or `limits.invalidation_timeout_ms` passed), so nothing it cached is
    /// used after it returns.
    fn end_grants(&self, pick: impl Fn(&Grant) -> bool, why: &str, wait: bool) -> usize {
        let mut gone = Vec::new();
        let mut grants = lock(&self.device_side.grants);
        grants.retain(|_, g| {
            if pick(g) {
                gone.push((g.source_id, g.holder));
                false
            } else {
                true
            }
        });
        self.device_side.count_held(&grants);
        drop(grants);
        let deadline = Instant::now() + self.settings.limits.invalidation_timeout();
        let mut waits = Vec::new();
        for (sid, holder) in &gone {
            let Some(h) = holder else { continue };
            lock(&self.device_side.ended).insert((*h, *sid), why.to_string());
            self.device_side.remove_user(*sid, *h);
            if let Some(hp) = self.process(h) {
                hp.events.push(Event::DeviceRevoked {
                    source_id: sid.0,
                    reason: why.to_string(),
                });
                let all = DevTlbInvalidation {
                    source_id: *sid,
                    scope: DevTlbScope::All,
                };
                if let Some(seq) = hp.events.push_awaited(invalidation_event(&all)) {
                    waits.push((hp, seq));
                }
            }
        }
        if wait {
            for (hp, seq) in waits {
                if !hp.events.wait_ack(seq, deadline) {
                    tracing::warn!(
                        pid = hp.token.pid(),
                        "a revoked device's holder did not acknowledge"
                    );
                }
            }
        }
        gone.len()
    }

    /// `user` did not complete an invalidation of device `sid`, which the IOMMU fences: if it
    /// holds a grant of the device, the grant ends (every further request of it for the
    /// device is `ENODEV`, it gets `DEVICE_REVOKED`), and `vsvad_grants_fenced_total` counts
    /// it. Its mapping of the owner's memory cannot be taken back (see the protocol's
    /// "Trust"). Takes no registry lock: the IOMMU calls this with its own locks held.
    fn end_grant_of_unresponsive(&self, user: &Arc<Process>, sid: SourceId) {
        let mut ended = false;
        let mut grants = lock(&self.device_side.grants);
        grants.retain(|_, g| {
            let theirs = g.source_id == sid && g.holder == Some(user.token);
            ended |= theirs;
            !theirs
        });
        self.device_side.count_held(&grants);
        drop(grants);
        if !ended {
            return;
        }
        tracing::warn!(device = %sid, pid = user.token.pid(), "{FENCED}: its grant ends");
        lock(&self.device_side.ended).insert((user.token, sid), FENCED.to_string());
        self.device_side.remove_user(sid, user.token);
        user.events.push(Event::DeviceRevoked {
            source_id: sid.0,
            reason: FENCED.to_string(),
        });
        self.metrics.grants_fenced.fetch_add(1, Ordering::Relaxed);
    }

    /// The owner `token` is released: its grants end.
    pub(super) fn end_grants_of(&self, token: ProcessToken) {
        self.end_grants(|g| g.owner == token, "its owner is gone", false);
    }

    /// A translation request of a device the process drives or holds; with a page-request
    /// group, an answer "no translation, raise a page request" raises it (as `PAGE_REQUEST`
    /// would, with its checks, routing and errors) and answers `PageRequested`.
    pub(super) fn ats_translate(&self, p: &Arc<Process>, a: &AtsRequest) -> Reply {
        let sid = SourceId(a.source_id);
        let pasid = (a.flags & DMA_PASID != 0).then_some(a.pasid);
        let answer = match self.translation(p, sid, pasid, a.addr, a.flags) {
            Ok(answer) => answer,
            Err(r) => return r,
        };
        let (
            Some(grpid),
            AtsAnswer::NoTranslation {
                page_request: true,
                fault,
            },
        ) = (a.page_request_group, &answer)
        else {
            return Reply::ok(0, answer.encode());
        };
        let access = access_of(a.flags);
        let mut perm = PERM_READ;
        for (on, bit) in [
            (access.write, PERM_WRITE),
            (access.execute, PERM_EXEC),
            (access.privileged, PERM_PRIV),
        ] {
            if on {
                perm |= bit;
            }
        }
        let raised = RaisedPage {
            source_id: a.source_id,
            flags: PAGE_REQUEST_LAST
                | if pasid.is_some() {
                    PAGE_REQUEST_PASID
                } else {
                    0
                },
            pasid: a.pasid,
            addr: a.addr & !0xfff,
            grpid,
            perm: perm as u16,
        };
        let remember = Raised {
            by: Arc::downgrade(p),
            addr: a.addr,
            flags: a.flags,
        };
        let reply = self.raise_page_request(p, &raised, Some(remember));
        if reply.result < 0 {
            return reply;
        }
        self.device_side
            .raised_total
            .fetch_add(1, Ordering::Relaxed);
        Reply::ok(
            0,
            AtsAnswer::PageRequested {
                fault: fault.clone(),
            }
            .encode(),
        )
    }

    /// The IOMMU's answer to `p`'s translation request for device `sid` (`flags` as
    /// `DEVICE_DMA`'s): `p` must drive or hold the device and have its events channel open,
    /// and is recorded as a user of the device (it may cache the answer).
    fn translation(
        &self,
        p: &Arc<Process>,
        sid: SourceId,
        pasid: Option<u32>,
        addr: u64,
        flags: u16,
    ) -> Result<AtsAnswer, Reply> {
        let func = self.owned_function(p, sid, "ats_translate")?;
        if !p.events.is_open() {
            return Err(Reply::error(
                Errno::EINVAL,
                "ats_translate needs the process's events channel open: a device that caches \
                 translations must receive their invalidations",
            ));
        }
        self.device_side.add_user(sid, p);
        match func.ats_translate(pasid, addr, access_of(flags)) {
            Ok(AtsReply::Translated(t)) => {
                let mut perms = 0;
                for (on, bit) in [
                    (t.perms.read, ATS_READ),
                    (t.perms.write, ATS_WRITE),
                    (t.perms.execute, ATS_EXEC),
                    (t.perms.user, ATS_USER),
                ] {
                    if on {
                        perms |= bit;
                    }
                }
                Ok(AtsAnswer::Translated {
                    host_addr: t.host_addr,
                    page_size: t.page_size,
                    perms,
                })
            }
            Ok(AtsReply::NoTranslation {
                fault,
                page_request,
            }) => Ok(AtsAnswer::NoTranslation {
                page_request,
                fault: fault_record(&fault),
            }),
            Err(e) => Err(vfio_reply(&e)),
        }
    }

    /// A page request of a device the process drives or holds.
    pub(super) fn page_request(&self, p: &Arc<Process>, r: &RaisedPage) -> Reply {
        self.raise_page_request(p, r, None)
    }

    /// Raises `r` for `p`; a group routed to the PASID's owner is remembered as raised by
    /// the translation request `by`, if any, until it is answered.
    fn raise_page_request(&self, p: &Arc<Process>, r: &RaisedPage, by: Option<Raised>) -> Reply {
        let RaisedPage {
            source_id: sid,
            flags,
            pasid,
            addr,
            grpid,
            perm,
        } = *r;
        let sid = SourceId(sid);
        let what = if by.is_some() {
            "ats_translate"
        } else {
            "page_request"
        };
        if let Err(r) = self.owned_function(p, sid, what) {
            return r;
        }
        self.device_side.add_user(sid, p);
        let perm = u32::from(perm);
        let req = PageRequest {
            source_id: sid,
            pasid: (flags & PAGE_REQUEST_PASID != 0).then_some(pasid),
            addr,
            access: Access {
                write: perm & PERM_WRITE != 0,
                execute: perm & PERM_EXEC != 0,
                privileged: perm & PERM_PRIV != 0,
            },
            group: grpid,
            last: flags & PAGE_REQUEST_LAST != 0,
        };
        // A device bound to iommufd: its fault queue. Otherwise the PASID's owner.
        if let Some(reply) = self.iommufd_page_request(req) {
            return reply;
        }
        // Remembered first: the answer may come before `page_request` returns.
        let key = (sid, req.pasid, grpid);
        if let Some(by) = by {
            lock(&self.device_side.raised).insert(key, by);
        }
        match self.vfio.page_request(req, Instant::now()) {
            Ok(()) => Reply::ok(0, Vec::new()),
            Err(e) => {
                lock(&self.device_side.raised).remove(&key);
                vfio_reply(&e)
            }
        }
    }

    /// Page requests raised by translation requests since the start.
    pub(super) fn page_requests_raised(&self) -> u64 {
        self.device_side.raised_total.load(Ordering::Relaxed)
    }

    /// The owner's answer to a page-request group.
    pub(super) fn page_response(&self, p: &Arc<Process>, cookie: u32, code: u32) -> Reply {
        let code = match code {
            RESP_SUCCESS => ResponseCode::Success,
            RESP_INVALID => ResponseCode::InvalidRequest,
            _ => ResponseCode::Failure,
        };
        match self.vfio.page_response(p.token, cookie, code) {
            Ok(()) => Reply::ok(0, Vec::new()),
            Err(e) => vfio_reply(&e),
        }
    }

    /// Answers FAILURE to page-request groups unanswered for too long (the maintenance loop
    /// calls it).
    pub fn expire_page_requests(&self) {
        self.vfio.expire_page_requests(Instant::now());
    }
}
