//! `services:`: VIPs, ports, routes, residency and canaries, and overlaps between services.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::super::error::Position;
use super::super::model::{
    Canary, Interface, PoolId, PortRange, Protocol, RegionId, Residency, Route, Service,
};
use super::super::raw::{RawRoute, RawService};
use super::super::values::{parse_percent, parse_prefix, special_address};
use super::{show_net, NameIndex, Validator};

/// What the service checks need to know about the rest of the policy.
pub(super) struct ServiceContext<'a> {
    pub(super) regions: &'a NameIndex,
    pub(super) pools: &'a NameIndex,
    pub(super) pool_regions: &'a [Option<RegionId>],
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
            Some(canary) => {
                let percent_path = format!("{path}.canary.percent");
                let percent = self.check(
                    &canary.value.percent,
                    &percent_path,
                    parse_percent(&canary.value.percent.value),
                );
                let route_pool = canary_pool.and_then(|pool| {
                    raw.routes
                        .value
                        .iter()
                        .position(|r| context.pools.lookup(&r.value.pool.value) == Some(pool))
                });
                if let Some(route) = route_pool {
                    self.error_at(
                        &canary.value.pool,
                        format!("{path}.canary.pool"),
                        format!(
                            "canary pool `{}` is also the pool of routes[{route}]; a canary needs a pool of its own",
                            canary.value.pool.value
                        ),
                    );
                    None
                } else {
                    match (canary_pool, percent) {
                        (Some(pool), Some(percent)) => Some(Some(Canary {
                            pool: PoolId::from_index(pool),
                            percent,
                        })),
                        _ => None,
                    }
                }
            }
        };

        Some(Service {
            name: raw.name.value.clone(),
            vip: vip?,
            ports: ports?,
            protocol,
            routes: routes?,
            canary: canary?,
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
