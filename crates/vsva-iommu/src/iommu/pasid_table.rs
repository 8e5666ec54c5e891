//! The PASID table of each device: setting, reading and clearing PASID entries, and the
//! teardown of a PASID on every device.

use super::control::Control;
use super::error::IommuError;
use super::invalidation::device_request;
use super::Iommu;
use crate::ats::DevTlbInvalidation;
use crate::context::{pasid_dir_index, pasid_entry_address, PasidDirEntry};
use crate::fault::SourceId;
use crate::invalidate::{Invalidation, PasidCacheScope};
use crate::memory::PAGE_SIZE;
use crate::pasid_entry::{
    pasid_clear_present, pasid_get_domain_id, pasid_pte_get_pgtt, pasid_pte_is_present, PasidEntry,
    Pgtt,
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

    pub(super) fn write_entry_words(&self, addr: u64, words: &[u64; 8]) -> Result<(), IommuError> {
        // Clear P first, then the body, then word 0: the entry is never seen half written.
        self.mem.store_u64(addr, pasid_clear_present(words[0]))?;
        for (i, &w) in words.iter().enumerate().skip(1) {
            self.mem.store_u64(addr + 8 * i as u64, w)?;
        }
        self.mem.store_u64(addr, words[0])?;
        Ok(())
    }

    /// Sets the PASID entry of a device. The entry must be valid for this IOMMU and the slot
    /// must be empty (clear it first): since not-present entries are never cached, no
    /// invalidation is needed afterwards.
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
        self.write_entry_words(addr, &entry.to_raw())
    }

    /// Writes raw PASID entry words with no validation and no cache flush, as a guest driver
    /// editing its table in memory would (to reproduce missing-invalidation bugs).
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
        self.write_entry_words(pasid_entry_address(table, pasid), &words)
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
        self.write_entry_words(addr, &[0; 8])?;
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
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn teardown_pasid_clears_every_device_and_flushes() {
        let io = iommu();
        let sids = [SID, SourceId::new(1, 0, 0)];
        for s in sids {
            io.attach_device(
                s,
                DeviceOptions {
                    ats: true,
                    ..DeviceOptions::default()
                },
            )
            .unwrap();
        }
        let root = io.table_pool().alloc(io.memory()).unwrap();
        map(&io, root, 0x1000, 0x10_0000, SIZE_4K, RW | US);
        for s in sids {
            io.set_pasid_entry(s, 77, &PasidEntry::first_level(5, root))
                .unwrap();
            io.translate(s, Some(77), 0x1000, Access::WRITE).unwrap();
        }
        assert_eq!(io.teardown_pasid(77), sids.to_vec());
        for s in sids {
            assert_eq!(
                reason(io.translate(s, Some(77), 0x1000, Access::READ)),
                FaultReason::PasidDirNotPresent
            );
            // PASID 77 was its table's only entry: the table went back to the pool.
            assert_eq!(io.read_pasid_entry(s, 77).unwrap(), None);
        }
        assert!(io.teardown_pasid(77).is_empty());
        // The number can be bound again at once.
        io.set_pasid_entry(SID, 77, &PasidEntry::first_level(5, root))
            .unwrap();
        assert!(io.translate(SID, Some(77), 0x1000, Access::READ).is_ok());
    }

    /// A teardown visits only the devices that hold the PASID, and finds every one that
    /// does: entries set and cleared one by one, written raw (as a guest driver would), and
    /// on a device detached meanwhile.
    #[test]
    fn teardown_finds_every_holder_and_only_holders() {
        let io = iommu();
        let (a, b, c) = (SID, SourceId::new(1, 0, 0), SourceId::new(2, 0, 0));
        for s in [a, b, c] {
            io.attach_device(s, DeviceOptions::default()).unwrap();
        }
        let root = io.table_pool().alloc(io.memory()).unwrap();
        let entry = PasidEntry::first_level(5, root);
        io.set_pasid_entry(a, 9, &entry).unwrap();
        io.set_pasid_entry(c, 9, &entry).unwrap();
        io.set_pasid_entry(b, 10, &entry).unwrap();
        io.clear_pasid_entry(c, 9).unwrap();
        assert_eq!(io.teardown_pasid(9), vec![a]);
        // A raw-written present entry is torn down too.
        io.write_pasid_entry_raw(c, 9, entry.to_raw()).unwrap();
        assert_eq!(io.teardown_pasid(9), vec![c]);
        // A detached device holds nothing; the others still hold theirs.
        io.set_pasid_entry(a, 10, &entry).unwrap();
        io.detach_device(b).unwrap();
        assert_eq!(io.teardown_pasid(10), vec![a]);
        assert!(io.teardown_pasid(10).is_empty());
        // Re-attached, it starts empty and is found once it holds the PASID again.
        io.attach_device(b, DeviceOptions::default()).unwrap();
        io.set_pasid_entry(b, 10, &entry).unwrap();
        assert_eq!(io.teardown_pasid(10), vec![b]);
    }
}
