//! The control segment: the one piece of memory the control plane and the data plane share.
//!
//! Two processes on one host talk only through a file mapped by both,
//! `/dev/shm/switchyard-<instance>.ctl` (see [`files`] for the directory override), whose
//! `repr(C)` layout is defined once, in [`layout`]: an identity line, one line of fields the
//! control plane writes, one the data plane writes, per-worker status and counters with a name
//! table, and two single-producer single-consumer rings of 64-byte [`Message`]s — control→data
//! (`Install`) and data→control (`Ack`, `Live`, `Rejected`, `Event`). Table generations
//! themselves travel as files next to the segment (`switchyard-<instance>.gen-<N>`), named by
//! the `Install` message and validated by the data plane before use.
//!
//! Attach semantics. Either process may start first: [`Segment::open_or_create`] creates the
//! file if absent (mode 0660: owner and the instance's group), sizes it and initialises its
//! header under an exclusive `flock` (only when the magic is still zero, so racing starters
//! initialise it once), then checks
//! magic, ABI version and size, refusing a mismatch with an error naming the file and both
//! versions. Each process then claims its role ([`Segment::attach_control`],
//! [`Segment::attach_dataplane`]): an open-file-description lock on one byte of the file makes
//! a role exclusive and is dropped by the kernel when the process dies, however it dies. A
//! claim bumps that role's epoch, so the peer can tell a restart from a pause. A restarted
//! consumer starts at the ring's head: it learns the current state from the header (last
//! published generation, live generation), not from messages sent to its predecessor.
//!
//! Trust. Each side treats what the other wrote as untrusted: ring indices and messages are
//! validated ([`RingError`]), blobs are decoded with `Generation::decode`. Nothing here panics
//! on bad shared data. This is the crate's only module with `unsafe` code, all of it in `map`.
#![deny(unsafe_code)]

pub mod capture;
pub mod files;
pub mod layout;
#[allow(unsafe_code)]
mod map;
pub mod message;
mod ring;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub use files::{
    generation_path_in, read_generation_file, segment_path, segment_path_in, shm_dir,
    write_generation_file, BlobError, DEFAULT_INSTANCE, MAX_BLOB_SIZE, SHM_DIR_ENV,
};
pub use layout::{
    COUNTER_NAME_LEN, MAX_COUNTERS, MAX_WORKERS, NO_GENERATION, SEGMENT_ABI_VERSION, SEGMENT_SIZE,
};
pub use map::{monotonic_ms, SEGMENT_MODE};
pub use message::{
    Direction, FlowTuple, Install, Message, MessageError, RejectReason, Sample, Traced,
    TRACE_CANARY, TRACE_DROP, TRACE_FALLBACK, TRACE_FORWARD, TRACE_HELD, TRACE_LOCAL, TRACE_SPILL,
};
pub use ring::{PushError, RingError, RingErrorCounts};

use layout::COUNTER_NAME_LEN as NAME_BYTES;
use map::Mapping;
use ring::{Consumer, Producer, RingId};

/// The two processes sharing a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Control,
    Dataplane,
}

impl Role {
    fn index(self) -> usize {
        match self {
            Self::Control => 0,
            Self::Dataplane => 1,
        }
    }

    /// The byte of the file whose lock marks the role as taken: the first byte of the role's
    /// own header line.
    fn lock_byte(self) -> i32 {
        match self {
            Self::Control => 0x40,
            Self::Dataplane => 0x80,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Control => "control plane",
            Self::Dataplane => "data plane",
        }
    }
}

/// Why a segment could not be opened or attached.
#[derive(Debug)]
pub enum ShmError {
    InvalidInstance {
        instance: String,
    },
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    NotASegment {
        path: PathBuf,
        detail: String,
    },
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    SizeMismatch {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    UnsafeMode {
        path: PathBuf,
        mode: u32,
    },
    RoleTaken {
        path: PathBuf,
        role: Role,
        pid: u64,
    },
    /// The segment's header is bad (`error`), but processes still map it and one holds a role:
    /// an instance still running on a damaged segment.
    DamagedInUse {
        error: Box<ShmError>,
        role: Role,
        mappers: Vec<files::Mapper>,
    },
    /// The segment file is gone, but another process still runs on the removed segment: a new
    /// one would split the instance in two.
    RemovedInUse {
        path: PathBuf,
        /// The role that process holds on the removed segment, when it could be checked.
        role: Option<Role>,
        mapper: files::Mapper,
    },
}

impl std::fmt::Display for ShmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidInstance { instance } => write!(
                f,
                "instance name {instance:?}: expected 1-64 characters of A-Z a-z 0-9 _ -"
            ),
            Self::Io { path, op, source } => {
                write!(f, "control segment {}: {op}: {source}", path.display())
            }
            Self::NotASegment { path, detail } => write!(
                f,
                "{} is not a Switchyard control segment ({detail})",
                path.display()
            ),
            Self::AbiMismatch {
                path,
                found,
                expected,
            } => write!(
                f,
                "control segment {}: ABI version {found}, this build speaks version {expected}; \
                 stop both processes, remove the file and start them from the same release",
                path.display()
            ),
            Self::SizeMismatch {
                path,
                found,
                expected,
            } => write!(
                f,
                "control segment {}: {found} bytes, this build expects {expected}",
                path.display()
            ),
            Self::UnsafeMode { path, mode } => write!(
                f,
                "control segment {}: mode {mode:o} lets other users write it; \
                 expected 0660 (owner and the instance's group)",
                path.display()
            ),
            Self::RoleTaken { path, role, pid } => write!(
                f,
                "control segment {}: another {} is attached (pid {pid})",
                path.display(),
                role.name()
            ),
            Self::DamagedInUse {
                error,
                role,
                mappers,
            } => {
                let who: Vec<String> = mappers
                    .iter()
                    .map(|m| format!("pid {} ({})", m.pid, m.command))
                    .collect();
                let path = match error.as_ref() {
                    Self::NotASegment { path, .. }
                    | Self::AbiMismatch { path, .. }
                    | Self::SizeMismatch { path, .. } => path.display().to_string(),
                    _ => "the segment".to_owned(),
                };
                write!(
                    f,
                    "{error}; but a {} is still attached to it{} and runs on it: do not remove \
                     the file (a new segment would split the instance in two). To recover: stop \
                     the processes on it{}, remove {path}, then start the data plane and the \
                     control plane again",
                    role.name(),
                    if who.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", who.join(", "))
                    },
                    if *role == Role::Dataplane {
                        " (the data plane stops forwarding until it restarts)"
                    } else {
                        ""
                    }
                )
            }
            Self::RemovedInUse { path, role, mapper } => write!(
                f,
                "{} was removed, but pid {} ({}){} still runs on the removed segment; a new \
                 segment would split the instance in two (the new one with no data plane, the \
                 old data plane forwarding on what it has). To recover: stop pid {} (it keeps \
                 forwarding until then), then start the data plane and the control plane again",
                path.display(),
                mapper.pid,
                mapper.command,
                role.map(|r| format!(", a {},", r.name()))
                    .unwrap_or_default(),
                mapper.pid
            ),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What the control plane last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControlStatus {
    pub pid: u64,
    pub epoch: u64,
    pub last_published: u64,
    pub heartbeat_ms: u64,
}

/// What the data plane last wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataplaneStatus {
    pub pid: u64,
    pub epoch: u64,
    pub workers: u64,
    pub heartbeat_ms: u64,
    pub live_generation: u64,
    pub installed_generation: u64,
    pub last_rejected: u64,
}

/// One worker's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStatus {
    pub live_generation: u64,
    pub packets: u64,
    pub drops: u64,
}

/// A mapped control segment. Cheap to clone (shares the mapping).
#[derive(Debug, Clone)]
pub struct Segment {
    map: Arc<Mapping>,
}

impl Segment {
    /// Opens or creates `switchyard-<instance>.ctl` in [`shm_dir`].
    pub fn open_or_create(instance: &str) -> Result<Self, ShmError> {
        Self::open_or_create_in(&shm_dir(), instance)
    }

    /// Opens or creates `switchyard-<instance>.ctl` in `dir`.
    ///
    /// Refuses to create a segment while another process still runs on a removed one at that
    /// path ([`ShmError::RemovedInUse`]), and reports a damaged segment that a process still
    /// runs on as [`ShmError::DamagedInUse`], so that nobody "repairs" either by starting a
    /// second, disconnected instance.
    pub fn open_or_create_in(dir: &Path, instance: &str) -> Result<Self, ShmError> {
        files::check_instance(instance)?;
        let path = segment_path_in(dir, instance);
        if std::fs::symlink_metadata(&path).is_err() {
            if let Some(mapper) = files::processes_mapping(&path, true).into_iter().next() {
                let role = [Role::Dataplane, Role::Control]
                    .into_iter()
                    .find(|&r| map::role_held_at(&mapper.map_file, r) == Some(true));
                return Err(ShmError::RemovedInUse { path, role, mapper });
            }
        }
        match Mapping::open_or_create(&path) {
            Ok(map) => Ok(Self { map: Arc::new(map) }),
            Err(
                e @ (ShmError::NotASegment { .. }
                | ShmError::AbiMismatch { .. }
                | ShmError::SizeMismatch { .. }),
            ) => {
                let held = [Role::Dataplane, Role::Control]
                    .into_iter()
                    .find(|&r| map::role_held_at(&path, r) == Some(true));
                match held {
                    Some(role) => Err(ShmError::DamagedInUse {
                        error: Box::new(e),
                        role,
                        mappers: files::processes_mapping(&path, false),
                    }),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// Whether this open initialised the header (exactly one racing opener does).
    pub fn initialised_here(&self) -> bool {
        self.map.initialised_here()
    }

    /// Whether the segment's path still names the file this mapping uses. False once someone
    /// removed or replaced it: the peer that opens the path now would not see us.
    pub fn is_current(&self) -> bool {
        self.map.is_current()
    }

    /// Pid of the process that initialised the header.
    pub fn initialised_by(&self) -> u64 {
        self.map
            .layout()
            .identity
            .initialised_by
            .load(Ordering::Relaxed)
    }

    pub fn control_status(&self) -> ControlStatus {
        let c = &self.map.layout().control;
        ControlStatus {
            pid: c.pid.load(Ordering::Relaxed),
            epoch: c.epoch.load(Ordering::Acquire),
            last_published: c.last_published.load(Ordering::Acquire),
            heartbeat_ms: c.heartbeat_ms.load(Ordering::Relaxed),
        }
    }

    pub fn dataplane_status(&self) -> DataplaneStatus {
        let d = &self.map.layout().dataplane;
        DataplaneStatus {
            pid: d.pid.load(Ordering::Relaxed),
            epoch: d.epoch.load(Ordering::Acquire),
            workers: d.workers.load(Ordering::Relaxed),
            heartbeat_ms: d.heartbeat_ms.load(Ordering::Relaxed),
            live_generation: d.live_generation.load(Ordering::Acquire),
            installed_generation: d.installed_generation.load(Ordering::Acquire),
            last_rejected: d.last_rejected.load(Ordering::Acquire),
        }
    }

    /// Worker `worker`'s status line (`None` past [`MAX_WORKERS`]).
    pub fn worker_status(&self, worker: usize) -> Option<WorkerStatus> {
        let w = self.map.layout().workers.get(worker)?;
        Some(WorkerStatus {
            live_generation: w.live_generation.load(Ordering::Acquire),
            packets: w.packets.load(Ordering::Relaxed),
            drops: w.drops.load(Ordering::Relaxed),
        })
    }

    /// The counter names the data plane registered, in counter order.
    pub fn counter_names(&self) -> Vec<String> {
        let l = self.map.layout();
        let count = l.dataplane.counter_count.load(Ordering::Acquire);
        let count = usize::try_from(count).map_or(MAX_COUNTERS, |c| c.min(MAX_COUNTERS));
        l.counter_names[..count]
            .iter()
            .map(|n| {
                let mut bytes = [0u8; NAME_BYTES];
                for (chunk, w) in bytes.chunks_exact_mut(8).zip(&n.0) {
                    chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
                }
                crate::generation::fixed_str(&bytes).to_owned()
            })
            .collect()
    }

    /// Worker `worker`'s counters, as many as there are registered names.
    pub fn counters(&self, worker: usize) -> Option<Vec<u64>> {
        let l = self.map.layout();
        let block = l.counters.get(worker)?;
        let count = l.dataplane.counter_count.load(Ordering::Acquire);
        let count = usize::try_from(count).map_or(MAX_COUNTERS, |c| c.min(MAX_COUNTERS));
        Some(
            block.0[..count]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        )
    }

    /// Whether some process (this one included) has claimed `role`.
    pub fn is_attached(&self, role: Role) -> bool {
        self.map.role_held(role)
    }

    fn claim(&self, role: Role) -> Result<RoleGuard, ShmError> {
        if self.map.try_claim(role)? {
            return Ok(RoleGuard {
                segment: self.clone(),
                role,
            });
        }
        let l = self.map.layout();
        let pid = match role {
            Role::Control => &l.control.pid,
            Role::Dataplane => &l.dataplane.pid,
        };
        Err(ShmError::RoleTaken {
            path: self.path().to_path_buf(),
            role,
            pid: pid.load(Ordering::Relaxed),
        })
    }

    /// Claims the control plane's role: bumps the control epoch, records our pid, and returns
    /// the control end of both rings. Fails while another control plane is attached.
    pub fn attach_control(&self) -> Result<ControlEnd, ShmError> {
        let guard = self.claim(Role::Control)?;
        let c = &self.map.layout().control;
        c.pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        let epoch = c.epoch.load(Ordering::Relaxed).wrapping_add(1);
        c.epoch.store(epoch, Ordering::Release);
        c.heartbeat_ms.store(monotonic_ms(), Ordering::Relaxed);
        Ok(ControlEnd {
            to_data: Producer::attach(Arc::clone(&self.map), RingId::ControlToData),
            from_data: Consumer::attach_at_head(Arc::clone(&self.map), RingId::DataToControl),
            epoch,
            guard,
        })
    }

    /// Claims the data plane's role: bumps the data-plane epoch, records our pid, and returns
    /// the data-plane end of both rings. The control→data ring is consumed from its current
    /// head, so read [`ControlStatus::last_published`] after this call to catch up.
    pub fn attach_dataplane(&self) -> Result<DataplaneEnd, ShmError> {
        let guard = self.claim(Role::Dataplane)?;
        let d = &self.map.layout().dataplane;
        d.pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        // Consume from the head first: an Install skipped here was preceded by its
        // `last_published` store, which the Acquire load of the head makes visible.
        let from_control = Consumer::attach_at_head(Arc::clone(&self.map), RingId::ControlToData);
        let epoch = d.epoch.load(Ordering::Relaxed).wrapping_add(1);
        d.epoch.store(epoch, Ordering::Release);
        d.heartbeat_ms.store(monotonic_ms(), Ordering::Relaxed);
        Ok(DataplaneEnd {
            to_control: Producer::attach(Arc::clone(&self.map), RingId::DataToControl),
            from_control,
            epoch,
            guard,
        })
    }
}

/// Releases a role's lock when its end is dropped.
#[derive(Debug)]
struct RoleGuard {
    segment: Segment,
    role: Role,
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        self.segment.map.release(self.role);
    }
}

/// The control plane's side of the segment: it alone writes the control line, produces on
/// the control→data ring and consumes the data→control ring.
#[derive(Debug)]
pub struct ControlEnd {
    to_data: Producer,
    from_data: Consumer,
    epoch: u64,
    guard: RoleGuard,
}

impl ControlEnd {
    pub fn segment(&self) -> &Segment {
        &self.guard.segment
    }

    /// Our control epoch (1 for the first control plane of this segment).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records `generation` as the newest published one. Call before sending its `Install`.
    pub fn set_last_published(&self, generation: u64) {
        self.segment()
            .map
            .layout()
            .control
            .last_published
            .store(generation, Ordering::Release);
    }

    pub fn heartbeat(&self) {
        self.segment()
            .map
            .layout()
            .control
            .heartbeat_ms
            .store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Posts a control→data message.
    pub fn send(&mut self, msg: &Message) -> Result<(), PushError> {
        self.to_data.push(msg)
    }

    /// Takes the control→data ring's indices from the segment when they disagree with ours
    /// (a third party moved the head, and the data plane resynchronised to it): our head moves
    /// to the data plane's tail. Returns whether it did. Call before [`send_free`]: without it a
    /// forged head leaves the ring looking full forever.
    ///
    /// [`send_free`]: Self::send_free
    pub fn resync_send(&mut self) -> bool {
        self.to_data.resync()
    }

    /// Free slots on the control→data ring.
    pub fn send_free(&self) -> usize {
        self.to_data.free()
    }

    pub fn send_capacity(&self) -> usize {
        self.to_data.capacity()
    }

    /// The next data→control message (see [`RingError`] for what an `Err` means).
    pub fn recv(&mut self) -> Result<Option<Message>, RingError> {
        self.from_data.pop()
    }

    pub fn recv_pending(&self) -> u64 {
        self.from_data.pending()
    }

    pub fn ring_errors(&self) -> &RingErrorCounts {
        self.from_data.errors()
    }
}

/// The segment's per-worker counter rows (`WorkerCounters[64]`), shared with the data plane's
/// workers: each worker writes its own row, on cache lines no other worker writes, and the
/// control plane reads them, so a counter is copied once — from the worker's registers into
/// the segment. Holds the mapping alive.
#[derive(Debug, Clone)]
pub struct CounterRows {
    segment: Segment,
}

impl CounterRows {
    /// Worker `worker`'s row; `None` past [`MAX_WORKERS`].
    #[must_use]
    pub fn row(&self, worker: usize) -> Option<&layout::WorkerCounters> {
        self.segment.map.layout().counters.get(worker)
    }
}

/// The data plane's side of the segment: it alone writes the data-plane line, worker slots,
/// counters and names, produces on the data→control ring and consumes the control→data ring.
#[derive(Debug)]
pub struct DataplaneEnd {
    to_control: Producer,
    from_control: Consumer,
    epoch: u64,
    guard: RoleGuard,
}

impl DataplaneEnd {
    pub fn segment(&self) -> &Segment {
        &self.guard.segment
    }

    fn line(&self) -> &layout::DataplaneLine {
        &self.guard.segment.map.layout().dataplane
    }

    /// Our data-plane epoch (1 for the first data plane of this segment).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn set_workers(&self, workers: usize) {
        self.line().workers.store(workers as u64, Ordering::Relaxed);
    }

    pub fn heartbeat(&self) {
        self.line()
            .heartbeat_ms
            .store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn set_live_generation(&self, generation: u64) {
        self.line()
            .live_generation
            .store(generation, Ordering::Release);
    }

    pub fn set_installed_generation(&self, generation: u64) {
        self.line()
            .installed_generation
            .store(generation, Ordering::Release);
    }

    pub fn set_last_rejected(&self, generation: u64) {
        self.line()
            .last_rejected
            .store(generation, Ordering::Release);
    }

    /// Records the generation worker `worker` runs. False past [`MAX_WORKERS`].
    pub fn set_worker_live(&self, worker: usize, generation: u64) -> bool {
        let Some(w) = self.segment().map.layout().workers.get(worker) else {
            return false;
        };
        w.live_generation.store(generation, Ordering::Release);
        true
    }

    /// Records worker `worker`'s packet and drop totals. False past [`MAX_WORKERS`].
    pub fn set_worker_totals(&self, worker: usize, packets: u64, drops: u64) -> bool {
        let Some(w) = self.segment().map.layout().workers.get(worker) else {
            return false;
        };
        w.packets.store(packets, Ordering::Relaxed);
        w.drops.store(drops, Ordering::Relaxed);
        true
    }

    /// The counter rows of the segment, for the workers to write their own (see
    /// [`CounterRows`]).
    pub fn counter_rows(&self) -> CounterRows {
        CounterRows {
            segment: self.guard.segment.clone(),
        }
    }

    /// Copies worker `worker`'s counter snapshot (at most [`MAX_COUNTERS`] values, in name
    /// order). False past [`MAX_WORKERS`].
    pub fn publish_counters(&self, worker: usize, values: &[u64]) -> bool {
        let Some(block) = self.segment().map.layout().counters.get(worker) else {
            return false;
        };
        for (cell, &v) in block.0.iter().zip(values) {
            cell.store(v, Ordering::Relaxed);
        }
        true
    }

    /// Registers the counter names (at most [`MAX_COUNTERS`], each truncated to
    /// [`COUNTER_NAME_LEN`] bytes). Returns how many were stored.
    pub fn set_counter_names(&self, names: &[&str]) -> usize {
        let l = self.segment().map.layout();
        let n = names.len().min(MAX_COUNTERS);
        l.dataplane.counter_count.store(0, Ordering::Release);
        for (slot, name) in l.counter_names.iter().zip(names) {
            let bytes: [u8; NAME_BYTES] = crate::generation::fixed_name(name);
            for (w, chunk) in slot.0.iter().zip(bytes.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                w.store(u64::from_le_bytes(b), Ordering::Relaxed);
            }
        }
        l.dataplane.counter_count.store(n as u64, Ordering::Release);
        n
    }

    /// Posts a data→control message. Never blocks: a full ring is the caller's to count.
    pub fn send(&mut self, msg: &Message) -> Result<(), PushError> {
        self.to_control.push(msg)
    }

    /// The next control→data message (see [`RingError`] for what an `Err` means).
    pub fn recv(&mut self) -> Result<Option<Message>, RingError> {
        self.from_control.pop()
    }

    pub fn ring_errors(&self) -> &RingErrorCounts {
        self.from_control.errors()
    }
}

const _: () = assert!(NAME_BYTES.is_multiple_of(8));
