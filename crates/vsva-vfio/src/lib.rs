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
//!   them, `VFIO_SET_IOMMU` picks type1 v2 (3) or nesting (6), `MAP_DMA` / `UNMAP_DMA` build the
//!   container's stage-2 table in the IOMMU, and a nesting container gets the process's
//!   context, PASID_REQUEST and NESTING_OP.
//! * **The uAPI**: [`Container::ioctl`] takes an ioctl number and the caller's argument bytes
//!   and answers exactly as the kernel would (layouts and errnos of `shared/design/uapi.md`);
//!   the typed methods ([`Container::alloc_pasid`], [`Container::bind`], ...) run the same code
//!   after the decoding.
//! * **Devices**: PCI functions ([`PciFunction`]) with a 4 KiB configuration space whose PCIe
//!   PASID capability is virtualized like vfio-pci does it ([`pci`]), and IOMMU-backed mediated
//!   devices ([`Mdev`]) that share a parent function and are told apart by a default PASID.
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
//! assert_eq!(container.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut arg)?, 1);
//! // ...and the typed API over the same path.
//! assert_eq!(container.alloc_pasid(1, 100)?, 2);
//! container.free_pasids(0, u32::MAX)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Lock order
//!
//! A container's state lock → its process's slot lock (the per-process lock over the PASID
//! context) → the device registry's lock → the IOMMU's internal locks. The process registry's
//! lock is taken alone, or when a process's last reference goes. PASID_REQUEST takes exactly
//! one lock, the per-process one; no lock is shared between processes on that path.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod container;
mod error;
mod ioctl;
mod mdev;
mod mm;
pub mod pci;
mod sync;
mod vfio;

use std::fmt;

pub use container::{Container, DmaMapping, IommuInfo, IommuType};
pub use error::VfioError;
pub use ioctl::{
    InfoCapPasidQuota, VFIO_IOMMU_INFO_PGSIZES_ALL, VSVA_INFO_CAP_PASID_QUOTA,
    VSVA_INFO_CAP_PASID_QUOTA_VERSION,
};
pub use mdev::Mdev;
pub use mm::VfioMm;
pub use pci::{ConfigWidth, PasidCapability, PciFunctionSpec};
pub use vfio::{PciFunction, ProcessPasids, Vfio};
pub use vsva_uapi::Errno;

/// Identifies a process robustly: the embedder supplies a pid together with the process's
/// start time (e.g. field 22 of `/proc/<pid>/stat`), so a pid reused by a new process is a
/// different token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessToken {
    pid: u32,
    start_time: u64,
}

impl ProcessToken {
    /// The token of process `pid` started at `start_time` (any clock, as long as the embedder
    /// is consistent).
    pub const fn new(pid: u32, start_time: u64) -> Self {
        ProcessToken { pid, start_time }
    }

    /// The pid.
    pub const fn pid(&self) -> u32 {
        self.pid
    }

    /// The start time.
    pub const fn start_time(&self) -> u64 {
        self.start_time
    }

    /// The token recorded in the process's PASID set, for reports: the pid in the low 32
    /// bits, the low 32 bits of the start time above. Identity is the full token, kept by
    /// this crate, never this value.
    pub const fn set_token(&self) -> u64 {
        self.pid as u64 | self.start_time << 32
    }
}

impl fmt::Display for ProcessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} (start {})", self.pid, self.start_time)
    }
}

/// Identifies a container within its [`Vfio`]; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub u64);

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An IOMMU group number (`/dev/vfio/<n>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a mediated device within its [`Vfio`]; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MdevId(pub u32);

impl fmt::Display for MdevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mdev{}", self.0)
    }
}

/// Host configuration of the VFIO layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioConfig {
    /// How many PASIDs one process may own at once, across all its containers (the series'
    /// `pasid_quota` module parameter). Default 1000.
    pub pasid_quota: u32,
    /// PASID support (the series' `CONFIG_VFIO_PASID`). When false: no per-process context
    /// ([`Vfio::process_context`] fails with `ENOTTY`), PASID_REQUEST answers `EOPNOTSUPP`,
    /// the nesting info reports no PASID features and `pasid_bits` 0, the PASID capability is
    /// hidden from guests, and mdevs (which need a default PASID) cannot be created. Default
    /// true.
    pub pasid_enabled: bool,
    /// Depth of every container's stage-2 table (3, 4 or 5; must be one the IOMMU's SAGAW
    /// offers). `None` picks 4 if offered, else the deepest offered. Default `None`.
    pub stage2_levels: Option<u8>,
    /// How many DMA mappings one container may hold (type1's `dma_entry_limit`). Default
    /// 65535.
    pub dma_entry_limit: usize,
}

impl Default for VfioConfig {
    fn default() -> Self {
        VfioConfig {
            pasid_quota: 1000,
            pasid_enabled: true,
            stage2_levels: None,
            dma_entry_limit: 65535,
        }
    }
}
