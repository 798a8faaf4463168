//! Forward mode on real DPDK virtual devices: pcap in → pcap out byte for byte, counters on
//! net_null, clean shutdown on signals, a tap moved into network namespaces, and clear errors.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn forward(args: &[&str], eal: &[&str]) -> Command {
    let mut c = Command::new(DATAPLANE);
    c.arg("forward").args(args).arg("--").args(eal);
    c
}

#[test]
fn pcap_in_is_pcap_out_byte_for_byte() {
    require_root();
    let dir = scratch("fwd-pcap");
    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    let frames = random_frames(2000, 0x5eed);
    write_pcap(&input, &frames);
    let rx = format!("--vdev=net_pcap0,rx_pcap={}", input.display());
    let tx = format!("--vdev=net_pcap1,tx_pcap={}", output.display());
    let out = run_with_timeout(
        &mut forward(
            &["--duration", "2"],
            &["-l", "0-1", "--in-memory", "--no-pci", &rx, &tx],
        ),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = result_fields(&stdout);
    assert_eq!(field(&r, "mode"), "forward");
    assert_eq!(field_u64(&r, "workers"), 1);
    assert_eq!(field_u64(&r, "rx_pkts"), 2000);
    assert_eq!(field_u64(&r, "tx_pkts"), 2000);
    assert_eq!(field_u64(&r, "dropped"), 0);
    let got = read_pcap(&output);
    assert_eq!(got.len(), frames.len(), "frame count");
    for (i, (a, b)) in frames.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "frame {i} differs");
    }
}

#[test]
fn net_null_counters_move_and_the_run_ends_cleanly() {
    require_root();
    let out = run_with_timeout(
        &mut forward(
            &["--duration", "3", "--stats-interval", "0.5"],
            &[
                "-l",
                "0-1",
                "--in-memory",
                "--no-pci",
                "--vdev=net_null0",
                "--vdev=net_null1",
            ],
        ),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("forward: rx "))
        .collect();
    assert!(
        rate_lines.len() >= 3,
        "expected a rate line every 0.5 s:\n{stdout}"
    );
    let totals: Vec<u64> = rate_lines
        .iter()
        .map(|l| {
            l.split("total rx=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        totals.windows(2).all(|w| w[1] > w[0]),
        "rx totals must keep growing: {totals:?}"
    );
    let r = result_fields(&stdout);
    let rx = field_u64(&r, "rx_pkts");
    assert!(
        rx > 100_000,
        "net_null should give plenty of packets, got {rx}"
    );
    assert_eq!(field_u64(&r, "tx_pkts"), rx);
    assert_eq!(field_u64(&r, "dropped"), 0);
    assert!(field(&r, "mpps").parse::<f64>().unwrap() > 0.0);
    // Both ports appear with their driver and link.
    assert!(stdout.contains("port 0 net_null0 (net_null)"), "{stdout}");
    assert!(stdout.contains("worker 0 on lcore 1"), "{stdout}");
}

#[test]
fn sigterm_stops_cleanly_and_leaves_no_hugepage_files() {
    require_root();
    let prefix = unique("syfwd");
    // EAL keeps its runtime files (config, memseg lists) for secondary processes under
    // /var/run/dpdk/PREFIX and leaves them at exit; a test leaves nothing behind.
    let _runtime = RemoveDir(std::path::PathBuf::from(format!("/var/run/dpdk/{prefix}")));
    let mut dp = Background::spawn(&mut forward(
        &["--stats-interval", "0.5"],
        &[
            "-l",
            "0-1",
            "--file-prefix",
            &prefix,
            "--no-pci",
            "--vdev=net_null0",
            "--vdev=net_null1",
        ],
    ));
    dp.wait_for_line(Duration::from_secs(30), |l| l.starts_with("forward: rx "));
    let hugepage_files = || {
        std::fs::read_dir("/dev/hugepages")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(
        hugepage_files(),
        0,
        "hugepage files are unlinked as soon as they are mapped"
    );
    let (status, rest) = dp.stop(15, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let result = rest
        .iter()
        .find(|l| l.starts_with("RESULT mode=forward"))
        .expect("RESULT after SIGTERM");
    let r = result_fields(result);
    assert!(field_u64(&r, "rx_pkts") > 0);
    assert_eq!(hugepage_files(), 0);
}

#[test]
fn tap_moved_into_namespaces_carries_ping_between_them() {
    require_root();
    let (ifa, ifb) = (unique("syta"), unique("sytb"));
    let mut dp = Background::spawn(&mut forward(
        &["--stats-interval", "0.5"],
        &[
            "-l",
            "0-1",
            "--in-memory",
            "--no-pci",
            &format!("--vdev=net_tap0,iface={ifa}"),
            &format!("--vdev=net_tap1,iface={ifb}"),
        ],
    ));
    wait_for_interface(&ifa, Duration::from_secs(30));
    wait_for_interface(&ifb, Duration::from_secs(30));
    dp.wait_for_line(Duration::from_secs(30), |l| l.starts_with("forward: rx "));
    let a = Netns::new(&unique("syna"));
    let b = Netns::new(&unique("synb"));
    sh(&format!("ip link set {ifa} netns {}", a.0));
    sh(&format!("ip link set {ifb} netns {}", b.0));
    a.exec(&format!(
        "ip addr add 10.99.0.1/24 dev {ifa} && ip link set {ifa} up"
    ));
    b.exec(&format!(
        "ip addr add 10.99.0.2/24 dev {ifb} && ip link set {ifb} up"
    ));
    let ping = a.try_exec("ping -c 3 -i 0.2 -W 2 10.99.0.2");
    let ping_out = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "ping across the data plane failed:\n{ping_out}"
    );
    assert!(ping_out.contains("3 received"), "{ping_out}");
    let (status, rest) = dp.stop(2, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let result = rest
        .iter()
        .find(|l| l.starts_with("RESULT"))
        .expect("RESULT after SIGINT");
    // ARP request + reply and three echo requests + replies at least.
    assert!(
        field_u64(&result_fields(result), "rx_pkts") >= 8,
        "{result}"
    );
}

#[test]
fn a_vdev_that_fails_to_probe_is_a_clear_error() {
    require_root();
    let out = run_with_timeout(
        &mut forward(
            &["--duration", "1"],
            &[
                "-l",
                "0-1",
                "--in-memory",
                "--no-pci",
                "--vdev=net_pcap0,rx_pcap=/nonexistent/x.pcap",
                "--vdev=net_null0",
            ],
        ),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("virtual device(s) net_pcap0 did not come up"),
        "{stderr}"
    );
}

#[test]
fn a_single_lcore_is_refused_with_advice() {
    require_root();
    let out = run_with_timeout(
        &mut forward(
            &["--duration", "1"],
            &["-l", "0", "--in-memory", "--no-pci", "--vdev=net_null0"],
        ),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no worker lcore: give the EAL at least two cores"),
        "{stderr}"
    );
}

#[test]
fn a_broken_settings_file_names_its_line_and_column() {
    let dir = scratch("fwd-settings");
    let path = dir.join("appliance.yaml");
    std::fs::write(&path, "queues:\n  rx_descriptors: 512\n  tx_desc: 4\n").unwrap();
    let out = run_with_timeout(
        &mut forward(
            &["--config", path.to_str().unwrap()],
            &["-l", "0-1", "--in-memory"],
        ),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:3: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("tx_desc"), "{stderr}");
}
