//! End-to-end tests against the real `vsvad` binary: handshake, the VFIO ioctl path,
//! per-process contexts shared by connections, separate processes, `kill -9` of a client,
//! ownership, restart with resume, and a clean `SIGTERM`.

mod common;

use common::{wait_until, Daemon, Helper, TestDir};
use vsva_client::{ClientError, Errno, MachineConfig};
use vsva_proto::SetState;
use vsva_uapi::vfio::VFIO_IOMMU_PASID_REQUEST;
use vsva_uapi::{AddrWidth, BindRequest};

/// Entry point of the helper client processes the other tests spawn.
#[test]
#[ignore = "helper process entry point, run by the other tests"]
fn helper_process() {
    if let Ok(script) = std::env::var("VSVA_HELPER") {
        common::helper_main(&script);
    }
}

fn errno(e: ClientError) -> Errno {
    e.errno()
        .unwrap_or_else(|| panic!("expected a daemon error, got {e}"))
}

#[test]
fn handshake_and_pasid_alloc_free_through_the_ioctl_path() {
    let dir = TestDir::new("basic");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("basic");
    let hello = c.hello().clone();
    assert_eq!(hello.version, vsva_proto::PROTOCOL_VERSION);
    assert_eq!(hello.credentials.pid, std::process::id());
    assert_eq!(hello.pasid_bits, 20);
    assert_eq!(hello.quota, 1000);
    assert!(!hello.resume.is_none());
    assert!(!c.resumed());

    // A container without an IOMMU type refuses PASID requests as the kernel does.
    let plain = c.open_container().unwrap();
    let mut arg = vsva_uapi::PasidRequestOp::Alloc { min: 1, max: 10 }.to_bytes();
    assert_eq!(
        errno(
            c.ioctl(plain, VFIO_IOMMU_PASID_REQUEST, &mut arg)
                .unwrap_err()
        ),
        Errno::EINVAL
    );

    let h = c.nesting_container(1).unwrap();
    assert_eq!(c.pasid_alloc(h, 1, u32::MAX).unwrap(), 1);
    assert_eq!(c.pasid_alloc(h, 1, u32::MAX).unwrap(), 2);
    assert_eq!(c.pasid_alloc(h, 10, 20).unwrap(), 10);
    c.pasid_free(h, 1, 1).unwrap();
    assert_eq!(c.pasid_alloc(h, 1, u32::MAX).unwrap(), 1);

    // uAPI validation is vsva-vfio's, errors carry the field and value.
    let mut short = vec![12, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
    let e = c
        .ioctl(h, VFIO_IOMMU_PASID_REQUEST, &mut short)
        .unwrap_err();
    assert!(e.to_string().contains("argsz 12"), "{e}");
    assert_eq!(e.errno(), Some(Errno::EINVAL));
    let e = c.pasid_alloc(h, 5, 4).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EINVAL));
    assert!(e.to_string().contains("range.min 5"), "{e}");

    // The nesting capability reports the IOMMU.
    let cap = c.nesting_info(h).unwrap().expect("nesting capability");
    assert_eq!(cap.pasid_bits, 20);

    let st = c.status().unwrap();
    assert_eq!(st.allocated, 3);
    assert_eq!(st.capacity, (1 << 20) - 1);
    assert_eq!(st.devices.len(), 4);
    let sets = c.sets().unwrap();
    let mine = sets
        .iter()
        .find(|s| s.credentials.pid == std::process::id())
        .unwrap();
    assert_eq!(mine.pasids, vec![1, 2, 10]);
    assert_eq!(mine.state, SetState::Live);

    c.pasid_free(h, 0, u32::MAX).unwrap();
    assert_eq!(c.status().unwrap().allocated, 0);
    assert_eq!(c.ping(b"abc").unwrap(), b"abc");
}

#[test]
fn connections_of_one_process_share_one_context_and_quota() {
    let dir = TestDir::new("share");
    let d = Daemon::start(
        dir.path(),
        &MachineConfig::new(4).settings("pasid_quota = 3").to_toml(),
        &[],
    );
    let mut a = d.client("a");
    let mut b = d.client("b");
    assert_eq!(
        a.resume_token(),
        b.resume_token(),
        "one process, one context"
    );
    let ha = a.nesting_container(1).unwrap();
    let hb = b.nesting_container(2).unwrap();
    assert_eq!(a.pasid_alloc(ha, 1, u32::MAX).unwrap(), 1);
    assert_eq!(b.pasid_alloc(hb, 1, u32::MAX).unwrap(), 2);
    assert_eq!(a.pasid_alloc(ha, 1, u32::MAX).unwrap(), 3);
    // The quota of 3 is the process's, across both connections.
    assert_eq!(
        errno(b.pasid_alloc(hb, 1, u32::MAX).unwrap_err()),
        Errno::ENOSPC
    );
    // b may free a's PASID: same process.
    b.pasid_free(hb, 1, 1).unwrap();
    assert_eq!(b.pasid_alloc(hb, 1, u32::MAX).unwrap(), 1);
    // Closing one connection keeps the context: the other still holds it.
    drop(a);
    wait_until("a's connection to close", || {
        b.status().unwrap().connections == 1
    });
    let sets = b.sets().unwrap();
    let mine = sets
        .iter()
        .find(|s| s.credentials.pid == std::process::id())
        .unwrap();
    assert_eq!(mine.pasids, vec![1, 2, 3]);
    assert_eq!(mine.connections, 1);
}

#[test]
fn separate_processes_get_separate_contexts_and_kill9_releases() {
    let dir = TestDir::new("procs");
    let d = Daemon::start(
        dir.path(),
        &MachineConfig::new(4).settings("").to_toml(),
        &[],
    );
    let mut child = Helper::spawn(&d.socket, "hold:2:3");
    let theirs: Vec<u32> = child
        .expect("PASIDS")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(theirs, vec![1, 2, 3]);
    let mut me = d.client("parent");
    assert_ne!(me.resume_token(), vsva_proto::ResumeToken::default());
    let h = me.nesting_container(1).unwrap();
    assert_eq!(
        me.pasid_alloc(h, 1, u32::MAX).unwrap(),
        4,
        "the child's PASIDs are taken"
    );
    // Another process cannot touch them: a bind is refused with EACCES ...
    let bind = BindRequest::new(2, 0x10_0000, AddrWidth::Bits48);
    let e = me.bind(h, &bind).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EACCES), "{e}");
    // ... and a FREE of the range frees only the caller's own.
    me.pasid_free(h, 1, 3).unwrap();
    assert_eq!(me.status().unwrap().allocated, 4);
    // kill -9 of the child releases all of its PASIDs.
    child.kill9();
    wait_until("the child's PASIDs to be released", || {
        me.status().unwrap().allocated == 1
    });
    assert_eq!(me.pasid_alloc(h, 1, u32::MAX).unwrap(), 1);
}

#[test]
fn quota_exhaustion_by_one_client_leaves_others_working() {
    let dir = TestDir::new("quota");
    let d = Daemon::start(
        dir.path(),
        &MachineConfig::new(4).settings("pasid_quota = 50").to_toml(),
        &[],
    );
    let mut hog = Helper::spawn(&d.socket, "quota:2");
    let mut me = d.client("other");
    let h = me.nesting_container(1).unwrap();
    let got = hog.expect("OWNED");
    assert_eq!(got, "50 ENOSPC");
    for _ in 0..20 {
        me.pasid_alloc(h, 1, u32::MAX).unwrap();
    }
    hog.kill9();
}

#[test]
fn restart_resume_and_grace_expiry() {
    let dir = TestDir::new("resume");
    let mut d = Daemon::start(
        dir.path(),
        &MachineConfig::new(4)
            .settings("grace_period_secs = 30")
            .to_toml(),
        &[],
    );
    let mut c = d.client("vmm");
    let h = c.nesting_container(1).unwrap();
    let mine: Vec<u32> = (0..5)
        .map(|_| c.pasid_alloc(h, 1, u32::MAX).unwrap())
        .collect();
    let instance = c.hello().instance;
    // A second process that will not come back in time is released when it dies.
    let mut gone = Helper::spawn(&d.socket, "hold:2:2");
    assert_eq!(gone.expect("PASIDS"), "6 7");
    d.kill9();
    gone.kill9();
    d.restart();
    // A process that reconnects without its token starts over; one with a wrong token is
    // refused. Here: the right token, from the first handshake.
    let resumed = c.reconnect().unwrap();
    assert!(resumed);
    assert_ne!(c.hello().instance, instance);
    assert_eq!(c.hello().restored, mine);
    let h = c.nesting_container(1).unwrap();
    // The dead helper's PASIDs were released at the start: 6 is free again.
    assert_eq!(c.pasid_alloc(h, 1, u32::MAX).unwrap(), 6);
    assert_eq!(c.status().unwrap().allocated, 6);
    // A clean SIGTERM keeps ownership for the next start.
    let status = d.terminate();
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "socket removed at exit");
    d.restart();
    let mut wrong = c.options().clone();
    wrong.resume = vsva_proto::ResumeToken([9; 16]);
    let e = vsva_client::Client::connect(wrong).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::EACCES), "{e}");
    assert!(c.reconnect().unwrap());
    assert_eq!(c.hello().restored, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn held_pasids_are_freed_when_the_grace_period_ends() {
    let dir = TestDir::new("grace");
    let mut d = Daemon::start(
        dir.path(),
        &MachineConfig::new(4)
            .settings("grace_period_secs = 1")
            .to_toml(),
        &[],
    );
    let mut c = d.client("vmm");
    let h = c.nesting_container(1).unwrap();
    for _ in 0..3 {
        c.pasid_alloc(h, 1, u32::MAX).unwrap();
    }
    d.kill9();
    d.restart();
    // Observe from another process: a connection of this one without its token would
    // start over and release what is held.
    let mut other = Helper::spawn(&d.socket, "watch");
    assert_eq!(other.status(), (3, 3));
    wait_until("the grace period to end", || other.status() == (0, 0));
    // Too late: nothing to resume.
    assert!(!c.reconnect().unwrap());
    assert!(c.hello().restored.is_empty());
}

/// A daemon with two devices that helpers running as `nobody` can reach; `None` (the test
/// is skipped) unless this runs as root, which changing a helper's uid needs.
fn daemon_for_nobody(tag: &str) -> Option<(TestDir, Daemon)> {
    if rustix::process::getuid().as_raw() != 0 {
        eprintln!("skipped: needs root to run a client as another user");
        return None;
    }
    let dir = TestDir::new(tag);
    // Let the helper through the directories to the socket.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = Daemon::start(
        dir.path(),
        &MachineConfig::new(2).settings("").to_toml(),
        &[],
    );
    Some((dir, d))
}

/// The admin path: a process that is neither root nor in the admin group may not change
/// another process's quota, force-release it, or see its sets; root may.
#[test]
fn admin_requests_need_root_or_the_admin_group() {
    // Dropping to another uid needs root; the rest of the admin path is covered by the root
    // client in every other test.
    let Some((_dir, d)) = daemon_for_nobody("admin") else {
        return;
    };
    let mut root = d.client("root");
    assert!(root.is_admin());
    let c = root.nesting_container(1).unwrap();
    root.pasid_alloc(c, 1, u32::MAX).unwrap();
    let me = std::process::id();

    let helper = Helper::spawn_as(&d.socket, &format!("unprivileged:{me}"), 65534, 65534);
    let line = helper.expect("UNPRIVILEGED");
    assert_eq!(
        line, "admin=false quota=EPERM release=EPERM others=0",
        "an unprivileged client touched or saw another process"
    );
    // Nothing changed for the root client, and root still sees and manages everyone.
    assert_eq!(root.hello().quota, 1000);
    let sets = root.sets().unwrap();
    assert!(sets
        .iter()
        .any(|e| e.credentials.pid == me && e.pasids.len() == 1));
    root.set_quota(me, 7).unwrap();
    assert!(root
        .sets()
        .unwrap()
        .iter()
        .any(|e| e.credentials.pid == me && e.quota == 7));
}

/// Issue 12, item 9: a process that attaches a group another process used sees none of that
/// process's faults, only its own.
#[test]
fn a_new_owner_of_a_group_sees_only_its_own_faults() {
    let Some((_dir, d)) = daemon_for_nobody("faults") else {
        return;
    };
    let mut root = d.client("root");
    let c = root.nesting_container(1).unwrap();
    root.enable_pasid(0x100).unwrap();
    let p = root.pasid_alloc(c, 1, u32::MAX).unwrap();
    for _ in 0..3 {
        assert!(root.dma_read(0x100, Some(p), 0x1000, 4).is_err());
    }
    assert!(root.faults(16).unwrap().faults.len() >= 3);
    root.close_container(c).unwrap();
    let next = Helper::spawn_as(&d.socket, "faults:1:100", 65534, 65534);
    assert_eq!(
        next.expect("FAULTS"),
        "0 1",
        "the group's earlier faults leaked"
    );
}

/// `FAULTS_SINCE` is a cursor: identical records (a device retrying the same access) are
/// each read once, the records the log dropped when full are counted, and a cursor from
/// before a restart is refused by name.
#[test]
fn the_fault_cursor_reads_identical_records_once_and_counts_the_dropped() {
    let dir = TestDir::new("cursor");
    let config = MachineConfig::new(1)
        .settings("[iommu]\nfault_log_capacity = 4\n")
        .to_toml();
    let d = Daemon::start(dir.path(), &config, &[]);
    let mut c = d.client("cursor");
    let h = c.nesting_container(1).unwrap();
    c.enable_pasid(0x100).unwrap();
    let p = c.pasid_alloc(h, 1, u32::MAX).unwrap();
    let fault = |c: &mut vsva_client::Client| {
        assert!(c.dma_read(0x100, Some(p), 0x1000, 4).is_err());
    };
    let start = c.faults_since(0, 16).unwrap();
    assert!(start.faults.is_empty());
    fault(&mut c);
    fault(&mut c);
    let first = c.faults_since(start.next, 16).unwrap();
    assert_eq!(first.faults.len(), 2, "{first:?}");
    assert_eq!(first.faults[0].record, first.faults[1].record);
    assert!(first.faults[0].number < first.faults[1].number);
    assert_eq!((first.next, first.missed), (first.faults[1].number, 0));
    // One more identical record: only it is new.
    fault(&mut c);
    let second = c.faults_since(first.next, 16).unwrap();
    assert_eq!(second.faults.len(), 1);
    assert_eq!(second.faults[0].number, first.next + 1);
    // `max` stops the cursor at the last record it returned.
    fault(&mut c);
    fault(&mut c);
    let one = c.faults_since(second.next, 1).unwrap();
    assert_eq!((one.faults.len(), one.next), (1, second.next + 1));
    let rest = c.faults_since(one.next, 16).unwrap();
    assert_eq!((rest.faults.len(), rest.missed), (1, 0));
    // Six more into a log of four: two were dropped before this read.
    for _ in 0..6 {
        fault(&mut c);
    }
    let after_drop = c.faults_since(rest.next, 16).unwrap();
    assert_eq!((after_drop.faults.len(), after_drop.missed), (4, 2));
    // A cursor past the newest record names itself.
    let e = c.faults_since(after_drop.next + 100, 16).unwrap_err();
    assert!(e.to_string().contains("since"), "{e}");
    assert_eq!(errno(e), Errno::EINVAL);
}

#[test]
fn unregistered_memory_is_gone_from_the_iommu() {
    let dir = TestDir::new("unregister");
    let d = Daemon::start(dir.path(), "", &[]);
    let mut c = d.client("unregister");
    let dev = c
        .status()
        .unwrap()
        .devices
        .into_iter()
        .find(|d| d.group != u32::MAX)
        .expect("a device in a group");
    let h = c.nesting_container(dev.group).unwrap();
    let mem = vsva_client::GuestMemory::new(0, 1 << 20).unwrap();
    mem.write(0x2000, b"guest").unwrap();
    let region = c.attach_guest_memory(h, &mem).unwrap();
    // Requests without PASID go through the container's stage 2 to the memfd.
    assert_eq!(
        c.dma_read(dev.source_id, None, 0x2000, 5).unwrap(),
        b"guest"
    );
    c.unregister_memory(region).unwrap();
    // The mapping is still in the stage 2, but the memory behind it is gone: EFAULT.
    let e = c.dma_read(dev.source_id, None, 0x2000, 5).unwrap_err();
    assert!(e.to_string().contains("no memory"), "{e}");
    assert_eq!(errno(e), Errno::EFAULT);
}

#[test]
fn registered_memory_is_bounded_daemon_wide_and_unregistering_gives_it_back() {
    let dir = TestDir::new("memtotal");
    let d = Daemon::start(dir.path(), "[limits]\nmax_memory_mib_total = 1\n", &[]);
    let mut c = d.client("memtotal");
    let a = vsva_client::GuestMemory::new(0, 1 << 20).unwrap();
    let b = vsva_client::GuestMemory::new(1 << 30, 1 << 20).unwrap();
    let first = c.register_memory(a.fd(), a.base(), a.size(), 0).unwrap();
    let e = c
        .register_memory(b.fd(), b.base(), b.size(), 0)
        .unwrap_err();
    assert_eq!(errno(e), Errno::ENOSPC);
    c.unregister_memory(first).unwrap();
    c.register_memory(b.fd(), b.base(), b.size(), 0).unwrap();
}

/// Only the process a function is assigned to may grant it (docs/protocol.md, "The device
/// side": `EPERM` otherwise). The daemon's private restore function, a function the host
/// keeps (no group), and one not assigned to the caller are refused with a message naming the
/// request, the `source_id` and why.
#[test]
fn device_grant_of_a_function_the_caller_may_not_drive_names_the_source_id_and_why() {
    let dir = TestDir::new("grant");
    let config = "[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\n[[devices]]\nbdf = \"02:00.0\"\n";
    let d = Daemon::start(dir.path(), config, &[]);
    let mut c = d.client("grant");
    for (sid, why) in [
        (0xffff, "the daemon's private restore function"),
        (0x0200, "kept by the host"),
        (0x0100, "is not assigned to pid"),
    ] {
        let e = c.grant_device(sid).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EPERM), "{e}");
        let m = e.to_string();
        assert!(
            m.contains(&format!("device_grant source_id {sid:#06x}")),
            "{m}"
        );
        assert!(m.contains(why), "{m}");
    }
    // Its group attached to a container of the caller, the function is the caller's to grant.
    let h = c.open_container().unwrap();
    c.attach_group(h, 1).unwrap();
    c.grant_device(0x0100).unwrap();
}
