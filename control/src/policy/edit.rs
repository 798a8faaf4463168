//! Targeted edits of a policy file's text: setting one backend's `state:` (what
//! `switchyard-control drain | undrain | disable | enable` do).
//!
//! The edit touches only the backend's own line — a `state: drained` added to (or removed from,
//! or changed in) its flow mapping `{ address: ..., weight: ... }`, or a `state:` line added
//! under (or removed from) its block mapping — so the operator's comments, order, quoting and
//! spacing survive. It is checked before it is handed back: the edited text must parse and
//! validate to exactly the original policy with that one backend's state changed. Layouts the
//! edit cannot handle safely (a flow mapping over several lines, an alias, a `state:` sharing its
//! line with other keys) are refused with the line to edit by hand.

use std::fmt;
use std::net::IpAddr;

use serde_saphyr::Spanned;

use super::error::Position;
use super::model::AdminState;
use super::raw::RawBackend;
use super::{parse_raw, parse_str, PolicyErrors};

/// Which backend: `NAME`, `ADDRESS`, or `POOL/NAME`, `POOL/ADDRESS` when ambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSelector {
    pub pool: Option<String>,
    pub backend: String,
}

impl BackendSelector {
    /// Parses `[POOL/]BACKEND`.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((pool, backend)) => Self {
                pool: Some(pool.to_owned()),
                backend: backend.to_owned(),
            },
            None => Self {
                pool: None,
                backend: text.to_owned(),
            },
        }
    }

    fn matches(&self, pool: &str, address: IpAddr, name: Option<&str>) -> bool {
        if self.pool.as_deref().is_some_and(|p| p != pool) {
            return false;
        }
        name == Some(self.backend.as_str())
            || self.backend.parse::<IpAddr>().is_ok_and(|ip| ip == address)
    }
}

impl fmt::Display for BackendSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            Some(pool) => write!(f, "{pool}/{}", self.backend),
            None => f.write_str(&self.backend),
        }
    }
}

/// The edit made.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEdit {
    /// The whole edited text.
    pub text: String,
    pub pool: String,
    pub address: IpAddr,
    pub name: Option<String>,
    pub from: AdminState,
    pub to: AdminState,
    /// 1-based line of the backend in the file.
    pub line: u64,
}

impl StateEdit {
    /// Whether the text changed (false when the backend already was in that state).
    #[must_use]
    pub fn changed(&self) -> bool {
        self.from != self.to
    }

    /// `pool llama-eu backend 10.0.0.2 (gpu-2)`.
    #[must_use]
    pub fn backend(&self) -> String {
        match &self.name {
            Some(n) => format!("pool {} backend {} ({n})", self.pool, self.address),
            None => format!("pool {} backend {}", self.pool, self.address),
        }
    }
}

/// Why the edit was not made.
#[derive(Debug, Clone, PartialEq)]
pub enum EditError {
    /// The file does not load as it is: it must be fixed first.
    Invalid(PolicyErrors),
    /// No backend matches.
    NotFound {
        selector: String,
        known: Vec<String>,
    },
    /// Several backends match.
    Ambiguous {
        selector: String,
        matches: Vec<String>,
    },
    /// The backend's text is laid out in a way this edit does not handle safely.
    Unsafe {
        file: String,
        line: u64,
        why: String,
    },
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(errors) => {
                write!(f, "{errors}\n{}: the policy file does not load; fix it first (nothing was changed)", errors.file())
            }
            Self::NotFound { selector, known } => write!(
                f,
                "no backend `{selector}` in the policy; backends: {}",
                known.join(", ")
            ),
            Self::Ambiguous { selector, matches } => write!(
                f,
                "`{selector}` names several backends ({}); say which as POOL/BACKEND",
                matches.join(", ")
            ),
            Self::Unsafe { file, line, why } => write!(
                f,
                "{file}:{line}: cannot edit this backend safely: {why}; edit the file by hand \
                 (set or remove `state:`) and reload, nothing was changed"
            ),
        }
    }
}

impl std::error::Error for EditError {}

fn line_of<T>(node: &Spanned<T>) -> Option<(usize, usize)> {
    let p = Position::of(node)?;
    Some((
        usize::try_from(p.line).ok()?.checked_sub(1)?,
        usize::try_from(p.column).ok()?.checked_sub(1)?,
    ))
}

/// Byte offset of the `column`-th character (0-based) of `line`.
fn byte_at(line: &str, column: usize) -> Option<usize> {
    line.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(line.len()))
        .nth(column)
}

/// Sets the `state:` of the backend `selector` names in policy `text` (`label` names the file in
/// errors). Returns the edited text (unchanged when the backend already is in `to`).
///
/// # Errors
/// The text does not load, the selector matches no backend or several, or the backend's layout
/// cannot be edited safely (see the module documentation).
pub fn set_backend_state(
    text: &str,
    label: &str,
    selector: &BackendSelector,
    to: AdminState,
) -> Result<StateEdit, EditError> {
    let policy = parse_str(text, label).map_err(EditError::Invalid)?;
    let raw = parse_raw(text).map_err(|d| EditError::Invalid(PolicyErrors::new(label, vec![d])))?;

    let mut found = Vec::new();
    let mut known = Vec::new();
    for (pool_index, pool) in policy.pools.iter().enumerate() {
        for (backend_index, b) in pool.backends.iter().enumerate() {
            let shown = match &b.name {
                Some(n) => format!("{}/{n} ({})", pool.name, b.address),
                None => format!("{}/{}", pool.name, b.address),
            };
            if selector.matches(&pool.name, b.address, b.name.as_deref()) {
                found.push((pool_index, backend_index, shown.clone()));
            }
            known.push(shown);
        }
    }
    let (pool_index, backend_index) = match found.as_slice() {
        [] => {
            return Err(EditError::NotFound {
                selector: selector.to_string(),
                known,
            })
        }
        [(p, b, _)] => (*p, *b),
        many => {
            return Err(EditError::Ambiguous {
                selector: selector.to_string(),
                matches: many.iter().map(|(_, _, s)| s.clone()).collect(),
            })
        }
    };
    let pool = &policy.pools[pool_index];
    let backend = &pool.backends[backend_index];
    // Validation keeps pools and backends in file order, so the raw node is at the same index.
    let raw_pool = raw
        .pools
        .value
        .iter()
        .find(|(name, _)| name.value == pool.name)
        .map(|(_, p)| p);
    let raw_backend = raw_pool.and_then(|p| p.value.backends.value.get(backend_index));
    let unsafe_at = |line: usize, why: &str| EditError::Unsafe {
        file: label.to_owned(),
        line: line as u64 + 1,
        why: why.to_owned(),
    };
    let Some(raw_backend) = raw_backend else {
        return Err(unsafe_at(0, "the backend's node was not found in the text"));
    };
    let Some((line, column)) = line_of(&raw_backend.value.address) else {
        return Err(unsafe_at(0, "the backend's position is unknown"));
    };
    let mut edit = StateEdit {
        text: text.to_owned(),
        pool: pool.name.clone(),
        address: backend.address,
        name: backend.name.clone(),
        from: backend.admin,
        to,
        line: line as u64 + 1,
    };
    if backend.admin == to {
        return Ok(edit);
    }
    edit.text = edit_text(text, &raw_backend.value, line, column, to)
        .map_err(|(l, why)| unsafe_at(l, &why))?;

    // The check: exactly the original policy with this one backend's state changed.
    let mut expected = policy.clone();
    expected.pools[pool_index].backends[backend_index].admin = to;
    match parse_str(&edit.text, label) {
        Ok(edited) if edited == expected => Ok(edit),
        _ => Err(unsafe_at(
            line,
            "the edited text would not be the same policy with only this backend's state changed",
        )),
    }
}

/// The text edit itself; errors carry the 0-based line and why.
fn edit_text(
    text: &str,
    raw: &RawBackend,
    line: usize,
    column: usize,
    to: AdminState,
) -> Result<String, (usize, String)> {
    if raw.address.referenced != raw.address.defined {
        return Err((line, "its address comes from an alias".into()));
    }
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let Some(current) = lines.get(line).cloned() else {
        return Err((line, "its line is not in the text".into()));
    };
    let at = byte_at(&current, column).ok_or((line, "its column is not on its line".into()))?;
    let value = to.yaml();

    // A flow mapping on one line: `- { address: 192.0.2.10, weight: 50 }  # comment`.
    if let Some(open) = current[..at].rfind('{') {
        let Some(close_rel) = current[at..].find('}') else {
            return Err((
                line,
                "its flow mapping `{ ... }` spans several lines".into(),
            ));
        };
        let close = at + close_rel;
        let inner = &current[open + 1..close];
        if inner.contains(['{', '[', '"', '\'', '#', '&', '*']) {
            return Err((
                line,
                "its flow mapping holds quotes, nested collections, anchors or comments".into(),
            ));
        }
        let mut items: Vec<String> = inner.split(',').map(|s| s.trim().to_owned()).collect();
        items.retain(|s| !s.is_empty());
        let is_state = |s: &String| s.split(':').next().is_some_and(|k| k.trim() == "state");
        match (items.iter().position(is_state), value) {
            (Some(i), Some(v)) => items[i] = format!("state: {v}"),
            (Some(i), None) => {
                items.remove(i);
            }
            (None, Some(v)) => items.push(format!("state: {v}")),
            (None, None) => {}
        }
        let pad_open = if inner.starts_with(' ') { " " } else { "" };
        let pad_close = if inner.ends_with(' ') { " " } else { "" };
        lines[line] = format!(
            "{}{{{pad_open}{}{pad_close}}}{}",
            &current[..open],
            items.join(", "),
            &current[close + 1..]
        );
        return Ok(lines.join("\n"));
    }

    // A block mapping: `- address: 192.0.2.10` or `address: ...` at the mapping's key column.
    let Some(key_at) = current[..at].rfind("address") else {
        return Err((
            line,
            "its `address` key is not on the address's line".into(),
        ));
    };
    let key_column = current[..key_at].chars().count();
    if let Some(state) = &raw.state {
        let Some((state_line, _)) = line_of(state) else {
            return Err((line, "its `state:` has no known position".into()));
        };
        let text_line = lines.get(state_line).cloned().unwrap_or_default();
        let (before_comment, comment) = match text_line.find('#') {
            Some(i) => text_line.split_at(i),
            None => (text_line.as_str(), ""),
        };
        let trimmed = before_comment.trim();
        let own_line = trimmed
            .strip_prefix("state")
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|r| r.trim() == state.value);
        if !own_line || state_line == line {
            return Err((
                state_line,
                "its `state:` shares its line with other keys".into(),
            ));
        }
        match value {
            Some(v) => {
                let indent =
                    &before_comment[..before_comment.len() - before_comment.trim_start().len()];
                let space = if comment.is_empty() { "" } else { "  " };
                lines[state_line] = format!("{indent}state: {v}{space}{comment}");
            }
            None => {
                lines.remove(state_line);
            }
        }
        return Ok(lines.join("\n"));
    }
    let Some(v) = value else {
        return Ok(text.to_owned());
    };
    lines.insert(line + 1, format!("{}state: {v}", " ".repeat(key_column)));
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "\
# The fleet.
interfaces:
  - name: uplink
    mac: 02:00:00:00:00:01
    addresses: [192.0.2.1/24]
services:
  - name: echo
    vip: 203.0.113.10
    ports: [80]
    routes:
      - { pool: echo }
  - name: two
    vip: 203.0.113.11
    ports: [80]
    routes:
      - { pool: other }
pools:
  echo:
    backends:
      - { address: 192.0.2.10, name: one }   # the first
      - address: 192.0.2.11   # block style
        weight: 50
  other:
    backends:
      - {address: 192.0.2.10,weight: 7}
";

    fn set(text: &str, sel: &str, to: AdminState) -> Result<StateEdit, EditError> {
        set_backend_state(text, "p.yaml", &BackendSelector::parse(sel), to)
    }

    #[test]
    fn flow_and_block_mappings_round_trip_keeping_comments() {
        let e = set(POLICY, "one", AdminState::Drained).unwrap();
        assert!(
            e.text.contains(
                "      - { address: 192.0.2.10, name: one, state: drained }   # the first\n"
            ),
            "{}",
            e.text
        );
        assert_eq!((e.pool.as_str(), e.line), ("echo", 20));
        let back = set(&e.text, "echo/192.0.2.10", AdminState::InService).unwrap();
        assert_eq!(back.text, POLICY);

        let e = set(POLICY, "192.0.2.11", AdminState::Disabled).unwrap();
        assert!(e.text.contains("      - address: 192.0.2.11   # block style\n        state: disabled\n        weight: 50\n"), "{}", e.text);
        let drained = set(&e.text, "192.0.2.11", AdminState::Drained).unwrap();
        assert!(
            drained.text.contains("        state: drained\n"),
            "{}",
            drained.text
        );
        let back = set(&drained.text, "192.0.2.11", AdminState::InService).unwrap();
        assert_eq!(back.text, POLICY);

        let e = set(POLICY, "other/192.0.2.10", AdminState::Drained).unwrap();
        assert!(
            e.text
                .contains("- {address: 192.0.2.10, weight: 7, state: drained}\n"),
            "{}",
            e.text
        );
        assert!(e.text.starts_with("# The fleet.\n"));
    }

    #[test]
    fn drained_keeps_health_and_disabled_leaves_scheduling() {
        use crate::compile::{compile, BackendIds, BackendState, CompileInput};
        use switchyard_table::generation::BACKEND_HEALTHY;
        let drained = set(POLICY, "one", AdminState::Drained).unwrap().text;
        let both = set(&drained, "192.0.2.11", AdminState::Disabled)
            .unwrap()
            .text;
        let policy = parse_str(&both, "p.yaml").unwrap();
        let g = compile(
            &CompileInput {
                policy: &policy,
                generation: 1,
                state: &BackendState::new(),
            },
            &mut BackendIds::new(),
        )
        .unwrap();
        // echo: one (drained), 192.0.2.11 (disabled); other: 192.0.2.10 (in service).
        let b = &g.backends;
        assert_eq!((b[0].weight, b[0].flags & BACKEND_HEALTHY != 0), (0, true));
        assert_eq!((b[1].weight, b[1].flags & BACKEND_HEALTHY != 0), (0, false));
        assert_eq!((b[2].weight, b[2].flags & BACKEND_HEALTHY != 0), (7, true));
        assert_eq!(g.pools[0].healthy_count, 0, "neither takes new flows");
        let unknown = POLICY.replace("weight: 50", "weight: 50\n        state: off");
        let e = parse_str(&unknown, "p.yaml").unwrap_err().to_string();
        assert!(
            e.contains("pools.echo.backends[1].state: unknown state `off`"),
            "{e}"
        );
    }

    #[test]
    fn refusals_say_why() {
        let e = set(POLICY, "192.0.2.10", AdminState::Drained).unwrap_err();
        assert!(
            e.to_string()
                .contains("names several backends (echo/one (192.0.2.10), other/192.0.2.10)"),
            "{e}"
        );
        let e = set(POLICY, "nope", AdminState::Drained).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no backend `nope` in the policy; backends: echo/one"),
            "{e}"
        );
        let multi = POLICY.replace(
            "      - { address: 192.0.2.10, name: one }   # the first\n",
            "      - { address: 192.0.2.10,\n          name: one }\n",
        );
        let e = set(&multi, "one", AdminState::Drained).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.yaml:20: cannot edit this backend safely: its flow mapping"),
            "{e}"
        );
        let broken = POLICY.replace("weight: 50", "weight: 70000");
        assert!(matches!(
            set(&broken, "one", AdminState::Drained),
            Err(EditError::Invalid(_))
        ));
        // Already in that state: no change.
        let e = set(POLICY, "one", AdminState::InService).unwrap();
        assert!(!e.changed() && e.text == POLICY);
    }
}
