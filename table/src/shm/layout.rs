//! The `repr(C)` layout of the control segment, defined once for both processes.
//!
//! Every field is an atomic integer. The segment is written by two processes (and, if someone
//! else can open the file, by anyone), so no byte of it is ever read through a plain reference:
//! atomics are valid for every bit pattern and make concurrent access defined behaviour. Which
//! process writes each cache line is part of the ABI, in the manner of DPDK's
//! `examples/multi_process/client_server_mp/shared/common.h`:
//!
//! ```text
//! offset   size     cache lines  written by            contents
//! 0x00000  0x40     1            creator, once         Identity: magic, ABI version, total size,
//!                                (under flock)         initialiser pid and time
//! 0x00040  0x40     1            control               ControlLine: pid, epoch, last published
//!                                                      generation, heartbeat
//! 0x00080  0x40     1            data plane            DataplaneLine: pid, epoch, workers,
//!                                                      heartbeat, live / installed / last
//!                                                      rejected generation, counter count
//! 0x000c0  0x40     1            nobody                reserved
//! 0x00100  0x1000   64 × 1       data plane            WorkerSlot[64]: live generation,
//!                                                      packets, drops (one line per worker)
//! 0x01100  0x1000   64           data plane, at start  CounterName[128]: 32-byte NUL-padded names
//! 0x02100  0x10000  64 × 16      data plane            WorkerCounters[64]: [u64; 128] per worker
//! 0x12100  0x4100   2×2 + 256    control→data ring     head (control), tail (data plane),
//!                                                      256 slots of 64 bytes (control)
//! 0x16200  0x10100  2×2 + 1024   data→control ring     head (data plane), tail (control),
//!                                                      1024 slots of 64 bytes (data plane)
//! 0x26300  64 × 0x32c80           each worker, its own  WorkerTelemetry[64]: header line
//!                                 block                (generation, swaps, busy/idle TSC
//!                                                      cycles, untracked packets), 16 port
//!                                                      lines, 1024 service rows, 4096
//!                                                      backend rows, top talkers (see below)
//! 0xcd8300                                             end (SEGMENT_SIZE, 12.8 MiB; sparse)
//! ```
//!
//! Telemetry ([`WorkerTelemetry`], one block per worker, written only by that worker; rows keyed
//! so the control plane can tell which service or backend a row counts for):
//!
//! ```text
//! +0x0      0x40     header      generation, swaps, busy_cycles, idle_cycles, tsc_hz,
//!                                untracked_packets, untracked_bytes
//! +0x40     0x400    ports       16 × PortRow: rx_packets, rx_bytes, tx_packets, tx_bytes
//!                                (one line each), by the appliance's port order
//! +0x440    0xa000   services    1024 × ServiceRow: key (service_key of its name; 0 = free),
//!                                packets, bytes, new_flows, active_flows
//! +0xa440   0x8000   backend ids 4096 × u64: the stable backend id a backend row counts for
//!                                (0 = free)
//! +0x12440  0x20000  backends    4096 × BackendRow: packets, bytes, new_flows, active_flows
//! +0x32440  0x840    talkers     TalkerBlock: the worker's heaviest source prefixes over its
//!                                last complete window (a header line under a sequence lock,
//!                                then 32 × TalkerEntry, one line each), see below
//! +0x32c80                       end of the block
//! ```
//!
//! Top talkers ([`TalkerBlock`]): each worker samples the packets it receives (on average one
//! in `sample_every`, at random gaps), counts the samples by source prefix in a Space-Saving
//! sketch of its own memory and, once a window (about a second) ends, writes the sketch's
//! heaviest entries here and starts a new window. The block is written under a sequence lock
//! (`seq` odd while the worker writes; a reader copies the block and keeps the copy only if
//! `seq` was even and unchanged). An entry's `samples` over-counts its prefix by at most its
//! `error` (Space-Saving's bound): `samples - error` is a lower bound of its samples.
//!
//! A row keeps its key while its service or backend is in the worker's generation, and after
//! it leaves until every other row is taken: a row is reused last-freed-last, so the control
//! plane sees a row's final counts before anything else is counted in it. A worker that gives
//! a row a new key zeroes its counters first, then stores the key (release).
//!
//! Ring heads and tails sit on 128-byte blocks of their own (two cache lines) so that the
//! adjacent-line prefetcher does not make the producer and the consumer share a line, the same
//! padding `rte_ring` uses. All integers are native-endian (the table ABI is little-endian only).
//! Generation numbers start at 1; 0 means "none".

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// `b"SWYDCTL\0"` read as a little-endian `u64`.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"SWYDCTL\0");
/// Bumped on any change to this layout, the message formats or their meaning. Version 3: the
/// per-worker telemetry blocks; 4: top talkers and per-service active flows in them.
pub const SEGMENT_ABI_VERSION: u32 = 4;
pub const CACHE_LINE: usize = 64;
/// Workers the segment has status and counter slots for.
pub const MAX_WORKERS: usize = 64;
/// Counters per worker.
pub const MAX_COUNTERS: usize = 128;
/// Bytes of one counter name (NUL-padded UTF-8).
pub const COUNTER_NAME_LEN: usize = 32;
/// Ports a worker's telemetry has rows for (the appliance's first 16 ports).
pub const MAX_TELEMETRY_PORTS: usize = 16;
/// Services a worker's telemetry has rows for; traffic of any further service is counted as
/// untracked.
pub const MAX_TELEMETRY_SERVICES: usize = 1024;
/// Backends a worker's telemetry has rows for; traffic to any further backend is counted as
/// untracked.
pub const MAX_TELEMETRY_BACKENDS: usize = 4096;
/// Entries of a worker's published top talkers.
pub const MAX_TALKERS: usize = 32;
/// Slots of the control→data ring.
pub const CONTROL_TO_DATA_CAPACITY: usize = 256;
/// Slots of the data→control ring (acks from up to 64 workers per generation fit many times).
pub const DATA_TO_CONTROL_CAPACITY: usize = 1024;
/// Bytes of one ring message.
pub const MESSAGE_SIZE: usize = 64;
/// Generation number meaning "none".
pub const NO_GENERATION: u64 = 0;

/// Written once by the process that creates the segment, while it holds the exclusive `flock`;
/// read-only afterwards.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Identity {
    /// [`SEGMENT_MAGIC`]; stored last, so a zero magic means "not initialised yet".
    pub magic: AtomicU64,
    /// [`SEGMENT_ABI_VERSION`].
    pub abi_version: AtomicU32,
    /// `size_of::<Identity>()`, so a future version can tell how much of the line it may read.
    pub identity_size: AtomicU32,
    /// [`SEGMENT_SIZE`] of the build that created the segment.
    pub total_size: AtomicU64,
    /// Pid of the process that initialised the header.
    pub initialised_by: AtomicU64,
    /// Wall-clock milliseconds since the Unix epoch at initialisation.
    pub initialised_ms: AtomicU64,
    pub _reserved: [AtomicU64; 3],
}

/// Written only by the control plane.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ControlLine {
    pub pid: AtomicU64,
    /// Incremented each time a control plane attaches.
    pub epoch: AtomicU64,
    /// The newest generation whose blob file exists and whose `Install` was (or is about to
    /// be) posted. Stored before the `Install` is pushed.
    pub last_published: AtomicU64,
    /// `CLOCK_MONOTONIC` milliseconds, refreshed on every control poll.
    pub heartbeat_ms: AtomicU64,
    pub _reserved: [AtomicU64; 4],
}

/// Written only by the data plane (its main lcore).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct DataplaneLine {
    pub pid: AtomicU64,
    /// Incremented each time a data plane attaches.
    pub epoch: AtomicU64,
    /// Worker count of the running data plane (at most [`MAX_WORKERS`] have slots).
    pub workers: AtomicU64,
    /// `CLOCK_MONOTONIC` milliseconds, refreshed on every data-plane poll (~1 ms).
    pub heartbeat_ms: AtomicU64,
    /// The generation every worker runs (0 = none yet).
    pub live_generation: AtomicU64,
    /// The generation handed to the workers most recently (may not be live everywhere yet).
    pub installed_generation: AtomicU64,
    /// The generation most recently refused.
    pub last_rejected: AtomicU64,
    /// Valid entries of the counter-name table.
    pub counter_count: AtomicU64,
}

/// One worker's status line, written by the data plane.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct WorkerSlot {
    /// The generation this worker runs (0 = none).
    pub live_generation: AtomicU64,
    pub packets: AtomicU64,
    pub drops: AtomicU64,
    pub _reserved: [AtomicU64; 5],
}

/// One counter name: [`COUNTER_NAME_LEN`] bytes, NUL-padded UTF-8, as little-endian words.
#[repr(C)]
#[derive(Debug)]
pub struct CounterName(pub [AtomicU64; COUNTER_NAME_LEN / 8]);

/// One worker's counters, indexed like the name table.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct WorkerCounters(pub [AtomicU64; MAX_COUNTERS]);

/// A ring index (head or tail) alone on two cache lines. Indices count messages since the
/// segment was created and never wrap in practice; a slot is `index % capacity`.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct RingIndex {
    pub value: AtomicU64,
    pub _pad: [AtomicU64; 15],
}

/// One 64-byte message slot.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Slot(pub [AtomicU64; MESSAGE_SIZE / 8]);

/// A single-producer single-consumer ring of fixed-size messages.
#[repr(C)]
#[derive(Debug)]
pub struct Ring<const N: usize> {
    /// Written by the producer only (Release after the slot is written).
    pub head: RingIndex,
    /// Written by the consumer only (after the slot is read).
    pub tail: RingIndex,
    /// Written by the producer only.
    pub slots: [Slot; N],
}

/// The header line of a worker's telemetry block.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TelemetryHeader {
    /// The generation the worker runs (whose services and backends its rows are keyed by).
    pub generation: AtomicU64,
    /// Generations this worker switched to since it started.
    pub swaps: AtomicU64,
    /// TSC cycles spent in polls that received packets.
    pub busy_cycles: AtomicU64,
    /// TSC cycles spent in polls that received nothing.
    pub idle_cycles: AtomicU64,
    /// TSC frequency, for turning cycles into seconds.
    pub tsc_hz: AtomicU64,
    /// Packets forwarded to a backend whose service or backend has no row.
    pub untracked_packets: AtomicU64,
    pub untracked_bytes: AtomicU64,
    pub _reserved: AtomicU64,
}

/// One port's traffic as one worker saw it: its own line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct PortRow {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub _reserved: [AtomicU64; 4],
}

/// One service's traffic as one worker forwarded it. Bytes are frame bytes as received.
#[repr(C)]
#[derive(Debug)]
pub struct ServiceRow {
    /// `telemetry::service_key` of the service's name; 0: a free row.
    pub key: AtomicU64,
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Flows this worker's connection table took in for the service.
    pub new_flows: AtomicU64,
    /// Flows of the service in this worker's connection tables, closing ones aside (refreshed
    /// about every 100 ms).
    pub active_flows: AtomicU64,
}

/// One backend's traffic as one worker forwarded it (its key is in `backend_ids`).
#[repr(C)]
#[derive(Debug)]
pub struct BackendRow {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub new_flows: AtomicU64,
    /// Flows on the backend in this worker's connection tables, closing ones aside (refreshed
    /// about every 100 ms).
    pub active_flows: AtomicU64,
}

/// The header line of a worker's top talkers: its last complete window.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TalkerHeader {
    /// Sequence lock: odd while the worker writes the block.
    pub seq: AtomicU64,
    /// Windows published since the worker started (0: none yet).
    pub window: AtomicU64,
    /// The window's length in TSC cycles (`TelemetryHeader::tsc_hz` turns it into seconds).
    pub window_cycles: AtomicU64,
    /// Packets the worker received in the window.
    pub packets: AtomicU64,
    /// Of those, the ones sampled into the sketch.
    pub samples: AtomicU64,
    /// Samples that were not IPv4 or IPv6 (ARP, ...) and counted for no prefix.
    pub non_ip: AtomicU64,
    /// Prefix lengths the entries are keyed by: IPv4 in bits 0..8, IPv6 in bits 8..16.
    pub prefix_lens: AtomicU64,
    /// Mean packets per sample the worker was set to (`talkers.sample_every`).
    pub sample_every: AtomicU64,
}

/// One source prefix of a worker's top talkers.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TalkerEntry {
    /// 4 or 6; 0: an unused entry (entries are in order of `samples`, used ones first).
    pub family: AtomicU64,
    /// The prefix's address, host bits zero, as a big-endian 128-bit number split in two
    /// (IPv4 in the low 32 bits of `addr_lo`).
    pub addr_hi: AtomicU64,
    pub addr_lo: AtomicU64,
    /// Samples counted for the prefix (Space-Saving: an over-count by at most `error`).
    pub samples: AtomicU64,
    pub error: AtomicU64,
    /// Frame bytes of those samples (over-counted like `samples`).
    pub bytes: AtomicU64,
    pub _reserved: [AtomicU64; 2],
}

/// A worker's top talkers (see the module doc).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TalkerBlock {
    pub header: TalkerHeader,
    pub entries: [TalkerEntry; MAX_TALKERS],
}

/// One worker's telemetry: written by that worker only, read by the control plane.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct WorkerTelemetry {
    pub header: TelemetryHeader,
    pub ports: [PortRow; MAX_TELEMETRY_PORTS],
    pub services: [ServiceRow; MAX_TELEMETRY_SERVICES],
    pub backend_ids: [AtomicU64; MAX_TELEMETRY_BACKENDS],
    pub backends: [BackendRow; MAX_TELEMETRY_BACKENDS],
    pub talkers: TalkerBlock,
}

/// The whole control segment.
#[repr(C)]
#[derive(Debug)]
pub struct SegmentLayout {
    pub identity: Identity,
    pub control: ControlLine,
    pub dataplane: DataplaneLine,
    pub _reserved: [AtomicU64; 8],
    pub workers: [WorkerSlot; MAX_WORKERS],
    pub counter_names: [CounterName; MAX_COUNTERS],
    pub counters: [WorkerCounters; MAX_WORKERS],
    pub control_to_data: Ring<CONTROL_TO_DATA_CAPACITY>,
    pub data_to_control: Ring<DATA_TO_CONTROL_CAPACITY>,
    pub telemetry: [WorkerTelemetry; MAX_WORKERS],
}

/// Bytes in the segment file.
pub const SEGMENT_SIZE: usize = size_of::<SegmentLayout>();

/// Byte offsets of each region, for readers in other languages and for tests that play a
/// hostile writer through the file.
pub mod offsets {
    pub const IDENTITY: usize = 0x0;
    pub const MAGIC: usize = 0x0;
    pub const ABI_VERSION: usize = 0x8;
    pub const TOTAL_SIZE: usize = 0x10;
    pub const CONTROL: usize = 0x40;
    pub const CONTROL_LAST_PUBLISHED: usize = 0x50;
    pub const DATAPLANE: usize = 0x80;
    pub const WORKERS: usize = 0x100;
    pub const COUNTER_NAMES: usize = 0x1100;
    pub const COUNTERS: usize = 0x2100;
    pub const CONTROL_TO_DATA: usize = 0x12100;
    pub const DATA_TO_CONTROL: usize = 0x16200;
    pub const TELEMETRY: usize = 0x26300;
    /// Bytes of one worker's telemetry block.
    pub const WORKER_TELEMETRY: usize = 0x32c80;
    /// Within a ring: head index, tail index, first slot.
    pub const RING_HEAD: usize = 0x0;
    pub const RING_TAIL: usize = 0x80;
    pub const RING_SLOTS: usize = 0x100;
    pub const END: usize = TELEMETRY + 64 * WORKER_TELEMETRY;
}

macro_rules! assert_layout {
    ($($t:ty => $size:expr, $align:expr;)*) => {
        $(
            const _: () = assert!(size_of::<$t>() == $size);
            const _: () = assert!(align_of::<$t>() == $align);
        )*
    };
}

assert_layout! {
    Identity => 64, 64;
    ControlLine => 64, 64;
    DataplaneLine => 64, 64;
    WorkerSlot => 64, 64;
    CounterName => 32, 8;
    WorkerCounters => 8 * MAX_COUNTERS, 64;
    RingIndex => 128, 128;
    Slot => MESSAGE_SIZE, 64;
    Ring<CONTROL_TO_DATA_CAPACITY> => 256 + 64 * CONTROL_TO_DATA_CAPACITY, 128;
    Ring<DATA_TO_CONTROL_CAPACITY> => 256 + 64 * DATA_TO_CONTROL_CAPACITY, 128;
    TelemetryHeader => 64, 64;
    PortRow => 64, 64;
    ServiceRow => 40, 8;
    BackendRow => 32, 8;
    TalkerHeader => 64, 64;
    TalkerEntry => 64, 64;
    TalkerBlock => 64 + 64 * MAX_TALKERS, 64;
    WorkerTelemetry => offsets::WORKER_TELEMETRY, 128;
    SegmentLayout => offsets::END, 128;
}

const _: () = {
    assert!(offset_of!(SegmentLayout, identity) == offsets::IDENTITY);
    assert!(offset_of!(Identity, magic) == offsets::MAGIC);
    assert!(offset_of!(Identity, abi_version) == offsets::ABI_VERSION);
    assert!(offset_of!(Identity, total_size) == offsets::TOTAL_SIZE);
    assert!(offset_of!(SegmentLayout, control) == offsets::CONTROL);
    assert!(
        offset_of!(SegmentLayout, control) + offset_of!(ControlLine, last_published)
            == offsets::CONTROL_LAST_PUBLISHED
    );
    assert!(offset_of!(SegmentLayout, dataplane) == offsets::DATAPLANE);
    assert!(offset_of!(SegmentLayout, workers) == offsets::WORKERS);
    assert!(offset_of!(SegmentLayout, counter_names) == offsets::COUNTER_NAMES);
    assert!(offset_of!(SegmentLayout, counters) == offsets::COUNTERS);
    assert!(offset_of!(SegmentLayout, control_to_data) == offsets::CONTROL_TO_DATA);
    assert!(offset_of!(SegmentLayout, data_to_control) == offsets::DATA_TO_CONTROL);
    assert!(offset_of!(SegmentLayout, telemetry) == offsets::TELEMETRY);
    assert!(offset_of!(WorkerTelemetry, ports) == 0x40);
    assert!(offset_of!(WorkerTelemetry, services) == 0x440);
    assert!(offset_of!(WorkerTelemetry, backend_ids) == 0xa440);
    assert!(offset_of!(WorkerTelemetry, backends) == 0x12440);
    assert!(offset_of!(WorkerTelemetry, talkers) == 0x32440);
    assert!(offsets::TELEMETRY.is_multiple_of(128));
    assert!(offset_of!(Ring<1>, head) == offsets::RING_HEAD);
    assert!(offset_of!(Ring<1>, tail) == offsets::RING_TAIL);
    assert!(offset_of!(Ring<1>, slots) == offsets::RING_SLOTS);
    assert!(CONTROL_TO_DATA_CAPACITY.is_power_of_two());
    assert!(DATA_TO_CONTROL_CAPACITY.is_power_of_two());
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
    // Every writer owns whole cache lines: no line is shared between the two processes.
    assert!(offsets::CONTROL.is_multiple_of(CACHE_LINE));
    assert!(offsets::DATAPLANE.is_multiple_of(CACHE_LINE));
    assert!(offsets::CONTROL_TO_DATA.is_multiple_of(128));
    assert!(offsets::DATA_TO_CONTROL.is_multiple_of(128));
};
