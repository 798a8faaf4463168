//! The validated policy: what the compiler walks.
//!
//! Every value here has passed the checks in `validate.rs`: addresses parse, prefixes have no
//! host bits, names are unique, and every cross-reference resolved. References between objects
//! are typed indices ([`RegionId`], [`PoolId`]) into the vectors of [`Policy`], in declaration
//! order, so a compiler can index without looking names up; names are kept beside them for
//! counters, logs and the CLI, and [`Policy::pool_by_name`] / [`Policy::region_by_name`] go the
//! other way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Default GUE destination port on the backends.
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// Default Maglev lookup-table size (prime).
pub const DEFAULT_MAGLEV_SIZE: u32 = 65_537;
/// Largest Maglev lookup-table size a policy may ask for.
pub const MAX_MAGLEV_SIZE: u32 = 16_777_216;
/// Default weight of a backend that does not set one.
pub const DEFAULT_BACKEND_WEIGHT: u16 = 100;
/// Default rate of ICMP replies the appliance sends, per second.
pub const DEFAULT_ICMP_PER_SECOND: u32 = 100;

/// A validated policy. Build one with [`super::load`], [`super::parse_str`] or
/// [`super::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Network interfaces of the appliance, in declaration order.
    pub interfaces: Vec<Interface>,
    /// How packets are carried to backends.
    pub encap: Encap,
    /// Largest IP packet the network between the appliance and the backends carries; an
    /// encapsulated packet bigger than this is answered with frag-needed / packet-too-big.
    pub backend_mtu: u16,
    /// MaxMind-format country database used to classify clients of regions with `geoip`.
    /// As written in the policy; [`super::load`] resolves a relative path against the
    /// directory of the policy file.
    pub geoip_database: Option<PathBuf>,
    /// Client regions, in declaration order; [`RegionId`] indexes this.
    pub regions: Vec<Region>,
    /// One service per model endpoint, in declaration order.
    pub services: Vec<Service>,
    /// Backend pools, in declaration order; [`PoolId`] indexes this.
    pub pools: Vec<Pool>,
    /// Source ACL, first match wins; a packet that matches no rule is allowed.
    pub acl: Vec<AclRule>,
    /// Per-source and ICMP rate limits.
    pub limits: Limits,
    /// Table sizing for the data plane.
    pub tables: Tables,
    /// Outer source prefixes of encapsulated packets.
    pub encap_source: EncapSource,
    /// Connection-table idle timeouts.
    pub flow_timeouts: FlowTimeouts,
}

/// The outer source addresses of IPIP / GUE packets: the prefix's network bits, host bits from
/// the flow hash (at most the low 32), so backends spread flows over their NIC queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncapSource {
    pub ipv4: ipnet::Ipv4Net,
    pub ipv6: ipnet::Ipv6Net,
}

impl Default for EncapSource {
    fn default() -> Self {
        Self {
            ipv4: ipnet::Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 16)
                .unwrap_or_else(|_| unreachable!("/16 is a valid IPv4 prefix length")),
            ipv6: ipnet::Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x5359, 0, 0, 0, 0, 0, 0), 64)
                .unwrap_or_else(|_| unreachable!("/64 is a valid IPv6 prefix length")),
        }
    }
}

/// How long an idle flow keeps its connection-table entry, by state. Whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// TCP: SYN seen, handshake not completed.
    pub tcp_handshake: Duration,
    /// TCP: established (or picked up mid-stream).
    pub tcp_established: Duration,
    /// TCP: FIN or RST seen.
    pub tcp_closing: Duration,
    /// UDP and other protocols.
    pub udp: Duration,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        Self {
            tcp_handshake: Duration::from_secs(5),
            tcp_established: Duration::from_secs(900),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(30),
        }
    }
}

impl Policy {
    /// The region with this id.
    ///
    /// # Panics
    /// If the id does not come from this policy.
    #[must_use]
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.index()]
    }

    /// The pool with this id.
    ///
    /// # Panics
    /// If the id does not come from this policy.
    #[must_use]
    pub fn pool(&self, id: PoolId) -> &Pool {
        &self.pools[id.index()]
    }

    /// Looks a region up by name.
    #[must_use]
    pub fn region_by_name(&self, name: &str) -> Option<RegionId> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .map(RegionId::from_index)
    }

    /// Looks a pool up by name.
    #[must_use]
    pub fn pool_by_name(&self, name: &str) -> Option<PoolId> {
        self.pools
            .iter()
            .position(|p| p.name == name)
            .map(PoolId::from_index)
    }

    /// Looks a service up by name.
    #[must_use]
    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Total number of backends over all pools.
    #[must_use]
    pub fn backend_count(&self) -> usize {
        self.pools.iter().map(|p| p.backends.len()).sum()
    }
}

macro_rules! index_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u32);

        impl $name {
            /// Position in the policy's vector.
            #[must_use]
            pub fn index(self) -> usize {
                self.0 as usize
            }

            pub(crate) fn from_index(index: usize) -> Self {
                // Policies are bounded by the parser's node budget, far below u32::MAX.
                Self(u32::try_from(index).expect("policy object index fits in u32"))
            }
        }
    };
}

index_id!(
    /// Index of a region in [`Policy::regions`].
    RegionId
);
index_id!(
    /// Index of a pool in [`Policy::pools`].
    PoolId
);

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for group (multicast or broadcast) addresses: the I/G bit is set.
    #[must_use]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A network interface of the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: MacAddr,
    /// Own addresses with their on-link prefix length (`198.51.100.1/24`).
    pub addresses: Vec<IpNet>,
    pub gateway: Option<Gateway>,
    /// This interface's own outer source prefixes (`interfaces[].encap_source`), per family;
    /// `None` takes the policy's top-level `encap_source`.
    pub encap_source_ipv4: Option<ipnet::Ipv4Net>,
    pub encap_source_ipv6: Option<ipnet::Ipv6Net>,
}

/// Next hop for destinations that are not on-link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Fixed gateway MAC; without it the data plane resolves the gateway by ARP / ND.
    pub mac: Option<MacAddr>,
}

/// Encapsulation used to hand packets to backends (direct server return).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// IP-in-IP (IPv4 protocol 4 / IPv6 next header 41).
    Ipip,
    /// Generic UDP Encapsulation to this UDP destination port on the backend.
    Gue { port: u16 },
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(pub [u8; 2]);

impl CountryCode {
    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only constructed from two ASCII capitals.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of clients, by source prefix and/or GeoIP country.
///
/// Classification: a client belongs to the region with the longest prefix that contains its
/// address; if no prefix matches, to the region listing its GeoIP country; otherwise to none
/// (it takes a service's catch-all route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    pub geoip_countries: Vec<CountryCode>,
}

/// Transport protocol of a service or ACL rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lower-case name as written in the policy.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of ports; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// One port.
    #[must_use]
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// Whether `port` is in the range.
    #[must_use]
    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Whether the two ranges share a port.
    #[must_use]
    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether every port of `other` is in `self`.
    #[must_use]
    pub fn covers(self, other: PortRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// One model endpoint: a VIP, its ports and how its clients are routed to pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// The virtual address; a single address is a host prefix (`/32`, `/128`).
    pub vip: IpNet,
    /// Destination ports, sorted, non-overlapping.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    /// Routes in policy order. At most one route per region and at most one catch-all,
    /// which is last.
    pub routes: Vec<Route>,
    pub canary: Option<Canary>,
    /// The service's own ACL rules, evaluated after the global `acl:` (first match decides).
    pub acl: Vec<AclRule>,
}

/// Where the clients of one region (or everyone else) go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The clients' region; `None` is the catch-all route ("everyone else").
    pub from: Option<RegionId>,
    /// Preferred pool.
    pub pool: PoolId,
    /// Pools tried in order when the preferred pool has no healthy backend.
    pub fallback: Vec<PoolId>,
    pub residency: Residency,
    /// Whether the service's canary takes a share of this route's new flows. False only
    /// for a strict route whose region differs from the canary pool's region.
    pub takes_canary: bool,
}

/// Whether traffic may leave its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    /// Clients stay on pools of their own region; with none healthy, their flows are dropped.
    Strict,
    /// Clients prefer the route's pool and fall back wherever the route says.
    #[default]
    Preferred,
}

/// A share of a service's new flows sent to a canary pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub pool: PoolId,
    /// The share the compiler publishes. For a phased canary this is the first step, what a
    /// fresh start uses; the control plane's rollout state (`crate::rollout`) overwrites it
    /// with the share of the step the rollout has reached.
    pub percent: Percent,
    /// `None`: a fixed canary that stays at `percent`.
    pub rollout: Option<Rollout>,
}

/// A phased canary: the share goes through `steps`, each held for `step_interval`, while the
/// rollback gates pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Shares in increasing order, each above 0; the last may be 100 %.
    pub steps: Vec<Percent>,
    /// Time at each step (the last one included) before the rollout moves on.
    pub step_interval: Duration,
    pub rollback: RollbackGates,
}

/// Conditions that halt a phased canary and set its share to 0; any one trips.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackGates {
    /// Trip when this many backends of the canary pool are down (at least 1).
    pub backends_down: u32,
    /// Trip when a counter summed over the canary pool's backends grows too fast.
    pub signal: Option<SignalGate>,
}

/// A rate gate on a Prometheus counter scraped from the canary pool's metrics endpoint
/// (`load.metrics` of the pool).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalGate {
    /// Prometheus metric name, e.g. `switchyard_test_request_errors_total`.
    pub metric: String,
    /// Trip above this many per second (finite, 0 or more).
    pub max_rate: f64,
}

/// A percentage with two decimals, stored exactly as basis points (1/100 of a percent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Percent {
    basis_points: u16,
}

impl Percent {
    /// 100 %.
    pub const FULL: Percent = Percent {
        basis_points: 10_000,
    };

    /// From basis points (`50` = 0.5 %); `None` above 10 000.
    #[must_use]
    pub fn from_basis_points(basis_points: u16) -> Option<Self> {
        (basis_points <= 10_000).then_some(Self { basis_points })
    }

    /// Hundredths of a percent, `0..=10_000`.
    #[must_use]
    pub fn basis_points(self) -> u16 {
        self.basis_points
    }

    /// As a fraction in `0.0..=1.0`.
    #[must_use]
    pub fn fraction(self) -> f64 {
        f64::from(self.basis_points) / 10_000.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.basis_points / 100;
        let cents = self.basis_points % 100;
        if cents == 0 {
            write!(f, "{whole}%")
        } else if cents.is_multiple_of(10) {
            write!(f, "{whole}.{}%", cents / 10)
        } else {
            write!(f, "{whole}.{cents:02}%")
        }
    }
}

/// Backend-selection algorithm of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Weighted Maglev consistent hashing with a lookup table of `table_size` (prime) slots.
    Maglev {
        table_size: u32,
    },
    /// Hash of the client address: one client, one backend.
    IpHash,
    RoundRobin,
    LeastConn,
    /// Weighted round robin.
    Weighted,
}

impl Scheduler {
    /// The table's scheduler (its code and its name).
    #[must_use]
    pub fn abi(self) -> switchyard_table::generation::Scheduler {
        match self {
            Scheduler::Maglev { .. } => SchedulerKind::Maglev,
            Scheduler::IpHash => SchedulerKind::IpHash,
            Scheduler::RoundRobin => SchedulerKind::RoundRobin,
            Scheduler::LeastConn => SchedulerKind::LeastConn,
            Scheduler::Weighted => SchedulerKind::Weighted,
        }
        .abi()
    }
}

/// Scheduler names as written in a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    #[default]
    Maglev,
    IpHash,
    RoundRobin,
    LeastConn,
    Weighted,
}

impl SchedulerKind {
    /// The table's scheduler of this kind.
    #[must_use]
    pub fn abi(self) -> switchyard_table::generation::Scheduler {
        use switchyard_table::generation::Scheduler as Abi;
        match self {
            SchedulerKind::Maglev => Abi::Maglev,
            SchedulerKind::IpHash => Abi::IpHash,
            SchedulerKind::RoundRobin => Abi::RoundRobin,
            SchedulerKind::LeastConn => Abi::LeastConn,
            SchedulerKind::Weighted => Abi::Weighted,
        }
    }

    /// Name as written in the policy (the table's name for it).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.abi().name()
    }
}

/// A set of interchangeable backends serving one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    /// Region the backends sit in; required for pools used by strict routes.
    pub region: Option<RegionId>,
    pub scheduler: Scheduler,
    /// Without a health check every backend with a weight is taken as healthy.
    pub health: Option<HealthCheck>,
    pub load: Option<LoadFeedback>,
    /// Backends in policy order; the compiler numbers them from 1.
    pub backends: Vec<Backend>,
}

/// Active health checking of a pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    /// At most `interval`.
    pub timeout: Duration,
    /// Consecutive successes that mark a backend up.
    pub rise: u32,
    /// Consecutive failures that mark a backend down.
    pub fall: u32,
}

/// What a health check sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// HTTP GET `path`; healthy on `expect_status` and, if set, when the body (an OpenAI-style
    /// model list) names `expect_model`.
    Http {
        port: u16,
        path: String,
        expect_status: u16,
        expect_model: Option<String>,
    },
    /// A TCP connection that completes.
    Tcp { port: u16 },
}

/// Live load scraped from the backends, used to adjust weights (see `docs/POLICY.md`, "load",
/// for the formula).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadFeedback {
    pub metrics_port: u16,
    pub metrics_path: String,
    /// Prometheus metric names read from each backend.
    pub signals: Vec<String>,
    /// The value at which each signal counts as saturated, in the order of `signals`
    /// (always > 0): a backend's load is the largest `value / saturation` over its signals.
    pub saturation: Vec<f64>,
    pub interval: Duration,
    /// Bounds of the effective weight after load adjustment (`min_weight <= max_weight`).
    pub min_weight: u16,
    pub max_weight: u16,
    /// Time constant of the exponential moving average over scraped load; zero: none.
    pub smoothing: Duration,
    /// A new effective weight is published only when it differs from the published one by
    /// more than this share of it (or when the backend fills up or drains back).
    pub dead_band: Percent,
    /// Metrics older than this are stale: the backend goes back to its configured weight.
    pub stale_after: Duration,
    /// Load-driven changes to this pool's tables are published at most this often.
    pub min_rebuild_interval: Duration,
    /// Load at which a backend is marked full for bounded-load affinity (`maglev` and
    /// `ip_hash` pools); `None`: never.
    pub full_at: Option<f64>,
}

/// Saturation points of well-known inference-server metrics: the value at which the Gateway API
/// Inference Extension treats a server as saturated (a queue of 5, KV-cache use of 0.8).
pub const KNOWN_SATURATION: &[(&str, f64)] = &[
    ("vllm:num_requests_waiting", 5.0),
    ("vllm:kv_cache_usage_perc", 0.8),
    ("vllm:gpu_cache_usage_perc", 0.8),
    ("tgi_queue_size", 5.0),
    ("nv_inference_pending_request_count", 5.0),
    ("sglang:num_queue_reqs", 5.0),
    ("sglang:token_usage", 0.8),
];

/// One model server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    /// Relative share of new flows; 0 drains the backend (existing flows stay).
    pub weight: u16,
    pub name: Option<String>,
    /// What the operator set with `state:` (`switchyard-control drain`, `disable`, ...).
    pub admin: AdminState,
}

/// A backend's administrative state: the policy's `state:` key, written by
/// `switchyard-control drain | undrain | disable | enable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminState {
    /// No `state:`: scheduled at its weight.
    #[default]
    InService,
    /// `state: drained`: no new flows, established flows stay (its weight is kept for later).
    Drained,
    /// `state: disabled`: out of scheduling altogether, as if it were down: no new flows, and
    /// established flows move to another backend at their next packet.
    Disabled,
}

impl AdminState {
    /// The YAML value (`None` for in service: the key is left out).
    #[must_use]
    pub fn yaml(self) -> Option<&'static str> {
        match self {
            Self::InService => None,
            Self::Drained => Some("drained"),
            Self::Disabled => Some("disabled"),
        }
    }

    /// From the YAML value.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "drained" => Some(Self::Drained),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// What an ACL rule does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    Allow,
    Deny,
}

/// One ACL rule: source prefix, optionally narrowed to destination ports and a protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub action: AclAction,
    pub source: IpNet,
    /// Destination ports; empty means every port.
    pub ports: Vec<PortRange>,
    /// `None` matches both TCP and UDP (and, without ports, every protocol).
    pub protocol: Option<Protocol>,
}

/// Rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New flows per client address; `None` is unlimited.
    pub new_flows_per_source: Option<RateLimit>,
    /// `new_flows_per_source.ipv6_prefix`: IPv6 clients are limited per this prefix of their
    /// address (0..=64, default 64: a host may rotate the low 64 bits at will).
    pub source_ipv6_prefix: u8,
    /// ICMP replies the appliance sends per second (echo replies, frag-needed, too-big).
    pub icmp_per_second: u32,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Table sizing for the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// Maglev table size of pools that do not set their own.
    pub maglev_size: u32,
}

#[cfg(test)]
mod scheduler_names {
    use super::SchedulerKind;
    use switchyard_table::generation::Scheduler;

    /// A policy spells each scheduler by the table's name for it, and every table scheduler
    /// can be written in a policy.
    #[test]
    fn every_table_scheduler_is_a_policy_name() {
        for s in Scheduler::ALL {
            let kind: SchedulerKind =
                serde_saphyr::from_str(s.name()).unwrap_or_else(|e| panic!("{}: {e}", s.name()));
            assert_eq!(kind.abi(), s);
            assert_eq!(kind.as_str(), s.name());
        }
    }
}
