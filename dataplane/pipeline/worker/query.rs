//! Answers to the control plane's flow queries (`switchyard-control trace` and `flows`),
//! computed by the worker that owns the connection table, between bursts, changing nothing.
//!
//! A trace runs the first packet of a flow — a TCP SYN or a UDP datagram from the client to the
//! VIP, arriving on the client-facing port — through the same phase-1 classification as a
//! received packet, then the route, pool and scheduler choice on a copy of this worker's
//! scheduler state and per-source limiter, and reads the connection table without touching it.
//! So the answer is what this worker would do, not a second implementation of it. A sample walks the connection tables a slice of
//! buckets at a time ([`SAMPLE_BUCKETS`] per call), so a query never stalls the worker.

use switchyard_table::generation::{Generation, NONE};
use switchyard_table::shm::{
    FlowTuple, Message, Sample, Traced, TRACE_CANARY, TRACE_DROP, TRACE_FALLBACK, TRACE_FORWARD,
    TRACE_HELD, TRACE_LOCAL, TRACE_SPILL,
};

use super::{new_flow, Family, PipelineWorker};
use crate::flow::{FlowKey, FlowKeyV6, FlowTable};
use crate::pipeline::classify::{classify, Lb, Step};
use crate::pipeline::counters::{Counter, Counters};
use crate::pipeline::sched::{live_backend, schedule};
use crate::pipeline::PortIndex;
use crate::wire::EthernetAddress;

/// Buckets a [`PipelineWorker::sample_step`] call visits (8 ways each).
pub const SAMPLE_BUCKETS: usize = 1024;

/// Most flows one worker returns for one sample.
pub const SAMPLE_LIMIT: u16 = 256;

/// A sample in progress on one worker.
#[derive(Debug, Clone)]
pub struct SampleScan {
    pub query: Sample,
    /// 0: the IPv4 table, 1: the IPv6 table, 2: done.
    table: u8,
    /// Next bucket of the current table.
    bucket: usize,
    /// Flows that matched (sent, up to the limit).
    pub matched: u64,
    /// Live flows looked at.
    pub scanned: u64,
    /// The `Flow` messages so far.
    pub found: Vec<Message>,
}

impl SampleScan {
    #[must_use]
    pub fn new(query: Sample) -> Self {
        // A VIP filter of one family skips the other table.
        let table = if query.family == 6 { 1 } else { 0 };
        Self {
            query,
            table,
            bucket: 0,
            matched: 0,
            scanned: 0,
            found: Vec::new(),
        }
    }

    fn limit(&self) -> u64 {
        u64::from(self.query.limit.clamp(1, SAMPLE_LIMIT))
    }
}

fn drop(t: &mut Traced, c: Counter) {
    t.outcome = TRACE_DROP;
    t.counter = u32::try_from(c.index()).unwrap_or(u32::MAX);
}

/// The frame a client would send first: Ethernet to `mac`, IPv4/IPv6, a TCP SYN (window 64240)
/// or an 8-byte UDP datagram; TTL 64, correct IPv4 header checksum, non-zero UDP checksum.
fn first_packet(flow: &FlowTuple, mac: EthernetAddress) -> Vec<u8> {
    let tcp = flow.proto == 6;
    let l4_len: usize = if tcp { 20 } else { 8 };
    let mut f = Vec::with_capacity(14 + 40 + l4_len);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    if flow.family == 6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&u16::try_from(l4_len).unwrap_or(0).to_be_bytes());
        f.extend_from_slice(&[flow.proto, 64]);
        f.extend_from_slice(&flow.src);
        f.extend_from_slice(&flow.dst);
    } else {
        let total = u16::try_from(20 + l4_len).unwrap_or(0);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = flow.proto;
        ip[12..16].copy_from_slice(&flow.src[..4]);
        ip[16..20].copy_from_slice(&flow.dst[..4]);
        let sum = crate::wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&flow.sport.to_be_bytes());
    f.extend_from_slice(&flow.dport.to_be_bytes());
    if tcp {
        // seq 1, ack 0, data offset 5, SYN, window 64240, checksum (not checked), urgent 0.
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0, 8, 0xff, 0xff]);
    }
    f
}

impl PipelineWorker {
    /// The port client traffic arrives on: the first port bound to an interface that is not
    /// the backend port (the backend port itself on a one-armed appliance).
    fn client_port(&self) -> Option<PortIndex> {
        let bound = |i: &usize| self.view.ports.get(*i).is_some_and(Option::is_some);
        let backend = self.view.backend_port.map(usize::from);
        let pick = (0..self.view.ports.len())
            .filter(bound)
            .find(|&i| Some(i) != backend)
            .or_else(|| (0..self.view.ports.len()).find(bound))?;
        PortIndex::try_from(pick).ok()
    }

    /// What this worker does with the first packet of `flow`, and the backend its connection
    /// table holds for the flow; changes nothing.
    #[must_use]
    pub fn trace(&self, query: u32, worker: u16, flow: &FlowTuple, now: u32) -> Traced {
        let mut t = Traced {
            query,
            worker,
            counter: u32::MAX,
            service: u32::MAX,
            route: u32::MAX,
            pool: u32::MAX,
            ..Traced::default()
        };
        let Some(g) = self.generation.as_deref() else {
            drop(&mut t, Counter::DropNoTable);
            return t;
        };
        t.generation = g.generation;
        let Some((rx, mac)) = self
            .client_port()
            .and_then(|rx| Some((rx, self.view.port(rx)?.mac)))
        else {
            drop(&mut t, Counter::DropPortUnbound);
            return t;
        };
        let frame = first_packet(flow, mac);
        match classify(g, &self.view, &frame, rx) {
            Step::Drop(c) => drop(&mut t, c),
            Step::Lb4(lb) => self.trace_lb(g, &lb, &self.tables.v4, rx, now, &mut t),
            Step::Lb6(lb) => self.trace_lb(g, &lb, &self.tables.v6, rx, now, &mut t),
            _ => t.outcome = TRACE_LOCAL,
        }
        t
    }

    fn trace_lb<K: Family>(
        &self,
        g: &Generation,
        lb: &Lb<K>,
        table: &FlowTable<K>,
        rx: PortIndex,
        now: u32,
        t: &mut Traced,
    ) {
        t.service = lb.service;
        let egress = self.view.backend_port.unwrap_or(rx);
        match self.view.port(egress) {
            None => return drop(t, Counter::DropPortUnbound),
            Some(p) if !p.has_gateway() && !p.resolves_gateway() => {
                return drop(t, Counter::DropNoGatewayMac)
            }
            Some(p) if !p.has_gateway() && !self.gateway_resolved(egress) => {
                return drop(t, Counter::DropGatewayUnresolved)
            }
            Some(_) => {}
        }
        let mut held_live = false;
        if let Some((v, _)) = table.peek(&lb.key, table.hash(&lb.key), now) {
            t.held = v.backend;
            t.flags |= TRACE_HELD;
            held_live = live_backend(g, v.backend).is_ok();
        }
        // A new flow draws from the per-source limiter first (looked at: nothing is taken).
        if !held_live
            && !self
                .sources
                .would_allow(lb.key.source_key(&self.sources), now)
        {
            drop(t, Counter::DropRateLimited);
            return;
        }
        let flow = new_flow(g, lb);
        if let Some(service) = g.services.get(lb.service as usize) {
            let first = service.first_route as usize;
            let routes = g
                .routes
                .get(first..first.saturating_add(service.route_count as usize))
                .unwrap_or(&[]);
            if let Some(i) = routes
                .iter()
                .position(|r| r.region == flow.region || r.region == NONE)
            {
                t.route = u32::try_from(i).unwrap_or(u32::MAX);
            }
        }
        let mut sched = self.sched.clone();
        let mut seen = Counters::default();
        match schedule(g, &mut sched, &mut seen, &flow) {
            Ok(index) => {
                let Some(b) = g.backends.get(index) else {
                    drop(t, Counter::DropBadTableReference);
                    return;
                };
                t.backend = b.id;
                t.pool = b.pool;
                for (c, bit) in [
                    (Counter::CanarySelected, TRACE_CANARY),
                    (Counter::PoolFallback, TRACE_FALLBACK),
                    (Counter::BoundedLoadSpill, TRACE_SPILL),
                ] {
                    if seen[c] > 0 {
                        t.flags |= bit;
                    }
                }
                t.outcome = TRACE_FORWARD;
            }
            Err(c) => drop(t, c),
        }
    }

    /// Visits the next [`SAMPLE_BUCKETS`] buckets of `scan`; true when the sample is complete
    /// (the limit reached or both tables walked).
    pub fn sample_step(&self, scan: &mut SampleScan, worker: u8, now: u32) -> bool {
        match scan.table {
            0 => sample_table(&self.tables.v4, scan, worker, now, |k| {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&k.dst().octets());
                let mut s = [0u8; 16];
                s[..4].copy_from_slice(&k.src().octets());
                FlowTuple {
                    family: 4,
                    proto: k.proto(),
                    src: s,
                    dst: b,
                    sport: k.sport(),
                    dport: k.dport(),
                }
            }),
            1 => sample_table(&self.tables.v6, scan, worker, now, |k: &FlowKeyV6| {
                FlowTuple {
                    family: 6,
                    proto: k.proto(),
                    src: k.src().octets(),
                    dst: k.dst().octets(),
                    sport: k.sport(),
                    dport: k.dport(),
                }
            }),
            _ => {}
        }
        scan.table >= 2 || scan.matched >= scan.limit()
    }
}

fn sample_table<K: FlowKey>(
    table: &FlowTable<K>,
    scan: &mut SampleScan,
    worker: u8,
    now: u32,
    tuple: impl Fn(&K) -> FlowTuple,
) {
    let q = scan.query;
    let limit = scan.limit();
    let end = scan.bucket.saturating_add(SAMPLE_BUCKETS);
    let mut found = Vec::new();
    let mut scanned = 0u64;
    table.visit_buckets(scan.bucket..end, now, |key, value, state| {
        scanned += 1;
        if scan.matched + found.len() as u64 >= limit {
            return;
        }
        let t = tuple(key);
        let wanted = (q.family == 0 || (t.family == q.family && t.dst == q.vip))
            && (q.proto == 0 || t.proto == q.proto)
            && (q.port == 0 || t.dport == q.port)
            && (q.backend == 0 || value.backend == q.backend);
        if wanted {
            found.push(Message::Flow {
                query: q.query,
                worker,
                state: state as u8, // the FlowState discriminant (repr(u8)): 1..=5
                flow: t,
                backend: value.backend,
            });
        }
    });
    scan.scanned += scanned;
    scan.matched += found.len() as u64;
    scan.found.extend(found);
    scan.bucket = end;
    if end >= table.bucket_count() {
        // The IPv4 table done: on to IPv6 unless the VIP filter is IPv4.
        scan.table = if scan.table == 0 && q.family == 0 {
            1
        } else {
            2
        };
        scan.bucket = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_packet_has_a_valid_ipv4_header() {
        let flow = FlowTuple {
            family: 4,
            proto: 6,
            src: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 8000,
        };
        let f = first_packet(&flow, EthernetAddress([2, 0, 0, 0, 0, 9]));
        let ip = crate::wire::Ipv4Packet::new_checked(&f[14..]).expect("a valid IPv4 header");
        assert!(ip.verify_checksum());
        assert_eq!(f.len(), 14 + 20 + 20);
    }
}
