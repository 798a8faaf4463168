//! Multi-queue receive: two workers, each polling one of the two RX queues of a `net_tap` port
//! whose kernel side sits in a network namespace. 48 TCP and 16 UDP IPv4 flows are sent from the
//! namespace (SYN, handshake ACK and data; datagrams), and 16 IPv6 TCP flows, then packets of
//! the reverse direction (VIP → client) of every flow.
//!
//! Must hold:
//! - every flow is in exactly one worker's connection table (`flows`), and both workers hold
//!   some (the queues are really spread);
//! - per-worker `flow_inserts` add up to the number of flows, each worker's equals the flows it
//!   holds, and no later packet of a flow reached the other worker (`flow_non_syn_miss` and
//!   `flow_provisional_inserts` are 0 everywhere: a flow's ACK or data on a worker without its
//!   entry would count there);
//! - the reverse direction reaches the same worker: the reverse packets of the flows worker `w`
//!   holds, sent in one batch, are all counted by worker `w` (they are dropped as
//!   `drop_not_ours`: in DSR only client → VIP traffic comes back to the appliance) and none by
//!   the other.

mod common;
mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fixtures::frames::{tcp4_frame, tcp6_frame, udp4_frame};

const WAIT: Duration = Duration::from_secs(60);
const VIP_TCP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP_UDP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const POLICY: &str = "\
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24, 2001:db8:100::1/64]
    gateway: { ipv4: 198.51.100.254, ipv6: 2001:db8:100::fe, mac: 02:00:00:00:00:fe }
encap: ipip
services:
  - name: chat
    vip: 203.0.113.10
    ports: [443]
    protocol: tcp
    routes:
      - { pool: gpus }
  - name: chat6
    vip: 2001:db8:10::10
    ports: [443]
    protocol: tcp
    routes:
      - { pool: gpus }
  - name: dns
    vip: 203.0.113.11
    ports: [53]
    protocol: udp
    routes:
      - { pool: gpus }
pools:
  gpus:
    scheduler: maglev
    backends:
      - { address: 10.10.1.1 }
      - { address: 10.10.1.2 }
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    udp: bool,
    client: IpAddr,
    port: u16,
}

impl Flow {
    fn vip_port(self) -> u16 {
        if self.udp {
            53
        } else {
            443
        }
    }

    fn forward(self) -> Vec<Vec<u8>> {
        let (p, vp) = (self.port, self.vip_port());
        match self.client {
            IpAddr::V4(c) if self.udp => (0..3u8)
                .map(|i| udp4_frame(c, p, VIP_UDP, vp, &[i; 24]))
                .collect(),
            IpAddr::V4(c) => vec![
                tcp4_frame(c, p, VIP_TCP, vp, SYN, &[]),
                tcp4_frame(c, p, VIP_TCP, vp, ACK, &[]),
                tcp4_frame(c, p, VIP_TCP, vp, ACK, b"GET / HTTP/1.1\r\n\r\n"),
                tcp4_frame(c, p, VIP_TCP, vp, ACK, b"more"),
            ],
            IpAddr::V6(c) => vec![
                tcp6_frame(c, p, VIP_V6, vp, SYN, &[]),
                tcp6_frame(c, p, VIP_V6, vp, ACK, &[]),
                tcp6_frame(c, p, VIP_V6, vp, ACK, b"GET / HTTP/1.1\r\n\r\n"),
            ],
        }
    }

    /// The other direction of the same 5-tuple: VIP:port → client:port.
    fn reverse(self) -> Vec<Vec<u8>> {
        let (p, vp) = (self.port, self.vip_port());
        match self.client {
            IpAddr::V4(c) if self.udp => (0..2u8)
                .map(|i| udp4_frame(VIP_UDP, vp, c, p, &[i; 16]))
                .collect(),
            IpAddr::V4(c) => vec![
                tcp4_frame(VIP_TCP, vp, c, p, SYN | ACK, &[]),
                tcp4_frame(VIP_TCP, vp, c, p, ACK, b"tokens"),
            ],
            IpAddr::V6(c) => vec![
                tcp6_frame(VIP_V6, vp, c, p, SYN | ACK, &[]),
                tcp6_frame(VIP_V6, vp, c, p, ACK, b"tokens"),
            ],
        }
    }

    fn client_text(self) -> String {
        SocketAddr::new(self.client, self.port).to_string()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Per-worker values of the data-plane counter `counter` from the control plane's `/metrics`.
fn per_worker(api: &str, counter: &str) -> BTreeMap<u32, u64> {
    let text = sh(&format!("curl -sS --max-time 10 http://{api}/metrics"));
    let prefix = format!("switchyard_dataplane_{counter}_total{{worker=\"");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&prefix) {
            let (worker, value) = rest.split_once("\"} ").unwrap();
            out.insert(worker.parse().unwrap(), value.trim().parse().unwrap());
        }
    }
    out
}

fn total(m: &BTreeMap<u32, u64>) -> u64 {
    m.values().sum()
}

/// Sends `frames` from the namespace's side of the tap.
fn inject(ns: &Netns, iface: &str, dir: &std::path::Path, name: &str, frames: &[Vec<u8>]) {
    let pcap = dir.join(name);
    write_pcap(&pcap, frames);
    ns.exec(&format!(
        "tcpreplay -q --pps 2000 -i {iface} {} >/dev/null 2>&1",
        pcap.display()
    ));
}

/// Waits until `counter` summed over workers reaches `want`; returns the per-worker values.
fn wait_counter(api: &str, counter: &str, want: u64) -> BTreeMap<u32, u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = per_worker(api, counter);
        if total(&m) >= want {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{counter}: {m:?}, expected {want} in all"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_flow_both_directions_on_one_worker_with_two_rx_queues() {
    require_root();
    let dir = scratch("rss-tap");
    let _cleanup = RemoveDir(dir.clone());
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let instance = unique("rss");
    let api = format!("127.0.0.1:{}", free_port());
    let tap = unique("syrss");
    let settings = dir.join("appliance.yaml");
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_tap0, role: uplink }\n\
         flow_table: { ipv4_flows: 4096, ipv6_flows: 1024 }\nmempool: { mbufs: 8191 }\n",
    )
    .unwrap();

    let mut flows = Vec::new();
    for i in 0..48u8 {
        flows.push(Flow {
            udp: false,
            client: Ipv4Addr::new(10, 1, i / 12, 1 + i % 12).into(),
            port: 41_000 + u16::from(i) * 13,
        });
    }
    for i in 0..16u8 {
        flows.push(Flow {
            udp: true,
            client: Ipv4Addr::new(10, 2, 0, 1 + i % 5).into(),
            port: 50_000 + u16::from(i) * 7,
        });
    }
    for i in 0..16u16 {
        flows.push(Flow {
            udp: false,
            client: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1 + i % 6).into(),
            port: 43_000 + i * 11,
        });
    }

    let mut ctl = start_control(&shm, &policy, &instance, &api, &[]);
    // Two workers on a two-core machine: the main lcore shares core 0 with worker 1 (it sleeps
    // between polls).
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--instance", &instance, "--config"])
            .arg(&settings)
            .env("SWITCHYARD_SHM_DIR", &shm)
            .args(["--", "--lcores", "0@0,1@0,2@1", "--in-memory", "--no-pci"])
            .arg(format!("--vdev=net_tap0,iface={tap}")),
    );
    let port_line = dp.wait_for_line(WAIT, |l| l.starts_with("port 0 net_tap0"));
    assert!(
        port_line.contains("rxq=2 txq=2") && port_line.contains("rx=kernel-tun"),
        "{port_line}"
    );
    dp.wait_for_line(WAIT, |l| l.starts_with("worker 1 on lcore 2"));
    dp.wait_for_line(WAIT, |l| l.starts_with("table: generation 1"));
    wait_for_interface(&tap, WAIT);

    let ns = Netns::new(&unique("syrssn"));
    sh(&format!("ip link set {tap} netns {}", ns.0));
    // No IPv6 on the client side: the kernel's own router solicitations would be noise.
    ns.exec(&format!(
        "sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1 && ip link set {tap} up"
    ));

    // Forward direction of every flow.
    let forward: Vec<Vec<u8>> = flows.iter().flat_map(|f| f.forward()).collect();
    inject(&ns, &tap, &dir, "forward.pcap", &forward);
    let inserts = wait_counter(&api, "flow_inserts", flows.len() as u64);

    // Where each flow is held.
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let out = run_with_timeout(
            Command::new(control_bin()).args(["flows", "--api", &api, "--json"]),
            WAIT,
        );
        assert!(out.status.success(), "flows: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = v["flows"].as_array().cloned().unwrap_or_default();
        if list.len() >= flows.len() {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "flows lists {} of {}: {v}",
            list.len(),
            flows.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut holder: BTreeMap<String, u32> = BTreeMap::new();
    for f in &listed {
        let client = f["client"].as_str().unwrap().to_owned();
        let worker = u32::try_from(f["worker"].as_u64().unwrap()).unwrap();
        let prev = holder.insert(client.clone(), worker);
        assert!(
            prev.is_none(),
            "flow {client} held by workers {prev:?} and {worker}"
        );
    }
    let wanted: BTreeSet<String> = flows.iter().map(|f| f.client_text()).collect();
    let held: BTreeSet<String> = holder.keys().cloned().collect();
    assert_eq!(held, wanted, "every flow in exactly one worker's table");
    let mut per_worker_held: BTreeMap<u32, u64> = BTreeMap::new();
    for w in holder.values() {
        *per_worker_held.entry(*w).or_default() += 1;
    }
    eprintln!("flows held per worker: {per_worker_held:?}");
    assert_eq!(
        per_worker_held.len(),
        2,
        "both RX queues carry flows: {per_worker_held:?}"
    );
    assert_eq!(
        total(&inserts),
        flows.len() as u64,
        "no flow inserted twice: {inserts:?}"
    );
    assert_eq!(
        inserts, per_worker_held,
        "each worker inserted exactly the flows it holds"
    );
    for counter in ["flow_non_syn_miss", "flow_provisional_inserts"] {
        assert_eq!(
            total(&per_worker(&api, counter)),
            0,
            "{counter}: a later packet of a flow reached a worker without its entry"
        );
    }

    // Reverse direction, one batch per worker: all of it must be counted by that worker.
    for w in [0u32, 1] {
        let before = per_worker(&api, "drop_not_ours");
        let batch: Vec<Vec<u8>> = flows
            .iter()
            .filter(|f| holder[&f.client_text()] == w)
            .flat_map(|f| f.reverse())
            .collect();
        inject(&ns, &tap, &dir, &format!("reverse{w}.pcap"), &batch);
        let want = total(&before) + batch.len() as u64;
        let after = wait_counter(&api, "drop_not_ours", want);
        std::thread::sleep(Duration::from_millis(300));
        let after = {
            let again = per_worker(&api, "drop_not_ours");
            assert_eq!(again, after, "late reverse packets");
            again
        };
        for (&worker, &value) in &after {
            let delta = value - before.get(&worker).copied().unwrap_or(0);
            let expect = if worker == w { batch.len() as u64 } else { 0 };
            assert_eq!(
                delta, expect,
                "reverse packets of worker {w}'s flows counted by worker {worker}"
            );
        }
    }
    // Nothing else moved: still one entry per flow.
    assert_eq!(total(&per_worker(&api, "flow_inserts")), flows.len() as u64);

    let (status, _) = dp.stop(2, WAIT);
    assert!(status.success(), "{}", dp.seen.join("\n"));
    let (status, _) = ctl.stop(15, WAIT);
    assert!(status.success());
}
