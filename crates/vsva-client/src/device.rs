//! The device side: a device-emulation process acting as a device another process handed
//! it ([`Client::grant_device`] → [`DeviceHandle::open`]), with its own device TLB (ATS),
//! DMA straight into the owner's guest memory on hits, page requests (PRI) on misses the
//! PASID's owner can fix, and invalidations applied and acknowledged on a thread of its own.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, VolatileMemory,
};
use vsva_iommu::{Access, Atc, Perms, Translation};
use vsva_proto::{
    AtsAnswer, AtsRequest, DeviceOpened, FaultRecord, Kind, ProtoError, RaisedPage, Request,
    ResponseTranslation, ATS_EXEC, ATS_READ, ATS_USER, ATS_WRITE, DEVICE_TOKEN_LEN,
    PAGE_REQUEST_LAST, PAGE_REQUEST_PASID, PERM_EXEC, PERM_PRIV, PERM_READ, PERM_WRITE,
    RESP_SUCCESS,
};

use crate::connection::{Client, Options};
use crate::device_events::{lock, serve_events, Shared};
use crate::devices::dma_flags;
use crate::error::ClientError;

/// Extended capability id of PCIe ATS.
const CAP_ATS: u16 = 0x000F;
/// Extended capability id of PCIe PRI.
const CAP_PRI: u16 = 0x0013;

fn proto_err(kind: Kind, why: &'static str, value: u64) -> ClientError {
    ClientError::Protocol {
        kind,
        error: ProtoError::BadValue {
            message: "device",
            field: "reply",
            value,
            why,
        },
    }
}

/// How a [`DeviceHandle`] behaves.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Translations the device TLB holds (default 256).
    pub atc_entries: usize,
    /// How long a DMA waits for the owner's page response (default 10 s).
    pub page_response_timeout: Duration,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            atc_entries: 256,
            page_response_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters of a device handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    /// Device TLB hits.
    pub hits: u64,
    /// Device TLB misses (translation requests sent).
    pub misses: u64,
    /// Invalidations applied and acknowledged.
    pub invalidations: u64,
    /// Page requests raised.
    pub page_requests: u64,
}

/// One device, driven by this process: translations cached in its own device TLB, DMA in
/// the shared guest memory with no daemon call on a hit.
///
/// It opens the process's events channel (one per process), so a process drives one
/// device handle at a time and does not use the channel otherwise.
pub struct DeviceHandle {
    client: Client,
    source_id: u16,
    shared: Arc<Shared>,
    memory: GuestMemoryMmap,
    /// ATS is on: translations are cached; off, DMA goes through the daemon.
    ats: bool,
    /// PRI is on: a miss the owner can fix becomes a page request.
    pri: bool,
    options: DeviceOptions,
    next_group: u16,
    page_requests: u64,
    events: Option<JoinHandle<()>>,
    channel: UnixStream,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHandle")
            .field("source_id", &self.source_id)
            .field("ats", &self.ats)
            .field("pri", &self.pri)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Grants device `source_id` (which this process drives) to another process: the token
    /// lets its holder act as that device, and nothing more, until [`Client::revoke_device`]
    /// or this process's end.
    ///
    /// # Errors
    ///
    /// `EPERM` if this process does not drive the device.
    pub fn grant_device(&mut self, source_id: u16) -> Result<[u8; DEVICE_TOKEN_LEN], ClientError> {
        let r = self.call(Request::DeviceGrant { source_id })?;
        r.payload.as_slice().try_into().map_err(|_| {
            proto_err(
                Kind::DeviceGrant,
                "a token is 16 bytes",
                r.payload.len() as u64,
            )
        })
    }

    /// Ends every grant of device `source_id`; returns how many ended. Each holder gets a
    /// `DEVICE_REVOKED` event and `ENODEV` from then on.
    ///
    /// # Errors
    ///
    /// `EPERM` if this process does not drive the device.
    pub fn revoke_device(&mut self, source_id: u16) -> Result<u32, ClientError> {
        Ok(self.call(Request::DeviceRevoke { source_id })?.result as u32)
    }

    /// Answers the page-request group named by `cookie` (from a `PAGE_REQUEST` event) with
    /// `code` (`RESP_SUCCESS`, `RESP_INVALID`, `RESP_FAILURE`).
    ///
    /// # Errors
    ///
    /// `EINVAL` when no such group is pending for this process; nothing changes then.
    pub fn page_response(&mut self, cookie: u32, code: u32) -> Result<(), ClientError> {
        self.call(Request::PageResponse { cookie, code })?;
        Ok(())
    }
}

impl DeviceHandle {
    /// Connects with `options`, opens the process's events channel, takes the grant `token`
    /// names, and maps the owner's guest memory it receives.
    ///
    /// The device's ATS (0x000F) and PRI (0x0013) capabilities are read from its
    /// configuration space: a capability present with its Enable bit clear turns the feature
    /// off (ATS off: DMA goes through the daemon, `DEVICE_DMA`). Where the configuration
    /// space has no such capability, the IOMMU's answers decide (a device whose context entry
    /// does not enable ATS gets `EOPNOTSUPP`, and the handle falls back to the daemon).
    ///
    /// # Errors
    ///
    /// The connection, the channel, the grant (`EACCES` unknown token, `EBUSY` held by
    /// another process) or a mapping failed; nothing stays open then.
    pub fn open(
        options: Options,
        token: [u8; DEVICE_TOKEN_LEN],
        dev: DeviceOptions,
    ) -> Result<DeviceHandle, ClientError> {
        let mut client = Client::connect(options)?;
        let channel = client.open_events()?;
        let (reply, fds) = client.call_for_fds(Request::DeviceOpen { token })?;
        let opened =
            DeviceOpened::decode(&reply.payload).map_err(|error| ClientError::Protocol {
                kind: Kind::DeviceOpen,
                error,
            })?;
        if fds.len() != opened.regions.len() {
            return Err(proto_err(
                Kind::DeviceOpen,
                "one descriptor per region",
                fds.len() as u64,
            ));
        }
        let mut regions = Vec::new();
        for (r, fd) in opened.regions.iter().zip(fds) {
            let len = usize::try_from(r.size)
                .map_err(|_| proto_err(Kind::DeviceOpen, "region too large", r.size))?;
            let region = GuestRegionMmap::from_range(
                GuestAddress(r.host_addr),
                len,
                Some(FileOffset::new(File::from(fd), r.offset)),
            )
            .map_err(|e| ClientError::Io {
                what: format!("cannot map a region of the owner's memory: {e}"),
                source: std::io::Error::other(e.to_string()),
            })?;
            regions.push(region);
        }
        let memory = GuestMemoryMmap::from_regions(regions).map_err(|e| ClientError::Io {
            what: format!("the owner's regions overlap: {e}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        let sid = opened.source_id;
        let ats = match client.find_ext_capability(sid, CAP_ATS)? {
            Some(off) => client.config_read(sid, off + 6, 2)? & 0x8000 != 0,
            None => true,
        };
        let pri = match client.find_ext_capability(sid, CAP_PRI)? {
            Some(off) => client.config_read(sid, off + 4, 2)? & 1 != 0,
            None => true,
        };
        let shared = Arc::new(Shared {
            atc: Mutex::new(Atc::new(dev.atc_entries)),
            responses: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            ended: Mutex::new(None),
            invalidations: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let socket = channel
            .socket()
            .try_clone()
            .map_err(|source| ClientError::Io {
                what: "cannot keep the events channel".into(),
                source,
            })?;
        let (s, st) = (shared.clone(), stop.clone());
        let events = std::thread::Builder::new()
            .name(format!("vsva-device-{sid:04x}"))
            .spawn(move || serve_events(channel, &s, &st))
            .map_err(|source| ClientError::Io {
                what: "cannot start the device's events thread".into(),
                source,
            })?;
        Ok(DeviceHandle {
            client,
            source_id: sid,
            shared,
            memory,
            ats,
            pri,
            options: dev,
            next_group: 0,
            page_requests: 0,
            events: Some(events),
            channel: socket,
            stop,
        })
    }

    /// The device's requester id.
    pub fn source_id(&self) -> u16 {
        self.source_id
    }

    /// Whether translations are cached (ATS on).
    pub fn ats_enabled(&self) -> bool {
        self.ats
    }

    /// Hits, misses, invalidations, page requests.
    pub fn stats(&self) -> DeviceStats {
        let (hits, misses) = lock(&self.shared.atc).hits_and_misses();
        DeviceStats {
            hits,
            misses,
            invalidations: self.shared.invalidations.load(Ordering::Relaxed),
            page_requests: self.page_requests,
        }
    }

    /// Whether the device TLB holds a translation of `iova` for `pasid` allowing a read.
    pub fn holds(&self, pasid: Option<u32>, iova: u64) -> bool {
        lock(&self.shared.atc)
            .peek(pasid, iova, Access::default())
            .is_some()
    }

    /// The connection the handle sends its requests on.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    fn check_alive(&self) -> Result<(), ClientError> {
        match &*lock(&self.shared.ended) {
            Some(why) => Err(ClientError::Closed(format!(
                "the capability for device {:#06x} ended: {why}",
                self.source_id
            ))),
            None => Ok(()),
        }
    }

    /// The translation of the page holding `iova`: from the device TLB, or asked of the
    /// IOMMU. With PRI on, the translation request itself raises the page request when the
    /// owner can fix the miss (one round trip), and the owner's SUCCESS brings the
    /// translation back with it: it is installed with no further request unless an
    /// invalidation came in meanwhile (then it is asked for again).
    fn translate(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
    ) -> Result<Translation, ClientError> {
        let mut page_requests = 0;
        loop {
            let generation = {
                let mut atc = lock(&self.shared.atc);
                if let Some(t) = atc.lookup(pasid, iova, access) {
                    return Ok(t);
                }
                atc.generation()
            };
            self.check_alive()?;
            let flags = dma_flags(pasid, access.write, access.execute, access.privileged);
            let group = (self.pri && page_requests == 0).then(|| self.take_group());
            let reply = self.client.call(Request::AtsTranslate(AtsRequest {
                source_id: self.source_id,
                flags,
                pasid: pasid.unwrap_or(0),
                addr: iova,
                page_request_group: group,
            }))?;
            let answer =
                AtsAnswer::decode(&reply.payload).map_err(|error| ClientError::Protocol {
                    kind: Kind::AtsTranslate,
                    error,
                })?;
            let answer = match (answer, group) {
                (AtsAnswer::PageRequested { fault }, Some(group)) => {
                    page_requests += 1;
                    self.page_requests += 1;
                    match self.wait_page_response(group, fault)? {
                        Some(ResponseTranslation { addr, answer }) if addr == iova => answer,
                        // No translation came with it: ask.
                        _ => continue,
                    }
                }
                (answer, _) => answer,
            };
            match answer {
                AtsAnswer::Translated {
                    host_addr,
                    page_size,
                    perms,
                } => {
                    let t = Translation {
                        host_addr,
                        page_size,
                        perms: Perms {
                            read: perms & ATS_READ != 0,
                            write: perms & ATS_WRITE != 0,
                            execute: perms & ATS_EXEC != 0,
                            user: perms & ATS_USER != 0,
                        },
                    };
                    // Refused when an invalidation came in since the request: ask again.
                    if lock(&self.shared.atc).insert(generation, pasid, iova, &t) {
                        return Ok(t);
                    }
                }
                AtsAnswer::NoTranslation {
                    page_request,
                    fault,
                } => {
                    if !(page_request && self.pri) || page_requests > 0 {
                        return Err(ClientError::DmaFault(fault));
                    }
                    page_requests += 1;
                    self.raise_page_request(pasid, iova, access, fault)?;
                }
                AtsAnswer::PageRequested { .. } => {
                    return Err(proto_err(
                        Kind::AtsTranslate,
                        "a page request raised that was not asked for",
                        2,
                    ))
                }
            }
        }
    }

    /// The next page-request group index, its earlier responses forgotten.
    fn take_group(&mut self) -> u16 {
        let group = self.next_group;
        self.next_group = (self.next_group + 1) % 512;
        lock(&self.shared.responses).retain(|(g, _, _)| *g != group);
        group
    }

    /// Raises a one-page group for `iova` with `PAGE_REQUEST` and waits for its response;
    /// SUCCESS returns so the caller retries, anything else fails the DMA with the original
    /// fault.
    fn raise_page_request(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        access: Access,
        fault: FaultRecord,
    ) -> Result<(), ClientError> {
        let group = self.take_group();
        let mut perm = PERM_READ as u16;
        if access.write {
            perm |= PERM_WRITE as u16;
        }
        if access.execute {
            perm |= PERM_EXEC as u16;
        }
        if access.privileged {
            perm |= PERM_PRIV as u16;
        }
        let mut flags = PAGE_REQUEST_LAST;
        if pasid.is_some() {
            flags |= PAGE_REQUEST_PASID;
        }
        self.client.call(Request::PageRequest(RaisedPage {
            source_id: self.source_id,
            flags,
            pasid: pasid.unwrap_or(0),
            addr: iova & !0xfff,
            grpid: group,
            perm,
        }))?;
        self.page_requests += 1;
        self.wait_page_response(group, fault).map(|_| ())
    }

    /// Waits for the response to page-request group `group`: SUCCESS returns the
    /// translation it carries, if any; anything else fails the DMA with `fault`.
    fn wait_page_response(
        &mut self,
        group: u16,
        fault: FaultRecord,
    ) -> Result<Option<ResponseTranslation>, ClientError> {
        let deadline = Instant::now() + self.options.page_response_timeout;
        let mut responses = lock(&self.shared.responses);
        loop {
            if let Some(i) = responses.iter().position(|(g, _, _)| *g == group) {
                let (_, code, translation) = responses.swap_remove(i);
                return if code == RESP_SUCCESS {
                    Ok(translation)
                } else {
                    Err(ClientError::DmaFault(fault))
                };
            }
            if lock(&self.shared.ended).is_some() {
                drop(responses);
                return self.check_alive().map(|()| None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::TimedOut {
                    what: "a page response",
                    after: self.options.page_response_timeout,
                });
            }
            responses = self
                .shared
                .changed
                .wait_timeout(responses, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs `op` on `[iova, iova + len)` in runs of host-contiguous memory: each page is
    /// translated and permission-checked on its own (in the device TLB, or asked of the
    /// IOMMU on a miss), and consecutive pages whose host addresses follow each other are
    /// handed to `op` as one run (`op` gets the run's host address and its range of the
    /// DMA's bytes).
    ///
    /// Runs of hits are copied with the device TLB locked, so an invalidation is applied
    /// (and acknowledged) only after every access through the translations it drops ended:
    /// a translation is never used after its invalidation completed.
    fn each_run(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        len: usize,
        access: Access,
        mut op: impl FnMut(&GuestMemoryMmap, u64, std::ops::Range<usize>) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut done = 0usize;
        while done < len {
            {
                let mut atc = lock(&self.shared.atc);
                // The run being gathered: its host address and its start in the DMA.
                let mut run: Option<(u64, usize)> = None;
                while done < len {
                    let at = iova.wrapping_add(done as u64);
                    let Some(t) = atc.lookup(pasid, at, access) else {
                        break;
                    };
                    let chunk = ((t.page_size - (at % t.page_size)) as usize).min(len - done);
                    match run {
                        Some((hpa, start)) if hpa + (done - start) as u64 == t.host_addr => {}
                        Some((hpa, start)) => {
                            op(&self.memory, hpa, start..done)?;
                            run = Some((t.host_addr, done));
                        }
                        None => run = Some((t.host_addr, done)),
                    }
                    done += chunk;
                }
                if let Some((hpa, start)) = run {
                    op(&self.memory, hpa, start..done)?;
                }
            }
            if done < len {
                // A miss: ask the IOMMU (with a page request if the owner can fix it); the
                // translation is in the device TLB then, and the next pass uses it.
                self.translate(pasid, iova.wrapping_add(done as u64), access)?;
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `iova` (each page translated and checked; on device TLB
    /// hits straight from the shared memory, one copy per host-contiguous run, no daemon
    /// call).
    ///
    /// # Errors
    ///
    /// A translation fault ([`ClientError::DmaFault`], after a page request the owner did not
    /// answer SUCCESS), a page response that did not come in time, or the capability ended.
    /// `buf` holds the bytes of the pages before the failing one.
    pub fn dma_read(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        buf: &mut [u8],
    ) -> Result<(), ClientError> {
        if !self.ats {
            let data = self
                .client
                .dma_read(self.source_id, pasid, iova, buf.len() as u32)?;
            buf.copy_from_slice(&data);
            return Ok(());
        }
        let access = Access::default();
        let r = self.each_run(pasid, iova, buf.len(), access, |mem, hpa, range| {
            mem.read_slice(&mut buf[range], GuestAddress(hpa))
                .map_err(mem_err)
        });
        self.fall_back_if_unsupported(r, |h| {
            let data = h
                .client
                .dma_read(h.source_id, pasid, iova, buf.len() as u32)?;
            buf.copy_from_slice(&data);
            Ok(())
        })
    }

    /// Writes `data` at `iova`, as [`DeviceHandle::dma_read`] reads.
    ///
    /// # Errors
    ///
    /// As [`DeviceHandle::dma_read`]; the pages before the failing one are written.
    pub fn dma_write(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        if !self.ats {
            return self
                .client
                .dma_write(self.source_id, pasid, iova, data)
                .map(|_| ());
        }
        let access = Access {
            write: true,
            ..Access::default()
        };
        let r = self.each_run(pasid, iova, data.len(), access, |mem, hpa, range| {
            mem.write_slice(&data[range], GuestAddress(hpa))
                .map_err(mem_err)
        });
        self.fall_back_if_unsupported(r, |h| {
            h.client
                .dma_write(h.source_id, pasid, iova, data)
                .map(|_| ())
        })
    }

    /// Atomically replaces the 8-byte little-endian value at `iova` (8-byte aligned) with
    /// `new` if it is `current`; returns the value found. Needs ATS: the daemon's DMA path
    /// has no atomic operation.
    ///
    /// # Errors
    ///
    /// As [`DeviceHandle::dma_write`]; `EINVAL`-like [`ClientError::Io`] for a misaligned
    /// address or with ATS off. Nothing is written on failure.
    pub fn dma_compare_swap(
        &mut self,
        pasid: Option<u32>,
        iova: u64,
        current: u64,
        new: u64,
    ) -> Result<u64, ClientError> {
        if !iova.is_multiple_of(8) || !self.ats {
            return Err(ClientError::Io {
                what: format!(
                    "compare-and-swap at {iova:#x} needs an 8-byte aligned address and ATS on"
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        let access = Access {
            write: true,
            ..Access::default()
        };
        let t = self.translate(pasid, iova, access)?;
        let mem = &self.memory;
        let (region, off) = mem
            .to_region_addr(GuestAddress(t.host_addr))
            .ok_or_else(|| {
                mem_err(vm_memory::GuestMemoryError::InvalidGuestAddress(
                    GuestAddress(t.host_addr),
                ))
            })?;
        let slice = region.as_volatile_slice().map_err(mem_err)?;
        let word = slice
            .get_atomic_ref::<std::sync::atomic::AtomicU64>(off.0 as usize)
            .map_err(|e| ClientError::Io {
                what: format!("compare-and-swap at {iova:#x}: {e}"),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(
            match word.compare_exchange(
                current.to_le(),
                new.to_le(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(v) | Err(v) => u64::from_le(v),
            },
        )
    }

    /// A translation request refused with `EOPNOTSUPP` (the IOMMU has ATS off for the
    /// device): turn ATS off and do the access through the daemon.
    fn fall_back_if_unsupported(
        &mut self,
        r: Result<(), ClientError>,
        daemon: impl FnOnce(&mut DeviceHandle) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        match r {
            Err(e) if e.errno() == Some(vsva_proto::Errno::EOPNOTSUPP) => {
                self.ats = false;
                daemon(self)
            }
            other => other,
        }
    }
}

fn mem_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Io {
        what: format!("DMA into the shared memory failed: {e}"),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Ends the events thread's read.
        self.channel.shutdown(std::net::Shutdown::Both).ok();
        if let Some(t) = self.events.take() {
            if t.join().is_err() {
                debug_assert!(false, "the device's events thread panicked");
            }
        }
    }
}
