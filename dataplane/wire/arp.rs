//! ARP (RFC 826) for Ethernet and IPv4, the only combination the appliance answers.
//!
//! [`Packet::new_checked`] accepts only htype 1, ptype 0x0800, hlen 6, plen 4 (else
//! [`Error::UnsupportedArp`]), so the address accessors have fixed offsets. [`Repr`] covers
//! requests and replies; [`Repr::reply`] builds the answer to a request for one of our addresses.

use super::ethernet::{EtherType, EthernetAddress};
use super::{read_ipv4, read_u16, write_u16, Error, Field, Result};
use std::net::Ipv4Addr;

mod field {
    use super::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Operation(pub u16);

impl Operation {
    /// Who has `target_protocol_addr`?
    pub const REQUEST: Self = Self(1);
    /// `sender_protocol_addr` is at `sender_hardware_addr`.
    pub const REPLY: Self = Self(2);
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors may panic if it is shorter than 28 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking its length and that it is Ethernet/IPv4 ARP.
    ///
    /// # Errors
    /// [`Error::Truncated`] under 28 bytes; [`Error::UnsupportedArp`] for other address types.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length and the address formats.
    ///
    /// # Errors
    /// As [`Packet::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != EtherType::IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::UnsupportedArp);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The hardware type (1 = Ethernet).
    #[must_use]
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// The protocol type (0x0800 = IPv4).
    #[must_use]
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType(read_u16(&self.buffer.as_ref()[field::PTYPE]))
    }

    /// The hardware address length.
    #[must_use]
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// The protocol address length.
    #[must_use]
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The operation.
    #[must_use]
    #[inline]
    pub fn operation(&self) -> Operation {
        Operation(read_u16(&self.buffer.as_ref()[field::OPER]))
    }

    /// The sender hardware address.
    #[must_use]
    #[inline]
    pub fn sender_hardware_addr(&self) -> EthernetAddress {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        EthernetAddress(mac)
    }

    /// The sender protocol address.
    #[must_use]
    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::SPA])
    }

    /// The target hardware address.
    #[must_use]
    #[inline]
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        EthernetAddress(mac)
    }

    /// The target protocol address.
    #[must_use]
    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    #[inline]
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::HTYPE], value);
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(&mut self.buffer.as_mut()[field::PTYPE], value.0);
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, value: Operation) {
        write_u16(&mut self.buffer.as_mut()[field::OPER], value.0);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_hardware_addr(&mut self, value: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&value.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&value.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, value: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&value.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&value.octets());
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// Whether an ARP packet asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    /// A request.
    Request,
    /// A reply.
    Reply,
}

/// An Ethernet/IPv4 ARP request or reply in struct form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Request or reply.
    pub operation: ArpOp,
    /// Sender MAC.
    pub sender_hardware_addr: EthernetAddress,
    /// Sender IPv4 address.
    pub sender_protocol_addr: Ipv4Addr,
    /// Target MAC (zero in requests).
    pub target_hardware_addr: EthernetAddress,
    /// Target IPv4 address.
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Reads a checked packet.
    ///
    /// # Errors
    /// [`Error::BadArpOperation`] for an operation other than request or reply.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        let operation = match packet.operation() {
            Operation::REQUEST => ArpOp::Request,
            Operation::REPLY => ArpOp::Reply,
            _ => return Err(Error::BadArpOperation),
        };
        Ok(Self {
            operation,
            sender_hardware_addr: packet.sender_hardware_addr(),
            sender_protocol_addr: packet.sender_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// The reply to this request, sent from `our_mac`: "target_protocol_addr is at our_mac".
    ///
    /// The caller decides whether the target address is ours; this only swaps the fields.
    #[must_use]
    pub fn reply(&self, our_mac: EthernetAddress) -> Self {
        Self {
            operation: ArpOp::Reply,
            sender_hardware_addr: our_mac,
            sender_protocol_addr: self.target_protocol_addr,
            target_hardware_addr: self.sender_hardware_addr,
            target_protocol_addr: self.sender_protocol_addr,
        }
    }

    /// The packet length this emits.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the whole packet.
    ///
    /// # Panics
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(EtherType::IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(match self.operation {
            ArpOp::Request => Operation::REQUEST,
            ArpOp::Reply => Operation::REPLY,
        });
        packet.set_sender_hardware_addr(self.sender_hardware_addr);
        packet.set_sender_protocol_addr(self.sender_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // "Who has 198.51.100.1? Tell 198.51.100.254", from the gateway.
    static PACKET_BYTES: [u8; 28] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, // hlen
        0x04, // plen
        0x00, 0x01, // operation request
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, // sender MAC
        198, 51, 100, 254, // sender IP
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC (unknown)
        198, 51, 100, 1, // target IP
    ];

    fn request() -> Repr {
        Repr {
            operation: ArpOp::Request,
            sender_hardware_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0xfe]),
            sender_protocol_addr: Ipv4Addr::new(198, 51, 100, 254),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Addr::new(198, 51, 100, 1),
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), EtherType::IPV4);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), Operation::REQUEST);
        assert_eq!(
            packet.sender_hardware_addr(),
            EthernetAddress([0x02, 0, 0, 0, 0, 0xfe])
        );
        assert_eq!(
            packet.sender_protocol_addr(),
            Ipv4Addr::new(198, 51, 100, 254)
        );
        assert_eq!(packet.target_hardware_addr(), EthernetAddress([0; 6]));
        assert_eq!(
            packet.target_protocol_addr(),
            Ipv4Addr::new(198, 51, 100, 1)
        );
        assert_eq!(Repr::parse(&packet), Ok(request()));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 28];
        request().emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn reply() {
        let our_mac = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
        let reply = request().reply(our_mac);
        assert_eq!(reply.operation, ArpOp::Reply);
        assert_eq!(reply.sender_hardware_addr, our_mac);
        assert_eq!(reply.sender_protocol_addr, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(reply.target_hardware_addr, request().sender_hardware_addr);
        assert_eq!(reply.target_protocol_addr, Ipv4Addr::new(198, 51, 100, 254));
    }

    #[test]
    fn rejects_other_formats_and_operations() {
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = PACKET_BYTES;
            bytes[at] = value;
            assert_eq!(
                Packet::new_checked(&bytes[..]).unwrap_err(),
                Error::UnsupportedArp
            );
        }
        let mut bytes = PACKET_BYTES;
        bytes[7] = 3; // RARP request
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Err(Error::BadArpOperation));
    }

    #[test]
    fn test_truncation() {
        for len in 0..PACKET_BYTES.len() {
            assert_eq!(
                Packet::new_checked(&PACKET_BYTES[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        // Trailing Ethernet padding is fine.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&PACKET_BYTES);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&padded[..]).unwrap()),
            Ok(request())
        );
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            reply in any::<bool>(),
            sha in any::<[u8; 6]>(), spa in any::<[u8; 4]>(),
            tha in any::<[u8; 6]>(), tpa in any::<[u8; 4]>(),
        ) {
            let repr = Repr {
                operation: if reply { ArpOp::Reply } else { ArpOp::Request },
                sender_hardware_addr: EthernetAddress(sha),
                sender_protocol_addr: Ipv4Addr::from(spa),
                target_hardware_addr: EthernetAddress(tha),
                target_protocol_addr: Ipv4Addr::from(tpa),
            };
            let mut bytes = [0u8; PACKET_LEN];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Bias towards the supported format so the accessors run.
            if bytes.len() >= 6 && bytes[0] & 1 == 0 {
                bytes[..6].copy_from_slice(&PACKET_BYTES[..6]);
            }
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = Repr::parse(&packet);
            }
        }
    }
}
