//! A worker's telemetry: per port, per service and per backend traffic, its generation and swap
//! count, busy and idle cycles, in its own block of the control segment (layout in
//! `switchyard_table::shm::layout`), or in a block of its own memory without a segment.
//!
//! Only the owning worker writes its block, so every counter is a plain load and store of a
//! line it owns (relaxed atomics compile to plain moves; no read-modify-write, no lock). The
//! per-packet cost of a packet forwarded to a backend is two array lookups (service index →
//! row, backend slot → row, both in small vectors of this worker) and four increments (packets
//! and bytes of the service row and of the backend row), plus two on a new flow.
//!
//! Rows are keyed, because generations renumber services and backends: a service row by
//! [`service_key`] of its name, a backend row by its stable id. [`Telemetry::set_generation`]
//! assigns rows when the worker takes a generation (off the packet path): a service or backend
//! that stays keeps its row and its counts; a new one takes a free row, zeroed; a row whose
//! service or backend left is reused only after every never-used row (first freed, first
//! reused), so the control plane reads its final counts. Services or backends beyond the rows
//! (more than `MAX_TELEMETRY_SERVICES` / `MAX_TELEMETRY_BACKENDS`) are counted together as
//! untracked.
//!
//! Active flows per service and per backend are not counted per packet:
//! [`Telemetry::publish_active_flows`] and [`Telemetry::publish_service_flows`] store, about
//! every 100 ms, the scheduler's exact counts (+1 when a flow is inserted or re-pointed, −1 when
//! it closes, expires, is evicted or re-pointed away), so closing TCP flows are not active. A
//! flow entry records its service as the service's row and that row's incarnation (a row taken
//! by another service after its own left is a new incarnation), so a flow of a service that left
//! is never uncounted from the next one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::Release};

use switchyard_table::generation::{name_str, Generation};
use switchyard_table::shm::layout::{
    WorkerTelemetry, MAX_TELEMETRY_BACKENDS, MAX_TELEMETRY_PORTS, MAX_TELEMETRY_SERVICES,
};
use switchyard_table::shm::telemetry::{service_key, zeroed_block, WorkerBlock};

/// "No row" in the index → row maps.
const NO_ROW: u32 = u32::MAX;

/// Adds `n` to a counter only this worker writes: a load and a store, no atomic RMW.
#[inline(always)]
fn bump(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

enum Block {
    Segment(WorkerBlock),
    Own(Box<WorkerTelemetry>),
}

/// Hands out rows by key (see the module doc).
#[derive(Debug)]
struct Rows {
    /// Key → row, for every row holding a key (live or not).
    by_key: HashMap<u64, u32>,
    /// Row → key (0: never used).
    key_of: Vec<u64>,
    /// Row → in the current generation.
    live: Vec<bool>,
    /// Row → waiting in `free`.
    queued: Vec<bool>,
    /// Rows to hand out, first freed first; may hold rows that went live again (skipped).
    free: VecDeque<u32>,
}

impl Rows {
    fn new(rows: usize) -> Self {
        Self {
            by_key: HashMap::new(),
            key_of: vec![0; rows],
            live: vec![false; rows],
            queued: vec![true; rows],
            free: (0..u32::try_from(rows).unwrap_or(u32::MAX)).collect(),
        }
    }

    /// Rows for `keys` (0: no row), in order, into `out`; `rekey(row, key)` is called for every
    /// row that takes a new key.
    fn assign(&mut self, keys: &[u64], out: &mut Vec<u32>, mut rekey: impl FnMut(usize, u64)) {
        let was_live = std::mem::replace(&mut self.live, vec![false; self.key_of.len()]);
        out.clear();
        // Keys that keep (or get back) their row first, so a new key never takes a row one
        // of this generation's keys still holds.
        for &key in keys {
            let row = match self.by_key.get(&key) {
                Some(&row) if key != 0 => {
                    self.live[row as usize] = true;
                    row
                }
                _ => NO_ROW,
            };
            out.push(row);
        }
        for (slot, &key) in keys.iter().enumerate() {
            if key == 0 || out[slot] != NO_ROW {
                continue;
            }
            if let Some(&row) = self.by_key.get(&key) {
                // The same key twice in one generation: one row.
                out[slot] = row;
                continue;
            }
            let Some(row) = self.take_free() else {
                continue;
            };
            let r = row as usize;
            if self.key_of[r] != 0 {
                self.by_key.remove(&self.key_of[r]);
            }
            self.key_of[r] = key;
            self.by_key.insert(key, row);
            self.live[r] = true;
            rekey(r, key);
            out[slot] = row;
        }
        for (r, (&was, &is)) in was_live.iter().zip(&self.live).enumerate() {
            if was && !is && !self.queued[r] {
                self.queued[r] = true;
                self.free.push_back(u32::try_from(r).unwrap_or(u32::MAX));
            }
        }
    }

    fn take_free(&mut self) -> Option<u32> {
        while let Some(row) = self.free.pop_front() {
            let r = row as usize;
            self.queued[r] = false;
            if !self.live[r] {
                return Some(row);
            }
        }
        None
    }
}

/// A worker's telemetry (see the module doc).
pub struct Telemetry {
    block: Block,
    /// Service index of the current generation → row.
    services: Vec<u32>,
    /// Service row → how many times a service took it (tells flows of successive services of
    /// one row apart: `pipeline::sched::service_tag`).
    service_incarnations: Vec<u32>,
    /// Backend slot of the current generation → row.
    backends: Vec<u32>,
    service_rows: Rows,
    backend_rows: Rows,
}

impl core::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Telemetry")
            .field("segment", &matches!(self.block, Block::Segment(_)))
            .field("services", &self.services.len())
            .field("backends", &self.backends.len())
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::local()
    }
}

impl Telemetry {
    /// Counts into a block of this process's memory.
    #[must_use]
    pub fn local() -> Self {
        Self::with_block(Block::Own(zeroed_block()))
    }

    /// Counts into the worker's block of the control segment, zeroed first (a new data plane
    /// starts from zero).
    #[must_use]
    pub fn in_segment(block: WorkerBlock) -> Self {
        Self::with_block(Block::Segment(block))
    }

    fn with_block(block: Block) -> Self {
        let t = Self {
            block,
            services: Vec::new(),
            service_incarnations: vec![0; MAX_TELEMETRY_SERVICES],
            backends: Vec::new(),
            service_rows: Rows::new(MAX_TELEMETRY_SERVICES),
            backend_rows: Rows::new(MAX_TELEMETRY_BACKENDS),
        };
        t.clear();
        t
    }

    /// The block.
    #[inline(always)]
    #[must_use]
    pub fn block(&self) -> &WorkerTelemetry {
        match &self.block {
            Block::Segment(b) => b.get(),
            Block::Own(b) => b,
        }
    }

    fn clear(&self) {
        let b = self.block();
        let h = &b.header;
        for c in [
            &h.generation,
            &h.swaps,
            &h.busy_cycles,
            &h.idle_cycles,
            &h.untracked_packets,
            &h.untracked_bytes,
        ] {
            c.store(0, Relaxed);
        }
        for p in &b.ports {
            for c in [&p.rx_packets, &p.rx_bytes, &p.tx_packets, &p.tx_bytes] {
                c.store(0, Relaxed);
            }
        }
        for s in &b.services {
            s.key.store(0, Release);
        }
        for id in &b.backend_ids {
            id.store(0, Release);
        }
        // Window 0 reads as "none yet": a new data plane shows no top talkers of the last one.
        b.talkers
            .publish(&switchyard_table::shm::telemetry::TalkerWindow::default());
    }

    /// Maps the rows to generation `g`'s services and backends; counts a swap when `swap`.
    pub fn set_generation(&mut self, g: &Generation, swap: bool) {
        let Self {
            block,
            services,
            service_incarnations,
            backends,
            service_rows,
            backend_rows,
        } = self;
        let t: &WorkerTelemetry = match block {
            Block::Segment(b) => b.get(),
            Block::Own(b) => b,
        };
        let service_keys: Vec<u64> = g
            .services
            .iter()
            .map(|s| service_key(name_str(&s.name)))
            .collect();
        service_rows.assign(&service_keys, services, |row, key| {
            let r = &t.services[row];
            for c in [&r.packets, &r.bytes, &r.new_flows, &r.active_flows] {
                c.store(0, Relaxed);
            }
            if let Some(i) = service_incarnations.get_mut(row) {
                *i = i.wrapping_add(1);
            }
            r.key.store(key, Release);
        });
        let backend_keys: Vec<u64> = g.backends.iter().map(|b| u64::from(b.id)).collect();
        backend_rows.assign(&backend_keys, backends, |row, key| {
            let r = &t.backends[row];
            for c in [&r.packets, &r.bytes, &r.new_flows, &r.active_flows] {
                c.store(0, Relaxed);
            }
            t.backend_ids[row].store(key, Release);
        });
        if swap {
            bump(&t.header.swaps, 1);
        }
        t.header.generation.store(g.generation, Release);
    }

    /// Records the TSC frequency readers turn cycles into seconds with.
    pub fn set_tsc_hz(&self, hz: u64) {
        self.block().header.tsc_hz.store(hz, Relaxed);
    }

    /// A packet of service `service` forwarded to backend slot `backend` (both indices of the
    /// current generation), `bytes` long as received; `new_flow` when it opened a flow.
    #[inline(always)]
    pub fn forwarded(&self, service: u32, backend: usize, bytes: u64, new_flow: bool) {
        let t = self.block();
        let s = self
            .services
            .get(service as usize)
            .copied()
            .unwrap_or(NO_ROW);
        let b = self.backends.get(backend).copied().unwrap_or(NO_ROW);
        match (t.services.get(s as usize), t.backends.get(b as usize)) {
            (Some(s), Some(b)) => {
                bump(&s.packets, 1);
                bump(&s.bytes, bytes);
                bump(&b.packets, 1);
                bump(&b.bytes, bytes);
                if new_flow {
                    bump(&s.new_flows, 1);
                    bump(&b.new_flows, 1);
                }
            }
            _ => self.untracked(t, bytes),
        }
    }

    #[cold]
    #[inline(never)]
    fn untracked(&self, t: &WorkerTelemetry, bytes: u64) {
        bump(&t.header.untracked_packets, 1);
        bump(&t.header.untracked_bytes, bytes);
    }

    /// `packets` packets of `bytes` bytes received on appliance port `port`.
    #[inline]
    pub fn port_rx(&self, port: usize, packets: u64, bytes: u64) {
        if let Some(p) = self.block().ports.get(port) {
            bump(&p.rx_packets, packets);
            bump(&p.rx_bytes, bytes);
        }
    }

    /// `packets` packets of `bytes` bytes sent on appliance port `port`.
    #[inline]
    pub fn port_tx(&self, port: usize, packets: u64, bytes: u64) {
        if let Some(p) = self.block().ports.get(port) {
            bump(&p.tx_packets, packets);
            bump(&p.tx_bytes, bytes);
        }
    }

    /// Adds to the busy and idle cycle counts.
    #[inline]
    pub fn cycles(&self, busy: u64, idle: u64) {
        let h = &self.block().header;
        bump(&h.busy_cycles, busy);
        bump(&h.idle_cycles, idle);
    }

    /// The telemetry row of service `service` (an index of the current generation) and that
    /// row's incarnation; `None` for a service beyond the rows.
    #[inline]
    #[must_use]
    pub fn service_row(&self, service: u32) -> Option<(u32, u32)> {
        let row = *self.services.get(service as usize)?;
        let incarnation = *self.service_incarnations.get(row as usize)?;
        Some((row, incarnation))
    }

    /// Every service row that holds a key, with its incarnation.
    pub fn service_rows(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.service_rows
            .key_of
            .iter()
            .zip(&self.service_incarnations)
            .enumerate()
            .filter(|(_, (&key, _))| key != 0)
            .map(|(row, (_, &incarnation))| (row, incarnation))
    }

    /// Stores every keyed service row's active flows: `flows(row)`.
    pub fn publish_service_flows(&self, flows: impl Fn(usize) -> u32) {
        let t = self.block();
        for (row, _) in self.service_rows() {
            t.services[row]
                .active_flows
                .store(u64::from(flows(row)), Relaxed);
        }
    }

    /// Stores every keyed backend row's active flows: `flows(id)` for its stable id.
    pub fn publish_active_flows(&self, flows: impl Fn(u32) -> u32) {
        let t = self.block();
        for (row, &key) in self.backend_rows.key_of.iter().enumerate() {
            if key == 0 {
                continue;
            }
            let id = u32::try_from(key).unwrap_or(0);
            t.backends[row]
                .active_flows
                .store(u64::from(flows(id)), Relaxed);
        }
    }
}

const _: () = assert!(MAX_TELEMETRY_PORTS >= 2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_keys_and_are_reused_first_freed_first() {
        let mut rows = Rows::new(3);
        let mut out = Vec::new();
        let mut rekeyed = Vec::new();
        rows.assign(&[10, 20], &mut out, |r, k| rekeyed.push((r, k)));
        assert_eq!(out, vec![0, 1]);
        assert_eq!(rekeyed, vec![(0, 10), (1, 20)]);
        // 10 leaves, 30 and 40 come: 30 takes the never-used row, 40 the one 10 left.
        rekeyed.clear();
        rows.assign(&[20, 30], &mut out, |r, k| rekeyed.push((r, k)));
        assert_eq!(out, vec![1, 2]);
        rows.assign(&[20, 30, 40], &mut out, |r, k| rekeyed.push((r, k)));
        assert_eq!(out, vec![1, 2, 0]);
        assert_eq!(rekeyed, vec![(2, 30), (0, 40)]);
        // No row left: 50 goes untracked; a key seen again keeps its row.
        rows.assign(&[40, 50, 20], &mut out, |_, _| {});
        assert_eq!(out, vec![0, NO_ROW, 1]);
        rows.assign(&[0], &mut out, |_, _| panic!("0 is no key"));
        assert_eq!(out, vec![NO_ROW]);
    }
}
