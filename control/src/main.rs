//! `switchyard-control`: the operator's command line and the control-plane daemon (`run`).
//!
//! Exit codes: 0 success, 1 the policy (or other input) was rejected, 2 bad usage (from clap).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchyard_control::compile::{self, BackendIds, BackendState, CompileInput};
use switchyard_control::daemon;
use switchyard_control::policy::{self, Policy};
use switchyard_table::generation::Generation;

#[derive(Debug, Parser)]
#[command(name = "switchyard-control", version, about = "Switchyard control plane", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Each subcommand has its own `Args` struct and a function returning an `ExitCode`; `run`,
// `apply` and `show` live in `switchyard_control::daemon`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check a policy file and report every problem in it; changes nothing.
    Validate(ValidateArgs),
    /// Compile a policy into a table generation file the data plane can run from.
    Compile(CompileArgs),
    /// Run the control-plane daemon: publish the policy and keep the data plane current.
    Run(RunArgs),
    /// Apply a policy to the running daemon: validate, show the diff, publish, wait until live.
    Apply(ApplyArgs),
    /// Drain a backend: no new flows, established connections stay. Recorded in the policy
    /// file (`state: drained`), so a restart keeps it.
    Drain(BackendArgs),
    /// Undo `drain`: the backend takes new flows again at its weight.
    Undrain(BackendArgs),
    /// Disable a backend: out of scheduling, as if it were down (its flows move at their next
    /// packet). Recorded in the policy file (`state: disabled`).
    Disable(BackendArgs),
    /// Undo `disable`.
    Enable(BackendArgs),
    /// Show services, pools, backends and the live generation on each worker.
    Show(ShowArgs),
    /// A live terminal view of the traffic: per service and per backend rates, active flows,
    /// health and weights, drops by reason; sortable, refreshed every interval.
    Top(TopArgs),
    /// Phased canary rollouts: status, or pause, resume or abort one service's rollout.
    Rollout(RolloutArgs),
    /// Where a client's flow goes and why: service, region, route, pool, scheduler, backend,
    /// as the data plane's workers decide it on the live generation.
    Trace(TraceArgs),
    /// A bounded sample of live connections from the workers' connection tables.
    Flows(FlowsArgs),
    /// Live packet capture of what the data plane receives (or drops), written as pcapng.
    Capture(CaptureArgs),
    /// Take this node out of the routers' ECMP (withdraw every VIP from BGP, wait for traffic
    /// to stop), put it back, or show what it announces (docs/DEPLOY-ECMP.md).
    Node(NodeArgs),
    /// Remove an instance's files (control segment, generation files, rollout progress);
    /// refused while a control plane or data plane is attached to it.
    RemoveInstance(RemoveInstanceArgs),
}

#[derive(Debug, Args)]
struct RolloutArgs {
    /// `status`, `pause`, `resume` or `abort`.
    #[arg(value_parser = ["status", "pause", "resume", "abort"])]
    action: String,
    /// The service whose canary to act on (every rollout for `status` without it).
    service: Option<String>,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Print the rollouts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// `drain`, `undrain` or `status`.
    #[arg(value_parser = ["drain", "undrain", "status"])]
    action: String,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Longest drain/undrain waits for BIRD, then (drain) for traffic to stop.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = daemon::cli::parse_wait)]
    wait: std::time::Duration,
    /// drain: the data plane receiving nothing this long means the traffic stopped.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = daemon::cli::parse_wait)]
    quiet: std::time::Duration,
}

#[derive(Debug, Args)]
struct TraceArgs {
    /// The client: IP or IP:PORT ([IPv6]:PORT); without a port, 40000.
    client: String,
    /// The VIP and port: IP:PORT.
    vip: String,
    /// tcp or udp.
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp"])]
    proto: String,
    /// Also show each worker's connection-table entry for the flow.
    #[arg(long)]
    live: bool,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CaptureArgs {
    /// Only packets to this address (a VIP).
    #[arg(long)]
    vip: Option<String>,
    /// Only packets from or to this port.
    #[arg(long)]
    port: Option<u16>,
    /// Only this protocol: tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    proto: Option<String>,
    /// Capture packets as they are dropped for this reason (a drop counter: `acl`,
    /// `drop_rate_limited`, ...) or for `any` reason, instead of received packets.
    #[arg(long, value_name = "REASON")]
    drop: Option<String>,
    /// Packets at most (per worker on the data plane's side; in the file).
    #[arg(long, short = 'c', default_value_t = 1000)]
    count: u64,
    /// Seconds at most.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes kept of each packet (1-2048).
    #[arg(long, short = 's', default_value_t = 2048)]
    snaplen: u16,
    /// Packets per second per worker at most.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Stop once the file holds this many bytes (0: no bound).
    #[arg(long, default_value_t = 0)]
    max_bytes: u64,
    /// The pcapng file to write; `-` for standard output.
    #[arg(short = 'w', value_name = "FILE")]
    write: PathBuf,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
}

#[derive(Debug, Args)]
struct FlowsArgs {
    /// Only flows of this backend: a name, an address, or POOL/BACKEND.
    #[arg(long)]
    backend: Option<String>,
    /// Only flows to this VIP (IP or IP:PORT).
    #[arg(long)]
    vip: Option<String>,
    /// Only tcp or udp flows.
    #[arg(long, value_parser = ["tcp", "udp"])]
    proto: Option<String>,
    /// Flows per worker at most (1-256).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=256))]
    limit: u16,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Where a client finds the daemon's API token (`docs/CONTROL.md`, "Security of the API").
#[derive(Debug, Args)]
struct TokenArgs {
    /// The daemon's token file [default: <shm-dir>/switchyard-<instance>.token].
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// The daemon's instance, for the default token file.
    #[arg(long, value_name = "NAME", default_value = switchyard_table::shm::DEFAULT_INSTANCE)]
    instance: String,
    /// The daemon's shared-memory directory, for the default token file [default:
    /// $SWITCHYARD_SHM_DIR, else /dev/shm].
    #[arg(long, value_name = "DIR")]
    shm_dir: Option<PathBuf>,
}

impl TokenArgs {
    fn path(self) -> PathBuf {
        self.token_file.unwrap_or_else(|| {
            let dir = self.shm_dir.unwrap_or_else(switchyard_table::shm::shm_dir);
            daemon::auth::default_token_path(&dir, &self.instance)
        })
    }
}

#[derive(Debug, Args)]
struct RemoveInstanceArgs {
    /// The instance to remove.
    name: String,
    /// Directory of the control segment and generation files [default: $SWITCHYARD_SHM_DIR,
    /// else /dev/shm].
    #[arg(long, value_name = "DIR")]
    shm_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Policy file (YAML).
    file: PathBuf,
}

#[derive(Debug, Args)]
struct CompileArgs {
    /// Policy file (YAML).
    file: PathBuf,
    /// Where to write the generation blob.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Generation number written into the blob's header.
    #[arg(long, value_name = "N", default_value_t = 1)]
    generation: u64,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Policy file (YAML); reloaded on SIGHUP and when it changes.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Shared-memory instance shared with the data plane.
    #[arg(long, value_name = "NAME", default_value = switchyard_table::shm::DEFAULT_INSTANCE)]
    instance: String,
    /// Address of the local HTTP API (state, apply, metrics).
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// The API's bearer token file, created with mode 0640 if missing [default:
    /// <shm-dir>/switchyard-<instance>.token]. Required to listen beyond loopback; then every
    /// request needs the token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Directory of the control segment and generation files [default: $SWITCHYARD_SHM_DIR,
    /// else /dev/shm].
    #[arg(long, value_name = "DIR")]
    shm_dir: Option<PathBuf>,
    /// How often to check the policy file for changes, in milliseconds; 0 reloads on SIGHUP
    /// only.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    watch_interval_ms: u64,
    /// How long to wait at start for a running data plane to report the policy live.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = daemon::cli::parse_wait)]
    start_wait: std::time::Duration,
    #[command(flatten)]
    announce: daemon::announce::AnnounceArgs,
    /// Export events (to a JSON-lines file, syslog collectors) and run detection, as this YAML
    /// file says: sinks, privacy, detection (docs/CONTROL.md, "Events").
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// Policy file (YAML).
    file: PathBuf,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Apply without asking for confirmation.
    #[arg(short, long)]
    yes: bool,
    /// How long to wait for the new generation to go live on every worker.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = daemon::cli::parse_wait)]
    wait: std::time::Duration,
}

#[derive(Debug, Args)]
struct BackendArgs {
    /// The backend: its name or address, as POOL/BACKEND when several pools have it.
    backend: String,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Apply without asking for confirmation.
    #[arg(short, long)]
    yes: bool,
    /// How long to wait for the new generation to go live on every worker.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = daemon::cli::parse_wait)]
    wait: std::time::Duration,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// `stats`: traffic per service, pool, backend and port, drops by reason, per-worker busy
    /// share (from `GET /v1/stats`) instead of the configuration and state.
    #[arg(value_parser = ["stats"])]
    what: Option<String>,
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Print the daemon's state as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Address of the daemon's API.
    #[arg(long, value_name = "ADDR", default_value = daemon::DEFAULT_LISTEN)]
    api: String,
    #[command(flatten)]
    token: TokenArgs,
    /// Time between refreshes (and the window of each rate): 500ms, 1s, 5s...
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = daemon::cli::parse_wait)]
    interval: std::time::Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Compile(args) => compile(&args),
        Command::Run(args) => daemon::run(&daemon::RunOptions {
            policy: args.policy,
            instance: args.instance,
            shm_dir: args.shm_dir.unwrap_or_else(switchyard_table::shm::shm_dir),
            listen: args.listen,
            token_file: args.token_file,
            watch_interval: (args.watch_interval_ms > 0)
                .then(|| std::time::Duration::from_millis(args.watch_interval_ms)),
            start_wait: args.start_wait,
            announce: args.announce.settings(),
            events: args.events,
        }),
        Command::Apply(args) => daemon::cli::apply(&daemon::cli::ApplyOptions {
            file: args.file,
            api: args.api,
            token_file: args.token.path(),
            yes: args.yes,
            wait: args.wait,
        }),
        Command::Drain(args) => backend_state("drain", args),
        Command::Undrain(args) => backend_state("undrain", args),
        Command::Disable(args) => backend_state("disable", args),
        Command::Enable(args) => backend_state("enable", args),
        Command::Show(args) => daemon::cli::show(&daemon::cli::ShowOptions {
            api: args.api,
            token_file: args.token.path(),
            json: args.json,
            stats: args.what.is_some(),
        }),
        Command::Top(args) => daemon::top::run(&daemon::top::TopOptions {
            api: args.api,
            token_file: args.token.path(),
            interval: args.interval,
        }),
        Command::RemoveInstance(args) => remove_instance(&args),
        Command::Node(args) => {
            let shm_dir = args
                .token
                .shm_dir
                .clone()
                .unwrap_or_else(switchyard_table::shm::shm_dir);
            daemon::node::node(&daemon::node::NodeOptions {
                action: args.action,
                instance: args.token.instance.clone(),
                shm_dir,
                api: args.api,
                token_file: args.token.path(),
                wait: args.wait,
                quiet: args.quiet,
            })
        }
        Command::Trace(args) => daemon::inspect::trace(&daemon::inspect::TraceOptions {
            api: args.api,
            token_file: args.token.path(),
            params: daemon::query::TraceParams {
                client: args.client,
                vip: args.vip,
                proto: Some(args.proto),
            },
            live: args.live,
            json: args.json,
        }),
        Command::Capture(args) => daemon::capture::run(&daemon::capture::CaptureOptions {
            api: args.api,
            token_file: args.token.path(),
            params: daemon::capture::CaptureParams {
                vip: args.vip,
                port: args.port,
                proto: args.proto,
                drop: args.drop,
                count: Some(args.count),
                seconds: Some(args.seconds),
                snaplen: Some(args.snaplen),
                rate: Some(args.rate),
            },
            max_bytes: args.max_bytes,
            write: args.write,
        }),
        Command::Flows(args) => daemon::inspect::flows(&daemon::inspect::FlowsOptions {
            api: args.api,
            token_file: args.token.path(),
            params: daemon::query::FlowsParams {
                vip: args.vip,
                backend: args.backend,
                proto: args.proto,
                limit: Some(args.limit),
            },
            json: args.json,
        }),
        Command::Rollout(args) => daemon::cli::rollout(&daemon::cli::RolloutOptions {
            api: args.api,
            token_file: args.token.path(),
            action: args.action,
            service: args.service,
            json: args.json,
        }),
    }
}

fn backend_state(action: &str, args: BackendArgs) -> ExitCode {
    daemon::cli::backend_state(&daemon::cli::BackendStateOptions {
        action: action.to_owned(),
        backend: args.backend,
        api: args.api,
        token_file: args.token.path(),
        yes: args.yes,
        wait: args.wait,
    })
}

/// Removes an instance's files, naming each; exit 1 while it is in use.
fn remove_instance(args: &RemoveInstanceArgs) -> ExitCode {
    let dir = args
        .shm_dir
        .clone()
        .unwrap_or_else(switchyard_table::shm::shm_dir);
    match switchyard_control::instance::remove_instance(&dir, &args.name) {
        Ok(removed) if removed.is_empty() => {
            let _ = writeln!(
                std::io::stdout(),
                "instance {}: no files in {}",
                args.name,
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(removed) => {
            let mut out = std::io::stdout().lock();
            for path in &removed {
                let _ = writeln!(out, "removed {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "switchyard-control: cannot remove instance {}: {e}",
                args.name
            );
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    match load_policy(&args.file) {
        Ok(policy) => {
            // A closed stdout (`| head -0`) is not a policy error.
            let _ = writeln!(std::io::stdout(), "ok: {}", summary(&policy));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Compiles with every backend healthy at its policy weight and ids from 1: what the appliance
/// starts with before any health check has run.
fn compile(args: &CompileArgs) -> ExitCode {
    let policy = match load_policy(&args.file) {
        Ok(policy) => policy,
        Err(code) => return code,
    };
    let state = BackendState::new();
    let input = CompileInput {
        policy: &policy,
        generation: args.generation,
        state: &state,
    };
    let generation = match compile::compile(&input, &mut BackendIds::new()) {
        Ok(g) => g,
        Err(e) => return fail(&args.file, &e),
    };
    let blob = generation.encode();
    if let Err(e) = write_atomically(&args.output, &blob) {
        return fail(&args.output, &e);
    }
    let checksum = Generation::peek_header(&blob).map_or(0, |h| h.checksum);
    let _ = writeln!(
        std::io::stdout(),
        "{}: generation {}, {} bytes, {}, checksum {checksum:#018x}",
        args.output.display(),
        generation.generation,
        blob.len(),
        summary(&policy),
    );
    ExitCode::SUCCESS
}

/// Loads and validates a policy; on failure prints every problem, one per line, then a
/// summary line, and returns the exit code.
fn load_policy(file: &Path) -> Result<Policy, ExitCode> {
    policy::load(file).map_err(|errors| {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{errors}");
        let count = errors.len();
        let _ = writeln!(
            stderr,
            "{}: policy rejected, {count} {}",
            errors.file(),
            plural(count, "error", "errors")
        );
        ExitCode::FAILURE
    })
}

/// `FILE: MESSAGE` on stderr; exit code 1.
fn fail(file: &Path, message: &dyn std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "{}: {message}", file.display());
    ExitCode::FAILURE
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a reader never
/// sees half a generation.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `2 services, 3 pools, 6 backends, 2 regions`.
fn summary(policy: &Policy) -> String {
    let count = |n: usize, one: &str, many: &str| format!("{n} {}", plural(n, one, many));
    [
        count(policy.services.len(), "service", "services"),
        count(policy.pools.len(), "pool", "pools"),
        count(policy.backend_count(), "backend", "backends"),
        count(policy.regions.len(), "region", "regions"),
    ]
    .join(", ")
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}
