//! The argument readers: an `argsz`-prefixed argument (or an integer argument) read out of a
//! caller's buffer, the way the kernel does. Every decoder of this crate and the ioctl front
//! end of `vsva-vfio` read their arguments here.
//!
//! # The buffer model
//!
//! A decoder receives `buf`, every byte the caller supplied: what the kernel could reach at the
//! ioctl's argument pointer. The argument's first field is always `argsz: u32`, the size the
//! caller claims the argument has. Each struct has a `minsz`, the bytes that are mandatory
//! (the whole struct for fixed structs, the offset of the trailing union for payloads with a
//! variable-size union). VFIO (`copy_from_user(minsz)`, then `argsz < minsz`) and the IOMMU
//! core for the nesting payloads (`iommu_sva_prepare_bind_data`, `iommu_uapi_cache_invalidate`
//! of Linux 5.10: `copy_from_user` of the part before the union, then `argsz < minsz`, then
//! `copy_from_user(min(argsz, size) - minsz)` more) read an argument the same way, and
//! [`read_arg`] is that reader:
//!
//! 1. `buf.len() < minsz` → `EFAULT`, before `argsz` is looked at;
//! 2. `argsz < minsz` → `EINVAL`;
//! 3. the bytes past `minsz` that are read (up to `min(argsz, size_of::<T>())`) are not in
//!    `buf` → `EFAULT`.
//!
//! Then `min(argsz, size_of::<T>())` bytes are copied into a zeroed `T`: bytes of a newer,
//! larger struct (past what this crate knows) are never read, so an `argsz` beyond the buffer
//! is no fault unless the known struct itself is cut short; known bytes past `argsz` (an
//! older, smaller struct) read as zero.

use zerocopy::{FromBytes, IntoBytes};

use crate::errno::UapiError;

/// The fixed part of an argument, read by [`read_arg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg<'a, T> {
    /// The known struct: the first `min(argsz, size_of::<T>())` bytes of the buffer, the rest
    /// zero.
    pub value: T,
    /// The part of the argument the caller supplied: `buf[..min(argsz, buf.len())]`. Shorter
    /// than `argsz` when the caller claims a larger struct than it passed; only the known
    /// struct is ever read from it.
    pub bytes: &'a [u8],
    /// The `argsz` the caller claims.
    pub argsz: u32,
}

/// Reads the `argsz` at offset 0 of `buf`, which must hold at least 4 bytes.
#[inline]
fn argsz_of(buf: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&buf[..4]);
    u32::from_le_bytes(raw)
}

/// Reads an `argsz`-prefixed argument of type `T` with mandatory size `minsz` (at least 4, at
/// most `size_of::<T>()`) the way VFIO and the IOMMU core do: the mandatory part is copied
/// first, then `argsz` is checked (the three checks of the module's buffer model, in order). `what` names the
/// mandatory part in messages, e.g. `"vfio_iommu_type1_pasid_request"`. Inlined, so the value
/// is built in the caller's frame and a hot path pays no copy through memory for it.
///
/// # Errors
///
/// `EFAULT` (the mandatory part, or the known part `argsz` covers, is not in `buf`) or
/// `EINVAL` (`argsz < minsz`), with a message naming `what` and the sizes; nothing is read
/// then.
#[inline(always)]
pub fn read_arg<'a, T>(buf: &'a [u8], minsz: usize, what: &str) -> Result<Arg<'a, T>, UapiError>
where
    T: FromBytes + IntoBytes,
{
    debug_assert!((4..=size_of::<T>()).contains(&minsz));
    if buf.len() < minsz {
        return Err(short_buffer(buf.len(), minsz, what));
    }
    copy_known(buf, minsz, what)
}

/// The tail of [`read_arg`]: `argsz < minsz` → `EINVAL`, then the known part `argsz`
/// covers must be in `buf` (`EFAULT`), and is copied into a zeroed `T`.
#[inline(always)]
fn copy_known<'a, T>(buf: &'a [u8], minsz: usize, what: &str) -> Result<Arg<'a, T>, UapiError>
where
    T: FromBytes + IntoBytes,
{
    let argsz = argsz_of(buf);
    // Saturating: on a target whose `usize` cannot hold `argsz`, no buffer can be that long.
    let argsz_len = usize::try_from(argsz).unwrap_or(usize::MAX);
    if argsz_len < minsz {
        return Err(small_argsz(argsz, minsz, what));
    }
    let known = argsz_len.min(size_of::<T>());
    if buf.len() < known {
        return Err(cut_short(argsz, known, buf.len(), what));
    }
    // The common case, a caller of this crate's own version, is one fixed-size copy.
    let value = match T::read_from_prefix(&buf[..known]) {
        Ok((value, _)) => value,
        Err(_) => {
            let mut value = T::new_zeroed();
            value.as_mut_bytes()[..known].copy_from_slice(&buf[..known]);
            value
        }
    };
    Ok(Arg {
        value,
        bytes: &buf[..argsz_len.min(buf.len())],
        argsz,
    })
}

// The refusals are built out of line: a reader inlined into a hot path keeps only the checks
// there, not the message formatting.

/// `EFAULT`: the mandatory part of `what` is not in the buffer.
#[cold]
#[inline(never)]
fn short_buffer(len: usize, minsz: usize, what: &str) -> UapiError {
    UapiError::fault(format!(
        "the buffer holds {len} bytes, fewer than the {minsz} bytes of {what}"
    ))
}

/// `EINVAL`: `argsz` is below the mandatory part of `what`.
#[cold]
#[inline(never)]
fn small_argsz(argsz: u32, minsz: usize, what: &str) -> UapiError {
    UapiError::invalid(format!(
        "argsz {argsz} is smaller than the {minsz} bytes of {what}"
    ))
}

/// `EFAULT`: the known part `argsz` covers is cut short by the buffer.
#[cold]
#[inline(never)]
fn cut_short(argsz: u32, known: usize, len: usize, what: &str) -> UapiError {
    UapiError::fault(format!(
        "argsz {argsz} covers {known} bytes of {what}, but the buffer holds {len}"
    ))
}

/// Reads an integer ioctl argument (`VFIO_SET_IOMMU`, `VFIO_CHECK_EXTENSION` take an
/// `unsigned long`, not a pointer): 8 bytes little-endian, or 4 when only 4 to 7 are given.
///
/// # Errors
///
/// `EFAULT` when `buf` holds fewer than 4 bytes; `what` names the argument in the message.
#[inline]
pub fn read_int_arg(buf: &[u8], what: &str) -> Result<u64, UapiError> {
    match buf.len() {
        len @ 0..=3 => Err(short_buffer(len, 4, what)),
        4..=7 => Ok(u64::from(argsz_of(buf))),
        _ => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[..8]);
            Ok(u64::from_le_bytes(raw))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;
    use crate::vfio::PasidRequest;

    fn request_bytes(argsz: u32, len: usize) -> Vec<u8> {
        let mut buf = vec![0xaau8; len];
        buf[..4].copy_from_slice(&argsz.to_le_bytes());
        buf
    }

    #[test]
    fn short_buffer_is_efault_before_argsz_is_looked_at() {
        for len in [0, 3, 4, 15] {
            let buf = request_bytes(2, len.max(4))[..len].to_vec();
            let err = read_arg::<PasidRequest>(&buf, 16, "x").err().unwrap();
            assert_eq!(err.errno(), Errno::EFAULT, "len {len}");
        }
    }

    #[test]
    fn small_argsz_is_einval_and_a_larger_argsz_than_the_buffer_reads_only_the_known_struct() {
        let err = read_arg::<PasidRequest>(&request_bytes(15, 16), 16, "x")
            .err()
            .unwrap();
        assert_eq!(err.errno(), Errno::EINVAL);
        // VFIO copies the 16 bytes it knows and never touches the claimed tail.
        let buf = request_bytes(4096, 16);
        let arg = read_arg::<PasidRequest>(&buf, 16, "x").unwrap();
        assert_eq!((arg.argsz, arg.bytes.len()), (4096, 16));
    }

    #[test]
    fn tail_past_known_struct_is_ignored_and_bytes_are_bounded_by_argsz() {
        let buf = request_bytes(20, 32);
        let arg = read_arg::<PasidRequest>(&buf, 16, "x").unwrap();
        assert_eq!(arg.bytes.len(), 20);
        assert_eq!(arg.value.argsz, 20);
        assert_eq!(arg.value.flags, 0xaaaa_aaaa);
    }

    #[test]
    fn a_known_part_cut_short_faults_and_errors_keep_their_errno() {
        use crate::vfio::DmaUnmap;
        // DmaUnmap is 24 bytes; minsz 16 as a caller without the trailing field.
        let mut buf = vec![0u8; 24];
        buf[..4].copy_from_slice(&24u32.to_le_bytes());
        buf[8] = 0xaa;
        let arg = read_arg::<DmaUnmap>(&buf, 16, "x").unwrap();
        assert_eq!((arg.bytes.len(), arg.value.iova), (24, 0xaa));
        let errno = |buf: &[u8]| read_arg::<DmaUnmap>(buf, 16, "x").unwrap_err().errno();
        assert_eq!(errno(&buf[..15]), Errno::EFAULT);
        assert_eq!(
            errno(&buf[..20]),
            Errno::EFAULT,
            "argsz 24 covers 24 known bytes"
        );
        buf[..4].copy_from_slice(&15u32.to_le_bytes());
        assert_eq!(errno(&buf), Errno::EINVAL);
    }

    #[test]
    fn int_args() {
        assert_eq!(read_int_arg(&6u32.to_le_bytes(), "x").unwrap(), 6);
        assert_eq!(
            read_int_arg(&(1u64 << 40 | 3).to_le_bytes(), "x").unwrap(),
            1 << 40 | 3
        );
        assert_eq!(
            read_int_arg(&[6, 0], "x").unwrap_err().errno(),
            Errno::EFAULT
        );
    }

    #[test]
    fn known_bytes_past_argsz_read_as_zero() {
        let buf = request_bytes(12, 16);
        let arg = read_arg::<PasidRequest>(&buf, 8, "x").unwrap();
        assert_eq!(arg.value.range.min, 0xaaaa_aaaa);
        assert_eq!(arg.value.range.max, 0);
    }
}
