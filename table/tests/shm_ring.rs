//! Ring semantics on a real segment file: order, wrap-around, a full ring, and a hostile
//! writer (corrupted indices, garbage slots) that is counted and never makes a consumer panic.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use switchyard_table::shm::layout::{offsets, CONTROL_TO_DATA_CAPACITY, DATA_TO_CONTROL_CAPACITY};
use switchyard_table::shm::message::RawMessage;
use switchyard_table::shm::{Install, Message, PushError, RejectReason, RingError, Segment};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swyd-ring-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn install(generation: u64) -> Message {
    Message::Install(Install {
        generation,
        size: generation.wrapping_mul(64),
        checksum: generation ^ 0x5a5a,
    })
}

/// Plays a hostile (or buggy) third party writing the segment through the file.
struct Poke(std::fs::File);

impl Poke {
    fn new(seg: &Segment) -> Self {
        Self(
            OpenOptions::new()
                .write(true)
                .read(true)
                .open(seg.path())
                .unwrap(),
        )
    }
    fn u64(&self, at: usize, v: u64) {
        self.0.write_all_at(&v.to_le_bytes(), at as u64).unwrap();
    }
    fn read_u64(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, at as u64).unwrap();
        u64::from_le_bytes(b)
    }
    fn slot(&self, ring: usize, capacity: usize, pos: u64, raw: &RawMessage) {
        let at = ring + offsets::RING_SLOTS + usize::try_from(pos % capacity as u64).unwrap() * 64;
        self.0
            .write_all_at(bytemuck::bytes_of(raw), at as u64)
            .unwrap();
    }
}

#[test]
fn messages_flow_both_ways_in_order() {
    let dir = scratch("both");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    assert_eq!(data.recv(), Ok(None));
    control.send(&install(1)).unwrap();
    control.send(&install(2)).unwrap();
    assert_eq!(data.recv(), Ok(Some(install(1))));
    assert_eq!(data.recv(), Ok(Some(install(2))));
    assert_eq!(data.recv(), Ok(None));

    let replies = [
        Message::Ack {
            worker: 0,
            generation: 2,
        },
        Message::Ack {
            worker: 1,
            generation: 2,
        },
        Message::Live { generation: 2 },
        Message::rejected(3, RejectReason::BadChecksum),
        Message::Event {
            kind: 1,
            a: 2,
            b: 3,
        },
    ];
    for m in &replies {
        data.send(m).unwrap();
    }
    for m in &replies {
        assert_eq!(control.recv(), Ok(Some(*m)));
    }
    assert_eq!(control.recv(), Ok(None));
    assert_eq!(control.ring_errors().total(), 0);
    assert_eq!(data.ring_errors().total(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn producers_refuse_the_other_direction() {
    let dir = scratch("dir");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    assert_eq!(
        control.send(&Message::Live { generation: 1 }),
        Err(PushError::WrongDirection)
    );
    assert_eq!(data.send(&install(1)), Err(PushError::WrongDirection));
    assert_eq!(data.recv(), Ok(None));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrap_around_keeps_order() {
    let dir = scratch("wrap");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    let mut sent = 0u64;
    let mut received = 0u64;
    // Uneven batches so the ring's fill level crosses the slot-0 boundary at many offsets.
    for batch in (1..=CONTROL_TO_DATA_CAPACITY as u64)
        .step_by(37)
        .cycle()
        .take(40)
    {
        for _ in 0..batch {
            sent += 1;
            control.send(&install(sent)).unwrap();
        }
        while let Some(m) = data.recv().unwrap() {
            received += 1;
            assert_eq!(m, install(received));
        }
    }
    assert_eq!(received, sent);
    assert!(sent > 10 * CONTROL_TO_DATA_CAPACITY as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_ring_refuses_without_writing_and_recovers() {
    let dir = scratch("full");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    assert_eq!(control.send_free(), CONTROL_TO_DATA_CAPACITY);
    for g in 1..=CONTROL_TO_DATA_CAPACITY as u64 {
        control.send(&install(g)).unwrap();
    }
    assert_eq!(control.send_free(), 0);
    assert_eq!(control.send(&install(999)), Err(PushError::Full));
    assert_eq!(data.recv(), Ok(Some(install(1))));
    control.send(&install(257)).unwrap();
    for g in 2..=257 {
        assert_eq!(data.recv(), Ok(Some(install(g))));
    }
    assert_eq!(data.recv(), Ok(None));

    let live = |g| Message::Live { generation: g };
    for g in 0..DATA_TO_CONTROL_CAPACITY as u64 {
        data.send(&live(g)).unwrap();
    }
    assert_eq!(data.send(&live(0)), Err(PushError::Full));
    for g in 0..DATA_TO_CONTROL_CAPACITY as u64 {
        assert_eq!(control.recv(), Ok(Some(live(g))));
    }
    assert_eq!(control.ring_errors().total(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupted_indices_are_counted_and_the_ring_heals() {
    let dir = scratch("indices");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    let poke = Poke::new(&seg);
    let head = offsets::CONTROL_TO_DATA + offsets::RING_HEAD;
    let tail = offsets::CONTROL_TO_DATA + offsets::RING_TAIL;
    control.send(&install(1)).unwrap();
    assert_eq!(data.recv(), Ok(Some(install(1))));

    // A head far beyond the tail: the consumer resynchronises instead of reading garbage.
    poke.u64(head, 1_000_000);
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    assert_eq!(data.recv(), Ok(None));
    // The producer restates its own head; the consumer notices and follows it.
    assert_eq!(control.send(&install(2)), Err(PushError::BadIndices));
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    control.send(&install(3)).unwrap();
    assert_eq!(data.recv(), Ok(Some(install(3))));

    // A head behind the tail.
    for g in 10..15 {
        control.send(&install(g)).unwrap();
        assert_eq!(data.recv(), Ok(Some(install(g))));
    }
    let h = poke.read_u64(head);
    poke.u64(head, h - 5);
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    // The consumer followed the rewound head; the producer, the only writer of `head`, sees it
    // was rewritten, jumps a whole ring ahead and restates it, so the consumer resyncs past
    // every old slot instead of replaying the five it had already read.
    assert_eq!(control.send(&install(5)), Err(PushError::BadIndices));
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    assert_eq!(data.recv(), Ok(None));
    control.send(&install(5)).unwrap();
    assert_eq!(data.recv(), Ok(Some(install(5))));

    // A head rewound by exactly the capacity looks like a full ring to the producer and an
    // empty one to the consumer once it has resynchronised: it must still heal.
    let h = poke.read_u64(head);
    poke.u64(head, h - 256);
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    assert_eq!(control.send(&install(8)), Err(PushError::BadIndices));
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    control.send(&install(9)).unwrap();
    assert_eq!(data.recv(), Ok(Some(install(9))));

    // A tail rewritten by a third party: the producer refuses rather than overwrite, and the
    // consumer's next resync (its own tail is authoritative) makes room again.
    let h = poke.read_u64(head);
    poke.u64(tail, h + 1000);
    assert_eq!(control.send(&install(6)), Err(PushError::BadIndices));
    assert_eq!(data.recv(), Err(RingError::BadIndices));
    assert_eq!(data.recv(), Ok(None));
    control.send(&install(7)).unwrap();
    assert_eq!(data.recv(), Ok(Some(install(7))));

    assert_eq!(data.ring_errors().get(RingError::BadIndices), 7);
    assert_eq!(data.ring_errors().total(), 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_messages_are_counted_by_name_and_skipped() {
    let dir = scratch("garbage");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut control = seg.attach_control().unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    let poke = Poke::new(&seg);
    let ring = offsets::DATA_TO_CONTROL;
    let cap = DATA_TO_CONTROL_CAPACITY;
    let head_at = ring + offsets::RING_HEAD;

    // Each case: the data plane sends one good message, then a third party overwrites its
    // slot with `bad`; the control plane must count `expect` and go on.
    let good = Message::Live { generation: 9 };
    let mut cases: Vec<(RawMessage, RingError)> = Vec::new();
    let mut unknown = good.encode(0);
    unknown.kind = 77;
    cases.push((unknown, RingError::UnknownKind));
    let mut bad_len = good.encode(0);
    bad_len.len = 48;
    cases.push((bad_len, RingError::BadLength));
    let mut dirty = good.encode(0);
    dirty.payload[40] = 0xff;
    cases.push((dirty, RingError::DirtyPadding));
    cases.push((install(1).encode(0), RingError::WrongDirection));
    let mut stale = good.encode(0);
    stale.seq = 12345;
    cases.push((stale, RingError::BadSequence));

    for (mut bad, expect) in cases {
        let pos = poke.read_u64(head_at);
        data.send(&good).unwrap();
        if expect != RingError::BadSequence {
            bad.seq = pos;
        }
        poke.slot(ring, cap, pos, &bad);
        assert_eq!(control.recv(), Err(expect), "{}", expect.name());
        data.send(&good).unwrap();
        assert_eq!(control.recv(), Ok(Some(good)));
        assert_eq!(control.ring_errors().get(expect), 1);
    }
    assert_eq!(control.ring_errors().total(), 5);
    let names: Vec<_> = control.ring_errors().iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "bad_indices",
            "bad_sequence",
            "unknown_kind",
            "bad_length",
            "dirty_padding",
            "wrong_direction"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_slots_and_indices_never_panic() {
    let dir = scratch("fuzz");
    let seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let mut data = seg.attach_dataplane().unwrap();
    let poke = Poke::new(&seg);
    let ring = offsets::CONTROL_TO_DATA;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut errors = 0u64;
    let mut accepted = 0u64;
    for _ in 0..2000 {
        let mut bytes = [0u8; 64];
        for chunk in bytes.chunks_exact_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let mut raw: RawMessage = bytemuck::cast(bytes);
        // Make some of them plausible so validation paths past the kind check are exercised.
        match next() % 4 {
            0 => raw.kind = (next() % 6) as u32,
            1 => {
                raw = install(next()).encode(0);
                raw.payload[24 + (next() % 24) as usize] = 1;
            }
            2 => raw = install(next()).encode(0),
            _ => {}
        }
        let tail = poke.read_u64(ring + offsets::RING_TAIL);
        raw.seq = if next() % 2 == 0 { tail } else { next() };
        poke.slot(ring, CONTROL_TO_DATA_CAPACITY, tail, &raw);
        let head = match next() % 3 {
            0 => next(),
            _ => tail + 1 + next() % 3,
        };
        poke.u64(ring + offsets::RING_HEAD, head);
        loop {
            match data.recv() {
                Ok(Some(_)) => accepted += 1,
                Ok(None) => break,
                Err(_) => errors += 1,
            }
        }
    }
    assert_eq!(data.ring_errors().total(), errors);
    assert!(errors > 1000, "{errors} errors, {accepted} accepted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_threads_on_two_mappings_of_one_file() {
    let dir = scratch("threads");
    let n = 20_000u64;
    let control_seg = Segment::open_or_create_in(&dir, "t").unwrap();
    let data_seg = Segment::open_or_create_in(&dir, "t").unwrap();
    assert!(control_seg.initialised_here() && !data_seg.initialised_here());
    let mut control = control_seg.attach_control().unwrap();
    let mut data = data_seg.attach_dataplane().unwrap();
    let echo = std::thread::spawn(move || {
        let mut expect = 1;
        while expect <= n {
            match data.recv().unwrap() {
                Some(Message::Install(i)) => {
                    assert_eq!(i.generation, expect);
                    let ack = Message::Ack {
                        worker: (expect % 64) as u32,
                        generation: expect,
                    };
                    while data.send(&ack) == Err(PushError::Full) {
                        std::thread::yield_now();
                    }
                    expect += 1;
                }
                Some(m) => panic!("unexpected {m:?}"),
                None => std::thread::yield_now(),
            }
        }
        data.ring_errors().total()
    });
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < n {
        if sent < n && control.send(&install(sent + 1)).is_ok() {
            sent += 1;
        }
        match control.recv().unwrap() {
            Some(Message::Ack { generation, .. }) => {
                acked += 1;
                assert_eq!(generation, acked);
            }
            Some(m) => panic!("unexpected {m:?}"),
            None => std::thread::yield_now(),
        }
    }
    assert_eq!(echo.join().unwrap(), 0);
    assert_eq!(control.ring_errors().total(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
