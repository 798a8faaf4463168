//! `switchyard-control top`: a live terminal view of the traffic, refreshed every interval.
//!
//! A sampler thread reads `GET /v1/stats` every interval and hands each answer (or the reason
//! there was none) to the terminal loop; the loop turns two successive samples into rates
//! ([`Rates::between`]: packets, bits and new flows per second per service and per backend,
//! drops per second per reason, over the samples' own timestamps), draws one of three views
//! (services, backends, drops) sorted by the column the operator picks, and reads keys in
//! between. Keys only, no mouse: it works over SSH on any terminal crossterm drives.
//!
//! The terminal is restored on every way out: `q`, Esc or Ctrl-C, SIGTERM and SIGHUP (a flag
//! the loop polls), a panic (ratatui's hook restores before the message) and a failed draw.
//! An unreachable daemon is said in the view and asked again every interval; counters that went
//! down (a restarted daemon) give no rate for that sample rather than a nonsense one.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

use super::client::ApiClient;
use super::stats::StatsView;

/// `switchyard-control top`.
#[derive(Debug, Clone)]
pub struct TopOptions {
    pub api: String,
    /// The daemon's token file (`--token-file`, else `<shm-dir>/switchyard-<instance>.token`).
    pub token_file: PathBuf,
    /// Time between samples (and so the window of each rate).
    pub interval: Duration,
}

/// Which table the view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Services,
    Backends,
    Drops,
    /// The heaviest source prefixes (sampled; rates over the workers' last windows).
    Talkers,
}

impl Pane {
    fn next(self) -> Self {
        match self {
            Self::Services => Self::Backends,
            Self::Backends => Self::Drops,
            Self::Drops => Self::Talkers,
            Self::Talkers => Self::Services,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::Backends => "backends",
            Self::Drops => "drops",
            Self::Talkers => "top talkers",
        }
    }
}

/// The column rows are sorted by. Names sort ascending, figures descending (busiest first);
/// `r` reverses either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Pps,
    Bps,
    NewFlows,
    Active,
    Weight,
    Total,
}

impl SortKey {
    fn label(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Pps => "pps",
            Self::Bps => "bps",
            Self::NewFlows => "new flows/s",
            Self::Active => "active flows",
            Self::Weight => "weight",
            Self::Total => "total",
        }
    }
}

/// The rates of one service or backend over the last sample interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub pps: f64,
    pub bps: f64,
    pub new_flows: f64,
}

/// Rates between two samples, keyed as the samples name things: services by name, backends
/// by stable id, drops by reason. A key missing from the older sample, or whose counts went
/// down (the daemon restarted and counts from zero), has no rate in this window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    /// Seconds between the samples.
    pub seconds: f64,
    pub services: BTreeMap<String, Rate>,
    pub backends: BTreeMap<u32, Rate>,
    pub drops: BTreeMap<String, f64>,
}

fn per_second(now: u64, before: u64, seconds: f64) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)] // a rate for display
    let grew = now.checked_sub(before)? as f64;
    Some(grew / seconds)
}

fn rate(now: (u64, u64, u64), before: (u64, u64, u64), seconds: f64) -> Option<Rate> {
    Some(Rate {
        pps: per_second(now.0, before.0, seconds)?,
        bps: per_second(now.1, before.1, seconds)? * 8.0,
        new_flows: per_second(now.2, before.2, seconds)?,
    })
}

impl Rates {
    /// The rates from `before` to `now`; none when the clock did not move forward.
    #[must_use]
    pub fn between(before: &StatsView, now: &StatsView) -> Self {
        let ms = now.time_ms.saturating_sub(before.time_ms);
        if ms == 0 {
            return Self::default();
        }
        #[allow(clippy::cast_precision_loss)] // milliseconds between two samples
        let seconds = ms as f64 / 1000.0;
        let mut rates = Self {
            seconds,
            ..Self::default()
        };
        // Indexed: a policy may have a thousand services and several thousand backends.
        let services: HashMap<&str, _> = before
            .services
            .iter()
            .map(|b| (b.name.as_str(), b))
            .collect();
        let backends: HashMap<u32, _> = before.backends.iter().map(|b| (b.id, b)).collect();
        for s in &now.services {
            let Some(b) = services.get(s.name.as_str()) else {
                continue;
            };
            if let Some(r) = rate(
                (s.packets, s.bytes, s.new_flows),
                (b.packets, b.bytes, b.new_flows),
                seconds,
            ) {
                rates.services.insert(s.name.clone(), r);
            }
        }
        for s in &now.backends {
            let Some(b) = backends.get(&s.id) else {
                continue;
            };
            if let Some(r) = rate(
                (s.packets, s.bytes, s.new_flows),
                (b.packets, b.bytes, b.new_flows),
                seconds,
            ) {
                rates.backends.insert(s.id, r);
            }
        }
        for (reason, &n) in &now.drops {
            let b = before.drops.get(reason).copied().unwrap_or(0);
            if let Some(r) = per_second(n, b, seconds) {
                rates.drops.insert(reason.clone(), r);
            }
        }
        rates
    }
}

/// What the terminal loop knows: the last two samples, the last error, and the operator's
/// choices.
#[derive(Debug, Clone)]
pub struct TopState {
    pub api: String,
    pub interval: Duration,
    pub pane: Pane,
    pub sort: SortKey,
    pub reverse: bool,
    pub current: Option<StatsView>,
    pub rates: Rates,
    /// Why the last sample failed (cleared by the next good one).
    pub error: Option<String>,
    pub samples: u64,
}

impl TopState {
    #[must_use]
    pub fn new(api: &str, interval: Duration) -> Self {
        Self {
            api: api.to_owned(),
            interval,
            pane: Pane::Services,
            sort: SortKey::Pps,
            reverse: false,
            current: None,
            rates: Rates::default(),
            error: None,
            samples: 0,
        }
    }

    /// Takes a sample (or the reason there is none).
    pub fn sample(&mut self, sample: Result<StatsView, String>) {
        match sample {
            Ok(now) => {
                self.rates = match &self.current {
                    Some(before) => Rates::between(before, &now),
                    None => Rates::default(),
                };
                self.current = Some(now);
                self.error = None;
                self.samples += 1;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Applies a key; `false` when it means quit.
    pub fn key(&mut self, key: KeyEvent) -> bool {
        if key.kind != KeyEventKind::Press {
            return true;
        }
        let sort = |s: &mut Self, k: SortKey| {
            if s.sort == k {
                s.reverse = !s.reverse;
            } else {
                s.sort = k;
                s.reverse = false;
            }
        };
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Tab | KeyCode::Char('v') => self.pane = self.pane.next(),
            KeyCode::Char('1') => self.pane = Pane::Services,
            KeyCode::Char('2') => self.pane = Pane::Backends,
            KeyCode::Char('3') => self.pane = Pane::Drops,
            KeyCode::Char('4') => self.pane = Pane::Talkers,
            KeyCode::Char('n') => sort(self, SortKey::Name),
            KeyCode::Char('p') => sort(self, SortKey::Pps),
            KeyCode::Char('b') => sort(self, SortKey::Bps),
            KeyCode::Char('f') => sort(self, SortKey::NewFlows),
            KeyCode::Char('a') => sort(self, SortKey::Active),
            KeyCode::Char('w') => sort(self, SortKey::Weight),
            KeyCode::Char('t') => sort(self, SortKey::Total),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            _ => {}
        }
        true
    }
}

/// `1.23k`, `45.6M`: three significant figures with an SI prefix.
#[must_use]
pub fn si(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        return "-".to_owned();
    }
    if v == 0.0 {
        // -0.0 too.
        return "0".to_owned();
    }
    const PREFIXES: [(f64, &str); 5] =
        [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, p) in PREFIXES {
        if v >= scale {
            let x = v / scale;
            return if x >= 100.0 {
                format!("{x:.0}{p}")
            } else if x >= 10.0 {
                format!("{x:.1}{p}")
            } else {
                format!("{x:.2}{p}")
            };
        }
    }
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Terminal-safe text: control characters (which could move the cursor or change colours)
/// shown as `?`.
fn safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One row of a table: its cells and the figures it sorts by.
struct SortRow {
    cells: Vec<String>,
    style: Style,
    name: String,
    figures: [f64; 6],
}

impl SortRow {
    fn figure(&self, key: SortKey) -> f64 {
        match key {
            SortKey::Name => 0.0,
            SortKey::Pps => self.figures[0],
            SortKey::Bps => self.figures[1],
            SortKey::NewFlows => self.figures[2],
            SortKey::Active => self.figures[3],
            SortKey::Weight => self.figures[4],
            SortKey::Total => self.figures[5],
        }
    }
}

fn sort_rows(rows: &mut [SortRow], key: SortKey, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = match key {
            SortKey::Name => a.name.cmp(&b.name),
            k => b
                .figure(k)
                .total_cmp(&a.figure(k))
                .then_with(|| a.name.cmp(&b.name)),
        };
        if reverse {
            order.reverse()
        } else {
            order
        }
    });
}

#[allow(clippy::cast_precision_loss)] // figures for sorting
fn f(n: u64) -> f64 {
    n as f64
}

/// The table of the current pane: header, column widths, rows in order.
fn table_rows(state: &TopState) -> (Vec<&'static str>, Vec<u16>, Vec<SortRow>) {
    let none = StatsView::default();
    let stats = state.current.as_ref().unwrap_or(&none);
    let r = &state.rates;
    let (header, widths, mut rows) = match state.pane {
        Pane::Services => {
            let rows: Vec<SortRow> = stats
                .services
                .iter()
                .map(|s| {
                    let rate = r.services.get(&s.name);
                    let v = rate.copied().unwrap_or_default();
                    let shown = |x: f64| if rate.is_some() { si(x) } else { "-".into() };
                    SortRow {
                        cells: vec![
                            safe(&s.name),
                            shown(v.pps),
                            shown(v.bps),
                            shown(v.new_flows),
                            s.active_flows.to_string(),
                            s.packets.to_string(),
                            s.bytes.to_string(),
                            s.new_flows.to_string(),
                        ],
                        style: Style::default(),
                        name: s.name.clone(),
                        figures: [
                            v.pps,
                            v.bps,
                            v.new_flows,
                            f(s.active_flows),
                            0.0,
                            f(s.packets),
                        ],
                    }
                })
                .collect();
            (
                vec![
                    "SERVICE",
                    "PPS",
                    "BPS",
                    "NEW FLOWS/S",
                    "ACTIVE",
                    "PACKETS",
                    "BYTES",
                    "NEW FLOWS",
                ],
                vec![24, 9, 9, 11, 10, 14, 16, 11],
                rows,
            )
        }
        Pane::Backends => {
            let rows: Vec<SortRow> = stats
                .backends
                .iter()
                .map(|b| {
                    let rate = r.backends.get(&b.id);
                    let v = rate.copied().unwrap_or_default();
                    let shown = |x: f64| if rate.is_some() { si(x) } else { "-".into() };
                    let name = format!("{}/{}", b.pool, b.backend);
                    let style = if b.state == "up" && b.healthy {
                        Style::default()
                    } else {
                        Style::default().fg(Color::Red)
                    };
                    SortRow {
                        cells: vec![
                            safe(&name),
                            safe(&b.address),
                            safe(&b.state),
                            if b.healthy { "yes" } else { "no" }.to_owned(),
                            format!("{}/{}", b.effective_weight, b.weight),
                            shown(v.pps),
                            shown(v.bps),
                            shown(v.new_flows),
                            b.active_flows.to_string(),
                            b.packets.to_string(),
                            b.load.map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
                        ],
                        style,
                        name,
                        figures: [
                            v.pps,
                            v.bps,
                            v.new_flows,
                            f(b.active_flows),
                            f(u64::from(b.effective_weight)),
                            f(b.packets),
                        ],
                    }
                })
                .collect();
            (
                vec![
                    "POOL/BACKEND",
                    "ADDRESS",
                    "STATE",
                    "HEALTHY",
                    "WEIGHT",
                    "PPS",
                    "BPS",
                    "NEW FLOWS/S",
                    "ACTIVE",
                    "PACKETS",
                    "LOAD",
                ],
                vec![28, 16, 8, 7, 9, 9, 9, 11, 10, 14, 5],
                rows,
            )
        }
        Pane::Drops => {
            let rows: Vec<SortRow> = stats
                .drops
                .iter()
                .map(|(reason, &n)| {
                    let rate = r.drops.get(reason);
                    SortRow {
                        cells: vec![
                            safe(reason),
                            rate.map_or_else(|| "-".to_owned(), |&x| si(x)),
                            n.to_string(),
                        ],
                        style: Style::default(),
                        name: reason.clone(),
                        figures: [rate.copied().unwrap_or(0.0), 0.0, 0.0, 0.0, 0.0, f(n)],
                    }
                })
                .collect();
            (vec!["DROP REASON", "PPS", "PACKETS"], vec![36, 9, 16], rows)
        }
        Pane::Talkers => {
            // Already rates (each worker's last window), so no difference of two samples.
            let rows: Vec<SortRow> = stats
                .talkers
                .top
                .iter()
                .map(|t| SortRow {
                    cells: vec![
                        safe(&t.prefix),
                        si(t.packets_per_second),
                        si(t.packets_per_second_min),
                        si(t.bits_per_second),
                        format!("{:.1}%", t.share * 100.0),
                        t.workers.to_string(),
                    ],
                    style: Style::default(),
                    name: t.prefix.clone(),
                    figures: [
                        t.packets_per_second,
                        t.bits_per_second,
                        0.0,
                        0.0,
                        0.0,
                        t.packets_per_second,
                    ],
                })
                .collect();
            (
                vec![
                    "SOURCE PREFIX",
                    "PPS",
                    "PPS (MIN)",
                    "BPS",
                    "SHARE",
                    "WORKERS",
                ],
                vec![44, 9, 9, 9, 6, 7],
                rows,
            )
        }
    };
    sort_rows(&mut rows, state.sort, state.reverse);
    (header, widths, rows)
}

const HELP: &str =
    "q quit  tab/v view  1 services 2 backends 3 drops 4 talkers  sort: n name  p pps  b bps  \
                    f new flows/s  a active  w weight  t total  r reverse";

/// Draws the whole view.
pub fn draw(frame: &mut Frame<'_>, state: &TopState) {
    let [head, status, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let dp = match &state.current {
        Some(s) if s.dataplane_up => {
            Span::styled("data plane up", Style::default().fg(Color::Green))
        }
        Some(_) => Span::styled(
            "data plane not attached",
            Style::default().fg(Color::Yellow),
        ),
        None => Span::raw("no sample yet"),
    };
    let drops = state.rates.drops.values().fold(0.0, |a, b| a + b);
    let busy = state.current.as_ref().map_or(String::new(), |s| {
        s.workers
            .iter()
            .map(|w| format!(" w{} {:.0}%", w.worker, w.busy_ratio() * 100.0))
            .collect::<String>()
    });
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                format!("switchyard top — {} ", safe(&state.api)),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            dp,
            Span::raw(format!(
                "  every {:.1}s  drops {}/s  busy{}",
                state.interval.as_secs_f64(),
                si(drops),
                if busy.is_empty() { " -" } else { &busy }
            )),
        ])),
        head,
    );
    let line = match &state.error {
        Some(e) => Line::from(Span::styled(
            format!(
                "daemon unreachable: {}; retrying every {:.1}s{}",
                safe(e),
                state.interval.as_secs_f64(),
                if state.current.is_some() {
                    " (figures below are from the last answer)"
                } else {
                    ""
                }
            ),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None => Line::from(format!(
            "view: {}  sorted by {}{}  window {:.2}s",
            state.pane.title(),
            state.sort.label(),
            if state.reverse { " (reversed)" } else { "" },
            state.rates.seconds
        )),
    };
    frame.render_widget(Paragraph::new(line), status);

    let (header, widths, rows) = table_rows(state);
    let table = Table::new(
        rows.into_iter().map(|r| Row::new(r.cells).style(r.style)),
        widths.into_iter().map(Constraint::Length),
    )
    .header(Row::new(header).style(Style::default().add_modifier(Modifier::REVERSED)))
    .column_spacing(1);
    frame.render_widget(table, body);
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(
            HELP,
            Style::default().add_modifier(Modifier::DIM),
        ))),
        help,
    );
}

/// Draws into an off-screen buffer of `width` × `height` and returns its text, one line per
/// row (for tests and for a terminal-less check).
#[must_use]
pub fn render_text(state: &TopState, width: u16, height: u16) -> String {
    let backend = ratatui::backend::TestBackend::new(width, height);
    // The test backend cannot fail (its error type is `Infallible`).
    let Ok(mut terminal) = ratatui::Terminal::new(backend);
    let Ok(_) = terminal.draw(|frame| draw(frame, state));
    let buffer = terminal.backend().buffer();
    let area: Rect = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// Samples `GET /v1/stats` every `interval` until the receiver is gone.
fn sampler(options: &TopOptions) -> Receiver<Result<StatsView, String>> {
    let (tx, rx) = mpsc::channel();
    let api = options.api.clone();
    let token = options.token_file.clone();
    let interval = options.interval;
    let spawned = std::thread::Builder::new()
        .name("top-sampler".into())
        .spawn(move || {
            let timeout = interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
            let client = ApiClient::new(&api, timeout).with_token_file(&token);
            loop {
                let started = Instant::now();
                let sample = client.stats().map_err(|e| e.to_string());
                if tx.send(sample).is_err() {
                    return;
                }
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
            }
        });
    if let Err(e) = spawned {
        let (tx2, rx2) = mpsc::channel();
        let _ = tx2.send(Err(format!("cannot start the sampler thread: {e}")));
        return rx2;
    }
    rx
}

/// Runs the view until `q`, Esc, Ctrl-C, SIGTERM or SIGHUP; restores the terminal.
#[must_use]
pub fn run(options: &TopOptions) -> ExitCode {
    if options.interval < Duration::from_millis(100) {
        let _ = writeln!(io::stderr(), "top: --interval must be at least 100ms");
        return ExitCode::FAILURE;
    }
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        let _ = writeln!(
            io::stderr(),
            "top needs a terminal; for scripts use `switchyard-control show stats --json`"
        );
        return ExitCode::FAILURE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            let _ = writeln!(io::stderr(), "top: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let samples = sampler(options);
    // `try_init` enters raw mode and the alternate screen and installs a panic hook that
    // restores the terminal before the panic message is printed.
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(io::stderr(), "top: cannot set up the terminal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = event_loop(&mut terminal, options, &samples, &stop);
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "top: terminal error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    options: &TopOptions,
    samples: &Receiver<Result<StatsView, String>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut state = TopState::new(&options.api, options.interval);
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        if dirty {
            terminal.draw(|frame| draw(frame, &state))?;
            dirty = false;
        }
        // Keys first, without waiting; then samples for a short while, so both stay live.
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(key) => {
                    if !state.key(key) {
                        return Ok(());
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        match samples.recv_timeout(Duration::from_millis(50)) {
            Ok(sample) => {
                state.sample(sample);
                dirty = true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                state.error = Some("the sampler thread stopped".into());
                dirty = true;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::stats::{BackendStats, ServiceStats};

    fn service(name: &str, packets: u64, bytes: u64, new_flows: u64) -> ServiceStats {
        ServiceStats {
            name: name.into(),
            packets,
            bytes,
            new_flows,
            active_flows: 0,
        }
    }

    fn backend(id: u32, name: &str, packets: u64, active: u64, weight: u32) -> BackendStats {
        BackendStats {
            pool: "pool".into(),
            backend: name.into(),
            address: format!("10.0.0.{id}"),
            id,
            packets,
            bytes: packets.saturating_mul(100),
            new_flows: packets / 10,
            active_flows: active,
            healthy: true,
            state: "up".into(),
            weight: 100,
            effective_weight: weight,
            ..BackendStats::default()
        }
    }

    fn view(time_ms: u64, services: Vec<ServiceStats>, backends: Vec<BackendStats>) -> StatsView {
        StatsView {
            time_ms,
            dataplane_up: true,
            services,
            backends,
            ..StatsView::default()
        }
    }

    #[test]
    fn rates_come_from_successive_samples() {
        let mut a = view(
            10_000,
            vec![service("llama", 1000, 100_000, 10)],
            vec![backend(1, "gpu-1", 500, 3, 100)],
        );
        a.drops.insert("acl".into(), 40);
        let mut b = view(
            12_000,
            vec![service("llama", 3000, 300_000, 50), service("new", 5, 5, 5)],
            vec![backend(1, "gpu-1", 1500, 3, 100)],
        );
        b.drops.insert("acl".into(), 140);
        b.drops.insert("bad_checksum".into(), 2);
        let r = Rates::between(&a, &b);
        assert!((r.seconds - 2.0).abs() < 1e-9);
        let l = r.services["llama"];
        assert!((l.pps - 1000.0).abs() < 1e-9, "{l:?}");
        assert!((l.bps - 800_000.0).abs() < 1e-9, "{l:?}");
        assert!((l.new_flows - 20.0).abs() < 1e-9, "{l:?}");
        assert!(!r.services.contains_key("new"), "no rate without a before");
        assert!((r.backends[&1].pps - 500.0).abs() < 1e-9);
        assert!((r.drops["acl"] - 50.0).abs() < 1e-9);
        assert!((r.drops["bad_checksum"] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn counts_that_went_down_or_a_clock_that_did_not_move_give_no_rate() {
        let a = view(10_000, vec![service("llama", 1000, 100, 10)], vec![]);
        let b = view(11_000, vec![service("llama", 10, 1, 1)], vec![]);
        assert!(Rates::between(&a, &b).services.is_empty());
        assert_eq!(Rates::between(&b, &b), Rates::default());
        let earlier = view(9_000, vec![], vec![]);
        assert_eq!(Rates::between(&a, &earlier), Rates::default());
    }

    #[test]
    fn keys_sort_switch_and_quit() {
        let mut s = TopState::new("127.0.0.1:1", Duration::from_secs(1));
        s.sample(Ok(view(
            1000,
            vec![service("alpha", 0, 0, 0), service("zulu", 0, 0, 0)],
            vec![backend(1, "b1", 0, 1, 10), backend(2, "b2", 0, 9, 90)],
        )));
        s.sample(Ok(view(
            2000,
            vec![service("alpha", 10, 10, 0), service("zulu", 500, 500, 0)],
            vec![backend(1, "b1", 0, 1, 10), backend(2, "b2", 0, 9, 90)],
        )));
        let names = |s: &TopState| {
            table_rows(s)
                .2
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        let press = |s: &mut TopState, c: KeyCode| s.key(KeyEvent::new(c, KeyModifiers::NONE));
        assert_eq!(names(&s), ["zulu", "alpha"], "busiest first");
        assert!(press(&mut s, KeyCode::Char('n')));
        assert_eq!(names(&s), ["alpha", "zulu"]);
        assert!(press(&mut s, KeyCode::Char('n')));
        assert_eq!(names(&s), ["zulu", "alpha"], "the same key again reverses");
        assert!(press(&mut s, KeyCode::Tab));
        assert_eq!(s.pane, Pane::Backends);
        assert!(press(&mut s, KeyCode::Char('a')));
        assert_eq!(names(&s), ["pool/b2", "pool/b1"]);
        assert!(press(&mut s, KeyCode::Char('r')));
        assert_eq!(names(&s), ["pool/b1", "pool/b2"]);
        assert!(press(&mut s, KeyCode::Char('3')));
        assert_eq!(s.pane, Pane::Drops);
        assert!(!press(&mut s, KeyCode::Char('q')));
        assert!(!s.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    }

    #[test]
    fn odd_data_renders_without_panic() {
        let mut s = TopState::new("127.0.0.1:1", Duration::from_secs(1));
        // Nothing yet, then an error, on a tiny and on a normal screen.
        for (w, h) in [(1, 1), (10, 3), (200, 50)] {
            let _ = render_text(&s, w, h);
        }
        s.sample(Err("no switchyard-control daemon at 127.0.0.1:1".into()));
        assert!(render_text(&s, 200, 50).contains("daemon unreachable"));
        let mut odd = view(
            u64::MAX,
            vec![service("\u{1b}[2Jevil\nname", u64::MAX, u64::MAX, u64::MAX)],
            vec![backend(
                u32::MAX,
                "ünïcødé-名前",
                u64::MAX,
                u64::MAX,
                u32::MAX,
            )],
        );
        odd.drops.insert(String::new(), u64::MAX);
        s.sample(Ok(odd.clone()));
        odd.time_ms = 0;
        s.sample(Ok(odd));
        for pane in [Pane::Services, Pane::Backends, Pane::Drops] {
            s.pane = pane;
            for (w, h) in [(1, 1), (10, 3), (200, 50)] {
                let text = render_text(&s, w, h);
                assert!(!text.contains('\u{1b}'));
            }
        }
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(-0.0), "0");
        assert_eq!(si(2.5), "2.5");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.0), "1.23k");
        assert_eq!(si(45_600_000.0), "45.6M");
        assert_eq!(si(f64::NAN), "-");
        assert_eq!(si(f64::INFINITY), "-");
        assert_eq!(si(1e30), "1000000000000000P");
    }
}
