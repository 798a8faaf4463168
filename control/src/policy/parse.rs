//! YAML to [`RawPolicy`], under explicit parser budgets.
//!
//! The source is read twice. The first pass deserializes into nothing (`IgnoredAny`): it checks
//! only that the text is one well-formed YAML document within the budgets below, wherever the
//! problem sits — an alias bomb under a misspelt key is still reported as a bomb. The second
//! pass builds the [`RawPolicy`] and reports the first shape error (unknown field, wrong type,
//! missing field). Both report the line and column the library gives.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{
    DuplicateKeyPolicy, Error as YamlError, Location, MergeKeyPolicy, MessageFormatter, Options,
    UserMessageFormatter,
};

use super::error::{Diagnostic, Position};
use super::raw::RawPolicy;
use super::values::closest;

/// Largest policy source accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of mappings and sequences (a real policy needs about 8).
pub const MAX_DEPTH: usize = 32;
/// Most YAML nodes (scalars, mappings, sequences) in the document, aliases expanded.
pub const MAX_NODES: usize = 250_000;
/// Most parser events, aliases expanded.
pub const MAX_EVENTS: usize = 1_000_000;
/// Most alias references (`*name`) in the document.
pub const MAX_ALIASES: usize = 1_000;
/// Most anchors (`&name`) in the document.
pub const MAX_ANCHORS: usize = 1_000;
/// Most events that alias expansion may replay in total: anchoring a shared health block
/// and using it in a few hundred pools stays far below; a billion-laughs document does not.
pub const MAX_ALIAS_REPLAYED_EVENTS: usize = 20_000;
/// Deepest chain of aliases that refer to anchors containing aliases.
pub const MAX_ALIAS_NESTING: usize = 8;
/// Most bytes of scalar text in the document.
pub const MAX_SCALAR_BYTES: usize = MAX_POLICY_BYTES;

fn options() -> Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_POLICY_BYTES),
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: MAX_EVENTS,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ANCHORS,
            max_documents: 1,
            max_total_scalar_bytes: MAX_SCALAR_BYTES,
            max_merge_keys: MAX_ANCHORS,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAYED_EVENTS,
            max_replay_stack_depth: MAX_ALIAS_NESTING,
        },
        // Repeated keys reach our visitors: derived structs reject a repeated field, and
        // `pools:` / `regions:` keep every entry so validation can report a name defined twice
        // together with the other problems.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // `<<: *defaults` is handy for shared health blocks.
        merge_keys: MergeKeyPolicy::Merge,
        // We print `FILE:LINE:COL: message` ourselves.
        with_snippet: false,
    }
}

/// Parses YAML text into the raw policy, checking budgets and shape only.
///
/// # Errors
/// The first syntax, budget or shape problem, with its position when the library reports one.
pub fn parse_raw(src: &str) -> Result<RawPolicy, Diagnostic> {
    if src.len() > MAX_POLICY_BYTES {
        return Err(Diagnostic::new(
            None,
            None,
            format!(
                "policy is {} bytes; the limit is {MAX_POLICY_BYTES} bytes",
                src.len()
            ),
        ));
    }
    let has_content = src.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "---" && line != "..."
    });
    if !has_content {
        return Err(Diagnostic::new(
            None,
            None,
            "policy is empty: expected a mapping with at least `interfaces`, `services` and `pools`"
                .to_owned(),
        ));
    }
    serde_saphyr::from_str_with_options::<IgnoredAny>(src, options())
        .map_err(|e| diagnostic(&e, src))?;
    serde_saphyr::from_str_with_options::<RawPolicy>(src, options())
        .map_err(|e| diagnostic(&e, src))
}

fn diagnostic(err: &YamlError, src: &str) -> Diagnostic {
    let err = err.without_snippet();
    let message = describe(err, src);
    let position = err
        .location()
        .and_then(Position::from_location)
        .or_else(|| repeated_top_level_key(src, &message));
    Diagnostic::new(position, None, message)
}

/// The library gives no position for a key repeated at the top level (it has none for the
/// root mapping); find the repetition in the text.
fn repeated_top_level_key(src: &str, message: &str) -> Option<Position> {
    let key = message
        .strip_prefix("duplicate field `")?
        .strip_suffix('`')?;
    let mut seen = false;
    for (index, line) in src.lines().enumerate() {
        let is_key = line
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(':'));
        if is_key {
            if seen {
                let line = u64::try_from(index + 1).ok()?;
                return Some(Position { line, column: 1 });
            }
            seen = true;
        }
    }
    None
}

/// The message for one library error, reworded where the library's text leaves an operator
/// guessing.
fn describe(err: &YamlError, src: &str) -> String {
    match err {
        YamlError::AliasError { error, .. } => describe(error, src),
        YamlError::InvalidScalar { ty, location } => match token_at(src, *location) {
            Some(found) => format!("expected {}, found `{found}`", type_name(ty)),
            None => format!("expected {}", type_name(ty)),
        },
        YamlError::Unexpected { expected, .. } => match *expected {
            "mapping start" => "expected a mapping (`key: value` lines or `{ ... }`)".to_owned(),
            "sequence start" => "expected a list (`- item` lines or `[ ... ]`)".to_owned(),
            "string scalar" => "expected a single value, not a list or a mapping".to_owned(),
            other => format!("expected {other}"),
        },
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => {
            let hint = did_you_mean(field, expected);
            if expected.is_empty() {
                format!("unknown field `{field}`; this mapping takes no fields")
            } else {
                format!(
                    "unknown field `{field}`{hint}; expected one of: {}",
                    expected.join(", ")
                )
            }
        }
        YamlError::SerdeUnknownVariant {
            variant, expected, ..
        } => {
            let hint = did_you_mean(variant, expected);
            format!(
                "unknown value `{variant}`{hint}; expected one of: {}",
                expected.join(", ")
            )
        }
        YamlError::Budget {
            breach: BudgetBreach::Documents { .. },
            ..
        }
        | YamlError::MultipleDocuments { .. } => {
            "a policy is a single YAML document; found another one after `---`".to_owned()
        }
        YamlError::Budget { breach, .. } => budget_message(breach),
        YamlError::UnknownAnchor { .. } => {
            "alias refers to an anchor that is not defined (an anchor `&name` must come before its alias `*name`)"
                .to_owned()
        }
        YamlError::AliasReplayLimitExceeded {
            max_total_replayed_events,
            ..
        } => format!(
            "aliases expand to more than {max_total_replayed_events} YAML events; \
             this looks like an alias bomb (billion laughs) and is rejected"
        ),
        YamlError::AliasExpansionLimitExceeded {
            max_expansions_per_anchor,
            ..
        } => format!(
            "an anchor is expanded more than {max_expansions_per_anchor} times; \
             this looks like an alias bomb and is rejected"
        ),
        YamlError::AliasReplayStackDepthExceeded { max_depth, .. } => format!(
            "aliases nest more than {max_depth} deep; this looks like an alias bomb and is rejected"
        ),
        other => sanitize(UserMessageFormatter.format_message(other)),
    }
}

fn budget_message(breach: &BudgetBreach) -> String {
    let what = match breach {
        BudgetBreach::Aliases { aliases } => {
            format!("more than {MAX_ALIASES} aliases ({aliases} seen)")
        }
        BudgetBreach::Anchors { anchors } => {
            format!("more than {MAX_ANCHORS} anchors ({anchors} seen)")
        }
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
            "{aliases} aliases for {anchors} anchors; this looks like an alias bomb (billion laughs)"
        ),
        BudgetBreach::Depth { depth } => {
            format!("nesting {depth} deep; the limit is {MAX_DEPTH}")
        }
        BudgetBreach::Nodes { nodes } => {
            format!("more than {MAX_NODES} nodes ({nodes} seen, aliases expanded); an alias bomb?")
        }
        BudgetBreach::Events { events } => {
            format!("more than {MAX_EVENTS} YAML events ({events} seen, aliases expanded)")
        }
        BudgetBreach::ScalarBytes { total_scalar_bytes } => format!(
            "{total_scalar_bytes} bytes of text; the limit is {MAX_SCALAR_BYTES}"
        ),
        other => format!("{other:?}"),
    };
    format!("policy exceeds the parser budget: {what}")
}

fn did_you_mean(name: &str, expected: &[&'static str]) -> String {
    closest(name, expected.iter().copied())
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn type_name(ty: &str) -> Cow<'static, str> {
    match ty {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => Cow::Borrowed("an integer"),
        "f32" | "f64" => Cow::Borrowed("a number"),
        "bool" => Cow::Borrowed("true or false"),
        other => Cow::Owned(format!("a value of type {other}")),
    }
}

/// The scalar text at `location`, for "found `...`" in messages.
fn token_at(src: &str, location: Location) -> Option<String> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let rest = src.get(start..)?;
    let len = span
        .byte_len()
        .and_then(|l| usize::try_from(l).ok())
        .filter(|&l| l > 0)
        .unwrap_or_else(|| rest.find(['\n', '\r', ',', '}', ']']).unwrap_or(rest.len()));
    let token = rest.get(..len)?.trim();
    if token.is_empty() {
        return None;
    }
    // Long scalars would swamp the message.
    let shown: String = token.chars().take(40).collect();
    Some(sanitize(Cow::Owned(shown)))
}

/// Messages quote policy text; keep control characters out of the terminal.
fn sanitize(text: Cow<'_, str>) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
