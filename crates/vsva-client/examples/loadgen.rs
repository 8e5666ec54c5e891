//! Load generator: throughput and round-trip latency of PASID alloc+free through `vsvad`,
//! for 1, 8 and 64 concurrent clients, with the durable store on (`sync`) and off, and the
//! same call made in-process (`Container::ioctl`, no socket) in the same run.
//!
//! ```text
//! cargo build --release -p vsvad
//! cargo run --release -p vsva-client --example loadgen -- [--clients 1,8,64,8x8] [--seconds 2]
//!     [--modes sync,off] [--rate PAIRS_PER_SEC_PER_CONNECTION] [--connections-per-client K]
//!     [--vsvad PATH[,PATH...]] [--poll] [--spin-us N]
//! ```
//!
//! # Ways to drive the connections
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
//! * **`--poll`** uses the second driver for every point, one connection per process included:
//!   the same requests as the `Client`, but the worker waits for a reply with `poll(POLLIN)`
//!   before it reads. A process blocked in `recvmsg` on a Unix stream socket is woken each time
//!   the daemon reads one of its requests (the freed send buffer wakes the socket's wait
//!   queue, readers included), then again by the reply; a process waiting in `poll` for
//!   input is woken only by the reply. This shows what that wake-up costs the daemon and the
//!   clients.
//!
//! * **`--spin-us N`** sets the `Client`'s [`Options::reply_spin`] in the workers that use it
//!   (one connection per process, without `--poll`): each call checks for its reply without
//!   sleeping for up to `N` µs before it sleeps. It shows what the client's own wake-up costs
//!   a round trip, and what waiting awake costs the CPU the clients and the daemon share.
//!
//! In every mode a connection's pairs run back to back (closed loop, the default: measures
//! throughput), or with `--rate` on a fixed schedule of that many pairs per second per
//! connection (open loop: measures latency at a given offered load).
//!
//! # Comparing daemons
//!
//! `--vsvad A,B` starts one private daemon from each binary (per store mode) and runs every
//! point on each in turn, so the builds are compared side by side in one run, under the same
//! load; the `daemon` column gives the binary's number (listed above the table).
//!
//! The parts: this file runs the points and prints the table; `loadgen/drivers.rs` drives a
//! worker's connections (both modes), `loadgen/usage.rs` reads what a process cost from
//! `/proc`, and `loadgen/floors.rs` measures the socket, `fdatasync` and in-process floors.
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
use std::time::{Duration, Instant};

use vsva_client::{find_vsvad, Client, MachineConfig, Options, PrivateDaemon};

#[path = "loadgen/drivers.rs"]
mod drivers;
#[path = "loadgen/floors.rs"]
mod floors;
#[path = "loadgen/usage.rs"]
mod usage;

use drivers::{one_connection, poll_connections, RawConn};
use floors::{fdatasync_floor, in_process, socket_floor};
use usage::{daemon_pid, usage, Usage};

const WORKER_ENV: &str = "VSVA_LOADGEN_WORKER";

/// Set in a worker's environment when `--poll` asks for the `poll` driver for every
/// connection count, one included.
const POLL_ENV: &str = "VSVA_LOADGEN_POLL";

/// `--poll` was given (the parent passes it on to its workers).
static POLL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A worker's `Client` busy-waits this many µs for each reply (0: it sleeps at once).
const SPIN_ENV: &str = "VSVA_LOADGEN_SPIN_US";

/// `--spin-us` (the parent passes it on to its workers).
static SPIN_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
            "--poll" => POLL.store(true, std::sync::atomic::Ordering::Relaxed),
            "--spin-us" => {
                let us: u64 = val().parse().expect("--spin-us takes microseconds");
                SPIN_US.store(us, std::sync::atomic::Ordering::Relaxed);
            }
            "--help" | "-h" => {
                println!("loadgen [--clients 1,8,64,8x8] [--connections-per-client K] [--seconds 2] [--modes sync,async,off] [--rate PAIRS_PER_SEC_PER_CONNECTION] [--vsvad PATH[,PATH...]] [--poll] [--spin-us N]");
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
                .env(
                    POLL_ENV,
                    if POLL.load(std::sync::atomic::Ordering::Relaxed) {
                        "1"
                    } else {
                        "0"
                    },
                )
                .env(
                    SPIN_ENV,
                    SPIN_US
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_string(),
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
    let lat = if k == 1 && std::env::var(POLL_ENV).as_deref() != Ok("1") {
        let mut options = Options::new(&socket, "loadgen");
        let spin: u64 = std::env::var(SPIN_ENV).map_or(0, |v| v.parse().unwrap_or(0));
        options.reply_spin = (spin > 0).then(|| Duration::from_micros(spin));
        let mut client = Client::connect(options).expect("connect");
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

/// Tells the parent this worker is connected, and waits for its GO.
fn ready_and_wait() {
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}
