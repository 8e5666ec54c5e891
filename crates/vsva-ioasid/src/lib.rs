//! `vsva-ioasid`: the host-wide PASID allocator of vsva.
//!
//! One [`IoasidSpace`] per host holds every PASID in `[1, 2^pasid_bits - 1]` (PASID 0 is
//! reserved). Owners allocate through [`IoasidSet`]s — one per process in the VFIO layer —
//! each with a token and a quota that only the admin path ([`IoasidSpace::set_quota`])
//! changes. The semantics are those of Linux's `ioasid` core as the 2020 vSVA series used it,
//! with the review's points done better:
//!
//! * [`IoasidSet::alloc`] returns the lowest free PASID in `[min, max]`;
//! * [`IoasidSet::free`] frees only the set's own PASIDs;
//! * [`IoasidSet::free_range`] costs what the set owns, not the width of the range, so
//!   `[0, u32::MAX]` is as cheap as freeing each owned PASID;
//! * [`IoasidSet::release`] (or dropping the set) frees everything it owns;
//! * [`IoasidSpace::find`] reports owner and private data in O(1), lock-free;
//! * a freed PASID is not reused until every [`TeardownSubscriber`] has finished with it
//!   (synchronously, or later through its [`TeardownTicket`]); free itself never fails;
//! * the allocation decision can be delegated through a [`PasidBackend`].
//!
//! ```
//! use vsva_ioasid::{IoasidSpace, PasidState};
//!
//! let space = IoasidSpace::new(20)?;
//! let mut vm_a = space.create_set(/* token */ 1001, /* quota */ 1000)?;
//! let mut vm_b = space.create_set(1002, 1000)?;
//! assert_eq!(vm_a.alloc(1, u32::MAX)?, 1);
//! assert_eq!(vm_b.alloc(1, u32::MAX)?, 2);
//! assert!(matches!(space.find(2), Some(PasidState::Allocated { set, .. }) if set == vm_b.id()));
//! assert!(vm_a.free(2).is_err()); // not vm_a's
//! assert_eq!(vm_b.free_range(0, u32::MAX)?, 1);
//! # Ok::<(), vsva_ioasid::Error>(())
//! ```
//!
//! Concurrency: allocation and free take no global lock. A word of 56 PASIDs held by one set
//! records that set's tag beside its bits and is claimed and freed lock-free; only making a
//! word mixed (shared by several sets, carrying data or being torn down) takes a per-chunk
//! lock. See the `bitmap`, `owners` and `tags` module notes for the protocol.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod bitmap;
mod error;
mod ids;
mod inner;
mod members;
mod owners;
mod set;
mod space;
mod sync;
mod tags;
mod teardown;

#[cfg(all(test, loom))]
mod loom_tests;

pub use backend::PasidBackend;
pub use error::Error;
pub use ids::{Pasid, SetId, SubscriberId};
pub use set::{IoasidSet, SetStats};
pub use space::{IoasidSpace, PasidState, SpaceStats, MAX_PASID_BITS};
pub use teardown::{TeardownSubscriber, TeardownTicket};
pub use vsva_uapi::Errno;
