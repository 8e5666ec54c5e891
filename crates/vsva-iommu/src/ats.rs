//! The messages of PCIe ATS from the IOMMU to a device that caches translations itself:
//! device-TLB invalidation requests ([`DevTlbInvalidation`]) and their completions
//! ([`Completion`]), and the [`DevTlbSink`] an embedder registers to carry invalidations and
//! page-group responses to its devices. (The answer to a translation request,
//! [`crate::AtsReply`], comes with the IOMMU's side of ATS in `iommu/ats.rs`.)

use crate::fault::SourceId;
use crate::prq::PageResponse;

/// What a device-TLB invalidation covers on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DevTlbScope {
    /// Every translation the device holds, of every PASID.
    All,
    /// Every translation of one PASID (`None`: requests without PASID).
    Pasid(Option<u32>),
    /// The translations of one PASID that overlap `[addr, addr + len)`.
    Range {
        /// The PASID (`None`: requests without PASID).
        pasid: Option<u32>,
        /// First byte covered (page aligned).
        addr: u64,
        /// Bytes covered (a whole number of pages).
        len: u64,
    },
}

impl DevTlbScope {
    /// Whether a translation of `pasid` for the page `[page, page + size)` falls in the scope.
    pub fn covers(&self, pasid: Option<u32>, page: u64, size: u64) -> bool {
        match *self {
            DevTlbScope::All => true,
            DevTlbScope::Pasid(p) => p == pasid,
            DevTlbScope::Range {
                pasid: p,
                addr,
                len,
            } => p == pasid && page < addr.saturating_add(len) && addr < page.saturating_add(size),
        }
    }

    /// The PASID the scope is limited to (`None` for [`DevTlbScope::All`]).
    pub fn pasid(&self) -> Option<Option<u32>> {
        match *self {
            DevTlbScope::All => None,
            DevTlbScope::Pasid(p) | DevTlbScope::Range { pasid: p, .. } => Some(p),
        }
    }
}

/// One device-TLB invalidation request (VT-d's device-TLB and PASID-based device-TLB
/// invalidation descriptors, a PCIe ATS Invalidate Request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevTlbInvalidation {
    /// The device whose translation cache it goes to.
    pub source_id: SourceId,
    /// What it covers.
    pub scope: DevTlbScope,
}

/// How a device answered the invalidations sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// The device dropped every translation the requests cover and acknowledged (a PCIe
    /// Invalidate Completion).
    Done,
    /// The device did not acknowledge within the sink's time-out (VT-d's invalidation
    /// time-out error, ITE). The IOMMU fences it.
    TimedOut,
}

/// Carries device-TLB invalidations and page-group responses from the IOMMU to devices that
/// keep their own translation cache ([`crate::atc::Atc`]), and reports whether each device
/// completed. The embedder implements it (an in-process device, or a daemon that forwards to
/// device processes) and registers it with [`crate::Iommu::set_devtlb_sink`].
///
/// The IOMMU calls it synchronously, after its own caches are invalidated and before the
/// invalidating call returns, never with its control lock held, so other callers' attach,
/// bind and invalidation calls go on while a slow device is waited for. Through the VFIO
/// layer the container's and the owning process's locks may be held: an implementation may
/// call [`crate::Iommu::translate`] and [`crate::Iommu::ats_translate`] (from other threads
/// too) and let devices raise page requests, but must not wait for the VFIO operations of
/// the process whose call is invalidating.
pub trait DevTlbSink: Send + Sync {
    /// Delivers `batch` (every request names a device that may hold a covered translation)
    /// and waits for the devices, each for at most the sink's own time-out. Returns one
    /// completion per device of the batch; a device missing from the answer counts as
    /// [`Completion::TimedOut`]. It must never wait without bound.
    fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)>;

    /// Delivers a page-group response to the device it names (the device then retries or
    /// fails the requests of the group). Must not block on the device.
    fn page_response(&self, resp: PageResponse);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_cover_what_they_name() {
        let range = DevTlbScope::Range {
            pasid: Some(3),
            addr: 0x2000,
            len: 0x2000,
        };
        let cases = [
            (DevTlbScope::All, Some(9), 0x0, 0x1000, true),
            (DevTlbScope::Pasid(Some(3)), Some(3), 0x9000, 0x1000, true),
            (DevTlbScope::Pasid(Some(3)), None, 0x9000, 0x1000, false),
            (DevTlbScope::Pasid(None), None, 0x9000, 0x1000, true),
            (range, Some(3), 0x1000, 0x1000, false),
            (range, Some(3), 0x3000, 0x1000, true),
            (range, Some(3), 0x4000, 0x1000, false),
            (range, Some(4), 0x2000, 0x1000, false),
            // A 2 MiB page that contains the range.
            (range, Some(3), 0x0, 0x20_0000, true),
        ];
        for (scope, pasid, page, size, want) in cases {
            assert_eq!(
                scope.covers(pasid, page, size),
                want,
                "{scope:?} {pasid:?} {page:#x}"
            );
        }
        assert_eq!(range.pasid(), Some(Some(3)));
        assert_eq!(DevTlbScope::All.pasid(), None);
    }
}
