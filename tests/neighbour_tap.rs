//! Gateway resolution through the real data plane on net_tap, against a kernel "router": the
//! tap moved into a namespace that holds the gateway's addresses.
//!
//! ```text
//!  ns rtr: client 10.93.0.7 / 2001:db8:93::7 ──tap──► switchyard-dataplane (one-armed, port 0)
//!          gateway 10.93.0.254 / 2001:db8:93::fe ◄──IPIP / IPv6-in-IPv6 to the backends, sent to the
//!                                                    gateway's MAC the data plane resolved itself
//! ```
//!
//! The policy names the gateway by address only. The test shows, in order:
//! 1. nothing answers for the gateway yet: every datagram to a VIP is dropped and counted
//!    (`drop_gateway_unresolved`), exactly;
//! 2. the router gets its addresses: the data plane resolves it by ARP and by ND and forwards
//!    both VIPs' datagrams to the router's MAC (captured by tcpdump in the namespace);
//! 3. the router's MAC changes (`ip link set dev X address ...`): the data plane's refreshes to
//!    the old MAC go unanswered, the entries age, it resolves the new MAC by broadcast and
//!    forwards to it;
//! 4. the router stops answering for its IPv4 address: the entry ages and what is sent
//!    meanwhile is dropped and counted, exactly.
//!
//! Gratuitous ARP and unsolicited NA for the appliance's address and VIP are counted at start.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const POLICY: &str = r#"
interfaces:
  - name: uplink
    mac: 02:5e:00:00:03:01
    addresses: [10.93.0.1/24, "2001:db8:93::1/64"]
    gateway: { ipv4: 10.93.0.254, ipv6: "2001:db8:93::fe" }
encap: ipip
services:
  - name: four
    vip: 10.100.3.10
    ports: [5000]
    protocol: udp
    routes:
      - { pool: four }
  - name: six
    vip: "2001:db8:100::10"
    ports: [5000]
    protocol: udp
    routes:
      - { pool: six }
pools:
  four:
    scheduler: maglev
    backends:
      - { address: 10.94.0.2, weight: 100 }
  six:
    scheduler: maglev
    backends:
      - { address: "2001:db8:94::2", weight: 100 }
"#;

const OLD_MAC: &str = "02:5e:00:00:03:fe";
const NEW_MAC: &str = "02:5e:00:00:03:99";

/// Sends `n` UDP datagrams from the namespace to `vip`:5000.
fn send(ns: &Netns, vip: &str, n: usize) {
    let family = if vip.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    ns.exec(&format!(
        "python3 -c \"import socket,time\ns=socket.socket(socket.{family},socket.SOCK_DGRAM)\nfor i in range({n}):\n    s.sendto(b\\\"neighbour test\\\",(\\\"{vip}\\\",5000)); time.sleep(0.01)\""
    ));
}

/// Captures the tunnel packets reaching the router while `during` runs; returns the frames.
fn capture(ns: &Netns, tap: &str, file: &std::path::Path, during: impl FnOnce()) -> Vec<Vec<u8>> {
    let mut tcpdump = Background::spawn(
        Command::new("ip")
            .args([
                "netns", "exec", &ns.0, "tcpdump", "-q", "-U", "-n", "-i", tap, "-w",
            ])
            .arg(file),
    );
    std::thread::sleep(Duration::from_millis(1500));
    during();
    std::thread::sleep(Duration::from_millis(1000));
    let _ = tcpdump.stop(2, Duration::from_secs(10));
    read_pcap(file)
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// What one phase saw on the router's tap.
struct Seen {
    /// Client datagrams to a VIP the kernel put on the wire: (IPv4, IPv6).
    sent: (usize, usize),
    /// Tunnel packets the data plane sent back: (destination MAC, outer ethertype).
    tunnels: Vec<(Vec<u8>, u16)>,
    brief: Vec<String>,
}

/// Sends `n` datagrams to each VIP (IPv6 first, each after a ping that keeps the client's
/// neighbour entry for the appliance fresh) while capturing on the tap.
fn phase(ns: &Netns, tap: &str, file: &std::path::Path, v4: usize, v6: usize) -> Seen {
    let frames = capture(ns, tap, file, || {
        if v6 > 0 {
            ns.exec("ping -6 -c 1 -W 2 2001:db8:93::1 >/dev/null");
            send(ns, "2001:db8:100::10", v6);
        }
        if v4 > 0 {
            ns.exec("ping -c 1 -W 2 10.93.0.1 >/dev/null");
            send(ns, "10.100.3.10", v4);
        }
    });
    let dp = mac_bytes("02:5e:00:00:03:01");
    let udp_to_vip = |f: &&Vec<u8>, ty: u16| {
        let (proto, dport) = if ty == 0x0800 { (23, 36) } else { (20, 56) };
        f.len() >= dport + 2
            && f[0..6] == dp[..]
            && u16::from_be_bytes([f[12], f[13]]) == ty
            && f[proto] == 17
            && u16::from_be_bytes([f[dport], f[dport + 1]]) == 5000
    };
    Seen {
        sent: (
            frames.iter().filter(|f| udp_to_vip(f, 0x0800)).count(),
            frames.iter().filter(|f| udp_to_vip(f, 0x86dd)).count(),
        ),
        tunnels: summary(&frames),
        brief: brief(&frames),
    }
}

/// (destination MAC, outer ethertype) of every captured tunnel packet (outer IPv4 protocol
/// 4, or outer IPv6 next header 41: the data plane's IPIP to the backends).
fn summary(frames: &[Vec<u8>]) -> Vec<(Vec<u8>, u16)> {
    frames
        .iter()
        .filter(|f| f.len() > 40)
        .map(|f| (f[0..6].to_vec(), u16::from_be_bytes([f[12], f[13]]), f))
        .filter(|(_, t, f)| (*t == 0x0800 && f[23] == 4) || (*t == 0x86dd && f[20] == 41))
        .map(|(d, t, _)| (d, t))
        .collect()
}

/// Every captured frame, briefly, for failure messages.
fn brief(frames: &[Vec<u8>]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            format!(
                "{:02x?} type {:02x}{:02x} len {}",
                &f[0..6],
                f[12],
                f[13],
                f.len()
            )
        })
        .collect()
}

/// Every client datagram of the phase came back as a tunnel packet to `mac`, each family seen.
fn check_forwarded(seen: &Seen, mac: &str) {
    let v4 = seen.tunnels.iter().filter(|(_, t)| *t == 0x0800).count();
    let v6 = seen.tunnels.iter().filter(|(_, t)| *t == 0x86dd).count();
    assert!(seen.sent.0 > 0 && seen.sent.1 > 0, "{:#?}", seen.brief);
    assert_eq!((v4, v6), seen.sent, "{:#?}", seen.brief);
    assert!(
        seen.tunnels.iter().all(|(dst, _)| *dst == mac_bytes(mac)),
        "every tunnel packet to {mac}: {:#?}",
        seen.brief
    );
}

fn counter(lines: &[String], name: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("counter {name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn resolves_the_gateway_by_arp_and_nd_forwards_to_it_and_follows_a_mac_change() {
    require_root();
    let dir = scratch("neigh-tap");
    let _cleanup = RemoveDir(dir.clone());
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let table = dir.join("table.bin");
    let out = run_with_timeout(
        Command::new(control_bin())
            .arg("compile")
            .arg(&policy)
            .arg("-o")
            .arg(&table),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "compile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = dir.join("appliance.yaml");
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_tap0, role: uplink }\n\
         flow_table: { ipv4_flows: 4096, ipv6_flows: 1024 }\nmempool: { mbufs: 8191 }\n\
         neighbour: { reachable_ms: 1500, retrans_ms: 200, probes: 2, max_backoff_ms: 800 }\n",
    )
    .unwrap();
    let tap = unique("synt");
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--stats-interval", "0.5", "--config"])
            .arg(&settings)
            .arg("--table")
            .arg(&table)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .arg(format!("--vdev=net_tap0,iface={tap}")),
    );
    wait_for_interface(&tap, Duration::from_secs(30));
    dp.wait_for_line(Duration::from_secs(30), |l| l.starts_with("run: rx "));

    let rtr = Netns::new(&unique("synr"));
    sh(&format!("ip link set {tap} netns {}", rtr.0));
    // The client's addresses only: nobody answers for the gateway yet.
    rtr.exec(&format!(
        "ip link set {tap} address {OLD_MAC} && ip link set {tap} up && \
         ip addr add 10.93.0.7/24 dev {tap} && ip addr add 2001:db8:93::7/64 dev {tap} nodad && \
         ip route add 10.100.3.10/32 via 10.93.0.1 dev {tap} && \
         ip route add 2001:db8:100::10/128 via 2001:db8:93::1 dev {tap}"
    ));
    // The client resolves the appliance (answered by the data plane) before sending.
    rtr.exec("ping -c 1 -W 2 10.93.0.1 >/dev/null && ping -6 -c 1 -W 2 2001:db8:93::1 >/dev/null");

    // 1. Unresolved: every datagram dropped and counted.
    let unresolved = phase(&rtr, &tap, &dir.join("p1.pcap"), 5, 5);
    assert!(unresolved.tunnels.is_empty(), "{:#?}", unresolved.brief);
    assert!(
        unresolved.sent.0 > 0 && unresolved.sent.1 > 0,
        "{:?} {:#?}",
        unresolved.sent,
        unresolved.brief
    );

    // 2. The router takes the gateway's addresses: resolved by ARP and ND.
    rtr.exec(&format!(
        "ip addr add 10.93.0.254/24 dev {tap} && ip addr add 2001:db8:93::fe/64 dev {tap} nodad"
    ));
    for gw in ["10.93.0.254", "2001:db8:93::fe"] {
        let line = format!("gateway {gw} is at {OLD_MAC}");
        dp.wait_for_line(Duration::from_secs(10), |l| l.contains(&line));
    }
    let old = phase(&rtr, &tap, &dir.join("p2.pcap"), 5, 5);
    check_forwarded(&old, OLD_MAC);

    // 3. The router's MAC changes: refreshes to the old MAC go unanswered, the entries age,
    //    and the new MAC is resolved.
    rtr.exec(&format!("ip link set dev {tap} address {NEW_MAC}"));
    for gw in ["10.93.0.254", "2001:db8:93::fe"] {
        let line = format!("gateway {gw} is at {NEW_MAC}");
        dp.wait_for_line(Duration::from_secs(15), |l| l.contains(&line));
    }
    let new = phase(&rtr, &tap, &dir.join("p3.pcap"), 5, 5);
    check_forwarded(&new, NEW_MAC);

    // 4. The router stops answering for its IPv4 address: aged, and what is sent meanwhile is
    //    dropped and counted.
    rtr.exec(&format!("ip addr del 10.93.0.254/24 dev {tap}"));
    dp.wait_for_line(Duration::from_secs(15), |l| {
        l.contains("gateway 10.93.0.254 at") && l.contains("stopped answering")
    });
    let aged = phase(&rtr, &tap, &dir.join("p4.pcap"), 7, 0);
    assert!(aged.tunnels.is_empty(), "{:#?}", aged.brief);
    assert!(aged.sent.0 > 0, "{:#?}", aged.brief);

    let (status, rest) = dp.stop(2, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let lines = dp.seen.clone();
    let all = lines.join("\n");
    let _ = rest;
    // Exactly what the client put on the wire while the gateway was unresolved was dropped and
    // counted; everything else was forwarded.
    assert_eq!(
        counter(&lines, "drop_gateway_unresolved"),
        (unresolved.sent.0 + unresolved.sent.1 + aged.sent.0) as u64,
        "phase 1 (both families) and phase 4 (IPv4):\n{all}"
    );
    assert_eq!(
        counter(&lines, "forwarded_ipip_v4"),
        (old.sent.0 + new.sent.0) as u64,
        "{all}"
    );
    assert_eq!(
        counter(&lines, "forwarded_ipip_v6"),
        (old.sent.1 + new.sent.1) as u64,
        "{all}"
    );
    assert!(counter(&lines, "arp_request_sent") >= 4, "{all}");
    assert!(counter(&lines, "nd_solicit_sent") >= 4, "{all}");
    assert!(counter(&lines, "neighbour_learned") >= 4, "{all}");
    assert_eq!(
        counter(&lines, "gratuitous_arp_sent"),
        2,
        "own address and VIP:\n{all}"
    );
    assert_eq!(
        counter(&lines, "unsolicited_na_sent"),
        2,
        "own address and VIP:\n{all}"
    );
    assert_eq!(counter(&lines, "drop_neighbour_tx"), 0, "{all}");
    assert!(
        lines.iter().any(
            |l| l.starts_with("neighbour port 0 gateway 2001:db8:93::fe reachable")
                && l.ends_with(NEW_MAC)
        ),
        "the final table:\n{all}"
    );
}
