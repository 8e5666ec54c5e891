//! The remote back end: the VMM talks to `vsvad` through `vsva-client`, on a nesting
//! container it opened there.

use vsva_client::{Client, ContainerHandle};
use vsva_iommu::SourceId;
use vsva_uapi::{BindRequest, CacheInvalidateRequest};

use super::{Backend, BackendError, HostFault, RemotePageRequests};
use crate::caps::HostCaps;

/// A [`Backend`] over a daemon connection and a nesting container opened on it.
///
/// New faults are read with the daemon's fault cursor (`FAULTS_SINCE`): each record the
/// daemon logs is numbered, so every record is taken once, identical ones included.
#[derive(Debug)]
pub struct RemoteBackend {
    client: Client,
    container: ContainerHandle,
    /// The number of the last fault record read.
    cursor: u64,
}

impl RemoteBackend {
    /// The back end over `container` of `client`; faults visible now are not reported.
    ///
    /// # Errors
    ///
    /// The daemon's refusal of the first fault query.
    pub fn new(mut client: Client, container: ContainerHandle) -> Result<Self, BackendError> {
        // Everything numbered up to the log's total now is "visible now".
        let cursor = client.faults(0)?.total;
        Ok(RemoteBackend {
            client,
            container,
            cursor,
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

impl Backend for RemoteBackend {
    fn host_caps(&mut self) -> Result<HostCaps, BackendError> {
        let n = self
            .client
            .nesting_info(self.container)?
            .ok_or_else(|| BackendError::unusable("the container reports no nesting capability"))?;
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
        let new = self.client.new_faults(&mut self.cursor)?;
        if new.missed > 0 {
            tracing::warn!(
                missed = new.missed,
                "the daemon's fault log dropped records before this VMM read them; \
                 some of its guest's faults may be lost"
            );
        }
        Ok(new
            .faults
            .iter()
            .map(|f| {
                let r = &f.record;
                HostFault {
                    source_id: SourceId(r.source_id),
                    pasid: (r.flags & vsva_proto::DMA_PASID != 0).then_some(r.pasid),
                    addr: r.addr,
                    write: r.flags & vsva_proto::DMA_WRITE != 0,
                    execute: r.flags & vsva_proto::DMA_EXEC != 0,
                    privileged: r.flags & vsva_proto::DMA_PRIV != 0,
                    reason: r.reason,
                }
            })
            .collect())
    }
}
