//! Token buckets on the worker's millisecond clock: one for the ICMP the appliance sends, and
//! one per client source for new flows, kept exactly in a bounded set-associative table.
//!
//! Tokens are kept in thousandths so a rate in tokens per second refills exactly per
//! millisecond. A clock that steps back refills nothing; the wrapping `u32` clock is handled
//! like the flow table's (elapsed times above 2^31 ms count as "back").

use crate::flow::{mix64, Timeouts};

/// Milli-tokens per token.
const MILLI: u64 = 1000;

/// One token bucket: `rate` tokens per second, at most `burst` at once. A bucket starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// Milli-tokens earned per millisecond (= tokens per second).
    rate: u64,
    /// Capacity in milli-tokens.
    cap: u64,
    tokens: u64,
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket. `rate == 0` never yields a token (the policy's "0 sends none").
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        let cap = u64::from(burst.max(1)) * MILLI;
        Self {
            rate: u64::from(rate),
            cap: if rate == 0 { 0 } else { cap },
            tokens: if rate == 0 { 0 } else { cap },
            last_ms: 0,
        }
    }

    /// Takes one token at `now` (ms); false when the bucket is empty.
    #[inline]
    pub(crate) fn take(&mut self, now: u32) -> bool {
        refill(
            &mut self.tokens,
            &mut self.last_ms,
            self.rate,
            self.cap,
            now,
        );
        if self.tokens >= MILLI {
            self.tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[inline]
fn refill(tokens: &mut u64, last_ms: &mut u32, rate: u64, cap: u64, now: u32) {
    if now == *last_ms {
        return;
    }
    let elapsed = now.wrapping_sub(*last_ms);
    if elapsed <= Timeouts::MAX_MS {
        *tokens = (*tokens + (u64::from(elapsed) * rate).min(cap)).min(cap);
    }
    *last_ms = now;
}

/// Ways per set of the per-source table: 4 entries of 16 bytes, one cache line.
const WAYS: usize = 4;
/// Sets in the per-source table: a power of two. 16384 × 4 = 65,536 sources, 1 MiB per worker.
pub(crate) const SOURCE_SETS: usize = 16_384;
/// Sources the table tracks at once, per worker.
pub(crate) const SOURCE_CAPACITY: usize = SOURCE_SETS * WAYS;
const _: () = assert!(SOURCE_CAPACITY * std::mem::size_of::<u128>() == 1 << 20);
const _: () = assert!(std::mem::size_of::<SourceSet>() == 64);
/// The key of an empty way. No source has it: an IPv4 key has its top 32 bits set, and an IPv6
/// key of 0 is `::/N`, a martian source dropped before any flow is made.
const EMPTY: u64 = 0;

/// One set: the sources' keys, their milli-tokens and last refill times, in one cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct SourceSet {
    keys: [u64; WAYS],
    tokens: [u32; WAYS],
    last_ms: [u32; WAYS],
}

/// New flows per client source: a token bucket per source, kept exactly.
///
/// A set-associative table of [`SOURCE_CAPACITY`] sources per worker (1 MiB), indexed by a
/// hash of the source keyed with the worker's secret seed, each way holding the source's full
/// key. Two sources never share a bucket, so a source is refused only when *its own* bucket is
/// empty: no false positives, whatever an attacker sends. When a new source finds its set full,
/// it takes the way whose bucket holds the most tokens: a bucket that has refilled to the
/// burst carries no state, so it is reused for free; otherwise the evicted source restarts with
/// a full bucket (`limit_source_evicted`; `limit_source_table_full` when even that source was
/// at its limit). Eviction can therefore only let a source through more often (at most one
/// extra burst per eviction), never less. IPv4 clients are keyed by their address, IPv6 clients
/// by a prefix of theirs (`Config.source_v6_prefix`, default /64: a host can rotate the low
/// 64 bits of its address at will).
#[derive(Debug, Clone)]
pub(crate) struct SourceLimiter {
    enabled: bool,
    /// Milli-tokens earned per millisecond (= tokens per second).
    rate: u64,
    /// Capacity in milli-tokens (at most `u32::MAX`: bursts above 4 million are that).
    cap: u64,
    /// Mask of the IPv6 address bits (of the upper 64) that make a source.
    v6_mask: u64,
    seed: u64,
    sets: Box<[SourceSet]>,
}

/// What [`SourceLimiter::allow`] did besides its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// A free way, a way whose bucket was full again, or the source's own.
    None,
    /// A source whose bucket was not full lost its state.
    Evicted,
    /// ... and that source was at its limit (no whole token).
    TableFull,
}

impl SourceLimiter {
    /// An empty, switched-off limiter whose set index is keyed with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            enabled: false,
            rate: 0,
            cap: 0,
            v6_mask: u64::MAX,
            seed: seed | 1,
            sets: vec![SourceSet::default(); SOURCE_SETS].into_boxed_slice(),
        }
    }

    /// Applies a generation's limit (`rate == 0` switches the limiter off) and IPv6 prefix
    /// (0..=64). When either changes, the table is emptied: every source starts full again.
    pub(crate) fn configure(&mut self, rate: u32, burst: u32, v6_prefix: u8) {
        let enabled = rate != 0;
        let cap = (u64::from(burst.max(1)) * MILLI).min(u64::from(u32::MAX));
        let rate = u64::from(rate);
        let v6_mask = match v6_prefix.min(64) {
            0 => 0,
            n => u64::MAX << (64 - n),
        };
        if (enabled, rate, cap, v6_mask) != (self.enabled, self.rate, self.cap, self.v6_mask) {
            self.enabled = enabled;
            self.rate = rate;
            self.cap = cap;
            self.v6_mask = v6_mask;
            self.sets.fill(SourceSet::default());
        }
    }

    /// The key of an IPv4 source: its address, with the top 32 bits set (`ffff:ffff::/32` as an
    /// IPv6 prefix is multicast, never a source, so the two families cannot meet).
    #[inline]
    pub(crate) fn key_v4(src: u32) -> u64 {
        0xffff_ffff_0000_0000 | u64::from(src)
    }

    /// The key of an IPv6 source: the configured prefix of its address.
    #[inline]
    pub(crate) fn key_v6(&self, src: u128) -> u64 {
        // The upper 64 bits: the truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        let upper = (src >> 64) as u64;
        upper & self.v6_mask
    }

    /// Takes a token for a new flow from the source `key` ([`SourceLimiter::key_v4`],
    /// [`SourceLimiter::key_v6`]); always true when the limiter is off.
    #[inline]
    pub(crate) fn allow(&mut self, key: u64, now: u32) -> (bool, Eviction) {
        if !self.enabled {
            return (true, Eviction::None);
        }
        let (rate, cap) = (self.rate, self.cap);
        let i = self.set_index(key);
        let Some(set) = self.sets.get_mut(i) else {
            return (true, Eviction::None);
        };
        if let Some(w) = set.keys.iter().position(|&k| k == key) {
            let mut tokens = u64::from(set.tokens[w]);
            refill(&mut tokens, &mut set.last_ms[w], rate, cap, now);
            let allowed = tokens >= MILLI;
            if allowed {
                tokens -= MILLI;
            }
            set.tokens[w] = narrow(tokens);
            return (allowed, Eviction::None);
        }
        // A new source: a free way, else the way with the most tokens now.
        let mut victim = 0;
        let mut best = 0;
        for w in 0..WAYS {
            if set.keys[w] == EMPTY {
                victim = w;
                best = cap;
                break;
            }
            let mut tokens = u64::from(set.tokens[w]);
            let mut last = set.last_ms[w];
            refill(&mut tokens, &mut last, rate, cap, now);
            if tokens > best || w == 0 {
                best = tokens;
                victim = w;
            }
        }
        let eviction = if best >= cap {
            Eviction::None
        } else if best >= MILLI {
            Eviction::Evicted
        } else {
            Eviction::TableFull
        };
        set.keys[victim] = key;
        set.tokens[victim] = narrow(cap - MILLI);
        set.last_ms[victim] = now;
        (true, eviction)
    }

    /// Whether [`SourceLimiter::allow`] would let a new flow of `key` through at `now`, without
    /// taking anything (for `trace`).
    pub(crate) fn would_allow(&self, key: u64, now: u32) -> bool {
        if !self.enabled {
            return true;
        }
        let Some(set) = self.sets.get(self.set_index(key)) else {
            return true;
        };
        set.keys.iter().position(|&k| k == key).is_none_or(|w| {
            let mut tokens = u64::from(set.tokens[w]);
            let mut last = set.last_ms[w];
            refill(&mut tokens, &mut last, self.rate, self.cap, now);
            tokens >= MILLI
        })
    }

    #[inline]
    fn set_index(&self, key: u64) -> usize {
        let h = mix64(key ^ self.seed, 0xd6e8_feb8_6659_fd93);
        // The mask keeps 14 bits: the cast cannot truncate anything that matters.
        #[allow(clippy::cast_possible_truncation)]
        let i = (h >> 24) as usize & (SOURCE_SETS - 1);
        i
    }
}

/// Milli-tokens never exceed `cap`, which fits a `u32`.
#[inline]
fn narrow(tokens: u64) -> u32 {
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_full_refills_and_caps() {
        let mut b = TokenBucket::new(10, 3);
        assert!(b.take(5));
        assert!(b.take(5));
        assert!(b.take(5));
        assert!(!b.take(5));
        // 10/s: one token per 100 ms.
        assert!(!b.take(104));
        assert!(b.take(105));
        assert!(!b.take(105));
        // A long pause refills to the burst only.
        for _ in 0..3 {
            assert!(b.take(100_000));
        }
        assert!(!b.take(100_000));
    }

    #[test]
    fn zero_rate_sends_nothing_and_clock_steps_back_harmlessly() {
        let mut b = TokenBucket::new(0, 10);
        assert!(!b.take(0));
        assert!(!b.take(1_000_000));
        let mut b = TokenBucket::new(1000, 1);
        assert!(b.take(1000));
        assert!(!b.take(999)); // backwards: nothing earned
        assert!(b.take(1000));
    }

    /// Keys of `n` sources (IPv4 addresses from `base`) whose set is `set`.
    fn keys_in_set(l: &SourceLimiter, set: usize, base: u32, n: usize) -> Vec<u64> {
        (base..)
            .map(SourceLimiter::key_v4)
            .filter(|&k| l.set_index(k) == set)
            .take(n)
            .collect()
    }

    #[test]
    fn source_limiter_is_per_source_and_off_at_zero() {
        let mut l = SourceLimiter::new(7);
        for _ in 0..100 {
            assert_eq!(l.allow(1, 0), (true, Eviction::None));
        }
        l.configure(1, 2, 64);
        let a = SourceLimiter::key_v4(0x0a00_0001);
        let b = SourceLimiter::key_v4(0x0a00_0002);
        assert!(l.allow(a, 10).0);
        assert!(l.allow(a, 10).0);
        assert!(!l.allow(a, 10).0);
        assert!(l.allow(b, 10).0);
        assert!(l.allow(a, 1010).0);
        // Same /64, different host: same source; another /64: another.
        let x = l.key_v6(0x2001_0db8_0000_0001_0000_0000_0000_0001);
        let y = l.key_v6(0x2001_0db8_0000_0001_ffff_0000_0000_0002);
        let z = l.key_v6(0x2001_0db8_0000_0002_0000_0000_0000_0001);
        assert_eq!(x, y);
        assert_ne!(x, z);
        // A /48 prefix puts the two /64s together.
        l.configure(1, 2, 48);
        assert_eq!(
            l.key_v6(0x2001_0db8_0000_0001_0000_0000_0000_0001),
            l.key_v6(0x2001_0db8_0000_0002_0000_0000_0000_0001)
        );
        l.configure(0, 0, 64);
        assert!(l.allow(a, 1010).0);
    }

    /// The fairness property: a legitimate source that shares its set (the only hashed state)
    /// with attackers flooding new flows is never refused while its own bucket has a token,
    /// whether the attackers are few (they sit beside it) or many (they evict each other and it).
    #[test]
    fn legitimate_source_sharing_a_set_with_attackers_is_not_starved() {
        for attackers in [1, 3, 20] {
            let mut l = SourceLimiter::new(0x5eed);
            l.configure(10, 2, 64); // 10 new flows/s, burst 2
            let set = l.set_index(SourceLimiter::key_v4(0xc633_6401));
            let legit = SourceLimiter::key_v4(0xc633_6401);
            let flood = keys_in_set(&l, set, 0x0b00_0000, attackers);
            assert_eq!(flood.len(), attackers);
            let (mut legit_ok, mut flood_ok, mut flood_sent) = (0, 0, 0);
            let mut evictions = 0;
            // 10 s: the client opens a flow every 150 ms (under its 10/s), each attacker
            // source 100 per millisecond.
            for now in 0..10_000u32 {
                for &k in &flood {
                    for _ in 0..100 {
                        let (ok, ev) = l.allow(k, now);
                        flood_ok += u32::from(ok);
                        flood_sent += 1;
                        evictions += u32::from(ev != Eviction::None);
                    }
                }
                if now % 150 == 0 {
                    let (ok, _) = l.allow(legit, now);
                    assert!(
                        ok,
                        "{attackers} attackers: legitimate flow refused at {now} ms"
                    );
                    legit_ok += 1;
                }
            }
            assert_eq!(legit_ok, 67);
            if attackers < WAYS {
                // Exact: each attacker source gets its burst plus 10/s, nothing more.
                assert_eq!(evictions, 0);
                assert!(
                    flood_ok <= u32::try_from(attackers).unwrap() * (2 + 100),
                    "{flood_ok}"
                );
            } else {
                // Past the set's ways they evict one another: counted, and still far below
                // what they sent.
                assert!(evictions > 0);
                assert!(flood_ok < flood_sent / 50, "{flood_ok} of {flood_sent}");
            }
        }
    }

    #[test]
    fn a_bucket_that_refilled_is_reused_without_an_eviction() {
        let mut l = SourceLimiter::new(1);
        l.configure(1000, 1, 64); // refills in 1 ms
        let keys = keys_in_set(&l, 5, 0x0a00_0000, WAYS + 1);
        for &k in &keys[..WAYS] {
            assert_eq!(l.allow(k, 0), (true, Eviction::None));
        }
        // Same millisecond: every way is at its limit.
        assert_eq!(l.allow(keys[WAYS], 0), (true, Eviction::TableFull));
        // A millisecond later every bucket is full again: reuse is free.
        assert_eq!(l.allow(keys[0], 1), (true, Eviction::None));
        l.configure(1, 5, 64);
        for &k in &keys[..WAYS] {
            assert_eq!(l.allow(k, 10), (true, Eviction::None));
        }
        // Four tokens left in each: an eviction, not a full table.
        assert_eq!(l.allow(keys[WAYS], 10), (true, Eviction::Evicted));
    }
}
