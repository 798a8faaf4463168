//! Shared by the fuzz targets and the seed generator: valid table generations to start from.
//!
//! `generation_decode` mutates their encodings (so it stays deep when the committed seed blobs
//! are from an older table ABI), and `examples/seed_corpus.rs` writes them as seeds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_table::builder::{acl_rule, BackendSpec, GenerationBuilder};
use switchyard_table::generation::{
    Generation, Scheduler, ACL_ALLOW, ACL_DENY, ENCAP_GUE, NONE, PROTO_TCP, PROTO_UDP,
};

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

fn uplink(v6: bool) -> GenerationBuilder {
    let mut addresses = vec![IpAddr::V4(OUR4)];
    if v6 {
        addresses.push(IpAddr::V6(OUR6));
    }
    GenerationBuilder::new()
        .interface("uplink", OUR_MAC, &addresses)
        .gateway(GW_MAC, Some(Ipv4Addr::new(192, 0, 2, 254)))
}

/// A region-routed service over two pools, canary and ACL, without LPM tables (so it is a few
/// KiB; the LPM-free sections are where most cross-references live).
pub fn small() -> Generation {
    let mut g = uplink(true)
        .generation(7)
        .llama_eu_us()
        .acl(
            &[
                acl_rule(ACL_DENY, 0, (0, u16::MAX)),
                acl_rule(ACL_ALLOW, PROTO_UDP, (443, 443)),
            ],
            &[],
        )
        .build();
    g.routes[0].strict = 1;
    g
}

/// IPv6 backends, GUE encapsulation, every scheduler, an unhealthy backend, a retired id.
pub fn small_gue_v6() -> Generation {
    let mut b = uplink(true)
        .generation(42)
        .config(|c| {
            c.encap = ENCAP_GUE;
            c.new_flow_rate = 1000;
            c.new_flow_burst = 200;
        })
        .service("embed", PROTO_UDP, &[(443, 443), (8000, 8099)])
        .route(NONE, &[0, 1, 2, 3])
        .canary(4, 1_000_000)
        .maglev_size(5);
    let schedulers = [
        ("maglev", Scheduler::Maglev),
        ("iphash", Scheduler::IpHash),
        ("rr", Scheduler::RoundRobin),
        ("leastconn", Scheduler::LeastConn),
        ("weighted", Scheduler::Weighted),
    ];
    let mut b6 = BACKEND6.octets();
    for (i, (name, scheduler)) in (0u32..).zip(schedulers) {
        b6[15] = u8::try_from(0x10 + i).unwrap();
        let backend = BackendSpec::new(Ipv6Addr::from(b6))
            .id(2 * i + 1)
            .healthy(i != 3);
        b = b.pool(name, scheduler, &[backend]);
    }
    let mut g = b.build();
    // A hole in every table.
    g.maglev = (0..5)
        .flat_map(|i| [i + 1, i + 1, 0, i + 1, i + 1])
        .collect();
    g
}

/// What `configs/minimal.yaml` compiles to: one VIP (203.0.113.10:80/tcp), one pool, one
/// backend, with the VIP LPM table (~257 KiB: the 16-bit root plus two groups for the /32).
pub fn minimal() -> Generation {
    uplink(false)
        .generation(1)
        .service("echo", PROTO_TCP, &[(80, 80)])
        .vip(VIP4.into(), 32)
        .route(NONE, &[0])
        .maglev_size(13)
        .pool(
            "echo",
            Scheduler::Maglev,
            &[BackendSpec::new(BACKEND4).id(0)],
        )
        .build()
}

/// An IPv6 VIP (2001:db8:100::10, tcp/443) behind the IPv6 VIP LPM (the root plus fourteen
/// groups for the /128, ~270 KiB), routed by region.
pub fn vip_lpm_v6() -> Generation {
    uplink(false)
        .generation(2)
        .region("lab")
        .service("echo", PROTO_TCP, &[(443, 443)])
        .vip(VIP6.into(), 128)
        .route(0, &[0])
        .maglev_size(13)
        .pool(
            "echo",
            Scheduler::Maglev,
            &[BackendSpec::new(BACKEND6).id(0)],
        )
        .build()
}
