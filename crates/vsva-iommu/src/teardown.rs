//! The IOMMU as a `vsva-ioasid` teardown subscriber: when a PASID is freed, its entries are
//! cleared on every device and every cache that could hold it is flushed
//! ([`Iommu::teardown_pasid`]) before the allocator may hand the number out again.

use vsva_ioasid::{Pasid, TeardownSubscriber, TeardownTicket};

use crate::iommu::Iommu;

impl TeardownSubscriber for Iommu {
    /// Tears the PASID down synchronously, then completes the ticket.
    fn teardown(&self, pasid: Pasid, ticket: TeardownTicket) {
        self.teardown_pasid(pasid);
        ticket.complete();
    }

    fn name(&self) -> &str {
        "vsva-iommu"
    }
}
