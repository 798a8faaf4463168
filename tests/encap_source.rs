//! The outer source of encapsulated packets comes from the policy: an interface's own
//! `encap_source`, else the top-level one, else 172.16.0.0/16 and fd00:5359::/64. New flows go
//! through the real appliance (`switchyard-dataplane run --table` on `net_pcap` ports, the
//! table compiled from the fixture policy by the control plane's compiler); each encapsulated
//! packet's outer source must be the prefix's network bits with the flow hash in its host bits.

mod common;
mod fixtures;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use fixtures::frames::{tcp4_frame, SYN};
use fixtures::{compile_yaml, hash4, policy_yaml, IPHASH, MIXED46};
use switchyard_control::compile::BackendState;

/// The outer sources of `flows` new flows to IPv4-backend service `iphash` and IPv6-backend
/// service `mixed-46`, with `yaml` as the policy; `(v4 sources, v6 sources)` in flow order.
fn outer_sources(name: &str, yaml: &str, flows: u8) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
    require_root();
    let g = compile_yaml(yaml, &BackendState::new());
    let dir = scratch(name);
    let _cleanup = RemoveDir(dir.clone());
    let mut frames = Vec::new();
    for i in 0..flows {
        frames.push(tcp4_frame(client(i), port(i), IPHASH, 80, SYN, &[]));
    }
    for i in 0..flows {
        frames.push(tcp4_frame(client(i), port(i), MIXED46, 443, SYN, &[]));
    }
    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);
    let table = dir.join("table.bin");
    std::fs::write(&table, g.encode()).unwrap();
    let settings = pcap_settings(&dir, 4096);
    let stdout = run_table(
        &table,
        &settings,
        "1.5",
        &[
            format!("--vdev=net_pcap0,rx_pcap={}", input.display()),
            format!(
                "--vdev=net_pcap1,tx_pcap={}",
                dir.join("out1.pcap").display()
            ),
        ],
    );
    let out = read_pcap(&dir.join("out1.pcap"));
    assert_eq!(out.len(), frames.len(), "{stdout}");
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for f in &out {
        match (f[12], f[13]) {
            (0x08, 0x00) => v4.push(Ipv4Addr::new(f[26], f[27], f[28], f[29])),
            (0x86, 0xdd) => v6.push(Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap())),
            other => panic!("not IPIP: ethertype {other:02x?}"),
        }
    }
    (v4, v6)
}

fn client(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 9, i + 1)
}

fn port(i: u8) -> u16 {
    41_000 + u16::from(i) * 7
}

/// `net/len` with the host bits from `hash`.
fn expect_v4(net: Ipv4Addr, len: u32, hash: u32) -> Ipv4Addr {
    let host = u32::MAX.checked_shr(len).unwrap_or(0);
    Ipv4Addr::from((u32::from(net) & !host) | (hash & host))
}

fn expect_v6(net: Ipv6Addr, len: u32, hash: u32) -> Ipv6Addr {
    let host = u128::MAX.checked_shr(len).unwrap_or(0);
    Ipv6Addr::from((u128::from(net) & !host) | (u128::from(hash) & host))
}

#[test]
fn outer_source_comes_from_the_interface_then_the_policy_then_the_default() {
    const FLOWS: u8 = 8;
    let hashes: Vec<(u32, u32)> = (0..FLOWS)
        .map(|i| {
            (
                hash4(client(i), port(i), IPHASH, 80, 6),
                hash4(client(i), port(i), MIXED46, 443, 6),
            )
        })
        .collect();

    // No setting: today's defaults.
    let (v4, v6) = outer_sources("encap-src-default", policy_yaml(), FLOWS);
    for (i, &(h4, h6)) in hashes.iter().enumerate() {
        assert_eq!(v4[i], expect_v4(Ipv4Addr::new(172, 16, 0, 0), 16, h4));
        assert_eq!(v6[i], expect_v6("fd00:5359::".parse().unwrap(), 64, h6));
    }

    // Top level: every interface.
    let top = format!(
        "{}\nencap_source: {{ ipv4: 10.200.0.0/20, ipv6: \"2001:db8:aaaa::/100\" }}\n",
        policy_yaml()
    );
    let (v4, v6) = outer_sources("encap-src-top", &top, FLOWS);
    for (i, &(h4, h6)) in hashes.iter().enumerate() {
        assert_eq!(v4[i], expect_v4(Ipv4Addr::new(10, 200, 0, 0), 20, h4));
        assert_eq!(
            v6[i],
            expect_v6("2001:db8:aaaa::".parse().unwrap(), 100, h6)
        );
    }

    // The egress interface (`backend`) sets IPv4 only: its IPv4 prefix, the top-level IPv6 one.
    let own = top.replace(
        "  - name: backend\n    mac: 02:00:00:00:01:01\n",
        "  - name: backend\n    mac: 02:00:00:00:01:01\n    encap_source: { ipv4: 100.64.200.0/24 }\n",
    );
    assert_ne!(own, top, "the fixture policy's backend interface moved");
    let (v4, v6) = outer_sources("encap-src-own", &own, FLOWS);
    for (i, &(h4, h6)) in hashes.iter().enumerate() {
        assert_eq!(v4[i], expect_v4(Ipv4Addr::new(100, 64, 200, 0), 24, h4));
        assert_eq!(
            v6[i],
            expect_v6("2001:db8:aaaa::".parse().unwrap(), 100, h6)
        );
    }
    let distinct: std::collections::BTreeSet<_> = v4.iter().collect();
    assert!(distinct.len() > 1, "flows spread over the prefix: {v4:?}");
}
