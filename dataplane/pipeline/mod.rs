//! The packet pipeline: what a worker does to each received packet.
//!
//! It is pure Rust over a [`PacketBuf`] (an mbuf in the appliance, a `Vec` with headroom in
//! tests), so every stage runs in-process in tests and fuzzing exactly as on the NIC.
//!
//! A [`PipelineWorker`] per worker core owns everything it mutates — two flow tables (IPv4,
//! IPv6), the scheduler state, the ICMP and per-source token buckets, the [`Counters`] — and
//! reads the current table [`Generation`](switchyard_table::generation::Generation) through an
//! `Arc` swapped at burst boundaries ([`PipelineWorker::set_generation`]). No locks, no atomics,
//! no allocation and no hash map per packet. Every packet ends in one [`Verdict`]; every drop
//! is counted under its own [`Counter`] (names `drop_*`), and nothing a packet contains can
//! make a worker panic or loop: all bytes go through the checked views of [`crate::wire`] and
//! every table index through `get`.
//!
//! # Two phases
//!
//! Phase 1 (`classify`) parses, validates and classifies a packet against the generation and
//! computes its flow key and hash; it has no side effects. Phase 2 (`execute`) does the rest:
//! counters, tokens, the flow table, scheduling and rewriting the buffer.
//! [`PipelineWorker::process_burst`] runs phase 1 over up to [`BURST`] packets, warming each
//! packet's flow bucket, then phase 2 over them in order — the same result as
//! [`PipelineWorker::process`] per packet, with the bucket misses overlapped. The same three
//! steps are public ([`PipelineWorker::stage`], [`PipelineWorker::prefetch_entries`],
//! [`PipelineWorker::finish`]) so a poll loop can overlap bursts: classify the next burst while
//! the previous one's flow-table lines arrive, then execute the previous one.
//!
//! # Stages
//!
//! 1. **L2.** Ethernet with up to two VLAN tags ([`crate::wire::ethernet`]). The destination
//!    MAC must be the MAC of the interface bound to the RX port ([`PortMap::interface`] names
//!    `Generation::interfaces[i].name`), broadcast (ARP only) or `33:33:xx` (IPv6 only); else
//!    `drop_not_our_mac`. Other EtherTypes: `drop_unknown_ethertype`. A port bound to no
//!    interface of the generation: `drop_port_unbound`. Short frames and bad tag stacks: the
//!    wire error's counter (`drop_truncated`, `drop_too_many_vlan_tags`, ...: one counter per
//!    [`crate::wire::Error`]). Frames from the kernel port ([`PortMap::kernel`]) go out of the
//!    port whose interface owns their source MAC (`kernel_to_wire`), untouched.
//! 2. **Local traffic.** ARP requests for an address of the RX interface or inside a VIP are
//!    answered in place (`arp_reply_sent`); ARP replies and gratuitous ARP are
//!    `drop_arp_ignored` (gateway MACs are configured), requests for other addresses
//!    `drop_arp_not_for_us`. Neighbour solicitations for an address of the RX interface or a
//!    VIP are answered with a solicited, override advertisement carrying our MAC
//!    (`nd_advert_sent`; a DAD probe from `::` is answered to all-nodes, unsolicited) after the
//!    RFC 4861 §7.1.1 checks (`drop_nd_invalid`; other targets `drop_nd_not_for_us`). Echo
//!    requests to own addresses and VIPs are answered in place, drawing from the worker's ICMP
//!    token bucket (`Config.icmp_rate` per second, `icmp_burst` deep; rate 0 sends nothing;
//!    empty → `drop_icmp_rate_limited`). Anything else to an own address (of any interface) is
//!    for the host: [`Verdict::Kernel`] (`to_kernel`) when a kernel port exists, else
//!    `drop_for_host_no_kernel_port`. A destination that is neither own nor in a VIP:
//!    `drop_not_for_us`. Replies keep the request's VLAN tags and leave by the RX port.
//! 3. **Hostile input**, each its own counter, checked in this order:
//!    IPv4 — wire errors (IHL, total length), options (`drop_ipv4_options`: nothing we serve
//!    needs them, and they are a classic evasion tool), fragments (`drop_ipv4_fragment`, see
//!    below), header checksum (`drop_bad_ipv4_checksum`), martian source; IPv6 — wire errors,
//!    extension headers (`drop_ipv6_ext_header` for hop-by-hop, routing and destination
//!    options: TCP/UDP clients of an inference API do not send them, hop-by-hop is a known
//!    slow-path DoS vector, and an ext-header walk per packet buys nothing; `drop_ipv6_fragment`
//!    for a fragment header), martian source. Martian sources (`drop_martian_source`):
//!    0.0.0.0/8, 127/8, 224/4 and 240/4 (broadcast included); `::`, `::1`, ff00::/8; any
//!    address inside a VIP; any own address. Then, for traffic to a VIP: IPIP / IPv6-in-IP, or
//!    UDP to `Config.gue_port`, is `drop_already_encapsulated` (never encapsulated twice, so a
//!    looping or spoofed tunnel packet cannot bounce between balancers); invalid TCP flag
//!    combinations (`drop_bad_tcp_flags`: the Linux conntrack table of
//!    [`crate::wire::tcp`] — null, SYN+FIN, XMAS, FIN without ACK...); UDP over IPv6 with
//!    checksum 0 (`drop_ipv6_udp_zero_checksum`, RFC 8200 §8.1); protocols other than TCP,
//!    UDP, ICMP (`drop_unsupported_protocol`); TTL / hop limit 0 or 1 on anything forwarded
//!    (`drop_ttl_expired`; echo requests are answered whatever their TTL).
//! 4. **ACL** on the source: `acl_lpm` → group → the first rule whose protocol (0 = any) and
//!    destination port range match decides; deny → `drop_acl`; no match → allowed. Packets
//!    without ports (ICMP echo and errors to a VIP) match only rules for any protocol covering
//!    every port, i.e. the policy's plain `deny: PREFIX`.
//! 5. **Service**: VIP LPM → VIP group → first entry matching protocol and destination port;
//!    none → `drop_no_service`.
//! 6. **Connection table** (key = the client → VIP 5-tuple, [`FlowKeyV4`](crate::flow::FlowKeyV4)
//!    / [`FlowKeyV6`](crate::flow::FlowKeyV6); `key.hash()` computed once and used by the
//!    table, the canary split, Maglev and the encapsulation). A hit whose backend id maps to
//!    no backend any more (`flow_backend_gone`) or to an unhealthy one
//!    (`flow_backend_unhealthy`) is rescheduled and the entry re-pointed; a drained backend
//!    (weight 0, healthy) keeps its flows. A miss: a TCP packet without SYN counts
//!    `flow_non_syn_miss` (the broken-flow signal) and is still scheduled and inserted (as
//!    established): Maglev is consistent, so a flow this worker lost — restart, eviction, RSS
//!    change — most likely lands on the backend it was on. A RST that misses is forwarded
//!    without creating an entry (`forwarded_without_entry`). New flows draw from the
//!    per-source limiter first (`Config.new_flow_rate` / `new_flow_burst`, 0 = off; 4096
//!    hashed buckets per worker, IPv6 sources keyed by /64) → `drop_rate_limited`. The
//!    table's own insert cap returns `Throttled`: the packet is forwarded statelessly and the
//!    table counts `flow_insert_throttled`. The tables' counters appear as `flow_*`.
//! 7. **Route and pool.** Region = `geo_lpm` of the source (value − 1, or none). The service's
//!    routes in order: the first whose region is the client's or `NONE`; none →
//!    `drop_no_route`. Canary first: when `route.canary_pool != NONE`,
//!    `hash % 1_000_000 < canary_per_million` and the canary pool has a healthy backend
//!    (`canary_selected`). Else the route's pools in order, the first with `healthy_count > 0`
//!    (`pool_fallback` when not the first); none → `drop_no_healthy_backend`. Strict residency
//!    needs nothing here: the compiler lists only the region's pools.
//! 8. **Scheduler** of the pool: `maglev` → `maglev[offset + hash % size]` (backend index + 1;
//!    0 → `drop_no_healthy_backend`; a slot naming a backend that is no longer healthy falls
//!    back to `healthy[hash % n]`); `ip_hash` → the same with [`ip_hash_v4`] / [`ip_hash_v6`]
//!    of the source only; `round_robin` → a per-worker cursor per pool over the healthy list
//!    (starting at the worker index); `least_conn` → the healthy backend with the fewest live
//!    flows on this worker (counted per stable backend id: +1 on insert, −1 when the flow
//!    closes, expires, is evicted or replaced; ties to the first from the worker index on);
//!    `weighted` → smooth weighted round robin over the healthy backends' weights.
//! 9. **Encapsulation** (module `encap`): outer family = the backend's; IPIP (4 / 41) or GUE
//!    (UDP to `gue_port`, source port `0xC000 | hash & 0x3FFF`, variant-0 header with protocol
//!    4 / 41; UDP checksum 0 over IPv4, computed over IPv6). Outer TTL 64, ToS copied, DF set,
//!    IPv4 id 0, IPv6 flow label `hash & 0xFFFFF`. Outer source: the egress interface's
//!    `outer_src_v4/v6` (else `Config`'s)
//!    network bits, host bits = the flow hash (zero-extended for IPv6). Ethernet: from the
//!    egress interface's MAC to its gateway MAC (`drop_no_gateway_mac` if it has none); egress
//!    = [`PortMap::backend`], or the RX port. **VLAN tags on input are not carried to the
//!    output**: the frame to the backend is built from scratch for the egress interface, and
//!    the policy has no per-interface VLAN (a tagged uplink would need one). Ethernet padding
//!    after the inner packet is cut. Counted `forwarded_{ipip,gue}_{v4,v6}` by outer family.
//! 10. **Too big after encapsulation** (inner length + overhead > `Config.backend_mtu`):
//!     `too_big_after_encap`, then, drawing an ICMP token, the packet is replaced in place by
//!     an ICMP fragmentation-needed (IPv4 inner; next-hop MTU = `backend_mtu − overhead`;
//!     quotes up to 548 bytes) or ICMPv6 packet-too-big (IPv6 inner; quotes up to 1232 bytes)
//!     from the VIP to the client, sent back out of the RX port (`icmp_frag_needed_sent`,
//!     `icmpv6_too_big_sent`). It is sent whatever the inner DF bit: the balancer never
//!     fragments.
//! 11. **ICMP errors to a VIP** (IPv4 destination unreachable — frag-needed included — and
//!     time exceeded; ICMPv6 destination unreachable, packet too big, time exceeded): the
//!     quote is a packet the backend sent as VIP → client; reversed, it is the client → VIP
//!     flow. Its entry is read without touching it (`peek`), or the flow is scheduled like a
//!     new one without inserting, and the whole ICMP packet is encapsulated to that backend
//!     with the flow's hash (`icmp_error_steered`). Bad quotes: `drop_icmp_error_bad_quote`;
//!     quotes that are not a TCP/UDP packet from this VIP to one of its services:
//!     `drop_icmp_error_unmatched`. Other ICMP to a VIP: `drop_icmp_to_vip_ignored`.
//!
//! # Why fragments are dropped
//!
//! Only the first fragment carries the ports, so the 5-tuple consistent hash cannot place the
//! others: they would need a reassembly or fragment-tracking table per worker — memory an
//! attacker can fill, and a slow path — for traffic that does not occur here. TCP clients do
//! path-MTU discovery (DF set) and get frag-needed / packet-too-big from us when the
//! encapsulated packet would not fit, QUIC sets DF too, and the inference APIs are TCP. So
//! IPv4 fragments and IPv6 fragment headers are dropped and counted.
//!
//! # Time
//!
//! `now_ms` is the worker's coarse monotonic clock in milliseconds (wrapping `u32`, as the flow
//! table expects). Call [`PipelineWorker::housekeeping`] once per burst (or idle poll): it
//! sweeps a few flow-table buckets so expired flows release their least-connection counts.
//!
//! # For the worker loop
//!
//! - One [`PipelineWorker`] per worker, built on its lcore ([`PipelineWorker::new`] allocates
//!   and touches all flow memory). Call [`PipelineWorker::set_worker_count`] once with the
//!   number of workers: `Config.icmp_rate` / `icmp_burst` are the appliance's budget and each
//!   worker takes its share.
//! - At a burst boundary, [`PipelineWorker::set_generation`] when the cell has a new one; a
//!   loop that overlaps bursts finishes its staged burst first (`finish` would classify it
//!   again otherwise), so the old generation's packets are done when the new one is reported.
//! - [`PipelineWorker::process_burst`] with `verdicts.len() >= pkts.len()` (or `stage` /
//!   `prefetch_entries` / `finish` per burst of at most [`BURST`]); the whole burst must
//!   come from one RX port. Packets must be contiguous (single segment): count others with
//!   [`PipelineWorker::count`]`(Counter::DropMultiSegment)`.
//! - Verdicts: `Forward(port)` — transmit the (rewritten) frame on that port; `Kernel` — to
//!   [`PipelineWorker::kernel_port`]; `Drop` — free it (already counted).
//! - Frames read from the kernel port go through the pipeline too (`rx_port` = the kernel
//!   port): each leaves by the port whose interface MAC is its source MAC, so give the tap the
//!   interface's MAC.
//! - Buffer room: encapsulation prepends at most 14 + 40 + 12 bytes after removing the L2
//!   header (the default 128-byte mbuf headroom is plenty); a neighbour advertisement may
//!   append 8 bytes. Without room: `drop_no_buffer_room`.
//! - Checksums are computed in software (outer IPv4 header; the UDP checksum of GUE over IPv6
//!   covers the whole packet); no offload flags are needed or set.
//! - Publish [`PipelineWorker::counters`] in [`Counter::ALL`] order.

mod classify;
mod counters;
mod encap;
mod limit;
mod local;
mod sched;
#[cfg(test)]
mod tests;
mod view;
mod worker;

pub use counters::{Counter, Counters};
pub use encap::gue_src_port;
pub use worker::{
    ip_hash_v4, ip_hash_v6, PipelineWorker, SampleScan, Staged, WorkerConfig, BURST, IP_HASH_SEED,
    SAMPLE_BUCKETS, SAMPLE_LIMIT, SWEEP_BUCKETS,
};

/// A packet's bytes plus the headroom in front of them, as an mbuf has.
pub trait PacketBuf {
    /// The frame, from the Ethernet header on.
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame at the front by `n` bytes (taken from the headroom); false when the
    /// headroom is too small, in which case nothing changed.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; false when the frame is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Cuts the frame to `len` bytes (no-op when already shorter or equal).
    fn truncate(&mut self, len: usize);
    /// Grows the frame at the tail by `n` bytes; false when there is no tailroom.
    fn append(&mut self, n: usize) -> bool;

    /// Whether [`PacketBuf::prefetch`] issues a real prefetch. When it does not, the pipeline
    /// warms flow-table lines with plain loads instead.
    const PREFETCH: bool = false;

    /// Hints the CPU to bring the cache line at `addr` in (never faults, never dereferenced by
    /// the caller). Buffers that live next to DPDK implement it with a prefetch instruction,
    /// keeping the `unsafe` in the DPDK module; the default does nothing.
    #[inline(always)]
    fn prefetch(_addr: *const u8) {}
}

/// Which appliance port (index into the appliance's port list) a packet leaves on.
pub type PortIndex = u16;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Forward(PortIndex),
    /// Hand to the host kernel through the exception-path port.
    Kernel,
    /// Drop; the reason has already been counted.
    Drop,
}

/// How ports map to the policy's interfaces and roles, fixed for the life of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMap {
    /// For each appliance port: the name of the policy interface bound to it (`None` for the
    /// exception-path port).
    pub interface: Vec<Option<String>>,
    /// The port encapsulated traffic to backends leaves on; `None` = back out of the RX port
    /// (one-armed).
    pub backend: Option<PortIndex>,
    /// The exception-path port to the kernel, if any.
    pub kernel: Option<PortIndex>,
}

/// A `Vec`-backed [`PacketBuf`] with headroom, for tests and fuzzing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecPacket {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecPacket {
    /// Headroom an mbuf has by default (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: usize = 128;
    /// Room after the data, like a 2048-byte mbuf data room.
    pub const CAPACITY: usize = 2048;

    pub fn new(frame: &[u8]) -> Self {
        let cap = (Self::HEADROOM + frame.len()).max(Self::HEADROOM + Self::CAPACITY);
        let mut buf = vec![0u8; cap];
        buf[Self::HEADROOM..Self::HEADROOM + frame.len()].copy_from_slice(frame);
        Self {
            buf,
            start: Self::HEADROOM,
            end: Self::HEADROOM + frame.len(),
        }
    }
}

impl VecPacket {
    /// Replaces the frame with `frame`, headroom restored, reusing the buffer (no allocation
    /// while `frame` fits the capacity), as a recycled mbuf would be.
    pub fn reset(&mut self, frame: &[u8]) {
        let end = Self::HEADROOM + frame.len();
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[Self::HEADROOM..end].copy_from_slice(frame);
        self.start = Self::HEADROOM;
        self.end = end;
    }
}

impl PacketBuf for VecPacket {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn truncate(&mut self, len: usize) {
        if len < self.end - self.start {
            self.end = self.start + len;
        }
    }
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.buf.len() {
            return false;
        }
        self.end += n;
        true
    }
}

#[cfg(test)]
mod vec_packet_tests {
    use super::*;

    #[test]
    fn headroom_and_tailroom_behave_like_an_mbuf() {
        let mut p = VecPacket::new(&[1, 2, 3]);
        assert!(p.prepend(2));
        assert_eq!(p.data(), &[0, 0, 1, 2, 3]);
        assert!(!p.prepend(VecPacket::HEADROOM));
        assert!(p.adj(3));
        assert_eq!(p.data(), &[2, 3]);
        assert!(!p.adj(3));
        p.truncate(1);
        assert_eq!(p.data(), &[2]);
        assert!(p.append(1));
        assert_eq!(p.data().len(), 2);
        p.reset(&[7, 8, 9]);
        assert_eq!(p.data(), &[7, 8, 9]);
        assert!(p.prepend(VecPacket::HEADROOM));
    }
}
