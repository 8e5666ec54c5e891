//! Which faults a process may see: only those on its own PASIDs or its own groups' devices,
//! and only from when it began owning that PASID or group. The IOMMU's fault log keeps
//! records across owners; without the ownership period, a process that attaches a group (or
//! is allocated a PASID) would read the faults of whoever had it before.
//!
//! Positions are counts of faults ever logged ([`vsva_iommu::FaultLog::total`]); the log numbers each
//! record with its position when it is appended, so a fault logged concurrently with the
//! start of an ownership period falls on the right side of it.

use std::collections::HashMap;

use vsva_iommu::Fault;

/// Where in the fault log a process's ownership of each PASID and group began.
#[derive(Debug, Default)]
pub(super) struct FaultView {
    /// Position when the process became known to the daemon.
    from: u64,
    /// Position when each PASID it owns was allocated to it.
    pasids: HashMap<u32, u64>,
    /// Position when each group it has attached was attached.
    groups: HashMap<u32, u64>,
}

impl FaultView {
    /// A view of a process that appears now, `log.total()` faults into the log.
    pub(super) fn starting_at(from: u64) -> Self {
        FaultView {
            from,
            ..FaultView::default()
        }
    }

    /// The process was allocated `pasid` with `at` faults logged.
    pub(super) fn pasid_allocated(&mut self, pasid: u32, at: u64) {
        self.pasids.insert(pasid, at);
    }

    /// The process freed its PASIDs in `[min, max]`.
    pub(super) fn pasids_freed(&mut self, min: u32, max: u32) {
        self.pasids.retain(|p, _| !(min..=max).contains(p));
    }

    /// The process attached `group` with `at` faults logged.
    pub(super) fn group_attached(&mut self, group: u32, at: u64) {
        self.groups.insert(group, at);
    }

    /// The process detached `group`.
    pub(super) fn group_detached(&mut self, group: u32) {
        self.groups.remove(&group);
    }

    /// Of `records` (numbered as the log numbers them, oldest first), those the process may
    /// see: those on a PASID in `owned` logged after it was allocated to the process, or on
    /// a device of a group it attached (`group_of` maps a source id to its group) logged
    /// after the attach.
    pub(super) fn visible(
        &self,
        records: Vec<(u64, Fault)>,
        owned: &[u32],
        group_of: impl Fn(u16) -> Option<u32>,
    ) -> Vec<(u64, Fault)> {
        records
            .into_iter()
            .filter(|(at, f)| {
                let since = |start: Option<&u64>| start.is_some_and(|s| *at > (*s).max(self.from));
                let by_pasid = f
                    .pasid
                    .is_some_and(|p| owned.contains(&p) && since(self.pasids.get(&p)));
                let by_group = group_of(f.source_id.0).is_some_and(|g| since(self.groups.get(&g)));
                by_pasid || by_group
            })
            .collect()
    }
}
