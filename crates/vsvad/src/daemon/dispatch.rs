//! The router: each decoded request goes to its family's handler, which does the work and
//! returns an [`Outcome`] (defined beside the journaled ioctl, whose ticket and rollback it
//! carries). Nothing is checked or decoded here beyond what picks the handler.

use std::os::fd::OwnedFd;

use vsva_proto::{Errno, Reply, Request};

use super::ioctl::Outcome;
use super::process::Session;
use super::Daemon;

impl Daemon {
    /// Handles one decoded request. `fds` are the descriptors that came with it, as many as
    /// its kind takes (the connection checked the count).
    pub fn handle(&self, s: &mut Session, req: Request, fds: Vec<OwnedFd>) -> Outcome {
        let p = match req {
            Request::Hello(h) => return self.hello(s, &h).into(),
            Request::Ping(data) => return Reply::ok(0, data).into(),
            _ => match s.process.clone() {
                Some(p) => p,
                None => {
                    return Reply::error(
                        Errno::EPERM,
                        format!(
                            "{} before hello: the first request must be a hello",
                            req.kind().label()
                        ),
                    )
                    .into()
                }
            },
        };
        match req {
            Request::Hello(_) | Request::Ping(_) => {
                Reply::error(Errno::EINVAL, "internal: request dispatched twice").into()
            }
            Request::OpenContainer => self.open_container(s, &p).into(),
            Request::CloseContainer { handle } => self.close_container(&p, handle).into(),
            Request::AttachGroup { handle, group } => self.attach_group(&p, handle, group).into(),
            Request::DetachGroup { handle, group } => self.detach_group(&p, handle, group).into(),
            Request::Ioctl { handle, cmd, arg } => self.ioctl(&p, handle, cmd, arg),
            Request::MemRegister {
                addr,
                size,
                offset,
                flags: _,
            } => match <[OwnedFd; 1]>::try_from(fds) {
                Ok([fd]) => self.mem_register(&p, addr, size, offset, fd).into(),
                Err(_) => {
                    Reply::error(Errno::EBADF, "mem_register needs one file descriptor").into()
                }
            },
            Request::MemUnregister { region } => self.mem_unregister(&p, region).into(),
            Request::DeviceDma(d) => self.device_dma(&p, &d).into(),
            Request::DeviceConfig(cfg) => self.device_config(&p, &cfg).into(),
            Request::Status => self.status().into(),
            Request::Sets => self.sets(s).into(),
            Request::SetQuota { pid, quota } => self.set_quota(s, pid, quota),
            Request::ForceRelease { pid } => self.force_release(s, pid).into(),
            Request::Faults { max } => self.faults(s, max).into(),
            Request::FaultsSince { since, max } => self.faults_since(s, since, max).into(),
            Request::Iommufd(r) => self.iommufd(s, &p, r).into(),
            Request::EventsOpen => self.events_open(&p),
            Request::DeviceGrant { source_id } => self.device_grant(&p, source_id).into(),
            Request::DeviceOpen { token } => self.device_open(&p, &token),
            Request::DeviceRevoke { source_id } => self.device_revoke(&p, source_id).into(),
            Request::AtsTranslate(a) => self.ats_translate(&p, &a).into(),
            Request::PageRequest(r) => self.page_request(&p, &r).into(),
            Request::PageResponse { cookie, code } => self.page_response(&p, cookie, code).into(),
        }
    }
}
