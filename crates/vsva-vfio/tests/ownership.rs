//! Ownership: a process can free, bind, unbind and invalidate only its own PASIDs, and a
//! `[0, u32::MAX]` free touches nothing of anyone else's.

mod common;

use common::*;
use vsva_ioasid::{Pasid, PasidState};
use vsva_uapi::vfio::{VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Errno, Granularity, NestingOp,
    PasidRequestOp,
};
use vsva_vfio::{
    ConfigWidth, Container, IommuType, ProcessToken, RefusalReason, RefusedOp, VfioError,
};

const VA: u64 = 0x4000_0000;
const GPA: u64 = 0x20_0000;

fn bind(c: &Container, pasid: u64, gpgd: u64) -> Result<u64, Errno> {
    let mut arg = NestingOp::Bind(BindRequest::new(pasid, gpgd, AddrWidth::Bits48)).to_bytes();
    call(c, VFIO_IOMMU_NESTING_OP, &mut arg)
}

fn unbind(c: &Container, pasid: u64) -> Result<u64, Errno> {
    let mut arg = NestingOp::Unbind(BindRequest::new(pasid, 0, AddrWidth::Bits48)).to_bytes();
    call(c, VFIO_IOMMU_NESTING_OP, &mut arg)
}

fn invalidate(c: &Container, granularity: Granularity, caches: CacheSet) -> Result<u64, Errno> {
    let req = CacheInvalidateRequest::new(caches, granularity).unwrap();
    call(
        c,
        VFIO_IOMMU_NESTING_OP,
        &mut NestingOp::Invalidate(req).to_bytes(),
    )
}

fn free(c: &Container, min: u32, max: u32) -> Result<u64, Errno> {
    let mut arg = PasidRequestOp::free(min, max).unwrap().to_bytes();
    call(c, VFIO_IOMMU_PASID_REQUEST, &mut arg)
}

fn pasid_inv(pasid: Pasid) -> Granularity {
    Granularity::Pasid {
        pasid: Some(u64::from(pasid)),
        archid: None,
    }
}

fn addr_inv(pasid: Pasid) -> Granularity {
    Granularity::Addr {
        pasid: Some(u64::from(pasid)),
        archid: None,
        addr: VA,
        granule_size: 0x1000,
        nb_granules: 1,
        leaf: false,
    }
}

#[test]
fn another_process_cannot_touch_my_pasids() {
    let vfio = host();
    let dev_a = function(&vfio, 3);
    function(&vfio, 4);
    let a = container(&vfio, process(1), 3, IommuType::Nesting);
    let b = container(&vfio, process(2), 4, IommuType::Nesting);
    map_guest_ram(&a);
    map_guest_ram(&b);
    let mut guest = Guest::new(vfio.iommu());
    let root = guest.new_root();
    guest.map(root, VA, GPA);

    let mine: Vec<Pasid> = (0..3)
        .map(|_| a.alloc_pasid(1, u32::MAX).unwrap())
        .collect();
    let theirs: Vec<Pasid> = (0..2)
        .map(|_| b.alloc_pasid(1, u32::MAX).unwrap())
        .collect();
    assert_eq!(mine, [1, 2, 3]);
    assert_eq!(theirs, [4, 5]);
    assert_eq!(bind(&a, u64::from(mine[0]), root), Ok(0));
    dev_a.config_write(0x106, ConfigWidth::Word, 1).unwrap();
    dev_a.dma_write(Some(mine[0]), VA, b"mine").unwrap();

    // B names A's PASIDs: EACCES for a bind; an unbind or invalidation answers 0 as the
    // series does (v5 10/15, 11/15), changes nothing and is counted as refused...
    let invalidations = vfio.iommu().stats().invalidations;
    for &p in &mine {
        assert_eq!(bind(&b, u64::from(p), root), Err(Errno::EACCES), "bind {p}");
        assert_eq!(unbind(&b, u64::from(p)), Ok(0), "unbind {p}");
        assert_eq!(invalidate(&b, pasid_inv(p), CacheSet::ALL), Ok(0));
        assert_eq!(invalidate(&b, addr_inv(p), CacheSet::IOTLB), Ok(0));
        // ...and a free that frees nothing (FREE never fails, it frees only the caller's).
        assert_eq!(free(&b, p, p), Ok(0));
        assert_eq!(b.free_pasids(p, p).unwrap(), 0);
    }
    // The error names the owner and the caller.
    let err = b
        .bind(&BindRequest::new(
            u64::from(mine[1]),
            root,
            AddrWidth::Bits48,
        ))
        .unwrap_err();
    assert!(
        matches!(err, VfioError::PasidNotOwned { pasid: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("hpasid 2"), "{err}");

    let refusals = vfio.refusals();
    assert_eq!(refusals.get(RefusedOp::Unbind, RefusalReason::NotOwned), 3);
    assert_eq!(
        refusals.get(RefusedOp::Invalidate, RefusalReason::NotOwned),
        6
    );
    assert_eq!(vfio.iommu().stats().invalidations, invalidations);
    assert_eq!(a.bound_pasids(), [mine[0]], "A's bind survived B's unbind");

    // Nobody's PASID: ENOENT for a bind, a counted refusal otherwise.
    assert_eq!(bind(&b, 77, root), Err(Errno::ENOENT));
    assert_eq!(unbind(&b, 77), Ok(0));
    assert_eq!(invalidate(&b, pasid_inv(77), CacheSet::IOTLB), Ok(0));
    let refusals = vfio.refusals();
    assert_eq!(
        refusals.get(RefusedOp::Unbind, RefusalReason::NotAllocated),
        1
    );
    assert_eq!(
        refusals.get(RefusedOp::Invalidate, RefusalReason::NotAllocated),
        1
    );

    // B frees everything it owns: only its own two go.
    assert_eq!(free(&b, 0, u32::MAX), Ok(0));
    let space = vfio.pasid_space();
    for &p in &theirs {
        assert_eq!(space.find(p), None);
    }
    let a_set = a.process_context().unwrap().set_id();
    for &p in &mine {
        assert!(matches!(space.find(p), Some(PasidState::Allocated { set, .. }) if set == a_set));
    }
    // A's bind is untouched: its device still reaches the guest page.
    dev_a.dma_write(Some(mine[0]), VA, b"still").unwrap();
    assert_eq!(a.bound_pasids(), vec![mine[0]]);
    assert_eq!(a.process_context().unwrap().pasids(), mine);

    // A frees one; B allocates and gets it; A's later references are refused.
    assert_eq!(a.free_pasids(mine[2], mine[2]).unwrap(), 1);
    assert_eq!(b.alloc_pasid(mine[2], mine[2]).unwrap(), mine[2]);
    assert_eq!(bind(&a, u64::from(mine[2]), root), Err(Errno::EACCES));
    let before = vfio.refusals().total(RefusedOp::Unbind);
    assert_eq!(unbind(&a, u64::from(mine[2])), Ok(0), "answered 0, refused");
    assert_eq!(vfio.refusals().total(RefusedOp::Unbind), before + 1);
}

#[test]
fn a_reused_pid_is_a_different_process() {
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let old = ProcessToken::new(4242, 100);
    let new = ProcessToken::new(4242, 200);
    let c_old = container(&vfio, old, 3, IommuType::Nesting);
    let c_new = container(&vfio, new, 4, IommuType::Nesting);
    let p = c_old.alloc_pasid(1, 10).unwrap();
    assert_eq!(
        c_new
            .bind(&BindRequest::new(u64::from(p), 0x1000, AddrWidth::Bits48))
            .unwrap_err()
            .errno(),
        Errno::EACCES
    );
    assert_eq!(c_new.free_pasids(0, u32::MAX).unwrap(), 0);
    assert_ne!(
        c_old.process_context().unwrap().set_id(),
        c_new.process_context().unwrap().set_id()
    );
}

#[test]
fn free_all_costs_what_the_caller_owns() {
    // A process owning a handful of PASIDs frees [0, u32::MAX] while another owns many: the
    // call visits only the caller's PASIDs (checked by count; no timing assertion).
    let vfio = host();
    function(&vfio, 3);
    function(&vfio, 4);
    let big = container(&vfio, process(1), 3, IommuType::Nesting);
    let small = container(&vfio, process(2), 4, IommuType::Nesting);
    for _ in 0..900 {
        big.alloc_pasid(1, u32::MAX).unwrap();
    }
    let few: Vec<Pasid> = (0..3)
        .map(|i| small.alloc_pasid(100_000 * (i + 1), u32::MAX).unwrap())
        .collect();
    assert_eq!(few, [100_000, 200_000, 300_000]);
    assert_eq!(small.free_pasids(0, u32::MAX).unwrap(), 3);
    assert_eq!(big.process_context().unwrap().owned(), 900);
}
