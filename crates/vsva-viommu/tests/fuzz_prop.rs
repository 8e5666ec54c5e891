//! The fuzz target's property under proptest on stable Rust: arbitrary register writes,
//! queue contents, PASID entries, virtual commands, faults and page requests never panic
//! the device model and never touch another process's PASIDs or binds.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_guest_programming_is_contained(data in proptest::collection::vec(any::<u8>(), 0..768)) {
        vsva_viommu::fuzzing::run(&data);
    }
}

/// Inputs aimed at the other process: freeing, binding and invalidating its PASIDs.
#[test]
fn aimed_at_the_other_process() {
    let mut data = Vec::new();
    for sel in [0u8, 4, 8] {
        data.extend([4, sel | 0x10]); // VCMD free of the other's PASID
        data.extend([0u8; 8]);
        data.extend([3, sel]); // a first-level entry for it + PASID-cache flush
        data.extend([0u8; 24]);
        data.extend([2, 6 << 1 | sel << 2]); // P-IOTLB for it
        data.extend([0u8; 16]);
    }
    assert_eq!(vsva_viommu::fuzzing::run(&data), 9);
}
