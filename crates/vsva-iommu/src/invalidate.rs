//! Typed invalidation requests, one per VT-d queued-invalidation descriptor granularity.
//!
//! | request | descriptor | what it drops |
//! |---|---|---|
//! | [`Invalidation::IotlbGlobal`] | IOTLB (type 2), global | every IOTLB and paging-structure-cache entry |
//! | [`Invalidation::IotlbDomain`] | IOTLB (type 2), domain | every entry tagged with the DID (all PASIDs, all stages) |
//! | [`Invalidation::IotlbDomainPages`] | IOTLB (type 2), page-selective within domain | second-level-only entries of the pages, second-level PSC entries of the range (unless IH), every nested entry of the DID (they embed second-level results) |
//! | [`Invalidation::PasidIotlbAll`] | PASID-based IOTLB (type 6), all PASIDs of a DID | first-level and nested entries and first-level PSC of the DID |
//! | [`Invalidation::PasidIotlb`] | PASID-based IOTLB, one PASID | the same for one (DID, PASID) |
//! | [`Invalidation::PasidIotlbPages`] | PASID-based IOTLB, page-selective | the pages `[addr, addr + 2^am pages)` of one (DID, PASID); first-level PSC of the range too unless IH |
//! | [`Invalidation::PasidCache`] | PASID cache (type 7) | cached PASID entries: all / of a DID / of a (DID, PASID) |
//! | [`Invalidation::ContextCache`] | context cache (type 1) | cached context entries (and the PASID entries reached through them): all / one device |
//! | [`Invalidation::DeviceTlb`] | device TLB (type 3 / type 8) | a device's ATS translations: requests without PASID or one PASID, all or `2^am` pages |
//! | [`Invalidation::DeviceTlbAll`] | device TLB, global | every ATS translation of a device |
//!
//! The uAPI granularities map as: DOMAIN → `PasidIotlbAll` / `PasidCache(Domain)`; PASID →
//! `PasidIotlb` / `PasidCache(Pasid)` / `DeviceTlb { pages: None }`; ADDR → `PasidIotlbPages`
//! (IH = LEAF flag, `am` = log2 of the page count for a power-of-two aligned range) and
//! `DeviceTlb { pages: Some(..) }`.

use vsva_uapi::Errno;

use crate::fault::SourceId;
use crate::regs::IommuConfig;

/// Scope of a PASID-cache invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasidCacheScope {
    /// Every cached PASID entry.
    All,
    /// Entries whose PASID entry carries this DID.
    Domain {
        /// The domain (DID) whose entries are dropped.
        did: u16,
    },
    /// The entry of one PASID in one domain.
    Pasid {
        /// The domain (DID) whose entries are dropped.
        did: u16,
        /// The PASID whose entries are dropped.
        pasid: u32,
    },
}

/// Scope of a context-cache invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextCacheScope {
    /// Every cached context entry.
    All,
    /// One device's context entry.
    Device {
        /// Requester id.
        source_id: SourceId,
    },
}

/// A page range of `2^am` 4 KiB pages starting at `addr` (low bits of `addr` below the range
/// size are ignored, as the hardware does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRange {
    /// An address in the first page (aligned down to the range size).
    pub addr: u64,
    /// Address mask: the range is `2^am` pages.
    pub am: u8,
}

impl PageRange {
    /// The range's aligned start and its length in bytes.
    /// `am` above 51 is treated as 51 (the whole 63-bit space).
    pub fn span(&self) -> (u64, u64) {
        let len = 1u64 << (12 + u32::from(self.am.min(51)));
        (self.addr & !(len - 1), len)
    }
    /// Number of 4 KiB pages (`am` capped at 51 as for [`Self::span`]).
    pub fn pages(&self) -> u64 {
        1u64 << self.am.min(51)
    }
    /// The smallest range covering `[addr, addr + len)`.
    pub fn covering(addr: u64, len: u64) -> Self {
        let mut am = 0u8;
        while am < 51 {
            let r = PageRange { addr, am };
            let (start, size) = r.span();
            if start.saturating_add(size) >= addr.saturating_add(len) {
                return r;
            }
            am += 1;
        }
        PageRange { addr, am }
    }
}

/// One invalidation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// Everything in the IOTLB and paging-structure caches.
    IotlbGlobal,
    /// Everything tagged with a domain.
    IotlbDomain {
        /// The domain (DID) whose entries are dropped.
        did: u16,
    },
    /// Second-level pages of a domain (the host changed its stage 2).
    IotlbDomainPages {
        /// The domain (DID) whose entries are dropped.
        did: u16,
        /// Guest-physical pages.
        range: PageRange,
        /// Invalidation hint: leaf entries only, keep paging-structure caches.
        ih: bool,
    },
    /// First-level and nested entries of every PASID of a domain.
    PasidIotlbAll {
        /// The domain (DID) whose entries are dropped.
        did: u16,
    },
    /// First-level and nested entries of one PASID.
    PasidIotlb {
        /// The domain (DID) whose entries are dropped.
        did: u16,
        /// The PASID whose entries are dropped.
        pasid: u32,
    },
    /// Pages of one PASID.
    PasidIotlbPages {
        /// The domain (DID) whose entries are dropped.
        did: u16,
        /// The PASID whose entries are dropped.
        pasid: u32,
        /// Pages.
        range: PageRange,
        /// Invalidation hint: leaf entries only, keep paging-structure caches.
        ih: bool,
    },
    /// Cached PASID entries of the scope.
    PasidCache(PasidCacheScope),
    /// Cached context entries of the scope (and the PASID entries reached through them).
    ContextCache(ContextCacheScope),
    /// A device's TLB for requests without PASID (`pasid: None`) or one PASID, all pages
    /// (`pages: None`) or a range.
    DeviceTlb {
        /// Device.
        source_id: SourceId,
        /// PASID, or `None` for requests without PASID.
        pasid: Option<u32>,
        /// Pages, or `None` for all.
        pages: Option<PageRange>,
    },
    /// Every entry of a device's TLB.
    DeviceTlbAll {
        /// Device.
        source_id: SourceId,
    },
}

impl Invalidation {
    /// Checks the request against the IOMMU configured by `cfg`: every DID within the
    /// domain-id width, every PASID within the PASID width, every address mask at most
    /// CAP.MAMV (checked in that order).
    pub fn validate(&self, cfg: &IommuConfig) -> Result<(), InvalidationError> {
        let did_ok = |did: u16| {
            if u32::from(did) >> cfg.domain_bits != 0 {
                Err(InvalidationError::Domain {
                    did,
                    bits: cfg.domain_bits,
                })
            } else {
                Ok(())
            }
        };
        let pasid_ok = |pasid: u32| {
            if pasid >> cfg.pasid_bits != 0 {
                Err(InvalidationError::Pasid {
                    pasid,
                    bits: cfg.pasid_bits,
                })
            } else {
                Ok(())
            }
        };
        let am_ok = |r: &PageRange| {
            if r.am > cfg.mamv {
                Err(InvalidationError::AddressMask {
                    am: r.am,
                    max: cfg.mamv,
                })
            } else {
                Ok(())
            }
        };
        match *self {
            Invalidation::IotlbGlobal | Invalidation::ContextCache(_) => {}
            Invalidation::IotlbDomain { did } | Invalidation::PasidIotlbAll { did } => did_ok(did)?,
            Invalidation::IotlbDomainPages { did, ref range, .. } => {
                did_ok(did)?;
                am_ok(range)?;
            }
            Invalidation::PasidIotlb { did, pasid } => {
                did_ok(did)?;
                pasid_ok(pasid)?;
            }
            Invalidation::PasidIotlbPages {
                did,
                pasid,
                ref range,
                ..
            } => {
                did_ok(did)?;
                pasid_ok(pasid)?;
                am_ok(range)?;
            }
            Invalidation::PasidCache(PasidCacheScope::All) => {}
            Invalidation::PasidCache(PasidCacheScope::Domain { did }) => did_ok(did)?,
            Invalidation::PasidCache(PasidCacheScope::Pasid { did, pasid }) => {
                did_ok(did)?;
                pasid_ok(pasid)?;
            }
            Invalidation::DeviceTlb { pasid, pages, .. } => {
                if let Some(p) = pasid {
                    pasid_ok(p)?;
                }
                if let Some(r) = pages {
                    am_ok(&r)?;
                }
            }
            Invalidation::DeviceTlbAll { .. } => {}
        }
        Ok(())
    }
}

/// An invalidation request the IOMMU refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidationError {
    /// The address mask exceeds CAP.MAMV.
    #[error("invalidation address mask am = {am} exceeds the maximum {max}")]
    AddressMask {
        /// Requested mask.
        am: u8,
        /// CAP.MAMV.
        max: u8,
    },
    /// The PASID is beyond the PASID width.
    #[error("invalidation pasid {pasid:#x} exceeds the {bits}-bit PASID width")]
    Pasid {
        /// Requested PASID.
        pasid: u32,
        /// The configured width, in bits.
        bits: u8,
    },
    /// The DID is beyond the domain-id width.
    #[error("invalidation did {did} exceeds the {bits}-bit domain-id width")]
    Domain {
        /// Requested DID.
        did: u16,
        /// The configured width, in bits.
        bits: u8,
    },
}

impl InvalidationError {
    /// The errno a uAPI caller sees: `EINVAL`.
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_checks_did_then_pasid_then_mask() {
        let cfg = IommuConfig {
            pasid_bits: 8,
            domain_bits: 8,
            mamv: 4,
            ..IommuConfig::default()
        };
        let sid = SourceId::new(0, 1, 0);
        let page = |am| PageRange { addr: 0, am };
        let bad_did = Err(InvalidationError::Domain { did: 256, bits: 8 });
        let bad_pasid = Err(InvalidationError::Pasid {
            pasid: 256,
            bits: 8,
        });
        let bad_am = Err(InvalidationError::AddressMask { am: 5, max: 4 });
        let cases = [
            (Invalidation::IotlbGlobal, Ok(())),
            (Invalidation::IotlbDomain { did: 255 }, Ok(())),
            (Invalidation::IotlbDomain { did: 256 }, bad_did),
            (Invalidation::PasidIotlbAll { did: 256 }, bad_did),
            (
                Invalidation::IotlbDomainPages {
                    did: 256,
                    range: page(5),
                    ih: false,
                },
                bad_did,
            ),
            (
                Invalidation::IotlbDomainPages {
                    did: 1,
                    range: page(5),
                    ih: false,
                },
                bad_am,
            ),
            (Invalidation::PasidIotlb { did: 1, pasid: 255 }, Ok(())),
            (Invalidation::PasidIotlb { did: 1, pasid: 256 }, bad_pasid),
            (
                Invalidation::PasidIotlbPages {
                    did: 256,
                    pasid: 256,
                    range: page(5),
                    ih: true,
                },
                bad_did,
            ),
            (
                Invalidation::PasidIotlbPages {
                    did: 1,
                    pasid: 256,
                    range: page(5),
                    ih: true,
                },
                bad_pasid,
            ),
            (
                Invalidation::PasidIotlbPages {
                    did: 1,
                    pasid: 1,
                    range: page(4),
                    ih: true,
                },
                Ok(()),
            ),
            (Invalidation::PasidCache(PasidCacheScope::All), Ok(())),
            (
                Invalidation::PasidCache(PasidCacheScope::Domain { did: 256 }),
                bad_did,
            ),
            (
                Invalidation::PasidCache(PasidCacheScope::Pasid { did: 1, pasid: 256 }),
                bad_pasid,
            ),
            (Invalidation::ContextCache(ContextCacheScope::All), Ok(())),
            (
                Invalidation::DeviceTlb {
                    source_id: sid,
                    pasid: Some(256),
                    pages: None,
                },
                bad_pasid,
            ),
            (
                Invalidation::DeviceTlb {
                    source_id: sid,
                    pasid: None,
                    pages: Some(page(5)),
                },
                bad_am,
            ),
            (Invalidation::DeviceTlbAll { source_id: sid }, Ok(())),
        ];
        for (inv, want) in cases {
            assert_eq!(inv.validate(&cfg), want, "{inv:?}");
        }
    }

    #[test]
    fn page_range_span_and_covering() {
        let r = PageRange {
            addr: 0x1234_5678,
            am: 2,
        };
        assert_eq!(r.span(), (0x1234_4000, 0x4000));
        assert_eq!(r.pages(), 4);
        let c = PageRange::covering(0x3000, 0x2000);
        let (s, l) = c.span();
        assert!(s <= 0x3000 && s + l >= 0x5000);
        assert_eq!(c.am, 3);
        assert_eq!(PageRange::covering(0x1000, 0x1000).am, 0);
        assert_eq!(
            PageRange {
                addr: 0x1234,
                am: 63
            }
            .span(),
            (0, 1 << 63)
        );
    }
}
