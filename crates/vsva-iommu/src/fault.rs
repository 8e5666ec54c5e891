//! VT-d fault reasons, fault records and the bounded fault log.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

/// A PCI requester id: `bus << 8 | device << 3 | function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u16);

impl SourceId {
    /// Builds a source id from bus, device (0..32) and function (0..8); out-of-range device or
    /// function bits are masked off.
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        Self((bus as u16) << 8 | ((device as u16 & 0x1f) << 3) | (function as u16 & 7))
    }
    /// The bus number (bits 15:8).
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Device and function (`devfn`).
    pub const fn devfn(self) -> u8 {
        self.0 as u8
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{}",
            self.bus(),
            self.devfn() >> 3,
            self.devfn() & 7
        )
    }
}

/// The kind of a DMA request: read or write, optionally execute and/or privileged (supervisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access {
    /// Write request (otherwise read).
    pub write: bool,
    /// Execute (instruction fetch) request; implies read.
    pub execute: bool,
    /// Privileged (supervisor) request.
    pub privileged: bool,
}

impl Access {
    /// A user-mode read.
    pub const READ: Access = Access {
        write: false,
        execute: false,
        privileged: false,
    };
    /// A user-mode write.
    pub const WRITE: Access = Access {
        write: true,
        execute: false,
        privileged: false,
    };
    /// A user-mode execute (read for instruction fetch).
    pub const EXEC: Access = Access {
        write: false,
        execute: true,
        privileged: false,
    };
    /// The same request, made privileged (supervisor).
    pub const fn privileged(self) -> Access {
        Access {
            privileged: true,
            ..self
        }
    }

    /// Index of the request's kind among the 8 kinds: write (bit 0) | execute (bit 1) |
    /// privileged (bit 2).
    #[inline(always)]
    pub(crate) const fn kind(self) -> u64 {
        self.write as u64 | (self.execute as u64) << 1 | (self.privileged as u64) << 2
    }

    /// The request of kind index `kind` (the inverse of [`Access::kind`]).
    pub(crate) const fn from_kind(kind: u64) -> Access {
        Access {
            write: kind & 1 != 0,
            execute: kind & 2 != 0,
            privileged: kind & 4 != 0,
        }
    }
}

/// The interrupt address range, inclusive (0xFEEx_xxxx): an output address in it faults
/// ([`FaultReason::InterruptRange`], 0x87) instead of reaching memory, and the VFIO layer keeps
/// it out of the IOVA ranges a domain can map (Linux's `IOAPIC_RANGE_START..=END` reserved
/// region).
pub const INTERRUPT_RANGE: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);

/// Whether the page `[base, base + size)` overlaps [`INTERRUPT_RANGE`].
#[inline(always)]
pub(crate) fn overlaps_interrupt_range(base: u64, size: u64) -> bool {
    base <= INTERRUPT_RANGE.1 && base + size > INTERRUPT_RANGE.0
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.write {
            "write"
        } else if self.execute {
            "execute"
        } else {
            "read"
        };
        write!(
            f,
            "{}{}",
            if self.privileged { "supervisor " } else { "" },
            kind
        )
    }
}

/// Which translation stage a fault comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Root, context, PASID directory or PASID table lookup.
    Context,
    /// First-level (stage 1) paging.
    First,
    /// Second-level (stage 2) paging.
    Second,
}

macro_rules! reasons {
    ($($(#[$m:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        /// VT-d scalable-mode fault reasons, with the specification's codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum FaultReason {
            $($(#[$m])* $name = $code,)*
        }
        impl FaultReason {
            /// Every reason, in code order.
            pub const ALL: &'static [FaultReason] = &[$(FaultReason::$name,)*];
            /// The reason's code.
            pub const fn code(self) -> u8 { self as u8 }
            /// The reason for a code, if it is one this model knows.
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(FaultReason::$name),)* _ => None }
            }
            /// A short description.
            pub const fn describe(self) -> &'static str {
                match self { $(FaultReason::$name => $text,)* }
            }
        }
    };
}

reasons! {
    /// Invalid root table address (0x30).
    RootTableAddressInvalid = 0x30, "invalid root table address";
    /// Error accessing a root entry (0x38).
    RootEntryAccess = 0x38, "root entry access error";
    /// Root entry not present (0x39).
    RootEntryNotPresent = 0x39, "root entry not present";
    /// Reserved bits set in a root entry (0x3a).
    RootEntryReserved = 0x3a, "root entry reserved bits set";
    /// Error accessing a context entry (0x40).
    ContextEntryAccess = 0x40, "context entry access error";
    /// Context entry not present (0x41).
    ContextEntryNotPresent = 0x41, "context entry not present";
    /// Reserved bits set in a context entry (0x42).
    ContextEntryReserved = 0x42, "context entry reserved bits set";
    /// Context entry invalid (0x43).
    ContextEntryInvalid = 0x43, "context entry invalid";
    /// Translation request (ATS) to a device whose context entry has DTE clear (0x44).
    DeviceTlbDisabled = 0x44, "translation request with DTE clear in the context entry";
    /// PASID request but PASIDE clear in the context entry (0x45).
    PasidDisabled = 0x45, "PASID request with PASID disabled in the context entry";
    /// PASID beyond the PASID directory size (0x46).
    PasidBeyondDirectory = 0x46, "PASID beyond the PASID directory size";
    /// Page request from a device whose context entry has PRE clear (0x47).
    PageRequestDisabled = 0x47, "page request with PRE clear in the context entry";
    /// Error accessing a PASID directory entry (0x50).
    PasidDirAccess = 0x50, "PASID directory entry access error";
    /// PASID directory entry not present (0x51).
    PasidDirNotPresent = 0x51, "PASID directory entry not present";
    /// Reserved bits set in a PASID directory entry (0x52).
    PasidDirReserved = 0x52, "PASID directory entry reserved bits set";
    /// Error accessing a PASID table entry (0x58).
    PasidEntryAccess = 0x58, "PASID table entry access error";
    /// PASID table entry not present (0x59).
    PasidEntryNotPresent = 0x59, "PASID table entry not present";
    /// Reserved bits set in a PASID table entry (0x5a).
    PasidEntryReserved = 0x5a, "PASID table entry reserved bits set";
    /// PASID table entry invalid: bad PGTT, unsupported AW/FLPM, feature not supported (0x5b).
    PasidEntryInvalid = 0x5b, "PASID table entry invalid";
    /// Execute request but execute requests are not enabled (0x5c).
    ExecuteNotEnabled = 0x5c, "execute request with execute requests disabled";
    /// Supervisor request but SRE clear in the PASID entry (0x5d).
    SupervisorNotEnabled = 0x5d, "supervisor request with SRE clear";
    /// Error accessing a first-level paging entry (0x70).
    FirstLevelAccess = 0x70, "first-level entry access error";
    /// First-level paging entry not present (0x71).
    FirstLevelNotPresent = 0x71, "first-level entry not present";
    /// Reserved bits set in a first-level paging entry (0x72).
    FirstLevelReserved = 0x72, "first-level entry reserved bits set";
    /// Invalid FLPTR in the PASID entry (0x73).
    FirstLevelPointerInvalid = 0x73, "invalid first-level table pointer";
    /// Nested: a first-level address beyond the second-level input width (0x74).
    FirstLevelAddressBeyondMgaw = 0x74, "first-level address beyond MGAW";
    /// Nested: no second-level read permission on the first-level root table (0x75).
    NestedNoReadRoot = 0x75, "no second-level read permission on the first-level root table";
    /// Nested: no second-level read permission on a first-level table (0x76).
    NestedNoReadEntry = 0x76, "no second-level read permission on a first-level table";
    /// Nested: no second-level write permission for an A/D update (0x77).
    NestedNoWriteEntry = 0x77, "no second-level write permission for a first-level A/D update";
    /// Error accessing a second-level paging entry (0x78).
    SecondLevelAccess = 0x78, "second-level entry access error";
    /// Second-level not present or no read/write permission (0x79).
    SecondLevelPermission = 0x79, "second-level read/write permission fault";
    /// Reserved bits set in a second-level paging entry (0x7a).
    SecondLevelReserved = 0x7a, "second-level entry reserved bits set";
    /// Invalid SSPTPTR in the PASID entry (0x7b).
    SecondLevelPointerInvalid = 0x7b, "invalid second-level table pointer";
    /// First-level input address not canonical (0x80).
    NonCanonical = 0x80, "input address not canonical";
    /// User request to a supervisor page (0x81).
    UserToSupervisor = 0x81, "user request to a supervisor page";
    /// Execute request to an execute-disabled page (0x82).
    ExecuteDisabled = 0x82, "execute request to an execute-disabled page";
    /// Input address beyond the maximum (0x83).
    InputBeyondMax = 0x83, "input address beyond the maximum";
    /// Second-level output address beyond the maximum (0x84): a second-level leaf whose
    /// address is at or above HAW.
    OutputBeyondMax = 0x84, "second-level output address beyond the maximum";
    /// No write permission (0x85).
    NoWrite = 0x85, "no write permission";
    /// No read permission (0x86).
    NoRead = 0x86, "no read permission";
    /// Output in the interrupt address range (0x87).
    InterruptRange = 0x87, "output address in the interrupt range";
    /// A/D update needed in a first-level entry set up as no-snoop (0x90).
    NoSnoopAdUpdate = 0x90, "A/D update in a no-snoop first-level entry";
    /// A first-level accessed/dirty update could not be written (0x91).
    FirstLevelAdUpdate = 0x91, "first-level A/D update failed";
}

impl FaultReason {
    /// Whether a fault processing disable (FPD) bit may suppress recording this fault: the
    /// qualified faults, found in an entry the hardware could read. Errors accessing the
    /// tables themselves (root, context, PASID directory and table, first- and second-level
    /// entries) and root-level faults (the FPD bits live below the root) are never qualified:
    /// they are always recorded.
    pub const fn is_qualified(self) -> bool {
        !matches!(
            self,
            FaultReason::RootTableAddressInvalid
                | FaultReason::RootEntryAccess
                | FaultReason::RootEntryNotPresent
                | FaultReason::RootEntryReserved
                | FaultReason::ContextEntryAccess
                | FaultReason::PasidDirAccess
                | FaultReason::PasidEntryAccess
                | FaultReason::FirstLevelAccess
                | FaultReason::SecondLevelAccess
        )
    }
}

impl fmt::Display for FaultReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x} ({})", self.code(), self.describe())
    }
}

/// A failed translation: what the hardware would put in a fault record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DMA fault {reason} from {source_id} pasid {pasid:?} addr {addr:#x} ({access}, stage {stage:?}, level {level})")]
pub struct Fault {
    /// Requester.
    pub source_id: SourceId,
    /// PASID of the request, `None` for a request without PASID.
    pub pasid: Option<u32>,
    /// Input address of the request.
    pub addr: u64,
    /// The request: read or write, execute, privileged.
    pub access: Access,
    /// Why the request failed (the VT-d fault reason).
    pub reason: FaultReason,
    /// The stage whose entry (or input) failed.
    pub stage: Stage,
    /// Paging level of the failing entry (5..=1); 0 when not at a paging entry.
    pub level: u8,
    /// Whether the fault was recorded (false when a fault processing disable bit was set).
    pub recorded: bool,
}

/// A bounded log of fault records; the oldest record is dropped (and counted) when full.
///
/// Every record is numbered when it is appended: the n-th fault ever logged is number n, so
/// a reader that noted [`FaultLog::total`] at some moment can tell exactly which records came
/// after it, however many threads log at once.
pub struct FaultLog {
    capacity: usize,
    records: Mutex<VecDeque<(u64, Fault)>>,
    dropped: AtomicU64,
    /// Records ever appended; written only under the `records` lock, so it is always the
    /// number of the newest record.
    total: AtomicU64,
    /// Told of every record after it is appended.
    observer: ArcSwapOption<Arc<dyn FaultObserver>>,
}

impl fmt::Debug for FaultLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLog")
            .field("capacity", &self.capacity)
            .field("total", &self.total())
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What [`FaultLog::after`] read in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsAfter {
    /// The records numbered above the one asked for, oldest first, with their numbers.
    pub records: Vec<(u64, Fault)>,
    /// The number of the newest record logged (0 before the first), held or not.
    pub newest: u64,
    /// Records numbered above the one asked for that the log no longer holds (dropped when
    /// it was full, or drained).
    pub missed: u64,
}

/// Told of every fault record the log appends (an embedder routes them, e.g. a fault on a
/// PASID to the process that owns it). Called on the faulting thread, after the record is
/// in the log and with no lock of the log held; it must not block.
pub trait FaultObserver: Send + Sync {
    /// One new record.
    fn fault(&self, fault: &Fault);
}

impl FaultLog {
    /// A log keeping at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            records: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
            total: AtomicU64::new(0),
            observer: ArcSwapOption::empty(),
        }
    }

    /// Sets (or with `None` removes) the observer told of every record appended from now on.
    pub fn set_observer(&self, observer: Option<Arc<dyn FaultObserver>>) {
        self.observer.store(observer.map(Arc::new));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Fault)>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record; it is numbered one more than the record before it.
    pub fn record(&self, fault: Fault) {
        let mut r = self.lock();
        let number = self.total.load(Ordering::Relaxed) + 1;
        self.total.store(number, Ordering::Release);
        if r.len() == self.capacity {
            r.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        r.push_back((number, fault));
        drop(r);
        if let Some(observer) = self.observer.load().as_ref() {
            observer.fault(&fault);
        }
    }

    /// A copy of the records currently held, oldest first.
    pub fn records(&self) -> Vec<Fault> {
        self.lock().iter().map(|&(_, f)| f).collect()
    }

    /// A copy of the records currently held with their numbers, oldest first. A record
    /// numbered above a value [`FaultLog::total`] returned was logged after that call.
    pub fn numbered_records(&self) -> Vec<(u64, Fault)> {
        self.lock().iter().copied().collect()
    }

    /// The records numbered above `number`, read in one look together with the number of
    /// the newest record and how many records above `number` the log no longer holds: a
    /// reader that passes the previous call's `newest` (or the number of the last record it
    /// took) gets every record once, and learns how many it lost when the log was full.
    /// A `number` above the newest gives no records and nothing missed.
    pub fn after(&self, number: u64) -> RecordsAfter {
        let r = self.lock();
        let newest = self.total.load(Ordering::Relaxed);
        let oldest_held = r.front().map_or(newest + 1, |&(n, _)| n);
        let first = r.partition_point(|&(n, _)| n <= number);
        RecordsAfter {
            records: r.range(first..).copied().collect(),
            newest,
            missed: oldest_held.saturating_sub(number.saturating_add(1)),
        }
    }

    /// Removes and returns every record held, oldest first.
    pub fn drain(&self) -> Vec<Fault> {
        self.lock().drain(..).map(|(_, f)| f).collect()
    }

    /// Records matching a predicate (e.g. one source id or PASID).
    pub fn query(&self, mut pred: impl FnMut(&Fault) -> bool) -> Vec<Fault> {
        self.lock()
            .iter()
            .map(|&(_, f)| f)
            .filter(|f| pred(f))
            .collect()
    }

    /// Records dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records ever appended: the number of the newest record (0 before the first).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(addr: u64) -> Fault {
        Fault {
            source_id: SourceId::new(1, 2, 3),
            pasid: Some(5),
            addr,
            access: Access::WRITE.privileged(),
            reason: FaultReason::NoWrite,
            stage: Stage::First,
            level: 1,
            recorded: true,
        }
    }

    #[test]
    fn codes_round_trip_and_match_vtd_md() {
        for &r in FaultReason::ALL {
            assert_eq!(FaultReason::from_code(r.code()), Some(r));
        }
        assert_eq!(FaultReason::NonCanonical.code(), 0x80);
        assert_eq!(FaultReason::PasidBeyondDirectory.code(), 0x46);
        assert_eq!(FaultReason::SecondLevelPointerInvalid.code(), 0x7b);
        assert_eq!(FaultReason::from_code(0x31), None);
        assert_eq!(FaultReason::ALL.len(), 43);
    }

    #[test]
    fn only_qualified_faults_may_be_suppressed() {
        let never = [0x30, 0x38, 0x39, 0x3a, 0x40, 0x50, 0x58, 0x70, 0x78];
        for &r in FaultReason::ALL {
            assert_eq!(r.is_qualified(), !never.contains(&r.code()), "{r}");
        }
    }

    #[test]
    fn source_id_fields() {
        let s = SourceId::new(0x3a, 0x1f, 7);
        assert_eq!(s.0, 0x3aff);
        assert_eq!((s.bus(), s.devfn()), (0x3a, 0xff));
        assert_eq!(s.to_string(), "3a:1f.7");
    }

    #[test]
    fn a_cursor_takes_identical_records_once_and_counts_the_dropped() {
        let log = FaultLog::new(3);
        let none = log.after(0);
        assert_eq!((none.records.len(), none.newest, none.missed), (0, 0, 0));
        // A device retrying the same access logs the same record again and again: only the
        // numbers tell them apart.
        log.record(fault(7));
        log.record(fault(7));
        let first = log.after(0);
        assert_eq!(
            first.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!((first.newest, first.missed), (2, 0));
        log.record(fault(7));
        let second = log.after(first.newest);
        assert_eq!(second.records, [(3, fault(7))]);
        assert_eq!(second.missed, 0);
        // Four more into a log of three: number 4 was dropped before this reader looked.
        for _ in 0..4 {
            log.record(fault(7));
        }
        let third = log.after(second.newest);
        assert_eq!(
            third.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!((third.newest, third.missed), (7, 1));
        // Drained: everything after the cursor is gone, and counted.
        log.drain();
        let fourth = log.after(5);
        assert_eq!(
            (fourth.records.len(), fourth.newest, fourth.missed),
            (0, 7, 2)
        );
        // A cursor from the future (another log) gives nothing.
        let ahead = log.after(99);
        assert_eq!((ahead.records.len(), ahead.missed), (0, 0));
    }

    #[test]
    fn log_is_bounded_and_queryable() {
        let log = FaultLog::new(2);
        log.record(fault(1));
        log.record(fault(2));
        log.record(fault(3));
        assert_eq!(log.dropped(), 1);
        assert_eq!(log.total(), 3);
        let addrs: Vec<_> = log.records().iter().map(|f| f.addr).collect();
        assert_eq!(addrs, vec![2, 3]);
        assert_eq!(log.query(|f| f.addr == 3).len(), 1);
        assert_eq!(log.drain().len(), 2);
        assert!(log.records().is_empty());
        assert!(fault(9).to_string().contains("0x85"));
    }

    #[test]
    fn numbers_follow_the_order_of_logging_across_threads() {
        let log = std::sync::Arc::new(FaultLog::new(64));
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..100_000 {
                        log.record(fault(t << 32 | i));
                    }
                })
            })
            .collect();
        while !writers.iter().all(|w| w.is_finished()) {
            let before = log.total();
            let recs = log.numbered_records();
            let after = log.total();
            for pair in recs.windows(2) {
                assert_eq!(pair[1].0, pair[0].0 + 1, "numbers are consecutive");
            }
            if let Some(&(last, _)) = recs.last() {
                assert!(
                    (before..=after).contains(&last),
                    "the newest record is number total() ({before}..={after}), not {last}"
                );
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(log.total(), 200_000);
        assert_eq!(log.numbered_records().last().unwrap().0, 200_000);
        // Each writer's records appear in the order it logged them.
        let recs = log.numbered_records();
        for t in 0..2u64 {
            let mine: Vec<u64> = recs
                .iter()
                .filter(|(_, f)| f.addr >> 32 == t)
                .map(|(_, f)| f.addr)
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
