//! `switchyard-dataplane check` on the machine the tests run on: it reads the real /proc and
//! /sys, covers every area, agrees with what sysfs says about NICs, and exits non-zero exactly
//! when it reports a blocking problem — a PCI port that does not exist, a mempool larger than
//! the free hugepages.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn check(config: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(DATAPLANE);
    cmd.arg("check");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let blocking: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT check "))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("blocking="))
        })
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"))
        .parse()
        .unwrap();
    assert_eq!(
        out.status.success(),
        blocking == 0,
        "exit status follows the blocking count:\n{stdout}\n{stderr}"
    );
    if blocking > 0 {
        assert!(stderr.contains("blocking problem(s)"), "{stderr}");
    }
    (out.status.success(), stdout)
}

/// Network controllers bound to a driver DPDK can use, read straight from sysfs.
fn dpdk_nics() -> usize {
    let Ok(dir) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|d| {
            std::fs::read_to_string(d.path().join("class")).is_ok_and(|c| c.starts_with("0x02"))
        })
        .filter(|d| {
            std::fs::read_link(d.path().join("driver")).is_ok_and(|l| {
                let name = l.file_name().unwrap().to_string_lossy().into_owned();
                matches!(
                    name.as_str(),
                    "vfio-pci" | "uio_pci_generic" | "igb_uio" | "mlx4_core" | "mlx5_core"
                )
            })
        })
        .count()
}

#[test]
fn check_reads_this_machine() {
    let (_, out) = check(None);
    for area in [
        "cpu",
        "numa",
        "hugepages",
        "memory",
        "iommu",
        "drivers",
        "nics",
        "ports",
    ] {
        assert!(
            out.lines().any(|l| l
                .get(5..)
                .is_some_and(|rest| rest.starts_with(&format!("{area:<10} ")))),
            "no `{area}` finding:\n{out}"
        );
    }
    let said_none = out.contains("no DPDK-capable NIC") || out.contains("no PCI network device");
    assert_eq!(
        said_none,
        dpdk_nics() == 0,
        "what check says about DPDK NICs matches sysfs:\n{out}"
    );
    // Every 2 MiB / 1 GiB pool the kernel has is reported with its numbers.
    for size in std::fs::read_dir("/sys/kernel/mm/hugepages").unwrap() {
        let size = size.unwrap().path();
        let total = std::fs::read_to_string(size.join("nr_hugepages")).unwrap();
        let free = std::fs::read_to_string(size.join("free_hugepages")).unwrap();
        let want = format!("{} reserved, {} free", total.trim(), free.trim());
        assert!(
            out.lines()
                .any(|l| l.contains("hugepages") && l.contains(&want)),
            "{want}:\n{out}"
        );
    }
}

#[test]
fn a_missing_pci_port_and_an_oversized_mempool_block() {
    let dir = scratch("check");
    let _cleanup = RemoveDir(dir.clone());
    // A PCI domain no machine has.
    let settings = dir.join("missing.yaml");
    std::fs::write(
        &settings,
        "ports:\n  - { device: net_tap0, role: uplink }\n  - { device: fffe:ff:1f.7, role: backend }\n",
    )
    .unwrap();
    let (ok, out) = check(Some(&settings));
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL ports      fffe:ff:1f.7 (backend): no such PCI device on this machine"),
        "{out}"
    );
    assert!(out.contains("ok   ports      net_tap0 (uplink)"), "{out}");

    // 200 M buffers of 2176 bytes: about 450 GiB of hugepages.
    let huge = dir.join("huge.yaml");
    std::fs::write(&huge, "mempool: { mbufs: 200000000 }\n").unwrap();
    let (ok, out) = check(Some(&huge));
    assert!(!ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL hugepages") && l.contains("200000000 mbufs")),
        "{out}"
    );
    assert!(
        out.contains("fix: now: echo ") && out.contains("nr_hugepages"),
        "{out}"
    );
}
