//! Running under systemd: socket activation and readiness notification.
//!
//! * **Socket activation.** When the service manager (or `systemd-socket-activate`) created
//!   the listening socket, it passes it as file descriptor 3 with `LISTEN_FDS=1` and
//!   `LISTEN_PID` set to our pid. [`inherited_listener`] takes it over — through `listenfd`,
//!   which checks the variables, the descriptor's kind and marks it close-on-exec, so this
//!   crate stays free of `unsafe` — and checks that it is a listening Unix stream socket.
//!   Connections made before the daemon started wait in its backlog and are served once it
//!   runs. The socket file belongs to the service manager: the daemon neither binds nor
//!   removes it.
//! * **Readiness.** With `Type=notify`, `READY=1` is sent once the socket accepts
//!   connections and the state is restored, and `STOPPING=1` when a shutdown begins
//!   (`sd-notify`, a small, well-kept crate: one datagram to `$NOTIFY_SOCKET`). Without
//!   `$NOTIFY_SOCKET` both do nothing.

use std::os::unix::net::UnixListener;

/// The listening socket the service manager passed, if it passed one.
///
/// Reads (and removes, so no child inherits them) `LISTEN_FDS` and `LISTEN_PID`; call it
/// before any other thread starts.
///
/// # Errors
///
/// A message naming the problem when descriptors were passed but the first one is not a
/// listening Unix stream socket, or more than one was passed (the daemon serves one socket).
pub fn inherited_listener() -> Result<Option<UnixListener>, String> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.len() {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(format!(
                "socket activation passed {n} sockets (LISTEN_FDS={n}); vsvad serves exactly one: \
                 give its .socket unit a single ListenStream="
            ))
        }
    }
    let listener = fds
        .take_unix_listener(0)
        .map_err(|e| {
            format!(
                "socket activation: descriptor 3 is not a Unix stream socket ({e}); use \
                 ListenStream=/path in the .socket unit"
            )
        })?
        .ok_or("socket activation: descriptor 3 was already taken")?;
    match rustix::net::sockopt::socket_acceptconn(&listener) {
        Ok(true) => Ok(Some(listener)),
        Ok(false) => Err(
            "socket activation: descriptor 3 is a Unix stream socket that is not \
                          listening (Accept=no and ListenStream= are what vsvad expects)"
                .into(),
        ),
        Err(e) => Err(format!(
            "socket activation: cannot tell whether descriptor 3 listens: {e}"
        )),
    }
}

/// Tells the service manager the daemon is ready, with a one-line status.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells the service manager the daemon is stopping.
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        // The service manager will time the start out and say so; the daemon itself works.
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
