//! The device model's rules one by one, in process: global commands, virtual command
//! errors, queue errors and their IQEI codes, wait interrupts and masking, shadowing of
//! changed and foreign entries, host invalidations, fault overflow, page requests and page
//! group responses, register-based invalidation.

mod common;

use std::error::Error;
use std::sync::{Arc, Mutex};

use common::local::{LocalMachine, HOST_SID};
use common::{wait_desc, GuestDriver, DATA_GPA, GUEST_SID, GVA, INV_MSI};
use vsva_iommu::prq::{PageRequest, PageResponse, ResponseCode};
use vsva_iommu::Access;
use vsva_viommu::regs::*;
use vsva_viommu::vcmd::{VCMD_OPERAND_SHIFT, VCRSP_SC_FAILED, VCRSP_SC_SHIFT};
use vsva_viommu::{GuestMemory, HostFault, PageRequestSource, ViommuConfig};

/// A machine whose guest driver has run its initialisation.
fn booted() -> LocalMachine {
    let m = LocalMachine::new();
    GuestDriver::new(&m.viommu, &*m.ram).init(GUEST_SID);
    m
}

/// A driver continuing where `init` left the unit (its queue, status page and directory).
fn driver(m: &LocalMachine) -> GuestDriver<'_> {
    let mut g = GuestDriver::new(&m.viommu, &*m.ram);
    g.resume();
    g
}

#[test]
fn global_commands_one_at_a_time_with_status_after() {
    let m = LocalMachine::new();
    let v = &m.viommu;
    v.write(RTADDR, 8, 0x10_0000 | 1 << 10);
    // Two commands in one write (SRTP and QIE): ignored.
    v.write(GCMD, 4, 1 << 30 | 1 << 26);
    assert_eq!(v.read(GSTS, 4), 0);
    v.write(GCMD, 4, 1 << 30);
    assert_eq!(v.read(GSTS, 4), 1 << 30, "RTPS");
    assert_eq!(v.read(GCMD, 4), 0, "GCMD reads zero");
    // TE with the persistent bits kept; then off again.
    v.write(GCMD, 4, 1 << 31);
    assert_eq!(v.read(GSTS, 4), 1 << 31 | 1 << 30);
    v.write(GCMD, 4, 0);
    assert_eq!(v.read(GSTS, 4) as u32 & 1 << 31, 0);
    // Interrupt remapping is not offered: IRE changes nothing.
    v.write(GCMD, 4, 1 << 25);
    assert_eq!(v.read(GSTS, 4) as u32 & 1 << 25, 0);
}

#[test]
fn translation_disable_unbinds_and_enable_binds_again() {
    let m = booted();
    let mut g = driver(&m);
    let pasid = g.vcmd_alloc().unwrap();
    let pgd = g.map_page(GVA, DATA_GPA);
    g.sva_bind(pasid, pgd, 3);
    assert_eq!(m.viommu.bound_pasids(), vec![pasid]);
    // Linux keeps the persistent status bits and drops the one-shot ones (RTPS among them).
    let sts = m.viommu.read(GSTS, 4) & 0x96ff_ffff;
    m.viommu.write(GCMD, 4, sts & !(1 << 31));
    assert!(m.viommu.bound_pasids().is_empty());
    m.viommu.write(GCMD, 4, sts);
    assert_eq!(m.viommu.bound_pasids(), vec![pasid]);
}

#[test]
fn virtual_command_refusals() {
    let m = booted();
    let mut g = driver(&m);
    let failed = VCRSP_SC_FAILED << VCRSP_SC_SHIFT;
    // Freeing a PASID the guest never allocated (the host's or another process's).
    assert!(!g.vcmd_free(5));
    assert_eq!(m.viommu.read(VCRSP, 8), failed);
    // An unknown command.
    m.viommu.write(VCMD, 8, 0x77);
    assert_eq!(m.viommu.read(VCRSP, 8), failed);
    // Allocations are the host's, one after the other; 32-bit halves work too.
    let a = g.vcmd_alloc().unwrap();
    m.viommu.write(VCMD + 4, 4, 0);
    m.viommu.write(VCMD, 4, 1);
    let b = (m.viommu.read(VCRSP, 8) >> VCMD_OPERAND_SHIFT) as u32;
    assert_ne!(a, b);
    assert_eq!(m.viommu.allocated_pasids(), vec![a, b]);
}

#[test]
fn quota_exhaustion_answers_no_pasid() {
    let m = booted();
    m.host.vfio.set_pasid_quota(common::local::VMM, 1).unwrap();
    let mut g = driver(&m);
    assert!(g.vcmd_alloc().is_some());
    assert_eq!(g.vcmd_alloc(), None, "no PASID available");
}

#[test]
fn queue_errors_and_their_codes() {
    let cases: &[(&str, [u64; 4], u64)] = &[
        ("invalid type", [4, 0, 0, 0], 3),
        ("reserved bit", [7 | 1 << 60, 0, 0, 0], 4),
        ("reserved qword of a 256-bit descriptor", [7, 0, 1, 0], 4),
        ("reserved granularity", [6 | 1 << 4, 0, 0, 0], 4),
    ];
    for (what, desc, code) in cases {
        let m = booted();
        let mut g = driver(&m);
        g.submit(&[*desc]);
        assert_ne!(m.viommu.read(FSTS, 4) & 1 << 4, 0, "{what}: IQE");
        assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, *code, "{what}");
        assert_ne!(
            m.viommu.read(IQH, 8),
            m.viommu.read(IQT, 8),
            "{what}: stopped"
        );
    }
    // IQT bit 4 with 256-bit descriptors: a tail not aligned to a descriptor.
    let m = booted();
    m.viommu.write(IQT, 8, 0x10);
    assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, 6, "misaligned tail");
    // A tail past the end of the queue (IQA.QS 0: 4 KiB, 128 descriptors of 32 bytes).
    let m = booted();
    let iqa = m.viommu.read(IQA, 8);
    m.viommu.write(IQA, 8, iqa & !7);
    m.viommu.write(IQT, 8, 0x1000);
    assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, 1, "tail beyond the queue");
    // 128-bit descriptors while the root table is in scalable mode.
    let m = booted();
    let iqa = m.viommu.read(IQA, 8);
    m.viommu.write(IQA, 8, iqa & !(1 << 11));
    m.viommu.write(IQT, 8, 0x10);
    assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, 5, "width");
    // A queue outside guest RAM.
    let m = booted();
    m.viommu.write(IQA, 8, (1u64 << 40) | 1 << 11);
    m.viommu.write(IQT, 8, 0x20);
    assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, 2, "fetch");
}

/// IQEI 7, an invalid TTM: RTADDR latched (by SRTP) with TTM = 10b, the reserved encoding,
/// stops the queue, before the tail is checked — as VirtualBox's VT-d model does
/// (`VTDIQEI_INVALID_TTM`, reported from `dmarR3InvQueueThread` when TTM is `VTD_TTM_RSVD`).
#[test]
fn reserved_ttm_stops_the_queue_with_iqei_7() {
    let m = booted();
    let mut g = driver(&m);
    let rt = m.viommu.read(RTADDR, 8) & !0xfff;
    m.viommu.write(RTADDR, 8, rt | 2 << 10);
    let sts = m.viommu.read(GSTS, 4) & 0x96ff_ffff;
    m.viommu.write(GCMD, 4, sts | 1 << 30);
    let head = m.viommu.read(IQH, 8);
    g.submit(&[wait_desc(g.status, 1, false)]);
    assert_ne!(m.viommu.read(FSTS, 4) & 1 << 4, 0, "IQE");
    assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, 7, "invalid TTM");
    assert_eq!(m.viommu.read(IQH, 8), head, "nothing fetched");
    // A tail beyond the queue is reported as the TTM all the same (checked first).
    let m = booted();
    let rt = m.viommu.read(RTADDR, 8) & !0xfff;
    m.viommu.write(RTADDR, 8, rt | 2 << 10);
    let sts = m.viommu.read(GSTS, 4) & 0x96ff_ffff;
    m.viommu.write(GCMD, 4, sts | 1 << 30);
    let iqa = m.viommu.read(IQA, 8);
    m.viommu.write(IQA, 8, iqa & !7);
    m.viommu.write(IQT, 8, 0x1000);
    assert_eq!(m.viommu.read(IQERCD, 8) & 0xf, 7);
}

#[test]
fn wait_interrupt_with_mask_and_unmask() {
    let m = booted();
    let mut g = driver(&m);
    m.viommu.write(IEDATA, 4, u64::from(INV_MSI.data));
    m.viommu.write(IEADDR, 4, INV_MSI.address);
    m.viommu.write(IECTL, 4, 1 << 31); // masked
    let base = m.irqs.lock().unwrap().len();
    g.submit(&[wait_desc(g.status, 9, true)]);
    assert_eq!(m.viommu.read(ICS, 4), 1, "IWC");
    assert_eq!(
        m.viommu.read(IECTL, 4),
        1 << 31 | 1 << 30,
        "IP while masked"
    );
    assert_eq!(m.irqs.lock().unwrap().len(), base);
    m.viommu.write(IECTL, 4, 0);
    assert_eq!(m.irqs.lock().unwrap()[base..], [INV_MSI], "sent on unmask");
    assert_eq!(m.viommu.read(IECTL, 4), 0);
    // IWC still set: the next wait raises nothing; cleared, it does again.
    g.submit(&[wait_desc(g.status, 10, true)]);
    assert_eq!(m.irqs.lock().unwrap().len(), base + 1);
    m.viommu.write(ICS, 4, 1);
    g.submit(&[wait_desc(g.status, 11, true)]);
    assert_eq!(m.irqs.lock().unwrap().len(), base + 2);
}

#[test]
fn changed_entries_rebind_and_foreign_ones_are_not_bound() {
    let m = booted();
    let mut g = driver(&m);
    let pasid = g.vcmd_alloc().unwrap();
    let pgd = g.map_page(GVA, DATA_GPA);
    g.sva_bind(pasid, pgd, 3);
    let other = g.map_page(GVA, DATA_GPA + 0x1000);
    g.sva_bind(pasid, other, 3); // the entry now points elsewhere
    let s = m.viommu.stats();
    assert_eq!((s.binds, s.unbinds), (2, 1), "unbind + bind");
    let dev = m.dev.dev.clone();
    dev.config_write(0x106, vsva_vfio::ConfigWidth::Word, 1)
        .unwrap();
    dev.dma_write(Some(pasid), GVA, b"new").unwrap();
    let mut b = [0u8; 3];
    m.ram.read(DATA_GPA + 0x1000, &mut b).unwrap();
    assert_eq!(&b, b"new", "DMA follows the new table");
    // An entry for a PASID the guest did not allocate through VCMD is never bound.
    g.sva_bind(pasid + 100, pgd, 3);
    assert_eq!(m.viommu.bound_pasids(), vec![pasid]);
    assert_eq!(m.viommu.stats().bind_refusals, 1);
}

#[test]
fn a_changed_context_entry_counts_after_the_context_cache_invalidation() {
    let m = booted();
    let mut g = driver(&m);
    let pasid = g.vcmd_alloc().unwrap();
    let pgd = g.map_page(GVA, DATA_GPA);
    g.sva_bind(pasid, pgd, 3);
    // The driver moves the device to an empty PASID directory (`domain_context_clear_one`
    // then a new mapping): context-cache invalidation, then the PASID cache, then a wait.
    let ctx = m
        .ram
        .read_u64(g.root + u64::from(GUEST_SID.bus()) * 16)
        .unwrap()
        & !0xfff;
    let ce = ctx + u64::from(GUEST_SID.devfn() & 0x7f) * 32;
    let dir = g.page();
    m.ram.write(ce, &(dir | 1 << 3 | 1).to_le_bytes()).unwrap();
    let device = u64::from(GUEST_SID.0) << 32 | 3 << 4;
    g.submit(&[[1 | device, 0, 0, 0], [7 | 3 << 4, 0, 0, 0]]);
    g.wait(7);
    assert!(
        m.viommu.bound_pasids().is_empty(),
        "the new directory has no entry for the PASID: unbound"
    );
    // And back: the old directory after a register-based (CCMD, global) context-cache
    // invalidation binds again.
    m.ram
        .write(ce, &(g.dir | 1 << 3 | 1).to_le_bytes())
        .unwrap();
    m.viommu.write(CCMD, 8, 1 << 63 | 1 << 61);
    g.submit(&[[7 | 3 << 4, 0, 0, 0]]);
    g.wait(8);
    assert_eq!(m.viommu.bound_pasids(), vec![pasid]);
}

#[test]
fn pasid_invalidations_reach_the_host_only_for_bound_pasids() {
    let m = booted();
    let mut g = driver(&m);
    let pasid = g.vcmd_alloc().unwrap();
    let n0 = m.viommu.stats().host_invalidations;
    g.submit(&[[6 | 2 << 4 | u64::from(pasid) << 32, 0, 0, 0]]);
    assert_eq!(m.viommu.stats().host_invalidations, n0, "nothing bound");
    let pgd = g.map_page(GVA, DATA_GPA);
    g.sva_bind(pasid, pgd, 3); // PASID-cache, P-IOTLB, P-devTLB
    let n = m.viommu.stats().host_invalidations;
    assert_eq!(n, n0 + 2);
    g.submit(&[[6 | 3 << 4 | u64::from(pasid) << 32, GVA | 1 << 6 | 2, 0, 0]]);
    g.submit(&[[2 | 2 << 4 | 3 << 16, 0, 0, 0]]);
    assert_eq!(m.viommu.stats().host_invalidations, n + 2);
}

#[test]
fn fault_records_fill_and_overflow() {
    let m = LocalMachine::with(ViommuConfig {
        fault_records: 2,
        ..ViommuConfig::default()
    });
    GuestDriver::new(&m.viommu, &*m.ram).init(GUEST_SID);
    let f = |addr| HostFault {
        source_id: HOST_SID,
        pasid: None,
        addr,
        write: false,
        execute: true,
        privileged: true,
        reason: 0x81,
    };
    let stranger = HostFault {
        source_id: vsva_iommu::SourceId::new(0, 4, 0),
        ..f(0)
    };
    assert!(!m.viommu.inject_fault(stranger), "not the guest's device");
    assert!(m.viommu.inject_fault(f(0x1000)));
    assert!(m.viommu.inject_fault(f(0x2000)));
    assert_eq!(m.viommu.read(FSTS, 4) & 1, 0, "no overflow yet");
    assert!(m.viommu.inject_fault(f(0x3000)));
    assert_eq!(m.viommu.read(FSTS, 4) & 3, 3, "PFO and PPF");
    let hi = m.viommu.read(FRCD_BASE + 8, 8);
    assert_eq!(hi >> 62 & 1, 1, "T1: a read");
    assert_eq!(hi >> 29 & 3, 3, "EXE, PRIV");
    assert_eq!(hi >> 31 & 1, 0, "no PASID");
    assert_eq!(m.viommu.read(FRCD_BASE + 16, 8), 0x2000);
    assert_eq!(m.viommu.stats().faults_overflowed, 1);
    // Clearing one record frees its register; PPF stays until both are read.
    m.viommu.write(FRCD_BASE + 8, 8, 1 << 63);
    assert_eq!(m.viommu.read(FSTS, 4) & 2, 2);
    m.viommu.write(FRCD_BASE + 16 + 8, 8, 1 << 63);
    assert_eq!(m.viommu.read(FSTS, 4) & 2, 0);
    m.viommu.write(FSTS, 4, 1);
    assert_eq!(m.viommu.read(FSTS, 4) & 1, 0, "PFO cleared by software");
}

/// A page-request source fed by the test, recording the responses.
struct Injected {
    reqs: Vec<PageRequest>,
    responses: Arc<Mutex<Vec<PageResponse>>>,
}

impl PageRequestSource for Injected {
    fn take(&mut self) -> Vec<PageRequest> {
        std::mem::take(&mut self.reqs)
    }
    fn respond(&mut self, resp: PageResponse) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.responses.lock().unwrap().push(resp);
        Ok(())
    }
}

#[test]
fn page_requests_land_in_the_guest_queue_and_responses_go_back() {
    let m = booted();
    let mut g = driver(&m);
    let prq = g.page();
    m.viommu.write(PEDATA, 4, 0x43);
    m.viommu.write(PEADDR, 4, 0xfee0_3000);
    m.viommu.write(PQH, 8, 0);
    m.viommu.write(PQT, 8, 0);
    m.viommu.write(PQA, 8, prq);
    let req = |group| PageRequest {
        source_id: HOST_SID,
        pasid: Some(9),
        addr: 0x7000_1234,
        access: Access::WRITE,
        group,
        last: true,
    };
    let responses = Arc::new(Mutex::new(Vec::new()));
    m.viommu.set_page_request_source(Box::new(Injected {
        reqs: vec![req(5), req(6)],
        responses: responses.clone(),
    }));
    let before = m.irqs.lock().unwrap().len();
    assert_eq!(m.viommu.poll().unwrap().page_requests, 2);
    assert_eq!(m.viommu.read(PQT, 8), 64);
    assert_eq!(m.viommu.read(PRS, 4), 1, "PPR");
    assert_eq!(
        m.irqs.lock().unwrap().len(),
        before + 1,
        "one event for both"
    );
    let qw0 = m.ram.read_u64(prq).unwrap();
    let qw1 = m.ram.read_u64(prq + 8).unwrap();
    assert_eq!(
        qw0 >> 16 & 0xffff,
        u64::from(GUEST_SID.0),
        "guest requester id"
    );
    assert_eq!((qw0 >> 8 & 1, qw0 >> 32 & 0xf_ffff), (1, 9), "PASID");
    assert_eq!(qw1 & 7, 0b111, "read, write, last in group");
    assert_eq!((qw1 >> 3 & 0x1ff, qw1 & !0xfff), (5, 0x7000_1000));
    // The guest answers group 5 with a page group response descriptor.
    let resp = 9 | 1 << 4 | u64::from(GUEST_SID.0) << 16 | 9 << 32;
    g.submit(&[[resp, 5 << 3 | 1 << 2, 0, 0]]);
    assert_eq!(
        *responses.lock().unwrap(),
        vec![PageResponse {
            source_id: HOST_SID,
            pasid: Some(9),
            group: 5,
            code: ResponseCode::Success
        }]
    );
    // One slot left before the tail would reach the head: then PRO, and the request is
    // dropped.
    m.viommu.write(PQH, 8, 128);
    assert!(m.viommu.inject_page_request(req(7)));
    assert!(!m.viommu.inject_page_request(req(8)));
    assert_eq!(m.viommu.read(PRS, 4), 3, "PPR and PRO");
}

#[test]
fn register_based_invalidation_completes_at_once() {
    let m = booted();
    m.viommu.write(CCMD, 8, 1 << 63 | 1 << 61);
    assert_eq!(
        m.viommu.read(CCMD, 8),
        1 << 61 | 1 << 59,
        "ICC clear, CAIG = CIRG"
    );
    let n = m.viommu.stats().host_invalidations;
    m.viommu.write(IOTLB, 8, 1 << 63 | 2 << 60 | 3 << 32);
    assert_eq!(m.viommu.read(IOTLB, 8), 2 << 60 | 2 << 57 | 3 << 32);
    assert_eq!(m.viommu.stats().host_invalidations, n + 1);
}
