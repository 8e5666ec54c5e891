//! The log file: replaying it from the start (stopping at a torn or corrupt tail, or at the
//! zeros of its preallocated end), replacing it atomically with a snapshot, and appending to
//! it in place over preallocated space.
//!
//! # Why the log is preallocated
//!
//! An append that grows a file changes its size, so the `fdatasync` after it must also commit
//! that metadata change (on ext4 a journal transaction). The log therefore keeps
//! [`PREALLOC`]-sized stretches of zeros past its last record, written and synced once, and
//! appends overwrite them in place: the sync after such an overwrite has only the data to
//! write. Zeros read back as the end of the log (a zero length and checksum never frame a
//! record), so replay stops there as it would at the end of the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::record::Record;
use super::state::StoreState;
use super::{io_err, nofollow_flag, not_a_file_or, StoreError, FILE_MODE, LOG_NAME};

/// How far past its last record the log is filled with zeros at a time.
pub(super) const PREALLOC: u64 = 1 << 20;

/// The open log: where the next record goes and how far the zeros written ahead of it reach.
pub(super) struct LogFile {
    /// The log, opened for reading and writing.
    pub(super) file: File,
    /// Length of the records in it: the next append's offset.
    pub(super) end: u64,
    /// Length of the file: records plus the zeros written ahead of them.
    allocated: u64,
}

impl LogFile {
    /// Writes `buf` at the end of the records, first extending the zeros ahead of them by
    /// [`PREALLOC`] when `buf` would reach past them. Nothing is synced.
    ///
    /// # Errors
    ///
    /// The write failed: part of `buf` may be in the file past [`end`](Self::end), which is
    /// not moved (a later append overwrites it; replay reads it as a torn tail). A failed
    /// extension alone is no error: the append then grows the file as a plain append would.
    pub(super) fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let new_end = self.end + buf.len() as u64;
        if new_end > self.allocated {
            self.preallocate(new_end);
        }
        self.file.write_all_at(buf, self.end)?;
        self.end = new_end;
        self.allocated = self.allocated.max(new_end);
        Ok(())
    }

    /// Fills the file with zeros from its current length up to the first multiple of
    /// [`PREALLOC`] past `need`. Best effort: on a disk too full for them the file is cut
    /// back to its length before, so the zeros never take the space the records need.
    fn preallocate(&mut self, need: u64) {
        let target = (need / PREALLOC + 1) * PREALLOC;
        let zeros = vec![0u8; (target - self.allocated) as usize];
        match self.file.write_all_at(&zeros, self.allocated) {
            Ok(()) => self.allocated = target,
            Err(e) => {
                tracing::debug!(error = %e, "cannot preallocate the log; appending without");
                if let Err(e) = self.file.set_len(self.allocated) {
                    // The zeros that were written stay: they still read as the end of the
                    // log, and the next append overwrites them.
                    tracing::warn!(error = %e, "cannot cut back a failed preallocation of the log");
                    if let Ok(m) = self.file.metadata() {
                        self.allocated = m.len().max(self.end);
                    }
                }
            }
        }
    }
}

/// Goes on with the log `file` as it stands, its records ending at byte `valid` and a torn
/// record of `torn` bytes after them (see [`Replayed`]): the torn bytes are overwritten with
/// zeros in place and synced, so the next append, which overwrites the zeros from `valid`
/// on, leaves no trace of them. For a start whose snapshot could not be written (a full
/// disk): nothing here needs a new block of the disk, and the records are kept as they were.
///
/// # Errors
///
/// Zeroing or syncing the torn bytes failed: they may be partly zeroed, which replay still
/// reads as a torn tail.
pub(super) fn continue_in_place(file: File, valid: u64, torn: u64) -> io::Result<LogFile> {
    if torn > 0 {
        let zeros = vec![0u8; torn as usize];
        file.write_all_at(&zeros, valid)?;
        file.sync_data()?;
    }
    let allocated = file.metadata()?.len().max(valid);
    Ok(LogFile {
        file,
        end: valid,
        allocated,
    })
}

/// Where this thread's next [`write_snapshot`] fails with `ENOSPC`, as on a full disk.
#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum FailSnapshot {
    /// It does not.
    No,
    /// At its first write: the temporary file is created, empty.
    AtWrite,
    /// At the directory's sync, after the rename: the log is the snapshot already.
    AfterRename,
}

#[cfg(test)]
thread_local! {
    /// See [`FailSnapshot`]; reset to `No` by the snapshot it fails.
    pub(super) static FAIL_NEXT_SNAPSHOT: std::cell::Cell<FailSnapshot> =
        const { std::cell::Cell::new(FailSnapshot::No) };
}

/// Whether this thread's snapshot is to fail `at` (and so no longer will).
#[cfg(test)]
fn injected(at: FailSnapshot) -> bool {
    FAIL_NEXT_SNAPSHOT.with(|f| {
        let hit = f.get() == at;
        if hit {
            f.set(FailSnapshot::No);
        }
        hit
    })
}

#[cfg(test)]
fn no_space() -> io::Error {
    io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
}

/// Writes `records` (and preallocated zeros after them) to a temporary file, syncs it,
/// renames it over the log and syncs the directory; returns the new log.
///
/// # Errors
///
/// Any step failed: the log is as it was. The temporary file is removed (best effort).
pub(super) fn write_snapshot(dir: &Path, records: &[Record]) -> Result<LogFile, StoreError> {
    let tmp = dir.join(format!("{LOG_NAME}.tmp"));
    let result = write_snapshot_via(dir, &tmp, records);
    if result.is_err() {
        // Whatever of it was written (an empty file on a full disk) is of no use.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_snapshot_via(dir: &Path, tmp: &Path, records: &[Record]) -> Result<LogFile, StoreError> {
    let log = dir.join(LOG_NAME);
    let mut buf = Vec::new();
    for r in records {
        r.encode(&mut buf);
    }
    // A leftover temporary file (or whatever else is at its name, a symbolic link included)
    // is removed, not written through: the new one is created afresh, never following a link.
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot remove", tmp)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nofollow_flag())
        .open(tmp)
        .map_err(|e| not_a_file_or(e, tmp, "cannot create"))?;
    // The umask may have narrowed the mode further: set it exactly.
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(io_err("cannot set the mode of", tmp))?;
    // A full disk, for the tests: the file is created, its first write refused.
    #[cfg(test)]
    if injected(FailSnapshot::AtWrite) {
        return Err(io_err("cannot write", tmp)(no_space()));
    }
    f.write_all(&buf).map_err(io_err("cannot write", tmp))?;
    let mut tmp_log = LogFile {
        file: f,
        end: buf.len() as u64,
        allocated: buf.len() as u64,
    };
    tmp_log.preallocate(tmp_log.end);
    tmp_log
        .file
        .sync_all()
        .map_err(io_err("cannot sync", tmp))?;
    let (end, allocated) = (tmp_log.end, tmp_log.allocated);
    drop(tmp_log);
    std::fs::rename(tmp, &log).map_err(io_err("cannot rename snapshot over", &log))?;
    #[cfg(test)]
    if injected(FailSnapshot::AfterRename) {
        return Err(io_err("cannot sync directory", dir)(no_space()));
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nofollow_flag())
        .open(&log)
        .map_err(|e| not_a_file_or(e, &log, "cannot reopen"))?;
    Ok(LogFile {
        file,
        end,
        allocated,
    })
}

/// What replaying a log found.
pub(super) struct Replayed {
    /// The state the records give.
    pub(super) state: StoreState,
    /// Length of the valid records.
    pub(super) valid: u64,
    /// How many records were valid.
    pub(super) records: usize,
    /// Bytes of a torn record after them (the preallocated zeros after it not counted).
    pub(super) torn: u64,
}

/// Reads every valid record. Only a torn tail (see [`torn_tail`]) may follow them.
///
/// # Errors
///
/// [`StoreError::Damaged`] when the file is not a vsvad log or is damaged anywhere but in
/// its last record; the file is left as it is.
pub(super) fn replay(file: &mut File, path: &Path) -> Result<Replayed, StoreError> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut data))
        .map_err(io_err("cannot read", path))?;
    let (state, valid, n) = replay_bytes(&data);
    if let Some(why) = damage(&data, valid, n) {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            offset: valid as u64,
            len: data.len() as u64,
            why,
        });
    }
    Ok(Replayed {
        state,
        valid: valid as u64,
        records: n,
        torn: without_trailing_zeros(&data[valid..]).len() as u64,
    })
}

/// `bytes` up to its last non-zero byte: a record in the log's preallocated zeros ends
/// there at the latest.
fn without_trailing_zeros(bytes: &[u8]) -> &[u8] {
    let len = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..len]
}

/// Why the bytes from `valid` on are not a torn tail, or `None` when they are one (or there
/// are none). `n` records were valid before them.
fn damage(data: &[u8], valid: usize, n: usize) -> Option<String> {
    let rest = &data[valid..];
    if rest.is_empty() {
        return None;
    }
    let starts_with_header = Record::decode_framed(data)
        .is_some_and(|(first, _)| matches!(first, Record::Header { .. }));
    if n == 0 || !starts_with_header {
        return Some("it does not begin with a vsvad log header: not a vsvad state log".into());
    }
    if torn_tail(rest) {
        return None;
    }
    Some(format!(
        "record {} is corrupt and {} more bytes follow it, so this is not a write torn by a \
         crash",
        n + 1,
        rest.len()
    ))
}

/// Whether `rest`, the bytes after the last valid record, can be what a crash during the
/// writer's last append left: only zeros (the preallocated end, or space allocated and data
/// never written), a partial record header, or one record that reaches exactly to, or past,
/// the last non-zero byte (the zeros after it are preallocated space it did not fill).
fn torn_tail(rest: &[u8]) -> bool {
    let rest = without_trailing_zeros(rest);
    if rest.len() < 8 {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    8 + len >= rest.len()
}

/// Replays a log image: the state, the length of the valid prefix, and the record count.
pub fn replay_bytes(data: &[u8]) -> (StoreState, usize, usize) {
    let mut state = StoreState::default();
    let mut pos = 0;
    let mut n = 0;
    while let Some((rec, len)) = Record::decode_framed(&data[pos..]) {
        state.apply(&rec);
        n += 1;
        pos += len;
    }
    (state, pos, n)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use vsva_proto::ResumeToken;

    use super::*;
    use crate::store::test_token as token;

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Header { instance: 9 },
            Record::Begin {
                token: token(1),
                uid: 1000,
                quota: 5,
                resume: ResumeToken([7; 16]),
            },
            Record::Alloc {
                token: token(1),
                pasid: 42,
            },
            Record::FreeRange {
                token: token(1),
                min: 0,
                max: u32::MAX,
            },
            Record::Quota {
                token: token(1),
                quota: 3,
            },
            Record::End { token: token(1) },
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
                        Record::Alloc { token: token(pid), pasid: a }
                    }
                    1 => {
                        let (min, max) = (a.min(b), a.max(b));
                        model.retain(|p, o| !(*o == pid && (min..=max).contains(p)));
                        Record::FreeRange { token: token(pid), min, max }
                    }
                    2 => {
                        model.retain(|_, o| *o != pid);
                        Record::End { token: token(pid) }
                    }
                    _ => Record::Quota { token: token(pid), quota: a },
                };
                rec.encode(&mut buf);
            }
            let (state, valid, _) = replay_bytes(&buf);
            prop_assert_eq!(valid, buf.len());
            let got: BTreeMap<u32, u32> = state.owners.iter().map(|(p, k)| (*p, k.pid())).collect();
            prop_assert_eq!(&got, &model);
            let mut seen = BTreeSet::new();
            for p in state.processes.values() {
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
}
