//! `switchyard-control`: the operator's command line and, later, the control-plane daemon.
//!
//! Exit codes: 0 success, 1 the policy (or other input) was rejected, 2 bad usage (from clap).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchyard_control::compile::{self, BackendIds, BackendState, CompileInput};
use switchyard_control::policy::{self, Policy};
use switchyard_table::generation::Generation;

#[derive(Debug, Parser)]
#[command(name = "switchyard-control", version, about = "Switchyard control plane", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// `run` (the daemon), `apply` (publish a policy to a running appliance) and `show` (what the
// appliance is doing) join here as further variants, each with its own `Args` struct and
// function returning an `ExitCode`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check a policy file and report every problem in it; changes nothing.
    Validate(ValidateArgs),
    /// Compile a policy into a table generation file the data plane can run from.
    Compile(CompileArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Compile(args) => compile(&args),
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
