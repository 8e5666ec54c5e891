//! `vsva pasid alloc | free`: allocation for scripting and tests (the `--hold` session it
//! may open is in `hold.rs`), and the explanation of why a PASID cannot be freed from
//! outside.

use std::io::Write;

use serde_json::json;
use vsva_client::Client;

use crate::common::{outln, print_json, warn, CliError, Common};
use crate::hold::{alloc_many, hold_session, Limits};
use crate::number::{parse_count, parse_pasid_list, parse_u32, ranges, PasidList};

/// `vsva pasid alloc`.
#[derive(Debug, clap::Args)]
pub(crate) struct AllocArgs {
    /// How many (at least 1).
    #[arg(short = 'n', long, default_value = "1", value_parser = parse_count, allow_negative_numbers = true)]
    pub(crate) count: u32,
    /// Lowest acceptable PASID.
    #[arg(long, default_value = "1", value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) min: u32,
    /// Highest acceptable PASID.
    #[arg(long, default_value = "0xffffffff", value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) max: u32,
    /// IOMMU group to open the nesting container on (default: the first free one).
    #[arg(long, value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) group: Option<u32>,
    /// Keep the connection (and the PASIDs) until stdin closes; read commands from stdin:
    /// `alloc [N]`, `free LIST|all` (LIST like `1-3,7`), `list`, `quit`. After a daemon
    /// restart the session resumes with its token and gets its PASIDs back.
    #[arg(long)]
    pub(crate) hold: bool,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// `vsva pasid free`.
#[derive(Debug, clap::Args)]
pub(crate) struct FreeArgs {
    /// The PASIDs: numbers, ranges like `1-3`, comma lists like `1-3,7`, or `all`.
    #[arg(required = true, value_name = "LIST", allow_negative_numbers = true)]
    pub(crate) pasids: Vec<String>,
    #[command(flatten)]
    pub(crate) common: Common,
}

pub(crate) fn open_any(client: &mut Client, group: Option<u32>) -> Result<(u32, u32), CliError> {
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
    client.nesting_container_any(groups).map_err(|e| {
        CliError::Message(format!("no free device group for a nesting container: {e}"))
    })
}

/// Runs `vsva pasid alloc`.
pub(crate) fn alloc(a: &AllocArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva pasid alloc")?;
    let (c, group) = open_any(&mut client, a.group)?;
    let (got, failure) = alloc_many(&mut client, c, a.count, a.min, a.max);
    let pid = client.hello().credentials.pid;
    if a.common.json {
        // One line, so a script reading a --hold session can take it line by line.
        outln!(
            "{}",
            json!({
                "pid": pid, "group": group, "pasids": got,
                "error": failure.as_ref().map(|e| e.to_string()),
                "held": a.hold,
            })
        );
    } else {
        outln!(
            "pid {pid} allocated {} PASID(s) on group {group}: {}",
            got.len(),
            ranges(&got)
        );
        if !a.hold && failure.is_none() {
            outln!("(they are freed when this command exits; --hold keeps them)");
        }
    }
    std::io::stdout().flush()?;
    if let Some(e) = failure {
        if !a.hold {
            return Err(e.into());
        }
        warn(&e);
    }
    if a.hold {
        let limits = Limits {
            min: a.min,
            max: a.max,
        };
        hold_session(client, c, group, limits, &a.common)?;
    }
    Ok(())
}

/// Runs `vsva pasid free`: explains who owns each PASID (only the owner may free it).
pub(crate) fn free(a: &FreeArgs) -> Result<(), CliError> {
    let named = parse_pasid_list(&a.pasids).map_err(CliError::Message)?;
    let mut client = a.common.connect("vsva pasid free")?;
    let sets = client.sets()?;
    let admin = client.is_admin();
    let mut report = Vec::new();
    let mut pasids: Vec<u32> = match &named {
        PasidList::Ranges(r) if r.iter().map(|&(lo, hi)| u64::from(hi - lo)).sum::<u64>() < 64 => {
            r.iter().flat_map(|&(lo, hi)| lo..=hi).collect()
        }
        // A long range or `all`: explain the PASIDs that are allocated in it.
        _ => sets
            .iter()
            .flat_map(|s| s.pasids.iter().copied())
            .filter(|&p| named.contains(p))
            .collect(),
    };
    pasids.sort_unstable();
    pasids.dedup();
    if pasids.is_empty() {
        report.push(if admin {
            "no PASID in that list is allocated to any process".to_string()
        } else {
            "no PASID in that list belongs to a process this one may see (PASIDs belong to the process that allocated them; use `vsva pasid alloc --hold` and its `free` command)".to_string()
        });
    }
    for &p in &pasids {
        let owner = sets.iter().find(|s| s.pasids.contains(&p));
        let line = match owner {
            Some(s) => format!(
                "PASID {p} belongs to pid {} ({}): only its owner can free it; end that process, or release it with `vsva quota --release {}` (admin)",
                s.credentials.pid,
                if s.command.is_empty() { "?" } else { &s.command },
                s.credentials.pid
            ),
            None if admin => format!("PASID {p} is not allocated to any process"),
            None => format!("PASID {p} is not this process's (PASIDs belong to the process that allocated them; use `vsva pasid alloc --hold` and its `free` command)"),
        };
        report.push(line);
    }
    if a.common.json {
        print_json(&json!({ "freed": [], "errors": report }))?;
    }
    Err(CliError::msg(report.join("; ")))
}
