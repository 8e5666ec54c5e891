//! The nested HWPT whose one-entry `IOMMU_HWPT_INVALIDATE` needs no table lock: its id, its
//! domain id and its one PASID in one atomic word, read by the byte-level entry's fast path
//! instead of a lookup under the context's lock.
//!
//! The word is written only under the table lock, from what the table holds then, and
//! cleared by every later taking of that lock (`IommufdCtx::lock`), before the holder can
//! change anything: it never names a target the table has changed since. A call that reads
//! it while another thread changes the table is concurrent with that change, and may apply
//! its request as of just before it — which at worst invalidates a translation of a PASID
//! or domain that has just gone, what an invalidation may always do.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the PASID in the word (VT-d's PASID width).
const PASID_BITS: u32 = 20;
/// Where the domain id starts.
const DID_SHIFT: u32 = PASID_BITS;
/// Where the "named" bit is, above the 16-bit domain id; the HWPT id is above it, so ids
/// below 2^27 fit. The id and the bit are compared as one number ([`named`]), which the
/// empty word (0) never equals.
const NAMED_SHIFT: u32 = DID_SHIFT + 16;

/// (HWPT id, domain id, PASID) of one nested HWPT with exactly one target (one PASID, or
/// requests without PASID as 0, and no device TLB), or 0 for none.
#[derive(Debug, Default)]
pub(crate) struct InvTarget(AtomicU64);

impl InvTarget {
    /// Forgets the target. `IommufdCtx::lock` calls it on every taking of the lock.
    #[inline(always)]
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// Names nested HWPT `id` (domain `did`, its one target `pasid`); the caller holds the
    /// table lock and has just read these from the table. Ids and PASIDs that do not fit
    /// the word are not named (their calls take the lock).
    #[inline]
    pub(crate) fn set(&self, id: u32, did: u16, pasid: u32) {
        if id != 0 && u64::from(id) >> (63 - NAMED_SHIFT) == 0 && pasid >> PASID_BITS == 0 {
            let word = named(id) << NAMED_SHIFT | u64::from(did) << DID_SHIFT | u64::from(pasid);
            self.0.store(word, Ordering::Relaxed);
        }
    }

    /// The domain id and PASID of nested HWPT `id` if it is the one named.
    #[inline(always)]
    pub(crate) fn get(&self, id: u32) -> Option<(u16, u32)> {
        let word = self.0.load(Ordering::Relaxed);
        if word >> NAMED_SHIFT == named(id) {
            Some((
                (word >> DID_SHIFT) as u16,
                (word & ((1 << PASID_BITS) - 1)) as u32,
            ))
        } else {
            None
        }
    }
}

/// The word's bits from [`NAMED_SHIFT`] up for HWPT `id`: the id, and the "named" bit below
/// it.
#[inline(always)]
fn named(id: u32) -> u64 {
    u64::from(id) * 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_one_hwpt_until_cleared() {
        let t = InvTarget::default();
        assert_eq!(t.get(0), None);
        t.set(7, 0xbeef, 0xf_ffff);
        assert_eq!(t.get(7), Some((0xbeef, 0xf_ffff)));
        assert_eq!(t.get(8), None);
        assert_eq!(t.get(0), None);
        t.clear();
        assert_eq!(t.get(7), None);
    }

    #[test]
    fn what_does_not_fit_is_not_named() {
        let t = InvTarget::default();
        t.set(1 << 27, 1, 1);
        assert_eq!(t.get(1 << 27), None);
        t.set((1 << 27) - 1, 2, 3);
        assert_eq!(t.get((1 << 27) - 1), Some((2, 3)));
        assert_eq!(t.get(u32::MAX), None);
        t.clear();
        assert_eq!(t.get(0), None);
        t.set(3, 1, 1 << 20);
        assert_eq!(t.get(3), None);
        t.set(0, 1, 1);
        assert_eq!(t.get(0), None);
    }
}
