//! `pools:` (scheduler, health, load, backends) and `tables:`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::super::error::Position;
use super::super::model::{
    AdminState, Backend, FlowTimeouts, HealthCheck, LoadFeedback, Percent, Pool, Probe, RegionId,
    Scheduler, SchedulerKind, Tables, DEFAULT_BACKEND_WEIGHT, DEFAULT_MAGLEV_SIZE,
    KNOWN_SATURATION, MAX_MAGLEV_SIZE,
};
use super::super::raw::{RawBackend, RawFlowTimeouts, RawHealth, RawLoad, RawPool, RawTables};
use super::super::values::{
    check_http_path, is_metric_name, is_prime, neighbouring_primes, parse_duration, parse_ip,
    parse_percent, special_address,
};
use super::interfaces::Links;
use super::{
    show_duration, NameIndex, Validator, DEFAULT_EXPECT_STATUS, DEFAULT_FALL, DEFAULT_FULL_AT,
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT, DEFAULT_HTTP_PATH, DEFAULT_LOAD_DEAD_BAND,
    DEFAULT_LOAD_INTERVAL, DEFAULT_LOAD_SMOOTHING, DEFAULT_METRICS_PATH,
    DEFAULT_MIN_REBUILD_INTERVAL, DEFAULT_RISE, FLOW_TIMEOUT_RANGE, HEALTH_INTERVAL_RANGE,
    LOAD_INTERVAL_RANGE, LOAD_TIMING_RANGE, MAX_RISE_FALL,
};

impl Validator {
    pub(super) fn maglev_size(&mut self, node: &Spanned<i64>, path: &str) -> Option<u32> {
        let size = node.value;
        let max = i64::from(MAX_MAGLEV_SIZE);
        if size < 2 || size > max {
            self.error_at(
                node,
                path,
                format!("maglev_size {size} is out of range 2..={max}"),
            );
            return None;
        }
        let size = u64::try_from(size).ok()?;
        if !is_prime(size) {
            let (below, above) = neighbouring_primes(size);
            let hint = match below {
                Some(below) => format!("; the nearest primes are {below} and {above}"),
                None => format!("; the next prime is {above}"),
            };
            self.error_at(
                node,
                path,
                format!("maglev_size {size} is not prime (Maglev tables need a prime size){hint}"),
            );
            return None;
        }
        u32::try_from(size).ok()
    }

    pub(super) fn tables(&mut self, raw: Option<&Spanned<RawTables>>) -> Tables {
        let mut tables = Tables {
            maglev_size: DEFAULT_MAGLEV_SIZE,
        };
        let Some(raw) = raw else {
            return tables;
        };
        if let Some(node) = &raw.value.flows_per_worker {
            self.error_at(
                node,
                "tables.flows_per_worker",
                "the connection table is not a policy setting: the data plane allocates it when it \
                 starts, sized by its appliance settings (`flow_table.ipv4_flows` and \
                 `flow_table.ipv6_flows` in the file given to `switchyard-dataplane --config`, \
                 docs/APPLIANCE.md); remove `flows_per_worker` from the policy",
            );
        }
        if let Some(node) = &raw.value.maglev_size {
            if let Some(size) = self.maglev_size(node, "tables.maglev_size") {
                tables.maglev_size = size;
            }
        }
        tables
    }

    /// `flow_timeouts:`: each a whole number of seconds in [`FLOW_TIMEOUT_RANGE`].
    pub(super) fn flow_timeouts(&mut self, raw: Option<&Spanned<RawFlowTimeouts>>) -> FlowTimeouts {
        let mut timeouts = FlowTimeouts::default();
        let Some(raw) = raw else {
            return timeouts;
        };
        let raw = &raw.value;
        for (node, key, slot) in [
            (
                &raw.tcp_handshake,
                "tcp_handshake",
                &mut timeouts.tcp_handshake,
            ),
            (
                &raw.tcp_established,
                "tcp_established",
                &mut timeouts.tcp_established,
            ),
            (&raw.tcp_closing, "tcp_closing", &mut timeouts.tcp_closing),
            (&raw.udp, "udp", &mut timeouts.udp),
        ] {
            let path = format!("flow_timeouts.{key}");
            let Some(value) =
                self.duration_in(node.as_ref(), &path, key, FLOW_TIMEOUT_RANGE, *slot)
            else {
                continue;
            };
            if value.subsec_nanos() != 0 {
                if let Some(node) = node {
                    self.error_at(
                        node,
                        &path,
                        format!(
                            "{key} {} is not a whole number of seconds (the connection table \
                             counts in seconds)",
                            node.value.trim()
                        ),
                    );
                }
                continue;
            }
            *slot = value;
        }
        timeouts
    }

    /// `Some(None)`: no region; `None`: the region is not defined (reported).
    pub(super) fn pool_region(
        &mut self,
        name: &Spanned<String>,
        pool: &Spanned<RawPool>,
        regions: &NameIndex,
    ) -> Option<Option<RegionId>> {
        match &pool.value.region {
            None => Some(None),
            Some(node) => {
                let path = format!("pools.{}.region", name.value);
                self.resolve(regions, node, &path)
                    .map(|i| Some(RegionId::from_index(i)))
            }
        }
    }

    pub(super) fn pool(
        &mut self,
        name: &Spanned<String>,
        node: &Spanned<RawPool>,
        region: Option<Option<RegionId>>,
        tables: &Tables,
        links: &Links,
    ) -> Option<Pool> {
        let raw = &node.value;
        let path = format!("pools.{}", name.value);
        let kind = raw
            .scheduler
            .as_ref()
            .map_or(SchedulerKind::Maglev, |s| s.value);

        let backends = self.backends(&path, &raw.backends, links);

        if kind != SchedulerKind::Maglev {
            if let Some(size) = &raw.maglev_size {
                self.error_at(
                    size,
                    format!("{path}.maglev_size"),
                    format!(
                        "maglev_size only applies to `scheduler: maglev`; this pool uses {}",
                        kind.as_str()
                    ),
                );
            }
        }
        let scheduler = match kind {
            SchedulerKind::Maglev => self.maglev(&path, raw, tables, backends.as_deref()),
            SchedulerKind::IpHash => Some(Scheduler::IpHash),
            SchedulerKind::RoundRobin => Some(Scheduler::RoundRobin),
            SchedulerKind::LeastConn => Some(Scheduler::LeastConn),
            SchedulerKind::Weighted => Some(Scheduler::Weighted),
        };

        let health = match &raw.health {
            None => Some(None),
            Some(health) => self.health(&format!("{path}.health"), health).map(Some),
        };
        let load = match &raw.load {
            None => Some(None),
            Some(load) => self.load(&format!("{path}.load"), load, kind).map(Some),
        };

        Some(Pool {
            name: name.value.clone(),
            region: region?,
            scheduler: scheduler?,
            health: health?,
            load: load?,
            backends: backends?,
        })
    }

    /// The Maglev scheduler of a pool: its own table size or the policy-wide one, with room
    /// for every backend.
    fn maglev(
        &mut self,
        path: &str,
        raw: &RawPool,
        tables: &Tables,
        backends: Option<&[Backend]>,
    ) -> Option<Scheduler> {
        let table_size = match &raw.maglev_size {
            None => tables.maglev_size,
            Some(node) => self.maglev_size(node, &format!("{path}.maglev_size"))?,
        };
        let count = backends.map_or(0, <[Backend]>::len);
        if usize::try_from(table_size).is_ok_and(|size| size < count) {
            self.error_at(
                &raw.backends,
                format!("{path}.backends"),
                format!(
                    "{count} backends do not fit a Maglev table of {table_size} slots; raise maglev_size"
                ),
            );
            return None;
        }
        Some(Scheduler::Maglev { table_size })
    }

    pub(super) fn backends(
        &mut self,
        path: &str,
        raw: &Spanned<Vec<Spanned<RawBackend>>>,
        links: &Links,
    ) -> Option<Vec<Backend>> {
        if raw.value.is_empty() {
            self.error_at(
                raw,
                format!("{path}.backends"),
                "a pool needs at least one backend (set `weight: 0` to drain one instead of removing it)",
            );
            return None;
        }
        let mut ok = true;
        let mut addresses: HashMap<IpAddr, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut backends = Vec::new();
        for (i, node) in raw.value.iter().enumerate() {
            let backend = &node.value;
            let backend_path = format!("{path}.backends[{i}]");
            let address_path = format!("{backend_path}.address");
            let address = self
                .check(&backend.address, &address_path, parse_ip(&backend.address.value))
                .and_then(|ip| {
                    if let Some(kind) = special_address(ip) {
                        self.error_at(
                            &backend.address,
                            &address_path,
                            format!("{ip} is a {kind} address; a backend needs a unicast address"),
                        );
                        return None;
                    }
                    if let Some(first) = addresses.insert(ip, i) {
                        self.error_at(
                            &backend.address,
                            &address_path,
                            format!("backend {ip} is listed twice in this pool (also backends[{first}])"),
                        );
                        return None;
                    }
                    if let Some(why) = links.unreachable(ip) {
                        self.error_at(&backend.address, &address_path, why);
                        return None;
                    }
                    Some(ip)
                });
            let weight = self.int_in(
                backend.weight.as_ref(),
                &format!("{backend_path}.weight"),
                "weight",
                (0, i64::from(u16::MAX)),
                DEFAULT_BACKEND_WEIGHT,
            );
            let name = backend.name.as_ref().map(|name| {
                let name_path = format!("{backend_path}.name");
                self.name(name, &name_path);
                if let Some(first) = names.insert(&name.value, i) {
                    self.error_at(
                        name,
                        &name_path,
                        format!(
                            "backend name `{}` is used twice in this pool (also backends[{first}])",
                            name.value
                        ),
                    );
                }
                name.value.clone()
            });
            let admin = match &backend.state {
                None => Some(AdminState::InService),
                Some(state) => {
                    let parsed = AdminState::parse(&state.value);
                    if parsed.is_none() {
                        self.error_at(
                            state,
                            format!("{backend_path}.state"),
                            format!(
                                "unknown state `{}`; expected `drained` (no new flows) or \
                                 `disabled` (out of scheduling), or leave it out",
                                state.value
                            ),
                        );
                    }
                    parsed
                }
            };
            match (address, weight, admin) {
                (Some(address), Some(weight), Some(admin)) => backends.push(Backend {
                    address,
                    weight,
                    name,
                    admin,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(backends)
    }

    pub(super) fn health(&mut self, path: &str, node: &Spanned<RawHealth>) -> Option<HealthCheck> {
        let raw = &node.value;
        let probe = match (&raw.http, &raw.tcp) {
            (Some(_), Some(tcp)) => {
                self.error_at(
                    tcp,
                    format!("{path}.tcp"),
                    "choose one probe: `http` or `tcp`, not both",
                );
                None
            }
            (None, None) => {
                self.error_at(
                    node,
                    path,
                    "a health check needs a probe: `http: { port, path }` or `tcp: { port }`",
                );
                None
            }
            (Some(http), None) => {
                let http_path = format!("{path}.http");
                let port = self.port(&http.value.port, &format!("{http_path}.port"));
                let request_path = match &http.value.path {
                    None => Some(DEFAULT_HTTP_PATH.to_owned()),
                    Some(p) => self
                        .check(p, format!("{http_path}.path"), check_http_path(&p.value))
                        .map(|()| p.value.clone()),
                };
                let expect_status = self.int_in(
                    http.value.expect_status.as_ref(),
                    &format!("{http_path}.expect_status"),
                    "expect_status",
                    (100, 599),
                    DEFAULT_EXPECT_STATUS,
                );
                let expect_model = match &http.value.expect_model {
                    Some(model) if model.value.trim().is_empty() => {
                        self.error_at(
                            model,
                            format!("{http_path}.expect_model"),
                            "expect_model is empty",
                        );
                        None
                    }
                    Some(model) => Some(Some(model.value.clone())),
                    None => Some(None),
                };
                match (port, request_path, expect_status, expect_model) {
                    (Some(port), Some(path), Some(expect_status), Some(expect_model)) => {
                        Some(Probe::Http {
                            port,
                            path,
                            expect_status,
                            expect_model,
                        })
                    }
                    _ => None,
                }
            }
            (None, Some(tcp)) => self
                .port(&tcp.value.port, &format!("{path}.tcp.port"))
                .map(|port| Probe::Tcp { port }),
        };

        let interval = self.duration_in(
            raw.interval.as_ref(),
            &format!("{path}.interval"),
            "interval",
            HEALTH_INTERVAL_RANGE,
            DEFAULT_HEALTH_INTERVAL,
        );
        let timeout = match &raw.timeout {
            None => interval.map(|i| i.min(DEFAULT_HEALTH_TIMEOUT)),
            Some(node) => {
                let timeout_path = format!("{path}.timeout");
                let timeout = self.check(node, &timeout_path, parse_duration(&node.value));
                match (timeout, interval) {
                    (Some(t), _) if t.is_zero() => {
                        self.error_at(node, &timeout_path, "timeout must be longer than 0");
                        None
                    }
                    (Some(t), Some(i)) if t > i => {
                        self.error_at(
                            node,
                            &timeout_path,
                            format!(
                                "timeout {} is longer than interval {}; a probe must finish before the next one starts",
                                node.value.trim(),
                                show_duration(i)
                            ),
                        );
                        None
                    }
                    (t, _) => t,
                }
            }
        };
        let rise = self.int_in(
            raw.rise.as_ref(),
            &format!("{path}.rise"),
            "rise",
            (1, MAX_RISE_FALL),
            DEFAULT_RISE,
        );
        let fall = self.int_in(
            raw.fall.as_ref(),
            &format!("{path}.fall"),
            "fall",
            (1, MAX_RISE_FALL),
            DEFAULT_FALL,
        );
        Some(HealthCheck {
            probe: probe?,
            interval: interval?,
            timeout: timeout?,
            rise: rise?,
            fall: fall?,
        })
    }

    pub(super) fn load(
        &mut self,
        path: &str,
        node: &Spanned<RawLoad>,
        scheduler: SchedulerKind,
    ) -> Option<LoadFeedback> {
        let raw = &node.value;
        let metrics = &raw.metrics.value;
        let metrics_port = self.port(&metrics.port, &format!("{path}.metrics.port"));
        let metrics_path = match &metrics.path {
            None => Some(DEFAULT_METRICS_PATH.to_owned()),
            Some(p) => self
                .check(p, format!("{path}.metrics.path"), check_http_path(&p.value))
                .map(|()| p.value.clone()),
        };
        let mut ok = true;
        if raw.signals.value.is_empty() {
            self.error_at(
                &raw.signals,
                format!("{path}.signals"),
                "signals is empty; name the metrics that measure load, e.g. vllm:num_requests_waiting",
            );
            ok = false;
        }
        let mut signals = Vec::new();
        for (i, signal) in raw.signals.value.iter().enumerate() {
            let signal_path = format!("{path}.signals[{i}]");
            if !is_metric_name(&signal.value) {
                self.error_at(
                    signal,
                    &signal_path,
                    format!("`{}` is not a Prometheus metric name", signal.value),
                );
                ok = false;
            } else if signals.contains(&signal.value) {
                self.error_at(
                    signal,
                    &signal_path,
                    format!("signal `{}` is listed twice", signal.value),
                );
                ok = false;
            } else {
                signals.push(signal.value.clone());
            }
        }
        let interval = self.duration_in(
            raw.interval.as_ref(),
            &format!("{path}.interval"),
            "interval",
            LOAD_INTERVAL_RANGE,
            DEFAULT_LOAD_INTERVAL,
        );
        let weight_range = (1, i64::from(u16::MAX));
        let min_weight = self.int_in(
            raw.min_weight.as_ref(),
            &format!("{path}.min_weight"),
            "min_weight",
            weight_range,
            1u16,
        );
        let max_weight = self.int_in(
            raw.max_weight.as_ref(),
            &format!("{path}.max_weight"),
            "max_weight",
            weight_range,
            u16::MAX,
        );
        if let (Some(min), Some(max)) = (min_weight, max_weight) {
            if min > max {
                let at = raw
                    .min_weight
                    .as_ref()
                    .map_or(Position::of(node), Position::of);
                self.error(
                    at,
                    format!("{path}.min_weight"),
                    format!("min_weight {min} is above max_weight {max}"),
                );
                ok = false;
            }
        }
        let saturation = self.saturation(path, raw, &signals);
        let timing = |v: &mut Self, node: Option<&Spanned<String>>, what: &str, default| {
            v.duration_in(
                node,
                &format!("{path}.{what}"),
                what,
                LOAD_TIMING_RANGE,
                default,
            )
        };
        let smoothing = timing(
            self,
            raw.smoothing.as_ref(),
            "smoothing",
            DEFAULT_LOAD_SMOOTHING,
        );
        let stale_after = timing(
            self,
            raw.stale_after.as_ref(),
            "stale_after",
            interval.map_or(Duration::ZERO, |i| i * 3),
        );
        let min_rebuild_interval = timing(
            self,
            raw.min_rebuild_interval.as_ref(),
            "min_rebuild_interval",
            DEFAULT_MIN_REBUILD_INTERVAL,
        );
        if let (Some(stale), Some(every), Some(node)) = (stale_after, interval, &raw.stale_after) {
            if stale < every {
                self.error_at(
                    node,
                    format!("{path}.stale_after"),
                    format!(
                        "stale_after {} is shorter than interval {}: every scrape would be stale",
                        node.value.trim(),
                        show_duration(every)
                    ),
                );
                ok = false;
            }
        }
        let dead_band = match &raw.dead_band {
            None => Percent::from_basis_points(DEFAULT_LOAD_DEAD_BAND),
            Some(node) => self.check(
                node,
                format!("{path}.dead_band"),
                parse_percent(&node.value),
            ),
        };
        let bounded = matches!(scheduler, SchedulerKind::Maglev | SchedulerKind::IpHash);
        let full_at = match &raw.full_at {
            None => Some(bounded.then_some(DEFAULT_FULL_AT)),
            Some(node) if !bounded => {
                self.error_at(
                    node,
                    format!("{path}.full_at"),
                    format!(
                        "full_at (bounded-load affinity) only applies to `maglev` and `ip_hash` \
                         pools; this pool uses {}",
                        scheduler.as_str()
                    ),
                );
                None
            }
            Some(node) if !(node.value.is_finite() && node.value > 0.0) => {
                self.error_at(
                    node,
                    format!("{path}.full_at"),
                    format!(
                        "full_at {} must be a number above 0 (1 = saturated)",
                        node.value
                    ),
                );
                None
            }
            Some(node) => Some(Some(node.value)),
        };
        if !ok {
            return None;
        }
        Some(LoadFeedback {
            metrics_port: metrics_port?,
            metrics_path: metrics_path?,
            signals,
            saturation: saturation?,
            interval: interval?,
            min_weight: min_weight?,
            max_weight: max_weight?,
            smoothing: smoothing?,
            dead_band: dead_band?,
            stale_after: stale_after?,
            min_rebuild_interval: min_rebuild_interval?,
            full_at: full_at?,
        })
    }

    /// The saturation point of each signal: from `saturation`, else the known value of a
    /// well-known inference metric; a signal with neither is an error.
    fn saturation(&mut self, path: &str, raw: &RawLoad, signals: &[String]) -> Option<Vec<f64>> {
        let given = raw.saturation.as_ref();
        let mut ok = true;
        if let Some(map) = given {
            for (metric, value) in &map.value {
                let at = format!("{path}.saturation.{metric}");
                if !signals.contains(metric) {
                    self.error_at(
                        value,
                        at,
                        format!("`{metric}` is not one of this pool's signals"),
                    );
                    ok = false;
                } else if !(value.value.is_finite() && value.value > 0.0) {
                    self.error_at(
                        value,
                        at,
                        format!("saturation {} must be a number above 0", value.value),
                    );
                    ok = false;
                }
            }
        }
        let mut out = Vec::with_capacity(signals.len());
        for metric in signals {
            let explicit = given.and_then(|m| m.value.get(metric)).map(|v| v.value);
            let known = KNOWN_SATURATION
                .iter()
                .find(|(name, _)| name == metric)
                .map(|&(_, v)| v);
            match explicit.or(known) {
                Some(v) => out.push(v),
                None => {
                    let at = given.map_or_else(|| Position::of(&raw.signals), Position::of);
                    self.error(
                        at,
                        format!("{path}.saturation"),
                        format!(
                            "signal `{metric}` has no known saturation point; set \
                             `saturation: {{ {metric}: VALUE }}` (the value at which a backend \
                             is saturated)"
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}
