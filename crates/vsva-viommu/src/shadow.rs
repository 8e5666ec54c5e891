//! Shadowing the guest's PASID entries into host binds: on a PASID-cache (or context-cache)
//! invalidation, and when translation is switched on or off, the guest's entries for the
//! PASIDs it allocated through VCMD are read from guest memory and compared with what the
//! host has bound. A first-level entry becomes NESTING_OP BIND (first level = the guest's
//! FLPTR, second level = the container's stage 2); a cleared entry an UNBIND; a changed entry
//! an unbind and a bind. The last leaves the host entry absent between the two, so DMA
//! through the PASID can fault there: the host's hitless swap
//! (`vsva_iommu::Iommu::replace_pasid_entry`) has no operation in the VFIO nesting uAPI the
//! back ends speak (a BIND of a bound PASID is `EBUSY`).

use tracing::warn;
use vsva_iommu::context::ContextEntry;
use vsva_iommu::{PasidEntry, Pgtt};
use vsva_uapi::iommu::VtdBindFlags;
use vsva_uapi::{AddrWidth, BindRequest};

use crate::backend::BackendError;
use crate::regs::{ADDR_MASK, GCMD_TE, GSTS, RTADDR_TTM_SCALABLE, RTADDR_TTM_SHIFT};
use crate::tables::{guest_context, guest_pasid_entry};
use crate::unit::{Shadowed, Unit};

/// Which PASIDs a synchronisation looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncScope {
    /// Every PASID the guest holds or the host has bound for it.
    All,
    /// Those whose guest entry or host bind carries this domain id.
    Domain(u16),
    /// One PASID.
    Pasid(u32),
}

/// The host bind a guest first-level entry asks for.
fn bind_for(pasid: u32, e: &PasidEntry) -> BindRequest {
    let width = if e.flpm == 1 {
        AddrWidth::Bits57
    } else {
        AddrWidth::Bits48
    };
    let mut req = BindRequest::new(u64::from(pasid), e.flptr, width);
    req.gpasid = Some(u64::from(pasid));
    let flag = |on: bool, f: VtdBindFlags| if on { f.bits() } else { 0 };
    req.vtd.flags = VtdBindFlags::from_bits_truncate(
        flag(e.sre, VtdBindFlags::SRE)
            | flag(e.eafe, VtdBindFlags::EAFE)
            | flag(e.wpe, VtdBindFlags::WPE)
            | flag(e.pcd, VtdBindFlags::PCD)
            | flag(e.pwt, VtdBindFlags::PWT)
            | flag(e.cd, VtdBindFlags::CD)
            | flag(e.emte, VtdBindFlags::EMTE),
    );
    req.vtd.pat = e.pat;
    req.vtd.emt = u32::from(e.emt);
    req
}

impl Unit {
    /// The guest's scalable-mode root table, when SRTP latched one and translation is on.
    fn active_root(&self) -> Option<u64> {
        if self.regs.get32(GSTS) & GCMD_TE == 0 {
            return None;
        }
        let rt = self.root?;
        (rt >> RTADDR_TTM_SHIFT & 3 == RTADDR_TTM_SCALABLE).then_some(rt & ADDR_MASK)
    }

    /// The guest's context entry of device `i` (in `cfg.devices`), from the context cache
    /// or read under `root` and cached.
    fn context(&mut self, i: usize, root: u64) -> Option<&ContextEntry> {
        if self.contexts[i].is_none() {
            let sid = self.cfg.devices[i].guest;
            self.contexts[i] = Some(guest_context(&*self.mem, &self.guest_cfg, root, sid)?);
        }
        self.contexts[i].as_ref()
    }

    /// What the guest's tables ask the host to bind for `pasid`: the first of the guest's
    /// devices with a valid first-level entry for it.
    fn wanted(&mut self, pasid: u32) -> Option<Shadowed> {
        let root = self.active_root()?;
        for i in 0..self.cfg.devices.len() {
            if self.context(i, root).is_none() {
                continue;
            }
            let ctx = self.contexts[i].as_ref()?;
            match guest_pasid_entry(&*self.mem, &self.guest_cfg, ctx, pasid) {
                Some(e) if e.pgtt == Pgtt::FirstLevel => {
                    return Some(Shadowed {
                        bind: bind_for(pasid, &e),
                        did: e.did,
                    })
                }
                _ => {}
            }
        }
        None
    }

    /// Brings the host's binds in line with the guest's tables for `scope`.
    pub(crate) fn sync(&mut self, scope: SyncScope) {
        match scope {
            // The common case: a PASID-selective flush after the guest wrote one entry.
            SyncScope::Pasid(p) => self.sync_pasid(p, None),
            SyncScope::Domain(d) => self.sync_every(Some(d)),
            SyncScope::All => self.sync_every(None),
        }
    }

    /// Synchronises every PASID the guest holds or the host has bound for it (those of
    /// domain `did` only, when given).
    #[inline(never)]
    fn sync_every(&mut self, did: Option<u16>) {
        let mut pasids: Vec<u32> = self.allocated.keys().copied().collect();
        pasids.extend(
            self.shadow
                .keys()
                .filter(|p| !self.allocated.contains_key(p)),
        );
        for p in pasids {
            self.sync_pasid(p, did);
        }
    }

    fn sync_pasid(&mut self, pasid: u32, did: Option<u16>) {
        let mut want = self.wanted(pasid);
        if want.is_some() && !self.allocated.contains_key(&pasid) {
            warn!(
                pasid,
                "guest PASID entry for a PASID it did not allocate: not bound"
            );
            self.stats.bind_refusals += 1;
            want = None;
        }
        if let Some(d) = did {
            let have = self.shadow.get(&pasid);
            if want.as_ref().map(|w| w.did) != Some(d) && have.map(|h| h.did) != Some(d) {
                return;
            }
        }
        let Some(w) = want else {
            // A cleared (or refused) entry: one search of the shadow, which unbinds and drops
            // what was bound, if anything.
            self.unshadow(pasid);
            return;
        };
        // The shadow is looked at in place: a bind request is not copied to be compared.
        match self.shadow.get(&pasid) {
            Some(h) if h.bind == w.bind => {
                if h.did != w.did {
                    self.shadow.insert(pasid, w);
                }
                return;
            }
            Some(_) => self.unshadow(pasid),
            None => {}
        }
        match self.backend.bind(&w.bind) {
            Ok(()) => {
                self.stats.binds += 1;
                self.shadow.insert(pasid, w);
            }
            Err(e) => {
                warn!(pasid, error = %e, "host refused the bind of a guest PASID entry");
                self.stats.bind_refusals += 1;
            }
        }
    }

    /// Drops the host bind of `pasid` and its shadow record, if any (a cleared entry, a
    /// changed one before its new bind, a PASID about to be freed). The record is unbound
    /// where it lies in the shadow, then removed: one search, no copy of the request.
    pub(crate) fn unshadow(&mut self, pasid: u32) {
        let (stats, backend) = (&mut self.stats, &mut self.backend);
        self.shadow.remove_with(&pasid, |h| {
            stats.unbinds += 1;
            if let Err(e) = backend.unbind(&h.bind) {
                // The host keeps the bind until the PASID is freed; the shadow no longer
                // claims it.
                unbind_failed(h.bind.hpasid, &e);
            }
        });
    }
}

/// Logs a host unbind that failed (off the success path).
#[cold]
#[inline(never)]
fn unbind_failed(pasid: u64, e: &BackendError) {
    warn!(pasid, error = %e, "host unbind failed");
}
