//! The host-wide VFIO object: PASID space, IOMMU, device registry, process contexts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vsva_ioasid::{IoasidSet, IoasidSpace, SetStats, SubscriberId};
use vsva_iommu::{Access, DeviceOptions, Iommu, PasidEntry, SourceId, Stage2Id, Translation};

use crate::container::Container;
use crate::error::VfioError;
use crate::mdev::{Mdev, MdevInner};
use crate::mm::{MmRegistry, VfioMm};
use crate::pci::{ConfigWidth, FunctionInner, PasidCapability, PciFunctionSpec};
use crate::sync::lock;
use crate::{ContainerId, GroupId, MdevId, ProcessToken, VfioConfig};

/// The token of the host's own PASID set (mdev default PASIDs).
const HOST_SET_TOKEN: u64 = 0;

/// The VFIO layer of one host: create one per IOMMU and share it (`Clone` is a new handle on
/// the same host).
#[derive(Clone)]
pub struct Vfio {
    pub(crate) inner: Arc<VfioInner>,
}

pub(crate) struct VfioInner {
    pub(crate) config: VfioConfig,
    pub(crate) iommu: Arc<Iommu>,
    pub(crate) space: IoasidSpace,
    subscriber: SubscriberId,
    pub(crate) mms: Arc<MmRegistry>,
    pub(crate) registry: Mutex<Registry>,
    /// The host's PASIDs: mdev default PASIDs, never counted against a process's quota.
    host_set: Mutex<IoasidSet>,
    dids: Mutex<BTreeSet<u16>>,
    next_container: AtomicU64,
    pub(crate) stage2_levels: u8,
}

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

enum Role {
    /// Bound to vfio-pci, in this group.
    Assigned(GroupId),
    /// Kept by a host driver; parent of this many mdevs.
    Host { mdevs: u32 },
}

struct FunctionEntry {
    inner: Arc<FunctionInner>,
    role: Role,
}

pub(crate) struct GroupEntry {
    pub(crate) members: Vec<Member>,
    pub(crate) container: Option<ContainerId>,
}

#[derive(Default)]
pub(crate) struct Registry {
    functions: HashMap<SourceId, FunctionEntry>,
    groups: BTreeMap<GroupId, GroupEntry>,
    mdevs: HashMap<MdevId, Arc<MdevInner>>,
    next_mdev: u32,
}

/// One process's PASID usage, as [`Vfio::processes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPasids {
    /// The process.
    pub process: ProcessToken,
    /// Its set's counters (id, owned, quota).
    pub set: SetStats,
    /// How many of its PASIDs are bound to guest page tables.
    pub bound: usize,
}

impl Vfio {
    /// Creates the VFIO layer over `iommu`: a PASID space of `min(IOMMU PASID width, 20)` bits
    /// with the IOMMU registered as its teardown subscriber.
    ///
    /// Errors (`EINVAL`): a `stage2_levels` the IOMMU does not offer.
    pub fn new(iommu: Arc<Iommu>, config: VfioConfig) -> Result<Self, VfioError> {
        let cfg = iommu.config();
        let stage2_levels = match config.stage2_levels {
            Some(levels) if cfg.supports_sl_levels(levels) => levels,
            Some(levels) => {
                return Err(VfioError::invalid(
                    "stage2_levels",
                    u64::from(levels),
                    "the IOMMU's SAGAW does not offer this stage-2 depth",
                ))
            }
            None if cfg.supports_sl_levels(4) => 4,
            None => cfg.sagaw_levels.iter().copied().max().unwrap_or(4),
        };
        let bits = cfg.pasid_bits.min(vsva_ioasid::MAX_PASID_BITS);
        let space = IoasidSpace::new(bits)?;
        // The IOMMU clears a freed PASID's entries and flushes its caches before the
        // allocator may hand the number out again.
        let subscriber = space.subscribe(iommu.clone());
        let host_set = space.create_set(HOST_SET_TOKEN, u32::MAX)?;
        Ok(Vfio {
            inner: Arc::new(VfioInner {
                config,
                iommu,
                space,
                subscriber,
                mms: Arc::new(MmRegistry::default()),
                registry: Mutex::new(Registry::default()),
                host_set: Mutex::new(host_set),
                dids: Mutex::new(BTreeSet::new()),
                next_container: AtomicU64::new(1),
                stage2_levels,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VfioConfig {
        &self.inner.config
    }

    /// The IOMMU.
    pub fn iommu(&self) -> &Arc<Iommu> {
        &self.inner.iommu
    }

    /// The host-wide PASID space (for statistics, `find`, and extra teardown subscribers).
    pub fn pasid_space(&self) -> &IoasidSpace {
        &self.inner.space
    }

    /// Width of the host-wide PASID space: `min(IOMMU PASID width, 20)`.
    pub fn pasid_bits(&self) -> u8 {
        self.inner.space.pasid_bits()
    }

    /// Depth of every container's stage-2 table.
    pub fn stage2_levels(&self) -> u8 {
        self.inner.stage2_levels
    }

    /// Opens a container for `process`. It holds nothing until a group is attached.
    pub fn open_container(&self, process: ProcessToken) -> Container {
        let id = ContainerId(self.inner.next_container.fetch_add(1, Ordering::Relaxed));
        Container::new(self.inner.clone(), id, process)
    }

    /// A reference on the PASID context of `process`, created (with a set of
    /// [`VfioConfig::pasid_quota`]) if it has none. The reference keeps the context alive
    /// like a container does.
    ///
    /// Errors: `ENOTTY` when PASID support is off; `ENOSPC` if the allocator has no set id left.
    pub fn process_context(&self, process: ProcessToken) -> Result<VfioMm, VfioError> {
        let inner = &self.inner;
        if !inner.config.pasid_enabled {
            return Err(VfioError::PasidSupportDisabled);
        }
        let slot = inner.mms.slot(process);
        slot.acquire(&inner.space, inner.config.pasid_quota)?;
        Ok(VfioMm::held(slot))
    }

    /// A reference on the live PASID context of `process`, without creating one.
    pub fn find_process_context(&self, process: ProcessToken) -> Option<VfioMm> {
        let slot = self.inner.mms.find(process)?;
        VfioMm::existing(&slot)
    }

    /// The admin path: changes how many PASIDs `process` may own. Lowering the quota below
    /// what it owns frees nothing; it just cannot allocate until it is back under the quota.
    /// The change lasts as long as the context; a new context starts at the configured quota.
    ///
    /// Errors: `ESRCH` ([`VfioError::UnknownProcess`]) when the process has no live context.
    pub fn set_pasid_quota(&self, process: ProcessToken, quota: u32) -> Result<(), VfioError> {
        let mm = self
            .find_process_context(process)
            .ok_or(VfioError::UnknownProcess { process })?;
        self.inner.space.set_quota(mm.set_id(), quota)?;
        Ok(())
    }

    /// Every process with a live context and its PASID usage, ordered by set id.
    pub fn processes(&self) -> Vec<ProcessPasids> {
        let mut all: Vec<ProcessPasids> = self
            .inner
            .mms
            .contexts(&self.inner.space)
            .into_iter()
            .map(|(process, set, bound)| ProcessPasids {
                process,
                set,
                bound,
            })
            .collect();
        all.sort_by_key(|p| p.set.id);
        all
    }

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
        let function = Arc::new(FunctionInner::new(&spec, vcap));
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
                    let _ = inner.iommu.detach_device(parent);
                }
                return Err(e.into());
            }
        };
        if mdevs == 0 {
            // The host driver enables PASID on the parent before using default PASIDs.
            let ctrl = u32::from(crate::pci::PCI_PASID_CTRL_ENABLE);
            parent_fn.config_write(
                u32::from(crate::pci::EXT_CAP_OFFSET + crate::pci::PCI_PASID_CTRL),
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
        let _ = lock(&inner.host_set).free(mdev.default_pasid);
        if last {
            let _ = inner.iommu.detach_device(parent);
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

impl fmt::Debug for Vfio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vfio")
            .field("pasid_bits", &self.pasid_bits())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl VfioInner {
    pub(crate) fn device_options(&self, function: &FunctionInner) -> DeviceOptions {
        DeviceOptions {
            pasids: 1u32 << function.pasid_width().max(1),
            rid_pasid: 0,
            ats: function.ats,
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
                    let _ = self.iommu.detach_device(f.source_id);
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
                let _ = self.iommu.detach_device(f.source_id);
            }
            Member::Mdev(m) => {
                let _ = self
                    .iommu
                    .clear_pasid_entry(m.parent.source_id, m.default_pasid);
            }
        }
    }
}

impl Drop for VfioInner {
    fn drop(&mut self) {
        self.space.unsubscribe(self.subscriber);
    }
}

/// A registered PCI function: its guest-visible configuration space, and DMA as the function
/// issues it (checked against its PASID control register, then translated by the IOMMU).
///
/// Cloning gives another handle on the same function.
#[derive(Clone)]
pub struct PciFunction {
    inner: Arc<FunctionInner>,
    group: Option<GroupId>,
    iommu: Arc<Iommu>,
}

impl PciFunction {
    /// Bus, device and function.
    pub fn source_id(&self) -> SourceId {
        self.inner.source_id
    }

    /// The group it is assigned in, `None` for a host-owned function.
    pub fn group(&self) -> Option<GroupId> {
        self.group
    }

    /// The PASID capability a guest reads (limited by the host), `None` if absent or hidden.
    pub fn pasid_capability(&self) -> Option<PasidCapability> {
        self.inner.vcap
    }

    /// Reads `width` bytes of configuration space at `offset`, little-endian in the low bits.
    /// `EINVAL` for an unaligned access or one beyond 4 KiB.
    pub fn config_read(&self, offset: u32, width: ConfigWidth) -> Result<u32, VfioError> {
        self.inner.config_read(offset, width)
    }

    /// Writes the low `width` bytes of `value` at `offset`; read-only bits keep their value.
    /// `EINVAL` for an unaligned access or one beyond 4 KiB.
    pub fn config_write(
        &self,
        offset: u32,
        width: ConfigWidth,
        value: u32,
    ) -> Result<(), VfioError> {
        self.inner.config_write(offset, width, value)
    }

    /// Translates one request of the function (PASID control checks, then the IOMMU).
    /// Errors: `EPERM` when the control register forbids it, `EFAULT` on an IOMMU fault.
    pub fn translate(
        &self,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, VfioError> {
        dma_translate(
            &self.inner,
            &self.iommu,
            self.inner.source_id,
            pasid,
            iova,
            access,
        )
    }

    /// Reads DMA at `iova` (user read) with an optional PASID.
    /// Errors: `EPERM` when the control register forbids it, `EFAULT` on an IOMMU fault.
    pub fn dma_read(&self, pasid: Option<u32>, iova: u64, buf: &mut [u8]) -> Result<(), VfioError> {
        self.inner.check_request(pasid, false, false)?;
        self.iommu
            .dma_read(self.inner.source_id, pasid, iova, buf)
            .map_err(|source| VfioError::Dma {
                source_id: self.inner.source_id,
                source,
            })
    }

    /// Writes DMA at `iova` (user write) with an optional PASID.
    /// Errors: `EPERM` when the control register forbids it, `EFAULT` on an IOMMU fault.
    pub fn dma_write(&self, pasid: Option<u32>, iova: u64, buf: &[u8]) -> Result<(), VfioError> {
        self.inner.check_request(pasid, false, false)?;
        self.iommu
            .dma_write(self.inner.source_id, pasid, iova, buf)
            .map_err(|source| VfioError::Dma {
                source_id: self.inner.source_id,
                source,
            })
    }
}

impl fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciFunction")
            .field("source_id", &self.inner.source_id)
            .field("group", &self.group)
            .field("pasid", &self.inner.vcap)
            .finish_non_exhaustive()
    }
}

/// Checks a request against `function`'s PASID control register and translates it as
/// `requester`.
pub(crate) fn dma_translate(
    function: &FunctionInner,
    iommu: &Iommu,
    requester: SourceId,
    pasid: Option<u32>,
    iova: u64,
    access: Access,
) -> Result<Translation, VfioError> {
    function.check_request(pasid, access.execute, access.privileged)?;
    iommu
        .translate(requester, pasid, iova, access)
        .map_err(|fault| VfioError::Dma {
            source_id: requester,
            source: fault.into(),
        })
}
