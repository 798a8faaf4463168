//! Table generations: the compiled, immutable match-action table the data plane forwards with.
//!
//! The control plane's compiler fills a [`Generation`]; [`Generation::encode`] lays it out as one
//! contiguous blob (a [`Header`] followed by sections of fixed-size `repr(C)` records), which is
//! published in shared memory. The data plane reads the blob back with [`Generation::decode`],
//! which treats it as untrusted: magic, ABI version, sizes, section bounds, the xxh3 checksum and
//! every cross-reference (service → route → pool → backend, Maglev slots, LPM child indices) are
//! checked before a single packet uses it. Once `decode` returns `Ok`, every index stored in the
//! generation is in range, so hot-path lookups cannot fail.
//!
//! Layout rules: records are `repr(C)`, `Pod` (no padding, any bit pattern valid), their sizes and
//! alignments asserted at compile time below. Integers are native-endian; both processes run on
//! one host, and a big-endian build is refused at compile time. Addresses are stored as 16 bytes
//! in network order; IPv4 addresses use the first 4 bytes with `family == FAMILY_V4`.

use bytemuck::{Pod, Zeroable};

use crate::lpm;

#[cfg(not(target_endian = "little"))]
compile_error!("the Switchyard table ABI is defined for little-endian hosts");

/// `b"SWYDGEN\0"`.
pub const MAGIC: [u8; 8] = *b"SWYDGEN\0";
/// Bumped on any change to a record layout or its meaning. [`BACKEND_FULL`] came within version
/// 2: a reader from before it ignores the bit (no bounded load, nothing else changes). Since
/// then [`Generation::validate`] refuses unknown flag bits, so any further flag needs a bump.
/// Version 3: per-interface outer source prefixes ([`Interface::outer_src_flags`]).
/// Version 4: per-service ACL rules ([`AclRule::service`]) and the per-source limiter's IPv6
/// prefix ([`Config::source_v6_prefix`]).
pub const ABI_VERSION: u32 = 4;
/// [`Interface::outer_src_flags`]: the interface's own IPv4 outer source prefix applies.
pub const OUTER_SRC_V4: u8 = 1;
/// [`Interface::outer_src_flags`]: the interface's own IPv6 outer source prefix applies.
pub const OUTER_SRC_V6: u8 = 2;
/// Most sections a header can describe.
pub const MAX_SECTIONS: usize = 24;
/// Fixed length of names carried in records (NUL-padded UTF-8, truncated by the compiler).
pub const NAME_LEN: usize = 64;
/// "None" in a `u32` index field.
pub const NONE: u32 = u32::MAX;
/// Canary shares are in parts per million of the flow-hash space.
pub const PER_MILLION: u32 = 1_000_000;
/// Pools a route may try in order: the primary and up to three fallbacks.
pub const MAX_ROUTE_POOLS: usize = 4;
/// Addresses an interface may own per family.
pub const MAX_IF_ADDRS: usize = 4;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Encapsulation used towards backends.
pub const ENCAP_IPIP: u8 = 0;
pub const ENCAP_GUE: u8 = 1;

/// Backend flag: the backend passes its health check (or its pool has none). Without it the
/// backend takes no new flow, and flows on it are rescheduled.
pub const BACKEND_HEALTHY: u8 = 1;
/// Backend flag, bounded load: the backend is healthy but full (its live load is past the
/// pool's threshold). A new flow whose preferred backend (its Maglev or IP-hash slot) is full
/// goes to the next backend of its own preference order that is not full; only when every
/// backend of the pool is full does it stay on the preferred one. Flows already on the backend
/// stay. A full backend keeps its Maglev slots and its place in the healthy list, so filling up
/// and draining back rebuild nothing. Meaningful only with [`BACKEND_HEALTHY`]; only the
/// `maglev` and `ip_hash` schedulers read it.
pub const BACKEND_FULL: u8 = 2;
/// Every backend flag a generation may carry; [`Generation::validate`] refuses other bits.
pub const BACKEND_FLAGS: u8 = BACKEND_HEALTHY | BACKEND_FULL;

/// ACL actions.
pub const ACL_ALLOW: u8 = 1;
pub const ACL_DENY: u8 = 2;

/// How a pool picks a backend for a new flow.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Weighted Maglev table indexed by the 5-tuple hash.
    Maglev = 0,
    /// The same Maglev table indexed by a hash of the source address only.
    IpHash = 1,
    /// Each worker cycles over the pool's healthy backends.
    RoundRobin = 2,
    /// Each worker picks the healthy backend with the fewest flows it tracks.
    LeastConn = 3,
    /// Each worker runs smooth weighted round robin over healthy backends.
    Weighted = 4,
}

impl Scheduler {
    pub const ALL: [Scheduler; 5] = [
        Self::Maglev,
        Self::IpHash,
        Self::RoundRobin,
        Self::LeastConn,
        Self::Weighted,
    ];

    /// The name a policy, `show`, diffs and traces use: the one table of them.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Maglev => "maglev",
            Self::IpHash => "ip_hash",
            Self::RoundRobin => "round_robin",
            Self::LeastConn => "least_conn",
            Self::Weighted => "weighted",
        }
    }

    /// The name of scheduler code `v` (as stored in a pool record), or `unknown`.
    #[must_use]
    pub fn name_of(v: u8) -> &'static str {
        Self::from_u8(v).map_or("unknown", Self::name)
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Maglev,
            1 => Self::IpHash,
            2 => Self::RoundRobin,
            3 => Self::LeastConn,
            4 => Self::Weighted,
            _ => return None,
        })
    }
}

/// Section kinds. The numeric value is part of the ABI.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    Config = 1,
    Interfaces = 2,
    Services = 3,
    VipLpmV4 = 4,
    VipLpmV6 = 5,
    VipGroups = 6,
    VipEntries = 7,
    Regions = 8,
    GeoLpmV4 = 9,
    GeoLpmV6 = 10,
    Routes = 11,
    Pools = 12,
    Backends = 13,
    BackendById = 14,
    Maglev = 15,
    HealthyBackends = 16,
    AclRules = 17,
    AclLpmV4 = 18,
    AclLpmV6 = 19,
    AclGroups = 20,
}

impl SectionKind {
    pub const ALL: [SectionKind; 20] = [
        Self::Config,
        Self::Interfaces,
        Self::Services,
        Self::VipLpmV4,
        Self::VipLpmV6,
        Self::VipGroups,
        Self::VipEntries,
        Self::Regions,
        Self::GeoLpmV4,
        Self::GeoLpmV6,
        Self::Routes,
        Self::Pools,
        Self::Backends,
        Self::BackendById,
        Self::Maglev,
        Self::HealthyBackends,
        Self::AclRules,
        Self::AclLpmV4,
        Self::AclLpmV6,
        Self::AclGroups,
    ];
}

/// Where one section lives in the blob.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct SectionRef {
    pub kind: u32,
    /// Size of one record; must equal the reader's `size_of` for the kind.
    pub elem_size: u32,
    /// Byte offset from the start of the blob; a multiple of 64.
    pub offset: u64,
    pub count: u64,
}

/// The first bytes of every generation blob.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub header_size: u32,
    /// Monotonic generation number assigned by the publisher.
    pub generation: u64,
    /// Bytes in the whole blob, header included.
    pub total_size: u64,
    /// xxh3-64 of bytes `[header_size, total_size)`.
    pub checksum: u64,
    pub section_count: u32,
    pub _reserved: u32,
    pub sections: [SectionRef; MAX_SECTIONS],
}

/// Global knobs (exactly one record).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// [`ENCAP_IPIP`] or [`ENCAP_GUE`].
    pub encap: u8,
    /// The per-source new-flow limiter keys an IPv6 client by this prefix of its address
    /// (0..=64; 64 by default). IPv4 clients are keyed by their whole address.
    pub source_v6_prefix: u8,
    /// UDP destination port of GUE (default 6080).
    pub gue_port: u16,
    /// Largest L3 packet the path to backends carries; bigger after encapsulation → ICMP
    /// frag-needed / packet-too-big.
    pub backend_mtu: u16,
    /// Prefix lengths of the outer-source pools below (low bits come from the flow hash), for
    /// interfaces that do not set their own.
    pub outer_src_v4_len: u8,
    pub outer_src_v6_len: u8,
    /// Outer IPv4 source prefix for IPIP/GUE (network order in the first 4 bytes).
    pub outer_src_v4: [u8; 4],
    /// Outer IPv6 source prefix.
    pub outer_src_v6: [u8; 16],
    /// ICMP replies/errors per second per worker, and burst.
    pub icmp_rate: u32,
    pub icmp_burst: u32,
    /// New flows per second per source address (0 = unlimited), and burst.
    pub new_flow_rate: u32,
    pub new_flow_burst: u32,
    /// Connection-table idle timeouts in seconds.
    pub tcp_syn_timeout: u32,
    pub tcp_established_timeout: u32,
    pub tcp_closing_timeout: u32,
    pub udp_timeout: u32,
    pub _reserved: [u32; 4],
}

/// One interface of the appliance (bound to a port by name).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Interface {
    pub name: [u8; NAME_LEN],
    pub mac: [u8; 6],
    pub gateway_mac: [u8; 6],
    pub v4_count: u8,
    pub v6_count: u8,
    pub _pad: [u8; 2],
    pub gateway_v4: [u8; 4],
    pub v4: [[u8; 4]; MAX_IF_ADDRS],
    pub v6: [[u8; 16]; MAX_IF_ADDRS],
    pub gateway_v6: [u8; 16],
    /// Outer source prefix of encapsulated packets leaving this interface (network order),
    /// used when [`OUTER_SRC_V4`] is set in `outer_src_flags`; otherwise [`Config`]'s.
    pub outer_src_v4: [u8; 4],
    /// The same for IPv6, with [`OUTER_SRC_V6`].
    pub outer_src_v6: [u8; 16],
    pub outer_src_v4_len: u8,
    pub outer_src_v6_len: u8,
    /// [`OUTER_SRC_V4`] | [`OUTER_SRC_V6`]; no other bit.
    pub outer_src_flags: u8,
    pub _pad2: u8,
}

/// A load-balanced service (one model endpoint).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Service {
    pub name: [u8; NAME_LEN],
    /// Routes `[first_route, first_route + route_count)` in the routes section, tried in order;
    /// the first whose region matches (or that matches any region) applies.
    pub first_route: u32,
    pub route_count: u32,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

/// A VIP group: the VIP-LPM value `g + 1` selects group `g`, whose entries are scanned in order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct VipGroup {
    pub first_entry: u32,
    pub entry_count: u32,
}

/// (protocol, destination port range) → service, within a VIP group.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct VipEntry {
    pub service: u32,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Region {
    pub name: [u8; NAME_LEN],
}

/// Region → pools, with canary split. `region == NONE` matches every client.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Route {
    pub region: u32,
    /// The primary pool then fallbacks; the first with a healthy backend is used.
    pub pools: [u32; MAX_ROUTE_POOLS],
    pub pool_count: u32,
    /// Canary pool (or [`NONE`]) and the share of flows, by flow hash, sent to it.
    pub canary_pool: u32,
    pub canary_per_million: u32,
    /// 1 when residency is strict: never leave the route's pools, even when all are down.
    pub strict: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Pool {
    pub name: [u8; NAME_LEN],
    /// A [`Scheduler`] value.
    pub scheduler: u8,
    pub _pad: [u8; 3],
    /// This pool's Maglev table: `maglev[maglev_offset .. maglev_offset + maglev_size]`.
    pub maglev_offset: u32,
    pub maglev_size: u32,
    /// Backends `[first_backend, first_backend + backend_count)`.
    pub first_backend: u32,
    pub backend_count: u32,
    /// Healthy backends with weight > 0: `healthy[first_healthy .. first_healthy + healthy_count]`.
    pub first_healthy: u32,
    pub healthy_count: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    pub address: [u8; 16],
    pub family: u8,
    /// [`BACKEND_HEALTHY`], [`BACKEND_FULL`]; no other bit.
    pub flags: u8,
    pub _pad: [u8; 2],
    pub weight: u32,
    /// Stable across generations for the same (pool, address): connection-table entries hold it.
    pub id: u32,
    pub pool: u32,
}

/// An ACL rule group: the ACL-LPM value `g + 1` on the source address selects group `g`, the
/// rules whose prefix covers that source, in policy order. The first rule of the group whose
/// protocol and destination ports match decides; when none does, the packet is allowed. This
/// keeps the policy's first-match semantics while the prefix part costs one LPM lookup.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct AclGroup {
    pub first_rule: u32,
    pub rule_count: u32,
}

/// An ACL rule within a group: protocol (0 = any), destination port range, and the service it
/// belongs to. A group lists the global rules first, then each service's, each in policy order;
/// a packet skips the rules of other services, so the first rule that matches among the global
/// ones and its own service's decides.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct AclRule {
    pub action: u8,
    pub protocol: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`ACL_GLOBAL`] for a global rule, else the service index + 1.
    pub service: u16,
}

/// [`AclRule::service`] of a global rule (every packet, whether to a service or not).
pub const ACL_GLOBAL: u16 = 0;

macro_rules! assert_layout {
    ($($t:ty => $size:expr, $align:expr;)*) => {
        $(
            const _: () = assert!(std::mem::size_of::<$t>() == $size);
            const _: () = assert!(std::mem::align_of::<$t>() == $align);
        )*
    };
}

assert_layout! {
    SectionRef => 24, 8;
    Header => 48 + 24 * MAX_SECTIONS, 8;
    Config => 76, 4;
    Interface => 204, 1;
    Service => 76, 4;
    VipGroup => 8, 4;
    VipEntry => 12, 4;
    Region => 64, 1;
    Route => 36, 4;
    Pool => 92, 4;
    Backend => 32, 4;
    AclRule => 8, 2;
    AclGroup => 8, 4;
}

/// A decoded, validated generation: what the workers read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Generation {
    pub generation: u64,
    pub config: Config,
    pub interfaces: Vec<Interface>,
    pub services: Vec<Service>,
    pub vip_lpm_v4: Vec<u32>,
    pub vip_lpm_v6: Vec<u32>,
    pub vip_groups: Vec<VipGroup>,
    pub vip_entries: Vec<VipEntry>,
    pub regions: Vec<Region>,
    pub geo_lpm_v4: Vec<u32>,
    pub geo_lpm_v6: Vec<u32>,
    pub routes: Vec<Route>,
    pub pools: Vec<Pool>,
    pub backends: Vec<Backend>,
    /// Indexed by stable backend id: backend index + 1, or 0 when that id is not in this generation.
    pub backend_by_id: Vec<u32>,
    /// Concatenated Maglev tables; each slot holds a backend index + 1 (0 = empty).
    pub maglev: Vec<u32>,
    /// Concatenated per-pool lists of healthy backend indices.
    pub healthy_backends: Vec<u32>,
    pub acl_rules: Vec<AclRule>,
    pub acl_groups: Vec<AclGroup>,
    pub acl_lpm_v4: Vec<u32>,
    pub acl_lpm_v6: Vec<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            encap: ENCAP_IPIP,
            source_v6_prefix: 64,
            gue_port: 6080,
            backend_mtu: 1500,
            outer_src_v4_len: 16,
            outer_src_v6_len: 64,
            outer_src_v4: [172, 16, 0, 0],
            outer_src_v6: [0xfd, 0x00, 0x53, 0x59, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            icmp_rate: 1000,
            icmp_burst: 100,
            new_flow_rate: 0,
            new_flow_burst: 0,
            tcp_syn_timeout: 5,
            tcp_established_timeout: 900,
            tcp_closing_timeout: 10,
            udp_timeout: 30,
            _reserved: [0; 4],
        }
    }
}

/// Why a blob was refused. Each variant has a stable counter name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort,
    BadMagic,
    AbiVersion {
        found: u32,
        expected: u32,
    },
    BadSize,
    BadChecksum,
    BadSection {
        kind: u32,
        reason: &'static str,
    },
    MissingSection(SectionKind),
    BadReference {
        what: &'static str,
        index: usize,
    },
    BadLpm {
        table: &'static str,
        error: lpm::LpmError,
    },
}

impl DecodeError {
    /// A stable snake_case name for counters and events.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::BadMagic => "bad_magic",
            Self::AbiVersion { .. } => "abi_version",
            Self::BadSize => "bad_size",
            Self::BadChecksum => "bad_checksum",
            Self::BadSection { .. } => "bad_section",
            Self::MissingSection(_) => "missing_section",
            Self::BadReference { .. } => "bad_reference",
            Self::BadLpm { .. } => "bad_lpm",
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort => f.write_str("blob shorter than its header"),
            Self::BadMagic => f.write_str("not a Switchyard table generation (bad magic)"),
            Self::AbiVersion { found, expected } => {
                write!(f, "table ABI version {found}, this build reads {expected}")
            }
            Self::BadSize => f.write_str("header sizes disagree with the blob"),
            Self::BadChecksum => f.write_str("checksum mismatch"),
            Self::BadSection { kind, reason } => write!(f, "section {kind}: {reason}"),
            Self::MissingSection(k) => write!(f, "missing section {k:?}"),
            Self::BadReference { what, index } => write!(f, "{what} #{index} refers out of range"),
            Self::BadLpm { table, error } => write!(f, "{table}: {error}"),
        }
    }
}

impl std::error::Error for DecodeError {}

const ALIGN: usize = 64;

fn pad_to(out: &mut Vec<u8>, align: usize) {
    let rem = out.len() % align;
    if rem != 0 {
        out.resize(out.len() + align - rem, 0);
    }
}

/// Turns a name into a record's fixed-size name field (truncated at a UTF-8 boundary).
pub fn name_field(name: &str) -> [u8; NAME_LEN] {
    fixed_name(name)
}

/// Reads a record's name field back.
pub fn name_str(field: &[u8; NAME_LEN]) -> &str {
    fixed_str(field)
}

/// A NUL-padded fixed-width name of `N` bytes (truncated at a UTF-8 boundary).
pub fn fixed_name<const N: usize>(name: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut end = name.len().min(N);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&name.as_bytes()[..end]);
    out
}

/// Reads a fixed-width name back (up to the first NUL; lossy on bad UTF-8).
pub fn fixed_str<const N: usize>(field: &[u8; N]) -> &str {
    let end = field.iter().position(|&b| b == 0).unwrap_or(N);
    match std::str::from_utf8(&field[..end]) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&field[..e.valid_up_to()]).unwrap_or(""),
    }
}

impl Generation {
    /// Lays the generation out as a blob with header, 64-byte-aligned sections and checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; std::mem::size_of::<Header>()];
        pad_to(&mut out, ALIGN);
        let mut refs: Vec<SectionRef> = Vec::new();
        let mut put = |out: &mut Vec<u8>, kind: SectionKind, elem_size: usize, bytes: &[u8]| {
            pad_to(out, ALIGN);
            refs.push(SectionRef {
                kind: kind as u32,
                elem_size: u32::try_from(elem_size).expect("record size fits u32"),
                offset: out.len() as u64,
                count: (bytes.len() / elem_size) as u64,
            });
            out.extend_from_slice(bytes);
        };
        fn bytes<T: Pod>(v: &[T]) -> &[u8] {
            bytemuck::cast_slice(v)
        }
        let sz = |n: usize| n;
        put(
            &mut out,
            SectionKind::Config,
            sz(size_of::<Config>()),
            bytemuck::bytes_of(&self.config),
        );
        put(
            &mut out,
            SectionKind::Interfaces,
            size_of::<Interface>(),
            bytes(&self.interfaces),
        );
        put(
            &mut out,
            SectionKind::Services,
            size_of::<Service>(),
            bytes(&self.services),
        );
        put(&mut out, SectionKind::VipLpmV4, 4, bytes(&self.vip_lpm_v4));
        put(&mut out, SectionKind::VipLpmV6, 4, bytes(&self.vip_lpm_v6));
        put(
            &mut out,
            SectionKind::VipGroups,
            size_of::<VipGroup>(),
            bytes(&self.vip_groups),
        );
        put(
            &mut out,
            SectionKind::VipEntries,
            size_of::<VipEntry>(),
            bytes(&self.vip_entries),
        );
        put(
            &mut out,
            SectionKind::Regions,
            size_of::<Region>(),
            bytes(&self.regions),
        );
        put(&mut out, SectionKind::GeoLpmV4, 4, bytes(&self.geo_lpm_v4));
        put(&mut out, SectionKind::GeoLpmV6, 4, bytes(&self.geo_lpm_v6));
        put(
            &mut out,
            SectionKind::Routes,
            size_of::<Route>(),
            bytes(&self.routes),
        );
        put(
            &mut out,
            SectionKind::Pools,
            size_of::<Pool>(),
            bytes(&self.pools),
        );
        put(
            &mut out,
            SectionKind::Backends,
            size_of::<Backend>(),
            bytes(&self.backends),
        );
        put(
            &mut out,
            SectionKind::BackendById,
            4,
            bytes(&self.backend_by_id),
        );
        put(&mut out, SectionKind::Maglev, 4, bytes(&self.maglev));
        put(
            &mut out,
            SectionKind::HealthyBackends,
            4,
            bytes(&self.healthy_backends),
        );
        put(
            &mut out,
            SectionKind::AclRules,
            size_of::<AclRule>(),
            bytes(&self.acl_rules),
        );
        put(&mut out, SectionKind::AclLpmV4, 4, bytes(&self.acl_lpm_v4));
        put(&mut out, SectionKind::AclLpmV6, 4, bytes(&self.acl_lpm_v6));
        put(
            &mut out,
            SectionKind::AclGroups,
            size_of::<AclGroup>(),
            bytes(&self.acl_groups),
        );
        pad_to(&mut out, ALIGN);

        let header_size = size_of::<Header>();
        let mut header = Header {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            header_size: u32::try_from(header_size).expect("header fits"),
            generation: self.generation,
            total_size: out.len() as u64,
            checksum: 0,
            section_count: u32::try_from(refs.len()).expect("few sections"),
            _reserved: 0,
            sections: [SectionRef::zeroed(); MAX_SECTIONS],
        };
        header.sections[..refs.len()].copy_from_slice(&refs);
        header.checksum = xxhash_rust::xxh3::xxh3_64(&out[header_size..]);
        out[..header_size].copy_from_slice(bytemuck::bytes_of(&header));
        out
    }

    /// Reads only the header fields needed to name a blob (generation number and checksum),
    /// without validating the rest.
    pub fn peek_header(blob: &[u8]) -> Result<Header, DecodeError> {
        let raw = blob
            .get(..size_of::<Header>())
            .ok_or(DecodeError::TooShort)?;
        let header: Header = bytemuck::pod_read_unaligned(raw);
        if header.magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if header.abi_version != ABI_VERSION {
            return Err(DecodeError::AbiVersion {
                found: header.abi_version,
                expected: ABI_VERSION,
            });
        }
        Ok(header)
    }

    /// Validates and decodes an untrusted blob. See the module doc for what is checked.
    pub fn decode(blob: &[u8]) -> Result<Self, DecodeError> {
        let header = Self::peek_header(blob)?;
        let header_size = size_of::<Header>();
        if header.header_size as usize != header_size
            || header.total_size != blob.len() as u64
            || header.section_count as usize > MAX_SECTIONS
        {
            return Err(DecodeError::BadSize);
        }
        if xxhash_rust::xxh3::xxh3_64(&blob[header_size..]) != header.checksum {
            return Err(DecodeError::BadChecksum);
        }
        let refs = &header.sections[..header.section_count as usize];
        let section = |kind: SectionKind, elem_size: usize| -> Result<&[u8], DecodeError> {
            let mut found = refs.iter().filter(|r| r.kind == kind as u32);
            let r = found.next().ok_or(DecodeError::MissingSection(kind))?;
            if found.next().is_some() {
                return Err(DecodeError::BadSection {
                    kind: r.kind,
                    reason: "appears twice",
                });
            }
            if r.elem_size as usize != elem_size {
                return Err(DecodeError::BadSection {
                    kind: r.kind,
                    reason: "record size differs from this build",
                });
            }
            let start = usize::try_from(r.offset).map_err(|_| DecodeError::BadSize)?;
            let len = usize::try_from(r.count)
                .ok()
                .and_then(|c| c.checked_mul(elem_size))
                .ok_or(DecodeError::BadSection {
                    kind: r.kind,
                    reason: "count overflows",
                })?;
            if start < header_size {
                return Err(DecodeError::BadSection {
                    kind: r.kind,
                    reason: "overlaps the header",
                });
            }
            start
                .checked_add(len)
                .and_then(|end| blob.get(start..end))
                .ok_or(DecodeError::BadSection {
                    kind: r.kind,
                    reason: "out of bounds",
                })
        };
        fn records<T: Pod>(raw: &[u8]) -> Vec<T> {
            bytemuck::pod_collect_to_vec(raw)
        }
        let config_raw = section(SectionKind::Config, size_of::<Config>())?;
        if config_raw.len() != size_of::<Config>() {
            return Err(DecodeError::BadSection {
                kind: SectionKind::Config as u32,
                reason: "needs exactly one record",
            });
        }
        let g = Self {
            generation: header.generation,
            config: bytemuck::pod_read_unaligned(config_raw),
            interfaces: records(section(SectionKind::Interfaces, size_of::<Interface>())?),
            services: records(section(SectionKind::Services, size_of::<Service>())?),
            vip_lpm_v4: records(section(SectionKind::VipLpmV4, 4)?),
            vip_lpm_v6: records(section(SectionKind::VipLpmV6, 4)?),
            vip_groups: records(section(SectionKind::VipGroups, size_of::<VipGroup>())?),
            vip_entries: records(section(SectionKind::VipEntries, size_of::<VipEntry>())?),
            regions: records(section(SectionKind::Regions, size_of::<Region>())?),
            geo_lpm_v4: records(section(SectionKind::GeoLpmV4, 4)?),
            geo_lpm_v6: records(section(SectionKind::GeoLpmV6, 4)?),
            routes: records(section(SectionKind::Routes, size_of::<Route>())?),
            pools: records(section(SectionKind::Pools, size_of::<Pool>())?),
            backends: records(section(SectionKind::Backends, size_of::<Backend>())?),
            backend_by_id: records(section(SectionKind::BackendById, 4)?),
            maglev: records(section(SectionKind::Maglev, 4)?),
            healthy_backends: records(section(SectionKind::HealthyBackends, 4)?),
            acl_rules: records(section(SectionKind::AclRules, size_of::<AclRule>())?),
            acl_lpm_v4: records(section(SectionKind::AclLpmV4, 4)?),
            acl_lpm_v6: records(section(SectionKind::AclLpmV6, 4)?),
            acl_groups: records(section(SectionKind::AclGroups, size_of::<AclGroup>())?),
        };
        g.validate()?;
        Ok(g)
    }

    /// Checks every cross-reference, so that lookups on a validated generation stay in range.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let bad = |what: &'static str, index: usize| Err(DecodeError::BadReference { what, index });
        let lpm_v4 = |table: &'static str, t: &[u32], max: usize| -> Result<(), DecodeError> {
            if t.is_empty() {
                return Ok(());
            }
            lpm::validate_v4(t).map_err(|error| DecodeError::BadLpm { table, error })?;
            if t.iter().any(|&e| e & lpm::CHILD == 0 && e as usize > max) {
                return Err(DecodeError::BadReference {
                    what: table,
                    index: 0,
                });
            }
            Ok(())
        };
        let lpm_v6 = |table: &'static str, t: &[u32], max: usize| -> Result<(), DecodeError> {
            if t.is_empty() {
                return Ok(());
            }
            lpm::validate_v6(t).map_err(|error| DecodeError::BadLpm { table, error })?;
            if t.iter().any(|&e| e & lpm::CHILD == 0 && e as usize > max) {
                return Err(DecodeError::BadReference {
                    what: table,
                    index: 0,
                });
            }
            Ok(())
        };
        lpm_v4("vip_lpm_v4", &self.vip_lpm_v4, self.vip_groups.len())?;
        lpm_v6("vip_lpm_v6", &self.vip_lpm_v6, self.vip_groups.len())?;
        lpm_v4("geo_lpm_v4", &self.geo_lpm_v4, self.regions.len())?;
        lpm_v6("geo_lpm_v6", &self.geo_lpm_v6, self.regions.len())?;
        lpm_v4("acl_lpm_v4", &self.acl_lpm_v4, self.acl_groups.len())?;
        lpm_v6("acl_lpm_v6", &self.acl_lpm_v6, self.acl_groups.len())?;

        let in_range = |first: u32, count: u32, len: usize| {
            (first as usize)
                .checked_add(count as usize)
                .is_some_and(|end| end <= len)
        };
        for (i, g) in self.vip_groups.iter().enumerate() {
            if !in_range(g.first_entry, g.entry_count, self.vip_entries.len()) {
                return bad("vip_group", i);
            }
        }
        for (i, e) in self.vip_entries.iter().enumerate() {
            if e.service as usize >= self.services.len() || e.port_lo > e.port_hi {
                return bad("vip_entry", i);
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            if !in_range(s.first_route, s.route_count, self.routes.len()) {
                return bad("service", i);
            }
        }
        let pool_ok = |p: u32| (p as usize) < self.pools.len();
        for (i, r) in self.routes.iter().enumerate() {
            if r.region != NONE && r.region as usize >= self.regions.len() {
                return bad("route.region", i);
            }
            if r.pool_count == 0 || r.pool_count as usize > MAX_ROUTE_POOLS {
                return bad("route.pool_count", i);
            }
            if !r.pools[..r.pool_count as usize].iter().all(|&p| pool_ok(p)) {
                return bad("route.pools", i);
            }
            if r.canary_pool != NONE && !pool_ok(r.canary_pool)
                || r.canary_per_million > PER_MILLION
            {
                return bad("route.canary", i);
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            if Scheduler::from_u8(p.scheduler).is_none()
                || !in_range(p.first_backend, p.backend_count, self.backends.len())
                || !in_range(
                    p.first_healthy,
                    p.healthy_count,
                    self.healthy_backends.len(),
                )
                || !in_range(p.maglev_offset, p.maglev_size, self.maglev.len())
            {
                return bad("pool", i);
            }
            let own = p.first_backend..p.first_backend + p.backend_count;
            let slots =
                &self.maglev[p.maglev_offset as usize..(p.maglev_offset + p.maglev_size) as usize];
            if slots.iter().any(|&s| s != 0 && !own.contains(&(s - 1))) {
                return bad("pool.maglev", i);
            }
            let healthy = &self.healthy_backends
                [p.first_healthy as usize..(p.first_healthy + p.healthy_count) as usize];
            if healthy.iter().any(|b| !own.contains(b)) {
                return bad("pool.healthy", i);
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            if !pool_ok(b.pool) || !(b.family == FAMILY_V4 || b.family == FAMILY_V6) {
                return bad("backend", i);
            }
            if b.flags & !BACKEND_FLAGS != 0 {
                return bad("backend.flags", i);
            }
            if self.backend_by_id.get(b.id as usize).copied() != u32::try_from(i + 1).ok() {
                return bad("backend.id", i);
            }
        }
        for (id, &slot) in self.backend_by_id.iter().enumerate() {
            if slot != 0
                && self
                    .backends
                    .get(slot as usize - 1)
                    .is_none_or(|b| b.id as usize != id)
            {
                return bad("backend_by_id", id);
            }
        }
        for (i, g) in self.acl_groups.iter().enumerate() {
            if !in_range(g.first_rule, g.rule_count, self.acl_rules.len()) {
                return bad("acl_group", i);
            }
        }
        if self.config.source_v6_prefix > 64 {
            return bad(
                "config.source_v6_prefix",
                usize::from(self.config.source_v6_prefix),
            );
        }
        for (i, r) in self.acl_rules.iter().enumerate() {
            if !(r.action == ACL_ALLOW || r.action == ACL_DENY)
                || r.port_lo > r.port_hi
                || usize::from(r.service) > self.services.len()
            {
                return bad("acl_rule", i);
            }
        }
        for (i, it) in self.interfaces.iter().enumerate() {
            if it.v4_count as usize > MAX_IF_ADDRS
                || it.v6_count as usize > MAX_IF_ADDRS
                || it.outer_src_flags & !(OUTER_SRC_V4 | OUTER_SRC_V6) != 0
                || it.outer_src_v4_len > 32
                || it.outer_src_v6_len > 128
            {
                return bad("interface", i);
            }
        }
        if !(self.config.encap == ENCAP_IPIP || self.config.encap == ENCAP_GUE)
            || self.config.outer_src_v4_len > 32
            || self.config.outer_src_v6_len > 128
        {
            return bad("config", 0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small but complete generation: one region, one service with two routes, two pools.
    pub(crate) fn sample() -> Generation {
        use crate::builder::{acl_rule, GenerationBuilder};
        use std::net::Ipv4Addr;
        GenerationBuilder::new()
            .generation(7)
            .interface("uplink", [2, 0, 0, 0, 0, 1], &[[198, 51, 100, 1].into()])
            .gateway([2, 0, 0, 0, 0, 0xfe], None)
            .llama_eu_us()
            .geo_v4(Ipv4Addr::new(10, 1, 0, 0), 16)
            .vip([203, 0, 113, 10].into(), 32)
            .acl(
                &[acl_rule(ACL_DENY, 0, (0, u16::MAX))],
                &[(Ipv4Addr::new(198, 18, 0, 0), 15)],
            )
            .build()
    }

    #[test]
    fn round_trip() {
        let g = sample();
        g.validate().unwrap();
        let blob = g.encode();
        assert_eq!(blob.len() % 64, 0);
        assert_eq!(Generation::decode(&blob).unwrap(), g);
    }

    #[test]
    fn every_flipped_byte_is_caught_or_harmless() {
        let blob = sample().encode();
        // Flipping any byte of the payload breaks the checksum; of the header, a field check.
        // Every header byte, then an even spread over the sections.
        let step = (blob.len() / 1500).max(1);
        for i in (0..size_of::<Header>()).chain((size_of::<Header>()..blob.len()).step_by(step)) {
            let mut b = blob.clone();
            b[i] ^= 0x5a;
            match Generation::decode(&b) {
                Err(_) => {}
                Ok(g) => assert!(i < size_of::<Header>(), "byte {i} changed silently: {g:?}"),
            }
        }
    }

    #[test]
    fn refusals_have_names() {
        let blob = sample().encode();
        assert_eq!(
            Generation::decode(&blob[..10]).unwrap_err(),
            DecodeError::TooShort
        );
        let mut b = blob.clone();
        b[0] = b'X';
        assert_eq!(Generation::decode(&b).unwrap_err().name(), "bad_magic");
        let mut b = blob.clone();
        b[8] = 99;
        assert_eq!(Generation::decode(&b).unwrap_err().name(), "abi_version");
        let mut b = blob.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(
            Generation::decode(&b).unwrap_err(),
            DecodeError::BadChecksum
        );
        assert_eq!(
            Generation::decode(&blob[..blob.len() - 64]).unwrap_err(),
            DecodeError::BadSize
        );
    }

    #[test]
    fn dangling_references_are_refused_even_with_a_good_checksum() {
        let mut g = sample();
        g.routes[0].pools[1] = 9;
        assert_eq!(
            Generation::decode(&g.encode()).unwrap_err().name(),
            "bad_reference"
        );
        let mut g = sample();
        g.maglev[3] = 3; // pool 0's table pointing at pool 1's backend
        assert_eq!(
            Generation::decode(&g.encode()).unwrap_err().name(),
            "bad_reference"
        );
        let mut g = sample();
        g.backend_by_id[2] = 1;
        assert_eq!(
            Generation::decode(&g.encode()).unwrap_err().name(),
            "bad_reference"
        );
        let mut g = sample();
        g.geo_lpm_v4[0x0a01] = 5; // region 4 does not exist
        assert_eq!(
            Generation::decode(&g.encode()).unwrap_err().name(),
            "bad_reference"
        );
    }

    #[test]
    fn interface_outer_sources_are_checked() {
        let mut g = sample();
        g.interfaces[0].outer_src_flags = OUTER_SRC_V4 | OUTER_SRC_V6;
        g.interfaces[0].outer_src_v4 = [100, 64, 0, 0];
        g.interfaces[0].outer_src_v4_len = 24;
        g.interfaces[0].outer_src_v6_len = 128;
        assert_eq!(Generation::decode(&g.encode()).unwrap(), g);
        for bad in [
            |it: &mut Interface| it.outer_src_flags = 4,
            |it: &mut Interface| it.outer_src_v4_len = 33,
            |it: &mut Interface| it.outer_src_v6_len = 129,
        ] {
            let mut g = sample();
            bad(&mut g.interfaces[0]);
            assert_eq!(
                Generation::decode(&g.encode()).unwrap_err().name(),
                "bad_reference"
            );
        }
    }

    #[test]
    fn backend_flags_are_the_known_bits_only() {
        let mut g = sample();
        g.backends[0].flags = BACKEND_HEALTHY | BACKEND_FULL;
        assert_eq!(Generation::decode(&g.encode()).unwrap(), g);
        g.backends[0].flags = BACKEND_HEALTHY | 4;
        assert_eq!(
            Generation::decode(&g.encode()).unwrap_err(),
            DecodeError::BadReference {
                what: "backend.flags",
                index: 0
            }
        );
    }

    #[test]
    fn names_round_trip_and_truncate_on_char_boundaries() {
        assert_eq!(name_str(&name_field("llama-70b")), "llama-70b");
        let long = "é".repeat(40);
        let f = name_field(&long);
        assert_eq!(name_str(&f), "é".repeat(32));
    }
}
