//! A pipeline worker's poll loop (`run` mode): each worker receives a burst, runs it through the [`PipelineWorker`], and sends
//! every packet where its verdict says, on the worker's own TX queue of that port.
//!
//! Per poll a worker: checks for a new table generation (one acquire load when nothing changed),
//! receives a burst, drops multi-segment packets (counted), and overlaps two bursts: it
//! classifies the new burst and requests its flow buckets (phase 1), then executes the burst
//! received one poll earlier (phase 2), whose bucket and entry lines have had the new burst's
//! parsing to arrive; it moves those packets to per-port TX bursts in order and sends them with
//! bounded retry. Order is kept: a burst is always executed before the next one. An idle poll,
//! a generation change, a multi-segment burst and stopping all execute the pending burst first,
//! so nothing waits longer than one poll and no packet runs against a stale table. A bounded
//! slice of connection-table housekeeping (and a look at the flow-query mailbox) runs every
//! ~100 µs. Counters are stored into the worker's own row of the control segment a few times per
//! millisecond, never with a lock.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use crate::appliance::WorkerPlan;
use crate::dpdk::{self, Burst, PortId, BURST_SIZE};
use crate::neighbour::{Outbox, SEND_PER_TICK};
use crate::pipeline::{Counter, PipelineWorker, PortIndex, SampleScan, Staged, Verdict};
use crate::query::{Query, QueryBoard};
use crate::stats::{CounterBoard, Totals, TotalsBoard, WorkerTotals};
use crate::swap::{GenerationCell, WorkerView};
use switchyard_table::shm::{Message, TRACE_HELD};

/// What one pipeline worker needs, moved onto its lcore.
pub struct PollLoop {
    pub plan: WorkerPlan,
    /// Appliance port ids in configured order (a [`PortIndex`] indexes this).
    pub ports: Vec<PortId>,
    pub tx_retries: u32,
    pub pipeline: PipelineWorker,
    pub cell: Arc<GenerationCell>,
    pub totals: Arc<TotalsBoard>,
    /// Where this worker's pipeline counters go (its row of the control segment).
    pub counters: CounterBoard,
    /// Flow queries from the control plane (`trace`, `flows`), looked at every housekeeping tick.
    pub queries: Arc<QueryBoard>,
    /// On worker 0 only: the frames the neighbour resolver built, sent every housekeeping tick.
    pub originated: Option<Originated>,
}

/// The frames the appliance originates (neighbour requests, announcements) and where their
/// buffers come from.
pub struct Originated {
    pub outbox: Outbox,
    /// The mempool of each port, by name, in port order.
    pub pools: Vec<CString>,
}

/// A worker's part in flow queries: the last query seen, a sample in progress, answers the
/// mailbox was too busy to take.
#[derive(Default)]
struct Queries {
    seen: u64,
    scan: Option<(u64, SampleScan)>,
    unsent: Option<(u64, Vec<Message>)>,
}

/// A worker's bursts between polls, and what it needs to send them.
struct Flight {
    /// Received this poll and classified (phase 1).
    next: Burst,
    next_staged: Staged,
    /// Received one poll earlier, classified, waiting for phase 2.
    pending: Burst,
    pending_staged: Staged,
    verdicts: [Verdict; BURST_SIZE],
    /// One TX burst per port.
    outs: Vec<Burst>,
    totals: Totals,
}

impl PollLoop {
    /// Polls until `stop`; returns 0.
    pub fn run(mut self, stop: &AtomicBool) -> i32 {
        let index = self.plan.index;
        let totals = Arc::clone(&self.totals);
        let me: &WorkerTotals = totals.worker(index);
        let rx_queues: Vec<(PortIndex, PortId, dpdk::QueueId)> = self
            .plan
            .rx
            .iter()
            .map(|&(port, q)| {
                let idx = self.ports.iter().position(|&p| p == port).unwrap_or(0);
                (PortIndex::try_from(idx).unwrap_or(0), port, q)
            })
            .collect();
        let mut f = Flight {
            next: Burst::new(),
            next_staged: Staged::default(),
            pending: Burst::new(),
            pending_staged: Staged::default(),
            verdicts: [Verdict::Drop; BURST_SIZE],
            outs: self.ports.iter().map(|_| Burst::new()).collect(),
            totals: Totals::default(),
        };
        let mut view = WorkerView::default();
        // Milliseconds per TSC tick as a 0.64 fixed-point factor: a multiply per poll, not a
        // 128-bit division.
        #[allow(clippy::cast_possible_truncation)] // 1000 << 64 / hz < 2^64 for hz > 1000
        let ms_per_tick = ((1000u128 << 64) / u128::from(dpdk::tsc_hz().max(1001))) as u64;
        let t0 = dpdk::rdtsc();
        let publish_every = dpdk::tsc_hz() / 2000; // ~0.5 ms
        let mut next_publish = t0;
        // Flow-table upkeep every ~100 µs rather than every loop: under load the loop turns
        // hundreds of thousands of times a second, and the sweep was a few percent of the profile.
        let housekeeping_every = (dpdk::tsc_hz() / 10_000).max(1);
        let mut next_housekeeping = t0;
        let mut now_ms = 0;
        let mut queries = Queries::default();
        use crate::pipeline::PacketBuf as _;
        // Telemetry: this worker's block of the control segment (see crate::telemetry); busy
        // and idle cycles from the TSC read each poll already makes.
        if let Some(block) = self.counters.telemetry(index) {
            self.pipeline
                .set_telemetry(crate::telemetry::Telemetry::in_segment(block));
        }
        self.pipeline.telemetry().set_tsc_hz(dpdk::tsc_hz());
        let (mut last_tsc, mut was_busy, mut busy, mut idle) = (t0, false, 0u64, 0u64);
        let active_every = dpdk::tsc_hz() / 10; // ~100 ms
        let mut next_active = t0;
        let mut taps_seen = 0u64;
        // Top talkers: a window of about a second, published when it ends.
        let talkers_every = dpdk::tsc_hz().max(1);
        let mut talkers_since = t0;

        while !stop.load(Relaxed) {
            if self.cell.changed(&view) {
                // The pending burst was classified under the old generation: it runs on it,
                // and only then does this worker take (and report) the new one.
                self.flush_pending(&mut f, now_ms);
                let pipeline = &mut self.pipeline;
                self.cell.refresh_with(index, &mut view, |g| {
                    pipeline.set_generation(Arc::clone(g));
                });
            }
            let tsc = dpdk::rdtsc();
            let spent = tsc.wrapping_sub(last_tsc);
            last_tsc = tsc;
            if was_busy {
                busy += spent;
            } else {
                idle += spent;
            }
            #[allow(clippy::cast_possible_truncation)] // milliseconds wrap by design (u32 clock)
            {
                now_ms =
                    ((u128::from(tsc.wrapping_sub(t0)) * u128::from(ms_per_tick)) >> 64) as u32;
            }

            let mut received = false;
            for &(rx_index, rx_port, rx_queue) in &rx_queues {
                let n = f.next.rx(rx_port, rx_queue);
                if n == 0 {
                    continue;
                }
                received = true;
                f.totals.rx += n as u64;
                let bytes: usize = f.next.packets_mut().iter().map(|p| p.data().len()).sum();
                self.pipeline
                    .telemetry()
                    .port_rx(usize::from(rx_index), n as u64, bytes as u64);
                self.pipeline.sample_talkers(f.next.packets_mut());
                if self.pipeline.taps_received() {
                    // A live capture of received packets: the one branch per burst it costs.
                    self.pipeline
                        .capture_received(f.next.packets_mut(), rx_index, now_ms);
                }
                if !f
                    .next
                    .packets_mut()
                    .iter()
                    .all(dpdk::PacketRef::is_contiguous)
                {
                    // Rare (jumbo frames over a small data room): one packet at a time, in
                    // order after the pending burst.
                    self.flush_pending(&mut f, now_ms);
                    for (p, v) in f.next.packets_mut().iter_mut().zip(f.verdicts.iter_mut()) {
                        *v = if p.is_contiguous() {
                            self.pipeline.process(p, rx_index, now_ms)
                        } else {
                            self.pipeline.count(Counter::DropMultiSegment);
                            Verdict::Drop
                        };
                    }
                    self.send(&mut f.next, &f.verdicts, &mut f.outs, &mut f.totals);
                    continue;
                }
                if !f.pending.is_empty() {
                    self.pipeline
                        .prefetch_entries::<dpdk::PacketRef>(&f.pending_staged);
                }
                self.pipeline
                    .stage(f.next.packets_mut(), rx_index, &mut f.next_staged);
                self.flush_pending(&mut f, now_ms);
                core::mem::swap(&mut f.next, &mut f.pending);
                core::mem::swap(&mut f.next_staged, &mut f.pending_staged);
            }
            if !received && !f.pending.is_empty() {
                // Idle poll: nothing to overlap with, so the pending burst goes now.
                self.pipeline
                    .prefetch_entries::<dpdk::PacketRef>(&f.pending_staged);
                self.flush_pending(&mut f, now_ms);
            }
            if tsc >= next_housekeeping {
                self.pipeline.housekeeping(now_ms);
                self.answer_queries(&mut queries, now_ms);
                f.totals.tx += self.send_originated();
                if let Some(slot) = self.queries.tap_slot(index) {
                    self.pipeline.tap_tick(slot, &mut taps_seen);
                }
                next_housekeeping = tsc + housekeeping_every;
            }
            was_busy = received;
            if tsc >= next_active {
                self.pipeline.publish_active_flows();
                next_active = tsc + active_every;
                if tsc.wrapping_sub(talkers_since) >= talkers_every {
                    self.pipeline
                        .publish_talkers(tsc.wrapping_sub(talkers_since));
                    talkers_since = tsc;
                }
            }
            if tsc >= next_publish {
                self.pipeline.telemetry().cycles(busy, idle);
                (busy, idle) = (0, 0);
                me.publish(&f.totals);
                self.counters
                    .publish(index, self.pipeline.counters().iter().map(|(_, v)| v));
                next_publish = tsc + publish_every;
            }
        }
        self.flush_pending(&mut f, now_ms);
        self.pipeline.telemetry().cycles(busy, idle);
        self.pipeline.publish_active_flows();
        me.publish(&f.totals);
        self.counters
            .publish(index, self.pipeline.counters().iter().map(|(_, v)| v));
        0
    }

    /// Takes, works on and answers flow queries (see [`crate::query`]): a trace at once, a
    /// sample a slice of the tables per call.
    fn answer_queries(&mut self, q: &mut Queries, now_ms: u32) {
        let index = self.plan.index;
        let worker = u8::try_from(index).unwrap_or(u8::MAX);
        if let Some((serial, out)) = q.unsent.as_mut() {
            if !self.queries.answer(index, *serial, out) {
                return;
            }
            q.unsent = None;
        }
        if q.scan.is_none() {
            match self.queries.take(index, &mut q.seen) {
                Some((serial, Query::Trace { query, flow })) => {
                    let t = self.pipeline.trace(query, u16::from(worker), &flow, now_ms);
                    let held = u64::from(t.flags & TRACE_HELD != 0);
                    let out = vec![
                        Message::Traced(t),
                        Message::Done {
                            query,
                            worker: u32::from(worker),
                            matched: held,
                            scanned: 1,
                        },
                    ];
                    q.unsent = Some((serial, out));
                }
                Some((serial, Query::Sample(s))) => q.scan = Some((serial, SampleScan::new(s))),
                None => {}
            }
        }
        if let Some((serial, scan)) = q.scan.as_mut() {
            if self.pipeline.sample_step(scan, worker, now_ms) {
                let mut out = std::mem::take(&mut scan.found);
                out.push(Message::Done {
                    query: scan.query.query,
                    worker: u32::from(worker),
                    matched: scan.matched,
                    scanned: scan.scanned,
                });
                q.unsent = Some((*serial, out));
                q.scan = None;
            }
        }
        if let Some((serial, out)) = q.unsent.as_mut() {
            if self.queries.answer(index, *serial, out) {
                q.unsent = None;
            }
        }
    }

    /// Sends up to [`SEND_PER_TICK`] frames of the neighbour resolver on this worker's TX
    /// queue of their port, each counted under its own counter or `drop_neighbour_tx`.
    /// Returns how many were sent.
    fn send_originated(&mut self) -> u64 {
        let Some(o) = self.originated.as_ref() else {
            return 0;
        };
        let mut sent = 0;
        for _ in 0..SEND_PER_TICK {
            let Some(frame) = o.outbox.next() else {
                break;
            };
            let port = usize::from(frame.port);
            let mut burst = Burst::new();
            let ok = match (self.ports.get(port), o.pools.get(port)) {
                (Some(&id), Some(pool)) if burst.push_copy(pool, &frame.bytes) => {
                    burst.tx(id, self.plan.tx_queue, self.tx_retries).0 == 1
                }
                _ => false,
            };
            if ok {
                sent += 1;
                self.pipeline.count(frame.counter);
                self.pipeline
                    .telemetry()
                    .port_tx(port, 1, frame.bytes.len() as u64);
            } else {
                self.pipeline.count(Counter::DropNeighbourTx);
            }
        }
        sent
    }

    /// Executes the pending burst (if any) and sends it; leaves it empty.
    fn flush_pending(&mut self, f: &mut Flight, now_ms: u32) {
        if f.pending.is_empty() {
            return;
        }
        let n = f.pending.len();
        self.pipeline.finish(
            f.pending.packets_mut(),
            &f.pending_staged,
            now_ms,
            &mut f.verdicts[..n],
        );
        self.send(&mut f.pending, &f.verdicts, &mut f.outs, &mut f.totals);
    }

    /// Moves every packet of `burst` to the TX burst of its verdict's port (in order), sends
    /// them, and frees the dropped ones; leaves `burst` empty.
    fn send(
        &mut self,
        burst: &mut Burst,
        verdicts: &[Verdict; BURST_SIZE],
        outs: &mut [Burst],
        t: &mut Totals,
    ) {
        let kernel = self.pipeline.kernel_port();
        let ports = outs.len();
        let mut unroutable = 0u64;
        let dropped = burst.route(outs, |i| {
            let port = match verdicts[i] {
                Verdict::Forward(port) => Some(usize::from(port)),
                Verdict::Kernel => kernel.map(usize::from),
                // Counted by the pipeline under its reason.
                Verdict::Drop => return None,
            };
            let port = port.filter(|&p| p < ports);
            unroutable += u64::from(port.is_none());
            port
        });
        t.dropped += dropped as u64;
        if unroutable > 0 {
            self.pipeline.count_n(Counter::DropUnroutable, unroutable);
        }
        for (i, out) in outs.iter_mut().enumerate() {
            if !out.is_empty() {
                use crate::pipeline::PacketBuf as _;
                let mut lens = [0u32; BURST_SIZE];
                for (l, p) in lens.iter_mut().zip(out.packets_mut().iter()) {
                    *l = u32::try_from(p.data().len()).unwrap_or(u32::MAX);
                }
                let (sent, lost) = out.tx(self.ports[i], self.plan.tx_queue, self.tx_retries);
                let bytes: u64 = lens[..sent.min(BURST_SIZE)]
                    .iter()
                    .map(|&l| u64::from(l))
                    .sum();
                self.pipeline.telemetry().port_tx(i, sent as u64, bytes);
                t.tx += sent as u64;
                t.dropped += lost as u64;
                if lost > 0 {
                    self.pipeline.count_n(Counter::DropTxQueueFull, lost as u64);
                }
            }
        }
    }
}
