//! `vsva demo`: finds or starts a daemon, tells the story step by step (or as one JSON
//! document) and ends with a summary table. A private daemon it started is stopped at the
//! end, also when the demo is interrupted (Ctrl-C, SIGTERM, SIGHUP); killed (`kill -9`), the
//! demo runs no clean-up, and the daemon, started `--ephemeral`, stops and removes its
//! directory by itself (`vsva_client::PrivateDaemon`).

use std::path::PathBuf;

use serde_json::json;
use vsva_client::{daemon_running, find_vsvad, Client, PrivateDaemon};

use crate::common::{clip, outln, print_json, CliError, Common};
use crate::interrupt::Guarded;
use crate::story::{run_story, Step};
use crate::story_fault::DEMO_MACHINE;

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
        return Err(CliError::Message(format!(
            "no vsvad is running on {}",
            socket.display()
        )));
    } else {
        let vsvad = find_vsvad(a.vsvad.as_deref()).ok_or_else(|| {
            CliError::Message(format!(
                "no vsvad is running on {} and no vsvad binary was found (next to vsva, in PATH, or $VSVA_VSVAD); start vsvad or build it with `cargo build -p vsvad`",
                socket.display()
            ))
        })?;
        // Stopped on drop, and on SIGINT (Ctrl-C), SIGTERM or SIGHUP as well.
        Some(Guarded::start(|| {
            Ok(PrivateDaemon::start_with(&vsvad, Some(DEMO_MACHINE), &[])?)
        })?)
    };
    let socket = private.as_ref().map_or(socket, Guarded::socket);
    let json = a.common.json;
    if !json {
        match &private {
            Some(_) => outln!(
                "No vsvad was running: started a private one on {} (stopped at the end).\n",
                socket.display()
            ),
            None => outln!("Using the vsvad on {}.\n", socket.display()),
        }
    }
    let mut client =
        Client::connect(a.common.options(socket.clone(), "vsva demo")).map_err(|e| {
            match CliError::from(e) {
                CliError::Message(m) => CliError::Message(format!("{}: {m}", socket.display())),
                closed => closed,
            }
        })?;
    let mut n = 0;
    // The first failure to print; the story goes on (it cleans up after itself) but
    // nothing more is printed.
    let mut printing: Result<(), CliError> = Ok(());
    let report = run_story(&mut client, &mut |s: &Step| {
        n += 1;
        if !json && printing.is_ok() {
            printing = (|| {
                outln!(
                    "{n:>2}. {}\n    {}{}\n",
                    s.title,
                    s.detail,
                    if s.ok { "" } else { "   <-- not as expected" }
                );
                Ok(())
            })();
        }
    })?;
    printing?;
    if json {
        print_json(&json!({
            "socket": socket.to_string_lossy(),
            "private_daemon": private.is_some(),
            "ok": report.ok(),
            "steps": report.steps.iter().map(|s| json!({ "title": s.title, "detail": s.detail, "ok": s.ok, "micros": s.micros })).collect::<Vec<_>>(),
        }))?;
    } else {
        outln!("Summary");
        outln!(
            "  {:>2}  {:<52} {:>6} {:>10}",
            "#",
            "STEP",
            "RESULT",
            "TIME"
        );
        for (i, s) in report.steps.iter().enumerate() {
            let t = clip(&s.title, 52);
            outln!(
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
        Err(CliError::msg(
            "some demo steps did not go as expected (see above)",
        ))
    }
}
