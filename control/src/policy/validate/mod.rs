//! Semantic validation: [`RawPolicy`] to [`Policy`], reporting every problem at once.
//!
//! Each check that fails records a [`Diagnostic`] with the path of the node and, from the
//! node's [`Spanned`] wrapper, its line and column, then carries on with what it can still
//! check. The returned [`Policy`] is only built when nothing was recorded, so a check may give
//! up on an object (return `None`) as long as it recorded why.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::error::{Diagnostic, Position};
use super::model::{Policy, PortRange};
use super::raw::{NamedMap, RawPolicy, Scalar};
use super::values::{check_name, closest, parse_duration, parse_port_range, port_from_int};

mod acl;
mod interfaces;
mod pools;
mod regions;
mod services;

use interfaces::Links;
use services::ServiceContext;

/// Accepted `backend_mtu`: the IPv6 minimum link MTU to jumbo frames.
pub const BACKEND_MTU_RANGE: (u16, u16) = (1280, 9600);
/// `backend_mtu` when the policy does not set it: a standard Ethernet backend network.
pub const DEFAULT_BACKEND_MTU: u16 = 1500;
/// Shortest and longest flow idle timeout (whole seconds).
pub const FLOW_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));
/// Shortest IPv4 and IPv6 `encap_source` prefix: a broader one would reach into ranges that
/// are not unicast sources.
pub const ENCAP_SOURCE_MIN_LEN: (u8, u8) = (8, 32);
/// Health-check interval bounds.
pub const HEALTH_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3_600));
/// Load-scrape interval bounds.
pub const LOAD_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_secs(3_600));
/// Bounds of the load settings `smoothing`, `stale_after` and `min_rebuild_interval`.
pub const LOAD_TIMING_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3_600));
/// Largest `rise` / `fall`.
pub const MAX_RISE_FALL: i64 = 100;
/// Largest `icmp_per_second`.
pub const MAX_ICMP_PER_SECOND: i64 = 10_000_000;

const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RISE: u32 = 2;
const DEFAULT_FALL: u32 = 3;
const DEFAULT_HTTP_PATH: &str = "/health";
const DEFAULT_EXPECT_STATUS: u16 = 200;
const DEFAULT_METRICS_PATH: &str = "/metrics";
const DEFAULT_LOAD_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_LOAD_SMOOTHING: Duration = Duration::from_secs(2);
/// In basis points: 10 %.
const DEFAULT_LOAD_DEAD_BAND: u16 = 1_000;
const DEFAULT_MIN_REBUILD_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_FULL_AT: f64 = 1.0;

/// Checks a raw policy and resolves it into a [`Policy`].
///
/// # Errors
/// Every problem found, each with the path of the node and its position when known.
pub fn validate(raw: &RawPolicy) -> Result<Policy, Vec<Diagnostic>> {
    let mut v = Validator::default();

    let geoip_database = raw.geoip_database.as_ref().and_then(|node| {
        if node.value.trim().is_empty() {
            v.error_at(node, "geoip_database", "geoip_database is empty");
            None
        } else {
            Some(PathBuf::from(&node.value))
        }
    });

    let empty_regions = NamedMap {
        entries: Vec::new(),
    };
    let raw_regions = raw.regions.as_ref().unwrap_or(&empty_regions);
    let region_names = v.names("region", "regions", raw_regions);
    let pool_names = v.names("pool", "pools", &raw.pools.value);

    let before_interfaces = v.diagnostics.len();
    let interfaces = v.interfaces(&raw.interfaces);
    // Backend reachability is judged against the interfaces only when they are sound, so a
    // mistyped gateway is reported once, not once per backend.
    let interfaces_sound = v.diagnostics.len() == before_interfaces;
    let encap = v.encap(raw.encap.as_ref());
    let backend_mtu = v
        .int_in(
            raw.backend_mtu.as_ref(),
            "backend_mtu",
            "backend_mtu",
            (
                i64::from(BACKEND_MTU_RANGE.0),
                i64::from(BACKEND_MTU_RANGE.1),
            ),
            DEFAULT_BACKEND_MTU,
        )
        .unwrap_or(DEFAULT_BACKEND_MTU);
    let regions = v.regions(raw_regions, raw.geoip_database.is_some());
    let tables = v.tables(raw.tables.as_ref());
    let encap_source = v.encap_source(raw.encap_source.as_ref());
    let flow_timeouts = v.flow_timeouts(raw.flow_timeouts.as_ref());

    let links = Links::of(&interfaces, interfaces_sound);
    let mut pools = Vec::new();
    // Region of each pool by raw position, known even when other fields of the pool are bad,
    // so that residency can still be checked.
    let mut pool_regions = Vec::new();
    for (name, pool) in raw.pools.value.iter() {
        let region = v.pool_region(name, pool, &region_names);
        pool_regions.push(region.flatten());
        if let Some(pool) = v.pool(name, pool, region, &tables, &links) {
            pools.push(pool);
        }
    }
    if raw.pools.value.is_empty() {
        v.error_at(
            &raw.pools,
            "pools",
            "no pools are defined; a service needs at least one pool to send clients to",
        );
    }

    let context = ServiceContext {
        regions: &region_names,
        pools: &pool_names,
        pool_regions: &pool_regions,
        raw_pools: &raw.pools.value,
        interfaces: &interfaces,
    };
    let mut used_pools = HashSet::new();
    let mut services = Vec::new();
    let mut service_names: HashMap<&str, (usize, Option<Position>)> = HashMap::new();
    if raw.services.value.is_empty() {
        v.error_at(
            &raw.services,
            "services",
            "no services are defined; a policy needs at least one",
        );
    }
    for (index, service) in raw.services.value.iter().enumerate() {
        let name = &service.value.name;
        let path = format!("services[{index}]");
        if let Some((first, at)) = service_names.get(name.value.as_str()) {
            v.error_at(
                name,
                format!("{path}.name"),
                format!(
                    "service `{}` is defined twice (first as services[{first}]{})",
                    name.value,
                    at_suffix(*at)
                ),
            );
        } else {
            service_names.insert(&name.value, (index, Position::of(name)));
        }
        if let Some(valid) = v.service(&path, service, &context, &mut used_pools) {
            services.push((index, Position::of(&service.value.vip), valid));
        }
    }
    v.overlapping_services(&services);

    for (index, (name, _)) in raw.pools.value.iter().enumerate() {
        let first_definition = pool_names.index.get(name.value.as_str()) == Some(&index);
        if first_definition && !used_pools.contains(&index) {
            v.error_at(
                name,
                format!("pools.{}", name.value),
                format!(
                    "pool `{}` is not used by any route, fallback or canary; route to it or remove it",
                    name.value
                ),
            );
        }
    }

    let acl = v.acl("acl", raw.acl.as_deref().unwrap_or_default());
    let limits = v.limits(raw.limits.as_ref());

    if !v.diagnostics.is_empty() {
        return Err(v.diagnostics);
    }
    Ok(Policy {
        interfaces,
        encap,
        geoip_database,
        regions,
        services: services.into_iter().map(|(_, _, s)| s).collect(),
        pools,
        acl,
        limits,
        tables,
        backend_mtu,
        encap_source,
        flow_timeouts,
    })
}

/// " at LINE:COL" when the position is known.
fn at_suffix(position: Option<Position>) -> String {
    position.map(|p| format!(" at {p}")).unwrap_or_default()
}

/// Names defined in a `NamedMap`, first definition wins.
struct NameIndex {
    kind: &'static str,
    index: HashMap<String, usize>,
    names: Vec<String>,
}

impl NameIndex {
    fn lookup(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

#[derive(Default)]
struct Validator {
    diagnostics: Vec<Diagnostic>,
}

impl Validator {
    fn error(
        &mut self,
        position: Option<Position>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.diagnostics
            .push(Diagnostic::new(position, Some(path.into()), message.into()));
    }

    fn error_at<T>(
        &mut self,
        node: &Spanned<T>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.error(Position::of(node), path, message);
    }

    /// Records `result`'s error at `node`, if any.
    fn check<T, U>(
        &mut self,
        node: &Spanned<U>,
        path: impl Into<String>,
        result: Result<T, String>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.error_at(node, path, message);
                None
            }
        }
    }

    /// An integer field in `min..=max`, or `default` when absent.
    fn int_in<T: TryFrom<i64>>(
        &mut self,
        node: Option<&Spanned<i64>>,
        path: &str,
        what: &str,
        (min, max): (i64, i64),
        default: T,
    ) -> Option<T> {
        let Some(node) = node else {
            return Some(default);
        };
        let value = node.value;
        if value < min || value > max {
            self.error_at(
                node,
                path,
                format!("{what} {value} is out of range {min}..={max}"),
            );
            return None;
        }
        match T::try_from(value) {
            Ok(v) => Some(v),
            Err(_) => {
                self.error_at(node, path, format!("{what} {value} is out of range"));
                None
            }
        }
    }

    fn port(&mut self, node: &Spanned<i64>, path: &str) -> Option<u16> {
        self.check(node, path, port_from_int(node.value))
    }

    fn name(&mut self, node: &Spanned<String>, path: &str) {
        if let Err(message) = check_name(&node.value) {
            self.error_at(node, path, message);
        }
    }

    /// Indexes the names of a `NamedMap`, reporting misspelt and repeated ones.
    fn names<T>(&mut self, kind: &'static str, section: &str, map: &NamedMap<T>) -> NameIndex {
        let mut index = HashMap::new();
        let mut first_at: HashMap<&str, Option<Position>> = HashMap::new();
        let mut names = Vec::new();
        for (position, (name, _)) in map.iter().enumerate() {
            let path = format!("{section}.{}", name.value);
            self.name(name, &path);
            if let Some(first) = first_at.get(name.value.as_str()) {
                self.error_at(
                    name,
                    path,
                    format!(
                        "{kind} `{}` is defined twice (first{})",
                        name.value,
                        at_suffix(*first)
                    ),
                );
                continue;
            }
            first_at.insert(&name.value, Position::of(name));
            index.insert(name.value.clone(), position);
            names.push(name.value.clone());
        }
        NameIndex { kind, index, names }
    }

    /// Resolves a reference to a named object.
    fn resolve(&mut self, names: &NameIndex, node: &Spanned<String>, path: &str) -> Option<usize> {
        if let Some(index) = names.lookup(&node.value) {
            return Some(index);
        }
        let hint = closest(&node.value, names.names.iter().map(String::as_str))
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let defined = if names.names.is_empty() {
            format!("; no {}s are defined", names.kind)
        } else {
            String::new()
        };
        self.error_at(
            node,
            path,
            format!(
                "{} `{}` is not defined{hint}{defined}",
                names.kind, node.value
            ),
        );
        None
    }

    fn duration_in(
        &mut self,
        node: Option<&Spanned<String>>,
        path: &str,
        what: &str,
        (min, max): (Duration, Duration),
        default: Duration,
    ) -> Option<Duration> {
        let Some(node) = node else {
            return Some(default);
        };
        let duration = self.check(node, path, parse_duration(&node.value))?;
        if duration < min || duration > max {
            self.error_at(
                node,
                path,
                format!(
                    "{what} {} is out of range {}..={}",
                    node.value.trim(),
                    show_duration(min),
                    show_duration(max)
                ),
            );
            return None;
        }
        Some(duration)
    }

    fn ports(
        &mut self,
        path: &str,
        raw: &Spanned<Vec<Spanned<Scalar>>>,
        if_empty: &str,
    ) -> Option<Vec<PortRange>> {
        if raw.value.is_empty() {
            self.error_at(raw, path, format!("ports is empty; {if_empty}"));
            return None;
        }
        let mut ok = true;
        let mut ranges: Vec<(PortRange, usize)> = Vec::new();
        for (i, node) in raw.value.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(range) = self.check(node, &item_path, parse_port_range(&node.value)) else {
                ok = false;
                continue;
            };
            if let Some((other, j)) = ranges.iter().find(|(r, _)| r.overlaps(range)) {
                let message = if *other == range {
                    format!("port {range} is listed twice (also ports[{j}])")
                } else if range.first == range.last {
                    format!("port {range} is already in {other} (ports[{j}])")
                } else {
                    format!("ports {range} overlap {other} (ports[{j}])")
                };
                self.error_at(node, &item_path, message);
                ok = false;
                continue;
            }
            ranges.push((range, i));
        }
        let mut ranges: Vec<PortRange> = ranges.into_iter().map(|(r, _)| r).collect();
        ranges.sort_unstable();
        ok.then_some(ranges)
    }
}

fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A host prefix as a plain address, anything else in CIDR notation.
fn show_net(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}
