//! A second `VFIO_DEVICE_ATTACH_IOMMUFD_PT` of an attached device (requests without PASID)
//! or PASID replaces the attachment, as Linux's `vfio_iommufd_physical_attach_ioas` /
//! `vfio_iommufd_physical_pasid_attach_ioas` call `iommufd_device_replace` (or
//! `iommufd_device_pasid_replace`) then: the same HWPT changes nothing, another one takes
//! the device's DMA and the old one's reference is dropped (an automatic HWPT left unused
//! is destroyed), a refused replace leaves the old attachment working, the device's page
//! requests waiting in the old HWPT's fault queue are answered "invalid"
//! (`iommufd_hwpt_replace_device`, `iommufd_auto_response_faults`), and DMA racing with
//! replaces never faults (the replace is hitless).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use vsva_iommu::prq::{PageRequest, ResponseCode};
use vsva_iommu::Access;
use vsva_iommufd::{route_page_requests, IommufdCtx, ObjectKind};
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use vsva_vfio::{PciFunction, Vfio};

/// Where IOAS B's IOVA 0 lands in guest RAM (IOAS A's lands at GPA 0).
const B_GPA: u64 = 8 * MB;
const IOVA: u64 = 0x1000;

/// Function 3 bound to a context with two IOASes: A maps IOVA 0 → GPA 0, B maps IOVA 0 →
/// GPA `B_GPA` (4 MiB each).
struct Two {
    vfio: Vfio,
    dev: PciFunction,
    ctx: IommufdCtx,
    dev_id: u32,
    a: u32,
    b: u32,
}

fn two() -> Two {
    let vfio = host();
    let dev = function(&vfio, 3);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev_id = bind(&ctx, 3);
    let a = ioas_alloc(&ctx);
    let b = ioas_alloc(&ctx);
    call(
        &ctx,
        IOMMU_IOAS_MAP,
        &mut arg(&map_cmd(a, GUEST_HPA, 0, 4 * MB), 0),
    )
    .unwrap();
    let to_b = map_cmd(b, GUEST_HPA + B_GPA, 0, 4 * MB);
    call(&ctx, IOMMU_IOAS_MAP, &mut arg(&to_b, 0)).unwrap();
    Two {
        vfio,
        dev,
        ctx,
        dev_id,
        a,
        b,
    }
}

impl Two {
    fn destroy(&self, id: u32) -> Result<(), Errno> {
        call(
            &self.ctx,
            IOMMU_DESTROY,
            &mut arg(&IommuDestroy { size: 8, id }, 0),
        )
    }

    /// (id, kind, users) of every object.
    fn objects(&self) -> Vec<(u32, ObjectKind, u32)> {
        self.ctx
            .objects()
            .iter()
            .map(|o| (o.id, o.kind, o.users))
            .collect()
    }

    /// Writes `data` by DMA at `IOVA` and returns the guest-physical address it landed at
    /// (GPA `IOVA` through A, `B_GPA + IOVA` through B).
    fn dma_lands(&self, pasid: Option<u32>, data: &[u8; 8]) -> u64 {
        self.dev.dma_write(pasid, IOVA, data).unwrap();
        let guest = Guest::new(self.vfio.iommu());
        for gpa in [IOVA, B_GPA + IOVA] {
            let mut got = [0u8; 8];
            guest.read(gpa, &mut got);
            if &got == data {
                return gpa;
            }
        }
        panic!("the DMA landed in neither IOAS");
    }
}

/// Point 1: attaching again to what is attached — the same HWPT, or an IOAS whose automatic
/// HWPT is the one attached — succeeds, writes that HWPT back and changes nothing.
#[test]
fn replace_with_the_same_hwpt_changes_nothing() {
    let t = two();
    let auto = attach(&t.ctx, 3, t.b, None).unwrap();
    let before = t.objects();
    assert_eq!(
        attach(&t.ctx, 3, t.b, None),
        Ok(auto),
        "the IOAS's automatic HWPT"
    );
    assert_eq!(attach(&t.ctx, 3, auto, None), Ok(auto), "that HWPT by id");
    assert_eq!(t.objects(), before, "no reference taken or dropped");
    assert_eq!(t.dma_lands(None, b"no pasid"), B_GPA + IOVA);
    // A PASID beside them needs a PASID-capable HWPT without PASID too (an automatic one
    // never is: `iommufd_hwpt_pasid_compat`).
    let rid = hwpt_paging(&t.ctx, t.dev_id, t.b, IOMMU_HWPT_ALLOC_PASID).unwrap();
    assert_eq!(attach(&t.ctx, 3, rid, None), Ok(rid));
    let paging = hwpt_paging(&t.ctx, t.dev_id, t.a, IOMMU_HWPT_ALLOC_PASID).unwrap();
    let pasid = t.ctx.alloc_pasid(1, 10).unwrap();
    assert_eq!(attach(&t.ctx, 3, paging, Some(pasid)), Ok(paging));
    let before = t.objects();
    assert_eq!(attach(&t.ctx, 3, paging, Some(pasid)), Ok(paging));
    assert_eq!(attach(&t.ctx, 3, rid, None), Ok(rid));
    assert_eq!(t.objects(), before, "no reference taken or dropped");
    assert_eq!(t.dma_lands(Some(pasid), b"pasid..."), IOVA);
    assert_eq!(t.dma_lands(None, b"no pasid"), B_GPA + IOVA);
}

/// Point 2: a replace to another HWPT moves the device's DMA there and its reference: the
/// old HWPT can be destroyed, the new one is busy. Both without PASID and with one.
#[test]
fn replace_moves_dma_and_the_reference() {
    for pasid in [false, true] {
        let t = two();
        let pasid = pasid.then(|| t.ctx.alloc_pasid(1, 10).unwrap());
        let old = hwpt_paging(&t.ctx, t.dev_id, t.a, IOMMU_HWPT_ALLOC_PASID).unwrap();
        let new = hwpt_paging(&t.ctx, t.dev_id, t.b, IOMMU_HWPT_ALLOC_PASID).unwrap();
        assert_eq!(attach(&t.ctx, 3, old, pasid), Ok(old));
        assert_eq!(t.dma_lands(pasid, b"before.."), IOVA);
        assert_eq!(attach(&t.ctx, 3, new, pasid), Ok(new), "pasid {pasid:?}");
        assert_eq!(t.dma_lands(pasid, b"after..."), B_GPA + IOVA);
        assert_eq!(t.destroy(new), Err(Errno::EBUSY), "pasid {pasid:?}");
        assert_eq!(t.destroy(old), Ok(()), "pasid {pasid:?}");
        if pasid.is_some() {
            // An IOAS's automatic HWPT is never PASID-capable (`iommufd_device_auto_get_domain`
            // allocates it without IOMMU_HWPT_ALLOC_PASID): refused, nothing changes.
            let before = t.objects();
            assert_eq!(attach(&t.ctx, 3, t.a, pasid), Err(Errno::EINVAL));
            assert_eq!(t.objects(), before);
            assert_eq!(t.dma_lands(pasid, b"kept...."), B_GPA + IOVA);
            continue;
        }
        // Back again, through the IOAS: an automatic HWPT over A (under the lowest free
        // id, the destroyed one's).
        let auto = attach(&t.ctx, 3, t.a, pasid).unwrap();
        assert_eq!(auto, old, "pasid {pasid:?}");
        assert!(t.objects().contains(&(auto, ObjectKind::HwptPaging, 1)));
        assert_eq!(t.dma_lands(pasid, b"again..."), IOVA);
        assert_eq!(t.destroy(new), Ok(()), "pasid {pasid:?}");
    }
}

/// Points 3 and 6: replacing away from an automatic HWPT that is then unused destroys it;
/// the automatic HWPT a replace to an IOAS picks or makes is the `pt_id` written back; one
/// still used by another device stays.
#[test]
fn replaced_automatic_hwpt_goes_with_its_last_user() {
    let t = two();
    function(&t.vfio, 4);
    bind(&t.ctx, 4);
    let auto_a = attach(&t.ctx, 3, t.a, None).unwrap();
    assert_eq!(attach(&t.ctx, 4, t.a, None), Ok(auto_a));
    let auto_b = attach(&t.ctx, 3, t.b, None).unwrap();
    assert!(auto_b != auto_a && auto_b != t.a && auto_b != t.b);
    assert!(
        t.objects().contains(&(auto_a, ObjectKind::HwptPaging, 1)),
        "device 4 still uses it"
    );
    assert_eq!(t.dma_lands(None, b"to b...."), B_GPA + IOVA);
    assert_eq!(attach(&t.ctx, 4, t.b, None), Ok(auto_b), "the existing one");
    let ids: Vec<u32> = t.objects().iter().map(|o| o.0).collect();
    assert!(
        !ids.contains(&auto_a),
        "unused automatic HWPT destroyed: {ids:?}"
    );
    assert_eq!(t.destroy(t.a), Ok(()), "IOAS A is free");
    // From an automatic HWPT to an explicit one over the same IOAS.
    let explicit = hwpt_paging(&t.ctx, t.dev_id, t.b, 0).unwrap();
    assert_eq!(attach(&t.ctx, 3, explicit, None), Ok(explicit));
    assert_eq!(attach(&t.ctx, 4, explicit, None), Ok(explicit));
    let ids: Vec<u32> = t.objects().iter().map(|o| o.0).collect();
    assert!(!ids.contains(&auto_b), "{ids:?}");
}

/// Point 4: a refused replace (an HWPT without `IOMMU_HWPT_ALLOC_PASID` for a PASID, an
/// unknown id, an object of another kind, a nested stage 1 the IOMMU cannot take) changes
/// nothing: the objects are as before and DMA still goes through the old HWPT.
#[test]
fn refused_replace_keeps_the_old_attachment() {
    let t = two();
    let pasid = t.ctx.alloc_pasid(1, 10).unwrap();
    let old = hwpt_paging(&t.ctx, t.dev_id, t.a, IOMMU_HWPT_ALLOC_PASID).unwrap();
    let no_pasid = hwpt_paging(&t.ctx, t.dev_id, t.b, 0).unwrap();
    let parent = hwpt_paging(&t.ctx, t.dev_id, t.b, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let bad_s1 = IommuHwptVtdS1 {
        addr_width: 39,
        ..s1(MB)
    };
    let mut buf = nested_buf(t.dev_id, parent, &bad_s1, IOMMU_HWPT_ALLOC_PASID, 0);
    call(&t.ctx, IOMMU_HWPT_ALLOC, &mut buf).unwrap();
    let bad_nested = back::<IommuHwptAlloc>(&buf).out_hwpt_id;
    let fault = fault_alloc(&t.ctx);
    attach(&t.ctx, 3, old, Some(pasid)).unwrap();
    attach(&t.ctx, 3, old, None).unwrap();
    let before = t.objects();
    for (pt_id, pasid, errno) in [
        (no_pasid, Some(pasid), Errno::EINVAL),
        (99, Some(pasid), Errno::ENOENT),
        (99, None, Errno::ENOENT),
        (fault, Some(pasid), Errno::EINVAL),
        (t.dev_id, None, Errno::EINVAL),
        (bad_nested, Some(pasid), Errno::EINVAL),
        (bad_nested, None, Errno::EINVAL),
    ] {
        let case = format!("pt_id {pt_id} pasid {pasid:?}");
        assert_eq!(attach(&t.ctx, 3, pt_id, pasid), Err(errno), "{case}");
        assert_eq!(t.objects(), before, "{case}");
        assert_eq!(t.dma_lands(pasid, b"still a."), IOVA, "{case}");
    }
    assert_eq!(t.destroy(old), Err(Errno::EBUSY));
}

/// Point 5: the device's page-request groups waiting in the old HWPT's fault queue — read
/// or not — are answered "invalid" by a replace (`iommufd_auto_response_faults` on the old
/// attach handle); a replace with the same HWPT, or a refused one, answers nothing.
/// Function 3 asks for page-request groups 1 and 2 at `pasid`, each one read request, and
/// they are routed to `ctx`'s fault queues.
fn raise_two_groups(iommu: &vsva_iommu::Iommu, ctx: &IommufdCtx, pasid: u32) {
    for group in [1, 2] {
        let req = PageRequest {
            source_id: sid(3),
            pasid: Some(pasid),
            addr: 0x7000_0000,
            access: Access::READ,
            group,
            last: true,
        };
        iommu.page_request(req).unwrap();
    }
    assert!(route_page_requests(iommu, &[ctx]).is_empty());
}

#[test]
fn replace_answers_the_old_queues_waiting_faults() {
    let t = two();
    let iommu = t.vfio.iommu().clone();
    let pasid = t.ctx.alloc_pasid(1, 10).unwrap();
    let parent = hwpt_paging(&t.ctx, t.dev_id, t.a, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let fault = fault_alloc(&t.ctx);
    let flags = IOMMU_HWPT_ALLOC_PASID | IOMMU_HWPT_FAULT_ID_VALID;
    let with_queue = hwpt_nested(&t.ctx, t.dev_id, parent, MB, flags, fault).unwrap();
    let without = hwpt_nested(&t.ctx, t.dev_id, parent, MB, IOMMU_HWPT_ALLOC_PASID, 0).unwrap();
    attach(&t.ctx, 3, with_queue, Some(pasid)).unwrap();
    raise_two_groups(&iommu, &t.ctx, pasid);
    assert_eq!(
        t.ctx.read_faults(fault, 1).unwrap().len(),
        1,
        "group 1 read"
    );
    assert_eq!(attach(&t.ctx, 3, with_queue, Some(pasid)), Ok(with_queue));
    assert_eq!(attach(&t.ctx, 3, 99, Some(pasid)), Err(Errno::ENOENT));
    assert!(
        iommu.take_page_responses(sid(3)).is_empty(),
        "nothing answered yet"
    );
    assert_eq!(attach(&t.ctx, 3, without, Some(pasid)), Ok(without));
    assert_eq!(
        answered(&iommu, 3),
        [
            (1, ResponseCode::InvalidRequest),
            (2, ResponseCode::InvalidRequest)
        ]
    );
    assert!(t.ctx.read_faults(fault, 8).unwrap().is_empty());
    let resp = IommuHwptPageResponse {
        cookie: 1,
        code: IOMMUFD_PAGE_RESP_SUCCESS,
    };
    assert_eq!(
        t.ctx.respond_faults(fault, &[resp]).unwrap_err().errno(),
        Errno::EINVAL,
        "the read group's cookie is gone"
    );
}

/// Point 5, wherever the replace goes: the groups waiting in the *old* HWPT's queue are
/// answered whether the new HWPT has no queue, another queue, or the same one, and nothing
/// of the other queue is touched. Linux 6.15 to 7.1 passed the new HWPT to
/// `iommufd_auto_response_faults` (`iommufd_hwpt_replace_device`, a regression of
/// fb21b1568ada), which answers nothing in the first two cases; ba5c0f28a26e ("iommufd: Fix
/// wrong hwpt passed to iommufd_auto_response_faults on replace", 7.2, in 7.1.y too) passes
/// the old one, as the 7.3-rc1 copy read (linux-riscv/linux a2ef59c2) does.
#[test]
fn replace_answers_the_old_queue_wherever_it_goes() {
    for target in ["no queue", "another queue", "the same queue"] {
        let t = two();
        let iommu = t.vfio.iommu().clone();
        let pasid = t.ctx.alloc_pasid(1, 10).unwrap();
        let parent = hwpt_paging(&t.ctx, t.dev_id, t.a, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
        let (old_q, other_q) = (fault_alloc(&t.ctx), fault_alloc(&t.ctx));
        let nested = |fault| {
            let mut flags = IOMMU_HWPT_ALLOC_PASID;
            if fault != 0 {
                flags |= IOMMU_HWPT_FAULT_ID_VALID;
            }
            hwpt_nested(&t.ctx, t.dev_id, parent, MB, flags, fault).unwrap()
        };
        let old = nested(old_q);
        let new = nested(match target {
            "no queue" => 0,
            "another queue" => other_q,
            _ => old_q,
        });
        attach(&t.ctx, 3, old, Some(pasid)).unwrap();
        // Group 1 read and waiting for its response, group 2 unread.
        raise_two_groups(&iommu, &t.ctx, pasid);
        assert_eq!(t.ctx.read_faults(old_q, 1).unwrap().len(), 1, "{target}");
        assert_eq!(attach(&t.ctx, 3, new, Some(pasid)), Ok(new), "{target}");
        assert_eq!(
            answered(&iommu, 3),
            [
                (1, ResponseCode::InvalidRequest),
                (2, ResponseCode::InvalidRequest)
            ],
            "replace to an HWPT with {target}"
        );
        for q in [old_q, other_q] {
            assert!(t.ctx.read_faults(q, 8).unwrap().is_empty(), "{target}");
        }
    }
}

/// Sets its flag when dropped, so a thread told to stop by it stops even when the one
/// holding it panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Point 7: the replace is hitless. One thread reads by DMA without a pause while another
/// replaces the attachment between the HWPTs over A and B, back and forth, through the
/// attach ioctl, for about a third of a second (sized for two cores): every read succeeds
/// and reads what A or B maps, and a read made after an attach has returned reads the new
/// HWPT's page. Without PASID and with one.
#[test]
fn dma_racing_replaces_never_faults() {
    for pasid in [false, true] {
        let t = two();
        let pasid = pasid.then(|| t.ctx.alloc_pasid(1, 10).unwrap());
        let hwpt_a = hwpt_paging(&t.ctx, t.dev_id, t.a, IOMMU_HWPT_ALLOC_PASID).unwrap();
        let hwpt_b = hwpt_paging(&t.ctx, t.dev_id, t.b, IOMMU_HWPT_ALLOC_PASID).unwrap();
        let mem = t.vfio.iommu().memory();
        mem.write(GUEST_HPA + IOVA, b"through A").unwrap();
        mem.write(GUEST_HPA + B_GPA + IOVA, b"through B").unwrap();
        let read = || {
            let mut got = [0u8; 9];
            t.dev.dma_read(pasid, IOVA, &mut got).map(|()| got)
        };
        assert_eq!(attach(&t.ctx, 3, hwpt_a, pasid), Ok(hwpt_a));
        let stop = AtomicBool::new(false);
        let (seen, replaces) = std::thread::scope(|s| {
            // The DMA thread stops when this one is done, a failed assertion included.
            let stop_dma = StopOnDrop(&stop);
            let dma = s.spawn(|| {
                let mut seen = [0u64; 2];
                while !stop.load(Ordering::Relaxed) {
                    match read() {
                        Ok(got) if &got == b"through A" => seen[0] += 1,
                        Ok(got) if &got == b"through B" => seen[1] += 1,
                        other => panic!("DMA during replaces (pasid {pasid:?}): {other:?}"),
                    }
                }
                seen
            });
            let start = Instant::now();
            let mut replaces = 0u32;
            while (start.elapsed() < Duration::from_millis(300) || replaces < 50)
                && !dma.is_finished()
            {
                for (hwpt, data) in [(hwpt_b, b"through B"), (hwpt_a, b"through A")] {
                    assert_eq!(attach(&t.ctx, 3, hwpt, pasid), Ok(hwpt));
                    replaces += 1;
                    assert_eq!(read().ok().as_ref(), Some(data), "after replace {replaces}");
                }
            }
            drop(stop_dma);
            (dma.join().unwrap(), replaces)
        });
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "pasid {pasid:?}: reads through both HWPTs: {seen:?} over {replaces} replaces"
        );
        assert_eq!(t.vfio.iommu().stats().faults, 0, "pasid {pasid:?}");
        // The attachment is where the last replace left it, and the other HWPT is free.
        assert_eq!(t.destroy(hwpt_a), Err(Errno::EBUSY));
        assert_eq!(t.destroy(hwpt_b), Ok(()));
    }
}
