//! The cost of the iommufd front end, side by side with the direct core calls it makes, in
//! one process:
//!
//! * `invalidate_1`, `invalidate_64`: `IOMMU_HWPT_INVALIDATE` on a nested HWPT with one PASID
//!   attached, 1 and 64 page-selective VT-d stage-1 entries. The front end reads and checks
//!   the entries and gives their requests to the IOMMU as one `Iommu::invalidate_batch`
//!   (up to 64 requests per submission). The direct side builds the same requests
//!   (`PasidIotlbPages`, the range from `PageRange::covering`): for 1 entry one
//!   `Iommu::invalidate`, for 64 an array on the stack and one `Iommu::invalidate_batch`, as a
//!   typed caller with 64 ranges would write it.
//! * `map_unmap`: `IOMMU_IOAS_MAP` then `IOMMU_IOAS_UNMAP` of 4 KiB on an IOAS with one
//!   paging HWPT (one domain over its stage 2, so the unmap flushes one domain), against
//!   `Iommu::stage2_map` + `stage2_unmap` + that domain's page-selective IOTLB flush.
//!
//! The front end's argument buffers are built once and reused, as a caller reuses its
//! `struct` between ioctls (the calls leave them as they were: the outputs written back equal
//! the inputs). Each closure owns its buffers (the closures are `FnMut`), as a caller owns
//! its argument: until 2026-12-01 they sat in `RefCell`s of the shared fixture, and the
//! borrow flag's store and increment on every call put a dependency through memory from
//! each call to the next on the front end's side only (about 1.4 ns of a 31 ns call).
//!
//! Criterion measures each; a final summary times each pair in 101 rounds of 200 calls, the
//! two sides alternating round by round, and prints the medians and the front end's ratio
//! to the direct calls.
//!
//! `cargo bench -p vsva-iommufd --bench iommufd` (add `-- --quick` for a shorter run).
//!
//! For instruction counts, `VSVA_BENCH_LOOP=<case>/<side>:<n>` (side `ioctl` or `direct`)
//! runs only that closure `n` times and exits: the instructions of `n` calls minus those of
//! 0 calls (`valgrind --tool=callgrind`), over `n`, are the count per call; add
//! `--toggle-collect='iommufd::Bench::*'` for a per-function breakdown of one side.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use vsva_iommu::{HostMemory, Invalidation, Iommu, IommuConfig, PageRange, S2Perms, SourceId};
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_vfio::{ConfigWidth, GroupId, PciFunctionSpec, ProcessToken, Vfio, VfioConfig};
use zerocopy::IntoBytes;

const MB: u64 = 1 << 20;
const VA: u64 = 0x4000_0000;

/// A context with one device bound, guest RAM mapped, a nested HWPT with a PASID attached.
struct Bench {
    vfio: Vfio,
    ctx: IommufdCtx,
    did: u16,
    pasid: u32,
    /// The domain id of the one paging HWPT over the map/unmap IOAS.
    map_did: u16,
    stage2: vsva_iommu::Stage2Id,
}

fn with_size<T: IntoBytes + zerocopy::Immutable>(v: &T) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    let n = b.len() as u32;
    b[..4].copy_from_slice(&n.to_le_bytes());
    b
}

fn inv_buf(hwpt: u32, n: usize) -> Vec<u8> {
    let cmd = IommuHwptInvalidate {
        hwpt_id: hwpt,
        data_uptr: 32,
        data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
        entry_len: 24,
        entry_num: n as u32,
        ..Default::default()
    };
    let mut b = with_size(&cmd);
    for i in 0..n as u64 {
        let e = IommuHwptVtdS1Invalidate {
            addr: VA + i * 4096,
            npages: 1,
            flags: 0,
            reserved: 0,
        };
        b.extend_from_slice(e.as_bytes());
    }
    b
}

/// The prepared argument bytes of the front end's calls; each closure takes a copy.
struct Args {
    inv1: Vec<u8>,
    inv64: Vec<u8>,
    map: Vec<u8>,
    unmap: Vec<u8>,
}

fn setup() -> (Bench, Args) {
    let mem = HostMemory::anonymous(&[(0, (64 * MB) as usize)]).unwrap();
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 48 * MB, 16 * MB).unwrap());
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default()).unwrap();
    let sid = SourceId::new(0, 3, 0);
    let f = vfio
        .add_pci_function(PciFunctionSpec::new(sid, Some(GroupId(3))))
        .unwrap();
    f.config_write(0x106, ConfigWidth::Word, 1).unwrap();
    let ctx = IommufdCtx::open(&vfio, ProcessToken::new(1, 1)).unwrap();
    let dev = ctx.bind_device(sid).unwrap();
    let mut a = IommuIoasAlloc::default();
    ctx.ioas_alloc(&mut a).unwrap();
    let ioas = a.out_ioas_id;
    let mut map = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: 16 * MB,
        length: 16 * MB,
        iova: 0,
        ..Default::default()
    };
    ctx.ioas_map(&mut map).unwrap();
    let mut parent = IommuHwptAlloc {
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
        dev_id: dev,
        pt_id: ioas,
        ..Default::default()
    };
    ctx.hwpt_alloc(&mut parent, &[]).unwrap();
    let s1 = IommuHwptVtdS1 {
        flags: 0,
        pgtbl_addr: MB,
        addr_width: 48,
        reserved: 0,
    };
    let mut nested = IommuHwptAlloc {
        flags: IOMMU_HWPT_ALLOC_PASID,
        dev_id: dev,
        pt_id: parent.out_hwpt_id,
        data_type: IOMMU_HWPT_DATA_VTD_S1,
        data_len: 24,
        ..Default::default()
    };
    ctx.hwpt_alloc(&mut nested, s1.as_bytes()).unwrap();
    let pasid = ctx.alloc_pasid(1, 100).unwrap();
    ctx.attach(dev, nested.out_hwpt_id, Some(pasid)).unwrap();
    let info = ctx.objects();
    let did = info
        .iter()
        .find(|o| o.id == nested.out_hwpt_id)
        .unwrap()
        .domain_id
        .unwrap();
    // The map/unmap IOAS: one paging HWPT over it, so an unmap flushes one domain, as the
    // direct caller's one flush does.
    let mut a = IommuIoasAlloc::default();
    ctx.ioas_alloc(&mut a).unwrap();
    let map_ioas = a.out_ioas_id;
    let mut paging = IommuHwptAlloc {
        dev_id: dev,
        pt_id: map_ioas,
        ..Default::default()
    };
    ctx.hwpt_alloc(&mut paging, &[]).unwrap();
    let info = ctx.objects();
    let map_did = info
        .iter()
        .find(|o| o.id == paging.out_hwpt_id)
        .unwrap()
        .domain_id
        .unwrap();
    let map = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: map_ioas,
        user_va: 40 * MB,
        length: 4096,
        iova: 32 * MB,
        ..Default::default()
    };
    let unmap = IommuIoasUnmap {
        ioas_id: map_ioas,
        iova: 32 * MB,
        length: 4096,
        ..Default::default()
    };
    let stage2 = iommu.create_stage2(vfio.stage2_levels()).unwrap();
    let args = Args {
        inv1: inv_buf(nested.out_hwpt_id, 1),
        inv64: inv_buf(nested.out_hwpt_id, 64),
        map: with_size(&map),
        unmap: with_size(&unmap),
    };
    let bench = Bench {
        map_did,
        vfio,
        ctx,
        did,
        pasid,
        stage2,
    };
    (bench, args)
}

impl Bench {
    fn ioctl_inv(&self, buf: &mut [u8]) {
        self.ctx
            .ioctl(IOMMU_HWPT_INVALIDATE, black_box(buf))
            .unwrap();
    }

    /// One page-selective PASID IOTLB request for page `i` of the range.
    fn direct_entry(&self, i: u64) -> Invalidation {
        Invalidation::PasidIotlbPages {
            did: self.did,
            pasid: self.pasid,
            range: PageRange::covering(VA + i * 4096, 4096),
            ih: false,
        }
    }

    fn direct_inv_1(&self) {
        let inv = self.direct_entry(black_box(0));
        self.vfio.iommu().invalidate(black_box(&inv)).unwrap();
    }

    /// 64 ranges, as a typed caller writes it: the requests built on the stack and given
    /// to the IOMMU as one batch (one submission, one wait), as the front end does.
    fn direct_inv_64(&self) {
        let invs: [Invalidation; 64] = std::array::from_fn(|i| self.direct_entry(i as u64));
        self.vfio
            .iommu()
            .invalidate_batch(black_box(&invs[..]))
            .unwrap();
    }

    fn ioctl_map_unmap(&self, map: &mut [u8], unmap: &mut [u8]) {
        self.ctx.ioctl(IOMMU_IOAS_MAP, black_box(map)).unwrap();
        self.ctx.ioctl(IOMMU_IOAS_UNMAP, black_box(unmap)).unwrap();
    }

    fn direct_map_unmap(&self) {
        let iommu = self.vfio.iommu();
        let perms = S2Perms {
            read: true,
            write: true,
            execute: false,
        };
        iommu
            .stage2_map(self.stage2, 32 * MB, 40 * MB, 4096, perms)
            .unwrap();
        iommu.stage2_unmap(self.stage2, 32 * MB, 4096).unwrap();
        iommu
            .invalidate(&Invalidation::IotlbDomainPages {
                did: self.map_did,
                range: PageRange::covering(32 * MB, 4096),
                ih: false,
            })
            .unwrap();
    }
}

/// A case of the summary: its name, the front end's closure, the direct one.
type Pair<'a> = (&'static str, Box<dyn FnMut() + 'a>, Box<dyn FnMut() + 'a>);

/// The medians of `rounds` timings of `front` and of `direct`, in nanoseconds per call, each
/// run `iters` times per round, the two sides alternating round by round (so that both see the
/// same load). A round's time is divided in floating point: `Duration / u32` truncates to whole
/// nanoseconds, which at 26 ns per call moves a ratio by up to 4 %.
fn interleaved(
    rounds: usize,
    iters: u32,
    front: &mut dyn FnMut(),
    direct: &mut dyn FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
    };
    let (mut tf, mut td): (Vec<f64>, Vec<f64>) = (0..rounds)
        .map(|round| {
            if round % 2 == 0 {
                let f = time(front);
                (f, time(direct))
            } else {
                let d = time(direct);
                (time(front), d)
            }
        })
        .unzip();
    tf.sort_by(f64::total_cmp);
    td.sort_by(f64::total_cmp);
    (tf[rounds / 2], td[rounds / 2])
}

/// The front end's closures, each owning a copy of its argument bytes.
impl Args {
    fn inv1<'a>(&self, b: &'a Bench) -> impl FnMut() + 'a {
        let mut buf = self.inv1.clone();
        move || b.ioctl_inv(&mut buf)
    }

    fn inv64<'a>(&self, b: &'a Bench) -> impl FnMut() + 'a {
        let mut buf = self.inv64.clone();
        move || b.ioctl_inv(&mut buf)
    }

    fn map_unmap<'a>(&self, b: &'a Bench) -> impl FnMut() + 'a {
        let (mut map, mut unmap) = (self.map.clone(), self.unmap.clone());
        move || b.ioctl_map_unmap(&mut map, &mut unmap)
    }
}

/// `VSVA_BENCH_LOOP=<case>/<side>:<n>`: runs one closure `n` times (for instruction counts).
fn run_loop(b: &Bench, args: &Args, spec: &str) {
    let (which, n) = spec.split_once(':').expect("<case>/<side>:<n>");
    let n: u64 = n.parse().expect("a count");
    let mut f: Box<dyn FnMut()> = match which {
        "invalidate_1/ioctl" => Box::new(args.inv1(b)),
        "invalidate_1/direct" => Box::new(|| b.direct_inv_1()),
        "invalidate_64/ioctl" => Box::new(args.inv64(b)),
        "invalidate_64/direct" => Box::new(|| b.direct_inv_64()),
        "map_unmap/ioctl" => Box::new(args.map_unmap(b)),
        "map_unmap/direct" => Box::new(|| b.direct_map_unmap()),
        other => panic!("unknown case {other}"),
    };
    for _ in 0..n {
        f();
    }
}

fn main() {
    let (b, args) = setup();
    if let Ok(spec) = std::env::var("VSVA_BENCH_LOOP") {
        run_loop(&b, &args, &spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("iommufd");
    g.bench_function("invalidate_1/ioctl", |x| x.iter(args.inv1(&b)));
    g.bench_function("invalidate_1/direct", |x| x.iter(|| b.direct_inv_1()));
    g.bench_function("invalidate_64/ioctl", |x| x.iter(args.inv64(&b)));
    g.bench_function("invalidate_64/direct", |x| x.iter(|| b.direct_inv_64()));
    g.bench_function("map_unmap/ioctl", |x| x.iter(args.map_unmap(&b)));
    g.bench_function("map_unmap/direct", |x| x.iter(|| b.direct_map_unmap()));
    g.finish();
    c.final_summary();

    println!("\nsummary (median of interleaved rounds; ratio = iommufd / direct):");
    let mut pairs: [Pair; 3] = [
        (
            "invalidate_1",
            Box::new(args.inv1(&b)),
            Box::new(|| b.direct_inv_1()),
        ),
        (
            "invalidate_64",
            Box::new(args.inv64(&b)),
            Box::new(|| b.direct_inv_64()),
        ),
        (
            "map_unmap",
            Box::new(args.map_unmap(&b)),
            Box::new(|| b.direct_map_unmap()),
        ),
    ];
    for (name, front, direct) in &mut pairs {
        let (f, d) = interleaved(101, 200, front.as_mut(), direct.as_mut());
        println!(
            "{name:>14}: iommufd {f:>10.2} ns  direct {d:>10.2} ns  ratio {:.2}",
            f / d
        );
    }
}
