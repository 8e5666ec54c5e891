//! The write sequence of a device's PASID entries: what keeps a translation from using a
//! PASID entry that the IOMMU's own API is in the middle of rewriting.
//!
//! A PASID entry is eight 64-bit words, and the PASID-cache miss path reads them without the
//! control lock while [`crate::Iommu::replace_pasid_entry`] may be storing a new entry over a
//! present one. No order of eight stores makes that safe by itself: whichever words the
//! writer stores first, a reader that read the others before them has half of each entry.
//! So every write of an entry through the API is a *write section* of its device's
//! [`EntrySeq`] (a sequence lock, as the slots of [`crate::slots`] are): the count is odd
//! while the words are being stored, and the miss path reads the count before and after its
//! read of the entry and reads again when a section was under way or has happened since.
//! A read that passes the check saw the entry as it was between two sections: the complete
//! old entry or the complete new one.
//!
//! Writers are the control lock's holders, one at a time, so a section is a plain load and
//! two stores (no read-modify-write). The orderings rest on those of the entry words
//! themselves: [`crate::memory::EntryMemory::load_entry`] loads with acquire and
//! [`crate::memory::store_entry`] stores with release. A reader whose acquire load of a word
//! reads a store made in a section therefore also sees the section's opening (odd) count in
//! its closing load, which is sequenced after it; a reader whose opening load reads a
//! section's closing (release) count sees every word that section stored. The loom model
//! at the end of this file checks both with the same orderings (`RUSTFLAGS="--cfg loom"
//! cargo test -p vsva-iommu --release --lib loom`).
//!
//! Only the API's writes open sections. Words stored by anyone else (a guest editing a table
//! in memory, the test hook `Iommu::write_pasid_entry_raw`) are read as they are, torn or not, as
//! the hardware would read them.

#[cfg(loom)]
use loom::sync::atomic::AtomicU32;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;

/// The write sequence of one device's PASID entries (see the module documentation).
///
/// 32 bits: a read could pass the check across a write only if exactly 2^31 sections began
/// and ended while it read the entry.
#[derive(Debug, Default)]
pub(crate) struct EntrySeq(AtomicU32);

impl EntrySeq {
    /// Opens a read: the count to give [`Self::read_ok`] once the entry has been read.
    #[inline(always)]
    pub(crate) fn read_begin(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    /// Whether the entry words read since [`Self::read_begin`] returned `seen` are an entry
    /// as it stood between two write sections: no section was open when the read began and
    /// none has begun since. When not, the caller reads again (after [`Self::wait`]).
    #[inline(always)]
    pub(crate) fn read_ok(&self, seen: u32) -> bool {
        // The entry loads before this one are acquire loads: this load cannot be done
        // before them.
        seen & 1 == 0 && self.0.load(Ordering::Acquire) == seen
    }

    /// Waits a moment before a read is tried again (a write section is short: eight stores).
    #[cold]
    #[inline(never)]
    pub(crate) fn wait(&self) {
        std::hint::spin_loop();
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(not(loom))]
        if self.0.load(Ordering::Relaxed) & 1 != 0 {
            // The writer may have been preempted in its section: let it run.
            std::thread::yield_now();
        }
    }

    /// Opens a write section. Only one writer at a time (the control lock's holder); the
    /// section must be closed with [`Self::write_end`] and the value returned here, whatever
    /// happens to the stores in between, or every reader of the device waits.
    #[inline]
    pub(crate) fn write_begin(&self) -> u32 {
        let s = self.0.load(Ordering::Relaxed);
        debug_assert_eq!(s & 1, 0, "a write section is already open");
        // Relaxed: the entry stores that follow are release stores, which order this one
        // before them for any reader that sees one of them.
        self.0.store(s.wrapping_add(1), Ordering::Relaxed);
        s
    }

    /// Closes the write section [`Self::write_begin`] opened when it returned `s`.
    #[inline]
    pub(crate) fn write_end(&self, s: u32) {
        self.0.store(s.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::EntrySeq;

    #[test]
    fn a_read_across_a_section_or_inside_one_is_refused() {
        let seq = EntrySeq::default();
        let seen = seq.read_begin();
        assert!(seq.read_ok(seen), "no write");
        let s = seq.write_begin();
        assert!(!seq.read_ok(seen), "a section began after the read did");
        let inside = seq.read_begin();
        assert!(!seq.read_ok(inside), "the read began inside a section");
        seq.write_end(s);
        assert!(!seq.read_ok(inside));
        let after = seq.read_begin();
        assert!(seq.read_ok(after), "after the section");
        // A whole section (begin and end) between the two loads is seen too.
        let s = seq.write_begin();
        seq.write_end(s);
        assert!(!seq.read_ok(after));
    }

    #[test]
    fn the_count_wraps() {
        let seq = EntrySeq(super::AtomicU32::new(u32::MAX - 1));
        let seen = seq.read_begin();
        let s = seq.write_begin();
        seq.write_end(s);
        assert_eq!(seq.read_begin(), 0);
        assert!(!seq.read_ok(seen));
        assert!(seq.read_ok(seq.read_begin()));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! A PASID entry (two words here, each stored and loaded as the real ones are: release
    //! stores, acquire loads) replaced while a translation's miss path reads it: the words
    //! it goes on with are always one whole entry, the old or a new one.
    use super::EntrySeq;
    use loom::sync::atomic::AtomicU64;
    use loom::sync::Arc;
    use loom::thread;
    use std::sync::atomic::Ordering;

    struct Entry {
        seq: EntrySeq,
        words: [AtomicU64; 2],
    }

    impl Entry {
        /// `Iommu::write_entry`: a write section, the body word first and word 0 last.
        fn replace(&self, v: u64) {
            let s = self.seq.write_begin();
            self.words[1].store(v, Ordering::Release);
            self.words[0].store(v, Ordering::Release);
            self.seq.write_end(s);
        }

        /// `pasid_info_miss`: the words, read again until no section overlapped the read.
        fn read(&self) -> [u64; 2] {
            loop {
                let s = self.seq.read_begin();
                let w = [
                    self.words[0].load(Ordering::Acquire),
                    self.words[1].load(Ordering::Acquire),
                ];
                if self.seq.read_ok(s) {
                    return w;
                }
                self.seq.wait();
            }
        }
    }

    #[test]
    fn loom_a_replace_is_never_read_torn() {
        loom::model(|| {
            let e = Arc::new(Entry {
                seq: EntrySeq::default(),
                words: [AtomicU64::new(1), AtomicU64::new(1)],
            });
            let w = e.clone();
            // Two replaces, back and forth, as a replace to another HWPT and back.
            let writer = thread::spawn(move || {
                w.replace(2);
                w.replace(1);
            });
            let [a, b] = e.read();
            assert_eq!(a, b, "a torn entry: word 0 of one, word 1 of another");
            writer.join().unwrap();
            assert_eq!(e.read(), [1, 1], "the last replace is what a read finds");
        });
    }
}
