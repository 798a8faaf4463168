//! Issue 11: who may talk to the daemon's API. The real binary on a loopback port of its own,
//! requests written byte for byte on a TCP socket (so Host, Origin and Authorization are exactly
//! what an attacker would send), and the CLI as an operator runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-control");
const INSTANCE: &str = "auth";
const WAIT: Duration = Duration::from_secs(20);

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

fn two_backends() -> String {
    format!("{POLICY}      - {{ address: 192.0.2.11, weight: 50 }}\n")
}

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("swyd-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shm")).unwrap();
        std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
        Self { dir }
    }

    fn shm(&self) -> PathBuf {
        self.dir.join("shm")
    }

    fn policy(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    fn token_file(&self) -> PathBuf {
        self.shm().join(format!("switchyard-{INSTANCE}.token"))
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .unwrap()
            .trim()
            .to_owned()
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("SWITCHYARD_SHM_DIR", self.shm())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    fn run_args(&self, listen: &str, extra: &[&str]) -> Command {
        let mut c = self.command();
        c.args(["run", "--policy"])
            .arg(self.policy())
            .args(["--instance", INSTANCE, "--listen", listen])
            .args(["--start-wait", "0s", "--watch-interval-ms", "0"])
            .args(extra);
        c
    }

    /// Starts `run` on a free loopback port; returns once the API listens.
    fn start(&self, listen: &str, extra: &[&str]) -> Daemon {
        let mut child = self
            .run_args(listen, extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut daemon = Daemon {
            child,
            log,
            port: 0,
        };
        let marker = "API listening on http://";
        assert!(
            daemon.wait_log(marker),
            "daemon did not start:\n{}",
            daemon.log()
        );
        let log = daemon.log();
        let rest = &log[log.find(marker).unwrap() + marker.len()..];
        let address = rest.split_whitespace().next().unwrap();
        daemon.port = address.rsplit_once(':').unwrap().1.parse().unwrap();
        daemon
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    port: u16,
}

impl Daemon {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str) -> bool {
        let started = Instant::now();
        while started.elapsed() < WAIT {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn api(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request, headers exactly as given (`Host` included: none is added).
    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not HTTP: {answer}"));
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Answer { status, body }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `POST /v1/apply` of `policy` as YAML from 127.0.0.1, with `extra` headers.
    fn apply(&self, policy: &str, extra: &[(&str, &str)]) -> Answer {
        let host = self.host();
        let mut headers = vec![
            ("Host", host.as_str()),
            ("Content-Type", "application/yaml"),
        ];
        headers.extend_from_slice(extra);
        self.http("POST", "/v1/apply?wait_ms=0", &headers, policy)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let started = Instant::now();
            while started.elapsed() < WAIT {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn policy_text(s: &Scratch) -> String {
    std::fs::read_to_string(s.policy()).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn the_token_file_is_created_group_readable_and_changes_need_it() {
    let s = Scratch::new("token");
    let daemon = s.start("127.0.0.1:0", &[]);
    let mode = std::fs::metadata(s.token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "{mode:o}");
    let token = s.token();
    assert_eq!(token.len(), 64, "{token}");

    // No token: 401, nothing applied, the refusal logged with the peer.
    let a = daemon.apply(&two_backends(), &[]);
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("Authorization: Bearer"), "{a:?}");
    assert_eq!(policy_text(&s), POLICY);
    assert!(
        daemon.wait_log("API: refused POST /v1/apply from 127.0.0.1:"),
        "{}",
        daemon.log()
    );

    // A wrong token, and the right one with a character more: 401.
    for wrong in [
        bearer("0".repeat(64).as_str()),
        bearer(&format!("{token}0")),
        token.clone(),
    ] {
        let a = daemon.apply(&two_backends(), &[("Authorization", &wrong)]);
        assert_eq!(a.status, 401, "{wrong}: {a:?}");
        assert_eq!(policy_text(&s), POLICY);
    }
    assert!(daemon.log().contains("wrong token"), "{}", daemon.log());

    // The other state-changing routes need it too.
    let host = daemon.host();
    for path in [
        "/v1/backends/drain?backend=192.0.2.10",
        "/v1/rollouts/echo/pause",
    ] {
        let a = daemon.http("POST", path, &[("Host", &host)], "");
        assert_eq!(a.status, 401, "{path}: {a:?}");
    }
    assert_eq!(policy_text(&s), POLICY);

    // Reads on loopback stay open.
    for path in ["/v1/state", "/metrics", "/v1/rollouts"] {
        let a = daemon.http("GET", path, &[("Host", &host)], "");
        assert_eq!(a.status, 200, "{path}: {a:?}");
    }

    // The right token applies.
    let a = daemon.apply(&two_backends(), &[("Authorization", &bearer(&token))]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(policy_text(&s), two_backends());
}

#[test]
fn foreign_origins_and_hosts_are_refused_even_with_the_token() {
    let s = Scratch::new("origin");
    let daemon = s.start("127.0.0.1:0", &[]);
    let auth = bearer(&s.token());
    let host = daemon.host();

    // The curl: a browser page's Origin, a rebinding attacker's Host.
    let a = daemon.apply(
        &two_backends(),
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
    );
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.body.contains("Origin"), "{a:?}");
    let a = daemon.http(
        "POST",
        "/v1/apply",
        &[
            ("Host", "attacker.example"),
            ("Content-Type", "application/yaml"),
            ("Authorization", &auth),
        ],
        &two_backends(),
    );
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.body.contains("Host"), "{a:?}");
    assert_eq!(policy_text(&s), POLICY);

    // Reads too: a rebound page must not read the state or the metrics.
    let rebound = format!("attacker.example:{}", daemon.port);
    for path in [
        "/v1/state",
        "/metrics",
        "/v1/flows",
        "/v1/trace?client=1.2.3.4&vip=5.6.7.8:80",
    ] {
        let a = daemon.http("GET", path, &[("Host", &rebound)], "");
        assert_eq!(a.status, 403, "{path}: {a:?}");
    }
    let a = daemon.http(
        "GET",
        "/v1/state",
        &[("Host", &host), ("Origin", "http://localhost:1")],
        "",
    );
    assert_eq!(a.status, 403, "{a:?}");
    assert!(
        daemon.wait_log("API: refused GET /v1/state from 127.0.0.1:"),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("Host `attacker.example`"),
        "{}",
        daemon.log()
    );

    // Its own origin and loopback names pass.
    let own = format!("http://localhost:{}", daemon.port);
    let localhost = format!("localhost:{}", daemon.port);
    let a = daemon.http(
        "GET",
        "/v1/state",
        &[("Host", &localhost), ("Origin", &own)],
        "",
    );
    assert_eq!(a.status, 200, "{a:?}");
    let a = daemon.apply(
        &two_backends(),
        &[("Authorization", &auth), ("Origin", &own)],
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(policy_text(&s), two_backends());
}

#[test]
fn apply_takes_yaml_only() {
    let s = Scratch::new("media");
    let daemon = s.start("127.0.0.1:0", &[]);
    let auth = bearer(&s.token());
    let host = daemon.host();
    for media in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let mut headers = vec![("Host", host.as_str()), ("Authorization", auth.as_str())];
        if !media.is_empty() {
            headers.push(("Content-Type", media));
        }
        let a = daemon.http("POST", "/v1/apply?wait_ms=0", &headers, &two_backends());
        assert_eq!(a.status, 415, "{media}: {a:?}");
        assert!(a.body.contains("application/yaml"), "{a:?}");
    }
    assert_eq!(policy_text(&s), POLICY);
    assert!(
        daemon.wait_log("API: refused POST /v1/apply from 127.0.0.1:"),
        "{}",
        daemon.log()
    );
    for media in ["application/x-yaml", "text/yaml; charset=utf-8"] {
        let headers = [
            ("Host", host.as_str()),
            ("Authorization", auth.as_str()),
            ("Content-Type", media),
        ];
        let a = daemon.http("POST", "/v1/apply?dry_run=true", &headers, &two_backends());
        assert_eq!(a.status, 200, "{media}: {a:?}");
    }
}

#[test]
fn listening_beyond_loopback_needs_an_explicit_token_file() {
    let s = Scratch::new("listen");
    let out = s.run_args("0.0.0.0:0", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--token-file PATH"),
        "{err}"
    );
    assert!(!s.token_file().exists());

    // With one, it starts, and reads need the token too.
    let file = s.dir.join("api.token");
    let daemon = s.start("0.0.0.0:0", &["--token-file", file.to_str().unwrap()]);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let lb = format!("lb1.example:{}", daemon.port);
    let a = daemon.http("GET", "/v1/state", &[("Host", &lb)], "");
    assert_eq!(a.status, 401, "{a:?}");
    let a = daemon.http(
        "GET",
        "/v1/state",
        &[("Host", &lb), ("Authorization", &bearer(&token))],
        "",
    );
    assert_eq!(a.status, 200, "{a:?}");
    let out = s.cli(&[
        "show",
        "--api",
        &daemon.api(),
        "--token-file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = s.cli(&["show", "--api", &daemon.api(), "--instance", INSTANCE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("daemon answered 401"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_token_file_others_can_read_is_refused() {
    let s = Scratch::new("mode");
    std::fs::write(s.token_file(), "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(s.token_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.run_args("127.0.0.1:0", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("chmod 640"), "{err}");

    // A symbolic link is not followed.
    std::fs::remove_file(s.token_file()).unwrap();
    let target = s.dir.join("elsewhere");
    std::fs::write(&target, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, s.token_file()).unwrap();
    let out = s.run_args("127.0.0.1:0", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_cli_finds_the_token_by_instance_and_says_so_when_it_cannot() {
    let s = Scratch::new("cli");
    let daemon = s.start("127.0.0.1:0", &[]);
    let api = daemon.api();
    let new = s.dir.join("new.yaml");
    std::fs::write(&new, two_backends()).unwrap();
    let new = new.to_str().unwrap();

    // Another instance's token file (none): refused, and the CLI says where it looked.
    let out = s.cli(&["apply", new, "--yes", "--api", &api]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("daemon answered 401") && err.contains("switchyard-default.token"),
        "{err}"
    );
    assert_eq!(policy_text(&s), POLICY);

    // The daemon's instance: applied, drained.
    let out = s.cli(&["apply", new, "--yes", "--api", &api, "--instance", INSTANCE]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(policy_text(&s), two_backends());
    let out = s.cli(&[
        "drain",
        "192.0.2.11",
        "--yes",
        "--api",
        &api,
        "--instance",
        INSTANCE,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        policy_text(&s).contains("state: drained"),
        "{}",
        policy_text(&s)
    );

    // An explicit --token-file works the same.
    let file = s.token_file();
    let out = s.cli(&[
        "undrain",
        "192.0.2.11",
        "--yes",
        "--api",
        &api,
        "--token-file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!policy_text(&s).contains("drained"), "{}", policy_text(&s));
}
