//! The durable store: a write-ahead log of ownership changes, written with group commit.
//!
//! # What is recorded
//!
//! Every change of who owns which PASID, and each process's quota and resume token, as one
//! [`Record`] appended to `state.log` in the state directory. Replaying the log from the start
//! gives the [`StoreState`]: for each process (pid + start time) its uid, quota, resume token
//! and PASIDs. Records of one process are appended under that process's lock in the order
//! the changes happened; across processes, an [`Record::Alloc`] takes the PASID from whoever
//! the replay still thinks owns it (the allocator could only hand it out because the earlier
//! owner had freed it, even if that free's record landed later), so no PASID ever has two
//! owners after a replay.
//!
//! # Durability and group commit
//!
//! [`Store::append`] encodes a record into the pending buffer and returns a [`Ticket`];
//! [`Store::wait`] blocks until the record is on disk. One writer thread takes everything
//! pending, writes it with one `write(2)`, and (in [`Durability::Sync`]) one `fdatasync`,
//! then wakes every waiter whose record was in the batch. Under load, one sync covers as many
//! records as arrived while the previous sync ran. The daemon replies only after `wait`, so an
//! acknowledged allocation is on disk — in `Sync` mode even across a power loss, in `Async`
//! mode across the daemon being killed (the data is in the kernel's page cache).
//!
//! # File format
//!
//! A sequence of `len: u32 LE | crc32: u32 LE | payload[len]`, where `crc32` (IEEE) covers the
//! payload. The first record is a [`Record::Header`]. A crash can leave a torn record at the
//! end; replay stops at the first record whose length or checksum is wrong and truncates the
//! file there (nothing after it was acknowledged, because the writer acknowledges only what
//! it has completely written). When the log grows past [`COMPACT_BYTES`] and holds mostly
//! history, the writer rewrites it as a snapshot of the current state (a temporary file,
//! synced, renamed over the log, and the directory synced).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vsva_proto::ResumeToken;

use crate::config::Durability;
use crate::metrics::Metrics;

/// The log's file name in the state directory.
pub const LOG_NAME: &str = "state.log";
/// The lock file's name in the state directory.
pub const LOCK_NAME: &str = "vsvad.lock";
/// Size past which the writer considers compacting the log.
pub const COMPACT_BYTES: u64 = 4 << 20;
/// Largest record payload accepted on replay.
const MAX_RECORD: u32 = 1 << 16;
/// Magic of the header record.
const HEADER_MAGIC: [u8; 8] = *b"VSVAWAL1";

/// A process as the store knows it: pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    /// Process id.
    pub pid: u32,
    /// Start time (clock ticks since boot).
    pub start_time: u64,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// First record of a file: the format and the daemon instance that wrote it.
    Header {
        /// Instance id of the daemon that created the file.
        instance: u64,
    },
    /// A process got a context.
    Begin {
        /// The process.
        key: ProcKey,
        /// Its user.
        uid: u32,
        /// Its quota.
        quota: u32,
        /// Its resume token.
        resume: ResumeToken,
    },
    /// A process was given a PASID.
    Alloc {
        /// The process.
        key: ProcKey,
        /// The PASID.
        pasid: u32,
    },
    /// A process freed its PASIDs in `[min, max]`.
    FreeRange {
        /// The process.
        key: ProcKey,
        /// Lowest.
        min: u32,
        /// Highest.
        max: u32,
    },
    /// A process's quota changed.
    Quota {
        /// The process.
        key: ProcKey,
        /// New quota.
        quota: u32,
    },
    /// A process's context ended: everything it owned is free.
    End {
        /// The process.
        key: ProcKey,
    },
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        let key = |out: &mut Vec<u8>, k: &ProcKey| {
            out.extend_from_slice(&k.pid.to_le_bytes());
            out.extend_from_slice(&k.start_time.to_le_bytes());
        };
        match self {
            Record::Header { instance } => {
                out.push(0);
                out.extend_from_slice(&HEADER_MAGIC);
                out.extend_from_slice(&instance.to_le_bytes());
            }
            Record::Begin {
                key: k,
                uid,
                quota,
                resume,
            } => {
                out.push(1);
                key(out, k);
                out.extend_from_slice(&uid.to_le_bytes());
                out.extend_from_slice(&quota.to_le_bytes());
                out.extend_from_slice(&resume.0);
            }
            Record::Alloc { key: k, pasid } => {
                out.push(2);
                key(out, k);
                out.extend_from_slice(&pasid.to_le_bytes());
            }
            Record::FreeRange { key: k, min, max } => {
                out.push(3);
                key(out, k);
                out.extend_from_slice(&min.to_le_bytes());
                out.extend_from_slice(&max.to_le_bytes());
            }
            Record::Quota { key: k, quota } => {
                out.push(4);
                key(out, k);
                out.extend_from_slice(&quota.to_le_bytes());
            }
            Record::End { key: k } => {
                out.push(5);
                key(out, k);
            }
        }
        let payload_len = (out.len() - start - 8) as u32;
        let crc = crc32(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(p: &[u8]) -> Option<Record> {
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(p.get(o..o + 4)?.try_into().ok()?))
        };
        let u64_at = |o: usize| -> Option<u64> {
            Some(u64::from_le_bytes(p.get(o..o + 8)?.try_into().ok()?))
        };
        let key = || -> Option<ProcKey> {
            Some(ProcKey {
                pid: u32_at(1)?,
                start_time: u64_at(5)?,
            })
        };
        let (rec, len) = match *p.first()? {
            0 => {
                if p.get(1..9)? != HEADER_MAGIC {
                    return None;
                }
                (
                    Record::Header {
                        instance: u64_at(9)?,
                    },
                    17,
                )
            }
            1 => {
                let mut resume = [0u8; 16];
                resume.copy_from_slice(p.get(21..37)?);
                (
                    Record::Begin {
                        key: key()?,
                        uid: u32_at(13)?,
                        quota: u32_at(17)?,
                        resume: ResumeToken(resume),
                    },
                    37,
                )
            }
            2 => (
                Record::Alloc {
                    key: key()?,
                    pasid: u32_at(13)?,
                },
                17,
            ),
            3 => (
                Record::FreeRange {
                    key: key()?,
                    min: u32_at(13)?,
                    max: u32_at(17)?,
                },
                21,
            ),
            4 => (
                Record::Quota {
                    key: key()?,
                    quota: u32_at(13)?,
                },
                17,
            ),
            5 => (Record::End { key: key()? }, 13),
            _ => return None,
        };
        (p.len() == len).then_some(rec)
    }
}

/// What the store knows about one process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcState {
    /// Its user.
    pub uid: u32,
    /// Its quota.
    pub quota: u32,
    /// Its resume token.
    pub resume: ResumeToken,
    /// The PASIDs it owns.
    pub pasids: BTreeSet<u32>,
}

/// The state a log replays to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreState {
    /// Processes with a context.
    pub procs: BTreeMap<ProcKey, ProcState>,
    /// PASID → owner, the inverse of every `pasids` set.
    pub owners: BTreeMap<u32, ProcKey>,
}

impl StoreState {
    /// Applies one record.
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::Header { .. } => {}
            Record::Begin {
                key,
                uid,
                quota,
                resume,
            } => {
                let p = self.procs.entry(*key).or_default();
                p.uid = *uid;
                p.quota = *quota;
                p.resume = *resume;
            }
            Record::Alloc { key, pasid } => {
                if let Some(prev) = self.owners.insert(*pasid, *key) {
                    if prev != *key {
                        if let Some(p) = self.procs.get_mut(&prev) {
                            p.pasids.remove(pasid);
                        }
                    }
                }
                self.procs.entry(*key).or_default().pasids.insert(*pasid);
            }
            Record::FreeRange { key, min, max } => {
                if let Some(p) = self.procs.get_mut(key) {
                    if min <= max {
                        let gone: Vec<u32> = p.pasids.range(*min..=*max).copied().collect();
                        for pasid in gone {
                            p.pasids.remove(&pasid);
                            self.owners.remove(&pasid);
                        }
                    }
                }
            }
            Record::Quota { key, quota } => {
                if let Some(p) = self.procs.get_mut(key) {
                    p.quota = *quota;
                }
            }
            Record::End { key } => {
                if let Some(p) = self.procs.remove(key) {
                    for pasid in p.pasids {
                        if self.owners.get(&pasid) == Some(key) {
                            self.owners.remove(&pasid);
                        }
                    }
                }
            }
        }
    }

    /// The records that rebuild this state from nothing.
    pub fn snapshot_records(&self, instance: u64) -> Vec<Record> {
        let mut out = vec![Record::Header { instance }];
        for (key, p) in &self.procs {
            out.push(Record::Begin {
                key: *key,
                uid: p.uid,
                quota: p.quota,
                resume: p.resume,
            });
            for &pasid in &p.pasids {
                out.push(Record::Alloc { key: *key, pasid });
            }
        }
        out
    }

    /// Rough count of records a snapshot would hold.
    fn snapshot_len(&self) -> usize {
        1 + self.procs.len() + self.owners.len()
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another daemon holds the state directory.
    #[error("state directory {path} is in use by another vsvad (lock file {lock} is held)")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The writer failed earlier; nothing more can be made durable.
    #[error("the store failed and accepts no more changes: {0}")]
    Failed(String),
}

/// A position in the log: [`Store::wait`] returns once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a change is acknowledged only after waiting for its ticket"]
pub struct Ticket(u64);

struct Queue {
    buf: Vec<u8>,
    records: Vec<Record>,
    /// Sequence number of the last record appended.
    last: u64,
    shutdown: bool,
}

struct Progress {
    /// Last sequence number durable (synced in `Sync` mode, written in `Async`).
    durable: u64,
    failed: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    progress: Mutex<Progress>,
    done: Condvar,
    mode: Durability,
}

/// The store: owner of the log file and its writer thread.
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    _lock: Option<File>,
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, replays the log, and starts the writer.
    /// Returns the store and the replayed state. With [`Durability::Off`] nothing is read or
    /// written and the state is empty.
    ///
    /// The directory is locked (`flock`) for the life of the store, so two daemons can never
    /// write one log.
    pub fn open(
        dir: &Path,
        mode: Durability,
        instance: u64,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, StoreState), StoreError> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                buf: Vec::new(),
                records: Vec::new(),
                last: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            progress: Mutex::new(Progress {
                durable: 0,
                failed: None,
            }),
            done: Condvar::new(),
            mode,
        });
        if mode == Durability::Off {
            return Ok((
                Store {
                    shared,
                    writer: Mutex::new(None),
                    _lock: None,
                },
                StoreState::default(),
            ));
        }
        std::fs::create_dir_all(dir).map_err(io_err("cannot create state directory", dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open lock file", &lock_path))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StoreError::Locked {
                path: dir.to_owned(),
                lock: lock_path,
            });
        }
        let log_path = dir.join(LOG_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_err("cannot open log", &log_path))?;
        let (state, valid_len, records) = replay(&mut file, &log_path)?;
        let file_len = file
            .metadata()
            .map_err(io_err("cannot stat log", &log_path))?
            .len();
        if valid_len < file_len {
            tracing::warn!(
                log = %log_path.display(),
                valid_len,
                file_len,
                "log ends in a torn record (a crash during a write); truncating it"
            );
        }
        // Start each run from a compact snapshot of what was replayed.
        let snapshot = state.snapshot_records(instance);
        let file = write_snapshot(dir, &snapshot)?;
        tracing::info!(
            log = %log_path.display(),
            replayed = records,
            processes = state.procs.len(),
            pasids = state.owners.len(),
            "store opened"
        );
        let size = file
            .metadata()
            .map_err(io_err("cannot stat log", &log_path))?
            .len();
        let writer = Writer {
            shared: shared.clone(),
            file,
            dir: dir.to_owned(),
            state: state.clone(),
            size,
            instance,
            metrics,
            last_sync: Instant::now(),
            unsynced: false,
        };
        let handle = std::thread::Builder::new()
            .name("vsvad-store".into())
            .spawn(move || writer.run())
            .map_err(io_err("cannot start the store writer for", dir))?;
        Ok((
            Store {
                shared,
                writer: Mutex::new(Some(handle)),
                _lock: Some(lock),
            },
            state,
        ))
    }

    /// The durability mode.
    pub fn mode(&self) -> Durability {
        self.shared.mode
    }

    /// Queues a record; it is durable once [`wait`](Self::wait) on the ticket returns.
    pub fn append(&self, rec: Record) -> Ticket {
        if self.shared.mode == Durability::Off {
            return Ticket(0);
        }
        let mut q = lock_ignoring_poison(&self.shared.queue);
        rec.encode(&mut q.buf);
        q.records.push(rec);
        q.last += 1;
        let t = Ticket(q.last);
        drop(q);
        self.shared.work.notify_one();
        t
    }

    /// Blocks until the record of `ticket` (and every earlier one) is durable.
    pub fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        if ticket.0 == 0 {
            return Ok(());
        }
        let mut p = lock_ignoring_poison(&self.shared.progress);
        loop {
            if p.durable >= ticket.0 {
                return Ok(());
            }
            if let Some(f) = &p.failed {
                return Err(StoreError::Failed(f.clone()));
            }
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes and syncs everything queued, stops the writer, and returns once the log is
    /// complete on disk. Appends after this are never written.
    pub fn close(&self) -> Result<(), StoreError> {
        let last = {
            let mut q = lock_ignoring_poison(&self.shared.queue);
            q.shutdown = true;
            q.last
        };
        self.shared.work.notify_one();
        if let Some(h) = lock_ignoring_poison(&self.writer).take() {
            let _ = h.join();
        }
        let p = lock_ignoring_poison(&self.shared.progress);
        match &p.failed {
            Some(f) => Err(StoreError::Failed(f.clone())),
            None if p.durable >= last => Ok(()),
            None => Err(StoreError::Failed(format!(
                "writer stopped at record {} of {last}",
                p.durable
            ))),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    dir: PathBuf,
    state: StoreState,
    size: u64,
    instance: u64,
    metrics: Arc<Metrics>,
    last_sync: Instant,
    unsynced: bool,
}

impl Writer {
    fn run(mut self) {
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

/// Writes `records` to a temporary file, syncs it, renames it over the log and syncs the
/// directory; returns the new log opened for appending.
fn write_snapshot(dir: &Path, records: &[Record]) -> Result<File, StoreError> {
    let tmp = dir.join(format!("{LOG_NAME}.tmp"));
    let log = dir.join(LOG_NAME);
    let mut buf = Vec::new();
    for r in records {
        r.encode(&mut buf);
    }
    let mut f = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
    f.write_all(&buf).map_err(io_err("cannot write", &tmp))?;
    f.sync_all().map_err(io_err("cannot sync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &log).map_err(io_err("cannot rename snapshot over", &log))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .map_err(io_err("cannot reopen", &log))?;
    f.seek(SeekFrom::End(0))
        .map_err(io_err("cannot seek", &log))?;
    Ok(f)
}

/// Reads every valid record; returns the state, the length of the valid prefix and the
/// number of records.
fn replay(file: &mut File, path: &Path) -> Result<(StoreState, u64, usize), StoreError> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut data))
        .map_err(io_err("cannot read", path))?;
    let (state, valid, n) = replay_bytes(&data);
    Ok((state, valid as u64, n))
}

/// Replays a log image: the state, the length of the valid prefix, and the record count.
pub fn replay_bytes(data: &[u8]) -> (StoreState, usize, usize) {
    let mut state = StoreState::default();
    let mut pos = 0;
    let mut n = 0;
    while data.len() - pos >= 8 {
        let len = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if len > MAX_RECORD || data.len() - pos - 8 < len as usize {
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len as usize];
        if crc32(payload) != crc {
            break;
        }
        let Some(rec) = Record::decode(payload) else {
            break;
        };
        state.apply(&rec);
        n += 1;
        pos += 8 + len as usize;
    }
    (state, pos, n)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(pid: u32) -> ProcKey {
        ProcKey {
            pid,
            start_time: 100 + u64::from(pid),
        }
    }

    #[test]
    fn crc_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Header { instance: 9 },
            Record::Begin {
                key: key(1),
                uid: 1000,
                quota: 5,
                resume: ResumeToken([7; 16]),
            },
            Record::Alloc {
                key: key(1),
                pasid: 42,
            },
            Record::FreeRange {
                key: key(1),
                min: 0,
                max: u32::MAX,
            },
            Record::Quota {
                key: key(1),
                quota: 3,
            },
            Record::End { key: key(1) },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            r.encode(&mut buf);
        }
        let (_, valid, n) = replay_bytes(&buf);
        assert_eq!((valid, n), (buf.len(), recs.len()));
        // Every truncation replays to a prefix and reports where the valid part ends.
        for cut in 0..buf.len() {
            let (_, valid, n) = replay_bytes(&buf[..cut]);
            assert!(valid <= cut && n < recs.len());
        }
    }

    #[test]
    fn alloc_takes_from_the_earlier_owner() {
        let mut s = StoreState::default();
        s.apply(&Record::Alloc {
            key: key(1),
            pasid: 5,
        });
        s.apply(&Record::Alloc {
            key: key(2),
            pasid: 5,
        });
        // Process 1's free landed after process 2's alloc: it must not take 5 from 2.
        s.apply(&Record::FreeRange {
            key: key(1),
            min: 0,
            max: u32::MAX,
        });
        s.apply(&Record::End { key: key(1) });
        assert_eq!(s.owners.get(&5), Some(&key(2)));
        assert!(s.procs[&key(2)].pasids.contains(&5));
        assert!(!s.procs.contains_key(&key(1)));
    }

    proptest! {
        /// Replaying a random history equals a plain model, and no PASID has two owners.
        #[test]
        fn replay_matches_model(ops in prop::collection::vec((0u8..4, 1u32..4, 1u32..20, 1u32..20), 0..200)) {
            let mut model: BTreeMap<u32, u32> = BTreeMap::new(); // pasid -> pid
            let mut buf = Vec::new();
            Record::Header { instance: 1 }.encode(&mut buf);
            for (op, pid, a, b) in ops {
                let rec = match op {
                    0 => {
                        // Only a free PASID can be allocated, as the real allocator ensures.
                        if model.contains_key(&a) { continue; }
                        model.insert(a, pid);
                        Record::Alloc { key: key(pid), pasid: a }
                    }
                    1 => {
                        let (min, max) = (a.min(b), a.max(b));
                        model.retain(|p, o| !(*o == pid && (min..=max).contains(p)));
                        Record::FreeRange { key: key(pid), min, max }
                    }
                    2 => {
                        model.retain(|_, o| *o != pid);
                        Record::End { key: key(pid) }
                    }
                    _ => Record::Quota { key: key(pid), quota: a },
                };
                rec.encode(&mut buf);
            }
            let (state, valid, _) = replay_bytes(&buf);
            prop_assert_eq!(valid, buf.len());
            let got: BTreeMap<u32, u32> = state.owners.iter().map(|(p, k)| (*p, k.pid)).collect();
            prop_assert_eq!(&got, &model);
            let mut seen = BTreeSet::new();
            for p in state.procs.values() {
                for pasid in &p.pasids {
                    prop_assert!(seen.insert(*pasid), "PASID {} owned twice", pasid);
                }
            }
            // A snapshot replays to the same state.
            let mut snap = Vec::new();
            for r in state.snapshot_records(2) { r.encode(&mut snap); }
            let (again, _, _) = replay_bytes(&snap);
            prop_assert_eq!(again.owners, state.owners);
        }
    }

    #[test]
    fn store_survives_reopen_and_truncates_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("vsvad-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = Arc::new(Metrics::new());
        {
            let (store, state) = Store::open(&dir, Durability::Sync, 1, metrics.clone()).unwrap();
            assert!(state.procs.is_empty());
            // A second daemon cannot open the same directory.
            assert!(matches!(
                Store::open(&dir, Durability::Sync, 2, metrics.clone()),
                Err(StoreError::Locked { .. })
            ));
            store
                .wait(store.append(Record::Begin {
                    key: key(1),
                    uid: 0,
                    quota: 10,
                    resume: ResumeToken([1; 16]),
                }))
                .unwrap();
            let tickets: Vec<Ticket> = (1..=50)
                .map(|p| {
                    store.append(Record::Alloc {
                        key: key(1),
                        pasid: p,
                    })
                })
                .collect();
            store.wait(*tickets.last().unwrap()).unwrap();
            store.close().unwrap();
        }
        // Simulate a torn write: garbage after the last record.
        let log = dir.join(LOG_NAME);
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (store, state) = Store::open(&dir, Durability::Sync, 3, metrics).unwrap();
        assert_eq!(state.procs[&key(1)].pasids.len(), 50);
        assert_eq!(state.procs[&key(1)].resume, ResumeToken([1; 16]));
        drop(store);
        let (_, valid, _) = replay_bytes(&std::fs::read(&log).unwrap());
        assert_eq!(valid as u64, std::fs::metadata(&log).unwrap().len());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
