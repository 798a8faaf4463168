//! The compiler's output for real policies: every table, read back the way the data plane
//! reads it.

#[path = "compile/helpers.rs"]
mod helpers;

use helpers::*;
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileError, CompileInput};
use switchyard_control::policy::{AclAction, Policy, Protocol};
use switchyard_table::generation::{
    name_str, Generation, Scheduler, BACKEND_HEALTHY, ENCAP_GUE, ENCAP_IPIP, NONE, PROTO_TCP,
    PROTO_UDP,
};

fn try_compile(p: &Policy) -> Result<Generation, CompileError> {
    let state = BackendState::new();
    compile(
        &CompileInput {
            policy: p,
            generation: 1,
            state: &state,
        },
        &mut BackendIds::new(),
    )
}

#[test]
fn shipped_policies_compile_validate_and_round_trip() {
    for (file, services, pools, backends, regions) in [
        ("../configs/demo.yaml", 2, 4, 9, 2),
        ("../configs/minimal.yaml", 1, 1, 1, 0),
    ] {
        let p = load(file);
        let g = compiled(&p);
        g.validate().unwrap();
        assert_eq!(
            (
                g.services.len(),
                g.pools.len(),
                g.backends.len(),
                g.regions.len()
            ),
            (services, pools, backends, regions),
            "{file}"
        );
        let blob = g.encode();
        assert_eq!(Generation::decode(&blob).unwrap(), g, "{file}");
    }
}

#[test]
fn compiling_twice_gives_the_same_bytes() {
    let p = demo();
    let first = compiled(&p).encode();
    assert_eq!(compiled(&p).encode(), first);
    // Also when the ids come from an earlier compile rather than from scratch.
    let mut ids = BackendIds::new();
    let state = BackendState::new();
    let a = compile_with(&p, &state, &mut ids).encode();
    let b = compile_with(&p, &state, &mut ids).encode();
    assert_eq!(a, first);
    assert_eq!(b, first);
}

#[test]
fn demo_config_and_interfaces() {
    let g = compiled(&demo());
    assert_eq!(g.config.encap, ENCAP_IPIP);
    assert_eq!(g.config.new_flow_rate, 200);
    assert_eq!(g.config.new_flow_burst, 400);
    assert_eq!(g.config.icmp_rate, 100);
    assert_eq!(g.config.icmp_burst, 100);
    assert_eq!(g.config.backend_mtu, 1500);

    let [i] = g.interfaces.as_slice() else {
        panic!("one interface")
    };
    assert_eq!(name_str(&i.name), "uplink");
    assert_eq!(i.mac, [2, 0, 0, 0, 0, 1]);
    assert_eq!(i.gateway_mac, [2, 0, 0, 0, 0, 0xfe]);
    assert_eq!(i.gateway_v4, [198, 51, 100, 254]);
    assert_eq!(i.gateway_v6, v6("2001:db8:100::fe"));
    assert_eq!((i.v4_count, i.v6_count), (1, 1));
    assert_eq!(i.v4[0], [198, 51, 100, 1]);
    assert_eq!(i.v6[0], v6("2001:db8:100::1"));

    // The minimal policy: no limits; a gateway MAC (required to forward, tests/configs_run.rs).
    let g = compiled(&load("../configs/minimal.yaml"));
    assert_eq!((g.config.new_flow_rate, g.config.new_flow_burst), (0, 0));
    assert_eq!(g.interfaces[0].gateway_mac, [2, 0, 0, 0, 0, 0xfe]);
    assert_eq!(g.interfaces[0].gateway_v4, [192, 0, 2, 254]);
    assert_eq!((g.interfaces[0].v4_count, g.interfaces[0].v6_count), (1, 0));
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

const ONE_POOL: &str = "
pools:
  p:
    backends: [{ address: 192.0.2.11 }]
";

#[test]
fn gue_and_limits_reach_the_config() {
    let p = policy(&format!(
        "
encap: {{ gue: {{ port: 6081 }} }}
limits:
  new_flows_per_source: {{ rate: 50/s }}
  icmp_per_second: 0
services:
  - {{ name: s, vip: 203.0.113.10, ports: [80], routes: [{{ pool: p }}] }}
{ONE_POOL}"
    ));
    let g = compiled(&p);
    assert_eq!((g.config.encap, g.config.gue_port), (ENCAP_GUE, 6081));
    assert_eq!((g.config.new_flow_rate, g.config.new_flow_burst), (50, 50));
    assert_eq!((g.config.icmp_rate, g.config.icmp_burst), (0, 0));
}

#[test]
fn regions_classify_clients_by_longest_prefix() {
    let g = compiled(&demo());
    assert_eq!(region_of(&g, "10.1.2.3").as_deref(), Some("eu-west"));
    assert_eq!(region_of(&g, "10.2.0.5").as_deref(), Some("us-east"));
    assert_eq!(region_of(&g, "10.3.255.255").as_deref(), Some("us-east"));
    assert_eq!(region_of(&g, "10.4.0.1"), None);
    assert_eq!(
        region_of(&g, "2001:db8:1:ff::9").as_deref(),
        Some("eu-west")
    );
    assert_eq!(region_of(&g, "2001:db8:2::9"), None);

    // Nested prefixes of two regions: the longer one wins.
    let p = policy(&format!(
        "
regions:
  wide: {{ prefixes: [10.0.0.0/8] }}
  narrow: {{ prefixes: [10.9.9.0/24, 2001:db8:9::/48] }}
services:
  - name: s
    vip: 203.0.113.10
    ports: [80]
    routes: [{{ from: narrow, pool: p }}, {{ from: wide, pool: p }}]
{ONE_POOL}"
    ));
    let g = compiled(&p);
    assert_eq!(region_of(&g, "10.9.9.200").as_deref(), Some("narrow"));
    assert_eq!(region_of(&g, "10.9.10.1").as_deref(), Some("wide"));
    assert_eq!(region_of(&g, "2001:db8:9::1").as_deref(), Some("narrow"));
    assert_eq!(region_of(&g, "11.0.0.1"), None);
}

#[test]
fn vips_find_their_services_and_ports() {
    let g = compiled(&demo());
    assert_eq!(
        vip_entries(&g, "203.0.113.10"),
        [("llama-70b".to_owned(), PROTO_TCP, 443, 443)]
    );
    assert_eq!(
        vip_entries(&g, "203.0.113.20"),
        [
            ("sdxl".to_owned(), PROTO_TCP, 8080, 8080),
            ("sdxl".to_owned(), PROTO_TCP, 9000, 9003)
        ]
    );
    assert_eq!(
        service_for(&g, "203.0.113.20", PROTO_TCP, 9002).as_deref(),
        Some("sdxl")
    );
    assert_eq!(service_for(&g, "203.0.113.20", PROTO_UDP, 9002), None);
    assert_eq!(service_for(&g, "203.0.113.20", PROTO_TCP, 9004), None);
    assert!(vip_entries(&g, "203.0.113.11").is_empty());
    assert!(g.vip_lpm_v6.is_empty(), "no IPv6 VIP, no IPv6 table");
}

#[test]
fn a_vip_nested_in_a_vip_prefix_keeps_the_broad_services() {
    let p = policy(&format!(
        "
services:
  - {{ name: broad, vip: 203.0.113.0/24, ports: [80, \"8000-8010\"], routes: [{{ pool: p }}] }}
  - {{ name: dns, vip: 203.0.113.0/24, ports: [53], protocol: udp, routes: [{{ pool: p }}] }}
  - {{ name: narrow, vip: 203.0.113.10, ports: [443], routes: [{{ pool: p }}] }}
  - {{ name: middle, vip: 203.0.113.8/29, ports: [8443], routes: [{{ pool: p }}] }}
  - {{ name: six, vip: \"2001:db8:f::/64\", ports: [80], routes: [{{ pool: p }}] }}
  - {{ name: six-host, vip: \"2001:db8:f::10\", ports: [443], routes: [{{ pool: p }}] }}
{ONE_POOL}"
    ));
    let g = compiled(&p);
    let e = |s: &str, proto, lo, hi| (s.to_owned(), proto, lo, hi);
    // Own entries first, then the enclosing VIPs', most specific first.
    assert_eq!(
        vip_entries(&g, "203.0.113.10"),
        [
            e("narrow", PROTO_TCP, 443, 443),
            e("middle", PROTO_TCP, 8443, 8443),
            e("broad", PROTO_TCP, 80, 80),
            e("broad", PROTO_TCP, 8000, 8010),
            e("dns", PROTO_UDP, 53, 53),
        ]
    );
    assert_eq!(
        vip_entries(&g, "203.0.113.9"),
        [
            e("middle", PROTO_TCP, 8443, 8443),
            e("broad", PROTO_TCP, 80, 80),
            e("broad", PROTO_TCP, 8000, 8010),
            e("dns", PROTO_UDP, 53, 53),
        ]
    );
    assert_eq!(
        vip_entries(&g, "203.0.113.200"),
        [
            e("broad", PROTO_TCP, 80, 80),
            e("broad", PROTO_TCP, 8000, 8010),
            e("dns", PROTO_UDP, 53, 53),
        ]
    );
    for (vip, proto, port, service) in [
        ("203.0.113.10", PROTO_TCP, 443, Some("narrow")),
        ("203.0.113.10", PROTO_TCP, 80, Some("broad")),
        ("203.0.113.10", PROTO_UDP, 53, Some("dns")),
        ("203.0.113.10", PROTO_TCP, 8443, Some("middle")),
        ("203.0.113.11", PROTO_TCP, 443, None),
        ("203.0.113.11", PROTO_TCP, 8443, Some("middle")),
        ("203.0.113.200", PROTO_TCP, 8443, None),
        ("2001:db8:f::10", PROTO_TCP, 80, Some("six")),
        ("2001:db8:f::10", PROTO_TCP, 443, Some("six-host")),
        ("2001:db8:f::11", PROTO_TCP, 443, None),
        ("2001:db8:e::10", PROTO_TCP, 80, None),
    ] {
        assert_eq!(
            service_for(&g, vip, proto, port).as_deref(),
            service,
            "{vip} {proto} {port}"
        );
    }
}

#[test]
fn routes_carry_pools_fallbacks_canary_and_residency() {
    let g = compiled(&demo());
    let pool = |name: &str| u32::try_from(pool_index(&g, name)).unwrap();
    let llama = &g.services[0];
    assert_eq!(name_str(&llama.name), "llama-70b");
    assert_eq!(llama.protocol, PROTO_TCP);
    let routes =
        &g.routes[llama.first_route as usize..(llama.first_route + llama.route_count) as usize];
    assert_eq!(routes.len(), 3);

    // eu-west: strict, and the canary pool is in us-east, so no canary.
    assert_eq!(routes[0].region, 0);
    assert_eq!(
        routes[0].pools[..routes[0].pool_count as usize],
        [pool("llama-eu")]
    );
    assert_eq!(routes[0].strict, 1);
    assert_eq!(
        (routes[0].canary_pool, routes[0].canary_per_million),
        (NONE, 0)
    );
    // us-east: fallback to the EU, 5 % canary.
    assert_eq!(routes[1].region, 1);
    assert_eq!(
        routes[1].pools[..routes[1].pool_count as usize],
        [pool("llama-us"), pool("llama-eu")]
    );
    assert_eq!(routes[1].strict, 0);
    assert_eq!(
        (routes[1].canary_pool, routes[1].canary_per_million),
        (pool("llama-v2-us"), 50_000)
    );
    // The catch-all.
    assert_eq!(routes[2].region, NONE);
    assert_eq!(routes[2].pool_count, 2);
    assert_eq!(routes[2].canary_per_million, 50_000);

    let sdxl = &g.services[1];
    let r = &g.routes[sdxl.first_route as usize];
    assert_eq!(sdxl.route_count, 1);
    assert_eq!((r.region, r.pool_count, r.canary_pool), (NONE, 1, NONE));
    assert_eq!(r.pools[0], pool("sdxl-us"));
}

#[test]
fn canary_percentages_become_parts_per_million() {
    for (percent, per_million) in [
        ("0", 0),
        ("0.01", 100),
        ("0.5", 5_000),
        ("\"12.25%\"", 122_500),
        ("100", 1_000_000),
    ] {
        let p = policy(&format!(
            "
services:
  - name: s
    vip: 203.0.113.10
    ports: [80]
    routes: [{{ pool: p }}]
    canary: {{ pool: c, percent: {percent} }}
pools:
  p: {{ backends: [{{ address: 192.0.2.11 }}] }}
  c: {{ backends: [{{ address: 192.0.2.12 }}] }}
"
        ));
        let g = compiled(&p);
        assert_eq!(g.routes[0].canary_pool, 1, "{percent}");
        assert_eq!(g.routes[0].canary_per_million, per_million, "{percent}");
    }
}

#[test]
fn route_with_too_many_pools_is_refused() {
    let p = policy(
        "
services:
  - name: s
    vip: 203.0.113.10
    ports: [80]
    routes: [{ pool: a, fallback: [b, c, d, e] }]
pools:
  a: { backends: [{ address: 192.0.2.11 }] }
  b: { backends: [{ address: 192.0.2.12 }] }
  c: { backends: [{ address: 192.0.2.13 }] }
  d: { backends: [{ address: 192.0.2.14 }] }
  e: { backends: [{ address: 192.0.2.15 }] }
",
    );
    let err = try_compile(&p).unwrap_err();
    assert_eq!(
        err,
        CompileError::RoutePools {
            service: "s".into(),
            route: 0,
            count: 5
        }
    );
    assert!(err.to_string().contains("at most 4"), "{err}");
}

#[test]
fn interface_with_too_many_addresses_is_refused() {
    let text = "
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24, 198.51.100.1/24, 198.51.100.2/24, 198.51.100.3/24, 198.51.100.4/24]
services:
  - { name: s, vip: 203.0.113.10, ports: [80], routes: [{ pool: p }] }
pools:
  p: { backends: [{ address: 192.0.2.11 }] }
";
    let p = switchyard_control::policy::parse_str(text, "t.yaml").unwrap();
    let err = try_compile(&p).unwrap_err();
    assert_eq!(
        err,
        CompileError::InterfaceAddresses {
            interface: "uplink".into(),
            family: 4,
            count: 5
        }
    );
}

#[test]
fn pools_backends_and_maglev_tables() {
    let g = compiled(&demo());
    let sched: Vec<u8> = g.pools.iter().map(|p| p.scheduler).collect();
    assert_eq!(
        sched,
        [
            Scheduler::Maglev as u8,
            Scheduler::Maglev as u8,
            Scheduler::Maglev as u8,
            Scheduler::LeastConn as u8
        ]
    );
    let sizes: Vec<u32> = g.pools.iter().map(|p| p.maglev_size).collect();
    assert_eq!(sizes, [65_537, 65_537, 65_537, 0]);
    assert_eq!(g.maglev.len(), 3 * 65_537);

    // Ids from 1 in policy order; backend_by_id inverts them.
    let ids: Vec<u32> = g.backends.iter().map(|b| b.id).collect();
    assert_eq!(ids, (1..=9).collect::<Vec<_>>());
    assert_eq!(g.backend_by_id, (0..=9).collect::<Vec<_>>());

    // The drained backend (weight 0) stays healthy for its flows but takes no new ones.
    let (_, drained) = backend(&g, "llama-us", "192.0.2.23");
    assert_eq!((drained.weight, drained.flags), (0, BACKEND_HEALTHY));
    assert_eq!(
        healthy(&g, "llama-us"),
        [ip("192.0.2.21"), ip("192.0.2.22")]
    );
    assert!(!maglev_shares(&g, "llama-us").contains_key(&ip("192.0.2.23")));

    // Weighted shares: 100/100/50 of 65537.
    let shares = maglev_shares(&g, "llama-eu");
    let share = |a: &str| shares[&ip(a)];
    assert!(share("192.0.2.11").abs_diff(26_215) <= 2, "{shares:?}");
    assert!(share("192.0.2.12").abs_diff(26_215) <= 2, "{shares:?}");
    assert!(share("192.0.2.13").abs_diff(13_107) <= 2, "{shares:?}");

    // Least-connections pool: no table, but a healthy list.
    assert_eq!(healthy(&g, "sdxl-us"), [ip("192.0.2.41"), ip("192.0.2.42")]);
}

#[test]
fn ip_hash_pools_get_a_table_of_the_default_size() {
    let p = policy(
        "
tables: { maglev_size: 1009 }
services:
  - { name: s, vip: 203.0.113.10, ports: [80], routes: [{ pool: h, fallback: [r, m] }] }
pools:
  h: { scheduler: ip_hash, backends: [{ address: 192.0.2.11 }, { address: \"2001:db8:200::11\" }] }
  r: { scheduler: round_robin, backends: [{ address: 192.0.2.12 }] }
  m: { maglev_size: 251, backends: [{ address: 192.0.2.13 }] }
",
    );
    let g = compiled(&p);
    let info: Vec<(u8, u32)> = g
        .pools
        .iter()
        .map(|p| (p.scheduler, p.maglev_size))
        .collect();
    assert_eq!(
        info,
        [
            (Scheduler::IpHash as u8, 1009),
            (Scheduler::RoundRobin as u8, 0),
            (Scheduler::Maglev as u8, 251)
        ]
    );
    let shares = maglev_shares(&g, "h");
    assert_eq!(shares.len(), 2);
    let (_, v6) = backend(&g, "h", "2001:db8:200::11");
    assert_eq!(v6.family, 6);
}

/// First match evaluated on the policy itself.
fn first_match(p: &Policy, source: &str, protocol: u8, port: Option<u16>) -> bool {
    let src = ip(source);
    for r in &p.acl {
        if !r.source.contains(&src) {
            continue;
        }
        let proto_ok = match r.protocol {
            None => true,
            Some(Protocol::Tcp) => protocol == PROTO_TCP,
            Some(Protocol::Udp) => protocol == PROTO_UDP,
        };
        let port_ok = r.ports.is_empty()
            || (matches!(protocol, PROTO_TCP | PROTO_UDP)
                && port.is_some_and(|port| r.ports.iter().any(|range| range.contains(port))));
        if proto_ok && port_ok {
            return r.action == AclAction::Allow;
        }
    }
    true
}

#[test]
fn acl_groups_keep_first_match() {
    let p = policy(&format!(
        "
acl:
  - {{ deny: 10.0.0.0/8, ports: [443] }}
  - {{ allow: 10.1.0.0/16 }}
  - {{ deny: 10.0.0.0/8, protocol: udp }}
  - {{ deny: 198.18.0.0/15 }}
  - {{ deny: 10.2.2.0/24, ports: [\"8000-8010\", 9000], protocol: tcp }}
  - {{ allow: \"2001:db8:bad:1::/64\" }}
  - {{ deny: \"2001:db8:bad::/48\" }}
services:
  - {{ name: s, vip: 203.0.113.10, ports: [80], routes: [{{ pool: p }}] }}
{ONE_POOL}"
    ));
    let g = compiled(&p);
    const ICMP: u8 = 1;
    let cases: &[(&str, u8, Option<u16>, bool)] = &[
        // The broad deny of 443 comes first, so it holds for the narrow allowed prefix too.
        ("10.1.2.3", PROTO_TCP, Some(443), false),
        ("10.1.2.3", PROTO_UDP, Some(443), false),
        ("10.1.2.3", PROTO_TCP, Some(80), true),
        // The allow of 10.1/16 comes before the later UDP deny and the /24's port deny.
        ("10.1.2.3", PROTO_UDP, Some(53), true),
        ("10.1.2.3", PROTO_TCP, Some(8005), true),
        ("10.1.2.3", ICMP, None, true),
        ("10.2.2.3", PROTO_TCP, Some(8005), false),
        ("10.2.2.3", PROTO_TCP, Some(9000), false),
        ("10.2.2.3", PROTO_TCP, Some(80), true),
        ("10.2.2.3", PROTO_UDP, Some(8005), false),
        ("10.2.0.1", PROTO_TCP, Some(8005), true),
        ("10.2.0.1", PROTO_TCP, Some(443), false),
        ("10.2.0.1", PROTO_UDP, Some(53), false),
        ("10.2.0.1", PROTO_TCP, Some(80), true),
        ("10.2.0.1", ICMP, None, true),
        ("198.19.255.255", ICMP, None, false),
        ("198.18.0.1", PROTO_TCP, Some(80), false),
        ("192.0.2.1", PROTO_TCP, Some(443), true),
        ("2001:db8:bad:1::5", PROTO_TCP, Some(443), true),
        ("2001:db8:bad:2::5", PROTO_TCP, Some(443), false),
        ("2001:db8:bad:2::5", ICMP, None, false),
        ("2001:db8:beef::5", PROTO_TCP, Some(443), true),
    ];
    for &(source, proto, port, allowed) in cases {
        assert_eq!(
            acl_allows(&g, source, proto, port),
            allowed,
            "{source} {proto} {port:?}"
        );
        assert_eq!(first_match(&p, source, proto, port), allowed, "reference");
    }
    // A sweep over sources and ports agrees with first match on the policy.
    let sources = [
        "10.0.0.1",
        "10.1.0.1",
        "10.1.2.200",
        "10.1.3.1",
        "10.2.2.9",
        "10.255.0.1",
        "11.0.0.1",
        "198.18.7.7",
        "2001:db8:bad::1",
        "2001:db8:bad:1::1",
    ];
    for source in sources {
        for proto in [PROTO_TCP, PROTO_UDP, ICMP] {
            for port in [
                None,
                Some(1),
                Some(53),
                Some(443),
                Some(8000),
                Some(9000),
                Some(65535),
            ] {
                let port = if proto == ICMP { None } else { port };
                assert_eq!(
                    acl_allows(&g, source, proto, port),
                    first_match(&p, source, proto, port),
                    "{source} {proto} {port:?}"
                );
            }
        }
    }
    // Six distinct prefixes, six leaves; no two have the same rule list here.
    assert_eq!(g.acl_groups.len(), 6);
}

#[test]
fn demo_acl() {
    let p = demo();
    let g = compiled(&p);
    assert!(!acl_allows(&g, "198.18.0.9", PROTO_TCP, Some(443)));
    assert!(!acl_allows(&g, "10.99.3.4", PROTO_TCP, Some(443)));
    assert!(acl_allows(&g, "10.99.3.4", PROTO_UDP, Some(443)));
    assert!(acl_allows(&g, "10.99.3.4", PROTO_TCP, Some(8080)));
    assert!(acl_allows(&g, "192.0.2.99", PROTO_TCP, Some(443)));
    assert!(g.acl_lpm_v6.is_empty());
}
