//! The simulated machine: one software IOMMU, its host memory, and the VFIO layer with the
//! configured PCI functions, groups and mdevs.
//!
//! # Host-physical layout
//!
//! `[0, table_pool)` is anonymous memory the IOMMU allocates its own tables from (root and
//! context tables, PASID directories and tables, stage-2 tables). Guest memory that clients
//! register by file descriptor is mapped above it, each region at a fresh host-physical
//! range (equal to the registration address modulo 2 MiB, [`REGION_ALIGN`]), so the IOMMU
//! reads and writes the client's pages directly.
//!
//! # The restore function
//!
//! Besides the configured devices the machine has one PCI function that no client can
//! reach: source id `ff:1f.7` in group [`RESTORE_GROUP`] (both reserved in `config`, which
//! refuses a configured device that uses them). After a restart the daemon gives
//! each live process its PASIDs back before any client connects, by opening a nesting
//! container for that process on this function's group and allocating each recorded PASID
//! with a one-number range, through the same uAPI path a client uses. (`vsva-vfio` has no
//! call that gives a context a given PASID without a container; this is the container.)

use std::sync::Arc;

use vsva_iommu::{HostMemory, Iommu};
use vsva_vfio::{GroupId, PasidCapability, PciFunctionSpec, Vfio, VfioConfig};

use crate::config::{Settings, RESTORE_GROUP, RESTORE_SOURCE_ID};

/// The modulus by which a guest memory region's host-physical address equals the address
/// the process registered it at: `vsva_iommufd::IOVA_ALIGNMENT_MAX` (2 MiB, Linux's
/// `HPAGE_SIZE`). An `IOMMU_IOAS_MAP` without `FIXED_IOVA` picks its IOVA from the low bits
/// of the address it maps up to that size (`iopt_alloc_iova`); the daemon passes the front
/// end the host address of the process's `user_va`, so keeping those bits makes the IOVA the
/// one Linux picks for the process's own address.
pub const REGION_ALIGN: u64 = vsva_iommufd::IOVA_ALIGNMENT_MAX;

/// Why the machine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct MachineError {
    /// The part of the configuration at fault (`devices[2]`, `iommu`, ...).
    pub what: String,
    /// What is wrong with the configuration, naming the device or group.
    pub reason: String,
}

fn err(what: impl Into<String>, reason: impl ToString) -> MachineError {
    MachineError {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Builds the IOMMU and VFIO layer the settings describe.
pub fn build(s: &Settings) -> Result<Vfio, MachineError> {
    let pool = s.table_pool_bytes;
    let pool_len = usize::try_from(pool).map_err(|_| err("iommu.table_pool_mib", "too large"))?;
    let mem =
        HostMemory::anonymous(&[(0, pool_len)]).map_err(|e| err("iommu.table_pool_mib", e))?;
    let iommu = Iommu::new(s.iommu.clone(), mem, 0, pool).map_err(|e| err("iommu", e))?;
    let vfio = Vfio::new(
        Arc::new(iommu),
        VfioConfig {
            pasid_quota: s.pasid_quota,
            table_pages_per_process: usize::try_from(s.table_pool_share_bytes / 4096)
                .map_err(|_| err("iommu.table_pool_share_mib", "too large"))?,
            ..VfioConfig::default()
        },
    )
    .map_err(|e| err("iommu", e))?;
    for (i, d) in s.devices.iter().enumerate() {
        if d.group == Some(RESTORE_GROUP) {
            return Err(err(
                format!("devices[{i}].group"),
                format!("group {RESTORE_GROUP} is reserved for the daemon"),
            ));
        }
        let mut spec = PciFunctionSpec::new(d.source_id, d.group.map(GroupId));
        spec.pasid = (d.pasid_width > 0).then_some(PasidCapability {
            max_pasid_width: d.pasid_width,
            execute: true,
            privileged: true,
        });
        spec.ats = d.ats;
        spec.pri = d.pri;
        vfio.add_pci_function(spec)
            .map_err(|e| err(format!("devices[{i}] ({})", d.source_id), e))?;
    }
    for (i, m) in s.mdevs.iter().enumerate() {
        vfio.create_mdev(m.parent, GroupId(m.group))
            .map_err(|e| err(format!("mdevs[{i}]"), e))?;
    }
    if s.devices.iter().any(|d| d.source_id == RESTORE_SOURCE_ID) {
        return Err(err(
            "devices",
            format!("source id {RESTORE_SOURCE_ID} is reserved for the daemon"),
        ));
    }
    vfio.add_pci_function(PciFunctionSpec::new(
        RESTORE_SOURCE_ID,
        Some(GroupId(RESTORE_GROUP)),
    ))
    .map_err(|e| err("restore function", e))?;
    Ok(vfio)
}

/// Hands out host-physical ranges for guest memory regions, above the table pool and below
/// the IOMMU's address width. Ranges are not reused (the IOMMU's host memory cannot drop a
/// region), so the space is bounded by the per-process limits.
#[derive(Debug)]
pub struct HpaAllocator {
    next: u64,
    end: u64,
}

impl HpaAllocator {
    /// Ranges start at the first 1 GiB boundary at or above `pool_end` and end at
    /// `2^addr_bits`.
    pub fn new(pool_end: u64, addr_bits: u8) -> Self {
        let gib = 1u64 << 30;
        HpaAllocator {
            next: pool_end.div_ceil(gib).max(1) * gib,
            end: 1u64 << addr_bits.min(52),
        }
    }

    /// A fresh range of `size` bytes for memory the process has at `addr`, starting at an
    /// address equal to `addr` modulo [`REGION_ALIGN`] (the rest of a `REGION_ALIGN` block
    /// below it stays unused); `None` when exhausted.
    pub fn alloc(&mut self, size: u64, addr: u64) -> Option<u64> {
        let base = self
            .next
            .checked_next_multiple_of(REGION_ALIGN)?
            .checked_add(addr % REGION_ALIGN)?;
        let end = base.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_ranges_keep_the_low_bits_and_are_disjoint_and_bounded() {
        let mut a = HpaAllocator::new(64 << 20, 39);
        let r1 = a.alloc(4096, 0).unwrap();
        let r2 = a.alloc(3 << 20, 0x7fff_f000).unwrap();
        let r3 = a.alloc(4096, 0x4020_0000).unwrap();
        assert_eq!(r1, 1 << 30);
        assert_eq!(r2 % REGION_ALIGN, 0x1f_f000, "the address's low 21 bits");
        assert!(r2 >= r1 + 4096);
        assert_eq!(r3 % REGION_ALIGN, 0);
        assert!(r3 >= r2 + (3 << 20));
        assert!(a.alloc(1 << 39, 0).is_none());
    }
}
