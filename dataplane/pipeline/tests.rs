//! Unit tests of the pipeline's internals on small hand-built generations. The end-to-end
//! behaviour (fixtures from compiled policies) is in `tests/pipeline_*.rs`.

use std::net::Ipv4Addr;

use switchyard_table::builder::{BackendSpec, GenerationBuilder};
use switchyard_table::generation::{Generation, Scheduler, NONE, PROTO_TCP};

use super::classify::{martian_v4, martian_v6, solicited_node};
use super::counters::{Counter, Counters};
use super::sched::{live_backend, schedule, NewFlow, SchedState, SLOT_COUNTED};
use crate::flow::FlowValue;

/// One service with the given routes `(region, pools, canary pool, canary per million)` over
/// pools of `(scheduler, [(weight, healthy)])`, Maglev tables of 7 slots filled round robin
/// with the healthy backends; backend `i` is 10.0.0.`i + 1`.
fn generation(
    routes: &[(u32, &[u32], u32, u32)],
    pools: &[(Scheduler, &[(u32, bool)])],
) -> Generation {
    let mut b = GenerationBuilder::new().service("", PROTO_TCP, &[]);
    for &(region, list, canary_pool, canary_per_million) in routes {
        b = b
            .route(region, list)
            .canary(canary_pool, canary_per_million);
    }
    let mut next = 0u8;
    for &(scheduler, backends) in pools {
        let specs: Vec<BackendSpec> = backends
            .iter()
            .map(|&(weight, healthy)| {
                next += 1;
                BackendSpec::new(Ipv4Addr::new(10, 0, 0, next))
                    .weight(weight)
                    .healthy(healthy)
            })
            .collect();
        b = b.pool("", scheduler, &specs);
    }
    b.build()
}

fn flow(hash: u32, region: u32) -> NewFlow {
    NewFlow {
        service: 0,
        region,
        hash,
        src_hash: hash.rotate_left(7),
        consistent: false,
    }
}

fn picks(g: &Generation, st: &mut SchedState, n: u32) -> Vec<usize> {
    let mut c = Counters::default();
    (0..n)
        .map(|h| schedule(g, st, &mut c, &flow(h, NONE)).unwrap())
        .collect()
}

#[test]
fn smooth_weighted_round_robin_is_exact_and_interleaved() {
    let g = generation(
        &[(NONE, &[0], NONE, 0)],
        &[(Scheduler::Weighted, &[(5, true), (1, true), (1, true)])],
    );
    let mut st = SchedState::new(0);
    st.reset_for(&g);
    // nginx's smooth sequence for weights 5, 1, 1.
    assert_eq!(picks(&g, &mut st, 7), vec![0, 0, 1, 0, 2, 0, 0]);
    let mut counts = [0; 3];
    for b in picks(&g, &mut st, 700) {
        counts[b] += 1;
    }
    assert_eq!(counts, [500, 100, 100]);
}

#[test]
fn round_robin_starts_at_the_worker_index_and_skips_unhealthy() {
    let g = generation(
        &[(NONE, &[0], NONE, 0)],
        &[(
            Scheduler::RoundRobin,
            &[(1, true), (1, false), (1, true), (0, true)],
        )],
    );
    let mut st = SchedState::new(1);
    st.reset_for(&g);
    // Healthy with weight: backends 0 and 2; worker 1 starts at the second.
    assert_eq!(picks(&g, &mut st, 4), vec![2, 0, 2, 0]);
}

#[test]
fn least_conn_follows_live_flow_counts() {
    let g = generation(
        &[(NONE, &[0], NONE, 0)],
        &[(Scheduler::LeastConn, &[(1, true), (1, true), (1, true)])],
    );
    let mut st = SchedState::new(0);
    st.reset_for(&g);
    let mut c = Counters::default();
    let mut pick = |st: &mut SchedState| schedule(&g, st, &mut c, &flow(0, NONE)).unwrap();
    for expected in [0, 1, 2, 0] {
        let b = pick(&mut st);
        assert_eq!(b, expected);
        st.acquire(u32::try_from(b).unwrap() + 1, SLOT_COUNTED);
    }
    // Backend 0 has two flows; releasing both of backend 1's... it has one.
    st.release(FlowValue {
        backend: 2,
        slot: SLOT_COUNTED,
    });
    assert_eq!(pick(&mut st), 1);
    // An uncounted flow (closed) releases nothing.
    st.release(FlowValue {
        backend: 1,
        slot: 0,
    });
    assert_eq!(st.live_flows(1), 2);
    // Counts survive a new generation (keyed by stable id).
    st.reset_for(&g);
    assert_eq!(st.live_flows(1), 2);
}

#[test]
fn service_flow_counts_follow_their_row_incarnation() {
    use super::sched::service_tag;
    let mut st = SchedState::new(0);
    st.set_service_row(3, 7);
    let tag = service_tag(3, 7) | SLOT_COUNTED;
    for backend in [1, 2, 2] {
        st.acquire(backend, tag);
    }
    assert_eq!(st.service_flows(3), 3);
    st.release(FlowValue {
        backend: 2,
        slot: tag,
    });
    assert_eq!(st.service_flows(3), 2);
    // No service in the slot, or one row past the slot's bits: the backend alone.
    st.acquire(1, SLOT_COUNTED);
    assert_eq!(st.service_flows(3), 2);
    assert_eq!(service_tag(2047, 1), 0);
    // Another service takes row 3: it counts from zero, and a late release of a flow of the
    // service that left uncounts nothing of it.
    st.set_service_row(3, 8);
    assert_eq!(st.service_flows(3), 0);
    st.acquire(1, service_tag(3, 8) | SLOT_COUNTED);
    st.release(FlowValue {
        backend: 1,
        slot: tag,
    });
    assert_eq!(st.service_flows(3), 1);
    // The same incarnation again (a generation swap that kept the service): counts kept.
    st.set_service_row(3, 8);
    assert_eq!(st.service_flows(3), 1);
}

#[test]
fn maglev_reads_the_slot_and_never_returns_an_unhealthy_backend() {
    let mut g = generation(
        &[(NONE, &[0], NONE, 0)],
        &[(Scheduler::Maglev, &[(1, true), (1, true), (1, true)])],
    );
    let mut st = SchedState::new(0);
    st.reset_for(&g);
    let mut c = Counters::default();
    for h in 0..7u32 {
        let slot = g.maglev[h as usize];
        assert_eq!(
            schedule(&g, &mut st, &mut c, &flow(h, NONE)),
            Ok(slot as usize - 1)
        );
    }
    // A stale table naming backend 1, now unhealthy: the healthy list takes over.
    g.backends[1].flags = 0;
    g.healthy_backends = vec![0, 2];
    g.pools[0].healthy_count = 2;
    for h in 0..7u32 {
        let b = schedule(&g, &mut st, &mut c, &flow(h, NONE)).unwrap();
        assert_ne!(b, 1);
    }
    // An empty slot means no backend.
    g.maglev[3] = 0;
    assert_eq!(
        schedule(&g, &mut st, &mut c, &flow(3, NONE)),
        Err(Counter::DropNoHealthyBackend)
    );
}

#[test]
fn routes_by_region_fall_back_and_split_canaries() {
    // Route 0: region 0 → pool 0 then 1; route 1 (catch-all) → pool 1, canary pool 2 at 25 %.
    let g = generation(
        &[(0, &[0, 1], NONE, 0), (NONE, &[1], 2, 250_000)],
        &[
            (Scheduler::Maglev, &[(1, false)]),
            (Scheduler::Maglev, &[(1, true)]),
            (Scheduler::Maglev, &[(1, true)]),
        ],
    );
    let mut st = SchedState::new(0);
    st.reset_for(&g);
    let mut c = Counters::default();
    // Region 0: pool 0 has no healthy backend → fallback pool 1 (backend 1).
    assert_eq!(schedule(&g, &mut st, &mut c, &flow(7, 0)), Ok(1));
    assert_eq!(c.get(Counter::PoolFallback), 1);
    // Catch-all: hash % 1e6 below 250 000 → canary (backend 2).
    assert_eq!(schedule(&g, &mut st, &mut c, &flow(249_999, NONE)), Ok(2));
    assert_eq!(schedule(&g, &mut st, &mut c, &flow(250_000, NONE)), Ok(1));
    assert_eq!(schedule(&g, &mut st, &mut c, &flow(1_249_999, 5)), Ok(2));
    assert_eq!(c.get(Counter::CanarySelected), 2);

    // Only a region route: other clients have none.
    let g = generation(&[(0, &[0], NONE, 0)], &[(Scheduler::Maglev, &[(1, true)])]);
    st.reset_for(&g);
    assert_eq!(
        schedule(&g, &mut st, &mut c, &flow(1, 1)),
        Err(Counter::DropNoRoute)
    );
    // A canary with no healthy backend does not take flows.
    let g = generation(
        &[(NONE, &[0], 1, 1_000_000)],
        &[
            (Scheduler::Maglev, &[(1, true)]),
            (Scheduler::Maglev, &[(1, false)]),
        ],
    );
    st.reset_for(&g);
    assert_eq!(schedule(&g, &mut st, &mut c, &flow(1, NONE)), Ok(0));
}

#[test]
fn flows_see_what_became_of_their_backend() {
    let mut g = generation(
        &[(NONE, &[0], NONE, 0)],
        &[(Scheduler::Maglev, &[(1, true), (0, true), (1, false)])],
    );
    assert_eq!(live_backend(&g, 1), Ok(0));
    assert_eq!(
        live_backend(&g, 2),
        Ok(1),
        "drained backends keep their flows"
    );
    assert_eq!(live_backend(&g, 3), Err(Counter::FlowBackendUnhealthy));
    assert_eq!(live_backend(&g, 4), Err(Counter::FlowBackendGone));
    assert_eq!(live_backend(&g, 0), Err(Counter::FlowBackendGone));
    g.backend_by_id[1] = 0;
    assert_eq!(live_backend(&g, 1), Err(Counter::FlowBackendGone));
}

#[test]
fn broken_references_are_drops_not_panics() {
    let mut g = generation(
        &[(NONE, &[0], NONE, 0)],
        &[(Scheduler::Maglev, &[(1, true)])],
    );
    let mut st = SchedState::new(0);
    let mut c = Counters::default();
    st.reset_for(&g);
    let mut bad = flow(1, NONE);
    bad.service = 9;
    assert_eq!(
        schedule(&g, &mut st, &mut c, &bad),
        Err(Counter::DropBadTableReference)
    );
    g.routes[0].pools[0] = 42;
    assert_eq!(
        schedule(&g, &mut st, &mut c, &flow(1, NONE)),
        Err(Counter::DropBadTableReference)
    );
    g.routes[0].pools[0] = 0;
    g.pools[0].scheduler = 99;
    assert_eq!(
        schedule(&g, &mut st, &mut c, &flow(1, NONE)),
        Err(Counter::DropBadTableReference)
    );
    g.pools[0].scheduler = Scheduler::RoundRobin as u8;
    st = SchedState::new(0); // not reset for g: no cursor for the pool
    assert_eq!(
        schedule(&g, &mut st, &mut c, &flow(1, NONE)),
        Err(Counter::DropBadTableReference)
    );
}

#[test]
fn martians_and_solicited_nodes() {
    for a in [
        "0.1.2.3",
        "127.0.0.1",
        "224.0.0.1",
        "239.1.1.1",
        "240.0.0.1",
        "255.255.255.255",
    ] {
        let a: std::net::Ipv4Addr = a.parse().unwrap();
        assert!(martian_v4(a.to_bits()), "{a}");
    }
    for a in [
        "1.0.0.1",
        "10.0.0.1",
        "126.255.255.255",
        "223.255.255.255",
        "100.64.0.1",
    ] {
        let a: std::net::Ipv4Addr = a.parse().unwrap();
        assert!(!martian_v4(a.to_bits()), "{a}");
    }
    for a in ["::", "::1", "ff02::1", "ff0e::1234"] {
        let a: std::net::Ipv6Addr = a.parse().unwrap();
        assert!(martian_v6(a.to_bits()), "{a}");
    }
    for a in ["::2", "fe80::1", "2001:db8::1", "fe00::1"] {
        let a: std::net::Ipv6Addr = a.parse().unwrap();
        assert!(!martian_v6(a.to_bits()), "{a}");
    }
    let a: std::net::Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
    let group: std::net::Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
    assert_eq!(solicited_node(a.to_bits()), group.to_bits());
}

/// Bounded load on generations compiled by the control plane's compiler, as the appliance
/// gets them: a full backend keeps its Maglev slots, so these compare each flow's backend with
/// and without the full bit over the very same tables.
mod bounded_load {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
    use switchyard_table::generation::{Generation, Scheduler, BACKEND_FULL, BACKEND_HEALTHY};

    use super::{flow, generation};
    use crate::flow::{fold32, hash_words, InsertLimit};
    use crate::pipeline::counters::{Counter, Counters};
    use crate::pipeline::sched::{schedule, NewFlow, SchedState};
    use crate::pipeline::{
        ip_hash_v4, PacketBuf, PipelineWorker, PortMap, VecPacket, Verdict, WorkerConfig,
    };
    use crate::wire::{Ipv4Packet, TcpPacket};

    /// `llm` (service 0): Maglev over four backends, the last with double weight; `sticky`
    /// (service 1): IP hash over three.
    const POLICY: &str = "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
    gateway: { ipv4: 198.51.100.254, mac: 02:00:00:00:00:fe }
encap: ipip
services:
  - { name: llm, vip: 203.0.113.10, ports: [443], routes: [{ pool: gpus }] }
  - { name: sticky, vip: 203.0.113.20, ports: [443], routes: [{ pool: sticky }] }
pools:
  gpus:
    backends:
      - { address: 198.51.100.11 }
      - { address: 198.51.100.12 }
      - { address: 198.51.100.13 }
      - { address: 198.51.100.14, weight: 200 }
  sticky:
    scheduler: ip_hash
    backends:
      - { address: 198.51.100.21 }
      - { address: 198.51.100.22 }
      - { address: 198.51.100.23 }
";
    const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    /// The policy compiled with these `(pool, address)` backends full.
    fn compiled(full: &[(&str, &str)]) -> Generation {
        let policy = switchyard_control::policy::parse_str(POLICY, "bounded.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut state = BackendState::new();
        for (pool, address) in full {
            state.set_full(pool, address.parse().unwrap(), true);
        }
        let input = CompileInput {
            policy: &policy,
            generation: 1,
            state: &state,
        };
        compile(&input, &mut BackendIds::new()).expect("compiles")
    }

    fn index_of(g: &Generation, address: &str) -> usize {
        let a: Ipv4Addr = address.parse().unwrap();
        g.backends
            .iter()
            .position(|b| b.address[..4] == a.octets())
            .unwrap()
    }

    /// Client `i` of 100.`net`.0.0/16.
    fn client(net: u8, i: u16) -> Ipv4Addr {
        let [hi, lo] = i.to_be_bytes();
        Ipv4Addr::new(100, net, hi, lo)
    }

    /// Well-spread flow hashes.
    fn hash(i: u32) -> u32 {
        fold32(hash_words(0x5eed, &[u64::from(i)]))
    }

    fn llm(h: u32) -> NewFlow {
        flow(h, switchyard_table::generation::NONE)
    }

    /// Schedules `f` on `g` with a fresh scheduler state.
    fn pick(g: &Generation, c: &mut Counters, f: &NewFlow) -> usize {
        let mut st = SchedState::new(0);
        st.reset_for(g);
        schedule(g, &mut st, c, f).unwrap()
    }

    #[allow(clippy::cast_precision_loss)]
    fn share(part: usize, whole: usize) -> f64 {
        part as f64 / whole as f64
    }

    #[test]
    fn bounded_load_spills_to_next_preferred() {
        let plain = compiled(&[]);
        let g = compiled(&[("gpus", "198.51.100.11")]);
        assert_eq!(g.maglev, plain.maglev, "a full backend keeps its slots");
        assert_eq!(g.healthy_backends, plain.healthy_backends);
        let full = index_of(&g, "198.51.100.11");
        assert_eq!(g.backends[full].flags, BACKEND_HEALTHY | BACKEND_FULL);

        let n = 30_000;
        let (mut c0, mut c) = (Counters::default(), Counters::default());
        let mut spilled = [0usize; 4];
        for i in 0..n {
            let f = llm(hash(i));
            let before = pick(&plain, &mut c0, &f);
            let after = pick(&g, &mut c, &f);
            assert_ne!(after, full, "flow {i}: the full backend takes no new flow");
            if before == full {
                spilled[after] += 1;
                assert_eq!(
                    pick(&g, &mut c, &f),
                    after,
                    "the walk is a function of the key"
                );
            } else {
                assert_eq!(after, before, "flow {i}: its backend is not full, it stays");
            }
        }
        let went_past: usize = spilled.iter().sum();
        assert!(
            went_past > 5000,
            "about a fifth of the flows prefer it: {went_past}"
        );
        assert_eq!(c.get(Counter::BoundedLoadSpill), 2 * went_past as u64);
        assert_eq!(c.get(Counter::BoundedLoadAllFull), 0);
        assert_eq!(c0.get(Counter::BoundedLoadSpill), 0);
        // Weights 100 : 100 : 200 among the others: their share of what the full one turns away.
        for (b, want) in [(1, 0.25), (2, 0.25), (3, 0.5)] {
            let got = share(spilled[b], went_past);
            assert!(
                (got - want).abs() < 0.03,
                "backend {b}: {got:.3}, want {want}"
            );
        }
    }

    /// A TCP segment from `client:sport` to the `llm` VIP, as it arrives on the uplink.
    fn segment(client: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[..6].copy_from_slice(&UPLINK_MAC);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&client.octets());
        f[30..34].copy_from_slice(&VIP.octets());
        Ipv4Packet::new_unchecked(&mut f[14..34]).fill_checksum();
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&443u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f[48..50].copy_from_slice(&64_240u16.to_be_bytes());
        TcpPacket::new_unchecked(&mut f[34..]).fill_checksum_v4(&client, &VIP);
        f
    }

    /// The backend (outer destination) a segment was encapsulated to.
    fn backend_of(w: &mut PipelineWorker, frame: &[u8]) -> Ipv4Addr {
        let mut p = VecPacket::new(frame);
        assert_eq!(w.process(&mut p, 0, 1_000), Verdict::Forward(0));
        let out = p.data();
        Ipv4Addr::new(out[30], out[31], out[32], out[33])
    }

    #[test]
    fn bounded_load_established_flows_stay() {
        let mut w = PipelineWorker::new(WorkerConfig {
            flows_v4: 16_384,
            flows_v6: 1024,
            insert_limit: InsertLimit::UNLIMITED,
            ports: PortMap {
                interface: vec![Some("uplink".into())],
                backend: None,
                kernel: None,
            },
            worker: 0,
        });
        w.set_generation(Arc::new(compiled(&[])));
        let clients: Vec<(Ipv4Addr, u16)> =
            (0..4000u16).map(|i| (client(64, i), 30_000 + i)).collect();
        let before: Vec<Ipv4Addr> = clients
            .iter()
            .map(|&(c, p)| backend_of(&mut w, &segment(c, p, 0x02)))
            .collect();
        let full: Ipv4Addr = "198.51.100.11".parse().unwrap();
        let on_full = before.iter().filter(|&&b| b == full).count();
        assert!(on_full > 500, "the backend had its share before: {on_full}");

        // The backend fills up: a generation swap sets its full bit.
        w.set_generation(Arc::new(compiled(&[("gpus", "198.51.100.11")])));
        for (&(c, p), &b) in clients.iter().zip(&before) {
            assert_eq!(
                backend_of(&mut w, &segment(c, p, 0x10)),
                b,
                "{c}:{p} keeps its backend"
            );
        }
        let counters = w.counters();
        assert_eq!(counters.get(Counter::FlowBackendGone), 0);
        assert_eq!(counters.get(Counter::FlowBackendUnhealthy), 0);
        assert_eq!(
            counters.get(Counter::BoundedLoadSpill),
            0,
            "no established flow moved"
        );
        // New flows do not go to it.
        for i in 0..2000u16 {
            let c = client(65, i);
            assert_ne!(backend_of(&mut w, &segment(c, 40_000 + i, 0x02)), full);
        }
        assert!(w.counters().get(Counter::BoundedLoadSpill) > 250);
    }

    #[test]
    fn bounded_load_all_full_uses_preferred() {
        let plain = compiled(&[]);
        let all = ["11", "12", "13", "14"].map(|x| format!("198.51.100.{x}"));
        let all: Vec<(&str, &str)> = all.iter().map(|a| ("gpus", a.as_str())).collect();
        let g = compiled(&all);
        let mut c = Counters::default();
        let n = 5000;
        for i in 0..n {
            let f = llm(hash(i));
            assert_eq!(
                pick(&g, &mut c, &f),
                pick(&plain, &mut Counters::default(), &f),
                "flow {i}: a saturated pool still serves, on the preferred backend"
            );
        }
        assert_eq!(c.get(Counter::BoundedLoadAllFull), u64::from(n));
        assert_eq!(c.get(Counter::BoundedLoadSpill), 0);
    }

    /// The walk is bounded: when its probes meet only full backends, the healthy list is
    /// scanned from `hash % n` for one that is not full.
    #[test]
    fn bounded_load_walk_ends_in_the_healthy_list() {
        let mut g = generation(
            &[(
                switchyard_table::generation::NONE,
                &[0],
                switchyard_table::generation::NONE,
                0,
            )],
            &[(Scheduler::Maglev, &[(1, true), (1, true), (1, true)])],
        );
        // Every slot names backend 0; 0 and 1 are full; 2 has no slot at all.
        g.maglev.fill(1);
        g.backends[0].flags |= BACKEND_FULL;
        g.backends[1].flags |= BACKEND_FULL;
        let mut c = Counters::default();
        for h in 0..100 {
            assert_eq!(pick(&g, &mut c, &llm(h)), 2);
        }
        assert_eq!(c.get(Counter::BoundedLoadSpill), 100);
        g.backends[2].flags |= BACKEND_FULL;
        for h in 0..100 {
            assert_eq!(pick(&g, &mut c, &llm(h)), 0, "all full: the slot's backend");
        }
        assert_eq!(c.get(Counter::BoundedLoadAllFull), 100);
    }

    #[test]
    fn bounded_load_ip_hash_keeps_a_client_on_one_backend() {
        let plain = compiled(&[]);
        let g = compiled(&[("sticky", "198.51.100.22")]);
        let full = index_of(&g, "198.51.100.22");
        let mut c = Counters::default();
        let (mut moved, mut moved_to) = (0usize, [0usize; 3]);
        let clients = 3000u16;
        for i in 0..clients {
            let client = client(64, i);
            let src_hash = ip_hash_v4(client);
            let of = |g: &Generation, c: &mut Counters, k: u32| {
                let f = NewFlow {
                    service: 1,
                    region: switchyard_table::generation::NONE,
                    hash: hash((u32::from(i) << 8) | k),
                    src_hash,
                    consistent: false,
                };
                pick(g, c, &f)
            };
            let before = of(&plain, &mut Counters::default(), 0);
            let after = of(&g, &mut c, 0);
            for k in 1..5 {
                assert_eq!(of(&plain, &mut Counters::default(), k), before);
                assert_eq!(
                    of(&g, &mut c, k),
                    after,
                    "{client}: every flow on one backend"
                );
            }
            if before == full {
                assert_ne!(after, full);
                moved += 1;
                moved_to[after - index_of(&g, "198.51.100.21")] += 1;
            } else {
                assert_eq!(after, before, "{client}: its backend is not full, it stays");
            }
        }
        assert!(
            moved > 800,
            "about a third of the clients preferred it: {moved}"
        );
        assert_eq!(c.get(Counter::BoundedLoadSpill), 5 * moved as u64);
        for b in [0, 2] {
            let got = share(moved_to[b], moved);
            assert!(
                (got - 0.5).abs() < 0.06,
                "{got:.3} of the moved clients on {b}"
            );
        }
    }
}
