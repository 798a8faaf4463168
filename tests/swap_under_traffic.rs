//! Hitless table swaps under traffic: while tcpreplay sends a steady stream of established TCP
//! flows through the data plane (in rounds, for as long as publishing takes), this test (acting
//! as the control plane, through the same `Publisher` the daemon uses) publishes 1000 table
//! generations that add and remove backends
//! and reweight the others. It asserts:
//! - every generation is acknowledged and goes live on every worker;
//! - no packet is lost: every frame tcpreplay sent leaves the data plane encapsulated;
//! - every flow whose backend was never removed keeps that backend through all 1000 swaps.
//!
//! The data plane's client side is a `net_tap` port; tcpreplay writes into the tap's kernel
//! side. What the data plane sends to backends goes into a capture (`net_pcap`, `tx_pcap`),
//! which the test then reads frame by frame.

mod common;
#[path = "fixtures/frames.rs"]
mod frames;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::*;
use frames::{frame, ipv4, tcp, Pseudo, ACK, L2, SYN, V4};
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_control::policy;
use switchyard_control::publish::Publisher;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const FLOWS: u16 = 400;
const GENERATIONS: u32 = 1000;
const STABLE: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
    Ipv4Addr::new(192, 0, 2, 13),
    Ipv4Addr::new(192, 0, 2, 14),
];
const CHURN: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 0, 2, 21),
    Ipv4Addr::new(192, 0, 2, 22),
    Ipv4Addr::new(192, 0, 2, 23),
    Ipv4Addr::new(192, 0, 2, 24),
];

/// The policy: one service, one Maglev pool of the stable backends (with these weights) plus
/// the churn backends that are present.
fn policy_yaml(weights: [u32; 4], churn_present: [bool; 4]) -> String {
    let mut backends = String::new();
    for (a, w) in STABLE.iter().zip(weights) {
        backends.push_str(&format!("      - {{ address: {a}, weight: {w} }}\n"));
    }
    for (a, present) in CHURN.iter().zip(churn_present) {
        if present {
            backends.push_str(&format!("      - {{ address: {a}, weight: 100 }}\n"));
        }
    }
    format!(
        "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
  - name: backend
    mac: 02:00:00:00:01:01
    addresses: [192.0.2.1/24]
    gateway: {{ ipv4: 192.0.2.254, mac: 02:00:00:00:01:fe }}
encap: ipip
services:
  - name: llama
    vip: {VIP}
    ports: [443]
    protocol: tcp
    routes:
      - {{ pool: llama }}
tables:
  maglev_size: 4099
pools:
  llama:
    scheduler: maglev
    backends:
{backends}"
    )
}

fn client(i: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i >> 8) as u8, (i & 0xff) as u8)
}

fn client_frame(i: u16, flags: u8) -> Vec<u8> {
    let src = client(i);
    let sport = 20_000 + i;
    let seg = tcp(
        Pseudo::V4(src, VIP),
        sport,
        443,
        flags,
        b"inference request bytes",
    );
    frame(&L2::inbound(), 0x0800, &ipv4(&V4::new(src, VIP, 6), &seg))
}

/// From an IPIP frame the data plane sent: (inner source port, outer destination = backend).
fn flow_and_backend(f: &[u8]) -> Option<(u16, Ipv4Addr)> {
    let outer = f.get(14..)?;
    if f.get(12..14)? != [0x08, 0x00] || outer.first()? >> 4 != 4 || *outer.get(9)? != 4 {
        return None;
    }
    let backend = Ipv4Addr::new(outer[16], outer[17], outer[18], outer[19]);
    let inner = outer.get(usize::from(outer[0] & 0xf) * 4..)?;
    let sport = u16::from_be_bytes([*inner.get(20)?, *inner.get(21)?]);
    Some((sport, backend))
}

fn tcpreplay_sent(out: &std::process::Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("Actual:"))
        .unwrap_or_else(|| panic!("tcpreplay output:\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_thousand_generations_under_traffic_lose_nothing_and_move_no_unaffected_flow() {
    require_root();
    let dir = scratch("swap");
    // Segment and generation files on tmpfs, as in production (/dev/shm), in a directory of
    // this test's own.
    let shm = std::path::PathBuf::from(format!("/dev/shm/{}", unique("syswapd")));
    std::fs::create_dir_all(&shm).unwrap();
    let _shm_cleanup = RemoveDir(shm.clone());
    let instance = unique("sw");

    // Traffic: one SYN per flow first, then a capture of established-flow packets replayed in a
    // loop while the tables churn.
    let syns: Vec<Vec<u8>> = (0..FLOWS).map(|i| client_frame(i, SYN)).collect();
    let acks: Vec<Vec<u8>> = (0..FLOWS).map(|i| client_frame(i, ACK)).collect();
    write_pcap(&dir.join("syn.pcap"), &syns);
    write_pcap(&dir.join("ack.pcap"), &acks);

    let tap = unique("sywt");

    // Control side: the first generation, published before the data plane starts (either may
    // start first).
    let mut weights = [100u32; 4];
    let mut churn = [true; 4];
    let mut ids = BackendIds::new();
    let state = BackendState::new();
    let mut publisher = Publisher::attach_in(&shm, &instance).expect("attach publisher");
    let publish = |publisher: &mut Publisher,
                   ids: &mut BackendIds,
                   weights: [u32; 4],
                   churn: [bool; 4],
                   n: u64| {
        let p = policy::parse_str(&policy_yaml(weights, churn), "swap.yaml").expect("policy");
        let g = compile(
            &CompileInput {
                policy: &p,
                generation: n,
                state: &state,
            },
            ids,
        )
        .expect("compile");
        publisher.publish(&g).expect("publish")
    };
    let first = publish(&mut publisher, &mut ids, weights, churn, 1);

    let settings = dir.join("appliance.yaml");
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_tap0, role: uplink }\n  - { device: net_pcap0, role: backend }\n\
         flow_table: { ipv4_flows: 65536, ipv6_flows: 1024 }\nmempool: { mbufs: 16383 }\n\
         neighbour: { announce: false }\n",
    )
    .unwrap();
    // On tmpfs: the worker writes this capture itself, and a disk under writeback pressure (the
    // machine compiling) would stall it and inflate the swap latency this test reports.
    let out_pcap =
        std::path::PathBuf::from(format!("/dev/shm/{}-to-backends.pcap", unique("syswap")));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(out_pcap.clone());
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .env("SWITCHYARD_SHM_DIR", &shm)
            .args([
                "run",
                "--stats-interval",
                "1",
                "--instance",
                &instance,
                "--config",
            ])
            .arg(&settings)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .arg(format!("--vdev=net_tap0,iface={tap}"))
            .arg(format!("--vdev=net_pcap0,tx_pcap={}", out_pcap.display())),
    );
    wait_for_interface(&tap, Duration::from_secs(30));
    // Only the replayed frames: no IPv6 autoconfiguration chatter from the kernel side.
    sh(&format!(
        "sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1 && ip link set {tap} up"
    ));
    dp.wait_for_line(Duration::from_secs(30), |l| {
        l.starts_with("table: generation")
    });
    publisher
        .wait_live(first, Duration::from_secs(10))
        .expect("first generation live");

    let replay = |file: &str, extra: &[&str]| {
        let mut c = Command::new("tcpreplay");
        c.args(["-q", "-i", &tap]).args(extra).arg(dir.join(file));
        c
    };
    let syn_out = run_with_timeout(
        &mut replay("syn.pcap", &["--pps", "20000"]),
        Duration::from_secs(30),
    );
    assert!(
        syn_out.status.success(),
        "{}",
        String::from_utf8_lossy(&syn_out.stderr)
    );
    let mut sent = tcpreplay_sent(&syn_out);
    std::thread::sleep(Duration::from_millis(200));

    // Established traffic at 20k packets/s, in rounds of 8000 packets, until the 1000
    // generations are all live: on a busy machine publishing takes longer, and the traffic
    // lasts as long as it does (no fixed replay length to outrun).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ack_replay = std::thread::spawn({
        let done = std::sync::Arc::clone(&done);
        let (dir, tap) = (dir.clone(), tap.clone());
        move || {
            let (mut sent, mut rounds) = (0u64, 0u32);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let out = run_with_timeout(
                    Command::new("tcpreplay")
                        .args(["-q", "-i", &tap, "--pps", "20000", "--loop", "20"])
                        .arg(dir.join("ack.pcap")),
                    Duration::from_secs(60),
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                sent += tcpreplay_sent(&out);
                rounds += 1;
            }
            (sent, rounds)
        }
    });
    let mut acked = 0u32;
    let mut latencies: Vec<Duration> = Vec::new();
    let mut removed_ever: HashSet<Ipv4Addr> = HashSet::new();
    for i in 0..GENERATIONS {
        match i % 3 {
            0 => {
                let k = (i as usize / 3) % 4;
                churn[k] = !churn[k];
                if !churn[k] {
                    removed_ever.insert(CHURN[k]);
                }
            }
            1 => weights[(i as usize / 3) % 4] = 20 + (i * 37) % 180,
            _ => weights[(i as usize * 7) % 4] = 20 + (i * 53) % 180,
        }
        let n = publish(&mut publisher, &mut ids, weights, churn, u64::from(i) + 2);
        let live = publisher
            .wait_live(n, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("generation {n}: {e}"));
        assert_eq!(live.live_generation, n);
        latencies.extend(live.latency);
        acked += 1;
    }
    // The swaps really happened under traffic: the replay ran until the last one was live.
    let overlapped = !ack_replay.is_finished();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() * p).div_ceil(100).max(1) - 1];
    eprintln!(
        "publish -> live on every worker over {} generations under traffic: p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        pct(50),
        pct(99),
        latencies[latencies.len() - 1]
    );
    assert!(
        overlapped,
        "the 1000 generations must be published while traffic flows"
    );
    let (ack_sent, rounds) = ack_replay.join().unwrap();
    assert!(
        rounds >= 2,
        "traffic ran through the swaps ({rounds} replay rounds)"
    );
    eprintln!("{rounds} replay rounds of 8000 packets during the swaps");
    sent += ack_sent;
    std::thread::sleep(Duration::from_millis(500));
    // Frames the kernel could not queue to the tap's reader (the data plane) are lost before
    // the data plane sees them: on a busy machine the tap's queue overflows now and then.
    let tap_dropped: u64 =
        std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/tx_dropped"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
    eprintln!("lost in the tap's kernel queue before the data plane: {tap_dropped}");
    let sent = sent - tap_dropped;
    let (status, rest) = dp.stop(2, Duration::from_secs(30));
    assert!(status.success(), "data plane exit {status:?}");
    assert_eq!(acked, GENERATIONS);

    // No loss: everything tcpreplay sent came out encapsulated. The only frames the data plane
    // may drop are the few the tap's kernel side sent on its own as it came up (an IPv6 MLD
    // report before autoconfiguration was switched off): drops must equal exactly those.
    let summary = rest.join("\n");
    let frames = read_pcap(&out_pcap);
    assert_eq!(
        frames.len() as u64,
        sent,
        "frames out vs frames tcpreplay sent\n{summary}"
    );
    let port0_rx: u64 = rest
        .iter()
        .find(|l| l.starts_with("port 0 "))
        .and_then(|l| l.split(" rx ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("port 0 counters");
    let drops: u64 = rest
        .iter()
        .filter(|l| l.starts_with("counter drop_"))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        drops,
        port0_rx - sent,
        "only frames tcpreplay did not send may be dropped\n{summary}"
    );
    assert!(
        port0_rx - sent <= 5,
        "unexpected extra traffic on the tap\n{summary}"
    );
    let dropped = field_u64(&result_fields(&summary), "dropped");
    assert_eq!(dropped, drops, "no TX drops\n{summary}");

    // Stickiness: a flow first seen on a backend that was never removed never moves.
    let mut first_backend: HashMap<u16, Ipv4Addr> = HashMap::new();
    let mut moved_unaffected = 0;
    let mut moved_churned = 0;
    let mut seen_moved: HashSet<u16> = HashSet::new();
    for f in &frames {
        let (sport, backend) = flow_and_backend(f).expect("an IPIP frame to a backend");
        let first = *first_backend.entry(sport).or_insert(backend);
        if backend != first && seen_moved.insert(sport) {
            if removed_ever.contains(&first) {
                moved_churned += 1;
            } else {
                moved_unaffected += 1;
            }
        }
    }
    assert_eq!(
        first_backend.len(),
        usize::from(FLOWS),
        "every flow reached a backend"
    );
    eprintln!(
        "{} frames, {} flows; flows moved off removed backends: {moved_churned}; off unaffected backends: {moved_unaffected}",
        frames.len(),
        first_backend.len()
    );
    assert_eq!(
        moved_unaffected, 0,
        "flows on backends that were never removed must keep them"
    );
}
