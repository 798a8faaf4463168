//! ACLs through the pipeline, from a policy compiled by the control plane: global and
//! per-service rules, allow and deny, IPv4 and IPv6, ports and protocol, and the evaluation
//! order (global first, then the packet's service's, first match, default allow). Each packet
//! runs on a worker and must be forwarded or dropped with `drop_acl` (or another named counter).

mod fixtures;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use fixtures::frames::*;
use fixtures::{compile_yaml, port_map, NOW};
use switchyard::flow::InsertLimit;
use switchyard::pipeline::{Counter, PipelineWorker, VecPacket, Verdict, WorkerConfig};
use switchyard_control::compile::BackendState;

const POLICY: &str = r#"
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24, "2001:db8:100::1/64"]
    gateway: { ipv4: 198.51.100.254, ipv6: "2001:db8:100::fe", mac: 02:00:00:00:00:fe }
  - name: backend
    mac: 02:00:00:00:01:01
    addresses: [192.0.2.1/24, "2001:db8:200::1/64"]
    gateway: { ipv4: 192.0.2.254, ipv6: "2001:db8:200::fe", mac: 02:00:00:00:01:fe }
services:
  - name: open
    vip: 203.0.113.10
    ports: [443]
    routes: [{ pool: web }]
  - name: open6
    vip: "2001:db8:f::10"
    ports: [443]
    routes: [{ pool: web6 }]
  - name: private
    vip: 203.0.113.11
    ports: [443, 8443]
    routes: [{ pool: web }]
    acl:
      - { deny: 10.6.6.0/24, ports: [8443] }
      - { allow: 10.6.0.0/16 }
      - { allow: 198.18.0.0/16 }
      - { deny: 0.0.0.0/0 }
  - name: private6
    vip: "2001:db8:f::11"
    ports: [443]
    routes: [{ pool: web6 }]
    acl:
      - { allow: "2001:db8:6::/48" }
      - { deny: "::/0" }
  - name: dns
    vip: 203.0.113.12
    ports: [53]
    protocol: udp
    routes: [{ pool: web }]
    acl:
      - { deny: 10.7.0.0/16, protocol: udp }
pools:
  web:
    backends:
      - { address: 10.10.1.1 }
  web6:
    backends:
      - { address: "2001:db8:b::1" }
acl:
  - { deny: 198.18.0.0/15 }
  - { allow: 10.6.6.7/32 }
  - { deny: "2001:db8:66::/48", ports: [443] }
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Forward,
    Drop(Counter),
}

/// A new TCP flow (SYN) or a UDP datagram from `src` to `dst:port`.
fn frame(src: IpAddr, dst: IpAddr, port: u16, udp: bool) -> Vec<u8> {
    match (src, dst, udp) {
        (IpAddr::V4(s), IpAddr::V4(d), false) => tcp4_frame(s, 40_000, d, port, SYN, &[]),
        (IpAddr::V4(s), IpAddr::V4(d), true) => udp4_frame(s, 40_000, d, port, b"q"),
        (IpAddr::V6(s), IpAddr::V6(d), false) => tcp6_frame(s, 40_000, d, port, SYN, &[]),
        (IpAddr::V6(s), IpAddr::V6(d), true) => udp6_frame(s, 40_000, d, port, b"q"),
        _ => unreachable!("one family per packet"),
    }
}

#[test]
fn global_and_per_service_acls_in_order() {
    let g = Arc::new(compile_yaml(POLICY, &BackendState::default()));
    let cases: &[(&str, &str, &str, u16, bool, Expect)] = &[
        // (what, source, VIP, port, udp, expected)
        (
            "service allow",
            "10.6.1.1",
            "203.0.113.11",
            443,
            false,
            Expect::Forward,
        ),
        (
            "service default deny",
            "10.8.1.1",
            "203.0.113.11",
            443,
            false,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "another service's rules do not apply",
            "10.8.1.1",
            "203.0.113.10",
            443,
            false,
            Expect::Forward,
        ),
        (
            "service deny on one port",
            "10.6.6.8",
            "203.0.113.11",
            8443,
            false,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "the same source on the other port",
            "10.6.6.8",
            "203.0.113.11",
            443,
            false,
            Expect::Forward,
        ),
        (
            "a global allow comes first",
            "10.6.6.7",
            "203.0.113.11",
            8443,
            false,
            Expect::Forward,
        ),
        (
            "a global deny comes first",
            "198.18.0.5",
            "203.0.113.11",
            443,
            false,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "global deny on every service",
            "198.19.0.5",
            "203.0.113.10",
            443,
            false,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "IPv6 service allow",
            "2001:db8:6::5",
            "2001:db8:f::11",
            443,
            false,
            Expect::Forward,
        ),
        (
            "IPv6 service default deny",
            "2001:db8:9::5",
            "2001:db8:f::11",
            443,
            false,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "IPv6, another service",
            "2001:db8:9::5",
            "2001:db8:f::10",
            443,
            false,
            Expect::Forward,
        ),
        (
            "IPv6 global deny with a port",
            "2001:db8:66::5",
            "2001:db8:f::10",
            443,
            false,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "protocol-scoped service deny",
            "10.7.0.1",
            "203.0.113.12",
            53,
            true,
            Expect::Drop(Counter::DropAcl),
        ),
        (
            "that rule is the dns service's only",
            "10.7.0.1",
            "203.0.113.10",
            443,
            false,
            Expect::Forward,
        ),
        (
            "no service: only global rules, then drop_no_service",
            "10.8.1.1",
            "203.0.113.11",
            9999,
            false,
            Expect::Drop(Counter::DropNoService),
        ),
    ];
    for (i, &(what, src, dst, port, udp, expect)) in cases.iter().enumerate() {
        let mut w = PipelineWorker::new(WorkerConfig {
            flows_v4: 1024,
            flows_v6: 1024,
            insert_limit: InsertLimit::UNLIMITED,
            ports: port_map(),
            worker: 0,
        });
        w.set_generation(g.clone());
        let input = frame(src.parse().unwrap(), dst.parse().unwrap(), port, udp);
        let mut p = VecPacket::new(&input);
        let verdict = w.process(&mut p, 0, NOW + u32::try_from(i).unwrap());
        match expect {
            Expect::Forward => {
                assert_eq!(verdict, Verdict::Forward(1), "{what}: {src} → {dst}:{port}");
                assert_eq!(w.counters().get(Counter::DropAcl), 0, "{what}");
            }
            Expect::Drop(counter) => {
                assert_eq!(verdict, Verdict::Drop, "{what}: {src} → {dst}:{port}");
                assert_eq!(w.counters().get(counter), 1, "{what}: {counter}");
            }
        }
    }
}

/// The compiled table keeps one LPM walk: every rule's source is a leaf of the one ACL LPM,
/// and a group lists the global rules before the service's.
#[test]
fn a_group_lists_global_rules_before_the_services() {
    let g = compile_yaml(POLICY, &BackendState::default());
    let v4 = u32::from(Ipv4Addr::new(10, 6, 6, 7));
    let group = switchyard_table::lpm::lookup_v4(&g.acl_lpm_v4, v4);
    assert_ne!(group, 0);
    let grp = g.acl_groups[group as usize - 1];
    let rules = &g.acl_rules[grp.first_rule as usize..(grp.first_rule + grp.rule_count) as usize];
    let scopes: Vec<u16> = rules.iter().map(|r| r.service).collect();
    // Global allow 10.6.6.7/32, then private's 10.6.6.0/24:8443, 10.6.0.0/16, 0.0.0.0/0
    // (the service index of `private` is 2, stored as 3).
    assert_eq!(scopes, vec![0, 3, 3, 3]);
}
