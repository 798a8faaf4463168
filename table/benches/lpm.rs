//! LPM build and lookup: one million IPv4 prefixes with a BGP-like length mix, and 100k IPv6
//! prefixes. Run with `cargo bench -p switchyard-table --bench lpm -- --quick`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_table::lpm::{build_v4, build_v6, lookup_v4, lookup_v6};

/// SplitMix64: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        u32::try_from(self.next() >> 32).unwrap()
    }
}

/// Roughly the global routing table's mix: most prefixes /24, then /22–/23, /16–/21, a few
/// shorter and a few longer than /24 (which need the third level).
fn v4_prefixes(count: u32, rng: &mut Rng) -> Vec<(u32, u8, u32)> {
    (0..count)
        .map(|i| {
            let len = match rng.next() % 100 {
                0 => 8 + (rng.next() % 8) as u8,
                1..=17 => 16 + (rng.next() % 6) as u8,
                18..=37 => 22 + (rng.next() % 2) as u8,
                38..=97 => 24,
                _ => 25 + (rng.next() % 8) as u8,
            };
            (rng.next_u32(), len, i % 64 + 1)
        })
        .collect()
}

fn v6_prefixes(count: u32, rng: &mut Rng) -> Vec<(u128, u8, u32)> {
    (0..count)
        .map(|i| {
            let len = match rng.next() % 100 {
                0..=49 => 48,
                50..=79 => 32 + (rng.next() % 16) as u8,
                80..=97 => 29 + (rng.next() % 3) as u8,
                _ => 64,
            };
            // Inside 2000::/4, as global unicast is.
            let addr = ((u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 4) | (2 << 124);
            (addr, len, i % 64 + 1)
        })
        .collect()
}

fn bench_lpm(c: &mut Criterion) {
    let mut rng = Rng(42);
    let v4 = v4_prefixes(1_000_000, &mut rng);
    let v6 = v6_prefixes(100_000, &mut rng);
    let v4_table = build_v4(&v4).unwrap();
    let v6_table = build_v6(&v6).unwrap();
    eprintln!(
        "v4 table: {} entries ({} MiB); v6 table: {} entries ({} MiB)",
        v4_table.len(),
        (v4_table.len() * 4) >> 20,
        v6_table.len(),
        (v6_table.len() * 4) >> 20
    );

    let mut group = c.benchmark_group("lpm_build");
    group.sample_size(10);
    group.bench_function("v4 1M prefixes", |b| {
        b.iter(|| build_v4(black_box(&v4)).unwrap());
    });
    group.bench_function("v6 100k prefixes", |b| {
        b.iter(|| build_v6(black_box(&v6)).unwrap());
    });
    group.finish();

    let addrs_v4: Vec<u32> = (0..1 << 16).map(|_| rng.next_u32()).collect();
    // Half the IPv6 probes inside prefixes (deep walks), half random.
    let addrs_v6: Vec<u128> = (0..1 << 16)
        .map(|i| {
            let noise = u128::from(rng.next()) << 64 | u128::from(rng.next());
            if i % 2 == 0 {
                v6[i % v6.len()].0 ^ (noise >> 64)
            } else {
                noise
            }
        })
        .collect();
    let mut group = c.benchmark_group("lpm_lookup");
    group.throughput(Throughput::Elements(1 << 16));
    group.bench_function("v4 1M prefixes", |b| {
        b.iter(|| {
            addrs_v4
                .iter()
                .fold(0u32, |acc, &a| acc ^ lookup_v4(&v4_table, a))
        });
    });
    group.bench_function("v6 100k prefixes", |b| {
        b.iter(|| {
            addrs_v6
                .iter()
                .fold(0u32, |acc, &a| acc ^ lookup_v6(&v6_table, a))
        });
    });
    group.finish();
}

criterion_group!(benches, bench_lpm);
criterion_main!(benches);
