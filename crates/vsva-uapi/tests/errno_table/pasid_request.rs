//! VFIO_IOMMU_PASID_REQUEST.

use super::*;

#[test]
fn pasid_request_valid() {
    let bytes = valid_pasid().as_bytes().to_vec();
    assert_eq!(
        decode_pasid_request(&bytes),
        Ok(PasidRequestOp::Alloc { min: 1, max: 1000 })
    );
    let free_all = PasidRequestOp::free_all();
    assert_eq!(decode_pasid_request(&free_all.to_bytes()), Ok(free_all));
    let single = PasidRequestOp::alloc(7, 7).unwrap();
    assert_eq!(decode_pasid_request(&single.to_bytes()), Ok(single));
}

#[test]
fn pasid_request_rule_1_unreadable_is_efault() {
    let bytes = valid_pasid().as_bytes().to_vec();
    for len in [0, 3, 4, 15] {
        assert_rejected(
            decode_pasid_request(&bytes[..len]),
            Errno::EFAULT,
            "fewer than",
        );
    }
    // EFAULT wins even when the readable argsz is also too small.
    let mut short = valid_pasid();
    short.argsz = 8;
    assert_rejected(
        decode_pasid_request(&short.as_bytes()[..12]),
        Errno::EFAULT,
        "fewer than",
    );
}

#[test]
fn pasid_request_rule_2_small_argsz_is_einval() {
    for argsz in [0, 4, 15] {
        let mut req = valid_pasid();
        req.argsz = argsz;
        assert_rejected(
            decode_pasid_request(req.as_bytes()),
            Errno::EINVAL,
            &format!("argsz {argsz} is smaller than the 16 bytes"),
        );
    }
}

#[test]
fn pasid_request_argsz_beyond_buffer_reads_only_the_16_bytes() {
    // v5 07/15 `vfio_iommu_type1_pasid_request`: copy_from_user(minsz), then only
    // `argsz < minsz` is checked; nothing past the 16 bytes is ever read.
    for argsz in [17, u32::MAX] {
        let mut req = valid_pasid();
        req.argsz = argsz;
        assert_eq!(
            decode_pasid_request(req.as_bytes()),
            Ok(PasidRequestOp::Alloc { min: 1, max: 1000 }),
            "argsz {argsz}"
        );
    }
}

#[test]
fn pasid_request_rule_3_flags_not_exactly_one_is_einval() {
    // v5 07/15: undefined bits with the argsz check, neither or both in the `default:` case.
    for (flags, needle) in [
        (4, "bits 0x4 are not defined"),
        (1 | 4, "bits 0x4 are not defined"),
        (2 | 8, "bits 0x8 are not defined"),
        (0x8000_0001, "bits 0x80000000 are not defined"),
        (u32::MAX, "bits 0xfffffffc are not defined"),
        (0, "exactly one of ALLOC (0x1) and FREE (0x2)"),
        (3, "exactly one of ALLOC (0x1) and FREE (0x2)"),
    ] {
        let mut req = valid_pasid();
        req.flags = flags;
        assert_rejected(decode_pasid_request(req.as_bytes()), Errno::EINVAL, needle);
    }
}

#[test]
fn pasid_request_rule_4_min_above_max_is_einval() {
    for flags in [1, 2] {
        let mut req = valid_pasid();
        req.flags = flags;
        req.range.min = 11;
        req.range.max = 10;
        assert_rejected(
            decode_pasid_request(req.as_bytes()),
            Errno::EINVAL,
            "range.min 11 is greater than range.max 10",
        );
    }
}

#[test]
fn pasid_request_check_order() {
    // v5 07/15: argsz before undefined flags, undefined flags before the range, the range
    // before "neither or both".
    let mut req = valid_pasid();
    req.argsz = 12;
    req.flags = 7;
    req.range.min = 5;
    req.range.max = 1;
    assert_rejected(
        decode_pasid_request(req.as_bytes()),
        Errno::EINVAL,
        "argsz 12",
    );
    req.argsz = 16;
    assert_rejected(
        decode_pasid_request(req.as_bytes()),
        Errno::EINVAL,
        "flags 0x7",
    );
    req.flags = 3;
    assert_rejected(
        decode_pasid_request(req.as_bytes()),
        Errno::EINVAL,
        "range.min 5",
    );
    req.flags = 2;
    assert_rejected(
        decode_pasid_request(req.as_bytes()),
        Errno::EINVAL,
        "range.min 5",
    );
}

#[test]
fn pasid_request_larger_than_known_is_accepted() {
    let base = valid_pasid().as_bytes().to_vec();
    let big = grown(&base, 48, 0xee);
    assert_eq!(
        decode_pasid_request(&big),
        Ok(PasidRequestOp::Alloc { min: 1, max: 1000 })
    );
    // Bytes past argsz are not part of the argument.
    let mut padded = base.clone();
    padded.extend_from_slice(&[0xff; 32]);
    assert_eq!(decode_pasid_request(&padded), decode_pasid_request(&base));
}
