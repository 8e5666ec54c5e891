//! Stage-2 (second-level) tables the IOMMU builds for its users: create, map, unmap, destroy.

use super::control::Stage2Ctl;
use super::error::IommuError;
use super::Iommu;
use crate::memory::PAGE_SIZE;
use crate::paging::{
    self, entry_addr, sl_entry_is_large, sl_entry_is_present, sl_make_leaf, sl_make_table,
};
use crate::regs::sl_width;

/// Stage-2 mapping permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct S2Perms {
    /// Device reads may use the mapping (R, bit 0 of the entry).
    pub read: bool,
    /// Device writes may use the mapping (W, bit 1).
    pub write: bool,
    /// Execute requests may use the mapping (X, bit 2: stored and reported, not enforced by the model).
    pub execute: bool,
}

impl S2Perms {
    /// Reads only.
    pub const R: S2Perms = S2Perms {
        read: true,
        write: false,
        execute: false,
    };
    /// Read and write.
    pub const RW: S2Perms = S2Perms {
        read: true,
        write: true,
        execute: false,
    };
    /// Read, write and execute.
    pub const RWX: S2Perms = S2Perms {
        read: true,
        write: true,
        execute: true,
    };
}

/// Identifies a stage-2 (second-level) table created by [`Iommu::create_stage2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stage2Id(pub u32);

impl Iommu {
    /// Creates an empty second-level table of `levels` levels (3, 4 or 5, per SAGAW).
    pub fn create_stage2(&self, levels: u8) -> Result<Stage2Id, IommuError> {
        if !self.cfg.supports_sl_levels(levels) {
            return Err(IommuError::Stage2Levels { levels });
        }
        let root = self.pool.alloc(&self.mem)?;
        let mut ctl = self.control();
        ctl.next_stage2 += 1;
        let id = ctl.next_stage2;
        ctl.stage2.insert(
            id,
            Stage2Ctl {
                root,
                levels,
                pages: vec![root],
            },
        );
        Ok(Stage2Id(id))
    }

    /// Root (SSPTPTR) and depth of a stage-2 table.
    pub fn stage2_root(&self, id: Stage2Id) -> Result<(u64, u8), IommuError> {
        let ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        Ok((s.root, s.levels))
    }

    /// How many pool pages a stage-2 table holds (its root and every intermediate table),
    /// all of which [`Iommu::destroy_stage2`] gives back.
    pub fn stage2_pages(&self, id: Stage2Id) -> Result<usize, IommuError> {
        let ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        Ok(s.pages.len())
    }

    /// Destroys a stage-2 table and frees its pages. PASID entries still naming it must be
    /// cleared by the caller first.
    ///
    /// # Errors
    ///
    /// [`IommuError::NoStage2`] changes nothing. Otherwise the table is gone from the IOMMU
    /// even on error: a page the pool refuses to take back stops the freeing, and the pages
    /// after it stay allocated.
    pub fn destroy_stage2(&self, id: Stage2Id) -> Result<(), IommuError> {
        let s = self
            .control()
            .stage2
            .remove(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        for p in s.pages {
            self.pool.free(p)?;
        }
        Ok(())
    }

    /// Maps `[iova, iova + len)` to `[hpa, hpa + len)` with `perms`, using 1 GiB and 2 MiB
    /// pages where both addresses are aligned (and SLLPS allows). Fails without changing
    /// anything on unaligned input, a range beyond the table's width or HAW, or overlap with an
    /// existing mapping. Like hardware page tables, a new mapping needs no invalidation (nothing
    /// not-present is cached).
    ///
    /// # Errors
    ///
    /// Input errors ([`IommuError::Unaligned`], [`IommuError::TooWide`],
    /// [`IommuError::NoStage2`]) change nothing. An [`IommuError::Overlap`] or an exhausted
    /// pool part-way unmaps what this call had mapped, so the translations are as before;
    /// intermediate table pages it created stay in the table (empty) until
    /// [`Iommu::destroy_stage2`].
    pub fn stage2_map(
        &self,
        id: Stage2Id,
        iova: u64,
        hpa: u64,
        len: u64,
        perms: S2Perms,
    ) -> Result<(), IommuError> {
        self.stage2_map_counting(id, iova, hpa, len, perms, &mut 0)
    }

    /// [`Iommu::stage2_map`], adding to `*added` the table pages the call put into the stage
    /// 2, so that a caller charging them needs no [`Iommu::stage2_pages`] before and after.
    ///
    /// # Errors
    ///
    /// As [`Iommu::stage2_map`]. The table pages a failed call created stay in the stage 2
    /// (until [`Iommu::destroy_stage2`]) and are counted in `*added` too.
    pub fn stage2_map_counting(
        &self,
        id: Stage2Id,
        iova: u64,
        hpa: u64,
        len: u64,
        perms: S2Perms,
        added: &mut usize,
    ) -> Result<(), IommuError> {
        for (f, v) in [("iova", iova), ("hpa", hpa), ("len", len)] {
            if v % PAGE_SIZE != 0 || (f == "len" && v == 0) {
                return Err(IommuError::Unaligned { field: f, value: v });
            }
        }
        let mut ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        let (root, levels) = (s.root, s.levels);
        let width = sl_width(levels);
        let end = iova.checked_add(len).ok_or(IommuError::TooWide {
            field: "iova",
            end: u64::MAX,
            width,
        })?;
        if end > 1u64 << width {
            return Err(IommuError::TooWide {
                field: "iova",
                end,
                width,
            });
        }
        let hend = hpa.saturating_add(len);
        if hend > 1u64 << self.cfg.haw() {
            return Err(IommuError::TooWide {
                field: "hpa",
                end: hend,
                width: self.cfg.haw(),
            });
        }
        let mut new_pages = Vec::new();
        let mut off = 0;
        let mut result = Ok(());
        while off < len {
            let (va, pa, rest) = (iova + off, hpa + off, len - off);
            match self.s2_map_one(root, levels, va, pa, rest, perms, &mut new_pages) {
                Ok(size) => off += size,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() && off > 0 {
            // Roll back what was mapped; it cannot split pages we created ourselves.
            self.s2_unmap_range(root, levels, iova, off, false)?;
        }
        let s = ctl
            .stage2
            .get_mut(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        *added += new_pages.len();
        s.pages.extend(new_pages);
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn s2_map_one(
        &self,
        root: u64,
        levels: u8,
        va: u64,
        pa: u64,
        rest: u64,
        perms: S2Perms,
        new_pages: &mut Vec<u64>,
    ) -> Result<u64, IommuError> {
        let mut table = root;
        let mut level = levels;
        loop {
            let size = paging::level_size(level);
            let addr = table + paging::level_index(va, level) * 8;
            let e = self.mem.load_u64(addr)?;
            let present = sl_entry_is_present(e);
            let large_ok = match level {
                3 => self.cfg.sl_1g,
                2 => self.cfg.sl_2m,
                1 => true,
                _ => false,
            };
            if large_ok
                && !present
                && va.is_multiple_of(size)
                && pa.is_multiple_of(size)
                && rest >= size
            {
                let leaf = sl_make_leaf(pa, level, perms.read, perms.write, perms.execute);
                self.mem.store_u64(addr, leaf)?;
                return Ok(size);
            }
            if level == 1 || (present && sl_entry_is_large(e)) {
                return Err(IommuError::Overlap { iova: va });
            }
            table = if present {
                entry_addr(e)
            } else {
                let t = self.pool.alloc(&self.mem)?;
                new_pages.push(t);
                self.mem.store_u64(addr, sl_make_table(t))?;
                t
            };
            level -= 1;
        }
    }

    /// Unmaps `[iova, iova + len)`; holes are skipped. Fails without changing anything if the
    /// range would split a large page. Returns the bytes unmapped. Cached translations stay
    /// until the caller invalidates ([`Invalidation::IotlbDomainPages`](crate::Invalidation::IotlbDomainPages) for each DID using the
    /// table), as on hardware.
    pub fn stage2_unmap(&self, id: Stage2Id, iova: u64, len: u64) -> Result<u64, IommuError> {
        for (f, v) in [("iova", iova), ("len", len)] {
            if v % PAGE_SIZE != 0 || (f == "len" && v == 0) {
                return Err(IommuError::Unaligned { field: f, value: v });
            }
        }
        let ctl = self.control();
        let s = ctl
            .stage2
            .get(&id.0)
            .ok_or(IommuError::NoStage2 { id: id.0 })?;
        let (root, levels) = (s.root, s.levels);
        self.s2_unmap_range(root, levels, iova, len, true)?;
        self.s2_unmap_range(root, levels, iova, len, false)
    }

    pub(super) fn s2_unmap_range(
        &self,
        root: u64,
        levels: u8,
        iova: u64,
        len: u64,
        check_only: bool,
    ) -> Result<u64, IommuError> {
        let end = iova.saturating_add(len).min(1u64 << sl_width(levels));
        let mut va = iova;
        let mut unmapped = 0;
        while va < end {
            let mut table = root;
            let mut level = levels;
            let step = loop {
                let size = paging::level_size(level);
                let addr = table + paging::level_index(va, level) * 8;
                let e = self.mem.load_u64(addr)?;
                if !sl_entry_is_present(e) {
                    break size - (va & (size - 1));
                }
                if level == 1 || sl_entry_is_large(e) {
                    let page = va & !(size - 1);
                    if page < iova || page + size > end {
                        return Err(IommuError::PartialLargePage {
                            start: iova,
                            end,
                            page,
                            size,
                        });
                    }
                    if !check_only {
                        self.mem.store_u64(addr, 0)?;
                        unmapped += size;
                    }
                    break size;
                }
                table = entry_addr(e);
                level -= 1;
            };
            va = va.saturating_add(step);
        }
        Ok(unmapped)
    }
}

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn stage2_map_errors_and_rollback() {
        let io = iommu();
        let s2 = io.create_stage2(4).unwrap();
        assert_eq!(
            io.create_stage2(5),
            Err(IommuError::Stage2Levels { levels: 5 })
        );
        assert_eq!(
            io.stage2_map(s2, 0x1001, 0, 0x1000, S2Perms::R),
            Err(IommuError::Unaligned {
                field: "iova",
                value: 0x1001
            })
        );
        assert_eq!(
            io.stage2_map(s2, 0, 0, 0, S2Perms::R),
            Err(IommuError::Unaligned {
                field: "len",
                value: 0
            })
        );
        assert!(matches!(
            io.stage2_map(s2, 1 << 48, 0, 0x1000, S2Perms::R),
            Err(IommuError::TooWide { field: "iova", .. })
        ));
        io.stage2_map(s2, 0x20_0000, 0x20_0000, 2 * MB, S2Perms::RW)
            .unwrap();
        assert_eq!(
            io.stage2_map(s2, 0x3f_f000, 0, 0x2000, S2Perms::R),
            Err(IommuError::Overlap { iova: 0x3f_f000 })
        );
        // The part before the overlap was rolled back.
        assert_eq!(
            io.stage2_map(s2, 0x1f_f000, 0x1000, 0x1000, S2Perms::R),
            Ok(())
        );
        assert_eq!(
            io.stage2_map(s2, 0x1f_e000, 0, 0x3000, S2Perms::R),
            Err(IommuError::Overlap { iova: 0x1f_f000 })
        );
        assert_eq!(
            io.stage2_map(s2, 0x1f_e000, 0, 0x1000, S2Perms::R),
            Ok(()),
            "rolled back"
        );
        assert!(matches!(
            io.stage2_unmap(s2, 0x20_0000, 0x1000),
            Err(IommuError::PartialLargePage { size: SIZE_2M, .. })
        ));
        assert_eq!(
            io.stage2_unmap(s2, 0x1f_c000, 0x20_4000),
            Ok(0x20_2000),
            "holes skipped"
        );
        assert_eq!(io.stage2_unmap(s2, 0, 0x4000_0000), Ok(0));
        io.stage2_map(s2, SIZE_1G, 0, SIZE_1G, S2Perms::R).unwrap();
        assert_eq!(io.stage2_unmap(s2, SIZE_1G, SIZE_1G), Ok(SIZE_1G));
        io.destroy_stage2(s2).unwrap();
        assert_eq!(io.stage2_root(s2), Err(IommuError::NoStage2 { id: s2.0 }));
    }

    /// `stage2_map_counting` counts exactly the table pages `stage2_pages` sees added, also
    /// for a map refused part-way (its tables stay), and none for a map into existing tables.
    #[test]
    fn stage2_map_counting_counts_the_tables_added() {
        let io = iommu();
        let s2 = io.create_stage2(4).unwrap();
        let map = |iova: u64, len: u64| {
            let before = io.stage2_pages(s2).unwrap();
            let mut added = 0;
            let r = io.stage2_map_counting(s2, iova, 0, len, S2Perms::RW, &mut added);
            assert_eq!(added, io.stage2_pages(s2).unwrap() - before, "at {iova:#x}");
            (r, added)
        };
        assert_eq!(
            map(0x1000, 0x1000),
            (Ok(()), 3),
            "a table per level below the root"
        );
        assert_eq!(map(0x2000, 0x1000), (Ok(()), 0), "the same tables");
        let far = 1u64 << 39;
        assert_eq!(map(far + 0x1000, 0x1000), (Ok(()), 3), "another root entry");
        // From a new 1 GiB region below `far` (two new tables) into `far`'s tables, refused
        // at the page mapped above: rolled back, its two tables stay and are counted.
        assert_eq!(
            map(far - 0x1000, 0x3000),
            (Err(IommuError::Overlap { iova: far + 0x1000 }), 2)
        );
        assert_eq!(map(far - 0x1000, 0x1000), (Ok(()), 0), "they were kept");
        io.destroy_stage2(s2).unwrap();
    }
}
