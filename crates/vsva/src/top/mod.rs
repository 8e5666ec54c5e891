//! `vsva top`: a live view of the daemon that refreshes — PASID space usage, per-process
//! owned PASIDs against quota, request, translation, fault, page-request and store-commit
//! rates, the page requests still pending, and the most recent faults.
//!
//! On a terminal it is a full-screen view (`ratatui` over `crossterm`, the Rust field's
//! usual pair) that quits on `q`, `Esc` or Ctrl-C and restores the terminal on every way
//! out. When stdout is not a terminal, or with `--json`, it prints one line per reading
//! instead (text, or one JSON document per line), so `vsva top | tee log` and scripts work.
//!
//! `q` and `Esc`, `--iterations` readings, and a reader that closes the pipe end it with
//! status 0. Ctrl-C (the key in the full-screen view, or SIGINT), SIGTERM and SIGHUP
//! interrupt it: it restores the terminal and then ends by that signal, as every
//! long-running `vsva` command does (see `crate::interrupt`), so the shell reports 130, 143
//! or 129.
//!
//! Each reading is three requests (STATUS, SETS, FAULTS) on one connection. Rates are the
//! differences between two readings of the same daemon instance divided by the time between
//! them; after a daemon restart they start again. A lost daemon is shown (or, one line per
//! reading, said once on stderr, and once more when it answers again) and asked again at the
//! next reading, as every long-running watcher does (`crate::watcher`).

mod sample;
mod view;

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use vsva_client::Client;

use crate::common::{outln, print_json, wait_unless_stdout_closed, CliError, Common};
use crate::interrupt::end_by;
pub(crate) use crate::report::{duration as uptime, fault_line};
use crate::watcher::Outage;
use sample::{process_rows, Rates, Sample};

/// The shortest interval between readings.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `vsva top`.
#[derive(Debug, clap::Args)]
pub(crate) struct TopArgs {
    /// Seconds between readings (decimals allowed, at least 0.1).
    #[arg(long, short = 'd', value_name = "SECONDS", default_value = "1", value_parser = parse_interval,
          allow_negative_numbers = true)]
    pub(crate) interval: Duration,
    /// Stop after this many readings (default: until q, Esc, Ctrl-C or SIGTERM).
    #[arg(long, short = 'n', value_name = "COUNT", value_parser = crate::number::parse_count,
          allow_negative_numbers = true)]
    pub(crate) iterations: Option<u32>,
    #[command(flatten)]
    pub(crate) common: Common,
}

/// What the view shows at one moment.
pub(crate) struct Shown<'a> {
    socket: String,
    interval: Duration,
    sample: Option<&'a Sample>,
    rates: Option<Rates>,
    error: Option<&'a str>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 1 or 0.5)"))?;
    if !secs.is_finite() || secs < MIN_INTERVAL.as_secs_f64() || secs > 86_400.0 {
        return Err(format!(
            "{s} s is out of range: the interval is 0.1 to 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A rate as a short number: `0`, `12.5`, `1234`, `12.3k`, `4.56M`.
pub(crate) fn rate(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v if v >= 100.0 || v == 0.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

/// The rates of one interval as `name value` pairs joined by `sep`, the same words in the
/// full-screen view and in the lines a pipe gets.
fn rates_text(r: &Rates, sep: &str) -> String {
    let hit = r
        .iotlb_hit
        .map_or_else(|| "-".to_owned(), |h| format!("{:.1}%", h * 100.0));
    [
        format!("requests/s {}", rate(r.requests)),
        format!("translations/s {}", rate(r.translations)),
        format!("iotlb-hit {hit}"),
        format!("faults/s {}", rate(r.faults)),
        format!("page-requests/s {}", rate(r.page_requests)),
        format!("commits/s {}", rate(r.commits)),
    ]
    .join(sep)
}

/// The connection and the last two readings.
struct Watch {
    common: Common,
    client: Option<Client>,
    prev: Option<Sample>,
    cur: Option<Sample>,
    error: Option<String>,
}

impl Watch {
    fn new(common: Common) -> Watch {
        Watch {
            common,
            client: None,
            prev: None,
            cur: None,
            error: None,
        }
    }

    /// Takes a reading, connecting first if needed. A failure drops the connection (the next
    /// reading connects again) and keeps the last good reading on show.
    fn read(&mut self) -> Result<(), CliError> {
        let result = (|| {
            let client = match &mut self.client {
                Some(c) => c,
                None => self.client.insert(self.common.connect("vsva top")?),
            };
            Sample::take(client)
        })();
        match result {
            Ok(s) => {
                self.prev = self.cur.replace(s);
                self.error = None;
                Ok(())
            }
            Err(e) => {
                self.client = None;
                self.error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn rates(&self) -> Option<Rates> {
        Rates::between(self.prev.as_ref(), self.cur.as_ref()?)
    }

    fn shown(&self, interval: Duration) -> Shown<'_> {
        Shown {
            socket: self.common.socket().display().to_string(),
            interval,
            sample: self.cur.as_ref(),
            rates: self.rates(),
            error: self.error.as_deref(),
        }
    }
}

/// Runs `vsva top`.
pub(crate) fn run(a: &TopArgs) -> Result<(), CliError> {
    let stop = Arc::new(AtomicI32::new(0));
    watch_signals(Arc::clone(&stop))?;
    let mut watch = Watch::new(a.common.clone());
    // The first reading must work: a mistyped socket is an error, not an empty screen.
    watch.read()?;
    let result = if io::stdout().is_terminal() && !a.common.json {
        full_screen(a, &mut watch, &stop)
    } else {
        lines(a, &mut watch, &stop)
    };
    // Interrupted: the terminal is restored by now; end as the signal would have.
    match stop.load(Ordering::Relaxed) {
        0 => result,
        signal => end_by(signal),
    }
}

/// How long a SIGINT or SIGTERM waits for the view to close itself before the process ends
/// anyway.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);

/// SIGINT and SIGTERM ask the loops to stop (they look every 100 ms and restore the
/// terminal) by storing the signal's number in `stop`; SIGHUP — the terminal is gone, there
/// is nothing to restore or show — ends the process at once. Should the terminal library be
/// stuck (it spins reading a closed terminal), the process still ends [`SIGNAL_GRACE`] after
/// the signal. Either way it ends by the signal ([`end_by`]).
fn watch_signals(stop: Arc<AtomicI32>) -> Result<(), CliError> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| CliError::msg(format!("cannot handle SIGINT/SIGTERM/SIGHUP: {e}")))?;
    std::thread::Builder::new()
        .name("vsva-top-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                if sig != SIGHUP {
                    stop.store(sig, Ordering::Relaxed);
                    std::thread::sleep(SIGNAL_GRACE);
                }
                end_by(sig);
            }
        })
        .map_err(|e| CliError::msg(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// The full-screen view, until `q`, `Esc`, Ctrl-C, a signal, or `--iterations` readings.
fn full_screen(a: &TopArgs, watch: &mut Watch, stop: &AtomicI32) -> Result<(), CliError> {
    let mut terminal = ratatui::try_init()
        .map_err(|e| CliError::msg(format!("cannot set up the terminal: {e}")))?;
    let result = (|| -> Result<(), CliError> {
        let mut readings = 1u64;
        let mut next = Instant::now() + a.interval;
        loop {
            terminal
                .draw(|f| view::draw(f, &watch.shown(a.interval)))
                .map_err(|e| CliError::msg(format!("cannot draw: {e}")))?;
            if a.iterations.is_some_and(|n| readings >= u64::from(n)) {
                return Ok(());
            }
            // Wait for a key until the next reading is due, in short steps so a signal is
            // seen promptly.
            loop {
                if stop.load(Ordering::Relaxed) != 0 {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                let wait = (next - now).min(Duration::from_millis(100));
                if event::poll(wait).map_err(|e| CliError::msg(format!("terminal: {e}")))? {
                    match event::read().map_err(|e| CliError::msg(format!("terminal: {e}")))? {
                        Event::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => return Ok(()),
                            // The terminal is in raw mode, so Ctrl-C arrives as a key, not as
                            // SIGINT; it interrupts all the same.
                            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                                stop.store(SIGINT, Ordering::Relaxed);
                                return Ok(());
                            }
                            _ => {}
                        },
                        Event::Resize(..) => break,
                        _ => {}
                    }
                }
            }
            if Instant::now() >= next {
                // A failed reading is shown in the view; the next one connects again.
                if watch.read().is_ok() {
                    readings += 1;
                }
                next = Instant::now() + a.interval;
            }
        }
    })();
    ratatui::restore();
    result
}

/// One line (or JSON document) per reading.
fn lines(a: &TopArgs, watch: &mut Watch, stop: &AtomicI32) -> Result<(), CliError> {
    let mut readings = 0u64;
    let instance = watch.cur.as_ref().map_or(0, |s| s.status.instance);
    let mut outage = Outage::new("top", a.common.socket(), a.interval, instance);
    loop {
        if let Some(s) = &watch.cur {
            print_reading(a, s, watch.rates())?;
            readings += 1;
        }
        if a.iterations.is_some_and(|n| readings >= u64::from(n)) {
            return Ok(());
        }
        let next = Instant::now() + a.interval;
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) != 0 {
                return Ok(());
            }
            wait_unless_stdout_closed(
                next.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            )?;
        }
        match watch.read() {
            Ok(()) => {
                if let Some(s) = &watch.cur {
                    outage.answered(s.status.instance);
                }
            }
            Err(e) => {
                outage.lost(&e);
                watch.cur = None;
                watch.prev = None;
            }
        }
    }
}

fn print_reading(a: &TopArgs, s: &Sample, rates: Option<Rates>) -> Result<(), CliError> {
    let st = &s.status;
    if a.common.json {
        return print_json(&json!({
            "uptime_ms": st.uptime_ms,
            "instance": st.instance,
            "capacity": st.capacity,
            "allocated": st.allocated,
            "freeing": st.freeing,
            "held": st.held,
            "processes": st.processes,
            "connections": st.connections,
            "requests": st.requests,
            "translations": st.translations,
            "faults": st.faults,
            "store_commits": st.store_commits,
            "page_requests": st.page_requests,
            "page_requests_pending": st.page_requests_pending,
            "rates": rates.map(|r| json!({
                "requests_per_s": r.requests,
                "translations_per_s": r.translations,
                "iotlb_hit": r.iotlb_hit,
                "faults_per_s": r.faults,
                "page_requests_per_s": r.page_requests,
                "commits_per_s": r.commits,
            })),
            "sets": process_rows(&s.sets).iter().map(|p| json!({
                "pid": p.pid, "command": p.command, "owned": p.owned, "quota": p.quota,
                "connections": p.connections, "state": if p.held { "held" } else { "live" },
            })).collect::<Vec<_>>(),
        }));
    }
    let rates = match rates {
        Some(r) => format!(
            "{}  pending-page-requests {}",
            rates_text(&r, "  "),
            st.page_requests_pending
        ),
        None => "rates from the next reading".to_owned(),
    };
    outln!(
        "up {}  pasids {}/{} freeing {} held {}  processes {} connections {}  {}",
        uptime(st.uptime_ms),
        st.allocated,
        st.capacity,
        st.freeing,
        st.held,
        st.processes,
        st.connections,
        rates
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_checked() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        for bad in ["0", "0.05", "-1", "nan", "inf", "1e9", "one", ""] {
            assert!(parse_interval(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rates_read_short() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(1234.0), "1234");
        assert_eq!(rate(12_345.0), "12.3k");
        assert_eq!(rate(4_560_000.0), "4.56M");
    }
}
