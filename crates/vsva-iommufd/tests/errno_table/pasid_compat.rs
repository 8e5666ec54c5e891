//! The rows of `iommufd_hwpt_pasid_compat` (device.c, Linux 6.15 on), called by
//! `iommufd_hwpt_attach_device` and `iommufd_hwpt_replace_device`: a device's requests
//! without PASID and its PASIDs go together only on HWPTs allocated with
//! `IOMMU_HWPT_ALLOC_PASID` — an HWPT without it takes the requests without PASID only while
//! no PASID of the device is attached, and no PASID is attached while the requests without
//! PASID are on such an HWPT. An IOAS's automatic HWPT never has it
//! (`iommufd_device_auto_get_domain` allocates it without flags). Every refusal is `EINVAL`
//! and leaves the objects, the attachments and the IOAS's reserved ranges as they were.

use super::*;

const COMPAT: &str = "iommufd_hwpt_pasid_compat (device.c)";

/// What a refusal must leave as it was: the objects (ids, kinds, users, each device's
/// attachments) and the IOVA ranges of `ioas`, where no device is attached without PASID
/// (so the interrupt window a refused attach without PASID reserves first must be given
/// back).
fn state(f: &Fx, ioas: u32) -> impl PartialEq + std::fmt::Debug {
    let (ranges, _) = f.ctx.ioas_iova_ranges(ioas).unwrap();
    let ranges: Vec<(u64, u64)> = ranges.iter().map(|r| (r.start, r.last)).collect();
    (f.ctx.objects(), ranges)
}

/// Device 3: requests without PASID on a PASID-capable paging HWPT, a PASID on the nested
/// HWPT. Device 4: only that PASID, on the nested HWPT. Device 5: requests without PASID
/// on the nest parent, which is not PASID-capable. A second IOAS has a paging HWPT without
/// ALLOC_PASID and nothing attached.
#[test]
fn the_attaches_pasid_compat_refuses() {
    let f = fixture();
    function(&f._vfio, 4);
    function(&f._vfio, 5);
    bind(&f.ctx, 4);
    bind(&f.ctx, 5);
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    let other = f.ctx.alloc_pasid(1, 100).unwrap();
    let capable = hwpt_paging(&f.ctx, f.dev, f.ioas, IOMMU_HWPT_ALLOC_PASID).unwrap();
    let nested_no_pasid = hwpt_nested(&f.ctx, f.dev, f.parent, MB, 0, 0).unwrap();
    let ioas2 = ioas_alloc(&f.ctx);
    let plain = hwpt_paging(&f.ctx, f.dev, ioas2, 0).unwrap();
    attach(&f.ctx, 3, capable, None).unwrap();
    attach(&f.ctx, 3, f.nested, Some(pasid)).unwrap();
    attach(&f.ctx, 4, f.nested, Some(pasid)).unwrap();
    attach(&f.ctx, 5, f.parent, None).unwrap();
    let cases: Vec<(&str, u8, u32, Option<u32>)> = vec![
        (
            "attach without PASID, a PASID attached: a paging HWPT without ALLOC_PASID",
            4,
            plain,
            None,
        ),
        (
            "attach without PASID, a PASID attached: an IOAS (its automatic HWPT)",
            4,
            ioas2,
            None,
        ),
        (
            "attach without PASID, a PASID attached: a nest parent without ALLOC_PASID",
            4,
            f.parent,
            None,
        ),
        (
            "attach without PASID, a PASID attached: a nested HWPT without ALLOC_PASID",
            4,
            nested_no_pasid,
            None,
        ),
        (
            "replace without PASID, a PASID attached: a paging HWPT without ALLOC_PASID",
            3,
            plain,
            None,
        ),
        (
            "replace without PASID, a PASID attached: an IOAS (its automatic HWPT)",
            3,
            ioas2,
            None,
        ),
        (
            "replace without PASID, a PASID attached: a nested HWPT without ALLOC_PASID",
            3,
            nested_no_pasid,
            None,
        ),
        (
            "attach of a PASID to an IOAS (its automatic HWPT)",
            3,
            f.ioas,
            Some(other),
        ),
        (
            "attach of a PASID, no PASID on a paging HWPT without ALLOC_PASID",
            5,
            f.nested,
            Some(pasid),
        ),
        (
            "attach of a PASID, no PASID on it: to that HWPT without ALLOC_PASID",
            5,
            f.parent,
            Some(pasid),
        ),
        (
            "attach of a PASID, no PASID on it: to a PASID-capable paging HWPT",
            5,
            capable,
            Some(other),
        ),
    ];
    let before = state(&f, ioas2);
    assert_eq!(
        f.ctx.ioas_iova_ranges(ioas2).unwrap().0.len(),
        1,
        "no window reserved in the second IOAS"
    );
    for (what, dev, pt_id, p) in cases {
        let got = attach(&f.ctx, dev, pt_id, p);
        assert_eq!(got, Err(Errno::EINVAL), "{what} (follows {COMPAT})");
        assert_eq!(state(&f, ioas2), before, "{what} changed the context");
    }
    // What the rule allows: the same HWPT again, and PASID-capable HWPTs on both sides.
    assert_eq!(attach(&f.ctx, 3, capable, None), Ok(capable));
    assert_eq!(attach(&f.ctx, 3, f.nested, None), Ok(f.nested));
    assert_eq!(attach(&f.ctx, 3, capable, Some(other)), Ok(capable));
    // With no PASID left, an HWPT without ALLOC_PASID takes the requests without PASID.
    f.ctx.detach(f.dev, Some(pasid)).unwrap();
    f.ctx.detach(f.dev, Some(other)).unwrap();
    assert_eq!(attach(&f.ctx, 3, plain, None), Ok(plain));
}

/// The refusal names the field the call gave and its value, and the other side of the
/// conflict: the PASID attached, or the HWPT the requests without PASID are on.
#[test]
fn the_refusal_names_field_value_and_conflict() {
    let f = fixture();
    let pasid = f.ctx.alloc_pasid(1, 100).unwrap();
    attach(&f.ctx, 3, f.nested, Some(pasid)).unwrap();
    let e = f.ctx.attach(f.dev, f.parent, None).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    let m = e.to_string();
    assert!(
        m.starts_with(&format!("pt_id {}: HWPT {}", f.parent, f.parent)),
        "{m}"
    );
    assert!(m.contains(&format!("PASID {pasid} is attached")), "{m}");
    f.ctx.detach(f.dev, Some(pasid)).unwrap();
    attach(&f.ctx, 3, f.parent, None).unwrap();
    let e = f.ctx.attach(f.dev, f.nested, Some(pasid)).unwrap_err();
    assert_eq!(e.errno(), Errno::EINVAL);
    let m = e.to_string();
    assert!(m.starts_with(&format!("pasid {pasid}: ")), "{m}");
    assert!(m.contains(&format!("attached to HWPT {}", f.parent)), "{m}");
}
