//! The two [`TableStore`]s over an IOMMU's memory, for building first-level tables with
//! [`fl_map`](crate::paging::fl_map): [`HostTableStore`] (tables at host addresses, pages from
//! the IOMMU's table pool) and [`GuestTableStore`] (a guest's tables at guest-physical
//! addresses inside a window of host memory, as a VMM's guest builds them).

use crate::memory::{HostMemory, PAGE_SIZE};
use crate::paging::TableStore;
use crate::pool::TablePool;

/// A [`TableStore`] over host memory and a table pool (identity addresses): for building
/// first-level tables of first-level-only PASIDs, or any table at host addresses.
///
/// A read of an address with no memory returns 0 and a write there is dropped, like an access
/// to nowhere; table pages come from the pool, which is backed, so this never happens to them.
pub struct HostTableStore<'a> {
    mem: &'a HostMemory,
    pool: &'a TablePool,
}

impl<'a> HostTableStore<'a> {
    /// A store whose tables are pages of `pool`, read and written in `mem`.
    pub fn new(mem: &'a HostMemory, pool: &'a TablePool) -> Self {
        Self { mem, pool }
    }
}

impl TableStore for HostTableStore<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.pool.alloc(self.mem).ok()
    }
    fn read(&self, addr: u64) -> u64 {
        self.mem.load_u64(addr).unwrap_or(0)
    }
    fn write(&mut self, addr: u64, value: u64) {
        // Dropped when nothing backs `addr` (see the type's doc): not an error of the store.
        self.mem.store_u64(addr, value).ok();
    }
}

/// A [`TableStore`] for a guest's own tables: guest-physical address `gpa` lives at host
/// address `host_base + gpa`, and table pages are handed out upwards from a first
/// guest-physical address, each zeroed before use. Nested translation reaches these tables
/// through the stage-2 mapping the caller sets up for the same window.
///
/// The window must be backed: a read outside memory returns 0 and a write there is dropped
/// (both are debug assertions, so a test that strays fails loudly).
#[derive(Debug)]
pub struct GuestTableStore<'a> {
    mem: &'a HostMemory,
    host_base: u64,
    next: u64,
}

impl<'a> GuestTableStore<'a> {
    /// A store for the guest whose address 0 is host address `host_base` in `mem`, with table
    /// pages allocated from guest-physical `first_table` (4 KiB aligned) upwards.
    pub fn new(mem: &'a HostMemory, host_base: u64, first_table: u64) -> Self {
        Self {
            mem,
            host_base,
            next: first_table,
        }
    }

    /// The guest-physical address the next table page will get.
    pub fn next_table(&self) -> u64 {
        self.next
    }

    /// The host address of guest-physical `gpa`.
    pub fn host_address(&self, gpa: u64) -> u64 {
        self.host_base + gpa
    }
}

impl TableStore for GuestTableStore<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let gpa = self.next;
        self.mem.zero(self.host_address(gpa), PAGE_SIZE).ok()?;
        self.next += PAGE_SIZE;
        Some(gpa)
    }
    fn read(&self, addr: u64) -> u64 {
        let value = self.mem.load_u64(self.host_address(addr));
        debug_assert!(
            value.is_ok(),
            "guest table read at {addr:#x} outside memory"
        );
        value.unwrap_or(0)
    }
    fn write(&mut self, addr: u64, value: u64) {
        let stored = self.mem.store_u64(self.host_address(addr), value);
        debug_assert!(
            stored.is_ok(),
            "guest table write at {addr:#x} outside memory"
        );
    }
}
