//! The daemon (`switchyard-control run`) and its clients (`apply`, `show`, the HTTP API) as an
//! operator uses them: the real binary, a scratch shared-memory directory and instance per test,
//! and no data plane (that lives in the root package; its end-to-end tests drive both). Without a
//! data plane every publish stays pending, which is what these tests check around: what is
//! published (the segment's last published generation and the generation files), what is
//! refused, what the API and the CLI say.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_control::daemon::client::{ApiClient, ClientError};
use switchyard_control::daemon::view::{PublishStatus, StateView};
use switchyard_table::shm::{generation_path_in, Segment};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-control");
const INSTANCE: &str = "t";
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

/// `POLICY` with a second backend.
fn two_backends() -> String {
    format!("{POLICY}      - {{ address: 192.0.2.11, weight: 50 }}\n")
}

/// `POLICY` with two errors: no services, and a weight out of range (line 9).
const BROKEN: &str = "\
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
services: []
pools:
  echo:
    backends:
      - { address: 192.0.2.10, weight: 70000 }
";

/// A scratch directory with `shm/` for the segment and a policy file.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("swyd-daemon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shm")).unwrap();
        Self { dir }
    }

    fn shm(&self) -> PathBuf {
        self.dir.join("shm")
    }

    fn policy(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    fn write_policy(&self, text: &str) {
        write_file(&self.policy(), text);
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        write_file(&path, text);
        path
    }

    fn last_published(&self) -> u64 {
        Segment::open_or_create_in(&self.shm(), INSTANCE)
            .unwrap()
            .control_status()
            .last_published
    }

    fn generation_file(&self, n: u64) -> PathBuf {
        generation_path_in(&self.shm(), INSTANCE, n)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("SWITCHYARD_SHM_DIR", self.shm())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// Starts `run` on a free port; returns once the API listens.
    fn start(&self, extra: &[&str]) -> Daemon {
        let mut child = self
            .command()
            .args(["run", "--policy"])
            .arg(self.policy())
            .args(["--instance", INSTANCE, "--listen", "127.0.0.1:0"])
            .args(extra)
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
            api: String::new(),
            token_file: self.token_file(),
        };
        let marker = "API listening on http://";
        assert!(
            daemon.wait_log(marker),
            "daemon did not start:\n{}",
            daemon.log()
        );
        let log = daemon.log();
        let rest = &log[log.find(marker).unwrap() + marker.len()..];
        daemon.api = rest.split_whitespace().next().unwrap().to_owned();
        daemon
    }

    /// The daemon's default token file: `<shm>/switchyard-t.token`.
    fn token_file(&self) -> PathBuf {
        self.shm().join(format!("switchyard-{INSTANCE}.token"))
    }

    /// Runs a client subcommand to completion, for the test's instance (so it finds the
    /// daemon's token file).
    fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .args(["--instance", INSTANCE])
            .output()
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_file(path: &Path, text: &str) {
    // Through a rename, as editors do, so the daemon never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running daemon; killed if a test fails before stopping it.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    api: String,
    token_file: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str) -> bool {
        wait_until(|| self.log().contains(needle))
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.api, Duration::from_secs(30)).with_token_file(&self.token_file)
    }

    fn state(&self) -> StateView {
        self.client().state().unwrap()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then waits for the exit.
    fn stop(self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `signal`, then waits for the exit.
    fn stop_with(mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < WAIT,
                "daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn invalid_policy_at_start_exits_1_with_every_error() {
    let s = Scratch::new("start-invalid");
    s.write_policy(BROKEN);
    let out = s
        .command()
        .args(["run", "--policy"])
        .arg(s.policy())
        .args(["--instance", INSTANCE, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let file = s.policy().display().to_string();
    assert!(
        err.contains(&format!("{file}:5:11: services: no services are defined")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:9:40: pools.echo.backends[0].weight: weight 70000 is out of range"
        )),
        "{err}"
    );
    assert!(err.contains("policy rejected, 3 errors"), "{err}");
    assert!(!s.generation_file(1).exists(), "nothing may be published");
}

#[test]
fn publishes_at_start_and_show_reports_pending_without_a_data_plane() {
    let s = Scratch::new("show");
    s.write_policy(POLICY);
    let daemon = s.start(&[]);
    assert!(daemon
        .log()
        .contains("no data plane attached to instance `t`"));
    assert_eq!(s.last_published(), 1);
    assert!(s.generation_file(1).exists());

    let out = s.run(&["show", "--api", &daemon.api]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("generation 1 pending"), "{shown}");
    assert!(
        shown.contains("data plane: not running (never attached)"),
        "{shown}"
    );
    assert!(
        shown.contains("echo     203.0.113.10  80     tcp    * → echo"),
        "{shown}"
    );
    let backend = shown
        .lines()
        .find(|l| l.contains("192.0.2.10"))
        .expect("backend row");
    assert!(backend.starts_with("echo  maglev (65537)  none"), "{shown}");
    assert!(backend.ends_with("1   100     100        up"), "{shown}");

    let out = s.run(&["show", "--api", &daemon.api, "--json"]);
    assert!(out.status.success());
    let state: StateView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state.instance, INSTANCE);
    assert_eq!(state.generation.current, 1);
    assert_eq!(state.generation.published, 1);
    assert_eq!(state.generation.live, 0);
    assert_eq!(state.generation.status, PublishStatus::Pending);
    assert!(!state.dataplane.running);
    assert_eq!(state.pools[0].backends[0].id, 1);
    assert_eq!(state.services[0].vip, "203.0.113.10");

    assert!(daemon.stop().success());
}

#[test]
fn apply_of_an_invalid_file_exits_1_and_publishes_nothing() {
    let s = Scratch::new("apply-invalid");
    s.write_policy(POLICY);
    let daemon = s.start(&[]);
    let broken = s.file("broken.yaml", BROKEN);
    let out = s.run(&["apply", "--api", &daemon.api, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "FILE is required");

    let out = s.run(&[
        "apply",
        broken.to_str().unwrap(),
        "--api",
        &daemon.api,
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:9:40: ", broken.display())),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert_eq!(s.last_published(), 1);
    assert_eq!(daemon.state().generation.current, 1);
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), POLICY);

    // The API refuses it too, with every error line under the given name.
    let err = daemon
        .client()
        .apply(BROKEN, "mine.yaml", false, Duration::ZERO)
        .unwrap_err();
    match err {
        ClientError::Api { status, error } => {
            assert_eq!(status, 422);
            assert_eq!(error.errors.len(), 3, "{error:?}");
            assert!(error.errors[0].starts_with("mine.yaml:5:11: "), "{error:?}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(s.last_published(), 1);
    assert!(daemon.stop().success());
}

#[test]
fn dry_run_shows_the_diff_and_apply_publishes_and_saves() {
    let s = Scratch::new("apply");
    s.write_policy(POLICY);
    let daemon = s.start(&[]);
    let next = two_backends();

    let preview = daemon
        .client()
        .apply(&next, "next.yaml", true, Duration::ZERO)
        .unwrap();
    assert!(preview.dry_run && preview.changed);
    assert_eq!(preview.generation, 2);
    assert!(
        preview.diff.starts_with("generation 1 -> 2: 2 changes\n"),
        "{}",
        preview.diff
    );
    assert!(
        preview
            .diff
            .contains("+ backend echo 192.0.2.11 (id 2, weight 50, healthy)"),
        "{}",
        preview.diff
    );
    assert!(preview.diff.contains("~ pool echo: "), "{}", preview.diff);
    assert_eq!(s.last_published(), 1, "a dry run publishes nothing");

    // Non-interactive (stdin is not a terminal): applies without asking.
    let file = s.file("next.yaml", &next);
    let out = s.run(&[
        "apply",
        file.to_str().unwrap(),
        "--api",
        &daemon.api,
        "--wait",
        "200ms",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with("generation 1 -> 2: 2 changes\n"),
        "{printed}"
    );
    assert!(
        printed.contains("generation 2 published; not live on every worker"),
        "{printed}"
    );
    assert_eq!(s.last_published(), 2);
    assert!(s.generation_file(2).exists());
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), next, "saved");
    let state = daemon.state();
    assert_eq!(state.generation.current, 2);
    assert_eq!(state.counters.publishes, 2);
    let ids: Vec<(String, u32)> = state.pools[0]
        .backends
        .iter()
        .map(|b| (b.address.clone(), b.id))
        .collect();
    assert_eq!(ids, [("192.0.2.10".into(), 1), ("192.0.2.11".into(), 2)]);

    // Same tables, other text (a comment): saved, nothing published.
    let commented = format!("# reviewed\n{next}");
    let same = s.file("same.yaml", &commented);
    let out = s.run(&["apply", same.to_str().unwrap(), "--api", &daemon.api]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with("generation 2: no changes to the tables\n"),
        "{printed}"
    );
    assert!(
        printed.contains("the tables are unchanged, generation 2 stays"),
        "{printed}"
    );
    assert_eq!(s.last_published(), 2);
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), commented);
    // The daemon wrote the file itself: not a change to reload.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !daemon.log().contains("reloading (file changed)"),
        "{}",
        daemon.log()
    );
    assert!(daemon.stop().success());
}

#[test]
fn sighup_with_a_broken_file_keeps_the_previous_policy() {
    let s = Scratch::new("sighup");
    s.write_policy(POLICY);
    let daemon = s.start(&["--watch-interval-ms", "0"]);
    s.write_policy(BROKEN);
    daemon.signal("HUP");
    assert!(
        daemon.wait_log("policy rejected, 3 errors; nothing changed, generation 1 stays"),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let file = s.policy().display().to_string();
    assert!(log.contains(&format!("{file}:5:11: services: ")), "{log}");
    assert!(
        log.contains(&format!("{file}:9:40: pools.echo.backends[0].weight")),
        "{log}"
    );
    assert_eq!(s.last_published(), 1);
    let state = daemon.state();
    assert_eq!(state.generation.current, 1);
    assert_eq!(state.counters.reload_failures, 1);
    assert_eq!(state.pools[0].backends[0].weight, 100);

    s.write_policy(&two_backends());
    daemon.signal("HUP");
    assert!(wait_until(|| s.last_published() == 2), "{}", daemon.log());
    assert_eq!(daemon.state().pools[0].backends.len(), 2);
    assert!(daemon.stop_with("INT").success());
}

#[test]
fn a_changed_file_is_published_and_an_unchanged_one_is_not() {
    let s = Scratch::new("watch");
    s.write_policy(POLICY);
    let daemon = s.start(&["--watch-interval-ms", "50"]);
    s.write_policy(&two_backends());
    assert!(wait_until(|| s.last_published() == 2), "{}", daemon.log());
    assert!(s.generation_file(2).exists());
    assert!(daemon.log().contains("reloading (file changed)"));

    // Whitespace only: reloaded, same tables, nothing published.
    s.write_policy(&format!("{}\n\n", two_backends()));
    assert!(
        daemon.wait_log("the tables are unchanged; generation 2 stays"),
        "{}",
        daemon.log()
    );
    // Broken: logged, nothing published.
    s.write_policy(BROKEN);
    assert!(daemon.wait_log("nothing changed, generation 2 stays"));
    assert_eq!(s.last_published(), 2);
    assert!(daemon.stop().success());
}

#[test]
fn a_restarted_daemon_republishes_only_changes_and_numbers_on() {
    let s = Scratch::new("restart");
    s.write_policy(&two_backends());
    let daemon = s.start(&[]);
    assert_eq!(s.last_published(), 1);
    let status = daemon.stop();
    assert!(status.success(), "{status:?}");

    // Same policy: nothing to publish, no connection touched.
    let daemon = s.start(&[]);
    assert!(
        daemon.wait_log("compiles to exactly the tables of generation 1 (last published)"),
        "{}",
        daemon.log()
    );
    assert!(daemon
        .log()
        .contains("recovered 2 backend ids from generation 1"));
    assert_eq!(s.last_published(), 1);
    assert_eq!(daemon.state().generation.current, 1);
    assert!(daemon.stop().success());

    // A changed policy: numbered after what the segment has seen; ids recovered, so the
    // backend that stays keeps its id and the new one gets a fresh id.
    let changed = two_backends().replace("192.0.2.10 }", "192.0.2.12 }");
    s.write_policy(&changed);
    let daemon = s.start(&[]);
    assert_eq!(s.last_published(), 2);
    let state = daemon.state();
    assert_eq!(state.generation.current, 2);
    let ids: Vec<(String, u32)> = state.pools[0]
        .backends
        .iter()
        .map(|b| (b.address.clone(), b.id))
        .collect();
    assert_eq!(ids, [("192.0.2.12".into(), 3), ("192.0.2.11".into(), 2)]);

    // One control plane per instance.
    let out = s
        .command()
        .args(["run", "--policy"])
        .arg(s.policy())
        .args(["--instance", INSTANCE, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("another control plane is attached"),
        "{}",
        text(&out.stderr)
    );
    assert!(daemon.stop().success());
}

#[test]
fn metrics_are_prometheus_text() {
    let s = Scratch::new("metrics");
    s.write_policy(POLICY);
    let daemon = s.start(&[]);
    let body = daemon.client().metrics().unwrap();
    for line in [
        "# TYPE switchyard_control_publishes_total counter\nswitchyard_control_publishes_total 1\n",
        "switchyard_control_published_generation 1\n",
        "switchyard_control_live_generation 0\n",
        "switchyard_control_publish_pending 1\n",
        "switchyard_dataplane_up 0\n",
    ] {
        assert!(body.contains(line), "{line:?} missing from\n{body}");
    }
    // Every sample line: a name, optional labels, a number.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| body.contains(&format!("# TYPE {base} summary")))
            .unwrap_or(name);
        assert!(body.contains(&format!("# TYPE {family} ")), "{line}");
    }
    // promtool ships in Debian's `prometheus` package; ci/setup installs it, and a missing
    // promtool fails the test (tests/metrics_promtool.rs checks a page with a data plane too).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}\n{body}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        Err(e) => panic!("promtool not available ({e}): ci/setup installs Debian's prometheus"),
    }
    assert!(daemon.stop().success());
}

#[test]
fn clients_say_clearly_when_no_daemon_runs() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let s = Scratch::new("no-daemon");
    let out = s.run(&["show", "--api", &api]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "no switchyard-control daemon at {api}: start `switchyard-control run --policy FILE`"
        )
    );
    let file = s.file("p.yaml", POLICY);
    let out = s.run(&["apply", file.to_str().unwrap(), "--api", &api]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("no switchyard-control daemon at "));
}

/// Issue 12, item 5: a broken policy file shows in the API and `show` (file, line, message,
/// since when), and a restarted daemon runs the last known good policy instead of refusing to
/// start — saying so loudly.
#[test]
fn a_broken_policy_file_shows_and_a_restart_runs_the_last_known_good_policy() {
    let s = Scratch::new("lastgood");
    s.write_policy(&two_backends());
    let daemon = s.start(&["--watch-interval-ms", "0"]);
    assert!(daemon.state().policy_error.is_none());
    let copy = s.shm().join(format!("switchyard-{INSTANCE}.policy.yaml"));
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), two_backends());

    s.write_policy(BROKEN);
    daemon.signal("HUP");
    assert!(wait_until(|| daemon.state().policy_error.is_some()));
    let state = daemon.state();
    let e = state.policy_error.unwrap();
    let file = s.policy().display().to_string();
    assert_eq!(e.file, file);
    assert_eq!((e.line, e.column), (Some(5), Some(11)));
    assert!(e.message.starts_with("services: "), "{e:?}");
    assert_eq!(e.errors.len(), 3, "{e:?}");
    assert!(e.errors[2].starts_with(&format!("{file}:9:40: pools.echo.backends[0].weight")));
    assert!(e.since_unix > 0 && e.running_last_good.is_none());
    let show = s.run(&["show", "--api", &daemon.api]);
    let out = text(&show.stdout);
    assert!(
        out.contains("POLICY FILE BROKEN for ")
            && out.contains(&format!("{file}:5:11: services: ")),
        "{out}"
    );
    assert!(out.contains("nothing changed: generation 1 stays"), "{out}");
    let metrics = daemon.client().metrics().unwrap();
    assert!(
        metrics.contains("switchyard_control_policy_file_error 1\n"),
        "{metrics}"
    );
    // The copy still holds the last good policy.
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), two_backends());
    assert!(daemon.stop().success());

    // A restart with the file still broken: runs the copy, publishes nothing new, says so.
    let daemon = s.start(&["--watch-interval-ms", "50"]);
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "STARTING FROM THE LAST KNOWN GOOD POLICY {}",
            copy.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{file}:9:40: pools.echo.backends[0].weight")),
        "{log}"
    );
    assert!(
        log.contains("compiles to exactly the tables of generation 1"),
        "{log}"
    );
    assert_eq!(s.last_published(), 1);
    let state = daemon.state();
    assert_eq!(state.pools[0].backends.len(), 2);
    let e = state.policy_error.expect("the broken file is reported");
    assert_eq!(
        e.running_last_good.as_deref(),
        Some(&*copy.display().to_string())
    );
    let out = text(&s.run(&["show", "--api", &daemon.api]).stdout);
    assert!(out.contains("running the last known good policy"), "{out}");
    let metrics = daemon.client().metrics().unwrap();
    assert!(
        metrics.contains("switchyard_control_running_last_good 1\n"),
        "{metrics}"
    );

    // Fixing the file clears the error.
    s.write_policy(POLICY);
    assert!(wait_until(|| s.last_published() == 2), "{}", daemon.log());
    assert!(daemon.state().policy_error.is_none());
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), POLICY);
    assert!(daemon.stop().success());

    // Without a copy, a broken file still stops the start.
    std::fs::remove_file(&copy).unwrap();
    s.write_policy(BROKEN);
    let out = s
        .command()
        .args(["run", "--policy"])
        .arg(s.policy())
        .args(["--instance", INSTANCE, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

/// Issue 12, item 14: a policy path that is a FIFO is refused at once (SIGHUP and the file
/// watcher alike); the API keeps answering.
#[test]
fn a_fifo_policy_never_stalls_the_daemon_or_its_api() {
    let s = Scratch::new("fifo");
    s.write_policy(POLICY);
    let daemon = s.start(&["--watch-interval-ms", "50"]);
    std::fs::remove_file(s.policy()).unwrap();
    let status = Command::new("mkfifo").arg(s.policy()).status().unwrap();
    assert!(status.success());
    daemon.signal("HUP");
    let client = ApiClient::new(&daemon.api, Duration::from_secs(2));
    let started = Instant::now();
    assert!(wait_until(|| client
        .state()
        .is_ok_and(|st| st.policy_error.is_some())));
    assert!(started.elapsed() < Duration::from_secs(5));
    let e = client.state().unwrap().policy_error.unwrap();
    assert!(e.message.contains("is a FIFO, not a regular file"), "{e:?}");
    // The watcher polls the FIFO too (50 ms); the API and metrics keep answering.
    for _ in 0..10 {
        let t = Instant::now();
        client.state().unwrap();
        client.metrics().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(60));
    }
    assert_eq!(daemon.state().generation.current, 1);
    assert!(daemon.log().contains("is a FIFO"), "{}", daemon.log());
    // A writer never comes; the daemon still stops.
    assert!(daemon.stop().success());
}

/// Unmounts a tmpfs on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 12, item 15: with the shared-memory directory full, `apply` fails and the policy file
/// keeps what it had, so a later SIGHUP applies nothing silently. Needs root (a tmpfs mount).
#[test]
fn an_apply_that_cannot_publish_leaves_the_policy_file_alone() {
    let s = Scratch::new("enospc");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(s.shm())
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (ci/test runs as root)"
    );
    let _mount = Mount(s.shm());
    s.write_policy(POLICY);
    let daemon = s.start(&["--watch-interval-ms", "50"]);
    assert_eq!(s.last_published(), 1);
    // Fill the directory.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=2000"])
        .arg(format!("of={}", s.shm().join("filler").display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let new = s.file("new.yaml", &two_backends());
    let out = s.run(&[
        "apply",
        "--yes",
        "--api",
        &daemon.api,
        new.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("publishing failed") && err.contains("nothing changed"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), POLICY);
    assert_eq!(s.last_published(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(&s.dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left: {leftovers:?}");

    daemon.signal("HUP");
    assert!(
        daemon.wait_log("the tables are unchanged; generation 1 stays"),
        "{}",
        daemon.log()
    );
    assert_eq!(s.last_published(), 1);
    assert_eq!(daemon.state().pools[0].backends.len(), 1);

    // Room again: the same apply goes through and is saved.
    std::fs::remove_file(s.shm().join("filler")).unwrap();
    let out = s.run(&[
        "apply",
        "--yes",
        "--api",
        &daemon.api,
        new.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.last_published(), 2);
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), two_backends());
    assert!(daemon.stop().success());
}

/// `drain`, `undrain`, `disable`, `enable`: a targeted edit of the policy file (comments kept),
/// published like `apply`, and clear refusals.
#[test]
fn backend_commands_edit_the_policy_file_and_refuse_clearly() {
    let s = Scratch::new("backend-cmd");
    let policy =
        format!("# keep me\n{POLICY}      - address: 192.0.2.11   # second\n        weight: 50\n");
    s.write_policy(&policy);
    let daemon = s.start(&["--watch-interval-ms", "50"]);
    let api = daemon.api.clone();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--api", &api]);
        s.run(&all)
    };

    let out = run(&["disable", "192.0.2.11", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("192.0.2.11") && stdout.contains("generation 2 published"),
        "{stdout}"
    );
    let file = std::fs::read_to_string(s.policy()).unwrap();
    assert_eq!(
        file,
        policy.replace("# second\n", "# second\n        state: disabled\n")
    );
    assert_eq!(s.last_published(), 2);
    let state = daemon.state();
    let b = &state.pools[0].backends[1];
    assert_eq!((b.state.as_str(), b.healthy), ("disabled", false));
    let show = text(&run(&["show"]).stdout);
    assert!(show.contains("disabled"), "{show}");
    // The daemon wrote the file itself: no reload follows.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!daemon.log().contains("reloading (file changed)"));

    // Again: nothing to do.
    let out = run(&["disable", "echo/192.0.2.11", "--yes"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("is already disabled"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(s.last_published(), 2);

    let out = run(&["enable", "192.0.2.11", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), policy);

    // Refusals: unknown, unknown pool, a file that does not load; nothing changes.
    let out = run(&["drain", "192.0.2.99", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "no backend `192.0.2.99` in the policy; backends: echo/192.0.2.10, echo/192.0.2.11"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["drain", "other/192.0.2.10", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    s.write_policy(BROKEN);
    assert!(wait_until(|| daemon.state().policy_error.is_some()));
    let out = run(&["drain", "192.0.2.10", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the policy file does not load; fix it first"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(s.policy()).unwrap(), BROKEN);
    assert_eq!(s.last_published(), 3);
    assert!(daemon.stop().success());
}
