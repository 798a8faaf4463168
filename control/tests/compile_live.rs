//! The compiler over time: stable backend ids, health and live weights, recovery after a
//! control-plane restart, and the diff `apply` shows.

#[path = "compile/helpers.rs"]
mod helpers;

use helpers::*;
use switchyard_control::compile::{diff, BackendIds, BackendState};
use switchyard_control::policy::Policy;

/// The demo policy with its text edited.
fn demo_edited(edit: impl Fn(String) -> String) -> Policy {
    let text = std::fs::read_to_string(manifest_dir().join("../configs/demo.yaml")).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    switchyard_control::policy::parse_str(&edited, "demo.yaml").unwrap_or_else(|e| panic!("{e}"))
}

const GPU_EU_2: &str = "      - { address: 192.0.2.12, weight: 100, name: gpu-eu-2 }\n";

#[test]
fn backends_keep_their_ids_when_others_leave_and_come() {
    let state = BackendState::new();
    let mut ids = BackendIds::new();
    let before = compile_with(&demo(), &state, &mut ids);
    let old_ids = ids_of(&before);
    let (_, removed) = backend(&before, "llama-eu", "192.0.2.12");

    let without = demo_edited(|t| t.replace(GPU_EU_2, ""));
    let after = compile_with(&without, &state, &mut ids);
    after.validate().unwrap();
    let new_ids = ids_of(&after);
    assert_eq!(new_ids.len(), old_ids.len() - 1);
    for (key, id) in &new_ids {
        assert_eq!(old_ids[key], *id, "{key:?} kept its id");
    }
    // The removed id points nowhere.
    assert_eq!(
        after
            .backend_by_id
            .get(removed.id as usize)
            .copied()
            .unwrap_or(0),
        0
    );
    assert!(!after.backends.iter().any(|b| b.id == removed.id));
    assert_eq!(ids.get("llama-eu", ip("192.0.2.12")), None);

    // Unaffected pools keep every Maglev slot.
    let d = diff(&before, &after);
    assert!(d.pools_changed.iter().all(|p| p.name == "llama-eu"), "{d}");

    // Coming back, it gets a fresh id: freed ids are not reused soon.
    let again = compile_with(&demo(), &state, &mut ids);
    let (_, back) = backend(&again, "llama-eu", "192.0.2.12");
    assert_eq!(back.id, 10);
    assert_eq!(again.backend_by_id.len(), 11);
    assert_eq!(again.backend_by_id[removed.id as usize], 0);
}

#[test]
fn ids_wrap_only_past_the_bound_and_skip_ids_in_use() {
    let state = BackendState::new();
    let mut ids = BackendIds::with_max_id(11);
    compile_with(&demo(), &state, &mut ids); // ids 1..=9
    let without = demo_edited(|t| t.replace(GPU_EU_2, "")); // releases id 2
    compile_with(&without, &state, &mut ids);
    let extra = |t: String, n: u32| {
        let lines: String = (0..n)
            .map(|i| format!("      - {{ address: 192.0.2.{} }}\n", 100 + i))
            .collect();
        t.replace(GPU_EU_2, "").replace(
            "      - { address: 192.0.2.41",
            &format!("{lines}      - {{ address: 192.0.2.41"),
        )
    };
    // Two new backends: 10 and 11, up to the bound.
    let g = compile_with(&demo_edited(|t| extra(t, 2)), &state, &mut ids);
    assert_eq!(backend(&g, "sdxl-us", "192.0.2.100").1.id, 10);
    assert_eq!(backend(&g, "sdxl-us", "192.0.2.101").1.id, 11);
    // A third wraps around to the only free id, the one released first.
    let g = compile_with(&demo_edited(|t| extra(t, 3)), &state, &mut ids);
    assert_eq!(backend(&g, "sdxl-us", "192.0.2.102").1.id, 2);
    // And then nothing is left.
    let policy = demo_edited(|t| extra(t, 4));
    let input = switchyard_control::compile::CompileInput {
        policy: &policy,
        generation: 1,
        state: &state,
    };
    let before = ids.clone();
    let err = switchyard_control::compile::compile(&input, &mut ids).unwrap_err();
    assert!(err.to_string().contains("no free backend id"), "{err}");
    assert_eq!(ids, before, "a failed compile leaves the ids alone");
}

#[test]
fn an_unhealthy_backend_leaves_the_tables_but_not_the_generation() {
    let healthy_state = BackendState::new();
    let before = compiled(&demo());
    let mut state = BackendState::new();
    state.set_health("llama-eu", ip("192.0.2.11"), false);
    let g = compile_with(&demo(), &state, &mut BackendIds::new());

    let (index, b) = backend(&g, "llama-eu", "192.0.2.11");
    assert_eq!(b.flags, 0, "not healthy");
    assert_eq!(b.weight, 100, "weight unchanged");
    assert_eq!(g.backend_by_id[b.id as usize] as usize, index + 1);
    assert_eq!(
        healthy(&g, "llama-eu"),
        [ip("192.0.2.12"), ip("192.0.2.13")]
    );
    let shares = maglev_shares(&g, "llama-eu");
    assert!(!shares.contains_key(&ip("192.0.2.11")));
    assert_eq!(shares.values().sum::<usize>(), 65_537);

    // Only that pool's table moved, and only the slots the unhealthy backend held... plus the
    // few Maglev reshuffles among the others.
    let d = diff(&before, &g);
    let [pool] = d.pools_changed.as_slice() else {
        panic!("{d}")
    };
    assert_eq!(pool.name, "llama-eu");
    let held = maglev_shares(&before, "llama-eu")[&ip("192.0.2.11")];
    assert!(pool.maglev_slots_changed >= held);
    assert!(pool.maglev_slots_changed < held + held / 10, "{d}");

    // Healthy again: the same table as before.
    state.set_health("llama-eu", ip("192.0.2.11"), true);
    assert_eq!(
        compile_with(&demo(), &state, &mut BackendIds::new()).encode(),
        compile_with(&demo(), &healthy_state, &mut BackendIds::new()).encode()
    );

    // Every backend of a pool down: an all-empty table, an empty healthy list.
    for a in ["192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        state.set_health("llama-eu", ip(a), false);
    }
    let g = compile_with(&demo(), &state, &mut BackendIds::new());
    let p = g.pools[pool_index(&g, "llama-eu")];
    assert_eq!(p.healthy_count, 0);
    let start = p.maglev_offset as usize;
    assert!(g.maglev[start..start + p.maglev_size as usize]
        .iter()
        .all(|&s| s == 0));
}

#[test]
fn pools_without_a_health_check_ignore_health_state() {
    let mut state = BackendState::new();
    state.set_health("echo", ip("192.0.2.10"), false);
    let g = compile_with(
        &load("../configs/minimal.yaml"),
        &state,
        &mut BackendIds::new(),
    );
    assert_eq!(healthy(&g, "echo"), [ip("192.0.2.10")]);
    assert_eq!(g.backends[0].flags, 1);
}

#[test]
fn live_weights_change_maglev_shares() {
    let mut state = BackendState::new();
    state.set_weight("llama-eu", ip("192.0.2.11"), Some(300));
    let g = compile_with(&demo(), &state, &mut BackendIds::new());
    assert_eq!(backend(&g, "llama-eu", "192.0.2.11").1.weight, 300);
    // 300 / 100 / 50 of 65537.
    let shares = maglev_shares(&g, "llama-eu");
    assert!(
        shares[&ip("192.0.2.11")].abs_diff(43_691) <= 2,
        "{shares:?}"
    );
    assert!(
        shares[&ip("192.0.2.12")].abs_diff(14_564) <= 2,
        "{shares:?}"
    );
    assert!(shares[&ip("192.0.2.13")].abs_diff(7_282) <= 2, "{shares:?}");

    // Clamped to the pool's load bounds (llama-eu: min_weight 10): load never drains.
    state.set_weight("llama-eu", ip("192.0.2.11"), Some(0));
    let g = compile_with(&demo(), &state, &mut BackendIds::new());
    assert_eq!(backend(&g, "llama-eu", "192.0.2.11").1.weight, 10);
    assert!(maglev_shares(&g, "llama-eu").contains_key(&ip("192.0.2.11")));

    // A backend the operator drained (weight 0) stays drained whatever the load says.
    state.set_weight("llama-us", ip("192.0.2.23"), Some(500));
    let g = compile_with(&demo(), &state, &mut BackendIds::new());
    assert_eq!(backend(&g, "llama-us", "192.0.2.23").1.weight, 0);
    assert!(!healthy(&g, "llama-us").contains(&ip("192.0.2.23")));

    // Cleared: back to the policy weight.
    state.set_weight("llama-eu", ip("192.0.2.11"), None);
    state.forget("llama-us", ip("192.0.2.23"));
    assert_eq!(
        compile_with(&demo(), &state, &mut BackendIds::new()).encode(),
        compiled(&demo()).encode()
    );
}

#[test]
fn ids_are_recovered_from_a_live_generation() {
    let state = BackendState::new();
    let mut ids = BackendIds::new();
    compile_with(&demo(), &state, &mut ids);
    let without = demo_edited(|t| t.replace(GPU_EU_2, ""));
    let live = compile_with(&without, &state, &mut ids); // ids 1, 3..=9
    let blob = live.encode();

    // The control plane restarts: all it has is the blob the data plane runs.
    let decoded = switchyard_table::generation::Generation::decode(&blob).unwrap();
    let mut recovered = BackendIds::from_generation(&decoded);
    assert_eq!(recovered.len(), 8);
    for (pool, address, id) in ids.iter() {
        assert_eq!(recovered.get(pool, address), Some(id), "{pool} {address}");
    }
    // The same policy compiles to the same blob with the recovered ids.
    let mut again = compile_with(&without, &state, &mut recovered);
    again.generation = live.generation;
    assert_eq!(again.encode(), blob);
    // A new backend gets an id above every recovered one.
    let g = compile_with(&demo(), &state, &mut recovered);
    assert_eq!(backend(&g, "llama-eu", "192.0.2.12").1.id, 10);
}

#[test]
fn long_pool_names_are_matched_after_recovery() {
    let name = "a-pool-name-that-is-longer-than-thirty-two-bytes";
    let p = policy(&format!(
        "
services:
  - {{ name: s, vip: 203.0.113.10, ports: [80], routes: [{{ pool: {name} }}] }}
pools:
  {name}: {{ backends: [{{ address: 192.0.2.11 }}, {{ address: 192.0.2.12 }}] }}
"
    ));
    let state = BackendState::new();
    let mut ids = BackendIds::new();
    compile_with(&p, &state, &mut ids);
    // Make the ids differ from a fresh numbering: a fresh BackendIds would give 1 and 2.
    let mut shifted = BackendIds::new();
    compile_with(&demo(), &state, &mut shifted);
    let g = compile_with(&p, &state, &mut shifted); // ids 10, 11
    let mut recovered = BackendIds::from_generation(&g);
    let again = compile_with(&p, &state, &mut recovered);
    assert_eq!(
        again.backends.iter().map(|b| b.id).collect::<Vec<_>>(),
        [10, 11]
    );
    assert_eq!(recovered.get(name, ip("192.0.2.11")), Some(10));
}

#[test]
fn diff_names_what_changed() {
    let state = BackendState::new();
    let mut ids = BackendIds::new();
    let old = compile_with(&demo(), &state, &mut ids);

    let same = compile_with(&demo(), &state, &mut ids);
    let d = diff(&old, &same);
    assert!(d.is_empty());
    assert_eq!(d.to_string(), "generation 1 -> 1: no changes");

    // Add a backend, remove one, reweight one, mark one down, move the canary.
    let edited = demo_edited(|t| {
        t.replace(GPU_EU_2, "")
            .replace(
                "      - { address: 192.0.2.13, weight: 50, name: gpu-eu-3 }",
                "      - { address: 192.0.2.13, weight: 80, name: gpu-eu-3 }\n      - { address: 192.0.2.14, name: gpu-eu-4 }",
            )
            .replace("percent: 5 }", "percent: 25 }")
    });
    let mut state = BackendState::new();
    state.set_health("llama-us", ip("192.0.2.22"), false);
    let mut new = compile_with(&edited, &state, &mut ids);
    new.generation = 2;
    let d = diff(&old, &new);
    let text = d.to_string();
    let eu = d
        .pools_changed
        .iter()
        .find(|p| p.name == "llama-eu")
        .unwrap()
        .maglev_slots_changed;
    let us = d
        .pools_changed
        .iter()
        .find(|p| p.name == "llama-us")
        .unwrap()
        .maglev_slots_changed;
    assert_eq!(
        text,
        format!(
            "generation 1 -> 2: 7 changes
~ service llama-70b: canary llama-v2-us 5% -> 25%
~ pool llama-eu: {eu} of 65537 Maglev slots changed
~ pool llama-us: {us} of 65537 Maglev slots changed
+ backend llama-eu 192.0.2.14 (id 10, weight 100, healthy)
- backend llama-eu 192.0.2.12 (id 2, weight 100, healthy)
~ backend llama-eu 192.0.2.13 (id 3): weight 50 -> 80
~ backend llama-us 192.0.2.22 (id 5): healthy -> unhealthy"
        )
    );
    assert!(eu > 20_000 && us > 30_000, "{text}");
    assert_eq!(d.change_count(), 7);

    // Services and pools coming and going.
    let p1 = policy(
        "
services:
  - { name: a, vip: 203.0.113.10, ports: [80], routes: [{ pool: x }] }
pools:
  x: { backends: [{ address: 192.0.2.11 }] }
",
    );
    let p2 = policy(
        "
acl: [{ deny: 198.18.0.0/15 }]
services:
  - { name: b, vip: 203.0.113.11, ports: [80], routes: [{ pool: y }] }
pools:
  y: { scheduler: round_robin, backends: [{ address: 192.0.2.11 }] }
",
    );
    let d = diff(&compiled(&p1), &compiled(&p2));
    assert_eq!(
        d.to_string(),
        "generation 1 -> 1: 8 changes
+ service b
- service a
+ pool y
- pool x
+ backend y 192.0.2.11 (id 1, weight 100, healthy)
- backend x 192.0.2.11 (id 1, weight 100, healthy)
~ VIP table changed
~ ACL changed"
    );
}

#[test]
fn cached_compiles_rebuild_only_the_pools_a_fleet_change_touches() {
    use switchyard_control::compile::{compile, compile_cached, CompileInput, MaglevCache};
    let policy = demo();
    let mut state = BackendState::new();
    let mut cache = MaglevCache::default();
    fn input<'a>(policy: &'a Policy, state: &'a BackendState) -> CompileInput<'a> {
        CompileInput {
            policy,
            generation: 1,
            state,
        }
    }
    let first =
        compile_cached(&input(&policy, &state), &mut BackendIds::new(), &mut cache).unwrap();
    assert_eq!(
        first,
        compile(&input(&policy, &state), &mut BackendIds::new()).unwrap()
    );
    let tables = cache.misses;
    assert!(tables >= 2, "the demo has several Maglev pools");

    // One backend of one pool goes down: that pool's table is rebuilt, the others reused.
    state.set_health("llama-eu", "192.0.2.12".parse().unwrap(), false);
    let second =
        compile_cached(&input(&policy, &state), &mut BackendIds::new(), &mut cache).unwrap();
    assert_eq!(
        second,
        compile(&input(&policy, &state), &mut BackendIds::new()).unwrap()
    );
    assert_eq!(cache.misses, tables + 1);
    assert_eq!(cache.hits, tables - 1);
}

#[test]
fn diff_says_what_changed_in_routes_and_config() {
    let state = BackendState::new();
    let old = compile_with(&demo(), &state, &mut BackendIds::new());
    // The canary off: the operator sees the share, not "routes changed".
    let off = demo_edited(|t| t.replace("percent: 5 }", "percent: 0 }"));
    let d = diff(&old, &compile_with(&off, &state, &mut BackendIds::new()));
    assert_eq!(
        d.to_string(),
        "generation 1 -> 1: 1 change\n~ service llama-70b: canary llama-v2-us 5% -> 0%"
    );
    let half = demo_edited(|t| t.replace("percent: 5 }", "percent: 0.5 }"));
    let d = diff(&old, &compile_with(&half, &state, &mut BackendIds::new()));
    assert!(
        d.to_string()
            .ends_with("~ service llama-70b: canary llama-v2-us 5% -> 0.5%"),
        "{d}"
    );

    let p1 = policy(
        "
regions: { eu: { prefixes: [10.1.0.0/16] } }
services:
  - name: a
    vip: 203.0.113.10
    ports: [80]
    routes: [{ from: eu, pool: x, fallback: [y] }, { pool: y, fallback: [z, w] }]
pools:
  x: { region: eu, backends: [{ address: 192.0.2.11 }] }
  y: { backends: [{ address: 192.0.2.12 }] }
  z: { backends: [{ address: 192.0.2.13 }] }
  w: { backends: [{ address: 192.0.2.14 }] }
",
    );
    let p2 = policy(
        "
regions: { eu: { prefixes: [10.1.0.0/16] } }
services:
  - name: a
    vip: 203.0.113.10
    ports: [80]
    routes: [{ from: eu, pool: x, residency: strict }, { pool: z, fallback: [y] }]
    canary: { pool: w, percent: 12.25 }
pools:
  x: { region: eu, backends: [{ address: 192.0.2.11 }] }
  y: { backends: [{ address: 192.0.2.12 }] }
  z: { backends: [{ address: 192.0.2.13 }] }
  w: { backends: [{ address: 192.0.2.14 }] }
flow_timeouts: { tcp_established: 10m, udp: 1m }
backend_mtu: 9000
",
    );
    let d = diff(&compiled(&p1), &compiled(&p2));
    assert_eq!(
        d.to_string(),
        "generation 1 -> 1: 2 changes
~ service a: route from eu: fallback y -> none; route from eu: residency preferred -> strict; \
catch-all route: pool y -> z; catch-all route: fallback z, w -> y; catch-all route: canary w 12.25%
~ config: backend_mtu 1500 -> 9000; flow timeout tcp_established 900s -> 600s; flow timeout udp 30s -> 60s"
    );
}
