//! Containers: groups, `VFIO_SET_IOMMU`, `VFIO_IOMMU_GET_INFO` bytes, `MAP_DMA` /
//! `UNMAP_DMA`, domain ids, and the devices' place in the IOMMU.

mod common;

use common::*;
use vsva_iommu::IommuConfig;
use vsva_uapi::vfio::{
    DmaUnmap, Type1Info, VFIO_CHECK_EXTENSION, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR,
    VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
    VFIO_GET_API_VERSION, VFIO_IOMMU_GET_INFO, VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES,
    VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU,
};
use vsva_uapi::{decode_nesting_info, AddrWidth, Errno, NestingFeatures};
use vsva_vfio::{
    DmaMapping, GroupId, IommuType, PciFunctionSpec, VfioConfig, VFIO_IOMMU_INFO_PGSIZES_ALL,
    VSVA_INFO_CAP_PASID_QUOTA,
};
use zerocopy::{FromBytes, IntoBytes};

const RW: u32 = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

fn set_iommu(c: &vsva_vfio::Container, ty: u64) -> Result<u64, Errno> {
    call(c, VFIO_SET_IOMMU, &mut ty.to_le_bytes())
}

fn unmap_bytes(iova: u64, size: u64, flags: u32) -> Vec<u8> {
    DmaUnmap {
        argsz: 24,
        flags,
        iova,
        size,
    }
    .as_bytes()
    .to_vec()
}

fn get_info(c: &vsva_vfio::Container, argsz: u32) -> (Result<u64, Errno>, Vec<u8>) {
    let mut arg = vec![0xa5u8; argsz.max(32) as usize];
    arg[..4].copy_from_slice(&argsz.to_le_bytes());
    let r = call(c, VFIO_IOMMU_GET_INFO, &mut arg);
    (r, arg)
}

#[test]
fn set_iommu_rules() {
    let vfio = host();
    for dev in 3..=5 {
        function(&vfio, dev);
    }
    let c = vfio.open_container(process(1));
    assert_eq!(call(&c, VFIO_GET_API_VERSION, &mut []), Ok(0));
    for (ext, want) in [(3u64, 1), (6, 1), (1, 0), (9, 1), (42, 0)] {
        assert_eq!(
            call(&c, VFIO_CHECK_EXTENSION, &mut ext.to_le_bytes()),
            Ok(want),
            "extension {ext}"
        );
    }
    // No group yet: EINVAL, even for a type that does not exist.
    assert_eq!(set_iommu(&c, 6), Err(Errno::EINVAL));
    assert_eq!(set_iommu(&c, 99), Err(Errno::EINVAL));
    assert_eq!(call(&c, VFIO_SET_IOMMU, &mut [6, 0]), Err(Errno::EFAULT));
    c.attach_group(GroupId(3)).unwrap();
    c.attach_group(GroupId(4)).unwrap();
    // Types not offered: ENODEV. Nesting with two groups: EBUSY.
    assert_eq!(set_iommu(&c, 1), Err(Errno::ENODEV));
    assert_eq!(set_iommu(&c, 99), Err(Errno::ENODEV));
    assert_eq!(set_iommu(&c, 6), Err(Errno::EBUSY));
    assert!(
        vfio.iommu().devices().is_empty(),
        "nothing attached on failure"
    );
    // A 4-byte argument works as well as an 8-byte one.
    assert_eq!(call(&c, VFIO_SET_IOMMU, &mut 3u32.to_le_bytes()), Ok(0));
    assert_eq!(c.iommu_type(), Some(IommuType::Type1v2));
    assert_eq!(vfio.iommu().devices(), vec![sid(3), sid(4)]);
    assert_eq!(set_iommu(&c, 3), Err(Errno::EINVAL), "type already set");
    // A type1 v2 container takes more groups, attaching their devices at once.
    c.attach_group(GroupId(5)).unwrap();
    assert_eq!(vfio.iommu().devices(), vec![sid(3), sid(4), sid(5)]);
    // Detaching a group takes its devices out; the others stay.
    c.detach_group(GroupId(4)).unwrap();
    assert_eq!(vfio.iommu().devices(), vec![sid(3), sid(5)]);
    assert_eq!(
        c.detach_group(GroupId(4)).unwrap_err().errno(),
        Errno::EINVAL
    );
    assert_eq!(c.iommu_type(), Some(IommuType::Type1v2));
}

#[test]
fn groups_belong_to_one_container() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let a = container(&vfio, process(1), 3, IommuType::Nesting);
    let b = vfio.open_container(process(2));
    assert_eq!(
        b.attach_group(GroupId(3)).unwrap_err().errno(),
        Errno::EBUSY
    );
    assert_eq!(
        a.attach_group(GroupId(3)).unwrap_err().errno(),
        Errno::EBUSY
    );
    assert_eq!(
        b.attach_group(GroupId(99)).unwrap_err().errno(),
        Errno::ENODEV
    );
    // A nesting container holds exactly one group.
    assert_eq!(
        a.attach_group(GroupId(4)).unwrap_err().errno(),
        Errno::EBUSY
    );
    assert_eq!(vfio.group_container(GroupId(4)).unwrap(), None);
    // Devices of an attached group cannot be removed; new ones cannot join it.
    assert_eq!(
        vfio.remove_pci_function(sid(3)).unwrap_err().errno(),
        Errno::EBUSY
    );
    let late = PciFunctionSpec::new(vsva_iommu::SourceId::new(0, 3, 1), Some(GroupId(3)));
    assert_eq!(
        vfio.add_pci_function(late).unwrap_err().errno(),
        Errno::EBUSY
    );
    assert_eq!(
        vfio.add_pci_function(PciFunctionSpec::new(sid(3), Some(GroupId(8))))
            .unwrap_err()
            .errno(),
        Errno::EEXIST
    );
    drop(a);
    assert_eq!(vfio.group_container(GroupId(3)).unwrap(), None);
    b.attach_group(GroupId(3)).unwrap();
    drop(b);
    vfio.remove_pci_function(sid(3)).unwrap();
    assert_eq!(
        vfio.group_container(GroupId(3)).unwrap_err().errno(),
        Errno::ENODEV
    );
    assert_eq!(
        vfio.pci_function(sid(3)).unwrap_err().errno(),
        Errno::ENODEV
    );
}

#[test]
fn nesting_without_hardware_nesting_is_refused() {
    let cfg = IommuConfig {
        nesting: false,
        ..small_iommu_config()
    };
    let vfio = host_with(cfg, VfioConfig::default());
    function(&vfio, 3);
    let c = vfio.open_container(process(1));
    assert_eq!(
        call(&c, VFIO_CHECK_EXTENSION, &mut 6u64.to_le_bytes()),
        Ok(0)
    );
    c.attach_group(GroupId(3)).unwrap();
    assert_eq!(set_iommu(&c, 6), Err(Errno::ENODEV));
    assert_eq!(set_iommu(&c, 3), Ok(0));
}

#[test]
fn get_info_reports_the_nesting_and_quota_capabilities() {
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    c.alloc_pasid(1, 10).unwrap();
    const FULL: usize = 24 + 56 + 16;

    // argsz 16 (the old struct): 16 bytes written, CAPS flagged, the size needed reported.
    let (r, arg) = get_info(&c, 16);
    assert_eq!(r, Ok(0));
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!(info.argsz as usize, FULL);
    assert_eq!(info.flags, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS);
    assert_eq!(info.iova_pgsizes, VFIO_IOMMU_INFO_PGSIZES_ALL);
    assert_eq!(&arg[16..], &[0xa5; 16][..], "nothing past argsz");
    // argsz 24: cap_offset written as 0, size needed reported, no chain.
    let (_, arg) = get_info(&c, 24);
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!((info.argsz as usize, info.cap_offset), (FULL, 0));
    // Enough room: the chain at offset 24.
    let (_, arg) = get_info(&c, 128);
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!((info.argsz, info.cap_offset), (128, 24));
    let (header, nesting) = decode_nesting_info(&arg[24..]).unwrap();
    assert_eq!(header.next as usize, 24 + 56);
    assert_eq!(nesting.features, NestingFeatures::ALL);
    assert_eq!(nesting.pasid_bits, 20);
    assert_eq!(nesting.addr_width, AddrWidth::Bits57);
    assert_eq!(nesting.vtd.cap_reg, vfio.iommu().cap());
    assert_eq!(nesting.vtd.ecap_reg, vfio.iommu().ecap());
    assert_eq!(c.nesting_info().unwrap(), nesting);
    let quota = &arg[80..96];
    assert_eq!(
        u16::from_le_bytes([quota[0], quota[1]]),
        VSVA_INFO_CAP_PASID_QUOTA
    );
    assert_eq!(&quota[4..8], &[0; 4], "last in the chain");
    assert_eq!(u32::from_le_bytes(quota[8..12].try_into().unwrap()), 1000);
    assert_eq!(u32::from_le_bytes(quota[12..16].try_into().unwrap()), 1);
    assert_eq!(&arg[96..], &[0xa5; 32][..], "nothing past the chain");
    // Malformed arguments.
    let (r, _) = get_info(&c, 15);
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(
        call(&c, VFIO_IOMMU_GET_INFO, &mut [16, 0, 0, 0]),
        Err(Errno::EFAULT)
    );
}

#[test]
fn get_info_of_other_containers() {
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Type1v2);
    let (r, arg) = get_info(&c, 64);
    assert_eq!(r, Ok(0));
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!(
        (info.argsz, info.flags, info.cap_offset),
        (64, VFIO_IOMMU_INFO_PGSIZES, 0)
    );
    assert_eq!(&arg[24..], &[0xa5; 40][..]);
    assert_eq!(c.nesting_info().unwrap_err().errno(), Errno::EOPNOTSUPP);

    // PASID support off: a nesting capability without features or PASIDs, no quota.
    let off = host_with(
        small_iommu_config(),
        VfioConfig {
            pasid_enabled: false,
            ..VfioConfig::default()
        },
    );
    function(&off, 3);
    let c = container(&off, process(1), 3, IommuType::Nesting);
    assert!(c.process_context().is_none());
    let (_, arg) = get_info(&c, 128);
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!(info.cap_offset, 24);
    let (header, nesting) = decode_nesting_info(&arg[24..]).unwrap();
    assert_eq!(header.next, 0);
    assert_eq!(nesting.features, NestingFeatures::empty());
    assert_eq!(nesting.pasid_bits, 0);

    // Before the type is set: EINVAL.
    let bare = off.open_container(process(2));
    assert_eq!(get_info(&bare, 64).0, Err(Errno::EINVAL));
    assert_eq!(bare.info().unwrap_err().errno(), Errno::EINVAL);
}

#[test]
fn map_dma_rules() {
    let vfio = host_with(
        small_iommu_config(),
        VfioConfig {
            dma_entry_limit: 3,
            ..VfioConfig::default()
        },
    );
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Type1v2);
    let ok = |vaddr, iova, size| map_dma_bytes(vaddr, iova, size, RW);
    let cases: Vec<(&str, Vec<u8>, Result<u64, Errno>)> = vec![
        (
            "short buffer",
            ok(GUEST_HPA, 0, 0x1000)[..31].to_vec(),
            Err(Errno::EFAULT),
        ),
        (
            "no permission",
            map_dma_bytes(GUEST_HPA, 0, 0x1000, 0),
            Err(Errno::EINVAL),
        ),
        (
            "unknown flag",
            map_dma_bytes(GUEST_HPA, 0, 0x1000, RW | 1 << 3),
            Err(Errno::EINVAL),
        ),
        (
            "VADDR flag",
            map_dma_bytes(GUEST_HPA, 0, 0x1000, RW | VFIO_DMA_MAP_FLAG_VADDR),
            Err(Errno::EINVAL),
        ),
        ("size 0", ok(GUEST_HPA, 0, 0), Err(Errno::EINVAL)),
        (
            "size unaligned",
            ok(GUEST_HPA, 0, 0x1800),
            Err(Errno::EINVAL),
        ),
        (
            "iova unaligned",
            ok(GUEST_HPA, 0x800, 0x1000),
            Err(Errno::EINVAL),
        ),
        (
            "vaddr unaligned",
            ok(GUEST_HPA + 8, 0, 0x1000),
            Err(Errno::EINVAL),
        ),
        (
            "iova wraps",
            ok(GUEST_HPA, !0xfff, 0x2000),
            Err(Errno::EINVAL),
        ),
        (
            "beyond stage-2 width",
            ok(GUEST_HPA, 1 << 48, 0x1000),
            Err(Errno::EINVAL),
        ),
        (
            "vaddr not memory",
            ok(HOST_SIZE, 0, 0x1000),
            Err(Errno::EFAULT),
        ),
        (
            "vaddr runs out of memory",
            ok(HOST_SIZE - 0x1000, 0, 0x2000),
            Err(Errno::EFAULT),
        ),
        ("map", ok(GUEST_HPA, 0x10_0000, 0x10_0000), Ok(0)),
        (
            "overlap at the start",
            ok(GUEST_HPA, 0x8_0000, 0x8_1000),
            Err(Errno::EEXIST),
        ),
        (
            "overlap inside",
            ok(GUEST_HPA, 0x18_0000, 0x1000),
            Err(Errno::EEXIST),
        ),
        (
            "overlap at the end",
            ok(GUEST_HPA, 0x1f_f000, 0x2000),
            Err(Errno::EEXIST),
        ),
        ("adjacent below", ok(GUEST_HPA, 0xf_f000, 0x1000), Ok(0)),
        ("adjacent above", ok(GUEST_HPA, 0x20_0000, 0x1000), Ok(0)),
        (
            "over the limit",
            ok(GUEST_HPA, 0x40_0000, 0x1000),
            Err(Errno::ENOSPC),
        ),
    ];
    for (name, mut arg, want) in cases {
        assert_eq!(call(&c, MAP_DMA, &mut arg), want, "{name}");
    }
}

#[test]
fn unmap_dma_rules() {
    let vfio = host();
    let dev = function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Type1v2);
    for (iova, size) in [
        (0x0, 0x10_0000),
        (0x10_0000, 0x20_0000),
        (0x40_0000, 0x1000),
    ] {
        c.map_dma(&DmaMapping {
            vaddr: GUEST_HPA + iova,
            iova,
            size,
            read: true,
            write: true,
        })
        .unwrap();
    }
    dev.dma_write(None, 0x10_0000, b"dma").unwrap();
    let unmap = |mut arg: Vec<u8>| {
        let r = call(&c, VFIO_IOMMU_UNMAP_DMA, &mut arg);
        (r, DmaUnmap::read_from_prefix(&arg).unwrap().0.size)
    };
    // Splitting a mapping is refused (type1 v2), at either end.
    assert_eq!(
        unmap(unmap_bytes(0x8_0000, 0x8_0000, 0)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(unmap(unmap_bytes(0, 0x18_0000, 0)).0, Err(Errno::EINVAL));
    assert_eq!(unmap(unmap_bytes(0, 0, 0)).0, Err(Errno::EINVAL));
    assert_eq!(unmap(unmap_bytes(0x800, 0x1000, 0)).0, Err(Errno::EINVAL));
    assert_eq!(
        unmap(unmap_bytes(0, 0x1000, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(unmap(unmap_bytes(0, 0x1000, 1 << 7)).0, Err(Errno::EINVAL));
    assert_eq!(
        unmap(unmap_bytes(0x1000, 0, VFIO_DMA_UNMAP_FLAG_ALL)).0,
        Err(Errno::EINVAL)
    );
    // Nothing mapped in the range: success, size 0 written back.
    assert_eq!(unmap(unmap_bytes(0x80_0000, 0x1000, 0)), (Ok(0), 0));
    // Whole mappings inside the range go; the bytes unmapped are written back.
    assert_eq!(unmap(unmap_bytes(0, 0x30_0000, 0)), (Ok(0), 0x30_0000));
    assert_eq!(
        dev.dma_write(None, 0x10_0000, b"x").unwrap_err().errno(),
        Errno::EFAULT
    );
    dev.dma_write(None, 0x40_0000, b"still").unwrap();
    assert_eq!(
        unmap(unmap_bytes(0, 0, VFIO_DMA_UNMAP_FLAG_ALL)),
        (Ok(0), 0x1000)
    );
    assert!(dev.dma_write(None, 0x40_0000, b"x").is_err());
    // The space is free again.
    assert_eq!(
        call(&c, MAP_DMA, &mut map_dma_bytes(GUEST_HPA, 0, 0x40_1000, RW)),
        Ok(0)
    );
}

#[test]
fn domains_are_distinct_and_ids_are_recycled() {
    let vfio = host();
    for dev in 3..=5 {
        function(&vfio, dev);
    }
    let a = container(&vfio, process(1), 3, IommuType::Type1v2);
    let b = container(&vfio, process(1), 4, IommuType::Nesting);
    let (da, db) = (a.domain_id().unwrap(), b.domain_id().unwrap());
    assert_ne!(da, db);
    assert_ne!(a.stage2(), b.stage2());
    // Each container's RID DMA goes through its own stage 2.
    map_guest_ram(&a);
    b.map_dma(&DmaMapping {
        vaddr: GUEST_HPA + 0x10_0000,
        iova: 0,
        size: 0x1000,
        read: true,
        write: false,
    })
    .unwrap();
    let fa = vfio.pci_function(sid(3)).unwrap();
    let fb = vfio.pci_function(sid(4)).unwrap();
    let ta = fa.translate(None, 0x10, vsva_iommu::Access::READ).unwrap();
    let tb = fb.translate(None, 0x10, vsva_iommu::Access::READ).unwrap();
    assert_eq!(ta.host_addr, GUEST_HPA + 0x10);
    assert_eq!(tb.host_addr, GUEST_HPA + 0x10_0010);
    assert_eq!(
        fb.dma_write(None, 0x10, b"ro").unwrap_err().errno(),
        Errno::EFAULT
    );
    drop(a);
    let c = container(&vfio, process(2), 5, IommuType::Type1v2);
    assert_eq!(c.domain_id(), Some(da), "the freed domain id is reused");
    // A new container starts with an empty stage 2: nothing from the old one leaks.
    let fc = vfio.pci_function(sid(5)).unwrap();
    assert!(fc.dma_write(None, 0x10, b"x").is_err());
    assert_eq!(vfio.iommu().devices(), vec![sid(4), sid(5)]);
}
