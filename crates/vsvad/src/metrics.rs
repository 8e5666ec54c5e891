//! Counters and latency histograms, rendered in the Prometheus text format; the minimal
//! HTTP/1.1 endpoint that serves them on a loopback address is in `http`.
//!
//! Hot-path updates are single relaxed atomic increments into fixed arrays indexed by request
//! kind and errno: no lock, no allocation. The per-request counters and latency histograms
//! (three increments per request) are kept in one shard per connection worker, each on cache
//! lines of its own, so two workers never write the same line per request; the page sums
//! the shards. Values that live elsewhere (PASID counts, per-process
//! usage, IOTLB counters, faults) are read when the page is rendered ([`Gauges`]).

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vsva_proto::{Errno, Kind};

mod http;

pub use http::{serve, MetricsServer};

/// Upper bounds of the latency buckets, in nanoseconds.
const BUCKETS_NS: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NS.partition_point(|&b| b < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The histogram of every observation of `parts`.
    fn sum<'a>(parts: impl Iterator<Item = &'a Histogram>) -> Histogram {
        let total = Histogram::default();
        for h in parts {
            for (t, b) in total.buckets.iter().zip(&h.buckets) {
                t.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            total
                .sum_ns
                .fetch_add(h.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        total
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS_NS.iter().enumerate() {
            cum += self.buckets[i].load(Ordering::Relaxed);
            let le = *b as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}");
        }
        cum += self.buckets[BUCKETS_NS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
    }
}

const NKINDS: usize = Kind::ALL.len();

/// Shards of the per-request counters; worker `i` writes shard `1 + i % (SHARDS - 1)`, every
/// other thread shard 0.
const SHARDS: usize = 8;

thread_local! {
    /// The shard this thread writes.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread, connection worker number `worker`, count its requests in a
/// shard of its own.
pub fn use_worker_shard(worker: usize) {
    SHARD.with(|s| s.set(1 + worker % (SHARDS - 1)));
}

/// One shard of the per-request counters, aligned so no two shards share a cache line (128:
/// adjacent-line prefetch pairs lines).
#[repr(align(128))]
#[derive(Debug)]
struct Shard {
    requests: [AtomicU64; NKINDS],
    latency: [Histogram; NKINDS],
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| Histogram::default()),
        }
    }
}
const NERRNOS: usize = Errno::ALL.len();

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|&k| k == kind).unwrap_or(0)
}

/// The daemon's own counters.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[Shard; SHARDS]>,
    errors: [[AtomicU64; NERRNOS + 1]; NKINDS],
    /// Connections accepted.
    pub connections_total: AtomicU64,
    /// Connections refused at the limit.
    pub connections_rejected: AtomicU64,
    /// Frames refused as malformed (header or body).
    pub malformed_frames: AtomicU64,
    /// Connections closed for a stalled frame or a client that stopped reading.
    pub timeouts: AtomicU64,
    /// Requests of unknown kinds.
    pub unknown_requests: AtomicU64,
    /// Times a connection stopped reading because its replies not yet written reached
    /// `limits.max_queued_bytes`.
    pub read_pauses: AtomicU64,
    /// Grants ended because their holder did not acknowledge a device-TLB invalidation.
    pub grants_fenced: AtomicU64,
    store_commits: AtomicU64,
    store_records: AtomicU64,
    store_sync: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Values read from the rest of the daemon when the page is rendered.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Seconds since start.
    pub uptime_secs: f64,
    /// PASID space capacity.
    pub capacity: u64,
    /// PASIDs allocated.
    pub allocated: u64,
    /// PASIDs freed whose teardown has not finished.
    pub freeing: u64,
    /// PASIDs held for processes after a restart.
    pub held: u64,
    /// Live connections.
    pub connections: u64,
    /// Per process: (pid, uid, owned, quota).
    pub processes: Vec<(u32, u32, u32, u32)>,
    /// IOTLB hits.
    pub iotlb_hits: u64,
    /// IOTLB misses.
    pub iotlb_misses: u64,
    /// DMA translations the IOMMU performed.
    pub translations: u64,
    /// Faults recorded.
    pub faults: u64,
    /// Faults dropped from the full log.
    pub faults_dropped: u64,
    /// NESTING_OP unbinds and invalidations that answered 0 but changed nothing (the series
    /// answers 0 once the header and container checks pass): (op, reason, count), every
    /// pair, zeros included.
    pub nesting_refusals: Vec<(&'static str, &'static str, u64)>,
}

impl Metrics {
    /// Counters and histograms, all zero.
    pub fn new() -> Metrics {
        Metrics {
            shards: Box::new(std::array::from_fn(|_| Shard::default())),
            errors: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            malformed_frames: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            unknown_requests: AtomicU64::new(0),
            read_pauses: AtomicU64::new(0),
            grants_fenced: AtomicU64::new(0),
            store_commits: AtomicU64::new(0),
            store_records: AtomicU64::new(0),
            store_sync: Histogram::default(),
        }
    }

    /// Records a finished request: its kind, how long it took, and its errno if it failed.
    pub fn request(&self, kind: Kind, took: Duration, errno: Option<Errno>) {
        let k = kind_index(kind);
        let shard = &self.shards[SHARD.with(Cell::get) % SHARDS];
        shard.requests[k].fetch_add(1, Ordering::Relaxed);
        shard.latency[k].observe(took);
        if let Some(e) = errno {
            let i = Errno::ALL.iter().position(|&x| x == e).unwrap_or(NERRNOS);
            self.errors[k][i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one group commit of `records` records.
    pub fn store_commit(&self, records: usize) {
        self.store_commits.fetch_add(1, Ordering::Relaxed);
        self.store_records
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// Requests answered so far, every kind.
    pub fn requests_total(&self) -> u64 {
        (0..NKINDS).map(|k| self.requests_at(k)).sum()
    }

    /// Requests of the kind at index `k`, all shards.
    fn requests_at(&self, k: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.requests[k].load(Ordering::Relaxed))
            .sum()
    }

    /// Requests of `kind` answered so far.
    pub fn requests_of(&self, kind: Kind) -> u64 {
        self.requests_at(kind_index(kind))
    }

    /// Group commits written so far.
    pub fn store_commits(&self) -> u64 {
        self.store_commits.load(Ordering::Relaxed)
    }

    /// Records one `fdatasync`.
    pub fn store_sync(&self, took: Duration) {
        self.store_sync.observe(took);
    }

    /// The page in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::with_capacity(16 * 1024);
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut o,
            "vsvad_uptime_seconds",
            "Seconds since the daemon started.",
            g.uptime_secs,
        );
        gauge(
            &mut o,
            "vsvad_pasid_capacity",
            "PASIDs that can be allocated at once.",
            g.capacity as f64,
        );
        gauge(
            &mut o,
            "vsvad_pasids_allocated",
            "PASIDs owned by processes.",
            g.allocated as f64,
        );
        gauge(
            &mut o,
            "vsvad_pasids_freeing",
            "PASIDs freed whose teardown has not finished.",
            g.freeing as f64,
        );
        gauge(
            &mut o,
            "vsvad_pasids_held",
            "PASIDs held for processes that have not resumed since a restart.",
            g.held as f64,
        );
        gauge(
            &mut o,
            "vsvad_connections",
            "Open client connections.",
            g.connections as f64,
        );
        let _ = writeln!(o, "# HELP vsvad_process_pasids PASIDs owned per process.\n# TYPE vsvad_process_pasids gauge");
        for (pid, uid, owned, _) in &g.processes {
            let _ = writeln!(
                o,
                "vsvad_process_pasids{{pid=\"{pid}\",uid=\"{uid}\"}} {owned}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP vsvad_process_quota PASID quota per process.\n# TYPE vsvad_process_quota gauge"
        );
        for (pid, uid, _, quota) in &g.processes {
            let _ = writeln!(
                o,
                "vsvad_process_quota{{pid=\"{pid}\",uid=\"{uid}\"}} {quota}"
            );
        }
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "vsvad_iotlb_hits_total",
            "IOTLB hits.",
            g.iotlb_hits,
        );
        counter(
            &mut o,
            "vsvad_iotlb_misses_total",
            "IOTLB misses.",
            g.iotlb_misses,
        );
        counter(
            &mut o,
            "vsvad_translations_total",
            "DMA translations.",
            g.translations,
        );
        let lookups = g.iotlb_hits + g.iotlb_misses;
        let rate = if lookups == 0 {
            0.0
        } else {
            g.iotlb_hits as f64 / lookups as f64
        };
        gauge(
            &mut o,
            "vsvad_iotlb_hit_ratio",
            "IOTLB hits over lookups since start.",
            rate,
        );
        let _ = writeln!(
            o,
            "# HELP vsvad_nesting_refusals_total NESTING_OP unbinds and invalidations that answered 0 but changed nothing, by reason.\n# TYPE vsvad_nesting_refusals_total counter"
        );
        for (op, reason, count) in &g.nesting_refusals {
            let _ = writeln!(
                o,
                "vsvad_nesting_refusals_total{{op=\"{op}\",reason=\"{reason}\"}} {count}"
            );
        }
        counter(
            &mut o,
            "vsvad_faults_total",
            "DMA faults recorded.",
            g.faults,
        );
        counter(
            &mut o,
            "vsvad_faults_dropped_total",
            "DMA fault records dropped from the full log.",
            g.faults_dropped,
        );
        counter(
            &mut o,
            "vsvad_connections_total",
            "Connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_connections_rejected_total",
            "Connections refused at the connection limit.",
            self.connections_rejected.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_malformed_frames_total",
            "Frames refused as malformed.",
            self.malformed_frames.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_grants_fenced_total",
            "Device grants ended because their holder did not acknowledge an invalidation.",
            self.grants_fenced.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_read_pauses_total",
            "Times a connection stopped reading because its unwritten replies reached limits.max_queued_bytes.",
            self.read_pauses.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_log_lines_dropped_total",
            "Log lines dropped because standard error was not read fast enough or refused them.",
            crate::log_sink::dropped_lines(),
        );
        counter(
            &mut o,
            "vsvad_timeouts_total",
            "Connections closed for a stalled frame, handshake or reader.",
            self.timeouts.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_unknown_requests_total",
            "Requests of unknown kinds.",
            self.unknown_requests.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_store_commits_total",
            "Group commits written to the log.",
            self.store_commits.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "vsvad_store_records_total",
            "Records written to the log.",
            self.store_records.load(Ordering::Relaxed),
        );
        let _ = writeln!(o, "# HELP vsvad_requests_total Requests handled, by kind.\n# TYPE vsvad_requests_total counter");
        for (i, k) in Kind::ALL.iter().enumerate() {
            let _ = writeln!(
                o,
                "vsvad_requests_total{{kind=\"{}\"}} {}",
                k.label(),
                self.requests_at(i)
            );
        }
        let _ = writeln!(o, "# HELP vsvad_request_errors_total Failed requests, by kind and errno.\n# TYPE vsvad_request_errors_total counter");
        for (i, k) in Kind::ALL.iter().enumerate() {
            for (j, count) in self.errors[i].iter().enumerate() {
                let v = count.load(Ordering::Relaxed);
                if v == 0 {
                    continue;
                }
                let name = Errno::ALL.get(j).map_or("other", |e| e.name());
                let _ = writeln!(
                    o,
                    "vsvad_request_errors_total{{kind=\"{}\",errno=\"{name}\"}} {v}",
                    k.label()
                );
            }
        }
        let _ = writeln!(o, "# HELP vsvad_request_duration_seconds Time from a request's arrival to its reply being ready (durable store wait included).\n# TYPE vsvad_request_duration_seconds histogram");
        for (i, k) in Kind::ALL.iter().enumerate() {
            let latency = Histogram::sum(self.shards.iter().map(|s| &s.latency[i]));
            if latency.count() > 0 {
                latency.render(
                    &mut o,
                    "vsvad_request_duration_seconds",
                    &format!("kind=\"{}\"", k.label()),
                );
            }
        }
        let _ = writeln!(o, "# HELP vsvad_store_sync_seconds Duration of each log fdatasync.\n# TYPE vsvad_store_sync_seconds histogram");
        self.store_sync
            .render(&mut o, "vsvad_store_sync_seconds", "");
        o
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_nanos(500));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_secs(5));
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"0.000001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.000005\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count{} 3\n"), "{s}");
    }

    #[test]
    fn render_has_requests_errors_and_gauges() {
        let m = Metrics::new();
        m.request(Kind::Ioctl, Duration::from_micros(4), None);
        m.request(Kind::Ioctl, Duration::from_micros(4), Some(Errno::ENOSPC));
        let page = m.render(&Gauges {
            capacity: 1_048_575,
            allocated: 3,
            iotlb_hits: 3,
            iotlb_misses: 1,
            processes: vec![(42, 1000, 3, 1000)],
            nesting_refusals: vec![("unbind", "not_owned", 2), ("invalidate", "invalid", 0)],
            ..Gauges::default()
        });
        assert!(
            page.contains("vsvad_nesting_refusals_total{op=\"unbind\",reason=\"not_owned\"} 2\n")
        );
        assert!(
            page.contains("vsvad_nesting_refusals_total{op=\"invalidate\",reason=\"invalid\"} 0\n")
        );
        assert!(page.contains("vsvad_requests_total{kind=\"ioctl\"} 2\n"));
        assert!(page.contains("vsvad_request_errors_total{kind=\"ioctl\",errno=\"ENOSPC\"} 1\n"));
        assert!(page.contains("vsvad_pasid_capacity 1048575\n"));
        assert!(page.contains("vsvad_process_pasids{pid=\"42\",uid=\"1000\"} 3\n"));
        assert!(page.contains("vsvad_iotlb_hit_ratio 0.75\n"));
        assert!(page.contains("vsvad_request_duration_seconds_count{kind=\"ioctl\"} 2\n"));
    }

    #[test]
    fn requests_counted_by_workers_in_their_own_shards_add_up_on_the_page() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..3)
            .map(|w| {
                let m = m.clone();
                std::thread::spawn(move || {
                    use_worker_shard(w);
                    for _ in 0..=w {
                        m.request(Kind::Ping, Duration::from_micros(3), None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // And one from a thread that is no worker (shard 0).
        m.request(Kind::Ping, Duration::from_micros(3), None);
        assert_eq!(m.requests_of(Kind::Ping), 7);
        assert_eq!(m.requests_total(), 7);
        let page = m.render(&Gauges::default());
        assert!(
            page.contains("vsvad_requests_total{kind=\"ping\"} 7\n"),
            "{page}"
        );
        assert!(
            page.contains("vsvad_request_duration_seconds_count{kind=\"ping\"} 7\n"),
            "{page}"
        );
        assert_eq!(
            m.shards
                .iter()
                .filter(|s| s.requests[kind_index(Kind::Ping)].load(Ordering::Relaxed) > 0)
                .count(),
            4,
            "one shard per worker, and shard 0"
        );
    }
}
