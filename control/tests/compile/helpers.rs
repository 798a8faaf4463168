//! Shared by the `compile_*` tests: policies, and lookups done the way the data plane does them.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
use switchyard_control::policy::{self, Policy};
use switchyard_table::generation::{
    name_str, Backend, Generation, ACL_ALLOW, PROTO_TCP, PROTO_UDP,
};
use switchyard_table::lpm;

/// The interface every small test policy starts with: both families, gateways for both.
pub const INTERFACE: &str = "
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [198.51.100.1/24, 2001:db8:100::1/64]
    gateway: { ipv4: 198.51.100.254, ipv6: 2001:db8:100::fe, mac: 02:00:00:00:00:fe }
";

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A policy from YAML text, [`INTERFACE`] prepended.
pub fn policy(body: &str) -> Policy {
    let text = format!("{INTERFACE}{body}");
    policy::parse_str(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"))
}

pub fn load(relative_to_manifest: &str) -> Policy {
    policy::load(&manifest_dir().join(relative_to_manifest)).unwrap_or_else(|e| panic!("{e}"))
}

pub fn demo() -> Policy {
    load("../configs/demo.yaml")
}

/// Compiles with fresh ids and every backend healthy.
pub fn compiled(p: &Policy) -> Generation {
    compile_with(p, &BackendState::new(), &mut BackendIds::new())
}

pub fn compile_with(p: &Policy, state: &BackendState, ids: &mut BackendIds) -> Generation {
    let input = CompileInput {
        policy: p,
        generation: 1,
        state,
    };
    compile(&input, ids).unwrap_or_else(|e| panic!("{e}"))
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// LPM lookup of `addr` in the table pair for its family.
pub fn lookup(v4: &[u32], v6: &[u32], addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => lpm::lookup_v4(v4, u32::from(a)),
        IpAddr::V6(a) => lpm::lookup_v6(v6, u128::from(a)),
    }
}

/// The region a client is classified into.
pub fn region_of(g: &Generation, client: &str) -> Option<String> {
    let v = lookup(&g.geo_lpm_v4, &g.geo_lpm_v6, ip(client));
    (v != 0).then(|| name_str(&g.regions[v as usize - 1].name).to_owned())
}

/// The VIP group entries of a destination, as (service, protocol, first port, last port).
pub fn vip_entries(g: &Generation, vip: &str) -> Vec<(String, u8, u16, u16)> {
    let v = lookup(&g.vip_lpm_v4, &g.vip_lpm_v6, ip(vip));
    if v == 0 {
        return Vec::new();
    }
    let group = g.vip_groups[v as usize - 1];
    let start = group.first_entry as usize;
    g.vip_entries[start..start + group.entry_count as usize]
        .iter()
        .map(|e| {
            (
                name_str(&g.services[e.service as usize].name).to_owned(),
                e.protocol,
                e.port_lo,
                e.port_hi,
            )
        })
        .collect()
}

/// The service a packet to `vip:port` goes to, scanning the group as the data plane does.
pub fn service_for(g: &Generation, vip: &str, protocol: u8, port: u16) -> Option<String> {
    vip_entries(g, vip)
        .into_iter()
        .find(|(_, p, lo, hi)| *p == protocol && (*lo..=*hi).contains(&port))
        .map(|(s, ..)| s)
}

/// The ACL verdict for a packet, as the data plane computes it: the source's group, first
/// record whose protocol and port match; allowed when none does. `port` is `None` for a packet
/// without ports (ICMP).
pub fn acl_allows(g: &Generation, source: &str, protocol: u8, port: Option<u16>) -> bool {
    let v = lookup(&g.acl_lpm_v4, &g.acl_lpm_v6, ip(source));
    if v == 0 {
        return true;
    }
    let group = g.acl_groups[v as usize - 1];
    let start = group.first_rule as usize;
    for r in &g.acl_rules[start..start + group.rule_count as usize] {
        let protocol_ok = r.protocol == 0 || r.protocol == protocol;
        let every_port = r.port_lo == 0 && r.port_hi == u16::MAX;
        let port_ok = every_port
            || (matches!(protocol, PROTO_TCP | PROTO_UDP)
                && port.is_some_and(|p| (r.port_lo..=r.port_hi).contains(&p)));
        if protocol_ok && port_ok {
            return r.action == ACL_ALLOW;
        }
    }
    true
}

pub fn pool_index(g: &Generation, pool: &str) -> usize {
    g.pools
        .iter()
        .position(|p| name_str(&p.name) == pool)
        .unwrap_or_else(|| panic!("no pool {pool}"))
}

/// The backend record at `address` in `pool`, with its index.
pub fn backend(g: &Generation, pool: &str, address: &str) -> (usize, Backend) {
    let p = pool_index(g, pool);
    let addr = ip(address);
    g.backends
        .iter()
        .enumerate()
        .find(|(_, b)| b.pool as usize == p && backend_address(b) == addr)
        .map(|(i, b)| (i, *b))
        .unwrap_or_else(|| panic!("no backend {address} in {pool}"))
}

pub fn backend_address(b: &Backend) -> IpAddr {
    if b.family == 4 {
        IpAddr::from([b.address[0], b.address[1], b.address[2], b.address[3]])
    } else {
        IpAddr::from(b.address)
    }
}

/// Slots per backend address in a pool's Maglev table.
pub fn maglev_shares(g: &Generation, pool: &str) -> BTreeMap<IpAddr, usize> {
    let p = g.pools[pool_index(g, pool)];
    let mut shares = BTreeMap::new();
    let start = p.maglev_offset as usize;
    for &slot in &g.maglev[start..start + p.maglev_size as usize] {
        assert_ne!(slot, 0, "a pool with healthy backends has no empty slot");
        *shares
            .entry(backend_address(&g.backends[slot as usize - 1]))
            .or_insert(0) += 1;
    }
    shares
}

/// A pool's healthy backend addresses, in list order.
pub fn healthy(g: &Generation, pool: &str) -> Vec<IpAddr> {
    let p = g.pools[pool_index(g, pool)];
    let start = p.first_healthy as usize;
    g.healthy_backends[start..start + p.healthy_count as usize]
        .iter()
        .map(|&i| backend_address(&g.backends[i as usize]))
        .collect()
}

/// (pool, address) → id for every backend.
pub fn ids_of(g: &Generation) -> BTreeMap<(String, IpAddr), u32> {
    g.backends
        .iter()
        .map(|b| {
            (
                (
                    name_str(&g.pools[b.pool as usize].name).to_owned(),
                    backend_address(b),
                ),
                b.id,
            )
        })
        .collect()
}

/// A scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("compile-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
