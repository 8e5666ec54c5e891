//! IOMMU-backed mediated devices: a slice of a parent PCI function, told apart by a default
//! PASID that tags its DMA.

use std::fmt;
use std::sync::Arc;

use vsva_ioasid::Pasid;
use vsva_iommu::{Access, Iommu, SourceId, Translation};

use crate::error::VfioError;
use crate::function::dma_translate;
use crate::pci::FunctionInner;
use crate::types::{GroupId, MdevId};

pub(crate) struct MdevInner {
    pub(crate) id: MdevId,
    pub(crate) group: GroupId,
    pub(crate) parent: Arc<FunctionInner>,
    pub(crate) default_pasid: Pasid,
}

/// An IOMMU-backed mediated device, created by [`crate::Vfio::create_mdev`].
///
/// Its DMA carries the parent's requester id. A request without a guest PASID is tagged with
/// the mdev's default PASID, whose entry in the parent's PASID table translates through the
/// stage 2 of the container the mdev's group is attached to (guest-physical addresses). A
/// request with a PASID the process bound (vSVA) goes through that PASID's nested entry in
/// the parent's table. Either way the parent's PASID control register must allow it.
///
/// Cloning gives another handle on the same mdev.
#[derive(Clone)]
pub struct Mdev {
    pub(crate) inner: Arc<MdevInner>,
    pub(crate) iommu: Arc<Iommu>,
}

impl Mdev {
    /// The id [`crate::Vfio::create_mdev`] gave it, never reused on this host.
    pub fn id(&self) -> MdevId {
        self.inner.id
    }

    /// Its group (it is the group's only member).
    pub fn group(&self) -> GroupId {
        self.inner.group
    }

    /// The parent function's requester id, which its DMA carries.
    pub fn parent(&self) -> SourceId {
        self.inner.parent.source_id
    }

    /// The default PASID that tags its DMA without a guest PASID.
    pub fn default_pasid(&self) -> Pasid {
        self.inner.default_pasid
    }

    fn tag(&self, pasid: Option<Pasid>) -> Pasid {
        pasid.unwrap_or(self.inner.default_pasid)
    }

    /// Translates one request: `pasid` `None` uses the default PASID.
    /// Errors: `EPERM` when the parent's control register forbids it, `EFAULT` on a fault.
    pub fn translate(
        &self,
        pasid: Option<Pasid>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, VfioError> {
        let parent = &self.inner.parent;
        dma_translate(
            parent,
            &self.iommu,
            parent.source_id,
            Some(self.tag(pasid)),
            iova,
            access,
        )
    }

    /// Reads DMA at `iova` (user read); `pasid` `None` uses the default PASID.
    pub fn dma_read(
        &self,
        pasid: Option<Pasid>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), VfioError> {
        let parent = &self.inner.parent;
        let tag = Some(self.tag(pasid));
        parent.check_request(tag, false, false)?;
        self.iommu
            .dma_read(parent.source_id, tag, iova, buf)
            .map_err(|source| VfioError::Dma {
                source_id: parent.source_id,
                source,
            })
    }

    /// Writes DMA at `iova` (user write); `pasid` `None` uses the default PASID.
    pub fn dma_write(&self, pasid: Option<Pasid>, iova: u64, buf: &[u8]) -> Result<(), VfioError> {
        let parent = &self.inner.parent;
        let tag = Some(self.tag(pasid));
        parent.check_request(tag, false, false)?;
        self.iommu
            .dma_write(parent.source_id, tag, iova, buf)
            .map_err(|source| VfioError::Dma {
                source_id: parent.source_id,
                source,
            })
    }
}

impl fmt::Debug for Mdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mdev")
            .field("id", &self.inner.id)
            .field("group", &self.inner.group)
            .field("parent", &self.inner.parent.source_id)
            .field("default_pasid", &self.inner.default_pasid)
            .finish_non_exhaustive()
    }
}
