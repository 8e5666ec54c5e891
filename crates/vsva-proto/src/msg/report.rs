//! Report payloads: status, per-process sets and DMA fault records.

use super::handshake::Credentials;
use super::{MAX_LIST, MAX_PASID_LIST, MAX_STRING};
use crate::error::ProtoError;
use crate::wire::{Decode, Encode, Reader, Writer};

/// A device the daemon's machine has, as `status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Requester id.
    pub source_id: u16,
    /// IOMMU group.
    pub group: u32,
    /// Max PASID width the device's PASID capability advertises (0 = no PASID).
    pub pasid_width: u8,
    /// A name (`"0000:00:03.0"`).
    pub name: String,
}

/// NESTING_OP requests of one kind refused for one reason since the daemon started. The
/// series answers UNBIND and CACHE_INVLD with 0 once the header and container checks pass,
/// whatever the per-device outcome, so a refusal (a PASID the caller does not own, a
/// malformed payload, ...) shows only here, in the metrics and in the daemon's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestingRefusal {
    /// The request: `unbind` or `invalidate`.
    pub op: String,
    /// Why it changed nothing: `malformed`, `invalid`, `pasid_out_of_range`, `not_owned`,
    /// `not_allocated` or `iommu`.
    pub reason: String,
    /// How many times.
    pub count: u64,
}

/// The payload of a successful status reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReply {
    /// The daemon's name and version.
    pub server: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Changes at every daemon start.
    pub instance: u64,
    /// Width of the PASID space.
    pub pasid_bits: u8,
    /// PASIDs that can be allocated at once (`2^bits - 1`).
    pub capacity: u32,
    /// PASIDs owned now.
    pub allocated: u64,
    /// PASIDs freed whose teardown has not finished.
    pub freeing: u64,
    /// Processes with a live context.
    pub processes: u32,
    /// PASIDs held for processes that have not reconnected since a restart.
    pub held: u32,
    /// Open connections.
    pub connections: u32,
    /// Quota a new process gets.
    pub default_quota: u32,
    /// Whether allocations are on disk before they are acknowledged.
    pub durable: bool,
    /// IOTLB hits so far.
    pub iotlb_hits: u64,
    /// IOTLB misses so far.
    pub iotlb_misses: u64,
    /// DMA faults so far.
    pub faults: u64,
    /// The machine's devices.
    pub devices: Vec<DeviceInfo>,
    /// Refused NESTING_OP unbinds and invalidations, one entry per (op, reason) the daemon
    /// knows, zero counts included (protocol version 2).
    pub nesting_refusals: Vec<NestingRefusal>,
    /// Requests answered since the daemon started, every kind (protocol version 3).
    pub requests: u64,
    /// DMA translations the IOMMU performed, cached or walked (protocol version 3).
    pub translations: u64,
    /// Group commits written to the store's log (protocol version 3; 0 with the store off).
    pub store_commits: u64,
    /// Page requests devices raised (`PAGE_REQUEST` requests answered) since the start
    /// (protocol version 3).
    pub page_requests: u64,
    /// Page requests of the machine's devices not answered yet (protocol version 3).
    pub page_requests_pending: u32,
}

impl StatusReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<StatusReply, ProtoError> {
        StatusReply::from_body(payload, "status reply")
    }
}

impl Encode for StatusReply {
    fn write(&self, w: &mut Writer) {
        w.string(&self.server)
            .u64(self.uptime_ms)
            .u64(self.instance)
            .u8(self.pasid_bits)
            .u32(self.capacity)
            .u64(self.allocated)
            .u64(self.freeing)
            .u32(self.processes)
            .u32(self.held)
            .u32(self.connections)
            .u32(self.default_quota)
            .u8(self.durable.into())
            .u64(self.iotlb_hits)
            .u64(self.iotlb_misses)
            .u64(self.faults)
            .count(self.devices.len());
        for d in &self.devices {
            w.u16(d.source_id)
                .u32(d.group)
                .u8(d.pasid_width)
                .string(&d.name);
        }
        w.count(self.nesting_refusals.len());
        for n in &self.nesting_refusals {
            w.string(&n.op).string(&n.reason).u64(n.count);
        }
        w.u64(self.requests)
            .u64(self.translations)
            .u64(self.store_commits)
            .u64(self.page_requests)
            .u32(self.page_requests_pending);
    }
}

impl Decode for StatusReply {
    fn read(r: &mut Reader<'_>) -> Result<StatusReply, ProtoError> {
        let server = r.string("server", MAX_STRING)?;
        let uptime_ms = r.u64("uptime_ms")?;
        let instance = r.u64("instance")?;
        let pasid_bits = r.u8("pasid_bits")?;
        let capacity = r.u32("capacity")?;
        let allocated = r.u64("allocated")?;
        let freeing = r.u64("freeing")?;
        let processes = r.u32("processes")?;
        let held = r.u32("held")?;
        let connections = r.u32("connections")?;
        let default_quota = r.u32("default_quota")?;
        let durable = read_bool(r, "durable")?;
        let iotlb_hits = r.u64("iotlb_hits")?;
        let iotlb_misses = r.u64("iotlb_misses")?;
        let faults = r.u64("faults")?;
        let n = r.count("devices", MAX_LIST, 11)?;
        let mut devices = Vec::with_capacity(n);
        for _ in 0..n {
            devices.push(DeviceInfo {
                source_id: r.u16("source_id")?,
                group: r.u32("group")?,
                pasid_width: r.u8("pasid_width")?,
                name: r.string("name", MAX_STRING)?,
            });
        }
        let n = r.count("nesting_refusals", MAX_LIST, 16)?;
        let mut nesting_refusals = Vec::with_capacity(n);
        for _ in 0..n {
            nesting_refusals.push(NestingRefusal {
                op: r.string("op", MAX_STRING)?,
                reason: r.string("reason", MAX_STRING)?,
                count: r.u64("count")?,
            });
        }
        let requests = r.u64("requests")?;
        let translations = r.u64("translations")?;
        let store_commits = r.u64("store_commits")?;
        let page_requests = r.u64("page_requests")?;
        let page_requests_pending = r.u32("page_requests_pending")?;
        Ok(StatusReply {
            server,
            uptime_ms,
            instance,
            pasid_bits,
            capacity,
            allocated,
            freeing,
            processes,
            held,
            connections,
            default_quota,
            durable,
            iotlb_hits,
            iotlb_misses,
            faults,
            devices,
            nesting_refusals,
            requests,
            translations,
            store_commits,
            page_requests,
            page_requests_pending,
        })
    }
}

fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, ProtoError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(r.bad_value(field, v.into(), "must be 0 or 1")),
    }
}

/// State of a process's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SetState {
    /// The process is connected.
    Live = 0,
    /// The daemon restarted and holds the process's PASIDs until it resumes or the grace
    /// period ends.
    Held = 1,
}

/// One process's set, as `sets` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetEntry {
    /// Whose set it is.
    pub credentials: Credentials,
    /// Live or held.
    pub state: SetState,
    /// Its open connections.
    pub connections: u32,
    /// Its quota.
    pub quota: u32,
    /// The PASIDs it owns, ascending.
    pub pasids: Vec<u32>,
    /// Its command line (from `/proc/<pid>/cmdline`), or the client name.
    pub command: String,
}

/// The payload of a successful sets reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetsReply {
    /// One entry per process, by pid.
    pub sets: Vec<SetEntry>,
}

impl SetsReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<SetsReply, ProtoError> {
        SetsReply::from_body(payload, "sets reply")
    }
}

impl Encode for SetsReply {
    fn write(&self, w: &mut Writer) {
        w.count(self.sets.len());
        for s in &self.sets {
            s.credentials.write(w);
            w.u8(s.state as u8)
                .u32(s.connections)
                .u32(s.quota)
                .count(s.pasids.len());
            for p in &s.pasids {
                w.u32(*p);
            }
            w.string(&s.command);
        }
    }
}

impl Decode for SetsReply {
    fn read(r: &mut Reader<'_>) -> Result<SetsReply, ProtoError> {
        let n = r.count("sets", MAX_LIST, 37)?;
        let mut sets = Vec::with_capacity(n);
        for _ in 0..n {
            let credentials = Credentials::read(r)?;
            let state = match r.u8("state")? {
                0 => SetState::Live,
                1 => SetState::Held,
                v => return Err(r.bad_value("state", v.into(), "must be 0 (live) or 1 (held)")),
            };
            let connections = r.u32("connections")?;
            let quota = r.u32("quota")?;
            let np = r.count("pasids", MAX_PASID_LIST, 4)?;
            let mut pasids = Vec::with_capacity(np);
            for _ in 0..np {
                pasids.push(r.u32("pasids")?);
            }
            let command = r.string("command", MAX_STRING)?;
            sets.push(SetEntry {
                credentials,
                state,
                connections,
                quota,
                pasids,
                command,
            });
        }
        Ok(SetsReply { sets })
    }
}

/// One DMA fault record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// Requester id.
    pub source_id: u16,
    /// `DMA_*` flags of the faulting request (PASID, WRITE, EXEC, PRIV).
    pub flags: u16,
    /// The PASID, when `flags` has [`DMA_PASID`](crate::DMA_PASID).
    pub pasid: u32,
    /// Input address.
    pub addr: u64,
    /// VT-d fault reason code.
    pub reason: u8,
    /// Stage: 0 context/PASID tables, 1 first level, 2 second level.
    pub stage: u8,
    /// Paging level of the failing entry, 0 if none.
    pub level: u8,
    /// The reason in words.
    pub description: String,
}

impl Encode for FaultRecord {
    fn write(&self, w: &mut Writer) {
        w.u16(self.source_id)
            .u16(self.flags)
            .u32(self.pasid)
            .u64(self.addr)
            .u8(self.reason)
            .u8(self.stage)
            .u8(self.level)
            .string(&self.description);
    }
}

impl Decode for FaultRecord {
    fn read(r: &mut Reader<'_>) -> Result<FaultRecord, ProtoError> {
        Ok(FaultRecord {
            source_id: r.u16("source_id")?,
            flags: r.u16("flags")?,
            pasid: r.u32("pasid")?,
            addr: r.u64("addr")?,
            reason: r.u8("reason")?,
            stage: r.u8("stage")?,
            level: r.u8("level")?,
            description: r.string("description", MAX_STRING)?,
        })
    }
}

impl FaultRecord {
    /// The record as a DMA failure payload.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes a DMA failure payload.
    pub fn decode(payload: &[u8]) -> Result<FaultRecord, ProtoError> {
        FaultRecord::from_body(payload, "fault record")
    }
}

/// The payload of a successful faults reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultsReply {
    /// Faults recorded since the daemon started.
    pub total: u64,
    /// Faults dropped because the log was full.
    pub dropped: u64,
    /// The most recent records the caller may see, oldest first.
    pub faults: Vec<FaultRecord>,
}

impl FaultsReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<FaultsReply, ProtoError> {
        FaultsReply::from_body(payload, "faults reply")
    }
}

impl Encode for FaultsReply {
    fn write(&self, w: &mut Writer) {
        w.u64(self.total).u64(self.dropped).count(self.faults.len());
        for f in &self.faults {
            f.write(w);
        }
    }
}

impl Decode for FaultsReply {
    fn read(r: &mut Reader<'_>) -> Result<FaultsReply, ProtoError> {
        let total = r.u64("total")?;
        let dropped = r.u64("dropped")?;
        let n = r.count("faults", MAX_LIST, 23)?;
        let mut faults = Vec::with_capacity(n);
        for _ in 0..n {
            faults.push(FaultRecord::read(r)?);
        }
        Ok(FaultsReply {
            total,
            dropped,
            faults,
        })
    }
}

/// The payload of a successful `FAULTS_SINCE` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultsSinceReply {
    /// The cursor for the next request: the number of the last record this reply covers,
    /// whether the caller may see it or not. Records numbered above it were logged after this
    /// reply was made (or were left out by `max`).
    pub next: u64,
    /// Records numbered above the request's `since` that the log had already dropped to make
    /// room (anyone's: an upper bound on what the caller missed).
    pub missed: u64,
    /// The records the caller may see, numbered above `since`, oldest first.
    pub faults: Vec<NumberedFault>,
}

/// A fault record with its number in the fault log: the n-th fault ever logged is number n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedFault {
    /// Its number in the log.
    pub number: u64,
    /// The record.
    pub record: FaultRecord,
}

impl FaultsSinceReply {
    /// The payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.to_body()
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<FaultsSinceReply, ProtoError> {
        FaultsSinceReply::from_body(payload, "faults since reply")
    }
}

impl Encode for FaultsSinceReply {
    fn write(&self, w: &mut Writer) {
        w.u64(self.next).u64(self.missed).count(self.faults.len());
        for f in &self.faults {
            w.u64(f.number);
            f.record.write(w);
        }
    }
}

impl Decode for FaultsSinceReply {
    fn read(r: &mut Reader<'_>) -> Result<FaultsSinceReply, ProtoError> {
        let next = r.u64("next")?;
        let missed = r.u64("missed")?;
        // A numbered record is at least 31 bytes: its number and a record with an empty
        // description.
        let n = r.count("faults", MAX_LIST, 31)?;
        let mut faults = Vec::with_capacity(n);
        for _ in 0..n {
            let number = r.u64("number")?;
            faults.push(NumberedFault {
                number,
                record: FaultRecord::read(r)?,
            });
        }
        Ok(FaultsSinceReply {
            next,
            missed,
            faults,
        })
    }
}
