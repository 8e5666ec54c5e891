//! The configuration of a virtual IOMMU and the VER / CAP / ECAP / VCCAP values it reports,
//! derived from what the host IOMMU offers (the nesting capability of the host container).

use vsva_iommu::SourceId;

use crate::regs::{FRO, IRO, VCCAP_PAS};

/// A device the guest sees behind this IOMMU: its requester id in the guest and the host
/// function it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestDevice {
    /// Requester id the guest's tables and descriptors use.
    pub guest: SourceId,
    /// Requester id of the host function (what host faults and page requests name).
    pub host: SourceId,
}

/// What a VMM chooses for its guest's IOMMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViommuConfig {
    /// PASID width offered to the guest; clamped to the host's (ECAP.PSS = width − 1).
    pub pasid_bits: u8,
    /// Offer 5-level first-level paging (CAP.FL5LP) if the host has it.
    pub fl5lp: bool,
    /// Offer page requests (ECAP.PRS) if the host has them.
    pub page_requests: bool,
    /// Number of fault recording registers (1..=256; CAP.NFR = number − 1).
    pub fault_records: u16,
    /// The guest's devices.
    pub devices: Vec<GuestDevice>,
}

impl Default for ViommuConfig {
    fn default() -> Self {
        ViommuConfig {
            pasid_bits: 20,
            fl5lp: true,
            page_requests: true,
            fault_records: 8,
            devices: Vec::new(),
        }
    }
}

/// What the host IOMMU offers the guest (the container's nesting capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCaps {
    /// Host CAP register as the nesting capability reports it.
    pub cap: u64,
    /// Host ECAP register as the nesting capability reports it.
    pub ecap: u64,
    /// Host PASID width in bits (0 = none).
    pub pasid_bits: u8,
    /// Address width of the host domain (stage 2) in bits.
    pub addr_width: u16,
}

impl From<&vsva_uapi::NestingCapability> for HostCaps {
    /// The host's offer as a container's nesting capability reports it.
    fn from(n: &vsva_uapi::NestingCapability) -> HostCaps {
        HostCaps {
            cap: n.vtd.cap_reg,
            ecap: n.vtd.ecap_reg,
            pasid_bits: n.pasid_bits.min(20) as u8,
            addr_width: n.addr_width,
        }
    }
}

/// The registers that describe the unit, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) ver: u32,
    pub(crate) cap: u64,
    pub(crate) ecap: u64,
    pub(crate) vccap: u64,
    /// PASID width the guest was given.
    pub(crate) pasid_bits: u8,
    /// Whether page requests are offered.
    pub(crate) prs: bool,
}

fn bit(v: u64, n: u32) -> u64 {
    v >> n & 1
}

/// CAP.MAMV for the guest: the host's, or 18 (the software IOMMU's default) when the host's
/// nesting capability does not carry it (it reports only FL1GP and FL5LP of CAP). Safe either
/// way: a page-selective invalidation beyond the host's MAMV becomes a whole-PASID one.
fn mamv(host_cap: u64) -> u64 {
    match host_cap >> 48 & 0x3f {
        0 => 18,
        m => m,
    }
}

/// Derives the guest's identity registers.
///
/// CAP: ND = 16-bit domain ids, SAGAW = 48-bit, MGAW = the host domain width (at least 39),
/// FRO / NFR for the fault records, PSI, MAMV (see `mamv`), FL1GP from the host, FL5LP when asked and
/// the host has it, CM = 0. ECAP: QI, DT from the host, IRO, ERS / SRS / EAFS from the host,
/// PRS when asked and the host has it, PSS = min(asked, host) − 1, PASID, SMTS, VCS, FLTS,
/// SMPWC. Not offered: second-level and nested translation for the guest (its DMA without
/// PASID goes through the host's stage 2 only), pass-through, interrupt remapping.
pub(crate) fn identity(host: &HostCaps, cfg: &ViommuConfig) -> Identity {
    let pasid_bits = cfg.pasid_bits.min(host.pasid_bits).min(20);
    let prs = cfg.page_requests && bit(host.ecap, 29) == 1;
    let mgaw = u64::from(host.addr_width.clamp(39, 57)) - 1;
    let nfr = u64::from(cfg.fault_records.clamp(1, 256) - 1);
    let mut cap = 6; // ND: 16-bit domain ids
    cap |= 1 << (8 + 2); // SAGAW: 48-bit
    cap |= mgaw << 16;
    cap |= FRO << 24;
    cap |= 1 << 39; // PSI
    cap |= nfr << 40;
    cap |= mamv(host.cap) << 48;
    cap |= bit(host.cap, 56) << 56; // FL1GP
    cap |= (u64::from(cfg.fl5lp) & bit(host.cap, 60)) << 60;
    let mut ecap = 1 << 1; // QI
    ecap |= bit(host.ecap, 2) << 2; // DT
    ecap |= IRO << 8;
    ecap |= u64::from(prs) << 29;
    ecap |= bit(host.ecap, 30) << 30; // ERS
    ecap |= bit(host.ecap, 31) << 31; // SRS
    ecap |= bit(host.ecap, 34) << 34; // EAFS
    if pasid_bits > 0 {
        ecap |= u64::from(pasid_bits - 1) << 35;
        ecap |= 1 << 40; // PASID
    }
    ecap |= 1 << 43; // SMTS
    ecap |= 1 << 44; // VCS
    ecap |= 1 << 47; // FLTS
    ecap |= 1 << 48; // SMPWC
    Identity {
        ver: 0x30, // 3.0: scalable mode
        cap,
        ecap,
        vccap: if pasid_bits > 0 { VCCAP_PAS } else { 0 },
        pasid_bits,
        prs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_identity_follows_host_and_config() {
        let host_cfg = vsva_iommu::IommuConfig {
            pasid_bits: 16,
            ..Default::default()
        };
        let host = HostCaps {
            cap: host_cfg.cap(),
            ecap: host_cfg.ecap(),
            pasid_bits: 16,
            addr_width: 48,
        };
        let id = identity(&host, &ViommuConfig::default());
        assert_eq!(id.ecap >> 35 & 0x1f, 15, "PSS no wider than the host");
        assert_eq!(id.ecap >> 44 & 1, 1, "VCS");
        assert_eq!(id.ecap >> 43 & 1, 1, "SMTS");
        assert_eq!(id.ecap >> 29 & 1, 1, "PRS");
        assert_eq!(id.ecap >> 8 & 0x3ff, 0xf, "IRO");
        assert_eq!(id.cap >> 60 & 1, 1, "FL5LP");
        assert_eq!(id.cap >> 16 & 0x3f, 47, "MGAW");
        assert_eq!(id.cap >> 24 & 0x3ff, 0x22, "FRO");
        assert_eq!(id.cap >> 40 & 0xff, 7, "NFR");
        assert_eq!(id.vccap, 1);
        let off = ViommuConfig {
            fl5lp: false,
            page_requests: false,
            pasid_bits: 10,
            ..ViommuConfig::default()
        };
        let id = identity(&host, &off);
        assert_eq!(id.ecap >> 29 & 1, 0);
        assert_eq!(id.cap >> 60 & 1, 0);
        assert_eq!(id.ecap >> 35 & 0x1f, 9);
    }
}
