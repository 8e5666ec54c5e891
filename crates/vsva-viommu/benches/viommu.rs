//! The cost the device model adds, in process, side by side with the host calls it ends in:
//!
//! * `bind_unbind`: the guest writes a first-level PASID entry, queues a PASID-cache
//!   invalidation and moves IQT (→ NESTING_OP BIND), then clears the entry and does it again
//!   (→ UNBIND), against `Container::bind` + `Container::unbind` on an identical host;
//! * `iotlb`: a page-selective PASID-based IOTLB descriptor and an IQT write (→ CACHE_INVLD),
//!   against `Container::invalidate` with the same range;
//! * `vcmd`: VCMD allocate then free (→ PASID_REQUEST ×2), against `Container::alloc_pasid`
//!   + `Container::free_pasids`.
//!
//! Criterion measures each; a summary then times the pairs interleaved in rounds and prints
//! the medians and the device model's ratio to the direct call (target: ≤ 1.30).
//!
//! `cargo bench -p vsva-viommu --bench viommu` (add `-- --quick` for a shorter run;
//! `-- --test` runs every case once, untimed).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::Criterion;
use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity};
use vsva_vfio::{
    Container, DmaMapping, GroupId, IommuType, PciFunctionSpec, ProcessToken, Vfio, VfioConfig,
};
use vsva_viommu::regs::{GCMD, IQA, IQT, RTADDR, VCMD, VCRSP};
use vsva_viommu::{GuestDevice, GuestMemory, HostWindow, LocalBackend, Viommu, ViommuConfig};

const MB: u64 = 1 << 20;
const SID: SourceId = SourceId::new(0, 3, 0);
const ROOT: u64 = 0x1000;
const DIR: u64 = 0x3000;
const TABLE: u64 = 0x4000;
const QUEUE: u64 = 0x10_0000;
const PGD: u64 = 0x20_0000;

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
    ram: Arc<HostWindow>,
    tail: u64,
    pasid: u32,
}

impl Guest {
    fn new() -> Guest {
        let (iommu, c) = host();
        let ram = Arc::new(HostWindow::new(iommu.clone(), 16 * MB, 16 * MB));
        let config = ViommuConfig {
            devices: vec![GuestDevice {
                guest: SID,
                host: SID,
            }],
            ..ViommuConfig::default()
        };
        let backend = Box::new(LocalBackend::new(c, iommu));
        let viommu = Viommu::new(config, backend, ram.clone(), Arc::new(|_| {})).unwrap();
        let w = |gpa: u64, v: u64| ram.write(gpa, &v.to_le_bytes()).unwrap();
        w(ROOT, 0x2000 | 1);
        w(0x2000 + u64::from(SID.devfn()) * 32, DIR | 1 << 3 | 1);
        w(DIR, TABLE | 1);
        viommu.write(RTADDR, 8, ROOT | 1 << 10);
        viommu.write(GCMD, 4, 1 << 30);
        viommu.write(IQA, 8, QUEUE | 1 << 11);
        viommu.write(GCMD, 4, 1 << 26);
        viommu.write(GCMD, 4, 1 << 26 | 1 << 31);
        viommu.write(VCMD, 8, 1);
        let pasid = (viommu.read(VCRSP, 8) >> 16) as u32;
        Guest {
            viommu,
            ram,
            tail: 0,
            pasid,
        }
    }

    fn w(&self, gpa: u64, v: u64) {
        self.ram.write(gpa, &v.to_le_bytes()).unwrap();
    }

    /// Queues one 256-bit descriptor (upper qwords stay zero) and moves IQT.
    fn submit(&mut self, lo: u64, hi: u64) {
        self.w(QUEUE + self.tail, lo);
        self.w(QUEUE + self.tail + 8, hi);
        self.advance();
    }

    /// Fills every slot of the queue with one descriptor, so that a case only moves IQT: the
    /// guest writes its descriptors into its own RAM at memory speed, which is not the
    /// device model's cost.
    fn fill(&mut self, lo: u64, hi: u64) {
        for slot in (0..4096).step_by(32) {
            self.w(QUEUE + slot, lo);
            self.w(QUEUE + slot + 8, hi);
        }
    }

    /// Moves IQT past the next descriptor: the device model fetches and carries it out.
    fn advance(&mut self) {
        self.tail = (self.tail + 32) % 4096;
        self.viommu.write(IQT, 8, self.tail);
    }

    fn entry(&self) -> u64 {
        TABLE + u64::from(self.pasid & 63) * 64
    }

    /// With the queue full of PASID-cache invalidations of the PASID: entry present, flush
    /// (→ bind); entry cleared, flush (→ unbind).
    fn bind_unbind(&mut self) {
        self.w(self.entry(), 1 | 1 << 6);
        self.advance();
        self.w(self.entry(), 0);
        self.advance();
    }

    /// With the queue full of page-selective PASID-based IOTLB invalidations (4 pages).
    fn iotlb(&mut self) {
        self.advance();
    }

    fn vcmd(&mut self) {
        self.viommu.write(VCMD, 8, 1);
        let p = self.viommu.read(VCRSP, 8) >> 16;
        self.viommu.write(VCMD, 8, p << 16 | 2);
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
        let g = Granularity::Addr {
            pasid: Some(u64::from(self.pasid)),
            archid: None,
            addr: 0x40_0000,
            granule_size: 4096,
            nb_granules: 4,
            leaf: false,
        };
        let req = CacheInvalidateRequest::new(CacheSet::IOTLB, g).unwrap();
        self.c.invalidate(&req).unwrap();
    }

    fn vcmd(&self) {
        let p = self.c.alloc_pasid(1, (1 << 20) - 1).unwrap();
        self.c.free_pasids(p, p).unwrap();
    }
}

fn median_ns(f: &mut dyn FnMut(), iters: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// Median ns per call of each side over 31 interleaved rounds.
fn side_by_side(
    name: &'static str,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (&'static str, f64, f64) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..31 {
        xs.push(median_ns(&mut a, 2000));
        ys.push(median_ns(&mut b, 2000));
    }
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    (name, xs[15], ys[15])
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut guest = Guest::new();
    let direct = Direct::new();
    let mut rows = Vec::new();
    // The IOTLB case needs the PASID bound on both sides.
    let pc = 7 | 1 << 4 | u64::from(guest.pasid) << 32;
    guest.w(guest.entry() + 16, PGD);
    guest.w(guest.entry(), 1 | 1 << 6);
    guest.submit(pc, 0);
    assert_eq!(guest.viommu.bound_pasids(), vec![guest.pasid]);
    let bound = BindRequest::new(u64::from(direct.pasid), PGD, AddrWidth::Bits48);
    direct.c.bind(&bound).unwrap();
    guest.fill(6 | 3 << 4 | u64::from(guest.pasid) << 32, 0x40_0000 | 2);
    c.bench_function("iotlb/viommu", |b| b.iter(|| guest.iotlb()));
    c.bench_function("iotlb/direct", |b| b.iter(|| direct.iotlb()));
    c.bench_function("vcmd/viommu", |b| b.iter(|| guest.vcmd()));
    c.bench_function("vcmd/direct", |b| b.iter(|| direct.vcmd()));
    rows.push(side_by_side(
        "P-IOTLB descriptor -> CACHE_INVLD",
        || guest.iotlb(),
        || direct.iotlb(),
    ));
    rows.push(side_by_side(
        "VCMD alloc+free -> PASID_REQUEST x2",
        || guest.vcmd(),
        || direct.vcmd(),
    ));
    // Back to unbound for the bind case.
    guest.fill(pc, 0);
    guest.w(guest.entry(), 0);
    guest.advance();
    direct.c.unbind(bound.hpasid).unwrap();
    c.bench_function("bind_unbind/viommu", |b| b.iter(|| guest.bind_unbind()));
    c.bench_function("bind_unbind/direct", |b| b.iter(|| direct.bind_unbind()));
    rows.push(side_by_side(
        "PASID-cache inv -> bind, then -> unbind",
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
