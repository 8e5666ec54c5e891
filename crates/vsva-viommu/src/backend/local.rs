//! The in-process back end: the VMM links `vsva-vfio` and owns the nesting container of its
//! guest's devices.
//!
//! Every host operation is one of the container's typed methods (`bind`, `unbind`,
//! `invalidate`, `alloc_pasid`, `free_pasids`, `nesting_info`), never `Container::ioctl`: the
//! uAPI byte path is `vsva-vfio`'s front door for callers whose arguments still have to be
//! decoded and checked (argsz, flags, padding), while the device model has decoded the
//! guest's programming into typed values already; going through bytes would only encode them
//! to decode them again.

use std::sync::Arc;

use vsva_iommu::Iommu;
use vsva_uapi::{BindRequest, CacheInvalidateRequest};
use vsva_vfio::Container;

use super::{Backend, BackendError, HostFault};
use crate::caps::HostCaps;

/// A [`Backend`] over a `vsva-vfio` [`Container`] (set to the nesting type, with the guest's
/// devices attached and guest RAM mapped) and the host [`Iommu`] whose fault log it reads.
#[derive(Debug)]
pub struct LocalBackend {
    container: Container,
    iommu: Arc<Iommu>,
    /// Number of the newest fault record already returned.
    seen: u64,
}

impl LocalBackend {
    /// The back end over `container`; faults recorded before this call are not reported.
    pub fn new(container: Container, iommu: Arc<Iommu>) -> Self {
        let seen = iommu.fault_log().total();
        LocalBackend {
            container,
            iommu,
            seen,
        }
    }

    /// The container.
    pub fn container(&self) -> &Container {
        &self.container
    }
}

impl Backend for LocalBackend {
    fn host_caps(&mut self) -> Result<HostCaps, BackendError> {
        Ok(HostCaps::from(&self.container.nesting_info()?))
    }

    fn pasid_alloc(&mut self, min: u32, max: u32) -> Result<u32, BackendError> {
        Ok(self.container.alloc_pasid(min, max)?)
    }

    fn pasid_free(&mut self, pasid: u32) -> Result<(), BackendError> {
        self.container.free_pasids(pasid, pasid)?;
        Ok(())
    }

    fn bind(&mut self, req: &BindRequest) -> Result<(), BackendError> {
        Ok(self.container.bind(req)?)
    }

    fn unbind(&mut self, req: &BindRequest) -> Result<(), BackendError> {
        Ok(self.container.unbind(req.hpasid)?)
    }

    fn invalidate(&mut self, req: &CacheInvalidateRequest) -> Result<(), BackendError> {
        Ok(self.container.invalidate(req)?)
    }

    fn take_faults(&mut self) -> Result<Vec<HostFault>, BackendError> {
        let seen = self.seen;
        let mut out = Vec::new();
        for (n, f) in self.iommu.fault_log().numbered_records() {
            if n <= seen || !f.recorded {
                continue;
            }
            self.seen = self.seen.max(n);
            out.push(HostFault {
                source_id: f.source_id,
                pasid: f.pasid,
                addr: f.addr,
                write: f.access.write,
                execute: f.access.execute,
                privileged: f.access.privileged,
                reason: f.reason as u8,
            });
        }
        Ok(out)
    }
}
