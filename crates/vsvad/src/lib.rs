//! `vsvad`: the vsva host daemon.
//!
//! In Linux the kernel holds the PASID space and the IOMMU, and processes reach them through
//! `/dev/vfio`. In vsva that role is this daemon: it owns one software IOMMU
//! ([`vsva_iommu`]), the VFIO layer over it ([`vsva_vfio`]) with the configured devices, and
//! the host-wide PASID space; client processes talk to it over a Unix socket with the
//! [`vsva_proto`] protocol.
//!
//! Modules: [`config`] (TOML configuration and validation), [`config_toml`] (the effective
//! configuration as TOML, for `--check-config`), `credentials` (peer credentials
//! and process start times), `store` (write-ahead log with group commit), `machine` (the
//! simulated IOMMU and devices), `daemon` (processes, contexts and request handling, one
//! request family per file), `conn` (one connection's reading and writing), `event_loop` (the workers that serve connections), `blocking` (the threads that serve requests which may wait for a device process), `parked` (such a request's way there and back), `events` (the events channels and their thread), `metrics`
//! (Prometheus text over HTTP), `private_dir` (directories no other user controls), [`server`] (socket, signals, draining), [`log_sink`] (the log's non-blocking writer),
//! [`systemd`] (socket activation, readiness), [`ephemeral`] (a private daemon that stops with the
//! process that started it). Only the configuration, the server, the log's writer, the systemd
//! glue and the ephemeral watch are public: the binary starts the server with the configuration
//! (and a socket the service manager passed), logging through the writer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod blocking;
pub mod config;
pub mod config_toml;
mod conn;
mod credentials;
mod daemon;
pub mod ephemeral;
mod event_loop;
mod events;
pub mod log_sink;
mod machine;
mod metrics;
mod parked;
mod private_dir;
pub mod server;
mod store;
pub mod systemd;
mod wake;
