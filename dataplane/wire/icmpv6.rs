//! ICMPv6 (RFC 4443) and the neighbour-discovery messages the appliance answers (RFC 4861).
//!
//! [`Packet::new_checked`] needs the 8-byte header, and 24 bytes for neighbour solicitations
//! and advertisements so that [`Packet::target_addr`] is in bounds ([`Error::Truncated`]). Hand
//! it exactly the upper-layer bytes of the IPv6 packet: the checksum covers all of them, with the
//! IPv6 pseudo-header.
//!
//! Error messages (destination unreachable, packet too big, time exceeded) quote the original
//! packet: [`Packet::embedded`] returns an [`EmbeddedIpv6`] that walks the quoted extension
//! headers (with the same bounds as [`super::ipv6::walk_ext_headers`]) and exposes the first 8
//! bytes of L4, so a packet-too-big for a VIP can be steered to the backend that owns the flow.
//!
//! Neighbour-discovery options are walked with [`Packet::ndp_options`]; an option of length 0,
//! or one that runs past the message, is [`Error::BadNdpOption`] (RFC 4861 says to discard such
//! messages). [`Repr::parse`] checks the checksum and codes; the remaining RFC 4861 §7.1
//! validity checks need the IPv6 header and are the caller's: hop limit 255, target not
//! multicast, and no source link-layer option when the source is unspecified.

use super::checksum;
use super::ethernet::EthernetAddress;
use super::ip::IpProtocol;
use super::ipv6::{self, UpperLayer};
use super::{read_ipv6, read_u16, read_u32, write_u16, write_u32, Error, Field, Rest, Result};
use std::net::Ipv6Addr;

mod field {
    use super::{Field, Rest};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const MTU: Field = 4..8;
    pub const NDP_FLAGS: usize = 4;
    pub const NDP_RESERVED: Field = 4..8;
    pub const DATA: Rest = 8..;
    pub const TARGET_ADDR: Field = 8..24;
    pub const NDP_OPTIONS: Rest = 24..;
}

/// Length of the ICMPv6 header (type, code, checksum and 4 message-specific bytes).
pub const HEADER_LEN: usize = field::DATA.start;
/// Length of a neighbour solicitation or advertisement without options.
pub const NDP_LEN: usize = field::NDP_OPTIONS.start;
/// The most of the original packet an error message quotes: the whole error fits in the IPv6
/// minimum MTU (RFC 4443 §2.4).
pub const MAX_QUOTE_LEN: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN - HEADER_LEN;
/// Length of a link-layer address option for Ethernet.
pub const LLADDR_OPTION_LEN: usize = 8;

/// An ICMPv6 message type. Every value is representable; the constants work in `match` patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Message(pub u8);

impl Message {
    /// Destination unreachable.
    pub const DST_UNREACHABLE: Self = Self(1);
    /// Packet too big.
    pub const PKT_TOO_BIG: Self = Self(2);
    /// Time exceeded.
    pub const TIME_EXCEEDED: Self = Self(3);
    /// Parameter problem.
    pub const PARAM_PROBLEM: Self = Self(4);
    /// Echo request.
    pub const ECHO_REQUEST: Self = Self(128);
    /// Echo reply.
    pub const ECHO_REPLY: Self = Self(129);
    /// Router solicitation.
    pub const ROUTER_SOLICIT: Self = Self(133);
    /// Router advertisement.
    pub const ROUTER_ADVERT: Self = Self(134);
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: Self = Self(135);
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: Self = Self(136);
    /// Redirect.
    pub const REDIRECT: Self = Self(137);

    /// Whether this is an error message (types below 128), which quotes an original packet.
    #[must_use]
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 < 128
    }

    /// Whether this is a neighbour solicitation or advertisement (with a target address).
    #[must_use]
    #[inline]
    pub const fn is_ndp_ns_na(self) -> bool {
        self.0 == Self::NEIGHBOR_SOLICIT.0 || self.0 == Self::NEIGHBOR_ADVERT.0
    }
}

/// Destination-unreachable codes.
pub mod unreachable {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Address unreachable.
    pub const ADDRESS: u8 = 3;
    /// Port unreachable.
    pub const PORT: u8 = 4;
}

/// Neighbour-discovery option types.
pub mod ndp_option {
    /// Source link-layer address.
    pub const SOURCE_LLADDR: u8 = 1;
    /// Target link-layer address.
    pub const TARGET_LLADDR: u8 = 2;
    /// Prefix information.
    pub const PREFIX_INFO: u8 = 3;
    /// Redirected header.
    pub const REDIRECTED_HEADER: u8 = 4;
    /// MTU.
    pub const MTU: u8 = 5;
}

/// The flags of a neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NdpFlags(pub u8);

impl NdpFlags {
    /// The sender is a router.
    pub const ROUTER: Self = Self(0x80);
    /// Sent in response to a solicitation.
    pub const SOLICITED: Self = Self(0x40);
    /// Override an existing cache entry.
    pub const OVERRIDE: Self = Self(0x20);

    /// Whether every bit of `other` is set.
    #[must_use]
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for NdpFlags {
    type Output = Self;

    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// One neighbour-discovery option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpOption<'a> {
    /// The option type (see [`ndp_option`]).
    pub kind: u8,
    /// The option body after its type and length bytes.
    pub data: &'a [u8],
}

impl NdpOption<'_> {
    /// The Ethernet address of a link-layer address option (`None` if the body is shorter).
    #[must_use]
    #[inline]
    pub fn lladdr(&self) -> Option<EthernetAddress> {
        self.data.get(..6).and_then(EthernetAddress::from_bytes)
    }
}

/// Iterator over neighbour-discovery options; yields one `Err` and stops on a malformed option.
#[derive(Debug, Clone)]
pub struct NdpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = Result<NdpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        let (kind, len) = match *rest {
            [kind, len, ..] if len != 0 => (kind, usize::from(len) * 8),
            _ => return Some(Err(Error::BadNdpOption)),
        };
        let Some(option) = rest.get(..len) else {
            return Some(Err(Error::BadNdpOption));
        };
        self.rest = rest.get(len..).unwrap_or(&[]);
        Some(Ok(NdpOption {
            kind,
            data: option.get(2..).unwrap_or(&[]),
        }))
    }
}

/// A view of an ICMPv6 message.
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

    /// Wraps a buffer after checking the header (and the target address of NS/NA).
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
    /// [`Error::Truncated`] under 8 bytes, or under 24 for NS/NA.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || (self.msg_type().is_ndp_ns_na() && len < NDP_LEN) {
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

    /// The MTU of a packet-too-big message.
    #[must_use]
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU])
    }

    /// The flags byte of a neighbour advertisement.
    #[must_use]
    #[inline]
    pub fn ndp_flags(&self) -> NdpFlags {
        NdpFlags(self.buffer.as_ref()[field::NDP_FLAGS] & 0xe0)
    }

    /// The target address of a neighbour solicitation or advertisement (unspecified for a
    /// message too short to have one, which `new_checked` rules out for NS/NA).
    #[must_use]
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        self.buffer
            .as_ref()
            .get(field::TARGET_ADDR)
            .map_or(Ipv6Addr::UNSPECIFIED, read_ipv6)
    }

    /// Whether this is an error message that quotes an original packet.
    #[must_use]
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type().is_error()
    }

    /// Everything after the 8-byte header: echo data, or the quoted packet.
    #[must_use]
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(field::DATA).unwrap_or(&[])
    }

    /// The quoted original packet of an error message.
    ///
    /// # Errors
    /// As [`EmbeddedIpv6::new_checked`] (the caller checks [`Packet::is_error`] first).
    #[inline]
    pub fn embedded(&self) -> Result<EmbeddedIpv6<'_>> {
        EmbeddedIpv6::new_checked(self.data())
    }

    /// The neighbour-discovery options of an NS or NA (empty for other messages).
    #[must_use]
    #[inline]
    pub fn ndp_options(&self) -> NdpOptions<'_> {
        let rest = if self.msg_type().is_ndp_ns_na() {
            self.buffer.as_ref().get(field::NDP_OPTIONS).unwrap_or(&[])
        } else {
            &[]
        };
        NdpOptions { rest }
    }

    /// The first link-layer address option of type `kind`, after checking all options.
    fn find_lladdr(&self, kind: u8) -> Result<Option<EthernetAddress>> {
        let mut found = None;
        for option in self.ndp_options() {
            let option = option?;
            if option.kind == kind && found.is_none() {
                found = Some(option.lladdr().ok_or(Error::BadNdpOption)?);
            }
        }
        Ok(found)
    }

    /// The source link-layer address option of an NS.
    ///
    /// # Errors
    /// [`Error::BadNdpOption`] if any option is malformed.
    #[inline]
    pub fn source_lladdr(&self) -> Result<Option<EthernetAddress>> {
        self.find_lladdr(ndp_option::SOURCE_LLADDR)
    }

    /// The target link-layer address option of an NA.
    ///
    /// # Errors
    /// [`Error::BadNdpOption`] if any option is malformed.
    #[inline]
    pub fn target_lladdr(&self) -> Result<Option<EthernetAddress>> {
        self.find_lladdr(ndp_option::TARGET_LLADDR)
    }

    #[inline]
    fn pseudo_header(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u64 {
        let len = u32::try_from(self.buffer.as_ref().len()).unwrap_or(u32::MAX);
        checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len)
    }

    /// Whether the checksum verifies with the IPv6 pseudo-header.
    #[must_use]
    #[inline]
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        checksum::verify(self.pseudo_header(src, dst) + checksum::sum(self.buffer.as_ref()))
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

    /// Sets the 4 message-specific bytes as one value (MTU, pointer, or 0 for "unused").
    #[inline]
    pub fn set_mtu(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::MTU], value);
    }

    /// Sets the neighbour-advertisement flags and zeroes the reserved bits.
    #[inline]
    pub fn set_ndp_flags(&mut self, value: NdpFlags) {
        write_u32(&mut self.buffer.as_mut()[field::NDP_RESERVED], 0);
        self.buffer.as_mut()[field::NDP_FLAGS] = value.0 & 0xe0;
    }

    /// Sets the target address of an NS or NA.
    #[inline]
    pub fn set_target_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET_ADDR].copy_from_slice(&value.octets());
    }

    /// Everything after the header, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::DATA).unwrap_or(&mut [])
    }

    /// Computes the checksum with the IPv6 pseudo-header and writes it.
    #[inline]
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.pseudo_header(src, dst) + checksum::sum(self.buffer.as_ref());
        self.set_checksum(checksum::finish(sum));
    }

    /// Turns an echo request into the matching echo reply in place: type 129, code 0, checksum
    /// patched incrementally. The caller swaps the IPv6 addresses, which leaves the
    /// pseudo-header sum unchanged.
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

/// The original packet quoted in an ICMPv6 error: its IPv6 header, extension headers as far as
/// they are quoted, and the first 8 bytes of the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedIpv6<'a> {
    data: &'a [u8],
    upper: UpperLayer,
}

impl<'a> EmbeddedIpv6<'a> {
    /// Number of upper-layer bytes that must be quoted.
    pub const L4_LEN: usize = 8;

    /// Checks a quoted packet and walks its extension headers (bounded by the quote and by the
    /// quoted payload length).
    ///
    /// # Errors
    /// [`Error::Truncated`] if the fixed header or the 8 upper-layer bytes are missing,
    /// [`Error::BadVersion`] if it is not IPv6, and the extension-header walk errors.
    pub fn new_checked(data: &'a [u8]) -> Result<Self> {
        let header = data.get(..ipv6::HEADER_LEN).ok_or(Error::Truncated)?;
        if header[0] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        let end = ipv6::HEADER_LEN + usize::from(read_u16(&header[4..6]));
        let data = data.get(..end).unwrap_or(data);
        let upper = ipv6::walk_ext_headers(IpProtocol(header[6]), data, ipv6::HEADER_LEN)?;
        if upper.offset + Self::L4_LEN > data.len() {
            return Err(Error::Truncated);
        }
        Ok(Self { data, upper })
    }

    /// The quoted fixed IPv6 header.
    #[must_use]
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        self.data.get(..ipv6::HEADER_LEN).unwrap_or(&[])
    }

    /// Where the quoted extension-header chain ends (protocol, offset in the quote, fragment).
    #[must_use]
    #[inline]
    pub fn upper_layer(&self) -> UpperLayer {
        self.upper
    }

    /// The quoted upper-layer protocol.
    #[must_use]
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        self.upper.protocol
    }

    /// The quoted source address.
    #[must_use]
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.header()[8..24])
    }

    /// The quoted destination address.
    #[must_use]
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.header()[24..40])
    }

    /// The first 8 bytes of the quoted upper layer (fragment data for a non-first fragment).
    #[must_use]
    #[inline]
    pub fn l4_header(&self) -> &'a [u8] {
        self.data
            .get(self.upper.offset..self.upper.offset + Self::L4_LEN)
            .unwrap_or(&[])
    }

    /// Everything quoted from the upper-layer header on.
    #[must_use]
    #[inline]
    pub fn l4_data(&self) -> &'a [u8] {
        self.data.get(self.upper.offset..).unwrap_or(&[])
    }

    /// The quoted source port (meaningful for TCP and UDP with [`UpperLayer::has_header`]).
    #[must_use]
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(&self.l4_header()[0..2])
    }

    /// The quoted destination port (meaningful for TCP and UDP with [`UpperLayer::has_header`]).
    #[must_use]
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.l4_header()[2..4])
    }
}

/// An ICMPv6 message in struct form.
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
    /// Destination unreachable.
    DstUnreachable {
        /// The code (see [`mod@unreachable`]).
        code: u8,
        /// The quoted original packet.
        quote: &'a [u8],
    },
    /// Packet too big.
    PktTooBig {
        /// The MTU of the next hop.
        mtu: u32,
        /// The quoted original packet.
        quote: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// 0: hop limit exceeded; 1: reassembly time exceeded.
        code: u8,
        /// The quoted original packet.
        quote: &'a [u8],
    },
    /// Neighbour solicitation.
    NeighborSolicit {
        /// The address being resolved.
        target_addr: Ipv6Addr,
        /// The solicitor's MAC, if it sent one.
        source_lladdr: Option<EthernetAddress>,
    },
    /// Neighbour advertisement.
    NeighborAdvert {
        /// Router, solicited and override flags.
        flags: NdpFlags,
        /// The address being advertised.
        target_addr: Ipv6Addr,
        /// The advertiser's MAC, if included.
        target_lladdr: Option<EthernetAddress>,
    },
}

impl<'a> Repr<'a> {
    /// Reads a checked message between `src` and `dst`, verifying its checksum.
    ///
    /// # Errors
    /// [`Error::BadChecksum`]; [`Error::BadNdpOption`]; [`Error::UnsupportedIcmp`] for other
    /// types, or a non-zero code where RFC 4443/4861 require zero.
    pub fn parse(src: &Ipv6Addr, dst: &Ipv6Addr, packet: &Packet<&'a [u8]>) -> Result<Self> {
        if !packet.verify_checksum(src, dst) {
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
            (Message::DST_UNREACHABLE, _) => Ok(Self::DstUnreachable { code, quote: data }),
            (Message::PKT_TOO_BIG, 0) => Ok(Self::PktTooBig {
                mtu: packet.mtu(),
                quote: data,
            }),
            (Message::TIME_EXCEEDED, _) => Ok(Self::TimeExceeded { code, quote: data }),
            (Message::NEIGHBOR_SOLICIT, 0) => Ok(Self::NeighborSolicit {
                target_addr: packet.target_addr(),
                source_lladdr: packet.source_lladdr()?,
            }),
            (Message::NEIGHBOR_ADVERT, 0) => Ok(Self::NeighborAdvert {
                flags: packet.ndp_flags(),
                target_addr: packet.target_addr(),
                target_lladdr: packet.target_lladdr()?,
            }),
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

    /// A packet-too-big message for `original` (the offending IPv6 packet, header first),
    /// quoting as much as fits in the minimum MTU.
    #[must_use]
    pub fn packet_too_big(mtu: u32, original: &'a [u8]) -> Self {
        Self::PktTooBig {
            mtu,
            quote: original.get(..MAX_QUOTE_LEN).unwrap_or(original),
        }
    }

    /// A neighbour advertisement for one of our addresses, with our MAC as the target
    /// link-layer address and the override flag set; `solicited` is false only when answering
    /// a duplicate-address-detection probe (source `::`), which goes to all-nodes.
    #[must_use]
    pub fn neighbor_advert(
        target_addr: Ipv6Addr,
        our_mac: EthernetAddress,
        solicited: bool,
    ) -> Self {
        let flags = if solicited {
            NdpFlags::SOLICITED | NdpFlags::OVERRIDE
        } else {
            NdpFlags::OVERRIDE
        };
        Self::NeighborAdvert {
            flags,
            target_addr,
            target_lladdr: Some(our_mac),
        }
    }

    /// The message length this emits.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Self::DstUnreachable { quote, .. }
            | Self::PktTooBig { quote, .. }
            | Self::TimeExceeded { quote, .. } => HEADER_LEN + quote.len(),
            Self::NeighborSolicit {
                source_lladdr: lladdr,
                ..
            }
            | Self::NeighborAdvert {
                target_lladdr: lladdr,
                ..
            } => {
                NDP_LEN
                    + if lladdr.is_some() {
                        LLADDR_OPTION_LEN
                    } else {
                        0
                    }
            }
        }
    }

    /// Writes the message and its checksum for a packet from `src` to `dst`. The checksum covers
    /// the whole buffer, so size it with [`Repr::buffer_len`].
    ///
    /// # Panics
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        packet: &mut Packet<T>,
    ) {
        match *self {
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
                packet.data_mut()[..data.len()].copy_from_slice(data);
            }
            Self::DstUnreachable { code, quote } => {
                emit_error(packet, Message::DST_UNREACHABLE, code, 0, quote);
            }
            Self::PktTooBig { mtu, quote } => {
                emit_error(packet, Message::PKT_TOO_BIG, 0, mtu, quote)
            }
            Self::TimeExceeded { code, quote } => {
                emit_error(packet, Message::TIME_EXCEEDED, code, 0, quote);
            }
            Self::NeighborSolicit {
                target_addr,
                source_lladdr,
            } => {
                packet.set_msg_type(Message::NEIGHBOR_SOLICIT);
                packet.set_msg_code(0);
                packet.set_mtu(0);
                packet.set_target_addr(target_addr);
                emit_lladdr(packet, ndp_option::SOURCE_LLADDR, source_lladdr);
            }
            Self::NeighborAdvert {
                flags,
                target_addr,
                target_lladdr,
            } => {
                packet.set_msg_type(Message::NEIGHBOR_ADVERT);
                packet.set_msg_code(0);
                packet.set_ndp_flags(flags);
                packet.set_target_addr(target_addr);
                emit_lladdr(packet, ndp_option::TARGET_LLADDR, target_lladdr);
            }
        }
        packet.fill_checksum(src, dst);
    }
}

fn emit_error<T: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut Packet<T>,
    ty: Message,
    code: u8,
    word: u32,
    quote: &[u8],
) {
    packet.set_msg_type(ty);
    packet.set_msg_code(code);
    packet.set_mtu(word);
    packet.data_mut()[..quote.len()].copy_from_slice(quote);
}

fn emit_lladdr<T: AsRef<[u8]> + AsMut<[u8]>>(
    packet: &mut Packet<T>,
    kind: u8,
    lladdr: Option<EthernetAddress>,
) {
    if let Some(mac) = lladdr {
        let option = &mut packet.buffer.as_mut()[NDP_LEN..NDP_LEN + LLADDR_OPTION_LEN];
        option[0] = kind;
        option[1] = 1; // length in units of 8 bytes
        option[2..].copy_from_slice(mac.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client() -> Ipv6Addr {
        "2001:db8:100::7".parse().unwrap()
    }

    fn ours() -> Ipv6Addr {
        "2001:db8:100::1".parse().unwrap()
    }

    fn solicited_node() -> Ipv6Addr {
        "ff02::1:ff00:1".parse().unwrap()
    }

    const CLIENT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x07]);
    const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);

    // A neighbour solicitation from 2001:db8:100::7 to ff02::1:ff00:1 for 2001:db8:100::1,
    // with a source link-layer address option.
    static PACKET_BYTES: [u8; 32] = [
        0x87, // type neighbour solicitation
        0x00, // code
        0x1a, 0x1d, // checksum
        0x00, 0x00, 0x00, 0x00, // reserved
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, // target 2001:db8:100::1
        0x01, 0x01, // option: source link-layer address, length 1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x07, // client MAC
    ];

    // Its answer: a solicited, override advertisement from 2001:db8:100::1 to the client.
    static NA_BYTES: [u8; 32] = [
        0x88, // type neighbour advertisement
        0x00, // code
        0x87, 0x6e, // checksum
        0x60, 0x00, 0x00, 0x00, // flags S and O
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, // target 2001:db8:100::1
        0x02, 0x01, // option: target link-layer address, length 1
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // our MAC
    ];

    // A packet-too-big (MTU 1400) from a router to a backend-facing VIP, quoting a TCP segment
    // 2001:db8:1::7:51234 → 2001:db8:100::10:443 behind a destination-options header.
    static PTB_BYTES: [u8; 64] = [
        0x02, // type packet too big
        0x00, // code
        0x00, 0x00, // checksum (filled by the tests)
        0x00, 0x00, 0x05, 0x78, // MTU 1400
        // quoted IPv6 header
        0x60, 0x00, 0x00, 0x00, // version 6
        0x05, 0xb4, // payload length 1460
        0x3c, // next header: destination options
        0x40, // hop limit
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x07, // source 2001:db8:1::7
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x10, // destination 2001:db8:100::10
        0x06, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // dest options → TCP, PadN
        0xc8, 0x22, 0x01, 0xbb, // ports 51234 → 443
        0x01, 0x23, 0x45, 0x67, // sequence number
    ];

    fn ptb_src() -> Ipv6Addr {
        "2001:db8:ffff::1".parse().unwrap()
    }

    fn ptb_dst() -> Ipv6Addr {
        "2001:db8:100::10".parse().unwrap()
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Message::NEIGHBOR_SOLICIT);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0x1a1d);
        assert!(packet.verify_checksum(&client(), &solicited_node()));
        assert!(!packet.verify_checksum(&client(), &ours()));
        assert_eq!(packet.target_addr(), ours());
        assert_eq!(packet.source_lladdr(), Ok(Some(CLIENT_MAC)));
        assert_eq!(packet.target_lladdr(), Ok(None));
        assert!(!packet.is_error());
        assert_eq!(
            Repr::parse(&client(), &solicited_node(), &packet),
            Ok(Repr::NeighborSolicit {
                target_addr: ours(),
                source_lladdr: Some(CLIENT_MAC)
            })
        );

        let na = Packet::new_checked(&NA_BYTES[..]).unwrap();
        assert_eq!(na.ndp_flags(), NdpFlags::SOLICITED | NdpFlags::OVERRIDE);
        assert!(na.ndp_flags().contains(NdpFlags::SOLICITED));
        assert!(!na.ndp_flags().contains(NdpFlags::ROUTER));
        assert_eq!(na.target_lladdr(), Ok(Some(OUR_MAC)));
        assert_eq!(
            Repr::parse(&ours(), &client(), &na),
            Ok(Repr::neighbor_advert(ours(), OUR_MAC, true))
        );
    }

    #[test]
    fn test_construct() {
        let ns = Repr::NeighborSolicit {
            target_addr: ours(),
            source_lladdr: Some(CLIENT_MAC),
        };
        let mut bytes = [0xa5u8; 32];
        assert_eq!(ns.buffer_len(), 32);
        ns.emit(
            &client(),
            &solicited_node(),
            &mut Packet::new_unchecked(&mut bytes[..]),
        );
        assert_eq!(bytes, PACKET_BYTES);

        let na = Repr::neighbor_advert(ours(), OUR_MAC, true);
        let mut bytes = [0xa5u8; 32];
        na.emit(
            &ours(),
            &client(),
            &mut Packet::new_unchecked(&mut bytes[..]),
        );
        assert_eq!(bytes, NA_BYTES);
    }

    fn ptb_bytes() -> [u8; 64] {
        let mut bytes = PTB_BYTES;
        Packet::new_unchecked(&mut bytes[..]).fill_checksum(&ptb_src(), &ptb_dst());
        bytes
    }

    #[test]
    fn packet_too_big() {
        let bytes = ptb_bytes();
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.is_error());
        assert_eq!(packet.mtu(), 1400);
        let inner = packet.embedded().unwrap();
        assert_eq!(
            inner.src_addr(),
            "2001:db8:1::7".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(inner.dst_addr(), ptb_dst());
        assert_eq!(inner.protocol(), IpProtocol::TCP);
        assert_eq!(inner.upper_layer().offset, 48);
        assert!(inner.upper_layer().has_header());
        assert_eq!((inner.src_port(), inner.dst_port()), (51234, 443));
        assert_eq!(inner.header().len(), 40);
        assert_eq!(inner.l4_header(), &PTB_BYTES[56..64]);
        assert_eq!(inner.l4_data(), &PTB_BYTES[56..64]);

        let repr = Repr::parse(&ptb_src(), &ptb_dst(), &packet).unwrap();
        assert_eq!(repr, Repr::packet_too_big(1400, &PTB_BYTES[8..]));
        let mut emitted = [0u8; 64];
        repr.emit(
            &ptb_src(),
            &ptb_dst(),
            &mut Packet::new_unchecked(&mut emitted[..]),
        );
        assert_eq!(emitted, bytes);

        let big = [0x60u8; 1500];
        let repr = Repr::packet_too_big(1280, &big);
        assert_eq!(repr.buffer_len() + 40, ipv6::MIN_MTU);
    }

    #[test]
    fn echo_reply_in_place() {
        let data = [1u8, 2, 3, 4, 5];
        let request = Repr::EchoRequest {
            ident: 7,
            seq_no: 9,
            data: &data,
        };
        let mut bytes = [0u8; 13];
        request.emit(
            &client(),
            &ours(),
            &mut Packet::new_unchecked(&mut bytes[..]),
        );
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((packet.echo_ident(), packet.echo_seq_no()), (7, 9));
        assert_eq!(Repr::parse(&client(), &ours(), &packet), Ok(request));

        let reply = request.echo_reply().unwrap();
        let mut emitted = [0u8; 13];
        reply.emit(
            &ours(),
            &client(),
            &mut Packet::new_unchecked(&mut emitted[..]),
        );
        Packet::new_unchecked(&mut bytes[..]).convert_to_echo_reply();
        assert_eq!(bytes, emitted);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Repr::parse(&ours(), &client(), &packet), Ok(reply));
    }

    #[test]
    fn bad_ndp_options() {
        // Option length 0.
        let mut bytes = PACKET_BYTES;
        bytes[25] = 0;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(&client(), &solicited_node());
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.source_lladdr(), Err(Error::BadNdpOption));
        assert_eq!(
            Repr::parse(&client(), &solicited_node(), &packet),
            Err(Error::BadNdpOption)
        );
        // Option running past the message.
        let mut bytes = PACKET_BYTES;
        bytes[25] = 2;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.source_lladdr(), Err(Error::BadNdpOption));
        // A trailing lone byte.
        let mut long = [0u8; 33];
        long[..32].copy_from_slice(&PACKET_BYTES);
        let packet = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(packet.source_lladdr(), Err(Error::BadNdpOption));
        // No options at all.
        let packet = Packet::new_checked(&PACKET_BYTES[..24]).unwrap();
        assert_eq!(packet.source_lladdr(), Ok(None));
        assert_eq!(packet.ndp_options().count(), 0);
    }

    #[test]
    fn rejects() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(
            Repr::parse(&ours(), &client(), &packet),
            Err(Error::BadChecksum)
        );

        let mut bytes = PACKET_BYTES;
        bytes[1] = 1; // NS with a non-zero code
        Packet::new_unchecked(&mut bytes[..]).fill_checksum(&client(), &solicited_node());
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Repr::parse(&client(), &solicited_node(), &packet),
            Err(Error::UnsupportedIcmp)
        );

        let mut bytes = ptb_bytes();
        bytes[8] = 0x40;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap().embedded(),
            Err(Error::BadVersion)
        );
        let mut bytes = ptb_bytes();
        bytes[49] = 2; // dest-options length 24: runs past the quote
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap().embedded(),
            Err(Error::TruncatedExtHeader)
        );
        bytes[49] = 1; // length 16: the header fits, but no upper-layer bytes are left
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap().embedded(),
            Err(Error::Truncated)
        );
        let mut bytes = ptb_bytes();
        bytes[12..14].copy_from_slice(&4u16.to_be_bytes()); // quoted payload length cuts the chain
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap().embedded(),
            Err(Error::TruncatedExtHeader)
        );
    }

    #[test]
    fn test_truncation() {
        for (bytes, min) in [(&PACKET_BYTES[..], NDP_LEN), (&ptb_bytes()[..], HEADER_LEN)] {
            for len in 0..=bytes.len() {
                match Packet::new_checked(&bytes[..len]) {
                    Ok(packet) => {
                        assert!(len >= min);
                        let _ = (packet.target_addr(), packet.source_lladdr(), packet.data());
                        if let Ok(inner) = packet.embedded() {
                            assert_eq!(len, 64);
                            assert_eq!(inner.dst_port(), 443);
                        }
                        let _ = Repr::parse(&client(), &ours(), &packet);
                    }
                    Err(e) => {
                        assert!(len < min);
                        assert_eq!(e, Error::Truncated);
                    }
                }
            }
        }
    }

    fn arb_mac() -> impl Strategy<Value = Option<EthernetAddress>> {
        proptest::option::of(any::<[u8; 6]>().prop_map(EthernetAddress))
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            kind in 0u8..7, a in any::<u16>(), b in any::<u16>(), code in any::<u8>(),
            mtu in any::<u32>(), target in any::<[u8; 16]>(), mac in arb_mac(), flags in 0u8..8,
            data in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        ) {
            let target_addr = Ipv6Addr::from(target);
            let repr = match kind {
                0 => Repr::EchoRequest { ident: a, seq_no: b, data: &data },
                1 => Repr::EchoReply { ident: a, seq_no: b, data: &data },
                2 => Repr::DstUnreachable { code, quote: &data },
                3 => Repr::PktTooBig { mtu, quote: &data },
                4 => Repr::TimeExceeded { code, quote: &data },
                5 => Repr::NeighborSolicit { target_addr, source_lladdr: mac },
                _ => Repr::NeighborAdvert { flags: NdpFlags(flags << 5), target_addr, target_lladdr: mac },
            };
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&src, &dst, &mut Packet::new_unchecked(&mut bytes[..]));
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(Repr::parse(&src, &dst, &packet), Ok(repr));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            ty in prop_oneof![Just(1u8), Just(2), Just(3), Just(128), Just(135), Just(136), any::<u8>()],
            mut bytes in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            if let Some(b) = bytes.first_mut() {
                *b = ty;
            }
            if let Some(b) = bytes.get_mut(8) {
                *b = 0x60 | (*b & 0x0f);
            }
            if let Ok(packet) = Packet::new_checked(&bytes[..]) {
                let _ = (packet.target_addr(), packet.mtu(), packet.ndp_flags(), packet.data());
                let _ = (packet.source_lladdr(), packet.target_lladdr());
                for option in packet.ndp_options() {
                    let _ = option.map(|o| o.lladdr());
                }
                let _ = Repr::parse(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST, &packet);
                if let Ok(inner) = packet.embedded() {
                    prop_assert_eq!(inner.l4_header().len(), 8);
                    let _ = (inner.src_addr(), inner.dst_addr(), inner.src_port(), inner.dst_port());
                }
            }
        }
    }
}
