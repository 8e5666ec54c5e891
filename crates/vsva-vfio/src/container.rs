//! VFIO containers: groups, the IOMMU type, the stage-2 table, and the typed uAPI.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vsva_ioasid::{Pasid, PasidState};
use vsva_iommu::{
    Invalidation, PageRange, PasidCacheScope, PasidEntry, S2Perms, SourceId, Stage2Id,
};
use vsva_uapi::iommu::NestingInfoVtd;
use vsva_uapi::vfio::{VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_NESTING_IOMMU};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity, NestingCapability,
    NestingFeatures, NestingOp, NestingOpKind, PasidRequestOp, VtdBindFlags,
};

use crate::error::VfioError;
use crate::ioctl::{InfoCapPasidQuota, VFIO_IOMMU_INFO_PGSIZES_ALL};
use crate::mm::{MmState, ProcessSlot, VfioMm};
use crate::sync::lock;
use crate::vfio::{Member, VfioInner};
use crate::{ContainerId, GroupId, ProcessToken};

/// The IOMMU types a container can be set to with `VFIO_SET_IOMMU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IommuType {
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
            IommuType::Type1v2 => VFIO_TYPE1v2_IOMMU,
            IommuType::Nesting => VFIO_TYPE1_NESTING_IOMMU,
        }
    }

    /// The type for a raw argument; `None` for types this layer does not offer (type 1 v1
    /// included).
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw == VFIO_TYPE1v2_IOMMU as u64 {
            Some(IommuType::Type1v2)
        } else if raw == VFIO_TYPE1_NESTING_IOMMU as u64 {
            Some(IommuType::Nesting)
        } else {
            None
        }
    }
}

/// A `VFIO_IOMMU_MAP_DMA` request in typed form.
///
/// In this userspace model `vaddr` is the host-physical address of the memory in the IOMMU's
/// host memory ([`vsva_iommu::Iommu::memory`]): what a process's virtual address would pin
/// to. `iova` is the guest-physical address the stage 2 maps it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMapping {
    /// Host-physical address of the memory (4 KiB aligned).
    pub vaddr: u64,
    /// I/O virtual (guest-physical) address (4 KiB aligned).
    pub iova: u64,
    /// Length in bytes (a non-zero multiple of 4 KiB).
    pub size: u64,
    /// Devices may read it.
    pub read: bool,
    /// Devices may write it.
    pub write: bool,
}

/// What `VFIO_IOMMU_GET_INFO` reports, in typed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuInfo {
    /// Supported IOVA page sizes (`VFIO_IOMMU_INFO_PGSIZES`).
    pub iova_pgsizes: u64,
    /// The nesting capability (`VFIO_IOMMU_TYPE1_INFO_CAP_NESTING`), for a nesting container.
    pub nesting: Option<NestingCapability>,
    /// The process's PASID quota and usage ([`crate::VSVA_INFO_CAP_PASID_QUOTA`]), for a
    /// container with a PASID context.
    pub pasid_quota: Option<InfoCapPasidQuota>,
}

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
    slot: Arc<ProcessSlot>,
    /// Whether this container holds the process's PASID context (a nesting container with
    /// PASID support); changed under `state`, read lock-free by PASID_REQUEST.
    has_ctx: AtomicBool,
    state: Mutex<ContainerState>,
}

impl Container {
    pub(crate) fn new(vfio: Arc<VfioInner>, id: ContainerId, process: ProcessToken) -> Self {
        Container {
            id,
            process,
            ty: AtomicU32::new(0),
            slot: vfio.mms.slot(process),
            has_ctx: AtomicBool::new(false),
            state: Mutex::new(ContainerState::default()),
            vfio,
        }
    }

    /// The container's id.
    pub fn id(&self) -> ContainerId {
        self.id
    }

    /// The process that opened it.
    pub fn process(&self) -> ProcessToken {
        self.process
    }

    /// The IOMMU type, once set.
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
        if !self.has_ctx.load(Ordering::Acquire) {
            return None;
        }
        VfioMm::existing(&self.slot)
    }

    pub(crate) fn vfio(&self) -> &VfioInner {
        &self.vfio
    }

    fn lock_state(&self) -> MutexGuard<'_, ContainerState> {
        lock(&self.state)
    }

    // ------------------------------------------------------------------ groups and type

    /// Attaches a group (`VFIO_GROUP_SET_CONTAINER`). With the IOMMU type already set, the
    /// group's devices join the domain at once.
    ///
    /// Errors: `ENODEV` for an unknown group; `EBUSY` if a container (this one included)
    /// holds it, or if this is a nesting container (which holds exactly one group); IOMMU
    /// errors when joining the domain fails (nothing changes then).
    pub fn attach_group(&self, group: GroupId) -> Result<(), VfioError> {
        let mut st = self.lock_state();
        if let (
            Some(Domain {
                ty: IommuType::Nesting,
                ..
            }),
            Some((held, _)),
        ) = (&st.domain, st.groups.first())
        {
            return Err(VfioError::NestingOneGroup {
                container: self.id,
                group: *held,
            });
        }
        let members = self.vfio.claim_group(group, self.id)?;
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
            if self.has_ctx.load(Ordering::Acquire) {
                let slot = self.slot.lock();
                let bound = slot.ctx.as_ref().map(|ms| ms.bound_in(self.id));
                for pasid in bound.unwrap_or_default() {
                    for &sid in &only_leaving {
                        let _ = self.vfio.iommu.clear_pasid_entry(sid, pasid);
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
    /// nesting type on an IOMMU without nested translation; `EBUSY` for a nesting type with
    /// more than one group; `ENOSPC` when domain ids run out; IOMMU errors. Nothing changes on
    /// error.
    pub fn set_iommu(&self, ty: IommuType) -> Result<(), VfioError> {
        self.set_iommu_raw(u64::from(ty.raw()))
    }

    /// `VFIO_SET_IOMMU` with a raw type, checked in the kernel's order: the container's
    /// state (`EINVAL`) before the type (`ENODEV`).
    pub(crate) fn set_iommu_raw(&self, raw: u64) -> Result<(), VfioError> {
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
            reason: "only VFIO_TYPE1v2_IOMMU (3) and VFIO_TYPE1_NESTING_IOMMU (6) are offered",
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
                let _ = vfio.iommu.destroy_stage2(stage2);
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
            let _ = vfio.iommu.destroy_stage2(stage2);
            vfio.free_did(did);
            return Err(e);
        }
        self.has_ctx.store(hold, Ordering::Release);
        st.domain = Some(domain);
        self.ty.store(ty.raw(), Ordering::Release);
        Ok(())
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
        let held = self.has_ctx.swap(false, Ordering::AcqRel);
        let iommu = &self.vfio.iommu;
        if held {
            let mut slot = self.slot.lock();
            if let Some(ms) = slot.ctx.as_mut() {
                for pasid in ms.bound_in(self.id) {
                    for &sid in &st.targets {
                        let _ = iommu.clear_pasid_entry(sid, pasid);
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
        let _ = iommu.destroy_stage2(domain.stage2);
        // Nothing tagged with the domain id may survive into its next user.
        let _ = iommu.invalidate(&Invalidation::IotlbDomain { did: domain.did });
        let _ = iommu.invalidate(&Invalidation::PasidCache(PasidCacheScope::Domain {
            did: domain.did,
        }));
        self.vfio.free_did(domain.did);
        // The last holder releases the context: every PASID of the process is freed.
        if held {
            self.slot.release();
        }
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

    // ------------------------------------------------------------------ info

    /// The nesting features this host offers a nesting container.
    fn features(&self) -> NestingFeatures {
        if self.vfio.config.pasid_enabled {
            NestingFeatures::ALL
        } else {
            NestingFeatures::empty()
        }
    }

    fn nesting_capability(&self, st: &ContainerState) -> NestingCapability {
        let vfio = &self.vfio;
        let cfg = vfio.iommu.config();
        let pasid_bits = if vfio.config.pasid_enabled {
            st.groups
                .iter()
                .flat_map(|(_, ms)| ms.iter().map(Member::pasid_width))
                .fold(vfio.space.pasid_bits(), u8::min)
        } else {
            0
        };
        NestingCapability {
            features: self.features(),
            addr_width: if cfg.fl5lp {
                AddrWidth::Bits57
            } else {
                AddrWidth::Bits48
            },
            pasid_bits: u16::from(pasid_bits),
            vtd: NestingInfoVtd {
                flags: 0,
                padding: 0,
                cap_reg: vfio.iommu.cap(),
                ecap_reg: vfio.iommu.ecap(),
            },
        }
    }

    /// What `VFIO_IOMMU_GET_INFO` reports: IOVA page sizes; for a nesting container the
    /// nesting capability (features, first-level address width, PASID width = the smallest of
    /// the PASID space's and the container's devices', VT-d CAP/ECAP); with a PASID context,
    /// the process's PASID quota and usage.
    ///
    /// Errors: `EINVAL` before the IOMMU type is set.
    pub fn info(&self) -> Result<IommuInfo, VfioError> {
        let st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let nesting = (domain.ty == IommuType::Nesting).then(|| self.nesting_capability(&st));
        let pasid_quota = if self.has_ctx.load(Ordering::Acquire) {
            let slot = self.slot.lock();
            slot.ctx
                .as_ref()
                .map(|ms| InfoCapPasidQuota::new(ms.set.quota(), ms.set.owned()))
        } else {
            None
        };
        Ok(IommuInfo {
            iova_pgsizes: VFIO_IOMMU_INFO_PGSIZES_ALL,
            nesting,
            pasid_quota,
        })
    }

    /// The nesting capability of a nesting container (`EINVAL` before the type is set,
    /// `EOPNOTSUPP` for a type1 v2 container).
    pub fn nesting_info(&self) -> Result<NestingCapability, VfioError> {
        self.info()?.nesting.ok_or(VfioError::NestingUnsupported {
            container: self.id,
            op: "report nesting info",
            reason: "it is not a nesting container",
        })
    }

    // ------------------------------------------------------------------ DMA mapping

    /// Maps guest memory in the container's stage 2 (`VFIO_IOMMU_MAP_DMA`).
    ///
    /// Errors: `EINVAL` before the type is set, for no permission, a zero or unaligned size,
    /// unaligned addresses, a wrapping range, or a range beyond the stage 2's width; `EEXIST`
    /// for an overlap; `EFAULT` when `vaddr` is not host memory; `ENOSPC` past the mapping
    /// limit; `ENOMEM` when the IOMMU's table pool is exhausted.
    pub fn map_dma(&self, map: &DmaMapping) -> Result<(), VfioError> {
        let mut st = self.lock_state();
        let domain = st.domain.as_mut().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        if !map.read && !map.write {
            return Err(VfioError::invalid(
                "flags",
                0,
                "a mapping needs VFIO_DMA_MAP_FLAG_READ or VFIO_DMA_MAP_FLAG_WRITE",
            ));
        }
        check_page_multiple("size", map.size, false)?;
        check_page_multiple("iova", map.iova, true)?;
        check_page_multiple("vaddr", map.vaddr, true)?;
        let end = map
            .iova
            .checked_add(map.size)
            .ok_or_else(|| VfioError::invalid("size", map.size, "iova + size wraps around"))?;
        if map.vaddr.checked_add(map.size).is_none() {
            return Err(VfioError::invalid(
                "size",
                map.size,
                "vaddr + size wraps around",
            ));
        }
        if let Some((&iova, m)) = domain.mappings.range(..end).next_back() {
            if iova + m.size > map.iova {
                return Err(VfioError::DmaExists {
                    iova: map.iova,
                    size: map.size,
                    existing_iova: iova,
                    existing_size: m.size,
                });
            }
        }
        let limit = self.vfio.config.dma_entry_limit;
        if domain.mappings.len() >= limit {
            return Err(VfioError::DmaLimit {
                container: self.id,
                limit,
            });
        }
        let iommu = &self.vfio.iommu;
        if !iommu.memory().is_backed(map.vaddr, map.size) {
            return Err(VfioError::DmaUnbacked {
                vaddr: map.vaddr,
                size: map.size,
            });
        }
        // Readable memory is executable as far as stage 2 is concerned; the guest's first
        // level decides execute rights.
        let perms = S2Perms {
            read: map.read,
            write: map.write,
            execute: map.read,
        };
        iommu
            .stage2_map(domain.stage2, map.iova, map.vaddr, map.size, perms)
            .map_err(|e| VfioError::iommu("map stage 2", e))?;
        domain.mappings.insert(map.iova, Mapping { size: map.size });
        Ok(())
    }

    /// Unmaps every mapping inside `[iova, iova + size)` (`VFIO_IOMMU_UNMAP_DMA`) and flushes
    /// the IOTLB entries (nested ones included) and device TLBs that could hold them. Returns
    /// the bytes unmapped (0 if nothing was mapped there).
    ///
    /// Errors: `EINVAL` before the type is set, for a zero or unaligned size, an unaligned or
    /// wrapping range, or one that would split a mapping (type1 v2).
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64, VfioError> {
        check_page_multiple("size", size, false)?;
        check_page_multiple("iova", iova, true)?;
        let end = iova
            .checked_add(size)
            .ok_or_else(|| VfioError::invalid("size", size, "iova + size wraps around"))?;
        let mut st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let split = |at: u64| {
            domain
                .mappings
                .range(..=at)
                .next_back()
                .filter(|(&start, m)| start < at && start + m.size > at)
                .map(|(&start, m)| VfioError::DmaSplit {
                    iova,
                    size,
                    map_iova: start,
                    map_size: m.size,
                })
        };
        if let Some(err) = split(iova).or_else(|| split(end)) {
            return Err(err);
        }
        let victims: Vec<(u64, u64)> = domain
            .mappings
            .range(iova..end)
            .map(|(&start, m)| (start, m.size))
            .collect();
        Ok(self.unmap_ranges(&mut st, &victims))
    }

    /// Unmaps everything (`VFIO_DMA_UNMAP_FLAG_ALL`); returns the bytes unmapped.
    /// Errors: `EINVAL` before the type is set.
    pub fn unmap_all_dma(&self) -> Result<u64, VfioError> {
        let mut st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let victims: Vec<(u64, u64)> = domain
            .mappings
            .iter()
            .map(|(&start, m)| (start, m.size))
            .collect();
        Ok(self.unmap_ranges(&mut st, &victims))
    }

    fn unmap_ranges(&self, st: &mut ContainerState, victims: &[(u64, u64)]) -> u64 {
        let ContainerState {
            targets, domain, ..
        } = st;
        let Some(domain) = domain.as_mut() else {
            return 0;
        };
        let iommu = &self.vfio.iommu;
        let mamv = iommu.config().mamv;
        let mut unmapped = 0;
        for &(start, size) in victims {
            // Whole mappings only, so the IOMMU cannot refuse to split a large page.
            if iommu.stage2_unmap(domain.stage2, start, size).is_ok() {
                domain.mappings.remove(&start);
                unmapped += size;
                let range = PageRange::covering(start, size);
                let inv = if range.am <= mamv {
                    Invalidation::IotlbDomainPages {
                        did: domain.did,
                        range,
                        ih: false,
                    }
                } else {
                    Invalidation::IotlbDomain { did: domain.did }
                };
                let _ = iommu.invalidate(&inv);
            }
        }
        if unmapped > 0 {
            for &sid in targets.iter() {
                let _ = iommu.invalidate(&Invalidation::DeviceTlbAll { source_id: sid });
            }
        }
        unmapped
    }

    // ------------------------------------------------------------------ PASID_REQUEST

    /// Runs a validated PASID_REQUEST: ALLOC returns the new PASID, FREE the number freed
    /// (the ioctl reports 0 for it).
    #[inline]
    pub(crate) fn pasid_request(&self, op: PasidRequestOp) -> Result<u64, VfioError> {
        if !self.has_ctx.load(Ordering::Acquire) {
            return Err(self.no_context());
        }
        let mut slot = self.slot.lock();
        let Some(ms) = slot.ctx.as_mut() else {
            drop(slot);
            return Err(self.no_context());
        };
        match op {
            PasidRequestOp::Alloc { min, max } => Ok(u64::from(ms.set.alloc(min, max)?)),
            PasidRequestOp::Free { min, max } => Ok(u64::from(ms.free_range(min, max)?)),
        }
    }

    /// Why a container without a context cannot serve PASID_REQUEST.
    fn no_context(&self) -> VfioError {
        match self.iommu_type() {
            None => VfioError::NoIommu {
                container: self.id,
                cmd: 0,
            },
            Some(IommuType::Type1v2) => VfioError::NoPasidContext {
                container: self.id,
                reason: "it is not a nesting container (IOMMU type 3)",
            },
            Some(IommuType::Nesting) => VfioError::NoPasidContext {
                container: self.id,
                reason: "PASID support is disabled on this host",
            },
        }
    }

    /// Allocates the lowest free PASID in `[min, max]` for the process (PASID_REQUEST
    /// ALLOC).
    ///
    /// Errors: `EINVAL` for `min > max` or before the type is set; `EOPNOTSUPP` without a
    /// PASID context; `ENOSPC` when the range has no free PASID or the process's quota is
    /// used up.
    pub fn alloc_pasid(&self, min: u32, max: u32) -> Result<Pasid, VfioError> {
        let op = checked_op(true, min, max)?;
        self.require_iommu(0)?;
        // The space is at most 20 bits wide, so an allocated PASID always fits.
        self.pasid_request(op).map(|p| p as Pasid)
    }

    /// Frees the process's own PASIDs in `[min, max]` (PASID_REQUEST FREE; `[0, u32::MAX]`
    /// frees all of them) and returns how many. Bound ones are torn down in the IOMMU first;
    /// none is reused before every teardown subscriber has finished. Costs what the process
    /// owns, not the width of the range.
    ///
    /// Errors: `EINVAL` for `min > max` or before the type is set; `EOPNOTSUPP` without a
    /// PASID context.
    pub fn free_pasids(&self, min: u32, max: u32) -> Result<u32, VfioError> {
        let op = checked_op(false, min, max)?;
        self.require_iommu(0)?;
        self.pasid_request(op).map(|n| n as u32)
    }

    // ------------------------------------------------------------------ NESTING_OP

    /// Binds a guest first-level page table to a PASID of the process (NESTING_OP
    /// BIND_PGTBL): on every device of the container, the PASID's entry becomes nested, with
    /// the guest's table at `gpgd` (4- or 5-level per `addr_width`) over the container's
    /// stage 2, tagged with the container's domain id, and the VT-d attributes asked for. If
    /// any device refuses, the bind is undone on all of them.
    ///
    /// Errors: `EINVAL` before the type is set, for a PASID outside the space, an unaligned
    /// `gpgd`, an `emt` above 7, a 57-bit width the IOMMU does not walk, or what the IOMMU
    /// refuses (a PASID beyond a device's PASID table, an attribute it lacks); `EOPNOTSUPP`
    /// for a type1 v2 container or without PASID support; `EACCES` / `ENOENT` for a PASID
    /// the process does not own; `EBUSY` if it is already bound here; `ENOMEM` when the
    /// IOMMU's table pool is exhausted.
    pub fn bind(&self, req: &BindRequest) -> Result<(), VfioError> {
        self.nesting_op(|| Ok(NestingOp::Bind(*req)), NestingOpKind::BindPgtbl)
    }

    /// Unbinds a PASID of the process from this container's devices (NESTING_OP
    /// UNBIND_PGTBL; only `hpasid` matters). Succeeds for any PASID the process owns, bound
    /// or not.
    ///
    /// Errors: `EINVAL` before the type is set or for a PASID outside the space;
    /// `EOPNOTSUPP` as for [`Container::bind`]; `EACCES` / `ENOENT` for a PASID the process
    /// does not own.
    pub fn unbind(&self, hpasid: u64) -> Result<(), VfioError> {
        let req = BindRequest::new(hpasid, 0, AddrWidth::Bits48);
        self.nesting_op(|| Ok(NestingOp::Unbind(req)), NestingOpKind::UnbindPgtbl)
    }

    /// Passes a guest's cache invalidation on to the IOMMU (NESTING_OP CACHE_INVLD), for the
    /// container's domain:
    ///
    /// | granularity | IOTLB | DEV_IOTLB | PASID cache |
    /// |---|---|---|---|
    /// | DOMAIN | PASID-based IOTLB, all PASIDs of the domain | – | PASID cache of the domain |
    /// | PASID | PASID-based IOTLB of the PASID | each device's TLB for the PASID | the PASID's entry |
    /// | ADDR | PASID-based IOTLB, page-selective (IH = LEAF) | each device's TLB for the pages | – |
    ///
    /// An ADDR range is `granule_size × nb_granules` from `addr`, rounded out to the aligned
    /// power-of-two range the hardware invalidates; one larger than CAP.MAMV allows falls
    /// back to the whole PASID. ARCHID is not used by VT-d and is ignored.
    ///
    /// Errors: `EINVAL` before the type is set, for PASID or ADDR granularity without a
    /// PASID, a PASID outside the space, a granule size other than 4 KiB / 2 MiB / 1 GiB, no
    /// granules, an address not aligned to the granule, or a wrapping range; `EOPNOTSUPP` as
    /// for [`Container::bind`]; `EACCES` / `ENOENT` for a PASID the process does not own.
    pub fn invalidate(&self, req: &CacheInvalidateRequest) -> Result<(), VfioError> {
        self.nesting_op(
            || Ok(NestingOp::Invalidate(*req)),
            NestingOpKind::CacheInvld,
        )
    }

    /// Runs a NESTING_OP: the container checks (type, features) come before the payload is
    /// decoded, as in the kernel; then the op runs under the process's lock.
    pub(crate) fn nesting_op(
        &self,
        decode: impl FnOnce() -> Result<NestingOp, VfioError>,
        kind: NestingOpKind,
    ) -> Result<(), VfioError> {
        let st = self.lock_state();
        let op_name = match kind {
            NestingOpKind::BindPgtbl => "bind a guest page table",
            NestingOpKind::UnbindPgtbl => "unbind a guest page table",
            NestingOpKind::CacheInvld => "pass a cache invalidation",
        };
        let Some(domain) = st.domain.as_ref() else {
            return Err(VfioError::NoIommu {
                container: self.id,
                cmd: 0,
            });
        };
        if domain.ty != IommuType::Nesting {
            return Err(VfioError::NestingUnsupported {
                container: self.id,
                op: op_name,
                reason: "it is not a nesting container (IOMMU type 3)",
            });
        }
        if !self.features().contains(kind.required_feature()) {
            return Err(VfioError::NestingUnsupported {
                container: self.id,
                op: op_name,
                reason: "its nesting info lacks the feature (PASID support is disabled)",
            });
        }
        let op = decode()?;
        let no_context = || VfioError::NestingUnsupported {
            container: self.id,
            op: op_name,
            reason: "it has no per-process PASID context",
        };
        if !self.has_ctx.load(Ordering::Acquire) {
            return Err(no_context());
        }
        let mut slot = self.slot.lock();
        let Some(ms) = slot.ctx.as_mut() else {
            return Err(no_context());
        };
        match op {
            NestingOp::Bind(req) => self.bind_locked(&st, domain, ms, &req),
            NestingOp::Unbind(req) => self.unbind_locked(&st, ms, req.hpasid),
            NestingOp::Invalidate(req) => self.invalidate_locked(&st, domain, ms, &req),
        }
    }

    /// The PASID a caller named, if it is in the space and the process owns it: `EINVAL`
    /// outside `[1, 2^pasid_bits - 1]`, `EACCES` if another set owns it, `ENOENT` if nobody
    /// does (free, or still being torn down).
    fn owned_pasid(
        &self,
        ms: &MmState,
        field: &'static str,
        pasid: u64,
    ) -> Result<Pasid, VfioError> {
        let space = &self.vfio.space;
        let max = space.max_pasid();
        if pasid == 0 || pasid > u64::from(max) {
            return Err(VfioError::PasidOutOfRange { field, pasid, max });
        }
        let p = pasid as Pasid;
        if ms.set.owns(p) {
            return Ok(p);
        }
        Err(match space.find(p) {
            Some(PasidState::Allocated { set, .. }) => VfioError::PasidNotOwned {
                field,
                pasid: p,
                owner: set,
                caller: ms.set.id(),
            },
            Some(PasidState::Freeing { .. }) => VfioError::PasidNotAllocated {
                field,
                pasid: p,
                freeing: true,
            },
            None => VfioError::PasidNotAllocated {
                field,
                pasid: p,
                freeing: false,
            },
        })
    }

    fn bind_locked(
        &self,
        st: &ContainerState,
        domain: &Domain,
        ms: &mut MmState,
        req: &BindRequest,
    ) -> Result<(), VfioError> {
        let pasid = self.owned_pasid(ms, "hpasid", req.hpasid)?;
        if ms.is_bound(pasid, self.id) {
            return Err(VfioError::AlreadyBound {
                pasid,
                container: self.id,
            });
        }
        if req.gpgd & 0xfff != 0 {
            return Err(VfioError::invalid(
                "gpgd",
                req.gpgd,
                "the guest's first-level root table must be 4 KiB aligned",
            ));
        }
        if req.vtd.emt > 7 {
            return Err(VfioError::invalid(
                "vendor.vtd.emt",
                u64::from(req.vtd.emt),
                "the PASID entry's EMT field has 3 bits",
            ));
        }
        let iommu = &self.vfio.iommu;
        if req.addr_width == AddrWidth::Bits57 && !iommu.config().fl5lp {
            return Err(VfioError::invalid(
                "addr_width",
                57,
                "the IOMMU walks only 4-level first-level tables (no CAP.FL5LP)",
            ));
        }
        let flags = req.vtd.flags;
        let entry = PasidEntry {
            flpm: u8::from(req.addr_width == AddrWidth::Bits57),
            sre: flags.contains(VtdBindFlags::SRE),
            eafe: flags.contains(VtdBindFlags::EAFE),
            pcd: flags.contains(VtdBindFlags::PCD),
            pwt: flags.contains(VtdBindFlags::PWT),
            emte: flags.contains(VtdBindFlags::EMTE),
            cd: flags.contains(VtdBindFlags::CD),
            wpe: flags.contains(VtdBindFlags::WPE),
            pat: req.vtd.pat,
            emt: req.vtd.emt as u8,
            ..PasidEntry::nested(domain.did, req.gpgd, domain.s2_root, domain.s2_levels)
        };
        let targets = &st.targets;
        for (i, &sid) in targets.iter().enumerate() {
            if let Err(source) = iommu.set_pasid_entry(sid, pasid, &entry) {
                for &done in &targets[..i] {
                    let _ = iommu.clear_pasid_entry(done, pasid);
                }
                return Err(VfioError::BindFailed {
                    pasid,
                    device: sid,
                    source,
                });
            }
        }
        ms.record_bind(pasid, self.id);
        Ok(())
    }

    fn unbind_locked(
        &self,
        st: &ContainerState,
        ms: &mut MmState,
        hpasid: u64,
    ) -> Result<(), VfioError> {
        let pasid = self.owned_pasid(ms, "hpasid", hpasid)?;
        if ms.forget_bind(pasid, self.id) {
            for &sid in &st.targets {
                // Clears the entry and flushes the PASID cache, IOTLB and device TLB.
                let _ = self.vfio.iommu.clear_pasid_entry(sid, pasid);
            }
        }
        Ok(())
    }

    fn invalidate_locked(
        &self,
        st: &ContainerState,
        domain: &Domain,
        ms: &MmState,
        req: &CacheInvalidateRequest,
    ) -> Result<(), VfioError> {
        let did = domain.did;
        let caches = req.caches();
        let iommu = &self.vfio.iommu;
        // Every request was validated above and names this IOMMU's domain id and a PASID of
        // its space, so the IOMMU accepts each one; they are issued as they are built.
        let apply = |inv: Invalidation| {
            iommu
                .invalidate(&inv)
                .map_err(|e| VfioError::iommu("invalidate", e))
        };
        match req.granularity() {
            Granularity::Domain => {
                if caches.contains(CacheSet::IOTLB) {
                    apply(Invalidation::PasidIotlbAll { did })?;
                }
                if caches.contains(CacheSet::PASID) {
                    apply(Invalidation::PasidCache(PasidCacheScope::Domain { did }))?;
                }
            }
            Granularity::Pasid { pasid, archid } => {
                let pasid = pasid.ok_or_else(|| {
                    VfioError::invalid(
                        "granu.pasid_info.flags",
                        u64::from(archid.is_some()) << 1,
                        "PASID granularity needs IOMMU_INV_PASID_FLAGS_PASID",
                    )
                })?;
                let pasid = self.owned_pasid(ms, "granu.pasid_info.pasid", pasid)?;
                if caches.contains(CacheSet::IOTLB) {
                    apply(Invalidation::PasidIotlb { did, pasid })?;
                }
                if caches.contains(CacheSet::DEV_IOTLB) {
                    for &source_id in &st.targets {
                        apply(Invalidation::DeviceTlb {
                            source_id,
                            pasid: Some(pasid),
                            pages: None,
                        })?;
                    }
                }
                if caches.contains(CacheSet::PASID) {
                    apply(Invalidation::PasidCache(PasidCacheScope::Pasid {
                        did,
                        pasid,
                    }))?;
                }
            }
            Granularity::Addr {
                pasid,
                archid,
                addr,
                granule_size,
                nb_granules,
                leaf,
            } => {
                let pasid = pasid.ok_or_else(|| {
                    VfioError::invalid(
                        "granu.addr_info.flags",
                        u64::from(archid.is_some()) << 1 | u64::from(leaf) << 2,
                        "ADDR granularity needs IOMMU_INV_ADDR_FLAGS_PASID",
                    )
                })?;
                let pasid = self.owned_pasid(ms, "granu.addr_info.pasid", pasid)?;
                if !matches!(granule_size, 0x1000 | 0x20_0000 | 0x4000_0000) {
                    return Err(VfioError::invalid(
                        "granu.addr_info.granule_size",
                        granule_size,
                        "must be 4 KiB, 2 MiB or 1 GiB",
                    ));
                }
                if nb_granules == 0 {
                    return Err(VfioError::invalid(
                        "granu.addr_info.nb_granules",
                        0,
                        "at least one granule is needed",
                    ));
                }
                if addr % granule_size != 0 {
                    return Err(VfioError::invalid(
                        "granu.addr_info.addr",
                        addr,
                        "must be aligned to granule_size",
                    ));
                }
                let len = granule_size
                    .checked_mul(nb_granules)
                    .filter(|len| addr.checked_add(*len).is_some())
                    .ok_or_else(|| {
                        VfioError::invalid(
                            "granu.addr_info.nb_granules",
                            nb_granules,
                            "addr + granule_size * nb_granules wraps around",
                        )
                    })?;
                let range = PageRange::covering(addr, len);
                let fits = range.am <= iommu.config().mamv;
                if caches.contains(CacheSet::IOTLB) {
                    apply(if fits {
                        Invalidation::PasidIotlbPages {
                            did,
                            pasid,
                            range,
                            ih: leaf,
                        }
                    } else {
                        Invalidation::PasidIotlb { did, pasid }
                    })?;
                }
                if caches.contains(CacheSet::DEV_IOTLB) {
                    for &source_id in &st.targets {
                        apply(Invalidation::DeviceTlb {
                            source_id,
                            pasid: Some(pasid),
                            pages: fits.then_some(range),
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The PASIDs of the process bound through this container, ascending.
    pub fn bound_pasids(&self) -> Vec<Pasid> {
        self.slot
            .lock()
            .ctx
            .as_ref()
            .map(|ms| ms.bound_in(self.id))
            .unwrap_or_default()
    }
}

/// A typed PASID_REQUEST, built in place: `alloc` selects ALLOC or FREE. An inverted range
/// is refused with `vsva-uapi`'s own error; valid ranges skip that call, whose result read
/// back across the crate boundary costs a store-forwarding stall per request.
#[inline]
fn checked_op(alloc: bool, min: u32, max: u32) -> Result<PasidRequestOp, VfioError> {
    if min > max {
        let refused = if alloc {
            PasidRequestOp::alloc(min, max)
        } else {
            PasidRequestOp::free(min, max)
        };
        return Err(match refused {
            Err(e) => e.into(),
            Ok(_) => VfioError::invalid("range.min", u64::from(min), "is greater than range.max"),
        });
    }
    Ok(if alloc {
        PasidRequestOp::Alloc { min, max }
    } else {
        PasidRequestOp::Free { min, max }
    })
}

/// `EINVAL` unless `value` is a multiple of 4 KiB (and non-zero unless `zero_ok`).
fn check_page_multiple(field: &'static str, value: u64, zero_ok: bool) -> Result<(), VfioError> {
    if value & 0xfff != 0 {
        return Err(VfioError::invalid(
            field,
            value,
            "must be a multiple of 4096",
        ));
    }
    if value == 0 && !zero_ok {
        return Err(VfioError::invalid(field, 0, "must not be zero"));
    }
    Ok(())
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
