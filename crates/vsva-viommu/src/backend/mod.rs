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
///
/// One pointer wide (the cause, [`BackendErrorKind`], is boxed): a back end's
/// `Result<(), BackendError>` is a single register, zero on success, so the calls the guest's
/// invalidations make on every descriptor return without a trip through memory. Building one
/// allocates; only failures pay for it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BackendError(Box<BackendErrorKind>);

/// What made a host operation fail.
#[derive(Debug, thiserror::Error)]
pub enum BackendErrorKind {
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
    /// The host's answer is not usable, for the reason `why`.
    #[cold]
    pub fn unusable(why: &'static str) -> BackendError {
        BackendErrorKind::Unusable(why).into()
    }

    /// What made the operation fail.
    pub fn kind(&self) -> &BackendErrorKind {
        &self.0
    }

    /// The cause, unboxed.
    pub fn into_kind(self) -> BackendErrorKind {
        *self.0
    }

    /// The errno of the refusal, when the host gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self.kind() {
            BackendErrorKind::Vfio(e) => Some(e.errno()),
            BackendErrorKind::Client(vsva_client::ClientError::Daemon { errno, .. }) => {
                Some(*errno)
            }
            _ => None,
        }
    }
}

impl From<BackendErrorKind> for BackendError {
    #[cold]
    fn from(kind: BackendErrorKind) -> BackendError {
        BackendError(Box::new(kind))
    }
}

impl From<vsva_vfio::VfioError> for BackendError {
    #[cold]
    fn from(e: vsva_vfio::VfioError) -> BackendError {
        BackendErrorKind::Vfio(e).into()
    }
}

impl From<vsva_client::ClientError> for BackendError {
    #[cold]
    fn from(e: vsva_client::ClientError) -> BackendError {
        BackendErrorKind::Client(e).into()
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
    /// The host's refusal; [`BackendErrorKind::Unusable`] when the container does not nest.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_result_without_a_value_is_one_register() {
        assert_eq!(
            std::mem::size_of::<Result<(), BackendError>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn the_cause_and_its_errno_survive_the_box() {
        let e = BackendError::from(vsva_client::ClientError::Daemon {
            kind: vsva_proto::Kind::EventsOpen,
            errno: Errno::ENOSPC,
            message: "full".into(),
        });
        assert_eq!(e.errno(), Some(Errno::ENOSPC));
        assert!(matches!(e.kind(), BackendErrorKind::Client(_)));
        let u = BackendError::unusable("no nesting");
        assert_eq!(u.errno(), None);
        assert_eq!(
            u.to_string(),
            "the host cannot serve a virtual IOMMU: no nesting"
        );
        assert!(matches!(
            u.into_kind(),
            BackendErrorKind::Unusable("no nesting")
        ));
    }
}
