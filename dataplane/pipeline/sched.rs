//! Choosing a backend for a new flow: route by client region, pool with fallback and canary,
//! then the pool's scheduler.
//!
//! The consistent schedulers (Maglev, IP hash) only index the generation's tables. The others
//! keep per-worker state here, sized at `set_generation`: a round-robin cursor per pool, the
//! smooth-weighted-round-robin "current weight" per backend, and the number of live flows this
//! worker has per backend id (for least connections). Flow counts are keyed by the stable
//! backend id, so they survive generation swaps; the flow table reports every entry that leaves
//! (expired, evicted, replaced) and the pipeline reports TCP closes, so the counts stay exact.
//!
//! # Route, pool, scheduler
//!
//! **Route and pool.** Region = `geo_lpm` of the source (value − 1, or none). The service's
//! routes in order: the first whose region is the client's or `NONE`; none →
//! `drop_no_route`. Canary first: when `route.canary_pool != NONE`,
//! `hash % 1_000_000 < canary_per_million` and the canary pool has a healthy backend
//! (`canary_selected`). Else the route's pools in order, the first with `healthy_count > 0`
//! (`pool_fallback` when not the first); none → `drop_no_healthy_backend`. Strict residency
//! needs nothing here: the compiler lists only the region's pools.
//!
//! **Scheduler** of the pool: `maglev` → `maglev[offset + hash % size]` (backend index + 1;
//! 0 → `drop_no_healthy_backend`; a slot naming a backend that is no longer healthy falls
//! back to `healthy[hash % n]`); `ip_hash` → the same with [`super::ip_hash_v4`] / [`super::ip_hash_v6`]
//! of the source only; `round_robin` → a per-worker cursor per pool over the healthy list
//! (starting at the worker index); `least_conn` → the healthy backend with the fewest live
//! flows on this worker (counted per stable backend id: +1 on insert, −1 when the flow
//! closes, expires, is evicted or replaced; ties to the first from the worker index on);
//! `weighted` → smooth weighted round robin over the healthy backends' weights. A flow the
//! connection table will not store (flood mode, insert cap, no way it may take) and a TCP
//! packet without SYN that missed are placed by consistent hash whatever the scheduler
//! ([`NewFlow::consistent`]: `healthy[hash % n]` for the three stateful ones), so each of
//! their packets, scheduled on its own, gets the same backend.
//!
//! # Bounded load
//!
//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam) for `maglev` and
//! `ip_hash`: the control plane marks a healthy backend [`BACKEND_FULL`] when its live load is
//! past its pool's threshold, and changes nothing else — the Maglev table and the healthy list
//! stay as they are. A new flow whose slot `h mod M` names a full backend walks its own
//! preference order: the slots `(h + i·step) mod M` for `i = 1, 2, …`, where
//! `step = 1 + h₂ mod (M − 1)` comes from a second hash `h₂` of the key, independent of the
//! slot. `M` is prime, so the walk is a permutation of the slots particular to the key, and it
//! meets each backend in proportion to its slots, i.e. its weight: the flows a full backend
//! turns away spread over the others by weight. The first backend met that is healthy,
//! weighted and not full takes the flow (`bounded_load_spill`). After [`SPILL_PROBES`] probes
//! the pool's healthy list is scanned from `h mod n` instead (also `bounded_load_spill`); when
//! every backend is full the flow goes to the preferred backend after all
//! (`bounded_load_all_full`): a saturated pool still serves, and never falls back to another
//! pool for being full. The walk is a pure function of the key and the table, so with `ip_hash`
//! every flow of a client still goes to one backend, and every balancer with the same table
//! sends a flow to the same one. Only new flows are scheduled, so flows already on a backend
//! stay when it fills up. A flow whose backend is not full — the common case — costs nothing
//! more: one mask tests healthy and not full together.

use switchyard_table::generation::{
    Backend, Generation, Pool, Scheduler, BACKEND_FULL, BACKEND_HEALTHY, NONE, PER_MILLION,
};

use super::counters::{Counter, Counters};
use crate::flow::{fold32, hash_words, FlowValue};

/// Slots a bounded-load walk probes before it scans the pool's healthy list instead. With a
/// share `f` of the slots on full backends, all of them are full with probability `f^32`
/// (0.08 % at `f = 0.8`).
const SPILL_PROBES: usize = 32;

/// Seed of the second hash of a key, which sets the step of its bounded-load walk.
const SPILL_SEED: u64 = 0x6c62_272e_07bb_0142;

/// Bit of [`FlowValue::slot`]: this flow is included in its backend's live-flow count.
pub(crate) const SLOT_COUNTED: u32 = 1;

/// Bits 1..=11 of [`FlowValue::slot`]: the flow's service as its telemetry row + 1 (0: none),
/// and bits 12..=31 that row's incarnation when the flow was inserted ([`service_tag`]). The
/// row is stable while the service stays (rows are keyed by the service's name); the
/// incarnation tells a flow of a service that left from one of the service that took the row
/// next, so a late release never uncounts the wrong service.
const SLOT_SERVICE_SHIFT: u32 = 1;
const SLOT_SERVICE_BITS: u32 = 11;
const SLOT_INCARNATION_SHIFT: u32 = SLOT_SERVICE_SHIFT + SLOT_SERVICE_BITS;
/// The service bits of [`FlowValue::slot`] (row and incarnation).
pub(crate) const SLOT_SERVICE: u32 = !SLOT_COUNTED;

/// The slot bits naming service telemetry row `row` of incarnation `incarnation` (`row` past
/// the 11 bits: none).
#[must_use]
pub(crate) fn service_tag(row: u32, incarnation: u32) -> u32 {
    if row >= (1 << SLOT_SERVICE_BITS) - 1 {
        return 0;
    }
    ((row + 1) << SLOT_SERVICE_SHIFT) | (incarnation_bits(incarnation) << SLOT_INCARNATION_SHIFT)
}

/// The `(row, incarnation)` a slot names, if any.
#[inline]
fn service_of(slot: u32) -> Option<(usize, u32)> {
    let row = (slot >> SLOT_SERVICE_SHIFT) & ((1 << SLOT_SERVICE_BITS) - 1);
    (row != 0).then(|| ((row - 1) as usize, slot >> SLOT_INCARNATION_SHIFT))
}

/// Incarnations as the slot holds them (20 bits).
#[must_use]
fn incarnation_bits(incarnation: u32) -> u32 {
    incarnation & ((1 << (32 - SLOT_INCARNATION_SHIFT)) - 1)
}

/// Per-worker scheduler state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchedState {
    /// Round-robin cursor per pool.
    rr: Vec<u32>,
    /// Smooth weighted round robin: current weight per backend index.
    swrr: Vec<i64>,
    /// Live flows of this worker per backend id.
    conns: Vec<u32>,
    /// Live flows of this worker per service telemetry row: `(incarnation, flows)`.
    services: Vec<(u32, u32)>,
    /// This worker's index: starts the round-robin cursors and least-connection tie scans at
    /// different backends on different workers.
    worker: usize,
}

impl SchedState {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            worker,
            ..Self::default()
        }
    }

    /// Resets the per-pool state for `g`; flow counts are kept (and grown to the id space).
    pub(crate) fn reset_for(&mut self, g: &Generation) {
        self.rr.clear();
        self.rr.resize(g.pools.len(), low32(self.worker));
        self.swrr.clear();
        self.swrr.resize(g.backends.len(), 0);
        if self.conns.len() < g.backend_by_id.len() {
            self.conns.resize(g.backend_by_id.len(), 0);
        }
    }

    /// Counts a new live flow on backend `id`, and on the service `slot` names.
    #[inline]
    pub(crate) fn acquire(&mut self, id: u32, slot: u32) {
        if let Some(c) = self.conns.get_mut(id as usize) {
            *c = c.saturating_add(1);
        }
        if let Some(c) = self.service_count(slot) {
            *c = c.saturating_add(1);
        }
    }

    /// A flow left the table (or closed): uncount it if it was counted.
    #[inline]
    pub(crate) fn release(&mut self, value: FlowValue) {
        if value.slot & SLOT_COUNTED != 0 {
            if let Some(c) = self.conns.get_mut(value.backend as usize) {
                *c = c.saturating_sub(1);
            }
            if let Some(c) = self.service_count(value.slot) {
                *c = c.saturating_sub(1);
            }
        }
    }

    /// The live-flow count of the service `slot` names, if that row is still the same
    /// incarnation.
    #[inline]
    fn service_count(&mut self, slot: u32) -> Option<&mut u32> {
        let (row, incarnation) = service_of(slot)?;
        match self.services.get_mut(row) {
            Some((i, c)) if *i == incarnation => Some(c),
            _ => None,
        }
    }

    /// Service telemetry row `row` now counts incarnation `incarnation` (a service took it):
    /// its count starts from zero. Rows past the slot's 11 bits are not counted.
    pub(crate) fn set_service_row(&mut self, row: usize, incarnation: u32) {
        if row >= (1 << SLOT_SERVICE_BITS) - 1 {
            return;
        }
        if self.services.len() <= row {
            self.services.resize(row + 1, (u32::MAX, 0));
        }
        let incarnation = incarnation_bits(incarnation);
        if self.services[row].0 != incarnation {
            self.services[row] = (incarnation, 0);
        }
    }

    /// Live flows this worker tracks on backend `id`.
    pub(crate) fn live_flows(&self, id: u32) -> u32 {
        self.conns.get(id as usize).copied().unwrap_or(0)
    }

    /// Live flows this worker tracks for service telemetry row `row`.
    pub(crate) fn service_flows(&self, row: usize) -> u32 {
        self.services.get(row).map_or(0, |&(_, c)| c)
    }
}

#[allow(clippy::cast_possible_truncation)]
const fn low32(x: usize) -> u32 {
    x as u32
}

/// The backend index of flow-table backend `id`, if it is still there and healthy.
///
/// # Errors
/// [`Counter::FlowBackendGone`] or [`Counter::FlowBackendUnhealthy`].
#[inline]
pub(crate) fn live_backend(g: &Generation, id: u32) -> Result<usize, Counter> {
    let slot = g.backend_by_id.get(id as usize).copied().unwrap_or(0);
    let index = (slot as usize).wrapping_sub(1);
    match g.backends.get(index) {
        None => Err(Counter::FlowBackendGone),
        Some(b) if b.flags & BACKEND_HEALTHY == 0 => Err(Counter::FlowBackendUnhealthy),
        Some(_) => Ok(index),
    }
}

/// What a new flow needs to be scheduled: its service, the client's region and two hashes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewFlow {
    pub service: u32,
    /// Region index of the client, or [`NONE`].
    pub region: u32,
    /// The 5-tuple flow hash (Maglev, canary share).
    pub hash: u32,
    /// The source-address hash (IP hash).
    pub src_hash: u32,
    /// Place the flow by consistent hash whatever the pool's scheduler: it will not be stored
    /// (or was lost, a TCP packet without SYN), so each of its packets is scheduled on its
    /// own and must get the same backend. Maglev and IP hash pools are consistent anyway;
    /// `round_robin`, `least_conn` and `weighted` pools (no Maglev table) take
    /// `healthy[hash % n]`.
    pub consistent: bool,
}

/// Picks a backend index for a new flow.
///
/// # Errors
/// The drop counter: no route for the region, no healthy pool, or a broken reference.
#[inline]
pub(crate) fn schedule(
    g: &Generation,
    st: &mut SchedState,
    counters: &mut Counters,
    flow: &NewFlow,
) -> Result<usize, Counter> {
    let service = g
        .services
        .get(flow.service as usize)
        .ok_or(Counter::DropBadTableReference)?;
    let first = service.first_route as usize;
    let routes = g
        .routes
        .get(first..first.saturating_add(service.route_count as usize))
        .ok_or(Counter::DropBadTableReference)?;
    let route = routes
        .iter()
        .find(|r| r.region == flow.region || r.region == NONE)
        .ok_or(Counter::DropNoRoute)?;

    // The canary takes its share by flow hash, as long as it can serve it.
    if route.canary_pool != NONE && flow.hash % PER_MILLION < route.canary_per_million {
        if let Some(pool) = g.pools.get(route.canary_pool as usize) {
            if pool.healthy_count > 0 {
                counters.inc(Counter::CanarySelected);
                return pick(g, st, counters, route.canary_pool as usize, pool, flow);
            }
        }
    }
    let count = (route.pool_count as usize).min(route.pools.len());
    for (i, &p) in route.pools[..count].iter().enumerate() {
        let pool = g
            .pools
            .get(p as usize)
            .ok_or(Counter::DropBadTableReference)?;
        if pool.healthy_count > 0 {
            if i > 0 {
                counters.inc(Counter::PoolFallback);
            }
            return pick(g, st, counters, p as usize, pool, flow);
        }
    }
    Err(Counter::DropNoHealthyBackend)
}

/// The pool's scheduler picks one of its healthy backends (`healthy_count > 0`).
#[inline]
fn pick(
    g: &Generation,
    st: &mut SchedState,
    counters: &mut Counters,
    pool_index: usize,
    pool: &Pool,
    flow: &NewFlow,
) -> Result<usize, Counter> {
    let first = pool.first_healthy as usize;
    let healthy = g
        .healthy_backends
        .get(first..first.saturating_add(pool.healthy_count as usize))
        .ok_or(Counter::DropBadTableReference)?;
    let n = healthy.len();
    if n == 0 {
        return Err(Counter::DropNoHealthyBackend);
    }
    let index = match Scheduler::from_u8(pool.scheduler) {
        Some(Scheduler::Maglev) => maglev(g, pool, healthy, flow.hash, counters)?,
        Some(Scheduler::IpHash) => maglev(g, pool, healthy, flow.src_hash, counters)?,
        Some(_) if flow.consistent => healthy[flow.hash as usize % n],
        Some(Scheduler::RoundRobin) => {
            let cursor = st
                .rr
                .get_mut(pool_index)
                .ok_or(Counter::DropBadTableReference)?;
            let at = *cursor as usize % n;
            *cursor = cursor.wrapping_add(1);
            healthy[at]
        }
        Some(Scheduler::LeastConn) => {
            let start = st.worker % n;
            let mut best = healthy[start];
            let mut best_count = u32::MAX;
            for k in 0..n {
                let b = healthy[(start + k) % n];
                let id = g.backends.get(b as usize).map_or(0, |b| b.id);
                let c = st.live_flows(id);
                if c < best_count {
                    (best, best_count) = (b, c);
                }
            }
            best
        }
        Some(Scheduler::Weighted) => {
            // Smooth weighted round robin (nginx): everyone gains its weight, the richest is
            // picked and pays the total. Over W picks each backend gets exactly its weight.
            let mut total = 0i64;
            let mut best: Option<(u32, i64)> = None;
            for &b in healthy {
                let w = i64::from(g.backends.get(b as usize).map_or(0, |b| b.weight));
                let cur = st
                    .swrr
                    .get_mut(b as usize)
                    .ok_or(Counter::DropBadTableReference)?;
                *cur += w;
                total += w;
                if best.is_none_or(|(_, c)| *cur > c) {
                    best = Some((b, *cur));
                }
            }
            let (b, _) = best.ok_or(Counter::DropNoHealthyBackend)?;
            if let Some(cur) = st.swrr.get_mut(b as usize) {
                *cur -= total;
            }
            b
        }
        None => return Err(Counter::DropBadTableReference),
    };
    if (index as usize) < g.backends.len() {
        Ok(index as usize)
    } else {
        Err(Counter::DropBadTableReference)
    }
}

/// The pool's Maglev slot for `hash`. Slots hold backend index + 1; an empty slot (0) means
/// the pool has no backend to offer. A slot naming a backend that is not healthy or drained (a
/// table not rebuilt yet) falls back to the healthy list, indexed by the same hash, so the
/// choice stays a pure function of the hash. A full backend sends the flow on along its
/// preference order ([`spill`]; see the module documentation).
#[inline]
fn maglev(
    g: &Generation,
    pool: &Pool,
    healthy: &[u32],
    hash: u32,
    counters: &mut Counters,
) -> Result<u32, Counter> {
    let size = pool.maglev_size;
    if size == 0 {
        return Err(Counter::DropNoHealthyBackend);
    }
    let at = pool.maglev_offset as usize + (hash % size) as usize;
    let slot = g.maglev.get(at).copied().unwrap_or(0);
    if slot == 0 {
        return Err(Counter::DropNoHealthyBackend);
    }
    match g.backends.get(slot as usize - 1) {
        Some(b) if takes_new_flows(b) => Ok(slot - 1),
        Some(b) if b.flags & BACKEND_HEALTHY != 0 && b.weight > 0 => {
            Ok(spill(g, pool, healthy, hash, slot - 1, counters))
        }
        Some(_) => {
            let fallback = healthy[hash as usize % healthy.len()];
            if open(g, fallback) {
                Ok(fallback)
            } else {
                Ok(spill(g, pool, healthy, hash, fallback, counters))
            }
        }
        None => Err(Counter::DropBadTableReference),
    }
}

/// Whether a backend takes new flows: healthy, weighted and not full (one mask test).
#[inline]
fn takes_new_flows(b: &Backend) -> bool {
    b.flags & (BACKEND_HEALTHY | BACKEND_FULL) == BACKEND_HEALTHY && b.weight > 0
}

/// Whether backend index `b` takes new flows.
#[inline]
fn open(g: &Generation, b: u32) -> bool {
    g.backends.get(b as usize).is_some_and(takes_new_flows)
}

/// Bounded load: `preferred` is full. The key's walk over the pool's slots, then its healthy
/// list, picks the first backend that is [`open`]; when none is, `preferred` (see the module
/// documentation). Off the common path: only new flows whose preferred backend is full get here.
#[cold]
#[inline(never)]
fn spill(
    g: &Generation,
    pool: &Pool,
    healthy: &[u32],
    hash: u32,
    preferred: u32,
    counters: &mut Counters,
) -> u32 {
    let first = pool.maglev_offset as usize;
    let slots = g
        .maglev
        .get(first..first.saturating_add(pool.maglev_size as usize))
        .unwrap_or_default();
    let n = slots.len();
    if n > 1 {
        let step = 1 + fold32(hash_words(SPILL_SEED, &[u64::from(hash)])) as usize % (n - 1);
        let mut at = hash as usize % n;
        for _ in 0..SPILL_PROBES {
            at = (at + step) % n;
            let slot = slots.get(at).copied().unwrap_or(0);
            if slot != 0 && open(g, slot - 1) {
                counters.inc(Counter::BoundedLoadSpill);
                return slot - 1;
            }
        }
    }
    let n = healthy.len();
    let start = hash as usize % n.max(1);
    for k in 0..n {
        let b = healthy[(start + k) % n];
        if open(g, b) {
            counters.inc(Counter::BoundedLoadSpill);
            return b;
        }
    }
    counters.inc(Counter::BoundedLoadAllFull);
    preferred
}
