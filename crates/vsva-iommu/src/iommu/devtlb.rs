//! The device TLB (ATS): lookups and fills of translations cached on the device side.
//!
//! An entry's value word is the output page (bits 63:12) and the permission nibble of the
//! cache words (bits 3:0); the write permission is stored only for a translation whose dirty
//! bits are set, so a write through a read-filled entry asks the IOMMU again.

use std::sync::atomic::Ordering;

use super::translate::{Perms, Translation};
use super::Iommu;
use crate::cache::{device_tag, pack, page_key, pasid_key, size_code, size_of_code, value_page};
use crate::fault::{Access, SourceId};

impl Iommu {
    /// A device-TLB hit, or the generations to stamp a fill with (read before the
    /// translation that will produce it).
    pub(super) fn devtlb_lookup(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, [u64; 3]> {
        let c = &self.caches;
        let p = pasid_key(pasid);
        let dev = c.device(sid.0);
        let dp = dev.pasids.get(p);
        let s0 = pack(c.global.devtlb.get(), dev.devtlb.get());
        let s1 = u64::from(dp.devtlb.get());
        let tag = device_tag(sid.0, p);
        let psi = u64::from(dp.psi.get());
        let miss = [s0, s1, psi];
        let sizes = dp.sizes.load(Ordering::Acquire);
        for code in 0..3u64 {
            if sizes & (1 << code) == 0 {
                continue;
            }
            let Some(d) = c.devtlb.lookup(page_key(iova, code), tag) else {
                continue;
            };
            if d[0] != s0 || d[1] != s1 {
                continue;
            }
            let v = d[2];
            let perms = Perms::from_bits(v);
            let ok = (if access.write {
                perms.write
            } else {
                perms.read
            }) && (!access.execute || perms.execute)
                && (access.privileged || perms.user);
            if !ok {
                // The device asks the IOMMU again (an ATS translation request).
                return Err(miss);
            }
            let size = size_of_code(code);
            return Ok(Translation {
                host_addr: value_page(v) | (iova & (size - 1)),
                page_size: size,
                perms,
            });
        }
        Err(miss)
    }

    pub(super) fn devtlb_fill(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        t: &Translation,
        dirty: bool,
        [s0, s1, psi]: [u64; 3],
    ) {
        let c = &self.caches;
        let p = pasid_key(pasid);
        let dp = c.device(sid.0).pasids.get(p);
        let code = size_code(t.page_size);
        let base = t.host_addr & !(t.page_size - 1);
        let perms = Perms {
            write: t.perms.write && dirty,
            ..t.perms
        };
        let v = base | perms.bits();
        if dp.sizes.load(Ordering::Acquire) & (1 << code) == 0 {
            dp.sizes.fetch_or(1 << code, Ordering::AcqRel);
        }
        let tag = device_tag(sid.0, p);
        c.devtlb.insert(page_key(iova, code), tag, [s0, s1, v], || {
            u64::from(dp.psi.get()) == psi
        });
    }
}
