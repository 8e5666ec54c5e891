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

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn device_tlb_invalidation_granularities() {
        type Make = Box<dyn Fn(Option<u32>, u64) -> Invalidation>;
        let cases: Vec<(&str, Make)> = vec![
            (
                "all",
                Box::new(|_, _| Invalidation::DeviceTlbAll { source_id: SID }),
            ),
            (
                "pasid",
                Box::new(|p, _| Invalidation::DeviceTlb {
                    source_id: SID,
                    pasid: p,
                    pages: None,
                }),
            ),
            (
                "page",
                Box::new(|p, va| Invalidation::DeviceTlb {
                    source_id: SID,
                    pasid: p,
                    pages: Some(PageRange { addr: va, am: 0 }),
                }),
            ),
        ];
        for (name, inv) in cases {
            for pasid in [Some(8), None] {
                let io = iommu();
                io.attach_device(
                    SID,
                    DeviceOptions {
                        ats: true,
                        rid_pasid: 8,
                        ..DeviceOptions::default()
                    },
                )
                .unwrap();
                let root = fl_pasid(&io, SID, 8, 2);
                map(&io, root, 0x5000, 0x10_0000, SIZE_4K, RW | US);
                io.translate(SID, pasid, 0x5000, Access::READ).unwrap();
                remap_fl(&io, root, 0x5000, 0x20_0000);
                io.invalidate(&Invalidation::PasidIotlb { did: 2, pasid: 8 })
                    .unwrap();
                assert_eq!(
                    read_addr(&io, SID, pasid, 0x5000),
                    0x10_0000,
                    "{name} {pasid:?}: device TLB still holds it"
                );
                io.invalidate(&Invalidation::DeviceTlb {
                    source_id: SID,
                    pasid: Some(9),
                    pages: None,
                })
                .unwrap();
                assert_eq!(read_addr(&io, SID, pasid, 0x5000), 0x10_0000);
                io.invalidate(&inv(pasid, 0x5000)).unwrap();
                assert_eq!(
                    read_addr(&io, SID, pasid, 0x5000),
                    0x20_0000,
                    "{name} {pasid:?}"
                );
                assert!(io.stats().devtlb_hits >= 2);
            }
        }
    }

    #[test]
    fn clearing_the_rid_pasid_entry_flushes_requests_without_pasid() {
        let io = iommu();
        let opts = DeviceOptions {
            ats: true,
            rid_pasid: 8,
            ..DeviceOptions::default()
        };
        io.attach_device(SID, opts).unwrap();
        let root = fl_pasid(&io, SID, 8, 2);
        map(&io, root, 0x5000, 0x10_0000, SIZE_4K, RW | US);
        assert_eq!(read_addr(&io, SID, None, 0x5000), 0x10_0000);
        io.clear_pasid_entry(SID, 8).unwrap();
        // The last entry of its PASID table: the table went back to the pool with it.
        assert_eq!(
            reason(io.translate(SID, None, 0x5000, Access::READ)),
            FaultReason::PasidDirNotPresent
        );
    }
}
