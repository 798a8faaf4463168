//! `switchyard-control trace` and `flows` against the real processes: a control plane and a data
//! plane on `net_pcap` ports sharing memory. Clients in two regions (Maglev and round-robin
//! pools) open connections (SYN, then the handshake's ACK) from a capture; then, for every
//! connection, `trace --live` must name the backend the data plane sent it to (read from the
//! output capture's outer header) and the worker holding it, and `flows --backend B` must list
//! exactly the connections sent to B. A denied client and a client with no route are traced as
//! the drops they are, with the data plane's counter name.

mod common;
mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fixtures::frames::tcp4_frame;

const WAIT: Duration = Duration::from_secs(60);
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

const POLICY: &str = "\
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
  - name: backend
    mac: 02:00:00:00:01:01
    addresses: [192.0.2.1/24]
    gateway: { ipv4: 192.0.2.254, mac: 02:00:00:00:01:fe }
encap: ipip
regions:
  eu-west: { prefixes: [10.1.0.0/16] }
  us-east: { prefixes: [10.2.0.0/16] }
  ap-south: { prefixes: [10.3.0.0/16] }
services:
  - name: llama
    vip: 203.0.113.10
    ports: [443]
    routes:
      - { from: eu-west, pool: llama-eu }
      - { from: us-east, pool: llama-us }
pools:
  llama-eu:
    scheduler: maglev
    backends:
      - { address: 10.10.1.1, name: eu-1 }
      - { address: 10.10.1.2, name: eu-2 }
      - { address: 10.10.1.3, name: eu-3 }
  llama-us:
    scheduler: round_robin
    backends:
      - { address: 10.10.2.1, name: us-1 }
      - { address: 10.10.2.2, name: us-2 }
acl:
  - { deny: 10.1.99.0/24 }
";

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn control(api: &str, args: &[&str]) -> serde_json::Value {
    let out = run_with_timeout(
        Command::new(control_bin())
            .args(args)
            .args(["--api", api, "--json"]),
        WAIT,
    );
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The address part of `10.10.1.2 (eu-2)`.
fn address(backend: &serde_json::Value) -> String {
    backend
        .as_str()
        .unwrap_or("")
        .split(' ')
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn trace_and_flows_tell_where_the_data_plane_sent_each_connection() {
    require_root();
    let rig = Rig::new("trace-flows", POLICY);
    let Rig {
        dir,
        shm,
        policy,
        instance,
        prefix,
        api,
        ..
    } = &rig;

    // Connections: 24 from eu-west (Maglev), 12 from us-east (round robin), each a SYN and the
    // handshake's ACK; plus a denied client's SYN.
    let mut conns: Vec<(Ipv4Addr, u16)> = Vec::new();
    for i in 0..24u16 {
        conns.push((Ipv4Addr::new(10, 1, 0, 1 + (i % 6) as u8), 41_000 + i));
    }
    for i in 0..12u16 {
        conns.push((Ipv4Addr::new(10, 2, 0, 1 + (i % 4) as u8), 42_000 + i));
    }
    let mut frames = Vec::new();
    for &(c, p) in &conns {
        frames.push(tcp4_frame(c, p, VIP, 443, SYN, &[]));
    }
    for &(c, p) in &conns {
        frames.push(tcp4_frame(c, p, VIP, 443, ACK, &[]));
    }
    let denied = (Ipv4Addr::new(10, 1, 99, 7), 43_000);
    frames.push(tcp4_frame(denied.0, denied.1, VIP, 443, SYN, &[]));
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

    // Every connection in the workers' tables (the sample sees them all).
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let v = control(api, &["flows", "--vip", "203.0.113.10:443"]);
        let n = v["flows"].as_array().map_or(0, Vec::len);
        if n == conns.len() {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "flows lists {n} of {}: {v}",
            conns.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(listed["flows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["state"] == "established" && f["proto"] == "tcp"));

    // trace --live for every connection: the backend and the worker holding it.
    let mut traced: BTreeMap<(Ipv4Addr, u16), String> = BTreeMap::new();
    for &(c, p) in &conns {
        let v = control(
            api,
            &["trace", &format!("{c}:{p}"), "203.0.113.10:443", "--live"],
        );
        assert_eq!(v["verdict"], "forward", "{v}");
        assert_eq!(v["service"], "llama", "{v}");
        let region = if c.octets()[1] == 1 {
            "eu-west"
        } else {
            "us-east"
        };
        assert_eq!(v["region"], region, "{v}");
        let pool = if region == "eu-west" {
            "llama-eu"
        } else {
            "llama-us"
        };
        assert_eq!(v["pool"], pool, "{v}");
        assert_eq!(v["held_by"], serde_json::json!([0]), "{v}");
        let held = v["workers"][0]["holds"].clone();
        assert_eq!(address(&held), address(&v["backend"]), "{v}");
        traced.insert((c, p), address(&v["backend"]));
    }

    // A client the ACL denies, and one in a region no route takes.
    let v = control(
        api,
        &[
            "trace",
            &format!("{}:{}", denied.0, denied.1),
            "203.0.113.10:443",
        ],
    );
    assert_eq!(
        (v["verdict"].as_str(), v["reason"].as_str()),
        (Some("drop"), Some("drop_acl")),
        "{v}"
    );
    let v = control(api, &["trace", "10.3.0.9:5555", "203.0.113.10:443"]);
    assert_eq!(
        (v["verdict"].as_str(), v["reason"].as_str()),
        (Some("drop"), Some("drop_no_route")),
        "{v}"
    );
    assert_eq!(v["region"], "ap-south", "{v}");
    // A new connection from eu-west, not sent: forwarded by Maglev, held by nobody.
    let v = control(
        api,
        &["trace", "10.1.0.200:60000", "203.0.113.10:443", "--live"],
    );
    assert_eq!(
        (v["verdict"].as_str(), v["scheduler"].as_str()),
        (Some("forward"), Some("maglev")),
        "{v}"
    );
    assert_eq!(v["held_by"], serde_json::json!([]), "{v}");

    // flows --backend B: exactly the connections traced to B.
    for name in ["eu-1", "eu-2", "eu-3", "us-1", "us-2", "llama-us/10.10.2.1"] {
        let v = control(api, &["flows", "--backend", name]);
        let got: BTreeSet<String> = v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["client"].as_str().unwrap().to_owned())
            .collect();
        let addr = v["flows"]
            .as_array()
            .unwrap()
            .first()
            .map(|f| address(&f["backend"]));
        let want: BTreeSet<String> = traced
            .iter()
            .filter(|(_, b)| Some(*b) == addr.as_ref())
            .map(|((c, p), _)| format!("{c}:{p}"))
            .collect();
        assert!(!got.is_empty(), "{name}: no flows");
        assert_eq!(got, want, "{name}");
    }

    // What the data plane actually did: the output capture's outer destination per flow.
    let (status, _) = dp.stop(2, WAIT);
    assert!(status.success(), "{}", dp.seen.join("\n"));
    let mut sent: BTreeMap<(Ipv4Addr, u16), String> = BTreeMap::new();
    for f in read_pcap(&out_backend) {
        // Ethernet 14, outer IPv4 20, inner IPv4 20, TCP.
        let outer = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let client = Ipv4Addr::new(f[46], f[47], f[48], f[49]);
        let sport = u16::from_be_bytes([f[54], f[55]]);
        let prev = sent.insert((client, sport), outer.to_string());
        assert!(prev.is_none() || prev.as_deref() == Some(&outer.to_string()));
    }
    assert_eq!(sent.len(), conns.len(), "every connection was forwarded");
    assert_eq!(
        sent, traced,
        "trace named the backend each connection was sent to"
    );
    let (status, _) = ctl.stop(15, WAIT);
    assert!(status.success());
}
