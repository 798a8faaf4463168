//! The neighbour state machine, run by the main lcore (see the module above for who does what).
//!
//! One entry per (port, gateway address) the generation asks to resolve: an interface whose
//! `gateway` has an `ipv4` / `ipv6` address but no `mac`, on a port bound to it. A static MAC
//! wins: that family is not resolved at all.
//!
//! ```text
//!            answer                           reachable_ms without news
//! INCOMPLETE ───────► REACHABLE (MAC used) ──────────────────────────► PROBE (MAC still used)
//!  ▲  broadcast ARP /    ▲   news with another MAC (ARP; NA with O):     │ unicast request to
//!  │  solicited-node NS  │   MAC replaced                                │ the MAC every
//!  │  every retrans_ms,  └──────────────── answer ◄──────────────────────┤ retrans_ms
//!  │  then backing off                                                   │
//!  └──────────── `probes` unicast requests unanswered: aged, MAC withdrawn ◄┘
//! ```
//!
//! - INCOMPLETE sends `probes` broadcast requests `retrans_ms` apart, then keeps trying with
//!   the interval doubling up to `max_backoff_ms` (a gateway is never given up on); packets
//!   meanwhile are dropped by the workers (`drop_gateway_unresolved`).
//! - Refresh comes before aging: from `reachable_ms` after the last answer the entry is probed
//!   by unicast while its MAC stays in use, so a gateway that answers is never unresolved.
//! - What workers learned about an address that has no entry is counted (`ignored`) and
//!   changes nothing; an NA without the override flag does not replace a known MAC.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use switchyard_table::generation::{name_str, Generation, Interface, MAX_IF_ADDRS};

use super::frames::{announce_frames, arp_request, neighbor_solicit, vip_hosts_v4, vip_hosts_v6};
use super::{Observation, OutFrame, ResolverLinks};
use crate::pipeline::{Counter, PortIndex, PortMap};
use crate::swap::GenerationCell;
use crate::wire::EthernetAddress;

/// Frames waiting for room in the outbox at most (announcements of many VIPs); more are dropped
/// and counted.
pub const MAX_BACKLOG: usize = 4096;

/// Resolution timers (appliance settings `neighbour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How long an answer keeps an entry reachable before it is refreshed.
    pub reachable_ms: u64,
    /// Interval between requests (and the first backoff step).
    pub retrans_ms: u64,
    /// Broadcast requests before backing off; unicast refreshes before the entry ages out.
    pub probes: u32,
    /// Longest interval between requests for an unresolved gateway.
    pub max_backoff_ms: u64,
}

impl Default for Timers {
    /// Linux's defaults (`base_reachable_time` 30 s, `retrans_time` 1 s, 3 probes), backing off
    /// to one request a minute.
    fn default() -> Self {
        Self {
            reachable_ms: 30_000,
            retrans_ms: 1_000,
            probes: 3,
            max_backoff_ms: 60_000,
        }
    }
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourState {
    /// No MAC: broadcast requests, backing off.
    Incomplete,
    /// MAC confirmed within `reachable_ms`.
    Reachable,
    /// MAC still used, being refreshed by unicast requests.
    Probe,
}

impl NeighbourState {
    /// Lower-case name for logs and status.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Reachable => "reachable",
            Self::Probe => "probe",
        }
    }
}

/// What the resolver did since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Requests queued (broadcast and unicast).
    pub requests: u64,
    /// Entries that went from no MAC to a MAC.
    pub resolved: u64,
    /// Known MACs replaced by news with another MAC.
    pub changed: u64,
    /// Entries whose refreshes went unanswered (MAC withdrawn).
    pub aged: u64,
    /// Entries that used up their broadcast requests without an answer (then back off).
    pub unanswered: u64,
    /// Observations about addresses without an entry, or NAs that may not override.
    pub ignored: u64,
    /// Frames dropped because the backlog was full.
    pub backlog_dropped: u64,
    /// Announcements queued (gratuitous ARP, unsolicited NA).
    pub announced: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    port: PortIndex,
    addr: IpAddr,
    /// Our MAC and source address on that interface.
    our_mac: EthernetAddress,
    src: IpAddr,
    state: NeighbourState,
    mac: Option<EthernetAddress>,
    /// Requests sent in the current state.
    sent: u32,
    next_at: u64,
    /// REACHABLE until.
    until: u64,
}

/// The neighbour table of one data plane.
#[derive(Debug)]
pub struct Resolver {
    links: ResolverLinks,
    timers: Timers,
    entries: Vec<Entry>,
    backlog: VecDeque<OutFrame>,
    announced: HashSet<(PortIndex, IpAddr)>,
    stats: ResolverStats,
    /// Print a line per state change.
    log: bool,
    /// Announce own addresses and VIPs.
    announce: bool,
    /// The generation last taken by [`Resolver::follow`].
    generation: Option<u64>,
    /// Start of the resolver's clock.
    started: std::time::Instant,
}

fn first_v4(it: &Interface) -> Option<Ipv4Addr> {
    (it.v4_count > 0).then(|| Ipv4Addr::from(it.v4[0]))
}

fn first_v6(it: &Interface) -> Option<Ipv6Addr> {
    (it.v6_count > 0).then(|| Ipv6Addr::from(it.v6[0]))
}

impl Resolver {
    #[must_use]
    pub fn new(links: ResolverLinks, timers: Timers) -> Self {
        Self {
            links,
            timers,
            entries: Vec::new(),
            backlog: VecDeque::new(),
            announced: HashSet::new(),
            stats: ResolverStats::default(),
            log: false,
            announce: true,
            generation: None,
            started: std::time::Instant::now(),
        }
    }

    /// Prints a `neighbour:` line for every change (the appliance does; unit tests do not).
    #[must_use]
    pub fn logging(mut self, on: bool) -> Self {
        self.log = on;
        self
    }

    /// Whether to announce own addresses and VIPs (gratuitous ARP, unsolicited NA).
    #[must_use]
    pub fn announcing(mut self, on: bool) -> Self {
        self.announce = on;
        self
    }

    fn note(&self, line: std::fmt::Arguments<'_>) {
        if self.log {
            println!("neighbour: {line}");
        }
    }

    #[must_use]
    pub fn stats(&self) -> ResolverStats {
        self.stats
    }

    /// Every entry: port, gateway address, state, MAC in use.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (PortIndex, IpAddr, NeighbourState, Option<EthernetAddress>)> + '_
    {
        self.entries
            .iter()
            .map(|e| (e.port, e.addr, e.state, e.mac))
    }

    /// Takes the gateways and announcements of generation `g` (ports bound by `ports`): keeps
    /// the entries it still names, starts resolving new ones at once, withdraws the MACs of
    /// the ones it no longer names, and queues an announcement of every own address and
    /// single-address VIP on every bound port that was not announced before.
    pub fn set_generation(&mut self, g: &Generation, ports: &PortMap, now: u64) {
        let mut wanted: Vec<Entry> = Vec::new();
        let vips_v4 = vip_hosts_v4(&g.vip_lpm_v4);
        let vips_v6 = vip_hosts_v6(&g.vip_lpm_v6);
        for (i, name) in ports.interface.iter().enumerate() {
            let (Some(name), Ok(port)) = (name.as_deref(), PortIndex::try_from(i)) else {
                continue;
            };
            let Some(it) = g.interfaces.iter().find(|it| name_str(&it.name) == name) else {
                continue;
            };
            let our_mac = EthernetAddress(it.mac);
            if it.gateway_mac == [0; 6] {
                let gw4 = Ipv4Addr::from(it.gateway_v4);
                let gw6 = Ipv6Addr::from(it.gateway_v6);
                let candidates = [
                    (!gw4.is_unspecified())
                        .then_some((IpAddr::V4(gw4), first_v4(it).map(IpAddr::V4))),
                    (!gw6.is_unspecified())
                        .then_some((IpAddr::V6(gw6), first_v6(it).map(IpAddr::V6))),
                ];
                for (addr, src) in candidates.into_iter().flatten() {
                    let Some(src) = src else {
                        self.note(format_args!(
                            "port {port} ({name}): cannot resolve gateway {addr}: the interface has no address of its family"
                        ));
                        continue;
                    };
                    wanted.push(Entry {
                        port,
                        addr,
                        our_mac,
                        src,
                        state: NeighbourState::Incomplete,
                        mac: None,
                        sent: 0,
                        next_at: now,
                        until: 0,
                    });
                }
            }
            let own_v4 = it
                .v4
                .iter()
                .take(usize::from(it.v4_count).min(MAX_IF_ADDRS));
            let own_v6 = it
                .v6
                .iter()
                .take(usize::from(it.v6_count).min(MAX_IF_ADDRS));
            let addrs = own_v4
                .map(|&a| IpAddr::V4(a.into()))
                .chain(own_v6.map(|&a| IpAddr::V6(a.into())))
                .chain(vips_v4.iter().map(|&a| IpAddr::V4(a)))
                .chain(vips_v6.iter().map(|&a| IpAddr::V6(a)));
            for addr in addrs {
                if self.announce && self.announced.insert((port, addr)) {
                    let counter = if addr.is_ipv4() {
                        Counter::GratuitousArpSent
                    } else {
                        Counter::UnsolicitedNaSent
                    };
                    self.stats.announced += 1;
                    self.queue(OutFrame {
                        port,
                        counter,
                        bytes: announce_frames(our_mac, addr),
                    });
                }
            }
        }
        for old in &self.entries {
            let kept = wanted
                .iter()
                .any(|w| w.port == old.port && w.addr == old.addr);
            if !kept {
                self.links.slots.store(old.port, old.addr.is_ipv6(), None);
                self.note(format_args!(
                    "port {} gateway {} no longer resolved",
                    old.port, old.addr
                ));
            }
        }
        for w in &mut wanted {
            if let Some(old) = self.entries.iter().find(|o| {
                o.port == w.port && o.addr == w.addr && o.our_mac == w.our_mac && o.src == w.src
            }) {
                *w = old.clone();
            } else {
                self.links.slots.store(w.port, w.addr.is_ipv6(), None);
                self.note(format_args!(
                    "port {} resolving gateway {} from {}",
                    w.port, w.addr, w.src
                ));
            }
        }
        self.entries = wanted;
    }

    fn queue(&mut self, f: OutFrame) {
        if self.backlog.len() >= MAX_BACKLOG {
            self.stats.backlog_dropped += 1;
        } else {
            self.backlog.push_back(f);
        }
    }

    /// The main lcore's tick: takes a newly published generation (from `cell`, bound by
    /// `ports`) and runs [`Resolver::tick`] on the wall clock.
    pub fn follow(&mut self, cell: &GenerationCell, ports: &PortMap) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(g) = cell.current() {
            if self.generation != Some(g.generation) {
                self.generation = Some(g.generation);
                self.set_generation(&g, ports, now);
            }
        }
        self.tick(now);
    }

    /// Takes what workers learned, runs the timers, and hands frames to worker 0.
    pub fn tick(&mut self, now: u64) {
        while let Some(o) = self.links.observation() {
            self.learn(o, now);
        }
        for i in 0..self.entries.len() {
            self.run_timers(i, now);
        }
        while let Some(f) = self.backlog.pop_front() {
            if let Err(f) = self.links.send(f) {
                self.backlog.push_front(f);
                break;
            }
        }
    }

    /// "`o.addr` is at `o.mac`", seen by a worker.
    pub fn learn(&mut self, o: Observation, now: u64) {
        let reachable = self.timers.reachable_ms;
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.port == o.port && e.addr == o.addr)
        else {
            self.stats.ignored += 1;
            return;
        };
        let e = &self.entries[i];
        let (port, addr, old) = (e.port, e.addr, e.mac);
        if o.confirm_only {
            if old.is_none() {
                self.stats.ignored += 1;
                return;
            }
            let e = &mut self.entries[i];
            e.state = NeighbourState::Reachable;
            e.sent = 0;
            e.until = now + reachable;
            return;
        }
        match old {
            Some(mac) if mac == o.mac => {}
            Some(mac) if !o.overrides => {
                // An NA without the override flag does not replace a MAC we use.
                let _ = mac;
                self.stats.ignored += 1;
                return;
            }
            Some(mac) => {
                self.stats.changed += 1;
                self.links.slots.store(port, addr.is_ipv6(), Some(o.mac));
                self.note(format_args!(
                    "port {port} gateway {addr} moved from {mac} to {}",
                    o.mac
                ));
            }
            None => {
                self.stats.resolved += 1;
                self.links.slots.store(port, addr.is_ipv6(), Some(o.mac));
                self.note(format_args!("port {port} gateway {addr} is at {}", o.mac));
            }
        }
        let e = &mut self.entries[i];
        e.mac = Some(o.mac);
        e.state = NeighbourState::Reachable;
        e.sent = 0;
        e.until = now + reachable;
    }

    fn request(&mut self, i: usize, unicast: bool) {
        let e = &self.entries[i];
        let to = if unicast { e.mac } else { None };
        let (bytes, counter) = match (e.src, e.addr) {
            (IpAddr::V4(src), IpAddr::V4(target)) => (
                arp_request(e.our_mac, src, target, to),
                Counter::ArpRequestSent,
            ),
            (IpAddr::V6(src), IpAddr::V6(target)) => (
                neighbor_solicit(e.our_mac, src, target, to),
                Counter::NdSolicitSent,
            ),
            _ => return,
        };
        let port = e.port;
        self.stats.requests += 1;
        self.queue(OutFrame {
            port,
            counter,
            bytes,
        });
    }

    fn backoff(&self, sent: u32) -> u64 {
        let t = self.timers;
        if sent < t.probes {
            return t.retrans_ms;
        }
        let doublings = (sent - t.probes + 1).min(20);
        t.retrans_ms
            .saturating_mul(1 << doublings)
            .min(t.max_backoff_ms.max(t.retrans_ms))
    }

    fn run_timers(&mut self, i: usize, now: u64) {
        let probes = self.timers.probes;
        let retrans = self.timers.retrans_ms;
        let e = &mut self.entries[i];
        if e.state == NeighbourState::Reachable && now >= e.until {
            e.state = NeighbourState::Probe;
            e.sent = 0;
            e.next_at = now;
        }
        if now < e.next_at {
            return;
        }
        match e.state {
            NeighbourState::Reachable => {}
            NeighbourState::Probe => {
                if e.sent >= probes {
                    let (port, addr, mac) = (e.port, e.addr, e.mac);
                    e.state = NeighbourState::Incomplete;
                    e.mac = None;
                    e.sent = 0;
                    self.stats.aged += 1;
                    self.links.slots.store(port, addr.is_ipv6(), None);
                    if let Some(mac) = mac {
                        self.note(format_args!(
                            "port {port} gateway {addr} at {mac} stopped answering: unresolved"
                        ));
                    }
                    self.incomplete(i, now);
                } else {
                    e.sent += 1;
                    e.next_at = now + retrans;
                    self.request(i, true);
                }
            }
            NeighbourState::Incomplete => self.incomplete(i, now),
        }
    }

    fn incomplete(&mut self, i: usize, now: u64) {
        let probes = self.timers.probes;
        let e = &mut self.entries[i];
        e.sent = e.sent.saturating_add(1);
        let sent = e.sent;
        if sent == probes + 1 {
            self.stats.unanswered += 1;
            let (port, addr) = (e.port, e.addr);
            self.note(format_args!(
                "port {port} gateway {addr}: no answer to {probes} requests, backing off"
            ));
        }
        let next = now + self.backoff(sent);
        self.entries[i].next_at = next;
        self.request(i, false);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{links, Outbox};
    use super::*;
    use crate::wire::{ArpPacket, EthernetFrame, Ipv6Packet};
    use switchyard_table::generation::NAME_LEN;

    const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const GW_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xfe]);
    const GW_MAC2: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0xfd]);
    const GW4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
    const TIMERS: Timers = Timers {
        reachable_ms: 1_000,
        retrans_ms: 100,
        probes: 3,
        max_backoff_ms: 800,
    };

    fn gw6() -> Ipv6Addr {
        "2001:db8::fe".parse().unwrap()
    }

    fn interface(static_mac: Option<[u8; 6]>) -> Interface {
        let mut name = [0u8; NAME_LEN];
        name[..6].copy_from_slice(b"uplink");
        let mut v4 = [[0; 4]; MAX_IF_ADDRS];
        v4[0] = [192, 0, 2, 1];
        let mut v6 = [[0; 16]; MAX_IF_ADDRS];
        v6[0] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        Interface {
            name,
            mac: OUR_MAC,
            gateway_mac: static_mac.unwrap_or([0; 6]),
            v4_count: 1,
            v6_count: 1,
            _pad: [0; 2],
            gateway_v4: GW4.octets(),
            v4,
            v6,
            gateway_v6: gw6().octets(),
            outer_src_v4: [0; 4],
            outer_src_v6: [0; 16],
            outer_src_v4_len: 0,
            outer_src_v6_len: 0,
            outer_src_flags: 0,
            _pad2: 0,
        }
    }

    fn generation(static_mac: Option<[u8; 6]>) -> Generation {
        Generation {
            generation: 1,
            interfaces: vec![interface(static_mac)],
            ..Generation::default()
        }
    }

    fn ports() -> PortMap {
        PortMap {
            interface: vec![Some("uplink".to_owned())],
            backend: None,
            kernel: None,
        }
    }

    fn setup() -> (Resolver, super::super::WorkerNeighbours, Outbox) {
        let (r, w, out) = links(1);
        let mut resolver = Resolver::new(r, TIMERS);
        resolver.set_generation(&generation(None), &ports(), 0);
        (resolver, w, out)
    }

    /// Drains the outbox: (counter, destination MAC) of each frame.
    fn sent(out: &Outbox) -> Vec<(Counter, EthernetAddress)> {
        std::iter::from_fn(|| out.next())
            .map(|f| {
                let dst = EthernetFrame::new_checked(&f.bytes[..]).unwrap().dst_addr();
                (f.counter, dst)
            })
            .collect()
    }

    fn requests(out: &Outbox) -> Vec<(Counter, EthernetAddress)> {
        sent(out)
            .into_iter()
            .filter(|(c, _)| matches!(c, Counter::ArpRequestSent | Counter::NdSolicitSent))
            .collect()
    }

    fn news(addr: IpAddr, mac: EthernetAddress, overrides: bool) -> Observation {
        Observation {
            port: 0,
            addr,
            mac,
            overrides,
            confirm_only: false,
        }
    }

    fn state(r: &Resolver, addr: IpAddr) -> (NeighbourState, Option<EthernetAddress>) {
        r.entries()
            .find(|e| e.1 == addr)
            .map(|e| (e.2, e.3))
            .unwrap()
    }

    #[test]
    fn start_announces_own_addresses_and_requests_both_gateways() {
        let (mut r, _w, out) = setup();
        r.tick(0);
        let frames = sent(&out);
        let count = |c| frames.iter().filter(|(x, _)| *x == c).count();
        assert_eq!(count(Counter::GratuitousArpSent), 1);
        assert_eq!(count(Counter::UnsolicitedNaSent), 1);
        assert_eq!(count(Counter::ArpRequestSent), 1);
        assert_eq!(count(Counter::NdSolicitSent), 1);
        assert!(frames
            .iter()
            .any(|(c, d)| *c == Counter::ArpRequestSent && d.is_broadcast()));
        // A new generation with the same addresses announces nothing again.
        let mut g = generation(None);
        g.generation = 2;
        r.set_generation(&g, &ports(), 5);
        r.tick(5);
        assert!(sent(&out).is_empty());
        assert_eq!(r.stats().announced, 2);
    }

    #[test]
    fn unanswered_requests_back_off_to_the_cap() {
        let (mut r, w, out) = setup();
        let mut at = Vec::new();
        for now in (0..5_000).step_by(10) {
            r.tick(now);
            if requests(&out)
                .iter()
                .any(|(c, _)| *c == Counter::ArpRequestSent)
            {
                at.push(now);
            }
        }
        // 3 requests 100 ms apart, then 200, 400, 800, 800...
        assert_eq!(&at[..7], &[0, 100, 200, 400, 800, 1600, 2400]);
        assert_eq!(r.stats().unanswered, 2, "one per family");
        assert_eq!(w.slots.port(0).unwrap().mac(false), None);
        assert_eq!(state(&r, IpAddr::V4(GW4)).0, NeighbourState::Incomplete);
    }

    #[test]
    fn answer_resolves_refresh_keeps_the_mac_and_silence_ages_it() {
        let (mut r, w, out) = setup();
        r.tick(0);
        sent(&out);
        assert!(w.observe(news(IpAddr::V4(GW4), GW_MAC, true)));
        r.tick(10);
        assert_eq!(w.slots.port(0).unwrap().mac(false), Some(GW_MAC));
        assert_eq!(w.slots.port(0).unwrap().mac(true), None);
        assert_eq!(
            state(&r, IpAddr::V4(GW4)),
            (NeighbourState::Reachable, Some(GW_MAC))
        );
        // Quiet until reachable_ms is over; then unicast refreshes while the MAC stays in use.
        for now in (20..1_010).step_by(10) {
            r.tick(now);
            assert!(requests(&out)
                .iter()
                .all(|(c, _)| *c == Counter::NdSolicitSent));
        }
        r.tick(1_010);
        assert_eq!(requests(&out), [(Counter::ArpRequestSent, GW_MAC)]);
        assert_eq!(state(&r, IpAddr::V4(GW4)).0, NeighbourState::Probe);
        assert_eq!(w.slots.port(0).unwrap().mac(false), Some(GW_MAC));
        // An answer to the refresh: reachable again, nothing withdrawn.
        assert!(w.observe(news(IpAddr::V4(GW4), GW_MAC, true)));
        r.tick(1_050);
        assert_eq!(state(&r, IpAddr::V4(GW4)).0, NeighbourState::Reachable);
        // Now silence: 3 unicast refreshes 100 ms apart, then withdrawn and broadcast again.
        let mut unicast = 0;
        let mut aged_at = None;
        for now in (1_060..2_600).step_by(10) {
            r.tick(now);
            for (c, d) in requests(&out) {
                if c == Counter::ArpRequestSent && d == GW_MAC {
                    unicast += 1;
                } else if c == Counter::ArpRequestSent && d.is_broadcast() && aged_at.is_none() {
                    aged_at = Some(now);
                }
            }
        }
        assert_eq!(unicast, 3);
        assert_eq!(
            aged_at,
            Some(2_350),
            "1050 + 1000 reachable + 3 x 100 probing"
        );
        assert_eq!(r.stats().aged, 1);
        assert_eq!(w.slots.port(0).unwrap().mac(false), None);
        assert_eq!(
            state(&r, IpAddr::V4(GW4)),
            (NeighbourState::Incomplete, None)
        );
    }

    #[test]
    fn a_new_mac_replaces_the_old_one_unless_an_advert_may_not_override() {
        let (mut r, w, _out) = setup();
        let gw6 = IpAddr::V6(gw6());
        w.observe(news(IpAddr::V4(GW4), GW_MAC, true));
        w.observe(news(gw6, GW_MAC, false)); // solicited NA without O: resolves
        r.tick(1);
        assert_eq!(w.slots.port(0).unwrap().mac(true), Some(GW_MAC));
        // Gratuitous ARP with a new MAC: replaced at once.
        w.observe(news(IpAddr::V4(GW4), GW_MAC2, true));
        // NA without override and another MAC: ignored; with override: replaced.
        w.observe(news(gw6, GW_MAC2, false));
        r.tick(2);
        assert_eq!(w.slots.port(0).unwrap().mac(false), Some(GW_MAC2));
        assert_eq!(w.slots.port(0).unwrap().mac(true), Some(GW_MAC));
        w.observe(news(gw6, GW_MAC2, true));
        r.tick(3);
        assert_eq!(w.slots.port(0).unwrap().mac(true), Some(GW_MAC2));
        let s = r.stats();
        assert_eq!((s.resolved, s.changed, s.ignored), (2, 2, 1));
    }

    #[test]
    fn a_solicited_advert_without_lladdr_confirms_but_never_resolves() {
        let (mut r, w, _out) = setup();
        let gw6 = IpAddr::V6(gw6());
        let confirm = Observation {
            confirm_only: true,
            ..news(gw6, EthernetAddress([0; 6]), false)
        };
        w.observe(confirm);
        r.tick(1);
        assert_eq!(state(&r, gw6), (NeighbourState::Incomplete, None));
        assert_eq!(r.stats().ignored, 1);
        w.observe(news(gw6, GW_MAC, true));
        r.tick(2);
        // Past reachable_ms: probing; the MAC-less answer confirms it again.
        r.tick(1_100);
        assert_eq!(state(&r, gw6).0, NeighbourState::Probe);
        w.observe(confirm);
        r.tick(1_110);
        assert_eq!(state(&r, gw6), (NeighbourState::Reachable, Some(GW_MAC)));
        assert_eq!(w.slots.port(0).unwrap().mac(true), Some(GW_MAC));
    }

    #[test]
    fn news_about_addresses_nobody_asked_for_change_nothing() {
        let (mut r, w, _out) = setup();
        w.observe(news(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)), GW_MAC, true));
        w.observe(Observation {
            port: 3,
            ..news(IpAddr::V4(GW4), GW_MAC, true)
        });
        r.tick(1);
        assert_eq!(r.stats().ignored, 2);
        assert!(!w.slots.port(0).unwrap().any());
    }

    #[test]
    fn a_static_mac_wins_and_a_dropped_gateway_is_withdrawn() {
        let (mut r, w, out) = setup();
        w.observe(news(IpAddr::V4(GW4), GW_MAC, true));
        r.tick(1);
        assert!(w.slots.port(0).unwrap().any());
        sent(&out);
        let mut g = generation(Some(GW_MAC2.0));
        g.generation = 2;
        r.set_generation(&g, &ports(), 2);
        r.tick(2);
        assert_eq!(r.entries().count(), 0);
        assert!(!w.slots.port(0).unwrap().any());
        assert!(requests(&out).is_empty());
    }

    #[test]
    fn the_backlog_is_bounded() {
        let (r, _w, _out) = links(1);
        let mut r = Resolver::new(r, TIMERS);
        for i in 0..MAX_BACKLOG + 5 {
            r.queue(OutFrame {
                port: 0,
                counter: Counter::GratuitousArpSent,
                bytes: vec![u8::try_from(i % 256).unwrap()],
            });
        }
        assert_eq!(r.backlog.len(), MAX_BACKLOG);
        assert_eq!(r.stats().backlog_dropped, 5);
        // Each tick moves what fits into the outbox; the rest waits in order.
        r.tick(0);
        assert_eq!(r.backlog.len(), MAX_BACKLOG - super::super::OUTBOX_QUEUE);
    }

    #[test]
    fn requests_are_well_formed() {
        let (mut r, _w, out) = setup();
        r.tick(0);
        for f in std::iter::from_fn(|| out.next()) {
            match f.counter {
                Counter::ArpRequestSent => {
                    let arp = crate::wire::ArpRepr::parse(
                        &ArpPacket::new_checked(&f.bytes[14..]).unwrap(),
                    )
                    .unwrap();
                    assert_eq!(arp.target_protocol_addr, GW4);
                    assert_eq!(arp.sender_hardware_addr.0, OUR_MAC);
                }
                Counter::NdSolicitSent => {
                    let ip = Ipv6Packet::new_checked(&f.bytes[14..]).unwrap();
                    assert_eq!(ip.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
                    assert_eq!(
                        ip.dst_addr(),
                        "ff02::1:ff00:fe".parse::<Ipv6Addr>().unwrap()
                    );
                }
                _ => {}
            }
        }
    }
}
