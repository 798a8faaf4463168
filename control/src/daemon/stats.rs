//! Traffic statistics: the data plane's per-worker telemetry blocks (`switchyard_table::shm::
//! telemetry`) folded into totals per service, pool, backend and port, served as
//! `GET /v1/stats` (`switchyard-control show stats [--json]`) and in `/metrics`.
//!
//! The controller reads every worker's block a few times a second ([`Traffic::read`]) and adds
//! what each row grew by since the last read to the totals of the row's key (a service's name,
//! a backend's stable id), so totals keep growing across generation swaps, rows handed to
//! another key and data-plane restarts: a row whose key changed, or whose counts went down (a
//! new data plane), counts from zero. A pool's totals are the sums of its backends' (a backend
//! belongs to one pool: its id is keyed by pool and address), so the per-packet path counts
//! services and backends only.
//!
//! Top talkers ([`Talkers`]): each worker publishes the heaviest source prefixes of its last
//! window (about a second) from a sampled Space-Saving sketch (`dataplane/talkers.rs`); the
//! reader scales each worker's samples to packets by that window's packets per sample, turns
//! them into rates over the window's length, and adds the workers' rates up by prefix. A
//! prefix's `packets_per_second_min` adds up each worker's lower bound (samples less the
//! sketch's error bound, scaled: a bound before the sampling error); a worker that did not
//! list the prefix adds nothing to either figure. A worker's last whole window is kept when a
//! read is torn (it was preempted mid-publish), and left out once its number has not moved for
//! [`TALKER_WINDOW_STALE`]; with no data plane attached there are no top talkers.
//!
//! Active flows are a gauge: the sum over workers of each service's and each backend's flows in
//! the connection tables (closing TCP flows aside), refreshed by the workers about every 100 ms.
//! A flow entry records its backend and its service (the service's telemetry row), so a pool
//! serving several services still gives each its own figure.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use switchyard_table::generation::{name_str, Generation};
use switchyard_table::shm::layout::MAX_TELEMETRY_PORTS;
use switchyard_table::shm::telemetry::{service_key, RowCounts, SourcePrefix, TalkerWindow};
use switchyard_table::shm::Segment;

use super::view::PoolView;

/// Counts of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Flows of the service in the workers' connection tables (closing ones aside).
    #[serde(default)]
    pub active_flows: u64,
}

/// Counts of one pool: the sums of its backends'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub active_flows: u64,
}

/// Counts and state of one backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    pub pool: String,
    /// The backend's name in the policy, else its address.
    pub backend: String,
    pub address: String,
    pub id: u32,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub active_flows: u64,
    pub healthy: bool,
    /// `up`, `down` or `drained`.
    pub state: String,
    pub weight: u32,
    pub effective_weight: u32,
    /// Smoothed load (1.0 = saturated), for pools with `load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// The last scrape's signals, for pools with `load`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, f64>,
}

/// Traffic of one data-plane port (by its index in the data plane's port order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub port: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// One worker's generation, swaps and cycles (as the running data plane counted them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: u32,
    pub generation: u64,
    pub swaps: u64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub tsc_hz: u64,
}

impl WorkerStats {
    /// Busy share of the worker's polls, 0..=1.
    #[must_use]
    pub fn busy_ratio(&self) -> f64 {
        let total = self.busy_cycles.saturating_add(self.idle_cycles);
        if total == 0 {
            0.0
        } else {
            #[allow(clippy::cast_precision_loss)] // a ratio
            let r = self.busy_cycles as f64 / total as f64;
            r
        }
    }
}

/// One source prefix among the top talkers, over every worker's last window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TalkerStats {
    /// `ADDRESS/LENGTH`.
    pub prefix: String,
    /// Estimated packets per second (sampled counts scaled; an over-estimate by at most the
    /// sketch's error).
    pub packets_per_second: f64,
    /// The sketch's lower bound of that: samples less its error bound, scaled (before the
    /// sampling error; exact when every packet is sampled).
    pub packets_per_second_min: f64,
    pub bits_per_second: f64,
    /// Share of all the packets the workers received in their windows, 0..=1.
    pub share: f64,
    /// Workers that listed the prefix.
    pub workers: u32,
}

/// The top talkers merged over the workers (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Talkers {
    /// Packets per second the workers received over their last windows, all sources.
    pub packets_per_second: f64,
    /// Samples behind the figures (all workers' last windows).
    pub samples: u64,
    /// Mean packets per sample, and the prefix lengths sources are counted by.
    pub sample_every: u64,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Heaviest first; at most 32.
    pub top: Vec<TalkerStats>,
}

impl Talkers {
    /// Merges workers' windows: `(window, tsc_hz)` each.
    #[must_use]
    pub fn merge(windows: &[(TalkerWindow, u64)]) -> Self {
        #[allow(clippy::cast_precision_loss)] // rates
        let f = |n: u64| n as f64;
        let mut out = Self::default();
        let mut by_prefix: BTreeMap<SourcePrefix, TalkerStats> = BTreeMap::new();
        for (w, hz) in windows {
            if w.window_cycles == 0 || *hz == 0 {
                continue;
            }
            let seconds = f(w.window_cycles) / f(*hz);
            out.packets_per_second += f(w.packets) / seconds;
            out.samples = out.samples.saturating_add(w.samples);
            out.sample_every = w.sample_every;
            out.ipv4_prefix = w.ipv4_prefix;
            out.ipv6_prefix = w.ipv6_prefix;
            if w.samples == 0 {
                continue;
            }
            let per_sample = f(w.packets) / f(w.samples);
            for t in &w.talkers {
                let e = by_prefix.entry(t.prefix).or_insert_with(|| TalkerStats {
                    prefix: t.prefix.to_string(),
                    ..TalkerStats::default()
                });
                e.packets_per_second += f(t.samples) * per_sample / seconds;
                e.packets_per_second_min +=
                    f(t.samples.saturating_sub(t.error)) * per_sample / seconds;
                e.bits_per_second += f(t.bytes) * 8.0 * per_sample / seconds;
                e.workers += 1;
            }
        }
        let mut top: Vec<TalkerStats> = by_prefix.into_values().collect();
        for t in &mut top {
            if out.packets_per_second > 0.0 {
                t.share = (t.packets_per_second / out.packets_per_second).min(1.0);
            }
        }
        top.sort_by(|a, b| {
            b.packets_per_second
                .total_cmp(&a.packets_per_second)
                .then_with(|| a.prefix.cmp(&b.prefix))
        });
        top.truncate(switchyard_table::shm::layout::MAX_TALKERS);
        out.top = top;
        out
    }
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// Milliseconds since the Unix epoch when the counters were read.
    pub time_ms: u64,
    /// A data plane is attached.
    pub dataplane_up: bool,
    pub services: Vec<ServiceStats>,
    pub pools: Vec<PoolStats>,
    pub backends: Vec<BackendStats>,
    pub ports: Vec<PortStats>,
    pub workers: Vec<WorkerStats>,
    /// Packets dropped, by reason (the data plane's `drop_*` counters without the prefix),
    /// summed over workers; reasons with no drop are left out.
    pub drops: BTreeMap<String, u64>,
    /// Packets forwarded for a service or backend beyond the telemetry rows.
    pub untracked_packets: u64,
    /// The heaviest source prefixes of the workers' last windows.
    #[serde(default)]
    pub talkers: Talkers,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    packets: u64,
    bytes: u64,
    new_flows: u64,
}

impl Totals {
    fn add(&mut self, now: &RowCounts, before: Option<&RowCounts>) {
        let grew = |n: u64, b: u64| if n >= b { n - b } else { n };
        match before {
            Some(b) if b.key == now.key && now.packets >= b.packets => {
                self.packets += grew(now.packets, b.packets);
                self.bytes += grew(now.bytes, b.bytes);
                self.new_flows += grew(now.new_flows, b.new_flows);
            }
            _ => {
                self.packets += now.packets;
                self.bytes += now.bytes;
                self.new_flows += now.new_flows;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct PortTotals {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

/// Totals since the control plane started (see the module doc).
#[derive(Debug, Default)]
pub struct Traffic {
    /// The data-plane epoch the last rows were read from.
    epoch: u64,
    /// Last reading of each (worker, row).
    services_seen: HashMap<(u32, usize), RowCounts>,
    backends_seen: HashMap<(u32, usize), RowCounts>,
    ports_seen: HashMap<(u32, usize), switchyard_table::shm::telemetry::PortCounts>,
    /// Totals by service key and by backend id.
    services: HashMap<u64, Totals>,
    backends: HashMap<u32, Totals>,
    /// Active flows by backend id (the last reading).
    active: HashMap<u32, u64>,
    /// Active flows by service key (the last reading).
    service_active: HashMap<u64, u64>,
    ports: BTreeMap<usize, PortTotals>,
    workers: Vec<WorkerStats>,
    untracked: u64,
    untracked_seen: HashMap<u32, u64>,
    talkers: Talkers,
    /// Each worker's last top-talker window read whole, and when its number last moved.
    windows: HashMap<u32, (TalkerWindow, std::time::Instant)>,
}

/// A worker whose top-talker window has not moved for this long (it publishes one a second)
/// is left out of the merge: a hung or stopped worker's last rates are not current ones.
pub const TALKER_WINDOW_STALE: std::time::Duration = std::time::Duration::from_millis(2500);

impl Traffic {
    /// Reads every worker's block and adds what grew.
    pub fn read(&mut self, segment: &Segment, epoch: u64, workers: &[u32]) {
        if epoch != self.epoch {
            // A new data plane: its rows start from zero.
            self.epoch = epoch;
            self.services_seen.clear();
            self.backends_seen.clear();
            self.ports_seen.clear();
            self.untracked_seen.clear();
            self.windows.clear();
        }
        self.active.clear();
        self.service_active.clear();
        self.workers.clear();
        let mut windows = Vec::new();
        let now = std::time::Instant::now();
        for &w in workers {
            let Some(snap) = segment.telemetry(w as usize, MAX_TELEMETRY_PORTS) else {
                continue;
            };
            self.workers.push(WorkerStats {
                worker: w,
                generation: snap.generation,
                swaps: snap.swaps,
                busy_cycles: snap.busy_cycles,
                idle_cycles: snap.idle_cycles,
                tsc_hz: snap.tsc_hz,
            });
            // A torn read (the worker was preempted mid-publish) keeps the last whole window.
            if let Some(window) = segment.talkers(w as usize) {
                match self.windows.get_mut(&w) {
                    Some((last, _)) if last.window == window.window => {}
                    _ => {
                        self.windows.insert(w, (window, now));
                    }
                }
            }
            if let Some((window, moved)) = self.windows.get(&w) {
                if now.saturating_duration_since(*moved) <= TALKER_WINDOW_STALE {
                    windows.push((window.clone(), snap.tsc_hz));
                }
            }
            let before = self.untracked_seen.insert(w, snap.untracked_packets);
            self.untracked += match before {
                Some(b) if snap.untracked_packets >= b => snap.untracked_packets - b,
                _ => snap.untracked_packets,
            };
            for (row, now) in &snap.services {
                let before = self.services_seen.insert((w, *row), *now);
                self.services
                    .entry(now.key)
                    .or_default()
                    .add(now, before.as_ref());
                *self.service_active.entry(now.key).or_default() += now.active_flows;
            }
            for (row, now) in &snap.backends {
                let Ok(id) = u32::try_from(now.key) else {
                    continue;
                };
                let before = self.backends_seen.insert((w, *row), *now);
                self.backends
                    .entry(id)
                    .or_default()
                    .add(now, before.as_ref());
                *self.active.entry(id).or_default() += now.active_flows;
            }
            for (port, now) in snap.ports.iter().enumerate() {
                let before = self.ports_seen.insert((w, port), *now).unwrap_or_default();
                let grew = |n: u64, b: u64| if n >= b { n - b } else { n };
                let t = self.ports.entry(port).or_default();
                t.rx_packets += grew(now.rx_packets, before.rx_packets);
                t.rx_bytes += grew(now.rx_bytes, before.rx_bytes);
                t.tx_packets += grew(now.tx_packets, before.tx_packets);
                t.tx_bytes += grew(now.tx_bytes, before.tx_bytes);
            }
        }
        self.talkers = Talkers::merge(&windows);
    }

    /// The top talkers as last read.
    #[must_use]
    pub fn talkers(&self) -> &Talkers {
        &self.talkers
    }

    /// No data plane is attached: no current top talkers (the totals stay).
    pub fn dataplane_gone(&mut self) {
        self.talkers = Talkers::default();
        self.windows.clear();
    }

    /// The totals of the current policy's services, pools and backends (`pools` as `show`
    /// has them, with health, weights and load), the ports that carried traffic, and the
    /// drops by reason from the data plane's counters (`counters`: name and sum).
    #[must_use]
    pub fn view(
        &self,
        generation: &Generation,
        pools: &[PoolView],
        counters: &[(String, u64)],
        dataplane_up: bool,
    ) -> StatsView {
        let services = generation
            .services
            .iter()
            .map(|s| {
                let name = name_str(&s.name).to_owned();
                let key = service_key(&name);
                let t = self.services.get(&key).copied().unwrap_or_default();
                ServiceStats {
                    name,
                    packets: t.packets,
                    bytes: t.bytes,
                    new_flows: t.new_flows,
                    active_flows: self.service_active.get(&key).copied().unwrap_or(0),
                }
            })
            .collect();
        let mut pool_stats = Vec::new();
        let mut backends = Vec::new();
        for p in pools {
            let mut ps = PoolStats {
                name: p.name.clone(),
                ..PoolStats::default()
            };
            for b in &p.backends {
                let t = self.backends.get(&b.id).copied().unwrap_or_default();
                let active = self.active.get(&b.id).copied().unwrap_or(0);
                ps.packets += t.packets;
                ps.bytes += t.bytes;
                ps.new_flows += t.new_flows;
                ps.active_flows += active;
                backends.push(BackendStats {
                    pool: p.name.clone(),
                    backend: b.name.clone().unwrap_or_else(|| b.address.clone()),
                    address: b.address.clone(),
                    id: b.id,
                    packets: t.packets,
                    bytes: t.bytes,
                    new_flows: t.new_flows,
                    active_flows: active,
                    healthy: b.healthy,
                    state: b.state.clone(),
                    weight: b.weight,
                    effective_weight: b.effective_weight,
                    load: b.load.as_ref().and_then(|l| l.load),
                    signals: b
                        .load
                        .as_ref()
                        .map(|l| l.signals.clone())
                        .unwrap_or_default(),
                });
            }
            pool_stats.push(ps);
        }
        let ports = self
            .ports
            .iter()
            .filter(|(_, t)| t.rx_packets + t.tx_packets > 0)
            .map(|(&port, t)| PortStats {
                port: u32::try_from(port).unwrap_or(u32::MAX),
                rx_packets: t.rx_packets,
                rx_bytes: t.rx_bytes,
                tx_packets: t.tx_packets,
                tx_bytes: t.tx_bytes,
            })
            .collect();
        let drops = counters
            .iter()
            .filter_map(|(name, v)| {
                let reason = name.strip_prefix("drop_")?;
                (*v > 0).then(|| (reason.to_owned(), *v))
            })
            .collect();
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        StatsView {
            time_ms,
            dataplane_up,
            services,
            pools: pool_stats,
            backends,
            ports,
            workers: self.workers.clone(),
            drops,
            untracked_packets: self.untracked,
            talkers: self.talkers.clone(),
        }
    }
}

/// One service's or pool's line: name, packets, bytes, new flows, active flows.
type TrafficLine<'a> = (&'a str, u64, u64, u64, u64);

/// A `SERVICE` or `POOL` table of `show stats`.
fn traffic_table<'a>(out: &mut String, title: &str, lines: impl Iterator<Item = TrafficLine<'a>>) {
    let _ = writeln!(
        out,
        "\n{title:<20}     PACKETS            BYTES   NEW FLOWS      ACTIVE"
    );
    for (name, packets, bytes, new_flows, active) in lines {
        let _ = writeln!(
            out,
            "{name:<20} {packets:>11} {bytes:>16} {new_flows:>11} {active:>11}"
        );
    }
}

/// `show stats` as text tables.
#[must_use]
pub fn render(s: &StatsView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "data plane: {}",
        if s.dataplane_up { "up" } else { "not attached" }
    );
    traffic_table(
        &mut out,
        "SERVICE",
        s.services.iter().map(|v| {
            (
                v.name.as_str(),
                v.packets,
                v.bytes,
                v.new_flows,
                v.active_flows,
            )
        }),
    );
    traffic_table(
        &mut out,
        "POOL",
        s.pools.iter().map(|v| {
            (
                v.name.as_str(),
                v.packets,
                v.bytes,
                v.new_flows,
                v.active_flows,
            )
        }),
    );
    let _ = writeln!(
        out,
        "\nPOOL/BACKEND                      PACKETS            BYTES   NEW FLOWS      ACTIVE  STATE    WEIGHT"
    );
    for v in &s.backends {
        let _ = writeln!(
            out,
            "{:<29} {:>11} {:>16} {:>11} {:>11}  {:<8} {:>6}",
            format!("{}/{}", v.pool, v.backend),
            v.packets,
            v.bytes,
            v.new_flows,
            v.active_flows,
            v.state,
            v.effective_weight
        );
    }
    if !s.ports.is_empty() {
        let _ = writeln!(
            out,
            "\nPORT      RX PACKETS         RX BYTES   TX PACKETS         TX BYTES"
        );
        for p in &s.ports {
            let _ = writeln!(
                out,
                "{:<4} {:>15} {:>16} {:>12} {:>16}",
                p.port, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes
            );
        }
    }
    if !s.workers.is_empty() {
        let _ = writeln!(out, "\nWORKER  GENERATION   SWAPS   BUSY");
        for w in &s.workers {
            let _ = writeln!(
                out,
                "{:<7} {:>10} {:>7} {:>5.1}%",
                w.worker,
                w.generation,
                w.swaps,
                w.busy_ratio() * 100.0
            );
        }
    }
    if !s.drops.is_empty() {
        let _ = writeln!(out, "\nDROP REASON                          PACKETS");
        for (reason, n) in &s.drops {
            let _ = writeln!(out, "{reason:<32} {n:>11}");
        }
    }
    if !s.talkers.top.is_empty() {
        let t = &s.talkers;
        let _ = writeln!(
            out,
            "\nTOP TALKERS (by /{} and /{}, 1 in {} packets sampled; {:.0} packets/s in all)",
            t.ipv4_prefix, t.ipv6_prefix, t.sample_every, t.packets_per_second
        );
        let _ = writeln!(
            out,
            "SOURCE PREFIX                   PACKETS/S    (AT LEAST)       BITS/S   SHARE"
        );
        for v in &t.top {
            let _ = writeln!(
                out,
                "{:<28} {:>12.0} {:>13.0} {:>12} {:>6.1}%",
                v.prefix,
                v.packets_per_second,
                v.packets_per_second_min,
                super::top::si(v.bits_per_second),
                v.share * 100.0
            );
        }
    }
    if s.untracked_packets > 0 {
        let _ = writeln!(
            out,
            "\n{} packets of services or backends beyond the telemetry rows",
            s.untracked_packets
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_table::shm::telemetry::Talker;

    fn window(
        cycles: u64,
        packets: u64,
        samples: u64,
        talkers: &[(&str, u64, u64)],
    ) -> TalkerWindow {
        TalkerWindow {
            window: 1,
            window_cycles: cycles,
            packets,
            samples,
            non_ip: 0,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            sample_every: 4,
            talkers: talkers
                .iter()
                .map(|&(p, samples, error)| {
                    let (a, _) = p.split_once('/').unwrap();
                    Talker {
                        prefix: match a.parse().unwrap() {
                            std::net::IpAddr::V4(a) => SourcePrefix::V4(a, 24),
                            std::net::IpAddr::V6(a) => SourcePrefix::V6(a, 48),
                        },
                        samples,
                        error,
                        bytes: samples * 100,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn talkers_merge_scales_samples_to_rates_and_adds_workers_up() {
        // Worker 0: a 1 s window (hz 1000), 4000 packets, 1000 samples (4 per sample).
        // Worker 1: a 2 s window, 2000 packets, 1000 samples (2 per sample).
        let w0 = window(
            1000,
            4000,
            1000,
            &[("10.0.0.0/24", 500, 0), ("2001:db8::/48", 100, 20)],
        );
        let w1 = window(2000, 2000, 1000, &[("10.0.0.0/24", 200, 50)]);
        let t = Talkers::merge(&[(w0, 1000), (w1, 1000)]);
        assert!((t.packets_per_second - 5000.0).abs() < 1e-9);
        assert_eq!(t.samples, 2000);
        let a = &t.top[0];
        assert_eq!(a.prefix, "10.0.0.0/24");
        // 500 × 4 / 1 s + 200 × 2 / 2 s; at least 500 × 4 + 150 × 2 / 2.
        assert!((a.packets_per_second - 2200.0).abs() < 1e-9, "{a:?}");
        assert!((a.packets_per_second_min - 2150.0).abs() < 1e-9, "{a:?}");
        assert!((a.bits_per_second - 2200.0 * 800.0).abs() < 1e-6, "{a:?}");
        assert!((a.share - 0.44).abs() < 1e-9);
        assert_eq!(a.workers, 2);
        let b = &t.top[1];
        assert_eq!((b.prefix.as_str(), b.workers), ("2001:db8::/48", 1));
        assert!((b.packets_per_second - 400.0).abs() < 1e-9);
        assert!((b.packets_per_second_min - 320.0).abs() < 1e-9);
        // Nothing published, a zero-length window or no samples: no figures, no division by 0.
        assert_eq!(Talkers::merge(&[]), Talkers::default());
        let empty = Talkers::merge(&[(window(0, 10, 0, &[("10.0.0.0/24", 1, 0)]), 1000)]);
        assert!(empty.top.is_empty());
        let unsampled = Talkers::merge(&[(window(1000, 10, 0, &[]), 0)]);
        assert!(unsampled.top.is_empty() && unsampled.packets_per_second == 0.0);
    }
}
