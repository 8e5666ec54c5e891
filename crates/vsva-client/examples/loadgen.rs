//! Load generator: throughput and round-trip latency of PASID alloc+free through `vsvad`,
//! for 1, 8 and 64 concurrent client processes, with the durable store on (`sync`) and off,
//! and the same call made in-process (`Container::ioctl`, no socket) in the same run.
//!
//! ```text
//! cargo build --release -p vsvad
//! cargo run --release -p vsva-client --example loadgen -- [--clients 1,8,64] [--seconds 2]
//!     [--modes sync,off] [--rate PAIRS_PER_SEC_PER_CLIENT] [--vsvad PATH]
//! ```
//!
//! Each client is its own process (this binary re-run as a worker), with its own connection,
//! its own nesting container and its own PASID context, so clients contend only where real
//! ones would: on the daemon and the store. A worker does `PASID_REQUEST(ALLOC)` then
//! `PASID_REQUEST(FREE)` of the PASID it got, timing each pair, for the given time: back to
//! back (closed loop, the default: measures throughput), or with `--rate` on a fixed schedule
//! (open loop: measures latency at a given offered load).
//!
//! Next to every `sync` point it measures the machine's own durability floor: writing a
//! 64-byte record to a file in the same directory as the daemon's state and `fdatasync`-ing
//! it, in the two ways a log can be written: appended (the file grows, so the sync also
//! commits the new size) and in place (over zeros written and synced beforehand, as the
//! daemon's log does). An acknowledged pair is two changes, each durable before its reply, so
//! a pair can be no faster than two such syncs one after the other; the table prints the
//! pair's p50 against two of the cheaper kind.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vsva_client::{find_vsvad, Client, MachineConfig, Options, PrivateDaemon};

const WORKER_ENV: &str = "VSVA_LOADGEN_WORKER";

fn main() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        worker(&spec);
        return;
    }
    let mut clients = vec![1usize, 8, 64];
    let mut seconds = 2.0f64;
    let mut modes = vec!["sync".to_string(), "off".to_string()];
    let mut vsvad: Option<PathBuf> = None;
    let mut rate = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--clients" => {
                clients = val()
                    .split(',')
                    .map(|c| c.parse().expect("client count"))
                    .collect()
            }
            "--seconds" => seconds = val().parse().expect("seconds"),
            "--modes" => modes = val().split(',').map(str::to_string).collect(),
            "--vsvad" => vsvad = Some(PathBuf::from(val())),
            "--rate" => rate = val().parse().expect("pairs per second per client"),
            "--help" | "-h" => {
                println!("loadgen [--clients 1,8,64] [--seconds 2] [--modes sync,async,off] [--rate PAIRS_PER_SEC_PER_CLIENT] [--vsvad PATH]");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let vsvad = find_vsvad(vsvad.as_deref())
        .expect("no vsvad binary: build it (cargo build --release -p vsvad) or pass --vsvad");
    let max_clients = clients.iter().copied().max().unwrap_or(1);
    let config = MachineConfig::new(max_clients as u32 + 1)
        .settings("pasid_quota = 100000\n[limits]\nmax_connections = 4096")
        .to_toml();
    let inproc = in_process(Duration::from_secs_f64(seconds.min(2.0)));
    println!(
        "in-process Container::ioctl alloc+free: {:.0} ns per pair (p50 {:.2} µs, p99 {:.2} µs)",
        inproc.0, inproc.1, inproc.2
    );
    let floor = socket_floor(Duration::from_secs_f64(seconds.min(1.0)));
    println!(
        "socket floor (two 16-byte round trips to an echo thread over a Unix socket): p50 {:.1} µs, p99 {:.1} µs",
        floor.0, floor.1
    );
    println!("(the socket floor is measured again just before each point below; the ratio uses that one)\n");
    println!("| store | clients | pairs/s | requests/s | p50 pair (µs) | p99 pair (µs) | p50 / in-process | socket floor p50 (µs) | p50 / socket floor | records per sync | probe fdatasync p50 (µs), appended / in place: back to back; at the daemon's cadence | p50 / 2 fdatasyncs of the cheaper kind: back to back / at cadence | daemon's mean write + fdatasync (µs) / probe's mean in place at cadence |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in &modes {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let daemon = PrivateDaemon::start_with(
            &vsvad,
            Some(&config),
            &[
                "--durability",
                mode,
                "--log",
                "error",
                "--metrics-addr",
                &addr,
            ],
        )
        .expect("start vsvad");
        for &n in &clients {
            // The transport floor, measured next to each point: the machine's load drifts.
            let floor = socket_floor(Duration::from_millis(300));
            let sync_floor = (mode == "sync")
                .then(|| fdatasync_floor(Duration::from_millis(600), Duration::ZERO));
            let before = store_counters(&addr);
            let (pairs, secs, mut lat) = run_point(daemon.socket(), n, seconds, rate);
            let after = store_counters(&addr);
            let commits = after.0.saturating_sub(before.0);
            let per_sync = if mode == "sync" && commits > 0 {
                format!(
                    "{:.1}",
                    after.1.saturating_sub(before.1) as f64 / commits as f64
                )
            } else {
                "-".into()
            };
            lat.sort_unstable();
            let p = |q: f64| {
                lat.get(((lat.len() as f64 - 1.0) * q) as usize)
                    .map_or(0.0, |&ns| ns as f64 / 1000.0)
            };
            let rate = pairs as f64 / secs;
            let syncs = after.3.saturating_sub(before.3);
            let daemon_sync = (syncs > 0).then(|| (after.2 - before.2) * 1e6 / syncs as f64);
            // A sync costs more when the device has been idle between syncs: measure it
            // again at the daemon's cadence (one sync per request: half a pair apart).
            let (sync_p50, sync_ratio, daemon_sync) = match sync_floor {
                Some(b2b) => {
                    let gap = (p(0.50) / 2.0 - b2b.cheaper()).max(0.0);
                    let paced = fdatasync_floor(
                        Duration::from_millis(600),
                        Duration::from_secs_f64(gap / 1e6),
                    );
                    (
                        format!(
                            "{:.1} / {:.1}; {:.1} / {:.1}",
                            b2b.appended.0, b2b.in_place.0, paced.appended.0, paced.in_place.0
                        ),
                        format!(
                            "{:.2}× / {:.2}×",
                            p(0.50) / (2.0 * b2b.cheaper()).max(0.001),
                            p(0.50) / (2.0 * paced.cheaper()).max(0.001)
                        ),
                        daemon_sync
                            .map_or("-".into(), |d| format!("{d:.1} / {:.1}", paced.in_place.1)),
                    )
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            println!(
                "| {mode} | {n} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0}× | {:.1} | {:.2}× | {per_sync} | {sync_p50} | {sync_ratio} | {daemon_sync} |",
                rate,
                2.0 * rate,
                p(0.50),
                p(0.99),
                p(0.50) * 1000.0 / inproc.0.max(1.0),
                floor.0,
                p(0.50) / floor.0.max(0.001)
            );
        }
        drop(daemon);
    }
}

/// (group commits, records, seconds spent in `fdatasync`, syncs) from the daemon's metrics
/// page.
fn store_counters(addr: &str) -> (u64, u64, f64, u64) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, 0, 0.0, 0);
    };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    let get = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    let get_f = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    (
        get("vsvad_store_commits_total "),
        get("vsvad_store_records_total "),
        get_f("vsvad_store_sync_seconds_sum{} "),
        get("vsvad_store_sync_seconds_count{} "),
    )
}

/// Runs `n` worker processes for `seconds`; returns pairs done, the measured time, and every
/// pair's latency in ns.
fn run_point(socket: &std::path::Path, n: usize, seconds: f64, rate: u64) -> (u64, f64, Vec<u32>) {
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<_> = (0..n)
        .map(|i| {
            Command::new(&exe)
                .env(
                    WORKER_ENV,
                    format!(
                        "{}|{}|{}|{rate}",
                        socket.display(),
                        i + 1,
                        (seconds * 1000.0) as u64
                    ),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    let mut outs: Vec<_> = workers
        .iter_mut()
        .map(|w| BufReader::new(w.stdout.take().unwrap()))
        .collect();
    for o in &mut outs {
        let mut line = String::new();
        o.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "worker failed to start: {line}");
    }
    let started = Instant::now();
    for w in &mut workers {
        let stdin = w.stdin.as_mut().unwrap();
        writeln!(stdin, "GO").unwrap();
        stdin.flush().unwrap();
    }
    let mut lat = Vec::new();
    let mut pairs = 0;
    for o in &mut outs {
        let mut bytes = Vec::new();
        o.read_to_end(&mut bytes).unwrap();
        pairs += (bytes.len() / 4) as u64;
        lat.extend(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    let secs = started
        .elapsed()
        .as_secs_f64()
        .min(seconds * 1.05)
        .max(seconds);
    for mut w in workers {
        let _ = w.wait();
    }
    (pairs, secs, lat)
}

fn worker(spec: &str) {
    let mut parts = spec.split('|');
    let socket = PathBuf::from(parts.next().unwrap());
    let group: u32 = parts.next().unwrap().parse().unwrap();
    let millis: u64 = parts.next().unwrap().parse().unwrap();
    let rate: u64 = parts.next().unwrap().parse().unwrap();
    // Open loop when a rate is given: pairs start on a fixed schedule (with a random phase),
    // whatever the previous one took; 0 = closed loop, back to back.
    let interval = (rate > 0).then(|| Duration::from_nanos(1_000_000_000 / rate));
    let mut client = Client::connect(Options::new(&socket, "loadgen")).expect("connect");
    let c = client.nesting_container(group).expect("nesting container");
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_millis(millis);
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
    let mut next = start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(f64::from(std::process::id() % 1000) / 1000.0)
        });
    while Instant::now() < deadline {
        if let Some(i) = interval {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += i;
        }
        let t = Instant::now();
        let p = client.pasid_alloc(c, 1, u32::MAX).expect("alloc");
        client.pasid_free(c, p, p).expect("free");
        lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    let bytes: Vec<u8> = lat.iter().flat_map(|v| v.to_le_bytes()).collect();
    out.write_all(&bytes).unwrap();
}

/// The cost of the transport alone: two round trips of 16 bytes to an echo thread over a
/// Unix socket pair (p50, p99 in µs per pair of round trips).
fn socket_floor(time: Duration) -> (f64, f64) {
    use std::os::unix::net::UnixStream;
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut lat = Vec::new();
    let deadline = Instant::now() + time;
    let mut buf = [0u8; 16];
    while Instant::now() < deadline {
        let t = Instant::now();
        for _ in 0..2 {
            a.write_all(&buf).unwrap();
            a.read_exact(&mut buf).unwrap();
        }
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    drop(a);
    let _ = echo.join();
    lat.sort_by(f64::total_cmp);
    (lat[lat.len() / 2], lat[(lat.len() - 1) * 99 / 100])
}

/// The machine's durability floor, both ways a log can be written; each is (p50, mean) in µs.
struct SyncFloor {
    /// Appending: the file grows, so each `fdatasync` also commits the new size.
    appended: (f64, f64),
    /// Overwriting zeros written and synced beforehand, as the daemon's log does.
    in_place: (f64, f64),
}

impl SyncFloor {
    /// The p50 of the cheaper kind: the floor the daemon's syncs are held against.
    fn cheaper(&self) -> f64 {
        self.appended.0.min(self.in_place.0)
    }
}

/// Measures [`SyncFloor`]: writing a 64-byte record to a file in the temporary directory
/// (where the private daemon keeps its state) and `fdatasync`-ing it, as the store does for a
/// batch of one record, with `gap` between one sync's end and the next write; each kind for
/// half of `time`.
fn fdatasync_floor(time: Duration, gap: Duration) -> SyncFloor {
    SyncFloor {
        appended: fdatasync_probe(time / 2, gap, false),
        in_place: fdatasync_probe(time / 2, gap, true),
    }
}

/// One kind of [`fdatasync_floor`]: p50 and mean in µs; `in_place` first fills the file with
/// 4 MiB of zeros and syncs it, then writes the records over them.
fn fdatasync_probe(time: Duration, gap: Duration, in_place: bool) -> (f64, f64) {
    use std::os::unix::fs::FileExt;

    let path = std::env::temp_dir().join(format!(
        "vsva-loadgen-sync-{}-{in_place}",
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create the fdatasync probe file");
    let zeros = 4u64 << 20;
    if in_place {
        file.write_all_at(&vec![0; zeros as usize], 0).unwrap();
        file.sync_all().unwrap();
    }
    let record = [0x5au8; 64];
    let mut offset = 0;
    let mut lat = Vec::new();
    let deadline = Instant::now() + time;
    while Instant::now() < deadline || lat.len() < 10 {
        if in_place && offset + 64 > zeros {
            break;
        }
        let t = Instant::now();
        file.write_all_at(&record, offset).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
        offset += 64;
        // Busy-wait the gap: a sleep would add the scheduler's wake-up to it.
        let until = Instant::now() + gap;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    lat.sort_by(f64::total_cmp);
    (lat[lat.len() / 2], mean)
}

/// The same alloc+free pair through `Container::ioctl` in this process: mean ns per pair,
/// p50 and p99 in µs.
fn in_process(time: Duration) -> (f64, f64, f64) {
    use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
    use vsva_uapi::{vfio::VFIO_IOMMU_PASID_REQUEST, PasidRequestOp};
    use vsva_vfio::{GroupId, IommuType, PciFunctionSpec, ProcessToken, Vfio, VfioConfig};

    let mem = HostMemory::anonymous(&[(0, 32 << 20)]).unwrap();
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 0, 32 << 20).unwrap());
    let vfio = Vfio::new(iommu, VfioConfig::default()).unwrap();
    vfio.add_pci_function(PciFunctionSpec::new(
        SourceId::new(0, 3, 0),
        Some(GroupId(1)),
    ))
    .unwrap();
    let c = vfio.open_container(ProcessToken::new(std::process::id(), 1));
    c.attach_group(GroupId(1)).unwrap();
    c.set_iommu(IommuType::Nesting).unwrap();
    let alloc = PasidRequestOp::Alloc {
        min: 1,
        max: u32::MAX,
    }
    .to_bytes();
    let mut lat = Vec::new();
    let deadline = Instant::now() + time;
    let started = Instant::now();
    let mut pairs = 0u64;
    while Instant::now() < deadline {
        // Batches of 256 pairs: one timestamp pair per pair would dominate the measurement.
        let t = Instant::now();
        for _ in 0..256 {
            let p = c
                .ioctl(VFIO_IOMMU_PASID_REQUEST, &mut alloc.clone())
                .unwrap()
                .value() as u32;
            let mut free = PasidRequestOp::Free { min: p, max: p }.to_bytes();
            c.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut free).unwrap();
        }
        lat.push(t.elapsed().as_nanos() as f64 / 256.0);
        pairs += 256;
    }
    let mean = started.elapsed().as_nanos() as f64 / pairs as f64;
    lat.sort_by(f64::total_cmp);
    let q = |x: f64| lat[((lat.len() as f64 - 1.0) * x) as usize] / 1000.0;
    (mean, q(0.5), q(0.99))
}
