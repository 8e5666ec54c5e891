//! `vsva iommufd`: a process's iommufd objects (every context its connections opened), as
//! a text table or JSON — ids, kinds, users, what each is built on, domain ids, devices and
//! their attachments, fault-queue backlogs.

use serde_json::{json, Value};
use vsva_client::{IommufdObject, IOMMUFD_KIND_NAMES, IOMMUFD_NONE};

use crate::common::{bdf, outln, print_json, CliError, Common};
use crate::number::parse_u32;

/// `vsva iommufd`.
#[derive(Debug, clap::Args)]
pub(crate) struct IommufdArgs {
    /// The process whose objects to show (another process's needs admin); default: all of
    /// this command's own, which has none unless it opened some.
    #[arg(long, value_parser = parse_u32, allow_negative_numbers = true)]
    pub(crate) pid: Option<u32>,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// A numeric field, `None` when it does not apply.
fn some(v: u32) -> Option<u32> {
    (v != IOMMUFD_NONE).then_some(v)
}

fn kind_name(o: &IommufdObject) -> &'static str {
    IOMMUFD_KIND_NAMES
        .get(usize::from(o.kind))
        .copied()
        .unwrap_or("unknown")
}

fn to_json(o: &IommufdObject) -> Value {
    json!({
        "pid": o.pid,
        "connection": o.conn,
        "id": o.id,
        "kind": kind_name(o),
        "users": o.users,
        "parent": some(o.parent),
        "domain_id": some(o.domain_id),
        "device": some(o.source_id).map(|s| bdf(s as u16)),
        "attached": o.attached.iter().map(|&(pasid, hwpt)| json!({
            "pasid": some(pasid), "hwpt": hwpt,
        })).collect::<Vec<_>>(),
        "faults_unread": some(o.faults_unread),
        "faults_waiting": some(o.faults_waiting),
    })
}

/// `vsva iommufd [--pid PID]`.
pub(crate) fn run(a: &IommufdArgs) -> Result<(), CliError> {
    let mut client = a.common.connect("vsva iommufd")?;
    let objects = client.iommufd_objects(a.pid.unwrap_or(0))?;
    if a.common.json {
        return print_json(&json!({
            "objects": objects.iter().map(to_json).collect::<Vec<_>>(),
        }));
    }
    outln!("{} iommufd object(s)", objects.len());
    for o in &objects {
        let mut detail = String::new();
        if let Some(p) = some(o.parent) {
            detail += &format!(" on {p}");
        }
        if let Some(d) = some(o.domain_id) {
            detail += &format!(" did {d}");
        }
        if let Some(s) = some(o.source_id) {
            detail += &format!(" {}", bdf(s as u16));
        }
        for &(pasid, hwpt) in &o.attached {
            match some(pasid) {
                Some(p) => detail += &format!(" pasid {p}->{hwpt}"),
                None => detail += &format!(" rid->{hwpt}"),
            }
        }
        if let (Some(u), Some(w)) = (some(o.faults_unread), some(o.faults_waiting)) {
            detail += &format!(" faults {u} unread {w} waiting");
        }
        outln!(
            "  pid {:>7} conn {:>4} id {:>3} {:<11} users {:>2}{}",
            o.pid,
            o.conn,
            o.id,
            kind_name(o),
            o.users,
            detail
        );
    }
    Ok(())
}
