//! The listening socket, the accept loop (connections are served by the workers of
//! `crate::event_loop`), signals, the maintenance loop, and draining.
//!
//! The socket is either bound here ([`Listen::Bind`]: the file is created, and removed at
//! exit) or handed over by the service manager ([`Listen::Inherited`], socket activation:
//! the file is the manager's, left in place). Either way the accept loop waits on the
//! socket and an `eventfd` together, so a stop wakes it without touching the socket (which,
//! inherited, the service manager keeps using after the daemon exits).

use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vsva_proto::{Errno, FrameHeader, Kind, Reply};

use crate::config::Settings;
use crate::credentials;
use crate::daemon::{Daemon, StartError};
use crate::event_loop::{self, Workers};
use crate::metrics::{self, Metrics};
use crate::private_dir;
use crate::wake::Wake;

/// How long a shutdown waits for connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The daemon could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The socket could not be set up.
    #[error("socket {path}: {reason}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The metrics endpoint could not be set up.
    #[error("metrics_addr {addr}: {reason}")]
    Metrics {
        /// The `metrics_addr` configured.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The store could not be flushed at shutdown.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn socket_err(path: &Path, reason: impl ToString) -> ServerError {
    ServerError::Socket {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Binds the socket: creates its directory (or checks that no other user controls the
/// existing one), refuses to replace a socket a live daemon listens on or a file that is not
/// a socket, and removes only a stale socket (one that refuses connections).
fn bind(path: &Path, euid: u32) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let policy = private_dir::Policy {
            // Root's socket directory is shared with every user; anyone else's is private.
            create_mode: if euid == 0 { 0o755 } else { 0o700 },
            narrow: false,
            sticky_ok: true,
        };
        private_dir::ensure(dir, euid, policy).map_err(|e| socket_err(path, e))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_err(path, format!("cannot inspect it: {e}"))),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(socket_err(
                path,
                "a file that is not a socket is there; refusing to replace it (remove it or \
                 choose another --socket)",
            ))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(socket_err(path, "another vsvad is listening on it")),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| {
                    socket_err(path, format!("cannot remove the stale socket: {e}"))
                })?;
            }
            Err(e) => {
                return Err(socket_err(
                    path,
                    format!("a socket is there and cannot tell whether it is stale: {e}"),
                ))
            }
        },
    }
    let listener =
        UnixListener::bind(path).map_err(|e| socket_err(path, format!("cannot bind: {e}")))?;
    // Anyone who can reach the directory may connect: access is decided per process.
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)) {
        tracing::warn!(socket = %path.display(), error = %e, "cannot open the socket to every user");
    }
    Ok(listener)
}

/// The bound socket's file, removed when the server stops for any reason (a start that
/// fails after binding leaves no socket behind).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(socket = %self.0.display(), error = %e, "cannot remove the socket");
            }
        }
    }
}

/// Where the listening socket comes from.
#[derive(Debug)]
pub enum Listen {
    /// Bind the configured socket path (created here, removed at exit).
    Bind,
    /// A listening socket the service manager created and passed (socket activation); the
    /// configured path is only reported.
    Inherited(UnixListener),
}

/// A running server: stop it with [`Handle::stop`] or a `SIGTERM`.
#[derive(Clone)]
pub struct Handle {
    stop: Arc<AtomicBool>,
    /// The accept loop waits on this beside the socket.
    wake: Arc<Wake>,
}

impl Handle {
    /// Asks the server to drain and exit.
    pub fn stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            if let Err(e) = self.wake.wake() {
                tracing::error!(error = %e, "cannot wake the accept loop");
                debug_assert!(false, "cannot wake the accept loop: {e}");
            }
        }
    }
}

/// Runs the daemon until `SIGTERM`/`SIGINT`: serves connections, expires held processes,
/// serves metrics; then drains connections, flushes the store and removes the socket.
/// `ready` is called once the socket accepts connections (and the service manager, if any,
/// has been told so).
pub fn run(
    settings: Settings,
    listen: Listen,
    ready: impl FnOnce(&Handle),
) -> Result<(), ServerError> {
    let metrics = Arc::new(Metrics::new());
    let socket_path = settings.socket.clone();
    // Signals: SIGTERM and SIGINT drain and exit. Caught from before the socket is bound: one
    // that arrives while the daemon starts (replaying a long log, say) is kept and served
    // as soon as it is up, so the daemon still stops cleanly, removing its socket, instead
    // of dying with the socket file left behind.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| socket_err(&socket_path, format!("cannot install signal handlers: {e}")))?;
    let metrics_addr = settings.metrics_addr;
    let (listener, socket_file, activated) = match listen {
        Listen::Bind => (
            bind(&socket_path, rustix::process::geteuid().as_raw())?,
            Some(SocketFile(socket_path.clone())),
            false,
        ),
        Listen::Inherited(l) => (l, None, true),
    };
    let daemon = Daemon::start(settings, metrics.clone())?;
    let wake = Wake::new()
        .map_err(|e| socket_err(&socket_path, format!("cannot create an eventfd: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| socket_err(&socket_path, format!("cannot make it non-blocking: {e}")))?;
    let handle = Handle {
        stop: Arc::new(AtomicBool::new(false)),
        wake: Arc::new(wake),
    };
    let count = match daemon.settings().limits.workers {
        0 => event_loop::default_count(),
        n => n as usize,
    };
    let mut workers = Workers::start(&daemon, count).map_err(|e| {
        socket_err(
            &socket_path,
            format!("cannot start the connection workers: {e}"),
        )
    })?;
    let signal_handle = signals.handle();
    let h = handle.clone();
    let signal_thread = std::thread::Builder::new()
        .name("vsvad-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                // Stop first: a log line may block on a full pipe, and must not delay this.
                h.stop();
                tracing::info!(signal = sig, "shutting down");
            }
        })
        .map_err(|e| socket_err(&socket_path, e))?;
    // Maintenance: expire held processes.
    let d = daemon.clone();
    let stop = handle.stop.clone();
    let maintenance = std::thread::Builder::new()
        .name("vsvad-maintenance".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let wait = d.next_expiry().map_or(Duration::from_millis(500), |t| {
                    t.min(Duration::from_millis(250))
                });
                std::thread::sleep(wait.max(Duration::from_millis(10)));
                d.expire_held();
                d.expire_page_requests();
            }
        })
        .map_err(|e| socket_err(&socket_path, e))?;
    let metrics_server = match metrics_addr {
        None => None,
        Some(addr) => {
            let d = daemon.clone();
            let render: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || d.metrics().render(&d.gauges()));
            let m = metrics::serve(addr, render, handle.stop.clone()).map_err(|e| {
                ServerError::Metrics {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                }
            })?;
            tracing::info!(addr = %m.addr, "metrics at http://{}/metrics", m.addr);
            Some(m)
        }
    };
    tracing::info!(
        socket = %socket_path.display(),
        activated,
        state_dir = %daemon.settings().state_dir.display(),
        durability = daemon.settings().durability.name(),
        pasid_bits = daemon.vfio().pasid_bits(),
        devices = daemon.settings().devices.len(),
        "vsvad ready"
    );
    crate::systemd::notify_ready(&format!(
        "serving {} ({} PASID bits, {} devices)",
        socket_path.display(),
        daemon.vfio().pasid_bits(),
        daemon.settings().devices.len()
    ));
    ready(&handle);
    accept_loop(&listener, &daemon, &workers, &handle);
    crate::systemd::notify_stopping();
    // Drain: every connection finishes what it has read and closes.
    daemon.begin_shutdown();
    // A connection parked on a request that waits for a device process closes once that
    // request is done, within the invalidation timeout.
    let left = workers.drain(DRAIN_TIMEOUT + daemon.settings().limits.invalidation_timeout());
    if left > 0 {
        tracing::warn!(connections = left, "connections did not finish in time");
    }
    // Requests still in the blocking pool finish (their replies, if their connections are
    // still served, are written) before the workers stop and the store closes.
    daemon.stop_blocking();
    workers.stop();
    drop(socket_file);
    signal_handle.close();
    let metrics_stopped = metrics_server.map_or(Ok(()), metrics::MetricsServer::stop);
    let threads = [signal_thread.join(), maintenance.join(), metrics_stopped];
    for t in threads {
        if t.is_err() {
            tracing::error!("a daemon thread panicked");
            debug_assert!(false, "a daemon thread panicked");
        }
    }
    daemon.finish_shutdown()?;
    tracing::info!("vsvad stopped");
    Ok(())
}

/// Accepts connections until the server is stopped: identifies each peer, registers it with
/// the daemon (which enforces the connection limits) and hands it to a worker.
fn accept_loop(listener: &UnixListener, daemon: &Arc<Daemon>, workers: &Workers, handle: &Handle) {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        if handle.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut fds = [
            PollFd::new(listener, PollFlags::IN),
            PollFd::new(&*handle.wake, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for connections");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if handle.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let who = match credentials::peer_credentials(&stream) {
            Ok((who, _pidfd)) => who,
            Err(e) => {
                tracing::debug!(error = %e, "cannot identify a peer; closing its connection");
                continue;
            }
        };
        let mut session = match daemon.connect(&stream, who) {
            Ok(session) => session,
            Err(message) => {
                refuse(stream, message);
                continue;
            }
        };
        if let Err(e) = stream.set_nonblocking(true) {
            tracing::error!(error = %e, "cannot make a connection non-blocking; closing it");
            daemon.disconnect(&mut session);
            continue;
        }
        workers.assign(stream, session);
    }
}

/// Tells a connection over a limit why it is closed.
fn refuse(mut stream: UnixStream, message: String) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let header = FrameHeader {
        body_len: 0,
        kind: Kind::Hello as u16,
        flags: 0,
        nfds: 0,
        id: 0,
    };
    let reply = Reply::error(Errno::EAGAIN, message);
    let _ = stream.write_all(&reply.encode_frame(&header));
}
