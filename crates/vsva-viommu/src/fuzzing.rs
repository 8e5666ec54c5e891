//! Interprets arbitrary bytes as a guest's register writes, queue contents, PASID entries,
//! virtual commands, faults and page requests against an in-process unit, next to another
//! process that holds PASIDs of its own. Used by the cargo-fuzz target
//! (`fuzz/fuzz_targets/mmio.rs`) and by a proptest twin on stable Rust. The property: nothing
//! panics, and the other process's PASIDs stay allocated to it and bound as they were; the
//! guest never holds a PASID its process does not own.

use std::sync::Arc;

use vsva_iommu::prq::PageRequest;
use vsva_iommu::{Access, HostMemory, Iommu, IommuConfig, SourceId};
use vsva_uapi::{AddrWidth, BindRequest};
use vsva_vfio::{
    Container, DmaMapping, GroupId, IommuType, PciFunctionSpec, ProcessToken, Vfio, VfioConfig,
};

use crate::regs::{GCMD, IQA, IQT, MMIO_SIZE, RTADDR, VCMD};
use crate::{GuestDevice, HostFault, HostWindow, LocalBackend, Viommu, ViommuConfig};

const MB: u64 = 1 << 20;
const RAM_HPA: u64 = 4 * MB;
const RAM: u64 = 4 * MB;
const GUEST: SourceId = SourceId::new(0, 3, 0);
const HOST: SourceId = SourceId::new(0, 3, 0);
const OTHER: ProcessToken = ProcessToken::new(2, 2);
const VMM: ProcessToken = ProcessToken::new(1, 1);
/// Guest-physical layout the interpreter biases towards.
const ROOT: u64 = 0x1000;
const CTX: u64 = 0x2000;
const DIR: u64 = 0x3000;
const TABLE: u64 = 0x4000;
const QUEUE: u64 = 0x5000;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..8 {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        Some(v)
    }
}

struct World {
    vfio: Vfio,
    viommu: Viommu,
    ram: HostWindow,
    other: Container,
    other_pasids: Vec<u32>,
    other_bound: Vec<u32>,
}

fn write_u64(ram: &HostWindow, gpa: u64, v: u64) {
    // Guest RAM writes inside the window cannot fail; outside it they are simply lost.
    let _ = crate::GuestMemory::write(ram, gpa, &v.to_le_bytes());
}

fn world() -> World {
    let mem = HostMemory::anonymous(&[(0, 16 * MB as usize)]).expect("host memory");
    let iommu = Arc::new(Iommu::new(IommuConfig::default(), mem, 12 * MB, 4 * MB).expect("iommu"));
    let vfio = Vfio::new(iommu.clone(), VfioConfig::default()).expect("vfio");
    let map = DmaMapping {
        vaddr: RAM_HPA,
        iova: 0,
        size: RAM,
        read: true,
        write: true,
    };
    let open = |token, group: u32, sid| {
        vfio.add_pci_function(PciFunctionSpec::new(sid, Some(GroupId(group))))
            .expect("function");
        let c = vfio.open_container(token);
        c.attach_group(GroupId(group)).expect("attach");
        c.set_iommu(IommuType::Nesting).expect("nesting");
        c.map_dma(&map).expect("map");
        c
    };
    let mine = open(VMM, 3, HOST);
    let other = open(OTHER, 4, SourceId::new(0, 4, 0));
    let other_pasids: Vec<u32> = (0..3)
        .map(|_| other.alloc_pasid(1, 64).expect("alloc"))
        .collect();
    other
        .bind(&BindRequest::new(
            u64::from(other_pasids[0]),
            0x8000,
            AddrWidth::Bits48,
        ))
        .expect("bind");
    let other_bound = other.bound_pasids();
    let ram = HostWindow::new(iommu.clone(), RAM_HPA, RAM);
    let config = ViommuConfig {
        devices: vec![GuestDevice {
            guest: GUEST,
            host: HOST,
        }],
        ..ViommuConfig::default()
    };
    let viommu = Viommu::new(
        config,
        Box::new(LocalBackend::new(mine, iommu)),
        Arc::new(ram.clone()),
        Arc::new(|_| {}),
    )
    .expect("viommu");
    // A booted guest: scalable root table, context entry with PASIDs, QI, TE.
    write_u64(&ram, ROOT, CTX | 1);
    write_u64(&ram, CTX + u64::from(GUEST.devfn()) * 32, DIR | 1 << 3 | 1);
    write_u64(&ram, DIR, TABLE | 1);
    viommu.write(RTADDR, 8, ROOT | 1 << 10);
    viommu.write(GCMD, 4, 1 << 30);
    viommu.write(IQA, 8, QUEUE | 1 << 11);
    viommu.write(GCMD, 4, 1 << 26);
    viommu.write(GCMD, 4, 1 << 26 | 1 << 31);
    World {
        vfio,
        viommu,
        ram,
        other,
        other_pasids,
        other_bound,
    }
}

/// Runs one input; returns the number of operations executed. Panics if the property fails.
pub fn run(data: &[u8]) -> usize {
    let w = world();
    let mut input = Input(data);
    let mut ops = 0;
    while let Some(op) = input.byte() {
        if step(&w, op, &mut input).is_none() {
            break;
        }
        ops += 1;
    }
    check(&w);
    ops
}

/// A PASID the interpreter names: the guest's, the other process's, or any.
fn pasid(w: &World, sel: u8, raw: u64) -> u32 {
    match sel % 4 {
        0 => w.other_pasids[usize::from(sel / 4) % w.other_pasids.len()],
        1 => w
            .viommu
            .allocated_pasids()
            .first()
            .copied()
            .unwrap_or(raw as u32 & 63),
        2 => raw as u32 & 63,
        _ => raw as u32,
    }
}

fn step(w: &World, op: u8, input: &mut Input<'_>) -> Option<()> {
    match op % 7 {
        0 => {
            let off = u64::from(input.byte()?) << 4 | u64::from(input.byte()?) >> 4;
            let size = if input.byte()? & 1 == 0 { 4 } else { 8 };
            w.viommu.write(off % MMIO_SIZE, size, input.u64()?);
        }
        1 => {
            let off = u64::from(input.byte()?) << 4 | u64::from(input.byte()?);
            w.viommu.read(off % MMIO_SIZE, 8);
        }
        2 => {
            // A descriptor at the tail, then IQT moves past it.
            let tail = w.viommu.read(IQT, 8);
            let sel = input.byte()?;
            let mut q = [input.u64()?, input.u64()?, 0, 0];
            if sel & 1 == 0 {
                q[0] = (q[0] & !0xf0f) | (u64::from(sel >> 1) % 10);
            }
            if sel & 2 == 0 {
                let p = pasid(w, sel >> 2, q[0] >> 32);
                q[0] = (q[0] & 0xffff_ffff) | u64::from(p & 0xf_ffff) << 32;
            }
            for (i, v) in q.iter().enumerate() {
                write_u64(&w.ram, QUEUE + (tail & 0xfe0) + 8 * i as u64, *v);
            }
            w.viommu.write(IQT, 8, (tail + 32) & 0xfe0);
        }
        3 => {
            // A PASID entry (often first-level), then a PASID-selective PASID-cache flush.
            let sel = input.byte()?;
            let p = pasid(w, sel, input.u64()?);
            let mut v0 = input.u64()?;
            if sel & 0x10 == 0 {
                v0 = 1 | 1 << 6;
            }
            let flptr = input.u64()? & 0xf_f000;
            let table = TABLE + u64::from(p & 63) * 64;
            write_u64(&w.ram, table, v0);
            write_u64(&w.ram, table + 16, flptr);
            let tail = w.viommu.read(IQT, 8);
            write_u64(
                &w.ram,
                QUEUE + (tail & 0xfe0),
                7 | 1 << 4 | u64::from(p & 0xf_ffff) << 32,
            );
            for i in 1..4 {
                write_u64(&w.ram, QUEUE + (tail & 0xfe0) + 8 * i, 0);
            }
            w.viommu.write(IQT, 8, (tail + 32) & 0xfe0);
        }
        4 => {
            let sel = input.byte()?;
            let p = pasid(w, sel, input.u64()?);
            let cmd = if sel & 0x10 == 0 { 1 } else { 2 };
            w.viommu.write(VCMD, 8, u64::from(p) << 16 | cmd);
        }
        5 => {
            let sel = input.byte()?;
            let addr = input.u64()?;
            let source_id = if sel & 1 == 0 {
                HOST
            } else {
                SourceId(addr as u16)
            };
            w.viommu.inject_fault(HostFault {
                source_id,
                pasid: (sel & 2 != 0).then_some(addr as u32 >> 12),
                addr,
                write: sel & 4 != 0,
                execute: sel & 8 != 0,
                privileged: sel & 16 != 0,
                reason: sel,
            });
            w.viommu.inject_page_request(PageRequest {
                source_id,
                pasid: (sel & 2 != 0).then_some(addr as u32 >> 12),
                addr,
                access: Access::READ,
                group: addr as u16 & 0x1ff,
                last: sel & 32 != 0,
            });
        }
        _ => {
            // A failed poll leaves the unit as it was; the property is checked at the end.
            let _ = w.viommu.poll();
        }
    }
    Some(())
}

/// The property: the other process's PASIDs and binds are as they were; the guest holds only
/// its own process's PASIDs.
fn check(w: &World) {
    let other = w
        .vfio
        .find_process_context(OTHER)
        .expect("other process")
        .pasids();
    for p in &w.other_pasids {
        assert!(other.contains(p), "the other process lost PASID {p}");
    }
    assert_eq!(
        w.other.bound_pasids(),
        w.other_bound,
        "the other process's binds changed"
    );
    let mine = w
        .vfio
        .find_process_context(VMM)
        .map(|m| m.pasids())
        .unwrap_or_default();
    for p in w.viommu.allocated_pasids() {
        assert!(
            mine.contains(&p),
            "the guest holds PASID {p} its process does not own"
        );
    }
}
