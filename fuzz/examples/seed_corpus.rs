//! Writes the committed seed corpus: `cargo run --example seed_corpus` from `fuzz/`.
//!
//! - `corpus/wire_parse/`: small real frames, one per packet shape the data plane meets
//!   (clients' TCP/UDP to a VIP, ARP, NDP, ICMP errors quoting flows, VLAN tags, IPv4 options and
//!   fragments, IPv6 extension headers, and the IPIP/GUE packets the balancer sends to backends).
//! - `corpus/pipeline/`: the same frames, one per input, then short conversations (handshakes,
//!   ICMP errors for live flows, expiry, ACL hits, the kernel port) in the pipeline target's
//!   framing, against the addresses of `fuzz/pipeline.yaml`.
//! - `corpus/generation_decode/`: valid generation blobs, from empty to one with VIP LPM tables,
//!   for libFuzzer to mutate (the target reseals the checksum so mutations reach validation).
//!
//! - `corpus/ring_messages/`: one raw ring message of each kind, then a program for the hostile
//!   control plane of the ring_messages target (installs, polls, worker switches, corrupt
//!   blobs, rewritten ring indices and slots, restarts).
//!
//! Output is deterministic; rerun after changing a packet or the table ABI, and commit the diff.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use switchyard::wire::ArpOp;
use switchyard_frames::{self as frames, arp, Fragment, Pseudo, Tcp, L2, V4, V6};
use switchyard_fuzz::{BACKEND4, BACKEND6, GW_MAC, OUR4, OUR6, OUR_MAC, VIP4, VIP6};
use switchyard_table::generation::Generation;
use switchyard_table::shm::{Install, Message, RejectReason};

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xc1];
const BROADCAST: [u8; 6] = [0xff; 6];

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const OUTER_SRC4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 9);

const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let packets = packets();
    write_all(&root.join("pipeline"), &pipeline_inputs(&packets));
    write_all(&root.join("wire_parse"), &packets);
    write_all(&root.join("generation_decode"), &generations());
    write_all(&root.join("ring_messages"), &ring_programs());
}

fn write_all(dir: &Path, seeds: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

// ---------------------------------------------------------------------------------------------
// Packets

fn packets() -> Vec<(&'static str, Vec<u8>)> {
    let syn_opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7]; // MSS 1460, NOP, window scale 7
    let syn4 = ipv4(
        CLIENT4,
        VIP4,
        6,
        &tcp4(CLIENT4, VIP4, 40001, 80, TCP_SYN, &syn_opts, b""),
    );
    let data4 = ipv4(
        CLIENT4,
        VIP4,
        6,
        &tcp4(
            CLIENT4,
            VIP4,
            40001,
            80,
            TCP_ACK | TCP_PSH,
            &[],
            b"GET / HTTP/1.1\r\n\r\n",
        ),
    );
    let udp_v4 = ipv4(
        CLIENT4,
        VIP4,
        17,
        &udp4(CLIENT4, VIP4, 53001, 443, b"quic-initial"),
    );
    let syn6 = ipv6(
        CLIENT6,
        VIP6,
        6,
        &tcp6(CLIENT6, VIP6, 40002, 443, TCP_SYN, &syn_opts, b""),
    );
    let udp_v6 = ipv6(
        CLIENT6,
        VIP6,
        17,
        &udp6(CLIENT6, VIP6, 53002, 443, b"quic-initial"),
    );

    let mut v = vec![
        ("tcp_syn_v4", eth(OUR_MAC, CLIENT_MAC, &[], ETH_IPV4, &syn4)),
        (
            "tcp_data_v4",
            eth(OUR_MAC, CLIENT_MAC, &[], ETH_IPV4, &data4),
        ),
        (
            "tcp_fin_v4",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4(
                    CLIENT4,
                    VIP4,
                    6,
                    &tcp4(CLIENT4, VIP4, 40001, 80, TCP_FIN | TCP_ACK, &[], b""),
                ),
            ),
        ),
        (
            "tcp_rst_v4",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4(
                    CLIENT4,
                    VIP4,
                    6,
                    &tcp4(CLIENT4, VIP4, 40001, 80, TCP_RST, &[], b""),
                ),
            ),
        ),
        (
            "tcp_xmas_v4",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4(
                    CLIENT4,
                    VIP4,
                    6,
                    &tcp4(CLIENT4, VIP4, 40001, 80, 0xff, &[], b""),
                ),
            ),
        ),
        ("udp_v4", eth(OUR_MAC, CLIENT_MAC, &[], ETH_IPV4, &udp_v4)),
        // 60-byte minimum frame: 6 bytes of Ethernet padding after the IPv4 total length.
        ("tcp_ack_v4_padded", {
            let mut f = eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4(
                    CLIENT4,
                    VIP4,
                    6,
                    &tcp4(CLIENT4, VIP4, 40001, 80, TCP_ACK, &[], b""),
                ),
            );
            f.resize(60, 0);
            f
        }),
        (
            "tcp_syn_v4_vlan",
            eth(OUR_MAC, CLIENT_MAC, &[(0x8100, 0x2064)], ETH_IPV4, &syn4),
        ),
        (
            "udp_v4_qinq",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[(0x88a8, 0x000a), (0x8100, 0x0014)],
                ETH_IPV4,
                &udp_v4,
            ),
        ),
        (
            "tcp_v4_three_tags",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)],
                ETH_IPV4,
                &syn4,
            ),
        ),
        (
            "tcp_syn_v4_options",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4_full(
                    CLIENT4,
                    VIP4,
                    6,
                    &[0x94, 0x04, 0x00, 0x00], // router alert
                    0x4000,
                    &tcp4(CLIENT4, VIP4, 40001, 80, TCP_SYN, &syn_opts, b""),
                ),
            ),
        ),
        ("udp_v4_first_fragment", {
            let udp = udp4(CLIENT4, VIP4, 53001, 443, &[0x5a; 64]);
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4_full(CLIENT4, VIP4, 17, &[], 0x2000, &udp[..40]),
            )
        }),
        (
            "udp_v4_later_fragment",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4_full(CLIENT4, VIP4, 17, &[], 0x0005, &[0x5a; 32]),
            ),
        ),
        (
            "icmp_echo_request",
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV4,
                &ipv4(CLIENT4, VIP4, 1, &icmp(8, 0, 0x1234_0001, b"ping-payload")),
            ),
        ),
        // A router on the path to the client says our reply was too big: quotes VIP → client.
        ("icmp_frag_needed", {
            let reply = ipv4(
                VIP4,
                CLIENT4,
                6,
                &tcp4(VIP4, CLIENT4, 80, 40001, TCP_ACK, &[], &[0; 8]),
            );
            let quote = &reply[..28];
            eth(
                OUR_MAC,
                GW_MAC,
                &[],
                ETH_IPV4,
                &ipv4(
                    Ipv4Addr::new(198, 51, 100, 254),
                    VIP4,
                    1,
                    &icmp(3, 4, 1400, quote),
                ),
            )
        }),
        ("icmp_time_exceeded", {
            let quote = &udp_v4[..28];
            eth(
                OUR_MAC,
                GW_MAC,
                &[],
                ETH_IPV4,
                &ipv4(
                    Ipv4Addr::new(198, 51, 100, 254),
                    CLIENT4,
                    1,
                    &icmp(11, 0, 0, quote),
                ),
            )
        }),
        ("icmp_port_unreachable", {
            let quote = &udp_v4[..];
            eth(
                OUR_MAC,
                GW_MAC,
                &[],
                ETH_IPV4,
                &ipv4(BACKEND4, VIP4, 1, &icmp(3, 3, 0, quote)),
            )
        }),
        (
            "arp_request",
            eth(
                BROADCAST,
                CLIENT_MAC,
                &[],
                ETH_ARP,
                &arp(ArpOp::Request, CLIENT_MAC, CLIENT4, [0; 6], OUR4),
            ),
        ),
        (
            "arp_reply",
            eth(
                OUR_MAC,
                GW_MAC,
                &[],
                ETH_ARP,
                &arp(
                    ArpOp::Reply,
                    GW_MAC,
                    Ipv4Addr::new(192, 0, 2, 254),
                    OUR_MAC,
                    OUR4,
                ),
            ),
        ),
        (
            "arp_request_vlan",
            eth(
                BROADCAST,
                CLIENT_MAC,
                &[(0x8100, 100)],
                ETH_ARP,
                &arp(ArpOp::Request, CLIENT_MAC, CLIENT4, [0; 6], OUR4),
            ),
        ),
        (
            "lldp",
            eth(
                [0x01, 0x80, 0xc2, 0, 0, 0x0e],
                GW_MAC,
                &[],
                0x88cc,
                &[0x02, 0x07, 0x04, 2, 0, 0, 0, 0, 0xfe, 0, 0],
            ),
        ),
        ("tcp_syn_v6", eth(OUR_MAC, CLIENT_MAC, &[], ETH_IPV6, &syn6)),
        ("udp_v6", eth(OUR_MAC, CLIENT_MAC, &[], ETH_IPV6, &udp_v6)),
        ("udp_v6_hbh_dstopts", {
            // Hop-by-hop (router alert) then destination options (PadN), then UDP.
            let udp = udp6(CLIENT6, VIP6, 53002, 443, b"quic-initial");
            let mut payload = vec![60, 0, 5, 2, 0, 0, 1, 0]; // HBH: next = dest opts
            payload.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // DO: next = UDP
            payload.extend_from_slice(&udp);
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV6,
                &ipv6(CLIENT6, VIP6, 0, &payload),
            )
        }),
        ("tcp_v6_routing", {
            let tcp = tcp6(CLIENT6, VIP6, 40002, 443, TCP_ACK, &[], b"x");
            let mut payload = vec![6, 2, 4, 0, 0, 0, 0, 0]; // type 4 (SRH), 1 segment
            payload.extend_from_slice(&VIP6.octets());
            payload.extend_from_slice(&tcp);
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV6,
                &ipv6(CLIENT6, VIP6, 43, &payload),
            )
        }),
        ("udp_v6_first_fragment", {
            let udp = udp6(CLIENT6, VIP6, 53002, 443, &[0xa5; 64]);
            let mut payload = vec![17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]; // offset 0, M
            payload.extend_from_slice(&udp[..48]);
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV6,
                &ipv6(CLIENT6, VIP6, 44, &payload),
            )
        }),
        ("udp_v6_later_fragment", {
            let mut payload = vec![17, 0, 0x00, 0x30, 0xde, 0xad, 0xbe, 0xef]; // offset 48
            payload.extend_from_slice(&[0xa5; 24]);
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV6,
                &ipv6(CLIENT6, VIP6, 44, &payload),
            )
        }),
        ("icmpv6_echo_request", {
            let m = icmpv6(CLIENT6, VIP6, 128, 0, 0x1234_0001, b"ping6-payload");
            eth(
                OUR_MAC,
                CLIENT_MAC,
                &[],
                ETH_IPV6,
                &ipv6(CLIENT6, VIP6, 58, &m),
            )
        }),
        ("icmpv6_neighbor_solicit", {
            let target = OUR6;
            let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
            let mut body = target.octets().to_vec();
            body.extend_from_slice(&[1, 1]); // source link-layer address option
            body.extend_from_slice(&CLIENT_MAC);
            let m = icmpv6(CLIENT6, group, 135, 0, 0, &body);
            let mut ip = ipv6(CLIENT6, group, 58, &m);
            ip[7] = 255;
            eth([0x33, 0x33, 0xff, 0, 0, 1], CLIENT_MAC, &[], ETH_IPV6, &ip)
        }),
        ("icmpv6_neighbor_advert", {
            let mut body = BACKEND6.octets().to_vec();
            body.extend_from_slice(&[2, 1]); // target link-layer address option
            body.extend_from_slice(&GW_MAC);
            let m = icmpv6(BACKEND6, OUR6, 136, 0, 0x6000_0000, &body);
            let mut ip = ipv6(BACKEND6, OUR6, 58, &m);
            ip[7] = 255;
            eth(OUR_MAC, GW_MAC, &[], ETH_IPV6, &ip)
        }),
        ("icmpv6_dad_probe", {
            let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
            let m = icmpv6(Ipv6Addr::UNSPECIFIED, group, 135, 0, 0, &OUR6.octets());
            let mut ip = ipv6(Ipv6Addr::UNSPECIFIED, group, 58, &m);
            ip[7] = 255;
            eth([0x33, 0x33, 0xff, 0, 0, 1], CLIENT_MAC, &[], ETH_IPV6, &ip)
        }),
        // Too big on the way back to the client: quotes VIP → client with a dest-opts header.
        ("icmpv6_packet_too_big", {
            let tcp = tcp6(VIP6, CLIENT6, 443, 40002, TCP_ACK, &[], &[0; 16]);
            let mut payload = vec![6, 0, 1, 4, 0, 0, 0, 0];
            payload.extend_from_slice(&tcp);
            let quoted = ipv6(VIP6, CLIENT6, 60, &payload);
            let router = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
            let m = icmpv6(router, VIP6, 2, 0, 1400, &quoted);
            eth(OUR_MAC, GW_MAC, &[], ETH_IPV6, &ipv6(router, VIP6, 58, &m))
        }),
        ("icmpv6_dst_unreachable", {
            let m = icmpv6(BACKEND6, VIP6, 1, 4, 0, &udp_v6[..]);
            eth(
                OUR_MAC,
                GW_MAC,
                &[],
                ETH_IPV6,
                &ipv6(BACKEND6, VIP6, 58, &m),
            )
        }),
        // What the balancer sends to backends.
        (
            "ipip_v4",
            eth(
                GW_MAC,
                OUR_MAC,
                &[],
                ETH_IPV4,
                &ipv4(OUTER_SRC4, BACKEND4, 4, &syn4),
            ),
        ),
        ("ip6ip6", {
            let outer_src = Ipv6Addr::new(0xfd00, 0x5359, 0, 0, 0, 0, 0, 9);
            eth(
                GW_MAC,
                OUR_MAC,
                &[],
                ETH_IPV6,
                &ipv6(outer_src, BACKEND6, 41, &syn6),
            )
        }),
        ("gue_v4_in_v4", {
            let mut g = vec![0x00, 4, 0, 0];
            g.extend_from_slice(&data4);
            let u = udp4(OUTER_SRC4, BACKEND4, 49152, 6080, &g);
            eth(
                GW_MAC,
                OUR_MAC,
                &[],
                ETH_IPV4,
                &ipv4(OUTER_SRC4, BACKEND4, 17, &u),
            )
        }),
        ("gue_v6_in_v6", {
            let outer_src = Ipv6Addr::new(0xfd00, 0x5359, 0, 0, 0, 0, 0, 9);
            let mut g = vec![0x01, 41, 0x80, 0, 0xde, 0xad, 0xbe, 0xef]; // one extension word
            g.extend_from_slice(&syn6);
            let u = udp6(outer_src, BACKEND6, 49153, 6080, &g);
            eth(
                GW_MAC,
                OUR_MAC,
                &[],
                ETH_IPV6,
                &ipv6(outer_src, BACKEND6, 17, &u),
            )
        }),
        ("gue_control", {
            let u = udp4(
                OUTER_SRC4,
                BACKEND4,
                49152,
                6080,
                &[0x20, 1, 0, 0, 0, 0, 0, 0],
            );
            eth(
                GW_MAC,
                OUR_MAC,
                &[],
                ETH_IPV4,
                &ipv4(OUTER_SRC4, BACKEND4, 17, &u),
            )
        }),
    ];
    v.sort_by_key(|(name, _)| *name);
    v
}

// The shared frame builders (switchyard-frames) with this corpus's header fields: TTL and hop
// limit 64, IPv4 ident 0x1c46 and DF, no IPv6 flow label.

/// Ethernet header, VLAN tags as (TPID, TCI), ethertype, payload.
fn eth(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let l2 = L2 {
        dst,
        src,
        vlans: tags.to_vec(),
    };
    frames::frame(&l2, ethertype, payload)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_full(src, dst, protocol, &[], 0x4000, payload)
}

/// IPv4 with options (a multiple of 4 bytes) and the flags/fragment-offset word.
fn ipv4_full(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    options: &[u8],
    flags_frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let h = V4 {
        ttl: 64,
        ident: 0x1c46,
        df: flags_frag & 0x4000 != 0,
        ..V4::new(src, dst, protocol)
    };
    let fragment = Fragment {
        more: flags_frag & 0x2000 != 0,
        offset: (flags_frag & 0x1fff) << 3,
    };
    frames::ipv4_full(&h, options, fragment, payload)
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let h = V6 {
        hop_limit: 64,
        flow_label: 0,
        ..V6::new(src, dst, next_header)
    };
    frames::ipv6(&h, payload)
}

fn tcp_header(sport: u16, dport: u16, flags: u8, options: &[u8]) -> Tcp<'_> {
    Tcp {
        options,
        ..Tcp::new(sport, dport, flags)
    }
}

fn tcp4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let h = tcp_header(sport, dport, flags, options);
    frames::tcp_segment(Pseudo::V4(src, dst), &h, data)
}

fn tcp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let h = tcp_header(sport, dport, flags, options);
    frames::tcp_segment(Pseudo::V6(src, dst), &h, data)
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    frames::udp(Pseudo::V4(src, dst), sport, dport, data)
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    frames::udp(Pseudo::V6(src, dst), sport, dport, data)
}

/// ICMP: type, code, the 4-byte rest-of-header, data.
fn icmp(ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    frames::icmp_message(ty, code, rest, data)
}

fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    frames::icmpv6_message(src, dst, ty, code, rest, data)
}

// ---------------------------------------------------------------------------------------------
// Pipeline inputs (framing: see fuzz_targets/pipeline.rs)

const UPLINK: u8 = 0;
const INSIDE: u8 = 1;
const KERNEL: u8 = 2;
const IPIP: u8 = 0;
const GUE: u8 = 1;

/// One pipeline input: the generation flag, then (port, clock step d, frame) records.
fn conversation(generation: u8, frames: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![generation];
    for (port, d, frame) in frames {
        assert!(*port < 4 && *d < 64);
        out.push(port | (d << 2));
        out.extend_from_slice(&u16::try_from(frame.len()).unwrap().to_be_bytes());
        out.extend_from_slice(frame);
    }
    out
}

fn tcp_v4_frame(src: Ipv4Addr, sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let seg = tcp4(src, VIP4, sport, dport, flags, &[], data);
    eth(OUR_MAC, GW_MAC, &[], ETH_IPV4, &ipv4(src, VIP4, 6, &seg))
}

fn tcp_v6_frame(src: Ipv6Addr, sport: u16, dport: u16, flags: u8, data: &[u8]) -> Vec<u8> {
    let seg = tcp6(src, VIP6, sport, dport, flags, &[], data);
    eth(OUR_MAC, GW_MAC, &[], ETH_IPV6, &ipv6(src, VIP6, 6, &seg))
}

fn pipeline_inputs(packets: &[(&'static str, Vec<u8>)]) -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = packets
        .iter()
        .map(|(name, frame)| (*name, conversation(IPIP, &[(UPLINK, 0, frame.clone())])))
        .collect();

    let handshake = |src: Ipv4Addr, sport: u16, dport: u16| {
        vec![
            (UPLINK, 0, tcp_v4_frame(src, sport, dport, TCP_SYN, b"")),
            (UPLINK, 1, tcp_v4_frame(src, sport, dport, TCP_ACK, b"")),
            (
                UPLINK,
                1,
                tcp_v4_frame(src, sport, dport, TCP_ACK | TCP_PSH, b"POST /v1/chat"),
            ),
            (
                UPLINK,
                2,
                tcp_v4_frame(src, sport, dport, TCP_FIN | TCP_ACK, b""),
            ),
            (UPLINK, 1, tcp_v4_frame(src, sport, dport, TCP_ACK, b"")),
        ]
    };
    v.push((
        "flow_tcp_v4_ipip",
        conversation(IPIP, &handshake(CLIENT4, 40001, 443)),
    ));
    v.push((
        "flow_tcp_v4_gue",
        conversation(GUE, &handshake(CLIENT4, 40002, 80)),
    ));
    // Not in the lab region: the catch-all route, round robin, and the canary.
    let outsider = Ipv4Addr::new(192, 0, 2, 200);
    let mut many = Vec::new();
    for i in 0..12u16 {
        many.push((
            UPLINK,
            0,
            tcp_v4_frame(outsider, 50000 + i, 443, TCP_SYN, b""),
        ));
    }
    v.push(("flow_tcp_v4_many_sources_ports", conversation(IPIP, &many)));
    // A flow, then silence past every timeout, then its next packet (a non-SYN miss).
    let mut expiry = handshake(CLIENT4, 40003, 443);
    expiry.truncate(3);
    // Empty frames (dropped as truncated) only move the clock: 15 × 63² × 16 ms > 900 s.
    expiry.extend((0..15).map(|_| (UPLINK, 63, Vec::new())));
    expiry.push((
        UPLINK,
        0,
        tcp_v4_frame(CLIENT4, 40003, 443, TCP_ACK, b"more"),
    ));
    expiry.push((UPLINK, 0, tcp_v4_frame(CLIENT4, 40003, 443, TCP_RST, b"")));
    v.push(("flow_tcp_v4_expiry", conversation(IPIP, &expiry)));
    // ACL: 198.51.100.66 may not reach port 80, but may reach 443; 198.18/15 nothing.
    let denied = Ipv4Addr::new(198, 51, 100, 66);
    v.push((
        "flow_acl",
        conversation(
            IPIP,
            &[
                (UPLINK, 0, tcp_v4_frame(denied, 40004, 80, TCP_SYN, b"")),
                (UPLINK, 0, tcp_v4_frame(denied, 40004, 443, TCP_SYN, b"")),
                (
                    UPLINK,
                    0,
                    tcp_v4_frame(Ipv4Addr::new(198, 18, 0, 1), 40004, 443, TCP_SYN, b""),
                ),
            ],
        ),
    ));
    // The per-source new-flow limit (burst 20) and a flood of SYNs.
    let flood: Vec<_> = (0..48u16)
        .map(|i| (UPLINK, 0, tcp_v4_frame(CLIENT4, 1024 + i, 80, TCP_SYN, b"")))
        .collect();
    v.push(("flow_syn_flood", conversation(IPIP, &flood)));
    // A big segment: too big for the backend MTU after encapsulation → frag-needed.
    v.push((
        "flow_too_big_v4",
        conversation(
            IPIP,
            &[(
                UPLINK,
                0,
                tcp_v4_frame(CLIENT4, 40005, 443, TCP_ACK | TCP_PSH, &[0x41; 1460]),
            )],
        ),
    ));
    v.push((
        "flow_too_big_v6",
        conversation(
            GUE,
            &[(
                UPLINK,
                0,
                tcp_v6_frame(CLIENT6, 40006, 443, TCP_ACK | TCP_PSH, &[0x41; 1440]),
            )],
        ),
    ));
    // A live flow, then an ICMP frag-needed from a router quoting the backend's reply.
    let reply = ipv4(
        VIP4,
        CLIENT4,
        6,
        &tcp4(VIP4, CLIENT4, 443, 40007, TCP_ACK, &[], &[0; 8]),
    );
    let router = Ipv4Addr::new(198, 51, 100, 254);
    let frag_needed = eth(
        OUR_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(router, VIP4, 1, &icmp(3, 4, 1400, &reply[..28])),
    );
    v.push((
        "flow_icmp_error_steered_v4",
        conversation(
            IPIP,
            &[
                (UPLINK, 0, tcp_v4_frame(CLIENT4, 40007, 443, TCP_SYN, b"")),
                (UPLINK, 1, frag_needed),
            ],
        ),
    ));
    let tcp = tcp6(VIP6, CLIENT6, 443, 40008, TCP_ACK, &[], &[0; 16]);
    let quoted = ipv6(VIP6, CLIENT6, 6, &tcp);
    let router6 = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
    let too_big = icmpv6(router6, VIP6, 2, 0, 1400, &quoted);
    v.push((
        "flow_icmp_error_steered_v6",
        conversation(
            IPIP,
            &[
                (UPLINK, 0, tcp_v6_frame(CLIENT6, 40008, 443, TCP_SYN, b"")),
                (
                    UPLINK,
                    1,
                    eth(
                        OUR_MAC,
                        GW_MAC,
                        &[],
                        ETH_IPV6,
                        &ipv6(router6, VIP6, 58, &too_big),
                    ),
                ),
            ],
        ),
    ));
    // IPv6 flows: the strict lab route (least_conn) and the catch-all (Maglev), a port range.
    let outsider6 = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 7);
    v.push((
        "flow_tcp_v6",
        conversation(
            GUE,
            &[
                (UPLINK, 0, tcp_v6_frame(CLIENT6, 40009, 443, TCP_SYN, b"")),
                (
                    UPLINK,
                    1,
                    tcp_v6_frame(CLIENT6, 40009, 443, TCP_ACK, b"hello"),
                ),
                (
                    UPLINK,
                    0,
                    tcp_v6_frame(outsider6, 40010, 8042, TCP_SYN, b""),
                ),
                (
                    UPLINK,
                    0,
                    tcp_v6_frame(
                        Ipv6Addr::new(0x2001, 0xdb8, 1, 0xbad, 0, 0, 0, 1),
                        40011,
                        443,
                        TCP_SYN,
                        b"",
                    ),
                ),
            ],
        ),
    ));
    // Local traffic: ARP for us and for the VIP, ND, ping us and the VIP, on both interfaces.
    let arp_vip = eth(
        BROADCAST,
        CLIENT_MAC,
        &[],
        ETH_ARP,
        &arp(ArpOp::Request, CLIENT_MAC, OUR4, [0; 6], VIP4),
    );
    let inside_mac = [0x02, 0, 0, 0, 0, 0x02];
    let inside_arp = eth(
        BROADCAST,
        CLIENT_MAC,
        &[],
        ETH_ARP,
        &arp(
            ArpOp::Request,
            CLIENT_MAC,
            Ipv4Addr::new(10, 0, 0, 9),
            [0; 6],
            Ipv4Addr::new(10, 0, 0, 1),
        ),
    );
    let ping_us = eth(
        OUR_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(CLIENT4, OUR4, 1, &icmp(8, 0, 7, b"abc")),
    );
    let ping6_vip = eth(
        OUR_MAC,
        GW_MAC,
        &[],
        ETH_IPV6,
        &ipv6(CLIENT6, VIP6, 58, &icmpv6(CLIENT6, VIP6, 128, 0, 7, b"abc")),
    );
    let ssh_to_us = eth(
        OUR_MAC,
        GW_MAC,
        &[],
        ETH_IPV4,
        &ipv4(
            CLIENT4,
            OUR4,
            6,
            &tcp4(CLIENT4, OUR4, 40012, 22, TCP_SYN, &[], b""),
        ),
    );
    let from_kernel = eth(
        GW_MAC,
        OUR_MAC,
        &[],
        ETH_IPV4,
        &ipv4(
            OUR4,
            CLIENT4,
            6,
            &tcp4(OUR4, CLIENT4, 22, 40012, TCP_SYN | TCP_ACK, &[], b""),
        ),
    );
    let to_inside = {
        let f = tcp_v4_frame(CLIENT4, 40013, 443, TCP_SYN, b"");
        let mut f = f;
        f[..6].copy_from_slice(&inside_mac);
        f
    };
    let mut local: Vec<(u8, u8, Vec<u8>)> = packets
        .iter()
        .filter(|(name, _)| {
            name.starts_with("arp") || name.starts_with("icmpv6_neighbor") || name.contains("dad")
        })
        .map(|(_, f)| (UPLINK, 0, f.clone()))
        .collect();
    local.extend([
        (UPLINK, 0, arp_vip),
        (INSIDE, 0, inside_arp),
        (UPLINK, 0, ping_us),
        (UPLINK, 0, ping6_vip),
        (UPLINK, 0, ssh_to_us),
        (KERNEL, 0, from_kernel),
        (INSIDE, 0, to_inside),
        (3, 0, tcp_v4_frame(CLIENT4, 40014, 443, TCP_SYN, b"")),
    ]);
    v.push(("local_traffic", conversation(IPIP, &local)));
    // UDP services on both families, and UDP to the GUE port (never encapsulated twice).
    v.push((
        "flow_udp",
        conversation(
            GUE,
            &[
                (
                    UPLINK,
                    0,
                    eth(
                        OUR_MAC,
                        GW_MAC,
                        &[],
                        ETH_IPV4,
                        &ipv4(CLIENT4, VIP4, 17, &udp4(CLIENT4, VIP4, 50001, 443, b"quic")),
                    ),
                ),
                (
                    UPLINK,
                    1,
                    eth(
                        OUR_MAC,
                        GW_MAC,
                        &[],
                        ETH_IPV6,
                        &ipv6(CLIENT6, VIP6, 17, &udp6(CLIENT6, VIP6, 50002, 443, b"quic")),
                    ),
                ),
                (
                    UPLINK,
                    1,
                    eth(
                        OUR_MAC,
                        GW_MAC,
                        &[],
                        ETH_IPV4,
                        &ipv4(
                            CLIENT4,
                            VIP4,
                            17,
                            &udp4(CLIENT4, VIP4, 50003, 6080, b"gue?"),
                        ),
                    ),
                ),
                (
                    UPLINK,
                    40,
                    eth(
                        OUR_MAC,
                        GW_MAC,
                        &[],
                        ETH_IPV4,
                        &ipv4(
                            CLIENT4,
                            VIP4,
                            17,
                            &udp4(CLIENT4, VIP4, 50001, 443, b"again"),
                        ),
                    ),
                ),
            ],
        ),
    ));
    v.sort_by_key(|(name, _)| *name);
    v
}

// ---------------------------------------------------------------------------------------------
// Ring programs (opcodes: see fuzz_targets/ring_messages.rs)

const OP_INSTALL: u8 = 0;
const OP_INSTALL_FIELDS: u8 = 2;
const OP_BLOB_BYTES: u8 = 3;
const OP_BLOB_CORRUPT: u8 = 4;
const OP_BLOB_REMOVE: u8 = 5;
const OP_C2D_SLOT_RAW: u8 = 6;
const OP_C2D_SLOT_INSTALL: u8 = 7;
const OP_C2D_HEAD: u8 = 8;
const OP_C2D_TAIL: u8 = 9;
const OP_D2C_HEAD: u8 = 10;
const OP_D2C_TAIL: u8 = 11;
const OP_D2C_SLOT_RAW: u8 = 12;
const OP_POLL: u8 = 13;
const OP_DRAIN: u8 = 14;
const OP_RESTART: u8 = 15;

/// A ring message as the 64 bytes of its slot.
fn raw_message(m: &Message, seq: u64) -> Vec<u8> {
    let raw = m.encode(seq);
    let mut b = Vec::new();
    b.extend_from_slice(&raw.kind.to_le_bytes());
    b.extend_from_slice(&raw.len.to_le_bytes());
    b.extend_from_slice(&raw.seq.to_le_bytes());
    b.extend_from_slice(&raw.payload);
    assert_eq!(b.len(), 64);
    b
}

fn ring_programs() -> Vec<(&'static str, Vec<u8>)> {
    let install = Message::Install(Install {
        generation: 5,
        size: 768,
        checksum: 0x0123_4567_89ab_cdef,
    });
    let messages = [
        ("install", install),
        (
            "ack",
            Message::Ack {
                worker: 1,
                generation: 5,
            },
        ),
        ("live", Message::Live { generation: 5 }),
        ("rejected", Message::rejected(6, RejectReason::BadChecksum)),
        (
            "event",
            Message::Event {
                kind: 1,
                a: 2,
                b: 3,
            },
        ),
    ];
    let poll_all = [OP_POLL, 3];
    let mut programs: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "install_poll_ack",
            [&[OP_INSTALL, 5][..], &poll_all, &poll_all, &[OP_DRAIN]].concat(),
        ),
        (
            "install_stale_repeat",
            [
                &[OP_INSTALL, 7][..],
                &poll_all,
                &poll_all,
                &[OP_INSTALL, 7, OP_INSTALL, 3],
                &poll_all,
                &[OP_INSTALL, 9, OP_POLL, 1, OP_POLL, 2, OP_DRAIN],
            ]
            .concat(),
        ),
        (
            "bad_blobs",
            [
                &[OP_BLOB_BYTES, 4, 2][..],
                b"SWYDGEN\0\x01\0\0\0\xc0\x02\0\0",
                &[OP_INSTALL_FIELDS, 4, 12],
                &7u64.to_le_bytes(),
                &[OP_POLL, 0],
                &[
                    OP_BLOB_CORRUPT,
                    8,
                    0x00,
                    0x03,
                    0x40,
                    1,
                    OP_INSTALL_FIELDS,
                    8,
                    12,
                ],
                &0u64.to_le_bytes(),
                &poll_all,
                &[OP_BLOB_CORRUPT, 9, 0x10, 0x00, 0x01, 0, OP_POLL, 0],
                &[
                    OP_INSTALL,
                    10,
                    OP_BLOB_REMOVE,
                    10,
                    OP_POLL,
                    3,
                    OP_INSTALL_FIELDS,
                    11,
                    0,
                ],
                &u64::MAX.to_le_bytes(),
                &poll_all,
                &[OP_DRAIN],
            ]
            .concat(),
        ),
        (
            "hostile_indices",
            [
                &[OP_INSTALL, 5][..],
                &poll_all,
                &[OP_C2D_HEAD, 1, 0x00, 0x02],
                &poll_all,
                &[OP_INSTALL, 6, OP_C2D_TAIL, 3, 0],
                &poll_all,
                &[OP_INSTALL, 7, OP_D2C_TAIL, 0],
                &0x8000_0000_0000_0000u64.to_le_bytes(),
                &poll_all,
                &[OP_D2C_HEAD, 2, 5, 0, OP_DRAIN, OP_INSTALL, 8],
                &poll_all,
                &[OP_DRAIN],
            ]
            .concat(),
        ),
        (
            "hostile_slots",
            [
                &[OP_INSTALL, 5][..],
                &poll_all,
                &[OP_C2D_SLOT_INSTALL, 1, 0, 6, 0, 3, 0, 0, 0, 0, 0, 0],
                &0u64.to_le_bytes(),
                &[OP_C2D_HEAD, 1, 1, 0],
                &poll_all,
                &[OP_C2D_SLOT_RAW, 2],
                &raw_message(&Message::Live { generation: 9 }, 2),
                &[OP_C2D_HEAD, 1, 1, 0],
                &poll_all,
                &[OP_D2C_SLOT_RAW, 0, 0],
                &raw_message(&install, 0),
                &[OP_D2C_HEAD, 1, 1, 0, OP_DRAIN],
            ]
            .concat(),
        ),
        (
            "restarts",
            [
                &[OP_INSTALL, 5][..],
                &poll_all,
                &[OP_RESTART, 0],
                &poll_all,
                &[
                    OP_INSTALL, 6, OP_RESTART, 1, 6, OP_POLL, 3, OP_RESTART, 1, 200, OP_RESTART, 0,
                ],
                &poll_all,
                &[OP_RESTART, 2, OP_DRAIN],
            ]
            .concat(),
        ),
    ];
    // Regression: a third party sets the control→data head to the producer's head minus the
    // capacity (0 − 256). The consumer resynchronises its tail to it; the producer then sees
    // exactly `capacity` messages in flight (Full, not BadIndices), never restates its head, and
    // the consumer sees an empty ring: nothing is delivered again (found by this target).
    let mut deadlock = vec![OP_C2D_HEAD, 0];
    deadlock.extend_from_slice(&0u64.wrapping_sub(256).to_le_bytes());
    deadlock.extend_from_slice(&[OP_POLL, 0]);
    programs.push(("regression_ring_full_deadlock", deadlock));
    let mut v = Vec::new();
    for (name, m) in &messages {
        v.push((*name, raw_message(m, 3)));
    }
    for (name, program) in programs {
        // The first 64 bytes are also read as a raw message: start with a real one.
        v.push((name, [raw_message(&install, 0), program].concat()));
    }
    v.sort_by_key(|(name, _)| *name);
    v
}

// ---------------------------------------------------------------------------------------------
// Generations

fn generations() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = switchyard_fuzz::generations()
        .into_iter()
        .map(|(name, g)| {
            let blob = g.encode();
            assert_eq!(Generation::decode(&blob).as_ref(), Ok(&g), "{name}");
            (name, blob)
        })
        .collect();
    // Template mode of the target: template index, then (offset u24, byte) patches.
    v.push(("template_small_unpatched", vec![1]));
    v.push((
        "template_small_gue_v6_pool_count",
        vec![2, 0, 0x02, 0x40, 0x09],
    ));
    v.push((
        "template_minimal_lpm_patch",
        vec![3, 0, 0x10, 0x00, 0x81, 0, 0x10, 0x01, 0x80],
    ));
    v.push(("template_vip_lpm_v6_unpatched", vec![4]));
    v.sort_by_key(|(name, _)| *name);
    v
}
