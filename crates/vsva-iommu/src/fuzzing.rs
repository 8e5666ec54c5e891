//! Interprets arbitrary bytes as IOMMU memory contents plus a sequence of requests. Used by the
//! cargo-fuzz target (`fuzz/fuzz_targets/translate.rs`) and by a proptest that runs the same
//! property on stable Rust: whatever the bytes, nothing panics.

use std::sync::{Arc, Mutex};

use crate::atc::Atc;
use crate::ats::{Completion, DevTlbInvalidation, DevTlbSink};
use crate::fault::{Access, SourceId};
use crate::invalidate::{ContextCacheScope, Invalidation, PageRange, PasidCacheScope};
use crate::memory::HostMemory;
use crate::paging::{self, FlParams, SlParams};
use crate::prq::PageResponse;
use crate::regs::IommuConfig;
use crate::{DeviceOptions, Iommu, S2Perms};

/// Most bytes of raw memory image taken from the input (written at host-physical 0).
pub const IMAGE_BYTES: usize = 64 * 1024;
/// Size of the simulated host memory.
pub const MEMORY_BYTES: u64 = 1 << 20;

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..8 {
            v |= u64::from(self.byte()?) << (8 * i);
        }
        Some(v)
    }
    /// An address biased towards the backed memory, sometimes anywhere.
    fn addr(&mut self) -> Option<u64> {
        let sel = self.byte()?;
        let v = self.u64()?;
        Some(match sel % 4 {
            0 => v,
            1 => v % (MEMORY_BYTES * 2),
            _ => v % MEMORY_BYTES,
        })
    }
}

/// The devices' side of ATS: one translation cache for all of them, which applies every
/// invalidation it is sent; the device `MUTE` never completes (and is fenced).
struct Devices {
    atc: Mutex<Atc>,
}

const MUTE: SourceId = SourceId::new(1, 0, 0);

impl DevTlbSink for Devices {
    fn invalidate(&self, batch: &[DevTlbInvalidation]) -> Vec<(SourceId, Completion)> {
        let mut atc = self.atc.lock().unwrap_or_else(|p| p.into_inner());
        batch
            .iter()
            .map(|inv| {
                atc.invalidate(&inv.scope);
                let c = if inv.source_id == MUTE {
                    Completion::TimedOut
                } else {
                    Completion::Done
                };
                (inv.source_id, c)
            })
            .collect()
    }

    fn page_response(&self, _resp: PageResponse) {}
}

/// Input layout: a little-endian `u16` image length (capped at [`IMAGE_BYTES`] and at what
/// follows), the image bytes (written at host-physical 0), then operations.
pub fn input(image: &[u8], ops: &[u8]) -> Vec<u8> {
    let len = image.len().min(IMAGE_BYTES).min(u16::MAX as usize);
    let mut v = (len as u16).to_le_bytes().to_vec();
    v.extend_from_slice(&image[..len]);
    v.extend_from_slice(ops);
    v
}

/// Runs one input (see [`input`] for the layout). Returns the number of operations executed.
pub fn run(data: &[u8]) -> usize {
    let mut input = Input { data };
    let (Some(lo), Some(hi)) = (input.byte(), input.byte()) else {
        return 0;
    };
    let Ok(mem) = HostMemory::anonymous(&[(0, MEMORY_BYTES as usize)]) else {
        return 0;
    };
    let image_len = usize::from(u16::from_le_bytes([lo, hi]))
        .min(input.data.len())
        .min(IMAGE_BYTES);
    if mem.write(0, &input.data[..image_len]).is_err() {
        return 0;
    }
    input.data = &input.data[image_len..];
    let cfg = IommuConfig {
        domain_bits: 8,
        iotlb_entries: 256,
        fault_log_capacity: 16,
        prq_capacity: 4,
        ..IommuConfig::default()
    };
    let pool = MEMORY_BYTES / 2;
    let Ok(io) = Iommu::new(cfg, mem, pool, MEMORY_BYTES / 2) else {
        return 0;
    };
    let sids = [SourceId::new(0, 1, 0), SourceId::new(0, 2, 0), MUTE];
    let devices = Arc::new(Devices {
        atc: Mutex::new(Atc::new(8)),
    });
    if image_len % 2 == 1 {
        io.set_devtlb_sink(Some(devices.clone() as Arc<dyn DevTlbSink>));
    }
    let mut ops = 0;
    while let Some(op) = input.byte() {
        ops += 1;
        let sid = sids[usize::from(op >> 6) % sids.len()];
        let step = (|| -> Option<()> {
            match op % 16 {
                0 => {
                    let b = input.byte()?;
                    let _ = io.attach_device(
                        sid,
                        DeviceOptions {
                            pasids: 1 << (b % 21),
                            ats: b & 1 != 0,
                            pri: b & 2 != 0,
                            rid_pasid: u32::from(b >> 4),
                            ..DeviceOptions::default()
                        },
                    );
                }
                1 => {
                    let _ = io.detach_device(sid);
                }
                2 | 3 => {
                    let pasid = u32::from(input.byte()?) | u32::from(input.byte()?) << 8;
                    let mut w = [0u64; 8];
                    for x in w.iter_mut().take(3) {
                        *x = input.u64()?;
                    }
                    let _ = io.write_pasid_entry_raw(sid, pasid, w);
                }
                4..=8 => {
                    let pasid = match input.byte()? {
                        0 => None,
                        p => Some(u32::from(p) | u32::from(input.byte()?) << 12),
                    };
                    let a = input.byte()?;
                    let access = Access {
                        write: a & 1 != 0,
                        execute: a & 2 != 0,
                        privileged: a & 4 != 0,
                    };
                    let iova = input.addr()?;
                    if op % 16 == 8 {
                        // An ATS translation request whose answer a device cache keeps.
                        let mut atc = devices.atc.lock().unwrap_or_else(|p| p.into_inner());
                        let generation = atc.generation();
                        drop(atc);
                        if let Ok(reply) = io.ats_translate(sid, pasid, iova, access) {
                            atc = devices.atc.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(t) = reply.translation() {
                                atc.insert(generation, pasid, iova, &t);
                                let _ = atc.lookup(pasid, iova, access);
                            }
                        }
                    } else {
                        let _ = io.translate(sid, pasid, iova, access);
                    }
                }
                9 => {
                    let did = u16::from(input.byte()?);
                    let pasid = u32::from(input.byte()?);
                    let range = PageRange {
                        addr: input.addr()?,
                        am: input.byte()? % 24,
                    };
                    let inv = match input.byte()? % 12 {
                        0 => Invalidation::IotlbGlobal,
                        1 => Invalidation::IotlbDomain { did },
                        2 => Invalidation::IotlbDomainPages {
                            did,
                            range,
                            ih: pasid & 1 != 0,
                        },
                        3 => Invalidation::PasidIotlbAll { did },
                        4 => Invalidation::PasidIotlb { did, pasid },
                        5 => Invalidation::PasidIotlbPages {
                            did,
                            pasid,
                            range,
                            ih: did & 1 != 0,
                        },
                        6 => Invalidation::PasidCache(PasidCacheScope::All),
                        7 => Invalidation::PasidCache(PasidCacheScope::Pasid { did, pasid }),
                        8 => Invalidation::ContextCache(ContextCacheScope::All),
                        9 => {
                            Invalidation::ContextCache(ContextCacheScope::Device { source_id: sid })
                        }
                        10 => Invalidation::DeviceTlb {
                            source_id: sid,
                            pasid: Some(pasid),
                            pages: Some(range),
                        },
                        _ => Invalidation::DeviceTlbAll { source_id: sid },
                    };
                    let _ = io.invalidate(&inv);
                }
                10 => {
                    let mut buf = [0u8; 64];
                    let n = usize::from(input.byte()?) % 64;
                    let pasid = Some(u32::from(input.byte()?));
                    let iova = input.addr()?;
                    if op & 0x20 != 0 {
                        let _ = io.dma_write(sid, pasid, iova, &buf[..n]);
                    } else {
                        let _ = io.dma_read(sid, pasid, iova, &mut buf[..n]);
                    }
                }
                11 => {
                    let levels = 3 + input.byte()? % 3;
                    if let Ok(id) = io.create_stage2(levels) {
                        let iova = input.addr()? & !0xfff;
                        let hpa = input.addr()? & !0xfff;
                        let len = (u64::from(input.byte()?) + 1) << 12;
                        let _ = io.stage2_map(id, iova, hpa, len, S2Perms::RW);
                        let _ = io.stage2_unmap(id, iova, len / 2 + 0x1000);
                        let _ = io.destroy_stage2(id);
                    }
                }
                12 => {
                    // Direct walks of whatever is in memory, both stages.
                    let root = input.addr()?;
                    let va = input.u64()?;
                    let snap = io.memory().snapshot();
                    let m: &vm_memory::GuestMemoryMmap = &snap;
                    let fl = FlParams {
                        levels: 4 + (op & 1),
                        haw: 48,
                        fl1gp: op & 2 != 0,
                    };
                    let _ = paging::walk_first_level(m, &mut paging::Identity, &fl, root, va, None);
                    let sl = SlParams {
                        levels: 3 + op % 3,
                        haw: 48,
                        sl_2m: true,
                        sl_1g: op & 4 != 0,
                        slee: op & 8 != 0,
                        tm: true,
                    };
                    let _ = paging::walk_second_level(m, &sl, root & !0xfff, va, None);
                }
                13 => {
                    let addr = input.addr()? & !7;
                    let v = input.u64()?;
                    let _ = io.memory().store_u64(addr, v);
                }
                14 => {
                    let _ = io.teardown_pasid(u32::from(input.byte()?));
                }
                _ => {
                    let rt = input.addr()?;
                    io.set_root_table_address(rt);
                }
            }
            Some(())
        })();
        if step.is_none() {
            break;
        }
    }
    let _ = io.faults();
    let _ = io.stats();
    ops
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_and_empty_inputs_run() {
        assert_eq!(super::run(&[]), 0);
        assert_eq!(super::run(&[5]), 0);
        let data = super::input(&[0u8; 4096], &[0, 7, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(super::run(&data) >= 2);
        // A length beyond the data is capped.
        assert_eq!(super::run(&[0xff, 0xff, 1, 2, 3]), 0);
    }
}
