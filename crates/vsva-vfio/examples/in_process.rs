//! The in-process path a VMM takes when it links vsva directly (no daemon): an IOMMU over host
//! memory, one PCI function, a nesting container, guest RAM mapped into stage 2, a PASID, a
//! first-level page table built in guest memory and bound to the PASID, a DMA through both
//! stages, then unbind and free. Every VFIO call goes through the byte-level `ioctl` with the
//! uAPI structs, as a VMM's existing VFIO code would issue them.
//!
//! `cargo run -p vsva-vfio --example in_process`

use std::sync::Arc;

use vsva_iommu::paging::{fl_map, TableStore, RW, US};
use vsva_iommu::{GuestTableStore, HostMemory, Iommu, IommuConfig, SourceId};
use vsva_uapi::vfio::{
    DmaMap, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST, VFIO_SET_IOMMU, VFIO_TYPE1_NESTING_IOMMU,
};
use vsva_uapi::{AddrWidth, BindRequest, NestingOp, PasidRequestOp};
use vsva_vfio::{ConfigWidth, GroupId, PciFunctionSpec, ProcessToken, Vfio, VfioConfig};
use zerocopy::IntoBytes;

type Error = Box<dyn std::error::Error>;

const MB: u64 = 1 << 20;
/// Host memory [0, 64 MiB): guest RAM at host [16, 32) MiB, the IOMMU's own tables at [48, 64).
const GUEST_HPA: u64 = 16 * MB;
const GUEST_SIZE: u64 = 16 * MB;
const IOMMU_POOL: u64 = 48 * MB;
/// A guest virtual address and the guest-physical page behind it.
const GVA: u64 = 0x7f00_1234_0000;
const DATA_GPA: u64 = 4 * MB;

fn main() -> Result<(), Error> {
    // The host: memory, the software IOMMU, and VFIO with one function 00:03.0 in group 3.
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)])?;
    let iommu = Arc::new(Iommu::new(
        IommuConfig::default(),
        mem,
        IOMMU_POOL,
        16 * MB,
    )?);
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default())?;
    let sid = SourceId::new(0, 3, 0);
    let dev = vfio.add_pci_function(PciFunctionSpec::new(sid, Some(GroupId(3))))?;

    // The VMM's process (pid + start time), its container, and VFIO_SET_IOMMU(nesting).
    let container = vfio.open_container(ProcessToken::new(std::process::id(), 1));
    container.attach_group(GroupId(3))?; // VFIO_GROUP_SET_CONTAINER
    let mut ty = u64::from(VFIO_TYPE1_NESTING_IOMMU).to_le_bytes();
    container.ioctl(VFIO_SET_IOMMU, &mut ty)?;

    // Share guest RAM: guest-physical [0, 16 MiB) -> host [16, 32) MiB in stage 2.
    let mut map = DmaMap {
        argsz: size_of::<DmaMap>() as u32,
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr: GUEST_HPA,
        iova: 0,
        size: GUEST_SIZE,
    };
    container.ioctl(VFIO_IOMMU_MAP_DMA, map.as_mut_bytes())?;

    // Allocate a PASID: the ioctl's return value is the number.
    let mut req = PasidRequestOp::alloc(1, u32::MAX)?.to_bytes();
    let pasid = container.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut req)?.value() as u32;

    // The guest builds a 4-level first-level table in its own RAM (tables from GPA 1 MiB).
    let mut tables = GuestTableStore::new(iommu.memory(), GUEST_HPA, MB);
    let root = tables
        .alloc_table()
        .ok_or("guest RAM has no room for tables")?;
    fl_map(&mut tables, root, 4, GVA, DATA_GPA, 0x1000, RW | US)?;

    // Bind the guest table to the PASID: first level = guest table, second = stage 2.
    let bind = BindRequest::new(u64::from(pasid), root, AddrWidth::Bits48);
    container.ioctl(VFIO_IOMMU_NESTING_OP, &mut NestingOp::Bind(bind).to_bytes())?;

    // The guest driver enables PASID (capability at 0x100, control at +6); the device DMAs.
    dev.config_write(0x106, ConfigWidth::Word, 1)?;
    let message = b"hello from the device";
    dev.dma_write(Some(pasid), GVA + 0x10, message)?;
    let mut landed = vec![0u8; message.len()];
    iommu
        .memory()
        .read(GUEST_HPA + DATA_GPA + 0x10, &mut landed)?;
    assert_eq!(landed, message, "the DMA must land in the guest page");
    println!("PASID {pasid}: DMA to {GVA:#x} landed at guest-physical {DATA_GPA:#x}");

    // Unbind and free; after that the PASID translates nothing.
    container.ioctl(
        VFIO_IOMMU_NESTING_OP,
        &mut NestingOp::Unbind(bind).to_bytes(),
    )?;
    let mut free = PasidRequestOp::free(pasid, pasid)?.to_bytes();
    container.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut free)?;
    let after = dev.dma_write(Some(pasid), GVA, b"x");
    assert!(after.is_err(), "a freed PASID must fault");
    println!(
        "unbound and freed; DMA with PASID {pasid} now fails: {}",
        after.unwrap_err()
    );
    Ok(())
}
