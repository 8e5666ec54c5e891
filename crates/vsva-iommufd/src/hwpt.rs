//! HWPT objects (Linux `hw_pagetable.c`, the VT-d driver's `nested.c`): a paging HWPT is its
//! IOAS's stage 2 under a domain id of its own; a nested HWPT is a guest stage-1 table over a
//! nest-parent paging HWPT; `IOMMU_HWPT_INVALIDATE` passes the guest's stage-1 invalidations
//! to the IOMMU.

use vsva_iommu::{Invalidation, PageRange};
use vsva_uapi::iommufd::{
    IommuHwptAlloc, IommuHwptInvalidate, IommuHwptVtdS1, IommuHwptVtdS1Invalidate,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_PASID,
    IOMMU_HWPT_DATA_NONE, IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_FAULT_ID_VALID,
    IOMMU_HWPT_INVALIDATE_DATA_VTD_S1, IOMMU_VTD_INV_FLAGS_LEAF, IOMMU_VTD_INV_PAGE_SIZE,
};
use vsva_uapi::{Errno, UapiError};
use zerocopy::FromBytes;

use crate::ctx::IommufdCtx;
use crate::error::IommufdError;
#[cfg(doc)]
use crate::inv_target::InvTarget;
use crate::objects::{HwptNested, HwptPaging, Object, Target};

/// The bytes of `iommu_hwpt_vtd_s1` up to `__reserved`, the least a caller may pass.
const VTD_S1_MIN: usize = 24;
/// The bytes of `iommu_hwpt_vtd_s1_invalidate` up to `__reserved`.
const VTD_S1_INV_MIN: usize = 24;

/// Reads a driver-data struct of `len` bytes the way `iommu_copy_struct_from_user` does:
/// `len < min` → `EINVAL`, then `copy_struct_from_user` over `len` bytes (a non-zero tail
/// past the known struct → `E2BIG`, bytes not in `data` → `EFAULT`).
// Out of line: the usual sizes take the fixed-size copies of its callers, and this body
// (with its error messages) would crowd their loops.
#[inline(never)]
fn read_user_data<T>(data: &[u8], len: usize, min: usize, what: &str) -> Result<T, IommufdError>
where
    T: zerocopy::FromBytes + zerocopy::IntoBytes,
{
    // This build's size, the usual case: a fixed-size copy, no tail to check.
    if len == size_of::<T>() {
        if let Ok((value, _)) = T::read_from_prefix(data) {
            return Ok(value);
        }
    }
    if len < min {
        return Err(UapiError::invalid(format!(
            "{what}: {len} bytes, fewer than the {min} it needs"
        ))
        .into());
    }
    let known = size_of::<T>();
    if len > known {
        let Some(tail) = data.get(known..len) else {
            return Err(UapiError::fault(format!(
                "{what}: {len} bytes, but only {} are there",
                data.len()
            ))
            .into());
        };
        if tail.iter().any(|&b| b != 0) {
            return Err(UapiError::new(
                Errno::E2BIG,
                format!("{what}: bytes past the {known} known here are not zero"),
            )
            .into());
        }
    }
    let copy = len.min(known);
    let Some(src) = data.get(..copy) else {
        return Err(UapiError::fault(format!(
            "{what}: {copy} bytes needed, but only {} are there",
            data.len()
        ))
        .into());
    };
    let mut value = T::new_zeroed();
    value.as_mut_bytes()[..copy].copy_from_slice(src);
    Ok(value)
}

impl IommufdCtx {
    /// `IOMMU_HWPT_ALLOC` (`iommufd_hwpt_alloc`): a paging HWPT over an IOAS (`pt_id`), or a
    /// nested one with a VT-d stage 1 (`data`, the `data_len` bytes at `data_uptr`) over a
    /// nest-parent paging HWPT; its id goes to `out_hwpt_id`.
    ///
    /// # Errors
    ///
    /// In Linux's order: `__reserved` → `EOPNOTSUPP` (`__reserved2` is not checked); data
    /// type and length disagreeing → `EINVAL`; unknown device → `ENOENT`; unknown `pt_id` →
    /// `EINVAL`; then per kind (see `tests/errno_table/`): unknown flags, dirty tracking,
    /// FAULT_ID_VALID with NEST_PARENT, data for a paging HWPT, NEST_PARENT or a nested HWPT
    /// without nesting, no data, a data type other than VTD_S1 → `EOPNOTSUPP`; a parent that is not a nest parent, `pt_id` of another kind → `EINVAL`;
    /// the VT-d data's copy rules (`EINVAL` / `E2BIG` / `EFAULT`); an unknown fault queue →
    /// `ENOENT`; no domain id left → `ENOSPC`. Nothing is created then. The VT-d data's
    /// `flags`, `__reserved` and `addr_width` are not checked here (see
    /// [`IommufdCtx::attach`]).
    pub fn hwpt_alloc(&self, cmd: &mut IommuHwptAlloc, data: &[u8]) -> Result<(), IommufdError> {
        // Only `__reserved`: `iommufd_hwpt_alloc` does not look at `__reserved2`.
        if cmd.reserved != 0 {
            return Err(IommufdError::unsupported(
                "__reserved",
                cmd.reserved.into(),
                "must be 0",
            ));
        }
        if (cmd.data_type == IOMMU_HWPT_DATA_NONE) != (cmd.data_len == 0) {
            return Err(IommufdError::invalid(
                "data_len",
                cmd.data_len.into(),
                "data_len must be 0 exactly when data_type is NONE",
            ));
        }
        let mut objs = self.lock();
        objs.device(cmd.dev_id, Self::WRONG_KIND)?;
        // `iommufd_hwpt_alloc` answers a `pt_id` naming no object `EINVAL`, not `ENOENT`.
        let pt = objs.get(cmd.pt_id).map_err(|_| {
            IommufdError::invalid("pt_id", cmd.pt_id.into(), "no object has this id")
        })?;
        let object = match &pt.object {
            Object::Ioas(_) => Object::HwptPaging(self.paging_for(cmd)?),
            Object::HwptPaging(parent) => Object::HwptNested(self.nested_for(cmd, parent, data)?),
            other => {
                return Err(IommufdError::WrongKind {
                    id: cmd.pt_id,
                    wanted: "an IOAS or a paging HWPT",
                    found: other.kind(),
                    errno: Errno::EINVAL,
                })
            }
        };
        let fault = if cmd.flags & IOMMU_HWPT_FAULT_ID_VALID != 0 {
            objs.fault(cmd.fault_id, Self::WRONG_KIND)?;
            Some(cmd.fault_id)
        } else {
            None
        };
        let did = self.vfio.alloc_domain_id()?;
        let object = match object {
            Object::HwptPaging(h) => Object::HwptPaging(HwptPaging { did, fault, ..h }),
            Object::HwptNested(h) => Object::HwptNested(HwptNested { did, fault, ..h }),
            other => other,
        };
        let parent = match &object {
            Object::HwptPaging(h) => h.ioas,
            Object::HwptNested(h) => h.parent,
            _ => unreachable!("only HWPTs are built here"),
        };
        let id = objs.insert(object);
        objs.hold(parent);
        if let Some(f) = fault {
            objs.hold(f);
        }
        cmd.out_hwpt_id = id;
        Ok(())
    }

    /// The checks of a paging HWPT (`iommufd_hwpt_paging_alloc` and the VT-d driver's
    /// `intel_iommu_domain_alloc_paging_flags`).
    fn paging_for(&self, cmd: &IommuHwptAlloc) -> Result<HwptPaging, IommufdError> {
        let valid = IOMMU_HWPT_ALLOC_NEST_PARENT
            | IOMMU_HWPT_ALLOC_DIRTY_TRACKING
            | IOMMU_HWPT_FAULT_ID_VALID
            | IOMMU_HWPT_ALLOC_PASID;
        if cmd.flags & !valid != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "unknown IOMMU_HWPT_ALLOC flag",
            ));
        }
        if cmd.flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "dirty tracking is not offered",
            ));
        }
        // `iommufd_hwpt_paging_alloc`: a nest parent's faults are its nested HWPTs' to report.
        // Before the fault queue is looked up.
        if cmd.flags & IOMMU_HWPT_FAULT_ID_VALID != 0
            && cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0
        {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "FAULT_ID_VALID and NEST_PARENT do not go together",
            ));
        }
        if cmd.data_type != IOMMU_HWPT_DATA_NONE {
            return Err(IommufdError::unsupported(
                "data_type",
                cmd.data_type.into(),
                "a paging HWPT takes no driver data",
            ));
        }
        // The VT-d driver's `intel_iommu_domain_alloc_second_stage`: a nest parent needs an
        // IOMMU that nests (`nested_supported`).
        if cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0 && !self.vfio.iommu().config().nesting {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "NEST_PARENT needs an IOMMU with nesting (ECAP.NEST)",
            ));
        }
        Ok(HwptPaging {
            ioas: cmd.pt_id,
            did: 0,
            nest_parent: cmd.flags & IOMMU_HWPT_ALLOC_NEST_PARENT != 0,
            pasid_compat: cmd.flags & IOMMU_HWPT_ALLOC_PASID != 0,
            auto: false,
            fault: None,
        })
    }

    /// The checks of a nested HWPT (`iommufd_hwpt_nested_alloc`, then the VT-d driver's
    /// `intel_iommu_domain_alloc_nested`).
    fn nested_for(
        &self,
        cmd: &IommuHwptAlloc,
        parent: &HwptPaging,
        data: &[u8],
    ) -> Result<HwptNested, IommufdError> {
        if cmd.flags & !(IOMMU_HWPT_FAULT_ID_VALID | IOMMU_HWPT_ALLOC_PASID) != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "a nested HWPT takes only FAULT_ID_VALID and PASID",
            ));
        }
        if cmd.data_len == 0 {
            return Err(IommufdError::unsupported(
                "data_len",
                0,
                "a nested HWPT needs driver data",
            ));
        }
        if parent.auto || !parent.nest_parent {
            return Err(IommufdError::invalid(
                "pt_id",
                cmd.pt_id.into(),
                "the parent HWPT was not allocated with NEST_PARENT",
            ));
        }
        // The VT-d driver's checks (`intel_iommu_domain_alloc_nested`), after the parent's.
        if !self.vfio.iommu().config().nesting {
            return Err(IommufdError::unsupported(
                "pt_id",
                cmd.pt_id.into(),
                "a nested HWPT needs an IOMMU with nesting (ECAP.NEST)",
            ));
        }
        if cmd.data_type != IOMMU_HWPT_DATA_VTD_S1 {
            return Err(IommufdError::unsupported(
                "data_type",
                cmd.data_type.into(),
                "only IOMMU_HWPT_DATA_VTD_S1 is offered",
            ));
        }
        // Copied with `copy_struct_from_user` rules and kept as given: the driver checks
        // neither `flags` nor `__reserved` here, and `addr_width`, SRE and EAFE only when a
        // device is attached (`intel_pasid_setup_nested`, [`IommufdCtx::attach`]).
        let s1: IommuHwptVtdS1 =
            read_user_data(data, cmd.data_len as usize, VTD_S1_MIN, "iommu_hwpt_vtd_s1")?;
        Ok(HwptNested {
            parent: cmd.pt_id,
            did: 0,
            s1,
            pasid_compat: cmd.flags & IOMMU_HWPT_ALLOC_PASID != 0,
            fault: None,
            attached: Vec::new(),
        })
    }

    /// `IOMMU_HWPT_INVALIDATE` (`iommufd_hwpt_invalidate`, then the VT-d driver's
    /// `intel_nested_cache_invalidate_user`): applies the VT-d stage-1 invalidations in
    /// `data` (`entry_num` entries of `entry_len` bytes, `None` for a null `data_uptr`) to the
    /// nested HWPT, in order, and writes how many were handled to `entry_num` — also when one
    /// fails.
    ///
    /// # Errors
    ///
    /// `__reserved` → `EOPNOTSUPP`; entries without data or length → `EINVAL`; unknown HWPT →
    /// `ENOENT`; not a nested HWPT, a data type other than VTD_S1 → `EINVAL`; per entry:
    /// `entry_len` below 24 → `EINVAL`, a non-zero tail → `E2BIG`, unknown flags or
    /// `__reserved` → `EOPNOTSUPP`, unaligned `addr` or "all" with an address → `EINVAL`. The
    /// entries before the failing one were applied.
    #[inline]
    pub fn hwpt_invalidate(
        &self,
        cmd: &mut IommuHwptInvalidate,
        data: Option<&[u8]>,
    ) -> Result<(), IommufdError> {
        let mut done = 0;
        // On success every entry was handled: `entry_num` already says so.
        if let Err(e) = self.invalidate_entries(cmd, data, &mut done) {
            cmd.entry_num = done;
            return Err(e);
        }
        Ok(())
    }

    fn invalidate_entries(
        &self,
        cmd: &IommuHwptInvalidate,
        data: Option<&[u8]>,
        done: &mut u32,
    ) -> Result<(), IommufdError> {
        if cmd.reserved != 0 {
            return Err(IommufdError::unsupported(
                "__reserved",
                cmd.reserved.into(),
                "must be 0",
            ));
        }
        if cmd.entry_num != 0 && (data.is_none() || cmd.entry_len == 0) {
            return Err(IommufdError::invalid(
                "entry_num",
                cmd.entry_num.into(),
                "entries need data_uptr and entry_len",
            ));
        }
        let mut objs = self.lock();
        let (h, pending) = objs.nested_with_pending(cmd.hwpt_id)?;
        if cmd.data_type != IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 {
            return Err(IommufdError::invalid(
                "data_type",
                cmd.data_type.into(),
                "only IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 is offered",
            ));
        }
        let data = data.unwrap_or_default();
        let len = cmd.entry_len as usize;
        let n = cmd.entry_num as usize;
        let mamv = self.mamv;
        // The usual nested setup: entries of this build's size, one device or PASID attached
        // without a device TLB — one request per entry, read in place from the buffer.
        if let (Some(entries), [t]) = (entry_slice(data, n, len), h.attached.as_slice()) {
            if !t.ats {
                let pasid = t.pasid.unwrap_or(0);
                return self.invalidate_one_target(entries, h.did, pasid, mamv, pending, done);
            }
        }
        for index in 0..n {
            let entry = match entry_at(data, index, len) {
                Ok(entry) => entry,
                Err(e) => return Err(self.stop_at(pending, index, done, e)),
            };
            if let Err(e) = entry.validate() {
                return Err(self.stop_at(pending, index, done, e.into()));
            }
            push_nested(pending, &h.attached, h.did, mamv, &entry);
            if pending.len() >= SUBMIT_AT {
                self.issue(pending, WHAT);
                pending.clear();
            }
        }
        self.issue(pending, WHAT);
        pending.clear();
        *done = cmd.entry_num;
        Ok(())
    }

    /// Applies `entries` to domain `did` for the one PASID (0: requests without PASID)
    /// attached, without a device TLB: each entry is checked and becomes one request, and
    /// the requests go to the IOMMU [`SUBMIT_AT`] at a time (a single entry straight from
    /// the stack). On a bad entry, those before it are applied and counted in `done`.
    #[inline(always)]
    fn invalidate_one_target(
        &self,
        entries: &[IommuHwptVtdS1Invalidate],
        did: u16,
        pasid: u32,
        mamv: u8,
        pending: &mut Vec<Invalidation>,
        done: &mut u32,
    ) -> Result<(), IommufdError> {
        if let [entry] = entries {
            if let Err(e) = entry.validate() {
                return Err(self.stop_at(pending, 0, done, e.into()));
            }
            self.issue(&[pasid_request(entry, did, pasid, mamv)], WHAT);
            *done = 1;
            return Ok(());
        }
        for (c, chunk) in entries.chunks(SUBMIT_AT).enumerate() {
            // The usual array: every entry passes the combined test (valid, fewer than 2^52
            // pages): the checks are one pass of loads and compares, and the requests are
            // written in a second, with the buffer's room reserved once and its length set
            // once. Otherwise entry by entry, up to a bad one.
            if chunk.iter().all(is_short) {
                pending.extend(
                    chunk
                        .iter()
                        .map(move |e| short_request(e, did, pasid, mamv)),
                );
                self.issue(pending, WHAT);
                pending.clear();
                continue;
            }
            for (i, entry) in chunk.iter().enumerate() {
                if let Err(e) = entry.validate() {
                    return Err(self.stop_at(pending, c * SUBMIT_AT + i, done, e.into()));
                }
                pending.push(pasid_request(entry, did, pasid, mamv));
            }
            self.issue(pending, WHAT);
            pending.clear();
        }
        *done = entries.len() as u32;
        Ok(())
    }

    /// The one-entry `IOMMU_HWPT_INVALIDATE` of the usual setup when nested HWPT `hwpt_id` is
    /// the one the last such call found under the table lock, unchanged since
    /// ([`InvTarget`]): its one request goes to the IOMMU, built straight into the call, with
    /// no table lock, and this returns `true`. `entry` passed its checks (`validate`) with
    /// fewer than 2^52 pages. Otherwise it returns `false` having done nothing, and the caller
    /// runs [`Self::invalidate_one`]. Inlined into the caller's line (the byte-level entry's
    /// fast path): it is a load, a compare and the request.
    #[inline(always)]
    pub(crate) fn invalidate_named(&self, hwpt_id: u32, entry: &IommuHwptVtdS1Invalidate) -> bool {
        let Some((did, pasid)) = self.inv_target.get(hwpt_id) else {
            return false;
        };
        self.issue_short(entry, did, pasid);
        true
    }

    /// The one-entry `IOMMU_HWPT_INVALIDATE` of the usual setup, for an `entry` that passed
    /// its checks (`validate`) with fewer than 2^52 pages, looked up under the table lock:
    /// when nested HWPT `hwpt_id` has one PASID (or requests without PASID) attached,
    /// without a device TLB, its one request goes to the IOMMU, built straight into the
    /// call, the HWPT is named for the next calls ([`Self::invalidate_named`]), and this
    /// returns `true`. Otherwise it returns `false` having done nothing, and the caller runs
    /// the general path ([`IommufdCtx::hwpt_invalidate`]), which finds the errno; the two
    /// apply the same request.
    #[inline]
    pub(crate) fn invalidate_one(&self, hwpt_id: u32, entry: &IommuHwptVtdS1Invalidate) -> bool {
        let objs = self.lock();
        let Some((did, pasid)) = objs.nested_single_target(hwpt_id) else {
            return false;
        };
        self.issue_short(entry, did, pasid);
        self.inv_target.set(hwpt_id, did, pasid);
        drop(objs);
        true
    }

    /// Entry `index` failed with `e`: the entries before it are applied (as Linux applies
    /// each entry before reading the next) and counted in `done`.
    #[cold]
    fn stop_at(
        &self,
        pending: &mut Vec<Invalidation>,
        index: usize,
        done: &mut u32,
        e: IommufdError,
    ) -> IommufdError {
        self.issue(pending, WHAT);
        pending.clear();
        *done = index as u32;
        e
    }
}

/// Entry `index` of an invalidation array of `len`-byte entries, read as
/// `iommu_copy_struct_from_user_array` does. An entry of this build's size, the usual case,
/// is a fixed-size copy at `index * len`; any other size goes through [`read_user_data`].
#[inline(always)]
fn entry_at(
    data: &[u8],
    index: usize,
    len: usize,
) -> Result<IommuHwptVtdS1Invalidate, IommufdError> {
    if len == size_of::<IommuHwptVtdS1Invalidate>() {
        let at = index * len;
        if let Some(Ok(entry)) = data
            .get(at..at + len)
            .map(IommuHwptVtdS1Invalidate::read_from_bytes)
        {
            return Ok(entry);
        }
    }
    let from = data.get(index.saturating_mul(len)..).unwrap_or_default();
    read_user_data(from, len, VTD_S1_INV_MIN, "iommu_hwpt_vtd_s1_invalidate")
}

/// The first `n` entries of `data` as one slice of `iommu_hwpt_vtd_s1_invalidate`, read in
/// place: when they are of this build's size (`len`), all in the buffer, and aligned there
/// (the usual case). `None` otherwise: [`entry_at`] then reads them one by one, with the
/// size rules and the fault at the entry that does not fit.
#[inline(always)]
fn entry_slice(data: &[u8], n: usize, len: usize) -> Option<&[IommuHwptVtdS1Invalidate]> {
    if len != size_of::<IommuHwptVtdS1Invalidate>() {
        return None;
    }
    let bytes = data.get(..n.checked_mul(len)?)?;
    <[IommuHwptVtdS1Invalidate]>::ref_from_bytes(bytes).ok()
}

/// The one request of a checked entry for PASID `pasid` of domain `did`: its page range,
/// or everything of the domain for "all" or a range past CAP.MAMV (`mamv`).
#[inline(always)]
fn pasid_request(entry: &IommuHwptVtdS1Invalidate, did: u16, pasid: u32, mamv: u8) -> Invalidation {
    match entry_range(entry, mamv) {
        Some(range) => Invalidation::PasidIotlbPages {
            did,
            pasid,
            range,
            ih: entry.flags & IOMMU_VTD_INV_FLAGS_LEAF != 0,
        },
        None => Invalidation::PasidIotlbAll { did },
    }
}

/// True for an entry that passes its checks (`validate`: only the LEAF flag, zero
/// `__reserved`, a 4 KiB aligned `addr`) with fewer than 2^52 pages (so its length in bytes
/// does not overflow, and it is not "all"), in one combined test.
#[inline(always)]
pub(crate) fn is_short(entry: &IommuHwptVtdS1Invalidate) -> bool {
    let bad = u64::from(entry.flags & !IOMMU_VTD_INV_FLAGS_LEAF)
        | u64::from(entry.reserved)
        | (entry.addr & (IOMMU_VTD_INV_PAGE_SIZE - 1))
        | (entry.npages >> (64 - IOMMU_VTD_INV_PAGE_SIZE.trailing_zeros()));
    debug_assert!(
        bad != 0 || entry.validate().is_ok(),
        "{entry:?} passed the combined test"
    );
    bad == 0
}

/// The one request of an entry that [`is_short`]: [`pasid_request`] without the tests of
/// "all" and of an overflowing length.
#[inline(always)]
fn short_request(entry: &IommuHwptVtdS1Invalidate, did: u16, pasid: u32, mamv: u8) -> Invalidation {
    const PAGE_SHIFT: u32 = IOMMU_VTD_INV_PAGE_SIZE.trailing_zeros();
    let range = PageRange::covering(entry.addr, entry.npages << PAGE_SHIFT);
    let inv = if range.am <= mamv {
        Invalidation::PasidIotlbPages {
            did,
            pasid,
            range,
            ih: entry.flags & IOMMU_VTD_INV_FLAGS_LEAF != 0,
        }
    } else {
        Invalidation::PasidIotlbAll { did }
    };
    debug_assert_eq!(inv, pasid_request(entry, did, pasid, mamv));
    inv
}

impl IommufdCtx {
    /// Issues the one request of an entry of fewer than 2^52 pages (its length in bytes does
    /// not overflow, and it is not "all") for PASID `pasid` of domain `did`: [`pasid_request`]
    /// without those two tests. Each request is built in its own branch, so that the page
    /// request is stored as a direct caller stores it (built as one value, the two variants'
    /// stores were merged into a select of the domain id over the address).
    #[inline(always)]
    fn issue_short(&self, entry: &IommuHwptVtdS1Invalidate, did: u16, pasid: u32) {
        const PAGE_SHIFT: u32 = IOMMU_VTD_INV_PAGE_SIZE.trailing_zeros();
        debug_assert!(
            entry.npages >> (64 - PAGE_SHIFT) == 0,
            "{entry:?} is not short"
        );
        let range = PageRange::covering(entry.addr, entry.npages << PAGE_SHIFT);
        if range.am <= self.mamv {
            let inv = Invalidation::PasidIotlbPages {
                did,
                pasid,
                range,
                ih: entry.flags & IOMMU_VTD_INV_FLAGS_LEAF != 0,
            };
            debug_assert_eq!(inv, pasid_request(entry, did, pasid, self.mamv));
            self.issue(&[inv], WHAT);
        } else {
            let inv = Invalidation::PasidIotlbAll { did };
            debug_assert_eq!(inv, pasid_request(entry, did, pasid, self.mamv));
            self.issue(&[inv], WHAT);
        }
    }
}

/// What [`IommufdCtx::issue`] names when the IOMMU refuses a stage-1 invalidation.
const WHAT: &str = "a nested HWPT's stage-1 invalidation";

/// Invalidations gathered before they go to the IOMMU as one submission (one wait): a
/// 64-entry `IOMMU_HWPT_INVALIDATE` on one PASID is one submission, and the buffer stays
/// small whatever `entry_num` says.
const SUBMIT_AT: usize = 64;

/// The page-selective range of an entry, or `None` for everything of the domain: "all"
/// (`npages` = `U64_MAX`), a length that overflows, or a range past CAP.MAMV (`mamv`).
#[inline]
fn entry_range(entry: &IommuHwptVtdS1Invalidate, mamv: u8) -> Option<PageRange> {
    entry
        .npages
        .checked_mul(IOMMU_VTD_INV_PAGE_SIZE)
        .filter(|_| !entry.is_all())
        .map(|len| PageRange::covering(entry.addr, len))
        .filter(|r| r.am <= mamv)
}

/// Appends what the IOMMU must drop for one entry of a nested HWPT (domain `did`): the
/// PASID-selective IOTLB range of every device and PASID attached to it (`targets`), or
/// everything of the domain for "all" or a range past CAP.MAMV (`mamv`), and the device TLB
/// of the targets that cache translations. The common case (one PASID, no ATS) is exactly
/// the one request a direct caller makes.
#[inline]
fn push_nested(
    pending: &mut Vec<Invalidation>,
    targets: &[Target],
    did: u16,
    mamv: u8,
    entry: &IommuHwptVtdS1Invalidate,
) {
    let range = entry_range(entry, mamv);
    if range.is_none() {
        pending.push(Invalidation::PasidIotlbAll { did });
    }
    let ih = entry.flags & IOMMU_VTD_INV_FLAGS_LEAF != 0;
    for t in targets {
        if let Some(range) = range {
            pending.push(Invalidation::PasidIotlbPages {
                did,
                pasid: t.pasid.unwrap_or(0),
                range,
                ih,
            });
        }
        if t.ats {
            pending.push(Invalidation::DeviceTlb {
                source_id: t.sid,
                pasid: t.pasid,
                pages: range,
            });
        }
    }
}
