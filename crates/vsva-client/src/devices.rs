//! Guest memory registration and the device side: DMA through the IOMMU and PCI
//! configuration space.

use std::os::fd::BorrowedFd;

use vsva_proto::{
    DeviceConfig, DeviceDma, Errno, FaultRecord, Kind, Request, CONFIG_WRITE, DMA_EXEC, DMA_PASID,
    DMA_PRIV, DMA_WRITE,
};

use vsva_uapi::pci_regs::{
    PCI_CFG_SPACE_SIZE, PCI_EXT_CAP_ID_PASID, PCI_PASID_CAP, PCI_PASID_CTRL, PCI_PASID_CTRL_ENABLE,
    PCI_PASID_CTRL_EXEC, PCI_PASID_CTRL_PRIV,
};

use crate::connection::Client;
use crate::containers::ContainerHandle;
use crate::error::{check, ClientError};
use crate::memory::GuestMemory;

/// A DMA direction and privilege for [`Client::dma`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DmaAccess {
    /// Write (otherwise read).
    pub write: bool,
    /// Instruction fetch.
    pub execute: bool,
    /// Supervisor request.
    pub privileged: bool,
}

/// Where the daemon's devices place the PASID extended capability: the first extended
/// capability.
const PASID_CAP: u32 = PCI_CFG_SPACE_SIZE as u32;

impl Client {
    /// Registers guest memory: `fd` (a memfd sealed with `F_SEAL_SHRINK`, see
    /// [`GuestMemory`]) from `offset`, `size` bytes, named `addr` by this process in MAP_DMA.
    /// Returns the region id.
    pub fn register_memory(
        &mut self,
        fd: BorrowedFd<'_>,
        addr: u64,
        size: u64,
        offset: u64,
    ) -> Result<u32, ClientError> {
        let reply = self.call_with_fds(
            Request::MemRegister {
                addr,
                size,
                offset,
                flags: 0,
            },
            &[fd],
        )?;
        Ok(reply.result as u32)
    }

    /// Registers a [`GuestMemory`] at its guest-physical base and maps it 1:1 (iova = gpa)
    /// into the stage 2 of container `handle`: after this, the IOMMU reaches every guest page.
    pub fn attach_guest_memory(
        &mut self,
        handle: ContainerHandle,
        mem: &GuestMemory,
    ) -> Result<u32, ClientError> {
        let region = self.register_memory(mem.fd(), mem.base(), mem.size(), 0)?;
        self.map_dma(handle, mem.base(), mem.base(), mem.size(), true)?;
        Ok(region)
    }

    /// Unregisters a memory region (MAP_DMA can no longer name it).
    pub fn unregister_memory(&mut self, region: u32) -> Result<(), ClientError> {
        self.call(Request::MemUnregister { region }).map(drop)
    }

    /// A device DMA through the IOMMU: `len` bytes read at `addr` (or `data` written), from
    /// requester `source_id`, with `pasid` if given. A translation fault is
    /// [`ClientError::DmaFault`] with the fault record.
    pub fn dma(
        &mut self,
        source_id: u16,
        pasid: Option<u32>,
        addr: u64,
        access: DmaAccess,
        len: u32,
        data: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let flags = dma_flags(pasid, access.write, access.execute, access.privileged);
        let req = Request::DeviceDma(DeviceDma {
            source_id,
            flags,
            pasid: pasid.unwrap_or(0),
            addr,
            len,
            data: if access.write {
                data.to_vec()
            } else {
                Vec::new()
            },
        });
        let id = self.send(&req, &[])?;
        let (got, reply) = self.recv(Kind::DeviceDma)?;
        if got != id {
            return Err(ClientError::Closed("reply out of order".into()));
        }
        if reply.result == -i64::from(Errno::EFAULT.raw()) && !reply.payload.is_empty() {
            if let Ok(f) = FaultRecord::decode(&reply.payload) {
                return Err(ClientError::DmaFault(f));
            }
        }
        Ok(check(Kind::DeviceDma, reply)?.payload)
    }

    /// Reads `width` (1, 2 or 4) bytes of device `source_id`'s configuration space at
    /// `offset`.
    pub fn config_read(
        &mut self,
        source_id: u16,
        offset: u32,
        width: u8,
    ) -> Result<u32, ClientError> {
        let r = self.call(Request::DeviceConfig(DeviceConfig {
            source_id,
            flags: 0,
            width,
            offset,
            value: 0,
        }))?;
        Ok(r.result as u32)
    }

    /// Writes `width` (1, 2 or 4) bytes of device `source_id`'s configuration space.
    pub fn config_write(
        &mut self,
        source_id: u16,
        offset: u32,
        width: u8,
        value: u32,
    ) -> Result<(), ClientError> {
        self.call(Request::DeviceConfig(DeviceConfig {
            source_id,
            flags: CONFIG_WRITE,
            width,
            offset,
            value,
        }))
        .map(drop)
    }

    /// Enables the device's PASID capability as a guest driver does (PASID Enable, plus
    /// Execute and Privileged Mode Enable where the capability offers them); returns the
    /// control word written. `ENODEV` if the device has no PASID capability.
    pub fn enable_pasid(&mut self, source_id: u16) -> Result<u16, ClientError> {
        let header = self.config_read(source_id, PASID_CAP, 4)?;
        if header & 0xffff != u32::from(PCI_EXT_CAP_ID_PASID) {
            return Err(ClientError::Daemon {
                kind: Kind::DeviceConfig,
                errno: Errno::ENODEV,
                message: format!("device {source_id:#06x} has no PASID capability at {PASID_CAP:#x} (header {header:#010x})"),
            });
        }
        let cap = self.config_read(source_id, PASID_CAP + u32::from(PCI_PASID_CAP), 2)? as u16;
        // The Execute and Privileged Mode bits sit at the same places in both registers.
        let ctrl = PCI_PASID_CTRL_ENABLE | (cap & (PCI_PASID_CTRL_EXEC | PCI_PASID_CTRL_PRIV));
        self.config_write(
            source_id,
            PASID_CAP + u32::from(PCI_PASID_CTRL),
            2,
            ctrl.into(),
        )?;
        Ok(ctrl)
    }

    /// The offset of device `source_id`'s extended capability `id` in its configuration
    /// space (the list from 0x100), if it has one.
    pub fn find_ext_capability(
        &mut self,
        source_id: u16,
        id: u16,
    ) -> Result<Option<u32>, ClientError> {
        let mut off = 0x100;
        for _ in 0..64 {
            let header = self.config_read(source_id, off, 4)?;
            if header == 0 || header == u32::MAX {
                return Ok(None);
            }
            if header & 0xffff == u32::from(id) {
                return Ok(Some(off));
            }
            let next = header >> 20;
            if next < 0x100 || next == off {
                return Ok(None);
            }
            off = next;
        }
        Ok(None)
    }

    /// Sets ATS Enable in device `source_id`'s ATS capability (0x000F), as a guest driver
    /// does before the device may send translation requests. `ENODEV` without the capability.
    pub fn enable_ats(&mut self, source_id: u16) -> Result<(), ClientError> {
        let off = self.ext_capability_or_enodev(source_id, 0x000F, "ATS")?;
        let ctrl = self.config_read(source_id, off + 6, 2)?;
        self.config_write(source_id, off + 6, 2, ctrl | 0x8000)
    }

    /// Gives device `source_id` an allocation of `requests` outstanding page requests and
    /// sets PRI Enable in its PRI capability (0x0013). `ENODEV` without the capability.
    pub fn enable_pri(&mut self, source_id: u16, requests: u32) -> Result<(), ClientError> {
        let off = self.ext_capability_or_enodev(source_id, 0x0013, "PRI")?;
        self.config_write(source_id, off + 0x0c, 4, requests)?;
        let ctrl = self.config_read(source_id, off + 4, 2)?;
        self.config_write(source_id, off + 4, 2, ctrl | 1)
    }

    fn ext_capability_or_enodev(
        &mut self,
        source_id: u16,
        id: u16,
        name: &str,
    ) -> Result<u32, ClientError> {
        self.find_ext_capability(source_id, id)?
            .ok_or_else(|| ClientError::Daemon {
                kind: Kind::DeviceConfig,
                errno: Errno::ENODEV,
                message: format!("device {source_id:#06x} has no {name} capability"),
            })
    }

    /// A user read of `len` bytes at `addr`.
    pub fn dma_read(
        &mut self,
        source_id: u16,
        pasid: Option<u32>,
        addr: u64,
        len: u32,
    ) -> Result<Vec<u8>, ClientError> {
        self.dma(source_id, pasid, addr, DmaAccess::default(), len, &[])
    }

    /// A user write of `data` at `addr`.
    pub fn dma_write(
        &mut self,
        source_id: u16,
        pasid: Option<u32>,
        addr: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let len = u32::try_from(data.len()).map_err(|_| ClientError::Daemon {
            kind: Kind::DeviceDma,
            errno: Errno::E2BIG,
            message: format!("data of {} bytes is too long for one DMA", data.len()),
        })?;
        self.dma(
            source_id,
            pasid,
            addr,
            DmaAccess {
                write: true,
                ..DmaAccess::default()
            },
            len,
            data,
        )
        .map(drop)
    }
}

/// The `DMA_*` flags of a request with these properties (`DEVICE_DMA`, `ATS_TRANSLATE`).
pub(crate) fn dma_flags(pasid: Option<u32>, write: bool, execute: bool, privileged: bool) -> u16 {
    [
        (pasid.is_some(), DMA_PASID),
        (write, DMA_WRITE),
        (execute, DMA_EXEC),
        (privileged, DMA_PRIV),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .fold(0, |f, (_, bit)| f | bit)
}
