//! `switchyard-control capture` against the real processes: a control plane and a data plane
//! on `net_pcap` ports (the uplink replays a small capture forever, the backend port writes to
//! /dev/null), so traffic flows through the pipeline the whole time. Each cycle of the input is
//! 8 packets from allowed clients to VIP:443 (forwarded), 2 from a denied client to VIP:443
//! (`drop_acl`) and 2 to VIP:8080 (`drop_no_service`).
//!
//! - a capture of `--vip VIP --port 443 -c 50` opens in `tcpdump -r` and holds exactly 50
//!   packets, every one to VIP:443 (the filter and the count honoured);
//! - a capture of `--drop acl -c 20` holds exactly 20 packets, every one from the denied client;
//! - forwarding goes on during a capture with the same verdicts: the data plane's forwarded and
//!   ACL-drop counters move in the input's 4:1 ratio while a capture runs;
//! - a bad drop reason is refused with the reason; no capture file is left behind;
//! - sampled ACL drops reach the events file with their 5-tuple, bounded in rate.

mod common;
mod fixtures;

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fixtures::frames::tcp4_frame;

const WAIT: Duration = Duration::from_secs(60);
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const DENIED: Ipv4Addr = Ipv4Addr::new(10, 1, 99, 7);

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
services:
  - name: llama
    vip: 203.0.113.10
    ports: [443]
    routes:
      - { pool: llama }
pools:
  llama:
    scheduler: maglev
    backends:
      - { address: 10.10.1.1, name: b1 }
      - { address: 10.10.1.2, name: b2 }
acl:
  - { deny: 10.1.99.0/24 }
";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `switchyard_dataplane_<name>_total` summed over workers, for each name, from one scrape.
fn counters<const N: usize>(api: &str, names: [&str; N]) -> [u64; N] {
    let body = sh(&format!("curl -sf http://{api}/metrics"));
    names.map(|n| counter_in(&body, n))
}

fn counter(api: &str, name: &str) -> u64 {
    counters(api, [name])[0]
}

fn counter_in(body: &str, name: &str) -> u64 {
    let prefix = format!("switchyard_dataplane_{name}_total{{");
    body.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn capture(api: &str, token: &Path, args: &[&str], out: &Path) -> std::process::Output {
    run_with_timeout(
        Command::new(control_bin())
            .arg("capture")
            .args(args)
            .arg("-w")
            .arg(out)
            .args(["--api", api, "--token-file"])
            .arg(token),
        WAIT,
    )
}

/// `tcpdump -nn -r FILE` lines.
fn tcpdump(file: &Path) -> Vec<String> {
    let out = run_with_timeout(Command::new("tcpdump").args(["-nn", "-r"]).arg(file), WAIT);
    assert!(
        out.status.success(),
        "tcpdump -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn capture_takes_what_the_filter_asks_while_forwarding_goes_on() {
    require_root();
    let t_start = Instant::now();
    let dir = scratch("capture");
    let _cleanup = RemoveDir(dir.clone());
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let events = dir.join("events.yaml");
    let jsonl = dir.join("events.jsonl");
    std::fs::write(
        &events,
        format!("sinks:\n  - file: {{ path: {} }}\n", jsonl.display()),
    )
    .unwrap();
    let instance = unique("capture");
    let prefix = unique("sycap");
    let _runtime = RemoveDir(std::path::PathBuf::from(format!("/var/run/dpdk/{prefix}")));
    let api = format!("127.0.0.1:{}", free_port());
    let token = shm.join(format!("switchyard-{instance}.token"));

    let mut frames = Vec::new();
    for i in 0..4u8 {
        let c = Ipv4Addr::new(10, 2, 0, 1 + i);
        frames.push(tcp4_frame(c, 40_000 + u16::from(i), VIP, 443, 0x02, &[]));
        frames.push(tcp4_frame(c, 40_000 + u16::from(i), VIP, 443, 0x10, &[]));
    }
    frames.push(tcp4_frame(DENIED, 41_000, VIP, 443, 0x02, &[]));
    frames.push(tcp4_frame(DENIED, 41_001, VIP, 443, 0x02, &[]));
    frames.push(tcp4_frame(
        Ipv4Addr::new(10, 2, 0, 9),
        42_000,
        VIP,
        8080,
        0x02,
        &[],
    ));
    frames.push(tcp4_frame(
        Ipv4Addr::new(10, 2, 0, 9),
        42_001,
        VIP,
        8080,
        0x02,
        &[],
    ));
    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);

    let mut ctl = start_control(
        &shm,
        &policy,
        &instance,
        &api,
        &[String::from("--events"), events.display().to_string()],
    );
    let settings = pcap_settings(&dir, 4096);
    let mut dp = start_dataplane(
        &shm,
        &instance,
        &settings,
        &prefix,
        &[
            format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", input.display()),
            "--vdev=net_pcap1,tx_pcap=/dev/null".to_string(),
        ],
    );
    let deadline = Instant::now() + WAIT;
    while counter(&api, "drop_acl") == 0 {
        assert!(Instant::now() < deadline, "no traffic counted");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Received packets to VIP:443: exactly the count, all matching the filter.
    let [fwd0, acl0] = counters(&api, ["forwarded_ipip_v4", "drop_acl"]);
    let a = dir.join("a.pcapng");
    let out = capture(
        &api,
        &token,
        &[
            "--vip",
            "203.0.113.10",
            "--port",
            "443",
            "-c",
            "50",
            "--seconds",
            "30",
        ],
        &a,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = tcpdump(&a);
    assert_eq!(lines.len(), 50, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("> 203.0.113.10.443:")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("IP 10.2.0.1.40000 >")),
        "{lines:#?}"
    );
    let [fwd1, acl1] = counters(&api, ["forwarded_ipip_v4", "drop_acl"]);
    // The same verdicts as without a capture: forwarded : ACL drops = 8 : 2 per input cycle.
    let (df, da) = (fwd1 - fwd0, acl1 - acl0);
    assert!(
        df > 1000 && da > 250,
        "forwarding went on: {df} forwarded, {da} ACL drops"
    );
    assert!(
        df * 10 >= da * 39 && df * 10 <= da * 41,
        "forwarded {df} : ACL-dropped {da}, expected 4 : 1"
    );

    // Dropped packets by reason: exactly the count, all from the denied client, named.
    let b = dir.join("b.pcapng");
    let out = capture(&api, &token, &["--drop", "acl", "-c", "20", "-s", "64"], &b);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = tcpdump(&b);
    assert_eq!(lines.len(), 20, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("IP 10.1.99.7.4100")),
        "{lines:#?}"
    );
    let raw = std::fs::read(&b).unwrap();
    assert!(
        raw.windows(8).any(|w| w == b"drop_acl"),
        "each packet names its drop reason"
    );

    // A reason the data plane does not have: refused, with the reason.
    let out = capture(
        &api,
        &token,
        &["--drop", "bogus", "-c", "1"],
        &dir.join("c.pcapng"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a drop counter"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing left in the shm directory by the captures.
    let left: Vec<String> = std::fs::read_dir(&shm)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".capture-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A CLI killed mid-capture leaves its file; the daemon removes it after the deadline.
    let captures = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&shm)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.to_string_lossy().contains(".capture-"))
            .collect()
    };
    let mut killed = Background::spawn(
        Command::new(control_bin())
            .args(["capture", "--seconds", "1", "-c", "1000000", "-w"])
            .arg(dir.join("killed.pcapng"))
            .args(["--api", &api, "--token-file"])
            .arg(&token),
    );
    let deadline = Instant::now() + WAIT;
    while captures().is_empty() {
        assert!(Instant::now() < deadline, "the capture never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killed.stop(libc::SIGKILL, WAIT);
    let left = captures();
    assert_eq!(left.len(), 1, "the killed CLI's file: {left:?}");
    let t_killed = Instant::now();
    while !captures().is_empty() {
        assert!(
            t_killed.elapsed() < Duration::from_secs(15),
            "the daemon did not remove {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "# killed CLI's capture file removed {:.1} s after the kill (deadline 1 s + grace 3 s)",
        t_killed.elapsed().as_secs_f64()
    );

    // Sampled ACL drops as events, with their 5-tuple, at most 10/s per worker (+ burst).
    let deadline = Instant::now() + WAIT;
    let acl_events = loop {
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        let acl: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == "acl_drop")
            .collect();
        if !acl.is_empty() {
            break acl;
        }
        assert!(Instant::now() < deadline, "no acl_drop event in {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let e = &acl_events[0];
    assert_eq!(e["flow"]["src"], "10.1.99.7", "{e}");
    assert_eq!(e["flow"]["dst"], "203.0.113.10", "{e}");
    assert_eq!(e["flow"]["dst_port"], 443, "{e}");
    assert_eq!(e["reason"], "drop_acl", "{e}");
    let (status, _) = dp.stop(libc::SIGINT, WAIT);
    assert!(status.success());
    let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
    let n = text.lines().filter(|l| l.contains("\"acl_drop\"")).count();
    let uptime = t_start.elapsed().as_secs() + 1;
    assert!(
        n as u64 <= 10 * uptime + 10,
        "{n} acl_drop events in at most {uptime} s: not bounded"
    );
    let _ = ctl.stop(libc::SIGTERM, WAIT);
}
