//! Random interleavings of map, unmap, invalidate, bind, unbind, free, stage-2 unmap / map and
//! DMA through a device that keeps its own translation cache, against a reference written
//! from the rules:
//!
//! * the device may use a translation (PASID, page) → guest page only while the PASID is
//!   bound, the guest page is in a stage-2 mapping, and the owner's table maps the page to it
//!   now — or mapped it before and the owner has not invalidated that page (or the whole
//!   PASID) since with IOTLB and device TLB;
//! * unbind, free and a stage-2 unmap invalidate everything they remove;
//! * with nothing stale, a DMA through a mapped page must succeed with the current mapping,
//!   and through an unmapped page must fail.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::ats_device::{setup, DevError, Setup};
use common::{Guest, GUEST_HPA, MB};
use proptest::prelude::*;
use vsva_iommu::paging::{level_index, TableStore, ADDR_MASK};
use vsva_iommu::Access;
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity};
use vsva_vfio::DmaMapping;

const VA: u64 = 0x7f00_0000_0000;
const PAGES: u64 = 2;
/// Data pages the tables may point at: in the second stage-2 mapping [8, 16) MiB.
const DATA: u64 = 8 * MB;
const DATA_PAGES: u64 = 3;
const SLOTS: usize = 2;

#[derive(Debug, Clone, Copy)]
enum Op {
    Map { slot: usize, page: u64, data: u64 },
    Unmap { slot: usize, page: u64 },
    InvalidatePage { slot: usize, page: u64 },
    InvalidatePasid { slot: usize },
    Bind { slot: usize },
    Unbind { slot: usize },
    Free { slot: usize },
    Alloc { slot: usize },
    Stage2Unmap,
    Stage2Map,
    Dma { slot: usize, page: u64, write: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let page = 0..PAGES;
    prop_oneof![
        4 => (slot.clone(), page.clone(), 0..DATA_PAGES).prop_map(|(slot, page, data)| Op::Map { slot, page, data }),
        2 => (slot.clone(), page.clone()).prop_map(|(slot, page)| Op::Unmap { slot, page }),
        3 => (slot.clone(), page.clone()).prop_map(|(slot, page)| Op::InvalidatePage { slot, page }),
        1 => slot.clone().prop_map(|slot| Op::InvalidatePasid { slot }),
        2 => slot.clone().prop_map(|slot| Op::Bind { slot }),
        1 => slot.clone().prop_map(|slot| Op::Unbind { slot }),
        1 => slot.clone().prop_map(|slot| Op::Free { slot }),
        1 => slot.clone().prop_map(|slot| Op::Alloc { slot }),
        1 => Just(Op::Stage2Unmap),
        1 => Just(Op::Stage2Map),
        8 => (slot, page, any::<bool>()).prop_map(|(slot, page, write)| Op::Dma { slot, page, write }),
    ]
}

/// The reference: per slot (a PASID the owner holds, with its own table).
#[derive(Default, Clone)]
struct RefSlot {
    pasid: Option<u32>,
    bound: bool,
    /// The table as the owner wrote it: page → data page.
    table: BTreeMap<u64, u64>,
    /// Data pages the device may still use for a page: mapped before, not invalidated since.
    stale: BTreeMap<u64, BTreeSet<u64>>,
}

impl RefSlot {
    fn forget_stale(&mut self) {
        self.stale.clear();
    }
}

struct World<'a> {
    s: &'a Setup,
    guest: Guest<'a>,
    roots: [u64; SLOTS],
    slots: [RefSlot; SLOTS],
    data_mapped: bool,
    dma_ok: usize,
}

fn gpa(data: u64) -> u64 {
    DATA + data * 0x1000
}

impl World<'_> {
    fn leaf(&self, slot: usize, page: u64) -> u64 {
        let va = VA + page * 0x1000;
        let mut table = self.roots[slot];
        for level in (2..=4).rev() {
            table = self.guest.tables.read(table + level_index(va, level) * 8) & ADDR_MASK;
        }
        table + level_index(va, 1) * 8
    }

    fn invalidate(&self, pasid: u32, page: Option<u64>) {
        let caches = CacheSet::IOTLB | CacheSet::DEV_IOTLB;
        let granularity = match page {
            None => Granularity::Pasid {
                pasid: Some(u64::from(pasid)),
                archid: None,
            },
            Some(page) => Granularity::Addr {
                pasid: Some(u64::from(pasid)),
                archid: None,
                addr: VA + page * 0x1000,
                granule_size: 0x1000,
                nb_granules: 1,
                leaf: true,
            },
        };
        let req = CacheInvalidateRequest::new(caches, granularity).unwrap();
        self.s.container.invalidate(&req).unwrap();
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let c = &self.s.container;
        match op {
            Op::Map { slot, page, data } => {
                let va = VA + page * 0x1000;
                self.guest.remap(self.roots[slot], va, gpa(data));
                let r = &mut self.slots[slot];
                if let Some(old) = r.table.insert(page, data) {
                    r.stale.entry(page).or_default().insert(old);
                }
            }
            Op::Unmap { slot, page } => {
                let leaf = self.leaf(slot, page);
                self.guest.tables.write(leaf, 0);
                let r = &mut self.slots[slot];
                if let Some(old) = r.table.remove(&page) {
                    r.stale.entry(page).or_default().insert(old);
                }
            }
            Op::InvalidatePage { slot, page } => {
                if let Some(pasid) = self.slots[slot].pasid {
                    self.invalidate(pasid, Some(page));
                    self.slots[slot].stale.remove(&page);
                }
            }
            Op::InvalidatePasid { slot } => {
                if let Some(pasid) = self.slots[slot].pasid {
                    self.invalidate(pasid, None);
                    self.slots[slot].forget_stale();
                }
            }
            Op::Bind { slot } => {
                let r = &mut self.slots[slot];
                if let (Some(pasid), false) = (r.pasid, r.bound) {
                    let req =
                        BindRequest::new(u64::from(pasid), self.roots[slot], AddrWidth::Bits48);
                    c.bind(&req).unwrap();
                    r.bound = true;
                }
            }
            Op::Unbind { slot } => {
                let r = &mut self.slots[slot];
                if let Some(pasid) = r.pasid {
                    c.unbind(u64::from(pasid)).unwrap();
                    r.bound = false;
                    r.forget_stale();
                }
            }
            Op::Free { slot } => {
                let r = &mut self.slots[slot];
                if let Some(pasid) = r.pasid.take() {
                    c.free_pasids(pasid, pasid).unwrap();
                    r.bound = false;
                    r.forget_stale();
                }
            }
            Op::Alloc { slot } => {
                if self.slots[slot].pasid.is_none() {
                    self.slots[slot].pasid = Some(c.alloc_pasid(1, 64).unwrap());
                }
            }
            Op::Stage2Unmap => {
                if self.data_mapped {
                    c.unmap_dma(DATA, 8 * MB).unwrap();
                    self.data_mapped = false;
                    for r in &mut self.slots {
                        r.forget_stale();
                    }
                }
            }
            Op::Stage2Map => {
                if !self.data_mapped {
                    map(c, DATA, 8 * MB);
                    self.data_mapped = true;
                }
            }
            Op::Dma { slot, page, write } => self.dma(slot, page, write)?,
        }
        Ok(())
    }

    fn dma(&mut self, slot: usize, page: u64, write: bool) -> Result<(), TestCaseError> {
        let r = &self.slots[slot];
        let Some(pasid) = r.pasid else {
            return Ok(());
        };
        let va = VA + page * 0x1000;
        let access = if write { Access::WRITE } else { Access::READ };
        // The device's translation (its cache, or a translation request), then the access
        // straight into memory.
        let hpa = match self.s.dev.translate(pasid, va, access) {
            Ok(hpa) => {
                let mem = self.s.vfio.iommu().memory();
                if write {
                    mem.write(hpa, &[0xa5; 8]).unwrap();
                } else {
                    mem.read(hpa, &mut [0u8; 8]).unwrap();
                }
                Some(hpa)
            }
            Err(DevError::NoTranslation { .. }) => None,
            Err(e) => return Err(TestCaseError::fail(format!("DMA refused: {e:?}"))),
        };
        let current = r.table.get(&page).copied();
        let stale = r.stale.get(&page).cloned().unwrap_or_default();
        let usable = |data: u64| {
            r.bound && self.data_mapped && (current == Some(data) || stale.contains(&data))
        };
        match hpa {
            Some(hpa) => {
                let data = (hpa - GUEST_HPA - DATA) / 0x1000;
                prop_assert!(
                    hpa >= GUEST_HPA + DATA && usable(data),
                    "slot {slot} page {page}: used data page {data} (hpa {hpa:#x}); current {current:?}, stale {stale:?}, bound {}, stage 2 {}",
                    r.bound,
                    self.data_mapped
                );
                self.dma_ok += 1;
            }
            None => prop_assert!(
                !(r.bound && self.data_mapped && stale.is_empty() && current.is_some()),
                "slot {slot} page {page}: a current mapping {current:?} faulted"
            ),
        }
        Ok(())
    }
}

fn map(c: &vsva_vfio::Container, iova: u64, size: u64) {
    c.map_dma(&DmaMapping {
        vaddr: GUEST_HPA + iova,
        iova,
        size,
        read: true,
        write: true,
    })
    .unwrap();
}

fn run(ops: &[Op]) -> Result<usize, TestCaseError> {
    let s = setup(common::ats_device::HANG);
    // Guest RAM as two stage-2 mappings: tables in [0, 8) MiB, data in [8, 16) MiB.
    s.container.unmap_all_dma().unwrap();
    map(&s.container, 0, 8 * MB);
    map(&s.container, DATA, 8 * MB);
    let iommu = s.vfio.iommu().clone();
    let mut guest = Guest::new(&iommu);
    let mut roots = [0; SLOTS];
    for root in &mut roots {
        *root = guest.new_root();
        // Build the intermediate tables once; every leaf starts not present.
        for page in 0..PAGES {
            guest.map(*root, VA + page * 0x1000, gpa(0));
        }
    }
    let mut world = World {
        s: &s,
        guest,
        roots,
        slots: Default::default(),
        data_mapped: true,
        dma_ok: 0,
    };
    for slot in 0..SLOTS {
        for page in 0..PAGES {
            let leaf = world.leaf(slot, page);
            world.guest.tables.write(leaf, 0);
        }
    }
    world.slots[0].pasid = Some(s.pasid);
    world.apply(Op::Bind { slot: 0 })?;
    for &op in ops {
        world.apply(op)?;
    }
    let ok = world.dma_ok;
    // End the sink's device thread (the sink holds the IOMMU, the device holds the sink).
    iommu.set_devtlb_sink(None);
    Ok(ok)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_device_never_uses_a_translation_removed_and_invalidated(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        run(&ops)?;
    }
}

/// A fixed sequence where every kind of removal is followed by DMA, so the property above is
/// known to exercise the device cache (DMA that succeeds) and not only faults.
#[test]
fn a_fixed_sequence_hits_the_device_cache() {
    use Op::*;
    let map = |data| Map {
        slot: 0,
        page: 0,
        data,
    };
    let dma = |write| Dma {
        slot: 0,
        page: 0,
        write,
    };
    let ops = [
        map(1),
        dma(false),
        // Remapped, not invalidated: the old page may still be used.
        map(2),
        dma(false),
        InvalidatePage { slot: 0, page: 0 },
        dma(false),
        dma(true),
        map(1),
        InvalidatePasid { slot: 0 },
        dma(false),
        Stage2Unmap,
        dma(false),
        Stage2Map,
        dma(false),
        Unbind { slot: 0 },
        dma(false),
        Bind { slot: 0 },
        dma(false),
        Free { slot: 0 },
        Alloc { slot: 0 },
        dma(false),
    ];
    let ok = run(&ops).unwrap();
    assert!(ok >= 4, "{ok} DMAs succeeded");
}
