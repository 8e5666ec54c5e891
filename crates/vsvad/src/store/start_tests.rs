//! Opening the store when its start-up snapshot cannot be written: on a full disk the
//! daemon goes on with the log as it is, and loses nothing.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vsva_proto::ResumeToken;

use super::log::{replay_bytes, FailSnapshot, FAIL_NEXT_SNAPSHOT};
use super::*;
use crate::store::test_token as token;

fn alloc(pasid: u32) -> Record {
    Record::Alloc {
        token: token(1),
        pasid,
    }
}

/// A fresh state directory for test `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vsvad-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Opens a store in `dir`, records process 1 owning `pasids`, and closes it.
fn recorded(dir: &Path, metrics: &Arc<Metrics>, pasids: std::ops::RangeInclusive<u32>) {
    let (store, _) = Store::open(dir, Durability::Sync, 1, metrics.clone()).unwrap();
    let begun = store.append(Record::Begin {
        token: token(1),
        uid: 0,
        quota: 100,
        resume: ResumeToken([1; 16]),
    });
    let last = pasids
        .map(|p| store.append(alloc(p)))
        .last()
        .unwrap_or(begun);
    store.wait(last).unwrap();
    store.close().unwrap();
}

#[test]
fn a_full_disk_at_start_goes_on_with_the_log_as_it_is() {
    let dir = scratch("full");
    let metrics = Arc::new(Metrics::new());
    let log = dir.join(LOG_NAME);
    recorded(&dir, &metrics, 1..=50);
    // A torn write after the records, longer than the record appended below: left there,
    // its end would follow that record and the next start would find the log damaged.
    let (_, valid, _) = replay_bytes(&std::fs::read(&log).unwrap());
    let mut torn = vec![200u8, 0, 0, 0];
    torn.extend(std::iter::repeat_n(0x5a, 96));
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.write_all_at(&torn, valid as u64).unwrap();
    drop(f);

    // The disk is full: the snapshot cannot be written, and the store opens all the same.
    FAIL_NEXT_SNAPSHOT.with(|f| f.set(FailSnapshot::AtWrite));
    let (store, state) = Store::open(&dir, Durability::Sync, 2, metrics.clone()).unwrap();
    assert_eq!(
        FAIL_NEXT_SNAPSHOT.with(|f| f.get()),
        FailSnapshot::No,
        "the start tried a snapshot"
    );
    assert_eq!(state.processes[&token(1)].pasids.len(), 50);
    assert!(
        !dir.join(format!("{LOG_NAME}.tmp")).exists(),
        "the failed snapshot's temporary file is removed"
    );
    let bytes = std::fs::read(&log).unwrap();
    assert!(
        bytes[valid..].iter().all(|&b| b == 0),
        "the torn bytes are zeroed in place"
    );
    // Appends go on where the records end.
    store.wait(store.append(alloc(51))).unwrap();
    store.close().unwrap();
    drop(store);

    let (store, state) = Store::open(&dir, Durability::Sync, 3, metrics).unwrap();
    let pasids = &state.processes[&token(1)].pasids;
    assert_eq!(pasids.len(), 51);
    assert!(pasids.contains(&51));
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_snapshot_refused_for_another_reason_still_stops_the_start() {
    let dir = scratch("nofull");
    let metrics = Arc::new(Metrics::new());
    recorded(&dir, &metrics, 1..=1);
    // A directory where the snapshot's temporary file goes: removing it fails (EISDIR or
    // ENOTEMPTY), which is no full disk.
    let tmp = dir.join(format!("{LOG_NAME}.tmp"));
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("x"), b"x").unwrap();
    let err = Store::open(&dir, Durability::Sync, 2, metrics)
        .err()
        .expect("the start fails");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_disk_after_the_snapshot_replaced_the_log_stops_the_start() {
    let dir = scratch("renamed");
    let metrics = Arc::new(Metrics::new());
    recorded(&dir, &metrics, 7..=7);
    // The snapshot is renamed over the log, then the disk is full: the file replayed is no
    // longer the log, and appends to it would be lost. The start stops instead.
    FAIL_NEXT_SNAPSHOT.with(|f| f.set(FailSnapshot::AfterRename));
    let err = Store::open(&dir, Durability::Sync, 2, metrics.clone())
        .err()
        .expect("the start stops");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    // The snapshot that replaced the log holds everything.
    let (store, state) = Store::open(&dir, Durability::Sync, 3, metrics).unwrap();
    assert!(state.processes[&token(1)].pasids.contains(&7));
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
