//! The inspection and admin commands: `vsva status`, `sets`, `quota` and `faults`, as text
//! tables or JSON.

use serde_json::json;
use vsva_client::{Client, SetEntry, SetState};

use crate::common::{
    bdf, clip, outln, print_json, printable, wait_unless_stdout_closed, CliError, Common,
};
use crate::number::{parse_u32, ranges};
use crate::watcher::Outage;

/// `vsva quota`.
#[derive(Debug, clap::Args)]
pub(crate) struct QuotaArgs {
    /// The process whose quota to set (with QUOTA).
    #[arg(value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) pid: Option<u32>,
    /// Its new quota.
    #[arg(value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) quota: Option<u32>,
    /// Release everything this process holds and close its connections.
    #[arg(long, value_name = "PID", conflicts_with_all = ["pid", "quota"],
          value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) release: Option<u32>,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// `vsva faults`.
#[derive(Debug, clap::Args)]
pub(crate) struct FaultsArgs {
    /// At most this many records (the most recent).
    #[arg(long, default_value = "50", value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) max: u32,
    /// Keep running and print each new record as the daemon logs it, one line each (with
    /// `--json`, one object per line with its `number`), until interrupted or stdout closes.
    /// Records the daemon's log dropped before they were read are counted in a line of
    /// their own (`{"missed": N}`). A daemon that goes away is said so on stderr and asked
    /// again at each interval; a restarted one's log is followed from its first record.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// How often `--follow` asks the daemon, in milliseconds.
    #[arg(long, default_value = "500", value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub(crate) interval_ms: u64,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// A duration in milliseconds as `1.500s`, `2m05s` or `2h01m`.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{:03}s", s, ms % 1000),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Runs `vsva status`.
pub(crate) fn status(c: &Common) -> Result<(), CliError> {
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
            // A path that is not UTF-8 has no JSON string: shown as `display` shows it.
            "socket": c.socket().to_string_lossy(),
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
                "name": d.name, "source_id": bdf(d.source_id), "group": d.group, "pasid_width": d.pasid_width,
            })).collect::<Vec<_>>(),
            "nesting_refusals": s.nesting_refusals.iter().map(|n| json!({
                "op": n.op, "reason": n.reason, "count": n.count,
            })).collect::<Vec<_>>(),
        }));
    }
    outln!(
        "{} on {}, up {}",
        s.server,
        c.socket().display(),
        duration(s.uptime_ms)
    );
    outln!(
        "PASIDs: {} of {} allocated ({:.4}%), {} freeing, {} held for processes to resume ({}-bit space)",
        s.allocated,
        s.capacity,
        100.0 * s.allocated as f64 / f64::from(s.capacity.max(1)),
        s.freeing,
        s.held,
        s.pasid_bits
    );
    outln!(
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
    outln!(
        "IOTLB: {} hits, {} misses ({:.1}% hit rate); DMA faults: {}",
        s.iotlb_hits,
        s.iotlb_misses,
        100.0 * hit_rate,
        s.faults
    );
    let refused: Vec<String> = s
        .nesting_refusals
        .iter()
        .filter(|n| n.count > 0)
        .map(|n| format!("{} {} {}", n.count, n.op, n.reason))
        .collect();
    outln!(
        "NESTING_OP refused (answered 0, changed nothing; see the daemon's log): {}",
        if refused.is_empty() {
            "none".to_string()
        } else {
            refused.join(", ")
        }
    );
    outln!("devices:");
    outln!("  {:<14} {:>6} {:>11}", "DEVICE", "GROUP", "PASID BITS");
    for d in &s.devices {
        let group = if d.group == u32::MAX {
            "-".to_string()
        } else {
            d.group.to_string()
        };
        outln!("  {:<14} {:>6} {:>11}", d.name, group, d.pasid_width);
    }
    Ok(())
}

fn state_name(s: SetState) -> &'static str {
    match s {
        SetState::Live => "live",
        SetState::Held => "held",
    }
}

/// The sets the daemon reports, without this command's own process.
fn other_sets(client: &mut Client) -> Result<Vec<SetEntry>, CliError> {
    let me = client.hello().credentials.pid;
    Ok(client
        .sets()?
        .into_iter()
        .filter(|s| s.credentials.pid != me)
        .collect())
}

/// Runs `vsva sets`.
pub(crate) fn sets(c: &Common) -> Result<(), CliError> {
    let mut client = c.connect("vsva sets")?;
    let admin = client.is_admin();
    let sets = other_sets(&mut client)?;
    if c.json {
        return print_json(&json!({
            "complete": admin,
            "sets": sets.iter().map(|s| json!({
                "pid": s.credentials.pid, "uid": s.credentials.uid, "start_time": s.credentials.start_time,
                "state": state_name(s.state), "connections": s.connections,
                "owned": s.pasids.len(), "quota": s.quota, "pasids": s.pasids, "command": s.command,
            })).collect::<Vec<_>>(),
        }));
    }
    if !admin {
        outln!("(not root or in the admin group: only this process's own set is visible, and it has none)");
    }
    outln!(
        "{:>8} {:>6} {:>5} {:>5} {:>6} {:>6}  {:<20} COMMAND",
        "PID",
        "UID",
        "STATE",
        "CONNS",
        "OWNED",
        "QUOTA",
        "PASIDS"
    );
    for s in &sets {
        let cmd = clip(&printable(&s.command), 40);
        let list = clip(&ranges(&s.pasids), 20);
        outln!(
            "{:>8} {:>6} {:>5} {:>5} {:>6} {:>6}  {:<20} {}",
            s.credentials.pid,
            s.credentials.uid,
            state_name(s.state),
            s.connections,
            s.pasids.len(),
            s.quota,
            list,
            cmd
        );
    }
    if sets.is_empty() {
        outln!("(no process holds a context)");
    }
    Ok(())
}

/// Runs `vsva quota`.
pub(crate) fn quota(a: &QuotaArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva quota")?;
    if let Some(pid) = a.release {
        let freed = client.force_release(pid)?;
        if a.common.json {
            return print_json(&json!({ "released": pid, "freed": freed }));
        }
        outln!("released pid {pid}: {freed} PASID(s) freed, its connections closed");
        return Ok(());
    }
    match (a.pid, a.quota) {
        (Some(pid), Some(q)) => {
            client.set_quota(pid, q)?;
            if a.common.json {
                return print_json(&json!({ "pid": pid, "quota": q }));
            }
            outln!("pid {pid} may now own {q} PASID(s)");
            Ok(())
        }
        (Some(_), None) => Err(CliError::msg("give both PID and QUOTA to set a quota")),
        _ => {
            let default = client.status()?.default_quota;
            let sets = other_sets(&mut client)?;
            if a.common.json {
                return print_json(&json!({
                    "default_quota": default,
                    "processes": sets.iter().map(|s| json!({ "pid": s.credentials.pid, "owned": s.pasids.len(), "quota": s.quota })).collect::<Vec<_>>(),
                }));
            }
            outln!("default quota: {default} PASIDs per process");
            for s in &sets {
                outln!(
                    "  pid {:>8}: {} of {}",
                    s.credentials.pid,
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

/// One fault as one line of text: requester, PASID, access, address, reason, stage.
pub(crate) fn fault_line(r: &vsva_proto::FaultRecord) -> String {
    let pasid = if r.flags & vsva_proto::DMA_PASID != 0 {
        r.pasid.to_string()
    } else {
        "-".into()
    };
    format!(
        "{} pasid {:>7} {} {:#018x}: {:#04x} {} ({}, level {})",
        bdf(r.source_id),
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
    )
}

/// One fault record as JSON.
fn fault_json(r: &vsva_proto::FaultRecord) -> serde_json::Value {
    json!({
        "source_id": bdf(r.source_id),
        "pasid": (r.flags & vsva_proto::DMA_PASID != 0).then_some(r.pasid),
        "addr": format!("{:#x}", r.addr),
        "write": r.flags & vsva_proto::DMA_WRITE != 0,
        "reason": format!("{:#04x}", r.reason),
        "description": r.description,
        "stage": stage_name(r.stage),
        "level": r.level,
    })
}

/// Runs `vsva faults`.
pub(crate) fn faults(a: &FaultsArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva faults")?;
    if a.follow {
        return follow(client, a);
    }
    let f = client.faults(a.max)?;
    if a.common.json {
        return print_json(&json!({
            "total": f.total, "dropped": f.dropped,
            "faults": f.faults.iter().map(fault_json).collect::<Vec<_>>(),
        }));
    }
    outln!(
        "{} fault(s) recorded since start, {} dropped; showing {}",
        f.total,
        f.dropped,
        f.faults.len()
    );
    for r in &f.faults {
        outln!("  {}", fault_line(r));
    }
    Ok(())
}

/// `vsva faults --follow`: the last `max` records, then each new one as it is logged, read
/// with the daemon's fault cursor so that identical records (a device retrying one access)
/// each print once. A daemon that goes away is asked again at each interval
/// (`crate::watcher`); a restarted one's log numbers from 1 again, and is followed from its
/// first record.
fn follow(mut client: Client, a: &FaultsArgs) -> Result<(), CliError> {
    let show = |f: &vsva_proto::NumberedFault| -> Result<(), CliError> {
        if a.common.json {
            let mut v = fault_json(&f.record);
            v["number"] = json!(f.number);
            print_json(&v)
        } else {
            outln!("#{:<6} {}", f.number, fault_line(&f.record));
            Ok(())
        }
    };
    let interval = std::time::Duration::from_millis(a.interval_ms);
    let mut outage = Outage::new(
        "faults",
        a.common.socket(),
        interval,
        client.hello().instance,
    );
    // Catch up with what the log holds, and show its last `max` records.
    let mut since = 0;
    let held = client.new_faults(&mut since)?.faults;
    for f in &held[held.len().saturating_sub(a.max as usize)..] {
        show(f)?;
    }
    let mut client = Some(client);
    loop {
        wait_unless_stdout_closed(interval)?;
        let c = match &mut client {
            Some(c) => c,
            None => match a.common.connect("vsva faults") {
                Ok(c) => {
                    if outage.answered(c.hello().instance) {
                        since = 0;
                    }
                    client.insert(c)
                }
                Err(e) => {
                    outage.lost(&e);
                    continue;
                }
            },
        };
        let new = match c.new_faults(&mut since) {
            Ok(new) => new,
            Err(e) => {
                client = None;
                outage.lost(&e.into());
                continue;
            }
        };
        let missed = new.missed;
        if missed > 0 {
            if a.common.json {
                print_json(&json!({ "missed": missed }))?;
            } else {
                outln!(
                    "({missed} record(s) dropped by the daemon's full log before they were read)"
                );
            }
        }
        for f in &new.faults {
            show(f)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(1500), "1.500s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(7_300_000), "2h01m");
    }
}
