//! The state behind the control lock: attached devices, context tables and stage-2 tables.

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
}
