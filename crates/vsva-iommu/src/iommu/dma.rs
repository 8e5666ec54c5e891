//! DMA on behalf of a device: [`Iommu::dma_read`] and [`Iommu::dma_write`] translate page by
//! page and copy to or from host memory.

use vsva_uapi::Errno;

use super::Iommu;
use crate::fault::{Access, Fault, SourceId};
use crate::memory::MemoryError;

/// A DMA helper failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DmaError {
    /// The translation faulted.
    #[error(transparent)]
    Fault(#[from] Fault),
    /// The translation succeeded but no host memory backs the output address.
    #[error("translated address {host_addr:#x} (iova {iova:#x}) is not backed by memory")]
    Unbacked {
        /// Input address.
        iova: u64,
        /// Output address.
        host_addr: u64,
    },
}

impl DmaError {
    /// The errno a uAPI caller sees: `EFAULT` (the device's access went nowhere).
    pub fn errno(&self) -> Errno {
        Errno::EFAULT
    }
}

impl Iommu {
    /// Moves `len` bytes at `iova` one translated page at a time, `op(host_addr, offset, n)`
    /// copying each piece; stops at the first fault or unbacked piece.
    fn dma(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        len: usize,
        write: bool,
        mut op: impl FnMut(u64, usize, usize) -> Result<(), MemoryError>,
    ) -> Result<(), DmaError> {
        let access = if write { Access::WRITE } else { Access::READ };
        let mut done = 0usize;
        while done < len {
            let va = iova.wrapping_add(done as u64);
            let t = self.translate(sid, pasid, va, access)?;
            let in_page = (t.page_size - (t.host_addr & (t.page_size - 1))) as usize;
            let n = in_page.min(len - done);
            op(t.host_addr, done, n).map_err(|_| DmaError::Unbacked {
                iova: va,
                host_addr: t.host_addr,
            })?;
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of DMA from `iova`, translating page by page (user read).
    ///
    /// # Errors
    ///
    /// [`DmaError::Fault`] when a page's translation faults (recorded in the fault log unless
    /// an FPD bit applies), [`DmaError::Unbacked`] when a translated page has no memory behind
    /// it. The pages before the failing one have been read into `buf` already, and part of the
    /// failing page may have been too; the rest of `buf` is unchanged. Translations that
    /// succeeded set accessed bits and may be cached, as on hardware.
    pub fn dma_read(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), DmaError> {
        let len = buf.len();
        self.dma(sid, pasid, iova, len, false, |hpa, off, n| {
            self.mem.read(hpa, &mut buf[off..off + n])
        })
    }

    /// Writes `buf` by DMA at `iova`, translating page by page (user write).
    ///
    /// # Errors
    ///
    /// [`DmaError::Fault`] when a page's translation faults (recorded in the fault log unless
    /// an FPD bit applies), [`DmaError::Unbacked`] when a translated page has no memory behind
    /// it. Nothing is undone: the pages before the failing one have been written, and part of
    /// the failing page may have been; their accessed and dirty bits are set.
    pub fn dma_write(
        &self,
        sid: SourceId,
        pasid: Option<u32>,
        iova: u64,
        buf: &[u8],
    ) -> Result<(), DmaError> {
        self.dma(sid, pasid, iova, buf.len(), true, |hpa, off, n| {
            self.mem.write(hpa, &buf[off..off + n])
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::iommu::test_support::*;

    #[test]
    fn dma_helpers_cross_pages() {
        let io = iommu();
        attach(&io, SID);
        let root = fl_pasid(&io, SID, 1, 1);
        map(&io, root, 0x1000, 0x30_0000, SIZE_4K, RW | US);
        map(&io, root, 0x2000, 0x10_0000, SIZE_4K, RW | US);
        map(&io, root, 0x3000, 0x7000_0000, SIZE_4K, RW | US); // not backed
        let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
        io.dma_write(SID, Some(1), 0x1100, &data).unwrap();
        let mut back = vec![0u8; 6000];
        io.dma_read(SID, Some(1), 0x1100, &mut back).unwrap();
        assert_eq!(back, data);
        let mut first = [0u8; 4];
        io.memory().read(0x30_0100, &mut first).unwrap();
        assert_eq!(first, [0, 1, 2, 3]);
        let mut split = [0u8; 2];
        io.memory().read(0x10_0000, &mut split).unwrap();
        assert_eq!(split, [(0xf00u32 & 0xff) as u8, 0x01]);
        assert!(matches!(
            io.dma_read(SID, Some(1), 0x3000, &mut first),
            Err(DmaError::Unbacked { iova: 0x3000, .. })
        ));
        assert!(matches!(
            io.dma_read(SID, Some(1), 0x4000, &mut first),
            Err(DmaError::Fault(Fault {
                reason: FaultReason::FirstLevelNotPresent,
                ..
            }))
        ));
    }
}
