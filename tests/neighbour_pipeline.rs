//! Gateway resolution through the pipeline, in process: a worker with no gateway MAC drops
//! (counted) until the resolver learns the gateway from an ARP reply or neighbour
//! advertisement the worker handed it, then forwards to the learned MAC per outer family;
//! hostile and malformed news is counted and changes nothing; a flood of news never blocks
//! the worker. (tests/neighbour_tap.rs shows the same through DPDK against a kernel router.)

mod fixtures;

use std::net::{Ipv4Addr, Ipv6Addr};

use fixtures::frames::*;
use fixtures::*;
use switchyard::flow::InsertLimit;
use switchyard::neighbour::{links, Resolver, Timers, OBSERVATION_QUEUE};
use switchyard::pipeline::{
    Counter, PacketBuf as _, PipelineWorker, VecPacket, Verdict, WorkerConfig,
};
use switchyard::wire::{ArpOp, EthernetAddress, Icmpv6Repr, NdpFlags};

const GW4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const OWN4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LEARNED: [u8; 6] = [0x02, 0x42, 0, 0, 0, 0x01];
const MOVED: [u8; 6] = [0x02, 0x42, 0, 0, 0, 0x02];
/// Port 1 (`backend`): where encapsulated traffic leaves, and the interface without a MAC.
const BACKEND_PORT: u16 = 1;

fn gw6() -> Ipv6Addr {
    "2001:db8:200::fe".parse().unwrap()
}

fn own6() -> Ipv6Addr {
    "2001:db8:200::1".parse().unwrap()
}

fn worker() -> PipelineWorker {
    let mut w = PipelineWorker::new(WorkerConfig {
        flows_v4: 4096,
        flows_v6: 1024,
        insert_limit: InsertLimit::default(),
        ports: port_map(),
        worker: 0,
    });
    w.set_generation(Variant::NoGatewayMac.generation());
    w
}

fn run(w: &mut PipelineWorker, frame: &[u8], port: u16) -> (Verdict, Vec<u8>) {
    let mut p = VecPacket::new(frame);
    let v = w.process(&mut p, port, 1);
    (v, p.data().to_vec())
}

/// An ARP packet arriving on the backend port.
fn arp_in(op: ArpOp, sha: [u8; 6], spa: Ipv4Addr, dst: [u8; 6]) -> Vec<u8> {
    let l2 = L2 {
        dst,
        src: sha,
        vlans: Vec::new(),
    };
    let tha = if op == ArpOp::Reply {
        BACKEND_MAC
    } else {
        [0; 6]
    };
    let tpa = if op == ArpOp::Reply { OWN4 } else { spa };
    frame(&l2, ARP, &arp(op, sha, spa, tha, tpa))
}

/// A neighbour advertisement arriving on the backend port.
fn na_in(
    target: Ipv6Addr,
    flags: NdpFlags,
    lladdr: Option<[u8; 6]>,
    dst: Ipv6Addr,
    hop_limit: u8,
) -> Vec<u8> {
    let repr = Icmpv6Repr::NeighborAdvert {
        flags,
        target_addr: target,
        target_lladdr: lladdr.map(EthernetAddress),
    };
    let icmp = icmpv6(gw6(), dst, &repr);
    let mut h = V6::new(gw6(), dst, 58);
    h.hop_limit = hop_limit;
    let dst_mac = if dst.is_multicast() {
        [0x33, 0x33, 0, 0, 0, 1]
    } else {
        BACKEND_MAC
    };
    let l2 = L2 {
        dst: dst_mac,
        src: LEARNED,
        vlans: Vec::new(),
    };
    frame(&l2, IPV6, &ipv6(&h, &icmp))
}

fn syn(sport: u16) -> Vec<u8> {
    tcp4_frame(OTHER, sport, VIP4, 443, SYN, &[])
}

#[test]
fn drops_until_resolved_then_forwards_to_the_learned_mac_per_family() {
    let (r, n, _outbox) = links(3);
    let mut resolver = Resolver::new(r, Timers::default());
    resolver.set_generation(&Variant::NoGatewayMac.generation(), &port_map(), 0);
    let mut w = worker();
    w.set_neighbours(n);

    for sport in 40_000..40_005 {
        assert_eq!(run(&mut w, &syn(sport), 0).0, Verdict::Drop);
    }
    assert_eq!(w.counters().get(Counter::DropGatewayUnresolved), 5);
    assert_eq!(w.flow_count(), (0, 0), "nothing inserted while unresolved");

    // The gateway answers on the backend port: handed over, then resolved by the main lcore.
    let (v, _) = run(
        &mut w,
        &arp_in(ArpOp::Reply, LEARNED, GW4, BACKEND_MAC),
        BACKEND_PORT,
    );
    assert_eq!(v, Verdict::Drop);
    assert_eq!(w.counters().get(Counter::NeighbourLearned), 1);
    resolver.tick(1);

    let (v, out) = run(&mut w, &syn(40_100), 0);
    assert_eq!(v, Verdict::Forward(BACKEND_PORT));
    assert_eq!(&out[0..6], &LEARNED, "to the learned MAC");
    assert_eq!(&out[6..12], &BACKEND_MAC);

    // IPv4 resolved, IPv6 not: a VIP whose pool has IPv6 backends still drops, counted.
    let before = w.counters().get(Counter::DropGatewayUnresolved);
    let v6_pool = tcp4_frame(OTHER, 40_200, Ipv4Addr::new(203, 0, 113, 11), 443, SYN, &[]);
    assert_eq!(run(&mut w, &v6_pool, 0).0, Verdict::Drop);
    assert_eq!(w.counters().get(Counter::DropGatewayUnresolved), before + 1);
    let na = na_in(
        gw6(),
        NdpFlags::SOLICITED | NdpFlags::OVERRIDE,
        Some(LEARNED),
        own6(),
        255,
    );
    assert_eq!(run(&mut w, &na, BACKEND_PORT).0, Verdict::Drop);
    assert_eq!(w.counters().get(Counter::NeighbourLearned), 2);
    resolver.tick(2);
    let (v, out) = run(&mut w, &v6_pool, 0);
    assert_eq!(v, Verdict::Forward(BACKEND_PORT));
    assert_eq!(&out[0..6], &LEARNED);
    assert_eq!(&out[12..14], &[0x86, 0xdd], "outer IPv6");

    // Gratuitous ARP from the gateway with a new MAC: new flows go there at once.
    let garp = arp_in(ArpOp::Request, MOVED, GW4, [0xff; 6]);
    assert_eq!(run(&mut w, &garp, BACKEND_PORT).0, Verdict::Drop);
    resolver.tick(3);
    let (_, out) = run(&mut w, &syn(40_101), 0);
    assert_eq!(&out[0..6], &MOVED);
    assert_eq!(resolver.stats().changed, 1);
}

#[test]
fn hostile_and_malformed_news_is_counted_and_changes_nothing() {
    let (r, n, _outbox) = links(3);
    let mut resolver = Resolver::new(r, Timers::default());
    resolver.set_generation(&Variant::NoGatewayMac.generation(), &port_map(), 0);
    let mut w = worker();
    w.set_neighbours(n.clone());
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let o = NdpFlags::OVERRIDE;
    let cases: Vec<(&str, Vec<u8>, u16, Counter)> = vec![
        (
            "ARP reply about an address we never asked for",
            arp_in(
                ArpOp::Reply,
                LEARNED,
                Ipv4Addr::new(192, 0, 2, 99),
                BACKEND_MAC,
            ),
            BACKEND_PORT,
            Counter::DropNeighbourNotGateway,
        ),
        (
            "gratuitous ARP from another host",
            arp_in(
                ArpOp::Request,
                LEARNED,
                Ipv4Addr::new(192, 0, 2, 77),
                [0xff; 6],
            ),
            BACKEND_PORT,
            Counter::DropNeighbourNotGateway,
        ),
        (
            "ARP reply claiming the gateway is at the broadcast MAC",
            arp_in(ArpOp::Reply, [0xff; 6], GW4, BACKEND_MAC),
            BACKEND_PORT,
            Counter::DropNeighbourBadMac,
        ),
        (
            "ARP reply claiming a multicast MAC",
            arp_in(ArpOp::Reply, [0x01, 0, 0x5e, 0, 0, 1], GW4, BACKEND_MAC),
            BACKEND_PORT,
            Counter::DropNeighbourBadMac,
        ),
        (
            "ARP reply claiming the zero MAC",
            arp_in(ArpOp::Reply, [0; 6], GW4, BACKEND_MAC),
            BACKEND_PORT,
            Counter::DropNeighbourBadMac,
        ),
        (
            "ARP reply on the uplink, whose gateway MAC is configured",
            arp_in(
                ArpOp::Reply,
                LEARNED,
                Ipv4Addr::new(198, 51, 100, 254),
                UPLINK_MAC,
            ),
            0,
            Counter::DropArpIgnored,
        ),
        (
            "truncated ARP",
            arp_in(ArpOp::Reply, LEARNED, GW4, BACKEND_MAC)[..30].to_vec(),
            BACKEND_PORT,
            Counter::DropTruncated,
        ),
        (
            "unsolicited NA about another address",
            na_in(
                "2001:db8:200::77".parse().unwrap(),
                o,
                Some(LEARNED),
                all_nodes,
                255,
            ),
            BACKEND_PORT,
            Counter::DropNeighbourNotGateway,
        ),
        (
            "NA with a multicast target link-layer address",
            na_in(gw6(), o, Some([0x33, 0x33, 0, 0, 0, 1]), all_nodes, 255),
            BACKEND_PORT,
            Counter::DropNeighbourBadMac,
        ),
        (
            "NA with a hop limit below 255 (not from the link)",
            na_in(gw6(), o, Some(LEARNED), own6(), 64),
            BACKEND_PORT,
            Counter::DropNaInvalid,
        ),
        (
            "solicited NA to a multicast address",
            na_in(
                gw6(),
                NdpFlags::SOLICITED | o,
                Some(LEARNED),
                all_nodes,
                255,
            ),
            BACKEND_PORT,
            Counter::DropNaInvalid,
        ),
        (
            "NA without a target link-layer address",
            na_in(gw6(), o, None, own6(), 255),
            BACKEND_PORT,
            Counter::DropNaInvalid,
        ),
        (
            "NA with a bad checksum",
            {
                let mut f = na_in(gw6(), o, Some(LEARNED), own6(), 255);
                let last = f.len() - 1;
                f[last] ^= 0xff;
                f
            },
            BACKEND_PORT,
            Counter::DropBadChecksum,
        ),
    ];
    for (what, bytes, port, counter) in &cases {
        let before = w.counters().get(*counter);
        assert_eq!(run(&mut w, bytes, *port).0, Verdict::Drop, "{what}");
        assert_eq!(
            w.counters().get(*counter),
            before + 1,
            "{what}: {}",
            counter.name()
        );
    }
    assert_eq!(w.counters().get(Counter::NeighbourLearned), 0);
    resolver.tick(1);
    assert!(
        !n.slots.port(BACKEND_PORT).unwrap().any(),
        "nothing resolved"
    );
    assert_eq!(resolver.stats().resolved, 0);
}

#[test]
fn a_flood_of_news_fills_the_queue_and_never_blocks_the_worker() {
    let (_r, n, _outbox) = links(3);
    let mut w = worker();
    w.set_neighbours(n);
    let reply = arp_in(ArpOp::Reply, LEARNED, GW4, BACKEND_MAC);
    let sent = OBSERVATION_QUEUE as u64 + 100;
    for _ in 0..sent {
        assert_eq!(run(&mut w, &reply, BACKEND_PORT).0, Verdict::Drop);
    }
    assert_eq!(
        w.counters().get(Counter::NeighbourLearned),
        OBSERVATION_QUEUE as u64
    );
    assert_eq!(w.counters().get(Counter::DropNeighbourQueueFull), 100);
}
