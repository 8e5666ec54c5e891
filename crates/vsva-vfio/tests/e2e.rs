//! End to end, in process: a process context, containers, devices, guest page tables in guest
//! memory mapped with MAP_DMA, binds, DMA through the IOMMU, invalidations, frees.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use vsva_ioasid::{Pasid, PasidState, TeardownSubscriber, TeardownTicket};
use vsva_iommu::{DmaError, FaultReason, SourceId};
use vsva_uapi::vfio::{
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_IOMMU_NESTING_OP,
    VFIO_IOMMU_PASID_REQUEST,
};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Errno, Granularity, NestingOp,
    PasidRequestOp,
};
use vsva_vfio::{
    ConfigWidth, Container, GroupId, IommuType, PasidCapability, PciFunction, PciFunctionSpec,
    VfioError,
};

const NESTING_OP: u32 = VFIO_IOMMU_NESTING_OP;
const PASID_REQUEST: u32 = VFIO_IOMMU_PASID_REQUEST;
/// A guest user virtual address (canonical, 4-level).
const VA: u64 = 0x0000_7f12_3456_7000;
const GPA_A: u64 = 0x20_0000;
const GPA_B: u64 = 0x30_0000;
const GPA_C: u64 = 0x40_0000;
/// PASID control register of a function (capability at 0x100, control at +6).
const PASID_CTRL: u32 = 0x106;

/// A teardown subscriber that keeps every ticket until told to let go: a device TLB drain
/// that has not finished yet.
#[derive(Default)]
struct SlowTeardown {
    held: Mutex<Vec<TeardownTicket>>,
}

impl SlowTeardown {
    fn finish_all(&self) {
        self.held.lock().unwrap().clear();
    }
}

impl TeardownSubscriber for SlowTeardown {
    fn teardown(&self, _pasid: Pasid, ticket: TeardownTicket) {
        self.held.lock().unwrap().push(ticket);
    }

    fn name(&self) -> &str {
        "slow"
    }
}

fn enable_pasid(f: &PciFunction) {
    f.config_write(PASID_CTRL, ConfigWidth::Word, 1).unwrap();
}

fn alloc(c: &Container) -> Pasid {
    let mut arg = PasidRequestOp::alloc(1, u32::MAX).unwrap().to_bytes();
    call(c, PASID_REQUEST, &mut arg).unwrap() as Pasid
}

fn bind_bytes(pasid: Pasid, gpgd: u64) -> Vec<u8> {
    NestingOp::Bind(BindRequest::new(u64::from(pasid), gpgd, AddrWidth::Bits48)).to_bytes()
}

fn inv_bytes(caches: CacheSet, granularity: Granularity) -> Vec<u8> {
    NestingOp::Invalidate(CacheInvalidateRequest::new(caches, granularity).unwrap()).to_bytes()
}

fn page_inv(pasid: Pasid, addr: u64) -> Granularity {
    Granularity::Addr {
        pasid: Some(u64::from(pasid)),
        archid: None,
        addr,
        granule_size: 0x1000,
        nb_granules: 1,
        leaf: true,
    }
}

fn fault_reason(err: VfioError) -> FaultReason {
    match err {
        VfioError::Dma {
            source: DmaError::Fault(f),
            ..
        } => f.reason,
        other => panic!("expected an IOMMU fault, got {other:?}"),
    }
}

fn guest_bytes(guest: &Guest<'_>, gpa: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    guest.read_bytes(gpa, &mut buf);
    buf
}

#[test]
fn guest_page_table_dma_end_to_end() {
    let vfio = host();
    let dev = function(&vfio, 3);
    function(&vfio, 4);
    let vm = process(1);
    let c1 = container(&vfio, vm, 3, IommuType::Nesting);
    let c2 = container(&vfio, vm, 4, IommuType::Nesting);
    // One context for the process, shared by both containers.
    let mm = c1.process_context().unwrap();
    assert_eq!(mm.set_id(), c2.process_context().unwrap().set_id());

    // Guest RAM: GPA [0, 16 MiB) at host [16 MiB, 32 MiB), mapped with MAP_DMA bytes.
    let mut map = map_dma_bytes(
        GUEST_HPA,
        0,
        GUEST_SIZE,
        VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
    );
    assert_eq!(call(&c1, MAP_DMA, &mut map), Ok(0));

    // The PASID comes from the other container of the same process.
    let pasid = alloc(&c2);
    assert_eq!(pasid, 1);

    // The guest builds a 4-level table: VA → GPA_A.
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);
    assert_eq!(call(&c1, NESTING_OP, &mut bind_bytes(pasid, root)), Ok(0));
    assert_eq!(c1.bound_pasids(), vec![pasid]);

    // The guest driver enables PASID on its device, which then does DMA with the PASID.
    enable_pasid(&dev);
    dev.dma_write(Some(pasid), VA + 0x10, b"hello vsva")
        .unwrap();
    assert_eq!(guest_bytes(&guest, GPA_A + 0x10, 10), b"hello vsva");
    let mut back = [0u8; 10];
    dev.dma_read(Some(pasid), VA + 0x10, &mut back).unwrap();
    assert_eq!(&back, b"hello vsva");

    // Requests without PASID use the container's stage 2: guest-physical addresses.
    dev.dma_write(None, GPA_C, b"rid").unwrap();
    assert_eq!(guest_bytes(&guest, GPA_C, 3), b"rid");

    // The guest moves VA to GPA_B without flushing: the IOTLB still serves the old page.
    guest.remap(root, VA, GPA_B);
    dev.dma_write(Some(pasid), VA + 0x20, b"stale").unwrap();
    assert_eq!(guest_bytes(&guest, GPA_A + 0x20, 5), b"stale");
    assert_eq!(guest_bytes(&guest, GPA_B + 0x20, 5), [0; 5]);

    // The guest's page-selective invalidation, passed through NESTING_OP: the new page.
    let mut inv = inv_bytes(CacheSet::IOTLB, page_inv(pasid, VA));
    assert_eq!(call(&c1, NESTING_OP, &mut inv), Ok(0));
    dev.dma_write(Some(pasid), VA + 0x20, b"fresh").unwrap();
    assert_eq!(guest_bytes(&guest, GPA_B + 0x20, 5), b"fresh");
    assert_eq!(guest_bytes(&guest, GPA_A + 0x20, 5), b"stale");

    // A teardown that finishes late: the number must stay unused until it does.
    let slow = Arc::new(SlowTeardown::default());
    vfio.pasid_space().subscribe(slow.clone());

    // Free through the other container: DMA with the PASID faults at once...
    let mut free = PasidRequestOp::free(pasid, pasid).unwrap().to_bytes();
    assert_eq!(call(&c2, PASID_REQUEST, &mut free), Ok(0));
    let err = dev.dma_write(Some(pasid), VA, b"x").unwrap_err();
    assert_eq!(err.errno(), Errno::EFAULT);
    assert_eq!(fault_reason(err), FaultReason::PasidEntryNotPresent);
    assert!(c1.bound_pasids().is_empty());
    // ...and the number is not handed out again while its teardown is pending.
    assert!(matches!(
        vfio.pasid_space().find(pasid),
        Some(PasidState::Freeing { pending: 1 })
    ));
    let next = alloc(&c1);
    assert_ne!(next, pasid);
    let err = c1
        .bind(&BindRequest::new(u64::from(pasid), root, AddrWidth::Bits48))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::ENOENT, "{err}");
    slow.finish_all();
    assert_eq!(vfio.pasid_space().find(pasid), None);
    assert_eq!(alloc(&c1), pasid);
}

#[test]
fn every_invalidation_granularity_reaches_the_iommu() {
    let vfio = host();
    let mut spec = PciFunctionSpec::new(sid(3), Some(GroupId(3)));
    spec.ats = true;
    let dev = vfio.add_pci_function(spec).unwrap();
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    map_guest_ram(&c);
    enable_pasid(&dev);
    let mut guest = Guest::new(vfio.iommu());
    let pasid = alloc(&c);
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);
    assert_eq!(call(&c, NESTING_OP, &mut bind_bytes(pasid, root)), Ok(0));

    // Each case: the mapping moves, the listed invalidations are passed one by one, and the
    // new page is seen only after the last (the device has a TLB, so IOTLB-only flushes are
    // not enough).
    let pasid_g = Granularity::Pasid {
        pasid: Some(u64::from(pasid)),
        archid: None,
    };
    let cases: Vec<(&str, Vec<(CacheSet, Granularity)>)> = vec![
        (
            "page",
            vec![
                (CacheSet::IOTLB, page_inv(pasid, VA)),
                (CacheSet::DEV_IOTLB, page_inv(pasid, VA)),
            ],
        ),
        (
            "pasid",
            vec![(CacheSet::IOTLB, pasid_g), (CacheSet::DEV_IOTLB, pasid_g)],
        ),
        ("pasid, all caches at once", vec![(CacheSet::ALL, pasid_g)]),
        (
            "domain",
            vec![
                (CacheSet::IOTLB | CacheSet::PASID, Granularity::Domain),
                (CacheSet::DEV_IOTLB, pasid_g),
            ],
        ),
    ];
    let mut current = GPA_A;
    for (i, (name, steps)) in cases.into_iter().enumerate() {
        let target = GPA_B + i as u64 * 0x1000;
        dev.dma_write(Some(pasid), VA, &[i as u8 + 1]).unwrap();
        assert_eq!(
            guest_bytes(&guest, current, 1),
            [i as u8 + 1],
            "{name}: warm-up"
        );
        guest.remap(root, VA, target);
        let n = steps.len();
        for (k, (caches, granularity)) in steps.into_iter().enumerate() {
            dev.dma_write(Some(pasid), VA, &[0xa0 + k as u8]).unwrap();
            assert_eq!(
                guest_bytes(&guest, current, 1),
                [0xa0 + k as u8],
                "{name}: stale before step {k}"
            );
            assert_eq!(
                call(&c, NESTING_OP, &mut inv_bytes(caches, granularity)),
                Ok(0),
                "{name}: step {k}"
            );
        }
        dev.dma_write(Some(pasid), VA, &[0xee]).unwrap();
        assert_eq!(
            guest_bytes(&guest, target, 1),
            [0xee],
            "{name}: after {n} step(s)"
        );
        current = target;
    }
}

#[test]
fn bind_is_undone_on_every_device_when_one_refuses() {
    let vfio = host();
    // A two-function group: 00:07.0 has 20-bit PASIDs, 00:07.1 only 13 (8192 PASIDs), so
    // the IOMMU sizes its PASID directory to 8192 entries.
    let wide = vfio
        .add_pci_function(PciFunctionSpec::new(
            SourceId::new(0, 7, 0),
            Some(GroupId(7)),
        ))
        .unwrap();
    let mut narrow_spec = PciFunctionSpec::new(SourceId::new(0, 7, 1), Some(GroupId(7)));
    narrow_spec.pasid = Some(PasidCapability {
        max_pasid_width: 13,
        execute: false,
        privileged: false,
    });
    vfio.add_pci_function(narrow_spec).unwrap();
    let c = container(&vfio, process(1), 7, IommuType::Nesting);
    map_guest_ram(&c);
    assert_eq!(c.nesting_info().unwrap().pasid_bits, 13);
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);

    let high = c.alloc_pasid(9000, 9000).unwrap();
    let err = c
        .bind(&BindRequest::new(u64::from(high), root, AddrWidth::Bits48))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL, "{err}");
    assert!(
        matches!(&err, VfioError::BindFailed { device, .. } if *device == SourceId::new(0, 7, 1)),
        "{err:?}"
    );
    // The first function got the entry before the second refused; it was taken back, and
    // with it the PASID table it was the only entry of.
    let words = vfio
        .iommu()
        .read_pasid_entry(wide.source_id(), high)
        .unwrap();
    assert!(
        words.is_none_or(|w| w[0] & 1 == 0),
        "entry left present on 00:07.0"
    );
    enable_pasid(&wide);
    let err = wide.dma_write(Some(high), VA, b"x").unwrap_err();
    assert_eq!(fault_reason(err), FaultReason::PasidDirNotPresent);
    assert!(c.bound_pasids().is_empty());

    // A PASID both can hold binds on both, and it is not "already bound" after the failure.
    let low = c.alloc_pasid(1, 8191).unwrap();
    c.bind(&BindRequest::new(u64::from(low), root, AddrWidth::Bits48))
        .unwrap();
    for f in [SourceId::new(0, 7, 0), SourceId::new(0, 7, 1)] {
        let words = vfio.iommu().read_pasid_entry(f, low).unwrap().unwrap();
        assert_eq!(words[0] & 1, 1, "{f}");
        assert_eq!(words[0] >> 6 & 7, 3, "{f}: PGTT nested");
    }
    wide.dma_write(Some(low), VA, b"ok").unwrap();
    assert_eq!(guest_bytes(&guest, GPA_A, 2), b"ok");
}

#[test]
fn bound_entry_has_the_fields_the_bind_asked_for() {
    let vfio = host();
    function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    let pasid = c.alloc_pasid(1, 100).unwrap();
    // An unaligned gpgd is not refused: the entry keeps bits 63:12 (Linux 5.10 intel/pasid.c
    // `pasid_set_flptr`).
    let mut req = BindRequest::new(u64::from(pasid), 0x5abc, AddrWidth::Bits57);
    req.vtd.flags = vsva_uapi::VtdBindFlags::SRE | vsva_uapi::VtdBindFlags::WPE;
    req.vtd.pat = 0x0007_0406;
    req.vtd.emt = 6;
    c.bind(&req).unwrap();
    let w = vfio
        .iommu()
        .read_pasid_entry(sid(3), pasid)
        .unwrap()
        .unwrap();
    let entry = vsva_iommu::PasidEntry::from_raw(&w).unwrap();
    let (root, levels) = vfio.iommu().stage2_root(c.stage2().unwrap()).unwrap();
    assert_eq!(entry.pgtt, vsva_iommu::Pgtt::Nested);
    assert_eq!(entry.flptr, 0x5000);
    assert_eq!(entry.flpm, 1, "57-bit → 5-level");
    assert_eq!(entry.ssptptr, root);
    assert_eq!(entry.sl_levels(), levels);
    assert_eq!(entry.did, c.domain_id().unwrap());
    assert!(entry.sre && entry.wpe && !entry.eafe && !entry.pcd);
    // PAT and EMT are not written: they only matter with EMTE, which the VT-d driver refuses
    // (no memory-type support, `intel_pasid_setup_bind_data`).
    assert_eq!((entry.pat, entry.emt), (0, 0));
    // Unbind clears it; unbinding again is still a success.
    let mut unbind =
        NestingOp::Unbind(BindRequest::new(u64::from(pasid), 0, AddrWidth::Bits48)).to_bytes();
    assert_eq!(call(&c, NESTING_OP, &mut unbind), Ok(0));
    let w = vfio
        .iommu()
        .read_pasid_entry(sid(3), pasid)
        .unwrap()
        .unwrap();
    assert_eq!(w[0] & 1, 0);
    assert_eq!(call(&c, NESTING_OP, &mut unbind), Ok(0));
}

#[test]
fn mdev_default_pasid_dma_and_vsva() {
    let vfio = host();
    let parent = SourceId::new(0, 5, 0);
    let parent_fn = vfio
        .add_pci_function(PciFunctionSpec::new(parent, None))
        .unwrap();
    let mdev = vfio.create_mdev(parent, GroupId(50)).unwrap();
    let other = vfio.create_mdev(parent, GroupId(51)).unwrap();
    assert_eq!(mdev.parent(), parent);
    assert_ne!(mdev.default_pasid(), other.default_pasid());
    // The host driver enabled PASID on the parent.
    assert_eq!(
        parent_fn
            .config_read(PASID_CTRL, ConfigWidth::Word)
            .unwrap()
            & 1,
        1
    );
    // Before its group is in a container, the default PASID translates nothing.
    let err = mdev.dma_write(None, GPA_C, b"x").unwrap_err();
    assert!(matches!(
        fault_reason(err),
        FaultReason::PasidDirNotPresent | FaultReason::PasidEntryNotPresent
    ));

    let vm = process(1);
    let c = container(&vfio, vm, 50, IommuType::Nesting);
    map_guest_ram(&c);
    // Default-PASID DMA: guest-physical, through the container's stage 2.
    mdev.dma_write(None, GPA_C + 8, b"mdev").unwrap();
    let guest_view = Guest::new(vfio.iommu());
    assert_eq!(guest_bytes(&guest_view, GPA_C + 8, 4), b"mdev");
    // The sibling mdev is not in any container: its DMA still faults.
    assert!(other.dma_write(None, GPA_C, b"x").is_err());

    // vSVA for the mdev: a process PASID bound into the parent's PASID table.
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);
    let pasid = c.alloc_pasid(1, u32::MAX).unwrap();
    c.bind(&BindRequest::new(u64::from(pasid), root, AddrWidth::Bits48))
        .unwrap();
    let words = vfio
        .iommu()
        .read_pasid_entry(parent, pasid)
        .unwrap()
        .unwrap();
    assert_eq!(words[0] >> 6 & 7, 3);
    mdev.dma_write(Some(pasid), VA + 4, b"svm").unwrap();
    assert_eq!(guest_bytes(&guest, GPA_A + 4, 3), b"svm");

    // The default PASID is the host's: the process can neither bind nor free it.
    let err = c
        .bind(&BindRequest::new(
            u64::from(mdev.default_pasid()),
            root,
            AddrWidth::Bits48,
        ))
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EACCES);
    c.free_pasids(0, u32::MAX).unwrap();
    assert!(matches!(
        vfio.pasid_space().find(mdev.default_pasid()),
        Some(PasidState::Allocated { .. })
    ));
    // A group in use cannot go; after the container closes it can.
    assert_eq!(
        vfio.remove_mdev(mdev.id()).unwrap_err().errno(),
        Errno::EBUSY
    );
    drop(c);
    vfio.remove_mdev(mdev.id()).unwrap();
    vfio.remove_mdev(other.id()).unwrap();
    assert_eq!(vfio.pasid_space().find(mdev.default_pasid()), None);
    assert!(
        vfio.iommu().devices().is_empty(),
        "parent detached with its last mdev"
    );
}

#[test]
fn group_detach_unbinds_first_and_close_frees_everything() {
    let vfio = host();
    let dev = function(&vfio, 3);
    function(&vfio, 4);
    let vm = process(1);
    let c1 = container(&vfio, vm, 3, IommuType::Nesting);
    let c2 = container(&vfio, vm, 4, IommuType::Nesting);
    map_guest_ram(&c1);
    enable_pasid(&dev);
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);
    let pasids: Vec<Pasid> = (0..5)
        .map(|_| c1.alloc_pasid(1, u32::MAX).unwrap())
        .collect();
    c1.bind(&BindRequest::new(
        u64::from(pasids[0]),
        root,
        AddrWidth::Bits48,
    ))
    .unwrap();
    dev.dma_write(Some(pasids[0]), VA, b"a").unwrap();

    // Detaching the only group unbinds first, then the container is back to no IOMMU.
    c1.detach_group(GroupId(3)).unwrap();
    assert!(c1.bound_pasids().is_empty());
    assert_eq!(c1.iommu_type(), None);
    assert_eq!(vfio.group_container(GroupId(3)).unwrap(), None);
    assert!(dev.dma_write(Some(pasids[0]), VA, b"b").is_err());
    // The PASIDs survive: the other container still holds the process's context.
    let mm = c2.process_context().unwrap();
    assert_eq!(mm.pasids(), pasids);
    assert!(mm.bound_pasids().is_empty());
    drop(mm);

    // Re-attach and rebind: the old bind is gone, so this is not "already bound".
    c1.attach_group(GroupId(3)).unwrap();
    c1.set_iommu(IommuType::Nesting).unwrap();
    map_guest_ram(&c1);
    c1.bind(&BindRequest::new(
        u64::from(pasids[0]),
        root,
        AddrWidth::Bits48,
    ))
    .unwrap();
    dev.dma_write(Some(pasids[0]), VA, b"c").unwrap();

    // Closing both containers releases the context: every PASID is freed, entries cleared.
    drop(c1);
    assert!(vfio.find_process_context(vm).is_some());
    drop(c2);
    assert!(vfio.find_process_context(vm).is_none());
    for p in &pasids {
        assert_eq!(vfio.pasid_space().find(*p), None, "PASID {p}");
    }
    assert_eq!(vfio.pasid_space().stats().allocated, 0);
    assert!(vfio.processes().is_empty());
    assert!(vfio.iommu().devices().is_empty());
}

#[test]
fn stage2_unmap_is_flushed_for_nested_and_rid_dma() {
    let vfio = host();
    let dev = function(&vfio, 3);
    let c = container(&vfio, process(1), 3, IommuType::Nesting);
    map_guest_ram(&c);
    enable_pasid(&dev);
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA_A);
    let pasid = c.alloc_pasid(1, u32::MAX).unwrap();
    c.bind(&BindRequest::new(u64::from(pasid), root, AddrWidth::Bits48))
        .unwrap();
    dev.dma_write(Some(pasid), VA, b"n").unwrap();
    dev.dma_write(None, GPA_A, b"r").unwrap();
    // Unmapping guest RAM takes effect at once for both kinds of DMA (the host flushes).
    assert_eq!(c.unmap_dma(0, GUEST_SIZE).unwrap(), GUEST_SIZE);
    assert!(dev.dma_write(Some(pasid), VA, b"n").is_err());
    let err = dev.dma_write(None, GPA_A, b"r").unwrap_err();
    assert_eq!(err.errno(), Errno::EFAULT);
}
