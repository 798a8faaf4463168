//! Encapsulation for direct server return: the client's IP packet, untouched, inside an outer
//! IP header (IPIP) or outer IP + UDP + GUE, addressed to the backend.
//!
//! One function per (outer family, IPIP/GUE), monomorphised from [`encap_as`]; the caller
//! dispatches once on the backend's family and the generation's encapsulation.
//!
//! Outer header: source from the egress interface's outer-source prefix (the generation's
//! default unless the interface sets its own) with its host bits taken
//! from the flow hash (so the backend's RSS spreads flows over its queues), destination the
//! backend, TTL / hop limit 64, ToS / traffic class copied from the inner packet, IPv4 DF set
//! and identification 0 (an atomic datagram, RFC 6864), IPv6 flow label = low 20 bits of the
//! flow hash. GUE: UDP source port `0xC000 | hash & 0x3FFF`, destination the configured GUE
//! port, a 4-byte variant-0 data header with the inner protocol (4 or 41); the UDP checksum is
//! 0 over IPv4 (RFC 6936 allows it for tunnels; the inner packet has its own) and computed over
//! IPv6. Ethernet: from the egress interface's MAC to its gateway's MAC (configured, or
//! resolved by [`crate::neighbour`]), untagged.
//!
//! Egress is the backend port ([`super::PortMap::backend`]), or the RX port on a one-armed
//! appliance; an egress interface with neither a gateway MAC nor a gateway address drops the
//! packet before the connection table is touched (`drop_no_gateway_mac`), one whose gateway is
//! not resolved yet `drop_gateway_unresolved`. **VLAN tags on input are not carried to the
//! output**: the frame to the backend is built from scratch for the egress interface, and the
//! policy has no per-interface VLAN (a tagged uplink would need one). Ethernet padding after
//! the inner packet is cut. Counted `forwarded_{ipip,gue}_{v4,v6}` by outer family.

use std::net::Ipv6Addr;

use super::counters::Counter;
use super::view::{PortBinding, View};
use super::PacketBuf;
use crate::wire::{
    checksum, ethernet, gue, ipv4, ipv6, udp, EtherType, EthernetAddress, EthernetFrame,
    EthernetRepr, GuePacket, GueRepr, IpProtocol, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

/// TTL / hop limit of the outer header.
pub(crate) const OUTER_TTL: u8 = 64;
/// Bytes GUE adds after the outer IP header: UDP and the base GUE header.
pub(crate) const GUE_LEN: usize = udp::HEADER_LEN + gue::HEADER_LEN;

/// The GUE source port of a flow.
#[inline]
#[must_use]
pub fn gue_src_port(hash: u32) -> u16 {
    // 14 bits of hash under a fixed 0b11 prefix: the mask makes the cast exact.
    #[allow(clippy::cast_possible_truncation)]
    let low = (hash & 0x3fff) as u16;
    0xc000 | low
}

/// Bytes the encapsulation adds in front of the inner IP packet (Ethernet not included).
#[inline]
pub(crate) const fn overhead(gue: bool, outer_v6: bool) -> usize {
    let ip = if outer_v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    };
    ip + if gue { GUE_LEN } else { 0 }
}

/// What the inner packet is and where it lies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inner {
    /// Offset of its IP header in the frame.
    pub l3: usize,
    /// Its length (padding after it is cut).
    pub len: usize,
    /// 4 (IPv4) or 41 (IPv6): the outer protocol for IPIP, the GUE protocol field.
    pub protocol: IpProtocol,
    pub tos: u8,
    pub hash: u32,
}

/// Encapsulates the inner packet to `backend` (16 address bytes, IPv4 in the first 4) and
/// readdresses the frame from `egress` to `gateway` (its gateway's MAC). Returns the
/// forwarding counter.
///
/// # Errors
/// [`Counter::DropNoBufferRoom`] when the headroom cannot take the outer headers.
#[inline]
pub(crate) fn encapsulate<P: PacketBuf>(
    pkt: &mut P,
    view: &View,
    inner: &Inner,
    backend: &[u8; 16],
    backend_v6: bool,
    egress: &PortBinding,
    gateway: EthernetAddress,
) -> Result<Counter, Counter> {
    let to = (egress, gateway);
    match (backend_v6, view.gue) {
        (false, false) => encap_as::<P, OuterV4, false>(pkt, view, inner, backend, to),
        (false, true) => encap_as::<P, OuterV4, true>(pkt, view, inner, backend, to),
        (true, false) => encap_as::<P, OuterV6, false>(pkt, view, inner, backend, to),
        (true, true) => encap_as::<P, OuterV6, true>(pkt, view, inner, backend, to),
    }
}

/// An outer IP family.
trait Outer {
    const HEADER_LEN: usize;
    const ETHERTYPE: EtherType;
    const FORWARDED_IPIP: Counter;
    const FORWARDED_GUE: Counter;
    /// Writes the outer IP header into `header` (exactly `HEADER_LEN` bytes).
    fn emit(
        header: &mut [u8],
        egress: &PortBinding,
        dst: &[u8; 16],
        next: IpProtocol,
        payload: usize,
        inner: &Inner,
    );
    /// Fills the UDP checksum of a GUE datagram; `packet` starts at the outer IP header.
    fn fill_udp_checksum(packet: &mut [u8]);
}

struct OuterV4;
struct OuterV6;

impl Outer for OuterV4 {
    const HEADER_LEN: usize = ipv4::HEADER_LEN;
    const ETHERTYPE: EtherType = EtherType::IPV4;
    const FORWARDED_IPIP: Counter = Counter::ForwardedIpipV4;
    const FORWARDED_GUE: Counter = Counter::ForwardedGueV4;

    #[inline]
    fn emit(
        header: &mut [u8],
        egress: &PortBinding,
        dst: &[u8; 16],
        next: IpProtocol,
        payload: usize,
        inner: &Inner,
    ) {
        let bytes = outer_ipv4(
            egress.outer_src_v4(inner.hash),
            u32::from_be_bytes([dst[0], dst[1], dst[2], dst[3]]),
            next,
            payload,
            inner.tos,
        );
        header.copy_from_slice(&bytes);
    }

    #[inline]
    fn fill_udp_checksum(_packet: &mut [u8]) {
        // Zero over IPv4 (RFC 6936 for tunnels): no pass over the payload.
    }
}

impl Outer for OuterV6 {
    const HEADER_LEN: usize = ipv6::HEADER_LEN;
    const ETHERTYPE: EtherType = EtherType::IPV6;
    const FORWARDED_IPIP: Counter = Counter::ForwardedIpipV6;
    const FORWARDED_GUE: Counter = Counter::ForwardedGueV6;

    #[inline]
    fn emit(
        header: &mut [u8],
        egress: &PortBinding,
        dst: &[u8; 16],
        next: IpProtocol,
        payload: usize,
        inner: &Inner,
    ) {
        Ipv6Repr {
            src_addr: Ipv6Addr::from(egress.outer_src_v6(inner.hash)),
            dst_addr: Ipv6Addr::from(*dst),
            next_header: next,
            payload_len: payload,
            hop_limit: OUTER_TTL,
            traffic_class: inner.tos,
            flow_label: inner.hash & 0x000f_ffff,
        }
        .emit(&mut Ipv6Packet::new_unchecked(header));
    }

    #[inline]
    fn fill_udp_checksum(packet: &mut [u8]) {
        let Some((header, datagram)) = packet.split_at_mut_checked(ipv6::HEADER_LEN) else {
            return;
        };
        let ip = Ipv6Packet::new_unchecked(&*header);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if datagram.len() >= udp::HEADER_LEN {
            UdpPacket::new_unchecked(datagram).fill_checksum_v6(&src, &dst);
        }
    }
}

/// The outer IPv4 header — exactly what `Ipv4Repr::emit` writes for an option-less header
/// with TTL [`OUTER_TTL`], identification 0 and DF — with the checksum summed from the field
/// values in registers. `emit` fills the checksum by reading back bytes it has just stored one
/// field at a time, and that read cannot be forwarded from the store buffer: it stalls every
/// packet for a dozen cycles or more. A test checks the two agree.
#[inline(always)]
pub(crate) fn outer_ipv4(
    src: u32,
    dst: u32,
    next: IpProtocol,
    payload: usize,
    tos: u8,
) -> [u8; 20] {
    let total = u16::try_from(ipv4::HEADER_LEN.saturating_add(payload)).unwrap_or(u16::MAX);
    let w0 = 0x4500_0000 | u32::from(tos) << 16 | u32::from(total);
    let w1 = 0x0000_4000; // identification 0, DF
    let w2 = u32::from(OUTER_TTL) << 24 | u32::from(next.0) << 16;
    let sum = u64::from(w0) + u64::from(w1) + u64::from(w2) + u64::from(src) + u64::from(dst);
    let w2 = w2 | u32::from(checksum::finish(sum));
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip([w0, w1, w2, src, dst]) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[inline]
fn encap_as<P: PacketBuf, O: Outer, const GUE: bool>(
    pkt: &mut P,
    view: &View,
    inner: &Inner,
    backend: &[u8; 16],
    (egress, gateway): (&PortBinding, EthernetAddress),
) -> Result<Counter, Counter> {
    let tunnel = if GUE { GUE_LEN } else { 0 };
    let front = ethernet::HEADER_LEN + O::HEADER_LEN + tunnel;
    // Drop the L2 header (and any tags) and the Ethernet padding after the inner packet.
    pkt.truncate(inner.l3 + inner.len);
    if !pkt.adj(inner.l3) || pkt.data().len() != inner.len {
        return Err(Counter::DropTruncated);
    }
    if !pkt.prepend(front) {
        return Err(Counter::DropNoBufferRoom);
    }
    let data = pkt.data_mut();
    let Some(head) = data.get_mut(..front) else {
        return Err(Counter::DropNoBufferRoom);
    };
    let (l2, rest) = head.split_at_mut(ethernet::HEADER_LEN);
    EthernetRepr {
        src_addr: egress.mac,
        dst_addr: gateway,
        ethertype: O::ETHERTYPE,
    }
    .emit(&mut EthernetFrame::new_unchecked(l2));
    let (ip, tunnel_header) = rest.split_at_mut(O::HEADER_LEN);
    let next = if GUE { IpProtocol::UDP } else { inner.protocol };
    O::emit(ip, egress, backend, next, tunnel + inner.len, inner);
    if GUE {
        let (udp_header, gue_header) = tunnel_header.split_at_mut(udp::HEADER_LEN);
        UdpRepr {
            src_port: gue_src_port(inner.hash),
            dst_port: view.gue_port,
            payload_len: gue::HEADER_LEN + inner.len,
        }
        .emit(&mut UdpPacket::new_unchecked(udp_header));
        GueRepr::Data {
            protocol: inner.protocol,
        }
        .emit(&mut GuePacket::new_unchecked(gue_header));
        if let Some(packet) = data.get_mut(ethernet::HEADER_LEN..) {
            O::fill_udp_checksum(packet);
        }
    }
    Ok(if GUE {
        O::FORWARDED_GUE
    } else {
        O::FORWARDED_IPIP
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, Ipv4Repr};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    proptest! {
        #[test]
        fn outer_ipv4_is_what_the_wire_module_emits(
            src in any::<u32>(),
            dst in any::<u32>(),
            next in any::<u8>(),
            payload in 0usize..70_000,
            tos in any::<u8>(),
        ) {
            let mut expected = [0u8; 20];
            Ipv4Repr {
                src_addr: Ipv4Addr::from(src),
                dst_addr: Ipv4Addr::from(dst),
                protocol: IpProtocol(next),
                payload_len: payload.min(Ipv4Repr::MAX_PAYLOAD_LEN),
                ttl: OUTER_TTL,
                tos,
                ident: 0,
                dont_frag: true,
            }
            .emit(&mut Ipv4Packet::new_unchecked(&mut expected[..]));
            let got = outer_ipv4(src, dst, IpProtocol(next), payload.min(Ipv4Repr::MAX_PAYLOAD_LEN), tos);
            prop_assert_eq!(got, expected);
            prop_assert!(Ipv4Packet::new_unchecked(&got[..]).verify_checksum());
        }
    }

    #[test]
    fn gue_source_ports_stay_in_the_dynamic_range() {
        for h in [0, 1, 0x3fff, 0x4000, u32::MAX] {
            let p = gue_src_port(h);
            assert!(p >= 0xc000);
            assert_eq!(u32::from(p & 0x3fff), h & 0x3fff);
        }
    }
}
