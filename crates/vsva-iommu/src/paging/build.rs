//! Building first-level tables in a [`TableStore`] (guests, tests, tools): `fl_map`.

use super::*;

/// Where a table builder keeps its tables: allocates zeroed table pages and reads/writes
/// entries. Addresses are those the tables name (guest-physical for a guest's first level).
pub trait TableStore {
    /// A new zeroed 4 KiB table page, or `None` when out of pages.
    fn alloc_table(&mut self) -> Option<u64>;
    /// The 64-bit entry at `addr` (the store decides what an unbacked address reads as).
    fn read(&self, addr: u64) -> u64;
    /// Stores the 64-bit entry `value` at `addr`.
    fn write(&mut self, addr: u64, value: u64);
}

/// Why a mapping could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Address or size not aligned to the page size.
    #[error("address {addr:#x} is not aligned to page size {size:#x}")]
    Unaligned {
        /// The address.
        addr: u64,
        /// The page size.
        size: u64,
    },
    /// Page size other than 4 KiB, 2 MiB, 1 GiB.
    #[error("unsupported page size {size:#x}")]
    BadSize {
        /// The size asked for.
        size: u64,
    },
    /// Something is already mapped there.
    #[error("address {addr:#x} overlaps an existing mapping at level {level}")]
    Overlap {
        /// The address.
        addr: u64,
        /// Level where the conflict was found.
        level: u8,
    },
    /// The table store is out of pages.
    #[error("no table page available")]
    NoTablePage,
}

/// Maps one page in an x86-64 first-level table: `leaf_flags` are the leaf's bits other than
/// the address and P/PS (e.g. `RW | US | XD`). Missing intermediate tables are created with
/// `P | RW | US` so the leaf's bits decide.
pub fn fl_map<S: TableStore + ?Sized>(
    store: &mut S,
    root: u64,
    levels: u8,
    va: u64,
    pa: u64,
    size: u64,
    leaf_flags: u64,
) -> Result<(), BuildError> {
    let leaf_level = match size {
        SIZE_4K => 1,
        SIZE_2M => 2,
        SIZE_1G => 3,
        _ => return Err(BuildError::BadSize { size }),
    };
    for a in [va, pa] {
        if a & (size - 1) != 0 {
            return Err(BuildError::Unaligned { addr: a, size });
        }
    }
    let mut table = root;
    let mut level = levels;
    while level > leaf_level {
        let addr = table + level_index(va, level) * 8;
        let e = store.read(addr);
        if e & P == 0 {
            let t = store.alloc_table().ok_or(BuildError::NoTablePage)?;
            store.write(addr, t | P | RW | US);
            table = t;
        } else if e & PS != 0 && level <= 3 {
            return Err(BuildError::Overlap { addr: va, level });
        } else {
            table = e & ADDR_MASK;
        }
        level -= 1;
    }
    let addr = table + level_index(va, level) * 8;
    if store.read(addr) & P != 0 {
        return Err(BuildError::Overlap { addr: va, level });
    }
    let ps = if leaf_level > 1 { PS } else { 0 };
    store.write(addr, pa | P | ps | (leaf_flags & !(ADDR_MASK | P | PS)));
    Ok(())
}
