//! The page-request hook: where page requests for the guest's devices come from and where
//! the guest's page group responses go ([`PageRequestSource`]), and its in-process form over
//! the software IOMMU's own queue.

use std::error::Error;
use std::sync::Arc;

use vsva_iommu::prq::{PageRequest, PageResponse};
use vsva_iommu::Iommu;

/// Where page requests for the guest's devices come from, and where its responses go.
pub trait PageRequestSource: Send {
    /// Takes the requests waiting, oldest first.
    fn take(&mut self) -> Vec<PageRequest>;

    /// Passes a page group response on to the device.
    ///
    /// # Errors
    ///
    /// The device side's refusal (for example no such outstanding group); nothing is
    /// delivered then.
    fn respond(&mut self, resp: PageResponse) -> Result<(), Box<dyn Error + Send + Sync>>;
}

/// The in-process source: the software IOMMU's own page request queue. It takes every
/// request the host queued (the VMM embedding the IOMMU owns all its devices); requests of
/// devices that are not the guest's are dropped by the virtual IOMMU.
#[derive(Debug, Clone)]
pub struct IommuPageRequests {
    iommu: Arc<Iommu>,
}

impl IommuPageRequests {
    /// The source over `iommu`'s queue.
    pub fn new(iommu: Arc<Iommu>) -> Self {
        IommuPageRequests { iommu }
    }
}

impl PageRequestSource for IommuPageRequests {
    fn take(&mut self) -> Vec<PageRequest> {
        self.iommu.take_page_requests()
    }

    fn respond(&mut self, resp: PageResponse) -> Result<(), Box<dyn Error + Send + Sync>> {
        Ok(self.iommu.page_response(resp)?)
    }
}
