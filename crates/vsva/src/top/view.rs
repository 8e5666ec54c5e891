//! The full-screen picture of one reading: a header, the PASID space gauge, the rates, the
//! processes and the recent faults. Drawing only: the loop that feeds it is in `mod.rs`.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Gauge, Paragraph, Row, Table};
use ratatui::Frame;

use super::sample::{process_rows, Rates, Sample};
use super::{fault_line, rates_text, Shown};
use crate::common::{clip, printable};

/// Draws `shown` over the whole frame.
pub(super) fn draw(frame: &mut Frame<'_>, shown: &Shown<'_>) {
    let [head, gauge, rates, procs, faults, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Min(4),
        Constraint::Length(super::sample::RECENT_FAULTS as u16 + 2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let Some(sample) = shown.sample else {
        frame.render_widget(
            Paragraph::new(format!("vsva top — {}", shown.socket)).style(bold),
            head,
        );
        let msg = shown.error.unwrap_or("waiting for the daemon");
        frame.render_widget(Paragraph::new(format!("no reading: {msg}")), gauge);
        frame.render_widget(Paragraph::new("q: quit"), foot);
        return;
    };
    let s = &sample.status;
    frame.render_widget(
        Paragraph::new(format!(
            "vsva top — {} on {}   up {}   every {:.1} s",
            s.server,
            shown.socket,
            super::uptime(s.uptime_ms),
            shown.interval.as_secs_f64()
        ))
        .style(bold),
        head,
    );
    let used = s.allocated + s.freeing;
    let ratio = if s.capacity == 0 {
        0.0
    } else {
        (used as f64 / f64::from(s.capacity)).clamp(0.0, 1.0)
    };
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(format!(
                "PASIDs {} / {} owned, {} freeing, {} held",
                s.allocated, s.capacity, s.freeing, s.held
            ))
            .use_unicode(true),
        gauge,
    );
    frame.render_widget(Paragraph::new(rate_lines(sample, shown.rates)), rates);
    frame.render_widget(processes(sample), procs);
    frame.render_widget(recent_faults(sample), faults);
    let foot_text = match shown.error {
        Some(e) => format!("q: quit   last reading failed: {e}"),
        None => "q: quit".to_owned(),
    };
    frame.render_widget(Paragraph::new(foot_text), foot);
}

fn rate_lines(sample: &Sample, rates: Option<Rates>) -> Vec<Line<'static>> {
    let s = &sample.status;
    let store = if s.durable { "durable" } else { "off" };
    vec![
        Line::from(format!(
            "processes {}   connections {}   default quota {}   store {}   page requests pending {}",
            s.processes, s.connections, s.default_quota, store, s.page_requests_pending
        )),
        Line::from(match rates {
            Some(r) => rates_text(&r, "   "),
            None => "rates: from the next reading on".to_owned(),
        }),
    ]
}

fn processes(sample: &Sample) -> Table<'static> {
    let rows = process_rows(&sample.sets).into_iter().map(|p| {
        let use_pct = if p.quota == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}%", p.owned as f64 * 100.0 / f64::from(p.quota))
        };
        Row::new(vec![
            p.pid.to_string(),
            clip(&printable(&p.command), 24),
            p.owned.to_string(),
            p.quota.to_string(),
            use_pct,
            p.connections.to_string(),
            if p.held { "held" } else { "live" }.to_owned(),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(24),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(5),
        ],
    )
    .header(
        Row::new(vec![
            "PID", "COMMAND", "PASIDS", "QUOTA", "USE", "CONNS", "STATE",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(" processes "))
}

fn recent_faults(sample: &Sample) -> Paragraph<'static> {
    let lines: Vec<Line<'static>> = if sample.faults.is_empty() {
        vec![Line::from("none")]
    } else {
        sample
            .faults
            .iter()
            .rev()
            .map(|f| Line::from(fault_line(f)))
            .collect()
    };
    Paragraph::new(lines).block(
        Block::bordered().title(format!(" recent faults ({} in all) ", sample.status.faults)),
    )
}
