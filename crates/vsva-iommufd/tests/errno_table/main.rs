//! The errno table: per ioctl, one malformed field per case, each row naming the Linux
//! function (and file) whose check it follows. Every row runs against the same fixture and
//! must leave the context's objects as they were.
//!
//! The fixture and the runners are here; the rows are in [`ioas`] (the argument reader,
//! IOMMU_DESTROY and the IOAS ioctls), [`ioas_limits`] (the IOAS ioctls at the top of the
//! range), [`hwpt`] (HWPT_ALLOC, HWPT_INVALIDATE, GET_HW_INFO,
//! FAULT_QUEUE_ALLOC), [`device`] (the device ioctls), [`msi_window`] (what a device's
//! reserved interrupt window refuses, and the attaches it refuses) and [`pasid_compat`] (the
//! attaches that would put PASIDs beside requests without PASID on an HWPT not allocated
//! with `IOMMU_HWPT_ALLOC_PASID`).

#[path = "../common/mod.rs"]
mod common;

mod device;
mod hwpt;
mod hwpt_state;
mod ioas;
mod ioas_limits;
mod ioas_state;
mod msi_window;
mod pasid_compat;

use common::*;
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use zerocopy::IntoBytes;

/// The fixture: device 3 bound (id `dev`), an IOAS with guest RAM, a nest-parent HWPT, a
/// nested HWPT on it, a fault queue, and a PASID of the process.
struct Fx {
    _vfio: vsva_vfio::Vfio,
    ctx: IommufdCtx,
    dev: u32,
    ioas: u32,
    parent: u32,
    nested: u32,
    fault: u32,
}

fn fixture() -> Fx {
    let vfio = host();
    function(&vfio, 3);
    let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
    let dev = bind(&ctx, 3);
    let ioas = ioas_alloc(&ctx);
    map_guest_ram(&ctx, ioas);
    let parent = hwpt_paging(&ctx, dev, ioas, IOMMU_HWPT_ALLOC_NEST_PARENT).unwrap();
    let fault = fault_alloc(&ctx);
    let nested = hwpt_nested(&ctx, dev, parent, MB, IOMMU_HWPT_ALLOC_PASID, 0).unwrap();
    Fx {
        _vfio: vfio,
        ctx,
        dev,
        ioas,
        parent,
        nested,
        fault,
    }
}

/// The well-formed `IOMMU_IOAS_MAP` (a fixed IOVA over guest RAM), `IOMMU_IOAS_UNMAP` and
/// `IOMMU_IOAS_COPY` (fixed, readable) of the fixture's IOAS that the IOAS rows spoil one
/// field at a time.
fn ioas_cmds(f: &Fx) -> (IommuIoasMap, IommuIoasUnmap, IommuIoasCopy) {
    let map = map_cmd(f.ioas, GUEST_HPA, 64 * MB, 0x1000);
    let unmap = IommuIoasUnmap {
        ioas_id: f.ioas,
        iova: 0,
        length: 0x1000,
        ..Default::default()
    };
    let copy = IommuIoasCopy {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
        dst_ioas_id: f.ioas,
        src_ioas_id: f.ioas,
        length: 0x1000,
        dst_iova: 64 * MB,
        src_iova: 0,
        ..Default::default()
    };
    (map, unmap, copy)
}

/// One row: what is malformed, the Linux check it follows, the ioctl and its bytes, the
/// errno.
struct Row {
    what: &'static str,
    linux: &'static str,
    cmd: u32,
    buf: Vec<u8>,
    errno: Errno,
}

fn row(what: &'static str, linux: &'static str, cmd: u32, buf: Vec<u8>, errno: Errno) -> Row {
    Row {
        what,
        linux,
        cmd,
        buf,
        errno,
    }
}

fn with_size(mut buf: Vec<u8>, size: u32) -> Vec<u8> {
    buf[..4].copy_from_slice(&size.to_le_bytes());
    buf
}
/// The Linux file of the ioctl dispatcher, which every row's argument passes through.
const MAIN: &str = "iommufd_fops_ioctl (main.c)";

#[test]
fn every_row_answers_its_errno_and_changes_nothing() {
    let f = fixture();
    let before = f.ctx.objects();
    for mut r in ioas::rows(&f)
        .into_iter()
        .chain(ioas_limits::rows(&f))
        .chain(hwpt::rows(&f))
    {
        let got = f.ctx.ioctl(r.cmd, &mut r.buf).map_err(|e| e.errno());
        assert_eq!(got, Err(r.errno), "{} (follows {})", r.what, r.linux);
        assert_eq!(f.ctx.objects(), before, "{} changed the context", r.what);
    }
}
