//! The interrupt window a device reserves in an IOAS while it is attached without PASID, as
//! Linux's iommufd reserves a VT-d device's `IOMMU_RESV_MSI` region
//! (`intel_iommu_get_resv_regions`: `0xfee00000..=0xfeefffff`) through
//! `iommufd_device_attach_reserved_iova` → `iopt_table_enforce_dev_resv_regions` →
//! `iopt_reserve_iova` (owner: the device), and gives it back on detach, on a replace to
//! another IOAS and on unbind (`iopt_remove_reserved_iova`). The errno of each refusal is in
//! `errno_table/msi_window.rs`; this file shows what the reservation does over time.

mod common;

use common::*;
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use vsva_vfio::Vfio;

const WIN: u64 = 0xfee0_0000;
const WIN_LAST: u64 = 0xfeef_ffff;

/// Functions 3 and 4 bound to a context with one IOAS.
struct Fx {
    _vfio: Vfio,
    ctx: IommufdCtx,
    dev3: u32,
    dev4: u32,
    ioas: u32,
}

fn fixture() -> Fx {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev3 = bind(&ctx, 3);
    let dev4 = bind(&ctx, 4);
    let ioas = ioas_alloc(&ctx);
    Fx {
        _vfio: vfio,
        ctx,
        dev3,
        dev4,
        ioas,
    }
}

/// `IOMMU_IOAS_IOVA_RANGES` of `ioas`, as (start, last).
fn ranges(ctx: &IommufdCtx, ioas: u32) -> Vec<(u64, u64)> {
    let (r, _) = ctx.ioas_iova_ranges(ioas).unwrap();
    r.iter().map(|r| (r.start, r.last)).collect()
}

/// The last IOVA of an IOAS with nothing reserved but past its stage 2.
fn top(ctx: &IommufdCtx, ioas: u32) -> u64 {
    match ranges(ctx, ioas).as_slice() {
        [(0, last)] => *last,
        other => panic!("expected one range, got {other:x?}"),
    }
}

/// `IOMMU_IOAS_MAP` of `length` bytes of guest RAM at `iova` (FIXED_IOVA).
fn map_at(ctx: &IommufdCtx, ioas: u32, iova: u64, length: u64) -> Result<(), Errno> {
    let mut buf = arg(&map_cmd(ioas, GUEST_HPA, iova, length), 0);
    call(ctx, IOMMU_IOAS_MAP, &mut buf)
}

/// `IOMMU_IOAS_MAP` of `length` bytes of guest RAM at an IOVA the IOAS picks.
fn map_any(ctx: &IommufdCtx, ioas: u32, length: u64) -> Result<u64, Errno> {
    let mut buf = arg(
        &IommuIoasMap {
            flags: IOMMU_IOAS_MAP_READABLE,
            ..map_cmd(ioas, GUEST_HPA, 0, length)
        },
        0,
    );
    call(ctx, IOMMU_IOAS_MAP, &mut buf)?;
    Ok(back::<IommuIoasMap>(&buf).iova)
}

/// Whether the window is free in `ioas`: a page of it can be mapped (and is unmapped again).
fn window_free(ctx: &IommufdCtx, ioas: u32) -> bool {
    match map_at(ctx, ioas, WIN + 0x1000, 0x1000) {
        Ok(()) => {
            unmap(ctx, ioas, WIN + 0x1000, 0x1000).unwrap();
            true
        }
        Err(e) => {
            assert_eq!(e, Errno::EINVAL, "a map into the reserved window");
            false
        }
    }
}

/// `iommufd_ioas_iova_ranges` reports the holes of the reserved tree: attaching a device
/// without PASID splits the usable space around the window; detaching joins it again.
#[test]
fn iova_ranges_lose_the_window_while_a_device_is_attached() {
    let f = fixture();
    let last = top(&f.ctx, f.ioas);
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    assert_eq!(ranges(&f.ctx, f.ioas), [(0, WIN - 1), (WIN_LAST + 1, last)]);
    f.ctx.detach(f.dev3, None).unwrap();
    assert_eq!(ranges(&f.ctx, f.ioas), [(0, last)]);
}

/// `iopt_check_iova`: a fixed map or copy touching a reserved IOVA is `EINVAL`; the pages
/// just outside the window are not reserved.
#[test]
fn fixed_maps_and_copies_stay_out_of_the_window() {
    let f = fixture();
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    for (iova, len) in [
        (WIN, 0x1000),
        (WIN - 0x1000, 0x2000),
        (WIN_LAST - 0xfff, 0x1000),
        (WIN - 0x1000, 0x20_2000),
    ] {
        assert_eq!(
            map_at(&f.ctx, f.ioas, iova, len),
            Err(Errno::EINVAL),
            "{iova:#x}+{len:#x}"
        );
    }
    map_at(&f.ctx, f.ioas, WIN - 0x1000, 0x1000).unwrap();
    map_at(&f.ctx, f.ioas, WIN_LAST + 1, 0x1000).unwrap();
    let copy = |dst_iova| {
        let mut buf = arg(
            &IommuIoasCopy {
                flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
                dst_ioas_id: f.ioas,
                src_ioas_id: f.ioas,
                length: 0x1000,
                dst_iova,
                src_iova: WIN - 0x1000,
                ..Default::default()
            },
            0,
        );
        call(&f.ctx, IOMMU_IOAS_COPY, &mut buf)
    };
    assert_eq!(copy(WIN + 0x8000), Err(Errno::EINVAL));
    assert_eq!(copy(WIN_LAST + 0x1001), Ok(()));
}

/// `iopt_alloc_iova` walks the holes of the reserved and the area trees together: a map
/// without FIXED_IOVA never lands in the window. Below it, 4 KiB maps every 16 MiB leave no
/// hole a 16 MiB map (2 MiB aligned) fits in, except the last one, which runs into the
/// window: without a device the map goes there, with one it goes past the window.
#[test]
fn an_unfixed_map_skips_the_window() {
    let f = fixture();
    for k in 1..=(WIN / (16 * MB)) {
        map_at(&f.ctx, f.ioas, k * 16 * MB, 0x1000).unwrap();
    }
    let before = map_any(&f.ctx, f.ioas, 16 * MB).unwrap();
    assert_eq!(before, 0xfe20_0000, "without a device the window is free");
    unmap(&f.ctx, f.ioas, before, 16 * MB).unwrap();
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    assert_eq!(map_any(&f.ctx, f.ioas, 16 * MB), Ok(0xff00_0000));
}

/// `iopt_reserve_iova`: a mapping in the window makes the attach `EADDRINUSE` — to the IOAS
/// (its automatic HWPT is not kept), to a paging HWPT over it, to a nested HWPT over such
/// a parent (`find_hwpt_paging` gives the parent) — and leaves nothing behind: no
/// attachment, no HWPT, no reservation.
#[test]
fn a_mapping_in_the_window_refuses_the_attach_and_nothing_changes() {
    let f = fixture();
    let parent = hwpt_paging(&f.ctx, f.dev3, f.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let nested = hwpt_nested(&f.ctx, f.dev3, parent, MB, 0, 0).unwrap();
    map_at(&f.ctx, f.ioas, WIN + 0x8_0000, 0x1000).unwrap();
    let before = f.ctx.objects();
    let last = top(&f.ctx, f.ioas);
    for pt_id in [f.ioas, parent, nested] {
        assert_eq!(attach(&f.ctx, 3, pt_id, None), Err(Errno::EADDRINUSE));
        assert_eq!(
            f.ctx.objects(),
            before,
            "attach to {pt_id} changed the context"
        );
        assert_eq!(ranges(&f.ctx, f.ioas), [(0, last)]);
    }
    unmap(&f.ctx, f.ioas, WIN + 0x8_0000, 0x1000).unwrap();
    attach(&f.ctx, 3, nested, None).unwrap();
    assert!(
        !window_free(&f.ctx, f.ioas),
        "the nested attach reserved in the parent's IOAS"
    );
}

/// `iopt_reserve_iova` refuses over an allowed range too, and `iopt_set_allow_iova` refuses
/// an allowed range over a reserved one: both `EADDRINUSE`. Ranges clear of the window are
/// fine either way round.
#[test]
fn allowed_ranges_and_the_window_exclude_each_other() {
    let f = fixture();
    allow_iovas(&f.ctx, f.ioas, 0xf000_0000, 0xffff_ffff).unwrap();
    assert_eq!(attach(&f.ctx, 3, f.ioas, None), Err(Errno::EADDRINUSE));
    allow_iovas(&f.ctx, f.ioas, 0x1000_0000, WIN - 1).unwrap();
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    assert_eq!(
        allow_iovas(&f.ctx, f.ioas, WIN_LAST, WIN_LAST + 0x1000),
        Err(Errno::EADDRINUSE)
    );
    allow_iovas(&f.ctx, f.ioas, WIN_LAST + 1, 0xffff_ffff).unwrap();
    // The allowed ranges do not narrow IOVA_RANGES (it walks the reserved tree only).
    assert_eq!(ranges(&f.ctx, f.ioas).len(), 2);
}

/// Reservations are owned per device: two devices attached both own the window, and it
/// stays until the last one goes — detached or unbound.
#[test]
fn the_window_stays_until_the_last_device_goes() {
    let f = fixture();
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    attach(&f.ctx, 4, f.ioas, None).unwrap();
    f.ctx.detach(f.dev3, None).unwrap();
    assert!(!window_free(&f.ctx, f.ioas), "device 4 still holds it");
    f.ctx.unbind_device(f.dev4).unwrap();
    assert!(window_free(&f.ctx, f.ioas));
    // Detaching what is not attached gives nothing back (and takes nothing).
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    f.ctx.detach(f.dev3, Some(7)).unwrap();
    assert!(!window_free(&f.ctx, f.ioas));
}

/// `attach_resv` is false for a PASID (`pasid != IOMMU_NO_PASID`): a PASID attach reserves
/// nothing, and its detach gives nothing back.
#[test]
fn a_pasid_attach_reserves_nothing() {
    let f = fixture();
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    let hwpt = hwpt_paging(&f.ctx, f.dev3, f.ioas, IOMMU_HWPT_ALLOC_PASID).unwrap();
    attach(&f.ctx, 3, hwpt, Some(pasid)).unwrap();
    assert!(window_free(&f.ctx, f.ioas));
    attach(&f.ctx, 4, hwpt, None).unwrap();
    f.ctx.detach(f.dev3, Some(pasid)).unwrap();
    assert!(!window_free(&f.ctx, f.ioas), "device 4's reservation stays");
}

/// A replace (`iommufd_device_do_replace`) to an HWPT of another IOAS reserves there first
/// (`iommufd_group_do_replace_reserved_iova`: a mapping there refuses it and the old
/// attachment keeps its reservation) and gives the old IOAS's back once replaced; a replace
/// within one IOAS keeps it.
#[test]
fn a_replace_moves_the_window_to_the_new_ioas() {
    let f = fixture();
    let other = ioas_alloc(&f.ctx);
    attach(&f.ctx, 3, f.ioas, None).unwrap();
    map_at(&f.ctx, other, WIN, 0x1000).unwrap();
    assert_eq!(attach(&f.ctx, 3, other, None), Err(Errno::EADDRINUSE));
    assert!(
        !window_free(&f.ctx, f.ioas),
        "the old attachment keeps its window"
    );
    unmap(&f.ctx, other, WIN, 0x1000).unwrap();
    attach(&f.ctx, 3, other, None).unwrap();
    assert!(window_free(&f.ctx, f.ioas));
    assert!(!window_free(&f.ctx, other));
    let same_ioas = hwpt_paging(&f.ctx, f.dev3, other, 0).unwrap();
    attach(&f.ctx, 3, same_ioas, None).unwrap();
    assert!(
        !window_free(&f.ctx, other),
        "a replace within the IOAS keeps it"
    );
}

/// The reservation is the first step of an attach; one refused later — here the VT-d
/// driver's check of a nested stage 1 (`intel_pasid_setup_nested`: an address width of 39
/// is `EINVAL`) — gives it back (`err_unresv` of `iommufd_hw_pagetable_attach`), on a first
/// attach and on a replace from another IOAS, which keeps its own.
#[test]
fn an_attach_refused_after_the_reservation_gives_it_back() {
    let f = fixture();
    let parent = hwpt_paging(&f.ctx, f.dev3, f.ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let bad = IommuHwptVtdS1 {
        addr_width: 39,
        ..s1(MB)
    };
    let mut buf = nested_buf(f.dev3, parent, &bad, 0, 0);
    call(&f.ctx, IOMMU_HWPT_ALLOC, &mut buf).unwrap();
    let nested = back::<IommuHwptAlloc>(&buf).out_hwpt_id;
    let last = top(&f.ctx, f.ioas);
    assert_eq!(attach(&f.ctx, 3, nested, None), Err(Errno::EINVAL));
    assert_eq!(ranges(&f.ctx, f.ioas), [(0, last)]);
    let other = ioas_alloc(&f.ctx);
    attach(&f.ctx, 3, other, None).unwrap();
    assert_eq!(attach(&f.ctx, 3, nested, None), Err(Errno::EINVAL));
    assert_eq!(ranges(&f.ctx, f.ioas), [(0, last)]);
    assert!(
        !window_free(&f.ctx, other),
        "the attachment kept keeps its window"
    );
}
