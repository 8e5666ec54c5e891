//! `vsva demo`: finds or starts a daemon, tells the story step by step (or as one JSON
//! document) and ends with a summary table.

use std::path::PathBuf;

use serde_json::json;
use vsva_client::{daemon_running, find_vsvad, Client, Options, PrivateDaemon};

use crate::common::{print_json, CliError, Common};
use crate::story::{run_story, Step};

/// `vsva demo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Never start a private daemon: fail if none is running.
    #[arg(long)]
    pub(crate) no_spawn: bool,
    /// The vsvad binary for a private daemon (default: $VSVA_VSVAD, next to this program, or
    /// in PATH).
    #[arg(long, value_name = "PATH")]
    pub(crate) vsvad: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// Runs `vsva demo`.
pub(crate) fn run(a: &DemoArgs) -> Result<(), CliError> {
    let socket = a.common.socket();
    let private = if daemon_running(&socket) {
        None
    } else if a.no_spawn {
        return Err(CliError(format!(
            "no vsvad is running on {}",
            socket.display()
        )));
    } else {
        let vsvad = find_vsvad(a.vsvad.as_deref()).ok_or_else(|| {
            CliError(format!(
                "no vsvad is running on {} and no vsvad binary was found (next to vsva, in PATH, or $VSVA_VSVAD); start vsvad or build it with `cargo build -p vsvad`",
                socket.display()
            ))
        })?;
        Some(PrivateDaemon::start(&vsvad)?)
    };
    let socket = private.as_ref().map_or(socket, |d| d.socket().to_owned());
    let json = a.common.json;
    if !json {
        match &private {
            Some(_) => println!(
                "No vsvad was running: started a private one on {} (stopped at the end).\n",
                socket.display()
            ),
            None => println!("Using the vsvad on {}.\n", socket.display()),
        }
    }
    let mut client = Client::connect(Options::new(&socket, "vsva demo"))
        .map_err(|e| CliError(format!("{}: {e}", socket.display())))?;
    let mut n = 0;
    let report = run_story(&mut client, &mut |s: &Step| {
        n += 1;
        if !json {
            println!(
                "{n:>2}. {}\n    {}{}\n",
                s.title,
                s.detail,
                if s.ok { "" } else { "   <-- not as expected" }
            );
        }
    })?;
    if json {
        print_json(&json!({
            "socket": socket,
            "private_daemon": private.is_some(),
            "ok": report.ok(),
            "steps": report.steps.iter().map(|s| json!({ "title": s.title, "detail": s.detail, "ok": s.ok, "micros": s.micros })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("Summary");
        println!(
            "  {:>2}  {:<52} {:>6} {:>10}",
            "#", "STEP", "RESULT", "TIME"
        );
        for (i, s) in report.steps.iter().enumerate() {
            let mut t = s.title.clone();
            if t.len() > 52 {
                t.truncate(49);
                t.push_str("...");
            }
            println!(
                "  {:>2}  {:<52} {:>6} {:>8}µs",
                i + 1,
                t,
                if s.ok { "ok" } else { "FAILED" },
                s.micros
            );
        }
    }
    drop(client);
    drop(private);
    if report.ok() {
        Ok(())
    } else {
        Err(CliError(
            "some demo steps did not go as expected (see above)".into(),
        ))
    }
}
