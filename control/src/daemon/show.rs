//! `switchyard-control show`: the state of the appliance as tables an operator reads at a
//! glance.

use std::fmt::Write as _;

use super::view::{PolicyErrorView, PublishStatus, RouteView, ServiceView, StateView};

/// Columns of text, left-aligned, two spaces apart.
#[derive(Debug)]
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, (cell, width)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let _ = write!(text, "{cell:<width$}");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
    }
}

fn route_text(route: &RouteView) -> String {
    let from = route.from.as_deref().unwrap_or("*");
    let mut text = format!("{from} → {}", route.pool);
    if !route.fallback.is_empty() {
        let _ = write!(text, " (fallback {})", route.fallback.join(", "));
    }
    if route.residency == "strict" {
        text.push_str(" [strict]");
    }
    text
}

fn service_routes(service: &ServiceView) -> String {
    let mut parts: Vec<String> = service.routes.iter().map(route_text).collect();
    if let Some(canary) = &service.canary {
        parts.push(format!("canary {} {}", canary.percent, canary.pool));
    }
    parts.join("; ")
}

/// A policy file that does not load: loud, with every problem and since when.
fn policy_error(e: &PolicyErrorView, current: u64, out: &mut String) {
    let place = match (e.line, e.column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}", e.file),
        (Some(line), None) => format!("{}:{line}", e.file),
        _ => e.file.clone(),
    };
    let _ = writeln!(
        out,
        "POLICY FILE BROKEN for {}: {place}: {}",
        age(e.since_ms),
        e.message
    );
    match &e.running_last_good {
        Some(copy) => {
            let _ = writeln!(
                out,
                "  running the last known good policy {copy} (generation {current}) since the \
                 daemon started"
            );
        }
        None => {
            let _ = writeln!(out, "  nothing changed: generation {current} stays");
        }
    }
    for line in e.errors.iter().skip(1) {
        let _ = writeln!(out, "  {line}");
    }
}

/// `41s`, `3m12s`, `2h05m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The headline: which generation runs where.
fn headline(state: &StateView, out: &mut String) {
    let g = &state.generation;
    let d = &state.dataplane;
    let _ = writeln!(
        out,
        "instance {} · policy {}",
        state.instance, state.policy_file
    );
    let workers = d.workers.len();
    let on_current = d
        .workers
        .iter()
        .filter(|w| w.live_generation == g.current)
        .count();
    let latency = g
        .last_publish_to_live_ms
        .map(|ms| format!(" (publish→live {ms:.3} ms)"))
        .unwrap_or_default();
    let status = match g.status {
        PublishStatus::Live | PublishStatus::Unchanged => {
            format!(
                "generation {} live on {on_current} of {workers} workers{latency}",
                g.current
            )
        }
        PublishStatus::Pending if !d.running => {
            format!("generation {} pending: no data plane is running", g.current)
        }
        PublishStatus::Pending => format!(
            "generation {} pending: published, running on {on_current} of {workers} workers \
             (live: {})",
            g.current,
            if g.live == 0 {
                "none".to_owned()
            } else {
                g.live.to_string()
            }
        ),
        PublishStatus::Rejected if g.live == 0 => format!(
            "generation {} rejected by the data plane; no generation is live",
            g.current
        ),
        PublishStatus::Rejected => format!(
            "generation {} rejected by the data plane; generation {} stays live",
            g.current, g.live
        ),
    };
    let _ = writeln!(out, "{status}");
    let _ = writeln!(out, "table digest {}", g.digest);
    if let Some(r) = &g.last_rejected {
        let _ = writeln!(
            out,
            "last rejected: generation {} ({})",
            r.generation, r.reason
        );
    }
    if let Some(e) = &state.policy_error {
        policy_error(e, g.current, out);
    }
    if d.running {
        let _ = writeln!(
            out,
            "data plane: running, pid {}, epoch {}, {workers} workers",
            d.pid, d.epoch
        );
    } else if d.pid == 0 {
        let _ = writeln!(out, "data plane: not running (never attached)");
    } else {
        let age = d
            .heartbeat_age_ms
            .map(|ms| format!(", last heartbeat {:.1} s ago", ms as f64 / 1000.0))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "data plane: not running (last pid {}, epoch {}{age}); it loads generation {} when \
             it starts",
            d.pid, d.epoch, g.published
        );
    }
}

/// Renders the state for a terminal.
#[must_use]
pub fn render(state: &StateView) -> String {
    let mut out = String::new();
    headline(state, &mut out);

    // A stopped data plane's worker lines are stale: leave them out.
    if state.dataplane.running && !state.dataplane.workers.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["WORKER", "GENERATION", "PACKETS", "DROPS"]);
        for w in &state.dataplane.workers {
            t.row(vec![
                w.worker.to_string(),
                w.live_generation.to_string(),
                w.packets.to_string(),
                w.drops.to_string(),
            ]);
        }
        t.render(&mut out);
    }

    out.push('\n');
    let mut t = Table::new(&["SERVICE", "VIP", "PORTS", "PROTO", "ROUTES"]);
    for s in &state.services {
        t.row(vec![
            s.name.clone(),
            s.vip.clone(),
            s.ports.join(","),
            s.protocol.clone(),
            service_routes(s),
        ]);
    }
    t.render(&mut out);

    out.push('\n');
    // The live columns only when some pool is checked or load-driven.
    let live = state
        .pools
        .iter()
        .flat_map(|p| &p.backends)
        .any(|b| b.check.is_some() || b.load.is_some());
    let mut header = vec![
        "POOL",
        "SCHEDULER",
        "HEALTH CHECK",
        "BACKEND",
        "ID",
        "WEIGHT",
        "EFFECTIVE",
        "STATE",
    ];
    if live {
        header.extend(["SINCE", "LAST PROBE", "LOAD"]);
    }
    let mut t = Table::new(&header);
    for p in &state.pools {
        let scheduler = if p.maglev_size > 0 {
            format!("{} ({})", p.scheduler, p.maglev_size)
        } else {
            p.scheduler.clone()
        };
        let health = p.health_check.clone().unwrap_or_else(|| "none".to_owned());
        for (i, b) in p.backends.iter().enumerate() {
            let first = i == 0;
            let backend = match &b.name {
                Some(name) => format!("{} ({name})", b.address),
                None => b.address.clone(),
            };
            let mut row = vec![
                if first { p.name.clone() } else { String::new() },
                if first {
                    scheduler.clone()
                } else {
                    String::new()
                },
                if first { health.clone() } else { String::new() },
                backend,
                b.id.to_string(),
                b.weight.to_string(),
                b.effective_weight.to_string(),
                b.state.clone(),
            ];
            if live {
                row.extend([
                    b.check
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |c| ago(c.since_ms)),
                    b.check
                        .as_ref()
                        .and_then(|c| c.last_probe.clone())
                        .unwrap_or_else(|| "-".to_owned()),
                    b.load.as_ref().map_or_else(|| "-".to_owned(), load_cell),
                ]);
            }
            t.row(row);
        }
    }
    t.render(&mut out);
    if !state.rollouts.is_empty() {
        out.push('\n');
        out.push_str(&render_rollouts(&state.rollouts));
    }
    out
}

/// The phased canaries: one line each.
#[must_use]
pub fn render_rollouts(list: &[crate::rollout::RolloutStatus]) -> String {
    if list.is_empty() {
        return "no phased canary rollouts\n".to_owned();
    }
    let mut t = Table::new(&[
        "SERVICE",
        "CANARY POOL",
        "STATE",
        "STEP",
        "SHARE",
        "NEXT",
        "NOTE",
    ]);
    for r in list {
        let next = r
            .next_step_in_secs
            .map_or_else(|| "-".to_owned(), |s| ago(s.saturating_mul(1000)));
        let note = r
            .reason
            .clone()
            .or_else(|| r.waiting.clone())
            .unwrap_or_default();
        t.row(vec![
            r.service.clone(),
            r.pool.clone(),
            r.state.to_string(),
            format!("{}/{} ({})", r.step + 1, r.steps.len(), r.steps.join(" → ")),
            r.percent.clone(),
            next,
            note,
        ]);
    }
    let mut out = String::new();
    t.render(&mut out);
    out
}

/// `12s`, `3m05s`, `2h10m`.
fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `0.40 (waiting 2, kv 0.1) full`, `stale 12s`, or the scrape error.
fn load_cell(l: &super::view::LoadView) -> String {
    if let Some(e) = &l.error {
        if l.stale {
            return format!("stale: {e}");
        }
    }
    let Some(load) = l.load else {
        return "no data".to_owned();
    };
    let signals: Vec<String> = l
        .signals
        .iter()
        .map(|(name, v)| {
            let short = name.rsplit(':').next().unwrap_or(name);
            format!("{short} {v}")
        })
        .collect();
    let mut cell = format!("{load:.2} ({})", signals.join(", "));
    if l.stale {
        cell = format!("stale, was {cell}");
    }
    if l.full {
        cell.push_str(" FULL");
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::super::view::*;
    use super::*;

    fn state() -> StateView {
        StateView {
            instance: "default".into(),
            policy_file: "/etc/switchyard/policy.yaml".into(),
            generation: GenerationView {
                current: 3,
                published: 3,
                live: 0,
                status: PublishStatus::Pending,
                last_publish_to_live_ms: None,
                last_rejected: None,
                digest: "0123456789abcdef".into(),
            },
            dataplane: DataplaneView {
                running: false,
                pid: 0,
                epoch: 0,
                heartbeat_age_ms: None,
                live_generation: 0,
                workers: vec![],
            },
            services: vec![ServiceView {
                name: "llama-70b".into(),
                vip: "203.0.113.10".into(),
                ports: vec!["443".into()],
                protocol: "tcp".into(),
                routes: vec![
                    RouteView {
                        from: Some("eu-west".into()),
                        pool: "llama-eu".into(),
                        fallback: vec![],
                        residency: "strict".into(),
                    },
                    RouteView {
                        from: None,
                        pool: "llama-us".into(),
                        fallback: vec!["llama-eu".into()],
                        residency: "preferred".into(),
                    },
                ],
                canary: Some(CanaryView {
                    pool: "llama-v2".into(),
                    percent: "5%".into(),
                }),
            }],
            pools: vec![PoolView {
                name: "llama-eu".into(),
                region: Some("eu-west".into()),
                scheduler: "maglev".into(),
                maglev_size: 65537,
                health_check: Some("http :8000/v1/models".into()),
                backends: vec![
                    BackendView {
                        id: 1,
                        address: "192.0.2.11".into(),
                        name: Some("gpu-eu-1".into()),
                        weight: 100,
                        effective_weight: 100,
                        healthy: true,
                        state: "up".into(),
                        check: None,
                        load: None,
                    },
                    BackendView {
                        id: 2,
                        address: "192.0.2.12".into(),
                        name: None,
                        weight: 0,
                        effective_weight: 0,
                        healthy: true,
                        state: "drained".into(),
                        check: None,
                        load: None,
                    },
                ],
            }],
            rollouts: Vec::new(),
            counters: ControlCounters::default(),
            policy_error: None,
        }
    }

    #[test]
    fn renders_pending_without_data_plane() {
        let text = render(&state());
        assert!(
            text.contains("generation 3 pending: no data plane is running"),
            "{text}"
        );
        assert!(
            text.contains("data plane: not running (never attached)"),
            "{text}"
        );
        assert!(text.contains(
            "eu-west → llama-eu [strict]; * → llama-us (fallback llama-eu); canary 5% llama-v2"
        ));
        let pool_lines: Vec<&str> = text.lines().filter(|l| l.contains("192.0.2.1")).collect();
        assert_eq!(pool_lines.len(), 2);
        assert!(pool_lines[0].starts_with("llama-eu  maglev (65537)"));
        assert!(pool_lines[1].trim_start().starts_with("192.0.2.12"));
        assert!(pool_lines[1].ends_with("drained"), "{text}");
    }
}
