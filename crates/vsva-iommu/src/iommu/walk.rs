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
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn first_level_translation_sets_ad_and_caches() {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 5, 1);
        map(&io, root, 0x40_0000, 0x10_0000, SIZE_4K, RW | US);
        map(&io, root, 0x80_0000, 0x20_0000, SIZE_2M, US | XD);
        let t = io.translate(SID, Some(5), 0x40_0123, Access::READ).unwrap();
        assert_eq!(t.host_addr, 0x10_0123);
        assert_eq!(t.page_size, SIZE_4K);
        assert_eq!(
            t.perms,
            Perms {
                read: true,
                write: true,
                execute: true,
                user: true
            }
        );
        let pte = entry_addr(&io, root, 0x40_0000, 1);
        assert_eq!(
            io.memory().load_u64(pte).unwrap() & (A | D),
            A,
            "read sets A only"
        );
        let before = io.stats();
        io.translate(SID, Some(5), 0x40_0456, Access::READ).unwrap();
        let after = io.stats();
        assert_eq!(after.iotlb_hits, before.iotlb_hits + 1);
        assert_eq!(after.walks, before.walks);
        // A write through the read-filled entry walks again and sets D.
        io.translate(SID, Some(5), 0x40_0000, Access::WRITE)
            .unwrap();
        assert_eq!(io.memory().load_u64(pte).unwrap() & D, D);
        let t = io.translate(SID, Some(5), 0x81_2345, Access::READ).unwrap();
        assert_eq!((t.host_addr, t.page_size), (0x21_2345, SIZE_2M));
        assert!(!t.perms.write && !t.perms.execute);
        assert_eq!(
            reason(io.translate(SID, Some(5), 0x81_0000, Access::WRITE)),
            FaultReason::NoWrite
        );
        assert_eq!(
            reason(io.translate(SID, Some(5), 0x81_0000, Access::EXEC)),
            FaultReason::ExecuteDisabled
        );
        assert_eq!(io.faults().len(), 2);
        assert_eq!(io.faults()[0].level, 2);
    }

    #[test]
    fn supervisor_requests_sre_and_wpe() {
        let io = iommu();
        attach(&io, SID);
        let root = io.table_pool().alloc(io.memory()).unwrap();
        map(&io, root, 0x1000, 0x5000, SIZE_4K, 0); // supervisor, read-only
        let mut e = PasidEntry::first_level(1, root);
        io.set_pasid_entry(SID, 1, &e).unwrap();
        assert_eq!(
            reason(io.translate(SID, Some(1), 0x1000, Access::READ.privileged())),
            FaultReason::SupervisorNotEnabled
        );
        assert_eq!(
            reason(io.translate(SID, Some(1), 0x1000, Access::READ)),
            FaultReason::UserToSupervisor
        );
        io.clear_pasid_entry(SID, 1).unwrap();
        e.sre = true;
        io.set_pasid_entry(SID, 1, &e).unwrap();
        // Without WPE a supervisor write ignores R/W.
        let t = io
            .translate(SID, Some(1), 0x1000, Access::WRITE.privileged())
            .unwrap();
        assert!(t.perms.write && !t.perms.user);
        io.clear_pasid_entry(SID, 1).unwrap();
        e.wpe = true;
        io.set_pasid_entry(SID, 1, &e).unwrap();
        assert_eq!(
            reason(io.translate(SID, Some(1), 0x1000, Access::WRITE.privileged())),
            FaultReason::NoWrite
        );
    }

    #[test]
    fn first_level_fault_reasons() {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 2, 1);
        map(&io, root, 0x1000, 0x5000, SIZE_4K, RW);
        let f = io
            .translate(SID, Some(2), 0x2000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage, f.level),
            (FaultReason::FirstLevelNotPresent, Stage::First, 1)
        );
        assert_eq!(
            reason(io.translate(SID, Some(2), 0x8000_0000_0000, Access::READ)),
            FaultReason::NonCanonical
        );
        let pde = entry_addr(&io, root, 0x1000, 2);
        let v = io.memory().load_u64(pde).unwrap();
        io.memory().store_u64(pde, v | 1 << 47 | 1 << 50).unwrap();
        let f = io
            .translate(SID, Some(2), 0x3000, Access::READ)
            .unwrap_err();
        assert_eq!((f.reason, f.level), (FaultReason::FirstLevelReserved, 2));
        io.memory()
            .store_u64(pde, 0x7000_0000 | paging::P | RW)
            .unwrap();
        let f = io
            .translate(SID, Some(2), 0x3000, Access::READ)
            .unwrap_err();
        assert_eq!((f.reason, f.level), (FaultReason::FirstLevelAccess, 1));
        // Output in the interrupt range.
        io.memory().store_u64(pde, v).unwrap();
        map(&io, root, 0x20_0000, 0xfee0_0000, SIZE_4K, RW | US);
        assert_eq!(
            reason(io.translate(SID, Some(2), 0x20_0000, Access::WRITE)),
            FaultReason::InterruptRange
        );
    }

    #[test]
    fn second_level_only_translation_and_faults() {
        let io = iommu();
        attach(&io, SID);
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, 0x4000_0000, 0x40_0000, 4 * MB, S2Perms::RW)
            .unwrap();
        io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::R)
            .unwrap();
        io.stage2_map(
            s2,
            0x2000,
            0xa000,
            0x1000,
            S2Perms {
                read: false,
                write: true,
                execute: false,
            },
        )
        .unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        io.set_pasid_entry(SID, 0, &PasidEntry::second_level(7, root, levels))
            .unwrap();
        let t = io.translate(SID, None, 0x4012_3456, Access::WRITE).unwrap();
        assert_eq!(
            (t.host_addr, t.page_size),
            (0x52_3456, SIZE_2M),
            "2 MiB page used when aligned"
        );
        // (address, access, reason) for requests the second level refuses.
        let refused = [
            (0x1000, Access::WRITE, FaultReason::NoWrite),
            (0x2000, Access::READ, FaultReason::NoRead),
            (1 << 48, Access::READ, FaultReason::InputBeyondMax),
        ];
        for (addr, access, want) in refused {
            let got = reason(io.translate(SID, None, addr, access));
            assert_eq!(got, want, "{addr:#x} {access}");
        }
        let f = io.translate(SID, None, 0x3000, Access::READ).unwrap_err();
        assert_eq!(
            (f.reason, f.stage, f.level),
            (FaultReason::SecondLevelPermission, Stage::Second, 1)
        );
        // Leaf output beyond HAW and reserved bits, written behind the IOMMU's back.
        let l1 = {
            let m = io.memory();
            let l3 = m.load_u64(root).unwrap() & ADDR_MASK;
            let l2 = m.load_u64(l3).unwrap() & ADDR_MASK;
            m.load_u64(l2).unwrap() & ADDR_MASK
        };
        io.memory().store_u64(l1 + 5 * 8, 1 << 49 | SL_R).unwrap();
        assert_eq!(
            reason(io.translate(SID, None, 0x5000, Access::READ)),
            FaultReason::OutputBeyondMax
        );
        io.memory()
            .store_u64(io.stage2_root(s2).unwrap().0 + 8, 0x7000_0000 | SL_R)
            .unwrap();
        assert_eq!(
            reason(io.translate(SID, None, 1 << 39, Access::READ)),
            FaultReason::SecondLevelAccess
        );
        io.memory()
            .store_u64(root + 16, 0x7000 | SL_R | 1 << 11)
            .unwrap();
        assert_eq!(
            reason(io.translate(SID, None, 2 << 39, Access::READ)),
            FaultReason::SecondLevelReserved
        );
    }

    #[test]
    fn pass_through_is_identity_within_haw() {
        let io = iommu();
        attach(&io, SID);
        io.set_pasid_entry(SID, 9, &PasidEntry::pass_through(3))
            .unwrap();
        let t = io
            .translate(SID, Some(9), 0x1234_5678, Access::WRITE)
            .unwrap();
        assert_eq!(t.host_addr, 0x1234_5678);
        assert_eq!(
            reason(io.translate(SID, Some(9), 1 << 48, Access::READ)),
            FaultReason::InputBeyondMax
        );
    }

    #[test]
    fn nested_translation_composes_both_stages() {
        let io = iommu();
        let (s2, mut g, gpgd) = nested(&io, 3);
        fl_map(&mut g, gpgd, 4, 0x7000_0000, 0x20_0000, SIZE_2M, RW | US).unwrap();
        fl_map(&mut g, gpgd, 4, 0x1000, 0x30_5000, SIZE_4K, RW | US).unwrap();
        let t = io
            .translate(SID, Some(3), 0x7001_2345, Access::WRITE)
            .unwrap();
        assert_eq!(t.host_addr, GUEST_BASE + 0x21_2345);
        assert_eq!(t.page_size, SIZE_2M);
        let t = io.translate(SID, Some(3), 0x1abc, Access::READ).unwrap();
        assert_eq!(
            (t.host_addr, t.page_size),
            (GUEST_BASE + 0x30_5abc, SIZE_4K)
        );
        // The guest's PDE got its accessed bit, written through stage 2.
        let pml4e = g.read(gpgd);
        assert_eq!(pml4e & A, A);
        // Output beyond the stage-2 mapping: second-level permission fault at level 4? No: a
        // not-present stage-2 entry below the mapped 16 MiB.
        fl_map(&mut g, gpgd, 4, 0x2000, 0x200_0000, SIZE_4K, RW | US).unwrap();
        let f = io
            .translate(SID, Some(3), 0x2000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage),
            (FaultReason::SecondLevelPermission, Stage::Second)
        );
        // A guest table outside stage 2.
        let pml4 = gpgd;
        g.write(pml4 + 8 * 3, 0x300_0000 | paging::P | RW | US);
        let f = io
            .translate(SID, Some(3), 3 << 39, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage),
            (FaultReason::NestedNoReadEntry, Stage::Second)
        );
        // A guest table address beyond the stage-2 input width.
        g.write(pml4 + 8 * 4, 1 << 49 | paging::P | RW | US);
        let f = io
            .translate(SID, Some(3), 4 << 39, Access::READ)
            .unwrap_err();
        assert_eq!(
            f.reason,
            FaultReason::FirstLevelReserved,
            "beyond HAW is reserved first"
        );
        g.write(pml4 + 8 * 4, 1 << 47 | paging::P | RW | US);
        let cfg39 = IommuConfig::default();
        assert!(cfg39.haw() == 48);
        // Stage 2 read-only on the table page: A update needs write (0x77).
        io.stage2_unmap(s2, 0, 2 * MB).unwrap();
        io.stage2_map(s2, 0, GUEST_BASE, 2 * MB, S2Perms::R)
            .unwrap();
        io.invalidate(&Invalidation::IotlbDomain { did: 4 })
            .unwrap();
        let pml4e = g.read(gpgd);
        g.write(gpgd, pml4e & !A);
        let f = io
            .translate(SID, Some(3), 0x1000, Access::READ)
            .unwrap_err();
        assert_eq!((f.reason, f.level), (FaultReason::NestedNoWriteEntry, 4));
        // Root table not readable through stage 2: 0x75.
        io.stage2_unmap(s2, 0, 2 * MB).unwrap();
        io.invalidate(&Invalidation::IotlbDomain { did: 4 })
            .unwrap();
        let f = io
            .translate(SID, Some(3), 0x1000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage),
            (FaultReason::NestedNoReadRoot, Stage::Second)
        );
    }

    #[test]
    fn nested_first_level_address_beyond_stage2_width() {
        let io = iommu();
        attach(&io, SID);
        let s2 = io.create_stage2(3).unwrap(); // 39-bit input
        io.stage2_map(s2, 0, GUEST_BASE, 16 * MB, S2Perms::RW)
            .unwrap();
        let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0x1000);
        let gpgd = g.alloc_table().unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        io.set_pasid_entry(SID, 1, &PasidEntry::nested(2, gpgd, root, levels))
            .unwrap();
        g.write(gpgd, 1 << 40 | paging::P | RW | US);
        let f = io
            .translate(SID, Some(1), 0x1000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.level),
            (FaultReason::FirstLevelAddressBeyondMgaw, 3)
        );
    }

    #[test]
    fn second_level_accessed_dirty_with_ssade() {
        let io = iommu();
        attach(&io, SID);
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::RW)
            .unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        let mut e = PasidEntry::second_level(7, root, levels);
        e.ssade = true;
        io.set_pasid_entry(SID, 0, &e).unwrap();
        let leaf = {
            let m = io.memory();
            let l3 = m.load_u64(root).unwrap() & ADDR_MASK;
            let l2 = m.load_u64(l3).unwrap() & ADDR_MASK;
            (m.load_u64(l2).unwrap() & ADDR_MASK) + 8
        };
        io.translate(SID, None, 0x1000, Access::READ).unwrap();
        let v = io.memory().load_u64(leaf).unwrap();
        assert_eq!(v & (paging::SL_A | paging::SL_D), paging::SL_A);
        io.translate(SID, None, 0x1000, Access::WRITE).unwrap();
        let v = io.memory().load_u64(leaf).unwrap();
        assert_eq!(
            v & (paging::SL_A | paging::SL_D),
            paging::SL_A | paging::SL_D
        );
        assert_eq!(
            io.memory().load_u64(root).unwrap() & paging::SL_A,
            paging::SL_A
        );
    }

    #[test]
    fn file_backed_memory_translates() {
        use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap};
        let io = iommu();
        let file = crate::memory::tests::unlinked_temp_file(2 * MB);
        let region = GuestRegionMmap::from_range(
            GuestAddress(1 << 32),
            2 * MB as usize,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )
        .unwrap();
        io.memory().add_region(region).unwrap();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 1, 1);
        map(&io, root, 0x1000, 1 << 32, SIZE_4K, RW | US);
        io.dma_write(SID, Some(1), 0x1010, b"shared").unwrap();
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 6];
        file.read_exact_at(&mut buf, 0x10).unwrap();
        assert_eq!(&buf, b"shared");
    }

    /// The host address of the second-level leaf that maps `gpa` in the stage-2 table `s2`.
    fn sl_leaf(io: &Iommu, s2: Stage2Id, gpa: u64) -> u64 {
        let (root, levels) = io.stage2_root(s2).unwrap();
        let p = paging::SlParams {
            levels,
            haw: 48,
            sl_2m: true,
            sl_1g: true,
            slee: false,
        };
        let snap = io.memory().snapshot();
        let m: &vm_memory::GuestMemoryMmap = &snap;
        let w = paging::walk_second_level(m, &p, root, gpa, None).unwrap();
        w.used().last().unwrap().addr
    }

    /// Every entry of a first-level walk of `va` (identity tables), root first.
    fn fl_entries(io: &Iommu, root: u64, va: u64) -> Vec<u64> {
        (1..=4)
            .rev()
            .map(|l| io.memory().load_u64(entry_addr(io, root, va, l)).unwrap())
            .collect()
    }

    #[test]
    fn execute_requests_need_ere() {
        let io = iommu();
        attach(&io, SID);
        let root = io.table_pool().alloc(io.memory()).unwrap();
        map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
        let mut e = PasidEntry::first_level(1, root);
        io.set_pasid_entry(SID, 1, &e).unwrap();
        // A read fills the caches; an execute request still needs ERE.
        io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
        assert_eq!(
            reason(io.translate(SID, Some(1), 0x1000, Access::EXEC)),
            FaultReason::ExecuteNotEnabled
        );
        io.clear_pasid_entry(SID, 1).unwrap();
        e.ere = true;
        io.set_pasid_entry(SID, 1, &e).unwrap();
        let t = io.translate(SID, Some(1), 0x1000, Access::EXEC).unwrap();
        assert!(t.perms.execute);
    }

    #[test]
    fn second_level_execute_follows_slee() {
        let io = iommu();
        attach(&io, SID);
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::R)
            .unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        let mut e = PasidEntry {
            ere: true,
            ..PasidEntry::second_level(7, root, levels)
        };
        // Without SLEE, X is ignored: a readable page may be executed.
        io.set_pasid_entry(SID, 1, &e).unwrap();
        assert!(io.translate(SID, Some(1), 0x1000, Access::EXEC).is_ok());
        io.clear_pasid_entry(SID, 1).unwrap();
        e.slee = true;
        io.set_pasid_entry(SID, 1, &e).unwrap();
        let f = io
            .translate(SID, Some(1), 0x1000, Access::EXEC)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage),
            (FaultReason::ExecuteDisabled, Stage::Second)
        );
        assert!(io.translate(SID, Some(1), 0x1000, Access::READ).is_ok());
    }

    #[test]
    fn flptr_outside_memory_is_0x73() {
        let io = iommu();
        attach(&io, SID);
        io.set_pasid_entry(SID, 1, &PasidEntry::first_level(1, 1 << 40))
            .unwrap();
        let f = io
            .translate(SID, Some(1), 0x1000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage, f.level),
            (FaultReason::FirstLevelPointerInvalid, Stage::First, 4)
        );
    }

    #[test]
    fn refused_requests_leave_accessed_dirty_alone() {
        let io = iommu();
        attach(&io, SID);
        // First level only: an output in the interrupt range is refused after the walk.
        let root = fl_pasid(&io, SID, 1, 1);
        map(&io, root, 0x1000, 0xfee0_0000, SIZE_4K, RW | US);
        let before = fl_entries(&io, root, 0x1000);
        assert_eq!(
            reason(io.translate(SID, Some(1), 0x1000, Access::WRITE)),
            FaultReason::InterruptRange
        );
        assert_eq!(fl_entries(&io, root, 0x1000), before);
        // Second level only with SSADE: a write to a read-only page.
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, 0x1000, 0x9000, 0x1000, S2Perms::R)
            .unwrap();
        let (sroot, levels) = io.stage2_root(s2).unwrap();
        let e = PasidEntry {
            ssade: true,
            ..PasidEntry::second_level(7, sroot, levels)
        };
        io.set_pasid_entry(SID, 2, &e).unwrap();
        let leaf = sl_leaf(&io, s2, 0x1000);
        let (root_e, leaf_e) = (io.memory().load_u64(sroot), io.memory().load_u64(leaf));
        assert_eq!(
            reason(io.translate(SID, Some(2), 0x1000, Access::WRITE)),
            FaultReason::NoWrite
        );
        assert_eq!(io.memory().load_u64(sroot), root_e);
        assert_eq!(io.memory().load_u64(leaf), leaf_e);
        io.translate(SID, Some(2), 0x1000, Access::READ).unwrap();
        let a = io.memory().load_u64(leaf).unwrap();
        assert_eq!(a & (paging::SL_A | paging::SL_D), paging::SL_A);
    }

    #[test]
    fn eafe_sets_extended_accessed() {
        for eafe in [false, true] {
            let io = iommu();
            attach(&io, SID);
            let root = io.table_pool().alloc(io.memory()).unwrap();
            map(&io, root, 0x1000, 0x5000, SIZE_4K, RW | US);
            let e = PasidEntry {
                eafe,
                ..PasidEntry::first_level(1, root)
            };
            io.set_pasid_entry(SID, 1, &e).unwrap();
            io.translate(SID, Some(1), 0x1000, Access::READ).unwrap();
            for v in fl_entries(&io, root, 0x1000) {
                assert_eq!(v & paging::EA != 0, eafe, "{v:#x}");
                assert_eq!(v & A, A);
            }
        }
    }

    /// Nested with SSADE (see `nested`); the guest maps VA 0x1000 to GPA 4 MiB, another 2 MiB
    /// stage-2 leaf than the tables.
    fn nested_ssade(io: &Iommu) -> (Stage2Id, u64) {
        let (s2, mut g, gpgd) = nested_with(io, 3, |e| e.ssade = true);
        fl_map(&mut g, gpgd, 4, 0x1000, 4 * MB, SIZE_4K, RW | US).unwrap();
        (s2, gpgd)
    }

    #[test]
    fn nested_ssade_first_level_ad_writes_set_stage2_dirty() {
        let io = iommu();
        let (s2, gpgd) = nested_ssade(&io);
        let tables = sl_leaf(&io, s2, gpgd);
        let output = sl_leaf(&io, s2, 4 * MB);
        let ad = paging::SL_A | paging::SL_D;
        // A refused request (not present in the guest's PT) changes no A/D bit anywhere.
        let pml4e = io.memory().load_u64(GUEST_BASE + gpgd).unwrap();
        assert_eq!(
            reason(io.translate(SID, Some(3), 0x2000, Access::READ)),
            FaultReason::FirstLevelNotPresent
        );
        assert_eq!(io.memory().load_u64(tables).unwrap() & ad, 0);
        assert_eq!(io.memory().load_u64(GUEST_BASE + gpgd).unwrap(), pml4e);
        // A read sets A in the guest's entries: a write through stage 2 (A and D on the leaf
        // mapping the tables); the output page is only read (A).
        io.translate(SID, Some(3), 0x1000, Access::READ).unwrap();
        assert_eq!(io.memory().load_u64(tables).unwrap() & ad, ad);
        assert_eq!(io.memory().load_u64(output).unwrap() & ad, paging::SL_A);
        assert_eq!(io.memory().load_u64(GUEST_BASE + gpgd).unwrap() & A, A);
    }

    #[test]
    fn nested_table_read_needs_stage2_read() {
        let io = iommu();
        attach(&io, SID);
        let s2 = io.create_stage2(4).unwrap();
        let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0x1000);
        let gpgd = g.alloc_table().unwrap();
        fl_map(&mut g, gpgd, 4, 0x1000, 0x10_0000, SIZE_4K, RW | US).unwrap();
        let pt = g.next_table() - 0x1000; // the last table fl_map created
        let write_only = S2Perms {
            read: false,
            write: true,
            execute: false,
        };
        for gpa in (0x1000..g.next_table()).step_by(0x1000) {
            let perms = if gpa == pt { write_only } else { S2Perms::RW };
            io.stage2_map(s2, gpa, GUEST_BASE + gpa, 0x1000, perms)
                .unwrap();
        }
        io.stage2_map(s2, 0x10_0000, GUEST_BASE + 0x10_0000, 0x1000, S2Perms::RW)
            .unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        io.set_pasid_entry(SID, 1, &PasidEntry::nested(4, gpgd, root, levels))
            .unwrap();
        let f = io
            .translate(SID, Some(1), 0x1000, Access::READ)
            .unwrap_err();
        assert_eq!(
            (f.reason, f.stage),
            (FaultReason::NestedNoReadEntry, Stage::Second)
        );
    }
}
