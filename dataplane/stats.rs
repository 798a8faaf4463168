//! What workers count, written by their worker and read by the main lcore and the control plane.
//!
//! Two kinds, each on cache lines only its worker writes, stored with relaxed ordering a few
//! times per millisecond, so the hot path never takes a lock or a read-modify-write; readers see
//! monotonically growing values:
//!
//! - [`WorkerTotals`] (packets received, sent, dropped) in a [`TotalsBoard`], for the rate line
//!   and the `RESULT` line;
//! - the pipeline's named counters in a [`CounterBoard`]: the worker's row of the control
//!   segment, where the control plane reads them (one copy, from the worker's registers into
//!   the segment), or a row in memory when there is no segment (`run --table`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use switchyard_table::shm::layout::{WorkerCounters, MAX_COUNTERS};
use switchyard_table::shm::telemetry::WorkerBlock;
use switchyard_table::shm::CounterRows;

use crate::pipeline::Counter;

const _: () = assert!(
    Counter::COUNT <= MAX_COUNTERS,
    "the segment has a row of 128 counters"
);

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

/// One worker's published totals.
#[derive(Debug, Default)]
pub struct WorkerTotals {
    rx: AtomicU64,
    tx: AtomicU64,
    dropped: AtomicU64,
}

impl WorkerTotals {
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

/// Every worker's totals, each on its own cache lines.
#[derive(Debug)]
pub struct TotalsBoard {
    workers: Vec<CachePadded<WorkerTotals>>,
}

impl TotalsBoard {
    pub fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerTotals::default()))
                .collect(),
        }
    }

    pub fn worker(&self, i: usize) -> &WorkerTotals {
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

/// Every worker's pipeline counters, a row of [`MAX_COUNTERS`] per worker in `Counter::ALL`
/// order (the segment's counter-name order).
#[derive(Debug, Clone)]
pub struct CounterBoard {
    rows: Rows,
    workers: usize,
}

#[derive(Debug, Clone)]
enum Rows {
    /// The control segment's rows.
    Segment(CounterRows),
    /// Rows of our own (no segment).
    Local(Arc<[WorkerCounters]>),
}

impl CounterBoard {
    /// Rows in the control segment.
    #[must_use]
    pub fn in_segment(rows: CounterRows, workers: usize) -> Self {
        Self {
            rows: Rows::Segment(rows),
            workers,
        }
    }

    /// Rows in memory, for a data plane without a control segment.
    #[must_use]
    pub fn local(workers: usize) -> Self {
        let rows: Vec<WorkerCounters> = (0..workers)
            .map(|_| WorkerCounters(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Self {
            rows: Rows::Local(rows.into()),
            workers,
        }
    }

    fn row(&self, worker: usize) -> Option<&WorkerCounters> {
        match &self.rows {
            Rows::Segment(r) => r.row(worker),
            Rows::Local(r) => r.get(worker),
        }
    }

    /// Worker `worker`'s telemetry block in the control segment; `None` without a segment (the
    /// worker then counts into a block of its own) or past `MAX_WORKERS`.
    #[must_use]
    pub fn telemetry(&self, worker: usize) -> Option<WorkerBlock> {
        match &self.rows {
            Rows::Segment(r) => r.telemetry_blocks().worker(worker),
            Rows::Local(_) => None,
        }
    }

    /// Stores worker `worker`'s counters (only that worker calls this).
    #[inline]
    pub fn publish(&self, worker: usize, values: impl Iterator<Item = u64>) {
        if let Some(row) = self.row(worker) {
            for (cell, v) in row.0.iter().zip(values) {
                cell.store(v, Relaxed);
            }
        }
    }

    /// One worker's counters, in `Counter::ALL` order.
    #[must_use]
    pub fn worker(&self, worker: usize) -> Vec<u64> {
        self.row(worker)
            .map(|r| {
                r.0[..Counter::COUNT]
                    .iter()
                    .map(|c| c.load(Relaxed))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every counter summed over workers, with its name.
    #[must_use]
    pub fn sum(&self) -> Vec<(&'static str, u64)> {
        let mut sums = vec![0u64; Counter::COUNT];
        for w in 0..self.workers {
            for (s, v) in sums.iter_mut().zip(self.worker(w)) {
                *s += v;
            }
        }
        Counter::ALL.iter().map(|c| c.name()).zip(sums).collect()
    }
}
