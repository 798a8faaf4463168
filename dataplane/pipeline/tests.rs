//! Unit tests of the pipeline's internals on small hand-built generations. The end-to-end
//! behaviour (fixtures from compiled policies) is in `tests/pipeline_*.rs`.

use switchyard_table::generation::{
    Backend, Generation, Pool, Route, Scheduler, Service, BACKEND_HEALTHY, FAMILY_V4, NONE,
};

use super::classify::{martian_v4, martian_v6, solicited_node};
use super::counters::{Counter, Counters};
use super::sched::{live_backend, schedule, NewFlow, SchedState, SLOT_COUNTED};
use crate::flow::FlowValue;

/// One service with the given routes `(region, pools, canary pool, canary per million)` over
/// pools of `(scheduler, [(weight, healthy)])`, Maglev tables of 7 slots filled round robin
/// with the healthy backends.
fn generation(
    routes: &[(u32, &[u32], u32, u32)],
    pools: &[(Scheduler, &[(u32, bool)])],
) -> Generation {
    let mut g = Generation::default();
    g.services.push(Service {
        name: [0; switchyard_table::generation::NAME_LEN],
        first_route: 0,
        route_count: u32::try_from(routes.len()).unwrap(),
        protocol: 6,
        _pad: [0; 3],
    });
    for &(region, list, canary_pool, canary_per_million) in routes {
        let mut p = [0u32; 4];
        p[..list.len()].copy_from_slice(list);
        g.routes.push(Route {
            region,
            pools: p,
            pool_count: u32::try_from(list.len()).unwrap(),
            canary_pool,
            canary_per_million,
            strict: 0,
            _pad: [0; 3],
        });
    }
    for (pi, &(scheduler, backends)) in pools.iter().enumerate() {
        let first_backend = u32::try_from(g.backends.len()).unwrap();
        let first_healthy = u32::try_from(g.healthy_backends.len()).unwrap();
        let maglev_offset = u32::try_from(g.maglev.len()).unwrap();
        for &(weight, healthy) in backends {
            let index = u32::try_from(g.backends.len()).unwrap();
            g.backends.push(Backend {
                address: [
                    10,
                    0,
                    0,
                    u8::try_from(index + 1).unwrap(),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                family: FAMILY_V4,
                flags: if healthy { BACKEND_HEALTHY } else { 0 },
                _pad: [0; 2],
                weight,
                id: index + 1,
                pool: u32::try_from(pi).unwrap(),
            });
            if healthy && weight > 0 {
                g.healthy_backends.push(index);
            }
        }
        let healthy = &g.healthy_backends[first_healthy as usize..];
        let slots: Vec<u32> = (0..7)
            .map(|i| {
                if healthy.is_empty() {
                    0
                } else {
                    healthy[i % healthy.len()] + 1
                }
            })
            .collect();
        let healthy_count = u32::try_from(healthy.len()).unwrap();
        g.maglev.extend(slots);
        g.pools.push(Pool {
            name: [0; switchyard_table::generation::NAME_LEN],
            scheduler: scheduler as u8,
            _pad: [0; 3],
            maglev_offset,
            maglev_size: 7,
            first_backend,
            backend_count: u32::try_from(backends.len()).unwrap(),
            first_healthy,
            healthy_count,
        });
    }
    g.backend_by_id = std::iter::once(0)
        .chain(1..=u32::try_from(g.backends.len()).unwrap())
        .collect();
    g
}

fn flow(hash: u32, region: u32) -> NewFlow {
    NewFlow {
        service: 0,
        region,
        hash,
        src_hash: hash.rotate_left(7),
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
        st.acquire(u32::try_from(b).unwrap() + 1);
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
