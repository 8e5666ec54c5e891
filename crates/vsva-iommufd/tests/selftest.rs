//! Cases of Linux's iommufd selftests (`tools/testing/selftests/iommu/iommufd.c`) that apply
//! to a VT-d nested setup, as our own tests: the fixture and test names are given where the
//! case comes from.

mod common;

use common::*;
use std::sync::{Arc, Mutex};
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;

use vsva_iommu::prq::PageResponse;
use vsva_iommu::{Access, Completion, DevTlbInvalidation, DevTlbSink, SourceId};
use vsva_vfio::{ConfigWidth, GroupId, PciFunctionSpec};
use zerocopy::IntoBytes;

fn ctx_with_device(vfio: &vsva_vfio::Vfio, dev: u8) -> (IommufdCtx, u32) {
    let ctx = IommufdCtx::open(vfio, process(1)).unwrap();
    let id = bind(&ctx, dev);
    (ctx, id)
}

fn map(ctx: &IommufdCtx, m: IommuIoasMap) -> Result<u64, Errno> {
    let mut buf = arg(&m, 0);
    call(ctx, IOMMU_IOAS_MAP, &mut buf)?;
    Ok(back::<IommuIoasMap>(&buf).iova)
}

/// `iommufd.cmd_length`: every ioctl accepts a larger struct with a zero tail and refuses a
/// non-zero tail with `E2BIG`, and a size below its minimum with `EINVAL`.
#[test]
fn cmd_length() {
    let vfio = host();
    function(&vfio, 3);
    let (ctx, _) = ctx_with_device(&vfio, 3);
    let cmds = [
        (IOMMU_DESTROY, 8, 8),
        (IOMMU_IOAS_ALLOC, 12, 12),
        (IOMMU_IOAS_ALLOW_IOVAS, 24, 24),
        (IOMMU_IOAS_COPY, 40, 40),
        (IOMMU_IOAS_IOVA_RANGES, 32, 32),
        (IOMMU_IOAS_MAP, 40, 40),
        (IOMMU_IOAS_UNMAP, 24, 24),
        (IOMMU_HWPT_ALLOC, 24, 48),
        (IOMMU_GET_HW_INFO, 28, 40),
        (IOMMU_HWPT_INVALIDATE, 32, 32),
        (IOMMU_FAULT_QUEUE_ALLOC, 16, 16),
    ];
    for (cmd, min, size) in cmds {
        let mut small = vec![0u8; size];
        small[..4].copy_from_slice(&(min as u32 - 1).to_le_bytes());
        assert_eq!(
            call(&ctx, cmd, &mut small),
            Err(Errno::EINVAL),
            "{cmd:#x} small"
        );
        let mut big = vec![0u8; size + 8];
        big[..4].copy_from_slice(&(size as u32 + 8).to_le_bytes());
        big[size + 3] = 1;
        assert_eq!(
            call(&ctx, cmd, &mut big),
            Err(Errno::E2BIG),
            "{cmd:#x} tail"
        );
    }
    // A zero tail: a larger IOAS_ALLOC works as the known one.
    let mut big = vec![0u8; 20];
    big[..4].copy_from_slice(&20u32.to_le_bytes());
    assert_eq!(call(&ctx, IOMMU_IOAS_ALLOC, &mut big), Ok(()));
    assert_eq!(back::<IommuIoasAlloc>(&big).out_ioas_id, 2);
}

/// `iommufd_ioas.ioas_area_destroy`, `unmap_fully_contained_areas`, `area_auto_iova`.
#[test]
fn ioas_areas() {
    let vfio = host();
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let ioas = ioas_alloc(&ctx);
    for i in 0..3 {
        map(
            &ctx,
            map_cmd(
                ioas,
                GUEST_HPA + i * 0x10000,
                0x100000 + i * 0x10000,
                0x10000,
            ),
        )
        .unwrap();
    }
    // Splitting is refused; a range holding two whole areas unmaps both.
    assert_eq!(unmap(&ctx, ioas, 0x100000, 0x8000), Err(Errno::ENOENT));
    assert_eq!(unmap(&ctx, ioas, 0xf0000, 0x30000), Ok(0x20000));
    // Automatic IOVAs stay inside the allowed ranges.
    allow_iovas(&ctx, ioas, 0x4000_0000, 0x4fff_ffff).unwrap();
    let auto = IommuIoasMap {
        flags: IOMMU_IOAS_MAP_READABLE,
        ..map_cmd(ioas, GUEST_HPA, 0, 0x2000)
    };
    assert_eq!(map(&ctx, auto), Ok(0x4000_0000));
    assert_eq!(map(&ctx, auto), Ok(0x4000_2000));
    // An IOAS with mappings is destroyed when nothing holds it.
    let mut d = arg(&IommuDestroy { size: 8, id: ioas }, 0);
    assert_eq!(call(&ctx, IOMMU_DESTROY, &mut d), Ok(()));
    assert_eq!(call(&ctx, IOMMU_DESTROY, &mut d), Err(Errno::ENOENT));
}

/// `iommufd_ioas.unmap_all` and `iova_ranges`.
#[test]
fn unmap_all_and_iova_ranges() {
    let vfio = host();
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let ioas = ioas_alloc(&ctx);
    map(&ctx, map_cmd(ioas, GUEST_HPA, 0, 0x4000)).unwrap();
    map(&ctx, map_cmd(ioas, GUEST_HPA, 1 << 30, 0x2000)).unwrap();
    assert_eq!(unmap(&ctx, ioas, 0, u64::MAX), Ok(0x6000));
    assert_eq!(
        unmap(&ctx, ioas, 0, u64::MAX),
        Ok(0),
        "unmapping nothing of all is fine"
    );

    let mut r = arg(
        &IommuIoasIovaRanges {
            ioas_id: ioas,
            ..Default::default()
        },
        16,
    );
    assert_eq!(
        call(&ctx, IOMMU_IOAS_IOVA_RANGES, &mut r),
        Err(Errno::EMSGSIZE)
    );
    assert_eq!(back::<IommuIoasIovaRanges>(&r).num_iovas, 1);
    let mut r = arg(
        &IommuIoasIovaRanges {
            ioas_id: ioas,
            num_iovas: 1,
            allowed_iovas: 32,
            ..Default::default()
        },
        16,
    );
    call(&ctx, IOMMU_IOAS_IOVA_RANGES, &mut r).unwrap();
    let out = back::<IommuIoasIovaRanges>(&r);
    assert_eq!((out.num_iovas, out.out_iova_alignment), (1, 4096));
    let range = back::<IommuIovaRange>(&r[32..]);
    assert_eq!((range.start, range.last), (0, (1 << 48) - 1));
}

/// `iommufd_ioas.copy_area`: a copy maps the same memory, a device on the destination sees it.
#[test]
fn copy_area() {
    let vfio = host();
    let dev = function(&vfio, 3);
    let (ctx, _) = ctx_with_device(&vfio, 3);
    let src = ioas_alloc(&ctx);
    let dst = ioas_alloc(&ctx);
    map(&ctx, map_cmd(src, GUEST_HPA + 0x10000, 0x8000, 0x2000)).unwrap();
    let mut c = arg(
        &IommuIoasCopy {
            flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
            dst_ioas_id: dst,
            src_ioas_id: src,
            length: 0x1000,
            dst_iova: 0x40000,
            src_iova: 0x9000,
            ..Default::default()
        },
        0,
    );
    call(&ctx, IOMMU_IOAS_COPY, &mut c).unwrap();
    vfio.iommu()
        .memory()
        .write(GUEST_HPA + 0x11000, b"copied")
        .unwrap();
    attach(&ctx, 3, dst, None).unwrap();
    let mut got = [0u8; 6];
    dev.dma_read(None, 0x40000, &mut got).unwrap();
    assert_eq!(&got, b"copied");
    assert!(
        dev.dma_write(None, 0x40000, b"x").is_err(),
        "the copy is read-only"
    );
    // Unmapping flushes the IOTLB the read above filled: the next read faults.
    assert_eq!(unmap(&ctx, dst, 0x40000, 0x1000), Ok(0x1000));
    assert!(
        dev.dma_read(None, 0x40000, &mut got).is_err(),
        "no stale translation"
    );
}

/// `iommufd_ioas.unmap_fully_contained_areas` with a device: an unmap of several areas
/// flushes what the device's reads cached in all of them, and an unmap of one whole area
/// flushes it too.
#[test]
fn unmapping_areas_flushes_them() {
    let vfio = host();
    let dev = function(&vfio, 3);
    let (ctx, _) = ctx_with_device(&vfio, 3);
    let ioas = ioas_alloc(&ctx);
    for i in 0..3 {
        map(
            &ctx,
            map_cmd(ioas, GUEST_HPA + i * 0x1000, i * 0x1000, 0x1000),
        )
        .unwrap();
    }
    attach(&ctx, 3, ioas, None).unwrap();
    let mut got = [0u8; 1];
    for i in 0..3 {
        dev.dma_read(None, i * 0x1000, &mut got).unwrap();
    }
    // Two areas in one unmap (not one area exactly), then the last one alone.
    assert_eq!(unmap(&ctx, ioas, 0, 0x2000), Ok(0x2000));
    assert_eq!(unmap(&ctx, ioas, 0x2000, 0x1000), Ok(0x1000));
    for i in 0..3 {
        assert!(
            dev.dma_read(None, i * 0x1000, &mut got).is_err(),
            "no stale translation of area {i}"
        );
    }
}

/// A device-TLB sink that records what reaches it and completes everything.
#[derive(Default)]
struct Recorder(Mutex<Vec<DevTlbInvalidation>>);

impl DevTlbSink for Recorder {
    fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)> {
        self.0.lock().unwrap().extend_from_slice(batch);
        batch
            .iter()
            .map(|i| (i.source_id, Completion::Done))
            .collect()
    }

    fn page_response(&self, _: PageResponse) {}
}

/// An unmap reaches the device TLB of an ATS device attached to the IOAS (what the device
/// cached through ATS is invalidated), and an unmap of another IOAS does not.
#[test]
fn unmapping_reaches_the_device_tlb_of_an_ats_device() {
    let vfio = host();
    let sink = Arc::new(Recorder::default());
    vfio.iommu().set_devtlb_sink(Some(sink.clone()));
    let spec = PciFunctionSpec {
        ats: true,
        ..PciFunctionSpec::new(sid(5), Some(GroupId(5)))
    };
    let f = vfio.add_pci_function(spec).unwrap();
    // ATS Enable (the ATS capability follows the 8-byte PASID one at 0x100).
    f.config_write(0x108 + 6, ConfigWidth::Word, 0x8000)
        .unwrap();
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    bind(&ctx, 5);
    let ioas = ioas_alloc(&ctx);
    let other = ioas_alloc(&ctx);
    attach(&ctx, 5, ioas, None).unwrap();
    let sent = || sink.0.lock().unwrap().len();
    map(&ctx, map_cmd(ioas, GUEST_HPA, 0, 0x1000)).unwrap();
    f.ats_translate(None, 0, Access::READ).unwrap();
    assert_eq!(unmap(&ctx, ioas, 0, 0x1000), Ok(0x1000));
    assert_eq!(sent(), 1, "the device's cached translation is invalidated");
    assert_eq!(sink.0.lock().unwrap()[0].source_id, sid(5));
    // An unmap of another IOAS does not reach it.
    map(&ctx, map_cmd(ioas, GUEST_HPA, 0, 0x1000)).unwrap();
    f.ats_translate(None, 0, Access::READ).unwrap();
    map(&ctx, map_cmd(other, GUEST_HPA, 0, 0x1000)).unwrap();
    assert_eq!(unmap(&ctx, other, 0, 0x1000), Ok(0x1000));
    assert_eq!(sent(), 1, "nothing for another IOAS's unmap");
}

/// `iommufd_ioas.alloc_hwpt_nested` (VT-d flavour): parents, destroy order, empty arrays.
#[test]
fn hwpt_nested_lifetimes() {
    let vfio = host();
    function(&vfio, 3);
    let (ctx, dev) = ctx_with_device(&vfio, 3);
    let ioas = ioas_alloc(&ctx);
    let plain = hwpt_paging(&ctx, dev, ioas, 0).unwrap();
    let parent = hwpt_paging(&ctx, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    assert_eq!(hwpt_nested(&ctx, dev, plain, MB, 0, 0), Err(Errno::EINVAL));
    let n1 = hwpt_nested(&ctx, dev, parent, MB, 0, 0).unwrap();
    let n2 = hwpt_nested(&ctx, dev, parent, 2 * MB, 0, 0).unwrap();
    let destroy = |id| {
        call(
            &ctx,
            IOMMU_DESTROY,
            &mut arg(&IommuDestroy { size: 8, id }, 0),
        )
    };
    assert_eq!(destroy(parent), Err(Errno::EBUSY));
    // An empty array checks the data type only.
    assert_eq!(invalidate(&ctx, n1, &[]), (Ok(()), 0));
    assert_eq!(destroy(n1), Ok(()));
    assert_eq!(destroy(parent), Err(Errno::EBUSY));
    assert_eq!(destroy(n2), Ok(()));
    assert_eq!(destroy(parent), Ok(()));
    assert_eq!(destroy(plain), Ok(()));
    assert_eq!(destroy(ioas), Ok(()));
}

/// `iommufd_device.get_hw_info`: a short buffer gets a prefix, a long one trailing zeroes,
/// `data_len` says what the IOMMU has.
#[test]
fn get_hw_info() {
    let vfio = host();
    function(&vfio, 3);
    let (ctx, dev) = ctx_with_device(&vfio, 3);
    for room in [0u32, 8, 24, 40] {
        let mut buf = arg(
            &IommuHwInfo {
                dev_id: dev,
                data_len: room,
                data_uptr: if room == 0 { 0 } else { 40 },
                ..Default::default()
            },
            40,
        );
        buf[40..].fill(0xee);
        call(&ctx, IOMMU_GET_HW_INFO, &mut buf).unwrap();
        let out = back::<IommuHwInfo>(&buf);
        assert_eq!(out.data_len, 24);
        assert_eq!(out.out_data_type, IOMMU_HW_INFO_TYPE_INTEL_VTD);
        assert_eq!(out.out_max_pasid_log2, 20);
        let full = IommuHwInfoVtd {
            flags: 0,
            reserved: 0,
            cap_reg: vfio.iommu().cap(),
            ecap_reg: vfio.iommu().ecap(),
        };
        let room = room as usize;
        let n = room.min(24);
        assert_eq!(&buf[40..40 + n], &full.as_bytes()[..n], "room {room}");
        assert!(
            buf[40 + n..40 + room].iter().all(|&b| b == 0),
            "zeroed past the data"
        );
        assert!(
            buf[40 + room..].iter().all(|&b| b == 0xee),
            "nothing past the room"
        );
    }
}

/// `iommufd_device_pasid` (attach, second attach — a replace with the same HWPT —, detach,
/// attach again) and the automatic HWPT of an IOAS attach shared by two devices.
#[test]
fn pasid_attach_detach() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let (ctx, dev) = ctx_with_device(&vfio, 3);
    bind(&ctx, 4);
    let ioas = ioas_alloc(&ctx);
    let pasid = ctx.alloc_pasid(1, 10).unwrap();
    let paging = hwpt_paging(&ctx, dev, ioas, IOMMU_HWPT_ALLOC_PASID).unwrap();
    assert_eq!(attach(&ctx, 3, paging, Some(pasid)), Ok(paging));
    assert_eq!(
        attach(&ctx, 3, paging, Some(pasid)),
        Ok(paging),
        "a replace with the attached HWPT"
    );
    ctx.detach(dev, Some(pasid)).unwrap();
    ctx.detach(dev, Some(pasid)).unwrap();
    assert_eq!(attach(&ctx, 3, paging, Some(pasid)), Ok(paging));
    // An IOAS's automatic HWPT is not PASID-capable: not beside an attached PASID.
    assert_eq!(attach(&ctx, 3, ioas, None), Err(Errno::EINVAL));
    ctx.detach(dev, Some(pasid)).unwrap();
    let auto = attach(&ctx, 3, ioas, None).unwrap();
    assert_eq!(
        attach(&ctx, 4, ioas, None),
        Ok(auto),
        "one automatic HWPT per IOAS"
    );
}
