//! Properties: random bytes never panic, valid encodings round-trip.

use super::*;

fn any_pasid_op() -> impl Strategy<Value = PasidRequestOp> {
    (any::<bool>(), any::<u32>(), any::<u32>()).prop_map(|(alloc, a, b)| {
        let (min, max) = (a.min(b), a.max(b));
        if alloc {
            PasidRequestOp::Alloc { min, max }
        } else {
            PasidRequestOp::Free { min, max }
        }
    })
}

fn any_bind() -> impl Strategy<Value = BindRequest> {
    (
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        any::<bool>(),
        0u64..(1 << 7),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(hpasid, gpasid, gpgd, five, flags, pat, emt)| BindRequest {
                hpasid,
                gpasid,
                gpgd,
                addr_width: if five {
                    AddrWidth::Bits57
                } else {
                    AddrWidth::Bits48
                },
                vtd: VtdBindAttrs {
                    flags: VtdBindFlags::from_bits(flags).unwrap(),
                    pat,
                    emt,
                },
            },
        )
}

fn any_granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::Domain),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(pasid, archid)| Granularity::Pasid { pasid, archid }),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>()),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(|(pasid, archid, addr, granule_size, nb_granules, leaf)| {
                Granularity::Addr {
                    pasid,
                    archid,
                    addr,
                    granule_size,
                    nb_granules,
                    leaf,
                }
            }),
    ]
}

fn any_invalidate() -> impl Strategy<Value = CacheInvalidateRequest> {
    (1u8..8, any_granularity()).prop_filter_map("invalid pair", |(cache, granularity)| {
        CacheInvalidateRequest::new(CacheSet::from_bits(cache).unwrap(), granularity).ok()
    })
}

fn any_nesting_op() -> impl Strategy<Value = NestingOp> {
    prop_oneof![
        any_bind().prop_map(NestingOp::Bind),
        any_bind().prop_map(NestingOp::Unbind),
        any_invalidate().prop_map(NestingOp::Invalidate),
    ]
}

/// Only the two errnos a decoder may produce.
fn errno_is_decoder_errno(result: Result<impl Sized, UapiError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => matches!(e.errno(), Errno::EINVAL | Errno::EFAULT),
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        prop_assert!(errno_is_decoder_errno(decode_pasid_request(&bytes)));
        prop_assert!(errno_is_decoder_errno(decode_nesting_op(&bytes)));
        prop_assert!(errno_is_decoder_errno(decode_bind_data(&bytes)));
        prop_assert!(errno_is_decoder_errno(decode_cache_invalidate(&bytes)));
        prop_assert!(errno_is_decoder_errno(decode_nesting_info(&bytes)));
    }

    #[test]
    fn corrupted_valid_requests_never_panic(
        op in any_nesting_op(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = op.to_bytes();
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        prop_assert!(errno_is_decoder_errno(decode_nesting_op(&bytes)));
        let len = cut.index(bytes.len() + 1);
        prop_assert!(errno_is_decoder_errno(decode_nesting_op(&bytes[..len])));
    }

    #[test]
    fn pasid_requests_round_trip(op in any_pasid_op(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        prop_assert_eq!(decode_pasid_request(&op.to_bytes()), Ok(op));
        prop_assert_eq!(decode_pasid_request(&grown(&op.to_bytes(), tail.len(), 0)), Ok(op));
        let mut padded = op.to_bytes();
        padded.extend_from_slice(&tail);
        prop_assert_eq!(decode_pasid_request(&padded), Ok(op));
    }

    #[test]
    fn nesting_ops_round_trip(op in any_nesting_op(), extra in 0usize..48, fill in any::<u8>()) {
        prop_assert_eq!(decode_nesting_op(&op.to_bytes()), Ok(op));
        // A header argsz covering trailing bytes the kernel does not know.
        prop_assert_eq!(decode_nesting_op(&grown(&op.to_bytes(), extra, fill)), Ok(op));
    }

    #[test]
    fn payloads_round_trip(bind in any_bind(), inv in any_invalidate(), extra in 0usize..48, fill in any::<u8>()) {
        prop_assert_eq!(decode_bind_data(&bind.to_bytes()), Ok(bind));
        prop_assert_eq!(decode_bind_data(&grown(&bind.to_bytes(), extra, fill)), Ok(bind));
        prop_assert_eq!(decode_cache_invalidate(&inv.to_bytes()), Ok(inv));
        prop_assert_eq!(decode_cache_invalidate(&grown(&inv.to_bytes(), extra, fill)), Ok(inv));
    }

    #[test]
    fn nesting_capability_round_trips(
        features in 0u32..8,
        five in any::<bool>(),
        pasid_bits in any::<u16>(),
        cap_reg in any::<u64>(),
        ecap_reg in any::<u64>(),
        next in any::<u32>(),
    ) {
        let cap = NestingCapability {
            features: NestingFeatures::from_bits(features).unwrap(),
            addr_width: if five { 57 } else { 48 },
            pasid_bits,
            vtd: NestingInfoVtd { cap_reg, ecap_reg, ..NestingInfoVtd::default() },
        };
        let (header, decoded) = decode_nesting_info(&encode_nesting_info(next, &cap)).unwrap();
        prop_assert_eq!(header.next, next);
        prop_assert_eq!(decoded, cap);
    }
}
