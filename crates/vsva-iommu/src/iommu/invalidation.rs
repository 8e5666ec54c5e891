//! Applying invalidation requests to the caches, and passing the device-TLB ones on to
//! devices that cache translations themselves.

use std::sync::atomic::Ordering;

use super::error::IommuError;
use super::Iommu;
use crate::ats::{DevTlbInvalidation, DevTlbScope};
use crate::cache::{device_tag, tag_key, Caches, NO_PASID, PAGE_INVALIDATION_LIMIT};
use crate::invalidate::{ContextCacheScope, Invalidation, PasidCacheScope};
use crate::stats::Counter;

impl Iommu {
    /// Processes an invalidation request (as a completed queued-invalidation descriptor: when
    /// this returns, no lookup starting afterwards uses an entry it covers). A device-TLB
    /// invalidation also goes, through the registered [`crate::DevTlbSink`], to the device
    /// if it may hold a covered translation in its own cache, and this returns only once the
    /// device completed or was fenced.
    ///
    /// # Errors
    ///
    /// A request the IOMMU does not accept ([`IommuError::Invalidation`]) changes nothing.
    /// [`IommuError::DevTlbTimeout`]: the device did not complete; everything else was done
    /// (the IOMMU's caches are invalidated) and the device is fenced.
    pub fn invalidate(&self, inv: &Invalidation) -> Result<(), IommuError> {
        self.invalidate_batch(std::slice::from_ref(inv))
    }

    /// Processes several invalidation requests in order, as one submission to the
    /// invalidation queue ending in a wait descriptor: every request is checked first, the
    /// IOMMU's caches are invalidated, then the device-TLB requests go to the devices in one
    /// call of the sink, and this returns once each device completed or was fenced.
    ///
    /// # Errors
    ///
    /// A request the IOMMU does not accept ([`IommuError::Invalidation`]): nothing is
    /// invalidated. [`IommuError::DevTlbTimeout`]: devices did not complete; everything else
    /// was done and those devices are fenced.
    pub fn invalidate_batch(&self, invs: &[Invalidation]) -> Result<(), IommuError> {
        for inv in invs {
            inv.validate(&self.cfg)?;
        }
        let mut devices = Vec::new();
        for inv in invs {
            self.apply(inv);
            devices.extend(device_request(inv));
        }
        let fenced = self.devtlb_notify(&devices);
        if fenced.is_empty() {
            Ok(())
        } else {
            Err(IommuError::DevTlbTimeout { fenced })
        }
    }

    pub(super) fn apply(&self, inv: &Invalidation) {
        self.stats.inc(Counter::Invalidations);
        self.apply_scoped(inv);
        // Every invalidation retires the whole front cache (after the scoped work, so a lookup
        // that sees the new epoch also sees the scoped removals).
        self.caches.retire_front();
    }

    pub(super) fn apply_scoped(&self, inv: &Invalidation) {
        let c = &self.caches;
        match *inv {
            Invalidation::IotlbGlobal => c.global.iotlb.bump(),
            Invalidation::IotlbDomain { did } => c.domain(did).iotlb.bump(),
            Invalidation::IotlbDomainPages { did, range, ih } => {
                let dom = c.domain(did);
                dom.sl_psi.bump();
                dom.nested.bump();
                let (start, len) = range.span();
                if range.pages() > PAGE_INVALIDATION_LIMIT {
                    dom.iotlb.bump();
                    return;
                }
                let sizes = dom.sl_sizes.load(Ordering::Acquire);
                Caches::remove_range(&c.iotlb, tag_key(did, NO_PASID), start, len, sizes);
                if !ih {
                    Caches::remove_psc_range(&c.sl_psc, u64::from(did), start, len);
                }
            }
            Invalidation::PasidIotlbAll { did } => c.domain(did).fl.bump(),
            Invalidation::PasidIotlb { did, pasid } => c.domain(did).pasids.get(pasid).iotlb.bump(),
            Invalidation::PasidIotlbPages {
                did,
                pasid,
                range,
                ih,
            } => {
                let pg = c.domain(did).pasids.get(pasid);
                pg.psi.bump();
                if range.pages() > PAGE_INVALIDATION_LIMIT {
                    pg.iotlb.bump();
                    return;
                }
                let (start, len) = range.span();
                let tag = tag_key(did, pasid);
                Caches::remove_range(&c.iotlb, tag, start, len, pg.sizes.load(Ordering::Acquire));
                if !ih {
                    Caches::remove_psc_range(&c.fl_psc, tag, start, len);
                }
            }
            Invalidation::PasidCache(PasidCacheScope::All) => c.global.pc.bump(),
            Invalidation::PasidCache(PasidCacheScope::Domain { did }) => c.domain(did).pc.bump(),
            Invalidation::PasidCache(PasidCacheScope::Pasid { did, pasid }) => {
                c.domain(did).pasids.get(pasid).pc.bump()
            }
            Invalidation::ContextCache(ContextCacheScope::All) => c.global.ctx.bump(),
            Invalidation::ContextCache(ContextCacheScope::Device { source_id }) => {
                c.device(source_id.0).ctx.bump()
            }
            Invalidation::DeviceTlbAll { source_id } => c.device(source_id.0).devtlb.bump(),
            Invalidation::DeviceTlb {
                source_id,
                pasid,
                pages,
            } => {
                let p = pasid.unwrap_or(NO_PASID);
                let dp = c.device(source_id.0).pasids.get(p);
                match pages {
                    None => dp.devtlb.bump(),
                    Some(range) => {
                        dp.psi.bump();
                        if range.pages() > PAGE_INVALIDATION_LIMIT {
                            dp.devtlb.bump();
                            return;
                        }
                        let (start, len) = range.span();
                        let tag = device_tag(source_id.0, p);
                        Caches::remove_range(
                            &c.devtlb,
                            tag,
                            start,
                            len,
                            dp.sizes.load(Ordering::Acquire),
                        );
                    }
                }
            }
        }
    }
}

/// The device-side form of a device-TLB invalidation, `None` for the other kinds.
pub(super) fn device_request(inv: &Invalidation) -> Option<DevTlbInvalidation> {
    match *inv {
        Invalidation::DeviceTlbAll { source_id } => Some(DevTlbInvalidation {
            source_id,
            scope: DevTlbScope::All,
        }),
        Invalidation::DeviceTlb {
            source_id,
            pasid,
            pages,
        } => Some(DevTlbInvalidation {
            source_id,
            scope: match pages {
                None => DevTlbScope::Pasid(pasid),
                Some(range) => {
                    let (addr, len) = range.span();
                    DevTlbScope::Range { pasid, addr, len }
                }
            },
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    /// For each PASID-based IOTLB granularity: without the invalidation the old page is served,
    /// with it the new one is.
    #[test]
    fn iotlb_invalidation_granularities() {
        type Make = Box<dyn Fn(u16, u32, u64) -> Invalidation>;
        let cases: Vec<(&str, Make)> = vec![
            ("global", Box::new(|_, _, _| Invalidation::IotlbGlobal)),
            (
                "domain",
                Box::new(|did, _, _| Invalidation::IotlbDomain { did }),
            ),
            (
                "all pasids of did",
                Box::new(|did, _, _| Invalidation::PasidIotlbAll { did }),
            ),
            (
                "pasid",
                Box::new(|did, pasid, _| Invalidation::PasidIotlb { did, pasid }),
            ),
            (
                "page",
                Box::new(|did, pasid, va| Invalidation::PasidIotlbPages {
                    did,
                    pasid,
                    range: PageRange { addr: va, am: 0 },
                    ih: true,
                }),
            ),
            (
                "page range",
                Box::new(|did, pasid, va| Invalidation::PasidIotlbPages {
                    did,
                    pasid,
                    range: PageRange {
                        addr: va & !0xffff,
                        am: 4,
                    },
                    ih: false,
                }),
            ),
        ];
        for (name, inv) in cases {
            let io = iommu();
            attach(&io, SID);
            let root = fl_pasid(&io, SID, 8, 2);
            let va = 0x1234_5000;
            map(&io, root, va, 0x10_0000, SIZE_4K, RW | US);
            map(&io, root, va + 0x1000, 0x11_0000, SIZE_4K, RW | US);
            assert_eq!(read_addr(&io, SID, Some(8), va), 0x10_0000);
            remap_fl(&io, root, va, 0x20_0000);
            assert_eq!(
                read_addr(&io, SID, Some(8), va),
                0x10_0000,
                "{name}: stale entry served without invalidation"
            );
            // An unrelated invalidation does not cover it.
            io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 9 })
                .unwrap();
            io.invalidate(&Invalidation::PasidIotlbPages {
                did: 2,
                pasid: 8,
                range: PageRange {
                    addr: va + 0x1000,
                    am: 0,
                },
                ih: false,
            })
            .unwrap();
            io.invalidate(&Invalidation::IotlbDomain { did: 3 })
                .unwrap();
            assert_eq!(
                read_addr(&io, SID, Some(8), va),
                0x10_0000,
                "{name}: unrelated invalidation"
            );
            io.invalidate(&inv(2, 8, va)).unwrap();
            assert_eq!(
                read_addr(&io, SID, Some(8), va),
                0x20_0000,
                "{name}: new mapping after invalidation"
            );
        }
    }

    #[test]
    fn page_selective_invalidation_covers_large_pages() {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 8, 2);
        map(&io, root, 0x4000_0000, 0x20_0000, SIZE_2M, RW | US);
        assert_eq!(read_addr(&io, SID, Some(8), 0x4010_0000), 0x30_0000);
        let pde = entry_addr(&io, root, 0x4000_0000, 2);
        io.memory()
            .store_u64(pde, 0x60_0000 | paging::P | PS | RW | US)
            .unwrap();
        // Naming a single 4 KiB page inside the 2 MiB page drops the 2 MiB entry.
        io.invalidate(&Invalidation::PasidIotlbPages {
            did: 2,
            pasid: 8,
            range: PageRange {
                addr: 0x4010_0000,
                am: 0,
            },
            ih: true,
        })
        .unwrap();
        assert_eq!(read_addr(&io, SID, Some(8), 0x4010_0000), 0x70_0000);
        assert!(matches!(
            io.invalidate(&Invalidation::PasidIotlbPages {
                did: 2,
                pasid: 8,
                range: PageRange { addr: 0, am: 40 },
                ih: true
            }),
            Err(IommuError::Invalidation(InvalidationError::AddressMask {
                am: 40,
                max: 18
            }))
        ));
    }

    #[test]
    fn paging_structure_cache_and_leaf_hint() {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 8, 2);
        map(&io, root, 0x20_0000, 0x10_0000, SIZE_4K, RW | US);
        map(&io, root, 0x20_1000, 0x11_0000, SIZE_4K, RW | US);
        io.translate(SID, Some(8), 0x20_0000, Access::READ).unwrap();
        // Point the PDE at a new page table mapping 0x20_1000 elsewhere.
        let mut store = io.host_table_store();
        let new_pt = store.alloc_table().unwrap();
        store.write(new_pt + 8, 0x33_0000 | paging::P | RW | US);
        let pde = entry_addr(&io, root, 0x20_0000, 2);
        let old = io.memory().load_u64(pde).unwrap();
        io.memory().store_u64(pde, new_pt | (old & 0xfff)).unwrap();
        // IH = 1 keeps the paging-structure cache: the old page table is still used.
        io.invalidate(&Invalidation::PasidIotlbPages {
            did: 2,
            pasid: 8,
            range: PageRange {
                addr: 0x20_0000,
                am: 1,
            },
            ih: true,
        })
        .unwrap();
        assert_eq!(read_addr(&io, SID, Some(8), 0x20_1000), 0x11_0000);
        assert!(io.stats().fl_psc_hits >= 1);
        io.invalidate(&Invalidation::PasidIotlbPages {
            did: 2,
            pasid: 8,
            range: PageRange {
                addr: 0x20_0000,
                am: 1,
            },
            ih: false,
        })
        .unwrap();
        assert_eq!(read_addr(&io, SID, Some(8), 0x20_1000), 0x33_0000);
    }

    #[test]
    fn pasid_cache_invalidation_granularities() {
        for scope in [
            PasidCacheScope::All,
            PasidCacheScope::Domain { did: 2 },
            PasidCacheScope::Pasid { did: 2, pasid: 8 },
        ] {
            let io = iommu();
            attach(&io, SID);
            let root1 = fl_pasid(&io, SID, 8, 2);
            map(&io, root1, 0x1000, 0x10_0000, SIZE_4K, RW | US);
            map(&io, root1, 0x2000, 0x10_1000, SIZE_4K, RW | US);
            io.translate(SID, Some(8), 0x1000, Access::READ).unwrap();
            // The guest points the entry at another table and forgets the PASID-cache flush.
            let root2 = io.table_pool().alloc(io.memory()).unwrap();
            map(&io, root2, 0x2000, 0x20_1000, SIZE_4K, RW | US);
            io.write_pasid_entry_raw(SID, 8, PasidEntry::first_level(2, root2).to_raw())
                .unwrap();
            assert_eq!(
                read_addr(&io, SID, Some(8), 0x2000),
                0x10_1000,
                "{scope:?}: stale PASID entry"
            );
            io.invalidate(&Invalidation::PasidCache(PasidCacheScope::Pasid {
                did: 2,
                pasid: 9,
            }))
            .unwrap();
            io.invalidate(&Invalidation::PasidCache(PasidCacheScope::Domain {
                did: 3,
            }))
            .unwrap();
            io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 8 })
                .unwrap();
            assert_eq!(
                read_addr(&io, SID, Some(8), 0x2000),
                0x10_1000,
                "{scope:?}: IOTLB flush alone keeps the PASID entry"
            );
            io.invalidate(&Invalidation::PasidCache(scope)).unwrap();
            // The IOTLB refilled from the stale entry keeps its (DID, PASID) tag: VT-d requires
            // the IOTLB flush after the PASID-cache flush, and so does this model.
            assert_eq!(
                read_addr(&io, SID, Some(8), 0x2000),
                0x10_1000,
                "{scope:?}: IOTLB still holds it"
            );
            assert_eq!(
                io.translate(SID, Some(8), 0x3000, Access::READ)
                    .unwrap_err()
                    .reason,
                FaultReason::FirstLevelNotPresent,
                "{scope:?}: new table walked"
            );
            io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 8 })
                .unwrap();
            assert_eq!(read_addr(&io, SID, Some(8), 0x2000), 0x20_1000, "{scope:?}");
        }
    }

    #[test]
    fn context_cache_invalidation_granularities() {
        for scope in [
            ContextCacheScope::All,
            ContextCacheScope::Device { source_id: SID },
        ] {
            let io = iommu();
            attach(&io, SID);
            let root = fl_pasid(&io, SID, 0, 2);
            map(&io, root, 0x1000, 0x10_0000, SIZE_4K, RW | US);
            io.translate(SID, None, 0x1000, Access::READ).unwrap();
            // Point RID_PASID at PASID 1 (not present) without flushing.
            let ct = io.control().ctx_tables[&(0, false)];
            let ce = ContextEntry::address(ct, SID.devfn());
            io.memory().store_u64(ce + 8, 1).unwrap();
            assert!(
                io.translate(SID, None, 0x1000, Access::READ).is_ok(),
                "{scope:?}: stale context"
            );
            io.invalidate(&Invalidation::ContextCache(ContextCacheScope::Device {
                source_id: SourceId::new(0, 9, 0),
            }))
            .unwrap();
            assert!(io.translate(SID, None, 0x1000, Access::READ).is_ok());
            io.invalidate(&Invalidation::ContextCache(scope)).unwrap();
            assert_eq!(
                reason(io.translate(SID, None, 0x1000, Access::READ)),
                FaultReason::PasidEntryNotPresent,
                "{scope:?}"
            );
        }
    }

    #[test]
    fn domain_page_invalidation_for_stage2_changes() {
        let io = iommu();
        let (s2, mut g, gpgd) = nested(&io, 3);
        fl_map(&mut g, gpgd, 4, 0x1000, 0x30_0000, SIZE_4K, RW | US).unwrap();
        let (root, levels) = io.stage2_root(s2).unwrap();
        let other = SourceId::new(0, 7, 0);
        attach(&io, other);
        io.set_pasid_entry(other, 0, &PasidEntry::second_level(4, root, levels))
            .unwrap();
        assert_eq!(read_addr(&io, SID, Some(3), 0x1000), GUEST_BASE + 0x30_0000);
        assert_eq!(
            read_addr(&io, other, None, 0x30_0000),
            GUEST_BASE + 0x30_0000
        );
        // The host moves guest page 0x30_0000 elsewhere in a 2 MiB mapping it rebuilds with 4 KiB pages.
        io.stage2_unmap(s2, 0x20_0000, 2 * MB).unwrap();
        io.stage2_map(s2, 0x20_0000, 40 * MB, 2 * MB, S2Perms::RW)
            .unwrap();
        assert_eq!(
            read_addr(&io, SID, Some(3), 0x1000),
            GUEST_BASE + 0x30_0000,
            "stale nested"
        );
        assert_eq!(
            read_addr(&io, other, None, 0x30_0000),
            GUEST_BASE + 0x30_0000,
            "stale second level"
        );
        io.invalidate(&Invalidation::IotlbDomainPages {
            did: 4,
            range: PageRange {
                addr: 0x20_0000,
                am: 9,
            },
            ih: false,
        })
        .unwrap();
        assert_eq!(read_addr(&io, SID, Some(3), 0x1000), 40 * MB + 0x10_0000);
        assert_eq!(read_addr(&io, other, None, 0x30_0000), 40 * MB + 0x10_0000);
    }
}
