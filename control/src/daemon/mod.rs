//! The control-plane daemon (`switchyard-control run`) and the subcommands that talk to it
//! (`apply`, `show`).
//!
//! `run` loads, validates and compiles the policy, publishes it to the data plane through the
//! shared-memory segment of its instance and waits until every worker runs it; then it keeps the
//! data plane current: it reloads on SIGHUP and when the policy file changes, republishes to a
//! restarted data plane, and serves a local HTTP API ([`api`]) for `apply`, `show` and
//! Prometheus; every change through it needs the bearer token of the instance's token file
//! ([`auth`]). A policy that fails to validate or compile is logged with every error and changes
//! nothing. A restarted daemon recovers the backend ids from the live generation and publishes
//! only when its compile differs from what is live, so restarting the control plane resets no
//! connection. See `docs/CONTROL.md` for the operator's view.
//!
//! Threads: the caller's thread runs the [`controller::Controller`] (the only code that touches
//! the policy and the segment); one thread runs the HTTP server; one waits for signals. They
//! talk through a channel of [`controller::Request`]s.

pub mod announce;
pub mod api;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod client;
pub mod controller;
pub mod describe;
pub mod emit;
pub mod inspect;
pub mod metrics;
pub mod node;
pub mod pcapng;
pub mod query;
pub mod show;
pub mod stats;
pub mod top;
pub mod view;
pub mod watch;

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::events::config::{self, DetectionConfig};
use crate::events::Events;
use crate::policy::Policy;

use self::api::ApiServer;
use self::controller::{Controller, Request};

/// Where the API listens unless `--listen` says otherwise, and where `apply` and `show` look.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";
/// How often the policy file is checked for changes.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long `run` waits at start for a running data plane to report the first generation live.
pub const DEFAULT_START_WAIT: Duration = Duration::from_secs(5);

/// What `switchyard-control run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    /// Shared-memory instance (`default` unless `--instance`).
    pub instance: String,
    /// Directory of the segment and generation files (`/dev/shm` or `$SWITCHYARD_SHM_DIR`).
    pub shm_dir: PathBuf,
    pub listen: SocketAddr,
    /// `--token-file`: where the API's bearer token lives. `None`: the default,
    /// `<shm_dir>/switchyard-<instance>.token` ([`auth::default_token_path`]), and the API may
    /// listen on loopback only.
    pub token_file: Option<PathBuf>,
    /// `None`: reload on SIGHUP only.
    pub watch_interval: Option<Duration>,
    pub start_wait: Duration,
    /// `--bird-socket` and `--bird-routes`: announce the VIPs through BIRD ([`announce`]).
    pub announce: Option<announce::Settings>,
    /// `--events FILE`: event sinks, privacy and detection ([`crate::events::config`]).
    /// `None`: no events are exported.
    pub events: Option<PathBuf>,
}

/// Logs to stderr, `info` and up unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// `2 services, 3 pools, 6 backends, 2 regions`.
#[must_use]
pub fn summary(policy: &Policy) -> String {
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    [
        count(policy.services.len(), "service", "services"),
        count(policy.pools.len(), "pool", "pools"),
        count(policy.backend_count(), "backend", "backends"),
        count(policy.regions.len(), "region", "regions"),
    ]
    .join(", ")
}

/// Turns SIGHUP into a reload and SIGINT / SIGTERM into a stop.
fn spawn_signals(controller: Sender<Request>) -> std::io::Result<signal_hook::iterator::Handle> {
    let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let request = match signal {
                    SIGHUP => Request::Reload,
                    SIGINT => Request::Stop { signal: "SIGINT" },
                    _ => Request::Stop { signal: "SIGTERM" },
                };
                if controller.send(request).is_err() {
                    break;
                }
            }
        })?;
    Ok(handle)
}

/// Runs the daemon until SIGINT or SIGTERM. Exit code 1 when it cannot start: a policy that does
/// not validate or compile, a segment it cannot attach, an address it cannot listen on.
#[must_use]
pub fn run(options: &RunOptions) -> ExitCode {
    init_logging();
    if !options.listen.ip().is_loopback() && options.token_file.is_none() {
        error!(
            "refusing to listen on {}: beyond loopback the API must be reached with a token the              operator chose where to keep; pass --token-file PATH (created with mode 0640 if              missing; every request, reads included, then needs it), or listen on 127.0.0.1",
            options.listen
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) = switchyard_table::shm::files::check_instance(&options.instance) {
        error!("{e}");
        return ExitCode::FAILURE;
    }
    // Read before anything is created: a bad events file changes nothing.
    let (events, detection) = match &options.events {
        None => (Events::disabled(), DetectionConfig::default()),
        Some(path) => {
            match config::load(path).and_then(|c| Ok((Events::start(&c)?, c.detection))) {
                Ok((events, detection)) => {
                    info!(
                        "events: {} sink{} from {}",
                        events.stats().len(),
                        if events.stats().len() == 1 { "" } else { "s" },
                        path.display()
                    );
                    (events, detection)
                }
                Err(e) => {
                    for line in e.lines() {
                        error!("{line}");
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    if let Some(Err(e)) = options.announce.as_ref().map(announce::Settings::validate) {
        error!("{e}");
        return ExitCode::FAILURE;
    }
    let token_file = options
        .token_file
        .clone()
        .unwrap_or_else(|| auth::default_token_path(&options.shm_dir, &options.instance));
    let token = match auth::load_or_create(&token_file) {
        Ok((token, created)) => {
            info!(
                "API token {} {}",
                if created { "created in" } else { "read from" },
                token_file.display()
            );
            token
        }
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Bound before anything is published, so a busy port changes nothing.
    let listener = match TcpListener::bind(options.listen) {
        Ok(l) => l,
        Err(e) => {
            error!("cannot listen on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    let guard = match listener.local_addr() {
        Ok(address) => auth::Guard::new(token, token_file, address).with_events(events.clone()),
        Err(e) => {
            error!("cannot listen on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    // Signals are caught from here on: a SIGTERM during the start waits for the start to end.
    let (tx, rx) = mpsc::channel();
    let signals = match spawn_signals(tx.clone()) {
        Ok(h) => h,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut controller = match Controller::start(options) {
        Ok(c) => c,
        Err(e) => {
            for line in e.to_string().lines() {
                error!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    controller.attach_events(events.clone(), detection);
    if let Err(e) = controller.attach_monitor(tx.clone()) {
        error!("cannot start health checks and load scraping: {e}");
        return ExitCode::FAILURE;
    }
    let announcer = match options.announce.clone() {
        Some(settings) => {
            info!(
                "announcing VIPs through BIRD: {} (socket {})",
                settings.routes_file.display(),
                settings.socket.display()
            );
            let shm = &options.shm_dir;
            match announce::Announcer::spawn(settings, &options.instance, shm, tx.clone()) {
                Ok(a) => Some(a),
                Err(e) => {
                    error!("cannot start the VIP announcer: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let server = match ApiServer::spawn(listener, tx, guard) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start the API server: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        "API listening on http://{} (GET /v1/state, POST /v1/apply, GET /metrics)",
        server.address()
    );
    if !server.address().ip().is_loopback() {
        warn!(
            "the API listens beyond loopback on {} without TLS: every request needs the token, \
             but the network can read it",
            server.address()
        );
    }
    controller.run(&rx);
    if let Some(a) = announcer {
        a.stop();
    }
    server.stop(Duration::from_secs(2));
    signals.close();
    events.flush(Duration::from_secs(2));
    ExitCode::SUCCESS
}
