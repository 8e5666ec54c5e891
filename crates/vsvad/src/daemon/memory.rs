//! Guest memory a process shares by file descriptor: registering and unregistering it, and
//! rewriting a MAP_DMA `vaddr` (or IOAS_MAP `user_va`) into where that memory sits in the IOMMU's host memory.

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
        // The host address keeps `addr`'s low bits up to 2 MiB, so an unfixed IOAS_MAP of
        // this memory picks the IOVA Linux picks for the process's own `user_va`.
        let Some(hpa) = lock(&self.hpa).alloc(size, addr) else {
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

/// Where an address naming memory the process did not register is pointed instead: no host
/// memory ever lies there (the IOMMU's table pool and guest memory sit below 2^52), so the
/// front end refuses the map at its pin step with `EFAULT`, after every check the kernel makes
/// before pinning (flags, overflow, the container's IOMMU, the IOAS, IOVA conflicts). The low
/// [`KEPT_LOW_BITS`] of the caller's address are kept, so those checks see its alignment.
pub(super) const UNBACKED: u64 = 1 << 63;

/// The low bits of an unregistered address kept in its [`UNBACKED`] stand-in: the page offset
/// (an unaligned address is refused as one) and the rest up to 2 MiB, the most alignment
/// Linux's `iopt_alloc_iova` takes from the user address (`HPAGE_SIZE`) when it picks an
/// IOVA for an `IOMMU_IOAS_MAP` without `FIXED_IOVA`. A registered region's host address
/// keeps the same bits ([`crate::machine::REGION_ALIGN`]).
const KEPT_LOW_BITS: u64 = vsva_iommufd::IOVA_ALIGNMENT_MAX - 1;

/// A map naming memory the process did not register: what the caller named, for the message
/// of the `EFAULT` the front end answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unregistered {
    /// The field: `vaddr` or `user_va`.
    pub field: &'static str,
    /// The caller's address.
    pub addr: u64,
    /// The caller's length.
    pub len: u64,
}

impl Unregistered {
    /// The reply for the front end's answer: its `EFAULT` (the failed pin) names the caller's
    /// address instead of [`UNBACKED`]; any other answer is kept.
    pub fn explain(&self, reply: Reply) -> Reply {
        if reply.errno() != Some(Errno::EFAULT) {
            return reply;
        }
        Reply {
            message: format!(
                "{} {:#x} length {:#x}: not inside guest memory this process registered",
                self.field, self.addr, self.len
            ),
            ..reply
        }
    }
}

/// Points the address at `arg[at..at + 8]` (length `len`) into the IOMMU's host memory: where
/// the registered region holding it sits, or [`UNBACKED`] when no region holds it. A range
/// that wraps is left alone, for the front end to refuse as the kernel does.
///
/// So is an unregistered range whose stand-in would wrap where the caller's does not (a
/// length above 2^63 - 2 MiB): the front end must see the caller's own sum, not an overflow
/// of its own making (Linux answers such a length `EINVAL` in `iopt_alloc_pages`, or for the
/// IOVA range). The caller's address is safe to pass on: a range that long is more than any
/// host memory, so it is never backed, and no IOVA space holds it either.
fn translate_at(
    regions: &[Region],
    arg: &mut [u8],
    at: usize,
    len: u64,
    field: &'static str,
) -> Option<Unregistered> {
    let mut b = [0u8; 8];
    b.copy_from_slice(&arg[at..at + 8]);
    let addr = u64::from_le_bytes(b);
    let end = addr.checked_add(len)?;
    let hpa = match regions
        .iter()
        .find(|r| r.addr <= addr && end <= r.addr + r.size)
    {
        Some(r) => r.hpa + (addr - r.addr),
        None => {
            let stand_in = UNBACKED | (addr & KEPT_LOW_BITS);
            stand_in.checked_add(len)?;
            stand_in
        }
    };
    arg[at..at + 8].copy_from_slice(&hpa.to_le_bytes());
    (hpa & UNBACKED != 0).then_some(Unregistered { field, addr, len })
}

/// Rewrites a MAP_DMA argument's `vaddr` (the process's name for its memory) to where that
/// memory sits in the IOMMU's host memory, as the kernel pins a process's pages. Arguments that
/// the VFIO layer refuses anyway (too short, bad argsz, bad flags, size 0 or unaligned) are
/// left alone so its errors come out in the kernel's order; a well-formed mapping of memory
/// the process did not register is pointed at [`UNBACKED`], so it is `EFAULT` where
/// `vaddr_get_pfn` fails, after the checks before it.
pub(super) fn translate_map_dma(regions: &[Region], arg: &mut [u8]) -> Option<Unregistered> {
    if arg.len() < 32 {
        return None;
    }
    let u32_at = |a: &[u8], o: usize| u32::from_le_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
    let argsz = u32_at(arg, 0) as usize;
    let flags = u32_at(arg, 4);
    let rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    if argsz < 32 || argsz > arg.len() || flags & !rw != 0 || flags & rw == 0 {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&arg[24..32]);
    let size = u64::from_le_bytes(b);
    b.copy_from_slice(&arg[8..16]);
    let vaddr = u64::from_le_bytes(b);
    if size == 0 || size % 4096 != 0 || vaddr % 4096 != 0 {
        return None;
    }
    translate_at(regions, arg, 8, size, "vaddr")
}

/// Rewrites `user_va` of an `IOMMU_IOAS_MAP` argument as [`translate_map_dma`] does `vaddr`,
/// and returns the caller's value, which the reply must carry back (the kernel never
/// rewrites `user_va`), with what names unregistered memory. Arguments shorter than the
/// struct (40 bytes), or with a length the front end refuses anyway, are left alone.
pub(super) fn translate_ioas_map(
    regions: &[Region],
    arg: &mut [u8],
) -> (Option<u64>, Option<Unregistered>) {
    if arg.len() < 40 {
        return (None, None);
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&arg[24..32]);
    let len = u64::from_le_bytes(b);
    b.copy_from_slice(&arg[16..24]);
    let va = u64::from_le_bytes(b);
    if len == 0 || len == u64::MAX {
        return (None, None);
    }
    let unregistered = translate_at(regions, arg, 16, len, "user_va");
    (Some(va), unregistered)
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

    /// An `IOMMU_IOAS_MAP` argument (40 bytes): FIXED_IOVA | READABLE | WRITEABLE on IOAS 1.
    fn ioas_map_arg(user_va: u64, length: u64) -> Vec<u8> {
        let mut a = Vec::new();
        for v in [40u32, 7, 1, 0] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        for v in [user_va, length, 0x10_0000] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        a
    }

    #[test]
    fn an_unregistered_range_its_stand_in_would_wrap_is_left_alone() {
        // 0x1000 + 2^63 does not wrap; UNBACKED + 2^63 would: the caller's address stays.
        for (va, len) in [(0x1000, 1 << 63), (0, u64::MAX - 0xfff)] {
            let mut a = ioas_map_arg(va, len);
            let before = a.clone();
            assert_eq!(translate_ioas_map(&[], &mut a), (Some(va), None));
            assert_eq!(a, before, "{va:#x} + {len:#x}");
        }
        // Just under: the stand-in, with the caller's low 21 bits.
        let mut a = ioas_map_arg(0x1000, (1 << 63) - 0x2000);
        let (va, u) = translate_ioas_map(&[], &mut a);
        assert_eq!((va, u.map(|u| u.addr)), (Some(0x1000), Some(0x1000)));
        assert_eq!(
            u64::from_le_bytes(a[16..24].try_into().unwrap()),
            UNBACKED | 0x1000
        );
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
        assert_eq!(translate_map_dma(&regions, &mut a), None);
        assert_eq!(
            u64::from_le_bytes(a[8..16].try_into().unwrap()),
            0x4001_0000
        );
        // Past the end of the region: pointed where nothing is backed, so the VFIO layer
        // answers EFAULT at its pin step; the caller's address is kept for the message.
        let mut a = map_arg(3, 0x2f_f000, 0, 0x2000);
        let u = translate_map_dma(&regions, &mut a).expect("unregistered");
        assert_eq!((u.field, u.addr, u.len), ("vaddr", 0x2f_f000, 0x2000));
        assert_eq!(
            u64::from_le_bytes(a[8..16].try_into().unwrap()),
            UNBACKED | 0xf_f000,
            "the low 21 bits are kept"
        );
        let r = u.explain(Reply::error(Errno::EFAULT, "not backed"));
        assert!(r.message.contains("vaddr 0x2ff000"), "{}", r.message);
        let r = u.explain(Reply::error(Errno::EEXIST, "overlap"));
        assert_eq!(r.message, "overlap");
        // A vaddr range that wraps is left for the VFIO layer (EINVAL).
        let mut a = map_arg(3, 0xffff_ffff_ffff_f000, 0, 0x2000);
        let before = a.clone();
        assert_eq!(translate_map_dma(&regions, &mut a), None);
        assert_eq!(a, before);
        // Malformed arguments pass through for the VFIO layer to refuse in its order.
        for mut a in [
            map_arg(0, 0x11_0000, 0, 0x1000),
            map_arg(3, 0x11_0000, 0, 0),
            map_arg(3, 0x11_0800, 0, 0x1000),
            vec![0; 16],
        ] {
            let before = a.clone();
            assert_eq!(translate_map_dma(&regions, &mut a), None);
            assert_eq!(a, before);
        }
    }
}
