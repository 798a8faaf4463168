//! A worker's top talkers: the source prefixes that sent it the most packets, from a sample of
//! what it receives, counted in a Space-Saving sketch (Metwally, Agrawal, El Abbadi, 2005) of
//! the worker's own memory and published into its telemetry block once a window ends
//! (`switchyard_table::shm::layout::TalkerBlock`; the control plane merges the workers').
//!
//! **Cost.** Per received burst, one subtraction and one branch ([`Talkers::offer`]): the
//! sampler keeps a countdown of packets to the next sample, drawn at random between 1 and
//! `2 × sample_every − 1` (mean `sample_every`), so no periodic traffic pattern can hide from
//! it. A sample reads the frame's source address (Ethernet, up to two VLAN tags, IPv4 or IPv6)
//! and updates the sketch: a scan of its [`SKETCH_ENTRIES`] entries for the prefix and, when
//! the prefix is new, for the smallest entry, which it takes over. Nothing else runs per
//! packet.
//!
//! **Error bound.** Space-Saving with k entries over m samples over-counts an entry by at most
//! the count of the entry it took over (kept as its `error`), which is at most m / k; every
//! prefix with more than m / k samples is in the sketch. Sampling adds the usual binomial
//! error: a prefix with share p of n packets gets about n·p / `sample_every` samples, give or
//! take the square root of that.
//!
//! **Windows.** [`Talkers::publish`] writes the heaviest [`MAX_TALKERS`] entries with the
//! window's packet and sample counts, then empties the sketch: each window stands alone, so a
//! prefix that stopped sending leaves the list after one window.

use crate::wire::{EtherType, EthernetFrame};
use switchyard_table::shm::layout::{TalkerBlock, MAX_TALKERS};
use switchyard_table::shm::telemetry::{SourcePrefix, Talker, TalkerWindow};

/// Entries of a worker's sketch: twice what it publishes, so the published ones are the
/// well-counted ones.
pub const SKETCH_ENTRIES: usize = 2 * MAX_TALKERS;

/// Sampling and keying (`talkers` in the appliance settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalkerConfig {
    /// Mean packets per sample (1: every packet).
    pub sample_every: u32,
    /// Prefix lengths sources are counted by.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for TalkerConfig {
    fn default() -> Self {
        Self {
            sample_every: 64,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    prefix: SourcePrefix,
    samples: u64,
    error: u64,
    bytes: u64,
}

/// One worker's sampler and sketch (see the module doc).
#[derive(Debug)]
pub struct Talkers {
    config: TalkerConfig,
    entries: Vec<Entry>,
    /// Packets left before the next sample (at least 1).
    countdown: u64,
    /// The gap the countdown started from.
    gap: u64,
    /// Packets of the window in gaps already sampled.
    packets: u64,
    samples: u64,
    non_ip: u64,
    windows: u64,
    rng: u64,
}

impl Talkers {
    /// A sampler seeded with `seed` (any value; a worker passes something of its own).
    #[must_use]
    pub fn new(config: TalkerConfig, seed: u64) -> Self {
        let mut t = Self {
            config: TalkerConfig {
                sample_every: config.sample_every.max(1),
                ipv4_prefix: config.ipv4_prefix.min(32),
                ipv6_prefix: config.ipv6_prefix.min(128),
            },
            entries: Vec::with_capacity(SKETCH_ENTRIES),
            countdown: 1,
            gap: 1,
            packets: 0,
            samples: 0,
            non_ip: 0,
            windows: 0,
            // xorshift needs a non-zero state.
            rng: seed | 1,
        };
        t.next_gap();
        t
    }

    fn next_gap(&mut self) {
        let every = u64::from(self.config.sample_every);
        self.gap = if every == 1 {
            1
        } else {
            // xorshift64: plenty for spacing samples, and a few instructions per sample.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            1 + self.rng % (2 * every - 1)
        };
        self.countdown = self.gap;
    }

    /// A burst of `n` packets arrived: the indices (within the burst) of the ones to sample go
    /// to `sample`. One subtraction and one branch unless a sample falls in the burst.
    #[inline(always)]
    pub fn offer(&mut self, n: usize, sample: impl FnMut(&mut Self, usize)) {
        let n = n as u64;
        if n < self.countdown {
            self.countdown -= n;
        } else {
            self.sample_burst(n, sample);
        }
    }

    #[cold]
    #[inline(never)]
    fn sample_burst(&mut self, n: u64, mut sample: impl FnMut(&mut Self, usize)) {
        let mut at = 0;
        while n - at >= self.countdown {
            at += self.countdown;
            self.packets += self.gap;
            self.samples += 1;
            sample(self, usize::try_from(at - 1).unwrap_or(usize::MAX));
            self.next_gap();
        }
        self.countdown -= n - at;
    }

    /// Counts a sampled frame (`bytes` long as received) for its source prefix.
    pub fn count(&mut self, frame: &[u8], bytes: u64) {
        match source_prefix(frame, self.config.ipv4_prefix, self.config.ipv6_prefix) {
            Some(prefix) => self.add(prefix, bytes),
            None => self.non_ip += 1,
        }
    }

    /// Space-Saving's update.
    fn add(&mut self, prefix: SourcePrefix, bytes: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.prefix == prefix) {
            e.samples += 1;
            e.bytes += bytes;
            return;
        }
        if self.entries.len() < SKETCH_ENTRIES {
            self.entries.push(Entry {
                prefix,
                samples: 1,
                error: 0,
                bytes,
            });
            return;
        }
        // Full: the new prefix takes over the smallest entry and its count (the over-count
        // bound), plus its own sample.
        if let Some(min) = self.entries.iter_mut().min_by_key(|e| e.samples) {
            *min = Entry {
                prefix,
                samples: min.samples + 1,
                error: min.samples,
                bytes: min.bytes + bytes,
            };
        }
    }

    /// Ends the window (`cycles` TSC cycles long): writes its heaviest entries into `block`,
    /// then starts the next one empty.
    pub fn publish(&mut self, block: &TalkerBlock, cycles: u64) {
        self.windows += 1;
        let window = self.take_window(cycles);
        block.publish(&window);
    }

    /// The window so far (heaviest first, at most [`MAX_TALKERS`]); empties the sketch.
    fn take_window(&mut self, cycles: u64) -> TalkerWindow {
        // Packets of the current gap that already arrived belong to this window.
        let into_gap = self.gap - self.countdown;
        let packets = self.packets + into_gap;
        self.gap = self.countdown;
        self.packets = 0;
        self.entries
            .sort_unstable_by(|a, b| b.samples.cmp(&a.samples).then(a.prefix.cmp(&b.prefix)));
        let talkers = self
            .entries
            .drain(..)
            .take(MAX_TALKERS)
            .map(|e| Talker {
                prefix: e.prefix,
                samples: e.samples,
                error: e.error,
                bytes: e.bytes,
            })
            .collect();
        let window = TalkerWindow {
            window: self.windows,
            window_cycles: cycles,
            packets,
            samples: self.samples,
            non_ip: self.non_ip,
            ipv4_prefix: self.config.ipv4_prefix,
            ipv6_prefix: self.config.ipv6_prefix,
            sample_every: u64::from(self.config.sample_every),
            talkers,
        };
        self.samples = 0;
        self.non_ip = 0;
        window
    }
}

/// The source prefix of an Ethernet frame carrying IPv4 or IPv6 (after up to two VLAN tags,
/// walked by the wire module). Only the version and the source address are read: a packet with
/// bad lengths still counts for the prefix it claims to come from.
#[must_use]
pub fn source_prefix(frame: &[u8], v4_len: u8, v6_len: u8) -> Option<SourcePrefix> {
    let frame = EthernetFrame::new_checked(frame).ok()?;
    let l2 = frame.parse_l2().ok()?;
    let l3 = frame.l3_payload(&l2);
    let version = l3.first()? >> 4;
    match l2.ethertype {
        EtherType::IPV4 if version == 4 => {
            let src: [u8; 4] = l3.get(12..16)?.try_into().ok()?;
            let mask = u32::MAX.checked_shl(32 - u32::from(v4_len)).unwrap_or(0);
            Some(SourcePrefix::V4(
                (u32::from_be_bytes(src) & mask).into(),
                v4_len,
            ))
        }
        EtherType::IPV6 if version == 6 => {
            let src: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            let mask = u128::MAX.checked_shl(128 - u32::from(v6_len)).unwrap_or(0);
            Some(SourcePrefix::V6(
                (u128::from_be_bytes(src) & mask).into(),
                v6_len,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4_frame(src: [u8; 4], vlans: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        for _ in 0..vlans {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[10, 0, 0, 1]);
        f
    }

    fn v6_frame(src: Ipv6Addr) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 17, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&[0; 16]);
        f
    }

    #[test]
    fn source_prefixes_are_read_through_vlans_and_masked() {
        let p = |f: &[u8]| source_prefix(f, 24, 48);
        let want = Some(SourcePrefix::V4(Ipv4Addr::new(192, 0, 2, 0), 24));
        assert_eq!(p(&v4_frame([192, 0, 2, 77], 0)), want);
        assert_eq!(p(&v4_frame([192, 0, 2, 78], 2)), want);
        assert_eq!(
            source_prefix(&v4_frame([192, 0, 2, 78], 1), 0, 0),
            Some(SourcePrefix::V4(Ipv4Addr::UNSPECIFIED, 0))
        );
        assert_eq!(
            source_prefix(&v4_frame([192, 0, 2, 78], 1), 32, 0),
            Some(SourcePrefix::V4(Ipv4Addr::new(192, 0, 2, 78), 32))
        );
        assert_eq!(
            p(&v6_frame("2001:db8:1:2::9".parse().unwrap())),
            Some(SourcePrefix::V6("2001:db8:1::".parse().unwrap(), 48))
        );
        // Three VLAN tags, truncated headers, a wrong IP version, ARP: no prefix.
        let mut three = v4_frame([1, 2, 3, 4], 2);
        three.splice(12..12, [0x81, 0x00, 0, 1]);
        assert_eq!(p(&three), None);
        assert_eq!(p(&v4_frame([1, 2, 3, 4], 0)[..29]), None);
        let mut wrong = v4_frame([1, 2, 3, 4], 0);
        wrong[14] = 0x65;
        assert_eq!(p(&wrong), None);
        assert_eq!(p(&[0xff; 13]), None);
        let mut arp = v4_frame([1, 2, 3, 4], 0);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(p(&arp), None);
    }

    fn feed(t: &mut Talkers, frames: &[Vec<u8>], bursts: usize) {
        for _ in 0..bursts {
            t.offer(frames.len(), |t, i| {
                let f = &frames[i];
                t.count(f, f.len() as u64);
            });
        }
    }

    #[test]
    fn every_packet_counted_exactly_when_sampling_all_of_them() {
        let config = TalkerConfig {
            sample_every: 1,
            ..TalkerConfig::default()
        };
        let mut t = Talkers::new(config, 7);
        // A burst: 3 from 10.1.1.0/24, 1 from 10.2.2.0/24, 1 ARP.
        let mut frames = vec![
            v4_frame([10, 1, 1, 1], 0),
            v4_frame([10, 1, 1, 2], 0),
            v4_frame([10, 1, 1, 3], 1),
            v4_frame([10, 2, 2, 2], 0),
        ];
        let mut arp = v4_frame([10, 3, 3, 3], 0);
        arp[12] = 0x08;
        arp[13] = 0x06;
        frames.push(arp);
        feed(&mut t, &frames, 100);
        let w = t.take_window(5);
        assert_eq!((w.packets, w.samples, w.non_ip), (500, 500, 100));
        let got: Vec<(String, u64, u64)> = w
            .talkers
            .iter()
            .map(|t| (t.prefix.to_string(), t.samples, t.error))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.1.1.0/24".into(), 300, 0),
                ("10.2.2.0/24".into(), 100, 0)
            ]
        );
        // The next window starts empty.
        let w = t.take_window(5);
        assert_eq!((w.packets, w.samples, w.talkers.len()), (0, 0, 0));
    }

    #[test]
    fn sampling_counts_every_packet_and_samples_about_one_in_n() {
        let mut t = Talkers::new(TalkerConfig::default(), 99);
        let frames: Vec<Vec<u8>> = (0..32).map(|i| v4_frame([10, 0, i, 1], 0)).collect();
        feed(&mut t, &frames, 10_000); // 320,000 packets
        let w = t.take_window(1);
        assert_eq!(w.packets, 320_000);
        // 5,000 samples expected; the gaps are uniform, so the count is tight.
        assert!((4_700..5_300).contains(&w.samples), "{}", w.samples);
        // 32 prefixes evenly: each near 5000 / 32.
        assert_eq!(w.talkers.len(), 32);
        for talker in &w.talkers {
            assert_eq!(talker.error, 0);
            assert!((100..220).contains(&talker.samples), "{talker:?}");
        }
    }

    #[test]
    fn packets_of_a_window_add_up_across_windows() {
        let mut t = Talkers::new(TalkerConfig::default(), 3);
        let frames: Vec<Vec<u8>> = (0..7).map(|i| v4_frame([10, 0, i, 1], 0)).collect();
        let mut total = 0;
        for round in 0..50 {
            feed(&mut t, &frames, round % 9);
            total += t.take_window(1).packets;
        }
        let sent: u64 = (0..50).map(|r| 7 * (r % 9)).sum();
        // What arrived after the last sample of the last window is counted in that window.
        assert_eq!(total, sent);
    }

    #[test]
    fn heavy_prefixes_are_found_among_a_spoofed_flood_within_the_bound() {
        // 1 in 4 packets from 198.51.100.0/24, the rest from random /24s: the heavy one is
        // first and its count within Space-Saving's error of the truth.
        let config = TalkerConfig {
            sample_every: 1,
            ..TalkerConfig::default()
        };
        let mut t = Talkers::new(config, 1);
        let mut rng = 12345u64;
        let mut truth = 0;
        for i in 0..40_000u32 {
            let frame = if i % 4 == 0 {
                truth += 1;
                v4_frame([198, 51, 100, (i % 200) as u8], 0)
            } else {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                let b = (rng >> 33).to_be_bytes();
                v4_frame([b[4], b[5], b[6], 9], 0)
            };
            t.offer(1, |t, _| t.count(&frame, 60));
        }
        let w = t.take_window(1);
        let top = w.talkers[0];
        assert_eq!(top.prefix.to_string(), "198.51.100.0/24");
        assert!(
            top.samples >= truth && top.samples - top.error <= truth,
            "{top:?}"
        );
        // The bound m / k.
        assert!(top.error <= 40_000 / SKETCH_ENTRIES as u64);
        assert!(w.talkers.len() == MAX_TALKERS);
    }
}
