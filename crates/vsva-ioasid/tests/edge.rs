//! Edge cases named by the allocator's contract, each driven through the public API.

use std::sync::{Arc, Mutex};

use vsva_ioasid::{
    Errno, Error, IoasidSpace, PasidBackend, PasidState, SetId, TeardownSubscriber, TeardownTicket,
};

/// Holds tickets until told to finish them.
#[derive(Default)]
struct Holding {
    tickets: Mutex<Vec<TeardownTicket>>,
    seen: Mutex<Vec<u32>>,
}

impl Holding {
    fn finish_all(&self) -> usize {
        let tickets: Vec<_> = self.tickets.lock().unwrap().drain(..).collect();
        let n = tickets.len();
        tickets.into_iter().for_each(TeardownTicket::complete);
        n
    }
}

impl TeardownSubscriber for Holding {
    fn teardown(&self, pasid: u32, ticket: TeardownTicket) {
        self.seen.lock().unwrap().push(pasid);
        self.tickets.lock().unwrap().push(ticket);
    }
    fn name(&self) -> &str {
        "holding"
    }
}

/// Finishes at once, recording what it saw.
#[derive(Default)]
struct Immediate {
    seen: Mutex<Vec<u32>>,
}

impl TeardownSubscriber for Immediate {
    fn teardown(&self, pasid: u32, ticket: TeardownTicket) {
        self.seen.lock().unwrap().push(pasid);
        ticket.complete();
    }
    fn name(&self) -> &str {
        "immediate"
    }
}

#[test]
fn width_is_validated() {
    assert_eq!(
        IoasidSpace::new(0).unwrap_err(),
        Error::InvalidPasidBits { bits: 0 }
    );
    assert_eq!(IoasidSpace::new(21).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(IoasidSpace::new(20).unwrap().max_pasid(), (1 << 20) - 1);
}

#[test]
fn pasid_zero_is_never_handed_out() {
    let space = IoasidSpace::new(4).unwrap();
    let mut set = space.create_set(1, 100).unwrap();
    assert_eq!(set.alloc(0, 0), Err(Error::NoSpace { min: 1, max: 0 }));
    let all: Vec<u32> = (0..15).map(|_| set.alloc(0, u32::MAX).unwrap()).collect();
    assert_eq!(all, (1..=15).collect::<Vec<_>>());
    assert!(space.find(0).is_none());
}

#[test]
fn pasid_bits_one_has_exactly_one_pasid() {
    let space = IoasidSpace::new(1).unwrap();
    let mut set = space.create_set(1, 10).unwrap();
    assert_eq!(set.alloc(0, u32::MAX), Ok(1));
    assert_eq!(
        set.alloc(0, u32::MAX),
        Err(Error::NoSpace { min: 1, max: 1 })
    );
    assert_eq!(set.free(1), Ok(()));
    assert_eq!(set.alloc(1, 1), Ok(1));
    assert_eq!(
        set.free(2),
        Err(Error::PasidOutOfRange { pasid: 2, max: 1 })
    );
    assert_eq!(space.stats().capacity, 1);
}

#[test]
fn full_space_reports_enospc_and_recovers() {
    let space = IoasidSpace::new(10).unwrap();
    let mut a = space.create_set(1, 2000).unwrap();
    let mut b = space.create_set(2, 2000).unwrap();
    for i in 0..1023 {
        let set = if i % 3 == 0 { &mut a } else { &mut b };
        set.alloc(1, u32::MAX).unwrap();
    }
    let err = a.alloc(1, u32::MAX).unwrap_err();
    assert_eq!(err, Error::NoSpace { min: 1, max: 1023 });
    assert_eq!(err.errno(), Errno::ENOSPC);
    assert_eq!(space.stats().allocated, 1023);
    b.free(700).unwrap_or_else(|_| a.free(700).unwrap());
    assert_eq!(a.alloc(1, u32::MAX), Ok(700));
}

#[test]
fn quota_exactly_reached_then_freed() {
    let space = IoasidSpace::new(20).unwrap();
    let mut set = space.create_set(7, 3).unwrap();
    for expect in 1..=3 {
        assert_eq!(set.alloc(1, 100), Ok(expect));
    }
    let err = set.alloc(1, 100).unwrap_err();
    assert_eq!(
        err,
        Error::QuotaExceeded {
            set: set.id(),
            quota: 3
        }
    );
    assert_eq!(err.errno(), Errno::ENOSPC);
    // Quota is per set: another set is unaffected.
    let mut other = space.create_set(8, 1).unwrap();
    assert_eq!(other.alloc(1, 100), Ok(4));
    set.free(2).unwrap();
    assert_eq!(set.alloc(1, 100), Ok(2));
    // Only the admin path changes the quota.
    space.set_quota(set.id(), 4).unwrap();
    assert_eq!(set.quota(), 4);
    assert_eq!(set.alloc(1, 100), Ok(5));
    // Lowering it below what is owned frees nothing.
    space.set_quota(set.id(), 1).unwrap();
    assert_eq!(set.owned(), 4);
    assert!(matches!(
        set.alloc(1, 100),
        Err(Error::QuotaExceeded { .. })
    ));
    assert_eq!(
        space.set_quota(SetId(999), 1),
        Err(Error::UnknownSet { set: SetId(999) })
    );
}

#[test]
fn min_above_max_is_einval_everywhere() {
    let space = IoasidSpace::new(8).unwrap();
    let mut set = space.create_set(1, 10).unwrap();
    let err = set.alloc(5, 4).unwrap_err();
    assert_eq!(err, Error::InvalidRange { min: 5, max: 4 });
    assert_eq!(err.errno(), Errno::EINVAL);
    assert_eq!(
        set.free_range(9, 1),
        Err(Error::InvalidRange { min: 9, max: 1 })
    );
    assert_eq!(err.to_string(), "range min 5 is greater than max 4");
}

#[test]
fn ranges_beyond_the_space_are_clamped() {
    let space = IoasidSpace::new(8).unwrap();
    let mut set = space.create_set(1, 1000).unwrap();
    assert_eq!(set.alloc(250, 100_000), Ok(250));
    assert_eq!(
        set.alloc(256, 100_000),
        Err(Error::NoSpace { min: 256, max: 255 })
    );
    assert_eq!(set.alloc(255, u32::MAX), Ok(255));
    assert_eq!(set.free_range(0, u32::MAX), Ok(2));
    assert_eq!(set.owned(), 0);
}

#[test]
fn only_the_owner_frees() {
    let space = IoasidSpace::new(8).unwrap();
    let mut a = space.create_set(1, 10).unwrap();
    let mut b = space.create_set(2, 10).unwrap();
    let p = a.alloc(1, 255).unwrap();
    let err = b.free(p).unwrap_err();
    assert_eq!(
        err,
        Error::NotOwner {
            pasid: p,
            owner: a.id(),
            caller: b.id()
        }
    );
    assert_eq!(err.errno(), Errno::EACCES);
    assert_eq!(b.free(9), Err(Error::NotAllocated { pasid: 9 }));
    assert_eq!(b.free(9).unwrap_err().errno(), Errno::ENOENT);
    // A range free by the other set leaves `a` alone.
    assert_eq!(b.free_range(0, u32::MAX), Ok(0));
    assert!(a.owns(p));
    // The owner's own word: its free PASIDs, PASID 0 and PASIDs past the space are not its,
    // and a PASID freed once is not freed twice.
    let q = a.alloc(1, 255).unwrap();
    for other in [0, q + 1, 31, 256] {
        assert!(!a.owns(other), "{other}");
        assert!(a.free(other).is_err(), "{other}");
    }
    assert_eq!(a.free(q), Ok(()));
    assert_eq!(a.free(q), Err(Error::NotAllocated { pasid: q }));
    assert_eq!((a.owned(), a.pasids()), (1, vec![p]));
}

#[test]
fn free_range_frees_only_own_pasids_in_range() {
    let space = IoasidSpace::new(12).unwrap();
    let mut a = space.create_set(1, 4096).unwrap();
    let mut b = space.create_set(2, 4096).unwrap();
    for i in 0..300 {
        if i % 2 == 0 { &mut a } else { &mut b }
            .alloc(1, 4095)
            .unwrap();
    }
    // a owns the odd PASIDs 1..=299, b the even 2..=300.
    assert_eq!(a.free_range(64, 191), Ok(64));
    assert!(a.owns(63) && !a.owns(65) && !a.owns(191) && a.owns(193));
    assert_eq!(b.owned(), 150);
    assert_eq!(a.free_range(0, u32::MAX), Ok(86));
    assert_eq!(a.owned(), 0);
    assert_eq!(b.owned(), 150);
    assert_eq!(a.alloc(1, 4095), Ok(1));
}

#[test]
fn private_data_is_reported_by_find() {
    let space = IoasidSpace::new(16).unwrap();
    let mut set = space.create_set(5, 10).unwrap();
    let p = set.alloc_with_data(1, 100, 0xfeed).unwrap();
    assert_eq!(
        space.find(p),
        Some(PasidState::Allocated {
            set: set.id(),
            data: 0xfeed
        })
    );
    set.set_data(p, 42).unwrap();
    assert!(matches!(
        space.find(p),
        Some(PasidState::Allocated { data: 42, .. })
    ));
    set.free(p).unwrap();
    assert_eq!(space.find(p), None);
    // Data does not leak into the next owner.
    let q = set.alloc(1, 100).unwrap();
    assert_eq!(q, p);
    assert!(matches!(
        space.find(q),
        Some(PasidState::Allocated { data: 0, .. })
    ));
}

#[test]
fn freed_pasid_is_not_reused_until_every_subscriber_finishes() {
    let space = IoasidSpace::new(8).unwrap();
    let slow = Arc::new(Holding::default());
    let fast = Arc::new(Immediate::default());
    space.subscribe(slow.clone());
    space.subscribe(fast.clone());
    let mut set = space.create_set(1, 10).unwrap();
    let p = set.alloc(1, 255).unwrap();
    set.free(p).unwrap();
    assert_eq!(*fast.seen.lock().unwrap(), vec![p]);
    assert_eq!(*slow.seen.lock().unwrap(), vec![p]);
    assert_eq!(space.find(p), Some(PasidState::Freeing { pending: 1 }));
    assert_eq!(space.stats().freeing, 1);
    // Not reusable yet: the next allocation skips it.
    assert_eq!(set.alloc(1, 255), Ok(p + 1));
    assert_eq!(set.alloc(p, p), Err(Error::NoSpace { min: p, max: p }));
    // Freeing it again is refused and changes nothing.
    let err = set.free(p).unwrap_err();
    assert_eq!(
        err,
        Error::Freeing {
            pasid: p,
            pending: 1
        }
    );
    assert_eq!(err.errno(), Errno::EBUSY);
    assert_eq!(slow.finish_all(), 1);
    assert_eq!(space.find(p), None);
    assert_eq!(space.stats().freeing, 0);
    assert_eq!(set.alloc(1, 255), Ok(p));
}

#[test]
fn release_with_pending_teardowns() {
    let space = IoasidSpace::new(8).unwrap();
    let slow = Arc::new(Holding::default());
    space.subscribe(slow.clone());
    let mut set = space.create_set(1, 10).unwrap();
    let id = set.id();
    for _ in 0..5 {
        set.alloc(1, 255).unwrap();
    }
    assert_eq!(set.release(), 5);
    assert!(space.set_stats(id).is_none());
    let stats = space.stats();
    assert_eq!((stats.allocated, stats.freeing, stats.sets), (0, 5, 0));
    let mut other = space.create_set(2, 10).unwrap();
    assert_eq!(other.alloc(1, 255), Ok(6));
    assert_eq!(slow.finish_all(), 5);
    assert_eq!(space.stats().freeing, 0);
    assert_eq!(other.alloc(1, 255), Ok(1));
}

#[test]
fn dropping_a_set_releases_it() {
    let space = IoasidSpace::new(8).unwrap();
    let seen = Arc::new(Immediate::default());
    let id = space.subscribe(seen.clone());
    {
        let mut set = space.create_set(1, 10).unwrap();
        set.alloc(1, 255).unwrap();
        set.alloc(1, 255).unwrap();
    }
    assert_eq!(*seen.seen.lock().unwrap(), vec![1, 2]);
    assert_eq!(space.stats().allocated, 0);
    assert!(space.unsubscribe(id));
    assert!(!space.unsubscribe(id));
}

#[test]
fn stats_report_sets_and_space() {
    let space = IoasidSpace::new(20).unwrap();
    let mut a = space.create_set(11, 1000).unwrap();
    let b = space.create_set(22, 5).unwrap();
    a.alloc(1, 10).unwrap();
    let sets = space.sets();
    assert_eq!(sets.len(), 2);
    assert_eq!((sets[0].token, sets[0].owned, sets[0].quota), (11, 1, 1000));
    assert_eq!((sets[1].token, sets[1].owned, sets[1].quota), (22, 0, 5));
    assert_eq!(space.set_stats(b.id()).unwrap().quota, 5);
    let stats = space.stats();
    assert_eq!(stats.capacity, (1 << 20) - 1);
    assert_eq!((stats.allocated, stats.freeing, stats.sets), (1, 0, 2));
}

/// A backend standing for a host that hands out PASIDs to a guest, from its own space.
struct HostBackend {
    host: IoasidSpace,
    guest_set: Mutex<vsva_ioasid::IoasidSet>,
}

impl PasidBackend for HostBackend {
    fn alloc(&self, min: u32, max: u32) -> Result<u32, (Errno, String)> {
        self.guest_set
            .lock()
            .unwrap()
            .alloc(min, max)
            .map_err(|e| (e.errno(), e.to_string()))
    }
    fn free(&self, pasid: u32) {
        self.guest_set.lock().unwrap().free(pasid).unwrap();
    }
    fn name(&self) -> &str {
        "host"
    }
}

#[test]
fn delegated_backend_chooses_the_numbers() {
    let host = IoasidSpace::new(20).unwrap();
    let mut host_process = host.create_set(1, 100).unwrap();
    assert_eq!(host_process.alloc(1, 100), Ok(1));
    let backend = Arc::new(HostBackend {
        guest_set: Mutex::new(host.create_set(2, 2).unwrap()),
        host: host.clone(),
    });
    let guest = IoasidSpace::with_backend(20, backend.clone()).unwrap();
    let mut guest_process = guest.create_set(10, 100).unwrap();
    // The host's number 1 is taken, so the guest gets 2 and 3 although its own space is empty.
    assert_eq!(guest_process.alloc(1, 100), Ok(2));
    assert_eq!(guest_process.alloc(1, 100), Ok(3));
    // The host's quota for this guest is 2: its refusal comes through with its errno.
    let err = guest_process.alloc(1, 100).unwrap_err();
    assert_eq!(err.errno(), Errno::ENOSPC);
    assert!(err.to_string().starts_with("host backend:"), "{err}");
    assert!(matches!(
        backend.host.find(2),
        Some(PasidState::Allocated { .. })
    ));
    // Freeing in the guest gives the number back to the host.
    guest_process.free(2).unwrap();
    assert_eq!(backend.host.find(2), None);
    assert_eq!(guest_process.alloc(1, 100), Ok(2));
}

/// The owner table's memory for a chunk of 57 344 PASIDs that once had a word shared by
/// several sets (its table of leaf pointers, kept for the life of the space).
const CHUNK_TABLE_BYTES: usize = 1024 * 8;
/// PASIDs per chunk of the bitmap: 256 words of 56.
const BITMAP_CHUNK_PASIDS: usize = 256 * 56;
/// The bitmap's memory for a chunk of which one PASID was ever allocated (kept for the life
/// of the space).
const BITMAP_CHUNK_BYTES: usize = 2048;

#[test]
fn shared_words_report_every_owner_and_give_memory_back_on_release() {
    let space = IoasidSpace::new(20).unwrap();
    let slow = Arc::new(Holding::default());
    let mut a = space.create_set(1, 1000).unwrap();
    let mut b = space.create_set(2, 1000).unwrap();
    // Measured with the sets registered, so only the PASIDs' own costs show.
    let empty = space.memory_bytes();
    // Alternating allocations put both sets in every word; some PASIDs carry data.
    let mut held = Vec::new();
    for i in 0..300u64 {
        let (set, data) = if i % 2 == 0 {
            (&mut a, 0)
        } else {
            (&mut b, i % 3)
        };
        let p = set.alloc_with_data(1, u32::MAX, data).unwrap();
        assert_eq!(p as u64, i + 1);
        held.push((p, set.id(), data));
    }
    assert!(space.memory_bytes() > empty + CHUNK_TABLE_BYTES + BITMAP_CHUNK_BYTES);
    for &(p, set, data) in &held {
        assert_eq!(space.find(p), Some(PasidState::Allocated { set, data }));
    }
    // One set leaving makes the words single-owner again; freeing tears down through a
    // subscriber that finishes later.
    space.subscribe(slow.clone());
    assert_eq!(a.release(), 150);
    for &(p, set, data) in &held {
        let expect = if set == b.id() {
            PasidState::Allocated { set, data }
        } else {
            PasidState::Freeing { pending: 1 }
        };
        assert_eq!(space.find(p), Some(expect), "PASID {p}");
    }
    assert_eq!(slow.finish_all(), 150);
    assert_eq!(b.alloc(1, u32::MAX), Ok(1));
    assert_eq!(b.free_range(0, u32::MAX), Ok(151));
    assert_eq!(slow.finish_all(), 151);
    for &(p, _, _) in &held {
        assert_eq!(space.find(p), None);
    }
    // Every leaf is given back; only the chunk's table of leaf pointers and the bitmap's
    // chunk stay.
    assert_eq!(
        space.memory_bytes(),
        empty + CHUNK_TABLE_BYTES + BITMAP_CHUNK_BYTES
    );
    drop(b);
    let mut c = space.create_set(3, 1000).unwrap();
    assert_eq!(c.alloc(1, u32::MAX), Ok(1));
}

#[test]
fn scattered_pasids_of_one_set_cost_no_owner_memory() {
    let space = IoasidSpace::new(20).unwrap();
    let mut set = space.create_set(1, u32::MAX).unwrap();
    let empty = space.memory_bytes();
    let empty_set = set.memory_bytes();
    for _ in 0..100_000 {
        set.alloc(1, u32::MAX).unwrap();
    }
    for p in 1..=100_000u32 {
        if p % 100 != 0 {
            set.free(p).unwrap();
        }
    }
    assert_eq!(set.owned(), 1000);
    // A word held by one set records its owner beside its bits: no per-PASID table, only
    // the bitmap's chunks over the 100 000 PASIDs ever allocated.
    assert_eq!(
        space.memory_bytes(),
        empty + 100_000usize.div_ceil(BITMAP_CHUNK_PASIDS) * BITMAP_CHUNK_BYTES
    );
    // The set records only the 56-PASID words it owns PASIDs in (one bit each), not a bit
    // per PASID of the span: under a byte per live PASID here.
    assert!(
        set.memory_bytes() <= empty_set + 1000,
        "{} bytes",
        set.memory_bytes()
    );
    assert_eq!(
        space.find(500),
        Some(PasidState::Allocated {
            set: set.id(),
            data: 0
        })
    );
    assert_eq!(space.find(501), None);
    assert_eq!(
        set.pasids(),
        (1..=1000).map(|p| p * 100).collect::<Vec<_>>()
    );
    // A range free gives back what it empties, down to the table of its block pointers.
    assert_eq!(set.free_range(0, u32::MAX), Ok(1000));
    assert!(set.memory_bytes() <= empty_set + 32 * 8);
    assert!(set.pasids().is_empty());
}
