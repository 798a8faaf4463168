//! The control plane against a real data plane when the instance's files go wrong (issue 12):
//! a damaged segment a data plane still runs on, and a segment removed under a running data
//! plane, are refused with how to recover, instead of a second, disconnected instance.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

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
