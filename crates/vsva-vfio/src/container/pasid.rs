//! PASID_REQUEST in typed form: a process's PASIDs allocated and freed through one of its
//! nesting containers, under the process's mm lock.

use std::sync::atomic::Ordering;

use vsva_ioasid::Pasid;
use vsva_uapi::{PasidRequestArg, PasidRequestOp};

use super::Container;
use crate::error::VfioError;
use crate::mm::MmState;
use crate::outcome::IoctlOutcome;
use crate::types::IommuType;

impl Container {
    /// Runs `f` on the process's mm under its lock (the per-process lock; the only lock
    /// PASID_REQUEST takes). `EOPNOTSUPP` (or `EINVAL` before `VFIO_SET_IOMMU`) when the
    /// container holds no mm.
    #[inline]
    fn with_mm<T>(
        &self,
        f: impl FnOnce(&mut MmState) -> Result<T, VfioError>,
    ) -> Result<T, VfioError> {
        if !self.has_mm.load(Ordering::Acquire) {
            return Err(self.no_mm());
        }
        let mut slot = self.slot.lock();
        let Some(mm) = slot.mm.as_mut() else {
            drop(slot);
            return Err(self.no_mm());
        };
        f(mm)
    }

    /// Runs a read PASID_REQUEST and, while the mm lock is still held, hands its outcome
    /// to `journal`: no other PASID request of the process runs between the change and its
    /// record. As in the series (v5 07/15: the `switch`'s `default:` answers `EINVAL`, only
    /// its ALLOC and FREE cases look for the context), `flags` 0 or both is refused
    /// (`EINVAL`) before a container without a PASID context answers `EOPNOTSUPP`.
    ///
    /// # Errors
    ///
    /// As [`Container::alloc_pasid`] and [`Container::free_pasids`] (after the reader's
    /// checks), and `EINVAL` for `flags` 0 or both; nothing changes and `journal` is not
    /// called then.
    #[inline]
    pub(crate) fn pasid_request(
        &self,
        req: PasidRequestArg,
        journal: impl FnOnce(&IoctlOutcome),
    ) -> Result<IoctlOutcome, VfioError> {
        let op = req.op()?;
        self.with_mm(|mm| {
            let outcome = match op {
                PasidRequestOp::Alloc { min, max } => {
                    IoctlOutcome::PasidAllocated(mm.set.alloc(min, max)?)
                }
                PasidRequestOp::Free { min, max } => IoctlOutcome::PasidsFreed {
                    min,
                    max,
                    count: mm.free_range(min, max)?,
                },
            };
            journal(&outcome);
            Ok(outcome)
        })
    }

    /// Why a container without an mm cannot serve PASID_REQUEST.
    fn no_mm(&self) -> VfioError {
        match self.iommu_type() {
            None => VfioError::NoIommu {
                container: self.id,
                cmd: 0,
            },
            Some(IommuType::Type1 | IommuType::Type1v2) => VfioError::NoPasidContext {
                container: self.id,
                reason: "it is not a nesting container (IOMMU type 3)",
            },
            Some(IommuType::Nesting) => VfioError::NoPasidContext {
                container: self.id,
                reason: "PASID support is disabled on this host",
            },
        }
    }

    /// Allocates the lowest free PASID in `[min, max]` for the process (PASID_REQUEST
    /// ALLOC).
    ///
    /// # Errors
    ///
    /// `EINVAL` for `min > max` or before the type is set; `EOPNOTSUPP` without a PASID
    /// context; `ENOSPC` when the range has no free PASID or the process's quota is used up.
    /// Nothing is allocated then.
    #[inline]
    pub fn alloc_pasid(&self, min: u32, max: u32) -> Result<Pasid, VfioError> {
        PasidRequestOp::alloc(min, max)?;
        self.require_iommu(0)?;
        self.with_mm(|mm| Ok(mm.set.alloc(min, max)?))
    }

    /// Frees the process's own PASIDs in `[min, max]` (PASID_REQUEST FREE; `[0, u32::MAX]`
    /// frees all of them) and returns how many. Bound ones are torn down in the IOMMU first;
    /// none is reused before every teardown subscriber has finished. Costs what the process
    /// owns, not the width of the range. This is also how an embedder rolls back an
    /// allocation it could not record (`free_pasids(pasid, pasid)`).
    ///
    /// # Errors
    ///
    /// `EINVAL` for `min > max` or before the type is set; `EOPNOTSUPP` without a PASID
    /// context. Nothing is freed then.
    #[inline]
    pub fn free_pasids(&self, min: u32, max: u32) -> Result<u32, VfioError> {
        PasidRequestOp::free(min, max)?;
        self.require_iommu(0)?;
        self.with_mm(|mm| mm.free_range(min, max))
    }
}
