//! The data plane's end of the control segment: table installs in, acknowledgements out.
//!
//! The main lcore (never a worker) calls [`ControlChannel::poll`] about every 250 µs. A poll
//! drains the control→data ring; for each `Install` it reads the generation's blob file,
//! validates it with `Generation::decode` (the blob is untrusted: any failure is counted under
//! its reason's name, logged, and answered with `Rejected` while the last good generation stays
//! live), checks that its number, size and checksum match the message, and publishes it into the
//! [`GenerationCell`]. Workers pick it up at their next burst boundary; the poll then posts
//! `Ack { worker }` as each worker is seen running it, and `Live` once every worker does. It also
//! mirrors each worker's generation into the segment and refreshes the heartbeat.
//!
//! Restarts. At attach, the data plane reads from the segment header the generation the control
//! plane last published (falling back to the one its predecessor had live) and loads that file,
//! so a restarted data plane forwards with the current table without waiting for the control
//! plane. A control plane that restarts changes nothing here: forwarding goes on with what the
//! cell holds. An `Install` repeating the installed generation is a no-op (answered with `Live`
//! again when it is live), and an older one is refused as `stale`.
//!
//! This module is pure Rust (no DPDK), so it is built and tested without the `dpdk` feature.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_table::generation::Generation;
use switchyard_table::shm::{
    self, generation_path_in, read_generation_file, DataplaneEnd, Install, Message, PushError,
    RejectReason, Segment, ShmError, MAX_BLOB_SIZE, MAX_WORKERS, NO_GENERATION,
};
use tracing::{info, warn};

use crate::query::{Query, QueryBoard, QueryDesk, REFUSED};
use crate::swap::{self, GenerationCell};

/// Messages handled per poll: bounds the main lcore's time in one poll.
pub const MAX_MESSAGES_PER_POLL: usize = 64;

/// What one poll changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// The generation handed to the workers during this poll (the newest, if several).
    pub installed: Option<u64>,
    /// Generations refused during this poll.
    pub rejected: u32,
    /// The generation that became live on every worker during this poll.
    pub live: Option<u64>,
}

/// The channel's own counters (main lcore only).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    /// Generations published into the cell.
    pub installs: u64,
    /// `Install`s naming the generation already installed.
    pub repeats: u64,
    /// Refusals per [`RejectReason`], indexed by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
    pub acks_sent: u64,
    pub lives_sent: u64,
    /// Messages the data→control ring had no room for (the control plane is not draining).
    pub send_failures: u64,
}

impl ChannelStats {
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Installed {
    generation: u64,
    checksum: u64,
}

/// The installed generation not yet live on every worker.
#[derive(Debug, Clone, Copy)]
struct Awaiting {
    generation: u64,
    /// Workers (below [`MAX_WORKERS`]) already acknowledged.
    acked: u64,
}

/// A refusal: its reason and a human-readable detail for the log.
struct Refusal {
    reason: RejectReason,
    detail: String,
}

impl Refusal {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The data plane's side of the control segment.
#[derive(Debug)]
pub struct ControlChannel {
    end: DataplaneEnd,
    dir: PathBuf,
    instance: String,
    /// Loaded at attach, published into the cell by the first poll.
    preload: Option<(Generation, u64)>,
    installed: Option<Installed>,
    awaiting: Option<Awaiting>,
    live: u64,
    workers: usize,
    stats: ChannelStats,
    /// Flow queries (`trace`, `flows`), once the workers' board is set.
    queries: Option<QueryDesk>,
}

impl ControlChannel {
    /// Attaches to `switchyard-<instance>.ctl` in [`shm::shm_dir`] (`/dev/shm` unless
    /// `$SWITCHYARD_SHM_DIR` says otherwise).
    pub fn attach(instance: &str) -> Result<Self, ShmError> {
        Self::attach_in(&shm::shm_dir(), instance)
    }

    /// Attaches to `switchyard-<instance>.ctl` in `dir`: opens or creates the segment, claims
    /// the data plane's role (bumping its epoch), and loads the last published generation if
    /// its file is there. Fails if another data plane is attached.
    pub fn attach_in(dir: &Path, instance: &str) -> Result<Self, ShmError> {
        let segment = Segment::open_or_create_in(dir, instance)?;
        let end = segment.attach_dataplane()?;
        // Read after claiming the ring (see `Segment::attach_dataplane`).
        let last_published = segment.control_status().last_published;
        let previous_live = segment.dataplane_status().live_generation;
        end.set_live_generation(NO_GENERATION);
        end.set_installed_generation(NO_GENERATION);
        for w in 0..MAX_WORKERS {
            end.set_worker_live(w, NO_GENERATION);
        }
        let mut channel = Self {
            end,
            dir: dir.to_path_buf(),
            instance: instance.to_owned(),
            preload: None,
            installed: None,
            awaiting: None,
            live: NO_GENERATION,
            workers: 0,
            stats: ChannelStats::default(),
            queries: None,
        };
        info!(
            path = %segment.path().display(),
            epoch = channel.end.epoch(),
            last_published,
            "attached to the control segment"
        );
        let mut candidates = vec![last_published];
        if previous_live != last_published {
            candidates.push(previous_live);
        }
        for generation in candidates {
            if generation == NO_GENERATION {
                continue;
            }
            match channel.load(generation, None) {
                Ok(loaded) => {
                    info!(generation, "loaded the last published table generation");
                    channel.preload = Some(loaded);
                    break;
                }
                Err(refusal) => channel.reject(generation, &refusal),
            }
        }
        Ok(channel)
    }

    /// Polls the channel (main lcore, about every 250 µs). Never blocks.
    pub fn poll(&mut self, cell: &GenerationCell) -> PollReport {
        let mut report = PollReport::default();
        if cell.workers() != self.workers {
            self.workers = cell.workers();
            self.end.set_workers(self.workers);
        }
        if let Some((generation, checksum)) = self.preload.take() {
            self.install(cell, generation, checksum, &mut report);
        }
        for _ in 0..MAX_MESSAGES_PER_POLL {
            match self.end.recv() {
                Ok(Some(Message::Install(install))) => {
                    self.on_install(cell, install, &mut report);
                }
                Ok(Some(m @ (Message::Trace { .. } | Message::Sample(_)))) => self.on_query(&m),
                Ok(Some(Message::Capture { capture })) => self.on_capture(capture),
                // The ring refuses data→control kinds on this side (counted as
                // `wrong_direction`), so nothing else arrives here.
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => warn!(
                    error = e.name(),
                    "control→data ring resynchronised; queued messages dropped"
                ),
            }
        }
        self.track_workers(cell, &mut report);
        // Replaced generations are freed here, on the main lcore, never on a packet core.
        cell.reclaim();
        self.move_queries();
        self.end.heartbeat();
        report
    }

    /// Hands flow queries to the workers through `board` (see [`crate::query`]).
    pub fn set_queries(&mut self, board: std::sync::Arc<QueryBoard>) {
        self.queries = Some(QueryDesk::new(board));
    }

    /// Starts a live capture ([`crate::capture`]); a refused one is logged (the control plane
    /// sees the file never marked attached).
    fn on_capture(&mut self, id: u32) {
        let started = match self.queries.as_mut() {
            Some(desk) => desk.start_capture(&self.dir, &self.instance, id),
            None => Err(format!("capture {id}: no workers to capture on")),
        };
        match started {
            Ok(()) => tracing::info!(capture = id, "live capture started"),
            Err(e) => warn!("live capture refused: {e}"),
        }
    }

    fn on_query(&mut self, m: &Message) {
        let Some(q) = Query::from_message(m) else {
            return;
        };
        match self.queries.as_mut() {
            Some(desk) => desk.submit(q),
            // No workers to ask (a test, or `run --table`): refused at once.
            None => self.send(&Message::Done {
                query: q.id(),
                worker: u32::MAX,
                matched: 0,
                scanned: REFUSED,
            }),
        }
    }

    /// Collects workers' answers, posts the next query, sends what the ring has room for.
    fn move_queries(&mut self) {
        let Some(desk) = self.queries.as_mut() else {
            return;
        };
        desk.poll(std::time::Instant::now());
        while let Some(m) = desk.next_message() {
            match self.end.send(&m) {
                Ok(()) => {}
                Err(PushError::Full) => {
                    desk.unsend(m);
                    break;
                }
                Err(PushError::BadIndices | PushError::WrongDirection) => {
                    self.stats.send_failures += 1;
                }
            }
        }
    }

    fn on_install(&mut self, cell: &GenerationCell, install: Install, report: &mut PollReport) {
        let generation = install.generation;
        if let Some(current) = self.installed {
            if generation == current.generation && install.checksum == current.checksum {
                // The control plane asks again (it restarted, or saw us restart).
                self.stats.repeats += 1;
                if self.live == generation {
                    self.send(&Message::Live { generation });
                }
                return;
            }
            if generation <= current.generation {
                let refusal = Refusal::new(
                    RejectReason::Stale,
                    format!("generation {} is already installed", current.generation),
                );
                self.reject(generation, &refusal);
                report.rejected += 1;
                return;
            }
        }
        match self.load(generation, Some(install)) {
            Ok((g, checksum)) => self.install(cell, g, checksum, report),
            Err(refusal) => {
                self.reject(generation, &refusal);
                report.rejected += 1;
            }
        }
    }

    /// Reads and validates generation `generation`'s blob; `expect` is the `Install` naming it.
    fn load(&self, generation: u64, expect: Option<Install>) -> Result<(Generation, u64), Refusal> {
        let path = generation_path_in(&self.dir, &self.instance, generation);
        let blob = read_generation_file(&path, MAX_BLOB_SIZE)
            .map_err(|e| Refusal::new(e.reason(), format!("{}: {e}", path.display())))?;
        if let Some(i) = expect {
            if blob.len() as u64 != i.size {
                return Err(Refusal::new(
                    RejectReason::SizeMismatch,
                    format!(
                        "{}: {} bytes, the install message says {}",
                        path.display(),
                        blob.len(),
                        i.size
                    ),
                ));
            }
        }
        let g = Generation::decode(&blob).map_err(|e| {
            Refusal::new(
                RejectReason::from_decode(&e),
                format!("{}: {e}", path.display()),
            )
        })?;
        if g.generation != generation {
            return Err(Refusal::new(
                RejectReason::GenerationMismatch,
                format!("{} holds generation {}", path.display(), g.generation),
            ));
        }
        let checksum = Generation::peek_header(&blob)
            .map(|h| h.checksum)
            .map_err(|e| Refusal::new(RejectReason::from_decode(&e), e.to_string()))?;
        if let Some(i) = expect {
            if checksum != i.checksum {
                return Err(Refusal::new(
                    RejectReason::ChecksumMismatch,
                    format!(
                        "{}: checksum {checksum:#x}, the install message says {:#x}",
                        path.display(),
                        i.checksum
                    ),
                ));
            }
        }
        Ok((g, checksum))
    }

    fn install(
        &mut self,
        cell: &GenerationCell,
        g: Generation,
        checksum: u64,
        report: &mut PollReport,
    ) {
        let generation = g.generation;
        cell.publish(Arc::new(g));
        self.installed = Some(Installed {
            generation,
            checksum,
        });
        self.awaiting = Some(Awaiting {
            generation,
            acked: 0,
        });
        self.end.set_installed_generation(generation);
        self.stats.installs += 1;
        report.installed = Some(generation);
        info!(generation, "table generation handed to the workers");
    }

    fn reject(&mut self, generation: u64, refusal: &Refusal) {
        self.stats.rejected[refusal.reason.index()] += 1;
        self.end.set_last_rejected(generation);
        self.send(&Message::rejected(generation, refusal.reason));
        warn!(
            generation,
            reason = refusal.reason.name(),
            live = self.live,
            "refused table generation {generation}: {}; the live generation stays",
            refusal.detail
        );
    }

    /// Posts a data-plane event (`EVENT_*` kinds of the table crate's `shm::message`) for the
    /// control plane; counted in `send_failures` when the ring is full.
    pub fn post_event(&mut self, kind: u32, a: u64, b: u64) {
        self.send(&Message::Event { kind, a, b });
    }

    fn send(&mut self, msg: &Message) {
        match self.end.send(msg) {
            Ok(()) => match msg {
                Message::Ack { .. } => self.stats.acks_sent += 1,
                Message::Live { .. } => self.stats.lives_sent += 1,
                _ => {}
            },
            Err(PushError::Full | PushError::BadIndices | PushError::WrongDirection) => {
                self.stats.send_failures += 1;
            }
        }
    }

    fn track_workers(&mut self, cell: &GenerationCell, report: &mut PollReport) {
        let slots = self.workers.min(MAX_WORKERS);
        for w in 0..slots {
            let g = cell.live_on(w);
            let g = if g == swap::NO_GENERATION {
                NO_GENERATION
            } else {
                g
            };
            self.end.set_worker_live(w, g);
        }
        let Some(mut awaiting) = self.awaiting else {
            return;
        };
        let generation = awaiting.generation;
        for w in 0..slots {
            let bit = 1u64 << w;
            if awaiting.acked & bit == 0 && cell.live_on(w) == generation {
                awaiting.acked |= bit;
                self.send(&Message::Ack {
                    worker: u32::try_from(w).unwrap_or(u32::MAX),
                    generation,
                });
            }
        }
        if cell.live_everywhere(generation) {
            // Workers that switched after the loop above run it too.
            for w in 0..slots {
                if awaiting.acked & (1u64 << w) == 0 {
                    self.send(&Message::Ack {
                        worker: u32::try_from(w).unwrap_or(u32::MAX),
                        generation,
                    });
                }
            }
            self.live = generation;
            self.end.set_live_generation(generation);
            self.send(&Message::Live { generation });
            self.awaiting = None;
            report.live = Some(generation);
        } else {
            self.awaiting = Some(awaiting);
        }
    }

    /// The segment's counter rows, for the workers to write their own.
    pub fn counter_rows(&self) -> shm::CounterRows {
        self.end.counter_rows()
    }

    /// Copies worker `worker`'s counter snapshot into the segment, in the order of the names
    /// given to [`set_counter_names`](Self::set_counter_names). False past [`MAX_WORKERS`].
    pub fn publish_counters(&self, worker: usize, values: &[u64]) -> bool {
        self.end.publish_counters(worker, values)
    }

    /// Registers the counter names (at start; at most 128 of up to 32 bytes). Returns how many
    /// were stored.
    pub fn set_counter_names(&self, names: &[&str]) -> usize {
        self.end.set_counter_names(names)
    }

    /// Records worker `worker`'s packet and drop totals in its status line.
    pub fn set_worker_totals(&self, worker: usize, packets: u64, drops: u64) -> bool {
        self.end.set_worker_totals(worker, packets, drops)
    }

    /// The generation live on every worker (0 = none yet).
    pub fn live_generation(&self) -> u64 {
        self.live
    }

    /// The generation most recently handed to the workers (0 = none).
    pub fn installed_generation(&self) -> u64 {
        self.installed.map_or(NO_GENERATION, |i| i.generation)
    }

    /// The generation loaded at attach and not yet published into the cell.
    pub fn preloaded_generation(&self) -> Option<u64> {
        self.preload.as_ref().map(|(g, _)| g.generation)
    }

    /// This data plane's epoch (how many data planes have attached to the segment).
    pub fn epoch(&self) -> u64 {
        self.end.epoch()
    }

    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Resynchronisations of the control→data ring, per reason.
    pub fn ring_errors(&self) -> &shm::RingErrorCounts {
        self.end.ring_errors()
    }

    pub fn segment(&self) -> &Segment {
        self.end.segment()
    }
}
