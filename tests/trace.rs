//! `PipelineWorker::trace` (what `switchyard-control trace` asks each worker) agrees with what
//! the same worker then does with the same packet: for every service and scheduler of the
//! fixture policy, allowed and denied sources, IPv4 and IPv6, TCP and UDP, healthy and degraded
//! pools, and a missing gateway MAC. The stateful schedulers (round robin, least connections,
//! weighted) are traced before each of a run of new flows on one worker, so the prediction
//! must follow the worker's own state. The real data plane answering over shared memory is
//! tested in `control/tests/trace_flows.rs`.

mod fixtures;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use fixtures::frames::*;
use fixtures::*;
use switchyard::flow::InsertLimit;
use switchyard::pipeline::{Counter, PacketBuf, PipelineWorker, VecPacket, Verdict, WorkerConfig};
use switchyard_table::generation::Generation;
use switchyard_table::shm::{FlowTuple, Traced, TRACE_DROP, TRACE_FORWARD, TRACE_HELD};

const SYN: u8 = 0x02;

fn worker(variant: Variant) -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 4096,
        flows_v6: 1024,
        insert_limit: InsertLimit::default(),
        ports: variant.port_map(),
        worker: 0,
    });
    w.set_generation(variant.generation());
    w
}

fn tuple(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> FlowTuple {
    let (s, family) = FlowTuple::addr_bytes(src);
    let (d, _) = FlowTuple::addr_bytes(dst);
    FlowTuple {
        family,
        proto,
        src: s,
        dst: d,
        sport,
        dport,
    }
}

fn first_frame(t: &FlowTuple) -> Vec<u8> {
    match (t.addr(&t.src), t.addr(&t.dst), t.proto) {
        (IpAddr::V4(s), IpAddr::V4(d), 6) => tcp4_frame(s, t.sport, d, t.dport, SYN, &[]),
        (IpAddr::V4(s), IpAddr::V4(d), _) => udp4_frame(s, t.sport, d, t.dport, b"q"),
        (IpAddr::V6(s), IpAddr::V6(d), 6) => tcp6_frame(s, t.sport, d, t.dport, SYN, &[]),
        (IpAddr::V6(s), IpAddr::V6(d), _) => udp6_frame(s, t.sport, d, t.dport, b"q"),
        _ => unreachable!("one family per tuple"),
    }
}

/// The address of the backend with stable id `id`.
fn backend_address(g: &Generation, id: u32) -> IpAddr {
    let index = g.backend_by_id[id as usize] as usize - 1;
    let b = &g.backends[index];
    if b.family == switchyard_table::generation::FAMILY_V6 {
        IpAddr::from(b.address)
    } else {
        IpAddr::from([b.address[0], b.address[1], b.address[2], b.address[3]])
    }
}

/// The outer destination of an encapsulated frame (IPv4 or IPv6 outer header).
fn outer_dst(out: &[u8]) -> IpAddr {
    if out[12..14] == [0x86, 0xdd] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&out[38..54]);
        IpAddr::from(a)
    } else {
        IpAddr::from([out[30], out[31], out[32], out[33]])
    }
}

/// Traces, then processes; asserts they agree. Returns the trace.
fn check(w: &mut PipelineWorker, g: &Generation, t: &FlowTuple, now: u32) -> Traced {
    let traced = w.trace(1, 0, t, now);
    let before: Vec<u64> = w.counters().iter().map(|(_, v)| v).collect();
    let mut p = VecPacket::new(&first_frame(t));
    let verdict = w.process(&mut p, 0, now);
    let after: Vec<u64> = w.counters().iter().map(|(_, v)| v).collect();
    let risen: Vec<Counter> = Counter::ALL
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a > b)
        .map(|(c, _)| *c)
        .collect();
    let what = format!("{t:?}: traced {traced:?}, processed {verdict:?}, counters {risen:?}");
    match traced.outcome {
        TRACE_FORWARD => {
            assert_eq!(verdict, Verdict::Forward(1), "{what}");
            // A flow the table holds goes to its backend; a new one to the scheduler's pick.
            let expect = if traced.flags & TRACE_HELD != 0 {
                traced.held
            } else {
                traced.backend
            };
            assert_eq!(outer_dst(p.data()), backend_address(g, expect), "{what}");
            let again = w.trace(2, 0, t, now);
            assert!(again.flags & TRACE_HELD != 0, "{what}: not held after");
            assert_eq!(again.held, traced.backend, "{what}");
        }
        TRACE_DROP => {
            assert_eq!(verdict, Verdict::Drop, "{what}");
            let reason = Counter::ALL[traced.counter as usize];
            assert!(risen.contains(&reason), "{what}: {reason} did not rise");
        }
        other => panic!("{what}: outcome {other}"),
    }
    traced
}

#[test]
fn trace_agrees_with_the_pipeline_for_every_kind_of_flow() {
    let v4 = |a: Ipv4Addr| IpAddr::V4(a);
    let v6 = |a: Ipv6Addr| IpAddr::V6(a);
    let cases: Vec<(IpAddr, IpAddr, u16, u8)> = vec![
        (v4(EU), v4(VIP4), 443, 6),
        (v4(US), v4(VIP4), 443, 6),
        (v4(OTHER), v4(VIP4), 443, 6),
        (v4(DENIED), v4(VIP4), 443, 6),
        (v4(DENIED_443), v4(VIP4), 443, 6),
        (v4(EU), v4(VIP4), 444, 6),
        (v4(US), v4(VISION), 443, 6),
        (v4(EU), v4(VISION), 443, 6),
        (v4(OTHER), v4(IPHASH), 80, 6),
        (v4(OTHER), v4(MIXED46), 443, 6),
        (v4(OTHER), v4(DNS), 53, 17),
        (v6(EU6), v6(VIP6), 443, 6),
        (v6(OTHER6), v6(MIXED64), 443, 6),
        (v6(OTHER6), v6(DNS6), 53, 17),
    ];
    // The per-source limit (burst 10): the eleventh new flow of one source is traced as a drop.
    let g = Variant::Ipip.generation();
    let mut w = worker(Variant::Ipip);
    let mut limited = 0;
    for sport in 30_000..30_012 {
        let t = check(&mut w, &g, &tuple(v4(OTHER), v4(RR), sport, 80, 6), 1);
        limited += usize::from(t.outcome == TRACE_DROP);
    }
    assert_eq!(limited, 2, "burst 10: flows 11 and 12 are limited");
    let mut forwarded = 0;
    let mut dropped = 0;
    for variant in [Variant::Ipip, Variant::Degraded, Variant::NoGatewayMac] {
        let g = variant.generation();
        for &(src, dst, dport, proto) in &cases {
            for sport in 40_000..40_040 {
                let mut w = worker(variant);
                let t = check(&mut w, &g, &tuple(src, dst, sport, dport, proto), 1);
                if t.outcome == TRACE_FORWARD {
                    forwarded += 1;
                } else {
                    dropped += 1;
                }
            }
        }
    }
    // Both outcomes were exercised, many times.
    assert!(forwarded > 500 && dropped > 500, "{forwarded} {dropped}");
}

#[test]
fn trace_follows_the_stateful_schedulers_of_its_worker() {
    let g: Arc<Generation> = Variant::Ipip.generation();
    for vip in [RR, LC, WRR] {
        let mut w = worker(Variant::Ipip);
        let mut backends = std::collections::HashSet::new();
        for sport in 50_000..50_012 {
            // One source per flow: the per-source limit (burst 10) is not what this tests.
            let src = Ipv4Addr::new(100, 64, 2, u8::try_from(sport % 200).unwrap());
            let t = tuple(IpAddr::V4(src), IpAddr::V4(vip), sport, 80, 6);
            let traced = check(&mut w, &g, &t, 1);
            assert_eq!(traced.outcome, TRACE_FORWARD);
            backends.insert(traced.backend);
        }
        assert!(backends.len() > 1, "{vip}: one backend only");
    }
}
