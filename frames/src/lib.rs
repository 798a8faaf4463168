//! The one source of Switchyard's test traffic: Ethernet frames built from first principles with
//! the data plane's wire module (`Repr::emit` and setters) — never by calling pipeline code —
//! and the pcap files that carry them.
//!
//! Used by the pipeline fixtures and integration tests (client frames in, the frames the
//! pipeline must send out), the fuzz seed corpus (`fuzz/examples/seed_corpus.rs`) and the
//! benchmark's captures (`bench/data`). Defaults (TTL 57, ident 0x1234, flow label 0x12345, TCP
//! sequence 0x01020304) are test values; every field a caller needs to choose is a field of
//! [`V4`], [`V6`] or [`Tcp`].

use std::net::{Ipv4Addr, Ipv6Addr};

pub mod pcap;

use switchyard::wire::{
    self, ArpOp, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, EthernetRepr,
    GuePacket, GueRepr, IcmpPacket, IcmpRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpFlags, TcpPacket, UdpPacket, UdpRepr,
};

/// The appliance's uplink interface MAC (port 0).
pub const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The uplink gateway: where client traffic comes from and replies go to.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// The backend interface MAC (port 1).
pub const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
/// The backend-side gateway MAC: every encapsulated packet goes to it.
pub const BACKEND_GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0xfe];
/// Some host on the uplink segment.
pub const HOST_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x07];

pub const SYN: u8 = TcpFlags::SYN.0;
pub const ACK: u8 = TcpFlags::ACK.0;
pub const PSH_ACK: u8 = TcpFlags::PSH.0 | TcpFlags::ACK.0;
pub const RST: u8 = TcpFlags::RST.0;
pub const FIN_ACK: u8 = TcpFlags::FIN.0 | TcpFlags::ACK.0;

/// The L2 header of a frame: addresses and VLAN tags `(tpid, tci)`, outermost first.
#[derive(Clone, Debug)]
pub struct L2 {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub vlans: Vec<(u16, u16)>,
}

impl L2 {
    /// Router → appliance uplink, untagged.
    pub fn inbound() -> Self {
        Self {
            dst: UPLINK_MAC,
            src: ROUTER_MAC,
            vlans: Vec::new(),
        }
    }

    /// Appliance → router (a reply), with the same tags.
    pub fn reply_of(&self) -> Self {
        Self {
            dst: self.src,
            src: self.dst,
            vlans: self.vlans.clone(),
        }
    }

    pub fn tagged(mut self, vlans: &[(u16, u16)]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    pub fn to(mut self, dst: [u8; 6]) -> Self {
        self.dst = dst;
        self
    }

    pub fn from(mut self, src: [u8; 6]) -> Self {
        self.src = src;
        self
    }
}

/// An Ethernet frame around `payload`.
pub fn frame(l2: &L2, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let tags = l2.vlans.len() * 4;
    let mut out = vec![0u8; wire::ethernet::HEADER_LEN + tags + payload.len()];
    let first_type = l2.vlans.first().map_or(ethertype, |v| v.0);
    EthernetRepr {
        src_addr: EthernetAddress(l2.src),
        dst_addr: EthernetAddress(l2.dst),
        ethertype: EtherType(first_type),
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
    // Tag i: its TCI, then the type of what follows (next tag's TPID, or the ethertype).
    for (i, &(_, tci)) in l2.vlans.iter().enumerate() {
        let at = 14 + 4 * i;
        let next = l2.vlans.get(i + 1).map_or(ethertype, |v| v.0);
        out[at..at + 2].copy_from_slice(&tci.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&next.to_be_bytes());
    }
    out[14 + tags..].copy_from_slice(payload);
    out
}

pub const IPV4: u16 = 0x0800;
pub const IPV6: u16 = 0x86dd;
pub const ARP: u16 = 0x0806;

/// IPv4 header fields for a test packet.
#[derive(Clone, Copy, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub df: bool,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: 57,
            tos: 0,
            ident: 0x1234,
            df: true,
        }
    }
}

/// An IPv4 packet (20-byte header with checksum) around `payload`.
pub fn ipv4(h: &V4, payload: &[u8]) -> Vec<u8> {
    ipv4_full(h, &[], Fragment::default(), payload)
}

/// Where an IPv4 packet sits in its datagram: more fragments follow; offset in bytes (a
/// multiple of 8).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fragment {
    pub more: bool,
    pub offset: u16,
}

/// An IPv4 packet with header `options` (a multiple of 4 bytes) and fragment fields.
pub fn ipv4_full(h: &V4, options: &[u8], fragment: Fragment, payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "IPv4 options come in 4-byte words");
    let header_len = 20 + options.len();
    let repr = Ipv4Repr {
        src_addr: h.src,
        dst_addr: h.dst,
        protocol: IpProtocol(h.proto),
        payload_len: options.len() + payload.len(),
        ttl: h.ttl,
        tos: h.tos,
        ident: h.ident,
        dont_frag: h.df,
    };
    let mut out = vec![0u8; header_len + payload.len()];
    out[20..header_len].copy_from_slice(options);
    out[header_len..].copy_from_slice(payload);
    let mut p = Ipv4Packet::new_unchecked(&mut out[..]);
    repr.emit(&mut p);
    p.set_header_len(u8::try_from(header_len).expect("at most 40 bytes of options"));
    p.set_more_frags(fragment.more);
    p.set_frag_offset(fragment.offset);
    p.fill_checksum();
    out
}

/// IPv6 header fields for a test packet.
#[derive(Clone, Copy, Debug)]
pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next: u8,
    pub hop_limit: u8,
    pub tc: u8,
    pub flow_label: u32,
}

impl V6 {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> Self {
        Self {
            src,
            dst,
            next,
            hop_limit: 57,
            tc: 0,
            flow_label: 0x12345,
        }
    }
}

/// An IPv6 packet around `payload`.
pub fn ipv6(h: &V6, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: h.src,
        dst_addr: h.dst,
        next_header: IpProtocol(h.next),
        payload_len: payload.len(),
        hop_limit: h.hop_limit,
        traffic_class: h.tc,
        flow_label: h.flow_label,
    };
    let mut out = vec![0u8; 40 + payload.len()];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
    out[40..].copy_from_slice(payload);
    out
}

/// Addresses for an L4 pseudo-header.
#[derive(Clone, Copy, Debug)]
pub enum Pseudo {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

/// TCP header fields for a test segment.
#[derive(Clone, Copy, Debug)]
pub struct Tcp<'a> {
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Header options, a multiple of 4 bytes.
    pub options: &'a [u8],
}

impl Tcp<'_> {
    /// Sequence 0x01020304, acknowledgement 0x0a0b0c0d when ACK is set, window 64240.
    pub fn new(sport: u16, dport: u16, flags: u8) -> Self {
        Self {
            sport,
            dport,
            flags,
            seq: 0x0102_0304,
            ack: if flags & ACK != 0 { 0x0a0b_0c0d } else { 0 },
            window: 64240,
            options: &[],
        }
    }
}

/// A TCP segment (20-byte header) with a correct checksum.
pub fn tcp(p: Pseudo, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_segment(p, &Tcp::new(sport, dport, flags), payload)
}

/// A TCP segment with the header `h` (and its options) and a correct checksum.
pub fn tcp_segment(p: Pseudo, h: &Tcp, payload: &[u8]) -> Vec<u8> {
    assert_eq!(h.options.len() % 4, 0, "TCP options come in 4-byte words");
    let header_len = 20 + h.options.len();
    let mut out = vec![0u8; header_len + payload.len()];
    out[20..header_len].copy_from_slice(h.options);
    out[header_len..].copy_from_slice(payload);
    let mut t = TcpPacket::new_unchecked(&mut out[..]);
    t.set_src_port(h.sport);
    t.set_dst_port(h.dport);
    t.set_seq_number(h.seq);
    t.set_ack_number(h.ack);
    t.set_header_len(u8::try_from(header_len).expect("at most 40 bytes of options"));
    t.set_flags(TcpFlags(h.flags));
    t.set_window_len(h.window);
    t.set_urgent_at(0);
    match p {
        Pseudo::V4(s, d) => t.fill_checksum_v4(&s, &d),
        Pseudo::V6(s, d) => t.fill_checksum_v6(&s, &d),
    }
    out
}

/// A UDP datagram with a correct checksum.
pub fn udp(p: Pseudo, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 8 + payload.len()];
    UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload_len: payload.len(),
    }
    .emit(&mut UdpPacket::new_unchecked(&mut out[..]));
    out[8..].copy_from_slice(payload);
    let mut u = UdpPacket::new_unchecked(&mut out[..]);
    match p {
        Pseudo::V4(s, d) => u.fill_checksum_v4(&s, &d),
        Pseudo::V6(s, d) => u.fill_checksum_v6(&s, &d),
    }
    out
}

/// An ICMPv4 message.
pub fn icmp(repr: &IcmpRepr) -> Vec<u8> {
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut IcmpPacket::new_unchecked(&mut out[..]));
    out
}

/// Any ICMPv4 message: type, code, the 4-byte rest of the header, data; with its checksum.
pub fn icmp_message(ty: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut out = vec![ty, code, 0, 0];
    out.extend_from_slice(&rest.to_be_bytes());
    out.extend_from_slice(data);
    IcmpPacket::new_unchecked(&mut out[..]).fill_checksum();
    out
}

/// Any ICMPv6 message from `src` to `dst`, like [`icmp_message`].
pub fn icmpv6_message(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    code: u8,
    rest: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut out = vec![ty, code, 0, 0];
    out.extend_from_slice(&rest.to_be_bytes());
    out.extend_from_slice(data);
    Icmpv6Packet::new_unchecked(&mut out[..]).fill_checksum(&src, &dst);
    out
}

/// An ICMPv6 message from `src` to `dst`.
pub fn icmpv6(src: Ipv6Addr, dst: Ipv6Addr, repr: &Icmpv6Repr) -> Vec<u8> {
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(&mut out[..]));
    out
}

/// An ARP packet.
pub fn arp(op: ArpOp, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut out = vec![0u8; wire::arp::PACKET_LEN];
    ArpRepr {
        operation: op,
        sender_hardware_addr: EthernetAddress(sha),
        sender_protocol_addr: spa,
        target_hardware_addr: EthernetAddress(tha),
        target_protocol_addr: tpa,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut out[..]));
    out
}

/// A client's TCP packet to a VIP (router → uplink), optionally with a payload.
pub fn tcp4_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let seg = tcp(Pseudo::V4(src, dst), sport, dport, flags, payload);
    frame(&L2::inbound(), IPV4, &ipv4(&V4::new(src, dst, 6), &seg))
}

/// A client's IPv6 TCP packet to a VIP.
pub fn tcp6_frame(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let seg = tcp(Pseudo::V6(src, dst), sport, dport, flags, payload);
    frame(&L2::inbound(), IPV6, &ipv6(&V6::new(src, dst, 6), &seg))
}

/// A client's UDP datagram.
pub fn udp4_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let d = udp(Pseudo::V4(src, dst), sport, dport, payload);
    frame(&L2::inbound(), IPV4, &ipv4(&V4::new(src, dst, 17), &d))
}

/// A client's IPv6 UDP datagram.
pub fn udp6_frame(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let d = udp(Pseudo::V6(src, dst), sport, dport, payload);
    frame(&L2::inbound(), IPV6, &ipv6(&V6::new(src, dst, 17), &d))
}

/// The L3 packet of a frame built by these helpers (after `tags` VLAN tags).
pub fn l3_of(frame: &[u8], tags: usize) -> Vec<u8> {
    frame[14 + 4 * tags..].to_vec()
}

/// Where an encapsulated packet goes and how it is wrapped.
#[derive(Clone, Copy, Debug)]
pub struct Tunnel {
    /// GUE (with this UDP port) or IPIP.
    pub gue: Option<u16>,
    /// Outer IPv4 source prefix and length; outer IPv6 source prefix and length.
    pub src_v4: (Ipv4Addr, u8),
    pub src_v6: (Ipv6Addr, u8),
}

/// The backend's address: IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// The frame the appliance must send for `inner` (an IP packet, IPv4 if its version nibble is
/// 4) encapsulated to `backend`, from first principles: outer source = prefix | (hash & host
/// bits), TTL 64, ToS copied, DF, id 0, flow label = hash & 0xfffff; GUE source port
/// 0xC000 | hash & 0x3fff; Ethernet from the backend interface to its gateway.
pub fn encapsulated(t: &Tunnel, inner: &[u8], hash: u32, backend: Addr) -> Vec<u8> {
    let inner_v6 = inner[0] >> 4 == 6;
    let inner_proto: u8 = if inner_v6 { 41 } else { 4 };
    let tos = if inner_v6 {
        (inner[0] << 4) | (inner[1] >> 4)
    } else {
        inner[1]
    };
    let payload = match t.gue {
        None => inner.to_vec(),
        Some(port) => {
            let mut d = vec![0u8; 12 + inner.len()];
            UdpRepr {
                src_port: 0xc000 | u16::try_from(hash & 0x3fff).unwrap(),
                dst_port: port,
                payload_len: 4 + inner.len(),
            }
            .emit(&mut UdpPacket::new_unchecked(&mut d[..8]));
            GueRepr::Data {
                protocol: IpProtocol(inner_proto),
            }
            .emit(&mut GuePacket::new_unchecked(&mut d[8..12]));
            d[12..].copy_from_slice(inner);
            d
        }
    };
    let next = if t.gue.is_some() { 17 } else { inner_proto };
    let l2 = L2 {
        dst: BACKEND_GW_MAC,
        src: BACKEND_MAC,
        vlans: Vec::new(),
    };
    match backend {
        Addr::V4(dst) => {
            let host = u32::MAX.checked_shr(u32::from(t.src_v4.1)).unwrap_or(0);
            let src = Ipv4Addr::from((u32::from(t.src_v4.0) & !host) | (hash & host));
            let h = V4 {
                src,
                dst,
                proto: next,
                ttl: 64,
                tos,
                ident: 0,
                df: true,
            };
            frame(&l2, IPV4, &ipv4(&h, &payload))
        }
        Addr::V6(dst) => {
            let host = u128::MAX.checked_shr(u32::from(t.src_v6.1)).unwrap_or(0);
            let src = Ipv6Addr::from((u128::from(t.src_v6.0) & !host) | (u128::from(hash) & host));
            let h = V6 {
                src,
                dst,
                next,
                hop_limit: 64,
                tc: tos,
                flow_label: hash & 0xf_ffff,
            };
            let mut packet = ipv6(&h, &payload);
            if t.gue.is_some() {
                UdpPacket::new_unchecked(&mut packet[40..]).fill_checksum_v6(&src, &dst);
            }
            frame(&l2, IPV6, &packet)
        }
    }
}

/// The ICMP frag-needed the appliance must send back for the client packet `inner` (IPv4), sent
/// from `vip` to `client`, quoting up to 548 bytes.
pub fn frag_needed(l2: &L2, inner: &[u8], mtu: u16, vip: Ipv4Addr, client: Ipv4Addr) -> Vec<u8> {
    let quote = &inner[..inner.len().min(548)];
    let msg = icmp(&IcmpRepr::DstUnreachable {
        code: wire::icmp::unreachable::FRAG_NEEDED,
        next_hop_mtu: mtu,
        quote,
    });
    let h = V4 {
        src: vip,
        dst: client,
        proto: 1,
        ttl: 64,
        tos: 0,
        ident: 0,
        df: false,
    };
    frame(&l2.reply_of(), IPV4, &ipv4(&h, &msg))
}

/// The ICMPv6 packet-too-big the appliance must send back for `inner` (IPv6).
pub fn packet_too_big(l2: &L2, inner: &[u8], mtu: u32, vip: Ipv6Addr, client: Ipv6Addr) -> Vec<u8> {
    let msg = icmpv6(vip, client, &Icmpv6Repr::packet_too_big(mtu, inner));
    let h = V6 {
        src: vip,
        dst: client,
        next: 58,
        hop_limit: 64,
        tc: 0,
        flow_label: 0,
    };
    frame(&l2.reply_of(), IPV6, &ipv6(&h, &msg))
}
