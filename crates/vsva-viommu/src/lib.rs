//! `vsva-viommu`: the guest's IOMMU a VMM embeds — a virtual Intel VT-d DMA-remapping unit
//! in scalable mode whose guest-visible programming becomes vSVA host operations.
//!
//! * **Registers** ([`regs`]): the VT-d register page as MMIO, [`Viommu::read`] /
//!   [`Viommu::write`] with 4- and 8-byte accesses, reserved bits, read-only registers and
//!   write-1-to-clear bits as the specification defines them; VER / CAP / ECAP derived from
//!   the host's nesting capability and a [`ViommuConfig`].
//! * **Virtual commands** ([`vcmd`]): VCMD allocate / free PASID become PASID_REQUEST on the
//!   host container (guest PASID = host PASID); VCRSP reports them.
//! * **Queued invalidation**: descriptors fetched from guest memory ([`descriptor`] decodes
//!   them); a PASID-cache invalidation reads the guest's root, context and PASID entries and
//!   turns first-level entries into host binds (and cleared ones into unbinds); PASID-based
//!   IOTLB and device-TLB invalidations become CACHE_INVLD; wait descriptors write status and
//!   raise the completion interrupt; bad descriptors stop the queue with IQE.
//! * **Back to the guest**: host faults on the guest's devices land in the fault recording
//!   registers ([`Viommu::poll`]), page requests in the page request queue (from a
//!   [`PageRequestSource`]: [`IommuPageRequests`] in process, [`RemotePageRequests`] from the
//!   daemon's events), interrupts through an [`InterruptSink`].
//! * **Back ends** ([`Backend`]): [`LocalBackend`] over a `vsva-vfio` container in process,
//!   [`RemoteBackend`] over `vsvad` through `vsva-client`.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(container: vsva_vfio::Container, iommu: Arc<vsva_iommu::Iommu>) -> Result<(), Box<dyn std::error::Error>> {
//! use vsva_viommu::{GuestDevice, HostWindow, LocalBackend, MsiMessage, Viommu, ViommuConfig};
//! use vsva_iommu::SourceId;
//!
//! let config = ViommuConfig {
//!     devices: vec![GuestDevice { guest: SourceId::new(0, 3, 0), host: SourceId::new(0, 3, 0) }],
//!     ..ViommuConfig::default()
//! };
//! let ram = Arc::new(HostWindow::new(iommu.clone(), 16 << 20, 16 << 20));
//! let irq = Arc::new(|m: MsiMessage| println!("MSI {:#x} <- {:#x}", m.address, m.data));
//! let viommu = Viommu::new(config, Box::new(LocalBackend::new(container, iommu)), ram, irq)?;
//! let cap = viommu.read(vsva_viommu::regs::CAP, 8); // the guest's MMIO read
//! # let _ = cap; Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod backend;
mod caps;
pub mod descriptor;
mod faults;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod interrupt;
mod memory;
mod mmio;
mod page_source;
mod pasids;
mod prq;
mod queue;
pub mod regs;
mod shadow;
mod tables;
mod unit;
pub mod vcmd;
mod viommu;

pub use backend::{
    Backend, BackendError, BackendErrorKind, HostFault, LocalBackend, RemoteBackend,
    RemotePageRequests,
};
pub use caps::{GuestDevice, HostCaps, ViommuConfig};
pub use interrupt::{InterruptSink, MsiMessage};
pub use memory::{GuestMemory, GuestMemoryError, HostWindow};
pub use page_source::{IommuPageRequests, PageRequestSource};
pub use unit::ViommuStats;
pub use viommu::{PollOutcome, Viommu};
