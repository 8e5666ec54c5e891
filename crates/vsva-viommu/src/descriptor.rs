//! Decoding invalidation-queue descriptors (VT-d specification 6.5.2): the 128-bit layout of
//! every type, the extra reserved qwords of the 256-bit layout, and the reserved-bit checks.
//! Decoding is total: any 32 bytes give a descriptor or a [`DescriptorError`].

/// Context-cache invalidation granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextScope {
    /// Every context entry.
    Global,
    /// The entries of one domain id.
    Domain(u16),
    /// One device (source id, function mask).
    Device {
        /// Requester id.
        sid: u16,
        /// Function mask (FM): low bits of the function ignored.
        fm: u8,
    },
}

/// PASID-based IOTLB invalidation granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidIotlbScope {
    /// Everything cached for the PASID (G = 10b).
    Pasid,
    /// `2^am` pages from `addr` (G = 11b); `ih`: only leaf entries changed.
    Page {
        /// Page-aligned address.
        addr: u64,
        /// Address mask: 2^am pages.
        am: u8,
        /// Invalidation hint (leaf only).
        ih: bool,
    },
}

/// PASID-cache invalidation granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidCacheScope {
    /// Every PASID of the domain (G = 00b).
    Domain,
    /// One PASID of the domain (G = 01b).
    Pasid,
    /// Everything (G = 11b).
    Global,
}

/// A decoded invalidation descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Type 1: context-cache invalidation.
    ContextCache(ContextScope),
    /// Type 2: IOTLB invalidation (requests without PASID).
    Iotlb {
        /// Granularity: 1 global, 2 domain, 3 page.
        granularity: u8,
        /// Domain id.
        did: u16,
        /// Page address (page granularity).
        addr: u64,
        /// Address mask.
        am: u8,
    },
    /// Type 3: device-TLB invalidation (requests without PASID).
    DeviceTlb {
        /// Requester id.
        sid: u16,
        /// Address (with the size bit's encoding).
        addr: u64,
        /// Size bit.
        size: bool,
    },
    /// Type 5: invalidation wait.
    Wait {
        /// IF: signal completion with an interrupt.
        interrupt: bool,
        /// SW: write `data` at `addr`.
        status_write: bool,
        /// FN: fence.
        fence: bool,
        /// PD: page-request drain.
        drain: bool,
        /// Status data.
        data: u32,
        /// Status address (dword aligned).
        addr: u64,
    },
    /// Type 6: PASID-based IOTLB invalidation.
    PasidIotlb {
        /// Domain id.
        did: u16,
        /// PASID.
        pasid: u32,
        /// What to invalidate.
        scope: PasidIotlbScope,
    },
    /// Type 7: PASID-cache invalidation.
    PasidCache {
        /// Domain id.
        did: u16,
        /// PASID (PASID-selective only).
        pasid: u32,
        /// What to invalidate.
        scope: PasidCacheScope,
    },
    /// Type 8: PASID-based device-TLB invalidation.
    PasidDeviceTlb {
        /// Requester id.
        sid: u16,
        /// PASID.
        pasid: u32,
        /// Address (with the size bit's encoding).
        addr: u64,
        /// Size bit.
        size: bool,
        /// Global: every PASID's global mappings.
        global: bool,
    },
    /// Type 9: page group response.
    PageGroupResponse {
        /// Requester id.
        rid: u16,
        /// PASID, when PP is set.
        pasid: Option<u32>,
        /// Response code (0 success, 1 invalid request, 0xf failure).
        code: u8,
        /// Page request group index.
        index: u16,
    },
}

/// Why a descriptor is refused; each maps to an IQERCD.IQEI code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// A type the unit does not implement (0, 4 and 10 and above; 4 needs interrupt remapping).
    #[error("invalid descriptor type {0}")]
    InvalidType(u8),
    /// A reserved field is set, or a field holds a reserved value.
    #[error("reserved field set in a type {0} descriptor")]
    Reserved(u8),
}

const LO_TYPE: u64 = 0xf;
const ADDR: u64 = !0xfff;

fn field(v: u64, shift: u32, bits: u32) -> u64 {
    v >> shift & ((1u64 << bits) - 1)
}

/// Valid bits of (lo, hi) for each type the unit implements, by type; `(0, 0)` for the
/// others (0, 4: interrupt entry cache, without interrupt remapping; 10 and above).
const VALID_BITS: [(u64, u64); 10] = [
    (0, 0),
    (LO_TYPE | 0x30 | 0xffff << 16 | 0xffff << 32 | 0x3 << 48, 0),
    (LO_TYPE | 0x30 | 0xc0 | 0xffff << 16, ADDR | 0x7f),
    (
        LO_TYPE | 0xf << 12 | 0x1f << 16 | 0xffff << 32 | 0xfff << 52,
        ADDR | 1,
    ),
    (0, 0),
    (LO_TYPE | 0xf0 | 0xffff_ffff << 32, !0x3),
    (LO_TYPE | 0x30 | 0xffff << 16 | 0xf_ffff << 32, ADDR | 0x7f),
    (LO_TYPE | 0x30 | 0xffff << 16 | 0xf_ffff << 32, 0),
    (
        LO_TYPE | 0x1f << 4 | 0xf << 12 | 0xffff << 16 | 0xf_ffff << 32 | 0xfff << 52,
        ADDR | 1 << 11 | 1,
    ),
    (
        LO_TYPE | 0x30 | 0xf << 12 | 0xffff << 16 | 0xf_ffff << 32,
        1 << 2 | 0x1ff << 3,
    ),
];

/// Decodes one descriptor. `q` holds the qwords in order; for a 128-bit queue `q[2]` and
/// `q[3]` are zero and `wide` is false.
///
/// # Errors
///
/// [`DescriptorError::InvalidType`] for a type the unit does not implement,
/// [`DescriptorError::Reserved`] for a reserved bit or value; nothing else can fail.
#[inline]
pub fn decode(q: [u64; 4], wide: bool) -> Result<Descriptor, DescriptorError> {
    match decode_pasid_iotlb(q, wide) {
        Some(Ok((did, pasid, scope))) => Ok(Descriptor::PasidIotlb { did, pasid, scope }),
        Some(Err(e)) => Err(e),
        None => match decode_pasid_cache(q, wide) {
            Some(Ok((did, pasid, scope))) => Ok(Descriptor::PasidCache { did, pasid, scope }),
            Some(Err(e)) => Err(e),
            None => decode_any(q, wide),
        },
    }
}

/// The type a guest queues most (each unmap flushes with it), decoded on its own: `None`
/// when `q` is of another type, else its (domain id, PASID, scope) or the reserved-field
/// error. Its type and reserved bits are tested against constants, with no table look-up;
/// the rules are those [`decode`] applies to it.
#[inline(always)]
pub(crate) fn decode_pasid_iotlb(
    q: [u64; 4],
    wide: bool,
) -> Option<Result<(u16, u32, PasidIotlbScope), DescriptorError>> {
    if q[0] & (LO_TYPE | 7 << 9) != 6 {
        return None;
    }
    let (lo_ok, hi_ok) = VALID_BITS[6];
    let upper = if wide { q[2] | q[3] } else { 0 };
    if q[0] & !lo_ok != 0 || q[1] & !hi_ok != 0 || upper != 0 {
        return Some(Err(DescriptorError::Reserved(6)));
    }
    let scope = match field(q[0], 4, 2) {
        2 => PasidIotlbScope::Pasid,
        3 => PasidIotlbScope::Page {
            addr: q[1] & ADDR,
            am: field(q[1], 0, 6) as u8,
            ih: q[1] & 1 << 6 != 0,
        },
        _ => return Some(Err(DescriptorError::Reserved(6))),
    };
    let did = field(q[0], 16, 16) as u16;
    Some(Ok((did, field(q[0], 32, 20) as u32, scope)))
}

/// The type that makes the shadowing bind and unbind (a guest queues one after each write of
/// a PASID entry), decoded on its own as [`decode_pasid_iotlb`] is: `None` when `q` is of
/// another type, else its (domain id, PASID, scope) or the reserved-field error, tested
/// against constants; the rules are those [`decode`] applies to it.
#[inline(always)]
pub(crate) fn decode_pasid_cache(
    q: [u64; 4],
    wide: bool,
) -> Option<Result<(u16, u32, PasidCacheScope), DescriptorError>> {
    if q[0] & (LO_TYPE | 7 << 9) != 7 {
        return None;
    }
    let (lo_ok, hi_ok) = VALID_BITS[7];
    let upper = if wide { q[2] | q[3] } else { 0 };
    if q[0] & !lo_ok != 0 || q[1] & !hi_ok != 0 || upper != 0 {
        return Some(Err(DescriptorError::Reserved(7)));
    }
    let scope = match field(q[0], 4, 2) {
        0 => PasidCacheScope::Domain,
        1 => PasidCacheScope::Pasid,
        3 => PasidCacheScope::Global,
        _ => return Some(Err(DescriptorError::Reserved(7))),
    };
    let did = field(q[0], 16, 16) as u16;
    Some(Ok((did, field(q[0], 32, 20) as u32, scope)))
}

/// [`decode`] of any type, through the table of valid bits.
#[inline]
fn decode_any(q: [u64; 4], wide: bool) -> Result<Descriptor, DescriptorError> {
    let ty = (q[0] & LO_TYPE) as u8 | (field(q[0], 9, 3) as u8) << 4;
    // Valid bits of lo and hi for the type; everything else is reserved.
    let (lo_ok, hi_ok) = VALID_BITS
        .get(usize::from(ty))
        .copied()
        .filter(|v| v.0 != 0)
        .ok_or(DescriptorError::InvalidType(ty))?;
    let upper_ok = ty == 9 && q[0] & 1 << 5 != 0; // private data with PDP
    if q[0] & !lo_ok != 0 || q[1] & !hi_ok != 0 || (wide && !upper_ok && (q[2] | q[3]) != 0) {
        return Err(DescriptorError::Reserved(ty));
    }
    let g = field(q[0], 4, 2) as u8;
    let did = field(q[0], 16, 16) as u16;
    let pasid = field(q[0], 32, 20) as u32;
    let reserved = Err(DescriptorError::Reserved(ty));
    Ok(match ty {
        1 => Descriptor::ContextCache(match g {
            1 => ContextScope::Global,
            2 => ContextScope::Domain(did),
            3 => ContextScope::Device {
                sid: field(q[0], 32, 16) as u16,
                fm: field(q[0], 48, 2) as u8,
            },
            _ => return reserved,
        }),
        2 if g == 0 => return reserved,
        2 => Descriptor::Iotlb {
            granularity: g,
            did,
            addr: q[1] & ADDR,
            am: field(q[1], 0, 6) as u8,
        },
        3 => Descriptor::DeviceTlb {
            sid: field(q[0], 32, 16) as u16,
            addr: q[1] & ADDR,
            size: q[1] & 1 != 0,
        },
        5 => Descriptor::Wait {
            interrupt: q[0] & 1 << 4 != 0,
            status_write: q[0] & 1 << 5 != 0,
            fence: q[0] & 1 << 6 != 0,
            drain: q[0] & 1 << 7 != 0,
            data: (q[0] >> 32) as u32,
            addr: q[1] & !0x3,
        },
        6 => Descriptor::PasidIotlb {
            did,
            pasid,
            scope: match g {
                2 => PasidIotlbScope::Pasid,
                3 => PasidIotlbScope::Page {
                    addr: q[1] & ADDR,
                    am: field(q[1], 0, 6) as u8,
                    ih: q[1] & 1 << 6 != 0,
                },
                _ => return reserved,
            },
        },
        7 => Descriptor::PasidCache {
            did,
            pasid,
            scope: match g {
                0 => PasidCacheScope::Domain,
                1 => PasidCacheScope::Pasid,
                3 => PasidCacheScope::Global,
                _ => return reserved,
            },
        },
        8 => Descriptor::PasidDeviceTlb {
            sid: did,
            pasid,
            addr: q[1] & ADDR,
            size: q[1] & 1 << 11 != 0,
            global: q[1] & 1 != 0,
        },
        _ => Descriptor::PageGroupResponse {
            rid: did,
            pasid: (q[0] & 1 << 4 != 0).then_some(pasid),
            code: field(q[0], 12, 4) as u8,
            index: field(q[1], 3, 9) as u16,
        },
    })
}

/// The pages a device-TLB descriptor names: `(first address, number of 4 KiB pages)`, or
/// `None` for every address. With S clear it is the one page; with S set, the lowest clear
/// bit of `addr[63:12]` at position `n` (counting from bit 12) makes the range `2^(n+1)`
/// pages, aligned.
pub fn device_tlb_range(addr: u64, size: bool) -> Option<(u64, u64)> {
    if !size {
        return Some((addr & ADDR, 1));
    }
    let n = (addr >> 12).trailing_ones();
    if n >= 51 {
        return None;
    }
    let pages = 1u64 << (n + 1);
    Some((addr & ADDR & !((pages << 12) - 1), pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_type_and_refuses_reserved_bits() {
        // PASID cache, PASID-selective, DID 5, PASID 0x123.
        let pc = 7 | 1 << 4 | 5 << 16 | 0x123 << 32;
        assert_eq!(
            decode([pc, 0, 0, 0], true),
            Ok(Descriptor::PasidCache {
                did: 5,
                pasid: 0x123,
                scope: PasidCacheScope::Pasid
            })
        );
        assert_eq!(
            decode([pc | 1 << 60, 0, 0, 0], true),
            Err(DescriptorError::Reserved(7))
        );
        assert_eq!(
            decode([pc, 0, 1, 0], true),
            Err(DescriptorError::Reserved(7))
        );
        assert_eq!(
            decode([7 | 2 << 4, 0, 0, 0], true),
            Err(DescriptorError::Reserved(7))
        );
        assert_eq!(
            decode([4, 0, 0, 0], true),
            Err(DescriptorError::InvalidType(4))
        );
        assert_eq!(
            decode([0, 0, 0, 0], false),
            Err(DescriptorError::InvalidType(0))
        );
        assert_eq!(
            decode([1 | 1 << 9, 0, 0, 0], true),
            Err(DescriptorError::InvalidType(17))
        );
        // Wait with status write and interrupt.
        let w = 5 | 1 << 4 | 1 << 5 | 0xabcd << 32;
        assert_eq!(
            decode([w, 0x1000, 0, 0], false),
            Ok(Descriptor::Wait {
                interrupt: true,
                status_write: true,
                fence: false,
                drain: false,
                data: 0xabcd,
                addr: 0x1000
            })
        );
        // PASID-based IOTLB, page-selective.
        let p = 6 | 3 << 4 | 1 << 16 | 9 << 32;
        assert_eq!(
            decode([p, 0x5000 | 1 << 6 | 2, 0, 0], true),
            Ok(Descriptor::PasidIotlb {
                did: 1,
                pasid: 9,
                scope: PasidIotlbScope::Page {
                    addr: 0x5000,
                    am: 2,
                    ih: true
                }
            })
        );
        assert_eq!(
            decode([p, 1 << 8, 0, 0], true),
            Err(DescriptorError::Reserved(6))
        );
        // Page group response keeps private data only with PDP.
        let r = 9 | 1 << 4 | 0x10 << 16 | 3 << 32;
        assert!(decode([r, 5 << 3 | 1 << 2, 0, 0], true).is_ok());
        assert!(decode([r, 0, 7, 0], true).is_err());
        assert!(decode([r | 1 << 5, 0, 7, 0], true).is_ok());
    }

    #[test]
    fn device_tlb_size_encoding() {
        assert_eq!(device_tlb_range(0x5000, false), Some((0x5000, 1)));
        // ADDR[13:12] = 01b: 16 KiB; ADDR[12] = 0: 8 KiB.
        assert_eq!(device_tlb_range(0x1000, true), Some((0, 4)));
        assert_eq!(device_tlb_range(0x4000, true), Some((0x4000, 2)));
        assert_eq!(device_tlb_range(!0xfff >> 1, true), None);
    }

    use proptest::prelude::*;

    /// `decode` (with its constant-mask paths) against the table path for a mostly-valid
    /// descriptor of type `ty`: each qword, at random, kept as drawn or cleared of what a
    /// type `ty` descriptor reserves (the upper qwords: zeroed), the type forced to `ty`
    /// when `as_ty`. `Err` with both answers when they differ.
    #[allow(clippy::type_complexity)]
    fn decode_mostly_valid(
        ty: usize,
        raw: [u64; 4],
        clean: [bool; 4],
        wide: bool,
        as_ty: bool,
    ) -> Result<
        (),
        (
            Result<Descriptor, DescriptorError>,
            Result<Descriptor, DescriptorError>,
        ),
    > {
        let mut q = raw;
        if clean[0] {
            q[0] &= VALID_BITS[ty].0;
        }
        if clean[1] {
            q[1] &= VALID_BITS[ty].1;
        }
        for (w, c) in q[2..].iter_mut().zip(&clean[2..]) {
            if *c || !wide {
                *w = 0;
            }
        }
        if as_ty {
            q[0] = q[0] & !(0xf | 7 << 9) | ty as u64;
        }
        let (fast, table) = (decode(q, wide), decode_any(q, wide));
        if fast == table {
            Ok(())
        } else {
            Err((fast, table))
        }
    }

    proptest! {
        /// The type-6 path of `decode` (constant masks) answers as the table path does for
        /// every descriptor, valid or not; other types go through the table path itself.
        #[test]
        fn the_pasid_iotlb_path_matches_the_table_path(
            raw in any::<[u64; 4]>(),
            clean in any::<[bool; 4]>(),
            wide in any::<bool>(),
            as_type_6 in any::<bool>(),
        ) {
            prop_assert_eq!(decode_mostly_valid(6, raw, clean, wide, as_type_6), Ok(()));
        }

        /// The same for the type-7 path (PASID-cache invalidation).
        #[test]
        fn the_pasid_cache_path_matches_the_table_path(
            raw in any::<[u64; 4]>(),
            clean in any::<[bool; 4]>(),
            wide in any::<bool>(),
            as_type_7 in any::<bool>(),
        ) {
            prop_assert_eq!(decode_mostly_valid(7, raw, clean, wide, as_type_7), Ok(()));
        }
    }
}
