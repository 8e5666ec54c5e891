//! The host side of the virtual IOMMU: one trait ([`Backend`]) for the operations a guest's
//! IOMMU programming turns into (PASID_REQUEST, NESTING_OP bind / unbind / CACHE_INVLD, the
//! host's fault records), with two implementations: [`LocalBackend`] over a `vsva-vfio`
//! container in this process, and [`RemoteBackend`] over a `vsvad` connection (with
//! [`RemotePageRequests`], its page requests from the daemon's events).

mod local;
mod remote;
mod remote_pages;

pub use local::LocalBackend;
pub use remote::RemoteBackend;
pub use remote_pages::RemotePageRequests;

use vsva_iommu::SourceId;
use vsva_uapi::{BindRequest, CacheInvalidateRequest, Errno};

use crate::caps::HostCaps;

/// A host operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The in-process VFIO layer refused.
    #[error(transparent)]
    Vfio(#[from] vsva_vfio::VfioError),
    /// The daemon (or the connection to it) refused.
    #[error(transparent)]
    Client(#[from] vsva_client::ClientError),
    /// The host's answer is not usable (for example a container without nesting).
    #[error("the host cannot serve a virtual IOMMU: {0}")]
    Unusable(&'static str),
}

impl BackendError {
    /// The errno of the refusal, when the host gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            BackendError::Vfio(e) => Some(e.errno()),
            BackendError::Client(vsva_client::ClientError::Daemon { errno, .. }) => Some(*errno),
            _ => None,
        }
    }
}

/// A DMA fault the host recorded on one of its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFault {
    /// Host requester id.
    pub source_id: SourceId,
    /// PASID of the request, if it had one.
    pub pasid: Option<u32>,
    /// Input address.
    pub addr: u64,
    /// Write request (else read).
    pub write: bool,
    /// Execute request.
    pub execute: bool,
    /// Privileged request.
    pub privileged: bool,
    /// VT-d fault reason code.
    pub reason: u8,
}

/// The host operations a virtual IOMMU needs, on the VMM's container (one nesting container
/// holding the guest's devices).
pub trait Backend: Send {
    /// What the host IOMMU offers (the container's nesting capability).
    ///
    /// # Errors
    ///
    /// The host's refusal; [`BackendError::Unusable`] when the container does not nest.
    fn host_caps(&mut self) -> Result<HostCaps, BackendError>;

    /// PASID_REQUEST ALLOC in `[min, max]`.
    ///
    /// # Errors
    ///
    /// The host's refusal (`ENOSPC` when none is free or the quota is used); nothing is
    /// allocated then.
    fn pasid_alloc(&mut self, min: u32, max: u32) -> Result<u32, BackendError>;

    /// PASID_REQUEST FREE of one PASID.
    ///
    /// # Errors
    ///
    /// The host's refusal; nothing is freed then.
    fn pasid_free(&mut self, pasid: u32) -> Result<(), BackendError>;

    /// NESTING_OP BIND_PGTBL.
    ///
    /// # Errors
    ///
    /// The host's refusal; nothing is bound then.
    fn bind(&mut self, req: &BindRequest) -> Result<(), BackendError>;

    /// NESTING_OP UNBIND_PGTBL.
    ///
    /// # Errors
    ///
    /// Only the container's (an unbind the host refuses still answers `Ok`, as the uAPI).
    fn unbind(&mut self, req: &BindRequest) -> Result<(), BackendError>;

    /// NESTING_OP CACHE_INVLD.
    ///
    /// # Errors
    ///
    /// Only the container's (a refused invalidation still answers `Ok`, as the uAPI).
    fn invalidate(&mut self, req: &CacheInvalidateRequest) -> Result<(), BackendError>;

    /// Faults the host recorded since the previous call, oldest first. Only faults this
    /// process may see; the virtual IOMMU keeps those of its guest's devices.
    ///
    /// # Errors
    ///
    /// The host's refusal; the next call returns what this one missed, as far as the host
    /// still holds it.
    fn take_faults(&mut self) -> Result<Vec<HostFault>, BackendError>;
}
