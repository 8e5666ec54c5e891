//! Every row of the series' error rules for PASID_REQUEST and NESTING_OP, through the
//! byte-level entry point: each malformed field on its own, the order of the checks where
//! two could apply, and structs larger and smaller than known. Each group of rows names the
//! patch of "vfio: expose virtual Shared Virtual Addressing to VMs" (v5) or the Linux
//! 5.8–5.10 file it follows. Every failing call must leave the caller's bytes and every
//! process's PASIDs and binds as they were. UNBIND and CACHE_INVLD answer 0 whatever the
//! device did (v5 10/15, 11/15): their refused rows must change nothing, invalidate nothing,
//! and count exactly one refusal with the expected reason.
//!
//! The harness (fixture, rows, argument builders) is here; the rows are in one file per
//! command: [`pasid_request`], [`nesting_op`] (header, bind, unbind), [`invalidate`] and
//! [`container`] (the container ioctls and unknown commands).

#[path = "../common/mod.rs"]
mod common;

mod container;
mod invalidate;
mod nesting_op;
mod pasid_request;

use common::*;
use vsva_ioasid::Pasid;
use vsva_uapi::iommu::{
    CacheInvalidateInfo, GpasidBindData, InvAddrInfo, InvGranu, InvPasidInfo,
    IOMMU_INV_ADDR_FLAGS_LEAF, IOMMU_INV_ADDR_FLAGS_PASID, IOMMU_INV_PASID_FLAGS_ARCHID,
    IOMMU_INV_PASID_FLAGS_PASID,
};
use vsva_uapi::vfio::{
    VFIO_IOMMU_FLAG_ALLOC_PASID as ALLOC, VFIO_IOMMU_FLAG_FREE_PASID as FREE,
    VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_NESTING_OP_BIND_PGTBL as BIND,
    VFIO_IOMMU_NESTING_OP_CACHE_INVLD as INVLD, VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL as UNBIND,
    VFIO_IOMMU_PASID_REQUEST,
};
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Errno, Granularity};
use vsva_vfio::{Container, GroupId, IommuType, RefusalReason, RefusedOp, Vfio, VfioConfig};
use zerocopy::IntoBytes;

use Errno::*;

/// Which container of the fixture a row runs on.
#[derive(Debug, Clone, Copy)]
enum On {
    /// Process 1's nesting container (guest RAM mapped).
    Nest,
    /// Process 1's type1 v2 container.
    Type1,
    /// Process 1's container with a group but no IOMMU type.
    Bare,
    /// A nesting container on a host with PASID support off.
    PasidOff,
}

struct Fixture {
    _vfio: Vfio,
    _off: Vfio,
    nest: Container,
    type1: Container,
    bare: Container,
    off: Container,
    /// Owned by process 2.
    peer: Container,
}

/// Process 1 owns `OWN` (unbound) and `BOUND` (bound in `nest`); process 2 owns `OTHERS`;
/// `NOBODY` is free.
const BOUND: Pasid = 1;
const OWN: Pasid = 2;
const OTHERS: Pasid = 3;
const NOBODY: Pasid = 500;
const GPGD: u64 = 0x10_0000;

fn fixture() -> Fixture {
    let vfio = host();
    for dev in 3..=6 {
        function(&vfio, dev);
    }
    let p1 = process(1);
    let nest = container(&vfio, p1, 3, IommuType::Nesting);
    map_guest_ram(&nest);
    let peer = container(&vfio, process(2), 4, IommuType::Nesting);
    let type1 = container(&vfio, p1, 5, IommuType::Type1v2);
    let bare = vfio.open_container(p1);
    bare.attach_group(GroupId(6)).unwrap();
    assert_eq!(nest.alloc_pasid(1, 1).unwrap(), BOUND);
    assert_eq!(nest.alloc_pasid(1, 10).unwrap(), OWN);
    assert_eq!(peer.alloc_pasid(1, 10).unwrap(), OTHERS);
    nest.bind(&BindRequest::new(u64::from(BOUND), GPGD, AddrWidth::Bits48))
        .unwrap();
    let off_vfio = host_with(
        small_iommu_config(),
        VfioConfig {
            pasid_enabled: false,
            ..VfioConfig::default()
        },
    );
    function(&off_vfio, 3);
    let off = container(&off_vfio, p1, 3, IommuType::Nesting);
    Fixture {
        _vfio: vfio,
        _off: off_vfio,
        nest,
        type1,
        bare,
        off,
        peer,
    }
}

impl Fixture {
    fn on(&self, on: On) -> &Container {
        match on {
            On::Nest => &self.nest,
            On::Type1 => &self.type1,
            On::Bare => &self.bare,
            On::PasidOff => &self.off,
        }
    }

    /// Everything an error or a refusal must not change: PASIDs, binds, and the IOMMU's
    /// count of invalidations.
    fn snapshot(&self) -> (Vec<Pasid>, Vec<Pasid>, Vec<Pasid>, u64) {
        let mine = self.nest.process_context().unwrap();
        let theirs = self.peer.process_context().unwrap();
        (
            mine.pasids(),
            mine.bound_pasids(),
            theirs.pasids(),
            self._vfio.iommu().stats().invalidations,
        )
    }
}

struct Row {
    name: &'static str,
    on: On,
    cmd: u32,
    arg: Vec<u8>,
    want: Result<u64, Errno>,
    /// For an unbind or invalidation answered 0 that must change nothing: the refusal.
    refused: Option<(RefusedOp, RefusalReason)>,
}

fn row(name: &'static str, on: On, cmd: u32, arg: Vec<u8>, want: Result<u64, Errno>) -> Row {
    Row {
        name,
        on,
        cmd,
        arg,
        want,
        refused: None,
    }
}

/// A NESTING_OP on the nesting container that answers 0, changes nothing and is counted as
/// refused for `reason`.
fn refused(name: &'static str, arg: Vec<u8>, op: RefusedOp, reason: RefusalReason) -> Row {
    Row {
        refused: Some((op, reason)),
        ..row(name, On::Nest, VFIO_IOMMU_NESTING_OP, arg, Ok(0))
    }
}

/// An unbind refused for `reason`.
fn unbind_refused(name: &'static str, payload: &[u8], reason: RefusalReason) -> Row {
    refused(name, op(UNBIND, payload), RefusedOp::Unbind, reason)
}

/// An invalidation refused for `reason`.
fn inv_refused(name: &'static str, payload: &[u8], reason: RefusalReason) -> Row {
    refused(name, op(INVLD, payload), RefusedOp::Invalidate, reason)
}

fn run(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for r in rows {
        let fx = fixture();
        let before = fx.snapshot();
        let mut arg = r.arg.clone();
        let got = fx.on(r.on).ioctl(r.cmd, &mut arg).map(|o| o.value());
        let got_errno = got.as_ref().map(|v| *v).map_err(|e| e.errno());
        if got_errno != r.want {
            failures.push(format!(
                "{}: want {:?}, got {:?}",
                r.name,
                r.want,
                got.map_err(|e| format!("{}: {e}", e.errno().name()))
            ));
            continue;
        }
        if let Err(e) = &got {
            assert!(!e.to_string().is_empty(), "{}: empty message", r.name);
            assert_eq!(arg, r.arg, "{}: the argument changed on error", r.name);
            assert_eq!(fx.snapshot(), before, "{}: state changed on error", r.name);
        }
        let counts = fx._vfio.refusals();
        let total: u64 = counts.iter().map(|(_, _, n)| n).sum();
        match r.refused {
            Some((op, reason)) => {
                assert_eq!(arg, r.arg, "{}: the argument changed", r.name);
                assert_eq!(fx.snapshot(), before, "{}: a refusal changed state", r.name);
                if (counts.get(op, reason), total) != (1, 1) {
                    failures.push(format!(
                        "{}: want one {}/{} refusal, got {:?}",
                        r.name,
                        op.label(),
                        reason.label(),
                        counts
                            .iter()
                            .filter(|(_, _, n)| *n > 0)
                            .map(|(o, why, n)| format!("{}/{}={n}", o.label(), why.label()))
                            .collect::<Vec<_>>()
                    ));
                }
            }
            None => assert_eq!(total, 0, "{}: counted as a refusal", r.name),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ----------------------------------------------------------------------------- builders

fn preq(argsz: u32, flags: u32, min: u32, max: u32) -> Vec<u8> {
    [argsz, flags, min, max]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn nesting(argsz_extra: i64, flags: u32, payload: &[u8]) -> Vec<u8> {
    let argsz = (8 + payload.len() as i64 + argsz_extra) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(&argsz.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn op(flags: u32, payload: &[u8]) -> Vec<u8> {
    nesting(0, flags, payload)
}

fn bind_data(hpasid: u64) -> GpasidBindData {
    BindRequest::new(hpasid, GPGD, AddrWidth::Bits48).to_raw()
}

fn bind_with(f: impl FnOnce(&mut GpasidBindData)) -> Vec<u8> {
    let mut d = bind_data(u64::from(OWN));
    f(&mut d);
    d.as_bytes().to_vec()
}

fn inv(caches: CacheSet, granularity: Granularity) -> CacheInvalidateInfo {
    CacheInvalidateRequest::new(caches, granularity)
        .unwrap()
        .to_raw()
}

fn pasid_g(pasid: u64) -> Granularity {
    Granularity::Pasid {
        pasid: Some(pasid),
        archid: None,
    }
}

fn addr_info(pasid: u64, addr: u64, granule_size: u64, nb_granules: u64) -> InvAddrInfo {
    InvAddrInfo {
        flags: IOMMU_INV_ADDR_FLAGS_PASID | IOMMU_INV_ADDR_FLAGS_LEAF,
        archid: 0,
        pasid,
        addr,
        granule_size,
        nb_granules,
    }
}

fn inv_addr(info: InvAddrInfo) -> Vec<u8> {
    let mut raw = inv(CacheSet::IOTLB, Granularity::Domain);
    raw.granularity = 2;
    raw.granu = InvGranu::from(info);
    raw.as_bytes().to_vec()
}

fn inv_with(f: impl FnOnce(&mut CacheInvalidateInfo)) -> Vec<u8> {
    let mut raw = inv(CacheSet::IOTLB, pasid_g(u64::from(OWN)));
    f(&mut raw);
    raw.as_bytes().to_vec()
}

const PR: u32 = VFIO_IOMMU_PASID_REQUEST;
const NO: u32 = VFIO_IOMMU_NESTING_OP;
