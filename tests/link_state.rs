//! Link-state changes: the data plane (`run`, on a `net_tap` port) watches its links from the
//! main lcore; when the tap's kernel side goes down and up again it logs both, posts
//! `EVENT_LINK_DOWN` / `EVENT_LINK_UP` events that the control plane's `Publisher` receives
//! through the shared-memory ring, and counts the changes in its exit summary.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
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
