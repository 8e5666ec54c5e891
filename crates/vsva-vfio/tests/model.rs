//! Property test: random sequences of uAPI calls (through the byte-level entry point) from
//! several processes and containers, against a plain reference model of owners, quotas and
//! binds. After every call the IOMMU's PASID entries, each process's PASIDs and the
//! allocator's view must match the model.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use vsva_iommu::IommuConfig;
use vsva_uapi::vfio::{VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST};
use vsva_uapi::{
    AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Errno, Granularity, NestingOp,
};
use vsva_vfio::{Container, IommuType, ProcessToken, Vfio, VfioConfig};

/// PASIDs 1..=63.
const BITS: u8 = 6;
const MAX: u32 = (1 << BITS) - 1;
const QUOTA: u32 = 6;

/// The containers: (process, type). Process 0 has two nesting containers, process 1 one,
/// process 2 a type1 v2 one and a nesting one. Slot `i` holds group / device `3 + i`.
const SLOTS: [(usize, IommuType); 5] = [
    (0, IommuType::Nesting),
    (0, IommuType::Nesting),
    (1, IommuType::Nesting),
    (2, IommuType::Type1v2),
    (2, IommuType::Nesting),
];
const PROCS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Alloc { slot: usize, min: u32, max: u32 },
    Free { slot: usize, min: u32, max: u32 },
    Bind { slot: usize, pasid: u64 },
    Unbind { slot: usize, pasid: u64 },
    Invalidate { slot: usize, pasid: u64 },
    SetQuota { proc: usize, quota: u32 },
    Reopen { slot: usize },
}

/// Range bounds: mostly where allocation (lowest free first) puts PASIDs, sometimes the whole
/// space and beyond.
fn bound() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0..=14u32, 3 => 0..=MAX + 2, 1 => Just(u32::MAX)]
}

/// Named PASIDs: mostly the low ones that get allocated, sometimes out of range.
fn pasid() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 0..=14u64,
        3 => 0..=u64::from(MAX) + 1,
        1 => Just(1u64 << 32 | 1),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS.len();
    prop_oneof![
        6 => (slot.clone(), bound(), bound()).prop_map(|(slot, min, max)| Op::Alloc { slot, min, max }),
        2 => (slot.clone(), bound(), bound()).prop_map(|(slot, min, max)| Op::Free { slot, min, max }),
        4 => (slot.clone(), pasid()).prop_map(|(slot, pasid)| Op::Bind { slot, pasid }),
        2 => (slot.clone(), pasid()).prop_map(|(slot, pasid)| Op::Unbind { slot, pasid }),
        2 => (slot.clone(), pasid()).prop_map(|(slot, pasid)| Op::Invalidate { slot, pasid }),
        1 => (0..PROCS, 0..QUOTA + 2).prop_map(|(proc, quota)| Op::SetQuota { proc, quota }),
        1 => slot.prop_map(|slot| Op::Reopen { slot }),
    ]
}

/// The reference: who owns what, quotas, binds.
struct Model {
    owner: BTreeMap<u32, usize>,
    quota: [u32; PROCS],
    binds: BTreeSet<(usize, u32)>,
}

impl Model {
    fn owned(&self, proc: usize) -> Vec<u32> {
        self.owner
            .iter()
            .filter(|(_, &p)| p == proc)
            .map(|(&pasid, _)| pasid)
            .collect()
    }

    /// The ownership rules for a PASID a caller names.
    fn check(&self, proc: usize, pasid: u64) -> Result<u32, Errno> {
        // The VT-d driver's range (0 < hpasid < PASID_MAX = 2^20, `intel_svm_bind_gpasid`);
        // a PASID past this space's width but below 2^20 is nobody's.
        if pasid == 0 || pasid >= 1 << 20 {
            return Err(Errno::EINVAL);
        }
        let p = pasid as u32;
        match self.owner.get(&p) {
            Some(&o) if o == proc => Ok(p),
            Some(_) => Err(Errno::EACCES),
            None => Err(Errno::ENOENT),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<u64, Errno> {
        let nesting = |slot: usize| SLOTS[slot].1 == IommuType::Nesting;
        match *op {
            Op::Alloc { slot, min, max } => {
                if min > max {
                    return Err(Errno::EINVAL);
                }
                if !nesting(slot) {
                    return Err(Errno::EOPNOTSUPP);
                }
                let proc = SLOTS[slot].0;
                if self.owned(proc).len() as u32 >= self.quota[proc] {
                    return Err(Errno::ENOSPC);
                }
                let lo = min.max(1);
                let hi = max.min(MAX);
                let free = (lo..=hi).find(|p| !self.owner.contains_key(p));
                let p = free.ok_or(Errno::ENOSPC)?;
                self.owner.insert(p, proc);
                Ok(u64::from(p))
            }
            Op::Free { slot, min, max } => {
                if min > max {
                    return Err(Errno::EINVAL);
                }
                if !nesting(slot) {
                    return Err(Errno::EOPNOTSUPP);
                }
                let proc = SLOTS[slot].0;
                for p in self.owned(proc) {
                    if (min..=max).contains(&p) {
                        self.owner.remove(&p);
                        self.binds.retain(|&(_, b)| b != p);
                    }
                }
                Ok(0)
            }
            Op::Bind { slot, pasid } => {
                if !nesting(slot) {
                    return Err(Errno::EOPNOTSUPP);
                }
                let p = self.check(SLOTS[slot].0, pasid)?;
                if !self.binds.insert((slot, p)) {
                    return Err(Errno::EBUSY);
                }
                Ok(0)
            }
            Op::Unbind { slot, pasid } => {
                if !nesting(slot) {
                    return Err(Errno::EOPNOTSUPP);
                }
                // v5 10/15: an unbind answers 0 whatever the device did; a refused one
                // changes nothing.
                if let Ok(p) = self.check(SLOTS[slot].0, pasid) {
                    self.binds.remove(&(slot, p));
                }
                Ok(0)
            }
            Op::Invalidate { slot, .. } => {
                if !nesting(slot) {
                    return Err(Errno::EOPNOTSUPP);
                }
                // v5 11/15: "always successful".
                Ok(0)
            }
            Op::SetQuota { proc, quota } => {
                // Every process always has a nesting container open, so a live context.
                self.quota[proc] = quota;
                Ok(0)
            }
            Op::Reopen { slot } => {
                self.binds.retain(|&(s, _)| s != slot);
                let proc = SLOTS[slot].0;
                let others = SLOTS
                    .iter()
                    .enumerate()
                    .any(|(s, &(p, ty))| s != slot && p == proc && ty == IommuType::Nesting);
                if nesting(slot) && !others {
                    // The process's last container closed: context released, quota reset.
                    self.owner.retain(|_, &mut p| p != proc);
                    self.quota[proc] = QUOTA;
                }
                Ok(0)
            }
        }
    }
}

struct System {
    vfio: Vfio,
    slots: Vec<Container>,
}

fn token(proc: usize) -> ProcessToken {
    process(proc as u32)
}

fn open(vfio: &Vfio, slot: usize) -> Container {
    let (proc, ty) = SLOTS[slot];
    container(vfio, token(proc), 3 + slot as u32, ty)
}

impl System {
    fn new() -> Self {
        let cfg = IommuConfig {
            pasid_bits: BITS,
            ..small_iommu_config()
        };
        let vfio = host_with(
            cfg,
            VfioConfig {
                pasid_quota: QUOTA,
                ..VfioConfig::default()
            },
        );
        let slots = (0..SLOTS.len())
            .map(|slot| {
                function(&vfio, 3 + slot as u8);
                open(&vfio, slot)
            })
            .collect();
        System { vfio, slots }
    }

    fn run(&mut self, op: &Op) -> Result<u64, Errno> {
        match *op {
            Op::Alloc { slot, min, max } | Op::Free { slot, min, max } => {
                let flags = if matches!(op, Op::Alloc { .. }) {
                    1u32
                } else {
                    2
                };
                let mut arg: Vec<u8> = [16u32, flags, min, max]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                call(&self.slots[slot], VFIO_IOMMU_PASID_REQUEST, &mut arg)
            }
            Op::Bind { slot, pasid } => {
                let req = BindRequest::new(pasid, 0x10_0000, AddrWidth::Bits48);
                let mut arg = NestingOp::Bind(req).to_bytes();
                call(&self.slots[slot], VFIO_IOMMU_NESTING_OP, &mut arg)
            }
            Op::Unbind { slot, pasid } => {
                let req = BindRequest::new(pasid, 0, AddrWidth::Bits48);
                let mut arg = NestingOp::Unbind(req).to_bytes();
                call(&self.slots[slot], VFIO_IOMMU_NESTING_OP, &mut arg)
            }
            Op::Invalidate { slot, pasid } => {
                let req = CacheInvalidateRequest::new(
                    CacheSet::IOTLB | CacheSet::PASID,
                    Granularity::Pasid {
                        pasid: Some(pasid),
                        archid: None,
                    },
                )
                .unwrap();
                let mut arg = NestingOp::Invalidate(req).to_bytes();
                call(&self.slots[slot], VFIO_IOMMU_NESTING_OP, &mut arg)
            }
            Op::SetQuota { proc, quota } => self
                .vfio
                .set_pasid_quota(token(proc), quota)
                .map(|()| 0)
                .map_err(|e| e.errno()),
            Op::Reopen { slot } => {
                // Close first (the group must be free), then open a new container.
                let placeholder = self.vfio.open_container(token(SLOTS[slot].0));
                drop(std::mem::replace(&mut self.slots[slot], placeholder));
                self.slots[slot] = open(&self.vfio, slot);
                Ok(0)
            }
        }
    }

    fn check(&self, model: &Model) -> Result<(), TestCaseError> {
        let iommu = self.vfio.iommu();
        for (slot, c) in self.slots.iter().enumerate() {
            for p in 1..=MAX {
                let present = iommu
                    .read_pasid_entry(sid(3 + slot as u8), p)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .is_some_and(|w| w[0] & 1 == 1);
                prop_assert_eq!(
                    present,
                    model.binds.contains(&(slot, p)),
                    "slot {} pasid {}",
                    slot,
                    p
                );
            }
            let bound: Vec<u32> = model
                .binds
                .iter()
                .filter(|&&(s, _)| s == slot)
                .map(|&(_, p)| p)
                .collect();
            prop_assert_eq!(c.bound_pasids(), bound, "slot {}", slot);
        }
        for proc in 0..PROCS {
            let mm = self.vfio.find_process_context(token(proc)).unwrap();
            prop_assert_eq!(mm.pasids(), model.owned(proc), "process {}", proc);
            prop_assert_eq!(mm.quota(), model.quota[proc], "process {}", proc);
        }
        prop_assert_eq!(
            self.vfio.pasid_space().stats().allocated,
            model.owner.len() as u64
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn uapi_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let mut system = System::new();
        let mut model = Model {
            owner: BTreeMap::new(),
            quota: [QUOTA; PROCS],
            binds: BTreeSet::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            let want = model.apply(op);
            let got = system.run(op);
            prop_assert_eq!(got, want, "step {}: {:?}", i, op);
            system.check(&model)?;
        }
    }
}
