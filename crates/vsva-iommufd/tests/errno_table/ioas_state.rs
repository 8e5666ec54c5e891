//! IOAS calls whose answer depends on what an earlier call left: a copy's permission against
//! the source mapping's, what a refused unmap has already taken, and the IOVA an IOAS picks.
//! Each case names the Linux function it follows.

use super::*;

/// Maps `length` bytes of host memory at `hpa` with `flags`; returns the IOVA.
fn map(f: &Fx, flags: u32, hpa: u64, iova: u64, length: u64) -> Result<u64, Errno> {
    let mut buf = arg(
        &IommuIoasMap {
            flags,
            ..map_cmd(f.ioas, hpa, iova, length)
        },
        0,
    );
    call(&f.ctx, IOMMU_IOAS_MAP, &mut buf)?;
    Ok(back::<IommuIoasMap>(&buf).iova)
}

const FIXED_RW: u32 =
    IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/// `iopt_insert_area` (io_pagetable.c): a writeable copy of pages mapped read-only is
/// `EPERM` (`pages->writable` is the source map's `IOMMU_IOAS_MAP_WRITEABLE`); a read-only
/// copy of them is fine.
#[test]
fn a_writeable_copy_of_read_only_pages_is_eperm() {
    let f = fixture();
    let ro = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE;
    map(&f, ro, GUEST_HPA, 64 * MB, 0x2000).unwrap();
    let copy = |flags| {
        let mut buf = arg(
            &IommuIoasCopy {
                flags,
                dst_ioas_id: f.ioas,
                src_ioas_id: f.ioas,
                length: 0x2000,
                dst_iova: 80 * MB,
                src_iova: 64 * MB,
                ..Default::default()
            },
            0,
        );
        call(&f.ctx, IOMMU_IOAS_COPY, &mut buf)
    };
    assert_eq!(copy(FIXED_RW), Err(Errno::EPERM));
    assert_eq!(unmap(&f.ctx, f.ioas, 80 * MB, 0x2000), Err(Errno::ENOENT));
    assert_eq!(copy(ro), Ok(()));
    assert_eq!(unmap(&f.ctx, f.ioas, 80 * MB, 0x2000), Ok(0x2000));
}

/// `iopt_unmap_iova_range` (io_pagetable.c) takes the areas in the range by rising IOVA
/// and stops with `ENOENT` at the first one that sticks out: the areas before it are
/// unmapped, and `length` is not written back (`iommufd_ioas_unmap` responds only on
/// success).
#[test]
fn a_refused_unmap_keeps_what_it_unmapped_before_the_split_area() {
    let f = fixture();
    let a = 64 * MB;
    let b = a + 0x1000;
    map(&f, FIXED_RW, GUEST_HPA, a, 0x1000).unwrap();
    map(&f, FIXED_RW, GUEST_HPA, b, 0x2000).unwrap();
    let mut buf = arg(
        &IommuIoasUnmap {
            ioas_id: f.ioas,
            iova: a,
            length: 0x2000,
            ..Default::default()
        },
        0,
    );
    assert_eq!(call(&f.ctx, IOMMU_IOAS_UNMAP, &mut buf), Err(Errno::ENOENT));
    assert_eq!(back::<IommuIoasUnmap>(&buf).length, 0x2000, "no write-back");
    assert_eq!(
        unmap(&f.ctx, f.ioas, a, 0x1000),
        Err(Errno::ENOENT),
        "A is gone"
    );
    // An area sticking out at the start is the first one found: nothing is unmapped.
    assert_eq!(
        unmap(&f.ctx, f.ioas, b + 0x1000, 0x1000),
        Err(Errno::ENOENT)
    );
    assert_eq!(unmap(&f.ctx, f.ioas, b, 0x2000), Ok(0x2000), "B stayed");
}

/// `iopt_alloc_iova` (io_pagetable.c): never IOVA 0 (the search starts at `PAGE_SIZE`), and
/// the IOVA is aligned to the smallest of the length rounded up to a power of two, the
/// lowest set bit of `user_va`, and `HPAGE_SIZE` (2 MiB).
#[test]
fn a_picked_iova_is_never_zero_and_aligned_as_linux_aligns_it() {
    let f = fixture();
    let ioas = ioas_alloc(&f.ctx);
    let pick = |hpa, length| {
        let mut buf = arg(
            &IommuIoasMap {
                flags: IOMMU_IOAS_MAP_READABLE,
                ..map_cmd(ioas, hpa, 0, length)
            },
            0,
        );
        call(&f.ctx, IOMMU_IOAS_MAP, &mut buf).map(|()| back::<IommuIoasMap>(&buf).iova)
    };
    assert_eq!(pick(GUEST_HPA, 0x1000), Ok(0x1000));
    // 0x3000 rounds up to 0x4000; GUEST_HPA is 16 MiB aligned.
    assert_eq!(pick(GUEST_HPA, 0x3000), Ok(0x4000));
    // user_va 0x1000 aligned caps the alignment at 0x1000: the hole at 0x2000 fits.
    assert_eq!(pick(GUEST_HPA + 0x1000, 0x2000), Ok(0x2000));
    // An allowed range starting at 0 still gives no IOVA 0.
    allow_iovas(&f.ctx, ioas, 0, 0xf_ffff).unwrap();
    assert_eq!(pick(GUEST_HPA, 0x8000), Ok(0x8000));
    assert_eq!(pick(GUEST_HPA, 0x10_0000), Err(Errno::ENOSPC));
    // 4 MiB of 16 MiB aligned memory: the alignment stops at 2 MiB.
    let other = ioas_alloc(&f.ctx);
    let mut buf = arg(
        &IommuIoasMap {
            flags: IOMMU_IOAS_MAP_READABLE,
            ..map_cmd(other, GUEST_HPA, 0, 4 * MB)
        },
        0,
    );
    call(&f.ctx, IOMMU_IOAS_MAP, &mut buf).unwrap();
    assert_eq!(back::<IommuIoasMap>(&buf).iova, 2 * MB);
}

/// A copy from an unaligned `src_iova` is `EINVAL` (`iopt_insert_area` with a fixed IOVA,
/// `iopt_alloc_iova` without: the page offset of the source pages), and the refusal names
/// `src_iova` and the caller's value, not the host address of the source pages.
#[test]
fn an_unaligned_copy_source_is_einval_naming_src_iova() {
    let f = fixture();
    for flags in [
        IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
        IOMMU_IOAS_MAP_READABLE,
    ] {
        let mut buf = arg(
            &IommuIoasCopy {
                flags,
                dst_ioas_id: f.ioas,
                src_ioas_id: f.ioas,
                length: 0x1000,
                dst_iova: 64 * MB,
                src_iova: 0x800,
                ..Default::default()
            },
            0,
        );
        let e = f.ctx.ioctl(IOMMU_IOAS_COPY, &mut buf).unwrap_err();
        assert_eq!(e.errno(), Errno::EINVAL, "{e}");
        assert!(e.to_string().starts_with("src_iova 0x800:"), "{e}");
    }
}

/// The IOVA an `IOMMU_IOAS_MAP` without `FIXED_IOVA` picks, for a table of (`user_va`,
/// `length`) mapped one after the other into one IOAS, each row's IOVA worked out by hand
/// from Linux's `iopt_alloc_iova` (io_pagetable.c): alignment =
/// `min(roundup_pow_of_two(length), 1 << __ffs64(user_va))` (the second term only when
/// `user_va` is not 0), at most `HPAGE_SIZE` (2 MiB); then the first hole at or above
/// `PAGE_SIZE`, by rising IOVA, where an aligned start fits the length between the mappings
/// of the rows before. `GUEST_HPA` is 16 MiB aligned, so the offsets set the low bits.
#[test]
fn an_unfixed_map_picks_the_iova_linux_picks() {
    let f = fixture();
    let ioas = ioas_alloc(&f.ctx);
    let rows: [(u64, u64, u64, &str); 6] = [
        // user_va 4 KiB aligned caps 64 KiB at 4 KiB: the first page of the space.
        (GUEST_HPA + 0x1000, 0x1_0000, 0x1000, "[0x1000, 0x10fff]"),
        // 64 KiB aligned, 4 MiB long: 64 KiB alignment, past the first mapping.
        (
            GUEST_HPA + 0x1_0000,
            4 * MB,
            0x2_0000,
            "[0x20000, 0x41ffff]",
        ),
        // 4 MiB aligned, 4 MiB long: 4 MiB, held to 2 MiB: 0x600000 (4 MiB would be 0x800000).
        (
            GUEST_HPA + 4 * MB,
            4 * MB,
            0x60_0000,
            "[0x600000, 0x9fffff]",
        ),
        // 16 KiB aligned, 12 KiB (16 KiB rounded up): in the hole [0x11000, 0x1ffff].
        (GUEST_HPA + 0x4000, 0x3000, 0x1_4000, "[0x14000, 0x16fff]"),
        // 32 KiB aligned and long: the rest of that hole, [0x18000, 0x1ffff], exactly.
        (GUEST_HPA + 0x8000, 0x8000, 0x1_8000, "[0x18000, 0x1ffff]"),
        // user_va 0 sets no alignment: 12 KiB rounds up to 16 KiB; [0x11000, 0x13fff] is
        // too small from 0x14000, [0x17000, 0x17fff] too, [0x420000, 0x5fffff] fits.
        (0, 0x3000, 0x42_0000, "[0x420000, 0x422fff]"),
    ];
    for (user_va, length, want, mapped) in rows {
        let mut buf = arg(
            &IommuIoasMap {
                flags: IOMMU_IOAS_MAP_READABLE,
                ..map_cmd(ioas, user_va, 0, length)
            },
            0,
        );
        call(&f.ctx, IOMMU_IOAS_MAP, &mut buf).unwrap();
        let got = back::<IommuIoasMap>(&buf).iova;
        assert_eq!(
            got, want,
            "user_va {user_va:#x} length {length:#x}: want {mapped}"
        );
    }
}
