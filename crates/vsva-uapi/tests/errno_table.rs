//! One case per validation rule: each starts from a valid request, breaks one field, and checks
//! the exact errno (and that the message names the field). Then the check order, larger and
//! smaller structs than known, and property tests that random bytes never panic and that valid
//! encodings round-trip.

use proptest::prelude::*;
use zerocopy::IntoBytes;

use vsva_uapi::iommu::{IOMMU_INV_ADDR_FLAGS_PASID, IOMMU_INV_PASID_FLAGS_PASID};
use vsva_uapi::{
    decode_bind_data, decode_cache_invalidate, decode_nesting_info, decode_nesting_op,
    decode_nesting_op_header, decode_pasid_request, encode_nesting_info, read_bind_data, AddrWidth,
    BindRequest, CacheInvalidateInfo, CacheInvalidateRequest, CacheSet, Errno, GpasidBindData,
    Granularity, InvAddrInfo, InvGranu, InvPasidInfo, NestingCapability, NestingFeatures,
    NestingInfoVtd, NestingOp, NestingOpKind, PasidRequest, PasidRequestOp, UapiError,
    VtdBindAttrs, VtdBindFlags,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts that `result` failed with `errno` and that its message mentions `needle`.
#[track_caller]
fn assert_rejected<T: core::fmt::Debug>(result: Result<T, UapiError>, errno: Errno, needle: &str) {
    let err = result.expect_err("request should have been rejected");
    assert_eq!(err.errno(), errno, "wrong errno for: {err}");
    assert!(
        err.message().contains(needle),
        "message {:?} does not mention {needle:?}",
        err.message()
    );
}

fn valid_pasid() -> PasidRequest {
    PasidRequestOp::alloc(1, 1000).unwrap().to_raw()
}

fn valid_bind() -> BindRequest {
    BindRequest {
        hpasid: 100,
        gpasid: Some(3),
        gpgd: 0x1_2345_6000,
        addr_width: AddrWidth::Bits48,
        vtd: VtdBindAttrs {
            flags: VtdBindFlags::SRE | VtdBindFlags::EAFE,
            pat: 0x0007_0406,
            emt: 6,
        },
    }
}

fn domain_inv() -> CacheInvalidateRequest {
    CacheInvalidateRequest::new(CacheSet::IOTLB | CacheSet::PASID, Granularity::Domain).unwrap()
}

fn pasid_inv() -> CacheInvalidateRequest {
    CacheInvalidateRequest::new(
        CacheSet::ALL,
        Granularity::Pasid {
            pasid: Some(100),
            archid: None,
        },
    )
    .unwrap()
}

fn addr_inv() -> CacheInvalidateRequest {
    CacheInvalidateRequest::new(
        CacheSet::IOTLB | CacheSet::DEV_IOTLB,
        Granularity::Addr {
            pasid: Some(100),
            archid: Some(2),
            addr: 0x4000_0000,
            granule_size: 4096,
            nb_granules: 8,
            leaf: true,
        },
    )
    .unwrap()
}

/// A NESTING_OP argument with the given header fields and payload bytes.
fn nesting(argsz: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&argsz.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A NESTING_OP argument wrapping `payload` with a matching header `argsz`.
fn wrap(op: NestingOpKind, payload: &[u8]) -> Vec<u8> {
    nesting(8 + payload.len() as u32, op.raw(), payload)
}

/// `bytes` with `argsz` raised to cover `extra` more bytes of the given value.
fn grown(bytes: &[u8], extra: usize, fill: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(bytes.len() + extra, fill);
    let argsz = out.len() as u32;
    out[..4].copy_from_slice(&argsz.to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// VFIO_IOMMU_PASID_REQUEST
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// VFIO_IOMMU_NESTING_OP header
// ---------------------------------------------------------------------------------------------

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
    // get_user(argsz), then copy_from_user(min(argsz, known size)) faults.
    let bind = valid_bind().to_bytes();
    assert_rejected(
        decode_nesting_op(&nesting(80, 0, &bind[..60])),
        Errno::EFAULT,
        "argsz 72 covers 72 bytes",
    );
    assert_rejected(
        decode_nesting_op(&nesting(80, 1, &bind[..3])),
        Errno::EFAULT,
        "fewer than the 4 bytes of the argsz",
    );
    let inv = domain_inv().to_bytes();
    assert_rejected(
        decode_nesting_op(&nesting(80, 2, &inv[..15])),
        Errno::EFAULT,
        "covers 56 bytes of iommu_cache_invalidate_info",
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

// ---------------------------------------------------------------------------------------------
// iommu_gpasid_bind_data
// ---------------------------------------------------------------------------------------------

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
    // Linux 5.10 iommu.c `iommu_sva_prepare_bind_data`: get_user(argsz) faults, then
    // copy_from_user(min(argsz, 72)) faults.
    let raw = valid_bind().to_raw();
    assert_rejected(
        decode_bind_data(&raw.as_bytes()[..3]),
        Errno::EFAULT,
        "fewer than the 4 bytes",
    );
    for len in [4, 55, 64] {
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

// ---------------------------------------------------------------------------------------------
// iommu_cache_invalidate_info
// ---------------------------------------------------------------------------------------------

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
    // Linux 5.10 iommu.c `iommu_uapi_cache_invalidate`: get_user(argsz), then
    // copy_from_user(min(argsz, 56)).
    let raw = addr_inv().to_raw();
    assert_rejected(
        decode_cache_invalidate(&raw.as_bytes()[..3]),
        Errno::EFAULT,
        "fewer than the 4 bytes",
    );
    for len in [4, 15, 40] {
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
    type Mutation = fn(&mut CacheInvalidateInfo);
    let steps: [(Mutation, &str); 8] = [
        (|r| r.argsz = 12, "argsz 12"),
        (|r| r.version = 0, "version 0"),
        (|r| r.cache = 0x18, "cache 0x18"),
        (|r| r.granularity = 7, "granularity 7"),
        (|r| r.padding[5] = 2, "padding[5]"),
        (|r| r.argsz = 40, "argsz 40 ends before granu.addr_info"),
        (|r| r.cache = 0x4, "includes PASID"),
        (
            |r| {
                let mut info = r.granu.addr_info();
                info.flags |= 1 << 12;
                r.granu = InvGranu::from(info);
            },
            "granu.addr_info.flags",
        ),
    ];
    for first in 0..steps.len() {
        let mut raw = addr_inv().to_raw();
        for (mutate, _) in &steps[first..] {
            mutate(&mut raw);
        }
        // `argsz` and `cache` are each broken twice (for different rules), so a later step can
        // overwrite this iteration's mutation: apply this step last so it is the one in force.
        steps[first].0(&mut raw);
        assert_rejected(
            decode_inv_both(raw.as_bytes()),
            Errno::EINVAL,
            steps[first].1,
        );
    }
}

#[test]
fn invalidate_larger_than_known_is_accepted() {
    for req in [domain_inv(), pasid_inv(), addr_inv()] {
        let big = grown(&req.to_bytes(), 64, 0x99);
        assert_eq!(decode_inv_both(&big), Ok(req));
    }
}

// ---------------------------------------------------------------------------------------------
// The nesting capability
// ---------------------------------------------------------------------------------------------

#[test]
fn nesting_capability_rules() {
    let cap = NestingCapability {
        features: NestingFeatures::ALL,
        addr_width: 57,
        pasid_bits: 20,
        vtd: NestingInfoVtd {
            cap_reg: 1,
            ecap_reg: 2,
            ..NestingInfoVtd::default()
        },
    };
    let bytes = encode_nesting_info(0, &cap);
    assert_eq!(decode_nesting_info(&bytes).map(|(_, c)| c), Ok(cap));
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0xff; 8]);
    assert_eq!(decode_nesting_info(&longer).map(|(_, c)| c), Ok(cap));
    assert_rejected(
        decode_nesting_info(&bytes[..55]),
        Errno::EFAULT,
        "fewer than the 56",
    );
    let cases: [(usize, u8, &str); 4] = [
        (0, 9, "capability id 9"),
        (2, 2, "version 2"),
        (8, 40, "size 40"),
        (12, 2, "format 2"),
    ];
    for (offset, value, needle) in cases {
        let mut bad = bytes.clone();
        bad[offset] = value;
        assert_rejected(decode_nesting_info(&bad), Errno::EINVAL, needle);
    }
    // info.addr_width is the domain's width (v5 04/15 `intel_iommu_get_nesting_info`:
    // `dmar_domain->gaw`), any value: a 3-level stage 2 reports 39.
    let mut narrow = bytes.clone();
    narrow[24] = 39;
    assert_eq!(decode_nesting_info(&narrow).unwrap().1.addr_width, 39);
    // Unknown feature bits from a newer producer are dropped, not rejected.
    let mut newer = bytes;
    newer[16] |= 0x80;
    assert_eq!(decode_nesting_info(&newer).map(|(_, c)| c), Ok(cap));
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

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
