//! The front of translation: the front cache, the PASID cache, the IOTLB and the fault record;
//! a miss goes to the walks of `walk.rs`.

use std::sync::atomic::Ordering;

use vm_memory::GuestMemoryMmap;

use super::Iommu;
use crate::cache::{
    device_tag, flag, front_ctrl_index, iotlb_value, pack, page_key, pasid_cache_key, pasid_key,
    size_of_code, tag_key, unpack, value_fl_rights, value_is_dirty, value_page, value_size_code,
    value_sl_rights, DeviceGens, DomainGens, PasidFlags, PasidGens, FRONT_CTRL_KNOWN,
    FRONT_CTRL_VALUE_BITS, F_PERMS_PRIV, F_PERMS_USER, F_RID_PRIV, NO_PASID, P_EXEC, P_READ,
    P_USER, P_WRITE,
};
use crate::context::{resolve, resolve_context};
use crate::fault::{overlaps_interrupt_range, Access, Fault, FaultReason, SourceId, Stage};
use crate::paging::{check_fl_access, FlControls, Rights, WalkFault, SIZE_4K};
use crate::pasid_entry::{CachedEntry, Pgtt};
use crate::pool::WalkGuard;
use crate::stats::{Counter, LocalStats};

use super::walk::{sl_allows, WalkEnv};

/// Permissions of a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    /// Read requests may use the page.
    pub read: bool,
    /// Writes allowed (for the privilege of the request that produced the translation).
    pub write: bool,
    /// Execute requests may use the page (never without ECAP.ERS).
    pub execute: bool,
    /// User (unprivileged) requests allowed.
    pub user: bool,
}

impl Perms {
    /// The permission nibble of the cache words (`P_READ`, `P_WRITE`, `P_EXEC`, `P_USER`).
    #[inline(always)]
    pub(super) fn bits(self) -> u64 {
        flag(self.read, P_READ)
            | flag(self.write, P_WRITE)
            | flag(self.execute, P_EXEC)
            | flag(self.user, P_USER)
    }

    /// The permissions of a permission nibble (the inverse of [`Perms::bits`]).
    #[inline(always)]
    pub(super) fn from_bits(p: u64) -> Self {
        Perms {
            read: p & P_READ != 0,
            write: p & P_WRITE != 0,
            execute: p & P_EXEC != 0,
            user: p & P_USER != 0,
        }
    }
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// Host-physical address of the input address.
    pub host_addr: u64,
    /// Size of the page (the smaller of the two stages when nested) containing it.
    pub page_size: u64,
    /// Permissions of the page.
    pub perms: Perms,
}

/// Cached PASID-table information for one (source id, PASID), with the generation counters
/// of its domain and (domain, PASID) found on the way (so the IOTLB step does not look them
/// up again).
#[derive(Clone, Copy)]
pub(super) struct PasidInfo<'a> {
    pub(super) entry: CachedEntry,
    /// The PASID used and the context-entry bits requests need.
    pub(super) flags: PasidFlags,
    /// The context-cache and PASID-cache generations the entry was current under (the words
    /// 0..3 of its PASID-cache value); [`STALE`] when it changed while it was being read.
    stamp: [u64; 3],
    /// The counters of the requesting device (looked up once per translation).
    dev: &'a DeviceGens,
    /// The counters of the entry's domain.
    pub(super) dom: &'a DomainGens,
    /// The counters of (the entry's domain, the PASID used).
    pub(super) pg: &'a PasidGens,
}

/// Who asks for a translation, which decides the caches and the fault reporting.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Requester {
    /// An untranslated request of a device without a device TLB.
    Untranslated,
    /// A request of a device whose device TLB the model keeps (the in-model device TLB).
    DevTlb,
    /// An ATS translation request whose answer the device caches itself.
    Ats,
}

/// A [`PasidInfo::stamp`] word no generation equals.
const STALE: u64 = u64::MAX;

impl Iommu {
    pub(super) fn fault(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        addr: u64,
        access: Access,
        wf: WalkFault,
        fpd: bool,
    ) -> Fault {
        self.stats.inc(Counter::Faults);
        // An FPD at or above the fault suppresses only qualified faults.
        let suppressed = fpd && wf.reason.is_qualified();
        let f = Fault {
            source_id: sid,
            pasid,
            addr,
            access,
            reason: wf.reason,
            stage: wf.stage,
            level: wf.level,
            recorded: !suppressed,
        };
        if !suppressed {
            self.faults.record(f);
        }
        f
    }

    /// Translates one DMA request: device TLB (if the device has ATS), PASID cache, IOTLB,
    /// then the walk (first level, second level, nested or pass-through) with the
    /// paging-structure caches, permission checks and accessed/dirty updates. A failure is
    /// recorded in the fault log unless an FPD bit applies, and returned.
    // Inlined into callers: a front-cache hit then costs no call, and its answer never goes
    // through memory; everything else is in the out-of-line `translate_slow`.
    #[inline]
    pub fn translate(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, Fault> {
        let epoch = self.caches.epoch.load(Ordering::Acquire);
        // No test of the device's ATS flag first: the front cache never holds the pages of a
        // device with ATS (see `front_fill_epoch`), whose requests go to its device TLB.
        if let Some(t) = self.front_lookup(epoch, sid, pasid, iova, access) {
            return Ok(t);
        }
        let front_epoch = self.front_fill_epoch(sid, epoch);
        let requester = if front_epoch.is_some() {
            Requester::Untranslated
        } else {
            Requester::DevTlb
        };
        self.translate_slow(sid, pasid, iova, access, requester, front_epoch)
            .map(|(t, _)| t)
    }

    /// The epoch a front-cache fill of `sid`'s translation may be stamped with: `epoch`, read
    /// by the caller before this, when the device has no ATS; `None` (no fill) when it has.
    ///
    /// A request of a device with ATS goes to its device TLB first, which may rightly hold an
    /// older translation than the IOMMU's caches; `translate` looks in the front cache
    /// without testing the flag, so the front cache must never hold such a device's pages
    /// while its flag is set. Two steps keep it so. A fill happens only when the flag, read
    /// *after* the epoch the fill is stamped with, is clear; and an attach that sets the flag
    /// bumps the epoch *after* setting it (`Caches::retire_front`). A fill stamped with an
    /// epoch from after that bump read the flag after the bump, so saw it set, and did not
    /// happen; a fill stamped with an earlier epoch is retired by the bump (its fill checks
    /// the epoch while holding its slot, so it is not stored after the bump either). The
    /// loom model `loom_ats_enable_keeps_front_fills_out` in `cache.rs` checks the two orders.
    #[inline(always)]
    pub(super) fn front_fill_epoch(&self, sid: SourceId, epoch: u64) -> Option<u64> {
        let ats = self.ats[usize::from(sid.0)].load(Ordering::Acquire);
        (!ats).then_some(epoch)
    }

    /// The front-cache fast path under `epoch` (the current epoch, read by the caller):
    /// `None` on a miss.
    #[inline(always)]
    pub(super) fn front_lookup(
        &self,
        epoch: u64,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Option<Translation> {
        let front_tag = device_tag(sid.0, pasid_key(pasid));
        let sizes = self.caches.front_sizes.load(Ordering::Acquire);
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let Some([e, delta, ctrl]) = self.caches.front.lookup(page_key(iova, code), front_tag)
            else {
                continue;
            };
            if e != epoch {
                return None;
            }
            let privileged = access.privileged || (pasid.is_none() && ctrl & F_RID_PRIV != 0);
            let kind = Access {
                privileged,
                ..access
            }
            .kind();
            if ctrl >> kind & 1 == 0 {
                // Denied, or a write that must set dirty bits: the full path decides.
                return None;
            }
            self.stats.inc(Counter::FrontHits);
            let p = ctrl
                >> if privileged {
                    F_PERMS_PRIV
                } else {
                    F_PERMS_USER
                };
            return Some(Translation {
                // The output page plus the offset in the page (see the fill).
                host_addr: iova.wrapping_add(delta),
                page_size: size_of_code(code),
                perms: Perms::from_bits(p),
            });
        }
        None
    }

    /// The front-cache control word of a translation: which of the 8 access kinds the cached
    /// IOTLB value allows without a walk (computed with the same check as every IOTLB hit)
    /// and the permissions reported to user and privileged requests.
    ///
    /// `v` is the value a translation has just succeeded with, so its page is outside the
    /// interrupt range (the walk's output check or the IOTLB hit's `check_cached` refused it
    /// otherwise): the word does not check that again. Apart from RID_PRIV, it depends only on
    /// the translation type, the rights and dirty bits of `v` and the entry's SRE, WPE and
    /// execute controls: it is computed once per combination and kept in the caches' memo.
    pub(super) fn front_ctrl(&self, info: &PasidInfo<'_>, v: u64) -> u64 {
        debug_assert!(
            !overlaps_interrupt_range(value_page(v), size_of_code(value_size_code(v))),
            "a value in the interrupt range never reaches a fill"
        );
        let e = &info.entry;
        let c = self.fl_controls(e);
        let index = front_ctrl_index(e.pgtt, v, c);
        let slot = &self.caches.front_ctrl_memo[index];
        let mut ctrl = u64::from(slot.load(Ordering::Relaxed));
        if ctrl & FRONT_CTRL_KNOWN == 0 {
            ctrl = self.front_ctrl_compute(e.pgtt, v, c) | FRONT_CTRL_KNOWN;
            // Every thread computes the same word: a plain store is enough.
            slot.store(ctrl as u32, Ordering::Relaxed);
        }
        ctrl & !FRONT_CTRL_KNOWN | flag(info.flags.rid_priv(), F_RID_PRIV)
    }

    /// [`Self::front_ctrl`] without RID_PRIV, computed the long way.
    fn front_ctrl_compute(&self, pgtt: Pgtt, v: u64, c: FlControls) -> u64 {
        // A page outside the interrupt range: the checks below then depend only on the memo
        // key's bits.
        let v = v & FRONT_CTRL_VALUE_BITS;
        let level = value_size_code(v) as u8 + 1;
        let mut ctrl = 0;
        for kind in 0..8u64 {
            let a = Access::from_kind(kind);
            let needs_walk = a.write && !value_is_dirty(v);
            if !needs_walk && self.check_cached(pgtt, v, a, c, level).is_ok() {
                ctrl |= 1 << kind;
            }
        }
        for (privileged, shift) in [(false, F_PERMS_USER), (true, F_PERMS_PRIV)] {
            let a = Access {
                privileged,
                ..Access::READ
            };
            let p = self.make_translation(pgtt, v, 0, a, c).perms;
            ctrl |= p.bits() << shift;
        }
        ctrl
    }

    /// The translation past the front cache, with whether the page's dirty bits are set
    /// (a write through it needs no A/D update). A success goes into the front cache stamped
    /// with `front_epoch` when it is given ([`Self::front_fill_epoch`]).
    #[inline(never)]
    pub(super) fn translate_slow(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
        requester: Requester,
        front_epoch: Option<u64>,
    ) -> Result<(Translation, bool), Fault> {
        let front_tag = device_tag(sid.0, pasid_key(pasid));
        let mut devtlb_stamp = None;
        let ats = requester != Requester::Untranslated;
        // Every count of this translation goes through one lookup of this thread's shard.
        let st = &self.stats.local();
        if requester == Requester::DevTlb {
            match self.devtlb_lookup(sid, pasid, iova, access) {
                Ok(t) => {
                    st.inc(Counter::Translations);
                    st.inc(Counter::DevTlbHits);
                    return Ok((t, t.perms.write));
                }
                Err(stamp) => devtlb_stamp = Some(stamp),
            }
        }
        st.inc(Counter::Translations);
        // From here on the walk reads table pages without the control lock: none freed
        // meanwhile is reused before the walk ends, and the same pin keeps the memory
        // snapshot alive (one load, no reference count).
        let walk = WalkGuard::enter();
        let mem = self.mem.pinned(walk.pin());
        let context_fault = |reason| WalkFault {
            reason,
            stage: Stage::Context,
            level: 0,
        };
        let no_dte = context_fault(FaultReason::DeviceTlbDisabled);
        // A PASID entry invalidated between its reading and the reading of the IOTLB
        // generations is read again (see `translate_paged`).
        loop {
            // Borrowed where it was returned, not moved out of the `Result` (a copy of the
            // decoded entry per miss).
            let found = self.pasid_info(st, mem, sid, pasid);
            let info = match &found {
                Ok(i) => i,
                &Err((reason, fpd)) => {
                    // A translation request is refused at the context entry, before the PASID
                    // chain, when the entry's DTE is clear.
                    if ats {
                        let rt = self.root_table_address();
                        if let Ok(ctx) = resolve_context(mem, &self.cfg, rt, sid) {
                            if !ctx.dte {
                                return Err(self.fault(sid, pasid, iova, access, no_dte, ctx.fpd));
                            }
                        }
                    }
                    return Err(self.fault(sid, pasid, iova, access, context_fault(reason), fpd));
                }
            };
            if ats && !info.flags.dte() {
                return Err(self.fault(sid, pasid, iova, access, no_dte, info.flags.ctx_fpd()));
            }
            // The access the tables are checked for; faults record the request's own.
            let checked = if pasid.is_none() && info.flags.rid_priv() {
                access.privileged()
            } else {
                access
            };
            let result = if info.entry.pgtt == Pgtt::PassThrough {
                self.pass_through(iova, checked, self.fl_controls(&info.entry))
            } else {
                match self.translate_paged(st, mem, info, iova, checked) {
                    Ok(Some(r)) => Ok(r),
                    Ok(None) => continue,
                    Err(wf) => Err(wf),
                }
            };
            // Finished here, where `info` already is (no copy of it out of the loop).
            return match result {
                Ok((t, v)) => {
                    if let Some(stamp) = devtlb_stamp {
                        self.devtlb_fill(sid, pasid, iova, &t, value_is_dirty(v), stamp);
                    }
                    let e = &info.entry;
                    if let (Some(epoch), false) = (front_epoch, e.pgtt == Pgtt::PassThrough) {
                        let ctrl = self.front_ctrl(info, v);
                        let code = value_size_code(v);
                        let size = size_of_code(code);
                        debug_assert_eq!(value_page(v) & (size - 1), 0, "a size-aligned page");
                        // Output page minus input page (the translation is the output page
                        // OR the offset, which `iova` also ends in): a hit adds it to its
                        // input address.
                        let delta = t.host_addr.wrapping_sub(iova);
                        let c = &self.caches;
                        if c.front_sizes.load(Ordering::Acquire) & (1 << code) == 0 {
                            c.front_sizes.fetch_or(1 << code, Ordering::AcqRel);
                        }
                        c.front.insert(
                            page_key(iova, code),
                            front_tag,
                            [epoch, delta, ctrl],
                            || c.epoch.load(Ordering::Acquire) == epoch,
                        );
                    }
                    Ok((t, value_is_dirty(v)))
                }
                // A translation request that fails in the page tables gets a completion without
                // rights (R = W = 0) and is not reported as a fault (the device may ask for the
                // page with a page request instead).
                Err(wf) if requester == Requester::Ats && wf.stage != Stage::Context => {
                    Err(Fault {
                        source_id: sid,
                        pasid,
                        addr: iova,
                        access,
                        reason: wf.reason,
                        stage: wf.stage,
                        level: wf.level,
                        recorded: false,
                    })
                }
                Err(wf) => Err(self.fault(sid, pasid, iova, access, wf, info.flags.fpd())),
            };
        }
    }

    /// The controls of a PASID entry for access checks; execute requests need both ECAP.ERS
    /// and the entry's ERE.
    pub(super) fn fl_controls(&self, e: &CachedEntry) -> FlControls {
        FlControls {
            sre: e.sre(),
            wpe: e.wpe(),
            ers: self.cfg.ers && e.ere(),
        }
    }

    pub(super) fn pass_through(
        &self,
        iova: u64,
        access: Access,
        c: FlControls,
    ) -> Result<(Translation, u64), WalkFault> {
        let exec = c.ers;
        // SRE is the entry's, whatever its type (see `sl_only_controls`).
        if access.privileged && !c.sre {
            return Err(WalkFault {
                reason: FaultReason::SupervisorNotEnabled,
                stage: Stage::Context,
                level: 0,
            });
        }
        if access.execute && !exec {
            return Err(WalkFault {
                reason: FaultReason::ExecuteNotEnabled,
                stage: Stage::Context,
                level: 0,
            });
        }
        if iova >> self.cfg.haw() != 0 {
            return Err(WalkFault::second(FaultReason::InputBeyondMax, 0));
        }
        Ok((
            Translation {
                host_addr: iova,
                page_size: SIZE_4K,
                perms: Perms {
                    read: true,
                    write: true,
                    execute: exec,
                    user: true,
                },
            },
            iotlb_value(iova, SIZE_4K, Rights::ALL, Rights::ALL, true),
        ))
    }

    #[inline(always)]
    pub(super) fn pasid_info(
        &self,
        st: &LocalStats<'_>,
        mem: &GuestMemoryMmap,
        sid: SourceId,
        pasid: Option<u32>,
    ) -> Result<PasidInfo<'_>, (FaultReason, bool)> {
        let c = &self.caches;
        let k0 = pasid_cache_key(pasid);
        let k1 = u64::from(sid.0);
        let dev = c.device(sid.0);
        let s0 = pack(c.global.ctx.get(), dev.ctx.get());
        let gpc = c.global.pc.get();
        if let Some(d) = c.pasid_cache.lookup(k0, k1) {
            let (d_gpc, d_dpc) = unpack(d[1]);
            if d[0] == s0 && d_gpc == gpc {
                {
                    let dom = c.domain(CachedEntry::did_of(d[4]));
                    let f = PasidFlags::unpack(d[6]);
                    let pg = dom.pasids.get(f.pasid());
                    if d_dpc == dom.pc.get() && d[2] == u64::from(pg.pc.get()) {
                        st.inc(Counter::PasidCacheHits);
                        // The entry is taken from the slot's words last, straight into the
                        // answer (taken before the lookups above, it was kept on the stack
                        // across them and copied).
                        return Ok(PasidInfo {
                            entry: CachedEntry::decode(d[3], d[4], d[5]),
                            flags: f,
                            stamp: [d[0], d[1], d[2]],
                            dev,
                            dom,
                            pg,
                        });
                    }
                }
            }
        }
        self.pasid_info_miss(st, mem, sid, pasid, dev, s0, gpc)
    }

    /// [`Self::pasid_info`] on a PASID-cache miss: the chain is read (twice: once with no
    /// write of the API to the device's PASID entries overlapping the read, then again to
    /// check the entry is still the current one) and the entry cached. Out of line: only a
    /// hit is on the hot path, which then builds its answer in place instead of merging it
    /// with this one's.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn pasid_info_miss<'a>(
        &'a self,
        st: &LocalStats<'_>,
        mem: &GuestMemoryMmap,
        sid: SourceId,
        pasid: Option<u32>,
        dev: &'a DeviceGens,
        s0: u64,
        gpc: u32,
    ) -> Result<PasidInfo<'a>, (FaultReason, bool)> {
        let c = &self.caches;
        let (k0, k1) = (pasid_cache_key(pasid), u64::from(sid.0));
        st.inc(Counter::PasidCacheMisses);
        let rt = self.root_table_address();
        // The chain is read between two of the API's writes of the device's PASID entries
        // (see `EntrySeq`), so the entry is the old one or the new one of a replace racing
        // this, never half of each; a fault read across a write is read again too (a torn
        // entry can be an invalid one).
        let r = loop {
            let seen = dev.entries.read_begin();
            let r = resolve(mem, &self.cfg, rt, sid, pasid);
            if dev.entries.read_ok(seen) {
                break r;
            }
            dev.entries.wait();
        };
        let r = r.map_err(|f| (f.reason, f.fpd))?;
        let dom = c.domain(r.entry.did);
        let pg = dom.pasids.get(r.pasid);
        let (dpc, ppc) = (dom.pc.get(), pg.pc.get());
        // The generations of the DID and PASID are known only now: read the chain again so the
        // cached entry is one that was current after those generations were read.
        let f = PasidFlags::new(
            r.pasid,
            r.fpd,
            r.context.fpd,
            r.context.rid_priv,
            r.context.dte,
        );
        let stamp = [s0, pack(gpc, dpc), u64::from(ppc)];
        let current = resolve(mem, &self.cfg, rt, sid, pasid).ok() == Some(r);
        if current {
            let raw = r.entry.to_raw();
            let flags = f.pack();
            c.pasid_cache.insert(
                k0,
                k1,
                [
                    s0,
                    pack(gpc, dpc),
                    u64::from(ppc),
                    raw[0],
                    raw[1],
                    raw[2],
                    flags,
                ],
                || true,
            );
        }
        Ok(PasidInfo {
            entry: r.entry.cached(),
            flags: f,
            stamp: if current { stamp } else { [STALE; 3] },
            dev,
            dom,
            pg,
        })
    }

    /// True while no context-cache or PASID-cache invalidation that covers `info`'s entry
    /// has begun since the entry was read.
    fn pasid_info_current(&self, info: &PasidInfo<'_>) -> bool {
        let c = &self.caches;
        let now = [
            pack(c.global.ctx.get(), info.dev.ctx.get()),
            pack(c.global.pc.get(), info.dom.pc.get()),
            u64::from(info.pg.pc.get()),
        ];
        now == info.stamp
    }

    #[inline(always)]
    pub(super) fn check_cached(
        &self,
        pgtt: Pgtt,
        v: u64,
        access: Access,
        c: FlControls,
        level: u8,
    ) -> Result<(), WalkFault> {
        // The first-level check orders SRE (0x5d) before ERE (0x5c), as the walk does; a
        // second-level-only entry is held to both the same way.
        if !pgtt.uses_first_level() {
            sl_only_controls(access, c)?;
        }
        if pgtt.uses_first_level() {
            check_fl_access(
                value_fl_rights(v),
                access.write,
                access.execute,
                access.privileged,
                c,
            )
            .map_err(|r| WalkFault::first(r, level))?;
        }
        if pgtt.uses_second_level() {
            sl_allows(value_sl_rights(v), access).map_err(|r| WalkFault::second(r, level))?;
        }
        let base = value_page(v);
        let size = size_of_code(value_size_code(v));
        if overlaps_interrupt_range(base, size) {
            let stage = if pgtt.uses_second_level() {
                Stage::Second
            } else {
                Stage::First
            };
            return Err(WalkFault {
                reason: FaultReason::InterruptRange,
                stage,
                level,
            });
        }
        Ok(())
    }

    #[inline(always)]
    pub(super) fn make_translation(
        &self,
        pgtt: Pgtt,
        v: u64,
        iova: u64,
        access: Access,
        c: FlControls,
    ) -> Translation {
        let size = size_of_code(value_size_code(v));
        let fl = pgtt.uses_first_level();
        let sl = pgtt.uses_second_level();
        let (flr, slr) = (value_fl_rights(v), value_sl_rights(v));
        let fl_w = !fl || flr.write || (access.privileged && !c.wpe);
        Translation {
            host_addr: value_page(v) | (iova & (size - 1)),
            page_size: size,
            perms: Perms {
                read: !sl || slr.user_or_read,
                write: fl_w && (!sl || slr.write),
                execute: c.ers && (!fl || flr.exec) && (!sl || slr.exec),
                user: !fl || flr.user_or_read,
            },
        }
    }

    /// The IOTLB lookup and, on a miss, the walk of a first-level, second-level or nested
    /// entry. `Ok(None)` when the PASID entry was invalidated before the IOTLB generations
    /// were read: anything cached from its tables under those generations could outlive the
    /// invalidation that was meant to remove it (and name table pages freed after it), so
    /// the caller reads the entry again. An invalidation of the PASID entry bumps the PASID
    /// cache before the IOTLB (the order VT-d requires of software), so generations read
    /// here that include the IOTLB bump also show the PASID-cache bump.
    pub(super) fn translate_paged(
        &self,
        st: &LocalStats<'_>,
        mem: &GuestMemoryMmap,
        info: &PasidInfo<'_>,
        iova: u64,
        access: Access,
    ) -> Result<Option<(Translation, u64)>, WalkFault> {
        let e = &info.entry;
        let c = &self.caches;
        let dom = info.dom;
        let pgtt = e.pgtt;
        let pg: Option<&PasidGens> = (pgtt != Pgtt::SecondLevel).then_some(info.pg);
        let tag = tag_key(e.did(), pg.map_or(NO_PASID, |_| info.flags.pasid()));
        let s0 = pack(c.global.iotlb.get(), dom.iotlb.get());
        let s1 = match pgtt {
            Pgtt::FirstLevel => pack(dom.fl.get(), 0),
            Pgtt::Nested => pack(dom.fl.get(), dom.nested.get()),
            _ => 0,
        };
        let s2 = pg.map_or(0, |p| u64::from(p.iotlb.get()));
        let ctl = self.fl_controls(e);
        let sizes = match pg {
            Some(p) => p.sizes.load(Ordering::Acquire),
            None => dom.sl_sizes.load(Ordering::Acquire),
        };
        if !self.pasid_info_current(info) {
            return Ok(None);
        }
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let Some(d) = c.iotlb.lookup(page_key(iova, code), tag) else {
                continue;
            };
            if d[0] != s0 || d[1] != s1 || d[2] != s2 {
                continue;
            }
            let v = d[3];
            if access.write && !value_is_dirty(v) {
                // A write through an entry filled by a read: walk to set the dirty bits.
                break;
            }
            st.inc(Counter::IotlbHits);
            self.check_cached(pgtt, v, access, ctl, code as u8 + 1)?;
            return Ok(Some((self.make_translation(pgtt, v, iova, access, ctl), v)));
        }
        st.inc(Counter::IotlbMisses);
        st.inc(Counter::Walks);
        let env = WalkEnv { mem, st };
        let psi_p = pg.map(|p| p.psi.get());
        let psi_sl = dom.sl_psi.get();
        let (v, page_base) = match pgtt {
            Pgtt::SecondLevel => {
                // The entry's own controls come before its tables, as they do on a hit.
                sl_only_controls(access, ctl)?;
                self.walk_sl_only(env, e, dom, s0, iova, access)?
            }
            _ => self.walk_fl(env, e, dom, info.pg, tag, [s0, s1, s2], iova, access, ctl)?,
        };
        let code = value_size_code(v);
        if pgtt != Pgtt::FirstLevel {
            // A first-level walk has checked exactly these rights and this output page; the
            // others can still refuse here (second level only: execute without ERS; nested:
            // second-level rights re-read after setting its A/D bits).
            self.check_cached(pgtt, v, access, ctl, code as u8 + 1)?;
        }
        let sizes_seen = match pg {
            Some(p) => &p.sizes,
            None => &dom.sl_sizes,
        };
        if sizes_seen.load(Ordering::Acquire) & (1 << code) == 0 {
            sizes_seen.fetch_or(1 << code, Ordering::AcqRel);
        }
        c.iotlb
            .insert(page_key(page_base, code), tag, [s0, s1, s2, v], || {
                pg.map(|p| p.psi.get()) == psi_p && dom.sl_psi.get() == psi_sl
            });
        Ok(Some((self.make_translation(pgtt, v, iova, access, ctl), v)))
    }
}

/// The PASID-entry controls a request through a second-level-only entry is checked against,
/// in the first level's order: a supervisor request needs SRE (0x5d), an execute request ERS
/// and ERE (0x5c). SRE is not a first-level-only control: Linux's
/// `intel_pasid_setup_second_level` / `_pass_through` set it in such entries so that
/// supervisor requests get through, and the 0x5d fault reason names no translation type.
#[inline(always)]
fn sl_only_controls(access: Access, c: FlControls) -> Result<(), WalkFault> {
    if access.privileged && !c.sre {
        return Err(WalkFault::first(FaultReason::SupervisorNotEnabled, 0));
    }
    if access.execute && !c.ers {
        return Err(WalkFault::first(FaultReason::ExecuteNotEnabled, 0));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
