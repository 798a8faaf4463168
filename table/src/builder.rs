//! [`GenerationBuilder`]: small, valid table generations written by hand, for tests and fuzzing
//! (feature `test-support`; the compiler in `switchyard-control` makes the real ones).
//!
//! It fills in what a hand-built generation gets wrong most easily — index ranges, healthy
//! lists, `backend_by_id`, Maglev tables, LPM values — so that a test states only the shape it
//! needs: interfaces, regions, services with their VIPs and routes, pools of backends, ACLs.
//! Every service with ports gets a VIP group of its own. Maglev tables are filled round robin with the
//! pool's healthy backends (0, no backend, where it has none). What a test needs beyond that
//! (a hole in a Maglev table, a dangling reference) it edits in the built [`Generation`].

use std::net::{IpAddr, Ipv4Addr};

use bytemuck::Zeroable;

use crate::generation::{
    name_field, AclGroup, AclRule, Backend, Config, Generation, Interface, Pool, Region, Route,
    Scheduler, Service, VipEntry, VipGroup, BACKEND_HEALTHY, FAMILY_V4, FAMILY_V6, MAX_IF_ADDRS,
    MAX_ROUTE_POOLS, NONE,
};
use crate::lpm;

/// One backend of a pool: healthy, weight 100, stable id its index + 1 unless set.
#[derive(Debug, Clone, Copy)]
pub struct BackendSpec {
    pub address: IpAddr,
    pub weight: u32,
    pub flags: u8,
    pub id: Option<u32>,
}

impl BackendSpec {
    pub fn new(address: impl Into<IpAddr>) -> Self {
        Self {
            address: address.into(),
            weight: 100,
            flags: BACKEND_HEALTHY,
            id: None,
        }
    }

    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Healthy or not (the other flag bits unchanged).
    #[must_use]
    pub fn healthy(mut self, healthy: bool) -> Self {
        self.flags = if healthy {
            self.flags | BACKEND_HEALTHY
        } else {
            self.flags & !BACKEND_HEALTHY
        };
        self
    }

    #[must_use]
    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    #[must_use]
    pub fn id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }
}

/// An ACL rule matching `protocol` (0: any) on destination ports `ports`.
pub fn acl_rule(action: u8, protocol: u8, ports: (u16, u16)) -> AclRule {
    AclRule {
        action,
        protocol,
        port_lo: ports.0,
        port_hi: ports.1,
        service: crate::generation::ACL_GLOBAL,
    }
}

/// Builds a [`Generation`] step by step; see the module documentation.
#[derive(Debug, Clone)]
pub struct GenerationBuilder {
    g: Generation,
    maglev_size: u32,
    vip_v4: Vec<(u32, u8, u32)>,
    vip_v6: Vec<(u128, u8, u32)>,
    geo_v4: Vec<(u32, u8, u32)>,
    acl_v4: Vec<(u32, u8, u32)>,
}

impl Default for GenerationBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).expect("a test generation's sections fit u32 indices")
}

impl GenerationBuilder {
    /// Generation number 0, default configuration, nothing else; Maglev tables of 7 slots.
    pub fn new() -> Self {
        Self {
            g: Generation::default(),
            maglev_size: 7,
            vip_v4: Vec::new(),
            vip_v6: Vec::new(),
            geo_v4: Vec::new(),
            acl_v4: Vec::new(),
        }
    }

    #[must_use]
    pub fn generation(mut self, generation: u64) -> Self {
        self.g.generation = generation;
        self
    }

    #[must_use]
    pub fn config(mut self, edit: impl FnOnce(&mut Config)) -> Self {
        edit(&mut self.g.config);
        self
    }

    /// An interface with up to four addresses of each family; no gateway.
    #[must_use]
    pub fn interface(mut self, name: &str, mac: [u8; 6], addresses: &[IpAddr]) -> Self {
        let mut it = Interface {
            name: name_field(name),
            mac,
            ..Zeroable::zeroed()
        };
        for a in addresses {
            match a {
                IpAddr::V4(a) => {
                    it.v4[usize::from(it.v4_count)] = a.octets();
                    it.v4_count += 1;
                }
                IpAddr::V6(a) => {
                    it.v6[usize::from(it.v6_count)] = a.octets();
                    it.v6_count += 1;
                }
            }
            assert!(usize::from(it.v4_count.max(it.v6_count)) <= MAX_IF_ADDRS);
        }
        self.g.interfaces.push(it);
        self
    }

    /// The last interface's gateway: its MAC and, optionally, its IPv4 address.
    #[must_use]
    pub fn gateway(mut self, mac: [u8; 6], v4: Option<Ipv4Addr>) -> Self {
        let it = self.g.interfaces.last_mut().expect("an interface first");
        it.gateway_mac = mac;
        it.gateway_v4 = v4.map_or([0; 4], |a| a.octets());
        self
    }

    /// A region; [`Self::geo_v4`] maps client prefixes to it.
    #[must_use]
    pub fn region(mut self, name: &str) -> Self {
        self.g.regions.push(Region {
            name: name_field(name),
        });
        self
    }

    /// Clients in `prefix/len` are in the last region.
    #[must_use]
    pub fn geo_v4(mut self, prefix: Ipv4Addr, len: u8) -> Self {
        let region = count(self.g.regions.len());
        assert!(region > 0, "a region first");
        self.geo_v4.push((u32::from(prefix), len, region));
        self
    }

    /// A service on `ports` (inclusive ranges), in a VIP group of its own (none without ports);
    /// routes follow.
    #[must_use]
    pub fn service(mut self, name: &str, protocol: u8, ports: &[(u16, u16)]) -> Self {
        let service = count(self.g.services.len());
        self.g.services.push(Service {
            name: name_field(name),
            first_route: count(self.g.routes.len()),
            route_count: 0,
            protocol,
            _pad: [0; 3],
        });
        if ports.is_empty() {
            return self;
        }
        self.g.vip_groups.push(VipGroup {
            first_entry: count(self.g.vip_entries.len()),
            entry_count: count(ports.len()),
        });
        for &(port_lo, port_hi) in ports {
            self.g.vip_entries.push(VipEntry {
                service,
                port_lo,
                port_hi,
                protocol,
                _pad: [0; 3],
            });
        }
        self
    }

    /// The last service's VIP group answers on `address/len`.
    #[must_use]
    pub fn vip(mut self, address: IpAddr, len: u8) -> Self {
        let group = count(self.g.vip_groups.len());
        assert!(group > 0, "a service first");
        match address {
            IpAddr::V4(a) => self.vip_v4.push((u32::from(a), len, group)),
            IpAddr::V6(a) => self.vip_v6.push((u128::from(a), len, group)),
        }
        self
    }

    /// A route of the last service: clients of `region` ([`NONE`]: any) to `pools`, in order.
    #[must_use]
    pub fn route(mut self, region: u32, pools: &[u32]) -> Self {
        assert!(pools.len() <= MAX_ROUTE_POOLS);
        let mut p = [0; MAX_ROUTE_POOLS];
        p[..pools.len()].copy_from_slice(pools);
        self.g.routes.push(Route {
            region,
            pools: p,
            pool_count: count(pools.len()),
            canary_pool: NONE,
            canary_per_million: 0,
            strict: 0,
            _pad: [0; 3],
        });
        self.g
            .services
            .last_mut()
            .expect("a service first")
            .route_count += 1;
        self
    }

    /// The last route sends `per_million` of its new flows to `pool`.
    #[must_use]
    pub fn canary(mut self, pool: u32, per_million: u32) -> Self {
        let r = self.g.routes.last_mut().expect("a route first");
        r.canary_pool = pool;
        r.canary_per_million = per_million;
        self
    }

    /// The last route is strict (no fallback to the catch-all).
    #[must_use]
    pub fn strict(mut self) -> Self {
        self.g.routes.last_mut().expect("a route first").strict = 1;
        self
    }

    /// Maglev table size of the pools added from here on.
    #[must_use]
    pub fn maglev_size(mut self, slots: u32) -> Self {
        self.maglev_size = slots;
        self
    }

    /// A pool of `backends`, its Maglev table filled round robin with those that are healthy
    /// with a weight above 0 (the healthy list).
    #[must_use]
    pub fn pool(mut self, name: &str, scheduler: Scheduler, backends: &[BackendSpec]) -> Self {
        let g = &mut self.g;
        let pool = count(g.pools.len());
        let first_backend = count(g.backends.len());
        let first_healthy = count(g.healthy_backends.len());
        for b in backends {
            let index = count(g.backends.len());
            let (address, family) = match b.address {
                IpAddr::V4(a) => {
                    let mut out = [0; 16];
                    out[..4].copy_from_slice(&a.octets());
                    (out, FAMILY_V4)
                }
                IpAddr::V6(a) => (a.octets(), FAMILY_V6),
            };
            g.backends.push(Backend {
                address,
                family,
                flags: b.flags,
                _pad: [0; 2],
                weight: b.weight,
                id: b.id.unwrap_or(index + 1),
                pool,
            });
            if b.flags & BACKEND_HEALTHY != 0 && b.weight > 0 {
                g.healthy_backends.push(index);
            }
        }
        let healthy = &g.healthy_backends[first_healthy as usize..];
        let maglev_offset = count(g.maglev.len());
        let slots = (0..self.maglev_size as usize).map(|i| {
            if healthy.is_empty() {
                0
            } else {
                healthy[i % healthy.len()] + 1
            }
        });
        let healthy_count = count(healthy.len());
        g.maglev.extend(slots);
        g.pools.push(Pool {
            name: name_field(name),
            scheduler: scheduler as u8,
            _pad: [0; 3],
            maglev_offset,
            maglev_size: self.maglev_size,
            first_backend,
            backend_count: count(backends.len()),
            first_healthy,
            healthy_count,
        });
        self
    }

    /// An ACL group of `rules`, applied to clients in the IPv4 `sources`.
    #[must_use]
    pub fn acl(mut self, rules: &[AclRule], sources: &[(Ipv4Addr, u8)]) -> Self {
        self.g.acl_groups.push(AclGroup {
            first_rule: count(self.g.acl_rules.len()),
            rule_count: count(rules.len()),
        });
        self.g.acl_rules.extend_from_slice(rules);
        let group = count(self.g.acl_groups.len());
        self.acl_v4
            .extend(sources.iter().map(|&(a, len)| (u32::from(a), len, group)));
        self
    }

    /// The region-routed service the table's tests and the fuzz templates start from: region
    /// `eu-west`; service `llama` on 443/tcp, routing eu-west to pools `eu` then `us` and every
    /// other client to `us` with a 5 % canary to `eu`; `eu` Maglev over 192.0.2.11 and .12,
    /// `us` round robin over 192.0.2.21.
    #[must_use]
    pub fn llama_eu_us(self) -> Self {
        let backend = |a: [u8; 4]| BackendSpec::new(Ipv4Addr::from(a));
        self.region("eu-west")
            .service("llama", crate::generation::PROTO_TCP, &[(443, 443)])
            .route(0, &[0, 1])
            .route(NONE, &[1])
            .canary(0, 50_000)
            .pool(
                "eu",
                Scheduler::Maglev,
                &[backend([192, 0, 2, 11]), backend([192, 0, 2, 12])],
            )
            .pool("us", Scheduler::RoundRobin, &[backend([192, 0, 2, 21])])
    }

    /// The generation, with `backend_by_id` and the LPM tables of what was added.
    pub fn build(self) -> Generation {
        let mut g = self.g;
        let ids = g
            .backends
            .iter()
            .map(|b| b.id as usize + 1)
            .max()
            .unwrap_or(0);
        g.backend_by_id = vec![0; ids];
        for (index, b) in g.backends.iter().enumerate() {
            g.backend_by_id[b.id as usize] = count(index) + 1;
        }
        let v4 = |p: &[(u32, u8, u32)]| {
            if p.is_empty() {
                Vec::new()
            } else {
                lpm::build_v4(p).expect("valid prefixes")
            }
        };
        g.vip_lpm_v4 = v4(&self.vip_v4);
        g.geo_lpm_v4 = v4(&self.geo_v4);
        g.acl_lpm_v4 = v4(&self.acl_v4);
        if !self.vip_v6.is_empty() {
            g.vip_lpm_v6 = lpm::build_v6(&self.vip_v6).expect("valid prefixes");
        }
        g
    }
}
