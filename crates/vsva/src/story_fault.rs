//! The demo's page-fault chapter: a device with ATS and PRI touches a page the guest has not
//! mapped; its translation request comes back empty with a hint to ask for the page; its page
//! request reaches the guest (this process, the PASID's owner) as an event; the guest maps the
//! page, invalidates and answers; the device gets the answer, translates again and its DMA
//! completes.

use std::time::{Duration, Instant};

use vsva_client::pgtable::{PageTables, P, RW, US};
use vsva_client::{Client, Event, GuestMemory};
use vsva_proto::{
    AtsAnswer, AtsRequest, RaisedPage, Request, DMA_PASID, DMA_WRITE, PAGE_REQUEST_LAST,
    PAGE_REQUEST_PASID, PERM_READ, PERM_WRITE, RESP_SUCCESS,
};
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity};

use crate::common::CliError;

/// The device the chapter needs: `00:07.0`, with ATS and PRI (the private daemon's machine
/// has it; another daemon may not, and the chapter is then skipped).
pub(crate) const FAULT_DEVICE: u16 = 0x38;
/// The private daemon's machine: the four default devices and the faulting one.
pub(crate) const DEMO_MACHINE: &str = "\
[[devices]]\nbdf = \"00:03.0\"\ngroup = 1\n\
[[devices]]\nbdf = \"00:04.0\"\ngroup = 2\n\
[[devices]]\nbdf = \"00:05.0\"\ngroup = 3\n\
[[devices]]\nbdf = \"00:06.0\"\ngroup = 4\n\
[[devices]]\nbdf = \"00:07.0\"\ngroup = 5\nats = true\npri = true\n";

/// The chapter's guest memory sits above the story's (4 GiB up, 16 MiB).
const BASE: u64 = 1 << 32;
const PT_POOL: u64 = BASE + 0x10_0000;
const PAGE: u64 = BASE + 0x50_0000;
const GVA: u64 = 0x7f00_5678_0000;
const MESSAGE: &[u8] = b"written after a page fault";
const WAIT: Duration = Duration::from_secs(10);

/// Tells the chapter through `step(title, ok, detail, started)`.
pub(crate) fn page_fault_chapter(
    client: &mut Client,
    step: &mut dyn FnMut(String, bool, String, Instant),
) -> Result<(), CliError> {
    let t = Instant::now();
    let Some(dev) = client
        .status()?
        .devices
        .into_iter()
        .find(|d| d.source_id == FAULT_DEVICE && d.group != u32::MAX)
    else {
        step(
            "Page faults: skipped".into(),
            true,
            "This daemon has no device 00:07.0 with ATS and PRI (the private daemon of `vsva demo` has one).".into(),
            t,
        );
        return Ok(());
    };
    let c = client.nesting_container(dev.group)?;
    let mem = GuestMemory::new(BASE, 16 << 20)?;
    client.attach_guest_memory(c, &mem)?;
    let pasid = client.pasid_alloc(c, 1, u32::MAX)?;
    let mut pt = PageTables::new(&mem, PT_POOL, 0x10_0000, 4)?;
    let bind = BindRequest::new(u64::from(pasid), pt.root(), AddrWidth::Bits48);
    client.bind(c, &bind)?;
    client.enable_pasid(dev.source_id)?;
    client.enable_ats(dev.source_id)?;
    client.enable_pri(dev.source_id, 32)?;
    let mut events = client.open_events()?;
    let ask = Request::AtsTranslate(AtsRequest {
        source_id: dev.source_id,
        flags: DMA_PASID | DMA_WRITE,
        pasid,
        addr: GVA,
        // The demo shows each step: the page request is raised on its own below.
        page_request_group: None,
    });
    let first = AtsAnswer::decode(&client.call(ask.clone())?.payload);
    let hinted = matches!(
        first,
        Ok(AtsAnswer::NoTranslation {
            page_request: true,
            ..
        })
    );
    step(
        format!("A device with ATS and PRI ({}) asks for a page the guest has not mapped", dev.name),
        hinted,
        format!("ATS translation request for {GVA:#x} on PASID {pasid}: no translation, and the IOMMU tells the device to raise a page request (the first-level entry is not present)."),
        t,
    );

    let t = Instant::now();
    client.call(Request::PageRequest(RaisedPage {
        source_id: dev.source_id,
        flags: PAGE_REQUEST_PASID | PAGE_REQUEST_LAST,
        pasid,
        addr: GVA,
        grpid: 1,
        perm: (PERM_READ | PERM_WRITE) as u16,
    }))?;
    let mut request = None;
    while let Some((_, ev)) = events.next_timeout(Some(WAIT))? {
        if let Event::PageRequest(r) = ev {
            request = Some(r);
            break;
        }
    }
    step(
        "The device raises a page request; the guest receives it".into(),
        request.is_some_and(|r| r.addr == GVA && r.pasid == pasid),
        match request {
            Some(r) => format!("Event PAGE_REQUEST on this process's events channel: address {:#x}, PASID {}, group {}, cookie {}.", r.addr, r.pasid, r.grpid, r.cookie),
            None => "No page request arrived.".into(),
        },
        t,
    );
    let Some(request) = request else {
        return Ok(());
    };

    let t = Instant::now();
    pt.map(GVA, PAGE, P | RW | US)?;
    // The IOTLB only: the device got no translation for the page, so its own TLB holds
    // nothing to drop (and this process, being the device too, would have to acknowledge a
    // device-TLB invalidation from another thread while this call waits).
    let inv = CacheInvalidateRequest::new(
        CacheSet::IOTLB,
        Granularity::Addr {
            pasid: Some(u64::from(pasid)),
            archid: None,
            addr: GVA,
            granule_size: 4096,
            nb_granules: 1,
            leaf: true,
        },
    )
    .map_err(|e| CliError::Message(e.to_string()))?;
    client.invalidate(c, &inv)?;
    client.page_response(request.cookie, RESP_SUCCESS)?;
    let mut answer = None;
    while let Some((_, ev)) = events.next_timeout(Some(WAIT))? {
        if let Event::PageResponse(r) = ev {
            answer = Some(r);
            break;
        }
    }
    step(
        "The guest maps the page, invalidates, and answers SUCCESS".into(),
        answer.as_ref().is_some_and(|r| r.code == RESP_SUCCESS && r.grpid == 1),
        format!("Mapped {GVA:#x} -> {PAGE:#x}, CACHE_INVLD (IOTLB), PAGE_RESPONSE(cookie {}); the device received the group's response: {}.", request.cookie, if answer.is_some() { "SUCCESS" } else { "none" }),
        t,
    );

    let t = Instant::now();
    let again = AtsAnswer::decode(&client.call(ask)?.payload);
    client.dma_write(dev.source_id, Some(pasid), GVA, MESSAGE)?;
    let mut landed = vec![0u8; MESSAGE.len()];
    mem.read(PAGE, &mut landed)?;
    let translated = matches!(again, Ok(AtsAnswer::Translated { .. }));
    step(
        "The device retries: the translation is there and its DMA completes".into(),
        translated && landed == MESSAGE,
        format!(
            "ATS translation: {}; DMA write of {:?} landed in the guest page at {PAGE:#x}.",
            if translated {
                "granted"
            } else {
                "still missing"
            },
            String::from_utf8_lossy(&landed)
        ),
        t,
    );
    // Unbinding invalidates what the device may cache: acknowledge on another thread, as a
    // device process does, while this one waits for the unbind.
    let stop = events.socket().try_clone()?;
    let acks = std::thread::spawn(move || {
        while let Ok((seq, ev)) = events.next_event() {
            if matches!(ev, Event::Invalidate(_)) && events.ack(seq).is_err() {
                break;
            }
        }
    });
    let done = client
        .unbind(c, &bind)
        .and_then(|()| client.pasid_free(c, pasid, pasid));
    stop.shutdown(std::net::Shutdown::Both).ok();
    if acks.join().is_err() {
        return Err(CliError::Message(
            "the acknowledging thread panicked".into(),
        ));
    }
    done?;
    // The chapter is told; a close that fails leaves the container to the connection's end.
    client.close_container(c).ok();
    Ok(())
}
