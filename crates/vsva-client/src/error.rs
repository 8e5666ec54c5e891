//! Why a call failed: the library's one error type, and the check that turns a failure reply
//! into it.

use std::io;

use vsva_proto::{Errno, FaultRecord, Kind, ProtoError, Reply};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The daemon answered with an error.
    #[error("{}: {message}", errno.name())]
    Daemon {
        /// The request kind.
        kind: Kind,
        /// The errno.
        errno: Errno,
        /// The daemon's explanation, naming the field and value.
        message: String,
    },
    /// A DMA faulted in the IOMMU.
    #[error("DMA fault: {} ({:#04x}) at {:#x}", .0.description, .0.reason, .0.addr)]
    DmaFault(FaultRecord),
    /// The daemon sent something this library cannot decode.
    #[error("bad reply to {kind:?}: {error}")]
    Protocol {
        /// The request kind.
        kind: Kind,
        /// What is wrong.
        error: ProtoError,
    },
    /// The daemon did not answer in time: a read or write on the socket waited longer than
    /// [`Options::timeout`](crate::Options::timeout) (the daemon is stopped, wedged or
    /// overloaded). The request may or may not have reached it.
    #[error("{what}: the daemon did not answer within {}", humane(*.after))]
    TimedOut {
        /// What was being done.
        what: &'static str,
        /// How long this client waited.
        after: std::time::Duration,
    },
    /// The daemon closed the connection.
    #[error("the daemon closed the connection{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    Closed(String),
}

impl ClientError {
    /// Whether the connection is gone: the daemon closed it, exited or restarted. Every later
    /// call on this [`Client`](crate::Client) fails the same way;
    /// [`Client::reconnect`](crate::Client::reconnect) opens a new one.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ClientError::Closed(_) => true,
            ClientError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    /// The errno, when the daemon refused the request (`EFAULT` for a DMA fault).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ClientError::Daemon { errno, .. } => Some(*errno),
            ClientError::DmaFault(_) => Some(Errno::EFAULT),
            _ => None,
        }
    }
}

/// `1.5 s`, `10 s`, `250 ms`.
fn humane(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{} ms", d.subsec_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}

/// Turns a failure reply into [`ClientError::Daemon`].
pub(crate) fn check(kind: Kind, reply: Reply) -> Result<Reply, ClientError> {
    match reply.errno() {
        None => Ok(reply),
        Some(errno) => Err(ClientError::Daemon {
            kind,
            errno,
            message: reply.message,
        }),
    }
}
