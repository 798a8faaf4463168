//! Every pipeline fixture (see `fixtures/mod.rs`) through `PipelineWorker::process` and
//! `process_burst`: the verdict and the exact output bytes, or the named drop counter up by
//! exactly one and no other drop counter moved.
//!
//! The `bench` test (ignored by default) measures the full balancing path in release:
//! `cargo test --release -p switchyard --test pipeline_fixtures -- --ignored bench --nocapture`.

// The benchmark's arithmetic converts between counts, floats and narrow integers on purpose.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

mod fixtures;

use std::collections::BTreeSet;
use std::time::Instant;

use fixtures::frames::*;
use fixtures::*;
use switchyard::flow::{FlowKeyV4, FlowKeyV6, FlowTable, InsertLimit};
use switchyard::pipeline::{
    Counter, Counters, PacketBuf, PipelineWorker, Staged, VecPacket, Verdict, WorkerConfig,
};

fn worker(variant: Variant) -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 4096,
        flows_v6: 4096,
        insert_limit: InsertLimit::UNLIMITED,
        ports: variant.port_map(),
        worker: 0,
    });
    w.set_generation(variant.generation());
    w
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let window = |v: &[u8]| {
        v.iter()
            .skip(at.saturating_sub(4))
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "lengths {} (got) vs {} (expected); first difference at byte {at}:\n      got {}\n expected {}",
        a.len(),
        b.len(),
        window(a),
        window(b)
    )
}

/// Checks one result against a fixture's expectation.
fn check(
    f: &Fixture,
    verdict: Verdict,
    out: &[u8],
    before: &Counters,
    after: &Counters,
) -> Result<(), String> {
    match &f.expected {
        Expected::Frame { port, bytes } => {
            if verdict != Verdict::Forward(*port) {
                let drops: Vec<_> = Counter::ALL
                    .iter()
                    .filter(|c| after.get(**c) != before.get(**c))
                    .map(|c| c.name())
                    .collect();
                return Err(format!(
                    "verdict {verdict:?}, expected Forward({port}); counters moved: {drops:?}"
                ));
            }
            if out != bytes.as_slice() {
                return Err(first_difference(out, bytes));
            }
            if after.drops() != before.drops() {
                return Err("a drop counter moved".into());
            }
        }
        Expected::Kernel => {
            if verdict != Verdict::Kernel {
                return Err(format!("verdict {verdict:?}, expected Kernel"));
            }
            if out != f.input.as_slice() {
                return Err(format!(
                    "frame changed: {}",
                    first_difference(out, &f.input)
                ));
            }
        }
        Expected::Drop(name) => {
            let counter =
                Counter::from_name(name).ok_or_else(|| format!("no counter named {name}"))?;
            if verdict != Verdict::Drop {
                return Err(format!("verdict {verdict:?}, expected Drop({name})"));
            }
            let delta = after.get(counter) - before.get(counter);
            if delta != 1 {
                let moved: Vec<_> = Counter::ALL
                    .iter()
                    .filter(|c| after.get(**c) != before.get(**c))
                    .map(|c| c.name())
                    .collect();
                return Err(format!(
                    "{name} moved by {delta}; counters moved: {moved:?}"
                ));
            }
            if after.drops() - before.drops() != 1 {
                return Err("more than one drop counter moved".into());
            }
        }
    }
    Ok(())
}

fn report(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} fixtures failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_fixture_through_process() {
    let all = fixtures();
    let mut failures = Vec::new();
    for f in &all {
        let mut w = worker(f.variant);
        for s in &f.setup {
            w.process(&mut VecPacket::new(s), f.rx_port, NOW);
        }
        let before = w.counters().clone();
        let mut pkt = VecPacket::new(&f.input);
        let verdict = w.process(&mut pkt, f.rx_port, NOW);
        if let Err(e) = check(f, verdict, pkt.data(), &before, w.counters()) {
            failures.push(format!("[{:?}] {}: {e}", f.variant, f.description));
        }
    }
    report(&failures, all.len());
}

#[test]
fn every_fixture_through_process_burst() {
    let all = fixtures();
    let mut failures = Vec::new();
    for f in &all {
        let mut w = worker(f.variant);
        let before = {
            // Counters before the input: run the setup alone on a twin worker.
            let mut twin = worker(f.variant);
            let mut setup: Vec<VecPacket> = f.setup.iter().map(|s| VecPacket::new(s)).collect();
            let mut v = vec![Verdict::Drop; setup.len()];
            twin.process_burst(&mut setup, f.rx_port, NOW, &mut v);
            twin.counters().clone()
        };
        let mut pkts: Vec<VecPacket> = f
            .setup
            .iter()
            .chain(std::iter::once(&f.input))
            .map(|s| VecPacket::new(s))
            .collect();
        let mut verdicts = vec![Verdict::Drop; pkts.len()];
        w.process_burst(&mut pkts, f.rx_port, NOW, &mut verdicts);
        let last = pkts.len() - 1;
        if let Err(e) = check(f, verdicts[last], pkts[last].data(), &before, w.counters()) {
            failures.push(format!("[{:?}] {}: {e}", f.variant, f.description));
        }
    }
    report(&failures, all.len());
}

/// All inputs of one variant back to back through one worker, one at a time, through a twin
/// in bursts of 32, and through a third that overlaps bursts as the run loop does (stage the
/// next burst, then finish the previous one): identical verdicts, bytes and counters.
#[test]
fn bursts_of_32_match_one_packet_at_a_time() {
    for variant in Variant::ALL {
        let inputs: Vec<(Vec<u8>, u16)> = fixtures()
            .into_iter()
            .filter(|f| f.variant == variant)
            .flat_map(|f| {
                let port = f.rx_port;
                f.setup
                    .into_iter()
                    .chain(std::iter::once(f.input))
                    .map(move |b| (b, port))
            })
            .collect();
        let mut one = worker(variant);
        let mut burst = worker(variant);
        let mut expected = Vec::new();
        for (bytes, port) in &inputs {
            let mut p = VecPacket::new(bytes);
            let v = one.process(&mut p, *port, NOW);
            expected.push((v, p.data().to_vec()));
        }
        // Bursts must share an RX port: split at port changes, then into 32s.
        let mut bursts = Vec::new();
        let mut i = 0;
        while i < inputs.len() {
            let port = inputs[i].1;
            let mut j = i;
            while j < inputs.len() && inputs[j].1 == port && j - i < 32 {
                j += 1;
            }
            bursts.push((i, j, port));
            i = j;
        }
        let packets = |i: usize, j: usize| -> Vec<VecPacket> {
            inputs[i..j]
                .iter()
                .map(|(b, _)| VecPacket::new(b))
                .collect()
        };
        let check = |i: usize, pkts: &[VecPacket], verdicts: &[Verdict], how: &str| {
            for (k, (p, v)) in pkts.iter().zip(verdicts).enumerate() {
                let (ev, eb) = &expected[i + k];
                assert_eq!(v, ev, "{variant:?} {how} packet {}", i + k);
                assert_eq!(
                    p.data(),
                    eb.as_slice(),
                    "{variant:?} {how} packet {}",
                    i + k
                );
            }
        };
        for &(i, j, port) in &bursts {
            let mut pkts = packets(i, j);
            let mut verdicts = vec![Verdict::Drop; pkts.len()];
            burst.process_burst(&mut pkts, port, NOW, &mut verdicts);
            check(i, &pkts, &verdicts, "burst");
        }
        assert_eq!(one.counters(), burst.counters(), "{variant:?}");

        // As the run loop overlaps them: burst k is classified before burst k-1 is executed.
        let mut overlapped = worker(variant);
        let mut pending: Option<(usize, Vec<VecPacket>, Staged)> = None;
        let finish = |w: &mut PipelineWorker,
                      (i, mut pkts, staged): (usize, Vec<VecPacket>, Staged)| {
            w.prefetch_entries::<VecPacket>(&staged);
            let mut verdicts = vec![Verdict::Drop; pkts.len()];
            w.finish(&mut pkts, &staged, NOW, &mut verdicts);
            check(i, &pkts, &verdicts, "overlapped");
        };
        for &(i, j, port) in &bursts {
            let pkts = packets(i, j);
            let mut staged = Staged::default();
            overlapped.stage(&pkts, port, &mut staged);
            if let Some(prev) = pending.take() {
                finish(&mut overlapped, prev);
            }
            pending = Some((i, pkts, staged));
        }
        if let Some(prev) = pending.take() {
            finish(&mut overlapped, prev);
        }
        assert_eq!(
            one.counters(),
            overlapped.counters(),
            "{variant:?} overlapped"
        );
    }
}

/// The fixture table covers every stage the pipeline documents.
/// Drop counters no frame can cause on a valid generation, and where each is tested.
const NOT_FROM_A_FRAME: &[(&str, &str)] = &[
    (
        "drop_neighbour_queue_full",
        "a flood of neighbour news faster than the main lcore drains it: neighbour_pipeline",
    ),
    (
        "drop_neighbour_tx",
        "worker 0 sending the resolver's frames (dataplane/poll.rs), no mbuf or a full TX queue",
    ),
    (
        "drop_no_table",
        "no generation yet: pipeline_behaviour, run before any table",
    ),
    (
        "drop_bad_table_reference",
        "a generation whose indices point nowhere: the fuzz targets and pipeline unit tests",
    ),
    (
        "drop_multi_segment",
        "the poll loop (dataplane/poll.rs), before the pipeline (multi-segment mbufs)",
    ),
    (
        "drop_tx_queue_full",
        "the poll loop (dataplane/poll.rs), when a TX queue stays full",
    ),
    (
        "drop_unroutable",
        "the poll loop (dataplane/poll.rs), for a verdict naming no port it has",
    ),
    (
        "drop_no_buffer_room",
        "a buffer without headroom for the outer headers: pipeline_behaviour",
    ),
    // Extension-header errors: the pipeline drops every extension header by name first
    // (drop_ipv6_ext_header) and counts a quote it cannot read as drop_icmp_error_bad_quote,
    // so these come only from the wire parsers, whose own tests cover each.
    (
        "drop_truncated_ext_header",
        "wire::ipv6 and wire::icmpv6 tests",
    ),
    ("drop_bad_ext_header", "wire::ipv6 tests"),
    ("drop_ext_header_chain_too_long", "wire::ipv6 tests"),
];

#[test]
fn fixtures_cover_every_drop_reason() {
    let all = fixtures();
    let named: BTreeSet<&str> = all
        .iter()
        .filter_map(|f| match f.expected {
            Expected::Drop(name) => Some(name),
            _ => None,
        })
        .collect();
    for name in &named {
        assert!(Counter::from_name(name).is_some(), "unknown counter {name}");
    }
    // Every drop counter needs a fixture, except the few no frame can cause on a valid
    // generation (each tested elsewhere): derived from the enum, so a new drop reason without a
    // fixture fails here.
    let required: Vec<&str> = Counter::ALL
        .iter()
        .filter(|c| c.is_drop())
        .map(|c| c.name())
        .filter(|n| !NOT_FROM_A_FRAME.iter().any(|(x, _)| x == n))
        .collect();
    let missing: Vec<_> = required.iter().filter(|r| !named.contains(*r)).collect();
    assert!(missing.is_empty(), "no fixture for {missing:?}");
    let frames = all
        .iter()
        .filter(|f| matches!(f.expected, Expected::Frame { .. }))
        .count();
    for v in Variant::ALL {
        println!("  {v:?}: {}", all.iter().filter(|f| f.variant == v).count());
    }
    println!(
        "{} fixtures: {frames} output frames, {} kernel, {} drops over {} counters",
        all.len(),
        all.iter()
            .filter(|f| f.expected == Expected::Kernel)
            .count(),
        all.iter()
            .filter(|f| matches!(f.expected, Expected::Drop(_)))
            .count(),
        named.len()
    );
}

/// The time-stamp counter (TSC ticks at the nominal clock), through the DPDK module's safe
/// wrapper: `core::arch::x86_64::_rdtsc` is still an `unsafe fn` on this toolchain.
#[cfg(feature = "dpdk")]
fn cycles() -> Option<u64> {
    Some(switchyard::dpdk::rdtsc())
}

#[cfg(not(feature = "dpdk"))]
fn cycles() -> Option<u64> {
    None
}

/// Full balancing path, release build: 1 M live flows, 1000 backends, 10 000 geo prefixes.
#[test]
#[ignore = "benchmark: run in release with --ignored bench --nocapture"]
fn bench() {
    use std::fmt::Write;
    // A policy with 10 000 region prefixes and 1000 backends in one Maglev pool.
    let mut yaml =
        policy_yaml().replace("  new_flows_per_source: { rate: 100/s, burst: 10 }\n", "");
    let mut regions = String::from("regions:\n  eu-west: { prefixes: [10.1.0.0/16, \"2001:db8:1::/48\"] }\n  us-east: { prefixes: [10.2.0.0/16, \"2001:db8:2::/48\"] }\n  bench:\n    prefixes: [");
    for i in 0..10_000u32 {
        // /24s spread over 20.0.0.0/8 .. 59.0.0.0/8.
        let a = 20 + (i / 256) % 40;
        let b = (i * 7) % 256;
        let c = i % 256;
        if i > 0 {
            regions.push_str(", ");
        }
        let _ = write!(regions, "{a}.{b}.{c}.0/24");
    }
    regions.push_str("]\n");
    yaml = yaml.replace(
        "regions:\n  eu-west: { prefixes: [10.1.0.0/16, \"2001:db8:1::/48\"] }\n  us-east: { prefixes: [10.2.0.0/16, \"2001:db8:2::/48\"] }\n",
        &regions,
    );
    let mut backends = String::from("  big:\n    backends:\n");
    for i in 0..1000u32 {
        let _ = writeln!(
            backends,
            "      - {{ address: 10.20.{}.{} }}",
            i / 250,
            1 + i % 250
        );
    }
    yaml = yaml.replace("pools:\n", &format!("pools:\n{backends}"));
    yaml = yaml.replace(
        "      - { pool: llama-us, fallback: [llama-eu] }\n    canary",
        "      - { pool: big, fallback: [llama-eu] }\n    canary",
    );
    yaml = yaml.replace(
        "- { from: us-east, pool: llama-us, fallback: [llama-eu] }",
        "- { from: us-east, pool: llama-us, fallback: [big] }",
    );
    let t = Instant::now();
    let g = std::sync::Arc::new(compile_yaml(&yaml, &Default::default()));
    println!(
        "compiled: {} backends, {} geo-LPM entries, in {:?}",
        g.backends.len(),
        g.geo_lpm_v4.len(),
        t.elapsed()
    );

    const FLOWS: u32 = 1 << 20;
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 2 * FLOWS as usize,
        flows_v6: 1024,
        insert_limit: InsertLimit::UNLIMITED,
        ports: port_map(),
        worker: 0,
    });
    w.set_generation(g);

    // Clients spread over the bench region and everything else; SYN then data packets.
    let client = |i: u32| {
        let x = i.wrapping_mul(0x9e37_79b1);
        std::net::Ipv4Addr::from(0x1400_0000 + (x % (40 << 24)))
    };
    let sport = |i: u32| 1024 + (i % 60_000) as u16;
    let frame_of =
        |i: u32, flags: u8| tcp4_frame(client(i), sport(i), VIP4, 443, flags, &[0x42; 64]);

    // Fill the table with 1 M flows.
    let t = Instant::now();
    let mut verdicts = [Verdict::Drop; 32];
    let mut pkts: Vec<VecPacket> = Vec::with_capacity(32);
    for chunk in (0..FLOWS).collect::<Vec<_>>().chunks(32) {
        pkts.clear();
        pkts.extend(chunk.iter().map(|&i| VecPacket::new(&frame_of(i, SYN))));
        let n = pkts.len();
        w.process_burst(&mut pkts, 0, 1, &mut verdicts[..n]);
    }
    let (v4, _) = w.flow_count();
    println!("filled {v4} flows in {:?}", t.elapsed());
    assert!(v4 as f64 > f64::from(FLOWS) * 0.99, "table holds the flows");

    // Data packets of random live flows. Each burst is refilled from templates before it is
    // timed, so its bytes are in cache as a NIC's DMA (with DDIO) leaves them; the flow table
    // (80 MiB) is not.
    const RING: usize = 1 << 14;
    let templates: Vec<Vec<u8>> = (0..RING as u32)
        .map(|k| frame_of(k.wrapping_mul(2_654_435_761) % FLOWS, PSH_ACK))
        .collect();
    let mut burst: Vec<VecPacket> = (0..32).map(|_| VecPacket::new(&templates[0])).collect();
    let time_bursts = |w: &mut PipelineWorker,
                       burst: &mut Vec<VecPacket>,
                       templates: &[Vec<u8>],
                       now: u32,
                       rounds: usize| {
        let mut verdicts = [Verdict::Drop; 32];
        let (mut ns, mut tsc, mut packets) = (0u128, 0u64, 0u64);
        for _ in 0..rounds {
            for chunk in templates.chunks(32) {
                for (p, t) in burst.iter_mut().zip(chunk) {
                    p.reset(t);
                }
                let n = chunk.len();
                let t = Instant::now();
                let c0 = cycles();
                w.process_burst(&mut burst[..n], 0, now, &mut verdicts[..n]);
                w.housekeeping(now);
                let c1 = cycles();
                ns += t.elapsed().as_nanos();
                if let (Some(a), Some(b)) = (c0, c1) {
                    tsc += b - a;
                }
                packets += n as u64;
            }
        }
        (
            ns as f64 / packets as f64,
            tsc as f64 / packets as f64,
            packets,
        )
    };
    let before = w.counters().clone();
    // BENCH_ROUNDS=n repeats the timed pass (for profiling).
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let (ns, tsc, packets) = time_bursts(&mut w, &mut burst, &templates, 2, rounds);
    let after = w.counters();
    let forwarded = after.get(Counter::ForwardedIpipV4) - before.get(Counter::ForwardedIpipV4);
    assert_eq!(forwarded, packets, "every data packet forwarded");
    // A handful of the 1 M flows were evicted from full buckets while filling (two choices
    // at 50 % load lose ~0.02 %); their packets miss and are rescheduled.
    let hits = after.get(Counter::FlowHits) - before.get(Counter::FlowHits);
    assert!(
        hits * 1000 >= packets * 999,
        "{hits} of {packets} packets hit their flow"
    );
    println!(
        "full LB path (flow hit among 1 M, Maglev pool of 1000, IPIP): {ns:.1} ns/packet = {:.1} Mpps, {tsc:.1} TSC cycles/packet",
        1e3 / ns
    );

    // The same path with the touched flows in cache (1024 flows): what the pipeline itself
    // costs, without the DRAM latency of a 1 M-flow table.
    let hot: Vec<Vec<u8>> = (0..RING as u32)
        .map(|k| frame_of(k % 1024, PSH_ACK))
        .collect();
    let (ns, tsc, _) = time_bursts(&mut w, &mut burst, &hot, 2, rounds / 4 + 1);
    println!(
        "same path, 1024 hot flows (compute only): {ns:.1} ns/packet = {:.1} Mpps, {tsc:.1} TSC cycles/packet",
        1e3 / ns
    );

    // New flows: schedule + insert, every packet a miss.
    let fresh: Vec<Vec<u8>> = (0..RING as u32).map(|k| frame_of(FLOWS + k, SYN)).collect();
    let (ns, tsc, _) = time_bursts(&mut w, &mut burst, &fresh, 3, 1);
    println!(
        "new flows (miss, geo LPM over 10k prefixes, Maglev, insert): {ns:.1} ns/packet, {tsc:.1} TSC cycles/packet"
    );
    println!(
        "bytes per connection-table entry: IPv4 {} (entry {} + tag line share), IPv6 {}",
        FlowTable::<FlowKeyV4>::BYTES_PER_FLOW,
        FlowTable::<FlowKeyV4>::ENTRY_BYTES,
        FlowTable::<FlowKeyV6>::BYTES_PER_FLOW
    );
    println!(
        "flow tables of this worker: {} MiB",
        w.flow_memory_bytes() >> 20
    );
}
