//! Shared by the fuzz targets and the seed generator: valid table generations to start from.
//!
//! `generation_decode` mutates their encodings (so it stays deep when the committed seed blobs
//! are from an older table ABI), and `examples/seed_corpus.rs` writes them as seeds.

use std::net::{Ipv4Addr, Ipv6Addr};

use switchyard_table::generation::{
    name_field, AclGroup, AclRule, Backend, Generation, Interface, Pool, Region, Route, Service,
    VipEntry, VipGroup, ACL_ALLOW, ACL_DENY, BACKEND_HEALTHY, ENCAP_GUE, FAMILY_V4, FAMILY_V6,
    NONE, PROTO_TCP, PROTO_UDP,
};
use switchyard_table::lpm;

pub const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const GW_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
pub const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const OUR4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const BACKEND4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const OUR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const BACKEND6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 0x10);

/// Every template, by name: small ones first (no LPM tables), then two with a VIP LPM table.
pub fn generations() -> Vec<(&'static str, Generation)> {
    vec![
        ("empty", Generation::default()),
        ("small", small()),
        ("small_gue_v6", small_gue_v6()),
        ("minimal_vip_lpm_v4", minimal()),
        ("vip_lpm_v6", vip_lpm_v6()),
    ]
}

fn v4(a: Ipv4Addr) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.octets());
    out
}

fn interface() -> Interface {
    Interface {
        name: name_field("uplink"),
        mac: OUR_MAC,
        gateway_mac: GW_MAC,
        v4_count: 1,
        v6_count: 1,
        _pad: [0; 2],
        gateway_v4: [192, 0, 2, 254],
        v4: [OUR4.octets(), [0; 4], [0; 4], [0; 4]],
        v6: [OUR6.octets(), [0; 16], [0; 16], [0; 16]],
        gateway_v6: [0; 16],
    }
}

fn backend(address: [u8; 16], family: u8, id: u32, pool: u32) -> Backend {
    Backend {
        address,
        family,
        flags: BACKEND_HEALTHY,
        _pad: [0; 2],
        weight: 100,
        id,
        pool,
    }
}

fn pool(
    name: &str,
    scheduler: u8,
    maglev: (u32, u32),
    backends: (u32, u32),
    healthy: (u32, u32),
) -> Pool {
    Pool {
        name: name_field(name),
        scheduler,
        _pad: [0; 3],
        maglev_offset: maglev.0,
        maglev_size: maglev.1,
        first_backend: backends.0,
        backend_count: backends.1,
        first_healthy: healthy.0,
        healthy_count: healthy.1,
    }
}

/// A region-routed service over two pools, canary and ACL, without LPM tables (so it is a few
/// KiB; the LPM-free sections are where most cross-references live).
pub fn small() -> Generation {
    let mut g = Generation {
        generation: 7,
        ..Default::default()
    };
    g.interfaces.push(interface());
    g.regions.push(Region {
        name: name_field("eu-west"),
    });
    g.services.push(Service {
        name: name_field("llama"),
        first_route: 0,
        route_count: 2,
        protocol: PROTO_TCP,
        _pad: [0; 3],
    });
    g.vip_groups.push(VipGroup {
        first_entry: 0,
        entry_count: 1,
    });
    g.vip_entries.push(VipEntry {
        service: 0,
        port_lo: 443,
        port_hi: 443,
        protocol: PROTO_TCP,
        _pad: [0; 3],
    });
    g.routes.push(Route {
        region: 0,
        pools: [0, 1, 0, 0],
        pool_count: 2,
        canary_pool: NONE,
        canary_per_million: 0,
        strict: 1,
        _pad: [0; 3],
    });
    g.routes.push(Route {
        region: NONE,
        pools: [1, 0, 0, 0],
        pool_count: 1,
        canary_pool: 0,
        canary_per_million: 50_000,
        strict: 0,
        _pad: [0; 3],
    });
    for (i, a) in [[192, 0, 2, 11], [192, 0, 2, 12], [192, 0, 2, 21]]
        .iter()
        .enumerate()
    {
        let i = u32::try_from(i).unwrap();
        g.backends.push(backend(
            v4(Ipv4Addr::from(*a)),
            FAMILY_V4,
            i + 1,
            u32::from(i >= 2),
        ));
    }
    g.backend_by_id = vec![0, 1, 2, 3];
    g.maglev = vec![1, 2, 1, 2, 1, 2, 1, 3, 3, 3, 3, 3, 3, 3];
    g.healthy_backends = vec![0, 1, 2];
    g.pools.push(pool("eu", 0, (0, 7), (0, 2), (0, 2)));
    g.pools.push(pool("us", 2, (7, 7), (2, 1), (2, 1)));
    g.acl_rules.push(AclRule {
        action: ACL_DENY,
        protocol: 0,
        port_lo: 0,
        port_hi: u16::MAX,
        _pad: [0; 2],
    });
    g.acl_rules.push(AclRule {
        action: ACL_ALLOW,
        protocol: PROTO_UDP,
        port_lo: 443,
        port_hi: 443,
        _pad: [0; 2],
    });
    g.acl_groups.push(AclGroup {
        first_rule: 0,
        rule_count: 2,
    });
    g
}

/// IPv6 backends, GUE encapsulation, every scheduler, an unhealthy backend, a retired id.
pub fn small_gue_v6() -> Generation {
    let mut g = Generation {
        generation: 42,
        ..Default::default()
    };
    g.config.encap = ENCAP_GUE;
    g.config.new_flow_rate = 1000;
    g.config.new_flow_burst = 200;
    g.interfaces.push(interface());
    g.services.push(Service {
        name: name_field("embed"),
        first_route: 0,
        route_count: 1,
        protocol: PROTO_UDP,
        _pad: [0; 3],
    });
    g.vip_groups.push(VipGroup {
        first_entry: 0,
        entry_count: 2,
    });
    for (port_lo, port_hi) in [(443, 443), (8000, 8099)] {
        g.vip_entries.push(VipEntry {
            service: 0,
            port_lo,
            port_hi,
            protocol: PROTO_UDP,
            _pad: [0; 3],
        });
    }
    g.routes.push(Route {
        region: NONE,
        pools: [0, 1, 2, 3],
        pool_count: 4,
        canary_pool: 4,
        canary_per_million: 1_000_000,
        strict: 0,
        _pad: [0; 3],
    });
    let mut b6 = BACKEND6.octets();
    for i in 0..5u32 {
        b6[15] = u8::try_from(0x10 + i).unwrap();
        let mut b = backend(b6, FAMILY_V6, 2 * i + 1, i);
        if i == 3 {
            b.flags = 0;
        }
        g.backends.push(b);
        g.pools.push(pool(
            ["maglev", "iphash", "rr", "leastconn", "weighted"][i as usize],
            u8::try_from(i).unwrap(),
            (5 * i, 5),
            (i, 1),
            (i.min(3), u32::from(i != 3)),
        ));
    }
    g.backend_by_id = vec![0, 1, 0, 2, 0, 3, 0, 4, 0, 5];
    g.maglev = (0..5)
        .flat_map(|i| [i + 1, i + 1, 0, i + 1, i + 1])
        .collect();
    g.healthy_backends = vec![0, 1, 2, 4];
    g.pools[4].first_healthy = 3;
    g
}

/// What `configs/minimal.yaml` compiles to: one VIP (203.0.113.10:80/tcp), one pool, one
/// backend, with the VIP LPM table (~257 KiB: the 16-bit root plus two groups for the /32).
pub fn minimal() -> Generation {
    let mut g = Generation {
        generation: 1,
        ..Default::default()
    };
    let mut it = interface();
    it.v6_count = 0;
    it.v6[0] = [0; 16];
    it.v4[0] = OUR4.octets();
    g.interfaces.push(it);
    g.services.push(Service {
        name: name_field("echo"),
        first_route: 0,
        route_count: 1,
        protocol: PROTO_TCP,
        _pad: [0; 3],
    });
    g.vip_groups.push(VipGroup {
        first_entry: 0,
        entry_count: 1,
    });
    g.vip_entries.push(VipEntry {
        service: 0,
        port_lo: 80,
        port_hi: 80,
        protocol: PROTO_TCP,
        _pad: [0; 3],
    });
    g.vip_lpm_v4 = lpm::build_v4(&[(u32::from(VIP4), 32, 1)]).unwrap();
    g.routes.push(Route {
        region: NONE,
        pools: [0, 0, 0, 0],
        pool_count: 1,
        canary_pool: NONE,
        canary_per_million: 0,
        strict: 0,
        _pad: [0; 3],
    });
    g.backends.push(backend(v4(BACKEND4), FAMILY_V4, 0, 0));
    g.backend_by_id = vec![1];
    g.maglev = vec![1; 13];
    g.healthy_backends = vec![0];
    g.pools.push(pool("echo", 0, (0, 13), (0, 1), (0, 1)));
    g
}

/// An IPv6 VIP (2001:db8:100::10, tcp/443) behind the IPv6 VIP LPM (the root plus fourteen
/// groups for the /128, ~270 KiB), routed by region.
pub fn vip_lpm_v6() -> Generation {
    let mut g = minimal();
    g.generation = 2;
    g.vip_lpm_v4.clear();
    g.vip_entries[0].port_lo = 443;
    g.vip_entries[0].port_hi = 443;
    g.vip_lpm_v6 = lpm::build_v6(&[(u128::from(VIP6), 128, 1)]).unwrap();
    g.regions.push(Region {
        name: name_field("lab"),
    });
    g.routes[0].region = 0;
    g.backends[0] = backend(BACKEND6.octets(), FAMILY_V6, 0, 0);
    g
}
