//! Admin and inspection calls: status, sets, quotas, forced release, the fault log.

use vsva_proto::{FaultsReply, FaultsSinceReply, Kind, Request, SetEntry, SetsReply, StatusReply};

use crate::connection::Client;
use crate::error::ClientError;

impl Client {
    /// Daemon status.
    pub fn status(&mut self) -> Result<StatusReply, ClientError> {
        let r = self.call(Request::Status)?;
        StatusReply::decode(&r.payload).map_err(|error| ClientError::Protocol {
            kind: Kind::Status,
            error,
        })
    }

    /// Per-process sets: every process's for an admin, this process's otherwise.
    pub fn sets(&mut self) -> Result<Vec<SetEntry>, ClientError> {
        let r = self.call(Request::Sets)?;
        SetsReply::decode(&r.payload)
            .map(|s| s.sets)
            .map_err(|error| ClientError::Protocol {
                kind: Kind::Sets,
                error,
            })
    }

    /// Changes process `pid`'s quota (admin).
    pub fn set_quota(&mut self, pid: u32, quota: u32) -> Result<(), ClientError> {
        self.call(Request::SetQuota { pid, quota }).map(drop)
    }

    /// Releases everything process `pid` holds and closes its connections (admin); returns
    /// how many PASIDs were freed.
    pub fn force_release(&mut self, pid: u32) -> Result<u32, ClientError> {
        Ok(self.call(Request::ForceRelease { pid })?.result as u32)
    }

    /// The most recent DMA faults this process may see (all of them for an admin).
    pub fn faults(&mut self, max: u32) -> Result<FaultsReply, ClientError> {
        let r = self.call(Request::Faults { max })?;
        FaultsReply::decode(&r.payload).map_err(|error| ClientError::Protocol {
            kind: Kind::Faults,
            error,
        })
    }

    /// The DMA faults this process may see (all of them for an admin) numbered above
    /// `since`, oldest first, at most `max`. Pass the reply's `next` as the following call's
    /// `since` to read every record exactly once, identical ones included; `missed` counts
    /// the records after `since` that the daemon's log had already dropped when full.
    ///
    /// # Errors
    ///
    /// `EINVAL` when `since` is past the newest record: the cursor came from before a
    /// restart of the daemon, whose log numbers from 1 again.
    pub fn faults_since(&mut self, since: u64, max: u32) -> Result<FaultsSinceReply, ClientError> {
        let r = self.call(Request::FaultsSince { since, max })?;
        FaultsSinceReply::decode(&r.payload).map_err(|error| ClientError::Protocol {
            kind: Kind::FaultsSince,
            error,
        })
    }

    /// Every fault this process may see numbered above `*cursor`, oldest first, read with
    /// [`Client::faults_since`] page by page until a page comes back short; `*cursor` moves
    /// past them (pass the same cursor next time). The reply's `next` is the cursor after
    /// the last page and its `missed` the sum over the pages.
    ///
    /// # Errors
    ///
    /// As [`Client::faults_since`]. The cursor stays after the last page read, so the next
    /// call resumes there.
    pub fn new_faults(&mut self, cursor: &mut u64) -> Result<FaultsSinceReply, ClientError> {
        const PAGE: u32 = 4096;
        let mut all = FaultsSinceReply {
            next: *cursor,
            missed: 0,
            faults: Vec::new(),
        };
        loop {
            let page = self.faults_since(*cursor, PAGE)?;
            *cursor = page.next;
            all.next = page.next;
            all.missed += page.missed;
            let full = page.faults.len() == PAGE as usize;
            all.faults.extend(page.faults);
            if !full {
                return Ok(all);
            }
        }
    }
}
