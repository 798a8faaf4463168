//! A connection-table flood through the real data plane: pcap in → `switchyard-dataplane run`
//! on `net_pcap` ports → pcap out. Thousands of established TCP flows on a Maglev service and
//! on a round-robin one (SYN, ACK, data), then a million packets from random sources — SYNs,
//! then ACKs, then a mix — with legitimate new clients connecting during it, then more data on
//! every established flow. Run with a flow table smaller than the flood and one larger.
//!
//! Checked packet by packet in the backend port's capture (matched by the inner 5-tuple, in
//! order): every packet of every established flow comes out, each on the backend its SYN got;
//! every legitimate new client's packets all come out, on one backend.
//!
//! `FLOOD_PCAP_PACKETS` (environment) sets the flood's size (default 1 050 000).

// Test arithmetic on small numbers.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

mod common;
mod fixtures;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use common::*;
use fixtures::frames::{tcp4_frame, ACK, PSH_ACK, SYN};
use fixtures::{Variant, RR, VIP4};

/// Established flows per service.
const ESTABLISHED: u32 = 2_000;
/// A legitimate new client starts every this many flood packets.
const NEW_CLIENT_EVERY: usize = 10_000;

fn flood_packets() -> usize {
    std::env::var("FLOOD_PCAP_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_050_000)
}

/// A TCP frame with its source, source port and flags patched into a template (IPv4 header
/// checksum recomputed).
fn patched(template: &[u8], src: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = template.to_vec();
    f[26..30].copy_from_slice(&src.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[47] = flags;
    f[24..26].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for pair in f[14..34].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f
}

fn flood_through_the_appliance(name: &str, ipv4_flows: u32) {
    require_root();
    let dir = scratch(name);
    let _cleanup = RemoveDir(dir.clone());
    let maglev = tcp4_frame(Ipv4Addr::new(11, 0, 0, 1), 1024, VIP4, 443, SYN, &[]);
    let rr = tcp4_frame(Ipv4Addr::new(11, 0, 0, 1), 1024, RR, 80, SYN, &[]);
    let template = |is_rr: bool| if is_rr { &rr } else { &maglev };

    // (src, sport) → packets sent; the flows whose every packet is checked.
    let mut tracked: BTreeMap<(Ipv4Addr, u16), usize> = BTreeMap::new();
    let mut frames = Vec::new();
    let established: Vec<(bool, Ipv4Addr)> = (0..ESTABLISHED)
        .flat_map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            [
                (false, Ipv4Addr::new(10, 1, a, b)),
                (true, Ipv4Addr::new(100, 65, a, b)),
            ]
        })
        .collect();
    let mut send_tracked = |frames: &mut Vec<Vec<u8>>, is_rr: bool, src, sport, flags| {
        frames.push(patched(template(is_rr), src, sport, flags));
        *tracked.entry((src, sport)).or_default() += 1;
    };
    for flags in [SYN, ACK, PSH_ACK] {
        for &(is_rr, src) in &established {
            send_tracked(&mut frames, is_rr, src, 40_000, flags);
        }
    }
    let per_phase = flood_packets() / 3;
    let mut s = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(ipv4_flows);
    let mut clients = 0u32;
    for phase in 0..3 {
        for n in 0..per_phase {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let src = Ipv4Addr::from_bits(0x0b00_0000 + (s as u32) % 0x5f00_0000);
            let flags = match phase {
                0 => SYN,
                1 => ACK,
                _ if s >> 63 == 0 => SYN,
                _ => PSH_ACK,
            };
            frames.push(patched(
                template((s >> 62) & 1 == 1),
                src,
                (s >> 32) as u16 | 1024,
                flags,
            ));
            if n % 64 == 0 {
                let (is_rr, src) = established[(n / 64) % established.len()];
                send_tracked(&mut frames, is_rr, src, 40_000, PSH_ACK);
            }
            if n % NEW_CLIENT_EVERY == 0 {
                let [_, _, a, b] = clients.to_be_bytes();
                let is_rr = clients % 2 == 1;
                let src = if is_rr {
                    Ipv4Addr::new(100, 66, a, b)
                } else {
                    Ipv4Addr::new(10, 1, 200 + a % 50, b)
                };
                clients += 1;
                send_tracked(&mut frames, is_rr, src, 50_000, SYN);
            }
            if n % NEW_CLIENT_EVERY == NEW_CLIENT_EVERY / 2 {
                let [_, _, a, b] = (clients - 1).to_be_bytes();
                let is_rr = (clients - 1) % 2 == 1;
                let src = if is_rr {
                    Ipv4Addr::new(100, 66, a, b)
                } else {
                    Ipv4Addr::new(10, 1, 200 + a % 50, b)
                };
                send_tracked(&mut frames, is_rr, src, 50_000, ACK);
                send_tracked(&mut frames, is_rr, src, 50_000, PSH_ACK);
            }
        }
    }
    for _ in 0..2 {
        for &(is_rr, src) in &established {
            send_tracked(&mut frames, is_rr, src, 40_000, PSH_ACK);
        }
    }
    let total = frames.len();

    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);
    drop(frames);
    let table = dir.join("table.bin");
    std::fs::write(&table, Variant::Unlimited.generation().encode()).unwrap();
    let settings = pcap_settings(&dir, ipv4_flows);
    let stdout = run_table(
        &table,
        &settings,
        "10",
        &[
            format!(
                "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
                input.display(),
                dir.join("out0.pcap").display()
            ),
            format!(
                "--vdev=net_pcap1,tx_pcap={}",
                dir.join("out1.pcap").display()
            ),
        ],
    );
    let counters: HashMap<String, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("counter "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_owned(), v.parse().unwrap()))
        .collect();
    let get = |n: &str| counters.get(n).copied().unwrap_or(0);

    // Packet by packet: every tracked flow's packets, each on the flow's first backend.
    let out = read_pcap(&dir.join("out1.pcap"));
    let mut backend: HashMap<(Ipv4Addr, u16), Ipv4Addr> = HashMap::new();
    let mut seen: HashMap<(Ipv4Addr, u16), usize> = HashMap::new();
    let mut wrong = Vec::new();
    for f in &out {
        assert!(
            f.len() >= 56 && f[23] == 4,
            "IPIP over IPv4 expected: {f:02x?}"
        );
        let v4 = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        let key = (v4(46), u16::from_be_bytes([f[54], f[55]]));
        if !tracked.contains_key(&key) {
            continue;
        }
        *seen.entry(key).or_default() += 1;
        let b = *backend.entry(key).or_insert(v4(30));
        if b != v4(30) {
            wrong.push(format!("{key:?}: {} after {b}", v4(30)));
        }
    }
    let missing: Vec<_> = tracked
        .iter()
        .filter(|(k, n)| seen.get(*k) != Some(*n))
        .map(|(k, n)| format!("{k:?}: sent {n}, out {:?}", seen.get(k)))
        .collect();
    let rate: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("counter "))
        .collect();
    eprintln!(
        "{name}: table {ipv4_flows} IPv4 flows; {total} packets in ({} flood, {} tracked flows: \
         {} established, {clients} new clients during the flood), {} out of the backend port; \
         flows tracked {} with every packet on one backend: {}; flood mode entered {} left {} \
         for {} ms; forwarded_stateless {}, flow_provisional_inserts {}, \
         flow_provisional_promoted {}, flow_insert_refused {}, flow_insert_throttled {}, \
         flow_flood_stateless {}, flow_evicted {}, flow_inserts {}\n{}",
        3 * per_phase,
        tracked.len(),
        established.len(),
        out.len(),
        tracked.len(),
        tracked.len() - missing.len(),
        get("flow_flood_entered"),
        get("flow_flood_left"),
        get("flow_flood_milliseconds"),
        get("forwarded_stateless"),
        get("flow_provisional_inserts"),
        get("flow_provisional_promoted"),
        get("flow_insert_refused"),
        get("flow_insert_throttled"),
        get("flow_flood_stateless"),
        get("flow_evicted"),
        get("flow_inserts"),
        rate.join("\n"),
    );
    assert!(
        wrong.is_empty(),
        "{} moved: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(
        missing.is_empty(),
        "{} flows lost packets: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(out.len(), total, "every packet is forwarded");
}

#[test]
fn flood_through_net_pcap_on_a_table_smaller_than_the_flood() {
    flood_through_the_appliance("flood-small", 65_536);
}

#[test]
fn flood_through_net_pcap_on_a_table_larger_than_the_flood() {
    flood_through_the_appliance("flood-large", 2_097_152);
}
