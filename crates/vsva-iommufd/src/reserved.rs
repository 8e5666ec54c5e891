//! An IOAS's reserved IOVA ranges (Linux's `iopt->reserved_itree`, `io_pagetable.c`): IOVAs
//! no mapping may use, each range with the owner that reserved it and takes it back.
//!
//! Two owners reserve here, as in Linux:
//!
//! * the IOAS's stage 2: everything past what it translates, `[2^width, u64::MAX]` (Linux's
//!   `iopt_table_add_domain` reserves outside the domain's aperture, owned by the domain; an
//!   IOAS here always has its stage 2, so this range is there from `IOMMU_IOAS_ALLOC` to its
//!   destruction);
//! * a device attached without PASID to the IOAS, or to an HWPT over it: its reserved regions
//!   (`iopt_table_enforce_dev_resv_regions`, owner the device). For a VT-d device that is the
//!   interrupt window ([`DEVICE_RESV_REGIONS`]). Two devices reserving the same window each
//!   own an entry, and the window stays until the last one goes.
//!
//! Everything that asks whether an IOVA is reserved asks here: a fixed map or copy
//! (`iopt_check_iova`: `EINVAL`), the IOVA an unfixed one picks (`iopt_alloc_iova` skips
//! reserved ranges), `IOMMU_IOAS_IOVA_RANGES` (the holes between reserved ranges),
//! `IOMMU_IOAS_ALLOW_IOVAS` (`iopt_set_allow_iova`: an allowed range over a reserved one is
//! `EADDRINUSE`), and a reservation itself (`iopt_reserve_iova`: over a mapping or an allowed
//! range, `EADDRINUSE`).

use vsva_iommu::{SourceId, INTERRUPT_RANGE};

/// The reserved regions the VT-d driver reports for a device
/// (`intel_iommu_get_resv_regions`, drivers/iommu/intel/iommu.c), as `(start, last)`: the
/// interrupt window `IOAPIC_RANGE_START..=IOAPIC_RANGE_END` (`0xfee00000..=0xfeefffff`,
/// `IOMMU_RESV_MSI`: DMA writes there are interrupt requests, never memory), the same for
/// every device. The driver adds the RMRRs naming the device (vsva's platform has none) and,
/// for an ISA bridge, a `IOMMU_RESV_DIRECT_RELAXABLE` first 16 MiB, which iommufd skips; no
/// PCI function of vsva is an ISA bridge.
pub(crate) const DEVICE_RESV_REGIONS: [(u64, u64); 1] = [INTERRUPT_RANGE];

/// Why an IOVA range overlapping a device's reservation is refused (a fixed map or copy, an
/// allowed range).
pub(crate) const RESERVED_WINDOW: &str = "the range overlaps the interrupt window \
     0xfee00000..=0xfeefffff, reserved while a device is attached without PASID";

/// Why a device's attach is refused when a mapping lies in its window.
pub(crate) const MAPPING_OVER_WINDOW: &str =
    "a mapping of the IOAS overlaps the device's interrupt window 0xfee00000..=0xfeefffff";

/// Why a device's attach is refused when an allowed range reaches into its window.
pub(crate) const ALLOWED_OVER_WINDOW: &str = "an allowed IOVA range of the IOAS overlaps the \
     device's interrupt window 0xfee00000..=0xfeefffff";

/// Who reserved a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The IOAS's stage 2: what it cannot translate.
    Stage2,
    /// This device (Linux: its `struct device`), attached without PASID.
    Device(SourceId),
}

/// One reserved range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReservedRange {
    pub(crate) start: u64,
    pub(crate) last: u64,
    pub(crate) owner: Owner,
}

/// An IOAS's reserved ranges, sorted by start. They may overlap one another (two devices
/// reserving the same window); a mapping never overlaps any of them. An IOAS holds a handful
/// (its stage 2's, one per attached device), so a vector searched in order is the tree.
#[derive(Debug)]
pub(crate) struct Reserved {
    ranges: Vec<ReservedRange>,
}

impl Reserved {
    /// The ranges of a new IOAS whose stage 2 translates `width` bits: everything above.
    pub(crate) fn new(width: u8) -> Self {
        let mut reserved = Reserved { ranges: Vec::new() };
        if let Some(top) = 1u64.checked_shl(width.into()) {
            reserved.insert(top, u64::MAX, Owner::Stage2);
        }
        reserved
    }

    /// The first range (by start) intersecting `[first, last]`
    /// (`iopt_reserved_iter_first`).
    #[inline]
    pub(crate) fn first_overlap(&self, first: u64, last: u64) -> Option<&ReservedRange> {
        self.ranges
            .iter()
            .find(|r| r.start <= last && first <= r.last)
    }

    /// The ranges intersecting `[first, last]`, by start.
    pub(crate) fn overlapping(
        &self,
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = &ReservedRange> + '_ {
        self.ranges
            .iter()
            .take_while(move |r| r.start <= last)
            .filter(move |r| first <= r.last)
    }

    /// Records `[start, last]` for `owner` (the tail of `iopt_reserve_iova`; the caller made
    /// its checks).
    pub(crate) fn insert(&mut self, start: u64, last: u64, owner: Owner) {
        debug_assert!(start <= last);
        let at = self.ranges.partition_point(|r| r.start <= start);
        self.ranges.insert(at, ReservedRange { start, last, owner });
    }

    /// Takes out every range of `owner` (`__iopt_remove_reserved_iova`); returns how many.
    pub(crate) fn remove_owner(&mut self, owner: Owner) -> usize {
        let before = self.ranges.len();
        self.ranges.retain(|r| r.owner != owner);
        before - self.ranges.len()
    }

    /// The holes between the reserved ranges over the whole IOVA space, by IOVA, inclusive:
    /// what `IOMMU_IOAS_IOVA_RANGES` reports (`interval_tree_for_each_span` over the
    /// reserved tree from 0 to `ULONG_MAX`, its holes). Overlapping and touching ranges
    /// count as one span.
    pub(crate) fn holes(&self) -> Vec<(u64, u64)> {
        let mut holes = Vec::new();
        // The first IOVA not yet known to be reserved; `None` once the space is covered.
        let mut next = Some(0u64);
        for r in &self.ranges {
            let Some(from) = next else {
                break;
            };
            if r.start > from {
                holes.push((from, r.start - 1));
            }
            if r.last >= from {
                next = r.last.checked_add(1);
            }
        }
        if let Some(from) = next {
            holes.push((from, u64::MAX));
        }
        holes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: (u64, u64) = INTERRUPT_RANGE;

    /// The refusals name the window [`DEVICE_RESV_REGIONS`] holds.
    #[test]
    fn the_messages_name_the_window() {
        let [(lo, hi)] = DEVICE_RESV_REGIONS;
        let named = format!("{lo:#x}..={hi:#x}");
        for m in [RESERVED_WINDOW, MAPPING_OVER_WINDOW, ALLOWED_OVER_WINDOW] {
            assert!(m.contains(&named), "{m}");
        }
    }

    /// A 48-bit IOAS reserves everything from 2^48 on, and nothing below.
    #[test]
    fn a_new_ioas_reserves_past_its_stage_2() {
        let r = Reserved::new(48);
        assert_eq!(r.holes(), [(0, (1 << 48) - 1)]);
        assert!(r.first_overlap(0, (1 << 48) - 1).is_none());
        assert_eq!(
            r.first_overlap(1 << 48, 1 << 48).map(|r| r.owner),
            Some(Owner::Stage2)
        );
        // A stage 2 of the whole space reserves nothing.
        assert_eq!(Reserved::new(64).holes(), [(0, u64::MAX)]);
    }

    /// The interrupt window splits the usable space in two; two devices owning the same
    /// window give the same holes, and the window stays until the last one goes.
    #[test]
    fn shared_windows_merge_and_stay_until_the_last_owner_goes() {
        let mut r = Reserved::new(48);
        let (lo, hi) = WINDOW;
        let split = [(0, lo - 1), (hi + 1, (1 << 48) - 1)];
        r.insert(lo, hi, Owner::Device(SourceId(3)));
        assert_eq!(r.holes(), split);
        r.insert(lo, hi, Owner::Device(SourceId(4)));
        assert_eq!(r.holes(), split);
        assert_eq!(r.remove_owner(Owner::Device(SourceId(3))), 1);
        assert_eq!(r.holes(), split, "device 4 still holds the window");
        assert_eq!(
            r.first_overlap(lo + 0x1000, lo + 0x1fff).map(|r| r.owner),
            Some(Owner::Device(SourceId(4)))
        );
        assert_eq!(r.remove_owner(Owner::Device(SourceId(4))), 1);
        assert_eq!(r.remove_owner(Owner::Device(SourceId(4))), 0);
        assert_eq!(r.holes(), [(0, (1 << 48) - 1)]);
    }

    /// Ranges touching or overlapping each other are one span; ranges at 0 and at the top
    /// leave no hole there.
    #[test]
    fn holes_merge_touching_and_overlapping_ranges() {
        let mut r = Reserved::new(64);
        r.insert(0, 0xfff, Owner::Device(SourceId(1)));
        r.insert(0x1000, 0x1fff, Owner::Device(SourceId(2)));
        r.insert(0x1800, 0x2fff, Owner::Device(SourceId(3)));
        r.insert(0x8000, 0x8fff, Owner::Device(SourceId(4)));
        r.insert(u64::MAX - 0xfff, u64::MAX, Owner::Device(SourceId(5)));
        assert_eq!(r.holes(), [(0x3000, 0x7fff), (0x9000, u64::MAX - 0x1000)]);
        let hit: Vec<_> = r.overlapping(0x1fff, 0x8000).map(|r| r.start).collect();
        assert_eq!(hit, [0x1000, 0x1800, 0x8000]);
    }
}
