//! Decoding and encoding `iommu_cache_invalidate_info`, the payload of NESTING_OP cache
//! invalidation.

use zerocopy::IntoBytes;

use crate::arg::read_arg;
use crate::errno::UapiError;
use crate::iommu::{
    CacheInvalidateInfo, CacheSet, InvAddrInfo, InvGranu, InvPasidInfo,
    IOMMU_CACHE_INVALIDATE_INFO_VERSION_1, IOMMU_INV_ADDR_FLAGS_ARCHID, IOMMU_INV_ADDR_FLAGS_LEAF,
    IOMMU_INV_ADDR_FLAGS_PASID, IOMMU_INV_GRANU_ADDR, IOMMU_INV_GRANU_DOMAIN, IOMMU_INV_GRANU_NR,
    IOMMU_INV_GRANU_PASID, IOMMU_INV_PASID_FLAGS_ARCHID, IOMMU_INV_PASID_FLAGS_PASID,
};

/// How much an invalidation covers, with the selector data of its union member.
///
/// `pasid` and `archid` are `Some` exactly when the caller set the member's `PASID` / `ARCHID`
/// flag; without the flag the field's bytes are not meaningful and are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// `IOMMU_INV_GRANU_DOMAIN`: everything cached for the domain. No union member.
    Domain,
    /// `IOMMU_INV_GRANU_PASID`: everything cached for one PASID (`iommu_inv_pasid_info`).
    Pasid {
        /// The PASID (`IOMMU_INV_PASID_FLAGS_PASID`).
        pasid: Option<u64>,
        /// The architecture-specific id (`IOMMU_INV_PASID_FLAGS_ARCHID`).
        archid: Option<u32>,
    },
    /// `IOMMU_INV_GRANU_ADDR`: an address range (`iommu_inv_addr_info`).
    Addr {
        /// The PASID (`IOMMU_INV_ADDR_FLAGS_PASID`).
        pasid: Option<u64>,
        /// The architecture-specific id (`IOMMU_INV_ADDR_FLAGS_ARCHID`).
        archid: Option<u32>,
        /// First I/O virtual address.
        addr: u64,
        /// Size of one granule in bytes.
        granule_size: u64,
        /// Number of granules.
        nb_granules: u64,
        /// Only leaf entries changed (`IOMMU_INV_ADDR_FLAGS_LEAF`).
        leaf: bool,
    },
}

impl Granularity {
    /// The raw `granularity` value (`IOMMU_INV_GRANU_*`).
    pub const fn raw(&self) -> u8 {
        match self {
            Self::Domain => IOMMU_INV_GRANU_DOMAIN,
            Self::Pasid { .. } => IOMMU_INV_GRANU_PASID,
            Self::Addr { .. } => IOMMU_INV_GRANU_ADDR,
        }
    }

    /// The raw union for this granularity; all zero for [`Granularity::Domain`].
    fn to_granu(self) -> InvGranu {
        match self {
            Self::Domain => InvGranu::default(),
            Self::Pasid { pasid, archid } => InvGranu::from(InvPasidInfo {
                flags: flag_if(pasid.is_some(), IOMMU_INV_PASID_FLAGS_PASID)
                    | flag_if(archid.is_some(), IOMMU_INV_PASID_FLAGS_ARCHID),
                archid: archid.unwrap_or(0),
                pasid: pasid.unwrap_or(0),
            }),
            Self::Addr {
                pasid,
                archid,
                addr,
                granule_size,
                nb_granules,
                leaf,
            } => InvGranu::from(InvAddrInfo {
                flags: flag_if(pasid.is_some(), IOMMU_INV_ADDR_FLAGS_PASID)
                    | flag_if(archid.is_some(), IOMMU_INV_ADDR_FLAGS_ARCHID)
                    | flag_if(leaf, IOMMU_INV_ADDR_FLAGS_LEAF),
                archid: archid.unwrap_or(0),
                pasid: pasid.unwrap_or(0),
                addr,
                granule_size,
                nb_granules,
            }),
        }
    }
}

/// `flag` if `set`, else 0.
const fn flag_if(set: bool, flag: u32) -> u32 {
    if set {
        flag
    } else {
        0
    }
}

/// Name of a raw granularity for messages; only called with values below `IOMMU_INV_GRANU_NR`.
fn granularity_name(granularity: u8) -> &'static str {
    match granularity {
        IOMMU_INV_GRANU_DOMAIN => "domain",
        IOMMU_INV_GRANU_PASID => "PASID",
        _ => "address",
    }
}

/// The valid (granularity, cache) pairs: at least one cache (vsva's rule, see
/// [`decode_cache_invalidate`]) and [`core_pair_ok`].
#[inline(always)]
fn pair_ok(caches: CacheSet, granularity: u8) -> bool {
    !caches.is_empty() && core_pair_ok(caches, granularity)
}

/// The IOMMU core's (granularity, cache) rules (`iommu_check_cache_invl_data`): DOMAIN never
/// with DEV_IOTLB; ADDR never with the PASID cache; PASID with any.
#[inline(always)]
fn core_pair_ok(caches: CacheSet, granularity: u8) -> bool {
    match granularity {
        IOMMU_INV_GRANU_DOMAIN => !caches.intersects(CacheSet::DEV_IOTLB),
        IOMMU_INV_GRANU_ADDR => !caches.intersects(CacheSet::PASID),
        _ => true,
    }
}

/// [`pair_ok`] as a check: `EINVAL` naming the cache bits for an invalid pair.
#[inline]
fn check_pair(caches: CacheSet, granularity: u8) -> Result<(), UapiError> {
    if pair_ok(caches, granularity) {
        return Ok(());
    }
    Err(refuse_pair(caches, granularity))
}

/// Why an invalid (granularity, cache) pair is refused.
#[cold]
#[inline(never)]
fn refuse_pair(caches: CacheSet, granularity: u8) -> UapiError {
    if caches.is_empty() {
        return UapiError::invalid(format!(
            "cache 0x0: at least one of IOTLB ({:#x}), DEV_IOTLB ({:#x}) and PASID ({:#x}) \
             must be set",
            CacheSet::IOTLB.bits(),
            CacheSet::DEV_IOTLB.bits(),
            CacheSet::PASID.bits()
        ));
    }
    let (name, cache) = match granularity {
        IOMMU_INV_GRANU_DOMAIN => ("DEV_IOTLB", CacheSet::DEV_IOTLB),
        _ => ("PASID", CacheSet::PASID),
    };
    UapiError::invalid(format!(
        "cache {:#x} includes {name} ({:#x}), which {} granularity cannot invalidate",
        caches.bits(),
        cache.bits(),
        granularity_name(granularity)
    ))
}

/// A validated `iommu_cache_invalidate_info` (version 1): which caches to flush, and how much.
///
/// The (granularity, cache) pair is always one of the valid ones; [`CacheInvalidateRequest::new`]
/// and [`decode_cache_invalidate`] refuse the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheInvalidateRequest {
    caches: CacheSet,
    granularity: Granularity,
}

impl CacheInvalidateRequest {
    /// A request to flush `caches` at `granularity`.
    ///
    /// `EINVAL` if `caches` is empty, if `granularity` is [`Granularity::Domain`] and `caches`
    /// includes `DEV_IOTLB`, or if it is [`Granularity::Addr`] and `caches` includes `PASID`.
    pub fn new(caches: CacheSet, granularity: Granularity) -> Result<Self, UapiError> {
        check_pair(caches, granularity.raw())?;
        Ok(Self {
            caches,
            granularity,
        })
    }

    /// The caches to flush; never empty.
    pub const fn caches(&self) -> CacheSet {
        self.caches
    }

    /// How much to flush.
    pub const fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The request as the full 56-byte C struct with `argsz` = 56 and version 1.
    pub fn to_raw(&self) -> CacheInvalidateInfo {
        CacheInvalidateInfo {
            argsz: size_of::<CacheInvalidateInfo>() as u32,
            version: IOMMU_CACHE_INVALIDATE_INFO_VERSION_1,
            cache: self.caches.bits(),
            granularity: self.granularity.raw(),
            padding: [0; 6],
            granu: self.granularity.to_granu(),
        }
    }

    /// The request as the 56 bytes of the NESTING_OP payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_raw().as_bytes().to_vec()
    }
}

/// Decodes and validates an `iommu_cache_invalidate_info` from the caller's buffer.
///
/// `buf` is the payload: every byte available for it, read as the IOMMU core reads it
/// (`iommu_uapi_cache_invalidate` and `iommu_check_cache_invl_data`, Linux 5.10). Checks, in
/// order, each failing with the errno shown:
///
/// 1. `buf.len() < 16` (the bytes before the `granu` union, which the core copies before it
///    looks at `argsz`) → `EFAULT`.
/// 2. `argsz < 16` → `EINVAL`.
/// 3. `argsz` ends before the union member `granularity` selects: below 32 for PASID, below 56
///    for ADDR (DOMAIN, and an unknown granularity, select none) → `EINVAL`.
/// 4. `buf.len() < min(argsz, 56)` → `EFAULT`.
/// 5. `version != 1` → `EINVAL`.
/// 6. `cache` has a bit at or above `1 << 3` → `EINVAL`.
/// 7. `granularity >= 3` → `EINVAL`.
/// 8. the granularity's own rules → `EINVAL`: ADDR with the `PASID` cache, then an
///    `addr_info.flags` bit outside `PASID | ARCHID | LEAF`; PASID: a `pasid_info.flags` bit
///    outside `PASID | ARCHID`; DOMAIN with `DEV_IOTLB`.
/// 9. a `padding` byte is non-zero → `EINVAL`.
/// 10. `cache == 0` → `EINVAL`. This one is vsva's: the core accepts an empty set and the
///     VT-d driver then invalidates nothing; through `VFIO_IOMMU_NESTING_OP` both answer 0
///     and invalidate nothing.
///
/// An `argsz` above 56 is accepted and the tail ignored. Address alignment, granule sizes and
/// PASID ownership are the IOMMU's and container's business, not checked here.
#[inline(always)]
pub fn decode_cache_invalidate(buf: &[u8]) -> Result<CacheInvalidateRequest, UapiError> {
    // Check 3 sits between the two copies of the core: it needs only the first 16 bytes.
    if let Some(head) = buf.get(..CacheInvalidateInfo::MIN_SIZE) {
        let argsz = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let granularity = head[9];
        let argsz = argsz as usize;
        if argsz >= CacheInvalidateInfo::MIN_SIZE && argsz < member_of(granularity).1 {
            return Err(short_member(argsz, granularity));
        }
    }
    let arg = read_arg::<CacheInvalidateInfo>(
        buf,
        CacheInvalidateInfo::MIN_SIZE,
        "iommu_cache_invalidate_info before its granu union",
    )?;
    let info = &arg.value;
    // Checks 5 to 10 in one test on the hot path; which one failed (and its message) is worked
    // out out of line, in the order listed.
    let caches = CacheSet::from_bits_truncate(info.cache);
    if info.version != IOMMU_CACHE_INVALIDATE_INFO_VERSION_1
        || caches.bits() != info.cache
        || info.granularity >= IOMMU_INV_GRANU_NR
        || !pair_ok(caches, info.granularity)
        || member_flags(info) & !known_member_flags(info.granularity) != 0
        || info.padding != [0; 6]
    {
        return Err(refuse_cache_invalidate(info));
    }
    let granularity = match info.granularity {
        IOMMU_INV_GRANU_PASID => pasid_granularity(info.granu.pasid_info()),
        IOMMU_INV_GRANU_ADDR => addr_granularity(info.granu.addr_info()),
        _ => Granularity::Domain,
    };
    Ok(CacheInvalidateRequest {
        caches,
        granularity,
    })
}

/// The union member a raw granularity selects, and where it ends (the header alone for
/// DOMAIN and for an unknown granularity).
#[inline(always)]
fn member_of(granularity: u8) -> (&'static str, usize) {
    match granularity {
        IOMMU_INV_GRANU_PASID => ("pasid_info", CacheInvalidateInfo::PASID_INFO_END),
        IOMMU_INV_GRANU_ADDR => ("addr_info", CacheInvalidateInfo::ADDR_INFO_END),
        _ => ("", CacheInvalidateInfo::MIN_SIZE),
    }
}

/// The `flags` of the union member `info.granularity` selects (0 for DOMAIN).
#[inline(always)]
fn member_flags(info: &CacheInvalidateInfo) -> u32 {
    match info.granularity {
        IOMMU_INV_GRANU_PASID => info.granu.pasid_info().flags,
        IOMMU_INV_GRANU_ADDR => info.granu.addr_info().flags,
        _ => 0,
    }
}

/// The flags defined for the union member a granularity selects.
#[inline(always)]
fn known_member_flags(granularity: u8) -> u32 {
    match granularity {
        IOMMU_INV_GRANU_PASID => IOMMU_INV_PASID_FLAGS_PASID | IOMMU_INV_PASID_FLAGS_ARCHID,
        IOMMU_INV_GRANU_ADDR => {
            IOMMU_INV_ADDR_FLAGS_PASID | IOMMU_INV_ADDR_FLAGS_ARCHID | IOMMU_INV_ADDR_FLAGS_LEAF
        }
        _ => 0,
    }
}

/// `EINVAL`: `argsz` ends before the union member `granularity` selects (check 3).
#[cold]
#[inline(never)]
fn short_member(argsz: usize, granularity: u8) -> UapiError {
    let (member, member_end) = member_of(granularity);
    UapiError::invalid(format!(
        "argsz {argsz} ends before granu.{member}, which {} granularity needs ({member_end} bytes)",
        granularity_name(granularity)
    ))
}

/// The first of [`decode_cache_invalidate`]'s checks 5 to 10 that `info` fails, as its
/// `EINVAL`.
#[cold]
#[inline(never)]
fn refuse_cache_invalidate(info: &CacheInvalidateInfo) -> UapiError {
    if info.version != IOMMU_CACHE_INVALIDATE_INFO_VERSION_1 {
        return UapiError::invalid(format!(
            "version {}: iommu_cache_invalidate_info version must be \
             {IOMMU_CACHE_INVALIDATE_INFO_VERSION_1}",
            info.version
        ));
    }
    let Some(caches) = CacheSet::from_bits(info.cache) else {
        return UapiError::invalid(format!(
            "cache {:#x}: bits {:#x} are not defined (known: {:#x})",
            info.cache,
            info.cache & !CacheSet::ALL.bits(),
            CacheSet::ALL.bits()
        ));
    };
    if info.granularity >= IOMMU_INV_GRANU_NR {
        return UapiError::invalid(format!(
            "granularity {}: must be DOMAIN ({IOMMU_INV_GRANU_DOMAIN}), PASID \
             ({IOMMU_INV_GRANU_PASID}) or ADDR ({IOMMU_INV_GRANU_ADDR})",
            info.granularity
        ));
    }
    if !core_pair_ok(caches, info.granularity) {
        return refuse_pair(caches, info.granularity);
    }
    let known = known_member_flags(info.granularity);
    let flags = member_flags(info);
    if flags & !known != 0 {
        return undefined_member_flags(member_of(info.granularity).0, flags, known);
    }
    if let Some(index) = info.padding.iter().position(|&b| b != 0) {
        return UapiError::invalid(format!(
            "padding[{index}] is {:#x}; iommu_cache_invalidate_info padding must be zero",
            info.padding[index]
        ));
    }
    refuse_pair(caches, info.granularity)
}

/// Lifts a checked `iommu_inv_pasid_info` into [`Granularity::Pasid`].
#[inline(always)]
fn pasid_granularity(info: InvPasidInfo) -> Granularity {
    Granularity::Pasid {
        pasid: (info.flags & IOMMU_INV_PASID_FLAGS_PASID != 0).then_some(info.pasid),
        archid: (info.flags & IOMMU_INV_PASID_FLAGS_ARCHID != 0).then_some(info.archid),
    }
}

/// Lifts a checked `iommu_inv_addr_info` into [`Granularity::Addr`].
#[inline(always)]
fn addr_granularity(info: InvAddrInfo) -> Granularity {
    Granularity::Addr {
        pasid: (info.flags & IOMMU_INV_ADDR_FLAGS_PASID != 0).then_some(info.pasid),
        archid: (info.flags & IOMMU_INV_ADDR_FLAGS_ARCHID != 0).then_some(info.archid),
        addr: info.addr,
        granule_size: info.granule_size,
        nb_granules: info.nb_granules,
        leaf: info.flags & IOMMU_INV_ADDR_FLAGS_LEAF != 0,
    }
}

/// `EINVAL`: the union member's `flags` has bits outside `known`.
#[cold]
#[inline(never)]
fn undefined_member_flags(member: &str, flags: u32, known: u32) -> UapiError {
    UapiError::invalid(format!(
        "granu.{member}.flags {flags:#x}: bits {:#x} are not defined (known: {known:#x})",
        flags & !known
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;

    fn addr(pasid: Option<u64>) -> Granularity {
        Granularity::Addr {
            pasid,
            archid: None,
            addr: 0x7000_0000,
            granule_size: 4096,
            nb_granules: 16,
            leaf: true,
        }
    }

    #[test]
    fn round_trip_every_granularity() {
        let requests = [
            CacheInvalidateRequest::new(CacheSet::IOTLB | CacheSet::PASID, Granularity::Domain),
            CacheInvalidateRequest::new(
                CacheSet::ALL,
                Granularity::Pasid {
                    pasid: Some(5),
                    archid: Some(9),
                },
            ),
            CacheInvalidateRequest::new(CacheSet::IOTLB | CacheSet::DEV_IOTLB, addr(Some(5))),
            CacheInvalidateRequest::new(CacheSet::DEV_IOTLB, addr(None)),
        ];
        for req in requests {
            let req = req.unwrap();
            assert_eq!(req.to_bytes().len(), 56);
            assert_eq!(decode_cache_invalidate(&req.to_bytes()), Ok(req));
        }
    }

    #[test]
    fn constructor_enforces_pairs() {
        let cases = [
            (CacheSet::empty(), Granularity::Domain),
            (CacheSet::DEV_IOTLB, Granularity::Domain),
            (CacheSet::PASID, addr(None)),
        ];
        for (caches, granularity) in cases {
            let err = CacheInvalidateRequest::new(caches, granularity).unwrap_err();
            assert_eq!(err.errno(), Errno::EINVAL, "{caches:?} {granularity:?}");
        }
    }

    #[test]
    fn domain_needs_only_the_header() {
        let req = CacheInvalidateRequest::new(CacheSet::IOTLB, Granularity::Domain).unwrap();
        let mut raw = req.to_raw();
        raw.argsz = 16;
        assert_eq!(decode_cache_invalidate(&raw.as_bytes()[..16]), Ok(req));
    }

    /// Several fields wrong at once: the message names the first check of the documented
    /// order that fails, whichever of them the hot path tests first.
    #[test]
    fn the_first_failing_check_names_the_field() {
        let base = CacheInvalidateRequest::new(CacheSet::IOTLB, addr(Some(5)))
            .unwrap()
            .to_raw();
        type Break = fn(&mut CacheInvalidateInfo);
        let cases: [(Break, &str); 5] = [
            (|r| r.version = 2, "version 2"),
            (|r| r.cache |= 0x8, "bits 0x8 are not defined"),
            (|r| r.granularity = 3, "granularity 3"),
            (|r| r.cache |= CacheSet::PASID.bits(), "includes PASID"),
            (|r| r.padding[4] = 1, "padding[4] is 0x1"),
        ];
        for (i, (first, expected)) in cases.iter().enumerate() {
            let mut raw = base;
            first(&mut raw);
            // Break every later check as well.
            for (later, _) in &cases[i + 1..] {
                later(&mut raw);
            }
            let err = decode_cache_invalidate(&raw.as_bytes()[..56]).unwrap_err();
            assert_eq!(err.errno(), Errno::EINVAL);
            assert!(
                err.message().contains(expected),
                "case {i}: {}",
                err.message()
            );
        }
    }

    #[test]
    fn pair_messages() {
        let mut raw = CacheInvalidateRequest::new(CacheSet::IOTLB, Granularity::Domain)
            .unwrap()
            .to_raw();
        raw.cache = CacheSet::DEV_IOTLB.bits();
        assert_eq!(
            decode_cache_invalidate(raw.as_bytes())
                .unwrap_err()
                .message(),
            "cache 0x2 includes DEV_IOTLB (0x2), which domain granularity cannot invalidate"
        );
    }
}
