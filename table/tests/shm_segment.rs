//! Opening, checking and attaching the control segment: creation with mode 0660, a header
//! initialised once, clear refusals of foreign or mismatched files, exclusive roles with epochs,
//! worker status and counters.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use switchyard_table::shm::layout::{offsets, SEGMENT_MAGIC};
use switchyard_table::shm::{
    segment_path_in, Install, Message, Role, Segment, ShmError, MAX_COUNTERS, MAX_WORKERS,
    SEGMENT_ABI_VERSION, SEGMENT_SIZE,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swyd-seg-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a segment-sized file with the given identity words, as another build would.
fn forge(dir: &std::path::Path, instance: &str, magic: u64, abi: u32, size: u64, len: u64) {
    let path = segment_path_in(dir, instance);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(&magic.to_le_bytes(), offsets::MAGIC as u64)
        .unwrap();
    f.write_all_at(&abi.to_le_bytes(), offsets::ABI_VERSION as u64)
        .unwrap();
    f.write_all_at(&size.to_le_bytes(), offsets::TOTAL_SIZE as u64)
        .unwrap();
}

#[test]
fn the_segment_is_created_once_with_mode_0660() {
    let dir = scratch("create");
    let a = Segment::open_or_create_in(&dir, "lb").unwrap();
    assert_eq!(a.path(), dir.join("switchyard-lb.ctl"));
    let meta = fs::metadata(a.path()).unwrap();
    // Whatever the umask (the test runner's is usually 022): the group may write it.
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.len(), SEGMENT_SIZE as u64);
    assert!(a.initialised_here());
    assert_eq!(a.initialised_by(), u64::from(std::process::id()));
    let b = Segment::open_or_create_in(&dir, "lb").unwrap();
    assert!(!b.initialised_here());
    assert_eq!(b.initialised_by(), a.initialised_by());
    assert_eq!(b.control_status(), Default::default());
    assert!(a.is_current() && b.is_current());
    fs::remove_file(a.path()).unwrap();
    assert!(!a.is_current(), "removed under us");
    let c = Segment::open_or_create_in(&dir, "lb").unwrap();
    assert!(c.initialised_here() && c.is_current() && !b.is_current());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_abi_version_is_refused_naming_the_file_and_both_versions() {
    let dir = scratch("abi");
    let size = SEGMENT_SIZE as u64;
    forge(
        &dir,
        "lb",
        SEGMENT_MAGIC,
        SEGMENT_ABI_VERSION + 41,
        size,
        size,
    );
    let err = Segment::open_or_create_in(&dir, "lb").unwrap_err();
    assert!(
        matches!(err, ShmError::AbiMismatch { found, expected, .. }
            if found == SEGMENT_ABI_VERSION + 41 && expected == SEGMENT_ABI_VERSION),
        "{err:?}"
    );
    let text = err.to_string();
    let path = segment_path_in(&dir, "lb");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains(&format!("ABI version {}", SEGMENT_ABI_VERSION + 41)),
        "{text}"
    );
    assert!(
        text.contains(&format!("speaks version {SEGMENT_ABI_VERSION}")),
        "{text}"
    );
    // Nothing was rewritten: the other build's header is intact.
    let mut word = [0u8; 4];
    fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut word, offsets::ABI_VERSION as u64)
        .unwrap();
    assert_eq!(u32::from_le_bytes(word), SEGMENT_ABI_VERSION + 41);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn foreign_files_sizes_and_modes_are_refused() {
    let dir = scratch("foreign");
    let size = SEGMENT_SIZE as u64;
    forge(&dir, "magic", 0x1234, SEGMENT_ABI_VERSION, size, size);
    let err = Segment::open_or_create_in(&dir, "magic").unwrap_err();
    assert!(matches!(err, ShmError::NotASegment { .. }), "{err}");
    assert!(err.to_string().contains("not a Switchyard control segment"));

    forge(
        &dir,
        "short",
        SEGMENT_MAGIC,
        SEGMENT_ABI_VERSION,
        size,
        size - 4096,
    );
    let err = Segment::open_or_create_in(&dir, "short").unwrap_err();
    assert!(matches!(err, ShmError::SizeMismatch { .. }), "{err}");

    forge(
        &dir,
        "bigger",
        SEGMENT_MAGIC,
        SEGMENT_ABI_VERSION,
        size * 2,
        size * 2,
    );
    let err = Segment::open_or_create_in(&dir, "bigger").unwrap_err();
    assert!(
        matches!(err, ShmError::SizeMismatch { found, expected, .. } if found == size * 2 && expected == size),
        "{err}"
    );

    Segment::open_or_create_in(&dir, "open").unwrap();
    let path = segment_path_in(&dir, "open");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let err = Segment::open_or_create_in(&dir, "open").unwrap_err();
    assert!(
        matches!(err, ShmError::UnsafeMode { mode: 0o666, .. }),
        "{err}"
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o662)).unwrap();
    let err = Segment::open_or_create_in(&dir, "open").unwrap_err();
    assert!(
        matches!(err, ShmError::UnsafeMode { mode: 0o662, .. }),
        "{err}"
    );
    // The instance's group may write it: that is how the two processes share it.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).unwrap();
    Segment::open_or_create_in(&dir, "open").unwrap();

    std::os::unix::fs::symlink(dir.join("elsewhere"), segment_path_in(&dir, "link")).unwrap();
    let err = Segment::open_or_create_in(&dir, "link").unwrap_err();
    assert!(matches!(err, ShmError::Io { op: "open", .. }), "{err}");
    assert!(!dir.join("elsewhere").exists());

    let err = Segment::open_or_create_in(&dir, "../escape").unwrap_err();
    assert!(matches!(err, ShmError::InvalidInstance { .. }), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_zero_magic_file_is_initialised_whatever_it_held() {
    let dir = scratch("zero");
    // A crash between creation and initialisation leaves a zero magic: the next opener
    // initialises it, including a wrong length and leftover bytes.
    forge(&dir, "lb", 0, 7, 5, 100);
    let seg = Segment::open_or_create_in(&dir, "lb").unwrap();
    assert!(seg.initialised_here());
    assert_eq!(fs::metadata(seg.path()).unwrap().len(), SEGMENT_SIZE as u64);
    assert_eq!(seg.dataplane_status(), Default::default());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn roles_are_exclusive_and_epochs_count_attaches() {
    let dir = scratch("roles");
    let first = Segment::open_or_create_in(&dir, "lb").unwrap();
    let second = Segment::open_or_create_in(&dir, "lb").unwrap();
    assert!(!second.is_attached(Role::Control));
    let c1 = first.attach_control().unwrap();
    assert_eq!(c1.epoch(), 1);
    assert!(second.is_attached(Role::Control));
    assert!(first.is_attached(Role::Control));
    // Another open of the file (as another process would have) and the same mapping again.
    for seg in [&second, &first] {
        let err = seg.attach_control().unwrap_err();
        assert!(
            matches!(err, ShmError::RoleTaken { role: Role::Control, pid, .. } if pid == u64::from(std::process::id())),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("another control plane is attached"));
    }
    // The data plane's role is independent.
    let d1 = second.attach_dataplane().unwrap();
    assert_eq!(d1.epoch(), 1);
    assert!(first.attach_dataplane().is_err());
    drop(c1);
    assert!(!second.is_attached(Role::Control));
    let c2 = second.attach_control().unwrap();
    assert_eq!(c2.epoch(), 2);
    assert_eq!(first.control_status().epoch, 2);
    assert_eq!(first.control_status().pid, u64::from(std::process::id()));
    drop(d1);
    let d2 = first.attach_dataplane().unwrap();
    assert_eq!(d2.epoch(), 2);
    assert_eq!(second.dataplane_status().epoch, 2);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restarted_consumer_starts_at_the_head_and_reads_state_from_the_header() {
    let dir = scratch("restart");
    let seg = Segment::open_or_create_in(&dir, "lb").unwrap();
    let mut control = seg.attach_control().unwrap();
    for g in 1..=3 {
        control.set_last_published(g);
        control
            .send(&Message::Install(Install {
                generation: g,
                size: 64,
                checksum: g,
            }))
            .unwrap();
    }
    let mut data = seg.attach_dataplane().unwrap();
    assert_eq!(data.recv(), Ok(None));
    assert_eq!(seg.control_status().last_published, 3);
    control
        .send(&Message::Install(Install {
            generation: 4,
            size: 64,
            checksum: 4,
        }))
        .unwrap();
    assert!(matches!(data.recv(), Ok(Some(Message::Install(i))) if i.generation == 4));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn worker_status_counters_and_names_reach_the_control_plane() {
    let dir = scratch("counters");
    let seg = Segment::open_or_create_in(&dir, "lb").unwrap();
    let data = seg.attach_dataplane().unwrap();
    let reader = Segment::open_or_create_in(&dir, "lb").unwrap();
    assert!(reader.counter_names().is_empty());
    let long = "a_counter_name_longer_than_thirty_two_bytes";
    assert_eq!(data.set_counter_names(&["rx", "tx", long]), 3);
    assert_eq!(
        reader.counter_names(),
        ["rx", "tx", &long[..32]].map(String::from)
    );
    assert!(data.publish_counters(3, &[10, 20, 30, 40]));
    assert!(!data.publish_counters(MAX_WORKERS, &[1]));
    assert_eq!(reader.counters(3).unwrap(), [10, 20, 30]);
    assert_eq!(reader.counters(0).unwrap(), [0, 0, 0]);
    assert!(reader.counters(MAX_WORKERS).is_none());
    let many: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(data.set_counter_names(&many), MAX_COUNTERS);
    assert_eq!(reader.counter_names().len(), MAX_COUNTERS);
    assert_eq!(reader.counter_names()[127], "c127");

    data.set_workers(2);
    assert!(data.set_worker_live(1, 5));
    assert!(data.set_worker_totals(1, 1000, 3));
    assert!(!data.set_worker_live(MAX_WORKERS, 5));
    let w = reader.worker_status(1).unwrap();
    assert_eq!((w.live_generation, w.packets, w.drops), (5, 1000, 3));
    data.set_live_generation(5);
    data.set_installed_generation(6);
    data.set_last_rejected(7);
    data.heartbeat();
    let d = reader.dataplane_status();
    assert_eq!(
        (
            d.workers,
            d.live_generation,
            d.installed_generation,
            d.last_rejected
        ),
        (2, 5, 6, 7)
    );
    assert!(d.heartbeat_ms > 0);
    assert_eq!(d.pid, u64::from(std::process::id()));
    fs::remove_dir_all(&dir).unwrap();
}
