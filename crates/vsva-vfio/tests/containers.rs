//! Containers: groups, `VFIO_SET_IOMMU`, `VFIO_IOMMU_GET_INFO` bytes, `MAP_DMA` /
//! `UNMAP_DMA`, domain ids, and the devices' place in the IOMMU.

mod common;

use common::*;
use vsva_iommu::IommuConfig;
use vsva_uapi::iommu::{VTD_CAP_MASK, VTD_ECAP_MASK};
use vsva_uapi::vfio::{
    DmaUnmap, InfoCapHeader, InfoCapIovaRange, InfoCapMigration, IovaRange, Type1Info,
    VFIO_CHECK_EXTENSION, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_GET_API_VERSION,
    VFIO_IOMMU_GET_INFO, VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES,
    VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
    VFIO_IOMMU_TYPE1_INFO_CAP_NESTING, VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU,
};
use vsva_uapi::{decode_nesting_info, Errno, NestingFeatures};
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
    // Linux 5.8 `vfio_iommu_type1_check_extension`: 1 for types 1, 3 and 6.
    for (ext, want) in [(3u64, 1), (6, 1), (1, 1), (9, 1), (42, 0)] {
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
    // Types no driver takes: ENODEV. Nesting with two groups: EINVAL (v5 04/15).
    assert_eq!(set_iommu(&c, 2), Err(Errno::ENODEV));
    assert_eq!(set_iommu(&c, 99), Err(Errno::ENODEV));
    assert_eq!(set_iommu(&c, 6), Err(Errno::EINVAL));
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
    // A nesting container holds exactly one group: EINVAL (v5 04/15).
    assert_eq!(
        a.attach_group(GroupId(4)).unwrap_err().errno(),
        Errno::EINVAL
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
    // Linux 5.8 type1 answers 1 for nesting whatever the IOMMU; the VT-d driver then
    // refuses DOMAIN_ATTR_NESTING (`intel_iommu_domain_set_attr`: ENODEV).
    assert_eq!(
        call(&c, VFIO_CHECK_EXTENSION, &mut 6u64.to_le_bytes()),
        Ok(1)
    );
    c.attach_group(GroupId(3)).unwrap();
    assert_eq!(set_iommu(&c, 6), Err(Errno::ENODEV));
    assert_eq!(set_iommu(&c, 3), Ok(0));
}

/// The capability chain of a GET_INFO answer: (id, offset) of each capability, in order.
fn chain(arg: &[u8]) -> Vec<(u16, usize)> {
    let info = Type1Info::read_from_prefix(arg).unwrap().0;
    let mut caps = Vec::new();
    let mut at = info.cap_offset as usize;
    while at != 0 {
        let header = InfoCapHeader::read_from_prefix(&arg[at..]).unwrap().0;
        caps.push((header.id, at));
        at = header.next as usize;
    }
    caps
}

#[test]
fn get_info_reports_the_series_capabilities_then_the_quota() {
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    c.alloc_pasid(1, 10).unwrap();
    // Linux 5.8 type1: migration (32 bytes), IOVA ranges (16 + 2 × 16); v5 04/15: nesting
    // (56); then the vsva quota extension (16).
    const FULL: usize = 24 + 32 + 48 + 56 + 16;

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
    // Enough room: the chain at offset 24, in the kernel's order.
    let (_, arg) = get_info(&c, 256);
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!((info.argsz, info.cap_offset), (256, 24));
    assert_eq!(
        chain(&arg),
        [
            (VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 24),
            (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 56),
            (VFIO_IOMMU_TYPE1_INFO_CAP_NESTING, 104),
            (VSVA_INFO_CAP_PASID_QUOTA, 160),
        ]
    );
    // Migration: the smallest page size, DIRTY_BITMAP_SIZE_MAX (Linux 5.8).
    let mig = InfoCapMigration::read_from_prefix(&arg[24..]).unwrap().0;
    assert_eq!(
        (mig.header.version, mig.flags, mig.pgsize_bitmap),
        (1, 0, 4096)
    );
    assert_eq!(mig.max_dirty_bitmap_size, 256 << 20);
    // IOVA ranges: the 48-bit aperture less the interrupt window.
    let head = InfoCapIovaRange::read_from_prefix(&arg[56..]).unwrap().0;
    assert_eq!((head.header.version, head.nr_iovas), (1, 2));
    let ranges: Vec<(u64, u64)> = (0..2)
        .map(|i| IovaRange::read_from_prefix(&arg[72 + 16 * i..]).unwrap().0)
        .map(|r| (r.start, r.end))
        .collect();
    assert_eq!(ranges, [(0, 0xfedf_ffff), (0xfef0_0000, (1 << 48) - 1)]);
    assert_eq!(c.info().unwrap().iova_ranges.len(), 2);
    // Nesting: addr_width is the domain's (4-level stage 2, MGAW 48), not the first level's
    // 57; CAP/ECAP carry only VTD_CAP_MASK / VTD_ECAP_MASK (v5 04/15).
    let (_, nesting) = decode_nesting_info(&arg[104..]).unwrap();
    assert_eq!(nesting.features, NestingFeatures::ALL);
    assert_eq!(nesting.pasid_bits, 20);
    assert_eq!(nesting.addr_width, 48);
    assert_eq!(nesting.vtd.cap_reg, vfio.iommu().cap() & VTD_CAP_MASK);
    assert_eq!(nesting.vtd.ecap_reg, vfio.iommu().ecap() & VTD_ECAP_MASK);
    assert_ne!(nesting.vtd.cap_reg & 1 << 60, 0, "FL5LP kept");
    assert_eq!(c.nesting_info().unwrap(), nesting);
    let quota = &arg[160..176];
    assert_eq!(&quota[4..8], &[0; 4], "last in the chain");
    assert_eq!(u32::from_le_bytes(quota[8..12].try_into().unwrap()), 1000);
    assert_eq!(u32::from_le_bytes(quota[12..16].try_into().unwrap()), 1);
    assert_eq!(&arg[176..], &[0xa5; 80][..], "nothing past the chain");
    // Malformed arguments.
    let (r, _) = get_info(&c, 15);
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(
        call(&c, VFIO_IOMMU_GET_INFO, &mut [16, 0, 0, 0]),
        Err(Errno::EFAULT)
    );
    // argsz asks for the chain but the buffer ends before it: the kernel's copy faults.
    let mut short = vec![0u8; 100];
    short[..4].copy_from_slice(&256u32.to_le_bytes());
    assert_eq!(
        call(&c, VFIO_IOMMU_GET_INFO, &mut short),
        Err(Errno::EFAULT)
    );
    assert_eq!(&short[4..], &[0; 96][..], "nothing written");
}

#[test]
fn get_info_of_other_containers() {
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Type1v2);
    let (r, arg) = get_info(&c, 128);
    assert_eq!(r, Ok(0));
    let info = Type1Info::read_from_prefix(&arg).unwrap().0;
    assert_eq!(
        (info.argsz, info.flags),
        (128, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS)
    );
    let ids: Vec<u16> = chain(&arg).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        [
            VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
            VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE
        ]
    );
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
    let (_, arg) = get_info(&c, 256);
    let caps = chain(&arg);
    assert_eq!(caps.len(), 3);
    let (id, at) = caps[2];
    assert_eq!(id, VFIO_IOMMU_TYPE1_INFO_CAP_NESTING);
    let (header, nesting) = decode_nesting_info(&arg[at..]).unwrap();
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

#[test]
fn type1_v1_containers_work_and_unmap_whole_mappings() {
    // Linux 5.8 type1: SET_IOMMU(1) is accepted; `vfio_dma_do_unmap` without v2 removes every
    // mapping the range touches, whole, where v2 refuses to split one (EINVAL).
    let vfio = host();
    for dev in 3..=5 {
        function(&vfio, dev);
    }
    let c = vfio.open_container(process(1));
    c.attach_group(GroupId(3)).unwrap();
    assert_eq!(set_iommu(&c, 1), Ok(0));
    assert_eq!(c.iommu_type(), Some(IommuType::Type1));
    c.attach_group(GroupId(4)).unwrap();
    let map = |iova| DmaMapping {
        vaddr: GUEST_HPA + iova,
        iova,
        size: 0x4000,
        read: true,
        write: true,
    };
    c.map_dma(&map(0)).unwrap();
    c.map_dma(&map(0x10_0000)).unwrap();
    assert_eq!(
        c.unmap_dma(0x1000, 0x1000).unwrap(),
        0x4000,
        "the whole first mapping"
    );
    assert_eq!(
        c.unmap_dma(0x10_2000, 0x4000).unwrap(),
        0x4000,
        "the whole second one"
    );
    assert_eq!(c.unmap_dma(0, 0x20_0000).unwrap(), 0);
    let v2 = container(&vfio, process(2), 5, IommuType::Type1v2);
    v2.map_dma(&map(0)).unwrap();
    assert_eq!(
        v2.unmap_dma(0x1000, 0x1000).unwrap_err().errno(),
        Errno::EINVAL
    );
}

#[test]
fn map_dma_stays_inside_the_iova_ranges() {
    // Linux 5.8 `vfio_dma_do_map`: a range outside the IOVA list (the interrupt window,
    // or past the domain's width) → EINVAL.
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Type1v2);
    let map = |iova, size| {
        c.map_dma(&DmaMapping {
            vaddr: GUEST_HPA,
            iova,
            size,
            read: true,
            write: true,
        })
    };
    assert_eq!(map(0xfee0_0000, 0x1000).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(
        map(0xfed0_0000, 0x20_0000).unwrap_err().errno(),
        Errno::EINVAL
    );
    assert_eq!(map(0xfeef_f000, 0x1000).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(map(1 << 48, 0x1000).unwrap_err().errno(), Errno::EINVAL);
    map(0xfedf_f000, 0x1000).unwrap();
    map(0xfef0_0000, 0x1000).unwrap();
    map((1 << 48) - 0x1000, 0x1000).unwrap();
}
