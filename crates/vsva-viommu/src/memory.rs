//! Guest-physical memory as the virtual IOMMU reads and writes it (root, context and PASID
//! tables, the invalidation queue, wait status words, the page request queue), and its two
//! ready-made forms: a window of the software IOMMU's host memory (in process) and a
//! `vsva-client` memfd (remote).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, VolatileMemory as _,
};

use vsva_iommu::memory::store_entry;
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

    /// Reads the four little-endian qwords of a 256-bit invalidation descriptor at `gpa`
    /// (what [`GuestMemory::read_qwords`] reads into four qwords, returned by value).
    ///
    /// # Errors
    ///
    /// As [`GuestMemory::read`]; nothing is returned then.
    fn read_descriptor(&self, gpa: u64) -> Result<[u64; 4], GuestMemoryError> {
        let mut q = [0u64; 4];
        self.read_qwords(gpa, &mut q)?;
        Ok(q)
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
    /// That region, held directly (no search or iteration of the map per access), and where
    /// guest-physical 0 lies in it.
    region: Option<Arc<GuestRegionMmap>>,
    ram_offset: u64,
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
        let holder = base.checked_add(size).and_then(|end| {
            map.iter()
                .map(|r| (r.start_addr(), r.len()))
                .find(|&(start, len)| size > 0 && start.0 <= base && end <= start.0 + len)
        });
        // The region's own `Arc`: the map hands it out when asked for a copy without it.
        let region = holder.and_then(|(start, len)| {
            let (_, region) = map.remove_region(start, len).ok()?;
            Some((region, start.0))
        });
        HostWindow {
            iommu,
            base,
            size,
            pinned: region.is_some().then_some(map),
            ram_offset: region.as_ref().map_or(0, |r| base - r.1),
            region: region.map(|r| r.0),
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

    /// `N` little-endian qwords at guest-physical `gpa` (a run the caller checked lies in
    /// the window) of the pinned region, read with one bounds check and one volatile load of
    /// the whole run (vm-memory's slice copy works element by element, several times the
    /// cost for a 32- or 64-byte run); `None` when nothing is pinned.
    #[inline]
    fn pinned_load<const N: usize>(&self, gpa: u64) -> Option<[u64; N]>
    where
        [u64; N]: ByteValued,
    {
        let region = self.region.as_ref()?;
        // No overflow: gpa + 8 N <= size, and ram_offset + size <= the region's length.
        let off = self.ram_offset + gpa;
        let run = region.get_ref::<[u64; N]>(off as usize).ok()?.load();
        Some(run.map(u64::from_le))
    }

    /// [`GuestMemory::read_u64`] outside the pinned region: through the host memory map.
    #[cold]
    #[inline(never)]
    fn read_u64_slow(&self, gpa: u64) -> Result<u64, GuestMemoryError> {
        let h = self.host(gpa, 8)?;
        let mut b = [0u8; 8];
        self.map()
            .read_slice(&mut b, GuestAddress(h))
            .map_err(|_| GuestMemoryError { gpa, len: 8 })?;
        Ok(u64::from_le_bytes(b))
    }

    /// [`GuestMemory::read_qwords`] outside the pinned region, or of another length: qword
    /// by qword through the host memory map.
    #[cold]
    #[inline(never)]
    fn read_qwords_slow(&self, gpa: u64, out: &mut [u64]) -> Result<(), GuestMemoryError> {
        let len = 8 * out.len();
        let h = self.host(gpa, len)?;
        let err = GuestMemoryError { gpa, len };
        let map = self.map();
        let mut b = [0u8; 8];
        for (i, w) in out.iter_mut().enumerate() {
            map.read_slice(&mut b, GuestAddress(h + 8 * i as u64))
                .map_err(|_| err)?;
            *w = u64::from_le_bytes(b);
        }
        Ok(())
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

    /// In the pinned region, one bounds check and a load; otherwise the byte path, out of
    /// line (so the common path saves no registers).
    fn read_u64(&self, gpa: u64) -> Result<u64, GuestMemoryError> {
        if self.host(gpa, 8).is_ok() {
            if let Some([w]) = self.pinned_load::<1>(gpa) {
                return Ok(w);
            }
        }
        self.read_u64_slow(gpa)
    }

    /// A descriptor (2 or 4 qwords) or a table line (8) in the pinned region is one bounds check
    /// and one volatile load of the whole run; other runs read qword by qword, out of line.
    fn read_qwords(&self, gpa: u64, out: &mut [u64]) -> Result<(), GuestMemoryError> {
        if self.host(gpa, 8 * out.len()).is_ok() {
            let whole = match out.len() {
                2 => self.pinned_load::<2>(gpa).map(|w| out.copy_from_slice(&w)),
                4 => self.pinned_load::<4>(gpa).map(|w| out.copy_from_slice(&w)),
                8 => self.pinned_load::<8>(gpa).map(|w| out.copy_from_slice(&w)),
                _ => None,
            };
            if whole.is_some() {
                return Ok(());
            }
        }
        self.read_qwords_slow(gpa, out)
    }

    /// In the pinned region, one bounds check and one load, with no length to dispatch on.
    fn read_descriptor(&self, gpa: u64) -> Result<[u64; 4], GuestMemoryError> {
        if self.host(gpa, 32).is_ok() {
            if let Some(q) = self.pinned_load::<4>(gpa) {
                return Ok(q);
            }
        }
        let mut q = [0u64; 4];
        self.read_qwords_slow(gpa, &mut q)?;
        Ok(q)
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

#[cfg(test)]
mod tests {
    use vsva_iommu::{HostMemory, IommuConfig};

    use super::*;

    const MB: u64 = 1 << 20;

    fn iommu(ranges: &[(u64, usize)]) -> Arc<Iommu> {
        let mem = HostMemory::anonymous(ranges).unwrap();
        Arc::new(Iommu::new(IommuConfig::default(), mem, 0, 4 * MB).unwrap())
    }

    /// Writes, then reads back through every access of the window.
    fn round_trip(w: &HostWindow) {
        w.write(
            0x1000,
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        )
        .unwrap();
        w.write(0x1010, &[0xaa; 3]).unwrap();
        assert_eq!(w.read_u64(0x1008).unwrap(), 0x100f_0e0d_0c0b_0a09);
        assert_eq!(w.read_u64(0x1004).unwrap(), 0x0c0b_0a09_0807_0605);
        let mut q = [0u64; 2];
        w.read_qwords(0x1000, &mut q).unwrap();
        assert_eq!(q, [0x0807_0605_0403_0201, 0x100f_0e0d_0c0b_0a09]);
        let mut four = [0u64; 4];
        w.read_qwords(0x1000, &mut four).unwrap();
        assert_eq!(w.read_descriptor(0x1000), Ok(four));
        assert_eq!(four[..2], q);
        let mut b = [0u8; 4];
        w.read(0x100f, &mut b).unwrap();
        assert_eq!(b, [16, 0xaa, 0xaa, 0xaa]);
        // Past the window: refused, whatever the host memory holds there.
        let end = w.size - 8;
        assert!(w.read_u64(end).is_ok());
        assert_eq!(
            w.read_u64(end + 8),
            Err(GuestMemoryError {
                gpa: end + 8,
                len: 8
            })
        );
        assert!(w.read_qwords(end, &mut q).is_err());
        assert!(w.read_descriptor(end - 16).is_err());
        assert!(w.read_descriptor(end - 24).is_ok());
        assert!(w.write(end + 4, &[0; 8]).is_err());
    }

    #[test]
    fn a_window_inside_one_region_reads_and_writes_that_region() {
        let io = iommu(&[(0, 32 * MB as usize)]);
        let w = HostWindow::new(io.clone(), 16 * MB, 8 * MB);
        assert!(w.pinned.is_some() && w.region.is_some());
        round_trip(&w);
        // The host sees the guest's bytes at base + gpa.
        assert_eq!(
            io.memory().load_u64(16 * MB + 0x1000).unwrap(),
            0x0807_0605_0403_0201
        );
    }

    #[test]
    fn a_window_inside_a_later_region_reads_and_writes_that_region() {
        let io = iommu(&[(0, 8 * MB as usize), (16 * MB, 16 * MB as usize)]);
        let w = HostWindow::new(io.clone(), 20 * MB, 8 * MB);
        assert!(w.pinned.is_some() && w.region.is_some());
        round_trip(&w);
        assert_eq!(
            io.memory().load_u64(20 * MB + 0x1000).unwrap(),
            0x0807_0605_0403_0201
        );
        // Straddling the two regions: not pinned, and the gap is refused.
        let w = HostWindow::new(io, 4 * MB, 16 * MB);
        assert!(w.pinned.is_none());
        assert!(w.read_u64(6 * MB).is_err());
    }

    #[test]
    fn a_window_over_memory_added_later_looks_the_map_up_on_each_access() {
        let io = iommu(&[(0, 8 * MB as usize)]);
        let w = HostWindow::new(io.clone(), 16 * MB, 8 * MB);
        assert!(w.pinned.is_none(), "guest RAM is not in host memory yet");
        assert!(w.read_u64(0).is_err());
        let ram = GuestRegionMmap::from_range(GuestAddress(16 * MB), 8 << 20, None).unwrap();
        io.memory().add_region(ram).unwrap();
        round_trip(&w);
    }
}
