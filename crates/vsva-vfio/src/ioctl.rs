//! The byte-level entry point: `Container::ioctl(cmd, arg)` with the kernel's semantics.
//!
//! # Arguments
//!
//! `arg` holds every byte the caller supplied at the ioctl's argument pointer (the daemon
//! passes what the client sent). Struct arguments follow the buffer model of `vsva-uapi`: the
//! mandatory part missing from `arg` → `EFAULT`; `argsz` below it → `EINVAL`; `argsz` beyond
//! `arg` → `EFAULT`; a larger struct than known is accepted and its tail ignored. Results are
//! written back into `arg` where the kernel writes them (`GET_INFO`'s info and capability
//! chain, `UNMAP_DMA`'s `size`), never past `argsz`.
//!
//! `VFIO_SET_IOMMU` and `VFIO_CHECK_EXTENSION` take an integer, not a pointer: `arg` holds it
//! little-endian, 8 bytes (an `unsigned long`) or 4; fewer than 4 → `EFAULT`.
//!
//! # Commands
//!
//! | cmd | before `VFIO_SET_IOMMU` | after |
//! |---|---|---|
//! | `VFIO_GET_API_VERSION` | 0 | 0 |
//! | `VFIO_CHECK_EXTENSION` | 1 for types 3 and 6 (6 only with ECAP.NEST) and `VFIO_UNMAP_ALL`, else 0 | same |
//! | `VFIO_SET_IOMMU` | see [`Container::set_iommu`] | `EINVAL` |
//! | `VFIO_IOMMU_GET_INFO`, `MAP_DMA`, `UNMAP_DMA`, `PASID_REQUEST`, `NESTING_OP` | `EINVAL` (no IOMMU driver yet) | as documented on the typed methods |
//! | anything else | `EINVAL` | `ENOTTY` |

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use vsva_uapi::vfio::{
    DmaMap, DmaUnmap, InfoCapHeader, Type1Info, VFIO_API_VERSION, VFIO_CHECK_EXTENSION,
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR, VFIO_DMA_MAP_FLAG_WRITE,
    VFIO_DMA_UNMAP_FLAG_ALL, VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR,
    VFIO_GET_API_VERSION, VFIO_IOMMU_FLAG_ALLOC_PASID, VFIO_IOMMU_FLAG_FREE_PASID,
    VFIO_IOMMU_GET_INFO, VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_NESTING_OP, VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU,
};
use vsva_uapi::{
    decode_nesting_op_header, decode_pasid_request, encode_nesting_info, PasidRequestOp,
    NESTING_CAP_SIZE,
};

use crate::container::{Container, DmaMapping, IommuType};
use crate::error::VfioError;

/// The IOVA page sizes reported: every power of two from 4 KiB up, as the VT-d driver
/// reports (the stage-2 mapper splits into 4 KiB, 2 MiB and 1 GiB pages itself).
pub const VFIO_IOMMU_INFO_PGSIZES_ALL: u64 = !0xfff;

/// `VFIO_UNMAP_ALL`: the `VFIO_CHECK_EXTENSION` value for `VFIO_DMA_UNMAP_FLAG_ALL` support.
const VFIO_UNMAP_ALL: u64 = 9;

/// Capability id of the vsva extension in the `VFIO_IOMMU_GET_INFO` chain that reports the
/// process's PASID quota: [`InfoCapPasidQuota`]. The id is outside the range Linux assigns to
/// type1 capabilities (1–3), so clients that do not know it skip it.
pub const VSVA_INFO_CAP_PASID_QUOTA: u16 = 0xff00;
/// Version 1 of [`InfoCapPasidQuota`], the only one.
pub const VSVA_INFO_CAP_PASID_QUOTA_VERSION: u16 = 1;

/// The vsva PASID quota capability (16 bytes): how many PASIDs the calling process may own
/// at once, and how many it owns, across all its containers. Follows the nesting capability
/// in the chain of a container with a PASID context.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct InfoCapPasidQuota {
    /// `id` = [`VSVA_INFO_CAP_PASID_QUOTA`], `version` = 1, `next` = 0 (it is last).
    pub header: InfoCapHeader,
    /// The process's quota.
    pub quota: u32,
    /// PASIDs the process owns now.
    pub owned: u32,
}

impl InfoCapPasidQuota {
    /// The capability for `quota` and `owned`, last in its chain.
    pub fn new(quota: u32, owned: u32) -> Self {
        InfoCapPasidQuota {
            header: InfoCapHeader {
                id: VSVA_INFO_CAP_PASID_QUOTA,
                version: VSVA_INFO_CAP_PASID_QUOTA_VERSION,
                next: 0,
            },
            quota,
            owned,
        }
    }
}

/// Reads an `argsz`-prefixed struct with mandatory size `minsz` (the `vsva-uapi` buffer
/// model); returns it and its `argsz`.
fn read_arg<T: FromBytes + IntoBytes>(
    buf: &[u8],
    minsz: usize,
    what: &'static str,
) -> Result<(T, usize), VfioError> {
    if buf.len() < minsz {
        return Err(VfioError::ArgTooShort {
            what,
            len: buf.len(),
            need: minsz,
        });
    }
    let argsz = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = argsz as usize;
    if len < minsz {
        return Err(VfioError::ArgszTooSmall {
            what,
            argsz,
            need: minsz,
        });
    }
    if len > buf.len() {
        return Err(VfioError::ArgszBeyondBuffer {
            what,
            argsz,
            len: buf.len(),
        });
    }
    let known = len.min(size_of::<T>());
    let mut value = T::new_zeroed();
    value.as_mut_bytes()[..known].copy_from_slice(&buf[..known]);
    Ok((value, len))
}

/// The PASID_REQUEST every client sends (`argsz` 16, exactly ALLOC or FREE, `min <= max`),
/// decoded in place; `None` for anything else, which then goes through
/// [`decode_pasid_request`] for its exact error or its handling of larger structs.
///
/// Whenever this returns `Some(op)`, `decode_pasid_request` returns `Ok(op)` for the same
/// bytes (property-tested below). It exists because the decoder's result, read back across
/// the crate boundary without inlining, costs a store-forwarding stall per request.
#[inline]
fn canonical_pasid_request(arg: &[u8]) -> Option<PasidRequestOp> {
    let raw: &[u8; 16] = arg.get(..16)?.try_into().ok()?;
    let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let (argsz, flags, min, max) = (word(0), word(4), word(8), word(12));
    if argsz != 16 || min > max {
        return None;
    }
    match flags {
        VFIO_IOMMU_FLAG_ALLOC_PASID => Some(PasidRequestOp::Alloc { min, max }),
        VFIO_IOMMU_FLAG_FREE_PASID => Some(PasidRequestOp::Free { min, max }),
        _ => None,
    }
}

/// Reads an integer ioctl argument: 8 bytes little-endian, or 4.
fn int_arg(buf: &[u8], what: &'static str) -> Result<u64, VfioError> {
    match buf.len() {
        0..=3 => Err(VfioError::ArgTooShort {
            what,
            len: buf.len(),
            need: 4,
        }),
        4..=7 => Ok(u64::from(u32::from_le_bytes([
            buf[0], buf[1], buf[2], buf[3],
        ]))),
        _ => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[..8]);
            Ok(u64::from_le_bytes(raw))
        }
    }
}

impl Container {
    /// The container ioctl entry point: runs `cmd` on the argument bytes `arg` exactly as the
    /// kernel's VFIO container would (see the module table) and returns the ioctl's
    /// non-negative result: the new PASID for PASID_REQUEST ALLOC, the API version, the
    /// extension answer, 0 otherwise. An error carries the errno ([`VfioError::errno`]) and
    /// leaves the container and `arg` unchanged.
    pub fn ioctl(&self, cmd: u32, arg: &mut [u8]) -> Result<u64, VfioError> {
        match cmd {
            VFIO_IOMMU_PASID_REQUEST => {
                self.require_iommu(cmd)?;
                let op = match canonical_pasid_request(arg) {
                    Some(op) => op,
                    None => decode_pasid_request(arg)?,
                };
                let result = self.pasid_request(op)?;
                Ok(match op {
                    PasidRequestOp::Alloc { .. } => result,
                    PasidRequestOp::Free { .. } => 0,
                })
            }
            VFIO_IOMMU_NESTING_OP => {
                self.require_iommu(cmd)?;
                let header = decode_nesting_op_header(arg)?;
                self.nesting_op(|| Ok(header.decode()?), header.kind)?;
                Ok(0)
            }
            VFIO_GET_API_VERSION => Ok(u64::from(VFIO_API_VERSION)),
            VFIO_CHECK_EXTENSION => {
                let ext = int_arg(arg, "the VFIO_CHECK_EXTENSION argument")?;
                Ok(u64::from(self.check_extension(ext)))
            }
            VFIO_SET_IOMMU => {
                let ty = int_arg(arg, "the VFIO_SET_IOMMU argument")?;
                self.set_iommu_raw(ty)?;
                Ok(0)
            }
            _ => {
                self.require_iommu(cmd)?;
                match cmd {
                    VFIO_IOMMU_GET_INFO => self.get_info_ioctl(arg),
                    VFIO_IOMMU_MAP_DMA => self.map_dma_ioctl(arg),
                    VFIO_IOMMU_UNMAP_DMA => self.unmap_dma_ioctl(arg),
                    _ => Err(VfioError::UnknownIoctl { cmd }),
                }
            }
        }
    }

    fn check_extension(&self, ext: u64) -> bool {
        match IommuType::from_raw(ext) {
            Some(IommuType::Type1v2) => true,
            Some(IommuType::Nesting) => self.vfio().iommu.config().nesting,
            None => ext == VFIO_UNMAP_ALL,
        }
    }

    fn get_info_ioctl(&self, arg: &mut [u8]) -> Result<u64, VfioError> {
        const MINSZ: usize = 16; // offsetofend(iova_pgsizes)
        const CAPSZ: usize = size_of::<Type1Info>(); // offsetofend(cap_offset)
        let (mut info, argsz) = read_arg::<Type1Info>(arg, MINSZ, "vfio_iommu_type1_info")?;
        let typed = self.info()?;
        info.flags = VFIO_IOMMU_INFO_PGSIZES;
        info.iova_pgsizes = typed.iova_pgsizes;
        let mut caps = Vec::new();
        if let Some(nesting) = &typed.nesting {
            let next = if typed.pasid_quota.is_some() {
                (CAPSZ + NESTING_CAP_SIZE) as u32
            } else {
                0
            };
            caps.extend_from_slice(&encode_nesting_info(next, nesting));
        }
        if let Some(quota) = &typed.pasid_quota {
            caps.extend_from_slice(quota.as_bytes());
        }
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
            } else {
                arg[CAPSZ..need].copy_from_slice(&caps);
                info.cap_offset = CAPSZ as u32;
            }
        }
        arg[..out].copy_from_slice(&info.as_bytes()[..out]);
        Ok(0)
    }

    fn map_dma_ioctl(&self, arg: &mut [u8]) -> Result<u64, VfioError> {
        let (map, _) = read_arg::<DmaMap>(arg, size_of::<DmaMap>(), "vfio_iommu_type1_dma_map")?;
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
        self.map_dma(&DmaMapping {
            vaddr: map.vaddr,
            iova: map.iova,
            size: map.size,
            read: map.flags & VFIO_DMA_MAP_FLAG_READ != 0,
            write: map.flags & VFIO_DMA_MAP_FLAG_WRITE != 0,
        })?;
        Ok(0)
    }

    fn unmap_dma_ioctl(&self, arg: &mut [u8]) -> Result<u64, VfioError> {
        const MINSZ: usize = size_of::<DmaUnmap>();
        let (mut unmap, _) = read_arg::<DmaUnmap>(arg, MINSZ, "vfio_iommu_type1_dma_unmap")?;
        let known = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
            | VFIO_DMA_UNMAP_FLAG_ALL
            | VFIO_DMA_UNMAP_FLAG_VADDR;
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
            self.unmap_all_dma()?
        } else {
            self.unmap_dma(unmap.iova, unmap.size)?
        };
        unmap.size = unmapped;
        arg[..MINSZ].copy_from_slice(unmap.as_bytes());
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Just;
    use vsva_uapi::Errno;

    #[test]
    fn read_arg_follows_the_buffer_model() {
        let mut buf = vec![0u8; 40];
        buf[..4].copy_from_slice(&40u32.to_le_bytes());
        buf[8] = 0xaa;
        let (map, argsz) = read_arg::<DmaMap>(&buf, 32, "x").unwrap();
        assert_eq!((argsz, map.vaddr), (40, 0xaa));
        assert_eq!(
            read_arg::<DmaMap>(&buf[..31], 32, "x").unwrap_err().errno(),
            Errno::EFAULT
        );
        buf[..4].copy_from_slice(&31u32.to_le_bytes());
        assert_eq!(
            read_arg::<DmaMap>(&buf, 32, "x").unwrap_err().errno(),
            Errno::EINVAL
        );
        buf[..4].copy_from_slice(&41u32.to_le_bytes());
        assert_eq!(
            read_arg::<DmaMap>(&buf, 32, "x").unwrap_err().errno(),
            Errno::EFAULT
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The in-place decoding never disagrees with the reference decoder.
        #[test]
        fn canonical_decoding_agrees_with_vsva_uapi(
            len in 0usize..24,
            argsz in proptest::prop_oneof![Just(16u32), 0u32..40],
            flags in proptest::prop_oneof![0u32..4, Just(1 << 31 | 1)],
            min in proptest::prop_oneof![0u32..8, Just(u32::MAX)],
            max in proptest::prop_oneof![0u32..8, Just(u32::MAX)],
        ) {
            let mut buf: Vec<u8> = [argsz, flags, min, max, 0xdead_beef, 0x1234_5678]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            buf.truncate(len);
            if let Some(op) = canonical_pasid_request(&buf) {
                proptest::prop_assert_eq!(decode_pasid_request(&buf), Ok(op));
            }
        }
    }

    #[test]
    fn canonical_decoding_takes_the_common_requests() {
        for op in [
            PasidRequestOp::alloc(1, 1 << 20).unwrap(),
            PasidRequestOp::free_all(),
        ] {
            assert_eq!(canonical_pasid_request(&op.to_bytes()), Some(op));
        }
        let mut larger = PasidRequestOp::alloc(1, 9).unwrap().to_bytes();
        larger[0] = 24;
        larger.extend_from_slice(&[0; 8]);
        assert_eq!(
            canonical_pasid_request(&larger),
            None,
            "left to the decoder"
        );
    }

    #[test]
    fn int_args() {
        assert_eq!(int_arg(&6u32.to_le_bytes(), "x").unwrap(), 6);
        assert_eq!(
            int_arg(&(1u64 << 40 | 3).to_le_bytes(), "x").unwrap(),
            1 << 40 | 3
        );
        assert_eq!(int_arg(&[6, 0], "x").unwrap_err().errno(), Errno::EFAULT);
    }

    #[test]
    fn quota_capability_layout() {
        assert_eq!(size_of::<InfoCapPasidQuota>(), 16);
        let cap = InfoCapPasidQuota::new(1000, 3);
        assert_eq!(
            cap.as_bytes(),
            &[0x00, 0xff, 1, 0, 0, 0, 0, 0, 0xe8, 0x03, 0, 0, 3, 0, 0, 0]
        );
    }
}
