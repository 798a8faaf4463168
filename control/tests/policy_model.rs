//! Valid policies and the model they resolve to: defaults, resolved references, notations.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_control::policy::{
    self, AclAction, Encap, Percent, Policy, PortRange, Probe, Protocol, RateLimit, Residency,
    RollbackGates, Rollout, Scheduler, SignalGate, DEFAULT_MAGLEV_SIZE,
};

fn configs() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))
}

fn parse(src: &str) -> Policy {
    policy::parse_str(src, "test.yaml").unwrap_or_else(|errors| panic!("{errors}"))
}

/// A one-service policy around `pool_body` (the YAML of pool `p`, indented by four).
fn with_pool(top: &str, pool_body: &str) -> String {
    format!(
        "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24, 2001:db8::1/64]
{top}
services:
  - name: svc
    vip: 203.0.113.10
    ports: [443]
    routes:
      - {{ pool: p }}
pools:
  p:
{pool_body}
"
    )
}

#[test]
fn demo_resolves_names_into_ids() {
    let policy = policy::load(&configs().join("demo.yaml")).expect("demo validates");
    assert_eq!(policy.services.len(), 2);
    assert_eq!(policy.pools.len(), 4);
    assert_eq!(policy.backend_count(), 9);
    assert_eq!(policy.regions.len(), 2);

    let eu = policy.region_by_name("eu-west").expect("eu-west");
    let us = policy.region_by_name("us-east").expect("us-east");
    let llama_eu = policy.pool_by_name("llama-eu").expect("llama-eu");
    let llama_us = policy.pool_by_name("llama-us").expect("llama-us");
    let canary_pool = policy.pool_by_name("llama-v2-us").expect("canary pool");
    assert_eq!(policy.pool(llama_eu).region, Some(eu));
    assert_eq!(policy.region(eu).name, "eu-west");

    let llama = policy.service_by_name("llama-70b").expect("llama-70b");
    assert_eq!(llama.vip, "203.0.113.10/32".parse().unwrap());
    assert_eq!(llama.ports, [PortRange::single(443)]);
    assert_eq!(llama.protocol, Protocol::Tcp);

    let [eu_route, us_route, rest] = llama.routes.as_slice() else {
        panic!("three routes: {:?}", llama.routes);
    };
    assert_eq!(
        (eu_route.from, eu_route.pool, eu_route.residency),
        (Some(eu), llama_eu, Residency::Strict)
    );
    assert!(eu_route.fallback.is_empty());
    // The canary pool is in us-east, so the strict EU route keeps all its clients.
    assert!(!eu_route.takes_canary);
    assert_eq!((us_route.from, us_route.pool), (Some(us), llama_us));
    assert_eq!(us_route.fallback, [llama_eu]);
    assert_eq!(us_route.residency, Residency::Preferred);
    assert!(us_route.takes_canary);
    assert_eq!((rest.from, rest.pool), (None, llama_us));
    assert!(rest.takes_canary);

    let canary = llama.canary.as_ref().expect("canary");
    assert_eq!(canary.pool, canary_pool);
    assert_eq!(canary.percent.basis_points(), 500);
    assert_eq!(canary.percent.to_string(), "5%");

    let sdxl = policy.service_by_name("sdxl").expect("sdxl");
    assert_eq!(
        sdxl.ports,
        [
            PortRange::single(8080),
            PortRange {
                first: 9000,
                last: 9003
            }
        ]
    );

    let pool = policy.pool(llama_eu);
    assert_eq!(
        pool.scheduler,
        Scheduler::Maglev {
            table_size: DEFAULT_MAGLEV_SIZE
        }
    );
    let health = pool.health.as_ref().expect("health");
    assert_eq!(
        health.probe,
        Probe::Http {
            port: 8000,
            path: "/v1/models".into(),
            expect_status: 200,
            expect_model: Some("llama-70b".into()),
        }
    );
    assert_eq!(
        (health.interval, health.timeout, health.rise, health.fall),
        (Duration::from_secs(1), Duration::from_millis(500), 2, 3)
    );
    let load = pool.load.as_ref().expect("load");
    assert_eq!(
        load.signals,
        ["vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"]
    );
    assert_eq!((load.min_weight, load.max_weight), (10, u16::MAX));
    assert_eq!(pool.backends[2].weight, 50);
    assert_eq!(pool.backends[2].name.as_deref(), Some("gpu-eu-3"));

    let us_pool = policy.pool(llama_us);
    assert_eq!(us_pool.backends[0].weight, 100, "default weight");
    assert_eq!(us_pool.backends[2].weight, 0, "drained");
    assert_eq!(
        us_pool.load.as_ref().expect("load").metrics_path,
        "/metrics"
    );

    let sdxl_pool = policy.pool(policy.pool_by_name("sdxl-us").expect("sdxl-us"));
    assert_eq!(sdxl_pool.scheduler, Scheduler::LeastConn);
    assert_eq!(
        sdxl_pool.health.as_ref().expect("health").probe,
        Probe::Tcp { port: 8080 }
    );

    assert_eq!(policy.acl.len(), 3);
    assert_eq!(policy.acl[0].action, AclAction::Deny);
    assert_eq!(policy.acl[1].protocol, Some(Protocol::Tcp));
    assert_eq!(policy.acl[2].action, AclAction::Allow);
    assert_eq!(
        policy.limits.new_flows_per_source,
        Some(RateLimit {
            per_second: 200,
            burst: 400
        })
    );
    assert_eq!(
        policy.interfaces[0]
            .gateway
            .as_ref()
            .expect("gateway")
            .mac
            .map(|m| m.to_string())
            .as_deref(),
        Some("02:00:00:00:00:fe")
    );
}

#[test]
fn minimal_takes_every_default() {
    let policy = policy::load(&configs().join("minimal.yaml")).expect("minimal validates");
    assert_eq!(policy.encap, Encap::Ipip);
    assert!(policy.regions.is_empty());
    assert!(policy.acl.is_empty());
    assert_eq!(policy.limits.new_flows_per_source, None);
    assert_eq!(policy.limits.icmp_per_second, 100);
    assert_eq!(policy.encap_source.ipv4.to_string(), "172.16.0.0/16");
    assert_eq!(policy.encap_source.ipv6.to_string(), "fd00:5359::/64");
    assert_eq!(
        policy.flow_timeouts.tcp_established,
        std::time::Duration::from_secs(900)
    );
    assert_eq!(policy.flow_timeouts.udp, std::time::Duration::from_secs(30));
    assert_eq!(policy.tables.maglev_size, 65_537);
    assert_eq!(policy.backend_mtu, 1500);
    let pool = &policy.pools[0];
    assert_eq!(pool.scheduler, Scheduler::Maglev { table_size: 65_537 });
    assert_eq!(pool.health, None);
    assert_eq!(pool.backends[0].weight, 100);
    assert_eq!(policy.services[0].protocol, Protocol::Tcp);
    assert_eq!(policy.services[0].routes[0].residency, Residency::Preferred);
}

#[test]
fn backend_mtu_reaches_the_compiled_config() {
    let src = with_pool(
        "backend_mtu: 9000",
        "    backends: [{ address: 192.0.2.10 }]",
    );
    let policy = parse(&src);
    assert_eq!(policy.backend_mtu, 9000);
    let state = BackendState::new();
    let input = CompileInput {
        policy: &policy,
        generation: 1,
        state: &state,
    };
    let g = compile(&input, &mut BackendIds::new()).expect("compiles");
    assert_eq!(g.config.backend_mtu, 9000);
    for (bad, shown) in [("1279", "1279"), ("9601", "9601"), ("-1", "-1")] {
        let src = with_pool(
            &format!("backend_mtu: {bad}"),
            "    backends: [{ address: 192.0.2.10 }]",
        );
        let errors = policy::parse_str(&src, "test.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains(&format!(
                "backend_mtu: backend_mtu {shown} is out of range 1280..=9600"
            )),
            "{errors}"
        );
    }
}

#[test]
fn encapsulation_forms() {
    for (top, expected) in [
        ("encap: ipip", Encap::Ipip),
        ("encap: gue", Encap::Gue { port: 6080 }),
        ("encap: { gue: { port: 6081 } }", Encap::Gue { port: 6081 }),
        ("encap: { gue: {} }", Encap::Gue { port: 6080 }),
    ] {
        let policy = parse(&with_pool(top, "    backends: [{ address: 192.0.2.10 }]"));
        assert_eq!(policy.encap, expected, "{top}");
    }
}

#[test]
fn percent_notations() {
    for (written, basis_points) in [("0", 0), ("0.5", 50), ("\"12.25%\"", 1225), ("100", 10_000)] {
        let src = with_pool("", "    backends: [{ address: 192.0.2.10 }]").replace(
            "      - { pool: p }\n",
            &format!("      - {{ pool: p }}\n    canary: {{ pool: c, percent: {written} }}\n"),
        ) + "  c:\n    backends: [{ address: 192.0.2.11 }]\n";
        let policy = parse(&src);
        let canary = policy.services[0].canary.as_ref().expect("canary");
        assert_eq!(
            canary.percent,
            Percent::from_basis_points(basis_points).unwrap(),
            "{written}"
        );
    }
}

#[test]
fn schedulers_and_table_sizes() {
    let policy = parse(&with_pool(
        "tables: { maglev_size: 251 }",
        "    backends: [{ address: 192.0.2.10 }]",
    ));
    assert_eq!(
        policy.pools[0].scheduler,
        Scheduler::Maglev { table_size: 251 }
    );

    let policy = parse(&with_pool(
        "tables: { maglev_size: 251 }",
        "    maglev_size: 1009\n    backends: [{ address: 192.0.2.10 }]",
    ));
    assert_eq!(
        policy.pools[0].scheduler,
        Scheduler::Maglev { table_size: 1009 }
    );

    for (name, expected) in [
        ("ip_hash", Scheduler::IpHash),
        ("round_robin", Scheduler::RoundRobin),
        ("least_conn", Scheduler::LeastConn),
        ("weighted", Scheduler::Weighted),
    ] {
        let policy = parse(&with_pool(
            "",
            &format!("    scheduler: {name}\n    backends: [{{ address: 192.0.2.10 }}]"),
        ));
        assert_eq!(policy.pools[0].scheduler, expected);
    }
}

#[test]
fn health_defaults_follow_the_interval() {
    let policy = parse(&with_pool(
        "",
        "    health: { tcp: { port: 8000 }, interval: 500ms }\n    backends: [{ address: 192.0.2.10 }]",
    ));
    let health = policy.pools[0].health.as_ref().expect("health");
    // Without a timeout, the probe may take the whole interval (at most 1s).
    assert_eq!(health.timeout, Duration::from_millis(500));
    assert_eq!((health.rise, health.fall), (2, 3));

    let policy = parse(&with_pool(
        "",
        "    health: { http: { port: 8000 } }\n    backends: [{ address: 192.0.2.10 }]",
    ));
    let health = policy.pools[0].health.as_ref().expect("health");
    assert_eq!(
        (health.interval, health.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    let Probe::Http {
        path,
        expect_status,
        ..
    } = &health.probe
    else {
        panic!("http probe");
    };
    assert_eq!((path.as_str(), *expect_status), ("/health", 200));
}

#[test]
fn merge_keys_share_blocks_between_pools() {
    let src = "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
services:
  - name: svc
    vip: 203.0.113.10
    ports: [443]
    routes:
      - { pool: a, fallback: [b] }
pools:
  a:
    health: &health { http: { port: 8000, path: /v1/models }, interval: 1s, timeout: 250ms }
    backends: [{ address: 192.0.2.10 }]
  b:
    health:
      <<: *health
      rise: 5
    backends: [{ address: 192.0.2.11 }]
";
    let policy = parse(src);
    let a = policy.pools[0].health.as_ref().expect("a");
    let b = policy.pools[1].health.as_ref().expect("b");
    assert_eq!(a.probe, b.probe);
    assert_eq!(b.timeout, Duration::from_millis(250));
    assert_eq!((a.rise, b.rise), (2, 5));
}

#[test]
fn geoip_regions_and_relative_database_path() {
    let src = "geoip_database: GeoLite2-Country.mmdb
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
regions:
  nordics: { geoip: { countries: [NO, SE, DK] } }
  us-east: { prefixes: [10.2.0.0/16], geoip: { countries: [US, CA] } }
services:
  - name: svc
    vip: 2001:db8:ff::10
    ports: [\"8000-8010\", 443]
    protocol: udp
    routes:
      - { from: nordics, pool: p }
      - { from: us-east, pool: p }
pools:
  p:
    backends: [{ address: 192.0.2.10 }]
";
    let dir = std::env::temp_dir().join(format!("switchyard-policy-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("geo.yaml");
    std::fs::write(&file, src).expect("write");
    let policy = policy::load(&file).expect("validates");
    std::fs::remove_dir_all(&dir).expect("clean up");

    assert_eq!(
        policy.geoip_database,
        Some(dir.join("GeoLite2-Country.mmdb"))
    );
    // `NO` stays Norway: the YAML 1.1 boolean reading does not apply to text fields.
    let codes: Vec<&str> = policy.regions[0]
        .geoip_countries
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(codes, ["NO", "SE", "DK"]);
    assert_eq!(policy.regions[1].prefixes, ["10.2.0.0/16".parse().unwrap()]);
    let service = &policy.services[0];
    assert_eq!(
        service.vip.addr(),
        "2001:db8:ff::10".parse::<IpAddr>().unwrap()
    );
    assert_eq!(service.protocol, Protocol::Udp);
    assert_eq!(
        service.ports,
        [
            PortRange::single(443),
            PortRange {
                first: 8000,
                last: 8010
            }
        ],
        "sorted"
    );

    // parse_str keeps the path as written: it has no directory to resolve against.
    let policy = policy::parse_str(src, "geo.yaml").expect("validates");
    assert_eq!(
        policy.geoip_database.as_deref(),
        Some(Path::new("GeoLite2-Country.mmdb"))
    );
}

#[test]
fn acl_rules_that_differ_in_protocol_or_ports_are_all_kept() {
    let policy = parse(&with_pool(
        "acl:
  - { deny: 203.0.113.0/24, ports: [\"1-1024\"], protocol: tcp }
  - { allow: 203.0.113.7, ports: [443], protocol: udp }
  - { allow: 203.0.113.7, ports: [2000] }
  - { deny: 2001:db8::/32 }",
        "    backends: [{ address: 192.0.2.10 }]",
    ));
    assert_eq!(policy.acl.len(), 4);
    assert_eq!(policy.acl[1].source, "203.0.113.7/32".parse().unwrap());
    assert!(policy.acl[3].ports.is_empty());
}

#[test]
fn nested_region_prefixes_are_allowed() {
    let policy = parse(&with_pool(
        "regions:\n  eu: { prefixes: [10.0.0.0/8] }\n  eu-paris: { prefixes: [10.1.0.0/16] }",
        "    backends: [{ address: 192.0.2.10 }]",
    ));
    assert_eq!(policy.regions.len(), 2);
}

/// `with_pool` plus a canary pool `c` (scraped, so it can carry a signal gate) and `canary`.
fn with_canary(canary: &str) -> String {
    with_pool("", "    backends: [{ address: 192.0.2.10 }]").replace(
        "      - { pool: p }\n",
        &format!("      - {{ pool: p }}\n    canary: {canary}\n"),
    ) + "  c:
    load: { metrics: { port: 8000 }, signals: [vllm:num_requests_waiting] }
    backends: [{ address: 192.0.2.11 }]
"
}

#[test]
fn phased_canary_resolves_steps_interval_and_gates() {
    let policy = parse(&with_canary(
        "
      pool: c
      steps: [1, 5, 25, 100]
      step_interval: 5m
      rollback:
        backends_down: 2
        signal: { metric: switchyard_test_request_errors_total, max_rate: 0.5 }",
    ));
    let canary = policy.services[0].canary.as_ref().expect("canary");
    assert_eq!(canary.pool, policy.pool_by_name("c").unwrap());
    // A fresh compile starts at the first step.
    assert_eq!(canary.percent, Percent::from_basis_points(100).unwrap());
    assert_eq!(
        canary.rollout,
        Some(Rollout {
            steps: [100, 500, 2_500, 10_000]
                .map(|bp| Percent::from_basis_points(bp).unwrap())
                .to_vec(),
            step_interval: Duration::from_secs(300),
            rollback: RollbackGates {
                backends_down: 2,
                signal: Some(SignalGate {
                    metric: "switchyard_test_request_errors_total".into(),
                    max_rate: 0.5,
                }),
            },
        })
    );
}

#[test]
fn phased_canary_defaults_and_notations() {
    let policy = parse(&with_canary(
        "{ pool: c, steps: [0.5, \"2.5%\", 50], step_interval: 1h }",
    ));
    let rollout = policy.services[0]
        .canary
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap();
    assert_eq!(
        rollout
            .steps
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["0.5%", "2.5%", "50%"]
    );
    assert_eq!(rollout.step_interval, Duration::from_secs(3_600));
    assert_eq!(
        rollout.rollback,
        RollbackGates {
            backends_down: 1,
            signal: None
        }
    );

    // A whole-number rate is a rate too; 0 trips on the first error.
    let policy = parse(&with_canary(
        "{ pool: c, steps: [100], step_interval: 1s, rollback: { signal: { metric: errors, max_rate: 0 } } }",
    ));
    let rollout = policy.services[0]
        .canary
        .as_ref()
        .unwrap()
        .rollout
        .as_ref()
        .unwrap();
    assert_eq!(rollout.steps, [Percent::FULL]);
    assert_eq!(rollout.rollback.signal.as_ref().unwrap().max_rate, 0.0);

    // A fixed canary has no rollout.
    let policy = parse(&with_canary("{ pool: c, percent: 5 }"));
    assert_eq!(policy.services[0].canary.as_ref().unwrap().rollout, None);
}

#[test]
fn phased_canary_compiles_at_its_first_step() {
    let policy = parse(&with_canary(
        "{ pool: c, steps: [2, 50], step_interval: 5m }",
    ));
    let state = BackendState::new();
    let input = CompileInput {
        policy: &policy,
        generation: 1,
        state: &state,
    };
    let g = compile(&input, &mut BackendIds::new()).expect("compiles");
    assert_eq!(g.routes[0].canary_per_million, 20_000);
}

#[test]
fn encap_source_and_flow_timeouts_reach_the_compiled_config() {
    let src = with_pool(
        "encap_source: { ipv4: 100.64.0.0/24, ipv6: \"2001:db8:5359::/96\" }\n\
         flow_timeouts: { tcp_handshake: 3s, tcp_established: 2h, tcp_closing: 20s, udp: 1m }",
        "    backends: [{ address: 192.0.2.10 }]",
    );
    let policy = parse(&src);
    let state = BackendState::new();
    let input = CompileInput {
        policy: &policy,
        generation: 1,
        state: &state,
    };
    let c = compile(&input, &mut BackendIds::new())
        .expect("compiles")
        .config;
    assert_eq!((c.outer_src_v4, c.outer_src_v4_len), ([100, 64, 0, 0], 24));
    assert_eq!(
        (std::net::Ipv6Addr::from(c.outer_src_v6), c.outer_src_v6_len),
        ("2001:db8:5359::".parse().unwrap(), 96)
    );
    assert_eq!(
        (
            c.tcp_syn_timeout,
            c.tcp_established_timeout,
            c.tcp_closing_timeout,
            c.udp_timeout
        ),
        (3, 7200, 20, 60)
    );

    // Left out: today's defaults, which are also the table's.
    let plain = parse(&with_pool("", "    backends: [{ address: 192.0.2.10 }]"));
    let input = CompileInput {
        policy: &plain,
        generation: 1,
        state: &state,
    };
    let c = compile(&input, &mut BackendIds::new())
        .expect("compiles")
        .config;
    let d = switchyard_table::generation::Config::default();
    assert_eq!(
        (
            c.outer_src_v4,
            c.outer_src_v4_len,
            c.outer_src_v6,
            c.outer_src_v6_len
        ),
        (
            d.outer_src_v4,
            d.outer_src_v4_len,
            d.outer_src_v6,
            d.outer_src_v6_len
        )
    );
    assert_eq!(
        (c.tcp_syn_timeout, c.tcp_established_timeout, c.udp_timeout),
        (5, 900, 30)
    );

    for (bad, message) in [
        ("ipv4: 10.0.0.0/4", "10.0.0.0/4 has host bits set"),
        ("ipv4: 0.0.0.0/8", "\"this network\""),
        ("ipv4: 127.1.0.0/16", "loopback"),
        ("ipv4: \"2001:db8::/64\"", "is not an IPv4 prefix"),
        ("ipv6: \"ff02::/64\"", "multicast"),
        ("ipv6: \"fe80::/64\"", "link-local"),
        ("ipv4: 169.254.0.0/16", "link-local"),
        ("ipv4: 240.0.0.0/8", "reserved"),
        ("ipv4: 10.0.0.0/7", "is too broad"),
    ] {
        let src = with_pool(
            &format!("encap_source: {{ {bad} }}"),
            "    backends: [{ address: 192.0.2.10 }]",
        );
        let errors = policy::parse_str(&src, "test.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("encap_source.") && errors.contains(message),
            "{bad}: {errors}"
        );
    }

    // An interface's own prefix: same rules, its own path.
    let src = with_pool("", "    backends: [{ address: 192.0.2.10 }]").replace(
        "    addresses: [192.0.2.1/24, 2001:db8::1/64]\n",
        "    addresses: [192.0.2.1/24, 2001:db8::1/64]\n    encap_source: { ipv4: 224.0.0.0/24, ipv6: \"fd00:1::/48\" }\n",
    );
    let errors = policy::parse_str(&src, "test.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("interfaces[0].encap_source.ipv4: 224.0.0.0/24 is multicast"),
        "{errors}"
    );
    assert!(!errors.contains("encap_source.ipv6"), "{errors}");
    let policy = parse(&src.replace("224.0.0.0/24", "100.64.1.0/24"));
    let it = &policy.interfaces[0];
    assert_eq!(
        (
            it.encap_source_ipv4.map(|n| n.to_string()),
            it.encap_source_ipv6.map(|n| n.to_string())
        ),
        (
            Some("100.64.1.0/24".to_owned()),
            Some("fd00:1::/48".to_owned())
        )
    );
}
