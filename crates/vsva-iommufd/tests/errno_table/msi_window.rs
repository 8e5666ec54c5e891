//! The rows of the interrupt window a device reserves in an IOAS while attached without
//! PASID (`intel_iommu_get_resv_regions`: `IOMMU_RESV_MSI` at `0xfee00000..=0xfeefffff`,
//! reserved by `iopt_table_enforce_dev_resv_regions`): what the reservation refuses, and the
//! attaches it refuses. Each row leaves the context's objects and the IOAS's IOVA ranges as
//! they were.

use super::*;

const WIN: u64 = 0xfee0_0000;
const WIN_LAST: u64 = 0xfeef_ffff;

/// `IOMMU_IOAS_ALLOW_IOVAS` of `ioas` with `ranges`.
fn allow_buf(ioas: u32, ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut b = arg(
        &IommuIoasAllowIovas {
            ioas_id: ioas,
            num_iovas: ranges.len() as u32,
            allowed_iovas: 24,
            ..Default::default()
        },
        0,
    );
    for &(start, last) in ranges {
        b.extend_from_slice(IommuIovaRange { start, last }.as_bytes());
    }
    b
}

/// The IOAS's IOVA ranges, for the "changes nothing" check.
fn ranges(f: &Fx, ioas: u32) -> Vec<(u64, u64)> {
    let (r, _) = f.ctx.ioas_iova_ranges(ioas).unwrap();
    r.iter().map(|r| (r.start, r.last)).collect()
}

/// With device 3 attached without PASID (to the nest parent over the fixture's IOAS), the
/// window is reserved there: maps, copies and allowed ranges over it are refused.
#[test]
fn what_the_reserved_window_refuses() {
    let f = fixture();
    attach(&f.ctx, 3, f.parent, None).unwrap();
    let (map, _, copy) = ioas_cmds(&f);
    let map_at = |iova, length| {
        arg(
            &IommuIoasMap {
                iova,
                length,
                ..map
            },
            0,
        )
    };
    let check_iova = "iopt_check_iova (io_pagetable.c)";
    let set_allow = "iopt_set_allow_iova (io_pagetable.c)";
    let rows = vec![
        row(
            "map: FIXED_IOVA at the window's start",
            check_iova,
            IOMMU_IOAS_MAP,
            map_at(WIN, 0x1000),
            Errno::EINVAL,
        ),
        row(
            "map: FIXED_IOVA running into the window from below",
            check_iova,
            IOMMU_IOAS_MAP,
            map_at(WIN - 0x1000, 0x2000),
            Errno::EINVAL,
        ),
        row(
            "map: FIXED_IOVA in the window's last page",
            check_iova,
            IOMMU_IOAS_MAP,
            map_at(WIN_LAST - 0xfff, 0x1000),
            Errno::EINVAL,
        ),
        row(
            "map: FIXED_IOVA over the whole window",
            check_iova,
            IOMMU_IOAS_MAP,
            map_at(WIN - 0x1000, 0x10_2000),
            Errno::EINVAL,
        ),
        row(
            "copy: FIXED_IOVA dst_iova in the window",
            check_iova,
            IOMMU_IOAS_COPY,
            arg(
                &IommuIoasCopy {
                    dst_iova: WIN + 0x4000,
                    ..copy
                },
                0,
            ),
            Errno::EINVAL,
        ),
        row(
            "allow_iovas: a range over the window",
            set_allow,
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(f.ioas, &[(0xf000_0000, 0xffff_ffff)]),
            Errno::EADDRINUSE,
        ),
        row(
            "allow_iovas: a range ending on the window's first byte",
            set_allow,
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(f.ioas, &[(0x1000_0000, WIN)]),
            Errno::EADDRINUSE,
        ),
        row(
            "allow_iovas: a range starting on the window's last byte",
            set_allow,
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(f.ioas, &[(WIN_LAST, 0xffff_ffff)]),
            Errno::EADDRINUSE,
        ),
        row(
            "allow_iovas: the second of two ranges over the window",
            set_allow,
            IOMMU_IOAS_ALLOW_IOVAS,
            allow_buf(
                f.ioas,
                &[(0x1000_0000, 0x1fff_ffff), (WIN + 0x1000, WIN + 0x1fff)],
            ),
            Errno::EADDRINUSE,
        ),
    ];
    let before = (f.ctx.objects(), ranges(&f, f.ioas));
    assert_eq!(before.1.len(), 2, "the window splits the IOAS's ranges");
    for mut r in rows {
        let got = f.ctx.ioctl(r.cmd, &mut r.buf).map_err(|e| e.errno());
        assert_eq!(got, Err(r.errno), "{} (follows {})", r.what, r.linux);
        let after = (f.ctx.objects(), ranges(&f, f.ioas));
        assert_eq!(after, before, "{} changed the context", r.what);
    }
}

/// The attaches the window refuses: a mapping, or an allowed range, of the IOAS in it
/// (`iopt_reserve_iova`, through `iommufd_device_attach_reserved_iova` on attach and
/// `iommufd_group_do_replace_reserved_iova` on replace), whatever the attach names: the
/// IOAS (a new automatic HWPT is destroyed again), a paging HWPT over it, a nested HWPT
/// over such a parent.
#[test]
fn the_attaches_the_window_refuses() {
    let f = fixture();
    function(&f._vfio, 4);
    bind(&f.ctx, 4);
    let mut buf = arg(&map_cmd(f.ioas, GUEST_HPA, WIN + 0x2000, 0x1000), 0);
    call(&f.ctx, IOMMU_IOAS_MAP, &mut buf).unwrap();
    let allowed = ioas_alloc(&f.ctx);
    allow_iovas(&f.ctx, allowed, 0xf000_0000, 0xffff_ffff).unwrap();
    let elsewhere = ioas_alloc(&f.ctx);
    attach(&f.ctx, 4, elsewhere, None).unwrap();
    let reserve = "iopt_reserve_iova (io_pagetable.c)";
    let cases: Vec<(&str, &str, u8, u32)> = vec![
        (
            "attach: to an IOAS with a mapping in the window",
            reserve,
            3,
            f.ioas,
        ),
        ("attach: to a paging HWPT over it", reserve, 3, f.parent),
        (
            "attach: to a nested HWPT over such a parent",
            reserve,
            3,
            f.nested,
        ),
        (
            "attach: to an IOAS with an allowed range over the window",
            reserve,
            3,
            allowed,
        ),
        (
            "replace: to an IOAS with a mapping in the window",
            reserve,
            4,
            f.ioas,
        ),
        (
            "replace: to a nested HWPT over such a parent",
            reserve,
            4,
            f.nested,
        ),
    ];
    let before = (
        f.ctx.objects(),
        ranges(&f, f.ioas),
        ranges(&f, allowed),
        ranges(&f, elsewhere),
    );
    for (what, linux, dev, pt_id) in cases {
        let got = attach(&f.ctx, dev, pt_id, None);
        assert_eq!(got, Err(Errno::EADDRINUSE), "{what} (follows {linux})");
        let after = (
            f.ctx.objects(),
            ranges(&f, f.ioas),
            ranges(&f, allowed),
            ranges(&f, elsewhere),
        );
        assert_eq!(after, before, "{what} changed the context");
    }
}
