//! Least privilege (issue 11, docs/DEPLOY.md "Privileges"): the control plane runs as an
//! unprivileged user against a root data plane, the two sharing only a group, the way the
//! package's units run them. A temporary system user and group stand in for the package's
//! `switchyard`; the shared directory is setgid to the group (mode 2770), as
//! `/run/switchyard` is. The data plane starts first and creates the segment as root; the
//! control plane, with no capability and no supplementary group, must attach to it through the
//! group, publish, and have a policy it is given through the CLI (run as the same user, with
//! the token it created) go live on the data plane's worker.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// A system user with a group of its own name, removed (with the group) on drop.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    fn create(name: &str) -> Self {
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args([
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            sh(&format!("id {flag} {name}"))
                .trim()
                .parse()
                .expect("numeric id")
        };
        Self {
            name: name.to_owned(),
            uid: id("-u"),
            gid: id("-g"),
        }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        // userdel also removes the user's own group (--user-group).
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stderr(std::process::Stdio::null())
            .status();
        if sh(&format!("getent group {} || true", self.name)).contains(&self.name) {
            let _ = Command::new("groupdel").arg(&self.name).status();
        }
    }
}

/// Runs `cmd` as `user` (its uid and primary gid, no supplementary groups, no capabilities).
fn as_user<'a>(cmd: &'a mut Command, user: &TempUser) -> &'a mut Command {
    cmd.uid(user.uid).gid(user.gid)
}

fn mode_owner_group(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.permissions().mode() & 0o7777, meta.uid(), meta.gid())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `switchyard-control ARGS` as `user`, against the daemon at `api`; its stdout.
fn cli(user: &TempUser, shm: &Path, instance: &str, api: &str, args: &[&str]) -> String {
    let out = run_with_timeout(
        as_user(&mut Command::new(control_bin()), user)
            .args(args)
            .args(["--api", api, "--instance", instance, "--shm-dir"])
            .arg(shm),
        WAIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "switchyard-control {args:?} as {}: {stdout}{}",
        user.name,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap() // effective uid
}

#[test]
fn an_unprivileged_control_plane_drives_a_root_data_plane_through_a_shared_group() {
    require_root();
    // Declared first, dropped last: after the processes that run as it have been killed.
    let user = TempUser::create(&unique("sylp"));
    let dir = PathBuf::from(format!("/run/{}", unique("sylp")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    // The shared directory: root's, setgid to the group, nothing for others (as the package's
    // tmpfiles.d line makes /run/switchyard). The policy lives apart, in a directory the user
    // may write (`apply` saves the accepted policy over the file).
    std::os::unix::fs::chown(&dir, Some(0), Some(user.gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let shm = dir.join("shm");
    std::fs::create_dir(&shm).unwrap();
    std::os::unix::fs::chown(&shm, Some(0), Some(user.gid)).unwrap();
    std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let policy_dir = dir.join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    let policy = policy_dir.join("policy.yaml");
    let minimal = std::fs::read_to_string("configs/minimal.yaml").unwrap();
    std::fs::write(&policy, &minimal).unwrap();
    for p in [&policy_dir, &policy] {
        std::os::unix::fs::chown(p, Some(user.uid), Some(user.gid)).unwrap();
    }
    let instance = unique("lp");

    // The root data plane first: it creates the segment.
    let mut dp = Background::spawn(
        Command::new(DATAPLANE)
            .args(["run", "--instance", &instance, "--shm-dir"])
            .arg(&shm)
            .args(["--", "-l", "0-1", "--in-memory", "--no-pci"])
            .args(["--vdev=net_null0,no-rx=1"]),
    );
    dp.wait_for_line(WAIT, |l| l.starts_with("table: none yet"));
    let segment = shm.join(format!("switchyard-{instance}.ctl"));
    assert_eq!(
        mode_owner_group(&segment),
        (0o660, 0, user.gid),
        "the root data plane's segment: 0660, root, the instance's group"
    );

    // The control plane as the user: no root, no capability, only the group.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut control = Background::spawn(
        as_user(&mut Command::new(control_bin()), &user)
            .env("RUST_LOG", "info")
            .args(["run", "--policy"])
            .arg(&policy)
            .args(["--instance", &instance, "--listen", &listen])
            .args(["--start-wait", "0s", "--shm-dir"])
            .arg(&shm),
    );
    assert_eq!(uid_of(control.child.id()), user.uid);

    // Generation 1 (the shipped minimal policy) goes live on the data plane's worker.
    let deadline = Instant::now() + WAIT;
    let show = loop {
        let out = run_with_timeout(
            as_user(&mut Command::new(control_bin()), &user)
                .args([
                    "show",
                    "--api",
                    &listen,
                    "--instance",
                    &instance,
                    "--shm-dir",
                ])
                .arg(&shm),
            WAIT,
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.starts_with("generation 1 live") || text.contains("\ngeneration 1 live") {
            break text;
        }
        if let Some(status) = control.child.try_wait().unwrap() {
            panic!(
                "the unprivileged control plane exited ({status}); see its log above; show said:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "generation 1 never went live:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(show.contains("192.0.2.10"), "{show}");

    // What the control plane created: generation file 0640 and token 0640, the user's, in the
    // group (setgid directory); the segment stays root's, 0660.
    assert_eq!(
        mode_owner_group(&shm.join(format!("switchyard-{instance}.gen-1"))),
        (0o640, user.uid, user.gid)
    );
    let token = shm.join(format!("switchyard-{instance}.token"));
    assert_eq!(mode_owner_group(&token), (0o640, user.uid, user.gid));
    assert_eq!(mode_owner_group(&segment), (0o660, 0, user.gid));

    // A new policy (a second backend), applied through the CLI as the same user with the
    // token the daemon made: `apply` returns once every worker runs it.
    let next = dir.join("next.yaml");
    std::fs::write(
        &next,
        minimal.replace(
            "      - { address: 192.0.2.10 }",
            "      - { address: 192.0.2.10 }\n      - { address: 192.0.2.11 }",
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(&next)
        .unwrap()
        .contains("192.0.2.11"));
    std::os::unix::fs::chown(&next, Some(user.uid), Some(user.gid)).unwrap();
    let applied = cli(
        &user,
        &shm,
        &instance,
        &listen,
        &["apply", next.to_str().unwrap(), "--yes"],
    );
    let show = cli(&user, &shm, &instance, &listen, &["show"]);
    assert!(
        show.contains("generation 2 live on 1 of 1 workers"),
        "{applied}\n{show}"
    );
    assert!(show.contains("192.0.2.11"), "{show}");
    assert!(std::fs::read_to_string(&policy)
        .unwrap()
        .contains("192.0.2.11"));
    assert_eq!(
        mode_owner_group(&shm.join(format!("switchyard-{instance}.gen-2"))),
        (0o640, user.uid, user.gid)
    );

    let (status, _) = control.stop(15, WAIT);
    assert!(status.success(), "control plane: {status}");
    let (status, _) = dp.stop(15, WAIT);
    assert!(status.success(), "data plane: {}", dp.seen.join("\n"));
    let out = run_with_timeout(
        Command::new(control_bin())
            .args(["remove-instance", &instance, "--shm-dir"])
            .arg(&shm),
        WAIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
