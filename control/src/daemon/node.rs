//! `switchyard-control node drain | undrain | status`: take a whole node out of the routers'
//! ECMP and back (`docs/DEPLOY-ECMP.md`).
//!
//! `drain` creates the instance's drain marker ([`announce::drain_marker_path`]), which the
//! daemon's announcer turns into a withdrawal of every VIP; then it waits until BIRD runs the
//! withdrawal ([`announce::Status`] drained and in sync) and until the data plane has received
//! no packet for `--quiet` (the routers stopped sending: flows finished or moved to other
//! nodes), at most `--wait`. `undrain` removes the marker and waits for the announcement. The
//! marker lives beside the API token in the shared-memory directory, so who may read the token
//! may drain the node; it survives a restart of the daemon.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::announce::{self, Status};
use super::client::ApiClient;

/// What `node` was asked to do.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `drain`, `undrain` or `status`.
    pub action: String,
    pub instance: String,
    pub shm_dir: PathBuf,
    pub api: String,
    pub token_file: PathBuf,
    /// Longest `drain` waits for BIRD and then for traffic to stop.
    pub wait: Duration,
    /// How long the data plane must receive nothing for `drain` to call it drained.
    pub quiet: Duration,
}

fn fail(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "switchyard-control node: {text}");
    ExitCode::FAILURE
}

fn print_status(s: &Status) {
    let mut out = format!(
        "node {} · BIRD {} ({}, {} configure{})\n",
        if s.drained { "drained" } else { "in service" },
        if s.in_sync { "in sync" } else { "NOT in sync" },
        s.routes_file,
        s.configures,
        if s.configures == 1 { "" } else { "s" },
    );
    if let Some(e) = &s.last_error {
        out.push_str(&format!("last error: {e}\n"));
    }
    for v in &s.vips {
        match v.withdrawn {
            None => out.push_str(&format!("  {:<40} announced\n", v.vip)),
            Some(why) => out.push_str(&format!("  {:<40} withdrawn: {}\n", v.vip, why.as_str())),
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
}

/// Waits until the announcer's status satisfies `done`.
fn wait_status(
    o: &NodeOptions,
    deadline: Instant,
    done: impl Fn(&Status) -> bool,
) -> Result<Status, String> {
    loop {
        let status = announce::read_status(&o.shm_dir, &o.instance);
        match status {
            Ok(s) if done(&s) => return Ok(s),
            Ok(s) if Instant::now() >= deadline => {
                return Err(format!(
                    "BIRD not configured within {:?}{}",
                    o.wait,
                    s.last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ))
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Packets the data plane's workers received so far.
fn packets(client: &ApiClient) -> Result<u64, String> {
    let state = client.state().map_err(|e| e.to_string())?;
    Ok(state.dataplane.workers.iter().map(|w| w.packets).sum())
}

/// `switchyard-control node ACTION`.
#[must_use]
pub fn node(o: &NodeOptions) -> ExitCode {
    let marker = announce::drain_marker_path(&o.shm_dir, &o.instance);
    let deadline = Instant::now() + o.wait;
    match o.action.as_str() {
        "status" => match announce::read_status(&o.shm_dir, &o.instance) {
            Ok(s) => {
                print_status(&s);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        "undrain" => {
            if let Err(e) = std::fs::remove_file(&marker) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return fail(&format!("{}: {e}", marker.display()));
                }
            }
            match wait_status(o, deadline, |s| !s.drained && s.in_sync) {
                Ok(s) => {
                    print_status(&s);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        "drain" => {
            if let Err(e) = std::fs::write(&marker, b"drained by switchyard-control node drain\n") {
                return fail(&format!("{}: {e}", marker.display()));
            }
            let t0 = Instant::now();
            let status = match wait_status(o, deadline, |s| s.drained && s.in_sync) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            print_status(&status);
            println!(
                "withdrawn in {:.0} ms; waiting for traffic to stop",
                t0.elapsed().as_secs_f64() * 1000.0
            );
            let client =
                ApiClient::new(&o.api, Duration::from_secs(5)).with_token_file(&o.token_file);
            let mut last = match packets(&client) {
                Ok(n) => n,
                Err(e) => return fail(&e),
            };
            let mut still_since = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let now = match packets(&client) {
                    Ok(n) => n,
                    Err(e) => return fail(&e),
                };
                if now != last {
                    last = now;
                    still_since = Instant::now();
                } else if still_since.elapsed() >= o.quiet {
                    println!(
                        "drained: no packet for {:?} ({:.1} s after the drain began)",
                        o.quiet,
                        t0.elapsed().as_secs_f64()
                    );
                    return ExitCode::SUCCESS;
                }
                if Instant::now() >= deadline {
                    println!(
                        "drained (withdrawn); traffic still arriving after {:?}: the timeout ended the wait",
                        o.wait
                    );
                    return ExitCode::SUCCESS;
                }
            }
        }
        other => fail(&format!(
            "unknown action {other:?}: drain, undrain or status"
        )),
    }
}
