//! The byte-level entry point: `Container::ioctl(cmd, arg)` with the kernel's semantics, as a
//! thin front end over the typed container methods.
//!
//! One table ([`OPS`]) maps each ioctl number to its command and says whether the container
//! must have an IOMMU type first; the entry point calls the command's handler directly (no
//! function pointer, no boxed journal), so the hot commands are inlined where they enter.
//! Each handler reads its argument once, with the one argument readers of `vsva-uapi` (the
//! struct decoders are built on them), and calls the typed method.
//!
//! # Arguments
//!
//! `arg` holds every byte the caller supplied at the ioctl's argument pointer (the daemon
//! passes what the client sent). Struct arguments follow the buffer model of `vsva-uapi`: the
//! bytes the kernel would copy missing from `arg` → `EFAULT`; `argsz` below the mandatory part
//! → `EINVAL`; an `argsz` beyond `arg` is no fault by itself (the kernel never reads past the
//! struct it knows), and a larger struct than known has its tail ignored. Results are
//! written back into `arg` where the kernel writes them (`GET_INFO`'s info and capability
//! chain, `UNMAP_DMA`'s `size`), never past `argsz`; a chain that does not fit in `arg`
//! although `argsz` asks for it → `EFAULT`. NESTING_OP's payload is read with its own
//! `argsz` (the header's is only checked to be at least 8).
//!
//! `VFIO_SET_IOMMU` and `VFIO_CHECK_EXTENSION` take an integer, not a pointer: `arg` holds it
//! little-endian, 8 bytes (an `unsigned long`) or 4; fewer than 4 → `EFAULT`.
//!
//! # Commands
//!
//! | cmd | before `VFIO_SET_IOMMU` | after |
//! |---|---|---|
//! | `VFIO_GET_API_VERSION` | 0 | 0 |
//! | `VFIO_CHECK_EXTENSION` | 1 for types 1, 3 and 6 and `VFIO_UNMAP_ALL`, else 0 | same |
//! | `VFIO_SET_IOMMU` | see [`Container::set_iommu`] | `EINVAL` |
//! | `VFIO_IOMMU_GET_INFO`, `MAP_DMA`, `UNMAP_DMA`, `PASID_REQUEST`, `NESTING_OP` | `EINVAL` (no IOMMU driver yet) | as documented on the typed methods |
//! | anything else | `EINVAL` | `ENOTTY` |

use zerocopy::IntoBytes;

use vsva_uapi::vfio::{
    DmaMap, DmaUnmap, Type1Info, VFIO_API_VERSION, VFIO_CHECK_EXTENSION, VFIO_DMA_MAP_FLAG_READ,
    VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL,
    VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR, VFIO_GET_API_VERSION,
    VFIO_IOMMU_GET_INFO, VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU,
    VFIO_UNMAP_ALL,
};
use vsva_uapi::{decode_nesting_op_header, read_arg, read_int_arg, read_pasid_request};

use crate::container::dma::DmaMapping;
use crate::container::info::info_cap_chain;
use crate::container::nesting::NestingPayload;
use crate::container::Container;
use crate::error::VfioError;
use crate::outcome::IoctlOutcome;
use crate::types::IommuType;

/// The command an ioctl number selects; [`Container::ioctl_journaled`] calls its handler
/// directly, so the hot ones are inlined into the entry point with the caller's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    PasidRequest,
    NestingOp,
    ApiVersion,
    CheckExtension,
    SetIommu,
    GetInfo,
    MapDma,
    UnmapDma,
}

/// One row of the ioctl table.
struct IoctlOp {
    cmd: u32,
    /// The VFIO core answers `EINVAL` before `VFIO_SET_IOMMU` for the IOMMU driver's ioctls.
    needs_iommu: bool,
    command: Command,
}

/// Every container ioctl, the hot ones (PASID_REQUEST, NESTING_OP) first.
const OPS: &[IoctlOp] = &[
    IoctlOp {
        cmd: VFIO_IOMMU_PASID_REQUEST,
        needs_iommu: true,
        command: Command::PasidRequest,
    },
    IoctlOp {
        cmd: VFIO_IOMMU_NESTING_OP,
        needs_iommu: true,
        command: Command::NestingOp,
    },
    IoctlOp {
        cmd: VFIO_GET_API_VERSION,
        needs_iommu: false,
        command: Command::ApiVersion,
    },
    IoctlOp {
        cmd: VFIO_CHECK_EXTENSION,
        needs_iommu: false,
        command: Command::CheckExtension,
    },
    IoctlOp {
        cmd: VFIO_SET_IOMMU,
        needs_iommu: false,
        command: Command::SetIommu,
    },
    IoctlOp {
        cmd: VFIO_IOMMU_GET_INFO,
        needs_iommu: true,
        command: Command::GetInfo,
    },
    IoctlOp {
        cmd: VFIO_IOMMU_MAP_DMA,
        needs_iommu: true,
        command: Command::MapDma,
    },
    IoctlOp {
        cmd: VFIO_IOMMU_UNMAP_DMA,
        needs_iommu: true,
        command: Command::UnmapDma,
    },
];

impl Container {
    /// The container ioctl entry point: runs `cmd` on the argument bytes `arg` exactly as the
    /// kernel's VFIO container would (see the module table) and says what it did; the ioctl's
    /// non-negative return value is [`IoctlOutcome::value`].
    ///
    /// # Errors
    ///
    /// The error carries the errno ([`VfioError::errno`]); the container and `arg` are left
    /// unchanged.
    #[inline]
    pub fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<IoctlOutcome, VfioError> {
        self.ioctl_journaled(cmd, arg, |_| {})
    }

    /// [`Container::ioctl`], calling `journal` once with the outcome when the command
    /// succeeds. For PASID_REQUEST it runs under the process's mm lock, after the change and
    /// before any other PASID request of the process can run, so an embedder that records
    /// each change there gets one process's records in the order the changes happened,
    /// without a lock of its own. For every other command it runs after the command, with no
    /// lock held. `journal` must not call back into the process's containers.
    ///
    /// # Errors
    ///
    /// As [`Container::ioctl`]; `journal` is not called then.
    #[inline]
    pub fn ioctl_journaled(
        &self,
        cmd: u32,
        arg: &mut [u8],
        journal: impl FnOnce(&IoctlOutcome),
    ) -> Result<IoctlOutcome, VfioError> {
        let Some(op) = OPS.iter().find(|op| op.cmd == cmd) else {
            return Err(self.unknown_ioctl(cmd));
        };
        if op.needs_iommu {
            self.require_iommu(cmd)?;
        }
        let outcome = match op.command {
            // The one handler that journals under its own lock.
            Command::PasidRequest => return self.pasid_request(read_pasid_request(arg)?, journal),
            Command::NestingOp => nesting_op(self, arg)?,
            Command::ApiVersion => IoctlOutcome::Value(u64::from(VFIO_API_VERSION)),
            Command::CheckExtension => check_extension(arg)?,
            Command::SetIommu => set_iommu(self, arg)?,
            Command::GetInfo => get_info(self, arg)?,
            Command::MapDma => map_dma(self, arg)?,
            Command::UnmapDma => unmap_dma(self, arg)?,
        };
        journal(&outcome);
        Ok(outcome)
    }

    /// The error of a cmd that is not in the table: `EINVAL` before `VFIO_SET_IOMMU`, else
    /// `ENOTTY`.
    #[cold]
    #[inline(never)]
    fn unknown_ioctl(&self, cmd: u32) -> VfioError {
        match self.require_iommu(cmd) {
            Err(err) => err,
            Ok(()) => VfioError::UnknownIoctl { cmd },
        }
    }
}

/// NESTING_OP: the header is read here, the payload by the container once its own checks
/// have passed.
#[inline(always)]
fn nesting_op(c: &Container, arg: &[u8]) -> Result<IoctlOutcome, VfioError> {
    let header = decode_nesting_op_header(arg)?;
    c.nesting_op(NestingPayload::Bytes(header.kind, header.payload))?;
    Ok(IoctlOutcome::Nesting(header.kind))
}

fn check_extension(arg: &[u8]) -> Result<IoctlOutcome, VfioError> {
    let ext = read_int_arg(arg, "the VFIO_CHECK_EXTENSION argument")?;
    // Linux 5.8 `vfio_iommu_type1_check_extension`: 1 for every type the driver knows,
    // nesting included, whatever the IOMMU (SET_IOMMU(6) then fails without ECAP.NEST).
    let supported = IommuType::from_raw(ext).is_some() || ext == VFIO_UNMAP_ALL;
    Ok(IoctlOutcome::Value(u64::from(supported)))
}

fn set_iommu(c: &Container, arg: &[u8]) -> Result<IoctlOutcome, VfioError> {
    let ty = read_int_arg(arg, "the VFIO_SET_IOMMU argument")?;
    Ok(IoctlOutcome::IommuSet(c.set_iommu_raw(ty)?))
}

#[inline(never)]
fn get_info(c: &Container, arg: &mut [u8]) -> Result<IoctlOutcome, VfioError> {
    const MINSZ: usize = 16; // offsetofend(iova_pgsizes)
    const CAPSZ: usize = size_of::<Type1Info>(); // offsetofend(cap_offset)
    let read = read_arg::<Type1Info>(arg, MINSZ, "vfio_iommu_type1_info")?;
    let (mut info, argsz) = (read.value, read.argsz as usize);
    let typed = c.info()?;
    info.flags = VFIO_IOMMU_INFO_PGSIZES;
    info.iova_pgsizes = typed.iova_pgsizes;
    let caps = info_cap_chain(&typed, CAPSZ);
    let mut out = MINSZ;
    if argsz >= CAPSZ {
        out = CAPSZ;
        info.cap_offset = 0;
        info.pad = 0;
    }
    if !caps.is_empty() {
        info.flags |= VFIO_IOMMU_INFO_CAPS;
        let need = CAPSZ + caps.len();
        if argsz < need {
            // Too small for the chain: report the size needed, as the kernel does.
            info.argsz = need as u32;
        } else if arg.len() < need {
            // The kernel's copy_to_user of the chain faults; nothing is written.
            return Err(vsva_uapi::UapiError::fault(format!(
                "argsz {argsz} asks for the {need}-byte capability chain, but the buffer holds {}",
                arg.len()
            ))
            .into());
        } else {
            arg[CAPSZ..need].copy_from_slice(&caps);
            info.cap_offset = CAPSZ as u32;
        }
    }
    arg[..out].copy_from_slice(&info.as_bytes()[..out]);
    Ok(IoctlOutcome::InfoWritten)
}

#[inline(never)]
fn map_dma(c: &Container, arg: &[u8]) -> Result<IoctlOutcome, VfioError> {
    let map = read_arg::<DmaMap>(arg, size_of::<DmaMap>(), "vfio_iommu_type1_dma_map")?.value;
    let known = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
    if map.flags & !known != 0 {
        return Err(VfioError::invalid(
            "flags",
            u64::from(map.flags),
            "bits other than READ, WRITE and VADDR are not defined",
        ));
    }
    if map.flags & VFIO_DMA_MAP_FLAG_VADDR != 0 {
        return Err(VfioError::invalid(
            "flags",
            u64::from(map.flags),
            "VFIO_DMA_MAP_FLAG_VADDR (updating a mapping's vaddr) is not supported",
        ));
    }
    c.map_dma(&DmaMapping {
        vaddr: map.vaddr,
        iova: map.iova,
        size: map.size,
        read: map.flags & VFIO_DMA_MAP_FLAG_READ != 0,
        write: map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0,
    })?;
    Ok(IoctlOutcome::Mapped)
}

#[inline(never)]
fn unmap_dma(c: &Container, arg: &mut [u8]) -> Result<IoctlOutcome, VfioError> {
    const MINSZ: usize = size_of::<DmaUnmap>();
    let mut unmap = read_arg::<DmaUnmap>(arg, MINSZ, "vfio_iommu_type1_dma_unmap")?.value;
    let known =
        VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR;
    let flags = u64::from(unmap.flags);
    if unmap.flags & !known != 0 {
        return Err(VfioError::invalid(
            "flags",
            flags,
            "bits other than GET_DIRTY_BITMAP, ALL and VADDR are not defined",
        ));
    }
    if unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
        return Err(VfioError::invalid(
            "flags",
            flags,
            "dirty page tracking (GET_DIRTY_BITMAP) is not supported",
        ));
    }
    if unmap.flags & VFIO_DMA_UNMAP_FLAG_VADDR != 0 {
        return Err(VfioError::invalid(
            "flags",
            flags,
            "VFIO_DMA_UNMAP_FLAG_VADDR (invalidating a mapping's vaddr) is not supported",
        ));
    }
    let unmapped = if unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL != 0 {
        if unmap.iova != 0 || unmap.size != 0 {
            let (field, value) = if unmap.iova != 0 {
                ("iova", unmap.iova)
            } else {
                ("size", unmap.size)
            };
            return Err(VfioError::invalid(
                field,
                value,
                "must be 0 with VFIO_DMA_UNMAP_FLAG_ALL",
            ));
        }
        c.unmap_all_dma()?
    } else {
        c.unmap_dma(unmap.iova, unmap.size)?
    };
    unmap.size = unmapped;
    arg[..MINSZ].copy_from_slice(unmap.as_bytes());
    Ok(IoctlOutcome::Unmapped { size: unmapped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_one_row() {
        for (i, op) in OPS.iter().enumerate() {
            assert!(
                OPS[i + 1..].iter().all(|other| other.cmd != op.cmd),
                "cmd {:#x} twice",
                op.cmd
            );
        }
        assert_eq!(OPS.len(), 8);
    }
}
