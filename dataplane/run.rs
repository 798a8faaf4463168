//! Pipeline mode: each worker receives a burst, runs it through the [`PipelineWorker`], and sends
//! every packet where its verdict says, on the worker's own TX queue of that port.
//!
//! Per burst a worker: checks for a new table generation (one relaxed load when nothing changed),
//! receives, drops multi-segment packets (counted), runs the pipeline over the whole burst, moves
//! packets to per-port TX bursts in order, sends them with bounded retry, and does a bounded slice
//! of connection-table housekeeping. Counters are published for the main lcore a few times per
//! millisecond, never with a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::appliance::WorkerPlan;
use crate::dpdk::{self, Burst, PortId, BURST_SIZE};
use crate::pipeline::{Counter, PipelineWorker, PortIndex, Verdict};
use crate::stats::{Totals, WorkerCounters};
use crate::swap::{GenerationCell, WorkerView};

/// Pipeline counters of every worker, published by each worker for the main lcore.
#[derive(Debug)]
pub struct PipelineCounters {
    workers: Vec<CachePadded<Vec<AtomicU64>>>,
}

impl PipelineCounters {
    pub fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers)
                .map(|_| CachePadded::new((0..Counter::COUNT).map(|_| AtomicU64::new(0)).collect()))
                .collect(),
        }
    }

    fn publish(&self, worker: usize, values: impl Iterator<Item = u64>) {
        if let Some(slots) = self.workers.get(worker) {
            for (slot, v) in slots.iter().zip(values) {
                slot.store(v, Relaxed);
            }
        }
    }

    /// One worker's counters, in `Counter::ALL` order.
    pub fn worker(&self, worker: usize) -> Vec<u64> {
        self.workers
            .get(worker)
            .map(|w| w.iter().map(|c| c.load(Relaxed)).collect())
            .unwrap_or_default()
    }

    /// Every counter summed over workers, with its name.
    pub fn sum(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.name(),
                    self.workers.iter().map(|w| w[i].load(Relaxed)).sum(),
                )
            })
            .collect()
    }
}

/// What one pipeline worker needs, moved onto its lcore.
pub struct RunWorker {
    pub plan: WorkerPlan,
    /// Appliance port ids in configured order (a [`PortIndex`] indexes this).
    pub ports: Vec<PortId>,
    pub tx_retries: u32,
    pub pipeline: PipelineWorker,
    pub cell: Arc<GenerationCell>,
    pub totals: Arc<crate::stats::Counters>,
    pub counters: Arc<PipelineCounters>,
}

impl RunWorker {
    /// Polls until `stop`; returns 0.
    pub fn run(mut self, stop: &AtomicBool) -> i32 {
        let index = self.plan.index;
        let me: &WorkerCounters = self.totals.worker(index);
        let rx_queues: Vec<(PortIndex, PortId, dpdk::QueueId)> = self
            .plan
            .rx
            .iter()
            .map(|&(port, q)| {
                let idx = self.ports.iter().position(|&p| p == port).unwrap_or(0);
                (PortIndex::try_from(idx).unwrap_or(0), port, q)
            })
            .collect();
        let mut outs: Vec<Burst> = self.ports.iter().map(|_| Burst::new()).collect();
        let mut burst = Burst::new();
        let mut verdicts = [Verdict::Drop; BURST_SIZE];
        let mut view = WorkerView::default();
        let mut t = Totals::default();
        let hz = u128::from(dpdk::tsc_hz().max(1));
        let t0 = dpdk::rdtsc();
        let publish_every = dpdk::tsc_hz() / 2000; // ~0.5 ms
        let mut next_publish = t0;
        // Flow-table upkeep every ~100 µs rather than every loop: under load the loop turns
        // hundreds of thousands of times a second, and the sweep was a few percent of the profile.
        let housekeeping_every = (dpdk::tsc_hz() / 10_000).max(1);
        let mut next_housekeeping = t0;

        while !stop.load(Relaxed) {
            if self.cell.refresh(index, &mut view) {
                if let Some(g) = &view.generation {
                    self.pipeline.set_generation(Arc::clone(g));
                }
            }
            let tsc = dpdk::rdtsc();
            #[allow(clippy::cast_possible_truncation)] // milliseconds wrap by design (u32 clock)
            let now_ms = (u128::from(tsc.wrapping_sub(t0)) * 1000 / hz) as u32;

            for &(rx_index, rx_port, rx_queue) in &rx_queues {
                let n = burst.rx(rx_port, rx_queue);
                if n == 0 {
                    continue;
                }
                t.rx += n as u64;
                let pkts = burst.packets_mut();
                let mut contiguous = true;
                for p in pkts.iter() {
                    contiguous &= p.is_contiguous();
                }
                if contiguous {
                    self.pipeline
                        .process_burst(pkts, rx_index, now_ms, &mut verdicts[..n]);
                } else {
                    for (p, v) in pkts.iter_mut().zip(verdicts.iter_mut()) {
                        *v = if p.is_contiguous() {
                            self.pipeline.process(p, rx_index, now_ms)
                        } else {
                            self.pipeline.count(Counter::DropMultiSegment);
                            Verdict::Drop
                        };
                    }
                }
                let kernel = self.pipeline.kernel_port();
                let dropped = burst.route(&mut outs, |i| match verdicts[i] {
                    Verdict::Forward(port) => Some(usize::from(port)),
                    Verdict::Kernel => kernel.map(usize::from),
                    Verdict::Drop => None,
                });
                t.dropped += dropped as u64;
                for (i, out) in outs.iter_mut().enumerate() {
                    if !out.is_empty() {
                        let (sent, lost) =
                            out.tx(self.ports[i], self.plan.tx_queue, self.tx_retries);
                        t.tx += sent as u64;
                        t.dropped += lost as u64;
                    }
                }
            }
            if tsc >= next_housekeeping {
                self.pipeline.housekeeping(now_ms);
                next_housekeeping = tsc + housekeeping_every;
            }
            if tsc >= next_publish {
                me.publish(&t);
                self.counters
                    .publish(index, self.pipeline.counters().iter().map(|(_, v)| v));
                next_publish = tsc + publish_every;
            }
        }
        me.publish(&t);
        self.counters
            .publish(index, self.pipeline.counters().iter().map(|(_, v)| v));
        0
    }
}
