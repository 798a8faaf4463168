//! Phase 1 of a packet: parse, validate and classify it, without side effects.
//!
//! [`classify`] reads the frame and the (immutable) generation and returns a [`Step`]: a drop
//! with its counter, a local reply to build, a packet for the kernel, or a flow to balance with
//! its key and hash already computed. It changes nothing — no counter, no token, no table —
//! so a burst can be classified whole (hashing every packet and warming its flow bucket) before
//! any packet is executed, with the same result as one packet at a time.
//!
//! # What it checks, in order
//!
//! Each drop is its own [`Counter`] (their meanings are documented there).
//!
//! 1. **L2.** Ethernet with up to two VLAN tags ([`crate::wire::ethernet`]). The destination
//!    MAC must be the MAC of the interface bound to the RX port ([`super::PortMap::interface`] names
//!    `Generation::interfaces[i].name`), broadcast (ARP only) or `33:33:xx` (IPv6 only); else
//!    `drop_not_our_mac`. Other EtherTypes: `drop_unknown_ethertype`. A port bound to no
//!    interface of the generation: `drop_port_unbound`. Short frames and bad tag stacks: the
//!    wire error's counter (`drop_truncated`, `drop_too_many_vlan_tags`, ...: one counter per
//!    [`crate::wire::Error`]). Frames from the kernel port ([`super::PortMap::kernel`]) go out of the
//!    port whose interface owns their source MAC (`kernel_to_wire`), untouched.
//! 2. **Local traffic.** ARP requests for an address of the RX interface or inside a VIP are answered
//!    in place (`arp_reply_sent`), requests for other addresses `drop_arp_not_ours`, requests from a
//!    broadcast, multicast or zero sender MAC `drop_arp_bad_sender` (the reply would go to every
//!    station). ARP replies and gratuitous ARP, and neighbour advertisements (to our MAC or a
//!    multicast one), are news about a neighbour: about the RX interface's gateway address while its
//!    MAC is resolved rather than configured, with a unicast MAC, they are handed to the resolver in
//!    phase 2 (`neighbour_learned`, see [`crate::neighbour`]); a broadcast, multicast or zero MAC is
//!    `drop_neighbour_bad_mac`, any other address `drop_neighbour_not_gateway` (a unicast
//!    advertisement about another address goes on as traffic for the host, so the exception path's
//!    own neighbour discovery keeps working; ARP on an interface with a configured gateway MAC:
//!    `drop_arp_ignored`); an advertisement failing RFC 4861 §7.1.2 (hop limit 255, code 0, checksum,
//!    no solicited flag to a multicast destination), or unsolicited without a target link-layer
//!    address, is `drop_na_invalid` (a solicited one without it — Linux's answer to a unicast refresh
//!    — confirms the MAC in use). Neighbour solicitations for an address of the RX interface or a VIP
//!    are answered with a solicited, override advertisement carrying our MAC (`nd_advert_sent`; a DAD
//!    probe from `::` is answered to all-nodes, unsolicited) after the RFC 4861 §7.1.1 checks
//!    (`drop_nd_invalid`; other targets `drop_nd_not_ours`). Echo
//!    requests to own addresses and VIPs are answered in place, drawing from the worker's ICMP
//!    token bucket (`Config.icmp_rate` per second, `icmp_burst` deep; rate 0 sends nothing;
//!    empty → `drop_icmp_rate_limited`). Anything else to an own address (of any interface) is
//!    for the host: [`super::Verdict::Kernel`] (`to_kernel`) when a kernel port exists, else
//!    `drop_for_host_no_kernel_port`. A destination that is neither own nor in a VIP:
//!    `drop_not_ours`. Replies keep the request's VLAN tags and leave by the RX port.
//! 3. **Hostile input**, each its own counter, checked in this order:
//!    IPv4 — wire errors (IHL, total length), options (`drop_ipv4_options`: nothing we serve
//!    needs them, and they are a classic evasion tool), fragments (`drop_ipv4_fragment`, see
//!    below), header checksum (`drop_bad_ipv4_checksum`), martian source; IPv6 — wire errors,
//!    extension headers (`drop_ipv6_ext_header` for hop-by-hop, routing and destination
//!    options: TCP/UDP clients of an inference API do not send them, hop-by-hop is a known
//!    slow-path DoS vector, and an ext-header walk per packet buys nothing; `drop_ipv6_fragment`
//!    for a fragment header), martian source. Martian sources (`drop_martian_source`):
//!    0.0.0.0/8, 127/8, 224/4 and 240/4 (broadcast included); `::`, `::1`, ff00::/8,
//!    ::ffff:0:0/96 (IPv4-mapped); any address inside a VIP; any own address; and, for traffic
//!    to a VIP (not to our own addresses, which the kernel may talk to over a link), the
//!    link-local 169.254/16 and fe80::/10. The IPv4 reserved flag set:
//!    `drop_ipv4_reserved_flag` (RFC 791: must be zero). TCP or UDP to a VIP from source port
//!    0: `drop_source_port_zero`. An echo request whose ICMP checksum does not verify is not
//!    answered (`drop_bad_icmp_checksum`). A frame to the broadcast MAC that is not ARP:
//!    `drop_l2_broadcast` (not `drop_not_our_mac`: it was addressed to every station). Then, for traffic to a VIP: IPIP / IPv6-in-IP, or
//!    UDP to `Config.gue_port`, is `drop_already_encapsulated` (never encapsulated twice, so a
//!    looping or spoofed tunnel packet cannot bounce between balancers); invalid TCP flag
//!    combinations (`drop_bad_tcp_flags`: the Linux conntrack table of
//!    [`crate::wire::tcp`] — null, SYN+FIN, XMAS, FIN without ACK...); UDP over IPv6 with
//!    checksum 0 (`drop_ipv6_udp_zero_checksum`, RFC 8200 §8.1); protocols other than TCP,
//!    UDP, ICMP (`drop_unsupported_protocol`); TTL / hop limit 0 or 1 on anything forwarded
//!    (`drop_ttl_expired`; echo requests are answered whatever their TTL).
//! 4. **Service**: VIP LPM → VIP group → first entry matching protocol and destination port.
//! 5. **ACL** on the source: `acl_lpm` → group → the first rule, among the global ones and the
//!    service's own (the group lists them in that order), whose protocol (0 = any) and
//!    destination port range match decides; deny → `drop_acl`; no match → allowed. Packets
//!    without ports (ICMP echo and errors to a VIP) match only rules for any protocol covering
//!    every port, i.e. the policy's plain `deny: PREFIX`, and, like packets to a port no
//!    service has, only global rules. Then no service → `drop_no_service`.
//! 6. **ICMP errors to a VIP** (IPv4 destination unreachable — frag-needed included — and
//!    time exceeded; ICMPv6 destination unreachable, packet too big, time exceeded): the
//!    quote is a packet the backend sent as VIP → client; reversed, it is the client → VIP
//!    flow. Its entry is read without touching it (`peek`), or the flow is scheduled like a
//!    new one without inserting, and the whole ICMP packet is encapsulated to that backend
//!    with the flow's hash (`icmp_error_steered`). Bad quotes: `drop_icmp_error_bad_quote`;
//!    quotes that are not a TCP/UDP packet from this VIP to one of its services:
//!    `drop_icmp_error_unmatched`. Other ICMP to a VIP: `drop_icmp_to_vip_ignored`.

use switchyard_table::generation::{Generation, ACL_DENY, ACL_GLOBAL, PROTO_TCP, PROTO_UDP};
use switchyard_table::lpm::{lookup_v4, lookup_v6};

use super::counters::Counter;
use super::view::{PortBinding, View};
use super::PortIndex;
use crate::flow::{FlowKeyV4, FlowKeyV6};
use crate::wire::{
    self, EtherType, EthernetFrame, IcmpMessage, IcmpPacket, Icmpv6Message, Icmpv6Packet,
    Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// What phase 2 does with a packet.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Drop, counting this reason.
    Drop(Counter),
    /// For the host: to the exception-path port, untouched.
    Kernel,
    /// From the kernel: out of this port, untouched.
    KernelToWire(PortIndex),
    /// Answer an ARP request (L3 header at `l3`).
    ArpReply { l3: u16 },
    /// Hand news about the RX interface's gateway to the resolver.
    Learn(NeighbourNews),
    /// Answer a neighbour solicitation; `dad` when it is a duplicate-address probe (source ::).
    NdAdvert { l3: u16, dad: bool },
    /// Answer an ICMP echo request.
    Echo4 { l3: u16 },
    /// Answer an ICMPv6 echo request.
    Echo6 { l3: u16 },
    /// Balance an IPv4 packet.
    Lb4(Lb<FlowKeyV4>),
    /// Balance an IPv6 packet.
    Lb6(Lb<FlowKeyV6>),
}

impl Step {
    /// The flow hash, for a step that will look the flow table up.
    #[inline]
    pub(crate) fn lb_hash(&self) -> Option<(bool, u32)> {
        match self {
            Self::Lb4(lb) => Some((false, lb.table_hash)),
            Self::Lb6(lb) => Some((true, lb.table_hash)),
            _ => None,
        }
    }
}

/// "This gateway address is at this MAC", from an ARP packet or a neighbour advertisement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NeighbourNews {
    pub v6: bool,
    /// The address (IPv4 in the low 32 bits).
    pub addr: u128,
    pub mac: wire::EthernetAddress,
    /// ARP, or an NA with the override flag.
    pub overrides: bool,
    /// A solicited NA without a target link-layer address: confirms the MAC in use.
    pub confirm_only: bool,
}

/// A packet to balance: its flow (client → VIP) and where its L3 packet lies in the frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lb<K> {
    /// The client → VIP 5-tuple (for an ICMP error: the flow its quote belongs to).
    pub key: K,
    /// `key.hash()`, computed once and used by the flow table, the scheduler and the encap.
    pub hash: u32,
    /// The connection table's keyed bucket hash of `key` (`FlowTable::hash`, a secret seed per
    /// worker and start). Classification leaves it 0; the worker fills it in before anything
    /// reads it.
    pub table_hash: u32,
    /// The service the VIP, protocol and port select.
    pub service: u32,
    /// Offset of the L3 header in the frame.
    pub l3: u16,
    /// Length of the L3 packet (IPv4 total length, or 40 + IPv6 payload length).
    pub len: u16,
    /// ToS / traffic class, copied to the outer header.
    pub tos: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// An ICMP error to steer to the backend of `key` (never creates a flow).
    pub icmp_error: bool,
}

impl From<wire::Error> for Counter {
    #[inline]
    fn from(e: wire::Error) -> Self {
        Counter::wire(e)
    }
}

/// Classifies one frame received on `rx_port`. See the module doc.
#[inline]
pub(crate) fn classify(g: &Generation, view: &View, data: &[u8], rx_port: PortIndex) -> Step {
    match classify_frame(g, view, data, rx_port) {
        Ok(step) => step,
        Err(counter) => Step::Drop(counter),
    }
}

#[inline]
fn classify_frame(
    g: &Generation,
    view: &View,
    data: &[u8],
    rx_port: PortIndex,
) -> Result<Step, Counter> {
    let frame = EthernetFrame::new_checked(data)?;
    if view.kernel == Some(rx_port) {
        return from_kernel(view, frame.src_addr());
    }
    let port = view.port(rx_port).ok_or(Counter::DropPortUnbound)?;
    let l2 = frame.parse_l2()?;
    let dst = frame.dst_addr();
    let ipv6_multicast = dst.0[0] == 0x33 && dst.0[1] == 0x33;
    let ours = dst == port.mac
        || (dst.is_broadcast() && l2.ethertype == EtherType::ARP)
        || (ipv6_multicast && l2.ethertype == EtherType::IPV6);
    if !ours {
        return Err(if dst.is_broadcast() {
            Counter::DropL2Broadcast
        } else {
            Counter::DropNotOurMac
        });
    }
    // At most 14 + 2 × 4 bytes.
    let l3 = u16::try_from(l2.l3_offset).map_err(|_| Counter::DropTruncated)?;
    let payload = frame.l3_payload(&l2);
    match l2.ethertype {
        EtherType::IPV4 => ipv4(g, view, payload, l3),
        EtherType::IPV6 => ipv6(g, view, port, payload, l3, ipv6_multicast),
        EtherType::ARP => arp(g, port, payload, l3),
        _ => Err(Counter::DropUnknownEthertype),
    }
}

/// A frame the kernel sent: out of the port whose interface owns its source MAC.
fn from_kernel(view: &View, src: wire::EthernetAddress) -> Result<Step, Counter> {
    view.ports
        .iter()
        .position(|p| p.is_some_and(|p| p.mac == src))
        .and_then(|i| PortIndex::try_from(i).ok())
        .map(Step::KernelToWire)
        .ok_or(Counter::DropKernelUnknownSource)
}

fn arp(g: &Generation, port: &PortBinding, l3: &[u8], off: u16) -> Result<Step, Counter> {
    let packet = wire::ArpPacket::new_checked(l3)?;
    let repr = wire::ArpRepr::parse(&packet)?;
    if repr.operation != wire::ArpOp::Request
        || repr.sender_protocol_addr == repr.target_protocol_addr
    {
        return arp_news(port, &repr);
    }
    // The reply goes to the sender's hardware address: never to broadcast, multicast or zero
    // (a sender address of 0.0.0.0 with a unicast MAC is an RFC 5227 probe and is answered).
    let sender = repr.sender_hardware_addr;
    if !sender.is_unicast() || sender.0 == [0; 6] {
        return Err(Counter::DropArpBadSender);
    }
    let target = u32::from(repr.target_protocol_addr);
    if port.owns_v4(target) || lookup_v4(&g.vip_lpm_v4, target) != 0 {
        Ok(Step::ArpReply { l3: off })
    } else {
        Err(Counter::DropArpNotOurs)
    }
}

/// An ARP reply or gratuitous ARP: news for the resolver when it is about our gateway.
fn arp_news(port: &PortBinding, repr: &wire::ArpRepr) -> Result<Step, Counter> {
    if port.has_gateway() {
        return Err(Counter::DropArpIgnored);
    }
    let sender = u32::from(repr.sender_protocol_addr);
    if port.gateway_v4 == 0 || sender != port.gateway_v4 {
        return Err(Counter::DropNeighbourNotGateway);
    }
    let mac = repr.sender_hardware_addr;
    if !mac.is_unicast() || mac.0 == [0; 6] {
        return Err(Counter::DropNeighbourBadMac);
    }
    Ok(Step::Learn(NeighbourNews {
        v6: false,
        addr: u128::from(sender),
        mac,
        overrides: true,
        confirm_only: false,
    }))
}

/// A neighbour advertisement: news for the resolver when it is about our gateway and passes
/// the RFC 4861 §7.1.2 checks.
fn neighbor_advert(
    port: &PortBinding,
    ip: &Ipv6Packet<&[u8]>,
    icmp: &Icmpv6Packet<&[u8]>,
) -> Result<Step, Counter> {
    let target = u128::from(icmp.target_addr());
    if port.gateway_v6 == 0 || target != port.gateway_v6 {
        return Err(Counter::DropNeighbourNotGateway);
    }
    if ip.hop_limit() != 255 {
        return Err(Counter::DropNaInvalid);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let Icmpv6Repr::NeighborAdvert {
        flags,
        target_lladdr,
        ..
    } = Icmpv6Repr::parse(&src, &dst, icmp)?
    else {
        return Err(Counter::DropNaInvalid);
    };
    if dst.is_multicast() && flags.contains(wire::NdpFlags::SOLICITED) {
        return Err(Counter::DropNaInvalid);
    }
    let Some(mac) = target_lladdr else {
        // Linux answers a unicast solicitation (our refresh) without the option: a solicited
        // advertisement then confirms the MAC in use and changes nothing (RFC 4861 §7.2.5).
        if !flags.contains(wire::NdpFlags::SOLICITED) {
            return Err(Counter::DropNaInvalid);
        }
        return Ok(Step::Learn(NeighbourNews {
            v6: true,
            addr: target,
            mac: wire::EthernetAddress([0; 6]),
            overrides: false,
            confirm_only: true,
        }));
    };
    if !mac.is_unicast() || mac.0 == [0; 6] {
        return Err(Counter::DropNeighbourBadMac);
    }
    Ok(Step::Learn(NeighbourNews {
        v6: true,
        addr: target,
        mac,
        overrides: flags.contains(wire::NdpFlags::OVERRIDE),
        confirm_only: false,
    }))
}

/// 0.0.0.0/8, 127/8, 224/4 (multicast) and 240/4 (reserved, and the broadcast address).
#[inline]
pub(crate) fn martian_v4(addr: u32) -> bool {
    let top = addr >> 24;
    top == 0 || top == 127 || top >= 224
}

/// ::, ::1, ff00::/8 and IPv4-mapped ::ffff:0:0/96 (an IPv4 client never sends IPv6 with it;
/// only a spoofer or a broken translator does).
#[inline]
pub(crate) fn martian_v6(addr: u128) -> bool {
    addr <= 1 || addr >> 120 == 0xff || addr >> 32 == 0xffff
}

/// 169.254.0.0/16: link-local, never routed, so never a client of a VIP.
#[inline]
pub(crate) fn link_local_v4(addr: u32) -> bool {
    addr >> 16 == 0xa9fe
}

/// fe80::/10: link-local, never routed, so never a client of a VIP.
#[inline]
pub(crate) fn link_local_v6(addr: u128) -> bool {
    addr >> 118 == 0x3fa
}

fn ipv4(g: &Generation, view: &View, l3: &[u8], off: u16) -> Result<Step, Counter> {
    let ip = Ipv4Packet::new_checked(l3)?;
    if ip.has_options() {
        return Err(Counter::DropIpv4Options);
    }
    if ip.is_fragment() {
        return Err(Counter::DropIpv4Fragment);
    }
    if !ip.verify_checksum() {
        return Err(Counter::DropBadIpv4Checksum);
    }
    if ip.reserved_flag() {
        return Err(Counter::DropIpv4ReservedFlag);
    }
    let src = u32::from(ip.src_addr());
    let dst = u32::from(ip.dst_addr());
    if martian_v4(src) {
        return Err(Counter::DropMartianSource);
    }
    let local = view.is_own_v4(dst);
    let vip = if local {
        0
    } else {
        lookup_v4(&g.vip_lpm_v4, dst)
    };
    if !local && vip == 0 {
        return Err(Counter::DropNotOurs);
    }
    if !local && link_local_v4(src) {
        return Err(Counter::DropMartianSource);
    }
    if view.is_own_v4(src) || lookup_v4(&g.vip_lpm_v4, src) != 0 {
        return Err(Counter::DropMartianSource);
    }
    let proto = ip.protocol();
    let payload = ip.payload();
    if local {
        if proto == IpProtocol::ICMP {
            let icmp = IcmpPacket::new_checked(payload)?;
            if icmp.msg_type() == IcmpMessage::ECHO_REQUEST && icmp.msg_code() == 0 {
                if !icmp.verify_checksum() {
                    return Err(Counter::DropBadIcmpChecksum);
                }
                return Ok(Step::Echo4 { l3: off });
            }
        }
        return Ok(Step::Kernel);
    }

    let acl = lookup_v4(&g.acl_lpm_v4, src);
    let (sport, dport, flags) = match proto {
        IpProtocol::TCP => {
            let tcp = TcpPacket::new_checked(payload)?;
            if !tcp.flags_are_valid() {
                return Err(Counter::DropBadTcpFlags);
            }
            (tcp.src_port(), tcp.dst_port(), tcp.flags().0)
        }
        IpProtocol::UDP => {
            let udp = UdpPacket::new_checked(payload)?;
            if udp.dst_port() == view.gue_port {
                return Err(Counter::DropAlreadyEncapsulated);
            }
            (udp.src_port(), udp.dst_port(), 0)
        }
        IpProtocol::ICMP => {
            let icmp = IcmpPacket::new_checked(payload)?;
            return match icmp.msg_type() {
                IcmpMessage::ECHO_REQUEST if icmp.msg_code() == 0 => {
                    acl_check(g, acl, None, proto.0, None)?;
                    if !icmp.verify_checksum() {
                        return Err(Counter::DropBadIcmpChecksum);
                    }
                    Ok(Step::Echo4 { l3: off })
                }
                IcmpMessage::DST_UNREACHABLE | IcmpMessage::TIME_EXCEEDED => {
                    if ip.ttl() <= 1 {
                        return Err(Counter::DropTtlExpired);
                    }
                    acl_check(g, acl, None, proto.0, None)?;
                    icmp_error_v4(g, &icmp, dst, vip, off, ip.total_len(), ip.tos())
                }
                _ => Err(Counter::DropIcmpToVipIgnored),
            };
        }
        IpProtocol::IPV4 | IpProtocol::IPV6 => return Err(Counter::DropAlreadyEncapsulated),
        _ => return Err(Counter::DropUnsupportedProtocol),
    };
    if ip.ttl() <= 1 {
        return Err(Counter::DropTtlExpired);
    }
    if sport == 0 {
        return Err(Counter::DropSourcePortZero);
    }
    let service = service_for(g, vip, proto.0, dport);
    acl_check(g, acl, service, proto.0, Some(dport))?;
    let service = service.ok_or(Counter::DropNoService)?;
    let key = FlowKeyV4::from_bits(src, dst, sport, dport, proto.0);
    Ok(Step::Lb4(Lb {
        key,
        hash: key.hash(),
        table_hash: 0,
        service,
        l3: off,
        len: ip.total_len(),
        tos: ip.tos(),
        tcp_flags: flags,
        icmp_error: false,
    }))
}

/// An ICMPv4 error sent to a VIP: it quotes a packet the backend sent from the VIP to a client.
fn icmp_error_v4(
    g: &Generation,
    icmp: &IcmpPacket<&[u8]>,
    vip_addr: u32,
    vip: u32,
    off: u16,
    len: u16,
    tos: u8,
) -> Result<Step, Counter> {
    let quote = icmp
        .embedded()
        .map_err(|_| Counter::DropIcmpErrorBadQuote)?;
    let proto = quote.protocol().0;
    if !(proto == PROTO_TCP || proto == PROTO_UDP)
        || quote.is_non_first_fragment()
        || u32::from(quote.src_addr()) != vip_addr
    {
        return Err(Counter::DropIcmpErrorUnmatched);
    }
    // Reversed: the flow is client → VIP.
    let (client, sport, dport) = (
        u32::from(quote.dst_addr()),
        quote.dst_port(),
        quote.src_port(),
    );
    let service = service_for(g, vip, proto, dport).ok_or(Counter::DropIcmpErrorUnmatched)?;
    let key = FlowKeyV4::from_bits(client, vip_addr, sport, dport, proto);
    Ok(Step::Lb4(Lb {
        key,
        hash: key.hash(),
        table_hash: 0,
        service,
        l3: off,
        len,
        tos,
        tcp_flags: 0,
        icmp_error: true,
    }))
}

/// The solicited-node multicast address of `addr` (ff02::1:ff00:0/104 + its low 24 bits).
#[inline]
pub(crate) fn solicited_node(addr: u128) -> u128 {
    0xff02_0000_0000_0000_0000_0001_ff00_0000 | (addr & 0xff_ffff)
}

fn ipv6(
    g: &Generation,
    view: &View,
    port: &PortBinding,
    l3: &[u8],
    off: u16,
    l2_multicast: bool,
) -> Result<Step, Counter> {
    let ip = Ipv6Packet::new_checked(l3)?;
    let next = ip.next_header();
    match next {
        IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_ROUTING | IpProtocol::IPV6_DEST_OPTS => {
            return Err(Counter::DropIpv6ExtHeader)
        }
        IpProtocol::IPV6_FRAGMENT => return Err(Counter::DropIpv6Fragment),
        _ => {}
    }
    // No extension headers: the upper layer starts right after the fixed header.
    let payload = ip.payload();
    if next == IpProtocol::ICMPV6 {
        let icmp = Icmpv6Packet::new_checked(payload)?;
        if icmp.msg_type() == Icmpv6Message::NEIGHBOR_SOLICIT {
            return neighbor_solicit(g, port, &ip, &icmp, off);
        }
        // An advertisement to a unicast address about anything but our gateway is the host's
        // (the exception path's own neighbour discovery).
        if icmp.msg_type() == Icmpv6Message::NEIGHBOR_ADVERT
            && (l2_multicast
                || (port.gateway_v6 != 0 && u128::from(icmp.target_addr()) == port.gateway_v6))
        {
            return neighbor_advert(port, &ip, &icmp);
        }
    }
    if l2_multicast {
        // Only neighbour discovery may come to us on a multicast MAC.
        return Err(Counter::DropNotOurMac);
    }
    let src = u128::from(ip.src_addr());
    let dst = u128::from(ip.dst_addr());
    if martian_v6(src) {
        return Err(Counter::DropMartianSource);
    }
    let local = view.is_own_v6(dst);
    let vip = if local {
        0
    } else {
        lookup_v6(&g.vip_lpm_v6, dst)
    };
    if !local && vip == 0 {
        return Err(Counter::DropNotOurs);
    }
    if !local && link_local_v6(src) {
        return Err(Counter::DropMartianSource);
    }
    if view.is_own_v6(src) || lookup_v6(&g.vip_lpm_v6, src) != 0 {
        return Err(Counter::DropMartianSource);
    }
    if local {
        if next == IpProtocol::ICMPV6 {
            let icmp = Icmpv6Packet::new_checked(payload)?;
            if icmp.msg_type() == Icmpv6Message::ECHO_REQUEST && icmp.msg_code() == 0 {
                if !icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
                    return Err(Counter::DropBadIcmpChecksum);
                }
                return Ok(Step::Echo6 { l3: off });
            }
        }
        return Ok(Step::Kernel);
    }

    let len = u16::try_from(ip.packet().len()).map_err(|_| Counter::DropBadIpv6PayloadLen)?;
    let acl = lookup_v6(&g.acl_lpm_v6, src);
    let (sport, dport, flags) = match next {
        IpProtocol::TCP => {
            let tcp = TcpPacket::new_checked(payload)?;
            if !tcp.flags_are_valid() {
                return Err(Counter::DropBadTcpFlags);
            }
            (tcp.src_port(), tcp.dst_port(), tcp.flags().0)
        }
        IpProtocol::UDP => {
            let udp = UdpPacket::new_checked(payload)?;
            if udp.dst_port() == view.gue_port {
                return Err(Counter::DropAlreadyEncapsulated);
            }
            if udp.checksum() == 0 {
                return Err(Counter::DropIpv6UdpZeroChecksum);
            }
            (udp.src_port(), udp.dst_port(), 0)
        }
        IpProtocol::ICMPV6 => {
            let icmp = Icmpv6Packet::new_checked(payload)?;
            return match icmp.msg_type() {
                Icmpv6Message::ECHO_REQUEST if icmp.msg_code() == 0 => {
                    acl_check(g, acl, None, next.0, None)?;
                    if !icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
                        return Err(Counter::DropBadIcmpChecksum);
                    }
                    Ok(Step::Echo6 { l3: off })
                }
                Icmpv6Message::DST_UNREACHABLE
                | Icmpv6Message::PKT_TOO_BIG
                | Icmpv6Message::TIME_EXCEEDED => {
                    if ip.hop_limit() <= 1 {
                        return Err(Counter::DropTtlExpired);
                    }
                    acl_check(g, acl, None, next.0, None)?;
                    icmp_error_v6(g, &icmp, dst, vip, off, len, ip.traffic_class())
                }
                _ => Err(Counter::DropIcmpToVipIgnored),
            };
        }
        IpProtocol::IPV4 | IpProtocol::IPV6 => return Err(Counter::DropAlreadyEncapsulated),
        _ => return Err(Counter::DropUnsupportedProtocol),
    };
    if ip.hop_limit() <= 1 {
        return Err(Counter::DropTtlExpired);
    }
    if sport == 0 {
        return Err(Counter::DropSourcePortZero);
    }
    let service = service_for(g, vip, next.0, dport);
    acl_check(g, acl, service, next.0, Some(dport))?;
    let service = service.ok_or(Counter::DropNoService)?;
    let key = FlowKeyV6::from_bits(src, dst, sport, dport, next.0);
    Ok(Step::Lb6(Lb {
        key,
        hash: key.hash(),
        table_hash: 0,
        service,
        l3: off,
        len,
        tos: ip.traffic_class(),
        tcp_flags: flags,
        icmp_error: false,
    }))
}

/// A neighbour solicitation: answered for the RX interface's own addresses and for VIPs, after
/// the RFC 4861 §7.1.1 checks (hop limit 255, checksum, code 0, well-formed options, target
/// not multicast; a DAD probe from :: goes to the solicited-node group and has no source
/// link-layer option).
fn neighbor_solicit(
    g: &Generation,
    port: &PortBinding,
    ip: &Ipv6Packet<&[u8]>,
    icmp: &Icmpv6Packet<&[u8]>,
    off: u16,
) -> Result<Step, Counter> {
    let target = u128::from(icmp.target_addr());
    if !(port.owns_v6(target) || lookup_v6(&g.vip_lpm_v6, target) != 0) {
        return Err(Counter::DropNdNotOurs);
    }
    if ip.hop_limit() != 255 {
        return Err(Counter::DropNdInvalid);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let Icmpv6Repr::NeighborSolicit { source_lladdr, .. } = Icmpv6Repr::parse(&src, &dst, icmp)?
    else {
        return Err(Counter::DropNdInvalid);
    };
    let dad = src.is_unspecified();
    let dst = u128::from(dst);
    let group = solicited_node(target);
    if (dad && (dst != group || source_lladdr.is_some())) || (dst != group && dst != target) {
        return Err(Counter::DropNdInvalid);
    }
    if !dad && martian_v6(u128::from(src)) {
        return Err(Counter::DropMartianSource);
    }
    Ok(Step::NdAdvert { l3: off, dad })
}

/// An ICMPv6 error sent to a VIP: it quotes a packet the backend sent from the VIP to a client.
fn icmp_error_v6(
    g: &Generation,
    icmp: &Icmpv6Packet<&[u8]>,
    vip_addr: u128,
    vip: u32,
    off: u16,
    len: u16,
    tos: u8,
) -> Result<Step, Counter> {
    let quote = icmp
        .embedded()
        .map_err(|_| Counter::DropIcmpErrorBadQuote)?;
    let proto = quote.protocol().0;
    if !(proto == PROTO_TCP || proto == PROTO_UDP)
        || !quote.upper_layer().has_header()
        || u128::from(quote.src_addr()) != vip_addr
    {
        return Err(Counter::DropIcmpErrorUnmatched);
    }
    let (client, sport, dport) = (
        u128::from(quote.dst_addr()),
        quote.dst_port(),
        quote.src_port(),
    );
    let service = service_for(g, vip, proto, dport).ok_or(Counter::DropIcmpErrorUnmatched)?;
    let key = FlowKeyV6::from_bits(client, vip_addr, sport, dport, proto);
    Ok(Step::Lb6(Lb {
        key,
        hash: key.hash(),
        table_hash: 0,
        service,
        l3: off,
        len,
        tos,
        tcp_flags: 0,
        icmp_error: true,
    }))
}

/// The source ACL: `group` is the ACL-LPM value of the source (0 = no rule covers it). The
/// first rule of the group that is global or belongs to `service`, and whose protocol (0 =
/// any) and destination ports match, decides. A packet without ports (ICMP) matches only rules
/// for any protocol and every port; a packet to no service (ICMP to a VIP, a port no service
/// has) only global rules.
#[inline]
fn acl_check(
    g: &Generation,
    group: u32,
    service: Option<u32>,
    proto: u8,
    port: Option<u16>,
) -> Result<(), Counter> {
    if group == 0 {
        return Ok(());
    }
    let group = g
        .acl_groups
        .get(group as usize - 1)
        .ok_or(Counter::DropBadTableReference)?;
    let first = group.first_rule as usize;
    let rules = g
        .acl_rules
        .get(first..first.saturating_add(group.rule_count as usize))
        .ok_or(Counter::DropBadTableReference)?;
    // A service past u16 has no rules of its own (the compiler refuses that case).
    let scope = service
        .and_then(|s| u16::try_from(s.wrapping_add(1)).ok())
        .unwrap_or(ACL_GLOBAL);
    for rule in rules {
        if rule.service != ACL_GLOBAL && rule.service != scope {
            continue;
        }
        let proto_ok = rule.protocol == 0 || rule.protocol == proto;
        let port_ok = match port {
            Some(p) => rule.port_lo <= p && p <= rule.port_hi,
            None => rule.protocol == 0 && rule.port_lo <= 1 && rule.port_hi == u16::MAX,
        };
        if proto_ok && port_ok {
            return if rule.action == ACL_DENY {
                Err(Counter::DropAcl)
            } else {
                Ok(())
            };
        }
    }
    Ok(())
}

/// The service of VIP group `vip` (the VIP-LPM value) for `proto` and destination `port`.
#[inline]
fn service_for(g: &Generation, vip: u32, proto: u8, port: u16) -> Option<u32> {
    let group = g.vip_groups.get((vip as usize).checked_sub(1)?)?;
    let first = group.first_entry as usize;
    g.vip_entries
        .get(first..first.saturating_add(group.entry_count as usize))?
        .iter()
        .find(|e| e.protocol == proto && e.port_lo <= port && port <= e.port_hi)
        .map(|e| e.service)
}
