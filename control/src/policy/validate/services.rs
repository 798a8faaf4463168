//! `services:`: VIPs, ports, routes, residency and canaries, and overlaps between services.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::super::error::Position;
use super::super::model::{
    Canary, Interface, Percent, PoolId, PortRange, Protocol, RegionId, Residency, RollbackGates,
    Rollout, Route, Service, SignalGate,
};
use super::super::raw::{
    NamedMap, RawCanary, RawPool, RawRollback, RawRoute, RawService, RawSignalGate, Scalar,
};
use super::super::values::{is_metric_name, parse_percent, parse_prefix, special_address};
use super::{show_net, NameIndex, Validator};

/// Bounds of a phased canary's `step_interval`: a second to a week.
const STEP_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3_600));
/// `rollback.backends_down` when the policy does not set it: one canary backend down trips.
const DEFAULT_ROLLBACK_BACKENDS_DOWN: u32 = 1;

/// What the service checks need to know about the rest of the policy.
pub(super) struct ServiceContext<'a> {
    pub(super) regions: &'a NameIndex,
    pub(super) pools: &'a NameIndex,
    pub(super) pool_regions: &'a [Option<RegionId>],
    /// The pools as written, by raw position (a signal gate needs its pool's `load:`).
    pub(super) raw_pools: &'a NamedMap<Spanned<RawPool>>,
    pub(super) interfaces: &'a [Interface],
}

impl Validator {
    pub(super) fn service(
        &mut self,
        path: &str,
        node: &Spanned<RawService>,
        context: &ServiceContext<'_>,
        used_pools: &mut HashSet<usize>,
    ) -> Option<Service> {
        let raw = &node.value;
        self.name(&raw.name, &format!("{path}.name"));

        let vip = self.vip(&format!("{path}.vip"), &raw.vip, context.interfaces);
        let ports = self.ports(
            &format!("{path}.ports"),
            &raw.ports,
            "a service needs at least one port",
        );
        let protocol = raw.protocol.as_ref().map_or(Protocol::Tcp, |p| p.value);

        let canary_pool = raw.canary.as_ref().and_then(|canary| {
            let pool = self.resolve(
                context.pools,
                &canary.value.pool,
                &format!("{path}.canary.pool"),
            );
            if let Some(pool) = pool {
                used_pools.insert(pool);
            }
            pool
        });
        let routes = self.routes(path, raw, context, used_pools, canary_pool);

        let canary = match &raw.canary {
            None => Some(None),
            Some(canary) => self
                .canary(&format!("{path}.canary"), canary, canary_pool, raw, context)
                .map(Some),
        };

        let acl = raw
            .acl
            .as_deref()
            .map(|rules| self.acl(&format!("{path}.acl"), rules))
            .unwrap_or_default();

        Some(Service {
            name: raw.name.value.clone(),
            vip: vip?,
            ports: ports?,
            protocol,
            routes: routes?,
            canary: canary?,
            acl,
        })
    }

    /// A canary: a fixed `percent`, or `steps` with `step_interval` and rollback gates.
    fn canary(
        &mut self,
        path: &str,
        node: &Spanned<RawCanary>,
        pool: Option<usize>,
        service: &RawService,
        context: &ServiceContext<'_>,
    ) -> Option<Canary> {
        let raw = &node.value;
        let share = match (&raw.percent, &raw.steps) {
            (Some(percent), None) => {
                let mut ok = true;
                // Written keys only: the position of each (when known) or nothing.
                let phased_only = [
                    (
                        "step_interval",
                        raw.step_interval.as_ref().map(Position::of),
                    ),
                    ("rollback", raw.rollback.as_ref().map(Position::of)),
                ];
                for (key, written) in phased_only {
                    if let Some(at) = written {
                        self.error(
                            at,
                            format!("{path}.{key}"),
                            format!(
                                "{key} only applies to a phased canary (`steps:`); \
                                 a canary with `percent:` stays at that share"
                            ),
                        );
                        ok = false;
                    }
                }
                let percent = self.check(
                    percent,
                    format!("{path}.percent"),
                    parse_percent(&percent.value),
                );
                percent.filter(|_| ok).map(|p| (p, None))
            }
            (None, Some(steps)) => self
                .rollout(path, node, steps, pool, context)
                .map(|r| (r.steps[0], Some(r))),
            (Some(_), Some(steps)) => {
                self.error_at(
                    steps,
                    format!("{path}.steps"),
                    "a canary has `percent:` (a fixed share) or `steps:` (a phased rollout), not both",
                );
                None
            }
            (None, None) => {
                self.error_at(
                    node,
                    path,
                    "a canary needs `percent: N` (a fixed share) or `steps: [..]` with \
                     `step_interval` (a phased rollout)",
                );
                None
            }
        };

        let route_pool = pool.and_then(|pool| {
            service
                .routes
                .value
                .iter()
                .position(|r| context.pools.lookup(&r.value.pool.value) == Some(pool))
        });
        if let Some(route) = route_pool {
            self.error_at(
                &raw.pool,
                format!("{path}.pool"),
                format!(
                    "canary pool `{}` is also the pool of routes[{route}]; a canary needs a pool of its own",
                    raw.pool.value
                ),
            );
            return None;
        }
        let (percent, rollout) = share?;
        Some(Canary {
            pool: PoolId::from_index(pool?),
            percent,
            rollout,
        })
    }

    /// The phased part of a canary: increasing steps above 0, a step interval, gates.
    fn rollout(
        &mut self,
        path: &str,
        node: &Spanned<RawCanary>,
        steps_node: &Spanned<Vec<Spanned<Scalar>>>,
        pool: Option<usize>,
        context: &ServiceContext<'_>,
    ) -> Option<Rollout> {
        let raw = &node.value;
        let mut ok = true;
        if steps_node.value.is_empty() {
            self.error_at(
                steps_node,
                format!("{path}.steps"),
                "steps is empty; list the shares to go through, e.g. [1, 5, 25, 100]",
            );
            ok = false;
        }
        let mut steps: Vec<Percent> = Vec::new();
        let mut last: Option<(Percent, usize)> = None;
        for (i, item) in steps_node.value.iter().enumerate() {
            let item_path = format!("{path}.steps[{i}]");
            let Some(step) = self.check(item, &item_path, parse_percent(&item.value)) else {
                ok = false;
                continue;
            };
            if step.basis_points() == 0 {
                self.error_at(
                    item,
                    &item_path,
                    "step 0% sends no flows; every step must be above 0 \
                     (a fixed `percent: 0` parks a canary)",
                );
                ok = false;
            } else if let Some((previous, j)) = last.filter(|(previous, _)| step <= *previous) {
                self.error_at(
                    item,
                    &item_path,
                    format!(
                        "step {step} is not above steps[{j}] ({previous}); steps must increase"
                    ),
                );
                ok = false;
            }
            last = Some((step, i));
            steps.push(step);
        }

        let interval_path = format!("{path}.step_interval");
        let step_interval = match &raw.step_interval {
            None => {
                self.error_at(
                    node,
                    interval_path,
                    "a phased canary needs `step_interval`: how long each step lasts, e.g. 5m",
                );
                None
            }
            Some(interval) => self.duration_in(
                Some(interval),
                &interval_path,
                "step_interval",
                STEP_INTERVAL_RANGE,
                STEP_INTERVAL_RANGE.0,
            ),
        };
        let rollback = self.rollback_gates(path, raw.rollback.as_ref(), pool, context);
        if !ok {
            return None;
        }
        Some(Rollout {
            steps,
            step_interval: step_interval?,
            rollback: rollback?,
        })
    }

    fn rollback_gates(
        &mut self,
        path: &str,
        node: Option<&Spanned<RawRollback>>,
        pool: Option<usize>,
        context: &ServiceContext<'_>,
    ) -> Option<RollbackGates> {
        let Some(node) = node else {
            return Some(RollbackGates {
                backends_down: DEFAULT_ROLLBACK_BACKENDS_DOWN,
                signal: None,
            });
        };
        let raw = &node.value;
        let backends_down = self.int_in(
            raw.backends_down.as_ref(),
            &format!("{path}.rollback.backends_down"),
            "backends_down",
            (1, i64::from(u32::MAX)),
            DEFAULT_ROLLBACK_BACKENDS_DOWN,
        );
        let signal = match &raw.signal {
            None => Some(None),
            Some(signal) => self
                .signal_gate(&format!("{path}.rollback.signal"), signal, pool, context)
                .map(Some),
        };
        Some(RollbackGates {
            backends_down: backends_down?,
            signal: signal?,
        })
    }

    /// A counter-rate gate. The counter is read from the canary pool's metrics endpoint, so
    /// the pool must have `load:`.
    fn signal_gate(
        &mut self,
        path: &str,
        node: &Spanned<RawSignalGate>,
        pool: Option<usize>,
        context: &ServiceContext<'_>,
    ) -> Option<SignalGate> {
        let raw = &node.value;
        let mut ok = true;
        if !is_metric_name(&raw.metric.value) {
            self.error_at(
                &raw.metric,
                format!("{path}.metric"),
                format!("`{}` is not a Prometheus metric name", raw.metric.value),
            );
            ok = false;
        }
        let max_rate = raw.max_rate.value;
        if !(max_rate.is_finite() && max_rate >= 0.0) {
            self.error_at(
                &raw.max_rate,
                format!("{path}.max_rate"),
                format!("max_rate {max_rate} must be a number of 0 or more (per second)"),
            );
            ok = false;
        }
        let unscraped = pool
            .and_then(|p| context.raw_pools.entries.get(p))
            .filter(|(_, p)| p.value.load.is_none());
        if let Some((name, _)) = unscraped {
            self.error_at(
                node,
                path,
                format!(
                    "the signal gate reads `{}` from the canary pool's metrics endpoint, but pool \
                     `{}` has no `load:` saying where that is; give it `load: {{ metrics: {{ port: PORT }}, .. }}`",
                    raw.metric.value, name.value
                ),
            );
            ok = false;
        }
        ok.then(|| SignalGate {
            metric: raw.metric.value.clone(),
            max_rate,
        })
    }

    /// A VIP: an address or prefix, unicast, not an address of the appliance itself.
    fn vip(
        &mut self,
        path: &str,
        node: &Spanned<String>,
        interfaces: &[Interface],
    ) -> Option<IpNet> {
        let vip = self.check(node, path, parse_prefix(&node.value))?;
        if let Some(kind) = special_address(vip.network()) {
            self.error_at(
                node,
                path,
                format!(
                    "VIP {} is a {kind} address; a VIP must be unicast",
                    show_net(vip)
                ),
            );
            return None;
        }
        let own = interfaces.iter().find_map(|i| {
            i.addresses
                .iter()
                .find(|a| vip.contains(&a.addr()))
                .map(|a| (i, a.addr()))
        });
        if let Some((interface, address)) = own {
            let what = if vip.prefix_len() == vip.max_prefix_len() {
                format!("VIP {address} is")
            } else {
                format!("VIP {vip} contains {address},")
            };
            self.error_at(
                node,
                path,
                format!(
                    "{what} an address of interface `{}`; VIPs and interface addresses must differ",
                    interface.name
                ),
            );
            return None;
        }
        Some(vip)
    }

    pub(super) fn routes(
        &mut self,
        path: &str,
        raw: &RawService,
        context: &ServiceContext<'_>,
        used_pools: &mut HashSet<usize>,
        canary_pool: Option<usize>,
    ) -> Option<Vec<Route>> {
        if raw.routes.value.is_empty() {
            self.error_at(
                &raw.routes,
                format!("{path}.routes"),
                "a service needs at least one route, e.g. `- { pool: NAME }` for every client",
            );
            return None;
        }
        let mut ok = true;
        let mut routes = Vec::new();
        let mut catch_all: Option<usize> = None;
        let mut seen_regions: HashMap<usize, usize> = HashMap::new();
        for (index, node) in raw.routes.value.iter().enumerate() {
            let route = &node.value;
            let route_path = format!("{path}.routes[{index}]");

            let from = match &route.from {
                None => Some(None),
                Some(from) => self
                    .resolve(context.regions, from, &format!("{route_path}.from"))
                    .map(Some),
            };

            // A route below the catch-all, or for a region an earlier route already took,
            // never sees a client.
            if let Some(first) = catch_all {
                self.error_at(
                    node,
                    &route_path,
                    format!("route can never match: routes[{first}] above it has no `from:` and already takes every client"),
                );
                ok = false;
            } else if let Some(Some(region)) = from {
                if let Some(first) = seen_regions.get(&region) {
                    self.error_at(
                        node,
                        &route_path,
                        format!(
                            "route can never match: routes[{first}] above it already takes clients from region `{}`",
                            context.regions.names[region]
                        ),
                    );
                    ok = false;
                } else {
                    seen_regions.insert(region, index);
                }
            } else if from == Some(None) {
                catch_all = Some(index);
            }

            let pool = self.resolve(context.pools, &route.pool, &format!("{route_path}.pool"));
            if let Some(pool) = pool {
                used_pools.insert(pool);
            }

            let mut fallback = Vec::new();
            if let Some(list) = &route.fallback {
                if list.value.is_empty() {
                    self.error_at(
                        list,
                        format!("{route_path}.fallback"),
                        "fallback is empty; leave it out instead",
                    );
                    ok = false;
                }
                for (i, item) in list.value.iter().enumerate() {
                    let item_path = format!("{route_path}.fallback[{i}]");
                    let Some(id) = self.resolve(context.pools, item, &item_path) else {
                        ok = false;
                        continue;
                    };
                    used_pools.insert(id);
                    if Some(id) == pool {
                        self.error_at(
                            item,
                            &item_path,
                            format!("pool `{}` is this route's own pool; a fallback must be another pool", item.value),
                        );
                        ok = false;
                    } else if fallback.contains(&id) {
                        self.error_at(
                            item,
                            &item_path,
                            format!("pool `{}` is listed twice in fallback", item.value),
                        );
                        ok = false;
                    } else {
                        fallback.push(id);
                    }
                }
            }

            let residency = route
                .residency
                .as_ref()
                .map_or(Residency::Preferred, |r| r.value);
            if residency == Residency::Strict {
                ok &= self.strict_route(&route_path, route, from, pool, &fallback, context);
            }

            let takes_canary = match (canary_pool, residency, from) {
                (Some(canary), Residency::Strict, Some(Some(region))) => {
                    context.pool_regions.get(canary).copied().flatten()
                        == Some(RegionId::from_index(region))
                }
                _ => true,
            };

            if let (Some(from), Some(pool)) = (from, pool) {
                routes.push(Route {
                    from: from.map(RegionId::from_index),
                    pool: PoolId::from_index(pool),
                    fallback: fallback.into_iter().map(PoolId::from_index).collect(),
                    residency,
                    takes_canary,
                });
            } else {
                ok = false;
            }
        }
        ok.then_some(routes)
    }

    /// Strict residency: the route has a region, and its pool and every fallback pool are
    /// marked with that region. Returns whether it holds.
    pub(super) fn strict_route(
        &mut self,
        route_path: &str,
        route: &RawRoute,
        from: Option<Option<usize>>,
        pool: Option<usize>,
        fallback: &[usize],
        context: &ServiceContext<'_>,
    ) -> bool {
        let region = match from {
            Some(Some(region)) => region,
            Some(None) => {
                let at = route.residency.as_ref().and_then(Position::of);
                self.error(
                    at,
                    format!("{route_path}.residency"),
                    "`residency: strict` needs `from: REGION`; a catch-all route has no region to keep clients in",
                );
                return false;
            }
            // Undefined region: reported already.
            None => return true,
        };
        let region_name = &context.regions.names[region];
        let mut ok = true;
        let mut check = |v: &mut Self, id: usize, node: &Spanned<String>, path: String| {
            let pool_region = context.pool_regions.get(id).copied().flatten();
            if pool_region == Some(RegionId::from_index(region)) {
                return;
            }
            let actual = match pool_region {
                Some(other) => format!("is in region `{}`", context.regions.names[other.index()]),
                None => "has no `region:`".to_owned(),
            };
            v.error_at(
                node,
                path,
                format!(
                    "pool `{}` {actual}, but this route keeps clients of region `{region_name}` in their region \
                     (residency: strict); mark the pool `region: {region_name}` or use residency: preferred",
                    node.value
                ),
            );
            ok = false;
        };
        if let Some(pool) = pool {
            check(self, pool, &route.pool, format!("{route_path}.pool"));
        }
        if let Some(list) = &route.fallback {
            for (i, item) in list.value.iter().enumerate() {
                if let Some(id) = context.pools.lookup(&item.value) {
                    if fallback.contains(&id) {
                        check(self, id, item, format!("{route_path}.fallback[{i}]"));
                    }
                }
            }
        }
        ok
    }

    /// Two services of one protocol whose VIPs overlap may not share a port.
    pub(super) fn overlapping_services(&mut self, services: &[(usize, Option<Position>, Service)]) {
        for (j, (later_index, at, later)) in services.iter().enumerate() {
            for (earlier_index, _, earlier) in &services[..j] {
                if earlier.protocol != later.protocol
                    || !(earlier.vip.contains(&later.vip.network())
                        || later.vip.contains(&earlier.vip.network()))
                {
                    continue;
                }
                let shared = later.ports.iter().find_map(|a| {
                    earlier
                        .ports
                        .iter()
                        .find(|b| a.overlaps(**b))
                        .map(|b| PortRange {
                            first: a.first.max(b.first),
                            last: a.last.min(b.last),
                        })
                });
                if let Some(ports) = shared {
                    let narrower = if later.vip.prefix_len() >= earlier.vip.prefix_len() {
                        later.vip
                    } else {
                        earlier.vip
                    };
                    let what = if ports.first == ports.last {
                        "port"
                    } else {
                        "ports"
                    };
                    self.error(
                        *at,
                        format!("services[{later_index}].vip"),
                        format!(
                            "{} {what} {ports} on {} is already taken by service `{}` (services[{earlier_index}])",
                            later.protocol,
                            show_net(narrower),
                            earlier.name
                        ),
                    );
                }
            }
        }
    }
}
