//! Per-worker counters, written by their worker and read by the main lcore.
//!
//! Each worker owns one [`WorkerCounters`] on its own cache lines and is its only writer: it keeps
//! running totals in registers and stores them with relaxed ordering once per loop, so the hot path
//! never takes a lock or a read-modify-write. Readers see monotonically growing totals.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// The totals a worker publishes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub rx: u64,
    pub tx: u64,
    pub dropped: u64,
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.rx += other.rx;
        self.tx += other.tx;
        self.dropped += other.dropped;
    }
}

/// One worker's published counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    rx: AtomicU64,
    tx: AtomicU64,
    dropped: AtomicU64,
}

impl WorkerCounters {
    /// Publishes `t`. Only the owning worker calls this.
    #[inline]
    pub fn publish(&self, t: &Totals) {
        self.rx.store(t.rx, Relaxed);
        self.tx.store(t.tx, Relaxed);
        self.dropped.store(t.dropped, Relaxed);
    }

    pub fn read(&self) -> Totals {
        Totals {
            rx: self.rx.load(Relaxed),
            tx: self.tx.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

/// Every worker's counters, each on its own cache lines.
#[derive(Debug)]
pub struct Counters {
    workers: Vec<CachePadded<WorkerCounters>>,
}

impl Counters {
    pub fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerCounters::default()))
                .collect(),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerCounters {
        &self.workers[i]
    }

    pub fn sum(&self) -> Totals {
        let mut t = Totals::default();
        for w in &self.workers {
            t.add(&w.read());
        }
        t
    }
}
