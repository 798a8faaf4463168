//! Per-service, per-pool, per-backend and per-port telemetry through the real processes: a
//! control plane and a data plane on `net_pcap` ports sharing memory. Known traffic (connections
//! to two services, a SYN, the handshake's ACK and data each, plus clients the ACL denies) goes
//! in; the backend each connection went to is read from the output capture's outer header. The
//! counts at `/metrics` and in `switchyard-control show stats --json` must then be exactly the
//! packets, bytes (frames as received) and new flows of each service and backend, the active
//! flows of each service and backend, the port totals and the ACL drops. Then every metric the shipped
//! Grafana dashboard (`configs/grafana/switchyard.json`) queries must exist in that `/metrics`
//! body.

mod common;
mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use fixtures::frames::tcp4_frame;

const WAIT: Duration = Duration::from_secs(60);
const LLAMA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const EMBED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

// llama 203.0.113.10:443 (3 backends), embed 203.0.113.20:443 (1), 10.1.99.0/24 denied.
const POLICY: &str = include_str!("fixtures/two_services.yaml");

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn stats_json(api: &str) -> serde_json::Value {
    serde_json::from_str(&show_stats(api, true)).unwrap()
}

/// The value of the sample `name{labels}` (labels exactly as rendered) in a `/metrics` body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Expect {
    packets: u64,
    bytes: u64,
    new_flows: u64,
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, checked at both ends
fn known_traffic_gives_exact_counts_per_service_and_backend() {
    require_root();
    let rig = Rig::new("telemetry", POLICY);
    let Rig {
        dir,
        shm,
        policy,
        instance,
        prefix,
        api,
        ..
    } = &rig;

    // 30 connections to llama and 7 to embed: SYN, ACK, then one data segment of a size that
    // differs per connection; 3 SYNs from a denied client.
    let mut conns: Vec<(Ipv4Addr, u16, Ipv4Addr)> = Vec::new();
    for i in 0..30u16 {
        conns.push((
            Ipv4Addr::new(10, 2, 0, 1 + (i % 9) as u8),
            41_000 + i,
            LLAMA,
        ));
    }
    for i in 0..7u16 {
        conns.push((
            Ipv4Addr::new(10, 3, 0, 1 + (i % 3) as u8),
            42_000 + i,
            EMBED,
        ));
    }
    let mut frames = Vec::new();
    let mut sent_to: BTreeMap<Ipv4Addr, Expect> = BTreeMap::new();
    for (round, flags) in [(0, SYN), (1, ACK), (2, ACK | PSH)] {
        for (i, &(c, p, vip)) in conns.iter().enumerate() {
            let payload = if round == 2 {
                vec![0x5a; 10 + i * 7]
            } else {
                Vec::new()
            };
            let f = tcp4_frame(c, p, vip, 443, flags, &payload);
            let e = sent_to.entry(vip).or_default();
            e.packets += 1;
            e.bytes += f.len() as u64;
            e.new_flows += u64::from(round == 0);
            frames.push(f);
        }
    }
    for p in 0..3u16 {
        frames.push(tcp4_frame(
            Ipv4Addr::new(10, 1, 99, 7),
            43_000 + p,
            LLAMA,
            443,
            SYN,
            &[],
        ));
    }
    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);
    let out_backend = dir.join("backend.pcap");

    let mut ctl = start_control(shm, policy, instance, api, &[]);
    let settings = pcap_settings(dir, 4096);
    let mut dp = start_dataplane(
        shm,
        instance,
        &settings,
        prefix,
        &[
            format!("--vdev=net_pcap0,rx_pcap={}", input.display()),
            format!("--vdev=net_pcap1,tx_pcap={}", out_backend.display()),
        ],
    );

    // Wait until the workers counted every forwarded packet and the active flows are in.
    let forwarded: u64 = sent_to.values().map(|e| e.packets).sum();
    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let v = stats_json(api);
        let counted: u64 = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["packets"].as_u64().unwrap())
            .sum();
        let active: u64 = v["pools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["active_flows"].as_u64().unwrap())
            .sum();
        let service_active: u64 = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["active_flows"].as_u64().unwrap())
            .sum();
        if counted >= forwarded
            && active >= conns.len() as u64
            && service_active >= conns.len() as u64
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "counted {counted} of {forwarded}, {active} active:\n{v:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Stop the data plane so the output capture is complete, then read it: which backend each
    // packet went to (outer IPv4 destination), and each flow's backend.
    let (status, _) = dp.stop(2, WAIT);
    assert!(status.success());
    let mut by_backend: BTreeMap<Ipv4Addr, Expect> = BTreeMap::new();
    let mut flows: BTreeMap<Ipv4Addr, BTreeSet<(Ipv4Addr, u16)>> = BTreeMap::new();
    let out = read_pcap(&out_backend);
    // The appliance's own frames (ARP for the gateway) aside: IPv4 carrying IPv4.
    let ipip: Vec<&Vec<u8>> = out
        .iter()
        .filter(|f| f.len() > 54 && f[12..14] == [0x08, 0x00] && f[14 + 9] == 4)
        .collect();
    assert_eq!(
        ipip.len() as u64,
        forwarded,
        "packets in the output capture"
    );
    for f in &ipip {
        let outer = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
        let backend = outer(14 + 16);
        let client = outer(14 + 20 + 12);
        let port = u16::from_be_bytes([f[14 + 40], f[14 + 41]]);
        let e = by_backend.entry(backend).or_default();
        e.packets += 1;
        // As received: the frame without the 20-byte outer IPv4 header.
        e.bytes += f.len() as u64 - 20;
        e.new_flows += u64::from(flows.entry(backend).or_default().insert((client, port)));
    }
    assert!(
        by_backend.len() >= 3,
        "Maglev used one backend: {by_backend:?}"
    );

    // The counts after the data plane stopped: the control plane's totals survive it.
    let stats_after = stats_json(api);
    let body = http_get(api, "/metrics");
    for v in [&stats, &stats_after] {
        for (name, vip) in [("llama", LLAMA), ("embed", EMBED)] {
            let s = v["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no service {name}: {v:#}"));
            let e = sent_to[&vip];
            assert_eq!(
                (
                    s["packets"].as_u64(),
                    s["bytes"].as_u64(),
                    s["new_flows"].as_u64()
                ),
                (Some(e.packets), Some(e.bytes), Some(e.new_flows)),
                "service {name}: {s}"
            );
        }
        let backends = v["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 4, "{v:#}");
        for b in backends {
            let address: Ipv4Addr = b["address"].as_str().unwrap().parse().unwrap();
            let e = by_backend.get(&address).copied().unwrap_or_default();
            assert_eq!(
                (
                    b["packets"].as_u64(),
                    b["bytes"].as_u64(),
                    b["new_flows"].as_u64()
                ),
                (Some(e.packets), Some(e.bytes), Some(e.new_flows)),
                "backend {address}: {b}"
            );
        }
        let pool = |n: &str| {
            v["pools"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(pool("llama-pool")["packets"], sent_to[&LLAMA].packets);
        assert_eq!(pool("embed-pool")["bytes"], sent_to[&EMBED].bytes);
        assert_eq!(v["drops"]["acl"], 3, "{v:#}");
        let port0 = &v["ports"][0];
        assert_eq!(port0["port"], 0);
        assert_eq!(port0["rx_packets"], frames.len() as u64, "{v:#}");
        let rx_bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
        assert_eq!(port0["rx_bytes"], rx_bytes);
        let port1 = v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == 1)
            .unwrap();
        // Everything in the output capture: the forwarded packets and the appliance's own.
        assert_eq!(port1["tx_packets"], out.len() as u64, "{v:#}");
        let tx_bytes: u64 = out.iter().map(|f| f.len() as u64).sum();
        assert_eq!(port1["tx_bytes"], tx_bytes);
    }
    // Active flows while the data plane ran: every connection is established in the table,
    // each counted for its service (30 llama, 7 embed) and its backend.
    for (name, n) in [("llama", 30), ("embed", 7)] {
        let svc = stats["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap();
        assert_eq!(svc["active_flows"], n, "service {name}: {svc}");
    }
    for b in stats["backends"].as_array().unwrap() {
        let address: Ipv4Addr = b["address"].as_str().unwrap().parse().unwrap();
        let n = flows.get(&address).map_or(0, BTreeSet::len) as u64;
        assert_eq!(
            b["active_flows"].as_u64(),
            Some(n),
            "backend {address}: {b}"
        );
    }
    assert_eq!(stats["workers"][0]["generation"], 1);
    assert!(stats["workers"][0]["busy_cycles"].as_u64() > Some(0));

    // The same figures at /metrics.
    for (name, vip) in [("llama", LLAMA), ("embed", EMBED)] {
        let e = sent_to[&vip];
        let l = format!("{{service=\"{name}\"}}");
        assert_eq!(
            sample(&body, &format!("switchyard_service_packets_total{l}")),
            Some(e.packets as f64),
            "{body}"
        );
        assert_eq!(
            sample(&body, &format!("switchyard_service_bytes_total{l}")),
            Some(e.bytes as f64)
        );
        assert_eq!(
            sample(&body, &format!("switchyard_service_new_flows_total{l}")),
            Some(e.new_flows as f64)
        );
        assert!(
            sample(&body, &format!("switchyard_service_active_flows{l}")).is_some(),
            "{body}"
        );
    }
    for (pool, backend, address) in [
        ("llama-pool", "gpu-1", "10.10.1.1"),
        ("llama-pool", "gpu-2", "10.10.1.2"),
        ("llama-pool", "gpu-3", "10.10.1.3"),
        ("embed-pool", "emb-1", "10.10.2.1"),
    ] {
        let e = by_backend
            .get(&address.parse().unwrap())
            .copied()
            .unwrap_or_default();
        let l = format!("{{pool=\"{pool}\",backend=\"{backend}\",address=\"{address}\"}}");
        assert_eq!(
            sample(&body, &format!("switchyard_backend_packets_total{l}")),
            Some(e.packets as f64),
            "{body}"
        );
        assert_eq!(
            sample(&body, &format!("switchyard_backend_bytes_total{l}")),
            Some(e.bytes as f64)
        );
        assert_eq!(
            sample(&body, &format!("switchyard_backend_new_flows_total{l}")),
            Some(e.new_flows as f64)
        );
        assert_eq!(
            sample(&body, &format!("switchyard_backend_up{l}")),
            Some(1.0)
        );
        assert_eq!(
            sample(&body, &format!("switchyard_backend_effective_weight{l}")),
            Some(100.0),
            "{body}"
        );
    }
    assert_eq!(
        sample(
            &body,
            "switchyard_dataplane_dropped_packets_total{reason=\"acl\"}"
        ),
        Some(3.0)
    );

    // The Grafana dashboard queries only series this page has.
    let dashboard =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/grafana/switchyard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{} queries in the dashboard", exprs.len());
    let families: BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("switchyard_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            used.insert(name);
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(
            families.contains(name.as_str()),
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
    eprintln!(
        "exact per-service and per-backend counts over {} packets; dashboard: {} queries over {} metrics",
        forwarded,
        exprs.len(),
        used.len()
    );
    let (status, _) = ctl.stop(15, WAIT);
    assert!(status.success());
}

/// Every `expr` string of a Grafana dashboard.
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
