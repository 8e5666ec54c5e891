//! One case per validation rule: each starts from a valid request, breaks one field, and checks
//! the exact errno (and that the message names the field). Then the check order, larger and
//! smaller structs than known, and property tests that random bytes never panic and that valid
//! encodings round-trip.
//!
//! The helpers are here; the cases are in one file per struct: [`pasid_request`],
//! [`nesting_op`] (the header), [`bind`], [`invalidate`], [`capability`], then
//! [`properties`].

mod bind;
mod capability;
mod invalidate;
mod nesting_op;
mod pasid_request;
mod properties;

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
