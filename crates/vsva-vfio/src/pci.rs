//! PCI functions as a guest sees them through VFIO: a 4 KiB configuration space with the PCIe
//! PASID extended capability, virtualized the way vfio-pci virtualizes extended capabilities.
//!
//! # Layout
//!
//! | offset | what | guest access |
//! |---|---|---|
//! | `0x00` | vendor id, device id (from [`PciFunctionSpec`]) | read-only |
//! | `0x04` | command `0x0006` (memory space, bus master), status `0x0010` (capability list) | read-only |
//! | `0x08` | revision 0, class code `0x088000` (other system peripheral), header type 0 | read-only |
//! | `0x34` | capabilities pointer `0x40` | read-only |
//! | `0x40` | PCI Express capability (id `0x10`, version 2, endpoint), the last standard capability | read-only |
//! | `0x100` | PASID extended capability (id `0x1B`, version 1), or a zero header without one | see below |
//! | next | ATS extended capability (id `0x0F`, version 1) of a function with ATS | see below |
//! | next | Page Request extended capability (id `0x13`, version 1) of a function with PRI | see below |
//!
//! The extended capabilities that exist are chained from `0x100` in that order (PASID 8
//! bytes, ATS 8, PRI 16); the last has next 0.
//! Every other byte reads as zero. Writes to read-only bits are dropped, as PCI requires; only
//! a bad offset, width or alignment is an error.
//!
//! # The PASID capability
//!
//! The capability word (`+4`) reports what both the physical function and the host IOMMU
//! support: Max PASID Width = min(function's width, the host PASID space's width); Execute
//! Permission Supported only if the IOMMU handles execute requests (ECAP.ERS); Privileged
//! Mode Supported only if it handles supervisor requests (ECAP.SRS). It is read-only.
//!
//! The control word (`+6`) is emulated: PASID Enable (bit 0) is writable, Execute Permission
//! Enable (bit 1) and Privileged Mode Enable (bit 2) are writable only when the matching
//! capability bit is reported (otherwise they are hard-wired to 0, as the PCIe specification
//! has it); bits 15:3 are reserved and read as 0. The values written are honoured: a device
//! issues a PASID-tagged request only while PASID Enable is set, an execute request only with
//! Execute Permission Enable, a privileged one only with Privileged Mode Enable, and never
//! with a PASID at or above `2^Max PASID Width`; otherwise the request is refused with
//! [`VfioError::PasidRequestRefused`] (`EPERM`) before it reaches the IOMMU. Execute and
//! privileged attributes travel in the PASID TLP prefix, so a request without a PASID can carry
//! neither.
//!
//! # ATS and PRI
//!
//! ATS: the capability word (`+4`) reports Page Aligned Request and an invalidate queue depth
//! of 0 (32); the control word (`+6`) has Enable (bit 15) and the Smallest Translation Unit
//! (bits 4:0) writable. A translation request ([`crate::PciFunction::ats_translate`]) needs
//! Enable set, else `EPERM`.
//!
//! PRI: control (`+4`) has Enable (bit 0) writable; status (`+6`) reads PRG Response PASID
//! Required (bit 15: responses carry the PASID of their requests); the Outstanding Page
//! Request Capacity (`+8`) is [`crate::VfioConfig::page_requests_per_device`]; the
//! Outstanding Page Request Allocation (`+0xc`) is writable. A page request
//! ([`crate::Vfio::page_request`]) needs Enable set (else `EPERM`), and the function may have
//! at most min(allocation, capacity) outstanding (else `ENOSPC`).
//!
//! With PASID support switched off ([`crate::VfioConfig::pasid_enabled`] = false) the
//! capability is hidden (the extended-capability header reads 0), as vfio-pci did before the
//! series exposed it.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;

use vsva_iommu::SourceId;

use crate::error::VfioError;
use crate::sync::lock;
use crate::types::GroupId;

/// Extended capability id of Address Translation Services.
pub const PCI_EXT_CAP_ID_ATS: u16 = 0x0f;
/// ATS capability register offset.
pub const PCI_ATS_CAP: u16 = 0x04;
/// ATS Page Aligned Request.
pub const PCI_ATS_CAP_PAGE_ALIGNED: u16 = 0x0020;
/// ATS control register offset.
pub const PCI_ATS_CTRL: u16 = 0x06;
/// ATS Enable.
pub const PCI_ATS_CTRL_ENABLE: u16 = 0x8000;
/// ATS Smallest Translation Unit bits.
pub const PCI_ATS_CTRL_STU: u16 = 0x001f;
/// Extended capability id of the Page Request Interface.
pub const PCI_EXT_CAP_ID_PRI: u16 = 0x13;
/// PRI control register offset.
pub const PCI_PRI_CTRL: u16 = 0x04;
/// PRI Enable.
pub const PCI_PRI_CTRL_ENABLE: u16 = 0x0001;
/// PRI status register offset.
pub const PCI_PRI_STATUS: u16 = 0x06;
/// PRG Response PASID Required.
pub const PCI_PRI_STATUS_PASID: u16 = 0x8000;
/// Outstanding Page Request Capacity offset.
pub const PCI_PRI_MAX_REQ: u16 = 0x08;
/// Outstanding Page Request Allocation offset.
pub const PCI_PRI_ALLOC_REQ: u16 = 0x0c;

/// Size of a PCIe function's configuration space.
pub const CONFIG_SPACE_SIZE: usize = PCI_CFG_SPACE_EXP_SIZE;
/// Offset of the first extended capability, where the PASID capability sits.
pub const EXT_CAP_OFFSET: u16 = PCI_CFG_SPACE_SIZE;
use vsva_uapi::pci_regs::{PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE};
pub use vsva_uapi::pci_regs::{
    PCI_EXT_CAP_ID_PASID, PCI_PASID_CAP, PCI_PASID_CAP_EXEC, PCI_PASID_CAP_PRIV, PCI_PASID_CTRL,
    PCI_PASID_CTRL_ENABLE, PCI_PASID_CTRL_EXEC, PCI_PASID_CTRL_PRIV,
};

/// The PASID capability of a function: what the physical function advertises when given to
/// [`crate::Vfio::add_pci_function`], or the virtualized view a guest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasidCapability {
    /// Max PASID Width in bits (1..=20).
    pub max_pasid_width: u8,
    /// Execute Permission Supported.
    pub execute: bool,
    /// Privileged Mode Supported.
    pub privileged: bool,
}

impl PasidCapability {
    /// The capability word (`+4`): bit 1 execute, bit 2 privileged, bits 12:8 width.
    pub fn cap_word(&self) -> u16 {
        let mut word = u16::from(self.max_pasid_width & 0x1f) << 8;
        if self.execute {
            word |= PCI_PASID_CAP_EXEC;
        }
        if self.privileged {
            word |= PCI_PASID_CAP_PRIV;
        }
        word
    }

    /// Decodes a capability word.
    pub fn from_cap_word(word: u16) -> Self {
        PasidCapability {
            max_pasid_width: (word >> 8 & 0x1f) as u8,
            execute: word & PCI_PASID_CAP_EXEC != 0,
            privileged: word & PCI_PASID_CAP_PRIV != 0,
        }
    }
}

/// A physical PCI function to register with [`crate::Vfio::add_pci_function`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciFunctionSpec {
    /// The function's requester id (bus, device, function).
    pub source_id: SourceId,
    /// The IOMMU group the function is in, for assignment through VFIO (bound to vfio-pci);
    /// `None` for a function that stays with a host driver, e.g. the parent of mdevs.
    pub group: Option<GroupId>,
    /// PCI vendor id.
    pub vendor_id: u16,
    /// PCI device id.
    pub device_id: u16,
    /// The function's PASID capability, if it has one.
    pub pasid: Option<PasidCapability>,
    /// The function has a device TLB (ATS): the IOMMU caches its translations there, so
    /// `DEV_IOTLB` invalidations matter. The ATS capability structure itself is not modelled
    /// in the configuration space.
    pub ats: bool,
    /// The function may send page requests (PCIe PRI): its context entry gets PRE, and its
    /// page requests go through [`crate::Vfio::page_request`] to the PASID's owner. The PRI
    /// capability structure itself is not modelled in the configuration space.
    pub pri: bool,
}

impl PciFunctionSpec {
    /// A function in `group` with a 20-bit PASID capability supporting execute and privileged
    /// requests, no ATS, no PRI, vendor `0x8086`, device `0x0b25`.
    pub fn new(source_id: SourceId, group: Option<GroupId>) -> Self {
        PciFunctionSpec {
            source_id,
            group,
            vendor_id: 0x8086,
            device_id: 0x0b25,
            pasid: Some(PasidCapability {
                max_pasid_width: 20,
                execute: true,
                privileged: true,
            }),
            ats: false,
            pri: false,
        }
    }
}

/// Width of a configuration-space access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigWidth {
    /// 8 bits.
    Byte,
    /// 16 bits.
    Word,
    /// 32 bits.
    Dword,
}

impl ConfigWidth {
    /// Bytes accessed.
    pub const fn bytes(self) -> u32 {
        match self {
            ConfigWidth::Byte => 1,
            ConfigWidth::Word => 2,
            ConfigWidth::Dword => 4,
        }
    }
}

/// The emulated configuration space: the bytes a guest reads and which bits it may write.
pub(crate) struct ConfigSpace {
    bytes: Box<[u8; CONFIG_SPACE_SIZE]>,
    wmask: Box<[u8; CONFIG_SPACE_SIZE]>,
    /// Offsets of the ATS and PRI capabilities, when present.
    ats: Option<usize>,
    pri: Option<usize>,
}

/// The extended capabilities of a function beyond PASID: ATS, and PRI with its Outstanding
/// Page Request Capacity.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AtsPri {
    pub(crate) ats: bool,
    pub(crate) pri_capacity: Option<u32>,
}

impl ConfigSpace {
    /// Builds the space of a function with the given identity, virtual PASID capability, and
    /// ATS and PRI capabilities.
    pub(crate) fn new(
        vendor_id: u16,
        device_id: u16,
        pasid: Option<PasidCapability>,
        ats_pri: AtsPri,
    ) -> Self {
        let mut space = ConfigSpace {
            bytes: Box::new([0; CONFIG_SPACE_SIZE]),
            wmask: Box::new([0; CONFIG_SPACE_SIZE]),
            ats: None,
            pri: None,
        };
        space.put16(0x00, vendor_id);
        space.put16(0x02, device_id);
        space.put16(0x04, 0x0006); // memory space + bus master, as the host driver left it
        space.put16(0x06, 0x0010); // capability list present
        space.bytes[0x09] = 0x00; // prog-if
        space.bytes[0x0a] = 0x80; // subclass: other
        space.bytes[0x0b] = 0x08; // class: base system peripheral
        space.bytes[0x34] = 0x40; // capabilities pointer
        space.bytes[0x40] = 0x10; // PCI Express capability, last in the list
        space.put16(0x42, 0x0002); // version 2, PCIe endpoint
        if let Some(cap) = pasid {
            let off = usize::from(EXT_CAP_OFFSET);
            // Header: id 0x1B, version 1, next 0.
            let header = u32::from(PCI_EXT_CAP_ID_PASID) | 1 << 16;
            space.bytes[off..off + 4].copy_from_slice(&header.to_le_bytes());
            space.put16(off + usize::from(PCI_PASID_CAP), cap.cap_word());
            let mut writable = PCI_PASID_CTRL_ENABLE;
            if cap.execute {
                writable |= PCI_PASID_CTRL_EXEC;
            }
            if cap.privileged {
                writable |= PCI_PASID_CTRL_PRIV;
            }
            let ctrl = off + usize::from(PCI_PASID_CTRL);
            space.wmask[ctrl..ctrl + 2].copy_from_slice(&writable.to_le_bytes());
        }
        space.add_ats_pri(
            usize::from(EXT_CAP_OFFSET) + if pasid.is_some() { 8 } else { 0 },
            ats_pri,
        );
        space
    }

    /// Adds the ATS and PRI capabilities from `off`, each linked from the one before it.
    fn add_ats_pri(&mut self, mut off: usize, caps: AtsPri) {
        let mut prev = (off > usize::from(EXT_CAP_OFFSET)).then_some(usize::from(EXT_CAP_OFFSET));
        let mut link = |space: &mut Self, off: usize, id: u16| {
            if let Some(p) = prev {
                space.bytes[p + 2] |= ((off & 0xf) << 4) as u8;
                space.bytes[p + 3] = (off >> 4) as u8;
            }
            let header = u32::from(id) | 1 << 16;
            space.bytes[off..off + 4].copy_from_slice(&header.to_le_bytes());
            prev = Some(off);
        };
        if caps.ats {
            link(self, off, PCI_EXT_CAP_ID_ATS);
            self.put16(off + usize::from(PCI_ATS_CAP), PCI_ATS_CAP_PAGE_ALIGNED);
            let ctrl = off + usize::from(PCI_ATS_CTRL);
            let writable = PCI_ATS_CTRL_ENABLE | PCI_ATS_CTRL_STU;
            self.wmask[ctrl..ctrl + 2].copy_from_slice(&writable.to_le_bytes());
            self.ats = Some(off);
            off += 8;
        }
        if let Some(capacity) = caps.pri_capacity {
            link(self, off, PCI_EXT_CAP_ID_PRI);
            let ctrl = off + usize::from(PCI_PRI_CTRL);
            self.wmask[ctrl..ctrl + 2].copy_from_slice(&PCI_PRI_CTRL_ENABLE.to_le_bytes());
            self.put16(off + usize::from(PCI_PRI_STATUS), PCI_PRI_STATUS_PASID);
            let max = off + usize::from(PCI_PRI_MAX_REQ);
            self.bytes[max..max + 4].copy_from_slice(&capacity.to_le_bytes());
            let alloc = off + usize::from(PCI_PRI_ALLOC_REQ);
            self.wmask[alloc..alloc + 4].fill(0xff);
            self.pri = Some(off);
        }
    }

    fn get16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    fn put16(&mut self, off: usize, value: u16) {
        self.bytes[off..off + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// ATS Enable, when the function has ATS.
    pub(crate) fn ats_enabled(&self) -> bool {
        self.ats.is_some_and(|off| {
            self.get16(off + usize::from(PCI_ATS_CTRL)) & PCI_ATS_CTRL_ENABLE != 0
        })
    }

    /// PRI Enable and the outstanding requests the function may have (min(allocation,
    /// capacity)), when the function has PRI.
    pub(crate) fn pri_state(&self) -> Option<(bool, u32)> {
        let off = self.pri?;
        let word = |o: u16| {
            let o = off + usize::from(o);
            u32::from_le_bytes(self.bytes[o..o + 4].try_into().expect("4 bytes"))
        };
        let enabled = self.get16(off + usize::from(PCI_PRI_CTRL)) & PCI_PRI_CTRL_ENABLE != 0;
        Some((enabled, word(PCI_PRI_ALLOC_REQ).min(word(PCI_PRI_MAX_REQ))))
    }

    fn check(offset: u32, width: ConfigWidth) -> Result<usize, VfioError> {
        let n = width.bytes();
        let err = |reason| VfioError::ConfigAccess {
            offset,
            width: n,
            reason,
        };
        if !offset.is_multiple_of(n) {
            return Err(err("the offset is not aligned to the access width"));
        }
        if offset as usize + n as usize > CONFIG_SPACE_SIZE {
            return Err(err(
                "the access ends beyond the 4096-byte configuration space",
            ));
        }
        Ok(offset as usize)
    }

    pub(crate) fn read(&self, offset: u32, width: ConfigWidth) -> Result<u32, VfioError> {
        let off = Self::check(offset, width)?;
        let mut raw = [0u8; 4];
        let n = width.bytes() as usize;
        raw[..n].copy_from_slice(&self.bytes[off..off + n]);
        Ok(u32::from_le_bytes(raw))
    }

    /// Applies a write through the write mask; returns whether any byte changed.
    pub(crate) fn write(
        &mut self,
        offset: u32,
        width: ConfigWidth,
        value: u32,
    ) -> Result<(), VfioError> {
        let off = Self::check(offset, width)?;
        let n = width.bytes() as usize;
        for (i, byte) in value.to_le_bytes()[..n].iter().enumerate() {
            let mask = self.wmask[off + i];
            self.bytes[off + i] = (self.bytes[off + i] & !mask) | (byte & mask);
        }
        Ok(())
    }

    pub(crate) fn pasid_ctrl(&self) -> u16 {
        self.get16(usize::from(EXT_CAP_OFFSET + PCI_PASID_CTRL))
    }
}

/// A registered PCI function: identity, configuration space and the PASID control mirror the
/// DMA path reads without a lock.
pub(crate) struct FunctionInner {
    pub(crate) source_id: SourceId,
    /// The virtual PASID capability (what the guest reads), `None` when absent or hidden.
    pub(crate) vcap: Option<PasidCapability>,
    pub(crate) ats: bool,
    pub(crate) pri: bool,
    config: Mutex<ConfigSpace>,
    /// Copy of the PASID control word, updated under `config`'s lock on every write.
    ctrl: AtomicU16,
}

impl FunctionInner {
    pub(crate) fn new(
        spec: &PciFunctionSpec,
        vcap: Option<PasidCapability>,
        pri_capacity: u32,
    ) -> Self {
        let caps = AtsPri {
            ats: spec.ats,
            pri_capacity: spec.pri.then_some(pri_capacity),
        };
        FunctionInner {
            source_id: spec.source_id,
            vcap,
            ats: spec.ats,
            pri: spec.pri,
            config: Mutex::new(ConfigSpace::new(spec.vendor_id, spec.device_id, vcap, caps)),
            ctrl: AtomicU16::new(0),
        }
    }

    pub(crate) fn config_read(&self, offset: u32, width: ConfigWidth) -> Result<u32, VfioError> {
        lock(&self.config).read(offset, width)
    }

    pub(crate) fn config_write(
        &self,
        offset: u32,
        width: ConfigWidth,
        value: u32,
    ) -> Result<(), VfioError> {
        let mut config = lock(&self.config);
        config.write(offset, width, value)?;
        self.ctrl.store(config.pasid_ctrl(), Ordering::Release);
        Ok(())
    }

    /// ATS Enable in the function's ATS control register (false without ATS).
    pub(crate) fn ats_enabled(&self) -> bool {
        lock(&self.config).ats_enabled()
    }

    /// PRI Enable and min(allocation, capacity), `None` without PRI.
    pub(crate) fn pri_state(&self) -> Option<(bool, u32)> {
        lock(&self.config).pri_state()
    }

    /// Width the IOMMU's PASID directory for this function must cover (0 without PASID).
    pub(crate) fn pasid_width(&self) -> u8 {
        self.vcap.map_or(0, |c| c.max_pasid_width)
    }

    /// The checks a function applies before it may emit a request: PASID Enable for any
    /// PASID, the width, and the execute / privileged enables.
    pub(crate) fn check_request(
        &self,
        pasid: Option<u32>,
        execute: bool,
        privileged: bool,
    ) -> Result<(), VfioError> {
        let refuse = |what, reason| VfioError::PasidRequestRefused {
            source_id: self.source_id,
            pasid,
            what,
            reason,
        };
        let what = match (execute, privileged) {
            (false, false) => "a request",
            (true, false) => "an execute request",
            (false, true) => "a privileged request",
            (true, true) => "a privileged execute request",
        };
        let Some(pasid) = pasid else {
            if execute || privileged {
                return Err(refuse(
                    what,
                    "execute and privileged attributes need a PASID TLP prefix",
                ));
            }
            return Ok(());
        };
        let Some(cap) = self.vcap else {
            return Err(refuse(what, "the function has no PASID capability"));
        };
        let ctrl = self.ctrl.load(Ordering::Acquire);
        if ctrl & PCI_PASID_CTRL_ENABLE == 0 {
            return Err(refuse(
                what,
                "PASID Enable is clear in the PASID control register",
            ));
        }
        if u64::from(pasid) >> cap.max_pasid_width != 0 {
            return Err(refuse(what, "the PASID does not fit in Max PASID Width"));
        }
        if execute && ctrl & PCI_PASID_CTRL_EXEC == 0 {
            return Err(refuse(what, "Execute Permission Enable is clear"));
        }
        if privileged && ctrl & PCI_PASID_CTRL_PRIV == 0 {
            return Err(refuse(what, "Privileged Mode Enable is clear"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> PasidCapability {
        PasidCapability {
            max_pasid_width: 16,
            execute: true,
            privileged: false,
        }
    }

    #[test]
    fn header_and_capability_layout() {
        let cs = ConfigSpace::new(0x8086, 0x1234, Some(cap()), AtsPri::default());
        assert_eq!(cs.read(0, ConfigWidth::Dword).unwrap(), 0x1234_8086);
        assert_eq!(cs.read(0x34, ConfigWidth::Byte).unwrap(), 0x40);
        assert_eq!(cs.read(0x100, ConfigWidth::Dword).unwrap(), 0x0001_001b);
        assert_eq!(cs.read(0x104, ConfigWidth::Word).unwrap(), 0x1002);
        assert_eq!(cs.read(0x106, ConfigWidth::Word).unwrap(), 0);
        let hidden = ConfigSpace::new(0x8086, 0x1234, None, AtsPri::default());
        assert_eq!(hidden.read(0x100, ConfigWidth::Dword).unwrap(), 0);
    }

    #[test]
    fn ats_and_pri_capabilities_are_chained_after_pasid() {
        let caps = AtsPri {
            ats: true,
            pri_capacity: Some(32),
        };
        let mut cs = ConfigSpace::new(0x8086, 0x1234, Some(cap()), caps);
        let read = |cs: &ConfigSpace, off| cs.read(off, ConfigWidth::Dword).unwrap();
        assert_eq!(read(&cs, 0x100), 0x1081_001b, "PASID, next 0x108");
        assert_eq!(read(&cs, 0x108), 0x1101_000f, "ATS, next 0x110");
        assert_eq!(read(&cs, 0x110), 0x0001_0013, "PRI, last");
        assert_eq!(
            read(&cs, 0x10c) & 0xffff,
            u32::from(PCI_ATS_CAP_PAGE_ALIGNED)
        );
        assert_eq!(read(&cs, 0x114) >> 16, u32::from(PCI_PRI_STATUS_PASID));
        assert_eq!(read(&cs, 0x118), 32, "capacity");
        assert!(!cs.ats_enabled());
        assert_eq!(cs.pri_state(), Some((false, 0)));
        // Enable bits, STU and the allocation are writable; the rest is not.
        cs.write(0x10c, ConfigWidth::Dword, 0xffff_ffff).unwrap();
        assert_eq!(read(&cs, 0x10c), 0x801f_0020);
        cs.write(0x114, ConfigWidth::Dword, 0xffff_ffff).unwrap();
        assert_eq!(read(&cs, 0x114), 0x8000_0001);
        cs.write(0x118, ConfigWidth::Dword, 7).unwrap();
        cs.write(0x11c, ConfigWidth::Dword, 64).unwrap();
        assert!(cs.ats_enabled());
        assert_eq!(
            cs.pri_state(),
            Some((true, 32)),
            "min(allocation, capacity)"
        );
        cs.write(0x11c, ConfigWidth::Dword, 4).unwrap();
        assert_eq!(cs.pri_state(), Some((true, 4)));
        // Without PASID, ATS is the first extended capability.
        let cs = ConfigSpace::new(0, 0, None, caps);
        assert_eq!(read(&cs, 0x100), 0x1081_000f);
    }

    #[test]
    fn writes_go_through_the_mask() {
        let mut cs = ConfigSpace::new(0x8086, 0x1234, Some(cap()), AtsPri::default());
        cs.write(0x104, ConfigWidth::Dword, 0xffff_ffff).unwrap();
        // Capability word unchanged; control: enable + exec only (no privileged support).
        assert_eq!(cs.read(0x104, ConfigWidth::Word).unwrap(), 0x1002);
        assert_eq!(cs.pasid_ctrl(), PCI_PASID_CTRL_ENABLE | PCI_PASID_CTRL_EXEC);
        cs.write(0x0, ConfigWidth::Word, 0).unwrap();
        assert_eq!(cs.read(0, ConfigWidth::Word).unwrap(), 0x8086);
    }

    #[test]
    fn bad_accesses_are_einval() {
        let cs = ConfigSpace::new(0, 0, None, AtsPri::default());
        for (off, w) in [
            (1, ConfigWidth::Word),
            (2, ConfigWidth::Dword),
            (4096, ConfigWidth::Byte),
            (4094, ConfigWidth::Dword),
        ] {
            let err = cs.read(off, w).unwrap_err();
            assert_eq!(err.errno(), vsva_uapi::Errno::EINVAL, "{off:#x} {w:?}");
        }
        assert!(cs.read(4095, ConfigWidth::Byte).is_ok());
    }

    #[test]
    fn cap_word_round_trip() {
        let c = cap();
        assert_eq!(PasidCapability::from_cap_word(c.cap_word()), c);
    }
}
