//! Generic UDP Encapsulation (draft-ietf-intarea-gue), header variant 0, on UDP port 6080.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0x0|C|   Hlen  |  Proto/ctype  |             Flags             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                  Extensions Fields (optional)                 ~
//! ```
//!
//! `Hlen` counts the 32-bit words of extension fields after the 4-byte base header. For a data
//! message (C = 0) `Proto/ctype` is the IP protocol of the payload (4 = IPv4, 41 = IPv6); for a
//! control message (C = 1) it is the control type. [`Packet::new_checked`] rejects variants other
//! than 0 ([`Error::BadVersion`]; variant 1 is direct IP encapsulation without a GUE header) and
//! extension fields that run past the buffer ([`Error::Truncated`]). The data plane emits only
//! data messages with no extension fields.

use super::ip::IpProtocol;
use super::{read_u16, write_u16, Error, Field, Result};

mod field {
    use super::Field;

    pub const VER_C_HLEN: usize = 0;
    pub const PROTO_CTYPE: usize = 1;
    pub const FLAGS: Field = 2..4;
}

/// The UDP destination port for GUE.
pub const PORT: u16 = 6080;
/// Length of the base GUE header.
pub const HEADER_LEN: usize = field::FLAGS.end;

/// A view of a GUE header and its payload.
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

    /// Wraps the UDP payload after checking the variant and header length.
    ///
    /// # Errors
    /// [`Error::Truncated`] or [`Error::BadVersion`].
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
        if self.version() != 0 {
            return Err(Error::BadVersion);
        }
        if self.header_len() > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The 2-bit variant (0 for a checked packet).
    #[must_use]
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] >> 6
    }

    /// The C bit: a control message.
    #[must_use]
    #[inline]
    pub fn is_control(&self) -> bool {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x20 != 0
    }

    /// The `Hlen` field: extension-field words after the base header.
    #[must_use]
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x1f
    }

    /// The total header length in bytes: base header plus extension fields.
    #[must_use]
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + usize::from(self.hlen()) * 4
    }

    /// The `Proto/ctype` field: the payload's IP protocol for data messages.
    #[must_use]
    #[inline]
    pub fn proto_ctype(&self) -> u8 {
        self.buffer.as_ref()[field::PROTO_CTYPE]
    }

    /// The payload protocol of a data message (meaningless for control messages).
    #[must_use]
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.proto_ctype())
    }

    /// The flags field.
    #[must_use]
    #[inline]
    pub fn flags(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS])
    }

    /// The extension fields (empty when `Hlen` is 0).
    #[must_use]
    #[inline]
    pub fn extensions(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.header_len())
            .unwrap_or(&[])
    }

    /// The payload after the header and extension fields (the inner IP packet).
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the variant, C bit and `Hlen` (low 5 bits) in one byte.
    #[inline]
    pub fn set_version_control_hlen(&mut self, version: u8, control: bool, hlen: u8) {
        self.buffer.as_mut()[field::VER_C_HLEN] =
            ((version & 0x03) << 6) | (u8::from(control) << 5) | (hlen & 0x1f);
    }

    /// Sets the `Proto/ctype` field.
    #[inline]
    pub fn set_proto_ctype(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTO_CTYPE] = value;
    }

    /// Sets the flags field.
    #[inline]
    pub fn set_flags(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::FLAGS], value);
    }

    /// The extension fields, mutable.
    #[inline]
    pub fn extensions_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or(&mut [])
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A GUE message in struct form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr {
    /// A data message carrying an IP packet of `protocol`.
    Data {
        /// 4 (IPv4) or 41 (IPv6) for the data plane's encapsulation.
        protocol: IpProtocol,
    },
    /// A control message of type `ctype`.
    Control {
        /// The control type.
        ctype: u8,
    },
}

impl Repr {
    /// Reads a checked header. Flags and extension fields are not represented.
    #[must_use]
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        if packet.is_control() {
            Self::Control {
                ctype: packet.proto_ctype(),
            }
        } else {
            Self::Data {
                protocol: packet.protocol(),
            }
        }
    }

    /// The header length this emits (4: no extension fields).
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a variant-0 header with no flags and no extension fields.
    ///
    /// # Panics
    /// If the buffer is shorter than 4 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let (control, value) = match *self {
            Self::Data { protocol } => (false, protocol.0),
            Self::Control { ctype } => (true, ctype),
        };
        packet.set_version_control_hlen(0, control, 0);
        packet.set_proto_ctype(value);
        packet.set_flags(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A data message carrying IPv4, with one word of extension fields, then the start of the
    // inner packet.
    static PACKET_BYTES: [u8; 12] = [
        0x01, // variant 0, C = 0, Hlen 1
        0x04, // proto IPv4
        0x80, 0x00, // flags
        0xde, 0xad, 0xbe, 0xef, // extension field
        0x45, 0x00, 0x00, 0x54, // inner IPv4 header begins
    ];

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 0);
        assert!(!packet.is_control());
        assert_eq!(packet.hlen(), 1);
        assert_eq!(packet.header_len(), 8);
        assert_eq!(packet.protocol(), IpProtocol::IPV4);
        assert_eq!(packet.flags(), 0x8000);
        assert_eq!(packet.extensions(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(packet.payload(), &[0x45, 0x00, 0x00, 0x54]);
        assert_eq!(
            Repr::parse(&packet),
            Repr::Data {
                protocol: IpProtocol::IPV4
            }
        );
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 12];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_control_hlen(0, false, 1);
        packet.set_proto_ctype(4);
        packet.set_flags(0x8000);
        packet
            .extensions_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        packet
            .payload_mut()
            .copy_from_slice(&[0x45, 0x00, 0x00, 0x54]);
        assert_eq!(bytes, PACKET_BYTES);

        let mut bytes = [0xa5u8; 8];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        Repr::Data {
            protocol: IpProtocol::IPV6,
        }
        .emit(&mut packet);
        packet.payload_mut().copy_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(bytes, [0x00, 0x29, 0x00, 0x00, 0x60, 0, 0, 0]);
    }

    #[test]
    fn rejects_other_variants() {
        // Variant 1 (direct IPv4: first nibble 4).
        assert_eq!(
            Packet::new_checked(&[0x45u8, 0, 0, 0][..]).unwrap_err(),
            Error::BadVersion
        );
        assert_eq!(
            Packet::new_checked(&[0x80u8, 0, 0, 0][..]).unwrap_err(),
            Error::BadVersion
        );
    }

    #[test]
    fn test_truncation() {
        for len in 0..=PACKET_BYTES.len() {
            match Packet::new_checked(&PACKET_BYTES[..len]) {
                Ok(packet) => {
                    assert!(len >= 8);
                    assert_eq!(packet.payload().len(), len - 8);
                }
                Err(e) => assert_eq!(e, Error::Truncated),
            }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(control in any::<bool>(), value in any::<u8>()) {
            let repr = if control {
                Repr::Control { ctype: value }
            } else {
                Repr::Data { protocol: IpProtocol(value) }
            };
            let mut bytes = [0u8; HEADER_LEN];
            repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&packet), repr);
            prop_assert_eq!(packet.header_len(), HEADER_LEN);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                prop_assert!(packet.header_len() <= bytes.len());
                let _ = (packet.extensions(), packet.payload(), Repr::parse(&packet));
            }
        }
    }
}
