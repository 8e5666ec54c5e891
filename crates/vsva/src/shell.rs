//! Shell completions and the manual page, generated from the command-line definition itself
//! (`clap_complete`, `clap_mangen`), so they can never disagree with what the parser accepts.

use std::io::{self, Write};

use clap::Command;
use clap_complete::Shell;

use crate::common::CliError;

/// `vsva completions SHELL`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the completion script for `args.shell` to stdout (e.g. `vsva completions bash >
/// /usr/share/bash-completion/completions/vsva`).
pub(crate) fn completions(mut cmd: Command, args: &CompletionsArgs) -> Result<(), CliError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "vsva", &mut script);
    emit(&script)
}

/// Writes the manual page, in roff, to stdout (e.g. `vsva man > /usr/share/man/man1/vsva.1`).
pub(crate) fn man(cmd: Command) -> Result<(), CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    emit(&page)
}

/// Writes `bytes` to stdout; a reader that closed it early (`| head`) ends the command quietly.
fn emit(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}
