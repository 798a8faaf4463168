//! The schedulers through the real appliance, bounded load first: a capture of new flows goes
//! through `switchyard-dataplane run --table FILE` on `net_pcap` ports, and the encapsulated
//! output is counted per backend (the outer destination). The table is the fixture policy
//! compiled by the control plane's own compiler, as `switchyard-control compile` writes it.
//! Expectations come from the compiled tables (Maglev slots, healthy lists, weights) and from
//! each scheduler's definition, never from running pipeline code, so every test can fail.
//!
//! One worker (`-l 0-1`) reads one capture, so output order is input order: round robin,
//! least connections and smooth weighted round robin are checked flow by flow.

// Shares are compared as floats; test frames use small integers.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

mod common;
mod fixtures;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use common::*;
use fixtures::frames::{tcp4_frame, Addr, RST, SYN};
use fixtures::{compile_yaml, hash4, ip_hash4, Ctx, Variant, IPHASH, LC, RR, VIP4, WRR};
use switchyard_control::compile::BackendState;
use switchyard_table::generation::{Generation, BACKEND_FULL};

/// One encapsulated frame of the output: which backend, for which client flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    backend: Ipv4Addr,
    client: Ipv4Addr,
    sport: u16,
    flags: u8,
}

/// What one run of the appliance did.
struct Run {
    /// Frames out of the backend port, in order.
    out: Vec<Out>,
    /// Every non-zero pipeline counter.
    counters: BTreeMap<String, u64>,
}

impl Run {
    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Frames per backend.
    fn per_backend(&self) -> BTreeMap<Ipv4Addr, usize> {
        let mut n = BTreeMap::new();
        for o in &self.out {
            *n.entry(o.backend).or_default() += 1;
        }
        n
    }
}

/// Runs `frames` (all arriving on the uplink) through the appliance with table `g`; asserts
/// every frame came out of the backend port, IPIP over IPv4, and nothing was dropped.
fn run(name: &str, g: &Generation, frames: &[Vec<u8>]) -> Run {
    // One appliance at a time: they share two cores, and a starved one would miss frames.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    require_root();
    let dir = scratch(name);
    let input = dir.join("in.pcap");
    write_pcap(&input, frames);
    let table = dir.join("table.bin");
    std::fs::write(&table, g.encode()).unwrap();
    let settings = pcap_settings(&dir, 65536);
    let stdout = run_table(
        &table,
        &settings,
        "2",
        &[
            format!(
                "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
                input.display(),
                dir.join("out0.pcap").display()
            ),
            format!(
                "--vdev=net_pcap1,tx_pcap={}",
                dir.join("out1.pcap").display()
            ),
        ],
    );
    let counters: BTreeMap<String, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("counter "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_owned(), v.parse().unwrap()))
        .collect();
    let drops: Vec<_> = counters.keys().filter(|n| n.starts_with("drop_")).collect();
    assert!(drops.is_empty(), "{name}: drops {drops:?}\n{stdout}");
    assert!(
        read_pcap(&dir.join("out0.pcap")).is_empty(),
        "{name}: nothing goes back out"
    );
    let out: Vec<Out> = read_pcap(&dir.join("out1.pcap"))
        .iter()
        .map(|f| decap(f))
        .collect();
    assert_eq!(
        out.len(),
        frames.len(),
        "{name}: every frame comes out\n{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Run { out, counters }
}

/// Reads an IPIP-over-IPv4 frame carrying an option-less IPv4 TCP packet.
fn decap(f: &[u8]) -> Out {
    assert_eq!(
        (f[12], f[13], f[23], f[34]),
        (0x08, 0x00, 4, 0x45),
        "IPIP over IPv4: {f:02x?}"
    );
    let v4 = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    Out {
        backend: v4(30),
        client: v4(46),
        sport: u16::from_be_bytes([f[54], f[55]]),
        flags: f[67],
    }
}

fn v4(a: Addr) -> Ipv4Addr {
    match a {
        Addr::V4(a) => a,
        Addr::V6(a) => panic!("expected an IPv4 backend, got {a}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Client `i` of `net`/16 and its source port.
fn client(net: [u8; 2], i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(net[0], net[1], (i >> 8) as u8, i as u8),
        20_000 + (i % 40_000) as u16,
    )
}

/// `n` new flows from distinct clients of `net`/16 to `vip:port`.
fn syns(net: [u8; 2], n: u32, vip: Ipv4Addr, port: u16) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let (c, sport) = client(net, i);
            tcp4_frame(c, sport, vip, port, SYN, &[])
        })
        .collect()
}

/// Asserts `share` is `want` within `tolerance` (fractions).
fn near(what: &str, share: f64, want: f64, tolerance: f64) {
    assert!(
        (share - want).abs() <= tolerance,
        "{what}: share {share:.4}, want {want:.4} ± {tolerance}"
    );
}

/// The `llama` service's EU clients (10.1/16) go to `llama-eu`, a Maglev pool weighted
/// 100 : 100 : 50 (no canary on that strict route, no per-source limit in this variant).
const EU_NET: [u8; 2] = [10, 1];
const EU_POOL: [&str; 3] = ["10.10.1.1", "10.10.1.2", "10.10.1.3"];

/// A full backend gets no new flow; every flow that did not prefer it is exactly where the
/// table without the full bit puts it; the flows that preferred it spread over the others by
/// weight; the counters say how many went past it.
#[test]
fn bounded_load_full_backend_gets_no_new_flows() {
    let ctx = Ctx::new(Variant::Unlimited);
    let mut state = BackendState::new();
    state.set_full("llama-eu", EU_POOL[0].parse().unwrap(), true);
    let g = compile_yaml(&Variant::Unlimited.yaml(), &state);
    let full = g
        .backends
        .iter()
        .find(|b| b.address[..4] == ip(EU_POOL[0]).octets())
        .unwrap();
    assert_ne!(full.flags & BACKEND_FULL, 0, "the compiler marks it full");
    assert_eq!(g.maglev, ctx.g.maglev, "and rebuilds no table for it");

    let n = 12_000;
    let frames = syns(EU_NET, n, VIP4, 443);
    let r = run("bounded-load", &g, &frames);
    let preferred = |o: &Out| v4(ctx.maglev("llama-eu", hash4(o.client, o.sport, VIP4, 443, 6)));
    let mut spilled: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for o in &r.out {
        assert_ne!(
            o.backend,
            ip(EU_POOL[0]),
            "the full backend takes no new flow: {o:?}"
        );
        let p = preferred(o);
        if p == ip(EU_POOL[0]) {
            *spilled.entry(o.backend).or_default() += 1;
        } else {
            assert_eq!(
                o.backend, p,
                "a flow that did not prefer the full backend stays put"
            );
        }
    }
    let went_past: usize = spilled.values().sum();
    eprintln!("{went_past} of {n} flows preferred the full backend; they went to {spilled:?}");
    assert!(
        went_past > n as usize / 3,
        "the full backend had its share of the flows"
    );
    assert_eq!(r.counter("bounded_load_spill"), went_past as u64);
    assert_eq!(r.counter("bounded_load_all_full"), 0);
    // Weights 100 : 50 among the backends that are not full: 2/3 and 1/3, overall too.
    let s = went_past as f64;
    near(
        "spilled to .2",
        spilled[&ip(EU_POOL[1])] as f64 / s,
        2.0 / 3.0,
        0.04,
    );
    near(
        "spilled to .3",
        spilled[&ip(EU_POOL[2])] as f64 / s,
        1.0 / 3.0,
        0.04,
    );
    let all = r.per_backend();
    near(
        "all on .2",
        all[&ip(EU_POOL[1])] as f64 / f64::from(n),
        2.0 / 3.0,
        0.03,
    );
    near(
        "all on .3",
        all[&ip(EU_POOL[2])] as f64 / f64::from(n),
        1.0 / 3.0,
        0.03,
    );
}

/// Maglev: every flow on its compiled slot's backend, shares within 2 points of the weights
/// (100 : 100 : 50 → 40 %, 40 %, 20 %) over 20 000 flows.
#[test]
fn scheduler_maglev_distribution() {
    let ctx = Ctx::new(Variant::Unlimited);
    let n = 20_000;
    let r = run("sched-maglev", &ctx.g, &syns(EU_NET, n, VIP4, 443));
    for o in &r.out {
        let slot = ctx.maglev("llama-eu", hash4(o.client, o.sport, VIP4, 443, 6));
        assert_eq!(o.backend, v4(slot), "{o:?}");
    }
    let per = r.per_backend();
    for (b, want) in EU_POOL.iter().zip([0.4, 0.4, 0.2]) {
        near(b, per[&ip(b)] as f64 / f64::from(n), want, 0.02);
    }
}

/// IP hash: every flow of a client on one backend, the one the compiled table gives the
/// client's address hash; 3000 clients spread evenly over three equal backends (±3 points).
#[test]
fn scheduler_ip_hash_distribution() {
    let ctx = Ctx::new(Variant::Unlimited);
    let clients = 3000u32;
    let flows_each = 4u32;
    let frames: Vec<Vec<u8>> = (0..clients * flows_each)
        .map(|i| {
            let c = i % clients;
            let client = Ipv4Addr::new(100, 64, (c >> 8) as u8, c as u8);
            tcp4_frame(client, 30_000 + (i / clients) as u16, IPHASH, 80, SYN, &[])
        })
        .collect();
    let r = run("sched-iphash", &ctx.g, &frames);
    let mut of_client: HashMap<Ipv4Addr, Ipv4Addr> = HashMap::new();
    for o in &r.out {
        assert_eq!(
            o.backend,
            v4(ctx.maglev("iphash", ip_hash4(o.client))),
            "{o:?}"
        );
        let first = *of_client.entry(o.client).or_insert(o.backend);
        assert_eq!(
            first, o.backend,
            "every flow of {} on one backend",
            o.client
        );
    }
    assert_eq!(of_client.len(), clients as usize);
    let mut per: BTreeMap<Ipv4Addr, u32> = BTreeMap::new();
    for b in of_client.values() {
        *per.entry(*b).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    for (b, k) in &per {
        near(
            &b.to_string(),
            f64::from(*k) / f64::from(clients),
            1.0 / 3.0,
            0.03,
        );
    }
}

/// The healthy backends of a pool, in table order.
fn healthy(ctx: &Ctx, pool: &str) -> Vec<Ipv4Addr> {
    (0..ctx.pool(pool).healthy_count)
        .map(|i| v4(ctx.healthy(pool, i)))
        .collect()
}

/// Round robin: the worker's cursor walks the healthy list, one backend after the other.
#[test]
fn scheduler_round_robin_distribution() {
    let ctx = Ctx::new(Variant::Unlimited);
    let list = healthy(&ctx, "rr");
    assert_eq!(list.len(), 3);
    let n = 3000;
    let r = run("sched-rr", &ctx.g, &syns([100, 65], n, RR, 80));
    let start = list.iter().position(|&b| b == r.out[0].backend).unwrap();
    for (k, o) in r.out.iter().enumerate() {
        assert_eq!(
            o.backend,
            list[(start + k) % list.len()],
            "flow {k}: exact rotation"
        );
    }
}

/// Least connections: every new flow goes to a backend with the fewest live flows at that
/// moment. Half the flows of the first backend are reset between two waves of SYNs, so the
/// second wave must fill that backend first.
#[test]
fn scheduler_least_conn_distribution() {
    let ctx = Ctx::new(Variant::Unlimited);
    let list = healthy(&ctx, "lc");
    let first_wave = syns([100, 66], 400, LC, 80);
    // Resets for the even flows of the first wave: if least_conn alternates as it must, they
    // are all on one backend, so they take 100 flows off it.
    let resets: Vec<Vec<u8>> = (0..100)
        .map(|i| {
            let (c, sport) = client([100, 66], 2 * i);
            tcp4_frame(c, sport, LC, 80, RST, &[])
        })
        .collect();
    let second_wave = syns([100, 67], 200, LC, 80);
    let frames: Vec<Vec<u8>> = [first_wave, resets, second_wave].concat();
    let r = run("sched-lc", &ctx.g, &frames);

    let mut live: BTreeMap<Ipv4Addr, i64> = list.iter().map(|&b| (b, 0)).collect();
    let mut flow_of: HashMap<(Ipv4Addr, u16), Ipv4Addr> = HashMap::new();
    let mut second_wave_on: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (k, o) in r.out.iter().enumerate() {
        if o.flags == RST {
            let b = flow_of[&(o.client, o.sport)];
            assert_eq!(b, o.backend, "a reset follows its flow");
            *live.get_mut(&b).unwrap() -= 1;
            continue;
        }
        let fewest = *live.values().min().unwrap();
        assert_eq!(
            live[&o.backend], fewest,
            "flow {k} went to {} with {live:?}",
            o.backend
        );
        *live.get_mut(&o.backend).unwrap() += 1;
        flow_of.insert((o.client, o.sport), o.backend);
        if o.client.octets()[1] == 67 {
            *second_wave_on.entry(o.backend).or_default() += 1;
        }
    }
    eprintln!("live flows at the end {live:?}; second wave {second_wave_on:?}");
    // The resets took 100 flows off one backend: the second wave gave it 150 of 200.
    assert!(
        second_wave_on.values().any(|&k| k == 150),
        "{second_wave_on:?}"
    );
}

/// Smooth weighted round robin (nginx): each backend gains its weight, the richest (first on a
/// tie) is picked and pays the total. The appliance's sequence must be exactly this one.
#[test]
fn scheduler_weighted_distribution() {
    let ctx = Ctx::new(Variant::Unlimited);
    let pool = ctx.pool("wrr");
    let members: Vec<(Ipv4Addr, i64)> = (0..pool.healthy_count)
        .map(|i| {
            let index = ctx.g.healthy_backends[(pool.first_healthy + i) as usize];
            (
                v4(ctx.backend(index)),
                i64::from(ctx.g.backends[index as usize].weight),
            )
        })
        .collect();
    assert_eq!(members.iter().map(|m| m.1).collect::<Vec<_>>(), [300, 100]);
    let total: i64 = members.iter().map(|m| m.1).sum();
    let mut current = vec![0i64; members.len()];
    let n = 4000;
    let expected: Vec<Ipv4Addr> = (0..n)
        .map(|_| {
            for (c, m) in current.iter_mut().zip(&members) {
                *c += m.1;
            }
            let best =
                (0..members.len()).fold(0, |b, i| if current[i] > current[b] { i } else { b });
            current[best] -= total;
            members[best].0
        })
        .collect();
    let r = run("sched-wrr", &ctx.g, &syns([100, 68], n, WRR, 80));
    for (k, (o, want)) in r.out.iter().zip(&expected).enumerate() {
        assert_eq!(o.backend, *want, "flow {k}: the smooth weighted sequence");
    }
    let per = r.per_backend();
    assert_eq!(
        (per[&members[0].0], per[&members[1].0]),
        (3000, 1000),
        "exactly the weights' shares"
    );
}
