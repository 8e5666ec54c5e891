//! [`ObjectKind`]: what an iommufd object is (the kinds of Linux's `enum iommufd_object_type`
//! this front end offers).

use std::fmt;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// An I/O address space (`IOMMUFD_OBJ_IOAS`).
    Ioas,
    /// A paging HWPT over an IOAS (`IOMMUFD_OBJ_HWPT_PAGING`).
    HwptPaging,
    /// A nested HWPT: a guest stage 1 over a paging parent (`IOMMUFD_OBJ_HWPT_NESTED`).
    HwptNested,
    /// A bound device (`IOMMUFD_OBJ_DEVICE`).
    Device,
    /// A fault queue (`IOMMUFD_OBJ_FAULT`).
    FaultQueue,
}

impl ObjectKind {
    /// The kind's name as the admin view prints it.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Ioas => "ioas",
            ObjectKind::HwptPaging => "hwpt-paging",
            ObjectKind::HwptNested => "hwpt-nested",
            ObjectKind::Device => "device",
            ObjectKind::FaultQueue => "fault-queue",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
