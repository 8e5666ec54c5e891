//! What `VFIO_IOMMU_GET_INFO` reports: page sizes and the capability chain (migration,
//! IOVA ranges, nesting, and the vsva PASID quota extension), in typed form, and the chain's
//! bytes built from them by a list of fill functions.

use std::sync::atomic::Ordering;

use vsva_uapi::iommu::{NestingInfoVtd, VTD_CAP_MASK, VTD_ECAP_MASK};
use vsva_uapi::vfio::{
    InfoCapHeader, InfoCapIovaRange, InfoCapMigration, InfoCapPasidQuota, IovaRange,
    VFIO_DIRTY_BITMAP_SIZE_MAX, VFIO_IOMMU_INFO_PGSIZES_ALL, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, VFIO_IOMMU_TYPE1_INFO_CAP_VERSION,
};
use vsva_uapi::{encode_nesting_info, NestingCapability, NestingFeatures};
use zerocopy::IntoBytes;

use super::dma::{domain_width, iova_ranges};
use super::{Container, ContainerState, Domain};
use crate::error::VfioError;
use crate::registry::Member;
use crate::types::IommuType;

/// What `VFIO_IOMMU_GET_INFO` reports, in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuInfo {
    /// Supported IOVA page sizes (`VFIO_IOMMU_INFO_PGSIZES`).
    pub iova_pgsizes: u64,
    /// The migration capability (`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`, first in the chain):
    /// the smallest page size and the largest dirty bitmap, as Linux 5.8 reports them.
    pub migration: InfoCapMigration,
    /// The IOVA ranges the container can map (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`, second),
    /// ascending and inclusive.
    pub iova_ranges: Vec<IovaRange>,
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

    fn nesting_capability(&self, st: &ContainerState, domain: &Domain) -> NestingCapability {
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
            addr_width: u16::from(domain_width(domain.s2_levels, cfg.mgaw)),
            pasid_bits: u16::from(pasid_bits),
            vtd: NestingInfoVtd {
                flags: 0,
                padding: 0,
                cap_reg: vfio.iommu.cap() & VTD_CAP_MASK,
                ecap_reg: vfio.iommu.ecap() & VTD_ECAP_MASK,
            },
        }
    }

    /// What `VFIO_IOMMU_GET_INFO` reports: IOVA page sizes; the migration capability; the
    /// IOVA ranges the container can map; for a nesting container the nesting capability
    /// (features, the domain's address width, PASID width = the smallest of the PASID space's
    /// and the container's devices', VT-d CAP/ECAP masked to `VTD_CAP_MASK` /
    /// `VTD_ECAP_MASK`); with a PASID context, the process's PASID quota and usage.
    ///
    /// Errors: `EINVAL` before the IOMMU type is set.
    pub fn info(&self) -> Result<IommuInfo, VfioError> {
        let st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let nesting =
            (domain.ty == IommuType::Nesting).then(|| self.nesting_capability(&st, domain));
        let gaw = domain_width(domain.s2_levels, self.vfio.iommu.config().mgaw);
        let migration = InfoCapMigration {
            header: cap_header(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION),
            flags: 0,
            pad: 0,
            // Linux 5.8: the smallest page size of the IOMMU's bitmap.
            pgsize_bitmap: 1 << VFIO_IOMMU_INFO_PGSIZES_ALL.trailing_zeros(),
            max_dirty_bitmap_size: VFIO_DIRTY_BITMAP_SIZE_MAX,
        };
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
            migration,
            iova_ranges: iova_ranges(gaw),
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

/// The capabilities of the GET_INFO chain, in chain order: Linux 5.8 type1 adds migration,
/// then IOVA ranges; v5 04/15 adds nesting after them; the vsva quota extension comes last.
const CAP_FILLS: [CapFill; 4] = [
    fill_migration_cap,
    fill_iova_range_cap,
    fill_nesting_cap,
    fill_pasid_quota_cap,
];

/// A capability header with `next` = 0, version 1.
fn cap_header(id: u16) -> InfoCapHeader {
    InfoCapHeader {
        id,
        version: VFIO_IOMMU_TYPE1_INFO_CAP_VERSION,
        next: 0,
    }
}

fn fill_migration_cap(info: &IommuInfo) -> Option<Vec<u8>> {
    Some(info.migration.as_bytes().to_vec())
}

fn fill_iova_range_cap(info: &IommuInfo) -> Option<Vec<u8>> {
    let head = InfoCapIovaRange {
        header: cap_header(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE),
        nr_iovas: info.iova_ranges.len() as u32,
        reserved: 0,
    };
    let mut bytes = head.as_bytes().to_vec();
    for range in &info.iova_ranges {
        bytes.extend_from_slice(range.as_bytes());
    }
    Some(bytes)
}

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
