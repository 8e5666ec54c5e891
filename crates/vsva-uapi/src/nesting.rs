//! Decoding and encoding `VFIO_IOMMU_NESTING_OP`, and the nesting capability of
//! `VFIO_IOMMU_GET_INFO`.

use zerocopy::{FromBytes, IntoBytes};

use crate::arg::read_arg;
use crate::bind::{decode_bind_data, read_bind_data, BindRequest};
use crate::errno::UapiError;
use crate::invalidate::{decode_cache_invalidate, CacheInvalidateRequest};
use crate::iommu::{
    CacheInvalidateInfo, GpasidBindData, NestingFeatures, NestingInfo, NestingInfoVtd,
    IOMMU_PASID_FORMAT_INTEL_VTD,
};
use crate::vfio::{
    InfoCapHeader, InfoCapNesting, NestingOpHeader, VFIO_IOMMU_NESTING_OP_BIND_PGTBL,
    VFIO_IOMMU_NESTING_OP_CACHE_INVLD, VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL,
    VFIO_IOMMU_TYPE1_INFO_CAP_NESTING, VFIO_IOMMU_TYPE1_INFO_CAP_NESTING_VERSION,
    VFIO_NESTING_OP_MASK,
};

/// The operation a NESTING_OP header selects (the low 16 bits of its `flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NestingOpKind {
    /// `VFIO_IOMMU_NESTING_OP_BIND_PGTBL`.
    BindPgtbl,
    /// `VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL`.
    UnbindPgtbl,
    /// `VFIO_IOMMU_NESTING_OP_CACHE_INVLD`.
    CacheInvld,
}

impl NestingOpKind {
    /// The op for a raw op number; `None` for undefined ones.
    pub const fn from_raw(op: u32) -> Option<Self> {
        match op {
            VFIO_IOMMU_NESTING_OP_BIND_PGTBL => Some(Self::BindPgtbl),
            VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL => Some(Self::UnbindPgtbl),
            VFIO_IOMMU_NESTING_OP_CACHE_INVLD => Some(Self::CacheInvld),
            _ => None,
        }
    }

    /// The raw op number (`VFIO_IOMMU_NESTING_OP_*`).
    pub const fn raw(self) -> u32 {
        match self {
            Self::BindPgtbl => VFIO_IOMMU_NESTING_OP_BIND_PGTBL,
            Self::UnbindPgtbl => VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL,
            Self::CacheInvld => VFIO_IOMMU_NESTING_OP_CACHE_INVLD,
        }
    }

    /// The nesting feature a container must report for this op; without it the op fails with
    /// `EOPNOTSUPP`.
    pub const fn required_feature(self) -> NestingFeatures {
        match self {
            Self::BindPgtbl | Self::UnbindPgtbl => NestingFeatures::BIND_PGTBL,
            Self::CacheInvld => NestingFeatures::CACHE_INVLD,
        }
    }

    /// The fewest payload bytes the op needs: the payload struct up to its variable union.
    pub const fn min_payload(self) -> usize {
        match self {
            Self::BindPgtbl | Self::UnbindPgtbl => GpasidBindData::MIN_SIZE,
            Self::CacheInvld => CacheInvalidateInfo::MIN_SIZE,
        }
    }
}

/// A NESTING_OP argument whose header has been validated, with its payload not yet decoded.
///
/// This split lets the container check what needs no payload (is it a nesting container, does
/// it have [`NestingOpKind::required_feature`]) between the header and the payload, as the kernel
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestingOpArg<'a> {
    /// The selected op.
    pub kind: NestingOpKind,
    /// The payload: every byte the caller supplied after the 8-byte header (the header's
    /// `argsz` does not bound it; the payload's own `argsz` does).
    pub payload: &'a [u8],
}

impl NestingOpArg<'_> {
    /// Decodes the payload with [`decode_bind_data`] (bind), [`read_bind_data`] and the
    /// address width (unbind) or [`decode_cache_invalidate`], as [`NestingOpArg::kind`]
    /// selects.
    ///
    /// # Errors
    ///
    /// The payload decoder's `EFAULT` / `EINVAL`.
    #[inline]
    pub fn decode(&self) -> Result<NestingOp, UapiError> {
        Ok(match self.kind {
            NestingOpKind::BindPgtbl => NestingOp::Bind(decode_bind_data(self.payload)?),
            NestingOpKind::UnbindPgtbl => {
                NestingOp::Unbind(read_bind_data(self.payload)?.to_request()?)
            }
            NestingOpKind::CacheInvld => {
                NestingOp::Invalidate(decode_cache_invalidate(self.payload)?)
            }
        })
    }
}

/// Validates the header of a `vfio_iommu_type1_nesting_op` as the series' VFIO does
/// (`vfio_iommu_type1_nesting_op`, v5 10/15) and returns the op and its payload.
///
/// `buf` holds every byte the caller supplied. Checks, in order, each failing with the errno
/// shown:
///
/// 1. `buf.len() < 8` → `EFAULT`.
/// 2. `argsz < 8` → `EINVAL`.
/// 3. `flags` has a bit above `0xffff` → `EINVAL`.
/// 4. the op (`flags & 0xffff`) is not BIND_PGTBL (0), UNBIND_PGTBL (1) or CACHE_INVLD (2) →
///    `EINVAL`.
///
/// The header's `argsz` is otherwise unused: the payload is every byte after the header,
/// and the IOMMU core reads it with the payload's own `argsz` ([`read_bind_data`],
/// [`decode_cache_invalidate`]).
///
/// # Errors
///
/// As listed; nothing past the header is read.
#[inline(always)]
pub fn decode_nesting_op_header(buf: &[u8]) -> Result<NestingOpArg<'_>, UapiError> {
    let header = read_arg::<NestingOpHeader>(
        buf,
        size_of::<NestingOpHeader>(),
        "vfio_iommu_type1_nesting_op",
    )?
    .value;
    let kind = match NestingOpKind::from_raw(header.flags) {
        Some(kind) => kind,
        None => return Err(refuse_op(header.flags)),
    };
    Ok(NestingOpArg {
        kind,
        payload: &buf[size_of::<NestingOpHeader>()..],
    })
}

/// The `EINVAL` of a header `flags` that selects no op: bits above the op field, or an
/// undefined op, checked in that order.
#[cold]
#[inline(never)]
fn refuse_op(flags: u32) -> UapiError {
    if flags & !VFIO_NESTING_OP_MASK != 0 {
        return UapiError::invalid(format!(
            "flags {flags:#x}: bits {:#x} above the op field ({VFIO_NESTING_OP_MASK:#x}) must be \
             zero",
            flags & !VFIO_NESTING_OP_MASK
        ));
    }
    UapiError::invalid(format!(
        "flags {flags:#x}: op {flags} is not BIND_PGTBL ({VFIO_IOMMU_NESTING_OP_BIND_PGTBL}), \
         UNBIND_PGTBL ({VFIO_IOMMU_NESTING_OP_UNBIND_PGTBL}) or CACHE_INVLD \
         ({VFIO_IOMMU_NESTING_OP_CACHE_INVLD})"
    ))
}

/// A validated `VFIO_IOMMU_NESTING_OP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NestingOp {
    /// Bind a guest first-level page table to a host PASID.
    Bind(BindRequest),
    /// Undo a bind; only [`BindRequest::hpasid`] matters.
    Unbind(BindRequest),
    /// Invalidate IOMMU caches.
    Invalidate(CacheInvalidateRequest),
}

impl NestingOp {
    /// The op this request is.
    pub const fn kind(&self) -> NestingOpKind {
        match self {
            Self::Bind(_) => NestingOpKind::BindPgtbl,
            Self::Unbind(_) => NestingOpKind::UnbindPgtbl,
            Self::Invalidate(_) => NestingOpKind::CacheInvld,
        }
    }

    /// The whole ioctl argument: an 8-byte header whose `argsz` covers the full payload, then
    /// the payload at its full known size.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = match self {
            Self::Bind(req) | Self::Unbind(req) => req.to_bytes(),
            Self::Invalidate(req) => req.to_bytes(),
        };
        let header = NestingOpHeader {
            argsz: (size_of::<NestingOpHeader>() + payload.len()) as u32,
            flags: self.kind().raw(),
        };
        let mut bytes = Vec::with_capacity(header.argsz as usize);
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }
}

/// Decodes and validates a whole `VFIO_IOMMU_NESTING_OP` argument: the header checks of
/// [`decode_nesting_op_header`], then the payload checks of [`decode_bind_data`] or
/// [`decode_cache_invalidate`].
pub fn decode_nesting_op(buf: &[u8]) -> Result<NestingOp, UapiError> {
    decode_nesting_op_header(buf)?.decode()
}

/// The content of the `VFIO_IOMMU_TYPE1_INFO_CAP_NESTING` capability for an Intel VT-d nesting
/// IOMMU (format [`IOMMU_PASID_FORMAT_INTEL_VTD`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestingCapability {
    /// What the container supports.
    pub features: NestingFeatures,
    /// The domain's address width: the smaller of the stage-2 AGAW width and CAP.MGAW
    /// (`dmar_domain->gaw`). Whether the IOMMU walks 5-level first-level tables is CAP.FL5LP
    /// in [`NestingInfoVtd::cap_reg`].
    pub addr_width: u16,
    /// PASID width in bits; 0 means no PASID support.
    pub pasid_bits: u16,
    /// VT-d vendor data: the capability registers the guest's vIOMMU should report.
    pub vtd: NestingInfoVtd,
}

/// Size of the nesting capability: header, [`NestingInfo`] and [`NestingInfoVtd`] (56 bytes).
pub const NESTING_CAP_SIZE: usize = size_of::<InfoCapNesting>();

/// Value of [`NestingInfo::size`] for VT-d: the info plus its vendor data (48 bytes).
const NESTING_INFO_VTD_SIZE: u32 = (size_of::<NestingInfo>() + size_of::<NestingInfoVtd>()) as u32;

impl NestingCapability {
    /// The [`NestingInfo`] this capability reports, with `size` = 48 and the VT-d format.
    pub fn to_info(&self) -> NestingInfo {
        NestingInfo {
            size: NESTING_INFO_VTD_SIZE,
            format: IOMMU_PASID_FORMAT_INTEL_VTD,
            features: self.features.bits(),
            flags: 0,
            addr_width: self.addr_width,
            pasid_bits: self.pasid_bits,
            padding: 0,
        }
    }

    /// The whole capability struct, with the given `next` offset.
    pub fn to_raw(&self, next: u32) -> InfoCapNesting {
        InfoCapNesting {
            header: InfoCapHeader {
                id: VFIO_IOMMU_TYPE1_INFO_CAP_NESTING,
                version: VFIO_IOMMU_TYPE1_INFO_CAP_NESTING_VERSION,
                next,
            },
            info: self.to_info(),
            vtd: self.vtd,
        }
    }
}

/// Encodes the nesting capability for a `VFIO_IOMMU_GET_INFO` capability chain:
/// [`InfoCapHeader`] (id 3, version 1, the given `next`), then [`NestingInfo`], then
/// [`NestingInfoVtd`], [`NESTING_CAP_SIZE`] bytes in all.
///
/// `next` is the offset of the following capability from the start of the info struct, or 0
/// if this is the last one.
pub fn encode_nesting_info(next: u32, cap: &NestingCapability) -> Vec<u8> {
    cap.to_raw(next).as_bytes().to_vec()
}

/// Parses a nesting capability as [`encode_nesting_info`] writes it, for clients reading
/// `VFIO_IOMMU_GET_INFO`. `bytes` starts at the capability header; anything past
/// [`NESTING_CAP_SIZE`] is ignored. Returns the header (for its `next`) and the content.
///
/// Checks, in order: fewer than 56 bytes → `EFAULT`; header `id` not 3 or `version` not 1 →
/// `EINVAL`; info `size` below 48 → `EINVAL`; `format` not VT-d → `EINVAL`. Feature bits this
/// crate does not know are dropped, so a newer producer's capability still parses.
pub fn decode_nesting_info(bytes: &[u8]) -> Result<(InfoCapHeader, NestingCapability), UapiError> {
    let Ok((raw, _)) = InfoCapNesting::read_from_prefix(bytes) else {
        return Err(UapiError::fault(format!(
            "the buffer holds {} bytes, fewer than the {NESTING_CAP_SIZE} bytes of the nesting \
             capability",
            bytes.len()
        )));
    };
    let InfoCapNesting { header, info, vtd } = raw;
    if header.id != VFIO_IOMMU_TYPE1_INFO_CAP_NESTING
        || header.version != VFIO_IOMMU_TYPE1_INFO_CAP_NESTING_VERSION
    {
        return Err(UapiError::invalid(format!(
            "capability id {} version {}: expected the nesting capability, id \
             {VFIO_IOMMU_TYPE1_INFO_CAP_NESTING} version \
             {VFIO_IOMMU_TYPE1_INFO_CAP_NESTING_VERSION}",
            header.id, header.version
        )));
    }
    if info.size < NESTING_INFO_VTD_SIZE {
        return Err(UapiError::invalid(format!(
            "size {}: iommu_nesting_info with VT-d data needs {NESTING_INFO_VTD_SIZE}",
            info.size
        )));
    }
    if info.format != IOMMU_PASID_FORMAT_INTEL_VTD {
        return Err(UapiError::invalid(format!(
            "format {}: only Intel VT-d ({IOMMU_PASID_FORMAT_INTEL_VTD}) is supported",
            info.format
        )));
    }
    Ok((
        header,
        NestingCapability {
            features: NestingFeatures::from_bits_truncate(info.features),
            addr_width: info.addr_width,
            pasid_bits: info.pasid_bits,
            vtd,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bind::AddrWidth;
    use crate::errno::Errno;
    use crate::invalidate::Granularity;
    use crate::iommu::CacheSet;

    #[test]
    fn op_kinds() {
        for kind in [
            NestingOpKind::BindPgtbl,
            NestingOpKind::UnbindPgtbl,
            NestingOpKind::CacheInvld,
        ] {
            assert_eq!(NestingOpKind::from_raw(kind.raw()), Some(kind));
        }
        assert_eq!(NestingOpKind::from_raw(3), None);
        assert_eq!(
            NestingOpKind::CacheInvld.required_feature(),
            NestingFeatures::CACHE_INVLD
        );
        assert_eq!(NestingOpKind::UnbindPgtbl.min_payload(), 56);
    }

    #[test]
    fn round_trip_ops() {
        let bind = BindRequest::new(10, 0x8000, AddrWidth::Bits48);
        let inv = CacheInvalidateRequest::new(CacheSet::IOTLB, Granularity::Domain).unwrap();
        for op in [
            NestingOp::Bind(bind),
            NestingOp::Unbind(bind),
            NestingOp::Invalidate(inv),
        ] {
            let bytes = op.to_bytes();
            assert_eq!(&bytes[..4], &(bytes.len() as u32).to_le_bytes());
            assert_eq!(decode_nesting_op(&bytes), Ok(op));
        }
    }

    #[test]
    fn header_split_exposes_kind_before_payload() {
        let bind = BindRequest::new(10, 0x8000, AddrWidth::Bits57);
        let mut bytes = NestingOp::Bind(bind).to_bytes();
        // Corrupt the payload version: the header still decodes, the payload does not.
        bytes[12] = 2;
        let arg = decode_nesting_op_header(&bytes).unwrap();
        assert_eq!(arg.kind, NestingOpKind::BindPgtbl);
        assert_eq!(arg.payload.len(), 72);
        assert_eq!(arg.decode().unwrap_err().errno(), Errno::EINVAL);
    }

    #[test]
    fn capability_round_trip() {
        let cap = NestingCapability {
            features: NestingFeatures::ALL,
            addr_width: 48,
            pasid_bits: 20,
            vtd: NestingInfoVtd {
                flags: 0,
                padding: 0,
                cap_reg: 0x00d2_0086_6f10_6f06,
                ecap_reg: 0x0000_0f00_f0f0_505e,
            },
        };
        let bytes = encode_nesting_info(0x40, &cap);
        assert_eq!(bytes.len(), NESTING_CAP_SIZE);
        assert_eq!(NESTING_CAP_SIZE, 56);
        let (header, decoded) = decode_nesting_info(&bytes).unwrap();
        assert_eq!(header.next, 0x40);
        assert_eq!(decoded, cap);
        assert_eq!(cap.to_info().size, 48);
    }

    #[test]
    fn capability_rejects_wrong_id_and_short_buffers() {
        let cap = NestingCapability {
            features: NestingFeatures::BIND_PGTBL,
            addr_width: 57,
            pasid_bits: 0,
            vtd: NestingInfoVtd::default(),
        };
        let mut bytes = encode_nesting_info(0, &cap);
        assert_eq!(
            decode_nesting_info(&bytes[..55]).unwrap_err().errno(),
            Errno::EFAULT
        );
        bytes[0] = 1;
        assert_eq!(
            decode_nesting_info(&bytes).unwrap_err().errno(),
            Errno::EINVAL
        );
    }
}
