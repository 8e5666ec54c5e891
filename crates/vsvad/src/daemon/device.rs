//! Devices: a process's access to the PCI functions assigned to it — configuration space
//! (as vfio-pci virtualizes it) and DMA through the IOMMU — and faults as the protocol
//! reports them.

use std::sync::Arc;

use vsva_iommu::{Access, DmaError, Fault, SourceId, Stage};
use vsva_proto::{
    DeviceConfig, DeviceDma, Errno, Event, FaultRecord, Reply, CONFIG_WRITE, DMA_EXEC, DMA_PASID,
    DMA_PRIV, DMA_WRITE,
};
use vsva_vfio::{ConfigWidth, PciFunction, VfioError};

use super::process::Process;
use super::{lock, revoked, vfio_reply, Daemon};
use crate::config::RESTORE_GROUP;

impl Daemon {
    /// The PCI function `sid`, if its group is attached to a container of process `p`, or it
    /// is bound to one of `p`'s iommufd contexts: only the process a device is assigned to
    /// may drive it.
    ///
    /// A process that holds a grant of the device (`DEVICE_OPEN`) drives it too; one whose
    /// grant ended is refused with `ENODEV`.
    ///
    /// `what` is the request, which a refusal names with the `source_id` and why: a function
    /// no client may drive (the daemon's restore function, or one kept by the host) and a
    /// function not assigned to `p` are `EPERM`.
    pub(super) fn owned_function(
        &self,
        p: &Arc<Process>,
        sid: SourceId,
        what: &str,
    ) -> Result<PciFunction, Reply> {
        if let Some(r) = self.granted_function(p, sid) {
            if lock(&p.state).revoked {
                return Err(revoked(p));
            }
            return r;
        }
        let func = self.vfio.pci_function(sid).map_err(|e| vfio_reply(&e))?;
        // Only a refusal spends the formatting.
        let field = || format!("{what} source_id {:#06x} ({sid})", sid.0);
        let group = match func.group() {
            Some(g) if g.0 == RESTORE_GROUP => {
                return Err(Reply::error(
                    Errno::EPERM,
                    format!(
                        "{} is the daemon's private restore function (group {RESTORE_GROUP}), \
                         which it uses to give processes their PASIDs back after a restart: \
                         no client may drive it",
                        field()
                    ),
                ))
            }
            Some(g) => g,
            None => {
                return Err(Reply::error(
                    Errno::EPERM,
                    format!(
                        "{} is kept by the host (in no IOMMU group, as a parent of mdevs \
                         is): no client may drive it",
                        field()
                    ),
                ))
            }
        };
        let owner = self.vfio.group_container(group).ok().flatten();
        let bound = self.iommufd_bound(p, sid);
        let st = lock(&p.state);
        if st.revoked {
            return Err(revoked(p));
        }
        if bound || owner.is_some_and(|cid| st.containers.values().any(|c| c.container.id() == cid))
        {
            Ok(func)
        } else {
            Err(Reply::error(
                Errno::EPERM,
                format!(
                    "{} (group {group}) is not assigned to pid {}: its group is attached to \
                     none of its containers, and it is bound to none of its iommufd contexts",
                    field(),
                    p.token.pid()
                ),
            ))
        }
    }

    /// A read or write of the configuration space of a function the process drives.
    pub(super) fn device_config(&self, p: &Arc<Process>, c: &DeviceConfig) -> Reply {
        let func = match self.owned_function(p, SourceId(c.source_id), "device_config") {
            Ok(f) => f,
            Err(r) => return r,
        };
        let width = match c.width {
            1 => ConfigWidth::Byte,
            2 => ConfigWidth::Word,
            _ => ConfigWidth::Dword,
        };
        let r = if c.flags & CONFIG_WRITE != 0 {
            func.config_write(c.offset, width, c.value).map(|()| 0)
        } else {
            func.config_read(c.offset, width)
        };
        match r {
            Ok(v) => Reply::ok(v.into(), Vec::new()),
            Err(e) => vfio_reply(&e),
        }
    }

    /// A DMA by a function the process drives, page by page through the IOMMU.
    ///
    /// A write that fails part way (a fault, or memory that is gone) has written the pages
    /// before the failing one; the reply says where it stopped.
    pub(super) fn device_dma(&self, p: &Arc<Process>, d: &DeviceDma) -> Reply {
        let sid = SourceId(d.source_id);
        let max = self.settings.limits.max_frame.saturating_sub(64);
        if d.len > max {
            return Reply::error(
                Errno::E2BIG,
                format!(
                    "device_dma len {} is above {max}, what one reply can carry",
                    d.len
                ),
            );
        }
        let func = match self.owned_function(p, sid, "device_dma") {
            Ok(f) => f,
            Err(r) => return r,
        };
        let access = Access {
            write: d.flags & DMA_WRITE != 0,
            execute: d.flags & DMA_EXEC != 0,
            privileged: d.flags & DMA_PRIV != 0,
        };
        let pasid = (d.flags & DMA_PASID != 0).then_some(d.pasid);
        let mem = self.vfio.iommu().memory();
        let mut out = if access.write {
            Vec::new()
        } else {
            vec![0u8; d.len as usize]
        };
        let mut done: u64 = 0;
        let len = u64::from(d.len);
        while done < len {
            let iova = d.addr.wrapping_add(done);
            let t = match func.translate(pasid, iova, access) {
                Ok(t) => t,
                Err(VfioError::Dma {
                    source: DmaError::Fault(f),
                    ..
                }) => {
                    let record = fault_record(&f);
                    // The process driving the device hears of it on its events channel too
                    // (dropped with the others if its queue is full).
                    // (A fault on a PASID reaches the PASID's owner through the VFIO layer.)
                    if f.pasid.is_none() {
                        p.events.push(Event::DmaFault(record.clone()));
                    }
                    return Reply {
                        result: Errno::EFAULT.to_ioctl_return().into(),
                        message: format!("DMA fault: {f}"),
                        payload: record.encode(),
                    };
                }
                Err(e) => return vfio_reply(&e),
            };
            let page = t.page_size.max(4096);
            let chunk = (page - (iova % page)).min(len - done);
            let (lo, hi) = (done as usize, (done + chunk) as usize);
            let r = if access.write {
                mem.write(t.host_addr, &d.data[lo..hi])
            } else {
                mem.read(t.host_addr, &mut out[lo..hi])
            };
            if let Err(e) = r {
                return Reply::error(
                    Errno::EFAULT,
                    format!(
                        "DMA at iova {iova:#x} translated to {:#x}: {e}",
                        t.host_addr
                    ),
                );
            }
            done += chunk;
        }
        Reply::ok(len as i64, out)
    }
}

/// A fault as the protocol reports it.
pub(super) fn fault_record(f: &Fault) -> FaultRecord {
    let mut flags = 0;
    if f.pasid.is_some() {
        flags |= DMA_PASID;
    }
    if f.access.write {
        flags |= DMA_WRITE;
    }
    if f.access.execute {
        flags |= DMA_EXEC;
    }
    if f.access.privileged {
        flags |= DMA_PRIV;
    }
    FaultRecord {
        source_id: f.source_id.0,
        flags,
        pasid: f.pasid.unwrap_or(0),
        addr: f.addr,
        reason: f.reason.code(),
        stage: match f.stage {
            Stage::Context => 0,
            Stage::First => 1,
            Stage::Second => 2,
        },
        level: f.level,
        description: f.reason.describe().to_string(),
    }
}
