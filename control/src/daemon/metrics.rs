//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of the data plane's counters
//! and the control plane's own gauges, encoded by the `prometheus` crate (tikv/rust-prometheus).
//!
//! The data plane's counter set is not known at compile time — the data plane writes the names
//! into the shared-memory segment when it starts — so a registry of static metric families does
//! not fit. Every scrape builds the page's families as the crate's data model
//! (`proto::MetricFamily` of `Metric`s with `LabelPair`s and a `Counter`, `Gauge` or `Summary`)
//! and `prometheus::TextEncoder` writes them: `# HELP`, `# TYPE`, samples, escaping, numbers.
//! The crate is built without its `protobuf` feature (its plain data model, the text encoder
//! only). Every family is written once; a data-plane counter whose name cleans up to one already
//! written is skipped. Not `prometheus-client`: it writes OpenMetrics, whose counters
//! `promtool check metrics` of Prometheus 2.42 (Debian's, which the tests run) refuses
//! (`foo_total no help text`).
//!
//! Names (see `docs/CONTROL.md`):
//! - `switchyard_control_*`: generation numbers, publishes, rejects, reloads, publish→live;
//! - `switchyard_dataplane_*`: up, pid, epoch, workers, and per worker (`worker` label) the live
//!   generation, packets, drops and every named counter as `switchyard_dataplane_<name>_total`
//!   (a counter of `_milliseconds` as `<stem>_seconds_total`, in seconds);
//! - traffic from the workers' telemetry ([`super::stats`], [`render_traffic`]):
//!   `switchyard_service_*{service}`, `switchyard_pool_*{pool}`,
//!   `switchyard_backend_*{pool,backend,address}` (packets, bytes, new flows, active flows;
//!   health, weights, load), `switchyard_port_*{port}`, per worker busy/idle seconds and swaps,
//!   `switchyard_dataplane_dropped_packets_total{reason}`.
//! - the event bus ([`render_events`], with `--events`): `switchyard_events_emitted_total{kind}`,
//!   and per sink `switchyard_events_{sent,dropped,failed}_total` and `switchyard_events_queued`.

use std::collections::BTreeSet;

use prometheus::proto::{
    Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary,
};
use prometheus::TextEncoder;

use super::view::{ControlCounters, WorkerView};
use crate::events::{Events, SinkStats};

/// The `Content-Type` of the exposition: the text encoder's format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The control plane's side of the exposition.
#[derive(Debug, Clone, Default)]
pub struct ControlSample {
    pub current_generation: u64,
    pub published_generation: u64,
    pub live_generation: u64,
    /// 1 while a published generation waits for acknowledgements.
    pub pending: bool,
    pub counters: ControlCounters,
    /// Publish→live time of the last generation that went live.
    pub last_publish_to_live_seconds: Option<f64>,
    /// Publish→live times; `None` until one generation went live from a publish of ours.
    pub latency: Option<LatencySample>,
    /// The policy file does not load (the daemon runs what it had).
    pub policy_file_error: bool,
    /// The daemon started from its last known good copy of the policy.
    pub running_last_good: bool,
}

/// Publish→live times as a summary: quantiles over the publisher's recent window, sum and count
/// since the daemon started.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencySample {
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
    pub sum_seconds: f64,
    pub count: u64,
}

/// The data plane's side, read from the shared-memory segment.
#[derive(Debug, Clone, Default)]
pub struct DataplaneSample {
    /// A data-plane process holds its role on the segment.
    pub running: bool,
    /// 0 when no data plane ever attached; then no per-worker series are written.
    pub pid: u64,
    pub epoch: u64,
    pub live_generation: u64,
    pub workers: Vec<WorkerView>,
    /// Counter names as the data plane wrote them.
    pub counter_names: Vec<String>,
    /// `counters[w][i]`: worker `workers[w]`, counter `counter_names[i]`.
    pub counters: Vec<Vec<u64>>,
}

/// The kinds of family the page has (never `untyped`, which the text encoder does not write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// The families of a page being built, in page order, each name once.
struct Exposition {
    families: Vec<MetricFamily>,
    names: BTreeSet<String>,
}

impl Exposition {
    fn new() -> Self {
        Self {
            families: Vec::with_capacity(128),
            names: BTreeSet::new(),
        }
    }

    /// Starts a family; `None` (and nothing added) when one of that name exists.
    fn family(&mut self, name: &str, kind: MetricType, help: &str) -> Option<&mut MetricFamily> {
        if !self.names.insert(name.to_owned()) {
            return None;
        }
        let mut family = MetricFamily::default();
        family.set_name(name.to_owned());
        family.set_help(help.to_owned());
        family.set_field_type(kind);
        self.families.push(family);
        self.families.last_mut()
    }

    /// Starts a counter or gauge family (see [`Self::family`]).
    fn series(&mut self, name: &str, kind: Kind, help: &str) -> Option<&mut MetricFamily> {
        let kind = match kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        };
        self.family(name, kind, help)
    }

    /// A counter or gauge family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        if let Some(family) = self.series(name, kind, help) {
            sample(family, &[], value);
        }
    }

    /// Appends the families to `out`, as `TextEncoder` writes them.
    fn encode(&self, out: &mut String) {
        let encoder = TextEncoder::new();
        for family in &self.families {
            if family.get_metric().is_empty() {
                header(&encoder, family, out);
            } else {
                // The encoder checks a family before writing it and refuses only one without a
                // sample or a name, which `header` and `family` rule out: nothing to report.
                let _ = encoder.encode_utf8(std::slice::from_ref(family), out);
            }
        }
    }
}

/// Adds a sample to a counter or gauge family.
fn sample(family: &mut MetricFamily, labels: &[(&str, &str)], value: f64) {
    let mut metric = Metric::from_label(
        labels
            .iter()
            .map(|&(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_owned());
                pair.set_value(value.to_owned());
                pair
            })
            .collect(),
    );
    match family.get_field_type() {
        MetricType::COUNTER => {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        }
        MetricType::GAUGE => {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        _ => return,
    }
    family.mut_metric().push(metric);
}

/// Writes the `# HELP` and `# TYPE` lines of a family without samples. The page has such
/// families (`switchyard_backend_load_ratio` with no pool with `load`, a table's families with
/// no rows) and dashboards look for them, but the encoder refuses a family without a sample
/// (`MetricFamily has no metrics`): the family is encoded with one placeholder sample, whose
/// lines are left out — the header lines are still the encoder's.
fn header(encoder: &TextEncoder, family: &MetricFamily, out: &mut String) {
    let mut placeholder = MetricFamily::default();
    placeholder.set_name(family.name().to_owned());
    placeholder.set_help(family.help().to_owned());
    placeholder.set_field_type(family.get_field_type());
    placeholder.set_metric(vec![Metric::default()]);
    let mut text = String::new();
    if encoder.encode_utf8(&[placeholder], &mut text).is_ok() {
        // Help text is escaped (no line break in it) and sample lines start with the name.
        for line in text
            .split_inclusive('\n')
            .take_while(|l| l.starts_with('#'))
        {
            out.push_str(line);
        }
    }
}

/// A count as a sample value. The data model holds doubles: exact up to 2^53.
#[allow(clippy::cast_precision_loss)]
fn int(v: u64) -> f64 {
    v as f64
}

/// A data-plane counter name as a metric name: `switchyard_dataplane_<name>_total`, with every
/// character outside `[a-zA-Z0-9_]` turned into `_`. `None` for an empty name.
#[must_use]
pub fn dataplane_metric_name(counter: &str) -> Option<String> {
    let cleaned: String = counter
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('_');
    if cleaned.is_empty() {
        return None;
    }
    let base = cleaned.strip_suffix("_total").unwrap_or(cleaned);
    // Prometheus wants base units: a counter of milliseconds is exported in seconds.
    if let Some(stem) = base.strip_suffix("_milliseconds") {
        return Some(format!("switchyard_dataplane_{stem}_seconds_total"));
    }
    Some(format!("switchyard_dataplane_{base}_total"))
}

/// Renders the whole exposition.
#[must_use]
pub fn render(control: &ControlSample, dataplane: &DataplaneSample) -> String {
    let mut e = Exposition::new();
    control_families(&mut e, control);
    dataplane_families(&mut e, dataplane);
    let mut out = String::with_capacity(16 * 1024);
    e.encode(&mut out);
    out
}

fn flag(b: bool) -> f64 {
    int(u64::from(b))
}

fn control_families(e: &mut Exposition, c: &ControlSample) {
    use Kind::{Counter, Gauge};
    e.single(
        "switchyard_control_current_generation",
        Gauge,
        "Generation compiled from the policy the control plane holds.",
        int(c.current_generation),
    );
    e.single(
        "switchyard_control_published_generation",
        Gauge,
        "Newest generation the control plane published.",
        int(c.published_generation),
    );
    e.single(
        "switchyard_control_live_generation",
        Gauge,
        "Generation every data-plane worker runs (0: none).",
        int(c.live_generation),
    );
    e.single(
        "switchyard_control_publish_pending",
        Gauge,
        "1 while a published generation waits for every worker's acknowledgement.",
        flag(c.pending),
    );
    e.single(
        "switchyard_control_publishes_total",
        Counter,
        "Generations published since the control plane started.",
        int(c.counters.publishes),
    );
    e.single(
        "switchyard_control_rejects_total",
        Counter,
        "Published generations the data plane refused.",
        int(c.counters.rejects),
    );
    e.single(
        "switchyard_control_reloads_total",
        Counter,
        "Policies loaded and applied (file change, SIGHUP, apply).",
        int(c.counters.reloads),
    );
    e.single(
        "switchyard_control_reload_failures_total",
        Counter,
        "Policies refused by validation or compilation; nothing changed.",
        int(c.counters.reload_failures),
    );
    e.single(
        "switchyard_control_policy_file_error",
        Gauge,
        "1 while the policy file does not load (the daemon runs the policy it had).",
        flag(c.policy_file_error),
    );
    e.single(
        "switchyard_control_running_last_good",
        Gauge,
        "1 when the daemon started from its last known good copy of the policy.",
        flag(c.running_last_good),
    );
    e.single(
        "switchyard_control_dataplane_restarts_total",
        Counter,
        "Data-plane restarts seen by the control plane (each followed by a republish).",
        int(c.counters.dataplane_restarts),
    );
    e.single(
        "switchyard_control_health_transitions_total",
        Counter,
        "Backends taken down or brought back up by their health checks.",
        int(c.counters.health_transitions),
    );
    e.single(
        "switchyard_control_load_updates_total",
        Counter,
        "Load-driven table changes published (new effective weights or full bits).",
        int(c.counters.load_updates),
    );
    if let Some(seconds) = c.last_publish_to_live_seconds {
        e.single(
            "switchyard_control_last_publish_to_live_seconds",
            Gauge,
            "Time from publishing the last live generation to every worker running it.",
            seconds,
        );
    }
    if let Some(l) = c.latency {
        if let Some(family) = e.family(
            "switchyard_control_publish_to_live_seconds",
            MetricType::SUMMARY,
            "Time from publishing a generation to every worker running it (quantiles over the \
             last 4096 publishes; 1 is the maximum).",
        ) {
            let mut summary = Summary::default();
            summary.set_quantile(
                [
                    (0.5, l.p50_seconds),
                    (0.99, l.p99_seconds),
                    (1.0, l.max_seconds),
                ]
                .into_iter()
                .map(|(q, v)| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(q);
                    quantile.set_value(v);
                    quantile
                })
                .collect(),
            );
            summary.set_sample_sum(l.sum_seconds);
            summary.set_sample_count(l.count);
            let mut metric = Metric::default();
            metric.set_summary(summary);
            family.mut_metric().push(metric);
        }
    }
}

fn dataplane_families(e: &mut Exposition, d: &DataplaneSample) {
    use Kind::{Counter, Gauge};
    e.single(
        "switchyard_dataplane_up",
        Gauge,
        "1 while a data plane is attached to the segment (its process holds the data-plane role).",
        flag(d.running),
    );
    e.single(
        "switchyard_dataplane_pid",
        Gauge,
        "Process id of the data plane that attached last (0: none ever).",
        int(d.pid),
    );
    e.single(
        "switchyard_dataplane_epoch",
        Gauge,
        "Data-plane starts on this segment.",
        int(d.epoch),
    );
    e.single(
        "switchyard_dataplane_workers",
        Gauge,
        "Worker threads of the data plane.",
        int(d.workers.len() as u64),
    );
    if d.pid == 0 {
        return;
    }
    let labels: Vec<String> = d.workers.iter().map(|w| w.worker.to_string()).collect();
    type Field = fn(&WorkerView) -> u64;
    let per_worker: [(&str, Kind, &str, Field); 3] = [
        (
            "switchyard_dataplane_worker_live_generation",
            Gauge,
            "Generation this worker runs.",
            |w| w.live_generation,
        ),
        (
            "switchyard_dataplane_worker_packets_total",
            Counter,
            "Packets this worker received.",
            |w| w.packets,
        ),
        (
            "switchyard_dataplane_worker_drops_total",
            Counter,
            "Packets this worker dropped.",
            |w| w.drops,
        ),
    ];
    for (name, kind, help, get) in per_worker {
        if let Some(family) = e.series(name, kind, help) {
            for (w, label) in d.workers.iter().zip(&labels) {
                sample(family, &[("worker", label)], int(get(w)));
            }
        }
    }
    for (i, counter) in d.counter_names.iter().enumerate() {
        let Some(name) = dataplane_metric_name(counter) else {
            continue;
        };
        let help = format!("Data-plane counter `{counter}`, per worker.");
        let Some(family) = e.series(&name, Counter, &help) else {
            continue;
        };
        let milliseconds = counter.ends_with("_milliseconds");
        for (w, label) in d.counters.iter().zip(&labels) {
            if let Some(&v) = w.get(i) {
                #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
                let value = if milliseconds {
                    v as f64 / 1000.0
                } else {
                    int(v)
                };
                sample(family, &[("worker", label)], value);
            }
        }
    }
}

/// A metric family over rows of `T`: name, kind, help and the row's value.
type RowFamily<T> = (&'static str, Kind, &'static str, fn(&T) -> u64);

/// Appends the traffic families (see the module doc) to `body`, skipping any family `body`
/// already has.
#[allow(clippy::too_many_lines)] // one table of families
pub fn render_traffic(body: &mut String, s: &super::stats::StatsView) {
    use Kind::{Counter, Gauge};
    let mut e = Exposition::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split(' ').next() {
                e.names.insert(name.to_owned());
            }
        }
    }
    type Svc = super::stats::ServiceStats;
    let services: [RowFamily<Svc>; 4] = [
        (
            "switchyard_service_packets_total",
            Counter,
            "Packets of the service forwarded to a backend.",
            |v| v.packets,
        ),
        (
            "switchyard_service_bytes_total",
            Counter,
            "Bytes (frames as received) of the service forwarded to a backend.",
            |v| v.bytes,
        ),
        (
            "switchyard_service_new_flows_total",
            Counter,
            "Flows opened to the service (a SYN or a UDP flow's first datagram that missed the \
             connection table).",
            |v| v.new_flows,
        ),
        (
            "switchyard_service_active_flows",
            Gauge,
            "Flows of the service in the workers' connection tables (closing ones aside).",
            |v| v.active_flows,
        ),
    ];
    for (name, kind, help, get) in services {
        if let Some(family) = e.series(name, kind, help) {
            for v in &s.services {
                sample(family, &[("service", &v.name)], int(get(v)));
            }
        }
    }
    type Pool = super::stats::PoolStats;
    let pools: [RowFamily<Pool>; 4] = [
        (
            "switchyard_pool_packets_total",
            Counter,
            "Packets forwarded to the pool's backends.",
            |v| v.packets,
        ),
        (
            "switchyard_pool_bytes_total",
            Counter,
            "Bytes forwarded to the pool's backends.",
            |v| v.bytes,
        ),
        (
            "switchyard_pool_new_flows_total",
            Counter,
            "Flows opened to the pool's backends.",
            |v| v.new_flows,
        ),
        (
            "switchyard_pool_active_flows",
            Gauge,
            "Flows on the pool's backends in the workers' connection tables (closing ones aside).",
            |v| v.active_flows,
        ),
    ];
    for (name, kind, help, get) in pools {
        if let Some(family) = e.series(name, kind, help) {
            for v in &s.pools {
                sample(family, &[("pool", &v.name)], int(get(v)));
            }
        }
    }
    type Backend = super::stats::BackendStats;
    let backends: [RowFamily<Backend>; 8] = [
        (
            "switchyard_backend_packets_total",
            Counter,
            "Packets forwarded to the backend.",
            |v| v.packets,
        ),
        (
            "switchyard_backend_bytes_total",
            Counter,
            "Bytes forwarded to the backend.",
            |v| v.bytes,
        ),
        (
            "switchyard_backend_new_flows_total",
            Counter,
            "Flows opened to the backend.",
            |v| v.new_flows,
        ),
        (
            "switchyard_backend_active_flows",
            Gauge,
            "Flows on the backend in the workers' connection tables (closing ones aside).",
            |v| v.active_flows,
        ),
        (
            "switchyard_backend_up",
            Gauge,
            "1 while the backend passes its health check (or its pool has none).",
            |v| u64::from(v.healthy),
        ),
        (
            "switchyard_backend_drained",
            Gauge,
            "1 while the backend is drained (takes no new flow, keeps its flows).",
            |v| u64::from(v.state == "drained"),
        ),
        (
            "switchyard_backend_weight",
            Gauge,
            "The backend's weight in the policy.",
            |v| u64::from(v.weight),
        ),
        (
            "switchyard_backend_effective_weight",
            Gauge,
            "The backend's weight in the live tables (health, drain and load applied).",
            |v| u64::from(v.effective_weight),
        ),
    ];
    for (name, kind, help, get) in backends {
        if let Some(family) = e.series(name, kind, help) {
            for v in &s.backends {
                sample(
                    family,
                    &[
                        ("pool", &v.pool),
                        ("backend", &v.backend),
                        ("address", &v.address),
                    ],
                    int(get(v)),
                );
            }
        }
    }
    // Written even with no pool with `load` (then without samples), so dashboards find them.
    if let Some(family) = e.series(
        "switchyard_backend_load_ratio",
        Gauge,
        "Smoothed live load of the backend (1 = saturated), for pools with `load`.",
    ) {
        for v in &s.backends {
            if let Some(load) = v.load {
                let labels = [("pool", v.pool.as_str()), ("backend", v.backend.as_str())];
                sample(family, &labels, load);
            }
        }
    }
    if let Some(family) = e.series(
        "switchyard_backend_load_signal",
        Gauge,
        "The last scraped value of each load signal of the backend (`signal` names the \
             server's metric).",
    ) {
        for v in &s.backends {
            for (signal, value) in &v.signals {
                let labels = [
                    ("pool", v.pool.as_str()),
                    ("backend", v.backend.as_str()),
                    ("signal", signal.as_str()),
                ];
                sample(family, &labels, *value);
            }
        }
    }
    type Port = super::stats::PortStats;
    let ports: [RowFamily<Port>; 4] = [
        (
            "switchyard_port_received_packets_total",
            Counter,
            "Packets received on the data-plane port (by port index).",
            |p| p.rx_packets,
        ),
        (
            "switchyard_port_received_bytes_total",
            Counter,
            "Bytes received on the data-plane port.",
            |p| p.rx_bytes,
        ),
        (
            "switchyard_port_transmitted_packets_total",
            Counter,
            "Packets sent on the data-plane port.",
            |p| p.tx_packets,
        ),
        (
            "switchyard_port_transmitted_bytes_total",
            Counter,
            "Bytes sent on the data-plane port.",
            |p| p.tx_bytes,
        ),
    ];
    for (name, kind, help, get) in ports {
        if let Some(family) = e.series(name, kind, help) {
            for p in &s.ports {
                sample(family, &[("port", &p.port.to_string())], int(get(p)));
            }
        }
    }
    type WorkerFamily = (
        &'static str,
        &'static str,
        fn(&super::stats::WorkerStats) -> f64,
    );
    let workers: [WorkerFamily; 3] = [
        (
            "switchyard_dataplane_worker_busy_seconds_total",
            "Time the worker spent in polls that received packets.",
            |w| seconds(w.busy_cycles, w.tsc_hz),
        ),
        (
            "switchyard_dataplane_worker_idle_seconds_total",
            "Time the worker spent in polls that received nothing.",
            |w| seconds(w.idle_cycles, w.tsc_hz),
        ),
        (
            "switchyard_dataplane_worker_swaps_total",
            "Table generations the worker switched to since it started.",
            |w| int(w.swaps),
        ),
    ];
    for (name, help, get) in workers {
        if let Some(family) = e.series(name, Counter, help) {
            for w in &s.workers {
                sample(family, &[("worker", &w.worker.to_string())], get(w));
            }
        }
    }
    if let Some(family) = e.series(
        "switchyard_dataplane_dropped_packets_total",
        Counter,
        "Packets the data plane dropped, by reason (summed over workers; reasons with drops).",
    ) {
        for (reason, n) in &s.drops {
            sample(family, &[("reason", reason)], int(*n));
        }
    }
    e.single(
        "switchyard_dataplane_untracked_packets_total",
        Counter,
        "Packets forwarded for services or backends beyond the telemetry rows (1024 services, \
         4096 backends per worker).",
        int(s.untracked_packets),
    );
    e.encode(body);
}

/// Seconds from TSC cycles at `hz` (0 before the data plane reported its rate).
#[allow(clippy::cast_precision_loss)] // seconds of TSC cycles: a float is what is wanted
fn seconds(cycles: u64, hz: u64) -> f64 {
    if hz == 0 {
        0.0
    } else {
        cycles as f64 / hz as f64
    }
}

/// A per-sink series of the event bus: name, type, help, value.
type SinkFamily = (&'static str, Kind, &'static str, fn(&SinkStats) -> u64);

/// Appends the event bus's families to `body` (nothing when no sink is configured):
/// `switchyard_events_emitted_total{kind}`, and per sink (`sink`, `target` labels)
/// `switchyard_events_sent_total`, `switchyard_events_dropped_total` (queue full),
/// `switchyard_events_failed_total` (write or send errors) and `switchyard_events_queued`.
pub fn render_events(body: &mut String, events: &Events) {
    use Kind::{Counter, Gauge};
    if !events.enabled() {
        return;
    }
    let mut e = Exposition::new();
    if let Some(family) = e.series(
        "switchyard_events_emitted_total",
        Counter,
        "Events emitted on the event bus, by kind.",
    ) {
        for (kind, n) in events.emitted() {
            sample(family, &[("kind", kind.as_str())], int(n));
        }
    }
    let stats = events.stats();
    let series: [SinkFamily; 4] = [
        (
            "switchyard_events_sent_total",
            Counter,
            "Events a sink wrote or sent.",
            |s| s.sent,
        ),
        (
            "switchyard_events_dropped_total",
            Counter,
            "Events a sink dropped because its queue was full (a slow or dead collector).",
            |s| s.dropped,
        ),
        (
            "switchyard_events_failed_total",
            Counter,
            "Events a sink lost to write or send errors.",
            |s| s.failed,
        ),
        (
            "switchyard_events_queued",
            Gauge,
            "Events waiting in a sink's queue.",
            |s| s.queued,
        ),
    ];
    for (name, kind, help, value) in series {
        if let Some(family) = e.series(name, kind, help) {
            for s in &stats {
                sample(
                    family,
                    &[("sink", s.sink.as_str()), ("target", s.target.as_str())],
                    int(value(s)),
                );
            }
        }
    }
    e.encode(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(worker: u32, packets: u64) -> WorkerView {
        WorkerView {
            worker,
            live_generation: 7,
            packets,
            drops: 1,
        }
    }

    #[test]
    fn names_are_cleaned_and_suffixed_once() {
        assert_eq!(
            dataplane_metric_name("rx_packets").as_deref(),
            Some("switchyard_dataplane_rx_packets_total")
        );
        assert_eq!(
            dataplane_metric_name("drop.bad-checksum").as_deref(),
            Some("switchyard_dataplane_drop_bad_checksum_total")
        );
        assert_eq!(
            dataplane_metric_name("tx_total").as_deref(),
            Some("switchyard_dataplane_tx_total")
        );
        assert_eq!(
            dataplane_metric_name("flow_flood_milliseconds").as_deref(),
            Some("switchyard_dataplane_flow_flood_seconds_total")
        );
        assert_eq!(dataplane_metric_name("--"), None);
        assert_eq!(dataplane_metric_name(""), None);
    }

    #[test]
    fn exposition_has_every_family_once() {
        let control = ControlSample {
            current_generation: 7,
            published_generation: 7,
            live_generation: 7,
            pending: false,
            counters: ControlCounters {
                publishes: 3,
                ..ControlCounters::default()
            },
            last_publish_to_live_seconds: Some(0.000_25),
            policy_file_error: true,
            running_last_good: false,
            latency: Some(LatencySample {
                p50_seconds: 0.000_2,
                p99_seconds: 0.000_3,
                max_seconds: 0.000_3,
                sum_seconds: 0.000_75,
                count: 3,
            }),
        };
        let dataplane = DataplaneSample {
            running: true,
            pid: 42,
            epoch: 2,
            live_generation: 7,
            workers: vec![worker(0, 10), worker(1, 20)],
            counter_names: vec![
                "rx_packets".into(),
                "rx-packets".into(),
                "worker_packets".into(),
            ],
            counters: vec![vec![5, 6, 7], vec![8, 9, 10]],
        };
        let text = render(&control, &dataplane);
        assert!(text.contains("switchyard_control_publishes_total 3\n"));
        assert!(text.contains("switchyard_control_policy_file_error 1\n"));
        assert!(text.contains("switchyard_control_running_last_good 0\n"));
        assert!(text.contains("switchyard_control_last_publish_to_live_seconds 0.00025\n"));
        assert!(
            text.contains("switchyard_control_publish_to_live_seconds{quantile=\"0.99\"} 0.0003\n")
        );
        assert!(text.contains("switchyard_control_publish_to_live_seconds_count 3\n"));
        assert!(text.contains("switchyard_dataplane_rx_packets_total{worker=\"1\"} 8\n"));
        // "rx-packets" cleans to the same name: skipped, not written twice.
        assert_eq!(
            text.matches("# TYPE switchyard_dataplane_rx_packets_total counter")
                .count(),
            1
        );
        assert!(!text.contains("} 6\n"));
        // A data-plane counter cannot shadow a fixed family.
        assert_eq!(
            text.matches("# TYPE switchyard_dataplane_worker_packets_total")
                .count(),
            1
        );
        assert!(text.contains("switchyard_dataplane_worker_packets_total{worker=\"0\"} 10\n"));
    }

    #[test]
    fn the_encoder_escapes_help_and_label_values() {
        let mut e = Exposition::new();
        let family = e
            .series("x_total", Kind::Counter, "back\\slash\nline")
            .unwrap();
        sample(family, &[("a", "a\"b\\c\nd"), ("b", "")], 1.0);
        sample(family, &[], 0.25);
        assert!(e.series("x_total", Kind::Gauge, "again").is_none());
        let mut text = String::new();
        e.encode(&mut text);
        assert_eq!(
            text,
            "# HELP x_total back\\\\slash\\nline\n# TYPE x_total counter\n\
             x_total{a=\"a\\\"b\\\\c\\nd\",b=\"\"} 1\nx_total 0.25\n"
        );
    }

    #[test]
    fn families_without_samples_keep_their_header() {
        let mut body = render(&ControlSample::default(), &DataplaneSample::default());
        render_traffic(&mut body, &super::super::stats::StatsView::default());
        assert!(body.contains(
            "# TYPE switchyard_backend_load_ratio gauge\n\
             # HELP switchyard_backend_load_signal "
        ));
        assert!(body.contains("# TYPE switchyard_service_packets_total counter\n# HELP "));
        assert!(!body.contains("switchyard_backend_load_ratio{"));
        assert!(!body.contains("switchyard_backend_load_ratio 0"));
        // Families the body has already are not written again.
        let before = body.len();
        render_traffic(&mut body, &super::super::stats::StatsView::default());
        assert_eq!(body.len(), before);
    }

    #[test]
    fn summary_quantiles_sum_and_count() {
        let control = ControlSample {
            latency: Some(LatencySample {
                p50_seconds: 0.5,
                p99_seconds: 1.5,
                max_seconds: 2.0,
                sum_seconds: 4.25,
                count: 5,
            }),
            ..ControlSample::default()
        };
        let text = render(&control, &DataplaneSample::default());
        let name = "switchyard_control_publish_to_live_seconds";
        assert!(text.contains(&format!(
            "# TYPE {name} summary\n{name}{{quantile=\"0.5\"}} 0.5\n\
             {name}{{quantile=\"0.99\"}} 1.5\n{name}{{quantile=\"1\"}} 2\n\
             {name}_sum 4.25\n{name}_count 5\n"
        )));
    }

    #[test]
    fn no_dataplane_no_worker_series() {
        let text = render(&ControlSample::default(), &DataplaneSample::default());
        assert!(text.contains("switchyard_dataplane_up 0\n"));
        assert!(!text.contains("worker=\""));
        assert!(!text.contains("publish_to_live_seconds"));
    }
}
