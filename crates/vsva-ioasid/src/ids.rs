//! The identifiers every other module names: PASIDs, sets and teardown subscribers.

use std::fmt;

/// A process address space ID: 20 bits at most on PCIe and VT-d.
pub type Pasid = u32;

/// Identifies a set within its space. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetId(pub u32);

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Identifies a registered subscriber, for [`IoasidSpace::unsubscribe`](crate::IoasidSpace::unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriberId(pub(crate) u64);
