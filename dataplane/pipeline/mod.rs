//! The packet pipeline: what a worker does to each received packet.
//!
//! It is pure Rust over a [`PacketBuf`] (an mbuf in the appliance, a `Vec` with headroom in
//! tests), so every stage runs in-process in tests and fuzzing exactly as on the NIC.
//!
//! A [`PipelineWorker`] per worker core owns everything it mutates — two flow tables (IPv4,
//! IPv6), the scheduler state, the ICMP and per-source token buckets, the [`Counters`] — and
//! reads the current table [`Generation`](switchyard_table::generation::Generation) through an
//! `Arc` swapped at burst boundaries ([`PipelineWorker::set_generation`]). No locks, no atomics,
//! no allocation and no hash map per packet. Every packet ends in one [`Verdict`]; every drop
//! is counted under its own [`Counter`] (names `drop_*`), and nothing a packet contains can
//! make a worker panic or loop: all bytes go through the checked views of [`crate::wire`] and
//! every table index through `get`.
//!
//! # Two phases
//!
//! Phase 1 (`classify`) parses, validates and classifies a packet against the generation and
//! computes its flow key and hash; it has no side effects. Phase 2 (`execute`) does the rest:
//! counters, tokens, the flow table, scheduling and rewriting the buffer.
//! [`PipelineWorker::process_burst`] runs phase 1 over up to [`BURST`] packets, warming each
//! packet's flow bucket, then phase 2 over them in order — the same result as
//! [`PipelineWorker::process`] per packet, with the bucket misses overlapped. The same three
//! steps are public ([`PipelineWorker::stage`], [`PipelineWorker::prefetch_entries`],
//! [`PipelineWorker::finish`]) so a poll loop can overlap bursts: classify the next burst while
//! the previous one's flow-table lines arrive, then execute the previous one.
//!
//! # Stages, in order, and where each is described
//!
//! | Stage | Code |
//! | --- | --- |
//! | L2: our MAC, broadcast ARP, IPv6 multicast; up to two VLAN tags; frames from the kernel port | `classify` |
//! | Local traffic: ARP, neighbour discovery, echo for own addresses and VIPs; the rest of own traffic to the kernel port | `classify`, `local` |
//! | Hostile input: header sanity, options, fragments, extension headers, checksums, martian sources, already-encapsulated traffic, TCP flags, TTL | `classify` |
//! | ACL on the source: one LPM walk, then the group's rules in policy order | `classify` |
//! | Service: VIP LPM → VIP group → protocol and port | `classify` |
//! | Connection table: a hit keeps its backend unless it left or is unhealthy; a non-SYN miss gets a provisional entry; under a flood new flows go by consistent hash without one | `worker` (module doc), [`crate::flow`] |
//! | New flows: per-source limiter, route by client region, canary, pool fallback, scheduler, bounded load | `limit`, `sched` |
//! | Encapsulation (IPIP, GUE) to the egress interface's gateway | `encap` |
//! | Too big after encapsulation: frag-needed / packet-too-big from the VIP | `local` |
//! | ICMP errors to a VIP, steered to their flow's backend | `classify`, `worker` |
//!
//! What each drop means is documented on its [`Counter`]; docs/ARCHITECTURE.md tells the life
//! of a packet end to end.
//!
//! # Why fragments are dropped
//!
//! Only the first fragment carries the ports, so the 5-tuple consistent hash cannot place the
//! others: they would need a reassembly or fragment-tracking table per worker — memory an
//! attacker can fill, and a slow path — for traffic that does not occur here. TCP clients do
//! path-MTU discovery (DF set) and get frag-needed / packet-too-big from us when the
//! encapsulated packet would not fit, QUIC sets DF too, and the inference APIs are TCP. So
//! IPv4 fragments and IPv6 fragment headers are dropped and counted.
//!
//! # Time
//!
//! `now_ms` is the worker's coarse monotonic clock in milliseconds (wrapping `u32`, as the flow
//! table expects). Call [`PipelineWorker::housekeeping`] once per burst (or idle poll): it
//! sweeps a few flow-table buckets so expired flows release their least-connection counts.
//!
//! # For the worker loop
//!
//! - One [`PipelineWorker`] per worker, built on its lcore ([`PipelineWorker::new`] allocates
//!   and touches all flow memory). Call [`PipelineWorker::set_worker_count`] once with the
//!   number of workers: `Config.icmp_rate` / `icmp_burst` are the appliance's budget and each
//!   worker takes its share.
//! - At a burst boundary, [`PipelineWorker::set_generation`] when the cell has a new one; a
//!   loop that overlaps bursts finishes its staged burst first (`finish` would classify it
//!   again otherwise), so the old generation's packets are done when the new one is reported.
//! - [`PipelineWorker::process_burst`] with `verdicts.len() >= pkts.len()` (or `stage` /
//!   `prefetch_entries` / `finish` per burst of at most [`BURST`]); the whole burst must
//!   come from one RX port. Packets must be contiguous (single segment): count others with
//!   [`PipelineWorker::count`]`(Counter::DropMultiSegment)`.
//! - Verdicts: `Forward(port)` — transmit the (rewritten) frame on that port; `Kernel` — to
//!   [`PipelineWorker::kernel_port`]; `Drop` — free it (already counted).
//! - Frames read from the kernel port go through the pipeline too (`rx_port` = the kernel
//!   port): each leaves by the port whose interface MAC is its source MAC, so give the tap the
//!   interface's MAC.
//! - Buffer room: encapsulation prepends at most 14 + 40 + 12 bytes after removing the L2
//!   header (the default 128-byte mbuf headroom is plenty); a neighbour advertisement may
//!   append 8 bytes. Without room: `drop_no_buffer_room`.
//! - Checksums are computed in software (outer IPv4 header; the UDP checksum of GUE over IPv6
//!   covers the whole packet); no offload flags are needed or set.
//! - Publish [`PipelineWorker::counters`] in [`Counter::ALL`] order.

mod classify;
mod counters;
mod encap;
mod limit;
mod local;
mod sched;
#[cfg(test)]
mod tests;
mod view;
mod worker;

pub use counters::{Counter, Counters};
pub use encap::gue_src_port;
pub use worker::{
    ip_hash_v4, ip_hash_v6, PipelineWorker, SampleScan, Staged, WorkerConfig, BURST, IP_HASH_SEED,
    SAMPLE_BUCKETS, SAMPLE_LIMIT, SWEEP_BUCKETS,
};

/// A packet's bytes plus the headroom in front of them, as an mbuf has.
pub trait PacketBuf {
    /// The frame, from the Ethernet header on.
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame at the front by `n` bytes (taken from the headroom); false when the
    /// headroom is too small, in which case nothing changed.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; false when the frame is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Cuts the frame to `len` bytes (no-op when already shorter or equal).
    fn truncate(&mut self, len: usize);
    /// Grows the frame at the tail by `n` bytes; false when there is no tailroom.
    fn append(&mut self, n: usize) -> bool;

    /// Whether [`PacketBuf::prefetch`] issues a real prefetch. When it does not, the pipeline
    /// warms flow-table lines with plain loads instead.
    const PREFETCH: bool = false;

    /// Hints the CPU to bring the cache line at `addr` in (never faults, never dereferenced by
    /// the caller). Buffers that live next to DPDK implement it with a prefetch instruction,
    /// keeping the `unsafe` in the DPDK module; the default does nothing.
    #[inline(always)]
    fn prefetch(_addr: *const u8) {}
}

/// Which appliance port (index into the appliance's port list) a packet leaves on.
pub type PortIndex = u16;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Forward(PortIndex),
    /// Hand to the host kernel through the exception-path port.
    Kernel,
    /// Drop; the reason has already been counted.
    Drop,
}

/// How ports map to the policy's interfaces and roles, fixed for the life of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMap {
    /// For each appliance port: the name of the policy interface bound to it (`None` for the
    /// exception-path port).
    pub interface: Vec<Option<String>>,
    /// The port encapsulated traffic to backends leaves on; `None` = back out of the RX port
    /// (one-armed).
    pub backend: Option<PortIndex>,
    /// The exception-path port to the kernel, if any.
    pub kernel: Option<PortIndex>,
}

/// A `Vec`-backed [`PacketBuf`] with headroom, for tests and fuzzing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecPacket {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecPacket {
    /// Headroom an mbuf has by default (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: usize = 128;
    /// Room after the data, like a 2048-byte mbuf data room.
    pub const CAPACITY: usize = 2048;

    pub fn new(frame: &[u8]) -> Self {
        let cap = (Self::HEADROOM + frame.len()).max(Self::HEADROOM + Self::CAPACITY);
        let mut buf = vec![0u8; cap];
        buf[Self::HEADROOM..Self::HEADROOM + frame.len()].copy_from_slice(frame);
        Self {
            buf,
            start: Self::HEADROOM,
            end: Self::HEADROOM + frame.len(),
        }
    }
}

impl VecPacket {
    /// Replaces the frame with `frame`, headroom restored, reusing the buffer (no allocation
    /// while `frame` fits the capacity), as a recycled mbuf would be.
    pub fn reset(&mut self, frame: &[u8]) {
        let end = Self::HEADROOM + frame.len();
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[Self::HEADROOM..end].copy_from_slice(frame);
        self.start = Self::HEADROOM;
        self.end = end;
    }
}

impl PacketBuf for VecPacket {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn truncate(&mut self, len: usize) {
        if len < self.end - self.start {
            self.end = self.start + len;
        }
    }
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.buf.len() {
            return false;
        }
        self.end += n;
        true
    }
}

#[cfg(test)]
mod vec_packet_tests {
    use super::*;

    #[test]
    fn headroom_and_tailroom_behave_like_an_mbuf() {
        let mut p = VecPacket::new(&[1, 2, 3]);
        assert!(p.prepend(2));
        assert_eq!(p.data(), &[0, 0, 1, 2, 3]);
        assert!(!p.prepend(VecPacket::HEADROOM));
        assert!(p.adj(3));
        assert_eq!(p.data(), &[2, 3]);
        assert!(!p.adj(3));
        p.truncate(1);
        assert_eq!(p.data(), &[2]);
        assert!(p.append(1));
        assert_eq!(p.data().len(), 2);
        p.reset(&[7, 8, 9]);
        assert_eq!(p.data(), &[7, 8, 9]);
        assert!(p.prepend(VecPacket::HEADROOM));
    }
}
