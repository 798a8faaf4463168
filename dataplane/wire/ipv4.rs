//! IPv4 headers (RFC 791).
//!
//! [`Packet::new_checked`] accepts a buffer that starts with an IPv4 header and checks, in this
//! order: at least 20 bytes ([`Error::Truncated`]); version 4 ([`Error::BadVersion`]); IHL of at
//! least 5 words and no longer than the buffer ([`Error::BadIpv4Ihl`]); total length of at least
//! the header length and no longer than the buffer ([`Error::BadIpv4TotalLen`]). The payload is
//! bounded by the total length, so Ethernet padding after it is ignored. Options are not parsed;
//! [`Packet::has_options`] says whether there are any.
//!
//! The setters cover what a load balancer rewrites (addresses, TTL, ToS, total length, protocol,
//! identification, checksum); [`Repr`] builds the outer header of an IPIP tunnel.

use super::checksum;
use super::ip::IpProtocol;
use super::{read_ipv4, read_u16, write_u16, Error, Field, Result};
use std::net::Ipv4Addr;

mod field {
    use super::Field;

    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_RESERVED: u16 = 0x8000;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic on a short or inconsistent buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking version and lengths (see the module doc).
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadVersion`], [`Error::BadIpv4Ihl`] or
    /// [`Error::BadIpv4TotalLen`].
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
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN || header_len > len {
            return Err(Error::BadIpv4Ihl);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > len {
            return Err(Error::BadIpv4TotalLen);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for a checked packet).
    #[must_use]
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4).
    #[must_use]
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type-of-service byte: DSCP and ECN (copied to the outer header on encapsulation).
    #[must_use]
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The differentiated services code point (upper 6 bits of the ToS byte).
    #[must_use]
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// The explicit congestion notification bits (lower 2 bits of the ToS byte).
    #[must_use]
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// The total length: header plus payload, in bytes.
    #[must_use]
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    #[must_use]
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_and_offset(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// The reserved flag (bit 0 of the flags), which RFC 791 says must be zero.
    #[must_use]
    #[inline]
    pub fn reserved_flag(&self) -> bool {
        self.flags_and_offset() & FLAG_RESERVED != 0
    }

    /// The don't-fragment flag.
    #[must_use]
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_and_offset() & FLAG_DF != 0
    }

    /// The more-fragments flag.
    #[must_use]
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & FLAG_MF != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    #[must_use]
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_and_offset() & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this is a fragment: more-fragments set or a non-zero offset.
    ///
    /// Only the first fragment (offset 0) carries the L4 header.
    #[must_use]
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Whether the header carries options (IHL above 5).
    #[must_use]
    #[inline]
    pub fn has_options(&self) -> bool {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f != 5
    }

    /// The time to live.
    #[must_use]
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    #[must_use]
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    #[must_use]
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address.
    #[must_use]
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address.
    #[must_use]
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The whole header, options included.
    #[must_use]
    #[inline]
    pub fn header(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(..usize::from(self.header_len())).unwrap_or(data)
    }

    /// The options bytes (empty without options).
    #[must_use]
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.header().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// Whether the header checksum verifies (options included).
    #[must_use]
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(checksum::sum(self.header()))
    }

    /// The payload: from the end of the header to the total length.
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let range = self.payload_range();
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }

    #[inline]
    fn payload_range(&self) -> Field {
        usize::from(self.header_len())..usize::from(self.total_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version field.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes (rounded down to 4-byte words).
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) & 0x0f);
    }

    /// Sets the ToS byte (DSCP and ECN).
    #[inline]
    pub fn set_tos(&mut self, value: u8) {
        self.buffer.as_mut()[field::TOS] = value;
    }

    /// Sets the DSCP, keeping the ECN bits.
    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let tos = (value << 2) | self.ecn();
        self.set_tos(tos);
    }

    /// Sets the ECN bits, keeping the DSCP.
    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let tos = (self.tos() & 0xfc) | (value & 0x03);
        self.set_tos(tos);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], value);
    }

    fn set_flags_and_offset(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::FLG_OFF], value);
    }

    /// Clears the flags and the fragment offset (an unfragmented packet, DF clear).
    #[inline]
    pub fn clear_flags(&mut self) {
        self.set_flags_and_offset(0);
    }

    /// Sets or clears don't-fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let raw = self.flags_and_offset();
        self.set_flags_and_offset(if value { raw | FLAG_DF } else { raw & !FLAG_DF });
    }

    /// Sets or clears more-fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let raw = self.flags_and_offset();
        self.set_flags_and_offset(if value { raw | FLAG_MF } else { raw & !FLAG_MF });
    }

    /// Sets the fragment offset in bytes (rounded down to 8-byte units).
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        let raw = self.flags_and_offset();
        self.set_flags_and_offset((raw & !FRAG_OFFSET_MASK) | (value >> 3));
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.0;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Computes the header checksum (options included) and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let check = checksum::checksum(self.header());
        self.set_checksum(check);
    }

    /// Decrements the TTL and patches the checksum incrementally (RFC 1624).
    ///
    /// Returns the new TTL; a packet that arrives with TTL 0 or 1 should be dropped by the
    /// caller before forwarding, and this saturates at 0 rather than wrapping.
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        let new_ttl = ttl.saturating_sub(1);
        let proto = self.protocol().0;
        let check = checksum::update16(
            self.checksum(),
            u16::from_be_bytes([ttl, proto]),
            u16::from_be_bytes([new_ttl, proto]),
        );
        self.set_ttl(new_ttl);
        self.set_checksum(check);
        new_ttl
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An option-less, unfragmented IPv4 header in struct form (the outer header of IPIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in bytes; at most [`Repr::MAX_PAYLOAD_LEN`].
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// ToS byte (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment.
    pub dont_frag: bool,
}

impl Repr {
    /// The largest payload an IPv4 packet without options can carry.
    pub const MAX_PAYLOAD_LEN: usize = 65535 - HEADER_LEN;

    /// Reads a checked packet, verifying its header checksum.
    ///
    /// Options are skipped (`payload_len` excludes them); fragment offset and more-fragments are
    /// not represented, so callers that care check [`Packet::is_fragment`] first.
    ///
    /// # Errors
    /// [`Error::BadChecksum`] if the header checksum does not verify.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// The header length this emits (20).
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with a correct checksum; the payload is the caller's.
    ///
    /// A `payload_len` above [`Repr::MAX_PAYLOAD_LEN`] is a caller bug (the MTU check comes
    /// first); it is written as total length 65535.
    ///
    /// # Panics
    /// If the buffer is shorter than 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.payload_len <= Self::MAX_PAYLOAD_LEN);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_tos(self.tos);
        let total = u16::try_from(HEADER_LEN.saturating_add(self.payload_len)).unwrap_or(u16::MAX);
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 198.51.100.7 → 203.0.113.10, TCP, DF, TTL 64, 4 payload bytes, then 2 bytes of
    // Ethernet padding that lie beyond the total length.
    static PACKET_BYTES: [u8; 26] = [
        0x45, // version 4, IHL 5
        0xb9, // DSCP 46 (EF), ECN 01
        0x00, 0x18, // total length 24
        0x12, 0x34, // identification
        0x40, 0x00, // DF, offset 0
        0x40, // TTL 64
        0x06, // protocol TCP
        0xc1, 0xad, // header checksum
        198, 51, 100, 7, // source
        203, 0, 113, 10, // destination
        0xde, 0xad, 0xbe, 0xef, // payload
        0x00, 0x00, // Ethernet padding
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(198, 51, 100, 7),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            protocol: IpProtocol::TCP,
            payload_len: 4,
            ttl: 64,
            tos: 0xb9,
            ident: 0x1234,
            dont_frag: true,
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.tos(), 0xb9);
        assert_eq!(packet.dscp(), 46);
        assert_eq!(packet.ecn(), 1);
        assert_eq!(packet.total_len(), 24);
        assert_eq!(packet.ident(), 0x1234);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert!(!packet.has_options());
        assert!(packet.options().is_empty());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::TCP);
        assert_eq!(packet.checksum(), 0xc1ad);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(Repr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 26];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp(46);
        packet.set_ecn(1);
        packet.set_total_len(24);
        packet.set_ident(0x1234);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_ttl(64);
        packet.set_protocol(IpProtocol::TCP);
        packet.set_src_addr(Ipv4Addr::new(198, 51, 100, 7));
        packet.set_dst_addr(Ipv4Addr::new(203, 0, 113, 10));
        packet.fill_checksum();
        packet
            .payload_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        bytes[24..].fill(0);
        assert_eq!(bytes, PACKET_BYTES);

        let mut emitted = [0xa5u8; 26];
        repr().emit(&mut Packet::new_unchecked(&mut emitted[..]));
        assert_eq!(emitted[..20], PACKET_BYTES[..20]);
    }

    #[test]
    fn fragments_and_options() {
        let mut bytes = [0u8; 28];
        bytes[..20].copy_from_slice(&PACKET_BYTES[..20]);
        bytes[0] = 0x46; // IHL 6: 4 bytes of options
        bytes[2..4].copy_from_slice(&28u16.to_be_bytes());
        bytes[20..24].copy_from_slice(&[0x01, 0x01, 0x01, 0x00]); // NOP NOP NOP EOL
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_more_frags(true);
        packet.set_frag_offset(1480);
        packet.fill_checksum();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.has_options());
        assert_eq!(packet.options(), &[0x01, 0x01, 0x01, 0x00]);
        assert_eq!(packet.payload().len(), 4);
        assert!(packet.more_frags());
        assert!(packet.dont_frag());
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_fragment());
        assert!(packet.verify_checksum());

        let mut last = bytes;
        Packet::new_unchecked(&mut last[..]).set_more_frags(false);
        assert!(Packet::new_checked(&last[..]).unwrap().is_fragment());
        Packet::new_unchecked(&mut last[..]).set_frag_offset(0);
        assert!(!Packet::new_checked(&last[..]).unwrap().is_fragment());
    }

    #[test]
    fn rejects_bad_fields() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadVersion
        );
        bytes[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadIpv4Ihl
        );
        bytes[0] = 0x4f; // 60-byte header in a 26-byte buffer
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadIpv4Ihl
        );
        bytes = PACKET_BYTES;
        bytes[3] = 19;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadIpv4TotalLen
        );
        bytes[3] = 27;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadIpv4TotalLen
        );
        bytes = PACKET_BYTES;
        bytes[11] ^= 1;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Err(Error::BadChecksum));
    }

    #[test]
    fn test_truncation() {
        for len in 0..=PACKET_BYTES.len() {
            match Packet::new_checked(&PACKET_BYTES[..len]) {
                Ok(packet) => {
                    assert!(len >= 24);
                    assert_eq!(packet.payload().len(), 4);
                }
                Err(e) if len < 20 => assert_eq!(e, Error::Truncated),
                Err(e) => assert_eq!(e, Error::BadIpv4TotalLen),
            }
        }
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut bytes = PACKET_BYTES;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(packet.decrement_ttl(), 63);
        assert!(packet.verify_checksum());
        packet.set_ttl(0);
        packet.fill_checksum();
        assert_eq!(packet.decrement_ttl(), 0);
        assert!(packet.verify_checksum());
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
            payload_len in 0usize..=Repr::MAX_PAYLOAD_LEN, ttl in any::<u8>(), tos in any::<u8>(),
            ident in any::<u16>(), dont_frag in any::<bool>(),
        ) {
            let repr = Repr {
                src_addr: Ipv4Addr::from(src),
                dst_addr: Ipv4Addr::from(dst),
                protocol: IpProtocol(protocol),
                payload_len, ttl, tos, ident, dont_frag,
            };
            let mut bytes = vec![0u8; HEADER_LEN + payload_len];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(!packet.is_fragment());
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if bytes.len() > 3 && bytes[1] & 1 == 0 {
                // Plausible version and lengths, so the accessors run often.
                let len = u16::try_from(bytes.len()).unwrap();
                bytes[0] = 0x40 | (bytes[0] & 0x0f);
                let total = len.saturating_sub(u16::from(bytes[3] & 7));
                bytes[2..4].copy_from_slice(&total.to_be_bytes());
            }
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.header(), packet.options(), packet.payload(), packet.verify_checksum());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.frag_offset(), packet.is_fragment());
                prop_assert!(packet.payload().len() + usize::from(packet.header_len()) == usize::from(packet.total_len()));
                let _ = Repr::parse(&packet);
            }
        }
    }
}
