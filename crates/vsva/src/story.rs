//! The demo's story: a guest allocates PASIDs, builds page tables, binds them, a device does
//! DMA through them, the guest unmaps and invalidates, DMA faults, PASIDs are freed. Each
//! step is checked against what the system should do.

use std::time::Instant;

use vsva_client::pgtable::{PageTables, P, RW, US};
use vsva_client::{Client, ClientError, GuestMemory};
use vsva_uapi::{AddrWidth, BindRequest, CacheInvalidateRequest, CacheSet, Granularity};

use crate::common::CliError;
use crate::diagram;
use crate::story_fault::page_fault_chapter;

/// One step of the story.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    /// What was done, in plain words.
    pub(crate) title: String,
    /// What happened.
    pub(crate) detail: String,
    /// Whether it went as the story expects.
    pub(crate) ok: bool,
    /// How long it took.
    pub(crate) micros: u64,
}

/// The whole story.
#[derive(Debug, Clone, Default)]
pub(crate) struct DemoReport {
    /// The steps, in order.
    pub(crate) steps: Vec<Step>,
}

impl DemoReport {
    /// Whether every step went as expected.
    pub(crate) fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

/// Guest-physical layout of the demo guest.
const GUEST_RAM: u64 = 16 << 20;
const PT_POOL: u64 = 0x10_0000;
const PT_POOL_SIZE: u64 = 0x10_0000;
const DATA: u64 = 0x40_0000;
const GVA: u64 = 0x7f00_1234_0000;

/// Judges the read after an unmap without invalidation: the IOTLB must still serve the old
/// translation, so the read succeeds and returns what the old page held (`expected`).
fn judge_stale_read(read: &Result<Vec<u8>, ClientError>, expected: &[u8]) -> (bool, String) {
    match read {
        Ok(d) if d == expected => (
            true,
            format!(
                "The device still reads {:?}: the IOTLB keeps the old translation until it is invalidated, as on hardware.",
                String::from_utf8_lossy(d)
            ),
        ),
        Ok(d) => (
            false,
            format!(
                "The device read {:?}, not the old page's {:?}: the stale translation was not served.",
                String::from_utf8_lossy(d),
                String::from_utf8_lossy(expected)
            ),
        ),
        Err(e) => (
            false,
            format!("The device's read already fails ({e}): the IOTLB did not keep the old translation."),
        ),
    }
}

/// Runs the story against a connected client, calling `show` after each step.
pub(crate) fn run_story(
    client: &mut Client,
    show: &mut dyn FnMut(&Step),
) -> Result<DemoReport, CliError> {
    let mut report = DemoReport::default();
    let mut step = |title: String, ok: bool, detail: String, t: Instant| {
        let s = Step {
            title,
            detail,
            ok,
            micros: t.elapsed().as_micros() as u64,
        };
        show(&s);
        report.steps.push(s);
    };

    let t = Instant::now();
    let status = client.status()?;
    let hello = client.hello().clone();
    step(
        "Connect to the daemon".into(),
        true,
        format!(
            "{} answers pid {} (uid {}); the IOMMU has {}-bit PASIDs, {} of them in use; this process may own {}.",
            status.server, hello.credentials.pid, hello.credentials.uid, status.pasid_bits, status.allocated, hello.quota
        ),
        t,
    );

    let t = Instant::now();
    let groups: Vec<(u32, u16, String)> = status
        .devices
        .iter()
        .filter(|d| d.pasid_width > 0 && d.group != u32::MAX)
        .map(|d| (d.group, d.source_id, d.name.clone()))
        .collect();
    let (c, group) = client.nesting_container_any(groups.iter().map(|g| g.0))?;
    let (sid, name) = groups
        .iter()
        .find(|g| g.0 == group)
        .map(|g| (g.1, g.2.clone()))
        .unwrap_or_default();
    let cap = client.nesting_info(c)?;
    step(
        format!("Open a nesting container for group {group} (device {name})"),
        cap.is_some(),
        match cap {
            Some(cap) => format!(
                "VFIO_SET_IOMMU(VFIO_TYPE1_NESTING_IOMMU) done; GET_INFO reports the nesting capability: {}-bit PASIDs, a {}-bit domain address width, features {:#x}.",
                cap.pasid_bits,
                cap.addr_width,
                cap.features.bits()
            ),
            None => "GET_INFO has no nesting capability".into(),
        },
        t,
    );

    let t = Instant::now();
    let mem = GuestMemory::new(0, GUEST_RAM)?;
    let region = client.attach_guest_memory(c, &mem)?;
    step(
        "Share 16 MiB of guest RAM with the daemon".into(),
        true,
        format!("A sealed memfd is passed with SCM_RIGHTS (region {region}) and mapped 1:1 (guest-physical = I/O virtual) into the container's stage 2 with MAP_DMA."),
        t,
    );

    let t = Instant::now();
    let a = client.pasid_alloc(c, 1, u32::MAX)?;
    let b = client.pasid_alloc(c, 1, u32::MAX)?;
    step(
        "The guest asks for two PASIDs".into(),
        a != b,
        format!("VFIO_IOMMU_PASID_REQUEST(ALLOC) twice: PASIDs {a} and {b}, owned by this process and counted against its quota."),
        t,
    );

    let t = Instant::now();
    let mut pt = PageTables::new(&mem, PT_POOL, PT_POOL_SIZE, 4)?;
    pt.map(GVA, DATA, P | RW | US)?;
    pt.map(GVA + 0x1000, DATA + 0x1000, P | RW | US)?;
    let message = b"hello from the guest";
    mem.write(DATA, message)?;
    step(
        "The guest builds a 4-level page table in its own memory".into(),
        true,
        format!("Root at guest-physical {:#x}; virtual {GVA:#x} -> {DATA:#x} and {:#x} -> {:#x}; it writes {:?} at {DATA:#x}.", pt.root(), GVA + 0x1000, DATA + 0x1000, String::from_utf8_lossy(message)),
        t,
    );

    let t = Instant::now();
    let ctrl = client.enable_pasid(sid)?;
    step(
        format!("The guest driver enables PASID on {name}"),
        ctrl & 1 == 1,
        format!(
            "It finds the PASID extended capability at 0x100 of the device's configuration space and writes {ctrl:#x} to its control register (PASID Enable{}{}).",
            if ctrl & 2 != 0 { ", Execute" } else { "" },
            if ctrl & 4 != 0 { ", Privileged" } else { "" }
        ),
        t,
    );

    let t = Instant::now();
    let bind = BindRequest::new(u64::from(a), pt.root(), AddrWidth::Bits48);
    client.bind(c, &bind)?;
    step(
        format!("Bind PASID {a} to the guest's page table"),
        true,
        format!("VFIO_IOMMU_NESTING_OP(BIND_PGTBL): PASID {a}'s entry is now nested: first level = the guest table at {:#x}, second level = the container's stage 2.", pt.root()),
        t,
    );

    let t = Instant::now();
    let read = client.dma_read(sid, Some(a), GVA, message.len() as u32);
    let (ok, detail) = match &read {
        Ok(data) => (data == message, format!("{name} reads {} bytes at {GVA:#x} with PASID {a}: {:?} — every table of the walk was itself translated through stage 2:\n\n{}", data.len(), String::from_utf8_lossy(data), diagram::two_stage_walk(mem.memory(), pt.root(), GVA, a, mem.base()))),
        Err(e) => (false, format!("the read failed: {e}")),
    };
    step(
        format!("The device reads guest virtual memory with PASID {a}"),
        ok,
        detail,
        t,
    );

    let t = Instant::now();
    let written = b"written by the device";
    let w = client.dma_write(sid, Some(a), GVA + 0x1000, written);
    let mut back = vec![0u8; written.len()];
    mem.read(DATA + 0x1000, &mut back)?;
    step(
        format!("The device writes through PASID {a}"),
        w.is_ok() && back == written,
        match w {
            Ok(()) => format!("It writes {:?} at {:#x}; the guest finds it at guest-physical {:#x} in its own memory.", String::from_utf8_lossy(written), GVA + 0x1000, DATA + 0x1000),
            Err(e) => format!("the write failed: {e}"),
        },
        t,
    );

    let t = Instant::now();
    pt.unmap(GVA)?;
    let stale = client.dma_read(sid, Some(a), GVA, 5);
    let (ok, mut detail) = judge_stale_read(&stale, &message[..5]);
    if let Ok(d) = &stale {
        let pte = format!("PT[{}]", (GVA >> 12) & 511);
        let pic = diagram::stale_iotlb(a, GVA, DATA, &pte, &String::from_utf8_lossy(d));
        detail = format!("{detail}\n\n{pic}");
    }
    step(
        "The guest unmaps the page but does not invalidate yet".into(),
        ok,
        detail,
        t,
    );

    let t = Instant::now();
    let inv = CacheInvalidateRequest::new(
        CacheSet::IOTLB,
        Granularity::Addr {
            pasid: Some(u64::from(a)),
            archid: None,
            addr: GVA,
            granule_size: 4096,
            nb_granules: 1,
            leaf: true,
        },
    )
    .map_err(|e| CliError::msg(e.to_string()))?;
    client.invalidate(c, &inv)?;
    let after = client.dma_read(sid, Some(a), GVA, 5);
    let (ok, detail) = match after {
        Err(ClientError::DmaFault(f)) => (
            f.reason == 0x71,
            format!("VFIO_IOMMU_NESTING_OP(CACHE_INVLD), address granularity, one page. The next read faults: reason {:#04x} ({}) at {:#x}, level {}.", f.reason, f.description, f.addr, f.level),
        ),
        Err(e) => (false, format!("the read failed differently: {e}")),
        Ok(_) => (false, "the read still succeeded after the invalidation".into()),
    };
    step(
        "The guest invalidates the IOTLB for that page".into(),
        ok,
        detail,
        t,
    );

    let t = Instant::now();
    let unbound = client.dma_read(sid, Some(b), GVA, 5);
    let (ok, detail) = match unbound {
        Err(ClientError::DmaFault(f)) => (
            true,
            format!(
                "PASID {b} is allocated but not bound: the read faults with reason {:#04x} ({}).",
                f.reason, f.description
            ),
        ),
        Err(e) => (false, format!("the read failed differently: {e}")),
        Ok(_) => (false, "the read succeeded through an unbound PASID".into()),
    };
    step(
        format!("The device tries PASID {b}, which has no page table"),
        ok,
        detail,
        t,
    );

    let t = Instant::now();
    let faults = client.faults(16)?;
    let mine = faults
        .faults
        .iter()
        .filter(|f| f.pasid == a || f.pasid == b)
        .count();
    step(
        "Ask the daemon for the fault log".into(),
        mine >= 2,
        format!(
            "{} fault record(s) visible to this process ({} recorded since the daemon started).",
            faults.faults.len(),
            faults.total
        ),
        t,
    );

    let t = Instant::now();
    client.unbind(c, &bind)?;
    client.pasid_free(c, 0, u32::MAX)?;
    let me = client.hello().credentials.pid;
    let left = client
        .sets()?
        .into_iter()
        .find(|s| s.credentials.pid == me)
        .map_or(0, |s| s.pasids.len());
    step(
        "Unbind and free every PASID".into(),
        left == 0,
        format!("NESTING_OP(UNBIND_PGTBL) and PASID_REQUEST(FREE) of [0, 0xffffffff]: the IOMMU tore the entries down before the numbers became free again; this process owns {left} PASIDs now."),
        t,
    );
    // The story is told; a close that fails leaves the container to the end of the
    // connection, which closes it.
    let _ = client.close_container(c);
    page_fault_chapter(client, &mut |title, ok, detail, t| {
        step(title, ok, detail, t)
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stale_read_passes_only_with_the_old_data() {
        let fault = ClientError::Closed(String::new());
        let cases: [(Result<Vec<u8>, ClientError>, bool); 3] = [
            (Ok(b"hello".to_vec()), true),
            (Ok(b"\0\0\0\0\0".to_vec()), false),
            (Err(fault), false),
        ];
        for (read, want) in cases {
            let (ok, detail) = judge_stale_read(&read, b"hello");
            assert_eq!(ok, want, "{read:?}: {detail}");
        }
    }
}
