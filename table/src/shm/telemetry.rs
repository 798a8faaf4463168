//! Per-worker telemetry in the control segment: the blocks of [`WorkerTelemetry`] (layout in
//! [`super::layout`]), written by their worker only and read by the control plane without locks.
//!
//! Rows are keyed rather than positional, because a table generation renumbers its services
//! and backends: a service row by [`service_key`] of the service's name, a backend row by the
//! stable backend id. The data plane's workers assign rows when they take a generation
//! (`dataplane/telemetry.rs`); the control plane reads [`TelemetrySnapshot`]s and maps keys back
//! to names with the generation it published. Counters only grow while a row keeps its key; a
//! reader that sees a key change treats the row as starting from zero.

use std::sync::atomic::Ordering;

use std::sync::atomic::AtomicU64;

use super::layout::{
    BackendRow, PortRow, ServiceRow, TelemetryHeader, WorkerTelemetry, MAX_TELEMETRY_BACKENDS,
    MAX_TELEMETRY_PORTS, MAX_TELEMETRY_SERVICES, MAX_WORKERS,
};
use super::{CounterRows, DataplaneEnd, Segment};

/// The key of a service's telemetry row: xxh3 of its name as the generation carries it (the
/// record's NUL-padded name, truncated to `NAME_LEN`), never 0 (0 marks a free row).
#[must_use]
pub fn service_key(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes()) | 1
}

/// The segment's telemetry blocks, for the data plane's workers (each writes its own). Holds the
/// mapping alive.
#[derive(Debug, Clone)]
pub struct TelemetryBlocks {
    segment: Segment,
}

impl TelemetryBlocks {
    /// Worker `worker`'s block; `None` past [`MAX_WORKERS`].
    #[must_use]
    pub fn block(&self, worker: usize) -> Option<&WorkerTelemetry> {
        self.segment.map.layout().telemetry.get(worker)
    }
}

impl TelemetryBlocks {
    /// A worker's handle on its own block; `None` past [`MAX_WORKERS`].
    #[must_use]
    pub fn worker(&self, worker: usize) -> Option<WorkerBlock> {
        (worker < MAX_WORKERS).then(|| WorkerBlock {
            segment: self.segment.clone(),
            worker,
        })
    }
}

/// One worker's block of the segment (`worker` < [`MAX_WORKERS`], checked when made).
#[derive(Debug, Clone)]
pub struct WorkerBlock {
    segment: Segment,
    worker: usize,
}

impl WorkerBlock {
    #[inline]
    #[must_use]
    pub fn get(&self) -> &WorkerTelemetry {
        &self.segment.map.layout().telemetry[self.worker]
    }
}

impl CounterRows {
    /// The telemetry blocks of the same segment.
    #[must_use]
    pub fn telemetry_blocks(&self) -> TelemetryBlocks {
        TelemetryBlocks {
            segment: self.segment.clone(),
        }
    }
}

#[allow(clippy::declare_interior_mutable_const)] // array-repeat initialisers only
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)] // array-repeat initialisers only
const ZERO_PORT: PortRow = PortRow {
    rx_packets: ZERO,
    rx_bytes: ZERO,
    tx_packets: ZERO,
    tx_bytes: ZERO,
    _reserved: [ZERO; 4],
};
#[allow(clippy::declare_interior_mutable_const)] // array-repeat initialisers only
const ZERO_SERVICE: ServiceRow = ServiceRow {
    key: ZERO,
    packets: ZERO,
    bytes: ZERO,
    new_flows: ZERO,
};
#[allow(clippy::declare_interior_mutable_const)] // array-repeat initialisers only
const ZERO_BACKEND: BackendRow = BackendRow {
    packets: ZERO,
    bytes: ZERO,
    new_flows: ZERO,
    active_flows: ZERO,
};

/// A zeroed block in process memory, for a data plane without a segment (`run --table`) and
/// for tests.
#[must_use]
pub fn zeroed_block() -> Box<WorkerTelemetry> {
    Box::new(WorkerTelemetry {
        header: TelemetryHeader {
            generation: ZERO,
            swaps: ZERO,
            busy_cycles: ZERO,
            idle_cycles: ZERO,
            tsc_hz: ZERO,
            untracked_packets: ZERO,
            untracked_bytes: ZERO,
            _reserved: ZERO,
        },
        ports: [ZERO_PORT; MAX_TELEMETRY_PORTS],
        services: [ZERO_SERVICE; MAX_TELEMETRY_SERVICES],
        backend_ids: [ZERO; MAX_TELEMETRY_BACKENDS],
        backends: [ZERO_BACKEND; MAX_TELEMETRY_BACKENDS],
    })
}

impl DataplaneEnd {
    /// The telemetry blocks of the segment (see [`TelemetryBlocks`]).
    #[must_use]
    pub fn telemetry_blocks(&self) -> TelemetryBlocks {
        TelemetryBlocks {
            segment: self.guard.segment.clone(),
        }
    }
}

/// One port row as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounts {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// One keyed row as read: packets, bytes, new flows, and (backends) active flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub key: u64,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub active_flows: u64,
}

/// One worker's telemetry block as read at one moment (rows with a key only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetrySnapshot {
    pub generation: u64,
    pub swaps: u64,
    pub busy_cycles: u64,
    pub idle_cycles: u64,
    pub tsc_hz: u64,
    pub untracked_packets: u64,
    pub untracked_bytes: u64,
    pub ports: Vec<PortCounts>,
    /// `(row, counts)` of every service row with a key.
    pub services: Vec<(usize, RowCounts)>,
    /// `(row, counts)` of every backend row with a key (the stable backend id).
    pub backends: Vec<(usize, RowCounts)>,
}

impl Segment {
    /// Reads worker `worker`'s telemetry block, `ports` port rows of it; `None` past
    /// [`MAX_WORKERS`]. A row whose key changed while it was read is left out (it reappears,
    /// from zero, at the next read).
    #[must_use]
    pub fn telemetry(&self, worker: usize, ports: usize) -> Option<TelemetrySnapshot> {
        if worker >= MAX_WORKERS {
            return None;
        }
        let t = self.map.layout().telemetry.get(worker)?;
        let h = &t.header;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut snap = TelemetrySnapshot {
            generation: h.generation.load(Ordering::Acquire),
            swaps: load(&h.swaps),
            busy_cycles: load(&h.busy_cycles),
            idle_cycles: load(&h.idle_cycles),
            tsc_hz: load(&h.tsc_hz),
            untracked_packets: load(&h.untracked_packets),
            untracked_bytes: load(&h.untracked_bytes),
            ..TelemetrySnapshot::default()
        };
        snap.ports = t.ports[..ports.min(MAX_TELEMETRY_PORTS)]
            .iter()
            .map(|p| PortCounts {
                rx_packets: load(&p.rx_packets),
                rx_bytes: load(&p.rx_bytes),
                tx_packets: load(&p.tx_packets),
                tx_bytes: load(&p.tx_bytes),
            })
            .collect();
        for (i, r) in t.services.iter().enumerate().take(MAX_TELEMETRY_SERVICES) {
            let key = r.key.load(Ordering::Acquire);
            if key == 0 {
                continue;
            }
            let counts = RowCounts {
                key,
                packets: load(&r.packets),
                bytes: load(&r.bytes),
                new_flows: load(&r.new_flows),
                active_flows: 0,
            };
            if r.key.load(Ordering::Acquire) == key {
                snap.services.push((i, counts));
            }
        }
        for (i, (id, r)) in t
            .backend_ids
            .iter()
            .zip(&t.backends)
            .enumerate()
            .take(MAX_TELEMETRY_BACKENDS)
        {
            let key = id.load(Ordering::Acquire);
            if key == 0 {
                continue;
            }
            let counts = RowCounts {
                key,
                packets: load(&r.packets),
                bytes: load(&r.bytes),
                new_flows: load(&r.new_flows),
                active_flows: load(&r.active_flows),
            };
            if id.load(Ordering::Acquire) == key {
                snap.backends.push((i, counts));
            }
        }
        Some(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_keys_are_never_zero_and_differ_by_name() {
        assert_ne!(service_key(""), 0);
        assert_ne!(service_key("llama-70b"), service_key("llama-8b"));
        assert_eq!(service_key("llama-70b"), service_key("llama-70b"));
    }
}
