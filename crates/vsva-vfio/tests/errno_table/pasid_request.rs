//! PASID_REQUEST's rows, and the quota.

use super::*;

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
        // the context, and so do flags 0 or both: v5 07/15 asks for the context only in its
        // ALLOC and FREE cases (vfio_iommu_type1_pasid_alloc / _free), the switch's default
        // answers EINVAL whatever the container. (v6 moved the context check before the
        // switch; this crate follows v5.)
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
            "type1 v2, flags 0 before the context",
            On::Type1,
            PR,
            preq(16, 0, 1, 100),
            Err(EINVAL),
        ),
        row(
            "type1 v2, ALLOC|FREE before the context",
            On::Type1,
            PR,
            preq(16, ALLOC | FREE, 1, 100),
            Err(EINVAL),
        ),
        row(
            "PASID off, flags 0 before the context",
            On::PasidOff,
            PR,
            preq(16, 0, 1, 100),
            Err(EINVAL),
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
