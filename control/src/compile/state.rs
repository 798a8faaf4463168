//! Live backend state the compiler folds into a generation: health from the checkers, weights
//! and the bounded-load "full" mark from live load.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// What is known right now about one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendLive {
    /// Whether the health check passes. Ignored for pools without a health check, whose
    /// backends always count as up.
    pub healthy: bool,
    /// Weight from live load, replacing the policy weight of a backend whose policy weight is
    /// not 0; clamped to the pool's `load` bounds when it has them.
    pub weight: Option<u32>,
    /// Bounded load: the live load is past the pool's threshold. The backend stays in its pool's
    /// healthy list and Maglev table; the generation marks it
    /// [`BACKEND_FULL`](switchyard_table::generation::BACKEND_FULL) (when healthy), and the data
    /// plane sends new flows that prefer it to the next backend of their preference order.
    pub full: bool,
}

impl Default for BackendLive {
    /// Healthy, policy weight, not full: what a backend is until a checker says otherwise.
    fn default() -> Self {
        Self {
            healthy: true,
            weight: None,
            full: false,
        }
    }
}

/// Live state per (pool name, backend address). Backends never mentioned are
/// [`BackendLive::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendState {
    live: BTreeMap<String, BTreeMap<IpAddr, BackendLive>>,
}

impl BackendState {
    /// Every backend healthy, at its policy weight, not full.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the health-check verdict of a backend.
    pub fn set_health(&mut self, pool: &str, address: IpAddr, healthy: bool) {
        self.entry(pool, address).healthy = healthy;
    }

    /// Sets (or, with `None`, clears) the live-load weight of a backend.
    pub fn set_weight(&mut self, pool: &str, address: IpAddr, weight: Option<u32>) {
        self.entry(pool, address).weight = weight;
    }

    /// Marks a backend full (its load is past the pool's threshold) or not full.
    pub fn set_full(&mut self, pool: &str, address: IpAddr, full: bool) {
        self.entry(pool, address).full = full;
    }

    /// The state of a backend; the default for one never set.
    #[must_use]
    pub fn get(&self, pool: &str, address: IpAddr) -> BackendLive {
        self.live
            .get(pool)
            .and_then(|p| p.get(&address))
            .copied()
            .unwrap_or_default()
    }

    /// Drops what is known about a backend (e.g. once it left the policy).
    pub fn forget(&mut self, pool: &str, address: IpAddr) {
        if let Some(p) = self.live.get_mut(pool) {
            p.remove(&address);
            if p.is_empty() {
                self.live.remove(pool);
            }
        }
    }

    fn entry(&mut self, pool: &str, address: IpAddr) -> &mut BackendLive {
        self.live
            .entry(pool.to_owned())
            .or_default()
            .entry(address)
            .or_default()
    }
}
