//! NESTING_OP in typed form: bind and unbind a guest first-level table to a PASID of the
//! process, and pass the guest's cache invalidations on to the IOMMU, each checked against
//! the process's ownership under its mm lock, in the order of the series' kernel (v5 10/15,
//! 11/15 over the Linux 5.10 IOMMU core and VT-d driver).

use std::sync::atomic::Ordering;

use vsva_ioasid::{Pasid, PasidState};
use vsva_iommu::{Invalidation, PageRange, PasidCacheScope, PasidEntry};
use vsva_uapi::{
    decode_cache_invalidate, read_bind_data, AddrWidth, BindData, BindRequest,
    CacheInvalidateRequest, CacheSet, Granularity, NestingOpKind, VtdBindFlags,
};

use super::{Container, ContainerState, Domain};
use crate::cleanup::{fenced_is_done, must_succeed};
use crate::error::VfioError;
use crate::mm::MmState;
use crate::refusal::RefusedOp;
use crate::types::IommuType;

/// `PASID_MAX` of the VT-d driver: a host PASID at or above it is `EINVAL` whatever the
/// PASID space's width (`intel_svm_bind_gpasid`).
const VTD_PASID_MAX: u64 = 1 << 20;

/// The VT-d bind flags the driver refuses: it has no memory-type support
/// (`IOMMU_SVA_VTD_GPASID_MTS_MASK`, Linux 5.10 `intel/pasid.c`
/// `intel_pasid_setup_bind_data`).
const VTD_MTS_FLAGS: VtdBindFlags = VtdBindFlags::PCD
    .union(VtdBindFlags::PWT)
    .union(VtdBindFlags::EMTE)
    .union(VtdBindFlags::CD);

/// A NESTING_OP request: the caller's bytes for an op (decoded under the lock, as the IOMMU
/// core reads them per device), or a request the typed API already holds.
pub(crate) enum NestingPayload<'a> {
    /// The op the header selects and the bytes after the header.
    Bytes(NestingOpKind, &'a [u8]),
    /// A typed bind.
    Bind(BindRequest),
    /// A typed unbind of this host PASID.
    Unbind(u64),
    /// A typed invalidation.
    Invalidate(CacheInvalidateRequest),
}

impl NestingPayload<'_> {
    fn kind(&self) -> NestingOpKind {
        match self {
            NestingPayload::Bytes(kind, _) => *kind,
            NestingPayload::Bind(_) => NestingOpKind::BindPgtbl,
            NestingPayload::Unbind(_) => NestingOpKind::UnbindPgtbl,
            NestingPayload::Invalidate(_) => NestingOpKind::CacheInvld,
        }
    }
}

/// Where a bind's request comes from, so the VT-d driver's late checks (the address width)
/// run on bytes only after the PASID's. Borrowed: the request is not copied again.
#[derive(Clone, Copy)]
enum BindSource<'a> {
    /// Bytes that passed the core's and the driver's early checks.
    Read(&'a BindData),
    /// A typed request.
    Typed(&'a BindRequest),
}

impl BindSource<'_> {
    fn hpasid(self) -> u64 {
        match self {
            BindSource::Read(data) => data.hpasid(),
            BindSource::Typed(req) => req.hpasid,
        }
    }

    fn request(self) -> Result<BindRequest, VfioError> {
        match self {
            BindSource::Read(data) => Ok(data.to_request()?),
            BindSource::Typed(req) => Ok(*req),
        }
    }
}

impl Container {
    /// Binds a guest first-level page table to a PASID of the process (NESTING_OP
    /// BIND_PGTBL): on every device of the container, the PASID's entry becomes nested, with
    /// the guest's table at `gpgd` (bits 63:12; 4- or 5-level per `addr_width`) over the
    /// container's stage 2, tagged with the container's domain id, with SRE / EAFE / WPE as
    /// asked. If any device refuses, the bind is undone on all of them.
    ///
    /// # Errors
    ///
    /// In the VT-d driver's order: `EINVAL` before the type is set; `EOPNOTSUPP` for a
    /// container that is not nesting or has no PASID support; `EINVAL` for `hpasid` 0 or
    /// ≥ 2^20; `EACCES` / `ENOENT` for a PASID the process does not own; `EBUSY` if it is
    /// already bound here; `EINVAL` for a 57-bit width the IOMMU does not walk, for the
    /// memory-type flags PCD / PWT / EMTE / CD, or what the IOMMU refuses (a PASID beyond a
    /// device's PASID table, SRE / EAFE it lacks); `ENOMEM` when the IOMMU's table pool is
    /// exhausted. Nothing is bound then.
    pub fn bind(&self, req: &BindRequest) -> Result<(), VfioError> {
        self.nesting_op(NestingPayload::Bind(*req))
    }

    /// Unbinds a PASID of the process from this container's devices (NESTING_OP
    /// UNBIND_PGTBL). As in the series, the result does not depend on the PASID: a PASID
    /// outside the space, or one the process does not own, changes nothing, is logged and
    /// counted in [`crate::Vfio::refusals`], and still returns `Ok`.
    ///
    /// # Errors
    ///
    /// Only the container's: `EINVAL` before the type is set; `EOPNOTSUPP` as for
    /// [`Container::bind`].
    pub fn unbind(&self, hpasid: u64) -> Result<(), VfioError> {
        self.nesting_op(NestingPayload::Unbind(hpasid))
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
    /// As in the series ("always successful"), a request the IOMMU would refuse — PASID or
    /// ADDR granularity without a PASID, a PASID outside the space or not the process's, a
    /// granule size other than 4 KiB / 2 MiB / 1 GiB, no granules, an unaligned address, a
    /// wrapping range — invalidates nothing, is logged and counted in
    /// [`crate::Vfio::refusals`], and still returns `Ok`.
    ///
    /// # Errors
    ///
    /// Only the container's: `EINVAL` before the type is set; `EOPNOTSUPP` as for
    /// [`Container::bind`].
    pub fn invalidate(&self, req: &CacheInvalidateRequest) -> Result<(), VfioError> {
        self.nesting_op(NestingPayload::Invalidate(*req))
    }

    /// Runs a NESTING_OP: the container checks (type, features) come before the payload is
    /// read, as in the kernel; then the op runs under the process's lock. A bind's error is
    /// returned; an unbind's or invalidation's is recorded as a refusal and `Ok` returned.
    pub(crate) fn nesting_op(&self, payload: NestingPayload<'_>) -> Result<(), VfioError> {
        let kind = payload.kind();
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
                reason: "it is not a nesting container (IOMMU type 6)",
            });
        }
        let no_context = || VfioError::NestingUnsupported {
            container: self.id,
            op: op_name,
            reason: "its nesting info lacks the feature (PASID support is disabled)",
        };
        if !self.features().contains(kind.required_feature())
            || !self.has_mm.load(Ordering::Acquire)
        {
            return Err(no_context());
        }
        let mut slot = self.slot.lock();
        let Some(ms) = slot.mm.as_mut() else {
            return Err(no_context());
        };
        let (op, result) = match payload {
            NestingPayload::Bytes(NestingOpKind::BindPgtbl, bytes) => {
                let data = read_bind_data(bytes)?;
                data.check_vtd()?;
                return self.bind_locked(&st, domain, ms, BindSource::Read(&data));
            }
            NestingPayload::Bind(req) => {
                return self.bind_locked(&st, domain, ms, BindSource::Typed(&req))
            }
            NestingPayload::Bytes(NestingOpKind::UnbindPgtbl, bytes) => (
                RefusedOp::Unbind,
                read_bind_data(bytes)
                    .map_err(VfioError::from)
                    .and_then(|data| self.unbind_locked(&st, ms, data.hpasid())),
            ),
            NestingPayload::Unbind(hpasid) => {
                (RefusedOp::Unbind, self.unbind_locked(&st, ms, hpasid))
            }
            NestingPayload::Bytes(NestingOpKind::CacheInvld, bytes) => (
                RefusedOp::Invalidate,
                decode_cache_invalidate(bytes)
                    .map_err(VfioError::from)
                    .and_then(|req| self.invalidate_locked(&st, domain, ms, &req)),
            ),
            NestingPayload::Invalidate(req) => (
                RefusedOp::Invalidate,
                self.invalidate_locked(&st, domain, ms, &req),
            ),
        };
        if let Err(err) = result {
            self.vfio.refusals.record(op, self.id, &err);
        }
        Ok(())
    }

    /// The PASID a caller named, if the process owns it: `EINVAL` for 0 or ≥ 2^20 (the VT-d
    /// driver's range), `EACCES` if another set owns it, `ENOENT` if nobody does (free, beyond
    /// the space, or still being torn down).
    fn owned_pasid(
        &self,
        ms: &MmState,
        field: &'static str,
        pasid: u64,
    ) -> Result<Pasid, VfioError> {
        if pasid == 0 || pasid >= VTD_PASID_MAX {
            return Err(VfioError::PasidOutOfRange {
                field,
                pasid,
                max: (VTD_PASID_MAX - 1) as Pasid,
            });
        }
        let p = pasid as Pasid;
        if ms.set.owns(p) {
            return Ok(p);
        }
        Err(match self.vfio.space.find(p) {
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

    /// A bind, in the VT-d driver's order (Linux 5.10 `intel_svm_bind_gpasid`, then
    /// `intel_pasid_setup_nested`), after the core's payload checks and the driver's format /
    /// size / vendor-flag checks: the PASID's range, ownership, already bound, the address
    /// width, memory-type flags.
    fn bind_locked(
        &self,
        st: &ContainerState,
        domain: &Domain,
        ms: &mut MmState,
        source: BindSource<'_>,
    ) -> Result<(), VfioError> {
        let pasid = self.owned_pasid(ms, "hpasid", source.hpasid())?;
        if ms.is_bound(pasid, self.id) {
            return Err(VfioError::AlreadyBound {
                pasid,
                container: self.id,
            });
        }
        let req = source.request()?;
        let iommu = &self.vfio.iommu;
        if req.addr_width == AddrWidth::Bits57 && !iommu.config().fl5lp {
            return Err(VfioError::invalid(
                "addr_width",
                57,
                "the IOMMU walks only 4-level first-level tables (no CAP.FL5LP)",
            ));
        }
        let flags = req.vtd.flags;
        if flags.intersects(VTD_MTS_FLAGS) {
            return Err(VfioError::invalid(
                "vendor.vtd.flags",
                flags.bits(),
                "PCD, PWT, EMTE and CD are refused: the VT-d driver has no memory-type support",
            ));
        }
        // The entry keeps bits 63:12 of gpgd (`pasid_set_flptr`); PAT and EMT only matter with
        // EMTE, which is refused above.
        let entry = PasidEntry {
            flpm: u8::from(req.addr_width == AddrWidth::Bits57),
            sre: flags.contains(VtdBindFlags::SRE),
            eafe: flags.contains(VtdBindFlags::EAFE),
            wpe: flags.contains(VtdBindFlags::WPE),
            ..PasidEntry::nested(
                domain.did,
                req.gpgd & !0xfff,
                domain.s2_root,
                domain.s2_levels,
            )
        };
        let targets = &st.targets;
        for (i, &sid) in targets.iter().enumerate() {
            if let Err(source) = iommu.set_pasid_entry(sid, pasid, &entry) {
                for &done in &targets[..i] {
                    must_succeed("undo a partial bind", iommu.clear_pasid_entry(done, pasid));
                }
                return Err(VfioError::BindFailed {
                    pasid,
                    device: sid,
                    source,
                });
            }
        }
        ms.record_bind(pasid, self.id);
        for &sid in targets {
            self.vfio.iopf.record_owner(sid, pasid, self.process);
        }
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
                must_succeed(
                    "unbind a PASID",
                    self.vfio.iommu.clear_pasid_entry(sid, pasid),
                );
                // Pending page requests of the PASID are answered FAILURE.
                self.vfio.iopf.forget_pasid(Some(sid), pasid);
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
        // Every request names this IOMMU's domain id and a PASID of its space, so the IOMMU
        // accepts each one. The IOTLB and PASID-cache ones are issued as they are built; the
        // device-TLB ones after them, as one submission, so the devices are told in one call
        // of the sink (and nothing is allocated without them).
        let issue = |inv: Invalidation| {
            iommu
                .invalidate(&inv)
                .map_err(|e| VfioError::iommu("invalidate", e))
        };
        let mut devices: Vec<Invalidation> = Vec::new();
        match req.granularity() {
            Granularity::Domain => {
                if caches.contains(CacheSet::IOTLB) {
                    issue(Invalidation::PasidIotlbAll { did })?;
                }
                if caches.contains(CacheSet::PASID) {
                    issue(Invalidation::PasidCache(PasidCacheScope::Domain { did }))?;
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
                    issue(Invalidation::PasidIotlb { did, pasid })?;
                }
                if caches.contains(CacheSet::DEV_IOTLB) {
                    for &source_id in &st.targets {
                        devices.push(Invalidation::DeviceTlb {
                            source_id,
                            pasid: Some(pasid),
                            pages: None,
                        });
                    }
                }
                if caches.contains(CacheSet::PASID) {
                    issue(Invalidation::PasidCache(PasidCacheScope::Pasid {
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
                    issue(if fits {
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
                        devices.push(Invalidation::DeviceTlb {
                            source_id,
                            pasid: Some(pasid),
                            pages: fits.then_some(range),
                        });
                    }
                }
            }
        }
        if devices.is_empty() {
            return Ok(());
        }
        fenced_is_done(
            "pass a cache invalidation",
            iommu.invalidate_batch(&devices),
        )
        .map_err(|e| VfioError::iommu("invalidate", e))
    }

    /// The PASIDs of the process bound through this container, ascending.
    pub fn bound_pasids(&self) -> Vec<Pasid> {
        self.slot
            .lock()
            .mm
            .as_ref()
            .map(|ms| ms.bound_in(self.id))
            .unwrap_or_default()
    }
}
