//! Containers: open and close them, attach and detach IOMMU groups, and find a process's
//! open container by handle for the other handlers.

use std::sync::Arc;

use vsva_proto::{Errno, Reply};
use vsva_vfio::{Container, GroupId};

use super::process::{OpenContainer, Process, Session};
use super::{lock, revoked, vfio_reply, Daemon};
use crate::config::RESTORE_GROUP;

/// The reply to a handle the process has not open.
pub(super) fn no_handle(handle: u32) -> Reply {
    Reply::error(
        Errno::EBADF,
        format!("container handle {handle} is not open in this process"),
    )
}

impl Daemon {
    pub(super) fn open_container(&self, s: &Session, p: &Arc<Process>) -> Reply {
        let mut st = lock(&p.state);
        if st.revoked {
            return revoked(p);
        }
        let mine = st.containers.values().filter(|c| c.conn == s.conn).count();
        let limit = self.settings.limits.max_containers_per_connection as usize;
        if mine >= limit {
            return Reply::error(
                Errno::ENOSPC,
                format!("this connection already has {mine} containers open (limits.max_containers_per_connection = {limit})"),
            );
        }
        let handle = st.next_handle;
        st.next_handle = st.next_handle.wrapping_add(1).max(1);
        let container = Arc::new(self.vfio.open_container(p.token));
        st.containers.insert(
            handle,
            OpenContainer {
                conn: s.conn,
                container,
            },
        );
        Reply::ok(handle.into(), Vec::new())
    }

    pub(super) fn close_container(&self, p: &Arc<Process>, handle: u32) -> Reply {
        let removed = lock(&p.state).containers.remove(&handle);
        match removed {
            Some(c) => {
                drop(c);
                Reply::ok(0, Vec::new())
            }
            None => no_handle(handle),
        }
    }

    pub(super) fn attach_group(&self, p: &Arc<Process>, handle: u32, group: u32) -> Reply {
        self.with_container(p, handle, |c| {
            if group == RESTORE_GROUP {
                return Reply::error(Errno::ENODEV, format!("group {group} does not exist"));
            }
            match c.attach_group(GroupId(group)) {
                Ok(()) => {
                    let at = self.vfio.iommu().fault_log().total();
                    lock(&p.faults).group_attached(group, at);
                    Reply::ok(0, Vec::new())
                }
                Err(e) => vfio_reply(&e),
            }
        })
    }

    pub(super) fn detach_group(&self, p: &Arc<Process>, handle: u32, group: u32) -> Reply {
        self.with_container(p, handle, |c| match c.detach_group(GroupId(group)) {
            Ok(()) => {
                lock(&p.faults).group_detached(group);
                Reply::ok(0, Vec::new())
            }
            Err(e) => vfio_reply(&e),
        })
    }

    /// Runs `f` on the process's container `handle`, outside the process lock.
    fn with_container(
        &self,
        p: &Arc<Process>,
        handle: u32,
        f: impl FnOnce(&Container) -> Reply,
    ) -> Reply {
        let c = {
            let st = lock(&p.state);
            if st.revoked {
                return revoked(p);
            }
            match st.containers.get(&handle) {
                Some(c) => c.container.clone(),
                None => return no_handle(handle),
            }
        };
        f(&c)
    }
}
