//! A walk paused in the middle keeps the table pages it may still read: while it waits, its
//! stage 2 is torn down and another stage 2 is wanted from a pool that has no other pages, and
//! when the walk goes on it must not follow the newcomer's entries into memory its device
//! never had mapped. The newcomer gets its pages once the walk has ended.
//!
//! It also keeps the memory snapshot it reads: a region removed while the walk waits inside it
//! stays mapped until the walk has ended, and is released after.
//!
//! The walk is paused deterministically: its first-level root table lives on a page the test
//! registers with `userfaultfd`, so the walk's first read of that table blocks in the kernel
//! until the test supplies the page. Needs `userfaultfd` (root, or
//! `vm.unprivileged_userfaultfd = 1`); where the kernel refuses it the test says so and
//! checks nothing else.

use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rustix::fd::OwnedFd;
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};
use rustix::mm::{MapFlags, ProtFlags, UserfaultfdFlags};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vsva_iommu::paging::{P, RW, US};
use vsva_iommu::{
    Access, DeviceOptions, HostMemory, Iommu, IommuConfig, IommuError, PasidEntry, S2Perms,
    SourceId, Stage2Id,
};

const MB: u64 = 1 << 20;
const PAGE: u64 = 4096;
const SID: SourceId = SourceId::new(0, 4, 0);
const PASID: u32 = 5;
/// Where the device's data page leads through its own stage 2, and through the newcomer's.
const A_HOST: u64 = 8 * MB;
const B_HOST: u64 = 10 * MB;
/// The first-level tables: the root at this guest-physical address (the paused page), the
/// three lower levels after it.
const FL_GPA: u64 = MB;
/// Host-physical homes of the first-level tables: the root on the userfaultfd page, the rest
/// in ordinary memory.
const ROOT_HPA: u64 = 32 * MB;
const LOWER_HPA: u64 = 12 * MB;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_API: u64 = 0xaa;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// `UFFD_USER_MODE_ONLY`: only faults from user mode, which is all this test makes.
const UFFD_USER_MODE_ONLY: u32 = 1;
const UFFDIO_API: Opcode = opcode::read_write::<UffdioApi>(0xaa, 0x3f);
const UFFDIO_REGISTER: Opcode = opcode::read_write::<UffdioRegister>(0xaa, 0x00);
const UFFDIO_COPY: Opcode = opcode::read_write::<UffdioCopy>(0xaa, 0x03);

/// Both tests pause a walk, which holds back every grace period of the process: one at a
/// time, so neither waits on the other's pause.
static ONE_PAUSE: Mutex<()> = Mutex::new(());

/// One anonymous page registered for missing-page faults, or `None` where the kernel
/// refuses `userfaultfd`.
fn paused_page() -> Option<(OwnedFd, *mut u8)> {
    let flags = UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::from_bits_retain(UFFD_USER_MODE_ONLY);
    // SAFETY: creating the descriptor touches no memory; it is used only on the page below.
    let uffd = match unsafe { rustix::mm::userfaultfd(flags) } {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("userfaultfd unavailable ({e}): the paused-walk check cannot run here");
            return None;
        }
    };
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes exactly one `uffdio_api`, which `api` is.
    unsafe { ioctl(&uffd, Updater::<UFFDIO_API, UffdioApi>::new(&mut api)) }.unwrap();
    // SAFETY: a fresh anonymous private mapping of one page, at an address the kernel picks;
    // nothing else refers to it.
    let page = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            PAGE as usize,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .unwrap();
    let mut reg = UffdioRegister {
        start: page as u64,
        len: PAGE,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads and writes one `uffdio_register`; the range is the page
    // mapped above, which this test owns.
    unsafe {
        ioctl(
            &uffd,
            Updater::<UFFDIO_REGISTER, UffdioRegister>::new(&mut reg),
        )
    }
    .unwrap();
    Some((uffd, page.cast()))
}

/// Supplies the paused page's contents (waking the blocked walk).
fn resolve(uffd: &OwnedFd, page: *mut u8, contents: &[u64; 512]) {
    let mut copy = UffdioCopy {
        dst: page as u64,
        src: contents.as_ptr() as u64,
        len: PAGE,
        mode: 0,
        copy: 0,
    };
    // SAFETY: UFFDIO_COPY copies `len` bytes from `src` (a live 4 KiB array) into `dst` (the
    // registered page) and writes back the count into `copy`.
    unsafe { ioctl(uffd, Updater::<UFFDIO_COPY, UffdioCopy>::new(&mut copy)) }.unwrap();
    assert_eq!(copy.copy, PAGE as i64);
}

/// An IOMMU over `16 * MB` of memory plus the paused page as a region at `ROOT_HPA`, with the
/// device attached.
fn iommu_with_paused_page(page: *mut u8) -> Arc<Iommu> {
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).unwrap();
    // SAFETY: `page` is a live, page-sized, read-write mapping that stays mapped until the
    // end of the process (it is never unmapped); vm-memory does not take ownership of it.
    let region = unsafe {
        MmapRegion::build_raw(
            page,
            PAGE as usize,
            3, /* PROT_READ | PROT_WRITE */
            0x22,
        )
    }
    .unwrap();
    mem.add_region(GuestRegionMmap::new(region, GuestAddress(ROOT_HPA)).unwrap())
        .unwrap();
    let io = Arc::new(Iommu::new(IommuConfig::default(), mem, 4 * MB, MB).unwrap());
    io.attach_device(SID, DeviceOptions::default()).unwrap();
    io
}

/// Writes the three lower first-level tables at `LOWER_HPA` (L3[0] -> L2[0] -> L1[1] ->
/// `data`), each naming the next at its address as the walk sees it (`seen_at` + offset:
/// guest-physical when nested, host-physical when not), and returns the contents of the root
/// table that leads to them.
fn first_level_tables(io: &Iommu, seen_at: u64, data: u64) -> [u64; 512] {
    let entry = |addr: u64| addr | P | RW | US;
    let m = io.memory();
    m.store_u64(LOWER_HPA + PAGE, entry(seen_at + 2 * PAGE))
        .unwrap();
    m.store_u64(LOWER_HPA + 2 * PAGE, entry(seen_at + 3 * PAGE))
        .unwrap();
    m.store_u64(LOWER_HPA + 3 * PAGE + 8, entry(data)).unwrap();
    let mut root = [0u64; 512];
    root[0] = entry(seen_at + PAGE);
    root
}

/// Starts a translation of `0x1000` on another thread and returns once it is blocked on its
/// first read of the paused page.
fn start_paused_walk(
    io: &Arc<Iommu>,
    uffd: &OwnedFd,
) -> thread::JoinHandle<Result<vsva_iommu::Translation, vsva_iommu::Fault>> {
    let walker = {
        let io = io.clone();
        thread::spawn(move || io.translate(SID, Some(PASID), 0x1000, Access::READ))
    };
    let mut msg = [0u8; 32];
    let n = rustix::io::read(uffd, &mut msg).unwrap();
    assert_eq!(n, 32, "one page-fault message");
    walker
}

/// Maps what a walk of the first-level tables needs: the tables themselves (at the same host
/// pages in every stage 2, so the paused walk finds its tables whichever entries it reads)
/// and the data.
fn try_map_stage2(io: &Iommu, data_host: u64) -> Result<Stage2Id, IommuError> {
    let s2 = io.create_stage2(4)?;
    io.stage2_map(s2, 0, data_host, MB, S2Perms::RW)?;
    io.stage2_map(s2, FL_GPA, ROOT_HPA, PAGE, S2Perms::RW)?;
    io.stage2_map(s2, FL_GPA + PAGE, LOWER_HPA + PAGE, 3 * PAGE, S2Perms::RW)?;
    Ok(s2)
}

#[test]
fn a_paused_walk_never_follows_a_reused_table_page() {
    let _one = ONE_PAUSE.lock().unwrap_or_else(|p| p.into_inner());
    let Some((uffd, page)) = paused_page() else {
        return;
    };
    let io = iommu_with_paused_page(page);
    // The tables seen through stage 2: L4[0] -> L3 -> L2 -> L1[1] -> data GPA 0x1000.
    let root = first_level_tables(&io, FL_GPA, 0x1000);

    let s2a = try_map_stage2(&io, A_HOST).unwrap();
    let (s2a_root, _) = io.stage2_root(s2a).unwrap();
    io.set_pasid_entry(SID, PASID, &PasidEntry::nested(1, FL_GPA, s2a_root, 4))
        .unwrap();
    // Every other page of the pool is taken: a new stage 2 can only be built from pages freed
    // later.
    let mut hoard = Vec::new();
    while let Ok(p) = io.table_pool().alloc(io.memory()) {
        hoard.push(p);
    }
    // The walk blocks on its first read of the root table.
    let walker = start_paused_walk(&io, &uffd);
    // Meanwhile the device's PASID is torn down with its stage 2, and a stage 2 for other
    // memory is asked for: the freed pages are the only ones, and the paused walk may still
    // read them, so the pool refuses (after waiting out its bound for the walk to end).
    io.clear_pasid_entry(SID, PASID).unwrap();
    io.destroy_stage2(s2a).unwrap();
    let built = try_map_stage2(&io, B_HOST);
    assert!(
        built.is_err(),
        "a page the paused walk may still read was handed to another stage 2"
    );
    resolve(&uffd, page, &root);
    match walker.join().unwrap() {
        Ok(t) => assert_eq!(
            t.host_addr,
            A_HOST + 0x1000,
            "the paused walk followed another stage 2's entries"
        ),
        // Refusing the request is as good: the entry is gone.
        Err(f) => eprintln!("the paused walk faulted: {f}"),
    }
    // The walk has ended: its pages come back, and the other stage 2 gets them.
    try_map_stage2(&io, B_HOST).expect("the freed pages are back once the walk ended");
    assert_eq!(io.table_pool().waiting(), 0);
}

/// Runs the epoch collector a few times from this thread (other threads' deferred drops run
/// once every thread pinned before them has unpinned).
fn collect() {
    for _ in 0..64 {
        crossbeam_epoch::pin().flush();
    }
}

/// Whether the snapshot behind `weak` is still held by anything, driving the collector.
fn still_held(weak: &Weak<GuestMemoryMmap>) -> bool {
    collect();
    weak.strong_count() > 0
}

#[test]
fn a_region_removed_under_a_paused_walk_is_released_after_the_walk() {
    let _one = ONE_PAUSE.lock().unwrap_or_else(|p| p.into_inner());
    let Some((uffd, page)) = paused_page() else {
        return;
    };
    let io = iommu_with_paused_page(page);
    // First-level tables at host addresses: the root on the paused page, L3 -> L2 -> L1[1]
    // -> data page `A_HOST`.
    let root = first_level_tables(&io, LOWER_HPA, A_HOST);
    io.set_pasid_entry(SID, PASID, &PasidEntry::first_level(1, ROOT_HPA))
        .unwrap();
    // The root, context and PASID tables are in the pool: the walk's first read of the
    // paused page is its first-level root.
    let started_on = Arc::downgrade(&io.memory().snapshot_arc());
    // The walk blocks on its first read of the root table.
    let walker = start_paused_walk(&io, &uffd);
    // The region of the table being read goes away: later accesses see no memory there,
    // but the paused walk still reads the snapshot it started on.
    io.memory().remove_region(ROOT_HPA, PAGE).unwrap();
    assert!(!io.memory().is_backed(ROOT_HPA, PAGE));
    assert!(
        still_held(&started_on),
        "the snapshot a running walk reads was released under it"
    );
    resolve(&uffd, page, &root);
    let t = walker
        .join()
        .unwrap()
        .expect("the walk finishes on the snapshot it started on");
    assert_eq!(t.host_addr, A_HOST);
    // The walk has ended: nothing holds the old snapshot for long.
    let deadline = Instant::now() + Duration::from_secs(10);
    while still_held(&started_on) {
        assert!(
            Instant::now() < deadline,
            "the replaced snapshot (and the removed region) was never released"
        );
        thread::yield_now();
    }
}
