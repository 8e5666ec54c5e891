//! NESTING_OP CACHE_INVLD's rows.

use super::*;

#[test]
fn invalidate_rows() {
    let own = u64::from(OWN);
    let mut domain16 = inv(CacheSet::IOTLB | CacheSet::PASID, Granularity::Domain);
    domain16.argsz = 16;
    let domain16 = domain16.as_bytes()[..16].to_vec();
    let mut larger = inv_addr(addr_info(own, 0x1000, 0x1000, 4));
    larger[..4].copy_from_slice(&64u32.to_le_bytes());
    larger.extend_from_slice(&[0xcc; 8]);
    let no_pasid_flag = inv_with(|r| {
        r.granu = InvGranu::from(InvPasidInfo {
            flags: IOMMU_INV_PASID_FLAGS_ARCHID,
            archid: 5,
            pasid: own,
        })
    });
    let mut addr_no_pasid = addr_info(own, 0, 0x1000, 1);
    addr_no_pasid.flags = IOMMU_INV_ADDR_FLAGS_LEAF;
    // v5 11/15 `vfio_iommu_invalidate_cache`: 0 once the container checks pass
    // ("vfio_dev_cache_inv_fn() always successful"); the checks are Linux 5.10 iommu.c
    // `iommu_uapi_cache_invalidate` / `iommu_check_cache_invl_data` (Malformed) and the
    // container's ownership and range rules, as the VT-d driver's `intel_iommu_sva_invalidate`
    // refuses what it cannot issue.
    run(vec![
        // Payload sizes.
        refused(
            "argsz 15",
            op(INVLD, &inv_with(|r| r.argsz = 15)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        // Only min(argsz, 56) bytes are read: a larger argsz than the payload works.
        row(
            "argsz 57, 56 bytes: the known struct is read",
            On::Nest,
            NO,
            op(INVLD, &inv_with(|r| r.argsz = 57)),
            Ok(0),
        ),
        inv_refused(
            "payload cut short",
            &inv_with(|_| ())[..40],
            RefusalReason::Malformed,
        ),
        refused(
            "PASID granularity, argsz 31",
            op(INVLD, &inv_with(|r| r.argsz = 31)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "ADDR granularity, argsz 55",
            op(INVLD, &{
                let mut v = inv_addr(addr_info(own, 0, 0x1000, 1));
                v[..4].copy_from_slice(&55u32.to_le_bytes());
                v
            }),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        // Fields, one at a time.
        refused(
            "version 0",
            op(INVLD, &inv_with(|r| r.version = 0)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "version 2",
            op(INVLD, &inv_with(|r| r.version = 2)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "cache 1<<3",
            op(INVLD, &inv_with(|r| r.cache = 1 << 3)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "granularity 3",
            op(INVLD, &inv_with(|r| r.granularity = 3)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "padding[0]",
            op(INVLD, &inv_with(|r| r.padding[0] = 1)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "cache 0",
            op(INVLD, &inv_with(|r| r.cache = 0)),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "DOMAIN with DEV_IOTLB",
            op(
                INVLD,
                &inv_with(|r| {
                    r.granularity = 0;
                    r.cache = CacheSet::DEV_IOTLB.bits();
                }),
            ),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "ADDR with PASID cache",
            op(INVLD, &{
                let mut v = inv_addr(addr_info(own, 0, 0x1000, 1));
                v[8] = CacheSet::PASID.bits();
                v
            }),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "pasid_info.flags 1<<2",
            op(
                INVLD,
                &inv_with(|r| {
                    r.granu = InvGranu::from(InvPasidInfo {
                        flags: IOMMU_INV_PASID_FLAGS_PASID | 1 << 2,
                        archid: 0,
                        pasid: own,
                    })
                }),
            ),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        refused(
            "addr_info.flags 1<<3",
            op(
                INVLD,
                &inv_addr(InvAddrInfo {
                    flags: IOMMU_INV_ADDR_FLAGS_PASID | 1 << 3,
                    ..addr_info(own, 0, 0x1000, 1)
                }),
            ),
            RefusedOp::Invalidate,
            RefusalReason::Malformed,
        ),
        // Selectors the host needs.
        refused(
            "PASID granularity without PASID flag",
            op(INVLD, &no_pasid_flag),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        refused(
            "ADDR granularity without PASID flag",
            op(INVLD, &inv_addr(addr_no_pasid)),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        // Ownership and range of the PASID.
        refused(
            "pasid 0",
            op(INVLD, inv(CacheSet::IOTLB, pasid_g(0)).as_bytes()),
            RefusedOp::Invalidate,
            RefusalReason::PasidOutOfRange,
        ),
        refused(
            "pasid 2^20",
            op(INVLD, inv(CacheSet::IOTLB, pasid_g(1 << 20)).as_bytes()),
            RefusedOp::Invalidate,
            RefusalReason::PasidOutOfRange,
        ),
        refused(
            "pasid nobody's",
            op(
                INVLD,
                inv(CacheSet::IOTLB, pasid_g(u64::from(NOBODY))).as_bytes(),
            ),
            RefusedOp::Invalidate,
            RefusalReason::NotAllocated,
        ),
        refused(
            "pasid another's",
            op(
                INVLD,
                inv(CacheSet::IOTLB, pasid_g(u64::from(OTHERS))).as_bytes(),
            ),
            RefusedOp::Invalidate,
            RefusalReason::NotOwned,
        ),
        refused(
            "addr: another's",
            op(INVLD, &inv_addr(addr_info(u64::from(OTHERS), 0, 0x1000, 1))),
            RefusedOp::Invalidate,
            RefusalReason::NotOwned,
        ),
        // The address range.
        refused(
            "granule 8 KiB",
            op(INVLD, &inv_addr(addr_info(own, 0, 0x2000, 1))),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        refused(
            "granule 0",
            op(INVLD, &inv_addr(addr_info(own, 0, 0, 1))),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        refused(
            "no granules",
            op(INVLD, &inv_addr(addr_info(own, 0, 0x1000, 0))),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        refused(
            "addr not granule aligned",
            op(INVLD, &inv_addr(addr_info(own, 0x1000, 0x20_0000, 1))),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        refused(
            "range wraps",
            op(
                INVLD,
                &inv_addr(addr_info(
                    own,
                    0x4000_0000,
                    0x4000_0000,
                    u64::MAX / 0x4000_0000,
                )),
            ),
            RefusedOp::Invalidate,
            RefusalReason::Invalid,
        ),
        // Successes, at every granularity and size.
        row(
            "DOMAIN, 16-byte struct",
            On::Nest,
            NO,
            op(INVLD, &domain16),
            Ok(0),
        ),
        row(
            "PASID, all caches",
            On::Nest,
            NO,
            op(INVLD, inv(CacheSet::ALL, pasid_g(own)).as_bytes()),
            Ok(0),
        ),
        row(
            "ADDR, larger struct",
            On::Nest,
            NO,
            op(INVLD, &larger),
            Ok(0),
        ),
        row(
            "ADDR, 2 MiB granules",
            On::Nest,
            NO,
            op(INVLD, &inv_addr(addr_info(own, 0x20_0000, 0x20_0000, 3))),
            Ok(0),
        ),
        row(
            "ADDR, huge range falls back",
            On::Nest,
            NO,
            op(INVLD, &inv_addr(addr_info(own, 0, 0x4000_0000, 1 << 20))),
            Ok(0),
        ),
    ]);
}
