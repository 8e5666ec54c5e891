//! `vsva-vfio`: the VFIO layer of vsva, the userspace model of the 2020 series "vfio: expose
//! virtual Shared Virtual Addressing to VMs".
//!
//! One [`Vfio`] per host owns the host-wide PASID space ([`vsva_ioasid::IoasidSpace`], width
//! `min(IOMMU PSS + 1, 20)`), the software IOMMU ([`vsva_iommu::Iommu`], registered as the
//! space's teardown subscriber so a freed PASID's entries are cleared before its number is
//! reused), the registry of PCI functions, groups and mdevs, and the [`VfioConfig`].
//!
//! * **Per-process context** ([`VfioMm`], the series' `vfio_mm`): found or created by a
//!   [`ProcessToken`]; one per process, shared by all its containers, held by its nesting
//!   containers (and by [`VfioMm`] references). It holds the process's PASID set (quota
//!   [`VfioConfig::pasid_quota`], changed only by [`Vfio::set_pasid_quota`]) behind the
//!   process's own lock, which serializes PASID alloc, free, bind, unbind and invalidate of
//!   that process; different processes run in parallel. When the last holder goes, every
//!   PASID of the process is freed.
//! * **Containers** ([`Container`], opened by [`Vfio::open_container`]): groups attach to
//!   them, `VFIO_SET_IOMMU` picks type1 (1), type1 v2 (3) or nesting (6), `MAP_DMA` /
//!   `UNMAP_DMA` build the
//!   container's stage-2 table in the IOMMU, and a nesting container gets the process's
//!   context, PASID_REQUEST and NESTING_OP.
//! * **The uAPI**: [`Container::ioctl`] takes an ioctl number and the caller's argument bytes,
//!   answers exactly as the kernel would (the layouts of `vsva-uapi`, the kernel's errnos) and
//!   says what it did ([`IoctlOutcome`]); [`Container::ioctl_journaled`] also hands that
//!   outcome to the embedder's journal, for PASID_REQUEST under the process's mm lock. The
//!   typed methods ([`Container::alloc_pasid`], [`Container::bind`], ...) run the same code
//!   after the decoding. As in the series, an unbind or invalidation answers 0 once the
//!   container's checks pass; a refused one changes nothing, is logged and is counted in
//!   [`Vfio::refusals`] ([`refusal`]).
//! * **Devices**: PCI functions ([`PciFunction`]) with a 4 KiB configuration space whose PCIe
//!   PASID capability is virtualized like vfio-pci does it ([`pci`]), and IOMMU-backed mediated
//!   devices ([`Mdev`]) that share a parent function and are told apart by a default PASID.
//! * **I/O page faults** ([`iopf`]): a device's page requests go to the process that bound
//!   the PASID ([`Vfio::set_fault_sink`], [`Vfio::page_request`]), its answers back to the
//!   device ([`Vfio::page_response`]); unanswered groups expire, and unbind, free, detach and
//!   the owner's death answer every pending group FAILURE. DMA faults on a PASID go to its
//!   owner too. Device-TLB invalidations reach devices that cache translations themselves
//!   through the IOMMU's [`vsva_iommu::DevTlbSink`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
//! use vsva_uapi::{vfio::VFIO_IOMMU_PASID_REQUEST, PasidRequestOp};
//! use vsva_vfio::{GroupId, IommuType, PciFunctionSpec, ProcessToken, Vfio, VfioConfig};
//!
//! let mem = HostMemory::anonymous(&[(0, 32 << 20)])?;
//! let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 16 << 20, 16 << 20)?);
//! let vfio = Vfio::new(iommu, VfioConfig::default())?;
//! let sid = SourceId::new(0, 3, 0);
//! vfio.add_pci_function(PciFunctionSpec::new(sid, Some(GroupId(1))))?;
//!
//! let vm = ProcessToken::new(4242, 987_654);
//! let container = vfio.open_container(vm);
//! container.attach_group(GroupId(1))?;
//! container.set_iommu(IommuType::Nesting)?;
//!
//! // The byte-level entry point, as a client's ioctl would reach it...
//! let mut arg = PasidRequestOp::alloc(1, 100)?.to_bytes();
//! assert_eq!(container.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut arg)?.value(), 1);
//! // ...and the typed API over the same path.
//! assert_eq!(container.alloc_pasid(1, 100)?, 2);
//! container.free_pasids(0, u32::MAX)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Lock order
//!
//! A container's state lock → its process's mm lock (the per-process lock, in the process's
//! `MmSlot`) → the device registry's lock → the IOMMU's internal locks.
//! The page-request router's lock is a leaf. The process registry's
//! lock is taken alone, or when a process's last reference goes. PASID_REQUEST takes exactly
//! one lock, the per-process one; no lock is shared between processes on that path.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cleanup;
mod container;
mod devices;
mod error;
mod function;
mod host;
mod ioctl;
mod iommufd_bridge;
pub mod iopf;
mod mdev;
mod mm;
mod outcome;
pub mod pci;
pub mod refusal;
mod registry;
mod sync;
mod types;
mod vfio;

pub use container::dma::DmaMapping;
pub use container::info::IommuInfo;
pub use container::Container;
pub use error::VfioError;
pub use function::PciFunction;
pub use iommufd_bridge::IommufdClaim;
pub use iopf::{FaultSink, PageFaultRecord};
pub use mdev::Mdev;
pub use mm::{TablePageShare, VfioMm};
pub use outcome::IoctlOutcome;
pub use pci::{ConfigWidth, PasidCapability, PciFunctionSpec};
pub use refusal::{RefusalCounts, RefusalReason, RefusedOp};
pub use types::{ContainerId, GroupId, IommuType, MdevId, ProcessToken, VfioConfig};
pub use vfio::{ProcessPasids, Vfio};
/// Moved to `vsva_uapi::vfio`; re-exported here for compatibility.
pub use vsva_uapi::vfio::{
    InfoCapPasidQuota, VFIO_IOMMU_INFO_PGSIZES_ALL, VSVA_INFO_CAP_PASID_QUOTA,
    VSVA_INFO_CAP_PASID_QUOTA_VERSION,
};
pub use vsva_uapi::Errno;
