//! The iommufd front end over the daemon: the connection's iommufd context (one per
//! connection, released when it closes) driven with the uAPI bytes of `/dev/iommu` and of a
//! device fd, its fault queues, and the objects view. The argument structs are
//! `vsva_uapi::iommufd`'s.
//!
//! A PASID to attach with iommufd is allocated with PASID_REQUEST through a container of
//! the same process ([`Client::pasid_alloc`]): the process has one set, which both front
//! ends check.

use vsva_proto::{IommufdObject, IommufdObjectsReply, IommufdRequest, Kind, Request};
use vsva_uapi::iommufd::{IommuHwptPageResponse, IommuHwptPgfault};
use zerocopy::{FromBytes, IntoBytes};

use crate::connection::Client;
use crate::error::{check, ClientError};

impl Client {
    /// Sends one iommufd request and copies the bytes the daemon writes back into `arg`
    /// (also on failure: `IOMMU_HWPT_INVALIDATE`'s `entry_num`, `IOMMU_IOAS_IOVA_RANGES`'
    /// `num_iovas`).
    fn iommufd_call(&mut self, req: IommufdRequest, arg: &mut [u8]) -> Result<(), ClientError> {
        let kind = req.kind();
        let reply = self
            .call_many(&[Request::Iommufd(req)])?
            .pop()
            .expect("one reply per request");
        if reply.payload.len() == arg.len() {
            arg.copy_from_slice(&reply.payload);
        }
        check(kind, reply).map(drop)
    }

    /// Runs iommufd ioctl `cmd` (`IOMMU_IOAS_ALLOC`, `IOMMU_IOAS_MAP`, `IOMMU_HWPT_ALLOC`, ...)
    /// on this connection's context with the argument bytes `arg`, written back in place. User
    /// pointers in `arg` are byte offsets into `arg` itself; `IOMMU_IOAS_MAP`'s `user_va` is an
    /// address inside memory this process registered.
    pub fn iommufd_ioctl(&mut self, cmd: u32, arg: &mut [u8]) -> Result<(), ClientError> {
        let req = IommufdRequest::Ioctl {
            cmd,
            arg: arg.to_vec(),
        };
        self.iommufd_call(req, arg)
    }

    /// Runs VFIO device ioctl `cmd` (`VFIO_DEVICE_BIND_IOMMUFD`, `_ATTACH_IOMMUFD_PT`,
    /// `_DETACH_IOMMUFD_PT`) as on the device fd of function `source_id`, against this
    /// connection's context (a bind's `iommufd` field is not looked at).
    pub fn iommufd_device_ioctl(
        &mut self,
        source_id: u16,
        cmd: u32,
        arg: &mut [u8],
    ) -> Result<(), ClientError> {
        let req = IommufdRequest::Device {
            source_id,
            cmd,
            arg: arg.to_vec(),
        };
        self.iommufd_call(req, arg)
    }

    /// Reads whole fault groups (at most `max` records) from fault queue `fault_id`.
    pub fn iommufd_read_faults(
        &mut self,
        fault_id: u32,
        max: u32,
    ) -> Result<Vec<IommuHwptPgfault>, ClientError> {
        let r = self.call(Request::Iommufd(IommufdRequest::ReadFaults {
            fault_id,
            max,
        }))?;
        Ok(r.payload
            .chunks_exact(size_of::<IommuHwptPgfault>())
            .map(|c| IommuHwptPgfault::read_from_bytes(c).expect("one record"))
            .collect())
    }

    /// Writes page responses to fault queue `fault_id`; returns how many were taken.
    pub fn iommufd_respond(
        &mut self,
        fault_id: u32,
        responses: &[IommuHwptPageResponse],
    ) -> Result<u32, ClientError> {
        let req = IommufdRequest::Respond {
            fault_id,
            responses: responses.as_bytes().to_vec(),
        };
        Ok(self.call(Request::Iommufd(req))?.result as u32)
    }

    /// The iommufd objects of process `pid` (0: this process; another's needs admin), every
    /// connection's context.
    ///
    /// # Errors
    ///
    /// `EPERM` for another process's objects without admin rights; `ESRCH` for a pid the
    /// daemon has no context for. A process with a context but no iommufd context has no
    /// objects (an empty list, not an error).
    pub fn iommufd_objects(&mut self, pid: u32) -> Result<Vec<IommufdObject>, ClientError> {
        let r = self.call(Request::Iommufd(IommufdRequest::Objects { pid }))?;
        IommufdObjectsReply::decode(&r.payload)
            .map(|o| o.objects)
            .map_err(|error| ClientError::Protocol {
                kind: Kind::IommufdObjects,
                error,
            })
    }
}
