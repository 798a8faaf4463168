//! Pipeline behaviour over many packets and across table generations: flow stickiness when
//! backends come, go, drain or fail; the canary share; least-connection accounting through
//! expiry; the flow-table counters; and property tests that no input makes a worker panic and
//! that every drop is counted exactly once.

// Shares and counts are compared as floats; test arithmetic on small numbers.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

mod fixtures;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};

use fixtures::frames::*;
use fixtures::*;
use proptest::prelude::*;
use switchyard::flow::{FlowKeyV4, InsertLimit};
use switchyard::pipeline::{
    Counter, PacketBuf, PipelineWorker, Staged, VecPacket, Verdict, WorkerConfig,
};
use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_table::generation::Generation;

fn worker_with(g: Arc<Generation>, flows: usize, limit: InsertLimit) -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: flows,
        flows_v6: 1024,
        insert_limit: limit,
        ports: port_map(),
        worker: 0,
    });
    w.set_generation(g);
    w
}

/// Runs a frame; returns the verdict and the output bytes.
fn run(w: &mut PipelineWorker, frame: &[u8], now: u32) -> (Verdict, Vec<u8>) {
    let mut p = VecPacket::new(frame);
    let v = w.process(&mut p, 0, now);
    (v, p.data().to_vec())
}

/// The outer IPv4 destination of an encapsulated frame (the backend).
fn outer_dst(out: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(out[30], out[31], out[32], out[33])
}

/// A control plane that keeps backend ids across compiles, as the real one does.
struct Control {
    ids: BackendIds,
    generation: u64,
}

impl Control {
    fn new() -> Self {
        Self {
            ids: BackendIds::new(),
            generation: 0,
        }
    }

    fn compile(&mut self, yaml: &str, state: &BackendState) -> Arc<Generation> {
        let policy = switchyard_control::policy::parse_str(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        self.generation += 1;
        let input = CompileInput {
            policy: &policy,
            generation: self.generation,
            state,
        };
        Arc::new(compile(&input, &mut self.ids).expect("compiles"))
    }
}

const BASE_US_POOL: &str = "      - { address: 10.10.2.1 }
      - { address: 10.10.2.2 }
      - { address: 10.10.2.3, weight: 0 }
";

/// The fixture policy (no per-source limit) with `llama-us`'s backends replaced.
fn with_us_pool(backends: &str) -> String {
    let yaml = Variant::Unlimited.yaml();
    assert!(yaml.contains(BASE_US_POOL));
    yaml.replace(BASE_US_POOL, backends)
}

/// US clients' flows to llama (about 10 % of them canary flows).
fn us_flows(n: u32) -> Vec<(Ipv4Addr, u16)> {
    (0..n)
        .map(|i| {
            (
                Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8),
                40_000 + (i % 1000) as u16,
            )
        })
        .collect()
}

/// Opens every flow on a fresh worker with `base`, switches to `next`, sends a data packet
/// on every flow; returns (backend before, backend after) per flow and the worker.
fn swap(
    base: Arc<Generation>,
    next: Arc<Generation>,
    flows: &[(Ipv4Addr, u16)],
) -> (Vec<(Ipv4Addr, Ipv4Addr)>, PipelineWorker) {
    let mut w = worker_with(base, 16_384, InsertLimit::UNLIMITED);
    let before: Vec<Ipv4Addr> = flows
        .iter()
        .map(|&(c, p)| {
            let (v, out) = run(&mut w, &tcp4_frame(c, p, VIP4, 443, SYN, &[]), NOW);
            assert_eq!(v, Verdict::Forward(1));
            outer_dst(&out)
        })
        .collect();
    w.set_generation(next);
    let after: Vec<Ipv4Addr> = flows
        .iter()
        .map(|&(c, p)| {
            let (v, out) = run(
                &mut w,
                &tcp4_frame(c, p, VIP4, 443, PSH_ACK, b"data"),
                NOW + 10,
            );
            assert_eq!(v, Verdict::Forward(1));
            outer_dst(&out)
        })
        .collect();
    (before.into_iter().zip(after).collect(), w)
}

fn moved(pairs: &[(Ipv4Addr, Ipv4Addr)]) -> usize {
    pairs.iter().filter(|(a, b)| a != b).count()
}

fn on(pairs: &[(Ipv4Addr, Ipv4Addr)], backend: &str) -> usize {
    let b: Ipv4Addr = backend.parse().unwrap();
    pairs.iter().filter(|(a, _)| *a == b).count()
}

#[test]
fn flows_keep_their_backend_when_others_are_added_reweighted_or_drained() {
    let flows = us_flows(3000);
    let mut control = Control::new();
    let state = BackendState::new();
    let base = control.compile(&with_us_pool(BASE_US_POOL), &state);

    let scenarios = [
        (
            "backend added",
            format!("{BASE_US_POOL}      - {{ address: 10.10.2.4 }}\n"),
        ),
        (
            "backend reweighted",
            BASE_US_POOL.replace("10.10.2.1 }", "10.10.2.1, weight: 400 }"),
        ),
        (
            "backend drained (weight 0)",
            BASE_US_POOL.replace("10.10.2.1 }", "10.10.2.1, weight: 0 }"),
        ),
        (
            "drained backend undrained",
            BASE_US_POOL.replace("10.10.2.3, weight: 0 }", "10.10.2.3 }"),
        ),
    ];
    for (what, pool) in scenarios {
        let mut c = Control {
            ids: control.ids.clone(),
            generation: control.generation,
        };
        let next = c.compile(&with_us_pool(&pool), &state);
        let (pairs, w) = swap(Arc::clone(&base), next, &flows);
        assert_eq!(moved(&pairs), 0, "{what}: no established flow moves");
        assert_eq!(w.counters().get(Counter::FlowBackendGone), 0, "{what}");
        assert_eq!(w.counters().get(Counter::FlowBackendUnhealthy), 0, "{what}");
        assert!(on(&pairs, "10.10.2.1") > 500 && on(&pairs, "10.10.2.2") > 500);
    }

    // New flows do see the change: after adding 10.10.2.4 it gets a share of new flows.
    let mut c = Control {
        ids: control.ids.clone(),
        generation: control.generation,
    };
    let next = c.compile(
        &with_us_pool(&format!("{BASE_US_POOL}      - {{ address: 10.10.2.4 }}\n")),
        &state,
    );
    let mut w = worker_with(next, 16_384, InsertLimit::UNLIMITED);
    let fresh = flows
        .iter()
        .filter(|&&(cl, p)| {
            let (_, out) = run(&mut w, &tcp4_frame(cl, p, VIP4, 443, SYN, &[]), NOW);
            outer_dst(&out) == Ipv4Addr::new(10, 10, 2, 4)
        })
        .count();
    assert!(
        fresh > 500,
        "the new backend takes about a third of new flows: {fresh}"
    );
}

#[test]
fn flows_move_only_when_their_backend_is_removed_or_unhealthy() {
    let flows = us_flows(3000);
    let mut control = Control::new();
    let healthy = BackendState::new();
    let base = control.compile(&with_us_pool(BASE_US_POOL), &healthy);

    // Removed.
    let mut c = Control {
        ids: control.ids.clone(),
        generation: control.generation,
    };
    let next = c.compile(
        &with_us_pool(&BASE_US_POOL.replace("      - { address: 10.10.2.2 }\n", "")),
        &healthy,
    );
    let (pairs, w) = swap(Arc::clone(&base), next, &flows);
    let on_removed = on(&pairs, "10.10.2.2");
    assert!(on_removed > 500);
    assert_eq!(
        moved(&pairs),
        on_removed,
        "exactly the removed backend's flows move"
    );
    for (a, b) in &pairs {
        if *a == Ipv4Addr::new(10, 10, 2, 2) {
            assert_eq!(
                *b,
                Ipv4Addr::new(10, 10, 2, 1),
                "to the remaining healthy backend"
            );
        }
    }
    assert_eq!(
        w.counters().get(Counter::FlowBackendGone),
        on_removed as u64
    );

    // Unhealthy.
    let mut down = BackendState::new();
    down.set_health("llama-us", "10.10.2.1".parse().unwrap(), false);
    let mut c = Control {
        ids: control.ids.clone(),
        generation: control.generation,
    };
    let next = c.compile(&with_us_pool(BASE_US_POOL), &down);
    let (pairs, w) = swap(Arc::clone(&base), next, &flows);
    let on_down = on(&pairs, "10.10.2.1");
    assert!(on_down > 500);
    assert_eq!(
        moved(&pairs),
        on_down,
        "exactly the unhealthy backend's flows move"
    );
    assert_eq!(
        w.counters().get(Counter::FlowBackendUnhealthy),
        on_down as u64
    );
    // They stay where they moved, even once the backend is back (re-pointed entries).
    let mut c = Control {
        ids: control.ids.clone(),
        generation: control.generation,
    };
    let back = c.compile(&with_us_pool(BASE_US_POOL), &healthy);
    let mut w = w;
    w.set_generation(back);
    for ((client, port), (_, after)) in flows.iter().zip(&pairs) {
        let (_, out) = run(
            &mut w,
            &tcp4_frame(*client, *port, VIP4, 443, ACK, &[]),
            NOW + 20,
        );
        assert_eq!(outer_dst(&out), *after);
    }
}

#[test]
fn canary_takes_its_share_of_100k_flows() {
    let g = Variant::Unlimited.generation();
    let mut w = worker_with(g, 1 << 18, InsertLimit::UNLIMITED);
    let n = 100_000u32;
    let mut canary = 0u32;
    let mut pkts = Vec::with_capacity(32);
    let mut verdicts = [Verdict::Drop; 32];
    let mut i = 0;
    while i < n {
        pkts.clear();
        for k in i..(i + 32).min(n) {
            // Clients of no region (catch-all route, which takes the canary).
            let x = k.wrapping_mul(2_654_435_761);
            let client = Ipv4Addr::from(0x6440_0000 | (x >> 10));
            pkts.push(VecPacket::new(&tcp4_frame(
                client,
                1024 + (x & 0x3ff) as u16,
                VIP4,
                443,
                SYN,
                &[],
            )));
        }
        let m = pkts.len();
        w.process_burst(&mut pkts, 0, NOW, &mut verdicts[..m]);
        for (p, v) in pkts.iter().zip(&verdicts) {
            assert_eq!(*v, Verdict::Forward(1));
            if outer_dst(p.data()) == Ipv4Addr::new(10, 10, 3, 1) {
                canary += 1;
            }
        }
        i += 32;
    }
    let share = f64::from(canary) / f64::from(n);
    assert!((share - 0.10).abs() < 0.005, "canary share {share}");
    assert_eq!(w.counters().get(Counter::CanarySelected), u64::from(canary));
}

/// A burst staged under one generation and finished after a swap runs against the new one
/// (the run loop finishes first, but `finish` does not trust its caller to).
#[test]
fn a_burst_staged_before_a_swap_is_classified_again() {
    let mut control = Control::new();
    let state = BackendState::new();
    let base = control.compile(&with_us_pool(BASE_US_POOL), &state);
    let moved_port = with_us_pool(BASE_US_POOL).replacen(
        "vip: 203.0.113.10\n    ports: [443]",
        "vip: 203.0.113.10\n    ports: [8443]",
        1,
    );
    let next = control.compile(&moved_port, &state);
    let mut w = worker_with(base, 1024, InsertLimit::UNLIMITED);
    let mut pkts: Vec<VecPacket> = us_flows(8)
        .iter()
        .map(|&(c, p)| VecPacket::new(&tcp4_frame(c, p, VIP4, 443, SYN, &[])))
        .collect();
    let mut staged = Staged::default();
    w.stage(&pkts, 0, &mut staged);
    assert_eq!(staged.len(), 8);
    w.set_generation(next);
    let mut verdicts = [Verdict::Forward(0); 8];
    w.finish(&mut pkts, &staged, NOW, &mut verdicts);
    assert!(verdicts.iter().all(|v| *v == Verdict::Drop), "{verdicts:?}");
    assert_eq!(w.counters().get(Counter::DropNoService), 8);
    assert_eq!(w.counters().get(Counter::ForwardedIpipV4), 0);
}

#[test]
fn no_generation_drops_everything() {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 1024,
        flows_v6: 1024,
        insert_limit: InsertLimit::UNLIMITED,
        ports: port_map(),
        worker: 0,
    });
    let (v, _) = run(&mut w, &tcp4_frame(OTHER, 1, VIP4, 443, SYN, &[]), NOW);
    assert_eq!(v, Verdict::Drop);
    assert_eq!(w.counters().get(Counter::DropNoTable), 1);
    let mut pkts = vec![VecPacket::new(&[0u8; 3]); 40];
    let mut verdicts = vec![Verdict::Forward(0); 40];
    w.process_burst(&mut pkts, 0, NOW, &mut verdicts);
    assert!(verdicts.iter().all(|v| *v == Verdict::Drop));
    assert_eq!(w.counters().get(Counter::DropNoTable), 41);
}

#[test]
fn flow_table_counters_show_hits_misses_non_syn_misses_and_throttling() {
    let g = Variant::Unlimited.generation();
    let mut w = worker_with(Arc::clone(&g), 1024, InsertLimit::UNLIMITED);
    run(&mut w, &tcp4_frame(OTHER, 1, RR, 80, SYN, &[]), NOW);
    run(&mut w, &tcp4_frame(OTHER, 1, RR, 80, ACK, &[]), NOW);
    run(&mut w, &tcp4_frame(OTHER, 2, RR, 80, ACK, &[]), NOW);
    run(&mut w, &tcp4_frame(OTHER, 3, RR, 80, RST, &[]), NOW);
    let c = w.counters();
    assert_eq!(c.get(Counter::FlowHits), 1);
    assert_eq!(c.get(Counter::FlowMisses), 3);
    assert_eq!(c.get(Counter::FlowNonSynMiss), 2, "the ACK and the RST");
    assert_eq!(
        c.get(Counter::FlowInserts),
        2,
        "the SYN and the lost ACK's flow"
    );
    assert_eq!(c.get(Counter::ForwardedWithoutEntry), 1, "the RST");
    assert_eq!(c.get(Counter::ForwardedIpipV4), 4);
    assert_eq!(w.flow_count(), (2, 0));

    // Insert cap of one per second: the second new flow is forwarded without an entry.
    let mut w = worker_with(
        g,
        1024,
        InsertLimit {
            per_second: 1,
            burst: 1,
        },
    );
    assert_eq!(
        run(&mut w, &tcp4_frame(OTHER, 1, DNS, 53, SYN, &[]), NOW).0,
        Verdict::Drop,
        "TCP to a UDP service"
    );
    let (v1, _) = run(&mut w, &udp4_frame(OTHER, 1, DNS, 53, b"a"), NOW);
    let (v2, _) = run(&mut w, &udp4_frame(OTHER, 2, DNS, 53, b"b"), NOW);
    assert_eq!((v1, v2), (Verdict::Forward(1), Verdict::Forward(1)));
    assert_eq!(w.counters().get(Counter::FlowInsertThrottled), 1);
    assert_eq!(w.flow_count(), (1, 0));
}

#[test]
fn least_conn_counts_follow_closes_and_expiry() {
    let g = Variant::Unlimited.generation();
    let id_of = |addr: [u8; 4]| {
        g.backends
            .iter()
            .find(|b| b.address[..4] == addr)
            .map(|b| b.id)
            .unwrap()
    };
    let (a, b) = (id_of([10, 10, 7, 1]), id_of([10, 10, 7, 2]));
    let mut w = worker_with(Arc::clone(&g), 4096, InsertLimit::UNLIMITED);
    let lc = |p: u16, flags: u8| tcp4_frame(OTHER, p, LC, 80, flags, &[]);
    run(&mut w, &lc(1, SYN), NOW);
    run(&mut w, &lc(2, SYN), NOW);
    run(&mut w, &lc(3, SYN), NOW);
    assert_eq!((w.backend_flows(a), w.backend_flows(b)), (2, 1));
    // A close releases at once; the entry lingers in its closing timeout.
    run(&mut w, &lc(1, FIN_ACK), NOW + 1);
    assert_eq!((w.backend_flows(a), w.backend_flows(b)), (1, 1));
    // Handshakes expire after 5 s; the sweep reclaims them and releases their counts.
    for _ in 0..1000 {
        w.housekeeping(NOW + 60_000);
    }
    assert_eq!((w.backend_flows(a), w.backend_flows(b)), (0, 0));
    assert_eq!(w.flow_count(), (0, 0));
    assert!(w.counters().get(Counter::FlowExpired) >= 3);
    // Flows that expire on lookup release too.
    run(&mut w, &lc(4, SYN), NOW + 70_000);
    assert_eq!(w.backend_flows(a), 1);
    run(&mut w, &lc(4, ACK), NOW + 80_000); // expired handshake: a new flow
    assert_eq!(w.backend_flows(a) + w.backend_flows(b), 1);
}

#[test]
fn icmp_budget_refills_and_is_shared_by_workers() {
    let g = Variant::Ipip.generation();
    assert_eq!(g.config.icmp_rate, 5);
    let echo = |w: &mut PipelineWorker, now| {
        let msg = icmp(&switchyard::wire::IcmpRepr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"x",
        });
        let f = frame(&L2::inbound(), IPV4, &ipv4(&V4::new(OTHER, OWN4, 1), &msg));
        run(w, &f, now).0
    };
    let mut w = worker_with(Arc::clone(&g), 1024, InsertLimit::UNLIMITED);
    for _ in 0..5 {
        assert_eq!(echo(&mut w, NOW), Verdict::Forward(0));
    }
    assert_eq!(echo(&mut w, NOW), Verdict::Drop);
    assert_eq!(echo(&mut w, NOW + 199), Verdict::Drop);
    assert_eq!(
        echo(&mut w, NOW + 200),
        Verdict::Forward(0),
        "5/s: one per 200 ms"
    );
    // Five workers share 5/s: one each, burst one.
    let mut w = worker_with(g, 1024, InsertLimit::UNLIMITED);
    w.set_worker_count(5);
    assert_eq!(echo(&mut w, NOW), Verdict::Forward(0));
    assert_eq!(echo(&mut w, NOW), Verdict::Drop);
    assert_eq!(echo(&mut w, NOW + 1000), Verdict::Forward(0));
}

/// A packet buffer with no headroom and no tailroom.
struct Tight(Vec<u8>);

impl PacketBuf for Tight {
    fn data(&self) -> &[u8] {
        &self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn prepend(&mut self, _: usize) -> bool {
        false
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.0.len() {
            return false;
        }
        self.0.drain(..n);
        true
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
    fn append(&mut self, _: usize) -> bool {
        false
    }
}

#[test]
fn a_buffer_without_room_is_a_counted_drop() {
    let mut w = worker_with(Variant::Ipip.generation(), 1024, InsertLimit::UNLIMITED);
    let mut p = Tight(tcp4_frame(OTHER, 1, DNS, 53, SYN, &[]));
    let _ = w.process(&mut p, 0, NOW);
    let mut p = Tight(udp4_frame(OTHER, 1, DNS, 53, b"q"));
    assert_eq!(w.process(&mut p, 0, NOW), Verdict::Drop);
    assert_eq!(w.counters().get(Counter::DropNoBufferRoom), 1);
    // A solicitation without options needs 8 more bytes for the advertisement's option.
    let (group, mac) = {
        let o = OWN6.octets();
        (
            std::net::Ipv6Addr::new(
                0xff02,
                0,
                0,
                0,
                0,
                1,
                0xff00 | u16::from(o[13]),
                u16::from_be_bytes([o[14], o[15]]),
            ),
            [0x33, 0x33, 0xff, o[13], o[14], o[15]],
        )
    };
    let ns = icmpv6(
        ON_LINK6,
        group,
        &switchyard::wire::Icmpv6Repr::NeighborSolicit {
            target_addr: OWN6,
            source_lladdr: None,
        },
    );
    let mut h = V6::new(ON_LINK6, group, 58);
    h.hop_limit = 255;
    let f = frame(&L2::inbound().to(mac).from(HOST_MAC), IPV6, &ipv6(&h, &ns));
    let mut p = Tight(f.clone());
    assert_eq!(w.process(&mut p, 0, NOW), Verdict::Drop);
    assert_eq!(w.counters().get(Counter::DropNoBufferRoom), 2);
    // With room, the same solicitation is answered.
    let (v, out) = run(&mut w, &f, NOW);
    assert_eq!(v, Verdict::Forward(0));
    assert_eq!(out.len(), 14 + 40 + 32);
}

#[test]
fn flow_lookup_helpers_report_the_pinned_backend() {
    let g = Variant::Ipip.generation();
    let mut w = worker_with(Arc::clone(&g), 1024, InsertLimit::UNLIMITED);
    run(&mut w, &tcp4_frame(OTHER, 9, RR, 80, SYN, &[]), NOW);
    let key = FlowKeyV4::new(OTHER, RR, 9, 80, 6);
    let id = w.flow_backend_v4(&key, NOW).unwrap();
    let index = g.backend_by_id[id as usize] - 1;
    assert_eq!(g.backends[index as usize].address[..4], [10, 10, 6, 1]);
    assert_eq!(w.kernel_port(), Some(2));
    assert!(w.flow_memory_bytes() > 0);
}

// ---- property tests ----

fn fixture_inputs() -> &'static [(Vec<u8>, u16, Variant)] {
    static INPUTS: OnceLock<Vec<(Vec<u8>, u16, Variant)>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        fixtures()
            .into_iter()
            .map(|f| (f.input, f.rx_port, f.variant))
            .collect()
    })
}

fn shared_worker(variant: Variant) -> PipelineWorker {
    worker_with(variant.generation(), 1024, InsertLimit::UNLIMITED)
}

/// Runs `frame` and checks the accounting invariant: a dropped packet moved exactly one drop
/// counter, any other verdict none, and forwarding only goes to a real port.
fn run_checked(w: &mut PipelineWorker, frame: &[u8], port: u16) -> Result<(), TestCaseError> {
    let before = w.counters().drops();
    let mut p = VecPacket::new(frame);
    let v = w.process(&mut p, port, NOW);
    let after = w.counters().drops();
    match v {
        Verdict::Drop => prop_assert_eq!(after - before, 1),
        Verdict::Forward(out) => {
            prop_assert_eq!(after, before);
            prop_assert!(out < 3);
            prop_assert!(p.data().len() >= 14);
        }
        Verdict::Kernel => prop_assert_eq!(after, before),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), port in 0u16..5) {
        let mut w = shared_worker(Variant::Ipip);
        run_checked(&mut w, &bytes, port)?;
    }

    #[test]
    fn random_headers_after_a_valid_ethernet_header_never_panic(
        ethertype in prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8]),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut w = shared_worker(Variant::Gue);
        let f = frame(&L2::inbound(), ethertype, &body);
        run_checked(&mut w, &f, 0)?;
    }

    #[test]
    fn mutated_fixture_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        extra in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let inputs = fixture_inputs();
        let (input, port, variant) = &inputs[pick.index(inputs.len())];
        let mut f = input.clone();
        if f.is_empty() {
            return Ok(());
        }
        for (at, x) in &flips {
            let i = at.index(f.len());
            f[i] ^= x;
        }
        if let Some(cut) = cut {
            f.truncate(cut.index(f.len() + 1));
        }
        f.extend_from_slice(&extra);
        let mut w = shared_worker(*variant);
        run_checked(&mut w, &f, *port)?;
    }
}

/// Every fixture input with every byte position flipped once, through one long-lived worker
/// per variant (state builds up): no panic, every drop counted once.
#[test]
fn every_single_byte_flip_of_every_fixture_is_handled() {
    let mut workers: HashMap<Variant, PipelineWorker> = HashMap::new();
    let mut runs = 0usize;
    for (input, port, variant) in fixture_inputs() {
        let w = workers
            .entry(*variant)
            .or_insert_with(|| shared_worker(*variant));
        // Headers matter most: every byte of the first 96, then a sparse pass.
        for i in (0..input.len().min(96)).chain((96..input.len()).step_by(61)) {
            let mut f = input.clone();
            f[i] ^= 0xa5;
            run_checked(w, &f, *port).unwrap_or_else(|e| panic!("{variant:?} byte {i}: {e}"));
            runs += 1;
        }
    }
    assert!(runs > 10_000, "{runs}");
}

/// A packet that is dropped leaves no state: with the gateway not resolved the SYN is dropped
/// before the connection table is touched (it used to insert the flow first).
#[test]
fn a_dropped_packet_leaves_no_flow_entry() {
    let mut w = worker_with(
        Variant::NoGatewayMac.generation(),
        4096,
        InsertLimit::default(),
    );
    for sport in 40_000..40_010 {
        let (v, _) = run(&mut w, &tcp4_frame(OTHER, sport, VIP4, 443, SYN, &[]), 1);
        assert_eq!(v, Verdict::Drop);
    }
    assert_eq!(w.counters().get(Counter::DropGatewayUnresolved), 10);
    assert_eq!(w.flow_count(), (0, 0), "no flow entry for a dropped packet");
    assert_eq!(w.counters().get(Counter::FlowInserts), 0);
}
