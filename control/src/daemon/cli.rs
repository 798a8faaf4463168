//! `switchyard-control apply` and `switchyard-control show`: the operator's side of the API.
//!
//! Exit codes: 0 done (for `apply`: live, unchanged, or published and still pending); 1 the
//! policy was refused (locally or by the daemon), the data plane rejected it, the operator
//! declined, or no daemon answered.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::policy;

use super::client::{ApiClient, ClientError};
use super::show;
use super::view::{ApplyResponse, PublishStatus};

/// `switchyard-control apply FILE`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub file: PathBuf,
    /// The daemon's API address.
    pub api: String,
    /// The daemon's token file (`--token-file`, else `<shm-dir>/switchyard-<instance>.token`).
    pub token_file: PathBuf,
    /// Apply without asking, even on a terminal.
    pub yes: bool,
    /// How long the daemon waits for the generation to go live before answering `pending`.
    pub wait: Duration,
}

/// `switchyard-control show`.
#[derive(Debug, Clone)]
pub struct ShowOptions {
    pub api: String,
    /// The daemon's token file (`--token-file`, else `<shm-dir>/switchyard-<instance>.token`).
    pub token_file: PathBuf,
    /// Print the raw JSON of `GET /v1/state` (or `GET /v1/stats`).
    pub json: bool,
    /// `show stats`: traffic per service, pool, backend and port instead of the state.
    pub stats: bool,
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds.
///
/// # Errors
/// Text that is none of those.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: expected a duration such as 500ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!(
            "`{text}`: unknown unit `{unit}`; expected ms, s or m"
        )),
    }
}

/// Prints a client error the way an operator wants to read it; exit code 1.
fn client_failure(e: &ClientError) -> ExitCode {
    let mut err = io::stderr().lock();
    match e {
        ClientError::Api { error, .. } if !error.errors.is_empty() => {
            for line in &error.errors {
                let _ = writeln!(err, "{line}");
            }
            if error.errors.len() > 1 || error.errors[0] != error.error {
                let _ = writeln!(err, "{}", error.error);
            }
        }
        e => {
            let _ = writeln!(err, "{e}");
        }
    }
    ExitCode::FAILURE
}

/// Asks on the terminal; `true` for yes.
fn confirm(question: &str) -> bool {
    let mut out = io::stdout().lock();
    let _ = write!(out, "{question} [y/N] ");
    let _ = out.flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Validates locally, shows the daemon's dry-run diff, confirms on a terminal, applies and
/// reports the generation that went live.
#[must_use]
pub fn apply(options: &ApplyOptions) -> ExitCode {
    let file = options.file.display().to_string();
    // Locally first: a broken file never reaches the daemon.
    if let Err(errors) = policy::load(&options.file) {
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "{errors}");
        let n = errors.len();
        let _ = writeln!(
            err,
            "{}: policy rejected, {n} {}; nothing was applied",
            errors.file(),
            if n == 1 { "error" } else { "errors" }
        );
        return ExitCode::FAILURE;
    }
    let text = match std::fs::read_to_string(&options.file) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(io::stderr(), "{file}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = ApiClient::new(&options.api, options.wait + Duration::from_secs(30))
        .with_token_file(&options.token_file);

    let preview = match client.apply(&text, &file, true, Duration::ZERO) {
        Ok(p) => p,
        Err(e) => return client_failure(&e),
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", preview.diff);
    if preview.changed
        && !options.yes
        && io::stdin().is_terminal()
        && !confirm(&format!("apply as generation {}?", preview.generation))
    {
        let _ = writeln!(out, "not applied; nothing changed");
        return ExitCode::FAILURE;
    }

    let done = match client.apply(&text, &file, false, options.wait) {
        Ok(d) => d,
        Err(e) => return client_failure(&e),
    };
    report(&done, options.wait)
}

/// Prints what became of an applied policy; exit 1 when the data plane refused it.
fn report(done: &ApplyResponse, wait: Duration) -> ExitCode {
    let mut out = io::stdout().lock();
    match done.status {
        PublishStatus::Live => {
            let latency = done
                .publish_to_live_ms
                .map(|ms| format!(" (publish→live {ms:.3} ms)"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "generation {} live on every worker{latency}",
                done.generation
            );
            ExitCode::SUCCESS
        }
        PublishStatus::Unchanged => {
            let _ = writeln!(
                out,
                "policy saved; the tables are unchanged, generation {} stays",
                done.generation
            );
            ExitCode::SUCCESS
        }
        PublishStatus::Pending => {
            let _ = writeln!(
                out,
                "generation {} published; not live on every worker after {:.1} s (is the data \
                 plane running? see `switchyard-control show`)",
                done.generation,
                wait.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        PublishStatus::Rejected => {
            let _ = writeln!(
                io::stderr(),
                "the data plane rejected generation {}: {}; the previous generation stays live",
                done.generation,
                done.reason.as_deref().unwrap_or("no reason given")
            );
            ExitCode::FAILURE
        }
    }
}

/// `switchyard-control drain | undrain | disable | enable BACKEND`.
#[derive(Debug, Clone)]
pub struct BackendStateOptions {
    /// `drain`, `undrain`, `disable` or `enable`.
    pub action: String,
    /// `[POOL/]NAME-OR-ADDRESS`.
    pub backend: String,
    pub api: String,
    /// The daemon's token file (`--token-file`, else `<shm-dir>/switchyard-<instance>.token`).
    pub token_file: PathBuf,
    pub yes: bool,
    pub wait: Duration,
}

/// Sets a backend's state in the daemon's policy file: shows the diff, confirms on a terminal
/// (unless `--yes`), applies and reports, as `apply` does.
#[must_use]
pub fn backend_state(options: &BackendStateOptions) -> ExitCode {
    let client = ApiClient::new(&options.api, options.wait + Duration::from_secs(30))
        .with_token_file(&options.token_file);
    let preview =
        match client.backend_state(&options.action, &options.backend, true, Duration::ZERO) {
            Ok(p) => p,
            Err(e) => return client_failure(&e),
        };
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", preview.diff);
    if !preview.changed {
        return ExitCode::SUCCESS;
    }
    if !options.yes
        && io::stdin().is_terminal()
        && !confirm(&format!(
            "{} {} as generation {}?",
            options.action, options.backend, preview.generation
        ))
    {
        let _ = writeln!(out, "not applied; nothing changed");
        return ExitCode::FAILURE;
    }
    drop(out);
    let done = match client.backend_state(&options.action, &options.backend, false, options.wait) {
        Ok(d) => d,
        Err(e) => return client_failure(&e),
    };
    report(&done, options.wait)
}

/// Prints the daemon's state as tables, or as JSON.
#[must_use]
pub fn show(options: &ShowOptions) -> ExitCode {
    let client =
        ApiClient::new(&options.api, Duration::from_secs(10)).with_token_file(&options.token_file);
    if options.stats {
        let stats = match client.stats() {
            Ok(s) => s,
            Err(e) => return client_failure(&e),
        };
        let text = if options.json {
            serde_json::to_string_pretty(&stats).unwrap_or_default() + "\n"
        } else {
            super::stats::render(&stats)
        };
        let _ = io::stdout().lock().write_all(text.as_bytes());
        return ExitCode::SUCCESS;
    }
    let state = match client.state() {
        Ok(s) => s,
        Err(e) => return client_failure(&e),
    };
    let text = if options.json {
        match serde_json::to_string_pretty(&state) {
            Ok(t) => t + "\n",
            Err(e) => {
                let _ = writeln!(io::stderr(), "cannot format the state: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        show::render(&state)
    };
    let _ = io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// `switchyard-control rollout ACTION [SERVICE]`.
#[derive(Debug, Clone)]
pub struct RolloutOptions {
    pub api: String,
    /// The daemon's token file (`--token-file`, else `<shm-dir>/switchyard-<instance>.token`).
    pub token_file: PathBuf,
    /// `status`, `pause`, `resume` or `abort`.
    pub action: String,
    /// Required for every action but `status`.
    pub service: Option<String>,
    pub json: bool,
}

/// `switchyard-control rollout status | pause | resume | abort SERVICE`.
#[must_use]
pub fn rollout(options: &RolloutOptions) -> ExitCode {
    let client =
        ApiClient::new(&options.api, Duration::from_secs(10)).with_token_file(&options.token_file);
    let result = match (options.action.as_str(), &options.service) {
        ("status", _) => client.rollouts(),
        ("pause" | "resume" | "abort", Some(service)) => client.rollout(service, &options.action),
        ("pause" | "resume" | "abort", None) => {
            let _ = writeln!(
                io::stderr(),
                "rollout {}: name the service (switchyard-control rollout {} SERVICE)",
                options.action,
                options.action
            );
            return ExitCode::FAILURE;
        }
        (other, _) => {
            let _ = writeln!(
                io::stderr(),
                "unknown rollout action `{other}`; use status, pause, resume or abort"
            );
            return ExitCode::FAILURE;
        }
    };
    let list = match result {
        Ok(list) => list,
        Err(e) => return client_failure(&e),
    };
    let mut list = list;
    if let Some(service) = &options.service {
        list.retain(|r| &r.service == service);
    }
    let text = if options.json {
        serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
    } else {
        show::render_rollouts(&list)
    };
    let _ = io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse() {
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_wait("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_wait("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_wait("1h").is_err());
        assert!(parse_wait("soon").is_err());
    }
}
