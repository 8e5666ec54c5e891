//! The group-commit writer thread: takes every record queued since its last batch, writes
//! them with one `write(2)` and (in `Sync` mode) one `fdatasync`, then wakes their waiters;
//! compacts the log when it is mostly history.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::log::write_snapshot;
use super::record::Record;
use super::state::StoreState;
use super::{io_err, lock_ignoring_poison, Shared, StoreError, COMPACT_BYTES, LOG_NAME};
use crate::config::Durability;
use crate::metrics::Metrics;

/// The writer thread's side: the open log and the state it holds, kept to compact it.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) dir: PathBuf,
    pub(super) state: StoreState,
    pub(super) size: u64,
    pub(super) instance: u64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) last_sync: Instant,
    pub(super) unsynced: bool,
}

impl Writer {
    /// Commits batches until the store closes or a write fails.
    pub(super) fn run(mut self) {
        loop {
            let (buf, records, last, shutdown) = {
                let mut q = lock_ignoring_poison(&self.shared.queue);
                while q.buf.is_empty() && !q.shutdown {
                    let timeout = if self.unsynced {
                        Duration::from_millis(200)
                    } else {
                        Duration::from_secs(3600)
                    };
                    let (g, res) = self
                        .shared
                        .work
                        .wait_timeout(q, timeout)
                        .unwrap_or_else(|e| e.into_inner());
                    q = g;
                    if res.timed_out() && q.buf.is_empty() {
                        break;
                    }
                }
                (
                    std::mem::take(&mut q.buf),
                    std::mem::take(&mut q.records),
                    q.last,
                    q.shutdown,
                )
            };
            if let Err(e) = self.commit(&buf, &records, shutdown) {
                let msg = e.to_string();
                tracing::error!(error = %msg, "store write failed; refusing further changes");
                lock_ignoring_poison(&self.shared.progress).failed = Some(msg);
                self.shared.done.notify_all();
                return;
            }
            {
                let mut p = lock_ignoring_poison(&self.shared.progress);
                p.durable = p.durable.max(last);
            }
            self.shared.done.notify_all();
            if shutdown {
                return;
            }
            if let Err(e) = self.maybe_compact() {
                tracing::warn!(error = %e, "log compaction failed; the log keeps growing");
            }
        }
    }

    fn commit(&mut self, buf: &[u8], records: &[Record], shutdown: bool) -> Result<(), StoreError> {
        let path = self.dir.join(LOG_NAME);
        if !buf.is_empty() {
            let started = Instant::now();
            self.file
                .write_all(buf)
                .map_err(io_err("cannot append to", &path))?;
            self.size += buf.len() as u64;
            for r in records {
                self.state.apply(r);
            }
            if self.shared.mode == Durability::Sync {
                self.file
                    .sync_data()
                    .map_err(io_err("cannot sync", &path))?;
                self.metrics.store_sync(started.elapsed());
            } else {
                self.unsynced = true;
            }
            self.metrics.store_commit(records.len());
        }
        // Async mode: sync in the background every 200 ms, and at shutdown.
        if self.unsynced && (shutdown || self.last_sync.elapsed() >= Duration::from_millis(200)) {
            self.file
                .sync_data()
                .map_err(io_err("cannot sync", &path))?;
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        // Rewrite only when the log is large and mostly history (records average ~20 bytes).
        if self.size < COMPACT_BYTES || (self.state.snapshot_len() as u64) * 20 * 4 > self.size {
            return Ok(());
        }
        let snapshot = self.state.snapshot_records(self.instance);
        self.file = write_snapshot(&self.dir, &snapshot)?;
        self.size = self
            .file
            .metadata()
            .map_err(io_err("cannot stat", &self.dir))?
            .len();
        self.unsynced = false;
        tracing::info!(records = snapshot.len(), bytes = self.size, "log compacted");
        Ok(())
    }
}
