//! Flat longest-prefix-match tables: multibit tries with a 16-bit root and 8-bit strides, stored
//! as one `u32` array with no pointers, so a table can live in shared memory as it is.
//!
//! The control plane's compiler builds a table (geo routing by source prefix, up to millions of
//! prefixes) with [`build_v4`] / [`build_v6`] or an [`LpmBuilder`]; the data plane answers
//! [`lookup_v4`] / [`lookup_v6`] per packet.
//!
//! # Layout
//!
//! ```text
//! table[0 .. 65536]                root: indexed by the top 16 bits of the address
//! table[65536 + 256·g .. + 256]    group g: indexed by the next 8 bits below its parent's
//! ```
//!
//! IPv4 uses strides 16-8-8 (root, then at most two groups: at most 3 reads); IPv6 uses 16
//! then fourteen 8-bit strides (16 + 14·8 = 128: at most 15 reads). The table length is always
//! `65536 + 256·groups`. IPv4 and IPv6 tables have the same layout but are separate tables.
//!
//! # Entry encoding
//!
//! ```text
//! bit 31      = 1: bits 0..=30 are a child group number g (< groups)
//! bit 31      = 0: bits 0..=30 are the value; 0 means "no match"
//! ```
//!
//! Values are the caller's (the compiler stores region index + 1), at most [`MAX_VALUE`]
//! (2^31 − 1). A prefix may carry value 0: it then carves "no match" out of a shorter prefix.
//! Controlled prefix expansion pushes every prefix's value into all the entries it covers,
//! including the entries of child groups created under it by longer prefixes, so a lookup reads
//! one entry per level and stops at the first entry without the child flag.
//!
//! # Limits
//!
//! Group numbers have 31 bits, but the practical bound is memory: every group costs 1 KiB. An
//! IPv4 table needs at most one group per /16 holding a longer prefix plus one per /24 holding a
//! prefix longer than /24; an IPv6 prefix of length L can create up to ⌈(L − 16) / 8⌉ groups.
//! The builder refuses to grow past [`LpmBuilder::max_groups`] (default [`DEFAULT_MAX_GROUPS`],
//! a 256 MiB table) rather than exhaust memory.
//!
//! # Trust
//!
//! The data plane reads tables from shared memory, so lookups treat the table as untrusted: any
//! `&[u32]` at all (truncated, garbage, cyclic) makes them return some value or 0, never panic,
//! never loop (they read at most 3 or 15 entries). [`validate_v4`] / [`validate_v6`] check the
//! whole structure once, at attach, for a table whose answers can be trusted.

use std::fmt;

/// Entries in the root (level 0), indexed by the top 16 bits of the address.
pub const ROOT_ENTRIES: usize = 1 << 16;
/// Entries in one child group (an 8-bit stride).
pub const GROUP_ENTRIES: usize = 1 << 8;
/// Set in an entry that points to a child group.
pub const CHILD: u32 = 1 << 31;
/// Largest value a prefix may carry (31 bits).
pub const MAX_VALUE: u32 = CHILD - 1;
/// Value of an entry no prefix covers.
pub const NO_MATCH: u32 = 0;
/// Default bound on child groups: 2^18 groups, a 256 MiB table.
pub const DEFAULT_MAX_GROUPS: u32 = 1 << 18;

/// Child levels below the root: 2 for IPv4 (16-8-8), 14 for IPv6 (16 + 14·8).
const V4_CHILD_LEVELS: usize = 2;
const V6_CHILD_LEVELS: usize = 14;

/// Why a table could not be built, or why a table failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LpmError {
    /// A prefix length beyond the address width (32 or 128).
    PrefixLength { len: u8, max: u8 },
    /// A value above [`MAX_VALUE`].
    Value { value: u32 },
    /// Building needed more child groups than allowed.
    TooManyGroups { limit: u32 },
    /// Validation: the length is not `65536 + 256·groups`.
    TableLength { len: usize },
    /// Validation: the entry at `entry` names a group that does not exist.
    ChildOutOfRange { entry: usize, group: u32 },
    /// Validation: a group is referenced twice (shared or cyclic), or from the deepest level.
    BadChild { entry: usize, group: u32 },
    /// Validation: no entry references this group.
    UnreachableGroup { group: u32 },
}

impl fmt::Display for LpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PrefixLength { len, max } => {
                write!(f, "prefix length /{len} is longer than /{max}")
            }
            Self::Value { value } => {
                write!(
                    f,
                    "prefix value {value} is larger than the maximum {MAX_VALUE}"
                )
            }
            Self::TooManyGroups { limit } => write!(
                f,
                "prefix table needs more than {limit} groups of {GROUP_ENTRIES} entries"
            ),
            Self::TableLength { len } => write!(
                f,
                "table of {len} entries is not {ROOT_ENTRIES} + a multiple of {GROUP_ENTRIES}"
            ),
            Self::ChildOutOfRange { entry, group } => {
                write!(f, "entry {entry} points to missing group {group}")
            }
            Self::BadChild { entry, group } => {
                write!(
                    f,
                    "entry {entry} points to group {group}, which is not a fresh child"
                )
            }
            Self::UnreachableGroup { group } => write!(f, "group {group} is unreachable"),
        }
    }
}

impl std::error::Error for LpmError {}

/// Longest-prefix match of an IPv4 address (host order) in a table built by [`build_v4`].
///
/// Returns the value of the longest prefix containing `addr`, or [`NO_MATCH`]. Any table is
/// accepted: a corrupt one yields a wrong answer or [`NO_MATCH`], never a panic. At most 3 reads.
#[inline]
#[must_use]
pub fn lookup_v4(table: &[u32], addr: u32) -> u32 {
    let Some(&entry) = table.get((addr >> 16) as usize) else {
        return NO_MATCH;
    };
    if entry & CHILD == 0 {
        return entry;
    }
    let Some(&entry) = table.get(group_base(entry) | ((addr >> 8) & 0xff) as usize) else {
        return NO_MATCH;
    };
    if entry & CHILD == 0 {
        return entry;
    }
    match table.get(group_base(entry) | (addr & 0xff) as usize) {
        Some(&entry) if entry & CHILD == 0 => entry,
        _ => NO_MATCH,
    }
}

/// Longest-prefix match of an IPv6 address (host order) in a table built by [`build_v6`].
///
/// Returns the value of the longest prefix containing `addr`, or [`NO_MATCH`]. Any table is
/// accepted: a corrupt one yields a wrong answer or [`NO_MATCH`], never a panic. At most 15 reads.
#[inline]
#[must_use]
#[allow(clippy::cast_possible_truncation)] // every index is masked or shifted to <= 16 bits
pub fn lookup_v6(table: &[u32], addr: u128) -> u32 {
    let Some(&first) = table.get((addr >> 112) as usize) else {
        return NO_MATCH;
    };
    let mut entry = first;
    let mut shift = 112;
    for _ in 0..V6_CHILD_LEVELS {
        if entry & CHILD == 0 {
            return entry;
        }
        shift -= 8;
        let byte = ((addr >> shift) & 0xff) as usize;
        entry = match table.get(group_base(entry) | byte) {
            Some(&e) => e,
            None => return NO_MATCH,
        };
    }
    if entry & CHILD == 0 {
        entry
    } else {
        NO_MATCH
    }
}

/// Index of the first entry of the group a child entry points to. The group number has 31 bits,
/// so on 64-bit targets this cannot wrap; `wrapping_add` keeps it panic-free everywhere. The
/// result is a multiple of 256, so the caller can `|` the byte in.
#[inline]
fn group_base(entry: u32) -> usize {
    (((entry & MAX_VALUE) as usize) << 8).wrapping_add(ROOT_ENTRIES)
}

/// Builds an IPv4 table with the default limits. `prefixes` are `(address, length, value)` with
/// the address in host order; see [`LpmBuilder::build_v4`].
///
/// # Errors
///
/// See [`LpmBuilder::build_v4`].
pub fn build_v4(prefixes: &[(u32, u8, u32)]) -> Result<Vec<u32>, LpmError> {
    LpmBuilder::new().build_v4(prefixes)
}

/// Builds an IPv6 table with the default limits; see [`LpmBuilder::build_v6`].
///
/// # Errors
///
/// See [`LpmBuilder::build_v6`].
pub fn build_v6(prefixes: &[(u128, u8, u32)]) -> Result<Vec<u32>, LpmError> {
    LpmBuilder::new().build_v6(prefixes)
}

/// Builds LPM tables; holds the limits.
///
/// Prefix semantics, for both families:
/// - the longest prefix containing an address wins; `/0` is the default route, `/32` and `/128`
///   host routes;
/// - address bits beyond the prefix length are ignored (`10.1.2.3/16` is `10.1.0.0/16`);
/// - when the same prefix appears more than once, the **last** occurrence wins, so a compiler can
///   layer overrides by appending;
/// - value 0 is allowed and means "no match" for that prefix (a carve-out).
///
/// Building sorts the prefixes by length and expands each into the entries it covers, shortest
/// first, so a longer prefix simply overwrites what a shorter one wrote: `O(P log P)` plus the
/// entries written. A million IPv4 prefixes build in well under a second in release.
#[derive(Clone, Debug)]
pub struct LpmBuilder {
    max_groups: u32,
}

impl Default for LpmBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LpmBuilder {
    /// A builder with [`DEFAULT_MAX_GROUPS`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_groups: DEFAULT_MAX_GROUPS,
        }
    }

    /// Bounds the number of child groups (1 KiB each); capped at 2^31 by the encoding.
    #[must_use]
    pub fn max_groups(mut self, max_groups: u32) -> Self {
        self.max_groups = max_groups.min(CHILD);
        self
    }

    /// Builds an IPv4 table from `(address in host order, length, value)`.
    ///
    /// # Errors
    ///
    /// [`LpmError::PrefixLength`] for a length above 32, [`LpmError::Value`] for a value above
    /// [`MAX_VALUE`], [`LpmError::TooManyGroups`] past the group limit.
    pub fn build_v4(&self, prefixes: &[(u32, u8, u32)]) -> Result<Vec<u32>, LpmError> {
        let prefixes = prefixes
            .iter()
            .map(|&(addr, len, value)| (u128::from(addr) << 96, len, value));
        self.build(prefixes, 32)
    }

    /// Builds an IPv6 table from `(address in host order, length, value)`.
    ///
    /// # Errors
    ///
    /// As [`LpmBuilder::build_v4`], with lengths up to 128.
    pub fn build_v6(&self, prefixes: &[(u128, u8, u32)]) -> Result<Vec<u32>, LpmError> {
        self.build(prefixes.iter().copied(), 128)
    }

    /// Builds a table over addresses of `width` bits, given left-aligned in a `u128`.
    fn build(
        &self,
        prefixes: impl ExactSizeIterator<Item = (u128, u8, u32)>,
        width: u8,
    ) -> Result<Vec<u32>, LpmError> {
        let mut sorted: Vec<Prefix> = Vec::with_capacity(prefixes.len());
        for (addr, len, value) in prefixes {
            if len > width {
                return Err(LpmError::PrefixLength { len, max: width });
            }
            if value > MAX_VALUE {
                return Err(LpmError::Value { value });
            }
            sorted.push(Prefix {
                len,
                addr: addr & prefix_mask(len),
                value,
            });
        }
        // Stable: among duplicates the input order survives, and the last one is kept below.
        sorted.sort_by_key(|p| (p.len, p.addr));

        let mut trie = Trie {
            entries: vec![NO_MATCH; ROOT_ENTRIES],
            groups: 0,
            max_groups: self.max_groups,
        };
        for (i, p) in sorted.iter().enumerate() {
            let superseded = sorted
                .get(i + 1)
                .is_some_and(|next| (next.len, next.addr) == (p.len, p.addr));
            if !superseded {
                trie.insert(p)?;
            }
        }
        Ok(trie.entries)
    }
}

/// A normalised prefix, its address left-aligned in 128 bits.
#[derive(Clone, Copy)]
struct Prefix {
    len: u8,
    addr: u128,
    value: u32,
}

/// Mask of the top `len` bits of a `u128`.
fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// The table under construction.
struct Trie {
    entries: Vec<u32>,
    groups: u32,
    max_groups: u32,
}

impl Trie {
    /// Writes `p` into every entry it covers. Prefixes arrive shortest first, so every entry in
    /// the covered range holds a value (children only come from longer prefixes, inserted
    /// later) and is simply overwritten: the longer prefix wins.
    fn insert(&mut self, p: &Prefix) -> Result<(), LpmError> {
        let len = u32::from(p.len);
        // Bits consumed so far, the entry range at the current level, and its first index.
        let mut consumed = 16;
        let mut index = top_bits(p.addr, 0, 16);
        let mut level_base = 0;
        while len > consumed {
            let child = self.child_of(level_base + index)?;
            level_base = ROOT_ENTRIES + child * GROUP_ENTRIES;
            index = top_bits(p.addr, consumed, 8);
            consumed += 8;
        }
        // The prefix covers 2^(consumed − len) consecutive entries of this level.
        let first = level_base + index;
        let span = 1usize << (consumed - len);
        self.entries[first..first + span].fill(p.value);
        Ok(())
    }

    /// The group under entry `at`, creating it (every entry inheriting `at`'s value) if `at`
    /// holds a value.
    fn child_of(&mut self, at: usize) -> Result<usize, LpmError> {
        let entry = self.entries[at];
        if entry & CHILD != 0 {
            return Ok((entry & MAX_VALUE) as usize);
        }
        if self.groups >= self.max_groups {
            return Err(LpmError::TooManyGroups {
                limit: self.max_groups,
            });
        }
        let group = self.groups;
        self.groups += 1;
        self.entries
            .resize(self.entries.len() + GROUP_ENTRIES, entry);
        self.entries[at] = CHILD | group;
        Ok(group as usize)
    }
}

/// `count` bits of `addr` (left-aligned) starting `skip` bits from the top, as an index.
fn top_bits(addr: u128, skip: u32, count: u32) -> usize {
    let bits = (addr << skip) >> (128 - count);
    // count <= 16, so the value fits any usize.
    usize::try_from(bits).unwrap_or(0)
}

/// Checks that `table` is a well-formed IPv4 table: the length is `65536 + 256·groups`, every
/// group is the child of exactly one entry, and no child hangs below the third level. A table
/// that passes answers every lookup from its own entries; one that fails still never makes a
/// lookup panic.
///
/// # Errors
///
/// The first defect found, as an [`LpmError`].
pub fn validate_v4(table: &[u32]) -> Result<(), LpmError> {
    validate(table, V4_CHILD_LEVELS)
}

/// Checks that `table` is a well-formed IPv6 table; see [`validate_v4`] (fifteen levels).
///
/// # Errors
///
/// The first defect found, as an [`LpmError`].
pub fn validate_v6(table: &[u32]) -> Result<(), LpmError> {
    validate(table, V6_CHILD_LEVELS)
}

fn validate(table: &[u32], child_levels: usize) -> Result<(), LpmError> {
    let len = table.len();
    if len < ROOT_ENTRIES || !(len - ROOT_ENTRIES).is_multiple_of(GROUP_ENTRIES) {
        return Err(LpmError::TableLength { len });
    }
    let groups = (len - ROOT_ENTRIES) / GROUP_ENTRIES;
    let mut seen = vec![false; groups];
    // Breadth first, one level at a time: (first entry, entry count) ranges of the level.
    let mut level: Vec<(usize, usize)> = vec![(0, ROOT_ENTRIES)];
    for depth in 0..=child_levels {
        let mut next = Vec::new();
        for &(first, count) in &level {
            for (entry, &value) in table.iter().enumerate().skip(first).take(count) {
                if value & CHILD == 0 {
                    continue;
                }
                let group = value & MAX_VALUE;
                let g = group as usize;
                if g >= groups {
                    return Err(LpmError::ChildOutOfRange { entry, group });
                }
                if depth == child_levels || seen[g] {
                    return Err(LpmError::BadChild { entry, group });
                }
                seen[g] = true;
                next.push((ROOT_ENTRIES + g * GROUP_ENTRIES, GROUP_ENTRIES));
            }
        }
        level = next;
    }
    if let Some(g) = seen.iter().position(|&s| !s) {
        return Err(LpmError::UnreachableGroup {
            group: u32::try_from(g).unwrap_or(u32::MAX),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test generators slice random words on purpose
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
    }

    /// The reference: scan every prefix, keep the longest match (the last one among equals).
    fn naive(prefixes: &[(u128, u8, u32)], width: u8, addr: u128) -> u32 {
        let mut best: Option<(u8, u32)> = None;
        for &(p, len, value) in prefixes {
            let shift = 128 - u32::from(width);
            let mask = prefix_mask(len);
            if ((p << shift) & mask) != ((addr << shift) & mask) {
                continue;
            }
            match best {
                Some((l, _)) if l > len => {}
                _ => best = Some((len, value)),
            }
        }
        best.map_or(NO_MATCH, |(_, v)| v)
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t = build_v4(&[]).unwrap();
        assert_eq!(t.len(), ROOT_ENTRIES);
        assert_eq!(lookup_v4(&t, v4("10.0.0.1")), NO_MATCH);
        validate_v4(&t).unwrap();
        let t = build_v6(&[]).unwrap();
        assert_eq!(lookup_v6(&t, v6("2001:db8::1")), NO_MATCH);
        validate_v6(&t).unwrap();
    }

    #[test]
    fn nested_default_and_host_routes_v4() {
        let t = build_v4(&[
            (0, 0, 1),                      // default
            (v4("10.0.0.0"), 8, 2),         // 10/8
            (v4("10.1.0.0"), 16, 3),        // 10.1/16
            (v4("10.1.2.0"), 24, 4),        // 10.1.2/24
            (v4("10.1.2.128"), 25, 5),      // 10.1.2.128/25
            (v4("10.1.2.200"), 32, 6),      // host
            (v4("10.1.0.0"), 20, 7),        // 10.1.0/20, longer than /16 and beside /24
            (v4("255.255.255.255"), 32, 8), // last address
        ])
        .unwrap();
        validate_v4(&t).unwrap();
        for (addr, want) in [
            ("192.0.2.1", 1),
            ("0.0.0.0", 1),
            ("10.200.0.1", 2),
            ("10.1.200.1", 3),
            ("10.1.15.255", 7),
            ("10.1.16.0", 3),
            ("10.1.2.1", 4),
            ("10.1.2.127", 4),
            ("10.1.2.128", 5),
            ("10.1.2.199", 5),
            ("10.1.2.200", 6),
            ("10.1.2.201", 5),
            ("255.255.255.255", 8),
            ("255.255.255.254", 1),
        ] {
            assert_eq!(lookup_v4(&t, v4(addr)), want, "{addr}");
        }
    }

    #[test]
    fn insertion_order_does_not_matter_but_duplicates_keep_the_last() {
        let a = build_v4(&[(v4("10.1.2.0"), 24, 4), (v4("10.0.0.0"), 8, 2)]).unwrap();
        let b = build_v4(&[(v4("10.0.0.0"), 8, 2), (v4("10.1.2.0"), 24, 4)]).unwrap();
        assert_eq!(a, b);
        let t = build_v4(&[
            (v4("10.0.0.0"), 8, 2),
            (v4("10.9.9.9"), 8, 3), // same prefix: host bits ignored, the last wins
        ])
        .unwrap();
        assert_eq!(lookup_v4(&t, v4("10.0.0.1")), 3);
    }

    #[test]
    fn adjacent_prefixes_do_not_bleed() {
        let t = build_v4(&[
            (v4("10.1.0.0"), 24, 1),
            (v4("10.1.1.0"), 24, 2),
            (v4("10.1.2.0"), 23, 3),
            (v4("10.1.4.0"), 31, 4),
            (v4("10.1.4.2"), 31, 5),
        ])
        .unwrap();
        for (addr, want) in [
            ("10.1.0.255", 1),
            ("10.1.1.0", 2),
            ("10.1.1.255", 2),
            ("10.1.2.0", 3),
            ("10.1.3.255", 3),
            ("10.1.4.1", 4),
            ("10.1.4.2", 5),
            ("10.1.4.4", NO_MATCH),
            ("10.0.255.255", NO_MATCH),
        ] {
            assert_eq!(lookup_v4(&t, v4(addr)), want, "{addr}");
        }
    }

    #[test]
    fn zero_value_carves_out_no_match() {
        let t = build_v4(&[(v4("10.0.0.0"), 8, 2), (v4("10.66.0.0"), 16, 0)]).unwrap();
        assert_eq!(lookup_v4(&t, v4("10.65.0.1")), 2);
        assert_eq!(lookup_v4(&t, v4("10.66.0.1")), NO_MATCH);
    }

    #[test]
    fn nested_default_and_host_routes_v6() {
        let t = build_v6(&[
            (0, 0, 1),
            (v6("2001:db8::"), 32, 2),
            (v6("2001:db8:1::"), 48, 3),
            (v6("2001:db8:1:2::"), 64, 4),
            (v6("2001:db8:1:2::7"), 128, 5),
            (v6("2001:db8:1:2::6"), 127, 6),
            (v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 128, 7),
            (v6("fe80::"), 10, 8),
        ])
        .unwrap();
        validate_v6(&t).unwrap();
        for (addr, want) in [
            ("::1", 1),
            ("2001:db8:ffff::1", 2),
            ("2001:db8:1:ffff::1", 3),
            ("2001:db8:1:2::1", 4),
            ("2001:db8:1:2::6", 6),
            ("2001:db8:1:2::7", 5),
            ("2001:db8:1:2::8", 4),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 7),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 1),
            ("febf::1", 8),
            ("fec0::1", 1),
        ] {
            assert_eq!(lookup_v6(&t, v6(addr)), want, "{addr}");
        }
    }

    #[test]
    fn rejects_bad_prefixes_and_enforces_the_group_limit() {
        assert_eq!(
            build_v4(&[(0, 33, 1)]),
            Err(LpmError::PrefixLength { len: 33, max: 32 })
        );
        assert_eq!(
            build_v6(&[(0, 129, 1)]),
            Err(LpmError::PrefixLength { len: 129, max: 128 })
        );
        assert_eq!(
            build_v4(&[(0, 8, CHILD)]),
            Err(LpmError::Value { value: CHILD })
        );
        assert!(build_v4(&[(0, 8, MAX_VALUE)]).is_ok());
        let two_groups = [(v4("10.1.2.3"), 32, 1)];
        assert!(LpmBuilder::new()
            .max_groups(2)
            .build_v4(&two_groups)
            .is_ok());
        assert_eq!(
            LpmBuilder::new().max_groups(1).build_v4(&two_groups),
            Err(LpmError::TooManyGroups { limit: 1 })
        );
        // A /128 needs all fourteen child levels.
        let host = [(v6("2001:db8::1"), 128, 1)];
        assert_eq!(
            LpmBuilder::new()
                .max_groups(14)
                .build_v6(&host)
                .unwrap()
                .len(),
            ROOT_ENTRIES + 14 * GROUP_ENTRIES
        );
        assert!(LpmBuilder::new().max_groups(13).build_v6(&host).is_err());
    }

    #[test]
    fn validation_catches_structural_defects() {
        let good = build_v4(&[(v4("10.1.2.3"), 32, 1), (v4("10.2.0.0"), 24, 2)]).unwrap();
        validate_v4(&good).unwrap();
        assert_eq!(
            validate_v4(&good[..ROOT_ENTRIES + 1]),
            Err(LpmError::TableLength {
                len: ROOT_ENTRIES + 1
            })
        );
        assert!(validate_v4(&good[..100]).is_err());

        let root = (v4("10.1.0.0") >> 16) as usize;
        let mut bad = good.clone();
        bad[root] = CHILD | 99;
        assert!(matches!(
            validate_v4(&bad),
            Err(LpmError::ChildOutOfRange { group: 99, .. })
        ));
        // Two parents for one group (the 10.2/16 group is also hung under 10.3/16).
        let mut bad = good.clone();
        bad[root + 2] = good[root + 1];
        assert!(matches!(validate_v4(&bad), Err(LpmError::BadChild { .. })));
        // A child pointer in the last IPv4 level (here back to group 0: a cycle).
        let mut bad = good.clone();
        let level1 = group_base(good[root]) + 2;
        let level2 = group_base(good[level1]) + 3;
        bad[level2] = CHILD; // points back to group 0
        assert!(matches!(validate_v4(&bad), Err(LpmError::BadChild { .. })));
        // Orphaned group.
        let mut bad = good.clone();
        bad[(v4("10.2.0.0") >> 16) as usize] = 2;
        assert!(matches!(
            validate_v4(&bad),
            Err(LpmError::UnreachableGroup { .. })
        ));
        assert!(!LpmError::UnreachableGroup { group: 3 }
            .to_string()
            .is_empty());
    }

    #[test]
    fn self_referencing_tables_terminate() {
        // Every entry points to group 0, itself full of pointers to group 0.
        let table = vec![CHILD; ROOT_ENTRIES + GROUP_ENTRIES];
        assert_eq!(lookup_v4(&table, v4("1.2.3.4")), NO_MATCH);
        assert_eq!(lookup_v6(&table, v6("2001:db8::1")), NO_MATCH);
        assert!(validate_v4(&table).is_err());
        assert!(validate_v6(&table).is_err());
        assert_eq!(lookup_v4(&[], 0), NO_MATCH);
        assert_eq!(lookup_v6(&[], 0), NO_MATCH);
        assert_eq!(lookup_v4(&[CHILD | MAX_VALUE; 4], 0), NO_MATCH);
    }

    /// SplitMix64, to fill large garbage tables from one proptest seed cheaply.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Mask of the low `bits` bits of a `u128`.
    fn low_mask(bits: u32) -> u128 {
        u128::MAX
            .checked_shr(128 - bits)
            .filter(|_| bits > 0)
            .unwrap_or(0)
    }

    /// Prefixes that nest and overlap: each is one of a few random bases with a quarter, half,
    /// three quarters or all of its low bits replaced by noise, and any length (right-aligned
    /// addresses of `width` bits).
    fn arb_prefixes(width: u8) -> impl Strategy<Value = Vec<(u128, u8, u32)>> {
        let width_bits = u32::from(width);
        let bases = proptest::collection::vec(any::<u128>(), 1..4);
        let raw = (
            any::<usize>(),
            any::<u128>(),
            0..=width,
            0..5u32,
            0u32..1000,
        );
        (bases, proptest::collection::vec(raw, 0..40)).prop_map(move |(bases, raw)| {
            raw.into_iter()
                .map(|(b, noise, len, quarters, value)| {
                    let flip = low_mask(width_bits * quarters / 4);
                    let base = bases[b % bases.len()] & low_mask(width_bits);
                    ((base & !flip) | (noise & flip), len, value)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn prop_v4_matches_linear_scan(
            prefixes in arb_prefixes(32),
            probes in proptest::collection::vec((any::<usize>(), any::<u32>(), 0u32..=32), 64),
        ) {
            let v4_prefixes: Vec<(u32, u8, u32)> = prefixes
                .iter()
                .map(|&(a, l, v)| (u32::try_from(a).unwrap(), l, v))
                .collect();
            let table = build_v4(&v4_prefixes).unwrap();
            validate_v4(&table).unwrap();
            for (pick, noise, keep) in probes {
                // Half the probes land inside a prefix (its bits, then noise), half anywhere.
                let addr = match prefixes.get(pick % (2 * prefixes.len().max(1))) {
                    Some(&(a, _, _)) => {
                        let a = u32::try_from(a).unwrap();
                        let mask = u32::MAX.checked_shl(32 - keep).unwrap_or(0);
                        (a & mask) | (noise & !mask)
                    }
                    None => noise,
                };
                prop_assert_eq!(
                    lookup_v4(&table, addr),
                    naive(&prefixes, 32, u128::from(addr)),
                    "addr {:#010x}", addr
                );
            }
        }

        #[test]
        fn prop_v6_matches_linear_scan(
            prefixes in arb_prefixes(128),
            probes in proptest::collection::vec((any::<usize>(), any::<u128>(), 0u32..=128), 64),
        ) {
            let table = build_v6(&prefixes).unwrap();
            validate_v6(&table).unwrap();
            for (pick, noise, keep) in probes {
                let addr = match prefixes.get(pick % (2 * prefixes.len().max(1))) {
                    Some(&(a, _, _)) => {
                        let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                        (a & mask) | (noise & !mask)
                    }
                    None => noise,
                };
                prop_assert_eq!(
                    lookup_v6(&table, addr),
                    naive(&prefixes, 128, addr),
                    "addr {:#034x}", addr
                );
            }
        }

        /// Garbage tables: any length, entries with and without the child flag, child numbers
        /// mostly in range so lookups go deep. Lookups and validation must return, not panic.
        #[test]
        fn prop_garbage_tables_never_panic(
            seed in any::<u64>(),
            groups in 0usize..64,
            ragged in 0usize..300,
            child_percent in 0u64..100,
            truncate in any::<bool>(),
        ) {
            let mut state = seed;
            let len = if truncate { (ROOT_ENTRIES + groups * GROUP_ENTRIES) * ragged / 300 } else { ROOT_ENTRIES + groups * GROUP_ENTRIES + ragged };
            let table: Vec<u32> = (0..len)
                .map(|_| {
                    let r = splitmix(&mut state);
                    let word = (r >> 32) as u32;
                    if r % 100 < child_percent {
                        // Mostly valid-looking group numbers, sometimes anything.
                        if r & 0x100 == 0 { CHILD | (word % (groups as u32 + 2)) } else { word | CHILD }
                    } else {
                        word
                    }
                })
                .collect();
            for _ in 0..256 {
                let r = splitmix(&mut state);
                let _ = lookup_v4(&table, r as u32);
                let _ = lookup_v6(&table, (u128::from(r) << 64) | u128::from(splitmix(&mut state)));
            }
            let _ = validate_v4(&table);
            let _ = validate_v6(&table);
        }

        /// A valid table with a few corrupted entries: lookups still never panic, and validation
        /// either accepts it or names a defect.
        #[test]
        fn prop_corrupted_tables_never_panic(
            prefixes in arb_prefixes(128),
            corruptions in proptest::collection::vec((any::<usize>(), any::<u32>()), 1..16),
            probes in proptest::collection::vec(any::<u128>(), 32),
        ) {
            let mut table = build_v6(&prefixes).unwrap();
            let groups = (table.len() - ROOT_ENTRIES) / GROUP_ENTRIES;
            for (at, word) in corruptions {
                // Aim at the groups when there are some, where the child pointers are.
                let at = if groups > 0 && at % 2 == 0 { ROOT_ENTRIES + at % (groups * GROUP_ENTRIES) } else { at % table.len() };
                table[at] = word;
            }
            for addr in probes {
                let _ = lookup_v6(&table, addr);
                let _ = lookup_v4(&table, (addr >> 96) as u32);
            }
            let _ = validate_v6(&table);
            let _ = validate_v4(&table);
        }
    }
}
