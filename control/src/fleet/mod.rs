//! Watching the fleet: health checks and live-load scrapes of every backend, from the control
//! plane's own host stack.
//!
//! [`Monitor`] owns one thread running a tokio runtime. Every backend of a pool with `health:`
//! gets a probe task and every backend of a pool with `load:` a scrape task: thousands of
//! backends cost thousands of small tasks, not threads. A semaphore bounds how many probes and
//! scrapes are in flight at once ([`DEFAULT_CONCURRENCY`]); each is bounded by its timeout.
//! Tasks start at a random point of their interval and every period is jittered by ±10 %, so a
//! fleet is not probed in lockstep.
//!
//! The monitor decides nothing: it hands each raw result ([`Observation`]) to a sink (the
//! controller's request channel). The controller owns the state machines ([`health`],
//! [`load`]) and the tables, so every decision happens on one thread, in order, and a policy
//! reload cannot race a health transition. [`Monitor::watch`] replaces the set of checks with the
//! one a policy asks for: unchanged checks keep running (their state lives in the controller,
//! keyed by pool and address), removed ones stop, new ones start.

pub mod health;
pub mod load;
pub mod probe;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

use crate::policy::{HealthCheck, LoadFeedback, Policy};

/// Probes and scrapes in flight at once, over the whole fleet.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// What is watched on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Health,
    Load,
}

/// One check of one backend: `(pool, address, kind)`.
pub type WatchKey = (String, IpAddr, Kind);

/// The settings a check runs with; a change restarts the check.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    Health(HealthCheck),
    /// The pool's load settings, and the counters of canary rollback gates read from the
    /// same page (their values follow the signals' in the scrape result).
    Load(LoadFeedback, Vec<String>),
}

/// One raw result, for the controller.
#[derive(Debug, Clone)]
pub enum Observation {
    Probe {
        pool: String,
        address: IpAddr,
        at: Instant,
        result: Result<(), probe::Failure>,
    },
    Scrape {
        pool: String,
        address: IpAddr,
        at: Instant,
        result: Result<Vec<Option<f64>>, probe::Failure>,
    },
}

/// Where observations go; returns false once nobody listens (the task then ends).
pub type Sink = Arc<dyn Fn(Observation) -> bool + Send + Sync>;

/// The rollback-gate counter of each canary pool (read from its `load.metrics` page).
#[must_use]
pub fn gate_metrics(policy: &Policy) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for service in &policy.services {
        let Some(canary) = &service.canary else {
            continue;
        };
        let Some(gate) = canary
            .rollout
            .as_ref()
            .and_then(|r| r.rollback.signal.as_ref())
        else {
            continue;
        };
        out.entry(policy.pool(canary.pool).name.clone())
            .or_insert_with(|| gate.metric.clone());
    }
    out
}

/// The checks a policy asks for.
#[must_use]
pub fn watches(policy: &Policy) -> BTreeMap<WatchKey, Watch> {
    let gates = gate_metrics(policy);
    let mut out = BTreeMap::new();
    for pool in &policy.pools {
        for b in &pool.backends {
            if let Some(h) = &pool.health {
                out.insert(
                    (pool.name.clone(), b.address, Kind::Health),
                    Watch::Health(h.clone()),
                );
            }
            if let Some(l) = &pool.load {
                let extra = gates.get(&pool.name).cloned().into_iter().collect();
                out.insert(
                    (pool.name.clone(), b.address, Kind::Load),
                    Watch::Load(l.clone(), extra),
                );
            }
        }
    }
    out
}

enum Command {
    Watch(BTreeMap<WatchKey, Watch>),
    Stop,
}

/// The health-check and scrape runner; see the module documentation.
#[derive(Debug)]
pub struct Monitor {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts the runner thread with nothing to watch.
    ///
    /// # Errors
    /// The runtime or the thread could not be created.
    pub fn spawn(sink: Sink, concurrency: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (commands, mut rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
                    let mut running: BTreeMap<WatchKey, (Watch, AbortHandle)> = BTreeMap::new();
                    while let Some(command) = rx.recv().await {
                        match command {
                            Command::Watch(wanted) => {
                                retarget(&mut running, wanted, &permits, &sink);
                            }
                            Command::Stop => break,
                        }
                    }
                    for (_, (_, task)) in running {
                        task.abort();
                    }
                });
            })?;
        Ok(Self {
            commands,
            thread: Some(thread),
        })
    }

    /// Watches exactly what `policy` asks for.
    pub fn watch(&self, policy: &Policy) {
        let _ = self.commands.send(Command::Watch(watches(policy)));
    }

    /// Stops every check and the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn retarget(
    running: &mut BTreeMap<WatchKey, (Watch, AbortHandle)>,
    wanted: BTreeMap<WatchKey, Watch>,
    permits: &Arc<Semaphore>,
    sink: &Sink,
) {
    running.retain(|key, (watch, task)| {
        let keep = wanted.get(key) == Some(watch);
        if !keep {
            task.abort();
        }
        keep
    });
    for (key, watch) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        let task = tokio::spawn(check(
            key.0.clone(),
            key.1,
            watch.clone(),
            Arc::clone(permits),
            Arc::clone(sink),
        ));
        running.insert(key, (watch, task.abort_handle()));
    }
}

/// `interval` scaled by a random factor in `[1 - spread, 1 + spread)`.
fn jittered(interval: Duration, spread: f64) -> Duration {
    interval.mul_f64(1.0 - spread + 2.0 * spread * fastrand::f64())
}

async fn check(pool: String, address: IpAddr, watch: Watch, permits: Arc<Semaphore>, sink: Sink) {
    let interval = match &watch {
        Watch::Health(h) => h.interval,
        Watch::Load(l, _) => l.interval,
    };
    // Start anywhere in the first interval, so checks spread out.
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    loop {
        let started = tokio::time::Instant::now();
        let Ok(permit) = permits.acquire().await else {
            return;
        };
        let observation = match &watch {
            Watch::Health(h) => Observation::Probe {
                pool: pool.clone(),
                address,
                result: probe::probe(address, &h.probe, h.timeout).await,
                at: Instant::now(),
            },
            Watch::Load(l, extra) => Observation::Scrape {
                pool: pool.clone(),
                address,
                result: probe::scrape(
                    address,
                    l.metrics_port,
                    &l.metrics_path,
                    &l.signals.iter().chain(extra).cloned().collect::<Vec<_>>(),
                    l.interval.min(Duration::from_secs(1)),
                )
                .await,
                at: Instant::now(),
            },
        };
        drop(permit);
        if !sink(observation) {
            return;
        }
        tokio::time::sleep_until(started + jittered(interval, 0.1)).await;
    }
}
