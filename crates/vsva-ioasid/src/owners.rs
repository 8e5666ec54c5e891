//! Who owns each PASID, and its private data: a sparse two-level table read without locks.
//!
//! The table is a radix tree of fixed shape: a top array of "chunks" (32 768 PASIDs each),
//! each chunk an array of 512 lazily created leaves of 64 slots. A slot is one `AtomicU32`:
//!
//! | value | meaning |
//! |---|---|
//! | `0` | free (or claimed in the bitmap and not yet recorded) |
//! | `1 ..= 2^31 - 1` | allocated to the set with that id |
//! | `FREEING \| n` | freed; `n` teardown subscribers have not finished |
//!
//! Private data lives in a per-leaf block created only when some PASID of the leaf is given
//! non-zero data, so callers that attach nothing pay nothing for it.
//!
//! Nodes are created with a compare-and-swap (`OnceLock`) the first time a PASID in their span
//! is recorded and are kept for the life of the space: a slot's address never changes, which
//! is what lets `find` read it with two plain loads while others allocate and free. The cost
//! is memory proportional to the highest fill ever reached, not the current one (see the
//! crate's performance notes).

use std::sync::OnceLock;

use crate::ids::Pasid;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

const LEAF_SHIFT: u32 = 6;
const LEAF_SLOTS: usize = 1 << LEAF_SHIFT;
const CHUNK_SHIFT: u32 = 9;
const CHUNK_LEAVES: usize = 1 << CHUNK_SHIFT;

/// Slot flag: the PASID is being torn down; the low bits count unfinished subscribers.
pub(crate) const FREEING: u32 = 1 << 31;
/// Largest set id a slot can hold.
pub(crate) const MAX_SET_ID: u32 = FREEING - 1;

struct Leaf {
    owners: [AtomicU32; LEAF_SLOTS],
    data: OnceLock<Box<[AtomicU64; LEAF_SLOTS]>>,
}

struct Chunk {
    leaves: [OnceLock<Box<Leaf>>; CHUNK_LEAVES],
}

/// The owner table for `[0, len)`.
pub(crate) struct OwnerTable {
    chunks: Box<[OnceLock<Box<Chunk>>]>,
}

/// What a slot says about a PASID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Not allocated to anyone.
    Free,
    /// Allocated to this set id.
    Owned(u32),
    /// Being torn down; this many subscribers have not finished.
    Freeing(u32),
}

impl SlotState {
    fn decode(raw: u32) -> SlotState {
        match raw {
            0 => SlotState::Free,
            r if r & FREEING != 0 => SlotState::Freeing(r & !FREEING),
            r => SlotState::Owned(r),
        }
    }
}

impl OwnerTable {
    /// Creates an empty table able to hold `len` PASIDs.
    pub(crate) fn new(len: u64) -> Self {
        let nchunks = len.div_ceil(1 << (LEAF_SHIFT + CHUNK_SHIFT)) as usize;
        OwnerTable {
            chunks: (0..nchunks).map(|_| OnceLock::new()).collect(),
        }
    }

    #[inline]
    fn leaf(&self, pasid: Pasid) -> Option<&Leaf> {
        let chunk = self
            .chunks
            .get((pasid >> (LEAF_SHIFT + CHUNK_SHIFT)) as usize)?;
        chunk.get()?.leaves[(pasid >> LEAF_SHIFT) as usize % CHUNK_LEAVES]
            .get()
            .map(|b| &**b)
    }

    #[inline]
    fn leaf_or_create(&self, pasid: Pasid) -> &Leaf {
        let chunk = self.chunks[(pasid >> (LEAF_SHIFT + CHUNK_SHIFT)) as usize].get_or_init(|| {
            Box::new(Chunk {
                leaves: std::array::from_fn(|_| OnceLock::new()),
            })
        });
        chunk.leaves[(pasid >> LEAF_SHIFT) as usize % CHUNK_LEAVES].get_or_init(|| {
            Box::new(Leaf {
                owners: std::array::from_fn(|_| AtomicU32::new(0)),
                data: OnceLock::new(),
            })
        })
    }

    #[inline]
    fn slot_index(pasid: Pasid) -> usize {
        pasid as usize % LEAF_SLOTS
    }

    /// Records `set` as the owner of `pasid`, with `data`. The caller holds the PASID's bit.
    #[inline]
    pub(crate) fn record(&self, pasid: Pasid, set: u32, data: u64) {
        debug_assert!(set != 0 && set <= MAX_SET_ID);
        let leaf = self.leaf_or_create(pasid);
        let i = Self::slot_index(pasid);
        if data != 0 || leaf.data.get().is_some() {
            let block = leaf
                .data
                .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
            block[i].store(data, Ordering::Relaxed);
        }
        // Release: a reader that sees the owner also sees the data.
        leaf.owners[i].store(set, Ordering::Release);
    }

    /// Replaces the private data of an owned PASID.
    pub(crate) fn set_data(&self, pasid: Pasid, data: u64) {
        let leaf = self.leaf_or_create(pasid);
        let block = leaf
            .data
            .get_or_init(|| Box::new(std::array::from_fn(|_| AtomicU64::new(0))));
        block[Self::slot_index(pasid)].store(data, Ordering::Release);
    }

    /// The state and data of `pasid`, read without locks.
    pub(crate) fn get(&self, pasid: Pasid) -> (SlotState, u64) {
        let Some(leaf) = self.leaf(pasid) else {
            return (SlotState::Free, 0);
        };
        let i = Self::slot_index(pasid);
        loop {
            let before = leaf.owners[i].load(Ordering::Acquire);
            let data = match (before, leaf.data.get()) {
                (0, _) | (_, None) => 0,
                (_, Some(block)) => block[i].load(Ordering::Acquire),
            };
            // The data belongs to the owner we report only if the slot did not change while
            // we read it; set ids are never reused, so an unchanged owner is the same owner.
            if leaf.owners[i].load(Ordering::Acquire) == before {
                return (SlotState::decode(before), data);
            }
        }
    }

    /// Marks an owned PASID as being torn down by `pending` subscribers.
    pub(crate) fn begin_teardown(&self, pasid: Pasid, pending: u32) {
        debug_assert!(pending > 0 && pending < FREEING);
        let leaf = self.leaf(pasid).expect("owned PASID has a leaf");
        leaf.owners[Self::slot_index(pasid)].store(FREEING | pending, Ordering::Release);
    }

    /// One subscriber finished tearing `pasid` down; returns `true` if it was the last.
    pub(crate) fn finish_one(&self, pasid: Pasid) -> bool {
        let leaf = self.leaf(pasid).expect("freeing PASID has a leaf");
        let prev = leaf.owners[Self::slot_index(pasid)].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(
            prev & FREEING != 0 && prev & !FREEING >= 1,
            "slot {prev:#x}"
        );
        prev == FREEING | 1
    }

    /// Marks `pasid` free. The caller still holds its bit and releases it afterwards.
    #[inline]
    pub(crate) fn clear(&self, pasid: Pasid) {
        if let Some(leaf) = self.leaf(pasid) {
            leaf.owners[Self::slot_index(pasid)].store(0, Ordering::Release);
        }
    }

    /// Bytes of memory the table occupies now.
    pub(crate) fn memory_bytes(&self) -> usize {
        let mut bytes = std::mem::size_of::<Self>()
            + self.chunks.len() * std::mem::size_of::<OnceLock<Box<Chunk>>>();
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            bytes += std::mem::size_of::<Chunk>();
            for leaf in chunk.leaves.iter().filter_map(OnceLock::get) {
                bytes += std::mem::size_of::<Leaf>();
                if leaf.data.get().is_some() {
                    bytes += std::mem::size_of::<[AtomicU64; LEAF_SLOTS]>();
                }
            }
        }
        bytes
    }
}
