//! `bench-data`: writes the pipeline benchmark's inputs — a policy, appliance settings, pcaps of
//! client traffic addressed to that policy's VIPs exactly as a router would deliver it to the
//! uplink, and a GeoIP database — with the test frame builders (`switchyard-frames`), the
//! control plane's policy parser and the data plane's settings defaults.
//!
//! ```text
//! bench-data --dir OUT [--flows N] [--syn-share F] [--backends B] [--services S]
//!            [--prefixes P] [--ipv6-share F] [--sizes 64|imix|SPEC] [--queues Q]
//! ```
//!
//! - `OUT/policy.yaml`: S TCP services on port 8000: service 0 on VIP 203.0.113.10, service
//!   k > 0 on 198.18.0.0 + k (RFC 2544 benchmarking range). P = min(S, max(1, B / 10)) Maglev
//!   pools; service k routes to pool k % P; the B backends (10.100.0.1 onwards, weight 100) are
//!   spread evenly over the pools, each pool's `maglev_size` the smallest prime ≥ max(251, 100 ×
//!   its backends). Backends sit behind a gateway on the backend interface (IPIP). With
//!   `--ipv6-share` > 0 every service has an IPv6 twin (`NAME-v6`, service 0 on
//!   2001:db8:203:113::10, service k on 2001:2::k; same port and pools, encapsulated v6-in-v4)
//!   and the uplink also gets 2001:db8:192::1/64. With `--prefixes` P > 0: regions r0..r3
//!   (GeoIP countries US, DE, JP, BR), a route per region (to pool (k + r) % P for service k,
//!   region r) and the catch-all last (IPv6 clients and clients outside the P blocks take it).
//!   The policy is checked with the control plane's parser (size and node limits included);
//!   when every backend's `weight: 100` would break them, only each pool's first carries it.
//! - `OUT/geo.mmdb` (only with P > 0): a MaxMind DB (IPv4, record size 32; [`mmdb`]) of the
//!   first P aligned blocks of length 10 + ⌈log2 P⌉ of 100.64.0.0/10, block j in region j % 4,
//!   so no two sibling blocks share a region and the compiler cannot merge them: the geo LPM
//!   holds P prefixes (a policy file could not list a million prefixes).
//! - `OUT/settings.yaml`: net_pcap0 = uplink, net_null0 = backend; per-worker connection tables
//!   of 2 × that worker's flows of each family (at least 1024); mbufs for every captured frame
//!   (net_pcap's `infinite_rx` preloads each capture) plus the queues and caches of Q workers; a
//!   data room of 384 bytes for 64-byte traffic, else 128 bytes of headroom + the largest frame,
//!   rounded up to 64; `mtu` = the largest IP packet + 20 (IPIP) when over 1500.
//! - `OUT/flows.pcap` (Q = 1) or `OUT/flows-0.pcap` .. `flows-{Q-1}.pcap`: one frame per flow,
//!   flow i in file i % Q (one capture per worker, as RSS would spread them). Ethernet to the
//!   uplink MAC from the router MAC; IPv4 (DF, TTL 64, ident i) or IPv6 (hop limit 64); TCP to
//!   port 8000 of service i % S's VIP, sequence i × 2654435761, window 65535, payload and
//!   Ethernet padding zero. Every flow has its own source: IPv4 clients 100.64.0.0 + i (with
//!   prefixes, 100.64.0.0 + (i × 3635633 mod 2^22), spread over all the geo blocks), IPv6 clients
//!   one /64 each in 2001:db8:c000::/40, source port 1024 + (i × 7919) % 64000. The first
//!   round(N × F) flows are SYNs, the rest ACKs. Exactly round(N × share) flows are IPv6, spread
//!   by a multiplicative permutation of the flow index. Frame sizes on the wire (the capture has
//!   no FCS: 4 bytes less): 64 (IPv6 frames at least 78), `imix` = 64, 576, 1518 in a 7:4:1
//!   pattern by (i / Q) % 12, or a SPEC like 64x7,576x4,1518x1; when a frame's IP packet plus
//!   IPIP exceeds 1500 the policy sets `backend_mtu: 9000` and the settings raise the port MTU.
//! - `OUT/meta.json`: every parameter, the pcap list, frame, byte and per-capture counts, pools,
//!   settings, the data plane's flow-table insert rate, and generation timings.

mod mmdb;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use serde_json::{json, Value};
use switchyard::settings::FlowTableSettings;
use switchyard_control::policy::{self, MAX_POLICY_BYTES};
use switchyard_frames::pcap::PcapWriter;
use switchyard_frames::{
    frame, ipv4, ipv6, tcp_segment, Pseudo, Tcp, ACK, IPV4, IPV6, L2, SYN, V4, V6,
};

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP_PORT: u16 = 8000;
/// 198.18.0.0/15 (RFC 2544 benchmarking range): VIPs of services 1 onwards.
const VIP_EXTRA_BASE: u32 = 198 << 24 | 18 << 16;
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0x113, 0, 0, 0, 0x10);
/// 2001:2::/48 (RFC 5180 benchmarking range).
const VIP6_EXTRA_BASE: u128 = 0x2001_0002_0000 << 80;
const UPLINK_V6: &str = "2001:db8:192::1/64";
/// 100.64.0.0/10: 4M client addresses, none martian.
const CLIENT_BASE: u32 = 100 << 24 | 64 << 16;
const CLIENT_LEN: u32 = 10;
/// Odd: i → i × CLIENT_SPREAD mod 2^22 is a permutation of the /10.
const CLIENT_SPREAD: u64 = 3_635_633;
/// 2001:db8:c000::/40; the flow index fills bits 40..63.
const CLIENT6_HI: u64 = 0x2001_0DB8_C000_0000;
const COUNTRIES: [&str; 4] = ["US", "DE", "JP", "BR"];
const FCS: usize = 4;
const IMIX: &[(usize, usize)] = &[(64, 7), (576, 4), (1518, 1)];
/// DPDK's RTE_PKTMBUF_HEADROOM.
const HEADROOM: usize = 128;
const IPIP: usize = 20;
const MAX_FLOWS: u64 = 4 << 20;
const MAX_PREFIXES: u32 = 1 << 20;

/// Writes the pipeline benchmark's inputs (see the crate documentation).
#[derive(Parser, Debug, Clone)]
#[command(name = "bench-data")]
struct Args {
    #[arg(long, required_unless_present = "maglev_reference")]
    dir: Option<PathBuf>,
    /// Print the Maglev rebuild reference (JSON) instead: the pool bench/maglev_ref.c builds
    /// and the checksum of the table the control plane builds for it.
    #[arg(long, conflicts_with = "dir")]
    maglev_reference: bool,
    /// Flows = frames, 1..4194304.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u64,
    /// Share of flows whose packet is a SYN (0..1).
    #[arg(long, default_value_t = 1.0)]
    syn_share: f64,
    /// 1..64000.
    #[arg(long, default_value_t = 1000)]
    backends: u32,
    /// TCP services (VIPs), 1..1000.
    #[arg(long, default_value_t = 1)]
    services: u32,
    /// GeoIP prefixes in 4 regions (geo.mmdb), 0..1048576; 0: no regions.
    #[arg(long, default_value_t = 0)]
    prefixes: u32,
    /// Share of IPv6 flows (0..1).
    #[arg(long, default_value_t = 0.0)]
    ipv6_share: f64,
    /// 64, imix (64:576:1518 as 7:4:1) or e.g. 64x7,576x4,1498x1.
    #[arg(long, default_value = "64")]
    sizes: String,
    /// Captures (one per worker), 1..8.
    #[arg(long, default_value_t = 1)]
    queues: u32,
}

/// `64`, `imix`, a single wire size, or `W1xN1,W2xN2,...` → (wire size, weight) pairs.
fn parse_sizes(spec: &str) -> Result<Vec<(usize, usize)>, String> {
    let spec = spec.trim().to_lowercase();
    if spec == "imix" {
        return Ok(IMIX.to_vec());
    }
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (w, n) = part.split_once('x').unwrap_or((part, "1"));
        let (Ok(size), Ok(weight)) = (w.parse::<usize>(), n.parse::<usize>()) else {
            return Err(format!(
                "--sizes: cannot read {part:?} (64, imix or e.g. 64x7,576x4,1518x1)"
            ));
        };
        if !(64..=1518).contains(&size) || weight < 1 {
            return Err(format!(
                "--sizes: {part:?}: wire sizes 64..1518, weights >= 1"
            ));
        }
        out.push((size, weight));
    }
    if out.is_empty() || out.iter().map(|p| p.1).sum::<usize>() > 1000 {
        return Err("--sizes: 1..1000 frames in the pattern".into());
    }
    Ok(out)
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn next_prime(mut n: u32) -> u32 {
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `x` rounded half to even, as a count.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn round_count(x: f64) -> u64 {
    x.round_ties_even() as u64
}

fn backend_addr(b: u32) -> Ipv4Addr {
    // 10.100.0.1 onwards, 250 per /24, never .0 or .255.
    Ipv4Addr::new(
        10,
        u8::try_from(100 + b / 64000).unwrap(),
        u8::try_from(b / 250 % 256).unwrap(),
        u8::try_from(b % 250 + 1).unwrap(),
    )
}

fn service_vip(k: u32) -> Ipv4Addr {
    if k == 0 {
        VIP
    } else {
        Ipv4Addr::from(VIP_EXTRA_BASE + k)
    }
}

fn service_vip6(k: u32) -> Ipv6Addr {
    if k == 0 {
        VIP6
    } else {
        Ipv6Addr::from(VIP6_EXTRA_BASE + u128::from(k))
    }
}

fn name_of(base: &str, k: u32) -> String {
    if k == 0 {
        base.to_string()
    } else {
        format!("{base}-{k}")
    }
}

/// Who is who: services, pools, regions, prefixes, and which flow is what.
struct Layout {
    a: Args,
    sizes: Vec<(usize, usize)>,
    size_pattern: Vec<usize>,
    syns: u64,
    v6_count: u64,
    v6_mult: u64,
    pools: u32,
    pool_sizes: Vec<u32>,
    pool_first: Vec<u32>,
    maglev_sizes: Vec<u32>,
    prefix_len: u32,
}

impl Layout {
    fn new(a: &Args) -> Result<Self, String> {
        let mut errors = Vec::new();
        if !(1..=MAX_FLOWS).contains(&a.flows) {
            errors.push(format!("flows {}: 1..{MAX_FLOWS}", a.flows));
        }
        if !(0.0..=1.0).contains(&a.syn_share) {
            errors.push(format!("syn-share {}: 0..1", a.syn_share));
        }
        if !(1..=64000).contains(&a.backends) {
            errors.push(format!("backends {}: 1..64000", a.backends));
        }
        if !(1..=1000).contains(&a.services) {
            errors.push(format!("services {}: 1..1000", a.services));
        }
        if a.prefixes > MAX_PREFIXES {
            errors.push(format!("prefixes {}: 0..{MAX_PREFIXES}", a.prefixes));
        }
        if !(0.0..=1.0).contains(&a.ipv6_share) {
            errors.push(format!("ipv6-share {}: 0..1", a.ipv6_share));
        }
        if !(1..=8).contains(&a.queues) {
            errors.push(format!("queues {}: 1..8", a.queues));
        } else if a.flows < u64::from(a.queues) {
            errors.push(format!(
                "flows {} < queues {}: net_pcap cannot replay an empty capture",
                a.flows, a.queues
            ));
        }
        let sizes = parse_sizes(&a.sizes).unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        });
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let n = a.flows;
        #[allow(clippy::cast_precision_loss)]
        let nf = n as f64;
        // Flow i is IPv6 when (i × v6_mult) mod N < v6_count: exactly v6_count flows, spread.
        let mut m = round_count(nf * 0.618_033_988_7).max(1) | 1;
        while gcd(m, n) != 1 {
            m += 2;
        }
        let pools = a.services.min((a.backends / 10).max(1));
        let (base, extra) = (a.backends / pools, a.backends % pools);
        let pool_sizes: Vec<u32> = (0..pools).map(|p| base + u32::from(p < extra)).collect();
        let pool_first = pool_sizes
            .iter()
            .scan(0, |acc, &s| {
                let first = *acc;
                *acc += s;
                Some(first)
            })
            .collect();
        let maglev_sizes = pool_sizes
            .iter()
            .map(|&s| next_prime((100 * s).max(251)))
            .collect();
        // Geo blocks: the first P aligned /(10 + c) blocks of the client /10.
        let prefix_bits = if a.prefixes > 0 {
            32 - (a.prefixes - 1).leading_zeros()
        } else {
            0
        };
        Ok(Self {
            size_pattern: sizes.iter().flat_map(|&(w, n)| vec![w; n]).collect(),
            sizes,
            syns: round_count(nf * a.syn_share),
            v6_count: round_count(nf * a.ipv6_share),
            v6_mult: m,
            pools,
            pool_sizes,
            pool_first,
            maglev_sizes,
            prefix_len: CLIENT_LEN + prefix_bits,
            a: a.clone(),
        })
    }

    fn pool_name(p: u32) -> String {
        name_of("bench", p)
    }

    fn route_pool(&self, k: u32, region: Option<u32>) -> u32 {
        (k + region.unwrap_or(0)) % self.pools
    }

    fn is_v6(&self, i: u64) -> bool {
        self.v6_count > 0 && (i * self.v6_mult) % self.a.flows < self.v6_count
    }

    /// Flow i's IPv4 client address.
    fn client4(&self, i: u64) -> u32 {
        let offset = if self.a.prefixes > 0 {
            (i * CLIENT_SPREAD) & ((1 << 22) - 1)
        } else {
            i
        };
        CLIENT_BASE + u32::try_from(offset).unwrap()
    }
}

fn policy_text(lay: &Layout, geoip: Option<&str>, all_weights: bool) -> String {
    let mut l: Vec<String> = vec![
        "# Generated by bench-data (bench/data): the pipeline benchmark's policy.".into(),
        "interfaces:".into(),
    ];
    let v6 = if lay.v6_count > 0 {
        format!(", {UPLINK_V6}")
    } else {
        String::new()
    };
    let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    l.push(format!(
        "  - {{ name: uplink, mac: {}, addresses: [192.0.2.1/24{v6}] }}",
        mac(switchyard_frames::UPLINK_MAC)
    ));
    l.push("  - name: backend".into());
    l.push(format!("    mac: {}", mac(switchyard_frames::BACKEND_MAC)));
    l.push("    addresses: [198.51.100.1/24]".into());
    l.push(format!(
        "    gateway: {{ ipv4: 198.51.100.254, mac: {} }}",
        mac(switchyard_frames::BACKEND_GW_MAC)
    ));
    l.push("encap: ipip".into());
    // Full-size client packets (1500-byte IP) plus the 20-byte IPIP header need a jumbo backend
    // network, as DSR deployments have; otherwise they are answered with frag-needed.
    if lay.size_pattern.iter().max().unwrap() - 18 + IPIP > 1500 {
        l.push("backend_mtu: 9000".into());
    }
    let regions: Vec<u32> = if lay.a.prefixes > 0 {
        (0..4).collect()
    } else {
        Vec::new()
    };
    if let Some(geoip) = geoip {
        l.push(format!("geoip_database: {geoip}"));
        l.push("regions:".into());
        for &r in &regions {
            l.push(format!(
                "  r{r}: {{ geoip: {{ countries: [{}] }} }}",
                COUNTRIES[r as usize]
            ));
        }
    }
    l.push("services:".into());
    for k in 0..lay.a.services {
        for v6 in [false, true] {
            if v6 && lay.v6_count == 0 {
                continue;
            }
            let (vip, suffix) = if v6 {
                (service_vip6(k).to_string(), "-v6")
            } else {
                (service_vip(k).to_string(), "")
            };
            l.push(format!("  - name: {}{suffix}", name_of("bench", k)));
            l.push(format!("    vip: {vip}"));
            l.push(format!("    ports: [{VIP_PORT}]"));
            l.push("    protocol: tcp".into());
            l.push("    routes:".into());
            for &r in &regions {
                l.push(format!(
                    "      - {{ from: r{r}, pool: {} }}",
                    Layout::pool_name(lay.route_pool(k, Some(r)))
                ));
            }
            l.push(format!(
                "      - {{ pool: {} }}",
                Layout::pool_name(lay.route_pool(k, None))
            ));
        }
    }
    l.push("pools:".into());
    for p in 0..lay.pools {
        l.push(format!("  {}:", Layout::pool_name(p)));
        l.push("    scheduler: maglev".into());
        // A prime with about 100 slots per backend.
        l.push(format!("    maglev_size: {}", lay.maglev_sizes[p as usize]));
        l.push("    backends:".into());
        let first = lay.pool_first[p as usize];
        for b in first..first + lay.pool_sizes[p as usize] {
            if all_weights || b == first {
                l.push(format!(
                    "      - {{ address: {}, weight: 100 }}",
                    backend_addr(b)
                ));
            } else {
                l.push(format!("      - {{ address: {} }}", backend_addr(b)));
            }
        }
    }
    l.join("\n") + "\n"
}

/// Writes the policy, checked by the control plane's parser: every backend is written
/// `weight: 100` unless that breaks its size or node limits; then only each pool's first
/// backend carries it (the others take the same default).
fn write_policy(path: &Path, lay: &Layout, geoip: Option<&str>) -> Result<Value, String> {
    let mut last_error = String::new();
    for all_weights in [true, false] {
        let text = policy_text(lay, geoip, all_weights);
        if text.len() > MAX_POLICY_BYTES {
            last_error = format!(
                "the policy would be {} bytes; the control plane reads at most {MAX_POLICY_BYTES}",
                text.len()
            );
            continue;
        }
        if let Err(e) = policy::parse_str(&text, "policy.yaml") {
            last_error = e.to_string();
            continue;
        }
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(
            json!({"bytes": text.len(), "all_weights_written": all_weights,
                         "checked_by": "switchyard_control::policy::parse_str"}),
        );
    }
    Err(format!(
        "the control plane refuses the policy (fewer backends, services or no IPv6 twins): {last_error}"
    ))
}

/// Per-capture counts of what [`write_pcaps`] wrote.
#[derive(Default)]
struct Counts {
    v4: Vec<u64>,
    v6: Vec<u64>,
    bytes: Vec<u64>,
    by_size: BTreeMap<usize, u64>,
    by_region: [u64; 5],
}

fn write_pcaps(paths: &[PathBuf], lay: &Layout) -> std::io::Result<Counts> {
    let q = u64::from(lay.a.queues);
    let nq = paths.len();
    let mut files = paths
        .iter()
        .map(|p| PcapWriter::new(BufWriter::with_capacity(1 << 20, File::create(p)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut c = Counts {
        v4: vec![0; nq],
        v6: vec![0; nq],
        bytes: vec![0; nq],
        ..Counts::default()
    };
    let zeros = [0u8; 1518];
    let plen = lay.size_pattern.len() as u64;
    let shift = 32 - lay.prefix_len;
    let l2 = L2::inbound();
    for i in 0..lay.a.flows {
        let flags = if i < lay.syns { SYN } else { ACK };
        let wire = lay.size_pattern[usize::try_from((i / q) % plen).unwrap()];
        let k = u32::try_from(i % u64::from(lay.a.services)).unwrap();
        let sport = u16::try_from(1024 + (i * 7919) % 64000).unwrap();
        let tcp = Tcp {
            seq: u32::try_from((i * 2_654_435_761) & 0xffff_ffff).unwrap(),
            ack: u32::from(flags & ACK != 0),
            window: 65535,
            ..Tcp::new(sport, VIP_PORT, flags)
        };
        let qi = usize::try_from(i % q).unwrap();
        let fr = if lay.is_v6(i) {
            let cap = (wire - FCS).max(74);
            let src = Ipv6Addr::from(u128::from(CLIENT6_HI | i) << 64 | 1);
            let dst = service_vip6(k);
            let seg = tcp_segment(Pseudo::V6(src, dst), &tcp, &zeros[..cap - 74]);
            let h = V6 {
                hop_limit: 64,
                flow_label: 0,
                ..V6::new(src, dst, 6)
            };
            c.v6[qi] += 1;
            frame(&l2, IPV6, &ipv6(&h, &seg))
        } else {
            let cap = wire - FCS;
            let src = lay.client4(i);
            let (s, dst) = (Ipv4Addr::from(src), service_vip(k));
            // A 64-byte frame: 40 bytes of IP and 6 of Ethernet padding.
            let payload = if cap <= 60 { 0 } else { cap - 54 };
            let seg = tcp_segment(Pseudo::V4(s, dst), &tcp, &zeros[..payload]);
            let h = V4 {
                ttl: 64,
                ident: u16::try_from(i & 0xffff).unwrap(),
                ..V4::new(s, dst, 6)
            };
            c.v4[qi] += 1;
            if lay.a.prefixes > 0 {
                let j = (src - CLIENT_BASE) >> shift;
                c.by_region[if j < lay.a.prefixes {
                    j as usize % 4
                } else {
                    4
                }] += 1;
            }
            let mut f = frame(&l2, IPV4, &ipv4(&h, &seg));
            f.resize(cap, 0);
            f
        };
        let cap = fr.len();
        files[qi].write(
            u32::try_from(i / 1_000_000).unwrap(),
            u32::try_from(i % 1_000_000).unwrap(),
            &fr,
        )?;
        c.bytes[qi] += cap as u64;
        *c.by_size.entry(cap).or_default() += 1;
    }
    for f in files {
        f.into_inner().flush()?;
    }
    Ok(c)
}

fn write_settings(
    path: &Path,
    lay: &Layout,
    c: &Counts,
    max_frame: usize,
) -> Result<Value, String> {
    let q = u64::from(lay.a.queues);
    let (rx_desc, tx_desc, cache) = (1024u64, 2048u64, 256u64);
    // One mbuf per captured frame, plus every queue (two ports with Q RX + Q TX each), the
    // per-lcore caches (Q workers + main) and some slack.
    let mbufs = lay.a.flows + 2 * q * (rx_desc + tx_desc) + (q + 1) * cache + 4096;
    let data_room = if max_frame + HEADROOM <= 384 {
        384
    } else {
        (max_frame + HEADROOM).div_ceil(64) * 64
    };
    let v4_flows = (2 * c.v4.iter().max().unwrap()).max(1024);
    let v6_flows = (2 * c.v6.iter().max().unwrap()).max(1024);
    let mtu = Some(max_frame - 14 + IPIP).filter(|&m| m > 1500);
    let mut text = String::from(
        "# Generated by bench-data (bench/data): the pipeline benchmark's appliance settings.\n\
         ports:\n  - { device: net_pcap0, role: uplink, interface: uplink }\n  \
         - { device: net_null0, role: backend, interface: backend }\n",
    );
    text += &format!("queues: {{ rx_descriptors: {rx_desc}, tx_descriptors: {tx_desc} }}\n");
    text += &format!("mempool: {{ mbufs: {mbufs}, cache: {cache}, data_room: {data_room} }}\n");
    if let Some(mtu) = mtu {
        text += &format!("mtu: {mtu}\n");
    }
    text += &format!("flow_table: {{ ipv4_flows: {v4_flows}, ipv6_flows: {v6_flows} }}\n");
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    // rte_mbuf (128) + data room + mempool object header/alignment (about 64).
    Ok(
        json!({"mbufs": mbufs, "data_room": data_room, "mbuf_cache": cache,
              "rx_descriptors": rx_desc, "tx_descriptors": tx_desc, "mtu": mtu,
              "ipv4_flows_per_worker": v4_flows, "ipv6_flows_per_worker": v6_flows,
              "mempool_bytes_estimate": mbufs * (data_room as u64 + 192),
              "insert_rate_per_worker": FlowTableSettings::default().insert_rate}),
    )
}

fn seconds(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

#[allow(clippy::too_many_lines)]
fn generate(a: &Args) -> Result<Value, String> {
    let t0 = Instant::now();
    let lay = Layout::new(a)?;
    let dir = a.dir.as_ref().ok_or("--dir is required")?;
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let pcaps: Vec<String> = if a.queues == 1 {
        vec!["flows.pcap".into()]
    } else {
        (0..a.queues).map(|q| format!("flows-{q}.pcap")).collect()
    };
    // Captures of an earlier run with another --queues would be replayed by mistake.
    for old in std::fs::read_dir(dir).map_err(io)? {
        let name = old.map_err(io)?.file_name().to_string_lossy().into_owned();
        if name.starts_with("flows") && name.ends_with(".pcap") && !pcaps.contains(&name) {
            std::fs::remove_file(dir.join(&name)).map_err(io)?;
        }
    }
    let geo = (a.prefixes > 0).then_some("geo.mmdb");
    let mut timings = serde_json::Map::new();
    let t = Instant::now();
    let policy = write_policy(&dir.join("policy.yaml"), &lay, geo)?;
    timings.insert("policy_seconds".into(), json!(seconds(t)));

    let geo_meta = if let Some(geo) = geo {
        let t = Instant::now();
        let records: Vec<mmdb::Value> = COUNTRIES
            .iter()
            .map(|c| {
                mmdb::Value::Map(vec![(
                    "country".into(),
                    mmdb::Value::Map(vec![("iso_code".into(), mmdb::Value::String((*c).into()))]),
                )])
            })
            .collect();
        let info = mmdb::write_blocks(
            &dir.join(geo),
            (CLIENT_BASE, CLIENT_LEN),
            lay.prefix_len,
            a.prefixes,
            &records,
        )
        .map_err(io)?;
        timings.insert("mmdb_seconds".into(), json!(seconds(t)));
        let countries: serde_json::Map<String, Value> = COUNTRIES
            .iter()
            .enumerate()
            .map(|(r, c)| (format!("r{r}"), json!(c)))
            .collect();
        json!({"file": geo, "prefixes": a.prefixes, "prefix_len": lay.prefix_len,
               "node_count": info.node_count, "bytes": info.bytes, "countries": countries})
    } else {
        let stale = dir.join("geo.mmdb");
        if stale.exists() {
            std::fs::remove_file(stale).map_err(io)?;
        }
        Value::Null
    };
    let t = Instant::now();
    let paths: Vec<PathBuf> = pcaps.iter().map(|p| dir.join(p)).collect();
    let c = write_pcaps(&paths, &lay).map_err(io)?;
    timings.insert("pcap_seconds".into(), json!(seconds(t)));
    let max_frame = *c.by_size.keys().max().unwrap();
    let settings = write_settings(&dir.join("settings.yaml"), &lay, &c, max_frame)?;
    let frames = a.flows;
    let captured: u64 = c.bytes.iter().sum();
    let fcs = FCS as u64;
    timings.insert("total_seconds".into(), json!(seconds(t0)));
    let frames_per_pcap: Vec<u64> = c.v4.iter().zip(&c.v6).map(|(a, b)| a + b).collect();
    let by_size: serde_json::Map<String, Value> = c
        .by_size
        .iter()
        .map(|(cap, n)| ((cap + FCS).to_string(), json!(n)))
        .collect();
    let by_region = (a.prefixes > 0).then(|| {
        json!({"r0": c.by_region[0], "r1": c.by_region[1], "r2": c.by_region[2],
               "r3": c.by_region[3], "none": c.by_region[4]})
    });
    let mut services: Vec<Value> = (0..a.services.min(4))
        .map(|k| {
            json!({"name": name_of("bench", k), "vip": service_vip(k).to_string(),
                   "vip6": (lay.v6_count > 0).then(|| service_vip6(k).to_string()),
                   "port": VIP_PORT, "pool": Layout::pool_name(lay.route_pool(k, None))})
        })
        .collect();
    if a.services > 4 {
        services.push(json!("..."));
    }
    let pools: Vec<Value> = (0..lay.pools)
        .map(|p| {
            json!({"name": Layout::pool_name(p), "backends": lay.pool_sizes[p as usize],
                   "maglev_size": lay.maglev_sizes[p as usize]})
        })
        .collect();
    let file_bytes: Vec<u64> = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()))
        .collect::<std::io::Result<_>>()
        .map_err(io)?;
    let vdev = paths
        .iter()
        .map(|p| format!("rx_pcap={}", p.display()))
        .collect::<Vec<_>>()
        .join(",");
    #[allow(clippy::cast_precision_loss)]
    let mean_wire = ((captured + fcs * frames) as f64 / frames as f64 * 100.0).round() / 100.0;
    Ok(json!({
        "generator": "bench-data (bench/data)",
        "params": {"flows": a.flows, "syn_share": a.syn_share, "backends": a.backends,
                   "services": a.services, "prefixes": a.prefixes, "ipv6_share": a.ipv6_share,
                   "sizes": a.sizes, "queues": a.queues},
        "files": {"policy": "policy.yaml", "settings": "settings.yaml", "geoip_database": geo,
                  "pcaps": pcaps, "meta": "meta.json"},
        "pcaps": pcaps,
        "geoip_database": geo,
        "frames": frames,
        "syn_frames": lay.syns,
        "ack_frames": frames - lay.syns,
        "ipv4_frames": c.v4.iter().sum::<u64>(),
        "ipv6_frames": c.v6.iter().sum::<u64>(),
        "frames_per_pcap": frames_per_pcap,
        "ipv4_frames_per_pcap": c.v4,
        "ipv6_frames_per_pcap": c.v6,
        "frames_by_wire_size": by_size,
        "size_pattern": lay.sizes.iter().map(|&(w, n)| [w, n]).collect::<Vec<_>>(),
        // Captured: frame bytes in the pcaps (no FCS); wire: + 4 FCS per frame; line: + 20
        // (preamble, start delimiter, inter-frame gap), what a link's bit rate is spent on.
        "bytes_captured": captured,
        "bytes_captured_per_pcap": c.bytes,
        "bytes_on_wire": captured + fcs * frames,
        "bytes_on_line": captured + (fcs + 20) * frames,
        "mean_wire_frame": mean_wire,
        "pcap_file_bytes": file_bytes,
        "flows_by_region": by_region,
        "services": services,
        "pools": pools,
        "client_ranges": {"ipv4": "100.64.0.0/10", "ipv6": "2001:db8:c000::/40"},
        "geoip": geo_meta,
        "policy": policy,
        "settings": settings,
        "eal_vdev": format!("--vdev=net_pcap0,{vdev},infinite_rx=1"),
        "timings": timings,
    }))
}

/// The Maglev rebuild's pool, that of `control/benches/maglev.rs` and `bench/maglev_ref.c`:
/// N = 1000 backends of weight 1, keys id × ⌊2^64/φ⌋, on the default table size; with the
/// FNV-1a 64 checksum (over the little-endian slot values) of the control plane's table, which
/// the C reference must reproduce.
fn maglev_reference() -> Value {
    use switchyard_control::maglev::{build, MaglevBackend, DEFAULT_SIZE};
    let backends = 1000u32;
    let pool: Vec<MaglevBackend> = (1..=backends)
        .map(|id| MaglevBackend {
            id,
            weight: 1,
            key: u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        })
        .collect();
    let table = build(&pool, DEFAULT_SIZE).expect("a valid pool");
    let checksum = table
        .iter()
        .flat_map(|id| id.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, byte| {
            (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    json!({"backends": backends, "slots": DEFAULT_SIZE, "checksum": format!("{checksum:#018x}")})
}

fn main() -> ExitCode {
    let a = Args::parse();
    if a.maglev_reference {
        println!("{}", maglev_reference());
        return ExitCode::SUCCESS;
    }
    let dir = a.dir.clone().unwrap_or_default();
    match generate(&a) {
        Ok(meta) => {
            let path = dir.join("meta.json");
            let text = serde_json::to_string_pretty(&meta).unwrap() + "\n";
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("bench-data: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: {} frames in {} pcap(s), {} bytes, {} pool(s), {} geo prefixes; {} s",
                dir.display(),
                meta["frames"],
                a.queues,
                meta["bytes_captured"],
                meta["pools"].as_array().map_or(0, Vec::len),
                a.prefixes,
                meta["timings"]["total_seconds"]
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-data: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_control::compile::{compile, BackendIds, BackendState, CompileInput};
    use switchyard_table::generation::name_str;
    use switchyard_table::lpm;

    /// A small mixed data set through the control plane's compiler: it takes the policy and
    /// the GeoIP database, and puts every IPv4 client of the captures in its block's region.
    #[test]
    fn the_compiler_puts_every_client_in_its_blocks_region() {
        let dir = std::env::temp_dir().join(format!("bench-data-{}", std::process::id()));
        let a = Args {
            dir: Some(dir.clone()),
            maglev_reference: false,
            flows: 3000,
            syn_share: 0.5,
            backends: 25,
            services: 3,
            prefixes: 100,
            ipv6_share: 0.3,
            sizes: "imix".into(),
            queues: 2,
        };
        let meta = generate(&a).unwrap();
        assert_eq!(meta["ipv6_frames"], 900);
        assert_eq!(meta["syn_frames"], 1500);
        assert_eq!(meta["frames_per_pcap"], json!([1500, 1500]));
        assert_eq!(meta["frames_by_wire_size"]["1518"], 250);
        assert_eq!(meta["policy"]["all_weights_written"], true);

        let policy = policy::load(&dir.join("policy.yaml")).unwrap();
        let input = CompileInput {
            policy: &policy,
            generation: 1,
            state: &BackendState::new(),
        };
        let g = compile(&input, &mut BackendIds::new()).unwrap();
        assert_eq!(g.services.len(), 6, "three services and their IPv6 twins");
        let lay = Layout::new(&a).unwrap();
        let mut by_region = [0u64; 5];
        for i in (0..a.flows).filter(|&i| !lay.is_v6(i)) {
            let src = lay.client4(i);
            let block = (src - CLIENT_BASE) >> (32 - lay.prefix_len);
            let value = lpm::lookup_v4(&g.geo_lpm_v4, src);
            if block < a.prefixes {
                let region = &g.regions[value as usize - 1];
                assert_eq!(
                    name_str(&region.name),
                    format!("r{}", block % 4),
                    "flow {i}"
                );
                by_region[block as usize % 4] += 1;
            } else {
                assert_eq!(value, 0, "flow {i}: outside the blocks");
                by_region[4] += 1;
            }
        }
        let expected: Vec<u64> = ["r0", "r1", "r2", "r3", "none"]
            .iter()
            .map(|r| meta["flows_by_region"][r].as_u64().unwrap())
            .collect();
        assert_eq!(by_region.to_vec(), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The checksum `control/src/maglev.rs` pins for the C reference's pool.
    #[test]
    fn maglev_reference_is_the_pinned_table() {
        let r = maglev_reference();
        assert_eq!(r["checksum"], "0xa5ad2a37498fbc05");
        assert_eq!(r["slots"], 65_537);
    }
}
