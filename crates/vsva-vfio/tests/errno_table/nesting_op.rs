//! NESTING_OP's header rows, then BIND_PGTBL's and UNBIND_PGTBL's.

use super::*;

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
        // The payload's bytes: the core's copy_from_user(56) of the part before the vendor
        // union, then copy_from_user(min(argsz, 72)), fault; a bind returns it, an unbind or
        // invalidation answers 0.
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
        // iommu_sva_prepare_bind_data copies the 56 bytes before the vendor union before it
        // looks at argsz: a payload cut short faults even when its argsz is also too small.
        row(
            "bind payload 20 bytes with argsz 10",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.argsz = 10)[..20]),
            Err(EFAULT),
        ),
        row(
            "bind payload 55 bytes with argsz 55",
            On::Nest,
            NO,
            op(BIND, &bind_with(|d| d.argsz = 55)[..55]),
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
