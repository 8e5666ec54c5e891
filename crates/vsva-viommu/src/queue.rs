//! The invalidation queue: fetching descriptors from guest memory between IQH and IQT
//! (128- or 256-bit per IQA.DW), carrying each out, and stopping with IQE (and an IQERCD
//! code) at a descriptor that cannot be carried out, where IQH stays until software clears
//! IQE.

use tracing::warn;
use vsva_iommu::prq::{PageResponse, ResponseCode};
use vsva_iommu::SourceId;
use vsva_uapi::iommu::CacheSet;
use vsva_uapi::{CacheInvalidateRequest, Granularity};

use crate::backend::BackendError;
use crate::descriptor::{
    decode, decode_pasid_cache, decode_pasid_iotlb, device_tlb_range, Descriptor, DescriptorError,
    PasidCacheScope, PasidIotlbScope,
};
use crate::interrupt::{raise, FAULT_EVENT, INV_EVENT};
use crate::regs::{
    ADDR_MASK, FSTS, FSTS_IQE, GCMD_QIE, GSTS, ICS, ICS_IWC, IQA, IQA_DW, IQA_QS_MASK, IQERCD, IQH,
    IQT, IQ_OFFSET_MASK, RTADDR_TTM_RESERVED, RTADDR_TTM_SCALABLE, RTADDR_TTM_SHIFT,
};
use crate::shadow::SyncScope;
use crate::unit::Unit;

/// IQERCD.IQEI codes (bits 3:0 of the Invalidation Queue Error Record Register, offset 0xB0,
/// in the VT-d specification's register chapter; checked against Intel's published register
/// reference of IQERCD_REG, which lists 0 "info not available" and 1-5 as below; 6 is the
/// code VT-d 3.x adds for a tail not aligned to a 256-bit descriptor, which VirtualBox's
/// VT-d model, written from the specification, reports for that case too, and 7 the one it
/// names `VTDIQEI_INVALID_TTM` and reports when RTADDR's TTM is the reserved 10b). The other
/// fields of the register are ITESID (47:32) and ICESID (63:48), valid only with FSTS.ITE /
/// FSTS.ICE, which the model never sets: the host's invalidations are synchronous, so no
/// device-TLB invalidation can time out or complete wrongly.
pub(crate) mod iqei {
    /// 1, "hardware detected an invalid Tail Pointer": a tail beyond the queue.
    pub(crate) const INVALID_TAIL: u64 = 1;
    /// 2, "hardware attempt to fetch descriptor resulted in error".
    pub(crate) const FETCH: u64 = 2;
    /// 3, "hardware detected an invalid descriptor type".
    pub(crate) const INVALID_TYPE: u64 = 3;
    /// 4, "hardware detected a reserved field violation for a valid descriptor type".
    pub(crate) const RESERVED: u64 = 4;
    /// 5, "hardware detected an invalid descriptor width programmed in the Invalidation
    /// Queue Address register": 128-bit descriptors (IQA.DW clear) while the root table is
    /// in scalable mode, where only 256-bit descriptors are valid (VT-d 6.5.2).
    pub(crate) const WIDTH: u64 = 5;
    /// 6, the queue tail is not aligned to a 256-bit descriptor while IQA.DW is set (IQT bit
    /// 4 set).
    pub(crate) const TAIL_MISALIGNED: u64 = 6;
    /// 7, an invalid translation table mode: the root table SRTP latched has TTM = 10b,
    /// reserved. VirtualBox (`dmarR3InvQueueThread`) checks it before the tail pointer.
    pub(crate) const INVALID_TTM: u64 = 7;
}

/// Logs a CACHE_INVLD the host failed (off the success path).
#[cold]
#[inline(never)]
fn host_invalidation_failed(e: &BackendError) {
    warn!(error = %e, "host CACHE_INVLD failed");
}

/// The PASIDs a PASID-cache invalidation of domain `did`, PASID `pasid` and `scope`
/// re-synchronises.
#[inline(always)]
fn sync_scope(did: u16, pasid: u32, scope: PasidCacheScope) -> SyncScope {
    match scope {
        PasidCacheScope::Domain => SyncScope::Domain(did),
        PasidCacheScope::Pasid => SyncScope::Pasid(pasid),
        PasidCacheScope::Global => SyncScope::All,
    }
}

/// Largest address mask a page-selective descriptor is passed to the host with; larger ones
/// become whole-PASID invalidations.
const MAX_AM: u8 = 52;

impl Unit {
    /// Sets IQE with `code`, raises the fault event; the queue stops.
    #[inline(never)]
    fn queue_error(&mut self, code: u64) {
        let fsts = self.regs.get32(FSTS);
        self.regs.set32(FSTS, fsts | FSTS_IQE);
        let rec = self.regs.get(IQERCD);
        self.regs.set(IQERCD, (rec & !0xf) | code);
        self.stats.queue_errors += 1;
        if fsts & FSTS_IQE == 0 {
            let m = raise(&mut self.regs, FAULT_EVENT);
            self.send(m);
        }
    }

    /// Carries out the descriptors from IQH to IQT, unless queued invalidation is off or an
    /// IQE is pending. The queue registers are read once and IQH written once, when the
    /// pass ends: after the last descriptor, or at the one that stopped the queue (the unit
    /// is locked for the whole pass, so no access sees IQH in between).
    pub(crate) fn process_queue(&mut self) {
        if self.regs.get32(GSTS) & GCMD_QIE == 0 || self.regs.get32(FSTS) & FSTS_IQE != 0 {
            return;
        }
        let tail = self.regs.get(IQT) & IQ_OFFSET_MASK;
        let head = self.regs.get(IQH) & IQ_OFFSET_MASK;
        if head == tail {
            return;
        }
        let iqa = self.regs.get(IQA);
        let wide = iqa & IQA_DW != 0;
        let size = 4096u64 << (iqa & IQA_QS_MASK);
        if wide && tail & 0x10 != 0 {
            return self.queue_error(iqei::TAIL_MISALIGNED);
        }
        // The root table's translation table mode (bits 11:10 of the latched RTADDR), or
        // none before SRTP.
        let ttm = self.root.map_or(u64::MAX, |r| r >> RTADDR_TTM_SHIFT & 3);
        if ttm == RTADDR_TTM_RESERVED {
            return self.queue_error(iqei::INVALID_TTM);
        }
        if tail >= size {
            return self.queue_error(iqei::INVALID_TAIL);
        }
        if ttm == RTADDR_TTM_SCALABLE && !wide {
            return self.queue_error(iqei::WIDTH);
        }
        let (head, error) = self.run_queue(iqa & ADDR_MASK, head, tail, size, wide);
        self.regs.set(IQH, head);
        if let Some(code) = error {
            self.queue_error(code);
        }
    }

    /// Fetches, decodes and carries out the descriptors of the queue of `size` bytes at
    /// `base` from offset `head` to `tail`; returns where it stopped and, when a descriptor
    /// stopped it, the IQEI code.
    #[inline(always)]
    fn run_queue(
        &mut self,
        base: u64,
        mut head: u64,
        tail: u64,
        size: u64,
        wide: bool,
    ) -> (u64, Option<u64>) {
        let step = if wide { 32 } else { 16 };
        let mut done = 0;
        let error = loop {
            if head == tail {
                break None;
            }
            // Fetched as qwords straight into the decoder's input: no byte buffer. A 128-bit
            // descriptor fills the first two, the others are zero.
            let fetched = if wide {
                self.mem.read_descriptor(base + head)
            } else {
                let mut q = [0u64; 4];
                self.mem.read_qwords(base + head, &mut q[..2]).map(|()| q)
            };
            let Ok(q) = fetched else {
                break Some(iqei::FETCH);
            };
            // One test of the type for the common descriptor, carried out in line; any
            // other type is decoded and carried out out of line.
            let outcome = match decode_pasid_iotlb(q, wide) {
                Some(Ok((_, pasid, scope))) => {
                    self.pasid_iotlb(pasid, scope);
                    Ok(())
                }
                Some(Err(e)) => Err(e),
                // The PASID-cache descriptor (what makes the shadowing bind or unbind) is
                // recognised the same way and synchronises without the general decode.
                None => match decode_pasid_cache(q, wide) {
                    Some(Ok((did, pasid, scope))) => {
                        self.sync(sync_scope(did, pasid, scope));
                        Ok(())
                    }
                    Some(Err(e)) => Err(e),
                    None => self.carry_out(q, wide),
                },
            };
            match outcome {
                Ok(()) => {}
                Err(DescriptorError::InvalidType(_)) => break Some(iqei::INVALID_TYPE),
                Err(DescriptorError::Reserved(_)) => break Some(iqei::RESERVED),
            }
            done += 1;
            // The size is a power of two.
            head = (head + step) & (size - 1);
        };
        self.stats.descriptors += done;
        (head, error)
    }

    /// Decodes and carries out a descriptor of any type.
    #[inline(never)]
    fn carry_out(&mut self, q: [u64; 4], wide: bool) -> Result<(), DescriptorError> {
        let d = decode(q, wide)?;
        self.execute(d);
        Ok(())
    }

    /// A PASID-based IOTLB invalidation: CACHE_INVLD PASID or ADDR for a PASID bound for the
    /// guest.
    #[inline(always)]
    fn pasid_iotlb(&mut self, pasid: u32, scope: PasidIotlbScope) {
        if !self.shadow.contains_key(&pasid) {
            return;
        }
        let p = Some(u64::from(pasid));
        let g = match scope {
            PasidIotlbScope::Page { addr, am, ih }
                if am <= MAX_AM && addr.checked_add(4096 << am).is_some() =>
            {
                Granularity::Addr {
                    pasid: p,
                    archid: None,
                    addr,
                    granule_size: 4096,
                    nb_granules: 1 << am,
                    leaf: ih,
                }
            }
            _ => Granularity::Pasid {
                pasid: p,
                archid: None,
            },
        };
        // The request is built here, in the caller's frame, and passed by reference: no
        // copy of the granularity into an out-of-line call. IOTLB at PASID or ADDR is always
        // a valid pair.
        // Matched by reference: the request is not moved out of the `Result` it was built in.
        match &CacheInvalidateRequest::new(CacheSet::IOTLB, g) {
            Ok(req) => self.send_invalidation(req),
            Err(_) => debug_assert!(false, "invalid (cache, granularity) pair built"),
        }
    }

    /// Carries out one descriptor.
    #[inline]
    fn execute(&mut self, d: Descriptor) {
        match d {
            // A context entry may point at another PASID directory: every PASID is re-read
            // (in scalable mode domain ids live in PASID entries, not context entries).
            Descriptor::ContextCache(_) => {
                self.drop_contexts();
                self.sync(SyncScope::All);
            }
            Descriptor::Iotlb { .. } => self.host_invalidate(CacheSet::IOTLB, Granularity::Domain),
            // Requests without PASID use the host's stage 2 only; the host keeps device TLBs
            // of it coherent itself.
            Descriptor::DeviceTlb { .. } => {}
            Descriptor::Wait {
                interrupt,
                status_write,
                data,
                addr,
                ..
            } => self.wait(interrupt, status_write, data, addr),
            Descriptor::PasidIotlb { pasid, scope, .. } => self.pasid_iotlb(pasid, scope),
            Descriptor::PasidCache { did, pasid, scope } => {
                self.sync(sync_scope(did, pasid, scope));
            }
            Descriptor::PasidDeviceTlb {
                pasid, addr, size, ..
            } => {
                if !self.shadow.contains_key(&pasid) {
                    return;
                }
                let p = Some(u64::from(pasid));
                let g = match device_tlb_range(addr, size) {
                    Some((addr, pages)) => Granularity::Addr {
                        pasid: p,
                        archid: None,
                        addr,
                        granule_size: 4096,
                        nb_granules: pages,
                        leaf: false,
                    },
                    None => Granularity::Pasid {
                        pasid: p,
                        archid: None,
                    },
                };
                self.host_invalidate(CacheSet::DEV_IOTLB, g);
            }
            Descriptor::PageGroupResponse {
                rid,
                pasid,
                code,
                index,
            } => self.page_group_response(SourceId(rid), pasid, code, index),
        }
    }

    /// An invalidation wait: the status write, then (IF) IWC and the completion event when
    /// IWC was clear. Every earlier descriptor is complete by now (the model is synchronous),
    /// so fence and drain need nothing more.
    #[inline(never)]
    fn wait(&mut self, interrupt: bool, status_write: bool, data: u32, addr: u64) {
        if status_write && self.mem.write(addr, &data.to_le_bytes()).is_err() {
            warn!(
                addr,
                "invalidation wait status write outside guest memory: dropped"
            );
        }
        if interrupt {
            let ics = self.regs.get32(ICS);
            if ics & ICS_IWC == 0 {
                self.regs.set32(ICS, ics | ICS_IWC);
                let m = raise(&mut self.regs, INV_EVENT);
                self.send(m);
            }
        }
    }

    /// A page group response for guest device `rid`, passed to the page-request source.
    #[inline(never)]
    fn page_group_response(&mut self, rid: SourceId, pasid: Option<u32>, code: u8, index: u16) {
        let Some(host) = self.host_sid(rid) else {
            return;
        };
        let code = match code {
            0 => ResponseCode::Success,
            1 => ResponseCode::InvalidRequest,
            _ => ResponseCode::Failure,
        };
        let resp = PageResponse {
            source_id: host,
            pasid,
            group: index,
            code,
        };
        if let Some(src) = self.page_requests.as_mut() {
            if let Err(e) = src.respond(resp) {
                warn!(error = %e, "page group response refused by the page-request source");
            }
        }
    }

    /// CACHE_INVLD on the host; a failure is logged (the host answers 0 for refusals).
    #[inline(never)]
    pub(crate) fn host_invalidate(&mut self, caches: CacheSet, g: Granularity) {
        match &CacheInvalidateRequest::new(caches, g) {
            Ok(req) => self.send_invalidation(req),
            Err(_) => debug_assert!(false, "invalid (cache, granularity) pair built"),
        }
    }

    /// Passes `req` to the host and counts it; a failure is logged.
    #[inline(always)]
    fn send_invalidation(&mut self, req: &CacheInvalidateRequest) {
        self.stats.host_invalidations += 1;
        if let Err(e) = self.backend.invalidate(req) {
            host_invalidation_failed(&e);
        }
    }
}
