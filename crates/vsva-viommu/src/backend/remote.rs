//! The remote back end: the VMM talks to `vsvad` through `vsva-client`, on a nesting
//! container it opened there.

use vsva_client::{Client, ContainerHandle};
use vsva_iommu::SourceId;
use vsva_proto::FaultRecord;
use vsva_uapi::{BindRequest, CacheInvalidateRequest};

use super::{Backend, BackendError, HostFault, RemotePageRequests};
use crate::caps::HostCaps;

/// How many fault records one poll asks the daemon for.
const FAULTS_PER_POLL: u32 = 4096;

/// A [`Backend`] over a daemon connection and a nesting container opened on it.
///
/// The daemon's fault list carries no record numbers, so new faults are found by matching
/// the previous list's tail against the new list's head: identical records logged exactly
/// at the boundary of two polls can be taken for old ones (see the crate README's limits).
#[derive(Debug)]
pub struct RemoteBackend {
    client: Client,
    container: ContainerHandle,
    previous: Vec<FaultRecord>,
}

impl RemoteBackend {
    /// The back end over `container` of `client`; faults visible now are not reported.
    ///
    /// # Errors
    ///
    /// The daemon's refusal of the first fault query.
    pub fn new(mut client: Client, container: ContainerHandle) -> Result<Self, BackendError> {
        let previous = client.faults(FAULTS_PER_POLL)?.faults;
        Ok(RemoteBackend {
            client,
            container,
            previous,
        })
    }

    /// The connection, for the VMM's other calls (guest memory, device DMA).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The container handle.
    pub fn container(&self) -> ContainerHandle {
        self.container
    }

    /// The page-request source of this process: opens its events channel (on which the
    /// daemon sends the page requests of the PASIDs this process bound) and a second
    /// connection for the responses. Install it with `Viommu::set_page_request_source`.
    ///
    /// # Errors
    ///
    /// The daemon refused the channel (`EBUSY`: this process already has one) or the
    /// connection; nothing stays open then.
    pub fn page_requests(&mut self) -> Result<RemotePageRequests, BackendError> {
        let events = self.client.open_events()?;
        let responses = Client::connect(self.client.options().clone())?;
        RemotePageRequests::new(events, responses)
    }
}

/// The records of `now` that `before` did not have: `now` is a suffix of `before` followed
/// by new records.
fn new_records<'a>(before: &[FaultRecord], now: &'a [FaultRecord]) -> &'a [FaultRecord] {
    for start in 0..=before.len() {
        let tail = &before[start..];
        if now.len() >= tail.len() && now[..tail.len()] == *tail {
            return &now[tail.len()..];
        }
    }
    now
}

impl Backend for RemoteBackend {
    fn host_caps(&mut self) -> Result<HostCaps, BackendError> {
        let n = self
            .client
            .nesting_info(self.container)?
            .ok_or(BackendError::Unusable(
                "the container reports no nesting capability",
            ))?;
        Ok(HostCaps::from(&n))
    }

    fn pasid_alloc(&mut self, min: u32, max: u32) -> Result<u32, BackendError> {
        Ok(self.client.pasid_alloc(self.container, min, max)?)
    }

    fn pasid_free(&mut self, pasid: u32) -> Result<(), BackendError> {
        Ok(self.client.pasid_free(self.container, pasid, pasid)?)
    }

    fn bind(&mut self, req: &BindRequest) -> Result<(), BackendError> {
        Ok(self.client.bind(self.container, req)?)
    }

    fn unbind(&mut self, req: &BindRequest) -> Result<(), BackendError> {
        Ok(self.client.unbind(self.container, req)?)
    }

    fn invalidate(&mut self, req: &CacheInvalidateRequest) -> Result<(), BackendError> {
        Ok(self.client.invalidate(self.container, req)?)
    }

    fn take_faults(&mut self) -> Result<Vec<HostFault>, BackendError> {
        let now = self.client.faults(FAULTS_PER_POLL)?.faults;
        let out = new_records(&self.previous, &now)
            .iter()
            .map(|r| HostFault {
                source_id: SourceId(r.source_id),
                pasid: (r.flags & vsva_proto::DMA_PASID != 0).then_some(r.pasid),
                addr: r.addr,
                write: r.flags & vsva_proto::DMA_WRITE != 0,
                execute: r.flags & vsva_proto::DMA_EXEC != 0,
                privileged: r.flags & vsva_proto::DMA_PRIV != 0,
                reason: r.reason,
            })
            .collect();
        self.previous = now;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(addr: u64) -> FaultRecord {
        FaultRecord {
            source_id: 8,
            flags: 0,
            pasid: 0,
            addr,
            reason: 0x71,
            stage: 1,
            level: 4,
            description: String::new(),
        }
    }

    #[test]
    fn new_records_after_the_old_tail() {
        let a = [rec(1), rec(2), rec(3)];
        assert_eq!(new_records(&a, &[rec(2), rec(3), rec(4)]), &[rec(4)]);
        assert_eq!(new_records(&a, &a), &[] as &[FaultRecord]);
        assert_eq!(new_records(&[], &[rec(9)]), &[rec(9)]);
        assert_eq!(new_records(&a, &[rec(7)]), &[rec(7)]);
    }
}
