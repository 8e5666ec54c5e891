//! Decoding and encoding `iommu_gpasid_bind_data`, the payload of NESTING_OP bind and unbind.

use zerocopy::IntoBytes;

use crate::arg::read_arg;
use crate::errno::UapiError;
use crate::iommu::{
    GpasidBindData, GpasidBindDataVtd, VtdBindFlags, IOMMU_GPASID_BIND_VERSION_1,
    IOMMU_PASID_FORMAT_INTEL_VTD, IOMMU_SVA_GPASID_VAL,
};

/// The guest first-level input address width a bind names: how many levels the guest's page
/// table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrWidth {
    /// 48-bit input addresses, 4-level paging.
    Bits48,
    /// 57-bit input addresses, 5-level paging.
    Bits57,
}

impl AddrWidth {
    /// The width for a raw bit count; `None` unless it is 48 or 57.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            48 => Some(Self::Bits48),
            57 => Some(Self::Bits57),
            _ => None,
        }
    }

    /// The width in bits (48 or 57).
    pub const fn bits(self) -> u32 {
        match self {
            Self::Bits48 => 48,
            Self::Bits57 => 57,
        }
    }

    /// The number of first-level paging levels (4 or 5).
    pub const fn levels(self) -> u8 {
        match self {
            Self::Bits48 => 4,
            Self::Bits57 => 5,
        }
    }
}

/// The VT-d vendor part of a validated bind: the PASID-entry attributes the guest asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VtdBindAttrs {
    /// `IOMMU_SVA_VTD_GPASID_*` flags; only defined bits can be present.
    pub flags: VtdBindFlags,
    /// Page attribute table.
    pub pat: u32,
    /// Extended memory type.
    pub emt: u32,
}

/// A validated `iommu_gpasid_bind_data` (Intel VT-d format, version 1).
///
/// Unbind carries the same data but only [`BindRequest::hpasid`] matters to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindRequest {
    /// Host PASID to bind; the caller must own it.
    pub hpasid: u64,
    /// Guest PASID for fault reporting, if the caller provided one (`IOMMU_SVA_GPASID_VAL`).
    pub gpasid: Option<u64>,
    /// Guest-physical address of the guest's first-level root table.
    pub gpgd: u64,
    /// Guest first-level address width.
    pub addr_width: AddrWidth,
    /// VT-d PASID-entry attributes.
    pub vtd: VtdBindAttrs,
}

impl BindRequest {
    /// A bind of `hpasid` to the guest table at `gpgd`, with no guest PASID and no VT-d
    /// attributes; set the public fields for more.
    pub const fn new(hpasid: u64, gpgd: u64, addr_width: AddrWidth) -> Self {
        Self {
            hpasid,
            gpasid: None,
            gpgd,
            addr_width,
            vtd: VtdBindAttrs {
                flags: VtdBindFlags::empty(),
                pat: 0,
                emt: 0,
            },
        }
    }

    /// The request as the full 72-byte C struct with `argsz` = 72, version 1, VT-d format.
    pub fn to_raw(&self) -> GpasidBindData {
        GpasidBindData {
            argsz: size_of::<GpasidBindData>() as u32,
            version: IOMMU_GPASID_BIND_VERSION_1,
            format: IOMMU_PASID_FORMAT_INTEL_VTD,
            addr_width: self.addr_width.bits(),
            flags: if self.gpasid.is_some() {
                IOMMU_SVA_GPASID_VAL
            } else {
                0
            },
            gpgd: self.gpgd,
            hpasid: self.hpasid,
            gpasid: self.gpasid.unwrap_or(0),
            padding: [0; 8],
            vtd: GpasidBindDataVtd {
                flags: self.vtd.flags.bits(),
                pat: self.vtd.pat,
                emt: self.vtd.emt,
            },
        }
    }

    /// The request as the 72 bytes of the NESTING_OP payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_raw().as_bytes().to_vec()
    }
}

/// An `iommu_gpasid_bind_data` that passed the IOMMU core's checks
/// ([`read_bind_data`]); the VT-d driver's checks ([`BindData::check_vtd`],
/// [`BindData::to_request`]) are still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindData {
    /// The known struct, zero past `argsz`.
    pub raw: GpasidBindData,
}

impl BindData {
    /// The host PASID the caller named (not yet range-checked).
    pub const fn hpasid(&self) -> u64 {
        self.raw.hpasid
    }

    /// The VT-d driver's checks that come before it looks at the PASID
    /// (`intel_svm_bind_gpasid`), in its order: `format` not VT-d → `EINVAL`; `argsz` below 72,
    /// so no VT-d vendor part → `EINVAL`; a `vendor.vtd.flags` bit at or above
    /// `IOMMU_SVA_VTD_GPASID_LAST` → `EINVAL`.
    ///
    /// # Errors
    ///
    /// `EINVAL` naming the field, as above.
    #[inline(always)]
    pub fn check_vtd(&self) -> Result<(), UapiError> {
        let data = &self.raw;
        if data.format != IOMMU_PASID_FORMAT_INTEL_VTD
            || (data.argsz as usize) < size_of::<GpasidBindData>()
            || VtdBindFlags::from_bits(data.vtd.flags).is_none()
        {
            return Err(refuse_vtd(data));
        }
        Ok(())
    }

    /// The typed request; the VT-d driver's address-width check (`intel_pasid_setup_nested`):
    /// `addr_width` neither 48 nor 57 → `EINVAL`. Undefined vendor flag bits are dropped
    /// ([`BindData::check_vtd`] refuses them first).
    ///
    /// # Errors
    ///
    /// `EINVAL` naming `addr_width`.
    #[inline(always)]
    pub fn to_request(&self) -> Result<BindRequest, UapiError> {
        let data = &self.raw;
        let Some(addr_width) = AddrWidth::from_bits(data.addr_width) else {
            return Err(bad_addr_width(data.addr_width));
        };
        Ok(BindRequest {
            hpasid: data.hpasid,
            gpasid: (data.flags & IOMMU_SVA_GPASID_VAL != 0).then_some(data.gpasid),
            gpgd: data.gpgd,
            addr_width,
            vtd: VtdBindAttrs {
                flags: VtdBindFlags::from_bits_truncate(data.vtd.flags),
                pat: data.vtd.pat,
                emt: data.vtd.emt,
            },
        })
    }
}

/// The first of [`BindData::check_vtd`]'s checks that `data` fails, as its `EINVAL`.
#[cold]
#[inline(never)]
fn refuse_vtd(data: &GpasidBindData) -> UapiError {
    if data.format != IOMMU_PASID_FORMAT_INTEL_VTD {
        return UapiError::invalid(format!(
            "format {}: only Intel VT-d ({IOMMU_PASID_FORMAT_INTEL_VTD}) is supported",
            data.format
        ));
    }
    if (data.argsz as usize) < size_of::<GpasidBindData>() {
        return UapiError::invalid(format!(
            "argsz {}: the VT-d driver needs the vendor part, {} bytes",
            data.argsz,
            size_of::<GpasidBindData>()
        ));
    }
    UapiError::invalid(format!(
        "vendor.vtd.flags {:#x}: bits {:#x} are not defined (known: {:#x})",
        data.vtd.flags,
        data.vtd.flags & !VtdBindFlags::ALL.bits(),
        VtdBindFlags::ALL.bits()
    ))
}

/// `EINVAL`: a first-level width the VT-d driver does not walk.
#[cold]
#[inline(never)]
fn bad_addr_width(bits: u32) -> UapiError {
    UapiError::invalid(format!(
        "addr_width {bits}: must be 48 (4-level) or 57 (5-level)"
    ))
}

/// Reads an `iommu_gpasid_bind_data` as the IOMMU core does (`iommu_uapi_sva_bind_gpasid` /
/// `iommu_uapi_sva_unbind_gpasid`, Linux 5.10). `buf` is the payload: every byte available
/// for it. Checks, in order, each failing with the errno shown:
///
/// 1. `buf.len() < 56` (the bytes before the vendor union, which the core copies before it
///    looks at `argsz`) → `EFAULT`.
/// 2. `argsz < 56` → `EINVAL`.
/// 3. `buf.len() < min(argsz, 72)` → `EFAULT`.
/// 4. `version != 1` → `EINVAL`.
/// 5. `format >= IOMMU_PASID_FORMAT_LAST` (2) → `EINVAL` (the core accepts 0; the VT-d driver
///    refuses it in [`BindData::check_vtd`]).
/// 6. `flags` has a bit other than `GPASID_VAL` (0x1) → `EINVAL`.
/// 7. a `padding` byte is non-zero → `EINVAL`.
///
/// An `argsz` between 56 and 72 covers only part of the vendor union; the uncovered bytes read
/// as zero. An `argsz` above 72 is accepted and the tail never read.
///
/// # Errors
///
/// As listed; nothing is read then.
#[inline(always)]
pub fn read_bind_data(buf: &[u8]) -> Result<BindData, UapiError> {
    let data: GpasidBindData = read_arg(
        buf,
        GpasidBindData::MIN_SIZE,
        "iommu_gpasid_bind_data before its vendor union",
    )?
    .value;
    // One test of all the core's field checks on the hot path; which one failed (and its
    // message) is worked out out of line, in the core's order.
    let padding = u64::from_ne_bytes(data.padding);
    if data.version != IOMMU_GPASID_BIND_VERSION_1
        || data.format > IOMMU_PASID_FORMAT_INTEL_VTD
        || data.flags & !IOMMU_SVA_GPASID_VAL != 0
        || padding != 0
    {
        return Err(refuse_bind_data(&data));
    }
    Ok(BindData { raw: data })
}

/// The first of [`read_bind_data`]'s field checks that `data` fails, as its `EINVAL`.
#[cold]
#[inline(never)]
fn refuse_bind_data(data: &GpasidBindData) -> UapiError {
    if data.version != IOMMU_GPASID_BIND_VERSION_1 {
        return UapiError::invalid(format!(
            "version {}: iommu_gpasid_bind_data version must be {IOMMU_GPASID_BIND_VERSION_1}",
            data.version
        ));
    }
    if data.format > IOMMU_PASID_FORMAT_INTEL_VTD {
        return UapiError::invalid(format!(
            "format {}: only Intel VT-d ({IOMMU_PASID_FORMAT_INTEL_VTD}) is supported",
            data.format
        ));
    }
    if data.flags & !IOMMU_SVA_GPASID_VAL != 0 {
        return UapiError::invalid(format!(
            "flags {:#x}: only GPASID_VAL ({IOMMU_SVA_GPASID_VAL:#x}) is defined",
            data.flags
        ));
    }
    let index = data.padding.iter().position(|&b| b != 0).unwrap_or(0);
    UapiError::invalid(format!(
        "padding[{index}] is {:#x}; iommu_gpasid_bind_data padding must be zero",
        data.padding[index]
    ))
}

/// Decodes and validates an `iommu_gpasid_bind_data` for a bind, with every check that needs
/// no IOMMU state: [`read_bind_data`] (the core's), then [`BindData::check_vtd`] and the
/// address width of [`BindData::to_request`] (the VT-d driver's). The PASID's range and
/// ownership, and the driver's refusal of memory-type flags, are the container's business.
///
/// # Errors
///
/// The first failing check's `EFAULT` / `EINVAL`.
#[inline]
pub fn decode_bind_data(buf: &[u8]) -> Result<BindRequest, UapiError> {
    let data = read_bind_data(buf)?;
    data.check_vtd()?;
    data.to_request()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;

    fn sample() -> BindRequest {
        BindRequest {
            hpasid: 42,
            gpasid: Some(7),
            gpgd: 0x1234_5000,
            addr_width: AddrWidth::Bits57,
            vtd: VtdBindAttrs {
                flags: VtdBindFlags::SRE | VtdBindFlags::WPE,
                pat: 0x0007_0406,
                emt: 6,
            },
        }
    }

    #[test]
    fn round_trip() {
        let req = sample();
        assert_eq!(req.to_bytes().len(), 72);
        assert_eq!(decode_bind_data(&req.to_bytes()), Ok(req));
        let plain = BindRequest::new(3, 0x1000, AddrWidth::Bits48);
        assert_eq!(decode_bind_data(&plain.to_bytes()), Ok(plain));
    }

    #[test]
    fn addr_width_conversions() {
        assert_eq!(AddrWidth::from_bits(48), Some(AddrWidth::Bits48));
        assert_eq!(AddrWidth::from_bits(57).map(AddrWidth::levels), Some(5));
        assert_eq!(AddrWidth::from_bits(39), None);
        assert_eq!(AddrWidth::Bits48.levels(), 4);
        assert_eq!(AddrWidth::Bits57.bits(), 57);
    }

    #[test]
    fn gpasid_without_flag_is_dropped() {
        let mut raw = sample().to_raw();
        raw.flags = 0;
        let req = decode_bind_data(raw.as_bytes()).unwrap();
        assert_eq!(req.gpasid, None);
    }

    /// Several fields wrong at once: the message names the first check of the documented
    /// order that fails (the core's, then the VT-d driver's), whichever the hot path tests
    /// first.
    #[test]
    fn the_first_failing_check_names_the_field() {
        type Break = fn(&mut GpasidBindData);
        let cases: [(Break, &str); 6] = [
            (|r| r.version = 2, "version 2"),
            (|r| r.format = 2, "format 2"),
            (|r| r.flags = 2, "flags 0x2"),
            (|r| r.padding[3] = 7, "padding[3] is 0x7"),
            (|r| r.argsz = 64, "argsz 64"),
            (|r| r.vtd.flags = 1 << 7, "vendor.vtd.flags 0x80"),
        ];
        for (i, (first, expected)) in cases.iter().enumerate() {
            let mut raw = sample().to_raw();
            first(&mut raw);
            // Break every later check as well.
            for (later, _) in &cases[i + 1..] {
                later(&mut raw);
            }
            let err = decode_bind_data(raw.as_bytes()).unwrap_err();
            assert_eq!(err.errno(), Errno::EINVAL);
            assert!(
                err.message().starts_with(expected),
                "case {i}: {}",
                err.message()
            );
        }
    }

    #[test]
    fn short_argsz_passes_the_core_and_zeroes_the_vendor_part_but_not_the_vtd_check() {
        let mut raw = sample().to_raw();
        raw.argsz = 56;
        let data = read_bind_data(raw.as_bytes()).unwrap();
        assert_eq!(data.raw.vtd, GpasidBindDataVtd::default());
        assert_eq!(data.check_vtd().unwrap_err().errno(), Errno::EINVAL);
        assert_eq!(
            decode_bind_data(raw.as_bytes()).unwrap_err().errno(),
            Errno::EINVAL
        );
    }

    #[test]
    fn format_zero_passes_the_core_and_fails_the_vtd_check() {
        let mut raw = sample().to_raw();
        raw.format = 0;
        let data = read_bind_data(raw.as_bytes()).unwrap();
        assert_eq!(data.check_vtd().unwrap_err().errno(), Errno::EINVAL);
        raw.format = 2;
        assert_eq!(
            read_bind_data(raw.as_bytes()).unwrap_err().errno(),
            Errno::EINVAL
        );
    }

    #[test]
    fn unknown_vtd_flag_is_named() {
        let mut raw = sample().to_raw();
        raw.vtd.flags = 1 << 7;
        let err = decode_bind_data(raw.as_bytes()).unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL);
        assert_eq!(
            err.message(),
            "vendor.vtd.flags 0x80: bits 0x80 are not defined (known: 0x7f)"
        );
    }
}
