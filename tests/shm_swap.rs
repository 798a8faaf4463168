//! The publish → install → live path end to end in one process: the control plane's `Publisher`
//! and the data plane's `ControlChannel` on one segment in a scratch directory, with a
//! `GenerationCell` and simulated workers. Neither side needs DPDK.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::os::unix::fs::FileExt;
use switchyard::control_channel::ControlChannel;
use switchyard::swap::{GenerationCell, WorkerView};
use switchyard_control::publish::{PublishError, Publisher};
use switchyard_table::builder::{BackendSpec, GenerationBuilder};
use switchyard_table::generation::{Generation, Scheduler};

use switchyard_table::shm::layout::offsets;
use switchyard_table::shm::{
    generation_path_in, write_generation_file, Install, Message, RejectReason, RingError, Segment,
};

const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory on tmpfs when there is one, like the real `/dev/shm`.
fn scratch(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = root.join(format!("swyd-swap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small valid generation: one pool with one backend and a 7-slot Maglev table.
fn small(seed: u32) -> Generation {
    let [_, _, hi, lo] = seed.to_be_bytes();
    GenerationBuilder::new()
        .config(|c| c.new_flow_rate = seed)
        .pool(
            "pool",
            Scheduler::Maglev,
            &[BackendSpec::new(Ipv4Addr::new(10, 0, hi, lo))],
        )
        .build()
}

/// Both processes' parts, stepped by hand in one thread: deterministic interleavings.
struct Rig {
    dir: PathBuf,
    publisher: Publisher,
    channel: Option<ControlChannel>,
    cell: GenerationCell,
    views: Vec<WorkerView>,
}

impl Rig {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            publisher: Publisher::attach_in(dir, "t").unwrap(),
            channel: Some(ControlChannel::attach_in(dir, "t").unwrap()),
            cell: GenerationCell::new(2),
            views: vec![WorkerView::default(), WorkerView::default()],
        }
    }

    fn channel(&self) -> &ControlChannel {
        self.channel.as_ref().expect("data plane running")
    }

    /// The data plane exits: its channel, cell and workers go away.
    fn stop_dataplane(&mut self) {
        self.channel = None;
        self.cell = GenerationCell::new(2);
        self.views = vec![WorkerView::default(), WorkerView::default()];
    }

    fn start_dataplane(&mut self) {
        assert!(self.channel.is_none());
        self.channel = Some(ControlChannel::attach_in(&self.dir, "t").unwrap());
    }

    /// One data-plane round: the main lcore polls, each worker reaches a burst boundary, the
    /// main lcore polls again.
    fn step(&mut self) {
        let channel = self.channel.as_mut().expect("data plane running");
        channel.poll(&self.cell);
        for (w, v) in self.views.iter_mut().enumerate() {
            self.cell.refresh(w, v);
        }
        channel.poll(&self.cell);
    }

    fn publish_live(&mut self, seed: u32) -> u64 {
        let n = self.publisher.publish(&small(seed)).unwrap();
        self.step();
        let report = self.publisher.wait_live(n, WAIT).unwrap();
        assert_eq!(report.live_generation, n);
        n
    }

    fn forwarding_with(&self) -> Vec<u64> {
        self.views
            .iter()
            .map(|v| v.generation.as_ref().map_or(0, |g| g.generation))
            .collect()
    }

    fn corrupt(&self, generation: u64, edit: impl FnOnce(&mut Vec<u8>)) {
        let path = generation_path_in(&self.dir, "t", generation);
        let mut blob = std::fs::read(&path).unwrap();
        edit(&mut blob);
        std::fs::write(&path, blob).unwrap();
    }
}

#[test]
fn a_thousand_generations_each_acknowledged_and_live_on_every_worker() {
    let dir = scratch("thousand");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut channel = ControlChannel::attach_in(&dir, "t").unwrap();
    let cell = Arc::new(GenerationCell::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (cell, stop) = (Arc::clone(&cell), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut view = WorkerView::default();
                while !stop.load(Ordering::Relaxed) {
                    cell.refresh(w, &mut view);
                    std::thread::yield_now();
                }
                view.generation.map_or(0, |g| g.generation)
            })
        })
        .collect();
    let main_lcore = {
        let (cell, stop) = (Arc::clone(&cell), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                channel.poll(&cell);
                std::thread::yield_now();
            }
            channel
        })
    };

    const N: u32 = 1000;
    let mut total_acks = 0;
    let mut publish_calls = Vec::new();
    for seed in 1..=N {
        let t = std::time::Instant::now();
        let n = publisher.publish(&small(seed)).unwrap();
        publish_calls.push(t.elapsed());
        assert_eq!(n, u64::from(seed));
        let report = publisher.wait_live(n, WAIT).unwrap();
        assert_eq!(report.live_generation, n, "generation {n}");
        assert!(report.latency.is_some(), "generation {n} seen live");
        total_acks += report.acks;
        if seed % 100 == 0 {
            // Everything older than the live generation: 1..=99 the first time, then 100 more.
            let expect = if seed == 100 { 99 } else { 100 };
            assert_eq!(publisher.gc().unwrap(), expect);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let channel = main_lcore.join().unwrap();
    for w in workers {
        assert_eq!(w.join().unwrap(), u64::from(N));
    }
    let lat = publisher.latency();
    publish_calls.sort_unstable();
    println!(
        "publish -> live on 2 workers over {} generations: p50 {} us, p99 {} us, max {} us \
         (of which publish() itself, encode + blob file: p50 {} us; {total_acks} worker acks)",
        lat.samples,
        lat.p50.as_micros(),
        lat.p99.as_micros(),
        lat.max.as_micros(),
        publish_calls[publish_calls.len() / 2].as_micros(),
    );
    assert_eq!(lat.samples, N as usize);
    assert!(lat.p50 <= lat.p99 && lat.p99 <= lat.max);
    // Acks race the header: `wait_live` may return before the last acks are drained.
    assert!(total_acks >= N, "{total_acks}");
    let stats = channel.stats();
    assert_eq!(stats.installs, u64::from(N));
    assert_eq!(stats.lives_sent, u64::from(N));
    assert_eq!(stats.acks_sent, 2 * u64::from(N));
    assert_eq!(stats.rejected_total(), 0);
    assert_eq!(stats.send_failures, 0);
    assert_eq!(channel.ring_errors().total(), 0);
    assert_eq!(publisher.ring_errors().total(), 0);
    let seg = publisher.segment();
    assert_eq!(seg.dataplane_status().workers, 2);
    assert_eq!(seg.worker_status(0).unwrap().live_generation, u64::from(N));
    assert_eq!(seg.worker_status(1).unwrap().live_generation, u64::from(N));
    assert_eq!(cell.current().unwrap().config.new_flow_rate, N);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupted_blobs_are_refused_with_their_reason_and_the_last_good_one_stays_live() {
    let dir = scratch("corrupt");
    let mut rig = Rig::new(&dir);
    let good = rig.publish_live(1);
    assert_eq!(rig.forwarding_with(), [good, good]);

    type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;
    let cases: [(&str, Edit, RejectReason); 4] = [
        (
            "a flipped payload byte",
            Box::new(|b| {
                let last = b.len() - 1;
                b[last] ^= 0x40;
            }),
            RejectReason::BadChecksum,
        ),
        (
            "a foreign file",
            Box::new(|b| b[..8].copy_from_slice(b"NOTATABL")),
            RejectReason::BadMagic,
        ),
        (
            "a truncated file",
            Box::new(|b| b.truncate(b.len() - 64)),
            RejectReason::SizeMismatch,
        ),
        (
            "another generation's number",
            Box::new(|b| b[16..24].copy_from_slice(&77u64.to_le_bytes())),
            RejectReason::GenerationMismatch,
        ),
    ];
    for (seed, (what, edit, reason)) in (2..).zip(cases) {
        let n = rig.publisher.publish(&small(seed)).unwrap();
        rig.corrupt(n, edit);
        rig.step();
        let err = rig.publisher.wait_live(n, WAIT).unwrap_err();
        let PublishError::Rejected(r) = &err else {
            panic!("{what}: {err}");
        };
        assert_eq!(r.reason, reason.name(), "{what}");
        assert_eq!(r.reason(), Some(reason), "{what}");
        assert_eq!(rig.channel().stats().rejected(reason), 1, "{what}");
        assert_eq!(rig.forwarding_with(), [good, good], "{what}");
        assert_eq!(rig.cell.current().unwrap().generation, good, "{what}");
        assert_eq!(rig.publisher.live_generation(), good, "{what}");
        assert_eq!(rig.publisher.segment().dataplane_status().last_rejected, n);
    }
    // A missing file is refused too, and a good generation afterwards goes live.
    let n = rig.publisher.publish(&small(9)).unwrap();
    std::fs::remove_file(generation_path_in(&dir, "t", n)).unwrap();
    rig.step();
    let err = rig.publisher.wait_live(n, WAIT).unwrap_err();
    assert!(err.to_string().contains("blob_missing"), "{err}");
    let next = rig.publish_live(10);
    assert_eq!(rig.forwarding_with(), [next, next]);
    assert_eq!(rig.channel().stats().rejected_total(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restarted_data_plane_starts_with_the_last_published_generation() {
    let dir = scratch("dp-restart");
    let mut rig = Rig::new(&dir);
    let first = rig.publish_live(1);
    assert_eq!(rig.channel().epoch(), 1);
    // The data plane goes away; the control plane publishes while it is down.
    rig.stop_dataplane();
    let n = rig.publisher.publish(&small(2)).unwrap();
    // The header keeps what the dead data plane last ran; its role lock is gone.
    assert!(!rig.publisher.dataplane_attached());
    assert!(matches!(
        rig.publisher.wait_live(n, Duration::from_millis(10)),
        Err(PublishError::Timeout { live, .. }) if live == first
    ));
    rig.start_dataplane();
    assert_eq!(rig.channel().epoch(), 2);
    assert_eq!(rig.channel().preloaded_generation(), Some(n));
    // The workers run it from the first round, before the control plane says anything.
    rig.step();
    assert_eq!(rig.forwarding_with(), [n, n]);
    assert_eq!(rig.channel().live_generation(), n);
    // The control plane notices the restart and republishes; the data plane confirms.
    let summary = rig.publisher.poll();
    assert!(summary.dataplane_restarted);
    assert_eq!(rig.publisher.dataplane_restarts(), 1);
    rig.step();
    assert_eq!(rig.channel().stats().repeats, 1);
    let report = rig.publisher.wait_live(n, WAIT).unwrap();
    assert_eq!(report.live_generation, n);
    assert!(n > first);
    let next = rig.publish_live(3);
    assert_eq!(rig.forwarding_with(), [next, next]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restarted_data_plane_falls_back_to_the_last_live_generation_when_the_newest_is_bad() {
    let dir = scratch("dp-fallback");
    let mut rig = Rig::new(&dir);
    let good = rig.publish_live(1);
    let bad = rig.publisher.publish(&small(2)).unwrap();
    rig.corrupt(bad, |b| {
        let last = b.len() - 1;
        b[last] ^= 1;
    });
    rig.step();
    assert!(rig.publisher.wait_live(bad, WAIT).is_err());
    rig.stop_dataplane();
    rig.start_dataplane();
    assert_eq!(rig.channel().preloaded_generation(), Some(good));
    assert_eq!(
        rig.channel().stats().rejected(RejectReason::BadChecksum),
        1,
        "the newest file was tried first and refused"
    );
    rig.step();
    assert_eq!(rig.forwarding_with(), [good, good]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restarted_control_plane_reads_the_live_generation_while_forwarding_goes_on() {
    let dir = scratch("control-restart");
    let mut rig = Rig::new(&dir);
    for seed in 1..=3 {
        rig.publish_live(seed);
    }
    let epoch = rig.publisher.epoch();
    // Replace the control plane: the old one must let go of its role first.
    let placeholder = scratch("control-restart-placeholder");
    let old = std::mem::replace(
        &mut rig.publisher,
        Publisher::attach_in(&placeholder, "t").unwrap(),
    );
    drop(old);
    for _ in 0..3 {
        rig.step();
        assert_eq!(rig.forwarding_with(), [3, 3], "forwarding goes on");
    }
    rig.publisher = Publisher::attach_in(&dir, "t").unwrap();
    assert_eq!(rig.publisher.epoch(), epoch + 1);
    assert_eq!(rig.publisher.live_generation(), 3);
    assert_eq!(rig.publisher.last_published(), 3);
    assert!(rig.publisher.dataplane_attached());
    assert!(rig.publisher.dataplane_heartbeat_age().unwrap() < Duration::from_secs(5));
    let n = rig.publish_live(4);
    assert_eq!(n, 4);
    assert_eq!(rig.forwarding_with(), [4, 4]);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&placeholder).unwrap();
}

#[test]
fn counters_published_by_the_data_plane_are_readable_by_the_control_plane() {
    let dir = scratch("counters");
    let rig = Rig::new(&dir);
    assert_eq!(
        rig.channel().set_counter_names(&["rx", "tx", "no_service"]),
        3
    );
    assert!(rig.channel().publish_counters(1, &[100, 90, 10]));
    assert!(rig.channel().set_worker_totals(1, 100, 10));
    let seg = rig.publisher.segment();
    assert_eq!(seg.counter_names(), ["rx", "tx", "no_service"]);
    assert_eq!(seg.counters(1).unwrap(), [100, 90, 10]);
    let w = seg.worker_status(1).unwrap();
    assert_eq!((w.packets, w.drops), (100, 10));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forged_installs_and_ring_garbage_are_refused_by_name_without_disturbing_forwarding() {
    // A control plane that misbehaves, played with the raw segment API.
    let dir = scratch("forged");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut channel = ControlChannel::attach_in(&dir, "t").unwrap();
    let cell = GenerationCell::new(2);
    let mut views = [WorkerView::default(), WorkerView::default()];
    let mut step = |channel: &mut ControlChannel| {
        channel.poll(&cell);
        for (w, v) in views.iter_mut().enumerate() {
            cell.refresh(w, v);
        }
        channel.poll(&cell)
    };
    let write = |n: u64, seed: u32| {
        let mut g = small(seed);
        g.generation = n;
        let blob = g.encode();
        write_generation_file(&dir, "t", n, &blob).unwrap();
        Install {
            generation: n,
            size: blob.len() as u64,
            checksum: Generation::peek_header(&blob).unwrap().checksum,
        }
    };
    let good = write(5, 5);
    control.send(&Message::Install(good)).unwrap();
    step(&mut channel);
    assert_eq!(channel.live_generation(), 5);
    let drain = |control: &mut switchyard_table::shm::ControlEnd| {
        std::iter::from_fn(|| control.recv().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(
        drain(&mut control),
        [
            Message::Ack {
                worker: 0,
                generation: 5
            },
            Message::Ack {
                worker: 1,
                generation: 5
            },
            Message::Live { generation: 5 }
        ]
    );

    let cases = [
        (
            Install {
                checksum: good.checksum ^ 1,
                ..write(6, 6)
            },
            RejectReason::ChecksumMismatch,
        ),
        (
            Install {
                size: 64,
                ..write(7, 7)
            },
            RejectReason::SizeMismatch,
        ),
        (write(4, 4), RejectReason::Stale),
        (
            Install {
                checksum: 1,
                ..good
            },
            RejectReason::Stale,
        ),
    ];
    for (install, reason) in cases {
        control.send(&Message::Install(install)).unwrap();
        step(&mut channel);
        assert_eq!(
            drain(&mut control),
            [Message::rejected(install.generation, reason)],
            "{reason}"
        );
        assert_eq!(cell.current().unwrap().generation, 5);
    }
    assert_eq!(channel.stats().rejected(RejectReason::Stale), 2);
    // A repeat of the live generation is answered with Live again.
    control.send(&Message::Install(good)).unwrap();
    step(&mut channel);
    assert_eq!(channel.stats().repeats, 1);
    assert_eq!(drain(&mut control), [Message::Live { generation: 5 }]);

    // A third party scribbles over the ring's head: counted, resynchronised, no panic.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg.path())
        .unwrap();
    let head = (offsets::CONTROL_TO_DATA + offsets::RING_HEAD) as u64;
    f.write_all_at(&u64::MAX.to_le_bytes(), head).unwrap();
    step(&mut channel);
    assert_eq!(channel.ring_errors().get(RingError::BadIndices), 1);
    // The ring heals within a message or two: whatever is lost to the resynchronisation is
    // counted, and the control plane's retry goes through.
    let next = write(8, 8);
    for _ in 0..3 {
        if channel.live_generation() == 8 {
            break;
        }
        let _ = control.send(&Message::Install(next));
        step(&mut channel);
    }
    assert!(channel.ring_errors().total() >= 2);
    assert_eq!(channel.live_generation(), 8);
    assert_eq!(cell.current().unwrap().generation, 8);
    std::fs::remove_dir_all(&dir).unwrap();
}
