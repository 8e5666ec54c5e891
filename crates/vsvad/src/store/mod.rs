//! The durable store: a write-ahead log of ownership changes, written with group commit.
//!
//! The record format is in [`record`], the state it replays to in [`state`], reading and
//! rewriting the log file in [`log`], and the group commit (the writer, and its thread) in [`writer`]; this
//! file is the front the daemon uses.
//!
//! # What is recorded
//!
//! Every change of who owns which PASID, and each process's quota and resume token, as one
//! [`Record`] appended to `state.log` in the state directory. Replaying the log from the start
//! gives the [`StoreState`]: for each process (its `ProcessToken`, pid + start time) its uid, quota, resume token
//! and PASIDs. Records of one process are appended under that process's lock in the order
//! the changes happened; across processes, an [`Record::Alloc`] takes the PASID from whoever
//! the replay still thinks owns it (the allocator could only hand it out because the earlier
//! owner had freed it, even if that free's record landed later), so no PASID ever has two
//! owners after a replay.
//!
//! # Durability and group commit
//!
//! [`Store::append`] encodes a record into the pending buffer and returns a [`Ticket`];
//! [`Store::wait`] blocks until the record is on disk. Whoever holds the writer — the first
//! waiter whose record is pending (the leader of the group commit), or the writer thread for
//! records nobody waits for ([`Store::append_unwaited`]) — takes everything pending, writes it
//! with one `pwrite(2)` at the end of the records, and (in [`Durability::Sync`]) one
//! `fdatasync`, then wakes every waiter whose record was in the batch. A waiter that finds a
//! commit under way waits for it, then finds its record settled or leads the next batch.
//! Leading saves the hand-off to another thread and back: two wake-ups per sync. Followers
//! wait on a condition variable that every commit wakes, not on the writer's lock: a lock
//! wakes one waiter at a time and lets the leader take it again first, which left some
//! waiters behind several commits (p99 4-5x that of the condition variable at 8 clients). Under load, one sync covers as many
//! records as arrived while the previous sync ran. The daemon replies only after `wait`, so an
//! acknowledged allocation is on disk — in `Sync` mode even across a power loss, in `Async`
//! mode across the daemon being killed (the data is in the kernel's page cache).
//!
//! # File format
//!
//! A sequence of `len: u32 LE | crc32: u32 LE | payload[len]`, where `crc32` (IEEE) covers the
//! payload (see [`record`]). The first record is a [`Record::Header`]. After the last record
//! the file holds zeros, written ahead of time so that an append overwrites space the file
//! already has and its `fdatasync` need not commit a size change (see [`log`]); zeros are the
//! end of the log. A crash can leave a torn record at the end: zeros, a partial header, or
//! one record reaching to or past the last non-zero byte. Replay stops there and the next
//! start rewrites the log without it (nothing after it was acknowledged, because the writer
//! acknowledges only what it has completely written). Any other damage — a file that does not start with a header, or a bad record with more bytes
//! after it — is refused with [`StoreError::Damaged`] and the file is left untouched: wiping
//! it would drop every later record. When the log grows past [`COMPACT_BYTES`] and holds mostly
//! history, the writer rewrites it as a snapshot of the current state (a temporary file,
//! synced, renamed over the log, and the directory synced).

mod log;
mod record;
mod state;
mod writer;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use vsva_proto::Errno;

use crate::config::Durability;
use crate::metrics::Metrics;
use crate::private_dir;

pub use record::Record;
pub use state::StoreState;

/// The log's file name in the state directory.
pub const LOG_NAME: &str = "state.log";
/// The lock file's name in the state directory.
const LOCK_NAME: &str = "vsvad.lock";
/// Mode of every file in the state directory: resume tokens are secrets.
const FILE_MODE: u32 = 0o600;
/// Size past which the writer considers compacting the log.
const COMPACT_BYTES: u64 = 4 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a named file.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        /// What the system call reported.
        source: io::Error,
    },
    /// Another daemon holds the state directory.
    #[error("state directory {path} is in use by another vsvad (lock file {lock} is held)")]
    Locked {
        /// The state directory.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The log is not a vsvad log, or is damaged other than by a torn last write. The file is
    /// left untouched; the daemon does not start.
    #[error(
        "state log {path} is damaged at byte {offset} of {len}: {why}. It was left untouched. \
         Restore it from a backup, or move it aside to start with no recorded ownership \
         (processes then lose the PASIDs held for them across the restart)"
    )]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// Where the valid prefix ends.
        offset: u64,
        /// The file's length.
        len: u64,
        /// What is wrong there.
        why: String,
    },
    /// A state file is a symbolic link or not a regular file (a FIFO would block the replay,
    /// a link would have the daemon create or write a file elsewhere). Nothing is changed.
    #[error(
        "state file {path} is not a regular file (a symbolic link or another file is there); \
         refusing it"
    )]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The state directory is not private to the daemon's user.
    #[error("state directory: {0}")]
    Dir(#[from] private_dir::DirError),
    /// A record could not be made durable (the disk is full, a write or `fdatasync` failed,
    /// or the store was closed first). It is not in the log; the writer rewrites the log
    /// from memory and takes changes again once the disk accepts them.
    #[error("{message}")]
    Failed {
        /// `ENOSPC` for a full disk or quota, `EIO` otherwise.
        errno: Errno,
        /// What failed.
        message: String,
    },
}

impl StoreError {
    /// The errno a request whose change failed this way gets.
    pub fn errno(&self) -> Errno {
        match self {
            StoreError::Failed { errno, .. } => *errno,
            StoreError::Io { source, .. } => errno_of(source),
            _ => Errno::EIO,
        }
    }
}

/// `ENOSPC` for an error that says the disk (or the user's quota on it) is full, else `EIO`.
fn errno_of(e: &io::Error) -> Errno {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => Errno::ENOSPC,
        Some(code) if code == rustix::io::Errno::DQUOT.raw_os_error() => Errno::ENOSPC,
        _ => Errno::EIO,
    }
}

/// A position in the log: [`Store::wait`] returns once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a change is acknowledged only after waiting for its ticket"]
pub struct Ticket(u64);

/// Records appended and not yet taken by the writer.
struct Queue {
    buf: Vec<u8>,
    records: Vec<Record>,
    /// Sequence number of the last record appended.
    last: u64,
    shutdown: bool,
    /// A waiter's commit left the log needing the writer thread's upkeep (a background sync
    /// owed in `Async` mode, or a log the disk refused): the thread wakes to look again.
    upkeep: bool,
}

struct Progress {
    /// Last sequence number the writer has settled: made durable (synced in `Sync` mode,
    /// written in `Async`), or failed (then it is in `failed`).
    settled: u64,
    /// Sequence ranges (inclusive) of batches that failed, with why; the most recent
    /// [`FAILED_KEPT`] are kept (a waiter asks right after its append).
    failed: VecDeque<(u64, u64, Errno, String)>,
    /// The store was closed: a record appended later never becomes durable.
    closed: bool,
    /// A waiter is committing a batch (the others wait for it on `done`).
    leading: bool,
    /// Set while changes already made in memory (frees, releases) are not yet in the log
    /// because the disk refuses them; cleared once a rewrite of the log succeeds.
    degraded: Option<(Errno, String)>,
}

/// Failed batches remembered for their waiters.
const FAILED_KEPT: usize = 256;

impl Progress {
    /// The failure of the batch holding `ticket`, if it failed.
    fn failure(&self, ticket: u64) -> Option<StoreError> {
        self.failed
            .iter()
            .find(|(lo, hi, _, _)| (*lo..=*hi).contains(&ticket))
            .map(|(_, _, errno, message)| StoreError::Failed {
                errno: *errno,
                message: message.clone(),
            })
    }
}

/// What the store's front and its writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    progress: Mutex<Progress>,
    done: Condvar,
    mode: Durability,
    /// Test hook: how many more log writes or syncs fail, and with which OS error.
    #[cfg(test)]
    inject: std::sync::atomic::AtomicU32,
    #[cfg(test)]
    inject_errno: std::sync::atomic::AtomicI32,
}

impl Shared {
    /// Fails as the test hook asks (never outside tests).
    fn injected_failure(&self) -> io::Result<()> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            let take = self
                .inject
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
            if take.is_ok() {
                return Err(io::Error::from_raw_os_error(self.inject_errno.load(SeqCst)));
            }
        }
        Ok(())
    }
}

/// A waiter's lead of a group commit: when it ends, even by unwinding, the store is told that
/// nobody is leading, and the waiters are woken (those whose records came too late for the
/// batch: one of them leads the next).
struct Leading<'a>(&'a Shared);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock_ignoring_poison(&self.0.progress).leading = false;
        self.0.done.notify_all();
    }
}

/// The store: owner of the log file and its writer thread.
pub struct Store {
    shared: Arc<Shared>,
    /// The log and what writes it, taken by whoever commits the next batch (none with the
    /// store off).
    leader: Option<Arc<Mutex<writer::Writer>>>,
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

/// Whether `path` names `file` (the same inode on the same device).
fn is_file_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `e` says the disk (or the user's quota on it) is full.
fn is_disk_full(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || code == Some(rustix::io::Errno::DQUOT.raw_os_error())
}

/// Narrows a state file an earlier version created readable by others to [`FILE_MODE`].
fn narrow_file_mode(file: &File, path: &Path) -> Result<(), StoreError> {
    let mode = file
        .metadata()
        .map_err(io_err("cannot stat", path))?
        .permissions()
        .mode();
    if mode & 0o777 != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(io_err("cannot narrow the mode of", path))?;
    }
    Ok(())
}

/// Opens (creating if needed) the state file `path` for writing (and reading with `read`),
/// never through a symbolic link, refusing anything but a regular file, and narrows its mode.
fn open_state_file(path: &Path, read: bool, what: &'static str) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(read)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(nofollow_flag())
        .open(path)
        .map_err(|e| not_a_file_or(e, path, what))?;
    let meta = file.metadata().map_err(io_err("cannot stat", path))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::NotAFile {
            path: path.to_owned(),
        });
    }
    narrow_file_mode(&file, path)?;
    Ok(file)
}

/// `O_NOFOLLOW`, for [`OpenOptionsExt::custom_flags`].
pub(super) fn nofollow_flag() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// The error for a failed open of a state file: [`StoreError::NotAFile`] when the last
/// component is a symbolic link (`ELOOP` under `O_NOFOLLOW`), else the I/O error.
pub(super) fn not_a_file_or(e: io::Error, path: &Path, what: &'static str) -> StoreError {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        StoreError::NotAFile {
            path: path.to_owned(),
        }
    } else {
        io_err(what, path)(e)
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
                upkeep: false,
            }),
            work: Condvar::new(),
            progress: Mutex::new(Progress {
                settled: 0,
                failed: VecDeque::new(),
                closed: false,
                leading: false,
                degraded: None,
            }),
            #[cfg(test)]
            inject: std::sync::atomic::AtomicU32::new(0),
            #[cfg(test)]
            inject_errno: std::sync::atomic::AtomicI32::new(0),
            done: Condvar::new(),
            mode,
        });
        if mode == Durability::Off {
            return Ok((
                Store {
                    shared,
                    leader: None,
                    writer: Mutex::new(None),
                    _lock: None,
                },
                StoreState::default(),
            ));
        }
        let private = private_dir::Policy {
            create_mode: 0o700,
            narrow: true,
            sticky_ok: false,
        };
        private_dir::ensure(dir, rustix::process::geteuid().as_raw(), private)?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = open_state_file(&lock_path, false, "cannot open lock file")?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(StoreError::Locked {
                path: dir.to_owned(),
                lock: lock_path,
            });
        }
        let log_path = dir.join(LOG_NAME);
        let mut file = open_state_file(&log_path, true, "cannot open log")?;
        let replayed = log::replay(&mut file, &log_path)?;
        if replayed.torn > 0 {
            tracing::warn!(
                log = %log_path.display(),
                valid_len = replayed.valid,
                torn_len = replayed.torn,
                "log ends in a torn record (a crash during a write); dropping it"
            );
        }
        let (state, records) = (replayed.state, replayed.records);
        // Start each run from a compact snapshot of what was replayed; on a full disk, from
        // the log as it is (its records are all there, and appends go over the zeros
        // preallocated after them), so that a full disk does not keep the daemon down.
        let snapshot = state.snapshot_records(instance);
        let log = match log::write_snapshot(dir, &snapshot) {
            Ok(log) => log,
            // Only while the log at its name is still the file replayed: a snapshot that
            // failed after its rename has replaced it.
            Err(StoreError::Io { source, .. })
                if is_disk_full(&source) && is_file_at(&file, &log_path) =>
            {
                tracing::warn!(
                    log = %log_path.display(),
                    error = %source,
                    "cannot rewrite the log as a snapshot (the disk is full): going on with \
                     the log as it is"
                );
                log::continue_in_place(file, replayed.valid, replayed.torn)
                    .map_err(io_err("cannot go on with", &log_path))?
            }
            Err(e) => return Err(e),
        };
        tracing::info!(
            log = %log_path.display(),
            replayed = records,
            processes = state.processes.len(),
            pasids = state.owners.len(),
            "store opened"
        );
        let writer = writer::Writer {
            shared: shared.clone(),
            log,
            dir: dir.to_owned(),
            state: state.clone(),
            instance,
            metrics,
            last_sync: Instant::now(),
            unsynced: false,
            broken: None,
            finished: false,
        };
        let leader = Arc::new(Mutex::new(writer));
        let handle = {
            let (leader, shared) = (leader.clone(), shared.clone());
            std::thread::Builder::new()
                .name("vsvad-store".into())
                .spawn(move || writer::run(leader, shared))
                .map_err(io_err("cannot start the store writer for", dir))?
        };
        Ok((
            Store {
                shared,
                leader: Some(leader),
                writer: Mutex::new(Some(handle)),
                _lock: Some(lock),
            },
            state,
        ))
    }

    /// When appended records reach the disk.
    pub fn mode(&self) -> Durability {
        self.shared.mode
    }

    /// Queues a record; it is durable once [`wait`](Self::wait) on the ticket returns. The
    /// record is written by the first wait for it or for a later record (the writer thread
    /// is not woken for it): a record nobody waits for goes through
    /// [`append_unwaited`](Self::append_unwaited).
    pub fn append(&self, rec: Record) -> Ticket {
        if self.shared.mode == Durability::Off {
            return Ticket(0);
        }
        let mut q = lock_ignoring_poison(&self.shared.queue);
        rec.encode(&mut q.buf);
        q.records.push(rec);
        q.last += 1;
        Ticket(q.last)
    }

    /// Queues a record nobody waits for, and wakes the writer thread to write it.
    pub fn append_unwaited(&self, rec: Record) {
        let _written_by_the_writer_thread = self.append(rec);
        self.shared.work.notify_one();
    }

    /// Blocks until the record of `ticket` is durable.
    ///
    /// # Errors
    ///
    /// [`StoreError::Failed`] when its batch could not be made durable (the record is not in
    /// the log and never will be: undo the change or report it as not durable), or the store
    /// was closed before writing it.
    pub fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        if ticket.0 == 0 {
            return Ok(());
        }
        let mut may_lead = true;
        let mut p = lock_ignoring_poison(&self.shared.progress);
        loop {
            if p.settled >= ticket.0 {
                return p.failure(ticket.0).map_or(Ok(()), Err);
            }
            if p.closed {
                return Err(StoreError::Failed {
                    errno: Errno::EIO,
                    message: "the store was closed (the daemon is stopping) before this change \
                              was written"
                        .into(),
                });
            }
            // The first waiter commits the batch itself (everything queued, its record among
            // it); the others wait for that commit, then find their record settled, or one
            // of them leads the next batch.
            if let (Some(leader), false, true) = (&self.leader, p.leading, may_lead) {
                p.leading = true;
                drop(p);
                let lead = Leading(&self.shared);
                // After the shutdown's last batch nothing is written: wait for the close.
                may_lead = !lock_ignoring_poison(leader).commit_queued();
                drop(lead);
                p = lock_ignoring_poison(&self.shared.progress);
                continue;
            }
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes and syncs everything queued, stops the writer, and returns once the log is
    /// complete on disk. Appends after this are never written: waiting for them fails.
    ///
    /// # Errors
    ///
    /// Records queued before the close could not all be made durable (none of the failed
    /// ones was acknowledged).
    pub fn close(&self) -> Result<(), StoreError> {
        let last = {
            let mut q = lock_ignoring_poison(&self.shared.queue);
            q.shutdown = true;
            q.last
        };
        self.shared.work.notify_one();
        if let Some(h) = lock_ignoring_poison(&self.writer).take() {
            if h.join().is_err() {
                tracing::error!("the store writer panicked");
            }
        }
        let mut p = lock_ignoring_poison(&self.shared.progress);
        p.closed = true;
        self.shared.done.notify_all();
        if self.shared.mode == Durability::Off {
            return Ok(());
        }
        match &p.degraded {
            Some((errno, why)) => Err(StoreError::Failed {
                errno: *errno,
                message: format!("changes already made in memory are not in the log: {why}"),
            }),
            None if p.settled >= last => Ok(()),
            None => Err(StoreError::Failed {
                errno: Errno::EIO,
                message: format!("writer stopped at record {} of {last}", p.settled),
            }),
        }
    }

    /// Test hook: the next `n` writes or syncs of the log or of a snapshot fail with the OS
    /// error `errno` (`ENOSPC`: a full disk; `EIO`: a failed `fdatasync`).
    #[cfg(test)]
    fn inject_failures(&self, n: u32, errno: i32) {
        use std::sync::atomic::Ordering::SeqCst;
        self.shared.inject_errno.store(errno, SeqCst);
        self.shared.inject.store(n, SeqCst);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // A second close after the daemon's own reports the same outcome again; only a
        // failure the daemon never saw is worth a line.
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "store closed with records not durable");
        }
    }
}

/// The process every store test speaks of as `pid`.
#[cfg(test)]
fn test_token(pid: u32) -> vsva_vfio::ProcessToken {
    vsva_vfio::ProcessToken::new(pid, 100 + u64::from(pid))
}

#[cfg(test)]
mod commit_tests;

#[cfg(test)]
mod start_tests;

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    use vsva_proto::ResumeToken;

    use super::log::replay_bytes;
    use super::*;
    use test_token as token;

    #[test]
    fn store_survives_reopen_and_truncates_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("vsvad-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = Arc::new(Metrics::new());
        {
            let (store, state) = Store::open(&dir, Durability::Sync, 1, metrics.clone()).unwrap();
            assert!(state.processes.is_empty());
            // A second daemon cannot open the same directory.
            assert!(matches!(
                Store::open(&dir, Durability::Sync, 2, metrics.clone()),
                Err(StoreError::Locked { .. })
            ));
            store
                .wait(store.append(Record::Begin {
                    token: token(1),
                    uid: 0,
                    quota: 10,
                    resume: ResumeToken([1; 16]),
                }))
                .unwrap();
            let tickets: Vec<Ticket> = (1..=50)
                .map(|p| {
                    store.append(Record::Alloc {
                        token: token(1),
                        pasid: p,
                    })
                })
                .collect();
            store.wait(*tickets.last().unwrap()).unwrap();
            store.close().unwrap();
        }
        // Simulate a torn write: garbage after the last record, where the next append goes
        // (over the preallocated zeros).
        let log = dir.join(LOG_NAME);
        let (_, valid, _) = replay_bytes(&std::fs::read(&log).unwrap());
        let f = OpenOptions::new().write(true).open(&log).unwrap();
        f.write_all_at(&[40, 0, 0, 0, 1, 2], valid as u64).unwrap();
        drop(f);
        let (store, state) = Store::open(&dir, Durability::Sync, 3, metrics).unwrap();
        assert_eq!(state.processes[&token(1)].pasids.len(), 50);
        assert_eq!(state.processes[&token(1)].resume, ResumeToken([1; 16]));
        drop(store);
        // The torn record is gone: only zeros follow the records.
        let bytes = std::fs::read(&log).unwrap();
        let (_, valid, _) = replay_bytes(&bytes);
        assert!(bytes[valid..].iter().all(|&b| b == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_appended_after_close_is_refused_not_left_waiting() {
        let dir = std::env::temp_dir().join(format!("vsvad-store-closed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = Store::open(&dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
        store.close().unwrap();
        let late = store.append(Record::End { token: token(1) });
        assert!(matches!(store.wait(late), Err(StoreError::Failed { .. })));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes a log with a Begin and 50 Allocs of pid 1 in `dir`; returns its bytes up to the
    /// last record (without the preallocated zeros: a log as an append-only writer leaves it).
    fn fifty_allocations(dir: &Path) -> Vec<u8> {
        let (store, _) = Store::open(dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
        let _begin = store.append(Record::Begin {
            token: token(1),
            uid: 0,
            quota: 100,
            resume: ResumeToken([1; 16]),
        });
        let mut last = None;
        for pasid in 1..=50 {
            last = Some(store.append(Record::Alloc {
                token: token(1),
                pasid,
            }));
        }
        store.wait(last.unwrap()).unwrap();
        store.close().unwrap();
        let mut bytes = std::fs::read(dir.join(LOG_NAME)).unwrap();
        let (_, valid, _) = replay_bytes(&bytes);
        bytes.truncate(valid);
        bytes
    }

    #[test]
    fn a_damaged_log_is_refused_untouched_and_a_torn_tail_truncated() {
        type Damage = fn(&mut Vec<u8>);
        // (what, damage, PASIDs replayed or None when refused)
        let cases: [(&str, Damage, Option<usize>); 6] = [
            (
                "foreign file",
                |b| *b = b"[config]\nkey = 1\n".to_vec(),
                None,
            ),
            (
                "byte flipped mid-log",
                |b| {
                    let m = b.len() / 2;
                    b[m] ^= 0x40
                },
                None,
            ),
            (
                "bad length mid-log",
                |b| {
                    let m = b.len() / 2;
                    b[m..m + 4].fill(0xff)
                },
                None,
            ),
            ("zeros at the end", |b| b.extend([0; 300]), Some(50)),
            (
                "partial record at the end",
                |b| b.extend([40, 0, 0, 0, 1, 2]),
                Some(50),
            ),
            (
                "last record's byte flipped",
                |b| *b.last_mut().unwrap() ^= 1,
                Some(49),
            ),
        ];
        for (what, damage, expect) in cases {
            let dir = std::env::temp_dir().join(format!(
                "vsvad-store-damage-{}-{}",
                std::process::id(),
                what.len()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let mut bytes = fifty_allocations(&dir);
            damage(&mut bytes);
            open_written(&dir, &bytes, what, expect);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Writes `bytes` as the log in `dir` and opens the store: with `expect` = `Some(n)` it
    /// must replay `n` PASIDs of process 1; with `None` it must refuse the log as damaged,
    /// naming it and leaving it untouched.
    fn open_written(dir: &Path, bytes: &[u8], what: &str, expect: Option<usize>) {
        let log = dir.join(LOG_NAME);
        std::fs::write(&log, bytes).unwrap();
        let opened = Store::open(dir, Durability::Sync, 2, Arc::new(Metrics::new()));
        match (opened, expect) {
            (Ok((_, state)), Some(n)) => {
                let owned = state.processes.get(&token(1)).map_or(0, |p| p.pasids.len());
                assert_eq!(owned, n, "{what}");
            }
            (Err(StoreError::Damaged { path, .. }), None) => {
                assert_eq!(path, log, "{what}");
                assert_eq!(
                    std::fs::read(&log).unwrap(),
                    bytes,
                    "{what}: the log was changed"
                );
            }
            (Err(e), _) => panic!("{what}: {e}"),
            (Ok(_), None) => panic!("{what}: a damaged log was accepted"),
        }
    }

    /// Issue 16: the log keeps preallocated zeros after its records. They read as the end of
    /// the log, a record torn inside them is dropped, and anything else in them is damage.
    #[test]
    fn the_preallocated_zeros_end_the_log_and_a_record_torn_in_them_is_dropped() {
        type Damage = fn(&mut Vec<u8>, usize);
        // (what, damage given the records' length, PASIDs replayed or None when refused)
        let cases: [(&str, Damage, Option<usize>); 5] = [
            ("as written", |_, _| {}, Some(50)),
            (
                "partial record in the zeros",
                |b, end| b[end..end + 6].copy_from_slice(&[25, 0, 0, 0, 1, 2]),
                Some(50),
            ),
            (
                "last record's second half never written",
                |b, end| b[end - 10..end].fill(0),
                Some(49),
            ),
            (
                "a record far into the zeros",
                |b, end| {
                    let last = b[..end].to_vec();
                    let at = end + 4096;
                    b[end] = 0x99;
                    b[at..at + 40].copy_from_slice(&last[end - 40..]);
                },
                None,
            ),
            (
                "a stray byte at the very end",
                |b, _| *b.last_mut().unwrap() = 1,
                None,
            ),
        ];
        for (what, damage, expect) in cases {
            let dir = std::env::temp_dir().join(format!(
                "vsvad-store-prealloc-{}-{}",
                std::process::id(),
                what.len()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let end = fifty_allocations(&dir).len();
            let log = dir.join(LOG_NAME);
            let mut bytes = std::fs::read(&log).unwrap();
            assert!(
                bytes.len() >= end + 4096 + 40,
                "{what}: no zeros were preallocated"
            );
            assert!(bytes[end..].iter().all(|&b| b == 0), "{what}");
            damage(&mut bytes, end);
            open_written(&dir, &bytes, what, expect);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Appends past the preallocated zeros extend them, and every record survives a reopen.
    #[test]
    fn appends_past_the_preallocated_zeros_extend_them() {
        let dir = std::env::temp_dir().join(format!("vsvad-store-extend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // An Alloc record is 25 bytes framed: this crosses two preallocation boundaries.
        let n = (2 * log::PREALLOC / 25 + 100) as u32;
        {
            let (store, _) =
                Store::open(&dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
            let _begin = store.append(Record::Begin {
                token: token(1),
                uid: 0,
                quota: n,
                resume: ResumeToken([1; 16]),
            });
            let mut last = None;
            for pasid in 1..=n {
                last = Some(store.append(Record::Alloc {
                    token: token(1),
                    pasid,
                }));
            }
            store.wait(last.unwrap()).unwrap();
            store.close().unwrap();
        }
        let bytes = std::fs::read(dir.join(LOG_NAME)).unwrap();
        let (state, valid, _) = replay_bytes(&bytes);
        assert_eq!(state.processes[&token(1)].pasids.len(), n as usize);
        assert!(bytes.len() > valid && bytes[valid..].iter().all(|&b| b == 0));
        let (_, state) = Store::open(&dir, Durability::Sync, 2, Arc::new(Metrics::new())).unwrap();
        assert_eq!(state.processes[&token(1)].pasids.len(), n as usize);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 12, item 6: a failed `fdatasync` or a full disk acknowledges nothing, keeps no
    /// allocation of the failed batch (even though its bytes reached the file before the sync
    /// failed), keeps the frees that already happened, and the store recovers by itself.
    #[test]
    fn failed_syncs_acknowledge_nothing_and_the_store_recovers() {
        const EIO: i32 = 5;
        const ENOSPC: i32 = 28;
        let dir = std::env::temp_dir().join(format!("vsvad-store-eio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let alloc = |pasid| Record::Alloc {
            token: token(1),
            pasid,
        };
        {
            let (store, _) =
                Store::open(&dir, Durability::Sync, 1, Arc::new(Metrics::new())).unwrap();
            let _begin = store.append(Record::Begin {
                token: token(1),
                uid: 0,
                quota: 100,
                resume: ResumeToken([1; 16]),
            });
            store.wait(store.append(alloc(1))).unwrap();
            // A failed fdatasync: the written batch is not acknowledged, and not kept.
            store.inject_failures(1, EIO);
            let e = store.wait(store.append(alloc(2))).unwrap_err();
            assert_eq!(e.errno(), Errno::EIO, "{e}");
            store.wait(store.append(alloc(3))).unwrap();
            // A full disk that stays full for a while: the free is refused as not durable,
            // yet reaches the log once the disk accepts writes again.
            store.inject_failures(3, ENOSPC);
            let e = store
                .wait(store.append(Record::FreeRange {
                    token: token(1),
                    min: 1,
                    max: 1,
                }))
                .unwrap_err();
            assert_eq!(e.errno(), Errno::ENOSPC, "{e}");
            let mut tries = 0;
            while store.wait(store.append(alloc(4))).is_err() {
                tries += 1;
                assert!(tries < 100, "the store never recovered");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            store.close().unwrap();
        }
        let (_, state) = Store::open(&dir, Durability::Sync, 2, Arc::new(Metrics::new())).unwrap();
        let owned: Vec<u32> = state.processes[&token(1)].pasids.iter().copied().collect();
        assert_eq!(owned, vec![3, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
