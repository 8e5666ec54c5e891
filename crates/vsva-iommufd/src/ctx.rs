//! [`IommufdCtx`], one per open of `/dev/iommu` (per daemon connection, per in-process
//! handle): its object table, its process's PASID context, `IOMMU_DESTROY`, and the
//! teardown that releases everything it holds when it is dropped.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

use vsva_ioasid::Pasid;
use vsva_iommu::{Invalidation, SourceId};
use vsva_uapi::Errno;
use vsva_vfio::{ProcessToken, TablePageShare, Vfio, VfioError, VfioMm};

use crate::error::IommufdError;
use crate::inv_target::InvTarget;
use crate::kind::ObjectKind;
use crate::objects::{Object, Objects};

/// The next "file descriptor" number a context gets; `VFIO_DEVICE_BIND_IOMMUFD` names a
/// context by it.
static NEXT_FD: AtomicI32 = AtomicI32::new(3);

/// One iommufd context: the objects one open of `/dev/iommu` created, over the host's VFIO
/// layer (devices, domain ids, PASIDs) and IOMMU.
///
/// Lock order: the context's table lock → the process's mm lock (PASID attach) → the device
/// registry's lock → the IOMMU's internal locks, the order of a VFIO container.
pub struct IommufdCtx {
    pub(crate) vfio: Vfio,
    fd: i32,
    process: ProcessToken,
    /// The process's PASID context; `None` when the host has PASID support off.
    pub(crate) mm: Option<VfioMm>,
    /// The process's table-pool share: the IOASes' stage-2 pages count in it, as its
    /// containers' do.
    pub(crate) share: TablePageShare,
    state: Mutex<Objects>,
    /// The nested HWPT whose one-entry invalidation reads no table (cleared by [`Self::lock`]).
    pub(crate) inv_target: InvTarget,
    /// The IOMMU's CAP.MAMV (fixed for its life), beside the target: the largest address
    /// mask of a page-selective invalidation.
    pub(crate) mamv: u8,
}

/// One object as the admin view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's id.
    pub id: u32,
    /// Its kind.
    pub kind: ObjectKind,
    /// How many objects or attachments hold it.
    pub users: u32,
    /// The object it is built on: an HWPT's IOAS or parent, `None` otherwise.
    pub parent: Option<u32>,
    /// An HWPT's domain id.
    pub domain_id: Option<u16>,
    /// A device's requester id.
    pub device: Option<SourceId>,
    /// A device's attachments: (PASID, or `None` for requests without PASID; HWPT id).
    pub attached: Vec<(Option<u32>, u32)>,
    /// A fault queue's groups (not read yet, read and waiting for a response).
    pub faults: Option<(usize, usize)>,
}

impl IommufdCtx {
    /// Opens a context for `process` over `vfio`. It holds a reference on the process's
    /// PASID context (created if needed) for its whole life, when the host has PASID support.
    ///
    /// # Errors
    ///
    /// `ENOSPC` if the allocator has no PASID set left for a new process; nothing is held.
    pub fn open(vfio: &Vfio, process: ProcessToken) -> Result<Self, IommufdError> {
        let mm = match vfio.process_context(process) {
            Ok(mm) => Some(mm),
            Err(VfioError::PasidSupportDisabled) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(IommufdCtx {
            vfio: vfio.clone(),
            fd: NEXT_FD.fetch_add(1, Ordering::Relaxed),
            process,
            mm,
            share: vfio.table_page_share(process),
            state: Mutex::new(Objects::default()),
            inv_target: InvTarget::default(),
            mamv: vfio.iommu().config().mamv,
        })
    }

    /// The number `VFIO_DEVICE_BIND_IOMMUFD`'s `iommufd` field names this context by.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The process the context belongs to.
    pub fn process(&self) -> ProcessToken {
        self.process
    }

    /// The VFIO layer (and through it the IOMMU) the context drives.
    pub fn vfio(&self) -> &Vfio {
        &self.vfio
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Objects> {
        let objs = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Whoever holds the lock may change the table: the lock-free target is forgotten
        // first (an invalidation that finds the target unchanged names it again).
        self.inv_target.clear();
        objs
    }

    /// The process's PASID context, or `EOPNOTSUPP` when the host has no PASID support.
    pub(crate) fn mm(&self) -> Result<&VfioMm, IommufdError> {
        self.mm.as_ref().ok_or(IommufdError::Unsupported {
            field: "pasid",
            value: 0,
            reason: "PASID support is off on this host",
        })
    }

    /// Allocates a PASID for the context's process: the lowest free one in `[min, max]` of
    /// the host-wide space, from the process's own set (the one its VFIO containers use,
    /// with the same quota).
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` without PASID support, `EINVAL` for `min > max`, `ENOSPC` when the range
    /// or the quota is exhausted; nothing is allocated then.
    pub fn alloc_pasid(&self, min: u32, max: u32) -> Result<Pasid, IommufdError> {
        Ok(self.mm()?.alloc_pasid(min, max)?)
    }

    /// Frees the process's PASIDs in `[min, max]`; returns how many. A freed PASID's entries
    /// are cleared on every device (its attachments here then detach as no-ops).
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` without PASID support, `EINVAL` for `min > max`; nothing is freed then.
    pub fn free_pasids(&self, min: u32, max: u32) -> Result<u32, IommufdError> {
        Ok(self.mm()?.free_pasids(min, max)?)
    }

    /// `IOMMU_DESTROY`: destroys object `id`, as Linux `iommufd_destroy` (`main.c`) does.
    ///
    /// # Errors
    ///
    /// `ENOENT` for an unknown id; `EBUSY` while another object or an attachment holds it (a
    /// bound device is always held: it goes with [`IommufdCtx::unbind_device`]). Nothing
    /// changes then.
    pub fn destroy(&self, id: u32) -> Result<(), IommufdError> {
        let mut objs = self.lock();
        if let Object::Device(_) = objs.get(id)?.object {
            return Err(IommufdError::Busy {
                id,
                kind: ObjectKind::Device,
                users: 1,
            });
        }
        let object = objs.remove_unused(id)?;
        self.release(&mut objs, object);
        Ok(())
    }

    /// Gives back what a removed object held: its IOMMU state, domain id, and its hold on
    /// the objects it was built on.
    pub(crate) fn release(&self, objs: &mut Objects, object: Object) {
        let iommu = self.vfio.iommu();
        match object {
            Object::Ioas(ioas) => {
                if let Err(e) = iommu.destroy_stage2(ioas.stage2) {
                    tracing::error!("destroying an IOAS's stage 2: {e}");
                    debug_assert!(false, "destroying an IOAS's stage 2: {e}");
                }
                // The stage 2 is gone from the IOMMU even on error (its doc says so).
                self.share.uncharge(ioas.charged);
            }
            Object::HwptPaging(h) => {
                self.vfio.free_domain_id(h.did);
                objs.unhold(h.ioas);
                if let Some(f) = h.fault {
                    objs.unhold(f);
                }
            }
            Object::HwptNested(h) => {
                self.vfio.free_domain_id(h.did);
                objs.unhold(h.parent);
                if let Some(f) = h.fault {
                    objs.unhold(f);
                }
            }
            Object::Device(dev) => self.release_device(objs, dev),
            Object::Fault(mut q) => self.answer_invalid(q.take_all()),
        }
    }

    /// Issues invalidations this layer built, as one submission (valid by construction: its
    /// own domain ids, PASIDs of the space); a refusal would be a bug, so it is logged and
    /// asserted in debug builds.
    #[inline]
    pub(crate) fn issue(&self, invs: &[Invalidation], what: &str) {
        if invs.is_empty() {
            return;
        }
        if let Err(e) = self.vfio.iommu().invalidate_batch(invs) {
            issue_failed(invs, what, e);
        }
    }

    /// Every object of the context, by id.
    pub fn objects(&self) -> Vec<ObjectInfo> {
        let objs = self.lock();
        objs.iter()
            .map(|(id, e)| {
                let mut info = ObjectInfo {
                    id,
                    kind: e.object.kind(),
                    users: e.users,
                    parent: None,
                    domain_id: None,
                    device: None,
                    attached: Vec::new(),
                    faults: None,
                };
                match &e.object {
                    Object::Ioas(_) => {}
                    Object::HwptPaging(h) => {
                        info.parent = Some(h.ioas);
                        info.domain_id = Some(h.did);
                    }
                    Object::HwptNested(h) => {
                        info.parent = Some(h.parent);
                        info.domain_id = Some(h.did);
                    }
                    Object::Device(d) => {
                        info.device = Some(d.sid);
                        info.attached = d.attached.iter().map(|(&p, &h)| (p, h)).collect();
                    }
                    Object::Fault(q) => info.faults = Some(q.counts()),
                }
                info
            })
            .collect()
    }

    /// The errno iommufd answers for a wrong kind where it looks objects up by type
    /// (`iommufd_get_object`): `ENOENT`.
    pub(crate) const WRONG_KIND: Errno = Errno::ENOENT;
}

/// Logs a refused submission of [`IommufdCtx::issue`] (a bug), out of the callers' line.
#[cold]
#[inline(never)]
fn issue_failed(invs: &[Invalidation], what: &str, e: vsva_iommu::IommuError) {
    tracing::error!("{what}: {invs:?}: {e}");
    debug_assert!(false, "{what}: {invs:?}: {e}");
}

impl Drop for IommufdCtx {
    /// Releases everything, as closing the fd does (`iommufd_fops_release`): devices first
    /// (detaching them), then every object once nothing holds it.
    fn drop(&mut self) {
        let mut objs = self.lock();
        let devices: Vec<u32> = objs
            .iter()
            .filter(|(_, e)| e.object.kind() == ObjectKind::Device)
            .map(|(id, _)| id)
            .collect();
        for id in devices {
            if let Some(object) = objs.remove(id) {
                self.release(&mut objs, object);
            }
        }
        while !objs.is_empty() {
            let free: Vec<u32> = objs
                .iter()
                .filter(|(_, e)| e.users == 0)
                .map(|(id, _)| id)
                .collect();
            if free.is_empty() {
                tracing::error!("iommufd context teardown: objects hold each other in a cycle");
                debug_assert!(false, "iommufd objects hold each other in a cycle");
                break;
            }
            for id in free {
                if let Some(object) = objs.remove(id) {
                    self.release(&mut objs, object);
                }
            }
        }
    }
}
