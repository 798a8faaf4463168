//! `switchyard-control`: the operator's command line and, later, the control-plane daemon.
//!
//! Exit codes: 0 success, 1 the policy (or other input) was rejected, 2 bad usage (from clap).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchyard_control::policy::{self, Policy};

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
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Policy file (YAML).
    file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate(&args),
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    match policy::load(&args.file) {
        Ok(policy) => {
            // A closed stdout (`| head -0`) is not a policy error.
            let _ = writeln!(std::io::stdout(), "ok: {}", summary(&policy));
            ExitCode::SUCCESS
        }
        Err(errors) => {
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
        }
    }
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
