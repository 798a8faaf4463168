//! The pipeline fixtures through the real appliance: pcap in → `switchyard-dataplane run` on
//! `net_pcap` ports → pcap out, compared byte for byte.
//!
//! For every policy variant and RX port, the fixtures that need no setup frames are first run in
//! order through ONE in-process worker (the appliance runs them through one worker too); those
//! whose result still matches the fixture when they share a worker are kept — fixtures that
//! depend on fresh state (a token bucket, a round-robin cursor) drop out and are counted. The
//! kept inputs are written to a capture, replayed once through the binary with the variant's
//! table (compiled by `switchyard-control compile`'s library, written as a table file), and
//! every output port's capture must equal the fixtures' expected frames, in order, byte for byte;
//! every drop counter must equal the number of fixtures that expect it.

mod common;
mod fixtures;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A TX capture without the neighbour resolver's own requests (ARP requests and neighbour
/// solicitations for a gateway given without a MAC, as in `Variant::NoGatewayMac`): the
/// pipeline itself only ever answers them.
fn read_output(path: &std::path::Path) -> Vec<Vec<u8>> {
    read_pcap(path)
        .into_iter()
        .filter(|f| {
            let ty = f.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
            let arp_request = ty == Some(0x0806) && f.get(20..22) == Some(&[0, 1][..]);
            let solicitation =
                ty == Some(0x86dd) && f.get(20) == Some(&58) && f.get(54) == Some(&135);
            !(arp_request || solicitation)
        })
        .collect()
}
use fixtures::frames::{tcp4_frame, BACKEND_MAC, SYN, UPLINK_MAC};
use fixtures::{fixtures, Expected, Fixture, Variant, NOW, VIP4};
use switchyard::flow::InsertLimit;
use switchyard::pipeline::{PacketBuf, PipelineWorker, VecPacket, Verdict, WorkerConfig};

fn worker(variant: Variant) -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 4096,
        flows_v6: 4096,
        insert_limit: InsertLimit::default(),
        ports: variant.port_map(),
        worker: 0,
    });
    w.set_worker_count(1);
    w.set_generation(variant.generation());
    w
}

/// Whether `f`, run on `w` after the fixtures before it, still does exactly what it expects.
fn still_matches(w: &mut PipelineWorker, f: &Fixture) -> bool {
    let before: Vec<u64> = w.counters().iter().map(|(_, v)| v).collect();
    let mut p = VecPacket::new(&f.input);
    let verdict = w.process(&mut p, f.rx_port, NOW);
    let after: Vec<u64> = w.counters().iter().map(|(_, v)| v).collect();
    match &f.expected {
        Expected::Frame { port, bytes } => {
            verdict == Verdict::Forward(*port) && p.data() == &bytes[..]
        }
        Expected::Kernel => verdict == Verdict::Kernel && p.data() == &f.input[..],
        Expected::Drop(name) => {
            let moved: Vec<&str> = w
                .counters()
                .iter()
                .zip(before.iter().zip(&after))
                .filter(|((n, _), (b, a))| a > b && n.starts_with("drop_"))
                .map(|((n, _), _)| n)
                .collect();
            verdict == Verdict::Drop && moved == [*name]
        }
    }
}

#[test]
fn fixtures_through_net_pcap_match_byte_for_byte() {
    require_root();
    let all = fixtures();
    let mut ran = 0usize;
    let mut stateful = 0usize;
    let mut with_setup = 0usize;
    for variant in Variant::ALL {
        let ports = variant.port_map().interface.len();
        for rx_port in 0..ports {
            let group: Vec<&Fixture> = all
                .iter()
                .filter(|f| f.variant == variant && usize::from(f.rx_port) == rx_port)
                .collect();
            with_setup += group.iter().filter(|f| !f.setup.is_empty()).count();
            let mut w = worker(variant);
            let kept: Vec<&Fixture> = group
                .into_iter()
                .filter(|f| f.setup.is_empty())
                .filter(|f| {
                    let ok = still_matches(&mut w, f);
                    stateful += usize::from(!ok);
                    ok
                })
                .collect();
            if kept.is_empty() {
                continue;
            }
            run_group(variant, rx_port, ports, &kept);
            ran += kept.len();
        }
    }
    eprintln!(
        "{ran} of {} fixtures replayed through net_pcap byte for byte; {with_setup} need setup frames and \
         {stateful} depend on a fresh worker's state, so they run in-process only",
        all.len()
    );
    assert!(
        ran * 10 >= all.len() * 6,
        "most fixtures must run through the appliance ({ran} of {})",
        all.len()
    );
}

fn run_group(variant: Variant, rx_port: usize, ports: usize, kept: &[&Fixture]) {
    let dir = scratch(&format!("pcap-{variant:?}-{rx_port}").to_lowercase());
    let input = dir.join("in.pcap");
    write_pcap(
        &input,
        &kept.iter().map(|f| f.input.clone()).collect::<Vec<_>>(),
    );
    let table = dir.join("table.bin");
    std::fs::write(&table, Arc::unwrap_or_clone(variant.generation()).encode()).unwrap();

    let roles = ["uplink", "backend", "kernel"];
    let mut settings = String::from("ports:\n");
    let mut vdevs = Vec::new();
    for (p, role) in roles.iter().enumerate().take(ports) {
        settings.push_str(&format!("  - {{ device: net_pcap{p}, role: {role} }}\n"));
        let out = dir.join(format!("out{p}.pcap"));
        let rx = if p == rx_port {
            format!("rx_pcap={},", input.display())
        } else {
            String::new()
        };
        vdevs.push(format!("--vdev=net_pcap{p},{rx}tx_pcap={}", out.display()));
    }
    settings
        .push_str("flow_table: { ipv4_flows: 4096, ipv6_flows: 4096 }\nmempool: { mbufs: 8191 }\n");
    // Compared frame for frame: no start-up announcements.
    settings.push_str("neighbour: { announce: false }\n");
    let settings_path = dir.join("appliance.yaml");
    std::fs::write(&settings_path, settings).unwrap();

    let out = run_with_timeout(
        Command::new(DATAPLANE)
            .args(["run", "--duration", "1.5", "--table"])
            .arg(&table)
            .arg("--config")
            .arg(&settings_path)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .args(&vdevs),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{variant:?} rx {rx_port}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for p in 0..ports {
        let got = read_output(&dir.join(format!("out{p}.pcap")));
        let want: Vec<(&str, &Vec<u8>)> = kept
            .iter()
            .filter_map(|f| match &f.expected {
                Expected::Frame { port, bytes } if usize::from(*port) == p => {
                    Some((f.description, bytes))
                }
                Expected::Kernel if Some(p) == variant.port_map().kernel.map(usize::from) => {
                    Some((f.description, &f.input))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            got.len(),
            want.len(),
            "{variant:?} rx {rx_port}: frames on port {p}\n{stdout}"
        );
        for (g, (description, w)) in got.iter().zip(&want) {
            assert_eq!(g, *w, "{variant:?} rx {rx_port}, port {p}: {description}");
        }
    }
    let mut expected_drops: BTreeMap<&str, u64> = BTreeMap::new();
    for f in kept {
        if let Expected::Drop(name) = f.expected {
            *expected_drops.entry(name).or_default() += 1;
        }
    }
    let counted: BTreeMap<&str, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("counter "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(n, _)| n.starts_with("drop_"))
        .map(|(n, v)| (n, v.parse().unwrap()))
        .collect();
    assert_eq!(
        counted, expected_drops,
        "{variant:?} rx {rx_port}: drop counters\n{stdout}"
    );
}

/// Two ports receiving at once through one worker, as the run loop overlaps their bursts (the
/// pending burst of one port is executed after the next port's burst is classified): every
/// frame comes out exactly once, encapsulated exactly as a worker fed the same frames one at a
/// time encapsulates it, and each input port's frames keep their order.
#[test]
fn two_ports_at_once_keep_each_ports_order() {
    require_root();
    let variant = Variant::Unlimited;
    let dir = scratch("pcap-two-ports");
    // 3000 new flows per port (a hundred bursts each), to a VIP: the uplink's from clients of
    // 10.1/16, the backend port's (addressed to the backend interface's MAC) from 10.2/16.
    let flows = |net: u8, dst_mac: [u8; 6]| -> Vec<Vec<u8>> {
        (0..3000u16)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                let client = Ipv4Addr::new(10, net, hi, lo);
                let mut f = tcp4_frame(client, 1024 + i, VIP4, 443, SYN, &[]);
                f[..6].copy_from_slice(&dst_mac);
                f
            })
            .collect()
    };
    let inputs = [flows(1, UPLINK_MAC), flows(2, BACKEND_MAC)];
    // What each frame becomes (Maglev on a new flow does not depend on the order).
    let mut w = worker(variant);
    let expected: Vec<Vec<Vec<u8>>> = inputs
        .iter()
        .enumerate()
        .map(|(port, frames)| {
            let rx = u16::try_from(port).unwrap();
            frames
                .iter()
                .map(|f| {
                    let mut p = VecPacket::new(f);
                    let v = w.process(&mut p, rx, NOW);
                    assert_eq!(v, Verdict::Forward(1), "port {port}");
                    p.data().to_vec()
                })
                .collect()
        })
        .collect();

    let table = dir.join("table.bin");
    std::fs::write(&table, Arc::unwrap_or_clone(variant.generation()).encode()).unwrap();
    let mut vdevs = Vec::new();
    for (p, frames) in inputs.iter().enumerate() {
        let input = dir.join(format!("in{p}.pcap"));
        write_pcap(&input, frames);
        let out = dir.join(format!("out{p}.pcap"));
        vdevs.push(format!(
            "--vdev=net_pcap{p},rx_pcap={},tx_pcap={}",
            input.display(),
            out.display()
        ));
    }
    let settings = pcap_settings(&dir, 16384);
    let stdout = run_table(&table, &settings, "1.5", &vdevs);
    assert!(
        read_output(&dir.join("out0.pcap")).is_empty(),
        "nothing goes back out of the uplink"
    );
    let got = read_output(&dir.join("out1.pcap"));
    assert_eq!(got.len(), 6000, "every frame exactly once\n{stdout}");
    // An interleaving of the two ports' sequences, each in its own order. The two sets of
    // outputs are disjoint (different clients), so membership decides the sequence.
    let (mut a, mut b) = (0, 0);
    for (i, g) in got.iter().enumerate() {
        if a < expected[0].len() && *g == expected[0][a] {
            a += 1;
        } else if b < expected[1].len() && *g == expected[1][b] {
            b += 1;
        } else {
            panic!(
                "output frame {i} is not the next frame of either port (uplink {a}, backend {b})"
            );
        }
    }
    assert_eq!((a, b), (3000, 3000));
}
