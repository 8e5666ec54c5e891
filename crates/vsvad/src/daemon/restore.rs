//! Restore at start: the processes the store remembers get their PASIDs back, held for them
//! for the grace period if they are still alive, released and recorded as such otherwise.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use vsva_proto::Credentials;
use vsva_vfio::{GroupId, IommuType, ProcessToken, VfioError, VfioMm};

use super::fault_view::FaultView;
use super::process::{Journal, Process};
use super::{lock, Daemon};
use crate::config::RESTORE_GROUP;
use crate::credentials;
use crate::store::{Record, StoreState};

impl Daemon {
    /// Appends `rec` and waits for it; a failure is logged (the next start redoes a release
    /// the store missed).
    fn record_now(&self, rec: Record) {
        let t = self.store.append(rec);
        if let Err(e) = self.store.wait(t) {
            tracing::error!(error = %e, "cannot record a release");
        }
    }

    /// Holds the PASIDs of each live process of `replayed` for it until the grace period
    /// ends; releases (and records as released) those of dead processes and those that
    /// cannot be given back.
    pub(super) fn restore(&self, replayed: StoreState) {
        let deadline = Instant::now() + self.settings.grace_period;
        let mut processes = lock(&self.processes);
        for (token, rec) in replayed.processes {
            let (pid, start_time) = (token.pid(), token.start_time());
            let alive = credentials::is_alive(pid, start_time);
            if !alive || self.settings.grace_period.is_zero() {
                tracing::info!(
                    pid,
                    start_time,
                    pasids = rec.pasids.len(),
                    alive,
                    "releasing the PASIDs of a process that is gone"
                );
                self.record_now(Record::End { token });
                continue;
            }
            let mm = match self.restore_pasids(token, &rec.pasids, rec.quota) {
                Ok(mm) => mm,
                Err(e) => {
                    tracing::error!(pid, error = %e, "cannot restore the PASIDs of a live process; releasing them");
                    self.record_now(Record::End { token });
                    continue;
                }
            };
            let got: BTreeSet<u32> = mm.pasids().into_iter().collect();
            for lost in rec.pasids.difference(&got) {
                tracing::warn!(
                    pid,
                    pasid = lost,
                    "a recorded PASID could not be restored (outside the configured space?)"
                );
                self.record_now(Record::FreeRange {
                    token,
                    min: *lost,
                    max: *lost,
                });
            }
            tracing::info!(
                pid,
                start_time,
                pasids = got.len(),
                grace_secs = self.settings.grace_period.as_secs(),
                "holding the PASIDs of a live process until it resumes"
            );
            let credentials = Credentials {
                pid,
                uid: rec.uid,
                gid: 0,
                start_time,
            };
            let at = self.vfio.iommu().fault_log().total();
            let mut faults = FaultView::starting_at(at);
            for &pasid in &rec.pasids {
                faults.pasid_allocated(pasid, at);
            }
            let journal = Journal {
                begun: true,
                quota: rec.quota,
                closed: false,
            };
            processes.insert(
                token,
                Arc::new(Process::new(
                    credentials,
                    rec.resume,
                    Some(mm),
                    journal,
                    faults,
                    Some(deadline),
                    self.events.queue(),
                )),
            );
        }
    }

    /// Gives `token`'s context exactly `pasids`, through a nesting container on the private
    /// restore group, and sets its quota.
    ///
    /// # Errors
    ///
    /// The context, the restore container or a quota could not be set up. The context may
    /// then hold some of `pasids` (they are freed when it is dropped), and its quota may
    /// still be unlimited.
    fn restore_pasids(
        &self,
        token: ProcessToken,
        pasids: &BTreeSet<u32>,
        quota: u32,
    ) -> Result<VfioMm, VfioError> {
        let mm = self.vfio.process_context(token)?;
        self.vfio.set_pasid_quota(token, u32::MAX)?;
        {
            let c = self.vfio.open_container(token);
            c.attach_group(GroupId(RESTORE_GROUP))?;
            c.set_iommu(IommuType::Nesting)?;
            for &p in pasids {
                match c.alloc_pasid(p, p) {
                    Ok(got) if got == p => {}
                    Ok(got) => {
                        if let Err(e) = c.free_pasids(got, got) {
                            tracing::error!(pasid = got, error = %e, "cannot give back a PASID restore did not ask for");
                            debug_assert!(false, "free of an owned PASID failed: {e}");
                        }
                    }
                    Err(e) => tracing::warn!(pasid = p, error = %e, "restore allocation failed"),
                }
            }
        }
        self.vfio.set_pasid_quota(token, quota)?;
        Ok(mm)
    }
}
