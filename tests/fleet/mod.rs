//! A live fleet for the intelligent-routing tests: model servers in a network namespace, the
//! real control plane watching them, and the real data plane on DPDK vdevs.
//!
//! ```text
//!  root ns: switchyard-control ──veth──► ns: model_server.py on 10.S.0.11, .12, … :8000
//!           (probes, scrapes, API)          (health, /metrics, admin knobs)
//!           switchyard-dataplane: net_tap uplink (tcpreplay SYNs in) → net_pcap backend port (out)
//! ```
//!
//! The control plane probes and scrapes the servers from the root namespace over the veth; the
//! data plane shares its segment and forwards replayed client frames, encapsulated, into a
//! capture, so a test counts which backend each new flow went to.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use switchyard_control::daemon::auth::default_token_path;
use switchyard_control::daemon::client::ApiClient;
use switchyard_control::daemon::view::{BackendView, StateView};

use super::common::*;
use super::frames::{frame, ipv4, tcp, Pseudo, L2, V4};

pub const MODEL: &str = "llama-70b";
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/model_server.py");

/// Model servers in their own namespace, `10.{subnet}.0.{11 + i}:8000`.
pub struct Servers {
    pub ns: Netns,
    pub subnet: u8,
    procs: Vec<Option<Background>>,
}

impl Servers {
    /// `count` servers on subnet `10.{subnet}.0.0/24`, all started.
    pub fn start(count: usize, subnet: u8) -> Self {
        let ns = Netns::new(&unique("syfl"));
        let root = unique("syfa");
        let inner = unique("syfb");
        sh(&format!(
            "ip link add {root} type veth peer name {inner} && ip link set {inner} netns {} && \
             ip addr add 10.{subnet}.0.1/24 dev {root} && ip link set {root} up",
            ns.0
        ));
        let mut addrs = String::new();
        for i in 0..count {
            addrs.push_str(&format!(
                " && ip addr add 10.{subnet}.0.{}/24 dev {inner}",
                11 + i
            ));
        }
        ns.exec(&format!("ip link set {inner} up{addrs}"));
        let mut servers = Self {
            ns,
            subnet,
            procs: (0..count).map(|_| None).collect(),
        };
        for i in 0..count {
            servers.spawn(i);
        }
        servers
    }

    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, u8::try_from(11 + i).unwrap())
    }

    pub fn count(&self) -> usize {
        self.procs.len()
    }

    /// (Re)starts server `i`.
    pub fn spawn(&mut self, i: usize) {
        let addr = self.addr(i);
        let mut p = Background::spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.ns.0, "python3", SERVER, "--listen"])
                .arg(format!("{addr}:8000"))
                .args(["--model", MODEL, "--name", &format!("b{i}")]),
        );
        p.wait_for_line(Duration::from_secs(10), |l| l == "ready");
        self.procs[i] = Some(p);
    }

    /// SIGKILL: the server dies without closing anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            let _ = p.stop(9, Duration::from_secs(5));
        }
    }

    /// POST `/admin/{what}` with a JSON body.
    pub fn admin(&self, i: usize, what: &str, json: &str) {
        let url = format!("http://{}:8000/admin/{what}", self.addr(i));
        let out = Command::new("curl")
            .args([
                "-sS",
                "-m",
                "3",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .args(["-d", json, &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn mode(&self, i: usize, mode: &str) {
        self.admin(i, "mode", &format!("{{\"mode\": \"{mode}\"}}"));
    }

    pub fn waiting(&self, i: usize, n: f64) {
        self.admin(
            i,
            "metrics",
            &format!("{{\"vllm:num_requests_waiting\": {n}}}"),
        );
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The control-plane daemon on a scratch segment directory, with its API on a free port.
pub struct Control {
    pub proc: Background,
    pub api: ApiClient,
    pub listen: String,
    pub shm: PathBuf,
    pub instance: String,
    pub policy: PathBuf,
    pub dir: PathBuf,
    /// More arguments for `switchyard-control run` (kept for a restart).
    pub extra: Vec<String>,
    _shm_cleanup: RemoveDir,
    _dir_cleanup: RemoveDir,
}

impl Control {
    pub fn start(name: &str, policy: &str) -> Self {
        Self::start_with(name, policy, &[])
    }

    /// `start` with more arguments for `run` (`--events FILE`).
    pub fn start_with(name: &str, policy: &str, extra: &[String]) -> Self {
        let dir = scratch(name);
        let shm = PathBuf::from(format!("/dev/shm/{}", unique("syfls")));
        std::fs::create_dir_all(&shm).unwrap();
        let instance = unique("fl");
        let file = dir.join("policy.yaml");
        std::fs::write(&file, policy).unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let proc = Self::spawn(&shm, &file, &instance, &listen, extra);
        let api = ApiClient::new(&listen, Duration::from_secs(5))
            .with_token_file(&default_token_path(&shm, &instance));
        let mut control = Self {
            proc,
            api,
            listen,
            shm: shm.clone(),
            instance,
            policy: file,
            dir: dir.clone(),
            extra: extra.to_vec(),
            _shm_cleanup: RemoveDir(shm),
            _dir_cleanup: RemoveDir(dir),
        };
        control.wait("the API answers", Duration::from_secs(20), |_| true);
        control
    }

    fn spawn(
        shm: &Path,
        policy: &Path,
        instance: &str,
        listen: &str,
        extra: &[String],
    ) -> Background {
        Background::spawn(
            Command::new(control_bin())
                .env("SWITCHYARD_SHM_DIR", shm)
                .env("RUST_LOG", "info")
                .args(["run", "--policy"])
                .arg(policy)
                .args([
                    "--instance",
                    instance,
                    "--listen",
                    listen,
                    "--start-wait",
                    "0s",
                ])
                .args(extra),
        )
    }

    /// Stops the daemon (SIGTERM) and starts it again on the same segment, policy and port.
    pub fn restart(&mut self) {
        let (status, _) = self.proc.stop(15, Duration::from_secs(10));
        assert!(status.success(), "the control plane exited with {status}");
        self.proc = Self::spawn(
            &self.shm,
            &self.policy,
            &self.instance,
            &self.listen,
            &self.extra,
        );
        self.wait("the API answers again", Duration::from_secs(20), |_| true);
    }

    /// `switchyard-control ARGS --api ADDR --instance I --shm-dir DIR` (so it finds the
    /// daemon's token file): stdout, asserting success.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(control_bin())
            .args(args)
            .args([
                "--api",
                &self.listen,
                "--instance",
                &self.instance,
                "--shm-dir",
            ])
            .arg(&self.shm)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "switchyard-control {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn state(&self) -> Option<StateView> {
        self.api.state().ok()
    }

    /// Polls the state every 10 ms until `done` holds; panics with the last state after `timeout`.
    pub fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&StateView) -> bool,
    ) -> StateView {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.state() {
                if done(&s) {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                self.proc.child.try_wait().unwrap().is_none(),
                "the control plane exited while waiting for: {what}"
            );
            assert!(
                Instant::now() < deadline,
                "not within {timeout:?}: {what}; last state: {last:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The backend with this address in pool `pool`.
pub fn backend<'a>(s: &'a StateView, pool: &str, addr: Ipv4Addr) -> &'a BackendView {
    let address = addr.to_string();
    s.pools
        .iter()
        .find(|p| p.name == pool)
        .and_then(|p| p.backends.iter().find(|b| b.address == address))
        .unwrap_or_else(|| panic!("no backend {addr} in pool {pool}"))
}

/// The current generation is live on the data plane and on every worker.
pub fn live_everywhere(s: &StateView) -> bool {
    let current = s.generation.current;
    s.dataplane.running
        && s.generation.live >= current
        && !s.dataplane.workers.is_empty()
        && s.dataplane
            .workers
            .iter()
            .all(|w| w.live_generation >= current)
}

/// The data plane attached to a control plane's instance: net_tap uplink, net_pcap backend
/// port writing every encapsulated frame to a capture on tmpfs.
pub struct Dataplane {
    pub proc: Background,
    pub tap: String,
    pub out: PathBuf,
    _out_cleanup: RemoveFile,
}

pub struct RemoveFile(pub PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Dataplane {
    pub fn start(control: &Control) -> Self {
        Self::start_with(control, "{ ipv4_flows: 65536, ipv6_flows: 1024 }")
    }

    /// `start` with the appliance settings' `flow_table` mapping given.
    pub fn start_with(control: &Control, flow_table: &str) -> Self {
        let settings = control.dir.join("appliance.yaml");
        std::fs::write(
            &settings,
            format!(
                "ports:\n  - {{ device: net_tap0, role: uplink }}\n  - {{ device: net_pcap0, role: backend }}\n\
                 flow_table: {flow_table}\nmempool: {{ mbufs: 16383 }}\n"
            ),
        )
        .unwrap();
        let tap = unique("syft");
        let out = PathBuf::from(format!("/dev/shm/{}-out.pcap", unique("syflo")));
        let mut proc = Background::spawn(
            Command::new(DATAPLANE)
                .env("SWITCHYARD_SHM_DIR", &control.shm)
                .args([
                    "run",
                    "--stats-interval",
                    "1",
                    "--instance",
                    &control.instance,
                ])
                .arg("--config")
                .arg(&settings)
                .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
                .arg(format!("--vdev=net_tap0,iface={tap}"))
                .arg(format!("--vdev=net_pcap0,tx_pcap={}", out.display())),
        );
        wait_for_interface(&tap, Duration::from_secs(30));
        sh(&format!(
            // A deep kernel queue on the tap: on a busy machine the data plane's lcore is not
            // always running when tcpreplay writes, and 1000 frames (the default) overflow.
            "sysctl -qw net.ipv6.conf.{tap}.disable_ipv6=1 && ip link set {tap} txqueuelen 20000 up"
        ));
        proc.wait_for_line(Duration::from_secs(30), |l| {
            l.starts_with("table: generation")
        });
        Self {
            proc,
            tap,
            _out_cleanup: RemoveFile(out.clone()),
            out,
        }
    }

    /// Replays `frames` into the uplink at a gentle rate and waits for them to be forwarded.
    pub fn replay(&self, dir: &Path, name: &str, frames: &[Vec<u8>]) {
        self.replay_at(dir, name, frames, 20_000);
    }

    /// `replay` at `pps` frames per second.
    pub fn replay_at(&self, dir: &Path, name: &str, frames: &[Vec<u8>], pps: u32) {
        let file = dir.join(format!("{name}.pcap"));
        write_pcap(&file, frames);
        let out = run_with_timeout(
            Command::new("tcpreplay")
                .args(["-q", "--pps", &pps.to_string(), "-i", &self.tap])
                .arg(&file),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "tcpreplay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Until the capture stops growing (the data plane has drained the tap), at most 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = std::fs::metadata(&self.out).map_or(0, |m| m.len());
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = std::fs::metadata(&self.out).map_or(0, |m| m.len());
            if now == last || std::time::Instant::now() > deadline {
                break;
            }
            last = now;
        }
    }

    /// Every encapsulated frame forwarded so far, as (client source, source port) → backend.
    pub fn forwarded(&self) -> Vec<((Ipv4Addr, u16), Ipv4Addr)> {
        // libpcap writes the file header with the first frame: no frame yet, no header.
        if std::fs::metadata(&self.out).map_or(0, |m| m.len()) < 24 {
            return Vec::new();
        }
        read_pcap(&self.out)
            .iter()
            .filter_map(|f| flow_and_backend(f))
            .collect()
    }
}

/// A client frame to the VIP on port 443.
pub fn client_frame(src: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    let seg = tcp(
        Pseudo::V4(src, VIP),
        sport,
        443,
        flags,
        b"inference request",
    );
    frame(&L2::inbound(), 0x0800, &ipv4(&V4::new(src, VIP, 6), &seg))
}

/// Client `i` of a /16 (`{a}.{b}.x.y`).
pub fn client(prefix: [u8; 2], i: u32) -> Ipv4Addr {
    let [_, _, x, y] = i.to_be_bytes();
    Ipv4Addr::new(prefix[0], prefix[1], x, y)
}

/// The inner (client, source port) and the outer destination (backend) of an IPIP frame.
fn flow_and_backend(f: &[u8]) -> Option<((Ipv4Addr, u16), Ipv4Addr)> {
    let outer = f.get(14..)?;
    if f.get(12..14)? != [0x08, 0x00] || outer.first()? >> 4 != 4 || *outer.get(9)? != 4 {
        return None;
    }
    let backend = Ipv4Addr::new(outer[16], outer[17], outer[18], outer[19]);
    let inner = outer.get(usize::from(outer[0] & 0xf) * 4..)?;
    let src = Ipv4Addr::new(*inner.get(12)?, inner[13], inner[14], inner[15]);
    let ihl = usize::from(inner[0] & 0xf) * 4;
    let sport = u16::from_be_bytes([*inner.get(ihl)?, *inner.get(ihl + 1)?]);
    Some(((src, sport), backend))
}

/// New flows per backend among `forwarded` frames whose client is in `clients`.
pub fn per_backend(
    forwarded: &[((Ipv4Addr, u16), Ipv4Addr)],
    clients: impl Fn(Ipv4Addr) -> bool,
) -> HashMap<Ipv4Addr, usize> {
    let mut out = HashMap::new();
    for ((src, _), backend) in forwarded {
        if clients(*src) {
            *out.entry(*backend).or_default() += 1;
        }
    }
    out
}

/// Median and maximum.
pub fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], *v.last().unwrap())
}
