//! Flow keys (the client → VIP 5-tuple) and the flow hash.
//!
//! Keys are stored as whole `u64` words with zeroed padding, so equality is a couple of word
//! compares and hashing reads the words directly. IPv4 and IPv6 are separate types: an IPv4 key is
//! 16 bytes (its table entry 32), an IPv6 key 40 bytes (its entry one 64-byte line).
//!
//! The hash is a wyhash-style multiply–fold: every 64-bit input word is xored with a constant and
//! multiplied 64 × 64 → 128, and the two halves are folded with xor. It is deterministic (no
//! `RandomState`): the same key and seed give the same hash on every worker, every boot and every
//! appliance, which the scheduler needs. It is not keyed against an attacker who knows the seed.

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Seed used by [`FlowKeyV4::hash`] / [`FlowKeyV6::hash`] (the flow-table and encap hash).
pub const DEFAULT_SEED: u64 = 0x2d35_8dcc_aa6c_78a5;

// wyhash's default secret: odd 64-bit constants with balanced bits.
const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;

/// 64 × 64 → 128-bit multiply, halves folded with xor (wyhash's `mum`).
#[inline(always)]
#[must_use]
pub fn mix64(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    low64(r) ^ low64(r >> 64)
}

/// Hashes a slice of 64-bit words with `seed`; for callers (the scheduler) that hash something
/// other than a full 5-tuple, e.g. only the source address for `ip_hash`.
///
/// Words are consumed in pairs; the word count is mixed in, so `[x]` and `[x, 0]` differ.
#[inline]
#[must_use]
pub fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed ^ P0;
    let mut pairs = words.chunks_exact(2);
    for pair in &mut pairs {
        h = mix64(pair[0] ^ P1, pair[1] ^ h);
    }
    if let [last] = pairs.remainder() {
        h = mix64(*last ^ P2, h ^ P3);
    }
    finish(h, words.len() as u64)
}

#[inline(always)]
fn finish(h: u64, len: u64) -> u64 {
    mix64(h ^ P1, len ^ P2 ^ (h >> 29))
}

/// Folds a 64-bit hash to the 32 bits the flow table takes.
#[inline(always)]
#[must_use]
pub fn fold32(h: u64) -> u32 {
    field32(h ^ (h >> 32), 0)
}

// Bit-field extraction from packed words: the truncating casts are the point.
#[allow(clippy::cast_possible_truncation)]
const fn low64(x: u128) -> u64 {
    x as u64
}

#[allow(clippy::cast_possible_truncation)]
const fn field32(word: u64, shift: u32) -> u32 {
    (word >> shift) as u32
}

#[allow(clippy::cast_possible_truncation)]
const fn field16(word: u64, shift: u32) -> u16 {
    (word >> shift) as u16
}

#[allow(clippy::cast_possible_truncation)]
const fn field8(word: u64, shift: u32) -> u8 {
    (word >> shift) as u8
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A zero-sized type whose only job is its alignment (see [`FlowKey::EntryAlign`]).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub struct Align32;

/// A zero-sized type whose only job is its alignment (see [`FlowKey::EntryAlign`]).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub struct Align64;

/// A flow key one [`FlowTable`](super::FlowTable) can hold: [`FlowKeyV4`] or [`FlowKeyV6`].
///
/// Sealed: the table's layout guarantees (entry size, no line crossing) are checked for these two.
pub trait FlowKey: sealed::Sealed + Copy + Eq + fmt::Debug + 'static {
    /// The all-zero key that fills empty ways (never compared: empty ways have tag 0).
    const EMPTY: Self;
    /// Alignment of a table entry holding this key, chosen so that an entry never straddles a
    /// cache line: 32 bytes for IPv4 (two entries per line), 64 for IPv6.
    type EntryAlign: Copy + fmt::Debug + Default + 'static;
    /// IP protocol number (6 = TCP, 17 = UDP, …).
    fn proto(&self) -> u8;
    /// 32-bit flow hash with [`DEFAULT_SEED`]; what [`FlowTable`](super::FlowTable) takes.
    fn hash(&self) -> u32;
    /// 64-bit hash with an arbitrary seed (schedulers, encap source-port selection).
    fn hash_seeded(&self, seed: u64) -> u64;
}

/// IPv4 5-tuple, in the client → VIP direction. 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKeyV4 {
    /// `src << 32 | dst`, addresses as big-endian integers.
    addrs: u64,
    /// `sport << 48 | dport << 32 | proto`; the rest is zero.
    ports: u64,
}

impl FlowKeyV4 {
    /// Builds a key from the 5-tuple.
    #[inline]
    #[must_use]
    pub const fn new(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> Self {
        Self::from_bits(src.to_bits(), dst.to_bits(), sport, dport, proto)
    }

    /// Builds a key from addresses as host-order integers (`u32::from_be_bytes(header bytes)`).
    #[inline]
    #[must_use]
    pub const fn from_bits(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            addrs: (src as u64) << 32 | dst as u64,
            ports: (sport as u64) << 48 | (dport as u64) << 32 | proto as u64,
        }
    }

    /// Source address.
    #[inline]
    #[must_use]
    pub const fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(field32(self.addrs, 32))
    }

    /// Destination (VIP) address.
    #[inline]
    #[must_use]
    pub const fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(field32(self.addrs, 0))
    }

    /// Source port.
    #[inline]
    #[must_use]
    pub const fn sport(&self) -> u16 {
        field16(self.ports, 48)
    }

    /// Destination port.
    #[inline]
    #[must_use]
    pub const fn dport(&self) -> u16 {
        field16(self.ports, 32)
    }

    /// IP protocol number.
    #[inline]
    #[must_use]
    pub const fn proto(&self) -> u8 {
        field8(self.ports, 0)
    }

    /// 64-bit hash with `seed`.
    #[inline]
    #[must_use]
    pub fn hash_seeded(&self, seed: u64) -> u64 {
        let h = mix64(self.addrs ^ seed ^ P0, self.ports ^ P1);
        finish(h, 2)
    }

    /// 32-bit flow hash with [`DEFAULT_SEED`].
    #[inline]
    #[must_use]
    pub fn hash(&self) -> u32 {
        fold32(self.hash_seeded(DEFAULT_SEED))
    }
}

impl sealed::Sealed for FlowKeyV4 {}

impl FlowKey for FlowKeyV4 {
    const EMPTY: Self = Self { addrs: 0, ports: 0 };
    type EntryAlign = Align32;

    #[inline(always)]
    fn proto(&self) -> u8 {
        Self::proto(self)
    }

    #[inline(always)]
    fn hash(&self) -> u32 {
        Self::hash(self)
    }

    #[inline(always)]
    fn hash_seeded(&self, seed: u64) -> u64 {
        Self::hash_seeded(self, seed)
    }
}

impl fmt::Debug for FlowKeyV4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} -> {}:{} proto {}",
            self.src(),
            self.sport(),
            self.dst(),
            self.dport(),
            self.proto()
        )
    }
}

/// IPv6 5-tuple, in the client → VIP direction. 40 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKeyV6 {
    /// Source high/low, destination high/low (big-endian integers), then
    /// `sport << 48 | dport << 32 | proto`.
    words: [u64; 5],
}

impl FlowKeyV6 {
    /// Builds a key from the 5-tuple.
    #[inline]
    #[must_use]
    pub const fn new(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, proto: u8) -> Self {
        Self::from_bits(src.to_bits(), dst.to_bits(), sport, dport, proto)
    }

    /// Builds a key from addresses as host-order integers (`u128::from_be_bytes(header bytes)`).
    #[inline]
    #[must_use]
    pub const fn from_bits(src: u128, dst: u128, sport: u16, dport: u16, proto: u8) -> Self {
        Self {
            words: [
                low64(src >> 64),
                low64(src),
                low64(dst >> 64),
                low64(dst),
                (sport as u64) << 48 | (dport as u64) << 32 | proto as u64,
            ],
        }
    }

    /// Source address.
    #[inline]
    #[must_use]
    pub const fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits((self.words[0] as u128) << 64 | self.words[1] as u128)
    }

    /// Destination (VIP) address.
    #[inline]
    #[must_use]
    pub const fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits((self.words[2] as u128) << 64 | self.words[3] as u128)
    }

    /// Source port.
    #[inline]
    #[must_use]
    pub const fn sport(&self) -> u16 {
        field16(self.words[4], 48)
    }

    /// Destination port.
    #[inline]
    #[must_use]
    pub const fn dport(&self) -> u16 {
        field16(self.words[4], 32)
    }

    /// IP protocol number.
    #[inline]
    #[must_use]
    pub const fn proto(&self) -> u8 {
        field8(self.words[4], 0)
    }

    /// 64-bit hash with `seed`.
    #[inline]
    #[must_use]
    pub fn hash_seeded(&self, seed: u64) -> u64 {
        let [s0, s1, d0, d1, ports] = self.words;
        // Two independent multiplies, so they overlap in the pipeline.
        let a = mix64(s0 ^ seed ^ P0, s1 ^ P1);
        let b = mix64(d0 ^ P2, d1 ^ P3);
        let h = mix64(a ^ ports ^ P1, b ^ seed);
        finish(h, 5)
    }

    /// 32-bit flow hash with [`DEFAULT_SEED`].
    #[inline]
    #[must_use]
    pub fn hash(&self) -> u32 {
        fold32(self.hash_seeded(DEFAULT_SEED))
    }
}

impl sealed::Sealed for FlowKeyV6 {}

impl FlowKey for FlowKeyV6 {
    const EMPTY: Self = Self { words: [0; 5] };
    type EntryAlign = Align64;

    #[inline(always)]
    fn proto(&self) -> u8 {
        Self::proto(self)
    }

    #[inline(always)]
    fn hash(&self) -> u32 {
        Self::hash(self)
    }

    #[inline(always)]
    fn hash_seeded(&self, seed: u64) -> u64 {
        Self::hash_seeded(self, seed)
    }
}

impl fmt::Debug for FlowKeyV6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}]:{} -> [{}]:{} proto {}",
            self.src(),
            self.sport(),
            self.dst(),
            self.dport(),
            self.proto()
        )
    }
}
