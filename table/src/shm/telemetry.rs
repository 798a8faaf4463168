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
    BackendRow, PortRow, ServiceRow, TalkerBlock, TalkerEntry, TalkerHeader, TelemetryHeader,
    WorkerTelemetry, MAX_TALKERS, MAX_TELEMETRY_BACKENDS, MAX_TELEMETRY_PORTS,
    MAX_TELEMETRY_SERVICES, MAX_WORKERS,
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
    active_flows: ZERO,
};
#[allow(clippy::declare_interior_mutable_const)] // array-repeat initialisers only
const ZERO_BACKEND: BackendRow = BackendRow {
    packets: ZERO,
    bytes: ZERO,
    new_flows: ZERO,
    active_flows: ZERO,
};

#[allow(clippy::declare_interior_mutable_const)] // array-repeat initialisers only
const ZERO_TALKER: TalkerEntry = TalkerEntry {
    family: ZERO,
    addr_hi: ZERO,
    addr_lo: ZERO,
    samples: ZERO,
    error: ZERO,
    bytes: ZERO,
    _reserved: [ZERO; 2],
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
        talkers: TalkerBlock {
            header: TalkerHeader {
                seq: ZERO,
                window: ZERO,
                window_cycles: ZERO,
                packets: ZERO,
                samples: ZERO,
                non_ip: ZERO,
                prefix_lens: ZERO,
                sample_every: ZERO,
            },
            entries: [ZERO_TALKER; MAX_TALKERS],
        },
    })
}

/// A source prefix's address and length, as a worker keys its top talkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourcePrefix {
    V4(std::net::Ipv4Addr, u8),
    V6(std::net::Ipv6Addr, u8),
}

impl std::fmt::Display for SourcePrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(a, len) => write!(f, "{a}/{len}"),
            Self::V6(a, len) => write!(f, "{a}/{len}"),
        }
    }
}

/// One entry of a worker's top talkers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Talker {
    pub prefix: SourcePrefix,
    /// Samples counted for the prefix: at most `error` more than it really had.
    pub samples: u64,
    pub error: u64,
    /// Frame bytes of those samples (over-counted like `samples`).
    pub bytes: u64,
}

/// A worker's top talkers over one window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TalkerWindow {
    /// Windows published since the worker started (0: none yet).
    pub window: u64,
    /// The window's length in TSC cycles.
    pub window_cycles: u64,
    /// Packets received in the window, and how many of them were sampled.
    pub packets: u64,
    pub samples: u64,
    /// Samples that were not IP.
    pub non_ip: u64,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub sample_every: u64,
    /// Heaviest first; at most [`MAX_TALKERS`].
    pub talkers: Vec<Talker>,
}

/// Reads given up after this many torn copies (the worker rewrites the block about once a
/// second, in well under a microsecond, so one retry is already rare).
const SEQLOCK_TRIES: usize = 16;

impl TalkerBlock {
    /// Publishes a window: the writer's side of the sequence lock. Only the owning worker may
    /// call this; entries past [`MAX_TALKERS`] are left out, the rest of the entries cleared.
    pub fn publish(&self, w: &TalkerWindow) {
        let h = &self.header;
        let seq = h.seq.load(Ordering::Relaxed);
        // Odd: readers retry until the closing store below.
        h.seq.store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        let store = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        store(&h.window, w.window);
        store(&h.window_cycles, w.window_cycles);
        store(&h.packets, w.packets);
        store(&h.samples, w.samples);
        store(&h.non_ip, w.non_ip);
        store(
            &h.prefix_lens,
            u64::from(w.ipv4_prefix) | u64::from(w.ipv6_prefix) << 8,
        );
        store(&h.sample_every, w.sample_every);
        for (i, e) in self.entries.iter().enumerate() {
            let Some(t) = w.talkers.get(i) else {
                store(&e.family, 0);
                continue;
            };
            let (family, addr) = match t.prefix {
                SourcePrefix::V4(a, _) => (4, u128::from(u32::from(a))),
                SourcePrefix::V6(a, _) => (6, u128::from(a)),
            };
            store(&e.family, family);
            #[allow(clippy::cast_possible_truncation)] // the two halves of the address
            {
                store(&e.addr_hi, (addr >> 64) as u64);
                store(&e.addr_lo, addr as u64);
            }
            store(&e.samples, t.samples);
            store(&e.error, t.error);
            store(&e.bytes, t.bytes);
        }
        h.seq
            .store((seq.wrapping_add(1) | 1).wrapping_add(1), Ordering::Release);
    }

    /// The last published window, or `None` when none was published yet or every copy was
    /// torn. Entries the reader cannot make sense of (a family other than 4 or 6, an
    /// out-of-range prefix length, an error above the count) are left out: the block is
    /// shared memory another process writes.
    #[must_use]
    pub fn read(&self) -> Option<TalkerWindow> {
        let h = &self.header;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for _ in 0..SEQLOCK_TRIES {
            let before = h.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let lens = load(&h.prefix_lens);
            #[allow(clippy::cast_possible_truncation)] // one byte each
            let (v4_len, v6_len) = ((lens & 0xff) as u8, ((lens >> 8) & 0xff) as u8);
            let mut w = TalkerWindow {
                window: load(&h.window),
                window_cycles: load(&h.window_cycles),
                packets: load(&h.packets),
                samples: load(&h.samples),
                non_ip: load(&h.non_ip),
                ipv4_prefix: v4_len,
                ipv6_prefix: v6_len,
                sample_every: load(&h.sample_every),
                talkers: Vec::new(),
            };
            for e in &self.entries {
                let (hi, lo) = (load(&e.addr_hi), load(&e.addr_lo));
                let addr = u128::from(hi) << 64 | u128::from(lo);
                let prefix = match load(&e.family) {
                    4 if v4_len <= 32 => match u32::try_from(addr) {
                        Ok(a) => SourcePrefix::V4(a.into(), v4_len),
                        Err(_) => continue,
                    },
                    6 if v6_len <= 128 => SourcePrefix::V6(addr.into(), v6_len),
                    _ => continue,
                };
                let (samples, error) = (load(&e.samples), load(&e.error));
                if error > samples {
                    continue;
                }
                w.talkers.push(Talker {
                    prefix,
                    samples,
                    error,
                    bytes: load(&e.bytes),
                });
            }
            std::sync::atomic::fence(Ordering::Acquire);
            if h.seq.load(Ordering::Relaxed) == before {
                return (w.window > 0).then_some(w);
            }
        }
        None
    }
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

/// One keyed row as read: packets, bytes, new flows, active flows.
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
                active_flows: load(&r.active_flows),
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

impl Segment {
    /// Worker `worker`'s last published top talkers (see [`TalkerBlock::read`]).
    #[must_use]
    pub fn talkers(&self, worker: usize) -> Option<TalkerWindow> {
        self.map.layout().telemetry.get(worker)?.talkers.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(n: u64) -> TalkerWindow {
        TalkerWindow {
            window: n,
            window_cycles: 1000 * n,
            packets: 64 * n,
            samples: n,
            non_ip: 0,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            sample_every: 64,
            talkers: vec![
                Talker {
                    prefix: SourcePrefix::V4([10, 1, 2, 0].into(), 24),
                    samples: n,
                    error: 0,
                    bytes: 100 * n,
                },
                Talker {
                    prefix: SourcePrefix::V6("2001:db8:7::".parse().unwrap(), 48),
                    samples: n / 2,
                    error: n / 4,
                    bytes: 10 * n,
                },
            ],
        }
    }

    #[test]
    fn talker_windows_round_trip_and_are_never_read_torn() {
        let block = zeroed_block();
        assert_eq!(block.talkers.read(), None, "nothing published yet");
        block.talkers.publish(&window(1));
        assert_eq!(block.talkers.read(), Some(window(1)));
        // A writer rewriting as fast as it can: every copy a reader keeps is one whole window
        // (its fields all derived from one `n`).
        let block = std::sync::Arc::new(block);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (block, stop) = (block.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 2;
                while !stop.load(Ordering::Relaxed) {
                    block.talkers.publish(&window(n));
                    n += 1;
                }
                n
            })
        };
        let mut kept = 0;
        for _ in 0..20_000 {
            if let Some(w) = block.talkers.read() {
                assert_eq!(w, window(w.window), "a torn copy was kept");
                kept += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 2);
        assert!(kept > 0);
    }

    #[test]
    fn talker_entries_that_make_no_sense_are_left_out() {
        let block = zeroed_block();
        block.talkers.publish(&window(8));
        let e = &block.talkers.entries;
        e[0].error.store(9, Ordering::Relaxed); // above its count of 8
        e[1].family.store(5, Ordering::Relaxed);
        e[2].family.store(4, Ordering::Relaxed); // an IPv4 entry with a 128-bit address
        e[2].addr_hi.store(1, Ordering::Relaxed);
        assert_eq!(block.talkers.read().unwrap().talkers, vec![]);
        block
            .talkers
            .header
            .prefix_lens
            .store(200, Ordering::Relaxed);
        block.talkers.publish(&TalkerWindow {
            ipv4_prefix: 33,
            ..window(3)
        });
        let w = block.talkers.read().unwrap();
        assert_eq!(
            w.talkers.len(),
            1,
            "the IPv4 entry with /33 is left out: {w:?}"
        );
    }

    #[test]
    fn service_keys_are_never_zero_and_differ_by_name() {
        assert_ne!(service_key(""), 0);
        assert_ne!(service_key("llama-70b"), service_key("llama-8b"));
        assert_eq!(service_key("llama-70b"), service_key("llama-70b"));
    }
}
