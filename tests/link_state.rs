//! Link-state changes: the data plane (`run`, on a `net_tap` port) watches its links from the
//! main lcore; when the tap's kernel side goes down and up again it logs both, posts
//! `EVENT_LINK_DOWN` / `EVENT_LINK_UP` events that the control plane's `Publisher` receives
//! through the shared-memory ring, and counts the changes in its exit summary.
//!
//! The second test runs the real daemon, `switchyard-control run --events FILE`, in front of the
//! data plane: the same two changes become `link_down` and `link_up` lines in its JSON-lines
//! events file (port, data-plane pid and epoch, link changes or speed) and count in
//! `switchyard_events_emitted_total`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use switchyard_control::publish::{DataplaneEvent, Publisher};
use switchyard_table::shm::message::{EVENT_LINK_DOWN, EVENT_LINK_UP};

const WAIT: Duration = Duration::from_secs(30);

/// Polls the publisher until an event of `kind` arrives; returns it.
fn wait_event(
    publisher: &mut Publisher,
    kind: u32,
    seen: &mut Vec<DataplaneEvent>,
) -> DataplaneEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        publisher.poll();
        seen.extend(publisher.take_events());
        if let Some(e) = seen.iter().find(|e| e.kind == kind) {
            return *e;
        }
        assert!(Instant::now() < deadline, "no event {kind}; saw {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn link_down_and_up_are_logged_evented_and_counted() {
    require_root();
    let dir = scratch("link-state");
    let _cleanup = RemoveDir(dir.clone());
    let instance = unique("link");
    let tap = unique("sylnk");
    let mut publisher = Publisher::attach_in(&dir, &instance).unwrap();
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--instance", &instance])
            .env("SWITCHYARD_SHM_DIR", &dir)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .arg(format!("--vdev=net_tap0,iface={tap}")),
    );
    let port = dp.wait_for_line(WAIT, |l| l.starts_with("port 0 net_tap0"));
    assert!(port.ends_with("link up, 10 Gbps, full-duplex"), "{port}");
    dp.wait_for_line(WAIT, |l| l.starts_with("table: none yet"));
    wait_for_interface(&tap, WAIT);

    let mut seen = Vec::new();
    sh(&format!("ip link set {tap} down"));
    let down = wait_event(&mut publisher, EVENT_LINK_DOWN, &mut seen);
    assert_eq!((down.a, down.b), (0, 1), "port 0, first change: {down:?}");
    sh(&format!("ip link set {tap} up"));
    let up = wait_event(&mut publisher, EVENT_LINK_UP, &mut seen);
    assert_eq!((up.a, up.b), (0, 10_000), "port 0 at 10 Gbps: {up:?}");
    assert_eq!(seen.len(), 2, "one event per change: {seen:?}");

    let (status, rest) = dp.stop(2, WAIT);
    assert!(status.success(), "{}", dp.seen.join("\n"));
    let summary = rest
        .iter()
        .find(|l| l.starts_with("port 0 net_tap0: rx"))
        .unwrap_or_else(|| panic!("no port summary: {rest:?}"));
    assert!(summary.ends_with("link_changes 2"), "{summary}");
}

/// One-armed: everything on the `uplink` interface, carried by the tap (port 0).
const POLICY: &str = "\
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
    gateway: { ipv4: 198.51.100.254, mac: 02:00:00:00:00:fe }
encap: ipip
services:
  - name: chat
    vip: 203.0.113.10
    ports: [443]
    protocol: tcp
    routes:
      - { pool: gpus }
pools:
  gpus:
    scheduler: maglev
    backends:
      - { address: 10.10.1.1 }
";

/// The JSON lines of the events file (none yet if it does not exist).
fn event_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The link events of the file once one of `kind` is there.
fn wait_link_event(path: &Path, kind: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let link: Vec<Value> = event_lines(path)
            .into_iter()
            .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("link_")))
            .collect();
        if link.iter().any(|e| e["kind"] == kind) {
            return link;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event within {WAIT:?}; the file has:\n{}",
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_metrics(api: &str) -> String {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn control_plane_exports_link_down_then_link_up_events() {
    require_root();
    let rig = Rig::new("linkev", POLICY);
    let tap = unique("sylkev");
    let jsonl = rig.dir.join("events.jsonl");
    let events = rig.dir.join("events.yaml");
    std::fs::write(
        &events,
        format!("sinks:\n  - file: {{ path: {} }}\n", jsonl.display()),
    )
    .unwrap();
    let settings = rig.dir.join("appliance.yaml");
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_tap0, role: uplink }\n\
         flow_table: { ipv4_flows: 4096, ipv6_flows: 1024 }\nmempool: { mbufs: 8191 }\n\
         neighbour: { announce: false }\n",
    )
    .unwrap();

    let mut ctl = start_control(
        &rig.shm,
        &rig.policy,
        &rig.instance,
        &rig.api,
        &["--events".to_owned(), events.display().to_string()],
    );
    let mut dp = start_dataplane(
        &rig.shm,
        &rig.instance,
        &settings,
        &rig.prefix,
        &[format!("--vdev=net_tap0,iface={tap}")],
    );
    let pid = u64::from(dp.child.id());
    wait_for_interface(&tap, WAIT);

    sh(&format!("ip link set {tap} down"));
    let seen = wait_link_event(&jsonl, "link_down");
    sh(&format!("ip link set {tap} up"));
    let seen_up = wait_link_event(&jsonl, "link_up");
    assert!(seen_up.starts_with(&seen), "the file only grows");
    let kinds: Vec<&str> = seen_up
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["link_down", "link_up"], "{seen_up:?}");

    let (down, up) = (&seen_up[0], &seen_up[1]);
    println!("# {down}\n# {up}");
    assert_eq!(down["severity"], "warning", "{down}");
    assert_eq!(down["message"], "port 0: link down", "{down}");
    assert_eq!(down["port"], 0, "{down}");
    assert_eq!(down["dataplane"]["pid"], pid, "{down}");
    let epoch = down["dataplane"]["epoch"].as_u64().unwrap();
    assert!(epoch >= 1, "{down}");
    assert_eq!(
        down["evidence"]["link_changes"], 1.0,
        "first change: {down}"
    );
    assert!(down["time"].as_str().unwrap().ends_with('Z'), "{down}");

    assert_eq!(up["severity"], "info", "{up}");
    assert_eq!(up["message"], "port 0: link up at 10 Gbps", "{up}");
    assert_eq!(up["port"], 0, "{up}");
    assert_eq!(up["dataplane"]["pid"], pid, "{up}");
    assert_eq!(up["dataplane"]["epoch"], epoch, "{up}");
    assert_eq!(up["evidence"]["speed_mbps"], 10_000.0, "{up}");
    assert!(up["time"].as_str() >= down["time"].as_str(), "{down} {up}");

    let metrics = get_metrics(&rig.api);
    for kind in ["link_down", "link_up"] {
        let line = format!("switchyard_events_emitted_total{{kind=\"{kind}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }

    let (status, rest) = dp.stop(2, WAIT);
    assert!(status.success(), "{}", dp.seen.join("\n"));
    assert!(
        rest.iter()
            .any(|l| l.starts_with("port 0 net_tap0: rx") && l.ends_with("link_changes 2")),
        "{rest:?}"
    );
    let (status, _) = ctl.stop(15, WAIT);
    assert!(status.success(), "{}", ctl.seen.join("\n"));
    assert!(
        !Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "the tap {tap} outlived the data plane"
    );
}
