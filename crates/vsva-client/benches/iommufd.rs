//! The iommufd front end through the daemon, against the socket floor: each operation of
//! `vsva-iommufd`'s own bench, sent through the client's iommufd calls to a private `vsvad`
//! (the binary `find_vsvad` locates; `cargo build --release -p vsvad` first), timed
//! interleaved with `PING`s whose request body has the same length on the same connection:
//!
//! * `invalidate_1`, `invalidate_64`: `IOMMU_HWPT_INVALIDATE` on a nested HWPT with one PASID
//!   attached, 1 and 64 page-selective VT-d stage-1 entries (one round trip each);
//! * `map_unmap`: `IOMMU_IOAS_MAP` then `IOMMU_IOAS_UNMAP` of 4 KiB on an IOAS with one
//!   paging HWPT (two round trips, against two pings).
//!
//! It prints each operation's median time, the floor's, and their ratio. No target is set:
//! the figures say how much of a call through the daemon is the daemon's work.
//!
//! `cargo bench -p vsva-client --bench iommufd`

use std::hint::black_box;
use std::time::{Duration, Instant};

use vsva_client::{find_vsvad, Client, GuestMemory, MachineConfig, Options, PrivateDaemon};
use vsva_proto::{IommufdRequest, Request};
use vsva_uapi::iommufd::*;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const MB: u64 = 1 << 20;
const VA: u64 = 0x4000_0000;
/// 01:00.0 (group 1) holds the nesting container the PASID comes from; 01:01.0 (group 2)
/// is bound to the connection's iommufd context.
const CONTAINER_GROUP: u32 = 1;
const SID: u16 = 0x0108;

/// The bytes of `v` with its size word set to its own size.
fn arg<T: IntoBytes + Immutable>(v: &T) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    let n = b.len() as u32;
    b[..4].copy_from_slice(&n.to_le_bytes());
    b
}

fn back<T: FromBytes>(b: &[u8]) -> T {
    T::read_from_prefix(b).unwrap().0
}

fn ioctl(c: &mut Client, cmd: u32, buf: &mut [u8]) {
    c.iommufd_ioctl(cmd, buf).unwrap();
}

/// An `IOMMU_HWPT_INVALIDATE` argument of `n` page-selective entries (the array right after
/// the struct: user pointers are offsets into the same buffer).
fn inv_buf(hwpt: u32, n: u32) -> Vec<u8> {
    let mut b = arg(&IommuHwptInvalidate {
        hwpt_id: hwpt,
        data_uptr: size_of::<IommuHwptInvalidate>() as u64,
        data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
        entry_len: size_of::<IommuHwptVtdS1Invalidate>() as u32,
        entry_num: n,
        ..Default::default()
    });
    for i in 0..u64::from(n) {
        let e = IommuHwptVtdS1Invalidate {
            addr: VA + i * 4096,
            npages: 1,
            flags: 0,
            reserved: 0,
        };
        b.extend_from_slice(e.as_bytes());
    }
    b
}

/// The prepared argument buffers of the three operations.
struct Args {
    inv1: Vec<u8>,
    inv64: Vec<u8>,
    map: Vec<u8>,
    unmap: Vec<u8>,
}

/// Guest RAM registered and mapped into an IOAS, a nested HWPT with a PASID of the process
/// attached, and a second IOAS with one paging HWPT for map / unmap.
fn setup(c: &mut Client, mem: &GuestMemory) -> Args {
    let container = c.nesting_container(CONTAINER_GROUP).unwrap();
    let pasid = c.pasid_alloc(container, 1, 1000).unwrap();
    c.register_memory(mem.fd(), 0, 16 * MB, 0).unwrap();
    let mut b = VfioDeviceBindIommufd {
        argsz: 16,
        ..Default::default()
    }
    .as_bytes()
    .to_vec();
    c.iommufd_device_ioctl(SID, VFIO_DEVICE_BIND_IOMMUFD, &mut b)
        .unwrap();
    let dev = back::<VfioDeviceBindIommufd>(&b).out_devid;
    c.enable_pasid(SID).unwrap();

    let ioas_alloc = |c: &mut Client| {
        let mut a = arg(&IommuIoasAlloc::default());
        ioctl(c, IOMMU_IOAS_ALLOC, &mut a);
        back::<IommuIoasAlloc>(&a).out_ioas_id
    };
    let ioas = ioas_alloc(c);
    let mut m = arg(&IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: 0,
        length: 8 * MB,
        iova: 0,
        ..Default::default()
    });
    ioctl(c, IOMMU_IOAS_MAP, &mut m);
    let mut p = arg(&IommuHwptAlloc {
        flags: IOMMU_HWPT_ALLOC_NEST_PARENT,
        dev_id: dev,
        pt_id: ioas,
        ..Default::default()
    });
    ioctl(c, IOMMU_HWPT_ALLOC, &mut p);
    let parent = back::<IommuHwptAlloc>(&p).out_hwpt_id;
    let s1 = IommuHwptVtdS1 {
        flags: 0,
        pgtbl_addr: MB,
        addr_width: 48,
        reserved: 0,
    };
    let mut n = arg(&IommuHwptAlloc {
        flags: IOMMU_HWPT_ALLOC_PASID,
        dev_id: dev,
        pt_id: parent,
        data_type: IOMMU_HWPT_DATA_VTD_S1,
        data_len: size_of::<IommuHwptVtdS1>() as u32,
        data_uptr: size_of::<IommuHwptAlloc>() as u64,
        ..Default::default()
    });
    n.extend_from_slice(s1.as_bytes());
    ioctl(c, IOMMU_HWPT_ALLOC, &mut n);
    let nested = back::<IommuHwptAlloc>(&n).out_hwpt_id;
    let mut at = VfioDeviceAttachIommufdPt {
        argsz: 16,
        flags: VFIO_DEVICE_ATTACH_PASID,
        pt_id: nested,
        pasid,
    }
    .as_bytes()
    .to_vec();
    c.iommufd_device_ioctl(SID, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut at)
        .unwrap();

    let map_ioas = ioas_alloc(c);
    let mut h = arg(&IommuHwptAlloc {
        dev_id: dev,
        pt_id: map_ioas,
        ..Default::default()
    });
    ioctl(c, IOMMU_HWPT_ALLOC, &mut h);
    Args {
        inv1: inv_buf(nested, 1),
        inv64: inv_buf(nested, 64),
        map: arg(&IommuIoasMap {
            flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: map_ioas,
            user_va: 12 * MB,
            length: 4096,
            iova: 32 * MB,
            ..Default::default()
        }),
        unmap: arg(&IommuIoasUnmap {
            ioas_id: map_ioas,
            iova: 32 * MB,
            length: 4096,
            ..Default::default()
        }),
    }
}

/// The request body length of an iommufd ioctl with `arg`, for a ping of the same size.
fn body_len(cmd: u32, arg: &[u8]) -> usize {
    Request::Iommufd(IommufdRequest::Ioctl {
        cmd,
        arg: arg.to_vec(),
    })
    .encode_body()
    .len()
}

/// Medians of `rounds` rounds of `iters` calls of `op` and of `floor`, the two interleaved
/// round by round.
fn interleaved(
    rounds: usize,
    iters: u32,
    op: &mut dyn FnMut(),
    floor: &mut dyn FnMut(),
) -> (Duration, Duration) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed() / iters
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(time(op));
        b.push(time(floor));
    }
    a.sort();
    b.sort();
    (a[rounds / 2], b[rounds / 2])
}

fn main() {
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build --release -p vsvad)");
    let config = MachineConfig::new(2).to_toml();
    let daemon = PrivateDaemon::start_with(&vsvad, Some(&config), &[]).unwrap();
    let mut c = Client::connect(Options::new(daemon.socket(), "bench-iommufd")).unwrap();
    let mem = GuestMemory::new(0, 16 * MB).unwrap();
    let mut a = setup(&mut c, &mem);
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, iters) = if quick { (11, 100) } else { (31, 300) };

    println!(
        "iommufd through vsvad (median of interleaved rounds; ratio = operation / ping floor):"
    );
    let ping = |c: &mut Client, len: usize| {
        c.ping(black_box(&vec![0u8; len])).unwrap();
    };
    // The client copies the argument into its request and the answer back: the same buffer
    // serves every call.
    let cases: [(&str, u32, &mut Vec<u8>); 2] = [
        ("invalidate_1", IOMMU_HWPT_INVALIDATE, &mut a.inv1),
        ("invalidate_64", IOMMU_HWPT_INVALIDATE, &mut a.inv64),
    ];
    let client = std::cell::RefCell::new(c);
    for (name, cmd, buf) in cases {
        let len = body_len(cmd, buf);
        let (op, floor) = interleaved(
            rounds,
            iters,
            &mut || ioctl(&mut client.borrow_mut(), cmd, black_box(&mut buf[..])),
            &mut || ping(&mut client.borrow_mut(), len),
        );
        report(name, op, floor);
    }
    let (map_len, unmap_len) = (
        body_len(IOMMU_IOAS_MAP, &a.map),
        body_len(IOMMU_IOAS_UNMAP, &a.unmap),
    );
    let (op, floor) = interleaved(
        rounds,
        iters,
        &mut || {
            let mut c = client.borrow_mut();
            // The answer is the caller's struct as the kernel leaves it, ready for the next map.
            ioctl(&mut c, IOMMU_IOAS_MAP, black_box(&mut a.map[..]));
            ioctl(&mut c, IOMMU_IOAS_UNMAP, black_box(&mut a.unmap[..]));
        },
        &mut || {
            let mut c = client.borrow_mut();
            ping(&mut c, map_len);
            ping(&mut c, unmap_len);
        },
    );
    report("map_unmap", op, floor);
}

fn report(name: &str, op: Duration, floor: Duration) {
    println!(
        "{name:>14}: iommufd {op:>10.2?}  ping floor {floor:>10.2?}  ratio {:.2}",
        op.as_secs_f64() / floor.as_secs_f64()
    );
}
