//! A registered PCI function as a handle ([`PciFunction`]): its guest-visible configuration
//! space, and DMA as the function issues it.

use std::fmt;
use std::sync::Arc;

use vsva_iommu::{Access, AtsReply, Iommu, SourceId, Translation};

use crate::error::VfioError;
use crate::pci::{ConfigWidth, FunctionInner, PasidCapability};
use crate::types::GroupId;

/// A registered PCI function: its guest-visible configuration space, and DMA as the function
/// issues it (checked against its PASID control register, then translated by the IOMMU).
///
/// Cloning gives another handle on the same function.
#[derive(Clone)]
pub struct PciFunction {
    pub(crate) inner: Arc<FunctionInner>,
    pub(crate) group: Option<GroupId>,
    pub(crate) iommu: Arc<Iommu>,
}

impl PciFunction {
    /// The function's requester id (bus, device, function), which its DMA carries.
    pub fn source_id(&self) -> SourceId {
        self.inner.source_id
    }

    /// The group it is assigned in, `None` for a host-owned function.
    pub fn group(&self) -> Option<GroupId> {
        self.group
    }

    /// The PASID capability a guest reads (limited by the host), `None` if absent or hidden.
    pub fn pasid_capability(&self) -> Option<PasidCapability> {
        self.inner.vcap
    }

    /// Reads `width` bytes of configuration space at `offset`, little-endian in the low bits.
    /// `EINVAL` for an unaligned access or one beyond 4 KiB.
    pub fn config_read(&self, offset: u32, width: ConfigWidth) -> Result<u32, VfioError> {
        self.inner.config_read(offset, width)
    }

    /// Writes the low `width` bytes of `value` at `offset`; read-only bits keep their value.
    /// `EINVAL` for an unaligned access or one beyond 4 KiB.
    pub fn config_write(
        &self,
        offset: u32,
        width: ConfigWidth,
        value: u32,
    ) -> Result<(), VfioError> {
        self.inner.config_write(offset, width, value)
    }

    /// Translates one request of the function (PASID control checks, then the IOMMU).
    /// Errors: `EPERM` when the control register forbids it, `EFAULT` on an IOMMU fault.
    pub fn translate(
        &self,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, VfioError> {
        dma_translate(
            &self.inner,
            &self.iommu,
            self.inner.source_id,
            pasid,
            iova,
            access,
        )
    }

    /// An ATS translation request of the function ([`Iommu::ats_translate`]): the answer its
    /// own translation cache may keep. Checked first against its ATS control register and its
    /// PASID control register.
    ///
    /// # Errors
    ///
    /// Nothing is handed out then. `EPERM` when ATS Enable is clear or the PASID control
    /// register forbids the request; the IOMMU's refusals: `EOPNOTSUPP` when its context
    /// entry has DTE clear, `ENODEV` when it is fenced.
    pub fn ats_translate(
        &self,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<AtsReply, VfioError> {
        if !self.inner.ats_enabled() {
            return Err(VfioError::CapabilityDisabled {
                source_id: self.inner.source_id,
                what: "a translation request",
                reason: "ATS Enable is clear in the ATS control register",
            });
        }
        self.inner
            .check_request(pasid, access.execute, access.privileged)?;
        self.iommu
            .ats_translate(self.inner.source_id, pasid, iova, access)
            .map_err(|e| VfioError::iommu("ATS translation request", e))
    }

    /// Reads DMA at `iova` (user read) with an optional PASID.
    /// Errors: `EPERM` when the control register forbids it, `EFAULT` on an IOMMU fault.
    pub fn dma_read(&self, pasid: Option<u32>, iova: u64, buf: &mut [u8]) -> Result<(), VfioError> {
        self.inner.check_request(pasid, false, false)?;
        self.iommu
            .dma_read(self.inner.source_id, pasid, iova, buf)
            .map_err(|source| VfioError::Dma {
                source_id: self.inner.source_id,
                source,
            })
    }

    /// Writes DMA at `iova` (user write) with an optional PASID.
    /// Errors: `EPERM` when the control register forbids it, `EFAULT` on an IOMMU fault.
    pub fn dma_write(&self, pasid: Option<u32>, iova: u64, buf: &[u8]) -> Result<(), VfioError> {
        self.inner.check_request(pasid, false, false)?;
        self.iommu
            .dma_write(self.inner.source_id, pasid, iova, buf)
            .map_err(|source| VfioError::Dma {
                source_id: self.inner.source_id,
                source,
            })
    }
}

impl fmt::Debug for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciFunction")
            .field("source_id", &self.inner.source_id)
            .field("group", &self.group)
            .field("pasid", &self.inner.vcap)
            .finish_non_exhaustive()
    }
}

/// Checks a request against `function`'s PASID control register and translates it as
/// `requester`.
pub(crate) fn dma_translate(
    function: &FunctionInner,
    iommu: &Iommu,
    requester: SourceId,
    pasid: Option<u32>,
    iova: u64,
    access: Access,
) -> Result<Translation, VfioError> {
    function.check_request(pasid, access.execute, access.privileged)?;
    iommu
        .translate(requester, pasid, iova, access)
        .map_err(|fault| VfioError::Dma {
            source_id: requester,
            source: fault.into(),
        })
}
