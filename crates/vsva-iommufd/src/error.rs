//! [`IommufdError`]: why an iommufd call was refused, and the errno Linux returns for it.

use vsva_iommu::IommuError;
use vsva_uapi::{Errno, UapiError};
use vsva_vfio::VfioError;

use crate::kind::ObjectKind;

/// A refused iommufd call. Every variant knows its errno ([`IommufdError::errno`]); a refused
/// call changes nothing unless its doc says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum IommufdError {
    /// The argument could not be read or a field is malformed (its own errno).
    #[error(transparent)]
    Uapi(#[from] UapiError),
    /// The VFIO layer refused (device claim, PASID allocation; its own errno).
    #[error(transparent)]
    Vfio(#[from] VfioError),
    /// The IOMMU refused a step (its own errno).
    #[error("{op}: {source}")]
    Iommu {
        /// The step.
        op: &'static str,
        /// The IOMMU's reason.
        source: IommuError,
    },
    /// No object has this id (`ENOENT`).
    #[error("no object {id} in this iommufd context")]
    NoObject {
        /// The id asked for.
        id: u32,
    },
    /// The object is of another kind than the call needs (`ENOENT` or `EINVAL`, as iommufd
    /// answers that call).
    #[error("object {id} is a {found}, not {wanted}")]
    WrongKind {
        /// The id asked for.
        id: u32,
        /// What the call needs.
        wanted: &'static str,
        /// What the object is.
        found: ObjectKind,
        /// The errno iommufd returns here.
        errno: Errno,
    },
    /// The object is in use (`EBUSY`): `users` references other than its creator's.
    #[error("object {id} ({kind}) is in use by {users} other objects or attachments")]
    Busy {
        /// The object.
        id: u32,
        /// Its kind.
        kind: ObjectKind,
        /// How many hold it.
        users: u32,
    },
    /// A known field holds a value this IOMMU does not support (`EOPNOTSUPP`).
    #[error("{field} {value:#x}: {reason}")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why.
        reason: &'static str,
    },
    /// A field is understood but wrong (`EINVAL`), or another errno Linux answers for it.
    #[error("{field} {value:#x}: {reason}")]
    Refused {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why.
        reason: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The device's attachments with and without PASID would not go together (`EINVAL`,
    /// Linux's `iommufd_hwpt_pasid_compat`): its requests without PASID on an HWPT not
    /// allocated with `IOMMU_HWPT_ALLOC_PASID` (an IOAS's automatic HWPT never is) while a
    /// PASID of it is attached — whichever of the two the call would make.
    #[error("{field} {value}: {}", pasid_conflict(*rid_hwpt, *pasid, *attaching_rid))]
    PasidIncompatible {
        /// The field naming what the call attaches: `pt_id` or `pasid`.
        field: &'static str,
        /// Its value.
        value: u32,
        /// The HWPT, not PASID-capable, that has or would take the requests without PASID.
        rid_hwpt: u32,
        /// The PASID attached, or being attached.
        pasid: u32,
        /// Whether the call attaches the requests without PASID (else it attaches `pasid`).
        attaching_rid: bool,
    },
    /// The PASID belongs to another process (`EACCES`) or to nobody (`ENOENT`).
    #[error("PASID {pasid} is not owned by this context's process ({reason})")]
    PasidNotOwned {
        /// The PASID.
        pasid: u32,
        /// Another set owns it, or nobody.
        reason: &'static str,
        /// `EACCES` or `ENOENT`.
        errno: Errno,
    },
}

impl IommufdError {
    /// The Linux errno of the refusal.
    pub fn errno(&self) -> Errno {
        match self {
            IommufdError::Uapi(e) => e.errno(),
            IommufdError::Vfio(e) => e.errno(),
            IommufdError::Iommu { source, .. } => source.errno(),
            IommufdError::NoObject { .. } => Errno::ENOENT,
            IommufdError::WrongKind { errno, .. }
            | IommufdError::Refused { errno, .. }
            | IommufdError::PasidNotOwned { errno, .. } => *errno,
            IommufdError::Busy { .. } => Errno::EBUSY,
            IommufdError::PasidIncompatible { .. } => Errno::EINVAL,
            IommufdError::Unsupported { .. } => Errno::EOPNOTSUPP,
        }
    }

    /// An `EINVAL` refusal.
    // Built only on failure: kept out of line, so the callers' success paths stay small.
    #[cold]
    pub(crate) fn invalid(field: &'static str, value: u64, reason: &'static str) -> Self {
        IommufdError::Refused {
            field,
            value,
            reason,
            errno: Errno::EINVAL,
        }
    }

    /// An `EOPNOTSUPP` refusal.
    // Built only on failure: kept out of line, so the callers' success paths stay small.
    #[cold]
    pub(crate) fn unsupported(field: &'static str, value: u64, reason: &'static str) -> Self {
        IommufdError::Unsupported {
            field,
            value,
            reason,
        }
    }

    /// An IOMMU step that failed.
    // Built only on failure: kept out of line, so the callers' success paths stay small.
    #[cold]
    pub(crate) fn iommu(op: &'static str, source: IommuError) -> Self {
        IommufdError::Iommu { op, source }
    }
}

/// Why [`IommufdError::PasidIncompatible`] refused.
fn pasid_conflict(rid_hwpt: u32, pasid: u32, attaching_rid: bool) -> String {
    if attaching_rid {
        format!(
            "HWPT {rid_hwpt} was not allocated with IOMMU_HWPT_ALLOC_PASID, so it cannot take \
             the device's requests without PASID while its PASID {pasid} is attached"
        )
    } else {
        format!(
            "the device's requests without PASID are attached to HWPT {rid_hwpt}, which was \
             not allocated with IOMMU_HWPT_ALLOC_PASID, so no PASID of it may be attached"
        )
    }
}
