//! PASID allocation: vsva-ioasid against its peers, side by side in one process.
//!
//! Peers (see `docs/performance.md` at the repository root):
//! * `vsva` — this crate: one `IoasidSpace` of 2^20, a set with owner tracking and quota;
//! * `vm-allocator` — rust-vmm's `IdAllocator` in a `Mutex` (no owners, no quota, no ranges);
//! * `xarray` — Linux's ioasid core as the 2020 vSVA series built it: an XArray-style radix
//!   tree (64-slot nodes, per-node free bitmaps, lowest free id found by searching them) of
//!   every PASID with its owner, and one per set of its own PASIDs, with quota, under one lock.
//!
//! Patterns: a1 (N held, alloc+free the next), a2 (N held, free a random one and get it back),
//! b (fill the space), d (with 100 000 held, free 1 000 consecutive, then re-allocate them), and
//! 2 threads against 1. Criterion measures each; a final summary times the same closures and
//! prints vsva's ratio to each peer, plus memory per live PASID from a counting allocator.
//!
//! `cargo bench -p vsva-ioasid --bench alloc` (add `-- --quick` for a shorter run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use vsva_ioasid::{IoasidSet, IoasidSpace};

// ---------------------------------------------------------------------------------------------
// Heap accounting, so every peer's memory is measured the same way.

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees carry over unchanged; the counter update has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (hence from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------------------------------------
// The peers behind one interface.

const BITS: u8 = 20;
const MAX: u32 = (1 << BITS) - 1;

trait Peer: Sync {
    type Set: Send;
    const NAME: &'static str;
    /// Whether the peer knows who owns a PASID (vm-allocator does not).
    const OWNERS: bool = true;
    fn new() -> Self;
    fn set(&self, token: u64) -> Self::Set;
    fn alloc(&self, set: &mut Self::Set, min: u32, max: u32) -> u32;
    fn free(&self, set: &mut Self::Set, pasid: u32);
    fn free_range(&self, set: &mut Self::Set, min: u32, max: u32) -> u32;
}

struct Vsva(IoasidSpace);

impl Peer for Vsva {
    type Set = IoasidSet;
    const NAME: &'static str = "vsva";
    fn new() -> Self {
        Vsva(IoasidSpace::new(BITS).unwrap())
    }
    fn set(&self, token: u64) -> IoasidSet {
        self.0.create_set(token, u32::MAX).unwrap()
    }
    #[inline]
    fn alloc(&self, set: &mut IoasidSet, min: u32, max: u32) -> u32 {
        set.alloc(min, max).unwrap()
    }
    #[inline]
    fn free(&self, set: &mut IoasidSet, pasid: u32) {
        set.free(pasid).unwrap()
    }
    fn free_range(&self, set: &mut IoasidSet, min: u32, max: u32) -> u32 {
        set.free_range(min, max).unwrap()
    }
}

struct VmAllocator(Mutex<vm_allocator::IdAllocator>);

impl Peer for VmAllocator {
    type Set = ();
    const NAME: &'static str = "vm-allocator";
    const OWNERS: bool = false;
    fn new() -> Self {
        VmAllocator(Mutex::new(vm_allocator::IdAllocator::new(1, MAX).unwrap()))
    }
    fn set(&self, _token: u64) {}
    #[inline]
    fn alloc(&self, _set: &mut (), _min: u32, _max: u32) -> u32 {
        self.0.lock().unwrap().allocate_id().unwrap()
    }
    #[inline]
    fn free(&self, _set: &mut (), pasid: u32) {
        self.0.lock().unwrap().free_id(pasid).unwrap();
    }
    fn free_range(&self, _set: &mut (), min: u32, max: u32) -> u32 {
        // No owners and no range free: free each ID the range names.
        let mut a = self.0.lock().unwrap();
        (min..=max).filter(|&p| a.free_id(p).is_ok()).count() as u32
    }
}

// Under `alloc/`, so that Cargo does not take it for a bench of its own.
#[path = "alloc/xarray.rs"]
mod xarray;
use xarray::Xarray;

// ---------------------------------------------------------------------------------------------
// The patterns, generic over the peer. Each returns nanoseconds per operation for `iters`.

fn prefill<P: Peer>(p: &P, set: &mut P::Set, n: u32) -> Vec<u32> {
    (0..n).map(|_| p.alloc(set, 1, MAX)).collect()
}

/// a1: N held; repeat { alloc (gets N+1), free it }.
fn a1<P: Peer>(p: &P, set: &mut P::Set, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let id = p.alloc(set, 1, MAX);
        p.free(set, black_box(id));
    }
    start.elapsed()
}

/// a2: N held; repeat { free a random held one, alloc (gets it back) }.
fn a2<P: Peer>(p: &P, set: &mut P::Set, held: &[u32], iters: u64) -> Duration {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let picks: Vec<u32> = (0..4096)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            held[(rng % held.len() as u64) as usize]
        })
        .collect();
    let start = Instant::now();
    for i in 0..iters {
        let victim = picks[(i % 4096) as usize];
        p.free(set, victim);
        let got = p.alloc(set, 1, MAX);
        debug_assert_eq!(got, victim);
        black_box(got);
    }
    start.elapsed()
}

/// b: fill the whole space from empty; returns the time for `MAX` allocations.
fn b<P: Peer>() -> Duration {
    let p = P::new();
    let mut set = p.set(1);
    let start = Instant::now();
    for _ in 0..MAX {
        black_box(p.alloc(&mut set, 1, MAX));
    }
    let t = start.elapsed();
    drop(set);
    t
}

/// d: with 100 000 held, free 1 000 consecutive by range, then allocate them again.
fn d<P: Peer>() -> (Duration, Duration) {
    let p = P::new();
    let mut set = p.set(1);
    prefill(&p, &mut set, 100_000);
    let start = Instant::now();
    let freed = p.free_range(&mut set, 50_001, 51_000);
    let free_time = start.elapsed();
    assert_eq!(freed, 1000);
    let start = Instant::now();
    for _ in 0..1000 {
        black_box(p.alloc(&mut set, 1, MAX));
    }
    (free_time, start.elapsed())
}

/// Free-range `[0, u32::MAX]` of a set owning 1 000 while another holds 99 000.
fn d_all<P: Peer>() -> Duration {
    let p = P::new();
    let mut other = p.set(1);
    let mut mine = p.set(2);
    prefill(&p, &mut other, 49_500);
    prefill(&p, &mut mine, 1000);
    prefill(&p, &mut other, 49_500);
    let start = Instant::now();
    let freed = p.free_range(&mut mine, 0, u32::MAX);
    let t = start.elapsed();
    assert_eq!(freed, 1000);
    t
}

/// `threads` threads, each with its own set and (if `split`) its own half of the space, each
/// holding 1 000 and doing `pairs` a1 pairs. Returns the wall time from the first thread's
/// start to the last one's end, as the workers themselves saw it (a timer kept by a third
/// thread would read nothing if the scheduler ran it only after the work).
fn threaded<P: Peer>(threads: u32, pairs: u64, split: bool) -> Duration {
    let p = P::new();
    let barrier = Barrier::new(threads as usize);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (p, barrier) = (&p, &barrier);
                s.spawn(move || {
                    let mut set = p.set(u64::from(t) + 1);
                    let (lo, hi) = if split {
                        let half = (MAX + 1) / threads;
                        ((t * half).max(1), (t + 1) * half - 1)
                    } else {
                        (1, MAX)
                    };
                    for _ in 0..1000 {
                        p.alloc(&mut set, lo, hi);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..pairs {
                        let id = p.alloc(&mut set, lo, hi);
                        p.free(&mut set, black_box(id));
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let first = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    last - first
}

// ---------------------------------------------------------------------------------------------
// Criterion groups.

fn bench_a1<P: Peer>(c: &mut Criterion, n: u32) {
    let p = P::new();
    let mut set = p.set(1);
    prefill(&p, &mut set, n);
    c.benchmark_group(format!("a1/N={n}"))
        .bench_function(P::NAME, |bch| {
            bch.iter_custom(|iters| a1(&p, &mut set, iters))
        });
}

fn bench_a2<P: Peer>(c: &mut Criterion, n: u32) {
    let p = P::new();
    let mut set = p.set(1);
    let held = prefill(&p, &mut set, n);
    c.benchmark_group(format!("a2/N={n}"))
        .bench_function(P::NAME, |bch| {
            bch.iter_custom(|iters| a2(&p, &mut set, &held, iters))
        });
}

fn bench_fill_and_range<P: Peer>(c: &mut Criterion) {
    let mut g = c.benchmark_group("b/fill");
    g.sample_size(10)
        .throughput(Throughput::Elements(u64::from(MAX)));
    g.bench_function(P::NAME, |bch| {
        bch.iter_custom(|iters| (0..iters).map(|_| b::<P>()).sum())
    });
    g.finish();
    let mut g = c.benchmark_group("d/free-range-1000");
    g.sample_size(10);
    g.bench_function(P::NAME, |bch| {
        bch.iter_custom(|iters| (0..iters).map(|_| d::<P>().0).sum())
    });
    g.finish();
}

fn bench_threads<P: Peer>(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads/pairs");
    g.sample_size(10).throughput(Throughput::Elements(200_000));
    for threads in [1, 2] {
        g.bench_function(format!("{}/{threads}-thread", P::NAME), |bch| {
            bch.iter_batched(
                || (),
                |()| threaded::<P>(threads, 200_000 / u64::from(threads), true),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn criterion_benches(c: &mut Criterion) {
    for n in [1000, 100_000, 1_000_000] {
        bench_a1::<Vsva>(c, n);
        bench_a1::<VmAllocator>(c, n);
        bench_a1::<Xarray>(c, n);
    }
    for n in [1000, 100_000, 1_000_000] {
        bench_a2::<Vsva>(c, n);
        bench_a2::<VmAllocator>(c, n);
        bench_a2::<Xarray>(c, n);
    }
    bench_fill_and_range::<Vsva>(c);
    bench_fill_and_range::<VmAllocator>(c);
    bench_fill_and_range::<Xarray>(c);
    bench_threads::<Vsva>(c);
    bench_threads::<VmAllocator>(c);
    bench_threads::<Xarray>(c);
}

// ---------------------------------------------------------------------------------------------
// The side-by-side summary.

/// One timing of one pattern for one peer, owning whatever state it runs on.
type Probe = Box<dyn FnMut() -> f64>;

fn ns(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops as f64
}

fn a1_probe<P: Peer + 'static>(n: u32, pairs: u64) -> Probe {
    let p = P::new();
    let mut set = p.set(1);
    prefill(&p, &mut set, n);
    Box::new(move || ns(a1(&p, &mut set, pairs), pairs))
}

fn a2_probe<P: Peer + 'static>(n: u32, pairs: u64) -> Probe {
    let p = P::new();
    let mut set = p.set(1);
    let held = prefill(&p, &mut set, n);
    Box::new(move || ns(a2(&p, &mut set, &held, pairs), pairs))
}

fn fill_probe<P: Peer + 'static>() -> Probe {
    Box::new(|| ns(b::<P>(), u64::from(MAX)))
}

fn d_free_probe<P: Peer + 'static>() -> Probe {
    Box::new(|| d::<P>().0.as_nanos() as f64 / 1000.0)
}

fn d_realloc_probe<P: Peer + 'static>() -> Probe {
    Box::new(|| d::<P>().1.as_nanos() as f64 / 1000.0)
}

fn d_all_probe<P: Peer + 'static>() -> Probe {
    if P::OWNERS {
        Box::new(|| d_all::<P>().as_nanos() as f64 / 1000.0)
    } else {
        Box::new(|| f64::NAN)
    }
}

fn threads_probe<P: Peer + 'static>(threads: u32, pairs: u64, split: bool) -> Probe {
    Box::new(move || {
        ns(
            threaded::<P>(threads, pairs / u64::from(threads), split),
            pairs,
        )
    })
}

/// The same probe for each peer, in table order (vsva, vm-allocator, xarray).
macro_rules! peers {
    ($probe:ident($($arg:expr),*)) => {
        [
            $probe::<Vsva>($($arg),*),
            $probe::<VmAllocator>($($arg),*),
            $probe::<Xarray>($($arg),*),
        ]
    };
}

/// Runs the peers' probes in turn, `rounds` times, and keeps each peer's fastest run: on a
/// shared, noisy machine the minimum is the least disturbed estimate, and interleaving the
/// peers closely puts them under the same load.
fn interleaved(rounds: usize, mut probes: [Probe; 3]) -> [f64; 3] {
    let mut best = [f64::INFINITY; 3];
    for _ in 0..rounds {
        for (best, probe) in best.iter_mut().zip(probes.iter_mut()) {
            let v = probe();
            *best = if v.is_nan() { v } else { best.min(v) };
        }
    }
    best
}

struct Row {
    name: String,
    unit: &'static str,
    target: &'static str,
    values: [f64; 3],
}

/// Every timed pattern, each measured side by side for all peers.
fn measure(quick: bool) -> Vec<Row> {
    let (rounds, slow_rounds) = if quick { (9, 3) } else { (25, 7) };
    let pairs: u64 = if quick { 50_000 } else { 200_000 };
    let row = |name: String, unit, target, values| Row {
        name,
        unit,
        target,
        values,
    };
    let mut out = Vec::new();
    for n in [1000u32, 100_000, 1_000_000] {
        let v = interleaved(rounds, peers!(a1_probe(n, pairs)));
        out.push(row(format!("a1 N={n}"), "ns/pair", "<= 25", v));
    }
    for n in [1000u32, 100_000, 1_000_000] {
        let v = interleaved(rounds, peers!(a2_probe(n, pairs)));
        out.push(row(format!("a2 N={n}"), "ns/pair", "<= 25", v));
    }
    let v = interleaved(slow_rounds, peers!(fill_probe()));
    out.push(row("b fill".into(), "ns/alloc", "<= 15", v));
    let v = interleaved(slow_rounds, peers!(d_free_probe()));
    out.push(row("d free-range 1000".into(), "us", "<= 3", v));
    let v = interleaved(slow_rounds, peers!(d_realloc_probe()));
    out.push(row("d re-alloc 1000".into(), "us", "", v));
    let v = interleaved(slow_rounds, peers!(d_all_probe()));
    out.push(row(
        "d free [0,u32::MAX], 1000 owned".into(),
        "us",
        "<= 10",
        v,
    ));
    let tp = pairs * 2;
    let one = interleaved(rounds, peers!(threads_probe(1, tp, true)));
    let two = interleaved(rounds, peers!(threads_probe(2, tp, true)));
    let two_shared = interleaved(rounds, peers!(threads_probe(2, tp, false)));
    out.push(row("1 thread, N=1000".into(), "ns/pair", "", one));
    out.push(row("2 threads, own ranges".into(), "ns/pair", "", two));
    out.push(row(
        "2 threads, one range".into(),
        "ns/pair",
        "",
        two_shared,
    ));
    let speedup = [0, 1, 2].map(|i| one[i] / two[i]);
    out.push(row(
        "2-thread speed-up, own ranges".into(),
        "x",
        ">= 1.3",
        speedup,
    ));
    out
}

/// Heap bytes per live PASID with 1 000 held, 100 000 held, and 1 000 left scattered in
/// 100 000 (every 100th kept), each net of the empty allocator; then the empty allocator's
/// own bytes (the fixed cost).
fn memory<P: Peer>() -> [f64; 4] {
    fn bytes_of<T>(build: impl FnOnce() -> T) -> f64 {
        let before = live_bytes();
        let kept = build();
        let used = live_bytes() - before;
        drop(kept);
        used as f64
    }
    let held = |n: u32| {
        bytes_of(|| {
            let p = P::new();
            let mut set = p.set(1);
            prefill(&p, &mut set, n);
            (p, set)
        })
    };
    let empty = held(0);
    let scattered = bytes_of(|| {
        let p = P::new();
        let mut set = p.set(1);
        for id in prefill(&p, &mut set, 100_000) {
            if id % 100 != 0 {
                p.free(&mut set, id);
            }
        }
        (p, set)
    });
    [
        (held(1000) - empty) / 1000.0,
        (held(100_000) - empty) / 100_000.0,
        (scattered - empty) / 1000.0,
        empty,
    ]
}

fn summary(quick: bool) {
    let mut rows = measure(quick);
    let mem = [
        memory::<Vsva>(),
        memory::<VmAllocator>(),
        memory::<Xarray>(),
    ];
    for (i, label) in [
        "bytes/live, 1 000 held",
        "bytes/live, 100 000 held",
        "bytes/live, 1 000 scattered in 100 000",
    ]
    .into_iter()
    .enumerate()
    {
        rows.push(Row {
            name: label.into(),
            unit: "B",
            target: "<= 16",
            values: [mem[0][i], mem[1][i], mem[2][i]],
        });
    }
    rows.push(Row {
        name: "fixed (empty space)".into(),
        unit: "KiB",
        target: "<= 160",
        values: [mem[0][3] / 1024.0, mem[1][3] / 1024.0, mem[2][3] / 1024.0],
    });

    println!(
        "\n## PASID allocation, side by side (fastest of interleaved rounds; ratio = peer / vsva)\n"
    );
    println!(
        "| {:<40} | {:>8} | {:>8} | {:>12} | {:>8} | {:>10} | {:>8} | {:>8} |",
        "pattern", "unit", "vsva", "vm-allocator", "xarray", "target", "vm-a/vsva", "xa/vsva"
    );
    println!(
        "|{:-<42}|{:->10}|{:->10}|{:->14}|{:->10}|{:->12}|{:->10}|{:->10}|",
        "", "", "", "", "", "", "", ""
    );
    for r in rows {
        let [v, a, s] = r.values;
        // Speed-ups are already ratios; everything else is "lower is better".
        let ratio = |x: f64| match r.unit {
            "x" => "-".to_string(),
            _ if v > 0.0 && x.is_finite() => format!("{:.1}x", x / v),
            _ => "n/a".to_string(),
        };
        println!(
            "| {:<40} | {:>8} | {:>8.1} | {:>12.1} | {:>8.1} | {:>10} | {:>8} | {:>8} |",
            r.name,
            r.unit,
            v,
            a,
            s,
            r.target,
            ratio(a),
            ratio(s)
        );
    }
}

/// Checks the XArray peer against this crate before timing it: both hand out the lowest free
/// PASID, so the same random sequence of allocations (in random ranges), frees and range frees
/// must give the same answers.
fn check_xarray_peer() {
    let (v, x) = (Vsva::new(), Xarray::new());
    let (mut vs, mut xs) = (v.set(1), x.set(1));
    let mut held = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..200_000 {
        match next() % 8 {
            0..=3 => {
                let min = (next() % u64::from(MAX)) as u32 / 16;
                let (a, b) = (v.alloc(&mut vs, min, MAX), x.alloc(&mut xs, min, MAX));
                assert_eq!(a, b, "lowest free at or above {min}");
                held.push(a);
            }
            4..=6 if !held.is_empty() => {
                let p = held.swap_remove((next() % held.len() as u64) as usize);
                v.free(&mut vs, p);
                x.free(&mut xs, p);
            }
            _ => {
                let min = (next() % u64::from(MAX)) as u32;
                let max = min.saturating_add((next() % 4096) as u32);
                assert_eq!(
                    v.free_range(&mut vs, min, max),
                    x.free_range(&mut xs, min, max)
                );
                held.retain(|&p| p < min || p > max);
            }
        }
    }
}

/// The start of the upper half of the space: the second worker's own range in the
/// two-thread bench, and the range of the `a1-upper` loop.
const UPPER: u32 = 1 << (BITS - 1);

/// Instruction-count mode: `VSVA_BENCH_LOOP=<a1|a1-upper|a2|fill>,<vsva|vm-allocator|xarray>,<n>,<ops>`
/// builds the state (`n` held; ignored by `fill`, which starts empty) and runs `ops` pairs (or
/// allocations) once inside [`counted_loop`], so that `valgrind --tool=callgrind
/// --collect-atstart=no --toggle-collect='*counted_loop*'` counts that loop alone.
fn loop_mode(spec: &str) {
    let parts: Vec<&str> = spec.split(',').collect();
    let [pattern, peer, n, ops] = parts[..] else {
        panic!("VSVA_BENCH_LOOP wants <pattern>,<peer>,<n>,<ops>, got {spec:?}");
    };
    let (n, ops): (u32, u64) = (n.parse().unwrap(), ops.parse().unwrap());
    match peer {
        "vsva" => loop_for::<Vsva>(pattern, n, ops),
        "vm-allocator" => loop_for::<VmAllocator>(pattern, n, ops),
        "xarray" => loop_for::<Xarray>(pattern, n, ops),
        other => panic!("unknown peer {other:?}"),
    }
}

fn loop_for<P: Peer>(pattern: &str, n: u32, ops: u64) {
    let p = P::new();
    let mut set = p.set(1);
    let held = match pattern {
        "fill" => Vec::new(),
        "a1-upper" => (0..n).map(|_| p.alloc(&mut set, UPPER, MAX)).collect(),
        _ => prefill(&p, &mut set, n),
    };
    let t = counted_loop(&p, &mut set, pattern, &held, ops);
    println!("{pattern} {} n={n}: {:.1} ns/op", P::NAME, ns(t, ops));
}

#[inline(never)]
fn counted_loop<P: Peer>(
    p: &P,
    set: &mut P::Set,
    pattern: &str,
    held: &[u32],
    ops: u64,
) -> Duration {
    match pattern {
        "a1" => a1(p, set, ops),
        "a2" => a2(p, set, held, ops),
        "a1-upper" => {
            let start = Instant::now();
            for _ in 0..ops {
                let id = p.alloc(set, UPPER, MAX);
                p.free(set, black_box(id));
            }
            start.elapsed()
        }
        "fill" => {
            let start = Instant::now();
            for _ in 0..ops {
                black_box(p.alloc(set, 1, MAX));
            }
            start.elapsed()
        }
        other => panic!("unknown pattern {other:?}"),
    }
}

fn main() {
    if let Some(spec) = std::env::var_os("VSVA_BENCH_LOOP") {
        loop_mode(&spec.to_string_lossy());
        return;
    }
    check_xarray_peer();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let summary_only = std::env::var_os("VSVA_BENCH_SUMMARY_ONLY").is_some();
    if !summary_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
            .configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
    // `cargo test --benches` runs bench binaries in test mode: skip the long summary there.
    if !args.iter().any(|a| a == "--bench") && !summary_only {
        return;
    }
    summary(quick);
}
