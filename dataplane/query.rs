//! Flow queries between the main lcore and the workers: `switchyard-control trace` and `flows`.
//!
//! The control plane's `Trace` and `Sample` messages arrive on the main lcore
//! ([`crate::control_channel`]); only a worker may read its own connection table. The
//! [`QueryBoard`] has one mailbox per worker, on its own cache line: the main lcore posts a
//! query into every mailbox and bumps its `posted` serial; a worker looks at that serial with one
//! load at its housekeeping tick (about every 100 µs, never per packet), takes the query, answers
//! it — a trace at once, a sample a slice of its table per tick — and publishes the answers with
//! a `finished` serial. The main lcore then forwards them on the data→control ring, each worker's
//! answers ended by a `Done`. The locks are only ever contended by these two for the time of a
//! move; a worker uses `try_lock` and tries again at its next tick, so it never waits.
//!
//! One query is in flight at a time; up to [`QUEUE`] more wait, the rest are refused with a
//! `Done` whose `scanned` is `u64::MAX` (the control plane reports "busy"). A query that is not
//! answered within [`TIMEOUT`] (a worker stopped?) is ended with that same refusal for the
//! workers that did not answer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use switchyard_table::shm::{FlowTuple, Message, Sample};

use crate::capture::{CaptureDesk, TapSlot};

/// Queries that may wait behind the one in flight.
pub const QUEUE: usize = 16;

/// How long the main lcore waits for every worker's answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// `Done.scanned` of a query that was not answered (queue full, or a worker did not answer).
pub const REFUSED: u64 = u64::MAX;

/// A query as the workers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    Trace { query: u32, flow: FlowTuple },
    Sample(Sample),
}

impl Query {
    #[must_use]
    pub fn id(&self) -> u32 {
        match self {
            Self::Trace { query, .. } => *query,
            Self::Sample(s) => s.query,
        }
    }

    /// The query a control-plane message asks, if it is one.
    #[must_use]
    pub fn from_message(m: &Message) -> Option<Self> {
        match *m {
            Message::Trace { query, flow } => Some(Self::Trace { query, flow }),
            Message::Sample(s) => Some(Self::Sample(s)),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Mailbox {
    posted: AtomicU64,
    finished: AtomicU64,
    request: Mutex<Option<(u64, Query)>>,
    answers: Mutex<Vec<Message>>,
}

/// One mailbox per worker, and one capture slot ([`crate::capture`]).
#[derive(Debug)]
pub struct QueryBoard {
    boxes: Vec<CachePadded<Mailbox>>,
    taps: Vec<CachePadded<TapSlot>>,
}

impl QueryBoard {
    #[must_use]
    pub fn new(workers: usize) -> Self {
        Self {
            boxes: (0..workers).map(|_| CachePadded::default()).collect(),
            taps: (0..workers).map(|_| CachePadded::default()).collect(),
        }
    }

    /// Worker `worker`'s capture slot.
    #[must_use]
    pub fn tap_slot(&self, worker: usize) -> Option<&TapSlot> {
        self.taps.get(worker).map(|s| &**s)
    }

    #[must_use]
    pub fn workers(&self) -> usize {
        self.boxes.len()
    }

    // ---- worker side ----------------------------------------------------------------------

    /// A query posted for `worker` since `seen` (then `seen` moves on), or `None`. One atomic
    /// load when there is none.
    pub fn take(&self, worker: usize, seen: &mut u64) -> Option<(u64, Query)> {
        let mb = self.boxes.get(worker)?;
        if mb.posted.load(Ordering::Acquire) == *seen {
            return None;
        }
        let mut req = mb.request.try_lock().ok()?;
        let (serial, q) = req.take()?;
        *seen = serial;
        Some((serial, q))
    }

    /// Worker `worker`'s answers to query `serial`. False when the mailbox was busy (the main
    /// lcore collecting): call again at the next tick.
    pub fn answer(&self, worker: usize, serial: u64, answers: &mut Vec<Message>) -> bool {
        let Some(mb) = self.boxes.get(worker) else {
            return true;
        };
        let Ok(mut out) = mb.answers.try_lock() else {
            return false;
        };
        out.clear();
        out.append(answers);
        drop(out);
        mb.finished.store(serial, Ordering::Release);
        true
    }

    // ---- main-lcore side ------------------------------------------------------------------

    fn post(&self, serial: u64, q: Query) {
        for mb in &self.boxes {
            if let Ok(mut req) = mb.request.lock() {
                *req = Some((serial, q));
            }
            mb.posted.store(serial, Ordering::Release);
        }
    }

    /// Worker `worker`'s answers if it finished query `serial`.
    fn collect(&self, worker: usize, serial: u64) -> Option<Vec<Message>> {
        let mb = self.boxes.get(worker)?;
        if mb.finished.load(Ordering::Acquire) != serial {
            return None;
        }
        mb.answers.lock().ok().map(|mut a| std::mem::take(&mut *a))
    }
}

#[derive(Debug)]
struct InFlight {
    serial: u64,
    query: Query,
    started: Instant,
    /// Workers whose answers were collected.
    collected: Vec<bool>,
}

/// The main lcore's side: the queue, the query in flight, and the messages to send.
#[derive(Debug)]
pub struct QueryDesk {
    board: std::sync::Arc<QueryBoard>,
    serial: u64,
    waiting: VecDeque<Query>,
    in_flight: Option<InFlight>,
    /// Answers not yet sent (the ring was full).
    outbox: VecDeque<Message>,
    /// Queries refused because the queue was full or a worker did not answer.
    pub refused: u64,
    /// Live captures and drop samples.
    pub capture: CaptureDesk,
}

impl QueryDesk {
    #[must_use]
    pub fn new(board: std::sync::Arc<QueryBoard>) -> Self {
        Self {
            board,
            serial: 0,
            waiting: VecDeque::new(),
            in_flight: None,
            outbox: VecDeque::new(),
            refused: 0,
            capture: CaptureDesk::default(),
        }
    }

    /// Starts capture `id` (the file `switchyard-<instance>.capture-<id>` in `dir`).
    ///
    /// # Errors
    /// See [`CaptureDesk::start`].
    pub fn start_capture(
        &mut self,
        dir: &std::path::Path,
        instance: &str,
        id: u32,
    ) -> Result<(), String> {
        self.capture.start(&self.board.taps, dir, instance, id)
    }

    fn refuse(&mut self, q: &Query, worker: u32) {
        self.refused += 1;
        self.outbox.push_back(Message::Done {
            query: q.id(),
            worker,
            matched: 0,
            scanned: REFUSED,
        });
    }

    /// A query from the control plane.
    pub fn submit(&mut self, q: Query) {
        if self.waiting.len() >= QUEUE {
            self.refuse(&q, u32::MAX);
        } else {
            self.waiting.push_back(q);
        }
    }

    /// Moves the work on: collects answers, posts the next query, watches the capture and
    /// collects drop samples. Call every poll.
    pub fn poll(&mut self, now: Instant) {
        self.capture.poll(&self.board.taps);
        if self.outbox.len() < 4 * crate::capture::SAMPLE_QUEUE {
            CaptureDesk::collect_samples(&self.board.taps, &mut self.outbox);
        }
        if let Some(f) = self.in_flight.as_mut() {
            let mut got = Vec::new();
            for (w, done) in f.collected.iter_mut().enumerate() {
                if !*done {
                    if let Some(answers) = self.board.collect(w, f.serial) {
                        *done = true;
                        got.extend(answers);
                    }
                }
            }
            self.outbox.extend(got);
            let all = f.collected.iter().all(|&d| d);
            if all {
                self.in_flight = None;
            } else if now.duration_since(f.started) > TIMEOUT {
                let missing: Vec<u32> = (0..f.collected.len())
                    .filter(|&w| !f.collected[w])
                    .filter_map(|w| u32::try_from(w).ok())
                    .collect();
                let q = f.query;
                self.in_flight = None;
                for w in missing {
                    self.refuse(&q, w);
                }
            }
        }
        if self.in_flight.is_none() {
            if let Some(q) = self.waiting.pop_front() {
                self.serial += 1;
                self.board.post(self.serial, q);
                self.in_flight = Some(InFlight {
                    serial: self.serial,
                    query: q,
                    started: now,
                    collected: vec![false; self.board.workers()],
                });
            }
        }
    }

    /// The next message to send; put it back with [`QueryDesk::unsend`] if the ring is full.
    pub fn next_message(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }

    pub fn unsend(&mut self, m: Message) {
        self.outbox.push_front(m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sample(query: u32) -> Query {
        Query::Sample(Sample {
            query,
            limit: 4,
            ..Sample::default()
        })
    }

    #[test]
    fn a_query_goes_to_every_worker_and_ends_with_their_answers() {
        let board = Arc::new(QueryBoard::new(2));
        let mut desk = QueryDesk::new(Arc::clone(&board));
        let t0 = Instant::now();
        desk.submit(sample(7));
        desk.submit(sample(8));
        desk.poll(t0);
        let mut seen = [0u64; 2];
        for (w, s) in seen.iter_mut().enumerate() {
            let (serial, q) = board.take(w, s).expect("posted");
            assert_eq!(q.id(), 7);
            assert!(board.take(w, s).is_none(), "taken once");
            let mut out = vec![Message::Done {
                query: 7,
                worker: u32::try_from(w).unwrap(),
                matched: 0,
                scanned: 10,
            }];
            assert!(board.answer(w, serial, &mut out));
        }
        desk.poll(t0);
        let sent: Vec<Message> = std::iter::from_fn(|| desk.next_message()).collect();
        assert_eq!(sent.len(), 2);
        // The second query went out once the first was answered.
        let (_, q) = board.take(0, &mut seen[0]).expect("the next query");
        assert_eq!(q.id(), 8);
    }

    #[test]
    fn a_worker_that_does_not_answer_is_refused_after_the_timeout() {
        let board = Arc::new(QueryBoard::new(2));
        let mut desk = QueryDesk::new(Arc::clone(&board));
        let t0 = Instant::now();
        desk.submit(sample(1));
        desk.poll(t0);
        let mut seen = 0;
        let (serial, _) = board.take(0, &mut seen).unwrap();
        assert!(board.answer(0, serial, &mut Vec::new()));
        desk.poll(t0 + TIMEOUT + Duration::from_millis(1));
        let sent: Vec<Message> = std::iter::from_fn(|| desk.next_message()).collect();
        assert_eq!(
            sent,
            vec![Message::Done {
                query: 1,
                worker: 1,
                matched: 0,
                scanned: REFUSED
            }]
        );
        assert_eq!(desk.refused, 1);
    }

    #[test]
    fn a_full_queue_refuses() {
        let board = Arc::new(QueryBoard::new(1));
        let mut desk = QueryDesk::new(board);
        for q in 0..=u32::try_from(QUEUE).unwrap() {
            desk.submit(sample(q));
        }
        assert_eq!(desk.refused, 1);
    }
}
