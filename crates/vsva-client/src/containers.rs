//! Containers and their uAPI ioctls: open, attach, `SET_IOMMU`, `PASID_REQUEST`,
//! `NESTING_OP`, `MAP_DMA` / `UNMAP_DMA` and `GET_INFO`, each argument built from the
//! `vsva-uapi` types.

use vsva_proto::{Errno, Kind, Request};
use vsva_uapi::vfio::{
    DmaMap, DmaUnmap, InfoCapHeader, Type1Info, VFIO_CHECK_EXTENSION, VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_WRITE, VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_NESTING_OP,
    VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_TYPE1_INFO_CAP_NESTING, VFIO_IOMMU_UNMAP_DMA,
    VFIO_SET_IOMMU, VFIO_TYPE1_NESTING_IOMMU,
};
use vsva_uapi::{
    decode_nesting_info, BindRequest, CacheInvalidateRequest, NestingCapability, NestingOp,
    PasidRequestOp,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::connection::Client;
use crate::error::ClientError;

/// A container handle, valid on every connection of the process that opened it.
pub type ContainerHandle = u32;

impl Client {
    /// Opens a container; returns its handle.
    pub fn open_container(&mut self) -> Result<ContainerHandle, ClientError> {
        Ok(self.call(Request::OpenContainer)?.result as u32)
    }

    /// Closes a container.
    pub fn close_container(&mut self, handle: ContainerHandle) -> Result<(), ClientError> {
        self.call(Request::CloseContainer { handle }).map(drop)
    }

    /// Attaches IOMMU group `group` to a container (`VFIO_GROUP_SET_CONTAINER`).
    pub fn attach_group(&mut self, handle: ContainerHandle, group: u32) -> Result<(), ClientError> {
        self.call(Request::AttachGroup { handle, group }).map(drop)
    }

    /// Detaches IOMMU group `group` (`VFIO_GROUP_UNSET_CONTAINER`).
    pub fn detach_group(&mut self, handle: ContainerHandle, group: u32) -> Result<(), ClientError> {
        self.call(Request::DetachGroup { handle, group }).map(drop)
    }

    /// Runs a container ioctl with the uAPI argument bytes `arg`; bytes the daemon writes back
    /// (`GET_INFO`, `UNMAP_DMA`) are copied into `arg`. Returns the ioctl's result.
    pub fn ioctl(
        &mut self,
        handle: ContainerHandle,
        cmd: u32,
        arg: &mut [u8],
    ) -> Result<u64, ClientError> {
        let reply = self.call(Request::Ioctl {
            handle,
            cmd,
            arg: arg.to_vec(),
        })?;
        if reply.payload.len() == arg.len() {
            arg.copy_from_slice(&reply.payload);
        }
        Ok(reply.result as u64)
    }

    /// Runs a container ioctl whose argument is only read by the daemon: the encoded bytes
    /// travel as they are, with no copy kept for a write-back nobody reads.
    fn ioctl_in(
        &mut self,
        handle: ContainerHandle,
        cmd: u32,
        arg: Vec<u8>,
    ) -> Result<u64, ClientError> {
        Ok(self.call(Request::Ioctl { handle, cmd, arg })?.result as u64)
    }

    /// Opens a container, attaches `group` and makes it a nesting container
    /// (`VFIO_SET_IOMMU(VFIO_TYPE1_NESTING_IOMMU)`), ready for PASID requests.
    pub fn nesting_container(&mut self, group: u32) -> Result<ContainerHandle, ClientError> {
        let c = self.open_container()?;
        let r = self.attach_group(c, group).and_then(|()| {
            self.ioctl(
                c,
                VFIO_SET_IOMMU,
                &mut u64::from(VFIO_TYPE1_NESTING_IOMMU).to_le_bytes(),
            )
        });
        if let Err(e) = r {
            // Best effort: the handle is useless to the caller either way, and the daemon
            // closes it with the connection if this close fails too.
            let _ = self.close_container(c);
            return Err(e);
        }
        Ok(c)
    }

    /// Opens a nesting container on the first of `groups` that is free.
    pub fn nesting_container_any(
        &mut self,
        groups: impl IntoIterator<Item = u32>,
    ) -> Result<(ContainerHandle, u32), ClientError> {
        let mut last = None;
        for g in groups {
            match self.nesting_container(g) {
                Ok(c) => return Ok((c, g)),
                Err(
                    e @ ClientError::Daemon {
                        errno: Errno::EBUSY,
                        ..
                    },
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::Daemon {
            kind: Kind::AttachGroup,
            errno: Errno::ENODEV,
            message: "no group to try".into(),
        }))
    }

    /// `VFIO_CHECK_EXTENSION`.
    pub fn check_extension(
        &mut self,
        handle: ContainerHandle,
        ext: u32,
    ) -> Result<bool, ClientError> {
        Ok(self.ioctl(
            handle,
            VFIO_CHECK_EXTENSION,
            &mut u64::from(ext).to_le_bytes(),
        )? != 0)
    }

    /// `VFIO_IOMMU_PASID_REQUEST` ALLOC: the lowest free PASID in `[min, max]` the quota
    /// allows.
    pub fn pasid_alloc(
        &mut self,
        handle: ContainerHandle,
        min: u32,
        max: u32,
    ) -> Result<u32, ClientError> {
        let arg = PasidRequestOp::Alloc { min, max }.to_bytes();
        Ok(self.ioctl_in(handle, VFIO_IOMMU_PASID_REQUEST, arg)? as u32)
    }

    /// `VFIO_IOMMU_PASID_REQUEST` FREE of this process's PASIDs in `[min, max]`.
    pub fn pasid_free(
        &mut self,
        handle: ContainerHandle,
        min: u32,
        max: u32,
    ) -> Result<(), ClientError> {
        let arg = PasidRequestOp::Free { min, max }.to_bytes();
        self.ioctl_in(handle, VFIO_IOMMU_PASID_REQUEST, arg)
            .map(drop)
    }

    /// `VFIO_IOMMU_NESTING_OP` BIND_PGTBL.
    pub fn bind(&mut self, handle: ContainerHandle, req: &BindRequest) -> Result<(), ClientError> {
        let arg = NestingOp::Bind(*req).to_bytes();
        self.ioctl_in(handle, VFIO_IOMMU_NESTING_OP, arg).map(drop)
    }

    /// `VFIO_IOMMU_NESTING_OP` UNBIND_PGTBL of `hpasid`.
    pub fn unbind(
        &mut self,
        handle: ContainerHandle,
        req: &BindRequest,
    ) -> Result<(), ClientError> {
        let arg = NestingOp::Unbind(*req).to_bytes();
        self.ioctl_in(handle, VFIO_IOMMU_NESTING_OP, arg).map(drop)
    }

    /// `VFIO_IOMMU_NESTING_OP` CACHE_INVLD.
    pub fn invalidate(
        &mut self,
        handle: ContainerHandle,
        req: &CacheInvalidateRequest,
    ) -> Result<(), ClientError> {
        let arg = NestingOp::Invalidate(*req).to_bytes();
        self.ioctl_in(handle, VFIO_IOMMU_NESTING_OP, arg).map(drop)
    }

    /// `VFIO_IOMMU_MAP_DMA`: maps `[iova, iova + size)` of the container's stage 2 to this
    /// process's registered memory at `vaddr` (an address inside a
    /// [`register_memory`](Self::register_memory) region).
    pub fn map_dma(
        &mut self,
        handle: ContainerHandle,
        vaddr: u64,
        iova: u64,
        size: u64,
        write: bool,
    ) -> Result<(), ClientError> {
        let map = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: VFIO_DMA_MAP_FLAG_READ | if write { VFIO_DMA_MAP_FLAG_WRITE } else { 0 },
            vaddr,
            iova,
            size,
        };
        self.ioctl_in(handle, VFIO_IOMMU_MAP_DMA, map.as_bytes().to_vec())
            .map(drop)
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`; returns the bytes unmapped.
    pub fn unmap_dma(
        &mut self,
        handle: ContainerHandle,
        iova: u64,
        size: u64,
    ) -> Result<u64, ClientError> {
        let mut unmap = DmaUnmap {
            argsz: size_of::<DmaUnmap>() as u32,
            flags: 0,
            iova,
            size,
        };
        self.ioctl(handle, VFIO_IOMMU_UNMAP_DMA, unmap.as_mut_bytes())?;
        // The daemon writes back how much it unmapped in `size`.
        Ok(unmap.size)
    }

    /// `VFIO_IOMMU_GET_INFO`: the nesting capability of a nesting container (what a vIOMMU
    /// reports to its guest), if the chain has one.
    pub fn nesting_info(
        &mut self,
        handle: ContainerHandle,
    ) -> Result<Option<NestingCapability>, ClientError> {
        const INFO_BUF: usize = 256;
        let mut arg = vec![0u8; INFO_BUF];
        let request = Type1Info {
            argsz: INFO_BUF as u32,
            ..Type1Info::default()
        };
        arg[..size_of::<Type1Info>()].copy_from_slice(request.as_bytes());
        self.ioctl(handle, VFIO_IOMMU_GET_INFO, &mut arg)?;
        let Ok((info, _)) = Type1Info::read_from_prefix(&arg) else {
            return Ok(None);
        };
        let mut off = info.cap_offset as usize;
        while off >= size_of::<Type1Info>() {
            let Some(Ok((cap, _))) = arg.get(off..).map(InfoCapHeader::read_from_prefix) else {
                break;
            };
            if cap.id == VFIO_IOMMU_TYPE1_INFO_CAP_NESTING {
                return decode_nesting_info(&arg[off..])
                    .map(|(_, cap)| Some(cap))
                    .map_err(|e| ClientError::Daemon {
                        kind: Kind::Ioctl,
                        errno: e.errno(),
                        message: e.to_string(),
                    });
            }
            let next = cap.next as usize;
            if next <= off {
                break;
            }
            off = next;
        }
        Ok(None)
    }
}
