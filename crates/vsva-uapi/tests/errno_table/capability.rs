//! The nesting capability.

use super::*;

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
