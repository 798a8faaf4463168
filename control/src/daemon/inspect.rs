//! `switchyard-control trace` and `switchyard-control flows`: the operator's questions "where
//! does this client go, and why" and "which connections does this backend have", answered by
//! the data plane's workers (see [`super::query`]).

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use super::client::{ApiClient, ClientError};
use super::query::{FlowsParams, FlowsView, TraceParams, TraceView};

/// `switchyard-control trace CLIENT[:PORT] VIP:PORT`.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub api: String,
    /// The daemon's token file, sent when the API listens beyond loopback.
    pub token_file: std::path::PathBuf,
    pub params: TraceParams,
    /// Also list each worker's connection-table entry for the flow.
    pub live: bool,
    pub json: bool,
}

/// `switchyard-control flows`.
#[derive(Debug, Clone)]
pub struct FlowsOptions {
    pub api: String,
    /// The daemon's token file, sent when the API listens beyond loopback.
    pub token_file: std::path::PathBuf,
    pub params: FlowsParams,
    pub json: bool,
}

fn fail(e: &ClientError) -> ExitCode {
    let _ = writeln!(io::stderr(), "{e}");
    ExitCode::FAILURE
}

fn client(api: &str, token_file: &std::path::Path) -> ApiClient {
    ApiClient::new(api, Duration::from_secs(10)).with_token_file(token_file)
}

/// The trace as an operator reads it.
#[must_use]
pub fn render_trace(v: &TraceView, live: bool) -> String {
    let mut out = String::new();
    let field = |out: &mut String, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.push_str(&format!("{k:<10} {v}\n"));
        }
    };
    out.push_str(&format!("flow       {}\n", v.flow));
    out.push_str(&format!("generation {}\n", v.generation));
    let verdict = match &v.reason {
        Some(r) if v.verdict == "drop" => format!("drop ({r})"),
        _ => v.verdict.clone(),
    };
    out.push_str(&format!("verdict    {verdict}\n"));
    field(&mut out, "service", &v.service);
    field(&mut out, "region", &v.region);
    field(&mut out, "route", &v.route);
    field(&mut out, "pool", &v.pool);
    field(&mut out, "scheduler", &v.scheduler);
    field(&mut out, "backend", &v.backend);
    out.push_str("why\n");
    for (i, w) in v.why.iter().enumerate() {
        out.push_str(&format!("  {}. {w}\n", i + 1));
    }
    if live {
        out.push_str("connection tables\n");
        for w in &v.workers {
            out.push_str(&format!(
                "  worker {}: {}; a new flow would go to {}\n",
                w.worker,
                w.holds
                    .as_deref()
                    .map_or_else(|| "no entry".to_owned(), |b| format!("holds it on {b}")),
                w.would_pick
            ));
        }
    }
    out
}

/// Prints what the data plane does with a flow; exit 1 when the daemon could not answer.
#[must_use]
pub fn trace(o: &TraceOptions) -> ExitCode {
    match client(&o.api, &o.token_file).trace(&o.params) {
        Ok(v) if o.json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render_trace(&v, o.live));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// The flows as a table.
#[must_use]
pub fn render_flows(v: &FlowsView) -> String {
    let mut rows = vec![[
        "BACKEND".to_owned(),
        "PROTO".to_owned(),
        "CLIENT".to_owned(),
        "VIP".to_owned(),
        "STATE".to_owned(),
        "WORKER".to_owned(),
    ]];
    for f in &v.flows {
        rows.push([
            f.backend.clone(),
            f.proto.clone(),
            f.client.clone(),
            f.vip.clone(),
            f.state.clone(),
            f.worker.to_string(),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} flows listed from {} workers ({} live flows looked at; at most {} per worker)\n",
        v.flows.len(),
        v.workers,
        v.scanned,
        v.limit_per_worker
    ));
    out
}

/// Prints a sample of live connections; exit 1 when the daemon could not answer.
#[must_use]
pub fn flows(o: &FlowsOptions) -> ExitCode {
    match client(&o.api, &o.token_file).flows(&o.params) {
        Ok(v) if o.json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(v) => {
            print!("{}", render_flows(&v));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
