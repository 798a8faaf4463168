//! Maglev table build time: M = 65537 and 655373 slots, N = 10, 100 and 1000 equal-weight
//! backends, plus one mixed-weight case. Run with
//! `cargo bench -p switchyard-control --bench maglev -- --quick`.

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
    for size in [65_537u32, 655_373] {
        for n in [10u32, 100, 1000] {
            let pool = backends(n, |_| 1);
            group.bench_with_input(
                BenchmarkId::new(format!("M={size}"), format!("N={n}")),
                &pool,
                |b, pool| b.iter(|| build(black_box(pool), size).unwrap()),
            );
        }
        // Weights 1..=100 in a pool of 1000: the heap-ordered turns of the weighted path.
        let mixed = backends(1000, |id| id % 100 + 1);
        group.bench_with_input(
            BenchmarkId::new(format!("M={size}"), "N=1000 mixed weights"),
            &mixed,
            |b, pool| b.iter(|| build(black_box(pool), size).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_build);
criterion_main!(benches);
