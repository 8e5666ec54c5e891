//! `vsvad`: the vsva host daemon.
//!
//! In Linux the kernel holds the PASID space and the IOMMU, and processes reach them through
//! `/dev/vfio`. In vsva that role is this daemon: it owns one software IOMMU
//! ([`vsva_iommu`]), the VFIO layer over it ([`vsva_vfio`]) with the configured devices, and
//! the host-wide PASID space; client processes talk to it over a Unix socket with the
//! [`vsva_proto`] protocol.
//!
//! Modules: [`config`] (TOML configuration and validation), [`identity`] (peer credentials
//! and process start times), [`store`] (write-ahead log with group commit), [`machine`] (the
//! simulated IOMMU and devices), [`daemon`] (processes, contexts and request handling),
//! [`conn`] (one connection's reading and writing), [`metrics`] (Prometheus text over HTTP),
//! [`server`] (socket, signals, draining).

#![deny(missing_docs)]

pub mod config;
pub mod conn;
pub mod daemon;
pub mod identity;
pub mod machine;
pub mod metrics;
pub mod server;
pub mod store;
