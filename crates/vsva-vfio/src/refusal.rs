//! Refused NESTING_OPs that still return 0: the series ignores each device's result of an
//! UNBIND_PGTBL and a CACHE_INVLD (v5 10/15 `vfio_dev_unbind_gpasid_fn`, 11/15
//! `vfio_dev_cache_invalidate_fn`), so a caller never learns that its request changed
//! nothing. This file makes the refusal visible elsewhere: a `tracing` warning with the reason
//! and a lock-free counter per (op, reason) that an embedder exports as a metric.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::VfioError;
use crate::types::ContainerId;

/// A NESTING_OP whose refusal is not returned to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusedOp {
    /// `VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL`.
    Unbind,
    /// `VFIO_IOMMU_NESTING_OP_CACHE_INVLD`.
    Invalidate,
}

impl RefusedOp {
    /// Every op, in the order [`RefusalCounts::iter`] reports them.
    pub const ALL: [RefusedOp; 2] = [RefusedOp::Unbind, RefusedOp::Invalidate];

    /// A stable snake-case label for metrics: `unbind`, `invalidate`.
    pub const fn label(self) -> &'static str {
        match self {
            RefusedOp::Unbind => "unbind",
            RefusedOp::Invalidate => "invalidate",
        }
    }
}

/// Why an unbind or invalidation changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The payload failed the IOMMU core's checks (size, version, format, flags, padding,
    /// cache bits, granularity, the granularity/cache pair).
    Malformed,
    /// A field is out of what the IOMMU takes (no PASID flag, a bad granule size or
    /// alignment, a wrapping range).
    Invalid,
    /// The PASID is 0 or at least 2^20.
    PasidOutOfRange,
    /// Another process owns the PASID (`EACCES` had it been returned).
    NotOwned,
    /// Nobody owns the PASID, or it is being torn down (`ENOENT` had it been returned).
    NotAllocated,
    /// The IOMMU refused the request.
    Iommu,
}

impl RefusalReason {
    /// Every reason, in the order [`RefusalCounts::iter`] reports them.
    pub const ALL: [RefusalReason; 6] = [
        RefusalReason::Malformed,
        RefusalReason::Invalid,
        RefusalReason::PasidOutOfRange,
        RefusalReason::NotOwned,
        RefusalReason::NotAllocated,
        RefusalReason::Iommu,
    ];

    /// A stable snake-case label for metrics: `malformed`, `invalid`, `pasid_out_of_range`,
    /// `not_owned`, `not_allocated`, `iommu`.
    pub const fn label(self) -> &'static str {
        match self {
            RefusalReason::Malformed => "malformed",
            RefusalReason::Invalid => "invalid",
            RefusalReason::PasidOutOfRange => "pasid_out_of_range",
            RefusalReason::NotOwned => "not_owned",
            RefusalReason::NotAllocated => "not_allocated",
            RefusalReason::Iommu => "iommu",
        }
    }

    /// The reason an error of the unbind or invalidation path stands for.
    fn of(err: &VfioError) -> Self {
        match err {
            VfioError::Uapi(_) => RefusalReason::Malformed,
            VfioError::InvalidField { .. } => RefusalReason::Invalid,
            VfioError::PasidOutOfRange { .. } => RefusalReason::PasidOutOfRange,
            VfioError::PasidNotOwned { .. } => RefusalReason::NotOwned,
            VfioError::PasidNotAllocated { .. } => RefusalReason::NotAllocated,
            _ => RefusalReason::Iommu,
        }
    }
}

const OPS: usize = RefusedOp::ALL.len();
const REASONS: usize = RefusalReason::ALL.len();

/// The host's refusal counters: one relaxed atomic per (op, reason), no lock.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    counts: [[AtomicU64; REASONS]; OPS],
}

impl Refusals {
    /// Counts and logs a refused `op` on `container`; the caller then returns 0.
    pub(crate) fn record(&self, op: RefusedOp, container: ContainerId, err: &VfioError) {
        let reason = RefusalReason::of(err);
        self.counts[op as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            container = %container,
            op = op.label(),
            reason = reason.label(),
            errno = %err.errno(),
            "NESTING_OP refused and answered 0, as the series does: {err}"
        );
    }

    pub(crate) fn snapshot(&self) -> RefusalCounts {
        let mut counts = [[0; REASONS]; OPS];
        for (row, atomics) in counts.iter_mut().zip(&self.counts) {
            for (count, atomic) in row.iter_mut().zip(atomics) {
                *count = atomic.load(Ordering::Relaxed);
            }
        }
        RefusalCounts { counts }
    }
}

/// A snapshot of the refusal counters since the [`crate::Vfio`] was created: how many
/// UNBIND_PGTBL and CACHE_INVLD requests returned 0 but changed nothing, by reason. Counters
/// only grow; each is read on its own, so a snapshot taken during refusals may be a few counts
/// behind in some cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts {
    counts: [[u64; REASONS]; OPS],
}

impl RefusalCounts {
    /// Refusals of `op` for `reason`.
    pub fn get(&self, op: RefusedOp, reason: RefusalReason) -> u64 {
        self.counts[op as usize][reason as usize]
    }

    /// Refusals of `op`, any reason.
    pub fn total(&self, op: RefusedOp) -> u64 {
        self.counts[op as usize].iter().sum()
    }

    /// Every (op, reason, count), zero counts included, ops and reasons in the order of
    /// [`RefusedOp::ALL`] and [`RefusalReason::ALL`]: what a metrics exporter walks
    /// (`op.label()`, `reason.label()`).
    pub fn iter(&self) -> impl Iterator<Item = (RefusedOp, RefusalReason, u64)> + '_ {
        RefusedOp::ALL.into_iter().flat_map(move |op| {
            RefusalReason::ALL
                .into_iter()
                .map(move |reason| (op, reason, self.get(op, reason)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_the_tables_match_the_enums() {
        for (i, op) in RefusedOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
        }
        for (i, reason) in RefusalReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            assert!(RefusalReason::ALL[i + 1..]
                .iter()
                .all(|r| r.label() != reason.label()));
        }
        assert_eq!(RefusalCounts::default().iter().count(), OPS * REASONS);
    }
}
