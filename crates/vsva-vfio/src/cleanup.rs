//! Undo and teardown steps that cannot fail while the crate's invariants hold, and the
//! device-TLB time-outs the VFIO paths pass over.

use std::fmt;

use vsva_iommu::IommuError;

/// Checks the result of an undo or teardown step that cannot fail while the crate's
/// invariants hold (clearing an entry this crate wrote, detaching a device it attached,
/// invalidating a domain id it owns). A failure means an invariant broke: it is logged with
/// what was being done, and stops a debug build.
#[track_caller]
pub(crate) fn must_succeed<T, E: fmt::Display>(step: &'static str, result: Result<T, E>) {
    if let Err(error) = result {
        tracing::error!(step, %error, "an undo or teardown step failed; IOMMU state may be left behind");
        debug_assert!(false, "{step}: {error}");
    }
}

/// An invalidation's result with a device-TLB time-out counted as done: the IOMMU has
/// invalidated its own caches, every other device completed, and the devices that did not are
/// fenced (their translation requests refused, a fault record naming each). The VFIO uAPI
/// paths (CACHE_INVLD, UNBIND, UNMAP_DMA, teardown) answer as the kernel does there: its
/// callers of `qi_submit_sync` discard the time-out. The fence is logged here.
pub(crate) fn fenced_is_done(
    step: &'static str,
    result: Result<(), IommuError>,
) -> Result<(), IommuError> {
    match result {
        Err(IommuError::DevTlbTimeout { fenced }) => {
            tracing::warn!(
                step,
                ?fenced,
                "devices did not complete a device-TLB invalidation and are fenced"
            );
            Ok(())
        }
        other => other,
    }
}
