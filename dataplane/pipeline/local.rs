//! The packets the appliance answers itself, rewritten in place in the request's buffer: ARP
//! replies, neighbour advertisements, echo replies, and the frag-needed / packet-too-big errors
//! sent to a client whose packet no longer fits the path to the backend once encapsulated.
//!
//! Every reply goes back out of the RX port, to the MAC the request came from, with the
//! request's VLAN tags left in place (the reply belongs to the same L2 segment). The request
//! was validated by phase 1; the views are re-checked here anyway, so no byte is trusted
//! twice without a check and nothing can panic.
//!
//! # Too big after encapsulation
//!
//! **Too big after encapsulation** (inner length + overhead > `Config.backend_mtu`):
//! `too_big_after_encap`, then, drawing an ICMP token, the packet is replaced in place by
//! an ICMP fragmentation-needed (IPv4 inner; next-hop MTU = `backend_mtu − overhead`;
//! quotes up to 548 bytes) or ICMPv6 packet-too-big (IPv6 inner; quotes up to 1232 bytes)
//! from the VIP to the client, sent back out of the RX port (`icmp_frag_needed_sent`,
//! `icmpv6_too_big_sent`). It is sent whatever the inner DF bit: the balancer never
//! fragments.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::counters::Counter;
use super::PacketBuf;
use crate::wire::{
    icmp, icmpv6, ipv4, ipv6, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, IcmpMessage,
    IcmpPacket, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr,
};

/// Hop limit / TTL of everything the appliance originates.
pub(crate) const REPLY_TTL: u8 = 64;

/// The MAC of ff02::1 (all nodes), where the answer to a DAD probe goes.
const ALL_NODES_MAC: EthernetAddress = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Readdresses the Ethernet header: to `dst`, from `src` (VLAN tags stay).
#[inline]
fn readdress(data: &mut [u8], dst: EthernetAddress, src: EthernetAddress) -> Result<(), Counter> {
    let mut eth = EthernetFrame::new_checked(data)?;
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    Ok(())
}

/// The frame's source MAC: where a reply goes.
#[inline]
fn peer_mac(data: &[u8]) -> Result<EthernetAddress, Counter> {
    Ok(EthernetFrame::new_checked(data)?.src_addr())
}

#[inline]
fn l3_mut(data: &mut [u8], l3: usize) -> Result<&mut [u8], Counter> {
    data.get_mut(l3..).ok_or(Counter::DropTruncated)
}

/// Grows or cuts the frame to exactly `len` bytes.
fn resize<P: PacketBuf>(pkt: &mut P, len: usize) -> Result<(), Counter> {
    let cur = pkt.data().len();
    if cur < len {
        if !pkt.append(len - cur) {
            return Err(Counter::DropNoBufferRoom);
        }
    } else {
        pkt.truncate(len);
    }
    Ok(())
}

/// Turns an ARP request for one of our addresses into the reply from `mac`.
pub(crate) fn arp_reply<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    mac: EthernetAddress,
) -> Result<(), Counter> {
    let data = pkt.data_mut();
    let request = ArpRepr::parse(&ArpPacket::new_checked(l3_mut(data, l3)?)?)?;
    readdress(data, request.sender_hardware_addr, mac)?;
    request
        .reply(mac)
        .emit(&mut ArpPacket::new_checked(l3_mut(data, l3)?)?);
    Ok(())
}

/// Turns a neighbour solicitation into the advertisement of its target from `mac`: solicited
/// and override, with a target link-layer option; a DAD probe is answered to all nodes,
/// unsolicited (RFC 4861 §7.2.4).
pub(crate) fn neighbor_advert<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    dad: bool,
    mac: EthernetAddress,
) -> Result<(), Counter> {
    let (target, dst_ip, dst_mac) = {
        let data = pkt.data();
        let frame_src = peer_mac(data)?;
        let ip = Ipv6Packet::new_checked(data.get(l3..).unwrap_or(&[]))?;
        let ns = Icmpv6Packet::new_checked(ip.payload())?;
        let lladdr = ns.source_lladdr()?.unwrap_or(frame_src);
        if dad {
            (ns.target_addr(), ALL_NODES, ALL_NODES_MAC)
        } else {
            (ns.target_addr(), ip.src_addr(), lladdr)
        }
    };
    let advert = Icmpv6Repr::neighbor_advert(target, mac, !dad);
    let ip = Ipv6Repr {
        src_addr: target,
        dst_addr: dst_ip,
        next_header: IpProtocol::ICMPV6,
        payload_len: advert.buffer_len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    resize(pkt, l3 + ipv6::HEADER_LEN + advert.buffer_len())?;
    let data = pkt.data_mut();
    readdress(data, dst_mac, mac)?;
    let (header, payload) = l3_mut(data, l3)?.split_at_mut(ipv6::HEADER_LEN);
    ip.emit(&mut Ipv6Packet::new_unchecked(header));
    advert.emit(&target, &dst_ip, &mut Icmpv6Packet::new_unchecked(payload));
    Ok(())
}

/// Turns an ICMP echo request into the reply (addresses swapped, TTL reset).
pub(crate) fn echo_reply_v4<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    mac: EthernetAddress,
) -> Result<(), Counter> {
    let data = pkt.data_mut();
    let peer = peer_mac(data)?;
    readdress(data, peer, mac)?;
    let mut ip = Ipv4Packet::new_checked(l3_mut(data, l3)?)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(REPLY_TTL);
    ip.fill_checksum();
    IcmpPacket::new_checked(ip.payload_mut())?.convert_to_echo_reply();
    Ok(())
}

/// Turns an ICMPv6 echo request into the reply (addresses swapped, hop limit reset; the
/// swap leaves the pseudo-header sum, so the checksum is patched for the type only).
pub(crate) fn echo_reply_v6<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    mac: EthernetAddress,
) -> Result<(), Counter> {
    let data = pkt.data_mut();
    let peer = peer_mac(data)?;
    readdress(data, peer, mac)?;
    let mut ip = Ipv6Packet::new_checked(l3_mut(data, l3)?)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_hop_limit(REPLY_TTL);
    let mut echo = Icmpv6Packet::new_checked(ip.payload_mut())?;
    if echo.msg_type() != Icmpv6Message::ECHO_REQUEST {
        return Err(Counter::DropUnsupportedIcmp);
    }
    echo.convert_to_echo_reply();
    Ok(())
}

/// Replaces an IPv4 packet (client → VIP, `len` bytes at `l3`) with an ICMP
/// fragmentation-needed error to the client, quoting the start of the packet.
pub(crate) fn frag_needed<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    len: usize,
    mtu: u16,
    client: Ipv4Addr,
    vip: Ipv4Addr,
    mac: EthernetAddress,
) -> Result<(), Counter> {
    const EXTRA: usize = ipv4::HEADER_LEN + icmp::HEADER_LEN;
    let quote = len.min(icmp::MAX_QUOTE_LEN);
    let (ip_header, message) =
        make_room(pkt, l3, quote, EXTRA, mac)?.split_at_mut(ipv4::HEADER_LEN);
    Ipv4Repr {
        src_addr: vip,
        dst_addr: client,
        protocol: IpProtocol::ICMP,
        payload_len: icmp::HEADER_LEN + quote,
        ttl: REPLY_TTL,
        tos: 0,
        ident: 0,
        dont_frag: false,
    }
    .emit(&mut Ipv4Packet::new_unchecked(ip_header));
    let mut error = IcmpPacket::new_checked(message)?;
    error.set_msg_type(IcmpMessage::DST_UNREACHABLE);
    error.set_msg_code(icmp::unreachable::FRAG_NEEDED);
    error.set_next_hop_mtu(mtu);
    error.fill_checksum();
    Ok(())
}

/// Replaces an IPv6 packet (client → VIP, `len` bytes at `l3`) with an ICMPv6 packet-too-big
/// error to the client, quoting as much of the packet as fits in 1280 bytes.
pub(crate) fn packet_too_big<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    len: usize,
    mtu: u16,
    client: Ipv6Addr,
    vip: Ipv6Addr,
    mac: EthernetAddress,
) -> Result<(), Counter> {
    const EXTRA: usize = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
    let quote = len.min(icmpv6::MAX_QUOTE_LEN);
    let (ip_header, message) =
        make_room(pkt, l3, quote, EXTRA, mac)?.split_at_mut(ipv6::HEADER_LEN);
    Ipv6Repr {
        src_addr: vip,
        dst_addr: client,
        next_header: IpProtocol::ICMPV6,
        payload_len: icmpv6::HEADER_LEN + quote,
        hop_limit: REPLY_TTL,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(ip_header));
    let mut error = Icmpv6Packet::new_checked(message)?;
    error.set_msg_type(Icmpv6Message::PKT_TOO_BIG);
    error.set_msg_code(0);
    error.set_mtu(u32::from(mtu));
    error.fill_checksum(&vip, &client);
    Ok(())
}

/// Cuts the packet at `l3` to its first `quote` bytes and opens `extra` bytes in front of them
/// for the error's headers, moving the L2 header (tags included) to the new front and
/// readdressing it back to the sender. Returns the bytes from `l3` on.
fn make_room<P: PacketBuf>(
    pkt: &mut P,
    l3: usize,
    quote: usize,
    extra: usize,
    mac: EthernetAddress,
) -> Result<&mut [u8], Counter> {
    pkt.truncate(l3 + quote);
    if pkt.data().len() != l3 + quote {
        return Err(Counter::DropTruncated);
    }
    if !pkt.prepend(extra) {
        return Err(Counter::DropNoBufferRoom);
    }
    let data = pkt.data_mut();
    data.copy_within(extra..extra + l3, 0);
    let peer = peer_mac(data)?;
    readdress(data, peer, mac)?;
    let rest = l3_mut(data, l3)?;
    if rest.len() < extra {
        return Err(Counter::DropTruncated);
    }
    Ok(rest)
}
