//! Broken policies and the exact diagnostics they produce.
//!
//! Each fixture under `tests/policies/` is one case: the whole error report, one line per
//! problem in `FILE:LINE:COL: PATH: MESSAGE` form, is compared verbatim, so a change to a
//! message or a position shows up here. A fixture without a case fails
//! `every_fixture_has_a_case`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_control::policy::{self, MAX_DEPTH, MAX_POLICY_BYTES};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policies")
}

/// The error report for a fixture, labelled with its file name.
fn report(file: &str) -> Vec<String> {
    let src = std::fs::read_to_string(fixtures_dir().join(file)).expect("fixture is readable");
    match policy::parse_str(&src, file) {
        Ok(_) => panic!("{file} validated, but it is a broken fixture"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

macro_rules! cases {
    ($($name:ident => [$($line:expr),* $(,)?],)*) => {
        $(
            #[test]
            fn $name() {
                let file = concat!(stringify!($name), ".yaml");
                let expected: &[&str] = &[$($line),*];
                assert_eq!(report(file), expected, "diagnostics of {file}");
            }
        )*

        const FIXTURES: &[&str] = &[$(concat!(stringify!($name), ".yaml")),*];
    };
}

cases! {
    service_acl => [
        "service_acl.yaml:12:36: services[0].acl[0]: an ACL rule has `allow:` or `deny:`, not both",
        "service_acl.yaml:14:9: services[0].acl[2]: rule can never match: services[0].acl[1] (deny 0.0.0.0/0) above it matches every packet this one would",
        "service_acl.yaml:20:52: limits.new_flows_per_source.ipv6_prefix: ipv6_prefix 65 is out of range 0..=64",
    ],
    acl => [
        "acl.yaml:16:32: acl[0]: an ACL rule has `allow:` or `deny:`, not both",
        "acl.yaml:17:5: acl[1]: an ACL rule needs `allow: PREFIX` or `deny: PREFIX`",
        "acl.yaml:18:35: acl[2].ports: ports is empty; leave it out to match every port",
        "acl.yaml:20:5: acl[4]: rule can never match: acl[3] (deny 203.0.113.0/24) above it matches every packet this one would",
        "acl.yaml:22:13: acl[6].deny: 198.51.100.9/16 has host bits set; did you mean 198.51.0.0/16?",
    ],
    addresses => [
        "addresses.yaml:7:10: services[0].vip: VIP 198.51.100.1 is an address of interface `uplink`; VIPs and interface addresses must differ",
        "addresses.yaml:12:10: services[1].vip: VIP 224.0.0.5 is a multicast address; a VIP must be unicast",
        "addresses.yaml:19:20: pools.web.backends[0].address: 127.0.0.1 is a loopback address; a backend needs a unicast address",
        "addresses.yaml:20:20: pools.web.backends[1].address: no interface has an IPv6 address to send encapsulated packets to 2001:db8::10 from",
        "addresses.yaml:21:20: pools.web.backends[2].address: 192.0.2.10 is not on any interface subnet and no interface has a `gateway.ipv4`",
        "addresses.yaml:22:20: pools.web.backends[3].address: expected an IP address without a prefix length, found `198.51.100.20/32`",
        "addresses.yaml:23:43: pools.web.backends[4].weight: weight -1 is out of range 0..=65535",
    ],
    bad_ports => [
        "bad_ports.yaml:8:13: services[0].ports[0]: port 0 is out of range 1..=65535",
        "bad_ports.yaml:8:16: services[0].ports[1]: port range 8010-8000 is backwards; did you mean 8000-8010?",
        "bad_ports.yaml:8:29: services[0].ports[2]: port 70000 is out of range 1..=65535",
        "bad_ports.yaml:8:49: services[0].ports[4]: port 9005 is already in 9000-9010 (ports[3])",
        "bad_ports.yaml:13:12: services[1].ports: ports is empty; a service needs at least one port",
    ],
    billion_laughs => [
        "billion_laughs.yaml:6:12: aliases expand to more than 20000 YAML events; this looks like an alias bomb (billion laughs) and is rejected",
    ],
    canary_rollout => [
        "canary_rollout.yaml:10:46: services[0].canary.steps: a canary has `percent:` (a fixed share) or `steps:` (a phased rollout), not both",
        "canary_rollout.yaml:15:13: services[1].canary: a canary needs `percent: N` (a fixed share) or `steps: [..]` with `step_interval` (a phased rollout)",
        "canary_rollout.yaml:20:34: services[2].canary.steps: steps is empty; list the shares to go through, e.g. [1, 5, 25, 100]",
        "canary_rollout.yaml:25:35: services[3].canary.steps[0]: step 0% sends no flows; every step must be above 0 (a fixed `percent: 0` parks a canary)",
        "canary_rollout.yaml:25:41: services[3].canary.steps[2]: step 5% is not above steps[1] (5%); steps must increase",
        "canary_rollout.yaml:25:44: services[3].canary.steps[3]: step 2% is not above steps[2] (5%); steps must increase",
        "canary_rollout.yaml:25:47: services[3].canary.steps[4]: percent 150 is out of range 0..=100",
        "canary_rollout.yaml:30:59: services[4].canary.step_interval: step_interval 500ms is out of range 1s..=168h",
        "canary_rollout.yaml:35:13: services[5].canary.step_interval: a phased canary needs `step_interval`: how long each step lasts, e.g. 5m",
        "canary_rollout.yaml:40:54: services[6].canary.step_interval: step_interval only applies to a phased canary (`steps:`); a canary with `percent:` stays at that share",
        "canary_rollout.yaml:40:68: services[6].canary.rollback: rollback only applies to a phased canary (`steps:`); a canary with `percent:` stays at that share",
        "canary_rollout.yaml:48:22: services[7].canary.step_interval: duration `5` needs a unit: 5ms, 5s or 5m",
        "canary_rollout.yaml:49:34: services[7].canary.rollback.backends_down: backends_down 0 is out of range 1..=4294967295",
        "canary_rollout.yaml:49:55: services[7].canary.rollback.signal.metric: `errors total` is not a Prometheus metric name",
        "canary_rollout.yaml:49:81: services[7].canary.rollback.signal.max_rate: max_rate -0.5 must be a number of 0 or more (per second)",
        "canary_rollout.yaml:58:27: services[8].canary.rollback.signal: the signal gate reads `errors_total` from the canary pool's metrics endpoint, but pool `quiet` has no `load:` saying where that is; give it `load: { metrics: { port: PORT }, .. }`",
    ],
    duplicate_names => [
        "duplicate_names.yaml:11:11: services[1].name: service `llama` is defined twice (first as services[0] at 6:11)",
        "duplicate_names.yaml:20:38: pools.llama.backends[1].name: backend name `gpu-1` is used twice in this pool (also backends[0])",
        "duplicate_names.yaml:21:3: pools.llama: pool `llama` is defined twice (first at 17:3)",
    ],
    encap_port => [
        "encap_port.yaml:5:23: encap.gue.port: port 0 is out of range 1..=65535",
    ],
    encap_unknown => [
        "encap_unknown.yaml:5:1: unknown value `vxlan`; expected one of: ipip, gue",
    ],
    health => [
        "health.yaml:15:12: pools.both.health.tcp: choose one probe: `http` or `tcp`, not both",
        "health.yaml:19:13: pools.neither.health: a health check needs a probe: `http: { port, path }` or `tcp: { port }`",
        "health.yaml:19:25: pools.neither.health.interval: interval 10ms is out of range 100ms..=1h",
        "health.yaml:19:37: pools.neither.health.fall: fall 0 is out of range 1..=100",
        "health.yaml:24:21: pools.bad-http.health.http.port: port 70000 is out of range 1..=65535",
        "health.yaml:24:34: pools.bad-http.health.http.path: HTTP path `v1/models` must start with `/`",
        "health.yaml:24:60: pools.bad-http.health.http.expect_status: expect_status 700 is out of range 100..=599",
        "health.yaml:24:79: pools.bad-http.health.http.expect_model: expect_model is empty",
        "health.yaml:25:16: pools.bad-http.health.timeout: timeout must be longer than 0",
    ],
    host_bits => [
        "host_bits.yaml:6:25: regions.eu-west.prefixes[0]: 10.1.0.1/16 has host bits set; did you mean 10.1.0.0/16?",
    ],
    interfaces => [
        "interfaces.yaml:3:10: interfaces[0].mac: `02:00:00:00:00` is not a MAC address (expected six hex pairs like 02:00:00:00:00:01)",
        "interfaces.yaml:4:17: interfaces[0].addresses[0]: interface address `198.51.100.1` needs a prefix length, e.g. 198.51.100.1/24",
        "interfaces.yaml:5:11: interfaces[1].name: interface `uplink` is defined twice (first at 2:11)",
        "interfaces.yaml:6:10: interfaces[1].mac: 03:00:00:00:00:01 is not a unicast MAC address",
        "interfaces.yaml:7:17: interfaces[1].addresses[0]: 198.51.100.0/24 is the network address of its subnet; an interface address needs a host part, e.g. 198.51.100.1/24",
        "interfaces.yaml:8:14: interfaces[1].gateway: a gateway needs `ipv4`, `ipv6` or both",
        "interfaces.yaml:11:31: interfaces[2].addresses[1]: address 2001:db8::1 is already on interface `uplink`",
        "interfaces.yaml:12:22: interfaces[2].gateway.ipv4: gateway 192.0.2.1 is this interface's own address",
        "interfaces.yaml:12:39: interfaces[2].gateway.ipv6: `ipv6` must be an IPv6 address, found 192.0.2.254",
    ],
    limits_tables => [
        "limits_tables.yaml:15:7: pools.echo.backends: 3 backends do not fit a Maglev table of 2 slots; raise maglev_size",
        "limits_tables.yaml:18:3: pools.empty: pool `empty` is not used by any route, fallback or canary; route to it or remove it",
        "limits_tables.yaml:19:15: pools.empty.backends: a pool needs at least one backend (set `weight: 0` to drain one instead of removing it)",
        "limits_tables.yaml:21:33: limits.new_flows_per_source.rate: rate 0/s is zero; leave the limit out to not limit",
        "limits_tables.yaml:21:45: limits.new_flows_per_source.burst: burst 0 is out of range 1..=4294967295",
        "limits_tables.yaml:22:20: limits.icmp_per_second: icmp_per_second -1 is out of range 0..=10000000",
        "limits_tables.yaml:24:21: tables.flows_per_worker: the connection table is not a policy setting: the data plane allocates it when it starts, sized by its appliance settings (`flow_table.ipv4_flows` and `flow_table.ipv6_flows` in the file given to `switchyard-dataplane --config`, docs/APPLIANCE.md); remove `flows_per_worker` from the policy",
        "limits_tables.yaml:25:23: encap_source.ipv4: 224.1.0.0/16 is multicast address space; outer sources must be unicast and routable",
        "limits_tables.yaml:25:43: encap_source.ipv6: fd00::/16 is too broad: the outer source prefix must be /32 to /128 (the flow hash fills at most the low 32 host bits)",
        "limits_tables.yaml:26:35: flow_timeouts.tcp_established: tcp_established 48h is out of range 1s..=24h",
        "limits_tables.yaml:26:45: flow_timeouts.udp: udp 1500ms is not a whole number of seconds (the connection table counts in seconds)",
        "limits_tables.yaml:26:66: flow_timeouts.tcp_closing: tcp_closing 0s is out of range 1s..=24h",
    ],
    load => [
        "load.yaml:14:36: pools.echo.load.metrics.path: HTTP path `metrics` must start with `/`",
        "load.yaml:15:44: pools.echo.load.signals[1]: `queue depth` is not a Prometheus metric name",
        "load.yaml:15:59: pools.echo.load.signals[2]: signal `vllm:num_requests_waiting` is listed twice",
        "load.yaml:16:17: pools.echo.load.interval: interval 10ms is out of range 50ms..=1h",
        "load.yaml:17:19: pools.echo.load.min_weight: min_weight 500 is above max_weight 100",
        "load.yaml:19:19: pools.echo.load.saturation: signal `my_queue` has no known saturation point; set `saturation: { my_queue: VALUE }` (the value at which a backend is saturated)",
        "load.yaml:19:35: pools.echo.load.saturation.other_metric: `other_metric` is not one of this pool's signals",
        "load.yaml:20:16: pools.echo.load.full_at: full_at 0 must be a number above 0 (1 = saturated)",
        "load.yaml:27:16: pools.quiet.load.signals: signals is empty; name the metrics that measure load, e.g. vllm:num_requests_waiting",
        "load.yaml:28:20: pools.quiet.load.stale_after: stale_after 10ms is shorter than interval 1s: every scrape would be stale",
        "load.yaml:29:16: pools.quiet.load.full_at: full_at (bounded-load affinity) only applies to `maglev` and `ip_hash` pools; this pool uses round_robin",
    ],
    maglev_not_prime => [
        "maglev_not_prime.yaml:13:18: pools.llama.maglev_size: maglev_size 65536 is not prime (Maglev tables need a prime size); the nearest primes are 65521 and 65537",
        "maglev_not_prime.yaml:17:16: tables.maglev_size: maglev_size 1000 is not prime (Maglev tables need a prime size); the nearest primes are 997 and 1009",
    ],
    many_errors => [
        "many_errors.yaml:6:22: interfaces[0].gateway.ipv4: gateway 198.51.101.254 is not on any subnet of this interface (the interface has 198.51.100.1/24)",
        "many_errors.yaml:9:25: regions.us-east.prefixes[0]: prefix 10.1.0.0/16 is already in region `eu-west`; a prefix belongs to one region (nested prefixes are fine: the longest match wins)",
        "many_errors.yaml:9:46: regions.us-east.geoip: geoip countries need `geoip_database: PATH` at the top of the policy",
        "many_errors.yaml:9:64: regions.us-east.geoip.countries[1]: country `ca` must be written in capitals: CA",
        "many_errors.yaml:15:53: services[0].routes[0].fallback[0]: pool `llama-us` has no `region:`, but this route keeps clients of region `eu-west` in their region (residency: strict); mark the pool `region: eu-west` or use residency: preferred",
        "many_errors.yaml:16:17: services[0].routes[1].from: region `ap-south` is not defined",
        "many_errors.yaml:18:21: services[0].canary.pool: pool `llama-v2` is not defined (did you mean `llama-eu`?)",
        "many_errors.yaml:18:40: services[0].canary.percent: percent 150 is out of range 0..=100",
        "many_errors.yaml:25:16: pools.llama-eu.health.timeout: timeout 2s is longer than interval 1s; a probe must finish before the next one starts",
        "many_errors.yaml:26:13: pools.llama-eu.health.rise: rise 0 is out of range 1..=100",
        "many_errors.yaml:28:40: pools.llama-eu.backends[0].weight: weight 70000 is out of range 0..=65535",
        "many_errors.yaml:29:20: pools.llama-eu.backends[1].address: backend 192.0.2.11 is listed twice in this pool (also backends[0])",
        "many_errors.yaml:32:18: pools.llama-us.maglev_size: maglev_size only applies to `scheduler: maglev`; this pool uses round_robin",
        "many_errors.yaml:37:5: acl[1]: rule can never match: acl[0] (deny 10.0.0.0/8) above it matches every packet this one would",
        "many_errors.yaml:39:33: limits.new_flows_per_source.rate: `200` is not a rate (expected a number per second like 200/s)",
    ],
    missing_field => [
        "missing_field.yaml:8:5: missing field `vip`",
    ],
    names => [
        "names.yaml:2:11: interfaces[0].name: name `up link` may only use letters, digits, `-`, `_` and `.`, and must start with a letter or digit",
        "names.yaml:6:11: services[0].name: name `llama 70b` may only use letters, digits, `-`, `_` and `.`, and must start with a letter or digit",
        "names.yaml:12:3: pools._web: name `_web` may only use letters, digits, `-`, `_` and `.`, and must start with a letter or digit",
        "names.yaml:14:38: pools._web.backends[0].name: name `gpu/1` may only use letters, digits, `-`, `_` and `.`, and must start with a letter or digit",
    ],
    no_interfaces => [
        "no_interfaces.yaml:1:13: interfaces: no interfaces are defined; the appliance needs at least one to send packets on",
        "no_interfaces.yaml:2:11: services: no services are defined; a policy needs at least one",
        "no_interfaces.yaml:3:8: pools: no pools are defined; a service needs at least one pool to send clients to",
    ],
    no_services => [
        "no_services.yaml:5:11: services: no services are defined; a policy needs at least one",
        "no_services.yaml:6:8: pools: no pools are defined; a service needs at least one pool to send clients to",
    ],
    overlapping_vips => [
        "overlapping_vips.yaml:12:10: services[1].vip: tcp port 8005 on 203.0.113.10 is already taken by service `llama` (services[0])",
    ],
    regions => [
        "regions.yaml:8:29: regions.eu-west.prefixes[1]: prefix 10.1.0.0/16 is listed twice in this region",
        "regions.yaml:11:26: regions.eu-central.geoip.countries[0]: country DE is already in region `eu-west`; a country belongs to one region",
        "regions.yaml:11:30: regions.eu-central.geoip.countries[1]: `USA` is not an ISO 3166-1 alpha-2 country code (two capital letters, like US)",
        "regions.yaml:12:10: regions.empty: region `empty` has no prefixes and no geoip countries, so no client can be in it",
        "regions.yaml:13:3: regions.eu-west: region `eu-west` is defined twice (first at 7:3)",
    ],
    residency => [
        "residency.yaml:13:32: services[0].routes[0].pool: pool `llama-us` is in region `us-east`, but this route keeps clients of region `eu-west` in their region (residency: strict); mark the pool `region: eu-west` or use residency: preferred",
        "residency.yaml:13:63: services[0].routes[0].fallback[1]: pool `llama-eu` is listed twice in fallback",
        "residency.yaml:14:53: services[0].routes[1].fallback[0]: pool `llama-us` is this route's own pool; a fallback must be another pool",
        "residency.yaml:15:38: services[0].routes[2].residency: `residency: strict` needs `from: REGION`; a catch-all route has no region to keep clients in",
        "residency.yaml:16:21: services[0].canary.pool: canary pool `llama-us` is also the pool of routes[0]; a canary needs a pool of its own",
        "residency.yaml:16:40: services[0].canary.percent: percent 0.125 has more than two decimals (the finest step is 0.01)",
        "residency.yaml:26:3: pools.llama-ap: pool `llama-ap` is not used by any route, fallback or canary; route to it or remove it",
        "residency.yaml:27:13: pools.llama-ap.region: region `ap-south` is not defined",
    ],
    syntax_error => [
        "syntax_error.yaml:3:4: while parsing a block collection, did not find expected '-' indicator",
    ],
    undefined_pool => [
        "undefined_pool.yaml:12:53: services[0].routes[0].fallback[0]: pool `llama-uss` is not defined (did you mean `llama-eu`?)",
        "undefined_pool.yaml:13:17: services[0].routes[1].pool: pool `llama-west` is not defined (did you mean `llama-eu`?)",
        "undefined_pool.yaml:14:21: services[0].canary.pool: pool `llama-v3` is not defined (did you mean `llama-eu`?)",
    ],
    unknown_field => [
        "unknown_field.yaml:14:32: unknown field `wieght` (did you mean `weight`?); expected one of: address, weight, name, state",
    ],
    unknown_scheduler => [
        "unknown_scheduler.yaml:13:16: unknown value `maglve` (did you mean `maglev`?); expected one of: maglev, ip_hash, round_robin, least_conn, weighted",
    ],
    unreachable_route => [
        "unreachable_route.yaml:13:9: services[0].routes[1]: route can never match: routes[0] above it already takes clients from region `eu-west`",
        "unreachable_route.yaml:15:9: services[0].routes[3]: route can never match: routes[2] above it has no `from:` and already takes every client",
        "unreachable_route.yaml:15:17: services[0].routes[3].from: region `us-east` is not defined",
    ],
    unused_pool => [
        "unused_pool.yaml:15:3: pools.llama-old: pool `llama-old` is not used by any route, fallback or canary; route to it or remove it",
    ],
    wrong_type => [
        "wrong_type.yaml:14:40: expected an integer, found `heavy`",
    ],
}

#[test]
fn every_fixture_has_a_case() {
    let mut files: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut known: Vec<&str> = FIXTURES.to_vec();
    known.sort_unstable();
    assert_eq!(files, known);
}

/// `configs/` also holds settings that are not policies (`appliance.yaml` for the data plane);
/// a policy is the file with a top-level `services:` key.
fn is_policy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
        && std::fs::read_to_string(path)
            .expect("readable config")
            .lines()
            .any(|line| line.starts_with("services:"))
}

#[test]
fn every_shipped_policy_validates() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&configs).expect("configs directory") {
        let path = entry.expect("entry").path();
        if is_policy(&path) {
            if let Err(errors) = policy::load(&path) {
                panic!("{} does not validate:\n{errors}", path.display());
            }
            checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    for expected in ["demo.yaml", "minimal.yaml"] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} not found in {checked:?}"
        );
    }
}

#[test]
fn alias_bomb_is_rejected_fast() {
    let started = Instant::now();
    let lines = report("billion_laughs.yaml");
    let elapsed = started.elapsed();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("alias bomb"), "{}", lines[0]);
    // A debug build on a slow CI core takes a few milliseconds; expansion would take hours.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn alias_bomb_under_a_valid_key_is_still_a_bomb() {
    let mut src =
        String::from("interfaces: []\nservices: []\npools: {}\nacl: &a [{ deny: 10.0.0.0/8 }]\n");
    let mut previous = String::from("a");
    for level in ["b", "c", "d", "e", "f", "g", "h"] {
        let aliases = vec![format!("*{previous}"); 10].join(", ");
        src.push_str(&format!("x{level}: &{level} [{aliases}]\n"));
        previous = level.to_owned();
    }
    let errors = policy::parse_str(&src, "bomb.yaml").expect_err("a bomb");
    assert_eq!(errors.len(), 1);
    let message = errors.to_string();
    assert!(message.contains("alias bomb"), "{message}");
}

#[test]
fn many_plain_aliases_are_capped() {
    let mut src =
        String::from("interfaces: []\nservices: []\npools: {}\nacl: [&a { deny: 10.0.0.0/8 }");
    src.push_str(&", *a".repeat(2_000));
    src.push_str("]\n");
    let errors = policy::parse_str(&src, "aliases.yaml").expect_err("too many aliases");
    let message = errors.to_string();
    assert!(message.starts_with("aliases.yaml:4:"), "{message}");
    assert!(
        message.contains("policy exceeds the parser budget"),
        "{message}"
    );
}

#[test]
fn deep_nesting_is_capped() {
    let depth = MAX_DEPTH + 10;
    let src = format!("interfaces: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let errors = policy::parse_str(&src, "deep.yaml").expect_err("too deep");
    let message = errors.to_string();
    assert!(
        message.starts_with("deep.yaml:1:")
            && message.contains(&format!("the limit is {MAX_DEPTH}")),
        "{message}"
    );
}

#[test]
fn oversized_source_is_refused_before_parsing() {
    let src = format!("# {}\n", "x".repeat(MAX_POLICY_BYTES));
    let errors = policy::parse_str(&src, "big.yaml").expect_err("too big");
    assert_eq!(
        errors.to_string(),
        format!(
            "big.yaml: policy is {} bytes; the limit is {MAX_POLICY_BYTES} bytes",
            src.len()
        )
    );
}

#[test]
fn document_shape_errors() {
    let cases = [
        ("", "e.yaml: policy is empty: expected a mapping with at least `interfaces`, `services` and `pools`"),
        ("# only a comment\n", "e.yaml: policy is empty: expected a mapping with at least `interfaces`, `services` and `pools`"),
        ("interfaces: []\n---\nservices: []\n", "e.yaml:2:1: a policy is a single YAML document; found another one after `---`"),
        ("[1, 2]\n", "e.yaml:1:1: expected a mapping (`key: value` lines or `{ ... }`)"),
        ("interfaces:\n  name: x\n", "e.yaml:2:3: expected a list (`- item` lines or `[ ... ]`)"),
        ("interfaces:\n  - name: [x]\n", "e.yaml:2:11: expected a single value, not a list or a mapping"),
        ("interfaces: []\nservices: []\npools: {}\ninterfaces: []\n", "e.yaml:4:1: duplicate field `interfaces`"),
        ("interfaces: *nowhere\n", "e.yaml:1:13: alias refers to an anchor that is not defined (an anchor `&name` must come before its alias `*name`)"),
        ("interfaces:\n\t- name: x\n", "e.yaml:2:2: tabs disallowed within this context (block indentation)"),
    ];
    for (src, expected) in cases {
        let errors = policy::parse_str(src, "e.yaml").expect_err(src);
        assert_eq!(errors.to_string(), expected, "source {src:?}");
    }
}

#[test]
fn unreadable_files_are_reported_with_their_name() {
    let dir = std::env::temp_dir().join(format!("switchyard-policy-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let missing = dir.join("missing.yaml");
    let errors = policy::load(&missing).expect_err("missing file");
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}: cannot open: ", missing.display())),
        "{errors}"
    );

    let binary = dir.join("binary.yaml");
    std::fs::write(&binary, b"interfaces: [\xff]\n").expect("write");
    let errors = policy::load(&binary).expect_err("not UTF-8");
    assert_eq!(
        errors.to_string(),
        format!(
            "{}: file is not UTF-8 text (invalid byte at offset 13)",
            binary.display()
        )
    );

    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn diagnostics_carry_paths_and_positions() {
    let src = std::fs::read_to_string(fixtures_dir().join("undefined_pool.yaml")).expect("fixture");
    let errors = policy::parse_str(&src, "undefined_pool.yaml").expect_err("broken");
    let first = &errors.diagnostics()[0];
    assert_eq!(
        first.path.as_deref(),
        Some("services[0].routes[0].fallback[0]")
    );
    assert_eq!(first.position.map(|p| (p.line, p.column)), Some((12, 53)));
    assert_eq!(errors.file(), "undefined_pool.yaml");
}

/// Found by the policy_parse fuzz target: a multi-line scalar quoted in a message printed as
/// several lines, the second without the file and position, so a policy could forge a line
/// that reads like another problem. Each problem is one line.
#[test]
fn a_quoted_value_with_newlines_stays_on_its_line() {
    let src = "interfaces: []\nservices:\n  - name: x\n    vip: 203.0.113.10\n    ports: [\"80\\nforged.yaml:1:1: fake\"]\n    routes: [{ pool: p }]\npools: { p: { backends: [{ address: 192.0.2.1 }] } }\n";
    let errors = policy::parse_str(src, "nl.yaml").expect_err("a bad port");
    for line in errors.to_string().lines() {
        assert!(
            line.starts_with("nl.yaml:"),
            "a line without the file: {line}"
        );
    }
    assert!(errors.to_string().contains("80\\nforged.yaml"), "{errors}");
}
