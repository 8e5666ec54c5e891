//! Applying invalidation requests to the caches.

use std::sync::atomic::Ordering;

use super::error::IommuError;
use super::Iommu;
use crate::cache::{device_tag, tag_key, Caches, NO_PASID, PAGE_INVALIDATION_LIMIT};
use crate::invalidate::{ContextCacheScope, Invalidation, PasidCacheScope};
use crate::stats::Counter;

impl Iommu {
    /// Processes an invalidation request (as a completed queued-invalidation descriptor: when
    /// this returns, no lookup starting afterwards uses an entry it covers).
    pub fn invalidate(&self, inv: &Invalidation) -> Result<(), IommuError> {
        inv.validate(&self.cfg)?;
        self.apply(inv);
        Ok(())
    }

    pub(super) fn apply(&self, inv: &Invalidation) {
        self.stats.inc(Counter::Invalidations);
        self.apply_scoped(inv);
        // Every invalidation retires the whole front cache (after the scoped work, so a lookup
        // that sees the new epoch also sees the scoped removals).
        self.caches.epoch.fetch_add(1, Ordering::AcqRel);
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
