//! The iommufd requests (kinds `0x0501`..): the connection's iommufd context driven with the
//! uAPI bytes of `/dev/iommu` and of a device fd, its fault queues read and answered, and the
//! admin view of a process's iommufd objects.

use super::kind::Kind;
use super::MAX_LIST;
use crate::error::ProtoError;
use crate::wire::{Reader, Writer};

/// Bytes of one `iommu_hwpt_page_response`.
pub const PAGE_RESPONSE_LEN: usize = 8;
/// "None" in the numeric fields of [`IommufdObject`].
pub const IOMMUFD_NONE: u32 = u32::MAX;

/// An iommufd request; every one acts on the connection's own context (made on first use),
/// except [`IommufdRequest::Objects`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IommufdRequest {
    /// An iommufd ioctl (`IOMMU_IOAS_ALLOC`, `IOMMU_HWPT_ALLOC`, ...) with its argument bytes.
    Ioctl {
        /// The ioctl number.
        cmd: u32,
        /// The argument bytes, exactly as a caller passes them to the kernel.
        arg: Vec<u8>,
    },
    /// A VFIO device ioctl (`VFIO_DEVICE_BIND_IOMMUFD`, `_ATTACH_IOMMUFD_PT`,
    /// `_DETACH_IOMMUFD_PT`) on the device fd of function `source_id`.
    Device {
        /// Requester id of the function.
        source_id: u16,
        /// The ioctl number.
        cmd: u32,
        /// The argument bytes.
        arg: Vec<u8>,
    },
    /// Read whole fault groups from a fault queue, at most `max` records.
    ReadFaults {
        /// The fault queue's id.
        fault_id: u32,
        /// Most records to return.
        max: u32,
    },
    /// Write page responses (`iommu_hwpt_page_response`, 8 bytes each) to a fault queue.
    Respond {
        /// The fault queue's id.
        fault_id: u32,
        /// The responses' bytes.
        responses: Vec<u8>,
    },
    /// The iommufd objects of process `pid` (0: the caller's own; another's needs admin).
    Objects {
        /// The process.
        pid: u32,
    },
}

impl IommufdRequest {
    /// The request's kind.
    pub fn kind(&self) -> Kind {
        match self {
            IommufdRequest::Ioctl { .. } => Kind::IommufdIoctl,
            IommufdRequest::Device { .. } => Kind::IommufdDevice,
            IommufdRequest::ReadFaults { .. } => Kind::IommufdReadFaults,
            IommufdRequest::Respond { .. } => Kind::IommufdRespond,
            IommufdRequest::Objects { .. } => Kind::IommufdObjects,
        }
    }

    /// Writes the body.
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            IommufdRequest::Ioctl { cmd, arg } => {
                w.u32(*cmd).raw(arg);
            }
            IommufdRequest::Device {
                source_id,
                cmd,
                arg,
            } => {
                w.u16(*source_id).u32(*cmd).raw(arg);
            }
            IommufdRequest::ReadFaults { fault_id, max } => {
                w.u32(*fault_id).u32(*max);
            }
            IommufdRequest::Respond {
                fault_id,
                responses,
            } => {
                w.u32(*fault_id).raw(responses);
            }
            IommufdRequest::Objects { pid } => {
                w.u32(*pid);
            }
        }
    }

    /// Reads the body of a request of iommufd kind `kind`; responses that are not whole
    /// 8-byte records are refused.
    pub(crate) fn read(kind: Kind, r: &mut Reader<'_>) -> Result<IommufdRequest, ProtoError> {
        Ok(match kind {
            Kind::IommufdIoctl => IommufdRequest::Ioctl {
                cmd: r.u32("cmd")?,
                arg: r.rest().to_vec(),
            },
            Kind::IommufdDevice => IommufdRequest::Device {
                source_id: r.u16("source_id")?,
                cmd: r.u32("cmd")?,
                arg: r.rest().to_vec(),
            },
            Kind::IommufdReadFaults => IommufdRequest::ReadFaults {
                fault_id: r.u32("fault_id")?,
                max: r.u32("max")?,
            },
            Kind::IommufdRespond => {
                let fault_id = r.u32("fault_id")?;
                let responses = r.rest().to_vec();
                if !responses.len().is_multiple_of(PAGE_RESPONSE_LEN) {
                    return Err(r.bad_value(
                        "responses",
                        responses.len() as u64,
                        "whole 8-byte iommu_hwpt_page_response records",
                    ));
                }
                IommufdRequest::Respond {
                    fault_id,
                    responses,
                }
            }
            Kind::IommufdObjects => IommufdRequest::Objects { pid: r.u32("pid")? },
            _ => return Err(ProtoError::UnknownKind { kind: kind as u16 }),
        })
    }
}

/// One iommufd object as [`IommufdRequest::Objects`] lists it; numeric fields hold
/// [`IOMMUFD_NONE`] where they do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommufdObject {
    /// The process whose context holds it.
    pub pid: u32,
    /// The connection the context belongs to.
    pub conn: u64,
    /// The object's id in its context.
    pub id: u32,
    /// 0 IOAS, 1 paging HWPT, 2 nested HWPT, 3 device, 4 fault queue.
    pub kind: u8,
    /// How many objects or attachments hold it.
    pub users: u32,
    /// An HWPT's IOAS or parent.
    pub parent: u32,
    /// An HWPT's domain id.
    pub domain_id: u32,
    /// A device's requester id.
    pub source_id: u32,
    /// A device's attachments: (PASID or [`IOMMUFD_NONE`] for requests without PASID, HWPT).
    pub attached: Vec<(u32, u32)>,
    /// A fault queue's groups not read yet.
    pub faults_unread: u32,
    /// A fault queue's groups read and waiting for a response.
    pub faults_waiting: u32,
}

/// The kind names of [`IommufdObject::kind`], by number.
pub const IOMMUFD_KIND_NAMES: [&str; 5] = [
    "ioas",
    "hwpt-paging",
    "hwpt-nested",
    "device",
    "fault-queue",
];

/// The payload of an [`IommufdRequest::Objects`] reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IommufdObjectsReply {
    /// The objects, by connection then id.
    pub objects: Vec<IommufdObject>,
}

impl IommufdObjectsReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.objects.len() as u32);
        for o in &self.objects {
            w.u32(o.pid)
                .u64(o.conn)
                .u32(o.id)
                .u8(o.kind)
                .u32(o.users)
                .u32(o.parent)
                .u32(o.domain_id)
                .u32(o.source_id)
                .u32(o.faults_unread)
                .u32(o.faults_waiting)
                .u32(o.attached.len() as u32);
            for &(pasid, hwpt) in &o.attached {
                w.u32(pasid).u32(hwpt);
            }
        }
        w.into_vec()
    }

    /// Decodes the payload; lists longer than [`MAX_LIST`] are refused.
    pub fn decode(payload: &[u8]) -> Result<IommufdObjectsReply, ProtoError> {
        let mut r = Reader::new(payload, "iommufd_objects");
        let n = r.u32("count")?;
        if n > MAX_LIST {
            return Err(r.bad_value("count", n.into(), "at most 65536 objects"));
        }
        let mut objects = Vec::new();
        for _ in 0..n {
            let pid = r.u32("pid")?;
            let conn = r.u64("conn")?;
            let id = r.u32("id")?;
            let kind = r.u8("kind")?;
            let users = r.u32("users")?;
            let parent = r.u32("parent")?;
            let domain_id = r.u32("domain_id")?;
            let source_id = r.u32("source_id")?;
            let faults_unread = r.u32("faults_unread")?;
            let faults_waiting = r.u32("faults_waiting")?;
            let na = r.u32("attached")?;
            if na > MAX_LIST {
                return Err(r.bad_value("attached", na.into(), "at most 65536 attachments"));
            }
            let mut attached = Vec::new();
            for _ in 0..na {
                attached.push((r.u32("pasid")?, r.u32("hwpt")?));
            }
            objects.push(IommufdObject {
                pid,
                conn,
                id,
                kind,
                users,
                parent,
                domain_id,
                source_id,
                attached,
                faults_unread,
                faults_waiting,
            });
        }
        r.finish()?;
        Ok(IommufdObjectsReply { objects })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::request::Request;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            IommufdRequest::Ioctl {
                cmd: 0x3b81,
                arg: vec![12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            IommufdRequest::Device {
                source_id: 0x18,
                cmd: 0x3b76,
                arg: vec![1, 2, 3],
            },
            IommufdRequest::ReadFaults {
                fault_id: 3,
                max: 8,
            },
            IommufdRequest::Respond {
                fault_id: 3,
                responses: vec![0; 16],
            },
            IommufdRequest::Objects { pid: 42 },
        ];
        for req in reqs {
            let r = Request::Iommufd(req.clone());
            let kind = r.kind();
            assert_eq!(Request::decode(kind as u16, &r.encode_body()), Ok(r));
        }
        let bad = Request::Iommufd(IommufdRequest::Respond {
            fault_id: 1,
            responses: vec![0; 7],
        });
        assert!(Request::decode(Kind::IommufdRespond as u16, &bad.encode_body()).is_err());
    }

    #[test]
    fn objects_round_trip() {
        let reply = IommufdObjectsReply {
            objects: vec![IommufdObject {
                pid: 7,
                conn: 9,
                id: 1,
                kind: 3,
                users: 0,
                parent: IOMMUFD_NONE,
                domain_id: IOMMUFD_NONE,
                source_id: 0x18,
                attached: vec![(IOMMUFD_NONE, 4), (5, 6)],
                faults_unread: IOMMUFD_NONE,
                faults_waiting: IOMMUFD_NONE,
            }],
        };
        assert_eq!(IommufdObjectsReply::decode(&reply.encode()), Ok(reply));
    }
}
