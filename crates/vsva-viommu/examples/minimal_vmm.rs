//! A minimal VMM loop around the virtual IOMMU, in process: guest RAM mapped into the host
//! container's stage 2, the unit's register page at the DMAR base address of the guest's
//! MMIO map, an interrupt callback, and a trapped-access loop. The "guest" is a short script
//! of the accesses its IOMMU driver makes to bind a process's page table to a PASID.
//!
//! `cargo run -p vsva-viommu --example minimal_vmm`

use std::sync::Arc;

use vsva_iommu::{HostMemory, Iommu, IommuConfig, SourceId};
use vsva_vfio::{DmaMapping, GroupId, IommuType, PciFunctionSpec, ProcessToken, Vfio, VfioConfig};
use vsva_viommu::{
    GuestDevice, GuestMemory, HostWindow, LocalBackend, MsiMessage, Viommu, ViommuConfig,
};

type Error = Box<dyn std::error::Error>;
const MB: u64 = 1 << 20;
/// Where the guest's ACPI DMAR table says the unit's registers are.
const DMAR_BASE: u64 = 0xfed9_0000;

/// One trapped guest access.
enum Exit {
    Read(u64, usize),
    Write(u64, usize, u64),
}

fn main() -> Result<(), Error> {
    // Host: memory, the software IOMMU, VFIO with the guest's device 00:03.0 in group 3.
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)])?;
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 48 * MB, 16 * MB)?);
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default())?;
    let sid = SourceId::new(0, 3, 0);
    vfio.add_pci_function(PciFunctionSpec::new(sid, Some(GroupId(3))))?;
    let container = vfio.open_container(ProcessToken::new(std::process::id(), 1));
    container.attach_group(GroupId(3))?;
    container.set_iommu(IommuType::Nesting)?;
    // Guest RAM: guest-physical [0, 16 MiB) at host [16, 32) MiB.
    let map = DmaMapping {
        vaddr: 16 * MB,
        iova: 0,
        size: 16 * MB,
        read: true,
        write: true,
    };
    container.map_dma(&map)?;
    let ram = Arc::new(HostWindow::new(iommu.clone(), 16 * MB, 16 * MB));

    // The unit: the guest sees the device with the same requester id.
    let config = ViommuConfig {
        devices: vec![GuestDevice {
            guest: sid,
            host: sid,
        }],
        ..ViommuConfig::default()
    };
    let irq = Arc::new(|m: MsiMessage| println!("MSI to {:#x}: {:#x}", m.address, m.data));
    let backend = Box::new(LocalBackend::new(container, iommu.clone()));
    let viommu = Viommu::new(config, backend, ram.clone(), irq)?;

    // The guest's tables (what its driver writes to RAM): root, context, PASID directory.
    let w = |gpa: u64, v: u64| ram.write(gpa, &v.to_le_bytes());
    w(0x1000, 0x2000 | 1)?; // root entry, bus 0
    w(0x2000 + 3 * 8 * 32, 0x3000 | 1 << 3 | 1)?; // context entry of 00:03.0: PASIDs on
    w(0x3000, 0x4000 | 1)?; // PASID directory entry 0
    use vsva_viommu::regs::*;
    let b = DMAR_BASE;
    let script = [
        Exit::Read(b + ECAP, 8),
        Exit::Write(b + RTADDR, 8, 0x1000 | 1 << 10), // scalable mode
        Exit::Write(b + GCMD, 4, 1 << 30),            // SRTP
        Exit::Write(b + IQA, 8, 0x5000 | 1 << 11),    // 256-bit descriptors
        Exit::Write(b + GCMD, 4, 1 << 26),            // QIE
        Exit::Write(b + GCMD, 4, 1 << 26 | 1 << 31),  // TE
        Exit::Write(b + VCMD, 8, 1),                  // allocate a PASID
        Exit::Read(b + VCRSP, 8),
    ];
    let mut last = 0;
    for exit in script {
        last = dispatch(&viommu, exit);
    }
    let pasid = (last >> 16) as u32;
    // The driver writes a first-level PASID entry (table at GPA 0x10_0000), then a
    // PASID-cache invalidation and a wait descriptor, and moves IQT: the host binds it.
    let pe = 0x4000 + u64::from(pasid) * 64;
    w(pe + 16, 0x10_0000)?;
    w(pe, 1 | 1 << 6)?;
    w(0x5000, 7 | 1 << 4 | u64::from(pasid) << 32)?;
    w(0x5020, 5 | 1 << 5 | 0x1234 << 32)?;
    w(0x5028, 0x6000)?;
    dispatch(&viommu, Exit::Write(b + IQT, 8, 0x40));
    let status = ram.read_u64(0x6000)? as u32;
    println!(
        "PASID {pasid} bound on the host: {:?}; wait status {status:#x}",
        viommu.bound_pasids()
    );
    assert_eq!(viommu.bound_pasids(), vec![pasid]);
    Ok(())
}

/// The VMM's MMIO dispatch: the unit's register page is one region of the guest's map.
fn dispatch(viommu: &Viommu, exit: Exit) -> u64 {
    let page = DMAR_BASE..DMAR_BASE + vsva_viommu::regs::MMIO_SIZE;
    match exit {
        Exit::Read(gpa, size) if page.contains(&gpa) => viommu.read(gpa - DMAR_BASE, size),
        Exit::Write(gpa, size, v) if page.contains(&gpa) => {
            viommu.write(gpa - DMAR_BASE, size, v);
            0
        }
        // Other devices' regions would be matched here.
        Exit::Read(..) => !0,
        Exit::Write(..) => 0,
    }
}
