//! An in-process ATS device for the tests: it keeps its own translation cache ([`Atc`]), asks
//! the IOMMU on a miss ([`Iommu::ats_translate`]), does DMA straight into host memory on a
//! hit, and raises page requests through [`Vfio::page_request`]. Each device runs a thread
//! that receives device-TLB invalidations and page-group responses from the in-process sink
//! ([`Devices`]) and acknowledges invalidations — unless it is muted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vsva_iommu::{
    Access, Atc, AtsReply, Completion, DevTlbInvalidation, DevTlbScope, DevTlbSink, Fault, Iommu,
    IommuError, PageRequest, PageResponse, ResponseCode, SourceId,
};
use vsva_vfio::Vfio;

/// Generous upper bound for waits that only fail a hung test.
pub const HANG: Duration = Duration::from_secs(20);

enum Msg {
    Invalidate(Vec<DevTlbScope>, Sender<()>),
    Response(PageResponse),
}

/// Why a device DMA did not complete.
#[derive(Debug, PartialEq)]
pub enum DevError {
    /// The IOMMU answered without rights.
    NoTranslation {
        /// Why.
        fault: Fault,
        /// Whether a page request would help.
        page_request: bool,
    },
    /// The IOMMU refused the translation request.
    Refused(IommuError),
    /// The page request was refused.
    PageRequest(String),
    /// The owner answered the page request with something other than SUCCESS.
    Response(ResponseCode),
}

/// The device state shared with its thread.
pub struct DeviceState {
    pub sid: SourceId,
    pub atc: Mutex<Atc>,
    /// Page-group responses received, and a condition variable to wait for one.
    pub responses: Mutex<Vec<PageResponse>>,
    pub responded: Condvar,
    /// A muted device never acknowledges invalidations.
    pub muted: AtomicBool,
    /// After an invalidation, translate again every page it dropped (as a prefetching
    /// device would), before acknowledging.
    pub refetch: AtomicBool,
    /// Invalidations applied (each scope once).
    pub applied: Mutex<Vec<DevTlbScope>>,
    /// Yield between a translation's answer and its fill, so invalidations overtake fills.
    pub slow_fill: AtomicBool,
}

/// A device handle: the state, the IOMMU and the host it raises page requests on.
#[derive(Clone)]
pub struct AtsDevice {
    pub state: Arc<DeviceState>,
    pub iommu: Arc<Iommu>,
    pub vfio: Vfio,
}

impl AtsDevice {
    pub fn sid(&self) -> SourceId {
        self.state.sid
    }

    /// The translation of one address: the cache, or a translation request.
    pub fn translate(&self, pasid: u32, iova: u64, access: Access) -> Result<u64, DevError> {
        let pasid = Some(pasid);
        let generation = {
            let mut atc = self.state.atc.lock().unwrap();
            if let Some(t) = atc.lookup(pasid, iova, access) {
                return Ok(t.host_addr);
            }
            atc.generation()
        };
        match self.iommu.ats_translate(self.sid(), pasid, iova, access) {
            Ok(AtsReply::Translated(t)) => {
                if self.state.slow_fill.load(Ordering::Acquire) {
                    // Widen the window in which an invalidation can overtake the answer.
                    for _ in 0..50 {
                        std::thread::yield_now();
                    }
                }
                self.state
                    .atc
                    .lock()
                    .unwrap()
                    .insert(generation, pasid, iova, &t);
                Ok(t.host_addr)
            }
            Ok(AtsReply::NoTranslation {
                fault,
                page_request,
            }) => Err(DevError::NoTranslation {
                fault,
                page_request,
            }),
            Err(e) => Err(DevError::Refused(e)),
        }
    }

    /// Reads `buf.len()` bytes at `iova` (within one page) through the device's translation.
    pub fn read(&self, pasid: u32, iova: u64, buf: &mut [u8]) -> Result<(), DevError> {
        let hpa = self.translate(pasid, iova, Access::READ)?;
        self.iommu.memory().read(hpa, buf).unwrap();
        Ok(())
    }

    /// Writes `buf` at `iova` (within one page) through the device's translation.
    pub fn write(&self, pasid: u32, iova: u64, buf: &[u8]) -> Result<(), DevError> {
        let hpa = self.translate(pasid, iova, Access::WRITE)?;
        self.iommu.memory().write(hpa, buf).unwrap();
        Ok(())
    }

    /// Raises a one-request page group for the page of `iova`.
    pub fn page_request(
        &self,
        pasid: u32,
        iova: u64,
        access: Access,
        group: u16,
    ) -> Result<(), DevError> {
        let req = PageRequest {
            source_id: self.sid(),
            pasid: Some(pasid),
            addr: iova & !0xfff,
            access,
            group,
            last: true,
        };
        self.vfio
            .page_request(req, Instant::now())
            .map_err(|e| DevError::PageRequest(e.to_string()))
    }

    /// Waits for the response to `group` and takes it.
    pub fn wait_response(&self, group: u16) -> PageResponse {
        let deadline = Instant::now() + HANG;
        let mut got = self.state.responses.lock().unwrap();
        loop {
            if let Some(i) = got.iter().position(|r| r.group == group) {
                return got.remove(i);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("no page response came");
            got = self.state.responded.wait_timeout(got, left).unwrap().0;
        }
    }

    /// A DMA read that raises a page request on a recoverable miss, waits for the response
    /// and retries once after SUCCESS.
    pub fn read_faulting(
        &self,
        pasid: u32,
        iova: u64,
        buf: &mut [u8],
        group: u16,
    ) -> Result<(), DevError> {
        match self.read(pasid, iova, buf) {
            Err(DevError::NoTranslation {
                page_request: true, ..
            }) => {
                self.page_request(pasid, iova, Access::READ, group)?;
                match self.wait_response(group).code {
                    ResponseCode::Success => self.read(pasid, iova, buf),
                    code => Err(DevError::Response(code)),
                }
            }
            other => other,
        }
    }

    /// Whether the device's cache holds a translation of `iova` (any access it allows).
    pub fn cached(&self, pasid: u32, iova: u64) -> Option<u64> {
        self.state
            .atc
            .lock()
            .unwrap()
            .peek(Some(pasid), iova, Access::READ)
            .map(|t| t.host_addr)
    }
}

/// The in-process sink: a thread per device, acknowledgements over channels, each waited for
/// at most `timeout`.
pub struct Devices {
    timeout: Duration,
    iommu: Arc<Iommu>,
    devices: Mutex<HashMap<SourceId, Sender<Msg>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Devices {
    /// A sink whose devices must acknowledge within `timeout`, registered with the IOMMU.
    pub fn install(iommu: &Arc<Iommu>, timeout: Duration) -> Arc<Devices> {
        let d = Arc::new(Devices {
            timeout,
            iommu: iommu.clone(),
            devices: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        iommu.set_devtlb_sink(Some(d.clone() as Arc<dyn DevTlbSink>));
        d
    }

    /// Starts device `sid` with a cache of `entries` translations.
    pub fn add(&self, vfio: &Vfio, sid: SourceId, entries: usize) -> AtsDevice {
        let state = Arc::new(DeviceState {
            sid,
            atc: Mutex::new(Atc::new(entries)),
            responses: Mutex::new(Vec::new()),
            responded: Condvar::new(),
            muted: AtomicBool::new(false),
            refetch: AtomicBool::new(false),
            applied: Mutex::new(Vec::new()),
            slow_fill: AtomicBool::new(false),
        });
        let (tx, rx) = channel();
        let dev = AtsDevice {
            state: state.clone(),
            iommu: self.iommu.clone(),
            vfio: vfio.clone(),
        };
        let thread_dev = dev.clone();
        self.threads
            .lock()
            .unwrap()
            .push(std::thread::spawn(move || device_thread(thread_dev, rx)));
        self.devices.lock().unwrap().insert(sid, tx);
        dev
    }
}

fn device_thread(dev: AtsDevice, rx: Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Invalidate(scopes, ack) => {
                let s = &dev.state;
                let mut dropped = Vec::new();
                {
                    let mut atc = s.atc.lock().unwrap();
                    for scope in &scopes {
                        if let DevTlbScope::Range { pasid, addr, .. } = *scope {
                            if atc.peek(pasid, addr, Access::READ).is_some() {
                                dropped.push((pasid, addr));
                            }
                        }
                        atc.invalidate(scope);
                    }
                }
                s.applied.lock().unwrap().extend(scopes);
                if s.refetch.load(Ordering::Acquire) {
                    for (pasid, addr) in dropped {
                        let _ = dev.translate(pasid.unwrap_or(0), addr, Access::READ);
                    }
                }
                if !s.muted.load(Ordering::Acquire) {
                    let _ = ack.send(());
                }
            }
            Msg::Response(resp) => {
                dev.state.responses.lock().unwrap().push(resp);
                dev.state.responded.notify_all();
            }
        }
    }
}

impl DevTlbSink for Devices {
    fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)> {
        let mut per_device: HashMap<SourceId, Vec<DevTlbScope>> = HashMap::new();
        for inv in batch {
            per_device.entry(inv.source_id).or_default().push(inv.scope);
        }
        let mut waits = Vec::new();
        {
            let devices = self.devices.lock().unwrap();
            for (sid, scopes) in per_device {
                let (ack_tx, ack_rx) = channel();
                match devices.get(&sid) {
                    Some(tx) if tx.send(Msg::Invalidate(scopes, ack_tx)).is_ok() => {
                        waits.push((sid, Some(ack_rx)))
                    }
                    _ => waits.push((sid, None)),
                }
            }
        }
        // All devices work at once; each is waited for at most the time-out from now.
        let deadline = Instant::now() + self.timeout;
        waits
            .into_iter()
            .map(|(sid, rx)| {
                let left = deadline.saturating_duration_since(Instant::now());
                let done = rx.is_some_and(|rx| match rx.recv_timeout(left) {
                    Ok(()) => true,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => false,
                });
                (
                    sid,
                    if done {
                        Completion::Done
                    } else {
                        Completion::TimedOut
                    },
                )
            })
            .collect()
    }

    fn page_response(&self, resp: PageResponse) {
        if let Some(tx) = self.devices.lock().unwrap().get(&resp.source_id) {
            let _ = tx.send(Msg::Response(resp));
        }
    }
}

/// A host with one ATS + PRI function 00:03.0 in group 3, a nesting container of `owner`
/// with guest RAM mapped, one PASID, the in-process device sink and the device.
pub struct Setup {
    pub vfio: Vfio,
    pub owner: vsva_vfio::ProcessToken,
    pub container: vsva_vfio::Container,
    pub devices: Arc<Devices>,
    pub dev: AtsDevice,
    pub pasid: u32,
}

/// [`Setup`] with devices acknowledging within `timeout` and `vcfg` for the VFIO layer.
pub fn setup_with(timeout: Duration, vcfg: vsva_vfio::VfioConfig) -> Setup {
    let iommu = super::iommu(vsva_iommu::IommuConfig {
        iotlb_entries: 1024,
        ..vsva_iommu::IommuConfig::default()
    });
    let vfio = Vfio::new(iommu.clone(), vcfg).unwrap();
    let mut spec = vsva_vfio::PciFunctionSpec::new(super::sid(3), Some(vsva_vfio::GroupId(3)));
    spec.ats = true;
    spec.pri = true;
    let function = vfio.add_pci_function(spec).unwrap();
    // The guest's driver enables PASID, ATS and PRI (allocation: whatever the capacity is).
    enable(&function, true, true, u32::MAX);
    let owner = super::process(1);
    let container = super::container(&vfio, owner, 3, vsva_vfio::IommuType::Nesting);
    super::map_guest_ram(&container);
    let pasid = container.alloc_pasid(1, 1000).unwrap();
    let devices = Devices::install(&iommu, timeout);
    let dev = devices.add(&vfio, super::sid(3), 64);
    Setup {
        vfio,
        owner,
        container,
        devices,
        dev,
        pasid,
    }
}

/// Offsets of the function's extended capabilities: PASID at 0x100, ATS, PRI.
pub const ATS_CTRL: u32 = 0x108 + 6;
pub const PRI_CTRL: u32 = 0x110 + 4;
pub const PRI_ALLOC: u32 = 0x110 + 0xc;

/// Writes the function's PASID Enable, ATS Enable, PRI Enable and PRI allocation.
pub fn enable(function: &vsva_vfio::PciFunction, ats: bool, pri: bool, allocation: u32) {
    use vsva_vfio::ConfigWidth::{Dword, Word};
    function.config_write(0x106, Word, 1).unwrap();
    let ats_ctrl = if ats { 0x8000 } else { 0 };
    function.config_write(ATS_CTRL, Word, ats_ctrl).unwrap();
    function
        .config_write(PRI_CTRL, Word, u32::from(pri))
        .unwrap();
    function.config_write(PRI_ALLOC, Dword, allocation).unwrap();
}

/// [`setup_with`] the default VFIO configuration.
pub fn setup(timeout: Duration) -> Setup {
    setup_with(timeout, vsva_vfio::VfioConfig::default())
}

impl Setup {
    /// Binds the guest table at `root` (a GPA) to the PASID.
    pub fn bind(&self, root: u64) {
        self.container
            .bind(&vsva_uapi::BindRequest::new(
                u64::from(self.pasid),
                root,
                vsva_uapi::AddrWidth::Bits48,
            ))
            .unwrap();
    }

    /// CACHE_INVLD of one page of the PASID: IOTLB and device TLB.
    pub fn invalidate_page(&self, va: u64) {
        let req = vsva_uapi::CacheInvalidateRequest::new(
            vsva_uapi::CacheSet::IOTLB | vsva_uapi::CacheSet::DEV_IOTLB,
            vsva_uapi::Granularity::Addr {
                pasid: Some(u64::from(self.pasid)),
                archid: None,
                addr: va & !0xfff,
                granule_size: 0x1000,
                nb_granules: 1,
                leaf: true,
            },
        )
        .unwrap();
        self.container.invalidate(&req).unwrap();
    }
}

/// A fault sink that forwards page requests and DMA faults over channels.
pub struct Forward {
    pub requests: Mutex<Sender<(vsva_vfio::ProcessToken, vsva_vfio::PageFaultRecord)>>,
    pub faults: Mutex<Sender<(vsva_vfio::ProcessToken, Fault)>>,
}

/// Installs a [`Forward`] sink on `vfio`; returns the receiving ends.
#[allow(clippy::type_complexity)]
pub fn forward(
    vfio: &Vfio,
) -> (
    Receiver<(vsva_vfio::ProcessToken, vsva_vfio::PageFaultRecord)>,
    Receiver<(vsva_vfio::ProcessToken, Fault)>,
) {
    let (rt, rr) = channel();
    let (ft, fr) = channel();
    vfio.set_fault_sink(Some(Arc::new(Forward {
        requests: Mutex::new(rt),
        faults: Mutex::new(ft),
    })));
    (rr, fr)
}

impl vsva_vfio::FaultSink for Forward {
    fn page_request(&self, owner: &vsva_vfio::ProcessToken, rec: vsva_vfio::PageFaultRecord) {
        let _ = self.requests.lock().unwrap().send((*owner, rec));
    }

    fn dma_fault(&self, owner: &vsva_vfio::ProcessToken, fault: &Fault) {
        let _ = self.faults.lock().unwrap().send((*owner, *fault));
    }
}
