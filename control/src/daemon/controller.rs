//! The daemon's core: it owns the policy, compiles it, publishes generations and follows them
//! until every worker runs them.
//!
//! One thread runs [`Controller::run`]: everything that changes the policy, the backend ids or
//! the segment happens there, in order — file changes, SIGHUP, `POST /v1/apply`, data-plane
//! restarts — so no lock is needed and two reloads can never interleave. The HTTP server and the
//! signal thread talk to it through [`Request`]s on a channel; it answers each on its own
//! one-shot channel. Between requests it wakes every [`TICK`] to drain the data plane's messages
//! (which also refreshes the control heartbeat), settle the current generation (live or
//! rejected), answer `apply` calls waiting for their generation, and poll the policy file.
//!
//! Invariants:
//! - `current` always holds a policy that compiled and the generation compiled from it, whose
//!   number is the one published (or, at start, the one found live or published and identical).
//! - A policy that fails to parse, validate or compile changes nothing: not `current`, not the
//!   backend ids, not the segment.
//! - A generation is published only when it forwards differently from `current` (compared byte
//!   for byte with the generation number aside), so a reload or a control-plane restart with the
//!   same policy resets no connection.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use switchyard_table::generation::{Generation, BACKEND_HEALTHY};
use switchyard_table::shm::{self, RejectReason, MAX_BLOB_SIZE, MAX_WORKERS, NO_GENERATION};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::compile::{
    self, BackendIds, BackendState, CompileError, CompileInput, GenerationDiff, MaglevCache,
};
use crate::events::config::DetectionConfig;
use crate::events::detect::Detector;
use crate::events::{Event, Events, Kind};
use crate::fleet::health::{BackendHealth, Health};
use crate::fleet::load::BackendLoad;
use crate::fleet::{self, Monitor, Observation};
use crate::policy::edit::{self, BackendSelector};
use crate::policy::{self, AdminState, Policy, PolicyErrors};
use crate::publish::{LiveReport, PublishError, Publisher, Rejection};
use crate::rollout::{
    PoolHealth, RolloutError, RolloutEvent, RolloutStatus, Rollouts, SignalReading,
};

use super::emit::{link_event, refused_event, rollout_event, weight_event};
use super::metrics::{self, ControlSample, DataplaneSample, LatencySample};
use super::query;
use super::view::{
    ApiError, ApplyResponse, CheckView, ControlCounters, DataplaneView, GenerationView, LoadView,
    PolicyErrorView, PublishStatus, RejectedView, StateView, WorkerView,
};
use super::watch::PolicyWatch;
use super::{describe, RunOptions};

/// How often the controller drains the data plane's messages when no request comes.
pub const TICK: Duration = Duration::from_millis(10);
/// How long a publish waits, blocking, for the data plane before it is followed tick by tick.
/// Swaps take microseconds; this catches them with an exact publish→live time.
const QUICK_WAIT: Duration = Duration::from_millis(200);
/// Latencies remembered per generation for `apply` answers.
const LATENCY_MEMORY: usize = 64;
/// Longest an `apply` may wait for its generation to go live.
pub const MAX_APPLY_WAIT: Duration = Duration::from_secs(120);

/// What the HTTP server and the signal thread ask of the controller.
#[derive(Debug)]
pub enum Request {
    State(oneshot::Sender<StateView>),
    Metrics(oneshot::Sender<String>),
    /// `GET /v1/stats`: traffic per service, pool, backend and port.
    Stats(oneshot::Sender<super::stats::StatsView>),
    Apply(
        ApplyRequest,
        oneshot::Sender<Result<ApplyResponse, ApiFailure>>,
    ),
    /// `POST /v1/backends/{drain|undrain|disable|enable}`: set a backend's `state:` in the
    /// policy file and apply it.
    BackendState(
        BackendStateRequest,
        oneshot::Sender<Result<ApplyResponse, ApiFailure>>,
    ),
    /// Reload the policy file (SIGHUP).
    Reload,
    /// A health probe or load scrape finished.
    Fleet(Observation),
    /// `GET /v1/rollouts`.
    Rollouts(oneshot::Sender<Vec<RolloutStatus>>),
    /// `POST /v1/rollouts/{service}/{pause|resume|abort}`.
    RolloutAction {
        service: String,
        action: RolloutAction,
        reply: oneshot::Sender<Result<Vec<RolloutStatus>, ApiFailure>>,
    },
    /// `GET /v1/trace`: what the workers do with a flow.
    Trace(
        query::TraceParams,
        oneshot::Sender<Result<query::TraceView, ApiFailure>>,
    ),
    /// `GET /v1/flows`: a sample of the workers' connection tables.
    Flows(
        query::FlowsParams,
        oneshot::Sender<Result<query::FlowsView, ApiFailure>>,
    ),
    /// `POST /v1/capture`: start a live capture (see [`super::capture`]).
    Capture(
        super::capture::CaptureParams,
        oneshot::Sender<Result<super::capture::CaptureStarted, ApiFailure>>,
    ),
    /// Stop (SIGINT, SIGTERM).
    Stop {
        signal: &'static str,
    },
}

/// What an operator asks of a phased canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
}

impl RolloutAction {
    /// From the API path segment.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            "abort" => Some(Self::Abort),
            _ => None,
        }
    }
}

/// `POST /v1/apply`.
#[derive(Debug)]
pub struct ApplyRequest {
    /// Policy YAML.
    pub policy: String,
    /// Name used for the policy in error lines (the client's file name).
    pub source: String,
    pub dry_run: bool,
    /// How long to wait for the generation to go live before answering `pending`.
    pub wait: Duration,
}

/// `POST /v1/backends/{action}?backend=[POOL/]BACKEND`: `drain`, `undrain`, `disable` or
/// `enable` one backend, recorded in the policy file.
#[derive(Debug)]
pub struct BackendStateRequest {
    pub selector: BackendSelector,
    pub to: AdminState,
    pub dry_run: bool,
    pub wait: Duration,
}

/// An API error: HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub body: ApiError,
}

impl ApiFailure {
    pub(crate) fn new(status: u16, error: impl Into<String>, errors: Vec<String>) -> Self {
        Self {
            status,
            body: ApiError {
                error: error.into(),
                errors,
            },
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug)]
pub enum StartError {
    Policy(PolicyErrors),
    Compile {
        file: PathBuf,
        error: CompileError,
    },
    /// The control segment cannot be opened, or another control plane holds it.
    Attach(PublishError),
    Publish(PublishError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Policy(errors) => {
                writeln!(f, "{errors}")?;
                write!(f, "{}", rejected_line(errors))
            }
            Self::Compile { file, error } => {
                write!(f, "{}: policy cannot be compiled: {error}", file.display())
            }
            Self::Attach(e) => write!(f, "cannot attach to the control segment: {e}"),
            Self::Publish(e) => write!(f, "cannot publish to the data plane: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

fn rejected_line(errors: &PolicyErrors) -> String {
    let n = errors.len();
    format!(
        "{}: policy rejected, {n} {}",
        errors.file(),
        if n == 1 { "error" } else { "errors" }
    )
}

/// A policy and the generation compiled from it.
#[derive(Debug, Clone)]
struct Applied {
    policy: Policy,
    generation: Generation,
    /// `generation` encoded (with its own number): what is compared against candidates.
    blob: Vec<u8>,
    /// [`describe::digest`] of `generation`, for `show`.
    digest: String,
}

impl Applied {
    fn new(policy: Policy, generation: Generation) -> Self {
        let blob = generation.encode();
        let digest = describe::digest(&generation);
        Self {
            policy,
            generation,
            blob,
            digest,
        }
    }

    fn number(&self) -> u64 {
        self.generation.generation
    }

    /// Whether `candidate` forwards exactly like this generation: the same bytes once it
    /// carries the same generation number.
    fn same_tables(&self, candidate: &Generation) -> bool {
        same_tables(candidate, &self.blob, self.number())
    }
}

fn same_tables(candidate: &Generation, blob: &[u8], number: u64) -> bool {
    let mut c = candidate.clone();
    c.generation = number;
    c.encode() == blob
}

/// A policy compiled against the current state, not yet adopted.
#[derive(Debug)]
struct Candidate {
    generation: Generation,
    ids: BackendIds,
    diff: GenerationDiff,
    changed: bool,
}

/// An `apply` waiting for its generation to go live.
#[derive(Debug)]
struct Waiter {
    generation: u64,
    deadline: Instant,
    response: ApplyResponse,
    reply: oneshot::Sender<Result<ApplyResponse, ApiFailure>>,
}

/// The daemon's state; see the module documentation.
#[derive(Debug)]
pub struct Controller {
    policy_path: PathBuf,
    instance: String,
    publisher: Publisher,
    ids: BackendIds,
    backend_state: BackendState,
    current: Applied,
    /// `current` went live or was refused: nothing more to wait for.
    settled: bool,
    /// The newest generation seen live with its policy: what the daemon goes back to when the
    /// data plane refuses a newer one.
    known_live: Option<Applied>,
    last_rejected: Option<Rejection>,
    latencies: BTreeMap<u64, Duration>,
    last_latency: Option<Duration>,
    latency_sum: Duration,
    latency_count: u64,
    counters: ControlCounters,
    watch: PolicyWatch,
    watch_interval: Option<Duration>,
    next_watch: Instant,
    waiters: Vec<Waiter>,
    dataplane_attached: bool,
    /// Runs the health checks and load scrapes; `None` until [`Controller::attach_monitor`].
    monitor: Option<Monitor>,
    /// Health-check state per (pool, backend address), for pools with `health`.
    health: BTreeMap<(String, IpAddr), BackendHealth>,
    /// Load state per (pool, backend address), for pools with `load`.
    loads: BTreeMap<(String, IpAddr), BackendLoad>,
    /// Pools with a load-driven change waiting for their `min_rebuild_interval`.
    load_pending: BTreeSet<String>,
    /// When each pool last had a load-driven change published.
    load_published_at: BTreeMap<String, Instant>,
    next_stale_check: Instant,
    /// Rollback-gate counters per (canary pool, backend), with when they were read.
    gate_readings: BTreeMap<(String, IpAddr), (f64, SystemTime)>,
    rollouts: Rollouts,
    /// The last Maglev table of each pool: a fleet change rebuilds only the pools it touches.
    maglev_cache: RefCell<MaglevCache>,
    /// Where rollout progress is kept across restarts.
    rollouts_path: PathBuf,
    next_rollout_tick: Instant,
    /// A generation the data plane refused although it had run it, to publish again. (A
    /// generation published that way that is refused in turn was never live: no loop.)
    refresh_due: Option<u64>,
    /// Where the last adopted policy's text is kept (see [`last_good_path`]).
    last_good_path: PathBuf,
    /// The policy file as last read does not load; `None` when it is what runs.
    policy_problem: Option<PolicyProblem>,
    /// Flow queries waiting for the workers' answers.
    queries: Vec<query::Pending>,
    next_query: u32,
    /// Where events go ([`crate::events`]); disabled until [`Controller::attach_events`].
    events: Events,
    /// Detection over the data plane's counters; `None` without events.
    detector: Option<Detector>,
    /// Why the next generation is published, for its `policy_applied` event.
    cause: Option<String>,
    /// Traffic totals from the workers' telemetry ([`super::stats`]), read every
    /// [`TRAFFIC_READ_EVERY`] and before each answer that shows them.
    traffic: super::stats::Traffic,
    /// Capture files of this instance, removed after their deadline if the CLI did not.
    captures: super::capture::Leftovers,
    next_capture_sweep: Instant,
    next_traffic_read: Instant,
}

/// How often the controller folds the workers' telemetry into its totals (a row handed to
/// another key is lost only if it changed hands twice within this time).
const TRAFFIC_READ_EVERY: Duration = Duration::from_millis(250);

/// How often phased canaries are checked for a step due or a gate tripped.
const ROLLOUT_TICK: Duration = Duration::from_millis(200);

/// How often backends are checked for metrics that went stale without a scrape result.
const STALE_CHECK: Duration = Duration::from_millis(100);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn log_lines(level: tracing::Level, text: &str) {
    for line in text.lines() {
        match level {
            tracing::Level::ERROR => error!("{line}"),
            tracing::Level::WARN => warn!("{line}"),
            _ => info!("{line}"),
        }
    }
}

/// Reads and decodes generation `number`'s blob file: the tables a restarted control plane
/// compares its own compile with. `None` (with a warning) when it is missing or bad.
fn read_generation(dir: &Path, instance: &str, number: u64) -> Option<(Generation, Vec<u8>)> {
    let path = shm::generation_path_in(dir, instance, number);
    let blob = match shm::read_generation_file(&path, MAX_BLOB_SIZE) {
        Ok(blob) => blob,
        Err(e) => {
            warn!(
                "cannot read generation {number} ({}): {e}; backend ids start afresh",
                path.display()
            );
            return None;
        }
    };
    match Generation::decode(&blob) {
        Ok(g) => Some((g, blob)),
        Err(e) => {
            warn!(
                "generation {number} ({}) does not decode: {e}; backend ids start afresh",
                path.display()
            );
            None
        }
    }
}

/// Policy text written beside its file, not yet in place: [`StagedPolicy::commit`] renames it
/// over the file; dropping it uncommitted removes it. Writing first and renaming only after the
/// publish succeeded means a full disk or a refused publish leaves the file as it was.
#[derive(Debug)]
struct StagedPolicy {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedPolicy {
    /// Writes `bytes` to a temporary file in the directory of `path` (of its target, for a
    /// symlink) with the file's permissions, synced to disk.
    fn write(path: &Path, bytes: &[u8]) -> io::Result<Self> {
        let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.switchyard-{}", std::process::id()));
        let staged = Self {
            tmp,
            target,
            committed: false,
        };
        let mut f = fs::File::create(&staged.tmp)?;
        f.write_all(bytes)?;
        if let Ok(meta) = fs::metadata(&staged.target) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        Ok(staged)
    }

    /// Renames the staged text over the file.
    fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.target)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedPolicy {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` over the policy file through a temporary file in the same directory and a
/// rename, keeping the file's permissions; a symlinked policy is written at its target.
fn save_policy(path: &Path, bytes: &[u8]) -> io::Result<()> {
    StagedPolicy::write(path, bytes)?.commit()
}

/// A policy file that does not load, as the daemon found it.
#[derive(Debug, Clone)]
struct PolicyProblem {
    file: String,
    line: Option<u64>,
    column: Option<u64>,
    message: String,
    errors: Vec<String>,
    since: SystemTime,
    running_last_good: Option<PathBuf>,
}

impl PolicyProblem {
    fn from_errors(errors: &PolicyErrors) -> Self {
        let first = errors.diagnostics().first();
        let position = first.and_then(|d| d.position);
        Self {
            file: errors.file().to_owned(),
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            message: first.map_or_else(String::new, |d| match &d.path {
                Some(path) => format!("{path}: {}", d.message),
                None => d.message.clone(),
            }),
            errors: errors.to_string().lines().map(str::to_owned).collect(),
            since: SystemTime::now(),
            running_last_good: None,
        }
    }

    fn from_compile(file: &Path, error: &CompileError) -> Self {
        let line = format!("{}: policy cannot be compiled: {error}", file.display());
        Self {
            file: file.display().to_string(),
            line: None,
            column: None,
            message: format!("policy cannot be compiled: {error}"),
            errors: vec![line],
            since: SystemTime::now(),
            running_last_good: None,
        }
    }

    fn view(&self) -> PolicyErrorView {
        PolicyErrorView {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            message: self.message.clone(),
            errors: self.errors.clone(),
            since_unix: self
                .since
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            since_ms: self
                .since
                .elapsed()
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            running_last_good: self
                .running_last_good
                .as_ref()
                .map(|p| p.display().to_string()),
        }
    }
}

/// `<shm-dir>/switchyard-<instance>.policy.yaml`: the text of the last policy the daemon
/// adopted, kept so a restart can run when the policy file is broken.
#[must_use]
pub fn last_good_path(shm_dir: &Path, instance: &str) -> PathBuf {
    shm_dir.join(format!("switchyard-{instance}.policy.yaml"))
}

/// Loads the policy file, or — when it is broken — the last known good copy, saying loudly
/// that it did. Returns the policy, its text and the problem with the file, if any.
fn load_at_start(
    options: &RunOptions,
) -> Result<(Policy, String, Option<PolicyProblem>), StartError> {
    let errors = match policy::load_text(&options.policy) {
        Ok((policy, text)) => return Ok((policy, text, None)),
        Err(errors) => errors,
    };
    let copy = last_good_path(&options.shm_dir, &options.instance);
    let text = match policy::read_bytes(&copy).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        // No copy (first start, or a reboot cleared it): refuse, as before.
        _ => return Err(StartError::Policy(errors)),
    };
    let label = copy.display().to_string();
    let policy = match policy::parse_str(&text, &label) {
        Ok(p) => policy::resolve_relative(p, &options.policy),
        Err(copy_errors) => {
            warn!("the last known good copy {label} does not load either: {copy_errors}");
            return Err(StartError::Policy(errors));
        }
    };
    log_lines(tracing::Level::ERROR, &errors.to_string());
    error!("{}", rejected_line(&errors));
    error!(
        "STARTING FROM THE LAST KNOWN GOOD POLICY {label}: {} is broken (above); fix it and          reload (SIGHUP), or `switchyard-control apply` a good one",
        options.policy.display()
    );
    let mut problem = PolicyProblem::from_errors(&errors);
    problem.running_last_good = Some(copy);
    Ok((policy, text, Some(problem)))
}

impl Controller {
    /// Loads, validates and compiles the policy, attaches to the segment and publishes — unless
    /// what is live (or, with no data plane, last published) already forwards exactly like the
    /// policy, as after a control-plane restart. Waits up to `options.start_wait` for a running
    /// data plane to report the generation live.
    ///
    /// # Errors
    /// A policy that does not validate or compile, or a segment that cannot be attached or
    /// written.
    pub fn start(options: &RunOptions) -> Result<Self, StartError> {
        let (policy, policy_text, policy_problem) = load_at_start(options)?;
        let publisher = Publisher::attach_in(&options.shm_dir, &options.instance)
            .map_err(StartError::Attach)?;
        let segment = publisher.segment();
        let control = segment.control_status();
        let dataplane = segment.dataplane_status();
        info!(
            "attached to {} as control epoch {} (last published generation {}, live {}, data \
             plane {})",
            segment.path().display(),
            publisher.epoch(),
            control.last_published,
            dataplane.live_generation,
            if publisher.dataplane_attached() {
                format!("pid {} running", dataplane.pid)
            } else {
                "not running".to_owned()
            },
        );

        // What forwards now (or will, when the data plane starts): the live generation, else
        // the last published one.
        let live = dataplane.live_generation;
        let last = publisher.last_published();
        let baseline_number = if live == NO_GENERATION { last } else { live };
        let baseline = (baseline_number != NO_GENERATION)
            .then(|| read_generation(&options.shm_dir, &options.instance, baseline_number))
            .flatten();
        let ids = baseline
            .as_ref()
            .map_or_else(BackendIds::new, |(g, _)| BackendIds::from_generation(g));
        if baseline.is_some() {
            info!(
                "recovered {} backend ids from generation {baseline_number}",
                ids.len()
            );
        }

        // Until something is published, `current` is that baseline (or nothing): candidates
        // are compared, and diffs shown, against it.
        let current = match baseline {
            Some((generation, blob)) => Applied {
                policy: policy.clone(),
                digest: describe::digest(&generation),
                generation,
                blob,
            },
            None => Applied::new(policy.clone(), Generation::default()),
        };
        let mut controller = Self {
            policy_path: options.policy.clone(),
            instance: options.instance.clone(),
            publisher,
            ids,
            backend_state: BackendState::new(),
            current,
            settled: true,
            known_live: None,
            last_rejected: None,
            latencies: BTreeMap::new(),
            last_latency: None,
            latency_sum: Duration::ZERO,
            latency_count: 0,
            counters: ControlCounters::default(),
            watch: PolicyWatch::new(&options.policy),
            watch_interval: options.watch_interval,
            next_watch: Instant::now(),
            waiters: Vec::new(),
            dataplane_attached: false,
            monitor: None,
            health: BTreeMap::new(),
            loads: BTreeMap::new(),
            load_pending: BTreeSet::new(),
            load_published_at: BTreeMap::new(),
            next_stale_check: Instant::now(),
            gate_readings: BTreeMap::new(),
            rollouts: Rollouts::new(),
            maglev_cache: RefCell::new(MaglevCache::default()),
            rollouts_path: options
                .shm_dir
                .join(format!("switchyard-{}.rollouts.json", options.instance)),
            next_rollout_tick: Instant::now(),
            last_good_path: last_good_path(&options.shm_dir, &options.instance),
            policy_problem,
            refresh_due: None,
            queries: Vec::new(),
            next_query: 0,
            events: Events::disabled(),
            detector: None,
            cause: None,
            traffic: super::stats::Traffic::default(),
            captures: super::capture::Leftovers::from_dir(&options.shm_dir, &options.instance),
            next_capture_sweep: Instant::now(),
            next_traffic_read: Instant::now(),
        };
        controller.load_rollouts(&policy);
        // Backends the tables already have down stay down until their checks pass `rise`
        // times: a restarted control plane does not send new flows to a dead server.
        controller.recover_health(&policy);
        controller.dataplane_attached = controller.publisher.dataplane_attached();
        // The content just loaded is the content acted on.
        controller.watch.poll();

        let candidate = controller
            .prepare(&policy)
            .map_err(|error| StartError::Compile {
                file: options.policy.clone(),
                error,
            })?;
        let file = options.policy.display();
        let has_baseline = controller.current.number() != NO_GENERATION;
        if has_baseline && !candidate.changed && (live == NO_GENERATION || last == live) {
            let number = controller.current.number();
            controller.ids = candidate.ids;
            controller.settled = false;
            info!(
                "{file}: compiles to exactly the tables of generation {number} ({}); nothing to \
                 publish, no connection is touched",
                if live == number && controller.publisher.dataplane_attached() {
                    "live on the data plane"
                } else {
                    "last published"
                }
            );
            controller.check_current();
        } else {
            info!("{file}: {}", super::summary(&policy));
            if has_baseline {
                log_lines(tracing::Level::INFO, &candidate.diff.to_string());
            }
            controller
                .publish(policy, candidate, options.start_wait)
                .map_err(StartError::Publish)?;
        }
        controller.counters.reloads += 1;
        if controller.policy_problem.is_none() {
            controller.save_last_good(&policy_text);
        }
        Ok(controller)
    }

    /// Keeps `text` as the last known good policy (best effort: a full disk is logged).
    fn save_last_good(&self, text: &str) {
        if let Err(e) = save_policy(&self.last_good_path, text.as_bytes()) {
            warn!(
                "cannot keep the last known good policy at {}: {e}",
                self.last_good_path.display()
            );
        }
    }

    /// Records that the policy file does not load (keeping the time it first did not).
    fn policy_failed(&mut self, mut problem: PolicyProblem) {
        let repeated = self
            .policy_problem
            .as_ref()
            .is_some_and(|old| old.errors == problem.errors);
        if !repeated {
            self.events.emit(refused_event(
                &self.policy_path.display().to_string(),
                &problem.errors,
            ));
        }
        if let Some(old) = &self.policy_problem {
            if old.errors == problem.errors {
                problem.since = old.since;
                problem.running_last_good.clone_from(&old.running_last_good);
            }
        }
        self.policy_problem = Some(problem);
    }

    /// The generation number the next publish will get (the publisher's rule).
    fn next_number(&self) -> u64 {
        let d = self.publisher.segment().dataplane_status();
        self.publisher
            .last_published()
            .max(d.live_generation)
            .max(d.installed_generation)
            .max(d.last_rejected)
            + 1
    }

    /// Compiles `policy` with the current ids and backend state; changes nothing but the
    /// Maglev cache (which only saves rebuilding tables whose inputs did not change).
    fn prepare(&self, policy: &Policy) -> Result<Candidate, CompileError> {
        let mut ids = self.ids.clone();
        // Phased canaries take the share their rollout is at, as the policy would once adopted.
        let mut effective = policy.clone();
        let mut rollouts = self.rollouts.clone();
        rollouts.sync(policy, SystemTime::now());
        rollouts.apply_to(&mut effective);
        let mut cache = self.maglev_cache.borrow_mut();
        let generation = compile::compile_cached(
            &CompileInput {
                policy: &effective,
                generation: self.next_number(),
                state: &self.backend_state,
            },
            &mut ids,
            &mut cache,
        )?;
        drop(cache);
        let changed = !self.current.same_tables(&generation);
        let diff = compile::diff(&self.current.generation, &generation);
        Ok(Candidate {
            generation,
            ids,
            diff,
            changed,
        })
    }

    /// Publishes a candidate and makes it current; waits up to `wait` for a running data plane.
    fn publish(
        &mut self,
        policy: Policy,
        candidate: Candidate,
        wait: Duration,
    ) -> Result<u64, PublishError> {
        let mut generation = candidate.generation;
        let number = self.publisher.publish(&generation)?;
        generation.generation = number;
        self.current = Applied::new(policy, generation);
        self.sync_fleet();
        self.ids = candidate.ids;
        self.settled = false;
        self.counters.publishes += 1;
        info!("published generation {number}");
        let mut event = Event::new(
            Kind::PolicyApplied,
            format!("published generation {number}"),
        )
        .evidence("generation", number as f64);
        if let Some(cause) = self.cause.take() {
            event = event.reason(cause);
        }
        self.events.emit(event);
        if self.publisher.dataplane_attached() {
            if !wait.is_zero() {
                match self.publisher.wait_live(number, wait) {
                    Ok(report) => self.on_live(&report),
                    Err(PublishError::Rejected(r)) => self.on_rejected(&r),
                    Err(PublishError::Timeout { .. }) => info!(
                        "generation {number} not yet live on every worker after {:.0} ms; \
                         still waiting",
                        ms(wait)
                    ),
                    Err(e) => warn!("waiting for generation {number}: {e}"),
                }
            }
        } else {
            warn!(
                "no data plane attached to instance `{}`: generation {number} goes live when \
                 it starts",
                self.instance
            );
        }
        Ok(number)
    }

    /// Serves requests until a stop request (or until every sender is gone).
    pub fn run(&mut self, requests: &Receiver<Request>) {
        loop {
            match requests.recv_timeout(TICK) {
                Ok(Request::Stop { signal }) => {
                    info!("{signal}: stopping");
                    break;
                }
                Ok(request) => self.handle(request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.tick();
        }
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(Err(ApiFailure::new(
                503,
                format!(
                    "the daemon is stopping; generation {} was published and goes live without it",
                    w.generation
                ),
                Vec::new(),
            )));
        }
        let live = self.publisher.live_generation();
        if self.publisher.dataplane_attached() && live != NO_GENERATION {
            info!("stopped; the data plane keeps forwarding with generation {live}");
        } else {
            info!(
                "stopped; no data plane is running, it loads generation {} when it starts",
                self.publisher.last_published()
            );
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::State(reply) => {
                let _ = reply.send(self.state_view());
            }
            Request::Metrics(reply) => {
                self.read_traffic();
                let _ = reply.send(self.metrics());
            }
            Request::Stats(reply) => {
                self.read_traffic();
                let _ = reply.send(self.stats_view());
            }
            Request::Apply(apply, reply) => self.apply(apply, reply),
            Request::Fleet(observation) => self.observe_fleet(observation),
            Request::Rollouts(reply) => {
                let _ = reply.send(self.rollouts.status(SystemTime::now()));
            }
            Request::RolloutAction {
                service,
                action,
                reply,
            } => {
                let _ = reply.send(self.rollout_action(&service, action));
            }
            Request::BackendState(request, reply) => self.backend_state(request, reply),
            Request::Reload => {
                // Whatever the file holds now is acted on here; a write racing the load shows
                // up as one more change for the watcher.
                self.watch.poll();
                self.reload("SIGHUP");
            }
            Request::Trace(params, reply) => self.start_trace(&params, reply),
            Request::Flows(params, reply) => self.start_flows(&params, reply),
            Request::Capture(params, reply) => {
                let _ = reply.send(super::capture::start(
                    &mut self.publisher,
                    &mut self.captures,
                    &params,
                ));
            }
            Request::Stop { .. } => {}
        }
    }

    /// Drains the data plane's messages, follows the current generation, answers waiting
    /// `apply`s and polls the policy file.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_traffic_read {
            self.read_traffic();
        }
        if now >= self.next_capture_sweep {
            // Its own timer: API reads of the traffic (top, dashboards) push the traffic read
            // back and must not starve this.
            self.next_capture_sweep = now + TRAFFIC_READ_EVERY;
            for path in self.captures.sweep(shm::monotonic_ms()) {
                tracing::info!(path = %path.display(), "removed a finished capture's file (its CLI did not)");
            }
        }
        self.detect();
        self.publish_load();
        self.tick_rollouts();
        let summary = self.publisher.poll();
        self.answer_queries();
        self.dataplane_events();
        self.observe_dataplane(summary.dataplane_restarted);
        self.check_current();
        self.refresh_current();
        self.answer_waiters();
        if let Some(interval) = self.watch_interval {
            let now = Instant::now();
            if now >= self.next_watch {
                self.next_watch = now + interval;
                if self.watch.poll() {
                    self.reload("file changed");
                }
            }
        }
    }

    /// Sends a flow query to the workers; the answer goes to `reply` from [`Self::answer_queries`].
    fn start_query(
        &mut self,
        make: impl FnOnce(u32) -> Result<(shm::Message, Option<shm::FlowTuple>), ApiFailure>,
        reply: query::Reply,
    ) {
        let fail = |reply: query::Reply, e: ApiFailure| match reply {
            query::Reply::Trace(tx, _) => {
                let _ = tx.send(Err(e));
            }
            query::Reply::Flows(tx, _) => {
                let _ = tx.send(Err(e));
            }
        };
        if !self.publisher.dataplane_attached() {
            let e = ApiFailure::new(
                503,
                "no data plane is running: trace and flows ask its workers, which run the live \
                 generation and hold the connection tables",
                Vec::new(),
            );
            return fail(reply, e);
        }
        self.next_query = self.next_query.wrapping_add(1).max(1);
        let id = self.next_query;
        let (message, tuple) = match make(id) {
            Ok(x) => x,
            Err(e) => return fail(reply, e),
        };
        let workers = self.publisher.segment().dataplane_status().workers;
        if let Err(e) = self.publisher.send_query(&message) {
            let e = ApiFailure::new(
                503,
                format!(
                    "cannot ask the data plane: the control→data ring refused the query ({e:?})"
                ),
                Vec::new(),
            );
            return fail(reply, e);
        }
        self.queries.push(query::Pending {
            id,
            tuple,
            workers: u32::try_from(workers).unwrap_or(u32::MAX).max(1),
            deadline: Instant::now() + query::QUERY_TIMEOUT,
            answers: Vec::new(),
            done: BTreeMap::new(),
            refused: false,
            reply,
        });
    }

    fn start_trace(
        &mut self,
        params: &query::TraceParams,
        reply: oneshot::Sender<Result<query::TraceView, ApiFailure>>,
    ) {
        let parsed = query::trace_tuple(params);
        let default_port = parsed.as_ref().is_ok_and(|p| p.1);
        self.start_query(
            |id| {
                let (flow, _) = parsed?;
                Ok((shm::Message::Trace { query: id, flow }, Some(flow)))
            },
            query::Reply::Trace(reply, default_port),
        );
    }

    fn start_flows(
        &mut self,
        params: &query::FlowsParams,
        reply: oneshot::Sender<Result<query::FlowsView, ApiFailure>>,
    ) {
        let backend = match params.backend.as_deref().map(|b| self.backend_id(b)) {
            None => Ok(0),
            Some(r) => r,
        };
        let limit = params
            .limit
            .unwrap_or(100)
            .clamp(1, query::MAX_FLOWS_PER_WORKER);
        self.start_query(
            |id| {
                let sample = query::sample(params, id, backend?)?;
                Ok((shm::Message::Sample(sample), None))
            },
            query::Reply::Flows(reply, limit),
        );
    }

    /// The stable id of backend `text`: a name, an address, or `POOL/NAME|ADDRESS`.
    fn backend_id(&self, text: &str) -> Result<u32, ApiFailure> {
        let (pool_filter, who) = match text.split_once('/') {
            Some((p, b)) if !b.is_empty() && !text.contains("::") => (Some(p), b),
            _ => (None, text),
        };
        let address = who.parse::<IpAddr>().ok();
        let found: Vec<(String, IpAddr)> = self
            .current
            .policy
            .pools
            .iter()
            .filter(|p| pool_filter.is_none_or(|f| p.name == f))
            .flat_map(|p| {
                p.backends
                    .iter()
                    .filter(|b| Some(b.address) == address || b.name.as_deref() == Some(who))
                    .map(|b| (p.name.clone(), b.address))
            })
            .collect();
        match found.as_slice() {
            [] => Err(ApiFailure::new(
                404,
                format!("no backend `{text}` in the policy (a name, an address, or POOL/BACKEND)"),
                Vec::new(),
            )),
            [(pool, address)] => self.ids.get(pool, *address).ok_or_else(|| {
                ApiFailure::new(
                    404,
                    format!("backend `{text}` is not in the published tables yet"),
                    Vec::new(),
                )
            }),
            many => Err(ApiFailure::new(
                400,
                format!(
                    "backend `{text}` is in pools {}: say which, as POOL/BACKEND",
                    many.iter()
                        .map(|(p, _)| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Vec::new(),
            )),
        }
    }

    /// The policy and tables of generation `n`, if the control plane still has them.
    fn names_for(&self, n: u64) -> Option<query::Names<'_>> {
        [Some(&self.current), self.known_live.as_ref()]
            .into_iter()
            .flatten()
            .find(|a| a.generation.generation == n)
            .map(|a| query::Names {
                g: &a.generation,
                policy: &a.policy,
            })
    }

    /// Hands the workers' answers to their queries; answers finished and timed-out ones.
    fn answer_queries(&mut self) {
        for m in self.publisher.take_answers() {
            if let shm::Message::Dropped { .. } = m {
                let names = self.publisher.segment().counter_names();
                if let Some(e) = super::capture::drop_event(&m, &names) {
                    self.events.emit(e);
                }
                continue;
            }
            let Some(id) = query::answer_id(&m) else {
                continue;
            };
            let Some(i) = self.queries.iter().position(|p| p.id == id) else {
                continue; // a query that already timed out
            };
            if self.queries[i].take(m) {
                let p = self.queries.remove(i);
                self.finish_query(p, false);
            }
        }
        let now = Instant::now();
        while let Some(i) = self.queries.iter().position(|p| now >= p.deadline) {
            let p = self.queries.remove(i);
            self.finish_query(p, true);
        }
    }

    /// Turns the data plane's `Event` messages (link down / up) into events on the bus, with
    /// the data plane attached now; drained even without sinks, so none piles up.
    fn dataplane_events(&mut self) {
        let events = self.publisher.take_events();
        if events.is_empty() {
            return;
        }
        let status = self.publisher.segment().dataplane_status();
        for e in &events {
            match link_event(e, status.pid, status.epoch) {
                Some(event) => self.events.emit(event),
                None => tracing::debug!(
                    "data-plane event kind {} (a {}, b {}) is not one this control plane knows",
                    e.kind,
                    e.a,
                    e.b
                ),
            }
        }
    }

    fn finish_query(&self, p: query::Pending, timed_out: bool) {
        let busy = || {
            ApiFailure::new(
                503,
                "the data plane refused the query: too many queries queued, or a worker did \
                 not answer; try again",
                Vec::new(),
            )
        };
        let answered = u32::try_from(p.done.len()).unwrap_or(u32::MAX);
        let silent = || {
            ApiFailure::new(
                504,
                format!(
                    "{answered} of {} workers answered within {:?}",
                    p.workers,
                    query::QUERY_TIMEOUT
                ),
                Vec::new(),
            )
        };
        match &p.reply {
            query::Reply::Trace(..) => {
                let traced: Vec<shm::Traced> = p
                    .answers
                    .iter()
                    .filter_map(|m| match m {
                        shm::Message::Traced(t) => Some(*t),
                        _ => None,
                    })
                    .collect();
                let result = if p.refused {
                    Err(busy())
                } else if traced.is_empty() || (timed_out && traced.len() < p.workers as usize) {
                    Err(silent())
                } else {
                    let names = self.names_for(traced[0].generation);
                    let counter_names = self.publisher.segment().counter_names();
                    let tuple = p.tuple.unwrap_or_default();
                    let default_port = matches!(p.reply, query::Reply::Trace(_, true));
                    Ok(query::trace_view(
                        &tuple,
                        default_port,
                        &traced,
                        names.as_ref(),
                        &counter_names,
                    ))
                };
                if let query::Reply::Trace(tx, _) = p.reply {
                    let _ = tx.send(result);
                }
            }
            query::Reply::Flows(_, limit) => {
                let limit = *limit;
                let result = if p.refused {
                    Err(busy())
                } else if timed_out {
                    Err(silent())
                } else {
                    let live = self.publisher.live_generation();
                    let names = self.names_for(live);
                    Ok(query::flows_view(&p, limit, names.as_ref()))
                };
                if let query::Reply::Flows(tx, _) = p.reply {
                    let _ = tx.send(result);
                }
            }
        }
    }

    fn observe_dataplane(&mut self, restarted: bool) {
        let attached = self.publisher.dataplane_attached();
        let status = self.publisher.segment().dataplane_status();
        if restarted {
            let restarts = self.publisher.dataplane_restarts();
            if restarts > self.counters.dataplane_restarts {
                self.counters.dataplane_restarts = restarts;
                warn!(
                    "data plane restarted (pid {}, epoch {}): generation {} published to it again",
                    status.pid,
                    status.epoch,
                    self.publisher.last_published()
                );
            } else {
                info!(
                    "data plane attached (pid {}, epoch {})",
                    status.pid, status.epoch
                );
            }
            // Follow the current generation onto the new data plane (which reports nothing live
            // until it loaded it, and may refuse it: see `on_rejected`).
            self.settled = false;
        } else if self.dataplane_attached && !attached {
            warn!(
                "data plane (pid {}) is gone; generation {} goes live again when it restarts",
                status.pid,
                self.current.number()
            );
        }
        self.dataplane_attached = attached;
    }

    /// Settles `current`: live on every worker, or refused.
    fn check_current(&mut self) {
        if self.settled {
            return;
        }
        let number = self.current.number();
        if let Some(r) = self.publisher.rejection(number).cloned() {
            self.on_rejected(&r);
            return;
        }
        let live = self.publisher.live_generation();
        if live != NO_GENERATION && live >= number {
            match self.publisher.wait_live(number, Duration::ZERO) {
                Ok(report) => self.on_live(&report),
                Err(PublishError::Rejected(r)) => self.on_rejected(&r),
                Err(_) => {}
            }
        }
    }

    fn on_live(&mut self, report: &LiveReport) {
        let number = report.generation;
        let workers = self.publisher.segment().dataplane_status().workers;
        // A generation already seen live (e.g. again on a restarted data plane) has no new
        // publish→live time.
        let latency = report
            .latency
            .filter(|_| !self.latencies.contains_key(&number));
        if let Some(latency) = latency {
            self.last_latency = Some(latency);
            self.latency_sum += latency;
            self.latency_count += 1;
            self.latencies.insert(number, latency);
            while self.latencies.len() > LATENCY_MEMORY {
                self.latencies.pop_first();
            }
            info!(
                "generation {number} live on every worker ({workers}) in {:.3} ms from publish",
                ms(latency)
            );
        } else {
            info!("generation {number} live on every worker ({workers})");
        }
        if number == self.current.number() {
            self.settled = true;
            self.known_live = Some(self.current.clone());
        }
        if let Err(e) = self.publisher.gc() {
            warn!("removing old generation files: {e}");
        }
    }

    fn on_rejected(&mut self, r: &Rejection) {
        if r.generation == self.current.number() {
            self.settled = true;
        }
        if self.last_rejected.as_ref() == Some(r) {
            return;
        }
        self.counters.rejects += 1;
        self.events.emit(
            Event::new(
                Kind::GenerationRejected,
                format!("the data plane rejected generation {}", r.generation),
            )
            .reason(format!("{} (code {})", r.reason, r.code))
            .evidence("generation", r.generation as f64),
        );
        let live = self.publisher.live_generation();
        error!(
            "the data plane rejected generation {}: {} (code {}); {}",
            r.generation,
            r.reason,
            r.code,
            if live == NO_GENERATION {
                "it has no generation live".to_owned()
            } else {
                format!("generation {live} stays live")
            }
        );
        self.last_rejected = Some(r.clone());
        // The data plane ran exactly these tables before and refuses them now (after its own
        // restart, say): the refusal is about the file (corrupted, removed), not the tables.
        // Publish them again, once, from memory, under a new number.
        let was_live = self
            .known_live
            .as_ref()
            .is_some_and(|k| k.number() == r.generation);
        if r.generation == self.current.number()
            && was_live
            && r.reason() != Some(RejectReason::Stale)
        {
            self.refresh_due = Some(r.generation);
        }
        if r.generation == self.current.number() {
            // Show what forwards, not what was refused; the next reload compiles against it.
            if let Some(known) = &self.known_live {
                if known.number() != r.generation {
                    self.current = known.clone();
                    self.sync_fleet();
                }
            }
        }
    }

    /// Publishes the current tables again under a new number, after the data plane refused the
    /// file of a generation it had run (see `on_rejected`).
    fn refresh_current(&mut self) {
        let Some(refused) = self.refresh_due.take() else {
            return;
        };
        if refused != self.current.number() {
            return;
        }
        warn!(
            "generation {refused} was live before and the data plane refuses it now: its file went \
             bad; publishing the same tables again as a new generation"
        );
        let candidate = Candidate {
            generation: self.current.generation.clone(),
            ids: self.ids.clone(),
            diff: compile::diff(&self.current.generation, &self.current.generation),
            changed: true,
        };
        let policy = self.current.policy.clone();
        match self.publish(policy, candidate, QUICK_WAIT) {
            Ok(number) => info!("generation {refused} published again as generation {number}"),
            Err(e) => error!("publishing generation {refused} again failed: {e}"),
        }
    }

    fn answer_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let live = self.publisher.live_generation();
        let now = Instant::now();
        let mut still = Vec::with_capacity(self.waiters.len());
        for mut w in self.waiters.drain(..) {
            if let Some(r) = self.publisher.rejection(w.generation) {
                w.response.status = PublishStatus::Rejected;
                w.response.reason = Some(r.reason.clone());
            } else if live != NO_GENERATION && live >= w.generation {
                w.response.status = PublishStatus::Live;
                w.response.publish_to_live_ms = self.latencies.get(&w.generation).map(|&d| ms(d));
            } else if now >= w.deadline {
                w.response.status = PublishStatus::Pending;
            } else {
                still.push(w);
                continue;
            }
            let _ = w.reply.send(Ok(w.response));
        }
        self.waiters = still;
    }

    /// Reloads the policy file; on any error logs every problem and changes nothing.
    fn reload(&mut self, trigger: &str) {
        let file = self.policy_path.display().to_string();
        info!("{file}: reloading ({trigger})");
        let (policy, text) = match policy::load_text(&self.policy_path) {
            Ok(loaded) => loaded,
            Err(errors) => {
                self.counters.reload_failures += 1;
                self.policy_failed(PolicyProblem::from_errors(&errors));
                log_lines(tracing::Level::ERROR, &errors.to_string());
                error!(
                    "{}; nothing changed, generation {} stays",
                    rejected_line(&errors),
                    self.current.number()
                );
                return;
            }
        };
        let candidate = match self.prepare(&policy) {
            Ok(c) => c,
            Err(e) => {
                self.counters.reload_failures += 1;
                self.policy_failed(PolicyProblem::from_compile(&self.policy_path, &e));
                error!(
                    "{file}: policy cannot be compiled: {e}; nothing changed, generation {} stays",
                    self.current.number()
                );
                return;
            }
        };
        self.counters.reloads += 1;
        if self.policy_problem.take().is_some() {
            info!("{file}: the policy file loads again");
        }
        if !candidate.changed {
            info!(
                "{file}: the tables are unchanged; generation {} stays",
                self.current.number()
            );
            self.current.policy = policy;
            self.sync_fleet();
            self.ids = candidate.ids;
            self.save_last_good(&text);
            return;
        }
        log_lines(tracing::Level::INFO, &candidate.diff.to_string());
        self.cause = Some(format!("{file}: reload ({trigger})"));
        match self.publish(policy, candidate, QUICK_WAIT) {
            Ok(_) => self.save_last_good(&text),
            Err(e) => error!(
                "{file}: publishing failed: {e}; generation {} stays",
                self.current.number()
            ),
        }
    }

    fn apply(
        &mut self,
        request: ApplyRequest,
        reply: oneshot::Sender<Result<ApplyResponse, ApiFailure>>,
    ) {
        let source = request.source.as_str();
        let mut policy = match policy::parse_str(&request.policy, source) {
            Ok(p) => p,
            Err(errors) => {
                if !request.dry_run {
                    self.counters.reload_failures += 1;
                }
                warn!("apply refused: {}", rejected_line(&errors));
                let lines: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
                if !request.dry_run {
                    self.events.emit(refused_event(source, &lines));
                }
                let _ = reply.send(Err(ApiFailure::new(422, rejected_line(&errors), lines)));
                return;
            }
        };
        // Relative paths in the policy are relative to the file the daemon keeps it in.
        if let Some(db) = &mut policy.geoip_database {
            if db.is_relative() {
                if let Some(dir) = self.policy_path.parent() {
                    *db = dir.join(&*db);
                }
            }
        }
        let candidate = match self.prepare(&policy) {
            Ok(c) => c,
            Err(e) => {
                if !request.dry_run {
                    self.counters.reload_failures += 1;
                }
                warn!("apply refused: {source}: policy cannot be compiled: {e}");
                let line = format!("{source}: policy cannot be compiled: {e}");
                if !request.dry_run {
                    self.events
                        .emit(refused_event(source, std::slice::from_ref(&line)));
                }
                let _ = reply.send(Err(ApiFailure::new(422, line.clone(), vec![line])));
                return;
            }
        };
        let mut response = ApplyResponse {
            dry_run: request.dry_run,
            changed: candidate.changed,
            diff: if candidate.changed {
                candidate.diff.to_string()
            } else {
                format!(
                    "generation {}: no changes to the tables",
                    self.current.number()
                )
            },
            generation: if candidate.changed {
                candidate.generation.generation
            } else {
                self.current.number()
            },
            status: if candidate.changed {
                PublishStatus::Pending
            } else {
                PublishStatus::Unchanged
            },
            publish_to_live_ms: None,
            reason: None,
        };
        if request.dry_run {
            let _ = reply.send(Ok(response));
            return;
        }

        // Written beside the policy file first (a full or read-only disk refuses the apply
        // here, nothing changed), renamed over it only once the publish succeeded: the file
        // never holds a policy that was not applied.
        let staged = match StagedPolicy::write(&self.policy_path, request.policy.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                let message = format!(
                    "cannot save the policy to {}: {e}; nothing changed",
                    self.policy_path.display()
                );
                error!("apply: {message}");
                let _ = reply.send(Err(ApiFailure::new(500, message, Vec::new())));
                return;
            }
        };
        if !candidate.changed {
            if let Err(e) = staged.commit() {
                let message = format!(
                    "cannot save the policy to {}: {e}; nothing changed",
                    self.policy_path.display()
                );
                error!("apply: {message}");
                let _ = reply.send(Err(ApiFailure::new(500, message, Vec::new())));
                return;
            }
            self.applied_saved(&request, source);
            info!(
                "the tables are unchanged; generation {} stays",
                self.current.number()
            );
            self.current.policy = policy;
            self.sync_fleet();
            self.ids = candidate.ids;
            let _ = reply.send(Ok(response));
            return;
        }
        log_lines(tracing::Level::INFO, &response.diff);
        self.cause = Some(format!("apply from {source}"));
        match self.publish(policy, candidate, QUICK_WAIT) {
            Ok(number) => {
                if let Err(e) = staged.commit() {
                    // Published, but the file still holds the previous policy: say so; the
                    // last known good copy has what runs.
                    let message = format!(
                        "generation {number} was published, but the policy could not be saved                          to {}: {e}; a reload of that file would go back to what it holds",
                        self.policy_path.display()
                    );
                    error!("apply: {message}");
                    self.save_last_good(&request.policy);
                    let _ = reply.send(Err(ApiFailure::new(500, message, Vec::new())));
                    return;
                }
                self.applied_saved(&request, source);
                response.generation = number;
                self.waiters.push(Waiter {
                    generation: number,
                    deadline: Instant::now() + request.wait.min(MAX_APPLY_WAIT),
                    response,
                    reply,
                });
                self.answer_waiters();
            }
            Err(e) => {
                // `staged` is dropped: the policy file keeps what it had.
                let message = format!(
                    "publishing failed: {e}; nothing changed, generation {} stays and {} \
                     keeps its policy",
                    self.current.number(),
                    self.policy_path.display()
                );
                error!("apply: {message}");
                let _ = reply.send(Err(ApiFailure::new(503, message, Vec::new())));
            }
        }
    }

    /// After an applied policy was saved over the policy file: counted, logged, kept as the
    /// last known good policy, and acknowledged so the watcher does not reload it.
    fn applied_saved(&mut self, request: &ApplyRequest, source: &str) {
        self.counters.reloads += 1;
        info!(
            "{}: policy applied from {source} ({} bytes)",
            self.policy_path.display(),
            request.policy.len()
        );
        self.watch.acknowledge(request.policy.as_bytes());
        self.save_last_good(&request.policy);
        if self.policy_problem.take().is_some() {
            info!(
                "{}: replaced by the applied policy; it loads again",
                self.policy_path.display()
            );
        }
    }

    /// Sets one backend's `state:` in the policy file's text — a targeted edit that keeps the
    /// operator's comments and layout — and applies the result as `apply` would (diff, dry run,
    /// publish, then save), so the state survives a restart.
    fn backend_state(
        &mut self,
        request: BackendStateRequest,
        reply: oneshot::Sender<Result<ApplyResponse, ApiFailure>>,
    ) {
        let file = self.policy_path.display().to_string();
        let text = match policy::read_bytes(&self.policy_path).map(String::from_utf8) {
            Ok(Ok(text)) => text,
            Ok(Err(_)) => {
                let message = format!("{file}: not UTF-8 text; fix the policy file first");
                let _ = reply.send(Err(ApiFailure::new(422, message.clone(), vec![message])));
                return;
            }
            Err(e) => {
                let message = format!("{file}: {e}; fix the policy file first");
                let _ = reply.send(Err(ApiFailure::new(422, message.clone(), vec![message])));
                return;
            }
        };
        let edit = match edit::set_backend_state(&text, &file, &request.selector, request.to) {
            Ok(edit) => edit,
            Err(e) => {
                let status = match &e {
                    edit::EditError::Invalid(_) => 422,
                    edit::EditError::NotFound { .. } => 404,
                    edit::EditError::Ambiguous { .. } | edit::EditError::Unsafe { .. } => 409,
                };
                let lines: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
                let headline = lines.last().cloned().unwrap_or_default();
                let _ = reply.send(Err(ApiFailure::new(status, headline, lines)));
                return;
            }
        };
        let state = request.to.yaml().unwrap_or("in service");
        if !edit.changed() {
            let _ = reply.send(Ok(ApplyResponse {
                dry_run: request.dry_run,
                changed: false,
                diff: format!(
                    "{} is already {state} ({file}:{}); nothing to do",
                    edit.backend(),
                    edit.line
                ),
                generation: self.current.number(),
                status: PublishStatus::Unchanged,
                publish_to_live_ms: None,
                reason: None,
            }));
            return;
        }
        if !request.dry_run {
            info!(
                "{}: {} set {state} (line {})",
                file,
                edit.backend(),
                edit.line
            );
        }
        self.apply(
            ApplyRequest {
                policy: edit.text,
                source: file,
                dry_run: request.dry_run,
                wait: request.wait,
            },
            reply,
        );
    }

    fn status(&self) -> PublishStatus {
        let number = self.current.number();
        let live = self.publisher.live_generation();
        if self
            .last_rejected
            .as_ref()
            .is_some_and(|r| r.generation == number)
        {
            PublishStatus::Rejected
        } else if live != NO_GENERATION && live >= number && self.publisher.dataplane_attached() {
            PublishStatus::Live
        } else {
            PublishStatus::Pending
        }
    }

    fn workers(&self) -> Vec<WorkerView> {
        let segment = self.publisher.segment();
        let count = usize::try_from(segment.dataplane_status().workers)
            .unwrap_or(MAX_WORKERS)
            .min(MAX_WORKERS);
        (0..count)
            .filter_map(|i| {
                let w = segment.worker_status(i)?;
                Some(WorkerView {
                    worker: u32::try_from(i).ok()?,
                    live_generation: w.live_generation,
                    packets: w.packets,
                    drops: w.drops,
                })
            })
            .collect()
    }

    fn dataplane_view(&self) -> DataplaneView {
        let d = self.publisher.segment().dataplane_status();
        DataplaneView {
            running: self.publisher.dataplane_attached(),
            pid: d.pid,
            epoch: d.epoch,
            heartbeat_age_ms: self
                .publisher
                .dataplane_heartbeat_age()
                .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
            live_generation: d.live_generation,
            workers: self.workers(),
        }
    }

    /// `GET /v1/state`.
    #[must_use]
    pub fn state_view(&self) -> StateView {
        StateView {
            instance: self.instance.clone(),
            policy_file: self.policy_path.display().to_string(),
            generation: GenerationView {
                current: self.current.number(),
                published: self.publisher.last_published(),
                live: self.publisher.live_generation(),
                status: self.status(),
                last_publish_to_live_ms: self.last_latency.map(ms),
                last_rejected: self.last_rejected.as_ref().map(|r| RejectedView {
                    generation: r.generation,
                    reason: r.reason.clone(),
                }),
                digest: self.current.digest.clone(),
            },
            dataplane: self.dataplane_view(),
            services: describe::services(&self.current.policy),
            pools: {
                let mut pools = describe::pools(&self.current.policy, &self.current.generation);
                self.fill_live(&mut pools);
                pools
            },
            rollouts: self.rollouts.status(SystemTime::now()),
            counters: self.counters.clone(),
            policy_error: self.policy_problem.as_ref().map(PolicyProblem::view),
        }
    }

    /// Folds the workers' telemetry into the traffic totals.
    fn read_traffic(&mut self) {
        self.next_traffic_read = Instant::now() + TRAFFIC_READ_EVERY;
        let segment = self.publisher.segment().clone();
        let d = segment.dataplane_status();
        if d.pid == 0 {
            return;
        }
        let workers: Vec<u32> = self.workers().iter().map(|w| w.worker).collect();
        self.traffic.read(&segment, d.epoch, &workers);
        if !self.publisher.dataplane_attached() {
            self.traffic.dataplane_gone();
        }
    }

    /// `GET /v1/stats` (from the totals as last read).
    #[must_use]
    pub fn stats_view(&self) -> super::stats::StatsView {
        let segment = self.publisher.segment();
        let d = segment.dataplane_status();
        let mut counters: Vec<(String, u64)> = Vec::new();
        if d.pid != 0 {
            counters = segment
                .counter_names()
                .into_iter()
                .map(|n| (n, 0))
                .collect();
            for w in self.workers() {
                for (c, v) in counters
                    .iter_mut()
                    .zip(segment.counters(w.worker as usize).unwrap_or_default())
                {
                    c.1 += v;
                }
            }
        }
        let mut pools = describe::pools(&self.current.policy, &self.current.generation);
        self.fill_live(&mut pools);
        self.traffic.view(
            &self.current.generation,
            &pools,
            &counters,
            self.publisher.dataplane_attached(),
        )
    }

    /// `GET /metrics`.
    #[must_use]
    pub fn metrics(&self) -> String {
        let summary = self.publisher.latency();
        let control = ControlSample {
            policy_file_error: self.policy_problem.is_some(),
            running_last_good: self
                .policy_problem
                .as_ref()
                .is_some_and(|p| p.running_last_good.is_some()),
            current_generation: self.current.number(),
            published_generation: self.publisher.last_published(),
            live_generation: self.publisher.live_generation(),
            pending: self.status() == PublishStatus::Pending,
            counters: self.counters.clone(),
            last_publish_to_live_seconds: self.last_latency.map(|d| d.as_secs_f64()),
            latency: (self.latency_count > 0).then_some(LatencySample {
                p50_seconds: summary.p50.as_secs_f64(),
                p99_seconds: summary.p99.as_secs_f64(),
                max_seconds: summary.max.as_secs_f64(),
                sum_seconds: self.latency_sum.as_secs_f64(),
                count: self.latency_count,
            }),
        };
        let segment = self.publisher.segment();
        let d = segment.dataplane_status();
        let workers = self.workers();
        let dataplane = DataplaneSample {
            running: self.publisher.dataplane_attached(),
            pid: d.pid,
            epoch: d.epoch,
            live_generation: d.live_generation,
            counter_names: if d.pid == 0 {
                Vec::new()
            } else {
                segment.counter_names()
            },
            counters: workers
                .iter()
                .map(|w| segment.counters(w.worker as usize).unwrap_or_default())
                .collect(),
            workers,
        };
        let mut body = metrics::render(&control, &dataplane);
        metrics::render_traffic(&mut body, &self.stats_view());
        metrics::render_events(&mut body, &self.events);
        body
    }
}

/// Events: the bus the controller emits on, and detection over the data plane's counters.
impl Controller {
    /// Emits this controller's events on `events` from now on, and runs `detection` over the
    /// data plane's counters when the bus has a sink.
    pub fn attach_events(&mut self, events: Events, detection: DetectionConfig) {
        self.detector = events.enabled().then(|| Detector::new(detection));
        self.events = events;
        self.events.emit(
            Event::new(
                Kind::PolicyApplied,
                format!(
                    "control plane started with generation {}",
                    self.current.number()
                ),
            )
            .reason("start")
            .evidence("generation", self.current.number() as f64),
        );
    }

    /// The bus, for other parts of the daemon to emit on (a clone: cheap).
    #[must_use]
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// Reads the data plane's counters when a detection reading is due, and emits findings.
    fn detect(&mut self) {
        let Some(detector) = self.detector.as_mut() else {
            return;
        };
        let now = Instant::now();
        if !detector.due(now) {
            return;
        }
        let segment = self.publisher.segment();
        if !self.publisher.dataplane_attached() || segment.dataplane_status().pid == 0 {
            detector.reset();
            return;
        }
        let names = segment.counter_names();
        let rows: Vec<(u32, Vec<u64>)> = self
            .workers()
            .iter()
            .filter_map(|w| Some((w.worker, segment.counters(w.worker as usize)?)))
            .collect();
        let Some(detector) = self.detector.as_mut() else {
            return;
        };
        let mut events = detector.observe(now, &names, &rows);
        // New flows per service: each service's telemetry row summed over the workers.
        let keys: BTreeMap<u64, &str> = self
            .current
            .policy
            .services
            .iter()
            .map(|s| (shm::telemetry::service_key(&s.name), s.name.as_str()))
            .collect();
        let mut totals: BTreeMap<String, u64> = BTreeMap::new();
        for (worker, _) in &rows {
            let Some(t) = segment.telemetry(*worker as usize, 0) else {
                continue;
            };
            for (_, row) in &t.services {
                if let Some(name) = keys.get(&row.key) {
                    *totals.entry((*name).to_owned()).or_default() += row.new_flows;
                }
            }
        }
        events.extend(detector.observe_services(now, totals));
        events.extend(detector.observe_talkers(now, self.traffic.talkers()));
        for event in events {
            self.events.emit(event);
        }
    }
}

/// Fleet watching: health transitions and load-driven weights folded into the tables.
impl Controller {
    /// Starts the health checks and scrapes of the current policy; observations come back
    /// through `requests` as [`Request::Fleet`].
    ///
    /// # Errors
    /// The monitor thread could not start.
    pub fn attach_monitor(&mut self, requests: Sender<Request>) -> io::Result<()> {
        let sink: fleet::Sink = Arc::new(move |o| requests.send(Request::Fleet(o)).is_ok());
        let monitor = Monitor::spawn(sink, fleet::DEFAULT_CONCURRENCY)?;
        monitor.watch(&self.current.policy);
        self.monitor = Some(monitor);
        Ok(())
    }

    /// Seeds health state from the tables found at start: a backend recorded unhealthy there
    /// starts down (and stays out of the tables until it passes `rise` probes).
    fn recover_health(&mut self, policy: &Policy) {
        let now = Instant::now();
        let generation = &self.current.generation;
        for b in &generation.backends {
            if b.flags & BACKEND_HEALTHY != 0 {
                continue;
            }
            let (Some(pool), Some(address)) = (
                generation.pools.get(b.pool as usize),
                compile::address_of_record(b),
            ) else {
                continue;
            };
            let name = switchyard_table::generation::name_str(&pool.name);
            let Some(p) = policy.pools.iter().find(|p| p.name == name) else {
                continue;
            };
            if p.health.is_some() && p.backends.iter().any(|x| x.address == address) {
                let mut h = BackendHealth::starting(Health::Down, now);
                h.reason = "down in the live generation when the control plane started".into();
                self.health.insert((p.name.clone(), address), h);
                self.backend_state.set_health(&p.name, address, false);
            }
        }
    }

    /// Follows the current policy: checks for new backends start, removed ones stop and
    /// their state is forgotten.
    fn sync_fleet(&mut self) {
        let events = self.rollouts.sync(&self.current.policy, SystemTime::now());
        self.log_rollouts(&events);
        if !events.is_empty() {
            self.save_rollouts();
        }
        let gates = fleet::gate_metrics(&self.current.policy);
        self.gate_readings
            .retain(|(pool, _), _| gates.contains_key(pool));
        let policy = &self.current.policy;
        self.maglev_cache
            .get_mut()
            .retain(|name| policy.pool_by_name(name).is_some());
        let wanted = fleet::watches(&self.current.policy);
        // Checks the policy no longer asks for: their state goes, the backend state resets.
        let gone = |keys: &mut dyn Iterator<Item = &(String, IpAddr)>, kind| -> Vec<_> {
            keys.filter(|k| !wanted.contains_key(&(k.0.clone(), k.1, kind)))
                .cloned()
                .collect()
        };
        for key in gone(&mut self.health.keys(), fleet::Kind::Health) {
            self.health.remove(&key);
            self.backend_state.set_health(&key.0, key.1, true);
        }
        for key in gone(&mut self.loads.keys(), fleet::Kind::Load) {
            self.loads.remove(&key);
            self.backend_state.set_weight(&key.0, key.1, None);
            self.backend_state.set_full(&key.0, key.1, false);
        }
        if let Some(m) = &self.monitor {
            m.watch(&self.current.policy);
        }
    }

    fn observe_fleet(&mut self, observation: Observation) {
        match observation {
            Observation::Probe {
                pool,
                address,
                at,
                result,
            } => {
                let Some(check) = self
                    .current
                    .policy
                    .pool_by_name(&pool)
                    .and_then(|id| self.current.policy.pool(id).health.clone())
                else {
                    return;
                };
                let state = self
                    .health
                    .entry((pool.clone(), address))
                    .or_insert_with(|| BackendHealth::new(at));
                let result = result.map_err(|e| e.to_string());
                let Some(t) = state.observe(result, check.rise, check.fall, at) else {
                    return;
                };
                self.counters.health_transitions += 1;
                let message = format!(
                    "backend {address} of pool {pool}: {} -> {}: {}",
                    t.from.as_str(),
                    t.to.as_str(),
                    t.reason
                );
                if t.to == Health::Down {
                    warn!("{message}");
                } else {
                    info!("{message}");
                }
                let kind = if t.to == Health::Down {
                    Kind::BackendDown
                } else {
                    Kind::BackendUp
                };
                self.events.emit(
                    Event::new(kind, message)
                        .pool(pool.clone())
                        .backend(address)
                        .reason(t.reason.to_string()),
                );
                self.backend_state
                    .set_health(&pool, address, t.to == Health::Up);
                self.republish(&format!(
                    "health: {address} of pool {pool} is {}",
                    t.to.as_str()
                ));
            }
            Observation::Scrape {
                pool,
                address,
                at,
                result,
            } => {
                let Some(cfg) = self
                    .current
                    .policy
                    .pool_by_name(&pool)
                    .and_then(|id| self.current.policy.pool(id).load.clone())
                else {
                    return;
                };
                let mut result = result.map_err(|e| e.to_string());
                if let Ok(values) = &mut result {
                    // Past the signals: the canary rollback-gate counter, if this pool has one.
                    let gate = values.split_off(cfg.signals.len().min(values.len()));
                    match gate.first().copied().flatten() {
                        Some(v) => {
                            self.gate_readings
                                .insert((pool.clone(), address), (v, SystemTime::now()));
                        }
                        None => {
                            self.gate_readings.remove(&(pool.clone(), address));
                        }
                    }
                }
                let configured = self
                    .current
                    .policy
                    .pool_by_name(&pool)
                    .and_then(|id| {
                        let p = self.current.policy.pool(id);
                        p.backends.iter().find(|b| b.address == address)
                    })
                    .map_or(0, |b| b.weight);
                let state = self.loads.entry((pool.clone(), address)).or_default();
                let was_error = state.last_error.is_some();
                state.observe(result, &cfg, at);
                if let (false, Some(e)) = (was_error, &state.last_error) {
                    warn!("load: scraping {address} of pool {pool}: {e}");
                }
                // Only this backend changed; the stale sweep in `publish_load` covers the rest.
                if state.wants(&cfg, configured, at).is_some() {
                    self.load_pending.insert(pool);
                }
            }
        }
    }

    /// Marks `pool` pending when one of its backends wants a new weight or full bit (the
    /// periodic sweep that notices metrics going stale without a scrape result).
    fn evaluate_load(&mut self, pool: &str, now: Instant) {
        let policy = &self.current.policy;
        let Some(p) = policy.pool_by_name(pool).map(|id| policy.pool(id)) else {
            return;
        };
        let Some(cfg) = &p.load else {
            return;
        };
        let wants = p.backends.iter().any(|b| {
            self.loads
                .get(&(p.name.clone(), b.address))
                .is_some_and(|l| l.wants(cfg, b.weight, now).is_some())
        });
        if wants {
            self.load_pending.insert(pool.to_owned());
        }
    }

    /// Publishes the load changes of pending pools whose `min_rebuild_interval` has passed, in
    /// one generation. Also notices metrics that went stale without a scrape result.
    fn publish_load(&mut self) {
        let now = Instant::now();
        if now >= self.next_stale_check {
            self.next_stale_check = now + STALE_CHECK;
            let pools: Vec<String> = self
                .current
                .policy
                .pools
                .iter()
                .filter(|p| p.load.is_some())
                .map(|p| p.name.clone())
                .collect();
            for pool in pools {
                self.evaluate_load(&pool, now);
            }
        }
        if self.load_pending.is_empty() {
            return;
        }
        let policy = self.current.policy.clone();
        let mut changed = Vec::new();
        for pool in std::mem::take(&mut self.load_pending) {
            let Some(p) = policy.pool_by_name(&pool).map(|id| policy.pool(id)) else {
                continue;
            };
            let Some(cfg) = &p.load else {
                continue;
            };
            let due = self
                .load_published_at
                .get(&pool)
                .is_none_or(|at| now.saturating_duration_since(*at) >= cfg.min_rebuild_interval);
            if !due {
                self.load_pending.insert(pool);
                continue;
            }
            let mut any = false;
            for b in &p.backends {
                let Some(l) = self.loads.get_mut(&(pool.clone(), b.address)) else {
                    continue;
                };
                // Every backend of the pool moves to its target at once, so one rebuild
                // carries all of the pool's drift.
                let target = l.target(cfg, b.weight, now);
                if target != l.published {
                    self.events.emit(weight_event(
                        &pool,
                        b.address,
                        b.weight,
                        l.published,
                        target,
                    ));
                    l.published = target;
                    self.backend_state
                        .set_weight(&pool, b.address, target.weight);
                    self.backend_state.set_full(&pool, b.address, target.full);
                    any = true;
                }
            }
            if any {
                self.load_published_at.insert(pool.clone(), now);
                changed.push(pool);
            }
        }
        if !changed.is_empty() {
            self.counters.load_updates += 1;
            self.republish(&format!(
                "load: pool{} {}",
                if changed.len() == 1 { "" } else { "s" },
                changed.join(", ")
            ));
        }
    }

    /// Compiles the current policy against the new backend state and publishes it when the
    /// tables differ.
    fn republish(&mut self, why: &str) {
        let policy = self.current.policy.clone();
        let candidate = match self.prepare(&policy) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "{why}: the policy cannot be compiled: {e}; generation {} stays",
                    self.current.number()
                );
                return;
            }
        };
        if !candidate.changed {
            return;
        }
        log_lines(tracing::Level::INFO, &candidate.diff.to_string());
        self.cause = Some(why.to_owned());
        if let Err(e) = self.publish(policy, candidate, QUICK_WAIT) {
            error!(
                "{why}: publishing failed: {e}; generation {} stays",
                self.current.number()
            );
        }
    }

    /// Fills the live health and load views of `pools`.
    fn fill_live(&self, pools: &mut [super::view::PoolView]) {
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        for pool in pools {
            let cfg = self
                .current
                .policy
                .pool_by_name(&pool.name)
                .and_then(|id| self.current.policy.pool(id).load.as_ref());
            for b in &mut pool.backends {
                let Ok(address) = b.address.parse::<IpAddr>() else {
                    continue;
                };
                let key = (pool.name.clone(), address);
                if let Some(h) = self.health.get(&key) {
                    b.check = Some(CheckView {
                        state: h.state.as_str().to_owned(),
                        since_ms: ms(now.saturating_duration_since(h.since)),
                        reason: h.reason.clone(),
                        last_probe: h.last.as_ref().map(|p| p.result.clone()),
                        last_probe_ms_ago: h
                            .last
                            .as_ref()
                            .map(|p| ms(now.saturating_duration_since(p.at))),
                    });
                }
                if let (Some(l), Some(cfg)) = (self.loads.get(&key), cfg) {
                    b.load = Some(LoadView {
                        load: l.load,
                        signals: cfg
                            .signals
                            .iter()
                            .zip(&l.values)
                            .filter_map(|(n, v)| v.map(|v| (n.clone(), v)))
                            .collect(),
                        metrics_age_ms: l.age(now).map(ms),
                        stale: l.stale(cfg, now),
                        error: l.last_error.clone(),
                        full: l.published.full,
                    });
                }
            }
        }
    }
}

/// Phased canaries: progress kept in a file, advanced on a tick, gated on the canary pool.
impl Controller {
    /// Loads rollout progress (a bad file is logged and progress starts afresh) and follows
    /// `policy`.
    fn load_rollouts(&mut self, policy: &Policy) {
        self.rollouts = match Rollouts::load(&self.rollouts_path) {
            Ok(r) => r,
            Err(e) => {
                error!("{e}; rollouts start from their first step");
                Rollouts::new()
            }
        };
        let events = self.rollouts.sync(policy, SystemTime::now());
        self.log_rollouts(&events);
        if !events.is_empty() {
            self.save_rollouts();
        }
    }

    fn save_rollouts(&self) {
        if let Err(e) = self.rollouts.save(&self.rollouts_path) {
            warn!(
                "cannot save rollout progress to {}: {e}",
                self.rollouts_path.display()
            );
        }
    }

    fn log_rollouts(&self, events: &[RolloutEvent]) {
        for e in events {
            self.events.emit(rollout_event(e));
            match e.kind {
                crate::rollout::RolloutEventKind::RolledBack => warn!("rollout: {e}"),
                _ => info!("rollout: {e}"),
            }
        }
    }

    /// What the rollouts know of a canary pool right now.
    fn pool_health(&self, pool: &str, gate: bool) -> PoolHealth {
        let policy = &self.current.policy;
        let Some(p) = policy.pool_by_name(pool).map(|id| policy.pool(id)) else {
            return PoolHealth::default();
        };
        let backends_down = p
            .backends
            .iter()
            .filter(|b| {
                self.health
                    .get(&(p.name.clone(), b.address))
                    .is_some_and(|h| h.state == Health::Down)
            })
            .count();
        let signal = gate
            .then(|| {
                let stale_after = p.load.as_ref().map_or(Duration::ZERO, |l| l.stale_after);
                let fresh: Vec<(f64, SystemTime)> = p
                    .backends
                    .iter()
                    .filter_map(|b| self.gate_readings.get(&(p.name.clone(), b.address)))
                    .filter(|(_, at)| at.elapsed().unwrap_or_default() <= stale_after)
                    .copied()
                    .collect();
                let read_at = fresh.iter().map(|&(_, at)| at).max()?;
                Some(SignalReading {
                    sum: fresh.iter().map(|&(v, _)| v).sum(),
                    sources: u32::try_from(fresh.len()).unwrap_or(u32::MAX),
                    read_at,
                })
            })
            .flatten();
        PoolHealth {
            backends_down: u32::try_from(backends_down).unwrap_or(u32::MAX),
            backends: u32::try_from(p.backends.len()).unwrap_or(u32::MAX),
            signal,
        }
    }

    /// Advances due steps and trips gates; publishes when a canary's share changed.
    fn tick_rollouts(&mut self) {
        let now = Instant::now();
        if now < self.next_rollout_tick {
            return;
        }
        self.next_rollout_tick = now + ROLLOUT_TICK;
        let gates = fleet::gate_metrics(&self.current.policy);
        let pools: BTreeMap<String, PoolHealth> = self
            .current
            .policy
            .services
            .iter()
            .filter_map(|s| s.canary.as_ref().filter(|c| c.rollout.is_some()))
            .map(|c| {
                let name = self.current.policy.pool(c.pool).name.clone();
                let gate = gates.contains_key(&name);
                (name.clone(), self.pool_health(&name, gate))
            })
            .collect();
        if pools.is_empty() {
            return;
        }
        let events = self.rollouts.tick(SystemTime::now(), &|pool: &str| {
            pools.get(pool).copied().unwrap_or_default()
        });
        self.after_rollout_events(&events, "rollout");
    }

    fn after_rollout_events(&mut self, events: &[RolloutEvent], why: &str) {
        if events.is_empty() {
            return;
        }
        self.log_rollouts(events);
        self.save_rollouts();
        if events.iter().any(|e| e.share_changed) {
            self.republish(why);
        }
    }

    fn rollout_action(
        &mut self,
        service: &str,
        action: RolloutAction,
    ) -> Result<Vec<RolloutStatus>, ApiFailure> {
        let now = SystemTime::now();
        let result = match action {
            RolloutAction::Pause => self.rollouts.pause(service, now),
            RolloutAction::Resume => self.rollouts.resume(service, now),
            RolloutAction::Abort => self.rollouts.abort(service, now),
        };
        match result {
            Ok(event) => {
                let events: Vec<RolloutEvent> = event.into_iter().collect();
                self.after_rollout_events(&events, "rollout (operator)");
                Ok(self.rollouts.status(now))
            }
            Err(e) => {
                let status = match e {
                    RolloutError::NoRollout { .. } => 404,
                    _ => 409,
                };
                Err(ApiFailure::new(status, e.to_string(), Vec::new()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_can_run_on_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Controller>();
        assert_send::<Request>();
    }

    #[test]
    fn policy_is_saved_whole_with_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("swyd-save-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.yaml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.join("current.yaml");
        std::os::unix::fs::symlink(&path, &link).unwrap();

        save_policy(&link, b"new text").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new text");
        assert!(
            fs::symlink_metadata(&link).unwrap().is_symlink(),
            "the link stays"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
