//! iommu_cache_invalidate_info.

use super::*;

/// Decodes a mutated invalidation payload on its own and inside a NESTING_OP, which must agree.
fn decode_inv_both(bytes: &[u8]) -> Result<CacheInvalidateRequest, UapiError> {
    let alone = decode_cache_invalidate(bytes);
    let wrapped = decode_nesting_op(&wrap(NestingOpKind::CacheInvld, bytes));
    match (&alone, wrapped) {
        (Ok(req), Ok(op)) => assert_eq!(op, NestingOp::Invalidate(*req)),
        (Err(a), Err(w)) => assert_eq!(a, &w),
        (a, w) => panic!("standalone {a:?} and wrapped {w:?} disagree"),
    }
    alone
}

fn mutated_inv(
    base: CacheInvalidateRequest,
    f: impl FnOnce(&mut CacheInvalidateInfo),
) -> CacheInvalidateInfo {
    let mut raw = base.to_raw();
    f(&mut raw);
    raw
}

#[test]
fn invalidate_valid() {
    for req in [domain_inv(), pasid_inv(), addr_inv()] {
        assert_eq!(decode_inv_both(&req.to_bytes()), Ok(req));
    }
}

#[test]
fn invalidate_unreadable_is_efault() {
    // Linux 5.10 iommu.c `iommu_uapi_cache_invalidate`: copy_from_user of the 16 bytes
    // before the granu union (before argsz is looked at), then copy_from_user(min(argsz, 56)).
    let raw = addr_inv().to_raw();
    for len in [0, 3, 4, 15] {
        assert_rejected(
            decode_cache_invalidate(&raw.as_bytes()[..len]),
            Errno::EFAULT,
            &format!("the buffer holds {len} bytes, fewer than the 16 bytes"),
        );
    }
    // EFAULT wins even when the readable argsz is also too small.
    let small = mutated_inv(domain_inv(), |r| r.argsz = 8);
    assert_rejected(
        decode_cache_invalidate(&small.as_bytes()[..10]),
        Errno::EFAULT,
        "the buffer holds 10 bytes, fewer than the 16 bytes",
    );
    for len in [16, 40] {
        assert_rejected(
            decode_cache_invalidate(&raw.as_bytes()[..len]),
            Errno::EFAULT,
            &format!("argsz 56 covers 56 bytes of iommu_cache_invalidate_info before its granu union, but the buffer holds {len}"),
        );
    }
}

#[test]
fn invalidate_small_argsz_is_einval() {
    for argsz in [0, 8, 15] {
        assert_rejected(
            decode_inv_both(mutated_inv(domain_inv(), |r| r.argsz = argsz).as_bytes()),
            Errno::EINVAL,
            &format!("argsz {argsz} is smaller than the 16 bytes"),
        );
    }
}

#[test]
fn invalidate_bad_version_is_einval() {
    for version in [0, 2, u32::MAX] {
        assert_rejected(
            decode_inv_both(mutated_inv(pasid_inv(), |r| r.version = version).as_bytes()),
            Errno::EINVAL,
            &format!("version {version}"),
        );
    }
}

#[test]
fn invalidate_unknown_cache_bits_are_einval() {
    for cache in [1 << 3, 1 << 7, 0x0f, 0xff] {
        assert_rejected(
            decode_inv_both(mutated_inv(pasid_inv(), |r| r.cache = cache).as_bytes()),
            Errno::EINVAL,
            &format!("cache {cache:#x}: bits"),
        );
    }
}

#[test]
fn invalidate_unknown_granularity_is_einval() {
    for granularity in [3, 4, 0xff] {
        assert_rejected(
            decode_inv_both(mutated_inv(pasid_inv(), |r| r.granularity = granularity).as_bytes()),
            Errno::EINVAL,
            &format!("granularity {granularity}"),
        );
    }
}

#[test]
fn invalidate_nonzero_padding_is_einval() {
    for index in 0..6 {
        assert_rejected(
            decode_inv_both(mutated_inv(domain_inv(), |r| r.padding[index] = 1).as_bytes()),
            Errno::EINVAL,
            &format!("padding[{index}] is 0x1"),
        );
    }
}

#[test]
fn invalidate_argsz_must_reach_the_selected_member() {
    // PASID granularity needs 32 bytes, ADDR 56; DOMAIN is content with 16.
    let pasid = mutated_inv(pasid_inv(), |r| r.argsz = 31);
    assert_rejected(
        decode_inv_both(&pasid.as_bytes()[..31]),
        Errno::EINVAL,
        "argsz 31 ends before granu.pasid_info, which PASID granularity needs (32 bytes)",
    );
    let addr = mutated_inv(addr_inv(), |r| r.argsz = 55);
    assert_rejected(
        decode_inv_both(&addr.as_bytes()[..55]),
        Errno::EINVAL,
        "argsz 55 ends before granu.addr_info, which address granularity needs (56 bytes)",
    );
    // Exactly the member's end is enough.
    let pasid = mutated_inv(pasid_inv(), |r| r.argsz = 32);
    assert_eq!(decode_inv_both(&pasid.as_bytes()[..32]), Ok(pasid_inv()));
    let domain = mutated_inv(domain_inv(), |r| r.argsz = 16);
    assert_eq!(decode_inv_both(&domain.as_bytes()[..16]), Ok(domain_inv()));
}

#[test]
fn invalidate_cache_zero_is_einval() {
    for base in [domain_inv(), pasid_inv(), addr_inv()] {
        assert_rejected(
            decode_inv_both(mutated_inv(base, |r| r.cache = 0).as_bytes()),
            Errno::EINVAL,
            "cache 0x0: at least one",
        );
    }
}

#[test]
fn invalidate_domain_with_dev_iotlb_is_einval() {
    for cache in [0x2, 0x3, 0x6, 0x7] {
        assert_rejected(
            decode_inv_both(mutated_inv(domain_inv(), |r| r.cache = cache).as_bytes()),
            Errno::EINVAL,
            "includes DEV_IOTLB (0x2), which domain granularity cannot invalidate",
        );
    }
}

#[test]
fn invalidate_addr_with_pasid_cache_is_einval() {
    for cache in [0x4, 0x5, 0x6, 0x7] {
        assert_rejected(
            decode_inv_both(mutated_inv(addr_inv(), |r| r.cache = cache).as_bytes()),
            Errno::EINVAL,
            "includes PASID (0x4), which address granularity cannot invalidate",
        );
    }
}

#[test]
fn invalidate_pair_matrix() {
    // Every (granularity, cache) combination against the rule of uapi.md.
    for (granularity, base) in [(0u8, domain_inv()), (1, pasid_inv()), (2, addr_inv())] {
        for cache in 0u8..8 {
            let valid = cache != 0
                && match granularity {
                    0 => cache & 0x2 == 0,
                    1 => true,
                    _ => cache & 0x4 == 0,
                };
            let raw = mutated_inv(base, |r| r.cache = cache);
            let result = decode_inv_both(raw.as_bytes());
            if valid {
                let req = result.unwrap_or_else(|e| panic!("({granularity}, {cache:#x}): {e}"));
                assert_eq!(req.caches().bits(), cache);
                assert_eq!(req.granularity().raw(), granularity);
            } else {
                assert_eq!(
                    result.map_err(|e| e.errno()),
                    Err(Errno::EINVAL),
                    "({granularity}, {cache:#x})"
                );
            }
        }
    }
}

#[test]
fn invalidate_unknown_pasid_info_flags_are_einval() {
    for flags in [1 << 2, 1 << 31] {
        let raw = mutated_inv(pasid_inv(), |r| {
            r.granu = InvGranu::from(InvPasidInfo {
                flags: flags | IOMMU_INV_PASID_FLAGS_PASID,
                archid: 0,
                pasid: 100,
            })
        });
        assert_rejected(
            decode_inv_both(raw.as_bytes()),
            Errno::EINVAL,
            "granu.pasid_info.flags",
        );
    }
}

#[test]
fn invalidate_unknown_addr_info_flags_are_einval() {
    for flags in [1 << 3, 1 << 31] {
        let raw = mutated_inv(addr_inv(), |r| {
            r.granu = InvGranu::from(InvAddrInfo {
                flags: flags | IOMMU_INV_ADDR_FLAGS_PASID,
                archid: 0,
                pasid: 100,
                addr: 0x1000,
                granule_size: 4096,
                nb_granules: 1,
            })
        });
        assert_rejected(
            decode_inv_both(raw.as_bytes()),
            Errno::EINVAL,
            "granu.addr_info.flags",
        );
    }
}

#[test]
fn invalidate_domain_ignores_the_union() {
    let raw = mutated_inv(domain_inv(), |r| {
        r.granu = InvGranu::from(InvAddrInfo {
            flags: u32::MAX,
            archid: 1,
            pasid: 2,
            addr: 3,
            granule_size: 4,
            nb_granules: 5,
        })
    });
    assert_eq!(decode_inv_both(raw.as_bytes()), Ok(domain_inv()));
}

#[test]
fn invalidate_check_order() {
    // Linux 5.10 iommu.c `iommu_uapi_cache_invalidate`, then `iommu_check_cache_invl_data`:
    // version, cache bits, granularity, the granularity's own rules (ADDR: no PASID cache, then
    // the addr_info flags; PASID: the pasid_info flags; DOMAIN: no DEV_IOTLB), padding last.
    // vsva's refusal of an empty cache set comes after all of them.
    type Mutation = fn(&mut CacheInvalidateInfo);
    let steps: [(Mutation, &str); 8] = [
        (|r| r.argsz = 12, "argsz 12"),
        (|r| r.version = 0, "version 0"),
        (|r| r.cache = 0x18, "cache 0x18"),
        (|r| r.granularity = 7, "granularity 7"),
        (|r| r.cache = 0x4, "includes PASID"),
        (
            |r| {
                let mut info = r.granu.addr_info();
                info.flags |= 1 << 12;
                r.granu = InvGranu::from(info);
            },
            "granu.addr_info.flags",
        ),
        (|r| r.padding[5] = 2, "padding[5]"),
        (|r| r.cache = 0, "cache 0x0: at least one"),
    ];
    for first in 0..steps.len() {
        let mut raw = addr_inv().to_raw();
        for (mutate, _) in &steps[first..] {
            mutate(&mut raw);
        }
        // `cache` is broken three times (for different rules), so a later step can overwrite
        // this iteration's mutation: apply this step last so it is the one in force.
        steps[first].0(&mut raw);
        assert_rejected(
            decode_inv_both(raw.as_bytes()),
            Errno::EINVAL,
            steps[first].1,
        );
    }
}

#[test]
fn invalidate_member_size_comes_before_the_rest_is_read() {
    // `iommu_uapi_cache_invalidate` checks that argsz reaches the member the granularity
    // selects right after `argsz >= 16`: before the second copy_from_user (so no EFAULT) and
    // before any field.
    let pasid = mutated_inv(pasid_inv(), |r| r.argsz = 24);
    assert_rejected(
        decode_inv_both(&pasid.as_bytes()[..20]),
        Errno::EINVAL,
        "argsz 24 ends before granu.pasid_info",
    );
    let addr = mutated_inv(addr_inv(), |r| {
        r.argsz = 40;
        r.version = 0;
        r.cache = 0x18;
        r.padding[0] = 1;
    });
    assert_rejected(
        decode_inv_both(addr.as_bytes()),
        Errno::EINVAL,
        "argsz 40 ends before granu.addr_info",
    );
    // An unknown granularity selects no member: its argsz is not held against one.
    let unknown = mutated_inv(addr_inv(), |r| {
        r.argsz = 16;
        r.granularity = 3;
    });
    assert_rejected(
        decode_inv_both(&unknown.as_bytes()[..16]),
        Errno::EINVAL,
        "granularity 3",
    );
}

#[test]
fn invalidate_padding_comes_after_the_granularity_rules() {
    let domain = mutated_inv(domain_inv(), |r| {
        r.cache = 0x2;
        r.padding[2] = 9;
    });
    assert_rejected(
        decode_inv_both(domain.as_bytes()),
        Errno::EINVAL,
        "includes DEV_IOTLB",
    );
    let pasid = mutated_inv(pasid_inv(), |r| {
        r.granu = InvGranu::from(InvPasidInfo {
            flags: 1 << 5,
            archid: 0,
            pasid: 100,
        });
        r.padding[2] = 9;
    });
    assert_rejected(
        decode_inv_both(pasid.as_bytes()),
        Errno::EINVAL,
        "granu.pasid_info.flags",
    );
}

#[test]
fn invalidate_larger_than_known_is_accepted() {
    for req in [domain_inv(), pasid_inv(), addr_inv()] {
        let big = grown(&req.to_bytes(), 64, 0x99);
        assert_eq!(decode_inv_both(&big), Ok(req));
    }
}
