//! One reading of the daemon (status, sets, recent faults) and the rates between two readings.

use vsva_client::{Client, SetEntry, SetState, Status};
use vsva_proto::FaultRecord;

use crate::common::CliError;

/// How many recent faults a reading asks for.
pub(super) const RECENT_FAULTS: u32 = 8;

/// What the daemon said at one moment.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    /// When it was taken.
    pub(super) at: std::time::Instant,
    /// The status payload.
    pub(super) status: Status,
    /// Every process's set (every process for an admin, the caller's own otherwise).
    pub(super) sets: Vec<SetEntry>,
    /// The most recent faults, oldest first.
    pub(super) faults: Vec<FaultRecord>,
}

impl Sample {
    /// Asks the daemon for a reading: three requests on `client`.
    pub(super) fn take(client: &mut Client) -> Result<Sample, CliError> {
        let status = client.status()?;
        let sets = client.sets()?;
        let faults = client.faults(RECENT_FAULTS)?.faults;
        Ok(Sample {
            at: std::time::Instant::now(),
            status,
            sets,
            faults,
        })
    }
}

/// Per-second rates between two readings of the same daemon instance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Rates {
    /// Requests answered per second.
    pub(super) requests: f64,
    /// DMA translations per second.
    pub(super) translations: f64,
    /// IOTLB hits among the lookups of the interval, 0..=1 (`None`: no lookups).
    pub(super) iotlb_hit: Option<f64>,
    /// DMA faults per second.
    pub(super) faults: f64,
    /// Store group commits per second.
    pub(super) commits: f64,
    /// Page requests raised per second.
    pub(super) page_requests: f64,
}

impl Rates {
    /// The rates from `prev` to `cur`; `None` when there is no earlier reading of the same
    /// daemon instance (the first reading, or a daemon restarted in between, whose counters
    /// started again from zero).
    pub(super) fn between(prev: Option<&Sample>, cur: &Sample) -> Option<Rates> {
        let prev = prev?;
        let (p, c) = (&prev.status, &cur.status);
        if p.instance != c.instance {
            return None;
        }
        let secs = cur.at.saturating_duration_since(prev.at).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let hits = c.iotlb_hits.saturating_sub(p.iotlb_hits);
        let lookups = hits + c.iotlb_misses.saturating_sub(p.iotlb_misses);
        Some(Rates {
            requests: per_sec(p.requests, c.requests),
            translations: per_sec(p.translations, c.translations),
            iotlb_hit: (lookups > 0).then(|| hits as f64 / lookups as f64),
            faults: per_sec(p.faults, c.faults),
            commits: per_sec(p.store_commits, c.store_commits),
            page_requests: per_sec(p.page_requests, c.page_requests),
        })
    }
}

/// One process's row: pid, command, PASIDs owned, quota, and whether it is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcessRow {
    pub(super) pid: u32,
    pub(super) command: String,
    pub(super) owned: usize,
    pub(super) quota: u32,
    pub(super) connections: u32,
    pub(super) held: bool,
}

/// The process rows of a reading, most PASIDs first (then by pid).
pub(super) fn process_rows(sets: &[SetEntry]) -> Vec<ProcessRow> {
    let mut rows: Vec<ProcessRow> = sets
        .iter()
        .map(|s| ProcessRow {
            pid: s.credentials.pid,
            command: s.command.clone(),
            owned: s.pasids.len(),
            quota: s.quota,
            connections: s.connections,
            held: s.state == SetState::Held,
        })
        .collect();
    rows.sort_by(|a, b| b.owned.cmp(&a.owned).then(a.pid.cmp(&b.pid)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn status(instance: u64, requests: u64, hits: u64, misses: u64) -> Status {
        Status {
            server: "vsvad".into(),
            uptime_ms: 0,
            instance,
            pasid_bits: 20,
            capacity: (1 << 20) - 1,
            allocated: 0,
            freeing: 0,
            processes: 0,
            held: 0,
            connections: 0,
            default_quota: 1000,
            durable: false,
            iotlb_hits: hits,
            iotlb_misses: misses,
            faults: requests / 10,
            devices: vec![],
            nesting_refusals: vec![],
            requests,
            translations: hits + misses,
            store_commits: requests / 2,
            page_requests: requests / 4,
            page_requests_pending: 0,
        }
    }

    fn sample(at: Instant, s: Status) -> Sample {
        Sample {
            at,
            status: s,
            sets: vec![],
            faults: vec![],
        }
    }

    #[test]
    fn rates_are_per_second_over_the_interval() {
        let t0 = Instant::now();
        let a = sample(t0, status(7, 100, 30, 10));
        let b = sample(t0 + Duration::from_secs(2), status(7, 300, 60, 20));
        let r = Rates::between(Some(&a), &b).unwrap();
        assert_eq!(r.requests, 100.0);
        assert_eq!(r.translations, 20.0);
        assert_eq!(r.iotlb_hit, Some(0.75));
        assert_eq!(r.faults, 10.0);
        assert_eq!(r.commits, 50.0);
        assert_eq!(r.page_requests, 25.0);
    }

    #[test]
    fn no_rates_without_an_earlier_reading_of_the_same_daemon() {
        let t0 = Instant::now();
        let a = sample(t0, status(7, 100, 0, 0));
        let restarted = sample(t0 + Duration::from_secs(1), status(8, 5, 0, 0));
        assert_eq!(Rates::between(None, &a), None);
        assert_eq!(Rates::between(Some(&a), &restarted), None);
        let idle = sample(t0 + Duration::from_secs(1), status(7, 100, 0, 0));
        assert_eq!(Rates::between(Some(&a), &idle).unwrap().iotlb_hit, None);
    }
}
