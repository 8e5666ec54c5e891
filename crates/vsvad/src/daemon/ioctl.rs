//! The container ioctl request, including PASID_REQUEST: run under the process's lock and
//! journaled in the store in the order it happened, with the [`Rollback`] that undoes an
//! allocation the store could not make durable.

use std::sync::Arc;

use vsva_proto::Reply;
use vsva_uapi::vfio::{
    VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_UNMAP_DMA,
};
use vsva_uapi::{decode_pasid_request, PasidRequestOp};
use vsva_vfio::Container;

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
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            reply,
            ticket: None,
            rollback: None,
        }
    }
}

/// What to undo if a change could not be made durable.
pub enum Rollback {
    /// Free a PASID just allocated.
    FreePasid {
        /// The process it was allocated to.
        process: Arc<Process>,
        /// The container it was allocated through.
        container: Arc<Container>,
        /// The PASID.
        pasid: u32,
    },
}

impl Daemon {
    pub(super) fn ioctl(
        &self,
        p: &Arc<Process>,
        handle: u32,
        cmd: u32,
        mut arg: Vec<u8>,
    ) -> Outcome {
        let mut st = lock(&p.state);
        if st.revoked {
            return revoked(p).into();
        }
        let Some(c) = st.containers.get(&handle).map(|c| c.container.clone()) else {
            return no_handle(handle).into();
        };
        if cmd == VFIO_IOMMU_MAP_DMA {
            if let Err(reply) = translate_map_dma(&st.regions, &mut arg) {
                return reply.into();
            }
        }
        if cmd != VFIO_IOMMU_PASID_REQUEST {
            drop(st);
            let r = c.ioctl(cmd, &mut arg);
            return match r {
                Ok(v) => {
                    let out = if cmd == VFIO_IOMMU_GET_INFO || cmd == VFIO_IOMMU_UNMAP_DMA {
                        arg
                    } else {
                        Vec::new()
                    };
                    Reply::ok(i64::try_from(v).unwrap_or(i64::MAX), out).into()
                }
                Err(e) => vfio_reply(&e).into(),
            };
        }
        // PASID_REQUEST: run and record under the process lock, so the log has this process's
        // changes in the order they happened.
        let op = decode_pasid_request(&arg).ok();
        match c.ioctl(cmd, &mut arg) {
            Err(e) => vfio_reply(&e).into(),
            Ok(v) => {
                let mut ticket = None;
                let mut rollback = None;
                match op {
                    Some(PasidRequestOp::Alloc { .. }) => {
                        let pasid = v as u32;
                        if !st.begun {
                            // Not waited for on its own: the Alloc record after it is, and the
                            // log is written in order.
                            let _begin = self.store.append(Record::Begin {
                                token: p.token,
                                uid: p.credentials.uid,
                                quota: st.quota(),
                                resume: p.resume,
                            });
                            st.begun = true;
                        }
                        ticket = Some(self.store.append(Record::Alloc {
                            token: p.token,
                            pasid,
                        }));
                        rollback = Some(Rollback::FreePasid {
                            process: p.clone(),
                            container: c.clone(),
                            pasid,
                        });
                    }
                    Some(PasidRequestOp::Free { min, max }) if st.begun => {
                        ticket = Some(self.store.append(Record::FreeRange {
                            token: p.token,
                            min,
                            max,
                        }));
                    }
                    _ => {}
                }
                Outcome {
                    reply: Reply::ok(i64::try_from(v).unwrap_or(i64::MAX), Vec::new()),
                    ticket,
                    rollback,
                }
            }
        }
    }

    /// Undoes a change whose record could not be made durable.
    pub fn rollback(&self, r: Rollback) {
        match r {
            Rollback::FreePasid {
                process,
                container,
                pasid,
            } => {
                let _st = lock(&process.state);
                let mut arg = match PasidRequestOp::free(pasid, pasid) {
                    Ok(op) => op.to_bytes(),
                    Err(e) => {
                        tracing::error!(pasid, error = %e, "cannot build the free that undoes an allocation");
                        debug_assert!(false, "a single-PASID free is always valid: {e}");
                        return;
                    }
                };
                if let Err(e) = container.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut arg) {
                    tracing::error!(pasid, error = %e, "cannot undo an allocation the store did not record");
                }
            }
        }
    }
}
