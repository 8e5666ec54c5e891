//! The device side's costs, side by side in one run against a private `vsvad` (the binary
//! `find_vsvad` locates; `cargo build --release -p vsvad` first):
//!
//! * `dma_copy/{4k,64k}`: a DMA read of 4 KiB and 64 KiB through the device TLB (every page
//!   a hit after the first pass) against a plain copy from the same shared mapping;
//! * `translate_miss`: one `ATS_TRANSLATE` round trip against a `PING` of the same size on
//!   the same kind of connection (the socket floor).
//!
//! Then, with device processes of their own (this binary run again as a device):
//!
//! * page-fault round trip: a device process writes to a page its PASID does not map (its
//!   translation request raises the page request); the owner (this process, its own
//!   connection and events channel) gets the `PAGE_REQUEST`, maps the page and answers
//!   (with no invalidation: the page was not present, and neither the IOMMU, which reports
//!   CAP.CM = 0, nor the device TLB caches a not-present entry, so there is nothing to
//!   flush); the response event carries the translation, and the device retries the DMA
//!   with no further request. Timed in the device from the DMA's start to its end (the
//!   retried DMA done), each round followed by a `PING` of the device's connection, the
//!   socket floor; p50 of both and their ratio;
//! * invalidation fan-out: 1, 8 and 32 device processes (each with its own connection and
//!   events channel) hold a translation of the PASID; the owner's PASID-wide `CACHE_INVLD`
//!   with device-TLB returns once every one acknowledged; p50 time for each count and the
//!   growth (8 ÷ 1, 32 ÷ 1).
//!
//! A summary prints the ratios.
//!
//! `cargo bench -p vsva-client --bench device`

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vsva_client::pgtable::{PageTables, P, RW, US};
use vsva_client::{
    find_vsvad, Client, ContainerHandle, DeviceHandle, DeviceOptions, Event, EventChannel,
    GuestMemory, MachineConfig, Options, PrivateDaemon,
};
use vsva_proto::{AtsRequest, Request, DMA_PASID, RESP_SUCCESS};
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity};

const GVA: u64 = 0x7f00_0000_0000;
const DATA: u64 = 4 << 20;
const SID: u16 = 0x0100;
/// The page the page-fault round trip faults on, and where the owner maps it.
const FAULT_VA: u64 = GVA + (1 << 20);
const FAULT_PA: u64 = DATA + (1 << 20);
/// Set in a device process: `socket|token|pasid|script`.
const DEVICE_ENV: &str = "VSVA_BENCH_DEVICE";

fn main() {
    if let Ok(spec) = std::env::var(DEVICE_ENV) {
        device_process(&spec);
        return;
    }
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build --release -p vsvad)");
    let daemon = start_daemon(&vsvad);
    let mem = GuestMemory::new(0, 16 << 20).unwrap();
    let Owner {
        client: mut owner,
        pasid,
        ..
    } = Owner::new(daemon.socket(), &mem);
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
        page_request_group: None,
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

    // The benchmarks with device processes, on a daemon of their own where this process is
    // the owner only (its events channel carries its page requests).
    drop(dev);
    drop(owner);
    drop(daemon);
    let daemon = start_daemon(&vsvad);
    let mem = GuestMemory::new(0, 16 << 20).unwrap();
    let mut o = Owner::new(daemon.socket(), &mem);
    o.events = Some(o.client.open_events().unwrap());
    page_fault_round_trip(&mut o, daemon.socket());
    invalidation_fan_out(&mut o, daemon.socket());
}

/// A private daemon with one ATS + PRI device.
fn start_daemon(vsvad: &Path) -> PrivateDaemon {
    let config = MachineConfig::new(0)
        .settings("[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\nats = true\npri = true\n")
        .to_toml();
    PrivateDaemon::start_with(vsvad, Some(&config), &[]).unwrap()
}

/// The owner's side of the multi-process benchmarks.
struct Owner<'a> {
    client: Client,
    events: Option<EventChannel>,
    c: ContainerHandle,
    pasid: u32,
    pt: PageTables<'a>,
}

impl<'a> Owner<'a> {
    /// The owner of a nesting container with `mem` as guest memory and a PASID bound to a
    /// table mapping 16 pages at `GVA` → `DATA`; the device's PASID, ATS and PRI on.
    fn new(socket: &Path, mem: &'a GuestMemory) -> Owner<'a> {
        let mut client = Client::connect(Options::new(socket, "bench-owner")).unwrap();
        let c = client.nesting_container(1).unwrap();
        client.attach_guest_memory(c, mem).unwrap();
        let pasid = client.pasid_alloc(c, 1, u32::MAX).unwrap();
        let mut pt = PageTables::new(mem, 1 << 20, 1 << 20, 4).unwrap();
        for page in 0..16u64 {
            pt.map(GVA + page * 4096, DATA + page * 4096, P | RW | US)
                .unwrap();
        }
        client
            .bind(
                c,
                &BindRequest::new(u64::from(pasid), pt.root(), AddrWidth::Bits48),
            )
            .unwrap();
        client.enable_pasid(SID).unwrap();
        client.enable_ats(SID).unwrap();
        client.enable_pri(SID, 32).unwrap();
        Owner {
            client,
            events: None,
            c,
            pasid,
            pt,
        }
    }

    fn invalidate(&mut self, granularity: Granularity) {
        let req = CacheInvalidateRequest::new(CacheSet::IOTLB | CacheSet::DEV_IOTLB, granularity)
            .unwrap();
        self.client.invalidate(self.c, &req).unwrap();
    }

    fn invalidate_page(&mut self, va: u64) {
        self.invalidate(Granularity::Addr {
            pasid: Some(u64::from(self.pasid)),
            archid: None,
            addr: va,
            granule_size: 0x1000,
            nb_granules: 1,
            leaf: true,
        });
    }

    /// Hands a grant to a new device process running `script`.
    fn spawn(&mut self, socket: &Path, script: &str) -> DeviceProcess {
        let token = self.client.grant_device(SID).unwrap();
        let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(
                DEVICE_ENV,
                format!("{}|{hex}|{}|{script}", socket.display(), self.pasid),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        DeviceProcess {
            child,
            stdin,
            stdout,
        }
    }
}

/// A device process, driven by lines on its standard input.
struct DeviceProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DeviceProcess {
    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// The next line it prints.
    fn line(&mut self) -> String {
        let mut l = String::new();
        assert!(
            self.stdout.read_line(&mut l).unwrap() > 0,
            "a device process ended"
        );
        l.trim_end().to_string()
    }
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn p50(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Page-fault round trips: the device's DMA to `FAULT_VA` faults, the owner maps the page,
/// invalidates and answers, the retried DMA completes. Between rounds (untimed) the owner
/// unmaps the page again and invalidates it.
fn page_fault_round_trip(o: &mut Owner, socket: &Path) {
    const ROUNDS: usize = 200;
    let mut dev = o.spawn(socket, "fault");
    assert_eq!(dev.line(), "READY");
    let (mut faults, mut pings) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        dev.say("go");
        let ev = loop {
            let (_, ev) = o.events.as_mut().unwrap().next_event().unwrap();
            if let Event::PageRequest(r) = ev {
                break r;
            }
        };
        // No invalidation: the page was not present, and nothing caches a not-present entry
        // (the IOMMU reports CAP.CM = 0, the device TLB keeps only translations), so there is
        // nothing to flush; Linux's SVA fault handler answers the same way.
        o.pt.map(FAULT_VA, FAULT_PA, P | RW | US).unwrap();
        o.client.page_response(ev.cookie, RESP_SUCCESS).unwrap();
        let times = dev.line();
        let mut it = times
            .split_whitespace()
            .skip(1)
            .map(|n| Duration::from_nanos(n.parse().unwrap()));
        faults.push(it.next().unwrap());
        pings.push(it.next().unwrap());
        // Not-present again for the next round; the device drops its translation.
        assert!(o.pt.unmap(FAULT_VA).unwrap());
        o.invalidate_page(FAULT_VA);
    }
    let (f, p) = (p50(&mut faults), p50(&mut pings));
    println!(
        "page-fault round trip p50: {f:?} vs ping p50 {p:?} ({:.2} socket round trips; target <= 4)",
        f.as_secs_f64() / p.as_secs_f64()
    );
}

/// Invalidation fan-out: `n` device processes hold a translation of the PASID; the owner's
/// PASID-wide invalidation returns once every one acknowledged.
fn invalidation_fan_out(o: &mut Owner, socket: &Path) {
    const ROUNDS: usize = 50;
    let mut results = Vec::new();
    for n in [1usize, 8, 32] {
        let mut devs: Vec<DeviceProcess> = (0..n).map(|_| o.spawn(socket, "hold")).collect();
        for d in &mut devs {
            assert_eq!(d.line(), "READY");
        }
        let mut times = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            // Every device caches the translation again (untimed).
            for d in &mut devs {
                d.say("fill");
            }
            for d in &mut devs {
                assert_eq!(d.line(), "READY");
            }
            let start = Instant::now();
            o.invalidate(Granularity::Pasid {
                pasid: Some(u64::from(o.pasid)),
                archid: None,
            });
            times.push(start.elapsed());
        }
        results.push((n, p50(&mut times)));
    }
    let one = results[0].1.as_secs_f64();
    for (n, t) in &results {
        println!(
            "invalidation fan-out to {n} device processes p50: {t:?} (growth {:.2} x one)",
            t.as_secs_f64() / one
        );
    }
}

/// A device process: `socket|token|pasid|script`. Scripts: `fault` (on each `go`, a timed
/// DMA write to the unmapped `FAULT_VA`, then a timed `PING`; prints `T dma_ns ping_ns`) and
/// `hold` (on each `fill`, a DMA read of `GVA` that caches its translation; prints `READY`).
fn device_process(spec: &str) {
    let mut parts = spec.splitn(4, '|');
    let socket = parts.next().unwrap().to_string();
    let hex = parts.next().unwrap();
    let pasid: u32 = parts.next().unwrap().parse().unwrap();
    let script = parts.next().unwrap();
    let mut token = [0u8; 16];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let mut d = DeviceHandle::open(
        Options::new(socket, "bench-device"),
        token,
        DeviceOptions::default(),
    )
    .unwrap();
    let mut buf = [0u8; 8];
    if script == "hold" {
        d.dma_read(Some(pasid), GVA, &mut buf).unwrap();
    }
    println!("READY");
    for line in std::io::stdin().lock().lines() {
        match (script, line.unwrap().as_str()) {
            ("fault", "go") => {
                let start = Instant::now();
                d.dma_write(Some(pasid), FAULT_VA, b"faulted!").unwrap();
                let dma = start.elapsed();
                let start = Instant::now();
                d.client().ping(&[0u8; 8]).unwrap();
                let ping = start.elapsed();
                println!("T {} {}", dma.as_nanos(), ping.as_nanos());
            }
            ("hold", "fill") => {
                d.dma_read(Some(pasid), GVA, &mut buf).unwrap();
                println!("READY");
            }
            _ => return,
        }
    }
}
