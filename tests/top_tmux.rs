//! `switchyard-control top` in a real terminal: tmux runs it against a control plane and a data
//! plane on `net_pcap` ports replaying a capture forever (connections to two services, four
//! times as many to `llama` as to `embed`, plus a client the ACL denies). Two captures of the
//! pane a few seconds apart must show both services and every backend with nonzero rates and
//! totals that grew; a sort key must change the order of the rows; the backends and drops views
//! must show health, weights, active flows and the ACL drop rate; `q` must end the session.
//! Without a daemon, `top` says so and keeps retrying; SIGTERM and SIGHUP end it with the
//! terminal back on its main screen.

mod common;
mod fixtures;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use fixtures::frames::tcp4_frame;

const WAIT: Duration = Duration::from_secs(60);
const LLAMA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const EMBED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

// llama 203.0.113.10:443 (3 backends), embed 203.0.113.20:443 (1), 10.1.99.0/24 denied.
const POLICY: &str = include_str!("fixtures/two_services.yaml");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tmux server of its own (`tmux -L NAME`), killed on drop whatever happened.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a detached 200 × 50 session running `command` (through `sh -c`, so `exec` it).
    fn start(command: &str) -> Self {
        let tmux = Self {
            socket: unique("sytop"),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "top",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new("tmux")
                .args(["-L", &self.socket])
                .args(args)
                .env_remove("TMUX"),
            Duration::from_secs(20),
        )
    }

    fn capture(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", "top", keys]);
        assert!(
            out.status.success(),
            "send-keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn format(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "top", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }

    /// Captures until `pred` holds; panics with the last capture after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let pane = self.capture();
            if pred(&pane) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {timeout:?}; the pane:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_gone(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "the tmux session still runs:\n{}",
                self.capture()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .env_remove("TMUX")
            .output();
        let dir =
            std::env::var_os("TMUX_TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let _ = std::fs::remove_file(dir.join("tmux-0").join(&self.socket));
    }
}

/// `1.23k`, `45.6M`, `999`, `-` (no rate yet) as a number.
fn si(text: &str) -> Option<f64> {
    let (digits, scale) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 1e3),
        'M' => (&text[..text.len() - 1], 1e6),
        'G' => (&text[..text.len() - 1], 1e9),
        'T' => (&text[..text.len() - 1], 1e12),
        _ => (text, 1.0),
    };
    digits.parse::<f64>().ok().map(|v| v * scale)
}

/// The rows of the table under the header line that starts with `header`: whitespace-split
/// cells, until the first blank line.
fn table(pane: &str, header: &str) -> Vec<Vec<String>> {
    pane.lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], name: &str) -> Option<&'a Vec<String>> {
    rows.iter().find(|r| r.first().is_some_and(|n| n == name))
}

/// Services rows as (name, pps, packets total): SERVICE PPS BPS NEW-FLOWS/S ACTIVE PACKETS
/// BYTES NEW-FLOWS.
fn services(pane: &str) -> Vec<(String, Option<f64>, u64)> {
    table(pane, "SERVICE")
        .into_iter()
        .filter(|r| r.len() == 8)
        .map(|r| (r[0].clone(), si(&r[1]), r[5].parse().unwrap_or(0)))
        .collect()
}

/// Services rows as (name, active flows).
fn service_active(pane: &str) -> Vec<(String, u64)> {
    table(pane, "SERVICE")
        .into_iter()
        .filter(|r| r.len() == 8)
        .map(|r| (r[0].clone(), r[4].parse().unwrap_or(0)))
        .collect()
}

fn both_services_have_rates(pane: &str) -> bool {
    let s = services(pane);
    s.len() == 2
        && s.iter()
            .all(|(_, pps, n)| pps.is_some_and(|p| p > 0.0) && *n > 0)
}

fn top_command(api: &str, instance: &str, shm: &Path) -> String {
    format!(
        "exec {} top --api {api} --instance {instance} --shm-dir {} --interval 1s",
        control_bin().display(),
        shm.display()
    )
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, view by view
fn top_shows_live_rates_sorts_and_quits() {
    require_root();
    let rig = Rig::new("top", POLICY);
    let Rig {
        dir,
        shm,
        policy,
        instance,
        prefix,
        api,
        ..
    } = &rig;

    // Per replay cycle: 24 connections to llama and 6 to embed (SYN, ACK, data each), and 5
    // SYNs from a denied client.
    let mut frames = Vec::new();
    for (flags, payload) in [(0x02, 0), (0x10, 0), (0x18, 64)] {
        for i in 0..30u16 {
            let (vip, client) = if i < 24 {
                (LLAMA, Ipv4Addr::new(10, 2, 0, 1 + (i % 9) as u8))
            } else {
                (EMBED, Ipv4Addr::new(10, 3, 0, 1 + (i % 3) as u8))
            };
            frames.push(tcp4_frame(
                client,
                40_000 + i,
                vip,
                443,
                flags,
                &vec![0x5a; payload],
            ));
        }
    }
    for p in 0..5u16 {
        frames.push(tcp4_frame(
            Ipv4Addr::new(10, 1, 99, 7),
            43_000 + p,
            LLAMA,
            443,
            0x02,
            &[],
        ));
    }
    let input = dir.join("in.pcap");
    write_pcap(&input, &frames);

    let _ctl = start_control(shm, policy, instance, api, &[]);
    let settings = pcap_settings(dir, 4096);
    let _dp = start_dataplane(
        shm,
        instance,
        &settings,
        prefix,
        &[
            format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", input.display()),
            "--vdev=net_pcap1,tx_pcap=/dev/null".to_string(),
        ],
    );

    let tmux = Tmux::start(&top_command(api, instance, shm));
    let first = tmux.wait_for("both services with rates", WAIT, both_services_have_rates);
    assert!(first.contains("data plane up"), "{first}");
    assert!(first.contains("q quit"), "the help line: {first}");
    std::thread::sleep(Duration::from_secs(3));
    let second = tmux.capture();
    eprintln!("top, services view:\n{second}");
    assert!(both_services_have_rates(&second), "{second}");
    let (a, b) = (services(&first), services(&second));
    for ((name, _, before), (name2, pps, after)) in a.iter().zip(&b) {
        assert_eq!(
            name, name2,
            "same order while nothing changed:\n{first}\n{second}"
        );
        assert!(
            after > before,
            "{name}: the total moved from {before} to {after}:\n{first}\n{second}"
        );
        assert!(pps.unwrap() > 0.0);
    }
    // Every connection is active, for its service (the replayed capture's flows stay open).
    for (name, active) in service_active(&second) {
        assert!(active > 0, "{name}: no active flows:\n{second}");
    }
    // Sorted by pps (the default): llama, with four times the connections, first.
    let order = |pane: &str| services(pane).into_iter().map(|s| s.0).collect::<Vec<_>>();
    assert_eq!(order(&second), ["llama", "embed"], "{second}");
    assert!(second.contains("sorted by pps"), "{second}");
    // `n`: by name.
    tmux.keys("n");
    let by_name = tmux.wait_for("sorted by name", WAIT, |p| {
        p.contains("sorted by name") && order(p) == ["embed", "llama"]
    });
    assert!(both_services_have_rates(&by_name), "{by_name}");

    // Backends: every one, up and healthy, at its weight; the busiest first; flows active.
    tmux.keys("2");
    let backends = tmux.wait_for("the backends view", WAIT, |p| {
        p.contains("view: backends") && table(p, "POOL/BACKEND").len() == 4
    });
    eprintln!("top, backends view:\n{backends}");
    let rows = table(&backends, "POOL/BACKEND");
    for name in [
        "llama-pool/gpu-1",
        "llama-pool/gpu-2",
        "llama-pool/gpu-3",
        "embed-pool/emb-1",
    ] {
        let r = row(&rows, name).unwrap_or_else(|| panic!("{name} missing:\n{backends}"));
        assert_eq!(r.len(), 11, "{r:?}");
        assert_eq!(r[2], "up", "{r:?}");
        assert_eq!(r[3], "yes", "{r:?}");
        assert_eq!(r[4], "100/100", "{r:?}");
    }
    // Sorted by name (the key stays across views), then by active flows, busiest first.
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "embed-pool/emb-1",
            "llama-pool/gpu-1",
            "llama-pool/gpu-2",
            "llama-pool/gpu-3"
        ],
        "{backends}"
    );
    let pps_sum: f64 = rows.iter().filter_map(|r| si(&r[5])).sum();
    assert!(pps_sum > 0.0, "{backends}");
    tmux.keys("a");
    let by_active = tmux.wait_for("sorted by active flows", WAIT, |p| {
        p.contains("sorted by active flows") && table(p, "POOL/BACKEND").len() == 4
    });
    let active: Vec<u64> = table(&by_active, "POOL/BACKEND")
        .iter()
        .map(|r| r[8].parse().unwrap())
        .collect();
    assert!(active.iter().sum::<u64>() >= 30, "{by_active}");
    assert!(active.windows(2).all(|w| w[0] >= w[1]), "{by_active}");

    // Drops: the ACL's, at a rate.
    tmux.keys("3");
    let drops = tmux.wait_for("the drops view", WAIT, |p| {
        p.contains("view: drops")
            && row(&table(p, "DROP REASON"), "acl")
                .is_some_and(|r| si(&r[1]).is_some_and(|v| v > 0.0))
    });
    assert!(drops.contains("drops "), "{drops}");

    // `q` ends top, and with it the session.
    tmux.keys("q");
    tmux.wait_gone(Duration::from_secs(10));
}

#[test]
fn top_without_a_daemon_says_so_and_ends_on_sigterm_and_sighup() {
    let dir = scratch("topnone");
    let _cleanup = RemoveDir(dir.clone());
    for signal in ["TERM", "HUP"] {
        // A port nothing listens on. After top, the shell reports its exit status and the
        // terminal's modes, so the pane shows whether the terminal was given back.
        let api = format!("127.0.0.1:{}", free_port());
        let top = top_command(&api, &unique("none"), &dir);
        let top = top.strip_prefix("exec ").unwrap();
        let tmux = Tmux::start(&format!(
            "{top}; echo \"top exited $?\"; echo \"modes: $(stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' ')\"; sleep 120"
        ));
        let pane = tmux.wait_for("the daemon unreachable", WAIT, |p| {
            p.contains("daemon unreachable") && p.contains(&api)
        });
        assert!(pane.contains("retrying every 1.0s"), "{pane}");
        assert_eq!(
            tmux.format("#{alternate_on}"),
            "1",
            "top draws on the alternate screen"
        );
        // Still running and still retrying a few intervals later.
        std::thread::sleep(Duration::from_secs(2));
        assert!(tmux.capture().contains("daemon unreachable"));

        // The pane runs the shell; top is its child.
        let shell = tmux.format("#{pane_pid}");
        let children =
            std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
        let pid = children.split_whitespace().next().expect("top runs");
        let out = Command::new("kill")
            .args([&format!("-{signal}"), pid])
            .output()
            .unwrap();
        assert!(out.status.success(), "kill -{signal} {pid}");
        let after = tmux.wait_for("top's exit", Duration::from_secs(10), |p| {
            p.contains("top exited") && p.contains("modes:")
        });
        assert!(after.contains("top exited 0"), "SIG{signal}: {after}");
        assert!(
            after.contains("modes: icanon echo"),
            "SIG{signal}: the terminal is out of raw mode: {after}"
        );
        assert!(!after.contains("daemon unreachable"), "{after}");
        assert_eq!(
            tmux.format("#{alternate_on}"),
            "0",
            "SIG{signal}: the terminal is back on its main screen"
        );
    }
}

#[test]
fn top_refuses_without_a_terminal() {
    let out = run_with_timeout(
        Command::new(control_bin()).args(["top", "--api", "127.0.0.1:1"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("top needs a terminal") && err.contains("show stats --json"),
        "{err}"
    );
}
