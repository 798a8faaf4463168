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

pub mod edit;
mod error;
mod model;
mod parse;
pub mod raw;
mod validate;
pub(crate) mod values;

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
    load_text(path).map(|(policy, _)| policy)
}

/// [`load`], also returning the text the policy was read from.
///
/// # Errors
/// As [`load`].
pub fn load_text(path: &Path) -> Result<(Policy, String), PolicyErrors> {
    let label = path.display().to_string();
    let src = read_source(path)
        .map_err(|message| PolicyErrors::new(&label, vec![Diagnostic::new(None, None, message)]))?;
    let policy = resolve_relative(parse_str(&src, &label)?, path);
    Ok((policy, src))
}

/// Resolves a relative `geoip_database` against the directory of `path`.
#[must_use]
pub fn resolve_relative(mut policy: Policy, path: &Path) -> Policy {
    if let Some(database) = &mut policy.geoip_database {
        if database.is_relative() {
            if let Some(dir) = path.parent() {
                *database = dir.join(&*database);
            }
        }
    }
    policy
}

fn read_source(path: &Path) -> Result<String, String> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads a policy file without ever blocking on it: the file is opened non-blocking (so a FIFO
/// with no writer, or a device, answers at once instead of stalling the daemon — and its API —
/// in `open`), then only a regular file of at most [`MAX_POLICY_BYTES`] is read.
///
/// # Errors
/// A file that cannot be opened or read, is not a regular file, or is too big; the message
/// says which.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "is {what}, not a regular file; a policy must be a regular file (nothing was read)"
        ));
    }
    let limit = u64::try_from(MAX_POLICY_BYTES).unwrap_or(u64::MAX);
    if meta.len() > limit {
        return Err(format!(
            "file is larger than {MAX_POLICY_BYTES} bytes; a policy this big is not a policy"
        ));
    }
    let mut bytes = Vec::new();
    // Read one byte past the limit: the size may grow between the stat and the read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(format!(
            "file is larger than {MAX_POLICY_BYTES} bytes; a policy this big is not a policy"
        ));
    }
    Ok(bytes)
}
