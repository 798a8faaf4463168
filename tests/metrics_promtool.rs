//! The Prometheus page passes the real `promtool check metrics` with a data plane attached and
//! counting (its per-worker, per-counter series present), not only the control plane's own
//! series. promtool is Debian's `prometheus` package, which ci/setup installs: without it this
//! test fails.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn metrics(api: &str) -> String {
    http_get(api, "/metrics")
}

#[test]
fn the_metrics_page_with_a_data_plane_attached_passes_promtool() {
    require_root();
    let dir = scratch("promtool");
    let _cleanup = RemoveDir(dir.clone());
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let policy = dir.join("policy.yaml");
    // The shipped minimal policy (one service, one backend, a gateway).
    let minimal = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/minimal.yaml");
    std::fs::copy(minimal, &policy).unwrap();
    let instance = unique("prom");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let mut ctl = Background::spawn(
        Command::new(control_bin())
            .env("SWITCHYARD_SHM_DIR", &shm)
            .args(["run", "--policy"])
            .arg(&policy)
            .args([
                "--instance",
                &instance,
                "--listen",
                &api,
                "--start-wait",
                "0s",
            ]),
    );
    let prefix = unique("syprom");
    // EAL's runtime directory goes even when the test fails before the data plane exits.
    let _runtime = RemoveDir(std::path::PathBuf::from(format!("/var/run/dpdk/{prefix}")));
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .env("SWITCHYARD_SHM_DIR", &shm)
            .args(["run", "--instance", &instance])
            .args(["--", "-l", "0-1", "--file-prefix", &prefix, "--no-pci"])
            .arg("--vdev=net_null0"),
    );
    dp.wait_for_line(WAIT, |l| l.starts_with("table: "));
    // net_null's zero frames are counted (drop_not_our_mac): wait until the page shows them.
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let body = metrics(&api);
        let counting = body.lines().any(|l| {
            l.starts_with("switchyard_dataplane_drop_not_our_mac_total{")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0)
        });
        if body.contains("switchyard_dataplane_up 1") && counting {
            break body;
        }
        assert!(Instant::now() < deadline, "no data-plane counters:\n{body}");
        assert!(
            ctl.child.try_wait().unwrap().is_none(),
            "control plane exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let series = body
        .lines()
        .filter(|l| l.starts_with("switchyard_dataplane_") && l.contains("_total{worker="))
        .count();
    assert!(series >= 50, "{series} per-worker counter series:\n{body}");
    // Traffic per service, pool and backend (the policy's, counted or not), drops by reason
    // (net_null's zero frames are not for our MAC), ports and worker cycles: the telemetry
    // families, checked by promtool with the rest.
    for series in [
        "switchyard_service_packets_total{service=\"echo\"} ",
        "switchyard_service_bytes_total{service=\"echo\"} ",
        "switchyard_service_new_flows_total{service=\"echo\"} ",
        "switchyard_service_active_flows{service=\"echo\"} ",
        "switchyard_pool_active_flows{pool=",
        "switchyard_backend_packets_total{pool=",
        "switchyard_backend_bytes_total{pool=",
        "switchyard_backend_new_flows_total{pool=",
        "switchyard_backend_active_flows{pool=",
        "switchyard_backend_up{pool=",
        "switchyard_backend_effective_weight{pool=",
        "switchyard_dataplane_dropped_packets_total{reason=\"not_our_mac\"} ",
        "switchyard_port_received_packets_total{port=\"0\"} ",
        "switchyard_dataplane_worker_busy_seconds_total{worker=\"0\"} ",
        "switchyard_dataplane_worker_swaps_total{worker=\"0\"} ",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(series)),
            "no {series}... series:\n{body}"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("switchyard_backend_packets_total{")
                && l.contains("address=\"192.0.2.10\"")),
        "the minimal policy's backend has no series:\n{body}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus, installed by ci/setup)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check metrics: clean over {series} per-worker counter series");
    let (status, _) = dp.stop(2, WAIT);
    assert!(status.success());
    let (status, _) = ctl.stop(15, WAIT);
    assert!(status.success());
}
