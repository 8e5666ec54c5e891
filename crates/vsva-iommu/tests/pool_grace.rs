//! A table page freed while translations walk it is not handed to another owner before those
//! walks end, and nothing a walk caches outlives the invalidation of the entry it started
//! from: a device's translation never lands in memory only another device's tables map,
//! however often its stage 2 is torn down and rebuilt for someone else under it.
//!
//! A stress test: without the re-check of the PASID entry after the IOTLB generations are
//! read (see `translate_paged`), it failed in about one run in three here, a stale
//! paging-structure-cache entry leading into a reused page. The deterministic checks are the
//! unit tests of `pool.rs` (a page waits for walks that began before its free) and
//! `translate.rs` (nothing is cached from an invalidated entry), and `walk_guard.rs` (a walk
//! paused mid-way keeps its pages).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use vsva_iommu::{
    Access, DeviceOptions, HostMemory, Iommu, IommuConfig, PasidEntry, S2Perms, SourceId,
};

const MB: u64 = 1 << 20;
const A: SourceId = SourceId::new(0, 4, 0);
const B: SourceId = SourceId::new(0, 5, 0);
const PASID: u32 = 5;
/// The IOVAs both stage-2 tables map: 16 pages, so the reader's first translations after
/// each bind are walks (which fill the IOTLB and paging-structure caches).
const SPAN: u64 = 16 * 4096;
/// Where A's and B's mappings lead.
const A_HOST: u64 = 8 * MB;
const B_HOST: u64 = 12 * MB;

#[test]
fn a_walk_never_reads_a_page_reused_by_another_owner() {
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
    let io = Arc::new(Iommu::new(IommuConfig::default(), mem, 4 * MB, MB).unwrap());
    io.attach_device(A, DeviceOptions::default()).unwrap();
    io.attach_device(B, DeviceOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let walked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (io, stop, walked) = (io.clone(), stop.clone(), walked.clone());
        thread::spawn(move || {
            let mut page = 0u64;
            while !stop.load(Ordering::Relaxed) {
                page = (page + 1) % (SPAN >> 12);
                if let Ok(t) = io.translate(A, Some(PASID), page << 12, Access::READ) {
                    assert_eq!(
                        t.host_addr,
                        A_HOST + (page << 12),
                        "device A's DMA reached memory it never mapped"
                    );
                    walked.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // Each cycle: A's stage 2 is built and bound, the reader walks it, then it is unbound and
    // destroyed and at once B's stage 2 is built from the same pool pages.
    for cycle in 0..1500u32 {
        let s2 = io.create_stage2(4).unwrap();
        io.stage2_map(s2, 0, A_HOST, SPAN, S2Perms::RW).unwrap();
        let (root, _) = io.stage2_root(s2).unwrap();
        io.set_pasid_entry(A, PASID, &PasidEntry::second_level(1, root, 4))
            .unwrap();
        let seen = walked.load(Ordering::Relaxed);
        while walked.load(Ordering::Relaxed) < seen + 4 && !reader.is_finished() {
            thread::yield_now();
        }
        io.clear_pasid_entry(A, PASID).unwrap();
        io.destroy_stage2(s2).unwrap();
        let s2b = io.create_stage2(4).unwrap();
        io.stage2_map(s2b, 0, B_HOST, SPAN, S2Perms::RW)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let (root_b, _) = io.stage2_root(s2b).unwrap();
        io.set_pasid_entry(B, PASID, &PasidEntry::second_level(2, root_b, 4))
            .unwrap();
        io.clear_pasid_entry(B, PASID).unwrap();
        io.destroy_stage2(s2b).unwrap();
        assert!(!reader.is_finished(), "the reader failed at cycle {cycle}");
    }
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .expect("the reader saw another owner's memory");
    assert_eq!(io.table_pool().reclaim(), 0, "every freed page came back");
}
