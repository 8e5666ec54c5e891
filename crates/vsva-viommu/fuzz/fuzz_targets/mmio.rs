//! Arbitrary guest register writes, invalidation-queue contents, PASID entries, virtual
//! commands, faults and page requests must never panic the device model, nor touch another
//! process's PASIDs or binds.
//! Run: `cd crates/vsva-viommu/fuzz && cargo +nightly fuzz run mmio`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vsva_viommu::fuzzing::run(data);
});
