//! Shared-memory ring messages and table installs: a hostile control plane against the data
//! plane's [`ControlChannel`].
//!
//! Two parts per input:
//! 1. Every 64-byte chunk of the input as a [`RawMessage`] through `Message::decode`: a message
//!    that decodes re-encodes to exactly the same bytes (decoding is canonical).
//! 2. A real control segment and blob files in a scratch directory, a real [`ControlChannel`]
//!    (the data plane's end, with a [`GenerationCell`] and two workers) and a real
//!    [`ControlEnd`]; the rest of the input is a program for the control plane, which sends
//!    legitimate `Install`s, writes blob files (valid, corrupted or arbitrary), and, playing a
//!    third party with write access to the segment file, writes arbitrary bytes into ring slots
//!    and ring indices of both rings. In between the data plane polls, its workers switch
//!    generations, and either side restarts.
//!
//! Properties: nothing panics; what the cell holds always validates and its generation number
//! is one the channel installed; a data plane's installed and live generations only grow, and
//! live never passes installed; the control plane receives only data→control messages; and once
//! the hostile writes stop, both rings heal (`table/src/shm/ring.rs`: "the ring heals after one
//! refused push"): a fresh `Install` with a valid blob is installed within a few send/poll
//! rounds, and the control plane hears `Live` for it.
#![no_main]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard::control_channel::{ControlChannel, MAX_MESSAGES_PER_POLL};
use switchyard::swap::{GenerationCell, WorkerView};
use switchyard_table::generation::{Generation, Header};
use switchyard_table::shm::layout::{
    offsets, CONTROL_TO_DATA_CAPACITY, DATA_TO_CONTROL_CAPACITY, MESSAGE_SIZE,
};
use switchyard_table::shm::message::{RawMessage, PAYLOAD_SIZE};
use switchyard_table::shm::{
    segment_path_in, write_generation_file, ControlEnd, Direction, Install, Message, Segment,
};

const INSTANCE: &str = "fuzz";
const WORKERS: usize = 2;
/// Operations per input.
const MAX_OPS: usize = 64;
/// The generation the healing check installs: above any the program can name (`u8`).
const HEAL_GENERATION: u64 = 1000;

fuzz_target!(|data: &[u8]| {
    raw_messages(data);
    channel(data);
});

fn raw_messages(data: &[u8]) {
    for chunk in data.chunks_exact(MESSAGE_SIZE).take(8) {
        let raw = raw_from(chunk);
        match Message::decode(&raw) {
            Ok(m) => {
                assert_eq!(m.encode(raw.seq), raw, "decode is not canonical for {m:?}");
                assert_eq!(m.kind(), raw.kind);
                let _ = m.reason_name();
            }
            Err(e) => assert!(!e.name().is_empty()),
        }
    }
}

fn raw_from(chunk: &[u8]) -> RawMessage {
    let u32_at = |at: usize| u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap());
    let mut payload = [0u8; PAYLOAD_SIZE];
    payload.copy_from_slice(&chunk[16..16 + PAYLOAD_SIZE]);
    RawMessage {
        kind: u32_at(0),
        len: u32_at(4),
        seq: u64::from_le_bytes(chunk[8..16].try_into().unwrap()),
        payload,
    }
}

/// The input, read front to back; past the end every read is zero.
struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// This process's scratch directory, created for one input and removed after it. On tmpfs
/// (`/dev/shm`, where the segment lives in production) when there is one: on a disk file
/// system, each blob's rename flushes it and the target runs 100 times slower.
struct Scratch(PathBuf);

const SCRATCH_PREFIX: &str = "switchyard-fuzz-ring-";

impl Scratch {
    fn new() -> Self {
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            remove_dead_scratch(&base);
            base.join(format!("{SCRATCH_PREFIX}{}", std::process::id()))
        });
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("scratch directory");
        Self(dir.clone())
    }
}

/// A crash aborts before `Drop`: remove what fuzzers that are no longer running left behind.
fn remove_dead_scratch(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid blob for generation `n`.
fn blob(n: u64) -> Vec<u8> {
    let g = Generation {
        generation: n,
        ..Generation::default()
    };
    g.encode()
}

fn install_for(blob: &[u8]) -> Install {
    let header = Generation::peek_header(blob).expect("own blob");
    Install {
        generation: header.generation,
        size: blob.len() as u64,
        checksum: header.checksum,
    }
}

/// The data plane: its channel, its cell and its workers' views.
struct Dataplane {
    channel: ControlChannel,
    cell: GenerationCell,
    views: Vec<WorkerView>,
    installed: u64,
    live: u64,
}

impl Dataplane {
    fn start(dir: &Path) -> Self {
        Self {
            channel: ControlChannel::attach_in(dir, INSTANCE).expect("data plane attaches"),
            cell: GenerationCell::new(WORKERS),
            views: (0..WORKERS).map(|_| WorkerView::default()).collect(),
            installed: 0,
            live: 0,
        }
    }

    fn poll(&mut self) {
        let report = self.channel.poll(&self.cell);
        let installed = self.channel.installed_generation();
        let live = self.channel.live_generation();
        assert!(
            installed >= self.installed,
            "installed went back {} → {installed}",
            self.installed
        );
        assert!(live >= self.live, "live went back {} → {live}", self.live);
        assert!(
            live <= installed,
            "live {live} beyond installed {installed}"
        );
        if let Some(g) = report.installed {
            assert_eq!(g, installed);
        }
        if let Some(current) = self.cell.current() {
            assert_eq!(
                current.generation, installed,
                "cell holds another generation"
            );
            current
                .validate()
                .expect("the cell holds a generation that does not validate");
        }
        self.installed = installed;
        self.live = live;
    }

    fn run_workers(&mut self, which: u8) {
        for (w, view) in self.views.iter_mut().enumerate() {
            if which & (1 << w) != 0 {
                self.cell.refresh(w, view);
            }
        }
    }
}

fn channel(data: &[u8]) {
    // Declared first, dropped last: after every mapping and file of the segment is closed.
    let scratch = Scratch::new();
    let dir = scratch.0.clone();
    let segment = Segment::open_or_create_in(&dir, INSTANCE).expect("segment");
    let mut dataplane = Dataplane::start(&dir);
    let mut control: Option<ControlEnd> = Some(segment.attach_control().expect("control attaches"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_path_in(&dir, INSTANCE))
        .expect("segment file");

    let mut p = Program(data.get(MESSAGE_SIZE..).unwrap_or(&[]));
    for _ in 0..MAX_OPS {
        if p.0.is_empty() {
            break;
        }
        match p.u8() % 16 {
            // A legitimate install of a small generation number.
            0 | 1 => {
                let n = u64::from(p.u8());
                let b = blob(n);
                let _ = write_generation_file(&dir, INSTANCE, n, &b);
                if let Some(c) = control.as_mut() {
                    c.set_last_published(n);
                    let _ = c.send(&Message::Install(install_for(&b)));
                }
            }
            // An install whose fields need not match any file.
            2 => {
                let install = Install {
                    generation: u64::from(p.u8()),
                    size: u64::from(p.u8()) * 64,
                    checksum: p.u64(),
                };
                if let Some(c) = control.as_mut() {
                    let _ = c.send(&Message::Install(install));
                }
            }
            // A blob file: arbitrary bytes, or a valid blob with one byte changed.
            3 => {
                let n = u64::from(p.u8());
                let len = usize::from(p.u8()) * 8;
                let bytes = p.bytes(len);
                let _ = write_generation_file(&dir, INSTANCE, n, &bytes);
            }
            4 => {
                let n = u64::from(p.u8());
                let mut b = blob(n);
                let at = usize::from(u16::from_le_bytes([p.u8(), p.u8()])) % b.len();
                b[at] ^= p.u8() | 1;
                if at >= std::mem::size_of::<Header>() && p.u8() & 1 == 1 {
                    reseal(&mut b);
                }
                let _ = write_generation_file(&dir, INSTANCE, n, &b);
            }
            5 => {
                let n = u64::from(p.u8());
                let _ = std::fs::remove_file(dir.join(format!("switchyard-{INSTANCE}.gen-{n}")));
            }
            // A third party writes a control→data slot: raw bytes or a well-formed message.
            6 => {
                let slot = usize::from(p.u8()) % CONTROL_TO_DATA_CAPACITY;
                let bytes = p.bytes(MESSAGE_SIZE);
                write_slot(&file, offsets::CONTROL_TO_DATA, slot, &bytes);
            }
            7 => {
                let slot = usize::from(p.u8()) % CONTROL_TO_DATA_CAPACITY;
                let seq = read_u64(&file, offsets::CONTROL_TO_DATA + offsets::RING_HEAD)
                    .wrapping_add(u64::from(p.u8() & 7));
                let install = Install {
                    generation: u64::from(p.u8()),
                    size: p.u64() & 0xffff,
                    checksum: p.u64(),
                };
                let raw = Message::Install(install).encode(seq);
                write_slot(&file, offsets::CONTROL_TO_DATA, slot, &raw_bytes(&raw));
            }
            // A third party moves ring indices: near the current value, or anywhere.
            8 => index_write(&file, &mut p, offsets::CONTROL_TO_DATA + offsets::RING_HEAD),
            9 => index_write(&file, &mut p, offsets::CONTROL_TO_DATA + offsets::RING_TAIL),
            10 => index_write(&file, &mut p, offsets::DATA_TO_CONTROL + offsets::RING_HEAD),
            11 => index_write(&file, &mut p, offsets::DATA_TO_CONTROL + offsets::RING_TAIL),
            12 => {
                let slot = usize::from(p.u16()) % DATA_TO_CONTROL_CAPACITY;
                let bytes = p.bytes(MESSAGE_SIZE);
                write_slot(&file, offsets::DATA_TO_CONTROL, slot, &bytes);
            }
            // The data plane polls; its workers switch at their own pace.
            13 => {
                dataplane.poll();
                let which = p.u8();
                dataplane.run_workers(which);
            }
            // The control plane drains its ring.
            14 => {
                if let Some(c) = control.as_mut() {
                    let _ = drain(c);
                }
            }
            // A restart: the data plane, or the control plane (which may also set
            // last_published to anything first).
            _ => match p.u8() % 3 {
                0 => {
                    drop(dataplane);
                    dataplane = Dataplane::start(&dir);
                }
                1 => {
                    if let Some(c) = control.as_ref() {
                        c.set_last_published(u64::from(p.u8()));
                    }
                    drop(control.take());
                    control = Some(segment.attach_control().expect("control re-attaches"));
                }
                _ => {
                    dataplane.poll();
                    dataplane.run_workers(3);
                    dataplane.poll();
                }
            },
        }
    }

    // The hostile writes are over: the rings must carry a fresh install again.
    let mut c = control.unwrap_or_else(|| segment.attach_control().expect("control attaches"));
    let b = blob(HEAL_GENERATION);
    write_generation_file(&dir, INSTANCE, HEAL_GENERATION, &b).expect("blob file");
    c.set_last_published(HEAL_GENERATION);
    for _ in 0..4 {
        let _ = c.send(&Message::Install(install_for(&b)));
        for _ in 0..=CONTROL_TO_DATA_CAPACITY / MAX_MESSAGES_PER_POLL {
            dataplane.poll();
        }
        let _ = drain(&mut c);
        if dataplane.channel.installed_generation() == HEAL_GENERATION {
            break;
        }
    }
    assert_eq!(
        dataplane.channel.installed_generation(),
        HEAL_GENERATION,
        "the control→data ring did not heal; ring errors: {:?}",
        dataplane.channel.ring_errors().iter().collect::<Vec<_>>()
    );
    dataplane.run_workers(3);
    dataplane.poll();
    assert_eq!(dataplane.channel.live_generation(), HEAL_GENERATION);
    // And the data→control ring: the control plane hears that it is live (an Install of the
    // live generation is answered with Live again).
    let mut heard = drain(&mut c).contains(&Message::Live {
        generation: HEAL_GENERATION,
    });
    for _ in 0..4 {
        if heard {
            break;
        }
        let _ = c.send(&Message::Install(install_for(&b)));
        dataplane.poll();
        heard = drain(&mut c).contains(&Message::Live {
            generation: HEAL_GENERATION,
        });
    }
    assert!(heard, "the data→control ring did not heal");
}

impl Program<'_> {
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

/// Everything the control plane receives until its ring is empty.
fn drain(c: &mut ControlEnd) -> Vec<Message> {
    let mut got = Vec::new();
    for _ in 0..DATA_TO_CONTROL_CAPACITY + 1 {
        match c.recv() {
            Ok(Some(m)) => {
                assert_eq!(m.direction(), Direction::DataToControl, "{m:?}");
                got.push(m);
            }
            Ok(None) => break,
            Err(e) => assert!(!e.name().is_empty()),
        }
    }
    got
}

fn raw_bytes(raw: &RawMessage) -> Vec<u8> {
    let mut b = Vec::with_capacity(MESSAGE_SIZE);
    b.extend_from_slice(&raw.kind.to_le_bytes());
    b.extend_from_slice(&raw.len.to_le_bytes());
    b.extend_from_slice(&raw.seq.to_le_bytes());
    b.extend_from_slice(&raw.payload);
    b
}

fn write_slot(file: &File, ring: usize, slot: usize, bytes: &[u8]) {
    let at = ring + offsets::RING_SLOTS + slot * MESSAGE_SIZE;
    file.write_all_at(bytes, at as u64).expect("write slot");
}

fn read_u64(file: &File, at: usize) -> u64 {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, at as u64).expect("read index");
    u64::from_le_bytes(b)
}

fn index_write(file: &File, p: &mut Program<'_>, at: usize) {
    let value = match p.u8() % 4 {
        0 => p.u64(),
        1 => read_u64(file, at).wrapping_add(u64::from(p.u16())),
        2 => read_u64(file, at).wrapping_sub(u64::from(p.u16())),
        _ => u64::MAX - u64::from(p.u8()),
    };
    file.write_all_at(&value.to_le_bytes(), at as u64)
        .expect("write index");
}

/// Patches total size and checksum after a payload byte changed (a publisher's bug rather
/// than corruption in transit), so the change reaches `Generation::validate`.
fn reseal(b: &mut [u8]) {
    let header_size = std::mem::size_of::<Header>();
    let sum = xxhash_rust::xxh3::xxh3_64(&b[header_size..]);
    let at = std::mem::offset_of!(Header, checksum);
    b[at..at + 8].copy_from_slice(&sum.to_ne_bytes());
}
