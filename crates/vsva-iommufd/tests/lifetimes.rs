//! Object lifetimes against a simple model: create, attach, detach and destroy in random
//! order; after every step the context's objects (ids, kinds, users, parents) are the
//! model's (an attach of an attached device or PASID replaces its attachment), `EBUSY`
//! comes exactly when the model says an object is in use, a destroyed id is
//! unknown (`ENOENT`), and closing the context gives back every table page and domain id.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use vsva_iommufd::{IommufdCtx, ObjectKind};
use vsva_uapi::iommufd::*;
use vsva_uapi::Errno;

#[derive(Debug, Clone)]
enum Op {
    Ioas,
    Fault,
    Paging { pt: u32, nest_parent: bool },
    Nested { pt: u32, fault: Option<u32> },
    Attach { dev: u8, pt: u32, pasid: bool },
    Detach { dev: u8, pasid: bool },
    Destroy { id: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 1u32..10;
    // Attach has three times the weight of the others: a second attach of the same device
    // or PASID (a replace) comes up in most runs.
    prop_oneof![
        1 => Just(Op::Ioas),
        1 => Just(Op::Fault),
        1 => (id.clone(), any::<bool>())
            .prop_map(|(pt, nest_parent)| Op::Paging { pt, nest_parent }),
        1 => (id.clone(), proptest::option::of(1u32..10))
            .prop_map(|(pt, fault)| Op::Nested { pt, fault }),
        3 => (3u8..5, id.clone(), any::<bool>()).prop_map(|(dev, pt, pasid)| Op::Attach {
            dev,
            pt,
            pasid
        }),
        1 => (3u8..5, any::<bool>()).prop_map(|(dev, pasid)| Op::Detach { dev, pasid }),
        1 => id.prop_map(|id| Op::Destroy { id }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum K {
    Ioas,
    Paging {
        ioas: u32,
        nest_parent: bool,
        auto: bool,
    },
    Nested {
        parent: u32,
        fault: Option<u32>,
    },
    Device,
    Fault,
}

#[derive(Default)]
struct Model {
    objects: BTreeMap<u32, K>,
    /// (device object id, PASID attached?) → HWPT.
    attached: BTreeMap<(u32, bool), u32>,
}

impl Model {
    fn insert(&mut self, k: K) -> u32 {
        let id = (1..).find(|i| !self.objects.contains_key(i)).unwrap();
        self.objects.insert(id, k);
        id
    }

    fn users(&self, id: u32) -> u32 {
        let held = self
            .objects
            .values()
            .filter(|k| match k {
                K::Paging { ioas, .. } => *ioas == id,
                K::Nested { parent, fault } => *parent == id || *fault == Some(id),
                _ => false,
            })
            .count();
        (held + self.attached.values().filter(|&&h| h == id).count()) as u32
    }

    fn parent(&self, id: u32) -> Option<u32> {
        match self.objects[&id] {
            K::Paging { ioas, .. } => Some(ioas),
            K::Nested { parent, .. } => Some(parent),
            _ => None,
        }
    }

    fn kind(k: K) -> ObjectKind {
        match k {
            K::Ioas => ObjectKind::Ioas,
            K::Paging { .. } => ObjectKind::HwptPaging,
            K::Nested { .. } => ObjectKind::HwptNested,
            K::Device => ObjectKind::Device,
            K::Fault => ObjectKind::FaultQueue,
        }
    }

    fn detach(&mut self, key: (u32, bool)) {
        if let Some(h) = self.attached.remove(&key) {
            if matches!(self.objects.get(&h), Some(K::Paging { auto: true, .. }))
                && self.users(h) == 0
            {
                self.objects.remove(&h);
            }
        }
    }

    /// The expected answer of `op`, applied to the model.
    fn apply(&mut self, op: &Op, devs: &BTreeMap<u8, u32>) -> Result<(), Errno> {
        match *op {
            Op::Ioas => {
                self.insert(K::Ioas);
            }
            Op::Fault => {
                self.insert(K::Fault);
            }
            // `iommufd_hwpt_alloc` answers an unknown `pt_id` `EINVAL`.
            Op::Paging { pt, nest_parent } => match self.objects.get(&pt) {
                None => return Err(Errno::EINVAL),
                Some(K::Ioas) => {
                    self.insert(K::Paging {
                        ioas: pt,
                        nest_parent,
                        auto: false,
                    });
                }
                Some(K::Paging { .. }) => return Err(Errno::EOPNOTSUPP),
                Some(_) => return Err(Errno::EINVAL),
            },
            Op::Nested { pt, fault } => match self.objects.get(&pt) {
                None => return Err(Errno::EINVAL),
                Some(K::Ioas) => return Err(Errno::EOPNOTSUPP),
                Some(K::Paging {
                    nest_parent: true,
                    auto: false,
                    ..
                }) => {
                    if let Some(f) = fault {
                        if self.objects.get(&f) != Some(&K::Fault) {
                            return Err(Errno::ENOENT);
                        }
                    }
                    self.insert(K::Nested { parent: pt, fault });
                }
                Some(K::Paging { .. }) => return Err(Errno::EINVAL),
                Some(_) => return Err(Errno::EINVAL),
            },
            Op::Attach { dev, pt, pasid } => {
                let d = devs[&dev];
                let (hwpt, new_auto) = match self.objects.get(&pt) {
                    None => return Err(Errno::ENOENT),
                    Some(K::Ioas) => {
                        let found = self.objects.iter().find_map(|(&id, k)| {
                            matches!(k, K::Paging { ioas, auto: true, .. } if *ioas == pt)
                                .then_some(id)
                        });
                        match found {
                            Some(h) => (h, false),
                            None => ((1..).find(|i| !self.objects.contains_key(i)).unwrap(), true),
                        }
                    }
                    Some(K::Paging { .. } | K::Nested { .. }) => (pt, false),
                    Some(_) => return Err(Errno::EINVAL),
                };
                // `iommufd_hwpt_pasid_compat`: every HWPT this model allocates has
                // IOMMU_HWPT_ALLOC_PASID, an automatic one never does. A PASID needs its HWPT
                // and the one without PASID PASID-capable; an HWPT that is not takes the
                // requests without PASID only while no PASID is attached (the same HWPT
                // again changes nothing, before the check).
                let compat =
                    |h: u32| !new_auto_or_auto(self.objects.get(&h), new_auto && h == hwpt);
                let rid = self.attached.get(&(d, false)).copied();
                let refused = if pasid {
                    !compat(hwpt) || rid.is_some_and(|r| !compat(r))
                } else {
                    !compat(hwpt) && rid != Some(hwpt) && self.attached.contains_key(&(d, true))
                };
                if refused {
                    return Err(Errno::EINVAL);
                }
                if new_auto {
                    self.insert(K::Paging {
                        ioas: pt,
                        nest_parent: false,
                        auto: true,
                    });
                }
                // Attached already: a replace (`iommufd_device_replace`). The same HWPT
                // changes nothing; another takes the reference, and an automatic HWPT left
                // unused goes. (Every stage 1 is valid: no other replace of this model is
                // refused.)
                if let Some(old) = self.attached.insert((d, pasid), hwpt) {
                    if old != hwpt
                        && matches!(self.objects.get(&old), Some(K::Paging { auto: true, .. }))
                        && self.users(old) == 0
                    {
                        self.objects.remove(&old);
                    }
                }
            }
            Op::Detach { dev, pasid } => self.detach((devs[&dev], pasid)),
            Op::Destroy { id } => match self.objects.get(&id) {
                None => return Err(Errno::ENOENT),
                Some(K::Device) => return Err(Errno::EBUSY),
                Some(_) if self.users(id) > 0 => return Err(Errno::EBUSY),
                Some(_) => {
                    self.objects.remove(&id);
                }
            },
        }
        Ok(())
    }
}

/// Whether `k` is an automatic HWPT (or `new` one, not in the model yet).
fn new_auto_or_auto(k: Option<&K>, new: bool) -> bool {
    new || matches!(k, Some(K::Paging { auto: true, .. }))
}

fn run(ctx: &IommufdCtx, op: &Op, pasid: u32) -> Result<(), Errno> {
    let flags = IOMMU_HWPT_ALLOC_PASID;
    match *op {
        Op::Ioas => {
            ioas_alloc(ctx);
            Ok(())
        }
        Op::Fault => {
            fault_alloc(ctx);
            Ok(())
        }
        Op::Paging { pt, nest_parent } => {
            let nest = if nest_parent {
                IOMMU_HWPT_ALLOC_NEST_PARENT
            } else {
                0
            };
            hwpt_paging(ctx, 1, pt, flags | nest).map(|_| ())
        }
        Op::Nested { pt, fault } => {
            let f = fault.map_or(0, |_| IOMMU_HWPT_FAULT_ID_VALID);
            hwpt_nested(ctx, 1, pt, MB, flags | f, fault.unwrap_or(0)).map(|_| ())
        }
        Op::Attach { dev, pt, pasid: p } => attach(ctx, dev, pt, p.then_some(pasid)).map(|_| ()),
        Op::Detach { dev, pasid: p } => {
            let dev_id = ctx.dev_id_of(sid(dev)).unwrap();
            ctx.detach(dev_id, p.then_some(pasid))
                .map_err(|e| e.errno())
        }
        Op::Destroy { id } => {
            let mut buf = arg(&IommuDestroy { size: 8, id }, 0);
            call(ctx, IOMMU_DESTROY, &mut buf)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn objects_follow_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let vfio = host();
        function(&vfio, 3);
        function(&vfio, 4);
        let iommu = vfio.iommu().clone();
        // The buses' context tables stay linked once made: make them before counting.
        {
            let warm = IommufdCtx::open(&vfio, process(8)).unwrap();
            bind(&warm, 3);
        }
        let pages = iommu.table_pool().allocated();
        {
            let ctx = IommufdCtx::open(&vfio, process(1)).unwrap();
            let pasid = ctx.alloc_pasid(1, 100).unwrap();
            let mut model = Model::default();
            let mut devs = BTreeMap::new();
            for dev in [3u8, 4] {
                let id = bind(&ctx, dev);
                prop_assert_eq!(model.insert(K::Device), id);
                devs.insert(dev, id);
            }
            for op in &ops {
                let want = model.apply(op, &devs);
                let got = run(&ctx, op, pasid);
                prop_assert_eq!(got, want, "{:?}", op);
                let seen: Vec<(u32, ObjectKind, u32, Option<u32>)> = ctx
                    .objects()
                    .iter()
                    .map(|o| (o.id, o.kind, o.users, o.parent))
                    .collect();
                let expected: Vec<(u32, ObjectKind, u32, Option<u32>)> = model
                    .objects
                    .iter()
                    .map(|(&id, &k)| (id, Model::kind(k), model.users(id), model.parent(id)))
                    .collect();
                prop_assert_eq!(seen, expected, "after {:?}", op);
            }
        }
        prop_assert_eq!(iommu.table_pool().allocated(), pages, "table pages leaked");
        prop_assert_eq!(vfio.alloc_domain_id().unwrap(), 1, "a domain id leaked");
    }
}
