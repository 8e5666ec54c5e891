//! The state behind the control lock: attached devices, context tables, stage-2 tables, and
//! which devices hold each PASID.

use rustc_hash::FxHashMap as HashMap;

use crate::fault::SourceId;

/// A device as attached: its PASID directory and tables.
pub(super) struct DeviceCtl {
    /// Host address of the PASID directory.
    pub(super) dir: u64,
    /// Pages of the PASID directory (contiguous from `dir`).
    pub(super) dir_pages: u64,
    /// First PASID the directory does not cover.
    pub(super) limit: u32,
    /// PASID tables by directory index (PASID >> 6).
    pub(super) tables: HashMap<u32, u64>,
    /// PASID used for requests without PASID.
    pub(super) rid_pasid: u32,
}

/// A stage-2 table and every page it uses.
pub(super) struct Stage2Ctl {
    pub(super) root: u64,
    pub(super) levels: u8,
    /// Every table page, the root included, freed when the table is destroyed.
    pub(super) pages: Vec<u64>,
}

/// Everything the control lock protects.
#[derive(Default)]
pub(super) struct Control {
    pub(super) devices: HashMap<SourceId, DeviceCtl>,
    /// Context tables by (bus, upper half of devfn).
    pub(super) ctx_tables: HashMap<(u8, bool), u64>,
    pub(super) stage2: HashMap<u32, Stage2Ctl>,
    pub(super) next_stage2: u32,
    /// For each PASID, the devices whose PASID table may hold a present entry for it: every
    /// device that does is listed (a device is added before its entry is written and removed
    /// only after the entry is cleared), so a PASID's teardown visits these and no other.
    pub(super) holders: HashMap<u32, Vec<SourceId>>,
}

impl Control {
    /// `sid` may hold a present entry for `pasid` from now on.
    pub(super) fn hold(&mut self, pasid: u32, sid: SourceId) {
        let list = self.holders.entry(pasid).or_default();
        if !list.contains(&sid) {
            list.push(sid);
        }
    }

    /// `sid` holds no present entry for `pasid` any more.
    pub(super) fn release(&mut self, pasid: u32, sid: SourceId) {
        if let Some(list) = self.holders.get_mut(&pasid) {
            list.retain(|&s| s != sid);
            if list.is_empty() {
                self.holders.remove(&pasid);
            }
        }
    }

    /// `sid` is gone: it holds nothing.
    pub(super) fn release_device(&mut self, sid: SourceId) {
        self.holders.retain(|_, list| {
            list.retain(|&s| s != sid);
            !list.is_empty()
        });
    }
}
