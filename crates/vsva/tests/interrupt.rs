//! Ctrl-C and `kill` on every long-running command: each cleans up (restores the terminal,
//! stops its private daemon) and then ends by the signal itself, so the shell reports 130
//! for SIGINT and 143 for SIGTERM and a script that ran it stops too — the same for `top`,
//! `faults --follow`, a `pasid alloc --hold` session and the demo (tested in hard_cases.rs).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use support::Daemon;

#[test]
fn every_long_running_command_ends_by_the_signal_that_interrupted_it() {
    let d = Daemon::start("interrupt");
    let commands: &[&[&str]] = &[
        &["top", "-d", "0.1"],
        &["top", "-d", "3600", "--json"],
        &["faults", "--follow", "--interval-ms", "10"],
        &["pasid", "alloc", "-n", "1", "--hold"],
    ];
    for args in commands {
        for (signal, number) in [(Signal::INT, 2), (Signal::TERM, 15)] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_vsva"));
            command
                .args(*args)
                .arg("--socket")
                .arg(&d.socket)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // The test may itself run with SIGINT ignored (a shell starts background jobs
            // that way, and a child inherits it), and a command that keeps the default action
            // would then rightly go on: give the command the dispositions of a foreground
            // job.
            // SAFETY: between fork and exec only `signal`, which is async-signal-safe, runs;
            // it touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::signal(libc::SIGINT, libc::SIG_DFL);
                    libc::signal(libc::SIGTERM, libc::SIG_DFL);
                    Ok(())
                });
            }
            // The daemon's open connections, the status request's own included.
            let connections = || d.json(&["status"])["connections"].as_u64().unwrap();
            if args[0] == "faults" {
                // The previous commands' connections closed: only the status request's.
                support::wait_until("earlier connections to close", || connections() == 1);
            }
            let mut child = command.spawn().unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            // Running: a first line printed (`faults --follow` prints none without faults:
            // it is running once it holds its connection to the daemon, which it keeps
            // between its polls).
            if args[0] == "faults" {
                support::wait_until("`vsva faults --follow` to connect", || connections() >= 2);
            } else {
                let mut first = String::new();
                out.read_line(&mut first).unwrap();
                assert!(!first.is_empty(), "{args:?} printed nothing");
            }
            kill_process(Pid::from_child(&child), signal).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{args:?} went on after {signal:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
            assert_eq!(
                status.signal(),
                Some(number),
                "{args:?} after {signal:?}: {status:?}, stderr: {err}"
            );
            assert!(err.is_empty(), "{args:?} after {signal:?}: {err}");
        }
    }
}
