//! Flow-table cost per operation at a million flows (one worker's table).
//!
//! `cargo bench -p switchyard --no-default-features --bench flow`
//!
//! Keys are spread pseudo-randomly so consecutive operations hit unrelated buckets, as packets of
//! many flows do; the table (80 MiB for IPv4 at 2 Mi ways) is far larger than the caches, so
//! these are memory-bound figures. Lookups run in bursts of 32 like the worker loop.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard::flow::{
    FlowKeyV4, FlowKeyV6, FlowState, FlowTable, FlowValue, InsertLimit, InsertOutcome, Timeouts,
    PROTO_TCP,
};

const FLOWS: u32 = 1 << 20;
const BURST: usize = 32;
const NOW: u32 = 1_000;
const VALUE: FlowValue = FlowValue {
    backend: 1,
    slot: 0,
};

/// `n` distinct IPv4 TCP keys; `salt` picks a disjoint set.
fn keys(n: u32, salt: u16) -> Vec<FlowKeyV4> {
    (0..n)
        .map(|i| {
            FlowKeyV4::from_bits(
                0x0a00_0000_u32.wrapping_add(i.wrapping_mul(0x9E37_79B9)),
                0xcb00_710a,
                40_000 + salt,
                443,
                PROTO_TCP,
            )
        })
        .collect()
}

/// A table of 2 Mi ways (the recommended 2× headroom) holding `keys`.
fn filled(keys: &[FlowKeyV4], capacity: usize) -> FlowTable<FlowKeyV4> {
    let mut table = FlowTable::with_capacity(capacity, Timeouts::default(), InsertLimit::UNLIMITED);
    for k in keys {
        table.insert(k, k.hash(), VALUE, FlowState::TcpEstablished, NOW);
    }
    table
}

fn bench_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_hash");
    group.throughput(Throughput::Elements(1));
    let v4 = FlowKeyV4::from_bits(0x0a01_0203, 0xcb00_710a, 51_000, 443, PROTO_TCP);
    let v6 = FlowKeyV6::from_bits(0x2001_0db8_0001 << 80 | 0x42, 0x2001_0db8 << 96, 1, 2, 6);
    group.bench_function("v4", |b| b.iter(|| black_box(black_box(v4).hash())));
    group.bench_function("v6", |b| b.iter(|| black_box(black_box(v6).hash())));
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let present = keys(FLOWS, 0);
    let absent = keys(FLOWS, 1);
    let present_hashes: Vec<u32> = present.iter().map(FlowKeyV4::hash).collect();
    let absent_hashes: Vec<u32> = absent.iter().map(FlowKeyV4::hash).collect();
    let mut table = filled(&present, 2 * FLOWS as usize);

    let mut group = c.benchmark_group("flow_lookup_1M");
    group.throughput(Throughput::Elements(BURST as u64));
    for (name, keys, hashes, warm) in [
        ("hit", &present, &present_hashes, false),
        ("hit_warm", &present, &present_hashes, true),
        ("miss", &absent, &absent_hashes, false),
    ] {
        let mut at = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (ks, hs) = (&keys[at..at + BURST], &hashes[at..at + BURST]);
                at = (at + BURST) % keys.len();
                if warm {
                    for &h in hs {
                        table.warm(h);
                    }
                }
                let mut backends = 0;
                for (k, &h) in ks.iter().zip(hs) {
                    if let Some(entry) = table.lookup(k, h, NOW) {
                        backends += entry.backend();
                    }
                }
                black_box(backends)
            });
        });
    }
    group.finish();
}

fn bench_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_insert_1M");
    group.throughput(Throughput::Elements(BURST as u64));

    // Churn at a steady 1 Mi flows: each element removes one flow and inserts a new one.
    let sets = [keys(FLOWS, 0), keys(FLOWS, 1)];
    let mut table = filled(&sets[0], 2 * FLOWS as usize);
    let (mut at, mut round) = (0, 0);
    group.bench_function("remove_insert", |b| {
        b.iter(|| {
            let (old, new) = (&sets[round & 1], &sets[(round + 1) & 1]);
            for i in at..at + BURST {
                table.remove(&old[i], old[i].hash());
                let k = &new[i];
                black_box(table.insert(k, k.hash(), VALUE, FlowState::TcpHandshake, NOW));
            }
            at += BURST;
            if at == FLOWS as usize {
                (at, round) = (0, round + 1);
            }
        });
    });

    // Worst case: a full table of live flows, every insert evicts.
    let fill = keys(FLOWS, 2);
    let mut table = filled(&fill, FLOWS as usize);
    let stream = keys(4 * FLOWS, 3);
    let mut at = 0;
    group.bench_function("evict_full", |b| {
        b.iter(|| {
            for k in &stream[at..at + BURST] {
                let out = table.insert(k, k.hash(), VALUE, FlowState::TcpHandshake, NOW);
                debug_assert_ne!(out, InsertOutcome::Throttled);
                black_box(out);
            }
            at = (at + BURST) % stream.len();
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_hash, bench_lookup, bench_insert
}
criterion_main!(benches);
