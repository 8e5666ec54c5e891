//! Guest memory shared with the daemon: a sealed memfd, mapped in this process.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// `size` bytes of guest memory at guest-physical `base`, backed by a memfd that is sealed
/// against shrinking and growing (so the daemon can map it without risk of `SIGBUS`), and
/// mapped shared in this process: what the client writes here (page tables, data) is what
/// the daemon's IOMMU and devices see, and the other way round.
pub struct GuestMemory {
    fd: OwnedFd,
    mem: GuestMemoryMmap,
    base: u64,
    size: u64,
}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestMemory")
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl GuestMemory {
    /// Creates the memfd (zero-filled), seals it, and maps it. `base` and `size` must be
    /// multiples of 4 KiB and `size` non-zero.
    pub fn new(base: u64, size: u64) -> io::Result<GuestMemory> {
        if !base.is_multiple_of(4096) || !size.is_multiple_of(4096) || size == 0 {
            return Err(invalid(format!(
                "guest memory base {base:#x} and size {size:#x} must be non-zero multiples of 4096"
            )));
        }
        let len =
            usize::try_from(size).map_err(|_| invalid(format!("size {size:#x} is too large")))?;
        let fd = rustix::fs::memfd_create(
            "vsva-guest",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, size)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let file = File::from(fd.try_clone()?);
        let region =
            GuestRegionMmap::from_range(GuestAddress(base), len, Some(FileOffset::new(file, 0)))
                .map_err(|e| io::Error::other(format!("cannot map the memfd: {e}")))?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| io::Error::other(format!("cannot build the guest memory: {e}")))?;
        Ok(GuestMemory {
            fd,
            mem,
            base,
            size,
        })
    }

    /// The memfd, to pass to [`Client::register_memory`](crate::Client::register_memory).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Guest-physical base.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The mapping, for `vm-memory` users.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Reads `buf.len()` bytes at guest-physical `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|e| invalid(format!("read of {} bytes at {addr:#x}: {e}", buf.len())))
    }

    /// Writes `buf` at guest-physical `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> io::Result<()> {
        self.mem
            .write_slice(buf, GuestAddress(addr))
            .map_err(|e| invalid(format!("write of {} bytes at {addr:#x}: {e}", buf.len())))
    }

    /// Reads a little-endian `u64` at `addr`.
    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64` at `addr`.
    pub fn write_u64(&self, addr: u64, value: u64) -> io::Result<()> {
        self.write(addr, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_is_sealed_and_shared() {
        let m = GuestMemory::new(0x10_0000, 0x4000).unwrap();
        m.write_u64(0x10_1008, 0xdead_beef).unwrap();
        assert_eq!(m.read_u64(0x10_1008).unwrap(), 0xdead_beef);
        let seals = rustix::fs::fcntl_get_seals(m.fd()).unwrap();
        assert!(seals.contains(SealFlags::SHRINK));
        assert!(rustix::fs::ftruncate(m.fd(), 0).is_err());
        // A second mapping of the same fd sees the write: the memory is shared.
        let file = File::from(m.fd().try_clone_to_owned().unwrap());
        let region = GuestRegionMmap::<()>::from_range(
            GuestAddress(0),
            0x4000,
            Some(FileOffset::new(file, 0)),
        )
        .unwrap();
        let other = GuestMemoryMmap::from_regions(vec![region]).unwrap();
        let v: u64 = other.read_obj(GuestAddress(0x1008)).unwrap();
        assert_eq!(v, 0xdead_beef);
        assert!(m.read_u64(0x10_4000).is_err());
        assert!(GuestMemory::new(1, 4096).is_err());
    }
}
