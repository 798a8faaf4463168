//! Phased canary rollouts: the control plane's state of every `canary: { steps: [..] }`.
//!
//! A phased canary goes through its steps (1 % → 5 % → 25 % → 100 %), holding each for the
//! policy's `step_interval`, and moves on only while its rollback gates pass; a tripped gate
//! sets the share to 0 and halts the rollout until the operator resumes it or changes the
//! canary in the policy. [`Rollouts`] is that state machine and nothing else: it does no I/O
//! of its own apart from [`Rollouts::load`] / [`Rollouts::save`], reads no clock (every call
//! takes `now`) and starts no thread, so the same inputs always give the same steps. The
//! daemon drives it:
//!
//! 1. [`Rollouts::load`] the saved state at start, then [`Rollouts::sync`] with the policy
//!    (and again after every reload);
//! 2. [`Rollouts::tick`] every second or so with the health and the gate metric of each
//!    canary pool;
//! 3. after any event whose share changed, [`Rollouts::apply_to`] a copy of the policy,
//!    compile and publish it, then [`Rollouts::save`].
//!
//! Times are wall-clock ([`SystemTime`]) so that progress survives a restart: a rollout picks
//! up where it was, and a step whose interval ran out while the daemon was down moves on at
//! the first tick whose gates pass. A clock that steps backwards only delays a step.
//!
//! The rate of the gate counter is computed here from successive readings of its sum over the
//! canary pool's backends, over a window of up to [`SIGNAL_WINDOW`]. A sum that goes down is
//! a counter reset (a backend restarted), never a negative rate: the reading becomes a new
//! baseline. So does a reading summed over a different number of backends.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::policy::{Percent, Policy, RollbackGates, SignalGate};

/// Longest span of readings the gate rate is computed over (shorter for a shorter
/// `step_interval`): one slow scrape or a single error does not trip the gate on its own.
pub const SIGNAL_WINDOW: Duration = Duration::from_secs(60);

/// Version of the saved state file; another version is refused as corrupt.
const STATE_VERSION: u32 = 1;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// At a step, moving on when its interval has passed and the gates pass.
    Running,
    /// Held at a step by the operator; the step's clock is stopped, the gates still watch.
    Paused,
    /// The last step has been held for a full interval: the share stays there and the gates
    /// are disarmed.
    Complete,
    /// A gate tripped: share 0 until `resume` or a changed canary in the policy.
    RolledBack,
    /// The operator aborted: share 0 until `resume` or a changed canary in the policy.
    Aborted,
}

impl RolloutState {
    /// The name used in the CLI, the API and the state file.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Complete => "complete",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Whether the gates are watched: only while the canary is on its way.
    fn is_live(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the daemon knows about a canary pool at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PoolHealth {
    /// Backends the health checks hold down. A backend not yet checked counts as up.
    pub backends_down: u32,
    /// Backends in the pool.
    pub backends: u32,
    /// The gate metric summed over the pool's backends, when it was scraped; `None` when the
    /// pool has no signal gate or no scrape has succeeded.
    pub signal: Option<SignalReading>,
}

/// One reading of a gate counter, summed over the backends that answered the scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalReading {
    /// Sum of the counter over `sources` backends.
    pub sum: f64,
    /// How many backends the sum covers; a change starts a new baseline, so a backend that
    /// drops out of or comes back into the sum is not read as a burst.
    pub sources: u32,
    /// When it was scraped. A reading no newer than the previous one is ignored.
    pub read_at: SystemTime,
}

/// What a [`RolloutEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutEventKind {
    /// A new phased canary appeared in the policy.
    Started,
    /// The canary's pool or steps changed in the policy: back to the first step.
    Restarted,
    /// On to the next step.
    Advanced,
    /// The last step was held for a full interval.
    Completed,
    /// A step is due but cannot move on yet (no fresh gate reading).
    Waiting,
    /// A gate tripped: share 0, halted.
    RolledBack,
    Paused,
    /// Resumed after a pause, or restarted from the first step after a rollback or abort.
    Resumed,
    /// The operator aborted: share 0, halted.
    Aborted,
    /// The service no longer has a phased canary; its state is forgotten.
    Dropped,
}

/// Something a rollout did, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutEvent {
    pub service: String,
    /// The canary pool.
    pub pool: String,
    pub kind: RolloutEventKind,
    /// The canary share after the event.
    pub percent: Percent,
    /// Index of the step the rollout is at (or was at, before a rollback).
    pub step: usize,
    /// Number of steps.
    pub steps: usize,
    /// Whether the share the data plane should use changed: apply, compile and publish.
    pub share_changed: bool,
    /// Why, in words: "canary pool llama-v2 has 1 backend down (gate 1)".
    pub reason: String,
}

impl fmt::Display for RolloutEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (service, pool, percent) = (&self.service, &self.pool, self.percent);
        let at = format!("step {} of {}", self.step + 1, self.steps);
        match self.kind {
            RolloutEventKind::Started => write!(
                f,
                "{service}: rollout to canary pool {pool} started at {percent} ({at})"
            )?,
            RolloutEventKind::Restarted => {
                write!(f, "{service}: rollout restarted at {percent} ({at})")?;
            }
            RolloutEventKind::Advanced => write!(
                f,
                "{service}: canary pool {pool} advanced to {percent} ({at})"
            )?,
            RolloutEventKind::Completed => write!(
                f,
                "{service}: rollout to canary pool {pool} complete at {percent}"
            )?,
            RolloutEventKind::Waiting => write!(f, "{service}: {at} is due but holds")?,
            RolloutEventKind::RolledBack => write!(
                f,
                "{service}: canary pool {pool} rolled back to {percent} and halted"
            )?,
            RolloutEventKind::Paused => {
                write!(f, "{service}: rollout paused at {percent} ({at})")?;
            }
            RolloutEventKind::Resumed => {
                write!(f, "{service}: rollout resumed at {percent} ({at})")?;
            }
            RolloutEventKind::Aborted => write!(
                f,
                "{service}: rollout aborted, canary pool {pool} at {percent} and halted"
            )?,
            RolloutEventKind::Dropped => write!(f, "{service}: rollout state dropped")?,
        }
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

/// One rollout as the CLI and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub service: String,
    /// The canary pool.
    pub pool: String,
    pub state: RolloutState,
    /// Index (from 0) into `steps` of the current step; after a rollback or abort, of the
    /// step the rollout had reached.
    pub step: usize,
    /// The steps as written: `["1%", "5%", "25%", "100%"]`.
    pub steps: Vec<String>,
    /// The share in effect now: `"5%"`, `"0%"` after a rollback.
    pub percent: String,
    /// Seconds (rounded up) until the current step is done: 0 when it is due but holds.
    /// While paused, what will be left on resume. `None` once complete, rolled back or
    /// aborted.
    pub next_step_in_secs: Option<u64>,
    /// Why a due step holds.
    pub waiting: Option<String>,
    /// Why the last rollback or abort happened.
    pub reason: Option<String>,
    /// Rate of the gate counter, per second, as last computed.
    pub signal_rate: Option<f64>,
}

/// Why a rollout operation failed.
#[derive(Debug)]
pub enum RolloutError {
    /// The state file exists but cannot be read.
    Read { path: PathBuf, source: io::Error },
    /// The state file is not a rollout state this version understands.
    Corrupt { path: PathBuf, message: String },
    /// The service has no phased canary.
    NoRollout { service: String },
    /// The operation does not apply in the rollout's state.
    NotNow {
        service: String,
        action: &'static str,
        state: RolloutState,
    },
}

impl fmt::Display for RolloutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutError::Read { path, source } => {
                write!(f, "cannot read rollout state {}: {source}", path.display())
            }
            RolloutError::Corrupt { path, message } => {
                write!(
                    f,
                    "rollout state {} is not valid: {message}",
                    path.display()
                )
            }
            RolloutError::NoRollout { service } => write!(
                f,
                "service `{service}` has no phased canary (`canary.steps`) in the policy"
            ),
            RolloutError::NotNow {
                service,
                action,
                state,
            } => {
                let state = match state {
                    RolloutState::RolledBack => "rolled back",
                    other => other.as_str(),
                };
                write!(
                    f,
                    "cannot {action} the rollout of `{service}`: it is {state}"
                )
            }
        }
    }
}

impl std::error::Error for RolloutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RolloutError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The rollout of every service with a phased canary, by service name.
#[derive(Debug, Clone, Default)]
pub struct Rollouts {
    services: BTreeMap<String, ServiceRollout>,
}

#[derive(Debug, Clone)]
struct ServiceRollout {
    pool: String,
    steps: Vec<Percent>,
    step_interval: Duration,
    gates: RollbackGates,
    state: RolloutState,
    step: usize,
    /// When the current step's clock started, moved later by any time spent paused.
    step_since: SystemTime,
    paused_at: Option<SystemTime>,
    /// Why the last rollback or abort happened.
    reason: Option<String>,
    /// Why a due step holds (not saved).
    waiting: Option<String>,
    /// Recent gate readings (not saved: after a restart the rate is measured afresh).
    signal: SignalTracker,
}

impl ServiceRollout {
    fn new(pool: String, rollout: &crate::policy::Rollout, now: SystemTime) -> Self {
        Self {
            pool,
            steps: rollout.steps.clone(),
            step_interval: rollout.step_interval,
            gates: rollout.rollback.clone(),
            state: RolloutState::Running,
            step: 0,
            step_since: now,
            paused_at: None,
            reason: None,
            waiting: None,
            signal: SignalTracker::default(),
        }
    }

    fn percent(&self) -> Percent {
        match self.state {
            RolloutState::RolledBack | RolloutState::Aborted => zero(),
            _ => self.steps[self.step],
        }
    }

    /// Time spent at the current step, not counting pauses.
    fn elapsed(&self, now: SystemTime) -> Duration {
        let until = self.paused_at.unwrap_or(now);
        until.duration_since(self.step_since).unwrap_or_default()
    }

    fn remaining(&self, now: SystemTime) -> Duration {
        self.step_interval.saturating_sub(self.elapsed(now))
    }

    fn window(&self) -> Duration {
        SIGNAL_WINDOW.min(self.step_interval)
    }

    /// Back to the first step, clock started now, nothing remembered of the last run.
    fn restart(&mut self, now: SystemTime) {
        self.state = RolloutState::Running;
        self.step = 0;
        self.step_since = now;
        self.paused_at = None;
        self.reason = None;
        self.waiting = None;
        self.signal = SignalTracker::default();
    }

    /// The first gate that trips, in words.
    fn tripped(&self, health: &PoolHealth) -> Option<String> {
        let gate = self.gates.backends_down;
        if health.backends_down >= gate {
            let down = health.backends_down;
            let plural = if down == 1 { "" } else { "s" };
            return Some(format!(
                "canary pool {} has {down} backend{plural} down (gate {gate})",
                self.pool
            ));
        }
        let SignalGate { metric, max_rate } = self.gates.signal.as_ref()?;
        let rate = self.signal.rate?;
        (rate.per_second > *max_rate).then(|| {
            format!(
                "{metric} rate {}/s over {}/s on canary pool {}",
                show_number(rate.per_second),
                show_number(*max_rate),
                self.pool
            )
        })
    }

    /// Why a due step cannot move on: its signal gate has had no reading since the step
    /// began, so it has not been checked for this step.
    fn missing_evidence(&self) -> Option<String> {
        let SignalGate { metric, .. } = self.gates.signal.as_ref()?;
        let fresh = self
            .signal
            .rate
            .is_some_and(|rate| rate.at >= self.step_since);
        (!fresh).then(|| {
            format!(
                "no rate of {metric} from canary pool {} since this step began \
                 (it takes two scrapes)",
                self.pool
            )
        })
    }

    fn event(
        &self,
        service: &str,
        kind: RolloutEventKind,
        share_changed: bool,
        reason: String,
    ) -> RolloutEvent {
        RolloutEvent {
            service: service.to_owned(),
            pool: self.pool.clone(),
            kind,
            percent: self.percent(),
            step: self.step,
            steps: self.steps.len(),
            share_changed,
            reason,
        }
    }

    fn status(&self, service: &str, now: SystemTime) -> RolloutStatus {
        let next_step_in_secs = self.state.is_live().then(|| ceil_secs(self.remaining(now)));
        RolloutStatus {
            service: service.to_owned(),
            pool: self.pool.clone(),
            state: self.state,
            step: self.step,
            steps: self.steps.iter().map(ToString::to_string).collect(),
            percent: self.percent().to_string(),
            next_step_in_secs,
            waiting: self.waiting.clone(),
            reason: self.reason.clone(),
            signal_rate: self.signal.rate.map(|r| r.per_second),
        }
    }
}

/// Readings of the gate counter over the last [`SIGNAL_WINDOW`] and the rate they give.
#[derive(Debug, Clone, Default)]
struct SignalTracker {
    /// Oldest first; all of one baseline (no reset, same sources), so the sums never fall.
    readings: VecDeque<SignalReading>,
    rate: Option<Rate>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_second: f64,
    /// Time of the newest reading it was computed from.
    at: SystemTime,
}

impl SignalTracker {
    fn observe(&mut self, reading: SignalReading, window: Duration) {
        if !reading.sum.is_finite() || reading.sum < 0.0 {
            return;
        }
        if let Some(last) = self.readings.back() {
            if reading.read_at <= last.read_at {
                // The same scrape again, or one older than what we have.
                return;
            }
            if reading.sum < last.sum || reading.sources != last.sources {
                // A counter reset, or a sum over other backends: neither says how many
                // events happened, so start a new baseline.
                self.readings.clear();
            }
        }
        self.readings.push_back(reading);
        // Keep the newest reading at least `window` old as the base, drop older ones.
        let cutoff = reading.read_at.checked_sub(window);
        while self.readings.len() > 2
            && cutoff.is_some_and(|cutoff| self.readings[1].read_at <= cutoff)
        {
            self.readings.pop_front();
        }
        if let (Some(first), Some(last)) = (self.readings.front(), self.readings.back()) {
            if let Ok(span) = last.read_at.duration_since(first.read_at) {
                if !span.is_zero() {
                    self.rate = Some(Rate {
                        per_second: (last.sum - first.sum) / span.as_secs_f64(),
                        at: last.read_at,
                    });
                }
            }
        }
    }
}

impl Rollouts {
    /// No rollouts.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the state saved by [`Rollouts::save`]. A missing file is no state.
    ///
    /// # Errors
    /// A file that cannot be read or is not a valid state file. The caller logs it and
    /// starts afresh (every phased canary at its first step).
    pub fn load(path: &Path) -> Result<Self, RolloutError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(source) => {
                return Err(RolloutError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let corrupt = |message: String| RolloutError::Corrupt {
            path: path.to_owned(),
            message,
        };
        let saved: SavedState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if saved.version != STATE_VERSION {
            return Err(corrupt(format!(
                "version {} (this control plane reads version {STATE_VERSION})",
                saved.version
            )));
        }
        let mut services = BTreeMap::new();
        for entry in saved.rollouts {
            let service = entry.service.clone();
            let rollout = entry
                .into_rollout()
                .map_err(|m| corrupt(format!("service `{service}`: {m}")))?;
            if services.insert(service.clone(), rollout).is_some() {
                return Err(corrupt(format!("service `{service}` is listed twice")));
            }
        }
        Ok(Self { services })
    }

    /// Writes the state as JSON to a temporary file beside `path`, then renames it over
    /// `path`, so a crash leaves the old state or the new one, never half of one.
    ///
    /// # Errors
    /// Writing, syncing or renaming failed.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let saved = SavedState {
            version: STATE_VERSION,
            rollouts: self
                .services
                .iter()
                .map(|(service, r)| SavedRollout::of(service, r))
                .collect(),
        };
        let mut json = serde_json::to_vec_pretty(&saved).map_err(io::Error::other)?;
        json.push(b'\n');
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let temp = path.with_file_name(name);
        let written = (|| {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Brings the rollouts in line with the policy: starts one for each new phased canary,
    /// keeps the progress of a canary whose pool and steps are unchanged (taking its new
    /// `step_interval` and gates), restarts one whose pool or steps changed, and forgets
    /// services that no longer have a phased canary.
    pub fn sync(&mut self, policy: &Policy, now: SystemTime) -> Vec<RolloutEvent> {
        let mut events = Vec::new();
        let mut wanted = BTreeMap::new();
        for service in &policy.services {
            let Some(canary) = &service.canary else {
                continue;
            };
            if let Some(rollout) = &canary.rollout {
                let pool = policy.pool(canary.pool).name.clone();
                wanted.insert(service.name.as_str(), (pool, rollout));
            }
        }

        self.services.retain(|service, r| {
            if wanted.contains_key(service.as_str()) {
                return true;
            }
            events.push(r.event(
                service,
                RolloutEventKind::Dropped,
                true,
                "the policy no longer has a phased canary for this service".to_owned(),
            ));
            false
        });

        for (service, (pool, rollout)) in wanted {
            match self.services.get_mut(service) {
                Some(r) if r.pool == pool && r.steps == rollout.steps => {
                    let metric = |g: &RollbackGates| g.signal.as_ref().map(|s| s.metric.clone());
                    if metric(&r.gates) != metric(&rollout.rollback) {
                        r.signal = SignalTracker::default();
                    }
                    r.step_interval = rollout.step_interval;
                    r.gates = rollout.rollback.clone();
                }
                Some(r) => {
                    let change = if r.pool == pool {
                        format!(
                            "steps changed in the policy from {} to {}",
                            show_steps(&r.steps),
                            show_steps(&rollout.steps)
                        )
                    } else {
                        format!(
                            "canary pool changed in the policy from {} to {pool}",
                            r.pool
                        )
                    };
                    *r = ServiceRollout::new(pool, rollout, now);
                    events.push(r.event(service, RolloutEventKind::Restarted, true, change));
                }
                None => {
                    let r = ServiceRollout::new(pool, rollout, now);
                    let reason = format!(
                        "steps {}, {} each",
                        show_steps(&r.steps),
                        show_duration(r.step_interval)
                    );
                    events.push(r.event(service, RolloutEventKind::Started, true, reason));
                    self.services.insert(service.to_owned(), r);
                }
            }
        }
        events
    }

    /// Moves every live rollout along: reads its canary pool's health, rolls it back if a
    /// gate trips (paused ones too), and advances a running one whose step interval has
    /// passed. One step per tick at most: a step that ran out while the daemon was down moves
    /// on now, and the next step gets its full interval.
    pub fn tick(
        &mut self,
        now: SystemTime,
        health: &dyn Fn(&str) -> PoolHealth,
    ) -> Vec<RolloutEvent> {
        let mut events = Vec::new();
        for (service, r) in &mut self.services {
            if !r.state.is_live() {
                continue;
            }
            let pool_health = health(&r.pool);
            if let Some(reading) = pool_health.signal.filter(|_| r.gates.signal.is_some()) {
                let window = r.window();
                r.signal.observe(reading, window);
            }
            if let Some(reason) = r.tripped(&pool_health) {
                r.state = RolloutState::RolledBack;
                r.paused_at = None;
                r.waiting = None;
                r.reason = Some(reason.clone());
                events.push(r.event(service, RolloutEventKind::RolledBack, true, reason));
                continue;
            }
            if r.state == RolloutState::Paused || r.elapsed(now) < r.step_interval {
                continue;
            }
            if let Some(wait) = r.missing_evidence() {
                if r.waiting.as_ref() != Some(&wait) {
                    r.waiting = Some(wait.clone());
                    events.push(r.event(service, RolloutEventKind::Waiting, false, wait));
                }
                continue;
            }
            r.waiting = None;
            let held = format!(
                "{} at {} with the gates passing",
                show_duration(r.elapsed(now)),
                r.steps[r.step]
            );
            if r.step + 1 < r.steps.len() {
                r.step += 1;
                r.step_since = now;
                events.push(r.event(service, RolloutEventKind::Advanced, true, held));
            } else {
                r.state = RolloutState::Complete;
                events.push(r.event(service, RolloutEventKind::Completed, false, held));
            }
        }
        events
    }

    /// The canary share of `service` now; `None` when it has no phased canary.
    #[must_use]
    pub fn percent(&self, service: &str) -> Option<Percent> {
        self.services.get(service).map(ServiceRollout::percent)
    }

    /// Holds a running rollout at its step: the step's clock stops (the time left is kept
    /// for [`Rollouts::resume`]); the share stays and the gates keep watching. Pausing a
    /// paused rollout does nothing.
    ///
    /// # Errors
    /// No phased canary for `service`, or its rollout is complete, rolled back or aborted.
    pub fn pause(
        &mut self,
        service: &str,
        now: SystemTime,
    ) -> Result<Option<RolloutEvent>, RolloutError> {
        let r = self.get_mut(service)?;
        match r.state {
            RolloutState::Paused => Ok(None),
            RolloutState::Running => {
                r.state = RolloutState::Paused;
                r.paused_at = Some(now);
                r.waiting = None;
                let reason = format!(
                    "by the operator, {} left at this step",
                    show_duration(r.remaining(now))
                );
                Ok(Some(r.event(
                    service,
                    RolloutEventKind::Paused,
                    false,
                    reason,
                )))
            }
            state => Err(RolloutError::NotNow {
                service: service.to_owned(),
                action: "pause",
                state,
            }),
        }
    }

    /// Resumes a paused rollout with the time its step had left. A rolled-back or aborted
    /// rollout restarts from the first step (the step it had reached is not trusted any
    /// more: it may be what tripped the gate). Resuming a running rollout does nothing.
    ///
    /// # Errors
    /// No phased canary for `service`, or its rollout is complete.
    pub fn resume(
        &mut self,
        service: &str,
        now: SystemTime,
    ) -> Result<Option<RolloutEvent>, RolloutError> {
        let r = self.get_mut(service)?;
        match r.state {
            RolloutState::Running => Ok(None),
            RolloutState::Paused => {
                let paused_at = r.paused_at.take().unwrap_or(now);
                r.step_since += now.duration_since(paused_at).unwrap_or_default();
                r.state = RolloutState::Running;
                let reason = format!(
                    "by the operator, next step in {}",
                    show_duration(r.remaining(now))
                );
                Ok(Some(r.event(
                    service,
                    RolloutEventKind::Resumed,
                    false,
                    reason,
                )))
            }
            RolloutState::RolledBack | RolloutState::Aborted => {
                let after = match (r.state, &r.reason) {
                    (RolloutState::RolledBack, Some(why)) => format!("rollback ({why})"),
                    _ => "abort".to_owned(),
                };
                r.restart(now);
                let reason = format!("by the operator, from the first step after the {after}");
                Ok(Some(r.event(
                    service,
                    RolloutEventKind::Resumed,
                    true,
                    reason,
                )))
            }
            RolloutState::Complete => Err(RolloutError::NotNow {
                service: service.to_owned(),
                action: "resume",
                state: RolloutState::Complete,
            }),
        }
    }

    /// Rolls the canary back to 0 and halts it, whatever its state (a complete rollout
    /// too). Aborting a rolled-back or aborted rollout does nothing. Takes `now` like
    /// [`Rollouts::pause`] and [`Rollouts::resume`], though an abort does not depend on it.
    ///
    /// # Errors
    /// No phased canary for `service`.
    pub fn abort(
        &mut self,
        service: &str,
        _now: SystemTime,
    ) -> Result<Option<RolloutEvent>, RolloutError> {
        let r = self.get_mut(service)?;
        if matches!(r.state, RolloutState::RolledBack | RolloutState::Aborted) {
            return Ok(None);
        }
        r.state = RolloutState::Aborted;
        r.paused_at = None;
        r.waiting = None;
        let reason = "by the operator".to_owned();
        r.reason = Some(reason.clone());
        Ok(Some(r.event(
            service,
            RolloutEventKind::Aborted,
            true,
            reason,
        )))
    }

    /// Every rollout, by service name.
    #[must_use]
    pub fn status(&self, now: SystemTime) -> Vec<RolloutStatus> {
        self.services
            .iter()
            .map(|(service, r)| r.status(service, now))
            .collect()
    }

    /// Writes each rollout's share into `canary.percent` of its service, so the compiler
    /// publishes it. A service whose canary pool or steps differ from the rollout's (a policy
    /// not yet [`Rollouts::sync`]ed) keeps the policy's share.
    pub fn apply_to(&self, policy: &mut Policy) {
        let Policy {
            services, pools, ..
        } = policy;
        for service in services {
            let Some(r) = self.services.get(&service.name) else {
                continue;
            };
            let Some(canary) = &mut service.canary else {
                continue;
            };
            let same = canary
                .rollout
                .as_ref()
                .is_some_and(|rollout| rollout.steps == r.steps)
                && pools.get(canary.pool.index()).map(|p| p.name.as_str()) == Some(r.pool.as_str());
            if same {
                canary.percent = r.percent();
            }
        }
    }

    fn get_mut(&mut self, service: &str) -> Result<&mut ServiceRollout, RolloutError> {
        self.services
            .get_mut(service)
            .ok_or_else(|| RolloutError::NoRollout {
                service: service.to_owned(),
            })
    }
}

/// The state file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedState {
    version: u32,
    rollouts: Vec<SavedRollout>,
}

/// One rollout in the state file. Times are milliseconds since the Unix epoch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRollout {
    service: String,
    pool: String,
    /// Steps in basis points (1/100 of a percent).
    steps_basis_points: Vec<u16>,
    step_interval_ms: u64,
    backends_down: u32,
    signal: Option<SavedSignalGate>,
    state: RolloutState,
    step: usize,
    step_since_unix_ms: u64,
    paused_at_unix_ms: Option<u64>,
    reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedSignalGate {
    metric: String,
    max_rate: f64,
}

impl SavedRollout {
    fn of(service: &str, r: &ServiceRollout) -> Self {
        Self {
            service: service.to_owned(),
            pool: r.pool.clone(),
            steps_basis_points: r.steps.iter().map(|p| p.basis_points()).collect(),
            step_interval_ms: millis(r.step_interval),
            backends_down: r.gates.backends_down,
            signal: r.gates.signal.as_ref().map(|s| SavedSignalGate {
                metric: s.metric.clone(),
                max_rate: s.max_rate,
            }),
            state: r.state,
            step: r.step,
            step_since_unix_ms: unix_ms(r.step_since),
            paused_at_unix_ms: r.paused_at.map(unix_ms),
            reason: r.reason.clone(),
        }
    }

    fn into_rollout(self) -> Result<ServiceRollout, String> {
        let steps = self
            .steps_basis_points
            .iter()
            .map(|&bp| {
                Percent::from_basis_points(bp).ok_or_else(|| format!("step of {bp} basis points"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if steps.is_empty() {
            return Err("no steps".to_owned());
        }
        if self.step >= steps.len() {
            return Err(format!("step {} of {} steps", self.step, steps.len()));
        }
        if (self.state == RolloutState::Paused) != self.paused_at_unix_ms.is_some() {
            return Err("paused_at_unix_ms must be set exactly when paused".to_owned());
        }
        Ok(ServiceRollout {
            pool: self.pool,
            steps,
            step_interval: Duration::from_millis(self.step_interval_ms),
            gates: RollbackGates {
                backends_down: self.backends_down,
                signal: self.signal.map(|s| SignalGate {
                    metric: s.metric,
                    max_rate: s.max_rate,
                }),
            },
            state: self.state,
            step: self.step,
            step_since: from_unix_ms(self.step_since_unix_ms),
            paused_at: self.paused_at_unix_ms.map(from_unix_ms),
            reason: self.reason,
            waiting: None,
            signal: SignalTracker::default(),
        })
    }
}

fn zero() -> Percent {
    Percent::from_basis_points(0).expect("0 is a percentage")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `5m`, `3m20s`, `1h`, `45s`, `500ms`.
fn show_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let secs = ceil_secs(d);
    let (h, m, s) = (secs / 3_600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

/// `[1%, 5%, 25%, 100%]`.
fn show_steps(steps: &[Percent]) -> String {
    let shown: Vec<String> = steps.iter().map(ToString::to_string).collect();
    format!("[{}]", shown.join(", "))
}

/// A rate to three decimals at most: `0.8`, `12`, `0.125`.
fn show_number(x: f64) -> String {
    let text = format!("{x:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    const MINUTE: Duration = Duration::from_secs(60);

    /// A fixed start so saved times round-trip exactly (whole milliseconds).
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn at(offset: Duration) -> SystemTime {
        t0() + offset
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A policy with one service `llama` whose canary block is `canary` (YAML flow mapping).
    /// The route lists both candidate canary pools as fallbacks so that each is used
    /// whichever one the canary names.
    fn policy_with(canary: &str) -> Policy {
        let src = format!(
            "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
services:
  - name: llama
    vip: 203.0.113.10
    ports: [443]
    routes:
      - {{ pool: llama-v1, fallback: [llama-v2, llama-v3] }}
    canary: {canary}
pools:
  llama-v1:
    backends: [{{ address: 192.0.2.10 }}]
  llama-v2:
    load: {{ metrics: {{ port: 8000 }}, signals: [vllm:num_requests_waiting] }}
    backends: [{{ address: 192.0.2.20 }}, {{ address: 192.0.2.21 }}]
  llama-v3:
    backends: [{{ address: 192.0.2.30 }}]
"
        );
        policy::parse_str(&src, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn stepped() -> Policy {
        policy_with("{ pool: llama-v2, steps: [1, 5, 25, 100], step_interval: 5m }")
    }

    fn with_signal(max_rate: &str) -> Policy {
        policy_with(&format!(
            "{{ pool: llama-v2, steps: [1, 5, 25, 100], step_interval: 5m, \
             rollback: {{ signal: {{ metric: errors_total, max_rate: {max_rate} }} }} }}"
        ))
    }

    fn pct(p: u16) -> Percent {
        Percent::from_basis_points(p * 100).unwrap()
    }

    fn healthy(_: &str) -> PoolHealth {
        PoolHealth {
            backends_down: 0,
            backends: 2,
            signal: None,
        }
    }

    fn kinds(events: &[RolloutEvent]) -> Vec<RolloutEventKind> {
        events.iter().map(|e| e.kind).collect()
    }

    fn started(policy: &Policy) -> Rollouts {
        let mut rollouts = Rollouts::new();
        let events = rollouts.sync(policy, t0());
        assert_eq!(kinds(&events), [RolloutEventKind::Started]);
        rollouts
    }

    /// Health whose gate counter reads `sum` at `read_at`.
    fn reading(sum: f64, read_at: SystemTime) -> impl Fn(&str) -> PoolHealth {
        move |_| PoolHealth {
            backends_down: 0,
            backends: 2,
            signal: Some(SignalReading {
                sum,
                sources: 2,
                read_at,
            }),
        }
    }

    #[test]
    fn canary_advances_on_schedule() {
        let policy = stepped();
        let mut rollouts = started(&policy);
        assert_eq!(rollouts.percent("llama"), Some(pct(1)));
        assert!(rollouts.tick(at(secs(299)), &healthy).is_empty());
        assert_eq!(rollouts.percent("llama"), Some(pct(1)));

        let events = rollouts.tick(at(5 * MINUTE), &healthy);
        assert_eq!(kinds(&events), [RolloutEventKind::Advanced]);
        assert!(events[0].share_changed);
        assert_eq!(
            events[0].to_string(),
            "llama: canary pool llama-v2 advanced to 5% (step 2 of 4): 5m at 1% with the gates passing"
        );
        assert_eq!(rollouts.percent("llama"), Some(pct(5)));

        // The next step gets its full interval from when it began.
        assert!(rollouts.tick(at(secs(599)), &healthy).is_empty());
        rollouts.tick(at(10 * MINUTE), &healthy);
        assert_eq!(rollouts.percent("llama"), Some(pct(25)));
        rollouts.tick(at(15 * MINUTE), &healthy);
        assert_eq!(rollouts.percent("llama"), Some(pct(100)));
        let status = &rollouts.status(at(16 * MINUTE))[0];
        assert_eq!(
            (status.state, status.step, status.next_step_in_secs),
            (RolloutState::Running, 3, Some(240))
        );

        // The last step is held a full interval too, then the rollout is complete.
        let events = rollouts.tick(at(20 * MINUTE), &healthy);
        assert_eq!(kinds(&events), [RolloutEventKind::Completed]);
        assert!(!events[0].share_changed);
        let status = &rollouts.status(at(21 * MINUTE))[0];
        assert_eq!(
            (
                status.state,
                status.percent.as_str(),
                status.next_step_in_secs
            ),
            (RolloutState::Complete, "100%", None)
        );
        assert_eq!(status.steps, ["1%", "5%", "25%", "100%"]);
        // Complete: the gates are disarmed.
        let down = |_: &str| PoolHealth {
            backends_down: 2,
            backends: 2,
            signal: None,
        };
        assert!(rollouts.tick(at(30 * MINUTE), &down).is_empty());
        assert_eq!(rollouts.percent("llama"), Some(pct(100)));
    }

    #[test]
    fn canary_moves_one_step_per_tick_after_a_long_gap() {
        let mut rollouts = started(&stepped());
        // An hour without ticks (daemon down) is one step, not three.
        rollouts.tick(at(60 * MINUTE), &healthy);
        assert_eq!(rollouts.percent("llama"), Some(pct(5)));
        assert_eq!(
            rollouts.status(at(60 * MINUTE))[0].next_step_in_secs,
            Some(300)
        );
    }

    #[test]
    fn canary_does_not_advance_while_paused() {
        let mut rollouts = started(&stepped());
        let event = rollouts.pause("llama", at(2 * MINUTE)).unwrap().unwrap();
        assert_eq!(event.kind, RolloutEventKind::Paused);
        assert_eq!(
            event.to_string(),
            "llama: rollout paused at 1% (step 1 of 4): by the operator, 3m left at this step"
        );
        assert!(rollouts.pause("llama", at(3 * MINUTE)).unwrap().is_none());
        assert!(rollouts.tick(at(60 * MINUTE), &healthy).is_empty());
        let status = &rollouts.status(at(60 * MINUTE))[0];
        assert_eq!(
            (
                status.state,
                status.percent.as_str(),
                status.next_step_in_secs
            ),
            (RolloutState::Paused, "1%", Some(180))
        );

        // Resumed with the 3 minutes the step had left.
        let event = rollouts.resume("llama", at(60 * MINUTE)).unwrap().unwrap();
        assert_eq!(event.kind, RolloutEventKind::Resumed);
        assert!(!event.share_changed);
        assert!(rollouts.resume("llama", at(60 * MINUTE)).unwrap().is_none());
        assert!(rollouts.tick(at(62 * MINUTE), &healthy).is_empty());
        rollouts.tick(at(63 * MINUTE), &healthy);
        assert_eq!(rollouts.percent("llama"), Some(pct(5)));
    }

    #[test]
    fn canary_paused_still_rolls_back_on_a_gate() {
        let mut rollouts = started(&stepped());
        rollouts.pause("llama", at(MINUTE)).unwrap();
        let down = |_: &str| PoolHealth {
            backends_down: 1,
            backends: 2,
            signal: None,
        };
        let events = rollouts.tick(at(2 * MINUTE), &down);
        assert_eq!(kinds(&events), [RolloutEventKind::RolledBack]);
        assert_eq!(
            rollouts.status(at(2 * MINUTE))[0].state,
            RolloutState::RolledBack
        );
    }

    #[test]
    fn canary_rolls_back_when_a_backend_is_down() {
        let mut rollouts = started(&stepped());
        rollouts.tick(at(5 * MINUTE), &healthy);
        assert_eq!(rollouts.percent("llama"), Some(pct(5)));

        let down = |pool: &str| PoolHealth {
            backends_down: u32::from(pool == "llama-v2"),
            backends: 2,
            signal: None,
        };
        let events = rollouts.tick(at(6 * MINUTE), &down);
        assert_eq!(kinds(&events), [RolloutEventKind::RolledBack]);
        assert!(events[0].share_changed);
        assert_eq!(events[0].percent, pct(0));
        assert_eq!(
            events[0].reason,
            "canary pool llama-v2 has 1 backend down (gate 1)"
        );
        assert_eq!(
            events[0].to_string(),
            "llama: canary pool llama-v2 rolled back to 0% and halted: \
             canary pool llama-v2 has 1 backend down (gate 1)"
        );
        assert_eq!(rollouts.percent("llama"), Some(pct(0)));

        // Halted: healthy again, still at 0, whatever the clock says.
        assert!(rollouts.tick(at(60 * MINUTE), &healthy).is_empty());
        let status = &rollouts.status(at(60 * MINUTE))[0];
        assert_eq!(
            (status.state, status.step, status.percent.as_str()),
            (RolloutState::RolledBack, 1, "0%")
        );
        assert_eq!(
            status.reason.as_deref(),
            Some("canary pool llama-v2 has 1 backend down (gate 1)")
        );
        assert!(matches!(
            rollouts.pause("llama", at(60 * MINUTE)),
            Err(RolloutError::NotNow { .. })
        ));

        // Resume restarts from the first step.
        let event = rollouts.resume("llama", at(61 * MINUTE)).unwrap().unwrap();
        assert!(event.share_changed);
        assert_eq!(rollouts.percent("llama"), Some(pct(1)));
        assert_eq!(rollouts.status(at(61 * MINUTE))[0].step, 0);
    }

    #[test]
    fn canary_backends_down_gate_takes_its_threshold() {
        let policy = policy_with(
            "{ pool: llama-v2, steps: [10, 50], step_interval: 1m, rollback: { backends_down: 2 } }",
        );
        let mut rollouts = started(&policy);
        let one_down = |_: &str| PoolHealth {
            backends_down: 1,
            backends: 2,
            signal: None,
        };
        let events = rollouts.tick(at(MINUTE), &one_down);
        assert_eq!(kinds(&events), [RolloutEventKind::Advanced]);
        let two_down = |_: &str| PoolHealth {
            backends_down: 2,
            backends: 2,
            signal: None,
        };
        let events = rollouts.tick(at(secs(61)), &two_down);
        assert_eq!(
            events[0].reason,
            "canary pool llama-v2 has 2 backends down (gate 2)"
        );
    }

    #[test]
    fn canary_rolls_back_on_signal_rate() {
        let mut rollouts = started(&with_signal("0.5"));
        // 0.2 errors a second: under the gate.
        for s in 0..=10 {
            let events =
                rollouts.tick(at(secs(s * 10)), &reading(2.0 * s as f64, at(secs(s * 10))));
            assert!(events.is_empty(), "{events:?}");
        }
        assert_eq!(rollouts.status(at(secs(100)))[0].signal_rate, Some(0.2));

        // Then 0.8 a second: the rate over the last 60 s climbs 0.3, 0.4, 0.5 (not over),
        // 0.6 — and trips.
        let mut tripped = Vec::new();
        for s in 11..=16 {
            let sum = 20.0 + 8.0 * (s - 10) as f64;
            tripped.extend(rollouts.tick(at(secs(s * 10)), &reading(sum, at(secs(s * 10)))));
        }
        let [event] = tripped.as_slice() else {
            panic!("one rollback: {tripped:?}");
        };
        assert_eq!(event.kind, RolloutEventKind::RolledBack);
        assert_eq!(
            event.reason,
            "errors_total rate 0.6/s over 0.5/s on canary pool llama-v2"
        );
        assert_eq!(rollouts.percent("llama"), Some(pct(0)));
    }

    #[test]
    fn canary_signal_gate_holds_a_step_without_a_fresh_reading() {
        let mut rollouts = started(&with_signal("0.5"));
        // Never scraped: the step is due but holds, and says so once.
        let events = rollouts.tick(at(5 * MINUTE), &healthy);
        assert_eq!(kinds(&events), [RolloutEventKind::Waiting]);
        assert!(!events[0].share_changed);
        assert!(rollouts.tick(at(secs(301)), &healthy).is_empty());
        let status = &rollouts.status(at(secs(301)))[0];
        assert_eq!(status.next_step_in_secs, Some(0));
        assert!(status
            .waiting
            .as_deref()
            .unwrap()
            .contains("no rate of errors_total"));

        // Two scrapes make a rate under the gate: on to the next step.
        rollouts.tick(at(secs(302)), &reading(0.0, at(secs(302))));
        let events = rollouts.tick(at(secs(303)), &reading(0.0, at(secs(303))));
        assert_eq!(kinds(&events), [RolloutEventKind::Advanced]);
        assert_eq!(rollouts.status(at(secs(303)))[0].waiting, None);
    }

    #[test]
    fn canary_counter_reset_is_not_a_negative_rate_nor_a_burst() {
        let mut rollouts = started(&with_signal("0.5"));
        rollouts.tick(at(secs(10)), &reading(100.0, at(secs(10))));
        rollouts.tick(at(secs(20)), &reading(101.0, at(secs(20))));
        assert_eq!(rollouts.status(at(secs(20)))[0].signal_rate, Some(0.1));

        // A backend restarted: the sum falls. New baseline, the last rate stands.
        assert!(rollouts
            .tick(at(secs(30)), &reading(3.0, at(secs(30))))
            .is_empty());
        assert_eq!(rollouts.status(at(secs(30)))[0].signal_rate, Some(0.1));
        // The next reading gives the rate since the reset only.
        assert!(rollouts
            .tick(at(secs(40)), &reading(5.0, at(secs(40))))
            .is_empty());
        assert_eq!(rollouts.status(at(secs(40)))[0].signal_rate, Some(0.2));

        // A backend missing from the sum, then back: new baselines, not a burst of 100.
        let partial = |_: &str| PoolHealth {
            backends_down: 0,
            backends: 2,
            signal: Some(SignalReading {
                sum: 5.0,
                sources: 1,
                read_at: at(secs(50)),
            }),
        };
        assert!(rollouts.tick(at(secs(50)), &partial).is_empty());
        assert!(rollouts
            .tick(at(secs(60)), &reading(105.0, at(secs(60))))
            .is_empty());
        // The same scrape seen twice changes nothing.
        assert!(rollouts
            .tick(at(secs(61)), &reading(105.0, at(secs(60))))
            .is_empty());
        assert!(rollouts
            .tick(at(secs(70)), &reading(106.0, at(secs(70))))
            .is_empty());
        assert_eq!(rollouts.status(at(secs(70)))[0].signal_rate, Some(0.1));
        assert_eq!(rollouts.percent("llama"), Some(pct(1)));
        assert_eq!(
            rollouts.status(at(secs(70)))[0].state,
            RolloutState::Running
        );
    }

    #[test]
    fn canary_survives_save_and_load_mid_step() {
        let dir = std::env::temp_dir().join(format!("switchyard-rollout-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rollouts.json");
        let policy = stepped();

        let mut rollouts = started(&policy);
        rollouts.tick(at(5 * MINUTE), &healthy); // 5 %, from minute 5
        rollouts.tick(at(7 * MINUTE), &healthy); // 2 minutes into it
        rollouts.save(&path).unwrap();
        assert!(!dir.join("rollouts.json.tmp").exists());

        // The daemon restarts at minute 8.
        let mut loaded = Rollouts::load(&path).unwrap();
        assert!(
            loaded.sync(&policy, at(8 * MINUTE)).is_empty(),
            "unchanged canary keeps its progress"
        );
        assert_eq!(loaded.percent("llama"), Some(pct(5)));
        let status = &loaded.status(at(8 * MINUTE))[0];
        assert_eq!((status.step, status.next_step_in_secs), (1, Some(120)));
        assert!(loaded.tick(at(secs(599)), &healthy).is_empty());
        loaded.tick(at(10 * MINUTE), &healthy);
        assert_eq!(loaded.percent("llama"), Some(pct(25)));

        // A paused rollout stays paused, with the time it had left.
        loaded.pause("llama", at(11 * MINUTE)).unwrap();
        loaded.save(&path).unwrap();
        let mut again = Rollouts::load(&path).unwrap();
        again.sync(&policy, at(90 * MINUTE));
        assert!(again.tick(at(90 * MINUTE), &healthy).is_empty());
        let status = &again.status(at(90 * MINUTE))[0];
        assert_eq!(
            (status.state, status.next_step_in_secs),
            (RolloutState::Paused, Some(240))
        );

        // A missing file is no state; a corrupt one is a clear error.
        assert!(Rollouts::load(&dir.join("absent.json"))
            .unwrap()
            .status(t0())
            .is_empty());
        fs::write(&path, "{ \"version\": 1, \"rollouts\": [").unwrap();
        let error = Rollouts::load(&path).unwrap_err();
        assert!(matches!(error, RolloutError::Corrupt { .. }), "{error}");
        assert!(error
            .to_string()
            .starts_with(&format!("rollout state {} is not valid: ", path.display())));
        fs::write(&path, "{ \"version\": 9, \"rollouts\": [] }").unwrap();
        assert!(Rollouts::load(&path)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn canary_sync_keeps_progress_of_an_unchanged_canary_and_restarts_a_changed_one() {
        let policy = stepped();
        let mut rollouts = started(&policy);
        rollouts.tick(at(5 * MINUTE), &healthy);
        assert_eq!(rollouts.percent("llama"), Some(pct(5)));

        // A new interval or new gates keep the progress.
        let slower = policy_with(
            "{ pool: llama-v2, steps: [1, 5, 25, 100], step_interval: 10m, \
             rollback: { backends_down: 2 } }",
        );
        assert!(rollouts.sync(&slower, at(6 * MINUTE)).is_empty());
        assert_eq!(rollouts.percent("llama"), Some(pct(5)));
        assert_eq!(
            rollouts.status(at(6 * MINUTE))[0].next_step_in_secs,
            Some(540)
        );

        // New steps: back to the first.
        let changed = policy_with("{ pool: llama-v2, steps: [2, 10, 100], step_interval: 10m }");
        let events = rollouts.sync(&changed, at(7 * MINUTE));
        assert_eq!(kinds(&events), [RolloutEventKind::Restarted]);
        assert_eq!(
            events[0].reason,
            "steps changed in the policy from [1%, 5%, 25%, 100%] to [2%, 10%, 100%]"
        );
        assert_eq!(rollouts.percent("llama"), Some(pct(2)));

        // A new pool: back to the first step, also out of a rollback.
        rollouts.abort("llama", at(8 * MINUTE)).unwrap();
        assert_eq!(rollouts.percent("llama"), Some(pct(0)));
        let moved = policy_with("{ pool: llama-v3, steps: [2, 10, 100], step_interval: 10m }");
        let events = rollouts.sync(&moved, at(9 * MINUTE));
        assert_eq!(
            events[0].reason,
            "canary pool changed in the policy from llama-v2 to llama-v3"
        );
        assert_eq!(rollouts.percent("llama"), Some(pct(2)));
        assert_eq!(
            rollouts.status(at(9 * MINUTE))[0].state,
            RolloutState::Running
        );

        // A fixed canary is not a rollout: forgotten.
        let fixed = policy_with("{ pool: llama-v3, percent: 5 }");
        let events = rollouts.sync(&fixed, at(10 * MINUTE));
        assert_eq!(kinds(&events), [RolloutEventKind::Dropped]);
        assert_eq!(rollouts.percent("llama"), None);
        assert!(matches!(
            rollouts.pause("llama", at(10 * MINUTE)),
            Err(RolloutError::NoRollout { .. })
        ));
    }

    #[test]
    fn canary_abort_rolls_back_to_zero_and_halts() {
        let mut rollouts = started(&stepped());
        rollouts.tick(at(5 * MINUTE), &healthy);
        let event = rollouts.abort("llama", at(6 * MINUTE)).unwrap().unwrap();
        assert_eq!(
            (event.kind, event.percent),
            (RolloutEventKind::Aborted, pct(0))
        );
        assert!(rollouts.abort("llama", at(6 * MINUTE)).unwrap().is_none());
        assert!(rollouts.tick(at(60 * MINUTE), &healthy).is_empty());
        assert_eq!(
            rollouts.status(at(60 * MINUTE))[0].state,
            RolloutState::Aborted
        );
        let event = rollouts.resume("llama", at(61 * MINUTE)).unwrap().unwrap();
        assert_eq!(
            event.to_string(),
            "llama: rollout resumed at 1% (step 1 of 4): by the operator, from the first step after the abort"
        );
    }

    #[test]
    fn canary_apply_to_writes_percent() {
        let policy = stepped();
        let mut rollouts = started(&policy);
        rollouts.tick(at(5 * MINUTE), &healthy);
        rollouts.tick(at(10 * MINUTE), &healthy);

        let mut applied = policy.clone();
        rollouts.apply_to(&mut applied);
        assert_eq!(
            applied.services[0].canary.as_ref().unwrap().percent,
            pct(25)
        );
        // Everything else is the policy as it was.
        applied.services[0].canary.as_mut().unwrap().percent = pct(1);
        assert_eq!(applied, policy);

        rollouts.abort("llama", at(11 * MINUTE)).unwrap();
        let mut applied = policy.clone();
        rollouts.apply_to(&mut applied);
        assert_eq!(applied.services[0].canary.as_ref().unwrap().percent, pct(0));

        // A policy whose canary is not the rollout's keeps its own share.
        let other = policy_with("{ pool: llama-v3, steps: [1, 5, 25, 100], step_interval: 5m }");
        let mut applied = other.clone();
        rollouts.apply_to(&mut applied);
        assert_eq!(applied, other);
    }
}
