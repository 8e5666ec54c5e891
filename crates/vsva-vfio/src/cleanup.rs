//! Undo and teardown steps that cannot fail while the crate's invariants hold.

use std::fmt;

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
