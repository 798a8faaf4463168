//! One enum for everything a worker counts: each drop reason and each event.
//!
//! Counters are plain `u64`s in one array indexed by [`Counter`], written only by their worker
//! (VPP's `foreach_lb_error` idea): no atomics, no branches, one increment per event. Names are
//! stable snake_case, ready for Prometheus; every drop reason starts with `drop_`.

use crate::flow::FlowCounters;
use crate::wire;

macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Everything a pipeline worker counts. See the pipeline module doc for when each is
        /// incremented.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Counter {
            $($(#[$doc])* $variant,)*
        }

        impl Counter {
            /// Every counter, in declaration (= index) order.
            pub const ALL: [Counter; Counter::COUNT] = [$(Counter::$variant,)*];
            /// Number of counters.
            pub const COUNT: usize = [$($name,)*].len();

            /// The stable snake_case name.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }
        }
    };
}

counters! {
    // ---- verdicts and events ----
    /// Encapsulated IP-in-IPv4 (protocol 4 or 41) to a backend.
    ForwardedIpipV4 => "forwarded_ipip_v4",
    /// Encapsulated IP-in-IPv6 (next header 4 or 41) to a backend.
    ForwardedIpipV6 => "forwarded_ipip_v6",
    /// Encapsulated in GUE over IPv4 to a backend.
    ForwardedGueV4 => "forwarded_gue_v4",
    /// Encapsulated in GUE over IPv6 to a backend.
    ForwardedGueV6 => "forwarded_gue_v6",
    /// Handed to the kernel through the exception-path port.
    ToKernel => "to_kernel",
    /// Sent by the kernel (exception-path port) and put on the wire.
    KernelToWire => "kernel_to_wire",
    /// ARP reply sent for an own address or a VIP.
    ArpReplySent => "arp_reply_sent",
    /// Neighbour advertisement sent for an own address or a VIP.
    NdAdvertSent => "nd_advert_sent",
    /// ARP request sent to resolve or refresh a gateway (by worker 0, for the resolver).
    ArpRequestSent => "arp_request_sent",
    /// Neighbour solicitation sent to resolve or refresh a gateway.
    NdSolicitSent => "nd_solicit_sent",
    /// Gratuitous ARP sent for an own address or a VIP (on start, and for new ones).
    GratuitousArpSent => "gratuitous_arp_sent",
    /// Unsolicited neighbour advertisement sent for an own address or a VIP.
    UnsolicitedNaSent => "unsolicited_na_sent",
    /// ARP reply, gratuitous ARP or neighbour advertisement about a gateway of the RX
    /// interface, handed to the resolver.
    NeighbourLearned => "neighbour_learned",
    /// ICMP echo reply sent.
    IcmpEchoReplySent => "icmp_echo_reply_sent",
    /// ICMPv6 echo reply sent.
    Icmpv6EchoReplySent => "icmpv6_echo_reply_sent",
    /// A packet was bigger than the backend MTU once encapsulated.
    TooBigAfterEncap => "too_big_after_encap",
    /// ICMP fragmentation-needed sent back to a client.
    IcmpFragNeededSent => "icmp_frag_needed_sent",
    /// ICMPv6 packet-too-big sent back to a client.
    Icmpv6TooBigSent => "icmpv6_too_big_sent",
    /// An ICMP error about a VIP flow was sent to the flow's backend.
    IcmpErrorSteered => "icmp_error_steered",
    /// A flow's backend is no longer in the table: the flow was rescheduled.
    FlowBackendGone => "flow_backend_gone",
    /// A flow's backend is unhealthy: the flow was rescheduled.
    FlowBackendUnhealthy => "flow_backend_unhealthy",
    /// A new flow went to the route's canary pool.
    CanarySelected => "canary_selected",
    /// A new flow went to a fallback pool (the route's first pool had no healthy backend).
    PoolFallback => "pool_fallback",
    /// Bounded load: a new flow's preferred backend (its `maglev` or `ip_hash` slot) is full, so
    /// it went to the next backend of its own preference order that is not.
    BoundedLoadSpill => "bounded_load_spill",
    /// Bounded load: a new flow's preferred backend is full and so is every other backend of
    /// the pool; it went to the preferred one (the pool is saturated).
    BoundedLoadAllFull => "bounded_load_all_full",
    /// A TCP RST (or other non-insertable packet) with no flow was forwarded without an entry.
    ForwardedWithoutEntry => "forwarded_without_entry",
    /// A new flow the connection table would not store (flood mode, insert cap, or both of
    /// its buckets full of entries it may not evict: `flow_flood_stateless`,
    /// `flow_insert_throttled`, `flow_insert_refused`) was scheduled by consistent hash and
    /// forwarded without an entry; its later packets are placed the same way.
    ForwardedStateless => "forwarded_stateless",
    /// A provisional flow (created by a TCP packet without SYN) saw its second packet and was
    /// promoted to established.
    FlowProvisionalPromoted => "flow_provisional_promoted",
    /// The per-source limiter's set was full: a new source took the way of a source whose
    /// bucket was not full again, which restarts with a full bucket (at most one extra burst).
    LimitSourceEvicted => "limit_source_evicted",
    /// Of those, evictions of a source that was at its limit: more sources are being limited at
    /// once than the table holds (`SOURCE_CAPACITY` per worker).
    LimitSourceTableFull => "limit_source_table_full",

    // ---- the flow tables (synchronised from `FlowCounters`) ----
    /// Flow lookups that found a live entry.
    FlowHits => "flow_hits",
    /// Flow lookups that found nothing.
    FlowMisses => "flow_misses",
    /// New flow entries stored.
    FlowInserts => "flow_inserts",
    /// Inserts that overwrote a live entry.
    FlowReplaced => "flow_replaced",
    /// Live flows evicted from a full bucket.
    FlowEvicted => "flow_evicted",
    /// Flows reclaimed after their idle timeout.
    FlowExpired => "flow_expired",
    /// Inserts refused by the insert-rate cap (the packet was forwarded statelessly).
    FlowInsertThrottled => "flow_insert_throttled",
    /// TCP packets without SYN that found no flow: the broken-flow signal.
    FlowNonSynMiss => "flow_non_syn_miss",
    /// Flows stored as provisional (from a TCP packet without SYN): short-lived, evicted first.
    FlowProvisionalInserts => "flow_provisional_inserts",
    /// New flows not stored because both their buckets held only entries they may not evict
    /// (established flows are never evicted by a new flow).
    FlowInsertRefused => "flow_insert_refused",
    /// Times a flow table entered flood mode (occupancy or insert-cap pressure).
    FlowFloodEntered => "flow_flood_entered",
    /// Times a flow table left flood mode.
    FlowFloodLeft => "flow_flood_left",
    /// Milliseconds the flow tables spent in flood mode (summed over the IPv4 and IPv6 tables).
    FlowFloodMilliseconds => "flow_flood_milliseconds",
    /// New flows not stored because their table was in flood mode (forwarded statelessly).
    FlowFloodStateless => "flow_flood_stateless",

    // ---- drops: table and ports ----
    /// No table generation installed yet.
    DropNoTable => "drop_no_table",
    /// The RX port is bound to no interface of the generation.
    DropPortUnbound => "drop_port_unbound",
    /// From the kernel port with a source MAC that is no interface's.
    DropKernelUnknownSource => "drop_kernel_unknown_source",
    /// A generation index out of range (only an unvalidated generation can cause it).
    DropBadTableReference => "drop_bad_table_reference",

    // ---- drops: wire parse errors (one per `wire::Error`) ----
    /// `wire::Error::Truncated`.
    DropTruncated => "drop_truncated",
    /// `wire::Error::BadVersion`.
    DropBadVersion => "drop_bad_version",
    /// `wire::Error::BadVlanTag`.
    DropBadVlanTag => "drop_bad_vlan_tag",
    /// `wire::Error::TooManyVlanTags`.
    DropTooManyVlanTags => "drop_too_many_vlan_tags",
    /// `wire::Error::UnsupportedArp`.
    DropUnsupportedArp => "drop_unsupported_arp",
    /// `wire::Error::BadArpOperation`.
    DropBadArpOperation => "drop_bad_arp_operation",
    /// `wire::Error::BadIpv4Ihl`.
    DropBadIpv4Ihl => "drop_bad_ipv4_ihl",
    /// `wire::Error::BadIpv4TotalLen`.
    DropBadIpv4TotalLen => "drop_bad_ipv4_total_len",
    /// `wire::Error::BadIpv6PayloadLen`.
    DropBadIpv6PayloadLen => "drop_bad_ipv6_payload_len",
    /// `wire::Error::TruncatedExtHeader`.
    DropTruncatedExtHeader => "drop_truncated_ext_header",
    /// `wire::Error::BadExtHeader`.
    DropBadExtHeader => "drop_bad_ext_header",
    /// `wire::Error::ExtHeaderChainTooLong`.
    DropExtHeaderChainTooLong => "drop_ext_header_chain_too_long",
    /// `wire::Error::BadTcpDataOffset`.
    DropBadTcpDataOffset => "drop_bad_tcp_data_offset",
    /// `wire::Error::BadUdpLength`.
    DropBadUdpLength => "drop_bad_udp_length",
    /// `wire::Error::BadChecksum` (ICMPv6 neighbour discovery).
    DropBadChecksum => "drop_bad_checksum",
    /// `wire::Error::BadNdpOption`.
    DropBadNdpOption => "drop_bad_ndp_option",
    /// `wire::Error::UnsupportedIcmp`.
    DropUnsupportedIcmp => "drop_unsupported_icmp",

    // ---- drops: L2 ----
    /// Destination MAC neither the RX interface's, broadcast (see `drop_l2_broadcast`), nor
    /// IPv6 multicast (neighbour discovery).
    DropNotOurMac => "drop_not_our_mac",
    /// EtherType other than ARP, IPv4, IPv6.
    DropUnknownEthertype => "drop_unknown_ethertype",

    // ---- drops: local traffic ----
    /// ARP request for an address that is neither the RX interface's nor in a VIP.
    DropArpNotOurs => "drop_arp_not_ours",
    /// ARP request from a broadcast, multicast or all-zero sender MAC (never answered: the reply
    /// would go to every station).
    DropArpBadSender => "drop_arp_bad_sender",
    /// ARP reply or gratuitous ARP on an interface whose gateway MAC is configured.
    DropArpIgnored => "drop_arp_ignored",
    /// ARP reply, gratuitous ARP or neighbour advertisement about an address that is no
    /// gateway of the RX interface (nothing asked for it): ignored.
    DropNeighbourNotGateway => "drop_neighbour_not_gateway",
    /// ARP or neighbour advertisement claiming a broadcast, multicast or all-zero MAC.
    DropNeighbourBadMac => "drop_neighbour_bad_mac",
    /// Neighbour advertisement failing RFC 4861 §7.1.2 (hop limit, target, solicited flag to
    /// a multicast destination) or without a target link-layer address.
    DropNaInvalid => "drop_na_invalid",
    /// The resolver's queue of learned neighbours was full (or no resolver runs).
    DropNeighbourQueueFull => "drop_neighbour_queue_full",
    /// A resolver frame worker 0 could not send (no mbuf, or the TX queue stayed full).
    DropNeighbourTx => "drop_neighbour_tx",
    /// Neighbour solicitation for an address that is neither the RX interface's nor a VIP.
    DropNdNotOurs => "drop_nd_not_ours",
    /// Neighbour solicitation failing RFC 4861 §7.1.1 (hop limit, target, DAD rules).
    DropNdInvalid => "drop_nd_invalid",
    /// Destination is neither an own address nor in a VIP.
    DropNotOurs => "drop_not_ours",
    /// Traffic for the host but no exception-path port is configured.
    DropForHostNoKernelPort => "drop_for_host_no_kernel_port",
    /// An ICMP reply or error the ICMP token bucket had no token for.
    DropIcmpRateLimited => "drop_icmp_rate_limited",
    /// ICMP or ICMPv6 to a VIP that is neither an echo request nor a steerable error.
    DropIcmpToVipIgnored => "drop_icmp_to_vip_ignored",
    /// An ICMP error to a VIP whose quoted packet is malformed.
    DropIcmpErrorBadQuote => "drop_icmp_error_bad_quote",
    /// An ICMP error to a VIP whose quoted packet is no TCP/UDP flow of this VIP's services.
    DropIcmpErrorUnmatched => "drop_icmp_error_unmatched",
    /// An ICMP error to steer that would exceed the backend MTU once encapsulated (no error
    /// is ever sent about an error).
    DropIcmpErrorTooBig => "drop_icmp_error_too_big",

    // ---- drops: hostile input ----
    /// IPv4 header with options (IHL above 5).
    DropIpv4Options => "drop_ipv4_options",
    /// IPv4 fragment (more-fragments set or non-zero offset).
    DropIpv4Fragment => "drop_ipv4_fragment",
    /// IPv4 header checksum does not verify.
    DropBadIpv4Checksum => "drop_bad_ipv4_checksum",
    /// IPv6 with a hop-by-hop, routing or destination-options header.
    DropIpv6ExtHeader => "drop_ipv6_ext_header",
    /// IPv6 with a fragment header.
    DropIpv6Fragment => "drop_ipv6_fragment",
    /// TTL or hop limit of 0 or 1 on traffic to be forwarded.
    DropTtlExpired => "drop_ttl_expired",
    /// TCP flag combination no real stack sends.
    DropBadTcpFlags => "drop_bad_tcp_flags",
    /// UDP over IPv6 with checksum 0.
    DropIpv6UdpZeroChecksum => "drop_ipv6_udp_zero_checksum",
    /// IPIP / IPv6-in-IP / GUE to a VIP: never encapsulated twice.
    DropAlreadyEncapsulated => "drop_already_encapsulated",
    /// Martian source: unspecified, loopback, multicast, reserved/broadcast, a VIP, our own.
    DropMartianSource => "drop_martian_source",
    /// IPv4 with the reserved ("evil") flag set: RFC 791 says it must be zero.
    DropIpv4ReservedFlag => "drop_ipv4_reserved_flag",
    /// TCP or UDP to a VIP from source port 0, which no real stack sends from.
    DropSourcePortZero => "drop_source_port_zero",
    /// An ICMP or ICMPv6 echo request whose checksum does not verify (not answered).
    DropBadIcmpChecksum => "drop_bad_icmp_checksum",
    /// A frame to the broadcast MAC other than ARP (IPv4 broadcast, anything else).
    DropL2Broadcast => "drop_l2_broadcast",
    /// IP protocol other than TCP, UDP, ICMP to a VIP.
    DropUnsupportedProtocol => "drop_unsupported_protocol",
    /// TCP/UDP to a VIP on a port or protocol no service has.
    DropNoService => "drop_no_service",

    // ---- drops: policy ----
    /// Denied by the source ACL.
    DropAcl => "drop_acl",
    /// Per-source new-flow rate limit.
    DropRateLimited => "drop_rate_limited",
    /// No route of the service matches the client's region (no catch-all).
    DropNoRoute => "drop_no_route",
    /// None of the route's pools has a healthy backend.
    DropNoHealthyBackend => "drop_no_healthy_backend",
    /// The egress interface has neither a gateway MAC nor a gateway address of the outer
    /// family to resolve.
    DropNoGatewayMac => "drop_no_gateway_mac",
    /// The egress interface's gateway is being resolved (no MAC yet, or it stopped answering):
    /// dropped, not held (see `dataplane/neighbour`).
    DropGatewayUnresolved => "drop_gateway_unresolved",
    /// Not enough headroom or tailroom in the buffer to build the output.
    DropNoBufferRoom => "drop_no_buffer_room",
    /// A multi-segment packet (the poll loop drops these before the pipeline; counted here so
    /// every drop has one home).
    DropMultiSegment => "drop_multi_segment",
    /// A packet the TX queue had no room for after the bounded retries (counted by the
    /// poll loop, which sends).
    DropTxQueueFull => "drop_tx_queue_full",
    /// A verdict naming a port the worker cannot send on (no exception-path port for a
    /// `Kernel` verdict, or a port index past the appliance's ports; counted by the poll loop).
    DropUnroutable => "drop_unroutable",
}

impl Counter {
    /// The counter of a wire parse error.
    #[must_use]
    #[inline]
    pub const fn wire(error: wire::Error) -> Self {
        match error {
            wire::Error::Truncated => Self::DropTruncated,
            wire::Error::BadVersion => Self::DropBadVersion,
            wire::Error::BadVlanTag => Self::DropBadVlanTag,
            wire::Error::TooManyVlanTags => Self::DropTooManyVlanTags,
            wire::Error::UnsupportedArp => Self::DropUnsupportedArp,
            wire::Error::BadArpOperation => Self::DropBadArpOperation,
            wire::Error::BadIpv4Ihl => Self::DropBadIpv4Ihl,
            wire::Error::BadIpv4TotalLen => Self::DropBadIpv4TotalLen,
            wire::Error::BadIpv6PayloadLen => Self::DropBadIpv6PayloadLen,
            wire::Error::TruncatedExtHeader => Self::DropTruncatedExtHeader,
            wire::Error::BadExtHeader => Self::DropBadExtHeader,
            wire::Error::ExtHeaderChainTooLong => Self::DropExtHeaderChainTooLong,
            wire::Error::BadTcpDataOffset => Self::DropBadTcpDataOffset,
            wire::Error::BadUdpLength => Self::DropBadUdpLength,
            wire::Error::BadChecksum => Self::DropBadChecksum,
            wire::Error::BadNdpOption => Self::DropBadNdpOption,
            wire::Error::UnsupportedIcmp => Self::DropUnsupportedIcmp,
        }
    }

    /// Whether this counts dropped packets (every drop reason's name starts with `drop_`).
    #[must_use]
    pub fn is_drop(self) -> bool {
        self >= Self::DropNoTable
    }

    /// The counter with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Position in [`Counter::ALL`] (and in the segment's counter-name table).
    #[inline]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl core::fmt::Display for Counter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One worker's counters: a `u64` per [`Counter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters([u64; Counter::COUNT]);

impl Default for Counters {
    fn default() -> Self {
        Self([0; Counter::COUNT])
    }
}

impl Counters {
    /// The value of one counter.
    #[must_use]
    #[inline]
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter.index()]
    }

    /// `(name, value)` for every counter, in [`Counter::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.iter().map(|c| (c.name(), self.get(*c)))
    }

    /// Sum of every drop counter.
    #[must_use]
    pub fn drops(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|c| self.get(*c))
            .sum()
    }

    /// Adds one.
    #[inline]
    pub(crate) fn inc(&mut self, counter: Counter) {
        self.0[counter.index()] += 1;
    }

    /// Adds `n`.
    #[inline]
    pub(crate) fn add(&mut self, counter: Counter, n: u64) {
        self.0[counter.index()] += n;
    }

    /// Overwrites the flow-table counters with the sum of both tables'.
    #[inline]
    pub(crate) fn set_flow(&mut self, v4: &FlowCounters, v6: &FlowCounters) {
        let (a, b) = (v4.values(), v6.values());
        let first = Counter::FlowHits.index();
        for i in 0..a.len() {
            self.0[first + i] = a[i] + b[i];
        }
    }
}

impl core::ops::Index<Counter> for Counters {
    type Output = u64;

    #[inline]
    fn index(&self, counter: Counter) -> &u64 {
        &self.0[counter.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_drops_are_prefixed() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            let name = c.name();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(c.is_drop(), name.starts_with("drop_"), "{name}");
            assert_eq!(Counter::from_name(name), Some(*c));
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(name, other.name());
            }
        }
    }

    #[test]
    fn every_wire_error_has_its_counter() {
        for e in wire::Error::ALL {
            let c = Counter::wire(e);
            assert_eq!(c.name(), format!("drop_{}", e.name()));
        }
    }

    #[test]
    fn flow_counters_line_up_with_the_flow_table_names() {
        let first = Counter::FlowHits.index();
        for (i, name) in FlowCounters::NAMES.iter().enumerate() {
            assert_eq!(Counter::ALL[first + i].name(), *name);
        }
    }
}
