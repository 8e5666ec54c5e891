//! The guest-driver scenario through the remote back end: a private `vsvad`, a nesting
//! container on a daemon connection, guest RAM shared by memfd.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::{irq_log, scenario, Device, Parts, GUEST_RAM, GUEST_SID};
use vsva_client::{Client, GuestMemory, MachineConfig, Options, PrivateDaemon};
use vsva_iommu::SourceId;
use vsva_viommu::{GuestDevice, RemoteBackend, Viommu, ViommuConfig};

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

#[test]
fn guest_driver_scenario_through_the_daemon() {
    let daemon =
        PrivateDaemon::start_with(&vsvad(), Some(&MachineConfig::new(1).to_toml()), &[]).unwrap();
    let mut client = Client::connect(Options::new(daemon.socket(), "viommu-test")).unwrap();
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
    let mut device = RemoteDevice {
        client: Client::connect(Options::new(daemon.socket(), "viommu-test-dev")).unwrap(),
        sid: dev.source_id,
    };
    scenario(Parts {
        viommu: &viommu,
        ram: &*ram,
        dev: &mut device,
        irqs: &log,
    });
}
