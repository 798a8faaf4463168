//! IPv6 fixed headers (RFC 8200) and a bounded walk over extension headers.
//!
//! [`Packet::new_checked`] checks at least 40 bytes ([`Error::Truncated`]), version 6
//! ([`Error::BadVersion`]) and 40 + payload length within the buffer
//! ([`Error::BadIpv6PayloadLen`]). The payload ends at the payload length; trailing bytes
//! (Ethernet padding) are ignored. Jumbograms (payload length 0 with a jumbo option) are not
//! supported: the payload is then empty.
//!
//! [`Packet::upper_layer`] walks hop-by-hop, routing, destination-options and fragment headers to
//! find the upper-layer protocol and its offset. The walk is bounded: at most
//! [`MAX_EXT_HEADERS`] extension headers ([`Error::ExtHeaderChainTooLong`] beyond that), each
//! inside the payload ([`Error::TruncatedExtHeader`]); hop-by-hop anywhere but first and a second
//! fragment header are [`Error::BadExtHeader`]. AH, ESP, No Next Header and anything unknown end
//! the walk and come back as the protocol. A non-first fragment also ends it: the protocol is the
//! fragment header's next header, but no upper-layer header follows — check
//! [`UpperLayer::fragment`] before reading ports.

use super::checksum;
use super::ip::IpProtocol;
use super::{read_ipv6, read_u16, read_u32, write_u16, write_u32, Error, Field, Result};
use std::net::Ipv6Addr;

mod field {
    use super::Field;

    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;

    // Within the fragment extension header.
    pub const FRAG_OFF_M: Field = 2..4;
    pub const FRAG_IDENT: Field = 4..8;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// The most extension headers [`walk_ext_headers`] follows.
pub const MAX_EXT_HEADERS: usize = 8;
/// Length of the fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// The IPv6 minimum link MTU; ICMPv6 errors are sized to fit in it.
pub const MIN_MTU: usize = 1280;

/// The fragment header found on the way to the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

impl FragmentInfo {
    /// The first fragment (offset 0): it carries the upper-layer header.
    #[must_use]
    #[inline]
    pub const fn is_first(&self) -> bool {
        self.offset == 0
    }

    /// An atomic fragment (offset 0, no more fragments; RFC 6946): a whole packet.
    #[must_use]
    #[inline]
    pub const fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more_frags
    }
}

/// Where the extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The upper-layer protocol (or AH, ESP, No Next Header, or an unknown value).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if one was seen.
    pub fragment: Option<FragmentInfo>,
}

impl UpperLayer {
    /// Whether the upper-layer header is present: not a fragment, or the first fragment.
    #[must_use]
    #[inline]
    pub fn has_header(&self) -> bool {
        match self.fragment {
            Some(fragment) => fragment.is_first(),
            None => true,
        }
    }
}

/// Walks extension headers starting with `first` at `data[start..]`; `data` must end where the
/// payload ends (the walk never looks past it). Offsets in the result are indices into `data`.
///
/// # Errors
/// [`Error::TruncatedExtHeader`], [`Error::BadExtHeader`], [`Error::ExtHeaderChainTooLong`] (see
/// the module doc).
pub fn walk_ext_headers(first: IpProtocol, data: &[u8], start: usize) -> Result<UpperLayer> {
    let mut protocol = first;
    let mut offset = start;
    let mut fragment: Option<FragmentInfo> = None;
    let mut count = 0;
    loop {
        match protocol {
            IpProtocol::HOP_BY_HOP
            | IpProtocol::IPV6_ROUTING
            | IpProtocol::IPV6_DEST_OPTS
            | IpProtocol::IPV6_FRAGMENT => {}
            _ => {
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                })
            }
        }
        if count == MAX_EXT_HEADERS {
            return Err(Error::ExtHeaderChainTooLong);
        }
        if protocol == IpProtocol::HOP_BY_HOP && count != 0 {
            return Err(Error::BadExtHeader);
        }
        let rest = data.get(offset..).unwrap_or(&[]);
        let head = rest.get(..2).ok_or(Error::TruncatedExtHeader)?;
        let next = IpProtocol(head[0]);
        let is_fragment = protocol == IpProtocol::IPV6_FRAGMENT;
        let len = if is_fragment {
            FRAGMENT_HEADER_LEN
        } else {
            (usize::from(head[1]) + 1) * 8
        };
        let header = rest.get(..len).ok_or(Error::TruncatedExtHeader)?;
        count += 1;
        offset += len;
        protocol = next;
        if is_fragment {
            if fragment.is_some() {
                return Err(Error::BadExtHeader);
            }
            let off_m = read_u16(&header[field::FRAG_OFF_M]);
            let info = FragmentInfo {
                offset: off_m & 0xfff8,
                more_frags: off_m & 1 != 0,
                ident: read_u32(&header[field::FRAG_IDENT]),
            };
            fragment = Some(info);
            if !info.is_first() {
                // The rest is fragment data: no upper-layer header, no further ext headers.
                return Ok(UpperLayer {
                    protocol,
                    offset,
                    fragment,
                });
            }
        }
    }
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking length, version and payload length.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadVersion`] or [`Error::BadIpv6PayloadLen`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks everything the accessors rely on.
    ///
    /// # Errors
    /// As [`Packet::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::BadIpv6PayloadLen);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn ver_tc_flow(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    /// The version field (6 for a checked packet).
    #[must_use]
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// The traffic class: DSCP and ECN (copied to the outer header on encapsulation).
    #[must_use]
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        (b[0] << 4) | (b[1] >> 4)
    }

    /// The DSCP (upper 6 bits of the traffic class).
    #[must_use]
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// The ECN bits (lower 2 bits of the traffic class).
    #[must_use]
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    /// The 20-bit flow label.
    #[must_use]
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// The payload length (extension headers included).
    #[must_use]
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The next-header field of the fixed header.
    #[must_use]
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// The hop limit.
    #[must_use]
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    #[must_use]
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address.
    #[must_use]
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The bytes of the packet up to the end of the payload (header included).
    #[must_use]
    #[inline]
    pub fn packet(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(..HEADER_LEN + usize::from(self.payload_len()))
            .unwrap_or(data)
    }

    /// The payload, extension headers included.
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.packet().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Walks the extension headers to the upper layer (see the module doc).
    ///
    /// # Errors
    /// [`Error::TruncatedExtHeader`], [`Error::BadExtHeader`] or [`Error::ExtHeaderChainTooLong`].
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        walk_ext_headers(self.next_header(), self.packet(), HEADER_LEN)
    }

    /// The upper-layer bytes (header and data) for an [`UpperLayer`] found in this packet.
    ///
    /// Hand this to the TCP/UDP/ICMPv6 view: it ends where the IPv6 payload ends.
    #[must_use]
    #[inline]
    pub fn upper_layer_payload(&self, upper: &UpperLayer) -> &[u8] {
        self.packet().get(upper.offset..).unwrap_or(&[])
    }

    /// The pseudo-header sum for an upper-layer checksum over `len` bytes of `protocol`.
    #[must_use]
    #[inline]
    pub fn pseudo_header(&self, protocol: IpProtocol, len: u32) -> u64 {
        checksum::pseudo_header_v6(&self.src_addr(), &self.dst_addr(), protocol, len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_ver_tc_flow(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::VER_TC_FLOW], value);
    }

    /// Sets the version field.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let raw = self.ver_tc_flow();
        self.set_ver_tc_flow((raw & 0x0fff_ffff) | (u32::from(value & 0x0f) << 28));
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, value: u8) {
        let raw = self.ver_tc_flow();
        self.set_ver_tc_flow((raw & 0xf00f_ffff) | (u32::from(value) << 20));
    }

    /// Sets the flow label (low 20 bits of `value`).
    #[inline]
    pub fn set_flow_label(&mut self, value: u32) {
        let raw = self.ver_tc_flow();
        self.set_ver_tc_flow((raw & 0xfff0_0000) | (value & 0x000f_ffff));
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the next-header field.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.0;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A fixed IPv6 header in struct form (the outer header of IPv6-in-IPv6, or an ICMPv6 reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length in bytes; at most [`Repr::MAX_PAYLOAD_LEN`].
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// The largest payload without a jumbogram option.
    pub const MAX_PAYLOAD_LEN: usize = 65535;

    /// Reads the fixed header of a checked packet (extension headers are payload here).
    #[must_use]
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        }
    }

    /// The header length this emits (40).
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte fixed header; the payload is the caller's.
    ///
    /// A `payload_len` above [`Repr::MAX_PAYLOAD_LEN`] is a caller bug; it is written as 65535.
    ///
    /// # Panics
    /// If the buffer is shorter than 40 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.payload_len <= Self::MAX_PAYLOAD_LEN);
        packet.set_ver_tc_flow(
            (6 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff),
        );
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 2001:db8:1::7 → 2001:db8:100::10, traffic class 0xb8, flow label 0x12345, hop limit 64,
    // UDP behind a hop-by-hop header (router alert) and a destination-options header (PadN),
    // then 2 bytes of trailing padding beyond the payload length.
    static PACKET_BYTES: [u8; 82] = [
        0x6b, 0x81, 0x23, 0x45, // version 6, traffic class 0xb8, flow label 0x12345
        0x00, 0x28, // payload length 40
        0x00, // next header: hop-by-hop
        0x40, // hop limit 64
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x07, // source 2001:db8:1::7
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, // destination 2001:db8:100::10
        // hop-by-hop: next = destination options, len 0 (8 bytes), router alert (MLD), PadN
        0x3c, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00,
        // destination options: next = UDP, len 1 (16 bytes), PadN of 12
        0x11, 0x01, 0x01, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, // UDP: 1234 → 53, length 16, checksum (unchecked here), 8 bytes of data
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x10, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03,
        0x04, // padding
        0x00, 0x00,
    ];

    fn src() -> Ipv6Addr {
        "2001:db8:1::7".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "2001:db8:100::10".parse().unwrap()
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.dscp(), 46);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 40);
        assert_eq!(packet.next_header(), IpProtocol::HOP_BY_HOP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), src());
        assert_eq!(packet.dst_addr(), dst());
        assert_eq!(packet.payload().len(), 40);
        let upper = packet.upper_layer().unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: IpProtocol::UDP,
                offset: 64,
                fragment: None
            }
        );
        assert!(upper.has_header());
        assert_eq!(packet.upper_layer_payload(&upper), &PACKET_BYTES[64..80]);
    }

    #[test]
    fn test_construct() {
        let repr = Repr {
            src_addr: src(),
            dst_addr: dst(),
            next_header: IpProtocol::HOP_BY_HOP,
            payload_len: 40,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        };
        let mut bytes = PACKET_BYTES;
        bytes[..40].fill(0xa5);
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
        assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()), repr);

        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_traffic_class(0x01);
        packet.set_flow_label(0xfffff);
        packet.set_hop_limit(1);
        packet.set_next_header(IpProtocol::UDP);
        packet.set_payload_len(16);
        packet.set_src_addr(dst());
        packet.set_dst_addr(src());
        packet.set_version(6);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[64..80]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (
                packet.version(),
                packet.traffic_class(),
                packet.flow_label()
            ),
            (6, 0x01, 0xfffff)
        );
        assert_eq!(
            (packet.hop_limit(), packet.next_header()),
            (1, IpProtocol::UDP)
        );
        assert_eq!((packet.src_addr(), packet.dst_addr()), (dst(), src()));
        assert_eq!(packet.upper_layer().unwrap().offset, 40);
    }

    /// A packet carrying `headers` (each: protocol, bytes) then 8 bytes of upper layer `last`.
    fn chain(headers: &[(IpProtocol, &[u8])], last: IpProtocol) -> Vec<u8> {
        let mut bytes = PACKET_BYTES[..40].to_vec();
        let protos: Vec<IpProtocol> = headers.iter().map(|h| h.0).chain([last]).collect();
        bytes[6] = protos[0].0;
        for (i, (_, body)) in headers.iter().enumerate() {
            let mut h = body.to_vec();
            h[0] = protos[i + 1].0;
            bytes.extend_from_slice(&h);
        }
        bytes.extend_from_slice(&[0u8; 8]);
        let len = u16::try_from(bytes.len() - 40).unwrap();
        bytes[4..6].copy_from_slice(&len.to_be_bytes());
        bytes
    }

    const OPTS: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];

    fn frag(offset: u16, more: bool) -> [u8; 8] {
        let off_m = offset | u16::from(more);
        let [a, b] = off_m.to_be_bytes();
        [0, 0, a, b, 0xca, 0xfe, 0xba, 0xbe]
    }

    #[test]
    fn fragments() {
        let first = frag(0, true);
        let bytes = chain(&[(IpProtocol::IPV6_FRAGMENT, &first)], IpProtocol::TCP);
        let upper = Packet::new_checked(&bytes[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(upper.protocol, IpProtocol::TCP);
        assert_eq!(upper.offset, 48);
        let info = upper.fragment.unwrap();
        assert!(info.is_first() && !info.is_atomic() && info.more_frags);
        assert_eq!(info.ident, 0xcafe_babe);
        assert!(upper.has_header());

        // A later fragment: the walk stops at the fragment header, even if a "routing header"
        // number follows, because what follows is fragment data.
        let later = frag(1448, false);
        let bytes = chain(
            &[(IpProtocol::IPV6_FRAGMENT, &later)],
            IpProtocol::IPV6_ROUTING,
        );
        let upper = Packet::new_checked(&bytes[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(upper.protocol, IpProtocol::IPV6_ROUTING);
        assert_eq!(upper.offset, 48);
        assert_eq!(upper.fragment.unwrap().offset, 1448);
        assert!(!upper.has_header());

        let atomic = frag(0, false);
        let bytes = chain(&[(IpProtocol::IPV6_FRAGMENT, &atomic)], IpProtocol::UDP);
        let upper = Packet::new_checked(&bytes[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert!(upper.fragment.unwrap().is_atomic());

        let bytes = chain(
            &[
                (IpProtocol::IPV6_FRAGMENT, &first),
                (IpProtocol::IPV6_FRAGMENT, &first),
            ],
            IpProtocol::UDP,
        );
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer(), Err(Error::BadExtHeader));
    }

    #[test]
    fn chain_limits() {
        let eight = [(IpProtocol::IPV6_DEST_OPTS, OPTS); MAX_EXT_HEADERS];
        let bytes = chain(&eight, IpProtocol::TCP);
        let upper = Packet::new_checked(&bytes[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(
            (upper.protocol, upper.offset),
            (IpProtocol::TCP, 40 + 8 * 8)
        );

        let nine = [(IpProtocol::IPV6_DEST_OPTS, OPTS); MAX_EXT_HEADERS + 1];
        let bytes = chain(&nine, IpProtocol::TCP);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer(), Err(Error::ExtHeaderChainTooLong));

        let bytes = chain(
            &[
                (IpProtocol::IPV6_ROUTING, OPTS),
                (IpProtocol::HOP_BY_HOP, OPTS),
            ],
            IpProtocol::TCP,
        );
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer(), Err(Error::BadExtHeader));

        // A header whose length runs past the payload, though not past the buffer.
        let mut bytes = chain(&[(IpProtocol::IPV6_ROUTING, OPTS)], IpProtocol::TCP);
        bytes[41] = 2; // 24 bytes, but only 16 remain in the payload
        bytes.extend_from_slice(&[0; 16]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.upper_layer(), Err(Error::TruncatedExtHeader));
    }

    #[test]
    fn terminal_headers() {
        for proto in [
            IpProtocol::AH,
            IpProtocol::ESP,
            IpProtocol::IPV6_NO_NEXT_HEADER,
        ] {
            let bytes = chain(&[(IpProtocol::HOP_BY_HOP, OPTS)], proto);
            let upper = Packet::new_checked(&bytes[..])
                .unwrap()
                .upper_layer()
                .unwrap();
            assert_eq!((upper.protocol, upper.offset), (proto, 48));
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 0x4b;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadVersion
        );
        bytes = PACKET_BYTES;
        bytes[5] = 43; // 40 + 43 > 82
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadIpv6PayloadLen
        );
    }

    #[test]
    fn test_truncation() {
        for len in 0..=PACKET_BYTES.len() {
            match Packet::new_checked(&PACKET_BYTES[..len]) {
                Ok(packet) => {
                    assert!(len >= 80);
                    assert_eq!(packet.upper_layer().unwrap().offset, 64);
                }
                Err(e) if len < 40 => assert_eq!(e, Error::Truncated),
                Err(e) => assert_eq!(e, Error::BadIpv6PayloadLen),
            }
        }
        // Payload lengths that cut into the extension headers.
        for payload_len in 0..40u16 {
            let mut bytes = PACKET_BYTES;
            bytes[4..6].copy_from_slice(&payload_len.to_be_bytes());
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            match packet.upper_layer() {
                Ok(upper) => assert!(payload_len >= 24 && upper.offset == 64),
                Err(e) => assert_eq!(e, Error::TruncatedExtHeader),
            }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), next_header in any::<u8>(),
            payload_len in 0usize..2000, hop_limit in any::<u8>(), traffic_class in any::<u8>(),
            flow_label in 0u32..0x10_0000,
        ) {
            let repr = Repr {
                src_addr: Ipv6Addr::from(src),
                dst_addr: Ipv6Addr::from(dst),
                next_header: IpProtocol(next_header),
                payload_len, hop_limit, traffic_class, flow_label,
            };
            let mut bytes = vec![0u8; HEADER_LEN + payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()), repr);
        }

        #[test]
        fn arbitrary_chains_never_panic(
            protos in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(6), Just(17), any::<u8>()],
                1..12,
            ),
            body in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            let mut bytes = PACKET_BYTES[..40].to_vec();
            bytes[6] = protos[0];
            bytes.extend_from_slice(&body);
            // Thread the chosen next-header values through the first bytes of 8-byte blocks.
            for (i, p) in protos.iter().skip(1).enumerate() {
                if let Some(b) = bytes.get_mut(40 + i * 8) {
                    *b = *p;
                }
                if let Some(b) = bytes.get_mut(41 + i * 8) {
                    *b &= 1;
                }
            }
            let len = u16::try_from(body.len()).unwrap();
            bytes[4..6].copy_from_slice(&len.to_be_bytes());
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            if let Ok(upper) = packet.upper_layer() {
                prop_assert!(upper.offset <= bytes.len());
                let _ = packet.upper_layer_payload(&upper);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.traffic_class(), packet.flow_label(), packet.payload());
                let _ = (packet.src_addr(), packet.dst_addr(), Repr::parse(&packet));
                if let Ok(upper) = packet.upper_layer() {
                    let _ = packet.upper_layer_payload(&upper);
                }
            }
        }
    }
}
