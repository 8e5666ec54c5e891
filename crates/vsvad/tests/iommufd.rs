//! The iommufd front end through the daemon: one context per connection, guest memory
//! registered by fd and mapped into an IOAS, a device bound and attached, DMA through it,
//! PASID ownership, the objects view, and everything released with the connection.

mod common;

use common::{Daemon, Helper, TestDir};
use vsva_client::{Client, Errno};
use vsva_uapi::iommufd::*;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Entry point of the helper client processes the tests spawn.
#[test]
#[ignore = "helper process entry point, run by the other tests"]
fn helper_process() {
    if let Ok(script) = std::env::var("VSVA_HELPER") {
        common::helper_main(&script);
    }
}

fn arg<T: IntoBytes + Immutable>(v: &T) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    let n = b.len() as u32;
    b[..4].copy_from_slice(&n.to_le_bytes());
    b
}

fn back<T: FromBytes>(b: &[u8]) -> T {
    T::read_from_prefix(b).unwrap().0
}

fn errno(r: Result<(), vsva_client::ClientError>) -> Errno {
    r.unwrap_err().errno().expect("a daemon error")
}

fn attach(
    c: &mut Client,
    sid: u16,
    pt_id: u32,
    pasid: Option<u32>,
) -> Result<(), vsva_client::ClientError> {
    let mut a = VfioDeviceAttachIommufdPt {
        argsz: 16,
        flags: if pasid.is_some() {
            VFIO_DEVICE_ATTACH_PASID
        } else {
            0
        },
        pt_id,
        pasid: pasid.unwrap_or(0),
    }
    .as_bytes()
    .to_vec();
    c.iommufd_device_ioctl(sid, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut a)
}

#[test]
fn a_connection_drives_its_own_iommufd_context() {
    let dir = TestDir::new("iommufd");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("iommufd");
    let devs: Vec<_> = c
        .status()
        .unwrap()
        .devices
        .into_iter()
        .filter(|d| d.group != u32::MAX)
        .collect();
    assert!(devs.len() >= 2, "two devices in groups");
    let (pasid_dev, dev) = (&devs[0], &devs[1]);
    // PASIDs come from the process's set, through a container (journaled).
    let h = c.nesting_container(pasid_dev.group).unwrap();
    let pasid = c.pasid_alloc(h, 1, 1000).unwrap();

    let mem = vsva_client::GuestMemory::new(0, 1 << 20).unwrap();
    mem.write(0x2000, b"guest").unwrap();
    c.register_memory(mem.fd(), 0, 1 << 20, 0).unwrap();

    let mut a = arg(&IommuIoasAlloc::default());
    c.iommufd_ioctl(IOMMU_IOAS_ALLOC, &mut a).unwrap();
    let ioas = back::<IommuIoasAlloc>(&a).out_ioas_id;
    let map = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: 0,
        length: 1 << 20,
        iova: 0x10_0000,
        ..Default::default()
    };
    let mut m = arg(&map);
    c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut m).unwrap();
    // The caller's struct comes back as the kernel leaves it: its own user_va, not the
    // daemon's host address, so the same struct can be used again.
    let back_map = back::<IommuIoasMap>(&m);
    assert_eq!((back_map.user_va, back_map.iova), (0, 0x10_0000));
    // Memory the process did not register cannot be mapped.
    let mut bad = arg(&IommuIoasMap {
        user_va: 1 << 40,
        iova: 1 << 30,
        ..map
    });
    assert_eq!(
        errno(c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut bad)),
        Errno::EFAULT
    );

    let mut b = VfioDeviceBindIommufd {
        argsz: 16,
        ..Default::default()
    }
    .as_bytes()
    .to_vec();
    c.iommufd_device_ioctl(dev.source_id, VFIO_DEVICE_BIND_IOMMUFD, &mut b)
        .unwrap();
    let dev_id = back::<VfioDeviceBindIommufd>(&b).out_devid;
    attach(&mut c, dev.source_id, ioas, None).unwrap();
    assert_eq!(
        c.dma_read(dev.source_id, None, 0x10_2000, 5).unwrap(),
        b"guest"
    );

    // A PASID-capable paging HWPT: the process's own PASID attaches, another does not.
    let mut hw = arg(&IommuHwptAlloc {
        flags: IOMMU_HWPT_ALLOC_PASID,
        dev_id,
        pt_id: ioas,
        ..Default::default()
    });
    c.iommufd_ioctl(IOMMU_HWPT_ALLOC, &mut hw).unwrap();
    let hwpt = back::<IommuHwptAlloc>(&hw).out_hwpt_id;
    // Not while the requests without PASID are on the IOAS's automatic HWPT, which is never
    // PASID-capable (Linux's iommufd_hwpt_pasid_compat): they move to the new HWPT first,
    // and the automatic one, left unused, goes.
    assert_eq!(
        errno(attach(&mut c, dev.source_id, hwpt, Some(pasid))),
        Errno::EINVAL
    );
    attach(&mut c, dev.source_id, hwpt, None).unwrap();
    assert_eq!(
        c.dma_read(dev.source_id, None, 0x10_2000, 5).unwrap(),
        b"guest"
    );
    assert_eq!(
        errno(attach(&mut c, dev.source_id, hwpt, Some(pasid + 1))),
        Errno::ENOENT
    );
    attach(&mut c, dev.source_id, hwpt, Some(pasid)).unwrap();
    // A second attach is a replace (Linux's iommufd_device_pasid_replace); to the same HWPT it
    // succeeds and changes nothing.
    attach(&mut c, dev.source_id, hwpt, Some(pasid)).unwrap();

    // The objects view: IOAS, device, the explicit HWPT (the automatic one is gone).
    let objects = c.iommufd_objects(0).unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| IOMMUFD_KIND_NAMES_OF[o.kind as usize])
        .collect();
    assert_eq!(kinds, ["ioas", "device", "hwpt-paging"]);
    let device = objects.iter().find(|o| o.id == dev_id).unwrap();
    assert_eq!(device.attached.len(), 2);

    // Page requests of a PASID attached through an HWPT with a fault queue join that queue,
    // read and answered through the daemon as iommufd's fault fd is.
    let mut fa = arg(&IommuFaultAlloc {
        size: 16,
        ..Default::default()
    });
    c.iommufd_ioctl(IOMMU_FAULT_QUEUE_ALLOC, &mut fa).unwrap();
    let fault = back::<IommuFaultAlloc>(&fa).out_fault_id;
    let mut hw = arg(&IommuHwptAlloc {
        flags: IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_FAULT_ID_VALID,
        dev_id,
        pt_id: ioas,
        fault_id: fault,
        ..Default::default()
    });
    c.iommufd_ioctl(IOMMU_HWPT_ALLOC, &mut hw).unwrap();
    let faulting = back::<IommuHwptAlloc>(&hw).out_hwpt_id;
    let pasid2 = c.pasid_alloc(h, 1, 1000).unwrap();
    attach(&mut c, dev.source_id, faulting, Some(pasid2)).unwrap();
    let raise = |c: &mut Client, pasid: u32| {
        c.call(vsva_proto::Request::PageRequest(vsva_proto::RaisedPage {
            source_id: dev.source_id,
            flags: vsva_proto::PAGE_REQUEST_PASID | vsva_proto::PAGE_REQUEST_LAST,
            pasid,
            addr: 0x10_5000,
            grpid: 3,
            perm: vsva_proto::PERM_WRITE as u16,
        }))
    };
    raise(&mut c, pasid2).unwrap();
    let faults = c.iommufd_read_faults(fault, 8).unwrap();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let f = faults[0];
    assert_eq!(
        (f.dev_id, f.pasid, f.grpid, f.addr),
        (dev_id, pasid2, 3, 0x10_5000)
    );
    assert_ne!(f.flags & IOMMU_PGFAULT_FLAGS_LAST_PAGE, 0);
    let answer = |cookie| IommuHwptPageResponse {
        cookie,
        code: IOMMUFD_PAGE_RESP_SUCCESS,
    };
    assert!(c.iommufd_respond(fault, &[answer(f.cookie + 1)]).is_err());
    assert_eq!(c.iommufd_respond(fault, &[answer(f.cookie)]).unwrap(), 1);
    // A PASID attached through an HWPT without a fault queue has nowhere to send them.
    let refused = raise(&mut c, pasid).unwrap_err();
    assert_eq!(refused.errno(), Some(Errno::EINVAL), "{refused}");
    let objects = c.iommufd_objects(0).unwrap();

    // Another connection of the same process has its own, empty context; closing the first
    // releases the device, which a container can then take.
    let mut other = d.client("iommufd-2");
    assert_eq!(
        other.iommufd_objects(0).unwrap().len(),
        objects.len(),
        "the process's view"
    );
    drop(c);
    common::wait_until("the context is released", || {
        other.iommufd_objects(0).unwrap().is_empty()
    });
    other.nesting_container(dev.group).unwrap();
}

const IOMMUFD_KIND_NAMES_OF: [&str; 5] = vsva_client::IOMMUFD_KIND_NAMES;

/// `IOMMUFD_OBJECTS` of another pid (an admin request; the tests run as root) answers a pid
/// the daemon has no context for `ESRCH` naming it, as `SET_QUOTA` and `FORCE_RELEASE` do
/// (docs/protocol.md, "Admin requests"); a process with a context but no iommufd context has
/// no objects.
#[test]
fn objects_of_a_pid_without_a_context_is_esrch() {
    let dir = TestDir::new("iommufd-pid");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("admin");
    assert!(c.is_admin(), "these tests run as root");
    // A pid that has no context: a child that has exited.
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let e = c.iommufd_objects(gone).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ESRCH), "{e}");
    assert!(e.to_string().contains(&format!("pid {gone}")), "{e}");
    assert_eq!(
        c.set_quota(gone, 1).unwrap_err().errno(),
        Some(Errno::ESRCH)
    );
    // A process with a context (its hello done) and no iommufd context: no objects.
    let mut other = Helper::spawn(&d.socket, "watch");
    other.status();
    assert!(c.iommufd_objects(other.child.id()).unwrap().is_empty());
    // The caller's own pid, named or 0, has a context.
    assert!(c.iommufd_objects(std::process::id()).unwrap().is_empty());
    assert!(c.iommufd_objects(0).unwrap().is_empty());
}

/// An `IOMMU_IOAS_MAP` without `FIXED_IOVA` picks the IOVA Linux picks for the caller's own
/// `user_va`, though the daemon maps the memory by its host address: the table's rows are
/// mapped one after the other into one IOAS, each IOVA worked out by hand from
/// `iopt_alloc_iova` (io_pagetable.c): alignment `min(roundup_pow_of_two(length),
/// 1 << __ffs64(user_va))`, at most `HPAGE_SIZE` (2 MiB), in the first hole at or above
/// `PAGE_SIZE`, by rising IOVA, between the mappings of the rows before. The first region
/// is registered at an address 4 KiB past a 2 MiB boundary, the second at a 2 MiB one.
#[test]
fn an_unfixed_map_picks_the_iova_linux_picks_for_the_callers_user_va() {
    let dir = TestDir::new("iommufd-iova");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("iommufd-iova");
    let mem = vsva_client::GuestMemory::new(0, 10 << 20).unwrap();
    let r1 = 0x4000_1000;
    c.register_memory(mem.fd(), r1, 8 << 20, 0).unwrap();
    let r2 = 0x8000_0000;
    c.register_memory(mem.fd(), r2, 2 << 20, 8 << 20).unwrap();
    let mut a = arg(&IommuIoasAlloc::default());
    c.iommufd_ioctl(IOMMU_IOAS_ALLOC, &mut a).unwrap();
    let ioas = back::<IommuIoasAlloc>(&a).out_ioas_id;
    let rows: [(u64, u64, u64, &str); 6] = [
        // The region's start, 4 KiB aligned: 64 KiB held to 4 KiB, the space's first page.
        (r1, 0x1_0000, 0x1000, "[0x1000, 0x10fff]"),
        // 64 KiB aligned, 4 MiB long: 64 KiB alignment, past the first mapping.
        (0x4001_0000, 4 << 20, 0x2_0000, "[0x20000, 0x41ffff]"),
        // 4 MiB aligned and long: 4 MiB held to 2 MiB, so 0x600000 (not 0x800000).
        (0x4040_0000, 4 << 20, 0x60_0000, "[0x600000, 0x9fffff]"),
        // 16 KiB aligned, 12 KiB (16 KiB rounded up): in the hole [0x11000, 0x1ffff].
        (0x4000_4000, 0x3000, 0x1_4000, "[0x14000, 0x16fff]"),
        // 32 KiB aligned and long: the rest of that hole, [0x18000, 0x1ffff], exactly.
        (0x4000_8000, 0x8000, 0x1_8000, "[0x18000, 0x1ffff]"),
        // The second region, 2 MiB aligned and long: the first free 2 MiB boundary.
        (r2, 2 << 20, 0xa0_0000, "[0xa00000, 0xbfffff]"),
    ];
    for (user_va, length, want, mapped) in rows {
        let mut m = arg(&IommuIoasMap {
            flags: IOMMU_IOAS_MAP_READABLE,
            ioas_id: ioas,
            user_va,
            length,
            ..Default::default()
        });
        c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut m).unwrap();
        let got = back::<IommuIoasMap>(&m);
        assert_eq!(
            (got.user_va, got.iova),
            (user_va, want),
            "user_va {user_va:#x} length {length:#x}: want {mapped}"
        );
    }
}
