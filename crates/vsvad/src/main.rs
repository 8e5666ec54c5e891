//! `vsvad`: the vsva host daemon. Starts with no flags; see `vsvad --help`.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vsvad::config::{Config, Durability, Overrides};
use vsvad::log_sink::LogSink;

/// vsvad: the vsva host daemon (PASID space, software IOMMU and VFIO over a Unix socket).
#[derive(Debug, Parser)]
#[command(name = "vsvad", version)]
struct Args {
    /// TOML configuration file (every key optional).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listening socket (default: $VSVA_SOCKET, else the config file's `socket`, else
    /// $XDG_RUNTIME_DIR/vsva/vsvad.sock, else /tmp/vsva-$UID/vsvad.sock; /run/vsva/vsvad.sock
    /// as root).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// State directory (default: $XDG_STATE_HOME/vsva, else ~/.local/state/vsva, else
    /// /tmp/vsva-$UID/state; /var/lib/vsva as root).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// When acknowledged changes reach the disk: sync, async or off.
    #[arg(long, value_name = "MODE")]
    durability: Option<String>,
    /// Seconds PASIDs of live processes are held for them after a restart.
    #[arg(long, value_name = "SECS")]
    grace_period_secs: Option<u64>,
    /// PASIDs a process may own at once.
    #[arg(long, value_name = "N")]
    pasid_quota: Option<u32>,
    /// Group (name or gid) whose members may use admin requests.
    #[arg(long, value_name = "GROUP")]
    admin_group: Option<String>,
    /// Log filter (tracing-subscriber syntax), default from RUST_LOG or "info".
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Run as the ephemeral, private daemon of the process that started it, in DIR, which must
    /// hold the socket and the state directory: standard input is a pipe from that process,
    /// and when the pipe closes (the process exited, even by SIGKILL) the daemon stops as on
    /// SIGTERM and removes its socket, its state directory, the `vsvad.toml` and `vsvad.log`
    /// its starter put in DIR, and DIR if that left it empty (nothing else).
    /// `vsva demo` and `vsva_client::PrivateDaemon` start it so.
    #[arg(long, value_name = "DIR")]
    ephemeral: Option<PathBuf>,
    /// Print the effective configuration as TOML (a valid config file) and exit.
    #[arg(long)]
    check_config: bool,
    /// Print the manual page (roff, section 8) and exit, e.g. `vsvad --man > vsvad.8`.
    #[arg(long, exclusive = true)]
    man: bool,
}

/// The manual page: the options above, plus what the daemon does and where it looks.
fn man_page() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let cmd = Args::command().long_about(
        "vsvad plays the kernel's part of vSVA for client processes (VMMs, device emulators): \
         it owns the host-wide PASID space, a software VT-d IOMMU and the VFIO layer over it, \
         and serves them over a Unix socket. It starts with no flags. Under systemd it is \
         socket-activated (vsvad.socket) and notifies readiness (Type=notify); it logs to \
         standard error (the journal). SIGTERM or SIGINT drain the connections, flush the \
         state log and exit.",
    );
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).section("8").render(&mut page)?;
    Ok(page)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.man {
        let written = man_page().and_then(|page| std::io::stdout().write_all(&page));
        return match written {
            // A reader that closed early (`| head`) got what it wanted.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                // A standard error that cannot be written is ignored: the exit code tells.
                let _ = writeln!(
                    std::io::stderr(),
                    "vsvad: cannot write the manual page: {e}"
                );
                ExitCode::from(1)
            }
            _ => ExitCode::SUCCESS,
        };
    }
    // Before any thread starts: it reads and removes LISTEN_FDS / LISTEN_PID.
    let inherited = vsvad::systemd::inherited_listener();
    // A filter with a bad directive is refused, naming where it came from: `EnvFilter::new`
    // would drop the directive with a note and start with less logging than asked for.
    let (source, filter) = match (&args.log, std::env::var("RUST_LOG")) {
        (Some(f), _) => ("--log", f.clone()),
        (None, Ok(f)) => ("RUST_LOG", f),
        (None, Err(_)) => ("", "info".to_owned()),
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            // Logging is not set up yet: standard error directly (a closed one is ignored).
            let _ = writeln!(std::io::stderr(), "vsvad: {source} {filter:?}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Lines are queued for a writer thread, never written by the thread that logs: a
        // standard error nobody reads (a full pipe) or a closed one cannot stall or kill a
        // worker or the signal handler. A line that cannot be queued or written is dropped
        // and counted.
        .with_writer(LogSink::new)
        // On a failed write the subscriber would report it with `eprintln!`, which panics
        // when standard error is a closed pipe.
        .log_internal_errors(false)
        // Colour only for a person at a terminal, never into a log file or journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = inherited
        .map_err(Into::into)
        .and_then(|listener| run(args, listener));
    if let Err(e) = &result {
        // Queued like a log line (the queue never refuses a write); the exit code reports
        // the failure even when standard error is gone.
        let _ = writeln!(LogSink::new(), "vsvad: {}", clip_lines(&e.to_string()));
    }
    // The last lines (e.g. "vsvad stopped"), unless standard error is not being read.
    LogSink::flush_for(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// The longest line of a fatal error printed whole.
const MAX_ERROR_LINE: usize = 1024;

/// `message` with each line longer than [`MAX_ERROR_LINE`] bytes cut (at a character
/// boundary) and marked. A parse error shows the offending line of the file, which may be
/// megabytes long: whole, it would not fit the log's queue and the error would be dropped,
/// leaving the user no reason at all.
fn clip_lines(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(16 * MAX_ERROR_LINE));
    for (i, line) in message.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.len() <= MAX_ERROR_LINE {
            out.push_str(line);
            continue;
        }
        let mut cut = MAX_ERROR_LINE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&line[..cut]);
        out.push_str("… (");
        out.push_str(&(line.len() - cut).to_string());
        out.push_str(" more bytes)");
    }
    out
}

fn run(
    args: Args,
    inherited: Option<std::os::unix::net::UnixListener>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let durability = args
        .durability
        .as_deref()
        .map(Durability::parse)
        .transpose()?;
    // `--socket` wins, then `VSVA_SOCKET`, then the file's `socket`, then the default.
    let env_socket = std::env::var_os("VSVA_SOCKET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    config.apply(&Overrides {
        socket: args.socket,
        env_socket,
        state_dir: args.state_dir,
        metrics_addr: args.metrics_addr,
        durability,
        grace_period_secs: args.grace_period_secs,
        pasid_quota: args.pasid_quota,
        admin_group: args.admin_group,
    });
    let euid = rustix::process::geteuid().as_raw();
    let settings = config.validate(euid, &|k| std::env::var_os(k))?;
    // Refused under --check-config too: it refuses everything a start would.
    let ephemeral = args
        .ephemeral
        .as_deref()
        .map(|dir| vsvad::ephemeral::Ephemeral::check(dir, &settings.socket, &settings.state_dir))
        .transpose()?;
    if args.check_config {
        // A closed stdout (e.g. `| head`) is not an error worth more than the exit code.
        let _ = write!(
            std::io::stdout(),
            "{}",
            vsvad::config_toml::effective_toml(&config, &settings)?
        );
        return Ok(());
    }
    let listen = match inherited {
        Some(l) => vsvad::server::Listen::Inherited(l),
        None => vsvad::server::Listen::Bind,
    };
    let served = vsvad::server::run(settings, listen, |handle| {
        if let Some(e) = &ephemeral {
            if let Err(err) = e.watch(handle) {
                // Not watched, it could outlive its parent: it does not run at all.
                tracing::error!(error = %err, "cannot watch the parent of an ephemeral daemon; stopping");
                handle.stop();
            }
        }
    });
    // The parent has gone and cleans up nothing: the directory is the daemon's to remove,
    // also when it stopped with an error.
    if let Some(e) = ephemeral.filter(|e| e.orphaned()) {
        if let Err(err) = e.remove() {
            tracing::warn!(error = %err, "cannot remove the ephemeral daemon's directory");
        }
    }
    served?;
    Ok(())
}
