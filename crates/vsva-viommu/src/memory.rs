//! Guest-physical memory as the virtual IOMMU reads and writes it (root, context and PASID
//! tables, the invalidation queue, wait status words, the page request queue), and its two
//! ready-made forms: a window of the software IOMMU's host memory (in process) and a
//! `vsva-client` memfd (remote).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

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
///
/// The mapping of guest RAM is resolved once, when the window is made: if all of `[base,
/// base + size)` lies in one region of the host memory then, every access of the window goes
/// to that region's mapping for the window's life, with no look-up of the host memory map
/// (the unit fetches a descriptor or a table entry on every guest operation). A later change
/// of the host memory map under the window (that region removed or replaced) is not seen by
/// it — a VMM does not change the memory under a running guest's RAM; build a new window
/// (and unit) if it does. When guest RAM does not lie in one region at creation, each access
/// looks the current host memory map up instead.
#[derive(Clone)]
pub struct HostWindow {
    iommu: Arc<Iommu>,
    base: u64,
    size: u64,
    /// The host memory map at creation, when one of its regions holds all of guest RAM.
    pinned: Option<Arc<GuestMemoryMmap>>,
}

impl fmt::Debug for HostWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostWindow")
            .field("base", &self.base)
            .field("size", &self.size)
            .field("pinned", &self.pinned.is_some())
            .finish()
    }
}

impl HostWindow {
    /// The window of `size` bytes at host address `base` of `iommu`'s memory.
    pub fn new(iommu: Arc<Iommu>, base: u64, size: u64) -> Self {
        let map = iommu.memory().snapshot_arc();
        let one_region = base.checked_add(size).is_some_and(|end| {
            map.find_region(GuestAddress(base))
                .is_some_and(|r| size > 0 && end <= r.start_addr().0 + r.len())
        });
        HostWindow {
            iommu,
            base,
            size,
            pinned: one_region.then_some(map),
        }
    }

    /// The pinned host memory map, or the current one when none is pinned.
    fn map(&self) -> Cow<'_, Arc<GuestMemoryMmap>> {
        match &self.pinned {
            Some(map) => Cow::Borrowed(map),
            None => Cow::Owned(self.iommu.memory().snapshot_arc()),
        }
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
        let err = GuestMemoryError {
            gpa,
            len: buf.len(),
        };
        self.map().read_slice(buf, GuestAddress(h)).map_err(|_| err)
    }

    /// Aligned reads are single loads (the byte path copies through vm-memory's slice
    /// iterator, several times the cost for 8 bytes).
    fn read_u64(&self, gpa: u64) -> Result<u64, GuestMemoryError> {
        let h = self.host(gpa, 8)?;
        let err = GuestMemoryError { gpa, len: 8 };
        self.map().load_entry(h).ok_or(err)
    }

    /// A run of aligned qwords (a descriptor, a PASID entry) is one bounds check and a copy
    /// with qword-sized volatile loads.
    fn read_qwords(&self, gpa: u64, out: &mut [u64]) -> Result<(), GuestMemoryError> {
        let len = 8 * out.len();
        let h = self.host(gpa, len)?;
        let err = GuestMemoryError { gpa, len };
        let map = self.map();
        let map: &GuestMemoryMmap = &map;
        if h.is_multiple_of(8) {
            if let Some(region) = map.find_region(GuestAddress(h)) {
                let off = MemoryRegionAddress(h - region.start_addr().0);
                if let Ok(slice) = region.get_slice(off, len) {
                    if slice.copy_to(out) == out.len() {
                        return Ok(());
                    }
                }
            }
        }
        let mut b = [0u8; 8];
        for (i, w) in out.iter_mut().enumerate() {
            map.read_slice(&mut b, GuestAddress(h + 8 * i as u64))
                .map_err(|_| err)?;
            *w = u64::from_le_bytes(b);
        }
        Ok(())
    }

    /// Aligned whole-qword writes (a page request descriptor, a wait status) are stores, as
    /// reads are loads.
    fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), GuestMemoryError> {
        let h = self.host(gpa, buf.len())?;
        let err = GuestMemoryError {
            gpa,
            len: buf.len(),
        };
        let map = self.map();
        let map: &GuestMemoryMmap = &map;
        if h.is_multiple_of(8) && buf.len().is_multiple_of(8) {
            for (i, chunk) in buf.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                if !store_entry(map, h + 8 * i as u64, u64::from_le_bytes(w)) {
                    return Err(err);
                }
            }
            return Ok(());
        }
        map.write_slice(buf, GuestAddress(h)).map_err(|_| err)
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
