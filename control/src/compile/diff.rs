//! What changes between two generations, in the operator's terms: what `apply` shows before it
//! publishes.
//!
//! Objects are matched by name (services, pools) and by (pool name, address) for backends, not
//! by index, since indices shift as objects come and go. Maglev slots are compared by the stable
//! backend id they point to, so a backend whose index moved is not reported as churn.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use switchyard_table::generation::{
    name_str, Config, Generation, Scheduler, BACKEND_HEALTHY, ENCAP_GUE, NONE,
};

use super::address_of;

/// The difference between two generations. Lists are in the order of the generation the
/// object is in (the new one for additions and changes, the old one for removals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationDiff {
    pub old_generation: u64,
    pub new_generation: u64,
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub services_changed: Vec<ServiceChange>,
    pub pools_added: Vec<String>,
    pub pools_removed: Vec<String>,
    pub pools_changed: Vec<PoolChange>,
    pub backends_added: Vec<BackendSummary>,
    pub backends_removed: Vec<BackendSummary>,
    pub backends_changed: Vec<BackendChange>,
    /// Region list or geo tables (prefixes, GeoIP) differ.
    pub regions_changed: bool,
    /// Which VIP finds which service differs (VIP tables or groups).
    pub vips_changed: bool,
    pub acl_changed: bool,
    /// What differs in the global config, one entry per knob (`encap ipip -> gue`).
    pub config_changed: Vec<String>,
    pub interfaces_changed: bool,
}

/// A service in both generations whose ports or routes differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    pub name: String,
    /// Protocol or port ranges.
    pub ports: bool,
    /// What differs in the routes (regions, pools, fallbacks, canary pool or share,
    /// residency), one entry each: `canary llama-v2 20% -> 0%`, `route from eu-west: pool a -> b`.
    pub routes: Vec<String>,
}

/// A pool in both generations whose scheduler or Maglev table differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChange {
    pub name: String,
    pub old_scheduler: u8,
    pub new_scheduler: u8,
    pub old_maglev_size: u32,
    pub new_maglev_size: u32,
    /// Slots of the new table that point to another backend (by id) than before; every slot
    /// when the size changed.
    pub maglev_slots_changed: usize,
}

/// One backend as a diff line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSummary {
    pub pool: String,
    pub address: IpAddr,
    pub id: u32,
    pub weight: u32,
    pub healthy: bool,
}

/// A backend in both generations whose weight, health or id differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChange {
    pub pool: String,
    pub address: IpAddr,
    pub old_id: u32,
    pub new_id: u32,
    pub old_weight: u32,
    pub new_weight: u32,
    pub old_healthy: bool,
    pub new_healthy: bool,
}

impl GenerationDiff {
    /// Whether the two generations forward alike (generation numbers aside).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.change_count() == 0
    }

    /// Number of lines [`fmt::Display`] prints below its header.
    #[must_use]
    pub fn change_count(&self) -> usize {
        self.services_added.len()
            + self.services_removed.len()
            + self.services_changed.len()
            + self.pools_added.len()
            + self.pools_removed.len()
            + self.pools_changed.len()
            + self.backends_added.len()
            + self.backends_removed.len()
            + self.backends_changed.len()
            + usize::from(!self.config_changed.is_empty())
            + [
                self.regions_changed,
                self.vips_changed,
                self.acl_changed,
                self.interfaces_changed,
            ]
            .iter()
            .filter(|&&b| b)
            .count()
    }
}

/// Compares two generations; see the module documentation.
#[must_use]
pub fn diff(old: &Generation, new: &Generation) -> GenerationDiff {
    let mut d = GenerationDiff {
        old_generation: old.generation,
        new_generation: new.generation,
        ..GenerationDiff::default()
    };
    services(old, new, &mut d);
    pools(old, new, &mut d);
    backends(old, new, &mut d);
    d.regions_changed = old.regions != new.regions
        || old.geo_lpm_v4 != new.geo_lpm_v4
        || old.geo_lpm_v6 != new.geo_lpm_v6;
    d.vips_changed = old.vip_lpm_v4 != new.vip_lpm_v4
        || old.vip_lpm_v6 != new.vip_lpm_v6
        || vip_groups(old) != vip_groups(new);
    d.acl_changed = old.acl_lpm_v4 != new.acl_lpm_v4
        || old.acl_lpm_v6 != new.acl_lpm_v6
        || old.acl_groups != new.acl_groups
        || old.acl_rules != new.acl_rules;
    d.config_changed = config_changes(&old.config, &new.config);
    d.interfaces_changed = old.interfaces != new.interfaces;
    d
}

fn service_names(g: &Generation) -> Vec<&str> {
    g.services.iter().map(|s| name_str(&s.name)).collect()
}

fn pool_name(g: &Generation, pool: u32) -> &str {
    g.pools
        .get(pool as usize)
        .map_or("?", |p| name_str(&p.name))
}

/// A service's (protocol, port range) entries, by service name, sorted.
fn service_ports(g: &Generation, service: usize) -> Vec<(u8, u16, u16)> {
    let mut ports: Vec<(u8, u16, u16)> = g
        .vip_entries
        .iter()
        .filter(|e| e.service as usize == service)
        .map(|e| (e.protocol, e.port_lo, e.port_hi))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// One route with names for indices.
#[derive(Debug, PartialEq, Eq)]
struct RouteView<'a> {
    /// The region it is from (`None`: the catch-all route).
    region: Option<&'a str>,
    /// The primary pool, then the fallbacks.
    pools: Vec<&'a str>,
    canary: Option<(&'a str, u32)>,
    strict: bool,
}

impl RouteView<'_> {
    fn label(&self) -> String {
        match self.region {
            Some(region) => format!("route from {region}"),
            None => "catch-all route".to_owned(),
        }
    }
}

/// A service's routes with names for indices.
fn service_routes(g: &Generation, service: usize) -> Vec<RouteView<'_>> {
    let s = &g.services[service];
    let start = s.first_route as usize;
    let routes = g
        .routes
        .get(start..start + s.route_count as usize)
        .unwrap_or(&[]);
    routes
        .iter()
        .map(|r| {
            let region = (r.region != NONE).then(|| {
                g.regions
                    .get(r.region as usize)
                    .map_or("?", |x| name_str(&x.name))
            });
            let count = (r.pool_count as usize).min(r.pools.len());
            RouteView {
                region,
                pools: r.pools[..count].iter().map(|&p| pool_name(g, p)).collect(),
                canary: (r.canary_pool != NONE)
                    .then(|| (pool_name(g, r.canary_pool), r.canary_per_million)),
                strict: r.strict != 0,
            }
        })
        .collect()
}

/// A share in millionths as a percentage: `20%`, `0.5%`, `12.25%`.
fn percent(per_million: u32) -> String {
    let hundredths = per_million / 100;
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => format!("{whole}%"),
        f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
        f => format!("{whole}.{f:02}%"),
    }
}

fn pool_list(pools: &[&str]) -> String {
    if pools.is_empty() {
        "none".to_owned()
    } else {
        pools.join(", ")
    }
}

/// What differs between two route lists, in the operator's terms. Routes are matched by the
/// region they are from (a region has at most one route; the catch-all is one more). A canary
/// change is said once per service, whichever routes take it.
fn route_changes(old: &[RouteView<'_>], new: &[RouteView<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |line: String| {
        if !out.contains(&line) {
            out.push(line);
        }
    };
    let push = &mut push;
    for n in new {
        let Some(o) = old.iter().find(|o| o.region == n.region) else {
            push(format!(
                "{} added (pool {})",
                n.label(),
                n.pools.first().copied().unwrap_or("?")
            ));
            continue;
        };
        let label = n.label();
        if o.pools.first() != n.pools.first() {
            push(format!(
                "{label}: pool {} -> {}",
                o.pools.first().copied().unwrap_or("?"),
                n.pools.first().copied().unwrap_or("?")
            ));
        }
        let (of, nf) = (
            o.pools.get(1..).unwrap_or(&[]),
            n.pools.get(1..).unwrap_or(&[]),
        );
        if of != nf {
            push(format!(
                "{label}: fallback {} -> {}",
                pool_list(of),
                pool_list(nf)
            ));
        }
        if o.strict != n.strict {
            let residency = |strict: bool| if strict { "strict" } else { "preferred" };
            push(format!(
                "{label}: residency {} -> {}",
                residency(o.strict),
                residency(n.strict)
            ));
        }
        match (o.canary, n.canary) {
            (a, b) if a == b => {}
            (Some((op, os)), Some((np, ns))) if op == np => {
                push(format!("canary {np} {} -> {}", percent(os), percent(ns)));
            }
            (Some((op, os)), Some((np, ns))) => push(format!(
                "canary {op} {} -> {np} {}",
                percent(os),
                percent(ns)
            )),
            (Some((op, os)), None) => {
                push(format!("{label}: no canary ({op} {} before)", percent(os)))
            }
            (None, Some((np, ns))) => push(format!("{label}: canary {np} {}", percent(ns))),
            (None, None) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.region == o.region) {
            push(format!("{} removed", o.label()));
        }
    }
    if out.is_empty()
        && old
            .iter()
            .map(|r| r.region)
            .ne(new.iter().map(|r| r.region))
    {
        out.push("route order changed".to_owned());
    }
    out
}

/// How a config knob reads in a diff line.
type ShowKnob = fn(&Config) -> String;

/// What differs in the global config, one entry per knob.
fn config_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let encap = |c: &Config| {
        if c.encap == ENCAP_GUE {
            format!("gue port {}", c.gue_port)
        } else {
            "ipip".to_owned()
        }
    };
    if encap(old) != encap(new) {
        out.push(format!("encap {} -> {}", encap(old), encap(new)));
    }
    let knobs: [(&str, ShowKnob); 7] = [
        ("backend_mtu", |c| c.backend_mtu.to_string()),
        ("ICMP rate", |c| format!("{}/s", c.icmp_rate)),
        ("new flows per source", |c| {
            if c.new_flow_rate == 0 {
                "unlimited".to_owned()
            } else {
                format!("{}/s burst {}", c.new_flow_rate, c.new_flow_burst)
            }
        }),
        ("flow timeout tcp_handshake", |c| {
            format!("{}s", c.tcp_syn_timeout)
        }),
        ("flow timeout tcp_established", |c| {
            format!("{}s", c.tcp_established_timeout)
        }),
        ("flow timeout tcp_closing", |c| {
            format!("{}s", c.tcp_closing_timeout)
        }),
        ("flow timeout udp", |c| format!("{}s", c.udp_timeout)),
    ];
    for (name, show) in knobs {
        let (a, b) = (show(old), show(new));
        if a != b {
            out.push(format!("{name} {a} -> {b}"));
        }
    }
    if out.is_empty() && old != new {
        out.push("config changed".to_owned());
    }
    out
}

/// VIP groups with service names for indices.
fn vip_groups(g: &Generation) -> Vec<Vec<(&str, u8, u16, u16)>> {
    g.vip_groups
        .iter()
        .map(|grp| {
            let start = grp.first_entry as usize;
            g.vip_entries
                .get(start..start + grp.entry_count as usize)
                .unwrap_or(&[])
                .iter()
                .map(|e| {
                    let name = g
                        .services
                        .get(e.service as usize)
                        .map_or("?", |s| name_str(&s.name));
                    (name, e.protocol, e.port_lo, e.port_hi)
                })
                .collect()
        })
        .collect()
}

fn services(old: &Generation, new: &Generation, d: &mut GenerationDiff) {
    let old_names = service_names(old);
    let new_names = service_names(new);
    let old_index: HashMap<&str, usize> =
        old_names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    for (ni, &name) in new_names.iter().enumerate() {
        match old_index.get(name) {
            None => d.services_added.push(name.to_owned()),
            Some(&oi) => {
                let ports = service_ports(old, oi) != service_ports(new, ni)
                    || old.services[oi].protocol != new.services[ni].protocol;
                let routes = route_changes(&service_routes(old, oi), &service_routes(new, ni));
                if ports || !routes.is_empty() {
                    d.services_changed.push(ServiceChange {
                        name: name.to_owned(),
                        ports,
                        routes,
                    });
                }
            }
        }
    }
    d.services_removed = old_names
        .iter()
        .filter(|n| !new_names.contains(n))
        .map(|&n| n.to_owned())
        .collect();
}

/// A pool's Maglev slots as the stable ids they point to (0 = empty).
fn maglev_ids(g: &Generation, pool: usize) -> Vec<u32> {
    let p = &g.pools[pool];
    let start = p.maglev_offset as usize;
    g.maglev
        .get(start..start + p.maglev_size as usize)
        .unwrap_or(&[])
        .iter()
        .map(|&slot| {
            if slot == 0 {
                0
            } else {
                g.backends.get(slot as usize - 1).map_or(0, |b| b.id)
            }
        })
        .collect()
}

fn pools(old: &Generation, new: &Generation, d: &mut GenerationDiff) {
    let old_index: HashMap<&str, usize> = old
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| (name_str(&p.name), i))
        .collect();
    for (ni, p) in new.pools.iter().enumerate() {
        let name = name_str(&p.name);
        let Some(&oi) = old_index.get(name) else {
            d.pools_added.push(name.to_owned());
            continue;
        };
        let o = &old.pools[oi];
        let slots = if o.maglev_size == p.maglev_size {
            let a = maglev_ids(old, oi);
            let b = maglev_ids(new, ni);
            a.iter().zip(&b).filter(|(x, y)| x != y).count()
        } else {
            p.maglev_size as usize
        };
        if slots > 0 || o.scheduler != p.scheduler || o.maglev_size != p.maglev_size {
            d.pools_changed.push(PoolChange {
                name: name.to_owned(),
                old_scheduler: o.scheduler,
                new_scheduler: p.scheduler,
                old_maglev_size: o.maglev_size,
                new_maglev_size: p.maglev_size,
                maglev_slots_changed: slots,
            });
        }
    }
    let new_names: Vec<&str> = new.pools.iter().map(|p| name_str(&p.name)).collect();
    d.pools_removed = old
        .pools
        .iter()
        .map(|p| name_str(&p.name))
        .filter(|n| !new_names.contains(n))
        .map(str::to_owned)
        .collect();
}

fn backend_summaries(g: &Generation) -> Vec<BackendSummary> {
    g.backends
        .iter()
        .filter_map(|b| {
            Some(BackendSummary {
                pool: pool_name(g, b.pool).to_owned(),
                address: address_of(&b.address, b.family)?,
                id: b.id,
                weight: b.weight,
                healthy: b.flags & BACKEND_HEALTHY != 0,
            })
        })
        .collect()
}

fn backends(old: &Generation, new: &Generation, d: &mut GenerationDiff) {
    let old_list = backend_summaries(old);
    let new_list = backend_summaries(new);
    let old_index: HashMap<(&str, IpAddr), &BackendSummary> = old_list
        .iter()
        .map(|b| ((b.pool.as_str(), b.address), b))
        .collect();
    let new_index: HashMap<(&str, IpAddr), &BackendSummary> = new_list
        .iter()
        .map(|b| ((b.pool.as_str(), b.address), b))
        .collect();
    for b in &new_list {
        match old_index.get(&(b.pool.as_str(), b.address)) {
            None => d.backends_added.push(b.clone()),
            Some(o) => {
                if o.id != b.id || o.weight != b.weight || o.healthy != b.healthy {
                    d.backends_changed.push(BackendChange {
                        pool: b.pool.clone(),
                        address: b.address,
                        old_id: o.id,
                        new_id: b.id,
                        old_weight: o.weight,
                        new_weight: b.weight,
                        old_healthy: o.healthy,
                        new_healthy: b.healthy,
                    });
                }
            }
        }
    }
    d.backends_removed = old_list
        .iter()
        .filter(|b| !new_index.contains_key(&(b.pool.as_str(), b.address)))
        .cloned()
        .collect();
}

fn health(healthy: bool) -> &'static str {
    if healthy {
        "healthy"
    } else {
        "unhealthy"
    }
}

/// One line per change: `+` added, `-` removed, `~` changed, after a header line.
///
/// ```text
/// generation 4 -> 5: 4 changes
/// + backend llama-eu 192.0.2.14 (id 10, weight 100, healthy)
/// - backend llama-eu 192.0.2.13 (id 3, weight 50, healthy)
/// ~ backend llama-eu 192.0.2.11 (id 1): weight 100 -> 40
/// ~ pool llama-eu: 26215 of 65537 Maglev slots changed
/// ```
impl fmt::Display for GenerationDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.change_count();
        write!(
            f,
            "generation {} -> {}: ",
            self.old_generation, self.new_generation
        )?;
        match n {
            0 => return f.write_str("no changes"),
            1 => f.write_str("1 change")?,
            _ => write!(f, "{n} changes")?,
        }
        for s in &self.services_added {
            write!(f, "\n+ service {s}")?;
        }
        for s in &self.services_removed {
            write!(f, "\n- service {s}")?;
        }
        for s in &self.services_changed {
            let mut what: Vec<&str> = Vec::new();
            if s.ports {
                what.push("ports changed");
            }
            what.extend(s.routes.iter().map(String::as_str));
            write!(f, "\n~ service {}: {}", s.name, what.join("; "))?;
        }
        for p in &self.pools_added {
            write!(f, "\n+ pool {p}")?;
        }
        for p in &self.pools_removed {
            write!(f, "\n- pool {p}")?;
        }
        for p in &self.pools_changed {
            write!(f, "\n~ pool {}:", p.name)?;
            let mut sep = " ";
            if p.old_scheduler != p.new_scheduler {
                write!(
                    f,
                    "{sep}scheduler {} -> {}",
                    Scheduler::name_of(p.old_scheduler),
                    Scheduler::name_of(p.new_scheduler)
                )?;
                sep = ", ";
            }
            if p.old_maglev_size != p.new_maglev_size {
                write!(
                    f,
                    "{sep}Maglev size {} -> {}",
                    p.old_maglev_size, p.new_maglev_size
                )?;
                sep = ", ";
            }
            if p.maglev_slots_changed > 0 {
                write!(
                    f,
                    "{sep}{} of {} Maglev slots changed",
                    p.maglev_slots_changed, p.new_maglev_size
                )?;
            }
        }
        for b in &self.backends_added {
            write!(
                f,
                "\n+ backend {} {} (id {}, weight {}, {})",
                b.pool,
                b.address,
                b.id,
                b.weight,
                health(b.healthy)
            )?;
        }
        for b in &self.backends_removed {
            write!(
                f,
                "\n- backend {} {} (id {}, weight {}, {})",
                b.pool,
                b.address,
                b.id,
                b.weight,
                health(b.healthy)
            )?;
        }
        for b in &self.backends_changed {
            write!(f, "\n~ backend {} {} (id {}):", b.pool, b.address, b.new_id)?;
            let mut sep = " ";
            if b.old_id != b.new_id {
                write!(f, "{sep}id {} -> {}", b.old_id, b.new_id)?;
                sep = ", ";
            }
            if b.old_weight != b.new_weight {
                write!(f, "{sep}weight {} -> {}", b.old_weight, b.new_weight)?;
                sep = ", ";
            }
            if b.old_healthy != b.new_healthy {
                write!(
                    f,
                    "{sep}{} -> {}",
                    health(b.old_healthy),
                    health(b.new_healthy)
                )?;
            }
        }
        for (changed, what) in [
            (self.regions_changed, "regions (prefixes or GeoIP) changed"),
            (self.vips_changed, "VIP table changed"),
            (self.acl_changed, "ACL changed"),
            (self.interfaces_changed, "interfaces changed"),
        ] {
            if changed {
                write!(f, "\n~ {what}")?;
            }
        }
        if !self.config_changed.is_empty() {
            write!(f, "\n~ config: {}", self.config_changed.join("; "))?;
        }
        Ok(())
    }
}
