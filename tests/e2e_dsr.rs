//! One real connection end to end, with direct server return.
//!
//! ```text
//!  ns cli: curl ──tap (uplink, port 0)──► switchyard-dataplane ──IPIP──► tap (backend, port 1)──► ns srv
//!     ▲                                                                                      │ decap
//!     └──────────────────────────── veth: the server answers the client directly ◄────────────┘ HTTP server on the VIP
//! ```
//!
//! The policy is compiled by `switchyard-control compile` and the data plane runs from that
//! table file. The test asserts the HTTP response body, that the data plane encapsulated the
//! client's packets, and that the server's replies never crossed the data plane.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn policy(gateway_mac: &str) -> String {
    format!(
        r"
interfaces:
  - name: uplink
    mac: 02:5e:00:00:01:01
    addresses: [10.90.0.1/24]
  - name: backend
    mac: 02:5e:00:00:02:01
    addresses: [10.91.0.1/24]
    gateway: {{ ipv4: 10.91.0.2, mac: {gateway_mac} }}
encap: ipip
services:
  - name: web
    vip: 10.100.0.10
    ports: [8080]
    protocol: tcp
    routes:
      - {{ pool: web }}
pools:
  web:
    scheduler: maglev
    backends:
      - {{ address: 10.91.0.2, weight: 100 }}
"
    )
}

/// The backend's tunnel endpoint.
enum Decap {
    Kernel { device: String },
    Userspace { process: Background, device: String },
}

impl Decap {
    fn start(ns: &Netns, iface: &str) -> Self {
        let kernel = ns.try_exec("ip tunnel add sydecap mode ipip local 10.91.0.2 remote any");
        if kernel.status.success() {
            ns.exec("ip link set sydecap up && sysctl -qw net.ipv4.conf.sydecap.rp_filter=0");
            return Self::Kernel {
                device: "sydecap".into(),
            };
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/decap.py");
        let mut process = Background::spawn(
            Command::new("ip").args(["netns", "exec", &ns.0, "python3", script, iface, "sydecap"]),
        );
        process.wait_for_line(Duration::from_secs(10), |l| l == "ready");
        ns.exec("ip link set sydecap up && sysctl -qw net.ipv4.conf.sydecap.rp_filter=0");
        Self::Userspace {
            process,
            device: "sydecap".into(),
        }
    }

    /// Inner packets handed to the kernel so far.
    fn packets(&self, ns: &Netns) -> u64 {
        let dev = match self {
            Self::Kernel { device } | Self::Userspace { device, .. } => device,
        };
        // A TUN device's rx counter counts what the decapsulator wrote into it; a tunnel
        // device's counts what it decapsulated.
        ns.exec(&format!("cat /sys/class/net/{dev}/statistics/rx_packets"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Decap {
    fn drop(&mut self) {
        if let Self::Userspace { process, .. } = self {
            let _ = process.stop(15, Duration::from_secs(5));
        }
    }
}

#[test]
fn curl_through_the_vip_reaches_an_ipip_backend_that_answers_directly() {
    require_root();
    let dir = scratch("e2e-dsr");
    let srv_mac = "02:5e:00:00:02:02";
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, policy(srv_mac)).unwrap();
    let table = dir.join("table.bin");
    let out = run_with_timeout(
        Command::new(control_bin())
            .arg("compile")
            .arg(&policy_path)
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
    let (tap_c, tap_s) = (unique("sydc"), unique("syds"));
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_tap0, role: uplink }\n  - { device: net_tap1, role: backend }\n\
         flow_table: { ipv4_flows: 65536, ipv6_flows: 1024 }\nmempool: { mbufs: 8191 }\n",
    )
    .unwrap();
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--stats-interval", "0.5", "--config"])
            .arg(&settings)
            .arg("--table")
            .arg(&table)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .arg(format!("--vdev=net_tap0,iface={tap_c}"))
            .arg(format!("--vdev=net_tap1,iface={tap_s}")),
    );
    wait_for_interface(&tap_c, Duration::from_secs(30));
    wait_for_interface(&tap_s, Duration::from_secs(30));
    dp.wait_for_line(Duration::from_secs(30), |l| l.starts_with("run: rx "));

    let cli = Netns::new(&unique("sync"));
    let srv = Netns::new(&unique("syns"));
    sh(&format!("ip link set {tap_c} netns {}", cli.0));
    sh(&format!("ip link set {tap_s} netns {}", srv.0));
    let (veth_c, veth_s) = (unique("syvc"), unique("syvs"));
    sh(&format!(
        "ip link add {veth_c} netns {} type veth peer name {veth_s} netns {}",
        cli.0, srv.0
    ));
    // Client: reaches the VIP through the data plane, hears back over the veth.
    cli.exec(&format!(
        "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 && \
         ip addr add 10.90.0.2/24 dev {tap_c} && ip link set {tap_c} up && \
         ip addr add 10.92.0.1/24 dev {veth_c} && ip link set {veth_c} up && \
         sysctl -qw net.ipv4.conf.{veth_c}.rp_filter=0 && \
         ip route add 10.100.0.10/32 via 10.90.0.1 dev {tap_c}"
    ));
    // Server: receives IPIP on its tap (MAC = the policy's gateway MAC), owns the VIP on lo, and
    // replies straight to the client over the veth.
    srv.exec(&format!(
        "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 && \
         ip link set {tap_s} address {srv_mac} && ip addr add 10.91.0.2/24 dev {tap_s} && ip link set {tap_s} up && \
         ip addr add 10.92.0.2/24 dev {veth_s} && ip link set {veth_s} up && \
         ip addr add 10.100.0.10/32 dev lo && \
         ip route add 10.90.0.0/24 via 10.92.0.1 dev {veth_s}"
    ));
    // Decapsulation: the kernel's ipip device (`ip tunnel`) where the kernel has it; otherwise
    // (this CI VM's kernel is built without CONFIG_NET_IPIP) a userspace decapsulator that feeds
    // the inner packets to the kernel through a TUN device.
    let decap = Decap::start(&srv, &tap_s);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "switchyard dsr ok\n").unwrap();
    let mut http = Background::spawn(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &srv.0,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.100.0.10",
                "--directory",
            ])
            .arg(&www),
    );
    let mut body = String::new();
    for _ in 0..50 {
        let out = cli.try_exec("curl -sS --max-time 3 http://10.100.0.10:8080/index.html");
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(body, "switchyard dsr ok\n");
    let decapsulated = decap.packets(&srv);
    assert!(
        decapsulated >= 3,
        "the server decapsulated the client's packets: {decapsulated}"
    );
    let veth_rx = cli.exec(&format!(
        "cat /sys/class/net/{veth_c}/statistics/rx_packets"
    ));
    assert!(
        veth_rx.trim().parse::<u64>().unwrap() >= 3,
        "replies came back directly over the veth"
    );

    let _ = http.stop(15, Duration::from_secs(5));
    let (status, rest) = dp.stop(2, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let counters = rest.join("\n");
    assert!(
        counters.contains("forwarded_ipip_v4"),
        "data plane counters:\n{counters}"
    );
    let result = rest
        .iter()
        .find(|l| l.starts_with("RESULT mode=pipeline"))
        .expect("RESULT");
    assert!(
        field_u64(&result_fields(result), "tx_pkts") >= 3,
        "{result}"
    );
}
