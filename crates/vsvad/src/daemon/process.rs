//! The registry of client processes: connect and the hello handshake (with resume after a
//! restart), disconnect and release, and expiry of processes held since a restart.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vsva_proto::{
    negotiate_version, Credentials, Errno, Hello, HelloReply, Reply, ResumeToken, HELLO_ADMIN,
    HELLO_RESUMED,
};
use vsva_vfio::{Container, ProcessToken, VfioMm};

use super::fault_view::FaultView;
use super::release::Job;
use super::{lock, random_bytes, Daemon, OpenConnection, SERVER};
use crate::credentials;
use crate::events::EventQueue;
use crate::store::Record;

/// A container a connection opened.
pub(super) struct OpenContainer {
    /// The connection that opened it (it closes with it).
    pub(super) conn: u64,
    pub(super) container: Arc<Container>,
}

/// A guest memory region a process registered.
#[derive(Debug, Clone)]
pub(super) struct Region {
    pub(super) id: u32,
    /// The address the process names it by in MAP_DMA's `vaddr`.
    pub(super) addr: u64,
    pub(super) size: u64,
    /// Where it sits in the IOMMU's host memory.
    pub(super) hpa: u64,
    /// Offset into the file.
    pub(super) offset: u64,
    /// The memory's descriptor, handed to device processes (`DEVICE_OPEN`).
    pub(super) file: Option<Arc<OwnedFd>>,
}

/// What a process's lock protects.
pub struct ProcessState {
    /// The daemon's reference on the process's PASID context (None when PASID support is
    /// off, or once released).
    pub(super) mm: Option<VfioMm>,
    /// After a restart: the process's PASIDs are held for it until then.
    pub(super) held_until: Option<Instant>,
    pub(super) connections: u32,
    /// Force-released by an admin: every request is refused.
    pub(super) revoked: bool,
    /// Open containers by handle.
    pub(super) containers: HashMap<u32, OpenContainer>,
    pub(super) next_handle: u32,
    /// Registered guest memory.
    pub(super) regions: Vec<Region>,
    pub(super) next_region: u32,
    /// Bytes of guest memory registered, for the per-process limit.
    pub(super) memory_bytes: u64,
}

impl ProcessState {
    /// A process's state before any connection or container: holding `mm`, held until
    /// `held_until` after a restart.
    pub(super) fn new(mm: Option<VfioMm>, held_until: Option<Instant>) -> Self {
        ProcessState {
            mm,
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

    /// PASIDs the process owns now (0 once released).
    pub(super) fn owned(&self) -> u32 {
        self.mm.as_ref().map_or(0, |mm| mm.owned())
    }

    /// The PASIDs the process owns, ascending.
    pub(super) fn pasids(&self) -> Vec<u32> {
        self.mm.as_ref().map(|mm| mm.pasids()).unwrap_or_default()
    }

    /// Whether the daemon holds the process's PASIDs for it after a restart.
    pub(super) fn is_held(&self) -> bool {
        self.held_until.is_some()
    }
}

/// What a closing connection opened, to be closed once no lock is held.
#[derive(Default)]
pub(super) struct Closing {
    /// Its containers.
    pub(super) containers: Vec<OpenContainer>,
    /// Its iommufd context (dropping it detaches its devices).
    pub(super) iommufd: Option<Arc<vsva_iommufd::IommufdCtx>>,
}

/// What a release took from a process, to be closed and freed once no lock is held.
#[must_use = "finish the release once no lock is held"]
pub(super) struct Released {
    token: ProcessToken,
    /// PASIDs the process owned when it was released.
    pub(super) owned: u32,
    containers: HashMap<u32, OpenContainer>,
    mm: Option<VfioMm>,
    regions: Vec<Region>,
}

/// What the store has been told about a process.
///
/// A leaf lock of its own, so a PASID change is journaled inside vsva-vfio's per-process lock
/// (the journal closure of [`vsva_vfio::Container::ioctl_journaled`]) without the daemon's
/// process lock: PASID_REQUEST takes one per-process lock. Lock order: the process lock, then
/// vsva-vfio's per-process lock, then this one; nothing is locked while this one is held.
pub(super) struct Journal {
    /// Whether the store has a Begin record for the process (written before its first PASID).
    pub(super) begun: bool,
    /// The process's quota, for the Begin record and for reports once its context is gone
    /// (mirrors the context's: every quota change goes through both).
    pub(super) quota: u32,
    /// The process was released: nothing more is journaled for it, and a PASID allocated by a
    /// request that raced the release is freed again, not acknowledged.
    pub(super) closed: bool,
}

/// A client process the daemon knows, shared by all of its connections.
pub struct Process {
    pub(super) credentials: Credentials,
    pub(super) token: ProcessToken,
    pub(super) resume: ResumeToken,
    /// Its command line, for `sets`.
    pub(super) command: String,
    pub(super) state: Mutex<ProcessState>,
    pub(super) journal: Mutex<Journal>,
    /// Which faults it may see. A leaf lock, like the journal's.
    pub(super) faults: Mutex<FaultView>,
    /// Its events channel's queue.
    pub(super) events: Arc<EventQueue>,
}

impl Process {
    /// A process holding `mm`, whose store records begin with a Begin record already (`begun`)
    /// or not, with `quota`, seeing the faults `faults` allows, held until `held_until` after
    /// a restart.
    pub(super) fn new(
        credentials: Credentials,
        resume: ResumeToken,
        mm: Option<VfioMm>,
        journal: Journal,
        faults: FaultView,
        held_until: Option<Instant>,
        events: Arc<EventQueue>,
    ) -> Process {
        let token = ProcessToken::new(credentials.pid, credentials.start_time);
        Process {
            credentials,
            token,
            resume,
            command: credentials::command_line(token.pid()),
            state: Mutex::new(ProcessState::new(mm, held_until)),
            journal: Mutex::new(journal),
            faults: Mutex::new(faults),
            events,
        }
    }

    /// The process's quota: its context's, or the recorded one once the context is gone.
    pub(super) fn quota(&self, st: &ProcessState) -> u32 {
        st.mm
            .as_ref()
            .map_or_else(|| lock(&self.journal).quota, |mm| mm.quota())
    }
}

/// One connection's view: who is talking and which process it belongs to.
pub struct Session {
    /// Connection id (unique for the daemon's life).
    pub conn: u64,
    /// The peer's socket credentials.
    pub credentials: Credentials,
    /// Whether it may use admin requests.
    pub admin: bool,
    /// Its process, after the handshake.
    pub process: Option<Arc<Process>>,
    /// Its iommufd context, from its first iommufd request; dropped with the session.
    pub iommufd: Option<Arc<vsva_iommufd::IommufdCtx>>,
}

impl Daemon {
    /// Registers a new connection.
    ///
    /// # Errors
    ///
    /// The message to send back when the connection is over `limits.max_connections` (all
    /// clients) or `limits.max_connections_per_uid` (the peer's uid); nothing is registered.
    pub fn connect(
        &self,
        stream: &UnixStream,
        credentials: Credentials,
    ) -> Result<Session, String> {
        let limits = &self.settings.limits;
        let mut conns = lock(&self.conns);
        let refusal = if conns.len() >= limits.max_connections as usize {
            Some(format!(
                "too many connections (limits.max_connections = {}); try again later",
                limits.max_connections
            ))
        } else if conns.values().filter(|c| c.uid == credentials.uid).count()
            >= limits.max_connections_per_uid as usize
        {
            Some(format!(
                "too many connections of uid {} (limits.max_connections_per_uid = {}); close \
                 some or try again later",
                credentials.uid, limits.max_connections_per_uid
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            self.metrics
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            return Err(message);
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(stream) = stream.try_clone() {
            let entry = OpenConnection {
                process: None,
                uid: credentials.uid,
                stream,
            };
            conns.insert(conn, entry);
        }
        self.metrics
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(Session {
            conn,
            credentials,
            admin: credentials::is_admin(&credentials, self.settings.admin_gid),
            process: None,
            iommufd: None,
        })
    }

    /// A connection ended: closes its containers and, if it was its process's last, releases
    /// the process's context.
    ///
    /// During a shutdown nothing is closed or released: the process keeps its containers and
    /// its context (with every PASID it owns) in memory until the daemon exits, exactly as the
    /// store records them. Dropping them would free its PASIDs in the allocator without a
    /// record, and a process still being served could be acknowledged them, so that after the
    /// restart the log gives them to that process and the idle one loses them.
    pub fn disconnect(&self, session: &mut Session) {
        lock(&self.conns).remove(&session.conn);
        let Some(p) = &session.process else { return };
        let mut processes = lock(&self.processes);
        let mut st = lock(&p.state);
        if self.shutting_down() {
            st.connections = st.connections.saturating_sub(1);
            return;
        }
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
        let last = st.connections == 0 && !st.is_held();
        let mut released = None;
        if last {
            p.events.close();
            if !st.revoked {
                released = Some(self.release_locked(p, &mut st, "its last connection closed"));
            }
            if processes.get(&p.token).is_some_and(|q| Arc::ptr_eq(q, p)) {
                processes.remove(&p.token);
            }
        }
        drop(st);
        drop(processes);
        // Closing containers and freeing PASIDs waits for devices to acknowledge their
        // invalidations: not with a lock held, and not in this connection's worker, which
        // serves other connections too. The grants end after (holders are told).
        let iommufd = session.iommufd.take();
        if !closed.is_empty() || last || iommufd.is_some() {
            self.release_in_background(
                Closing {
                    containers: closed,
                    iommufd,
                },
                released,
                last.then_some(p.token),
            );
        }
    }

    /// Releases a process's context (the registry lock and its lock held): takes its
    /// containers, the daemon's reference and its memory regions, and records the release.
    /// Nothing is closed or freed yet: the caller finishes the release
    /// ([`Daemon::finish_release`], or [`Daemon::release_in_background`]) once it holds no
    /// lock, because closing containers and freeing PASIDs wait for device processes to
    /// acknowledge their invalidations (see [`super::release`]). Until then the PASIDs stay owned by the
    /// released process (no one else can be given them), and a new connection of the same
    /// process waits in its hello.
    pub(super) fn release_locked(&self, p: &Process, st: &mut ProcessState, why: &str) -> Released {
        let owned = st.owned();
        self.releases.begin(p.token);
        let released = Released {
            token: p.token,
            owned,
            containers: std::mem::take(&mut st.containers),
            mm: st.mm.take(),
            regions: std::mem::take(&mut st.regions),
        };
        st.memory_bytes = 0;
        st.held_until = None;
        let mut journal = lock(&p.journal);
        journal.closed = true;
        let recorded = journal.begun;
        if recorded {
            // Not waited for: nothing is acknowledged by it, and a release the store misses is
            // redone at the next start (the process is gone then, or is held and expires).
            self.store.append_unwaited(Record::End { token: p.token });
            journal.begun = false;
        }
        drop(journal);
        if owned > 0 || recorded {
            tracing::info!(
                pid = p.token.pid(),
                start_time = p.token.start_time(),
                owned,
                why,
                "process context released"
            );
        } else {
            // A process that never owned a PASID (e.g. one `vsva status`): not worth a line.
            tracing::debug!(pid = p.token.pid(), why, "process context released");
        }
        released
    }

    /// Finishes a release with no lock held: closes the containers, drops the daemon's
    /// reference on the context (its PASIDs are freed through the allocator, whose teardown
    /// waits for device acknowledgements or fences the devices before any number is reused),
    /// takes the memory regions out of the IOMMU, then lets the process connect again.
    pub(super) fn finish_release(&self, r: Released) {
        let Released {
            token,
            containers,
            mm,
            regions,
            ..
        } = r;
        drop(containers);
        drop(mm);
        for region in &regions {
            self.remove_region(region);
        }
        self.releases.end(token);
    }

    /// Closes what a closing connection opened, finishes `released`, then ends the
    /// grants of `grants_of`, on a releaser thread when there is anything to close (see
    /// [`super::release`]). No lock may be held.
    pub(super) fn release_in_background(
        &self,
        closing: Closing,
        released: Option<Released>,
        grants_of: Option<ProcessToken>,
    ) {
        let waits = !closing.containers.is_empty()
            || closing.iommufd.is_some()
            || released
                .as_ref()
                .is_some_and(|r| !r.containers.is_empty() || r.owned > 0);
        let job: Job = Box::new(move |d: &Daemon| {
            drop(closing);
            if let Some(r) = released {
                d.finish_release(r);
            }
            if let Some(token) = grants_of {
                d.end_grants_of(token);
            }
        });
        if waits {
            self.releases.run(self, job);
        } else {
            // Nothing that can wait for a device (a process that never owned a PASID).
            job(self);
        }
    }

    /// Expires held processes whose grace period ended or that died; returns how many.
    pub fn expire_held(&self) -> usize {
        let now = Instant::now();
        let mut processes = lock(&self.processes);
        let mut gone = Vec::new();
        for (token, p) in processes.iter() {
            let mut st = lock(&p.state);
            let Some(deadline) = st.held_until else {
                continue;
            };
            let dead = !credentials::is_alive(token.pid(), token.start_time());
            if dead || now >= deadline {
                let why = if dead {
                    "the process exited before resuming"
                } else {
                    "the grace period ended before the process resumed"
                };
                gone.push((*token, self.release_locked(p, &mut st, why)));
            }
        }
        for (t, _) in &gone {
            processes.remove(t);
        }
        drop(processes);
        let n = gone.len();
        for (_, r) in gone {
            self.release_in_background(Closing::default(), Some(r), None);
        }
        n
    }

    /// How long until the next held process expires (for the maintenance loop).
    pub fn next_expiry(&self) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.processes)
            .values()
            .filter_map(|p| lock(&p.state).held_until)
            .map(|d| d.saturating_duration_since(now))
            .min()
    }

    /// The processes with pid `pid` (more than one only across pid reuse).
    pub(super) fn find_by_pid(&self, pid: u32) -> Vec<Arc<Process>> {
        lock(&self.processes)
            .values()
            .filter(|p| p.token.pid() == pid)
            .cloned()
            .collect()
    }

    /// The handshake: agrees on a version and attributes the connection to its process —
    /// a new one, the one it shares with other connections, or one held since a restart
    /// that the resume token gets back.
    pub(super) fn hello(&self, s: &mut Session, h: &Hello) -> Reply {
        let version = match negotiate_version(h.min_version, h.max_version) {
            Ok(v) => v,
            Err(e) => return Reply::error(e.errno(), e.to_string()),
        };
        if s.process.is_some() {
            return Reply::error(Errno::EINVAL, "hello was already done on this connection");
        }
        if self.shutting_down() {
            return Reply::error(Errno::EAGAIN, "the daemon is shutting down");
        }
        let token = ProcessToken::new(s.credentials.pid, s.credentials.start_time);
        let mut processes = self.releases.lock_after(&self.processes, token);
        let mut resumed = false;
        let mut restored = Vec::new();
        if let Some(p) = processes.get(&token).cloned() {
            let mut st = lock(&p.state);
            if st.is_held() {
                if h.resume == p.resume {
                    st.held_until = None;
                    resumed = true;
                    restored = st.pasids();
                    tracing::info!(
                        pid = token.pid(),
                        pasids = restored.len(),
                        "process resumed after a restart"
                    );
                } else if h.resume.is_none() {
                    // The process starts over: what it held is released, then it starts anew.
                    let released = self.release_locked(
                        &p,
                        &mut st,
                        "the process reconnected without its resume token",
                    );
                    drop(st);
                    processes.remove(&token);
                    drop(processes);
                    self.finish_release(released);
                    processes = self.releases.lock_after(&self.processes, token);
                } else {
                    return Reply::error(
                        Errno::EACCES,
                        format!(
                            "resume token does not match the one issued to pid {} (start time {})",
                            token.pid(),
                            token.start_time()
                        ),
                    );
                }
            }
        }
        let p = match processes.get(&token) {
            Some(p) => p.clone(),
            None => {
                let resume = match random_bytes() {
                    Ok(bytes) => ResumeToken(bytes),
                    Err(e) => {
                        tracing::error!(error = %e, "no resume token: the kernel's random source failed");
                        return Reply::error(
                            Errno::EAGAIN,
                            format!(
                                "cannot make a resume token (getrandom failed: {e}); try again"
                            ),
                        );
                    }
                };
                let mm = self.vfio.process_context(token).ok();
                let journal = Journal {
                    begun: false,
                    quota: self.settings.pasid_quota,
                    closed: false,
                };
                let faults = FaultView::starting_at(self.vfio.iommu().fault_log().total());
                let p = Arc::new(Process::new(
                    s.credentials,
                    resume,
                    mm,
                    journal,
                    faults,
                    None,
                    self.events.queue(),
                ));
                processes.insert(token, p.clone());
                p
            }
        };
        let quota = {
            let mut st = lock(&p.state);
            st.connections += 1;
            p.quota(&st)
        };
        drop(processes);
        if let Some(entry) = lock(&self.conns).get_mut(&s.conn) {
            entry.process = Some(token);
        }
        tracing::debug!(
            conn = s.conn,
            pid = token.pid(),
            uid = s.credentials.uid,
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
            credentials: s.credentials,
            resume: p.resume,
            instance: self.instance,
            pasid_bits: self.vfio.pasid_bits(),
            quota,
            max_body: self.settings.limits.max_frame,
            max_in_flight: self.settings.limits.max_in_flight,
            restored,
            server: SERVER.to_string(),
        };
        s.process = Some(p);
        Reply::ok(0, reply.encode())
    }
}
