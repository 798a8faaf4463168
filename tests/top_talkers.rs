//! Top talkers through the real processes: a data plane replaying a capture without end
//! (`net_pcap` `infinite_rx`) whose frames come from known source prefixes in known
//! proportions, sampling every packet (`talkers.sample_every: 1`, so Space-Saving counts are
//! exact), and a control plane with a `top_talker` detection. `show stats --json` must list the
//! prefixes in order with their exact shares (to within the part of one replay of the capture a
//! window can cut), an error bound of zero and rates that add up to the total; the text of
//! `show stats` must print the table; the events file must hold one `top_talker` event for the
//! heavy prefix with its evidence; and once the data plane stops, no top talkers are shown.

mod common;
mod fixtures;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::*;
use fixtures::frames::{udp4_frame, udp6_frame};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const POLICY: &str = include_str!("fixtures/two_services.yaml");

#[test]
#[allow(clippy::too_many_lines)] // one scenario, checked at every surface
fn heavy_source_prefixes_are_listed_exactly_and_detected() {
    require_root();
    let rig = Rig::new("talkers", POLICY);
    let Rig {
        dir,
        shm,
        policy,
        instance,
        prefix,
        api,
        ..
    } = &rig;

    // One replay of the capture: 12 frames from 10.2.0.0/24 (several hosts), 6 from
    // 10.3.7.0/24, 2 from 2001:db8:5::/48 and, sampled but no prefix, nothing else.
    let llama = Ipv4Addr::new(203, 0, 113, 10);
    let mut frames = Vec::new();
    for i in 0..12u8 {
        frames.push(udp4_frame(
            Ipv4Addr::new(10, 2, 0, 1 + i % 5),
            40_000 + u16::from(i),
            llama,
            443,
            &[0x11; 18],
        ));
    }
    for i in 0..6u8 {
        frames.push(udp4_frame(
            Ipv4Addr::new(10, 3, 7, 200 + i),
            41_000 + u16::from(i),
            llama,
            443,
            &[0x22; 18],
        ));
    }
    for i in 0..2u16 {
        frames.push(udp6_frame(
            Ipv6Addr::new(0x2001, 0xdb8, 5, 0x77, 0, 0, 0, 1 + i),
            42_000 + i,
            "2001:db8:ffff::10".parse().unwrap(),
            443,
            &[0x33; 18],
        ));
    }
    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);
    let settings = dir.join("appliance.yaml");
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_pcap0, role: uplink }\n  - { device: net_pcap1, role: backend }\n\
         flow_table: { ipv4_flows: 4096, ipv6_flows: 1024 }\nmempool: { mbufs: 16383 }\n\
         neighbour: { announce: false }\n\
         talkers: { sample_every: 1, ipv4_prefix: 24, ipv6_prefix: 48 }\n",
    )
    .unwrap();
    let jsonl = dir.join("events.jsonl");
    let events = dir.join("events.yaml");
    std::fs::write(
        &events,
        format!(
            "sinks:\n  - file: {{ path: {} }}\n\
             detection:\n  interval: 200ms\n  new_flow_spike: {{ enabled: false }}\n\
             \x20 top_talkers: {{ share: 0.5, min_rate: 1000/s, for: 1s }}\n",
            jsonl.display()
        ),
    )
    .unwrap();

    let _ctl = start_control(
        shm,
        policy,
        instance,
        api,
        &["--events".to_owned(), events.display().to_string()],
    );
    let mut dp = start_dataplane(
        shm,
        instance,
        &settings,
        prefix,
        &[
            format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", input.display()),
            // A backend port that receives nothing (net_null would receive zero-filled
            // frames: not IP, so sampled for no prefix, yet part of the total).
            "--vdev=net_pcap1,tx_pcap=/dev/null".to_owned(),
        ],
    );

    // A window with traffic in it (the first ones may predate the replay).
    let deadline = Instant::now() + WAIT;
    let stats: Value = loop {
        let v: Value = serde_json::from_str(&show_stats(api, true)).unwrap();
        if v["talkers"]["top"].as_array().is_some_and(|t| t.len() == 3)
            && v["talkers"]["samples"].as_u64() > Some(20_000)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no top talkers: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let t = &stats["talkers"];
    assert_eq!(
        (&t["sample_every"], &t["ipv4_prefix"], &t["ipv6_prefix"]),
        (&Value::from(1), &Value::from(24), &Value::from(48)),
        "{t:#}"
    );
    let top = t["top"].as_array().unwrap();
    let got: Vec<&str> = top.iter().map(|p| p["prefix"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        ["10.2.0.0/24", "10.3.7.0/24", "2001:db8:5::/48"],
        "{t:#}"
    );
    // A window holds whole replays but for the one it cuts: 20 frames at most off, among
    // more than 20,000 samples.
    let samples = t["samples"].as_f64().unwrap();
    let slack = 20.0 / samples + 1e-9;
    let total = t["packets_per_second"].as_f64().unwrap();
    let mut sum = 0.0;
    for (p, share) in top.iter().zip([0.6, 0.3, 0.1]) {
        let s = p["share"].as_f64().unwrap();
        assert!(
            (s - share).abs() <= slack,
            "{p}: share {s}, expected {share}: {t:#}"
        );
        let (pps, min) = (
            p["packets_per_second"].as_f64().unwrap(),
            p["packets_per_second_min"].as_f64().unwrap(),
        );
        assert_eq!(
            pps, min,
            "every packet sampled, fewer prefixes than entries: no error"
        );
        // 60-byte IPv4 frames (14 + 20 + 8 + 18), 80-byte IPv6 frames.
        let frame = if p["prefix"].as_str().unwrap().contains(':') {
            80.0
        } else {
            60.0
        };
        let bps = p["bits_per_second"].as_f64().unwrap();
        assert!((bps - pps * frame * 8.0).abs() <= 1e-6 * bps, "{p}");
        assert_eq!(p["workers"], 1);
        sum += pps;
    }
    assert!((sum - total).abs() <= 1e-6 * total, "{sum} of {total}");

    // The text view prints the same table.
    let text = show_stats(api, false);
    assert!(
        text.contains("TOP TALKERS (by /24 and /48, 1 in 1 packets sampled"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("10.2.0.0/24"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.trim_end().ends_with('%'), "{line}");

    // Detection: 10.2.0.0/24 holds 60% (≥ 50%) at well over 1000/s for a second: one event.
    let deadline = Instant::now() + WAIT;
    let event: Value = loop {
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["kind"] == "top_talker")
            .collect::<Vec<_>>();
        if let Some(e) = found.first() {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no top_talker event:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(event["severity"], "warning", "{event:#}");
    assert_eq!(event["client"], "10.2.0.0", "{event:#}");
    let evidence = &event["evidence"];
    assert_eq!(evidence["prefix_length"], 24.0);
    assert!(
        (evidence["share"].as_f64().unwrap() - 0.6).abs() < 0.01,
        "{event:#}"
    );
    assert!(evidence["packets_per_second"].as_f64() > Some(1000.0));
    assert!(evidence["held_seconds"].as_f64() >= Some(1.0));
    assert_eq!(evidence["threshold_share"], 0.5);
    // 10.3.7.0/24 (30%) is under the share: never reported.
    std::thread::sleep(Duration::from_millis(1500));
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let talkers: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "top_talker")
        .collect();
    assert_eq!(talkers.len(), 1, "one episode, one event:\n{text}");

    let (status, _) = dp.stop(2, WAIT);
    assert!(status.success());
    // Rates of a data plane that is gone are not shown as current.
    let deadline = Instant::now() + WAIT;
    loop {
        let v: Value = serde_json::from_str(&show_stats(api, true)).unwrap();
        if v["talkers"]["top"].as_array().is_some_and(Vec::is_empty) {
            assert_eq!(v["dataplane_up"], false, "{v:#}");
            break;
        }
        assert!(Instant::now() < deadline, "stale top talkers: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
