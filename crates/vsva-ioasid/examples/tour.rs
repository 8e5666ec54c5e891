//! A short tour of the PASID allocator: three processes share one host-wide space, with
//! quotas, range frees, a teardown subscriber that finishes late, and a release.
//!
//! Run with `cargo run --release -p vsva-ioasid --example tour`.

use std::sync::{Arc, Mutex};

use vsva_ioasid::{Error, IoasidSpace, PasidState, TeardownSubscriber, TeardownTicket};

/// Stands for an IOMMU that must flush its caches before a PASID can be reused.
#[derive(Default)]
struct SlowIommu {
    pending: Mutex<Vec<TeardownTicket>>,
}

impl TeardownSubscriber for SlowIommu {
    fn teardown(&self, pasid: u32, ticket: TeardownTicket) {
        println!("    iommu: tearing down PASID {pasid} (will finish later)");
        self.pending.lock().unwrap().push(ticket);
    }
    fn name(&self) -> &str {
        "iommu"
    }
}

fn main() -> Result<(), Error> {
    let space = IoasidSpace::new(20)?;
    let iommu = Arc::new(SlowIommu::default());
    space.subscribe(iommu.clone());
    println!(
        "PASID space: {} bits, {} allocatable PASIDs (PASID 0 is reserved)",
        space.pasid_bits(),
        space.stats().capacity
    );

    let mut qemu = space.create_set(4242, 1000)?;
    let mut dpdk = space.create_set(4343, 1000)?;
    let mut greedy = space.create_set(4444, 3)?;
    println!(
        "created sets: qemu {}, dpdk {}, greedy {} (quota 3)",
        qemu.id(),
        dpdk.id(),
        greedy.id()
    );

    let q: Vec<u32> = (0..4)
        .map(|_| qemu.alloc(1, u32::MAX))
        .collect::<Result<_, _>>()?;
    println!("qemu allocated {q:?} (lowest free first)");
    let d = dpdk.alloc(100, 200)?;
    println!("dpdk asked for [100, 200] and got {d}");
    for _ in 0..3 {
        greedy.alloc(1, u32::MAX)?;
    }
    match greedy.alloc(1, u32::MAX) {
        Err(e) => println!("greedy's 4th allocation: {} — {e}", e.errno()),
        Ok(p) => println!("greedy unexpectedly got {p}"),
    }
    match dpdk.free(q[0]) {
        Err(e) => println!(
            "dpdk tries to free qemu's PASID {}: {} — {e}",
            q[0],
            e.errno()
        ),
        Ok(()) => println!("dpdk freed someone else's PASID?!"),
    }

    println!("qemu frees [0, u32::MAX] (all of its own, nobody else's):");
    let freed = qemu.free_range(0, u32::MAX)?;
    println!(
        "  freed {freed}; PASID {} is now {:?}",
        q[0],
        space.find(q[0])
    );
    let next = dpdk.alloc(1, u32::MAX)?;
    println!("dpdk allocates: gets {next}, not 1..=4, which are still being torn down");

    let done = iommu.pending.lock().unwrap().drain(..).count();
    println!("iommu finished {done} teardowns");
    println!("PASID {} is now {:?}", q[0], space.find(q[0]));
    let again = qemu.alloc(1, u32::MAX)?;
    println!("qemu allocates again: gets {again}");
    assert!(matches!(
        space.find(again),
        Some(PasidState::Allocated { .. })
    ));

    println!("greedy exits: its set is released");
    let released = greedy.release();
    println!("  released {released} PASIDs");
    drop(iommu.pending.lock().unwrap().drain(..));

    println!(
        "\n{:<6} {:>6} {:>6} {:>6}",
        "set", "token", "owned", "quota"
    );
    for s in space.sets() {
        println!(
            "{:<6} {:>6} {:>6} {:>6}",
            s.id.to_string(),
            s.token,
            s.owned,
            s.quota
        );
    }
    let stats = space.stats();
    println!(
        "space: {} allocated, {} freeing, {} sets, {} KiB",
        stats.allocated,
        stats.freeing,
        stats.sets,
        space.memory_bytes() / 1024
    );
    println!("\nexit: the remaining sets are released as they are dropped");
    Ok(())
}
