//! The core every container of a host shares ([`VfioInner`]): configuration, IOMMU, PASID
//! space, the device registry, the mm registry and domain ids; and putting group members in
//! and out of a container's domain.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use vsva_ioasid::{IoasidSet, IoasidSpace, SubscriberId};
use vsva_iommu::{DeviceOptions, Iommu, PasidEntry, Stage2Id};

use crate::cleanup::must_succeed;
use crate::error::VfioError;
use crate::iopf::Router;
use crate::mm::MmRegistry;
use crate::pci::FunctionInner;
use crate::refusal::Refusals;
use crate::registry::{Member, Registry};
use crate::sync::lock;
use crate::types::{ContainerId, GroupId, VfioConfig};

/// The shared core of a host's VFIO layer, behind [`crate::Vfio`] and every container.
pub(crate) struct VfioInner {
    pub(crate) config: VfioConfig,
    pub(crate) iommu: Arc<Iommu>,
    pub(crate) space: IoasidSpace,
    pub(crate) subscriber: SubscriberId,
    pub(crate) mms: Arc<MmRegistry>,
    pub(crate) registry: Mutex<Registry>,
    /// The host's PASIDs: mdev default PASIDs, never counted against a process's quota.
    pub(crate) host_set: Mutex<IoasidSet>,
    pub(crate) dids: Mutex<BTreeSet<u16>>,
    pub(crate) next_container: AtomicU64,
    pub(crate) stage2_levels: u8,
    /// Unbinds and invalidations answered 0 but refused, by reason.
    pub(crate) refusals: Refusals,
    /// Page requests routed to PASID owners, and their responses.
    pub(crate) iopf: Arc<Router>,
    /// The router's subscription to the PASID space.
    pub(crate) iopf_subscriber: SubscriberId,
}

impl VfioInner {
    pub(crate) fn device_options(&self, function: &FunctionInner) -> DeviceOptions {
        DeviceOptions {
            pasids: 1u32 << function.pasid_width().max(1),
            rid_pasid: 0,
            ats: function.ats,
            pri: function.pri,
            ..DeviceOptions::default()
        }
    }

    /// Takes `group` for `container`: `ENODEV` if unknown, `EBUSY` if held by another.
    pub(crate) fn claim_group(
        &self,
        group: GroupId,
        container: ContainerId,
    ) -> Result<Vec<Member>, VfioError> {
        let mut reg = lock(&self.registry);
        let entry = reg
            .groups
            .get_mut(&group)
            .ok_or(VfioError::UnknownGroup { group })?;
        if let Some(holder) = entry.container {
            return Err(VfioError::GroupInUse {
                group,
                container: holder,
            });
        }
        entry.container = Some(container);
        Ok(entry.members.clone())
    }

    /// Gives `group` back (no-op if it was removed meanwhile, which `EBUSY` prevents).
    pub(crate) fn release_group(&self, group: GroupId) {
        if let Some(entry) = lock(&self.registry).groups.get_mut(&group) {
            entry.container = None;
        }
    }

    pub(crate) fn alloc_did(&self) -> Result<u16, VfioError> {
        let bits = self.iommu.config().domain_bits;
        let max = ((1u32 << bits) - 1) as u16;
        let mut dids = lock(&self.dids);
        // Domain id 0 is left unused, as VT-d drivers reserve it.
        let mut candidate = 1u16;
        for &used in dids.iter() {
            if used != candidate {
                break;
            }
            candidate = candidate.wrapping_add(1);
        }
        if candidate == 0 || candidate > max {
            return Err(VfioError::DomainIdsExhausted { bits });
        }
        dids.insert(candidate);
        Ok(candidate)
    }

    pub(crate) fn free_did(&self, did: u16) {
        lock(&self.dids).remove(&did);
    }

    /// Puts `member` in the domain: a whole function is attached to the IOMMU with its
    /// requests without PASID (RID_PASID 0) translated by the stage 2; an mdev's default
    /// PASID entry in its parent's table is pointed at the stage 2.
    pub(crate) fn program_member(
        &self,
        member: &Member,
        did: u16,
        stage2: Stage2Id,
    ) -> Result<(), VfioError> {
        let (root, levels) = self
            .iommu
            .stage2_root(stage2)
            .map_err(|e| VfioError::iommu("stage-2 root", e))?;
        let entry = PasidEntry::second_level(did, root, levels);
        match member {
            Member::Function(f) => {
                self.iommu
                    .attach_device(f.source_id, self.device_options(f))
                    .map_err(|e| VfioError::iommu("attach device", e))?;
                if let Err(e) = self.iommu.set_pasid_entry(f.source_id, 0, &entry) {
                    must_succeed(
                        "undo a device attach",
                        self.iommu.detach_device(f.source_id),
                    );
                    return Err(VfioError::iommu("set RID_PASID entry", e));
                }
            }
            Member::Mdev(m) => self
                .iommu
                .set_pasid_entry(m.parent.source_id, m.default_pasid, &entry)
                .map_err(|e| VfioError::iommu("set mdev default PASID entry", e))?,
        }
        Ok(())
    }

    /// Takes `member` out of its domain (the reverse of [`Self::program_member`]). Binds of
    /// process PASIDs must have been cleared first.
    pub(crate) fn unprogram_member(&self, member: &Member) {
        match member {
            Member::Function(f) => {
                // Detaching clears the context entry, frees the PASID tables and flushes.
                must_succeed(
                    "detach a device from its domain",
                    self.iommu.detach_device(f.source_id),
                );
                self.iopf.forget_device(f.source_id);
            }
            Member::Mdev(m) => {
                must_succeed(
                    "clear an mdev's default PASID entry",
                    self.iommu
                        .clear_pasid_entry(m.parent.source_id, m.default_pasid),
                );
                self.iopf
                    .forget_pasid(Some(m.parent.source_id), m.default_pasid);
            }
        }
    }
}

impl Drop for VfioInner {
    fn drop(&mut self) {
        self.space.unsubscribe(self.iopf_subscriber);
        self.space.unsubscribe(self.subscriber);
    }
}
