//! The translation caches and their invalidation generations.
//!
//! | cache | key | holds | invalidated by |
//! |---|---|---|---|
//! | PASID cache | source id, PASID (or "no PASID") | context + directory + PASID entry | context-cache (all / device), PASID-cache (all / DID / DID+PASID) |
//! | IOTLB | DID, PASID (or "second level only"), page | output page, page size, rights | IOTLB global / DID / DID page-selective, PASID-based IOTLB (all PASIDs of DID / one PASID / pages) |
//! | first-level paging-structure cache | DID, PASID, 2 MiB region | level-1 table (guest-)address + rights above | as the IOTLB's first-level entries, except page-selective with IH = 1 |
//! | second-level paging-structure cache | DID, 2 MiB region of GPA | level-1 table + rights above | IOTLB global / DID / DID page-selective without IH |
//! | device TLB | source id, PASID, page | output page, page size, rights | device-TLB (all, per PASID, page-selective) |
//!
//! Whole-scope invalidations (global, domain, PASID) are O(1): each entry carries the values of
//! the generation counters of its scopes, taken *before* the walk that produced it, and a hit
//! compares them with the current counters. An invalidation bumps one counter. Page-selective
//! invalidations remove the slots of the pages named (cost proportional to the pages, one probe
//! per page size in use), after bumping a per-scope sequence that fills re-check while holding
//! their slot (see [`crate::slots`]). Ranges above [`PAGE_INVALIDATION_LIMIT`] pages are turned
//! into the scope's whole invalidation (over-invalidation is always allowed; under-invalidation
//! never happens). Nothing is invalidated without an invalidation request: a missing request
//! leaves the stale entry in use, as on hardware.
//!
//! In front of the PASID cache and IOTLB sits a small *front cache* keyed by (source id, PASID,
//! page) that holds their combined answer stamped with a global epoch; any invalidation bumps
//! the epoch, after which the front cache misses and the full PASID-cache + IOTLB path (with
//! its scoped generations) decides. It serves nothing the two caches would not. It never holds
//! the pages of a device with ATS (whose requests go to its device TLB first): `translate`
//! looks in it without testing the device's ATS flag.
//!
//! Counters are 32 bits: an entry could falsely revalidate only after exactly 2^32
//! invalidations of its scope while it stayed cached.

// The generation counters are what the loom model of this file checks.
#[cfg(loom)]
use loom::sync::atomic::AtomicU32;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::entry_seq::EntrySeq;
use crate::paging::{FlControls, Rights, WalkStart};
use crate::pasid_entry::Pgtt;
use crate::slots::SlotArray;

/// Page-selective invalidations naming more pages than this invalidate their whole scope.
pub const PAGE_INVALIDATION_LIMIT: u64 = 4096;

/// PASID value used in keys for "second-level only, any PASID" and "request without PASID".
pub(crate) const NO_PASID: u32 = 1 << 20;

/// A generation counter.
#[derive(Debug, Default)]
pub(crate) struct Gen(AtomicU32);

impl Gen {
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Source ids (16 bits): the length of the per-device arrays, which a `u16` then indexes
/// without a bounds check.
pub(crate) const SOURCE_IDS: usize = 1 << 16;

/// `N` values of `f` in a boxed array (built on the heap, not moved through the stack): an
/// index known to be below `N` needs no bounds check.
pub(crate) fn boxed_array<T, const N: usize>(mut f: impl FnMut() -> T) -> Box<[T; N]> {
    let items: Box<[T]> = (0..N).map(|_| f()).collect();
    items.try_into().unwrap_or_else(|_| unreachable!("N items"))
}

/// 64 records, the leaf of a [`Radix`].
type Leaf<T> = Box<[T; 64]>;
/// 128 lazily created leaves.
type Mid<T> = Box<[OnceLock<Leaf<T>>; 128]>;

/// A lazily populated map from a 20-bit PASID to `T`, lock-free to read.
pub(crate) struct Radix<T> {
    top: Box<[OnceLock<Mid<T>>; 128]>,
}

impl<T: Default> Radix<T> {
    fn new() -> Self {
        Self {
            top: boxed_array(OnceLock::new),
        }
    }
    #[inline]
    pub(crate) fn get(&self, pasid: u32) -> &T {
        let p = (pasid & 0xf_ffff) as usize;
        let mid = self.top[p >> 13].get_or_init(|| boxed_array(OnceLock::new));
        let leaf =
            mid[(p >> 6) & 127].get_or_init(|| Box::new(std::array::from_fn(|_| T::default())));
        &leaf[p & 63]
    }
}

/// Counters of one (DID, PASID).
#[derive(Debug, Default)]
pub(crate) struct PasidGens {
    pub(crate) iotlb: Gen,
    pub(crate) pc: Gen,
    pub(crate) psi: Gen,
    /// Page sizes ever cached for this PASID: bit 0 4 KiB, 1 2 MiB, 2 1 GiB.
    pub(crate) sizes: AtomicU8,
}

/// Counters of one domain.
pub(crate) struct DomainGens {
    pub(crate) iotlb: Gen,
    pub(crate) fl: Gen,
    pub(crate) nested: Gen,
    pub(crate) pc: Gen,
    pub(crate) sl_psi: Gen,
    pub(crate) sl_sizes: AtomicU8,
    pub(crate) pasids: Radix<PasidGens>,
}

/// Counters of one (device, PASID) for its device TLB.
#[derive(Debug, Default)]
pub(crate) struct DevPasidGens {
    pub(crate) devtlb: Gen,
    pub(crate) psi: Gen,
    pub(crate) sizes: AtomicU8,
}

/// Counters of one device.
pub(crate) struct DeviceGens {
    pub(crate) ctx: Gen,
    pub(crate) devtlb: Gen,
    /// The write sequence of the device's PASID entries: a PASID-cache miss reads an entry
    /// only between two of the API's writes of one.
    pub(crate) entries: EntrySeq,
    pub(crate) pasids: Radix<DevPasidGens>,
}

/// Global counters.
#[derive(Debug, Default)]
pub(crate) struct GlobalGens {
    pub(crate) iotlb: Gen,
    pub(crate) pc: Gen,
    pub(crate) ctx: Gen,
    pub(crate) devtlb: Gen,
}

#[inline]
pub(crate) fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | u64::from(hi) << 32
}

/// The two counters of a [`pack`]ed stamp: (low, high).
#[inline]
pub(crate) fn unpack(w: u64) -> (u32, u32) {
    (w as u32, (w >> 32) as u32)
}

/// Size code of a page size for keys and the sizes masks: 0 4 KiB, 1 2 MiB, 2 1 GiB.
#[inline]
pub(crate) fn size_code(size: u64) -> u64 {
    match size {
        crate::paging::SIZE_4K => 0,
        crate::paging::SIZE_2M => 1,
        _ => 2,
    }
}

/// Key word of a page: page base | size code | valid.
#[inline]
pub(crate) fn page_key(addr: u64, code: u64) -> u64 {
    let size = 1u64 << (12 + 9 * code);
    (addr & !(size - 1)) | code << 1 | 1
}

/// Key word of an IOTLB tag.
#[inline]
pub(crate) fn tag_key(did: u16, pasid: u32) -> u64 {
    u64::from(did) << 21 | u64::from(pasid)
}

/// Every cache and counter of one IOMMU.
pub(crate) struct Caches {
    /// Bumped by every invalidation: front-cache entries are valid only in the epoch they
    /// were filled in.
    pub(crate) epoch: AtomicU64,
    /// Front cache: (source id, PASID, page) → [epoch, output page − input page (wrapping),
    /// control word (the access kinds a hit may serve, the permissions it reports)]. A fast
    /// path in front of the PASID cache + IOTLB pair; it holds only what those would return
    /// and is retired wholesale by any invalidation, so it never changes what is observable.
    pub(crate) front: SlotArray<3>,
    /// Page sizes ever stored in the front cache.
    pub(crate) front_sizes: AtomicU8,
    /// Front-cache control words by [`front_ctrl_index`], [`FRONT_CTRL_KNOWN`] once computed:
    /// the word is a pure function of those bits, so a fill looks it up instead of checking
    /// all eight access kinds again.
    pub(crate) front_ctrl_memo: Box<[std::sync::atomic::AtomicU32]>,
    pub(crate) global: GlobalGens,
    domains: Box<[OnceLock<Box<DomainGens>>]>,
    devices: Box<[OnceLock<Box<DeviceGens>>; SOURCE_IDS]>,
    /// PASID cache: [stamp ctx, stamp pc, stamp pasid pc, v0, v1, v2, ctx/chain bits].
    pub(crate) pasid_cache: SlotArray<7>,
    /// IOTLB: [stamp global/domain, stamp fl/nested, stamp pasid, value].
    pub(crate) iotlb: SlotArray<4>,
    /// First-level PSC: [stamp global/domain, stamp fl, stamp pasid, value].
    pub(crate) fl_psc: SlotArray<4>,
    /// Second-level PSC: [stamp global/domain, value].
    pub(crate) sl_psc: SlotArray<2>,
    /// Device TLB: [stamp global/device, stamp pasid, value].
    pub(crate) devtlb: SlotArray<3>,
}

impl Caches {
    pub(crate) fn new(domain_bits: u8, iotlb_entries: usize) -> Self {
        let n = iotlb_entries.max(64);
        Self {
            epoch: AtomicU64::new(0),
            front: SlotArray::new((n / 4).max(64)),
            front_sizes: AtomicU8::new(0),
            front_ctrl_memo: (0..FRONT_CTRL_MEMO)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            global: GlobalGens::default(),
            domains: (0..1usize << domain_bits)
                .map(|_| OnceLock::new())
                .collect(),
            devices: boxed_array(OnceLock::new),
            pasid_cache: SlotArray::new((n / 4).max(64)),
            iotlb: SlotArray::new(n),
            fl_psc: SlotArray::new((n / 4).max(64)),
            sl_psc: SlotArray::new((n / 4).max(64)),
            devtlb: SlotArray::new((n / 4).max(64)),
        }
    }

    /// Retires every front-cache entry: a lookup that reads the epoch after this misses on
    /// all of them, and a fill stamped with an earlier epoch is not stored after this (it
    /// re-checks the epoch while holding its slot).
    pub(crate) fn retire_front(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The counters of domain `did` (which the caller has checked against the DID width).
    #[inline]
    pub(crate) fn domain(&self, did: u16) -> &DomainGens {
        let slot = &self.domains[usize::from(did) & (self.domains.len() - 1)];
        slot.get_or_init(|| {
            Box::new(DomainGens {
                iotlb: Gen::default(),
                fl: Gen::default(),
                nested: Gen::default(),
                pc: Gen::default(),
                sl_psi: Gen::default(),
                sl_sizes: AtomicU8::new(0),
                pasids: Radix::new(),
            })
        })
    }

    /// The counters of device `sid`.
    #[inline]
    pub(crate) fn device(&self, sid: u16) -> &DeviceGens {
        self.devices[usize::from(sid)].get_or_init(|| {
            Box::new(DeviceGens {
                ctx: Gen::default(),
                devtlb: Gen::default(),
                entries: EntrySeq::default(),
                pasids: Radix::new(),
            })
        })
    }

    /// Removes the entries of `array` keyed by `tag` for every page of `[addr, addr + len)`
    /// of each size in `sizes`.
    pub(crate) fn remove_range<const W: usize>(
        array: &SlotArray<W>,
        tag: u64,
        addr: u64,
        len: u64,
        sizes: u8,
    ) {
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let size = 1u64 << (12 + 9 * code);
            let first = addr & !(size - 1);
            let last = addr.saturating_add(len.max(1) - 1) & !(size - 1);
            let mut a = first;
            loop {
                array.remove(page_key(a, code), tag);
                if a >= last {
                    break;
                }
                a += size;
            }
        }
    }

    /// Removes first- or second-level paging-structure cache entries (keyed by 2 MiB region)
    /// covering `[addr, addr + len)`.
    pub(crate) fn remove_psc_range<const W: usize>(
        array: &SlotArray<W>,
        tag: u64,
        addr: u64,
        len: u64,
    ) {
        let first = addr & !(crate::paging::SIZE_2M - 1);
        let last = addr.saturating_add(len.max(1) - 1) & !(crate::paging::SIZE_2M - 1);
        let mut a = first;
        loop {
            array.remove(psc_key(a), tag);
            if a >= last {
                break;
            }
            a += crate::paging::SIZE_2M;
        }
    }
}

/// Key word of a paging-structure cache entry: the 2 MiB region | valid.
#[inline]
pub(crate) fn psc_key(addr: u64) -> u64 {
    (addr & !(crate::paging::SIZE_2M - 1)) | 1
}

// ---------------------------------------------------------------- cache value words
//
// IOTLB value word (also the second word of a front-cache entry): bits 63:12 = output page
// (host address, aligned to the page size), bits 11:0 = the flags below.

/// Output-page bits of a value word (63:12).
const V_ADDR_MASK: u64 = !0xfff;
/// First level allows writes (bit 0).
const V_FL_W: u64 = 1 << 0;
/// First level allows user requests (bit 1).
const V_FL_U: u64 = 1 << 1;
/// First level allows execution (bit 2).
const V_FL_X: u64 = 1 << 2;
/// Second level allows reads (bit 3).
const V_SL_R: u64 = 1 << 3;
/// Second level allows writes (bit 4).
const V_SL_W: u64 = 1 << 4;
/// Second level allows execution (bit 5).
const V_SL_X: u64 = 1 << 5;
/// Every dirty bit a write needs is already set (bit 6): a write may hit without a walk.
const V_DIRTY: u64 = 1 << 6;
/// Page-size code (bits 8:7, see [`size_code`]).
const V_SIZE_SHIFT: u32 = 7;

/// An IOTLB value word: output page `out` of a `size`-byte page, the first- and second-level
/// rights of the translation, and whether every dirty bit a write needs is set.
#[inline(always)]
pub(crate) fn iotlb_value(out: u64, size: u64, fl: Rights, sl: Rights, dirty: bool) -> u64 {
    (out & V_ADDR_MASK)
        | flag(fl.write, V_FL_W)
        | flag(fl.user_or_read, V_FL_U)
        | flag(fl.exec, V_FL_X)
        | flag(sl.user_or_read, V_SL_R)
        | flag(sl.write, V_SL_W)
        | flag(sl.exec, V_SL_X)
        | flag(dirty, V_DIRTY)
        | size_code(size) << V_SIZE_SHIFT
}

/// The output page of a value word (bits 63:12).
#[inline(always)]
pub(crate) fn value_page(v: u64) -> u64 {
    v & V_ADDR_MASK
}

/// The first-level rights of a value word (bits 2:0).
#[inline(always)]
pub(crate) fn value_fl_rights(v: u64) -> Rights {
    Rights {
        write: v & V_FL_W != 0,
        user_or_read: v & V_FL_U != 0,
        exec: v & V_FL_X != 0,
    }
}

/// The second-level rights of a value word (bits 5:3).
#[inline(always)]
pub(crate) fn value_sl_rights(v: u64) -> Rights {
    Rights {
        user_or_read: v & V_SL_R != 0,
        write: v & V_SL_W != 0,
        exec: v & V_SL_X != 0,
    }
}

/// Whether a write may use the value word without a walk (bit 6).
#[inline(always)]
pub(crate) fn value_is_dirty(v: u64) -> bool {
    v & V_DIRTY != 0
}

/// The page-size code of a value word (bits 8:7).
#[inline(always)]
pub(crate) fn value_size_code(v: u64) -> u64 {
    v >> V_SIZE_SHIFT & 3
}

/// The page size of a size code: 4 KiB, 2 MiB or 1 GiB.
#[inline(always)]
pub(crate) fn size_of_code(code: u64) -> u64 {
    1 << (12 + 9 * code)
}

/// `mask` when `on`, else 0.
#[inline(always)]
pub(crate) fn flag(on: bool, mask: u64) -> u64 {
    if on {
        mask
    } else {
        0
    }
}

// Permission nibble, as reported to a requester (front-cache control word and device-TLB
// value word): read, write, execute, user.

/// Permission nibble: read (bit 0).
pub(crate) const P_READ: u64 = 1 << 0;
/// Permission nibble: write (bit 1).
pub(crate) const P_WRITE: u64 = 1 << 1;
/// Permission nibble: execute (bit 2).
pub(crate) const P_EXEC: u64 = 1 << 2;
/// Permission nibble: user (bit 3).
pub(crate) const P_USER: u64 = 1 << 3;

// Front-cache control word: bits 7:0 = access kinds allowed without a walk (bit
// [`crate::fault::Access::kind`]), then the permission nibbles reported to user (11:8) and to
// privileged (15:12) requests, then RID_PRIV (bit 16).

/// Shift of the permission nibble reported to user requests.
pub(crate) const F_PERMS_USER: u64 = 8;
/// Shift of the permission nibble reported to privileged requests.
pub(crate) const F_PERMS_PRIV: u64 = 12;
/// Requests without PASID are privileged (the context entry's RID_PRIV).
pub(crate) const F_RID_PRIV: u64 = 1 << 16;

/// The bits of an IOTLB value word a front-cache control word depends on (besides the
/// interrupt range): the rights of both levels and the dirty bit (6:0).
pub(crate) const FRONT_CTRL_VALUE_BITS: u64 = 0x7f;
/// Marks a computed entry of the control-word memo (bit 31; control words use 16:0).
pub(crate) const FRONT_CTRL_KNOWN: u64 = 1 << 31;
/// Entries of the control-word memo: 2 bits of translation type, 7 value bits, 3 controls.
const FRONT_CTRL_MEMO: usize = 1 << 12;

/// Index in the control-word memo of a translation of type `pgtt` with value word `v` under
/// controls `c`: type (bits 11:10), value bits 6:0 (bits 9:3), SRE, WPE, execute (2:0).
#[inline(always)]
pub(crate) fn front_ctrl_index(pgtt: Pgtt, v: u64, c: FlControls) -> usize {
    ((pgtt as usize & 3) << 10)
        | ((v & FRONT_CTRL_VALUE_BITS) as usize) << 3
        | usize::from(c.sre) << 2
        | usize::from(c.wpe) << 1
        | usize::from(c.ers)
}

/// Value word of a paging-structure-cache entry: the level-1 table's address (bits 63:12) and
/// the rights of the levels above it: write (bit 0), user or read (bit 1), execute (bit 2).
#[inline(always)]
pub(crate) fn psc_value(table: u64, r: Rights) -> u64 {
    table | flag(r.write, V_FL_W) | flag(r.user_or_read, V_FL_U) | flag(r.exec, V_FL_X)
}

/// Where a walk resumes from a paging-structure-cache value word (see [`psc_value`]).
#[inline(always)]
pub(crate) fn psc_start(v: u64) -> WalkStart {
    WalkStart {
        level: 1,
        table: value_page(v),
        rights: value_fl_rights(v),
    }
}

/// Key word of a PASID-cache entry: PASID key (bits 32:12) | valid.
#[inline(always)]
pub(crate) fn pasid_cache_key(pasid: Option<u32>) -> u64 {
    u64::from(pasid_key(pasid)) << 12 | 1
}

/// What a PASID-cache entry keeps besides the entry's words: the PASID used, and the bits of
/// the context entry (and the FPD bits of the chain) that requests need. Held as the entry's
/// last word (a hit copies one word; each flag is read from it where it is used): PASID
/// (bits 27:8), DTE (bit 3), context FPD (bit 2), RID_PRIV (bit 1), FPD (bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PasidFlags(u64);

impl PasidFlags {
    /// `pasid`: the PASID whose entry was used (RID_PASID for requests without PASID);
    /// `fpd`: an FPD bit is set in the context, directory or PASID entry; `ctx_fpd`: the
    /// context entry's FPD alone (for faults found at the context entry); `rid_priv` and
    /// `dte`: the context entry's RID_PRIV and DTE.
    pub(crate) fn new(pasid: u32, fpd: bool, ctx_fpd: bool, rid_priv: bool, dte: bool) -> Self {
        Self(
            u64::from(fpd)
                | u64::from(rid_priv) << 1
                | u64::from(ctx_fpd) << 2
                | u64::from(dte) << 3
                | u64::from(pasid) << 8,
        )
    }

    /// The last word of a PASID-cache entry.
    #[inline(always)]
    pub(crate) fn pack(self) -> u64 {
        self.0
    }

    /// The flags of the last word of a PASID-cache entry (the inverse of [`Self::pack`]).
    #[inline(always)]
    pub(crate) fn unpack(w: u64) -> Self {
        Self(w)
    }

    /// The PASID whose entry was used (RID_PASID for requests without PASID).
    #[inline(always)]
    pub(crate) fn pasid(self) -> u32 {
        (self.0 >> 8) as u32
    }
    /// An FPD bit is set in the context, directory or PASID entry.
    #[inline(always)]
    pub(crate) fn fpd(self) -> bool {
        self.0 & 1 != 0
    }
    /// The context entry's RID_PRIV.
    #[inline(always)]
    pub(crate) fn rid_priv(self) -> bool {
        self.0 & 2 != 0
    }
    /// The context entry's FPD alone (for faults found at the context entry).
    #[inline(always)]
    pub(crate) fn ctx_fpd(self) -> bool {
        self.0 & 4 != 0
    }
    /// The context entry's DTE: translation requests (ATS) allowed.
    #[inline(always)]
    pub(crate) fn dte(self) -> bool {
        self.0 & 8 != 0
    }
}

/// The PASID part of a front-cache, PASID-cache or device-TLB key: the PASID's 20 bits, or
/// [`NO_PASID`] for a request without PASID.
#[inline(always)]
pub(crate) fn pasid_key(pasid: Option<u32>) -> u32 {
    pasid.map_or(NO_PASID, |p| p & 0xf_ffff)
}

/// Tag word of a front-cache or device-TLB entry: source id (bits 36:21) | PASID key (20:0).
#[inline(always)]
pub(crate) fn device_tag(sid: u16, pasid_key: u32) -> u64 {
    u64::from(sid) << 21 | u64::from(pasid_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_gives_stable_distinct_records() {
        let r: Radix<PasidGens> = Radix::new();
        r.get(5).iotlb.bump();
        assert_eq!(r.get(5).iotlb.get(), 1);
        assert_eq!(r.get(6).iotlb.get(), 0);
        r.get(0xf_ffff).pc.bump();
        assert_eq!(r.get(0xf_ffff).pc.get(), 1);
        assert!(std::ptr::eq(r.get(77), r.get(77)));
    }

    #[test]
    fn keys_separate_sizes_and_tags() {
        assert_ne!(page_key(0x20_0000, 0), page_key(0x20_0000, 1));
        assert_eq!(page_key(0x20_1234, 1), page_key(0x20_0000, 1));
        assert_ne!(tag_key(1, 2), tag_key(2, 1));
        assert_ne!(tag_key(1, NO_PASID), tag_key(1, 0));
        assert_eq!(pack(1, 2), 0x2_0000_0001);
    }

    #[test]
    fn range_removal_covers_every_size() {
        let c = Caches::new(8, 1024);
        let tag = tag_key(3, 4);
        for (addr, code) in [
            (0x1000u64, 0u64),
            (0x20_0000, 1),
            (0x4000_0000, 2),
            (0x3000, 0),
        ] {
            c.iotlb.insert(page_key(addr, code), tag, [0; 4], || true);
        }
        Caches::remove_range(&c.iotlb, tag, 0x1000, 0x1000, 0b111);
        assert!(c.iotlb.lookup(page_key(0x1000, 0), tag).is_none());
        assert!(
            c.iotlb.lookup(page_key(0x3000, 0), tag).is_some(),
            "outside the range"
        );
        assert!(c.iotlb.lookup(page_key(0x20_0000, 1), tag).is_some());
        Caches::remove_range(&c.iotlb, tag, 0x4010_0000, 0x1000, 0b111);
        assert!(
            c.iotlb.lookup(page_key(0x4000_0000, 2), tag).is_none(),
            "1 GiB page covering it"
        );
        Caches::remove_range(&c.iotlb, tag, 0x3f_f000, 0x2000, 0b010);
        assert!(c.iotlb.lookup(page_key(0x20_0000, 1), tag).is_none());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The generation / epoch scheme: a translation filled by a walk that raced an
    //! invalidation is never served after the invalidation returns, neither by the IOTLB
    //! (stamped with the scope's generation read before the walk) nor by the front cache
    //! (stamped with the epoch read before the walk, and inserted only while the epoch is
    //! unchanged).
    use super::Gen;
    use crate::slots::SlotArray;
    use loom::sync::atomic::{AtomicBool, AtomicU64};
    use loom::sync::Arc;
    use loom::thread;
    use std::sync::atomic::Ordering;

    const KEY: (u64, u64) = (7, 1);

    #[test]
    fn loom_invalidation_retires_a_racing_fill() {
        loom::model(|| {
            let mapping = Arc::new(AtomicU64::new(1)); // the page-table entry: old output 1
            let gen = Arc::new(Gen::default());
            let epoch = Arc::new(AtomicU64::new(0));
            let iotlb = Arc::new(SlotArray::<2>::new(4));
            let front = Arc::new(SlotArray::<2>::new(4));
            let (m, g, e, it, fr) = (
                mapping.clone(),
                gen.clone(),
                epoch.clone(),
                iotlb.clone(),
                front.clone(),
            );
            let translator = thread::spawn(move || {
                // Stamps first, then the walk, then the fills (as `translate` does).
                let seen_epoch = e.load(Ordering::Acquire);
                let seen_gen = u64::from(g.get());
                let out = m.load(Ordering::Acquire);
                it.insert(KEY.0, KEY.1, [seen_gen, out], || true);
                fr.insert(KEY.0, KEY.1, [seen_epoch, out], || {
                    e.load(Ordering::Acquire) == seen_epoch
                });
            });
            // The guest remaps, then invalidates: scoped generation first, epoch last.
            mapping.store(2, Ordering::Release);
            gen.bump();
            epoch.fetch_add(1, Ordering::AcqRel);
            translator.join().unwrap();
            if let Some([g, out]) = iotlb.lookup(KEY.0, KEY.1) {
                if g == u64::from(gen.get()) {
                    assert_eq!(out, 2, "the IOTLB served a translation invalidated before");
                }
            }
            if let Some([e, out]) = front.lookup(KEY.0, KEY.1) {
                if e == epoch.load(Ordering::Acquire) {
                    assert_eq!(
                        out, 2,
                        "the front cache served a translation invalidated before"
                    );
                }
            }
        });
    }
    /// The front cache and a device's ATS flag (see `Iommu::front_fill_epoch`): a
    /// translation of the device racing the attach that sets its flag (it read the flag
    /// clear, so it fills the front cache) never leaves an entry that a lookup after the
    /// attach, which does not test the flag, would use.
    #[test]
    fn loom_ats_enable_keeps_front_fills_out() {
        loom::model(|| {
            let ats = Arc::new(AtomicBool::new(false));
            let epoch = Arc::new(AtomicU64::new(0));
            let front = Arc::new(SlotArray::<2>::new(4));
            let (a, e, fr) = (ats.clone(), epoch.clone(), front.clone());
            let translator = thread::spawn(move || {
                // `translate`: the epoch, then (after the front miss and the walk) the flag,
                // then the fill, which re-checks the epoch while holding its slot.
                let seen = e.load(Ordering::Acquire);
                if !a.load(Ordering::Acquire) {
                    fr.insert(KEY.0, KEY.1, [seen, 1], || {
                        e.load(Ordering::Acquire) == seen
                    });
                }
            });
            // `attach_device` with ATS: the flag first, then the epoch.
            ats.store(true, Ordering::Release);
            epoch.fetch_add(1, Ordering::AcqRel);
            // A lookup after the attach (while the translation may still run, and after it).
            let no_hit = || {
                let now = epoch.load(Ordering::Acquire);
                if let Some([e, _]) = front.lookup(KEY.0, KEY.1) {
                    assert_ne!(e, now, "the front cache would serve a device with ATS");
                }
            };
            no_hit();
            translator.join().unwrap();
            no_hit();
        });
    }
}
