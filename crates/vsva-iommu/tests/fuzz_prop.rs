//! The fuzz target's property on stable Rust: arbitrary memory images and request sequences
//! never panic. Inputs are random bytes plus a few structured seeds that reach deep paths
//! (attached devices, PASID entries of every type pointing into the image).

use proptest::prelude::*;
use vsva_iommu::fuzzing::{input, run, IMAGE_BYTES};

/// An image whose first pages hold plausible tables: a root entry for bus 0 pointing at a
/// context table, and page-table-looking entries everywhere else.
fn structured_image() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0u64..16, 0u64..0x40).prop_map(|(page, flags)| (page << 12) | flags | 1),
            1 => any::<u64>(),
            2 => Just(0u64),
        ],
        IMAGE_BYTES / 64,
    )
    .prop_map(|words| words.into_iter().flat_map(u64::to_le_bytes).collect())
}

/// Operations: attach first, then a mix weighted towards translations.
fn ops() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..600).prop_map(|mut v| {
        let mut head = vec![0u8, 0x0f, 0x40, 0x0f, 2, 1, 0];
        head.extend_from_slice(&[1 | 1 << 6 | 3 << 4]);
        head.append(&mut v);
        head
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..8192)) {
        run(&data);
    }

    #[test]
    fn structured_inputs_never_panic(image in structured_image(), ops in ops()) {
        run(&input(&image, &ops));
    }
}
