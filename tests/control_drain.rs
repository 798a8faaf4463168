//! `switchyard-control drain` with real TCP connections through the data plane: an established
//! connection keeps its backend while new connections go elsewhere, and a control-plane restart
//! keeps the drain (it is recorded in the policy file, comments and all).
//!
//! ```text
//!  ns cli: python clients ──tap (uplink)──► switchyard-dataplane ──IPIP──► tap (backend) ──► ns srv
//!     ▲                       (real control plane on the same instance)      decap.py → echo server on the VIP
//!     └──────────────────── veth: the server answers the client directly ◄──────────┘
//! ```
//!
//! A capture in the server namespace reads the outer destination (the backend) of every
//! encapsulated packet, so the test knows which backend each client connection reached.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use switchyard_control::daemon::auth::default_token_path;
use switchyard_control::daemon::client::ApiClient;
use switchyard_control::daemon::view::StateView;

const WAIT: Duration = Duration::from_secs(30);
const VIP: &str = "10.100.0.10";
const SRV_MAC: &str = "02:5e:00:00:02:02";

const POLICY: &str = "\
# Drain test fleet: keep this comment.
interfaces:
  - name: uplink
    mac: 02:5e:00:00:01:01
    addresses: [10.90.0.1/24]
  - name: backend
    mac: 02:5e:00:00:02:01
    addresses: [10.91.0.1/24]
    gateway: { ipv4: 10.91.0.254, mac: 02:5e:00:00:02:02 }
encap: ipip
services:
  - name: echo
    vip: 10.100.0.10
    ports: [8080]
    protocol: tcp
    routes:
      - { pool: echo }
pools:
  echo:
    scheduler: maglev
    backends:
      - { address: 10.91.0.2, name: b1 }   # rack 1
      - address: 10.91.0.3                 # rack 2
        name: b2
";

const ECHO_SERVER: &str = r#"
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
            self.wfile.flush()
socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer((sys.argv[1], 8080), Echo)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
"#;

/// Connects once, echoes one line, prints `port P ok`.
const ONE_SHOT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 8080), timeout=5)
port = s.getsockname()[1]
s.sendall(b"hello\n")
reply = s.makefile().readline()
verdict = "ok" if reply == "hello\n" else "bad " + repr(reply)
print(f"port {port} {verdict}", flush=True)
"#;

/// One connection kept open: a line echoed every 100 ms, `ok N` printed for each; `broken`
/// and exit 1 on any failure.
const LONG_LIVED: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8080), timeout=5)
print(f"port {s.getsockname()[1]}", flush=True)
f = s.makefile("rw")
n = 0
while True:
    try:
        f.write(f"ping {n}\n"); f.flush()
        reply = f.readline()
    except Exception as e:
        print(f"broken {e}", flush=True); sys.exit(1)
    if reply != f"ping {n}\n":
        print(f"broken reply {reply!r}", flush=True); sys.exit(1)
    print(f"ok {n}", flush=True)
    n += 1
    time.sleep(0.1)
"#;

/// Prints `DST SPORT FLAGS` for every IPIP-encapsulated TCP packet received on the interface.
const CAPTURE: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((sys.argv[1], 0))
print("ready", flush=True)
while True:
    frame, addr = s.recvfrom(65535)
    if addr[2] == 4 or len(frame) < 54:
        continue
    ip = frame[14:]
    if ip[9] != 4:
        continue
    inner = ip[(ip[0] & 15) * 4:]
    if inner[9] != 6:
        continue
    tcp = inner[(inner[0] & 15) * 4:]
    sport = struct.unpack("!H", tcp[0:2])[0]
    print(f"{socket.inet_ntoa(ip[16:20])} {sport} {tcp[13]}", flush=True)
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_control(shm: &Path, policy: &Path, instance: &str, listen: &str) -> Background {
    Background::spawn(
        Command::new(control_bin())
            .env("SWITCHYARD_SHM_DIR", shm)
            .env("RUST_LOG", "info")
            .args(["run", "--policy"])
            .arg(policy)
            .args(["--instance", instance, "--listen", listen])
            .args(["--start-wait", "0s"]),
    )
}

fn wait_state(api: &ApiClient, what: &str, done: impl Fn(&StateView) -> bool) -> StateView {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = api.state();
        if let Ok(s) = &state {
            if done(s) {
                return s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "not within {WAIT:?}: {what}; last: {state:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn live(s: &StateView) -> bool {
    s.dataplane.running
        && s.generation.live >= s.generation.current
        && !s.dataplane.workers.is_empty()
        && s.dataplane
            .workers
            .iter()
            .all(|w| w.live_generation >= s.generation.current)
}

/// The backend the capture saw the SYN of the connection from `port` go to.
fn backend_of(capture: &mut Background, port: u16) -> String {
    let syn = |l: &str| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 3 && f[1] == port.to_string() && f[2].parse::<u8>().is_ok_and(|x| x & 0x02 != 0)
    };
    // Taken out of what was seen, so a later connection reusing the port is not mistaken for it.
    let line = match capture.seen.iter().position(|l| syn(l)) {
        Some(i) => capture.seen.remove(i),
        None => {
            let line = capture.wait_for_line(WAIT, syn);
            capture.seen.pop();
            line
        }
    };
    line.split_whitespace().next().unwrap().to_owned()
}

/// Opens one connection from the client namespace; returns its source port.
fn one_shot(cli: &Netns, script: &Path) -> u16 {
    let out = cli.exec(&format!("python3 {} {VIP}", script.display()));
    let line = out.trim();
    assert!(line.ends_with(" ok"), "{line}");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The next `ok N` of the long-lived connection, past `after`.
fn next_ok(conn: &mut Background, after: u64) -> u64 {
    let line = conn.wait_for_line(WAIT, |l| {
        l.starts_with("broken")
            || l.strip_prefix("ok ")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > after)
    });
    assert!(
        !line.starts_with("broken"),
        "the established connection broke: {line}"
    );
    line[3..].parse().unwrap()
}

/// `switchyard-control ARGS --api API --token-file TOKEN`: stdout, asserting success.
fn cli_run(api: &str, token: &Path, args: &[&str]) -> String {
    let out = run_with_timeout(
        Command::new(control_bin())
            .args(args)
            .args(["--api", api, "--token-file"])
            .arg(token),
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "switchyard-control {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn drain_keeps_an_established_connection_and_survives_a_control_plane_restart() {
    require_root();
    let dir = scratch("drain");
    let _cleanup = RemoveDir(dir.clone());
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let policy = write(&dir, "policy.yaml", POLICY);
    let server = write(&dir, "server.py", ECHO_SERVER);
    let one = write(&dir, "one.py", ONE_SHOT);
    let long = write(&dir, "long.py", LONG_LIVED);
    let capture_py = write(&dir, "capture.py", CAPTURE);
    let decap_py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/decap.py");
    let instance = unique("drain");
    let listen = format!("127.0.0.1:{}", free_port());
    let token = default_token_path(&shm, &instance);
    let api = ApiClient::new(&listen, Duration::from_secs(5)).with_token_file(&token);

    let mut control = spawn_control(&shm, &policy, &instance, &listen);
    wait_state(&api, "the API answers", |_| true);

    let settings = write(
        &dir,
        "appliance.yaml",
        "ports:\n  - { device: net_tap0, role: uplink }\n  - { device: net_tap1, role: backend }\n\
         flow_table: { ipv4_flows: 65536, ipv6_flows: 1024 }\nmempool: { mbufs: 8191 }\n",
    );
    let (tap_c, tap_s) = (unique("sydrc"), unique("sydrs"));
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .env("SWITCHYARD_SHM_DIR", &shm)
            .args([
                "run",
                "--stats-interval",
                "1",
                "--instance",
                &instance,
                "--config",
            ])
            .arg(&settings)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .arg(format!("--vdev=net_tap0,iface={tap_c}"))
            .arg(format!("--vdev=net_tap1,iface={tap_s}")),
    );
    wait_for_interface(&tap_c, WAIT);
    wait_for_interface(&tap_s, WAIT);
    dp.wait_for_line(WAIT, |l| l.starts_with("table: generation"));
    wait_state(&api, "generation live on every worker", live);

    let cli = Netns::new(&unique("sydrn"));
    let srv = Netns::new(&unique("sydrv"));
    sh(&format!("ip link set {tap_c} netns {}", cli.0));
    sh(&format!("ip link set {tap_s} netns {}", srv.0));
    let (veth_c, veth_s) = (unique("sydvc"), unique("sydvs"));
    sh(&format!(
        "ip link add {veth_c} netns {} type veth peer name {veth_s} netns {}",
        cli.0, srv.0
    ));
    cli.exec(&format!(
        "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 && \
         ip addr add 10.90.0.2/24 dev {tap_c} && ip link set {tap_c} up && \
         ip addr add 10.92.0.1/24 dev {veth_c} && ip link set {veth_c} up && \
         sysctl -qw net.ipv4.conf.{veth_c}.rp_filter=0 && \
         ip route add {VIP}/32 via 10.90.0.1 dev {tap_c}"
    ));
    srv.exec(&format!(
        "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 && \
         ip link set {tap_s} address {SRV_MAC} && ip addr add 10.91.0.254/24 dev {tap_s} && \
         ip link set {tap_s} up && \
         ip addr add 10.92.0.2/24 dev {veth_s} && ip link set {veth_s} up && \
         ip addr add {VIP}/32 dev lo && ip route add 10.90.0.0/24 via 10.92.0.1 dev {veth_s}"
    ));
    let ns_python = |ns: &Netns, script: &Path, arg: &str| {
        let mut p = Background::spawn(
            Command::new("ip")
                .args(["netns", "exec", &ns.0, "python3"])
                .arg(script)
                .arg(arg),
        );
        p.wait_for_line(WAIT, |l| l == "ready");
        p
    };
    let mut decap = Background::spawn(Command::new("ip").args([
        "netns", "exec", &srv.0, "python3", decap_py, &tap_s, "sydrtun",
    ]));
    decap.wait_for_line(WAIT, |l| l == "ready");
    srv.exec("ip link set sydrtun up && sysctl -qw net.ipv4.conf.sydrtun.rp_filter=0");
    let mut capture = ns_python(&srv, &capture_py, &tap_s);
    let _echo = ns_python(&srv, &server, VIP);

    // New connections spread over both backends.
    let mut first_seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let port = one_shot(&cli, &one);
        first_seen.insert(backend_of(&mut capture, port));
        if first_seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        first_seen.len(),
        2,
        "both backends take new flows: {first_seen:?}"
    );

    // The established connection, and the backend it is on.
    let mut conn = Background::spawn(
        Command::new("ip")
            .args(["netns", "exec", &cli.0, "python3"])
            .arg(&long)
            .arg(VIP),
    );
    let port: u16 = conn
        .wait_for_line(WAIT, |l| l.starts_with("port "))
        .trim_start_matches("port ")
        .parse()
        .unwrap();
    let held = backend_of(&mut capture, port);
    let (held_name, other) = if held == "10.91.0.2" {
        ("b1", "10.91.0.3")
    } else {
        ("b2", "10.91.0.2")
    };
    let mut n = next_ok(&mut conn, 0);

    // Drain it by name.
    let out = cli_run(&listen, &token, &["drain", held_name, "--yes"]);
    assert!(out.contains("live on every worker"), "{out}");
    assert!(out.contains(&held), "the diff names the backend: {out}");
    let state = wait_state(&api, "drained and live", live);
    let view = state.pools[0]
        .backends
        .iter()
        .find(|b| b.address == held)
        .unwrap();
    assert_eq!((view.state.as_str(), view.effective_weight), ("drained", 0));
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(
        text.starts_with("# Drain test fleet: keep this comment.\n"),
        "{text}"
    );
    assert!(text.contains("state: drained"), "{text}");
    assert!(
        text.contains("# rack 1") && text.contains("# rack 2"),
        "{text}"
    );

    let check = |capture: &mut Background, conn: &mut Background, n: u64, phase: &str| -> u64 {
        // The established connection goes on, on its backend.
        let n = next_ok(conn, n + 5);
        let on_held = capture.wait_for_line(WAIT, |l| {
            l.split_whitespace().nth(1) == Some(&*port.to_string())
        });
        assert!(
            on_held.starts_with(&held),
            "{phase}: established flow moved: {on_held}"
        );
        // New connections avoid the drained backend.
        for _ in 0..12 {
            let p = one_shot(&cli, &one);
            assert_eq!(
                backend_of(capture, p),
                other,
                "{phase}: a new flow reached the drained backend"
            );
        }
        n
    };
    n = check(&mut capture, &mut conn, n, "after drain");

    // A control-plane restart keeps the drain and touches nothing.
    let (status, _) = control.stop(15, WAIT);
    assert!(status.success());
    control = spawn_control(&shm, &policy, &instance, &listen);
    let state = wait_state(&api, "the restarted daemon answers", live);
    assert_eq!(
        state.pools[0]
            .backends
            .iter()
            .find(|b| b.address == held)
            .unwrap()
            .state,
        "drained"
    );
    assert_eq!(state.counters.publishes, 0, "the restart published nothing");
    let show = cli_run(&listen, &token, &["show"]);
    assert!(show.contains("drained"), "{show}");
    n = check(
        &mut capture,
        &mut conn,
        n,
        "after the control-plane restart",
    );

    // Undrain: the backend takes new flows again.
    let out = cli_run(
        &listen,
        &token,
        &["undrain", &format!("echo/{held}"), "--yes"],
    );
    assert!(out.contains("live on every worker"), "{out}");
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), POLICY);
    let mut back = false;
    for _ in 0..40 {
        let p = one_shot(&cli, &one);
        if backend_of(&mut capture, p) == held {
            back = true;
            break;
        }
    }
    assert!(back, "the undrained backend takes new flows again");
    next_ok(&mut conn, n);
    // Every packet of the established connection went to the backend it started on.
    let port_text = port.to_string();
    let moved: Vec<&String> = capture
        .seen
        .iter()
        .filter(|l| l.split_whitespace().nth(1) == Some(&*port_text) && !l.starts_with(&held))
        .collect();
    assert!(
        moved.is_empty(),
        "packets of the established flow elsewhere: {moved:?}"
    );
    let (status, _) = control.stop(15, WAIT);
    assert!(status.success());
}
