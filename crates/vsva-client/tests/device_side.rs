//! The device side end to end, with separate processes: the owner (this test), a private
//! daemon, and a device process (this test binary re-run as `device_helper`, driven by lines
//! on its standard input and answering on its standard output).
//!
//! * a page-fault round trip: the device touches an unmapped page, the owner gets the page
//!   request as an event, maps the page and answers, the DMA completes; a response with a
//!   wrong cookie is `EINVAL`;
//! * an invalidation reaches the device's TLB before the owner's CACHE_INVLD returns;
//! * a device process that never acknowledges is fenced (its translation requests refused);
//! * a revoked grant ends the holder's access with `ENODEV`;
//! * a page mapped after its page request needs no invalidation, and comes back with the
//!   owner's response: one translation request (which raises the page request) per fault;
//! * a translation request raises its own page request, and the SUCCESS response carries
//!   the translation, or the fault when the page is still missing;
//! * a holder that does not acknowledge stalls no other tenant: with one daemon worker,
//!   another process is served while the owner's invalidation waits, and the owner's
//!   replies stay in request order; a connection closed while its PASID free waits has the
//!   free applied once and is disconnected once; `SIGTERM` while a request waits lets it
//!   finish and answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vsva_client::pgtable::{PageTables, P, RW, US};
use vsva_client::{
    find_vsvad, Client, ClientError, ContainerHandle, DeviceHandle, DeviceOptions, Errno, Event,
    EventChannel, GuestMemory, Options, PrivateDaemon,
};
use vsva_proto::{
    encode_request, AtsAnswer, AtsRequest, Hello, PageRequest, RaisedPage, Request,
    ResponseTranslation, ATS_WRITE, DMA_PASID, DMA_WRITE, PAGE_REQUEST_LAST, PAGE_REQUEST_PASID,
    PERM_WRITE, PGFAULT_LAST_PAGE, RESP_SUCCESS,
};
use vsva_uapi::vfio::{VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity, NestingOp,
    PasidRequestOp,
};

const SID: u16 = 0x0100;
const GVA: u64 = 0x7f00_0000_0000;
const DATA: u64 = 4 << 20;
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// The owner's side: a daemon with one ATS + PRI device, a bound PASID mapping GVA → DATA.
struct Owner {
    /// The daemon, when this process started it.
    daemon: Option<PrivateDaemon>,
    socket: PathBuf,
    client: Client,
    c: ContainerHandle,
    mem: &'static GuestMemory,
    pt: PageTables<'static>,
    pasid: u32,
    events: EventChannel,
}

fn owner(settings: &str) -> Owner {
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build -p vsvad)");
    let config =
        format!("{settings}\n[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\nats = true\npri = true\n");
    let daemon = PrivateDaemon::start_with(&vsvad, Some(&config), &[]).unwrap();
    let socket = daemon.socket().to_owned();
    let mut o = owner_on(&socket);
    o.daemon = Some(daemon);
    o
}

/// The owner's side on a daemon already running.
fn owner_on(socket: &Path) -> Owner {
    let mut client = Client::connect(Options::new(socket, "owner")).unwrap();
    let events = client.open_events().unwrap();
    let c = client.nesting_container(1).unwrap();
    // Leaked: the page tables borrow it for the whole test.
    let mem: &'static GuestMemory = Box::leak(Box::new(GuestMemory::new(0, 16 << 20).unwrap()));
    client.attach_guest_memory(c, mem).unwrap();
    let pasid = client.pasid_alloc(c, 1, u32::MAX).unwrap();
    let mut pt = PageTables::new(mem, 1 << 20, 1 << 20, 4).unwrap();
    pt.map(GVA, DATA, P | RW | US).unwrap();
    client
        .bind(
            c,
            &BindRequest::new(u64::from(pasid), pt.root(), AddrWidth::Bits48),
        )
        .unwrap();
    client.enable_pasid(SID).unwrap();
    client.enable_ats(SID).unwrap();
    client.enable_pri(SID, 32).unwrap();
    Owner {
        daemon: None,
        socket: socket.to_owned(),
        client,
        c,
        mem,
        pt,
        pasid,
        events,
    }
}

impl Owner {
    fn map(&mut self, va: u64, pa: u64) {
        self.pt.map(va, pa, P | RW | US).unwrap();
    }

    fn unmap(&mut self, va: u64) {
        assert!(self.pt.unmap(va).unwrap());
    }

    fn invalidate_page(&mut self, va: u64) -> Result<(), ClientError> {
        let req = CacheInvalidateRequest::new(
            CacheSet::IOTLB | CacheSet::DEV_IOTLB,
            Granularity::Addr {
                pasid: Some(u64::from(self.pasid)),
                archid: None,
                addr: va,
                granule_size: 0x1000,
                nb_granules: 1,
                leaf: true,
            },
        )
        .unwrap();
        self.client.invalidate(self.c, &req)
    }

    fn spawn(&mut self, script: &str) -> Device {
        let token = self.client.grant_device(SID).unwrap();
        let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
        Device::spawn(&self.socket, &hex, self.pasid, script)
    }
}

struct Device {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Device {
    /// This test binary re-run as `device_helper` with `script`.
    fn spawn(socket: &Path, token: &str, pasid: u32, script: &str) -> Device {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "device_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "VSVA_DEVICE",
                format!("{}|{token}|{script}", socket.display()),
            )
            .env("VSVA_DEVICE_PASID", pasid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Device {
            child,
            stdin,
            stdout,
        }
    }

    /// The next line the device prints that starts with `prefix`, without it.
    fn expect(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the device process ended before saying {prefix}"
            );
            // The harness may print its own words before the device's on a line.
            if let Some(at) = line.find(prefix) {
                return line.trim_end()[at + prefix.len()..].trim().to_string();
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn page_fault_round_trip_and_a_wrong_cookie() {
    let mut o = owner("");
    let mut dev = o.spawn("fault");
    // The device writes to GVA + 1 MiB, not mapped yet: its page request reaches the owner.
    let (_, ev) = o
        .events
        .next_timeout(WAIT)
        .unwrap()
        .expect("a page request");
    let Event::PageRequest(req) = ev else {
        panic!("not a page request: {ev:?}")
    };
    assert_eq!(req.addr, GVA + (1 << 20));
    assert_eq!((req.dev_id, req.pasid), (u32::from(SID), o.pasid));
    assert_ne!(req.flags & PGFAULT_LAST_PAGE, 0);
    // STATUS shows it waiting for its answer (what `vsva top` reads), and counts it once
    // the daemon has finished the device's request (which may be just after the event).
    let st = o.client.status().unwrap();
    assert_eq!(st.page_requests_pending, 1, "{st:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while o.client.status().unwrap().page_requests == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "PAGE_REQUEST never counted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let wrong = o
        .client
        .page_response(req.cookie.wrapping_add(1), RESP_SUCCESS);
    assert_eq!(wrong.unwrap_err().errno(), Some(Errno::EINVAL));
    o.map(GVA + (1 << 20), DATA + 0x10_0000);
    o.invalidate_page(GVA + (1 << 20)).unwrap();
    o.client.page_response(req.cookie, RESP_SUCCESS).unwrap();
    assert_eq!(dev.expect("WROTE"), "ok");
    let mut got = [0u8; 8];
    o.mem.read(DATA + 0x10_0000, &mut got).unwrap();
    assert_eq!(&got, b"faulted!");
    assert_eq!(o.client.status().unwrap().page_requests_pending, 0);
    // Answered once: the same cookie again is unknown.
    let again = o.client.page_response(req.cookie, RESP_SUCCESS);
    assert_eq!(again.unwrap_err().errno(), Some(Errno::EINVAL));
}

/// The next page request on the owner's channel.
fn next_page_request(o: &mut Owner) -> PageRequest {
    loop {
        let (_, ev) = o
            .events
            .next_timeout(WAIT)
            .unwrap()
            .expect("a page request");
        if let Event::PageRequest(r) = ev {
            return r;
        }
    }
}

#[test]
fn a_page_mapped_after_its_page_request_needs_no_invalidation() {
    let mut o = owner("");
    let mut dev = o.spawn("fault");
    let req = next_page_request(&mut o);
    // Not present before: nothing cached it, so the owner maps it and answers, no flush.
    o.map(GVA + (1 << 20), DATA + 0x10_0000);
    o.client.page_response(req.cookie, RESP_SUCCESS).unwrap();
    assert_eq!(dev.expect("WROTE"), "ok");
    let mut got = [0u8; 8];
    o.mem.read(DATA + 0x10_0000, &mut got).unwrap();
    assert_eq!(&got, b"faulted!");
    // One translation request raised the page request, and the response brought the
    // translation: no second request. (The DMA's pass and the translation path each count
    // the one miss; a second translation request would count a third.)
    assert_eq!(dev.expect("STATS"), "misses 2 page_requests 1");
}

#[test]
fn a_translation_request_raises_its_page_request_and_the_response_carries_the_translation() {
    let mut o = owner("");
    let mut dev = o.spawn("raise");
    // Group 7: the owner maps the page; group 8: it answers SUCCESS but maps nothing.
    for (grpid, va, map) in [(7, GVA + (1 << 20), true), (8, GVA + (2 << 20), false)] {
        let req = next_page_request(&mut o);
        assert_eq!((req.grpid, req.addr), (grpid, va));
        assert_ne!(req.perm & PERM_WRITE, 0);
        assert_ne!(req.flags & PGFAULT_LAST_PAGE, 0);
        assert_eq!(dev.expect("RAISED"), grpid.to_string());
        if map {
            o.map(va, DATA + 0x10_0000);
        }
        o.client.page_response(req.cookie, RESP_SUCCESS).unwrap();
        let want = if map { "translated write" } else { "fault" };
        assert_eq!(
            dev.expect("RESPONSE"),
            format!("{grpid} {RESP_SUCCESS} {want}")
        );
    }
    // Counted with PAGE_REQUEST's.
    assert!(o.client.status().unwrap().page_requests >= 2);
}

#[test]
fn a_raising_translation_request_is_refused_as_a_page_request_is() {
    let mut o = owner("");
    // One outstanding page request allowed (the PRI capability's allocation).
    o.client.enable_pri(SID, 1).unwrap();
    let mut dev = o.spawn("raise-limit");
    let first = next_page_request(&mut o);
    assert_eq!(first.grpid, 1);
    assert_eq!(dev.expect("RAISED"), "1");
    // The second raise gets PAGE_REQUEST's error, and leaves no group pending.
    assert_eq!(dev.expect("REFUSED"), format!("{:?}", Errno::ENOSPC));
    assert_eq!(dev.expect("PAGE_REQUEST"), format!("{:?}", Errno::ENOSPC));
    assert_eq!(o.client.status().unwrap().page_requests_pending, 1);
}

#[test]
fn an_invalidation_reaches_the_device_before_the_call_returns() {
    let mut o = owner("");
    o.mem.write(DATA, b"cached").unwrap();
    let mut dev = o.spawn("cache");
    assert_eq!(dev.expect("READ"), "cached");
    assert_eq!(dev.expect("HOLDS"), "true");
    o.unmap(GVA);
    o.invalidate_page(GVA).unwrap();
    // The call returned: the device has already dropped the translation and acknowledged.
    dev.say("check");
    assert_eq!(dev.expect("HOLDS"), "false");
    let n: u64 = dev.expect("INVALIDATIONS").parse().unwrap();
    assert!(n >= 1);
}

#[test]
fn a_device_that_never_acknowledges_is_fenced() {
    let mut o = owner("[limits]\ninvalidation_timeout_ms = 200\n");
    let mut dev = o.spawn("silent");
    assert_eq!(dev.expect("TRANSLATED"), "ok");
    // The device process holds a translation and never reads its channel.
    // It returns once the time-out passed (what it answers is the VFIO layer's: NESTING_OP
    // CACHE_INVLD answers 0 and counts the refusal), never before the device is fenced.
    if let Err(e) = o.invalidate_page(GVA) {
        assert_eq!(e.errno(), Some(Errno::EIO), "{e}");
    }
    dev.say("translate");
    assert_eq!(dev.expect("REFUSED"), format!("{:?}", Errno::ENODEV));
    // Its grant ended too: nothing else of the device is served to it any more.
    let config = dev.expect("CONFIG");
    assert!(
        config.contains("ENODEV") && config.contains("fenced"),
        "{config}"
    );
}

#[test]
fn with_ats_disabled_the_device_dmas_through_the_daemon() {
    let mut o = owner("");
    o.mem.write(DATA, b"cached").unwrap();
    // The guest driver turns ATS off again: the device caches nothing.
    let ats = o.client.find_ext_capability(SID, 0x000F).unwrap().unwrap();
    o.client.config_write(SID, ats + 6, 2, 0).unwrap();
    let mut dev = o.spawn("cache");
    assert_eq!(dev.expect("READ"), "cached");
    assert_eq!(dev.expect("HOLDS"), "false");
}

#[test]
fn a_revoked_grant_ends_the_holders_access() {
    let mut o = owner("");
    o.mem.write(DATA, b"cached").unwrap();
    let mut dev = o.spawn("cache");
    assert_eq!(dev.expect("READ"), "cached");
    assert_eq!(o.client.revoke_device(SID).unwrap(), 1);
    dev.say("read");
    let why = dev.expect("FAILED");
    assert!(why.contains("revoked"), "{why}");
}

#[test]
fn acknowledgements_are_heard_while_every_worker_waits_for_them() {
    // More device processes than the daemon has workers, and as many invalidations at once
    // as it has workers: if acknowledgements were read by the workers, every worker would
    // wait for acknowledgements nobody reads, and every device would be fenced.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut o = owner("[limits]\ninvalidation_timeout_ms = 20000\n");
    o.mem.write(DATA, b"cached").unwrap();
    let mut devs: Vec<Device> = (0..=workers).map(|_| o.spawn("cache")).collect();
    for d in &mut devs {
        assert_eq!(d.expect("READ"), "cached");
        assert_eq!(d.expect("HOLDS"), "true");
    }
    let socket = o.socket.clone();
    let (c, pasid) = (o.c, o.pasid);
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..workers)
            .map(|i| {
                let socket = socket.clone();
                s.spawn(move || {
                    let mut client =
                        Client::connect(Options::new(socket, format!("inv-{i}"))).unwrap();
                    let req = CacheInvalidateRequest::new(
                        CacheSet::IOTLB | CacheSet::DEV_IOTLB,
                        Granularity::Pasid {
                            pasid: Some(u64::from(pasid)),
                            archid: None,
                        },
                    )
                    .unwrap();
                    client.invalidate(c, &req).unwrap();
                })
            })
            .collect();
        for t in calls {
            t.join().unwrap();
        }
    });
    for d in &mut devs {
        d.say("again");
        assert_eq!(d.expect("HOLDS"), "false");
        assert_eq!(d.expect("AGAIN"), "cached", "the device must not be fenced");
    }
}

#[test]
fn the_owner_killed_with_pending_page_requests_fails_them() {
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build -p vsvad)");
    let config = "[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\nats = true\npri = true\n";
    let daemon = PrivateDaemon::start_with(&vsvad, Some(config), &[]).unwrap();
    // The owner is a process of its own ("owner" script), the device another.
    let mut owner = Device::spawn(daemon.socket(), "00", 0, "owner");
    let token = owner.expect("TOKEN");
    let pasid: u32 = owner.expect("PASID").parse().unwrap();
    let mut dev = Device::spawn(daemon.socket(), &token, pasid, "fault");
    assert_eq!(
        owner.expect("PAGE_REQUEST"),
        format!("{:#x}", GVA + (1 << 20))
    );
    owner.child.kill().unwrap(); // SIGKILL
    owner.child.wait().unwrap();
    // The pending group is answered FAILURE (or the grant ends first): the DMA fails, well
    // before the device's 10 s wait for a response would end.
    let wrote = dev.expect("WROTE");
    assert_ne!(wrote, "ok");
    assert!(!wrote.contains("TimedOut"), "{wrote}");
}

#[test]
fn a_dma_over_pages_goes_to_each_pages_own_memory() {
    // Three pages: the first two follow each other in memory, the third lies elsewhere. A
    // DMA from the middle of the first to the middle of the third must land in each.
    let mut o = owner("");
    let gva = GVA + 0x10000;
    for (i, pa) in [DATA + 0x20000, DATA + 0x21000, DATA + 0x5000]
        .into_iter()
        .enumerate()
    {
        o.map(gva + i as u64 * 0x1000, pa);
    }
    let mut dev = o.spawn("span");
    assert_eq!(dev.expect("SPAN"), "ok");
    let pattern: Vec<u8> = (0..0x2000u32).map(|i| (i % 251) as u8).collect();
    let mut got = vec![0u8; 0x2000];
    o.mem.read(DATA + 0x20800, &mut got[..0x1800]).unwrap();
    o.mem.read(DATA + 0x5000, &mut got[0x1800..]).unwrap();
    assert!(
        got == pattern,
        "the DMA's bytes are not where its pages map"
    );
}

/// The owner (a process of its own) ends by `end` while a device holds a translation of
/// its PASID and acknowledges only when told: the daemon waits for the device (up to 10 s),
/// and meanwhile another client connects and is served. Its STATUS must still show the
/// owner's PASID not given back (allocated or being freed): the wait is not over, the device
/// not fenced. `end` gets the owner's process and returns once the owner's end has begun.
fn others_are_served_while_the_device_is_waited_for(end: impl FnOnce(&mut Child, &Path) + Send) {
    let vsvad = find_vsvad(None).expect("vsvad binary (cargo build -p vsvad)");
    let config = "[limits]\ninvalidation_timeout_ms = 10000\n\
                  [[devices]]\nbdf = \"01:00.0\"\ngroup = 1\nats = true\npri = true\n";
    let daemon = PrivateDaemon::start_with(&vsvad, Some(config), &[]).unwrap();
    let mut owner = Device::spawn(daemon.socket(), "00", 0, "owner");
    let token = owner.expect("TOKEN");
    let pasid: u32 = owner.expect("PASID").parse().unwrap();
    let mut dev = Device::spawn(daemon.socket(), &token, pasid, "late");
    assert_eq!(dev.expect("TRANSLATED"), "ok");
    std::thread::scope(|s| {
        let ending = s.spawn(|| end(&mut owner.child, daemon.socket()));
        // The device holds the invalidation unanswered now.
        let held = dev.expect("INVALIDATE") == "held";
        let mut other = Client::connect(Options::new(daemon.socket(), "bystander")).unwrap();
        let st = other.status().unwrap();
        // While the daemon waits for a device that still holds its grant, the PASID is not
        // given back. The owner's release also ends its grants, and when that came first the
        // device's rights to the translations ended with it: it is not waited for.
        assert!(
            !held || st.allocated + st.freeing >= 1,
            "the owner's PASID was given back before its device acknowledged: {st:?}"
        );
        dev.say("ack");
        assert_eq!(dev.expect("ACKED"), "ok");
        ending.join().unwrap();
    });
}

#[test]
fn the_owner_killed_does_not_stall_other_clients_while_devices_are_waited_for() {
    others_are_served_while_the_device_is_waited_for(|owner, _| {
        owner.kill().unwrap(); // SIGKILL
        owner.wait().unwrap();
    });
}

#[test]
fn a_force_release_does_not_stall_other_clients_while_devices_are_waited_for() {
    // The test runs as root here (or not at all): only an admin may force-release.
    if !rustix::process::geteuid().is_root() {
        return;
    }
    others_are_served_while_the_device_is_waited_for(|owner, socket| {
        let mut admin = Client::connect(Options::new(socket, "admin")).unwrap();
        // It returns at once: the owner's containers are closed by the daemon's releaser.
        assert_eq!(admin.force_release(owner.id()).unwrap(), 1);
    });
}

/// One daemon worker, a device process that may take a minute to acknowledge, and a second
/// device (group 2) for another tenant.
const SLOW_HOLDER: &str = "[limits]\nworkers = 1\ninvalidation_timeout_ms = 60000\n\
                           [[devices]]\nbdf = \"02:00.0\"\ngroup = 2\n";

impl Owner {
    /// The owner's CACHE_INVLD of its whole PASID (device TLBs included), as a request.
    fn invalidation(&self) -> Request {
        let req = CacheInvalidateRequest::new(
            CacheSet::IOTLB | CacheSet::DEV_IOTLB,
            Granularity::Pasid {
                pasid: Some(u64::from(self.pasid)),
                archid: None,
            },
        )
        .unwrap();
        Request::Ioctl {
            handle: self.c,
            cmd: VFIO_IOMMU_NESTING_OP,
            arg: NestingOp::Invalidate(req).to_bytes(),
        }
    }

    /// The owner's set, as another of its connections sees it.
    fn own_set(&mut self) -> vsva_proto::SetEntry {
        let pid = std::process::id();
        self.client
            .sets()
            .unwrap()
            .into_iter()
            .find(|e| e.credentials.pid == pid)
            .expect("the owner's set")
    }
}

/// Runs `f` until it is true, for at most 20 s (a bound for a hung test, not a measurement).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_holder_that_does_not_acknowledge_stalls_no_other_tenant() {
    let mut o = owner(SLOW_HOLDER);
    let mut dev = o.spawn("late");
    assert_eq!(dev.expect("TRANSLATED"), "ok");
    let invalidation = o.invalidation();
    let socket = o.socket.clone();
    let client = &mut o.client;
    std::thread::scope(|s| {
        let (done, returned) = mpsc::channel();
        // The invalidation, and a ping pipelined behind it on the same connection.
        let owner = s.spawn(move || {
            let replies = client.call_many(&[invalidation, Request::Ping(b"behind".to_vec())]);
            done.send(()).unwrap();
            replies
        });
        assert_eq!(dev.expect("INVALIDATE"), "held");
        // Another process, served by the daemon's only worker: PING, a PASID alloc and free.
        let mut other = Device::spawn(&socket, "", 0, "bystander");
        assert_eq!(other.expect("SERVED"), "ok");
        assert!(
            returned.try_recv().is_err(),
            "the other tenant was served only once the invalidation was over"
        );
        dev.say("ack");
        assert_eq!(dev.expect("ACKED"), "ok");
        let replies = owner
            .join()
            .unwrap()
            .expect("both replies, in request order");
        assert_eq!(replies[0].result, 0, "{:?}", replies[0]);
        assert_eq!(replies[1].payload, b"behind");
    });
}

#[test]
fn a_connection_closed_while_its_pasid_free_waits_frees_it_once() {
    let mut o = owner(SLOW_HOLDER);
    let mut dev = o.spawn("late");
    assert_eq!(dev.expect("TRANSLATED"), "ok");
    let kept = o.client.pasid_alloc(o.c, 1, u32::MAX).unwrap();
    assert_eq!(o.own_set().connections, 1);
    // A second connection of the owner frees the PASID the device caches, and closes
    // without reading its reply while the daemon waits for the device.
    let mut raw = UnixStream::connect(&o.socket).unwrap();
    let hello = Request::Hello(Hello {
        min_version: vsva_proto::MIN_PROTOCOL_VERSION,
        max_version: vsva_proto::PROTOCOL_VERSION,
        resume: Default::default(),
        client: "closing".into(),
    });
    let free = Request::Ioctl {
        handle: o.c,
        cmd: VFIO_IOMMU_PASID_REQUEST,
        arg: PasidRequestOp::Free {
            min: o.pasid,
            max: o.pasid,
        }
        .to_bytes(),
    };
    let mut frames = encode_request(1, &hello);
    frames.extend(encode_request(2, &free));
    raw.write_all(&frames).unwrap();
    assert_eq!(dev.expect("INVALIDATE"), "held");
    drop(raw);
    dev.say("ack");
    assert_eq!(dev.expect("ACKED"), "ok");
    // The free was applied, once, and the closed connection was counted off once: the
    // owner keeps its other PASID and its own connection.
    eventually("the closed connection's free is applied", || {
        let set = o.own_set();
        set.connections == 1 && set.pasids == [kept]
    });
    let st = o.client.status().unwrap();
    assert_eq!((st.allocated, st.freeing), (1, 0), "{st:?}");
    let again = o.client.pasid_alloc(o.c, 1, u32::MAX).unwrap();
    assert_eq!(o.own_set().pasids.len(), 2, "{again}");
}

#[test]
fn sigterm_while_an_invalidation_waits_lets_it_finish_and_answer() {
    let mut o = owner(SLOW_HOLDER);
    let mut dev = o.spawn("late");
    assert_eq!(dev.expect("TRANSLATED"), "ok");
    let invalidation = o.invalidation();
    let daemon = o.daemon.as_mut().unwrap();
    let client = &mut o.client;
    std::thread::scope(|s| {
        let owner =
            s.spawn(move || client.call_many(&[invalidation, Request::Ping(b"behind".to_vec())]));
        assert_eq!(dev.expect("INVALIDATE"), "held");
        let pid = rustix::process::Pid::from_raw(daemon.pid().unwrap() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        dev.say("ack");
        assert_eq!(dev.expect("ACKED"), "ok");
        let replies = owner
            .join()
            .unwrap()
            .expect("the request read before SIGTERM is answered");
        assert_eq!(replies[0].result, 0, "{:?}", replies[0]);
        assert_eq!(replies[1].payload, b"behind");
    });
    let status = daemon_exit(o.daemon.as_mut().unwrap());
    assert!(status.success(), "{status}");
}

fn daemon_exit(d: &mut PrivateDaemon) -> std::process::ExitStatus {
    d.wait().unwrap().expect("the daemon was running")
}

/// The device process: `VSVA_DEVICE` = `socket|token|script`.
#[test]
#[ignore = "device process entry point, run by the other tests"]
fn device_helper() {
    let Ok(spec) = std::env::var("VSVA_DEVICE") else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let socket = parts.next().unwrap().to_string();
    let hex = parts.next().unwrap();
    let script = parts.next().unwrap().to_string();
    let pasid: u32 = std::env::var("VSVA_DEVICE_PASID").unwrap().parse().unwrap();
    if script == "bystander" {
        // Another tenant: PING, and a PASID alloc and free in a container of its own.
        let mut c = Client::connect(Options::new(&socket, "bystander")).unwrap();
        assert_eq!(c.ping(b"hi").unwrap(), b"hi");
        let h = c.nesting_container(2).unwrap();
        let p = c.pasid_alloc(h, 1, u32::MAX).unwrap();
        c.pasid_free(h, p, p).unwrap();
        println!("SERVED ok");
        return;
    }
    if script == "owner" {
        let mut o = owner_on(Path::new(&socket));
        let token = o.client.grant_device(SID).unwrap();
        let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
        println!("TOKEN {hex}");
        println!("PASID {}", o.pasid);
        // Until its channel closes (it was released: force-released by an admin).
        while let Ok((_, ev)) = o.events.next_event() {
            if let Event::PageRequest(r) = ev {
                println!("PAGE_REQUEST {:#x}", r.addr);
            }
        }
        // Then it stays until the test ends it. Were it to exit, its last connection's close
        // would end its grants, and a revoked device is no longer waited for (its rights to
        // the translations ended with the grant): the tests that use it check the waits of
        // the release alone.
        for _ in std::io::stdin().lock().lines() {}
        return;
    }
    let mut token = [0u8; 16];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let options = Options::new(socket, "device");
    let mut lines = std::io::stdin().lock().lines();
    let mut next = move || lines.next().unwrap().unwrap();
    match script.as_str() {
        "fault" => {
            let mut d = DeviceHandle::open(options, token, DeviceOptions::default()).unwrap();
            let r = d.dma_write(Some(pasid), GVA + (1 << 20), b"faulted!");
            println!(
                "WROTE {}",
                if r.is_ok() {
                    "ok".into()
                } else {
                    format!("{r:?}")
                }
            );
            let st = d.stats();
            println!(
                "STATS misses {} page_requests {}",
                st.misses, st.page_requests
            );
        }
        "raise-limit" => {
            let mut c = Client::connect(options).unwrap();
            let _channel = c.open_events().unwrap();
            c.call_for_fds(Request::DeviceOpen { token }).unwrap();
            let raise = |grpid, addr| {
                Request::AtsTranslate(AtsRequest {
                    source_id: SID,
                    flags: DMA_PASID | DMA_WRITE,
                    pasid,
                    addr,
                    page_request_group: Some(grpid),
                })
            };
            let reply = c.call(raise(1, GVA + (1 << 20))).unwrap();
            match AtsAnswer::decode(&reply.payload).unwrap() {
                AtsAnswer::PageRequested { .. } => println!("RAISED 1"),
                other => println!("RAISED {other:?}"),
            }
            match c.call(raise(2, GVA + (2 << 20))) {
                Ok(r) => println!("REFUSED not: {:?}", AtsAnswer::decode(&r.payload)),
                Err(e) => println!("REFUSED {:?}", e.errno().unwrap()),
            }
            let plain = c.call(Request::PageRequest(RaisedPage {
                source_id: SID,
                flags: PAGE_REQUEST_PASID | PAGE_REQUEST_LAST,
                pasid,
                addr: GVA + (3 << 20),
                grpid: 3,
                perm: PERM_WRITE as u16,
            }));
            match plain {
                Ok(_) => println!("PAGE_REQUEST accepted"),
                Err(e) => println!("PAGE_REQUEST {:?}", e.errno().unwrap()),
            }
            next();
        }
        "raise" => {
            // Translation requests that raise their page requests, and the responses.
            let mut c = Client::connect(options).unwrap();
            let mut channel = c.open_events().unwrap();
            c.call_for_fds(Request::DeviceOpen { token }).unwrap();
            for (grpid, addr) in [(7u16, GVA + (1 << 20)), (8, GVA + (2 << 20))] {
                let reply = c
                    .call(Request::AtsTranslate(AtsRequest {
                        source_id: SID,
                        flags: DMA_PASID | DMA_WRITE,
                        pasid,
                        addr,
                        page_request_group: Some(grpid),
                    }))
                    .unwrap();
                match AtsAnswer::decode(&reply.payload).unwrap() {
                    AtsAnswer::PageRequested { .. } => println!("RAISED {grpid}"),
                    other => println!("RAISED {other:?}"),
                }
                let r = loop {
                    if let (_, Event::PageResponse(r)) = channel.next_event().unwrap() {
                        break r;
                    }
                };
                let what = match r.translation {
                    Some(ResponseTranslation {
                        addr: a,
                        answer: AtsAnswer::Translated { perms, .. },
                    }) if a == addr && perms & ATS_WRITE != 0 => "translated write".to_string(),
                    Some(ResponseTranslation {
                        addr: a,
                        answer: AtsAnswer::NoTranslation { .. },
                    }) if a == addr => "fault".to_string(),
                    other => format!("{other:?}"),
                };
                println!("RESPONSE {} {} {what}", r.grpid, r.code);
            }
        }
        "cache" => {
            let mut d = DeviceHandle::open(options, token, DeviceOptions::default()).unwrap();
            let mut buf = [0u8; 6];
            d.dma_read(Some(pasid), GVA, &mut buf).unwrap();
            println!("READ {}", String::from_utf8_lossy(&buf));
            println!("HOLDS {}", d.holds(Some(pasid), GVA));
            match next().as_str() {
                "check" => {
                    println!("HOLDS {}", d.holds(Some(pasid), GVA));
                    println!("INVALIDATIONS {}", d.stats().invalidations);
                }
                "again" => {
                    println!("HOLDS {}", d.holds(Some(pasid), GVA));
                    match d.dma_read(Some(pasid), GVA, &mut buf) {
                        Ok(()) => println!("AGAIN {}", String::from_utf8_lossy(&buf)),
                        Err(e) => println!("AGAIN {e}"),
                    }
                }
                _ => {
                    let r = d.dma_read(Some(pasid), GVA, &mut buf);
                    println!("FAILED {}", r.unwrap_err());
                }
            }
        }
        "silent" => {
            // A device that caches and never acknowledges: its channel is never read.
            let mut c = Client::connect(options).unwrap();
            let _channel = c.open_events().unwrap();
            c.call_for_fds(Request::DeviceOpen { token }).unwrap();
            let ask = Request::AtsTranslate(AtsRequest {
                source_id: SID,
                flags: DMA_PASID,
                pasid,
                addr: GVA,
                page_request_group: None,
            });
            c.call(ask.clone()).unwrap();
            println!("TRANSLATED ok");
            next();
            let e = c.call(ask).unwrap_err();
            println!("REFUSED {:?}", e.errno().unwrap());
            match c.config_read(SID, 0, 2) {
                Ok(v) => println!("CONFIG ok {v}"),
                Err(e) => println!("CONFIG {:?} {e}", e.errno()),
            }
        }
        "span" => {
            let mut d = DeviceHandle::open(options, token, DeviceOptions::default()).unwrap();
            let pattern: Vec<u8> = (0..0x2000u32).map(|i| (i % 251) as u8).collect();
            let at = GVA + 0x10800;
            d.dma_write(Some(pasid), at, &pattern).unwrap();
            let mut back = vec![0u8; pattern.len()];
            d.dma_read(Some(pasid), at, &mut back).unwrap();
            println!("SPAN {}", if back == pattern { "ok" } else { "differs" });
        }
        "late" => {
            // A device that caches, sees the invalidations, and acknowledges the first only
            // when told.
            let mut c = Client::connect(options).unwrap();
            let mut channel = c.open_events().unwrap();
            c.call_for_fds(Request::DeviceOpen { token }).unwrap();
            c.call(Request::AtsTranslate(AtsRequest {
                source_id: SID,
                flags: DMA_PASID,
                pasid,
                addr: GVA,
                page_request_group: None,
            }))
            .unwrap();
            println!("TRANSLATED ok");
            // Whether its grant ended first: a revoked holder is no longer waited for.
            let mut revoked = false;
            let seq = loop {
                match channel.next_event().unwrap() {
                    (seq, Event::Invalidate(_)) => break seq,
                    (_, Event::DeviceRevoked { .. }) => revoked = true,
                    _ => {}
                }
            };
            println!(
                "INVALIDATE {}",
                if revoked { "after-revoke" } else { "held" }
            );
            next();
            channel.ack(seq).unwrap();
            println!("ACKED ok");
        }
        other => panic!("unknown script {other}"),
    }
}
