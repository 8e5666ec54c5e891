//! The user API of vSVA ("vfio: expose virtual Shared Virtual Addressing to VMs"): byte-exact
//! `#[repr(C)]` structs, constants, Linux error numbers, and the kernel's validation rules.
//!
//! This crate is pure data. It does no I/O, holds no state and contains no `unsafe`. Every
//! struct derives `zerocopy`'s `FromBytes`, `IntoBytes`, `KnownLayout` and `Immutable`, so it
//! converts to and from bytes safely; `tests/layout.rs` pins every size and field offset to the
//! Linux layout.
//!
//! # Contents
//!
//! * [`vfio`]: VFIO container ioctl numbers, IOMMU types, [`PasidRequest`],
//!   [`NestingOpHeader`], [`InfoCapHeader`], [`InfoCapNesting`], and the type1 [`Type1Info`],
//!   [`DmaMap`], [`DmaUnmap`].
//! * [`iommu`]: the payloads of Linux 5.10–5.16 `iommu.h`: [`NestingInfo`],
//!   [`NestingInfoVtd`], [`GpasidBindData`], [`GpasidBindDataVtd`], [`CacheInvalidateInfo`],
//!   [`InvPasidInfo`], [`InvAddrInfo`], and typed flag sets.
//! * [`iommufd`]: the iommufd uAPI (`/dev/iommu`) and the VFIO device ioctls that join it,
//!   with [`iommufd::read_iommufd_arg`], iommufd's `copy_struct_from_user` reader.
//! * [`pci_regs`]: the PCIe PASID capability's place and bits in configuration space.
//! * [`errno`]: [`Errno`] and the rich [`UapiError`].
//! * The argument readers, [`read_arg`] (VFIO's and the IOMMU core's way: the mandatory part
//!   first, then `argsz`) and [`read_int_arg`] for integer arguments, which every decoder here
//!   and every ioctl front end uses.
//! * Decoders that turn a caller's raw bytes into typed, validated requests, or the exact
//!   error: [`decode_pasid_request`], [`decode_nesting_op`] (or [`decode_nesting_op_header`]
//!   then [`NestingOpArg::decode`]), [`decode_bind_data`], [`decode_cache_invalidate`]; and
//!   encoders for clients and tests: `to_bytes()` on every request type, and
//!   [`encode_nesting_info`] / [`decode_nesting_info`] for the GET_INFO capability.
//!
//! # Example
//!
//! ```
//! use vsva_uapi::{decode_nesting_op, AddrWidth, BindRequest, Errno, NestingOp};
//!
//! // A client builds a bind request...
//! let bind = BindRequest::new(42, 0x1000_0000, AddrWidth::Bits48);
//! let bytes = NestingOp::Bind(bind).to_bytes();
//!
//! // ...and the server decodes it, or learns exactly what is wrong.
//! assert_eq!(decode_nesting_op(&bytes), Ok(NestingOp::Bind(bind)));
//! let err = decode_nesting_op(&bytes[..72]).unwrap_err();
//! assert_eq!(err.errno(), Errno::EFAULT);
//! assert_eq!(
//!     err.to_string(),
//!     "EFAULT: argsz 72 covers 72 bytes of iommu_gpasid_bind_data before its vendor union, \
//!      but the buffer holds 64"
//! );
//! ```
//!
//! # The buffer model
//!
//! A decoder receives the whole user buffer: every byte the caller supplied. Each argument
//! starts with `argsz`, the size the caller claims for it, and has a mandatory size `minsz`
//! (the whole struct, or the part before a trailing union). The sizes are checked first, in
//! the order of the kernel code that reads the argument (see [`read_arg`]): the mandatory
//! part must be in the buffer (else `EFAULT`, before `argsz` is looked at), `argsz < minsz` is
//! `EINVAL`, and the rest of the known struct that `argsz` covers must be in the buffer (else
//! `EFAULT`).
//!
//! A larger struct than this crate knows (`argsz` past the known size) is accepted and its
//! tail never read, so an `argsz` beyond the buffer is no fault unless the known struct is cut
//! short; known bytes past `argsz` read as zero, as the kernel's zero-initialized copy does.
//! Within a NESTING_OP the header's `argsz` is only checked to be at least 8; the payload is
//! every byte after the header and is read with its own `argsz`.
//!
//! After the sizes, fields are checked in the kernel's order: version, format, flags, padding,
//! then value ranges and combinations. Each decoder's documentation lists its exact order, and
//! `tests/errno_table/` has one case per rule.
//!
//! # Byte order
//!
//! Fields are plain native integers and the layouts are those of a little-endian target, the
//! only kind this crate builds for (a compile-time assertion enforces it).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

const _: () = assert!(
    cfg!(target_endian = "little"),
    "vsva-uapi lays out little-endian uAPI structs with native integers"
);

mod arg;
mod bind;
mod bitset;
pub mod errno;
mod invalidate;
mod ioctl;
pub mod iommu;
pub mod iommufd;
mod nesting;
mod pasid_request;
pub mod pci_regs;
pub mod vfio;

pub use arg::{read_arg, read_int_arg, Arg};
pub use bind::{decode_bind_data, read_bind_data, AddrWidth, BindData, BindRequest, VtdBindAttrs};
pub use errno::{Errno, UapiError};
pub use invalidate::{decode_cache_invalidate, CacheInvalidateRequest, Granularity};
pub use ioctl::io;
pub use iommu::{
    CacheInvalidateInfo, CacheSet, GpasidBindData, GpasidBindDataVtd, InvAddrInfo, InvGranu,
    InvPasidInfo, NestingFeatures, NestingInfo, NestingInfoVtd, VtdBindFlags,
};
pub use iommufd::{
    IommuHwInfoVtd, IommuHwptVtdS1, IommuHwptVtdS1Invalidate, VfioDeviceAttachIommufdPt,
};
pub use nesting::{
    decode_nesting_info, decode_nesting_op, decode_nesting_op_header, encode_nesting_info,
    NestingCapability, NestingOp, NestingOpArg, NestingOpKind, NESTING_CAP_SIZE,
};
pub use pasid_request::{
    decode_pasid_request, read_pasid_request, PasidRequestArg, PasidRequestOp,
};
pub use vfio::{
    DmaMap, DmaUnmap, InfoCapHeader, InfoCapNesting, InfoCapPasidQuota, NestingOpHeader,
    PasidRange, PasidRequest, Type1Info,
};
