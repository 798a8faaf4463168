//! ICMP for IPv4 (RFC 792, RFC 1191): echo, and the error messages a balancer must route.
//!
//! [`Packet::new_checked`] needs the 8-byte header ([`Error::Truncated`]); hand it exactly the
//! IPv4 payload, since the checksum covers all of it. Error messages (destination unreachable,
//! time exceeded, ...) quote the original datagram: [`Packet::embedded`] returns an
//! [`EmbeddedIpv4`] view of its IPv4 header and first 8 bytes of L4, which is where the ports of
//! the flow that triggered the error are — the balancer steers a frag-needed for a VIP to the
//! backend that owns that flow.
//!
//! [`Repr`] covers what the appliance answers or sends itself: echo request/reply, destination
//! unreachable (including frag-needed with a next-hop MTU) and time exceeded.
//! [`Repr::parse`] verifies the checksum ([`Error::BadChecksum`]).

use super::checksum;
use super::ip::IpProtocol;
use super::{read_ipv4, read_u16, write_u16, Error, Field, Rest, Result};
use std::net::Ipv4Addr;

mod field {
    use super::{Field, Rest};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const UNUSED: Field = 4..6;
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const DATA: Rest = 8..;
}

/// Length of the ICMP header (type, code, checksum and the 4-byte rest-of-header).
pub const HEADER_LEN: usize = field::DATA.start;
/// The most of the original datagram an error message quotes: the whole error fits in 576
/// bytes (RFC 1812 §4.3.2.3).
pub const MAX_QUOTE_LEN: usize = 576 - 20 - HEADER_LEN;

/// An ICMP message type. Every value is representable; the constants work in `match` patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Message(pub u8);

impl Message {
    /// Echo reply.
    pub const ECHO_REPLY: Self = Self(0);
    /// Destination unreachable.
    pub const DST_UNREACHABLE: Self = Self(3);
    /// Source quench (deprecated).
    pub const SOURCE_QUENCH: Self = Self(4);
    /// Redirect.
    pub const REDIRECT: Self = Self(5);
    /// Echo request.
    pub const ECHO_REQUEST: Self = Self(8);
    /// Time exceeded.
    pub const TIME_EXCEEDED: Self = Self(11);
    /// Parameter problem.
    pub const PARAM_PROBLEM: Self = Self(12);

    /// Whether messages of this type quote an original datagram.
    #[must_use]
    #[inline]
    pub const fn is_error(self) -> bool {
        matches!(self.0, 3 | 4 | 5 | 11 | 12)
    }
}

/// Destination-unreachable codes.
pub mod unreachable {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set; carries the next-hop MTU (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time-exceeded codes.
pub mod time_exceeded {
    /// TTL exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// A view of an ICMPv4 message.
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

    /// Wraps a buffer after checking that it holds the 8-byte header.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks everything the accessors rely on.
    ///
    /// # Errors
    /// [`Error::Truncated`] under 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    #[must_use]
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref()[field::TYPE])
    }

    /// The message code.
    #[must_use]
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    #[must_use]
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The echo identifier (echo request/reply).
    #[must_use]
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// The echo sequence number (echo request/reply).
    #[must_use]
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQNO])
    }

    /// The next-hop MTU of a frag-needed message (0 from pre-RFC 1191 routers).
    #[must_use]
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// Whether this is an error message that quotes an original datagram.
    #[must_use]
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type().is_error()
    }

    /// Whether this is destination unreachable / fragmentation needed.
    #[must_use]
    #[inline]
    pub fn is_frag_needed(&self) -> bool {
        self.msg_type() == Message::DST_UNREACHABLE && self.msg_code() == unreachable::FRAG_NEEDED
    }

    /// Everything after the 8-byte header: echo data, or the quoted datagram.
    #[must_use]
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(field::DATA).unwrap_or(&[])
    }

    /// The quoted original datagram of an error message.
    ///
    /// # Errors
    /// As [`EmbeddedIpv4::new_checked`] (the caller checks [`Packet::is_error`] first).
    #[inline]
    pub fn embedded(&self) -> Result<EmbeddedIpv4<'_>> {
        EmbeddedIpv4::new_checked(self.data())
    }

    /// Whether the checksum over the whole message verifies.
    #[must_use]
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(checksum::sum(self.buffer.as_ref()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.0;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_IDENT], value);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_SEQNO], value);
    }

    /// Sets the next-hop MTU and zeroes the unused half-word before it.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::UNUSED], 0);
        write_u16(&mut self.buffer.as_mut()[field::NEXT_HOP_MTU], value);
    }

    /// Everything after the header, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::DATA).unwrap_or(&mut [])
    }

    /// Computes the checksum over the whole buffer and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let check = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(check);
    }

    /// Turns an echo request into the matching echo reply in place: type 0, code 0, checksum
    /// patched incrementally (identifier, sequence number and data stay as they are).
    #[inline]
    pub fn convert_to_echo_reply(&mut self) {
        let old = u16::from_be_bytes([self.msg_type().0, self.msg_code()]);
        let new = u16::from_be_bytes([Message::ECHO_REPLY.0, 0]);
        let check = checksum::update16(self.checksum(), old, new);
        self.set_msg_type(Message::ECHO_REPLY);
        self.set_msg_code(0);
        self.set_checksum(check);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The original datagram quoted in an ICMPv4 error: its IPv4 header and first 8 bytes of L4.
///
/// Quoted datagrams are truncated by design, so the IPv4 total length is not checked against
/// the quote; the IHL is, and 8 bytes of L4 must follow the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedIpv4<'a> {
    data: &'a [u8],
    header_len: usize,
}

impl<'a> EmbeddedIpv4<'a> {
    /// Number of L4 bytes an ICMP error must quote.
    pub const L4_LEN: usize = 8;

    /// Checks a quoted datagram.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the header or the 8 bytes of L4 are missing,
    /// [`Error::BadVersion`] if it is not IPv4, [`Error::BadIpv4Ihl`] for an IHL below 5.
    pub fn new_checked(data: &'a [u8]) -> Result<Self> {
        let first = data.get(..20).ok_or(Error::Truncated)?[0];
        if first >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < 20 {
            return Err(Error::BadIpv4Ihl);
        }
        if header_len + Self::L4_LEN > data.len() {
            return Err(Error::Truncated);
        }
        Ok(Self { data, header_len })
    }

    /// The quoted IPv4 header, options included.
    #[must_use]
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        self.data.get(..self.header_len).unwrap_or(&[])
    }

    /// The first 8 bytes of the quoted L4 header.
    #[must_use]
    #[inline]
    pub fn l4_header(&self) -> &'a [u8] {
        self.data
            .get(self.header_len..self.header_len + Self::L4_LEN)
            .unwrap_or(&[])
    }

    /// Everything quoted after the IPv4 header.
    #[must_use]
    #[inline]
    pub fn l4_data(&self) -> &'a [u8] {
        self.data.get(self.header_len..).unwrap_or(&[])
    }

    /// The quoted source address (for a packet we sent: a backend or VIP; for a packet a
    /// client sent through us toward a backend: the client).
    #[must_use]
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.header()[12..16])
    }

    /// The quoted destination address.
    #[must_use]
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.header()[16..20])
    }

    /// The quoted protocol.
    #[must_use]
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.header()[9])
    }

    /// The quoted total length (of the original, not of the quote).
    #[must_use]
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(&self.header()[2..4])
    }

    /// Whether the quoted datagram was a non-first fragment, so its "L4 bytes" are not a header.
    #[must_use]
    #[inline]
    pub fn is_non_first_fragment(&self) -> bool {
        read_u16(&self.header()[6..8]) & 0x1fff != 0
    }

    /// The quoted source port (first 2 L4 bytes; meaningful for TCP and UDP).
    #[must_use]
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(&self.l4_header()[0..2])
    }

    /// The quoted destination port (L4 bytes 2–3; meaningful for TCP and UDP).
    #[must_use]
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.l4_header()[2..4])
    }
}

/// An ICMPv4 message in struct form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Destination unreachable; `next_hop_mtu` is used with [`unreachable::FRAG_NEEDED`] and 0
    /// otherwise.
    DstUnreachable {
        /// The code (see [`mod@unreachable`]).
        code: u8,
        /// Next-hop MTU for frag-needed.
        next_hop_mtu: u16,
        /// The quoted original datagram.
        quote: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// The code (see [`time_exceeded`]).
        code: u8,
        /// The quoted original datagram.
        quote: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Reads a checked message, verifying its checksum.
    ///
    /// # Errors
    /// [`Error::BadChecksum`]; [`Error::UnsupportedIcmp`] for other types, or echo with a
    /// non-zero code.
    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<Self> {
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        let data = packet.buffer.get(field::DATA).unwrap_or(&[]);
        let code = packet.msg_code();
        match (packet.msg_type(), code) {
            (Message::ECHO_REQUEST, 0) => Ok(Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Message::ECHO_REPLY, 0) => Ok(Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Message::DST_UNREACHABLE, _) => Ok(Self::DstUnreachable {
                code,
                next_hop_mtu: if code == unreachable::FRAG_NEEDED {
                    packet.next_hop_mtu()
                } else {
                    0
                },
                quote: data,
            }),
            (Message::TIME_EXCEEDED, _) => Ok(Self::TimeExceeded { code, quote: data }),
            _ => Err(Error::UnsupportedIcmp),
        }
    }

    /// The reply to an echo request (same identifier, sequence number and data).
    #[must_use]
    pub fn echo_reply(&self) -> Option<Self> {
        match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            } => Some(Self::EchoReply {
                ident,
                seq_no,
                data,
            }),
            _ => None,
        }
    }

    /// A frag-needed message for `original` (the offending IPv4 datagram, header first),
    /// quoting at most [`MAX_QUOTE_LEN`] bytes of it.
    #[must_use]
    pub fn frag_needed(next_hop_mtu: u16, original: &'a [u8]) -> Self {
        Self::DstUnreachable {
            code: unreachable::FRAG_NEEDED,
            next_hop_mtu,
            quote: original.get(..MAX_QUOTE_LEN).unwrap_or(original),
        }
    }

    /// The message length this emits: header plus data or quote.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Self::DstUnreachable { quote, .. } | Self::TimeExceeded { quote, .. } => {
                HEADER_LEN + quote.len()
            }
        }
    }

    /// Writes the message and its checksum. The checksum covers the whole buffer, so size it
    /// with [`Repr::buffer_len`].
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let payload = match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Self::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                let ty = if matches!(self, Self::EchoRequest { .. }) {
                    Message::ECHO_REQUEST
                } else {
                    Message::ECHO_REPLY
                };
                packet.set_msg_type(ty);
                packet.set_msg_code(0);
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                data
            }
            Self::DstUnreachable {
                code,
                next_hop_mtu,
                quote,
            } => {
                packet.set_msg_type(Message::DST_UNREACHABLE);
                packet.set_msg_code(code);
                packet.set_next_hop_mtu(next_hop_mtu);
                quote
            }
            Self::TimeExceeded { code, quote } => {
                packet.set_msg_type(Message::TIME_EXCEEDED);
                packet.set_msg_code(code);
                packet.set_next_hop_mtu(0);
                quote
            }
        };
        packet.data_mut()[..payload.len()].copy_from_slice(payload);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // An echo request (ping -p deadbeef), identifier 0x1234, sequence 1, 8 bytes of data.
    static ECHO_BYTES: [u8; 16] = [
        0x08, // type echo request
        0x00, // code
        0xaa, 0x8f, // checksum
        0x12, 0x34, // identifier
        0x00, 0x01, // sequence number
        0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, // data
    ];

    // A frag-needed from a router with next-hop MTU 1400, quoting a TCP segment that a client
    // (198.51.100.7:51234) sent to a VIP (203.0.113.10:443).
    static PACKET_BYTES: [u8; 36] = [
        0x03, // type destination unreachable
        0x04, // code fragmentation needed
        0xb5, 0xf2, // checksum
        0x00, 0x00, // unused
        0x05, 0x78, // next-hop MTU 1400
        // quoted IPv4 header
        0x45, 0x00, 0x05, 0xdc, // version/IHL, ToS, total length 1500
        0x00, 0x00, 0x40, 0x00, // ident, DF
        0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (not checked in quotes)
        198, 51, 100, 7, // source
        203, 0, 113, 10, // destination
        // first 8 bytes of TCP
        0xc8, 0x22, 0x01, 0xbb, // ports 51234 → 443
        0x01, 0x23, 0x45, 0x67, // sequence number
    ];

    fn quote() -> &'static [u8] {
        &PACKET_BYTES[8..]
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Message::DST_UNREACHABLE);
        assert_eq!(packet.msg_code(), unreachable::FRAG_NEEDED);
        assert!(packet.is_error() && packet.is_frag_needed());
        assert_eq!(packet.checksum(), 0xb5f2);
        assert!(packet.verify_checksum());
        assert_eq!(packet.next_hop_mtu(), 1400);
        let inner = packet.embedded().unwrap();
        assert_eq!(inner.src_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(inner.dst_addr(), Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(inner.protocol(), IpProtocol::TCP);
        assert_eq!(inner.total_len(), 1500);
        assert!(!inner.is_non_first_fragment());
        assert_eq!((inner.src_port(), inner.dst_port()), (51234, 443));
        assert_eq!(inner.header().len(), 20);
        assert_eq!(inner.l4_header(), &PACKET_BYTES[28..36]);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&PACKET_BYTES[..]).unwrap()),
            Ok(Repr::DstUnreachable {
                code: 4,
                next_hop_mtu: 1400,
                quote: quote()
            })
        );

        let echo = Packet::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!(echo.msg_type(), Message::ECHO_REQUEST);
        assert_eq!((echo.echo_ident(), echo.echo_seq_no()), (0x1234, 1));
        assert!(!echo.is_error());
        assert_eq!(
            Repr::parse(&echo),
            Ok(Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: &ECHO_BYTES[8..]
            })
        );
    }

    #[test]
    fn test_construct() {
        let repr = Repr::frag_needed(1400, quote());
        let mut bytes = [0xa5u8; 36];
        assert_eq!(repr.buffer_len(), 36);
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);

        let repr = Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: &ECHO_BYTES[8..],
        };
        let mut bytes = [0xa5u8; 16];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, ECHO_BYTES);
    }

    #[test]
    fn echo_reply() {
        let request = Repr::parse(&Packet::new_checked(&ECHO_BYTES[..]).unwrap()).unwrap();
        let reply = request.echo_reply().unwrap();
        let mut emitted = [0u8; 16];
        reply.emit(&mut Packet::new_unchecked(&mut emitted[..]));

        let mut in_place = ECHO_BYTES;
        Packet::new_unchecked(&mut in_place[..]).convert_to_echo_reply();
        assert_eq!(in_place, emitted);
        let packet = Packet::new_checked(&in_place[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Ok(reply));
        assert_eq!(reply.echo_reply(), None);
    }

    #[test]
    fn frag_needed_quote_is_bounded() {
        let big = [0x45u8; 1500];
        match Repr::frag_needed(1400, &big) {
            Repr::DstUnreachable { quote, .. } => assert_eq!(quote.len(), MAX_QUOTE_LEN),
            other => panic!("{other:?}"),
        }
        assert_eq!(Repr::frag_needed(1400, &big).buffer_len() + 20, 576);
    }

    #[test]
    fn rejects() {
        let mut bytes = PACKET_BYTES;
        bytes[3] ^= 1;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::BadChecksum));

        let mut bytes = ECHO_BYTES;
        bytes[0] = 13; // timestamp
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum();
        assert_eq!(
            Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()),
            Err(Error::UnsupportedIcmp)
        );

        let mut quote = PACKET_BYTES;
        quote[8] = 0x65;
        let packet = Packet::new_checked(&quote[..]).unwrap();
        assert_eq!(packet.embedded(), Err(Error::BadVersion));
        quote[8] = 0x44;
        let packet = Packet::new_checked(&quote[..]).unwrap();
        assert_eq!(packet.embedded(), Err(Error::BadIpv4Ihl));
        quote[8] = 0x46; // options claimed but only 8 bytes follow the 20-byte header
        let packet = Packet::new_checked(&quote[..]).unwrap();
        assert_eq!(packet.embedded(), Err(Error::Truncated));
    }

    #[test]
    fn test_truncation() {
        for len in 0..=PACKET_BYTES.len() {
            match Packet::new_checked(&PACKET_BYTES[..len]) {
                Ok(packet) => match packet.embedded() {
                    Ok(inner) => {
                        assert_eq!(len, 36);
                        assert_eq!(inner.dst_port(), 443);
                    }
                    Err(e) => assert_eq!(e, Error::Truncated),
                },
                Err(e) => {
                    assert!(len < 8);
                    assert_eq!(e, Error::Truncated);
                }
            }
            if let Ok(packet) = Packet::new_checked(&PACKET_BYTES[..len]) {
                let _ = Repr::parse(&packet);
            }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(kind in 0u8..4, a in any::<u16>(), b in any::<u16>(), code in any::<u8>(),
                           data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let repr = match kind {
                0 => Repr::EchoRequest { ident: a, seq_no: b, data: &data },
                1 => Repr::EchoReply { ident: a, seq_no: b, data: &data },
                2 => Repr::DstUnreachable {
                    code,
                    next_hop_mtu: if code == unreachable::FRAG_NEEDED { a } else { 0 },
                    quote: &data,
                },
                _ => Repr::TimeExceeded { code, quote: &data },
            };
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.data(), packet.verify_checksum(), Repr::parse(&packet));
                if let Ok(inner) = packet.embedded() {
                    let _ = (inner.src_addr(), inner.dst_addr(), inner.protocol(), inner.total_len());
                    let _ = (inner.src_port(), inner.dst_port(), inner.l4_data(), inner.is_non_first_fragment());
                }
            }
            // Quotes reached directly, as the pipeline may.
            if let Ok(inner) = EmbeddedIpv4::new_checked(&bytes) {
                prop_assert_eq!(inner.l4_header().len(), 8);
            }
        }
    }
}
