//! The internet checksum (RFC 1071), pseudo-header sums, and incremental updates (RFC 1624).
//!
//! A checksum is built in three steps: [`sum`] the bytes (and a pseudo-header, if the protocol
//! has one) into a wide, unfolded accumulator; [`fold`] it to 16 bits; complement it. Partial sums
//! of several buffers can be added as `u64` before folding, as long as every buffer but the last
//! has an even length (an odd tail is padded with a zero byte). A buffer that contains its own
//! correct checksum folds to `0xffff`, which is what [`verify`] checks.
//!
//! When a load balancer rewrites one field it should not re-read the whole packet: [`update16`],
//! [`update32`] and [`update_bytes`] adjust an existing checksum for the change (RFC 1624 eqn. 3).
//! UDP is special: a zero checksum means "none" and must stay zero, and a computed zero is sent
//! as `0xffff`; the UDP view handles both.

use super::ip::IpProtocol;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The unfolded one's-complement sum of `data` read as big-endian 16-bit words.
///
/// Sums 32-bit words into a 64-bit accumulator (equivalent after folding, and the loop
/// vectorizes). Cannot overflow for any buffer under 16 GiB.
#[must_use]
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) << 8,
        _ => {}
    }
    acc
}

/// Folds a wide one's-complement sum to 16 bits (end-around carry), without complementing.
///
/// Returns 0 only when `sum` is 0.
#[must_use]
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    // Truncation intended: four folds leave at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    folded
}

/// The internet checksum of `data`: the complement of its folded sum.
#[must_use]
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// The checksum to write into a header whose bytes (with the checksum field zeroed) and
/// pseudo-header add up to `sum`.
#[must_use]
#[inline]
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Whether bytes that include their own checksum field (plus any pseudo-header) verify.
#[must_use]
#[inline]
pub fn verify(sum: u64) -> bool {
    fold(sum) == 0xffff
}

/// The sum of the IPv4 pseudo-header: addresses, protocol and upper-layer length.
#[must_use]
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, protocol: IpProtocol, len: u32) -> u64 {
    u64::from(u32::from(*src)) + u64::from(u32::from(*dst)) + u64::from(protocol.0) + u64::from(len)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
#[must_use]
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: IpProtocol, len: u32) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(len) + u64::from(next_header.0)
}

/// Adjusts `check` for a 16-bit field changing from `old` to `new` (RFC 1624 eqn. 3).
#[must_use]
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// Adjusts `check` for a 32-bit field (an IPv4 address, a sequence number) changing.
#[must_use]
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let [o0, o1, o2, o3] = old.to_be_bytes();
    let [n0, n1, n2, n3] = new.to_be_bytes();
    !fold(
        u64::from(!check)
            + u64::from(!u16::from_be_bytes([o0, o1]))
            + u64::from(!u16::from_be_bytes([o2, o3]))
            + u64::from(u16::from_be_bytes([n0, n1]))
            + u64::from(u16::from_be_bytes([n2, n3])),
    )
}

/// Adjusts `check` for a field of any even length (an IPv6 address) changing from `old` to `new`.
///
/// The two slices must be the same field: same length, and starting at an even offset.
#[must_use]
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    !fold(u64::from(!check) + u64::from(!fold(sum(old))) + sum(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain RFC 1071 reference: 16-bit words, folded at the end.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !u16::try_from(acc).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum() {
        // A real IPv4 header whose checksum field (b861) is correct.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(sum(&header)));
        let mut zeroed = header;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    #[test]
    fn odd_lengths_and_empty() {
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(checksum(&[0xab]), reference(&[0xab]));
        assert_eq!(checksum(&[1, 2, 3]), reference(&[1, 2, 3]));
    }

    #[test]
    fn pseudo_headers() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let bytes = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20];
        assert_eq!(
            fold(pseudo_header_v4(&src, &dst, IpProtocol::TCP, 20)),
            fold(sum(&bytes))
        );

        let src6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut bytes6 = [0u8; 40];
        bytes6[..16].copy_from_slice(&src6.octets());
        bytes6[16..32].copy_from_slice(&dst6.octets());
        bytes6[32..36].copy_from_slice(&1000u32.to_be_bytes());
        bytes6[39] = 17;
        assert_eq!(
            fold(pseudo_header_v6(&src6, &dst6, IpProtocol::UDP, 1000)),
            fold(sum(&bytes6))
        );
    }

    /// A recomputed and an updated checksum must agree, up to the two zeros of one's complement.
    fn same_checksum(a: u16, b: u16) -> bool {
        a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn split_sums_combine(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            let (a, b) = data.split_at(cut);
            prop_assert_eq!(finish(sum(a) + sum(b)), checksum(&data));
        }

        #[test]
        fn incremental_updates_match_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 24..64),
            new16 in any::<u16>(),
            new32 in any::<u32>(),
            new_bytes in any::<[u8; 16]>(),
        ) {
            // Bytes 0..2 hold the checksum; fields at 2..4, 4..8, 8..24.
            data[0] = 0;
            data[1] = 0;
            let check = checksum(&data);

            let old16 = u16::from_be_bytes([data[2], data[3]]);
            data[2..4].copy_from_slice(&new16.to_be_bytes());
            let check = update16(check, old16, new16);
            prop_assert!(same_checksum(check, checksum(&data)));

            let old32 = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            data[4..8].copy_from_slice(&new32.to_be_bytes());
            let check = update32(check, old32, new32);
            prop_assert!(same_checksum(check, checksum(&data)));

            let mut old = [0u8; 16];
            old.copy_from_slice(&data[8..24]);
            data[8..24].copy_from_slice(&new_bytes);
            let check = update_bytes(check, &old, &new_bytes);
            prop_assert!(same_checksum(check, checksum(&data)));

            data[0..2].copy_from_slice(&check.to_be_bytes());
            prop_assert!(verify(sum(&data)));
        }
    }
}
