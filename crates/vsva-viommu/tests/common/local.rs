//! An in-process machine: a host with one PASID-capable function, the VMM's nesting
//! container with guest RAM mapped, and a virtual IOMMU over it.

use std::sync::{Arc, Mutex};

use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
use vsva_vfio::{
    ConfigWidth, Container, DmaMapping, GroupId, IommuType, PciFunction, PciFunctionSpec,
    ProcessToken, Vfio, VfioConfig,
};
use vsva_viommu::{GuestDevice, HostWindow, LocalBackend, MsiMessage, Viommu, ViommuConfig};

use super::{irq_log, Device, Parts, GUEST_RAM, GUEST_SID};

const MB: u64 = 1 << 20;
/// Guest RAM at host [16, 32) MiB; the IOMMU's own tables at [48, 64) MiB.
pub const GUEST_HPA: u64 = 16 * MB;
/// The host function behind [`GUEST_SID`].
pub const HOST_SID: SourceId = SourceId::new(0, 3, 0);
/// The VMM's process.
pub const VMM: ProcessToken = ProcessToken::new(100, 1);

/// The host side.
pub struct Host {
    pub iommu: Arc<Iommu>,
    pub vfio: Vfio,
    pub dev: PciFunction,
}

/// A host with one function in group 3 (and one in group 4 for another process).
pub fn host() -> Host {
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)]).unwrap();
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 48 * MB, 16 * MB).unwrap());
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default()).unwrap();
    let dev = vfio
        .add_pci_function(PciFunctionSpec::new(HOST_SID, Some(GroupId(3))))
        .unwrap();
    vfio.add_pci_function(PciFunctionSpec::new(
        SourceId::new(0, 4, 0),
        Some(GroupId(4)),
    ))
    .unwrap();
    Host { iommu, vfio, dev }
}

/// A nesting container of `process` on `group` with guest RAM mapped at IOVA 0.
pub fn container(h: &Host, process: ProcessToken, group: u32) -> Container {
    let c = h.vfio.open_container(process);
    c.attach_group(GroupId(group)).unwrap();
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

/// Everything a test of the device model needs.
pub struct LocalMachine {
    pub host: Host,
    pub viommu: Viommu,
    pub ram: Arc<HostWindow>,
    pub irqs: Arc<Mutex<Vec<MsiMessage>>>,
    pub dev: LocalDevice,
}

/// The host function as the guest's device.
pub struct LocalDevice {
    pub dev: PciFunction,
    pub vfio: Vfio,
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
            .find_process_context(VMM)
            .is_some_and(|mm| mm.pasids().contains(&pasid))
    }
}

impl LocalMachine {
    /// The machine with `config` (its device list replaced by the one guest device).
    pub fn with(config: ViommuConfig) -> LocalMachine {
        let host = host();
        let c = container(&host, VMM, 3);
        let (irqs, sink) = irq_log();
        let config = ViommuConfig {
            devices: vec![GuestDevice {
                guest: GUEST_SID,
                host: HOST_SID,
            }],
            ..config
        };
        let ram = Arc::new(HostWindow::new(host.iommu.clone(), GUEST_HPA, GUEST_RAM));
        let backend = Box::new(LocalBackend::new(c, host.iommu.clone()));
        let viommu = Viommu::new(config, backend, ram.clone(), sink).unwrap();
        let dev = LocalDevice {
            dev: host.dev.clone(),
            vfio: host.vfio.clone(),
        };
        LocalMachine {
            host,
            viommu,
            ram,
            irqs,
            dev,
        }
    }

    /// The machine with the default configuration.
    pub fn new() -> LocalMachine {
        Self::with(ViommuConfig::default())
    }

    /// The parts the scenario borrows.
    pub fn parts(&mut self) -> Parts<'_> {
        Parts {
            viommu: &self.viommu,
            ram: &*self.ram,
            dev: &mut self.dev,
            irqs: &self.irqs,
        }
    }
}
