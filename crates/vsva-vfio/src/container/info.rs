//! What `VFIO_IOMMU_GET_INFO` reports: page sizes, the nesting capability and the PASID
//! quota capability, in typed form, and the capability chain built from them.

use std::sync::atomic::Ordering;

use vsva_uapi::iommu::NestingInfoVtd;
use vsva_uapi::vfio::{InfoCapPasidQuota, VFIO_IOMMU_INFO_PGSIZES_ALL};
use vsva_uapi::{encode_nesting_info, AddrWidth, NestingCapability, NestingFeatures};
use zerocopy::IntoBytes;

use super::{Container, ContainerState};
use crate::error::VfioError;
use crate::registry::Member;
use crate::types::IommuType;

/// What `VFIO_IOMMU_GET_INFO` reports, in typed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuInfo {
    /// Supported IOVA page sizes (`VFIO_IOMMU_INFO_PGSIZES`).
    pub iova_pgsizes: u64,
    /// The nesting capability (`VFIO_IOMMU_TYPE1_INFO_CAP_NESTING`), for a nesting container.
    pub nesting: Option<NestingCapability>,
    /// The process's PASID quota and usage ([`crate::VSVA_INFO_CAP_PASID_QUOTA`]), for a
    /// container with a PASID context.
    pub pasid_quota: Option<InfoCapPasidQuota>,
}

impl Container {
    /// The nesting features this host offers a nesting container.
    pub(super) fn features(&self) -> NestingFeatures {
        if self.vfio.config.pasid_enabled {
            NestingFeatures::ALL
        } else {
            NestingFeatures::empty()
        }
    }

    fn nesting_capability(&self, st: &ContainerState) -> NestingCapability {
        let vfio = &self.vfio;
        let cfg = vfio.iommu.config();
        let pasid_bits = if vfio.config.pasid_enabled {
            st.groups
                .iter()
                .flat_map(|(_, ms)| ms.iter().map(Member::pasid_width))
                .fold(vfio.space.pasid_bits(), u8::min)
        } else {
            0
        };
        NestingCapability {
            features: self.features(),
            addr_width: if cfg.fl5lp {
                AddrWidth::Bits57
            } else {
                AddrWidth::Bits48
            },
            pasid_bits: u16::from(pasid_bits),
            vtd: NestingInfoVtd {
                flags: 0,
                padding: 0,
                cap_reg: vfio.iommu.cap(),
                ecap_reg: vfio.iommu.ecap(),
            },
        }
    }

    /// What `VFIO_IOMMU_GET_INFO` reports: IOVA page sizes; for a nesting container the
    /// nesting capability (features, first-level address width, PASID width = the smallest of
    /// the PASID space's and the container's devices', VT-d CAP/ECAP); with a PASID context,
    /// the process's PASID quota and usage.
    ///
    /// Errors: `EINVAL` before the IOMMU type is set.
    pub fn info(&self) -> Result<IommuInfo, VfioError> {
        let st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let nesting = (domain.ty == IommuType::Nesting).then(|| self.nesting_capability(&st));
        let pasid_quota = if self.has_mm.load(Ordering::Acquire) {
            let slot = self.slot.lock();
            slot.mm
                .as_ref()
                .map(|ms| InfoCapPasidQuota::new(ms.set.quota(), ms.set.owned()))
        } else {
            None
        };
        Ok(IommuInfo {
            iova_pgsizes: VFIO_IOMMU_INFO_PGSIZES_ALL,
            nesting,
            pasid_quota,
        })
    }

    /// The nesting capability of a nesting container (`EINVAL` before the type is set,
    /// `EOPNOTSUPP` for a type1 v2 container).
    pub fn nesting_info(&self) -> Result<NestingCapability, VfioError> {
        self.info()?.nesting.ok_or(VfioError::NestingUnsupported {
            container: self.id,
            op: "report nesting info",
            reason: "it is not a nesting container",
        })
    }
}

/// Fills one capability of the GET_INFO chain from the typed info: its bytes with `next` = 0,
/// or `None` when the container does not report it.
type CapFill = fn(&IommuInfo) -> Option<Vec<u8>>;

/// The capabilities of the GET_INFO chain, in chain order.
const CAP_FILLS: [CapFill; 2] = [fill_nesting_cap, fill_pasid_quota_cap];

fn fill_nesting_cap(info: &IommuInfo) -> Option<Vec<u8>> {
    info.nesting.as_ref().map(|cap| encode_nesting_info(0, cap))
}

fn fill_pasid_quota_cap(info: &IommuInfo) -> Option<Vec<u8>> {
    info.pasid_quota.as_ref().map(|cap| cap.as_bytes().to_vec())
}

/// The capability chain of `info`, to be placed `base` bytes from the start of the info
/// struct: each capability's `next` is the offset of the one after it, the last's is 0.
/// Empty when there is no capability.
pub(crate) fn info_cap_chain(info: &IommuInfo, base: usize) -> Vec<u8> {
    /// Offset of `next` in `vfio_info_cap_header`.
    const NEXT: usize = 4;
    let mut chain = Vec::new();
    let mut last: Option<usize> = None;
    for fill in CAP_FILLS {
        let Some(cap) = fill(info) else { continue };
        if let Some(at) = last {
            let next = (base + chain.len()) as u32;
            chain[at + NEXT..at + NEXT + 4].copy_from_slice(&next.to_le_bytes());
        }
        last = Some(chain.len());
        chain.extend_from_slice(&cap);
    }
    chain
}
