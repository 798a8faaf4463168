//! Connection-table floods, in process, at millions of packets: thousands of established TCP
//! flows on a Maglev service and on a round-robin one, then a flood from random sources — SYNs,
//! then ACKs, then a mix of both — with legitimate new clients connecting during it, then more
//! data on every established flow. Run with a table smaller than the flood and one larger.
//!
//! Checked packet by packet: every packet of an established flow is forwarded to the backend
//! its SYN got; every legitimate new client's packets all go to one backend, the one an
//! unflooded worker would pick for a Maglev service. Afterwards every established flow still
//! has its entry. The clock runs at 10 Mpps (1 ms per 10 000 packets), so the insert cap
//! (2 M/s, 200 k burst) engages as it would at line rate, and housekeeping runs every 1 000
//! packets (about every 100 µs, as in the appliance).
//!
//! `FLOOD_PACKETS` (environment) sets the packets per flood phase (default 1 000 000).

// Test arithmetic on small numbers; rates as floats.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

mod fixtures;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use fixtures::frames::{tcp4_frame, ACK, PSH_ACK, SYN};
use fixtures::{port_map, Variant, RR, VIP4};
use switchyard::flow::{FlowKeyV4, InsertLimit, PROTO_TCP};
use switchyard::pipeline::{Counter, PacketBuf, PipelineWorker, VecPacket, Verdict, WorkerConfig};

/// Established flows per service.
const ESTABLISHED: u32 = 5_000;
/// Packets per simulated millisecond (10 Mpps).
const PACKETS_PER_MS: u64 = 10_000;
/// Housekeeping period in packets (~100 µs at 10 Mpps).
const HOUSEKEEPING_EVERY: u64 = 1_000;
/// A legitimate new client starts every this many flood packets.
const NEW_CLIENT_EVERY: u64 = 5_000;

fn flood_packets() -> u64 {
    std::env::var("FLOOD_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A small xorshift generator: the flood's sources and ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A TCP frame template whose source, source port and flags are patched in place (the IPv4
/// header checksum recomputed): building millions of frames from scratch would dominate.
struct Template {
    frame: Vec<u8>,
}

impl Template {
    fn new(dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            frame: tcp4_frame(Ipv4Addr::new(11, 0, 0, 1), 1024, dst, dport, SYN, &[]),
        }
    }

    fn write(&self, pkt: &mut VecPacket, src: Ipv4Addr, sport: u16, flags: u8) {
        pkt.reset(&self.frame);
        let f = pkt.data_mut();
        f[26..30].copy_from_slice(&src.octets());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[47] = flags;
        f[24..26].copy_from_slice(&[0, 0]);
        let mut sum = 0u32;
        for pair in f[14..34].chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
}

/// The outer IPv4 destination (the backend) of a packet forwarded to the backend port.
fn backend_of(v: Verdict, p: &VecPacket) -> Option<Ipv4Addr> {
    let f = p.data();
    (v == Verdict::Forward(1) && f.len() >= 34).then(|| Ipv4Addr::new(f[30], f[31], f[32], f[33]))
}

/// One client flow: the service template, its 5-tuple, and the backend it must stay on.
#[derive(Clone, Copy)]
struct Flow {
    rr: bool,
    src: Ipv4Addr,
    sport: u16,
    backend: Option<Ipv4Addr>,
}

impl Flow {
    fn key(&self) -> FlowKeyV4 {
        let (vip, port) = if self.rr { (RR, 80) } else { (VIP4, 443) };
        FlowKeyV4::new(self.src, vip, self.sport, port, PROTO_TCP)
    }
}

struct Run {
    w: PipelineWorker,
    reference: PipelineWorker,
    maglev: Template,
    rr: Template,
    pkt: VecPacket,
    sent: u64,
    problems: Vec<String>,
}

impl Run {
    fn now(&self) -> u32 {
        1_000 + (self.sent / PACKETS_PER_MS) as u32
    }

    /// Sends one packet; returns its verdict's backend (None: not forwarded to a backend).
    fn send(&mut self, rr: bool, src: Ipv4Addr, sport: u16, flags: u8) -> Option<Ipv4Addr> {
        let t = if rr { &self.rr } else { &self.maglev };
        t.write(&mut self.pkt, src, sport, flags);
        let now = self.now();
        let v = self.w.process(&mut self.pkt, 0, now);
        self.sent += 1;
        if self.sent.is_multiple_of(HOUSEKEEPING_EVERY) {
            self.w.housekeeping(self.now());
        }
        backend_of(v, &self.pkt)
    }

    /// Sends a packet of `flow` and checks it reached the flow's backend (pinning it first).
    fn send_flow(&mut self, flow: &mut Flow, flags: u8, what: &str) {
        let got = self.send(flow.rr, flow.src, flow.sport, flags);
        match (flow.backend, got) {
            (_, None) => self.problems.push(format!(
                "{what}: {}:{} flags {flags:#x} not forwarded to a backend",
                flow.src, flow.sport
            )),
            (None, Some(b)) => flow.backend = Some(b),
            (Some(want), Some(b)) if want != b => self.problems.push(format!(
                "{what}: {}:{} went to {b}, its backend is {want}",
                flow.src, flow.sport
            )),
            _ => {}
        }
    }

    /// The backend an unflooded worker picks for a Maglev client's SYN.
    fn reference_backend(&mut self, src: Ipv4Addr, sport: u16) -> Option<Ipv4Addr> {
        self.maglev.write(&mut self.pkt, src, sport, SYN);
        let v = self.reference.process(&mut self.pkt, 0, 1_000);
        backend_of(v, &self.pkt)
    }
}

fn worker(flows_v4: usize) -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4,
        flows_v6: 1024,
        insert_limit: InsertLimit::default(),
        ports: port_map(),
        worker: 0,
    });
    w.set_generation(Variant::Unlimited.generation());
    w
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Syn,
    Ack,
    Mix,
}

/// The whole scenario on a table of `table_flows` IPv4 flows.
fn flood(table_flows: usize) {
    let per_phase = flood_packets();
    let mut run = Run {
        w: worker(table_flows),
        reference: worker(1 << 16),
        maglev: Template::new(VIP4, 443),
        rr: Template::new(RR, 80),
        pkt: VecPacket::new(&[0; 64]),
        sent: 0,
        problems: Vec::new(),
    };
    let capacity = run.w.flow_capacity().0;

    // Established flows: EU clients of the Maglev service, clients of the round-robin one.
    let mut established: Vec<Flow> = (0..ESTABLISHED)
        .flat_map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            [
                Flow {
                    rr: false,
                    src: Ipv4Addr::new(10, 1, a, b),
                    sport: 40_000,
                    backend: None,
                },
                Flow {
                    rr: true,
                    src: Ipv4Addr::new(100, 65, a, b),
                    sport: 40_000,
                    backend: None,
                },
            ]
        })
        .collect();
    for flags in [SYN, ACK, PSH_ACK] {
        for f in &mut established {
            run.send_flow(f, flags, "handshake");
        }
    }
    assert!(
        run.problems.is_empty(),
        "{:?}",
        &run.problems[..5.min(run.problems.len())]
    );
    let pinned: Vec<_> = established.iter().map(|f| f.backend).collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ table_flows as u64);
    let mut clients: Vec<(Flow, Option<Ipv4Addr>)> = Vec::new();
    let started = Instant::now();
    let mut flood_sent = 0u64;
    for phase in [Phase::Syn, Phase::Ack, Phase::Mix] {
        for n in 0..per_phase {
            let r = rng.next();
            // Sources 11.0.0.0 - 105.255.255.255: no martian, ACL, VIP or own address.
            let src = Ipv4Addr::from_bits(0x0b00_0000 + (r as u32) % 0x5f00_0000);
            let sport = (r >> 32) as u16 | 1024;
            let flags = match phase {
                Phase::Syn => SYN,
                Phase::Ack => ACK,
                Phase::Mix if r >> 63 == 0 => SYN,
                Phase::Mix => PSH_ACK,
            };
            let rr = (r >> 62) & 1 == 1;
            run.send(rr, src, sport, flags);
            flood_sent += 1;

            // Established flows keep talking during the flood, a few at a time.
            if n % 64 == 0 {
                let i = (n / 64) as usize % established.len();
                let mut f = established[i];
                run.send_flow(&mut f, PSH_ACK, "established during the flood");
            }
            // Legitimate new clients connect during the flood: SYN now, ACK and data later.
            if n % NEW_CLIENT_EVERY == 0 {
                let id = clients.len() as u32;
                let [_, _, a, b] = id.to_be_bytes();
                let rr = id % 2 == 1;
                let src = if rr {
                    Ipv4Addr::new(100, 66, a, b)
                } else {
                    Ipv4Addr::new(10, 1, 200 + a % 50, b)
                };
                let mut f = Flow {
                    rr,
                    src,
                    sport: 50_000,
                    backend: None,
                };
                let want = if rr {
                    None
                } else {
                    run.reference_backend(src, 50_000)
                };
                run.send_flow(&mut f, SYN, "new client SYN");
                clients.push((f, want));
            }
            if n % NEW_CLIENT_EVERY == NEW_CLIENT_EVERY / 2 {
                if let Some((mut f, want)) = clients.last().copied() {
                    run.send_flow(&mut f, ACK, "new client ACK");
                    run.send_flow(&mut f, PSH_ACK, "new client data");
                    if want.is_some() && f.backend != want {
                        run.problems.push(format!(
                            "new client {}: on {:?}, an unflooded worker picks {want:?}",
                            f.src, f.backend
                        ));
                    }
                }
            }
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let c = run.w.counters().clone();
    let occupancy = run.w.flow_count().0;

    // More data on every established flow, then every client flow.
    for round in 0..2 {
        for f in &mut established {
            run.send_flow(
                f,
                PSH_ACK,
                &format!("established after the flood ({round})"),
            );
        }
    }
    for (f, _) in &mut clients {
        run.send_flow(f, PSH_ACK, "new client after the flood");
    }
    let now = run.now();
    let kept = established
        .iter()
        .filter(|f| run.w.flow_backend_v4(&f.key(), now).is_some())
        .count();
    let moved = established
        .iter()
        .zip(&pinned)
        .filter(|(f, p)| f.backend != **p)
        .count();

    eprintln!(
        "table {capacity} flows: {flood_sent} flood packets ({per_phase} SYN, {per_phase} ACK, \
         {per_phase} mix) at {:.2} Mpps in-process (debug build); {} established flows \
         ({} Maglev, {} round robin), {kept} kept their entries, {moved} changed backend; \
         {} new clients during the flood; occupancy after the flood {occupancy} of {capacity} \
         ({:.1} %); flood mode entered {} left {} for {} ms; forwarded_stateless {}, \
         flow_provisional_inserts {}, flow_provisional_promoted {}, flow_insert_refused {}, \
         flow_insert_throttled {}, flow_flood_stateless {}, flow_evicted {}",
        flood_sent as f64 / flood_secs / 1e6,
        established.len(),
        ESTABLISHED,
        ESTABLISHED,
        clients.len(),
        100.0 * occupancy as f64 / capacity as f64,
        c.get(Counter::FlowFloodEntered),
        c.get(Counter::FlowFloodLeft),
        c.get(Counter::FlowFloodMilliseconds),
        c.get(Counter::ForwardedStateless),
        c.get(Counter::FlowProvisionalInserts),
        c.get(Counter::FlowProvisionalPromoted),
        c.get(Counter::FlowInsertRefused),
        c.get(Counter::FlowInsertThrottled),
        c.get(Counter::FlowFloodStateless),
        c.get(Counter::FlowEvicted),
    );
    assert!(
        run.problems.is_empty(),
        "{} problems, first: {:#?}",
        run.problems.len(),
        &run.problems[..10.min(run.problems.len())]
    );
    assert_eq!(
        kept,
        established.len(),
        "every established flow keeps its entry"
    );
    assert_eq!(moved, 0);
    assert!(c.get(Counter::FlowFloodEntered) >= 1, "flood mode engaged");
    assert!(c.get(Counter::ForwardedStateless) > 0);
    assert!(!clients.is_empty());
}

#[test]
fn flood_on_a_table_smaller_than_the_flood() {
    flood(1 << 16);
}

#[test]
fn flood_on_a_table_larger_than_the_flood() {
    flood(1 << 22);
}

/// The case: 20 000 established flows, then 3 M spoofed ACKs from random sources, at
/// the appliance's default table size (1 Mi IPv4 flows): none of the established flows may be
/// lost; the ACKs' entries stay provisional and die young.
#[test]
fn spoofed_ack_flood_evicts_no_established_flow() {
    let mut w = worker(1 << 20);
    let t = Template::new(VIP4, 443);
    let mut pkt = VecPacket::new(&[0; 64]);
    let mut backends = HashMap::new();
    for flags in [SYN, ACK] {
        for i in 0..20_000u32 {
            let src = Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8);
            t.write(&mut pkt, src, 40_000, flags);
            let v = w.process(&mut pkt, 0, 1_000);
            let b = backend_of(v, &pkt).expect("forwarded");
            assert_eq!(*backends.entry(src).or_insert(b), b);
        }
    }
    // Real flows this worker never saw the start of (as after a restart): their first packet
    // makes a provisional entry, their second promotes it; they come back during the flood.
    let mid_stream: Vec<Ipv4Addr> = (0..1_000u32)
        .map(|i| Ipv4Addr::new(10, 1, 100 + (i >> 8) as u8, i as u8))
        .collect();
    let mut mid_backends = HashMap::new();
    let mut rng = Rng(42);
    let total = 3 * flood_packets();
    let step = total / (2 * mid_stream.len() as u64);
    for n in 0..total {
        if n % step == 0 && (n / step) < 2 * mid_stream.len() as u64 {
            let src = mid_stream[(n / step) as usize % mid_stream.len()];
            t.write(&mut pkt, src, 41_000, PSH_ACK);
            let v = w.process(&mut pkt, 0, 1_000 + (n / PACKETS_PER_MS) as u32);
            let b = backend_of(v, &pkt).expect("forwarded");
            assert_eq!(*mid_backends.entry(src).or_insert(b), b, "{src}");
        }
        let r = rng.next();
        let src = Ipv4Addr::from_bits(0x0b00_0000 + (r as u32) % 0x5f00_0000);
        t.write(&mut pkt, src, (r >> 32) as u16 | 1024, ACK);
        let now = 1_000 + (n / PACKETS_PER_MS) as u32;
        let v = w.process(&mut pkt, 0, now);
        assert_eq!(v, Verdict::Forward(1), "a spoofed ACK is still forwarded");
        if n % HOUSEKEEPING_EVERY == 0 {
            w.housekeeping(now);
        }
    }
    let now = 1_000 + (total / PACKETS_PER_MS) as u32;
    let lost = backends
        .keys()
        .filter(|src| {
            let key = FlowKeyV4::new(**src, VIP4, 40_000, 443, PROTO_TCP);
            w.flow_backend_v4(&key, now).is_none()
        })
        .count();
    let c = w.counters();
    eprintln!(
        "20000 established, {total} spoofed ACKs: {lost} lost; occupancy {} of {}; \
         flow_provisional_inserts {}, flow_provisional_promoted {}, flow_evicted {}, \
         forwarded_stateless {}, flood entered {}",
        w.flow_count().0,
        w.flow_capacity().0,
        c.get(Counter::FlowProvisionalInserts),
        c.get(Counter::FlowProvisionalPromoted),
        c.get(Counter::FlowEvicted),
        c.get(Counter::ForwardedStateless),
        c.get(Counter::FlowFloodEntered),
    );
    assert_eq!(lost, 0);
    // Those whose provisional entry (made outside flood mode) was still there were promoted
    // by their second packet, even in flood mode; the others were placed by consistent hash.
    let promoted = c.get(Counter::FlowProvisionalPromoted);
    assert!(promoted > 0);
    let stored = mid_stream
        .iter()
        .filter(|src| {
            let key = FlowKeyV4::new(**src, VIP4, 41_000, 443, PROTO_TCP);
            w.flow_backend_v4(&key, now).is_some()
        })
        .count();
    // Stored: the promoted ones, and those whose provisional entry another provisional one
    // pushed out before their second packet came, which made a new provisional entry.
    assert!(stored as u64 >= promoted);
    eprintln!(
        "mid-stream flows: {} sent 2 packets each (each pair on one backend), {promoted} \
         promoted, {stored} with an entry",
        mid_stream.len()
    );
    for (src, b) in &backends {
        t.write(&mut pkt, *src, 40_000, PSH_ACK);
        let v = w.process(&mut pkt, 0, now);
        assert_eq!(backend_of(v, &pkt), Some(*b), "{src}");
    }
}

/// The provisional rule on its own: a TCP packet without SYN that misses makes a provisional
/// entry, which dies after the handshake timeout unless the flow's next packet promotes it.
#[test]
fn a_mid_stream_flow_is_provisional_until_its_next_packet() {
    let mut w = worker(1 << 12);
    let t = Template::new(VIP4, 443);
    let mut pkt = VecPacket::new(&[0; 64]);
    let mut send = |w: &mut PipelineWorker, src, now| {
        t.write(&mut pkt, src, 40_000, PSH_ACK);
        let v = w.process(&mut pkt, 0, now);
        backend_of(v, &pkt).expect("forwarded")
    };
    let (a, b) = (Ipv4Addr::new(10, 1, 9, 1), Ipv4Addr::new(10, 1, 9, 2));
    let key = |src| FlowKeyV4::new(src, VIP4, 40_000, 443, PROTO_TCP);
    let first_a = send(&mut w, a, 1_000);
    send(&mut w, b, 1_000);
    assert_eq!(w.counters().get(Counter::FlowProvisionalInserts), 2);
    // a comes back a second later: established (900 s). b does not: gone after 5 s.
    assert_eq!(send(&mut w, a, 2_000), first_a);
    assert_eq!(w.counters().get(Counter::FlowProvisionalPromoted), 1);
    assert!(w.flow_backend_v4(&key(a), 7_000).is_some());
    assert!(w.flow_backend_v4(&key(b), 7_000).is_none());
    assert!(w.flow_backend_v4(&key(a), 600_000).is_some());
}
