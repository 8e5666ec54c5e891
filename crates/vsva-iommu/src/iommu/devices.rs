//! Device attachment: the scalable-mode context entry and the PASID directory of a device.

use std::sync::atomic::Ordering;

use rustc_hash::FxHashMap as HashMap;

use super::control::DeviceCtl;
use super::error::IommuError;
use super::invalidation::device_request;
use super::Iommu;
use crate::context::{pasid_at, pasid_entry_address, ContextEntry, RootEntry, PASID_TABLE_ENTRIES};
use crate::fault::SourceId;
use crate::invalidate::{ContextCacheScope, Invalidation};
use crate::memory::PAGE_SIZE;
use crate::pasid_entry::{pasid_get_domain_id, pasid_pte_get_pgtt, pasid_pte_is_present};

/// How a device is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceOptions {
    /// Number of PASIDs the PASID directory covers (rounded up to a power of two, ≥ 8192).
    pub pasids: u32,
    /// PASID used for requests without PASID.
    pub rid_pasid: u32,
    /// Requests without PASID are privileged.
    pub rid_priv: bool,
    /// The device has a device TLB (ATS): translations are cached in it. Attach writes it as
    /// the context entry's DTE; translation requests then follow DTE as it is in memory.
    pub ats: bool,
    /// The device may send page requests (PRI). Attach writes it as the context entry's PRE;
    /// page requests then follow PRE as it is in memory.
    pub pri: bool,
    /// Fault processing disable for the whole device.
    pub fpd: bool,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            pasids: 1 << 20,
            rid_pasid: 0,
            rid_priv: false,
            ats: false,
            pri: false,
            fpd: false,
        }
    }
}

impl Iommu {
    /// Attaches a device: writes its scalable-mode context entry (PASID enabled, a new PASID
    /// directory of `opts.pasids` PASIDs), creating the context table if needed.
    ///
    /// # Errors
    ///
    /// A bad option ([`IommuError::DeviceOption`]) or an attached device changes nothing. When
    /// the table pool runs out, the device stays detached; a context table created for its bus
    /// half on the way stays linked from the root table, for later attaches to use.
    pub fn attach_device(&self, sid: SourceId, opts: DeviceOptions) -> Result<(), IommuError> {
        let limit_all = 1u32 << self.cfg.pasid_bits;
        if opts.pasids == 0 || opts.pasids > 1 << 20 {
            return Err(IommuError::DeviceOption {
                field: "pasids",
                value: u64::from(opts.pasids),
                expected: "1..=2^20",
            });
        }
        if opts.rid_pasid >= limit_all {
            return Err(IommuError::DeviceOption {
                field: "rid_pasid",
                value: u64::from(opts.rid_pasid),
                expected: "below 2^pasid_bits",
            });
        }
        if opts.ats && !self.cfg.device_tlb {
            return Err(IommuError::DeviceOption {
                field: "ats",
                value: 1,
                expected: "false: the IOMMU has no device-TLB support (ECAP.DT)",
            });
        }
        if opts.pri && !self.cfg.prs {
            return Err(IommuError::DeviceOption {
                field: "pri",
                value: 1,
                expected: "false: the IOMMU has no page-request support (ECAP.PRS)",
            });
        }
        let mut ctl = self.control();
        if ctl.devices.contains_key(&sid) {
            return Err(IommuError::AlreadyAttached { source_id: sid });
        }
        let upper = sid.devfn() >= 128;
        let ct = match ctl.ctx_tables.get(&(sid.bus(), upper)) {
            Some(&t) => t,
            None => {
                let t = self.pool.alloc(&self.mem)?;
                let re = RootEntry::half_address(self.root_table_address(), sid.bus(), sid.devfn());
                self.mem.store_u64(re, RootEntry::encode_half(t))?;
                ctl.ctx_tables.insert((sid.bus(), upper), t);
                t
            }
        };
        let pdts = ContextEntry::pdts_for(opts.pasids);
        let ctx = ContextEntry {
            fpd: opts.fpd,
            dte: opts.ats,
            pasid_enable: true,
            pre: opts.pri,
            pdts,
            pasid_dir: 0,
            rid_pasid: opts.rid_pasid,
            rid_priv: opts.rid_priv,
        };
        let dir_bytes = u64::from(ctx.dir_entries()) * 8;
        let dir_pages = dir_bytes.div_ceil(PAGE_SIZE);
        let dir = self.pool.alloc_contiguous(&self.mem, dir_pages)?;
        let ctx = ContextEntry {
            pasid_dir: dir,
            ..ctx
        };
        let ce = ContextEntry::address(ct, sid.devfn());
        let raw = ctx.to_raw();
        for i in (0..4).rev() {
            self.mem.store_u64(ce + 8 * i as u64, raw[i])?;
        }
        self.ats[usize::from(sid.0)].store(opts.ats, Ordering::Release);
        if opts.ats {
            // Whatever the front cache still holds of this device (it is looked in without a
            // test of the flag, see `front_fill_epoch`) is retired, after the flag is set.
            self.caches.retire_front();
        }
        // A device attached anew has been reset: a fence ends, its cache starts empty.
        self.unfence(sid);
        ctl.devices.insert(
            sid,
            DeviceCtl {
                dir,
                dir_pages,
                limit: ctx.pasid_limit().min(limit_all),
                tables: HashMap::default(),
                rid_pasid: opts.rid_pasid,
            },
        );
        Ok(())
    }

    /// Detaches a device: clears its context entry, frees its PASID directory and tables, and
    /// flushes the context cache, the PASID cache and IOTLB entries of its present PASIDs, and
    /// its device TLB.
    ///
    /// # Errors
    ///
    /// [`IommuError::NotAttached`] changes nothing. A memory error on the IOMMU's own table
    /// pages (which the pool keeps backed) stops the teardown part-way: the device is detached
    /// by then and its context entry cleared, and the pages not yet freed stay allocated.
    pub fn detach_device(&self, sid: SourceId) -> Result<(), IommuError> {
        let mut ctl = self.control();
        let dev = ctl
            .devices
            .remove(&sid)
            .ok_or(IommuError::NotAttached { source_id: sid })?;
        ctl.release_device(sid);
        let upper = sid.devfn() >= 128;
        if let Some(&ct) = ctl.ctx_tables.get(&(sid.bus(), upper)) {
            self.mem
                .store_u64(ContextEntry::address(ct, sid.devfn()), 0)?;
        }
        self.apply(&Invalidation::ContextCache(ContextCacheScope::Device {
            source_id: sid,
        }));
        let mut devices = Vec::new();
        let mut tables: Vec<_> = dev.tables.iter().map(|(&i, &t)| (i, t)).collect();
        tables.sort_unstable();
        for (idx, table) in tables {
            for slot in 0..PASID_TABLE_ENTRIES {
                let pasid = pasid_at(idx, slot);
                let addr = pasid_entry_address(table, pasid);
                let v0 = self.mem.load_u64(addr)?;
                if pasid_pte_is_present(v0) {
                    let did = pasid_get_domain_id(self.mem.load_u64(addr + 8)?);
                    let pgtt = pasid_pte_get_pgtt(v0);
                    self.flush_pasid(sid, pasid, did, pgtt, dev.rid_pasid, &mut devices);
                }
            }
            self.pool.free(table)?;
        }
        for i in 0..dev.dir_pages {
            self.pool.free(dev.dir + i * PAGE_SIZE)?;
        }
        let all = Invalidation::DeviceTlbAll { source_id: sid };
        self.apply(&all);
        devices.extend(device_request(&all));
        self.ats[usize::from(sid.0)].store(false, Ordering::Release);
        // The device's own cache: everything it may hold, in one call of the sink, waited
        // for without the control lock so other callers are not held up by a slow device.
        drop(ctl);
        self.devtlb_notify(&devices);
        Ok(())
    }

    /// The attached devices, in source-id order.
    pub fn devices(&self) -> Vec<SourceId> {
        let mut v: Vec<_> = self.control().devices.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn attach_detach_and_errors() {
        let io = iommu();
        attach(&io, SID);
        assert_eq!(
            io.attach_device(SID, DeviceOptions::default()),
            Err(IommuError::AlreadyAttached { source_id: SID })
        );
        let root = fl_pasid(&io, SID, 1, 1);
        assert_eq!(
            io.set_pasid_entry(SID, 1, &PasidEntry::first_level(1, root)),
            Err(IommuError::PasidEntryPresent {
                source_id: SID,
                pasid: 1
            })
        );
        assert!(matches!(
            io.set_pasid_entry(SID, 1 << 20, &PasidEntry::first_level(1, root)),
            Err(IommuError::PasidOutOfRange { .. })
        ));
        assert!(matches!(
            io.set_pasid_entry(SID, 2, &PasidEntry::first_level(1, 1 << 50)),
            Err(IommuError::PasidEntry(_))
        ));
        assert_eq!(
            io.clear_pasid_entry(SID, 2),
            Err(IommuError::PasidEntryAbsent {
                source_id: SID,
                pasid: 2
            })
        );
        let pages = io.table_pool().allocated();
        io.detach_device(SID).unwrap();
        assert!(
            io.table_pool().allocated() < pages,
            "directory and tables freed"
        );
        assert_eq!(
            reason(io.translate(SID, Some(1), 0, Access::READ)),
            FaultReason::ContextEntryNotPresent
        );
        assert_eq!(
            io.detach_device(SID),
            Err(IommuError::NotAttached { source_id: SID })
        );
        assert!(io.devices().is_empty());
        assert!(matches!(
            io.attach_device(
                SID,
                DeviceOptions {
                    pasids: 0,
                    ..DeviceOptions::default()
                }
            ),
            Err(IommuError::DeviceOption {
                field: "pasids",
                ..
            })
        ));
    }
}
