//! The daemon commands of the `vsva` tool: `status`, `sets`, `pasid alloc|free`, `quota`,
//! `faults` and `demo`, each with `--json`.
//!
//! The `vsva` binary (`crates/vsva/src/main.rs`) includes them with one variant,
//! `#[command(flatten)] Daemon(vsva_client::cli::DaemonCommand)`, and one match arm,
//! `Command::Daemon(cmd) => return vsva_client::cli::run(cmd)`.
//!
//! Every command prints plain text, or one JSON document with `--json`. Errors are one line
//! on stderr (`vsva: ...`) and exit code 1.

mod demo;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::{default_socket, Client, ClientError, Options, SetState};

pub use demo::{find_vsvad, run_demo, DemoArgs, DemoReport, PrivateDaemon, Step};

/// Where the daemon is and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The daemon's socket (default: $VSVA_SOCKET, $XDG_RUNTIME_DIR/vsva/vsvad.sock, or /run/vsva/vsvad.sock for root).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Common {
    /// The socket to use.
    pub fn socket(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_socket)
    }

    fn connect(&self, name: &str) -> Result<Client, CliError> {
        let socket = self.socket();
        Client::connect(Options::new(&socket, name)).map_err(|e| match e {
            ClientError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                CliError(format!(
                    "no vsvad is running on {} (start one with `vsvad`, or pass --socket)",
                    socket.display()
                ))
            }
            other => CliError(format!("{}: {other}", socket.display())),
        })
    }
}

/// A command failure: one readable line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError(e.to_string())
    }
}

/// The daemon commands.
#[derive(Debug, clap::Subcommand)]
pub enum DaemonCommand {
    /// Daemon status: PASID capacity and usage, processes, uptime, devices.
    Status(Common),
    /// PASID sets per process: pid, command, owned, quota (every process for an admin).
    Sets(Common),
    /// Allocate or free PASIDs (for scripting and tests).
    #[command(subcommand)]
    Pasid(PasidCommand),
    /// Show quotas, or change a process's quota or release it (admin).
    Quota(QuotaArgs),
    /// Recent DMA faults.
    Faults(FaultsArgs),
    /// An end-to-end story: a guest allocates PASIDs, builds page tables, binds them, a device
    /// does DMA through them, the guest unmaps and invalidates, DMA faults, PASIDs are freed.
    Demo(DemoArgs),
}

/// `vsva pasid ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PasidCommand {
    /// Allocate PASIDs. They belong to this command's process: without --hold they are freed
    /// when it exits.
    Alloc(AllocArgs),
    /// Free PASIDs. Only their owner may: this explains who owns them.
    Free(FreeArgs),
}

/// `vsva pasid alloc`.
#[derive(Debug, clap::Args)]
pub struct AllocArgs {
    /// How many.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u32,
    /// Lowest acceptable PASID.
    #[arg(long, default_value_t = 1)]
    pub min: u32,
    /// Highest acceptable PASID.
    #[arg(long, default_value_t = u32::MAX)]
    pub max: u32,
    /// IOMMU group to open the nesting container on (default: the first free one).
    #[arg(long)]
    pub group: Option<u32>,
    /// Keep the connection (and the PASIDs) until stdin closes; read commands from stdin:
    /// `alloc [N]`, `free PASID|all`, `list`, `quit`.
    #[arg(long)]
    pub hold: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// `vsva pasid free`.
#[derive(Debug, clap::Args)]
pub struct FreeArgs {
    /// The PASIDs.
    #[arg(required = true)]
    pub pasids: Vec<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// `vsva quota`.
#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    /// The process whose quota to set (with QUOTA).
    pub pid: Option<u32>,
    /// Its new quota.
    pub quota: Option<u32>,
    /// Release everything this process holds and close its connections.
    #[arg(long, value_name = "PID", conflicts_with_all = ["pid", "quota"])]
    pub release: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// `vsva faults`.
#[derive(Debug, clap::Args)]
pub struct FaultsArgs {
    /// At most this many records (the most recent).
    #[arg(long, default_value_t = 50)]
    pub max: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
}

/// Runs a command; prints errors as one line and returns the exit code.
pub fn run(cmd: DaemonCommand) -> ExitCode {
    let result = match cmd {
        DaemonCommand::Status(c) => status(&c),
        DaemonCommand::Sets(c) => sets(&c),
        DaemonCommand::Pasid(PasidCommand::Alloc(a)) => pasid_alloc(&a),
        DaemonCommand::Pasid(PasidCommand::Free(a)) => pasid_free(&a),
        DaemonCommand::Quota(a) => quota(&a),
        DaemonCommand::Faults(a) => faults(&a),
        DaemonCommand::Demo(a) => demo::demo_command(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vsva: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_json(v: &Value) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| CliError(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{:03}s", s, ms % 1000),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn status(c: &Common) -> Result<(), CliError> {
    let mut client = c.connect("vsva status")?;
    let s = client.status()?;
    let lookups = s.iotlb_hits + s.iotlb_misses;
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        s.iotlb_hits as f64 / lookups as f64
    };
    if c.json {
        return print_json(&json!({
            "server": s.server,
            "socket": c.socket(),
            "uptime_ms": s.uptime_ms,
            "pasid_bits": s.pasid_bits,
            "capacity": s.capacity,
            "allocated": s.allocated,
            "freeing": s.freeing,
            "held": s.held,
            "processes": s.processes,
            "connections": s.connections,
            "default_quota": s.default_quota,
            "durable": s.durable,
            "iotlb_hits": s.iotlb_hits,
            "iotlb_misses": s.iotlb_misses,
            "iotlb_hit_rate": hit_rate,
            "faults": s.faults,
            "devices": s.devices.iter().map(|d| json!({
                "name": d.name, "source_id": d.source_id, "group": d.group, "pasid_width": d.pasid_width,
            })).collect::<Vec<_>>(),
        }));
    }
    println!(
        "{} on {}, up {}",
        s.server,
        c.socket().display(),
        duration(s.uptime_ms)
    );
    println!(
        "PASIDs: {} of {} allocated ({:.4}%), {} freeing, {} held for processes to resume ({}-bit space)",
        s.allocated,
        s.capacity,
        100.0 * s.allocated as f64 / f64::from(s.capacity.max(1)),
        s.freeing,
        s.held,
        s.pasid_bits
    );
    println!(
        "processes with a context: {}, connections: {} (this command's included), default quota: {}, store: {}",
        s.processes,
        s.connections,
        s.default_quota,
        if s.durable {
            "durable"
        } else {
            "off (nothing survives a restart)"
        }
    );
    println!(
        "IOTLB: {} hits, {} misses ({:.1}% hit rate); DMA faults: {}",
        s.iotlb_hits,
        s.iotlb_misses,
        100.0 * hit_rate,
        s.faults
    );
    println!("devices:");
    println!("  {:<14} {:>6} {:>11}", "DEVICE", "GROUP", "PASID BITS");
    for d in &s.devices {
        let group = if d.group == u32::MAX {
            "-".to_string()
        } else {
            d.group.to_string()
        };
        println!("  {:<14} {:>6} {:>11}", d.name, group, d.pasid_width);
    }
    Ok(())
}

fn state_name(s: SetState) -> &'static str {
    match s {
        SetState::Live => "live",
        SetState::Held => "held",
    }
}

/// Compresses an ascending list into ranges: `1-4,7,9-10`.
pub fn ranges(pasids: &[u32]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pasids.len() {
        let start = pasids[i];
        let mut end = start;
        while i + 1 < pasids.len() && pasids[i + 1] == end + 1 {
            i += 1;
            end = pasids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(",")
    }
}

fn sets(c: &Common) -> Result<(), CliError> {
    let mut client = c.connect("vsva sets")?;
    let admin = client.is_admin();
    let me = client.hello().identity.pid;
    let sets: Vec<_> = client
        .sets()?
        .into_iter()
        .filter(|s| s.identity.pid != me)
        .collect();
    if c.json {
        return print_json(&json!({
            "complete": admin,
            "sets": sets.iter().map(|s| json!({
                "pid": s.identity.pid, "uid": s.identity.uid, "start_time": s.identity.start_time,
                "state": state_name(s.state), "connections": s.connections,
                "owned": s.pasids.len(), "quota": s.quota, "pasids": s.pasids, "command": s.command,
            })).collect::<Vec<_>>(),
        }));
    }
    if !admin {
        println!("(not root or in the admin group: only this process's own set is visible, and it has none)");
    }
    println!(
        "{:>8} {:>6} {:>5} {:>5} {:>6} {:>6}  {:<20} COMMAND",
        "PID", "UID", "STATE", "CONNS", "OWNED", "QUOTA", "PASIDS"
    );
    for s in &sets {
        let mut cmd = s.command.clone();
        if cmd.len() > 40 {
            cmd.truncate(40);
        }
        let mut list = ranges(&s.pasids);
        if list.len() > 20 {
            list.truncate(17);
            list.push_str("...");
        }
        println!(
            "{:>8} {:>6} {:>5} {:>5} {:>6} {:>6}  {:<20} {}",
            s.identity.pid,
            s.identity.uid,
            state_name(s.state),
            s.connections,
            s.pasids.len(),
            s.quota,
            list,
            cmd
        );
    }
    if sets.is_empty() {
        println!("(no process holds a context)");
    }
    Ok(())
}

fn open_any(client: &mut Client, group: Option<u32>) -> Result<(u32, u32), CliError> {
    if let Some(g) = group {
        return Ok((client.nesting_container(g)?, g));
    }
    let groups: Vec<u32> = client
        .status()?
        .devices
        .iter()
        .filter(|d| d.pasid_width > 0 && d.group != u32::MAX)
        .map(|d| d.group)
        .collect();
    client
        .nesting_container_any(groups)
        .map_err(|e| CliError(format!("no free device group for a nesting container: {e}")))
}

fn pasid_alloc(a: &AllocArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva pasid alloc")?;
    let (c, group) = open_any(&mut client, a.group)?;
    let (got, failure) = alloc_many(&mut client, c, a.count, a.min, a.max);
    let pid = client.hello().identity.pid;
    if a.common.json {
        // One line, so a script reading a --hold session can take it line by line.
        println!(
            "{}",
            json!({
                "pid": pid, "group": group, "pasids": got,
                "error": failure.as_ref().map(|e| e.to_string()),
                "held": a.hold,
            })
        );
    } else {
        println!(
            "pid {pid} allocated {} PASID(s) on group {group}: {}",
            got.len(),
            ranges(&got)
        );
        if !a.hold && failure.is_none() {
            println!("(they are freed when this command exits; --hold keeps them)");
        }
    }
    std::io::stdout().flush()?;
    if let Some(e) = failure {
        if !a.hold {
            return Err(e.into());
        }
        eprintln!("vsva: {e}");
    }
    if a.hold {
        hold_session(&mut client, c, a)?;
    }
    Ok(())
}

/// Allocates up to `n` PASIDs in `[min, max]`, stopping at the first refusal: what was
/// allocated, and the refusal if there was one.
fn alloc_many(
    client: &mut Client,
    c: u32,
    n: u32,
    min: u32,
    max: u32,
) -> (Vec<u32>, Option<ClientError>) {
    let mut got = Vec::with_capacity(n.min(4096) as usize);
    for _ in 0..n {
        match client.pasid_alloc(c, min, max) {
            Ok(p) => got.push(p),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// Reads commands from stdin while holding the connection.
fn hold_session(client: &mut Client, c: u32, a: &AllocArgs) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let result: Result<Value, ClientError> = match words.as_slice() {
            [] => continue,
            ["quit"] | ["exit"] => break,
            ["alloc"] => client
                .pasid_alloc(c, a.min, a.max)
                .map(|p| json!({ "allocated": [p] })),
            ["alloc", n] => match n.parse::<u32>() {
                Ok(n) => match alloc_many(client, c, n, a.min, a.max) {
                    (v, Some(e)) if v.is_empty() => Err(e),
                    (v, e) => Ok(json!({ "allocated": v, "error": e.map(|e| e.to_string()) })),
                },
                Err(_) => Ok(json!({ "error": format!("not a count: {n}") })),
            },
            ["free", "all"] => client
                .pasid_free(c, 0, u32::MAX)
                .map(|()| json!({ "freed": "all" })),
            ["free", p] => match p.parse::<u32>() {
                Ok(p) => client.pasid_free(c, p, p).map(|()| json!({ "freed": [p] })),
                Err(_) => Ok(json!({ "error": format!("not a PASID: {p}") })),
            },
            ["list"] => client.sets().map(|s| {
                let me = client.hello().identity.pid;
                let mine = s
                    .into_iter()
                    .find(|e| e.identity.pid == me)
                    .map(|e| e.pasids)
                    .unwrap_or_default();
                json!({ "pasids": mine })
            }),
            _ => Ok(
                json!({ "error": format!("unknown command {line:?}: alloc [N], free PASID|all, list, quit") }),
            ),
        };
        let v = result.unwrap_or_else(|e| json!({ "error": e.to_string() }));
        if a.common.json {
            println!("{v}");
        } else {
            println!("{}", plain(&v));
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn plain(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    obj.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::Array(items) => {
                let nums: Vec<u32> = items
                    .iter()
                    .filter_map(|x| x.as_u64().map(|n| n as u32))
                    .collect();
                format!("{k}: {}", ranges(&nums))
            }
            Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn pasid_free(a: &FreeArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva pasid free")?;
    let sets = client.sets()?;
    let admin = client.is_admin();
    let mut report = Vec::new();
    for &p in &a.pasids {
        let owner = sets.iter().find(|s| s.pasids.contains(&p));
        let line = match owner {
            Some(s) => format!(
                "PASID {p} belongs to pid {} ({}): only its owner can free it; end that process, or release it with `vsva quota --release {}` (admin)",
                s.identity.pid,
                if s.command.is_empty() { "?" } else { &s.command },
                s.identity.pid
            ),
            None if admin => format!("PASID {p} is not allocated to any process"),
            None => format!("PASID {p} is not this process's (PASIDs belong to the process that allocated them; use `vsva pasid alloc --hold` and its `free` command)"),
        };
        report.push(line);
    }
    if a.common.json {
        print_json(&json!({ "freed": [], "errors": report }))?;
    }
    Err(CliError(report.join("; ")))
}

fn quota(a: &QuotaArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva quota")?;
    if let Some(pid) = a.release {
        let freed = client.force_release(pid)?;
        if a.common.json {
            return print_json(&json!({ "released": pid, "freed": freed }));
        }
        println!("released pid {pid}: {freed} PASID(s) freed, its connections closed");
        return Ok(());
    }
    match (a.pid, a.quota) {
        (Some(pid), Some(q)) => {
            client.set_quota(pid, q)?;
            if a.common.json {
                return print_json(&json!({ "pid": pid, "quota": q }));
            }
            println!("pid {pid} may now own {q} PASID(s)");
            Ok(())
        }
        (Some(_), None) => Err(CliError("give both PID and QUOTA to set a quota".into())),
        _ => {
            let default = client.status()?.default_quota;
            let me = client.hello().identity.pid;
            let sets: Vec<_> = client
                .sets()?
                .into_iter()
                .filter(|s| s.identity.pid != me)
                .collect();
            if a.common.json {
                return print_json(&json!({
                    "default_quota": default,
                    "processes": sets.iter().map(|s| json!({ "pid": s.identity.pid, "owned": s.pasids.len(), "quota": s.quota })).collect::<Vec<_>>(),
                }));
            }
            println!("default quota: {default} PASIDs per process");
            for s in &sets {
                println!(
                    "  pid {:>8}: {} of {}",
                    s.identity.pid,
                    s.pasids.len(),
                    s.quota
                );
            }
            Ok(())
        }
    }
}

fn stage_name(stage: u8) -> &'static str {
    match stage {
        0 => "context/PASID table",
        1 => "first level",
        _ => "second level",
    }
}

fn faults(a: &FaultsArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva faults")?;
    let f = client.faults(a.max)?;
    if a.common.json {
        return print_json(&json!({
            "total": f.total, "dropped": f.dropped,
            "faults": f.faults.iter().map(|r| json!({
                "source_id": format!("{:02x}:{:02x}.{}", r.source_id >> 8, (r.source_id >> 3) & 0x1f, r.source_id & 7),
                "pasid": (r.flags & vsva_proto::DMA_PASID != 0).then_some(r.pasid),
                "addr": format!("{:#x}", r.addr),
                "write": r.flags & vsva_proto::DMA_WRITE != 0,
                "reason": format!("{:#04x}", r.reason),
                "description": r.description,
                "stage": stage_name(r.stage),
                "level": r.level,
            })).collect::<Vec<_>>(),
        }));
    }
    println!(
        "{} fault(s) recorded since start, {} dropped; showing {}",
        f.total,
        f.dropped,
        f.faults.len()
    );
    for r in &f.faults {
        let pasid = if r.flags & vsva_proto::DMA_PASID != 0 {
            r.pasid.to_string()
        } else {
            "-".into()
        };
        println!(
            "  {:02x}:{:02x}.{} pasid {:>7} {} {:#018x}: {:#04x} {} ({}, level {})",
            r.source_id >> 8,
            (r.source_id >> 3) & 0x1f,
            r.source_id & 7,
            pasid,
            if r.flags & vsva_proto::DMA_WRITE != 0 {
                "write"
            } else {
                "read "
            },
            r.addr,
            r.reason,
            r.description,
            stage_name(r.stage),
            r.level
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[]), "-");
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges(&[9]), "9");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1500), "1.500s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(7_300_000), "2h01m");
    }
}
