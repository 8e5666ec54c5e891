//! Load generator: throughput and round-trip latency of PASID alloc+free through `vsvad`,
//! for 1, 8 and 64 concurrent clients, with the durable store on (`sync`) and off, and the
//! same call made in-process (`Container::ioctl`, no socket) in the same run.
//!
//! ```text
//! cargo build --release -p vsvad
//! cargo run --release -p vsva-client --example loadgen -- [--clients 1,8,64,8x8] [--seconds 2]
//!     [--modes sync,off] [--rate PAIRS_PER_SEC_PER_CONNECTION] [--connections-per-client K]
//!     [--vsvad PATH[,PATH...]]
//! ```
//!
//! # Two ways to drive the connections
//!
//! * **A process per connection** (the default, `--clients 8,64`): each client is its own
//!   process (this binary re-run as a worker) with one connection, its own nesting container
//!   and its own PASID context, so clients contend only where real ones would: on the daemon
//!   and the store. Each worker does `PASID_REQUEST(ALLOC)` then `PASID_REQUEST(FREE)` of the
//!   PASID it got, timing each pair, through the blocking `Client`.
//! * **Several connections per process** (`--clients 8x8`, or `--connections-per-client 8`
//!   for every plain entry): `P` worker processes each open `K` connections and drive them
//!   from one thread with `poll`, each connection with one request outstanding and its own
//!   nesting container (on a device of its own). The daemon keeps one PASID context per
//!   process, so the `K` connections of a worker share it, as a real client's connections do.
//!   64 connections as 8 processes × 8 keep the number of client processes (and so their
//!   share of the CPU and the scheduler's work) equal to the 8-client point, and change only
//!   what the daemon sees. The table's `clients` column counts processes, `connections` the
//!   connections.
//!
//! Either way a connection's pairs run back to back (closed loop, the default: measures
//! throughput), or with `--rate` on a fixed schedule of that many pairs per second per
//! connection (open loop: measures latency at a given offered load).
//!
//! # Comparing daemons
//!
//! `--vsvad A,B` starts one private daemon from each binary (per store mode) and runs every
//! point on each in turn, so the builds are compared side by side in one run, under the same
//! load; the `daemon` column names the binary.
//!
//! # The durability floor
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
use vsva_proto::{
    encode_request, FrameDecoder, Hello, Reply, Request, ResumeToken, HARD_MAX_BODY,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use vsva_uapi::vfio::{VFIO_IOMMU_PASID_REQUEST, VFIO_SET_IOMMU, VFIO_TYPE1_NESTING_IOMMU};
use vsva_uapi::PasidRequestOp;

const WORKER_ENV: &str = "VSVA_LOADGEN_WORKER";

fn main() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        worker(&spec);
        return;
    }
    let mut clients: Vec<(usize, Option<usize>)> = vec![(1, None), (8, None), (64, None)];
    let mut per_client = 1usize;
    let mut seconds = 2.0f64;
    let mut modes = vec!["sync".to_string(), "off".to_string()];
    let mut vsvads: Vec<PathBuf> = Vec::new();
    let mut rate = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--clients" => clients = val().split(',').map(parse_point).collect(),
            "--connections-per-client" => {
                per_client = val().parse().expect("connections per client");
                assert!(
                    per_client > 0,
                    "--connections-per-client must be at least 1"
                );
            }
            "--seconds" => seconds = val().parse().expect("seconds"),
            "--modes" => modes = val().split(',').map(str::to_string).collect(),
            "--vsvad" => vsvads = val().split(',').map(PathBuf::from).collect(),
            "--rate" => rate = val().parse().expect("pairs per second per connection"),
            "--help" | "-h" => {
                println!("loadgen [--clients 1,8,64,8x8] [--connections-per-client K] [--seconds 2] [--modes sync,async,off] [--rate PAIRS_PER_SEC_PER_CONNECTION] [--vsvad PATH[,PATH...]]");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    // (processes, connections per process) for each point.
    let points: Vec<(usize, usize)> = clients
        .iter()
        .map(|&(n, k)| (n, k.unwrap_or(per_client)))
        .collect();
    let vsvads: Vec<PathBuf> = if vsvads.is_empty() {
        vec![find_vsvad(None)
            .expect("no vsvad binary: build it (cargo build --release -p vsvad) or pass --vsvad")]
    } else {
        vsvads
            .iter()
            .map(|p| find_vsvad(Some(p)).expect("the --vsvad binary cannot be used"))
            .collect()
    };
    let max_conns = points.iter().map(|&(n, k)| n * k).max().unwrap_or(1);
    let config = MachineConfig::new(max_conns as u32 + 1)
        .settings("pasid_quota = 100000\n[limits]\nmax_connections = 4096\nmax_connections_per_uid = 4096")
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
    for (i, v) in vsvads.iter().enumerate() {
        println!("daemon {}: {}", i + 1, v.display());
    }
    println!("(the socket floor is measured again just before each point below; the ratio uses that one)\n");
    println!("| store | clients | connections | daemon | pairs/s | requests/s | p50 pair (µs) | p99 pair (µs) | p99 / p50 | daemon per request: CPU µs / voluntary / involuntary switches | clients per request: CPU µs / voluntary / involuntary switches | p50 / in-process | socket floor p50 (µs) | p50 / socket floor | records per sync | probe fdatasync p50 (µs), appended / in place: back to back; at the daemon's cadence | p50 / 2 fdatasyncs of the cheaper kind: back to back / at cadence | daemon's mean write + fdatasync (µs) / probe's mean in place at cadence |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mode in &modes {
        let daemons: Vec<(PrivateDaemon, u32, String)> = vsvads
            .iter()
            .map(|vsvad| {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let addr = format!("127.0.0.1:{port}");
                let daemon = PrivateDaemon::start_with(
                    vsvad,
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
                let pid = daemon_pid(daemon.socket());
                (daemon, pid, addr)
            })
            .collect();
        for &(n, k) in &points {
            for (d, (daemon, pid, addr)) in daemons.iter().enumerate() {
                let row = measure(daemon, *pid, addr, mode, n, k, seconds, rate, inproc.0);
                println!("| {mode} | {n} | {} | {} | {row}", n * k, d + 1);
            }
        }
    }
}

/// A `--clients` entry: `P` (processes, each with `--connections-per-client` connections) or
/// `PxK` (P processes with K connections each).
fn parse_point(s: &str) -> (usize, Option<usize>) {
    match s.split_once('x') {
        Some((p, k)) => {
            let k: usize = k.parse().expect("connections per client in PxK");
            assert!(k > 0, "PxK needs K of at least 1");
            (p.parse().expect("client count in PxK"), Some(k))
        }
        None => (s.parse().expect("client count"), None),
    }
}

/// Runs one point on one daemon and formats the rest of its table row (from `pairs/s` on).
#[allow(clippy::too_many_arguments)]
fn measure(
    daemon: &PrivateDaemon,
    pid: u32,
    addr: &str,
    mode: &str,
    n: usize,
    k: usize,
    seconds: f64,
    rate: u64,
    inproc_ns: f64,
) -> String {
    // The transport floor, measured next to each point: the machine's load drifts.
    let floor = socket_floor(Duration::from_millis(300));
    let sync_floor =
        (mode == "sync").then(|| fdatasync_floor(Duration::from_millis(600), Duration::ZERO));
    let before = store_counters(addr);
    let daemon_before = usage(pid);
    let (pairs, secs, mut lat, clients) = run_point(daemon.socket(), n, k, seconds, rate);
    let daemon_cost = usage(pid).since(daemon_before);
    let after = store_counters(addr);
    let requests = 2.0 * pairs as f64;
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
    // A sync costs more when the device has been idle between syncs: measure it again at the
    // daemon's cadence (one sync per request: half a pair apart).
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
                daemon_sync.map_or("-".into(), |d| format!("{d:.1} / {:.1}", paced.in_place.1)),
            )
        }
        None => ("-".into(), "-".into(), "-".into()),
    };
    format!(
        "{:.0} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} | {:.0}× | {:.1} | {:.2}× | {per_sync} | {sync_p50} | {sync_ratio} | {daemon_sync} |",
        rate,
        2.0 * rate,
        p(0.50),
        p(0.99),
        p(0.99) / p(0.50).max(0.001),
        daemon_cost.per_request(requests),
        clients.per_request(requests),
        p(0.50) * 1000.0 / inproc_ns.max(1.0),
        floor.0,
        p(0.50) / floor.0.max(0.001)
    )
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

/// Runs `n` worker processes of `k` connections each for `seconds`; returns pairs done, the
/// measured time, every pair's latency in ns, and what the workers cost together (from their
/// start, connecting included).
fn run_point(
    socket: &std::path::Path,
    n: usize,
    k: usize,
    seconds: f64,
    rate: u64,
) -> (u64, f64, Vec<u32>, Usage) {
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<_> = (0..n)
        .map(|i| {
            Command::new(&exe)
                .env(
                    WORKER_ENV,
                    format!(
                        "{}|{}|{k}|{}|{rate}",
                        socket.display(),
                        i * k + 1,
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
    let mut clients = Usage::default();
    for o in &mut outs {
        let mut bytes = Vec::new();
        o.read_to_end(&mut bytes).unwrap();
        assert!(bytes.len() >= Usage::LEN, "a worker ended early");
        clients.add(Usage::from_bytes(&bytes[..Usage::LEN]));
        let bytes = &bytes[Usage::LEN..];
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
    (pairs, secs, lat, clients)
}

/// A worker process: `socket|first group|connections|milliseconds|rate`. It connects, says
/// READY, waits for GO on its standard input, runs its pairs and writes their latencies (ns,
/// u32 little-endian) to its standard output.
fn worker(spec: &str) {
    let mut parts = spec.split('|');
    let socket = PathBuf::from(parts.next().unwrap());
    let group: u32 = parts.next().unwrap().parse().unwrap();
    let k: usize = parts.next().unwrap().parse().unwrap();
    let millis: u64 = parts.next().unwrap().parse().unwrap();
    let rate: u64 = parts.next().unwrap().parse().unwrap();
    // Open loop when a rate is given: pairs start on a fixed schedule (with a random phase),
    // whatever the previous one took; 0 = closed loop, back to back.
    let interval = (rate > 0).then(|| Duration::from_nanos(1_000_000_000 / rate));
    let run = Duration::from_millis(millis);
    let lat = if k == 1 {
        let mut client = Client::connect(Options::new(&socket, "loadgen")).expect("connect");
        let c = client.nesting_container(group).expect("nesting container");
        ready_and_wait();
        one_connection(&mut client, c, run, interval)
    } else {
        let mut conns: Vec<RawConn> = (0..k)
            .map(|j| RawConn::open(&socket, group + j as u32))
            .collect();
        ready_and_wait();
        poll_connections(&mut conns, run, interval)
    };
    // What this process cost, then the latencies.
    let mut bytes = usage(std::process::id()).to_bytes().to_vec();
    bytes.extend(lat.iter().flat_map(|v| v.to_le_bytes()));
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes).unwrap();
}

/// What a process's threads together have cost so far: time on a CPU, time runnable but
/// waiting for one (both from `/proc/<pid>/task/*/schedstat`, in ns), and context switches
/// (`/proc/<pid>/task/*/status`), voluntary (it waited) and not (it was preempted).
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu_ns: u64,
    wait_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

impl Usage {
    const LEN: usize = 32;

    fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        for (i, v) in [self.cpu_ns, self.wait_ns, self.voluntary, self.involuntary]
            .into_iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8]) -> Usage {
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Usage {
            cpu_ns: v(0),
            wait_ns: v(1),
            voluntary: v(2),
            involuntary: v(3),
        }
    }

    fn add(&mut self, o: Usage) {
        self.cpu_ns += o.cpu_ns;
        self.wait_ns += o.wait_ns;
        self.voluntary += o.voluntary;
        self.involuntary += o.involuntary;
    }

    fn since(self, before: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(before.wait_ns),
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }

    /// `cpu µs / switches` per request, for the table.
    fn per_request(self, requests: f64) -> String {
        let r = requests.max(1.0);
        format!(
            "{:.2} / {:.2} / {:.2}",
            self.cpu_ns as f64 / 1000.0 / r,
            self.voluntary as f64 / r,
            self.involuntary as f64 / r
        )
    }
}

/// [`Usage`] of process `pid` (all zero where `/proc` cannot be read).
fn usage(pid: u32) -> Usage {
    let mut u = Usage::default();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return u;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        if let Ok(s) = std::fs::read_to_string(dir.join("schedstat")) {
            let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            u.cpu_ns += f.next().unwrap_or(0);
            u.wait_ns += f.next().unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("status")) {
            for line in s.lines() {
                let num = |l: &str| l.split_whitespace().nth(1).and_then(|v| v.parse().ok());
                if line.starts_with("voluntary_ctxt_switches") {
                    u.voluntary += num(line).unwrap_or(0);
                } else if line.starts_with("nonvoluntary_ctxt_switches") {
                    u.involuntary += num(line).unwrap_or(0);
                }
            }
        }
    }
    u
}

/// The pid of the daemon listening on `socket` (its peer credentials).
fn daemon_pid(socket: &std::path::Path) -> u32 {
    let s =
        std::os::unix::net::UnixStream::connect(socket).expect("connect to read the daemon's pid");
    let cred = rustix::net::sockopt::socket_peercred(&s).expect("SO_PEERCRED");
    cred.pid.as_raw_nonzero().get() as u32
}

/// Tells the parent this worker is connected, and waits for its GO.
fn ready_and_wait() {
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

/// When the first pair of a connection starts: a phase in `[0, interval)` spread by `seed`,
/// so that open-loop connections do not all start together.
fn first_start(start: Instant, interval: Option<Duration>, seed: u32) -> Instant {
    start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(f64::from(seed % 1000) / 1000.0)
        })
}

fn elapsed_ns(t: Instant) -> u32 {
    t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32
}

/// The process-per-connection mode: pairs through the blocking `Client`.
fn one_connection(
    client: &mut Client,
    c: vsva_client::ContainerHandle,
    run: Duration,
    interval: Option<Duration>,
) -> Vec<u32> {
    let start = Instant::now();
    let deadline = start + run;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
    let mut next = first_start(start, interval, std::process::id());
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
        lat.push(elapsed_ns(t));
    }
    lat
}

/// Where a connection of the multi-connection mode is in its pair.
enum Step {
    /// Waiting for the next pair's start (open loop) or for the run to begin.
    Idle,
    /// The ALLOC is out.
    Alloc,
    /// The FREE of the PASID the ALLOC got is out.
    Free,
    /// The run is over for this connection.
    Done,
}

/// One connection of the multi-connection mode, spoken to with `vsva-proto` frames directly
/// (the blocking `Client` cannot wait on several connections at once). Its socket stays
/// blocking: requests are a few dozen bytes, and it is read only when `poll` says readable.
struct RawConn {
    stream: std::os::unix::net::UnixStream,
    dec: FrameDecoder,
    next_id: u64,
    container: u32,
    step: Step,
    /// When the current pair started.
    at: Instant,
    /// When the next pair is due (open loop: on a fixed schedule).
    next: Instant,
}

impl RawConn {
    /// Connects, says hello and makes a nesting container on `group`.
    fn open(socket: &std::path::Path, group: u32) -> RawConn {
        let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        let mut c = RawConn {
            stream,
            dec: FrameDecoder::new(HARD_MAX_BODY),
            next_id: 1,
            container: 0,
            step: Step::Idle,
            at: Instant::now(),
            next: Instant::now(),
        };
        c.call(&Request::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            resume: ResumeToken::default(),
            client: "loadgen".into(),
        }));
        c.container = c.call(&Request::OpenContainer) as u32;
        c.call(&Request::AttachGroup {
            handle: c.container,
            group,
        });
        c.call(&Request::Ioctl {
            handle: c.container,
            cmd: VFIO_SET_IOMMU,
            arg: u64::from(VFIO_TYPE1_NESTING_IOMMU).to_le_bytes().to_vec(),
        });
        c
    }

    /// Sends a request and waits for its reply (setup only); its result.
    fn call(&mut self, req: &Request) -> i64 {
        self.send(req);
        loop {
            if let Some(result) = self.next_reply() {
                return result;
            }
            self.fill();
        }
    }

    fn send(&mut self, req: &Request) {
        self.stream
            .write_all(&encode_request(self.next_id, req))
            .expect("send a request");
        self.next_id += 1;
    }

    /// Reads what the socket has (blocks if it has nothing).
    fn fill(&mut self) {
        let buf = self.dec.spare(4096);
        let n = self.stream.read(buf).expect("read replies");
        assert!(n > 0, "the daemon closed a connection");
        self.dec.commit(n);
    }

    /// The result of the next complete reply, if one is buffered; a failure panics.
    fn next_reply(&mut self) -> Option<i64> {
        let frame = self.dec.next_frame().expect("reply frame")?;
        let reply = Reply::decode(&frame.body).expect("reply body");
        assert!(
            reply.result >= 0,
            "request {} failed: {}",
            frame.header.id,
            reply.message
        );
        Some(reply.result)
    }

    fn pasid_request(&mut self, op: PasidRequestOp) {
        self.send(&Request::Ioctl {
            handle: self.container,
            cmd: VFIO_IOMMU_PASID_REQUEST,
            arg: op.to_bytes(),
        });
    }

    fn start_pair(&mut self) {
        self.at = Instant::now();
        self.pasid_request(PasidRequestOp::Alloc {
            min: 1,
            max: u32::MAX,
        });
        self.step = Step::Alloc;
    }
}

/// The multi-connection mode: every connection has one request outstanding (closed loop) or
/// starts its pairs on its own schedule (open loop); one thread waits on all of them with
/// `poll`.
fn poll_connections(conns: &mut [RawConn], run: Duration, interval: Option<Duration>) -> Vec<u32> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let start = Instant::now();
    let deadline = start + run;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
    for (i, c) in conns.iter_mut().enumerate() {
        c.next = first_start(
            start,
            interval,
            std::process::id().wrapping_add(i as u32 * 137),
        );
    }
    let mut waiting = Vec::with_capacity(conns.len());
    loop {
        // Start every pair that is due.
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        for c in conns.iter_mut() {
            if !matches!(c.step, Step::Idle) {
                continue;
            }
            if now >= deadline {
                c.step = Step::Done;
            } else if c.next <= now {
                c.next += interval.unwrap_or(Duration::ZERO);
                c.start_pair();
            } else {
                wake = Some(wake.map_or(c.next, |w| w.min(c.next)));
            }
        }
        waiting.clear();
        waiting.extend(
            conns
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c.step, Step::Alloc | Step::Free))
                .map(|(i, _)| i),
        );
        if waiting.is_empty() && wake.is_none() {
            break;
        }
        let mut fds: Vec<PollFd<'_>> = waiting
            .iter()
            .map(|&i| PollFd::new(&conns[i].stream, PollFlags::IN))
            .collect();
        let timeout = wake.map(|w| {
            let d = w.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        let readable: Vec<usize> = fds
            .iter()
            .zip(&waiting)
            .filter(|(f, _)| !f.revents().is_empty())
            .map(|(_, &i)| i)
            .collect();
        drop(fds);
        for i in readable {
            let c = &mut conns[i];
            c.fill();
            while let Some(result) = c.next_reply() {
                c.step = match c.step {
                    Step::Alloc => {
                        let p = result as u32;
                        c.pasid_request(PasidRequestOp::Free { min: p, max: p });
                        Step::Free
                    }
                    Step::Free => {
                        lat.push(elapsed_ns(c.at));
                        match interval {
                            // Closed loop: the next pair at once, while the run lasts.
                            None if Instant::now() < deadline => {
                                c.start_pair();
                                Step::Alloc
                            }
                            None => Step::Done,
                            Some(_) => Step::Idle,
                        }
                    }
                    Step::Idle | Step::Done => panic!("a reply with no request out"),
                };
            }
        }
    }
    lat
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
