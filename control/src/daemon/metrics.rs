//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of the data plane's counters
//! and the control plane's own gauges.
//!
//! Written by hand rather than through a client library's registry: the data plane's counter
//! set is not known at compile time — the data plane writes the names into the shared-memory
//! segment when it starts — and a registry of static metric families would need one family per
//! name created on the fly. The format is small: `# HELP`, `# TYPE`, then one sample per line,
//! with label values and help text escaped as the format says. Every family is written once;
//! a data-plane counter whose name cleans up to one already written is skipped.
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

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::view::{ControlCounters, WorkerView};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

/// An exposition being written.
struct Exposition {
    out: String,
    families: BTreeSet<String>,
}

impl Exposition {
    fn new() -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
            families: BTreeSet::new(),
        }
    }

    /// Starts a family; `false` (and nothing written) when one of that name exists.
    fn family(&mut self, name: &str, kind: Kind, help: &str) -> bool {
        if !self.families.insert(name.to_owned()) {
            return false;
        }
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        true
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"");
                escape_label_value(&mut self.out, val);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value {
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Float(v) => write_float(&mut self.out, v),
        }
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: Value) {
        if self.family(name, kind, help) {
            self.sample(name, &[], value);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // Rust prints finite floats in plain decimal (never exponent form), which the format
        // accepts.
        let _ = write!(out, "{v}");
    }
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
    e.out
}

fn flag(b: bool) -> Value {
    Value::Int(u64::from(b))
}

fn control_families(e: &mut Exposition, c: &ControlSample) {
    use Kind::{Counter, Gauge};
    use Value::Int;
    e.single(
        "switchyard_control_current_generation",
        Gauge,
        "Generation compiled from the policy the control plane holds.",
        Int(c.current_generation),
    );
    e.single(
        "switchyard_control_published_generation",
        Gauge,
        "Newest generation the control plane published.",
        Int(c.published_generation),
    );
    e.single(
        "switchyard_control_live_generation",
        Gauge,
        "Generation every data-plane worker runs (0: none).",
        Int(c.live_generation),
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
        Int(c.counters.publishes),
    );
    e.single(
        "switchyard_control_rejects_total",
        Counter,
        "Published generations the data plane refused.",
        Int(c.counters.rejects),
    );
    e.single(
        "switchyard_control_reloads_total",
        Counter,
        "Policies loaded and applied (file change, SIGHUP, apply).",
        Int(c.counters.reloads),
    );
    e.single(
        "switchyard_control_reload_failures_total",
        Counter,
        "Policies refused by validation or compilation; nothing changed.",
        Int(c.counters.reload_failures),
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
        Int(c.counters.dataplane_restarts),
    );
    e.single(
        "switchyard_control_health_transitions_total",
        Counter,
        "Backends taken down or brought back up by their health checks.",
        Int(c.counters.health_transitions),
    );
    e.single(
        "switchyard_control_load_updates_total",
        Counter,
        "Load-driven table changes published (new effective weights or full bits).",
        Int(c.counters.load_updates),
    );
    if let Some(seconds) = c.last_publish_to_live_seconds {
        e.single(
            "switchyard_control_last_publish_to_live_seconds",
            Gauge,
            "Time from publishing the last live generation to every worker running it.",
            Value::Float(seconds),
        );
    }
    if let Some(l) = c.latency {
        let name = "switchyard_control_publish_to_live_seconds";
        if e.family(
            name,
            Kind::Summary,
            "Time from publishing a generation to every worker running it (quantiles over the \
             last 4096 publishes; 1 is the maximum).",
        ) {
            for (q, v) in [
                ("0.5", l.p50_seconds),
                ("0.99", l.p99_seconds),
                ("1", l.max_seconds),
            ] {
                e.sample(name, &[("quantile", q)], Value::Float(v));
            }
            e.sample(&format!("{name}_sum"), &[], Value::Float(l.sum_seconds));
            e.sample(&format!("{name}_count"), &[], Int(l.count));
        }
    }
}

fn dataplane_families(e: &mut Exposition, d: &DataplaneSample) {
    use Kind::{Counter, Gauge};
    use Value::Int;
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
        Int(d.pid),
    );
    e.single(
        "switchyard_dataplane_epoch",
        Gauge,
        "Data-plane starts on this segment.",
        Int(d.epoch),
    );
    e.single(
        "switchyard_dataplane_workers",
        Gauge,
        "Worker threads of the data plane.",
        Int(d.workers.len() as u64),
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
        if e.family(name, kind, help) {
            for (w, label) in d.workers.iter().zip(&labels) {
                e.sample(name, &[("worker", label)], Int(get(w)));
            }
        }
    }
    for (i, counter) in d.counter_names.iter().enumerate() {
        let Some(name) = dataplane_metric_name(counter) else {
            continue;
        };
        let help = format!("Data-plane counter `{counter}`, per worker.");
        if !e.family(&name, Counter, &help) {
            continue;
        }
        let milliseconds = counter.ends_with("_milliseconds");
        for (w, label) in d.counters.iter().zip(&labels) {
            if let Some(&v) = w.get(i) {
                #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
                let value = if milliseconds {
                    Value::Float(v as f64 / 1000.0)
                } else {
                    Int(v)
                };
                e.sample(&name, &[("worker", label)], value);
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
    use Value::{Float, Int};
    let mut e = Exposition::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split(' ').next() {
                e.families.insert(name.to_owned());
            }
        }
    }
    type Svc = super::stats::ServiceStats;
    let services: [RowFamily<Svc>; 3] = [
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
    ];
    for (name, kind, help, get) in services {
        if e.family(name, kind, help) {
            for v in &s.services {
                e.sample(name, &[("service", &v.name)], Int(get(v)));
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
        if e.family(name, kind, help) {
            for v in &s.pools {
                e.sample(name, &[("pool", &v.name)], Int(get(v)));
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
        if e.family(name, kind, help) {
            for v in &s.backends {
                e.sample(
                    name,
                    &[
                        ("pool", &v.pool),
                        ("backend", &v.backend),
                        ("address", &v.address),
                    ],
                    Int(get(v)),
                );
            }
        }
    }
    // Written even with no pool with `load` (then without samples), so dashboards find them.
    let name = "switchyard_backend_load_ratio";
    if e.family(
        name,
        Gauge,
        "Smoothed live load of the backend (1 = saturated), for pools with `load`.",
    ) {
        for v in &s.backends {
            if let Some(load) = v.load {
                let labels = [("pool", v.pool.as_str()), ("backend", v.backend.as_str())];
                e.sample(name, &labels, Float(load));
            }
        }
    }
    let name = "switchyard_backend_load_signal";
    if e.family(
        name,
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
                e.sample(name, &labels, Float(*value));
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
        if e.family(name, kind, help) {
            for p in &s.ports {
                e.sample(name, &[("port", &p.port.to_string())], Int(get(p)));
            }
        }
    }
    type WorkerFamily = (
        &'static str,
        &'static str,
        fn(&super::stats::WorkerStats) -> Value,
    );
    let workers: [WorkerFamily; 3] = [
        (
            "switchyard_dataplane_worker_busy_seconds_total",
            "Time the worker spent in polls that received packets.",
            |w| Float(seconds(w.busy_cycles, w.tsc_hz)),
        ),
        (
            "switchyard_dataplane_worker_idle_seconds_total",
            "Time the worker spent in polls that received nothing.",
            |w| Float(seconds(w.idle_cycles, w.tsc_hz)),
        ),
        (
            "switchyard_dataplane_worker_swaps_total",
            "Table generations the worker switched to since it started.",
            |w| Int(w.swaps),
        ),
    ];
    for (name, help, get) in workers {
        if e.family(name, Counter, help) {
            for w in &s.workers {
                e.sample(name, &[("worker", &w.worker.to_string())], get(w));
            }
        }
    }
    let name = "switchyard_dataplane_dropped_packets_total";
    if e.family(
        name,
        Counter,
        "Packets the data plane dropped, by reason (summed over workers; reasons with drops).",
    ) {
        for (reason, n) in &s.drops {
            e.sample(name, &[("reason", reason)], Int(*n));
        }
    }
    e.single(
        "switchyard_dataplane_untracked_packets_total",
        Counter,
        "Packets forwarded for services or backends beyond the telemetry rows (1024 services, \
         4096 backends per worker).",
        Int(s.untracked_packets),
    );
    body.push_str(&e.out);
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
    fn exposition_has_every_family_once_and_escapes() {
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

        let mut s = String::new();
        escape_label_value(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn no_dataplane_no_worker_series() {
        let text = render(&ControlSample::default(), &DataplaneSample::default());
        assert!(text.contains("switchyard_dataplane_up 0\n"));
        assert!(!text.contains("worker=\""));
        assert!(!text.contains("publish_to_live_seconds"));
    }
}
