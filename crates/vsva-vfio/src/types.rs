//! The small value types every module of the crate shares: process, container, group and
//! mdev identities, the IOMMU type, and the host configuration.

use std::fmt;
use std::time::Duration;

use vsva_uapi::vfio::{VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU, VFIO_TYPE1_NESTING_IOMMU};

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

    /// The process id (possibly reused by a later process; the start time tells them apart).
    pub const fn pid(&self) -> u32 {
        self.pid
    }

    /// When the process started, on the embedder's clock.
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

/// Identifies a container within its [`Vfio`](crate::Vfio); never reused.
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

/// Identifies a mediated device within its [`Vfio`](crate::Vfio); never reused.
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
    /// ([`Vfio::process_context`](crate::Vfio::process_context) fails with `ENOTTY`), PASID_REQUEST answers `EOPNOTSUPP`,
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
    /// How many pages of the IOMMU's table pool the stage-2 tables of one process's
    /// containers may hold together: a `VFIO_SET_IOMMU` or `VFIO_IOMMU_MAP_DMA` that would
    /// go past it fails with `ENOMEM`, so one process cannot take the whole pool. Default
    /// 4096 (16 MiB).
    pub table_pages_per_process: usize,
    /// How many page requests one device may have outstanding (requests of incomplete groups
    /// and of groups not answered yet): the PRI capability's Outstanding Page Request
    /// Allocation. A request beyond it is refused with `ENOSPC`. Default 32.
    pub page_requests_per_device: u32,
    /// How long a page-request group waits for its owner's response before
    /// [`Vfio::expire_page_requests`](crate::Vfio::expire_page_requests) answers it FAILURE.
    /// Default 10 s.
    pub page_request_timeout: Duration,
}

impl Default for VfioConfig {
    fn default() -> Self {
        VfioConfig {
            pasid_quota: 1000,
            pasid_enabled: true,
            stage2_levels: None,
            dma_entry_limit: 65535,
            table_pages_per_process: 4096,
            page_requests_per_device: 32,
            page_request_timeout: Duration::from_secs(10),
        }
    }
}

/// The IOMMU types a container can be set to with `VFIO_SET_IOMMU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IommuType {
    /// `VFIO_TYPE1_IOMMU` (1): as type1 v2, except that an unmap removes every mapping it
    /// touches whole instead of refusing to split one (Linux 5.8 `vfio_dma_do_unmap`).
    Type1,
    /// `VFIO_TYPE1v2_IOMMU` (3): DMA mapping through a stage-2 table, any number of groups.
    Type1v2,
    /// `VFIO_TYPE1_NESTING_IOMMU` (6): type1 v2 plus nesting: the process's PASID context,
    /// PASID_REQUEST and NESTING_OP. Holds exactly one group.
    Nesting,
}

impl IommuType {
    /// The raw `VFIO_SET_IOMMU` argument.
    pub const fn raw(self) -> u32 {
        match self {
            IommuType::Type1 => VFIO_TYPE1_IOMMU,
            IommuType::Type1v2 => VFIO_TYPE1v2_IOMMU,
            IommuType::Nesting => VFIO_TYPE1_NESTING_IOMMU,
        }
    }

    /// The type for a raw argument; `None` for types no IOMMU driver takes.
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw == VFIO_TYPE1_IOMMU as u64 {
            Some(IommuType::Type1)
        } else if raw == VFIO_TYPE1v2_IOMMU as u64 {
            Some(IommuType::Type1v2)
        } else if raw == VFIO_TYPE1_NESTING_IOMMU as u64 {
            Some(IommuType::Nesting)
        } else {
            None
        }
    }
}
