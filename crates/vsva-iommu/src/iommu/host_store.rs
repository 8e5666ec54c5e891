//! [`HostTableStore`]: a table store over host memory and the IOMMU's table pool.

use crate::memory::{HostMemory, TablePool};
use crate::paging::TableStore;

/// A [`TableStore`] over host memory and the IOMMU's table pool (identity addresses): for
/// building first-level tables of first-level-only PASIDs, or any table at host addresses.
pub struct HostTableStore<'a> {
    pub(super) mem: &'a HostMemory,
    pub(super) pool: &'a TablePool,
}

impl TableStore for HostTableStore<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.pool.alloc(self.mem).ok()
    }
    fn read(&self, addr: u64) -> u64 {
        self.mem.load_u64(addr).unwrap_or(0)
    }
    fn write(&mut self, addr: u64, value: u64) {
        // Table pages come from the pool, which is backed: a failure cannot happen for them;
        // for other addresses the write is dropped, like a write to nowhere.
        let _ = self.mem.store_u64(addr, value);
    }
}
