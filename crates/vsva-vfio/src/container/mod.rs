//! VFIO containers: the container object, its groups and its IOMMU domain (`VFIO_SET_IOMMU`
//! until the last group leaves). The container's other jobs live beside it: DMA mapping
//! ([`dma`]), PASID requests ([`pasid`]), nesting ops ([`nesting`]) and what GET_INFO
//! reports ([`info`]); the byte-level front end is `crate::ioctl`.

pub(crate) mod dma;
pub(crate) mod info;
pub(crate) mod nesting;
pub(crate) mod pasid;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vsva_iommu::{Invalidation, PasidCacheScope, SourceId, Stage2Id};

use crate::cleanup::must_succeed;
use crate::error::VfioError;
use crate::host::VfioInner;
use crate::mm::{MmSlot, VfioMm};
use crate::registry::Member;
use crate::sync::lock;
use crate::types::{ContainerId, GroupId, IommuType, ProcessToken};

/// A DMA mapping the container holds.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    size: u64,
}

/// The container's IOMMU domain, from `VFIO_SET_IOMMU` until its last group leaves.
struct Domain {
    ty: IommuType,
    did: u16,
    stage2: Stage2Id,
    /// The stage 2's root (SSPTPTR) and depth, for the PASID entries binds write.
    s2_root: u64,
    s2_levels: u8,
    /// iova → mapping.
    mappings: BTreeMap<u64, Mapping>,
}

#[derive(Default)]
struct ContainerState {
    /// Attached groups, in attach order, with the members they had then.
    groups: Vec<(GroupId, Vec<Member>)>,
    /// The requester ids whose PASID tables a bind writes: each whole function's, and each
    /// mdev's parent's, once each, in attach order. Kept in step with `groups`.
    targets: Vec<SourceId>,
    domain: Option<Domain>,
}

impl ContainerState {
    fn refresh_targets(&mut self) {
        self.targets.clear();
        for (_, members) in &self.groups {
            for m in members {
                let sid = m.source_id();
                if !self.targets.contains(&sid) {
                    self.targets.push(sid);
                }
            }
        }
    }
}

/// A VFIO container, opened by [`crate::Vfio::open_container`] for one process.
///
/// Dropping it closes it: PASIDs bound through it are unbound, its groups are detached, its
/// stage 2 and domain id are freed, and its reference on the process's PASID context is
/// dropped (the last one releases the context and frees every PASID of the process).
///
/// Every method takes `&self` and is safe to call concurrently.
pub struct Container {
    vfio: Arc<VfioInner>,
    id: ContainerId,
    process: ProcessToken,
    /// Raw IOMMU type (0 = none yet), mirrored from `state` for lock-free dispatch.
    ty: AtomicU32,
    /// The process's slot, kept for the container's whole life; its lock is the per-process
    /// lock. Lock order: `state` → the slot's lock.
    slot: Arc<MmSlot>,
    /// Whether this container holds the process's PASID context (a nesting container with
    /// PASID support); changed under `state`, read lock-free by PASID_REQUEST.
    has_mm: AtomicBool,
    state: Mutex<ContainerState>,
}

impl Container {
    pub(crate) fn new(vfio: Arc<VfioInner>, id: ContainerId, process: ProcessToken) -> Self {
        Container {
            id,
            process,
            ty: AtomicU32::new(0),
            slot: vfio.mms.slot(process),
            has_mm: AtomicBool::new(false),
            state: Mutex::new(ContainerState::default()),
            vfio,
        }
    }

    /// The id [`crate::Vfio::open_container`] gave it, never reused on this host.
    pub fn id(&self) -> ContainerId {
        self.id
    }

    /// The process that opened it, whose PASIDs it serves.
    pub fn process(&self) -> ProcessToken {
        self.process
    }

    /// The IOMMU type `VFIO_SET_IOMMU` set, `None` before it (and again after the last
    /// group left).
    pub fn iommu_type(&self) -> Option<IommuType> {
        IommuType::from_raw(u64::from(self.ty.load(Ordering::Acquire)))
    }

    /// The domain id tagging the container's IOTLB entries, once the IOMMU type is set.
    pub fn domain_id(&self) -> Option<u16> {
        self.lock_state().domain.as_ref().map(|d| d.did)
    }

    /// The container's stage-2 table, once the IOMMU type is set.
    pub fn stage2(&self) -> Option<Stage2Id> {
        self.lock_state().domain.as_ref().map(|d| d.stage2)
    }

    /// The groups attached, in attach order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.lock_state().groups.iter().map(|(g, _)| *g).collect()
    }

    /// A reference on the process's PASID context, while this is a nesting container with
    /// PASID support (holding it keeps the context alive, like a container).
    pub fn process_context(&self) -> Option<VfioMm> {
        if !self.has_mm.load(Ordering::Acquire) {
            return None;
        }
        VfioMm::existing(&self.slot)
    }

    fn lock_state(&self) -> MutexGuard<'_, ContainerState> {
        lock(&self.state)
    }

    // ------------------------------------------------------------------ groups and type

    /// Attaches a group (`VFIO_GROUP_SET_CONTAINER`). With the IOMMU type already set, the
    /// group's devices join the domain at once.
    ///
    /// Errors: `ENODEV` for an unknown group; `EBUSY` if a container (this one included)
    /// holds it; `EINVAL` if this is a nesting container (which holds exactly one group); IOMMU
    /// errors when joining the domain fails (nothing changes then).
    pub fn attach_group(&self, group: GroupId) -> Result<(), VfioError> {
        let mut st = self.lock_state();
        // The VFIO core's group checks come before the driver's (v5 04/15: one group per
        // nesting container).
        let members = self.vfio.claim_group(group, self.id)?;
        if let (
            Some(Domain {
                ty: IommuType::Nesting,
                ..
            }),
            Some((held, _)),
        ) = (&st.domain, st.groups.first())
        {
            self.vfio.release_group(group);
            return Err(VfioError::NestingOneGroup {
                container: self.id,
                group: *held,
            });
        }
        if let Some(domain) = &st.domain {
            if let Err(e) = self.program(&members, domain) {
                self.vfio.release_group(group);
                return Err(e);
            }
        }
        st.groups.push((group, members));
        st.refresh_targets();
        Ok(())
    }

    /// Detaches a group (`VFIO_GROUP_UNSET_CONTAINER`). Every PASID of the process bound
    /// through this container is unbound from the group's devices first. When the last group
    /// leaves, the container loses its IOMMU type, DMA mappings, stage 2 and its reference on
    /// the process's PASID context, as the VFIO core releases the IOMMU driver.
    ///
    /// Errors: `EINVAL` if the group is not attached here.
    pub fn detach_group(&self, group: GroupId) -> Result<(), VfioError> {
        let mut st = self.lock_state();
        let index =
            st.groups
                .iter()
                .position(|(g, _)| *g == group)
                .ok_or(VfioError::GroupNotAttached {
                    group,
                    container: self.id,
                })?;
        if st.groups.len() == 1 {
            self.teardown_domain(&mut st);
        } else if st.domain.is_some() {
            let leaving: Vec<SourceId> = st.groups[index].1.iter().map(Member::source_id).collect();
            let staying: Vec<SourceId> = st
                .groups
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .flat_map(|(_, (_, ms))| ms.iter().map(Member::source_id))
                .collect();
            let only_leaving: Vec<SourceId> = leaving
                .into_iter()
                .filter(|s| !staying.contains(s))
                .collect();
            if self.has_mm.load(Ordering::Acquire) {
                let slot = self.slot.lock();
                let bound = slot.mm.as_ref().map(|ms| ms.bound_in(self.id));
                for pasid in bound.unwrap_or_default() {
                    for &sid in &only_leaving {
                        must_succeed(
                            "unbind a PASID from a leaving group",
                            self.vfio.iommu.clear_pasid_entry(sid, pasid),
                        );
                        self.vfio.iopf.forget_pasid(Some(sid), pasid);
                    }
                }
            }
            for member in &st.groups[index].1 {
                self.vfio.unprogram_member(member);
            }
        }
        st.groups.remove(index);
        st.refresh_targets();
        self.vfio.release_group(group);
        Ok(())
    }

    /// Sets the IOMMU type (`VFIO_SET_IOMMU`): creates the domain (a domain id and an empty
    /// stage-2 table), puts every attached group's devices in it, and for a nesting container
    /// with PASID support takes a reference on the process's PASID context (found or
    /// created).
    ///
    /// Errors: `EINVAL` if the type is already set or no group is attached; `ENODEV` for a
    /// nesting type on an IOMMU without nested translation; `EINVAL` for a nesting type with
    /// more than one group; `ENOSPC` when domain ids run out; IOMMU errors. Nothing changes on
    /// error.
    pub fn set_iommu(&self, ty: IommuType) -> Result<(), VfioError> {
        self.set_iommu_raw(u64::from(ty.raw())).map(drop)
    }

    /// `VFIO_SET_IOMMU` with a raw type, checked in the kernel's order: the container's
    /// state (`EINVAL`) before the type (`ENODEV`); returns the type set.
    pub(crate) fn set_iommu_raw(&self, raw: u64) -> Result<IommuType, VfioError> {
        let mut st = self.lock_state();
        if let Some(domain) = &st.domain {
            return Err(VfioError::IommuAlreadySet {
                container: self.id,
                current: domain.ty.raw(),
            });
        }
        if st.groups.is_empty() {
            return Err(VfioError::NoGroup { container: self.id });
        }
        let ty = IommuType::from_raw(raw).ok_or(VfioError::UnsupportedIommuType {
            requested: raw,
            reason: "only VFIO_TYPE1_IOMMU (1), VFIO_TYPE1v2_IOMMU (3) and \
                     VFIO_TYPE1_NESTING_IOMMU (6) are offered",
        })?;
        let vfio = &self.vfio;
        if ty == IommuType::Nesting {
            if !vfio.iommu.config().nesting {
                return Err(VfioError::UnsupportedIommuType {
                    requested: u64::from(ty.raw()),
                    reason: "the IOMMU has no nested translation (ECAP.NEST)",
                });
            }
            if let [(_, _), (second, _), ..] = st.groups.as_slice() {
                return Err(VfioError::NestingOneGroup {
                    container: self.id,
                    group: *second,
                });
            }
        }
        self.check_table_share()?;
        let did = vfio.alloc_did()?;
        let stage2 = match vfio.iommu.create_stage2(vfio.stage2_levels) {
            Ok(s) => s,
            Err(e) => {
                vfio.free_did(did);
                return Err(VfioError::iommu("create stage 2", e));
            }
        };
        let (s2_root, s2_levels) = match vfio.iommu.stage2_root(stage2) {
            Ok(root) => root,
            Err(e) => {
                must_succeed("undo a stage-2 creation", vfio.iommu.destroy_stage2(stage2));
                vfio.free_did(did);
                return Err(VfioError::iommu("stage-2 root", e));
            }
        };
        let domain = Domain {
            ty,
            did,
            stage2,
            s2_root,
            s2_levels,
            mappings: BTreeMap::new(),
        };
        let mut done = 0;
        let mut result = Ok(());
        for (_, members) in &st.groups {
            match self.program(members, &domain) {
                Ok(()) => done += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let hold = result.is_ok() && ty == IommuType::Nesting && vfio.config.pasid_enabled;
        if hold {
            if let Err(e) = self.slot.acquire(&vfio.space, vfio.config.pasid_quota) {
                result = Err(e);
            }
        }
        if let Err(e) = result {
            for (_, members) in &st.groups[..done] {
                for member in members {
                    vfio.unprogram_member(member);
                }
            }
            must_succeed("undo a stage-2 creation", vfio.iommu.destroy_stage2(stage2));
            vfio.free_did(did);
            return Err(e);
        }
        self.has_mm.store(hold, Ordering::Release);
        self.slot.charge_table_pages(self.stage2_pages(stage2));
        st.domain = Some(domain);
        self.ty.store(ty.raw(), Ordering::Release);
        Ok(ty)
    }

    /// Puts every member in `domain`; on failure takes out those already in.
    fn program(&self, members: &[Member], domain: &Domain) -> Result<(), VfioError> {
        for (i, member) in members.iter().enumerate() {
            if let Err(e) = self.vfio.program_member(member, domain.did, domain.stage2) {
                for done in &members[..i] {
                    self.vfio.unprogram_member(done);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Undoes `set_iommu`: unbinds this container's PASIDs, takes every device out, frees the
    /// stage 2 and the domain id, and drops the context reference.
    fn teardown_domain(&self, st: &mut ContainerState) {
        let Some(domain) = st.domain.take() else {
            return;
        };
        self.ty.store(0, Ordering::Release);
        let held = self.has_mm.swap(false, Ordering::AcqRel);
        let iommu = &self.vfio.iommu;
        if held {
            let mut slot = self.slot.lock();
            if let Some(ms) = slot.mm.as_mut() {
                for pasid in ms.bound_in(self.id) {
                    for &sid in &st.targets {
                        must_succeed(
                            "unbind a PASID at domain teardown",
                            iommu.clear_pasid_entry(sid, pasid),
                        );
                        self.vfio.iopf.forget_pasid(Some(sid), pasid);
                    }
                    ms.forget_bind(pasid, self.id);
                }
            }
        }
        for (_, members) in &st.groups {
            for member in members {
                self.vfio.unprogram_member(member);
            }
        }
        let pages = self.stage2_pages(domain.stage2);
        must_succeed("destroy a stage 2", iommu.destroy_stage2(domain.stage2));
        self.slot.uncharge_table_pages(pages);
        // Nothing tagged with the domain id may survive into its next user.
        must_succeed(
            "flush a freed domain id's IOTLB",
            iommu.invalidate(&Invalidation::IotlbDomain { did: domain.did }),
        );
        must_succeed(
            "flush a freed domain id's PASID cache",
            iommu.invalidate(&Invalidation::PasidCache(PasidCacheScope::Domain {
                did: domain.did,
            })),
        );
        self.vfio.free_did(domain.did);
        // The last holder releases the context: every PASID of the process is freed.
        if held {
            self.slot.release();
        }
    }

    /// Pool pages `stage2` holds (0, logged, if the IOMMU does not know it: the container
    /// keeps every stage 2 it made until it destroys it, so that is a bug).
    pub(crate) fn stage2_pages(&self, stage2: Stage2Id) -> usize {
        self.vfio.iommu.stage2_pages(stage2).unwrap_or_else(|e| {
            tracing::error!(container = %self.id, error = %e, "stage 2 of a container unknown");
            debug_assert!(false, "stage 2 of container {} unknown: {e}", self.id);
            0
        })
    }

    /// `ENOMEM` when the process's stage-2 tables already hold its share of the table pool.
    pub(crate) fn check_table_share(&self) -> Result<(), VfioError> {
        let held = self.slot.table_pages();
        let limit = self.vfio.config.table_pages_per_process;
        if held >= limit {
            return Err(VfioError::TablePoolShare {
                process: self.process,
                held,
                limit,
            });
        }
        Ok(())
    }

    /// `EINVAL` unless the IOMMU type is set: the VFIO core answers every IOMMU-driver ioctl
    /// that way before `VFIO_SET_IOMMU`.
    #[inline]
    pub(crate) fn require_iommu(&self, cmd: u32) -> Result<(), VfioError> {
        if self.ty.load(Ordering::Acquire) == 0 {
            return Err(VfioError::NoIommu {
                container: self.id,
                cmd,
            });
        }
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut st = self.lock_state();
        self.teardown_domain(&mut st);
        st.targets.clear();
        for (group, _) in std::mem::take(&mut st.groups) {
            self.vfio.release_group(group);
        }
    }
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("id", &self.id)
            .field("process", &self.process)
            .field("iommu_type", &self.iommu_type())
            .finish_non_exhaustive()
    }
}
