//! What the daemon's numbers are held against, measured in the loadgen's own process: the
//! socket's round trip, the machine's `fdatasync`, and the same request made in-process.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cost of the transport alone: two round trips of 16 bytes to an echo thread over a
/// Unix socket pair (p50, p99 in µs per pair of round trips).
pub fn socket_floor(time: Duration) -> (f64, f64) {
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
pub struct SyncFloor {
    /// Appending: the file grows, so each `fdatasync` also commits the new size.
    pub appended: (f64, f64),
    /// Overwriting zeros written and synced beforehand, as the daemon's log does.
    pub in_place: (f64, f64),
}

impl SyncFloor {
    /// The p50 of the cheaper kind: the floor the daemon's syncs are held against.
    pub fn cheaper(&self) -> f64 {
        self.appended.0.min(self.in_place.0)
    }
}

/// Measures [`SyncFloor`]: writing a 64-byte record to a file in the temporary directory
/// (where the private daemon keeps its state) and `fdatasync`-ing it, as the store does for a
/// batch of one record, with `gap` between one sync's end and the next write; each kind for
/// half of `time`.
pub fn fdatasync_floor(time: Duration, gap: Duration) -> SyncFloor {
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
pub fn in_process(time: Duration) -> (f64, f64, f64) {
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
