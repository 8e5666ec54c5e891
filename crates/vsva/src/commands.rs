//! The commands that talk to `vsvad`: `status`, `sets`, `pasid alloc|free`, `quota`, `faults`,
//! `top` and `demo`, each with `--json`, and the one place that runs them.
//!
//! Every command prints plain text, or with `--json` one compact JSON document on one line
//! (the `--hold` session: one per line). Errors are one line on stderr (`vsva: ...`) and exit
//! code 1. A stdout closed by its reader (`vsva status | head -1`) ends a command quietly
//! with exit code 0; Ctrl-C, SIGTERM or SIGHUP end it by that signal after its clean-up
//! (`crate::interrupt`). Numbers are decimal or `0x` hex everywhere; PASID lists take ranges
//! (`1-3,7`) and `all`.

use std::process::ExitCode;

use crate::common::{warn, CliError, Common};
use crate::demo::{self, DemoArgs};
use crate::iommufd::{self, IommufdArgs};
use crate::pasid::{self, AllocArgs, FreeArgs};
use crate::report::{self, FaultsArgs, QuotaArgs};
use crate::top::{self, TopArgs};

/// The daemon commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DaemonCommand {
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
    /// A live view that refreshes: PASID space, processes against quota, request,
    /// translation, fault and commit rates, recent faults (q or Esc quits, Ctrl-C
    /// interrupts; one line per reading when stdout is not a terminal).
    Top(TopArgs),
    /// A process's iommufd objects (another process's: admin).
    Iommufd(IommufdArgs),
    /// An end-to-end story: a guest allocates PASIDs, builds page tables, binds them, a device
    /// does DMA through them, the guest unmaps and invalidates, DMA faults, PASIDs are freed.
    Demo(DemoArgs),
}

/// `vsva pasid ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PasidCommand {
    /// Allocate PASIDs. They belong to this command's process: without --hold they are freed
    /// when it exits.
    Alloc(AllocArgs),
    /// Free PASIDs. Only their owner may: this explains who owns them.
    Free(FreeArgs),
}

/// Runs a command; prints errors as one line and returns the exit code.
pub(crate) fn run(cmd: DaemonCommand) -> ExitCode {
    let result = match cmd {
        DaemonCommand::Status(c) => report::status(&c),
        DaemonCommand::Sets(c) => report::sets(&c),
        DaemonCommand::Pasid(PasidCommand::Alloc(a)) => pasid::alloc(&a),
        DaemonCommand::Pasid(PasidCommand::Free(a)) => pasid::free(&a),
        DaemonCommand::Quota(a) => report::quota(&a),
        DaemonCommand::Faults(a) => report::faults(&a),
        DaemonCommand::Top(a) => top::run(&a),
        DaemonCommand::Iommufd(a) => iommufd::run(&a),
        DaemonCommand::Demo(a) => demo::run(&a),
    };
    match result {
        // A reader that stopped reading (`| head`) got what it wanted: no message.
        Ok(()) | Err(CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            warn(&e);
            ExitCode::from(1)
        }
    }
}
