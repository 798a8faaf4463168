//! Policy model, parsing and validation.
//!
//! A policy file goes through two stages, kept apart so each can be used and tested alone:
//!
//! 1. [`parse_raw`]: YAML text to [`raw::RawPolicy`] under explicit parser budgets (depth,
//!    nodes, aliases, size — a YAML bomb stops here). Only shape is checked: unknown fields,
//!    missing fields, wrong types. The first such error is reported with the line and column
//!    the YAML library gives.
//! 2. [`validate`]: [`raw::RawPolicy`] to [`Policy`]. Every semantic problem is reported at
//!    once — undefined or unused pools, duplicate names, overlapping VIPs, bad prefixes,
//!    routes that can never match, and the rest listed in `docs/POLICY.md` — each with the
//!    YAML path of the node and its line and column (the raw model wraps nodes in
//!    [`serde_saphyr::Spanned`], so positions survive deserialization).
//!
//! [`load`] and [`parse_str`] run both and return [`PolicyErrors`], which displays one problem
//! per line as `FILE:LINE:COL: PATH: MESSAGE`.
//!
//! The validated [`Policy`] resolves names into typed indices ([`RegionId`], [`PoolId`]) so a
//! compiler can walk it without lookups; names stay on every object for counters and the CLI.

mod error;
mod model;
mod parse;
pub mod raw;
mod validate;
mod values;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use error::{Diagnostic, PolicyErrors, Position};
pub use model::*;
pub use parse::{
    parse_raw, MAX_ALIASES, MAX_ALIAS_REPLAYED_EVENTS, MAX_ANCHORS, MAX_DEPTH, MAX_NODES,
    MAX_POLICY_BYTES,
};
pub use validate::validate;

/// Parses and validates policy text. `file_label` names the source in diagnostics.
///
/// # Errors
/// The first syntax or shape error, or every semantic error.
pub fn parse_str(src: &str, file_label: &str) -> Result<Policy, PolicyErrors> {
    let raw = parse_raw(src).map_err(|d| PolicyErrors::new(file_label, vec![d]))?;
    validate(&raw).map_err(|d| PolicyErrors::new(file_label, d))
}

/// Reads, parses and validates a policy file. A relative `geoip_database` is resolved against
/// the directory of the file.
///
/// # Errors
/// As [`parse_str`], plus a file that cannot be read, is larger than [`MAX_POLICY_BYTES`] or
/// is not UTF-8.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    let label = path.display().to_string();
    let src = read_source(path)
        .map_err(|message| PolicyErrors::new(&label, vec![Diagnostic::new(None, None, message)]))?;
    let mut policy = parse_str(&src, &label)?;
    if let Some(database) = &mut policy.geoip_database {
        if database.is_relative() {
            if let Some(dir) = path.parent() {
                *database = dir.join(&*database);
            }
        }
    }
    Ok(policy)
}

fn read_source(path: &Path) -> Result<String, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let limit = u64::try_from(MAX_POLICY_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "at the limit" from "over it" without trusting
    // the size the file system reports (a FIFO or /proc file has none).
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "file is larger than {MAX_POLICY_BYTES} bytes; a policy this big is not a policy"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}
