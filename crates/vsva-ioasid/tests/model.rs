//! Model-based property test: random sequences of set operations, checked step by step
//! against a deliberately plain reference model built on `BTreeMap`s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use vsva_ioasid::{
    Error, IoasidSet, IoasidSpace, PasidState, SetId, TeardownSubscriber, TeardownTicket,
};

/// Keeps every ticket until the test completes it, so PASIDs sit in the freeing state.
#[derive(Default)]
struct Deferred {
    tickets: Mutex<Vec<TeardownTicket>>,
}

impl TeardownSubscriber for Deferred {
    fn teardown(&self, _pasid: u32, ticket: TeardownTicket) {
        self.tickets.lock().unwrap().push(ticket);
    }
    fn name(&self) -> &str {
        "deferred"
    }
}

#[derive(Debug, Clone)]
enum Op {
    CreateSet { quota: u32 },
    Alloc { set: usize, min: u32, max: u32 },
    Free { set: usize, pasid: u32 },
    FreeRange { set: usize, min: u32, max: u32 },
    Release { set: usize },
    SetQuota { set: usize, quota: u32 },
    Find { pasid: u32 },
    CompleteTeardowns { n: usize },
}

/// A PASID or range bound for a space of `bits`: anywhere in (and just past) the space, or
/// one of its edges — 0, 1, the last PASID, the first one past the space, the edges of the
/// 56-PASID words the allocator works in (and of 64-bit masks), and `u32::MAX`.
fn bound(bits: u8) -> impl Strategy<Value = u32> {
    let len = 1u32 << bits;
    let top = len + 2;
    let edges = vec![
        0,
        1,
        len - 1,
        len,
        55,
        56,
        57,
        63,
        64,
        111,
        112,
        113,
        u32::MAX,
    ];
    prop_oneof![
        5 => 0..=top,
        3 => prop::sample::select(edges),
    ]
}

fn op(bits: u8) -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u32..6).prop_map(|quota| Op::CreateSet { quota }),
        8 => (any::<usize>(), bound(bits), bound(bits))
            .prop_map(|(set, min, max)| Op::Alloc { set, min, max }),
        2 => (any::<usize>(), 1u32..=3).prop_map(|(set, _)| Op::Alloc { set, min: 0, max: u32::MAX }),
        4 => (any::<usize>(), bound(bits)).prop_map(|(set, pasid)| Op::Free { set, pasid }),
        2 => (any::<usize>(), bound(bits), bound(bits))
            .prop_map(|(set, min, max)| Op::FreeRange { set, min, max }),
        1 => any::<usize>().prop_map(|set| Op::Release { set }),
        1 => (any::<usize>(), 0u32..8).prop_map(|(set, quota)| Op::SetQuota { set, quota }),
        2 => bound(bits).prop_map(|pasid| Op::Find { pasid }),
        2 => (0usize..4).prop_map(|n| Op::CompleteTeardowns { n }),
    ]
}

#[derive(Default)]
struct ModelSet {
    quota: u32,
    owned: BTreeSet<u32>,
}

/// The reference: what the allocator must do, written as plainly as possible.
struct Model {
    max: u32,
    subscribed: bool,
    next_id: u32,
    sets: BTreeMap<u32, ModelSet>,
    owner: BTreeMap<u32, u32>,
    /// Freed PASIDs waiting for teardown, oldest first.
    freeing: Vec<u32>,
}

impl Model {
    fn new(bits: u8, subscribed: bool) -> Self {
        Model {
            max: (1 << bits) - 1,
            subscribed,
            next_id: 1,
            sets: BTreeMap::new(),
            owner: BTreeMap::new(),
            freeing: Vec::new(),
        }
    }

    fn create(&mut self, quota: u32) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.sets.insert(
            id,
            ModelSet {
                quota,
                ..Default::default()
            },
        );
        id
    }

    fn alloc(&mut self, id: u32, min: u32, max: u32) -> Result<u32, Error> {
        if min > max {
            return Err(Error::InvalidRange { min, max });
        }
        let set = &self.sets[&id];
        if set.owned.len() as u32 >= set.quota {
            return Err(Error::QuotaExceeded {
                set: SetId(id),
                quota: set.quota,
            });
        }
        let (lo, hi) = (min.max(1), max.min(self.max));
        let pasid = (lo..=hi)
            .find(|p| !self.owner.contains_key(p) && !self.freeing.contains(p))
            .ok_or(Error::NoSpace { min: lo, max: hi })?;
        self.owner.insert(pasid, id);
        self.sets.get_mut(&id).unwrap().owned.insert(pasid);
        Ok(pasid)
    }

    fn retire(&mut self, pasid: u32) {
        self.owner.remove(&pasid);
        if self.subscribed {
            self.freeing.push(pasid);
        }
    }

    fn free(&mut self, id: u32, pasid: u32) -> Result<(), Error> {
        if self.sets[&id].owned.contains(&pasid) {
            self.sets.get_mut(&id).unwrap().owned.remove(&pasid);
            self.retire(pasid);
            return Ok(());
        }
        Err(if pasid == 0 || pasid > self.max {
            Error::PasidOutOfRange {
                pasid,
                max: self.max,
            }
        } else if let Some(&owner) = self.owner.get(&pasid) {
            Error::NotOwner {
                pasid,
                owner: SetId(owner),
                caller: SetId(id),
            }
        } else if self.freeing.contains(&pasid) {
            Error::Freeing { pasid, pending: 1 }
        } else {
            Error::NotAllocated { pasid }
        })
    }

    fn free_range(&mut self, id: u32, min: u32, max: u32) -> Result<u32, Error> {
        if min > max {
            return Err(Error::InvalidRange { min, max });
        }
        let doomed: Vec<u32> = self.sets[&id].owned.range(min..=max).copied().collect();
        for &p in &doomed {
            self.sets.get_mut(&id).unwrap().owned.remove(&p);
            self.retire(p);
        }
        Ok(doomed.len() as u32)
    }

    fn release(&mut self, id: u32) -> u32 {
        let set = self.sets.remove(&id).unwrap();
        for &p in &set.owned {
            self.retire(p);
        }
        set.owned.len() as u32
    }

    fn find(&self, pasid: u32) -> Option<PasidState> {
        if let Some(&owner) = self.owner.get(&pasid) {
            return Some(PasidState::Allocated {
                set: SetId(owner),
                data: u64::from(pasid) * 7,
            });
        }
        self.freeing
            .contains(&pasid)
            .then_some(PasidState::Freeing { pending: 1 })
    }
}

fn run(bits: u8, subscribed: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let space = IoasidSpace::new(bits).unwrap();
    let sub = Arc::new(Deferred::default());
    if subscribed {
        space.subscribe(sub.clone());
    }
    let mut model = Model::new(bits, subscribed);
    // Live sets, in creation order, paired with their model ids.
    let mut sets: Vec<(u32, IoasidSet)> = Vec::new();
    for op in ops {
        match op {
            Op::CreateSet { quota } => {
                let id = model.create(quota);
                let set = space.create_set(u64::from(id) + 100, quota).unwrap();
                prop_assert_eq!(set.id(), SetId(id));
                sets.push((id, set));
            }
            Op::Alloc { set, min, max } if !sets.is_empty() => {
                let i = set % sets.len();
                let (id, real) = &mut sets[i];
                let got = real.alloc_with_data(min, max, 0);
                // Attach data afterwards so `find` can be checked for it.
                if let Ok(p) = got {
                    real.set_data(p, u64::from(p) * 7).unwrap();
                }
                prop_assert_eq!(got, model.alloc(*id, min, max), "alloc [{}, {}]", min, max);
            }
            Op::Free { set, pasid } if !sets.is_empty() => {
                let i = set % sets.len();
                let (id, real) = &mut sets[i];
                prop_assert_eq!(real.free(pasid), model.free(*id, pasid), "free {}", pasid);
            }
            Op::FreeRange { set, min, max } if !sets.is_empty() => {
                let i = set % sets.len();
                let (id, real) = &mut sets[i];
                prop_assert_eq!(real.free_range(min, max), model.free_range(*id, min, max));
            }
            Op::Release { set } if !sets.is_empty() => {
                let (id, real) = sets.remove(set % sets.len());
                prop_assert_eq!(real.release(), model.release(id));
                prop_assert!(space.set_stats(SetId(id)).is_none());
            }
            Op::SetQuota { set, quota } if !sets.is_empty() => {
                let (id, _) = &sets[set % sets.len()];
                space.set_quota(SetId(*id), quota).unwrap();
                model.sets.get_mut(id).unwrap().quota = quota;
            }
            Op::Find { pasid } => {
                prop_assert_eq!(space.find(pasid), model.find(pasid), "find {}", pasid);
            }
            Op::CompleteTeardowns { n } => {
                let done: Vec<TeardownTicket> = {
                    let mut t = sub.tickets.lock().unwrap();
                    let n = n.min(t.len());
                    t.drain(..n).collect()
                };
                for ticket in done {
                    let pasid = ticket.pasid();
                    let pos = model.freeing.iter().position(|&p| p == pasid);
                    prop_assert!(pos.is_some(), "ticket for {} not freeing in model", pasid);
                    model.freeing.remove(pos.unwrap());
                    ticket.complete();
                }
            }
            _ => {}
        }
        // Counters agree with the model after every step.
        for (id, real) in &sets {
            let m = &model.sets[id];
            prop_assert_eq!(real.owned(), m.owned.len() as u32);
            prop_assert_eq!(real.quota(), m.quota);
            prop_assert_eq!(real.pasids(), m.owned.iter().copied().collect::<Vec<_>>());
        }
        let stats = space.stats();
        prop_assert_eq!(stats.allocated, model.owner.len() as u64);
        prop_assert_eq!(stats.freeing, model.freeing.len() as u64);
        prop_assert_eq!(stats.sets, sets.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_model(
        // The width and the operations are drawn together, so the generated ranges reach
        // the edges of the space the operations run in.
        (bits, ops) in (1u8..=8).prop_flat_map(|b| (Just(b), prop::collection::vec(op(b), 1..120))),
        subscribed in any::<bool>(),
    ) {
        run(bits, subscribed, ops)?;
    }

    #[test]
    fn matches_reference_model_in_a_wide_space(
        ops in prop::collection::vec(op(12), 1..200),
    ) {
        run(12, true, ops)?;
    }
}
