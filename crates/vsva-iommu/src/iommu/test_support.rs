//! Fixtures shared by the IOMMU's unit tests: an IOMMU over 64 MiB of memory, an attached
//! device, first-level and nested PASIDs, and the imports every test module uses.

pub(crate) use super::error::IommuError;
pub(crate) use super::Iommu;
pub(crate) use crate::context::ContextEntry;
pub(crate) use crate::fault::{Access, Fault, FaultReason, SourceId, Stage};
pub(crate) use crate::invalidate::{
    ContextCacheScope, Invalidation, InvalidationError, PageRange, PasidCacheScope,
};
pub(crate) use crate::memory::HostMemory;
pub(crate) use crate::paging::{
    self, fl_map, TableStore, A, ADDR_MASK, D, PS, RW, SIZE_1G, SIZE_2M, SIZE_4K, SL_R, US, XD,
};
pub(crate) use crate::pasid_entry::PasidEntry;
pub(crate) use crate::prq::{PageRequest, PageResponse, PrqError};
pub(crate) use crate::regs::IommuConfig;
pub(crate) use crate::{
    DeviceOptions, DmaError, GuestTableStore, Perms, S2Perms, Stage2Id, Translation,
};

pub(crate) const MB: u64 = 1 << 20;
pub(crate) const POOL: u64 = 48 * MB;
pub(crate) const SID: SourceId = SourceId::new(0, 3, 0);

pub(crate) fn iommu_with(cfg: IommuConfig) -> Iommu {
    let mem = HostMemory::anonymous(&[(0, 64 * MB as usize)]).unwrap();
    Iommu::new(cfg, mem, POOL, 16 * MB).unwrap()
}

pub(crate) fn iommu() -> Iommu {
    iommu_with(IommuConfig::default())
}

pub(crate) fn attach(io: &Iommu, sid: SourceId) {
    io.attach_device(sid, DeviceOptions::default()).unwrap();
}

/// A first-level-only PASID with a fresh table, execute requests enabled (ERE) when the IOMMU
/// supports them; returns the table root.
pub(crate) fn fl_pasid(io: &Iommu, sid: SourceId, pasid: u32, did: u16) -> u64 {
    let root = io.table_pool().alloc(io.memory()).unwrap();
    let e = PasidEntry {
        ere: io.config().ers,
        ..PasidEntry::first_level(did, root)
    };
    io.set_pasid_entry(sid, pasid, &e).unwrap();
    root
}

pub(crate) fn map(io: &Iommu, root: u64, va: u64, pa: u64, size: u64, flags: u64) {
    fl_map(&mut io.host_table_store(), root, 4, va, pa, size, flags).unwrap();
}

pub(crate) fn reason(r: Result<Translation, Fault>) -> FaultReason {
    r.unwrap_err().reason
}

/// The host address of the entry at `level` used to translate `va` (identity tables).
pub(crate) fn entry_addr(io: &Iommu, root: u64, va: u64, level: u8) -> u64 {
    let mut table = root;
    for l in (level + 1..=4).rev() {
        table = io
            .memory()
            .load_u64(table + paging::level_index(va, l) * 8)
            .unwrap()
            & ADDR_MASK;
    }
    table + paging::level_index(va, level) * 8
}

/// Guest memory for nested tests: guest-physical [0, 16 MiB) is host [16 MiB, 32 MiB).
pub(crate) const GUEST_BASE: u64 = 16 * MB;

/// Nested setup: stage 2 maps GPA [0, 16 MiB) → HPA [16, 32 MiB); guest FL root at GPA 0x1000.
pub(crate) fn nested(io: &Iommu, pasid: u32) -> (Stage2Id, GuestTableStore<'_>, u64) {
    nested_with(io, pasid, |_| {})
}

/// [`nested`] with the PASID entry edited by `edit` before it is set.
pub(crate) fn nested_with(
    io: &Iommu,
    pasid: u32,
    edit: impl FnOnce(&mut PasidEntry),
) -> (Stage2Id, GuestTableStore<'_>, u64) {
    attach(io, SID);
    let s2 = io.create_stage2(4).unwrap();
    io.stage2_map(s2, 0, GUEST_BASE, 16 * MB, S2Perms::RW)
        .unwrap();
    let mut g = GuestTableStore::new(io.memory(), GUEST_BASE, 0x1000);
    let gpgd = g.alloc_table().unwrap();
    let (root, levels) = io.stage2_root(s2).unwrap();
    let mut e = PasidEntry::nested(4, gpgd, root, levels);
    edit(&mut e);
    io.set_pasid_entry(SID, pasid, &e).unwrap();
    (s2, g, gpgd)
}

pub(crate) fn remap_fl(io: &Iommu, root: u64, va: u64, pa: u64) {
    let pte = entry_addr(io, root, va, 1);
    io.memory()
        .store_u64(pte, pa | paging::P | RW | US)
        .unwrap();
}

/// The host address a user read of `va` translates to (panics on a fault).
pub(crate) fn read_addr(io: &Iommu, sid: SourceId, pasid: Option<u32>, va: u64) -> u64 {
    io.translate(sid, pasid, va, Access::READ)
        .unwrap()
        .host_addr
}
