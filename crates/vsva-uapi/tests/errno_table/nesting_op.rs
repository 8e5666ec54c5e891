//! The VFIO_IOMMU_NESTING_OP header.

use super::*;

#[test]
fn nesting_op_valid_ops() {
    let bind = valid_bind();
    assert_eq!(
        decode_nesting_op(&wrap(NestingOpKind::BindPgtbl, &bind.to_bytes())),
        Ok(NestingOp::Bind(bind))
    );
    assert_eq!(
        decode_nesting_op(&wrap(NestingOpKind::UnbindPgtbl, &bind.to_bytes())),
        Ok(NestingOp::Unbind(bind))
    );
    for inv in [domain_inv(), pasid_inv(), addr_inv()] {
        assert_eq!(
            decode_nesting_op(&wrap(NestingOpKind::CacheInvld, &inv.to_bytes())),
            Ok(NestingOp::Invalidate(inv))
        );
    }
}

#[test]
fn nesting_op_unreadable_header_is_efault() {
    let bytes = NestingOp::Bind(valid_bind()).to_bytes();
    for len in [0, 3, 7] {
        assert_rejected(
            decode_nesting_op(&bytes[..len]),
            Errno::EFAULT,
            "fewer than the 8",
        );
    }
}

#[test]
fn nesting_op_small_argsz_is_einval() {
    for argsz in [0, 7] {
        assert_rejected(
            decode_nesting_op(&nesting(argsz, 0, &valid_bind().to_bytes())),
            Errno::EINVAL,
            &format!("argsz {argsz} is smaller than the 8 bytes"),
        );
    }
}

#[test]
fn nesting_op_header_argsz_is_only_checked_to_be_at_least_8() {
    // v5 10/15 `vfio_iommu_type1_nesting_op`: `hdr.argsz < minsz` is the header's only size
    // check; the payload is read at `arg + minsz` with its own argsz.
    let payload = valid_bind().to_bytes();
    for argsz in [8, 9, 8 + 55, 8 + 73, u32::MAX] {
        assert_eq!(
            decode_nesting_op(&nesting(argsz, 0, &payload)),
            Ok(NestingOp::Bind(valid_bind())),
            "header argsz {argsz}"
        );
    }
}

#[test]
fn nesting_op_flags_above_op_mask_are_einval() {
    let payload = valid_bind().to_bytes();
    for flags in [1 << 16, 0x8000_0000, 0xffff_0000 | 2] {
        assert_rejected(
            decode_nesting_op(&nesting(80, flags, &payload)),
            Errno::EINVAL,
            &format!("flags {flags:#x}: bits"),
        );
    }
}

#[test]
fn nesting_op_unknown_op_is_einval() {
    let payload = valid_bind().to_bytes();
    for op in [3, 4, 0xffff] {
        assert_rejected(
            decode_nesting_op(&nesting(80, op, &payload)),
            Errno::EINVAL,
            &format!("op {op} is not"),
        );
    }
}

#[test]
fn nesting_op_payload_shorter_than_its_own_argsz_is_efault() {
    // Linux 5.10 iommu.c `iommu_sva_prepare_bind_data` / `iommu_uapi_cache_invalidate`:
    // copy_from_user of the part before the union, then copy_from_user(min(argsz, known
    // size)) faults.
    let bind = valid_bind().to_bytes();
    assert_rejected(
        decode_nesting_op(&nesting(80, 0, &bind[..60])),
        Errno::EFAULT,
        "argsz 72 covers 72 bytes",
    );
    assert_rejected(
        decode_nesting_op(&nesting(80, 1, &bind[..3])),
        Errno::EFAULT,
        "the buffer holds 3 bytes, fewer than the 56 bytes of iommu_gpasid_bind_data",
    );
    let inv = domain_inv().to_bytes();
    assert_rejected(
        decode_nesting_op(&nesting(80, 2, &inv[..15])),
        Errno::EFAULT,
        "the buffer holds 15 bytes, fewer than the 16 bytes of iommu_cache_invalidate_info",
    );
}

#[test]
fn nesting_op_check_order() {
    let bind = valid_bind().to_bytes();
    // Flags above the mask are reported before an unknown op...
    assert_rejected(
        decode_nesting_op(&nesting(80, 0x1_0003, &bind)),
        Errno::EINVAL,
        "above the op field",
    );
    // ...an unknown op before the payload is looked at...
    assert_rejected(
        decode_nesting_op(&nesting(9, 3, &bind[..2])),
        Errno::EINVAL,
        "op 3",
    );
    // ...and the header's argsz before anything in the payload.
    let mut raw = valid_bind().to_raw();
    raw.version = 9;
    assert_rejected(
        decode_nesting_op(&nesting(7, 0, raw.as_bytes())),
        Errno::EINVAL,
        "argsz 7",
    );
}

#[test]
fn nesting_op_header_split() {
    let bytes = NestingOp::Invalidate(addr_inv()).to_bytes();
    let arg = decode_nesting_op_header(&bytes).unwrap();
    assert_eq!(arg.kind, NestingOpKind::CacheInvld);
    assert_eq!(arg.kind.required_feature(), NestingFeatures::CACHE_INVLD);
    assert_eq!(arg.payload, &bytes[8..]);
    assert_eq!(arg.decode(), Ok(NestingOp::Invalidate(addr_inv())));
}

#[test]
fn nesting_op_larger_than_known_is_accepted() {
    // A larger header argsz (trailing bytes after the payload) and a larger payload argsz.
    let payload = grown(&valid_bind().to_bytes(), 24, 0xcc);
    let mut bytes = wrap(NestingOpKind::BindPgtbl, &payload);
    assert_eq!(decode_nesting_op(&bytes), Ok(NestingOp::Bind(valid_bind())));
    bytes = grown(&bytes, 16, 0xdd);
    assert_eq!(decode_nesting_op(&bytes), Ok(NestingOp::Bind(valid_bind())));
}
