//! An instance's life on the machine, with the real binaries: the data plane takes the
//! instance (in the directory `--shm-dir` names) before the EAL starts, so a second one fails
//! without touching a device; a clean exit leaves no EAL runtime directory; `switchyard-control
//! remove-instance` refuses while a data plane is attached and removes every file after.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn eal_runtime_dir(prefix: &str) -> std::path::PathBuf {
    Path::new("/var/run/dpdk").join(prefix)
}

#[test]
fn second_dataplane_is_refused_before_eal_and_instance_is_removed_after_exit() {
    require_root();
    let shm = scratch("instance-shm");
    let _cleanup = RemoveDir(shm.clone());
    let instance = unique("inst");
    let first_prefix = unique("syinsta");
    let second_prefix = unique("syinstb");

    let mut first = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--instance", &instance, "--shm-dir"])
            .arg(&shm)
            .args(["--", "-l", "0-1", "--file-prefix", &first_prefix])
            .args(["--no-pci", "--vdev=net_null0,no-rx=1"]),
    );
    first.wait_for_line(WAIT, |l| l.starts_with("table: none yet"));
    assert!(
        shm.join(format!("switchyard-{instance}.ctl")).exists(),
        "--shm-dir must place the segment in {}",
        shm.display()
    );
    assert!(eal_runtime_dir(&first_prefix).is_dir());

    // A second data plane on the same instance: refused by the lock, before the EAL runs.
    let second = run_with_timeout(
        Command::new(DATAPLANE)
            .args(["run", "--instance", &instance, "--shm-dir"])
            .arg(&shm)
            .args(["--", "-l", "0-1", "--file-prefix", &second_prefix])
            .args(["--no-pci", "--vdev=net_null0,no-rx=1"]),
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("another data plane is attached"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("EAL:") && !stdout.contains("port 0"),
        "the EAL must not start before the instance lock is taken:\n{stdout}\n{stderr}"
    );
    assert!(!eal_runtime_dir(&second_prefix).exists());

    // Removing the instance is refused while the data plane holds it.
    let refused = run_with_timeout(
        Command::new(control_bin())
            .args(["remove-instance", &instance, "--shm-dir"])
            .arg(&shm),
        WAIT,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a data plane (pid"), "{stderr}");
    assert!(shm.join(format!("switchyard-{instance}.ctl")).exists());

    let (status, _) = first.stop(15, WAIT); // SIGTERM
    assert!(status.success(), "{}", first.seen.join("\n"));
    assert!(
        !eal_runtime_dir(&first_prefix).exists(),
        "a clean exit must remove {}",
        eal_runtime_dir(&first_prefix).display()
    );

    let removed = run_with_timeout(
        Command::new(control_bin())
            .args(["remove-instance", &instance, "--shm-dir"])
            .arg(&shm),
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&removed.stdout);
    assert!(
        removed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(
        stdout.contains(&format!("switchyard-{instance}.ctl")),
        "{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(&shm).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn log_has_no_colour_and_low_rates_read_in_pps() {
    require_root();
    let out = run_with_timeout(
        Command::new(DATAPLANE)
            .args(["forward", "--duration", "1.2", "--stats-interval", "0.5"])
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .args(["--vdev=net_null0,no-rx=1", "--vdev=net_null1,no-rx=1"]),
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("initialised"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'),
        "no terminal escape codes in a log that is not a terminal:\n{stderr}"
    );
    let rate = stdout
        .lines()
        .find(|l| l.starts_with("forward: rx "))
        .unwrap_or_else(|| panic!("no rate line:\n{stdout}"));
    assert!(
        rate.starts_with("forward: rx 0 pps tx 0 pps dropped 0 pps"),
        "{rate}"
    );
}
