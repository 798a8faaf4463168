//! Publishing table generations to the data plane, and learning when they are live.
//!
//! [`Publisher::publish`] numbers a generation (one more than anything the segment has seen),
//! encodes it, writes the blob as `switchyard-<instance>.gen-<N>` (temp file + rename, mode
//! 0640: the instance's group, the data plane's, reads it), records `N` as the last published generation in the segment header, then posts
//! `Install { N, size, checksum }` on the control→data ring. Publishes may queue (up to the
//! ring's 256 slots); the data plane installs them in order, and a generation superseded before
//! it reached every worker is simply never reported live on its own.
//!
//! [`Publisher::poll`] drains the data→control ring: `Ack`s per worker, `Live` once every worker
//! runs a generation, `Rejected` with the reason's name when the data plane refused a blob (the
//! previous generation stays live). The header's live generation backs the messages up, so a
//! message lost to a full ring costs nothing but a latency sample. [`Publisher::wait_live`]
//! polls until a generation (or a newer one) is live everywhere, returns a rejection as an
//! error, and records publish → live latency, summarised by [`Publisher::latency`].
//!
//! Restarts. When the data plane's epoch changes (it restarted), `poll` posts the last published
//! generation's `Install` again; the new data plane has usually loaded that file at attach
//! already and answers with `Live`. A restarted control plane attaches, reads the last published
//! and live generations from the header and numbers its next generation after them, while the
//! data plane keeps forwarding with what it has.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_table::generation::{DecodeError, Generation, Header};
use switchyard_table::shm::{
    self, files, read_generation_file, write_generation_file, ControlEnd, Install, Message,
    PushError, RejectReason, Role, Segment, ShmError, MAX_BLOB_SIZE, NO_GENERATION,
};

/// Completed latencies kept for [`Publisher::latency`].
const LATENCY_WINDOW: usize = 4096;
/// Rejections, completions and events remembered.
const MEMORY: usize = 1024;
/// Messages drained per poll.
const MAX_MESSAGES_PER_POLL: usize = 4096;

/// The data plane refused a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub generation: u64,
    /// A [`RejectReason`] code.
    pub code: u32,
    /// The reason's name as the data plane sent it (e.g. `bad_checksum`).
    pub reason: String,
}

impl Rejection {
    pub fn reason(&self) -> Option<RejectReason> {
        RejectReason::from_code(self.code)
    }
}

/// A generation reached every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveReport {
    /// The generation waited for.
    pub generation: u64,
    /// The generation live everywhere now (equal, or newer when it was superseded).
    pub live_generation: u64,
    /// Workers that acknowledged `generation` individually.
    pub acks: u32,
    /// Publish → live on every worker, when this publisher published it and saw it go live.
    pub latency: Option<Duration>,
}

/// Publish → live latency over the last completed publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Something the data plane reported with an `Event` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataplaneEvent {
    pub kind: u32,
    pub a: u64,
    pub b: u64,
}

/// What one [`Publisher::poll`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollSummary {
    pub messages: usize,
    /// The data plane's epoch changed since the last poll (it started or restarted).
    pub dataplane_restarted: bool,
}

#[derive(Debug)]
pub enum PublishError {
    Segment(ShmError),
    /// The blob file could not be written (or re-read for a republish).
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The control→data ring is full: the data plane is not draining it.
    Busy {
        queued: usize,
    },
    /// The control→data ring refused the message (its indices were rewritten by someone).
    Ring(PushError),
    Encode(DecodeError),
    Rejected(Rejection),
    Timeout {
        generation: u64,
        live: u64,
        waited: Duration,
    },
    Gc {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Segment(e) => e.fmt(f),
            Self::Write { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Busy { queued } => write!(
                f,
                "{queued} installs are queued and the data plane is not taking them"
            ),
            Self::Ring(e) => write!(f, "control→data ring: {e}"),
            Self::Encode(e) => write!(f, "encoding the generation: {e}"),
            Self::Rejected(r) => write!(
                f,
                "the data plane refused generation {}: {} (code {}); the previous generation \
                 stays live",
                r.generation, r.reason, r.code
            ),
            Self::Timeout {
                generation,
                live,
                waited,
            } => write!(
                f,
                "generation {generation} not live on every worker after {waited:?} \
                 (live: {live})"
            ),
            Self::Gc { dir, source } => write!(f, "cleaning {}: {source}", dir.display()),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Segment(e) => Some(e),
            Self::Write { source, .. } | Self::Gc { source, .. } => Some(source),
            Self::Encode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ShmError> for PublishError {
    fn from(e: ShmError) -> Self {
        Self::Segment(e)
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    started: Instant,
    acked: u64,
}

#[derive(Debug, Clone, Copy)]
struct Completed {
    latency: Duration,
    acks: u32,
}

/// The control plane's side of the control segment.
#[derive(Debug)]
pub struct Publisher {
    end: ControlEnd,
    dir: PathBuf,
    instance: String,
    last_published: u64,
    /// The live generation as of the last poll.
    live: u64,
    /// `(generation, size, checksum)` of the last publish, for republishing.
    last_install: Option<Install>,
    dataplane_epoch: u64,
    restarts: u64,
    in_flight: BTreeMap<u64, InFlight>,
    completed: BTreeMap<u64, Completed>,
    rejected: BTreeMap<u64, Rejection>,
    latencies: VecDeque<Duration>,
    events: VecDeque<DataplaneEvent>,
    ring_resyncs: u64,
    /// Workers' answers to flow queries (`Flow`, `Traced`, `Done`), oldest first, until the
    /// controller takes them; bounded by [`MAX_ANSWERS`].
    answers: VecDeque<Message>,
}

/// Query answers kept for the controller (256 flows from each of 64 workers, and their `Done`s).
pub const MAX_ANSWERS: usize = 64 * 257;

fn remember<V>(map: &mut BTreeMap<u64, V>, key: u64, value: V) {
    map.insert(key, value);
    while map.len() > MEMORY {
        map.pop_first();
    }
}

impl Publisher {
    /// Attaches to `switchyard-<instance>.ctl` in [`shm::shm_dir`].
    pub fn attach(instance: &str) -> Result<Self, PublishError> {
        Self::attach_in(&shm::shm_dir(), instance)
    }

    /// Attaches to `switchyard-<instance>.ctl` in `dir`, creating it if the data plane has not:
    /// claims the control role (bumping the control epoch) and reads the last published and
    /// live generations. Fails while another control plane is attached.
    pub fn attach_in(dir: &Path, instance: &str) -> Result<Self, PublishError> {
        let segment = Segment::open_or_create_in(dir, instance)?;
        let end = segment.attach_control()?;
        let last_published = segment.control_status().last_published;
        Ok(Self {
            dataplane_epoch: segment.dataplane_status().epoch,
            end,
            dir: dir.to_path_buf(),
            instance: instance.to_owned(),
            last_published,
            live: segment.dataplane_status().live_generation,
            last_install: None,
            restarts: 0,
            in_flight: BTreeMap::new(),
            completed: BTreeMap::new(),
            rejected: BTreeMap::new(),
            latencies: VecDeque::new(),
            events: VecDeque::new(),
            ring_resyncs: 0,
            answers: VecDeque::new(),
        })
    }

    pub fn segment(&self) -> &Segment {
        self.end.segment()
    }

    /// The directory of the segment and its files.
    pub fn shm_dir(&self) -> &Path {
        &self.dir
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// This control plane's epoch.
    pub fn epoch(&self) -> u64 {
        self.end.epoch()
    }

    /// The newest generation published into the segment (by us or a predecessor; 0 = none).
    pub fn last_published(&self) -> u64 {
        self.last_published
    }

    /// The generation live on every worker, as the data plane last recorded it (0 = none).
    pub fn live_generation(&self) -> u64 {
        self.segment().dataplane_status().live_generation
    }

    /// The data plane's epoch: how many data planes have attached to the segment.
    pub fn dataplane_epoch(&self) -> u64 {
        self.segment().dataplane_status().epoch
    }

    /// Data-plane restarts noticed by [`poll`](Self::poll) since we attached.
    pub fn dataplane_restarts(&self) -> u64 {
        self.restarts
    }

    /// Whether a data plane holds its role on the segment now (the kernel drops it when the
    /// process dies).
    pub fn dataplane_attached(&self) -> bool {
        self.segment().is_attached(Role::Dataplane)
    }

    /// Time since the data plane's last heartbeat, if it ever beat.
    pub fn dataplane_heartbeat_age(&self) -> Option<Duration> {
        let beat = self.segment().dataplane_status().heartbeat_ms;
        (beat != 0).then(|| Duration::from_millis(shm::monotonic_ms().saturating_sub(beat)))
    }

    /// The refusal of `generation`, if the data plane refused it.
    pub fn rejection(&self, generation: u64) -> Option<&Rejection> {
        self.rejected.get(&generation)
    }

    /// Events reported by the data plane, oldest first (the last 1024 kept).
    pub fn take_events(&mut self) -> Vec<DataplaneEvent> {
        self.events.drain(..).collect()
    }

    /// Resynchronisations of the data→control ring, per reason.
    pub fn ring_errors(&self) -> &shm::RingErrorCounts {
        self.end.ring_errors()
    }

    /// Publishes `g` under the next generation number (the number in `g.generation` is
    /// ignored) and returns that number. Does not wait: see [`wait_live`](Self::wait_live).
    pub fn publish(&mut self, g: &Generation) -> Result<u64, PublishError> {
        let started = Instant::now();
        self.resync_ring();
        if self.end.send_free() == 0 {
            return Err(PublishError::Busy {
                queued: self.end.send_capacity(),
            });
        }
        let status = self.segment().dataplane_status();
        let generation = self
            .last_published
            .max(status.live_generation)
            .max(status.installed_generation)
            .max(status.last_rejected)
            + 1;
        let mut blob = g.encode();
        // The header's generation is outside the checksummed bytes, so numbering the blob
        // here needs no re-encoding.
        let at = std::mem::offset_of!(Header, generation);
        blob[at..at + 8].copy_from_slice(&generation.to_ne_bytes());
        let checksum = Generation::peek_header(&blob)
            .map_err(PublishError::Encode)?
            .checksum;
        write_generation_file(&self.dir, &self.instance, generation, &blob).map_err(|source| {
            PublishError::Write {
                path: shm::generation_path_in(&self.dir, &self.instance, generation),
                source,
            }
        })?;
        // Header before message: a data plane attaching between the two loads the file itself.
        self.end.set_last_published(generation);
        self.last_published = generation;
        let install = Install {
            generation,
            size: blob.len() as u64,
            checksum,
        };
        self.last_install = Some(install);
        self.in_flight
            .insert(generation, InFlight { started, acked: 0 });
        if let Err(e) = self.end.send(&Message::Install(install)) {
            // Only a third party rewriting the ring's indices gets here (we checked for room);
            // the header already names the generation, so a data-plane restart still loads it.
            self.in_flight.remove(&generation);
            return Err(PublishError::Ring(e));
        }
        Ok(generation)
    }

    /// Drains the data plane's messages, notices a data-plane restart (and republishes the last
    /// generation to it), and refreshes our heartbeat. Never blocks.
    pub fn poll(&mut self) -> PollSummary {
        let mut summary = PollSummary::default();
        self.end.heartbeat();
        for _ in 0..MAX_MESSAGES_PER_POLL {
            match self.end.recv() {
                Ok(Some(m)) => {
                    summary.messages += 1;
                    self.on_message(m);
                }
                Ok(None) => break,
                // Counted in `ring_errors`; the header still tells us what is live.
                Err(_) => {}
            }
        }
        let status = self.segment().dataplane_status();
        self.live = status.live_generation;
        if status.live_generation != NO_GENERATION {
            self.on_live(status.live_generation);
        }
        if status.epoch != self.dataplane_epoch {
            if self.dataplane_epoch != 0 {
                self.restarts += 1;
            }
            self.dataplane_epoch = status.epoch;
            summary.dataplane_restarted = true;
            // Best effort: the new data plane loads the last published file at attach anyway.
            let _ = self.republish();
        }
        summary
    }

    /// Posts the last published generation's `Install` again.
    fn republish(&mut self) -> Result<(), PublishError> {
        if self.last_published == NO_GENERATION {
            return Ok(());
        }
        let install = match self.last_install {
            Some(i) if i.generation == self.last_published => i,
            _ => {
                let path = shm::generation_path_in(&self.dir, &self.instance, self.last_published);
                let blob = read_generation_file(&path, MAX_BLOB_SIZE).map_err(|e| {
                    PublishError::Write {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                let header = Generation::peek_header(&blob).map_err(PublishError::Encode)?;
                Install {
                    generation: self.last_published,
                    size: blob.len() as u64,
                    checksum: header.checksum,
                }
            }
        };
        self.last_install = Some(install);
        self.resync_ring();
        self.end
            .send(&Message::Install(install))
            .map_err(PublishError::Ring)
    }

    /// Takes the control→data ring's indices from the segment when they disagree with ours
    /// (after the data plane resynchronised to a head someone else wrote).
    fn resync_ring(&mut self) {
        if self.end.resync_send() {
            self.ring_resyncs += 1;
            tracing::warn!(
                "the control→data ring's indices were not ours (rewritten by a third party?); \
                 took them from the segment, dropping what was queued"
            );
        }
    }

    /// How often the control→data ring's indices were taken from the segment.
    pub fn ring_resyncs(&self) -> u64 {
        self.ring_resyncs
    }

    fn on_message(&mut self, m: Message) {
        match m {
            Message::Ack { worker, generation } => {
                if let Some(f) = self.in_flight.get_mut(&generation) {
                    if worker < 64 {
                        f.acked |= 1 << worker;
                    }
                }
            }
            Message::Live { generation } => self.on_live(generation),
            Message::Rejected {
                generation, code, ..
            } => {
                let reason = m.reason_name().unwrap_or("").to_owned();
                self.in_flight.remove(&generation);
                remember(
                    &mut self.rejected,
                    generation,
                    Rejection {
                        generation,
                        code,
                        reason,
                    },
                );
            }
            Message::Event { kind, a, b } => {
                self.events.push_back(DataplaneEvent { kind, a, b });
                if self.events.len() > MEMORY {
                    self.events.pop_front();
                }
            }
            // Sampled drops ride with the query answers; the controller turns them into events.
            Message::Flow { .. }
            | Message::Traced(_)
            | Message::Done { .. }
            | Message::Dropped { .. } => {
                if self.answers.len() >= MAX_ANSWERS {
                    self.answers.pop_front();
                }
                self.answers.push_back(m);
            }
            // The ring refuses control→data kinds on this side.
            Message::Install(_)
            | Message::Trace { .. }
            | Message::Sample(_)
            | Message::Capture { .. } => {}
        }
    }

    /// Asks the data plane's workers a flow query (`Trace` or `Sample`); the answers arrive
    /// through [`Publisher::poll`] and wait in [`Publisher::take_answers`].
    ///
    /// # Errors
    /// The ring is full or its indices are not ours.
    pub fn send_query(&mut self, m: &Message) -> Result<(), shm::PushError> {
        self.resync_ring();
        self.end.send(m)
    }

    /// The query answers received so far (and forgets them).
    pub fn take_answers(&mut self) -> Vec<Message> {
        self.answers.drain(..).collect()
    }

    /// Every in-flight generation up to `live` is settled: `live` itself went live (a latency
    /// sample), older ones were superseded.
    fn on_live(&mut self, live: u64) {
        while let Some(entry) = self.in_flight.first_entry() {
            if *entry.key() > live {
                break;
            }
            let (generation, f) = entry.remove_entry();
            if generation == live {
                let latency = f.started.elapsed();
                self.latencies.push_back(latency);
                if self.latencies.len() > LATENCY_WINDOW {
                    self.latencies.pop_front();
                }
                remember(
                    &mut self.completed,
                    generation,
                    Completed {
                        latency,
                        acks: f.acked.count_ones(),
                    },
                );
            }
        }
    }

    /// Polls until `generation` (or a newer one) is live on every worker, the data plane refuses
    /// it, or `timeout` passes. A refusal is returned as [`PublishError::Rejected`].
    pub fn wait_live(
        &mut self,
        generation: u64,
        timeout: Duration,
    ) -> Result<LiveReport, PublishError> {
        let started = Instant::now();
        let mut rounds = 0u32;
        loop {
            self.poll();
            if let Some(r) = self.rejected.get(&generation) {
                return Err(PublishError::Rejected(r.clone()));
            }
            // The value this poll settled in-flight generations with, not a fresher read.
            let live = self.live;
            if live != NO_GENERATION && live >= generation {
                let done = self.completed.get(&generation);
                return Ok(LiveReport {
                    generation,
                    live_generation: live,
                    acks: done.map_or(0, |c| c.acks),
                    latency: done.map(|c| c.latency),
                });
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(PublishError::Timeout {
                    generation,
                    live,
                    waited,
                });
            }
            // Swaps take microseconds: spin politely first, then back off to short sleeps.
            rounds += 1;
            if rounds < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Publish → live latency over the last 4096 generations seen live.
    pub fn latency(&self) -> LatencySummary {
        let mut v: Vec<Duration> = self.latencies.iter().copied().collect();
        if v.is_empty() {
            return LatencySummary::default();
        }
        v.sort_unstable();
        // Nearest rank: the smallest sample with at least p% of samples at or below it.
        let rank = |p: usize| v[(v.len() * p).div_ceil(100).max(1) - 1];
        LatencySummary {
            samples: v.len(),
            p50: rank(50),
            p99: rank(99),
            max: v[v.len() - 1],
        }
    }

    /// Removes generation files (and leftover temp files) older than the live generation.
    /// Returns how many files were removed.
    pub fn gc(&mut self) -> Result<usize, PublishError> {
        let live = self.live_generation();
        if live == NO_GENERATION {
            return Ok(0);
        }
        let gc_err = |source| PublishError::Gc {
            dir: self.dir.clone(),
            source,
        };
        let mut removed = 0;
        for f in files::generation_files_in(&self.dir, &self.instance).map_err(gc_err)? {
            if f.generation < live && f.generation != self.last_published {
                match std::fs::remove_file(&f.path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(gc_err(e)),
                }
            }
        }
        Ok(removed)
    }
}
