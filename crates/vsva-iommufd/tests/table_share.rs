//! An IOAS's stage-2 table pages count against its process's share of the IOMMU's table
//! pool, in the same total as the process's VFIO containers: a process at its share gets
//! `ENOMEM` from `IOMMU_IOAS_MAP` (and `IOMMU_IOAS_ALLOC`) while another process still maps,
//! and the pages come back when the IOAS is destroyed or the context closed.

mod common;

use common::*;
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use vsva_vfio::{DmaMapping, GroupId, IommuType, VfioConfig};

/// The share of these tests: room for a few 4 KiB maps in distinct top-level slots.
const SHARE: usize = 8;
/// IOVAs one top-level entry of a 4-level stage 2 apart: each map there needs new tables.
const SLOT: u64 = 1 << 39;

fn map(ctx: &IommufdCtx, ioas: u32, iova: u64) -> Result<(), Errno> {
    let mut buf = arg(&map_cmd(ioas, GUEST_HPA, iova, 4096), 0);
    call(ctx, IOMMU_IOAS_MAP, &mut buf)
}

fn ioas_alloc_errno(ctx: &IommufdCtx) -> Result<u32, Errno> {
    let mut buf = arg(&IommuIoasAlloc::default(), 0);
    call(ctx, IOMMU_IOAS_ALLOC, &mut buf)?;
    Ok(back::<IommuIoasAlloc>(&buf).out_ioas_id)
}

/// A host whose processes each have a table-page share of [`SHARE`].
fn small_share_host() -> vsva_vfio::Vfio {
    host_with(VfioConfig {
        table_pages_per_process: SHARE,
        ..VfioConfig::default()
    })
}

/// Maps 4 KiB at slot 0, 1, 2, ... of `ioas` until a map is refused; returns the slots
/// mapped and the refusal.
fn fill(ctx: &IommufdCtx, ioas: u32) -> (u64, Errno) {
    for k in 0..64 {
        if let Err(e) = map(ctx, ioas, k * SLOT) {
            return (k, e);
        }
    }
    panic!("64 maps in distinct top-level slots fit in a share of {SHARE} pages");
}

#[test]
fn a_process_at_its_share_gets_enomem_while_another_maps() {
    let vfio = small_share_host();
    let share = vfio.table_page_share(process(1));
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let ioas = ioas_alloc(&ctx);
    assert!(share.held() > 0, "the IOAS's root page is charged");
    let (mapped, refusal) = fill(&ctx, ioas);
    assert_eq!(refusal, Errno::ENOMEM);
    assert!(mapped >= 1, "the first maps fit in the share");
    assert!(share.held() >= SHARE, "refused at the share: {share:?}");
    // Nothing of the refused map is applied: its IOVA is not mapped, the others still are.
    assert_eq!(unmap(&ctx, ioas, mapped * SLOT, 4096), Err(Errno::ENOENT));
    assert_eq!(map(&ctx, ioas, (mapped - 1) * SLOT), Err(Errno::EEXIST));
    // At the share, nothing more: no map, no new IOAS.
    assert_eq!(map(&ctx, ioas, 0x1000), Err(Errno::ENOMEM));
    assert_eq!(ioas_alloc_errno(&ctx), Err(Errno::ENOMEM));
    // Another process has a share of its own.
    let other = IommufdCtx::open(&vfio, process(2)).unwrap();
    let other_ioas = ioas_alloc(&other);
    assert_eq!(map(&other, other_ioas, 0), Ok(()));
    assert_eq!(map(&other, other_ioas, SLOT), Ok(()));
}

#[test]
fn table_pages_come_back_on_destroy_and_on_close() {
    let vfio = small_share_host();
    let share = vfio.table_page_share(process(1));
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let ioas = ioas_alloc(&ctx);
    let (mapped, _) = fill(&ctx, ioas);
    // An unmap leaves the (now empty) tables in the stage 2: they stay charged.
    let held = share.held();
    assert_eq!(unmap(&ctx, ioas, 0, 4096), Ok(4096));
    assert_eq!(share.held(), held);
    ctx.destroy(ioas).unwrap();
    assert_eq!(share.held(), 0, "destroying the IOAS gives its pages back");
    // The process maps again, as far as before.
    let ioas = ioas_alloc(&ctx);
    assert_eq!(fill(&ctx, ioas), (mapped, Errno::ENOMEM));
    drop(ctx);
    assert_eq!(
        share.held(),
        0,
        "closing the context gives every IOAS's pages back"
    );
}

#[test]
fn ioas_copy_counts_against_the_share_too() {
    let vfio = small_share_host();
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let src = ioas_alloc(&ctx);
    assert_eq!(map(&ctx, src, 0), Ok(()));
    let dst = ioas_alloc(&ctx);
    let mut refused = None;
    for k in 0..64u64 {
        let mut buf = arg(
            &IommuIoasCopy {
                flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
                dst_ioas_id: dst,
                src_ioas_id: src,
                length: 4096,
                dst_iova: k * SLOT,
                src_iova: 0,
                ..Default::default()
            },
            0,
        );
        if let Err(e) = call(&ctx, IOMMU_IOAS_COPY, &mut buf) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(Errno::ENOMEM));
}

#[test]
fn containers_and_ioases_of_a_process_share_one_total() {
    let vfio = small_share_host();
    function(&vfio, 3);
    let container = vfio.open_container(process(1));
    container.attach_group(GroupId(3)).unwrap();
    container.set_iommu(IommuType::Type1v2).unwrap();
    let share = vfio.table_page_share(process(1));
    let by_container = share.held();
    assert!(by_container > 0, "the container's stage-2 root is charged");
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let ioas = ioas_alloc(&ctx);
    let (_, refusal) = fill(&ctx, ioas);
    assert_eq!(refusal, Errno::ENOMEM);
    // The IOAS took the rest of the share: the container's map is refused too.
    let map = DmaMapping {
        vaddr: GUEST_HPA,
        iova: 0,
        size: 4096,
        read: true,
        write: true,
    };
    assert_eq!(container.map_dma(&map).unwrap_err().errno(), Errno::ENOMEM);
    ctx.destroy(ioas).unwrap();
    assert_eq!(share.held(), by_container);
    container.map_dma(&map).unwrap();
}
