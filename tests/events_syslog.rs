//! Events to a real syslog collector: Debian's rsyslogd, started by the test on loopback with
//! its own configuration (UDP and TCP inputs on free ports, each writing the raw message as
//! received to its own file), receives what the control plane emits while a real data plane
//! forwards a SYN flood and ACL-denied traffic (sampled drops and a sustained-drop finding)
//! and a model server dies:
//!
//! ```text
//!  tcpreplay ─► tap ─► switchyard-dataplane (1 worker, insert cap 2000/s) ─► pcap
//!                           │ counters in the segment
//!  model servers (ns) ◄─ probes ─ switchyard-control --events FILE ─► rsyslogd (UDP: CEF, TCP: OCSF,
//!                                                           └─► events.jsonl   octet-counted)
//! ```
//!
//! A second test points both syslog sinks at ports where nobody listens and shows the daemon
//! keeps answering while the sinks' queues overflow and the drops are counted in `/metrics`.

mod common;
mod fleet;
#[path = "fixtures/frames.rs"]
mod frames;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fleet::*;
use frames::SYN;
use serde_json::Value;

/// rsyslogd in the foreground with its own config, pid file and work directory in `dir`.
struct Rsyslog {
    proc: Option<Background>,
    udp_port: u16,
    tcp_port: u16,
    udp_log: PathBuf,
    tcp_log: PathBuf,
    _dir: RemoveDir,
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Rsyslog {
    fn start(name: &str) -> Self {
        let dir = scratch(name);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let (udp_port, tcp_port) = (free_udp_port(), free_port());
        let (udp_log, tcp_log) = (dir.join("udp.log"), dir.join("tcp.log"));
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\")\n\
                 module(load=\"imudp\")\n\
                 module(load=\"imtcp\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 ruleset(name=\"udp\") {{ action(type=\"omfile\" file=\"{udp}\" template=\"raw\") }}\n\
                 ruleset(name=\"tcp\") {{ action(type=\"omfile\" file=\"{tcp}\" template=\"raw\") }}\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\" ruleset=\"udp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\" ruleset=\"tcp\")\n",
                work = work.display(),
                udp = udp_log.display(),
                tcp = tcp_log.display(),
            ),
        )
        .unwrap();
        let proc = Background::spawn(
            Command::new("rsyslogd")
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid")),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", tcp_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on TCP {tcp_port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            proc: Some(proc),
            udp_port,
            tcp_port,
            udp_log,
            tcp_log,
            _dir: RemoveDir(dir),
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // SIGTERM: rsyslogd removes its pid file; the directory goes with `_dir`.
            let _ = p.stop(15, Duration::from_secs(5));
        }
    }
}

/// One RFC 5424 message as rsyslog wrote it: `<PRI>1 TIME HOST APP PROCID MSGID SD MSG`.
#[derive(Debug)]
struct Syslog {
    pri: u32,
    host: String,
    app: String,
    msgid: String,
    msg: String,
}

fn parse_syslog(line: &str) -> Syslog {
    let rest = line
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("not RFC 5424 (a frame header left in?): {line}"));
    let (pri, rest) = rest.split_once(">1 ").expect("PRI and VERSION 1");
    let f: Vec<&str> = rest.splitn(7, ' ').collect();
    assert_eq!(f.len(), 7, "{line}");
    assert_eq!(f[5], "-", "no structured data: {line}");
    Syslog {
        pri: pri.parse().unwrap(),
        host: f[1].to_owned(),
        app: f[2].to_owned(),
        msgid: f[4].to_owned(),
        msg: f[6].to_owned(),
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until every kind in `kinds` has arrived in `path` (as the syslog MSGID).
fn wait_for_kinds(path: &Path, kinds: &[&str], timeout: Duration) -> Vec<Syslog> {
    let deadline = Instant::now() + timeout;
    loop {
        let messages: Vec<Syslog> = read_lines(path).iter().map(|l| parse_syslog(l)).collect();
        let missing: Vec<&&str> = kinds
            .iter()
            .filter(|k| !messages.iter().any(|m| m.msgid == **k))
            .collect();
        if missing.is_empty() {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {missing:?} not received within {timeout:?}; got:\n{}",
            path.display(),
            read_lines(path).join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn policy(servers: &Servers) -> String {
    format!(
        "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
  - name: backend
    mac: 02:00:00:00:01:01
    addresses: [10.{s}.0.1/24]
    gateway: {{ ipv4: 10.{s}.0.254, mac: 02:00:00:00:01:fe }}
encap: ipip
acl:
  - {{ deny: 198.18.0.0/15 }}
services:
  - name: llama
    vip: {VIP}
    ports: [443]
    protocol: tcp
    routes:
      - {{ pool: llama }}
pools:
  llama:
    scheduler: maglev
    health:
      http: {{ port: 8000, path: /v1/models, expect_model: {MODEL} }}
      interval: 200ms
      timeout: 150ms
      rise: 1
      fall: 2
    backends:
      - {{ address: {a}, weight: 100 }}
      - {{ address: {b}, weight: 100 }}
",
        s = servers.subnet,
        a = servers.addr(0),
        b = servers.addr(1),
    )
}

/// HTTP/1.1 request on a fresh connection; returns the status code and the body.
fn http(listen: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn unauthenticated_apply(listen: &str) -> u16 {
    http(
        listen,
        "POST /v1/apply HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/yaml\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .0
}

fn metrics(listen: &str) -> String {
    let (status, body) = http(
        listen,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    body
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn series(body: &str, prefix: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {prefix} in:\n{body}"))
}

fn syn_frames(prefix: [u8; 2], count: u32) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| client_frame(client(prefix, i + 1), 20_000 + (i % 40_000) as u16, SYN))
        .collect()
}

#[test]
fn rsyslog_receives_backend_down_flood_spike_acl_and_api_refusal_events() {
    require_root();
    let rsyslog = Rsyslog::start("evsyslog");
    let mut servers = Servers::start(2, 79);
    let events_dir = scratch("evsyslog-control");
    let _events_dir_cleanup = RemoveDir(events_dir.clone());
    let jsonl = events_dir.join("events.jsonl");
    let events = events_dir.join("events.yaml");
    std::fs::write(
        &events,
        format!(
            "sinks:
  - syslog: {{ address: 127.0.0.1:{udp}, transport: udp, format: cef, hostname: sy-test }}
  - syslog: {{ address: 127.0.0.1:{tcp}, transport: tcp, format: ocsf, hostname: sy-test, facility: local3 }}
  - file: {{ path: {jsonl} }}
privacy:
  client_addresses: truncate
  ipv4_prefix: 16
detection:
  interval: 200ms
  new_flow_spike: {{ factor: 3, min_rate: 200/s, warmup: 1s, baseline: 5s }}
  acl_drops: {{ rate: 50/s, for: 400ms }}
  rate_limit_drops: {{ enabled: false }}
",
            udp = rsyslog.udp_port,
            tcp = rsyslog.tcp_port,
            jsonl = jsonl.display(),
        ),
    )
    .unwrap();
    let mut control = Control::start_with(
        "evsyslog",
        &policy(&servers),
        &["--events".to_owned(), events.display().to_string()],
    );
    let dp = Dataplane::start_with(
        &control,
        "{ ipv4_flows: 65536, ipv6_flows: 1024, insert_rate: 2000 }",
    );
    control.wait("both up and live", Duration::from_secs(20), |s| {
        (0..2).all(|i| backend(s, "llama", servers.addr(i)).healthy) && live_everywhere(s)
    });

    // A quiet baseline of new flows (20/s for 2 s), then 3000 SYNs at 20 000/s: the insert cap
    // (2000/s, burst 200) runs dry, the table enters flood mode, and new flows jump far above
    // their baseline.
    dp.replay_at(&control.dir, "baseline", &syn_frames([10, 60], 40), 20);
    dp.replay_at(&control.dir, "burst", &syn_frames([10, 61], 3000), 20_000);
    // ACL-denied sources for 1.5 s at 1000/s.
    let denied: Vec<Vec<u8>> = (0..1500u32)
        .map(|i| client_frame(client([198, 18], i + 1), 30_000, SYN))
        .collect();
    dp.replay_at(&control.dir, "denied", &denied, 1000);
    // A backend dies.
    servers.kill(0);
    // An unauthenticated apply, and an authenticated one of a policy that does not validate.
    assert_eq!(unauthenticated_apply(&control.listen), 401);
    let refused = control
        .api
        .apply("services: [}\n", "bad.yaml", false, Duration::from_secs(1));
    assert!(refused.is_err(), "{refused:?}");

    let kinds = [
        "policy_refused",
        "backend_down",
        "flood_entered",
        "new_flow_spike",
        "acl_drops_sustained",
        "acl_drop",
        "api_refused",
    ];
    let tcp = wait_for_kinds(&rsyslog.tcp_log, &kinds, Duration::from_secs(20));
    let udp = wait_for_kinds(&rsyslog.udp_log, &kinds, Duration::from_secs(5));
    println!(
        "# rsyslog received {} TCP and {} UDP messages",
        tcp.len(),
        udp.len()
    );

    // TCP: RFC 5424, octet-counted (rsyslog took the frame header off: every raw message
    // starts with its PRI and its JSON payload parses whole), OCSF.
    let ocsf = |kind: &str| -> (Syslog, Value) {
        let m = tcp
            .iter()
            .find(|m| m.msgid == kind)
            .map(|m| {
                parse_syslog(&format!(
                    "<{}>1 - {} {} - {} - {}",
                    m.pri, m.host, m.app, m.msgid, m.msg
                ))
            })
            .unwrap();
        let v: Value = serde_json::from_str(&m.msg)
            .unwrap_or_else(|e| panic!("{kind}: payload is not one JSON object ({e}): {}", m.msg));
        (m, v)
    };
    for m in &tcp {
        assert_eq!(m.host, "sy-test");
        assert_eq!(m.app, "switchyard-control");
        assert!(serde_json::from_str::<Value>(&m.msg).is_ok(), "{}", m.msg);
    }
    let (m, down) = ocsf("backend_down");
    assert_eq!(m.pri, 19 * 8 + 4, "local3.warning");
    assert_eq!(down["class_uid"], 0);
    assert_eq!(down["metadata"]["event_code"], "backend_down");
    assert_eq!(down["unmapped"]["pool"], "llama");
    assert_eq!(down["unmapped"]["backend"], servers.addr(0).to_string());
    let reason = down["unmapped"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused"),
        "a killed server refuses connections: {reason}"
    );

    let (_, flood) = ocsf("flood_entered");
    assert_eq!(flood["class_uid"], 2004);
    assert_eq!(flood["type_uid"], 200_401);
    assert!(flood["unmapped"]["worker"].is_u64());
    assert!(
        flood["evidences"][0]["data"]["flood_entered"]
            .as_f64()
            .unwrap()
            >= 1.0
    );

    let (_, spike) = ocsf("new_flow_spike");
    assert_eq!(spike["class_uid"], 2004);
    let data = &spike["evidences"][0]["data"];
    let (rate, baseline) = (
        data["new_flows_per_second"].as_f64().unwrap(),
        data["baseline_per_second"].as_f64().unwrap(),
    );
    println!("# spike: {rate:.0} new flows/s against a baseline of {baseline:.1}/s");
    assert!(rate >= 200.0 && rate > 3.0 * baseline, "{spike}");
    assert_eq!(spike["finding_info"]["types"][0], "new_flow_spike");
    // And per service, from the data plane's per-service new-flow rows.
    let per_service: Vec<Value> = tcp
        .iter()
        .filter(|m| m.msgid == "new_flow_spike")
        .map(|m| serde_json::from_str(&m.msg).unwrap())
        .filter(|v: &Value| v["unmapped"]["service"] == "llama")
        .collect();
    assert_eq!(
        per_service.len(),
        1,
        "one spike for service llama: {per_service:?}"
    );
    let data = &per_service[0]["evidences"][0]["data"];
    assert!(
        data["new_flows_per_second"].as_f64().unwrap()
            > 3.0 * data["baseline_per_second"].as_f64().unwrap(),
        "{data}"
    );

    let (_, acl) = ocsf("acl_drops_sustained");
    let data = &acl["evidences"][0]["data"];
    assert!(data["drops_per_second"].as_f64().unwrap() >= 50.0, "{acl}");
    assert!(data["held_seconds"].as_f64().unwrap() >= 0.4, "{acl}");

    // A sampled ACL drop from the data plane: Network Activity, the client truncated to /16.
    let (_, sample) = ocsf("acl_drop");
    assert_eq!(sample["class_uid"], 4001);
    assert_eq!(sample["activity_id"], 5);
    assert_eq!(sample["disposition_id"], 2);
    assert_eq!(sample["src_endpoint"]["ip"], "198.18.0.0", "{sample}");
    assert_eq!(sample["src_endpoint"]["port"], 30_000);
    assert_eq!(sample["dst_endpoint"]["ip"], VIP.to_string());
    assert_eq!(sample["dst_endpoint"]["port"], 443);
    assert_eq!(sample["connection_info"]["protocol_name"], "tcp");
    assert_eq!(sample["unmapped"]["reason"], "drop_acl");
    assert!(
        !sample.to_string().contains("198.18.0.1"),
        "no client address in the export: {sample}"
    );

    let (_, bad) = ocsf("policy_refused");
    assert_eq!(bad["class_uid"], 0);
    assert!(
        bad["message"].as_str().unwrap().starts_with("bad.yaml: "),
        "{bad}"
    );
    assert!(
        bad["unmapped"]["reason"]
            .as_str()
            .unwrap()
            .contains("bad.yaml:1:"),
        "the error lines with their position: {bad}"
    );

    let (_, api) = ocsf("api_refused");
    assert_eq!(api["class_uid"], 6003);
    assert_eq!(api["api"]["operation"], "POST /v1/apply");
    assert_eq!(api["status_id"], 2);
    // The peer 127.0.0.1, truncated to /16 by the privacy setting.
    assert_eq!(api["src_endpoint"]["ip"], "127.0.0.0");

    // UDP: the same events as CEF.
    let cef = |kind: &str| udp.iter().find(|m| m.msgid == kind).unwrap().msg.clone();
    let down = cef("backend_down");
    assert!(down.starts_with("CEF:0|Switchyard|switchyard|"), "{down}");
    assert!(down.contains("|backend_down|"), "{down}");
    assert!(down.contains(&format!("cs3={}", servers.addr(0))), "{down}");
    assert!(down.contains("cs2Label=pool cs2=llama"), "{down}");
    assert!(cef("new_flow_spike").contains("cs5Label=evidence cs5="));
    assert!(cef("api_refused").contains(" src=127.0.0.0"));
    let sample = cef("acl_drop");
    assert!(
        sample.contains(" src=198.18.0.0 spt=30000 dst=203.0.113.10 dpt=443 proto=tcp act=blocked"),
        "{sample}"
    );

    // The JSON-lines file has them too, and the daemon's start.
    let lines = read_lines(&jsonl);
    let kinds_in_file: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for k in kinds.iter().chain(&["policy_applied", "flood_left"]) {
        assert!(
            kinds_in_file.iter().any(|x| x == k),
            "{k} not in {kinds_in_file:?}"
        );
    }

    // No denied client's address (198.18.0.1 …) anywhere in what was exported.
    for (what, text) in [
        ("events.jsonl", lines.join("\n")),
        ("TCP", read_lines(&rsyslog.tcp_log).join("\n")),
        ("UDP", read_lines(&rsyslog.udp_log).join("\n")),
    ] {
        assert!(
            !text.contains("198.18.0.1"),
            "{what} leaks a client address:\n{text}"
        );
    }

    // Nothing was dropped; /metrics counts what each sink sent.
    let body = metrics(&control.listen);
    let tcp_sink = format!(
        "{{sink=\"syslog-tcp\",target=\"127.0.0.1:{}\"}}",
        rsyslog.tcp_port
    );
    assert_eq!(
        series(&body, &format!("switchyard_events_dropped_total{tcp_sink}")),
        0
    );
    assert!(series(&body, &format!("switchyard_events_sent_total{tcp_sink}")) >= tcp.len() as u64);
    assert!(
        series(
            &body,
            "switchyard_events_emitted_total{kind=\"backend_down\"}"
        ) >= 1
    );
    drop(dp);
}

#[test]
fn a_dead_collector_does_not_stall_the_daemon_and_drops_are_counted() {
    // Ports nobody listens on: TCP connects are refused (the sink backs off and retries), UDP
    // datagrams go nowhere.
    let dead_tcp = free_port();
    let dead_udp = free_udp_port();
    let dir = scratch("evdead");
    let _cleanup = RemoveDir(dir.clone());
    let events = dir.join("events.yaml");
    std::fs::write(
        &events,
        format!(
            "sinks:
  - syslog: {{ address: 127.0.0.1:{dead_tcp}, transport: tcp, queue: 8 }}
  - syslog: {{ address: 127.0.0.1:{dead_udp}, transport: udp, queue: 8 }}
"
        ),
    )
    .unwrap();
    let policy = "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
services:
  - name: web
    vip: 203.0.113.10
    ports: [443]
    protocol: tcp
    routes:
      - { pool: web }
pools:
  web:
    scheduler: maglev
    backends:
      - { address: 198.51.100.11 }
";
    let mut control = Control::start_with(
        "evdead",
        policy,
        &["--events".to_owned(), events.display().to_string()],
    );
    // 300 refused requests, each one an event: every one answered at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..300 {
        let t = Instant::now();
        assert_eq!(unauthenticated_apply(&control.listen), 401);
        slowest = slowest.max(t.elapsed());
    }
    println!("# slowest refused request with a dead collector: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    control.wait("the API answers reads", Duration::from_secs(5), |_| true);
    let body = metrics(&control.listen);
    let tcp_sink = format!("{{sink=\"syslog-tcp\",target=\"127.0.0.1:{dead_tcp}\"}}");
    let dropped = series(&body, &format!("switchyard_events_dropped_total{tcp_sink}"));
    let sent = series(&body, &format!("switchyard_events_sent_total{tcp_sink}"));
    let queued = series(&body, &format!("switchyard_events_queued{tcp_sink}"));
    println!("# dead TCP collector: {dropped} dropped, {sent} sent, {queued} queued");
    assert_eq!(sent, 0);
    // 301 events (the start, 300 refusals): at most the queue and the one in hand wait.
    assert!(dropped >= 301 - 9, "{body}");
    // The queue, and the one event the sink holds while it retries.
    assert!(queued <= 9, "{queued}");
    let (status, _) = control.proc.stop(15, Duration::from_secs(10));
    assert!(
        status.success(),
        "the daemon stops promptly with a dead collector: {status}"
    );
}

#[test]
fn a_bad_events_file_stops_the_start_with_located_errors() {
    let dir = scratch("evbad");
    let _cleanup = RemoveDir(dir.clone());
    let events = dir.join("events.yaml");
    std::fs::write(
        &events,
        "sinks:\n  - syslog: { address: 127.0.0.1:514, transport: udp, colour: red }\n",
    )
    .unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "interfaces:\n  - { name: uplink, mac: 02:00:00:00:00:01, addresses: [198.51.100.1/24] }\n\
         services:\n  - { name: web, vip: 203.0.113.10, ports: [443], protocol: tcp, routes: [{ pool: web }] }\n\
         pools:\n  web: { scheduler: maglev, backends: [{ address: 198.51.100.11 }] }\n",
    )
    .unwrap();
    let shm = dir.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let out = run_with_timeout(
        Command::new(control_bin())
            .env("SWITCHYARD_SHM_DIR", &shm)
            .args(["run", "--policy"])
            .arg(&policy)
            .args([
                "--instance",
                &unique("evbad"),
                "--listen",
                "127.0.0.1:0",
                "--events",
            ])
            .arg(&events),
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("{}:2:", events.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
    // Nothing was published: the start stopped before the segment was touched.
    assert!(
        std::fs::read_dir(&shm).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".gen-")),
        "no generation file"
    );
}
