//! What the local API says, as JSON: the daemon serializes these types and the `apply` and
//! `show` subcommands deserialize them, so both ends agree by construction.
//!
//! Field names are part of the API (`docs/CONTROL.md`); add fields, do not rename them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/state`: what the appliance is doing right now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateView {
    /// Shared-memory instance name (`default` unless `--instance` said otherwise).
    pub instance: String,
    /// The policy file the daemon watches.
    pub policy_file: String,
    /// Publication status of the policy the daemon holds.
    pub generation: GenerationView,
    /// The data plane as the shared-memory segment shows it.
    pub dataplane: DataplaneView,
    /// Services of the current policy, in policy order.
    pub services: Vec<ServiceView>,
    /// Pools of the current policy, in policy order.
    pub pools: Vec<PoolView>,
    /// Phased canary rollouts and where they are.
    #[serde(default)]
    pub rollouts: Vec<crate::rollout::RolloutStatus>,
    /// Control-plane counters since the daemon started.
    pub counters: ControlCounters,
    /// The policy file as the daemon last read it does not load: what is wrong, since when.
    /// `None` while the file on disk is the policy the daemon runs.
    #[serde(default)]
    pub policy_error: Option<PolicyErrorView>,
}

/// A policy file the daemon could not adopt (it keeps running what it had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyErrorView {
    /// The file.
    pub file: String,
    /// Line and column of the first problem, when the problem has a place.
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The first problem (`PATH: MESSAGE`).
    pub message: String,
    /// Every problem, one `FILE:LINE:COL: PATH: MESSAGE` line each.
    pub errors: Vec<String>,
    /// Unix time (seconds) the daemon first found the file in this state.
    pub since_unix: u64,
    /// Milliseconds since then.
    pub since_ms: u64,
    /// Set when the daemon started from its last known good copy because of this error: the
    /// copy's path.
    pub running_last_good: Option<String>,
}

/// Where the current policy is on its way to the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationView {
    /// The generation compiled from the current policy (the last one published, or the live
    /// one the daemon found at start when nothing had changed).
    pub current: u64,
    /// The newest generation the control plane published (from the segment).
    pub published: u64,
    /// The generation every worker runs (0: none yet, or no data plane).
    pub live: u64,
    /// `live`, `pending` (published, not yet acknowledged by every worker) or `rejected`.
    pub status: PublishStatus,
    /// Publish→live time of the last generation that went live, in milliseconds.
    pub last_publish_to_live_ms: Option<f64>,
    /// The last generation the data plane refused, and why.
    pub last_rejected: Option<RejectedView>,
    /// The current generation's digest ([`super::describe::digest`]): equal on nodes that
    /// forward alike.
    #[serde(default)]
    pub digest: String,
}

/// A generation the data plane refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedView {
    pub generation: u64,
    /// The data plane's reason, e.g. `bad_checksum`.
    pub reason: String,
}

/// How far a published generation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishStatus {
    /// Every worker runs it.
    Live,
    /// Published; not every worker has acknowledged it yet (or no data plane is attached).
    Pending,
    /// The data plane refused it; the previous generation stays live.
    Rejected,
    /// Nothing needed publishing: what is live already forwards exactly like it.
    Unchanged,
}

impl PublishStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Pending => "pending",
            Self::Rejected => "rejected",
            Self::Unchanged => "unchanged",
        }
    }
}

/// The data plane, from its line of the shared-memory segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneView {
    /// True while a data-plane process holds its role on the segment (the kernel releases it
    /// when the process dies).
    pub running: bool,
    /// 0 when no data plane ever attached.
    pub pid: u64,
    /// Incremented by each data-plane start.
    pub epoch: u64,
    /// Milliseconds since its last heartbeat, when it ever had one.
    pub heartbeat_age_ms: Option<u64>,
    pub live_generation: u64,
    /// One entry per worker.
    pub workers: Vec<WorkerView>,
}

/// One data-plane worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerView {
    pub worker: u32,
    pub live_generation: u64,
    pub packets: u64,
    pub drops: u64,
}

/// A service of the current policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    /// The VIP (`203.0.113.10`) or VIP prefix (`203.0.113.0/28`).
    pub vip: String,
    /// Ports and ranges (`443`, `8000-8010`).
    pub ports: Vec<String>,
    pub protocol: String,
    pub routes: Vec<RouteView>,
    pub canary: Option<CanaryView>,
}

/// A route of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// The clients' region; `None` for the catch-all route.
    pub from: Option<String>,
    pub pool: String,
    pub fallback: Vec<String>,
    /// `strict` or `preferred`.
    pub residency: String,
}

/// A service's canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryView {
    pub pool: String,
    /// As written: `5%`, `0.5%`.
    pub percent: String,
}

/// A pool of the current policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub region: Option<String>,
    /// `maglev`, `ip_hash`, `round_robin`, `least_conn` or `weighted`.
    pub scheduler: String,
    /// Maglev table size (0 for schedulers without one).
    pub maglev_size: u32,
    /// `http :8000/v1/models`, `tcp :8000`, or `None` (every backend counts as up).
    pub health_check: Option<String>,
    pub backends: Vec<BackendView>,
}

/// A backend as the current generation has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    /// Stable id in the data plane's connection tables (from 1).
    pub id: u32,
    pub address: String,
    pub name: Option<String>,
    /// Weight written in the policy.
    pub weight: u32,
    /// Weight in the generation (0 when drained or unhealthy-by-policy, live load otherwise).
    pub effective_weight: u32,
    pub healthy: bool,
    /// `up`, `down` (health check failing) or `drained` (weight 0).
    pub state: String,
    /// The health check's view, for pools with `health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckView>,
    /// Live load, for pools with `load`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadView>,
}

/// What the health check says of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    /// `up` or `down`.
    pub state: String,
    /// Time since the state last changed (or since checking started).
    pub since_ms: u64,
    /// Why it last changed (`timeout (3 failures in a row, fall 3)`); empty before any change.
    pub reason: String,
    /// The last probe's result: `ok` or why it failed.
    pub last_probe: Option<String>,
    pub last_probe_ms_ago: Option<u64>,
}

/// Live load of a backend and the weight it gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadView {
    /// Smoothed load (1.0 = saturated); `None` before the first good scrape.
    pub load: Option<f64>,
    /// The signals of the last good scrape.
    pub signals: BTreeMap<String, f64>,
    pub metrics_age_ms: Option<u64>,
    /// Metrics older than `stale_after`: the configured weight applies.
    pub stale: bool,
    /// The last scrape's error, if it failed.
    pub error: Option<String>,
    /// Marked full for bounded-load affinity in the tables.
    pub full: bool,
}

/// Control-plane counters since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlCounters {
    /// Generations published.
    pub publishes: u64,
    /// Generations the data plane refused.
    pub rejects: u64,
    /// Policies loaded and applied (file changes, SIGHUP, `apply`).
    pub reloads: u64,
    /// Policies refused by validation or the compiler (nothing changed).
    pub reload_failures: u64,
    /// Data-plane restarts seen (each followed by a republish).
    pub dataplane_restarts: u64,
    /// Backends that went up or down by their health checks.
    #[serde(default)]
    pub health_transitions: u64,
    /// Load-driven table changes published (each one generation for every pool then due).
    #[serde(default)]
    pub load_updates: u64,
}

/// `POST /v1/apply` on success (HTTP 200).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub dry_run: bool,
    /// Whether the policy forwards differently from what is live.
    pub changed: bool,
    /// The generation diff against what is live, one change per line.
    pub diff: String,
    /// The generation published (or, for a dry run, that would be); for an unchanged policy
    /// the generation already current.
    pub generation: u64,
    /// `live`, `pending`, `rejected` or `unchanged`; a dry run says `unchanged` or `pending`.
    pub status: PublishStatus,
    /// Publish→live time when it went live within the wait.
    pub publish_to_live_ms: Option<f64>,
    /// Why the data plane refused it, when it did.
    pub reason: Option<String>,
}

/// The body of every API error (HTTP 4xx/5xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// One line for the operator.
    pub error: String,
    /// For a refused policy: every problem, one per line, as `FILE:LINE:COL: PATH: MESSAGE`.
    #[serde(default)]
    pub errors: Vec<String>,
}
