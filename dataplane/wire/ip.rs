//! IP protocol numbers, shared by the IPv4 protocol field, the IPv6 next-header chain and GUE.

use core::fmt;

/// An IANA protocol number (IPv4 `protocol`, IPv6 `next header`).
///
/// A newtype rather than an enum so that every byte value is representable without a fallible
/// conversion; the associated constants work in `match` patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: Self = Self(0);
    /// ICMP for IPv4.
    pub const ICMP: Self = Self(1);
    /// IPv4 in IP (IPIP).
    pub const IPV4: Self = Self(4);
    /// TCP.
    pub const TCP: Self = Self(6);
    /// UDP.
    pub const UDP: Self = Self(17);
    /// IPv6 in IP.
    pub const IPV6: Self = Self(41);
    /// IPv6 routing header.
    pub const IPV6_ROUTING: Self = Self(43);
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: Self = Self(44);
    /// GRE.
    pub const GRE: Self = Self(47);
    /// IPsec encapsulating security payload.
    pub const ESP: Self = Self(50);
    /// IPsec authentication header.
    pub const AH: Self = Self(51);
    /// ICMP for IPv6.
    pub const ICMPV6: Self = Self(58);
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT_HEADER: Self = Self(59);
    /// IPv6 destination options.
    pub const IPV6_DEST_OPTS: Self = Self(60);
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(value: u8) -> Self {
        Self(value)
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(value: IpProtocol) -> Self {
        value.0
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::HOP_BY_HOP => "hop-by-hop",
            Self::ICMP => "icmp",
            Self::IPV4 => "ipip",
            Self::TCP => "tcp",
            Self::UDP => "udp",
            Self::IPV6 => "ipv6",
            Self::IPV6_ROUTING => "ipv6-route",
            Self::IPV6_FRAGMENT => "ipv6-frag",
            Self::GRE => "gre",
            Self::ESP => "esp",
            Self::AH => "ah",
            Self::ICMPV6 => "icmpv6",
            Self::IPV6_NO_NEXT_HEADER => "ipv6-nonxt",
            Self::IPV6_DEST_OPTS => "ipv6-opts",
            Self(n) => return write!(f, "proto-{n}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_match() {
        assert_eq!(IpProtocol::TCP.to_string(), "tcp");
        assert_eq!(IpProtocol(253).to_string(), "proto-253");
        assert!(matches!(IpProtocol::from(17), IpProtocol::UDP));
        assert_eq!(u8::from(IpProtocol::ICMPV6), 58);
    }
}
