//! Where a new mapping of an IOAS may go (Linux `io_pagetable.c`): the IOVA an
//! `IOMMU_IOAS_MAP` or `IOMMU_IOAS_COPY` without `FIXED_IOVA` picks (`iopt_alloc_iova`), and
//! the checks `IOMMU_IOAS_ALLOW_IOVAS` makes of its ranges (`iommufd_ioas_load_iovas`).

use vsva_uapi::iommufd::IommuIovaRange;
use vsva_uapi::Errno;

use crate::error::IommufdError;
use crate::objects::Ioas;

/// The IOVA alignment every map, copy and unmap needs: the stage 2's 4 KiB page.
pub const IOVA_ALIGNMENT: u64 = 4096;

/// The largest IOVA alignment a map or copy without `FIXED_IOVA` takes from the address of
/// the memory it maps, as `iopt_alloc_iova` caps it: x86's `HPAGE_SIZE` (2 MiB) with
/// `CONFIG_TRANSPARENT_HUGEPAGE`, as distribution kernels build it.
///
/// The IOVA picked depends on that address only modulo this value (through its lowest set
/// bit, and its page offset). A caller that names memory by another address than the one
/// its own caller gave — `vsvad` turns a process's `user_va` into where that memory sits in
/// the IOMMU's host memory — picks the IOVA Linux picks for the original address as long as
/// the two addresses are equal modulo this value.
pub const IOVA_ALIGNMENT_MAX: u64 = 2 << 20;

impl Ioas {
    /// A free IOVA for `len` bytes of memory at `uptr`, picked as `iopt_alloc_iova` picks
    /// it: never 0 (the search runs over `[PAGE_SIZE, ULONG_MAX - PAGE_SIZE]`), aligned to
    /// the smallest of `len` rounded up to a power of two, the lowest set bit of `uptr` and
    /// `HPAGE_SIZE`, the first hole that fits by rising IOVA in the allowed ranges (or the
    /// whole space), a hole being free of mappings and of reserved ranges — past the stage
    /// 2, and the interrupt window while a device is attached without PASID
    /// (`interval_tree_for_each_double_span` over the reserved and the area trees).
    ///
    /// # Errors
    ///
    /// `len` ≥ `ULONG_MAX / 2` → `EOVERFLOW`; an alignment below the IOAS's (a `uptr` not
    /// page aligned) → `EINVAL`, naming `field` with `at` (how the caller named the memory);
    /// no hole → `ENOSPC`.
    pub(crate) fn alloc_iova(
        &self,
        uptr: u64,
        len: u64,
        field: &'static str,
        at: u64,
    ) -> Result<u64, IommufdError> {
        if len == 0 || len >= u64::MAX / 2 {
            return Err(IommufdError::Refused {
                field: "length",
                value: len,
                reason: "must be below ULONG_MAX / 2",
                errno: Errno::EOVERFLOW,
            });
        }
        let mut align = len.next_power_of_two();
        if uptr != 0 {
            align = align.min(1 << uptr.trailing_zeros());
        }
        // Capped at HPAGE_SIZE (x86 with CONFIG_TRANSPARENT_HUGEPAGE: 2 MiB).
        align = align.min(IOVA_ALIGNMENT_MAX);
        if align < IOVA_ALIGNMENT {
            return Err(IommufdError::invalid(
                field,
                at,
                "the IOVA alignment it allows is below the IOAS's 4 KiB",
            ));
        }
        let (lo, hi) = (IOVA_ALIGNMENT, u64::MAX - IOVA_ALIGNMENT);
        // The allowed spans (touching ranges merge, as `interval_tree_span_iter` merges
        // them), clipped to [lo, hi].
        let mut spans: Vec<(u64, u64)> = Vec::new();
        if self.allowed.is_empty() {
            spans.push((lo, hi));
        } else {
            for r in &self.allowed {
                match spans.last_mut() {
                    Some(last) if r.start <= last.1.saturating_add(1) => {
                        last.1 = last.1.max(r.last);
                    }
                    _ => spans.push((r.start, r.last)),
                }
            }
            spans.retain_mut(|s| {
                *s = (s.0.max(lo), s.1.min(hi));
                s.0 <= s.1
            });
        }
        // The first aligned start in [start, last] with `len` bytes to `last`.
        let fit = |start: u64, last: u64| -> Option<u64> {
            let s = start.checked_next_multiple_of(align)?;
            (s <= last && last - s >= len - 1).then_some(s)
        };
        for (start, last) in spans {
            let Some(start) = fit(start, last) else {
                continue;
            };
            if let Some(iova) = self.first_hole(start, last, fit) {
                return Ok(iova);
            }
        }
        Err(IommufdError::Refused {
            field: "length",
            value: len,
            reason: "no free IOVA range of this size",
            errno: Errno::ENOSPC,
        })
    }

    /// The first IOVA `fit` accepts in a hole of `[start, last]`: between the reserved
    /// ranges and the mappings there, both taken by rising start (reserved ranges may
    /// overlap one another; a mapping overlaps none of them).
    fn first_hole(
        &self,
        start: u64,
        last: u64,
        fit: impl Fn(u64, u64) -> Option<u64>,
    ) -> Option<u64> {
        let mut reserved = self
            .reserved
            .overlapping(start, last)
            .map(|r| (r.start, r.last))
            .peekable();
        let mut areas = self
            .areas
            .overlapping(start, last)
            .map(|(s, a)| (s, s + (a.len - 1)))
            .peekable();
        // The first IOVA not known to be used.
        let mut cursor = start;
        loop {
            let from_reserved = match (reserved.peek(), areas.peek()) {
                (None, None) => break,
                (Some(r), Some(a)) => r.0 <= a.0,
                (r, _) => r.is_some(),
            };
            let next = if from_reserved {
                reserved.next()
            } else {
                areas.next()
            };
            let Some(used) = next else {
                break;
            };
            if used.0 > cursor {
                if let Some(iova) = fit(cursor, used.0 - 1) {
                    return Some(iova);
                }
            }
            if used.1 >= cursor {
                // Nothing past a range reaching the end of this span (or of the space).
                cursor = used.1.checked_add(1).filter(|&c| c <= last)?;
            }
        }
        fit(cursor, last)
    }
}

/// The checks `iommufd_ioas_load_iovas` makes of each range of `IOMMU_IOAS_ALLOW_IOVAS`, in
/// the array's order: `start >= last`, or overlapping an earlier range → `EINVAL`.
pub(crate) fn check_allowed(ranges: &[IommuIovaRange]) -> Result<(), IommufdError> {
    for (i, r) in ranges.iter().enumerate() {
        if r.start >= r.last {
            return Err(IommufdError::invalid(
                "allowed_iovas[].start",
                r.start,
                "start must be below last",
            ));
        }
        if ranges[..i]
            .iter()
            .any(|p| p.start <= r.last && r.start <= p.last)
        {
            return Err(IommufdError::invalid(
                "allowed_iovas[].start",
                r.start,
                "the range overlaps an earlier one",
            ));
        }
    }
    Ok(())
}
