//! Every wire view over untrusted bytes: the `new_checked` guarantee of `dataplane/wire/`.
//!
//! The input is an Ethernet frame. It is walked the way the pipeline reads a packet (VLAN tags,
//! ARP, IPv4 with options, IPv6 with its extension-header chain, TCP, UDP, GUE and the IP packet
//! it carries, IPIP, ICMP and ICMPv6 with their quoted packets and neighbour-discovery options),
//! calling every accessor of every view that `new_checked` accepted. The same bytes are also fed
//! to each view on its own, so each parser sees inputs no Ethernet header leads to.
//!
//! Beyond "never panics", a few properties that hold for any bytes are asserted:
//! - a `Repr` that `parse` returned, emitted into a buffer of `buffer_len()` (plus the payload
//!   the length fields promise), is accepted by `new_checked` and parses back equal;
//! - after `fill_checksum*`, the matching `verify_checksum*` holds;
//! - `ipv4::Packet::decrement_ttl` keeps a verifying header checksum verifying.
#![no_main]

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use switchyard::wire::{
    arp, ethernet, gue, icmp, icmpv6, ipv4, ipv6, tcp, udp, EtherType, IpProtocol,
};

/// IP-in-IP and GUE nesting we follow; deeper is as uninteresting to the parsers as it is rare.
const MAX_DEPTH: usize = 3;

fuzz_target!(|data: &[u8]| {
    frame(data);
    for view in VIEWS {
        view(data);
    }
    // The same bytes as the inside of an ICMP error: a quoted datagram.
    if let Ok(q) = icmp::EmbeddedIpv4::new_checked(data) {
        embedded_v4(&q);
    }
    if let Ok(q) = icmpv6::EmbeddedIpv6::new_checked(data) {
        embedded_v6(&q);
    }
    let _ = black_box(ipv6::walk_ext_headers(
        IpProtocol(data.first().copied().unwrap_or(0)),
        data,
        1,
    ));
});

/// Each view on the raw bytes, without a header in front.
const VIEWS: [fn(&[u8]); 9] = [
    |d| arp_packet(d),
    |d| ip(d, 0),
    |d| tcp_segment(d, &Addrs::V4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST)),
    |d| tcp_segment(d, &Addrs::V6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED)),
    |d| udp_datagram(d, &Addrs::V4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST), 0),
    |d| udp_datagram(d, &Addrs::V6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED), 0),
    |d| icmp_message(d),
    |d| icmpv6_message(d, &Ipv6Addr::LOCALHOST, &Ipv6Addr::UNSPECIFIED),
    |d| gue_message(d, 0),
];

/// The addresses an L4 checksum's pseudo-header covers.
enum Addrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn frame(data: &[u8]) {
    let Ok(frame) = ethernet::Frame::new_checked(data) else {
        return;
    };
    black_box((
        frame.dst_addr(),
        frame.src_addr(),
        frame.ethertype(),
        frame.payload(),
    ));
    let mac = frame.src_addr();
    black_box((
        mac.is_broadcast(),
        mac.is_multicast(),
        mac.is_unicast(),
        mac.is_local(),
        mac.to_string(),
        frame.ethertype().to_string(),
    ));

    let repr = ethernet::Repr::parse(&frame);
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
    let back = ethernet::Frame::new_checked(&out[..]).expect("emitted Ethernet header");
    assert_eq!(ethernet::Repr::parse(&back), repr);

    let Ok(l2) = frame.parse_l2() else {
        return;
    };
    assert!(l2.vlan_tags().len() <= ethernet::MAX_VLAN_TAGS);
    for tag in l2.vlan_tags() {
        black_box((tag.vid(), tag.pcp(), tag.dei()));
    }
    black_box((l2.outer_vlan(), l2.inner_vlan()));
    let l3 = frame.l3_payload(&l2);
    match l2.ethertype {
        EtherType::ARP => arp_packet(l3),
        EtherType::IPV4 | EtherType::IPV6 => ip(l3, 0),
        _ => {}
    }
}

fn arp_packet(data: &[u8]) {
    let Ok(p) = arp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.hardware_type(),
        p.protocol_type(),
        p.hardware_len(),
        p.protocol_len(),
        p.operation(),
        p.sender_hardware_addr(),
        p.sender_protocol_addr(),
        p.target_hardware_addr(),
        p.target_protocol_addr(),
    ));
    let Ok(repr) = arp::Repr::parse(&p) else {
        return;
    };
    for r in [
        repr,
        repr.reply(ethernet::EthernetAddress([2, 0, 0, 0, 0, 1])),
    ] {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
        let back = arp::Packet::new_checked(&out[..]).expect("emitted ARP packet");
        assert_eq!(arp::Repr::parse(&back), Ok(r));
    }
}

/// An IPv4 or IPv6 packet, by its version nibble.
fn ip(data: &[u8], depth: usize) {
    match data.first().map(|b| b >> 4) {
        Some(4) => ipv4_packet(data, depth),
        Some(6) => ipv6_packet(data, depth),
        _ => {
            // Both views must refuse it; make them say why.
            assert!(ipv4::Packet::new_checked(data).is_err());
            assert!(ipv6::Packet::new_checked(data).is_err());
        }
    }
}

fn ipv4_packet(data: &[u8], depth: usize) {
    let Ok(p) = ipv4::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.version(),
        p.header_len(),
        p.tos(),
        p.dscp(),
        p.ecn(),
        p.total_len(),
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
        p.frag_offset(),
        p.is_fragment(),
        p.has_options(),
        p.ttl(),
        p.protocol(),
        p.checksum(),
    ));
    black_box((
        p.header(),
        p.options(),
        p.payload(),
        p.protocol().to_string(),
    ));
    let (src, dst) = (p.src_addr(), p.dst_addr());
    let verifies = p.verify_checksum();

    // Checksum maintenance on a copy.
    let mut copy = data.to_vec();
    let mut m = ipv4::Packet::new_unchecked(&mut copy[..]);
    black_box(m.decrement_ttl());
    if verifies {
        assert!(m.verify_checksum(), "decrement_ttl broke a good checksum");
    }
    m.fill_checksum();
    assert!(m.verify_checksum(), "fill_checksum does not verify");

    match ipv4::Repr::parse(&p) {
        Ok(repr) => {
            assert!(verifies);
            let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
            let back = ipv4::Packet::new_checked(&out[..]).expect("emitted IPv4 header");
            assert!(back.verify_checksum());
            assert_eq!(ipv4::Repr::parse(&back), Ok(repr));
        }
        Err(e) => assert!(!verifies, "{e}"),
    }

    if p.frag_offset() != 0 {
        return; // no L4 header in a non-first fragment
    }
    l4(p.protocol(), p.payload(), &Addrs::V4(src, dst), depth);
}

fn ipv6_packet(data: &[u8], depth: usize) {
    let Ok(p) = ipv6::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.version(),
        p.traffic_class(),
        p.dscp(),
        p.ecn(),
        p.flow_label(),
        p.payload_len(),
        p.next_header(),
        p.hop_limit(),
        p.packet(),
        p.payload(),
    ));
    let (src, dst) = (p.src_addr(), p.dst_addr());
    black_box(p.pseudo_header(IpProtocol::TCP, 20));

    let repr = ipv6::Repr::parse(&p);
    let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
    let back = ipv6::Packet::new_checked(&out[..]).expect("emitted IPv6 header");
    assert_eq!(ipv6::Repr::parse(&back), repr);

    let Ok(upper) = p.upper_layer() else {
        return;
    };
    assert!(upper.offset >= ipv6::HEADER_LEN && upper.offset <= p.packet().len());
    if let Some(frag) = upper.fragment {
        black_box((frag.is_first(), frag.is_atomic(), frag.ident));
    }
    let payload = p.upper_layer_payload(&upper);
    if upper.has_header() {
        l4(upper.protocol, payload, &Addrs::V6(src, dst), depth);
    }
}

fn l4(protocol: IpProtocol, data: &[u8], addrs: &Addrs, depth: usize) {
    match (protocol, addrs) {
        (IpProtocol::TCP, _) => tcp_segment(data, addrs),
        (IpProtocol::UDP, _) => udp_datagram(data, addrs, depth),
        (IpProtocol::ICMP, Addrs::V4(..)) => icmp_message(data),
        (IpProtocol::ICMPV6, Addrs::V6(src, dst)) => icmpv6_message(data, src, dst),
        (IpProtocol::IPV4 | IpProtocol::IPV6, _) if depth < MAX_DEPTH => ip(data, depth + 1),
        _ => {}
    }
}

fn tcp_segment(data: &[u8], addrs: &Addrs) {
    let Ok(p) = tcp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.src_port(),
        p.dst_port(),
        p.seq_number(),
        p.ack_number(),
        p.header_len(),
        p.flags(),
        p.flags_are_valid(),
        p.fin(),
        p.syn(),
        p.rst(),
        p.psh(),
        p.ack(),
        p.urg(),
    ));
    black_box((
        p.ece(),
        p.cwr(),
        p.is_syn_only(),
        p.window_len(),
        p.checksum(),
        p.urgent_at(),
        p.options(),
        p.payload(),
        p.flags().contains(tcp::Flags::SYN),
        p.flags().is_valid(),
    ));
    let mut copy = data.to_vec();
    let mut m = tcp::Packet::new_unchecked(&mut copy[..]);
    match addrs {
        Addrs::V4(src, dst) => {
            black_box(p.verify_checksum_v4(src, dst));
            m.fill_checksum_v4(src, dst);
            assert!(m.verify_checksum_v4(src, dst), "TCP/IPv4 fill_checksum");
        }
        Addrs::V6(src, dst) => {
            black_box(p.verify_checksum_v6(src, dst));
            m.fill_checksum_v6(src, dst);
            assert!(m.verify_checksum_v6(src, dst), "TCP/IPv6 fill_checksum");
        }
    }
}

fn udp_datagram(data: &[u8], addrs: &Addrs, depth: usize) {
    let Ok(p) = udp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.src_port(),
        p.dst_port(),
        p.len(),
        p.checksum(),
        p.datagram(),
        p.payload(),
    ));
    let mut copy = data.to_vec();
    let mut m = udp::Packet::new_unchecked(&mut copy[..]);
    match addrs {
        Addrs::V4(src, dst) => {
            black_box(p.verify_checksum_v4(src, dst));
            m.fill_checksum_v4(src, dst);
            assert!(m.verify_checksum_v4(src, dst), "UDP/IPv4 fill_checksum");
        }
        Addrs::V6(src, dst) => {
            black_box(p.verify_checksum_v6(src, dst));
            m.fill_checksum_v6(src, dst);
            assert!(m.verify_checksum_v6(src, dst), "UDP/IPv6 fill_checksum");
        }
    }

    let repr = udp::Repr::parse(&p);
    let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
    repr.emit(&mut udp::Packet::new_unchecked(&mut out[..]));
    let back = udp::Packet::new_checked(&out[..]).expect("emitted UDP header");
    assert_eq!(udp::Repr::parse(&back), repr);

    // Any UDP payload may be GUE: the port is configurable (`Config::gue_port`).
    gue_message(p.payload(), depth);
}

fn gue_message(data: &[u8], depth: usize) {
    let Ok(p) = gue::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.version(),
        p.is_control(),
        p.hlen(),
        p.header_len(),
        p.proto_ctype(),
        p.protocol(),
        p.flags(),
        p.extensions(),
    ));
    let repr = gue::Repr::parse(&p);
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut gue::Packet::new_unchecked(&mut out[..]));
    let back = gue::Packet::new_checked(&out[..]).expect("emitted GUE header");
    assert_eq!(gue::Repr::parse(&back), repr);

    if let gue::Repr::Data {
        protocol: IpProtocol::IPV4 | IpProtocol::IPV6,
    } = repr
    {
        if depth < MAX_DEPTH {
            ip(p.payload(), depth + 1);
        }
    }
}

fn icmp_message(data: &[u8]) {
    let Ok(p) = icmp::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.msg_type(),
        p.msg_code(),
        p.checksum(),
        p.echo_ident(),
        p.echo_seq_no(),
        p.next_hop_mtu(),
        p.is_error(),
        p.is_frag_needed(),
        p.data(),
        p.verify_checksum(),
    ));
    if p.is_error() {
        if let Ok(q) = p.embedded() {
            embedded_v4(&q);
        }
    }
    let mut copy = data.to_vec();
    let mut m = icmp::Packet::new_unchecked(&mut copy[..]);
    m.fill_checksum();
    assert!(m.verify_checksum(), "ICMP fill_checksum");
    m.convert_to_echo_reply();
    black_box(m.verify_checksum());

    let Ok(repr) = icmp::Repr::parse(&p) else {
        return;
    };
    let reply = repr.echo_reply();
    for r in std::iter::once(repr).chain(reply) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut icmp::Packet::new_unchecked(&mut out[..]));
        let back = icmp::Packet::new_checked(&out[..]).expect("emitted ICMP message");
        assert_eq!(icmp::Repr::parse(&back), Ok(r));
    }
    if let icmp::Repr::DstUnreachable { quote, .. } | icmp::Repr::TimeExceeded { quote, .. } = repr
    {
        let r = icmp::Repr::frag_needed(1400, quote);
        assert!(r.buffer_len() <= icmp::HEADER_LEN + icmp::MAX_QUOTE_LEN);
    }
}

fn embedded_v4(q: &icmp::EmbeddedIpv4<'_>) {
    assert!(q.header().len() >= ipv4::HEADER_LEN);
    assert_eq!(q.l4_header().len(), icmp::EmbeddedIpv4::L4_LEN);
    black_box((
        q.l4_data(),
        q.src_addr(),
        q.dst_addr(),
        q.protocol(),
        q.total_len(),
        q.is_non_first_fragment(),
        q.src_port(),
        q.dst_port(),
    ));
}

fn icmpv6_message(data: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    let Ok(p) = icmpv6::Packet::new_checked(data) else {
        return;
    };
    black_box((
        p.msg_type(),
        p.msg_code(),
        p.checksum(),
        p.echo_ident(),
        p.echo_seq_no(),
        p.mtu(),
        p.ndp_flags(),
        p.is_error(),
        p.data(),
        p.verify_checksum(src, dst),
        p.msg_type().is_ndp_ns_na(),
    ));
    if p.msg_type().is_ndp_ns_na() {
        black_box(p.target_addr());
    }
    for option in p.ndp_options() {
        match option {
            Ok(o) => black_box((o.kind, o.data, o.lladdr())),
            Err(_) => break,
        };
    }
    let _ = black_box((p.source_lladdr(), p.target_lladdr()));
    if p.is_error() {
        if let Ok(q) = p.embedded() {
            embedded_v6(&q);
        }
    }
    let mut copy = data.to_vec();
    let mut m = icmpv6::Packet::new_unchecked(&mut copy[..]);
    m.fill_checksum(src, dst);
    assert!(m.verify_checksum(src, dst), "ICMPv6 fill_checksum");
    m.convert_to_echo_reply();
    black_box(m.verify_checksum(src, dst));

    let Ok(repr) = icmpv6::Repr::parse(src, dst, &p) else {
        return;
    };
    let reply = repr.echo_reply();
    for r in std::iter::once(repr).chain(reply) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(src, dst, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
        let back = icmpv6::Packet::new_checked(&out[..]).expect("emitted ICMPv6 message");
        assert_eq!(icmpv6::Repr::parse(src, dst, &back), Ok(r));
    }
    match repr {
        icmpv6::Repr::DstUnreachable { quote, .. }
        | icmpv6::Repr::PktTooBig { quote, .. }
        | icmpv6::Repr::TimeExceeded { quote, .. } => {
            let r = icmpv6::Repr::packet_too_big(1280, quote);
            assert!(r.buffer_len() <= icmpv6::HEADER_LEN + icmpv6::MAX_QUOTE_LEN);
        }
        icmpv6::Repr::NeighborSolicit { target_addr, .. } => {
            let r = icmpv6::Repr::neighbor_advert(
                target_addr,
                ethernet::EthernetAddress([2, 0, 0, 0, 0, 1]),
                !src.is_unspecified(),
            );
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(dst, src, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
            let back = icmpv6::Packet::new_checked(&out[..]).expect("emitted NA");
            assert_eq!(icmpv6::Repr::parse(dst, src, &back), Ok(r));
        }
        _ => {}
    }
}

fn embedded_v6(q: &icmpv6::EmbeddedIpv6<'_>) {
    assert_eq!(q.header().len(), ipv6::HEADER_LEN);
    assert_eq!(q.l4_header().len(), icmpv6::EmbeddedIpv6::L4_LEN);
    let upper = q.upper_layer();
    black_box((
        upper.has_header(),
        q.protocol(),
        q.src_addr(),
        q.dst_addr(),
        q.l4_data(),
        q.src_port(),
        q.dst_port(),
    ));
}
