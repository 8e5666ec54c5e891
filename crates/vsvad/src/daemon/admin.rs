//! Admin requests: change a process's quota, force-release a process. Both need root or the
//! configured admin group.

use std::sync::Arc;

use vsva_proto::{Errno, Reply};

use super::ioctl::Outcome;
use super::process::{Closing, Process, Session};
use super::{lock, vfio_reply, Daemon};
use crate::store::Record;

/// The refusal for a caller that is not an admin, if it is not.
fn admin_only(s: &Session, what: &str) -> Option<Reply> {
    (!s.admin).then(|| {
        Reply::error(
            Errno::EPERM,
            format!("{what} is an admin request: it needs root or the configured admin_group (caller uid {}, gid {})", s.credentials.uid, s.credentials.gid),
        )
    })
}

/// The refusal of a per-pid request naming a pid the daemon has no context for (`ESRCH`).
pub(super) fn no_context(pid: u32) -> Reply {
    Reply::error(
        Errno::ESRCH,
        format!("pid {pid} has no context in the daemon"),
    )
}

impl Daemon {
    pub(super) fn set_quota(&self, s: &Session, pid: u32, quota: u32) -> Outcome {
        if let Some(r) = admin_only(s, "set_quota") {
            return r.into();
        }
        let targets = self.find_by_pid(pid);
        let Some(p) = targets.first() else {
            return no_context(pid).into();
        };
        // The process lock orders this change against a release of the process.
        let _st = lock(&p.state);
        if let Err(e) = self.vfio.set_pasid_quota(p.token, quota) {
            return vfio_reply(&e).into();
        }
        let mut journal = lock(&p.journal);
        journal.quota = quota;
        let ticket = journal.begun.then(|| {
            self.store.append(Record::Quota {
                token: p.token,
                quota,
            })
        });
        drop(journal);
        tracing::info!(pid, quota, by = s.credentials.uid, "quota changed");
        Outcome {
            reply: Reply::ok(0, Vec::new()),
            ticket,
            rollback: None,
            fds: Vec::new(),
        }
    }

    pub(super) fn force_release(&self, s: &Session, pid: u32) -> Reply {
        if let Some(r) = admin_only(s, "force_release") {
            return r;
        }
        let mut processes = lock(&self.processes);
        let targets: Vec<Arc<Process>> = processes
            .values()
            .filter(|p| p.token.pid() == pid)
            .cloned()
            .collect();
        if targets.is_empty() {
            return no_context(pid);
        }
        let mut freed = 0u32;
        let mut released = Vec::with_capacity(targets.len());
        for p in &targets {
            let mut st = lock(&p.state);
            st.revoked = true;
            let r = self.release_locked(p, &mut st, "force-released by an admin");
            freed += r.owned;
            released.push(r);
            processes.remove(&p.token);
        }
        drop(processes);
        // Its events channel closes; its containers close and its PASIDs are freed by the
        // releaser thread (which waits for device acknowledgements), then its grants end.
        for (p, r) in targets.iter().zip(released) {
            p.events.close();
            self.release_in_background(Closing::default(), Some(r), Some(p.token));
        }
        // Close the process's connections: it learns its context is gone.
        for c in lock(&self.conns).values() {
            if c.process.is_some_and(|t| t.pid() == pid) {
                // A connection already closed needs no shutting.
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        tracing::warn!(pid, freed, by = s.credentials.uid, "process force-released");
        Reply::ok(freed.into(), Vec::new())
    }
}
