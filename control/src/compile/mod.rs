//! The policy compiler: a validated [`Policy`] plus live backend state in, one immutable table
//! [`Generation`] out, in the layout of `switchyard_table::generation`.
//!
//! [`compile`] is a pure function of its input and of the [`BackendIds`] it is handed: the same
//! policy, state, generation number and ids give a byte-identical [`Generation::encode`] blob.
//! Objects keep policy order; nothing depends on a randomly seeded hasher. The result has passed
//! [`Generation::validate`], so it decodes on the data plane as it is. Nothing is changed on
//! error: the ids are only updated when a generation comes out.
//!
//! # How the policy maps onto the table
//!
//! **Config.** `encap` and the GUE port from the policy; `icmp_rate` is the policy's
//! `limits.icmp_per_second` (for the whole appliance; the data plane splits it over its workers)
//! with a burst of one second's worth; `new_flow_rate` / `new_flow_burst` from
//! `limits.new_flows_per_source` (0 / 0 = unlimited); `backend_mtu` from the policy (default
//! 1500); the outer source prefixes from `encap_source` and the connection-table idle timeouts
//! (whole seconds) from `flow_timeouts`, whose defaults are [`switchyard_table::generation::Config`]'s.
//!
//! **Interfaces.** Name, MAC, gateway MAC (all zero: resolve the gateway by ARP / ND), gateway
//! addresses (all zero: none) and up to [`MAX_IF_ADDRS`] own addresses per family, in policy
//! order; more is a [`CompileError::InterfaceAddresses`]. The record has no field for the
//! subnet length of an own address, so it is not carried. An interface's own `encap_source`
//! prefixes go into its record with `OUTER_SRC_V4` / `OUTER_SRC_V6` set; without them the data
//! plane uses the config's (the top-level `encap_source`).
//!
//! **Regions.** One record per region in policy order; the geo LPM value is region index + 1.
//! Explicit `prefixes` beat GeoIP, as `docs/POLICY.md` says ("if no prefix matches, the region
//! listing its GeoIP country"): GeoIP networks inside any region prefix are dropped, the rest are
//! inserted first and the explicit prefixes after them (so an equal prefix is the explicit one).
//! GeoIP networks come from the MaxMind database at `geoip_database` (see the `geoip` module);
//! only networks whose `country.iso_code` some region lists are kept, and adjacent networks of
//! one region are merged. An empty LPM table is stored as zero entries (every lookup: no match).
//!
//! **VIPs.** Each distinct VIP prefix gets a [`VipGroup`]: first the entries
//! `(service, protocol, port range)` of the services on exactly that VIP (policy order, one per
//! port range), then those of every broader VIP prefix containing it, most specific first. The
//! LPM answers only the most specific VIP, so without the inherited entries a port served by the
//! broad VIP alone would be lost for addresses in the narrow one. Validation forbids two services
//! of one protocol on overlapping VIPs from sharing a port, so at most one entry of a group
//! matches a packet; the order only makes the scan stop early for the most specific service.
//!
//! **Services and routes.** Services in policy order; their routes are contiguous, in policy
//! order, the catch-all (`region == NONE`) last. `pools` is the route's pool then its fallbacks
//! (at most [`MAX_ROUTE_POOLS`] in all, else [`CompileError::RoutePools`]). A route takes the
//! service's canary only where the policy model says so ([`Route::takes_canary`]):
//! `canary_pool` is then the canary pool and `canary_per_million` its basis points × 100 (a
//! paused 0 % canary keeps its pool with 0); otherwise [`NONE`] and 0. `strict` is 1 for
//! `residency: strict`.
//!
//! **Pools and backends.** Pools in policy order, each pool's backends contiguous in policy
//! order. Every backend of the policy is in the table, healthy or not, so flows already on it can
//! see what became of it:
//! - `id` comes from [`BackendIds`] (stable per pool name and address, from 1);
//! - `flags` has [`BACKEND_HEALTHY`] when the [`BackendState`] says healthy, and always for pools
//!   without a health check (the policy says every backend of such a pool counts as up); a
//!   healthy backend the state marks full (bounded load: its live load is past the pool's
//!   threshold) also has [`BACKEND_FULL`]. Being full changes nothing else: the backend stays in
//!   `healthy_backends` and keeps its Maglev slots, so filling up and draining back rebuild no
//!   table and move no slot; the data plane sends the new flows that prefer a full backend to
//!   the next backend of their own preference order (`maglev` and `ip_hash` pools);
//! - `weight` is the *effective weight*: 0 when the policy weight is 0 (drained by the operator;
//!   live load never undrains), else the state's override when there is one (clamped to the
//!   pool's `load.min_weight..=max_weight` when the pool has `load`), else the policy weight.
//!
//! A pool's `healthy_backends` are the indices of its healthy backends with effective weight > 0,
//! in backend order. Pools with scheduler `maglev` or `ip_hash` get a Maglev table (size: the
//! pool's `maglev_size` for Maglev, `tables.maglev_size` for IP hash) over exactly those
//! backends, weighted by effective weight; each slot holds the backend's *index* + 1 in this
//! generation (0 only when the pool has no healthy backend, then every slot is 0). The table is
//! built keyed by the stable ids and a hash of the backend address (see [`maglev_key`]), so it is
//! the same on every compile and every box, and moves few slots as backends come and go.
//! `round_robin`, `least_conn` and `weighted` pools have `maglev_size == 0`. `backend_by_id` has
//! max id + 1 entries: backend index + 1 at each id in this generation, 0 elsewhere.
//!
//! **ACL.** The policy's first-match list becomes [`AclGroup`]s: every distinct rule prefix is an
//! LPM leaf whose group lists, in policy order, every rule whose prefix contains the leaf (a
//! policy rule with several port ranges becomes consecutive records with the same action). The
//! longest leaf containing a source address is contained in exactly the rules whose prefix
//! contains that address, so scanning its group for the first record matching protocol and port
//! reproduces first-match. Leaves with the same rule list share one group. Protocol: TCP 6,
//! UDP 17, any 0. Ports: a rule without ports is `0..=65535`, which matches every packet of the
//! protocol (and every protocol when it is 0); any narrower range matches TCP / UDP destination
//! ports only. A source no leaf contains gets 0: no rule, allowed.
//!
//! [`Route::takes_canary`]: crate::policy::Route::takes_canary
//! [`MAX_IF_ADDRS`]: switchyard_table::generation::MAX_IF_ADDRS
//! [`MAX_ROUTE_POOLS`]: switchyard_table::generation::MAX_ROUTE_POOLS
//! [`NONE`]: switchyard_table::generation::NONE
//! [`BACKEND_HEALTHY`]: switchyard_table::generation::BACKEND_HEALTHY
//! [`BACKEND_FULL`]: switchyard_table::generation::BACKEND_FULL
//! [`VipGroup`]: switchyard_table::generation::VipGroup
//! [`AclGroup`]: switchyard_table::generation::AclGroup

mod acl;
mod diff;
mod error;
mod geoip;
mod ids;
mod pools;
mod regions;
mod services;
mod state;

use std::net::IpAddr;

use switchyard_table::generation::{self as abi, Generation};
use switchyard_table::lpm;

use crate::policy::{Encap, Policy};

pub use diff::{diff, BackendChange, BackendSummary, GenerationDiff, PoolChange, ServiceChange};
pub use error::CompileError;
pub use ids::{BackendIds, MAX_BACKEND_ID};
pub use pools::{maglev_key, MaglevCache};
pub use state::{BackendLive, BackendState};

/// What a generation is compiled from.
#[derive(Debug, Clone, Copy)]
pub struct CompileInput<'a> {
    pub policy: &'a Policy,
    /// The generation number written into the header (the publisher's counter).
    pub generation: u64,
    /// Live health and weights of the backends.
    pub state: &'a BackendState,
}

/// Compiles a policy into a table generation. See the module documentation for the mapping.
///
/// `ids` gives backends that were in earlier generations the same ids again; new backends get
/// fresh ids and backends no longer in the policy release theirs. `ids` changes only on success.
///
/// # Errors
///
/// [`CompileError`]: something the policy asks for that the table format cannot carry (too many
/// addresses on an interface, too many pools in a route), a GeoIP database that cannot be read,
/// or a table that cannot be built.
pub fn compile(input: &CompileInput, ids: &mut BackendIds) -> Result<Generation, CompileError> {
    compile_cached(input, ids, &mut MaglevCache::default())
}

/// [`compile`], reusing the Maglev tables of pools whose table inputs (backend ids, keys,
/// weights, size) are those of the last compile that went through `cache`: a health or load
/// change in one pool rebuilds that pool's table only. The output is byte for byte that of
/// [`compile`].
///
/// # Errors
/// As [`compile`].
pub fn compile_cached(
    input: &CompileInput,
    ids: &mut BackendIds,
    cache: &mut MaglevCache,
) -> Result<Generation, CompileError> {
    let policy = input.policy;
    let mut new_ids = ids.clone();
    new_ids.assign(policy)?;

    let mut g = Generation {
        generation: input.generation,
        config: config(policy),
        interfaces: interfaces(policy)?,
        ..Generation::default()
    };
    regions::build(policy, &mut g)?;
    services::build(policy, &mut g)?;
    pools::build(policy, input.state, &new_ids, cache, &mut g)?;
    acl::build(policy, &mut g)?;
    g.validate().map_err(CompileError::Invalid)?;

    *ids = new_ids;
    Ok(g)
}

fn config(policy: &Policy) -> abi::Config {
    let mut c = abi::Config::default();
    match policy.encap {
        Encap::Ipip => c.encap = abi::ENCAP_IPIP,
        Encap::Gue { port } => {
            c.encap = abi::ENCAP_GUE;
            c.gue_port = port;
        }
    }
    c.backend_mtu = policy.backend_mtu;
    let source = &policy.encap_source;
    c.outer_src_v4 = source.ipv4.network().octets();
    c.outer_src_v4_len = source.ipv4.prefix_len();
    c.outer_src_v6 = source.ipv6.network().octets();
    c.outer_src_v6_len = source.ipv6.prefix_len();
    // Validation keeps timeouts within a day, in whole seconds.
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let t = &policy.flow_timeouts;
    c.tcp_syn_timeout = secs(t.tcp_handshake);
    c.tcp_established_timeout = secs(t.tcp_established);
    c.tcp_closing_timeout = secs(t.tcp_closing);
    c.udp_timeout = secs(t.udp);
    c.icmp_rate = policy.limits.icmp_per_second;
    c.icmp_burst = policy.limits.icmp_per_second;
    c.source_v6_prefix = policy.limits.source_ipv6_prefix;
    if let Some(limit) = policy.limits.new_flows_per_source {
        c.new_flow_rate = limit.per_second;
        c.new_flow_burst = limit.burst;
    } else {
        c.new_flow_rate = 0;
        c.new_flow_burst = 0;
    }
    c
}

fn interfaces(policy: &Policy) -> Result<Vec<abi::Interface>, CompileError> {
    policy
        .interfaces
        .iter()
        .map(|i| {
            let mut rec = abi::Interface {
                name: abi::name_field(&i.name),
                mac: i.mac.0,
                gateway_mac: [0; 6],
                v4_count: 0,
                v6_count: 0,
                _pad: [0; 2],
                gateway_v4: [0; 4],
                v4: [[0; 4]; abi::MAX_IF_ADDRS],
                v6: [[0; 16]; abi::MAX_IF_ADDRS],
                gateway_v6: [0; 16],
                outer_src_v4: [0; 4],
                outer_src_v6: [0; 16],
                outer_src_v4_len: 0,
                outer_src_v6_len: 0,
                outer_src_flags: 0,
                _pad2: 0,
            };
            if let Some(net) = i.encap_source_ipv4 {
                rec.outer_src_v4 = net.network().octets();
                rec.outer_src_v4_len = net.prefix_len();
                rec.outer_src_flags |= abi::OUTER_SRC_V4;
            }
            if let Some(net) = i.encap_source_ipv6 {
                rec.outer_src_v6 = net.network().octets();
                rec.outer_src_v6_len = net.prefix_len();
                rec.outer_src_flags |= abi::OUTER_SRC_V6;
            }
            if let Some(gw) = &i.gateway {
                rec.gateway_mac = gw.mac.map_or([0; 6], |m| m.0);
                rec.gateway_v4 = gw.ipv4.map_or([0; 4], |a| a.octets());
                rec.gateway_v6 = gw.ipv6.map_or([0; 16], |a| a.octets());
            }
            let (mut v4, mut v6) = (0usize, 0usize);
            for net in &i.addresses {
                match net.addr() {
                    IpAddr::V4(a) => {
                        if v4 < abi::MAX_IF_ADDRS {
                            rec.v4[v4] = a.octets();
                        }
                        v4 += 1;
                    }
                    IpAddr::V6(a) => {
                        if v6 < abi::MAX_IF_ADDRS {
                            rec.v6[v6] = a.octets();
                        }
                        v6 += 1;
                    }
                }
            }
            for (count, family) in [(v4, 4), (v6, 6)] {
                if count > abi::MAX_IF_ADDRS {
                    return Err(CompileError::InterfaceAddresses {
                        interface: i.name.clone(),
                        family,
                        count,
                    });
                }
            }
            // Both are at most MAX_IF_ADDRS (4) here.
            rec.v4_count = u8::try_from(v4).unwrap_or(u8::MAX);
            rec.v6_count = u8::try_from(v6).unwrap_or(u8::MAX);
            Ok(rec)
        })
        .collect()
}

/// An address as the table stores it: 16 bytes in network order (IPv4 in the first 4) and
/// its family.
pub(crate) fn address_field(ip: IpAddr) -> ([u8; 16], u8) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (out, abi::FAMILY_V4)
        }
        IpAddr::V6(a) => (a.octets(), abi::FAMILY_V6),
    }
}

/// The address of a backend record, or `None` for an unknown family.
pub(crate) fn address_of(address: &[u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        abi::FAMILY_V4 => Some(IpAddr::from([
            address[0], address[1], address[2], address[3],
        ])),
        abi::FAMILY_V6 => Some(IpAddr::from(*address)),
        _ => None,
    }
}

/// The address of a backend record, or `None` for an unknown family.
#[must_use]
pub fn address_of_record(b: &abi::Backend) -> Option<IpAddr> {
    address_of(&b.address, b.family)
}

/// A `u32` count or index for a record field.
pub(crate) fn index_u32(what: &'static str, n: usize) -> Result<u32, CompileError> {
    u32::try_from(n).map_err(|_| CompileError::TooLarge { what, count: n })
}

/// Prefix lists of one LPM table pair, in insertion order (later equal prefixes win).
#[derive(Debug, Default)]
pub(crate) struct LpmInput {
    pub v4: Vec<(u32, u8, u32)>,
    pub v6: Vec<(u128, u8, u32)>,
}

impl LpmInput {
    pub fn push(&mut self, net: ipnet::IpNet, value: u32) {
        match net {
            ipnet::IpNet::V4(n) => self
                .v4
                .push((u32::from(n.network()), n.prefix_len(), value)),
            ipnet::IpNet::V6(n) => self
                .v6
                .push((u128::from(n.network()), n.prefix_len(), value)),
        }
    }

    /// Builds both tables; a family without prefixes gets an empty table.
    pub fn build(
        &self,
        v4_name: &'static str,
        v6_name: &'static str,
    ) -> Result<(Vec<u32>, Vec<u32>), CompileError> {
        let v4 = if self.v4.is_empty() {
            Vec::new()
        } else {
            lpm::build_v4(&self.v4).map_err(|error| CompileError::Lpm {
                table: v4_name,
                error,
            })?
        };
        let v6 = if self.v6.is_empty() {
            Vec::new()
        } else {
            lpm::build_v6(&self.v6).map_err(|error| CompileError::Lpm {
                table: v6_name,
                error,
            })?
        };
        Ok((v4, v6))
    }
}
