//! A fault queue's contents: page-request groups turned into `iommu_hwpt_pgfault` records,
//! first waiting to be read, then (with a cookie) waiting for their response — the two
//! stages of iommufd's fault fd (`eventq.c`: `deliver` list, then the `response` xarray).

use std::collections::{BTreeMap, HashMap, VecDeque};

use vsva_iommu::prq::PageRequest;
use vsva_iommu::SourceId;
use vsva_uapi::iommufd::{
    IommuHwptPgfault, IOMMU_PGFAULT_FLAGS_LAST_PAGE, IOMMU_PGFAULT_FLAGS_PASID_VALID,
    IOMMU_PGFAULT_PERM_EXEC, IOMMU_PGFAULT_PERM_PRIV, IOMMU_PGFAULT_PERM_READ,
    IOMMU_PGFAULT_PERM_WRITE,
};

/// A complete page-request group: who asked, and its records in arrival order (the last one
/// carries `LAST_PAGE`).
#[derive(Debug, Clone)]
pub(crate) struct FaultGroup {
    pub(crate) sid: SourceId,
    pub(crate) pasid: Option<u32>,
    pub(crate) grpid: u16,
    pub(crate) records: Vec<IommuHwptPgfault>,
}

/// Key of a group still being assembled.
type GroupKey = (SourceId, Option<u32>, u16);

/// One fault queue.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    partial: HashMap<GroupKey, Vec<IommuHwptPgfault>>,
    unread: VecDeque<FaultGroup>,
    awaiting: BTreeMap<u32, FaultGroup>,
}

/// The record of one page request from device `dev_id` (cookie filled in when read).
fn record(dev_id: u32, req: &PageRequest) -> IommuHwptPgfault {
    let mut flags = 0;
    if req.pasid.is_some() {
        flags |= IOMMU_PGFAULT_FLAGS_PASID_VALID;
    }
    if req.last {
        flags |= IOMMU_PGFAULT_FLAGS_LAST_PAGE;
    }
    let a = req.access;
    let mut perm = IOMMU_PGFAULT_PERM_READ;
    if a.write {
        perm |= IOMMU_PGFAULT_PERM_WRITE;
    }
    if a.execute {
        perm |= IOMMU_PGFAULT_PERM_EXEC;
    }
    if a.privileged {
        perm |= IOMMU_PGFAULT_PERM_PRIV;
    }
    IommuHwptPgfault {
        flags,
        dev_id,
        pasid: req.pasid.unwrap_or(0),
        grpid: u32::from(req.group),
        perm,
        reserved: 0,
        addr: req.addr & !0xfff,
        length: 0,
        cookie: 0,
    }
}

impl FaultQueue {
    /// Adds a page request of device `dev_id`; the group becomes readable with its last
    /// request, as the IOMMU core hands complete groups to iommufd.
    pub(crate) fn push(&mut self, dev_id: u32, req: &PageRequest) {
        let key = (req.source_id, req.pasid, req.group);
        let rec = record(dev_id, req);
        if !req.last {
            self.partial.entry(key).or_default().push(rec);
            return;
        }
        let mut records = self.partial.remove(&key).unwrap_or_default();
        records.push(rec);
        self.unread.push_back(FaultGroup {
            sid: req.source_id,
            pasid: req.pasid,
            grpid: req.group,
            records,
        });
    }

    /// Reads whole groups, oldest first, while they fit in `max` records (a group that does
    /// not fit stays queued). Each group read gets a cookie, the lowest free from 1, in every
    /// record, and waits for its response.
    pub(crate) fn read(&mut self, max: usize) -> Vec<IommuHwptPgfault> {
        let mut out = Vec::new();
        while let Some(group) = self.unread.front() {
            if out.len() + group.records.len() > max {
                break;
            }
            let mut group = self.unread.pop_front().expect("front exists");
            let cookie = self.free_cookie();
            for r in &mut group.records {
                r.cookie = cookie;
                out.push(*r);
            }
            self.awaiting.insert(cookie, group);
        }
        out
    }

    fn free_cookie(&self) -> u32 {
        let mut cookie = 1u32;
        for &used in self.awaiting.keys() {
            if used != cookie {
                break;
            }
            cookie += 1;
        }
        cookie
    }

    /// Whether `cookie` names a group waiting for its response.
    pub(crate) fn is_awaiting(&self, cookie: u32) -> bool {
        self.awaiting.contains_key(&cookie)
    }

    /// Takes the group a response with `cookie` answers.
    pub(crate) fn take_awaiting(&mut self, cookie: u32) -> Option<FaultGroup> {
        self.awaiting.remove(&cookie)
    }

    /// Takes every complete group of `sid` (and `pasid`, or every PASID with `None`), read
    /// or not, so they can be answered on detach; incomplete ones are dropped.
    pub(crate) fn take_device(
        &mut self,
        sid: SourceId,
        pasid: Option<Option<u32>>,
    ) -> Vec<FaultGroup> {
        let hit = |g_sid: SourceId, g_pasid: Option<u32>| {
            g_sid == sid && pasid.is_none_or(|p| p == g_pasid)
        };
        self.partial.retain(|&(s, p, _), _| !hit(s, p));
        let mut out = Vec::new();
        let unread = std::mem::take(&mut self.unread);
        for g in unread {
            if hit(g.sid, g.pasid) {
                out.push(g);
            } else {
                self.unread.push_back(g);
            }
        }
        let cookies: Vec<u32> = self
            .awaiting
            .iter()
            .filter(|(_, g)| hit(g.sid, g.pasid))
            .map(|(&c, _)| c)
            .collect();
        out.extend(cookies.iter().filter_map(|c| self.awaiting.remove(c)));
        out
    }

    /// Takes every complete group (the queue is going away).
    pub(crate) fn take_all(&mut self) -> Vec<FaultGroup> {
        self.partial.clear();
        let mut out: Vec<FaultGroup> = self.unread.drain(..).collect();
        out.extend(std::mem::take(&mut self.awaiting).into_values());
        out
    }

    /// Groups not read yet, and groups read and waiting for a response.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.unread.len(), self.awaiting.len())
    }
}
