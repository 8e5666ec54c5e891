//! `vsva-iommufd`: the iommufd front end of vsva, beside the VFIO one and over the same core:
//! the host-wide PASID space of `vsva-ioasid`, the software VT-d IOMMU of `vsva-iommu`, and
//! the devices, domain ids and per-process PASID contexts of `vsva-vfio`.
//!
//! An [`IommufdCtx`] is one open of `/dev/iommu`. It holds objects by id, as Linux's
//! iommufd does: IOAS (a stage 2), paging HWPTs (the IOAS's stage 2 under a domain id),
//! nested HWPTs (a guest VT-d stage-1 table over a nest-parent paging HWPT), bound devices
//! and fault queues. Everything it holds goes away when it is dropped.
//!
//! * The byte-level entry, [`IommufdCtx::ioctl`] and [`IommufdCtx::device_ioctl`], answers
//!   with Linux's layouts and errnos (`vsva_uapi::iommufd`); the typed methods
//!   ([`IommufdCtx::ioas_map`], [`IommufdCtx::hwpt_alloc`], [`IommufdCtx::attach`], ...)
//!   run the same code after the decoding.
//! * PASIDs: allocated for the context's process from its own set in the host-wide space
//!   ([`IommufdCtx::alloc_pasid`], the set its VFIO containers use), and a PASID attach is
//!   allowed only for a PASID that set owns (`EACCES` for another process's).
//! * Page requests of devices attached through an HWPT with a fault queue become
//!   `iommu_hwpt_pgfault` records ([`IommufdCtx::read_faults`]), answered by
//!   [`IommufdCtx::respond_faults`]; [`IommufdCtx::deliver_page_request`] and
//!   [`route_page_requests`] join them to the IOMMU's page-request queue.
//!
//! Lock order: a context's table lock → its process's mm lock → the device registry's lock
//! → the IOMMU's internal locks.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod areas;
mod ctx;
mod device;
mod error;
mod fault;
mod fault_queue;
mod hwpt;
mod inv_target;
mod ioas;
mod ioctl;
mod iova;
mod kind;
mod objects;
mod reserved;

pub use ctx::{IommufdCtx, ObjectInfo};
pub use error::IommufdError;
pub use fault::route_page_requests;
pub use iova::{IOVA_ALIGNMENT, IOVA_ALIGNMENT_MAX};
pub use kind::ObjectKind;

#[cfg(test)]
mod tests {
    /// A context is shared between threads (a daemon's connection, a VMM's vCPU threads).
    #[test]
    fn the_context_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::IommufdCtx>();
    }
}
