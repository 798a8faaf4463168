//! The control plane against a real data plane when the instance's files go wrong (issue 12):
//! a damaged segment a data plane still runs on, and a segment removed under a running data
//! plane, are refused with how to recover, instead of a second, disconnected instance.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use switchyard_control::daemon::auth::default_token_path;
use switchyard_control::daemon::client::ApiClient;
use switchyard_control::daemon::view::{PublishStatus, StateView};

const WAIT: Duration = Duration::from_secs(60);

const POLICY: &str = "\
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
services:
  - name: echo
    vip: 203.0.113.10
    ports: [80]
    routes:
      - { pool: echo }
pools:
  echo:
    backends:
      - { address: 192.0.2.10 }
";

/// `switchyard-control run` until it exits (a start that is refused) or `timeout`.
fn control_start(shm: &Path, policy: &Path, instance: &str) -> Output {
    run_with_timeout(
        Command::new(control_bin())
            .env("SWITCHYARD_SHM_DIR", shm)
            .args(["run", "--policy"])
            .arg(policy)
            .args(["--instance", instance, "--listen", "127.0.0.1:0"]),
        WAIT,
    )
}

/// Issue 12, item 16.
#[test]
fn a_damaged_or_removed_segment_under_a_running_data_plane_is_refused() {
    require_root();
    let dir = scratch("robust-split");
    let _cleanup = RemoveDir(dir.clone());
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let instance = unique("split");
    let prefix = unique("sysplit");
    let segment = shm.join(format!("switchyard-{instance}.ctl"));

    let mut dataplane = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--instance", &instance, "--shm-dir"])
            .arg(&shm)
            .args(["--", "-l", "0-1", "--file-prefix", &prefix])
            .args(["--no-pci", "--vdev=net_null0,no-rx=1"]),
    );
    dataplane.wait_for_line(WAIT, |l| l.starts_with("table: none yet"));
    let pid = dataplane.child.id();

    // A flipped magic: refused, naming the data plane still on it and how to recover.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[0] ^= 0xff;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        f.write_all_at(&bytes[..8], 0).unwrap();
    }
    let out = control_start(&shm, &policy, &instance);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a Switchyard control segment"),
        "{stderr}"
    );
    assert!(
        stderr.contains("but a data plane is still attached to it")
            && stderr.contains(&format!("pid {pid} ("))
            && stderr.contains("do not remove the file")
            && stderr.contains("To recover: stop the processes on it"),
        "{stderr}"
    );

    // The segment removed: no new segment while the old data plane runs on the removed one.
    std::fs::remove_file(&segment).unwrap();
    let out = control_start(&shm, &policy, &instance);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} was removed, but pid {pid} (switchyard-dat",
            segment.display()
        )) && stderr.contains("a data plane,")
            && stderr.contains("still runs on the removed segment")
            && stderr.contains(&format!("To recover: stop pid {pid}")),
        "{stderr}"
    );
    assert!(!segment.exists(), "no second segment may be created");

    // Once the data plane is stopped, the instance starts afresh.
    let (status, _) = dataplane.stop(15, WAIT);
    assert!(status.success(), "{}", dataplane.seen.join("\n"));
    let mut control = Background::spawn(
        Command::new(control_bin())
            .env("SWITCHYARD_SHM_DIR", &shm)
            .env("RUST_LOG", "info")
            .args(["run", "--policy"])
            .arg(&policy)
            .args(["--instance", &instance, "--listen", "127.0.0.1:0"])
            .args(["--start-wait", "0s"]),
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !segment.exists() {
        assert!(std::time::Instant::now() < deadline, "no segment created");
        assert!(
            control.child.try_wait().unwrap().is_none(),
            "the control plane exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _) = control.stop(15, WAIT);
    assert!(status.success());
}

/// A control plane and a data plane (net_null ports) on a scratch instance, with the API.
struct Pair {
    shm: PathBuf,
    policy: PathBuf,
    settings: PathBuf,
    instance: String,
    listen: String,
    api: ApiClient,
    _cleanup: RemoveDir,
}

const TWO_BACKENDS: &str = "\
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
  - name: backend
    mac: 02:00:00:00:00:02
    addresses: [10.91.0.1/24]
    gateway: { ipv4: 10.91.0.254, mac: 02:00:00:00:00:fe }
services:
  - name: echo
    vip: 203.0.113.10
    ports: [80]
    routes:
      - { pool: echo }
pools:
  echo:
    backends:
      - { address: 10.91.0.2 }
      - { address: 10.91.0.3 }
";

impl Pair {
    fn new(name: &str) -> Self {
        let dir = scratch(name);
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, TWO_BACKENDS).unwrap();
        let settings = dir.join("appliance.yaml");
        std::fs::write(
            &settings,
            "ports:\n  - { device: net_null0, role: uplink }\n  - { device: net_null1, role: backend }\n\
             flow_table: { ipv4_flows: 4096, ipv6_flows: 1024 }\nmempool: { mbufs: 8191 }\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let instance = unique(name.get(..6).unwrap_or(name));
        Self {
            api: ApiClient::new(&listen, Duration::from_secs(5))
                .with_token_file(&default_token_path(&shm, &instance)),
            _cleanup: RemoveDir(dir),
            shm,
            policy,
            settings,
            instance,
            listen,
        }
    }

    fn control(&self) -> Background {
        let control = Background::spawn(
            Command::new(control_bin())
                .env("SWITCHYARD_SHM_DIR", &self.shm)
                .env("RUST_LOG", "info")
                .args(["run", "--policy"])
                .arg(&self.policy)
                .args(["--instance", &self.instance, "--listen", &self.listen])
                .args(["--start-wait", "0s"]),
        );
        self.wait("the API answers", &|_| true);
        control
    }

    fn dataplane(&self) -> Background {
        let mut dp = Background::spawn(
            Command::new(DATAPLANE)
                .env("SWITCHYARD_SHM_DIR", &self.shm)
                .args(["run", "--instance", &self.instance, "--config"])
                .arg(&self.settings)
                .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
                .args(["--vdev=net_null0,no-rx=1", "--vdev=net_null1,no-rx=1"]),
        );
        dp.wait_for_line(WAIT, |l| l.starts_with("table: "));
        dp
    }

    fn wait(&self, what: &str, done: &dyn Fn(&StateView) -> bool) -> StateView {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let state = self.api.state();
            if let Ok(s) = &state {
                if done(s) {
                    return s.clone();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not within {WAIT:?}: {what}; last: {state:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The current generation is live on every worker, and the control plane has seen it go live.
fn live(s: &StateView) -> bool {
    s.dataplane.running
        && s.generation.status == PublishStatus::Live
        && !s.dataplane.workers.is_empty()
        && s.dataplane
            .workers
            .iter()
            .all(|w| w.live_generation == s.generation.current)
        && s.generation.last_publish_to_live_ms.is_some()
}

/// Issue 12, item 12: after its own restart the data plane refuses a generation it ran before
/// (its file was corrupted: `bad_checksum`). The control plane shows the refusal and publishes
/// the same tables again as a new generation, which goes live.
#[test]
fn a_generation_refused_after_a_data_plane_restart_is_shown_and_published_again() {
    require_root();
    let pair = Pair::new("robust-refresh");
    let mut control = pair.control();
    let dp = pair.dataplane();
    let state = pair.wait("generation 1 live", &|s| {
        live(s) && s.generation.current == 1
    });
    assert_eq!(state.counters.rejects, 0);

    // Corrupt the live generation's file (a byte of its checksummed body), restart the data plane.
    let file = pair.shm.join(format!("switchyard-{}.gen-1", pair.instance));
    let mut blob = std::fs::read(&file).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 0x5a;
    std::fs::write(&file, &blob).unwrap();
    let mut dp = dp;
    let (status, _) = dp.stop(15, WAIT);
    assert!(status.success());
    let mut dp = pair.dataplane();

    // The refusal is shown, and the same tables go live again as generation 2.
    let state = pair.wait("republished and live", &|s| {
        live(s) && s.generation.current == 2 && s.counters.rejects == 1
    });
    let rejected = state
        .generation
        .last_rejected
        .expect("the refusal is shown");
    assert_eq!(
        (rejected.generation, rejected.reason.as_str()),
        (1, "bad_checksum")
    );
    assert_eq!(state.counters.dataplane_restarts, 1);
    let metrics = pair.api.metrics().unwrap();
    assert!(
        metrics.contains("switchyard_control_rejects_total 1"),
        "{metrics}"
    );

    // A SIGHUP finds nothing to change, and nothing is pending.
    let _ = Command::new("kill")
        .args(["-HUP", &control.child.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    let state = pair.wait("still live", &live);
    assert_eq!(state.generation.current, 2);

    let (status, _) = dp.stop(15, WAIT);
    assert!(status.success());
    let (status, _) = control.stop(15, WAIT);
    assert!(status.success());
}

/// Issue 12, item 13: a hostile writer moves the control→data ring's head far ahead; the data
/// plane resynchronises. Later applies go through (no `503 ... installs are queued`) without a
/// control-plane restart.
#[test]
fn applies_go_through_after_the_ring_head_was_forged() {
    use std::os::unix::fs::FileExt;
    use switchyard_table::shm::layout::offsets;

    require_root();
    let pair = Pair::new("robust-ring");
    let mut control = pair.control();
    let mut dp = pair.dataplane();
    pair.wait("generation 1 live", &|s| {
        live(s) && s.generation.current == 1
    });

    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pair.shm.join(format!("switchyard-{}.ctl", pair.instance)))
        .unwrap();
    let head = (offsets::CONTROL_TO_DATA + offsets::RING_HEAD) as u64;
    segment
        .write_all_at(&(1u64 << 40).to_le_bytes(), head)
        .unwrap();
    // The data plane polls the ring about every millisecond and resynchronises.
    let tail = (offsets::CONTROL_TO_DATA + offsets::RING_TAIL) as u64;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut b = [0u8; 8];
        segment.read_exact_at(&mut b, tail).unwrap();
        if u64::from_le_bytes(b) == 1 << 40 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the data plane did not resynchronise"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    for (i, weight) in [50, 60, 70].into_iter().enumerate() {
        let text = TWO_BACKENDS.replace(
            "{ address: 10.91.0.3 }",
            &format!("{{ address: 10.91.0.3, weight: {weight} }}"),
        );
        let done = pair
            .api
            .apply(&text, "changed.yaml", false, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("apply {i} after the forged head: {e}"));
        assert_eq!(done.status, PublishStatus::Live, "{done:?}");
        assert_eq!(done.generation, 2 + i as u64);
    }
    let state = pair.wait("live", &live);
    assert_eq!(state.generation.current, 4);

    let (status, _) = dp.stop(15, WAIT);
    assert!(status.success());
    let (status, _) = control.stop(15, WAIT);
    assert!(status.success());
}
