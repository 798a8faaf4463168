//! VIP announcements through BIRD (`docs/DEPLOY-ECMP.md`): a node announces each VIP while it
//! can serve it and withdraws it when it cannot, so the routers' ECMP only sends a VIP's
//! traffic to nodes that forward it.
//!
//! A VIP is announced when all of these hold:
//! - the data plane holds its role on the segment, beat within [`HEARTBEAT_LIMIT`] and runs a
//!   generation;
//! - at least one service on the VIP has, on its routes (pools and fallbacks), a backend that
//!   is healthy with a weight above 0 (`up`);
//! - the node is not drained (`switchyard-control node drain`: the marker file
//!   [`drain_marker_path`] exists).
//!
//! Never a BGP speaker: the announcer writes an include file of two static protocols
//! (`switchyard4`, `switchyard6`: one blackhole /32 or /128 per announced VIP) that the node's
//! `bird.conf` includes and exports to its BGP sessions, then runs `birdc -s SOCKET configure`.
//! The file is written to a temporary file and renamed over the old one (BIRD never reads half
//! a file), only when the set of routes changes; a failed `configure` is retried every
//! [`RETRY`]. The announcer reads the controller's state over the same channel as the API,
//! every [`INTERVAL`], so it sees what `show` sees. Its own state is in
//! [`status_path`] for `node status` and `node drain`.
//!
//! Stopping the control plane leaves the last file in place: the data plane keeps forwarding
//! and the VIPs stay announced (as with `show`, nobody watches the data plane meanwhile: run
//! the control plane under a supervisor that restarts it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::controller::Request;
use super::view::StateView;

/// How often the announcer looks at the controller's state.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// A data plane whose heartbeat is older than this is not live (hung, or stopped by a
/// debugger). A dead one is seen at once (its role lock goes with the process); this only
/// catches a hung one, and is long enough that a busy host's scheduling hiccup withdraws nothing.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_millis(3000);
/// How soon a failed `birdc configure` is tried again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Longest a `birdc configure` may take before it is killed and counted as failed.
pub const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// `switchyard-control run --bird-socket … --bird-routes …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// BIRD's control socket (`bird -s`).
    pub socket: PathBuf,
    /// The include file the announcer owns.
    pub routes_file: PathBuf,
    /// A standard community (ASN, value) added to every announced route.
    pub community: Option<(u16, u16)>,
    /// The `birdc` program.
    pub birdc: PathBuf,
}

impl Settings {
    /// Checks what can be checked before the daemon starts: the include file's directory
    /// exists, `birdc` runs.
    ///
    /// # Errors
    /// A line naming the setting and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let dir = self
            .routes_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "--bird-routes {}: directory {} does not exist",
                self.routes_file.display(),
                dir.display()
            ));
        }
        if self.routes_file.is_dir() {
            return Err(format!(
                "--bird-routes {}: is a directory, expected a file",
                self.routes_file.display()
            ));
        }
        match Command::new(&self.birdc)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => Ok(()),
            Err(e) => Err(format!(
                "--birdc {}: cannot run it ({e}); install BIRD 2 (Debian bird2)",
                self.birdc.display()
            )),
        }
    }
}

/// The `run` flags of the announcer.
#[derive(Debug, Clone, clap::Args)]
pub struct AnnounceArgs {
    /// Announce the VIPs this node can serve through BIRD: its control socket (`bird -s`).
    /// Needs --bird-routes (docs/DEPLOY-ECMP.md).
    #[arg(long, value_name = "SOCKET", requires = "bird_routes")]
    pub bird_socket: Option<PathBuf>,
    /// The BIRD include file of static routes the announcer owns (replaced atomically, then
    /// `birdc configure`).
    #[arg(long, value_name = "FILE", requires = "bird_socket")]
    pub bird_routes: Option<PathBuf>,
    /// A standard BGP community ASN:VALUE added to every announced VIP route.
    #[arg(long, value_name = "ASN:VALUE", requires = "bird_socket", value_parser = parse_community)]
    pub bgp_community: Option<(u16, u16)>,
    /// The birdc program.
    #[arg(long, value_name = "PATH", default_value = "birdc")]
    pub birdc: PathBuf,
}

impl AnnounceArgs {
    /// `None` without `--bird-socket`.
    #[must_use]
    pub fn settings(self) -> Option<Settings> {
        Some(Settings {
            socket: self.bird_socket?,
            routes_file: self.bird_routes?,
            community: self.bgp_community,
            birdc: self.birdc,
        })
    }
}

/// Parses `--bgp-community ASN:VALUE` (both 0-65535).
///
/// # Errors
/// What was expected.
pub fn parse_community(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?}: expected a standard community ASN:VALUE, both 0-65535");
    let (a, v) = text.split_once(':').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, v.parse().map_err(|_| bad())?))
}

/// Why a VIP is not announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withdrawn {
    /// No data plane attached, its heartbeat is old, or it runs no generation.
    DataplaneNotLive,
    /// `switchyard-control node drain`.
    NodeDrained,
    /// No service on the VIP has an `up` backend on any of its routes.
    NoHealthyBackend,
}

impl Withdrawn {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DataplaneNotLive => "data plane not live",
            Self::NodeDrained => "node drained",
            Self::NoHealthyBackend => "no healthy backend",
        }
    }
}

/// Per VIP: `Ok(())` announce, `Err(why)` withdraw.
pub type Decisions = BTreeMap<IpAddr, Result<(), Withdrawn>>;

/// What this node should announce now, from the controller's state.
#[must_use]
pub fn decide(state: &StateView, drained: bool) -> Decisions {
    let d = &state.dataplane;
    let live = d.running
        && d.live_generation != 0
        && d.heartbeat_age_ms
            .is_some_and(|age| u128::from(age) < HEARTBEAT_LIMIT.as_millis());
    let serving = |pool: &str| {
        state.pools.iter().any(|p| {
            p.name == pool
                && p.backends
                    .iter()
                    .any(|b| b.healthy && b.effective_weight > 0 && b.state == "up")
        })
    };
    let mut out = Decisions::new();
    for service in &state.services {
        let Ok(vip) = service.vip.parse::<IpAddr>() else {
            continue;
        };
        let healthy = service
            .routes
            .iter()
            .any(|r| serving(&r.pool) || r.fallback.iter().any(|f| serving(f)))
            || service.canary.as_ref().is_some_and(|c| serving(&c.pool));
        let verdict = if !live {
            Err(Withdrawn::DataplaneNotLive)
        } else if drained {
            Err(Withdrawn::NodeDrained)
        } else if healthy {
            Ok(())
        } else {
            Err(Withdrawn::NoHealthyBackend)
        };
        // Several services (ports) on one VIP: announced if any of them can serve.
        let entry = out.entry(vip).or_insert(verdict);
        if verdict.is_ok() {
            *entry = Ok(());
        }
    }
    out
}

/// The include file for `decisions`: byte for byte the same for the same set of routes.
#[must_use]
pub fn render(decisions: &Decisions, community: Option<(u16, u16)>, instance: &str) -> String {
    let attrs = community.map_or_else(String::new, |(a, v)| {
        format!(" {{ bgp_community.add(({a},{v})); }}")
    });
    let mut out = format!(
        "# Generated by switchyard-control (instance {instance}): the VIPs this node can serve.\n\
         # Included from bird.conf; replaced atomically, then `birdc configure`. Do not edit.\n"
    );
    for (proto, channel, v6) in [
        ("switchyard4", "ipv4", false),
        ("switchyard6", "ipv6", true),
    ] {
        let _ = writeln!(out, "protocol static {proto} {{\n  {channel};");
        for (vip, verdict) in decisions {
            if verdict.is_ok() && vip.is_ipv6() == v6 {
                let len = if v6 { 128 } else { 32 };
                let _ = writeln!(out, "  route {vip}/{len} blackhole{attrs};");
            }
        }
        out.push_str("}\n");
    }
    out
}

/// `<shm-dir>/switchyard-<instance>.node-drained`: present while the node is drained.
#[must_use]
pub fn drain_marker_path(shm_dir: &Path, instance: &str) -> PathBuf {
    shm_dir.join(format!("switchyard-{instance}.node-drained"))
}

/// `<shm-dir>/switchyard-<instance>.announce.json`: the announcer's last state ([`Status`]).
#[must_use]
pub fn status_path(shm_dir: &Path, instance: &str) -> PathBuf {
    shm_dir.join(format!("switchyard-{instance}.announce.json"))
}

/// One VIP in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipStatus {
    pub vip: String,
    pub announced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<Withdrawn>,
}

/// What the announcer last did, for `node status` and `node drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub drained: bool,
    /// The routes file BIRD was last configured with successfully equals the wanted one.
    pub in_sync: bool,
    pub vips: Vec<VipStatus>,
    pub routes_file: String,
    pub socket: String,
    /// The last `birdc configure` failure, if the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `birdc configure` runs that succeeded since the daemon started.
    pub configures: u64,
    /// When BIRD was last configured (Unix milliseconds).
    pub configured_at_ms: u64,
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename.
///
/// # Errors
/// The I/O error, with the path.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// `birdc -s SOCKET configure`, bounded by [`BIRDC_TIMEOUT`].
///
/// # Errors
/// birdc could not run, timed out, or BIRD refused the configuration (its message).
pub fn configure(settings: &Settings) -> Result<(), String> {
    let mut child = Command::new(&settings.birdc)
        .arg("-s")
        .arg(&settings.socket)
        .arg("configure")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", settings.birdc.display()))?;
    let deadline = Instant::now() + BIRDC_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "birdc configure: no answer within {BIRDC_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("birdc configure: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut out);
    }
    // BIRD answers "Reconfigured", "Reconfiguration in progress" or "... queueing new config";
    // a refused file gives its parse error and exit status 0 all the same.
    if status.success() && out.contains("Reconfigur") && !out.contains("error") {
        Ok(())
    } else {
        Err(format!(
            "birdc -s {} configure: {}",
            settings.socket.display(),
            out.trim().replace('\n', " / ")
        ))
    }
}

/// The announcer thread; stops when its [`Announcer::stop`] is called or the controller goes.
#[derive(Debug)]
pub struct Announcer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Worker {
    settings: Settings,
    instance: String,
    drain_marker: PathBuf,
    status_file: PathBuf,
    /// The text BIRD was last configured with.
    configured: Option<String>,
    next_try: Instant,
    status: Status,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Worker {
    fn step(&mut self, state: &StateView) {
        let drained = self.drain_marker.exists();
        let decisions = decide(state, drained);
        let text = render(&decisions, self.settings.community, &self.instance);
        let mut changed = drained != self.status.drained;
        self.status.drained = drained;
        let vips: Vec<VipStatus> = decisions
            .iter()
            .map(|(vip, v)| VipStatus {
                vip: vip.to_string(),
                announced: v.is_ok(),
                withdrawn: v.err(),
            })
            .collect();
        if vips != self.status.vips {
            for v in &vips {
                let was = self.status.vips.iter().find(|o| o.vip == v.vip);
                if was.is_none_or(|w| w.announced != v.announced) {
                    match v.withdrawn {
                        None => info!("BGP: announce {}", v.vip),
                        Some(why) => warn!("BGP: withdraw {} ({})", v.vip, why.as_str()),
                    }
                }
            }
            self.status.vips = vips;
            changed = true;
        }
        let due = self.configured.as_deref() != Some(text.as_str());
        if due && Instant::now() >= self.next_try {
            let result = write_atomically(&self.settings.routes_file, &text)
                .map_err(|e| e.to_string())
                .and_then(|()| configure(&self.settings));
            match result {
                Ok(()) => {
                    self.configured = Some(text.clone());
                    self.status.last_error = None;
                    self.status.configures += 1;
                    self.status.configured_at_ms = now_ms();
                }
                Err(e) => {
                    if self.status.last_error.as_deref() != Some(e.as_str()) {
                        warn!("BGP: {e}; retrying every {RETRY:?}");
                    }
                    self.status.last_error = Some(e);
                    self.next_try = Instant::now() + RETRY;
                }
            }
            changed = true;
        }
        let in_sync = self.configured.as_deref() == Some(text.as_str());
        if in_sync != self.status.in_sync {
            self.status.in_sync = in_sync;
            changed = true;
        }
        if changed {
            if let Ok(json) = serde_json::to_string_pretty(&self.status) {
                if let Err(e) = write_atomically(&self.status_file, &json) {
                    warn!("BGP: {e}");
                }
            }
        }
    }
}

impl Announcer {
    /// Starts the thread. It asks `controller` for the state every [`INTERVAL`].
    ///
    /// # Errors
    /// The thread could not start.
    pub fn spawn(
        settings: Settings,
        instance: &str,
        shm_dir: &Path,
        controller: Sender<Request>,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Status {
            drained: false,
            in_sync: false,
            vips: Vec::new(),
            routes_file: settings.routes_file.display().to_string(),
            socket: settings.socket.display().to_string(),
            last_error: None,
            configures: 0,
            configured_at_ms: 0,
        };
        let mut worker = Worker {
            settings,
            instance: instance.to_owned(),
            drain_marker: drain_marker_path(shm_dir, instance),
            status_file: status_path(shm_dir, instance),
            configured: None,
            next_try: Instant::now(),
            status,
        };
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("announce".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let (tx, rx) = oneshot::channel();
                    if controller.send(Request::State(tx)).is_err() {
                        break;
                    }
                    let Ok(state) = rx.blocking_recv() else { break };
                    worker.step(&state);
                    std::thread::sleep(INTERVAL);
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (the routes file stays as it is: see the module doc). It is not
    /// joined: it may wait on a state request the stopped controller will never answer, or on
    /// a `birdc configure` that finishes on its own; the process exits without it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread.take());
    }
}

/// Reads [`status_path`].
///
/// # Errors
/// The file is missing (no announcer ran) or unreadable.
pub fn read_status(shm_dir: &Path, instance: &str) -> Result<Status, String> {
    let path = status_path(shm_dir, instance);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (is switchyard-control run started with --bird-socket?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{self, BackendIds, BackendState, CompileInput};
    use crate::daemon::describe;
    use crate::daemon::view::{
        ControlCounters, DataplaneView, GenerationView, PublishStatus, StateView,
    };

    const POLICY: &str = "
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
    gateway: { ipv4: 192.0.2.254, mac: 02:00:00:00:00:fe }
services:
  - { name: a, vip: 203.0.113.10, ports: [80], routes: [{ pool: a }] }
  - { name: a-tls, vip: 203.0.113.10, ports: [443], routes: [{ pool: b }] }
  - { name: b, vip: 203.0.113.11, ports: [80], routes: [{ pool: b, fallback: [a] }] }
  - { name: c, vip: 2001:db8::c, ports: [80], routes: [{ pool: b }] }
pools:
  a:
    backends:
      - { address: 192.0.2.10 }
  b:
    backends:
      - { address: 192.0.2.20, state: disabled }
";

    fn state(policy_text: &str, live: bool, heartbeat_ms: u64) -> StateView {
        let policy = crate::policy::parse_str(policy_text, "test.yaml").expect("policy");
        let input = CompileInput {
            policy: &policy,
            generation: 7,
            state: &BackendState::new(),
        };
        let generation = compile::compile(&input, &mut BackendIds::new()).expect("compile");
        StateView {
            instance: "t".into(),
            policy_file: "test.yaml".into(),
            generation: GenerationView {
                current: 7,
                published: 7,
                live: if live { 7 } else { 0 },
                status: PublishStatus::Live,
                last_publish_to_live_ms: None,
                last_rejected: None,
                digest: describe::digest(&generation),
            },
            dataplane: DataplaneView {
                running: live,
                pid: 1,
                epoch: 1,
                heartbeat_age_ms: Some(heartbeat_ms),
                live_generation: if live { 7 } else { 0 },
                workers: vec![],
            },
            services: describe::services(&policy),
            pools: describe::pools(&policy, &generation),
            rollouts: vec![],
            counters: ControlCounters::default(),
            policy_error: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_vip_is_announced_while_a_route_of_one_of_its_services_has_an_up_backend() {
        let d = decide(&state(POLICY, true, 5), false);
        // 203.0.113.10: port 80 serves (pool a), port 443 does not (pool b disabled).
        assert_eq!(d[&ip("203.0.113.10")], Ok(()));
        // 203.0.113.11: pool b has nothing up, its fallback a does.
        assert_eq!(d[&ip("203.0.113.11")], Ok(()));
        assert_eq!(d[&ip("2001:db8::c")], Err(Withdrawn::NoHealthyBackend));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn everything_is_withdrawn_when_the_data_plane_is_not_live_or_the_node_drained() {
        for (live, beat, drained, why) in [
            (false, 5, false, Withdrawn::DataplaneNotLive),
            (true, 5_000, false, Withdrawn::DataplaneNotLive),
            (true, 5, true, Withdrawn::NodeDrained),
        ] {
            let d = decide(&state(POLICY, live, beat), drained);
            assert_eq!(d[&ip("203.0.113.10")], Err(why));
            assert_eq!(d[&ip("203.0.113.11")], Err(why));
            assert_eq!(
                d[&ip("2001:db8::c")],
                Err(Withdrawn::NoHealthyBackend).or(Err(why))
            );
        }
    }

    #[test]
    fn the_routes_file_lists_announced_vips_per_family_with_the_community() {
        let d = decide(&state(POLICY, true, 5), false);
        let text = render(&d, Some((65001, 70)), "t");
        assert!(text.contains(
            "protocol static switchyard4 {\n  ipv4;\n  route 203.0.113.10/32 blackhole { bgp_community.add((65001,70)); };\n  route 203.0.113.11/32 blackhole"
        ), "{text}");
        assert!(
            text.contains("protocol static switchyard6 {\n  ipv6;\n}\n"),
            "{text}"
        );
        assert_eq!(
            render(&d, Some((65001, 70)), "t"),
            text,
            "same set, same bytes"
        );
        let none = render(&decide(&state(POLICY, true, 5), true), None, "t");
        assert!(!none.contains("route "), "{none}");
    }

    #[test]
    fn communities_parse_or_say_what_was_expected() {
        assert_eq!(parse_community("65001:70"), Ok((65001, 70)));
        for bad in ["65001", "65536:1", "a:b", "1:2:3", ""] {
            assert!(
                parse_community(bad).unwrap_err().contains("ASN:VALUE"),
                "{bad}"
            );
        }
    }

    /// BIRD itself parses the file (`bird -p`), included from a config that exports it to BGP,
    /// in every shape: nothing announced, IPv4 and IPv6, with and without a community.
    #[test]
    fn bird_parses_the_routes_file() {
        let Ok(bird) = which("bird") else {
            panic!("bird is not installed: ci/setup installs bird2");
        };
        let dir = std::env::temp_dir().join(format!("sy-bird-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Removed however the test ends.
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _remove = Remove(dir.clone());
        let routes = dir.join("vips.conf");
        let conf = dir.join("bird.conf");
        std::fs::write(
            &conf,
            format!(
                "router id 10.0.0.1;\nprotocol device {{}}\ninclude \"{}\";\n\
                 protocol bgp up {{\n  local as 65001; neighbor 10.0.0.2 as 65000;\n  \
                 ipv4 {{ import none; export where proto = \"switchyard4\"; }};\n  \
                 ipv6 {{ import none; export where proto = \"switchyard6\"; }};\n}}\n",
                routes.display()
            ),
        )
        .unwrap();
        let up = decide(&state(POLICY, true, 5), false);
        let v6 = POLICY.replace("state: disabled", "weight: 100");
        let all = decide(&state(&v6, true, 5), false);
        assert_eq!(all[&ip("2001:db8::c")], Ok(()));
        let down = decide(&state(POLICY, false, 5), false);
        for (d, c) in [
            (&up, None),
            (&up, Some((65001, 1))),
            (&all, Some((1, 2))),
            (&down, None),
        ] {
            write_atomically(&routes, &render(d, c, "t")).unwrap();
            let out = Command::new(&bird)
                .arg("-p")
                .arg("-c")
                .arg(&conf)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bird -p refused:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&routes).unwrap()
            );
        }
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(())
    }
}
