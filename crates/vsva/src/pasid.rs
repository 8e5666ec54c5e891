//! `vsva pasid alloc | free`: allocation for scripting and tests, with a `--hold` session
//! driven from stdin, and the explanation of why a PASID cannot be freed from outside.

use std::io::{BufRead, Write};

use serde_json::{json, Value};
use vsva_client::{Client, ClientError};

use crate::common::{print_json, ranges, CliError, Common};

/// `vsva pasid alloc`.
#[derive(Debug, clap::Args)]
pub(crate) struct AllocArgs {
    /// How many.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub(crate) count: u32,
    /// Lowest acceptable PASID.
    #[arg(long, default_value_t = 1)]
    pub(crate) min: u32,
    /// Highest acceptable PASID.
    #[arg(long, default_value_t = u32::MAX)]
    pub(crate) max: u32,
    /// IOMMU group to open the nesting container on (default: the first free one).
    #[arg(long)]
    pub(crate) group: Option<u32>,
    /// Keep the connection (and the PASIDs) until stdin closes; read commands from stdin:
    /// `alloc [N]`, `free PASID|all`, `list`, `quit`.
    #[arg(long)]
    pub(crate) hold: bool,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// `vsva pasid free`.
#[derive(Debug, clap::Args)]
pub(crate) struct FreeArgs {
    /// The PASIDs.
    #[arg(required = true)]
    pub(crate) pasids: Vec<u32>,
    #[command(flatten)]
    pub(crate) common: Common,
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

/// Runs `vsva pasid alloc`.
pub(crate) fn alloc(a: &AllocArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva pasid alloc")?;
    let (c, group) = open_any(&mut client, a.group)?;
    let (got, failure) = alloc_many(&mut client, c, a.count, a.min, a.max);
    let pid = client.hello().credentials.pid;
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
                let me = client.hello().credentials.pid;
                let mine = s
                    .into_iter()
                    .find(|e| e.credentials.pid == me)
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

/// Runs `vsva pasid free`: explains who owns each PASID (only the owner may free it).
pub(crate) fn free(a: &FreeArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva pasid free")?;
    let sets = client.sets()?;
    let admin = client.is_admin();
    let mut report = Vec::new();
    for &p in &a.pasids {
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
    Err(CliError(report.join("; ")))
}
