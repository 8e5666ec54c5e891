//! The XArray peer: Linux's ioasid core as the 2020 vSVA series built it, in userspace (an
//! XArray-style radix tree of every PASID with its owner, one per set of its own PASIDs, a
//! quota, all under one lock).

use std::sync::Mutex;

use super::{Peer, MAX};

/// Slots per radix-tree node, as in Linux's XArray (`XA_CHUNK_SHIFT` = 6).
const XA_SHIFT: u32 = 6;
const XA_SLOTS: usize = 1 << XA_SHIFT;
/// Height for a 2^20 space: nodes at shifts 18, 12, 6 and 0.
const XA_TOP_SHIFT: u32 = 18;

/// One node of an XArray-style radix tree: 64 slots and a free bitmap (`XA_FREE_MARK`), one
/// bit per slot, set while the slot's subtree has a free index. An absent child is all free;
/// a node that empties is given back, as `xas_delete_node` does.
struct XaNode {
    free: u64,
    count: u32,
    slots: XaSlots,
}

enum XaSlots {
    /// Leaf level: the entry per index (here the owner's set number plus one), 0 = empty.
    Leaf(Box<[u32; XA_SLOTS]>),
    Inner(Box<[Option<Box<XaNode>>; XA_SLOTS]>),
}

impl XaNode {
    fn new(shift: u32) -> Box<XaNode> {
        Box::new(XaNode {
            free: u64::MAX,
            count: 0,
            slots: if shift == 0 {
                XaSlots::Leaf(Box::new([0; XA_SLOTS]))
            } else {
                XaSlots::Inner(Box::new(std::array::from_fn(|_| None)))
            },
        })
    }
}

/// An XArray-style radix tree over `[0, 2^24)` with allocation (`xa_alloc`: the lowest free
/// index in a range, found by searching the free bitmaps down the tree).
struct XArray {
    root: Box<XaNode>,
}

impl XArray {
    fn new() -> Self {
        XArray {
            root: XaNode::new(XA_TOP_SHIFT),
        }
    }

    /// The lowest index in `[min, max]` with no entry (`xas_find_marked(XA_FREE_MARK)`).
    fn find_free(node: &XaNode, shift: u32, base: u32, min: u32, max: u32) -> Option<u32> {
        let first = (min.saturating_sub(base) >> shift) as usize;
        let mut mask = node.free & (u64::MAX << first);
        while mask != 0 {
            let off = mask.trailing_zeros();
            let start = base + (off << shift);
            if start > max {
                return None;
            }
            let child = match &node.slots {
                XaSlots::Leaf(_) => None,
                XaSlots::Inner(children) => children[off as usize].as_deref(),
            };
            match child {
                // An empty leaf slot, or an absent subtree: all of it is free.
                None => return Some(start.max(min)),
                Some(child) => {
                    if let Some(i) = Self::find_free(child, shift - XA_SHIFT, start, min, max) {
                        return Some(i);
                    }
                }
            }
            mask &= mask - 1;
        }
        None
    }

    /// Stores `entry` (non-zero) at the empty index `id`; returns whether `node` is now full.
    fn store_in(node: &mut XaNode, shift: u32, id: u32, entry: u32) -> bool {
        let off = ((id >> shift) as usize) % XA_SLOTS;
        let slot_full = match &mut node.slots {
            XaSlots::Leaf(entries) => {
                debug_assert_eq!(entries[off], 0);
                entries[off] = entry;
                node.count += 1;
                true
            }
            XaSlots::Inner(children) => {
                if children[off].is_none() {
                    node.count += 1;
                }
                let child = children[off].get_or_insert_with(|| XaNode::new(shift - XA_SHIFT));
                Self::store_in(child, shift - XA_SHIFT, id, entry)
            }
        };
        if slot_full {
            node.free &= !(1 << off);
        }
        node.free == 0
    }

    /// Removes the entry at `id` and returns it (0 if none); frees nodes that empty.
    fn erase_in(node: &mut XaNode, shift: u32, id: u32) -> u32 {
        let off = ((id >> shift) as usize) % XA_SLOTS;
        match &mut node.slots {
            XaSlots::Leaf(entries) => {
                let old = std::mem::take(&mut entries[off]);
                if old != 0 {
                    node.count -= 1;
                    node.free |= 1 << off;
                }
                old
            }
            XaSlots::Inner(children) => {
                let Some(child) = children[off].as_deref_mut() else {
                    return 0;
                };
                let old = Self::erase_in(child, shift - XA_SHIFT, id);
                if old != 0 {
                    node.free |= 1 << off;
                    if child.count == 0 {
                        children[off] = None;
                        node.count -= 1;
                    }
                }
                old
            }
        }
    }

    fn load(&self, id: u32) -> u32 {
        let mut node = &*self.root;
        let mut shift = XA_TOP_SHIFT;
        loop {
            let off = ((id >> shift) as usize) % XA_SLOTS;
            match &node.slots {
                XaSlots::Leaf(entries) => return entries[off],
                XaSlots::Inner(children) => match &children[off] {
                    Some(child) => node = child,
                    None => return 0,
                },
            }
            shift -= XA_SHIFT;
        }
    }

    /// `xa_alloc`: stores `entry` at the lowest free index in `[min, max]`.
    fn alloc(&mut self, min: u32, max: u32, entry: u32) -> Option<u32> {
        let id = Self::find_free(&self.root, XA_TOP_SHIFT, 0, min, max)?;
        Self::store_in(&mut self.root, XA_TOP_SHIFT, id, entry);
        Some(id)
    }

    fn store(&mut self, id: u32, entry: u32) {
        Self::store_in(&mut self.root, XA_TOP_SHIFT, id, entry);
    }

    fn erase(&mut self, id: u32) -> u32 {
        Self::erase_in(&mut self.root, XA_TOP_SHIFT, id)
    }

    /// Every index in `[min, max]` that holds an entry, ascending (`xa_for_each_range`).
    fn indices_in(&self, min: u32, max: u32, out: &mut Vec<u32>) {
        fn walk(node: &XaNode, shift: u32, base: u64, min: u64, max: u64, out: &mut Vec<u32>) {
            let span = 1u64 << shift;
            for off in 0..XA_SLOTS as u64 {
                let start = base + off * span;
                if start > max {
                    return;
                }
                if start + span <= min {
                    continue;
                }
                match &node.slots {
                    XaSlots::Leaf(entries) => {
                        if entries[off as usize] != 0 && start >= min {
                            out.push(start as u32);
                        }
                    }
                    XaSlots::Inner(children) => {
                        if let Some(child) = &children[off as usize] {
                            walk(child, shift - XA_SHIFT, start, min, max, out);
                        }
                    }
                }
            }
        }
        walk(
            &self.root,
            XA_TOP_SHIFT,
            0,
            u64::from(min),
            u64::from(max),
            out,
        );
    }
}

/// Linux's ioasid core as the 2020 vSVA series built it, in userspace: one XArray of all
/// PASIDs (entry = owner) whose free bitmaps give the lowest free id, and one XArray per set
/// of the set's own PASIDs (`set->xa`), with a quota, all under one lock (`ioasid_allocator_lock`).
pub(super) struct Xarray(Mutex<XaState>);

struct XaState {
    all: XArray,
    /// Per set: its PASIDs, how many, and its quota.
    sets: Vec<(XArray, u32, u32)>,
}

impl Peer for Xarray {
    type Set = usize;
    const NAME: &'static str = "xarray";
    fn new() -> Self {
        let mut all = XArray::new();
        // Index 0 is reserved, and everything past the 20-bit space is out of reach.
        all.store(0, u32::MAX);
        Xarray(Mutex::new(XaState {
            all,
            sets: Vec::new(),
        }))
    }
    fn set(&self, _token: u64) -> usize {
        let mut s = self.0.lock().unwrap();
        s.sets.push((XArray::new(), 0, u32::MAX));
        s.sets.len() - 1
    }
    #[inline]
    fn alloc(&self, set: &mut usize, min: u32, max: u32) -> u32 {
        let mut s = self.0.lock().unwrap();
        let (_, owned, quota) = &s.sets[*set];
        assert!(owned < quota);
        let pasid = s
            .all
            .alloc(min.max(1), max.min(MAX), *set as u32 + 1)
            .unwrap();
        let (mine, owned, _) = &mut s.sets[*set];
        mine.store(pasid, 1);
        *owned += 1;
        pasid
    }
    #[inline]
    fn free(&self, set: &mut usize, pasid: u32) {
        let mut s = self.0.lock().unwrap();
        assert_eq!(s.all.load(pasid), *set as u32 + 1);
        s.all.erase(pasid);
        let (mine, owned, _) = &mut s.sets[*set];
        mine.erase(pasid);
        *owned -= 1;
    }
    fn free_range(&self, set: &mut usize, min: u32, max: u32) -> u32 {
        let mut s = self.0.lock().unwrap();
        let mut doomed = Vec::new();
        s.sets[*set].0.indices_in(min, max.min(MAX), &mut doomed);
        for &p in &doomed {
            s.all.erase(p);
            s.sets[*set].0.erase(p);
        }
        s.sets[*set].1 -= doomed.len() as u32;
        doomed.len() as u32
    }
}
