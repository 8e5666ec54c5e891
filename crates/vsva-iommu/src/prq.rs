//! The recoverable page-request path: devices post page requests (PCIe PRI), software reads
//! them and answers with page-group responses, which the device collects.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use vsva_uapi::Errno;

use crate::fault::{Access, SourceId};

/// A page request from a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Requesting device.
    pub source_id: SourceId,
    /// PASID, if the request carried one.
    pub pasid: Option<u32>,
    /// Page address (low 12 bits ignored).
    pub addr: u64,
    /// Access wanted.
    pub access: Access,
    /// Page request group index (9 bits).
    pub group: u16,
    /// Last request of the group: a response is expected for it.
    pub last: bool,
}

/// Response code of a page-group response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCode {
    /// The pages are now mapped; retry the translation.
    Success,
    /// The request is invalid; do not retry.
    InvalidRequest,
    /// A failure; the device should stop issuing page requests.
    Failure,
}

/// A page-group response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageResponse {
    /// Device the response goes to.
    pub source_id: SourceId,
    /// PASID of the group.
    pub pasid: Option<u32>,
    /// Group index.
    pub group: u16,
    /// Outcome.
    pub code: ResponseCode,
}

/// Page-request errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PrqError {
    /// The queue is full; the request is dropped (the device sees an automatic failure).
    #[error("page request queue full ({capacity} entries), request from {source_id} dropped")]
    Full {
        /// Requester.
        source_id: SourceId,
        /// How many requests the queue holds.
        capacity: usize,
    },
    /// The device's context entry does not enable page requests (PRE clear) or it is not
    /// attached.
    #[error("page requests not enabled for {source_id}")]
    NotEnabled {
        /// Requester.
        source_id: SourceId,
    },
    /// A response for a group with no outstanding last request.
    #[error("no outstanding page request group {group} (pasid {pasid:?}) for {source_id}")]
    NoSuchGroup {
        /// Device.
        source_id: SourceId,
        /// The PASID of the response (`None` for a request without PASID).
        pasid: Option<u32>,
        /// The page-request group index answered.
        group: u16,
    },
}

impl PrqError {
    /// The errno a uAPI caller sees: `EINVAL`.
    pub fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

/// Bounded queue of page requests plus outstanding groups and delivered responses.
#[derive(Debug)]
pub struct PageRequestQueue {
    capacity: usize,
    inner: Mutex<PrqState>,
}

#[derive(Debug, Default)]
struct PrqState {
    queue: VecDeque<PageRequest>,
    outstanding: HashMap<(SourceId, Option<u32>, u16), u32>,
    responses: HashMap<SourceId, Vec<PageResponse>>,
}

impl PageRequestQueue {
    /// A queue of `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(PrqState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PrqState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request (the caller has checked the device may send it).
    pub fn push(&self, req: PageRequest) -> Result<(), PrqError> {
        let mut st = self.state();
        if st.queue.len() >= self.capacity {
            return Err(PrqError::Full {
                source_id: req.source_id,
                capacity: self.capacity,
            });
        }
        if req.last {
            *st.outstanding
                .entry((req.source_id, req.pasid, req.group & 0x1ff))
                .or_default() += 1;
        }
        st.queue.push_back(req);
        Ok(())
    }

    /// Takes every queued request, oldest first.
    pub fn take_requests(&self) -> Vec<PageRequest> {
        self.state().queue.drain(..).collect()
    }

    /// Number of queued requests.
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    /// True when no request is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accepts a response for an outstanding group and delivers it to the device.
    pub fn respond(&self, resp: PageResponse) -> Result<(), PrqError> {
        self.accept_response(&resp)?;
        self.deliver(resp);
        Ok(())
    }

    /// Matches a response to an outstanding group (which it then no longer is), without
    /// delivering it.
    ///
    /// # Errors
    ///
    /// [`PrqError::NoSuchGroup`]: no such group is outstanding; nothing changes.
    pub fn accept_response(&self, resp: &PageResponse) -> Result<(), PrqError> {
        let mut st = self.state();
        let key = (resp.source_id, resp.pasid, resp.group & 0x1ff);
        match st.outstanding.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    st.outstanding.remove(&key);
                }
            }
            _ => {
                return Err(PrqError::NoSuchGroup {
                    source_id: resp.source_id,
                    pasid: resp.pasid,
                    group: resp.group,
                })
            }
        }
        Ok(())
    }

    /// Queues a response for its device to collect with [`PageRequestQueue::take_responses`].
    pub fn deliver(&self, resp: PageResponse) {
        self.state()
            .responses
            .entry(resp.source_id)
            .or_default()
            .push(resp);
    }

    /// The responses delivered to a device since its last call.
    pub fn take_responses(&self, source_id: SourceId) -> Vec<PageResponse> {
        self.state()
            .responses
            .remove(&source_id)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(group: u16, last: bool) -> PageRequest {
        PageRequest {
            source_id: SourceId::new(0, 1, 0),
            pasid: Some(3),
            addr: 0x1000,
            access: Access::WRITE,
            group,
            last,
        }
    }

    #[test]
    fn requests_queue_and_responses_match_groups() {
        let q = PageRequestQueue::new(2);
        q.push(req(1, false)).unwrap();
        q.push(req(1, true)).unwrap();
        assert!(matches!(
            q.push(req(2, true)),
            Err(PrqError::Full { capacity: 2, .. })
        ));
        assert_eq!(q.take_requests().len(), 2);
        assert!(q.is_empty());
        let resp = PageResponse {
            source_id: SourceId::new(0, 1, 0),
            pasid: Some(3),
            group: 1,
            code: ResponseCode::Success,
        };
        q.respond(resp).unwrap();
        assert!(matches!(
            q.respond(resp),
            Err(PrqError::NoSuchGroup { group: 1, .. })
        ));
        assert_eq!(q.take_responses(SourceId::new(0, 1, 0)), vec![resp]);
        assert!(q.take_responses(SourceId::new(0, 1, 0)).is_empty());
    }
}
