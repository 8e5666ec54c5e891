//! The releaser thread: finishing releases away from locks and workers.
//!
//! Closing a connection closes its containers and its iommufd context (which detaches its
//! devices); releasing a process (its last connection closed, an admin force-released it,
//! its hold after a restart expired) also drops the daemon's reference on its PASID
//! context. Both wait: a container's teardown and the allocator's teardown of each
//! PASID invalidate what devices may cache, and return only when every device process
//! acknowledged or was fenced (up to `limits.invalidation_timeout_ms`). So a release is done
//! in two steps: under the registry and process locks the registry records it and takes what
//! must be closed; with no lock held, a releaser thread of its own closes and frees it (one
//! per release, so a release waits only for its own devices). A connection worker, which
//! serves many connections, never waits for a device on a release.
//!
//! # Never report done with a stale device TLB
//!
//! Until its release is finished a released process still owns its PASIDs: the allocator
//! gives a PASID to no one else until its teardown (device acknowledgements or fences) is
//! over. A new connection of the same process waits in its hello until the release is
//! finished ([`Releases::lock_after`]), so it never picks up the context being torn down.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};

use vsva_vfio::ProcessToken;

use super::{lock, Daemon};

/// Work for a releaser thread.
pub(super) type Job = Box<dyn FnOnce(&Daemon) + Send>;

/// The processes whose release is not finished, and the daemon the releaser threads serve.
#[derive(Default)]
pub(super) struct Releases {
    daemon: OnceLock<Weak<Daemon>>,
    /// Processes taken out of the registry whose release is not finished, by how many such
    /// releases there are. A leaf lock.
    pending: Mutex<HashMap<ProcessToken, u32>>,
    finished: Condvar,
}

impl Releases {
    /// Names the daemon whose releases the threads run (once, when it starts).
    pub(super) fn serve(&self, daemon: Weak<Daemon>) {
        let first = self.daemon.set(daemon).is_ok();
        debug_assert!(first, "the releases serve one daemon");
    }

    /// A release of `token` began (the registry lock held): it counts until [`Releases::end`].
    pub(super) fn begin(&self, token: ProcessToken) {
        *lock(&self.pending).entry(token).or_insert(0) += 1;
    }

    /// A release of `token` finished.
    pub(super) fn end(&self, token: ProcessToken) {
        let mut pending = lock(&self.pending);
        if let Some(n) = pending.get_mut(&token) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&token);
            }
        }
        drop(pending);
        self.finished.notify_all();
    }

    /// `registry` locked, once no release of `token` is under way (a release in progress
    /// still holds the process's context, which a new connection must not pick up). Lock
    /// order: `registry`, then this one's leaf lock.
    pub(super) fn lock_after<'a, T>(
        &self,
        registry: &'a Mutex<T>,
        token: ProcessToken,
    ) -> MutexGuard<'a, T> {
        loop {
            let guard = lock(registry);
            let pending = lock(&self.pending);
            if !pending.contains_key(&token) {
                return guard;
            }
            drop(guard);
            let waited = self
                .finished
                .wait_while(pending, |p| p.contains_key(&token))
                .unwrap_or_else(|p| p.into_inner());
            drop(waited);
        }
    }

    /// Runs `job` on a thread of its own (each release waits only for its own devices), or
    /// here, on `here`, if no thread can be started. No lock may be held.
    pub(super) fn run(&self, here: &Daemon, job: Job) {
        let Some(daemon) = self.daemon.get().and_then(Weak::upgrade) else {
            job(here);
            return;
        };
        let slot = Arc::new(Mutex::new(Some(job)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("vsvad-release".into())
            .spawn(move || {
                if let Some(job) = lock(&theirs).take() {
                    job(&daemon);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a releaser thread: releasing here");
            if let Some(job) = lock(&slot).take() {
                job(here);
            }
        }
    }
}
