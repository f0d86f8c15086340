//! `shardline top`: a live view of a running router, read from its `/metrics` alone.
//!
//! Why only `/metrics`: it is what every router serves on both listeners, needs no token,
//! and is what the dashboards and alerts read, so the view and the dashboards cannot
//! disagree. Everything shown is computed in `model` (pure, unit-tested) from two
//! scrapes; `fetch` is the one blocking request per interval; this file only schedules
//! scrapes and draws. `--once` prints the same numbers as plain text for scripts.

pub mod fetch;
pub mod model;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::Args;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use fetch::Target;
use model::{Row, Snapshot};

/// Milliseconds between scrapes, at most: a minute-long rate is a dashboard's job.
pub const TOP_INTERVAL_MS_MAX: u64 = 60_000;
/// Milliseconds between scrapes, at least: each scrape renders every series of every
/// shard on shard 0, so the view must not become the router's load.
const TOP_INTERVAL_MS_MIN: u64 = 50;

#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// The router to watch: its operations listener (`server.ops_listen`) or its data
    /// listener (`server.listen`), as http://HOST:PORT; `/metrics` is scraped.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub target: String,
    /// Milliseconds between scrapes (50 to 60000); rates and percentiles cover the last
    /// interval.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(TOP_INTERVAL_MS_MIN..=TOP_INTERVAL_MS_MAX))]
    pub interval: u64,
    /// Print one plain-text frame (two scrapes an interval apart) and exit: for scripts.
    #[arg(long)]
    pub once: bool,
}

/// Runs the view until `q`, Esc or Ctrl-C (or one frame with `--once`). A target that
/// cannot be scraped at start is an error; later failures are shown and retried.
pub fn run(args: &TopArgs) -> Result<(), String> {
    let target = Target::parse(&args.target)?;
    let interval = Duration::from_millis(args.interval);
    if args.once {
        let first = scrape(&target)?;
        std::thread::sleep(interval);
        let second = scrape(&target)?;
        let rows = between(&first, &second);
        let elapsed = second.1.duration_since(first.1);
        print!(
            "{}",
            model::plain_frame(&title(&target, &second, elapsed), &rows)
        );
        return Ok(());
    }
    if !std::io::stdout().is_terminal() {
        return Err(
            "standard output is not a terminal: use --once for one plain-text frame".into(),
        );
    }
    // Scraped before the screen is taken, so a wrong target is a plain message.
    let first = scrape(&target)?;
    let mut terminal =
        ratatui::try_init().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let result = watch(&mut terminal, &target, interval, first);
    let restored = ratatui::try_restore();
    result?;
    restored.map_err(|e| format!("cannot restore the terminal: {e}"))
}

type Scrape = (Snapshot, Instant);

fn scrape(target: &Target) -> Result<Scrape, String> {
    let text = fetch::fetch(target)?;
    let at = Instant::now();
    let samples = model::parse(&text).map_err(|e| format!("{}: {e}", target.url))?;
    let snapshot = Snapshot::from_samples(&samples).map_err(|e| format!("{}: {e}", target.url))?;
    Ok((snapshot, at))
}

fn between(before: &Scrape, now: &Scrape) -> Vec<Row> {
    let seconds = now.1.duration_since(before.1).as_secs_f64();
    model::rows(&before.0, &now.0, seconds)
}

/// The heading: the target, the shard count and the interval the rates cover.
fn title(target: &Target, now: &Scrape, interval: Duration) -> String {
    let shards = now.0.shards.keys().filter(|k| *k != "all").count();
    format!(
        "shardline top  {}  {shards} shards  rates and percentiles over {} ms",
        target.url,
        interval.as_millis()
    )
}

fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    target: &Target,
    interval: Duration,
    first: Scrape,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("terminal: {e}");
    let mut before = first;
    let mut rows: Vec<Row> = Vec::new();
    let mut status = format!("waiting {} ms for the second scrape", interval.as_millis());
    let mut next = Instant::now() + interval;
    loop {
        let heading = title(target, &before, interval);
        terminal
            .draw(|f| draw(f, &heading, &rows, &status))
            .map_err(io)?;
        let now = Instant::now();
        if now >= next {
            match scrape(target) {
                Ok(scraped) => {
                    rows = between(&before, &scraped);
                    before = scraped;
                    status.clear();
                }
                Err(e) => status = e,
            }
            next = Instant::now() + interval;
            continue;
        }
        if !event::poll(next - now).map_err(io)? {
            continue;
        }
        if let Event::Key(key) = event::read().map_err(io)? {
            let ctrl_c =
                key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
            if key.kind == KeyEventKind::Press && quit {
                return Ok(());
            }
        }
    }
}

fn draw(frame: &mut Frame, heading: &str, rows: &[Row], status: &str) {
    let details = model::details(rows);
    let [top, table, below, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(rows.len() as u16 + 3),
        Constraint::Length(details.len() as u16),
        Constraint::Min(1),
    ])
    .areas(frame.area());
    let bold = Style::default().add_modifier(Modifier::BOLD);
    frame.render_widget(Paragraph::new(Line::styled(heading, bold)), top);
    let cells: Vec<[String; 10]> = rows.iter().map(model::cells).collect();
    let mut widths = model::COLUMNS.map(|c| c.len() as u16);
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count() as u16);
        }
    }
    let lines = rows.iter().zip(cells).map(|(row, cells)| {
        let style = match () {
            _ if row.alarm() => Style::default().fg(Color::Red),
            _ if row.shard == "all" => bold,
            _ => Style::default(),
        };
        // Numbers right-aligned, so that magnitudes line up; the shard and states left.
        let cells = cells.into_iter().enumerate().map(|(i, c)| {
            let line = Line::from(c);
            Cell::from(if (1..8).contains(&i) {
                line.right_aligned()
            } else {
                line
            })
        });
        TableRow::new(cells).style(style)
    });
    let table_widget = Table::new(lines, widths.map(Constraint::Length))
        .header(
            TableRow::new(model::COLUMNS.into_iter().enumerate().map(|(i, c)| {
                Cell::from(if (1..8).contains(&i) {
                    Line::from(c).right_aligned()
                } else {
                    Line::from(c)
                })
            }))
            .style(bold.fg(Color::Cyan)),
        )
        .column_spacing(2)
        .block(Block::default().borders(Borders::TOP | Borders::BOTTOM));
    frame.render_widget(table_widget, table);
    frame.render_widget(
        Paragraph::new(details.into_iter().map(Line::from).collect::<Vec<_>>()),
        below,
    );
    let footer_text = if status.is_empty() {
        "q quits".to_owned()
    } else {
        format!("q quits  |  {status}")
    };
    frame.render_widget(Paragraph::new(footer_text), footer);
}
