//! Page-request forwarding (PCIe PRI) between devices and the queue of `prq.rs`.

use super::error::IommuError;
use super::Iommu;
use crate::fault::SourceId;
use crate::prq::{PageRequest, PageResponse, PrqError};

impl Iommu {
    /// A device posts a page request (PCIe PRI). The device must be attached with `pri`.
    pub fn page_request(&self, req: PageRequest) -> Result<(), IommuError> {
        let enabled = self
            .control()
            .devices
            .get(&req.source_id)
            .is_some_and(|d| d.pri);
        if !enabled {
            return Err(PrqError::NotEnabled {
                source_id: req.source_id,
            }
            .into());
        }
        Ok(self.prq.push(req)?)
    }

    /// Takes the queued page requests.
    pub fn take_page_requests(&self) -> Vec<PageRequest> {
        self.prq.take_requests()
    }

    /// Answers a page-request group; the device collects it with
    /// [`Iommu::take_page_responses`].
    pub fn page_response(&self, resp: PageResponse) -> Result<(), IommuError> {
        Ok(self.prq.respond(resp)?)
    }

    /// Responses delivered to a device.
    pub fn take_page_responses(&self, sid: SourceId) -> Vec<PageResponse> {
        self.prq.take_responses(sid)
    }
}

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn page_requests_and_responses() {
        use crate::prq::ResponseCode;
        let io = iommu();
        let req = PageRequest {
            source_id: SID,
            pasid: Some(4),
            addr: 0x1000,
            access: Access::WRITE,
            group: 3,
            last: true,
        };
        assert!(matches!(
            io.page_request(req),
            Err(IommuError::PageRequest(PrqError::NotEnabled { .. }))
        ));
        io.attach_device(
            SID,
            DeviceOptions {
                pri: true,
                ..DeviceOptions::default()
            },
        )
        .unwrap();
        io.page_request(req).unwrap();
        assert_eq!(io.take_page_requests(), vec![req]);
        let resp = PageResponse {
            source_id: SID,
            pasid: Some(4),
            group: 3,
            code: ResponseCode::Success,
        };
        io.page_response(resp).unwrap();
        assert_eq!(io.take_page_responses(SID), vec![resp]);
    }
}
