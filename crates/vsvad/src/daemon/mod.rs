//! The daemon's state and request handling, independent of sockets.
//!
//! One file per job: [`process`] keeps the registry of client processes (handshake, resume,
//! release, expiry), [`release`] finishes releases away from locks and workers, [`restore`] gives live processes their PASIDs back at start,
//! [`dispatch`] routes a decoded request to its family's handler, and the handlers are
//! [`container`] (open, close, attach, detach), [`ioctl`] (container ioctls, PASID_REQUEST
//! journaling and its rollback), [`memory`] (guest memory shared by fd), [`device`] (PCI
//! configuration space and DMA), [`admin`] (quota, force release), [`report`] (status,
//! sets, faults, metrics gauges), [`events`] (opening a process's events channel) and
//! [`device_side`] (devices granted to other processes, ATS translation requests, page
//! requests and responses, and the delivery of invalidations and faults as events);
//! [`waits`] decides which requests may wait for a device process (they run in the blocking
//! pool, `crate::blocking`, not in a connection worker).
//!
//! # Processes and contexts
//!
//! Every connection is attributed to a process (a [`ProcessToken`]: pid + start time). The
//! first connection of a process creates a [`Process`] and, through `vsva-vfio`, the
//! process's PASID context (`VfioMm`); every further connection of the same process shares
//! both, exactly as all containers of one process share one `vfio_mm`. The `Process` holds
//! one reference on the context for as long as the process has a connection (a connection is
//! the process's handle on the daemon, like an open `/dev/vfio/vfio`); containers hold theirs.
//! When the last connection closes — the process exited, was killed, or closed them — the
//! daemon drops the process's containers and reference, which releases the context through
//! the same path as a last container closing: every PASID is freed through the allocator,
//! whose teardown subscriber clears the IOMMU's state before any number is reused.
//!
//! # Ordering with the store
//!
//! A process's PASID_REQUESTs run under its [`ProcessState`](process::ProcessState) lock, which is held while the
//! ioctl runs and its record is queued, so the log has each process's changes in the order
//! they happened (records of different processes need no order, see [`crate::store`]). The
//! reply is sent only after the record is durable.
//!
//! # Lock order
//!
//! The process registry lock → a process's state lock → `vsva-vfio`'s locks. The connection
//! registry lock is taken alone.
//!
//! No release waits for a device process while holding the registry lock or a process's
//! state lock, or in a connection worker: closing containers and freeing PASIDs (which wait
//! until every device that may cache a translation acknowledged its invalidation, or until
//! it is fenced) are done by a releaser thread ([`release`]). Requests that may wait do so
//! in a thread of the blocking pool ([`waits`]).
//!
//! [`ProcessToken`]: vsva_vfio::ProcessToken

mod admin;
mod container;
mod device;
mod device_side;
mod dispatch;
mod events;
mod fault_view;
mod ioctl;
mod iommufd;
mod memory;
mod process;
mod release;
mod report;
mod restore;
mod waits;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use vsva_proto::{Errno, Reply};
use vsva_vfio::{ProcessToken, Vfio, VfioError};

use crate::blocking::Pool;
use crate::config::Settings;
use crate::events::Hub;
use crate::machine::{self, HpaAllocator};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

pub use ioctl::Outcome;
use process::Process;
pub use process::Session;

/// The daemon's name and version, as replies report it.
const SERVER: &str = concat!("vsvad ", env!("CARGO_PKG_VERSION"));

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 16 bytes from the kernel's random source (`getrandom(2)`, which blocks until the pool is
/// initialised). There is no weaker fallback: a resume token anyone could guess would let
/// another process take a context over after a restart.
fn random_bytes() -> std::io::Result<[u8; 16]> {
    let mut out = [0u8; 16];
    let mut filled = 0;
    while filled < out.len() {
        match rustix::rand::getrandom(&mut out[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn vfio_reply(e: &VfioError) -> Reply {
    Reply::error(e.errno(), e.to_string())
}

/// The reply to any request of a process an admin force-released.
fn revoked(p: &Process) -> Reply {
    Reply::error(
        Errno::ESRCH,
        format!(
            "the context of pid {} was force-released by an admin",
            p.token.pid()
        ),
    )
}

/// A connection the daemon serves, as the registry keeps it.
struct OpenConnection {
    /// Its process, once its hello is done.
    process: Option<ProcessToken>,
    /// The peer's uid, for the per-uid connection limit.
    uid: u32,
    /// A handle on its socket, to shut it down.
    stream: UnixStream,
}

/// The daemon: the machine, the store, and every process and connection it serves.
pub struct Daemon {
    settings: Settings,
    vfio: Vfio,
    store: Store,
    metrics: Arc<Metrics>,
    instance: u64,
    started: Instant,
    processes: Mutex<HashMap<ProcessToken, Arc<Process>>>,
    conns: Mutex<HashMap<u64, OpenConnection>>,
    next_conn: AtomicU64,
    shutting_down: AtomicBool,
    hpa: Mutex<HpaAllocator>,
    /// Bytes of guest memory registered by all processes (bounded by
    /// `limits.max_memory_mib_total`).
    registered_bytes: AtomicU64,
    /// Every live iommufd context, for the admin view.
    iommufd: iommufd::IommufdContexts,
    /// The events channels and their thread.
    events: Hub,
    /// Grants of devices to other processes, and the processes that use each device.
    device_side: device_side::DeviceSide,
    /// Releases being finished by releaser threads.
    releases: release::Releases,
    /// The threads that serve requests which may wait for a device process.
    blocking: Arc<Pool>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The machine could not be built.
    #[error("cannot build the machine: {0}")]
    Machine(#[from] machine::MachineError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The kernel's random source failed.
    #[error("cannot read the kernel's random source (getrandom): {0}")]
    Random(std::io::Error),
    /// The events thread could not be started.
    #[error("cannot start the events thread: {0}")]
    Events(std::io::Error),
}

impl Daemon {
    /// Builds the machine, opens the store, and gives live processes their PASIDs back (held
    /// for the grace period); dead processes' PASIDs are released and recorded as such.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> Result<Arc<Daemon>, StartError> {
        let vfio = machine::build(&settings)?;
        let random = random_bytes().map_err(StartError::Random)?;
        let instance = u64::from_le_bytes([
            random[0], random[1], random[2], random[3], random[4], random[5], random[6], random[7],
        ]);
        let (store, replayed) = Store::open(
            &settings.state_dir,
            settings.durability,
            instance,
            metrics.clone(),
        )?;
        let events =
            Hub::start(settings.limits.event_queue_len as usize).map_err(StartError::Events)?;
        let blocking = Arc::new(Pool::new(settings.limits.blocking_threads as usize));
        let hpa = HpaAllocator::new(settings.table_pool_bytes, settings.iommu.mgaw);
        let daemon = Arc::new(Daemon {
            settings,
            vfio,
            store,
            metrics,
            instance,
            started: Instant::now(),
            processes: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            hpa: Mutex::new(hpa),
            registered_bytes: AtomicU64::new(0),
            iommufd: iommufd::IommufdContexts::default(),
            events,
            device_side: device_side::DeviceSide::default(),
            releases: release::Releases::default(),
            blocking,
        });
        let delivery = Arc::new(device_side::Delivery {
            daemon: Arc::downgrade(&daemon),
        });
        daemon.releases.serve(Arc::downgrade(&daemon));
        daemon.vfio.iommu().set_devtlb_sink(Some(delivery.clone()));
        daemon.vfio.set_fault_sink(Some(delivery));
        daemon.restore(replayed);
        Ok(daemon)
    }

    /// The settings the daemon was started with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters the metrics page renders.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The VFIO layer the daemon serves.
    pub fn vfio(&self) -> &Vfio {
        &self.vfio
    }

    /// The store whose tickets a reply waits for.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many connections are open now.
    pub fn connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Whether a shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Starts a shutdown: no new work is accepted, and every connection's reading side is shut
    /// so it finishes the requests it has and closes. Processes keep their PASIDs in the store
    /// (to be held for them at the next start).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for c in lock(&self.conns).values() {
            // A connection already gone needs no shutting.
            let _ = c.stream.shutdown(std::net::Shutdown::Read);
        }
    }

    /// The pool that serves requests which may wait for a device process (see
    /// [`Daemon::may_wait`]).
    pub fn blocking(&self) -> &Arc<Pool> {
        &self.blocking
    }

    /// Lets the blocking pool finish every request handed to it (each within
    /// `limits.invalidation_timeout_ms` once started) and stops its threads; call it before
    /// the connection workers stop, so the replies reach their connections, and before
    /// [`Daemon::finish_shutdown`], so their records reach the store.
    pub fn stop_blocking(&self) {
        self.blocking.stop();
    }

    /// Flushes and closes the store (after every connection has finished).
    ///
    /// # Errors
    ///
    /// The store's writer failed, now or earlier: records queued since the last durable one
    /// may be missing from the log.
    pub fn finish_shutdown(&self) -> Result<(), StoreError> {
        self.store.close()
    }
}
