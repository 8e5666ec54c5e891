//! Device objects (Linux `device.c`, VFIO's `iommufd.c` / `device_cdev.c`): binding a VFIO
//! device to the context, attaching it — or one of its PASIDs — to an IOAS or HWPT and
//! detaching it, unbinding, and `IOMMU_GET_HW_INFO`.
//!
//! A PASID attach is allowed only for a PASID the context's process owns in the host-wide
//! space (its mm's set), checked and programmed under the process's lock, so the PASID
//! cannot be freed in between.

use std::collections::BTreeMap;

use vsva_ioasid::PasidState;
use vsva_iommu::{PasidEntry, SourceId};
use vsva_uapi::iommufd::{
    IommuHwInfo, IommuHwInfoVtd, IommuHwptVtdS1, IOMMU_HW_CAP_PCI_PASID_EXEC,
    IOMMU_HW_CAP_PCI_PASID_PRIV, IOMMU_HW_INFO_FLAG_INPUT_TYPE, IOMMU_HW_INFO_TYPE_DEFAULT,
    IOMMU_HW_INFO_TYPE_INTEL_VTD, IOMMU_VTD_S1_EAFE, IOMMU_VTD_S1_SRE,
};
use vsva_uapi::Errno;

use crate::ctx::IommufdCtx;
use crate::error::IommufdError;
use crate::objects::{Device, HwptPaging, Object, Objects, Target};

/// The PASID requests without PASID use in the PASID table (RID_PASID).
const RID_PASID: u32 = 0;

impl IommufdCtx {
    /// `VFIO_DEVICE_BIND_IOMMUFD` (`vfio_df_ioctl_bind_iommufd`, `iommufd_device_bind`):
    /// binds the assigned PCI function `sid` to this context and returns its device id. The
    /// function's group is held by the context (containers get `EBUSY`) and the device is
    /// attached to the IOMMU with an empty PASID table: all its DMA is blocked until an
    /// attach.
    ///
    /// # Errors
    ///
    /// `EINVAL` when it is already bound here or is host-owned; `ENODEV` when unknown;
    /// `EBUSY` when its group is held by a container or another context; an IOMMU error.
    /// Nothing is held then.
    pub fn bind_device(&self, sid: SourceId) -> Result<u32, IommufdError> {
        let mut objs = self.lock();
        if objs
            .iter()
            .any(|(_, e)| matches!(&e.object, Object::Device(d) if d.sid == sid))
        {
            return Err(IommufdError::invalid(
                "device",
                sid.0.into(),
                "the device is already bound to this context",
            ));
        }
        let claim = self.vfio.claim_for_iommufd(sid)?;
        let options = claim.device_options();
        self.vfio
            .iommu()
            .attach_device(sid, options)
            .map_err(|e| IommufdError::iommu("attach the device to the IOMMU", e))?;
        Ok(objs.insert(Object::Device(Device {
            claim,
            sid,
            ats: options.ats,
            attached: BTreeMap::new(),
        })))
    }

    /// Unbinds device `dev_id` (closing its VFIO device fd): every attachment is detached,
    /// the device leaves the IOMMU and its group is given back.
    ///
    /// # Errors
    ///
    /// `ENOENT` when `dev_id` is not a device of this context.
    pub fn unbind_device(&self, dev_id: u32) -> Result<(), IommufdError> {
        let mut objs = self.lock();
        objs.device(dev_id, Self::WRONG_KIND)?;
        let object = objs.remove(dev_id).expect("looked up above");
        self.release(&mut objs, object);
        Ok(())
    }

    /// Detaches everything of a removed device and takes it out of the IOMMU.
    pub(crate) fn release_device(&self, objs: &mut Objects, mut dev: Device) {
        let pasids: Vec<Option<u32>> = dev.attached.keys().copied().collect();
        for pasid in pasids {
            self.detach_locked(objs, &mut dev, pasid);
        }
        if let Err(e) = self.vfio.iommu().detach_device(dev.sid) {
            tracing::error!("detaching device {} from the IOMMU: {e}", dev.sid);
            debug_assert!(false, "detaching device {} from the IOMMU: {e}", dev.sid);
        }
    }

    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` (`vfio_df_ioctl_attach_pt`; `iommufd_device_attach`
    /// or, when already attached, `iommufd_device_replace`, through
    /// `iommufd_device_change_pt`): attaches device `dev_id` — its requests without PASID, or
    /// with `pasid` — to `pt_id`, a paging or nested HWPT, or an IOAS (then to the IOAS's
    /// automatic paging HWPT, made on first use and destroyed with its last attachment).
    /// Returns the HWPT attached (the `pt_id` Linux writes back).
    ///
    /// **Replace.** When that requester is already attached, as
    /// `vfio_iommufd_physical_attach_ioas` / `vfio_iommufd_physical_pasid_attach_ioas` do:
    /// the HWPT already attached (by id, or an IOAS whose automatic HWPT it is) changes
    /// nothing (`iommufd_device_do_replace` returns early); another HWPT takes the
    /// attachment — its PASID entry is written, it gains the reference and the old one loses
    /// it (an automatic HWPT left without users is destroyed, as `iommufd_hw_pagetable_put`
    /// does), and the device's page-request groups waiting in the old HWPT's fault queue,
    /// read or not, are answered "invalid" whatever queue the new HWPT has
    /// (`iommufd_hwpt_replace_device` → `iommufd_auto_response_faults(old, old_handle)`, as
    /// in Linux since ba5c0f28a26e, 7.2; from 6.15 it passed the new HWPT until that fix).
    /// The replace is hitless, as `iommufd_device_replace` promises: the IOMMU writes the
    /// new PASID entry over the present one (`Iommu::replace_pasid_entry`, Linux's
    /// `intel_pasid_replace_*`) and then flushes what the old one left cached, so DMA racing
    /// with it is translated through the old HWPT or the new one and never faults for want
    /// of an entry.
    ///
    /// # Errors
    ///
    /// `ENOENT` for an unknown device or `pt_id`; `EINVAL` for a `pt_id` of another kind, and
    /// for PASIDs beside requests without PASID on an HWPT without `IOMMU_HWPT_ALLOC_PASID`
    /// (`iommufd_hwpt_pasid_compat`: a PASID attach to such an HWPT, or while the requests
    /// without PASID are on one; an attach without PASID to one while a PASID is attached; an
    /// IOAS's automatic HWPT is never PASID-capable); for a PASID: `EOPNOTSUPP`
    /// without PASID support, `EINVAL` for 0 or beyond the space, `EACCES` when another
    /// process owns it, `ENOENT` when nobody does; for a nested HWPT, its stage 1's address
    /// width, SRE or EAFE the IOMMU cannot take → `EINVAL` (`intel_pasid_setup_nested`); an
    /// IOMMU error. Nothing changes then: an attachment being replaced stays as it was (its
    /// PASID entry untouched) and an automatic HWPT made for the call is destroyed again.
    pub fn attach(&self, dev_id: u32, pt_id: u32, pasid: Option<u32>) -> Result<u32, IommufdError> {
        let mut objs = self.lock();
        objs.device(dev_id, Self::WRONG_KIND)?;
        let (hwpt, auto_new) = match &objs.get(pt_id)?.object {
            Object::Ioas(_) => match find_auto(&objs, pt_id) {
                Some(h) => (h, false),
                None => {
                    let did = self.vfio.alloc_domain_id()?;
                    let id = objs.insert(Object::HwptPaging(HwptPaging {
                        ioas: pt_id,
                        did,
                        nest_parent: false,
                        // `iommufd_device_auto_get_domain` allocates it with no flags
                        // (`iommufd_hwpt_paging_alloc`): never PASID-capable.
                        pasid_compat: false,
                        auto: true,
                        fault: None,
                    }));
                    objs.hold(pt_id);
                    (id, true)
                }
            },
            Object::HwptPaging(_) | Object::HwptNested(_) => (pt_id, false),
            other => {
                return Err(IommufdError::WrongKind {
                    id: pt_id,
                    wanted: "an IOAS or an HWPT",
                    found: other.kind(),
                    errno: Errno::EINVAL,
                })
            }
        };
        let result = self.attach_to(&mut objs, dev_id, pt_id, hwpt, pasid);
        if result.is_err() && auto_new {
            let object = objs.remove(hwpt).expect("created above");
            self.release(&mut objs, object);
        }
        result.map(|()| hwpt)
    }

    /// Attaches (or replaces the attachment of) `dev_id`'s requester `pasid` to `hwpt` (the
    /// caller named `pt_id`).
    ///
    /// Requests without PASID reserve the device's interrupt window in the IOAS under `hwpt`
    /// (`iommufd_hw_pagetable_attach` / `iommufd_device_do_replace` with `attach_resv`: a
    /// paging HWPT's IOAS, a nested one's parent's; not for a PASID), first of the steps
    /// that can refuse, as there; a replace within the same IOAS keeps the reservation
    /// (`iommufd_group_do_replace_reserved_iova`), one to another IOAS moves it once the new
    /// entry is written. A refusal after the reservation gives it back.
    fn attach_to(
        &self,
        objs: &mut Objects,
        dev_id: u32,
        pt_id: u32,
        hwpt: u32,
        pasid: Option<u32>,
    ) -> Result<(), IommufdError> {
        let (entry, pasid_compat) = self.entry_of(objs, hwpt)?;
        let dev = objs.device(dev_id, Self::WRONG_KIND)?;
        // Linux's `iommufd_hwpt_compatible_device` (a VF with PRI onto an HWPT with a fault
        // queue: `EINVAL`, just before `iommufd_hwpt_pasid_compat`) cannot arise: vsva has
        // no virtual functions (README, "A virtual function with PRI and a fault queue").
        if let Some(p) = pasid {
            // `iommufd_hwpt_pasid_compat` for a PASID: the HWPT must be PASID-capable, and so
            // must the one the requests without PASID are attached to.
            if !pasid_compat {
                return Err(IommufdError::invalid(
                    "pt_id",
                    hwpt.into(),
                    "a PASID attach needs an HWPT allocated with IOMMU_HWPT_ALLOC_PASID",
                ));
            }
            if let Some(&rid_hwpt) = dev.attached.get(&None) {
                if !hwpt_pasid_compat(objs, rid_hwpt) {
                    return Err(IommufdError::PasidIncompatible {
                        field: "pasid",
                        value: p,
                        rid_hwpt,
                        pasid: p,
                        attaching_rid: false,
                    });
                }
            }
            self.check_pasid(p)?;
        }
        let old = dev.attached.get(&pasid).copied();
        if old == Some(hwpt) {
            return Ok(());
        }
        let sid = dev.sid;
        let ats = dev.ats;
        // (IOAS to reserve in, IOAS to give the reservation back in once attached.)
        let (reserve_in, unreserve_in) = match pasid {
            None => {
                let new = ioas_under(objs, hwpt);
                let old = old.map(|o| ioas_under(objs, o));
                if old == Some(new) {
                    (None, None)
                } else {
                    (Some(new), old)
                }
            }
            Some(_) => (None, None),
        };
        // `iommufd_hwpt_pasid_compat` without PASID: an HWPT that is not PASID-capable takes
        // the requests without PASID only while no PASID of the device is attached.
        let rid_conflict = match pasid {
            None if !pasid_compat => dev.attached.keys().find_map(|&p| p),
            _ => None,
        };
        if let Some(ioas) = reserve_in {
            objs.ioas_mut(ioas, Self::WRONG_KIND)?
                .reserve_for_device(sid, pt_id)?;
        }
        // As in `iommufd_hw_pagetable_attach` / `iommufd_device_do_replace`, the reservation
        // comes first, then the compatibility check, then the driver's attach.
        let written = match rid_conflict {
            Some(p) => Err(IommufdError::PasidIncompatible {
                field: "pt_id",
                value: pt_id,
                rid_hwpt: hwpt,
                pasid: p,
                attaching_rid: true,
            }),
            None => self.write_attachment(objs, sid, hwpt, pasid, &entry, old.is_some()),
        };
        if let Err(e) = written {
            if let Some(ioas) = reserve_in {
                unreserve(objs, ioas, sid);
            }
            return Err(e);
        }
        objs.device_mut(dev_id, Self::WRONG_KIND)?
            .attached
            .insert(pasid, hwpt);
        if let Ok(Object::HwptNested(h)) = objs.get_mut(hwpt).map(|e| &mut e.object) {
            h.attached.push(Target { sid, pasid, ats });
        }
        objs.hold(hwpt);
        if let Some(ioas) = unreserve_in {
            unreserve(objs, ioas, sid);
        }
        if let Some(old) = old {
            self.drop_attachment(objs, sid, pasid, old);
        }
        Ok(())
    }

    /// The steps of an attach that check the HWPT against the IOMMU and write the PASID
    /// entry of `sid`'s requester `pasid` (over the present one when `replace`). A refusal
    /// leaves the slot as it was: empty, or the old entry in place.
    fn write_attachment(
        &self,
        objs: &Objects,
        sid: SourceId,
        hwpt: u32,
        pasid: Option<u32>,
        entry: &PasidEntry,
        replace: bool,
    ) -> Result<(), IommufdError> {
        if let Ok(Object::HwptNested(h)) = objs.get(hwpt).map(|e| &e.object) {
            self.check_s1(&h.s1)?;
        }
        let iommu = self.vfio.iommu();
        // An error of either call leaves the slot as it was: empty, or the old entry in place.
        let write = |p: u32| {
            if replace {
                iommu
                    .replace_pasid_entry(sid, p, entry)
                    .map_err(|e| IommufdError::iommu("replace the PASID entry", e))
            } else {
                iommu
                    .set_pasid_entry(sid, p, entry)
                    .map_err(|e| IommufdError::iommu("write the PASID entry", e))
            }
        };
        match pasid {
            None => write(RID_PASID),
            Some(p) => {
                let mm = self.mm()?;
                mm.with_owned_pasid(p, || write(p))
                    .unwrap_or_else(|| Err(self.not_owned(p)))
            }
        }
    }

    /// The PASID entry an attachment to `hwpt` writes, and whether PASIDs may use it.
    fn entry_of(&self, objs: &Objects, hwpt: u32) -> Result<(PasidEntry, bool), IommufdError> {
        let iommu = self.vfio.iommu();
        let root_of = |ioas: u32| -> Result<(u64, u8), IommufdError> {
            let stage2 = objs.ioas(ioas, Self::WRONG_KIND)?.stage2;
            iommu
                .stage2_root(stage2)
                .map_err(|e| IommufdError::iommu("stage-2 root", e))
        };
        match &objs.get(hwpt)?.object {
            Object::HwptPaging(h) => {
                let (root, levels) = root_of(h.ioas)?;
                Ok((
                    PasidEntry::second_level(h.did, root, levels),
                    h.pasid_compat,
                ))
            }
            Object::HwptNested(h) => {
                let parent = match &objs.get(h.parent)?.object {
                    Object::HwptPaging(p) => p.ioas,
                    _ => unreachable!("a nested HWPT's parent is a paging HWPT"),
                };
                let (root, levels) = root_of(parent)?;
                let s1 = h.s1;
                let entry = PasidEntry {
                    flpm: u8::from(s1.addr_width == 57),
                    sre: s1.flags & vsva_uapi::iommufd::IOMMU_VTD_S1_SRE != 0,
                    eafe: s1.flags & vsva_uapi::iommufd::IOMMU_VTD_S1_EAFE != 0,
                    wpe: s1.flags & vsva_uapi::iommufd::IOMMU_VTD_S1_WPE != 0,
                    ..PasidEntry::nested(h.did, s1.pgtbl_addr & !0xfff, root, levels)
                };
                Ok((entry, h.pasid_compat))
            }
            _ => unreachable!("attachments are to HWPTs"),
        }
    }

    /// The checks the VT-d driver makes of a nested HWPT's stage 1 when a device is attached
    /// to it (`intel_pasid_setup_nested`, intel/pasid.c), all `EINVAL`: an address width
    /// other than 48, or 57 with CAP.FL5LP; SRE without ECAP.SRS; EAFE without ECAP.EAFS.
    /// Other `flags` bits and `__reserved` are ignored, as there.
    fn check_s1(&self, s1: &IommuHwptVtdS1) -> Result<(), IommufdError> {
        let cfg = self.vfio.iommu().config();
        if !(s1.addr_width == 48 || (s1.addr_width == 57 && cfg.fl5lp)) {
            return Err(IommufdError::invalid(
                "addr_width",
                s1.addr_width.into(),
                "the stage 1 must be 48, or 57 with CAP.FL5LP",
            ));
        }
        if s1.flags & IOMMU_VTD_S1_SRE != 0 && !cfg.srs {
            return Err(IommufdError::invalid(
                "flags",
                s1.flags,
                "SRE, but the IOMMU has no supervisor requests (ECAP.SRS)",
            ));
        }
        if s1.flags & IOMMU_VTD_S1_EAFE != 0 && !cfg.eafs {
            return Err(IommufdError::invalid(
                "flags",
                s1.flags,
                "EAFE, but the IOMMU has no extended access flag (ECAP.EAFS)",
            ));
        }
        Ok(())
    }

    /// Checks that `pasid` is in range and owned by the context's process.
    fn check_pasid(&self, pasid: u32) -> Result<(), IommufdError> {
        let mm = self.mm()?;
        let bits = self.vfio.pasid_bits();
        if pasid == 0 || u64::from(pasid) >= 1u64 << bits {
            return Err(IommufdError::invalid(
                "pasid",
                pasid.into(),
                "PASID 0 and PASIDs beyond the host's space are never handed out",
            ));
        }
        if mm.with_owned_pasid(pasid, || ()).is_none() {
            return Err(self.not_owned(pasid));
        }
        Ok(())
    }

    /// Why the context's process may not use `pasid`: another set owns it (`EACCES`), or
    /// nobody does (`ENOENT`).
    fn not_owned(&self, pasid: u32) -> IommufdError {
        match self.vfio.pasid_space().find(pasid) {
            Some(PasidState::Allocated { .. }) => IommufdError::PasidNotOwned {
                pasid,
                reason: "another process owns it",
                errno: Errno::EACCES,
            },
            _ => IommufdError::PasidNotOwned {
                pasid,
                reason: "it is not allocated",
                errno: Errno::ENOENT,
            },
        }
    }

    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT` (`vfio_iommufd_physical_detach_ioas`,
    /// `iommufd_device_detach`): detaches device `dev_id`'s requests without PASID, or
    /// `pasid`; DMA through it is blocked again. Detaching what is not attached does
    /// nothing. Page-request groups of it waiting in a fault queue are answered "invalid".
    ///
    /// # Errors
    ///
    /// `ENOENT` when `dev_id` is not a device of this context.
    pub fn detach(&self, dev_id: u32, pasid: Option<u32>) -> Result<(), IommufdError> {
        let mut objs = self.lock();
        objs.device(dev_id, Self::WRONG_KIND)?;
        let Some(Object::Device(mut dev)) = objs.remove(dev_id) else {
            unreachable!("looked up above");
        };
        self.detach_locked(&mut objs, &mut dev, pasid);
        objs.put_back(dev_id, Object::Device(dev));
        Ok(())
    }

    fn detach_locked(&self, objs: &mut Objects, dev: &mut Device, pasid: Option<u32>) {
        let Some(hwpt) = dev.attached.remove(&pasid) else {
            return;
        };
        let p = pasid.unwrap_or(RID_PASID);
        if pasid.is_none() {
            // `iommufd_hw_pagetable_detach`: the device's reservations leave the IOAS.
            let ioas = ioas_under(objs, hwpt);
            unreserve(objs, ioas, dev.sid);
        }
        // A freed PASID's entry is already gone (the allocator's teardown cleared it).
        if let Err(e) = self.vfio.iommu().clear_pasid_entry(dev.sid, p) {
            tracing::debug!(
                "detach of {} pasid {p}: entry already cleared: {e}",
                dev.sid
            );
        }
        self.drop_attachment(objs, dev.sid, pasid, hwpt);
    }

    /// What an attachment of `sid`/`pasid` to `hwpt` held, given up once its entry no longer
    /// points there (detach, replace): its place among a nested HWPT's targets, its
    /// page-request groups waiting in the HWPT's fault queue (answered "invalid",
    /// `iommufd_auto_response_faults`), its reference on the HWPT — and the HWPT itself
    /// when automatic and now unused (`iommufd_hw_pagetable_put`).
    fn drop_attachment(&self, objs: &mut Objects, sid: SourceId, pasid: Option<u32>, hwpt: u32) {
        let fault = match objs.get_mut(hwpt).map(|e| &mut e.object) {
            Ok(Object::HwptPaging(h)) => h.fault,
            Ok(Object::HwptNested(h)) => {
                h.attached.retain(|t| !(t.sid == sid && t.pasid == pasid));
                h.fault
            }
            _ => None,
        };
        if let Some(f) = fault {
            if let Ok(q) = objs.fault_mut(f, Self::WRONG_KIND) {
                let groups = q.take_device(sid, Some(pasid));
                self.answer_invalid(groups);
            }
        }
        let left = objs.unhold(hwpt);
        let auto = matches!(objs.get(hwpt).map(|e| &e.object), Ok(Object::HwptPaging(h)) if h.auto);
        if left == 0 && auto {
            if let Some(object) = objs.remove(hwpt) {
                self.release(objs, object);
            }
        }
    }

    /// `IOMMU_GET_HW_INFO` (`iommufd_get_hw_info`, the VT-d driver's `intel_iommu_hw_info`):
    /// fills `out_data_type`, `out_max_pasid_log2`, `out_capabilities` and `data_len` of
    /// `cmd` and returns the VT-d data (the caller copies `min(data_len, 24)` bytes of it).
    ///
    /// # Errors
    ///
    /// Unknown flags or non-zero `__reserved` → `EOPNOTSUPP`; unknown device → `ENOENT`; an
    /// input type other than DEFAULT or INTEL_VTD → `EOPNOTSUPP`.
    pub fn hw_info(&self, cmd: &mut IommuHwInfo) -> Result<IommuHwInfoVtd, IommufdError> {
        if cmd.flags & !IOMMU_HW_INFO_FLAG_INPUT_TYPE != 0 {
            return Err(IommufdError::unsupported(
                "flags",
                cmd.flags.into(),
                "unknown IOMMU_GET_HW_INFO flag",
            ));
        }
        if cmd.reserved != [0; 3] {
            return Err(IommufdError::unsupported(
                "__reserved",
                u64::from(u32::from_le_bytes([
                    cmd.reserved[0],
                    cmd.reserved[1],
                    cmd.reserved[2],
                    0,
                ])),
                "must be 0",
            ));
        }
        if cmd.flags & IOMMU_HW_INFO_FLAG_INPUT_TYPE == 0 {
            cmd.out_data_type = IOMMU_HW_INFO_TYPE_DEFAULT;
        }
        let objs = self.lock();
        let dev = objs.device(cmd.dev_id, Self::WRONG_KIND)?;
        if !matches!(
            cmd.out_data_type,
            IOMMU_HW_INFO_TYPE_DEFAULT | IOMMU_HW_INFO_TYPE_INTEL_VTD
        ) {
            return Err(IommufdError::unsupported(
                "in_data_type",
                cmd.out_data_type.into(),
                "this IOMMU reports only IOMMU_HW_INFO_TYPE_INTEL_VTD",
            ));
        }
        let iommu = self.vfio.iommu();
        let data = IommuHwInfoVtd {
            flags: 0,
            reserved: 0,
            cap_reg: iommu.cap(),
            ecap_reg: iommu.ecap(),
        };
        cmd.out_data_type = IOMMU_HW_INFO_TYPE_INTEL_VTD;
        cmd.data_len = size_of::<IommuHwInfoVtd>() as u32;
        cmd.out_capabilities = 0;
        cmd.out_max_pasid_log2 = 0;
        if let Some(cap) = dev.claim.function().pasid_capability() {
            cmd.out_max_pasid_log2 = cap.max_pasid_width;
            if cap.execute {
                cmd.out_capabilities |= IOMMU_HW_CAP_PCI_PASID_EXEC;
            }
            if cap.privileged {
                cmd.out_capabilities |= IOMMU_HW_CAP_PCI_PASID_PRIV;
            }
        }
        Ok(data)
    }
}

/// Whether HWPT `hwpt` (an attachment's, so it exists) was allocated with
/// `IOMMU_HWPT_ALLOC_PASID` (Linux's `hwpt->pasid_compat`).
fn hwpt_pasid_compat(objs: &Objects, hwpt: u32) -> bool {
    match objs.get(hwpt).map(|e| &e.object) {
        Ok(Object::HwptPaging(h)) => h.pasid_compat,
        Ok(Object::HwptNested(h)) => h.pasid_compat,
        _ => false,
    }
}

/// The automatic paging HWPT over IOAS `ioas`, if one exists.
fn find_auto(objs: &Objects, ioas: u32) -> Option<u32> {
    objs.iter().find_map(|(id, e)| match &e.object {
        Object::HwptPaging(h) if h.auto && h.ioas == ioas => Some(id),
        _ => None,
    })
}

/// The IOAS under HWPT `hwpt` (an attachment's, so it exists): a paging HWPT's own, a
/// nested one's parent's (Linux's `find_hwpt_paging(hwpt)->ioas`).
fn ioas_under(objs: &Objects, hwpt: u32) -> u32 {
    let paging = |id: u32| match objs.get(id).map(|e| &e.object) {
        Ok(Object::HwptPaging(h)) => Some(h.ioas),
        _ => None,
    };
    let ioas = match objs.get(hwpt).map(|e| &e.object) {
        Ok(Object::HwptNested(h)) => paging(h.parent),
        _ => paging(hwpt),
    };
    ioas.expect("an attachment is to an HWPT over an IOAS")
}

/// Gives back device `sid`'s reservations in IOAS `ioas` (which exists: an HWPT over it
/// holds it).
fn unreserve(objs: &mut Objects, ioas: u32, sid: SourceId) {
    match objs.ioas_mut(ioas, Errno::EINVAL) {
        Ok(ioas) => ioas.unreserve_device(sid),
        Err(e) => debug_assert!(false, "the IOAS under an attachment is gone: {e}"),
    }
}
