//! I/O page faults in process: a device's page request reaches the process that bound the
//! PASID, its answer reaches the device, and the rules around them (cookies, owners, the
//! outstanding bound, time-outs, FAILURE for everything pending on unbind, free and death).

mod common;

use std::time::{Duration, Instant};

use common::ats_device::{enable, forward, setup, setup_with, DevError, HANG};
use common::{process, Guest, MB};
use vsva_iommu::{Access, FaultReason, PageRequest, ResponseCode};
use vsva_uapi::Errno;
use vsva_vfio::iopf::{PGFAULT_FLAGS_LAST_PAGE, PGFAULT_FLAGS_PASID_VALID, PGFAULT_PERM_WRITE};
use vsva_vfio::VfioConfig;

const VA: u64 = 0x7f00_0040_0000;
const DATA_GPA: u64 = 6 * MB;
/// The device's acknowledgement time-out: only bounds a hang.
const ACK: Duration = HANG;

#[test]
fn page_fault_round_trip_between_a_device_thread_and_an_owner_thread() {
    let s = setup(ACK);
    let (requests, _) = forward(&s.vfio);
    let iommu = s.vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let root = guest.new_root();
    s.bind(root);
    iommu
        .memory()
        .write(common::GUEST_HPA + DATA_GPA + 0x10, b"fault resolved")
        .unwrap();
    std::thread::scope(|scope| {
        let dev = s.dev.clone();
        let pasid = s.pasid;
        let device = scope.spawn(move || {
            let mut buf = [0u8; 14];
            dev.read_faulting(pasid, VA + 0x10, &mut buf, 5)
                .map(|()| buf)
        });
        // The owner: maps the page it is asked for, invalidates, answers SUCCESS.
        let (owner, rec) = requests
            .recv_timeout(HANG)
            .expect("the owner got no page request");
        assert_eq!(owner, s.owner);
        assert_eq!(
            rec.flags,
            PGFAULT_FLAGS_PASID_VALID | PGFAULT_FLAGS_LAST_PAGE
        );
        assert_eq!(
            (rec.pasid, rec.grpid, rec.addr, rec.length),
            (s.pasid, 5, VA, 4096)
        );
        assert_eq!(rec.dev_id, u32::from(common::sid(3).0));
        assert_eq!(rec.access(), Access::READ);
        guest.map(root, rec.addr, DATA_GPA);
        s.invalidate_page(rec.addr);
        s.vfio
            .page_response(owner, rec.cookie, ResponseCode::Success)
            .unwrap();
        assert_eq!(device.join().unwrap().unwrap(), *b"fault resolved");
    });
    assert_eq!(s.vfio.outstanding_page_requests(common::sid(3)), 0);
    // The device now hits its own cache.
    assert!(s.dev.cached(s.pasid, VA).is_some());
}

#[test]
fn a_response_with_a_wrong_cookie_or_from_another_process_is_einval_and_changes_nothing() {
    let s = setup(ACK);
    let (requests, _) = forward(&s.vfio);
    let mut guest = Guest::new(s.vfio.iommu());
    s.bind(guest.new_root());
    s.dev.page_request(s.pasid, VA, Access::WRITE, 9).unwrap();
    let (_, rec) = requests.recv_timeout(HANG).unwrap();
    assert_eq!(rec.perm, PGFAULT_PERM_WRITE);
    let stranger = process(2);
    for (who, cookie) in [
        (s.owner, rec.cookie.wrapping_add(1)),
        (stranger, rec.cookie),
    ] {
        let err = s
            .vfio
            .page_response(who, cookie, ResponseCode::Success)
            .unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL, "{err}");
        assert_eq!(s.vfio.outstanding_page_requests(common::sid(3)), 1);
        assert!(s.dev.state.responses.lock().unwrap().is_empty());
    }
    s.vfio
        .page_response(s.owner, rec.cookie, ResponseCode::InvalidRequest)
        .unwrap();
    let resp = s.dev.wait_response(9);
    assert_eq!(
        (resp.code, resp.pasid),
        (ResponseCode::InvalidRequest, Some(s.pasid))
    );
    // Answered once only.
    let err = s
        .vfio
        .page_response(s.owner, rec.cookie, ResponseCode::Success)
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
}

#[test]
fn outstanding_requests_are_bounded_per_device() {
    let s = setup_with(
        ACK,
        VfioConfig {
            page_requests_per_device: 2,
            ..VfioConfig::default()
        },
    );
    let (requests, _) = forward(&s.vfio);
    let mut guest = Guest::new(s.vfio.iommu());
    s.bind(guest.new_root());
    // A group of two: the first request waits for the last one.
    let partial = PageRequest {
        source_id: common::sid(3),
        pasid: Some(s.pasid),
        addr: VA,
        access: Access::READ,
        group: 1,
        last: false,
    };
    s.vfio.page_request(partial, Instant::now()).unwrap();
    assert!(
        requests.try_recv().is_err(),
        "reported before its last request"
    );
    s.dev
        .page_request(s.pasid, VA + 0x1000, Access::READ, 1)
        .unwrap();
    let (_, first) = requests.recv_timeout(HANG).unwrap();
    let (_, last) = requests.recv_timeout(HANG).unwrap();
    assert_eq!(first.cookie, last.cookie);
    assert_eq!(
        (
            first.flags & PGFAULT_FLAGS_LAST_PAGE,
            last.flags & PGFAULT_FLAGS_LAST_PAGE
        ),
        (0, PGFAULT_FLAGS_LAST_PAGE)
    );
    let err = s
        .dev
        .page_request(s.pasid, VA, Access::READ, 2)
        .unwrap_err();
    assert!(
        matches!(err, DevError::PageRequest(ref m) if m.contains("2 page requests")),
        "{err:?}"
    );
    s.vfio
        .page_response(s.owner, last.cookie, ResponseCode::Success)
        .unwrap();
    assert_eq!(s.dev.wait_response(1).code, ResponseCode::Success);
    s.dev.page_request(s.pasid, VA, Access::READ, 2).unwrap();
}

/// The PRI capability as the guest programs it: Enable gates page requests, the allocation
/// bounds them.
#[test]
fn the_pri_capability_gates_and_bounds_page_requests() {
    let s = setup(ACK);
    let (requests, _) = forward(&s.vfio);
    let mut guest = Guest::new(s.vfio.iommu());
    s.bind(guest.new_root());
    let function = s.vfio.pci_function(common::sid(3)).unwrap();
    enable(&function, true, false, 1);
    let err = s
        .dev
        .page_request(s.pasid, VA, Access::READ, 1)
        .unwrap_err();
    assert!(
        matches!(err, DevError::PageRequest(ref m) if m.contains("PRI Enable")),
        "{err:?}"
    );
    enable(&function, true, true, 1);
    s.dev.page_request(s.pasid, VA, Access::READ, 1).unwrap();
    let err = s
        .dev
        .page_request(s.pasid, VA, Access::READ, 2)
        .unwrap_err();
    assert!(
        matches!(err, DevError::PageRequest(ref m) if m.contains("1 page requests")),
        "{err:?}"
    );
    let (_, rec) = requests.recv_timeout(HANG).unwrap();
    s.vfio
        .page_response(s.owner, rec.cookie, ResponseCode::Success)
        .unwrap();
    s.dev.page_request(s.pasid, VA, Access::READ, 2).unwrap();
    // ATS Enable gates the function's translation requests.
    assert!(function
        .ats_translate(Some(s.pasid), VA, Access::READ)
        .is_ok());
    enable(&function, false, true, 1);
    let err = function
        .ats_translate(Some(s.pasid), VA, Access::READ)
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EPERM, "{err}");
}

#[test]
fn unanswered_groups_expire_with_failure() {
    let s = setup(ACK);
    let (requests, _) = forward(&s.vfio);
    let mut guest = Guest::new(s.vfio.iommu());
    s.bind(guest.new_root());
    let now = Instant::now();
    let req = PageRequest {
        source_id: common::sid(3),
        pasid: Some(s.pasid),
        addr: VA,
        access: Access::READ,
        group: 4,
        last: true,
    };
    s.vfio.page_request(req, now).unwrap();
    let (_, rec) = requests.recv_timeout(HANG).unwrap();
    let timeout = VfioConfig::default().page_request_timeout;
    assert_eq!(
        s.vfio
            .expire_page_requests(now + timeout - Duration::from_millis(1)),
        0
    );
    assert_eq!(s.vfio.expire_page_requests(now + timeout), 1);
    assert_eq!(s.dev.wait_response(4).code, ResponseCode::Failure);
    assert_eq!(s.vfio.outstanding_page_requests(common::sid(3)), 0);
    let err = s
        .vfio
        .page_response(s.owner, rec.cookie, ResponseCode::Success);
    assert_eq!(err.unwrap_err().errno(), Errno::EINVAL);
}

/// How the PASID's owner lets go of it.
#[derive(Debug, Clone, Copy)]
enum End {
    Unbind,
    Free,
    /// The owner's process ends: its container closes, its context and PASIDs go.
    OwnerGone,
}

/// Unbind, free and the owner's end each answer every pending group of the PASID FAILURE.
#[test]
fn pending_groups_fail_on_unbind_free_and_owner_teardown() {
    for end in [End::Unbind, End::Free, End::OwnerGone] {
        let s = setup(ACK);
        let (requests, _) = forward(&s.vfio);
        let mut guest = Guest::new(s.vfio.iommu());
        s.bind(guest.new_root());
        for group in [1, 2] {
            s.dev
                .page_request(s.pasid, VA, Access::READ, group)
                .unwrap();
        }
        let cookies: Vec<u32> = (0..2)
            .map(|_| requests.recv_timeout(HANG).unwrap().1.cookie)
            .collect();
        let common::ats_device::Setup {
            vfio,
            owner,
            container,
            dev,
            pasid,
            ..
        } = s;
        match end {
            End::Unbind => container.unbind(u64::from(pasid)).unwrap(),
            End::Free => {
                container.free_pasids(pasid, pasid).unwrap();
            }
            End::OwnerGone => drop(container),
        }
        for group in [1, 2] {
            assert_eq!(
                dev.wait_response(group).code,
                ResponseCode::Failure,
                "{end:?}"
            );
        }
        assert_eq!(vfio.outstanding_page_requests(common::sid(3)), 0, "{end:?}");
        for cookie in cookies {
            let err = vfio.page_response(owner, cookie, ResponseCode::Success);
            assert_eq!(err.unwrap_err().errno(), Errno::EINVAL, "{end:?}");
        }
    }
}

#[test]
fn requests_nobody_can_resolve_are_answered_invalid() {
    let s = setup(ACK);
    // No fault sink: nobody to hand the request to.
    let mut guest = Guest::new(s.vfio.iommu());
    s.bind(guest.new_root());
    s.dev.page_request(s.pasid, VA, Access::READ, 1).unwrap();
    assert_eq!(s.dev.wait_response(1).code, ResponseCode::InvalidRequest);
    // A sink, but the PASID is not bound.
    let (requests, _) = forward(&s.vfio);
    s.container.unbind(u64::from(s.pasid)).unwrap();
    s.dev.page_request(s.pasid, VA, Access::READ, 2).unwrap();
    assert_eq!(s.dev.wait_response(2).code, ResponseCode::InvalidRequest);
    assert!(requests.try_recv().is_err());
    assert_eq!(s.vfio.outstanding_page_requests(common::sid(3)), 0);
}

#[test]
fn dma_faults_on_a_pasid_go_to_its_owner_and_the_log() {
    let s = setup(ACK);
    let (_, faults) = forward(&s.vfio);
    let iommu = s.vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    s.bind(guest.new_root());
    let function = s.vfio.pci_function(common::sid(3)).unwrap();
    function
        // PASID Enable in the PASID capability's control register (0x100 + 6).
        .config_write(0x106, vsva_vfio::ConfigWidth::Word, 1)
        .unwrap();
    let mut buf = [0u8; 4];
    let err = function.dma_read(Some(s.pasid), VA, &mut buf).unwrap_err();
    assert_eq!(err.errno(), Errno::EFAULT);
    let (owner, fault) = faults.recv_timeout(HANG).unwrap();
    assert_eq!(
        (owner, fault.pasid, fault.addr),
        (s.owner, Some(s.pasid), VA)
    );
    assert_eq!(fault.reason, FaultReason::FirstLevelNotPresent);
    assert!(iommu.faults().contains(&fault));
}
