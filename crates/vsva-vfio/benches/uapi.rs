//! The cost of the uAPI layer: `Container::ioctl` with raw argument bytes, side by side with
//! calling `vsva-ioasid` (and, for binds, `vsva-iommu`) directly, in one process.
//!
//! * `pasid_alloc_free`: PASID_REQUEST ALLOC then FREE of the PASID it returned, against
//!   `IoasidSet::alloc` + `IoasidSet::free` on a set of the same space (same teardown
//!   subscriber: the IOMMU) — bare, and behind a `Mutex` locked once per request, as any user
//!   sharing a set between threads must hold it; and through `Container::ioctl_journaled`,
//!   recording each typed outcome under the process's lock as the daemon's journal does.
//! * `bind_inv_unbind`: NESTING_OP BIND_PGTBL, CACHE_INVLD (PASID granularity, IOTLB) and
//!   UNBIND_PGTBL, against the ownership check (`IoasidSet::owns`) plus the same IOMMU calls
//!   the container makes (`set_pasid_entry`, `invalidate`, `clear_pasid_entry`).
//!
//! Criterion measures each; a final summary times the same closures interleaved in rounds,
//! adds the typed `Container` API (the same code after decoding) to separate the decoders'
//! cost from the layer's, and prints the medians (or, with `VSVA_BENCH_STAT=min`, the fastest
//! of many short rounds) and the uAPI's ratio to each.
//!
//! `cargo bench -p vsva-vfio --bench uapi` (add `-- --quick` for a shorter run).
//!
//! `VSVA_BENCH_COUNT=<case>:<n>` runs one case `n` times and nothing else, for an instruction
//! count that load cannot disturb (e.g. under `valgrind --tool=callgrind`; subtract the count
//! of `<case>:0` for the setup). Cases: `pasid_direct`, `pasid_mutex`, `pasid_typed`,
//! `pasid_uapi`, `bind_direct`, `bind_typed`, `bind_uapi`.

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vsva_ioasid::IoasidSet;
use vsva_iommu::{HostMemory, Invalidation, Iommu, IommuConfig, PasidEntry, SourceId, Stage2Id};
use vsva_uapi::vfio::{VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity, NestingOp,
    PasidRequestOp,
};
use vsva_vfio::{
    Container, DmaMapping, GroupId, IoctlOutcome, IommuType, PciFunctionSpec, ProcessToken, Vfio,
    VfioConfig,
};

const MB: u64 = 1 << 20;
const GPGD: u64 = 0x10_0000;

/// A host with one nesting container of one device, guest RAM mapped, and a second set in
/// the same PASID space for the direct calls.
struct Bench {
    vfio: Vfio,
    container: Container,
    direct: IoasidSet,
    sid: SourceId,
    did: u16,
    stage2: Stage2Id,
}

fn setup() -> Bench {
    let mem = HostMemory::anonymous(&[(0, (64 * MB) as usize)]).unwrap();
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 48 * MB, 16 * MB).unwrap());
    let vfio = Vfio::new(iommu, VfioConfig::default()).unwrap();
    let sid = SourceId::new(0, 3, 0);
    vfio.add_pci_function(PciFunctionSpec::new(sid, Some(GroupId(3))))
        .unwrap();
    let container = vfio.open_container(ProcessToken::new(1, 1));
    container.attach_group(GroupId(3)).unwrap();
    container.set_iommu(IommuType::Nesting).unwrap();
    container
        .map_dma(&DmaMapping {
            vaddr: 16 * MB,
            iova: 0,
            size: 16 * MB,
            read: true,
            write: true,
        })
        .unwrap();
    let direct = vfio.pasid_space().create_set(2, u32::MAX).unwrap();
    let did = container.domain_id().unwrap();
    let stage2 = container.stage2().unwrap();
    Bench {
        vfio,
        container,
        direct,
        sid,
        did,
        stage2,
    }
}

/// PASID_REQUEST ALLOC + FREE through the byte-level entry point.
struct UapiPair {
    alloc: Vec<u8>,
    free: Vec<u8>,
}

impl UapiPair {
    fn new() -> Self {
        UapiPair {
            alloc: PasidRequestOp::alloc(1, u32::MAX).unwrap().to_bytes(),
            free: PasidRequestOp::free(0, 0).unwrap().to_bytes(),
        }
    }

    #[inline]
    fn run(&mut self, c: &Container) {
        let p = c
            .ioctl(VFIO_IOMMU_PASID_REQUEST, &mut self.alloc)
            .unwrap()
            .value() as u32;
        // The client fills in range.min and range.max (one 8-byte store, as a struct write
        // would be; two 4-byte stores followed by the decoder's 8-byte read would measure a
        // store-forwarding stall that a request arriving through a socket never has).
        let range = u64::from(p) | u64::from(p) << 32;
        self.free[8..16].copy_from_slice(&range.to_le_bytes());
        black_box(c.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut self.free).unwrap());
    }

    /// The same pair through `ioctl_journaled`, recording each outcome as an embedder's
    /// journal would (here into `journal`, under the process's lock).
    #[inline]
    fn run_journaled(&mut self, c: &Container, journal: &mut Vec<IoctlOutcome>) {
        journal.clear();
        let p = c
            .ioctl_journaled(VFIO_IOMMU_PASID_REQUEST, &mut self.alloc, |o| {
                journal.push(*o)
            })
            .unwrap()
            .value() as u32;
        let range = u64::from(p) | u64::from(p) << 32;
        self.free[8..16].copy_from_slice(&range.to_le_bytes());
        black_box(
            c.ioctl_journaled(VFIO_IOMMU_PASID_REQUEST, &mut self.free, |o| {
                journal.push(*o)
            })
            .unwrap(),
        );
    }
}

/// The typed API: the same code after decoding, without the argument bytes.
#[inline]
fn typed_pair(c: &Container) {
    let p = c.alloc_pasid(1, u32::MAX).unwrap();
    black_box(c.free_pasids(p, p).unwrap());
}

#[inline]
fn direct_pair(set: &mut IoasidSet) {
    let p = set.alloc(1, u32::MAX).unwrap();
    set.free(black_box(p)).unwrap();
}

/// The set shared the way a multi-threaded user must share it: one lock per request.
#[inline]
fn mutex_pair(set: &Mutex<IoasidSet>) {
    let p = set.lock().unwrap().alloc(1, u32::MAX).unwrap();
    set.lock().unwrap().free(black_box(p)).unwrap();
}

/// NESTING_OP bind + invalidate + unbind through the byte-level entry point.
struct UapiBind {
    bind: Vec<u8>,
    inv: Vec<u8>,
    unbind: Vec<u8>,
}

impl UapiBind {
    fn new(pasid: u32) -> Self {
        let req = BindRequest::new(u64::from(pasid), GPGD, AddrWidth::Bits48);
        let inv = CacheInvalidateRequest::new(
            CacheSet::IOTLB,
            Granularity::Pasid {
                pasid: Some(u64::from(pasid)),
                archid: None,
            },
        )
        .unwrap();
        UapiBind {
            bind: NestingOp::Bind(req).to_bytes(),
            inv: NestingOp::Invalidate(inv).to_bytes(),
            unbind: NestingOp::Unbind(req).to_bytes(),
        }
    }

    #[inline]
    fn run(&mut self, c: &Container) {
        c.ioctl(VFIO_IOMMU_NESTING_OP, &mut self.bind).unwrap();
        c.ioctl(VFIO_IOMMU_NESTING_OP, &mut self.inv).unwrap();
        c.ioctl(VFIO_IOMMU_NESTING_OP, &mut self.unbind).unwrap();
    }
}

/// The typed API over the same path: bind, invalidate, unbind without argument bytes.
struct TypedBind {
    bind: BindRequest,
    inv: CacheInvalidateRequest,
}

impl TypedBind {
    fn new(pasid: u32) -> Self {
        TypedBind {
            bind: BindRequest::new(u64::from(pasid), GPGD, AddrWidth::Bits48),
            inv: CacheInvalidateRequest::new(
                CacheSet::IOTLB,
                Granularity::Pasid {
                    pasid: Some(u64::from(pasid)),
                    archid: None,
                },
            )
            .unwrap(),
        }
    }

    #[inline]
    fn run(&self, c: &Container) {
        c.bind(&self.bind).unwrap();
        c.invalidate(&self.inv).unwrap();
        c.unbind(self.bind.hpasid).unwrap();
    }
}

/// The same work without the uAPI: ownership check, then the IOMMU calls.
struct DirectBind {
    pasid: u32,
    entry: PasidEntry,
}

impl DirectBind {
    fn new(b: &Bench, pasid: u32) -> Self {
        let (root, levels) = b.vfio.iommu().stage2_root(b.stage2).unwrap();
        DirectBind {
            pasid,
            entry: PasidEntry::nested(b.did, GPGD, root, levels),
        }
    }

    #[inline]
    fn run(&self, set: &IoasidSet, iommu: &Iommu, sid: SourceId, did: u16) {
        assert!(set.owns(self.pasid));
        iommu.set_pasid_entry(sid, self.pasid, &self.entry).unwrap();
        assert!(set.owns(self.pasid));
        iommu
            .invalidate(&Invalidation::PasidIotlb {
                did,
                pasid: self.pasid,
            })
            .unwrap();
        assert!(set.owns(self.pasid));
        iommu.clear_pasid_entry(sid, self.pasid).unwrap();
    }
}

fn criterion_benches(c: &mut Criterion) {
    let mut b = setup();
    let mut g = c.benchmark_group("pasid_alloc_free");
    g.bench_function("ioasid_direct", |bench| {
        bench.iter(|| direct_pair(&mut b.direct))
    });
    let shared = Mutex::new(b.vfio.pasid_space().create_set(3, u32::MAX).unwrap());
    g.bench_function("ioasid_mutex", |bench| bench.iter(|| mutex_pair(&shared)));
    let mut pair = UapiPair::new();
    g.bench_function("uapi_ioctl", |bench| bench.iter(|| pair.run(&b.container)));
    let mut journal = Vec::with_capacity(2);
    g.bench_function("uapi_ioctl_journaled", |bench| {
        bench.iter(|| pair.run_journaled(&b.container, &mut journal))
    });
    g.finish();

    let uapi_pasid = b.container.alloc_pasid(1, u32::MAX).unwrap();
    let direct_pasid = b.direct.alloc(1, u32::MAX).unwrap();
    let mut uapi = UapiBind::new(uapi_pasid);
    let direct = DirectBind::new(&b, direct_pasid);
    let mut g = c.benchmark_group("bind_inv_unbind");
    g.bench_function("direct", |bench| {
        bench.iter(|| direct.run(&b.direct, b.vfio.iommu(), b.sid, b.did))
    });
    g.bench_function("uapi_ioctl", |bench| bench.iter(|| uapi.run(&b.container)));
    g.finish();
}

/// Ns per call of each closure, timed in interleaved rounds: the median round, or with
/// `fastest` the fastest one (the round least disturbed by other work on a loaded machine).
fn interleaved<const N: usize>(
    rounds: usize,
    batch: usize,
    fastest: bool,
    mut fs: [&mut dyn FnMut(); N],
) -> [f64; N] {
    let mut samples = vec![Vec::with_capacity(rounds); N];
    for f in fs.iter_mut() {
        for _ in 0..batch {
            f();
        }
    }
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / batch as f64);
        }
    }
    std::array::from_fn(|i| {
        let s = &mut samples[i];
        s.sort_by(f64::total_cmp);
        if fastest {
            s[0]
        } else {
            s[s.len() / 2]
        }
    })
}

fn summary(quick: bool) {
    // VSVA_BENCH_STAT=min: the fastest of many short rounds instead of the median of long ones,
    // for a machine shared with other work (a short round fits in one time slice more often).
    let fastest = std::env::var_os("VSVA_BENCH_STAT").is_some_and(|s| s == "min");
    let (rounds, batch) = match (quick, fastest) {
        (true, false) => (15, 20_000),
        (false, false) => (41, 50_000),
        (true, true) => (61, 2_000),
        (false, true) => (201, 5_000),
    };
    let stat = if fastest { "fastest" } else { "median" };
    let mut b = setup();
    let shared = Mutex::new(b.vfio.pasid_space().create_set(3, u32::MAX).unwrap());
    let mut pair = UapiPair::new();
    let container = &b.container;
    let direct_set = &mut b.direct;
    let [direct, mutexed, typed, uapi] = interleaved(
        rounds,
        batch,
        fastest,
        [
            &mut || direct_pair(direct_set),
            &mut || mutex_pair(&shared),
            &mut || typed_pair(container),
            &mut || pair.run(container),
        ],
    );

    let uapi_pasid = b.container.alloc_pasid(1, u32::MAX).unwrap();
    let typed_pasid = b.container.alloc_pasid(1, u32::MAX).unwrap();
    let direct_pasid = b.direct.alloc(1, u32::MAX).unwrap();
    let mut ub = UapiBind::new(uapi_pasid);
    let tb = TypedBind::new(typed_pasid);
    let db = DirectBind::new(&b, direct_pasid);
    let set = &b.direct;
    let iommu = b.vfio.iommu();
    let container = &b.container;
    let [bind_direct, bind_typed, bind_uapi] = interleaved(
        rounds,
        batch / 10,
        fastest,
        [
            &mut || db.run(set, iommu, b.sid, b.did),
            &mut || tb.run(container),
            &mut || ub.run(container),
        ],
    );

    println!("\n## uAPI layer vs direct calls ({stat} of {rounds} interleaved rounds)\n");
    println!(
        "| {:<52} | {:>9} | {:>16} |",
        "operation", "ns", "uAPI / this"
    );
    println!("|{:-<54}|{:->11}|{:->18}|", "", "", "");
    let row = |name: &str, ns: f64, base: f64| {
        println!("| {name:<52} | {ns:>9.1} | {:>15.2}x |", base / ns);
    };
    row(
        "PASID alloc+free: IoasidSet direct (same space)",
        direct,
        uapi,
    );
    row(
        "PASID alloc+free: IoasidSet, Mutex per request",
        mutexed,
        uapi,
    );
    row(
        "PASID alloc+free: typed Container API (no decoding)",
        typed,
        uapi,
    );
    row(
        "PASID alloc+free: PASID_REQUEST x2 via ioctl bytes",
        uapi,
        uapi,
    );
    row(
        "bind+inv+unbind: owns() + Iommu calls direct",
        bind_direct,
        bind_uapi,
    );
    row(
        "bind+inv+unbind: typed Container API (no decoding)",
        bind_typed,
        bind_uapi,
    );
    row(
        "bind+inv+unbind: NESTING_OP x3 via ioctl bytes",
        bind_uapi,
        bind_uapi,
    );
    let pct = |a: f64, b: f64| (a / b - 1.0) * 100.0;
    println!(
        "\nThrough the bytes over the typed Container calls they end in (target: <= +20%): \
         PASID_REQUEST {:+.1}%, NESTING_OP {:+.1}%",
        pct(uapi, typed),
        pct(bind_uapi, bind_typed),
    );
    println!(
        "Over the peers without the layer: PASID_REQUEST {:+.1}% over the bare set, {:+.1}% over \
         the set with a Mutex per request (typed API: {:+.1}% / {:+.1}%); NESTING_OP {:+.1}% over \
         direct calls (typed API: {:+.1}%)",
        pct(uapi, direct),
        pct(uapi, mutexed),
        pct(typed, direct),
        pct(typed, mutexed),
        pct(bind_uapi, bind_direct),
        pct(bind_typed, bind_direct),
    );
}

/// Runs one case `n` times (see the module docs).
fn count(spec: &str) {
    let (case, n) = spec.split_once(':').expect("VSVA_BENCH_COUNT=<case>:<n>");
    let n: u64 = n.parse().expect("a number of iterations");
    let mut b = setup();
    let shared = Mutex::new(b.vfio.pasid_space().create_set(3, u32::MAX).unwrap());
    let mut pair = UapiPair::new();
    let pasid = b.container.alloc_pasid(1, u32::MAX).unwrap();
    let direct_pasid = b.direct.alloc(1, u32::MAX).unwrap();
    let mut run: Box<dyn FnMut(&mut Bench)> = match case {
        "pasid_direct" => Box::new(|b: &mut Bench| direct_pair(&mut b.direct)),
        "pasid_mutex" => Box::new(|_: &mut Bench| mutex_pair(&shared)),
        "pasid_typed" => Box::new(|b: &mut Bench| typed_pair(&b.container)),
        "pasid_uapi" => Box::new(|b: &mut Bench| pair.run(&b.container)),
        "bind_direct" => {
            let db = DirectBind::new(&b, direct_pasid);
            Box::new(move |b: &mut Bench| db.run(&b.direct, b.vfio.iommu(), b.sid, b.did))
        }
        "bind_typed" => {
            let tb = TypedBind::new(pasid);
            Box::new(move |b: &mut Bench| tb.run(&b.container))
        }
        "bind_uapi" => {
            let mut ub = UapiBind::new(pasid);
            Box::new(move |b: &mut Bench| ub.run(&b.container))
        }
        other => panic!("unknown case {other}"),
    };
    for _ in 0..n {
        run(&mut b);
    }
}

fn main() {
    if let Some(spec) = std::env::var_os("VSVA_BENCH_COUNT") {
        count(spec.to_str().expect("VSVA_BENCH_COUNT is UTF-8"));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // VSVA_BENCH_SUMMARY_ONLY=1 skips the criterion part and prints only the side-by-side
    // summary.
    if std::env::var_os("VSVA_BENCH_SUMMARY_ONLY").is_none() {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
            .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
            .configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
    // `cargo test --benches` runs bench binaries in test mode: skip the summary there.
    if args.iter().any(|a| a == "--bench") {
        summary(quick);
    }
}
