//! Holding PASIDs: allocating several at once (for `vsva pasid alloc` and its session), and
//! the `--hold` session itself: commands read from stdin (`alloc [N]`, `free LIST|all`,
//! `list`, `quit`), one answer line each, and resuming with the resume token when the daemon
//! restarts under the session.
//!
//! A command whose connection turns out to be gone is answered after a resume: the session
//! connects again presenting its token, gets its PASIDs back (the daemon holds them for a
//! grace period), opens a new container on the same group and runs the command once more.
//! A notice on stderr says what came back; stdout keeps one answer per command. When the
//! same daemon instance answers again, the connection was closed on purpose (an admin's
//! `quota --release`): the session ends instead.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vsva_client::{Client, ClientError};

use crate::common::{outln, warn, CliError, Common};
use crate::number::{parse_count, parse_pasid_list, ranges, PasidList};

/// One session command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Alloc(u32),
    Free(PasidList),
    List,
    Quit,
}

const USAGE: &str = "alloc [N], free LIST|all (LIST like 1-3,7), list, quit";

/// Reads one line's command; `Ok(None)` for an empty line.
fn parse_command(line: &str) -> Result<Option<Command>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(Some(match words.as_slice() {
        [] => return Ok(None),
        ["quit"] | ["exit"] => Command::Quit,
        ["alloc"] => Command::Alloc(1),
        ["alloc", n] => Command::Alloc(parse_count(n).map_err(|e| format!("not a count: {e}"))?),
        ["free", list @ ..] if !list.is_empty() => Command::Free(parse_pasid_list(list)?),
        ["list"] => Command::List,
        _ => return Err(format!("unknown command {line:?}: {USAGE}")),
    }))
}

/// The range new PASIDs are taken from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Lowest acceptable PASID.
    pub(crate) min: u32,
    /// Highest acceptable PASID.
    pub(crate) max: u32,
}

struct Session<'a> {
    client: Client,
    container: u32,
    group: u32,
    limits: Limits,
    common: &'a Common,
}

/// Reads commands from stdin while holding the connection (and so the PASIDs).
///
/// # Errors
///
/// Stdin or stdout failed, or the daemon closed the session's connection without
/// restarting; the PASIDs are then given back as the process exits.
pub(crate) fn hold_session(
    client: Client,
    container: u32,
    group: u32,
    limits: Limits,
    common: &Common,
) -> Result<(), CliError> {
    let mut s = Session {
        client,
        container,
        group,
        limits,
        common,
    };
    // Split on bytes, not `lines()`: a line that is not UTF-8 is answered as a bad command,
    // not an error that ends the session and gives its PASIDs back.
    for line in std::io::stdin().lock().split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let parsed = match std::str::from_utf8(&line) {
            Ok(text) => parse_command(text),
            Err(_) => Err(format!(
                "unknown command {:?} (not UTF-8): {USAGE}",
                String::from_utf8_lossy(&line)
            )),
        };
        let (answer, end) = match parsed {
            Ok(None) => continue,
            Ok(Some(Command::Quit)) => break,
            Ok(Some(cmd)) => s.run(&cmd),
            Err(e) => (json!({ "error": e }), None),
        };
        if common.json {
            outln!("{answer}");
        } else {
            outln!("{}", plain(&answer));
        }
        std::io::stdout().flush()?;
        if let Some(end) = end {
            return Err(end);
        }
    }
    Ok(())
}

impl Session<'_> {
    /// Runs `cmd`, resuming once if the connection is gone: the answer, and the error that
    /// ends the session if it must end.
    fn run(&mut self, cmd: &Command) -> (Value, Option<CliError>) {
        match self.exec(cmd) {
            Ok(v) => (v, None),
            Err(e) if e.is_disconnect() => match self.resume() {
                Ok(()) => (
                    self.exec(cmd)
                        .unwrap_or_else(|e| json!({ "error": e.to_string() })),
                    None,
                ),
                Err(why) => {
                    let msg = format!("{e}; {why}");
                    (json!({ "error": msg }), Some(CliError::Message(msg)))
                }
            },
            Err(e) => (json!({ "error": e.to_string() }), None),
        }
    }

    fn exec(&mut self, cmd: &Command) -> Result<Value, ClientError> {
        let (c, l) = (self.container, self.limits);
        match cmd {
            Command::Alloc(n) => match alloc_many(&mut self.client, c, *n, l.min, l.max) {
                (v, Some(e)) if v.is_empty() => Err(e),
                (v, e) => Ok(json!({ "allocated": v, "error": e.map(|e| e.to_string()) })),
            },
            Command::Free(list) => {
                let owned = self.own()?;
                match list {
                    PasidList::All => self.client.pasid_free(c, 0, u32::MAX)?,
                    PasidList::Ranges(r) => {
                        for &(lo, hi) in r {
                            self.client.pasid_free(c, lo, hi)?;
                        }
                    }
                }
                let freed: Vec<u32> = owned.into_iter().filter(|&p| list.contains(p)).collect();
                Ok(json!({ "freed": freed }))
            }
            Command::List => Ok(json!({ "pasids": self.own()? })),
            Command::Quit => Ok(Value::Null),
        }
    }

    /// The PASIDs this process owns, ascending.
    fn own(&mut self) -> Result<Vec<u32>, ClientError> {
        let me = self.client.hello().credentials.pid;
        Ok(self
            .client
            .sets()?
            .into_iter()
            .find(|e| e.credentials.pid == me)
            .map(|e| e.pasids)
            .unwrap_or_default())
    }

    /// Connects again with the resume token (retrying while the daemon is starting, up to
    /// the command's `--timeout`) and opens a new container on the same group.
    ///
    /// # Errors
    ///
    /// Why the session cannot go on: the daemon did not come back, or the same daemon
    /// answers (it closed the connection on purpose).
    fn resume(&mut self) -> Result<(), String> {
        let before = self.client.hello().instance;
        let wait = Duration::from_secs(self.common.timeout);
        let deadline = Instant::now() + wait;
        loop {
            match self.client.reconnect() {
                Ok(_) => break,
                Err(e) if self.common.timeout == 0 || Instant::now() < deadline => {
                    if !matches!(e, ClientError::Io { .. }) {
                        return Err(format!("cannot reconnect: {e}"));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("the daemon did not come back: {e}")),
            }
        }
        let hello = self.client.hello();
        if hello.instance == before {
            return Err(
                "the daemon closed this session's connection (released by an admin?)".into(),
            );
        }
        let restored = hello.restored.clone();
        self.container = self
            .client
            .nesting_container(self.group)
            .map_err(|e| format!("reconnected, but cannot open group {}: {e}", self.group))?;
        if self.client.resumed() {
            warn(&format_args!(
                "the daemon restarted; resumed with this session's token: PASIDs {} are back",
                ranges(&restored)
            ));
        } else {
            warn(&"the daemon restarted and did not keep this session's PASIDs (no durable state, or the grace period ended)");
        }
        Ok(())
    }
}

/// Allocates up to `n` PASIDs in `[min, max]`, stopping at the first refusal: what was
/// allocated, and the refusal if there was one.
pub(crate) fn alloc_many(
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

/// A session answer as one line of text: `allocated: 1-3; error: ...`.
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
                    .filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect();
                format!("{k}: {}", ranges(&nums))
            }
            Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands_parse_with_the_shared_number_syntax() {
        let ok: &[(&str, Option<Command>)] = &[
            ("", None),
            ("alloc", Some(Command::Alloc(1))),
            ("alloc 0x10", Some(Command::Alloc(16))),
            ("free all", Some(Command::Free(PasidList::All))),
            (
                "free 1-3,7",
                Some(Command::Free(PasidList::Ranges(vec![(1, 3), (7, 7)]))),
            ),
            (
                "free 2 4",
                Some(Command::Free(PasidList::Ranges(vec![(2, 2), (4, 4)]))),
            ),
            ("list", Some(Command::List)),
            ("quit", Some(Command::Quit)),
        ];
        for (line, want) in ok {
            assert_eq!(parse_command(line).as_ref(), Ok(want), "{line:?}");
        }
        for (line, why) in [
            ("alloc -1", "negative"),
            ("alloc 0", "at least 1"),
            ("free", "unknown command"),
            ("free 3-1", "below its start"),
            ("frob", "unknown command"),
        ] {
            let e = parse_command(line).unwrap_err();
            assert!(e.contains(why), "{line:?}: {e}");
        }
    }
}
