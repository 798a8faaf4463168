//! Ethernet II frames, with up to two VLAN tags (802.1Q, and 802.1ad QinQ).
//!
//! [`Frame`] is the 14-byte Ethernet header view; [`Frame::parse_l2`] walks the VLAN tags after
//! it and returns an [`L2Header`]: the tags, the inner ethertype and the offset of the L3 header.
//! Accepted stacks: no tag; one tag of type 0x8100 or 0x88a8; 0x8100 or 0x88a8 outside 0x8100.
//! A third tag is [`Error::TooManyVlanTags`]; an S-tag (0x88a8) inside another tag is
//! [`Error::BadVlanTag`]. The pre-standard QinQ type 0x9100 is not a VLAN tag here: it comes back
//! as the ethertype, which the pipeline drops as unknown.

use super::{read_u16, write_u16, Error, Field, Rest, Result};
use core::fmt;

/// A 48-bit Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);

    /// The address in `bytes`, or `None` unless `bytes` has exactly six bytes.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }

    /// The six octets.
    #[must_use]
    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// ff:ff:ff:ff:ff:ff.
    #[must_use]
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The group bit is set (broadcast is multicast too).
    #[must_use]
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast.
    #[must_use]
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The locally-administered bit is set.
    #[must_use]
    #[inline]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// An ethertype. Every value is representable; the constants work in `match` patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: Self = Self(0x0800);
    /// ARP.
    pub const ARP: Self = Self(0x0806);
    /// IPv6.
    pub const IPV6: Self = Self(0x86dd);
    /// 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: Self = Self(0x8100);
    /// 802.1ad service VLAN tag (S-tag, the outer tag of QinQ).
    pub const QINQ: Self = Self(0x88a8);
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4 => f.write_str("ipv4"),
            Self::ARP => f.write_str("arp"),
            Self::IPV6 => f.write_str("ipv6"),
            Self::VLAN => f.write_str("802.1q"),
            Self::QINQ => f.write_str("802.1ad"),
            Self(n) => write!(f, "0x{n:04x}"),
        }
    }
}

mod field {
    use super::{Field, Rest};

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;

    // Within a VLAN tag, counted from the tag's TPID.
    pub const TAG_TCI: Field = 2..4;
    pub const TAG_NEXT_TYPE: Field = 4..6;
}

/// Length of the Ethernet II header without tags.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// The most VLAN tags [`Frame::parse_l2`] accepts.
pub const MAX_VLAN_TAGS: usize = 2;

/// One VLAN tag: its tag protocol identifier and tag control information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// 0x8100 (C-tag) or 0x88a8 (S-tag).
    pub tpid: EtherType,
    /// Priority (3 bits), drop-eligible (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN id.
    #[must_use]
    #[inline]
    pub const fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }

    /// The 3-bit priority code point.
    #[must_use]
    #[inline]
    pub const fn pcp(&self) -> u8 {
        self.tci.to_be_bytes()[0] >> 5
    }

    /// The drop-eligible indicator.
    #[must_use]
    #[inline]
    pub const fn dei(&self) -> bool {
        self.tci & 0x1000 != 0
    }
}

/// What lies between the MAC addresses and the L3 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L2Header {
    tags: [VlanTag; MAX_VLAN_TAGS],
    tag_count: u8,
    /// The ethertype after the last tag: the L3 protocol.
    pub ethertype: EtherType,
    /// Offset of the L3 header from the start of the frame (14, 18 or 22).
    pub l3_offset: usize,
}

impl L2Header {
    /// The VLAN tags, outermost first (empty, one or two).
    #[must_use]
    #[inline]
    pub fn vlan_tags(&self) -> &[VlanTag] {
        self.tags.get(..usize::from(self.tag_count)).unwrap_or(&[])
    }

    /// The outermost tag, if any.
    #[must_use]
    #[inline]
    pub fn outer_vlan(&self) -> Option<VlanTag> {
        self.vlan_tags().first().copied()
    }

    /// The innermost tag, if any (the same as the outer one when there is a single tag).
    #[must_use]
    #[inline]
    pub fn inner_vlan(&self) -> Option<VlanTag> {
        self.vlan_tags().last().copied()
    }
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it. Accessors may panic if it is shorter than 14 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking that it holds an Ethernet header.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 14 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the fixed header.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the buffer is shorter than 14 bytes.
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

    /// The destination MAC address.
    #[must_use]
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        EthernetAddress(mac)
    }

    /// The source MAC address.
    #[must_use]
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        EthernetAddress(mac)
    }

    /// The ethertype field at offset 12 (a TPID if the frame is tagged).
    #[must_use]
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Everything after the 14-byte header, VLAN tags included.
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// Walks the VLAN tags and finds the L3 protocol and offset.
    ///
    /// # Errors
    /// [`Error::Truncated`] if a tag is cut short, [`Error::BadVlanTag`] for an S-tag inside a
    /// tag, [`Error::TooManyVlanTags`] for a third tag.
    #[inline]
    pub fn parse_l2(&self) -> Result<L2Header> {
        let data = self.buffer.as_ref();
        let mut l2 = L2Header {
            tags: [VlanTag::default(); MAX_VLAN_TAGS],
            tag_count: 0,
            ethertype: self.ethertype(),
            l3_offset: HEADER_LEN,
        };
        // The TPID of a tag sits where the ethertype would be: 2 bytes before l3_offset.
        loop {
            let tpid = l2.ethertype;
            match tpid {
                EtherType::VLAN | EtherType::QINQ => {}
                _ => return Ok(l2),
            }
            let slot = match l2.tag_count {
                0 => 0,
                1 if tpid == EtherType::VLAN => 1,
                1 => return Err(Error::BadVlanTag),
                _ => return Err(Error::TooManyVlanTags),
            };
            let tag_start = l2.l3_offset - 2;
            let tag = data
                .get(tag_start..tag_start + VLAN_TAG_LEN + 2)
                .ok_or(Error::Truncated)?;
            l2.tags[slot] = VlanTag {
                tpid,
                tci: read_u16(&tag[field::TAG_TCI]),
            };
            l2.tag_count += 1;
            l2.ethertype = EtherType(read_u16(&tag[field::TAG_NEXT_TYPE]));
            l2.l3_offset += VLAN_TAG_LEN;
        }
    }

    /// The bytes from the L3 header on, for an [`L2Header`] parsed from this frame.
    #[must_use]
    #[inline]
    pub fn l3_payload(&self, l2: &L2Header) -> &[u8] {
        self.buffer.as_ref().get(l2.l3_offset..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&value.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, value: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&value.0);
    }

    /// Sets the ethertype field at offset 12.
    #[inline]
    pub fn set_ethertype(&mut self, value: EtherType) {
        write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], value.0);
    }

    /// Swaps source and destination MAC addresses (for replies sent back out the same port).
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, src) = (self.dst_addr(), self.src_addr());
        self.set_dst_addr(src);
        self.set_src_addr(dst);
    }

    /// Everything after the 14-byte header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An untagged Ethernet II header in struct form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC.
    pub src_addr: EthernetAddress,
    /// Destination MAC.
    pub dst_addr: EthernetAddress,
    /// The ethertype field.
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the header of a checked frame (tags are not interpreted; see [`Frame::parse_l2`]).
    #[must_use]
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Self {
        Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// The header length this emits.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header.
    ///
    /// # Panics
    /// If the frame buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // An untagged IPv4 frame (header + first payload bytes).
    static PACKET_BYTES: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst 02:00:00:00:00:01
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, // src 02:00:00:00:00:fe
        0x08, 0x00, // ethertype IPv4
        0x45, 0x00, 0x00, 0x14, // payload (start of an IPv4 header)
    ];

    // QinQ: S-tag 0x88a8 VID 100 outside C-tag 0x8100 PCP 5 VID 200, carrying IPv6.
    static QINQ_BYTES: [u8; 24] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst broadcast
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // src (multicast bit set; unusual but parseable)
        0x88, 0xa8, // S-tag TPID
        0x00, 0x64, // PCP 0, DEI 0, VID 100
        0x81, 0x00, // C-tag TPID
        0xb0, 0xc8, // PCP 5, DEI 1, VID 200
        0x86, 0xdd, // inner ethertype IPv6
        0x60, 0x00, // payload
    ];

    #[test]
    fn test_deconstruct() {
        let frame = Frame::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress([0x02, 0, 0, 0, 0, 0x01]));
        assert_eq!(frame.src_addr(), EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]));
        assert_eq!(frame.ethertype(), EtherType::IPV4);
        assert_eq!(frame.payload(), &[0x45, 0x00, 0x00, 0x14]);
        let l2 = frame.parse_l2().unwrap();
        assert!(l2.vlan_tags().is_empty());
        assert_eq!(l2.ethertype, EtherType::IPV4);
        assert_eq!(l2.l3_offset, 14);
        assert_eq!(frame.l3_payload(&l2), &PACKET_BYTES[14..]);
    }

    #[test]
    fn test_deconstruct_qinq() {
        let frame = Frame::new_checked(&QINQ_BYTES[..]).unwrap();
        assert!(frame.dst_addr().is_broadcast());
        assert!(frame.src_addr().is_multicast());
        let l2 = frame.parse_l2().unwrap();
        assert_eq!(l2.ethertype, EtherType::IPV6);
        assert_eq!(l2.l3_offset, 22);
        let outer = l2.outer_vlan().unwrap();
        let inner = l2.inner_vlan().unwrap();
        assert_eq!(
            (outer.tpid, outer.vid(), outer.pcp(), outer.dei()),
            (EtherType::QINQ, 100, 0, false)
        );
        assert_eq!(
            (inner.tpid, inner.vid(), inner.pcp(), inner.dei()),
            (EtherType::VLAN, 200, 5, true)
        );
        assert_eq!(frame.l3_payload(&l2), &[0x60, 0x00]);
    }

    #[test]
    fn single_tag() {
        let mut bytes = [0u8; 20];
        bytes[12..18].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x08, 0x06]);
        let l2 = Frame::new_checked(&bytes[..]).unwrap().parse_l2().unwrap();
        assert_eq!(l2.vlan_tags().len(), 1);
        assert_eq!(l2.outer_vlan(), l2.inner_vlan());
        assert_eq!(l2.outer_vlan().unwrap().vid(), 10);
        assert_eq!(l2.ethertype, EtherType::ARP);
        assert_eq!(l2.l3_offset, 18);
    }

    #[test]
    fn bad_tag_stacks() {
        // Three tags.
        let mut bytes = [0u8; 30];
        bytes[12..26].copy_from_slice(&[
            0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00,
        ]);
        assert_eq!(
            Frame::new_checked(&bytes[..]).unwrap().parse_l2(),
            Err(Error::TooManyVlanTags)
        );
        // S-tag inside a C-tag.
        bytes[12..22].copy_from_slice(&[0x81, 0x00, 0, 1, 0x88, 0xa8, 0, 2, 0x08, 0x00]);
        assert_eq!(
            Frame::new_checked(&bytes[..]).unwrap().parse_l2(),
            Err(Error::BadVlanTag)
        );
        // Tag cut short.
        assert_eq!(
            Frame::new_checked(&QINQ_BYTES[..19]).unwrap().parse_l2(),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 18];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(EthernetAddress([0x02, 0, 0, 0, 0, 0x01]));
        frame.set_src_addr(EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]));
        frame.set_ethertype(EtherType::IPV4);
        frame.payload_mut().copy_from_slice(&PACKET_BYTES[14..]);
        assert_eq!(bytes, PACKET_BYTES);

        let mut frame = Frame::new_unchecked(bytes);
        frame.swap_addrs();
        assert_eq!(frame.src_addr(), EthernetAddress([0x02, 0, 0, 0, 0, 0x01]));
        assert_eq!(frame.dst_addr(), EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]));
    }

    #[test]
    fn test_truncation() {
        for bytes in [&PACKET_BYTES[..], &QINQ_BYTES[..]] {
            for len in 0..=bytes.len() {
                match Frame::new_checked(&bytes[..len]) {
                    Ok(frame) => {
                        let _ = (frame.dst_addr(), frame.src_addr(), frame.payload());
                        if let Ok(l2) = frame.parse_l2() {
                            assert!(l2.l3_offset <= len);
                            let _ = frame.l3_payload(&l2);
                        }
                    }
                    Err(e) => assert_eq!(e, Error::Truncated),
                }
            }
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            EthernetAddress([0x02, 0, 0, 0, 0xab, 0xfe]).to_string(),
            "02:00:00:00:ab:fe"
        );
        assert_eq!(EtherType(0x9100).to_string(), "0x9100");
        assert_eq!(EthernetAddress::from_bytes(&[1, 2, 3]), None);
        assert!(EthernetAddress([0x02, 0, 0, 0, 0, 1]).is_local());
        assert!(EthernetAddress([0x02, 0, 0, 0, 0, 1]).is_unicast());
    }

    proptest! {
        #[test]
        fn repr_round_trip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), ty in any::<u16>()) {
            let repr = Repr { src_addr: EthernetAddress(src), dst_addr: EthernetAddress(dst), ethertype: EtherType(ty) };
            let mut bytes = [0u8; HEADER_LEN];
            repr.emit(&mut Frame::new_unchecked(&mut bytes[..]));
            prop_assert_eq!(Repr::parse(&Frame::new_checked(&bytes[..]).unwrap()), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(frame) = Frame::new_checked(&bytes[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.payload());
                if let Ok(l2) = frame.parse_l2() {
                    prop_assert!(l2.vlan_tags().len() <= MAX_VLAN_TAGS);
                    prop_assert!(l2.l3_offset <= bytes.len());
                    let _ = frame.l3_payload(&l2);
                }
            }
        }
    }
}
