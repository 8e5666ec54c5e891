//! NESTING_OP in typed form: bind and unbind a guest first-level table to a PASID of the
//! process, and pass the guest's cache invalidations on to the IOMMU, each checked against
//! the process's ownership under its mm lock.

use std::sync::atomic::Ordering;

use vsva_ioasid::{Pasid, PasidState};
use vsva_iommu::{Invalidation, PageRange, PasidCacheScope, PasidEntry};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity, NestingOp,
    NestingOpKind, VtdBindFlags,
};

use super::{Container, ContainerState, Domain};
use crate::cleanup::must_succeed;
use crate::error::VfioError;
use crate::mm::MmState;
use crate::types::IommuType;

impl Container {
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
        if !self.has_mm.load(Ordering::Acquire) {
            return Err(no_context());
        }
        let mut slot = self.slot.lock();
        let Some(ms) = slot.mm.as_mut() else {
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
            .mm
            .as_ref()
            .map(|ms| ms.bound_in(self.id))
            .unwrap_or_default()
    }
}
