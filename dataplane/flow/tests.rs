use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

const T0: u32 = 1_000;

fn v4(i: u32) -> FlowKeyV4 {
    FlowKeyV4::from_bits(
        0x0a00_0000_u32.wrapping_add(i),
        0xcb00_710a,
        40_000,
        443,
        PROTO_TCP,
    )
}

fn udp4(i: u32) -> FlowKeyV4 {
    FlowKeyV4::from_bits(
        0x0a00_0000_u32.wrapping_add(i),
        0xcb00_710a,
        40_000,
        443,
        PROTO_UDP,
    )
}

fn n32(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

fn val(backend: u32) -> FlowValue {
    FlowValue { backend, slot: 7 }
}

fn table<K: FlowKey>(flows: usize) -> FlowTable<K> {
    FlowTable::with_capacity(flows, Timeouts::default(), InsertLimit::UNLIMITED)
}

/// Keys of `count` distinct flows that all hash into bucket 0 of `table`.
fn same_bucket_keys(table: &FlowTable<FlowKeyV4>, count: usize) -> Vec<FlowKeyV4> {
    let mask = n32(table.bucket_count()) - 1;
    (0u32..)
        .map(v4)
        .filter(|k| k.hash() & mask == 0)
        .take(count)
        .collect()
}

#[test]
fn sizes() {
    assert_eq!(FlowTable::<FlowKeyV4>::ENTRY_BYTES, 32);
    assert_eq!(FlowTable::<FlowKeyV4>::BUCKET_BYTES, 64 + 8 * 32);
    assert_eq!(FlowTable::<FlowKeyV4>::BYTES_PER_FLOW, 40);
    assert_eq!(FlowTable::<FlowKeyV6>::ENTRY_BYTES, 64);
    assert_eq!(FlowTable::<FlowKeyV6>::BYTES_PER_FLOW, 72);
    assert_eq!(core::mem::size_of::<FlowKeyV4>(), 16);
    assert_eq!(core::mem::size_of::<FlowKeyV6>(), 40);
}

#[test]
fn key_accessors_round_trip() {
    let k = FlowKeyV4::new(
        Ipv4Addr::new(10, 1, 2, 3),
        Ipv4Addr::new(203, 0, 113, 10),
        51_000,
        443,
        PROTO_TCP,
    );
    assert_eq!(k.src(), Ipv4Addr::new(10, 1, 2, 3));
    assert_eq!(k.dst(), Ipv4Addr::new(203, 0, 113, 10));
    assert_eq!((k.sport(), k.dport(), k.proto()), (51_000, 443, PROTO_TCP));
    assert_eq!(
        format!("{k:?}"),
        "10.1.2.3:51000 -> 203.0.113.10:443 proto 6"
    );

    let src: Ipv6Addr = "2001:db8:1::42".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8:100::10".parse().unwrap();
    let k6 = FlowKeyV6::new(src, dst, 1, 65_535, PROTO_UDP);
    assert_eq!((k6.src(), k6.dst()), (src, dst));
    assert_eq!((k6.sport(), k6.dport(), k6.proto()), (1, 65_535, PROTO_UDP));
}

#[test]
fn hash_is_deterministic_and_seeded() {
    let k = v4(1);
    assert_eq!(k.hash(), v4(1).hash());
    assert_eq!(k.hash(), fold32(k.hash_seeded(DEFAULT_SEED)));
    assert_ne!(k.hash_seeded(1), k.hash_seeded(2));
    assert_ne!(v4(1).hash(), v4(2).hash());
    // Each field matters.
    let base = FlowKeyV4::from_bits(1, 2, 3, 4, 6);
    for other in [
        FlowKeyV4::from_bits(0, 2, 3, 4, 6),
        FlowKeyV4::from_bits(1, 0, 3, 4, 6),
        FlowKeyV4::from_bits(1, 2, 0, 4, 6),
        FlowKeyV4::from_bits(1, 2, 3, 0, 6),
        FlowKeyV4::from_bits(1, 2, 3, 4, 17),
    ] {
        assert_ne!(base.hash(), other.hash(), "{other:?}");
    }
    assert_ne!(hash_words(0, &[5]), hash_words(0, &[5, 0]));
    assert_eq!(hash_words(9, &[1, 2, 3]), hash_words(9, &[1, 2, 3]));
}

#[test]
fn hash_avalanche() {
    // Flipping one input bit flips about half of the 32 output bits, on average per input bit.
    let base = FlowKeyV4::from_bits(0x0a01_0203, 0xcb00_710a, 40_000, 443, 6);
    for bit in 0..32 {
        let mut flips = 0u32;
        for i in 0..256u32 {
            let a = FlowKeyV4::from_bits(0x0a01_0203 ^ (i << 8), 0xcb00_710a, 40_000, 443, 6);
            let b = FlowKeyV4::from_bits(
                (0x0a01_0203 ^ (i << 8)) ^ (1 << bit),
                0xcb00_710a,
                40_000,
                443,
                6,
            );
            flips += (a.hash() ^ b.hash()).count_ones();
        }
        let mean = f64::from(flips) / 256.0;
        assert!((13.0..19.0).contains(&mean), "src bit {bit}: {mean}");
    }
    let _ = base;
}

fn assert_uniform(hashes: impl Iterator<Item = u32>, buckets: usize, n: usize) {
    let mask = n32(buckets) - 1;
    let mut counts = vec![0u32; buckets];
    for h in hashes {
        counts[(h & mask) as usize] += 1;
    }
    let mean = n as f64 / buckets as f64;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (f64::from(c) - mean).powi(2) / mean)
        .sum();
    // chi² with `buckets - 1` degrees of freedom: mean ≈ buckets, sd ≈ sqrt(2·buckets).
    let dof = buckets as f64;
    let z = (chi2 - dof) / (2.0 * dof).sqrt();
    let max = f64::from(*counts.iter().max().unwrap());
    assert!(
        z.abs() < 6.0,
        "chi2 {chi2:.0} for {buckets} buckets (z {z:.1})"
    );
    // Poisson tail: at mean 8, P(X ≥ 31) ≈ 1e-9 per bucket.
    assert!(
        max < mean + 8.0 * mean.sqrt() + 1.0,
        "fullest bucket {max}, mean {mean}"
    );
}

#[test]
fn hash_spreads_sequential_v4_sources() {
    const N: u32 = 1 << 20;
    assert_uniform((0..N).map(|i| v4(i).hash()), 1 << 17, N as usize);
    // Sequential source ports from one client.
    assert_uniform(
        (0..N).map(|i| {
            FlowKeyV4::from_bits(
                0x0a00_0001 + (i >> 16),
                0xcb00_710a,
                (i & 0xffff).try_into().unwrap(),
                443,
                6,
            )
            .hash()
        }),
        1 << 17,
        N as usize,
    );
    // Tags (upper 16 bits) spread too.
    assert_uniform((0..N).map(|i| v4(i).hash() >> 16), 1 << 13, N as usize);
}

#[test]
fn hash_spreads_sequential_v6_sources() {
    const N: u32 = 1 << 18;
    let hashes = (0..N).map(|i| {
        FlowKeyV6::from_bits(
            0x2001_0db8_0001_0000_0000_0000_0000_0000 + u128::from(i),
            0x2001_0db8_0100_0000_0000_0000_0000_0010,
            40_000,
            443,
            6,
        )
        .hash()
    });
    assert_uniform(hashes, 1 << 15, N as usize);
}

#[test]
fn capacity_rounds_up_to_power_of_two_buckets() {
    let t = table::<FlowKeyV4>(1_000);
    assert_eq!(t.bucket_count(), 128);
    assert_eq!(t.capacity(), 1_024);
    assert_eq!(table::<FlowKeyV4>(0).capacity(), 2 * WAYS);
    assert_eq!(table::<FlowKeyV4>(1 << 20).capacity(), 1 << 20);
    assert_eq!(t.memory_bytes(), 128 * 320);
}

#[test]
fn insert_lookup_remove() {
    let mut t = table::<FlowKeyV4>(1_024);
    let k = v4(1);
    assert!(t.lookup(&k, k.hash(), T0).is_none());
    let st = FlowState::initial(PROTO_TCP, tcp_flags::SYN);
    assert_eq!(st, FlowState::TcpHandshake);
    assert_eq!(
        t.insert(&k, k.hash(), val(3), st, T0),
        InsertOutcome::Inserted
    );
    assert_eq!(t.len(), 1);
    {
        let mut e = t.lookup(&k, k.hash(), T0 + 1).unwrap();
        assert_eq!(*e.key(), k);
        assert_eq!(e.value(), val(3));
        assert_eq!(e.backend(), 3);
        assert_eq!(e.state(), FlowState::TcpHandshake);
        assert_eq!(e.last_seen(), T0 + 1);
        assert_eq!(e.on_tcp_flags(tcp_flags::ACK), FlowState::TcpEstablished);
        e.value_mut().backend = 4;
    }
    assert_eq!(
        t.peek(&k, k.hash(), T0 + 2),
        Some((val(4), FlowState::TcpEstablished))
    );
    // Same key again: overwritten, not duplicated.
    assert_eq!(
        t.insert(&k, k.hash(), val(5), FlowState::TcpHandshake, T0 + 3),
        InsertOutcome::Replaced
    );
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(&k, k.hash(), T0 + 4).unwrap().backend(), 5);
    // Another key is a miss.
    assert!(t.lookup(&v4(2), v4(2).hash(), T0).is_none());
    assert_eq!(t.remove(&k, k.hash()), Some(val(5)));
    assert_eq!(t.remove(&k, k.hash()), None);
    assert!(t.lookup(&k, k.hash(), T0 + 5).is_none());
    assert!(t.is_empty());
    let c = t.counters();
    assert_eq!((c.hits, c.misses, c.inserts, c.replaced), (2, 3, 1, 1));
}

#[test]
fn v6_table_works() {
    let mut t = table::<FlowKeyV6>(1 << 10);
    let keys: Vec<_> = (0..40u128)
        .map(|i| FlowKeyV6::from_bits(i << 64 | 1, 99, 1000, 443, PROTO_TCP))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let out = t.insert(k, k.hash(), val(n32(i)), FlowState::TcpEstablished, T0);
        assert_eq!(out, InsertOutcome::Inserted);
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(t.lookup(k, k.hash(), T0).unwrap().backend(), n32(i));
    }
}

#[test]
fn tcp_state_machine() {
    use tcp_flags::{ACK, FIN, RST, SYN};
    use FlowState::{Datagram, TcpClosing, TcpEstablished, TcpHandshake, TcpProvisional};
    assert_eq!(FlowState::initial(PROTO_UDP, SYN), Datagram);
    assert_eq!(FlowState::initial(PROTO_TCP, ACK), TcpProvisional);
    assert_eq!(TcpProvisional.after_tcp_flags(ACK), TcpEstablished);
    assert_eq!(TcpProvisional.after_tcp_flags(0x08 | ACK), TcpEstablished);
    assert_eq!(TcpProvisional.after_tcp_flags(SYN), TcpHandshake);
    assert_eq!(TcpProvisional.after_tcp_flags(FIN | ACK), TcpClosing);
    assert_eq!(
        FlowState::from_raw(TcpProvisional as u8),
        Some(TcpProvisional)
    );
    assert_eq!(FlowState::initial(PROTO_TCP, RST), TcpClosing);
    assert_eq!(TcpHandshake.after_tcp_flags(SYN), TcpHandshake);
    assert_eq!(TcpHandshake.after_tcp_flags(SYN | ACK), TcpHandshake);
    assert_eq!(TcpHandshake.after_tcp_flags(ACK), TcpEstablished);
    assert_eq!(TcpHandshake.after_tcp_flags(RST), TcpClosing);
    assert_eq!(TcpEstablished.after_tcp_flags(ACK), TcpEstablished);
    assert_eq!(TcpEstablished.after_tcp_flags(FIN | ACK), TcpClosing);
    assert_eq!(TcpClosing.after_tcp_flags(ACK), TcpClosing);
    assert_eq!(TcpClosing.after_tcp_flags(SYN), TcpHandshake);
    assert_eq!(Datagram.after_tcp_flags(FIN), Datagram);
}

/// Inserts `key` in `state` at `T0` and reports whether it is still live at `T0 + age`.
fn alive_after<K: FlowKey>(key: K, state: FlowState, age: u32, start: u32) -> bool {
    let mut t = table::<K>(64);
    t.insert(&key, key.hash(), val(1), state, start);
    let hit = t
        .lookup(&key, key.hash(), start.wrapping_add(age))
        .is_some();
    if !hit {
        // The expired entry was reclaimed.
        assert_eq!(t.len(), 0);
        assert_eq!(t.counters().expired, 1);
    }
    hit
}

#[test]
fn timeouts_per_protocol_and_state() {
    let d = Timeouts::default();
    let cases = [
        (v4(1), FlowState::TcpHandshake, d.tcp_handshake_ms),
        (v4(1), FlowState::TcpEstablished, d.tcp_established_ms),
        (v4(1), FlowState::TcpClosing, d.tcp_closing_ms),
        (udp4(1), FlowState::Datagram, d.udp_ms),
    ];
    assert_eq!(
        cases.map(|c| c.2),
        [5_000, 900_000, 10_000, 30_000],
        "documented defaults"
    );
    for (key, state, timeout) in cases {
        assert!(alive_after(key, state, timeout, T0), "{state:?} at timeout");
        assert!(!alive_after(key, state, timeout + 1, T0), "{state:?} after");
    }
}

#[test]
fn activity_extends_life_and_state_changes_timeout() {
    let mut t = table::<FlowKeyV4>(64);
    let k = v4(1);
    t.insert(&k, k.hash(), val(1), FlowState::TcpHandshake, T0);
    // Packets every 4 s keep a handshake entry alive past 5 s.
    for i in 1..=5 {
        assert!(t.lookup(&k, k.hash(), T0 + i * 4_000).is_some());
    }
    let now = T0 + 20_000;
    t.lookup(&k, k.hash(), now)
        .unwrap()
        .on_tcp_flags(tcp_flags::ACK);
    // Established: 100 s of silence is fine.
    assert!(t.lookup(&k, k.hash(), now + 100_000).is_some());
    t.lookup(&k, k.hash(), now + 100_000)
        .unwrap()
        .on_tcp_flags(tcp_flags::FIN | tcp_flags::ACK);
    // Closing: 10 s.
    assert!(t.peek(&k, k.hash(), now + 110_000).is_some());
    assert!(t.lookup(&k, k.hash(), now + 110_001).is_none());
}

#[test]
fn clock_wrap_around() {
    // Inserted just before the u32 ms clock wraps, looked up just after.
    let start = u32::MAX - 1_000;
    assert!(alive_after(v4(1), FlowState::TcpHandshake, 4_000, start));
    assert!(!alive_after(v4(1), FlowState::TcpHandshake, 6_000, start));
    assert!(alive_after(udp4(1), FlowState::Datagram, 30_000, start));

    // Sweep and eviction across the wrap.
    let mut t = table::<FlowKeyV4>(64);
    t.insert(&v4(1), v4(1).hash(), val(1), FlowState::TcpHandshake, start);
    t.insert(
        &v4(2),
        v4(2).hash(),
        val(2),
        FlowState::TcpEstablished,
        start,
    );
    assert_eq!(t.sweep(start.wrapping_add(4_000), usize::MAX), 0);
    assert_eq!(t.sweep(start.wrapping_add(6_000), usize::MAX), 1);
    assert_eq!(t.len(), 1);
    assert!(t
        .lookup(&v4(2), v4(2).hash(), start.wrapping_add(6_000))
        .is_some());
}

/// A full two-bucket table: every key's two candidate buckets are the whole table, so an
/// insert chooses among all 16 ways.
fn full_two_bucket_table(state: impl Fn(u32) -> FlowState) -> FlowTable<FlowKeyV4> {
    let mut t = table::<FlowKeyV4>(16);
    assert_eq!(t.bucket_count(), 2);
    for i in 0..16 {
        let k = v4(i);
        let out = t.insert(&k, k.hash(), val(i), state(i), T0 + i);
        assert_eq!(out, InsertOutcome::Inserted, "key {i}");
    }
    t.check_invariants();
    t
}

#[test]
fn full_buckets_evict_least_recently_seen() {
    let mut t = full_two_bucket_table(|_| FlowState::TcpEstablished);
    // Touch all but key 3, in key order, so key 3 and then key 0 are the least recently seen.
    for i in (0..16).filter(|&i| i != 3) {
        assert!(t.lookup(&v4(i), v4(i).hash(), T0 + 100 + i).is_some());
    }
    let new = v4(16);
    let out = t.insert(
        &new,
        new.hash(),
        val(99),
        FlowState::TcpEstablished,
        T0 + 200,
    );
    assert_eq!(out, InsertOutcome::Evicted);
    assert_eq!(t.counters().evicted, 1);
    assert_eq!(t.len(), 16);
    for i in 0..16 {
        assert_eq!(
            t.peek(&v4(i), v4(i).hash(), T0 + 200).is_some(),
            i != 3,
            "key {i}"
        );
    }
    assert_eq!(t.peek(&new, new.hash(), T0 + 200).unwrap().0, val(99));

    let newer = v4(17);
    t.insert(
        &newer,
        newer.hash(),
        val(100),
        FlowState::TcpEstablished,
        T0 + 300,
    );
    assert!(t.peek(&v4(0), v4(0).hash(), T0 + 300).is_none());
    assert!(t.peek(&v4(1), v4(1).hash(), T0 + 300).is_some());
    t.check_invariants();
}

#[test]
fn every_value_leaving_the_table_is_reported() {
    // Eviction.
    let mut t = full_two_bucket_table(|_| FlowState::TcpEstablished);
    let mut gone = Vec::new();
    let k = v4(16);
    let out = t.insert_with(
        &k,
        k.hash(),
        val(99),
        FlowState::TcpEstablished,
        T0 + 20,
        |v| {
            gone.push(v);
        },
    );
    assert_eq!(out, InsertOutcome::Evicted);
    assert_eq!(gone, vec![val(0)], "the least recently seen flow, key 0");
    // Replacing a live key reports its old value.
    gone.clear();
    let out = t.insert_with(
        &k,
        k.hash(),
        val(100),
        FlowState::TcpEstablished,
        T0 + 21,
        |v| {
            gone.push(v);
        },
    );
    assert_eq!(out, InsertOutcome::Replaced);
    assert_eq!(gone, vec![val(99)]);
    // An expired entry met by a lookup.
    gone.clear();
    let late = T0 + 21 + Timeouts::default().tcp_established_ms + 1;
    assert!(t
        .lookup_with(&k, k.hash(), late, |v| gone.push(v))
        .is_none());
    assert_eq!(gone, vec![val(100)]);
    // The sweep reports everything it reclaims.
    gone.clear();
    let freed = t.sweep_with(late + 1_000_000, 2, |v| gone.push(v));
    assert_eq!(freed, 15);
    assert_eq!(gone.len(), 15);
    assert!(t.is_empty());
    // An expired entry met by an insert of the same key.
    let mut t = table::<FlowKeyV4>(16);
    t.insert(&v4(1), v4(1).hash(), val(1), FlowState::Datagram, T0);
    gone.clear();
    let out = t.insert_with(
        &v4(1),
        v4(1).hash(),
        val(2),
        FlowState::Datagram,
        T0 + 40_000,
        |v| {
            gone.push(v);
        },
    );
    assert_eq!(out, InsertOutcome::Inserted);
    assert_eq!(gone, vec![val(1)]);
    t.check_invariants();
}

#[test]
fn eviction_sacrifices_handshakes_before_established_flows() {
    // Key 0: established, idle for a minute. Others: fresh half-open handshakes.
    let mut t = table::<FlowKeyV4>(16);
    t.insert(&v4(0), v4(0).hash(), val(0), FlowState::TcpEstablished, T0);
    for i in 1..16 {
        t.insert(
            &v4(i),
            v4(i).hash(),
            val(1),
            FlowState::TcpHandshake,
            T0 + 60_000,
        );
    }
    assert_eq!(t.len(), 16);
    let k = v4(16);
    let out = t.insert(&k, k.hash(), val(2), FlowState::TcpHandshake, T0 + 61_000);
    assert_eq!(out, InsertOutcome::Evicted);
    assert!(t.peek(&v4(0), v4(0).hash(), T0 + 61_000).is_some());
    t.check_invariants();
}

#[test]
fn insert_reuses_expired_way_before_evicting() {
    let mut t = full_two_bucket_table(|i| {
        if i == 5 {
            FlowState::TcpHandshake
        } else {
            FlowState::TcpEstablished
        }
    });
    let k = v4(16);
    let out = t.insert(&k, k.hash(), val(2), FlowState::TcpHandshake, T0 + 6_000);
    assert_eq!(out, InsertOutcome::Inserted);
    let c = t.counters();
    assert_eq!((c.evicted, c.expired, t.len()), (0, 1, 16));
    assert!(t.peek(&v4(5), v4(5).hash(), T0 + 6_000).is_none());
    t.check_invariants();
}

#[test]
fn full_primary_spills_to_secondary_bucket() {
    let mut t = table::<FlowKeyV4>(64);
    let keys = same_bucket_keys(&t, WAYS + 4);
    for (i, k) in keys.iter().enumerate() {
        let out = t.insert(k, k.hash(), val(n32(i)), FlowState::TcpEstablished, T0);
        assert_eq!(out, InsertOutcome::Inserted, "key {i}");
    }
    t.check_invariants();
    assert_eq!(t.counters().evicted, 0);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(t.lookup(k, k.hash(), T0 + 1).unwrap().backend(), n32(i));
    }
    // Removing spilled and primary flows keeps the spill counts right.
    assert_eq!(
        t.remove(&keys[WAYS + 1], keys[WAYS + 1].hash()),
        Some(val(9))
    );
    assert_eq!(t.remove(&keys[0], keys[0].hash()), Some(val(0)));
    t.check_invariants();
    // State changes keep the secondary mark.
    let mut e = t.lookup(&keys[WAYS], keys[WAYS].hash(), T0 + 2).unwrap();
    e.on_tcp_flags(tcp_flags::FIN);
    assert_eq!(e.state(), FlowState::TcpClosing);
    t.check_invariants();
    // Spilled flows expire like the others, by lookup and by sweep.
    assert!(t
        .lookup(&keys[WAYS], keys[WAYS].hash(), T0 + 20_000)
        .is_none());
    t.check_invariants();
    let len = t.len();
    assert_eq!(t.sweep(T0 + 1_000_000, usize::MAX), len);
    assert!(t.is_empty());
    t.check_invariants();
}

#[test]
fn two_choices_keep_evictions_rare() {
    // 75 % load: single-choice 8-way buckets would lose ~5 % of these flows.
    let mut t = table::<FlowKeyV4>(1 << 16);
    let n = n32(t.capacity()) / 4 * 3;
    for i in 0..n {
        let k = v4(i.wrapping_mul(0x9E37_79B9));
        t.insert(&k, k.hash(), val(1), FlowState::TcpEstablished, T0);
    }
    let lost = t.counters().evicted;
    assert!(lost * 50 < u64::from(n), "evicted {lost} of {n}");
    t.check_invariants();
}

#[test]
fn capacity_bound_holds_under_ten_times_capacity_inserts() {
    let mut t = table::<FlowKeyV4>(4_096);
    let cap = t.capacity();
    let n = 10 * n32(cap);
    for i in 0..n {
        let k = v4(i);
        let out = t.insert(&k, k.hash(), val(i), FlowState::TcpEstablished, T0);
        assert_ne!(out, InsertOutcome::Throttled);
        assert!(t.len() <= cap);
    }
    assert_eq!(t.len(), cap);
    let c = t.counters();
    assert_eq!(c.inserts, u64::from(n));
    assert_eq!(c.evicted, u64::from(n) - cap as u64);
    t.check_invariants();
    // The most recent keys survive wherever their bucket allowed: every live entry is findable.
    let live = (0..n)
        .filter(|&i| t.peek(&v4(i), v4(i).hash(), T0).is_some())
        .count();
    assert_eq!(live, cap);
}

#[test]
fn insertion_is_throttled_by_token_bucket() {
    let limit = InsertLimit {
        per_second: 10_000,
        burst: 100,
    };
    let mut t = FlowTable::<FlowKeyV4>::with_capacity(1 << 16, Timeouts::default(), limit);
    let mut i = 0;
    let mut insert = |t: &mut FlowTable<FlowKeyV4>, now| {
        i += 1;
        let k = v4(i);
        t.insert(&k, k.hash(), val(1), FlowState::TcpHandshake, now)
    };
    // The burst passes, then nothing until time moves.
    for _ in 0..100 {
        assert_eq!(insert(&mut t, T0), InsertOutcome::Inserted);
    }
    assert_eq!(insert(&mut t, T0), InsertOutcome::Throttled);
    assert_eq!(t.counters().insert_throttled, 1);
    // 10 000/s = 10 per ms.
    let admitted = (0..50).filter(|_| insert(&mut t, T0 + 1) != InsertOutcome::Throttled);
    assert_eq!(admitted.count(), 10);
    // A long pause refills at most the burst.
    let admitted = (0..500).filter(|_| insert(&mut t, T0 + 60_000) != InsertOutcome::Throttled);
    assert_eq!(admitted.count(), 100);
    // Sustained: over one simulated second at 1 ms ticks, about per_second inserts pass.
    let mut passed = 0;
    for ms in 1..=1_000 {
        passed += (0..20)
            .filter(|_| insert(&mut t, T0 + 60_000 + ms) != InsertOutcome::Throttled)
            .count();
    }
    assert_eq!(passed, 10_000);
    // Across the clock wrap.
    let mut w = FlowTable::<FlowKeyV4>::with_capacity(1 << 10, Timeouts::default(), limit);
    for _ in 0..100 {
        assert_ne!(insert(&mut w, u32::MAX), InsertOutcome::Throttled);
    }
    assert_eq!(insert(&mut w, u32::MAX), InsertOutcome::Throttled);
    assert_ne!(insert(&mut w, 0), InsertOutcome::Throttled);
    // Replacing a live key draws no token.
    let k = v4(i);
    assert_eq!(
        w.insert(&k, k.hash(), val(2), FlowState::TcpEstablished, 0),
        InsertOutcome::Replaced
    );
}

#[test]
fn sweep_is_bounded_and_round_robin() {
    let mut t = table::<FlowKeyV4>(1 << 14);
    for i in 0..2_000 {
        let k = udp4(i);
        t.insert(&k, k.hash(), val(1), FlowState::Datagram, T0);
    }
    let buckets = t.bucket_count();
    assert_eq!(t.sweep(T0 + 30_000, buckets), 0);
    let late = T0 + 30_001;
    let mut freed = 0;
    let mut calls = 0;
    while calls * 64 < buckets {
        let f = t.sweep(late, 64);
        assert!(f <= 64 * WAYS);
        freed += f;
        calls += 1;
    }
    assert_eq!(freed, 2_000);
    assert!(t.is_empty());
    assert_eq!(t.counters().expired, 2_000);
}

#[test]
fn retain_and_for_each_mut_repoint_flows() {
    let mut t = table::<FlowKeyV4>(1 << 14);
    for i in 0..500 {
        let k = v4(i);
        t.insert(&k, k.hash(), val(i % 5 + 1), FlowState::TcpEstablished, T0);
    }
    // Backend 3 left the pool: drop its flows; re-point backend 4 to 6, stamp generation 2.
    let mut dropped = 0;
    let half = t.bucket_count() / 2;
    for range in [0..half, half..usize::MAX] {
        dropped += t.retain_buckets(range, |_, v, _| {
            if v.backend == 4 {
                v.backend = 6;
            }
            v.slot = 2;
            v.backend != 3
        });
    }
    assert_eq!(dropped, 100);
    assert_eq!(t.len(), 400);
    let mut seen = [0usize; 8];
    t.for_each_mut(|_, v, state| {
        assert_eq!(state, FlowState::TcpEstablished);
        assert_eq!(v.slot, 2);
        seen[v.backend as usize] += 1;
    });
    assert_eq!(seen, [0, 100, 100, 0, 0, 100, 100, 0]);
    assert_eq!(t.retain(|k, _, _| k.src().octets()[3] % 2 == 0), 200);
    t.clear();
    assert!(t.is_empty());
    assert!(t.lookup(&v4(0), v4(0).hash(), T0).is_none());
}

#[test]
fn counters_have_names() {
    let mut t = table::<FlowKeyV4>(64);
    t.count_non_syn_miss();
    let pairs: Vec<_> = t.counters().iter().collect();
    assert_eq!(pairs.len(), FlowCounters::NAMES.len());
    assert!(pairs.contains(&("flow_non_syn_miss", 1)));
    assert!(pairs.contains(&("flow_hits", 0)));
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u16, u32),
    Lookup(u16),
    Remove(u16),
    Advance(u32),
    Sweep(u16),
}

fn op() -> impl Strategy<Value = Op> {
    // A small key space so operations collide on the same keys.
    prop_oneof![
        4 => (0u16..300, 1u32..1_000).prop_map(|(k, b)| Op::Insert(k, b)),
        4 => (0u16..300).prop_map(Op::Lookup),
        1 => (0u16..300).prop_map(Op::Remove),
        1 => (0u32..4_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against a HashMap model, in a table big enough that no bucket overflows (300 keys in
    /// 64 Ki ways), with UDP timeouts of 30 s and time advancing in steps of up to 4 s.
    #[test]
    fn matches_hashmap_model(ops in prop::collection::vec(op(), 1..400), start in any::<u32>()) {
        let mut t = table::<FlowKeyV4>(1 << 16);
        let mut model: HashMap<FlowKeyV4, (u32, u32)> = HashMap::new();
        let timeout = Timeouts::default().udp_ms;
        let mut now = start;
        let key = |k: u16| FlowKeyV4::from_bits(0x0a00_0000 | u32::from(k), 1, k, 53, PROTO_UDP);
        for op in ops {
            match op {
                Op::Insert(k, b) => {
                    let k = key(k);
                    let live = model.get(&k).is_some_and(|&(_, seen)| now.wrapping_sub(seen) <= timeout);
                    let out = t.insert(&k, k.hash(), val(b), FlowState::Datagram, now);
                    prop_assert_eq!(out, if live { InsertOutcome::Replaced } else { InsertOutcome::Inserted });
                    model.insert(k, (b, now));
                }
                Op::Lookup(k) => {
                    let k = key(k);
                    let expect = match model.get_mut(&k) {
                        Some((b, seen)) if now.wrapping_sub(*seen) <= timeout => {
                            *seen = now;
                            Some(*b)
                        }
                        Some(_) => {
                            model.remove(&k);
                            None
                        }
                        None => None,
                    };
                    let got = t.lookup(&k, k.hash(), now).map(|e| e.backend());
                    prop_assert_eq!(got, expect);
                }
                Op::Remove(k) => {
                    let k = key(k);
                    let got = t.remove(&k, k.hash()).map(|v| v.backend);
                    prop_assert_eq!(got, model.remove(&k).map(|(b, _)| b));
                }
                Op::Advance(ms) => now = now.wrapping_add(ms),
                // Not generated here: a partial sweep would make `len` unpredictable.
                Op::Sweep(_) => {}
            }
            prop_assert_eq!(t.len(), model.len());
        }
        prop_assert_eq!(t.counters().evicted, 0);
        t.check_invariants();
    }

    /// Under heavy overflow (60 keys for 32 ways) with sweeps: the table may forget flows, but
    /// never returns a value that is not the latest live one, never exceeds its capacity, and
    /// keeps its spill counts exact.
    #[test]
    fn overflowing_table_never_lies(
        ops in prop::collection::vec(prop_oneof![
            6 => (0u16..60, 1u32..1_000).prop_map(|(k, b)| Op::Insert(k, b)),
            4 => (0u16..60).prop_map(Op::Lookup),
            1 => (0u16..60).prop_map(Op::Remove),
            2 => (0u32..10_000).prop_map(Op::Advance),
            1 => (0u16..4).prop_map(Op::Sweep),
        ], 1..300),
        start in any::<u32>(),
    ) {
        let mut t = table::<FlowKeyV4>(32);
        let mut model: HashMap<FlowKeyV4, (u32, u32)> = HashMap::new();
        let timeout = Timeouts::default().tcp_handshake_ms;
        let mut now = start;
        let key = |k: u16| FlowKeyV4::from_bits(0x0a00_0000 | u32::from(k), 1, k, 443, PROTO_TCP);
        let live = |model: &HashMap<FlowKeyV4, (u32, u32)>, k: &FlowKeyV4, now: u32| {
            model.get(k).filter(|&&(_, seen)| now.wrapping_sub(seen) <= timeout).map(|&(b, _)| b)
        };
        for op in ops {
            match op {
                Op::Insert(k, b) => {
                    let k = key(k);
                    let out = t.insert(&k, k.hash(), val(b), FlowState::TcpHandshake, now);
                    if out == InsertOutcome::Replaced {
                        prop_assert!(live(&model, &k, now).is_some());
                    }
                    prop_assert_ne!(out, InsertOutcome::Throttled);
                    model.insert(k, (b, now));
                }
                Op::Lookup(k) => {
                    let k = key(k);
                    let expect = live(&model, &k, now);
                    let got = t.lookup(&k, k.hash(), now).map(|e| e.backend());
                    if got.is_some() {
                        prop_assert_eq!(got, expect);
                        model.insert(k, (expect.unwrap_or_default(), now));
                    }
                }
                Op::Remove(k) => {
                    let k = key(k);
                    let got = t.remove(&k, k.hash()).map(|v| v.backend);
                    let had = model.remove(&k).map(|(b, _)| b);
                    if got.is_some() {
                        prop_assert_eq!(got, had);
                    }
                }
                Op::Advance(ms) => now = now.wrapping_add(ms),
                Op::Sweep(n) => {
                    t.sweep(now, usize::from(n));
                }
            }
            prop_assert!(t.len() <= t.capacity());
            t.check_invariants();
        }
    }

    #[test]
    fn v4_key_round_trips(src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(), pr in any::<u8>()) {
        let k = FlowKeyV4::from_bits(src, dst, sp, dp, pr);
        prop_assert_eq!((k.src().to_bits(), k.dst().to_bits(), k.sport(), k.dport(), k.proto()), (src, dst, sp, dp, pr));
    }

    #[test]
    fn v6_key_round_trips(src in any::<u128>(), dst in any::<u128>(), sp in any::<u16>(), dp in any::<u16>(), pr in any::<u8>()) {
        let k = FlowKeyV6::from_bits(src, dst, sp, dp, pr);
        prop_assert_eq!((k.src().to_bits(), k.dst().to_bits(), k.sport(), k.dport(), k.proto()), (src, dst, sp, dp, pr));
    }
}

/// Timing at about a million flows; run with `cargo test --release -p switchyard
/// --no-default-features --lib flow::tests::timing -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run in release"]
fn timing() {
    // 1 Mi flows in the recommended 2× table, and 768 Ki flows filling a 1 Mi table to 75 %.
    timing_at(1 << 21, 1 << 20);
    timing_at(1 << 20, 3 << 18);
}

fn timing_at(capacity: usize, flows: u32) {
    use std::hint::black_box;
    use std::time::Instant;

    let mut t = table::<FlowKeyV4>(capacity);
    // Client addresses in pseudo-random order so consecutive lookups hit unrelated buckets.
    let keys: Vec<FlowKeyV4> = (0..flows)
        .map(|i| v4(i.wrapping_mul(0x9E37_79B9)))
        .collect();
    let per = |start: Instant| start.elapsed().as_nanos() as f64 / f64::from(flows);
    let start = Instant::now();
    for (i, k) in keys.iter().enumerate() {
        black_box(t.insert(k, k.hash(), val(n32(i)), FlowState::TcpEstablished, T0));
    }
    let insert_ns = per(start);

    let hashes: Vec<u32> = keys.iter().map(|k| k.hash()).collect();
    let start = Instant::now();
    let mut sum = 0u64;
    for (k, &h) in keys.iter().zip(&hashes) {
        if let Some(e) = t.lookup(k, h, T0 + 1) {
            sum += u64::from(e.backend());
        }
    }
    let lookup_ns = per(start);
    black_box(sum);

    let start = Instant::now();
    let mut sum = 0u64;
    for k in &keys {
        if let Some(e) = t.lookup(k, k.hash(), T0 + 2) {
            sum += u64::from(e.backend());
        }
    }
    let lookup_hash_ns = per(start);
    black_box(sum);

    let misses: Vec<FlowKeyV4> = (0..flows)
        .map(|i| udp4(i.wrapping_mul(0x9E37_79B9)))
        .collect();
    let start = Instant::now();
    let mut found = 0;
    for k in &misses {
        found += usize::from(t.lookup(k, k.hash(), T0 + 3).is_some());
    }
    let miss_ns = per(start);
    assert_eq!(found, 0);

    let start = Instant::now();
    for _ in 0..t.bucket_count() / 64 {
        black_box(t.sweep(T0 + 4, 64));
    }
    let sweep_ns = start.elapsed().as_nanos() as f64 / t.bucket_count() as f64;

    let c = t.counters();
    println!(
        "v4 {flows} flows in {} ways ({} MiB): insert {insert_ns:.1} ns, lookup hit {lookup_ns:.1} ns \
         (with hashing {lookup_hash_ns:.1} ns), miss with hashing {miss_ns:.1} ns, \
         sweep {sweep_ns:.1} ns/bucket; evicted {} ({:.3} %)",
        t.capacity(),
        t.memory_bytes() >> 20,
        c.evicted,
        c.evicted as f64 * 100.0 / f64::from(flows),
    );
}

/// A two-bucket table (16 ways, every key's two candidates) filled with `states[i]` for key i,
/// key i seen at `T0 + i`.
fn two_buckets_of(states: &[FlowState]) -> FlowTable<FlowKeyV4> {
    let mut t = table::<FlowKeyV4>(16);
    for (i, &st) in states.iter().enumerate() {
        let k = v4(n32(i));
        assert_eq!(
            t.insert(&k, k.hash(), val(n32(i)), st, T0 + n32(i)),
            InsertOutcome::Inserted
        );
    }
    t
}

#[test]
fn provisional_entries_are_evicted_first_and_evict_only_their_own_kind() {
    use FlowState::{TcpEstablished, TcpHandshake, TcpProvisional};
    // Oldest first: 4 handshakes, then 4 provisional entries, then 8 established flows.
    let mut states = vec![TcpHandshake; 4];
    states.extend([TcpProvisional; 4]);
    states.extend([TcpEstablished; 8]);
    let mut t = two_buckets_of(&states);
    // A SYN pushes out the oldest provisional entry (key 4), not the older handshakes.
    let k = v4(100);
    let out = t.insert(&k, k.hash(), val(1), TcpHandshake, T0 + 20);
    assert_eq!(out, InsertOutcome::Evicted);
    assert!(t.peek(&v4(4), v4(4).hash(), T0 + 20).is_none());
    assert!((0..4).all(|i| t.peek(&v4(i), v4(i).hash(), T0 + 20).is_some()));
    // Three provisional entries left: new provisional ones replace them, then are refused.
    for i in 0..3 {
        let k = v4(200 + i);
        assert_eq!(
            t.insert(&k, k.hash(), val(2), TcpProvisional, T0 + 21 + i),
            InsertOutcome::Evicted
        );
    }
    // Now: 5 handshakes, 3 (new) provisional, 8 established. Provisional ones evict each other.
    let k = v4(300);
    assert_eq!(
        t.insert(&k, k.hash(), val(3), TcpProvisional, T0 + 30),
        InsertOutcome::Evicted
    );
    // With no provisional entry left, a provisional insert is refused.
    let mut t = two_buckets_of(&[[TcpHandshake; 8], [TcpEstablished; 8]].concat());
    let k = v4(400);
    assert_eq!(
        t.insert(&k, k.hash(), val(4), TcpProvisional, T0 + 40),
        InsertOutcome::Refused
    );
    assert_eq!(t.counters().insert_refused, 1);
    assert_eq!(t.len(), 16);
    t.check_invariants();
}

#[test]
fn a_new_flow_never_evicts_an_established_one() {
    use FlowState::{Datagram, TcpClosing, TcpEstablished, TcpHandshake};
    let mut t = two_buckets_of(&[TcpEstablished; 16]);
    for (i, st) in [TcpHandshake, TcpClosing, Datagram].into_iter().enumerate() {
        let k = v4(100 + n32(i));
        assert_eq!(
            t.insert(&k, k.hash(), val(9), st, T0 + 100),
            InsertOutcome::Refused,
            "{st:?}"
        );
    }
    assert_eq!(t.counters().insert_refused, 3);
    // (A table this full is also in flood mode: `admit` says so before it looks at buckets.)
    assert_eq!(
        t.admit(v4(100).hash(), TcpHandshake, T0 + 100),
        Err(NoRoom::Flood)
    );
    assert_eq!(t.counters().evicted, 0);
    assert!((0..16).all(|i| t.peek(&v4(i), v4(i).hash(), T0 + 100).is_some()));
    // An expired established flow is fair game.
    let late = T0 + Timeouts::default().tcp_established_ms + 100;
    let k = v4(200);
    assert_eq!(
        t.insert(&k, k.hash(), val(9), TcpHandshake, late),
        InsertOutcome::Inserted
    );
    t.check_invariants();
}

#[test]
fn flood_mode_follows_occupancy_with_hysteresis() {
    let mut t = table::<FlowKeyV4>(1 << 10);
    let cap = t.capacity();
    let enter = cap / FLOOD_ENTER_OCCUPANCY.1 * FLOOD_ENTER_OCCUPANCY.0;
    let mut i = 0;
    while t.len() < enter {
        assert!(!t.flooded(T0), "at {} flows", t.len());
        let k = v4(i);
        t.insert(&k, k.hash(), val(1), FlowState::TcpHandshake, T0);
        i += 1;
    }
    assert!(t.flooded(T0));
    assert_eq!(
        t.admit(v4(1 << 20).hash(), FlowState::TcpHandshake, T0),
        Err(NoRoom::Flood)
    );
    let c = t.counters();
    assert_eq!(
        (c.flood_entered, c.flood_left, c.flood_stateless),
        (1, 0, 1)
    );
    // The half-open entries expire; the sweep reclaims them and ends flood mode.
    let late = T0 + Timeouts::default().tcp_handshake_ms + 1;
    t.sweep(late, usize::MAX);
    assert!(t.is_empty());
    assert!(!t.in_flood());
    let c = t.counters();
    assert_eq!((c.flood_entered, c.flood_left), (1, 1));
    assert_eq!(c.flood_ms, u64::from(late - T0));
    assert_eq!(
        t.admit(v4(1 << 20).hash(), FlowState::TcpHandshake, late),
        Ok(())
    );
}

#[test]
fn flood_mode_follows_insert_cap_pressure() {
    let limit = InsertLimit {
        per_second: 1_000,
        burst: 100,
    };
    let mut t = FlowTable::<FlowKeyV4>::with_capacity(1 << 16, Timeouts::default(), limit);
    // 76 inserts leave 24 tokens: under a quarter of the burst.
    for i in 0..76 {
        let k = v4(i);
        assert_eq!(t.admit(k.hash(), FlowState::TcpHandshake, T0), Ok(()));
        t.insert(&k, k.hash(), val(1), FlowState::TcpHandshake, T0);
    }
    assert_eq!(
        t.admit(v4(500).hash(), FlowState::TcpHandshake, T0),
        Err(NoRoom::Flood)
    );
    // 1 000/s: 25 ms later 49 tokens (not yet half), 26 ms later 50.
    assert!(t.flooded(T0 + 25));
    assert!(!t.flooded(T0 + 26));
    let c = t.counters();
    assert_eq!((c.flood_entered, c.flood_left, c.flood_ms), (1, 1, 26));
}

#[test]
fn a_seeded_table_uses_its_own_bucket_hash() {
    let seeded = |seed| {
        FlowTable::<FlowKeyV4>::with_seed(
            1 << 12,
            Timeouts::default(),
            InsertLimit::UNLIMITED,
            seed,
        )
    };
    let (mut a, b) = (seeded(1), seeded(2));
    assert_eq!(table::<FlowKeyV4>(16).hash(&v4(1)), v4(1).hash());
    let differ = (0..1_000)
        .filter(|&i| a.hash(&v4(i)) != b.hash(&v4(i)))
        .count();
    assert!(differ > 990, "{differ}");
    let differ = (0..1_000)
        .filter(|&i| a.hash(&v4(i)) != v4(i).hash())
        .count();
    assert!(differ > 990, "{differ}");
    // A quarter full: two choices store every one of them.
    for i in 0..1_000 {
        let k = v4(i);
        a.insert(&k, a.hash(&k), val(i), FlowState::TcpEstablished, T0);
    }
    a.check_invariants();
    assert_eq!(a.counters().evicted, 0);
    assert!((0..1_000).all(|i| {
        let k = v4(i);
        a.peek(&k, a.hash(&k), T0).map(|(v, _)| v) == Some(val(i))
    }));
}
