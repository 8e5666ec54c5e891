//! `vsva`: the vsva command-line tool.
//!
//! Subcommands live in one module each; `main` only parses and dispatches. `pgwalk` works on
//! a memory image alone; the others talk to `vsvad` through `vsva-client`.

#![forbid(unsafe_code)]

mod commands;
mod common;
mod demo;
mod diagram;
mod hold;
mod interrupt;
mod iommufd;
mod number;
mod pasid;
mod pgwalk;
mod report;
mod shell;
mod story;
mod story_fault;
mod top;
mod watcher;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// vsva command-line tool.
#[derive(Debug, Parser)]
#[command(
    name = "vsva",
    version,
    about = "vsva: virtual Shared Virtual Addressing tools",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How an interrupted command ends, the same for every command (see `interrupt.rs`), and what
/// a watcher does when the daemon goes away, the same for both (see `watcher.rs`).
const AFTER_HELP: &str = "Interrupted by Ctrl-C (SIGINT), SIGTERM or SIGHUP, a command \
    cleans up (restores the terminal, stops a private daemon it started) and then ends by \
    that signal, so a shell reports 130, 143 or 129 and a script that ran it stops too. \
    Leaving `top` with q or Esc, or a reader closing the output (`| head`), ends with status 0.

The watchers, `top` and `faults --follow`, outlive the daemon they watch: when it goes away \
(stopped, restarted) they say so once on stderr, ask again at each interval, and say once \
more when it answers (a restarted daemon's fault log is followed from its first record). \
Only their first connection must succeed: a wrong --socket is an error. Bound them with \
`top -n COUNT` or `timeout`.";

/// Every subcommand.
#[derive(Debug, Subcommand)]
enum Command {
    /// Walk an x86-64 first-level page table inside a raw memory image, one JSON line per
    /// address.
    Pgwalk(pgwalk::Args),
    /// The commands that talk to vsvad (status, sets, pasid, quota, faults, top, demo).
    #[command(flatten)]
    Daemon(commands::DaemonCommand),
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(shell::CompletionsArgs),
    /// Print the manual page (roff), e.g. `vsva man > vsva.1`.
    Man,
}

/// The exit of a command that only prints what it generated.
fn generated(result: Result<(), common::CliError>) -> ExitCode {
    match result {
        Ok(()) | Err(common::CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            common::warn(&e);
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pgwalk(args) => pgwalk::run(&args),
        Command::Completions(args) => return generated(shell::completions(Cli::command(), &args)),
        Command::Man => return generated(shell::man(Cli::command())),
        Command::Daemon(cmd) => return commands::run(cmd),
    };
    match result {
        Ok(code) => code,
        // A reader that stopped reading (`| head`) got what it wanted: no message.
        Err(pgwalk::PgwalkError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            common::warn(&e);
            ExitCode::from(2)
        }
    }
}
