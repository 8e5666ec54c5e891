//! Guest memory a process shares by file descriptor: registering and unregistering it, and
//! rewriting a MAP_DMA `vaddr` into where that memory sits in the IOMMU's host memory.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap};
use vsva_proto::{Errno, Reply};
use vsva_uapi::vfio::{VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE};

use super::process::{Process, Region};
use super::{lock, revoked, Daemon};

impl Daemon {
    pub(super) fn mem_register(
        &self,
        p: &Arc<Process>,
        addr: u64,
        size: u64,
        offset: u64,
        fd: OwnedFd,
    ) -> Reply {
        let limits = &self.settings.limits;
        for (field, v) in [("addr", addr), ("size", size), ("offset", offset)] {
            if v % 4096 != 0 {
                return Reply::error(
                    Errno::EINVAL,
                    format!("mem_register {field} {v:#x} is not a multiple of 4096"),
                );
            }
        }
        if size == 0 {
            return Reply::error(
                Errno::EINVAL,
                "mem_register size 0: a region needs at least one page",
            );
        }
        let Some(end) = addr.checked_add(size) else {
            return Reply::error(
                Errno::EINVAL,
                format!("mem_register addr {addr:#x} + size {size:#x} wraps around"),
            );
        };
        let max_bytes = limits.max_memory_mib_per_process << 20;
        // The fd must be sealed against shrinking, or the client could truncate it under the
        // daemon's mapping and crash it with SIGBUS.
        match rustix::fs::fcntl_get_seals(&fd) {
            Ok(seals) if seals.contains(rustix::fs::SealFlags::SHRINK) => {}
            Ok(_) => {
                return Reply::error(Errno::EINVAL, "mem_register fd is not sealed with F_SEAL_SHRINK: use a memfd with that seal")
            }
            Err(e) => {
                return Reply::error(Errno::EINVAL, format!("mem_register fd cannot be sealed ({e}): it must be a memfd sealed with F_SEAL_SHRINK"))
            }
        }
        let file_len = match rustix::fs::fstat(&fd) {
            Ok(st) => st.st_size as u64,
            Err(e) => {
                return Reply::error(Errno::EBADF, format!("mem_register fd: fstat failed: {e}"))
            }
        };
        if offset.checked_add(size).is_none_or(|e| e > file_len) {
            return Reply::error(
                Errno::EINVAL,
                format!("mem_register offset {offset:#x} + size {size:#x} is past the end of the {file_len:#x}-byte file"),
            );
        }
        let mut st = lock(&p.state);
        if st.revoked {
            return revoked(p);
        }
        if st.regions.len() >= limits.max_regions_per_process as usize {
            return Reply::error(
                Errno::ENOSPC,
                format!(
                    "the process already has {} regions (limits.max_regions_per_process)",
                    st.regions.len()
                ),
            );
        }
        if st.memory_bytes.saturating_add(size) > max_bytes {
            return Reply::error(
                Errno::ENOSPC,
                format!(
                    "{size:#x} more bytes would exceed limits.max_memory_mib_per_process = {}",
                    limits.max_memory_mib_per_process
                ),
            );
        }
        if let Some(r) = st
            .regions
            .iter()
            .find(|r| addr < r.addr + r.size && r.addr < end)
        {
            return Reply::error(
                Errno::EEXIST,
                format!(
                    "mem_register [{addr:#x}, {end:#x}) overlaps region {} at [{:#x}, {:#x})",
                    r.id,
                    r.addr,
                    r.addr + r.size
                ),
            );
        }
        let Some(hpa) = lock(&self.hpa).alloc(size) else {
            return Reply::error(
                Errno::ENOMEM,
                "the host-physical address space for guest memory is exhausted",
            );
        };
        let Ok(len) = usize::try_from(size) else {
            return Reply::error(
                Errno::EINVAL,
                format!("mem_register size {size:#x} is too large"),
            );
        };
        // A copy of the descriptor for device processes; without one, DEVICE_OPEN hands the
        // region to no device.
        let shared = match fd.try_clone() {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep a copy of a region's descriptor");
                None
            }
        };
        let region = match GuestRegionMmap::from_range(
            GuestAddress(hpa),
            len,
            Some(FileOffset::new(File::from(fd), offset)),
        ) {
            Ok(r) => r,
            Err(e) => {
                return Reply::error(
                    Errno::ENOMEM,
                    format!("mem_register: cannot map the fd: {e}"),
                )
            }
        };
        let total = limits.max_memory_mib_total << 20;
        if self
            .registered_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(size).filter(|&n| n <= total)
            })
            .is_err()
        {
            return Reply::error(
                Errno::ENOSPC,
                format!(
                    "{size:#x} more bytes would exceed limits.max_memory_mib_total = {}",
                    limits.max_memory_mib_total
                ),
            );
        }
        if let Err(e) = self.vfio.iommu().memory().add_region(region) {
            self.registered_bytes.fetch_sub(size, Ordering::AcqRel);
            return Reply::error(Errno::ENOMEM, format!("mem_register: {e}"));
        }
        let id = st.next_region;
        st.next_region += 1;
        st.regions.push(Region {
            id,
            addr,
            size,
            hpa,
            offset,
            file: shared,
        });
        st.memory_bytes += size;
        tracing::debug!(
            pid = p.token.pid(),
            id,
            addr,
            size,
            hpa,
            "guest memory registered"
        );
        Reply::ok(id.into(), Vec::new())
    }

    /// Takes a region out of the IOMMU's memory: later DMA to it fails, and its mapping
    /// (with the process's fd) closes once running accesses finish. Its host-physical range
    /// is never handed out again, so stale stage-2 mappings of it cannot reach other memory.
    pub(super) fn remove_region(&self, r: &Region) {
        if let Err(e) = self.vfio.iommu().memory().remove_region(r.hpa, r.size) {
            // Every registered region was added at exactly this range.
            tracing::error!(id = r.id, hpa = r.hpa, size = r.size, error = %e, "region removal failed");
            debug_assert!(false, "region {} removal failed: {e}", r.id);
        }
        self.registered_bytes.fetch_sub(r.size, Ordering::AcqRel);
    }

    pub(super) fn mem_unregister(&self, p: &Arc<Process>, region: u32) -> Reply {
        let mut st = lock(&p.state);
        match st.regions.iter().position(|r| r.id == region) {
            Some(i) => {
                let r = st.regions.remove(i);
                st.memory_bytes -= r.size;
                self.remove_region(&r);
                Reply::ok(0, Vec::new())
            }
            None => Reply::error(
                Errno::ENOENT,
                format!("region {region} is not registered by this process"),
            ),
        }
    }
}

/// Rewrites a MAP_DMA argument's `vaddr` (the process's name for its memory) to where that
/// memory sits in the IOMMU's host memory, as the kernel pins a process's pages. Arguments that
/// the VFIO layer refuses anyway (too short, bad argsz, bad flags, size 0 or unaligned) are
/// left alone so its errors come out in the kernel's order; a well-formed mapping of memory
/// the process did not register is `EFAULT`, as `vaddr_get_pfn` failing is.
pub(super) fn translate_map_dma(regions: &[Region], arg: &mut [u8]) -> Result<(), Reply> {
    if arg.len() < 32 {
        return Ok(());
    }
    let u32_at = |a: &[u8], o: usize| u32::from_le_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
    let u64_at = |a: &[u8], o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&a[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let argsz = u32_at(arg, 0) as usize;
    let flags = u32_at(arg, 4);
    let rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    if argsz < 32 || argsz > arg.len() || flags & !rw != 0 || flags & rw == 0 {
        return Ok(());
    }
    let (vaddr, size) = (u64_at(arg, 8), u64_at(arg, 24));
    if size == 0 || size % 4096 != 0 || vaddr % 4096 != 0 {
        return Ok(());
    }
    let region = vaddr.checked_add(size).and_then(|end| {
        regions
            .iter()
            .find(|r| r.addr <= vaddr && end <= r.addr + r.size)
    });
    match region {
        Some(r) => {
            let hpa = r.hpa + (vaddr - r.addr);
            arg[8..16].copy_from_slice(&hpa.to_le_bytes());
            Ok(())
        }
        None => Err(Reply::error(
            Errno::EFAULT,
            format!(
                "vaddr {vaddr:#x} size {size:#x}: not inside guest memory this process registered"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_arg(flags: u32, vaddr: u64, iova: u64, size: u64) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&32u32.to_le_bytes());
        a.extend_from_slice(&flags.to_le_bytes());
        a.extend_from_slice(&vaddr.to_le_bytes());
        a.extend_from_slice(&iova.to_le_bytes());
        a.extend_from_slice(&size.to_le_bytes());
        a
    }

    #[test]
    fn map_dma_vaddr_is_translated_into_the_region() {
        let regions = [Region {
            id: 1,
            addr: 0x10_0000,
            size: 0x20_0000,
            hpa: 0x4000_0000,
            offset: 0,
            file: None,
        }];
        let mut a = map_arg(3, 0x11_0000, 0, 0x1000);
        translate_map_dma(&regions, &mut a).unwrap();
        assert_eq!(
            u64::from_le_bytes(a[8..16].try_into().unwrap()),
            0x4001_0000
        );
        // Past the end of the region: EFAULT, argument untouched.
        let mut a = map_arg(3, 0x2f_f000, 0, 0x2000);
        let r = translate_map_dma(&regions, &mut a).unwrap_err();
        assert_eq!(r.errno(), Some(Errno::EFAULT));
        // Malformed arguments pass through for the VFIO layer to refuse in its order.
        for mut a in [
            map_arg(0, 0x11_0000, 0, 0x1000),
            map_arg(3, 0x11_0000, 0, 0),
            map_arg(3, 0x11_0800, 0, 0x1000),
            vec![0; 16],
        ] {
            let before = a.clone();
            translate_map_dma(&regions, &mut a).unwrap();
            assert_eq!(a, before);
        }
    }
}
