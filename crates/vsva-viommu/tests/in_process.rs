//! The guest-driver scenario through the in-process back end (`vsva-vfio` linked into the
//! VMM), plus what only this back end can show cheaply.

mod common;

use std::sync::Arc;

use common::{irq_log, scenario, Device, Parts, GUEST_RAM, GUEST_SID};
use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
use vsva_vfio::{
    ConfigWidth, Container, DmaMapping, GroupId, IommuType, PciFunction, PciFunctionSpec,
    ProcessToken, Vfio, VfioConfig,
};
use vsva_viommu::{GuestDevice, HostWindow, LocalBackend, Viommu, ViommuConfig};

const MB: u64 = 1 << 20;
/// Guest RAM at host [16, 32) MiB; the IOMMU's own tables at [48, 64) MiB.
const GUEST_HPA: u64 = 16 * MB;
const HOST_SID: SourceId = SourceId::new(0, 3, 0);

/// A host with one function in group 3 and a VMM process with a nesting container.
struct Host {
    iommu: Arc<Iommu>,
    vfio: Vfio,
    dev: PciFunction,
}

fn host() -> Host {
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)]).unwrap();
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 48 * MB, 16 * MB).unwrap());
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default()).unwrap();
    let dev = vfio
        .add_pci_function(PciFunctionSpec::new(HOST_SID, Some(GroupId(3))))
        .unwrap();
    Host { iommu, vfio, dev }
}

fn container(h: &Host, pid: u32) -> Container {
    let c = h.vfio.open_container(ProcessToken::new(pid, 1));
    c.attach_group(GroupId(3)).unwrap();
    c.set_iommu(IommuType::Nesting).unwrap();
    c.map_dma(&DmaMapping {
        vaddr: GUEST_HPA,
        iova: 0,
        size: GUEST_RAM,
        read: true,
        write: true,
    })
    .unwrap();
    c
}

struct LocalDevice {
    dev: PciFunction,
    vfio: Vfio,
    process: ProcessToken,
}

impl Device for LocalDevice {
    fn enable_pasid(&mut self) {
        self.dev.config_write(0x106, ConfigWidth::Word, 1).unwrap();
    }
    fn dma_write(&mut self, pasid: u32, iova: u64, data: &[u8]) -> Result<(), String> {
        self.dev
            .dma_write(Some(pasid), iova, data)
            .map_err(|e| e.to_string())
    }
    fn host_owns(&mut self, pasid: u32) -> bool {
        self.vfio
            .find_process_context(self.process)
            .is_some_and(|mm| mm.pasids().contains(&pasid))
    }
}

#[test]
fn guest_driver_scenario_in_process() {
    let h = host();
    let c = container(&h, 100);
    let (log, sink) = irq_log();
    let config = ViommuConfig {
        devices: vec![GuestDevice {
            guest: GUEST_SID,
            host: HOST_SID,
        }],
        ..ViommuConfig::default()
    };
    let ram = Arc::new(HostWindow::new(h.iommu.clone(), GUEST_HPA, GUEST_RAM));
    let backend = Box::new(LocalBackend::new(c, h.iommu.clone()));
    let viommu = Viommu::new(config, backend, ram.clone(), sink).unwrap();
    let mut dev = LocalDevice {
        dev: h.dev.clone(),
        vfio: h.vfio.clone(),
        process: ProcessToken::new(100, 1),
    };
    scenario(Parts {
        viommu: &viommu,
        ram: &*ram,
        dev: &mut dev,
        irqs: &log,
    });
}
