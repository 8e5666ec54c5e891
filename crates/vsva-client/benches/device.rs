//! The device side's costs, side by side in one run against a private `vsvad` (the binary
//! `find_vsvad` locates; `cargo build --release -p vsvad` first):
//!
//! * `dma_copy/{4k,64k}`: a DMA read of 4 KiB and 64 KiB through the device TLB (every page
//!   a hit after the first pass) against a plain copy from the same shared mapping;
//! * `translate_miss`: one `ATS_TRANSLATE` round trip against a `PING` of the same size on
//!   the same kind of connection (the socket floor).
//!
//! A summary prints the ratios. Not measured here (they need several processes): the
//! page-fault round trip and the invalidation fan-out; `tests/device_side.rs` exercises both
//! paths.
//!
//! `cargo bench -p vsva-client --bench device`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use vsva_client::pgtable::{PageTables, P, RW, US};
use vsva_client::{
    find_vsvad, Client, DeviceHandle, DeviceOptions, GuestMemory, MachineConfig, Options,
    PrivateDaemon,
};
use vsva_proto::{AtsRequest, Request, DMA_PASID};
use vsva_uapi::{AddrWidth, BindRequest};

const GVA: u64 = 0x7f00_0000_0000;
const DATA: u64 = 4 << 20;
const SID: u16 = 0x0100;

fn main() {
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build --release -p vsvad)");
    let config = MachineConfig::new(0)
        .settings("[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\nats = true\n")
        .to_toml();
    let daemon = PrivateDaemon::start_with(&vsvad, Some(&config), &[]).unwrap();
    let mut owner = Client::connect(Options::new(daemon.socket(), "bench-owner")).unwrap();
    let c = owner.nesting_container(1).unwrap();
    let mem = GuestMemory::new(0, 16 << 20).unwrap();
    owner.attach_guest_memory(c, &mem).unwrap();
    let pasid = owner.pasid_alloc(c, 1, u32::MAX).unwrap();
    let mut pt = PageTables::new(&mem, 1 << 20, 1 << 20, 4).unwrap();
    for page in 0..16u64 {
        pt.map(GVA + page * 4096, DATA + page * 4096, P | RW | US)
            .unwrap();
    }
    owner
        .bind(
            c,
            &BindRequest::new(u64::from(pasid), pt.root(), AddrWidth::Bits48),
        )
        .unwrap();
    owner.enable_pasid(SID).unwrap();
    owner.enable_ats(SID).unwrap();
    let token = owner.grant_device(SID).unwrap();
    let mut dev = DeviceHandle::open(
        Options::new(daemon.socket(), "bench-device"),
        token,
        DeviceOptions::default(),
    )
    .unwrap();
    let mut floor = Client::connect(Options::new(daemon.socket(), "bench-floor")).unwrap();

    let mut crit = Criterion::default().configure_from_args();
    let mut buf = vec![0u8; 64 << 10];
    for (name, len) in [("4k", 4096usize), ("64k", 64 << 10)] {
        let mut g = crit.benchmark_group(format!("dma_copy/{name}"));
        g.bench_function("device_tlb", |b| {
            b.iter(|| dev.dma_read(Some(pasid), GVA, &mut buf[..len]).unwrap())
        });
        g.bench_function("memcpy", |b| {
            b.iter(|| mem.read(DATA, black_box(&mut buf[..len])).unwrap())
        });
        g.finish();
    }
    let ask = Request::AtsTranslate(AtsRequest {
        source_id: SID,
        flags: DMA_PASID,
        pasid,
        addr: GVA,
    });
    let body_len = ask.encode_body().len();
    let mut g = crit.benchmark_group("translate_miss");
    g.bench_function("ats_translate", |b| {
        b.iter(|| dev.client().call(ask.clone()).unwrap())
    });
    g.bench_function("ping_floor", |b| {
        b.iter(|| floor.ping(&vec![0u8; body_len]).unwrap())
    });
    g.finish();
    crit.final_summary();

    // Ratios from interleaved rounds.
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..200 {
            f();
        }
        start.elapsed() / 200
    };
    let mut rows: Vec<(&str, Duration, Duration)> = Vec::new();
    for (name, len) in [("dma 4k", 4096usize), ("dma 64k", 64 << 10)] {
        let d = time(&mut || dev.dma_read(Some(pasid), GVA, &mut buf[..len]).unwrap());
        let m = time(&mut || mem.read(DATA, &mut buf[..len]).unwrap());
        rows.push((name, d, m));
    }
    let t = time(&mut || {
        dev.client().call(ask.clone()).unwrap();
    });
    let p = time(&mut || {
        floor.ping(&vec![0u8; body_len]).unwrap();
    });
    rows.push(("translate miss vs ping", t, p));
    for (name, a, b) in rows {
        println!(
            "{name}: {a:?} vs {b:?} (ratio {:.2})",
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}
