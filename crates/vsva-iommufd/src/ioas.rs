//! IOAS objects (Linux `ioas.c`, `io_pagetable.c`): an I/O address space is a stage 2 of the
//! IOMMU; MAP / UNMAP / COPY change it, IOVA_RANGES and ALLOW_IOVAS describe and pin its
//! usable ranges. Every check follows the Linux function named in its comment.

use vsva_iommu::regs::sl_width;
use vsva_iommu::{BackedSpan, Invalidation, PageRange, S2Perms, SourceId, Stage2Id};
use vsva_uapi::iommufd::{
    IommuIoasAlloc, IommuIoasCopy, IommuIoasMap, IommuIoasUnmap, IommuIovaRange,
    IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_FLAGS, IOMMU_IOAS_MAP_READABLE,
    IOMMU_IOAS_MAP_WRITEABLE,
};
use vsva_uapi::Errno;

use crate::areas::{Area, Areas};
use crate::ctx::IommufdCtx;
use crate::error::IommufdError;
use crate::iova::{check_allowed, IOVA_ALIGNMENT};
use crate::objects::{Ioas, Object, Objects};
use crate::reserved::{
    Owner, Reserved, ALLOWED_OVER_WINDOW, DEVICE_RESV_REGIONS, MAPPING_OVER_WINDOW, RESERVED_WINDOW,
};

/// What [`IommufdCtx::issue`] names when the IOMMU refuses an IOAS flush.
const WHAT_FLUSH: &str = "flushing an IOAS range";

/// `EOVERFLOW` for a value iommufd refuses as `>= ULONG_MAX`.
#[cold]
fn overflow(field: &'static str, value: u64) -> IommufdError {
    IommufdError::Refused {
        field,
        value,
        reason: "must be below ULONG_MAX",
        errno: Errno::EOVERFLOW,
    }
}

/// `EOVERFLOW` for an `iova` or `length` of `u64::MAX` (`iommufd_ioas_map`,
/// `iommufd_ioas_unmap`), iova first.
#[inline]
fn check_below_max(iova: u64, length: u64) -> Result<(), IommufdError> {
    if iova == u64::MAX || length == u64::MAX {
        let (field, v) = if iova == u64::MAX {
            ("iova", iova)
        } else {
            ("length", length)
        };
        return Err(overflow(field, v));
    }
    Ok(())
}

/// How a map's caller named the memory it maps, for the refusals that name it: `user_va` of
/// `IOMMU_IOAS_MAP`, `src_iova` of `IOMMU_IOAS_COPY` (whose pieces are host addresses the
/// caller never saw).
#[derive(Clone, Copy)]
struct Source {
    /// The field.
    field: &'static str,
    /// Its value: where the first piece starts.
    at: u64,
}

/// The stage-2 permissions of `IOMMU_IOAS_MAP_*` flags.
fn perms(flags: u32) -> S2Perms {
    S2Perms {
        read: flags & IOMMU_IOAS_MAP_READABLE != 0,
        write: flags & IOMMU_IOAS_MAP_WRITEABLE != 0,
        execute: false,
    }
}

/// The IOTLB request dropping `range` of domain `did`: page-selective when `fits` (its
/// address mask is within CAP.MAMV), the whole domain otherwise.
#[inline]
fn flush_request(did: u16, range: PageRange, fits: bool) -> Invalidation {
    if fits {
        Invalidation::IotlbDomainPages {
            did,
            range,
            ih: false,
        }
    } else {
        Invalidation::IotlbDomain { did }
    }
}

impl Ioas {
    /// Checks `[iova, iova + len)` for a new mapping (`iopt_check_iova`): alignment
    /// (`EINVAL`), wrap (`EOVERFLOW`), a reserved IOVA (past the stage 2, or an attached
    /// device's interrupt window: `EINVAL`), overlap with a mapping (`EEXIST`).
    #[inline]
    fn check_new(&self, iova: u64, len: u64) -> Result<(), IommufdError> {
        if !iova.is_multiple_of(IOVA_ALIGNMENT) || !len.is_multiple_of(IOVA_ALIGNMENT) {
            return Err(IommufdError::invalid(
                "iova",
                iova,
                "iova and length must be multiples of the 4 KiB IOVA alignment",
            ));
        }
        let last = iova
            .checked_add(len - 1)
            .ok_or_else(|| overflow("iova + length", iova))?;
        if let Some(r) = self.reserved.first_overlap(iova, last) {
            return Err(IommufdError::invalid(
                "iova",
                iova,
                match r.owner {
                    Owner::Stage2 => {
                        "the range reaches past what the stage 2 translates (reserved)"
                    }
                    Owner::Device(_) => RESERVED_WINDOW,
                },
            ));
        }
        if self
            .area_at_or_below(last)
            .is_some_and(|(s, a)| s + (a.len - 1) >= iova)
        {
            return Err(IommufdError::Refused {
                field: "iova",
                value: iova,
                reason: "the range overlaps an existing mapping",
                errno: Errno::EEXIST,
            });
        }
        Ok(())
    }

    /// Reserves the reserved regions of device `dev` ([`DEVICE_RESV_REGIONS`]: its
    /// interrupt window) in this IOAS, owned by the device, as attaching the device without
    /// PASID to the IOAS or an HWPT over it does (`iommufd_device_attach_reserved_iova` →
    /// `iopt_table_enforce_dev_resv_regions` → `iopt_reserve_iova`). `pt_id` is what the
    /// caller attached to, for the refusal.
    ///
    /// # Errors
    ///
    /// A mapping, or an allowed range (`IOMMU_IOAS_ALLOW_IOVAS`), overlapping a region →
    /// `EADDRINUSE`. The device then holds no reservation here (`__iopt_remove_reserved_iova`
    /// on the way out).
    pub(crate) fn reserve_for_device(
        &mut self,
        dev: SourceId,
        pt_id: u32,
    ) -> Result<(), IommufdError> {
        for (start, last) in DEVICE_RESV_REGIONS {
            let reason = if self.areas.overlapping(start, last).next().is_some() {
                Some(MAPPING_OVER_WINDOW)
            } else if self
                .allowed
                .iter()
                .any(|r| r.start <= last && start <= r.last)
            {
                Some(ALLOWED_OVER_WINDOW)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.reserved.remove_owner(Owner::Device(dev));
                return Err(IommufdError::Refused {
                    field: "pt_id",
                    value: pt_id.into(),
                    reason,
                    errno: Errno::EADDRINUSE,
                });
            }
            self.reserved.insert(start, last, Owner::Device(dev));
        }
        Ok(())
    }

    /// Gives back every range device `dev` reserved here (`iopt_remove_reserved_iova`), as
    /// its detach, its replace to another IOAS, or its unbind does.
    pub(crate) fn unreserve_device(&mut self, dev: SourceId) {
        self.reserved.remove_owner(Owner::Device(dev));
    }

    /// The area with the highest start at or below `at`. Areas do not overlap, so it is the
    /// only one that can reach into a range ending at `at` from below: one search answers
    /// an overlap question.
    fn area_at_or_below(&self, at: u64) -> Option<(u64, Area)> {
        self.areas.at_or_below(at)
    }

    /// Areas intersecting `[first, last]`, by IOVA.
    fn overlapping(&self, first: u64, last: u64) -> impl Iterator<Item = (u64, Area)> + '_ {
        self.areas.overlapping(first, last)
    }
}

/// Whether `IOMMU_IOAS_MAP_*` flags ask for write.
#[inline]
fn writeable(flags: u32) -> bool {
    flags & IOMMU_IOAS_MAP_WRITEABLE != 0
}

/// `EINVAL` for `IOMMU_IOAS_MAP` / `_COPY` flags with neither READABLE nor WRITEABLE
/// (`iommufd_ioas_map`, `iommufd_ioas_copy`: checked before the IOAS is looked up).
#[inline]
fn check_prot(flags: u32) -> Result<(), IommufdError> {
    if flags & (IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE) == 0 {
        return Err(IommufdError::invalid(
            "flags",
            flags.into(),
            "READABLE or WRITEABLE is needed",
        ));
    }
    Ok(())
}

impl IommufdCtx {
    /// Pool pages `stage2` holds (0, logged, if the IOMMU does not know it: an IOAS keeps its
    /// stage 2 until it is destroyed, so that is a bug).
    fn stage2_pages(&self, stage2: Stage2Id) -> usize {
        self.vfio.iommu().stage2_pages(stage2).unwrap_or_else(|e| {
            tracing::error!("the stage 2 of an IOAS is unknown to the IOMMU: {e}");
            debug_assert!(false, "the stage 2 of an IOAS is unknown to the IOMMU: {e}");
            0
        })
    }

    /// `IOMMU_IOAS_ALLOC` (`iommufd_ioas_alloc_ioctl`): a new, empty IOAS; its id goes to
    /// `out_ioas_id`.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` for non-zero `flags`; `ENOMEM` when the process already holds its share
    /// of the IOMMU's table pool (its containers' and IOASes' stage-2 pages together); an
    /// IOMMU error when no stage 2 can be made. Nothing is created then.
    pub fn ioas_alloc(&self, cmd: &mut IommuIoasAlloc) -> Result<(), IommufdError> {
        if cmd.flags != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "must be 0",
            ));
        }
        let iommu = self.vfio.iommu();
        let levels = self.vfio.stage2_levels();
        self.share.check()?;
        let stage2 = iommu
            .create_stage2(levels)
            .map_err(|e| IommufdError::iommu("create an IOAS's stage 2", e))?;
        let width = sl_width(levels).min(iommu.config().mgaw);
        let charged = self.stage2_pages(stage2);
        self.share.charge(charged);
        cmd.out_ioas_id = self.lock().insert(Object::Ioas(Ioas {
            stage2,
            areas: Areas::default(),
            reserved: Reserved::new(width),
            domains: Vec::new(),
            allowed: Vec::new(),
            charged,
            backed: BackedSpan::default(),
        }));
        Ok(())
    }

    /// `IOMMU_IOAS_MAP` (`iommufd_ioas_map`, `iopt_map_pages`): maps `length` bytes of host
    /// memory at `user_va` (in vsva a host-physical address of the IOMMU's memory, as
    /// VFIO's MAP_DMA `vaddr`) at `iova` (with `FIXED_IOVA`), or at a free IOVA written back
    /// to `iova`.
    ///
    /// # Errors
    ///
    /// In Linux's order: unknown flags or `__reserved` → `EOPNOTSUPP`; `iova` or `length` ≥
    /// `u64::MAX` → `EOVERFLOW`; neither READABLE nor WRITEABLE → `EINVAL`; unknown IOAS →
    /// `ENOENT`; `user_va + length` wraps → `EOVERFLOW`; zero or unaligned length →
    /// `EINVAL`; with `FIXED_IOVA` an unaligned IOVA → `EINVAL`, `iova + length` wraps →
    /// `EOVERFLOW`, a reserved IOVA → `EINVAL`, overlap → `EEXIST`; without it a length ≥
    /// 2^63 → `EOVERFLOW`, no free IOVA → `ENOSPC`; an unaligned `user_va` → `EINVAL`;
    /// memory not backed → `EFAULT`; `ENOMEM` when the process holds its share of
    /// the IOMMU's table pool, or the tables this map needs would take it past the share.
    /// Nothing is mapped then; table pages a refused map created stay in the stage 2, and
    /// charged to the process, until the IOAS is destroyed (as for a VFIO container).
    #[inline]
    pub fn ioas_map(&self, cmd: &mut IommuIoasMap) -> Result<(), IommufdError> {
        if cmd.flags & !IOMMU_IOAS_MAP_FLAGS != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "unknown IOMMU_IOAS_MAP flag",
            ));
        }
        if cmd.reserved != 0 {
            return Err(IommufdError::unsupported(
                "__reserved",
                cmd.reserved.into(),
                "must be 0",
            ));
        }
        check_below_max(cmd.iova, cmd.length)?;
        check_prot(cmd.flags)?;
        let mut objs = self.lock();
        let iova = self.map_locked(
            &mut objs,
            cmd.ioas_id,
            cmd.flags,
            cmd.iova,
            &[(cmd.user_va, cmd.length, writeable(cmd.flags))],
            Source {
                field: "user_va",
                at: cmd.user_va,
            },
        )?;
        cmd.iova = iova;
        Ok(())
    }

    /// Maps `pieces` (host address, length, whether the pages may be mapped for write:
    /// Linux `iopt_pages::writable`) contiguously in IOAS `id` at `iova` (with `FIXED_IOVA`
    /// in `flags`) or at a free IOVA; returns the IOVA. All or nothing. The caller checked
    /// `flags`; `src` is how it named the memory, for the refusals about it.
    ///
    /// The checks run in the order of `iopt_map_user_pages`: the pieces
    /// (`iopt_alloc_user_pages`: `user_va + length` wraps → `EOVERFLOW`, zero length →
    /// `EINVAL`), the length (`iopt_alloc_area_pages`: `EINVAL`), the IOVA
    /// (`iopt_check_iova` / `iopt_alloc_iova`), each area (`iopt_insert_area`: write to
    /// read-only pages → `EPERM`, an unaligned `user_va` → `EINVAL`), then the pinning
    /// (`iopt_area_fill_domains`: memory not backed → `EFAULT`).
    // Inlined: a map has one piece, and the loops over the pieces then fold away.
    #[inline]
    fn map_locked(
        &self,
        objs: &mut Objects,
        id: u32,
        flags: u32,
        iova: u64,
        pieces: &[(u64, u64, bool)],
        src: Source,
    ) -> Result<u64, IommufdError> {
        let ioas = objs.ioas_mut(id, Self::WRONG_KIND)?;
        for &(hpa, plen, _) in pieces {
            if hpa.checked_add(plen).is_none() {
                return Err(overflow("user_va + length", hpa));
            }
            if plen == 0 || plen > u64::MAX - IOVA_ALIGNMENT {
                return Err(IommufdError::invalid(
                    "length",
                    plen,
                    "must not be 0 (nor within a page of ULONG_MAX)",
                ));
            }
        }
        let len: u64 = pieces.iter().map(|p| p.1).sum();
        if !len.is_multiple_of(IOVA_ALIGNMENT) {
            return Err(IommufdError::invalid(
                "length",
                len,
                "must be a multiple of the 4 KiB IOVA alignment",
            ));
        }
        let iova = if flags & IOMMU_IOAS_MAP_FIXED_IOVA != 0 {
            ioas.check_new(iova, len)?;
            iova
        } else {
            ioas.alloc_iova(pieces.first().map_or(0, |p| p.0), len, src.field, src.at)?
        };
        let iommu = self.vfio.iommu();
        // The caller's name for the piece at byte `off` of the range.
        let named = |off: u64| src.at.wrapping_add(off);
        let mut off = 0;
        for &(hpa, plen, writable) in pieces {
            if writeable(flags) && !writable {
                return Err(IommufdError::Refused {
                    field: "flags",
                    value: flags.into(),
                    reason: "WRITEABLE, but the source pages were mapped read-only",
                    errno: Errno::EPERM,
                });
            }
            if !hpa.is_multiple_of(IOVA_ALIGNMENT) {
                return Err(IommufdError::invalid(
                    src.field,
                    named(off),
                    "must be 4 KiB aligned (the IOAS's IOVA alignment)",
                ));
            }
            off += plen;
        }
        let mut off = 0;
        for &(hpa, plen, _) in pieces {
            if !iommu.memory().is_backed_cached(hpa, plen, &mut ioas.backed) {
                return Err(IommufdError::Refused {
                    field: src.field,
                    value: named(off),
                    reason: "the memory is not backed (it cannot be pinned)",
                    errno: Errno::EFAULT,
                });
            }
            off += plen;
        }
        // The process's table-pool share, as a VFIO container checks it
        // (`Container::map_dma`): refused when already held, and a map that takes the
        // process past it is undone.
        self.share.check()?;
        // `charged` is every page of the stage 2 (kept so at each change).
        debug_assert_eq!(ioas.charged, self.stage2_pages(ioas.stage2));
        let p = perms(flags);
        let mut at = iova;
        let mut mapped = Ok(());
        let mut grown = 0;
        for (i, &(hpa, plen, _)) in pieces.iter().enumerate() {
            if let Err(e) = iommu.stage2_map_counting(ioas.stage2, at, hpa, plen, p, &mut grown) {
                mapped = Err((i, IommufdError::iommu("map into the IOAS's stage 2", e)));
                break;
            }
            at += plen;
        }
        // Table pages a map creates stay in the stage 2 (even when it is undone) until the
        // IOAS goes: they stay charged as long. A map into existing tables (the usual case)
        // adds none, and the share was checked above.
        if grown > 0 {
            ioas.charged += grown;
            let held = self.share.charge(grown);
            if mapped.is_ok() && held > self.share.limit() {
                mapped = Err((pieces.len(), self.share.exceeded(held).into()));
            }
        }
        if let Err((done, e)) = mapped {
            // Undo the pieces mapped; nothing was cached for them.
            let mut undo = iova;
            for &(_, l, _) in &pieces[..done] {
                if let Err(e) = iommu.stage2_unmap(ioas.stage2, undo, l) {
                    tracing::error!("undoing a partial IOAS map: {e}");
                    debug_assert!(false, "undoing a partial IOAS map: {e}");
                }
                undo += l;
            }
            return Err(e);
        }
        let mut at = iova;
        for &(hpa, plen, writable) in pieces {
            ioas.areas.insert(
                at,
                Area {
                    len: plen,
                    hpa,
                    writable,
                },
            );
            at += plen;
        }
        Ok(iova)
    }

    /// `IOMMU_IOAS_UNMAP` (`iommufd_ioas_unmap`, `iopt_unmap_iova_range`): unmaps every
    /// mapping inside `[iova, iova + length)` (`iova` 0 with `length` `u64::MAX`: all of
    /// them), flushes the IOTLB of every domain over the IOAS, and writes the bytes
    /// unmapped to `length`.
    ///
    /// # Errors
    ///
    /// Unknown IOAS → `ENOENT`; `iova` or `length` ≥ `u64::MAX` → `EOVERFLOW`; zero length →
    /// `EINVAL`; a mapping only partly inside the range, or nothing mapped there → `ENOENT`;
    /// `length` is not written back then. As `iopt_unmap_iova_range` takes the areas by
    /// rising IOVA, a mapping sticking out at the end of the range fails the call after the
    /// mappings before it were unmapped; in every other refusal nothing is unmapped.
    #[inline]
    pub fn ioas_unmap(&self, cmd: &mut IommuIoasUnmap) -> Result<(), IommufdError> {
        let mut objs = self.lock();
        let ats = objs.has_ats_devices();
        let ioas = objs.ioas_mut(cmd.ioas_id, Self::WRONG_KIND)?;
        // The usual case for the flush, found while the IOAS is at hand: one domain over it
        // and no device TLB to reach.
        let one_domain = match (ioas.domains.as_slice(), ats) {
            ([did], false) => Some(*did),
            _ => None,
        };
        let (first, last) = if cmd.iova == 0 && cmd.length == u64::MAX {
            (0, u64::MAX)
        } else {
            check_below_max(cmd.iova, cmd.length)?;
            if cmd.length == 0 {
                return Err(IommufdError::invalid("length", 0, "must not be 0"));
            }
            let last = cmd
                .iova
                .checked_add(cmd.length - 1)
                .ok_or_else(|| overflow("iova + length", cmd.iova))?;
            (cmd.iova, last)
        };
        let all = first == 0 && last == u64::MAX;
        // The usual unmap, of exactly what one map made: an area starting at `first` and
        // ending at `last` is the only one in the range and nothing sticks out of it, so
        // one search finds and takes it.
        if let Some(area) = (!all).then(|| ioas.areas.take_exact(first, last)).flatten() {
            let total = self.unmap_area(ioas.stage2, first, area.len);
            self.flush_ioas(&mut objs, cmd.ioas_id, one_domain, first, area.len);
            cmd.length = total;
            return Ok(());
        }
        // No mapping may stick out of the range (`iopt_unmap_iova_range`): areas do not
        // overlap, so only the last one starting before `first` can stick out at the
        // start, and only the last one starting at or below `last` at the end.
        let split = |reason| IommufdError::Refused {
            field: "iova",
            value: cmd.iova,
            reason,
            errno: Errno::ENOENT,
        };
        if let Some((s, a)) = first
            .checked_sub(1)
            .and_then(|before| ioas.area_at_or_below(before))
        {
            if s + (a.len - 1) >= first {
                return Err(split("the range would split a mapping at its start"));
            }
        }
        let back = ioas.area_at_or_below(last).filter(|&(s, _)| s >= first);
        if let Some((s, a)) = back {
            if s + (a.len - 1) > last {
                // Linux takes the areas by rising IOVA and stops at this one: those before
                // it are unmapped, and the call fails.
                if s > first {
                    let (total, lo, hi) = self.unmap_areas(ioas, first, s - 1);
                    if total > 0 {
                        self.flush_ioas(&mut objs, cmd.ioas_id, one_domain, lo, hi - lo);
                    }
                }
                return Err(split("the range would split a mapping at its end"));
            }
        }
        let Some((back_start, _)) = back else {
            if all {
                cmd.length = 0;
                return Ok(());
            }
            return Err(IommufdError::Refused {
                field: "iova",
                value: cmd.iova,
                reason: "nothing is mapped in the range",
                errno: Errno::ENOENT,
            });
        };
        let (total, lo, hi) = self.unmap_areas(ioas, first, back_start);
        self.flush_ioas(&mut objs, cmd.ioas_id, one_domain, lo, hi - lo);
        cmd.length = total;
        Ok(())
    }

    /// Unmaps the areas of `ioas` starting in `[first, back]` (whole areas: the caller checked
    /// none sticks out; `back` is the start of the last one); returns the bytes unmapped and
    /// the span `[lo, hi)` the areas covered, which the caller flushes.
    fn unmap_areas(&self, ioas: &mut Ioas, first: u64, back: u64) -> (u64, u64, u64) {
        let (mut total, mut lo, mut hi) = (0, u64::MAX, 0);
        for (s, a) in ioas.areas.take_starting_in(first, back) {
            total += self.unmap_area(ioas.stage2, s, a.len);
            lo = lo.min(s);
            hi = hi.max(s + a.len);
        }
        (total, lo, hi)
    }

    /// Unmaps one area taken out of an IOAS from its stage 2; returns the bytes unmapped
    /// (an IOMMU refusal would be a bug: the area was mapped through this IOAS).
    #[inline]
    fn unmap_area(&self, stage2: Stage2Id, iova: u64, len: u64) -> u64 {
        self.vfio
            .iommu()
            .stage2_unmap(stage2, iova, len)
            .unwrap_or_else(|e| {
                tracing::error!("unmapping an IOAS area: {e}");
                debug_assert!(false, "unmapping an IOAS area: {e}");
                0
            })
    }

    /// Drops the cached translations of `[iova, iova + len)` of IOAS `id` in every domain
    /// over it (its paging HWPTs and their nested children, [`Ioas::domains`]) and every
    /// device TLB attached to them, as unmapping a stage 2 needs: given to the IOMMU as one
    /// submission. `one_domain` is the IOAS's only domain when it has one and no bound
    /// device caches translations (the caller read it from the IOAS): then the one request
    /// is built here, in the caller's line, without a second lookup; the general case is
    /// [`Self::flush_ioas_all`], out of line.
    #[inline]
    pub(crate) fn flush_ioas(
        &self,
        objs: &mut Objects,
        id: u32,
        one_domain: Option<u16>,
        iova: u64,
        len: u64,
    ) {
        match one_domain {
            Some(did) => {
                let range = PageRange::covering(iova, len);
                let inv = flush_request(did, range, range.am <= self.mamv);
                self.issue(std::slice::from_ref(&inv), WHAT_FLUSH);
            }
            None => self.flush_ioas_all(objs, id, iova, len),
        }
    }

    /// [`Self::flush_ioas`] for any number of domains, and device TLBs.
    #[inline(never)]
    fn flush_ioas_all(&self, objs: &mut Objects, id: u32, iova: u64, len: u64) {
        let range = PageRange::covering(iova, len);
        let fits = range.am <= self.mamv;
        let request = |did| flush_request(did, range, fits);
        let mut pending = objs.take_pending();
        let table: &Objects = objs;
        let Ok(ioas) = table.ioas(id, Self::WRONG_KIND) else {
            debug_assert!(false, "flushing IOAS {id}, which is not there");
            objs.put_pending(pending);
            return;
        };
        pending.extend(ioas.domains.iter().map(|&did| request(did)));
        if table.has_ats_devices() {
            // A paging HWPT over this IOAS, or a nested one over such a parent.
            let over = |hwpt: u32| -> bool {
                match table.get(hwpt).map(|e| &e.object) {
                    Ok(Object::HwptPaging(h)) => h.ioas == id,
                    Ok(Object::HwptNested(h)) => matches!(
                        table.get(h.parent).map(|e| &e.object),
                        Ok(Object::HwptPaging(p)) if p.ioas == id
                    ),
                    _ => false,
                }
            };
            for (_, e) in table.iter() {
                let Object::Device(d) = &e.object else {
                    continue;
                };
                if !d.ats {
                    continue;
                }
                for (&pasid, &hwpt) in &d.attached {
                    if over(hwpt) {
                        pending.push(Invalidation::DeviceTlb {
                            source_id: d.sid,
                            pasid,
                            pages: None,
                        });
                    }
                }
            }
        }
        self.issue(&pending, WHAT_FLUSH);
        objs.put_pending(pending);
    }

    /// `IOMMU_IOAS_COPY` (`iommufd_ioas_copy`, `iopt_get_pages`): maps the memory behind
    /// `[src_iova, src_iova + length)` of the source IOAS into the destination, at
    /// `dst_iova` (with `FIXED_IOVA`) or at a free IOVA written back to `dst_iova`.
    ///
    /// # Errors
    ///
    /// In Linux's order: unknown flags → `EOPNOTSUPP`; `length`, `src_iova` or `dst_iova` ≥
    /// `u64::MAX` → `EOVERFLOW`; neither READABLE nor WRITEABLE → `EINVAL`; unknown source →
    /// `ENOENT`; zero length → `EINVAL`; a source range not wholly mapped → `ENOENT`;
    /// unknown destination → `ENOENT`; then as [`IommufdCtx::ioas_map`], and WRITEABLE over
    /// source pages mapped read-only → `EPERM` (`iopt_insert_area`). Nothing is mapped then.
    pub fn ioas_copy(&self, cmd: &mut IommuIoasCopy) -> Result<(), IommufdError> {
        if cmd.flags & !IOMMU_IOAS_MAP_FLAGS != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "unknown IOMMU_IOAS_MAP flag",
            ));
        }
        for (field, v) in [
            ("length", cmd.length),
            ("src_iova", cmd.src_iova),
            ("dst_iova", cmd.dst_iova),
        ] {
            if v == u64::MAX {
                return Err(overflow(field, v));
            }
        }
        check_prot(cmd.flags)?;
        let mut objs = self.lock();
        let src = objs.ioas(cmd.src_ioas_id, Self::WRONG_KIND)?;
        if cmd.length == 0 {
            return Err(IommufdError::invalid("length", 0, "must not be 0"));
        }
        let last = cmd
            .src_iova
            .checked_add(cmd.length - 1)
            .ok_or_else(|| overflow("src_iova + length", cmd.src_iova))?;
        // The areas from `src_iova` on, each starting where the one before ended, until one
        // reaches `last` (`iopt_for_each_contig_area`). Inclusive ends: `last` may be
        // ULONG_MAX, whose successor does not exist.
        let mut pieces = Vec::new();
        let mut at = cmd.src_iova;
        let mut whole = false;
        for (s, a) in src.overlapping(cmd.src_iova, last) {
            if s > at {
                break;
            }
            let piece_last = (s + (a.len - 1)).min(last);
            pieces.push((a.hpa + (at - s), piece_last - at + 1, a.writable));
            if piece_last == last {
                whole = true;
                break;
            }
            at = piece_last + 1;
        }
        if !whole {
            return Err(IommufdError::Refused {
                field: "src_iova",
                value: cmd.src_iova,
                reason: "the source range is not wholly mapped",
                errno: Errno::ENOENT,
            });
        }
        let src = Source {
            field: "src_iova",
            at: cmd.src_iova,
        };
        cmd.dst_iova = self.map_locked(
            &mut objs,
            cmd.dst_ioas_id,
            cmd.flags,
            cmd.dst_iova,
            &pieces,
            src,
        )?;
        Ok(())
    }

    /// `IOMMU_IOAS_IOVA_RANGES` (`iommufd_ioas_iova_ranges`): the usable IOVA ranges of IOAS
    /// `id` — the holes between its reserved ranges: what the stage 2 translates, less the
    /// interrupt window while a device is attached without PASID — and the IOVA alignment.
    /// The allowed ranges do not narrow it, as in Linux.
    ///
    /// # Errors
    ///
    /// Unknown IOAS → `ENOENT`.
    pub fn ioas_iova_ranges(&self, id: u32) -> Result<(Vec<IommuIovaRange>, u64), IommufdError> {
        let objs = self.lock();
        let ioas = objs.ioas(id, Self::WRONG_KIND)?;
        let ranges = ioas
            .reserved
            .holes()
            .into_iter()
            .map(|(start, last)| IommuIovaRange { start, last })
            .collect();
        Ok((ranges, IOVA_ALIGNMENT))
    }

    /// `IOMMU_IOAS_ALLOW_IOVAS` (`iommufd_ioas_allow_iovas`, `iommufd_ioas_load_iovas`,
    /// `iopt_set_allow_iova`): replaces the IOAS's allowed ranges (where it picks IOVAs
    /// itself) with `ranges`.
    ///
    /// # Errors
    ///
    /// Unknown IOAS → `ENOENT`; a range with `start >= last`, or overlapping an earlier one
    /// → `EINVAL`; a range over a reserved one (past the stage 2, or the interrupt window of
    /// a device attached without PASID) → `EADDRINUSE`, naming the first such range by
    /// start, the order `iopt_set_allow_iova` walks them. Nothing changes then.
    pub fn ioas_allow_iovas(&self, id: u32, ranges: &[IommuIovaRange]) -> Result<(), IommufdError> {
        let mut objs = self.lock();
        let ioas = objs.ioas_mut(id, Self::WRONG_KIND)?;
        check_allowed(ranges)?;
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        for r in &sorted {
            let Some(res) = ioas.reserved.first_overlap(r.start, r.last) else {
                continue;
            };
            let (field, value, reason) = match res.owner {
                Owner::Stage2 => (
                    "allowed_iovas[].last",
                    r.last,
                    "the range reaches into the reserved space",
                ),
                Owner::Device(_) => ("allowed_iovas[].start", r.start, RESERVED_WINDOW),
            };
            return Err(IommufdError::Refused {
                field,
                value,
                reason,
                errno: Errno::EADDRINUSE,
            });
        }
        ioas.allowed = sorted;
        Ok(())
    }
}
