//! Two real processes sharing one mapping. Each test re-runs this test binary as its child,
//! selecting the child's role with an environment variable (the child runs only the one test,
//! sees the variable, plays its part and prints `CHILD ...` lines for the parent to read).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_table::shm::{Install, Message, PushError, Role, Segment, ShmError};

const ROLE_ENV: &str = "SWYD_SHM_TEST_CHILD";
const DIR_ENV: &str = "SWYD_SHM_TEST_DIR";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("swyd-proc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The child's role and directory when this process is a child.
fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some((role, PathBuf::from(std::env::var_os(DIR_ENV)?)))
}

fn spawn(test: &str, role: &str, dir: &Path, env: &[(&str, &Path)]) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Waits for the child (killing it after `timeout`) and returns its `CHILD` lines.
fn finish(mut child: Child, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "child timed out\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // libtest may have printed `test name ... ` on the same line first.
        .filter_map(|l| l.find("CHILD ").map(|at| l[at + 6..].to_owned()))
        .collect()
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn racing_processes_both_attach_and_the_header_is_initialised_once() {
    if let Some((_, dir)) = child_role() {
        wait_for(&dir.join("go"));
        let seg = Segment::open_or_create_in(&dir, "race").unwrap();
        println!(
            "CHILD pid={} initialised={} by={}",
            std::process::id(),
            seg.initialised_here(),
            seg.initialised_by()
        );
        return;
    }
    for round in 0..3 {
        let dir = scratch(&format!("race{round}"));
        let children: Vec<_> = (0..4)
            .map(|_| {
                spawn(
                    "racing_processes_both_attach_and_the_header_is_initialised_once",
                    "race",
                    &dir,
                    &[],
                )
            })
            .collect();
        // Release them together so their opens really overlap.
        std::fs::write(dir.join("go"), b"").unwrap();
        let lines: Vec<String> = children
            .into_iter()
            .flat_map(|c| finish(c, Duration::from_secs(60)))
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        let field = |l: &str, k: &str| -> String {
            l.split(' ')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_owned))
                .unwrap()
        };
        let initialisers: Vec<_> = lines
            .iter()
            .filter(|l| field(l, "initialised") == "true")
            .collect();
        assert_eq!(initialisers.len(), 1, "{lines:?}");
        let by = field(initialisers[0], "pid");
        assert!(lines.iter().all(|l| field(l, "by") == by), "{lines:?}");
        let seg = Segment::open_or_create_in(&dir, "race").unwrap();
        assert!(!seg.initialised_here());
        assert_eq!(seg.initialised_by().to_string(), by);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn messages_cross_between_two_processes() {
    const N: u64 = 5000;
    if let Some((_, dir)) = child_role() {
        // The child is the data plane: it acknowledges every Install it receives.
        let seg = Segment::open_or_create_in(&dir, "xproc").unwrap();
        let mut data = seg.attach_dataplane().unwrap();
        std::fs::write(dir.join("attached"), b"").unwrap();
        let mut expect = 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        while expect <= N {
            assert!(Instant::now() < deadline);
            match data.recv().unwrap() {
                Some(Message::Install(i)) => {
                    assert_eq!(i.generation, expect);
                    let ack = Message::Ack {
                        worker: 0,
                        generation: i.generation,
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
        println!(
            "CHILD received={} errors={}",
            expect - 1,
            data.ring_errors().total()
        );
        return;
    }
    let dir = scratch("xproc");
    let seg = Segment::open_or_create_in(&dir, "xproc").unwrap();
    let mut control = seg.attach_control().unwrap();
    let child = spawn("messages_cross_between_two_processes", "data", &dir, &[]);
    wait_for(&dir.join("attached"));
    assert!(seg.is_attached(Role::Dataplane));
    assert_ne!(seg.dataplane_status().pid, u64::from(std::process::id()));
    let (mut sent, mut acked) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < N {
        assert!(Instant::now() < deadline, "sent {sent}, acked {acked}");
        if sent < N
            && control
                .send(&Message::Install(Install {
                    generation: sent + 1,
                    size: 0,
                    checksum: 0,
                }))
                .is_ok()
        {
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
    let lines = finish(child, Duration::from_secs(60));
    assert_eq!(lines, [format!("received={N} errors=0")]);
    assert_eq!(control.ring_errors().total(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dead_process_releases_its_role_and_its_successor_bumps_the_epoch() {
    if let Some((_, dir)) = child_role() {
        let seg = Segment::open_or_create_in(&dir, "crash").unwrap();
        let data = seg.attach_dataplane().unwrap();
        println!("CHILD epoch={}", data.epoch());
        std::fs::write(dir.join("attached"), b"").unwrap();
        wait_for(&dir.join("die"));
        // No destructor runs: the kernel alone must release the role.
        std::mem::forget(data);
        std::process::exit(0);
    }
    let dir = scratch("crash");
    let seg = Segment::open_or_create_in(&dir, "crash").unwrap();
    let child = spawn(
        "a_dead_process_releases_its_role_and_its_successor_bumps_the_epoch",
        "data",
        &dir,
        &[],
    );
    wait_for(&dir.join("attached"));
    let child_pid = u64::from(child.id());
    assert!(seg.is_attached(Role::Dataplane));
    let err = seg.attach_dataplane().unwrap_err();
    assert!(
        matches!(err, ShmError::RoleTaken { pid, .. } if pid == child_pid),
        "{err}"
    );
    std::fs::write(dir.join("die"), b"").unwrap();
    assert_eq!(finish(child, Duration::from_secs(60)), ["epoch=1"]);
    assert!(!seg.is_attached(Role::Dataplane));
    let data = seg.attach_dataplane().unwrap();
    assert_eq!(data.epoch(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_directory_comes_from_switchyard_shm_dir() {
    if let Some((_, _)) = child_role() {
        let seg = Segment::open_or_create("envtest").unwrap();
        println!("CHILD path={}", seg.path().display());
        return;
    }
    let dir = scratch("env");
    let child = spawn(
        "the_directory_comes_from_switchyard_shm_dir",
        "env",
        &dir,
        &[(switchyard_table::shm::SHM_DIR_ENV, &dir)],
    );
    let expect = dir.join("switchyard-envtest.ctl");
    assert_eq!(
        finish(child, Duration::from_secs(60)),
        [format!("path={}", expect.display())]
    );
    assert!(expect.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
