//! Pools, backends, Maglev tables, healthy lists and `backend_by_id`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use switchyard_table::generation::{self as abi, Generation};

use crate::maglev::{self, MaglevBackend};
use crate::policy::{AdminState, Backend, Policy, Pool, Scheduler};

use super::{address_field, index_u32, BackendIds, BackendLive, BackendState, CompileError};

/// The Maglev key of a backend: xxh3-64 of its address as the table stores it (16 bytes and the
/// family). It alone fixes the backend's permutation, so a backend claims the same slots on
/// every compile, every box and every version, whatever its index or id.
#[must_use]
pub fn maglev_key(address: IpAddr) -> u64 {
    let (bytes, family) = address_field(address);
    let mut input = [0u8; 17];
    input[..16].copy_from_slice(&bytes);
    input[16] = family;
    xxhash_rust::xxh3::xxh3_64(&input)
}

/// The last Maglev table built for each pool, as slot values, with what it was built from; see
/// [`super::compile_cached`].
#[derive(Debug, Default, Clone)]
pub struct MaglevCache {
    tables: BTreeMap<String, CachedTable>,
    /// Tables reused and built since the cache was made.
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, Clone)]
struct CachedTable {
    backends: Vec<MaglevBackend>,
    size: u32,
    /// (stable id, backend index + 1) of every backend in the table.
    slot_value: Vec<(u32, u32)>,
    slots: Arc<Vec<u32>>,
}

impl MaglevCache {
    /// The slots of `pool` (backend index + 1, or [`maglev::EMPTY`]) for `backends`, `size` and
    /// the id → slot value map `slot_value`: the cached ones when all three are
    /// those of the last build, else a new build (which replaces it).
    fn slots(
        &mut self,
        pool: &str,
        backends: &[MaglevBackend],
        size: u32,
        slot_value: &[(u32, u32)],
    ) -> Result<Arc<Vec<u32>>, maglev::MaglevError> {
        if let Some(c) = self.tables.get(pool) {
            if c.size == size && c.backends == backends && c.slot_value == slot_value {
                self.hits += 1;
                return Ok(Arc::clone(&c.slots));
            }
        }
        self.misses += 1;
        let table = maglev::build(backends, size)?;
        // Ids of one pool are few and close together: a dense map beats a search per slot.
        let low = slot_value.iter().map(|&(id, _)| id).min().unwrap_or(0);
        let high = slot_value.iter().map(|&(id, _)| id).max().unwrap_or(0);
        let mut value = vec![maglev::EMPTY; (high - low) as usize + 1];
        for &(id, v) in slot_value {
            value[(id - low) as usize] = v;
        }
        let slots: Vec<u32> = table
            .iter()
            .map(|&id| {
                id.checked_sub(low)
                    .and_then(|i| value.get(i as usize))
                    .copied()
                    .unwrap_or(maglev::EMPTY)
            })
            .collect();
        let slots = Arc::new(slots);
        self.tables.insert(
            pool.to_owned(),
            CachedTable {
                backends: backends.to_vec(),
                size,
                slot_value: slot_value.to_vec(),
                slots: Arc::clone(&slots),
            },
        );
        Ok(slots)
    }

    /// Drops the tables of pools not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.tables.retain(|name, _| keep(name));
    }
}

/// The weight a backend gets in this generation; see the module documentation of `compile`.
pub(super) fn effective_weight(pool: &Pool, backend: &Backend, live: BackendLive) -> u32 {
    if backend.weight == 0 || backend.admin != AdminState::InService {
        return 0;
    }
    match (live.weight, &pool.load) {
        (None, _) => u32::from(backend.weight),
        (Some(w), Some(load)) => w.clamp(u32::from(load.min_weight), u32::from(load.max_weight)),
        (Some(w), None) => w,
    }
}

pub(super) fn build(
    policy: &Policy,
    state: &BackendState,
    ids: &BackendIds,
    cache: &mut MaglevCache,
    g: &mut Generation,
) -> Result<(), CompileError> {
    for (pool_index, pool) in policy.pools.iter().enumerate() {
        let pool_u32 = index_u32("pools", pool_index)?;
        let first_backend = index_u32("backends", g.backends.len())?;
        let first_healthy = index_u32("healthy backends", g.healthy_backends.len())?;
        let mut in_table: Vec<MaglevBackend> = Vec::new();
        // Stable id → backend index + 1, the value a Maglev slot holds.
        let mut slot_value: Vec<(u32, u32)> = Vec::new();
        for b in &pool.backends {
            let id = ids
                .get(&pool.name, b.address)
                .expect("BackendIds::assign gives every backend of the policy an id");
            let live = state.get(&pool.name, b.address);
            // A disabled backend is out of scheduling as a down one is: its flows move.
            let healthy =
                (pool.health.is_none() || live.healthy) && b.admin != AdminState::Disabled;
            let weight = effective_weight(pool, b, live);
            let index = index_u32("backends", g.backends.len())?;
            let (address, family) = address_field(b.address);
            g.backends.push(abi::Backend {
                address,
                family,
                flags: flags(healthy, live.full),
                _pad: [0; 2],
                weight,
                id,
                pool: pool_u32,
            });
            if healthy && weight > 0 {
                g.healthy_backends.push(index);
                in_table.push(MaglevBackend {
                    id,
                    weight,
                    key: maglev_key(b.address),
                });
                slot_value.push((id, index + 1));
            }
        }

        let size = match pool.scheduler {
            Scheduler::Maglev { table_size } => table_size,
            Scheduler::IpHash => policy.tables.maglev_size,
            Scheduler::RoundRobin | Scheduler::LeastConn | Scheduler::Weighted => 0,
        };
        let maglev_offset = index_u32("Maglev slots", g.maglev.len())?;
        if size > 0 {
            let slots = cache
                .slots(&pool.name, &in_table, size, &slot_value)
                .map_err(|error| CompileError::Maglev {
                    pool: pool.name.clone(),
                    error,
                })?;
            g.maglev.extend_from_slice(&slots);
        }
        g.pools.push(abi::Pool {
            name: abi::name_field(&pool.name),
            scheduler: pool.scheduler.abi() as u8,
            _pad: [0; 3],
            maglev_offset,
            maglev_size: size,
            first_backend,
            backend_count: index_u32("backends", pool.backends.len())?,
            first_healthy,
            healthy_count: index_u32("healthy backends", g.healthy_backends.len())? - first_healthy,
        });
    }

    let top = g.backends.iter().map(|b| b.id).max().unwrap_or(0);
    g.backend_by_id = vec![0; top as usize + 1];
    for (index, b) in g.backends.iter().enumerate() {
        g.backend_by_id[b.id as usize] = index_u32("backends", index + 1)?;
    }
    Ok(())
}

/// A backend's flags. Full only means something for a healthy backend: an unhealthy one takes
/// no new flow anyway. Being full changes nothing else — the backend stays in the healthy list
/// and keeps its Maglev slots, so a backend filling up or draining back moves no slot.
fn flags(healthy: bool, full: bool) -> u8 {
    match (healthy, full) {
        (false, _) => 0,
        (true, false) => abi::BACKEND_HEALTHY,
        (true, true) => abi::BACKEND_HEALTHY | abi::BACKEND_FULL,
    }
}

#[cfg(test)]
mod tests {
    use switchyard_table::generation::{BACKEND_FULL, BACKEND_HEALTHY};

    use super::super::{compile, BackendIds, BackendState, CompileInput};

    const POLICY: &str = "interfaces:
  - { name: eth0, mac: 02:00:00:00:00:01, addresses: [192.0.2.1/24], gateway: { ipv4: 192.0.2.254 } }
services:
  - { name: llm, vip: 203.0.113.10, ports: [443], routes: [{ pool: gpus }] }
pools:
  gpus:
    maglev_size: 1009
    health: { tcp: { port: 8000 } }
    backends:
      - { address: 192.0.2.11 }
      - { address: 192.0.2.12 }
      - { address: 192.0.2.13, weight: 50 }
";

    #[test]
    fn a_full_backend_is_flagged_and_moves_no_slot() {
        let policy =
            crate::policy::parse_str(POLICY, "full.yaml").unwrap_or_else(|e| panic!("{e}"));
        let build = |state: &BackendState| {
            let input = CompileInput {
                policy: &policy,
                generation: 1,
                state,
            };
            compile(&input, &mut BackendIds::new()).expect("compiles")
        };
        let plain = build(&BackendState::new());
        let mut state = BackendState::new();
        state.set_full("gpus", "192.0.2.12".parse().unwrap(), true);
        state.set_full("gpus", "192.0.2.13".parse().unwrap(), true);
        state.set_health("gpus", "192.0.2.13".parse().unwrap(), false);
        let full = build(&state);
        let flags: Vec<u8> = full.backends.iter().map(|b| b.flags).collect();
        assert_eq!(
            flags,
            [BACKEND_HEALTHY, BACKEND_HEALTHY | BACKEND_FULL, 0],
            "full only marks a healthy backend"
        );

        // Full and healthy: the same table and healthy list as not full.
        state.set_health("gpus", "192.0.2.13".parse().unwrap(), true);
        state.set_full("gpus", "192.0.2.13".parse().unwrap(), false);
        let full = build(&state);
        assert_eq!(full.maglev, plain.maglev);
        assert_eq!(full.healthy_backends, plain.healthy_backends);
        assert_eq!(full.pools, plain.pools);
        assert_eq!(full.backends[1].flags, BACKEND_HEALTHY | BACKEND_FULL);
        full.validate().unwrap();

        // Not full again: the very same generation.
        state.set_full("gpus", "192.0.2.12".parse().unwrap(), false);
        assert_eq!(build(&state), plain);
    }
}
