//! Maglev table build time for N = 10, 100, 1000 and 10000 equal-weight backends, each at the
//! default table size M = 65537 and at about 100 slots per backend (M = 1009, 10007, 100003,
//! 1000003), plus a mixed-weight case and a case where every weight differs (as load-derived
//! weights do). Run with `cargo bench -p switchyard-control --bench maglev -- --quick`; ci/bench
//! reads the estimates criterion writes under target/criterion/maglev_build/.
//!
//! `maglev_build_paper` times the paper's population loop (NSDI 2016, Pseudocode 1) transcribed
//! plainly into Rust, on the pool of `maglev_build/M=65537/N=1000`: the same table, built the
//! way bench/maglev_ref.c builds it, for comparison with both.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_control::maglev::{build, MaglevBackend};

fn backends(n: u32, weight: impl Fn(u32) -> u32) -> Vec<MaglevBackend> {
    (1..=n)
        .map(|id| MaglevBackend {
            id,
            weight: weight(id),
            key: u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        })
        .collect()
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group.sample_size(10);
    for (n, per_100) in [
        (10u32, 1009u32),
        (100, 10_007),
        (1000, 100_003),
        (10_000, 1_000_003),
    ] {
        let pool = backends(n, |_| 1);
        for size in [65_537, per_100] {
            group.bench_with_input(
                BenchmarkId::new(format!("M={size}"), format!("N={n}")),
                &pool,
                |b, pool| b.iter(|| build(black_box(pool), size).unwrap()),
            );
        }
    }
    // Weights 1..=100 in a pool of 1000: ten backends per weight.
    let mixed = backends(1000, |id| id % 100 + 1);
    group.bench_with_input(
        BenchmarkId::new("M=100003", "N=1000 mixed weights"),
        &mixed,
        |b, pool| b.iter(|| build(black_box(pool), 100_003).unwrap()),
    );
    // 1007..=8000: no two backends share a weight.
    let distinct = backends(1000, |id| 1000 + 7 * id);
    group.bench_with_input(
        BenchmarkId::new("M=65537", "N=1000 distinct weights"),
        &distinct,
        |b, pool| b.iter(|| build(black_box(pool), 65_537).unwrap()),
    );
    group.finish();
}

/// The paper's hashes are this crate's (SplitMix64 and fmix64 finalizers, same seeds), so the
/// transcription builds the table `build` builds for equal weights.
fn h1(key: u64) -> u64 {
    let mut z = (key ^ 0x5157_4c59_4152_4431).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn h2(key: u64) -> u64 {
    let mut z = key ^ 0x6d61_676c_6576_5f32;
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// Pseudocode 1 as written: `permutation[i][j] = (offset + j·skip) mod M` computed when probed,
/// `next[]`, `entry[]` at −1, round robin until every slot is filled.
fn paper_populate(keys: &[u64], m: u64) -> Vec<i32> {
    let offset: Vec<u64> = keys.iter().map(|&k| h1(k) % m).collect();
    let skip: Vec<u64> = keys.iter().map(|&k| h2(k) % (m - 1) + 1).collect();
    let mut next = vec![0u64; keys.len()];
    let mut entry = vec![-1i32; usize::try_from(m).unwrap()];
    let mut filled = 0;
    loop {
        for i in 0..keys.len() {
            let slot = |j: u64| usize::try_from((offset[i] + j * skip[i]) % m).unwrap();
            let mut c = slot(next[i]);
            while entry[c] >= 0 {
                next[i] += 1;
                c = slot(next[i]);
            }
            entry[c] = i32::try_from(i).unwrap();
            next[i] += 1;
            filled += 1;
            if filled == m {
                return entry;
            }
        }
    }
}

fn bench_paper(c: &mut Criterion) {
    let pool = backends(1000, |_| 1);
    let keys: Vec<u64> = pool.iter().map(|b| b.key).collect();
    let ids: Vec<u32> = paper_populate(&keys, 65_537)
        .iter()
        .map(|&i| u32::try_from(i + 1).unwrap())
        .collect();
    assert_eq!(ids, build(&pool, 65_537).unwrap(), "the same table");
    let mut group = c.benchmark_group("maglev_build_paper");
    group.sample_size(10);
    group.bench_with_input(BenchmarkId::new("M=65537", "N=1000"), &keys, |b, keys| {
        b.iter(|| paper_populate(black_box(keys), 65_537))
    });
    group.finish();
}

criterion_group!(benches, bench_build, bench_paper);
criterion_main!(benches);
