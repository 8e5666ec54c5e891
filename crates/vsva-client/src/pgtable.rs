//! Building x86-64 first-level page tables in guest memory, as a guest kernel would, for a
//! PASID bound with `BIND_PGTBL`.

use std::io;

use crate::memory::GuestMemory;

/// Entry bit 0, Present: the entry maps something.
pub const P: u64 = 1 << 0;
/// Entry bit 1, R/W: writes are allowed.
pub const RW: u64 = 1 << 1;
/// Entry bit 2, U/S: user-mode accesses are allowed.
pub const US: u64 = 1 << 2;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A 4- or 5-level page table whose pages come from a pool of guest memory.
#[derive(Debug)]
pub struct PageTables<'a> {
    mem: &'a GuestMemory,
    next: u64,
    end: u64,
    root: u64,
    levels: u8,
}

impl<'a> PageTables<'a> {
    /// A table with `levels` (4 or 5) levels whose pages are taken from
    /// `[pool, pool + pool_size)` of `mem` (zeroed first).
    pub fn new(mem: &'a GuestMemory, pool: u64, pool_size: u64, levels: u8) -> io::Result<Self> {
        if levels != 4 && levels != 5 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("levels {levels}: must be 4 or 5"),
            ));
        }
        mem.write(pool, &vec![0u8; pool_size as usize])?;
        let mut t = PageTables {
            mem,
            next: pool,
            end: pool + pool_size,
            root: 0,
            levels,
        };
        t.root = t.page()?;
        Ok(t)
    }

    fn page(&mut self) -> io::Result<u64> {
        if self.next + 4096 > self.end {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the page-table pool is full",
            ));
        }
        let p = self.next;
        self.next += 4096;
        Ok(p)
    }

    /// Guest-physical address of the root table (the `gpgd` of a bind).
    pub fn root(&self) -> u64 {
        self.root
    }

    fn index(&self, va: u64, level: u8) -> u64 {
        (va >> (12 + 9 * (u64::from(level) - 1))) & 0x1ff
    }

    /// Maps the 4 KiB page at `va` to guest-physical `pa` with leaf `flags` (e.g.
    /// `P | RW | US`); missing tables are created.
    pub fn map(&mut self, va: u64, pa: u64, flags: u64) -> io::Result<()> {
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let slot = table + 8 * self.index(va, level);
            let e = self.mem.read_u64(slot)?;
            table = if e & P != 0 {
                e & ADDR_MASK
            } else {
                let next = self.page()?;
                self.mem.write_u64(slot, next | P | RW | US)?;
                next
            };
        }
        self.mem
            .write_u64(table + 8 * self.index(va, 1), (pa & ADDR_MASK) | flags)
    }

    /// Clears the leaf entry of `va`; returns whether it was present. (The IOMMU may still
    /// use a cached translation until it is invalidated.)
    pub fn unmap(&mut self, va: u64) -> io::Result<bool> {
        let mut table = self.root;
        for level in (2..=self.levels).rev() {
            let e = self.mem.read_u64(table + 8 * self.index(va, level))?;
            if e & P == 0 {
                return Ok(false);
            }
            table = e & ADDR_MASK;
        }
        let slot = table + 8 * self.index(va, 1);
        let was = self.mem.read_u64(slot)? & P != 0;
        self.mem.write_u64(slot, 0)?;
        Ok(was)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_writes_a_walkable_table() {
        let mem = GuestMemory::new(0, 1 << 20).unwrap();
        let mut t = PageTables::new(&mem, 0x1_0000, 0x1_0000, 4).unwrap();
        let va = 0x7f12_3456_7000;
        t.map(va, 0x8_0000, P | RW | US).unwrap();
        // Walk it by hand.
        let mut table = t.root();
        for level in (2..=4u8).rev() {
            let e = mem
                .read_u64(table + 8 * ((va >> (12 + 9 * (u64::from(level) - 1))) & 0x1ff))
                .unwrap();
            assert_eq!(e & 7, 7);
            table = e & ADDR_MASK;
        }
        assert_eq!(
            mem.read_u64(table + 8 * ((va >> 12) & 0x1ff)).unwrap(),
            0x8_0000 | 7
        );
        assert!(t.unmap(va).unwrap());
        assert!(!t.unmap(va).unwrap());
        assert!(PageTables::new(&mem, 0, 4096, 3).is_err());
    }
}
