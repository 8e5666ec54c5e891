//! Guest-physical memory as the virtual IOMMU reads and writes it (root, context and PASID
//! tables, the invalidation queue, wait status words, the page request queue), and its two
//! ready-made forms: a window of the software IOMMU's host memory (in process) and a
//! `vsva-client` memfd (remote).

use std::fmt;
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion, MemoryRegionAddress};

use vsva_iommu::memory::{store_entry, EntryMemory};
use vsva_iommu::Iommu;

/// A guest-physical address the VMM could not read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest-physical access of {len} bytes at {gpa:#x} failed")]
pub struct GuestMemoryError {
    /// Address of the access.
    pub gpa: u64,
    /// Its length.
    pub len: usize,
}

/// The guest's RAM, by guest-physical address.
pub trait GuestMemory: Send + Sync {
    /// Reads `buf.len()` bytes at `gpa`.
    ///
    /// # Errors
    ///
    /// [`GuestMemoryError`] when any byte is outside guest RAM; `buf` may be partly filled.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError>;

    /// Writes `buf` at `gpa`.
    ///
    /// # Errors
    ///
    /// [`GuestMemoryError`] when any byte is outside guest RAM; part of `buf` may have been
    /// written nevertheless.
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError>;

    /// Reads a little-endian u64 at `gpa`.
    ///
    /// # Errors
    ///
    /// As [`GuestMemory::read`].
    fn read_u64(&self, gpa: u64) -> Result<u64, GuestMemoryError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `out.len()` consecutive little-endian u64s at `gpa` (a queue descriptor, an
    /// entry of the guest's tables).
    ///
    /// # Errors
    ///
    /// As [`GuestMemory::read`]; `out` may be partly filled.
    fn read_qwords(&self, gpa: u64, out: &mut [u64]) -> Result<(), GuestMemoryError> {
        let mut b = [0u8; 8];
        for (i, w) in out.iter_mut().enumerate() {
            self.read(gpa + 8 * i as u64, &mut b)?;
            *w = u64::from_le_bytes(b);
        }
        Ok(())
    }
}

/// Guest RAM `[0, size)` placed at host address `base` of the software IOMMU's memory: what
/// `MAP_DMA` of guest-physical 0 to `vaddr = base` makes of it in process.
#[derive(Clone)]
pub struct HostWindow {
    iommu: Arc<Iommu>,
    base: u64,
    size: u64,
}

impl fmt::Debug for HostWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostWindow")
            .field("base", &self.base)
            .field("size", &self.size)
            .finish()
    }
}

impl HostWindow {
    /// The window of `size` bytes at host address `base` of `iommu`'s memory.
    pub fn new(iommu: Arc<Iommu>, base: u64, size: u64) -> Self {
        HostWindow { iommu, base, size }
    }

    fn host(&self, gpa: u64, len: usize) -> Result<u64, GuestMemoryError> {
        let err = GuestMemoryError { gpa, len };
        let end = gpa.checked_add(len as u64).ok_or(err)?;
        if end > self.size {
            return Err(err);
        }
        Ok(self.base + gpa)
    }
}

impl GuestMemory for HostWindow {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let h = self.host(gpa, buf.len())?;
        self.iommu
            .memory()
            .read(h, buf)
            .map_err(|_| GuestMemoryError {
                gpa,
                len: buf.len(),
            })
    }

    /// Aligned reads are single loads from one snapshot of the host memory map (the byte
    /// path copies through vm-memory's slice iterator, several times the cost for 8 bytes).
    fn read_u64(&self, gpa: u64) -> Result<u64, GuestMemoryError> {
        let mut w = [0u64; 1];
        self.read_qwords(gpa, &mut w)?;
        Ok(w[0])
    }

    fn read_qwords(&self, gpa: u64, out: &mut [u64]) -> Result<(), GuestMemoryError> {
        let len = 8 * out.len();
        let h = self.host(gpa, len)?;
        let err = GuestMemoryError { gpa, len };
        if !h.is_multiple_of(8) {
            let mut b = [0u8; 8];
            for (i, w) in out.iter_mut().enumerate() {
                self.iommu
                    .memory()
                    .read(h + 8 * i as u64, &mut b)
                    .map_err(|_| err)?;
                *w = u64::from_le_bytes(b);
            }
            return Ok(());
        }
        let snapshot = self.iommu.memory().snapshot();
        // One region lookup for the whole run of qwords when it lies in one region (a
        // descriptor, a PASID entry always does), a lookup per qword otherwise.
        if let Some(region) = snapshot.find_region(GuestAddress(h)) {
            let off = MemoryRegionAddress(h - region.start_addr().0);
            if let Ok(slice) = region.get_slice(off, len) {
                // One bounds check for the run; vm-memory copies aligned data with volatile
                // qword-sized accesses.
                if slice.copy_to(out) == out.len() {
                    return Ok(());
                }
            }
        }
        for (i, w) in out.iter_mut().enumerate() {
            *w = snapshot.load_entry(h + 8 * i as u64).ok_or(err)?;
        }
        Ok(())
    }

    /// Aligned whole-qword writes (a page request descriptor, a guest's own table entry) are
    /// stores into one snapshot, as reads are.
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError> {
        let h = self.host(gpa, buf.len())?;
        if h.is_multiple_of(8) && buf.len().is_multiple_of(8) {
            let snapshot = self.iommu.memory().snapshot();
            for (i, chunk) in buf.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                if !store_entry(&snapshot, h + 8 * i as u64, u64::from_le_bytes(w)) {
                    return Err(GuestMemoryError {
                        gpa,
                        len: buf.len(),
                    });
                }
            }
            return Ok(());
        }
        self.iommu
            .memory()
            .write(h, buf)
            .map_err(|_| GuestMemoryError {
                gpa,
                len: buf.len(),
            })
    }
}

impl GuestMemory for vsva_client::GuestMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        vsva_client::GuestMemory::read(self, gpa, buf).map_err(|_| GuestMemoryError {
            gpa,
            len: buf.len(),
        })
    }

    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError> {
        vsva_client::GuestMemory::write(self, gpa, buf).map_err(|_| GuestMemoryError {
            gpa,
            len: buf.len(),
        })
    }
}
