//! The PASID table of each device: setting, reading, replacing and clearing PASID entries,
//! and the teardown of a PASID on every device.

use super::control::Control;
use super::error::IommuError;
use super::invalidation::device_request;
use super::Iommu;
use crate::ats::DevTlbInvalidation;
use crate::context::{pasid_dir_index, pasid_entry_address, PasidDirEntry};
use crate::fault::SourceId;
use crate::invalidate::{Invalidation, PasidCacheScope};
use crate::memory::{store_entry, EntryMemory, MemoryError, PAGE_SIZE};
use crate::pasid_entry::{
    pasid_get_domain_id, pasid_pte_get_pgtt, pasid_pte_is_present, PasidEntry, Pgtt,
};

impl Iommu {
    pub(super) fn pasid_table(
        &self,
        ctl: &mut Control,
        sid: SourceId,
        pasid: u32,
        create: bool,
    ) -> Result<Option<u64>, IommuError> {
        let dev = ctl
            .devices
            .get_mut(&sid)
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        if pasid >= dev.limit {
            return Err(IommuError::PasidOutOfRange {
                pasid,
                limit: dev.limit,
            });
        }
        let idx = pasid_dir_index(pasid);
        if let Some(&t) = dev.tables.get(&idx) {
            return Ok(Some(t));
        }
        if !create {
            return Ok(None);
        }
        let t = self.pool.alloc(&self.mem)?;
        dev.tables.insert(idx, t);
        let de = PasidDirEntry {
            fpd: false,
            table: t,
        };
        self.mem
            .store_u64(PasidDirEntry::address(dev.dir, pasid), de.to_raw())?;
        Ok(Some(t))
    }

    /// Stores `words` as the PASID entry of `sid` at `addr` in a write section of the
    /// device's entry sequence ([`crate::entry_seq::EntrySeq`]): a translation that reads
    /// the entry meanwhile reads it again once the section is closed, so it goes on with the
    /// entry from before the write or the one from after, never a mix of the two, and P is
    /// never cleared on the way (an entry replaced by a present one stays present
    /// throughout). Word 0 (P, the type) is stored last. Every word is checked backed in the
    /// memory snapshot the stores then go to before the section opens: an error leaves the
    /// entry as it was.
    fn write_entry(&self, sid: SourceId, addr: u64, words: &[u64; 8]) -> Result<(), IommuError> {
        let mem = self.mem.snapshot();
        let mut current = [0u64; 8];
        mem.load_entries(addr, &mut current)
            .ok_or(MemoryError::Unbacked { addr, len: 64 })?;
        let seq = &self.caches.device(sid.0).entries;
        let s = seq.write_begin();
        for i in (1..8).chain([0]) {
            let stored = store_entry(&mem, addr + 8 * i as u64, words[i]);
            // The same snapshot had every word backed just above.
            debug_assert!(stored, "PASID entry word {i} at {addr:#x} unbacked");
        }
        seq.write_end(s);
        Ok(())
    }

    /// Sets the PASID entry of a device. The entry must be valid for this IOMMU and the slot
    /// must be empty (a present entry is changed with [`Self::replace_pasid_entry`]): since
    /// not-present entries are never cached, no invalidation is needed afterwards.
    ///
    /// # Errors
    ///
    /// An entry the IOMMU does not accept, an unknown device, a PASID out of range or a
    /// present slot changes nothing. Once the checks pass, a PASID table created for the slot
    /// stays in the device's directory even if the pool or memory then fails.
    pub fn set_pasid_entry(
        &self,
        sid: SourceId,
        pasid: u32,
        entry: &PasidEntry,
    ) -> Result<(), IommuError> {
        entry.validate(&self.cfg)?;
        let mut ctl = self.control();
        let table = self
            .pasid_table(&mut ctl, sid, pasid, true)?
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        let addr = pasid_entry_address(table, pasid);
        if pasid_pte_is_present(self.mem.load_u64(addr)?) {
            return Err(IommuError::PasidEntryPresent {
                source_id: sid,
                pasid,
            });
        }
        ctl.hold(pasid, sid);
        self.write_entry(sid, addr, &entry.to_raw())
    }

    /// Replaces the present PASID entry of a device by `new` with no moment in which the
    /// PASID translates nothing, as Linux's `intel_pasid_replace_first_level` (and its
    /// second-level, nested and pass-through twins) do for iommufd's hitless replace: a
    /// translation running meanwhile on another thread (`translate`, the DMA helpers, an ATS
    /// translation request) uses either the complete old entry or the complete new one,
    /// never a not-present entry and never a mix of the two. Then what the old entry may have
    /// left cached is flushed as [`Self::clear_pasid_entry`] flushes it: the PASID cache for
    /// the old DID and the PASID, the IOTLB (PASID-based for a first-level or nested old
    /// entry, the old DID's for a second-level or pass-through one) and the device TLB for
    /// the PASID (and for requests without PASID when it is the device's RID_PASID); devices
    /// that cache translations themselves are told, and waited for, before it returns. So a
    /// translation that begins after it returns uses `new`. The device keeps holding the
    /// PASID (a teardown of the PASID finds it).
    ///
    /// The guarantee holds between entries the IOMMU's API writes (set, replace, clear): the
    /// IOMMU reads an entry only between two of those writes. Words stored into a PASID table
    /// by anyone else (a guest editing its table in memory, the test hook
    /// `write_pasid_entry_raw`) are read as they stand, a half-written entry included, as the
    /// hardware would read them.
    ///
    /// # Errors
    ///
    /// `new` invalid for this IOMMU ([`IommuError::PasidEntry`]), an unknown device, a PASID
    /// out of range, an absent (not present) entry, or host memory that does not back the
    /// entry: nothing is changed (the old entry stays in place, nothing is flushed).
    pub fn replace_pasid_entry(
        &self,
        sid: SourceId,
        pasid: u32,
        new: &PasidEntry,
    ) -> Result<(), IommuError> {
        new.validate(&self.cfg)?;
        let mut ctl = self.control();
        let mut devices = Vec::new();
        let result = self.replace_locked(&mut ctl, sid, pasid, new, &mut devices);
        // Swapped and the IOMMU's caches flushed: the devices are waited for without the
        // control lock.
        drop(ctl);
        self.devtlb_notify(&devices);
        result
    }

    /// [`Self::replace_pasid_entry`] under the control lock; the device-TLB invalidations for
    /// devices that cache translations themselves are added to `devices` for the caller to
    /// send.
    fn replace_locked(
        &self,
        ctl: &mut Control,
        sid: SourceId,
        pasid: u32,
        new: &PasidEntry,
        devices: &mut Vec<DevTlbInvalidation>,
    ) -> Result<(), IommuError> {
        let absent = || IommuError::PasidEntryAbsent {
            source_id: sid,
            pasid,
        };
        let table = self
            .pasid_table(ctl, sid, pasid, false)?
            .ok_or_else(absent)?;
        let addr = pasid_entry_address(table, pasid);
        let v0 = self.mem.load_u64(addr)?;
        if !pasid_pte_is_present(v0) {
            return Err(absent());
        }
        let did = pasid_get_domain_id(self.mem.load_u64(addr + 8)?);
        // Present before and after: already held; recorded again so the record stays right
        // whoever wrote the old entry.
        ctl.hold(pasid, sid);
        self.write_entry(sid, addr, &new.to_raw())?;
        let rid_pasid = ctl.devices.get(&sid).map_or(0, |d| d.rid_pasid);
        self.flush_pasid(sid, pasid, did, pasid_pte_get_pgtt(v0), rid_pasid, devices);
        Ok(())
    }

    /// Writes raw PASID entry words with no validation and no cache flush, as a guest driver
    /// editing its table in memory would (to reproduce missing-invalidation bugs): P cleared
    /// first, then words 1 to 7, then word 0, as plain stores outside any write section, so a
    /// translation racing it reads what stands in memory at each load (see
    /// [`Self::replace_pasid_entry`] for what the API's own writes promise).
    ///
    /// A test hook: built only for this crate's tests and with the `test-hooks` feature.
    ///
    /// # Errors
    ///
    /// As [`Iommu::set_pasid_entry`] for the device and PASID range; the PASID table may have
    /// been created even when writing the entry fails.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn write_pasid_entry_raw(
        &self,
        sid: SourceId,
        pasid: u32,
        words: [u64; 8],
    ) -> Result<(), IommuError> {
        let mut ctl = self.control();
        let table = self
            .pasid_table(&mut ctl, sid, pasid, true)?
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        // Whatever the words say: teardown then looks, and finds what is there.
        ctl.hold(pasid, sid);
        let addr = pasid_entry_address(table, pasid);
        self.mem
            .store_u64(addr, crate::pasid_entry::pasid_clear_present(words[0]))?;
        for (i, &w) in words.iter().enumerate().skip(1) {
            self.mem.store_u64(addr + 8 * i as u64, w)?;
        }
        self.mem.store_u64(addr, words[0])?;
        Ok(())
    }

    /// The raw words of a PASID entry (`None` when its PASID table does not exist).
    pub fn read_pasid_entry(
        &self,
        sid: SourceId,
        pasid: u32,
    ) -> Result<Option<[u64; 8]>, IommuError> {
        let mut ctl = self.control();
        let Some(table) = self.pasid_table(&mut ctl, sid, pasid, false)? else {
            return Ok(None);
        };
        let addr = pasid_entry_address(table, pasid);
        let mut w = [0u64; 8];
        for (i, v) in w.iter_mut().enumerate() {
            *v = self.mem.load_u64(addr + 8 * i as u64)?;
        }
        Ok(Some(w))
    }

    /// Clears a present PASID entry and flushes, like the Linux driver's teardown: PASID cache
    /// for (DID, PASID), the IOTLB (PASID-based for first-level/nested, domain for
    /// second-level/pass-through), and the device TLB for the PASID. When that was the last
    /// entry of its PASID table (every word of the table zero), the table page goes back to
    /// the pool and its directory entry is cleared; the next set there allocates a new one.
    ///
    /// # Errors
    ///
    /// An unknown device, a PASID out of range or an absent entry changes nothing. A memory
    /// error on the pool's own pages may leave the entry cleared and flushed with its
    /// (empty) table still in the directory.
    pub fn clear_pasid_entry(&self, sid: SourceId, pasid: u32) -> Result<(), IommuError> {
        let mut ctl = self.control();
        let mut devices = Vec::new();
        let result = self.clear_locked(&mut ctl, sid, pasid, &mut devices);
        // The entry is cleared and the IOMMU's caches flushed: the devices are waited for
        // without the control lock.
        drop(ctl);
        self.devtlb_notify(&devices);
        result
    }

    /// Clears the entry and flushes the IOMMU's caches; the device-TLB invalidations for
    /// devices that cache translations themselves are added to `devices` for the caller to
    /// send.
    pub(super) fn clear_locked(
        &self,
        ctl: &mut Control,
        sid: SourceId,
        pasid: u32,
        devices: &mut Vec<DevTlbInvalidation>,
    ) -> Result<(), IommuError> {
        let absent = IommuError::PasidEntryAbsent {
            source_id: sid,
            pasid,
        };
        let table = self.pasid_table(ctl, sid, pasid, false)?.ok_or(absent)?;
        let addr = pasid_entry_address(table, pasid);
        let v0 = self.mem.load_u64(addr)?;
        if !pasid_pte_is_present(v0) {
            return Err(IommuError::PasidEntryAbsent {
                source_id: sid,
                pasid,
            });
        }
        let did = pasid_get_domain_id(self.mem.load_u64(addr + 8)?);
        self.write_entry(sid, addr, &[0; 8])?;
        ctl.release(pasid, sid);
        let rid_pasid = ctl.devices.get(&sid).map_or(0, |d| d.rid_pasid);
        self.flush_pasid(sid, pasid, did, pasid_pte_get_pgtt(v0), rid_pasid, devices);
        self.free_table_if_empty(ctl, sid, pasid, table)
    }

    /// Gives `table` (the PASID table holding `pasid` on `sid`) back to the pool when every
    /// word of it is zero: its directory entry is cleared first, so a later walk finds no
    /// table. No cache needs flushing: only present PASID entries are cached, and the table
    /// has none. A table with any non-zero word (a raw-written, not-present entry) is kept.
    fn free_table_if_empty(
        &self,
        ctl: &mut Control,
        sid: SourceId,
        pasid: u32,
        table: u64,
    ) -> Result<(), IommuError> {
        for i in 0..PAGE_SIZE / 8 {
            if self.mem.load_u64(table + 8 * i)? != 0 {
                return Ok(());
            }
        }
        let Some(dev) = ctl.devices.get_mut(&sid) else {
            return Ok(());
        };
        self.mem
            .store_u64(PasidDirEntry::address(dev.dir, pasid), 0)?;
        dev.tables.remove(&pasid_dir_index(pasid));
        self.pool.free(table)?;
        Ok(())
    }

    pub(super) fn flush_pasid(
        &self,
        sid: SourceId,
        pasid: u32,
        did: u16,
        pgtt: Option<Pgtt>,
        rid_pasid: u32,
        devices: &mut Vec<DevTlbInvalidation>,
    ) {
        self.apply(&Invalidation::PasidCache(PasidCacheScope::Pasid {
            did,
            pasid,
        }));
        match pgtt {
            Some(Pgtt::FirstLevel | Pgtt::Nested) => {
                self.apply(&Invalidation::PasidIotlb { did, pasid })
            }
            _ => self.apply(&Invalidation::IotlbDomain { did }),
        }
        let mut device_tlb = |pasid| {
            let inv = Invalidation::DeviceTlb {
                source_id: sid,
                pasid,
                pages: None,
            };
            self.apply(&inv);
            devices.extend(device_request(&inv));
        };
        device_tlb(Some(pasid));
        if pasid == rid_pasid {
            // Requests without PASID were translated through this entry too.
            device_tlb(None);
        }
    }

    /// Clears `pasid`'s entry on every device where it is present and flushes every cache
    /// that could hold it (PASID cache, IOTLB and paging-structure caches, device TLBs).
    /// Returns the devices it was cleared on.
    pub fn teardown_pasid(&self, pasid: u32) -> Vec<SourceId> {
        let mut ctl = self.control();
        // Only the devices that may hold it: a free costs the same however many devices
        // are attached.
        let sids: Vec<SourceId> = ctl.holders.get(&pasid).cloned().unwrap_or_default();
        let mut devices = Vec::new();
        let mut cleared: Vec<SourceId> = sids
            .into_iter()
            .filter(|&sid| match self.clear_locked(&mut ctl, sid, pasid, &mut devices) {
                Ok(()) => true,
                // Nothing to clear on this device.
                Err(IommuError::PasidEntryAbsent { .. } | IommuError::PasidOutOfRange { .. }) => {
                    false
                }
                Err(e) => {
                    // Only a failure of the pool's own (backed) pages gets here: the entry may
                    // still be present after its PASID was freed.
                    tracing::error!(%sid, pasid, error = %e, "PASID teardown failed on a device");
                    debug_assert!(false, "PASID {pasid} teardown failed on {sid}: {e}");
                    false
                }
            })
            .collect();
        // Every device that may hold the PASID, in one call of the sink, waited for without
        // the control lock.
        drop(ctl);
        self.devtlb_notify(&devices);
        cleared.sort_unstable();
        cleared
    }
}

#[cfg(test)]
mod tests;
