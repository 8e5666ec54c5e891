//! End to end through the byte-level entry: an IOAS with guest RAM mapped, a nested HWPT on
//! a guest first-level table, a PASID attach, device DMA through it, the stale-until-
//! invalidated check, HWPT invalidation, and a page request through a fault queue.

mod common;

use common::*;
use vsva_iommu::prq::{PageRequest, ResponseCode};
use vsva_iommu::Access;
use vsva_iommufd::{route_page_requests, IommufdCtx};
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use zerocopy::IntoBytes;

/// A guest user virtual address (canonical, 4-level).
const VA: u64 = 0x0000_7f12_3456_7000;
const GPA_A: u64 = 0x20_0000;
const GPA_B: u64 = 0x30_0000;

#[test]
fn nested_pasid_dma_invalidation_and_faults() {
    let vfio = host();
    let dev = function(&vfio, 3);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev_id = bind(&ctx, 3);
    let ioas = ioas_alloc(&ctx);
    map_guest_ram(&ctx, ioas);
    let parent = hwpt_paging(&ctx, dev_id, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let fault = fault_alloc(&ctx);

    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);
    let nested = hwpt_nested(
        &ctx,
        dev_id,
        parent,
        root,
        IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID,
        fault,
    )
    .unwrap();

    let pasid = ctx.alloc_pasid(1, 1000).unwrap();
    assert_eq!(attach(&ctx, 3, nested, Some(pasid)), Ok(nested));
    assert_eq!(
        attach(&ctx, 3, nested, Some(pasid)),
        Ok(nested),
        "a second attach of the same PASID to the same HWPT: a replace that changes nothing"
    );

    // DMA through guest VA → GPA_A.
    dev.dma_write(Some(pasid), VA, b"through the nest").unwrap();
    let mut got = [0u8; 16];
    guest.read(GPA_A, &mut got);
    assert_eq!(&got, b"through the nest");

    // The guest moves the page without flushing: the IOTLB keeps the old translation.
    guest.remap(root, VA, GPA_B);
    dev.dma_write(Some(pasid), VA, b"stale").unwrap();
    guest.read(GPA_A, &mut got[..5]);
    assert_eq!(&got[..5], b"stale", "used before the invalidation");

    // One page-selective entry and one bad one: the first is handled, the count says 1.
    let good = IommuHwptVtdS1Invalidate {
        addr: VA,
        npages: 1,
        flags: 0,
        reserved: 0,
    };
    let bad = IommuHwptVtdS1Invalidate { flags: 2, ..good };
    assert_eq!(
        invalidate(&ctx, nested, &[good, bad]),
        (Err(Errno::EOPNOTSUPP), 1)
    );
    dev.dma_write(Some(pasid), VA, b"fresh").unwrap();
    guest.read(GPA_B, &mut got[..5]);
    assert_eq!(
        &got[..5],
        b"fresh",
        "the new translation after the invalidation"
    );

    // A page request of the device for the PASID reaches the fault queue.
    let req = PageRequest {
        source_id: sid(3),
        pasid: Some(pasid),
        addr: VA + 0x1000,
        access: Access::WRITE,
        group: 7,
        last: true,
    };
    iommu.page_request(req).unwrap();
    assert!(route_page_requests(&iommu, &[&ctx]).is_empty());
    let faults = ctx.read_faults(fault, 8).unwrap();
    assert_eq!(faults.len(), 1);
    let f = faults[0];
    assert_eq!(
        (f.dev_id, f.pasid, f.grpid, f.addr),
        (dev_id, pasid, 7, VA + 0x1000)
    );
    assert_eq!(
        f.flags,
        IOMMU_PGFAULT_FLAGS_PASID_VALID | IOMMU_PGFAULT_FLAGS_LAST_PAGE
    );
    assert_ne!(f.perm & IOMMU_PGFAULT_PERM_WRITE, 0);

    // An unknown cookie changes nothing; the right one reaches the device.
    let wrong = IommuHwptPageResponse {
        cookie: f.cookie + 1,
        code: IOMMUFD_PAGE_RESP_SUCCESS,
    };
    assert_eq!(
        ctx.respond_faults(fault, &[wrong]).unwrap_err().errno(),
        Errno::EINVAL
    );
    assert!(iommu.take_page_responses(sid(3)).is_empty());
    let right = IommuHwptPageResponse {
        cookie: f.cookie,
        code: IOMMUFD_PAGE_RESP_SUCCESS,
    };
    assert_eq!(ctx.respond_faults(fault, &[right]).unwrap(), 1);
    let resp = iommu.take_page_responses(sid(3));
    assert_eq!(resp.len(), 1);
    assert_eq!((resp[0].group, resp[0].code), (7, ResponseCode::Success));
    assert_eq!(
        ctx.respond_faults(fault, &[right]).unwrap_err().errno(),
        Errno::EINVAL
    );
}

#[test]
fn closing_the_context_releases_everything() {
    let vfio = host();
    let dev = function(&vfio, 4);
    let iommu = vfio.iommu().clone();
    // A first bind creates the bus's context table, which stays linked from the root table.
    drop(bind_once(&vfio, 4));
    let pages_before = iommu.table_pool().allocated();
    {
        let ctx = IommufdCtx::open(&vfio, process(2)).unwrap();
        let dev_id = bind(&ctx, 4);
        let ioas = ioas_alloc(&ctx);
        map_guest_ram(&ctx, ioas);
        let hwpt = attach(&ctx, 4, ioas, None).unwrap();
        assert_ne!(
            hwpt, ioas,
            "attaching to an IOAS attaches an automatic HWPT"
        );
        dev.dma_write(None, 0x1000, b"x").unwrap();
        assert_eq!(ctx.objects().len(), 3, "device, IOAS, automatic HWPT");
        assert!(ctx.unbind_device(dev_id + 100).is_err());
    }
    // The device is blocked and its group is free for a container again.
    assert!(dev.dma_write(None, 0x1000, b"x").is_err());
    let c = vfio.open_container(process(3));
    c.attach_group(vsva_vfio::GroupId(4)).unwrap();
    drop(c);
    assert_eq!(
        iommu.table_pool().allocated(),
        pages_before,
        "no table page leaked"
    );
}

fn bind_once(vfio: &vsva_vfio::Vfio, dev: u8) -> IommufdCtx {
    let ctx = IommufdCtx::open(vfio, process(9)).unwrap();
    bind(&ctx, dev);
    ctx
}

#[test]
fn detaching_answers_waiting_fault_groups_invalid() {
    let vfio = host();
    function(&vfio, 5);
    let iommu = vfio.iommu().clone();
    let ctx = IommufdCtx::open(&vfio, process(4)).unwrap();
    let dev_id = bind(&ctx, 5);
    let ioas = ioas_alloc(&ctx);
    let parent = hwpt_paging(&ctx, dev_id, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let fault = fault_alloc(&ctx);
    let flags = IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID;
    let nested = hwpt_nested(&ctx, dev_id, parent, MB, flags, fault).unwrap();
    let pasid = ctx.alloc_pasid(1, 10).unwrap();
    attach(&ctx, 5, nested, Some(pasid)).unwrap();
    let destroy = |id| {
        call(
            &ctx,
            IOMMU_DESTROY,
            &mut arg(&IommuDestroy { size: 8, id }, 0),
        )
    };
    assert_eq!(
        destroy(fault),
        Err(Errno::EBUSY),
        "named by the nested HWPT"
    );
    for (group, last) in [(1, false), (1, true), (2, true)] {
        let req = PageRequest {
            source_id: sid(5),
            pasid: Some(pasid),
            addr: VA,
            access: Access::READ,
            group,
            last,
        };
        iommu.page_request(req).unwrap();
    }
    assert!(route_page_requests(&iommu, &[&ctx]).is_empty());
    // Group 1 (two requests) is read whole; group 2 does not fit in what is left of 2.
    let read = ctx.read_faults(fault, 2).unwrap();
    assert_eq!(read.len(), 2);
    assert!(read
        .iter()
        .all(|f| f.grpid == 1 && f.cookie == read[0].cookie));
    ctx.detach(dev_id, Some(pasid)).unwrap();
    assert_eq!(
        answered(&iommu, 5),
        vec![
            (1, ResponseCode::InvalidRequest),
            (2, ResponseCode::InvalidRequest)
        ]
    );
    assert!(ctx.read_faults(fault, 8).unwrap().is_empty());
}

/// Function 3 bound to a context, guest RAM mapped in an IOAS under a nest-parent HWPT,
/// a nested HWPT (PASID-capable) on a guest table, and a PASID attached to it.
struct Nested {
    ctx: IommufdCtx,
    dev: vsva_vfio::PciFunction,
    ioas: u32,
    nested: u32,
    pasid: u32,
}

/// [`Nested`] over a new guest table mapping each (VA, GPA) of `pages`; returns the table's
/// root too.
fn nested_with_pasid(
    vfio: &vsva_vfio::Vfio,
    guest: &mut Guest,
    pages: impl IntoIterator<Item = (u64, u64)>,
) -> (Nested, u64) {
    let root = guest.new_root();
    for (va, gpa) in pages {
        guest.map(root, va, gpa);
    }
    let dev = function(vfio, 3);
    let ctx = IommufdCtx::open(vfio, process(1)).unwrap();
    let dev_id = bind(&ctx, 3);
    let ioas = ioas_alloc(&ctx);
    map_guest_ram(&ctx, ioas);
    let parent = hwpt_paging(&ctx, dev_id, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let nested = hwpt_nested(&ctx, dev_id, parent, root, IOMMU_HWPT_ALLOC_PASID, 0).unwrap();
    let pasid = ctx.alloc_pasid(1, 1000).unwrap();
    attach(&ctx, 3, nested, Some(pasid)).unwrap();
    let n = Nested {
        ctx,
        dev,
        ioas,
        nested,
        pasid,
    };
    (n, root)
}

/// An array longer than one submission to the IOMMU (100 entries), with entry 70 malformed:
/// entries 0..70 are applied (across the submission boundary), 70.. are not, and the count
/// says 70 (`iommufd_hwpt_invalidate` writes back how many were handled).
#[test]
fn a_long_invalidation_array_is_applied_up_to_the_failing_entry() {
    const N: u64 = 100;
    const BAD: u64 = 70;
    let vfio = host();
    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let page = |i: u64| (VA + i * 0x1000, GPA_A + i * 0x1000, GPA_B + i * 0x1000);
    let (n, root) = nested_with_pasid(&vfio, &mut guest, (0..N).map(|i| (page(i).0, page(i).1)));
    for i in 0..N {
        let (va, a, b) = page(i);
        n.dev.dma_write(Some(n.pasid), va, b"a").unwrap();
        guest.remap(root, va, b);
        n.dev.dma_write(Some(n.pasid), va, b"s").unwrap();
        let mut got = [0u8];
        guest.read(a, &mut got);
        assert_eq!(&got, b"s", "page {i} is cached before the invalidation");
    }
    let mut entries: Vec<IommuHwptVtdS1Invalidate> = (0..N)
        .map(|i| IommuHwptVtdS1Invalidate {
            addr: page(i).0,
            npages: 1,
            flags: 0,
            reserved: 0,
        })
        .collect();
    entries[BAD as usize].reserved = 1;
    assert_eq!(
        invalidate(&n.ctx, n.nested, &entries),
        (Err(Errno::EOPNOTSUPP), BAD as u32)
    );
    for i in 0..N {
        let (va, a, b) = page(i);
        n.dev.dma_write(Some(n.pasid), va, b"f").unwrap();
        let (mut at_a, mut at_b) = ([0u8], [0u8]);
        guest.read(a, &mut at_a);
        guest.read(b, &mut at_b);
        let fresh = &at_b == b"f";
        assert_eq!(
            fresh,
            i < BAD,
            "page {i}: invalidated exactly when before entry {BAD}"
        );
        assert_eq!(
            &at_a == b"f",
            !fresh,
            "page {i}: the stale page when not invalidated"
        );
    }
}

/// Unmapping guest RAM from the IOAS under a nested HWPT drops what the nested domain
/// cached (its IOTLB entries combine both stages): the next DMA through the guest table
/// faults instead of reaching the unmapped memory.
#[test]
fn unmapping_the_parent_stage_2_flushes_the_nested_domain() {
    let vfio = host();
    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let (n, _) = nested_with_pasid(&vfio, &mut guest, [(VA, GPA_A)]);
    n.dev.dma_write(Some(n.pasid), VA, b"cached").unwrap();
    assert_eq!(unmap(&n.ctx, n.ioas, 0, GUEST_SIZE), Ok(GUEST_SIZE));
    assert!(
        n.dev.dma_write(Some(n.pasid), VA, b"stale").is_err(),
        "no stale nested translation after the stage-2 unmap"
    );
}

/// An "all" entry (`addr` 0, `npages` `U64_MAX`) and an entry whose range is past CAP.MAMV
/// drop everything of the nested domain, also translations outside the entry's range.
#[test]
fn an_all_entry_and_a_range_past_mamv_flush_the_whole_domain() {
    let all = IommuHwptVtdS1Invalidate {
        addr: 0,
        npages: u64::MAX,
        flags: 0,
        reserved: 0,
    };
    // 4 GiB from a page 1 GiB away from `VA`: wider than the IOMMU invalidates by page.
    let wide = IommuHwptVtdS1Invalidate {
        addr: VA + (1 << 30),
        npages: 1 << 20,
        ..all
    };
    for entry in [all, wide] {
        let vfio = host();
        let iommu = vfio.iommu().clone();
        let mut guest = Guest::new(&iommu);
        let (n, root) = nested_with_pasid(&vfio, &mut guest, [(VA, GPA_A)]);
        n.dev.dma_write(Some(n.pasid), VA, b"a").unwrap();
        guest.remap(root, VA, GPA_B);
        assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
        n.dev.dma_write(Some(n.pasid), VA, b"b").unwrap();
        let mut got = [0u8];
        guest.read(GPA_B, &mut got);
        assert_eq!(&got, b"b", "{entry:?} dropped the translation of VA");
    }
}

/// Each malformed entry, on a nested HWPT with one PASID attached (the path that reads the
/// array in place and makes one request per entry), alone and after a good entry: refused
/// with its errno (`intel_nested_cache_invalidate_user`'s checks), the good entries before it
/// counted. The same array at an odd offset in the buffer (read entry by entry) answers the
/// same.
#[test]
fn a_malformed_entry_is_refused_and_counted_on_an_attached_nested_hwpt() {
    let good = IommuHwptVtdS1Invalidate {
        addr: VA,
        npages: 1,
        flags: 0,
        reserved: 0,
    };
    let cases = [
        (
            IommuHwptVtdS1Invalidate { flags: 2, ..good },
            Errno::EOPNOTSUPP,
        ),
        (
            IommuHwptVtdS1Invalidate {
                reserved: 1,
                ..good
            },
            Errno::EOPNOTSUPP,
        ),
        (
            IommuHwptVtdS1Invalidate {
                addr: VA + 8,
                ..good
            },
            Errno::EINVAL,
        ),
        (
            IommuHwptVtdS1Invalidate {
                npages: u64::MAX,
                ..good
            },
            Errno::EINVAL,
        ),
    ];
    let vfio = host();
    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let (n, _) = nested_with_pasid(&vfio, &mut guest, [(VA, GPA_A)]);
    for (bad, errno) in cases {
        for (before, offset) in [(0, 32), (1, 32), (0, 33), (1, 33)] {
            let mut entries = vec![good; before];
            entries.push(bad);
            let cmd = IommuHwptInvalidate {
                hwpt_id: n.nested,
                data_uptr: offset,
                data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
                entry_len: 24,
                entry_num: entries.len() as u32,
                ..Default::default()
            };
            let mut buf = arg(&cmd, offset as usize - 32);
            buf.extend_from_slice(entries.as_bytes());
            let r = call(&n.ctx, IOMMU_HWPT_INVALIDATE, &mut buf);
            let count = back::<IommuHwptInvalidate>(&buf).entry_num;
            assert_eq!(
                (r, count),
                (Err(errno), before as u32),
                "{bad:?} after {before} good entries at offset {offset}"
            );
        }
    }
}

/// A one-page entry at `VA`.
const ONE_PAGE: IommuHwptVtdS1Invalidate = IommuHwptVtdS1Invalidate {
    addr: VA,
    npages: 1,
    flags: 0,
    reserved: 0,
};

/// A one-entry `IOMMU_HWPT_INVALIDATE` on a nested HWPT with one PASID attached (the usual
/// shape, which has a path of its own): every header field that is not the usual one gets
/// the errno of the general rules (`iommufd_hwpt_invalidate`, `copy_struct_from_user`,
/// `iommu_copy_struct_from_user_array`), the count written back as they say, and the stale
/// translation stays; an argument of another size with a zero tail is still applied.
#[test]
fn one_entry_of_another_shape_gets_the_general_answer() {
    let vfio = host();
    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let (n, root) = nested_with_pasid(&vfio, &mut guest, [(VA, GPA_A)]);
    let entry = ONE_PAGE;
    // The usual argument: the header, then the entry at offset 32.
    let usual = |f: &dyn Fn(&mut IommuHwptInvalidate)| {
        let mut cmd = IommuHwptInvalidate {
            hwpt_id: n.nested,
            data_uptr: 32,
            data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
            entry_len: 24,
            entry_num: 1,
            ..Default::default()
        };
        f(&mut cmd);
        let mut buf = arg(&cmd, 0);
        buf[..4].copy_from_slice(&32u32.to_le_bytes());
        buf.extend_from_slice(entry.as_bytes());
        buf
    };
    // A header of `size` bytes (its tail `tail`), the entry right after it.
    let sized = |size: u32, tail: u8| {
        let mut buf = usual(&|c| c.data_uptr = size.into());
        buf.truncate(32);
        buf.resize(size.max(32) as usize, tail);
        buf[..4].copy_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(entry.as_bytes());
        buf
    };
    // An entry of `len` bytes (its tail `tail`).
    let long_entry = |len: u32, tail: u8| {
        let mut buf = usual(&|c| c.entry_len = len);
        buf.resize(32 + len as usize, tail);
        buf
    };
    let refused: Vec<(&str, Vec<u8>, Errno, u32)> = vec![
        (
            "__reserved",
            usual(&|c| c.reserved = 1),
            Errno::EOPNOTSUPP,
            0,
        ),
        ("data type", usual(&|c| c.data_type = 5), Errno::EINVAL, 0),
        ("entry_len 0", usual(&|c| c.entry_len = 0), Errno::EINVAL, 0),
        (
            "entry_len 16",
            usual(&|c| c.entry_len = 16),
            Errno::EINVAL,
            0,
        ),
        ("entry tail", long_entry(32, 1), Errno::E2BIG, 0),
        (
            "null data_uptr",
            usual(&|c| c.data_uptr = 0),
            Errno::EINVAL,
            0,
        ),
        (
            "entry past the buffer",
            usual(&|c| c.data_uptr = 40),
            Errno::EFAULT,
            0,
        ),
        ("unknown HWPT", usual(&|c| c.hwpt_id = 99), Errno::ENOENT, 0),
        ("HWPT id 0", usual(&|c| c.hwpt_id = 0), Errno::ENOENT, 0),
        ("an IOAS", usual(&|c| c.hwpt_id = n.ioas), Errno::EINVAL, 0),
        ("header tail", sized(40, 1), Errno::E2BIG, 1),
        ("header too short", sized(24, 0), Errno::EINVAL, 1),
    ];
    let accepted: Vec<(&str, Vec<u8>)> = vec![
        ("the usual shape", usual(&|_| {})),
        ("a longer header, zero tail", sized(40, 0)),
        ("a longer entry, zero tail", long_entry(32, 0)),
    ];
    let cases = refused
        .into_iter()
        .map(|(what, buf, errno, count)| (what, buf, Err(errno), count))
        .chain(
            accepted
                .into_iter()
                .map(|(what, buf)| (what, buf, Ok(()), 1)),
        );
    for (i, (what, mut buf, want, count)) in cases.enumerate() {
        // A mark of this case's own, so that an earlier case's write cannot pass for it.
        let mark = [b'A' + i as u8];
        // VA's translation cached while it points at GPA_A, then the guest moves VA to GPA_B.
        guest.remap(root, VA, GPA_A);
        assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
        n.dev.dma_write(Some(n.pasid), VA, b"a").unwrap();
        guest.remap(root, VA, GPA_B);
        let r = call(&n.ctx, IOMMU_HWPT_INVALIDATE, &mut buf);
        let got_count = back::<IommuHwptInvalidate>(&buf).entry_num;
        assert_eq!((r, got_count), (want, count), "{what}");
        // A refused call applied nothing: the write still reaches GPA_A; an accepted one
        // dropped the translation, so the write reaches GPA_B.
        n.dev.dma_write(Some(n.pasid), VA, &mark).unwrap();
        let mut landed = [0u8];
        guest.read(if want.is_ok() { GPA_B } else { GPA_A }, &mut landed);
        assert_eq!(landed, mark, "{what}: the write went elsewhere");
    }
}

/// The one-entry path remembers the HWPT it last found (its domain id and one PASID) so
/// that the next call takes no lock; any change of the context forgets it. A second PASID
/// attached after a one-entry call is invalidated by the next one too.
#[test]
fn a_one_entry_invalidation_follows_a_second_attach() {
    let vfio = host();
    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let (n, root) = nested_with_pasid(&vfio, &mut guest, [(VA, GPA_A)]);
    let entry = ONE_PAGE;
    // Two one-entry calls with the HWPT unchanged: the second takes the remembered target.
    assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
    assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
    let second = n.ctx.alloc_pasid(1, 1000).unwrap();
    attach(&n.ctx, 3, n.nested, Some(second)).unwrap();
    for p in [n.pasid, second] {
        n.dev.dma_write(Some(p), VA, b"a").unwrap();
    }
    guest.remap(root, VA, GPA_B);
    assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
    for (p, mark) in [(n.pasid, b"1"), (second, b"2")] {
        n.dev.dma_write(Some(p), VA, mark).unwrap();
        let mut got = [0u8];
        guest.read(GPA_B, &mut got);
        assert_eq!(&got, mark, "PASID {p} kept its stale translation");
    }
}

/// The PASID of a nested HWPT replaced after a one-entry call (detached, another attached):
/// the next one-entry call reaches the new PASID, not the remembered one.
#[test]
fn a_one_entry_invalidation_follows_a_new_pasid() {
    let vfio = host();
    let iommu = vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let (n, root) = nested_with_pasid(&vfio, &mut guest, [(VA, GPA_A)]);
    let entry = ONE_PAGE;
    assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
    let other = n.ctx.alloc_pasid(1, 1000).unwrap();
    let dev_id = n.ctx.dev_id_of(sid(3)).unwrap();
    n.ctx.detach(dev_id, Some(n.pasid)).unwrap();
    attach(&n.ctx, 3, n.nested, Some(other)).unwrap();
    n.dev.dma_write(Some(other), VA, b"a").unwrap();
    guest.remap(root, VA, GPA_B);
    assert_eq!(invalidate(&n.ctx, n.nested, &[entry]), (Ok(()), 1));
    n.dev.dma_write(Some(other), VA, b"b").unwrap();
    let mut got = [0u8];
    guest.read(GPA_B, &mut got);
    assert_eq!(&got, b"b", "the new PASID kept its stale translation");
}

/// A map's "pin the pages" check answers for the memory of the moment: after the region a
/// map found backed (and the IOAS remembered, `BackedSpan`) is removed, the same map is
/// `EFAULT`; once the region is back, it maps again.
#[test]
fn a_map_after_its_memory_is_removed_faults() {
    use vm_memory::{GuestAddress, GuestRegionMmap};
    let vfio = host();
    let mem = vfio.iommu().memory();
    let region = || GuestRegionMmap::from_range(GuestAddress(HOST_SIZE), MB as usize, None);
    mem.add_region(region().unwrap()).unwrap();
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let ioas = ioas_alloc(&ctx);
    let map = |iova| {
        call(
            &ctx,
            IOMMU_IOAS_MAP,
            &mut arg(&map_cmd(ioas, HOST_SIZE, iova, 4096), 0),
        )
    };
    map(0).unwrap();
    map(4096).unwrap();
    assert_eq!(unmap(&ctx, ioas, 0, 8192), Ok(8192));
    mem.remove_region(HOST_SIZE, MB).unwrap();
    assert_eq!(map(0), Err(Errno::EFAULT));
    mem.add_region(region().unwrap()).unwrap();
    map(0).unwrap();
}
