//! The slow path of translation: first-level, second-level and nested walks with the
//! paging-structure caches.

use vm_memory::GuestMemoryMmap;

use super::Iommu;
use crate::cache::{iotlb_value, psc_key, psc_start, psc_value, unpack, DomainGens, PasidGens};
use crate::fault::{overlaps_interrupt_range, Access, FaultReason, Stage};
use crate::paging::{
    self, check_fl_access, fl_entry_is_dirty, needs_ad_update, set_accessed_dirty,
    sl_entry_is_dirty, walk_first_level_into, walk_second_level_into, AdUpdate, FlControls,
    FlParams, Rights, SlParams, TableTranslator, Walk, WalkFault, WalkStart,
};
use crate::pasid_entry::{CachedEntry, Pgtt};
use crate::regs::sl_width;
use crate::stats::{Counter, LocalStats};

impl Iommu {
    pub(super) fn fl_params(&self, e: &CachedEntry) -> FlParams {
        FlParams {
            levels: e.fl_levels(),
            haw: self.cfg.haw(),
            fl1gp: self.cfg.fl1gp,
        }
    }

    pub(super) fn sl_params(&self, e: &CachedEntry) -> SlParams {
        SlParams {
            levels: e.sl_levels(),
            haw: self.cfg.haw(),
            sl_2m: self.cfg.sl_2m,
            sl_1g: self.cfg.sl_1g,
            slee: e.slee(),
            tm: self.cfg.device_tlb,
        }
    }

    /// Second-level translation of a guest-physical address with the SL paging-structure
    /// cache; sets SL accessed/dirty bits when SSADE.
    pub(super) fn sl_translate(
        &self,
        env: WalkEnv<'_>,
        e: &CachedEntry,
        dom: &DomainGens,
        s0: u64,
        gpa: u64,
        ad: Option<bool>,
    ) -> Result<SlOut, WalkFault> {
        let (mem, st) = (env.mem, env.st);
        let p = self.sl_params(e);
        let tag = u64::from(e.did());
        let psi = dom.sl_psi.get();
        let psc = self.cfg.paging_structure_caches;
        let start = psc
            .then(|| self.caches.sl_psc.lookup(psc_key(gpa), tag))
            .flatten()
            .and_then(|d| {
                (d[0] == s0).then(|| {
                    st.inc(Counter::SlPscHits);
                    psc_start(d[1])
                })
            });
        let mut w = ZEROED_WALK;
        loop {
            walk_second_level_into(mem, &p, e.ssptptr(), gpa, start, &mut w)?;
            if let (true, Some(write)) = (e.ssade(), ad) {
                if set_accessed_dirty(mem, &w, write, false, Stage::Second)? == AdUpdate::Changed {
                    st.inc(Counter::AdRetries);
                    continue;
                }
            }
            // Only entries whose accessed bits are set may be cached (SSADE).
            if psc && start.is_none() && (!e.ssade() || ad.is_some()) {
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
        env: WalkEnv<'_>,
        e: &CachedEntry,
        dom: &DomainGens,
        s0: u64,
        iova: u64,
        access: Access,
    ) -> Result<(u64, u64), WalkFault> {
        let width = sl_width(e.sl_levels());
        if iova >> width != 0 {
            return Err(WalkFault::second(FaultReason::InputBeyondMax, 0));
        }
        // The whole walk and the request's permissions are checked before any A/D bit is set.
        let probe = self.sl_translate(env, e, dom, s0, iova, None)?;
        sl_allows(probe.rights, access).map_err(|r| WalkFault::second(r, probe.leaf_level))?;
        check_output(
            probe.output,
            probe.page_size,
            Stage::Second,
            probe.leaf_level,
        )?;
        let w = if e.ssade() {
            self.sl_translate(env, e, dom, s0, iova, Some(access.write))?
        } else {
            probe
        };
        let dirty = !e.ssade() || sl_entry_is_dirty(w.leaf);
        let v = iotlb_value(w.output, w.page_size, Rights::ALL, w.rights, dirty);
        Ok((v, iova & !(w.page_size - 1)))
    }

    /// A first-level (or nested) walk. Every check — the walk, the request's first-level
    /// rights, the second-level translation of the output and its permission, the interrupt
    /// range, the write permission on tables whose entries need A/D — happens before any
    /// accessed/dirty bit changes, so a faulting request leaves memory as it was.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn walk_fl(
        &self,
        env: WalkEnv<'_>,
        e: &CachedEntry,
        dom: &DomainGens,
        pg_gens: &PasidGens,
        tag: u64,
        stamp: [u64; 3],
        iova: u64,
        access: Access,
        ctl: FlControls,
    ) -> Result<(u64, u64), WalkFault> {
        let (mem, st) = (env.mem, env.st);
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
                    st.inc(Counter::FlPscHits);
                    psc_start(d[3])
                })
            });
        // Built only for a nested walk (a first-level-only miss would store it for nothing).
        let mut nt = nested.then(|| NestedTables {
            iommu: self,
            env,
            e,
            dom,
            s0: stamp[0],
            width: sl_width(e.sl_levels()),
            gpas: [0; 5],
            n: 0,
        });
        let mut walk = ZEROED_WALK;
        loop {
            match nt.as_mut() {
                Some(nt) => {
                    nt.n = 0;
                    walk_first_level_into(mem, nt, &p, e.flptr(), iova, start, &mut walk)?;
                }
                None => walk_first_level_into(
                    mem,
                    &mut paging::Identity,
                    &p,
                    e.flptr(),
                    iova,
                    start,
                    &mut walk,
                )?,
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
            let probe = match &nt {
                Some(nt) => {
                    if gpa >> nt.width != 0 {
                        return Err(WalkFault::first(
                            FaultReason::FirstLevelAddressBeyondMgaw,
                            level,
                        ));
                    }
                    let probe = self.sl_translate(env, e, dom, stamp[0], gpa, None)?;
                    sl_allows(probe.rights, access)
                        .map_err(|r| WalkFault::second(r, probe.leaf_level))?;
                    Some(probe)
                }
                None => None,
            };
            let (out, size, out_stage) = match probe {
                Some(s) => {
                    let size = w.page_size.min(s.page_size);
                    (s.translate(gpa) & !(size - 1), size, Stage::Second)
                }
                None => (w.output, w.page_size, Stage::First),
            };
            check_output(out, size, out_stage, level)?;
            // Only nested tables can be read-only (first-level-only tables are all writable).
            if nested {
                for (i, u) in w.used().iter().enumerate() {
                    if !u.writable && needs_ad_update(w, i, access.write, e.eafe()) {
                        return Err(WalkFault::first(FaultReason::NestedNoWriteEntry, u.level));
                    }
                }
            }
            // Everything is allowed: now the updates. With SSADE, reading a first-level table
            // sets A in the second-level leaf mapping it, and writing A/D into one of its
            // entries is a write through stage 2 (A and D).
            if let (Some(nt), true) = (&nt, e.ssade()) {
                for (i, &table_gpa) in nt.gpas[..w.used_len].iter().enumerate() {
                    let writes = needs_ad_update(w, i, access.write, e.eafe());
                    self.sl_translate(env, e, dom, stamp[0], table_gpa, Some(writes))?;
                }
            }
            match set_accessed_dirty(mem, w, access.write, e.eafe(), Stage::First)? {
                AdUpdate::Changed => {
                    st.inc(Counter::AdRetries);
                    continue;
                }
                AdUpdate::Done => {}
            }
            let sl = match probe {
                Some(_) if e.ssade() => {
                    Some(self.sl_translate(env, e, dom, stamp[0], gpa, Some(access.write))?)
                }
                other => other,
            };
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
            let (sl_rights, sl_dirty) = match sl {
                Some(s) => (
                    s.rights,
                    !e.ssade() || access.write || sl_entry_is_dirty(s.leaf),
                ),
                None => (Rights::ALL, true),
            };
            let v = iotlb_value(out, size, w.rights, sl_rights, fl_dirty && sl_dirty);
            return Ok((v, iova & !(size - 1)));
        }
    }
}

/// A walk to be filled by `walk_first_level_into` or `walk_second_level_into` (which write
/// every field they report when they succeed; nothing reads it after a failure) whose bytes
/// are all zero, so preparing it on the miss path is a few stores: `Walk::EMPTY`'s
/// `pt: None` is not all zero bytes, and copying that constant cost a call of `memcpy` per
/// walk.
const ZEROED_WALK: Walk = Walk {
    pt: Some(WalkStart {
        level: 0,
        table: 0,
        rights: Rights {
            write: false,
            user_or_read: false,
            exec: false,
        },
    }),
    rights: Rights {
        write: false,
        user_or_read: false,
        exec: false,
    },
    ..Walk::EMPTY
};

/// Checks a request against second-level rights (R, W, and X when SLEE): a write needs W
/// (0x85), a read or execute needs R (0x86), an execute needs X (0x82).
pub(super) fn sl_allows(rights: Rights, access: Access) -> Result<(), FaultReason> {
    if access.write && !rights.write {
        return Err(FaultReason::NoWrite);
    }
    if !access.write && !rights.user_or_read {
        return Err(FaultReason::NoRead);
    }
    if access.execute && !rights.exec {
        return Err(FaultReason::ExecuteDisabled);
    }
    Ok(())
}

/// An output page that overlaps the interrupt range faults with 0x87.
pub(super) fn check_output(base: u64, size: u64, stage: Stage, level: u8) -> Result<(), WalkFault> {
    if overlaps_interrupt_range(base, size) {
        return Err(WalkFault {
            reason: FaultReason::InterruptRange,
            stage,
            level,
        });
    }
    Ok(())
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

/// What every walk of one translation reads and counts through: its memory snapshot and the
/// translating thread's statistics shard.
#[derive(Clone, Copy)]
pub(super) struct WalkEnv<'a> {
    pub(super) mem: &'a GuestMemoryMmap,
    pub(super) st: &'a LocalStats<'a>,
}

/// Nested first-level table access: every table address goes through the second level.
struct NestedTables<'a> {
    iommu: &'a Iommu,
    env: WalkEnv<'a>,
    e: &'a CachedEntry,
    dom: &'a DomainGens,
    s0: u64,
    width: u8,
    /// The guest-physical address of each table the walk read, root first.
    gpas: [u64; 5],
    n: usize,
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
        // Reading only: the second-level A bits are set once the whole request is allowed.
        let w = match self
            .iommu
            .sl_translate(self.env, self.e, self.dom, self.s0, gpa, None)
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
        if let Some(slot) = self.gpas.get_mut(self.n) {
            *slot = gpa;
            self.n += 1;
        }
        Ok((w.translate(gpa), w.rights.write))
    }
}

#[cfg(test)]
mod tests;
