//! Every row of the series' error rules for PASID_REQUEST and NESTING_OP, through the
//! byte-level entry point: each malformed field on its own, the order of the checks where
//! two could apply, and structs larger and smaller than known. Each group of rows names the
//! patch of "vfio: expose virtual Shared Virtual Addressing to VMs" (v5) or the Linux
//! 5.8–5.10 file it follows. Every failing call must leave the caller's bytes and every
//! process's PASIDs and binds as they were. UNBIND and CACHE_INVLD answer 0 whatever the
//! device did (v5 10/15, 11/15): their refused rows must change nothing, invalidate nothing,
//! and count exactly one refusal with the expected reason.

mod common;

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

// ----------------------------------------------------------------------------- PASID_REQUEST

#[test]
fn pasid_request_rows() {
    let ok_alloc = preq(16, ALLOC, 1, 100);
    let mut larger = preq(24, ALLOC, 1, 100);
    larger.extend_from_slice(&[0xff; 8]);
    // v5 07/15 `vfio_iommu_type1_pasid_request` (as reposted in v6-v7: the context check
    // before the op switch).
    run(vec![
        // 1. The argument cannot be read (copy_from_user(minsz)).
        row("empty buffer", On::Nest, PR, vec![], Err(EFAULT)),
        row(
            "15 of 16 bytes",
            On::Nest,
            PR,
            ok_alloc[..15].to_vec(),
            Err(EFAULT),
        ),
        // Nothing past minsz is read: a larger argsz than the buffer works.
        row(
            "argsz beyond the buffer, 16 bytes readable",
            On::Nest,
            PR,
            preq(17, ALLOC, 1, 100),
            Ok(4),
        ),
        row(
            "argsz u32::MAX, 16 bytes readable",
            On::Nest,
            PR,
            preq(u32::MAX, ALLOC, 1, 100),
            Ok(4),
        ),
        // 2. argsz < 16.
        row(
            "argsz 15",
            On::Nest,
            PR,
            preq(15, ALLOC, 1, 100),
            Err(EINVAL),
        ),
        row("argsz 0", On::Nest, PR, preq(0, ALLOC, 1, 100), Err(EINVAL)),
        row(
            "argsz 12 (a smaller struct)",
            On::Nest,
            PR,
            preq(12, ALLOC, 1, 100),
            Err(EINVAL),
        ),
        // 2. and 5.: flag bits other than ALLOC / FREE (with argsz), neither or both (after
        // the context check, in the op switch's default).
        row("flags 0", On::Nest, PR, preq(16, 0, 1, 100), Err(EINVAL)),
        row(
            "flags ALLOC|FREE",
            On::Nest,
            PR,
            preq(16, ALLOC | FREE, 1, 100),
            Err(EINVAL),
        ),
        row(
            "flags 1<<2",
            On::Nest,
            PR,
            preq(16, 1 << 2, 1, 100),
            Err(EINVAL),
        ),
        row(
            "flags ALLOC|1<<31",
            On::Nest,
            PR,
            preq(16, ALLOC | 1 << 31, 1, 100),
            Err(EINVAL),
        ),
        row(
            "flags FREE|1<<5",
            On::Nest,
            PR,
            preq(16, FREE | 1 << 5, 0, 100),
            Err(EINVAL),
        ),
        // 4. min > max.
        row(
            "alloc min > max",
            On::Nest,
            PR,
            preq(16, ALLOC, 10, 9),
            Err(EINVAL),
        ),
        row(
            "free min > max",
            On::Nest,
            PR,
            preq(16, FREE, u32::MAX, 0),
            Err(EINVAL),
        ),
        // 5. No per-process context.
        row(
            "type1 v2 container",
            On::Type1,
            PR,
            ok_alloc.clone(),
            Err(EOPNOTSUPP),
        ),
        row(
            "type1 v2 free",
            On::Type1,
            PR,
            preq(16, FREE, 0, u32::MAX),
            Err(EOPNOTSUPP),
        ),
        row(
            "PASID support off",
            On::PasidOff,
            PR,
            ok_alloc.clone(),
            Err(EOPNOTSUPP),
        ),
        // ... but the argument is checked first: undefined bits and min > max come before
        // the context, flags 0 or both after it.
        row(
            "type1 v2, undefined flag bit first",
            On::Type1,
            PR,
            preq(16, 1 << 2, 1, 100),
            Err(EINVAL),
        ),
        row(
            "type1 v2, min > max before flags 0",
            On::Type1,
            PR,
            preq(16, 0, 5, 4),
            Err(EINVAL),
        ),
        row(
            "type1 v2, context before flags 0",
            On::Type1,
            PR,
            preq(16, 0, 1, 100),
            Err(EOPNOTSUPP),
        ),
        row(
            "type1 v2, context before ALLOC|FREE",
            On::Type1,
            PR,
            preq(16, ALLOC | FREE, 1, 100),
            Err(EOPNOTSUPP),
        ),
        row(
            "PASID off, short buffer first",
            On::PasidOff,
            PR,
            vec![16, 0],
            Err(EFAULT),
        ),
        row(
            "PASID off, min > max first",
            On::PasidOff,
            PR,
            preq(16, ALLOC, 5, 4),
            Err(EINVAL),
        ),
        // Before VFIO_SET_IOMMU the VFIO core answers EINVAL without reading the argument.
        row("no IOMMU type", On::Bare, PR, ok_alloc.clone(), Err(EINVAL)),
        row(
            "no IOMMU type, unreadable arg",
            On::Bare,
            PR,
            vec![],
            Err(EINVAL),
        ),
        // 6. ALLOC with nothing free in the range.
        row(
            "range above the space",
            On::Nest,
            PR,
            preq(16, ALLOC, 1 << 20, u32::MAX),
            Err(ENOSPC),
        ),
        row(
            "range [0, 0]",
            On::Nest,
            PR,
            preq(16, ALLOC, 0, 0),
            Err(ENOSPC),
        ),
        row(
            "range fully taken",
            On::Nest,
            PR,
            preq(16, ALLOC, BOUND, OTHERS),
            Err(ENOSPC),
        ),
        // Successes.
        row("alloc: lowest free", On::Nest, PR, ok_alloc.clone(), Ok(4)),
        row(
            "alloc skips another's PASID",
            On::Nest,
            PR,
            preq(16, ALLOC, OTHERS, 10),
            Ok(4),
        ),
        row("larger struct: tail ignored", On::Nest, PR, larger, Ok(4)),
        row(
            "free all of mine returns 0",
            On::Nest,
            PR,
            preq(16, FREE, 0, u32::MAX),
            Ok(0),
        ),
        row(
            "free nobody's returns 0",
            On::Nest,
            PR,
            preq(16, FREE, NOBODY, NOBODY),
            Ok(0),
        ),
        row(
            "free another's returns 0",
            On::Nest,
            PR,
            preq(16, FREE, OTHERS, OTHERS),
            Ok(0),
        ),
    ]);
}

#[test]
fn quota_row() {
    // The caller's quota used up: ENOSPC even though the range has room.
    let fx = fixture();
    let vfio_set = fx.nest.process_context().unwrap();
    assert_eq!(vfio_set.owned(), 2);
    fx._vfio.set_pasid_quota(process(1), 2).unwrap();
    let mut arg = preq(16, ALLOC, 1, 100);
    assert_eq!(call(&fx.nest, PR, &mut arg), Err(ENOSPC));
    assert_eq!(vfio_set.pasids(), vec![BOUND, OWN]);
}

// ----------------------------------------------------------------------------- NESTING_OP

#[test]
fn nesting_op_header_and_container_rows() {
    let bind = bind_data(u64::from(OWN));
    let bind = bind.as_bytes();
    let domain = inv(CacheSet::IOTLB, Granularity::Domain);
    let domain = domain.as_bytes();
    let bad_version = bind_with(|d| d.version = 2);
    // v5 10/15 `vfio_iommu_type1_nesting_op`, 11/15 `vfio_iommu_invalidate_cache`; the
    // payload is read by Linux 5.10 iommu.c with its own argsz.
    run(vec![
        // Header: sizes. The header's argsz is only checked to be at least 8.
        row("empty buffer", On::Nest, NO, vec![], Err(EFAULT)),
        row(
            "7 header bytes",
            On::Nest,
            NO,
            op(BIND, bind)[..7].to_vec(),
            Err(EFAULT),
        ),
        row(
            "header argsz 7",
            On::Nest,
            NO,
            nesting(-73, BIND, bind),
            Err(EINVAL),
        ),
        row(
            "header argsz beyond buffer",
            On::Nest,
            NO,
            nesting(1, BIND, bind),
            Ok(0),
        ),
        row(
            "header argsz 8, payload read with its own argsz",
            On::Nest,
            NO,
            nesting(-72, BIND, bind),
            Ok(0),
        ),
        // Header: flags.
        row(
            "flags bit 16",
            On::Nest,
            NO,
            op(BIND | 1 << 16, bind),
            Err(EINVAL),
        ),
        row(
            "flags bit 31",
            On::Nest,
            NO,
            op(INVLD | 1 << 31, domain),
            Err(EINVAL),
        ),
        row("op 3", On::Nest, NO, op(3, bind), Err(EINVAL)),
        row("op 0xffff", On::Nest, NO, op(0xffff, bind), Err(EINVAL)),
        // The payload's bytes: the core's get_user(argsz) and copy_from_user(min(argsz,
        // size)) fault; a bind returns it, an unbind or invalidation answers 0.
        row(
            "bind payload 55 of 72 bytes",
            On::Nest,
            NO,
            op(BIND, &bind[..55]),
            Err(EFAULT),
        ),
        row(
            "bind payload 3 bytes",
            On::Nest,
            NO,
            op(BIND, &bind[..3]),
            Err(EFAULT),
        ),
        unbind_refused("unbind payload 0 bytes", &[], RefusalReason::Malformed),
        inv_refused(
            "invalidate payload 15 bytes",
            &domain[..15],
            RefusalReason::Malformed,
        ),
        // Container: not nesting, or no feature; before the payload is looked at.
        row(
            "type1 v2 bind",
            On::Type1,
            NO,
            op(BIND, bind),
            Err(EOPNOTSUPP),
        ),
        row(
            "type1 v2 invalidate",
            On::Type1,
            NO,
            op(INVLD, domain),
            Err(EOPNOTSUPP),
        ),
        row(
            "type1 v2, bad payload",
            On::Type1,
            NO,
            op(BIND, &bad_version),
            Err(EOPNOTSUPP),
        ),
        row(
            "PASID off bind",
            On::PasidOff,
            NO,
            op(BIND, bind),
            Err(EOPNOTSUPP),
        ),
        row(
            "PASID off unbind",
            On::PasidOff,
            NO,
            op(UNBIND, bind),
            Err(EOPNOTSUPP),
        ),
        row(
            "PASID off invalidate",
            On::PasidOff,
            NO,
            op(INVLD, domain),
            Err(EOPNOTSUPP),
        ),
        row(
            "PASID off, bad header first",
            On::PasidOff,
            NO,
            op(7, bind),
            Err(EINVAL),
        ),
        row("no IOMMU type", On::Bare, NO, op(BIND, bind), Err(EINVAL)),
    ]);
}

#[test]
fn bind_and_unbind_rows() {
    let own = u64::from(OWN);
    let mut smaller = bind_with(|d| d.argsz = 56);
    smaller.truncate(56);
    let mut larger = bind_with(|d| d.argsz = 80);
    larger.extend_from_slice(&[0xee; 8]);
    let mut partial_vendor = bind_with(|d| {
        d.argsz = 64;
        d.vtd.emt = 9; // beyond argsz: reads as zero
    });
    partial_vendor.truncate(64);
    let claim_more = bind_with(|d| d.argsz = 73);
    let mut unbind_nobody = bind_data(u64::from(NOBODY));
    unbind_nobody.gpgd = 0;
    let others = u64::from(OTHERS);
    // The IOMMU core: Linux 5.10 iommu.c `iommu_sva_prepare_bind_data` and
    // `iommu_check_bind_data`. The VT-d driver: intel/svm.c `intel_svm_bind_gpasid`, then
    // intel/pasid.c `intel_pasid_setup_nested` and `intel_pasid_setup_bind_data`. VFIO:
    // v5 10/15 `vfio_iommu_handle_pgtbl_op` (a bind's error is returned, an unbind's is not).
    run(vec![
        // Payload sizes (core).
        row(
            "payload argsz 55",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.argsz = 55)),
            Err(EINVAL),
        ),
        row(
            "payload argsz 73: only the known 72 bytes are read",
            On::Nest,
            NO,
            op(BIND, &claim_more),
            Ok(0),
        ),
        // Payload fields, one at a time (core: version, format < LAST, flags, padding).
        row(
            "version 0",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.version = 0)),
            Err(EINVAL),
        ),
        row(
            "version 2",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.version = 2)),
            Err(EINVAL),
        ),
        row(
            "format 2",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.format = 2)),
            Err(EINVAL),
        ),
        // VT-d: format must be VT-d (the core lets 0 through).
        row(
            "format 0",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.format = 0)),
            Err(EINVAL),
        ),
        row(
            "flags 1<<1",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.flags = 2)),
            Err(EINVAL),
        ),
        row(
            "flags 1<<63",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.flags = 1 << 63)),
            Err(EINVAL),
        ),
        row(
            "padding[7]",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.padding[7] = 1)),
            Err(EINVAL),
        ),
        row(
            "addr_width 39",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.addr_width = 39)),
            Err(EINVAL),
        ),
        row(
            "addr_width 0",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.addr_width = 0)),
            Err(EINVAL),
        ),
        row(
            "vtd.flags 1<<7",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.vtd.flags = 1 << 7)),
            Err(EINVAL),
        ),
        // VT-d: no memory-type support (IOMMU_SVA_VTD_GPASID_MTS_MASK).
        row(
            "vtd.flags PCD",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.vtd.flags = 1 << 2)),
            Err(EINVAL),
        ),
        row(
            "vtd.flags PWT",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.vtd.flags = 1 << 3)),
            Err(EINVAL),
        ),
        row(
            "vtd.flags EMTE",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.vtd.flags = 1 << 4)),
            Err(EINVAL),
        ),
        row(
            "vtd.flags CD",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.vtd.flags = 1 << 5)),
            Err(EINVAL),
        ),
        // VT-d: the vendor part must be there (argsz < 72).
        row(
            "smaller struct (no vendor part)",
            On::Nest,
            NO,
            op(BIND, &smaller),
            Err(EINVAL),
        ),
        row(
            "partial vendor part",
            On::Nest,
            NO,
            op(BIND, &partial_vendor),
            Err(EINVAL),
        ),
        // VT-d order: vendor checks before the PASID, ownership before the address width
        // and the memory type, already bound before the address width.
        row(
            "argsz 56 and another's: size first",
            On::Nest,
            NO,
            op(
                BIND,
                &bind_with(|d| {
                    d.argsz = 56;
                    d.hpasid = others;
                }),
            ),
            Err(EINVAL),
        ),
        row(
            "vendor flag 1<<7 and another's: flags first",
            On::Nest,
            NO,
            op(
                BIND,
                &bind_with(|d| {
                    d.vtd.flags = 1 << 7;
                    d.hpasid = others;
                }),
            ),
            Err(EINVAL),
        ),
        row(
            "another's and addr_width 39: ownership first",
            On::Nest,
            NO,
            op(
                BIND,
                &bind_with(|d| {
                    d.hpasid = others;
                    d.addr_width = 39;
                }),
            ),
            Err(EACCES),
        ),
        row(
            "nobody's and PCD: ownership first",
            On::Nest,
            NO,
            op(
                BIND,
                &bind_with(|d| {
                    d.hpasid = u64::from(NOBODY);
                    d.vtd.flags = 1 << 2;
                }),
            ),
            Err(ENOENT),
        ),
        row(
            "already bound and addr_width 39: busy first",
            On::Nest,
            NO,
            op(
                BIND,
                &bind_with(|d| {
                    d.hpasid = u64::from(BOUND);
                    d.addr_width = 39;
                }),
            ),
            Err(EBUSY),
        ),
        // The order of the core's checks: version before format before flags.
        row(
            "version and format bad: version wins",
            On::Nest,
            NO,
            op(
                BIND,
                &bind_with(|d| {
                    d.version = 3;
                    d.format = 9;
                }),
            ),
            Err(EINVAL),
        ),
        // The PASID (VT-d: 0 < hpasid < PASID_MAX, then ownership, then already bound).
        row(
            "hpasid 0",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.hpasid = 0)),
            Err(EINVAL),
        ),
        row(
            "hpasid 2^20",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.hpasid = 1 << 20)),
            Err(EINVAL),
        ),
        row(
            "hpasid 2^32 + own (no truncation)",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.hpasid = (1 << 32) + own)),
            Err(EINVAL),
        ),
        row(
            "hpasid nobody's",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.hpasid = u64::from(NOBODY))),
            Err(ENOENT),
        ),
        row(
            "hpasid another's",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.hpasid = u64::from(OTHERS))),
            Err(EACCES),
        ),
        row(
            "hpasid already bound",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.hpasid = u64::from(BOUND))),
            Err(EBUSY),
        ),
        // Not checked by the driver: gpgd's low 12 bits (`pasid_set_flptr` keeps 63:12);
        // PAT and EMT (used only with EMTE, which is refused).
        row(
            "gpgd unaligned",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.gpgd = GPGD + 8)),
            Ok(0),
        ),
        row(
            "vtd.emt 8",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.vtd.emt = 8)),
            Ok(0),
        ),
        // Successes.
        row("bind", On::Nest, NO, op(BIND, &bind_with(|_| ())), Ok(0)),
        row(
            "larger struct: tail ignored",
            On::Nest,
            NO,
            op(BIND, &larger),
            Ok(0),
        ),
        // Unbind: always 0 (v5 10/15 `vfio_dev_unbind_gpasid_fn` ignores the result); a
        // refused one changes nothing and is counted.
        unbind_refused(
            "unbind nobody's",
            unbind_nobody.as_bytes(),
            RefusalReason::NotAllocated,
        ),
        unbind_refused(
            "unbind another's",
            &bind_with(|d| d.hpasid = others),
            RefusalReason::NotOwned,
        ),
        unbind_refused(
            "unbind hpasid 0",
            &bind_with(|d| d.hpasid = 0),
            RefusalReason::PasidOutOfRange,
        ),
        unbind_refused(
            "unbind hpasid 2^20",
            &bind_with(|d| d.hpasid = 1 << 20),
            RefusalReason::PasidOutOfRange,
        ),
        unbind_refused(
            "unbind bad version",
            &bind_with(|d| d.version = 2),
            RefusalReason::Malformed,
        ),
        unbind_refused(
            "unbind payload argsz 55",
            &bind_with(|d| d.argsz = 55),
            RefusalReason::Malformed,
        ),
        unbind_refused(
            "unbind payload cut short",
            &bind_with(|_| ())[..60],
            RefusalReason::Malformed,
        ),
        // The unbind path has no VT-d size or vendor checks: 56 bytes are enough.
        row(
            "unbind bound, no vendor part",
            On::Nest,
            NO,
            op(UNBIND, &{
                let mut v = bind_with(|d| {
                    d.argsz = 56;
                    d.hpasid = u64::from(BOUND);
                });
                v.truncate(56);
                v
            }),
            Ok(0),
        ),
        row(
            "unbind bound",
            On::Nest,
            NO,
            op(UNBIND, &bind_with(|d| d.hpasid = u64::from(BOUND))),
            Ok(0),
        ),
        row(
            "unbind owned, not bound",
            On::Nest,
            NO,
            op(UNBIND, &bind_with(|_| ())),
            Ok(0),
        ),
    ]);
}

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

#[test]
fn other_commands() {
    let fx = fixture();
    assert_eq!(call(&fx.nest, 0x3b7f, &mut []), Err(ENOTTY));
    assert_eq!(call(&fx.nest, 0xdead, &mut [0; 16]), Err(ENOTTY));
    // Before the IOMMU type is set, the VFIO core answers EINVAL for any driver ioctl.
    assert_eq!(call(&fx.bare, 0x3b7f, &mut []), Err(EINVAL));
    // PASID_REQUEST and NESTING_OP are not answered as unknown on any container type.
    assert_ne!(call(&fx.type1, PR, &mut preq(16, ALLOC, 1, 2)), Err(ENOTTY));
    assert_ne!(call(&fx.type1, VFIO_IOMMU_NESTING_OP, &mut []), Err(ENOTTY));
}

#[test]
fn container_and_get_info_rows() {
    use vsva_uapi::vfio::{VFIO_CHECK_EXTENSION, VFIO_IOMMU_GET_INFO, VFIO_SET_IOMMU};
    let info = |argsz: u32, len: usize| {
        let mut v = vec![0u8; len];
        v[..4].copy_from_slice(&argsz.to_le_bytes());
        v
    };
    run(vec![
        // Linux 5.8 vfio_iommu_type1.c `vfio_iommu_type1_check_extension`: types 1, 3, 6.
        row(
            "CHECK_EXTENSION type1 v1",
            On::Bare,
            VFIO_CHECK_EXTENSION,
            1u64.to_le_bytes().to_vec(),
            Ok(1),
        ),
        row(
            "CHECK_EXTENSION nesting",
            On::Bare,
            VFIO_CHECK_EXTENSION,
            6u64.to_le_bytes().to_vec(),
            Ok(1),
        ),
        row(
            "CHECK_EXTENSION type 2",
            On::Bare,
            VFIO_CHECK_EXTENSION,
            2u64.to_le_bytes().to_vec(),
            Ok(0),
        ),
        // Linux 5.8 vfio.c `vfio_ioctl_set_iommu`: type1 v1 is taken; no driver → ENODEV.
        row(
            "SET_IOMMU type1 v1",
            On::Bare,
            VFIO_SET_IOMMU,
            1u64.to_le_bytes().to_vec(),
            Ok(0),
        ),
        row(
            "SET_IOMMU type 2",
            On::Bare,
            VFIO_SET_IOMMU,
            2u64.to_le_bytes().to_vec(),
            Err(ENODEV),
        ),
        // Linux 5.8 `vfio_iommu_type1_get_info`: minsz 16 copied, then argsz checked; the
        // chain is copied out only when argsz holds it, and that copy can fault.
        row(
            "GET_INFO 15 bytes",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(16, 15),
            Err(EFAULT),
        ),
        row(
            "GET_INFO argsz 15",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(15, 32),
            Err(EINVAL),
        ),
        row(
            "GET_INFO argsz 16 beyond a 16-byte buffer",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(16, 16),
            Ok(0),
        ),
        row(
            "GET_INFO argsz 24 in 20 bytes: the info copy faults",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(24, 20),
            Err(EFAULT),
        ),
        row(
            "GET_INFO argsz 4096 in 64 bytes: the chain copy faults",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(4096, 64),
            Err(EFAULT),
        ),
        row(
            "GET_INFO argsz 100 in 24 bytes: too small for the chain, size reported",
            On::Nest,
            VFIO_IOMMU_GET_INFO,
            info(100, 24),
            Ok(0),
        ),
    ]);
    // v5 04/15: a nesting container holds one group; a second → EINVAL (was EBUSY).
    let fx = fixture();
    let err = fx.nest.attach_group(GroupId(6)).unwrap_err();
    assert_eq!(err.errno(), EBUSY, "group 6 is held by the bare container");
    drop(fx.bare);
    let err = fx.nest.attach_group(GroupId(6)).unwrap_err();
    assert_eq!(err.errno(), EINVAL, "{err}");
}
