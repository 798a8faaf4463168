//! Maglev table build time for N = 10, 100, 1000 and 10000 equal-weight backends, each at the
//! default table size M = 65537 and at about 100 slots per backend (M = 1009, 10007, 100003,
//! 1000003), plus one mixed-weight case. Run with
//! `cargo bench -p switchyard-control --bench maglev -- --quick`; ci/bench reads the estimates
//! criterion writes under target/criterion/maglev_build/.

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
    // Weights 1..=100 in a pool of 1000: the heap-ordered turns of the weighted path.
    let mixed = backends(1000, |id| id % 100 + 1);
    group.bench_with_input(
        BenchmarkId::new("M=100003", "N=1000 mixed weights"),
        &mixed,
        |b, pool| b.iter(|| build(black_box(pool), 100_003).unwrap()),
    );
    group.finish();
}

criterion_group!(benches, bench_build);
criterion_main!(benches);
