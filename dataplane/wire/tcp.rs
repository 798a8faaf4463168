//! TCP headers (RFC 9293).
//!
//! [`Packet::new_checked`] takes the whole segment (exactly the L3 payload, since the checksum
//! covers all of it) and checks at least 20 bytes ([`Error::Truncated`]) and a data offset of at
//! least 5 words that fits in the segment ([`Error::BadTcpDataOffset`]). Options are not parsed.
//!
//! # Flag policy
//!
//! [`Flags::is_valid`] (and [`Packet::flags_are_valid`]) accept only the combinations a real TCP
//! stack sends, the same table as Linux conntrack (`tcp_valid_flags`). PSH, ECE and CWR are
//! ignored; of FIN, SYN, RST, ACK and URG the valid sets are:
//! `SYN`, `SYN|URG`, `SYN|ACK`, `RST`, `RST|ACK`, `FIN|ACK`, `FIN|ACK|URG`, `ACK`, `ACK|URG`.
//!
//! Everything else is dropped, notably: no flags (null scan), `SYN|FIN`, `SYN|RST`, `FIN|RST`,
//! XMAS (`FIN|PSH|URG`), and **FIN without ACK**. RFC 9293 lets every segment after the initial
//! SYN carry ACK, and real stacks always do, so a bare FIN only comes from scanners
//! (nmap `-sF`); a balancer that accepted it would let probes reach the backends.

use super::checksum;
use super::ip::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Field, Result};
use core::ops::{BitOr, BitOrAssign};
use std::net::{Ipv4Addr, Ipv6Addr};

mod field {
    use super::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// The eight TCP flag bits of byte 13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from the sender.
    pub const FIN: Self = Self(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Self = Self(0x02);
    /// Reset the connection.
    pub const RST: Self = Self(0x04);
    /// Push.
    pub const PSH: Self = Self(0x08);
    /// The acknowledgment field is significant.
    pub const ACK: Self = Self(0x10);
    /// The urgent pointer is significant.
    pub const URG: Self = Self(0x20);
    /// ECN echo.
    pub const ECE: Self = Self(0x40);
    /// Congestion window reduced.
    pub const CWR: Self = Self(0x80);

    /// Whether every bit of `other` is set.
    #[must_use]
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether this combination is one a real TCP stack sends (see the module doc).
    #[must_use]
    #[inline]
    pub const fn is_valid(self) -> bool {
        VALID_FLAG_SETS & (1 << flag_index(self.0)) != 0
    }
}

impl BitOr for Flags {
    type Output = Self;

    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    #[inline]
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Packs FIN, SYN, RST (bits 0–2) and ACK, URG (bits 4–5) into a 5-bit index, ignoring PSH,
/// ECE and CWR.
const fn flag_index(flags: u8) -> u32 {
    ((flags & 0x07) | ((flags >> 1) & 0x18)) as u32
}

/// One bit per valid 5-bit combination of FIN, SYN, RST, ACK, URG (Linux `tcp_valid_flags`).
const VALID_FLAG_SETS: u32 = {
    const FIN: u8 = Flags::FIN.0;
    const SYN: u8 = Flags::SYN.0;
    const RST: u8 = Flags::RST.0;
    const ACK: u8 = Flags::ACK.0;
    const URG: u8 = Flags::URG.0;
    let valid = [
        SYN,
        SYN | URG,
        SYN | ACK,
        RST,
        RST | ACK,
        FIN | ACK,
        FIN | ACK | URG,
        ACK,
        ACK | URG,
    ];
    let mut mask = 0u32;
    let mut i = 0;
    while i < valid.len() {
        mask |= 1 << flag_index(valid[i]);
        i += 1;
    }
    mask
};

/// A view of a TCP segment.
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

    /// Wraps a segment after checking its length and data offset.
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::BadTcpDataOffset`].
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
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN || header_len > len {
            return Err(Error::BadTcpDataOffset);
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

    /// The sequence number.
    #[must_use]
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// The acknowledgment number.
    #[must_use]
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// The header length in bytes (data offset × 4).
    #[must_use]
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The eight flag bits.
    #[must_use]
    #[inline]
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Whether the flags are a combination a real stack sends (see the module doc).
    #[must_use]
    #[inline]
    pub fn flags_are_valid(&self) -> bool {
        self.flags().is_valid()
    }

    /// FIN.
    #[must_use]
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(Flags::FIN)
    }

    /// SYN.
    #[must_use]
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(Flags::SYN)
    }

    /// RST.
    #[must_use]
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(Flags::RST)
    }

    /// PSH.
    #[must_use]
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags().contains(Flags::PSH)
    }

    /// ACK.
    #[must_use]
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(Flags::ACK)
    }

    /// URG.
    #[must_use]
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags().contains(Flags::URG)
    }

    /// ECE.
    #[must_use]
    #[inline]
    pub fn ece(&self) -> bool {
        self.flags().contains(Flags::ECE)
    }

    /// CWR.
    #[must_use]
    #[inline]
    pub fn cwr(&self) -> bool {
        self.flags().contains(Flags::CWR)
    }

    /// SYN without ACK: the first packet of a connection, the one that goes to the scheduler.
    #[must_use]
    #[inline]
    pub fn is_syn_only(&self) -> bool {
        self.flags().0 & (Flags::SYN.0 | Flags::ACK.0 | Flags::RST.0 | Flags::FIN.0) == Flags::SYN.0
    }

    /// The window size.
    #[must_use]
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// The checksum field.
    #[must_use]
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The urgent pointer.
    #[must_use]
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The options bytes (empty without options).
    #[must_use]
    #[inline]
    pub fn options(&self) -> &[u8] {
        let end = usize::from(self.header_len());
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The payload after the header.
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let start = usize::from(self.header_len());
        self.buffer.as_ref().get(start..).unwrap_or(&[])
    }

    #[inline]
    fn sum_with(&self, pseudo: u64) -> u64 {
        pseudo + checksum::sum(self.buffer.as_ref())
    }

    #[inline]
    fn len_u32(&self) -> u32 {
        u32::try_from(self.buffer.as_ref().len()).unwrap_or(u32::MAX)
    }

    /// Whether the checksum verifies with the IPv4 pseudo-header.
    #[must_use]
    #[inline]
    pub fn verify_checksum_v4(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, self.len_u32());
        checksum::verify(self.sum_with(pseudo))
    }

    /// Whether the checksum verifies with the IPv6 pseudo-header.
    #[must_use]
    #[inline]
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::TCP, self.len_u32());
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ_NUM], value);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_NUM], value);
    }

    /// Sets the header length in bytes (rounded down to 4-byte words; keeps the reserved bits).
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0f) | ((value / 4) << 4);
    }

    /// Sets all eight flag bits.
    #[inline]
    pub fn set_flags(&mut self, value: Flags) {
        self.buffer.as_mut()[field::FLAGS] = value.0;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::WIN_SIZE], value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    /// Computes the checksum over the whole segment with the IPv4 pseudo-header and writes it.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &Ipv4Addr, dst: &Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, self.len_u32());
        let check = checksum::finish(self.sum_with(pseudo));
        self.set_checksum(check);
    }

    /// Computes the checksum over the whole segment with the IPv6 pseudo-header and writes it.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::TCP, self.len_u32());
        let check = checksum::finish(self.sum_with(pseudo));
        self.set_checksum(check);
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A SYN from 198.51.100.7:51234 to 203.0.113.10:443 with MSS 1460, NOP, NOP, SACK-permitted,
    // and 4 bytes of data (TCP fast open style) so the payload accessor has something to return.
    static PACKET_BYTES: [u8; 32] = [
        0xc8, 0x22, // source port 51234
        0x01, 0xbb, // destination port 443
        0x01, 0x23, 0x45, 0x67, // sequence number
        0x00, 0x00, 0x00, 0x00, // acknowledgment number
        0x70, // data offset 7 (28 bytes)
        0x02, // SYN
        0xfa, 0xf0, // window 64240
        0x99, 0xe3, // checksum
        0x00, 0x00, // urgent pointer
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x01, 0x01, 0x04, 0x02, // NOP, NOP, SACK permitted
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const DST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 51234);
        assert_eq!(packet.dst_port(), 443);
        assert_eq!(packet.seq_number(), 0x0123_4567);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 28);
        assert_eq!(packet.flags(), Flags::SYN);
        assert!(packet.syn() && !packet.ack() && !packet.fin() && !packet.rst());
        assert!(!packet.psh() && !packet.urg() && !packet.ece() && !packet.cwr());
        assert!(packet.is_syn_only());
        assert!(packet.flags_are_valid());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.checksum(), 0x99e3);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options(), &PACKET_BYTES[20..28]);
        assert_eq!(packet.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(packet.verify_checksum_v4(&SRC, &DST));
        assert!(!packet.verify_checksum_v4(&SRC, &Ipv4Addr::new(203, 0, 113, 11)));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 32];
        bytes[20..28].copy_from_slice(&PACKET_BYTES[20..28]); // options, written by the caller
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(51234);
        packet.set_dst_port(443);
        packet.set_seq_number(0x0123_4567);
        packet.set_ack_number(0);
        packet.set_header_len(28);
        packet.set_flags(Flags::SYN);
        packet.set_window_len(64240);
        packet.set_urgent_at(0);
        packet
            .payload_mut()
            .copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        packet.fill_checksum_v4(&SRC, &DST);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn ipv6_checksum() {
        let src: Ipv6Addr = "2001:db8:1::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:100::10".parse().unwrap();
        let mut bytes = PACKET_BYTES;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum_v6(&src, &dst);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum_v6(&src, &dst));
        assert!(!packet.verify_checksum_v6(&dst, &dst));
        assert!(!packet.verify_checksum_v4(&SRC, &DST));
    }

    #[test]
    fn flag_policy() {
        use Flags as F;
        let valid = [
            F::SYN,
            F::SYN | F::ECE | F::CWR, // ECN-setup SYN
            F::SYN | F::ACK,
            F::SYN | F::ACK | F::ECE,
            F::ACK,
            F::ACK | F::PSH,
            F::ACK | F::URG,
            F::FIN | F::ACK,
            F::FIN | F::ACK | F::PSH,
            F::RST,
            F::RST | F::ACK,
        ];
        for flags in valid {
            assert!(flags.is_valid(), "{flags:?} should be valid");
        }
        let invalid = [
            F(0),                     // null scan
            F::PSH,                   // null once PSH is ignored
            F::FIN,                   // FIN without ACK (nmap -sF)
            F::SYN | F::FIN,          // SYN+FIN
            F::SYN | F::FIN | F::ACK, //
            F::SYN | F::RST,          // SYN+RST
            F::FIN | F::RST | F::ACK, // FIN+RST
            F::FIN | F::PSH | F::URG, // XMAS
            F(0xff),                  // everything
            F::URG,                   // URG alone
            F::SYN | F::ACK | F::URG, // not in the table
        ];
        for flags in invalid {
            assert!(!flags.is_valid(), "{flags:?} should be invalid");
        }
        // Exactly nine of the 32 FIN/SYN/RST/ACK/URG combinations are valid.
        assert_eq!(VALID_FLAG_SETS.count_ones(), 9);
    }

    #[test]
    fn rejects_bad_data_offset() {
        let mut bytes = PACKET_BYTES;
        bytes[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadTcpDataOffset
        );
        bytes[12] = 0x90; // 36 bytes > 32
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            Error::BadTcpDataOffset
        );
    }

    #[test]
    fn test_truncation() {
        for len in 0..=PACKET_BYTES.len() {
            match Packet::new_checked(&PACKET_BYTES[..len]) {
                Ok(packet) => {
                    assert!(len >= 28);
                    assert_eq!(packet.payload().len(), len - 28);
                }
                Err(e) if len < 20 => assert_eq!(e, Error::Truncated),
                Err(e) => assert_eq!(e, Error::BadTcpDataOffset),
            }
        }
    }

    proptest! {
        #[test]
        fn checksum_round_trip(mut bytes in proptest::collection::vec(any::<u8>(), 20..200),
                               src in any::<[u8; 16]>(), dst in any::<[u8; 16]>()) {
            bytes[12] = 0x50;
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut packet = Packet::new_checked(&mut bytes[..]).unwrap();
            packet.fill_checksum_v6(&src, &dst);
            prop_assert!(packet.verify_checksum_v6(&src, &dst));
            let (s4, d4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
            packet.fill_checksum_v4(&s4, &d4);
            prop_assert!(packet.verify_checksum_v4(&s4, &d4));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.options(), packet.payload(), packet.flags_are_valid());
                let _ = (packet.seq_number(), packet.ack_number(), packet.urgent_at());
                prop_assert!(usize::from(packet.header_len()) + packet.payload().len() == bytes.len());
            }
        }
    }
}
