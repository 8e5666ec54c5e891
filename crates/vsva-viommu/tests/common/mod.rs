//! The guest side of the tests, written once for both back ends: a model of the Linux
//! intel-iommu driver's register-level sequences (`dmar.c`, `iommu.c`, `pasid.c`, `svm.c`)
//! against a [`Viommu`], and the scenario every back end runs.

#![allow(dead_code, missing_docs)]

pub mod local;

use std::sync::{Arc, Mutex};

use vsva_iommu::SourceId;
use vsva_viommu::regs::*;
use vsva_viommu::vcmd::{VCMD_ALLOC, VCMD_FREE, VCMD_OPERAND_SHIFT, VCRSP_IP, VCRSP_SC_SHIFT};
use vsva_viommu::{GuestMemory, MsiMessage, Viommu};

/// The guest device's requester id in the guest (the host's differs).
pub const GUEST_SID: SourceId = SourceId::new(0, 5, 0);
/// Guest RAM size used by both machines.
pub const GUEST_RAM: u64 = 16 << 20;
/// Where the driver allocates its tables from.
const TABLES: u64 = 1 << 20;
/// The data page the guest maps at [`GVA`].
pub const DATA_GPA: u64 = 4 << 20;
/// A guest virtual address in the bound process.
pub const GVA: u64 = 0x7f00_1234_0000;
/// Fault event MSI the driver programs.
pub const FAULT_MSI: MsiMessage = MsiMessage {
    address: 0xfee0_1000,
    data: 0x41,
};
/// Invalidation completion MSI the driver programs.
pub const INV_MSI: MsiMessage = MsiMessage {
    address: 0xfee0_2000,
    data: 0x42,
};

/// The guest's device as the scenario drives it, and the host's view of the process.
pub trait Device {
    /// Turns PASID on in the device's config space (the guest's PCI driver does it).
    fn enable_pasid(&mut self);
    /// A DMA write by the guest's device with `pasid`.
    fn dma_write(&mut self, pasid: u32, iova: u64, data: &[u8]) -> Result<(), String>;
    /// Whether the host still has `pasid` allocated to this process.
    fn host_owns(&mut self, pasid: u32) -> bool;
}

/// What a test machine lends the scenario.
pub struct Parts<'a> {
    pub viommu: &'a Viommu,
    pub ram: &'a dyn GuestMemory,
    pub dev: &'a mut dyn Device,
    pub irqs: &'a Mutex<Vec<MsiMessage>>,
}

/// A collecting interrupt sink.
#[allow(clippy::type_complexity)]
pub fn irq_log() -> (
    Arc<Mutex<Vec<MsiMessage>>>,
    Arc<dyn vsva_viommu::InterruptSink>,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let sink = Arc::new(move |m: MsiMessage| l.lock().unwrap().push(m));
    (log, sink)
}

/// The guest's IOMMU driver.
pub struct GuestDriver<'a> {
    pub mmio: &'a Viommu,
    pub ram: &'a dyn GuestMemory,
    next_page: u64,
    pub root: u64,
    pub dir: u64,
    pub queue: u64,
    pub status: u64,
    tail: u64,
    gsts: u32,
}

impl<'a> GuestDriver<'a> {
    pub fn new(mmio: &'a Viommu, ram: &'a dyn GuestMemory) -> Self {
        GuestDriver {
            mmio,
            ram,
            next_page: TABLES,
            root: 0,
            dir: 0,
            queue: 0,
            status: 0,
            tail: 0,
            gsts: 0,
        }
    }

    /// Picks up a unit `init` set up earlier: its queue, tail, status page and the PASID
    /// directory of [`GUEST_SID`]; new tables come from a fresh part of RAM.
    pub fn resume(&mut self) {
        self.queue = self.mmio.read(IQA, 8) & !0xfff;
        self.tail = self.mmio.read(IQT, 8);
        self.status = self.queue + 4096;
        self.root = self.mmio.read(RTADDR, 8) & !0xfff;
        let ctx = self
            .ram
            .read_u64(self.root + u64::from(GUEST_SID.bus()) * 16)
            .unwrap()
            & !0xfff;
        self.dir = self
            .ram
            .read_u64(ctx + u64::from(GUEST_SID.devfn() & 0x7f) * 32)
            .unwrap()
            & !0xfff;
        self.next_page = TABLES + 256 * 4096;
    }

    /// A zeroed 4 KiB page of guest RAM.
    pub fn page(&mut self) -> u64 {
        let p = self.next_page;
        self.next_page += 4096;
        self.ram.write(p, &[0u8; 4096]).unwrap();
        p
    }

    fn w64(&self, gpa: u64, v: u64) {
        self.ram.write(gpa, &v.to_le_bytes()).unwrap();
    }

    /// `dmar_readq` / `readl`.
    pub fn read(&self, reg: u64, size: usize) -> u64 {
        self.mmio.read(reg, size)
    }

    /// `iommu->gcmd | cmd`, then wait for the status bit (`IOMMU_WAIT_OP`).
    fn global_command(&mut self, cmd: u32, on: bool) {
        let sts = self.read(GSTS, 4) as u32;
        // Keep the persistent bits, drop the one-shot ones (0x96ffffff as Linux masks).
        let base = sts & 0x96ff_ffff;
        let v = if on { base | cmd } else { base & !cmd };
        self.mmio.write(GCMD, 4, u64::from(v));
        let sts = self.read(GSTS, 4) as u32;
        assert_eq!(sts & cmd != 0, on, "GSTS {sts:#x} after command {cmd:#x}");
        self.gsts = sts;
    }

    /// Initialisation, in the Linux order: capabilities, root table + SRTP, queued
    /// invalidation, context entry + PASID directory (and their invalidations), fault event
    /// registers, translation enable.
    pub fn init(&mut self, bus_devfn: SourceId) {
        let cap = self.read(CAP, 8);
        let ecap = self.read(ECAP, 8);
        assert_eq!(self.read(VER, 4), 0x30);
        assert_ne!(ecap >> 43 & 1, 0, "SMTS");
        assert_ne!(ecap >> 44 & 1, 0, "VCS");
        assert_ne!(ecap >> 40 & 1, 0, "PASID");
        assert_ne!(ecap >> 1 & 1, 0, "QI");
        assert_eq!(self.read(VCCAP, 8) & 1, 1, "VCCAP.PAS");
        assert_ne!(cap >> 39 & 1, 0, "PSI");
        // Root table, scalable mode (TTM = 01b), SRTP.
        self.root = self.page();
        self.mmio.write(RTADDR, 8, self.root | 1 << 10);
        self.global_command(1 << 30, true);
        // Queued invalidation: IQT = 0, IQA (256-bit descriptors, one page), QIE.
        self.queue = self.page();
        self.status = self.page();
        self.mmio.write(IQT, 8, 0);
        self.mmio.write(IQA, 8, self.queue | 1 << 11);
        self.global_command(1 << 26, true);
        assert_eq!(self.read(IQH, 8), 0);
        // Fault event interrupt.
        self.mmio.write(FEDATA, 4, u64::from(FAULT_MSI.data));
        self.mmio.write(FEADDR, 4, FAULT_MSI.address);
        self.mmio.write(FEUADDR, 4, 0);
        self.mmio.write(FECTL, 4, 0);
        // Context entry: PASID enabled, PDTS = 0 (128 directory entries), the directory.
        let ctx = self.page();
        self.dir = self.page();
        let bus = u64::from(bus_devfn.bus());
        self.w64(self.root + bus * 16, ctx | 1);
        let ce = ctx + u64::from(bus_devfn.devfn() & 0x7f) * 32;
        self.w64(ce, self.dir | 1 << 3 | 1);
        self.w64(ce + 8, 0);
        // Global context-cache, PASID-cache and IOTLB invalidations, then a wait.
        self.submit(&[
            [1 | 1 << 4, 0, 0, 0],
            [7 | 3 << 4, 0, 0, 0],
            [2 | 1 << 4, 0, 0, 0],
        ]);
        self.wait(1);
        self.global_command(1 << 31, true);
    }

    /// Writes descriptors at the tail and moves IQT (`qi_submit_sync`'s first half).
    pub fn submit(&mut self, descs: &[[u64; 4]]) {
        for d in descs {
            for (i, w) in d.iter().enumerate() {
                self.w64(self.queue + self.tail + 8 * i as u64, *w);
            }
            self.tail = (self.tail + 32) % 4096;
        }
        self.mmio.write(IQT, 8, self.tail);
    }

    /// A wait descriptor with a status write; checks the status arrived.
    pub fn wait(&mut self, data: u32) {
        self.submit(&[wait_desc(self.status, data, false)]);
        assert_eq!(self.ram_u32(self.status), data, "wait status");
    }

    pub fn ram_u32(&self, gpa: u64) -> u32 {
        let mut b = [0u8; 4];
        self.ram.read(gpa, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    /// VCMD allocate (Linux `vcmd_alloc_pasid`).
    pub fn vcmd_alloc(&mut self) -> Option<u32> {
        self.mmio.write(VCMD, 8, VCMD_ALLOC);
        let rsp = self.read(VCRSP, 8);
        assert_eq!(rsp & VCRSP_IP, 0, "command done within the write");
        match (rsp & 0xff) >> VCRSP_SC_SHIFT {
            0 => Some((rsp >> VCMD_OPERAND_SHIFT & 0xf_ffff) as u32),
            _ => None,
        }
    }

    /// VCMD free (Linux `vcmd_free_pasid`); whether it succeeded.
    pub fn vcmd_free(&mut self, pasid: u32) -> bool {
        self.mmio
            .write(VCMD, 8, u64::from(pasid) << VCMD_OPERAND_SHIFT | VCMD_FREE);
        (self.read(VCRSP, 8) & 0xff) >> VCRSP_SC_SHIFT == 0
    }

    fn pasid_entry_addr(&mut self, pasid: u32) -> u64 {
        let de = self.dir + u64::from(pasid >> 6) * 8;
        let mut b = [0u8; 8];
        self.ram.read(de, &mut b).unwrap();
        let mut table = u64::from_le_bytes(b) & !0xfff;
        if table == 0 {
            table = self.page();
            self.w64(de, table | 1);
        }
        table + u64::from(pasid & 63) * 64
    }

    /// SVA bind (`intel_pasid_setup_first_level` + `pasid_cache_invalidation_with_pasid`,
    /// IOTLB and device-TLB flushes, wait).
    pub fn sva_bind(&mut self, pasid: u32, pgd: u64, did: u16) {
        let pe = self.pasid_entry_addr(pasid);
        self.w64(pe + 8, u64::from(did) | 1 << 24);
        self.w64(pe + 16, pgd);
        self.w64(pe, 1 | 1 << 6); // P, PGTT = first level, written last
        self.flush_pasid(pasid, did);
    }

    /// Tear down (`intel_pasid_tear_down_entry`): clear P, flush.
    pub fn sva_unbind(&mut self, pasid: u32, did: u16) {
        let pe = self.pasid_entry_addr(pasid);
        for i in 0..8 {
            self.w64(pe + 8 * i, 0);
        }
        self.flush_pasid(pasid, did);
    }

    fn flush_pasid(&mut self, pasid: u32, did: u16) {
        let p = u64::from(pasid) << 32 | u64::from(did) << 16;
        let sid = u64::from(GUEST_SID.0) << 16;
        self.submit(&[
            [7 | 1 << 4 | p, 0, 0, 0],
            [6 | 2 << 4 | p, 0, 0, 0],
            [
                8 | sid | u64::from(pasid) << 32,
                0x7fff_ffff_f000 | 1 << 11,
                0,
                0,
            ],
        ]);
        self.wait(pasid);
    }

    /// A 4-level first-level table mapping `gva` to `gpa` (user, writable).
    pub fn map_page(&mut self, gva: u64, gpa: u64) -> u64 {
        let root = self.page();
        self.map_into(root, gva, gpa);
        root
    }

    /// Maps `gva` to `gpa` (user, writable) in the first-level table at `root`, adding the
    /// tables that are missing.
    pub fn map_into(&mut self, root: u64, gva: u64, gpa: u64) {
        let mut table = root;
        for shift in [39u32, 30, 21] {
            let e = table + (gva >> shift & 0x1ff) * 8;
            let mut next = self.ram.read_u64(e).unwrap() & 0x000f_ffff_ffff_f000;
            if next == 0 {
                next = self.page();
                self.w64(e, next | 7);
            }
            table = next;
        }
        self.w64(table + (gva >> 12 & 0x1ff) * 8, gpa | 7);
    }

    /// The page request queue and its event (`intel_svm_enable_prq`): one page, PQH = PQT = 0.
    pub fn enable_prq(&mut self) {
        let prq = self.page();
        self.mmio.write(PQH, 8, 0);
        self.mmio.write(PQT, 8, 0);
        self.mmio.write(PQA, 8, prq);
        self.mmio.write(PEDATA, 4, 0x43);
        self.mmio.write(PEADDR, 4, 0xfee0_3000);
        self.mmio.write(PECTL, 4, 0);
    }

    /// The next page request descriptor (`prq_event_thread`: clear PPR, read from PQH to
    /// PQT, move PQH), or `None` when the queue is empty.
    pub fn next_page_request(&mut self) -> Option<[u64; 4]> {
        self.mmio.write(PRS, 4, 1);
        let head = self.read(PQH, 8);
        if head == self.read(PQT, 8) {
            return None;
        }
        let base = self.read(PQA, 8) & !0xfff;
        let mut d = [0u64; 4];
        for (i, w) in d.iter_mut().enumerate() {
            *w = self.ram.read_u64(base + head + 8 * i as u64).unwrap();
        }
        self.mmio.write(PQH, 8, (head + 32) % 4096);
        Some(d)
    }

    /// Answers the group of page request `req` with `code` (`intel_svm_page_response`: a
    /// page group response descriptor, then a wait).
    pub fn page_group_response(&mut self, req: &[u64; 4], code: u64) {
        let rid = req[0] >> 16 & 0xffff;
        let pasid_present = req[0] >> 8 & 1;
        let pasid = req[0] >> 32 & 0xf_ffff;
        let group = req[1] >> 3 & 0x1ff;
        let last = req[1] >> 2 & 1;
        self.submit(&[[
            9 | pasid_present << 4 | code << 12 | rid << 16 | pasid << 32,
            group << 3 | last << 2,
            0,
            0,
        ]]);
        self.wait(0x9a9e);
    }
}

/// A 256-bit invalidation wait descriptor with a status write (and IF when `irq`).
pub fn wait_desc(addr: u64, data: u32, irq: bool) -> [u64; 4] {
    [
        5 | 1 << 5 | u64::from(irq) << 4 | u64::from(data) << 32,
        addr,
        0,
        0,
    ]
}

/// The scenario of the issue, through any back end.
pub fn scenario(p: Parts<'_>) {
    let Parts {
        viommu,
        ram,
        dev,
        irqs,
    } = p;
    let mut g = GuestDriver::new(viommu, ram);
    g.init(GUEST_SID);
    let did = 7;

    // SVA bind: VCMD allocate, a first-level table, the PASID entry and its flushes.
    let pasid = g.vcmd_alloc().expect("VCMD allocate");
    assert!(pasid > 0);
    assert!(
        dev.host_owns(pasid),
        "guest PASID = host PASID, the process's"
    );
    let pgd = g.map_page(GVA, DATA_GPA);
    g.sva_bind(pasid, pgd, did);
    assert_eq!(
        viommu.bound_pasids(),
        vec![pasid],
        "the entry became a host bind"
    );
    let stats = viommu.stats();
    assert_eq!((stats.binds, stats.queue_errors), (1, 0));

    // DMA through the bound guest table.
    dev.enable_pasid();
    let msg = b"through the guest's page table";
    dev.dma_write(pasid, GVA + 0x10, msg)
        .expect("DMA through the bound table");
    let mut landed = vec![0u8; msg.len()];
    ram.read(DATA_GPA + 0x10, &mut landed).unwrap();
    assert_eq!(landed, msg);

    // A fault reaches the guest's fault registers and its interrupt.
    let before = irqs.lock().unwrap().len();
    assert!(dev.dma_write(pasid, GVA + 0x20_0000, b"x").is_err());
    assert_eq!(viommu.poll().unwrap().faults, 1);
    let fsts = g.read(FSTS, 4) as u32;
    assert_ne!(fsts & 2, 0, "PPF");
    let fri = u64::from(fsts >> 8 & 0xff);
    let hi = g.read(FRCD_BASE + 16 * fri + 8, 8);
    let lo = g.read(FRCD_BASE + 16 * fri, 8);
    assert_ne!(hi & 1 << 63, 0, "F");
    assert_eq!(hi & 0xffff, u64::from(GUEST_SID.0), "guest requester id");
    assert_eq!(hi >> 32 & 0xff, 0x71, "first-level entry not present");
    assert_ne!(hi & 1 << 31, 0, "PASID present");
    assert_eq!(hi >> 40 & 0xf_ffff, u64::from(pasid));
    assert_eq!(hi & 1 << 62, 0, "a write");
    assert_eq!(lo, (GVA + 0x20_0000) & !0xfff);
    assert_eq!(&irqs.lock().unwrap()[before..], &[FAULT_MSI], "fault event");
    // The driver clears F; PPF goes.
    viommu.write(FRCD_BASE + 16 * fri + 8, 8, 1 << 63);
    assert_eq!(g.read(FSTS, 4) as u32 & 2, 0);

    // A malformed descriptor stops the queue with IQE; IQH stays on it.
    let head = g.read(IQH, 8);
    g.submit(&[[4, 0, 0, 0], wait_desc(g.status, 0xbad, false)]);
    assert_ne!(g.read(FSTS, 4) as u32 & 1 << 4, 0, "IQE");
    assert_eq!(g.read(IQERCD, 8) & 0xf, 3, "invalid descriptor type");
    assert_eq!(g.read(IQH, 8), head, "IQH stays at the bad descriptor");
    assert_ne!(g.ram_u32(g.status), 0xbad, "nothing after it ran");
    // Linux's qi_check_fault: copy a wait over it, clear IQE; fetching resumes.
    for (i, w) in wait_desc(g.status, 0x600d, false).iter().enumerate() {
        ram.write(g.queue + head + 8 * i as u64, &w.to_le_bytes())
            .unwrap();
    }
    viommu.write(FSTS, 4, 1 << 4);
    assert_eq!(g.read(FSTS, 4) as u32 & 1 << 4, 0);
    assert_eq!(g.ram_u32(g.status), 0xbad, "both waits ran, in order");
    assert_eq!(g.read(IQH, 8), g.read(IQT, 8));

    // Unbind: the entry cleared and flushed; then VCMD free; DMA now faults.
    g.sva_unbind(pasid, did);
    assert!(
        viommu.bound_pasids().is_empty(),
        "cleared entry became an unbind"
    );
    assert!(dev.host_owns(pasid), "unbound, still allocated");
    assert!(g.vcmd_free(pasid), "VCMD free");
    assert!(!g.vcmd_free(pasid), "a second free is refused");
    assert!(dev.dma_write(pasid, GVA + 0x10, b"x").is_err());
    assert!(!dev.host_owns(pasid), "the host freed it");
    let s = viommu.stats();
    assert_eq!((s.binds, s.unbinds, s.queue_errors), (1, 1, 1));
}
