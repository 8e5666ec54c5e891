//! The virtualized PCIe PASID capability: what a guest reads, what it may write, and that
//! the control bits it writes decide what the device may do.

mod common;

use common::*;
use vsva_iommu::{Access, DmaError, FaultReason, IommuConfig, SourceId};
use vsva_uapi::{AddrWidth, BindRequest, Errno, VtdBindFlags};
use vsva_vfio::pci::{PCI_PASID_CTRL_ENABLE, PCI_PASID_CTRL_EXEC, PCI_PASID_CTRL_PRIV};
use vsva_vfio::{
    ConfigWidth, GroupId, IommuType, PasidCapability, PciFunction, PciFunctionSpec, VfioConfig,
    VfioError,
};

use ConfigWidth::{Byte, Dword, Word};

const CAP: u32 = 0x104;
const CTRL: u32 = 0x106;
const VA: u64 = 0x1234_5000;
const GPA: u64 = 0x20_0000;

fn spec(dev: u8, width: u8, execute: bool, privileged: bool) -> PciFunctionSpec {
    let mut s = PciFunctionSpec::new(sid(dev), Some(GroupId(u32::from(dev))));
    s.pasid = Some(PasidCapability {
        max_pasid_width: width,
        execute,
        privileged,
    });
    s
}

fn refused(err: VfioError) -> &'static str {
    assert_eq!(err.errno(), Errno::EPERM, "{err}");
    match err {
        VfioError::PasidRequestRefused { reason, .. } => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_space_reads() {
    let vfio = host();
    let mut s = spec(3, 20, true, true);
    s.vendor_id = 0x1af4;
    s.device_id = 0x1234;
    let f = vfio.add_pci_function(s).unwrap();
    assert_eq!(f.config_read(0, Dword).unwrap(), 0x1234_1af4);
    assert_eq!(f.config_read(0, Word).unwrap(), 0x1af4);
    assert_eq!(f.config_read(1, Byte).unwrap(), 0x1a);
    assert_eq!(
        f.config_read(0x06, Word).unwrap() & 0x10,
        0x10,
        "capability list"
    );
    assert_eq!(f.config_read(0x34, Byte).unwrap(), 0x40);
    assert_eq!(
        f.config_read(0x40, Byte).unwrap(),
        0x10,
        "PCI Express capability"
    );
    assert_eq!(
        f.config_read(0x41, Byte).unwrap(),
        0,
        "last standard capability"
    );
    // Extended capability: PASID, version 1, end of list.
    let header = f.config_read(0x100, Dword).unwrap();
    assert_eq!(header & 0xffff, 0x1b);
    assert_eq!(header >> 16 & 0xf, 1);
    assert_eq!(header >> 20, 0);
    // Capability word: execute (bit 1), privileged (bit 2), width 20 in bits 12:8.
    assert_eq!(f.config_read(CAP, Word).unwrap(), 0x1406);
    assert_eq!(f.config_read(CTRL, Word).unwrap(), 0);
    assert_eq!(f.config_read(0xffc, Dword).unwrap(), 0);
    // Bad accesses.
    for (off, w) in [
        (0x101, Word),
        (0x102, Dword),
        (0x1000, Byte),
        (0xffe, Dword),
    ] {
        assert_eq!(f.config_read(off, w).unwrap_err().errno(), Errno::EINVAL);
        assert_eq!(
            f.config_write(off, w, 0).unwrap_err().errno(),
            Errno::EINVAL
        );
    }
}

#[test]
fn capability_is_limited_by_the_host_iommu() {
    let cfg = IommuConfig {
        pasid_bits: 10,
        ers: false,
        srs: false,
        ..small_iommu_config()
    };
    let vfio = host_with(cfg, VfioConfig::default());
    assert_eq!(vfio.pasid_bits(), 10);
    let wide = vfio.add_pci_function(spec(3, 20, true, true)).unwrap();
    let narrow = vfio.add_pci_function(spec(4, 8, true, false)).unwrap();
    assert_eq!(
        wide.config_read(CAP, Word).unwrap(),
        10 << 8,
        "width 10, no exec, no priv"
    );
    assert_eq!(narrow.config_read(CAP, Word).unwrap(), 8 << 8);
    assert_eq!(
        wide.pasid_capability(),
        Some(PasidCapability {
            max_pasid_width: 10,
            execute: false,
            privileged: false
        })
    );
    // Enable bits of unsupported features are hard-wired to 0.
    wide.config_write(CTRL, Word, 0x7).unwrap();
    assert_eq!(wide.config_read(CTRL, Word).unwrap(), 1);
    // The container's nesting info reports the smallest width.
    let c = container(&vfio, process(1), 4, IommuType::Nesting);
    assert_eq!(c.nesting_info().unwrap().pasid_bits, 8);
    // Out-of-range physical widths are refused.
    let err = vfio
        .add_pci_function(spec(5, 21, false, false))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
}

#[test]
fn guest_writes_only_the_control_bits() {
    let vfio = host();
    let f = vfio.add_pci_function(spec(3, 16, true, false)).unwrap();
    // A dword write over capability and control: only the control's writable bits land.
    f.config_write(CAP, Dword, 0xffff_ffff).unwrap();
    assert_eq!(f.config_read(CAP, Word).unwrap(), 0x1002);
    assert_eq!(
        f.config_read(CTRL, Word).unwrap(),
        u32::from(PCI_PASID_CTRL_ENABLE | PCI_PASID_CTRL_EXEC)
    );
    // Byte writes: the reserved high byte stays 0; the low byte is the enables.
    f.config_write(CTRL + 1, Byte, 0xff).unwrap();
    f.config_write(CTRL, Byte, 0).unwrap();
    assert_eq!(f.config_read(CTRL, Word).unwrap(), 0);
    // Header and identity are read-only.
    f.config_write(0, Dword, 0).unwrap();
    f.config_write(0x100, Dword, 0).unwrap();
    assert_eq!(f.config_read(0, Word).unwrap(), 0x8086);
    assert_eq!(f.config_read(0x100, Word).unwrap(), 0x1b);
}

/// A nesting container with guest RAM mapped and `VA` bound for a fresh PASID (supervisor
/// requests enabled in the entry); returns the PASID.
fn bound_pasid(vfio: &vsva_vfio::Vfio, group: u32) -> (vsva_vfio::Container, u32) {
    let c = container(vfio, process(1), group, IommuType::Nesting);
    map_guest_ram(&c);
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA);
    let pasid = c.alloc_pasid(1, u32::MAX).unwrap();
    let mut req = BindRequest::new(u64::from(pasid), root, AddrWidth::Bits48);
    req.vtd.flags = VtdBindFlags::SRE;
    c.bind(&req).unwrap();
    (c, pasid)
}

fn set_ctrl(f: &PciFunction, value: u16) {
    f.config_write(CTRL, Word, u32::from(value)).unwrap();
}

#[test]
fn control_bits_are_enforced_on_dma() {
    let vfio = host();
    let f = vfio.add_pci_function(spec(3, 20, true, true)).unwrap();
    let (_c, pasid) = bound_pasid(&vfio, 3);

    // PASID Enable clear: no PASID-tagged request leaves the device.
    let reason = refused(f.dma_write(Some(pasid), VA, b"x").unwrap_err());
    assert!(reason.contains("PASID Enable"), "{reason}");
    let mut buf = [0u8; 1];
    refused(f.dma_read(Some(pasid), VA, &mut buf).unwrap_err());
    // Requests without PASID are unaffected.
    f.dma_write(None, GPA, b"r").unwrap();

    set_ctrl(&f, PCI_PASID_CTRL_ENABLE);
    f.dma_write(Some(pasid), VA, b"p").unwrap();
    // Execute and privileged requests need their own enables...
    assert!(refused(f.translate(Some(pasid), VA, Access::EXEC).unwrap_err()).contains("Execute"));
    assert!(refused(
        f.translate(Some(pasid), VA, Access::READ.privileged())
            .unwrap_err()
    )
    .contains("Privileged"));
    // ...and a PASID prefix to travel in.
    refused(f.translate(None, GPA, Access::EXEC).unwrap_err());
    refused(
        f.translate(None, GPA, Access::READ.privileged())
            .unwrap_err(),
    );

    set_ctrl(
        &f,
        PCI_PASID_CTRL_ENABLE | PCI_PASID_CTRL_EXEC | PCI_PASID_CTRL_PRIV,
    );
    // The execute request now leaves the device and reaches the IOMMU, which refuses it
    // itself: the series' nested bind (Linux intel_pasid_setup_nested) never sets the PASID
    // entry's ERE, and with ECAP.ERS an execute request needs it (VT-d 3.x, fault 0x5c).
    match f.translate(Some(pasid), VA, Access::EXEC).unwrap_err() {
        VfioError::Dma {
            source: DmaError::Fault(fault),
            ..
        } => assert_eq!(fault.reason, FaultReason::ExecuteNotEnabled),
        other => panic!("expected the IOMMU's execute refusal, got {other:?}"),
    }
    let t = f
        .translate(Some(pasid), VA, Access::READ.privileged())
        .unwrap();
    assert_eq!(t.host_addr, GUEST_HPA + GPA);

    // Clearing PASID Enable again stops it at once.
    set_ctrl(&f, 0);
    refused(f.dma_write(Some(pasid), VA, b"x").unwrap_err());
}

#[test]
fn pasids_beyond_max_width_are_refused_by_the_device() {
    let vfio = host();
    let f = vfio.add_pci_function(spec(3, 8, false, false)).unwrap();
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    set_ctrl(&f, PCI_PASID_CTRL_ENABLE);
    let wide = c.alloc_pasid(256, 256).unwrap();
    let reason = refused(f.dma_write(Some(wide), 0, b"x").unwrap_err());
    assert!(reason.contains("Max PASID Width"), "{reason}");
    // Within the width the request reaches the IOMMU (and faults there: nothing bound).
    let err = f.dma_write(Some(255), 0, b"x").unwrap_err();
    assert_eq!(err.errno(), Errno::EFAULT);
}

#[test]
fn without_pasid_support_the_capability_is_hidden() {
    let vfio = host_with(
        small_iommu_config(),
        VfioConfig {
            pasid_enabled: false,
            ..VfioConfig::default()
        },
    );
    let f = vfio.add_pci_function(spec(3, 20, true, true)).unwrap();
    assert_eq!(f.config_read(0x100, Dword).unwrap(), 0);
    assert_eq!(f.pasid_capability(), None);
    f.config_write(CTRL, Word, 1).unwrap();
    assert_eq!(f.config_read(CTRL, Word).unwrap(), 0);
    let reason = refused(f.dma_write(Some(1), 0, b"x").unwrap_err());
    assert!(reason.contains("no PASID capability"), "{reason}");
    // No per-process context, no mdevs either.
    assert_eq!(
        vfio.process_context(process(1)).unwrap_err().errno(),
        Errno::ENOTTY
    );
    let parent = SourceId::new(0, 9, 0);
    vfio.add_pci_function(PciFunctionSpec::new(parent, None))
        .unwrap();
    assert_eq!(
        vfio.create_mdev(parent, GroupId(90)).unwrap_err().errno(),
        Errno::ENOTTY
    );
    // A function without the capability on a PASID-capable host reads a zero header too.
    let vfio = host();
    let mut s = spec(3, 20, false, false);
    s.pasid = None;
    let f = vfio.add_pci_function(s).unwrap();
    assert_eq!(f.config_read(0x100, Dword).unwrap(), 0);
}

#[test]
fn mdev_dma_uses_the_default_pasid_and_the_parents_enable() {
    let vfio = host();
    let parent = SourceId::new(0, 5, 0);
    let parent_fn = vfio
        .add_pci_function(PciFunctionSpec::new(parent, None))
        .unwrap();
    let mdev = vfio.create_mdev(parent, GroupId(50)).unwrap();
    let c = container(&vfio, process(1), 50, IommuType::Type1v2);
    map_guest_ram(&c);
    // The default PASID tags the DMA: it lands at the guest-physical address.
    mdev.dma_write(None, GPA + 16, b"default").unwrap();
    let t = mdev.translate(None, GPA, Access::READ).unwrap();
    assert_eq!(t.host_addr, GUEST_HPA + GPA);
    let mut buf = [0u8; 7];
    Guest::new(vfio.iommu()).read_bytes(GPA + 16, &mut buf);
    assert_eq!(&buf, b"default");
    // The same translation through the parent with the default PASID, as the IOMMU sees it.
    let direct = vfio
        .iommu()
        .translate(parent, Some(mdev.default_pasid()), GPA, Access::READ)
        .unwrap();
    assert_eq!(direct.host_addr, t.host_addr);
    // The parent's PASID Enable governs the mdev's DMA too.
    parent_fn.config_write(CTRL, Word, 0).unwrap();
    refused(mdev.dma_write(None, GPA, b"x").unwrap_err());
    // An mdev's parent must have a PASID capability and not be assigned itself.
    let mut bare = PciFunctionSpec::new(SourceId::new(0, 6, 0), None);
    bare.pasid = None;
    vfio.add_pci_function(bare).unwrap();
    assert_eq!(
        vfio.create_mdev(SourceId::new(0, 6, 0), GroupId(60))
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
    function(&vfio, 7);
    assert_eq!(
        vfio.create_mdev(sid(7), GroupId(70)).unwrap_err().errno(),
        Errno::EBUSY
    );
    assert_eq!(
        vfio.create_mdev(parent, GroupId(50)).unwrap_err().errno(),
        Errno::EEXIST
    );
    assert_eq!(
        vfio.remove_pci_function(parent).unwrap_err().errno(),
        Errno::EBUSY
    );
}
