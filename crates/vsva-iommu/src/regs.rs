//! Capability (CAP) and extended-capability (ECAP) register values, derived from one
//! [`IommuConfig`], so the layer above can report exactly what this model does.

use vsva_uapi::Errno;

/// Everything that shapes the modelled IOMMU. Build one with [`IommuConfig::default`] and
/// adjust fields; [`IommuConfig::validate`] is called by `Iommu::new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuConfig {
    /// PASID width in bits (1..=20); ECAP.PSS = width - 1.
    pub pasid_bits: u8,
    /// Maximum guest (and host) address width in bits (39..=57); CAP.MGAW = width - 1.
    /// First- and second-level output addresses at or above `min(mgaw, 52)` bits are reserved.
    pub mgaw: u8,
    /// Second-level table depths supported (any of 3, 4, 5); CAP.SAGAW.
    pub sagaw_levels: Vec<u8>,
    /// Domain-id width: 4, 6, 8, 10, 12, 14 or 16 bits (CAP.ND = (bits - 4) / 2).
    pub domain_bits: u8,
    /// Nested translation supported (ECAP.NEST).
    pub nesting: bool,
    /// First-level 1 GiB pages supported (CAP.FL1GP).
    pub fl1gp: bool,
    /// First-level 5-level paging supported (CAP.FL5LP).
    pub fl5lp: bool,
    /// Second-level 2 MiB pages supported (CAP.SLLPS bit 0).
    pub sl_2m: bool,
    /// Second-level 1 GiB pages supported (CAP.SLLPS bit 1).
    pub sl_1g: bool,
    /// Execute requests supported (ECAP.ERS).
    pub ers: bool,
    /// Supervisor requests supported (ECAP.SRS).
    pub srs: bool,
    /// Page requests supported (ECAP.PRS).
    pub prs: bool,
    /// Extended accessed flag supported (ECAP.EAFS).
    pub eafs: bool,
    /// Pass-through supported (ECAP.PT).
    pub pass_through: bool,
    /// Second-level accessed/dirty supported (ECAP.SLADS).
    pub slads: bool,
    /// Device TLBs (ATS) supported (ECAP.DT).
    pub device_tlb: bool,
    /// Maximum address mask value for page-selective invalidation (CAP.MAMV).
    pub mamv: u8,
    /// IOTLB capacity in entries (rounded up to a power of two, at least 64).
    pub iotlb_entries: usize,
    /// Model first- and second-level paging-structure caches (hardware may have none; turning
    /// them off makes every IOTLB miss a full walk).
    pub paging_structure_caches: bool,
    /// Fault log capacity in records (older records are dropped, and counted, when full).
    pub fault_log_capacity: usize,
    /// Page-request queue capacity.
    pub prq_capacity: usize,
}

impl Default for IommuConfig {
    fn default() -> Self {
        Self {
            pasid_bits: 20,
            mgaw: 48,
            sagaw_levels: vec![3, 4],
            domain_bits: 16,
            nesting: true,
            fl1gp: true,
            fl5lp: true,
            sl_2m: true,
            sl_1g: true,
            ers: true,
            srs: true,
            prs: true,
            eafs: true,
            pass_through: true,
            slads: true,
            device_tlb: true,
            mamv: 18,
            iotlb_entries: 4096,
            paging_structure_caches: true,
            fault_log_capacity: 1024,
            prq_capacity: 256,
        }
    }
}

/// A configuration value the model cannot honour.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A field is outside its allowed range.
    #[error("invalid IommuConfig.{field} = {value}: {expected}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Offending value, rendered.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl ConfigError {
    /// The errno a uAPI caller sees: `EINVAL`.
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    expected: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: format!("{value:?}"),
        expected,
    }
}

impl IommuConfig {
    /// Checks every field; the first bad one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=20).contains(&self.pasid_bits) {
            return Err(invalid("pasid_bits", self.pasid_bits, "1..=20"));
        }
        if !(39..=57).contains(&self.mgaw) {
            return Err(invalid("mgaw", self.mgaw, "39..=57"));
        }
        if self.sagaw_levels.is_empty() || self.sagaw_levels.iter().any(|l| !(3..=5).contains(l)) {
            return Err(invalid(
                "sagaw_levels",
                &self.sagaw_levels,
                "non-empty subset of {3, 4, 5}",
            ));
        }
        if let Some(l) = self.sagaw_levels.iter().find(|&&l| sl_width(l) > self.mgaw) {
            return Err(invalid(
                "sagaw_levels",
                l,
                "levels whose width (39/48/57) fits in mgaw",
            ));
        }
        if !(4..=16).contains(&self.domain_bits) || !self.domain_bits.is_multiple_of(2) {
            return Err(invalid(
                "domain_bits",
                self.domain_bits,
                "4, 6, 8, 10, 12, 14 or 16",
            ));
        }
        if self.mamv > 63 {
            return Err(invalid("mamv", self.mamv, "0..=63"));
        }
        if self.iotlb_entries == 0 || self.iotlb_entries > 1 << 24 {
            return Err(invalid("iotlb_entries", self.iotlb_entries, "1..=16777216"));
        }
        if self.fault_log_capacity == 0 {
            return Err(invalid("fault_log_capacity", 0, "at least 1"));
        }
        if self.prq_capacity == 0 {
            return Err(invalid("prq_capacity", 0, "at least 1"));
        }
        Ok(())
    }

    /// Host address width used for reserved-bit checks: `min(mgaw, 52)`.
    pub fn haw(&self) -> u8 {
        self.mgaw.min(52)
    }

    /// The CAP register value.
    pub fn cap(&self) -> u64 {
        let mut v = 0u64;
        v |= u64::from(self.fl5lp) << 60;
        v |= u64::from(self.fl1gp) << 56;
        v |= u64::from(self.mamv & 0x3f) << 48;
        v |= 1 << 39; // PSI: page-selective invalidation supported
        v |= (u64::from(self.sl_2m) | u64::from(self.sl_1g) << 1) << 34;
        v |= u64::from(self.mgaw - 1) << 16;
        let mut sagaw = 0u64;
        for &l in &self.sagaw_levels {
            sagaw |= 1 << (l - 2);
        }
        v |= sagaw << 8;
        // CM = 0: not-present and erroneous entries are never cached.
        v |= u64::from((self.domain_bits - 4) / 2);
        v
    }

    /// The ECAP register value.
    pub fn ecap(&self) -> u64 {
        let mut v = 0u64;
        // RPRIVS: the context entry's RID_PRIV is honoured (requests without PASID take its
        // privilege); without it the field would be reserved.
        v |= 1 << 53;
        // RPS: the context entry's RID_PASID is honoured (requests without PASID use that
        // PASID's entry); without it the field would be reserved and PASID 0 used.
        v |= 1 << 49;
        v |= 1 << 48; // SMPWC: page walks are coherent with memory
        v |= 1 << 47; // FLTS
        v |= 1 << 46; // SLTS
        v |= u64::from(self.slads) << 45;
        v |= 1 << 43; // SMTS
        v |= 1 << 40; // PASID
        v |= u64::from(self.pasid_bits - 1) << 35;
        v |= u64::from(self.eafs) << 34;
        v |= u64::from(self.srs) << 31;
        v |= u64::from(self.ers) << 30;
        v |= u64::from(self.prs) << 29;
        v |= u64::from(self.nesting) << 26;
        v |= 1 << 25; // MTS: memory type fields accepted
        v |= 1 << 7; // SC: snoop control
        v |= u64::from(self.pass_through) << 6;
        v |= u64::from(self.device_tlb) << 2;
        v |= 1 << 1; // QI
        v
    }

    /// Whether a second-level depth of `levels` is supported.
    pub fn supports_sl_levels(&self, levels: u8) -> bool {
        self.sagaw_levels.contains(&levels)
    }
}

/// Input width in bits of a second-level table with `levels` levels (3 → 39, 4 → 48, 5 → 57).
pub fn sl_width(levels: u8) -> u8 {
    12 + 9 * levels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_registers_have_the_documented_fields() {
        let c = IommuConfig::default();
        c.validate().unwrap();
        let cap = c.cap();
        assert_eq!(cap >> 60 & 1, 1, "FL5LP");
        assert_eq!(cap >> 56 & 1, 1, "FL1GP");
        assert_eq!(cap >> 48 & 0x3f, 18, "MAMV");
        assert_eq!(cap >> 39 & 1, 1, "PSI");
        assert_eq!(cap >> 34 & 0xf, 0b11, "SLLPS");
        assert_eq!(cap >> 16 & 0x3f, 47, "MGAW");
        assert_eq!(cap >> 8 & 0x1f, 0b0110, "SAGAW 39 + 48");
        assert_eq!(cap >> 7 & 1, 0, "CM");
        assert_eq!(cap & 7, 6, "ND 16 bits");
        let ecap = c.ecap();
        assert_eq!(ecap >> 35 & 0x1f, 19, "PSS");
        for (bit, name) in [
            (53, "RPRIVS"),
            (49, "RPS"),
            (48, "SMPWC"),
            (47, "FLTS"),
            (46, "SLTS"),
            (45, "SLADS"),
            (43, "SMTS"),
            (40, "PASID"),
            (34, "EAFS"),
            (31, "SRS"),
            (30, "ERS"),
            (29, "PRS"),
            (26, "NEST"),
            (6, "PT"),
            (2, "DT"),
            (1, "QI"),
        ] {
            assert_eq!(ecap >> bit & 1, 1, "{name}");
        }
    }

    #[test]
    fn registers_follow_the_config() {
        let c = IommuConfig {
            pasid_bits: 8,
            fl5lp: false,
            fl1gp: false,
            nesting: false,
            ers: false,
            srs: false,
            sagaw_levels: vec![3],
            mgaw: 39,
            domain_bits: 8,
            ..IommuConfig::default()
        };
        c.validate().unwrap();
        assert_eq!(c.cap() >> 60 & 1, 0);
        assert_eq!(c.cap() >> 56 & 1, 0);
        assert_eq!(c.cap() >> 16 & 0x3f, 38);
        assert_eq!(c.cap() >> 8 & 0x1f, 0b0010);
        assert_eq!(c.cap() & 7, 2);
        assert_eq!(c.ecap() >> 35 & 0x1f, 7);
        assert_eq!(c.ecap() >> 26 & 1, 0);
        assert_eq!(c.ecap() >> 30 & 3, 0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = IommuConfig {
            pasid_bits: 21,
            ..IommuConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.to_string(), "invalid IommuConfig.pasid_bits = 21: 1..=20");
        let e = IommuConfig {
            sagaw_levels: vec![5],
            ..IommuConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("sagaw_levels"));
        assert!(IommuConfig {
            domain_bits: 7,
            ..IommuConfig::default()
        }
        .validate()
        .is_err());
    }
}
