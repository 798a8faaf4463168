//! Intelligent routing against real processes: the control plane probing and scraping model
//! servers in a network namespace, the data plane on DPDK vdevs forwarding replayed client
//! flows, and the tables between them moving with the fleet's health and load.
//!
//! Figures (death → removal times, shares against load) are printed on `#` lines; run with
//! `--nocapture` to see them.

mod common;
mod fleet;
#[path = "fixtures/frames.rs"]
mod frames;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use fleet::*;
use frames::{ACK, SYN};

/// Interval, timeout, rise and fall of the health checks in these tests.
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 150;
const RISE: u32 = 2;
const FALL: u32 = 2;

fn interfaces(subnet: u8) -> String {
    format!(
        "interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24]
  - name: backend
    mac: 02:00:00:00:01:01
    addresses: [10.{subnet}.0.1/24]
    gateway: {{ ipv4: 10.{subnet}.0.254, mac: 02:00:00:00:01:fe }}
encap: ipip
"
    )
}

fn health_block() -> String {
    format!(
        "    health:
      http: {{ port: 8000, path: /v1/models, expect_model: {MODEL} }}
      interval: {INTERVAL_MS}ms
      timeout: {TIMEOUT_MS}ms
      rise: {RISE}
      fall: {FALL}
"
    )
}

fn backends(servers: &Servers, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("      - {{ address: {}, weight: 100 }}\n", servers.addr(i)))
        .collect()
}

/// One service on the VIP, one pool `llama` of every server, with `extra` pool settings.
fn one_pool(servers: &Servers, extra: &str) -> String {
    format!(
        "{}services:
  - name: llama
    vip: {VIP}
    ports: [443]
    protocol: tcp
    routes:
      - {{ pool: llama }}
pools:
  llama:
    scheduler: maglev
{extra}    backends:
{}",
        interfaces(servers.subnet),
        backends(servers, 0..servers.count())
    )
}

/// How long a dead backend may take to leave every worker's table: `fall` probe periods (each
/// up to 10 % longer for jitter), one probe timeout, and one publish and poll.
fn removal_bound() -> Duration {
    Duration::from_millis(INTERVAL_MS * u64::from(FALL) * 11 / 10 + TIMEOUT_MS + 250)
}

/// Waits until backend `addr` is in state `healthy` in a generation live on every worker;
/// returns how long that took.
fn wait_health(control: &mut Control, addr: Ipv4Addr, healthy: bool, since: Instant) -> Duration {
    control.wait(
        &format!("{addr} healthy={healthy} on every worker"),
        Duration::from_secs(20),
        |s| backend(s, "llama", addr).healthy == healthy && live_everywhere(s),
    );
    since.elapsed()
}

#[test]
fn health_killed_hung_and_wrong_model_backends_leave_every_worker_and_return_after_rise() {
    require_root();
    let mut servers = Servers::start(3, 61);
    let mut control = Control::start("health", &one_pool(&servers, &health_block()));
    let _dp = Dataplane::start(&control);
    control.wait("all up and live", Duration::from_secs(20), |s| {
        (0..3).all(|i| backend(s, "llama", servers.addr(i)).healthy) && live_everywhere(s)
    });

    let cases: [(usize, &str, &str); 3] = [
        (0, "killed", "connection refused"),
        (1, "hung", "timeout"),
        (2, "wrong model", "model llama-70b missing"),
    ];
    for (i, what, reason) in cases {
        let start = Instant::now();
        match what {
            "killed" => servers.kill(i),
            "hung" => servers.mode(i, "hang"),
            _ => servers.mode(i, "wrong_model"),
        }
        let took = wait_health(&mut control, servers.addr(i), false, start);
        let s = control.state().unwrap();
        let b = backend(&s, "llama", servers.addr(i));
        let check = b
            .check
            .as_ref()
            .expect("a checked backend has a check view");
        println!(
            "# {what} backend {}: off every worker in {} ms ({})",
            b.address,
            took.as_millis(),
            check.reason
        );
        assert_eq!(b.state, "down");
        assert_eq!(check.state, "down");
        assert!(
            check.reason.contains(reason),
            "{what}: reason `{}` should name `{reason}`",
            check.reason
        );
        assert!(
            took <= removal_bound(),
            "{what}: {took:?} to leave every worker, more than {:?}",
            removal_bound()
        );
        assert_eq!(b.effective_weight, 100, "health does not touch the weight");
    }
    let s = control.state().unwrap();
    assert_eq!(s.counters.health_transitions, 3);

    // Back: each returns after `rise` good probes.
    let start = Instant::now();
    servers.spawn(0);
    servers.mode(1, "ok");
    servers.mode(2, "ok");
    for i in 0..3 {
        let took = wait_health(&mut control, servers.addr(i), true, start);
        let s = control.state().unwrap();
        let check = backend(&s, "llama", servers.addr(i)).check.clone().unwrap();
        assert_eq!(check.state, "up");
        assert!(check.reason.contains("rise 2"), "{}", check.reason);
        assert!(
            took >= Duration::from_millis(INTERVAL_MS * 9 / 10),
            "{took:?}"
        );
    }
}

#[test]
fn health_death_to_removal_on_every_worker_over_20_trials() {
    require_root();
    let mut servers = Servers::start(2, 66);
    let mut control = Control::start("death", &one_pool(&servers, &health_block()));
    let _dp = Dataplane::start(&control);
    let mut times = Vec::new();
    for _ in 0..20 {
        wait_health(&mut control, servers.addr(0), true, Instant::now());
        let start = Instant::now();
        servers.kill(0);
        times.push(wait_health(&mut control, servers.addr(0), false, start));
        servers.spawn(0);
    }
    let (median, max) = median_max(times);
    println!(
        "# death -> removal on every worker over 20 trials: median {} ms, max {} ms \
         (interval {INTERVAL_MS} ms, fall {FALL}, bound {} ms)",
        median.as_millis(),
        max.as_millis(),
        removal_bound().as_millis()
    );
    assert!(max <= removal_bound(), "max {max:?}");
}

/// Load settings that follow every scrape: no smoothing, a rebuild at most every 100 ms.
const FAST_LOAD: &str = "    load:
      metrics: { port: 8000 }
      signals: [vllm:num_requests_waiting]
      interval: 100ms
      smoothing: 0s
      min_rebuild_interval: 100ms
";

#[test]
fn load_new_flows_split_by_reported_waiting_requests_and_stale_metrics_restore_weights() {
    require_root();
    let servers = Servers::start(3, 62);
    for (i, waiting) in [0.0, 10.0, 50.0].into_iter().enumerate() {
        servers.waiting(i, waiting);
    }
    // full_at far away: this test is about weights alone.
    let mut control = Control::start(
        "load",
        &one_pool(&servers, &format!("{FAST_LOAD}      full_at: 1000\n")),
    );
    let dp = Dataplane::start(&control);
    // effective = round(100 / (1 + waiting / 5)): 100, 33, 9.
    let expected = [100u32, 33, 9];
    control.wait("weights follow load", Duration::from_secs(20), |s| {
        (0..3).all(|i| backend(s, "llama", servers.addr(i)).effective_weight == expected[i])
            && live_everywhere(s)
    });
    let s = control.state().unwrap();
    let l = backend(&s, "llama", servers.addr(1)).load.clone().unwrap();
    assert_eq!(l.signals.get("vllm:num_requests_waiting"), Some(&10.0));
    assert_eq!(l.load, Some(2.0));

    let flows = 6000u32;
    let syns: Vec<Vec<u8>> = (0..flows)
        .map(|i| client_frame(client([10, 1], i), 40_000, SYN))
        .collect();
    dp.replay(&control.dir, "syn", &syns);
    let got = per_backend(&dp.forwarded(), |_| true);
    let total: usize = got.values().sum();
    assert_eq!(total, flows as usize, "every SYN forwarded once: {got:?}");
    let sum: u32 = expected.iter().sum();
    for (i, w) in expected.iter().enumerate() {
        let want = f64::from(*w) / f64::from(sum);
        #[allow(clippy::cast_precision_loss)]
        let share = got.get(&servers.addr(i)).copied().unwrap_or(0) as f64 / total as f64;
        println!(
            "# backend {} reporting {} waiting: weight {w}, share {:.1} % (expected {:.1} %)",
            servers.addr(i),
            [0, 10, 50][i],
            share * 100.0,
            want * 100.0
        );
        assert!(
            (share - want).abs() < 0.025,
            "backend {i}: share {share:.3}, expected {want:.3} ± 0.025"
        );
    }

    // Metrics that stop answering go stale: the configured weight comes back.
    servers.mode(2, "no_metrics");
    let s = control.wait("stale metrics", Duration::from_secs(10), |s| {
        let b = backend(s, "llama", servers.addr(2));
        b.effective_weight == 100 && b.load.as_ref().is_some_and(|l| l.stale) && live_everywhere(s)
    });
    let b = backend(&s, "llama", servers.addr(2));
    assert!(b.load.as_ref().unwrap().error.is_some());
    assert_eq!(backend(&s, "llama", servers.addr(1)).effective_weight, 33);
}

#[test]
fn noisy_load_metrics_publish_no_more_than_the_rebuild_rate_allows() {
    require_root();
    let servers = Servers::start(3, 63);
    let settings = "    load:
      metrics: { port: 8000 }
      signals: [vllm:num_requests_waiting]
      interval: 100ms
      smoothing: 0s
      min_rebuild_interval: 2s
      full_at: 1000
";
    let mut control = Control::start("noisy", &one_pool(&servers, settings));
    control.wait("scraped", Duration::from_secs(10), |s| {
        (0..3).all(|i| {
            backend(s, "llama", servers.addr(i))
                .load
                .as_ref()
                .is_some_and(|l| l.load.is_some())
        })
    });
    let before = control.state().unwrap().counters.publishes;
    // 20 s of changes every 50 ms: the 2 s rebuild interval allows 11 publishes.
    let run = Duration::from_secs(20);
    let start = Instant::now();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut sets = 0u32;
    while start.elapsed() < run {
        for i in 0..3 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            servers.waiting(i, (rng % 21) as f64);
            sets += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = control.state().unwrap();
    let publishes = s.counters.publishes - before;
    let allowed = run.as_secs() / 2 + 1;
    println!(
        "# {sets} metric changes over {} s: {publishes} generations published \
         (min_rebuild_interval 2 s allows {allowed})",
        run.as_secs()
    );
    assert!(
        publishes <= allowed,
        "{publishes} publishes in {run:?}, more than {allowed}"
    );
    assert!(
        publishes >= 5,
        "noisy load moved the weights only {publishes} times: is it followed at all?"
    );
}

/// Two regions, each with its own pool: eu-west strict, us-east falling back to eu-west.
fn regions_policy(servers: &Servers) -> String {
    let health = health_block();
    format!(
        "{}regions:
  eu-west: {{ prefixes: [10.1.0.0/16] }}
  us-east: {{ prefixes: [10.2.0.0/16] }}
services:
  - name: llama
    vip: {VIP}
    ports: [443]
    protocol: tcp
    routes:
      - {{ from: eu-west, pool: llama-eu, residency: strict }}
      - {{ from: us-east, pool: llama-us, fallback: [llama-eu] }}
      - {{ pool: llama-us }}
pools:
  llama-eu:
    region: eu-west
{health}    backends:
{}  llama-us:
    region: us-east
{health}    backends:
{}",
        interfaces(servers.subnet),
        backends(servers, 0..2),
        backends(servers, 2..3),
    )
}

fn pool_healthy(s: &switchyard_control::daemon::view::StateView, pool: &str) -> usize {
    s.pools
        .iter()
        .find(|p| p.name == pool)
        .map_or(0, |p| p.backends.iter().filter(|b| b.healthy).count())
}

/// A data-plane counter summed over workers, from the control plane's Prometheus page.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // counters are whole numbers
fn dataplane_counter(control: &Control, name: &str) -> u64 {
    let text = control.api.metrics().expect("metrics");
    let metric = format!("switchyard_dataplane_{name}_total");
    text.lines()
        .filter(|l| l.starts_with(&metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The two-region fleet with every backend of `down` (`llama-eu`: servers 0 and 1,
/// `llama-us`: server 2) killed and out of every worker's table.
fn two_regions_with_one_down(name: &str, subnet: u8, down: &str) -> (Servers, Control, Dataplane) {
    let mut servers = Servers::start(3, subnet);
    let mut control = Control::start(name, &regions_policy(&servers));
    let dp = Dataplane::start(&control);
    control.wait("all up", Duration::from_secs(20), |s| {
        pool_healthy(s, "llama-eu") == 2 && pool_healthy(s, "llama-us") == 1 && live_everywhere(s)
    });
    let dead = if down == "llama-eu" { 0..2 } else { 2..3 };
    for i in dead {
        servers.kill(i);
    }
    control.wait(&format!("{down} down"), Duration::from_secs(20), |s| {
        pool_healthy(s, down) == 0 && live_everywhere(s)
    });
    (servers, control, dp)
}

#[test]
fn health_a_pool_without_healthy_backends_fails_over_along_its_chain() {
    require_root();
    let (servers, control, dp) = two_regions_with_one_down("failover", 64, "llama-us");
    let syns: Vec<Vec<u8>> = (0..500)
        .map(|i| client_frame(client([10, 2], i), 41_000, SYN))
        .collect();
    dp.replay(&control.dir, "us", &syns);
    let got = per_backend(&dp.forwarded(), |a| a.octets()[..2] == [10, 2]);
    let eu: usize = (0..2)
        .map(|i| got.get(&servers.addr(i)).copied().unwrap_or(0))
        .sum();
    println!("# us-east clients with llama-us down: {got:?}");
    assert_eq!(
        eu, 500,
        "every us-east flow fails over to llama-eu: {got:?}"
    );
    assert!(got.get(&servers.addr(0)).copied().unwrap_or(0) > 100);
    assert!(got.get(&servers.addr(1)).copied().unwrap_or(0) > 100);
}

#[test]
fn residency_strict_route_drops_and_counts_when_its_region_has_no_healthy_backend() {
    require_root();
    let (_servers, control, dp) = two_regions_with_one_down("residency", 67, "llama-eu");
    let drops_before = dataplane_counter(&control, "drop_no_healthy_backend");
    let syns: Vec<Vec<u8>> = (0..400)
        .map(|i| client_frame(client([10, 1], i), 42_000, SYN))
        .collect();
    dp.replay(&control.dir, "eu", &syns);
    // Counters reach the segment about every half millisecond; the page reads them.
    std::thread::sleep(Duration::from_millis(500));
    let got = per_backend(&dp.forwarded(), |a| a.octets()[..2] == [10, 1]);
    let drops = dataplane_counter(&control, "drop_no_healthy_backend") - drops_before;
    println!("# eu-west clients with llama-eu down: forwarded {got:?}, dropped {drops}");
    assert!(got.is_empty(), "a strict route left its region: {got:?}");
    assert_eq!(drops, 400, "each dropped flow is counted");
}

#[test]
fn bounded_load_new_flows_spill_past_a_full_backend_and_established_flows_stay() {
    require_root();
    let servers = Servers::start(3, 65);
    // Weights pinned at 100 (min = max): only the full bit moves.
    let settings =
        format!("{FAST_LOAD}      full_at: 1.0\n      min_weight: 100\n      max_weight: 100\n");
    let mut control = Control::start("bounded", &one_pool(&servers, &settings));
    let dp = Dataplane::start(&control);
    control.wait("scraped, none full", Duration::from_secs(20), |s| {
        (0..3).all(|i| {
            backend(s, "llama", servers.addr(i))
                .load
                .as_ref()
                .is_some_and(|l| l.load == Some(0.0) && !l.full)
        }) && live_everywhere(s)
    });
    let old: Vec<(Ipv4Addr, u16)> = (0..3000).map(|i| (client([10, 1], i), 43_000)).collect();
    let syns: Vec<Vec<u8>> = old.iter().map(|&(a, p)| client_frame(a, p, SYN)).collect();
    dp.replay(&control.dir, "old", &syns);
    let before: std::collections::HashMap<(Ipv4Addr, u16), Ipv4Addr> =
        dp.forwarded().into_iter().collect();
    let full = servers.addr(0);
    let on_full = before.values().filter(|&&b| b == full).count();
    assert!(on_full > 600, "{on_full} flows on the soon-full backend");

    servers.waiting(0, 10.0); // load 2 ≥ full_at 1
    control.wait("backend 0 full", Duration::from_secs(10), |s| {
        let b = backend(s, "llama", full);
        b.load.as_ref().is_some_and(|l| l.full) && live_everywhere(s)
    });
    let s = control.state().unwrap();
    assert_eq!(backend(&s, "llama", full).effective_weight, 100);

    // Established flows keep their backend, the full one included; new ones avoid it.
    let acks: Vec<Vec<u8>> = old.iter().map(|&(a, p)| client_frame(a, p, ACK)).collect();
    dp.replay(&control.dir, "acks", &acks);
    let fresh: Vec<Vec<u8>> = (0..3000)
        .map(|i| client_frame(client([10, 2], i), 44_000, SYN))
        .collect();
    dp.replay(&control.dir, "new", &fresh);
    let all = dp.forwarded();
    let later = &all[before.len()..];
    let acked = later.iter().filter(|(f, _)| before.contains_key(f)).count();
    let moved = later
        .iter()
        .filter(|(flow, b)| before.get(flow).is_some_and(|was| was != b))
        .count();
    assert_eq!(acked, old.len(), "every established flow's ACK forwarded");
    let new = per_backend(&all, |a| a.octets()[..2] == [10, 2]);
    println!(
        "# full backend {full}: {on_full} established flows stayed ({moved} moved); new flows {new:?}"
    );
    assert_eq!(moved, 0, "established flows moved");
    assert_eq!(
        new.get(&full).copied().unwrap_or(0),
        0,
        "a new flow went to the full backend"
    );
    assert_eq!(new.values().sum::<usize>(), 3000);
    // The spilled third splits over the other two.
    for i in 1..3 {
        let n = new.get(&servers.addr(i)).copied().unwrap_or(0);
        assert!((1200..=1800).contains(&n), "backend {i} got {n} of 3000");
    }
}

fn rollout(control: &Control) -> switchyard_control::rollout::RolloutStatus {
    control
        .api
        .rollouts()
        .expect("rollouts")
        .into_iter()
        .find(|r| r.service == "llama")
        .expect("the llama rollout")
}

#[test]
fn canary_rollout_advances_on_schedule_survives_a_restart_and_rolls_back_by_itself() {
    require_root();
    let mut servers = Servers::start(3, 68);
    let health = health_block();
    let policy = format!(
        "{}services:
  - name: llama
    vip: {VIP}
    ports: [443]
    protocol: tcp
    routes:
      - {{ pool: stable }}
    canary:
      pool: canary
      steps: [10, 50, 100]
      step_interval: 3s
      rollback: {{ backends_down: 1 }}
pools:
  stable:
{health}    backends:
{}  canary:
{health}    backends:
{}",
        interfaces(servers.subnet),
        backends(&servers, 0..2),
        backends(&servers, 2..3),
    );
    let mut control = Control::start("canary", &policy);
    let dp = Dataplane::start(&control);
    control.wait("canary at 10 %", Duration::from_secs(20), |s| {
        live_everywhere(s) && s.rollouts.first().is_some_and(|r| r.percent == "10%")
    });
    let canary = servers.addr(2);
    let share = |got: &std::collections::HashMap<Ipv4Addr, usize>| {
        let all: usize = got.values().sum();
        got.get(&canary).copied().unwrap_or(0) as f64 / all.max(1) as f64
    };

    // Step 1: 10 % of new flows.
    let first: Vec<(Ipv4Addr, u16)> = (0..2000).map(|i| (client([10, 1], i), 45_000)).collect();
    let syns: Vec<Vec<u8>> = first
        .iter()
        .map(|&(a, p)| client_frame(a, p, SYN))
        .collect();
    dp.replay(&control.dir, "step1", &syns);
    let established: std::collections::HashMap<(Ipv4Addr, u16), Ipv4Addr> =
        dp.forwarded().into_iter().collect();
    let s1 = share(&per_backend(&dp.forwarded(), |a| {
        a.octets()[..2] == [10, 1]
    }));
    println!(
        "# step 1 (10 %): canary share of new flows {:.1} %",
        s1 * 100.0
    );
    assert!((s1 - 0.10).abs() < 0.03, "step 1 share {s1}");

    // The next step comes on schedule; progress survives a control-plane restart.
    let started = Instant::now();
    control.wait("canary at 50 %", Duration::from_secs(10), |s| {
        live_everywhere(s) && s.rollouts.first().is_some_and(|r| r.percent == "50%")
    });
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_millis(3500),
        "step 2 after {waited:?}"
    );
    control.restart();
    let r = rollout(&control);
    assert_eq!((r.step, r.percent.as_str()), (1, "50%"), "{r:?}");
    assert!(r.next_step_in_secs.is_some_and(|s| s <= 3), "{r:?}");
    let text = control.cli(&["rollout", "status"]);
    assert!(text.contains("llama") && text.contains("50%"), "{text}");

    let before = dp.forwarded().len();
    let syns: Vec<Vec<u8>> = (0..2000)
        .map(|i| client_frame(client([10, 2], i), 45_000, SYN))
        .collect();
    dp.replay(&control.dir, "step2", &syns);
    let s2 = share(&per_backend(&dp.forwarded()[before..], |a| {
        a.octets()[..2] == [10, 2]
    }));
    println!(
        "# step 2 (50 %): canary share of new flows {:.1} %",
        s2 * 100.0
    );
    assert!((s2 - 0.50).abs() < 0.05, "step 2 share {s2}");

    // The canary pool degrades: the rollout rolls back to 0 by itself.
    servers.kill(2);
    let s = control.wait("rolled back", Duration::from_secs(10), |s| {
        live_everywhere(s)
            && s.rollouts
                .first()
                .is_some_and(|r| r.state.as_str() == "rolled_back" && r.percent == "0%")
    });
    println!(
        "# rolled back: {}",
        s.rollouts[0].reason.clone().unwrap_or_default()
    );

    // Established flows on the stable pool keep their backend; new flows avoid the canary.
    let before = dp.forwarded().len();
    let acks: Vec<Vec<u8>> = first
        .iter()
        .map(|&(a, p)| client_frame(a, p, ACK))
        .collect();
    dp.replay(&control.dir, "acks", &acks);
    let fresh: Vec<Vec<u8>> = (0..1000)
        .map(|i| client_frame(client([10, 3], i), 45_000, SYN))
        .collect();
    dp.replay(&control.dir, "after", &fresh);
    let after = &dp.forwarded()[before..];
    let stable_broken = after
        .iter()
        .filter(|(flow, b)| {
            established
                .get(flow)
                .is_some_and(|was| *was != canary && was != b)
        })
        .count();
    let stable_kept = after
        .iter()
        .filter(|(flow, b)| {
            established
                .get(flow)
                .is_some_and(|was| *was != canary && was == b)
        })
        .count();
    println!(
        "# after rollback: {stable_kept} stable flows kept their backend, {stable_broken} moved"
    );
    assert_eq!(stable_broken, 0);
    assert!(stable_kept > 1600);
    let new = per_backend(after, |a| a.octets()[..2] == [10, 3]);
    assert_eq!(
        new.get(&canary),
        None,
        "new flows after the rollback: {new:?}"
    );
    assert_eq!(new.values().sum::<usize>(), 1000);
}
