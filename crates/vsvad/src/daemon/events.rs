//! The events channel request: a process asks for its channel and receives its socket.

use std::sync::Arc;

use vsva_proto::{Errno, Reply};

use super::ioctl::Outcome;
use super::process::Process;
use super::{lock, revoked, Daemon};
use crate::events::OpenError;

impl Daemon {
    /// Opens the process's events channel; the reply carries the client's end of it.
    pub(super) fn events_open(&self, p: &Arc<Process>) -> Outcome {
        if lock(&p.state).revoked {
            return revoked(p).into();
        }
        match self.events.open(&p.events) {
            Ok(fd) => Outcome {
                fds: vec![fd],
                ..Reply::ok(0, Vec::new()).into()
            },
            Err(e @ OpenError::Busy) => Reply::error(Errno::EBUSY, e.to_string()).into(),
            Err(e @ OpenError::Io(_)) => Reply::error(Errno::ENOMEM, e.to_string()).into(),
        }
    }
}
