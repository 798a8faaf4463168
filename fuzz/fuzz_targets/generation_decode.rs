//! `Generation::decode` on untrusted blobs: the data plane's trust boundary with shared memory.
//!
//! An input that starts like a blob (`S`, the first magic byte) is decoded twice:
//! 1. as it is, which mostly exercises the header checks (magic, ABI version, sizes, checksum);
//! 2. with `total_size` and the xxh3 checksum patched to match the bytes, so that mutations of
//!    a valid blob from the seed corpus get past the checksum and reach the section bounds, the
//!    LPM structure checks and the cross-reference validation.
//!
//! Any other input is a patch to a valid generation built here (`switchyard_fuzz::generations`,
//! selected by the first byte): 4-byte records `offset: u24 BE, value: u8` set bytes of its
//! encoding, which is then resealed and decoded. This stays deep even when the committed seed
//! blobs predate a table ABI change.
//!
//! A blob that decodes must keep the promise of `table/src/generation.rs`: every index stored in
//! it is in range. The target walks the generation the way the hot path does, with plain
//! indexing (which panics on a broken promise), and checks that re-encoding it decodes to the
//! same generation.
#![no_main]

use std::hint::black_box;
use std::mem::{offset_of, size_of};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard_table::generation::{
    name_str, Generation, Header, Scheduler, ACL_ALLOW, ACL_DENY, FAMILY_V4, FAMILY_V6,
    MAX_IF_ADDRS, MAX_ROUTE_POOLS, NONE, PER_MILLION,
};
use switchyard_table::lpm;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'S', _)) => {
            check(data);
            if data.len() >= size_of::<Header>() {
                let mut blob = data.to_vec();
                reseal(&mut blob);
                check(&blob);
            }
        }
        Some((&which, patches)) => {
            let templates = templates();
            let mut blob = templates[usize::from(which) % templates.len()].clone();
            for p in patches.chunks_exact(4) {
                let offset = u32::from_be_bytes([0, p[0], p[1], p[2]]) as usize % blob.len();
                blob[offset] = p[3];
            }
            reseal(&mut blob);
            check(&blob);
        }
        None => check(data),
    }
});

/// The encoded templates.
fn templates() -> &'static [Vec<u8>] {
    static TEMPLATES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        switchyard_fuzz::generations()
            .iter()
            .map(|(_, g)| g.encode())
            .collect()
    })
}

/// Makes the header's total size and checksum agree with the bytes (what a publisher that
/// wrote a corrupt generation, rather than a corrupt header, would produce).
fn reseal(blob: &mut [u8]) {
    let header_size = size_of::<Header>();
    let total = blob.len() as u64;
    let at = offset_of!(Header, total_size);
    blob[at..at + 8].copy_from_slice(&total.to_ne_bytes());
    let checksum = xxh3_of(&blob[header_size..]);
    let at = offset_of!(Header, checksum);
    blob[at..at + 8].copy_from_slice(&checksum.to_ne_bytes());
}

/// xxh3-64 over `[header_size, total_size)`, as `Generation::encode` seals a blob.
fn xxh3_of(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

fn check(blob: &[u8]) {
    let peeked = Generation::peek_header(blob);
    match Generation::decode(blob) {
        Ok(g) => {
            let header = peeked.expect("decode accepted a blob peek_header refuses");
            assert_eq!(header.generation, g.generation);
            walk(&g, blob);
            let again = Generation::decode(&g.encode()).expect("re-encoded generation decodes");
            assert_eq!(again, g, "encode/decode round trip");
        }
        Err(e) => {
            black_box((e.name(), e.to_string()));
        }
    }
}

/// Follows every stored index with plain indexing: a decoded generation must never make this
/// panic.
fn walk(g: &Generation, blob: &[u8]) {
    let range = |first: u32, count: u32| first as usize..first as usize + count as usize;

    for group in &g.vip_groups {
        for e in &g.vip_entries[range(group.first_entry, group.entry_count)] {
            black_box(&g.services[e.service as usize]);
        }
    }
    for e in &g.vip_entries {
        assert!(e.port_lo <= e.port_hi);
        black_box(&g.services[e.service as usize]);
    }
    for s in &g.services {
        black_box(name_str(&s.name));
        for r in &g.routes[range(s.first_route, s.route_count)] {
            black_box(r.strict);
        }
    }
    for r in &g.routes {
        if r.region != NONE {
            black_box(name_str(&g.regions[r.region as usize].name));
        }
        assert!(r.pool_count as usize <= MAX_ROUTE_POOLS);
        for &p in &r.pools[..r.pool_count as usize] {
            black_box(&g.pools[p as usize]);
        }
        if r.canary_pool != NONE {
            black_box(&g.pools[r.canary_pool as usize]);
        }
        assert!(r.canary_per_million <= PER_MILLION);
    }
    for p in &g.pools {
        black_box(name_str(&p.name));
        Scheduler::from_u8(p.scheduler).expect("pool scheduler");
        let own = range(p.first_backend, p.backend_count);
        black_box(&g.backends[own.clone()]);
        for &b in &g.healthy_backends[range(p.first_healthy, p.healthy_count)] {
            assert!(own.contains(&(b as usize)));
            black_box(&g.backends[b as usize]);
        }
        let slots = &g.maglev[range(p.maglev_offset, p.maglev_size)];
        for &slot in slots {
            if slot != 0 {
                assert!(own.contains(&(slot as usize - 1)));
                black_box(&g.backends[slot as usize - 1]);
            }
        }
    }
    for (i, b) in g.backends.iter().enumerate() {
        assert!(b.family == FAMILY_V4 || b.family == FAMILY_V6);
        black_box(&g.pools[b.pool as usize]);
        assert_eq!(g.backend_by_id[b.id as usize] as usize, i + 1);
    }
    for &slot in &g.backend_by_id {
        if slot != 0 {
            black_box(&g.backends[slot as usize - 1]);
        }
    }
    for group in &g.acl_groups {
        for rule in &g.acl_rules[range(group.first_rule, group.rule_count)] {
            assert!(rule.action == ACL_ALLOW || rule.action == ACL_DENY);
            assert!(rule.port_lo <= rule.port_hi);
            // A service's rule names a service of the generation (0 = global).
            assert!(usize::from(rule.service) <= g.services.len());
        }
    }
    for it in &g.interfaces {
        black_box(name_str(&it.name));
        assert!(usize::from(it.v4_count) <= MAX_IF_ADDRS);
        black_box(&it.v4[..usize::from(it.v4_count)]);
        black_box(&it.v6[..usize::from(it.v6_count)]);
    }

    // LPM answers index the group/region tables (value = index + 1). Probe with addresses taken
    // from the blob itself, plus every backend's and interface's.
    let mut v4: Vec<u32> = blob
        .chunks_exact(4)
        .rev()
        .take(16)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut v6: Vec<u128> = blob
        .chunks_exact(16)
        .rev()
        .take(8)
        .map(|c| u128::from_be_bytes(c.try_into().unwrap()))
        .collect();
    for b in &g.backends {
        v4.push(u32::from_be_bytes([
            b.address[0],
            b.address[1],
            b.address[2],
            b.address[3],
        ]));
        v6.push(u128::from_be_bytes(b.address));
    }
    for it in &g.interfaces {
        v4.extend(it.v4.iter().map(|a| u32::from_be_bytes(*a)));
        v6.extend(it.v6.iter().map(|a| u128::from_be_bytes(*a)));
    }
    v4.extend([0, u32::MAX, 0xcb00_710a]);
    v6.extend([0, u128::MAX]);
    let tables_v4 = [
        (&g.vip_lpm_v4, g.vip_groups.len()),
        (&g.geo_lpm_v4, g.regions.len()),
        (&g.acl_lpm_v4, g.acl_groups.len()),
    ];
    let tables_v6 = [
        (&g.vip_lpm_v6, g.vip_groups.len()),
        (&g.geo_lpm_v6, g.regions.len()),
        (&g.acl_lpm_v6, g.acl_groups.len()),
    ];
    for (table, len) in tables_v4 {
        for &a in &v4 {
            let v = lpm::lookup_v4(table, a);
            assert!(v as usize <= len, "v4 LPM value {v} beyond {len} records");
        }
    }
    for (table, len) in tables_v6 {
        for &a in &v6 {
            let v = lpm::lookup_v6(table, a);
            assert!(v as usize <= len, "v6 LPM value {v} beyond {len} records");
        }
    }

    let c = &g.config;
    assert!(c.outer_src_v4_len <= 32 && c.outer_src_v6_len <= 128);
    assert!(c.source_v6_prefix <= 64);
}
