//! The guest-driver scenario through the remote back end: a private `vsvad`, a nesting
//! container on a daemon connection, guest RAM shared by memfd; and a page request from a
//! device process (this test binary re-run as `device_helper`) through the daemon's events
//! into the guest's page request queue, answered by the guest's page group response.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{irq_log, scenario, Device, GuestDriver, Parts, DATA_GPA, GUEST_RAM, GUEST_SID, GVA};
use vsva_client::{
    Client, DeviceHandle, DeviceOptions, GuestMemory, MachineConfig, Options, PrivateDaemon,
};
use vsva_iommu::SourceId;
use vsva_viommu::{GuestDevice, MsiMessage, RemoteBackend, Viommu, ViommuConfig};

/// Builds `vsvad` (once) and returns its path next to the test binaries.
fn vsvad() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "vsvad"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p vsvad failed");
    });
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().join("vsvad")
}

/// A second connection of the same process: the device's DMA and the host's view.
struct RemoteDevice {
    client: Client,
    sid: u16,
}

impl Device for RemoteDevice {
    fn enable_pasid(&mut self) {
        self.client.enable_pasid(self.sid).unwrap();
    }
    fn dma_write(&mut self, pasid: u32, iova: u64, data: &[u8]) -> Result<(), String> {
        self.client
            .dma_write(self.sid, Some(pasid), iova, data)
            .map_err(|e| e.to_string())
    }
    fn host_owns(&mut self, pasid: u32) -> bool {
        self.client
            .sets()
            .unwrap()
            .iter()
            .any(|s| s.pasids.contains(&pasid))
    }
}

/// A VMM on `daemon`: a nesting container for the first device with PASIDs, guest RAM
/// attached to it, and a device model over the remote back end with that device as the
/// guest's; with the interrupt log and the device's host requester id.
#[allow(clippy::type_complexity)]
fn remote_vmm(
    daemon: &PrivateDaemon,
    name: &str,
) -> (Viommu, Arc<GuestMemory>, Arc<Mutex<Vec<MsiMessage>>>, u16) {
    let mut client = Client::connect(Options::new(daemon.socket(), name)).unwrap();
    let dev = client
        .status()
        .unwrap()
        .devices
        .into_iter()
        .find(|d| d.pasid_width > 0)
        .unwrap();
    let c = client.nesting_container(dev.group).unwrap();
    let ram = Arc::new(GuestMemory::new(0, GUEST_RAM).unwrap());
    client.attach_guest_memory(c, &ram).unwrap();
    let (log, sink) = irq_log();
    let config = ViommuConfig {
        devices: vec![GuestDevice {
            guest: GUEST_SID,
            host: SourceId(dev.source_id),
        }],
        ..ViommuConfig::default()
    };
    let backend = Box::new(RemoteBackend::new(client, c).unwrap());
    let viommu = Viommu::new(config, backend, ram.clone(), sink).unwrap();
    (viommu, ram, log, dev.source_id)
}

#[test]
fn guest_driver_scenario_through_the_daemon() {
    let daemon =
        PrivateDaemon::start_with(&vsvad(), Some(&MachineConfig::new(1).to_toml()), &[]).unwrap();
    let (viommu, ram, log, sid) = remote_vmm(&daemon, "viommu-test");
    let mut device = RemoteDevice {
        client: Client::connect(Options::new(daemon.socket(), "viommu-test-dev")).unwrap(),
        sid,
    };
    scenario(Parts {
        viommu: &viommu,
        ram: &*ram,
        dev: &mut device,
        irqs: &log,
    });
}

/// A device retrying one access logs identical records; each reaches the guest, even when
/// the daemon's fault log is so small that the old and new records could not be told apart
/// by their contents (the back end reads the log with the daemon's numbered cursor).
#[test]
fn identical_faults_each_reach_the_guest() {
    let machine = MachineConfig::new(1)
        .settings("[iommu]\nfault_log_capacity = 2\n")
        .to_toml();
    let daemon = PrivateDaemon::start_with(&vsvad(), Some(&machine), &[]).unwrap();
    let (viommu, _ram, _log, sid) = remote_vmm(&daemon, "viommu-faults");
    let mut device = Client::connect(Options::new(daemon.socket(), "viommu-faults-dev")).unwrap();
    // Past the guest's RAM: nothing maps it in the container's stage 2.
    let unmapped = GUEST_RAM + 0x10_0000;
    for round in 0..3 {
        assert!(device.dma_read(sid, None, unmapped, 4).is_err());
        assert_eq!(viommu.poll().unwrap().faults, 1, "round {round}");
    }
}

/// The host requester id of the ATS + PRI device of [`PRI_MACHINE`].
const PRI_SID: u16 = 0x0100;
const PRI_MACHINE: &str = "[[devices]]\nbdf = \"01:00.0\"\ngroup = 1\nats = true\npri = true\n";
/// The page the guest has not mapped when the device writes it, and where it maps it.
const FAULT_GVA: u64 = GVA + 0x20_0000;
const FAULT_GPA: u64 = DATA_GPA + 0x1_0000;
const MESSAGE: &[u8] = b"after a guest page request";

#[test]
fn a_page_request_reaches_the_guest_and_its_response_the_device() {
    let daemon = PrivateDaemon::start_with(&vsvad(), Some(PRI_MACHINE), &[]).unwrap();
    let mut client = Client::connect(Options::new(daemon.socket(), "viommu-vmm")).unwrap();
    let c = client.nesting_container(1).unwrap();
    let ram = Arc::new(GuestMemory::new(0, GUEST_RAM).unwrap());
    client.attach_guest_memory(c, &ram).unwrap();
    client.enable_pasid(PRI_SID).unwrap();
    client.enable_ats(PRI_SID).unwrap();
    client.enable_pri(PRI_SID, 32).unwrap();
    let token = client.grant_device(PRI_SID).unwrap();
    let (_log, sink) = irq_log();
    let config = ViommuConfig {
        devices: vec![GuestDevice {
            guest: GUEST_SID,
            host: SourceId(PRI_SID),
        }],
        page_requests: true,
        ..ViommuConfig::default()
    };
    let mut backend = RemoteBackend::new(client, c).unwrap();
    let source = backend.page_requests().unwrap();
    let viommu = Viommu::new(config, Box::new(backend), ram.clone(), sink).unwrap();
    viommu.set_page_request_source(Box::new(source));

    // The guest binds a PASID whose table maps GVA only, and sets up its page request queue.
    let mut g = GuestDriver::new(&viommu, &*ram);
    g.init(GUEST_SID);
    g.enable_prq();
    let pasid = g.vcmd_alloc().unwrap();
    let pgd = g.map_page(GVA, DATA_GPA);
    g.sva_bind(pasid, pgd, 3);

    // The device (another process: the events channel is one per process) writes to a page
    // the guest has not mapped; its page request reaches the VMM as an event.
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "device_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "VSVA_VIOMMU_DEVICE",
            format!("{}|{hex}|{pasid}", daemon.socket().display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Generous bound for a loaded machine: the VMM polls as it would on its timer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let req = loop {
        viommu.poll().unwrap();
        if let Some(d) = g.next_page_request() {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no page request reached the guest"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(req[0] & 0xf, 1, "page request descriptor");
    assert_eq!(
        req[0] >> 16 & 0xffff,
        u64::from(GUEST_SID.0),
        "guest requester id"
    );
    assert_eq!(req[0] >> 32 & 0xf_ffff, u64::from(pasid));
    assert_eq!(req[1] & !0xfff, FAULT_GVA);
    assert_ne!(req[1] >> 1 & 1, 0, "a write");

    // The guest maps the page, invalidates it, and answers SUCCESS.
    g.map_into(pgd, FAULT_GVA, FAULT_GPA);
    let p = u64::from(pasid) << 32 | 3 << 16;
    g.submit(&[[6 | 3 << 4 | p, FAULT_GVA | 1 << 6, 0, 0]]);
    g.page_group_response(&req, 0);

    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    // libtest prints the test's name on the same line.
    while !line.contains("WROTE ") {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert_ne!(n, 0, "the device exited; it said:\n{seen}");
        seen.push_str(&line);
    }
    assert_eq!(line.split("WROTE ").nth(1).map(str::trim), Some("ok"));
    assert!(child.wait().unwrap().success());
    let mut got = vec![0u8; MESSAGE.len()];
    ram.read(FAULT_GPA, &mut got).unwrap();
    assert_eq!(
        got, MESSAGE,
        "the retried DMA landed in the page the guest mapped"
    );
}

/// The device process of the page-request test: opens its grant, writes at `FAULT_GVA`
/// (raising a page request and waiting for its response), prints the outcome.
#[test]
fn device_helper() {
    let Ok(spec) = std::env::var("VSVA_VIOMMU_DEVICE") else {
        return;
    };
    let mut parts = spec.split('|');
    let socket = parts.next().unwrap();
    let hex = parts.next().unwrap();
    let pasid: u32 = parts.next().unwrap().parse().unwrap();
    let mut token = [0u8; 16];
    for (i, b) in token.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    let options = Options::new(socket, "viommu-device");
    let r = DeviceHandle::open(options, token, DeviceOptions::default())
        .and_then(|mut d| d.dma_write(Some(pasid), FAULT_GVA, MESSAGE));
    match r {
        Ok(()) => println!("WROTE ok"),
        Err(e) => println!("WROTE {e}"),
    }
}
