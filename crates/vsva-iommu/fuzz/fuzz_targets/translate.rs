//! Arbitrary memory contents (raw root/context/PASID/page tables) and an arbitrary sequence of
//! requests (attach, raw PASID entries, translations, invalidations, DMA, stage-2 changes,
//! direct walks, memory writes, teardown) must never panic the IOMMU.
//! Run: `cd crates/vsva-iommu/fuzz && cargo +nightly fuzz run translate`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vsva_iommu::fuzzing::run(data);
});
