//! Reports: daemon status, per-process sets, recent faults, and the gauges the metrics page
//! reads. Every count of what a process owns and may own comes from [`Daemon::usage`].

use std::sync::Arc;

use vsva_iommu::Fault;
use vsva_proto::{
    DeviceInfo, Errno, FaultRecord, FaultsReply, FaultsSinceReply, Kind, NestingRefusal,
    NumberedFault, Reply, SetEntry, SetState, SetsReply, StatusReply,
};

use super::device::fault_record;
use super::process::{Process, Session};
use super::{lock, Daemon, SERVER};
use crate::config::Durability;
use crate::metrics::Gauges;

/// Most fault records one `FAULTS` or `FAULTS_SINCE` reply carries.
const MAX_FAULTS_PER_REPLY: u32 = 4096;

/// What one process owns and may own, at one moment.
struct Usage {
    pid: u32,
    uid: u32,
    owned: u32,
    quota: u32,
    /// Held for the process since a restart (it has not resumed yet).
    held: bool,
}

impl Daemon {
    /// Every process the daemon knows, by registry order.
    fn processes(&self) -> Vec<Arc<Process>> {
        lock(&self.processes).values().cloned().collect()
    }

    /// What each process owns and may own.
    fn usage(&self) -> Vec<Usage> {
        self.processes()
            .iter()
            .map(|p| {
                let st = lock(&p.state);
                Usage {
                    pid: p.token.pid(),
                    uid: p.credentials.uid,
                    owned: st.owned(),
                    quota: p.quota(&st),
                    held: st.is_held(),
                }
            })
            .collect()
    }

    /// PASIDs held for processes that have not resumed since a restart.
    fn held(usage: &[Usage]) -> u64 {
        usage
            .iter()
            .filter(|u| u.held)
            .map(|u| u64::from(u.owned))
            .sum()
    }

    /// PASIDs owned by processes (the space's count less the host's own, e.g. mdev defaults).
    fn allocated_to_processes(&self, space_allocated: u64) -> u64 {
        let host: u64 = self
            .vfio
            .pasid_space()
            .sets()
            .iter()
            .filter(|s| s.token == 0)
            .map(|s| u64::from(s.owned))
            .sum();
        space_allocated.saturating_sub(host)
    }

    pub(super) fn status(&self) -> Reply {
        let stats = self.vfio.pasid_space().stats();
        let io = self.vfio.iommu().stats();
        let usage = self.usage();
        let devices = self
            .settings
            .devices
            .iter()
            .map(|d| DeviceInfo {
                source_id: d.source_id.0,
                group: d.group.unwrap_or(u32::MAX),
                pasid_width: d.pasid_width,
                name: format!("0000:{}", d.source_id),
            })
            .collect();
        let status = StatusReply {
            server: SERVER.to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            instance: self.instance,
            pasid_bits: stats.pasid_bits,
            capacity: stats.capacity,
            allocated: self.allocated_to_processes(stats.allocated),
            freeing: stats.freeing,
            processes: usage.len() as u32,
            held: Self::held(&usage) as u32,
            connections: self.connections() as u32,
            default_quota: self.settings.pasid_quota,
            durable: self.store.mode() != Durability::Off,
            iotlb_hits: io.iotlb_hits,
            iotlb_misses: io.iotlb_misses,
            faults: self.vfio.iommu().fault_log().total(),
            devices,
            nesting_refusals: self
                .vfio
                .refusals()
                .iter()
                .map(|(op, reason, count)| NestingRefusal {
                    op: op.label().into(),
                    reason: reason.label().into(),
                    count,
                })
                .collect(),
            requests: self.metrics.requests_total(),
            translations: io.translations,
            store_commits: self.metrics.store_commits(),
            page_requests: self.metrics.requests_of(Kind::PageRequest)
                + self.page_requests_raised(),
            page_requests_pending: self
                .settings
                .devices
                .iter()
                .map(|d| self.vfio.outstanding_page_requests(d.source_id))
                .sum(),
        };
        Reply::ok(0, status.encode())
    }

    fn set_entry(p: &Process) -> SetEntry {
        let st = lock(&p.state);
        SetEntry {
            credentials: p.credentials,
            state: if st.is_held() {
                SetState::Held
            } else {
                SetState::Live
            },
            connections: st.connections,
            quota: p.quota(&st),
            pasids: st.pasids(),
            command: p.command.clone(),
        }
    }

    /// Every process's set for an admin, the caller's own otherwise.
    pub(super) fn sets(&self, s: &Session) -> Reply {
        let mut sets: Vec<SetEntry> = if s.admin {
            self.processes()
                .iter()
                .map(|p| Self::set_entry(p))
                .collect()
        } else {
            s.process.iter().map(|p| Self::set_entry(p)).collect()
        };
        sets.sort_by_key(|e| (e.credentials.pid, e.credentials.start_time));
        Reply::ok(sets.len() as i64, SetsReply { sets }.encode())
    }

    /// Of `records` (numbered, oldest first), those the session may see: all of them for an
    /// admin; otherwise those on the caller's PASIDs or its groups' devices logged since it
    /// began owning them (see [`super::fault_view`]).
    fn visible_faults(&self, s: &Session, records: Vec<(u64, Fault)>) -> Vec<(u64, Fault)> {
        if s.admin {
            return records;
        }
        let Some(p) = &s.process else {
            return Vec::new();
        };
        let st = lock(&p.state);
        // Source id -> group, for the groups the process has attached now.
        let mut attached = Vec::new();
        for c in st.containers.values() {
            for g in c.container.groups() {
                attached.extend(
                    self.settings
                        .devices
                        .iter()
                        .filter(|d| d.group == Some(g.0))
                        .map(|d| (d.source_id.0, g.0)),
                );
            }
        }
        let owned = st.pasids();
        drop(st);
        lock(&p.faults).visible(records, &owned, |sid| {
            attached.iter().find(|(s, _)| *s == sid).map(|(_, g)| *g)
        })
    }

    /// The most recent faults the session may see (at most `max`, capped at
    /// [`MAX_FAULTS_PER_REPLY`]), oldest first.
    pub(super) fn faults(&self, s: &Session, max: u32) -> Reply {
        let log = self.vfio.iommu().fault_log();
        let records = self.visible_faults(s, log.numbered_records());
        let keep = max.min(MAX_FAULTS_PER_REPLY) as usize;
        let skip = records.len().saturating_sub(keep);
        let faults: Vec<FaultRecord> = records[skip..]
            .iter()
            .map(|(_, f)| fault_record(f))
            .collect();
        Reply::ok(
            faults.len() as i64,
            FaultsReply {
                total: log.total(),
                dropped: log.dropped(),
                faults,
            }
            .encode(),
        )
    }

    /// The faults the session may see numbered above `since`, oldest first, at most `max`
    /// (capped at [`MAX_FAULTS_PER_REPLY`]), with the cursor for the next call: the number of
    /// the last record covered, so a reader that passes it back gets every record once,
    /// however alike two records are. A `since` above the newest record's number is `EINVAL`
    /// (a cursor from before a restart: the log starts again at 1).
    pub(super) fn faults_since(&self, s: &Session, since: u64, max: u32) -> Reply {
        let after = self.vfio.iommu().fault_log().after(since);
        if since > after.newest {
            return Reply::error(
                Errno::EINVAL,
                format!(
                    "faults_since: since {since} is past the newest fault record ({}); the daemon \
                     may have restarted: start again from 0",
                    after.newest
                ),
            );
        }
        let keep = max.min(MAX_FAULTS_PER_REPLY) as usize;
        let visible = self.visible_faults(s, after.records);
        let (taken, next) = match visible.get(keep) {
            // Left out by `max`: the cursor stops before the first record not returned.
            Some(&(first_left, _)) => (&visible[..keep], first_left - 1),
            None => (&visible[..], after.newest),
        };
        let faults: Vec<NumberedFault> = taken
            .iter()
            .map(|(number, f)| NumberedFault {
                number: *number,
                record: fault_record(f),
            })
            .collect();
        Reply::ok(
            faults.len() as i64,
            FaultsSinceReply {
                next,
                missed: after.missed,
                faults,
            }
            .encode(),
        )
    }

    /// The values the metrics page reads from the daemon.
    pub fn gauges(&self) -> Gauges {
        let stats = self.vfio.pasid_space().stats();
        let io = self.vfio.iommu().stats();
        let log = self.vfio.iommu().fault_log();
        let usage = self.usage();
        let mut processes: Vec<(u32, u32, u32, u32)> = usage
            .iter()
            .map(|u| (u.pid, u.uid, u.owned, u.quota))
            .collect();
        processes.sort();
        Gauges {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            capacity: stats.capacity.into(),
            allocated: self.allocated_to_processes(stats.allocated),
            freeing: stats.freeing,
            held: Self::held(&usage),
            connections: self.connections() as u64,
            processes,
            iotlb_hits: io.iotlb_hits,
            iotlb_misses: io.iotlb_misses,
            translations: io.translations,
            faults: log.total(),
            faults_dropped: log.dropped(),
            nesting_refusals: self
                .vfio
                .refusals()
                .iter()
                .map(|(op, reason, count)| (op.label(), reason.label(), count))
                .collect(),
        }
    }
}
