//! Shared helpers for the integration tests: pcap files, running the real binaries, namespaces.
//!
//! The tests start real DPDK processes on virtual devices (each with `--in-memory` or its own
//! `--file-prefix`) and real network namespaces, so they need root, as CI has.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const DATAPLANE: &str = env!("CARGO_BIN_EXE_switchyard-dataplane");

/// The control-plane binary, built beside the data plane by `cargo build --workspace` (ci/test
/// builds the workspace before testing).
pub fn control_bin() -> PathBuf {
    let path = Path::new(DATAPLANE).with_file_name("switchyard-control");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (ci/test does)",
        path.display()
    );
    path
}

/// Fails the test with a clear message when not root: these tests need hugepages, taps and
/// namespaces. CI runs as root.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("1");
    assert_eq!(
        uid, "0",
        "this integration test starts DPDK and network namespaces: run it as root (ci/test does)"
    );
}

/// A fresh scratch directory under the target dir, unique per test.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A short name unique to this test process, for file prefixes, interfaces and namespaces
/// (interface names are limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}{}",
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes a classic little-endian pcap (microsecond timestamps, Ethernet link type).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    switchyard_frames::pcap::write_file(path, frames).unwrap();
}

/// Reads the frames of a little-endian pcap (microsecond or nanosecond timestamps).
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert!(data.len() >= 24, "{} is not a pcap file", path.display());
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "unexpected pcap magic {magic:#x}"
    );
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16;
        assert!(off + caplen <= data.len(), "truncated pcap record");
        frames.push(data[off..off + caplen].to_vec());
        off += caplen;
    }
    frames
}

/// Deterministic pseudo-random frames of varied sizes (xorshift), for byte-exact comparisons.
pub fn random_frames(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..count)
        .map(|_| {
            let len = 60 + (next() % 1455) as usize;
            (0..len).map(|_| (next() & 0xff) as u8).collect()
        })
        .collect()
}

/// Runs a command to completion with a hard timeout; panics with its output if it hangs.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses `RESULT key=value ...` into (key, value) pairs.
pub fn result_fields(stdout: &str) -> Vec<(String, String)> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

pub fn field(fields: &[(String, String)], key: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in RESULT"))
}

pub fn field_u64(fields: &[(String, String)], key: &str) -> u64 {
    field(fields, key).parse().unwrap()
}

/// A background process whose stdout lines are collected; killed on drop.
pub struct Background {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Background {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a stdout line satisfies `pred`; panics after `timeout`.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {timeout:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` and waits for exit; returns the status and the remaining stdout lines.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let pid = i32::try_from(self.child.id()).unwrap();
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?} of signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            rest.push(l);
        }
        self.seen.extend(rest.iter().cloned());
        remove_eal_runtime_dir(pid);
        (status, rest)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(pid) = i32::try_from(self.child.id()) {
            remove_eal_runtime_dir(pid);
        }
    }
}

/// Removes the EAL runtime directory an exited `--in-memory` data plane with process id `pid`
/// had (`/var/run/dpdk/switchyard-<pid>`): one that was killed cannot remove its own.
fn remove_eal_runtime_dir(pid: i32) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/switchyard-{pid}"));
}

/// A network namespace, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Self(name.to_owned())
    }

    /// Runs a shell command inside the namespace, asserting success; returns stdout.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{}'", self.0, cmd))
    }

    /// Runs a command inside the namespace; returns the whole output, success or not.
    pub fn try_exec(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", cmd])
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `cmd` with sh, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until a network interface exists in the root namespace.
pub fn wait_for_interface(name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !Path::new(&format!("/sys/class/net/{name}")).exists() {
        assert!(
            Instant::now() < deadline,
            "interface {name} did not appear within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes appliance settings with a `net_pcap0` uplink and a `net_pcap1` backend port, room for
/// `ipv4_flows` IPv4 flows per worker, and no start-up announcements (captures are compared
/// frame for frame); returns the file.
pub fn pcap_settings(dir: &Path, ipv4_flows: u32) -> PathBuf {
    let settings = dir.join("appliance.yaml");
    std::fs::write(
        &settings,
        format!(
            "ports:\n  - {{ device: net_pcap0, role: uplink }}\n  - {{ device: net_pcap1, role: backend }}\n\
             flow_table: {{ ipv4_flows: {ipv4_flows}, ipv6_flows: 1024 }}\nmempool: {{ mbufs: 16383 }}\n\
             neighbour: {{ announce: false }}\n"
        ),
    )
    .unwrap();
    settings
}

/// Runs the data plane from a table file for `seconds` on one worker with the given vdevs;
/// asserts it exits cleanly and returns its stdout.
pub fn run_table(table: &Path, settings: &Path, seconds: &str, vdevs: &[String]) -> String {
    let out = run_with_timeout(
        Command::new(DATAPLANE)
            .args(["run", "--duration", seconds, "--table"])
            .arg(table)
            .arg("--config")
            .arg(settings)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .args(vdevs),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Removes a directory (and what is in it) on drop.
pub struct RemoveDir(pub PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A control plane on `policy` for `instance`, its API on `api` and its files in `shm` (`extra`:
/// more `run` arguments), returned once it has published generation 1: a data plane started
/// next loads that generation at attach, before its workers see the first packet.
pub fn start_control(
    shm: &Path,
    policy: &Path,
    instance: &str,
    api: &str,
    extra: &[String],
) -> Background {
    let mut ctl = Background::spawn(
        Command::new(control_bin())
            .env("SWITCHYARD_SHM_DIR", shm)
            .args(["run", "--policy"])
            .arg(policy)
            .args(["--instance", instance, "--listen", api])
            .args(["--start-wait", "0s", "--watch-interval-ms", "0"])
            .args(extra),
    );
    let generation = shm.join(format!("switchyard-{instance}.gen-1"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !generation.exists() {
        assert!(Instant::now() < deadline, "no generation published");
        assert!(
            ctl.child.try_wait().unwrap().is_none(),
            "control plane exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl
}

/// A data plane for `instance` on `settings`, EAL lcores 0-1 with its own `prefix` and the
/// given `--vdev=` arguments, returned once it runs generation 1.
pub fn start_dataplane(
    shm: &Path,
    instance: &str,
    settings: &Path,
    prefix: &str,
    vdevs: &[String],
) -> Background {
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--instance", instance, "--config"])
            .arg(settings)
            .env("SWITCHYARD_SHM_DIR", shm)
            .args(["--", "-l", "0-1", "--file-prefix", prefix, "--no-pci"])
            .args(vdevs),
    );
    dp.wait_for_line(Duration::from_secs(60), |l| {
        l.starts_with("table: generation 1")
    });
    dp
}

/// The files and names of one control plane + data plane test: a scratch directory (removed on
/// drop with the EAL runtime directory of `prefix`), its shared-memory directory, the policy
/// written to a file, a unique instance, EAL file prefix and loopback API address.
pub struct Rig {
    pub dir: PathBuf,
    pub shm: PathBuf,
    pub policy: PathBuf,
    pub instance: String,
    pub prefix: String,
    pub api: String,
    _removed: (RemoveDir, RemoveDir),
}

impl Rig {
    pub fn new(tag: &str, policy: &str) -> Self {
        let dir = scratch(tag);
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        let policy_file = dir.join("policy.yaml");
        std::fs::write(&policy_file, policy).unwrap();
        let prefix = unique(&format!("sy{}", &tag[..tag.len().min(4)]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            _removed: (
                RemoveDir(dir.clone()),
                RemoveDir(PathBuf::from(format!("/var/run/dpdk/{prefix}"))),
            ),
            instance: unique(&tag[..tag.len().min(5)]),
            api: format!("127.0.0.1:{port}"),
            dir,
            shm,
            policy: policy_file,
            prefix,
        }
    }
}

/// `GET http://API/PATH` with curl (no proxy); the body.
pub fn http_get(api: &str, path: &str) -> String {
    let out = run_with_timeout(
        Command::new("curl").args(["-sS", "--noproxy", "*", &format!("http://{api}{path}")]),
        Duration::from_secs(60),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `switchyard-control show stats --api API [--json]`'s output; asserts it succeeded.
pub fn show_stats(api: &str, json: bool) -> String {
    let mut cmd = Command::new(control_bin());
    cmd.args(["show", "stats", "--api", api]);
    if json {
        cmd.arg("--json");
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "show stats: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
