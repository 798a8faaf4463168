//! Services, their routes, and the VIP tables that find a service from a packet's destination.

use std::cmp::Reverse;

use ipnet::IpNet;
use switchyard_table::generation::{self as abi, Generation};

use crate::policy::{Policy, Protocol, Residency};

use super::{index_u32, CompileError, LpmInput};

pub(super) fn build(policy: &Policy, g: &mut Generation) -> Result<(), CompileError> {
    vips(policy, g)?;
    for s in &policy.services {
        let first_route = index_u32("routes", g.routes.len())?;
        for (i, r) in s.routes.iter().enumerate() {
            let chain: Vec<usize> = std::iter::once(r.pool)
                .chain(r.fallback.iter().copied())
                .map(|p| p.index())
                .collect();
            if chain.len() > abi::MAX_ROUTE_POOLS {
                return Err(CompileError::RoutePools {
                    service: s.name.clone(),
                    route: i,
                    count: chain.len(),
                });
            }
            let mut pools = [0u32; abi::MAX_ROUTE_POOLS];
            for (slot, &p) in pools.iter_mut().zip(&chain) {
                *slot = index_u32("pools", p)?;
            }
            let (canary_pool, canary_per_million) = match &s.canary {
                Some(c) if r.takes_canary => (
                    index_u32("pools", c.pool.index())?,
                    u32::from(c.percent.basis_points()) * (abi::PER_MILLION / 10_000),
                ),
                _ => (abi::NONE, 0),
            };
            g.routes.push(abi::Route {
                region: match r.from {
                    Some(region) => index_u32("regions", region.index())?,
                    None => abi::NONE,
                },
                pools,
                pool_count: index_u32("pools", chain.len())?,
                canary_pool,
                canary_per_million,
                strict: u8::from(r.residency == Residency::Strict),
                _pad: [0; 3],
            });
        }
        g.services.push(abi::Service {
            name: abi::name_field(&s.name),
            first_route,
            route_count: index_u32("routes", s.routes.len())?,
            protocol: protocol(s.protocol),
            _pad: [0; 3],
        });
    }
    Ok(())
}

pub(super) fn protocol(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => abi::PROTO_TCP,
        Protocol::Udp => abi::PROTO_UDP,
    }
}

/// One VIP group per distinct VIP prefix: its own services' entries, then those of every broader
/// VIP containing it, most specific first.
fn vips(policy: &Policy, g: &mut Generation) -> Result<(), CompileError> {
    let mut distinct: Vec<IpNet> = Vec::new();
    for s in &policy.services {
        if !distinct.contains(&s.vip) {
            distinct.push(s.vip);
        }
    }
    let mut lpm = LpmInput::default();
    for (group, vip) in distinct.iter().enumerate() {
        let first_entry = index_u32("VIP entries", g.vip_entries.len())?;
        // Includes the VIP itself, the longest of them.
        let mut covering: Vec<&IpNet> = distinct.iter().filter(|o| o.contains(vip)).collect();
        covering.sort_by_key(|o| Reverse(o.prefix_len()));
        for c in covering {
            for (index, s) in policy.services.iter().enumerate() {
                if s.vip != *c {
                    continue;
                }
                for r in &s.ports {
                    g.vip_entries.push(abi::VipEntry {
                        service: index_u32("services", index)?,
                        port_lo: r.first,
                        port_hi: r.last,
                        protocol: protocol(s.protocol),
                        _pad: [0; 3],
                    });
                }
            }
        }
        let end = index_u32("VIP entries", g.vip_entries.len())?;
        g.vip_groups.push(abi::VipGroup {
            first_entry,
            entry_count: end - first_entry,
        });
        lpm.push(*vip, index_u32("VIP groups", group + 1)?);
    }
    (g.vip_lpm_v4, g.vip_lpm_v6) = lpm.build("vip_lpm_v4", "vip_lpm_v6")?;
    Ok(())
}
