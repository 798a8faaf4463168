//! UDP headers (RFC 768).
//!
//! [`Packet::new_checked`] checks at least 8 bytes ([`Error::Truncated`]) and a length field of
//! at least 8 and within the buffer ([`Error::BadUdpLength`]). The datagram (and its checksum)
//! ends at the length field; bytes after it are ignored.
//!
//! Zero checksums: over IPv4 a zero checksum means "not computed" and
//! [`Packet::verify_checksum_v4`] accepts it. Over IPv6 it is invalid (RFC 8200 §8.1) and
//! [`Packet::verify_checksum_v6`] rejects it, except that RFC 6935/6936 allow zero-checksum UDP
//! for tunnels (GUE included) — callers that accept those check [`Packet::checksum`] for 0 first.
//! The fill functions write `0xffff` where the computed checksum is 0.

use super::checksum;
use super::ip::IpProtocol;
use super::{read_u16, write_u16, Error, Field, Result};
use std::net::{Ipv4Addr, Ipv6Addr};

mod field {
    use super::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view of a UDP datagram.
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

    /// Wraps a buffer after checking its length and the length field.
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::BadUdpLength`].
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
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN || field_len > len {
            return Err(Error::BadUdpLength);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    #[must_use]
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// The destination port.
    #[must_use]
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header plus payload.
    #[must_use]
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a header field, not a container length
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The checksum field (0 = none over IPv4).
    #[must_use]
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The datagram, header included, up to the length field.
    #[must_use]
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.get(..usize::from(self.len())).unwrap_or(data)
    }

    /// The payload, up to the length field.
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    #[inline]
    fn sum_with(&self, pseudo: u64) -> u64 {
        pseudo + checksum::sum(self.datagram())
    }

    /// Whether the checksum verifies with the IPv4 pseudo-header; a zero checksum ("none")
    /// verifies.
    #[must_use]
    #[inline]
    pub fn verify_checksum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::verify(self.sum_with(pseudo))
    }

    /// Whether the checksum verifies with the IPv6 pseudo-header; a zero checksum does not.
    #[must_use]
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::verify(self.sum_with(pseudo))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Computes the checksum with the IPv4 pseudo-header and writes it (0 is sent as 0xffff).
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &Ipv4Addr, dst: &Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, u32::from(self.len()));
        let check = checksum::finish(self.sum_with(pseudo));
        self.set_checksum(if check == 0 { 0xffff } else { check });
    }

    /// Computes the checksum with the IPv6 pseudo-header and writes it (0 is sent as 0xffff).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        let check = checksum::finish(self.sum_with(pseudo));
        self.set_checksum(if check == 0 { 0xffff } else { check });
    }

    /// The payload up to the length field, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
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

/// A UDP header in struct form (the outer UDP of GUE encapsulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port (GUE: derived from the flow hash, for backend RSS).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes; at most [`Repr::MAX_PAYLOAD_LEN`].
    pub payload_len: usize,
}

impl Repr {
    /// The largest payload a UDP length field can describe.
    pub const MAX_PAYLOAD_LEN: usize = 65535 - HEADER_LEN;

    /// Reads a checked datagram's header.
    #[must_use]
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        }
    }

    /// The header length this emits (8).
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a zero checksum; call `fill_checksum_*` once the payload is in
    /// place, or leave it zero where that is allowed (IPv4; IPv6 tunnels per RFC 6935).
    ///
    /// # Panics
    /// If the buffer is shorter than 8 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        debug_assert!(self.payload_len <= Self::MAX_PAYLOAD_LEN);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(
            u16::try_from(HEADER_LEN.saturating_add(self.payload_len)).unwrap_or(u16::MAX),
        );
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A DNS-sized datagram 198.51.100.7:40000 → 203.0.113.10:53 with 4 bytes of payload, then
    // 2 bytes beyond the UDP length (padding the view must ignore).
    static PACKET_BYTES: [u8; 14] = [
        0x9c, 0x40, // source port 40000
        0x00, 0x35, // destination port 53
        0x00, 0x0c, // length 12
        0x52, 0x1b, // checksum
        0xaa, 0x00, 0x00, 0xff, // payload
        0xee, 0xee, // trailing bytes
    ];

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 40000);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 12);
        assert_eq!(packet.checksum(), 0x521b);
        assert_eq!(packet.payload(), &[0xaa, 0x00, 0x00, 0xff]);
        assert!(packet.verify_checksum_v4(&SRC, &DST));
        assert!(!packet.verify_checksum_v4(&SRC, &Ipv4Addr::new(203, 0, 113, 11)));
        assert_eq!(
            Repr::parse(&packet),
            Repr {
                src_port: 40000,
                dst_port: 53,
                payload_len: 4
            }
        );
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xeeu8; 14];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        Repr {
            src_port: 40000,
            dst_port: 53,
            payload_len: 4,
        }
        .emit(&mut packet);
        packet
            .payload_mut()
            .copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        packet.fill_checksum_v4(&SRC, &DST);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn zero_checksums() {
        let mut bytes = PACKET_BYTES;
        bytes[6] = 0;
        bytes[7] = 0;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum_v4(&SRC, &DST));
        let (s6, d6) = (Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        assert!(!packet.verify_checksum_v6(&s6, &d6));

        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum_v6(&s6, &d6);
        assert!(packet.verify_checksum_v6(&s6, &d6));

        // A datagram whose checksum computes to 0 is sent as 0xffff (and still verifies).
        // Payload chosen so header + pseudo-header + payload fold to 0xffff.
        let mut bytes = [0u8; 10];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        Repr {
            src_port: 0,
            dst_port: 0,
            payload_len: 2,
        }
        .emit(&mut packet);
        let (z, z2) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        // pseudo (17 + 10) + length 10 = 37; payload 0xffff - 37 makes the sum 0xffff.
        packet
            .payload_mut()
            .copy_from_slice(&(0xffffu16 - 37).to_be_bytes());
        packet.fill_checksum_v4(&z, &z2);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum_v4(&z, &z2));
    }

    #[test]
    fn rejects_bad_length() {
        let mut bytes = PACKET_BYTES;
        bytes[5] = 7;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadUdpLength
        );
        bytes[5] = 15;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadUdpLength
        );
    }

    #[test]
    fn test_truncation() {
        for len in 0..=PACKET_BYTES.len() {
            match Packet::new_checked(&PACKET_BYTES[..len]) {
                Ok(packet) => {
                    assert!(len >= 12);
                    assert_eq!(packet.payload().len(), 4);
                }
                Err(e) if len < 8 => assert_eq!(e, Error::Truncated),
                Err(e) => assert_eq!(e, Error::BadUdpLength),
            }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(src_port in any::<u16>(), dst_port in any::<u16>(),
                           payload in proptest::collection::vec(any::<u8>(), 0..100),
                           src in any::<[u8; 16]>(), dst in any::<[u8; 16]>()) {
            let repr = Repr { src_port, dst_port, payload_len: payload.len() };
            let mut bytes = vec![0u8; HEADER_LEN + payload.len()];
            let mut packet = Packet::new_unchecked(&mut bytes[..]);
            repr.emit(&mut packet);
            packet.payload_mut().copy_from_slice(&payload);
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            packet.fill_checksum_v6(&src, &dst);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert!(packet.verify_checksum_v6(&src, &dst));
            prop_assert_eq!(Repr::parse(&packet), repr);
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.payload(), packet.datagram(), Repr::parse(&packet));
                let _ = packet.verify_checksum_v4(&Ipv4Addr::LOCALHOST, &Ipv4Addr::LOCALHOST);
            }
        }
    }
}
