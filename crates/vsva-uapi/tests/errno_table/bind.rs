//! iommu_gpasid_bind_data.

use super::*;

/// Decodes a mutated bind payload both on its own and inside a NESTING_OP, which must agree.
fn decode_bind_both(raw: &GpasidBindData) -> Result<BindRequest, UapiError> {
    let alone = decode_bind_data(raw.as_bytes());
    let wrapped = decode_nesting_op(&wrap(NestingOpKind::BindPgtbl, raw.as_bytes()));
    match (&alone, wrapped) {
        (Ok(req), Ok(op)) => assert_eq!(op, NestingOp::Bind(*req)),
        (Err(a), Err(w)) => assert_eq!(a, &w),
        (a, w) => panic!("standalone {a:?} and wrapped {w:?} disagree"),
    }
    alone
}

fn mutated_bind(f: impl FnOnce(&mut GpasidBindData)) -> GpasidBindData {
    let mut raw = valid_bind().to_raw();
    f(&mut raw);
    raw
}

#[test]
fn bind_valid() {
    assert_eq!(decode_bind_both(&valid_bind().to_raw()), Ok(valid_bind()));
    let five = BindRequest {
        addr_width: AddrWidth::Bits57,
        gpasid: None,
        ..valid_bind()
    };
    assert_eq!(decode_bind_both(&five.to_raw()), Ok(five));
    // Every VT-d flag on its own is accepted.
    for bit in 0..7 {
        let raw = mutated_bind(|r| r.vtd.flags = 1 << bit);
        let req = decode_bind_both(&raw).unwrap();
        assert_eq!(req.vtd.flags.bits(), 1 << bit);
    }
}

#[test]
fn bind_unreadable_is_efault() {
    // Linux 5.10 iommu.c `iommu_sva_prepare_bind_data`: copy_from_user of the 56 bytes
    // before the vendor union faults (before argsz is looked at), then
    // copy_from_user(min(argsz, 72)) faults.
    let raw = valid_bind().to_raw();
    for len in [0, 3, 4, 55] {
        assert_rejected(
            decode_bind_data(&raw.as_bytes()[..len]),
            Errno::EFAULT,
            &format!("the buffer holds {len} bytes, fewer than the 56 bytes"),
        );
    }
    // EFAULT wins even when the readable argsz is also too small.
    for (argsz, len) in [(0, 4), (10, 20), (55, 55)] {
        let short = mutated_bind(|r| r.argsz = argsz);
        assert_rejected(
            decode_bind_data(&short.as_bytes()[..len]),
            Errno::EFAULT,
            &format!("the buffer holds {len} bytes, fewer than the 56 bytes"),
        );
    }
    for len in [56, 64, 71] {
        assert_rejected(
            decode_bind_data(&raw.as_bytes()[..len]),
            Errno::EFAULT,
            &format!("argsz 72 covers 72 bytes of iommu_gpasid_bind_data before its vendor union, but the buffer holds {len}"),
        );
    }
}

#[test]
fn bind_small_argsz_is_einval() {
    for argsz in [0, 16, 55] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.argsz = argsz)),
            Errno::EINVAL,
            &format!("argsz {argsz} is smaller than the 56 bytes"),
        );
    }
}

#[test]
fn bind_bad_version_is_einval() {
    for version in [0, 2, u32::MAX] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.version = version)),
            Errno::EINVAL,
            &format!("version {version}"),
        );
    }
}

#[test]
fn bind_bad_format_is_einval() {
    for format in [0, 2, 100] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.format = format)),
            Errno::EINVAL,
            &format!("format {format}"),
        );
    }
}

#[test]
fn bind_unknown_flags_are_einval() {
    for flags in [2, 1 | 4, 1 << 63] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.flags = flags)),
            Errno::EINVAL,
            &format!("flags {flags:#x}: only GPASID_VAL"),
        );
    }
}

#[test]
fn bind_nonzero_padding_is_einval() {
    for index in 0..8 {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.padding[index] = 0x5a)),
            Errno::EINVAL,
            &format!("padding[{index}] is 0x5a"),
        );
    }
}

#[test]
fn bind_bad_addr_width_is_einval() {
    for width in [0, 32, 39, 47, 49, 56, 64] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.addr_width = width)),
            Errno::EINVAL,
            &format!("addr_width {width}"),
        );
    }
}

#[test]
fn bind_unknown_vtd_flags_are_einval() {
    for flags in [1 << 7, 1 << 8, 1 << 63, u64::MAX] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.vtd.flags = flags)),
            Errno::EINVAL,
            &format!("vendor.vtd.flags {flags:#x}"),
        );
    }
}

#[test]
fn bind_check_order() {
    // Each mutation is reported only once every earlier one is fixed.
    type Mutation = fn(&mut GpasidBindData);
    // The IOMMU core's checks (Linux 5.10 iommu.c `iommu_check_bind_data`), then the VT-d
    // driver's (intel/svm.c `intel_svm_bind_gpasid`: vendor flags; intel/pasid.c
    // `intel_pasid_setup_nested`: the address width, after the PASID checks).
    let steps: [(Mutation, &str); 7] = [
        (|r| r.argsz = 50, "argsz 50"),
        (|r| r.version = 2, "version 2"),
        (|r| r.format = 3, "format 3"),
        (|r| r.flags = 6, "flags 0x6"),
        (|r| r.padding[3] = 1, "padding[3]"),
        (|r| r.vtd.flags = 1 << 9, "vendor.vtd.flags"),
        (|r| r.addr_width = 40, "addr_width 40"),
    ];
    for first in 0..steps.len() {
        let mut raw = valid_bind().to_raw();
        for (mutate, _) in &steps[first..] {
            mutate(&mut raw);
        }
        assert_rejected(decode_bind_both(&raw), Errno::EINVAL, steps[first].1);
    }
}

#[test]
fn bind_larger_than_known_is_accepted() {
    let big = grown(valid_bind().to_raw().as_bytes(), 40, 0xab);
    assert_eq!(decode_bind_data(&big), Ok(valid_bind()));
}

#[test]
fn bind_smaller_than_known_passes_the_core_and_fails_the_vtd_driver() {
    // Linux 5.10 iommu.c copies min(argsz, 72) bytes: the vendor union past argsz reads as
    // zero, even if the bytes are there.
    let raw = mutated_bind(|r| r.argsz = 56);
    assert_eq!(
        read_bind_data(raw.as_bytes()).unwrap().raw.vtd,
        Default::default()
    );
    // argsz 64: only vendor.vtd.flags is covered.
    let raw = mutated_bind(|r| r.argsz = 64);
    let data = read_bind_data(raw.as_bytes()).unwrap();
    assert_eq!(data.raw.vtd.flags, valid_bind().vtd.flags.bits());
    assert_eq!((data.raw.vtd.pat, data.raw.vtd.emt), (0, 0));
    // intel/svm.c `intel_svm_bind_gpasid`: argsz < offsetofend(vendor.vtd) → EINVAL.
    for argsz in [56, 64, 71] {
        assert_rejected(
            decode_bind_both(&mutated_bind(|r| r.argsz = argsz)),
            Errno::EINVAL,
            &format!("argsz {argsz}: the VT-d driver needs the vendor part, 72 bytes"),
        );
    }
}
