//! Handing table generations to workers without stopping them.
//!
//! The main lcore publishes a validated [`Generation`] into a [`GenerationCell`]. Each worker calls
//! [`GenerationCell::refresh`] at a burst boundary: one acquire load of a version counter when
//! nothing changed, so the hot path pays almost nothing. When the version moved, the worker takes
//! the new `Arc` (a short lock held only by the publisher and swapping workers, never by the
//! packet loop), drops its reference to the old one, and records the generation it now runs in
//! its own cache-padded slot: that is its quiescent state. A replaced generation stays in the
//! cell's retired list, so no worker ever drops the last reference to it: the main lcore frees it
//! ([`GenerationCell::reclaim`]) once no worker holds it any more — never a packet core, where
//! freeing a table of megabytes would stall the burst. The publisher learns that a generation is
//! live everywhere from [`GenerationCell::live_everywhere`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_utils::CachePadded;
use switchyard_table::generation::Generation;

/// No generation has been installed (or seen) yet.
pub const NO_GENERATION: u64 = u64::MAX;

/// The current generation and, per worker, the generation it runs.
#[derive(Debug)]
pub struct GenerationCell {
    version: CachePadded<AtomicU64>,
    current: Mutex<Option<Arc<Generation>>>,
    /// Replaced generations not freed yet (see [`GenerationCell::reclaim`]).
    retired: Mutex<Vec<Arc<Generation>>>,
    live: Vec<CachePadded<AtomicU64>>,
}

/// A worker's view: the generation it runs and the cell version it saw.
#[derive(Debug, Default)]
pub struct WorkerView {
    seen_version: u64,
    pub generation: Option<Arc<Generation>>,
}

impl GenerationCell {
    pub fn new(workers: usize) -> Self {
        Self {
            version: CachePadded::new(AtomicU64::new(0)),
            current: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
            live: (0..workers)
                .map(|_| CachePadded::new(AtomicU64::new(NO_GENERATION)))
                .collect(),
        }
    }

    /// Installs `g` as the current generation (main lcore). Workers pick it up at their next
    /// burst boundary.
    pub fn publish(&self, g: Arc<Generation>) {
        let old = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(g);
        if let Some(old) = old {
            self.retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(old);
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Main lcore: frees the replaced generations no worker holds any more; returns how many
    /// are still held. A worker cannot take a retired generation again (only the current one
    /// is handed out), so a reference count of one — the cell's — means nobody else has it.
    pub fn reclaim(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|g| Arc::strong_count(g) > 1);
        retired.len()
    }

    /// The generation most recently published, if any.
    pub fn current(&self) -> Option<Arc<Generation>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Worker side: whether a generation newer than `view`'s was published (one relaxed-cost
    /// load; nothing is switched or reported).
    #[inline]
    pub fn changed(&self, view: &WorkerView) -> bool {
        self.version.load(Ordering::Acquire) != view.seen_version
    }

    /// Worker side, once per burst: switches `view` to the current generation when it changed.
    /// Returns true when it switched.
    #[inline]
    pub fn refresh(&self, worker: usize, view: &mut WorkerView) -> bool {
        self.refresh_with(worker, view, |_| {})
    }

    /// [`GenerationCell::refresh`], calling `switch` with the new generation before reporting
    /// it live: a worker hands it to its pipeline there, so when its slot says "running N" it
    /// holds nothing older.
    #[inline]
    pub fn refresh_with(
        &self,
        worker: usize,
        view: &mut WorkerView,
        switch: impl FnOnce(&Arc<Generation>),
    ) -> bool {
        let v = self.version.load(Ordering::Acquire);
        if v == view.seen_version {
            return false;
        }
        let g = self.current();
        let id = g.as_ref().map_or(NO_GENERATION, |g| g.generation);
        if let Some(g) = &g {
            switch(g);
        }
        view.generation = g;
        view.seen_version = v;
        if let Some(slot) = self.live.get(worker) {
            slot.store(id, Ordering::Release);
        }
        true
    }

    /// The generation worker `worker` runs now.
    pub fn live_on(&self, worker: usize) -> u64 {
        self.live
            .get(worker)
            .map_or(NO_GENERATION, |s| s.load(Ordering::Acquire))
    }

    /// Whether every worker runs generation `id`.
    pub fn live_everywhere(&self, id: u64) -> bool {
        self.live.iter().all(|s| s.load(Ordering::Acquire) == id)
    }

    pub fn workers(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(id: u64) -> Arc<Generation> {
        Arc::new(Generation {
            generation: id,
            ..Default::default()
        })
    }

    #[test]
    fn workers_switch_at_their_own_pace_and_old_generations_are_freed() {
        let cell = GenerationCell::new(2);
        let mut a = WorkerView::default();
        let mut b = WorkerView::default();
        assert!(!cell.refresh(0, &mut a));
        let g1 = gen(1);
        let weak1 = Arc::downgrade(&g1);
        cell.publish(g1);
        assert!(cell.refresh(0, &mut a));
        assert!(!cell.live_everywhere(1));
        assert!(cell.refresh(1, &mut b));
        assert!(cell.live_everywhere(1));
        cell.publish(gen(2));
        // Seeing the change reports nothing: the worker may finish old-generation work first.
        assert!(cell.changed(&a));
        assert_eq!(cell.live_on(0), 1);
        assert!(cell.refresh(0, &mut a));
        assert!(!cell.changed(&a));
        assert_eq!(cell.live_on(0), 2);
        assert_eq!(cell.live_on(1), 1);
        assert!(
            weak1.upgrade().is_some(),
            "worker 1 still reads generation 1"
        );
        assert_eq!(cell.reclaim(), 1, "generation 1 is still held by worker 1");
        assert!(cell.refresh(1, &mut b));
        assert!(
            weak1.upgrade().is_some(),
            "a worker never drops the last reference"
        );
        assert_eq!(cell.reclaim(), 0);
        assert!(
            weak1.upgrade().is_none(),
            "freed by reclaim once no worker holds it"
        );
        assert!(cell.live_everywhere(2));
    }

    #[test]
    fn threads_converge_on_the_last_generation() {
        let cell = Arc::new(GenerationCell::new(2));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..2)
            .map(|w| {
                let (cell, stop) = (Arc::clone(&cell), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut view = WorkerView::default();
                    while !stop.load(Ordering::Relaxed) {
                        cell.refresh(w, &mut view);
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for id in 1..=200 {
            cell.publish(gen(id));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cell.live_everywhere(200) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
    }
}
