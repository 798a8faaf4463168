//! Token buckets on the worker's millisecond clock: one for the ICMP the appliance sends, and a
//! small hashed array of them for new flows per client source.
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

/// Buckets in the per-source array: a power of two. 4096 × 16 bytes = 64 KiB per worker.
pub(crate) const SOURCE_BUCKETS: usize = 4096;

/// New flows per client source: an array of token buckets indexed by a hash of the source.
///
/// Sources that collide share a bucket, which can only make the limit stricter for them; with
/// 4096 buckets that takes thousands of concurrently active sources. IPv6 clients are keyed by
/// their /64: a host can rotate the low 64 bits of its address at will.
#[derive(Debug, Clone)]
pub(crate) struct SourceLimiter {
    enabled: bool,
    rate: u64,
    cap: u64,
    /// `(milli-tokens, last refill ms)` per bucket.
    buckets: Box<[(u64, u32)]>,
}

impl SourceLimiter {
    pub(crate) fn new() -> Self {
        Self {
            enabled: false,
            rate: 0,
            cap: 0,
            buckets: vec![(0, 0); SOURCE_BUCKETS].into_boxed_slice(),
        }
    }

    /// Applies a generation's limit (`rate == 0` switches the limiter off). When the limit
    /// changes, every bucket starts full again.
    pub(crate) fn configure(&mut self, rate: u32, burst: u32) {
        let enabled = rate != 0;
        let cap = u64::from(burst.max(1)) * MILLI;
        let rate = u64::from(rate);
        if (enabled, rate, cap) != (self.enabled, self.rate, self.cap) {
            self.enabled = enabled;
            self.rate = rate;
            self.cap = cap;
            self.buckets.fill((cap, 0));
        }
    }

    /// Takes a token for a new flow from the source whose key (see [`source_key_v4`],
    /// [`source_key_v6`]) is `key`; always true when the limiter is off.
    #[inline]
    pub(crate) fn allow(&mut self, key: u64, now: u32) -> bool {
        if !self.enabled {
            return true;
        }
        let i = bucket_index(key);
        let Some((tokens, last)) = self.buckets.get_mut(i) else {
            return true;
        };
        refill(tokens, last, self.rate, self.cap, now);
        if *tokens >= MILLI {
            *tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[inline]
fn bucket_index(key: u64) -> usize {
    let h = mix64(key ^ 0x9e37_79b9_7f4a_7c15, 0xd6e8_feb8_6659_fd93);
    // The mask keeps 12 bits: the cast cannot truncate anything that matters.
    #[allow(clippy::cast_possible_truncation)]
    let i = (h >> 20) as usize & (SOURCE_BUCKETS - 1);
    i
}

/// The limiter key of an IPv4 source.
#[inline]
pub(crate) fn source_key_v4(src: u32) -> u64 {
    u64::from(src)
}

/// The limiter key of an IPv6 source: its /64.
#[inline]
pub(crate) fn source_key_v6(src: u128) -> u64 {
    // The upper 64 bits: the truncation is the point.
    #[allow(clippy::cast_possible_truncation)]
    let prefix = (src >> 64) as u64;
    prefix ^ 0x6a09_e667_f3bc_c908
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

    #[test]
    fn source_limiter_is_per_source_and_off_at_zero() {
        let mut l = SourceLimiter::new();
        for _ in 0..100 {
            assert!(l.allow(1, 0));
        }
        l.configure(1, 2);
        let a = source_key_v4(0x0a00_0001);
        let b = source_key_v4(0x0a00_0002);
        assert_ne!(bucket_index(a), bucket_index(b));
        assert!(l.allow(a, 10));
        assert!(l.allow(a, 10));
        assert!(!l.allow(a, 10));
        assert!(l.allow(b, 10));
        assert!(l.allow(a, 1010));
        // Same /64, different host: same bucket.
        let x = source_key_v6(0x2001_0db8_0000_0001_0000_0000_0000_0001);
        let y = source_key_v6(0x2001_0db8_0000_0001_ffff_0000_0000_0002);
        assert_eq!(x, y);
        l.configure(0, 0);
        assert!(l.allow(a, 1010));
    }
}
