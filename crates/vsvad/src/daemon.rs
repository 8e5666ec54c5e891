//! The daemon's state and request handling, independent of sockets.
//!
//! # Processes and contexts
//!
//! Every connection is attributed to a process ([`ProcKey`]: pid + start time). The first
//! connection of a process creates a [`Proc`] and, through `vsva-vfio`, the process's PASID
//! context (`VfioMm`); every further connection of the same process shares both, exactly as
//! all containers of one process share one `vfio_mm`. The `Proc` holds one reference on the
//! context for as long as the process has a connection (a connection is the process's handle
//! on the daemon, like an open `/dev/vfio/vfio`); containers hold theirs. When the last
//! connection closes — the process exited, was killed, or closed them — the daemon drops the
//! `Proc`'s containers and reference, which releases the context through the same path as a
//! last container closing: every PASID is freed through the allocator, whose teardown
//! subscriber clears the IOMMU's state before any number is reused.
//!
//! # Ordering with the store
//!
//! A process's PASID_REQUESTs run under its `Proc` lock, which is held while the ioctl runs
//! and its record is queued, so the log has each process's changes in the order they
//! happened (records of different processes need no order, see [`crate::store`]). The reply
//! is sent only after the record is durable.
//!
//! # Lock order
//!
//! The process registry lock → a `Proc`'s lock → `vsva-vfio`'s locks. The connection registry
//! lock is taken alone.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap};
use vsva_iommu::{Access, DmaError, Fault, SourceId, Stage};
use vsva_proto::{
    negotiate_version, DeviceConfig, DeviceDma, DeviceInfo, Errno, FaultRecord, FaultsReply, Hello,
    HelloReply, Identity, Reply, Request, ResumeToken, SetEntry, SetState, SetsReply, StatusReply,
    CONFIG_WRITE, DMA_EXEC, DMA_PASID, DMA_PRIV, DMA_WRITE, HELLO_ADMIN, HELLO_RESUMED,
};
use vsva_uapi::vfio::{
    VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA,
    VFIO_IOMMU_PASID_REQUEST, VFIO_IOMMU_UNMAP_DMA,
};
use vsva_uapi::{decode_pasid_request, PasidRequestOp};
use vsva_vfio::{
    ConfigWidth, Container, GroupId, IommuType, PciFunction, ProcessToken, Vfio, VfioError, VfioMm,
};

use crate::config::Settings;
use crate::identity;
use crate::machine::{self, HpaAllocator, RESTORE_GROUP};
use crate::metrics::{Gauges, Metrics};
use crate::store::{ProcKey, Record, Store, StoreState, Ticket};

/// The daemon's name and version, as replies report it.
pub const SERVER: &str = concat!("vsvad ", env!("CARGO_PKG_VERSION"));

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 16 random bytes from the kernel.
fn random_bytes() -> [u8; 16] {
    let mut out = [0u8; 16];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .is_err()
    {
        // No /dev/urandom: mix the clock and the address of a stack value (still unique per
        // call, not secret; the daemon logs that tokens are weak).
        tracing::warn!("/dev/urandom unavailable: resume tokens are not secret");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        out.copy_from_slice(&t.to_le_bytes());
        out[0] ^= (&out as *const _ as usize) as u8;
    }
    out
}

/// A guest memory region a process registered.
#[derive(Debug, Clone, Copy)]
struct Region {
    id: u32,
    /// The address the process names it by in MAP_DMA's `vaddr`.
    addr: u64,
    size: u64,
    /// Where it sits in the IOMMU's host memory.
    hpa: u64,
}

/// A container a connection opened.
struct OpenContainer {
    conn: u64,
    container: Arc<Container>,
}

/// What a process's lock protects.
struct PState {
    /// The daemon's reference on the process's PASID context (None when PASID support is
    /// off, or once released).
    mm: Option<VfioMm>,
    /// Whether the store has a Begin record for the process (written before its first PASID).
    begun: bool,
    /// The quota the process has (mirrors the context's; kept for the Begin record).
    quota: u32,
    /// After a restart: the process's PASIDs are held for it until then.
    held_until: Option<Instant>,
    /// Open connections.
    connections: u32,
    /// Force-released by an admin: every request is refused.
    revoked: bool,
    containers: HashMap<u32, OpenContainer>,
    next_handle: u32,
    regions: Vec<Region>,
    next_region: u32,
    memory_bytes: u64,
}

impl PState {
    /// A process's state before any connection or container: holding `mm` with `quota`,
    /// `begun` if the store already has its Begin record, held until `held_until` after a
    /// restart.
    fn new(mm: Option<VfioMm>, begun: bool, quota: u32, held_until: Option<Instant>) -> Self {
        PState {
            mm,
            begun,
            quota,
            held_until,
            connections: 0,
            revoked: false,
            containers: HashMap::new(),
            next_handle: 1,
            regions: Vec::new(),
            next_region: 1,
            memory_bytes: 0,
        }
    }
}

/// A client process the daemon knows.
pub struct Proc {
    key: ProcKey,
    identity: Identity,
    token: ProcessToken,
    resume: ResumeToken,
    command: String,
    state: Mutex<PState>,
}

impl Proc {
    /// The process's key.
    pub fn key(&self) -> ProcKey {
        self.key
    }
}

/// One connection's view: who is talking and which process it belongs to.
pub struct Session {
    /// Connection id (unique for the daemon's life).
    pub conn: u64,
    /// The peer.
    pub identity: Identity,
    /// Whether it may use admin requests.
    pub admin: bool,
    /// Its process, after the handshake.
    pub proc: Option<Arc<Proc>>,
}

/// What to undo if a change could not be made durable.
pub enum Rollback {
    /// Free a PASID just allocated.
    FreePasid {
        /// The process.
        proc: Arc<Proc>,
        /// The container it was allocated through.
        container: Arc<Container>,
        /// The PASID.
        pasid: u32,
    },
}

/// The result of handling one request.
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// A store record the reply must wait for.
    pub ticket: Option<Ticket>,
    /// What to undo if that record cannot be made durable.
    pub rollback: Option<Rollback>,
}

impl Outcome {
    fn reply(reply: Reply) -> Outcome {
        Outcome {
            reply,
            ticket: None,
            rollback: None,
        }
    }
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome::reply(reply)
    }
}

fn vfio_reply(e: &VfioError) -> Reply {
    Reply::error(e.errno(), e.to_string())
}

/// The daemon.
pub struct Daemon {
    settings: Settings,
    vfio: Vfio,
    store: Store,
    metrics: Arc<Metrics>,
    instance: u64,
    started: Instant,
    procs: Mutex<HashMap<ProcKey, Arc<Proc>>>,
    conns: Mutex<HashMap<u64, (Option<ProcKey>, UnixStream)>>,
    next_conn: AtomicU64,
    shutting_down: AtomicBool,
    hpa: Mutex<HpaAllocator>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The machine could not be built.
    #[error("cannot build the machine: {0}")]
    Machine(#[from] machine::MachineError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl Daemon {
    /// Builds the machine, opens the store, and gives live processes their PASIDs back (held
    /// for the grace period); dead processes' PASIDs are released and recorded as such.
    pub fn start(settings: Settings, metrics: Arc<Metrics>) -> Result<Arc<Daemon>, StartError> {
        let vfio = machine::build(&settings)?;
        let instance = u64::from_le_bytes(random_bytes()[..8].try_into().unwrap_or([1; 8]));
        let (store, replayed) = Store::open(
            &settings.state_dir,
            settings.durability,
            instance,
            metrics.clone(),
        )?;
        let hpa = HpaAllocator::new(settings.table_pool_bytes, settings.iommu.mgaw);
        let daemon = Arc::new(Daemon {
            settings,
            vfio,
            store,
            metrics,
            instance,
            started: Instant::now(),
            procs: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            hpa: Mutex::new(hpa),
        });
        daemon.restore(replayed);
        Ok(daemon)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The VFIO layer (for in-process use and tests).
    pub fn vfio(&self) -> &Vfio {
        &self.vfio
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn restore(&self, replayed: StoreState) {
        let deadline = Instant::now() + self.settings.grace_period;
        let mut procs = lock(&self.procs);
        for (key, rec) in replayed.procs {
            let alive = identity::is_alive(key.pid, key.start_time);
            if !alive || self.settings.grace_period.is_zero() {
                tracing::info!(
                    pid = key.pid,
                    start_time = key.start_time,
                    pasids = rec.pasids.len(),
                    alive,
                    "releasing the PASIDs of a process that is gone"
                );
                let t = self.store.append(Record::End { key });
                if let Err(e) = self.store.wait(t) {
                    tracing::error!(error = %e, "cannot record a release");
                }
                continue;
            }
            let token = ProcessToken::new(key.pid, key.start_time);
            let mm = match self.restore_pasids(token, &rec.pasids, rec.quota) {
                Ok(mm) => mm,
                Err(e) => {
                    tracing::error!(pid = key.pid, error = %e, "cannot restore the PASIDs of a live process; releasing them");
                    let t = self.store.append(Record::End { key });
                    let _ = self.store.wait(t);
                    continue;
                }
            };
            let got: std::collections::BTreeSet<u32> = mm.pasids().into_iter().collect();
            for lost in rec.pasids.difference(&got) {
                tracing::warn!(
                    pid = key.pid,
                    pasid = lost,
                    "a recorded PASID could not be restored (outside the configured space?)"
                );
                let t = self.store.append(Record::FreeRange {
                    key,
                    min: *lost,
                    max: *lost,
                });
                let _ = self.store.wait(t);
            }
            tracing::info!(
                pid = key.pid,
                start_time = key.start_time,
                pasids = got.len(),
                grace_secs = self.settings.grace_period.as_secs(),
                "holding the PASIDs of a live process until it resumes"
            );
            let identity = Identity {
                pid: key.pid,
                uid: rec.uid,
                gid: 0,
                start_time: key.start_time,
            };
            procs.insert(
                key,
                Arc::new(Proc {
                    key,
                    identity,
                    token,
                    resume: rec.resume,
                    command: identity::command_line(key.pid),
                    state: Mutex::new(PState::new(Some(mm), true, rec.quota, Some(deadline))),
                }),
            );
        }
    }

    /// Gives `token`'s context exactly `pasids`, through a nesting container on the private
    /// restore group, and sets its quota.
    fn restore_pasids(
        &self,
        token: ProcessToken,
        pasids: &std::collections::BTreeSet<u32>,
        quota: u32,
    ) -> Result<VfioMm, VfioError> {
        let mm = self.vfio.process_context(token)?;
        self.vfio.set_pasid_quota(token, u32::MAX)?;
        {
            let c = self.vfio.open_container(token);
            c.attach_group(GroupId(RESTORE_GROUP))?;
            c.set_iommu(IommuType::Nesting)?;
            for &p in pasids {
                match c.alloc_pasid(p, p) {
                    Ok(got) if got == p => {}
                    Ok(got) => {
                        let _ = c.free_pasids(got, got);
                    }
                    Err(e) => tracing::warn!(pasid = p, error = %e, "restore allocation failed"),
                }
            }
        }
        self.vfio.set_pasid_quota(token, quota)?;
        Ok(mm)
    }

    /// Registers a new connection; `None` when the connection limit is reached.
    pub fn connect(&self, stream: &UnixStream, identity: Identity) -> Option<Session> {
        let mut conns = lock(&self.conns);
        if conns.len() >= self.settings.limits.max_connections as usize {
            self.metrics
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            conns.insert(conn, (None, clone));
        }
        self.metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Some(Session {
            conn,
            identity,
            admin: identity::is_admin(&identity, self.settings.admin_gid),
            proc: None,
        })
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Whether a shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Starts a shutdown: no new work is accepted, and every connection's reading side is shut
    /// so it finishes the requests it has and closes. Processes keep their PASIDs in the store
    /// (to be held for them at the next start).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for (_, (_, s)) in lock(&self.conns).iter() {
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
    }

    /// Flushes and closes the store (after every connection has finished).
    pub fn finish_shutdown(&self) -> Result<(), crate::store::StoreError> {
        self.store.close()
    }

    /// A connection ended: closes its containers and, if it was its process's last, releases
    /// the process's context (unless the daemon is shutting down, when ownership stays
    /// recorded for the next start).
    pub fn disconnect(&self, session: &Session) {
        lock(&self.conns).remove(&session.conn);
        let Some(p) = &session.proc else { return };
        let mut procs = lock(&self.procs);
        let mut st = lock(&p.state);
        let mine: Vec<u32> = st
            .containers
            .iter()
            .filter(|(_, c)| c.conn == session.conn)
            .map(|(&h, _)| h)
            .collect();
        let mut closed = Vec::with_capacity(mine.len());
        for h in mine {
            if let Some(c) = st.containers.remove(&h) {
                closed.push(c);
            }
        }
        st.connections = st.connections.saturating_sub(1);
        let last = st.connections == 0 && st.held_until.is_none();
        if last {
            if !st.revoked {
                if self.shutting_down() {
                    // Keep the store as it is: the process gets its PASIDs back after the restart.
                    st.containers.clear();
                    st.mm = None;
                } else {
                    self.release_locked(p, &mut st, "its last connection closed");
                }
            }
            if procs.get(&p.key).is_some_and(|q| Arc::ptr_eq(q, p)) {
                procs.remove(&p.key);
            }
        }
        drop(st);
        drop(procs);
        drop(closed);
    }

    /// Releases a process's context (its lock held): drops its containers and the daemon's
    /// reference, which frees its PASIDs, and records the release. Returns how many PASIDs it
    /// owned.
    fn release_locked(&self, p: &Proc, st: &mut PState, why: &str) -> u32 {
        let owned = st.mm.as_ref().map_or(0, |mm| mm.owned());
        let containers = std::mem::take(&mut st.containers);
        drop(containers);
        st.mm = None;
        st.regions.clear();
        st.held_until = None;
        if st.begun {
            // Not waited for: nothing is acknowledged by it, and a release the store misses is
            // redone at the next start (the process is gone then, or is held and expires).
            let _ = self.store.append(Record::End { key: p.key });
            st.begun = false;
        }
        tracing::info!(
            pid = p.key.pid,
            start_time = p.key.start_time,
            owned,
            why,
            "process context released"
        );
        owned
    }

    /// Expires held processes whose grace period ended or that died; returns how many.
    pub fn expire_held(&self) -> usize {
        let now = Instant::now();
        let mut procs = lock(&self.procs);
        let mut gone = Vec::new();
        for (key, p) in procs.iter() {
            let mut st = lock(&p.state);
            let Some(deadline) = st.held_until else {
                continue;
            };
            let dead = !identity::is_alive(key.pid, key.start_time);
            if dead || now >= deadline {
                let why = if dead {
                    "the process exited before resuming"
                } else {
                    "the grace period ended before the process resumed"
                };
                self.release_locked(p, &mut st, why);
                gone.push(*key);
            }
        }
        for k in &gone {
            procs.remove(k);
        }
        gone.len()
    }

    /// Handles one decoded request.
    pub fn handle(&self, s: &mut Session, req: Request, fds: Vec<OwnedFd>) -> Outcome {
        if fds.len() != usize::from(req.nfds()) {
            return Reply::error(
                Errno::EBADF,
                format!(
                    "{} takes {} file descriptor(s) but {} arrived with it",
                    req.kind().label(),
                    req.nfds(),
                    fds.len()
                ),
            )
            .into();
        }
        if let Request::Hello(h) = req {
            return self.hello(s, &h).into();
        }
        if let Request::Ping(data) = req {
            return Reply::ok(0, data).into();
        }
        let Some(p) = s.proc.clone() else {
            return Reply::error(
                Errno::EPERM,
                format!(
                    "{} before hello: the first request must be a hello",
                    req.kind().label()
                ),
            )
            .into();
        };
        match req {
            Request::Hello(_) | Request::Ping(_) => unreachable_reply(),
            Request::OpenContainer => self.open_container(s, &p).into(),
            Request::CloseContainer { handle } => self.close_container(&p, handle).into(),
            Request::AttachGroup { handle, group } => self
                .with_container(&p, handle, |c| {
                    if group == RESTORE_GROUP {
                        return Reply::error(
                            Errno::ENODEV,
                            format!("group {group} does not exist"),
                        );
                    }
                    match c.attach_group(GroupId(group)) {
                        Ok(()) => Reply::ok(0, Vec::new()),
                        Err(e) => vfio_reply(&e),
                    }
                })
                .into(),
            Request::DetachGroup { handle, group } => self
                .with_container(&p, handle, |c| match c.detach_group(GroupId(group)) {
                    Ok(()) => Reply::ok(0, Vec::new()),
                    Err(e) => vfio_reply(&e),
                })
                .into(),
            Request::Ioctl { handle, cmd, arg } => self.ioctl(&p, handle, cmd, arg),
            Request::MemRegister {
                addr,
                size,
                offset,
                flags: _,
            } => self.mem_register(&p, addr, size, offset, fds).into(),
            Request::MemUnregister { region } => {
                let mut st = lock(&p.state);
                match st.regions.iter().position(|r| r.id == region) {
                    Some(i) => {
                        let r = st.regions.remove(i);
                        st.memory_bytes -= r.size;
                        Reply::ok(0, Vec::new()).into()
                    }
                    None => Reply::error(
                        Errno::ENOENT,
                        format!("region {region} is not registered by this process"),
                    )
                    .into(),
                }
            }
            Request::DeviceDma(d) => self.dma(&p, &d).into(),
            Request::DeviceConfig(cfg) => self.config(&p, &cfg).into(),
            Request::Status => self.status().into(),
            Request::Sets => self.sets(s).into(),
            Request::SetQuota { pid, quota } => self.set_quota(s, pid, quota),
            Request::ForceRelease { pid } => self.force_release(s, pid).into(),
            Request::Faults { max } => self.faults(s, max).into(),
        }
    }

    fn hello(&self, s: &mut Session, h: &Hello) -> Reply {
        let version = match negotiate_version(h.min_version, h.max_version) {
            Ok(v) => v,
            Err(e) => return Reply::error(e.errno(), e.to_string()),
        };
        if s.proc.is_some() {
            return Reply::error(Errno::EINVAL, "hello was already done on this connection");
        }
        if self.shutting_down() {
            return Reply::error(Errno::EAGAIN, "the daemon is shutting down");
        }
        let key = ProcKey {
            pid: s.identity.pid,
            start_time: s.identity.start_time,
        };
        let mut procs = lock(&self.procs);
        let mut resumed = false;
        let mut restored = Vec::new();
        if let Some(p) = procs.get(&key).cloned() {
            let mut st = lock(&p.state);
            if st.held_until.is_some() {
                if h.resume == p.resume {
                    st.held_until = None;
                    resumed = true;
                    restored = st.mm.as_ref().map(|mm| mm.pasids()).unwrap_or_default();
                    tracing::info!(
                        pid = key.pid,
                        pasids = restored.len(),
                        "process resumed after a restart"
                    );
                } else if h.resume.is_none() {
                    // The process starts over: what it held is released.
                    self.release_locked(
                        &p,
                        &mut st,
                        "the process reconnected without its resume token",
                    );
                    drop(st);
                    procs.remove(&key);
                } else {
                    return Reply::error(
                        Errno::EACCES,
                        format!(
                            "resume token does not match the one issued to pid {} (start time {})",
                            key.pid, key.start_time
                        ),
                    );
                }
            }
        }
        let p = match procs.get(&key) {
            Some(p) => p.clone(),
            None => {
                let token = ProcessToken::new(key.pid, key.start_time);
                let mm = self.vfio.process_context(token).ok();
                let p = Arc::new(Proc {
                    key,
                    identity: s.identity,
                    token,
                    resume: ResumeToken(random_bytes()),
                    command: identity::command_line(key.pid),
                    state: Mutex::new(PState::new(mm, false, self.settings.pasid_quota, None)),
                });
                procs.insert(key, p.clone());
                p
            }
        };
        let quota = {
            let mut st = lock(&p.state);
            st.connections += 1;
            st.mm.as_ref().map_or(st.quota, |mm| mm.quota())
        };
        drop(procs);
        if let Some(entry) = lock(&self.conns).get_mut(&s.conn) {
            entry.0 = Some(key);
        }
        tracing::debug!(
            conn = s.conn,
            pid = key.pid,
            uid = s.identity.uid,
            resumed,
            "hello"
        );
        let mut flags = 0;
        if resumed {
            flags |= HELLO_RESUMED;
        }
        if s.admin {
            flags |= HELLO_ADMIN;
        }
        let reply = HelloReply {
            version,
            flags,
            identity: s.identity,
            resume: p.resume,
            instance: self.instance,
            pasid_bits: self.vfio.pasid_bits(),
            quota,
            max_body: self.settings.limits.max_frame,
            max_in_flight: self.settings.limits.max_in_flight,
            restored,
            server: SERVER.to_string(),
        };
        s.proc = Some(p);
        Reply::ok(0, reply.encode())
    }

    fn open_container(&self, s: &Session, p: &Arc<Proc>) -> Reply {
        let mut st = lock(&p.state);
        if st.revoked {
            return revoked(p);
        }
        let mine = st.containers.values().filter(|c| c.conn == s.conn).count();
        let limit = self.settings.limits.max_containers_per_connection as usize;
        if mine >= limit {
            return Reply::error(
                Errno::ENOSPC,
                format!("this connection already has {mine} containers open (limits.max_containers_per_connection = {limit})"),
            );
        }
        let handle = st.next_handle;
        st.next_handle = st.next_handle.wrapping_add(1).max(1);
        let container = Arc::new(self.vfio.open_container(p.token));
        st.containers.insert(
            handle,
            OpenContainer {
                conn: s.conn,
                container,
            },
        );
        Reply::ok(handle.into(), Vec::new())
    }

    fn close_container(&self, p: &Arc<Proc>, handle: u32) -> Reply {
        let removed = lock(&p.state).containers.remove(&handle);
        match removed {
            Some(c) => {
                drop(c);
                Reply::ok(0, Vec::new())
            }
            None => no_handle(handle),
        }
    }

    fn with_container(
        &self,
        p: &Arc<Proc>,
        handle: u32,
        f: impl FnOnce(&Container) -> Reply,
    ) -> Reply {
        let c = {
            let st = lock(&p.state);
            if st.revoked {
                return revoked(p);
            }
            match st.containers.get(&handle) {
                Some(c) => c.container.clone(),
                None => return no_handle(handle),
            }
        };
        f(&c)
    }

    fn ioctl(&self, p: &Arc<Proc>, handle: u32, cmd: u32, mut arg: Vec<u8>) -> Outcome {
        let mut st = lock(&p.state);
        if st.revoked {
            return revoked(p).into();
        }
        let Some(c) = st.containers.get(&handle).map(|c| c.container.clone()) else {
            return no_handle(handle).into();
        };
        if cmd == VFIO_IOMMU_MAP_DMA {
            if let Err(reply) = translate_map_dma(&st.regions, &mut arg) {
                return reply.into();
            }
        }
        if cmd != VFIO_IOMMU_PASID_REQUEST {
            drop(st);
            let r = c.ioctl(cmd, &mut arg);
            return match r {
                Ok(v) => {
                    let out = if cmd == VFIO_IOMMU_GET_INFO || cmd == VFIO_IOMMU_UNMAP_DMA {
                        arg
                    } else {
                        Vec::new()
                    };
                    Reply::ok(i64::try_from(v).unwrap_or(i64::MAX), out).into()
                }
                Err(e) => vfio_reply(&e).into(),
            };
        }
        // PASID_REQUEST: run and record under the process lock, so the log has this process's
        // changes in the order they happened.
        let op = decode_pasid_request(&arg).ok();
        match c.ioctl(cmd, &mut arg) {
            Err(e) => vfio_reply(&e).into(),
            Ok(v) => {
                let mut ticket = None;
                let mut rollback = None;
                match op {
                    Some(PasidRequestOp::Alloc { .. }) => {
                        let pasid = v as u32;
                        if !st.begun {
                            let _ = self.store.append(Record::Begin {
                                key: p.key,
                                uid: p.identity.uid,
                                quota: st.mm.as_ref().map_or(st.quota, |mm| mm.quota()),
                                resume: p.resume,
                            });
                            st.begun = true;
                        }
                        ticket = Some(self.store.append(Record::Alloc { key: p.key, pasid }));
                        rollback = Some(Rollback::FreePasid {
                            proc: p.clone(),
                            container: c.clone(),
                            pasid,
                        });
                    }
                    Some(PasidRequestOp::Free { min, max }) if st.begun => {
                        ticket = Some(self.store.append(Record::FreeRange {
                            key: p.key,
                            min,
                            max,
                        }));
                    }
                    _ => {}
                }
                Outcome {
                    reply: Reply::ok(i64::try_from(v).unwrap_or(i64::MAX), Vec::new()),
                    ticket,
                    rollback,
                }
            }
        }
    }

    /// Undoes a change whose record could not be made durable.
    pub fn rollback(&self, r: Rollback) {
        match r {
            Rollback::FreePasid {
                proc,
                container,
                pasid,
            } => {
                let _st = lock(&proc.state);
                let mut arg = match PasidRequestOp::free(pasid, pasid) {
                    Ok(op) => op.to_bytes(),
                    Err(_) => return,
                };
                if let Err(e) = container.ioctl(VFIO_IOMMU_PASID_REQUEST, &mut arg) {
                    tracing::error!(pasid, error = %e, "cannot undo an allocation the store did not record");
                }
            }
        }
    }

    fn mem_register(
        &self,
        p: &Arc<Proc>,
        addr: u64,
        size: u64,
        offset: u64,
        mut fds: Vec<OwnedFd>,
    ) -> Reply {
        let Some(fd) = fds.pop() else {
            return Reply::error(Errno::EBADF, "mem_register needs one file descriptor");
        };
        let limits = &self.settings.limits;
        for (field, v) in [("addr", addr), ("size", size), ("offset", offset)] {
            if v % 4096 != 0 {
                return Reply::error(
                    Errno::EINVAL,
                    format!("mem_register {field} {v:#x} is not a multiple of 4096"),
                );
            }
        }
        if size == 0 {
            return Reply::error(
                Errno::EINVAL,
                "mem_register size 0: a region needs at least one page",
            );
        }
        let Some(end) = addr.checked_add(size) else {
            return Reply::error(
                Errno::EINVAL,
                format!("mem_register addr {addr:#x} + size {size:#x} wraps around"),
            );
        };
        let max_bytes = limits.max_memory_mib_per_process << 20;
        // The fd must be sealed against shrinking, or the client could truncate it under the
        // daemon's mapping and crash it with SIGBUS.
        match rustix::fs::fcntl_get_seals(&fd) {
            Ok(seals) if seals.contains(rustix::fs::SealFlags::SHRINK) => {}
            Ok(_) => {
                return Reply::error(Errno::EINVAL, "mem_register fd is not sealed with F_SEAL_SHRINK: use a memfd with that seal")
            }
            Err(e) => {
                return Reply::error(Errno::EINVAL, format!("mem_register fd cannot be sealed ({e}): it must be a memfd sealed with F_SEAL_SHRINK"))
            }
        }
        let file_len = match rustix::fs::fstat(&fd) {
            Ok(st) => st.st_size as u64,
            Err(e) => {
                return Reply::error(Errno::EBADF, format!("mem_register fd: fstat failed: {e}"))
            }
        };
        if offset.checked_add(size).is_none_or(|e| e > file_len) {
            return Reply::error(
                Errno::EINVAL,
                format!("mem_register offset {offset:#x} + size {size:#x} is past the end of the {file_len:#x}-byte file"),
            );
        }
        let mut st = lock(&p.state);
        if st.revoked {
            return revoked(p);
        }
        if st.regions.len() >= limits.max_regions_per_process as usize {
            return Reply::error(
                Errno::ENOSPC,
                format!(
                    "the process already has {} regions (limits.max_regions_per_process)",
                    st.regions.len()
                ),
            );
        }
        if st.memory_bytes.saturating_add(size) > max_bytes {
            return Reply::error(
                Errno::ENOSPC,
                format!(
                    "{size:#x} more bytes would exceed limits.max_memory_mib_per_process = {}",
                    limits.max_memory_mib_per_process
                ),
            );
        }
        if let Some(r) = st
            .regions
            .iter()
            .find(|r| addr < r.addr + r.size && r.addr < end)
        {
            return Reply::error(
                Errno::EEXIST,
                format!(
                    "mem_register [{addr:#x}, {end:#x}) overlaps region {} at [{:#x}, {:#x})",
                    r.id,
                    r.addr,
                    r.addr + r.size
                ),
            );
        }
        let Some(hpa) = lock(&self.hpa).alloc(size) else {
            return Reply::error(
                Errno::ENOMEM,
                "the host-physical address space for guest memory is exhausted",
            );
        };
        let Ok(len) = usize::try_from(size) else {
            return Reply::error(
                Errno::EINVAL,
                format!("mem_register size {size:#x} is too large"),
            );
        };
        let region = match GuestRegionMmap::from_range(
            GuestAddress(hpa),
            len,
            Some(FileOffset::new(File::from(fd), offset)),
        ) {
            Ok(r) => r,
            Err(e) => {
                return Reply::error(
                    Errno::ENOMEM,
                    format!("mem_register: cannot map the fd: {e}"),
                )
            }
        };
        if let Err(e) = self.vfio.iommu().memory().add_region(region) {
            return Reply::error(Errno::ENOMEM, format!("mem_register: {e}"));
        }
        let id = st.next_region;
        st.next_region += 1;
        st.regions.push(Region {
            id,
            addr,
            size,
            hpa,
        });
        st.memory_bytes += size;
        tracing::debug!(
            pid = p.key.pid,
            id,
            addr,
            size,
            hpa,
            "guest memory registered"
        );
        Reply::ok(id.into(), Vec::new())
    }

    /// The PCI function `sid`, if its group is attached to a container of process `p`: only
    /// the process a device is assigned to may drive it.
    fn owned_function(&self, p: &Arc<Proc>, sid: SourceId) -> Result<PciFunction, Reply> {
        let func = self.vfio.pci_function(sid).map_err(|e| vfio_reply(&e))?;
        let Some(group) = func.group().filter(|g| g.0 != RESTORE_GROUP) else {
            return Err(Reply::error(
                Errno::EPERM,
                format!("device {sid} is kept by the host, not assigned to a group"),
            ));
        };
        let owner = self.vfio.group_container(group).ok().flatten();
        let st = lock(&p.state);
        if st.revoked {
            return Err(revoked(p));
        }
        if owner.is_some_and(|cid| st.containers.values().any(|c| c.container.id() == cid)) {
            Ok(func)
        } else {
            Err(Reply::error(
                Errno::EPERM,
                format!(
                    "device {sid} (group {group}) is not attached to a container of pid {}",
                    p.key.pid
                ),
            ))
        }
    }

    fn config(&self, p: &Arc<Proc>, c: &DeviceConfig) -> Reply {
        let func = match self.owned_function(p, SourceId(c.source_id)) {
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

    fn dma(&self, p: &Arc<Proc>, d: &DeviceDma) -> Reply {
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
        let func = match self.owned_function(p, sid) {
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
                    return Reply {
                        result: Errno::EFAULT.to_ioctl_return().into(),
                        message: format!("DMA fault: {f}"),
                        payload: fault_record(&f).encode(),
                    }
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

    fn status(&self) -> Reply {
        let stats = self.vfio.pasid_space().stats();
        let io = self.vfio.iommu().stats();
        let (processes, held) = {
            let procs = lock(&self.procs);
            let mut held = 0u32;
            for p in procs.values() {
                let st = lock(&p.state);
                if st.held_until.is_some() {
                    held += st.mm.as_ref().map_or(0, |mm| mm.owned());
                }
            }
            (procs.len() as u32, held)
        };
        let devices = self
            .settings
            .devices
            .iter()
            .map(|d| DeviceInfo {
                source_id: d.source_id.0,
                group: d.group.unwrap_or(u32::MAX),
                pasid_width: d.pasid_width,
                name: format!("0000:{}", d.source_id),
            })
            .collect();
        let status = StatusReply {
            server: SERVER.to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            instance: self.instance,
            pasid_bits: stats.pasid_bits,
            capacity: stats.capacity,
            allocated: self.allocated_to_processes(stats.allocated),
            freeing: stats.freeing,
            processes,
            held,
            connections: self.connections() as u32,
            default_quota: self.settings.pasid_quota,
            durable: self.store.mode() != crate::config::Durability::Off,
            iotlb_hits: io.iotlb_hits,
            iotlb_misses: io.iotlb_misses,
            faults: self.vfio.iommu().fault_log().total(),
            devices,
        };
        Reply::ok(0, status.encode())
    }

    /// PASIDs owned by processes (the space's count less the host's own, e.g. mdev defaults).
    fn allocated_to_processes(&self, space_allocated: u64) -> u64 {
        let host: u64 = self
            .vfio
            .pasid_space()
            .sets()
            .iter()
            .filter(|s| s.token == 0)
            .map(|s| u64::from(s.owned))
            .sum();
        space_allocated.saturating_sub(host)
    }

    fn entry(&self, p: &Proc) -> SetEntry {
        let st = lock(&p.state);
        SetEntry {
            identity: p.identity,
            state: if st.held_until.is_some() {
                SetState::Held
            } else {
                SetState::Live
            },
            connections: st.connections,
            quota: st.mm.as_ref().map_or(st.quota, |mm| mm.quota()),
            pasids: st.mm.as_ref().map(|mm| mm.pasids()).unwrap_or_default(),
            command: p.command.clone(),
        }
    }

    fn sets(&self, s: &Session) -> Reply {
        let mut sets: Vec<SetEntry> = if s.admin {
            let procs: Vec<Arc<Proc>> = lock(&self.procs).values().cloned().collect();
            procs.iter().map(|p| self.entry(p)).collect()
        } else {
            s.proc.iter().map(|p| self.entry(p)).collect()
        };
        sets.sort_by_key(|e| (e.identity.pid, e.identity.start_time));
        Reply::ok(sets.len() as i64, SetsReply { sets }.encode())
    }

    fn admin_only(s: &Session, what: &str) -> Option<Reply> {
        (!s.admin).then(|| {
            Reply::error(
                Errno::EPERM,
                format!("{what} is an admin request: it needs root or the configured admin_group (caller uid {}, gid {})", s.identity.uid, s.identity.gid),
            )
        })
    }

    fn find_by_pid(&self, pid: u32) -> Vec<Arc<Proc>> {
        lock(&self.procs)
            .values()
            .filter(|p| p.key.pid == pid)
            .cloned()
            .collect()
    }

    fn set_quota(&self, s: &Session, pid: u32, quota: u32) -> Outcome {
        if let Some(r) = Self::admin_only(s, "set_quota") {
            return r.into();
        }
        let targets = self.find_by_pid(pid);
        let Some(p) = targets.first() else {
            return Reply::error(
                Errno::ESRCH,
                format!("pid {pid} has no context in the daemon"),
            )
            .into();
        };
        let mut st = lock(&p.state);
        if let Err(e) = self.vfio.set_pasid_quota(p.token, quota) {
            return vfio_reply(&e).into();
        }
        st.quota = quota;
        let ticket = st
            .begun
            .then(|| self.store.append(Record::Quota { key: p.key, quota }));
        tracing::info!(pid, quota, by = s.identity.uid, "quota changed");
        Outcome {
            reply: Reply::ok(0, Vec::new()),
            ticket,
            rollback: None,
        }
    }

    fn force_release(&self, s: &Session, pid: u32) -> Reply {
        if let Some(r) = Self::admin_only(s, "force_release") {
            return r;
        }
        let mut procs = lock(&self.procs);
        let targets: Vec<Arc<Proc>> = procs
            .values()
            .filter(|p| p.key.pid == pid)
            .cloned()
            .collect();
        if targets.is_empty() {
            return Reply::error(
                Errno::ESRCH,
                format!("pid {pid} has no context in the daemon"),
            );
        }
        let mut freed = 0u32;
        for p in &targets {
            let mut st = lock(&p.state);
            st.revoked = true;
            freed += self.release_locked(p, &mut st, "force-released by an admin");
            procs.remove(&p.key);
        }
        drop(procs);
        // Close the process's connections: it learns its context is gone.
        for (_, (key, stream)) in lock(&self.conns).iter() {
            if key.is_some_and(|k| k.pid == pid) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        tracing::warn!(pid, freed, by = s.identity.uid, "process force-released");
        Reply::ok(freed.into(), Vec::new())
    }

    fn faults(&self, s: &Session, max: u32) -> Reply {
        let log = self.vfio.iommu().fault_log();
        let mut records = log.records();
        if !s.admin {
            let (mine, devices): (Vec<u32>, Vec<SourceId>) = match &s.proc {
                Some(p) => {
                    let st = lock(&p.state);
                    let pasids = st.mm.as_ref().map(|mm| mm.pasids()).unwrap_or_default();
                    let mut devs = Vec::new();
                    for c in st.containers.values() {
                        for g in c.container.groups() {
                            devs.extend(
                                self.settings
                                    .devices
                                    .iter()
                                    .filter(|d| d.group == Some(g.0))
                                    .map(|d| d.source_id),
                            );
                        }
                    }
                    (pasids, devs)
                }
                None => (Vec::new(), Vec::new()),
            };
            records.retain(|f| {
                f.pasid.is_some_and(|p| mine.contains(&p)) || devices.contains(&f.source_id)
            });
        }
        let keep = (max.min(4096)) as usize;
        let skip = records.len().saturating_sub(keep);
        let faults: Vec<FaultRecord> = records[skip..].iter().map(fault_record).collect();
        Reply::ok(
            faults.len() as i64,
            FaultsReply {
                total: log.total(),
                dropped: log.dropped(),
                faults,
            }
            .encode(),
        )
    }

    /// The values the metrics page reads from the daemon.
    pub fn gauges(&self) -> Gauges {
        let stats = self.vfio.pasid_space().stats();
        let io = self.vfio.iommu().stats();
        let log = self.vfio.iommu().fault_log();
        let procs: Vec<Arc<Proc>> = lock(&self.procs).values().cloned().collect();
        let mut held = 0u64;
        let mut processes = Vec::with_capacity(procs.len());
        for p in &procs {
            let st = lock(&p.state);
            let owned = st.mm.as_ref().map_or(0, |mm| mm.owned());
            if st.held_until.is_some() {
                held += u64::from(owned);
            }
            let quota = st.mm.as_ref().map_or(st.quota, |mm| mm.quota());
            processes.push((p.key.pid, p.identity.uid, owned, quota));
        }
        processes.sort();
        Gauges {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            capacity: stats.capacity.into(),
            allocated: self.allocated_to_processes(stats.allocated),
            freeing: stats.freeing,
            held,
            connections: self.connections() as u64,
            processes,
            iotlb_hits: io.iotlb_hits,
            iotlb_misses: io.iotlb_misses,
            translations: io.translations,
            faults: log.total(),
            faults_dropped: log.dropped(),
        }
    }

    /// How long until the next held process expires (for the maintenance loop).
    pub fn next_expiry(&self) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.procs)
            .values()
            .filter_map(|p| lock(&p.state).held_until)
            .map(|d| d.saturating_duration_since(now))
            .min()
    }
}

fn unreachable_reply() -> Outcome {
    Reply::error(Errno::EINVAL, "internal: request dispatched twice").into()
}

fn revoked(p: &Proc) -> Reply {
    Reply::error(
        Errno::ESRCH,
        format!(
            "the context of pid {} was force-released by an admin",
            p.key.pid
        ),
    )
}

fn no_handle(handle: u32) -> Reply {
    Reply::error(
        Errno::EBADF,
        format!("container handle {handle} is not open in this process"),
    )
}

/// Rewrites a MAP_DMA argument's `vaddr` (the process's name for its memory) to where that
/// memory sits in the IOMMU's host memory, as the kernel pins a process's pages. Arguments that
/// the VFIO layer refuses anyway (too short, bad argsz, bad flags, size 0 or unaligned) are
/// left alone so its errors come out in the kernel's order; a well-formed mapping of memory
/// the process did not register is `EFAULT`, as `vaddr_get_pfn` failing is.
fn translate_map_dma(regions: &[Region], arg: &mut [u8]) -> Result<(), Reply> {
    if arg.len() < 32 {
        return Ok(());
    }
    let u32_at = |a: &[u8], o: usize| u32::from_le_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
    let u64_at = |a: &[u8], o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&a[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let argsz = u32_at(arg, 0) as usize;
    let flags = u32_at(arg, 4);
    let rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
    if argsz < 32 || argsz > arg.len() || flags & !rw != 0 || flags & rw == 0 {
        return Ok(());
    }
    let (vaddr, size) = (u64_at(arg, 8), u64_at(arg, 24));
    if size == 0 || size % 4096 != 0 || vaddr % 4096 != 0 {
        return Ok(());
    }
    let region = vaddr.checked_add(size).and_then(|end| {
        regions
            .iter()
            .find(|r| r.addr <= vaddr && end <= r.addr + r.size)
    });
    match region {
        Some(r) => {
            let hpa = r.hpa + (vaddr - r.addr);
            arg[8..16].copy_from_slice(&hpa.to_le_bytes());
            Ok(())
        }
        None => Err(Reply::error(
            Errno::EFAULT,
            format!(
                "vaddr {vaddr:#x} size {size:#x}: not inside guest memory this process registered"
            ),
        )),
    }
}

/// A fault as the protocol reports it.
pub fn fault_record(f: &Fault) -> FaultRecord {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn map_arg(flags: u32, vaddr: u64, iova: u64, size: u64) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&32u32.to_le_bytes());
        a.extend_from_slice(&flags.to_le_bytes());
        a.extend_from_slice(&vaddr.to_le_bytes());
        a.extend_from_slice(&iova.to_le_bytes());
        a.extend_from_slice(&size.to_le_bytes());
        a
    }

    #[test]
    fn map_dma_vaddr_is_translated_into_the_region() {
        let regions = [Region {
            id: 1,
            addr: 0x10_0000,
            size: 0x20_0000,
            hpa: 0x4000_0000,
        }];
        let mut a = map_arg(3, 0x11_0000, 0, 0x1000);
        translate_map_dma(&regions, &mut a).unwrap();
        assert_eq!(
            u64::from_le_bytes(a[8..16].try_into().unwrap()),
            0x4001_0000
        );
        // Past the end of the region: EFAULT, argument untouched.
        let mut a = map_arg(3, 0x2f_f000, 0, 0x2000);
        let r = translate_map_dma(&regions, &mut a).unwrap_err();
        assert_eq!(r.errno(), Some(Errno::EFAULT));
        // Malformed arguments pass through for the VFIO layer to refuse in its order.
        for mut a in [
            map_arg(0, 0x11_0000, 0, 0x1000),
            map_arg(3, 0x11_0000, 0, 0),
            map_arg(3, 0x11_0800, 0, 0x1000),
            vec![0; 16],
        ] {
            let before = a.clone();
            translate_map_dma(&regions, &mut a).unwrap();
            assert_eq!(a, before);
        }
    }
}
