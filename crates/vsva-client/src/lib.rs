//! `vsva-client`: the client library for `vsvad`, for VMMs, device emulators and tools.
//!
//! A [`Client`] is one connection to the daemon. [`Client::connect`] does the handshake;
//! after it, every request of the protocol has a typed method. All connections of one
//! process share the process's PASID context in the daemon, so a VMM may open one connection
//! per thread and they see the same PASIDs and quota.
//!
//! * Containers: [`Client::open_container`], [`Client::attach_group`],
//!   [`Client::nesting_container`] (open + attach + `VFIO_SET_IOMMU(NESTING)`), and the raw
//!   [`Client::ioctl`], which carries uAPI bytes unchanged. Typed wrappers build those bytes
//!   with `vsva-uapi`: [`Client::pasid_alloc`], [`Client::pasid_free`], [`Client::bind`],
//!   [`Client::unbind`], [`Client::invalidate`], [`Client::map_dma`], [`Client::unmap_dma`],
//!   [`Client::nesting_info`].
//! * Guest memory: [`GuestMemory::new`] makes a sealed memfd mapped in this process;
//!   [`Client::register_memory`] passes it to the daemon with `SCM_RIGHTS`, so the IOMMU
//!   walks page tables the client writes.
//! * Devices: [`Client::dma_read`], [`Client::dma_write`] issue DMA through the IOMMU from a
//!   device the process has attached.
//! * Events: [`Client::open_events`] opens the process's [`EventChannel`], a socket of its
//!   own on which the daemon pushes ordered, numbered [`Event`]s (DMA faults, page requests,
//!   invalidations to acknowledge, an overflow marker when events were dropped).
//! * Admin and inspection: [`Client::status`], [`Client::sets`], [`Client::set_quota`],
//!   [`Client::force_release`], [`Client::faults`].
//! * Pipelining: [`Client::call_many`] sends several requests before reading any reply.
//! * Restarts: [`Client::reconnect`] presents the resume token from the first handshake, so
//!   after a daemon restart the process gets its PASIDs back ([`Client::hello`] tells which);
//!   containers do not survive a restart and are opened again. [`ClientError::is_disconnect`]
//!   says when a connection is gone.
//! * Timeouts: [`Options::timeout`] bounds every wait on the socket, the connect included; a
//!   stopped daemon gives [`ClientError::TimedOut`] instead of a hang.
//! * A private daemon for tools and tests: [`PrivateDaemon`] starts `vsvad` on a temporary
//!   socket with a [`MachineConfig`] and stops it on drop; [`find_vsvad`] locates the binary.
//!
//! The library carries no command-line weight: the `vsva` tool (its own crate) holds the
//! commands, their tables and `--json`. Raw frame access for the daemon's robustness tests
//! (`send_raw`, `recv_raw`, `socket`) exists only with the `test-hooks` feature.
//!
//! ```no_run
//! use vsva_client::Client;
//!
//! let mut client = Client::connect_default("my-vmm")?;
//! let c = client.nesting_container(1)?;
//! let pasid = client.pasid_alloc(c, 1, u32::MAX)?;
//! client.pasid_free(c, pasid, pasid)?;
//! # Ok::<(), vsva_client::ClientError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod admin;
mod connection;
mod containers;
mod device;
mod device_events;
mod devices;
mod error;
mod events;
mod iommufd;
mod launcher;
mod memory;
pub mod pgtable;

pub use connection::{daemon_running, default_socket, Client, Options};
pub use containers::ContainerHandle;
pub use device::{DeviceHandle, DeviceOptions, DeviceStats};
pub use devices::DmaAccess;
pub use error::ClientError;
pub use events::EventChannel;
pub use launcher::{find_vsvad, LaunchError, MachineConfig, PrivateDaemon};
pub use memory::GuestMemory;
pub use vsva_proto::{
    Credentials, DeviceInfo, Errno, Event, FaultRecord, FaultsReply as Faults,
    HelloReply as HelloInfo, Invalidation, PageRequest, PageResponse, SetEntry, SetState,
    StatusReply as Status,
};
pub use vsva_proto::{IommufdObject, IOMMUFD_KIND_NAMES, IOMMUFD_NONE};
