//! Device-TLB invalidation with completion through the VFIO paths, with an in-process device
//! that keeps its own translation cache: CACHE_INVLD, unbind, UNMAP_DMA and the owner's end
//! reach the device before the call returns, and a device that never acknowledges is fenced.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::ats_device::{setup, DevError, Setup, HANG};
use common::{Guest, GUEST_HPA, MB};
use vsva_iommu::{Access, DevTlbScope, FaultReason, IommuError};
use vsva_uapi::Errno;

const VA: u64 = 0x7f00_0080_0000;
const OLD_GPA: u64 = 6 * MB;
const NEW_GPA: u64 = 7 * MB;

/// The guest's table with `VA` → `OLD_GPA`, bound to the PASID, and the page in the device's
/// cache; returns the guest and the table's root.
fn bound_and_cached(s: &Setup) -> (Guest<'_>, u64) {
    let mut guest = Guest::new(s.vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, OLD_GPA);
    s.bind(root);
    assert_eq!(
        s.dev.translate(s.pasid, VA, Access::READ).unwrap(),
        GUEST_HPA + OLD_GPA
    );
    (guest, root)
}

/// CACHE_INVLD (IOTLB + DEV_IOTLB, one page) after a remap: when it returns, the device's
/// cache no longer has the old page. The device translates the dropped page again while it
/// handles the invalidation, so it would cache the old page again if the IOMMU told it
/// before its own IOTLB dropped the page.
#[test]
fn an_invalidation_reaches_the_device_cache_before_the_call_returns() {
    let s = setup(HANG);
    let iommu = s.vfio.iommu().clone();
    let (mut guest, root) = bound_and_cached(&s);
    iommu.memory().write(GUEST_HPA + NEW_GPA, b"new").unwrap();
    s.dev.state.refetch.store(true, Ordering::Release);
    for round in 0..20u64 {
        let (from, to) = if round % 2 == 0 {
            (OLD_GPA, NEW_GPA)
        } else {
            (NEW_GPA, OLD_GPA)
        };
        guest.remap(root, VA, to);
        s.invalidate_page(VA);
        let cached = s.dev.cached(s.pasid, VA);
        assert_ne!(
            cached,
            Some(GUEST_HPA + from),
            "round {round}: stale page cached"
        );
        assert_eq!(
            s.dev.translate(s.pasid, VA, Access::READ).unwrap(),
            GUEST_HPA + to
        );
    }
    let applied = s.dev.state.applied.lock().unwrap().len();
    assert_eq!(applied, 20, "every invalidation reached the device");
}

/// Unbind, UNMAP_DMA and the end of the owner's container empty the device's cache before
/// they return.
#[test]
fn unbind_unmap_and_teardown_empty_the_device_cache() {
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Unbind,
        Free,
        UnmapDma,
        Close,
    }
    for op in [Op::Unbind, Op::Free, Op::UnmapDma, Op::Close] {
        let s = setup(HANG);
        bound_and_cached(&s);
        assert!(s.dev.cached(s.pasid, VA).is_some());
        let common::ats_device::Setup {
            container,
            dev,
            pasid,
            ..
        } = s;
        match op {
            Op::Unbind => container.unbind(u64::from(pasid)).unwrap(),
            Op::Free => {
                container.free_pasids(pasid, pasid).unwrap();
            }
            Op::UnmapDma => {
                container.unmap_all_dma().unwrap();
            }
            Op::Close => drop(container),
        }
        assert_eq!(dev.cached(pasid, VA), None, "{op:?}");
        assert!(dev.state.atc.lock().unwrap().is_empty(), "{op:?}");
        let applied = dev.state.applied.lock().unwrap().clone();
        assert!(
            applied
                .iter()
                .any(|sc| matches!(sc, DevTlbScope::All | DevTlbScope::Pasid(Some(_)))),
            "{op:?}: {applied:?}"
        );
    }
}

/// A device that never acknowledges is fenced after the sink's time-out: the call completes
/// (CACHE_INVLD answers 0, as the kernel's callers discard the time-out), the device's
/// translation requests are refused with `ENODEV`, a fault record names it, and a reset
/// (its group detached and attached again) ends the fence.
#[test]
fn a_device_that_never_acknowledges_is_fenced() {
    let s = setup(Duration::from_millis(50));
    let iommu = s.vfio.iommu().clone();
    let (mut guest, root) = bound_and_cached(&s);
    s.dev.state.muted.store(true, Ordering::Release);
    guest.remap(root, VA, NEW_GPA);
    s.invalidate_page(VA);
    let sid = s.dev.sid();
    assert!(iommu.is_fenced(sid));
    let fence = iommu
        .faults()
        .into_iter()
        .rfind(|f| f.source_id == sid)
        .unwrap();
    assert_eq!(fence.reason, FaultReason::DeviceTlbDisabled);
    match s.dev.translate(s.pasid, VA + 0x1000, Access::READ) {
        Err(DevError::Refused(e @ IommuError::AtsFenced { .. })) => {
            assert_eq!(e.errno(), Errno::ENODEV)
        }
        other => panic!("{other:?}"),
    }
    // Untranslated requests go on, through the new mapping.
    let function = s.vfio.pci_function(sid).unwrap();
    function
        .config_write(0x106, vsva_vfio::ConfigWidth::Word, 1)
        .unwrap();
    let t = function.translate(Some(s.pasid), VA, Access::READ).unwrap();
    assert_eq!(t.host_addr, GUEST_HPA + NEW_GPA);
    // A reset ends the fence.
    s.dev.state.muted.store(false, Ordering::Release);
    s.container.detach_group(vsva_vfio::GroupId(3)).unwrap();
    s.container.attach_group(vsva_vfio::GroupId(3)).unwrap();
    // The last group left: the container's domain went with it and is set up again.
    s.container
        .set_iommu(vsva_vfio::IommuType::Nesting)
        .unwrap();
    assert!(!iommu.is_fenced(sid));
}

/// A device translating in a loop while the owner remaps and invalidates in another thread:
/// once an invalidation has returned, no translation that starts afterwards gets a page the
/// owner replaced before it (each round maps the page to a fresh guest page). This races
/// fills of the device's cache against invalidations that overtake them.
#[test]
fn a_translation_racing_invalidations_never_survives_one_that_returned() {
    use std::sync::atomic::AtomicU64;
    const ROUNDS: u64 = 200;
    let page = |round: u64| 8 * MB + round * 0x1000;
    let s = setup(HANG);
    let mut guest = Guest::new(s.vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, page(0));
    s.bind(root);
    s.dev.state.slow_fill.store(true, Ordering::Release);
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let device = scope.spawn(|| {
            let mut checked = 0u64;
            loop {
                let invalidated = done.load(Ordering::SeqCst);
                let hpa = s.dev.translate(s.pasid, VA, Access::READ).unwrap();
                let round = (hpa - GUEST_HPA - 8 * MB) / 0x1000;
                // Round r replaced the page of round r - 1 and invalidated it.
                assert!(
                    round >= invalidated,
                    "the page of round {round} was used after round {invalidated} returned"
                );
                checked += 1;
                if invalidated == ROUNDS {
                    return checked;
                }
            }
        });
        for round in 1..=ROUNDS {
            guest.remap(root, VA, page(round));
            s.invalidate_page(VA);
            done.store(round, Ordering::SeqCst);
        }
        assert!(device.join().unwrap() > 0);
    });
}
