//! Fixtures of the integration tests: a host (memory, IOMMU, VFIO layer), bound devices,
//! argument builders for the byte-level entry, and a guest page-table builder.

#![allow(dead_code)]

use std::sync::Arc;

use vsva_iommu::paging::{fl_map, TableStore, RW, US};
use vsva_iommu::{GuestTableStore, HostMemory, Iommu, IommuConfig, SourceId};
use vsva_iommufd::IommufdCtx;
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;
use vsva_vfio::{
    ConfigWidth, GroupId, PciFunction, PciFunctionSpec, ProcessToken, Vfio, VfioConfig,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

pub const MB: u64 = 1 << 20;
pub const HOST_SIZE: u64 = 64 * MB;
/// Host memory backing guest RAM: [16 MiB, 32 MiB) = guest-physical [0, 16 MiB).
pub const GUEST_HPA: u64 = 16 * MB;
pub const GUEST_SIZE: u64 = 16 * MB;
pub const POOL: u64 = 48 * MB;
/// PASID control register of a function (capability at 0x100, control at +6).
pub const PASID_CTRL: u32 = 0x106;

pub fn host() -> Vfio {
    host_with(VfioConfig::default())
}

/// The host of [`host`] with the VFIO layer configured by `config`.
pub fn host_with(config: VfioConfig) -> Vfio {
    let mem = HostMemory::anonymous(&[(0, HOST_SIZE as usize)]).unwrap();
    let cfg = IommuConfig {
        iotlb_entries: 1024,
        ..IommuConfig::default()
    };
    let iommu = Arc::new(Iommu::new(cfg, mem, POOL, HOST_SIZE - POOL).unwrap());
    Vfio::new(iommu, config).unwrap()
}

pub fn process(n: u32) -> ProcessToken {
    ProcessToken::new(2000 + n, 7_000_000 + u64::from(n))
}

pub fn sid(dev: u8) -> SourceId {
    SourceId::new(0, dev, 0)
}

/// Registers function 00:`dev`.0 in group `dev`, with PASID enabled by its driver.
pub fn function(vfio: &Vfio, dev: u8) -> PciFunction {
    let f = vfio
        .add_pci_function(PciFunctionSpec::new(
            sid(dev),
            Some(GroupId(u32::from(dev))),
        ))
        .unwrap();
    f.config_write(PASID_CTRL, ConfigWidth::Word, 1).unwrap();
    f
}

/// Runs an ioctl, keeping only the errno of a failure.
pub fn call(ctx: &IommufdCtx, cmd: u32, buf: &mut [u8]) -> Result<(), Errno> {
    ctx.ioctl(cmd, buf).map_err(|e| e.errno())
}

/// The bytes of `v` with its size word set to its own size, and `extra` bytes of room after.
pub fn arg<T: IntoBytes + Immutable>(v: &T, extra: usize) -> Vec<u8> {
    let mut buf = v.as_bytes().to_vec();
    let size = buf.len() as u32;
    buf[..4].copy_from_slice(&size.to_le_bytes());
    buf.resize(buf.len() + extra, 0);
    buf
}

/// Reads a `T` back from the start of `buf`.
pub fn back<T: FromBytes>(buf: &[u8]) -> T {
    T::read_from_prefix(buf).unwrap().0
}

/// `IOMMU_IOAS_UNMAP` of `[iova, iova + length)`; returns the bytes unmapped.
pub fn unmap(ctx: &IommufdCtx, ioas: u32, iova: u64, length: u64) -> Result<u64, Errno> {
    let mut buf = arg(
        &IommuIoasUnmap {
            ioas_id: ioas,
            iova,
            length,
            ..Default::default()
        },
        0,
    );
    call(ctx, IOMMU_IOAS_UNMAP, &mut buf)?;
    Ok(back::<IommuIoasUnmap>(&buf).length)
}

/// `IOMMU_IOAS_ALLOW_IOVAS` of `ioas` limited to the one range `[start, last]`.
pub fn allow_iovas(ctx: &IommufdCtx, ioas: u32, start: u64, last: u64) -> Result<(), Errno> {
    let mut buf = arg(
        &IommuIoasAllowIovas {
            ioas_id: ioas,
            num_iovas: 1,
            allowed_iovas: 24,
            ..Default::default()
        },
        0,
    );
    buf.extend_from_slice(IommuIovaRange { start, last }.as_bytes());
    call(ctx, IOMMU_IOAS_ALLOW_IOVAS, &mut buf)
}

/// The page-request groups answered to device `dev` since the last look, by group.
pub fn answered(iommu: &Iommu, dev: u8) -> Vec<(u16, vsva_iommu::ResponseCode)> {
    let mut groups: Vec<_> = iommu
        .take_page_responses(sid(dev))
        .iter()
        .map(|r| (r.group, r.code))
        .collect();
    groups.sort_by_key(|g| g.0);
    groups
}

pub fn ioas_alloc(ctx: &IommufdCtx) -> u32 {
    let mut buf = arg(&IommuIoasAlloc::default(), 0);
    call(ctx, IOMMU_IOAS_ALLOC, &mut buf).unwrap();
    back::<IommuIoasAlloc>(&buf).out_ioas_id
}

pub fn map_cmd(ioas: u32, user_va: u64, iova: u64, length: u64) -> IommuIoasMap {
    IommuIoasMap {
        flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
        ioas_id: ioas,
        user_va,
        length,
        iova,
        ..Default::default()
    }
}

/// Maps all of guest RAM (GPA 0 → `GUEST_HPA`) in `ioas`.
pub fn map_guest_ram(ctx: &IommufdCtx, ioas: u32) {
    let mut buf = arg(&map_cmd(ioas, GUEST_HPA, 0, GUEST_SIZE), 0);
    call(ctx, IOMMU_IOAS_MAP, &mut buf).unwrap();
}

/// Binds function `dev` to `ctx` through the device ioctl; returns its device id.
pub fn bind(ctx: &IommufdCtx, dev: u8) -> u32 {
    let mut buf = VfioDeviceBindIommufd {
        argsz: 16,
        flags: 0,
        iommufd: ctx.fd(),
        out_devid: 0,
    }
    .as_bytes()
    .to_vec();
    ctx.device_ioctl(sid(dev), VFIO_DEVICE_BIND_IOMMUFD, &mut buf)
        .unwrap();
    back::<VfioDeviceBindIommufd>(&buf).out_devid
}

/// `IOMMU_HWPT_ALLOC` of a paging HWPT over `ioas` with `flags`.
pub fn hwpt_paging(ctx: &IommufdCtx, dev_id: u32, ioas: u32, flags: u32) -> Result<u32, Errno> {
    let cmd = IommuHwptAlloc {
        flags,
        dev_id,
        pt_id: ioas,
        ..Default::default()
    };
    let mut buf = arg(&cmd, 0);
    call(ctx, IOMMU_HWPT_ALLOC, &mut buf)?;
    Ok(back::<IommuHwptAlloc>(&buf).out_hwpt_id)
}

/// The `IOMMU_HWPT_ALLOC` argument of a nested HWPT whose VT-d data follows the struct.
pub fn nested_buf(
    dev_id: u32,
    parent: u32,
    s1: &IommuHwptVtdS1,
    flags: u32,
    fault_id: u32,
) -> Vec<u8> {
    let cmd = IommuHwptAlloc {
        flags,
        dev_id,
        pt_id: parent,
        data_type: IOMMU_HWPT_DATA_VTD_S1,
        data_len: 24,
        data_uptr: 48,
        fault_id,
        ..Default::default()
    };
    let mut buf = arg(&cmd, 0);
    buf.extend_from_slice(s1.as_bytes());
    buf
}

pub fn s1(pgtbl_addr: u64) -> IommuHwptVtdS1 {
    IommuHwptVtdS1 {
        flags: 0,
        pgtbl_addr,
        addr_width: 48,
        reserved: 0,
    }
}

pub fn hwpt_nested(
    ctx: &IommufdCtx,
    dev_id: u32,
    parent: u32,
    root: u64,
    flags: u32,
    fault_id: u32,
) -> Result<u32, Errno> {
    let mut buf = nested_buf(dev_id, parent, &s1(root), flags, fault_id);
    call(ctx, IOMMU_HWPT_ALLOC, &mut buf)?;
    Ok(back::<IommuHwptAlloc>(&buf).out_hwpt_id)
}

pub fn fault_alloc(ctx: &IommufdCtx) -> u32 {
    let mut buf = arg(&IommuFaultAlloc::default(), 0);
    call(ctx, IOMMU_FAULT_QUEUE_ALLOC, &mut buf).unwrap();
    back::<IommuFaultAlloc>(&buf).out_fault_id
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` of function `dev`, optionally for a PASID; returns the
/// HWPT attached.
pub fn attach(ctx: &IommufdCtx, dev: u8, pt_id: u32, pasid: Option<u32>) -> Result<u32, Errno> {
    let mut buf = VfioDeviceAttachIommufdPt {
        argsz: 16,
        flags: if pasid.is_some() {
            VFIO_DEVICE_ATTACH_PASID
        } else {
            0
        },
        pt_id,
        pasid: pasid.unwrap_or(0),
    }
    .as_bytes()
    .to_vec();
    ctx.device_ioctl(sid(dev), VFIO_DEVICE_ATTACH_IOMMUFD_PT, &mut buf)
        .map_err(|e| e.errno())?;
    Ok(back::<VfioDeviceAttachIommufdPt>(&buf).pt_id)
}

/// `IOMMU_HWPT_INVALIDATE` with `entries` after the struct; returns the errno (if any) and
/// the entry count written back.
pub fn invalidate(
    ctx: &IommufdCtx,
    hwpt: u32,
    entries: &[IommuHwptVtdS1Invalidate],
) -> (Result<(), Errno>, u32) {
    let cmd = IommuHwptInvalidate {
        hwpt_id: hwpt,
        data_uptr: 32,
        data_type: IOMMU_HWPT_INVALIDATE_DATA_VTD_S1,
        entry_len: 24,
        entry_num: entries.len() as u32,
        ..Default::default()
    };
    let mut buf = arg(&cmd, 0);
    buf.extend_from_slice(entries.as_bytes());
    let r = call(ctx, IOMMU_HWPT_INVALIDATE, &mut buf);
    (r, back::<IommuHwptInvalidate>(&buf).entry_num)
}

/// A guest's page tables in its RAM (GPA `x` at host `GUEST_HPA + x`), from GPA 1 MiB up.
pub struct Guest<'a> {
    pub iommu: &'a Iommu,
    pub tables: GuestTableStore<'a>,
}

impl<'a> Guest<'a> {
    pub fn new(iommu: &'a Iommu) -> Self {
        Guest {
            iommu,
            tables: GuestTableStore::new(iommu.memory(), GUEST_HPA, MB),
        }
    }

    pub fn new_root(&mut self) -> u64 {
        self.tables.alloc_table().unwrap()
    }

    /// Maps 4 KiB `va` → `gpa` (user, read/write).
    pub fn map(&mut self, root: u64, va: u64, gpa: u64) {
        fl_map(&mut self.tables, root, 4, va, gpa, 0x1000, RW | US).unwrap();
    }

    /// Rewrites the leaf of `va` to `gpa`, without any flush.
    pub fn remap(&mut self, root: u64, va: u64, gpa: u64) {
        use vsva_iommu::paging::{level_index, ADDR_MASK, P};
        let mut table = root;
        for level in (2..=4).rev() {
            table = self.tables.read(table + level_index(va, level) * 8) & ADDR_MASK;
        }
        self.tables
            .write(table + level_index(va, 1) * 8, gpa | P | RW | US);
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) {
        self.iommu.memory().read(GUEST_HPA + gpa, buf).unwrap();
    }
}
