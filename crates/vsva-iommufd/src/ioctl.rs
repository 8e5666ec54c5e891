//! The byte-level entry, as `ioctl(2)` on `/dev/iommu` and on a VFIO device fd reaches the
//! kernel: one table from ioctl number to minimum size and typed handler
//! ([`IommufdCtx::ioctl`], Linux `iommufd_fops_ioctl` in `main.c`), the argument read once
//! with `copy_struct_from_user` semantics where it enters, and the answer written back over
//! at most the caller's `size` bytes.
//!
//! # The pointer model
//!
//! The caller's buffer stands for all the memory the call may reach. A user-pointer field
//! (`data_uptr`, `allowed_iovas`) is a byte offset into that same buffer, 0 meaning NULL;
//! bytes the offset and length do not fit in the buffer are a fault (`EFAULT`). `user_va` of
//! `IOMMU_IOAS_MAP` is a host-physical address of the IOMMU's memory, as VFIO's MAP_DMA
//! `vaddr` is.

use vsva_iommu::SourceId;
use vsva_uapi::iommufd::{
    read_iommufd_arg, write_iommufd_arg, IommuDestroy, IommuFaultAlloc, IommuHwInfo,
    IommuHwptAlloc, IommuHwptInvalidate, IommuHwptVtdS1Invalidate, IommuIoasAlloc,
    IommuIoasAllowIovas, IommuIoasCopy, IommuIoasIovaRanges, IommuIoasMap, IommuIoasUnmap,
    IommuIovaRange, VfioDeviceAttachIommufdPt, VfioDeviceBindIommufd, VfioDeviceDetachIommufdPt,
    IOMMU_DESTROY, IOMMU_FAULT_QUEUE_ALLOC, IOMMU_GET_HW_INFO, IOMMU_HWPT_ALLOC,
    IOMMU_HWPT_INVALIDATE, IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_IOAS_ALLOC,
    IOMMU_IOAS_ALLOW_IOVAS, IOMMU_IOAS_COPY, IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_MAP,
    IOMMU_IOAS_UNMAP, VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_ATTACH_PASID,
    VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT, VFIO_DEVICE_DETACH_PASID,
};
use vsva_uapi::{read_arg, Errno, UapiError};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::ctx::IommufdCtx;
use crate::error::IommufdError;
use crate::hwpt::is_short;
use crate::objects::Object;

/// `IOMMU_IOAS_MAP`'s minimum size (`offsetofend(struct iommu_ioas_map, iova)`).
const IOAS_MAP_MINSZ: usize = 40;
/// `IOMMU_IOAS_UNMAP`'s minimum size (`offsetofend(struct iommu_ioas_unmap, length)`).
const IOAS_UNMAP_MINSZ: usize = 24;

impl IommufdCtx {
    /// Runs iommufd ioctl `cmd` with the caller's argument bytes, exactly as Linux answers
    /// it (see the module's pointer model); outputs are written back into `buf`.
    ///
    /// # Errors
    ///
    /// `ENOTTY` for an unknown `cmd`; the argument reader's `EFAULT` / `EINVAL` / `E2BIG`;
    /// then each handler's refusals (the typed methods document them). A refused call
    /// changes nothing, except `IOMMU_HWPT_INVALIDATE`, whose entries before the failing one
    /// were applied and counted in `entry_num`.
    #[inline]
    pub fn ioctl(&self, cmd: u32, buf: &mut [u8]) -> Result<(), IommufdError> {
        // The hot numbers first, one compare each, in the caller (this function is inlined):
        // a caller that names the number folds the compares away and calls the handler
        // directly. Through the table's `match` (a jump through a table over the contiguous
        // numbers) a map + unmap pair would take one indirect branch whose target changes
        // with every call, and a mispredicted one where the predictor keeps one target per
        // branch. The rest go through the table.
        if cmd == IOMMU_HWPT_INVALIDATE {
            return hwpt_invalidate(self, buf);
        }
        if cmd == IOMMU_IOAS_MAP {
            return ioas_map(self, buf, IOAS_MAP_MINSZ);
        }
        if cmd == IOMMU_IOAS_UNMAP {
            return ioas_unmap(self, buf, IOAS_UNMAP_MINSZ);
        }
        self.ioctl_table(cmd, buf)
    }

    /// The ioctl table: number → handler with its minimum size (`offsetofend` of the last
    /// mandatory field, as `IOCTL_OP` declares it). A `match`, so that the number picks the
    /// handler with no search and the hot handlers are called directly.
    #[inline(never)]
    fn ioctl_table(&self, cmd: u32, buf: &mut [u8]) -> Result<(), IommufdError> {
        match cmd {
            IOMMU_HWPT_INVALIDATE => hwpt_invalidate(self, buf),
            IOMMU_IOAS_MAP => ioas_map(self, buf, IOAS_MAP_MINSZ),
            IOMMU_IOAS_UNMAP => ioas_unmap(self, buf, IOAS_UNMAP_MINSZ),
            IOMMU_DESTROY => destroy(self, buf, 8),
            IOMMU_IOAS_ALLOC => ioas_alloc(self, buf, 12),
            IOMMU_IOAS_ALLOW_IOVAS => allow_iovas(self, buf, 24),
            IOMMU_IOAS_COPY => ioas_copy(self, buf, 40),
            IOMMU_IOAS_IOVA_RANGES => iova_ranges(self, buf, 32),
            IOMMU_HWPT_ALLOC => hwpt_alloc(self, buf, 24),
            IOMMU_GET_HW_INFO => hw_info(self, buf, 28),
            IOMMU_FAULT_QUEUE_ALLOC => fault_alloc(self, buf, 16),
            _ => Err(IommufdError::Refused {
                field: "cmd",
                value: cmd.into(),
                reason: "not an iommufd ioctl",
                errno: Errno::ENOTTY,
            }),
        }
    }

    /// Runs VFIO device ioctl `cmd` (`VFIO_DEVICE_BIND_IOMMUFD`, `_ATTACH_IOMMUFD_PT`,
    /// `_DETACH_IOMMUFD_PT`) as on the device fd of PCI function `sid`; the arguments are read
    /// the VFIO way (`argsz`, then the mandatory part).
    ///
    /// # Errors
    ///
    /// `EINVAL` for any `cmd` but BIND on a device not bound yet (before the argument is
    /// read), a short `argsz` or unknown flags; `ENOTTY` for an unknown `cmd` of a bound
    /// device; `EBADF` when BIND names another context's fd; then as
    /// [`IommufdCtx::bind_device`], [`IommufdCtx::attach`], [`IommufdCtx::detach`].
    pub fn device_ioctl(
        &self,
        sid: SourceId,
        cmd: u32,
        buf: &mut [u8],
    ) -> Result<(), IommufdError> {
        if cmd == VFIO_DEVICE_BIND_IOMMUFD {
            let arg = read_arg::<VfioDeviceBindIommufd>(buf, 16, "vfio_device_bind_iommufd")?;
            let v = arg.value;
            if v.flags != 0 {
                return Err(IommufdError::invalid("flags", v.flags.into(), "must be 0"));
            }
            if v.iommufd != self.fd() {
                return Err(IommufdError::Refused {
                    field: "iommufd",
                    value: v.iommufd as u64,
                    reason: "not this iommufd context's fd",
                    errno: Errno::EBADF,
                });
            }
            let dev_id = self.bind_device(sid)?;
            buf[12..16].copy_from_slice(&dev_id.to_le_bytes());
            return Ok(());
        }
        // VFIO answers every other ioctl of a device file not bound yet with EINVAL, before it
        // reads the argument (vfio_device_fops_unl_ioctl's access_granted).
        let dev_id = self.dev_id_of(sid)?;
        match cmd {
            VFIO_DEVICE_ATTACH_IOMMUFD_PT => {
                let arg = read_arg::<VfioDeviceAttachIommufdPt>(
                    buf,
                    12,
                    "vfio_device_attach_iommufd_pt",
                )?;
                let v = arg.value;
                let pasid = pasid_arg(v.flags, VFIO_DEVICE_ATTACH_PASID, arg.argsz, 16, v.pasid)?;
                let hwpt = self.attach(dev_id, v.pt_id, pasid)?;
                buf[8..12].copy_from_slice(&hwpt.to_le_bytes());
                Ok(())
            }
            VFIO_DEVICE_DETACH_IOMMUFD_PT => {
                let arg =
                    read_arg::<VfioDeviceDetachIommufdPt>(buf, 8, "vfio_device_detach_iommufd_pt")?;
                let v = arg.value;
                let pasid = pasid_arg(v.flags, VFIO_DEVICE_DETACH_PASID, arg.argsz, 12, v.pasid)?;
                self.detach(dev_id, pasid)
            }
            _ => Err(IommufdError::Refused {
                field: "cmd",
                value: cmd.into(),
                reason: "not a VFIO device iommufd ioctl",
                errno: Errno::ENOTTY,
            }),
        }
    }

    /// The device id function `sid` is bound under here (`EINVAL` when it is not bound, as
    /// VFIO answers an attach on an unbound device fd).
    pub fn dev_id_of(&self, sid: SourceId) -> Result<u32, IommufdError> {
        self.lock()
            .iter()
            .find_map(|(id, e)| match &e.object {
                Object::Device(d) if d.sid == sid => Some(id),
                _ => None,
            })
            .ok_or_else(|| {
                IommufdError::invalid(
                    "device",
                    sid.0.into(),
                    "the device is not bound to this iommufd context",
                )
            })
    }
}

/// The PASID of an attach or detach: only the PASID flag is known (`EINVAL` otherwise), and
/// with it `argsz` must reach past `pasid` (`xend`, as `vfio_df_ioctl_attach_pt` checks).
fn pasid_arg(
    flags: u32,
    flag: u32,
    argsz: u32,
    xend: u32,
    pasid: u32,
) -> Result<Option<u32>, IommufdError> {
    if flags & !flag != 0 {
        return Err(IommufdError::invalid(
            "flags",
            flags.into(),
            "only the PASID flag is defined",
        ));
    }
    if flags & flag == 0 {
        return Ok(None);
    }
    if argsz < xend {
        return Err(IommufdError::invalid(
            "argsz",
            argsz.into(),
            "the PASID flag needs the pasid field",
        ));
    }
    Ok(Some(pasid))
}

/// Reads a `T` from the start of `buf` the iommufd way (`read_iommufd_arg`). A caller of
/// this build's size — the usual case — gets a fixed-size copy, with nothing to check past
/// the size word; any other size goes through the full `copy_struct_from_user` rules.
#[inline]
fn read_cmd<T>(buf: &[u8], minsz: usize, what: &str) -> Result<(T, u32), IommufdError>
where
    T: FromBytes + IntoBytes,
{
    if let Some(size) = buf.get(..4) {
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        if size as usize == size_of::<T>() {
            if let Ok((cmd, _)) = T::read_from_prefix(buf) {
                return Ok((cmd, size));
            }
        }
    }
    Ok(read_iommufd_arg::<T>(buf, minsz, what)?)
}

/// Writes the answer back over at most `size` bytes (`write_iommufd_arg`), with a
/// fixed-size copy when the caller's struct is this build's.
#[inline]
fn write_cmd<T>(buf: &mut [u8], size: u32, cmd: &T) -> Result<(), IommufdError>
where
    T: IntoBytes + Immutable,
{
    let bytes = cmd.as_bytes();
    if size as usize == bytes.len() {
        if let Some(dst) = buf.get_mut(..bytes.len()) {
            dst.copy_from_slice(bytes);
            return Ok(());
        }
    }
    Ok(write_iommufd_arg(buf, size, cmd)?)
}

/// Reads a `T` from the start of `buf` the iommufd way, runs `f` on it, and writes the
/// (possibly updated) struct back when `f` succeeds.
fn run<T>(
    buf: &mut [u8],
    minsz: usize,
    what: &str,
    f: impl FnOnce(&mut T, &[u8]) -> Result<(), IommufdError>,
) -> Result<(), IommufdError>
where
    T: FromBytes + IntoBytes + Immutable,
{
    let (mut cmd, size) = read_cmd::<T>(buf, minsz, what)?;
    f(&mut cmd, buf)?;
    write_cmd(buf, size, &cmd)
}

/// The bytes at user pointer `ptr` (an offset into `buf`), `None` for NULL; an offset past
/// the buffer gives no bytes, so any read there faults.
fn user_bytes(buf: &[u8], ptr: u64) -> Option<&[u8]> {
    if ptr == 0 {
        return None;
    }
    let at = usize::try_from(ptr).unwrap_or(usize::MAX);
    Some(buf.get(at..).unwrap_or_default())
}

/// `EFAULT` for a user array that does not fit.
fn user_fault(what: &str, ptr: u64, len: usize) -> IommufdError {
    UapiError::fault(format!(
        "{what}: {len} bytes at {ptr:#x} are not in the buffer"
    ))
    .into()
}

fn destroy(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    let (cmd, _) = read_iommufd_arg::<IommuDestroy>(buf, minsz, "iommu_destroy")?;
    ctx.destroy(cmd.id)
}

fn ioas_alloc(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    run::<IommuIoasAlloc>(buf, minsz, "iommu_ioas_alloc", |cmd, _| ctx.ioas_alloc(cmd))
}

/// `IOMMU_IOAS_MAP`: `iova` is the only field it changes, so only `iova` goes back.
fn ioas_map(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    let (mut cmd, _) = read_cmd::<IommuIoasMap>(buf, minsz, "iommu_ioas_map")?;
    ctx.ioas_map(&mut cmd)?;
    write_u64_at(buf, std::mem::offset_of!(IommuIoasMap, iova), cmd.iova);
    Ok(())
}

/// `IOMMU_IOAS_UNMAP`: `length` is the only field it changes, so only `length` goes back.
fn ioas_unmap(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    let (mut cmd, _) = read_cmd::<IommuIoasUnmap>(buf, minsz, "iommu_ioas_unmap")?;
    ctx.ioas_unmap(&mut cmd)?;
    write_u64_at(
        buf,
        std::mem::offset_of!(IommuIoasUnmap, length),
        cmd.length,
    );
    Ok(())
}

/// Writes back the one output field of a call at byte `at` of the struct. Its callers' fields
/// lie inside the minimum size, which the argument reader made sure the caller passed, so
/// the whole answer is what writing the struct back over `size` bytes would give: the other
/// bytes are the caller's own.
#[inline]
fn write_u64_at(buf: &mut [u8], at: usize, value: u64) {
    if let Some(dst) = buf.get_mut(at..at + 8) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
}

fn ioas_copy(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    run::<IommuIoasCopy>(buf, minsz, "iommu_ioas_copy", |cmd, _| ctx.ioas_copy(cmd))
}

fn fault_alloc(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    run::<IommuFaultAlloc>(buf, minsz, "iommu_fault_alloc", |cmd, _| {
        ctx.fault_queue_alloc(cmd)
    })
}

fn hwpt_alloc(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    run::<IommuHwptAlloc>(buf, minsz, "iommu_hwpt_alloc", |cmd, buf| {
        let data = user_bytes(buf, cmd.data_uptr).unwrap_or_default();
        ctx.hwpt_alloc(cmd, data)
    })
}

fn allow_iovas(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    let (cmd, _) = read_iommufd_arg::<IommuIoasAllowIovas>(buf, minsz, "iommu_ioas_allow_iovas")?;
    if cmd.reserved != 0 {
        return Err(IommufdError::unsupported(
            "__reserved",
            cmd.reserved.into(),
            "must be 0",
        ));
    }
    ctx.lock().ioas(cmd.ioas_id, IommufdCtx::WRONG_KIND)?;
    let n = cmd.num_iovas as usize;
    let bytes = n.saturating_mul(size_of::<IommuIovaRange>());
    let ranges: Vec<IommuIovaRange> = if n == 0 {
        Vec::new()
    } else {
        // `iommufd_ioas_load_iovas` copies and checks one range at a time: the ranges that
        // fit in the buffer are checked before the first that does not faults.
        let avail = user_bytes(buf, cmd.allowed_iovas).unwrap_or_default();
        let whole: Vec<IommuIovaRange> = avail
            .chunks_exact(size_of::<IommuIovaRange>())
            .take(n)
            .map(|c| IommuIovaRange::read_from_bytes(c).expect("a whole range"))
            .collect();
        if whole.len() < n {
            crate::iova::check_allowed(&whole)?;
            return Err(user_fault("allowed_iovas", cmd.allowed_iovas, bytes));
        }
        whole
    };
    ctx.ioas_allow_iovas(cmd.ioas_id, &ranges)
}

fn iova_ranges(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    let (mut cmd, size) =
        read_iommufd_arg::<IommuIoasIovaRanges>(buf, minsz, "iommu_ioas_iova_ranges")?;
    if cmd.reserved != 0 {
        return Err(IommufdError::unsupported(
            "__reserved",
            cmd.reserved.into(),
            "must be 0",
        ));
    }
    let (ranges, alignment) = ctx.ioas_iova_ranges(cmd.ioas_id)?;
    let max = cmd.num_iovas as usize;
    let fit = ranges.len().min(max);
    if fit > 0 {
        let at = usize::try_from(cmd.allowed_iovas).unwrap_or(usize::MAX);
        let bytes = fit * size_of::<IommuIovaRange>();
        let dst = (cmd.allowed_iovas != 0)
            .then(|| buf.get_mut(at..at.saturating_add(bytes)))
            .flatten()
            .ok_or_else(|| user_fault("allowed_iovas", cmd.allowed_iovas, bytes))?;
        dst.copy_from_slice(ranges[..fit].as_bytes());
    }
    cmd.num_iovas = ranges.len() as u32;
    cmd.out_iova_alignment = alignment;
    write_iommufd_arg(buf, size, &cmd)?;
    if ranges.len() > max {
        return Err(IommufdError::Refused {
            field: "num_iovas",
            value: max as u64,
            reason: "the array is too small; num_iovas says how many ranges there are",
            errno: Errno::EMSGSIZE,
        });
    }
    Ok(())
}

fn hw_info(ctx: &IommufdCtx, buf: &mut [u8], minsz: usize) -> Result<(), IommufdError> {
    let (mut cmd, size) = read_iommufd_arg::<IommuHwInfo>(buf, minsz, "iommu_hw_info")?;
    let room = cmd.data_len as usize;
    let ptr = cmd.data_uptr;
    let data = ctx.hw_info(&mut cmd)?;
    // The driver data first: min(room, its size) bytes, then zeroes up to `room`.
    if room > 0 {
        let at = usize::try_from(ptr).unwrap_or(usize::MAX);
        let dst = (ptr != 0)
            .then(|| buf.get_mut(at..at.saturating_add(room)))
            .flatten()
            .ok_or_else(|| user_fault("data_uptr", ptr, room))?;
        let bytes = data.as_bytes();
        let n = room.min(bytes.len());
        dst[..n].copy_from_slice(&bytes[..n]);
        dst[n..].fill(0);
    }
    Ok(write_iommufd_arg(buf, size, &cmd)?)
}

/// `IOMMU_HWPT_INVALIDATE`: one entry in the usual setup, on the HWPT the last such call
/// found ([`one_entry`], [`IommufdCtx::invalidate_named`]: no general reader, no entry loop,
/// no lock), is answered here, in the caller's line: with `ioctl` inlined, the caller's own
/// frame serves it, and the success needs no `Result` to be written and read back. Anything
/// else goes out of line: such an entry on an HWPT not named to [`hwpt_invalidate_one`],
/// every other argument to the general path.
#[inline(always)]
fn hwpt_invalidate(ctx: &IommufdCtx, buf: &mut [u8]) -> Result<(), IommufdError> {
    let Some((hwpt_id, entry)) = one_entry(buf) else {
        return hwpt_invalidate_general(ctx, buf, 32);
    };
    if ctx.invalidate_named(hwpt_id, &entry) {
        return Ok(());
    }
    hwpt_invalidate_one(ctx, buf)
}

/// [`hwpt_invalidate`] for one entry of the usual shape on an HWPT not named (the first call
/// after the table changed): the entry is read again (rather than kept across the call, which
/// costs the fast path registers), and the HWPT is looked up under the table lock
/// ([`IommufdCtx::invalidate_one`]); what that declines takes the general path.
#[inline(never)]
fn hwpt_invalidate_one(ctx: &IommufdCtx, buf: &mut [u8]) -> Result<(), IommufdError> {
    if let Some((hwpt_id, entry)) = one_entry(buf) {
        if ctx.invalidate_one(hwpt_id, &entry) {
            return Ok(());
        }
    }
    hwpt_invalidate_general(ctx, buf, 32)
}

/// `IOMMU_HWPT_INVALIDATE` with every rule: the argument reader, then
/// [`IommufdCtx::hwpt_invalidate`].
#[inline(never)]
fn hwpt_invalidate_general(
    ctx: &IommufdCtx,
    buf: &mut [u8],
    minsz: usize,
) -> Result<(), IommufdError> {
    let (mut cmd, _) = read_cmd::<IommuHwptInvalidate>(buf, minsz, "iommu_hwpt_invalidate")?;
    let ptr = cmd.data_uptr;
    let Err(e) = ctx.hwpt_invalidate(&mut cmd, user_bytes(buf, ptr)) else {
        // Every entry was handled: `entry_num` is unchanged, and so is the rest of the
        // struct, so there is nothing to write back.
        return Ok(());
    };
    // entry_num goes back whatever the outcome, as Linux responds before returning rc; it
    // is the only field the call changes, and it lies inside the minimum size.
    const AT: usize = std::mem::offset_of!(IommuHwptInvalidate, entry_num);
    if let Some(dst) = buf.get_mut(AT..AT + 4) {
        dst.copy_from_slice(&cmd.entry_num.to_le_bytes());
    }
    Err(e)
}

/// The HWPT id and the one entry of an `IOMMU_HWPT_INVALIDATE` argument of the usual shape
/// that passes every check: this build's `size`, one entry of this build's `entry_len`, data
/// type VTD_S1, zero `__reserved`, the entry's bytes in the buffer at `data_uptr`, and the
/// entry's own checks (`IommuHwptVtdS1Invalidate::validate`: only the LEAF flag, zero
/// `__reserved`, a 4 KiB aligned `addr`) with fewer than 2^52 pages (so not "all"). The
/// fields are checked in one combined test. `None` for any other argument: the general path
/// then answers it, with the exact errno (and reads nothing differently: an entry of this
/// size is a plain copy there too).
#[inline(always)]
fn one_entry(buf: &[u8]) -> Option<(u32, IommuHwptVtdS1Invalidate)> {
    const SIZE: u32 = size_of::<IommuHwptInvalidate>() as u32;
    const LEN: usize = size_of::<IommuHwptVtdS1Invalidate>();
    let (cmd, _) = IommuHwptInvalidate::read_from_prefix(buf).ok()?;
    // The four fields after `data_uptr` (`data_type`, `entry_len`, `entry_num`,
    // `__reserved`) are two 64-bit words with one expected value each: two loads, two
    // compares.
    let pair = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    let odd = u64::from(cmd.size ^ SIZE)
        | (pair(cmd.data_type, cmd.entry_len)
            ^ pair(IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, LEN as u32))
        | (pair(cmd.entry_num, cmd.reserved) ^ pair(1, 0));
    if odd != 0 {
        return None;
    }
    // The whole entry in the buffer. NULL (0) needs no test of its own: the "entry" there
    // would be the header, whose `addr` (`size` = 32, then `hwpt_id`) is not 4 KiB aligned,
    // so the entry test below sends it to the general path (`EINVAL`).
    //
    // The usual layout has the entry right after the header (`data_uptr` = 32, as the
    // daemon's clients and the tests build it): that case is a branch on `data_uptr` and a
    // load at a fixed offset, so the entry's load need not wait for `data_uptr`'s (the
    // branch is predicted, and checked when the value arrives). With the other offsets
    // read in the same line the compiler merges the two loads into one at the loaded
    // offset, which puts a second load latency on the way to the request: they are read
    // out of line.
    let entry = if cmd.data_uptr == u64::from(SIZE) {
        let at = SIZE as usize;
        IommuHwptVtdS1Invalidate::read_from_bytes(buf.get(at..at + LEN)?).ok()?
    } else {
        entry_at_offset(buf, cmd.data_uptr)?
    };
    // The entry's checks, and a page count below 2^52 (so that its length in bytes does
    // not overflow): "all" (`npages = U64_MAX`) and longer counts take the general path.
    if !is_short(&entry) {
        return None;
    }
    debug_assert!(
        cmd.data_uptr != 0,
        "a NULL data_uptr passed the combined test"
    );
    Some((cmd.hwpt_id, entry))
}

/// [`one_entry`]'s entry at another offset than right after the header: the
/// `iommu_hwpt_vtd_s1_invalidate` at byte `data_uptr` of `buf`, `None` when it is not all in
/// the buffer.
#[inline(never)]
fn entry_at_offset(buf: &[u8], data_uptr: u64) -> Option<IommuHwptVtdS1Invalidate> {
    const LEN: usize = size_of::<IommuHwptVtdS1Invalidate>();
    let at = usize::try_from(data_uptr).ok()?;
    let bytes = buf.get(at..at.checked_add(LEN)?)?;
    IommuHwptVtdS1Invalidate::read_from_bytes(bytes).ok()
}
