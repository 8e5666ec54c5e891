//! Registering devices with a [`Vfio`]: PCI functions (assignable in a group, or kept by a
//! host driver as an mdev parent) and IOMMU-backed mdevs, in the registry.

use std::sync::Arc;

use vsva_iommu::SourceId;

use crate::cleanup::must_succeed;
use crate::error::VfioError;
use crate::function::PciFunction;
use crate::mdev::{Mdev, MdevInner};
use crate::pci::{self, ConfigWidth, FunctionInner, PasidCapability, PciFunctionSpec};
use crate::registry::{FunctionEntry, GroupEntry, Member, Role};
use crate::sync::lock;
use crate::types::{ContainerId, GroupId, MdevId};
use crate::vfio::Vfio;

impl Vfio {
    /// Registers a physical PCI function. With `spec.group` it is assignable (bound to
    /// vfio-pci, in that group, created if new); without, it stays with a host driver and can
    /// parent mdevs.
    ///
    /// The guest-visible PASID capability is limited by the host: width at most the PASID
    /// space's, execute only with ECAP.ERS, privileged only with ECAP.SRS; hidden when PASID
    /// support is off.
    ///
    /// Errors: `EEXIST` for a source id already registered; `EBUSY` for a group attached to a
    /// container; `EINVAL` for a PASID width outside 1..=20 or ATS on an IOMMU without device
    /// TLBs.
    pub fn add_pci_function(&self, spec: PciFunctionSpec) -> Result<PciFunction, VfioError> {
        let inner = &self.inner;
        let cfg = inner.iommu.config();
        if let Some(cap) = spec.pasid {
            if !(1..=20).contains(&cap.max_pasid_width) {
                return Err(VfioError::invalid(
                    "pasid.max_pasid_width",
                    u64::from(cap.max_pasid_width),
                    "a PCIe Max PASID Width is 1..=20",
                ));
            }
        }
        if spec.ats && !cfg.device_tlb {
            return Err(VfioError::invalid(
                "ats",
                1,
                "the IOMMU has no device-TLB support (ECAP.DT)",
            ));
        }
        if spec.pri && !cfg.prs {
            return Err(VfioError::invalid(
                "pri",
                1,
                "the IOMMU has no page-request support (ECAP.PRS)",
            ));
        }
        let vcap = spec
            .pasid
            .filter(|_| inner.config.pasid_enabled)
            .map(|cap| PasidCapability {
                max_pasid_width: cap.max_pasid_width.min(inner.space.pasid_bits()),
                execute: cap.execute && cfg.ers,
                privileged: cap.privileged && cfg.srs,
            });
        let mut reg = lock(&inner.registry);
        if reg.functions.contains_key(&spec.source_id) {
            return Err(VfioError::Exists {
                what: format!("PCI function {}", spec.source_id),
            });
        }
        if let Some(group) = spec.group {
            if let Some(GroupEntry {
                container: Some(container),
                ..
            }) = reg.groups.get(&group)
            {
                return Err(VfioError::GroupInUse {
                    group,
                    container: *container,
                });
            }
            let mdev_group = reg
                .groups
                .get(&group)
                .is_some_and(|g| g.members.iter().any(|m| matches!(m, Member::Mdev(_))));
            if mdev_group {
                return Err(VfioError::Exists {
                    what: format!("group {group} (an mdev's group)"),
                });
            }
        }
        let function = Arc::new(FunctionInner::new(
            &spec,
            vcap,
            inner.config.page_requests_per_device,
        ));
        let role = match spec.group {
            Some(group) => {
                reg.groups
                    .entry(group)
                    .or_insert_with(|| GroupEntry {
                        members: Vec::new(),
                        container: None,
                    })
                    .members
                    .push(Member::Function(function.clone()));
                Role::Assigned(group)
            }
            None => Role::Host { mdevs: 0 },
        };
        reg.functions.insert(
            spec.source_id,
            FunctionEntry {
                inner: function.clone(),
                role,
            },
        );
        Ok(PciFunction {
            inner: function,
            group: spec.group,
            iommu: inner.iommu.clone(),
        })
    }

    /// A handle on a registered PCI function (`ENODEV` if there is none).
    pub fn pci_function(&self, source_id: SourceId) -> Result<PciFunction, VfioError> {
        let reg = lock(&self.inner.registry);
        let entry = reg
            .functions
            .get(&source_id)
            .ok_or(VfioError::UnknownDevice { source_id })?;
        Ok(PciFunction {
            inner: entry.inner.clone(),
            group: match entry.role {
                Role::Assigned(group) => Some(group),
                Role::Host { .. } => None,
            },
            iommu: self.inner.iommu.clone(),
        })
    }

    /// Unregisters a PCI function. Handles still held keep reading its configuration space;
    /// their DMA faults in the IOMMU.
    ///
    /// Errors: `ENODEV` if unknown; `EBUSY` if its group is attached to a container or it
    /// parents mdevs.
    pub fn remove_pci_function(&self, source_id: SourceId) -> Result<(), VfioError> {
        let mut reg = lock(&self.inner.registry);
        let entry = reg
            .functions
            .get(&source_id)
            .ok_or(VfioError::UnknownDevice { source_id })?;
        match entry.role {
            Role::Host { mdevs } if mdevs > 0 => {
                return Err(VfioError::DeviceBusy {
                    source_id,
                    reason: "it is the parent of mdevs; remove them first",
                })
            }
            Role::Host { .. } => {}
            Role::Assigned(group) => {
                let g = reg
                    .groups
                    .get_mut(&group)
                    .expect("an assigned function's group is registered");
                if let Some(container) = g.container {
                    return Err(VfioError::GroupInUse { group, container });
                }
                g.members.retain(|m| m.source_id() != source_id);
                if g.members.is_empty() {
                    reg.groups.remove(&group);
                }
            }
        }
        reg.functions.remove(&source_id);
        Ok(())
    }

    /// Creates an IOMMU-backed mediated device on `parent` (a function kept by a host driver,
    /// with a PASID capability), alone in the new group `group`.
    ///
    /// The host allocates the mdev's default PASID from its own set (not from any process's
    /// quota) below `2^` the parent's PASID width. The first mdev of a parent attaches the
    /// parent to the IOMMU and sets PASID Enable in its control register, as the host driver
    /// would. When the mdev's group is attached to a container, its default PASID's entry in
    /// the parent's PASID table translates through the container's stage 2; binds of the
    /// process's PASIDs go to the parent's PASID table too.
    ///
    /// Errors: `ENOTTY` when PASID support is off; `ENODEV` for an unknown parent; `EBUSY`
    /// for a parent assigned through vfio-pci; `EINVAL` for a parent without PASID capability;
    /// `EEXIST` for an existing group; `ENOSPC` when no PASID is left.
    pub fn create_mdev(&self, parent: SourceId, group: GroupId) -> Result<Mdev, VfioError> {
        let inner = &self.inner;
        if !inner.config.pasid_enabled {
            return Err(VfioError::PasidSupportDisabled);
        }
        let mut reg = lock(&inner.registry);
        let entry = reg
            .functions
            .get(&parent)
            .ok_or(VfioError::UnknownDevice { source_id: parent })?;
        let parent_fn = entry.inner.clone();
        let mdevs = match entry.role {
            Role::Assigned(_) => {
                return Err(VfioError::DeviceBusy {
                    source_id: parent,
                    reason: "it is assigned through vfio-pci, so it cannot parent mdevs",
                })
            }
            Role::Host { mdevs } => mdevs,
        };
        let width = parent_fn.pasid_width();
        if width == 0 {
            return Err(VfioError::invalid(
                "parent",
                u64::from(parent.0),
                "an IOMMU-backed mdev's parent needs a PASID capability",
            ));
        }
        if reg.groups.contains_key(&group) {
            return Err(VfioError::Exists {
                what: format!("group {group}"),
            });
        }
        if mdevs == 0 {
            inner
                .iommu
                .attach_device(parent, inner.device_options(&parent_fn))
                .map_err(|e| VfioError::iommu("attach mdev parent", e))?;
        }
        let max = ((1u64 << width) - 1) as u32;
        let default_pasid = match lock(&inner.host_set).alloc(1, max) {
            Ok(p) => p,
            Err(e) => {
                if mdevs == 0 {
                    // Nothing of the parent's is in use yet: undo its attachment.
                    must_succeed(
                        "undo an mdev parent's attach",
                        inner.iommu.detach_device(parent),
                    );
                }
                return Err(e.into());
            }
        };
        if mdevs == 0 {
            // The host driver enables PASID on the parent before using default PASIDs.
            let ctrl = u32::from(pci::PCI_PASID_CTRL_ENABLE);
            parent_fn.config_write(
                u32::from(pci::EXT_CAP_OFFSET + pci::PCI_PASID_CTRL),
                ConfigWidth::Word,
                ctrl,
            )?;
        }
        reg.next_mdev += 1;
        let id = MdevId(reg.next_mdev);
        let mdev = Arc::new(MdevInner {
            id,
            group,
            parent: parent_fn,
            default_pasid,
        });
        reg.mdevs.insert(id, mdev.clone());
        reg.groups.insert(
            group,
            GroupEntry {
                members: vec![Member::Mdev(mdev.clone())],
                container: None,
            },
        );
        if let Some(FunctionEntry {
            role: Role::Host { mdevs },
            ..
        }) = reg.functions.get_mut(&parent)
        {
            *mdevs += 1;
        }
        Ok(Mdev {
            inner: mdev,
            iommu: inner.iommu.clone(),
        })
    }

    /// Removes an mdev: frees its default PASID and, with its parent's last mdev, detaches
    /// the parent from the IOMMU.
    ///
    /// Errors: `ENODEV` if unknown; `EBUSY` if its group is attached to a container.
    pub fn remove_mdev(&self, id: MdevId) -> Result<(), VfioError> {
        let inner = &self.inner;
        let mut reg = lock(&inner.registry);
        let mdev = reg
            .mdevs
            .get(&id)
            .cloned()
            .ok_or(VfioError::UnknownMdev { mdev: id })?;
        if let Some(GroupEntry {
            container: Some(container),
            ..
        }) = reg.groups.get(&mdev.group)
        {
            return Err(VfioError::GroupInUse {
                group: mdev.group,
                container: *container,
            });
        }
        reg.mdevs.remove(&id);
        reg.groups.remove(&mdev.group);
        let parent = mdev.parent.source_id;
        let last = match reg.functions.get_mut(&parent) {
            Some(FunctionEntry {
                role: Role::Host { mdevs },
                ..
            }) => {
                *mdevs -= 1;
                *mdevs == 0
            }
            _ => false,
        };
        drop(reg);
        // The default PASID is no longer in any container, so its entry is already clear;
        // freeing it through the allocator tears down anything left anyway.
        must_succeed(
            "free an mdev's default PASID",
            lock(&inner.host_set).free(mdev.default_pasid),
        );
        if last {
            must_succeed("detach an mdev parent", inner.iommu.detach_device(parent));
        }
        Ok(())
    }

    /// The container holding `group`, if any (`ENODEV` for an unknown group).
    pub fn group_container(&self, group: GroupId) -> Result<Option<ContainerId>, VfioError> {
        lock(&self.inner.registry)
            .groups
            .get(&group)
            .map(|g| g.container)
            .ok_or(VfioError::UnknownGroup { group })
    }
}
