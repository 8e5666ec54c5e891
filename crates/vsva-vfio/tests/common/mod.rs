//! Fixtures shared by the integration tests: a host with memory and an IOMMU, processes,
//! devices, containers, and a guest page-table builder over guest memory.

#![allow(dead_code)]

pub mod ats_device;

use std::sync::Arc;

use vsva_iommu::paging::{fl_map, TableStore, P, RW, US};
use vsva_iommu::{GuestTableStore, HostMemory, Iommu, IommuConfig, SourceId};
use vsva_uapi::vfio::VFIO_IOMMU_MAP_DMA;
use vsva_uapi::Errno;
use vsva_vfio::{
    Container, DmaMapping, GroupId, IommuType, PciFunction, PciFunctionSpec, ProcessToken, Vfio,
    VfioConfig,
};

pub const MB: u64 = 1 << 20;
/// Host memory: [0, 64 MiB).
pub const HOST_SIZE: u64 = 64 * MB;
/// Host memory backing guest RAM: [16 MiB, 32 MiB) = guest-physical [0, 16 MiB).
pub const GUEST_HPA: u64 = 16 * MB;
/// Guest RAM size.
pub const GUEST_SIZE: u64 = 16 * MB;
/// The IOMMU's table pool: [48 MiB, 64 MiB).
pub const POOL: u64 = 48 * MB;

pub fn iommu(cfg: IommuConfig) -> Arc<Iommu> {
    let mem = HostMemory::anonymous(&[(0, HOST_SIZE as usize)]).unwrap();
    Arc::new(Iommu::new(cfg, mem, POOL, HOST_SIZE - POOL).unwrap())
}

/// A small IOMMU configuration that keeps fixtures cheap.
pub fn small_iommu_config() -> IommuConfig {
    IommuConfig {
        iotlb_entries: 1024,
        ..IommuConfig::default()
    }
}

pub fn host_with(cfg: IommuConfig, vcfg: VfioConfig) -> Vfio {
    Vfio::new(iommu(cfg), vcfg).unwrap()
}

pub fn host() -> Vfio {
    host_with(small_iommu_config(), VfioConfig::default())
}

pub fn process(n: u32) -> ProcessToken {
    ProcessToken::new(1000 + n, 5_000_000 + u64::from(n))
}

pub fn sid(dev: u8) -> SourceId {
    SourceId::new(0, dev, 0)
}

/// Registers function 00:`dev`.0 in group `dev` with the default 20-bit PASID capability.
pub fn function(vfio: &Vfio, dev: u8) -> PciFunction {
    vfio.add_pci_function(PciFunctionSpec::new(
        sid(dev),
        Some(GroupId(u32::from(dev))),
    ))
    .unwrap()
}

/// A container of `proc` holding group `group`, with IOMMU type `ty`.
pub fn container(vfio: &Vfio, proc: ProcessToken, group: u32, ty: IommuType) -> Container {
    let c = vfio.open_container(proc);
    c.attach_group(GroupId(group)).unwrap();
    c.set_iommu(ty).unwrap();
    c
}

/// Maps all of guest RAM (GPA 0 → `GUEST_HPA`, read/write).
pub fn map_guest_ram(c: &Container) {
    c.map_dma(&DmaMapping {
        vaddr: GUEST_HPA,
        iova: 0,
        size: GUEST_SIZE,
        read: true,
        write: true,
    })
    .unwrap();
}

/// Runs an ioctl and keeps only the errno of a failure.
pub fn call(c: &Container, cmd: u32, arg: &mut [u8]) -> Result<u64, Errno> {
    c.ioctl(cmd, arg).map(|o| o.value()).map_err(|e| e.errno())
}

/// The raw MAP_DMA argument.
pub fn map_dma_bytes(vaddr: u64, iova: u64, size: u64, flags: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&32u32.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&vaddr.to_le_bytes());
    v.extend_from_slice(&iova.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v
}

pub const MAP_DMA: u32 = VFIO_IOMMU_MAP_DMA;

/// The guest's view of its RAM: page tables at guest-physical addresses, stored in host
/// memory at `GUEST_HPA + gpa` through the IOMMU crate's shared [`GuestTableStore`]; table
/// pages are handed out from GPA 1 MiB upwards.
pub struct Guest<'a> {
    pub iommu: &'a Iommu,
    pub tables: GuestTableStore<'a>,
}

impl<'a> Guest<'a> {
    /// A guest whose table pages start at GPA 1 MiB.
    pub fn new(iommu: &'a Iommu) -> Self {
        Guest {
            iommu,
            tables: GuestTableStore::new(iommu.memory(), GUEST_HPA, MB),
        }
    }

    /// Allocates a zeroed 4-level root table; returns its GPA.
    pub fn new_root(&mut self) -> u64 {
        self.tables.alloc_table().unwrap()
    }

    /// Maps one 4 KiB page `va` → `gpa` (user, read/write) in the table at `root`.
    pub fn map(&mut self, root: u64, va: u64, gpa: u64) {
        fl_map(&mut self.tables, root, 4, va, gpa, 0x1000, RW | US).unwrap();
    }

    /// Rewrites the leaf of `va` to point at `gpa`, as a guest kernel would (no flush).
    pub fn remap(&mut self, root: u64, va: u64, gpa: u64) {
        let mut table = root;
        for level in (2..=4).rev() {
            let e = self
                .tables
                .read(table + vsva_iommu::paging::level_index(va, level) * 8);
            table = e & vsva_iommu::paging::ADDR_MASK;
        }
        self.tables.write(
            table + vsva_iommu::paging::level_index(va, 1) * 8,
            gpa | P | RW | US,
        );
    }

    /// Reads guest RAM at `gpa`.
    pub fn read_bytes(&self, gpa: u64, buf: &mut [u8]) {
        self.iommu.memory().read(GUEST_HPA + gpa, buf).unwrap();
    }
}
