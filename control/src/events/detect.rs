//! Detection over the data plane's counters, each finding an event with its evidence.
//!
//! The controller hands [`Detector::observe`] the counter rows it reads from the segment (one
//! per worker) every `detection.interval`. Rates are deltas over the time between two readings.
//!
//! - **Flood mode** (`flood_entered`, `flood_left`): a worker's `flow_flood_entered` or
//!   `flow_flood_left` went up since the last reading. Evidence: the counts, and the new flows
//!   the worker forwarded statelessly because of it (`flow_flood_stateless`) in the interval.
//! - **New-flow spike** (`new_flow_spike`), per worker: new-flow attempts per second — the
//!   connection table's misses (`flow_misses`: SYNs, and packets of flows it does not hold) —
//!   against that worker's own baseline, an exponential moving average with time constant
//!   `baseline`. A spike is a rate at least `min_rate` and above `factor ×` the baseline, once
//!   the baseline has learnt for `warmup`; it is reported once when it starts, and the baseline
//!   does not learn from it (an attack does not become the norm) until the rate falls back.
//!   The same check runs per service ([`Detector::observe_services`]) on each service's new
//!   flows, summed over workers from the data plane's per-service telemetry rows.
//! - **Sustained drops** (`acl_drops_sustained`, `rate_limit_drops_sustained`): `drop_acl` or
//!   `drop_rate_limited`, summed over workers, at or above `rate` per second at every reading
//!   for `for`; reported once per episode, again after the rate has dropped below.
//!
//! - **Top talker** (`top_talker`): one source prefix with at least `share` of the packets the
//!   workers received and at least `min_rate` packets per second, in the merged top talkers
//!   (`daemon::stats::Talkers`, from the workers' sampled sketches) at every reading for `for`;
//!   reported once per episode per prefix, again after it fell below. Evidence: its estimated
//!   and lower-bound rates, bits per second, share, the total rate, samples and thresholds.
//!
//! A counter that goes down means the data plane restarted: every baseline starts again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::config::{DetectionConfig, SpikeConfig, SustainedConfig};
use super::{Event, Kind};
use crate::daemon::stats::Talkers;

/// Per-worker learning state of the spike detector.
#[derive(Debug, Clone)]
struct Baseline {
    rate: f64,
    since: Instant,
    in_spike: bool,
}

#[derive(Debug, Clone, Default)]
struct Sustained {
    since: Option<Instant>,
    reported: bool,
}

/// Counter indices by name for the row layout last seen.
#[derive(Debug, Clone, Default)]
struct Columns {
    names: Vec<String>,
    misses: Option<usize>,
    flood_entered: Option<usize>,
    flood_left: Option<usize>,
    flood_stateless: Option<usize>,
    acl: Option<usize>,
    rate_limited: Option<usize>,
}

impl Columns {
    fn new(names: &[String]) -> Self {
        let find = |n: &str| names.iter().position(|x| x == n);
        Self {
            names: names.to_vec(),
            misses: find("flow_misses"),
            flood_entered: find("flow_flood_entered"),
            flood_left: find("flow_flood_left"),
            flood_stateless: find("flow_flood_stateless"),
            acl: find("drop_acl"),
            rate_limited: find("drop_rate_limited"),
        }
    }
}

#[derive(Debug)]
pub struct Detector {
    config: DetectionConfig,
    columns: Columns,
    last: Option<(Instant, BTreeMap<u32, Vec<u64>>)>,
    baselines: BTreeMap<u32, Baseline>,
    /// Per-service new flows (summed over workers) at the last reading.
    last_services: Option<(Instant, BTreeMap<String, u64>)>,
    service_baselines: BTreeMap<String, Baseline>,
    acl: Sustained,
    rate_limited: Sustained,
    /// Top-talker episodes by prefix (only prefixes over the thresholds are kept).
    talkers: BTreeMap<String, Sustained>,
    next: Option<Instant>,
}

fn get(row: &[u64], column: Option<usize>) -> u64 {
    column.and_then(|c| row.get(c).copied()).unwrap_or(0)
}

#[allow(clippy::cast_precision_loss)] // counts per interval, far below 2^52
fn per_second(delta: u64, dt: f64) -> f64 {
    delta as f64 / dt
}

impl Detector {
    #[must_use]
    pub fn new(config: DetectionConfig) -> Self {
        Self {
            config,
            columns: Columns::default(),
            last: None,
            baselines: BTreeMap::new(),
            last_services: None,
            service_baselines: BTreeMap::new(),
            acl: Sustained::default(),
            rate_limited: Sustained::default(),
            talkers: BTreeMap::new(),
            next: None,
        }
    }

    /// Whether a reading is due at `now` (every `interval`).
    #[must_use]
    pub fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(t) if now < t => false,
            _ => {
                self.next = Some(now + self.config.interval);
                true
            }
        }
    }

    /// Forgets every reading (the data plane went away).
    pub fn reset(&mut self) {
        self.last = None;
        self.baselines.clear();
        self.last_services = None;
        self.service_baselines.clear();
        self.acl = Sustained::default();
        self.rate_limited = Sustained::default();
        self.talkers.clear();
    }

    /// Checks the merged top talkers (see the module doc).
    pub fn observe_talkers(&mut self, now: Instant, talkers: &Talkers) -> Vec<Event> {
        let Some(cfg) = self.config.top_talkers.clone() else {
            return Vec::new();
        };
        let over: Vec<_> = talkers
            .top
            .iter()
            .filter(|t| t.share >= cfg.share && t.packets_per_second >= cfg.min_rate)
            .collect();
        self.talkers
            .retain(|prefix, _| over.iter().any(|t| &t.prefix == prefix));
        let mut events = Vec::new();
        for t in over {
            let state = self.talkers.entry(t.prefix.clone()).or_default();
            let since = *state.since.get_or_insert(now);
            let held = now.saturating_duration_since(since);
            if held < cfg.sustain || state.reported {
                continue;
            }
            state.reported = true;
            let (address, length) = t.prefix.split_once('/').unwrap_or((&t.prefix, ""));
            let mut event = Event::new(
                Kind::TopTalker,
                format!(
                    "source {}/{length}: {:.0} packets/s, {:.0}% of all, for {:.1} s",
                    address,
                    t.packets_per_second,
                    t.share * 100.0,
                    held.as_secs_f64()
                ),
            )
            .evidence("packets_per_second", t.packets_per_second)
            .evidence("packets_per_second_min", t.packets_per_second_min)
            .evidence("bits_per_second", t.bits_per_second)
            .evidence("share", t.share)
            .evidence("total_packets_per_second", talkers.packets_per_second)
            .evidence("workers", f64::from(t.workers))
            .evidence("threshold_share", cfg.share)
            .evidence("min_rate", cfg.min_rate)
            .evidence("held_seconds", held.as_secs_f64());
            #[allow(clippy::cast_precision_loss)] // a sample count
            {
                event = event.evidence("samples", talkers.samples as f64);
            }
            if let Ok(address) = address.parse() {
                event = event.client(address);
            }
            if let Ok(len) = length.parse::<u8>() {
                event = event.evidence("prefix_length", f64::from(len));
            }
            events.push(event);
        }
        events
    }

    /// Compares a reading (counter names, and per worker its row) with the last one and
    /// returns the findings.
    pub fn observe(
        &mut self,
        now: Instant,
        names: &[String],
        rows: &[(u32, Vec<u64>)],
    ) -> Vec<Event> {
        if names != self.columns.names.as_slice() {
            self.columns = Columns::new(names);
            self.reset();
        }
        let current: BTreeMap<u32, Vec<u64>> = rows.iter().cloned().collect();
        let Some((then, previous)) = self.last.replace((now, current.clone())) else {
            return Vec::new();
        };
        let dt = now.saturating_duration_since(then).as_secs_f64();
        if dt <= 0.0 {
            return Vec::new();
        }
        let restarted = current.iter().any(|(w, row)| {
            previous
                .get(w)
                .is_some_and(|old| row.iter().zip(old).any(|(n, o)| n < o))
        });
        if restarted {
            self.baselines.clear();
            self.acl = Sustained::default();
            self.rate_limited = Sustained::default();
            return Vec::new();
        }
        let c = self.columns.clone();
        let mut events = Vec::new();
        let mut acl_total = 0;
        let mut limited_total = 0;
        for (&worker, row) in &current {
            let Some(old) = previous.get(&worker) else {
                continue;
            };
            let delta = |col| get(row, col).saturating_sub(get(old, col));
            acl_total += delta(c.acl);
            limited_total += delta(c.rate_limited);
            let entered = delta(c.flood_entered);
            let left = delta(c.flood_left);
            let stateless = delta(c.flood_stateless);
            if entered > 0 {
                events.push(
                    Event::new(
                        Kind::FloodEntered,
                        format!("worker {worker}: connection table entered flood mode"),
                    )
                    .worker(worker)
                    .evidence("flood_entered", entered as f64)
                    .evidence("flood_entered_total", get(row, c.flood_entered) as f64)
                    .evidence("flood_stateless_per_second", per_second(stateless, dt))
                    .evidence("new_flows_per_second", per_second(delta(c.misses), dt)),
                );
            }
            if left > 0 {
                events.push(
                    Event::new(
                        Kind::FloodLeft,
                        format!("worker {worker}: connection table left flood mode"),
                    )
                    .worker(worker)
                    .evidence("flood_left", left as f64)
                    .evidence("flood_left_total", get(row, c.flood_left) as f64),
                );
            }
            if let Some(spike) = self.spike(worker, now, dt, per_second(delta(c.misses), dt)) {
                events.push(spike);
            }
        }
        if let Some(cfg) = self.config.acl_drops.clone() {
            if let Some(e) = sustained(
                &mut self.acl,
                &cfg,
                now,
                per_second(acl_total, dt),
                Kind::AclDropsSustained,
                "ACL drops",
            ) {
                events.push(e);
            }
        }
        if let Some(cfg) = self.config.rate_limit_drops.clone() {
            if let Some(e) = sustained(
                &mut self.rate_limited,
                &cfg,
                now,
                per_second(limited_total, dt),
                Kind::RateLimitDropsSustained,
                "per-source rate-limit drops",
            ) {
                events.push(e);
            }
        }
        events
    }

    fn spike(&mut self, worker: u32, now: Instant, dt: f64, rate: f64) -> Option<Event> {
        let cfg = self.config.new_flow_spike.clone()?;
        let b = self.baselines.entry(worker).or_insert(Baseline {
            rate,
            since: now,
            in_spike: false,
        });
        spike(b, &cfg, &format!("worker {worker}"), now, dt, rate).map(|e| e.worker(worker))
    }

    /// Compares per-service new flows (each service's total over every worker, from the
    /// data plane's telemetry rows) with the last reading: a spike per service against that
    /// service's own baseline, as for workers. A total that went down (a row reassigned, a
    /// data-plane restart) restarts that service's baseline.
    pub fn observe_services(&mut self, now: Instant, totals: BTreeMap<String, u64>) -> Vec<Event> {
        let Some(cfg) = self.config.new_flow_spike.clone() else {
            return Vec::new();
        };
        let Some((then, previous)) = self.last_services.replace((now, totals.clone())) else {
            return Vec::new();
        };
        let dt = now.saturating_duration_since(then).as_secs_f64();
        if dt <= 0.0 {
            return Vec::new();
        }
        self.service_baselines
            .retain(|name, _| totals.contains_key(name));
        let mut events = Vec::new();
        for (name, total) in totals {
            let Some(old) = previous.get(&name).copied() else {
                continue;
            };
            if total < old {
                self.service_baselines.remove(&name);
                continue;
            }
            let rate = per_second(total - old, dt);
            let b = self
                .service_baselines
                .entry(name.clone())
                .or_insert(Baseline {
                    rate,
                    since: now,
                    in_spike: false,
                });
            if let Some(e) = spike(b, &cfg, &format!("service {name}"), now, dt, rate) {
                events.push(e.service(name));
            }
        }
        events
    }
}

/// One spike check against a baseline; see the module documentation.
fn spike(
    b: &mut Baseline,
    cfg: &SpikeConfig,
    subject: &str,
    now: Instant,
    dt: f64,
    rate: f64,
) -> Option<Event> {
    let learnt = now.saturating_duration_since(b.since) >= cfg.warmup;
    let spiking = learnt && rate >= cfg.min_rate && rate > cfg.factor * b.rate;
    let mut event = None;
    if spiking && !b.in_spike {
        event = Some(
            Event::new(
                Kind::NewFlowSpike,
                format!(
                    "{subject}: {rate:.0} new flows/s, {:.1}× its baseline of {:.1}/s",
                    rate / b.rate.max(f64::MIN_POSITIVE),
                    b.rate
                ),
            )
            .evidence("new_flows_per_second", rate)
            .evidence("baseline_per_second", b.rate)
            .evidence("factor", cfg.factor)
            .evidence("min_rate", cfg.min_rate)
            .evidence("interval_seconds", dt),
        );
    }
    b.in_spike = spiking;
    if !spiking {
        let alpha = (dt / cfg.baseline.as_secs_f64().max(1e-3)).min(1.0);
        b.rate += alpha * (rate - b.rate);
    }
    event
}

fn sustained(
    state: &mut Sustained,
    cfg: &SustainedConfig,
    now: Instant,
    rate: f64,
    kind: Kind,
    what: &str,
) -> Option<Event> {
    if rate < cfg.rate {
        *state = Sustained::default();
        return None;
    }
    let since = *state.since.get_or_insert(now);
    let held = now.saturating_duration_since(since);
    if held < cfg.sustain || state.reported {
        return None;
    }
    state.reported = true;
    Some(
        Event::new(
            kind,
            format!(
                "{what}: {rate:.0}/s, at or above {:.0}/s for {:.1} s",
                cfg.rate,
                held.as_secs_f64()
            ),
        )
        .evidence("drops_per_second", rate)
        .evidence("threshold_per_second", cfg.rate)
        .evidence("held_seconds", held.as_secs_f64())
        .evidence("required_seconds", cfg.sustain.as_secs_f64()),
    )
}

/// The reading interval the controller should use when no detector is configured.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "flow_misses",
            "flow_flood_entered",
            "flow_flood_left",
            "flow_flood_stateless",
            "drop_acl",
            "drop_rate_limited",
        ]
        .map(String::from)
        .to_vec()
    }

    fn config() -> DetectionConfig {
        DetectionConfig {
            interval: Duration::from_secs(1),
            new_flow_spike: Some(SpikeConfig {
                factor: 3.0,
                min_rate: 100.0,
                warmup: Duration::from_secs(5),
                baseline: Duration::from_secs(10),
            }),
            acl_drops: Some(SustainedConfig {
                rate: 50.0,
                sustain: Duration::from_secs(3),
            }),
            rate_limit_drops: None,
            top_talkers: Some(super::super::config::TalkerConfig {
                share: 0.5,
                min_rate: 1000.0,
                sustain: Duration::from_secs(3),
            }),
        }
    }

    fn talkers(total: f64, top: &[(&str, f64)]) -> Talkers {
        Talkers {
            packets_per_second: total,
            samples: 100,
            sample_every: 64,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            top: top
                .iter()
                .map(|&(prefix, pps)| crate::daemon::stats::TalkerStats {
                    prefix: prefix.to_owned(),
                    packets_per_second: pps,
                    packets_per_second_min: pps * 0.9,
                    bits_per_second: pps * 800.0,
                    share: pps / total,
                    workers: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn a_sustained_top_talker_is_reported_once_per_episode_with_evidence() {
        let mut d = Detector::new(config());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let heavy = talkers(
            4000.0,
            &[("198.51.100.0/24", 3000.0), ("10.0.0.0/24", 1000.0)],
        );
        // Under the share (0.4 < 0.5), or under the rate (600/s): nothing, ever.
        let light = talkers(4000.0, &[("198.51.100.0/24", 1600.0)]);
        let slow = talkers(800.0, &[("198.51.100.0/24", 600.0)]);
        for s in 0..10 {
            assert!(d.observe_talkers(at(s), &light).is_empty());
            assert!(d.observe_talkers(at(s), &slow).is_empty());
        }
        // Over both from second 10: reported when held for 3 s, once.
        let mut reported = Vec::new();
        for s in 10..20 {
            for e in d.observe_talkers(at(s), &heavy) {
                reported.push((s, e));
            }
        }
        assert_eq!(reported.len(), 1, "{reported:?}");
        let (s, e) = &reported[0];
        assert_eq!(*s, 13);
        assert_eq!(e.kind, Kind::TopTalker);
        assert_eq!(e.client.as_deref(), Some("198.51.100.0"));
        assert!(e.message.contains("198.51.100.0/24"), "{}", e.message);
        assert_eq!(e.evidence["packets_per_second"], 3000.0);
        assert_eq!(e.evidence["packets_per_second_min"], 2700.0);
        assert_eq!(e.evidence["share"], 0.75);
        assert_eq!(e.evidence["total_packets_per_second"], 4000.0);
        assert_eq!(e.evidence["prefix_length"], 24.0);
        assert_eq!(e.evidence["held_seconds"], 3.0);
        // It falls below, then comes back: a new episode, reported again after 3 s.
        assert!(d.observe_talkers(at(20), &light).is_empty());
        let again: Vec<u64> = (21..30)
            .filter(|&s| !d.observe_talkers(at(s), &heavy).is_empty())
            .collect();
        assert_eq!(again, vec![24]);
    }

    /// Feeds one reading per second with per-second deltas `(misses, acl)`; returns the
    /// kinds reported at each second.
    fn run(d: &mut Detector, steps: &[(u64, u64)]) -> Vec<Vec<Kind>> {
        let t0 = Instant::now();
        let (mut misses, mut acl) = (0, 0);
        let mut out = Vec::new();
        let _ = d.observe(t0, &names(), &[(0, vec![0; 6])]);
        for (i, (m, a)) in steps.iter().enumerate() {
            misses += m;
            acl += a;
            let t = t0 + Duration::from_secs(i as u64 + 1);
            let events = d.observe(t, &names(), &[(0, vec![misses, 0, 0, 0, acl, 0])]);
            out.push(events.iter().map(|e| e.kind).collect());
        }
        out
    }

    #[test]
    fn spike_against_its_own_baseline_once_and_not_learnt() {
        let mut d = Detector::new(config());
        let mut steps = vec![(100, 0); 10];
        steps.extend([(1000, 0), (1200, 0), (1100, 0), (100, 0), (1000, 0)]);
        let kinds = run(&mut d, &steps);
        assert!(kinds[..10].iter().all(Vec::is_empty), "{kinds:?}");
        assert_eq!(kinds[10], vec![Kind::NewFlowSpike]);
        assert!(
            kinds[11].is_empty() && kinds[12].is_empty(),
            "reported once: {kinds:?}"
        );
        // The baseline did not learn the spike: the next burst is a spike again.
        assert_eq!(kinds[14], vec![Kind::NewFlowSpike], "{kinds:?}");
        let b = d.baselines[&0].rate;
        assert!((90.0..110.0).contains(&b), "baseline {b}");
    }

    #[test]
    fn no_spike_during_warmup_or_below_min_rate() {
        let mut d = Detector::new(config());
        // Warm-up: a jump at second 2 is not reported; a tripling of a tiny rate neither.
        let kinds = run(
            &mut d,
            &[
                (10, 0),
                (500, 0),
                (10, 0),
                (10, 0),
                (10, 0),
                (10, 0),
                (10, 0),
                (60, 0),
            ],
        );
        assert!(kinds.iter().all(Vec::is_empty), "{kinds:?}");
    }

    #[test]
    fn sustained_acl_drops_need_the_whole_time() {
        let mut d = Detector::new(config());
        let kinds = run(
            &mut d,
            &[
                (0, 60),
                (0, 60),
                (0, 60),
                (0, 10),
                (0, 60),
                (0, 60),
                (0, 60),
                (0, 60),
                (0, 60),
            ],
        );
        let when: Vec<usize> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| k.contains(&Kind::AclDropsSustained))
            .map(|(i, _)| i)
            .collect();
        // 3 s at rate after second 4 (index 4 starts the episode, index 7 is 3 s later).
        assert_eq!(when, vec![7], "{kinds:?}");
    }

    #[test]
    fn per_service_spikes_against_each_services_own_baseline() {
        let mut d = Detector::new(config());
        let t0 = Instant::now();
        let mut totals = BTreeMap::from([("chat".to_owned(), 0u64), ("image".to_owned(), 0)]);
        let mut spikes = Vec::new();
        for i in 1..=12u64 {
            // chat: 150/s throughout; image: 50/s, then 600/s at second 10.
            *totals.get_mut("chat").unwrap() += 150;
            *totals.get_mut("image").unwrap() += if i == 10 { 600 } else { 50 };
            let t = t0 + Duration::from_secs(i);
            for e in d.observe_services(t, totals.clone()) {
                spikes.push((
                    i,
                    e.service.clone().unwrap(),
                    e.evidence["new_flows_per_second"],
                ));
            }
        }
        assert_eq!(spikes, vec![(10, "image".to_owned(), 600.0)]);
    }

    #[test]
    fn flood_counters_become_events_and_restart_resets() {
        let mut d = Detector::new(config());
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert!(d.observe(t0, &names(), &[(2, vec![0; 6])]).is_empty());
        let e = d.observe(t0 + s, &names(), &[(2, vec![5000, 1, 0, 4000, 0, 0])]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, Kind::FloodEntered);
        assert_eq!(e[0].worker, Some(2));
        assert_eq!(e[0].evidence["flood_stateless_per_second"], 4000.0);
        let e = d.observe(t0 + 2 * s, &names(), &[(2, vec![5000, 1, 1, 4000, 0, 0])]);
        assert_eq!(
            e.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![Kind::FloodLeft]
        );
        // A data-plane restart: counters fall, nothing is reported.
        assert!(d
            .observe(t0 + 3 * s, &names(), &[(2, vec![0, 0, 0, 0, 0, 0])])
            .is_empty());
    }
}
