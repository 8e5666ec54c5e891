//! The slow path of translation: first-level, second-level and nested walks with the
//! paging-structure caches.

use vm_memory::GuestMemoryMmap;

use super::Iommu;
use crate::cache::{iotlb_value, psc_key, psc_start, psc_value, unpack, DomainGens, PasidGens};
use crate::fault::{Access, FaultReason, Stage};
use crate::paging::{
    self, check_fl_access, fl_entry_is_dirty, set_accessed_dirty, sl_entry_is_dirty,
    walk_first_level_into, walk_second_level_into, AdUpdate, FlControls, FlParams, Rights,
    SlParams, TableTranslator, Walk, WalkFault,
};
use crate::pasid_entry::{PasidEntry, Pgtt};
use crate::regs::sl_width;
use crate::stats::Counter;

impl Iommu {
    pub(super) fn fl_params(&self, e: &PasidEntry) -> FlParams {
        FlParams {
            levels: e.fl_levels(),
            haw: self.cfg.haw(),
            fl1gp: self.cfg.fl1gp,
        }
    }

    pub(super) fn sl_params(&self, e: &PasidEntry) -> SlParams {
        SlParams {
            levels: e.sl_levels(),
            haw: self.cfg.haw(),
            sl_2m: self.cfg.sl_2m,
            sl_1g: self.cfg.sl_1g,
        }
    }

    /// Second-level translation of a guest-physical address with the SL paging-structure
    /// cache; sets SL accessed/dirty bits when SSADE.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sl_translate(
        &self,
        mem: &GuestMemoryMmap,
        e: &PasidEntry,
        dom: &DomainGens,
        s0: u64,
        gpa: u64,
        ad: Option<bool>,
    ) -> Result<SlOut, WalkFault> {
        let p = self.sl_params(e);
        let tag = u64::from(e.did);
        let psi = dom.sl_psi.get();
        let psc = self.cfg.paging_structure_caches;
        let start = psc
            .then(|| self.caches.sl_psc.lookup(psc_key(gpa), tag))
            .flatten()
            .and_then(|d| {
                (d[0] == s0).then(|| {
                    self.stats.inc(Counter::SlPscHits);
                    psc_start(d[1])
                })
            });
        let mut w = Walk::EMPTY;
        loop {
            walk_second_level_into(mem, &p, e.ssptptr, gpa, start, &mut w)?;
            if let (true, Some(write)) = (e.ssade, ad) {
                if set_accessed_dirty(mem, &w, write, false, Stage::Second)? == AdUpdate::Changed {
                    self.stats.inc(Counter::AdRetries);
                    continue;
                }
            }
            // Only entries whose accessed bits are set may be cached (SSADE).
            if psc && start.is_none() && (!e.ssade || ad.is_some()) {
                if let Some(pt) = w.pt {
                    let v = psc_value(pt.table, pt.rights);
                    self.caches
                        .sl_psc
                        .insert(psc_key(gpa), tag, [s0, v], || dom.sl_psi.get() == psi);
                }
            }
            return Ok(SlOut {
                output: w.output,
                page_size: w.page_size,
                leaf: w.leaf,
                leaf_level: w.leaf_level,
                rights: w.rights,
            });
        }
    }

    pub(super) fn walk_sl_only(
        &self,
        mem: &GuestMemoryMmap,
        e: &PasidEntry,
        dom: &DomainGens,
        s0: u64,
        iova: u64,
        access: Access,
    ) -> Result<(u64, u64), WalkFault> {
        let width = sl_width(e.sl_levels());
        if iova >> width != 0 {
            return Err(WalkFault::second(FaultReason::InputBeyondMax, 0));
        }
        // Permissions are checked by the caller on the value; A/D are set only when allowed.
        let probe = self.sl_translate(mem, e, dom, s0, iova, None)?;
        let allowed = if access.write {
            probe.rights.write
        } else {
            probe.rights.user_or_read
        };
        let w = if allowed && e.ssade {
            self.sl_translate(mem, e, dom, s0, iova, Some(access.write))?
        } else {
            probe
        };
        let dirty = !e.ssade || sl_entry_is_dirty(w.leaf);
        let v = iotlb_value(w.output, w.page_size, Rights::ALL, w.rights, dirty);
        Ok((v, iova & !(w.page_size - 1)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn walk_fl(
        &self,
        mem: &GuestMemoryMmap,
        e: &PasidEntry,
        dom: &DomainGens,
        pg_gens: &PasidGens,
        tag: u64,
        stamp: [u64; 3],
        iova: u64,
        access: Access,
        ctl: FlControls,
    ) -> Result<(u64, u64), WalkFault> {
        let p = self.fl_params(e);
        let nested = e.pgtt == Pgtt::Nested;
        let pg = pg_gens;
        let psi = pg.psi.get();
        // The first-level cache does not depend on the nested counter (high half of stamp 1).
        let psc_stamp = [stamp[0], u64::from(unpack(stamp[1]).0), stamp[2]];
        let psc = self.cfg.paging_structure_caches;
        let start = psc
            .then(|| self.caches.fl_psc.lookup(psc_key(iova), tag))
            .flatten()
            .and_then(|d| {
                (d[0] == psc_stamp[0] && d[1] == psc_stamp[1] && d[2] == psc_stamp[2]).then(|| {
                    self.stats.inc(Counter::FlPscHits);
                    psc_start(d[3])
                })
            });
        let mut nt = NestedTables {
            iommu: self,
            mem,
            e,
            dom,
            s0: stamp[0],
            width: sl_width(e.sl_levels()),
        };
        let mut walk = Walk::EMPTY;
        loop {
            if nested {
                walk_first_level_into(mem, &mut nt, &p, e.flptr, iova, start, &mut walk)?;
            } else {
                walk_first_level_into(
                    mem,
                    &mut paging::Identity,
                    &p,
                    e.flptr,
                    iova,
                    start,
                    &mut walk,
                )?;
            }
            let w = &walk;
            let level = w.leaf_level;
            check_fl_access(
                w.rights,
                access.write,
                access.execute,
                access.privileged,
                ctl,
            )
            .map_err(|r| WalkFault::first(r, level))?;
            // Nested: the output goes through the second level, whose permission is checked
            // before any accessed/dirty bit is set.
            let gpa = w.translate(iova);
            let sl = if nested {
                if gpa >> nt.width != 0 {
                    return Err(WalkFault::first(
                        FaultReason::FirstLevelAddressBeyondMgaw,
                        level,
                    ));
                }
                let probe = self.sl_translate(mem, e, dom, stamp[0], gpa, None)?;
                if access.write && !probe.rights.write {
                    return Err(WalkFault::second(FaultReason::NoWrite, probe.leaf_level));
                }
                if !access.write && !probe.rights.user_or_read {
                    return Err(WalkFault::second(FaultReason::NoRead, probe.leaf_level));
                }
                Some(if e.ssade {
                    self.sl_translate(mem, e, dom, stamp[0], gpa, Some(access.write))?
                } else {
                    probe
                })
            } else {
                None
            };
            match set_accessed_dirty(mem, w, access.write, e.eafe, Stage::First)? {
                AdUpdate::Changed => {
                    self.stats.inc(Counter::AdRetries);
                    continue;
                }
                AdUpdate::Done => {}
            }
            if psc && start.is_none() {
                if let Some(pt) = w.pt {
                    let v = psc_value(pt.table, pt.rights);
                    let k = psc_key(iova);
                    self.caches.fl_psc.insert(
                        k,
                        tag,
                        [psc_stamp[0], psc_stamp[1], psc_stamp[2], v],
                        || pg.psi.get() == psi,
                    );
                }
            }
            let fl_dirty = access.write || fl_entry_is_dirty(w.leaf);
            let (out, size, sl_rights, sl_dirty) = match sl {
                Some(s) => {
                    let size = w.page_size.min(s.page_size);
                    let out = s.translate(gpa) & !(size - 1);
                    let dirty = !e.ssade || access.write || sl_entry_is_dirty(s.leaf);
                    (out, size, s.rights, dirty)
                }
                None => (w.output, w.page_size, Rights::ALL, true),
            };
            let v = iotlb_value(out, size, w.rights, sl_rights, fl_dirty && sl_dirty);
            return Ok((v, iova & !(size - 1)));
        }
    }
}

/// The part of a second-level walk its users need.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlOut {
    output: u64,
    page_size: u64,
    leaf: u64,
    leaf_level: u8,
    rights: Rights,
}

impl SlOut {
    fn translate(&self, gpa: u64) -> u64 {
        self.output | (gpa & (self.page_size - 1))
    }
}

/// Nested first-level table access: every table address goes through the second level.
struct NestedTables<'a> {
    iommu: &'a Iommu,
    mem: &'a GuestMemoryMmap,
    e: &'a PasidEntry,
    dom: &'a DomainGens,
    s0: u64,
    width: u8,
}

impl TableTranslator for NestedTables<'_> {
    fn table(&mut self, gpa: u64, level: u8, is_root: bool) -> Result<(u64, bool), WalkFault> {
        if gpa >> self.width != 0 {
            return Err(WalkFault::first(
                FaultReason::FirstLevelAddressBeyondMgaw,
                level,
            ));
        }
        let no_read = if is_root {
            FaultReason::NestedNoReadRoot
        } else {
            FaultReason::NestedNoReadEntry
        };
        let ad = self.e.ssade.then_some(false);
        let w = match self
            .iommu
            .sl_translate(self.mem, self.e, self.dom, self.s0, gpa, ad)
        {
            Ok(w) => w,
            Err(f) if f.reason == FaultReason::SecondLevelPermission => {
                return Err(WalkFault::second(no_read, f.level))
            }
            Err(f) => return Err(f),
        };
        if !w.rights.user_or_read {
            return Err(WalkFault::second(no_read, w.leaf_level));
        }
        Ok((w.translate(gpa), w.rights.write))
    }
}
