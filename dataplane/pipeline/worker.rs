//! [`PipelineWorker`]: one per worker core, owning its flow tables, scheduler state, rate
//! limiters and counters. Phase 1 ([`classify`]) is pure; phase 2 ([`PipelineWorker::execute`])
//! does everything with side effects.
//!
//! # The connection table
//!
//! Key: the client → VIP 5-tuple, [`FlowKeyV4`](crate::flow::FlowKeyV4)
//! / [`FlowKeyV6`](crate::flow::FlowKeyV6); `key.hash()` is computed once and used by the
//! canary split, Maglev and the encapsulation; the table takes its own keyed hash of the key,
//! with a secret seed per worker and start ([`FlowTable::hash`]). A hit whose backend id maps
//! to no backend any more (`flow_backend_gone`) or to an unhealthy one
//! (`flow_backend_unhealthy`) is rescheduled and the entry re-pointed; a drained backend
//! (weight 0, healthy) keeps its flows. A miss: a TCP packet without SYN counts
//! `flow_non_syn_miss` (the broken-flow signal), is placed by consistent hash and inserted
//! **provisional** (promoted to established by the flow's next packet): Maglev is
//! consistent, so a flow this worker lost — restart, eviction, RSS change — most likely
//! lands on the backend it was on, while a spoofed ACK's entry dies young. A RST that misses
//! is forwarded without creating an entry (`forwarded_without_entry`). New flows draw from
//! the per-source limiter first (`Config.new_flow_rate` / `new_flow_burst`, 0 = off; an exact
//! token bucket per source in a bounded table, IPv6 sources keyed by `Config.source_v6_prefix`,
//! see [`SourceLimiter`]) → `drop_rate_limited`. Then the
//! table says whether it would store the flow (flood mode, insert cap, a way the flow may
//! take: established flows are never evicted by a new one); if not, the flow is scheduled by
//! consistent hash and forwarded without an entry (`forwarded_stateless`). See
//! [`flow_backend`]. The tables' counters appear as `flow_*`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use switchyard_table::generation::{Generation, FAMILY_V6, NONE, PROTO_TCP};
use switchyard_table::lpm::{lookup_v4, lookup_v6};

use super::classify::{classify, Lb, NeighbourNews, Step};
use super::counters::{Counter, Counters};
use super::encap::{self, Inner as EncapInner};
use super::limit::{Eviction, SourceLimiter, TokenBucket};
use super::local;
use super::sched::{
    live_backend, schedule, service_tag, NewFlow, SchedState, SLOT_COUNTED, SLOT_SERVICE,
};
use super::view::View;
use super::{PacketBuf, PortIndex, PortMap, Verdict};
use crate::flow::{
    fold32, hash_words, tcp_flags, FlowKey, FlowKeyV4, FlowKeyV6, FlowMut, FlowState, FlowTable,
    FlowValue, InsertLimit, InsertOutcome, Timeouts,
};
use crate::neighbour::{Observation, WorkerNeighbours};

/// A fresh secret for the connection table's bucket hash: std's `RandomState` keys come from
/// the OS (getrandom) the first time a thread asks, so every data-plane start, and every worker
/// thread, gets its own. Not the scheduling hash, which must stay the same everywhere.
fn random_table_seed(worker: usize) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(worker);
    h.finish()
}
use crate::wire::{EthernetAddress, IpProtocol};

mod query;
mod tap;

pub use query::{SampleScan, SAMPLE_BUCKETS, SAMPLE_LIMIT};

/// Packets classified ahead (hashed, buckets warmed) before any is executed.
pub const BURST: usize = 32;

/// Flow-table buckets each (non-empty) table sweeps per [`PipelineWorker::housekeeping`] call.
/// The appliance calls it about every 100 µs, so a 2 Mi-way IPv4 table (262 144 buckets) is
/// swept end to end in about 1.6 s, well inside the shortest idle timeout. Expired flows are
/// also reclaimed whenever a lookup meets them.
pub const SWEEP_BUCKETS: usize = 16;

/// Seed of the source-address hash the `ip_hash` scheduler indexes the Maglev table with:
/// `fold32(hash_words(IP_HASH_SEED, words))`, where `words` is `[src as u64]` for IPv4 and the
/// two 64-bit halves (high first) for IPv6.
pub const IP_HASH_SEED: u64 = 0x1f83_d9ab_fb41_bd6b;

/// How one worker is set up; fixed for its life.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// IPv4 flow-table capacity (rounded up to a power-of-two number of 8-way buckets).
    pub flows_v4: usize,
    /// IPv6 flow-table capacity.
    pub flows_v6: usize,
    /// Cap on flow-table inserts per second (each table has its own bucket).
    pub insert_limit: InsertLimit,
    /// Port → interface binding, backend and kernel ports.
    pub ports: PortMap,
    /// This worker's index (spreads per-worker scheduler start points).
    pub worker: usize,
}

/// Both flow tables.
pub(crate) struct FlowTables {
    v4: FlowTable<FlowKeyV4>,
    v6: FlowTable<FlowKeyV6>,
}

impl FlowTables {
    /// Requests the tag line of a flow's bucket (`(ipv6, hash)` from [`Step::lb_hash`]): a real
    /// prefetch where `P` has one (mbufs), else a plain load the out-of-order core overlaps.
    #[inline(always)]
    fn warm_bucket<P: PacketBuf>(&self, (v6, hash): (bool, u32)) {
        match (v6, P::PREFETCH) {
            (false, true) => P::prefetch(self.v4.bucket_addr(hash)),
            (true, true) => P::prefetch(self.v6.bucket_addr(hash)),
            (false, false) => self.v4.warm(hash),
            (true, false) => self.v6.warm(hash),
        }
    }

    /// Reads a flow's tag line (requested by [`FlowTables::warm_bucket`]) and requests the
    /// entry line its tag points to, if any.
    #[inline(always)]
    fn warm_entry<P: PacketBuf>(&self, (v6, hash): (bool, u32)) {
        match (v6, P::PREFETCH) {
            (false, true) => {
                if let Some(a) = self.v4.entry_addr(hash) {
                    P::prefetch(a);
                }
            }
            (true, true) => {
                if let Some(a) = self.v6.entry_addr(hash) {
                    P::prefetch(a);
                }
            }
            (false, false) => self.v4.warm_entry(hash),
            (true, false) => self.v6.warm_entry(hash),
        }
    }
}

/// The packet pipeline of one worker core. See the module doc of [`super`].
pub struct PipelineWorker {
    generation: Option<Arc<Generation>>,
    /// Bumped by every [`PipelineWorker::set_generation`]: what a [`Staged`] burst records
    /// instead of a reference to the generation, so staging writes no shared reference count.
    epoch: u64,
    view: View,
    tables: FlowTables,
    sched: SchedState,
    icmp: TokenBucket,
    /// `(rate, burst)` the ICMP bucket was built from: this worker's share of the config's.
    icmp_limit: (u32, u32),
    /// Workers sharing `Config.icmp_rate` (see [`PipelineWorker::set_worker_count`]).
    workers: u32,
    sources: SourceLimiter,
    counters: Counters,
    /// Per port, service and backend traffic (see [`crate::telemetry`]).
    telemetry: crate::telemetry::Telemetry,
    ports: PortMap,
    /// Resolved gateway MACs and the resolver's queue ([`crate::neighbour`]); `None` until
    /// [`PipelineWorker::set_neighbours`] (news is then dropped, `drop_neighbour_queue_full`).
    neighbours: Option<WorkerNeighbours>,
    /// Phase-1 results of the burst in progress in [`PipelineWorker::process_burst`].
    staged: Staged,
    /// A live capture on this worker ([`crate::capture`]), almost always `None`; the two flags
    /// say what it watches, so the hot paths test a bool.
    tap: Option<Box<crate::capture::Tap>>,
    tap_received: bool,
    tap_drops: bool,
    tap_worker: u16,
    drop_samples: crate::capture::DropSamples,
    /// Top talkers: the sampler and sketch behind the telemetry block's `talkers`.
    talkers: crate::talkers::Talkers,
}

/// Phase-1 results of one burst ([`PipelineWorker::stage`]): what each packet will do, with
/// its flow hash, classified under one table generation. The steps grow to [`BURST`] on first
/// use and keep their capacity: reuse a `Staged`.
#[derive(Debug, Clone, Default)]
pub struct Staged {
    steps: Vec<Step>,
    rx_port: PortIndex,
    /// The worker's generation epoch the steps were computed under.
    epoch: u64,
}

impl Staged {
    /// Packets staged.
    #[must_use]
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// No packet staged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl core::fmt::Debug for PipelineWorker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PipelineWorker")
            .field(
                "generation",
                &self.generation.as_ref().map(|g| g.generation),
            )
            .field("flows_v4", &self.tables.v4.len())
            .field("flows_v6", &self.tables.v6.len())
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl PipelineWorker {
    /// Allocates the worker's tables (all memory it will ever use for flows). Build it on its
    /// own core, so first touch puts the tables on the worker's NUMA node. Until
    /// [`PipelineWorker::set_generation`] every packet is dropped (`drop_no_table`).
    #[must_use]
    pub fn new(cfg: WorkerConfig) -> Self {
        let timeouts = Timeouts::default();
        let seed = random_table_seed(cfg.worker);
        Self {
            generation: None,
            epoch: 0,
            view: View::default(),
            tables: FlowTables {
                v4: FlowTable::with_seed(cfg.flows_v4, timeouts, cfg.insert_limit, seed),
                v6: FlowTable::with_seed(cfg.flows_v6, timeouts, cfg.insert_limit, seed),
            },
            sched: SchedState::new(cfg.worker),
            icmp: TokenBucket::new(0, 0),
            icmp_limit: (0, 0),
            workers: 1,
            sources: SourceLimiter::new(seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15),
            counters: Counters::default(),
            telemetry: crate::telemetry::Telemetry::local(),
            ports: cfg.ports,
            neighbours: None,
            staged: Staged::default(),
            tap: None,
            tap_received: false,
            tap_drops: false,
            tap_worker: u16::try_from(cfg.worker).unwrap_or(u16::MAX),
            drop_samples: crate::capture::DropSamples::default(),
            talkers: crate::talkers::Talkers::new(
                crate::talkers::TalkerConfig::default(),
                seed.rotate_left(29),
            ),
        }
    }

    /// Samples and keys top talkers by `config` from now on (the appliance settings'
    /// `talkers`); the window in progress starts again.
    pub fn set_talkers(&mut self, config: crate::talkers::TalkerConfig) {
        let seed = random_table_seed(usize::from(self.tap_worker)).rotate_left(29);
        self.talkers = crate::talkers::Talkers::new(config, seed);
    }

    /// A received burst, before the pipeline rewrites it: the top-talker sampler's one
    /// subtraction and branch per burst ([`crate::talkers`]).
    #[inline(always)]
    pub fn sample_talkers<P: PacketBuf>(&mut self, pkts: &[P]) {
        self.talkers.offer(pkts.len(), |t, i| {
            if let Some(p) = pkts.get(i) {
                let data = p.data();
                t.count(data, data.len() as u64);
            }
        });
    }

    /// Ends the top-talker window (`cycles` TSC cycles long) into the telemetry block.
    pub fn publish_talkers(&mut self, cycles: u64) {
        self.talkers
            .publish(&self.telemetry.block().talkers, cycles);
    }

    /// Switches to generation `g` (at a burst boundary): applies its timeouts and limits, binds
    /// its interfaces to ports by name, and resets the per-pool scheduler state. Flows keep
    /// their backends (by stable backend id) unless that backend is gone or unhealthy.
    pub fn set_generation(&mut self, g: Arc<Generation>) {
        let c = &g.config;
        let ms = |s: u32| s.saturating_mul(1000);
        let timeouts = Timeouts {
            tcp_handshake_ms: ms(c.tcp_syn_timeout),
            tcp_established_ms: ms(c.tcp_established_timeout),
            tcp_closing_ms: ms(c.tcp_closing_timeout),
            udp_ms: ms(c.udp_timeout),
        };
        self.tables.v4.set_timeouts(timeouts);
        self.tables.v6.set_timeouts(timeouts);
        self.set_icmp_limit(c.icmp_rate, c.icmp_burst);
        self.sources
            .configure(c.new_flow_rate, c.new_flow_burst, c.source_v6_prefix);
        self.view = View::new(&g, &self.ports);
        self.sched.reset_for(&g);
        self.telemetry.set_generation(&g, self.generation.is_some());
        self.sync_service_rows();
        self.generation = Some(g);
        self.epoch += 1;
    }

    /// Whether the resolver has a MAC for `port`'s gateway (either family).
    pub(crate) fn gateway_resolved(&self, port: PortIndex) -> bool {
        self.neighbours
            .as_ref()
            .and_then(|n| n.slots.port(port))
            .is_some_and(crate::neighbour::PortSlots::any)
    }

    /// Connects the worker to the neighbour resolver: where resolved gateway MACs are read and
    /// where news about gateways goes.
    pub fn set_neighbours(&mut self, n: WorkerNeighbours) {
        self.neighbours = Some(n);
    }

    /// Counts into `telemetry` from now on (the worker's block of the control segment) instead
    /// of a block of its own; maps it to the current generation, if any.
    pub fn set_telemetry(&mut self, telemetry: crate::telemetry::Telemetry) {
        self.telemetry = telemetry;
        if let Some(g) = self.generation.clone() {
            self.telemetry.set_generation(&g, false);
        }
        self.sync_service_rows();
    }

    /// The scheduler's per-service flow counts follow the telemetry's rows: a row a new
    /// service took counts from zero.
    fn sync_service_rows(&mut self) {
        for (row, incarnation) in self.telemetry.service_rows() {
            self.sched.set_service_row(row, incarnation);
        }
    }

    /// The worker's telemetry (ports and cycles are counted by its poll loop).
    #[must_use]
    pub fn telemetry(&self) -> &crate::telemetry::Telemetry {
        &self.telemetry
    }

    /// Stores the active flows of every service and backend into the telemetry (about every
    /// 100 ms).
    pub fn publish_active_flows(&self) {
        self.telemetry
            .publish_active_flows(|id| self.sched.live_flows(id));
        self.telemetry
            .publish_service_flows(|row| self.sched.service_flows(row));
    }

    /// Tells the worker how many workers share the appliance's ICMP budget: `Config.icmp_rate`
    /// and `icmp_burst` are for the whole appliance (the policy's `icmp_per_second`), and each
    /// worker takes `1/workers` of them, rounded up. Default 1 (this worker gets all of it).
    pub fn set_worker_count(&mut self, workers: usize) {
        self.workers = u32::try_from(workers.max(1)).unwrap_or(u32::MAX);
        if let Some(g) = self.generation.clone() {
            self.set_icmp_limit(g.config.icmp_rate, g.config.icmp_burst);
        }
    }

    fn set_icmp_limit(&mut self, rate: u32, burst: u32) {
        let share = (rate.div_ceil(self.workers), burst.div_ceil(self.workers));
        if self.icmp_limit != share || self.generation.is_none() {
            self.icmp_limit = share;
            self.icmp = TokenBucket::new(share.0, share.1);
        }
    }

    /// Counts an event or drop decided outside the pipeline (e.g. `drop_multi_segment`).
    #[inline]
    pub fn count(&mut self, counter: Counter) {
        self.counters.inc(counter);
    }

    /// Counts `n` events or drops decided outside the pipeline (`drop_tx_queue_full`, ...).
    #[inline]
    pub fn count_n(&mut self, counter: Counter, n: u64) {
        self.counters.add(counter, n);
    }

    /// The exception-path port from the [`PortMap`], where [`Verdict::Kernel`] packets go.
    #[must_use]
    pub fn kernel_port(&self) -> Option<PortIndex> {
        self.ports.kernel
    }

    /// The generation in use.
    #[must_use]
    pub fn generation(&self) -> Option<&Arc<Generation>> {
        self.generation.as_ref()
    }

    /// Runs one packet through the pipeline and returns what to do with it; the packet may
    /// have been rewritten in place (reply, encapsulation).
    #[inline]
    pub fn process<P: PacketBuf>(
        &mut self,
        pkt: &mut P,
        rx_port: PortIndex,
        now_ms: u32,
    ) -> Verdict {
        let step = self.classify(pkt.data(), rx_port);
        let verdict = self.execute(pkt, &step, rx_port, now_ms);
        self.sync_counters();
        verdict
    }

    /// Runs a burst: every packet is classified and hashed first and its flow bucket warmed,
    /// then each is executed in order. Same results as [`PipelineWorker::process`] on each
    /// packet in turn. `verdicts[i]` receives packet `i`'s verdict; `verdicts` must be at least
    /// as long as `pkts` (packets without a verdict slot are left untouched).
    ///
    /// This is [`PipelineWorker::stage`], [`PipelineWorker::prefetch_entries`] and
    /// [`PipelineWorker::finish`] back to back; a poll loop can instead overlap them across
    /// bursts (classify the next burst while this one's entries arrive).
    pub fn process_burst<P: PacketBuf>(
        &mut self,
        pkts: &mut [P],
        rx_port: PortIndex,
        now_ms: u32,
        verdicts: &mut [Verdict],
    ) {
        debug_assert!(verdicts.len() >= pkts.len());
        let n = pkts.len().min(verdicts.len());
        let mut staged = core::mem::take(&mut self.staged);
        for (pkts, verdicts) in pkts[..n]
            .chunks_mut(BURST)
            .zip(verdicts[..n].chunks_mut(BURST))
        {
            self.stage(pkts, rx_port, &mut staged);
            self.prefetch_entries::<P>(&staged);
            self.finish(pkts, &staged, now_ms, verdicts);
        }
        self.staged = staged;
    }

    /// Phase 1 of a burst (at most [`BURST`] packets; the rest are ignored): classifies every
    /// packet into `staged` (no side effects) and requests each flow's bucket tag line, so the
    /// cache misses of the whole burst are in flight together.
    pub fn stage<P: PacketBuf>(&self, pkts: &[P], rx_port: PortIndex, staged: &mut Staged) {
        staged.steps.clear();
        staged.steps.extend(
            pkts.iter()
                .take(BURST)
                .map(|pkt| self.classify(pkt.data(), rx_port)),
        );
        staged.rx_port = rx_port;
        staged.epoch = self.epoch;
        for step in &staged.steps {
            if let Some(flow) = step.lb_hash() {
                self.tables.warm_bucket::<P>(flow);
            }
        }
    }

    /// Between [`PipelineWorker::stage`] and [`PipelineWorker::finish`]: reads each staged
    /// flow's tag line (requested by `stage`) and requests the entry line its tag points to.
    pub fn prefetch_entries<P: PacketBuf>(&self, staged: &Staged) {
        for step in &staged.steps {
            if let Some(flow) = step.lb_hash() {
                self.tables.warm_entry::<P>(flow);
            }
        }
    }

    /// Phase 2 of a staged burst: executes each packet in order (`pkts` are the packets
    /// `staged` was built from, unchanged). `verdicts[i]` receives packet `i`'s verdict.
    ///
    /// A step depends only on the packet and the generation it was classified under. If the
    /// generation changed since [`PipelineWorker::stage`] (or `pkts` is not the staged burst),
    /// the packets are classified again first, so a caller that overlaps bursts cannot run a
    /// packet against a stale table. A poll loop still finishes its pending burst before
    /// [`PipelineWorker::set_generation`], so a worker reports a generation live only once
    /// no packet of the old one is left.
    pub fn finish<P: PacketBuf>(
        &mut self,
        pkts: &mut [P],
        staged: &Staged,
        now_ms: u32,
        verdicts: &mut [Verdict],
    ) {
        let rx_port = staged.rx_port;
        if staged.epoch != self.epoch || staged.steps.len() != pkts.len() {
            // Classified under another table, or not these packets: classify them again.
            self.process_burst(pkts, rx_port, now_ms, verdicts);
            return;
        }
        self.execute_steps(pkts, staged, now_ms, verdicts);
        self.sync_counters();
    }

    fn execute_steps<P: PacketBuf>(
        &mut self,
        pkts: &mut [P],
        staged: &Staged,
        now_ms: u32,
        verdicts: &mut [Verdict],
    ) {
        for ((pkt, step), verdict) in pkts.iter_mut().zip(&staged.steps).zip(verdicts.iter_mut()) {
            *verdict = self.execute(pkt, step, staged.rx_port, now_ms);
        }
    }

    /// Periodic upkeep: a bounded sweep of both flow tables ([`SWEEP_BUCKETS`] buckets each),
    /// releasing the least-connection counts of expired flows.
    pub fn housekeeping(&mut self, now_ms: u32) {
        let sched = &mut self.sched;
        // An empty table in flood mode is still swept: the sweep is what ends flood mode.
        if !self.tables.v4.is_empty() || self.tables.v4.in_flood() {
            self.tables
                .v4
                .sweep_with(now_ms, SWEEP_BUCKETS, |v| sched.release(v));
        }
        if !self.tables.v6.is_empty() || self.tables.v6.in_flood() {
            self.tables
                .v6
                .sweep_with(now_ms, SWEEP_BUCKETS, |v| sched.release(v));
        }
        self.sync_counters();
    }

    /// This worker's counters.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Live flows in the IPv4 and IPv6 tables (expired ones not yet reclaimed included).
    #[must_use]
    pub fn flow_count(&self) -> (usize, usize) {
        (self.tables.v4.len(), self.tables.v6.len())
    }

    /// Capacity (flows) of the IPv4 and IPv6 tables.
    #[must_use]
    pub fn flow_capacity(&self) -> (usize, usize) {
        (self.tables.v4.capacity(), self.tables.v6.capacity())
    }

    /// Bytes held by the two flow tables.
    #[must_use]
    pub fn flow_memory_bytes(&self) -> usize {
        self.tables.v4.memory_bytes() + self.tables.v6.memory_bytes()
    }

    /// The backend id an IPv4 flow is pinned to, if it is live (no side effects).
    #[must_use]
    pub fn flow_backend_v4(&self, key: &FlowKeyV4, now_ms: u32) -> Option<u32> {
        let t = &self.tables.v4;
        t.peek(key, t.hash(key), now_ms).map(|(v, _)| v.backend)
    }

    /// The backend id an IPv6 flow is pinned to, if it is live (no side effects).
    #[must_use]
    pub fn flow_backend_v6(&self, key: &FlowKeyV6, now_ms: u32) -> Option<u32> {
        let t = &self.tables.v6;
        t.peek(key, t.hash(key), now_ms).map(|(v, _)| v.backend)
    }

    /// Live flows this worker tracks on backend `id` (what `least_conn` compares).
    #[must_use]
    pub fn backend_flows(&self, id: u32) -> u32 {
        self.sched.live_flows(id)
    }

    #[inline]
    fn sync_counters(&mut self) {
        self.counters
            .set_flow(self.tables.v4.counters(), self.tables.v6.counters());
    }

    /// Phase 1 of one packet, plus the connection table's keyed bucket hash (one more hash of
    /// the key, with this worker's secret seed).
    #[inline]
    fn classify(&self, data: &[u8], rx_port: PortIndex) -> Step {
        let mut step = match self.generation.as_deref() {
            Some(g) => classify(g, &self.view, data, rx_port),
            None => Step::Drop(Counter::DropNoTable),
        };
        match &mut step {
            Step::Lb4(lb) => lb.table_hash = self.tables.v4.hash(&lb.key),
            Step::Lb6(lb) => lb.table_hash = self.tables.v6.hash(&lb.key),
            _ => {}
        }
        step
    }

    /// Phase 2: everything with side effects (counters, tokens, flow table, rewriting).
    #[inline]
    fn execute<P: PacketBuf>(
        &mut self,
        pkt: &mut P,
        step: &Step,
        rx_port: PortIndex,
        now: u32,
    ) -> Verdict {
        let result = match *step {
            Step::Lb4(ref lb) => self.balance(pkt, lb, rx_port, now),
            Step::Lb6(ref lb) => self.balance(pkt, lb, rx_port, now),
            Step::Drop(counter) => Err(counter),
            Step::Kernel => {
                if self.view.kernel.is_some() {
                    self.counters.inc(Counter::ToKernel);
                    Ok(Verdict::Kernel)
                } else {
                    Err(Counter::DropForHostNoKernelPort)
                }
            }
            Step::KernelToWire(port) => {
                self.counters.inc(Counter::KernelToWire);
                Ok(Verdict::Forward(port))
            }
            Step::Learn(news) => self.learn(&news, rx_port),
            Step::ArpReply { l3 } => {
                self.reply(rx_port, Counter::ArpReplySent, false, now, |mac| {
                    local::arp_reply(pkt, usize::from(l3), mac)
                })
            }
            Step::NdAdvert { l3, dad } => {
                self.reply(rx_port, Counter::NdAdvertSent, false, now, |mac| {
                    local::neighbor_advert(pkt, usize::from(l3), dad, mac)
                })
            }
            Step::Echo4 { l3 } => {
                self.reply(rx_port, Counter::IcmpEchoReplySent, true, now, |mac| {
                    local::echo_reply_v4(pkt, usize::from(l3), mac)
                })
            }
            Step::Echo6 { l3 } => {
                self.reply(rx_port, Counter::Icmpv6EchoReplySent, true, now, |mac| {
                    local::echo_reply_v6(pkt, usize::from(l3), mac)
                })
            }
        };
        match result {
            Ok(verdict) => verdict,
            Err(counter) => {
                self.counters.inc(counter);
                if self.tap_drops || tap::sampled(counter) {
                    self.on_drop(pkt.data(), counter, rx_port, now);
                }
                Verdict::Drop
            }
        }
    }

    /// Hands news about a gateway of `rx_port` to the resolver; the frame itself is done.
    fn learn(&mut self, news: &NeighbourNews, rx_port: PortIndex) -> Result<Verdict, Counter> {
        let addr = if news.v6 {
            IpAddr::V6(news.addr.into())
        } else {
            IpAddr::V4(u32::try_from(news.addr).unwrap_or(0).into())
        };
        let observation = Observation {
            port: rx_port,
            addr,
            mac: news.mac,
            overrides: news.overrides,
            confirm_only: news.confirm_only,
        };
        match &self.neighbours {
            Some(n) if n.observe(observation) => {
                self.counters.inc(Counter::NeighbourLearned);
                Ok(Verdict::Drop)
            }
            _ => Err(Counter::DropNeighbourQueueFull),
        }
    }

    /// A reply built in place and sent back out of the RX port (ICMP ones draw a token).
    #[inline]
    fn reply(
        &mut self,
        rx_port: PortIndex,
        sent: Counter,
        icmp: bool,
        now: u32,
        build: impl FnOnce(EthernetAddress) -> Result<(), Counter>,
    ) -> Result<Verdict, Counter> {
        let mac = self.view.port(rx_port).ok_or(Counter::DropPortUnbound)?.mac;
        if icmp && !self.icmp.take(now) {
            return Err(Counter::DropIcmpRateLimited);
        }
        build(mac)?;
        self.counters.inc(sent);
        Ok(Verdict::Forward(rx_port))
    }

    /// Connection table, scheduler and encapsulation for a packet to a VIP.
    #[inline]
    fn balance<P: PacketBuf, K: Family>(
        &mut self,
        pkt: &mut P,
        lb: &Lb<K>,
        rx_port: PortIndex,
        now: u32,
    ) -> Result<Verdict, Counter> {
        let Self {
            generation,
            view,
            tables,
            sched,
            icmp,
            sources,
            counters,
            neighbours,
            telemetry,
            ..
        } = self;
        let g: &Generation = generation.as_deref().ok_or(Counter::DropNoTable)?;
        // Where the packet would leave, checked before the flow table: a packet that is dropped
        // leaves no state behind.
        let egress_port = view.backend_port.unwrap_or(rx_port);
        let egress = view.port(egress_port).ok_or(Counter::DropPortUnbound)?;
        // A configured MAC is used as it is; otherwise the resolver's slot (cold when a MAC
        // is configured: one branch on a value already in the view).
        let resolved = if egress.has_gateway() {
            None
        } else {
            if !egress.resolves_gateway() {
                return Err(Counter::DropNoGatewayMac);
            }
            match neighbours.as_ref().and_then(|n| n.slots.port(egress_port)) {
                Some(slots) if slots.any() => Some(slots),
                _ => return Err(Counter::DropGatewayUnresolved),
            }
        };
        let table = K::table(tables);
        let (index, opened) = if lb.icmp_error {
            let pinned = table
                .peek(&lb.key, lb.table_hash, now)
                .and_then(|(v, _)| live_backend(g, v.backend).ok());
            match pinned {
                Some(index) => (index, false),
                None => (schedule(g, sched, counters, &new_flow(g, lb))?, false),
            }
        } else {
            flow_backend(g, table, sched, counters, sources, lb, telemetry, now)?
        };
        let backend = g
            .backends
            .get(index)
            .ok_or(Counter::DropBadTableReference)?;
        let backend_v6 = backend.family == FAMILY_V6;
        let gateway = match resolved {
            None => egress.gateway_mac,
            Some(slots) => match slots.mac(backend_v6) {
                Some(mac) => mac,
                None if !egress.resolves_gateway_of(backend_v6) => {
                    return Err(Counter::DropNoGatewayMac)
                }
                None => return Err(Counter::DropGatewayUnresolved),
            },
        };

        let (l3, len) = (usize::from(lb.l3), usize::from(lb.len));
        let overhead = encap::overhead(view.gue, backend_v6);
        if len + overhead > usize::from(view.backend_mtu) {
            counters.inc(Counter::TooBigAfterEncap);
            if lb.icmp_error {
                return Err(Counter::DropIcmpErrorTooBig);
            }
            let mac = view.port(rx_port).ok_or(Counter::DropPortUnbound)?.mac;
            if !icmp.take(now) {
                return Err(Counter::DropIcmpRateLimited);
            }
            // overhead <= 52: the subtraction is exact in u16.
            let mtu = view
                .backend_mtu
                .saturating_sub(u16::try_from(overhead).unwrap_or(u16::MAX));
            let sent = lb.key.too_big(pkt, l3, len, mtu, mac)?;
            counters.inc(sent);
            return Ok(Verdict::Forward(rx_port));
        }

        let inner = EncapInner {
            l3,
            len,
            protocol: K::IPIP,
            tos: lb.tos,
            hash: lb.hash,
        };
        let frame = pkt.data().len() as u64;
        let forwarded = encap::encapsulate(
            pkt,
            view,
            &inner,
            &backend.address,
            backend_v6,
            egress,
            gateway,
        )?;
        counters.inc(forwarded);
        telemetry.forwarded(lb.service, index, frame, opened);
        if lb.icmp_error {
            counters.inc(Counter::IcmpErrorSteered);
        }
        Ok(Verdict::Forward(egress_port))
    }
}

/// The scheduler input of a flow (region and source hash computed only when scheduling).
#[inline]
fn new_flow<K: Family>(g: &Generation, lb: &Lb<K>) -> NewFlow {
    NewFlow {
        service: lb.service,
        region: lb.key.region(g),
        hash: lb.hash,
        src_hash: lb.key.src_hash(),
        consistent: false,
    }
}

/// The backend of a TCP/UDP packet's flow: the table's entry when it is live and its backend
/// healthy, else a new choice (inserted or re-pointed).
///
/// A miss is a new flow, or one this worker lost (restart, eviction, RSS change). Before it is
/// scheduled the table says whether it would store it ([`FlowTable::admit`]):
/// - stored: a SYN (or a UDP flow's first datagram) is scheduled by the pool's scheduler and
///   inserted (handshake, datagram); a TCP packet without SYN (`flow_non_syn_miss`) is placed
///   by consistent hash and inserted **provisional** (`flow_provisional_inserts`): short-lived
///   (the handshake timeout), evicted before anything else, promoted to established by the
///   flow's next packet without SYN, FIN or RST (`flow_provisional_promoted`). A random-source
///   ACK flood sends one packet per 5-tuple, so it never outlives or pushes out real flows,
///   while a real mid-stream flow (after a restart) proves itself with its next segment. The
///   appliance sees only client → VIP (DSR), so "proves itself" can only mean "comes back".
/// - not stored (flood mode, insert cap, or both buckets full of entries it may not evict —
///   established flows are never evicted by a new one): scheduled by consistent hash (Maglev
///   slot, IP hash, else `healthy[hash % n]`) and forwarded without an entry
///   (`forwarded_stateless`). Its later packets miss too and are placed the same way, so a
///   client that connects during a flood stays on one backend, even on a round-robin pool.
///
/// A RST that misses is forwarded without an entry (`forwarded_without_entry`).
///
/// `telemetry` names the flow's service as a new entry records it ([`service_tag`]): looked up
/// on a miss only.
///
/// Returns the backend's index and whether the packet opened a flow (a miss that is a SYN or a
/// UDP datagram, stored or not: what telemetry counts as a new flow).
#[inline]
#[allow(clippy::too_many_arguments)] // the worker's parts, borrowed apart
fn flow_backend<K: Family>(
    g: &Generation,
    table: &mut FlowTable<K>,
    sched: &mut SchedState,
    counters: &mut Counters,
    sources: &mut SourceLimiter,
    lb: &Lb<K>,
    telemetry: &crate::telemetry::Telemetry,
    now: u32,
) -> Result<(usize, bool), Counter> {
    let flags = lb.tcp_flags;
    let tcp = lb.key.proto() == PROTO_TCP;
    let hash = lb.table_hash;
    if let Some(mut flow) = table.lookup_with(&lb.key, hash, now, |v| sched.release(v)) {
        let old = flow.value();
        return match live_backend(g, old.backend) {
            Ok(index) => {
                if tcp {
                    track_tcp(&mut flow, sched, counters, flags);
                }
                Ok((index, false))
            }
            Err(reason) => {
                // Gone or unhealthy: reschedule and re-point the entry.
                counters.inc(reason);
                let index = schedule(g, sched, counters, &new_flow(g, lb))?;
                let id = g.backends.get(index).map_or(0, |b| b.id);
                sched.release(old);
                let state = if tcp {
                    flow.on_tcp_flags(flags)
                } else {
                    flow.state()
                };
                let counted = state != FlowState::TcpClosing;
                let slot = (old.slot & SLOT_SERVICE) | if counted { SLOT_COUNTED } else { 0 };
                if counted {
                    sched.acquire(id, slot);
                }
                *flow.value_mut() = FlowValue { backend: id, slot };
                Ok((index, false))
            }
        };
    }

    // A new flow (or one this worker lost).
    let mid_stream = tcp && flags & tcp_flags::SYN == 0;
    if mid_stream {
        table.count_non_syn_miss();
    }
    let (allowed, eviction) = sources.allow(lb.key.source_key(sources), now);
    match eviction {
        Eviction::None => {}
        Eviction::Evicted => counters.inc(Counter::LimitSourceEvicted),
        Eviction::TableFull => {
            counters.inc(Counter::LimitSourceEvicted);
            counters.inc(Counter::LimitSourceTableFull);
        }
    }
    if !allowed {
        return Err(Counter::DropRateLimited);
    }
    // A reset ends whatever it belongs to: forward it, do not create a flow for it.
    let reset = tcp && flags & tcp_flags::RST != 0;
    let state = FlowState::initial(lb.key.proto(), flags);
    let stored = !reset && table.admit(hash, state, now).is_ok();
    let mut flow = new_flow(g, lb);
    flow.consistent = mid_stream || !stored;
    let index = schedule(g, sched, counters, &flow)?;
    if reset {
        counters.inc(Counter::ForwardedWithoutEntry);
        return Ok((index, false));
    }
    let opened = !mid_stream;
    if !stored {
        counters.inc(Counter::ForwardedStateless);
        return Ok((index, opened));
    }
    let id = g.backends.get(index).map_or(0, |b| b.id);
    let counted = state != FlowState::TcpClosing;
    let service = telemetry
        .service_row(lb.service)
        .map_or(0, |(row, incarnation)| service_tag(row, incarnation));
    let value = FlowValue {
        backend: id,
        slot: service | if counted { SLOT_COUNTED } else { 0 },
    };
    let outcome = table.insert_with(&lb.key, hash, value, state, now, |v| sched.release(v));
    if counted && matches!(outcome, InsertOutcome::Inserted | InsertOutcome::Evicted) {
        sched.acquire(id, value.slot);
    }
    Ok((index, opened))
}

/// Advances a TCP flow's state; a close releases its least-connection count, a reopened
/// 5-tuple (SYN after close) takes it again.
#[inline]
fn track_tcp<K: FlowKey>(
    flow: &mut FlowMut<'_, K>,
    sched: &mut SchedState,
    counters: &mut Counters,
    flags: u8,
) {
    let before = flow.state();
    let after = flow.on_tcp_flags(flags);
    if before == after {
        return;
    }
    if before == FlowState::TcpProvisional && after == FlowState::TcpEstablished {
        counters.inc(Counter::FlowProvisionalPromoted);
    }
    let value = flow.value();
    let counted = value.slot & SLOT_COUNTED != 0;
    if after == FlowState::TcpClosing && counted {
        sched.release(value);
        flow.value_mut().slot &= !SLOT_COUNTED;
    } else if after != FlowState::TcpClosing && !counted {
        sched.acquire(value.backend, value.slot);
        flow.value_mut().slot |= SLOT_COUNTED;
    }
}

/// What differs between IPv4 and IPv6 flows once they are classified.
pub(crate) trait Family: FlowKey {
    /// The inner protocol as seen from the outer header: 4 (IPv4) or 41 (IPv6).
    const IPIP: IpProtocol;
    /// This family's flow table.
    fn table(tables: &mut FlowTables) -> &mut FlowTable<Self>;
    /// The client's region index, or [`NONE`].
    fn region(&self, g: &Generation) -> u32;
    /// The source-address hash (`ip_hash`).
    fn src_hash(&self) -> u32;
    /// The per-source limiter key.
    fn source_key(&self, sources: &SourceLimiter) -> u64;
    /// Replaces the packet with the ICMP error telling the client it is too big; returns the
    /// counter of the error sent.
    fn too_big<P: PacketBuf>(
        &self,
        pkt: &mut P,
        l3: usize,
        len: usize,
        mtu: u16,
        mac: EthernetAddress,
    ) -> Result<Counter, Counter>;
}

impl Family for FlowKeyV4 {
    const IPIP: IpProtocol = IpProtocol::IPV4;

    #[inline]
    fn table(tables: &mut FlowTables) -> &mut FlowTable<Self> {
        &mut tables.v4
    }

    #[inline]
    fn region(&self, g: &Generation) -> u32 {
        region(lookup_v4(&g.geo_lpm_v4, self.src().to_bits()))
    }

    #[inline]
    fn src_hash(&self) -> u32 {
        ip_hash_v4(self.src())
    }

    #[inline]
    fn source_key(&self, _: &SourceLimiter) -> u64 {
        SourceLimiter::key_v4(self.src().to_bits())
    }

    fn too_big<P: PacketBuf>(
        &self,
        pkt: &mut P,
        l3: usize,
        len: usize,
        mtu: u16,
        mac: EthernetAddress,
    ) -> Result<Counter, Counter> {
        local::frag_needed(pkt, l3, len, mtu, self.src(), self.dst(), mac)?;
        Ok(Counter::IcmpFragNeededSent)
    }
}

impl Family for FlowKeyV6 {
    const IPIP: IpProtocol = IpProtocol::IPV6;

    #[inline]
    fn table(tables: &mut FlowTables) -> &mut FlowTable<Self> {
        &mut tables.v6
    }

    #[inline]
    fn region(&self, g: &Generation) -> u32 {
        region(lookup_v6(&g.geo_lpm_v6, self.src().to_bits()))
    }

    #[inline]
    fn src_hash(&self) -> u32 {
        ip_hash_v6(self.src())
    }

    #[inline]
    fn source_key(&self, sources: &SourceLimiter) -> u64 {
        sources.key_v6(self.src().to_bits())
    }

    fn too_big<P: PacketBuf>(
        &self,
        pkt: &mut P,
        l3: usize,
        len: usize,
        mtu: u16,
        mac: EthernetAddress,
    ) -> Result<Counter, Counter> {
        local::packet_too_big(pkt, l3, len, mtu, self.src(), self.dst(), mac)?;
        Ok(Counter::Icmpv6TooBigSent)
    }
}

/// Geo-LPM value (region index + 1, or 0) → region index or [`NONE`].
#[inline]
fn region(value: u32) -> u32 {
    value.checked_sub(1).unwrap_or(NONE)
}

/// The `ip_hash` scheduler's hash of an IPv4 client address (see [`IP_HASH_SEED`]).
#[must_use]
#[inline]
pub fn ip_hash_v4(src: Ipv4Addr) -> u32 {
    fold32(hash_words(IP_HASH_SEED, &[u64::from(src.to_bits())]))
}

/// The `ip_hash` scheduler's hash of an IPv6 client address (see [`IP_HASH_SEED`]).
#[must_use]
#[inline]
pub fn ip_hash_v6(src: Ipv6Addr) -> u32 {
    let bits = src.to_bits();
    // The two halves of the address: truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    let words = [(bits >> 64) as u64, bits as u64];
    fold32(hash_words(IP_HASH_SEED, &words))
}
