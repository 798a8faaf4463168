//! Stable backend ids.
//!
//! The data plane's connection tables remember a flow's backend by id, so a backend keeps its
//! id for as long as it stays in the policy, whatever else changes around it. Ids start at 1,
//! key on (pool name, backend address), and are handed out from a counter that only moves
//! forward: an id a removed backend gave up is not handed out again until the counter passes
//! [`MAX_BACKEND_ID`] and wraps, so a stale flow entry does not silently land on a new backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use switchyard_table::generation::{name_field, name_str, Generation};

use crate::policy::Policy;

use super::CompileError;

/// Largest backend id. It bounds `backend_by_id` (one `u32` per id: 4 MiB) and how long an id
/// stays retired: about a million other backends must come and go before it is reused.
pub const MAX_BACKEND_ID: u32 = (1 << 20) - 1;

/// Stable ids of backends, keyed by (pool name, backend address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendIds {
    ids: BTreeMap<(String, IpAddr), u32>,
    /// The next id to try; 1..=max.
    next: u32,
    max: u32,
}

impl Default for BackendIds {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendIds {
    /// No ids handed out yet: the first backend gets id 1.
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_id(MAX_BACKEND_ID)
    }

    /// Like [`BackendIds::new`] with ids wrapping after `max` (at least 1, at most
    /// [`MAX_BACKEND_ID`]) instead; for tests of the wrap-around.
    #[must_use]
    pub fn with_max_id(max: u32) -> Self {
        Self {
            ids: BTreeMap::new(),
            next: 1,
            max: max.clamp(1, MAX_BACKEND_ID),
        }
    }

    /// Recovers the ids of a live generation, e.g. when the control plane restarts while the
    /// data plane forwards with the last generation it published. New backends then get ids
    /// above the largest one found.
    ///
    /// Pool names in a generation are truncated to the record's name length; [`compile`] matches
    /// a recovered truncated name to the policy's full pool name.
    ///
    /// [`compile`]: super::compile
    #[must_use]
    pub fn from_generation(g: &Generation) -> Self {
        let mut ids = Self::new();
        for b in &g.backends {
            let (Some(pool), Some(address)) = (
                g.pools.get(b.pool as usize),
                super::address_of(&b.address, b.family),
            ) else {
                continue;
            };
            if b.id == 0 || b.id > ids.max {
                continue;
            }
            ids.ids
                .insert((name_str(&pool.name).to_owned(), address), b.id);
        }
        let top = ids.ids.values().copied().max().unwrap_or(0);
        ids.next = if top >= ids.max { 1 } else { top + 1 };
        ids
    }

    /// The id of the backend at `address` in pool `pool`, if it has one.
    #[must_use]
    pub fn get(&self, pool: &str, address: IpAddr) -> Option<u32> {
        self.ids.get(&(pool.to_owned(), address)).copied()
    }

    /// Backends with an id.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Every (pool, address, id), ordered by pool name then address.
    pub fn iter(&self) -> impl Iterator<Item = (&str, IpAddr, u32)> + '_ {
        self.ids.iter().map(|((p, a), &id)| (p.as_str(), *a, id))
    }

    /// Gives every backend of `policy` an id: the one it had, or a fresh one (in policy order).
    /// Backends that are no longer in the policy release theirs.
    pub(crate) fn assign(&mut self, policy: &Policy) -> Result<(), CompileError> {
        let mut kept: BTreeMap<(String, IpAddr), u32> = BTreeMap::new();
        let mut fresh: Vec<(String, IpAddr)> = Vec::new();
        for pool in &policy.pools {
            let short = name_str(&name_field(&pool.name)).to_owned();
            for b in &pool.backends {
                let key = (pool.name.clone(), b.address);
                let id = self
                    .ids
                    .remove(&key)
                    .or_else(|| self.ids.remove(&(short.clone(), b.address)));
                match id {
                    Some(id) => {
                        kept.insert(key, id);
                    }
                    None => fresh.push(key),
                }
            }
        }
        let mut in_use: BTreeSet<u32> = kept.values().copied().collect();
        for key in fresh {
            let id = self.allocate(&in_use)?;
            in_use.insert(id);
            kept.insert(key, id);
        }
        self.ids = kept;
        Ok(())
    }

    /// The next id not in use, counting on from the last one handed out.
    fn allocate(&mut self, in_use: &BTreeSet<u32>) -> Result<u32, CompileError> {
        for _ in 0..self.max {
            let candidate = self.next;
            self.next = if candidate >= self.max {
                1
            } else {
                candidate + 1
            };
            if !in_use.contains(&candidate) {
                return Ok(candidate);
            }
        }
        Err(CompileError::BackendIdsExhausted {
            in_use: in_use.len(),
        })
    }
}
