//! A map of memory the process did not register (`VFIO_IOMMU_MAP_DMA`'s `vaddr`,
//! `IOMMU_IOAS_MAP`'s `user_va`) fails like a failed pin in the kernel: `EFAULT`, but only at
//! the pin step, after every check the kernel makes first. A malformed or conflicting request
//! gets the kernel's errno for that, whatever memory it names.

mod common;

use common::{Daemon, TestDir};
use vsva_client::{ClientError, Errno};
use vsva_uapi::iommufd::*;
use vsva_uapi::vfio::{VFIO_TYPE1v2_IOMMU, VFIO_IOMMU_MAP_DMA, VFIO_SET_IOMMU};
use zerocopy::{FromBytes, IntoBytes};

fn refused<T>(r: Result<T, ClientError>) -> (Errno, String) {
    match r {
        Ok(_) => panic!("the request succeeded"),
        Err(e) => (e.errno().expect("a daemon error"), e.to_string()),
    }
}

fn map_dma(vaddr: u64, iova: u64, size: u64) -> Vec<u8> {
    let mut a = Vec::new();
    for v in [32u32, 3] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    for v in [vaddr, iova, size] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a
}

#[test]
fn map_dma_of_unregistered_memory_is_efault_only_after_the_kernels_earlier_checks() {
    let dir = TestDir::new("maporder");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("maporder");
    let mem = vsva_client::GuestMemory::new(0, 1 << 20).unwrap();
    c.register_memory(mem.fd(), 0x10_0000, 1 << 20, 0).unwrap();
    let h = c.open_container().unwrap();
    c.attach_group(h, 1).unwrap();
    let unregistered = 0x1000_0000;
    // No IOMMU set on the container yet: the kernel has no driver to pass the ioctl to.
    let (e, m) = refused(c.ioctl(h, VFIO_IOMMU_MAP_DMA, &mut map_dma(unregistered, 0, 0x1000)));
    assert_eq!(e, Errno::EINVAL, "{m}");
    c.ioctl(
        h,
        VFIO_SET_IOMMU,
        &mut u64::from(VFIO_TYPE1v2_IOMMU).to_le_bytes(),
    )
    .unwrap();
    // iova + size wraps: EINVAL (vfio_dma_do_map), before any page is pinned.
    let (e, m) = refused(c.ioctl(
        h,
        VFIO_IOMMU_MAP_DMA,
        &mut map_dma(unregistered, 0xffff_ffff_ffff_f000, 0x2000),
    ));
    assert_eq!(e, Errno::EINVAL, "{m}");
    // vaddr + size wraps: EINVAL too.
    let (e, m) = refused(c.ioctl(
        h,
        VFIO_IOMMU_MAP_DMA,
        &mut map_dma(0xffff_ffff_ffff_f000, 0, 0x2000),
    ));
    assert_eq!(e, Errno::EINVAL, "{m}");
    // An IOVA range already mapped: EEXIST, before the pin.
    c.ioctl(
        h,
        VFIO_IOMMU_MAP_DMA,
        &mut map_dma(0x10_0000, 0x4000, 0x1000),
    )
    .unwrap();
    let (e, m) = refused(c.ioctl(
        h,
        VFIO_IOMMU_MAP_DMA,
        &mut map_dma(unregistered, 0x4000, 0x1000),
    ));
    assert_eq!(e, Errno::EEXIST, "{m}");
    // Well formed, free IOVA, memory not registered: the pin fails, EFAULT, naming vaddr.
    let (e, m) = refused(c.ioctl(
        h,
        VFIO_IOMMU_MAP_DMA,
        &mut map_dma(unregistered, 0x8000, 0x1000),
    ));
    assert_eq!(e, Errno::EFAULT, "{m}");
    assert!(m.contains("vaddr 0x10000000"), "{m}");
    // Registered memory maps as before.
    c.ioctl(
        h,
        VFIO_IOMMU_MAP_DMA,
        &mut map_dma(0x10_1000, 0x8000, 0x1000),
    )
    .unwrap();
}

fn ioas_map(map: IommuIoasMap) -> Vec<u8> {
    let mut a = map.as_bytes().to_vec();
    let n = a.len() as u32;
    a[..4].copy_from_slice(&n.to_le_bytes());
    a
}

#[test]
fn ioas_map_of_unregistered_memory_is_efault_only_after_the_kernels_earlier_checks() {
    let dir = TestDir::new("ioasorder");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("ioasorder");
    let mut a = IommuIoasAlloc::default().as_bytes().to_vec();
    let n = a.len() as u32;
    a[..4].copy_from_slice(&n.to_le_bytes());
    c.iommufd_ioctl(IOMMU_IOAS_ALLOC, &mut a).unwrap();
    let ioas = IommuIoasAlloc::read_from_prefix(&a).unwrap().0.out_ioas_id;
    let good = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va: 0x1000_0000,
        length: 0x1000,
        iova: 0x10_0000,
        ..Default::default()
    };
    let cases = [
        (
            IommuIoasMap {
                flags: good.flags | 1 << 12,
                ..good
            },
            Errno::EOPNOTSUPP,
        ),
        (
            IommuIoasMap {
                reserved: 1,
                ..good
            },
            Errno::EOPNOTSUPP,
        ),
        (
            IommuIoasMap {
                iova: u64::MAX,
                ..good
            },
            Errno::EOVERFLOW,
        ),
        (
            IommuIoasMap {
                ioas_id: ioas + 100,
                ..good
            },
            Errno::ENOENT,
        ),
    ];
    for (map, want) in cases {
        let (e, m) = refused(c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut ioas_map(map)));
        assert_eq!(e, want, "{map:?}: {m}");
    }
    let mut arg = ioas_map(good);
    let (e, m) = refused(c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut arg));
    assert_eq!(e, Errno::EFAULT, "{m}");
    assert!(m.contains("user_va 0x10000000"), "{m}");
}

/// The stand-in address an unregistered `user_va` is given keeps what Linux's checks before
/// the pin look at: the caller's `user_va + length` (`iopt_alloc_user_pages`), so a length
/// the caller's range holds is judged as the kernel judges it, and its alignment up to 2 MiB
/// (`iopt_alloc_iova`), so the IOVA an unfixed map picks, or the lack of one, is the kernel's.
#[test]
fn ioas_map_of_unregistered_memory_keeps_the_callers_sum_and_alignment() {
    let dir = TestDir::new("ioaslimits");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("ioaslimits");
    let mut a = IommuIoasAlloc::default().as_bytes().to_vec();
    let n = a.len() as u32;
    a[..4].copy_from_slice(&n.to_le_bytes());
    c.iommufd_ioctl(IOMMU_IOAS_ALLOC, &mut a).unwrap();
    let ioas = IommuIoasAlloc::read_from_prefix(&a).unwrap().0.out_ioas_id;
    let fixed = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
        ioas_id: ioas,
        iova: 0x10_0000,
        ..Default::default()
    };
    let cases = [
        // Over SIZE_MAX - PAGE_SIZE, user_va + length does not wrap: iopt_alloc_pages.
        (0, u64::MAX - 0xfff, Errno::EINVAL),
        // 2^63 bytes from 0x1000: no wrap; the IOVA range reaches the reserved space.
        (0x1000, 1 << 63, Errno::EINVAL),
        // user_va + length is 2^64: iopt_alloc_user_pages.
        (0x1000, u64::MAX - 0xfff, Errno::EOVERFLOW),
    ];
    for (user_va, length, want) in cases {
        let map = IommuIoasMap {
            user_va,
            length,
            ..fixed
        };
        let (e, m) = refused(c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut ioas_map(map)));
        assert_eq!(e, want, "user_va {user_va:#x} length {length:#x}: {m}");
    }

    // Only [0x1000, 0x201fff] is allowed: 2 MiB fit there 4 KiB aligned, not 2 MiB aligned.
    // A user_va 4 KiB aligned gets IOVA 0x1000, and the pin fails (EFAULT), not ENOSPC.
    let mut allow = IommuIoasAllowIovas {
        size: 24,
        ioas_id: ioas,
        num_iovas: 1,
        allowed_iovas: 24,
        ..Default::default()
    }
    .as_bytes()
    .to_vec();
    allow.extend_from_slice(
        IommuIovaRange {
            start: 0x1000,
            last: 0x20_1fff,
        }
        .as_bytes(),
    );
    c.iommufd_ioctl(IOMMU_IOAS_ALLOW_IOVAS, &mut allow).unwrap();
    let unfixed = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_READABLE,
        ioas_id: ioas,
        user_va: 0x1000,
        length: 2 << 20,
        ..Default::default()
    };
    let (e, m) = refused(c.iommufd_ioctl(IOMMU_IOAS_MAP, &mut ioas_map(unfixed)));
    assert_eq!(e, Errno::EFAULT, "{m}");
    assert!(m.contains("user_va 0x1000"), "{m}");
    // A 2 MiB aligned user_va asks for 2 MiB alignment: no room.
    let (e, m) = refused(c.iommufd_ioctl(
        IOMMU_IOAS_MAP,
        &mut ioas_map(IommuIoasMap {
            user_va: 0x20_0000,
            ..unfixed
        }),
    ));
    assert_eq!(e, Errno::ENOSPC, "{m}");
}
