//! The frames the resolver sends: ARP requests and neighbour solicitations (broadcast /
//! solicited-node multicast to resolve, unicast to refresh), gratuitous ARP and unsolicited
//! neighbour advertisements (announcements), and the VIP host addresses found in the
//! generation's VIP tables.

use std::net::{Ipv4Addr, Ipv6Addr};

use switchyard_table::lpm::{CHILD, GROUP_ENTRIES, MAX_VALUE, ROOT_ENTRIES};

use crate::wire::{
    ethernet, ipv6, ArpOp, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdpFlags,
};

/// VIP host addresses announced per family at most (the rest are answered when asked).
pub const MAX_VIP_ANNOUNCE: usize = 1024;

const ZERO_MAC: EthernetAddress = EthernetAddress([0; 6]);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn ethernet_frame(
    src: EthernetAddress,
    dst: EthernetAddress,
    ty: EtherType,
    len: usize,
) -> Vec<u8> {
    let mut bytes = vec![0; ethernet::HEADER_LEN + len];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: ty,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
    bytes
}

fn arp_frame(mac: EthernetAddress, dst: EthernetAddress, arp: &ArpRepr) -> Vec<u8> {
    let mut bytes = ethernet_frame(mac, dst, EtherType::ARP, arp.buffer_len());
    arp.emit(&mut ArpPacket::new_unchecked(
        &mut bytes[ethernet::HEADER_LEN..],
    ));
    bytes
}

/// "Who has `target`? Tell `src_ip`", from `mac`: broadcast, or unicast to `to` (a refresh).
#[must_use]
pub fn arp_request(
    mac: EthernetAddress,
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
    to: Option<EthernetAddress>,
) -> Vec<u8> {
    let arp = ArpRepr {
        operation: ArpOp::Request,
        sender_hardware_addr: mac,
        sender_protocol_addr: src_ip,
        target_hardware_addr: ZERO_MAC,
        target_protocol_addr: target,
    };
    arp_frame(mac, to.unwrap_or(EthernetAddress::BROADCAST), &arp)
}

/// A gratuitous ARP announcing `addr` at `mac` (the request form, sender = target address).
#[must_use]
pub fn gratuitous_arp(mac: EthernetAddress, addr: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr {
        operation: ArpOp::Request,
        sender_hardware_addr: mac,
        sender_protocol_addr: addr,
        target_hardware_addr: ZERO_MAC,
        target_protocol_addr: addr,
    };
    arp_frame(mac, EthernetAddress::BROADCAST, &arp)
}

fn icmpv6_frame(
    mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &Icmpv6Repr,
) -> Vec<u8> {
    let len = msg.buffer_len();
    let mut bytes = ethernet_frame(mac, dst_mac, EtherType::IPV6, ipv6::HEADER_LEN + len);
    let (header, payload) = bytes[ethernet::HEADER_LEN..].split_at_mut(ipv6::HEADER_LEN);
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: len,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(header));
    msg.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(payload));
    bytes
}

/// The MAC of an IPv6 multicast group (33:33 + its low 32 bits).
fn multicast_mac(group: Ipv6Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// A neighbour solicitation for `target` from `src_ip` at `mac` (with our link-layer address):
/// to the target's solicited-node group, or unicast to `to` (a refresh).
#[must_use]
pub fn neighbor_solicit(
    mac: EthernetAddress,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
    to: Option<EthernetAddress>,
) -> Vec<u8> {
    let (dst, dst_mac) = match to {
        Some(m) => (target, m),
        None => {
            let group = Ipv6Addr::from(
                0xff02_0000_0000_0000_0000_0001_ff00_0000 | (u128::from(target) & 0xff_ffff),
            );
            (group, multicast_mac(group))
        }
    };
    let ns = Icmpv6Repr::NeighborSolicit {
        target_addr: target,
        source_lladdr: Some(mac),
    };
    icmpv6_frame(mac, dst_mac, src_ip, dst, &ns)
}

/// An unsolicited neighbour advertisement of `addr` at `mac` to all nodes (override set).
#[must_use]
pub fn unsolicited_na(mac: EthernetAddress, addr: Ipv6Addr) -> Vec<u8> {
    let na = Icmpv6Repr::NeighborAdvert {
        flags: NdpFlags::OVERRIDE,
        target_addr: addr,
        target_lladdr: Some(mac),
    };
    icmpv6_frame(mac, multicast_mac(ALL_NODES), addr, ALL_NODES, &na)
}

/// The announcement of `addr` at `mac`: gratuitous ARP or unsolicited NA.
#[must_use]
pub fn announce_frames(mac: EthernetAddress, addr: std::net::IpAddr) -> Vec<u8> {
    match addr {
        std::net::IpAddr::V4(a) => gratuitous_arp(mac, a),
        std::net::IpAddr::V6(a) => unsolicited_na(mac, a),
    }
}

/// Walks a flat LPM table (see `switchyard_table::lpm`) and collects the single-address VIPs:
/// entries of the deepest level whose value is neither 0 nor the value most entries of their
/// group share (which is what a covering prefix, expanded into the group, leaves). Wider VIP
/// prefixes are not announced (answered when asked). At most `max` addresses; the walk visits
/// each group at most once however the table is linked.
fn lpm_hosts(table: &[u32], levels: usize, max: usize) -> Vec<u128> {
    let groups = table.len().saturating_sub(ROOT_ENTRIES) / GROUP_ENTRIES;
    let mut visited = vec![false; groups];
    let mut out = Vec::new();
    // (group, level of its entries, address bits above it)
    let mut stack: Vec<(Option<usize>, usize, u128)> = vec![(None, 0, 0)];
    while let Some((group, level, prefix)) = stack.pop() {
        let entries = match group {
            None => table.get(..ROOT_ENTRIES.min(table.len())).unwrap_or(&[]),
            Some(g) => {
                let base = ROOT_ENTRIES + g * GROUP_ENTRIES;
                table.get(base..base + GROUP_ENTRIES).unwrap_or(&[])
            }
        };
        let stride = if group.is_none() { 16 } else { 8 };
        if level == levels {
            let inherited = most_common(entries);
            for (i, &e) in entries.iter().enumerate() {
                if e != 0 && e != inherited && e & CHILD == 0 {
                    out.push((prefix << stride) | i as u128);
                    if out.len() >= max {
                        return out;
                    }
                }
            }
            continue;
        }
        for (i, &e) in entries.iter().enumerate() {
            let g = (e & MAX_VALUE) as usize;
            if e & CHILD != 0 && g < groups && !visited[g] {
                visited[g] = true;
                stack.push((Some(g), level + 1, (prefix << stride) | i as u128));
            }
        }
    }
    out
}

/// The value most entries hold.
fn most_common(entries: &[u32]) -> u32 {
    let mut sorted = entries.to_vec();
    sorted.sort_unstable();
    let mut best = (0, 0u32);
    for run in sorted.chunk_by(|a, b| a == b) {
        if run.len() > best.0 {
            best = (run.len(), run[0]);
        }
    }
    best.1
}

/// The single-address IPv4 VIPs of a VIP table (at most [`MAX_VIP_ANNOUNCE`]).
#[must_use]
pub fn vip_hosts_v4(table: &[u32]) -> Vec<Ipv4Addr> {
    lpm_hosts(table, 2, MAX_VIP_ANNOUNCE)
        .into_iter()
        .filter_map(|a| u32::try_from(a).ok().map(Ipv4Addr::from))
        .collect()
}

/// The single-address IPv6 VIPs of a VIP table (at most [`MAX_VIP_ANNOUNCE`]).
#[must_use]
pub fn vip_hosts_v6(table: &[u32]) -> Vec<Ipv6Addr> {
    lpm_hosts(table, 14, MAX_VIP_ANNOUNCE)
        .into_iter()
        .map(Ipv6Addr::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_table::lpm::{build_v4, build_v6};

    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

    #[test]
    fn arp_request_broadcast_and_unicast() {
        let f = arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 254),
            None,
        );
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert!(eth.dst_addr().is_broadcast());
        assert_eq!(eth.src_addr(), MAC);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(&f[14..]).unwrap()).unwrap();
        assert_eq!(arp.operation, ArpOp::Request);
        assert_eq!(arp.target_protocol_addr, Ipv4Addr::new(192, 0, 2, 254));
        assert_eq!(arp.sender_protocol_addr, Ipv4Addr::new(192, 0, 2, 1));
        let to = EthernetAddress([2, 0, 0, 0, 0, 0xfe]);
        let f = arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 254),
            Some(to),
        );
        assert_eq!(EthernetFrame::new_checked(&f[..]).unwrap().dst_addr(), to);
    }

    #[test]
    fn solicitation_goes_to_the_solicited_node_group_and_parses() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
        let f = neighbor_solicit(MAC, src, target, None);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            eth.dst_addr(),
            EthernetAddress([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(
            ip.dst_addr(),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::NeighborSolicit {
                target_addr: target,
                source_lladdr: Some(MAC)
            }
        );
    }

    #[test]
    fn unsolicited_advert_to_all_nodes() {
        let vip: Ipv6Addr = "2001:db8:cafe::10".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dst_addr(), ALL_NODES);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let Icmpv6Repr::NeighborAdvert {
            flags,
            target_addr,
            target_lladdr,
        } = Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp).unwrap()
        else {
            panic!("not an advertisement")
        };
        assert_eq!(
            (flags, target_addr, target_lladdr),
            (NdpFlags::OVERRIDE, vip, Some(MAC))
        );
    }

    #[test]
    fn vip_hosts_from_the_lpm() {
        let t = build_v4(&[
            (u32::from(Ipv4Addr::new(203, 0, 113, 10)), 32, 1),
            (u32::from(Ipv4Addr::new(203, 0, 113, 11)), 32, 2),
            (u32::from(Ipv4Addr::new(198, 18, 0, 0)), 24, 3),
        ])
        .unwrap();
        let mut hosts = vip_hosts_v4(&t);
        hosts.sort();
        assert_eq!(
            hosts,
            [
                Ipv4Addr::new(203, 0, 113, 10),
                Ipv4Addr::new(203, 0, 113, 11)
            ]
        );
        let vip: Ipv6Addr = "2001:db8:cafe::10".parse().unwrap();
        let t6 = build_v6(&[(u128::from(vip), 128, 1), (0x2001_0db8 << 96, 32, 2)]).unwrap();
        assert_eq!(vip_hosts_v6(&t6), [vip]);
        // Garbage never panics or loops.
        let mut junk = vec![CHILD | 5; ROOT_ENTRIES + 2 * GROUP_ENTRIES];
        junk[3] = CHILD;
        let _ = vip_hosts_v4(&junk);
        let _ = vip_hosts_v6(&junk);
        assert!(vip_hosts_v4(&[]).is_empty());
    }
}
