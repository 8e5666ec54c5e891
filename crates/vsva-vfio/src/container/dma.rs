//! `VFIO_IOMMU_MAP_DMA` / `UNMAP_DMA` in typed form: the container's stage-2 table.

use vsva_iommu::regs::sl_width;
use vsva_iommu::{Invalidation, PageRange, S2Perms, INTERRUPT_RANGE};
use vsva_uapi::vfio::IovaRange;

use super::{Container, ContainerState, Mapping};
use crate::cleanup::{fenced_is_done, must_succeed};
use crate::error::VfioError;
use crate::types::IommuType;

/// A `VFIO_IOMMU_MAP_DMA` request in typed form.
///
/// In this userspace model `vaddr` is the host-physical address of the memory in the IOMMU's
/// host memory ([`vsva_iommu::Iommu::memory`]): what a process's virtual address would pin
/// to. `iova` is the guest-physical address the stage 2 maps it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMapping {
    /// Host-physical address of the memory (4 KiB aligned).
    pub vaddr: u64,
    /// I/O virtual (guest-physical) address (4 KiB aligned).
    pub iova: u64,
    /// Length in bytes (a non-zero multiple of 4 KiB).
    pub size: u64,
    /// Devices may read it.
    pub read: bool,
    /// Devices may write it.
    pub write: bool,
}

impl Container {
    /// Maps guest memory in the container's stage 2 (`VFIO_IOMMU_MAP_DMA`).
    ///
    /// Errors: `EINVAL` before the type is set, for no permission, a zero or unaligned size,
    /// unaligned addresses, a wrapping range, or a range outside the container's IOVA ranges
    /// (past the domain's address width, or touching the interrupt window
    /// `0xfee0_0000..=0xfeef_ffff`, as GET_INFO's IOVA-range capability reports); `EEXIST`
    /// for an overlap; `EFAULT` when `vaddr` is not host memory; `ENOSPC` past the mapping
    /// limit; `ENOMEM` when the IOMMU's table pool is exhausted.
    pub fn map_dma(&self, map: &DmaMapping) -> Result<(), VfioError> {
        let mut st = self.lock_state();
        let domain = st.domain.as_mut().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        if !map.read && !map.write {
            return Err(VfioError::invalid(
                "flags",
                0,
                "a mapping needs VFIO_DMA_MAP_FLAG_READ or VFIO_DMA_MAP_FLAG_WRITE",
            ));
        }
        check_page_multiple("size", map.size, false)?;
        check_page_multiple("iova", map.iova, true)?;
        check_page_multiple("vaddr", map.vaddr, true)?;
        let end = map
            .iova
            .checked_add(map.size)
            .ok_or_else(|| VfioError::invalid("size", map.size, "iova + size wraps around"))?;
        if map.vaddr.checked_add(map.size).is_none() {
            return Err(VfioError::invalid(
                "size",
                map.size,
                "vaddr + size wraps around",
            ));
        }
        let last = end - 1;
        let gaw = domain_width(domain.s2_levels, self.vfio.iommu.config().mgaw);
        if !iova_ranges(gaw)
            .iter()
            .any(|r| r.start <= map.iova && last <= r.end)
        {
            // Linux 5.8 `vfio_dma_do_map`: `vfio_iommu_iova_dma_valid` → EINVAL.
            return Err(VfioError::invalid(
                "iova",
                map.iova,
                "the range is not inside one IOVA range of the container (GET_INFO's \
                 IOVA-range capability)",
            ));
        }
        if let Some((&iova, m)) = domain.mappings.range(..end).next_back() {
            if iova + m.size > map.iova {
                return Err(VfioError::DmaExists {
                    iova: map.iova,
                    size: map.size,
                    existing_iova: iova,
                    existing_size: m.size,
                });
            }
        }
        let limit = self.vfio.config.dma_entry_limit;
        if domain.mappings.len() >= limit {
            return Err(VfioError::DmaLimit {
                container: self.id,
                limit,
            });
        }
        let iommu = &self.vfio.iommu;
        if !iommu.memory().is_backed(map.vaddr, map.size) {
            return Err(VfioError::DmaUnbacked {
                vaddr: map.vaddr,
                size: map.size,
            });
        }
        // Readable memory is executable as far as stage 2 is concerned; the guest's first
        // level decides execute rights.
        let perms = S2Perms {
            read: map.read,
            write: map.write,
            execute: map.read,
        };
        self.check_table_share()?;
        let before = self.stage2_pages(domain.stage2);
        let mapped = iommu.stage2_map(domain.stage2, map.iova, map.vaddr, map.size, perms);
        // Table pages a map creates stay in the stage 2 (even when it fails) until it goes.
        let held = self
            .slot
            .charge_table_pages(self.stage2_pages(domain.stage2).saturating_sub(before));
        mapped.map_err(|e| VfioError::iommu("map stage 2", e))?;
        let limit = self.vfio.config.table_pages_per_process;
        if held > limit {
            must_succeed(
                "undo a map past the table-pool share",
                iommu.stage2_unmap(domain.stage2, map.iova, map.size),
            );
            return Err(VfioError::TablePoolShare {
                process: self.process,
                held,
                limit,
            });
        }
        domain.mappings.insert(map.iova, Mapping { size: map.size });
        Ok(())
    }

    /// Unmaps every mapping inside `[iova, iova + size)` (`VFIO_IOMMU_UNMAP_DMA`) and flushes
    /// the IOTLB entries (nested ones included) and device TLBs that could hold them. Returns
    /// the bytes unmapped (0 if nothing was mapped there).
    ///
    /// Errors: `EINVAL` before the type is set, for a zero or unaligned size, an unaligned or
    /// wrapping range, or one that would split a mapping (type1 v2).
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64, VfioError> {
        check_page_multiple("size", size, false)?;
        check_page_multiple("iova", iova, true)?;
        let end = iova
            .checked_add(size)
            .ok_or_else(|| VfioError::invalid("size", size, "iova + size wraps around"))?;
        let mut st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let split = |at: u64| {
            domain
                .mappings
                .range(..=at)
                .next_back()
                .filter(|(&start, m)| start < at && start + m.size > at)
                .map(|(&start, m)| VfioError::DmaSplit {
                    iova,
                    size,
                    map_iova: start,
                    map_size: m.size,
                })
        };
        // Type1 v1 removes every mapping the range touches, whole; v2 (and nesting) refuse to
        // split one (Linux 5.8 `vfio_dma_do_unmap`).
        let first = if domain.ty == IommuType::Type1 {
            domain
                .mappings
                .range(..iova)
                .next_back()
                .filter(|(&start, m)| start + m.size > iova)
                .map_or(iova, |(&start, _)| start)
        } else {
            if let Some(err) = split(iova).or_else(|| split(end)) {
                return Err(err);
            }
            iova
        };
        let victims: Vec<(u64, u64)> = domain
            .mappings
            .range(first..end)
            .map(|(&start, m)| (start, m.size))
            .collect();
        Ok(self.unmap_ranges(&mut st, &victims))
    }

    /// Unmaps everything (`VFIO_DMA_UNMAP_FLAG_ALL`); returns the bytes unmapped.
    /// Errors: `EINVAL` before the type is set.
    pub fn unmap_all_dma(&self) -> Result<u64, VfioError> {
        let mut st = self.lock_state();
        let domain = st.domain.as_ref().ok_or(VfioError::NoIommu {
            container: self.id,
            cmd: 0,
        })?;
        let victims: Vec<(u64, u64)> = domain
            .mappings
            .iter()
            .map(|(&start, m)| (start, m.size))
            .collect();
        Ok(self.unmap_ranges(&mut st, &victims))
    }

    fn unmap_ranges(&self, st: &mut ContainerState, victims: &[(u64, u64)]) -> u64 {
        let ContainerState {
            targets, domain, ..
        } = st;
        let Some(domain) = domain.as_mut() else {
            return 0;
        };
        let iommu = &self.vfio.iommu;
        let mamv = iommu.config().mamv;
        let mut unmapped = 0;
        for &(start, size) in victims {
            // Whole mappings only, so the IOMMU cannot refuse to split a large page.
            if iommu.stage2_unmap(domain.stage2, start, size).is_ok() {
                domain.mappings.remove(&start);
                unmapped += size;
                let range = PageRange::covering(start, size);
                let inv = if range.am <= mamv {
                    Invalidation::IotlbDomainPages {
                        did: domain.did,
                        range,
                        ih: false,
                    }
                } else {
                    Invalidation::IotlbDomain { did: domain.did }
                };
                must_succeed("flush unmapped pages", iommu.invalidate(&inv));
            }
        }
        if unmapped > 0 {
            // Device TLBs hold translations through the stage 2 for every PASID: each device
            // drops all of them, and the unmap returns once each completed or was fenced.
            let invs: Vec<Invalidation> = targets
                .iter()
                .map(|&source_id| Invalidation::DeviceTlbAll { source_id })
                .collect();
            must_succeed(
                "flush device TLBs after an unmap",
                fenced_is_done(
                    "flush device TLBs after an unmap",
                    iommu.invalidate_batch(&invs),
                ),
            );
        }
        unmapped
    }
}

/// The IOVA ranges a domain can map, ascending and inclusive: its aperture `[0, 2^gaw - 1]`
/// (`gaw` = [`domain_width`]) less the interrupt window ([`INTERRUPT_RANGE`], the reserved
/// region the VT-d driver reports for every device: interrupt messages, never DMA), as Linux
/// 5.8 type1 builds its IOVA list from the domain geometry and the reserved regions.
pub(super) fn iova_ranges(gaw: u8) -> Vec<IovaRange> {
    let top = u64::MAX >> (64 - u32::from(gaw));
    let (lo, hi) = INTERRUPT_RANGE;
    if top < lo {
        return vec![IovaRange { start: 0, end: top }];
    }
    vec![
        IovaRange {
            start: 0,
            end: lo - 1,
        },
        IovaRange {
            start: hi + 1,
            end: top,
        },
    ]
}

/// The domain's address width (`dmar_domain->gaw`): the stage 2's input width (AGAW) capped at
/// CAP.MGAW, as the VT-d driver sets it when the first device attaches.
pub(super) fn domain_width(s2_levels: u8, mgaw: u8) -> u8 {
    sl_width(s2_levels).min(mgaw)
}

/// `EINVAL` unless `value` is a multiple of 4 KiB (and non-zero unless `zero_ok`).
fn check_page_multiple(field: &'static str, value: u64, zero_ok: bool) -> Result<(), VfioError> {
    if value & 0xfff != 0 {
        return Err(VfioError::invalid(
            field,
            value,
            "must be a multiple of 4096",
        ));
    }
    if value == 0 && !zero_ok {
        return Err(VfioError::invalid(field, 0, "must not be zero"));
    }
    Ok(())
}
