//! What a VMM does through `vsvad`: open a nesting container for its device's group, share
//! guest RAM (a sealed memfd), allocate a PASID, build a first-level page table in guest RAM,
//! bind it, have the device DMA through it, check the bytes, then unbind and free.
//!
//! Uses the daemon on `$VSVA_SOCKET` if set; otherwise starts a private one (the `vsvad`
//! binary from `$VSVA_VSVAD`, next to this example, or in `PATH`) and stops it at the end.
//!
//! ```text
//! cargo build -p vsvad && cargo run -p vsva-client --example embed
//! ```

use vsva_client::pgtable::{PageTables, P, RW, US};
use vsva_client::{find_vsvad, Client, GuestMemory, MachineConfig, Options, PrivateDaemon};
use vsva_uapi::{AddrWidth, BindRequest};

type Error = Box<dyn std::error::Error>;

/// Guest layout: 16 MiB of RAM at guest-physical 0, page tables from 1 MiB, data at 4 MiB.
const GUEST_RAM: u64 = 16 << 20;
const PT_POOL: u64 = 1 << 20;
const DATA: u64 = 4 << 20;
const GVA: u64 = 0x7f00_1234_0000;

fn main() -> Result<(), Error> {
    // A private daemon with one PASID-capable device, unless one is named.
    let private = match std::env::var_os("VSVA_SOCKET") {
        Some(_) => None,
        None => {
            let vsvad = find_vsvad(None).ok_or("no vsvad binary: `cargo build -p vsvad`")?;
            let config = MachineConfig::new(1).to_toml();
            Some(PrivateDaemon::start_with(&vsvad, Some(&config), &[])?)
        }
    };
    let socket = match &private {
        Some(d) => d.socket().to_owned(),
        None => vsva_client::default_socket(),
    };
    let mut client = Client::connect(Options::new(socket, "embed-example"))?;

    // The first device with a PASID capability, and a nesting container for its group.
    let dev = client
        .status()?
        .devices
        .into_iter()
        .find(|d| d.pasid_width > 0 && d.group != u32::MAX)
        .ok_or("the daemon has no PASID-capable device")?;
    let c = client.nesting_container(dev.group)?; // open + attach + SET_IOMMU(nesting)

    // Share guest RAM: passed by fd, mapped 1:1 (iova = guest-physical) into stage 2.
    let mem = GuestMemory::new(0, GUEST_RAM)?;
    client.attach_guest_memory(c, &mem)?;

    // A PASID, and a 4-level guest page table mapping GVA -> DATA.
    let pasid = client.pasid_alloc(c, 1, u32::MAX)?;
    let mut pt = PageTables::new(&mem, PT_POOL, 1 << 20, 4)?;
    pt.map(GVA, DATA, P | RW | US)?;

    // Bind it, enable PASID in the device's config space, and DMA through both stages.
    let bind = BindRequest::new(u64::from(pasid), pt.root(), AddrWidth::Bits48);
    client.bind(c, &bind)?;
    client.enable_pasid(dev.source_id)?;
    let message = b"hello through the daemon";
    client.dma_write(dev.source_id, Some(pasid), GVA + 0x10, message)?;
    let mut landed = vec![0u8; message.len()];
    mem.read(DATA + 0x10, &mut landed)?;
    assert_eq!(landed, message, "the DMA must land in the guest page");
    let back = client.dma_read(dev.source_id, Some(pasid), GVA + 0x10, message.len() as u32)?;
    assert_eq!(back, message);
    println!(
        "{}: PASID {pasid}, DMA to {GVA:#x} landed at {DATA:#x}",
        dev.name
    );

    // Unbind and free; DMA with the PASID now faults.
    client.unbind(c, &bind)?;
    client.pasid_free(c, pasid, pasid)?;
    let after = client.dma_read(dev.source_id, Some(pasid), GVA, 1);
    assert!(after.is_err(), "a freed PASID must fault");
    println!("unbound and freed; DMA now fails: {}", after.unwrap_err());
    client.close_container(c)?;
    Ok(())
}
