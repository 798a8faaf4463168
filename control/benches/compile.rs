//! What a fleet change costs the control plane: compiling a policy of 20 Maglev pools × 50
//! backends (M = 65537 each) from scratch, and again through the per-pool Maglev cache after
//! one backend of one pool went down (what the daemon does on a health or load change), plus
//! encoding the generation blob it publishes. Run with
//! `cargo bench -p switchyard-control --bench compile -- --quick`.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_control::compile::{
    compile, compile_cached, BackendIds, BackendState, CompileInput, MaglevCache,
};
use switchyard_control::policy::{self, Policy};

const POOLS: usize = 20;
const BACKENDS: usize = 50;

fn policy() -> Policy {
    let mut text = String::from(
        "interfaces:\n  - name: uplink\n    mac: 02:00:00:00:00:01\n    addresses: [198.51.100.1/24]\n  \
         - name: backend\n    mac: 02:00:00:00:01:01\n    addresses: [10.0.0.1/8]\nservices:\n",
    );
    for p in 0..POOLS {
        text.push_str(&format!(
            "  - name: s{p}\n    vip: 203.0.113.{}\n    ports: [443]\n    routes:\n      - {{ pool: p{p} }}\n",
            p + 1
        ));
    }
    text.push_str("pools:\n");
    for p in 0..POOLS {
        text.push_str(&format!("  p{p}:\n    backends:\n"));
        for b in 0..BACKENDS {
            text.push_str(&format!(
                "      - {{ address: 10.{p}.{}.{} }}\n",
                b / 200,
                b % 200 + 2
            ));
        }
    }
    policy::parse_str(&text, "bench.yaml").unwrap()
}

fn bench_compile(c: &mut Criterion) {
    let policy = policy();
    let healthy = BackendState::new();
    let mut one_down = BackendState::new();
    let victim: IpAddr = "10.7.0.2".parse().unwrap();
    one_down.set_health("p7", victim, false);
    let input = |state| CompileInput {
        policy: &policy,
        generation: 1,
        state,
    };
    let mut group = c.benchmark_group("fleet_change");
    group.sample_size(10);
    group.bench_function("full compile (20 pools x 50 backends, M=65537)", |b| {
        b.iter(|| compile(black_box(&input(&one_down)), &mut BackendIds::new()).unwrap());
    });
    group.bench_function("cached compile, one backend of one pool down", |b| {
        let mut cache = MaglevCache::default();
        let mut ids = BackendIds::new();
        compile_cached(&input(&healthy), &mut ids, &mut cache).unwrap();
        let mut flip = false;
        b.iter(|| {
            // Alternate so every iteration really changes one pool.
            flip = !flip;
            let state = if flip { &one_down } else { &healthy };
            compile_cached(black_box(&input(state)), &mut ids, &mut cache).unwrap()
        });
    });
    let g = compile(&input(&one_down), &mut BackendIds::new()).unwrap();
    group.bench_function("encode the generation blob", |b| {
        b.iter(|| black_box(&g).encode());
    });
    group.finish();
    eprintln!("generation blob: {} bytes", g.encode().len());
}

criterion_group!(benches, bench_compile);
criterion_main!(benches);
