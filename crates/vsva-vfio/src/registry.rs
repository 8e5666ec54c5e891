//! The device registry: PCI functions, groups and mdevs, and which container holds each
//! group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use vsva_iommu::SourceId;

use crate::mdev::MdevInner;
use crate::pci::FunctionInner;
use crate::types::{ContainerId, GroupId, MdevId};

/// A member of a group: a whole PCI function, or an mdev.
#[derive(Clone)]
pub(crate) enum Member {
    Function(Arc<FunctionInner>),
    Mdev(Arc<MdevInner>),
}

impl Member {
    /// The requester id the member's DMA carries, whose PASID table binds go to.
    pub(crate) fn source_id(&self) -> SourceId {
        match self {
            Member::Function(f) => f.source_id,
            Member::Mdev(m) => m.parent.source_id,
        }
    }

    /// PASID width the member can use (0 without PASID support).
    pub(crate) fn pasid_width(&self) -> u8 {
        match self {
            Member::Function(f) => f.pasid_width(),
            Member::Mdev(m) => m.parent.pasid_width(),
        }
    }
}

/// What a registered function is for.
pub(crate) enum Role {
    /// Bound to vfio-pci, in this group.
    Assigned(GroupId),
    /// Kept by a host driver; parent of this many mdevs.
    Host { mdevs: u32 },
}

/// A registered PCI function.
pub(crate) struct FunctionEntry {
    pub(crate) inner: Arc<FunctionInner>,
    pub(crate) role: Role,
}

/// A group: its members and the container holding it.
pub(crate) struct GroupEntry {
    pub(crate) members: Vec<Member>,
    pub(crate) container: Option<ContainerId>,
}

/// Every registered function, group and mdev of a host.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) functions: HashMap<SourceId, FunctionEntry>,
    pub(crate) groups: BTreeMap<GroupId, GroupEntry>,
    pub(crate) mdevs: HashMap<MdevId, Arc<MdevInner>>,
    pub(crate) next_mdev: u32,
}
