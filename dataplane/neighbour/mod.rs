//! Neighbour resolution for the next hops the data plane sends to: ARP (IPv4) and neighbour
//! discovery (IPv6) for each interface's gateway when the policy gives its address but no MAC,
//! driven from the appliance's own ports; and the gratuitous ARP / unsolicited neighbour
//! advertisements that announce the appliance's addresses and VIPs when it starts.
//!
//! # Who does what
//!
//! - The **main lcore** owns the [`Resolver`] (the state machine of every entry: timers,
//!   probes, backoff, aging). It runs in the main lcore's 250 µs tick: it reads what workers
//!   learned, advances timers, builds the request and announcement frames, and writes each
//!   resolved MAC into its [`NeighbourSlots`] slot. Nothing else writes a slot.
//! - **Workers** read a slot on the per-packet path only when the egress interface has no
//!   static gateway MAC: one relaxed 64-bit atomic load of a line written only when a MAC
//!   changes (as cheap as reading the static MAC from the worker's view). They classify ARP
//!   replies, gratuitous ARP and neighbour advertisements (phase 1: about a gateway of the RX
//!   interface or not, broadcast/multicast MACs refused) and hand the ones about a gateway to
//!   the main lcore through a bounded queue ([`Observation`]; full: counted, dropped).
//! - **Worker 0** sends what the main lcore built ([`OutFrame`]): every housekeeping tick
//!   (~100 µs) it takes up to [`SEND_PER_TICK`] frames from a bounded queue, copies each into
//!   an mbuf of the port's mempool and transmits it on its own TX queue of that port (every
//!   worker has one on every port), counting each frame's counter, or `drop_neighbour_tx`.
//!   The main lcore owns no TX queue, so no port setup changes for it.
//!
//! # While a gateway is unresolved: drop, counted
//!
//! A packet that would leave through a gateway with no MAC yet is dropped and counted
//! (`drop_gateway_unresolved`); nothing is held. Gateways are resolved proactively, as soon as
//! a generation names them (not on the first packet), and refreshed before they age out while
//! the known MAC stays in use, so in steady state no packet waits for resolution: drops happen
//! only at start (before the first answer) and after the gateway has stopped answering for the
//! whole probe budget. A hold queue would put mbufs from every worker in a shared queue on the
//! per-packet path for exactly those two windows, where TCP's SYN retransmission already
//! recovers.

mod frames;
mod resolver;

pub use frames::{announce_frames, arp_request, neighbor_solicit, vip_hosts_v4, vip_hosts_v6};
pub use resolver::{NeighbourState, Resolver, ResolverStats, Timers};

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::pipeline::{Counter, PortIndex};
use crate::wire::EthernetAddress;

/// Frames worker 0 sends per housekeeping tick at most.
pub const SEND_PER_TICK: usize = 8;
/// Observations the workers can queue for the main lcore.
pub const OBSERVATION_QUEUE: usize = 256;
/// Frames the main lcore can queue for worker 0 (more wait in the resolver's backlog).
pub const OUTBOX_QUEUE: usize = 64;

/// The resolved gateway MACs, per port and family: written by the main lcore, read by workers.
#[derive(Debug)]
pub struct NeighbourSlots {
    ports: Vec<CachePadded<PortSlots>>,
}

/// One port's slots: a MAC in the low 48 bits, 0 when unresolved.
#[derive(Debug, Default)]
pub struct PortSlots {
    v4: AtomicU64,
    v6: AtomicU64,
}

#[inline]
fn pack(mac: EthernetAddress) -> u64 {
    let m = mac.0;
    u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

#[inline]
fn unpack(v: u64) -> Option<EthernetAddress> {
    if v == 0 {
        return None;
    }
    let b = v.to_be_bytes();
    Some(EthernetAddress([b[2], b[3], b[4], b[5], b[6], b[7]]))
}

impl PortSlots {
    /// The resolved MAC of this port's gateway for an outer header of that family.
    #[inline]
    pub fn mac(&self, v6: bool) -> Option<EthernetAddress> {
        let slot = if v6 { &self.v6 } else { &self.v4 };
        unpack(slot.load(Relaxed))
    }

    /// Whether either family's gateway is resolved.
    #[inline]
    pub fn any(&self) -> bool {
        self.v4.load(Relaxed) != 0 || self.v6.load(Relaxed) != 0
    }
}

impl NeighbourSlots {
    /// Slots for `ports` appliance ports, all unresolved.
    #[must_use]
    pub fn new(ports: usize) -> Self {
        Self {
            ports: (0..ports)
                .map(|_| CachePadded::new(PortSlots::default()))
                .collect(),
        }
    }

    /// The slots of `port`, if it exists.
    #[inline]
    #[must_use]
    pub fn port(&self, port: PortIndex) -> Option<&PortSlots> {
        self.ports.get(usize::from(port)).map(|p| &**p)
    }

    /// Publishes (or with `None` withdraws) the MAC of `port`'s gateway of one family. Only the
    /// resolver calls this.
    pub fn store(&self, port: PortIndex, v6: bool, mac: Option<EthernetAddress>) {
        if let Some(p) = self.port(port) {
            let slot = if v6 { &p.v6 } else { &p.v4 };
            slot.store(mac.map_or(0, pack), Relaxed);
        }
    }
}

/// What a worker saw on the wire about a gateway of the RX port: "`addr` is at `mac`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub port: PortIndex,
    pub addr: IpAddr,
    pub mac: EthernetAddress,
    /// The sender says its MAC replaces any other (every ARP packet; an NA with the override
    /// flag). An NA without it only answers a resolution in progress (RFC 4861 §7.2.5).
    pub overrides: bool,
    /// A solicited NA without a target link-layer address (`mac` is meaningless): confirms
    /// the MAC in use, if any, and changes nothing.
    pub confirm_only: bool,
}

/// A frame the main lcore built for worker 0 to send on `port`, counted under `counter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    pub port: PortIndex,
    pub counter: Counter,
    pub bytes: Vec<u8>,
}

/// The workers' end of neighbour resolution: the slots and the observation queue.
#[derive(Debug, Clone)]
pub struct WorkerNeighbours {
    pub slots: Arc<NeighbourSlots>,
    observations: SyncSender<Observation>,
}

impl WorkerNeighbours {
    /// Hands an observation to the resolver; `false` when its queue is full (never blocks).
    #[inline]
    pub fn observe(&self, o: Observation) -> bool {
        match self.observations.try_send(o) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Worker 0's end: the frames to send.
#[derive(Debug)]
pub struct Outbox {
    frames: Receiver<OutFrame>,
}

impl Outbox {
    /// The next frame to send, if any (never blocks).
    #[inline]
    pub fn next(&self) -> Option<OutFrame> {
        self.frames.try_recv().ok()
    }
}

/// The main lcore's end: what workers learned, where frames go.
#[derive(Debug)]
pub struct ResolverLinks {
    pub slots: Arc<NeighbourSlots>,
    observations: Receiver<Observation>,
    frames: SyncSender<OutFrame>,
}

impl ResolverLinks {
    /// The next observation, if any.
    pub fn observation(&self) -> Option<Observation> {
        self.observations.try_recv().ok()
    }

    /// Queues a frame for worker 0; gives it back when the queue is full.
    ///
    /// # Errors
    /// The frame, when the queue is full or worker 0 is gone.
    pub fn send(&self, f: OutFrame) -> Result<(), OutFrame> {
        self.frames.try_send(f).map_err(|e| match e {
            TrySendError::Full(f) | TrySendError::Disconnected(f) => f,
        })
    }
}

/// The three ends of neighbour resolution for an appliance with `ports` ports.
#[must_use]
pub fn links(ports: usize) -> (ResolverLinks, WorkerNeighbours, Outbox) {
    let slots = Arc::new(NeighbourSlots::new(ports));
    let (obs_tx, obs_rx) = sync_channel(OBSERVATION_QUEUE);
    let (out_tx, out_rx) = sync_channel(OUTBOX_QUEUE);
    (
        ResolverLinks {
            slots: Arc::clone(&slots),
            observations: obs_rx,
            frames: out_tx,
        },
        WorkerNeighbours {
            slots,
            observations: obs_tx,
        },
        Outbox { frames: out_rx },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_pack_and_withdraw() {
        let s = NeighbourSlots::new(2);
        let mac = EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]);
        assert_eq!(s.port(1).unwrap().mac(false), None);
        assert!(!s.port(1).unwrap().any());
        s.store(1, false, Some(mac));
        assert_eq!(s.port(1).unwrap().mac(false), Some(mac));
        assert_eq!(s.port(1).unwrap().mac(true), None);
        assert!(s.port(1).unwrap().any());
        assert_eq!(s.port(0).unwrap().mac(false), None);
        s.store(1, false, None);
        assert_eq!(s.port(1).unwrap().mac(false), None);
        // A port that does not exist is ignored, not a panic.
        s.store(7, true, Some(mac));
        assert!(s.port(7).is_none());
    }

    #[test]
    fn queues_are_bounded() {
        let (r, w, out) = links(1);
        let o = Observation {
            port: 0,
            addr: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 254)),
            mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            overrides: true,
            confirm_only: false,
        };
        let accepted = (0..OBSERVATION_QUEUE + 10).filter(|_| w.observe(o)).count();
        assert_eq!(accepted, OBSERVATION_QUEUE);
        assert_eq!(r.observation(), Some(o));
        let f = OutFrame {
            port: 0,
            counter: Counter::ArpRequestSent,
            bytes: vec![1, 2, 3],
        };
        let sent = (0..OUTBOX_QUEUE + 3)
            .filter(|_| r.send(f.clone()).is_ok())
            .count();
        assert_eq!(sent, OUTBOX_QUEUE);
        assert_eq!(out.next(), Some(f));
    }
}
