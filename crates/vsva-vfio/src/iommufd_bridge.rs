//! What the iommufd front end (`vsva-iommufd`) needs of the VFIO layer, and nothing more: a
//! registered PCI function claimed for an iommufd context (`VFIO_DEVICE_BIND_IOMMUFD`), so no
//! container can take its group meanwhile; domain ids from the host's one allocator; and a
//! process's PASIDs through its mm, allocated, freed and checked under the per-process lock.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vsva_ioasid::Pasid;
use vsva_iommu::{DeviceOptions, SourceId};

use crate::error::VfioError;
use crate::function::PciFunction;
use crate::host::VfioInner;
use crate::mm::VfioMm;
use crate::registry::Role;
use crate::sync::lock;
use crate::types::{ContainerId, GroupId};
use crate::vfio::Vfio;

/// A PCI function bound to an iommufd context: its group is held (as a container would hold
/// it) until the claim is dropped, so a container attaching the group gets `EBUSY`.
pub struct IommufdClaim {
    vfio: Arc<VfioInner>,
    function: PciFunction,
    group: GroupId,
    holder: ContainerId,
}

impl IommufdClaim {
    /// The claimed function (its config space and DMA).
    pub fn function(&self) -> &PciFunction {
        &self.function
    }

    /// The holder id standing for the iommufd context in the group registry (what
    /// [`Vfio::group_container`] reports for the group).
    pub fn holder(&self) -> ContainerId {
        self.holder
    }

    /// How the function is attached to the IOMMU: its PASID width and ATS as the VFIO layer
    /// uses them, page requests (PRI) when the IOMMU offers them (ECAP.PRS).
    pub fn device_options(&self) -> DeviceOptions {
        DeviceOptions {
            pri: self.vfio.iommu.config().prs,
            ..self.vfio.device_options(&self.function.inner)
        }
    }
}

impl Drop for IommufdClaim {
    fn drop(&mut self) {
        self.vfio.release_group(self.group);
    }
}

impl fmt::Debug for IommufdClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IommufdClaim")
            .field("function", &self.function.source_id())
            .field("group", &self.group)
            .field("holder", &self.holder)
            .finish()
    }
}

impl Vfio {
    /// Claims the assigned PCI function `source_id` for an iommufd context: its group is held
    /// by a new holder id until the claim is dropped.
    ///
    /// # Errors
    ///
    /// `ENODEV` for an unknown function; `EINVAL` for a host-owned one (it has no group);
    /// `EBUSY` when its group is held by a container or another claim. Nothing is held then.
    pub fn claim_for_iommufd(&self, source_id: SourceId) -> Result<IommufdClaim, VfioError> {
        let inner = &self.inner;
        let holder = ContainerId(inner.next_container.fetch_add(1, Ordering::Relaxed));
        let mut reg = lock(&inner.registry);
        let entry = reg
            .functions
            .get(&source_id)
            .ok_or(VfioError::UnknownDevice { source_id })?;
        let Role::Assigned(group) = entry.role else {
            return Err(VfioError::invalid(
                "device",
                u64::from(source_id.0),
                "a host-owned function cannot be bound to iommufd",
            ));
        };
        let function = PciFunction {
            inner: entry.inner.clone(),
            group: Some(group),
            iommu: inner.iommu.clone(),
        };
        let g = reg
            .groups
            .get_mut(&group)
            .ok_or(VfioError::UnknownGroup { group })?;
        if let Some(container) = g.container {
            return Err(VfioError::GroupInUse { group, container });
        }
        g.container = Some(holder);
        Ok(IommufdClaim {
            vfio: inner.clone(),
            function,
            group,
            holder,
        })
    }

    /// A domain id from the host's allocator (shared with every container), from 1.
    ///
    /// # Errors
    ///
    /// `ENOSPC` when every id of CAP.ND is in use.
    pub fn alloc_domain_id(&self) -> Result<u16, VfioError> {
        self.inner.alloc_did()
    }

    /// Gives back a domain id from [`Vfio::alloc_domain_id`].
    pub fn free_domain_id(&self, did: u16) {
        self.inner.free_did(did);
    }
}

impl VfioMm {
    /// Allocates the lowest free PASID in `[min, max]` for the process, as PASID_REQUEST
    /// ALLOC does from any of its containers (same set, same quota).
    ///
    /// # Errors
    ///
    /// `EINVAL` for `min > max`; `ENOSPC` when the range has no free PASID or the quota is
    /// used up. Nothing is allocated then.
    pub fn alloc_pasid(&self, min: u32, max: u32) -> Result<Pasid, VfioError> {
        vsva_uapi::PasidRequestOp::alloc(min, max)?;
        self.with_state(|mm| Ok(mm.set.alloc(min, max)?))
    }

    /// Frees the process's PASIDs in `[min, max]` (every teardown subscriber has cleared
    /// them before any is reused) and returns how many.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `min > max`; nothing is freed then.
    pub fn free_pasids(&self, min: u32, max: u32) -> Result<u32, VfioError> {
        vsva_uapi::PasidRequestOp::free(min, max)?;
        self.with_state(|mm| mm.free_range(min, max))
    }

    /// Runs `f` under the per-process lock if the process owns `pasid` (so the PASID cannot
    /// be freed while `f` runs); `None` without running it otherwise.
    pub fn with_owned_pasid<T>(&self, pasid: Pasid, f: impl FnOnce() -> T) -> Option<T> {
        self.with_state(|mm| mm.set.owns(pasid).then(f))
    }
}
