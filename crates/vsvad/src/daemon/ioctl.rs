//! The container ioctl request. Every command goes through [`Container::ioctl_journaled`]
//! once, on the caller's bytes; a PASID_REQUEST's change is journaled in the store from the
//! typed outcome, under vsva-vfio's per-process lock, so one process's records are in the
//! order its changes happened. [`Rollback`] undoes an allocation the store could not make
//! durable.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use vsva_proto::Reply;
use vsva_uapi::vfio::VFIO_IOMMU_MAP_DMA;
use vsva_vfio::{Container, IoctlOutcome};

use super::container::no_handle;
use super::memory::translate_map_dma;
use super::process::Process;
use super::{lock, revoked, vfio_reply, Daemon};
use crate::store::{Record, Ticket};

/// The result of handling one request: the reply, and for a change journaled in the store
/// the ticket the reply waits for and what undoes the change if that record fails.
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// A store record the reply must wait for.
    pub ticket: Option<Ticket>,
    /// What to undo if that record cannot be made durable.
    pub rollback: Option<Rollback>,
    /// Descriptors sent with the reply (with its first byte), as its kind's `reply_nfds`
    /// says; none on failure.
    pub fds: Vec<OwnedFd>,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            reply,
            ticket: None,
            rollback: None,
            fds: Vec::new(),
        }
    }
}

/// What to undo if a change could not be made durable.
pub enum Rollback {
    /// Free a PASID just allocated.
    FreePasid {
        /// The container it was allocated through.
        container: Arc<Container>,
        /// The PASID.
        pasid: u32,
    },
}

/// What journaling a PASID change did.
enum Journaled {
    /// Nothing to record (not a PASID change, or a free of a process with no records).
    Nothing,
    /// Recorded: the reply waits for this ticket.
    Recorded(Ticket),
    /// The process was released while the request ran: its allocation is not recorded and
    /// must be undone.
    Closed,
}

impl Daemon {
    pub(super) fn ioctl(
        &self,
        p: &Arc<Process>,
        handle: u32,
        cmd: u32,
        mut arg: Vec<u8>,
    ) -> Outcome {
        let (c, unregistered) = {
            let st = lock(&p.state);
            if st.revoked {
                return revoked(p).into();
            }
            let Some(c) = st.containers.get(&handle).map(|c| c.container.clone()) else {
                return no_handle(handle).into();
            };
            let unregistered = if cmd == VFIO_IOMMU_MAP_DMA {
                translate_map_dma(&st.regions, &mut arg)
            } else {
                None
            };
            (c, unregistered)
        };
        let mut journaled = Journaled::Nothing;
        let outcome = match c.ioctl_journaled(cmd, &mut arg, |o| journaled = self.journal(p, o)) {
            Ok(outcome) => outcome,
            Err(e) => {
                let reply = vfio_reply(&e);
                return match unregistered {
                    Some(u) => u.explain(reply),
                    None => reply,
                }
                .into();
            }
        };
        let value = i64::try_from(outcome.value()).unwrap_or(i64::MAX);
        let out = if outcome.wrote_back() {
            arg
        } else {
            Vec::new()
        };
        let reply = Reply::ok(value, out);
        match (journaled, outcome) {
            (Journaled::Closed, IoctlOutcome::PasidAllocated(pasid)) => {
                self.rollback(Rollback::FreePasid {
                    container: c,
                    pasid,
                });
                revoked(p).into()
            }
            (Journaled::Recorded(ticket), IoctlOutcome::PasidAllocated(pasid)) => Outcome {
                reply,
                ticket: Some(ticket),
                rollback: Some(Rollback::FreePasid {
                    container: c,
                    pasid,
                }),
                fds: Vec::new(),
            },
            (Journaled::Recorded(ticket), _) => Outcome {
                reply,
                ticket: Some(ticket),
                rollback: None,
                fds: Vec::new(),
            },
            (Journaled::Nothing | Journaled::Closed, _) => reply.into(),
        }
    }

    /// Appends the store record for a PASID change; runs inside vsva-vfio's per-process lock.
    fn journal(&self, p: &Process, outcome: &IoctlOutcome) -> Journaled {
        let mut journal = lock(&p.journal);
        match *outcome {
            IoctlOutcome::PasidAllocated(pasid) => {
                if journal.closed {
                    return Journaled::Closed;
                }
                if !journal.begun {
                    // Not waited for on its own: the Alloc record after it is, and the log is
                    // written in order.
                    let _begin = self.store.append(Record::Begin {
                        token: p.token,
                        uid: p.credentials.uid,
                        quota: journal.quota,
                        resume: p.resume,
                    });
                    journal.begun = true;
                }
                let at = self.vfio.iommu().fault_log().total();
                lock(&p.faults).pasid_allocated(pasid, at);
                Journaled::Recorded(self.store.append(Record::Alloc {
                    token: p.token,
                    pasid,
                }))
            }
            IoctlOutcome::PasidsFreed { min, max, .. } if journal.begun => {
                lock(&p.faults).pasids_freed(min, max);
                Journaled::Recorded(self.store.append(Record::FreeRange {
                    token: p.token,
                    min,
                    max,
                }))
            }
            _ => Journaled::Nothing,
        }
    }

    /// Undoes a change whose record could not be made durable (or that raced a release).
    pub fn rollback(&self, r: Rollback) {
        match r {
            Rollback::FreePasid { container, pasid } => {
                if let Err(e) = container.free_pasids(pasid, pasid) {
                    tracing::error!(pasid, error = %e, "cannot undo an allocation the store did not record");
                }
            }
        }
    }
}
