//! The current policy and its compiled generation in the API's terms ([`super::view`]).

use std::collections::HashMap;
use std::net::IpAddr;

use switchyard_table::generation::{name_str, Generation, BACKEND_HEALTHY, FAMILY_V4, FAMILY_V6};

use crate::policy::{AdminState, Policy, Probe, Residency, Scheduler};

use super::view::{BackendView, CanaryView, PoolView, RouteView, ServiceView};

/// The table's digest: xxh3-64 of the generation's bytes with its number set to 0 and its
/// interfaces left out. What stays is everything that decides a flow's backend (services, VIP
/// and region LPMs, routes, pools, backend ids, Maglev tables, health, ACL, limits, timeouts,
/// encapsulation); what goes is what differs between nodes by design (generation counters,
/// each node's own addresses, MACs and gateway). Two nodes given the same policy (apart from
/// `interfaces`) and seeing the same backend health and load show the same digest, so a flow
/// ECMP moves between them keeps its backend; nodes whose tables differ show different ones.
#[must_use]
pub fn digest(generation: &Generation) -> String {
    let mut g = generation.clone();
    g.generation = 0;
    g.interfaces.clear();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&g.encode()))
}

/// Services of `policy`, in policy order.
#[must_use]
pub fn services(policy: &Policy) -> Vec<ServiceView> {
    let pool_name = |id| policy.pool(id).name.clone();
    policy
        .services
        .iter()
        .map(|s| ServiceView {
            name: s.name.clone(),
            vip: if s.vip.prefix_len() == s.vip.max_prefix_len() {
                s.vip.addr().to_string()
            } else {
                s.vip.to_string()
            },
            ports: s.ports.iter().map(ToString::to_string).collect(),
            protocol: s.protocol.as_str().to_owned(),
            routes: s
                .routes
                .iter()
                .map(|r| RouteView {
                    from: r.from.map(|id| policy.region(id).name.clone()),
                    pool: pool_name(r.pool),
                    fallback: r.fallback.iter().map(|&p| pool_name(p)).collect(),
                    residency: match r.residency {
                        Residency::Strict => "strict",
                        Residency::Preferred => "preferred",
                    }
                    .to_owned(),
                })
                .collect(),
            canary: s.canary.as_ref().map(|c| CanaryView {
                pool: pool_name(c.pool),
                percent: c.percent.to_string(),
            }),
        })
        .collect()
}

fn address_of(address: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::from([
            address[0], address[1], address[2], address[3],
        ])),
        FAMILY_V6 => Some(IpAddr::from(*address)),
        _ => None,
    }
}

/// What a generation says of one backend.
#[derive(Debug, Clone, Copy)]
struct Compiled {
    id: u32,
    weight: u32,
    healthy: bool,
}

/// Pools of `policy` with their backends as `generation` (compiled from it) has them.
#[must_use]
pub fn pools(policy: &Policy, generation: &Generation) -> Vec<PoolView> {
    // Keyed by the pool's name as the record stores it (truncated to the record's length).
    let mut compiled: HashMap<(&str, IpAddr), Compiled> = HashMap::new();
    for b in &generation.backends {
        let (Some(pool), Some(address)) = (
            generation.pools.get(b.pool as usize),
            address_of(&b.address, b.family),
        ) else {
            continue;
        };
        compiled.insert(
            (name_str(&pool.name), address),
            Compiled {
                id: b.id,
                weight: b.weight,
                healthy: b.flags & BACKEND_HEALTHY != 0,
            },
        );
    }
    policy
        .pools
        .iter()
        .map(|p| {
            let record_name = switchyard_table::generation::name_field(&p.name);
            let record_name = name_str(&record_name);
            let scheduler = p.scheduler.abi().name();
            let maglev_size = match p.scheduler {
                Scheduler::Maglev { table_size } => table_size,
                Scheduler::IpHash => policy.tables.maglev_size,
                Scheduler::RoundRobin | Scheduler::LeastConn | Scheduler::Weighted => 0,
            };
            // The size the generation was built with, when it has the pool.
            let maglev_size = generation
                .pools
                .iter()
                .find(|r| name_str(&r.name) == record_name)
                .map_or(maglev_size, |r| r.maglev_size);
            let health_check = p.health.as_ref().map(|h| match &h.probe {
                Probe::Http { port, path, .. } => format!("http :{port}{path}"),
                Probe::Tcp { port } => format!("tcp :{port}"),
            });
            let backends = p
                .backends
                .iter()
                .map(|b| {
                    let c = compiled.get(&(record_name, b.address)).copied();
                    let healthy = c.is_none_or(|c| c.healthy);
                    let state = if b.admin == AdminState::Disabled {
                        "disabled"
                    } else if b.weight == 0 || b.admin == AdminState::Drained {
                        "drained"
                    } else if !healthy {
                        "down"
                    } else {
                        "up"
                    };
                    BackendView {
                        id: c.map_or(0, |c| c.id),
                        address: b.address.to_string(),
                        name: b.name.clone(),
                        weight: u32::from(b.weight),
                        effective_weight: c.map_or(u32::from(b.weight), |c| c.weight),
                        healthy,
                        state: state.to_owned(),
                        check: None,
                        load: None,
                    }
                })
                .collect();
            PoolView {
                name: p.name.clone(),
                region: p.region.map(|id| policy.region(id).name.clone()),
                scheduler: scheduler.to_owned(),
                maglev_size,
                health_check,
                backends,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{self, BackendIds, BackendState, CompileInput};

    fn compiled(text: &str, number: u64) -> Generation {
        let policy = crate::policy::parse_str(text, "t.yaml").expect("policy");
        let input = CompileInput {
            policy: &policy,
            generation: number,
            state: &BackendState::new(),
        };
        compile::compile(&input, &mut BackendIds::new()).expect("compile")
    }

    /// Two nodes given the same policy compile the same tables whatever their generation
    /// numbers and their own interfaces; a different policy (here one weight) shows another
    /// digest.
    #[test]
    fn the_digest_follows_the_tables_not_the_generation_number() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/e2e/fleet.yaml"
        ))
        .unwrap();
        let a = compiled(&text, 3);
        let b = compiled(&text, 41);
        assert_ne!(a.encode(), b.encode());
        assert_eq!(digest(&a), digest(&b));
        assert_eq!(digest(&a).len(), 16);
        // Another node: its own uplink address and MAC.
        let node_b = text
            .replacen("addresses: [10.70.0.1/24]", "addresses: [10.80.2.1/24]", 1)
            .replacen("mac: 02:5e:00:00:71:01", "mac: 02:5e:00:00:81:02", 1);
        assert_ne!(node_b, text);
        assert_eq!(digest(&compiled(&node_b, 9)), digest(&a));
        let other = text.replacen(
            "weight: 100, name: eu-gpu-2",
            "weight: 50, name: eu-gpu-2",
            1,
        );
        assert_ne!(other, text);
        assert_ne!(digest(&compiled(&other, 3)), digest(&a));
    }
}
