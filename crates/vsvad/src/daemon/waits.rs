//! Which requests may wait for a device process, decided once where a request enters: the
//! connection hands those to the blocking pool (`crate::blocking`) and runs every other
//! request inline in its worker.
//!
//! A request may wait when it can invalidate what a device process caches — the device-TLB
//! invalidation then waits for that process's acknowledgement, up to
//! `limits.invalidation_timeout_ms` — and some process could be waited for: a user of a
//! device (it asked for a translation or raised a page request) or the holder of a grant.
//! The second test is one atomic load, so while no device process exists every request runs
//! inline as before.
//!
//! The kinds: `NESTING_OP` (bind, unbind, invalidate), `PASID_REQUEST` that frees,
//! `UNMAP_DMA`, closing a container and detaching a group (their teardown unbinds), a grant
//! revoke, and the iommufd equivalents (`IOMMU_HWPT_INVALIDATE`, `IOMMU_IOAS_UNMAP`,
//! `IOMMU_DESTROY`, `VFIO_DEVICE_DETACH_IOMMUFD_PT`).

use vsva_proto::{IommufdRequest, Request};
use vsva_uapi::iommufd::{
    IOMMU_DESTROY, IOMMU_HWPT_INVALIDATE, IOMMU_IOAS_UNMAP, VFIO_DEVICE_DETACH_IOMMUFD_PT,
};
use vsva_uapi::vfio::{
    VFIO_IOMMU_FLAG_FREE_PASID, VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST,
    VFIO_IOMMU_UNMAP_DMA,
};

use super::process::Session;
use super::Daemon;

/// Whether `req` is of a kind that may invalidate what a device process caches.
fn invalidating(req: &Request) -> bool {
    match req {
        Request::Ioctl { cmd, arg, .. } => match *cmd {
            VFIO_IOMMU_NESTING_OP | VFIO_IOMMU_UNMAP_DMA => true,
            // `vfio_iommu_type1_pasid_request`: argsz, then flags.
            VFIO_IOMMU_PASID_REQUEST => arg
                .get(4..8)
                .and_then(|f| <[u8; 4]>::try_from(f).ok())
                .is_some_and(|f| u32::from_ne_bytes(f) & VFIO_IOMMU_FLAG_FREE_PASID != 0),
            _ => false,
        },
        Request::CloseContainer { .. }
        | Request::DetachGroup { .. }
        | Request::DeviceRevoke { .. } => true,
        Request::Iommufd(IommufdRequest::Ioctl { cmd, .. }) => {
            matches!(
                *cmd,
                IOMMU_HWPT_INVALIDATE | IOMMU_IOAS_UNMAP | IOMMU_DESTROY
            )
        }
        Request::Iommufd(IommufdRequest::Device { cmd, .. }) => {
            *cmd == VFIO_DEVICE_DETACH_IOMMUFD_PT
        }
        _ => false,
    }
}

impl Daemon {
    /// Whether `req`, from the connection `s`, may wait for a device process's
    /// acknowledgement and must therefore run in the blocking pool. Only a request past its
    /// hello can: any other is refused without waiting.
    pub fn may_wait(&self, s: &Session, req: &Request) -> bool {
        invalidating(req) && s.process.is_some() && self.device_side.may_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pasid_request(flags: u32) -> Request {
        let mut arg = vec![0u8; 16];
        arg[0..4].copy_from_slice(&16u32.to_ne_bytes());
        arg[4..8].copy_from_slice(&flags.to_ne_bytes());
        Request::Ioctl {
            handle: 1,
            cmd: VFIO_IOMMU_PASID_REQUEST,
            arg,
        }
    }

    #[test]
    fn the_kinds_that_may_invalidate_and_no_other() {
        let cases = [
            (pasid_request(VFIO_IOMMU_FLAG_FREE_PASID), true),
            (
                pasid_request(vsva_uapi::vfio::VFIO_IOMMU_FLAG_ALLOC_PASID),
                false,
            ),
            (
                Request::Ioctl {
                    handle: 1,
                    cmd: VFIO_IOMMU_PASID_REQUEST,
                    arg: vec![0; 3],
                },
                false,
            ),
            (
                Request::Ioctl {
                    handle: 1,
                    cmd: VFIO_IOMMU_NESTING_OP,
                    arg: Vec::new(),
                },
                true,
            ),
            (
                Request::Ioctl {
                    handle: 1,
                    cmd: VFIO_IOMMU_UNMAP_DMA,
                    arg: Vec::new(),
                },
                true,
            ),
            (
                Request::Ioctl {
                    handle: 1,
                    cmd: vsva_uapi::vfio::VFIO_IOMMU_MAP_DMA,
                    arg: Vec::new(),
                },
                false,
            ),
            (Request::CloseContainer { handle: 1 }, true),
            (Request::DeviceRevoke { source_id: 3 }, true),
            (
                Request::Iommufd(IommufdRequest::Ioctl {
                    cmd: IOMMU_HWPT_INVALIDATE,
                    arg: Vec::new(),
                }),
                true,
            ),
            (
                Request::Iommufd(IommufdRequest::Device {
                    source_id: 3,
                    cmd: VFIO_DEVICE_DETACH_IOMMUFD_PT,
                    arg: Vec::new(),
                }),
                true,
            ),
            (Request::Ping(Vec::new()), false),
            (Request::Status, false),
        ];
        for (req, want) in cases {
            assert_eq!(invalidating(&req), want, "{req:?}");
        }
    }
}
