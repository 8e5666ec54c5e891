//! Page requests behind the remote back end: the daemon sends a PASID's page requests to the
//! process that bound it as `PAGE_REQUEST` events on its events channel, each naming its group
//! by a cookie; the guest's page group response goes back as `PAGE_RESPONSE` with that cookie.

use std::collections::HashMap;
use std::error::Error;

use vsva_client::{Client, Event, EventChannel};
use vsva_iommu::prq::{PageRequest, PageResponse, ResponseCode};
use vsva_iommu::{Access, SourceId};
use vsva_proto::{
    PERM_EXEC, PERM_PRIV, PERM_WRITE, PGFAULT_LAST_PAGE, PGFAULT_PASID_VALID, RESP_FAILURE,
    RESP_INVALID, RESP_SUCCESS,
};

use super::BackendError;
use crate::page_source::PageRequestSource;

/// A page request group as the device raised it: (host requester id, PASID, group index).
type GroupKey = (SourceId, Option<u32>, u16);

/// The [`PageRequestSource`] of a VMM behind `vsvad`: the process's events channel (read
/// without blocking, so [`crate::Viommu::poll`] never waits) and a connection of the same
/// process for the responses. Made by [`super::RemoteBackend::page_requests`].
///
/// The events channel is the process's only one: a process that holds it here cannot also be
/// a device (`vsva_client::DeviceHandle`) of the same daemon.
#[derive(Debug)]
pub struct RemotePageRequests {
    events: EventChannel,
    client: Client,
    /// The cookie of each group waiting for the guest's response.
    cookies: HashMap<GroupKey, u32>,
}

/// The request an event carries, with its group's key and cookie.
fn page_request(r: &vsva_proto::PageRequest) -> Option<(PageRequest, u32)> {
    let source_id = SourceId(u16::try_from(r.dev_id).ok()?);
    let req = PageRequest {
        source_id,
        pasid: (r.flags & PGFAULT_PASID_VALID != 0).then_some(r.pasid),
        addr: r.addr,
        access: Access {
            write: r.perm & PERM_WRITE != 0,
            execute: r.perm & PERM_EXEC != 0,
            privileged: r.perm & PERM_PRIV != 0,
        },
        group: u16::try_from(r.grpid & 0x1ff).ok()?,
        last: r.flags & PGFAULT_LAST_PAGE != 0,
    };
    Some((req, r.cookie))
}

impl RemotePageRequests {
    /// The source over `events` (the process's channel) answering through `client` (a
    /// connection of the same process).
    ///
    /// # Errors
    ///
    /// The channel's socket cannot be made non-blocking; nothing is changed then.
    pub fn new(events: EventChannel, client: Client) -> Result<Self, BackendError> {
        events.socket().set_nonblocking(true).map_err(|e| {
            BackendError::from(vsva_client::ClientError::Io {
                what: "cannot make the events channel non-blocking".into(),
                source: e,
            })
        })?;
        Ok(RemotePageRequests {
            events,
            client,
            cookies: HashMap::new(),
        })
    }

    /// Groups raised and not answered yet.
    pub fn pending(&self) -> usize {
        self.cookies.len()
    }
}

impl PageRequestSource for RemotePageRequests {
    /// Every page request event already on the channel, oldest first. Invalidation events
    /// (this process holds no device TLB of its own) are acknowledged at once; other events
    /// are for other readers (faults come through `Backend::take_faults`) and are dropped.
    fn take(&mut self) -> Vec<PageRequest> {
        let mut out = Vec::new();
        loop {
            let ev = match self.events.next_timeout(None) {
                Ok(Some((seq, ev))) => (seq, ev),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "events channel failed: no more page requests");
                    break;
                }
            };
            match ev {
                (_, Event::PageRequest(r)) => match page_request(&r) {
                    Some((req, cookie)) => {
                        self.cookies
                            .insert((req.source_id, req.pasid, req.group), cookie);
                        out.push(req);
                    }
                    None => tracing::warn!(?r, "page request event out of range: dropped"),
                },
                (seq, Event::Invalidate(_)) => {
                    if let Err(e) = self.events.ack(seq) {
                        tracing::warn!(seq, error = %e, "cannot acknowledge an invalidation");
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn respond(&mut self, resp: PageResponse) -> Result<(), Box<dyn Error + Send + Sync>> {
        let key = (resp.source_id, resp.pasid, resp.group);
        let cookie = self.cookies.get(&key).copied().ok_or_else(|| {
            format!(
                "no page request group {} of {:?} PASID {:?} is waiting",
                resp.group, resp.source_id, resp.pasid
            )
        })?;
        let code = match resp.code {
            ResponseCode::Success => RESP_SUCCESS,
            ResponseCode::InvalidRequest => RESP_INVALID,
            ResponseCode::Failure => RESP_FAILURE,
        };
        self.client.page_response(cookie, code)?;
        self.cookies.remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(flags: u32, perm: u32) -> vsva_proto::PageRequest {
        vsva_proto::PageRequest {
            flags,
            dev_id: 0x0100,
            pasid: 7,
            grpid: 0x1ff,
            perm,
            addr: 0x7f00_0020_0000,
            length: 4096,
            cookie: 42,
        }
    }

    #[test]
    fn an_event_becomes_the_request_the_device_raised() {
        let (req, cookie) = page_request(&event(
            PGFAULT_PASID_VALID | PGFAULT_LAST_PAGE,
            PERM_WRITE | PERM_EXEC | PERM_PRIV,
        ))
        .unwrap();
        assert_eq!(cookie, 42);
        assert_eq!(req.source_id, SourceId(0x0100));
        assert_eq!((req.pasid, req.group, req.last), (Some(7), 0x1ff, true));
        assert!(req.access.write && req.access.execute && req.access.privileged);
        let (req, _) = page_request(&event(0, 0)).unwrap();
        assert_eq!((req.pasid, req.last), (None, false), "no PASID, not last");
        assert_eq!(req.access, Access::default(), "a read");
        let mut wide = event(0, 0);
        wide.dev_id = 0x1_0000;
        assert!(page_request(&wide).is_none(), "no such requester id");
    }
}
