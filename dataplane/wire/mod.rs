//! Zero-copy, checked views of the packet headers the data plane reads and writes.
//!
//! One file per header, in the style of smoltcp's `src/wire/`: a `Packet<T: AsRef<[u8]>>` (or
//! `Frame<T>`) wraps a byte buffer without copying it, a `mod field` names the byte ranges, and
//! accessors read big-endian values at those offsets. Where a struct form helps (building replies
//! and outer headers) a small `Repr` has `parse` and `emit`. Nothing here calls DPDK, allocates,
//! or uses `unsafe`; the views run on any `&[u8]`, so the pipeline can be tested and fuzzed
//! without a NIC.
//!
//! # The guarantee
//!
//! Untrusted bytes enter only through `new_checked()`. It validates every length and offset the
//! accessors rely on, so once it returns `Ok`, **no accessor of that view can panic**, whatever
//! the bytes were. Failures come back as one [`Error`], whose [`Error::name`] is a stable
//! snake_case counter name (the pipeline keeps one counter per variant).
//!
//! The escape hatches say so in their names: `new_unchecked()` wraps a buffer without checks (for
//! buffers the caller built, e.g. before `emit`), and accessors that skip checks end in
//! `_unchecked`. Setters write what they are told; a view whose length fields were rewritten is
//! only as consistent as the values written. `emit` panics if the buffer is shorter than
//! `Repr::buffer_len()`: buffers for emission are sized by the caller, not by the wire.
//!
//! Checksums are never checked by `new_checked()` (the NIC may have verified them already, and a
//! balancer forwarding to a backend does not need the L4 checksum); each view has
//! `verify_checksum*` and `fill_checksum*`, and `Repr::parse` of the messages the appliance
//! answers itself (IPv4 header, ICMP, ICMPv6) verifies the checksum and fails with
//! [`Error::BadChecksum`].
//!
//! # Lengths
//!
//! Each L3/L4 view is bounded by its own length field where it has one: an IPv4 payload ends at
//! the total length (Ethernet padding after it is ignored), an IPv6 payload at 40 + payload
//! length, a UDP payload at the UDP length. TCP and ICMP have no length field: hand those views
//! exactly the L3 payload (`ipv4::Packet::payload()`, or the IPv6 payload from the upper-layer
//! offset), because their checksums cover the whole buffer.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gue;
pub mod icmp;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

use core::fmt;

pub use self::arp::{ArpOp, Operation as ArpOperation, Packet as ArpPacket, Repr as ArpRepr};
pub use self::ethernet::{
    EtherType, EthernetAddress, Frame as EthernetFrame, L2Header, Repr as EthernetRepr, VlanTag,
};
pub use self::gue::{Packet as GuePacket, Repr as GueRepr};
pub use self::icmp::{
    EmbeddedIpv4, Message as IcmpMessage, Packet as IcmpPacket, Repr as IcmpRepr,
};
pub use self::icmpv6::{
    EmbeddedIpv6, Message as Icmpv6Message, NdpFlags, NdpOption, Packet as Icmpv6Packet,
    Repr as Icmpv6Repr,
};
pub use self::ip::IpProtocol;
pub use self::ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr};
pub use self::ipv6::{FragmentInfo, Packet as Ipv6Packet, Repr as Ipv6Repr, UpperLayer};
pub use self::tcp::{Flags as TcpFlags, Packet as TcpPacket};
pub use self::udp::{Packet as UdpPacket, Repr as UdpRepr};

/// A byte range of a header field.
pub type Field = core::ops::Range<usize>;
/// The bytes from an offset to the end of a buffer.
pub type Rest = core::ops::RangeFrom<usize>;

/// Why bytes were not accepted as a header (or a message was not accepted by `Repr::parse`).
///
/// One variant per reason the pipeline counts; [`Error::name`] is the counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before a fixed-size header (or a length-delimited part of one) does.
    Truncated,
    /// A version field (IPv4, IPv6, GUE, or an embedded IP header) has the wrong value.
    BadVersion,
    /// A VLAN tag in a position it may not take (an 802.1ad S-tag inside a C-tag).
    BadVlanTag,
    /// More than two stacked VLAN tags.
    TooManyVlanTags,
    /// ARP for anything but Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    UnsupportedArp,
    /// ARP operation other than request (1) or reply (2).
    BadArpOperation,
    /// IPv4 IHL below 5 words, or a header longer than the buffer.
    BadIpv4Ihl,
    /// IPv4 total length below the header length or beyond the buffer.
    BadIpv4TotalLen,
    /// IPv6 payload length beyond the buffer.
    BadIpv6PayloadLen,
    /// An IPv6 extension header runs past the payload (or the quoted packet).
    TruncatedExtHeader,
    /// An IPv6 extension header where it may not be: hop-by-hop not first, a second fragment header.
    BadExtHeader,
    /// More IPv6 extension headers than [`ipv6::MAX_EXT_HEADERS`].
    ExtHeaderChainTooLong,
    /// TCP data offset below 5 words or beyond the segment.
    BadTcpDataOffset,
    /// UDP length below 8 or beyond the buffer.
    BadUdpLength,
    /// A checksum that does not verify (reported by `Repr::parse` and by callers that verify).
    BadChecksum,
    /// A neighbour-discovery option with length 0 or one that runs past the message.
    BadNdpOption,
    /// An ICMP or ICMPv6 message type (or code) that `Repr::parse` does not handle.
    UnsupportedIcmp,
}

impl Error {
    /// Every variant, in declaration order: register one counter per entry.
    pub const ALL: [Error; 17] = [
        Error::Truncated,
        Error::BadVersion,
        Error::BadVlanTag,
        Error::TooManyVlanTags,
        Error::UnsupportedArp,
        Error::BadArpOperation,
        Error::BadIpv4Ihl,
        Error::BadIpv4TotalLen,
        Error::BadIpv6PayloadLen,
        Error::TruncatedExtHeader,
        Error::BadExtHeader,
        Error::ExtHeaderChainTooLong,
        Error::BadTcpDataOffset,
        Error::BadUdpLength,
        Error::BadChecksum,
        Error::BadNdpOption,
        Error::UnsupportedIcmp,
    ];

    /// The stable snake_case counter name of this error.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadVersion => "bad_version",
            Error::BadVlanTag => "bad_vlan_tag",
            Error::TooManyVlanTags => "too_many_vlan_tags",
            Error::UnsupportedArp => "unsupported_arp",
            Error::BadArpOperation => "bad_arp_operation",
            Error::BadIpv4Ihl => "bad_ipv4_ihl",
            Error::BadIpv4TotalLen => "bad_ipv4_total_len",
            Error::BadIpv6PayloadLen => "bad_ipv6_payload_len",
            Error::TruncatedExtHeader => "truncated_ext_header",
            Error::BadExtHeader => "bad_ext_header",
            Error::ExtHeaderChainTooLong => "ext_header_chain_too_long",
            Error::BadTcpDataOffset => "bad_tcp_data_offset",
            Error::BadUdpLength => "bad_udp_length",
            Error::BadChecksum => "bad_checksum",
            Error::BadNdpOption => "bad_ndp_option",
            Error::UnsupportedIcmp => "unsupported_icmp",
        }
    }

    /// A dense index (the position in [`Error::ALL`]) for counter arrays.
    #[must_use]
    pub const fn index(&self) -> usize {
        *self as usize
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Truncated => "buffer shorter than the header",
            Error::BadVersion => "wrong version field",
            Error::BadVlanTag => "VLAN tag type in the wrong position",
            Error::TooManyVlanTags => "more than two VLAN tags",
            Error::UnsupportedArp => "ARP not for Ethernet/IPv4",
            Error::BadArpOperation => "ARP operation neither request nor reply",
            Error::BadIpv4Ihl => "IPv4 header length out of range",
            Error::BadIpv4TotalLen => "IPv4 total length out of range",
            Error::BadIpv6PayloadLen => "IPv6 payload length beyond the buffer",
            Error::TruncatedExtHeader => "IPv6 extension header truncated",
            Error::BadExtHeader => "IPv6 extension header out of place",
            Error::ExtHeaderChainTooLong => "too many IPv6 extension headers",
            Error::BadTcpDataOffset => "TCP data offset out of range",
            Error::BadUdpLength => "UDP length out of range",
            Error::BadChecksum => "checksum mismatch",
            Error::BadNdpOption => "malformed neighbour-discovery option",
            Error::UnsupportedIcmp => "unsupported ICMP message",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}

/// Result of parsing wire bytes.
pub type Result<T> = core::result::Result<T, Error>;

// Big-endian helpers. Callers pass a slice cut with a `field` constant, so the compiler knows its
// length and the only bounds check left is the one on that cut.

#[inline]
pub(crate) fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
pub(crate) fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], value: u16) {
    b[..2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(b: &mut [u8], value: u32) {
    b[..4].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn read_ipv4(b: &[u8]) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[inline]
pub(crate) fn read_ipv6(b: &[u8]) -> std::net::Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    std::net::Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_unique_snake_case_and_indexed() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            let name = e.name();
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{name}"
            );
            assert!(!e.to_string().is_empty());
            for other in &Error::ALL[i + 1..] {
                assert_ne!(name, other.name());
            }
        }
    }
}
