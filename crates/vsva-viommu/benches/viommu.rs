//! The cost the device model adds, in process, side by side with the host calls it ends in.
//!
//! What each side contains, per call:
//!
//! * `bind_unbind` — device model: the guest's stores of its PASID entry (FLPTR, then the
//!   word with P and PGTT = first level), of a 256-bit PASID-selective PASID-cache
//!   invalidation (all four qwords, as Linux's `qi_submit_sync` copies them) and its IQT
//!   write, which the model carries out to the end (fetch, decode, the walk of the guest's
//!   directory and PASID entry, NESTING_OP BIND); then the store clearing the entry, a second
//!   descriptor and IQT write (→ UNBIND). Direct: `Container::bind` + `Container::unbind`
//!   with the same page table, on an identical host.
//! * `iotlb` — device model: the guest's stores of a page-selective PASID-based IOTLB
//!   descriptor (4 pages) and its IQT write (→ CACHE_INVLD). Direct: building the same
//!   `CacheInvalidateRequest` and `Container::invalidate`.
//! * `batch` — a Linux guest's batch, per IOTLB descriptor: device model: the guest's stores
//!   of `BATCH` (16) page-selective PASID-based IOTLB descriptors and of an invalidation wait
//!   descriptor with a status write behind them (as `qi_submit_sync` queues them), one IQT
//!   write, and the guest's load of the status word (the model completes within the write,
//!   so the first load sees it); the whole divided by `BATCH`. Direct: `BATCH` times building
//!   the `CacheInvalidateRequest` and `Container::invalidate`, divided by `BATCH`.
//! * `vcmd` — device model: the VCMD write (allocate), the VCRSP read, the VCMD write (free
//!   of that PASID), the VCRSP read (→ PASID_REQUEST ×2). Direct: `Container::alloc_pasid` +
//!   `Container::free_pasids`.
//!
//! The guest's stores are single atomic stores into the mapping of its RAM (they do not go
//! through the device model's memory accessor); no side allocates, sets anything up or
//! synchronises per call beyond what is listed. The set-up both sides share (a booted guest
//! with queued invalidation and translation on, a PASID allocated; the PASID bound for the
//! IOTLB case) is done once, outside the measured calls.
//!
//! Criterion measures each; a summary then times the pairs interleaved in short rounds and
//! prints the medians and the device model's ratio to the direct call (target: ≤ 1.30).
//!
//! `cargo bench -p vsva-viommu --bench viommu` (add `-- --quick` for a shorter run;
//! `-- --test` runs every case once, untimed).
//!
//! For instruction counts, `VSVA_BENCH_LOOP=<case>/<side>:<n>` (case `iotlb`, `batch`,
//! `vcmd`, `bind_unbind`; side `viommu` or `direct`) runs only that side `n` times in
//! `measured_loop` after the set-up and exits, printing the loop's wall time, time on the CPU
//! and on the run queue per call:
//! `valgrind --tool=callgrind --toggle-collect='*measured_loop*'` on it counts the loop alone
//! (divide by `n`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{
    GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestMemoryRegion, VolatileMemory,
};
use vsva_iommu::memory::store_entry;
use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity};
use vsva_vfio::{
    Container, DmaMapping, GroupId, IommuType, PciFunctionSpec, ProcessToken, Vfio, VfioConfig,
};
use vsva_viommu::regs::{GCMD, IQA, IQT, RTADDR, VCMD, VCRSP};
use vsva_viommu::{GuestDevice, HostWindow, LocalBackend, Viommu, ViommuConfig};

const MB: u64 = 1 << 20;
const SID: SourceId = SourceId::new(0, 3, 0);
const ROOT: u64 = 0x1000;
const DIR: u64 = 0x3000;
const TABLE: u64 = 0x4000;
const QUEUE: u64 = 0x10_0000;
const PGD: u64 = 0x20_0000;
/// The status word of the batch's wait descriptor.
const STATUS: u64 = 0x30_0000;
/// IOTLB descriptors per batch (`batch` case).
const BATCH: u32 = 16;
/// The status data Linux's wait descriptor writes (`QI_DONE`).
const QI_DONE: u64 = 1;
/// Where guest-physical 0 lies in the host memory (`MAP_DMA` vaddr of IOVA 0).
const RAM_BASE: u64 = 16 * MB;

fn host() -> (Arc<Iommu>, Container) {
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)]).unwrap();
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 48 * MB, 16 * MB).unwrap());
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default()).unwrap();
    vfio.add_pci_function(PciFunctionSpec::new(SID, Some(GroupId(3))))
        .unwrap();
    let c = vfio.open_container(ProcessToken::new(1, 1));
    c.attach_group(GroupId(3)).unwrap();
    c.set_iommu(IommuType::Nesting).unwrap();
    let map = DmaMapping {
        vaddr: 16 * MB,
        iova: 0,
        size: 16 * MB,
        read: true,
        write: true,
    };
    c.map_dma(&map).unwrap();
    (iommu, c)
}

/// A booted guest on its own host: the unit, its RAM and the queue tail it keeps.
struct Guest {
    viommu: Viommu,
    /// The guest's RAM (at `RAM_BASE` of the host memory) as the guest itself stores to it.
    ram: &'static GuestMemoryMmap,
    /// The qwords of the queue page and of the PASID-table page, so that the guest's stores
    /// in a measured call are single stores into the mapping, as a real guest's are.
    queue: Vec<&'static AtomicU64>,
    table: Vec<&'static AtomicU64>,
    /// The status word of the batch's wait descriptor.
    status: &'static AtomicU64,
    tail: u64,
    pasid: u32,
}

impl Guest {
    fn new() -> Guest {
        let (iommu, c) = host();
        let window = Arc::new(HostWindow::new(iommu.clone(), RAM_BASE, 16 * MB));
        let config = ViommuConfig {
            devices: vec![GuestDevice {
                guest: SID,
                host: SID,
            }],
            ..ViommuConfig::default()
        };
        // Kept for the bench's life (the guest's view of its RAM never goes away).
        let ram: &'static GuestMemoryMmap = Box::leak(Box::new(iommu.memory().snapshot_arc()));
        let qwords = |gpa: u64| -> Vec<&'static AtomicU64> {
            let region = ram.find_region(GuestAddress(RAM_BASE + gpa)).unwrap();
            let at = RAM_BASE + gpa - region.start_addr().0;
            (0..512)
                .map(|i| {
                    region
                        .get_atomic_ref::<AtomicU64>(at as usize + 8 * i)
                        .unwrap()
                })
                .collect()
        };
        let (queue, table) = (qwords(QUEUE), qwords(TABLE));
        let status = qwords(STATUS)[0];
        let backend = Box::new(LocalBackend::new(c, iommu));
        let viommu = Viommu::new(config, backend, window, Arc::new(|_| {})).unwrap();
        let mut g = Guest {
            viommu,
            ram,
            queue,
            table,
            status,
            tail: 0,
            pasid: 0,
        };
        g.w(ROOT, 0x2000 | 1);
        g.w(0x2000 + u64::from(SID.devfn()) * 32, DIR | 1 << 3 | 1);
        g.w(DIR, TABLE | 1);
        g.viommu.write(RTADDR, 8, ROOT | 1 << 10);
        g.viommu.write(GCMD, 4, 1 << 30);
        g.viommu.write(IQA, 8, QUEUE | 1 << 11);
        g.viommu.write(GCMD, 4, 1 << 26);
        g.viommu.write(GCMD, 4, 1 << 26 | 1 << 31);
        g.viommu.write(VCMD, 8, 1);
        g.pasid = (g.viommu.read(VCRSP, 8) >> 16) as u32;
        g
    }

    /// One guest store of a qword to its own RAM.
    fn w(&self, gpa: u64, v: u64) {
        assert!(store_entry(self.ram, RAM_BASE + gpa, v));
    }

    /// One guest store in the queue or the PASID-table page (a measured call's stores).
    fn store(&self, gpa: u64, v: u64) {
        let page = match gpa & !0xfff {
            QUEUE => &self.queue,
            TABLE => &self.table,
            _ => return self.w(gpa, v),
        };
        page[(gpa as usize & 0xfff) / 8].store(v, Ordering::Release);
    }

    /// Writes one 256-bit descriptor at the tail (as Linux's `qi_submit_sync` copies all 32
    /// bytes) and moves IQT past it: the device model fetches and carries it out.
    fn submit(&mut self, lo: u64, hi: u64) {
        self.queue_descriptor(lo, hi);
        self.viommu.write(IQT, 8, self.tail);
    }

    /// Writes one 256-bit descriptor at the tail and moves the guest's own tail past it (no
    /// IQT write).
    fn queue_descriptor(&mut self, lo: u64, hi: u64) {
        let slot = &self.queue[self.tail as usize / 8..][..4];
        for (q, v) in slot.iter().zip([lo, hi, 0, 0]) {
            q.store(v, Ordering::Release);
        }
        self.tail = (self.tail + 32) % 4096;
    }

    fn entry(&self) -> u64 {
        TABLE + u64::from(self.pasid & 63) * 64
    }

    /// PASID-cache invalidation of the guest's PASID (PASID-selective, domain 0).
    fn pasid_cache_inv(&self) -> u64 {
        7 | 1 << 4 | u64::from(self.pasid) << 32
    }

    /// The guest makes its PASID entry a first-level one (FLPTR, then P and PGTT) and flushes
    /// the PASID cache (→ bind); then clears the entry and flushes again (→ unbind).
    fn bind_unbind(&mut self) {
        let pc = self.pasid_cache_inv();
        self.store(self.entry() + 16, PGD);
        self.store(self.entry(), 1 | 1 << 6);
        self.submit(pc, 0);
        self.store(self.entry(), 0);
        self.submit(pc, 0);
    }

    /// A page-selective PASID-based IOTLB invalidation of 4 pages (→ CACHE_INVLD).
    fn iotlb(&mut self) {
        self.submit(self.iotlb_lo(), 0x40_0000 | 2);
    }

    /// Qword 0 of a page-selective PASID-based IOTLB descriptor of the guest's PASID.
    fn iotlb_lo(&self) -> u64 {
        6 | 3 << 4 | u64::from(self.pasid) << 32
    }

    /// A Linux guest's batch: `BATCH` page-selective PASID-based IOTLB invalidations and a
    /// wait descriptor with a status write (`QI_IWD_STATUS_DATA(QI_DONE) |
    /// QI_IWD_STATUS_WRITE | QI_IWD_TYPE`) behind them, one IQT write, then the guest's load
    /// of the status word it polls.
    fn batch(&mut self) {
        self.status.store(0, Ordering::Relaxed);
        for i in 0..u64::from(BATCH) {
            self.queue_descriptor(self.iotlb_lo(), (0x40_0000 + (i << 14)) | 2);
        }
        self.queue_descriptor(5 | 1 << 5 | QI_DONE << 32, STATUS);
        self.viommu.write(IQT, 8, self.tail);
        assert_eq!(self.status.load(Ordering::Acquire), QI_DONE);
    }

    /// VCMD allocate, its response, VCMD free of the PASID it gave, its response (as Linux's
    /// `vcmd_alloc_pasid` / `vcmd_free_pasid` read VCRSP for the status).
    fn vcmd(&mut self) {
        self.viommu.write(VCMD, 8, 1);
        let p = self.viommu.read(VCRSP, 8) >> 16;
        self.viommu.write(VCMD, 8, p << 16 | 2);
        black_box(self.viommu.read(VCRSP, 8));
    }
}

/// The direct calls on an identical host.
struct Direct {
    c: Container,
    pasid: u32,
}

impl Direct {
    fn new() -> Direct {
        let (_, c) = host();
        let pasid = c.alloc_pasid(1, u32::MAX).unwrap();
        Direct { c, pasid }
    }

    fn bind_unbind(&self) {
        let req = BindRequest::new(u64::from(self.pasid), PGD, AddrWidth::Bits48);
        self.c.bind(&req).unwrap();
        self.c.unbind(req.hpasid).unwrap();
    }

    fn iotlb(&self) {
        self.iotlb_at(0x40_0000);
    }

    fn iotlb_at(&self, addr: u64) {
        let g = Granularity::Addr {
            pasid: Some(u64::from(self.pasid)),
            archid: None,
            addr,
            granule_size: 4096,
            nb_granules: 4,
            leaf: false,
        };
        let req = CacheInvalidateRequest::new(CacheSet::IOTLB, g).unwrap();
        self.c.invalidate(&req).unwrap();
    }

    /// The batch's invalidations, one call each.
    fn batch(&self) {
        for i in 0..u64::from(BATCH) {
            self.iotlb_at(0x40_0000 + (i << 14));
        }
    }

    fn vcmd(&self) {
        let p = self.c.alloc_pasid(1, (1 << 20) - 1).unwrap();
        self.c.free_pasids(p, p).unwrap();
    }
}

fn round_ns(f: &mut dyn FnMut(), iters: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// Median ns per call of each side over 401 interleaved rounds of `iters` calls each.
///
/// Rounds are kept short (tens of microseconds): on a loaded machine a round the scheduler
/// preempts counts its time off the CPU, and a long round (the earlier 2 000 calls, several
/// milliseconds for the slower side) is preempted nearly every time while a short one nearly
/// never is, which made the slower side's median include waits on the run queue the faster
/// side's did not. With short rounds on both sides the median is a round that ran unpreempted.
fn side_by_side(
    name: &'static str,
    iters: u32,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (&'static str, f64, f64) {
    const ROUNDS: usize = 401;
    let (mut xs, mut ys) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        xs.push(round_ns(&mut a, iters));
        ys.push(round_ns(&mut b, iters));
    }
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    (name, xs[ROUNDS / 2], ys[ROUNDS / 2])
}

/// Puts both sides in the state a case starts from: the PASID bound (the IOTLB case) or not.
fn set_bound(guest: &mut Guest, direct: &Direct, bound: bool) {
    let pc = guest.pasid_cache_inv();
    let req = BindRequest::new(u64::from(direct.pasid), PGD, AddrWidth::Bits48);
    if bound {
        guest.w(guest.entry() + 16, PGD);
        guest.w(guest.entry(), 1 | 1 << 6);
        guest.submit(pc, 0);
        assert_eq!(guest.viommu.bound_pasids(), vec![guest.pasid]);
        direct.c.bind(&req).unwrap();
    } else {
        guest.w(guest.entry(), 0);
        guest.submit(pc, 0);
        assert!(guest.viommu.bound_pasids().is_empty());
        direct.c.unbind(req.hpasid).unwrap();
    }
}

/// The loop of `VSVA_BENCH_LOOP`, a function of its own so that an instruction counter can
/// count it alone (`valgrind --tool=callgrind --toggle-collect='*measured_loop*'`).
#[inline(never)]
fn measured_loop(n: u32, f: &mut dyn FnMut()) {
    for _ in 0..n {
        f();
    }
}

/// This thread's time on the CPU and waiting on the run queue so far, in ns
/// (`/proc/thread-self/schedstat`).
fn sched_ns() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|x| x.parse().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// Minor page faults and user + system CPU ticks of this process so far (`/proc/self/stat`
/// fields 10, 14 and 15).
fn faults_and_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // `rest` starts at field 3 (state).
    let at = |field: usize| f.get(field - 3).copied().unwrap_or(0);
    (at(10), at(14) + at(15))
}

/// `VSVA_BENCH_LOOP=<case>/<side>:<n>` (case `iotlb`, `vcmd` or `bind_unbind`; side `viommu`
/// or `direct`): runs that side `n` times after the same set-up as the full bench, prints the
/// loop's wall time per call, minor page faults and CPU ticks to stderr, and exits.
fn run_loop(guest: &mut Guest, direct: &Direct, spec: &str) {
    let (which, n) = spec.split_once(':').expect("<case>/<side>:<n>");
    let n: u32 = n.parse().expect("a count");
    let (case, side) = which.split_once('/').expect("<case>/<side>");
    set_bound(guest, direct, case == "iotlb" || case == "batch");
    let mut f: Box<dyn FnMut()> = match (case, side) {
        ("iotlb", "viommu") => Box::new(|| guest.iotlb()),
        ("iotlb", "direct") => Box::new(|| direct.iotlb()),
        ("batch", "viommu") => Box::new(|| guest.batch()),
        ("batch", "direct") => Box::new(|| direct.batch()),
        ("vcmd", "viommu") => Box::new(|| guest.vcmd()),
        ("vcmd", "direct") => Box::new(|| direct.vcmd()),
        ("bind_unbind", "viommu") => Box::new(|| guest.bind_unbind()),
        ("bind_unbind", "direct") => Box::new(|| direct.bind_unbind()),
        _ => panic!("unknown case {which}"),
    };
    let (f0, t0) = faults_and_ticks();
    let (cpu0, wait0) = sched_ns();
    let start = Instant::now();
    measured_loop(n, &mut *f);
    let wall = start.elapsed();
    let (f1, t1) = faults_and_ticks();
    let (cpu1, wait1) = sched_ns();
    let per = |ns: f64| ns / f64::from(n.max(1));
    eprintln!(
        "{which} x{n}: {:.1} ns/call wall, {:.1} ns/call on the CPU, {:.1} ns/call waiting \
         on the run queue, {} minor faults, {} CPU ticks",
        per(wall.as_nanos() as f64),
        per((cpu1 - cpu0) as f64),
        per((wait1 - wait0) as f64),
        f1 - f0,
        t1 - t0
    );
}

fn main() {
    let mut guest = Guest::new();
    let direct = Direct::new();
    if let Ok(spec) = std::env::var("VSVA_BENCH_LOOP") {
        return run_loop(&mut guest, &direct, &spec);
    }
    let mut c = Criterion::default().configure_from_args();
    let mut rows = Vec::new();
    // The IOTLB case needs the PASID bound on both sides.
    set_bound(&mut guest, &direct, true);
    c.bench_function("iotlb/viommu", |b| b.iter(|| guest.iotlb()));
    c.bench_function("iotlb/direct", |b| b.iter(|| direct.iotlb()));
    c.bench_function("batch/viommu", |b| b.iter(|| guest.batch()));
    c.bench_function("batch/direct", |b| b.iter(|| direct.batch()));
    c.bench_function("vcmd/viommu", |b| b.iter(|| guest.vcmd()));
    c.bench_function("vcmd/direct", |b| b.iter(|| direct.vcmd()));
    rows.push(side_by_side(
        "P-IOTLB descriptor -> CACHE_INVLD",
        64,
        || guest.iotlb(),
        || direct.iotlb(),
    ));
    let (name, a, b) = side_by_side(
        "Linux batch (16 P-IOTLB + wait), per descriptor",
        4,
        || guest.batch(),
        || direct.batch(),
    );
    rows.push((name, a / f64::from(BATCH), b / f64::from(BATCH)));
    rows.push(side_by_side(
        "VCMD alloc+free -> PASID_REQUEST x2",
        32,
        || guest.vcmd(),
        || direct.vcmd(),
    ));
    // Back to unbound for the bind case.
    set_bound(&mut guest, &direct, false);
    c.bench_function("bind_unbind/viommu", |b| b.iter(|| guest.bind_unbind()));
    c.bench_function("bind_unbind/direct", |b| b.iter(|| direct.bind_unbind()));
    rows.push(side_by_side(
        "PASID-cache inv -> bind, then -> unbind",
        16,
        || guest.bind_unbind(),
        || direct.bind_unbind(),
    ));
    c.final_summary();
    assert_eq!(guest.viommu.stats().queue_errors, 0);
    assert!(guest.viommu.stats().binds > 1, "the bind case binds");
    assert!(
        guest.viommu.stats().host_invalidations > 1,
        "the IOTLB case invalidates"
    );
    println!("\n| operation | device model ns | direct ns | ratio |");
    println!("|---|---|---|---|");
    for (name, a, b) in rows {
        println!("| {name} | {a:.1} | {b:.1} | {:.2}x |", a / b);
    }
    black_box(&guest.viommu);
}
