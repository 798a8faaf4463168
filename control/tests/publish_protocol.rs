//! The publisher against a scripted data plane (the table crate's `DataplaneEnd`): blob files,
//! Install messages, acknowledgements, refusals, queueing, restarts of either side, clean-up.
//! The real data-plane channel is exercised end to end in the root package's `shm_swap` test.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use switchyard_control::publish::{PublishError, Publisher};
use switchyard_table::builder::{BackendSpec, GenerationBuilder};
use switchyard_table::generation::{Generation, Scheduler};
use switchyard_table::shm::{
    generation_path_in, DataplaneEnd, Install, Message, RejectReason, Segment,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swyd-pub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small valid generation: one pool with one backend and a 7-slot Maglev table.
fn small(seed: u8) -> Generation {
    GenerationBuilder::new()
        .config(|c| c.new_flow_rate = u32::from(seed))
        .pool(
            "pool",
            Scheduler::Maglev,
            &[BackendSpec::new(Ipv4Addr::new(10, 0, 0, seed))],
        )
        .build()
}

fn dataplane(dir: &std::path::Path) -> DataplaneEnd {
    Segment::open_or_create_in(dir, "t")
        .unwrap()
        .attach_dataplane()
        .unwrap()
}

fn next_install(data: &mut DataplaneEnd) -> Install {
    match data.recv() {
        Ok(Some(Message::Install(i))) => i,
        other => panic!("expected an Install, got {other:?}"),
    }
}

/// What a data plane with `workers` workers says once a generation runs everywhere.
fn go_live(data: &mut DataplaneEnd, generation: u64, workers: u32) {
    for worker in 0..workers {
        data.send(&Message::Ack { worker, generation }).unwrap();
    }
    data.set_live_generation(generation);
    data.send(&Message::Live { generation }).unwrap();
}

#[test]
fn publish_writes_the_blob_then_the_header_then_the_install() {
    let dir = scratch("blob");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut data = dataplane(&dir);
    let mut g = small(1);
    g.generation = 999; // ignored: the publisher numbers generations
    let n = publisher.publish(&g).unwrap();
    assert_eq!(n, 1);
    assert_eq!(publisher.last_published(), 1);
    assert_eq!(publisher.segment().control_status().last_published, 1);
    let path = generation_path_in(&dir, "t", 1);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let blob = std::fs::read(&path).unwrap();
    let decoded = Generation::decode(&blob).unwrap();
    assert_eq!(decoded.generation, 1);
    assert_eq!(decoded.backends, g.backends);
    let install = next_install(&mut data);
    assert_eq!(install.generation, 1);
    assert_eq!(install.size, blob.len() as u64);
    assert_eq!(
        install.checksum,
        Generation::peek_header(&blob).unwrap().checksum
    );
    assert_eq!(publisher.publish(&small(2)).unwrap(), 2);
    assert_eq!(next_install(&mut data).generation, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wait_live_reports_acks_and_latency() {
    let dir = scratch("live");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut data = dataplane(&dir);
    let n = publisher.publish(&small(1)).unwrap();
    let install = next_install(&mut data);
    go_live(&mut data, install.generation, 3);
    let report = publisher.wait_live(n, Duration::from_secs(5)).unwrap();
    assert_eq!(report.generation, n);
    assert_eq!(report.live_generation, n);
    assert_eq!(report.acks, 3);
    assert!(report.latency.is_some());
    assert_eq!(publisher.live_generation(), n);
    let lat = publisher.latency();
    assert_eq!(lat.samples, 1);
    assert_eq!(lat.p50, report.latency.unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refusal_is_an_error_carrying_its_reason() {
    let dir = scratch("reject");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut data = dataplane(&dir);
    let n = publisher.publish(&small(1)).unwrap();
    next_install(&mut data);
    data.send(&Message::rejected(n, RejectReason::BadChecksum))
        .unwrap();
    let err = publisher.wait_live(n, Duration::from_secs(5)).unwrap_err();
    let PublishError::Rejected(r) = &err else {
        panic!("{err}");
    };
    assert_eq!(r.generation, n);
    assert_eq!(r.reason, "bad_checksum");
    assert_eq!(r.reason(), Some(RejectReason::BadChecksum));
    assert!(err
        .to_string()
        .contains("refused generation 1: bad_checksum"));
    assert_eq!(publisher.rejection(n), Some(r));
    // The next generation is numbered past the refused one and can still go live.
    let m = publisher.publish(&small(2)).unwrap();
    assert_eq!(m, 2);
    next_install(&mut data);
    go_live(&mut data, m, 1);
    publisher.wait_live(m, Duration::from_secs(5)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn waiting_without_a_data_plane_times_out_naming_the_generation() {
    let dir = scratch("timeout");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let n = publisher.publish(&small(1)).unwrap();
    assert!(!publisher.dataplane_attached());
    assert_eq!(publisher.dataplane_heartbeat_age(), None);
    let err = publisher
        .wait_live(n, Duration::from_millis(20))
        .unwrap_err();
    assert!(
        matches!(
            err,
            PublishError::Timeout {
                generation: 1,
                live: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("generation 1 not live"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn publishes_queue_until_the_ring_is_full() {
    let dir = scratch("queue");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let g = Generation::default();
    for expect in 1..=256 {
        assert_eq!(publisher.publish(&g).unwrap(), expect);
    }
    let err = publisher.publish(&g).unwrap_err();
    assert!(matches!(err, PublishError::Busy { queued: 256 }), "{err}");
    // A data plane that finally drains them takes them in order; the last one going live
    // settles every earlier one (superseded, not individually live).
    let mut data = dataplane(&dir);
    assert_eq!(data.recv(), Ok(None), "a new data plane starts at the head");
    assert_eq!(publisher.publish(&g).unwrap(), 257);
    assert_eq!(next_install(&mut data).generation, 257);
    go_live(&mut data, 257, 1);
    let early = publisher.wait_live(10, Duration::from_secs(5)).unwrap();
    assert_eq!(early.live_generation, 257);
    assert_eq!(early.latency, None);
    let last = publisher.wait_live(257, Duration::from_secs(5)).unwrap();
    assert!(last.latency.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restarted_control_plane_reads_the_live_generation_and_numbers_after_it() {
    let dir = scratch("control-restart");
    let mut data = dataplane(&dir);
    let mut first = Publisher::attach_in(&dir, "t").unwrap();
    assert_eq!(first.epoch(), 1);
    for seed in 1..=3 {
        let n = first.publish(&small(seed)).unwrap();
        next_install(&mut data);
        go_live(&mut data, n, 2);
        first.wait_live(n, Duration::from_secs(5)).unwrap();
    }
    let err = Publisher::attach_in(&dir, "t").unwrap_err();
    assert!(err.to_string().contains("another control plane"), "{err}");
    drop(first);

    let mut second = Publisher::attach_in(&dir, "t").unwrap();
    assert_eq!(second.epoch(), 2);
    assert_eq!(second.live_generation(), 3);
    assert_eq!(second.last_published(), 3);
    assert_eq!(second.dataplane_epoch(), 1);
    assert!(second.dataplane_attached());
    assert!(!second.poll().dataplane_restarted);
    assert_eq!(second.publish(&small(4)).unwrap(), 4);
    assert_eq!(next_install(&mut data).generation, 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_plane_restart_is_noticed_and_the_last_generation_republished() {
    let dir = scratch("dp-restart");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut data = dataplane(&dir);
    assert!(publisher.poll().dataplane_restarted, "first start");
    assert_eq!(publisher.dataplane_restarts(), 0);
    // The data plane had started before the first publish: nothing to send it again.
    assert_eq!(data.recv(), Ok(None));
    let n = publisher.publish(&small(1)).unwrap();
    let first = next_install(&mut data);
    go_live(&mut data, n, 1);
    publisher.wait_live(n, Duration::from_secs(5)).unwrap();

    drop(data);
    let mut data = dataplane(&dir);
    assert_eq!(data.epoch(), 2);
    let summary = publisher.poll();
    assert!(summary.dataplane_restarted);
    assert_eq!(publisher.dataplane_restarts(), 1);
    assert_eq!(publisher.dataplane_epoch(), 2);
    assert_eq!(
        next_install(&mut data),
        first,
        "the same generation, size and checksum"
    );
    assert!(!publisher.poll().dataplane_restarted);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gc_removes_generation_files_older_than_the_live_one() {
    let dir = scratch("gc");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let data = dataplane(&dir);
    assert_eq!(publisher.gc().unwrap(), 0, "nothing is live yet");
    for seed in 1..=5 {
        publisher.publish(&small(seed)).unwrap();
    }
    std::fs::write(dir.join("switchyard-t.gen-2.tmp-4242"), b"partial").unwrap();
    std::fs::write(dir.join("switchyard-other.gen-1"), b"another instance").unwrap();
    data.set_live_generation(4);
    assert_eq!(publisher.gc().unwrap(), 4);
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "switchyard-other.gen-1",
            "switchyard-t.ctl",
            "switchyard-t.gen-4",
            "switchyard-t.gen-5"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn events_and_a_live_generation_known_only_from_the_header() {
    let dir = scratch("events");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut data = dataplane(&dir);
    data.send(&Message::Event {
        kind: 7,
        a: 1,
        b: 2,
    })
    .unwrap();
    publisher.poll();
    let events = publisher.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, events[0].a, events[0].b), (7, 1, 2));
    assert!(publisher.take_events().is_empty());
    assert_eq!(publisher.ring_errors().total(), 0);
    // A live generation reported only through the header (its message was lost) still counts.
    let n = publisher.publish(&small(1)).unwrap();
    next_install(&mut data);
    data.set_live_generation(n);
    let r = publisher.wait_live(n, Duration::from_secs(5)).unwrap();
    assert_eq!((r.live_generation, r.acks), (n, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12, item 13: a hostile writer moves the control→data ring's head far ahead; the data
/// plane resynchronises to it. The publisher then takes the indices from the segment instead of
/// believing the ring full (`Busy`, "256 installs are queued") until it restarts.
#[test]
fn a_forged_ring_head_does_not_leave_the_publisher_busy() {
    use std::os::unix::fs::FileExt;
    use switchyard_table::shm::layout::offsets;
    use switchyard_table::shm::RingError;

    let dir = scratch("forged-head");
    let mut publisher = Publisher::attach_in(&dir, "t").unwrap();
    let mut data = dataplane(&dir);
    let g1 = publisher.publish(&small(1)).unwrap();
    assert_eq!(next_install(&mut data).generation, g1);
    go_live(&mut data, g1, 1);
    publisher.wait_live(g1, Duration::from_secs(1)).unwrap();

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(publisher.segment().path())
        .unwrap();
    let head = (offsets::CONTROL_TO_DATA + offsets::RING_HEAD) as u64;
    file.write_all_at(&(1u64 << 40).to_le_bytes(), head)
        .unwrap();
    // The data plane resynchronises: its tail is now the forged head.
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    assert_eq!(data.recv(), Ok(None));

    for seed in 2..6u8 {
        let n = publisher
            .publish(&small(seed))
            .unwrap_or_else(|e| panic!("publish after the resync: {e}"));
        assert_eq!(next_install(&mut data).generation, n);
        go_live(&mut data, n, 1);
        publisher.wait_live(n, Duration::from_secs(1)).unwrap();
    }
    assert_eq!(publisher.ring_resyncs(), 1);
    assert_eq!(data.ring_errors().get(RingError::BadIndices), 1);

    // Forged before the data plane looked: the publisher heals first, nothing is replayed.
    file.write_all_at(&(1u64 << 41).to_le_bytes(), head)
        .unwrap();
    let n = publisher.publish(&small(9)).unwrap();
    assert_eq!(next_install(&mut data).generation, n);
    assert_eq!(data.recv(), Ok(None));
    assert_eq!(publisher.ring_resyncs(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
