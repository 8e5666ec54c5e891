//! The iommufd requests: each connection has its own iommufd context (made on its first
//! iommufd request, dropped with the connection's `Session`, which releases everything it
//! holds), driven with the uAPI bytes of `/dev/iommu` and of a device fd; its fault queues;
//! and the admin view of a process's iommufd objects.
//!
//! PASIDs used with iommufd are the process's own, allocated with PASID_REQUEST through any
//! of its containers (journaled like every allocation) from the set its contexts check.

use std::sync::{Arc, Mutex, Weak};

use vsva_iommu::PageRequest;
use vsva_iommufd::{IommufdCtx, IommufdError, ObjectKind};
use vsva_proto::{
    Errno, IommufdObject, IommufdObjectsReply, IommufdRequest, Reply, IOMMUFD_NONE,
    PAGE_RESPONSE_LEN,
};
use vsva_uapi::iommufd::{IommuHwptPageResponse, IOMMU_IOAS_MAP, VFIO_DEVICE_BIND_IOMMUFD};
use vsva_vfio::ProcessToken;
use zerocopy::{FromBytes, IntoBytes};

use super::admin::no_context;
use super::memory::translate_ioas_map;
use super::process::{Process, Session};
use super::{lock, revoked, Daemon};

/// Every live iommufd context of the daemon, for the admin view: (connection, process,
/// context). Dead entries are dropped as the list is read.
#[derive(Default)]
pub struct IommufdContexts(Mutex<Vec<(u64, ProcessToken, Weak<IommufdCtx>)>>);

fn reply_of(e: &IommufdError, arg: Vec<u8>) -> Reply {
    Reply {
        result: e.errno().to_ioctl_return().into(),
        message: e.to_string(),
        payload: arg,
    }
}

impl Daemon {
    /// The connection's iommufd context, made on first use.
    fn iommufd_ctx(&self, s: &mut Session, p: &Arc<Process>) -> Result<Arc<IommufdCtx>, Reply> {
        if let Some(ctx) = &s.iommufd {
            return Ok(ctx.clone());
        }
        let ctx = Arc::new(
            IommufdCtx::open(&self.vfio, p.token)
                .map_err(|e| Reply::error(e.errno(), e.to_string()))?,
        );
        lock(&self.iommufd.0).push((s.conn, p.token, Arc::downgrade(&ctx)));
        s.iommufd = Some(ctx.clone());
        Ok(ctx)
    }

    /// Whether function `sid` is bound to one of process `p`'s iommufd contexts.
    pub(super) fn iommufd_bound(&self, p: &Process, sid: vsva_iommu::SourceId) -> bool {
        let live: Vec<Arc<IommufdCtx>> = lock(&self.iommufd.0)
            .iter()
            .filter(|(_, t, _)| *t == p.token)
            .filter_map(|(_, _, w)| w.upgrade())
            .collect();
        live.iter().any(|ctx| ctx.dev_id_of(sid).is_ok())
    }

    /// Routes a page request of a device bound to an iommufd context: after the IOMMU's
    /// checks (PRE set in the device's context entry, else `EINVAL` with a fault recorded),
    /// the request joins the fault queue of the HWPT its PASID is attached through, read with
    /// `IommufdReadFaults`, as iommufd routes it; a PASID attached without a fault queue is
    /// `EINVAL`. `None` for a device no iommufd context holds (the caller routes it to the
    /// PASID's owner).
    pub(super) fn iommufd_page_request(&self, req: PageRequest) -> Option<Reply> {
        let holders: Vec<Arc<IommufdCtx>> = lock(&self.iommufd.0)
            .iter()
            .filter_map(|(_, _, w)| w.upgrade())
            .filter(|ctx| ctx.dev_id_of(req.source_id).is_ok())
            .collect();
        if holders.is_empty() {
            return None;
        }
        if let Err(e) = self.vfio.iommu().check_page_request(&req) {
            return Some(Reply::error(e.errno(), e.to_string()));
        }
        let mut req = req;
        for ctx in holders {
            match ctx.deliver_page_request(req) {
                Ok(()) => return Some(Reply::ok(0, Vec::new())),
                Err(back) => req = back,
            }
        }
        Some(Reply::error(
            Errno::EINVAL,
            format!(
                "device {} is bound to iommufd, and PASID {:?} is not attached through an HWPT with a fault queue",
                req.source_id, req.pasid
            ),
        ))
    }

    pub(super) fn iommufd(&self, s: &mut Session, p: &Arc<Process>, req: IommufdRequest) -> Reply {
        if let IommufdRequest::Objects { pid } = req {
            return self.iommufd_objects(s, p, pid);
        }
        let regions = {
            let st = lock(&p.state);
            if st.revoked {
                return revoked(p);
            }
            st.regions.clone()
        };
        let ctx = match self.iommufd_ctx(s, p) {
            Ok(ctx) => ctx,
            Err(reply) => return reply,
        };
        match req {
            IommufdRequest::Ioctl { cmd, mut arg } => {
                let (user_va, unregistered) = if cmd == IOMMU_IOAS_MAP {
                    translate_ioas_map(&regions, &mut arg)
                } else {
                    (None, None)
                };
                let result = ctx.ioctl(cmd, &mut arg);
                if let Some(va) = user_va {
                    // The caller reads back its own struct (iova filled in), never our address.
                    arg[16..24].copy_from_slice(&va.to_le_bytes());
                }
                let reply = match result {
                    Ok(()) => Reply::ok(0, arg),
                    Err(e) => reply_of(&e, arg),
                };
                match unregistered {
                    Some(u) => u.explain(reply),
                    None => reply,
                }
            }
            IommufdRequest::Device {
                source_id,
                cmd,
                mut arg,
            } => {
                // One context per connection: a bind names it whatever its `iommufd` says.
                if cmd == VFIO_DEVICE_BIND_IOMMUFD && arg.len() >= 12 {
                    arg[8..12].copy_from_slice(&ctx.fd().to_le_bytes());
                }
                match ctx.device_ioctl(vsva_iommu::SourceId(source_id), cmd, &mut arg) {
                    Ok(()) => Reply::ok(0, arg),
                    Err(e) => reply_of(&e, arg),
                }
            }
            IommufdRequest::ReadFaults { fault_id, max } => {
                match ctx.read_faults(fault_id, max.min(4096) as usize) {
                    Ok(records) => Reply::ok(records.len() as i64, records.as_bytes().to_vec()),
                    Err(e) => reply_of(&e, Vec::new()),
                }
            }
            IommufdRequest::Respond {
                fault_id,
                responses,
            } => {
                let rs: Vec<IommuHwptPageResponse> = responses
                    .chunks_exact(PAGE_RESPONSE_LEN)
                    .map(|c| IommuHwptPageResponse::read_from_bytes(c).expect("8 bytes"))
                    .collect();
                match ctx.respond_faults(fault_id, &rs) {
                    Ok(n) => Reply::ok(n as i64, Vec::new()),
                    Err(e) => reply_of(&e, Vec::new()),
                }
            }
            IommufdRequest::Objects { .. } => unreachable!("answered above"),
        }
    }

    /// The iommufd objects of process `pid` (0: the caller's), every context of it. Another
    /// process's are an admin request (`EPERM`), and a pid the daemon has no context for is
    /// `ESRCH`, as for the other per-pid requests; a process without an iommufd context has
    /// none.
    fn iommufd_objects(&self, s: &Session, p: &Arc<Process>, pid: u32) -> Reply {
        if pid != 0 && pid != p.token.pid() {
            if !s.admin {
                return Reply::error(
                    Errno::EPERM,
                    format!("iommufd objects of pid {pid} are an admin request"),
                );
            }
            if self.find_by_pid(pid).is_empty() {
                return no_context(pid);
            }
        }
        let want = if pid == 0 { p.token.pid() } else { pid };
        let live: Vec<(u64, ProcessToken, Arc<IommufdCtx>)> = {
            let mut all = lock(&self.iommufd.0);
            all.retain(|(_, _, w)| w.strong_count() > 0);
            all.iter()
                .filter(|(_, t, _)| t.pid() == want)
                .filter_map(|(c, t, w)| w.upgrade().map(|ctx| (*c, *t, ctx)))
                .collect()
        };
        let none = |v: Option<u32>| v.unwrap_or(IOMMUFD_NONE);
        let mut objects = Vec::new();
        for (conn, token, ctx) in live {
            for o in ctx.objects() {
                let (unread, waiting) = o
                    .faults
                    .map_or((IOMMUFD_NONE, IOMMUFD_NONE), |(u, w)| (u as u32, w as u32));
                objects.push(IommufdObject {
                    pid: token.pid(),
                    conn,
                    id: o.id,
                    kind: match o.kind {
                        ObjectKind::Ioas => 0,
                        ObjectKind::HwptPaging => 1,
                        ObjectKind::HwptNested => 2,
                        ObjectKind::Device => 3,
                        ObjectKind::FaultQueue => 4,
                    },
                    users: o.users,
                    parent: none(o.parent),
                    domain_id: none(o.domain_id.map(u32::from)),
                    source_id: none(o.device.map(|d| u32::from(d.0))),
                    attached: o
                        .attached
                        .iter()
                        .map(|&(pasid, hwpt)| (none(pasid), hwpt))
                        .collect(),
                    faults_unread: unread,
                    faults_waiting: waiting,
                });
            }
        }
        Reply::ok(
            objects.len() as i64,
            IommufdObjectsReply { objects }.encode(),
        )
    }
}
