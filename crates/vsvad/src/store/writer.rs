//! The group commit: whoever holds the writer — the first waiter whose record is queued, or
//! the writer thread — takes every record queued since the last batch, writes them with one
//! `pwrite(2)` over the log's preallocated zeros and (in `Sync` mode) one `fdatasync`, then
//! wakes their waiters; it compacts the log when it is mostly history.
//!
//! # Failures
//!
//! A batch whose write or sync fails is not acknowledged: its waiters get the error
//! (`ENOSPC` for a full disk, `EIO` otherwise) and the daemon undoes its allocations. After
//! a failed `fdatasync` nothing written since the last good sync can be trusted to be on disk
//! — the kernel may have dropped those dirty pages and a second `fdatasync` would report
//! success — so the writer never syncs that file again: it rewrites the whole log from its
//! in-memory state (temporary file, sync, rename, directory sync). Until a rewrite succeeds,
//! every batch fails at once and keeps its records that cannot be undone (frees, releases,
//! quota changes, which already happened in memory); the rewrite includes them. The daemon
//! keeps serving requests that change nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vsva_proto::Errno;

use super::log::{write_snapshot, LogFile};
use super::record::Record;
use super::state::StoreState;
use super::{
    errno_of, io_err, lock_ignoring_poison, Shared, StoreError, COMPACT_BYTES, FAILED_KEPT,
    LOG_NAME,
};
use crate::config::Durability;
use crate::metrics::Metrics;

/// How often a writer whose disk refused a batch tries to rewrite the log when no new batch
/// arrives.
const RETRY: Duration = Duration::from_millis(500);

/// The writer: the open log and the state it holds (kept to compact it), locked by whoever
/// commits the next batch — a waiter or the writer thread.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) log: LogFile,
    pub(super) dir: PathBuf,
    /// Everything in the log (and, while `broken`, the changes that must still reach it).
    pub(super) state: StoreState,
    pub(super) instance: u64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) last_sync: Instant,
    pub(super) unsynced: bool,
    /// Why the open log cannot be trusted any more: it must be rewritten before anything
    /// else is written.
    pub(super) broken: Option<(Errno, String)>,
    /// The shutdown's last batch is committed: nothing more is written.
    pub(super) finished: bool,
}

/// The writer thread: commits what nobody waits for (records appended with
/// [`Store::append_unwaited`](super::Store::append_unwaited)), syncs in the background in
/// `Async` mode, retries a log the disk refused, and makes the final commit at shutdown.
/// Waited-for records are usually committed by their first waiter instead (see
/// [`Writer::commit_queued`]).
pub(super) fn run(writer: Arc<Mutex<Writer>>, shared: Arc<Shared>) {
    loop {
        // Read afresh each time: a waiter's commit may have changed what is owed.
        let timeout = {
            let w = lock_ignoring_poison(&writer);
            if w.broken.is_some() {
                RETRY
            } else if w.unsynced {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(3600)
            }
        };
        {
            let mut q = lock_ignoring_poison(&shared.queue);
            if q.buf.is_empty() && !q.shutdown && !q.upkeep {
                q = shared
                    .work
                    .wait_timeout(q, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            // Woken only to learn that upkeep is owed: sleep again with the timeout for it.
            if std::mem::take(&mut q.upkeep) && q.buf.is_empty() && !q.shutdown {
                continue;
            }
        }
        // Records to write, a shutdown, or a timeout (the upkeep is due).
        if lock_ignoring_poison(&writer).commit_queued() {
            return;
        }
    }
}

impl Writer {
    /// Commits everything queued as one batch (all of it, whoever appended it): writes it,
    /// syncs it in `Sync` mode, settles its waiters, then compacts the log if it is mostly
    /// history. With nothing queued it still does the upkeep: the background sync of `Async`
    /// mode and the rewrite of a log the disk refused. Called with the writer locked, by the
    /// writer thread or by a waiter whose record is queued (the leader of the group commit:
    /// it saves the hand-over to the thread and back). Returns `true` once the queue has
    /// been shut down and its last batch committed; after that it does nothing.
    pub(super) fn commit_queued(&mut self) -> bool {
        if self.finished {
            return true;
        }
        let owed_before = self.unsynced || self.broken.is_some();
        let (buf, first, records, last, shutdown) = {
            let mut q = lock_ignoring_poison(&self.shared.queue);
            let records = std::mem::take(&mut q.records);
            (
                std::mem::take(&mut q.buf),
                q.last + 1 - records.len() as u64,
                records,
                q.last,
                q.shutdown,
            )
        };
        if self.broken.is_some() {
            self.recover();
        }
        let result = match &self.broken {
            Some((errno, why)) => Err(StoreError::Failed {
                errno: *errno,
                message: format!("the log cannot be written: {why}"),
            }),
            None => self.commit(&buf, &records, shutdown),
        };
        match result {
            Ok(()) => self.settle(last, None),
            Err(e) => {
                let (errno, message) = (e.errno(), e.to_string());
                if self.broken.is_none() {
                    tracing::error!(error = %message, "store write failed; changes are refused until the log is rewritten");
                    self.broken = Some((errno, message.clone()));
                }
                // Changes that already happened in memory must still reach the log.
                for r in records
                    .iter()
                    .filter(|r| !matches!(r, Record::Alloc { .. }))
                {
                    self.state.apply(r);
                }
                self.settle(last, Some((first, errno, message)));
            }
        }
        if shutdown {
            if self.broken.is_some() {
                self.recover();
            }
            self.finished = true;
            return true;
        }
        if self.broken.is_none() {
            if let Err(e) = self.maybe_compact() {
                tracing::warn!(error = %e, "log compaction failed; the log keeps growing");
            }
        }
        if !owed_before && (self.unsynced || self.broken.is_some()) {
            // The writer thread may be asleep for an hour: tell it upkeep is now owed.
            lock_ignoring_poison(&self.shared.queue).upkeep = true;
            self.shared.work.notify_one();
        }
        false
    }

    /// Records the outcome of the batch ending at `last` (failed from `failure.0` on) and
    /// wakes its waiters.
    fn settle(&self, last: u64, failure: Option<(u64, Errno, String)>) {
        let mut p = lock_ignoring_poison(&self.shared.progress);
        if let Some((first, errno, message)) = failure {
            if first <= last {
                p.failed.push_back((first, last, errno, message));
                if p.failed.len() > FAILED_KEPT {
                    p.failed.pop_front();
                }
            }
        }
        p.settled = p.settled.max(last);
        p.degraded = self.broken.clone();
        drop(p);
        self.shared.done.notify_all();
    }

    /// Rewrites the log from memory; on success the writer takes changes again.
    fn recover(&mut self) {
        let snapshot = self.state.snapshot_records(self.instance);
        let rewritten = self
            .shared
            .injected_failure()
            .map_err(|e| StoreError::Io {
                what: "cannot rewrite",
                path: self.dir.join(LOG_NAME),
                source: e,
            })
            .and_then(|()| write_snapshot(&self.dir, &snapshot));
        match rewritten {
            Ok(log) => {
                self.log = log;
                self.unsynced = false;
                self.broken = None;
                lock_ignoring_poison(&self.shared.progress).degraded = None;
                tracing::warn!(
                    records = snapshot.len(),
                    "log rewritten; the store takes changes again"
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, "log rewrite failed; retrying");
                self.broken = Some((e.errno(), e.to_string()));
            }
        }
    }

    fn commit(&mut self, buf: &[u8], records: &[Record], shutdown: bool) -> Result<(), StoreError> {
        let path = self.dir.join(LOG_NAME);
        let io = |what| io_err(what, &path);
        if !buf.is_empty() {
            let started = Instant::now();
            self.log.append(buf).map_err(io("cannot append to"))?;
            if self.shared.mode == Durability::Sync {
                self.shared
                    .injected_failure()
                    .and_then(|()| self.log.file.sync_data())
                    .map_err(io("cannot sync"))?;
                self.metrics.store_sync(started.elapsed());
            } else {
                self.unsynced = true;
            }
            // In `Async` mode the batch is acknowledged once written: a later failed sync
            // rewrites the log from this state, so it must include the batch.
            for r in records {
                self.state.apply(r);
            }
            self.metrics.store_commit(records.len());
        }
        // Async mode: sync in the background every 200 ms, and at shutdown.
        if self.unsynced && (shutdown || self.last_sync.elapsed() >= Duration::from_millis(200)) {
            if let Err(e) = self.log.file.sync_data() {
                // Acknowledged records may be lost from the page cache: rewrite from memory.
                let message = format!("cannot sync {}: {e}", path.display());
                tracing::error!(error = %message, "background sync failed; rewriting the log");
                self.broken = Some((errno_of(&e), message));
                self.recover();
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        // Rewrite only when the log is large and mostly history (records average ~20 bytes).
        let size = self.log.end;
        if size < COMPACT_BYTES || (self.state.snapshot_len() as u64) * 20 * 4 > size {
            return Ok(());
        }
        let snapshot = self.state.snapshot_records(self.instance);
        self.log = write_snapshot(&self.dir, &snapshot)?;
        self.unsynced = false;
        tracing::info!(
            records = snapshot.len(),
            bytes = self.log.end,
            "log compacted"
        );
        Ok(())
    }
}
