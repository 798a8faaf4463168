//! What a data-plane restart does to established connections, per scheduler, through the real
//! appliance: a first `switchyard-dataplane run` sees the SYNs of a set of flows on every
//! scheduler's service; a second run — a fresh process, so an empty connection table, as after
//! a restart — sees later (non-SYN) packets of the same flows, in another order, as clients
//! that keep their connections open send them. Each encapsulated packet's outer destination
//! says which backend got it.
//!
//! Maglev and IP hash pick from the table (the same table both times), so every flow lands on
//! its backend again. Round robin, least connections and smooth weighted round robin picked
//! from the worker's own state; after the restart a packet without SYN that misses is placed
//! by consistent hash (`healthy[hash % n]`), in general another backend, and those
//! connections break (the backend answers RST). docs/POLICY.md
//! ("Data-plane restart") and docs/ARCHITECTURE.md ("Restarts") say so.

mod common;
mod fixtures;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::*;
use fixtures::frames::{tcp4_frame, PSH_ACK, SYN};
use fixtures::{compile_yaml, Variant, IPHASH, LC, RR, VIP4, WRR};
use switchyard_control::compile::BackendState;
use switchyard_table::generation::Generation;

/// Flows per scheduler.
const FLOWS: u8 = 12;

/// A service of the fixture policy, its scheduler, and the /16 its clients come from.
struct Case {
    scheduler: &'static str,
    vip: Ipv4Addr,
    port: u16,
    clients: [u8; 2],
    /// Whether the flows must all keep their backend across the restart.
    survives: bool,
}

const CASES: [Case; 5] = [
    // llama: EU clients take the strict route to the Maglev pool llama-eu.
    Case {
        scheduler: "maglev",
        vip: VIP4,
        port: 443,
        clients: [10, 1],
        survives: true,
    },
    Case {
        scheduler: "ip_hash",
        vip: IPHASH,
        port: 80,
        clients: [100, 64],
        survives: true,
    },
    Case {
        scheduler: "round_robin",
        vip: RR,
        port: 80,
        clients: [100, 65],
        survives: false,
    },
    Case {
        scheduler: "least_conn",
        vip: LC,
        port: 80,
        clients: [100, 66],
        survives: false,
    },
    Case {
        scheduler: "weighted",
        vip: WRR,
        port: 80,
        clients: [100, 67],
        survives: false,
    },
];

/// One flow: client address and source port, to a case's VIP and port.
fn flow(case: &Case, i: u8) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(case.clients[0], case.clients[1], 7, i + 1),
        40_000 + u16::from(i),
    )
}

/// Runs `frames` (on the uplink) through a fresh data plane with table `g`; returns the
/// backend of each (client, source port) and the pipeline counters.
fn run(
    name: &str,
    g: &Generation,
    frames: &[Vec<u8>],
) -> (BTreeMap<(Ipv4Addr, u16), Ipv4Addr>, BTreeMap<String, u64>) {
    require_root();
    let dir = scratch(name);
    let _cleanup = RemoveDir(dir.clone());
    let input = dir.join("in.pcap");
    write_pcap(&input, frames);
    let table = dir.join("table.bin");
    std::fs::write(&table, g.encode()).unwrap();
    let settings = pcap_settings(&dir, 4096);
    let stdout = run_table(
        &table,
        &settings,
        "2",
        &[
            format!(
                "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
                input.display(),
                dir.join("out0.pcap").display()
            ),
            format!(
                "--vdev=net_pcap1,tx_pcap={}",
                dir.join("out1.pcap").display()
            ),
        ],
    );
    let counters: BTreeMap<String, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("counter "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_owned(), v.parse().unwrap()))
        .collect();
    let mut backend_of = BTreeMap::new();
    for f in read_pcap(&dir.join("out1.pcap")) {
        assert_eq!(
            (f[12], f[13], f[23], f[34]),
            (0x08, 0x00, 4, 0x45),
            "{name}: IPIP over IPv4 expected: {f:02x?}"
        );
        let v4 = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        let sport = u16::from_be_bytes([f[54], f[55]]);
        backend_of.insert((v4(46), sport), v4(30));
    }
    assert_eq!(
        backend_of.len(),
        frames.len(),
        "{name}: every flow's packet comes out of the backend port\n{stdout}"
    );
    (backend_of, counters)
}

#[test]
fn restart_keeps_maglev_and_ip_hash_flows_and_moves_the_others() {
    let g = compile_yaml(&Variant::Unlimited.yaml(), &BackendState::new());

    // Before: each flow's SYN, scheduler by scheduler, flow by flow.
    let syns: Vec<Vec<u8>> = CASES
        .iter()
        .flat_map(|c| {
            (0..FLOWS).map(move |i| {
                let (client, sport) = flow(c, i);
                tcp4_frame(client, sport, c.vip, c.port, SYN, &[])
            })
        })
        .collect();
    let (before, counters) = run("restart-before", &g, &syns);
    assert_eq!(counters.get("flow_non_syn_miss"), None, "{counters:?}");

    // After the restart: data of the same flows, the clients in reverse order.
    let data: Vec<Vec<u8>> = CASES
        .iter()
        .flat_map(|c| {
            (0..FLOWS).rev().map(move |i| {
                let (client, sport) = flow(c, i);
                tcp4_frame(client, sport, c.vip, c.port, PSH_ACK, b"more tokens")
            })
        })
        .collect();
    let (after, counters) = run("restart-after", &g, &data);
    assert_eq!(
        counters.get("flow_non_syn_miss").copied(),
        Some(data.len() as u64),
        "every packet after the restart misses the new, empty connection table: {counters:?}"
    );

    let mut report = Vec::new();
    for c in &CASES {
        let kept = (0..FLOWS)
            .filter(|&i| {
                let key = flow(c, i);
                before[&key] == after[&key]
            })
            .count();
        report.push(format!(
            "{}: {kept} of {FLOWS} flows kept their backend",
            c.scheduler
        ));
        if c.survives {
            assert_eq!(
                kept,
                usize::from(FLOWS),
                "{}: the table picks the backend, so a restart moves no flow",
                c.scheduler
            );
        } else {
            assert!(
                kept < usize::from(FLOWS),
                "{}: per-worker state picks the backend; a restart with another arrival order \
                 must move some flows",
                c.scheduler
            );
        }
    }
    eprintln!("{}", report.join("\n"));
}
