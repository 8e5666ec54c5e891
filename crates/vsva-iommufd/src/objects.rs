//! The object table of one context: ids handed out lowest-free from 1 (as iommufd's
//! allocating xarray does), each object's kind and data, and its users — the other objects
//! and attachments that hold it, which make `IOMMU_DESTROY` answer `EBUSY`.
//!
//! Ids are dense (lowest free first), so the table is a vector indexed by `id - 1`, as the
//! xarray is an array: a lookup is one bounds check, with no search on the ioctl path.
//!
//! Behaviour lives with each kind (`ioas.rs`, `hwpt.rs`, `device.rs`, `fault.rs`); this file
//! holds only the data and the table.

use std::collections::BTreeMap;

use vsva_iommu::{BackedSpan, Invalidation, SourceId, Stage2Id};
use vsva_uapi::iommufd::{IommuHwptVtdS1, IommuIovaRange};
use vsva_uapi::Errno;
use vsva_vfio::IommufdClaim;

use crate::areas::Areas;
use crate::error::IommufdError;
use crate::fault_queue::FaultQueue;
use crate::kind::ObjectKind;
use crate::reserved::Reserved;

/// An IOAS: its stage 2 in the IOMMU and the mappings made through it.
pub(crate) struct Ioas {
    pub(crate) stage2: Stage2Id,
    pub(crate) areas: Areas,
    /// The IOVAs no mapping may use, by owner: past what the stage 2 translates, and the
    /// interrupt window of each device attached without PASID (Linux's `reserved_itree`).
    pub(crate) reserved: Reserved,
    /// The domain ids over the stage 2 — of its paging HWPTs and of the nested HWPTs over
    /// those — which an unmap flushes (Linux's `iopt->domains`). The table keeps it as
    /// HWPTs come and go ([`Objects::insert`], [`Objects::remove`]).
    pub(crate) domains: Vec<u16>,
    pub(crate) allowed: Vec<IommuIovaRange>,
    /// Table-pool pages of the stage 2 charged to the process's share (all of them: its
    /// root and every table a map created), given back when the IOAS is destroyed.
    pub(crate) charged: usize,
    /// The host memory the last map here found backed, while no region was added or
    /// removed since: the next map's "pin the pages" check inside it is one load
    /// ([`vsva_iommu::HostMemory::is_backed_cached`]).
    pub(crate) backed: BackedSpan,
}

/// A paging HWPT: the IOAS's stage 2 under its own domain id.
pub(crate) struct HwptPaging {
    pub(crate) ioas: u32,
    pub(crate) did: u16,
    pub(crate) nest_parent: bool,
    pub(crate) pasid_compat: bool,
    /// Made by attaching a device to the IOAS itself; goes away with its last attachment.
    pub(crate) auto: bool,
    pub(crate) fault: Option<u32>,
}

/// A nested HWPT: the guest's stage-1 table over its parent's stage 2.
pub(crate) struct HwptNested {
    pub(crate) parent: u32,
    pub(crate) did: u16,
    pub(crate) s1: IommuHwptVtdS1,
    pub(crate) pasid_compat: bool,
    pub(crate) fault: Option<u32>,
    /// Who is attached to it, kept beside the devices' own records (`Device::attached`) so
    /// that `IOMMU_HWPT_INVALIDATE` finds them without a search.
    pub(crate) attached: Vec<Target>,
}

/// A device and PASID (`None`: requests without PASID) attached to a nested HWPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) sid: SourceId,
    pub(crate) pasid: Option<u32>,
    /// The device caches translations (ATS): its device TLB is invalidated too.
    pub(crate) ats: bool,
}

/// A bound device and where it (or its PASIDs) is attached: PASID (`None` = requests
/// without PASID) → HWPT id.
pub(crate) struct Device {
    pub(crate) claim: IommufdClaim,
    pub(crate) sid: SourceId,
    /// The function caches translations (ATS; fixed for the function, as its claim's
    /// device options say): a stage-2 flush reaches its device TLB.
    pub(crate) ats: bool,
    pub(crate) attached: BTreeMap<Option<u32>, u32>,
}

/// An object's data.
pub(crate) enum Object {
    Ioas(Ioas),
    HwptPaging(HwptPaging),
    HwptNested(HwptNested),
    Device(Device),
    Fault(FaultQueue),
}

impl Object {
    pub(crate) fn kind(&self) -> ObjectKind {
        match self {
            Object::Ioas(_) => ObjectKind::Ioas,
            Object::HwptPaging(_) => ObjectKind::HwptPaging,
            Object::HwptNested(_) => ObjectKind::HwptNested,
            Object::Device(_) => ObjectKind::Device,
            Object::Fault(_) => ObjectKind::FaultQueue,
        }
    }
}

/// A table slot: the object and how many others hold it.
pub(crate) struct Entry {
    pub(crate) users: u32,
    pub(crate) object: Object,
}

/// The object table: slot `i` holds object `i + 1`.
#[derive(Default)]
pub(crate) struct Objects {
    slots: Vec<Option<Entry>>,
    /// Invalidations gathered under the table's lock before one submission to the IOMMU
    /// (`IOMMU_HWPT_INVALIDATE`, an IOAS flush): kept between calls so that the hot path does
    /// not allocate. Empty outside a call; its capacity stays bounded by what one submission
    /// holds.
    pending: Vec<Invalidation>,
    /// Bound devices that cache translations (ATS): an IOAS flush walks the devices for
    /// their TLBs only when there is one.
    ats_devices: usize,
}

/// Looks an object of one kind up by id, or names why not; `errno` is what iommufd answers
/// for a wrong kind on this call.
macro_rules! object_of {
    ($fn:ident, $fn_mut:ident, $variant:ident, $ty:ty, $name:literal) => {
        pub(crate) fn $fn(&self, id: u32, errno: Errno) -> Result<&$ty, IommufdError> {
            match &self.get(id)?.object {
                Object::$variant(o) => Ok(o),
                other => Err(IommufdError::WrongKind {
                    id,
                    wanted: $name,
                    found: other.kind(),
                    errno,
                }),
            }
        }

        pub(crate) fn $fn_mut(&mut self, id: u32, errno: Errno) -> Result<&mut $ty, IommufdError> {
            match &mut self.get_mut(id)?.object {
                Object::$variant(o) => Ok(o),
                other => Err(IommufdError::WrongKind {
                    id,
                    wanted: $name,
                    found: other.kind(),
                    errno,
                }),
            }
        }
    };
}

impl Objects {
    /// Adds `object` under the lowest free id (from 1) and returns the id.
    pub(crate) fn insert(&mut self, object: Object) -> u32 {
        self.track(&object, true);
        let entry = Some(Entry { users: 0, object });
        let index = match self.slots.iter().position(Option::is_none) {
            Some(free) => {
                self.slots[free] = entry;
                free
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        index as u32 + 1
    }

    /// The slot of `id`, if the table has one (id 0 never does).
    fn slot(&self, id: u32) -> Option<&Entry> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.slots.get(index)?.as_ref()
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Option<Entry>> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.slots.get_mut(index)
    }

    pub(crate) fn get(&self, id: u32) -> Result<&Entry, IommufdError> {
        // A match, not `ok_or`: no error value is built (and dropped) on the success path.
        match self.slot(id) {
            Some(e) => Ok(e),
            None => Err(IommufdError::NoObject { id }),
        }
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Result<&mut Entry, IommufdError> {
        match self.slot_mut(id).and_then(Option::as_mut) {
            Some(e) => Ok(e),
            None => Err(IommufdError::NoObject { id }),
        }
    }

    object_of!(ioas, ioas_mut, Ioas, Ioas, "an IOAS");

    /// Nested HWPT `id` (a wrong kind is `EINVAL`, as `iommufd_hwpt_invalidate` answers it),
    /// with the table's empty invalidation buffer beside it: one lookup under the lock
    /// gives both.
    pub(crate) fn nested_with_pending(
        &mut self,
        id: u32,
    ) -> Result<(&HwptNested, &mut Vec<Invalidation>), IommufdError> {
        let entry = match id
            .checked_sub(1)
            .and_then(|i| self.slots.get(i as usize))
            .and_then(Option::as_ref)
        {
            Some(e) => e,
            None => return Err(IommufdError::NoObject { id }),
        };
        match &entry.object {
            Object::HwptNested(h) => {
                self.pending.clear();
                Ok((h, &mut self.pending))
            }
            other => Err(IommufdError::WrongKind {
                id,
                wanted: "a nested HWPT",
                found: other.kind(),
                errno: Errno::EINVAL,
            }),
        }
    }

    /// The domain id and the PASID (0: requests without PASID) of nested HWPT `id` when
    /// exactly one device or PASID is attached to it and that device has no device TLB —
    /// the usual nested setup, whose one-entry invalidation is one request. `None` for
    /// anything else (no such id, another kind, no or several targets, ATS): the general
    /// path then answers, with its errno. One bounds check, and the kind and the target
    /// read from the same slot.
    #[inline(always)]
    pub(crate) fn nested_single_target(&self, id: u32) -> Option<(u16, u32)> {
        // Id 0 wraps to an index past any table.
        match self.slots.get((id as usize).wrapping_sub(1)) {
            Some(Some(Entry {
                object: Object::HwptNested(h),
                ..
            })) => match h.attached.as_slice() {
                [t] if !t.ats => Some((h.did, t.pasid.unwrap_or(0))),
                _ => None,
            },
            _ => None,
        }
    }
    object_of!(device, device_mut, Device, Device, "a device");
    object_of!(fault, fault_mut, Fault, FaultQueue, "a fault queue");

    /// One more user of `id` (which exists: callers hold the table lock since looking it up).
    pub(crate) fn hold(&mut self, id: u32) {
        if let Ok(e) = self.get_mut(id) {
            e.users += 1;
        } else {
            debug_assert!(false, "hold of a missing object {id}");
        }
    }

    /// One user fewer of `id`; returns the users left.
    pub(crate) fn unhold(&mut self, id: u32) -> u32 {
        match self.get_mut(id) {
            Ok(e) => {
                debug_assert!(e.users > 0, "unhold of object {id} without users");
                e.users = e.users.saturating_sub(1);
                e.users
            }
            Err(_) => {
                debug_assert!(false, "unhold of a missing object {id}");
                0
            }
        }
    }

    /// Takes `id` out of the table if nobody holds it.
    ///
    /// # Errors
    ///
    /// `ENOENT` for an unknown id, `EBUSY` while it has users; nothing changes then.
    pub(crate) fn remove_unused(&mut self, id: u32) -> Result<Object, IommufdError> {
        let e = self.get(id)?;
        if e.users > 0 {
            return Err(IommufdError::Busy {
                id,
                kind: e.object.kind(),
                users: e.users,
            });
        }
        Ok(self.remove(id).expect("looked up above"))
    }

    /// Takes `id` out whatever holds it (devices on unbind; everything on close).
    pub(crate) fn remove(&mut self, id: u32) -> Option<Object> {
        let object = self.slot_mut(id)?.take().map(|e| e.object)?;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        self.track(&object, false);
        Some(object)
    }

    /// Keeps what the table derives from its objects in step as `object` comes in (`add`)
    /// or goes: an HWPT's domain id in its IOAS's [`Ioas::domains`] (a nested HWPT's
    /// through its parent, which it holds, so the parent is there both times), and the
    /// count of ATS devices.
    fn track(&mut self, object: &Object, add: bool) {
        let (ioas, did) = match object {
            Object::HwptPaging(h) => (h.ioas, h.did),
            Object::HwptNested(h) => match self.slot(h.parent).map(|e| &e.object) {
                Some(Object::HwptPaging(p)) => (p.ioas, h.did),
                _ => {
                    debug_assert!(false, "a nested HWPT without its parent");
                    return;
                }
            },
            Object::Device(d) if d.ats => {
                if add {
                    self.ats_devices += 1;
                } else {
                    self.ats_devices -= 1;
                }
                return;
            }
            _ => return,
        };
        let Some(Some(Entry {
            object: Object::Ioas(ioas),
            ..
        })) = self.slot_mut(ioas)
        else {
            debug_assert!(false, "an HWPT without its IOAS");
            return;
        };
        if add {
            ioas.domains.push(did);
        } else if let Some(at) = ioas.domains.iter().position(|&d| d == did) {
            ioas.domains.swap_remove(at);
        }
    }

    /// Whether a bound device caches translations (ATS).
    pub(crate) fn has_ats_devices(&self) -> bool {
        self.ats_devices > 0
    }

    /// Puts an object taken out with [`Objects::remove`] back under its id, unheld.
    pub(crate) fn put_back(&mut self, id: u32, object: Object) {
        let index = (id as usize).saturating_sub(1);
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.track(&object, true);
        let old = self.slots[index].replace(Entry { users: 0, object });
        debug_assert!(old.is_none(), "object {id} put back over another");
    }

    /// Takes the invalidation buffer out (empty), for a flush that walks the table while it
    /// gathers; [`Objects::put_pending`] gives it back.
    pub(crate) fn take_pending(&mut self) -> Vec<Invalidation> {
        std::mem::take(&mut self.pending)
    }

    /// Gives the invalidation buffer back, emptied, keeping its capacity.
    pub(crate) fn put_pending(&mut self, mut pending: Vec<Invalidation>) {
        pending.clear();
        self.pending = pending;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i as u32 + 1, e.as_ref()?)))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
