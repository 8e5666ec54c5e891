//! Atomic primitives and locks, switched to `loom`'s model-checked versions under
//! `--cfg loom`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
// Reference counts are never on a path the loom models explore.
pub(crate) use std::sync::Arc;

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
///
/// Every critical section in this crate leaves its data consistent before any call that
/// could panic, so a poisoned lock carries no torn state.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
