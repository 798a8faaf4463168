//! Diagnostics: what is wrong with a policy, and where.

use std::fmt;

use serde_saphyr::{Location, Spanned};

/// A line and column in the policy source, both 1-based, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    /// The position the YAML library recorded, if it recorded one.
    #[must_use]
    pub fn from_location(location: Location) -> Option<Self> {
        (location.line() != 0).then(|| Position {
            line: location.line(),
            column: location.column(),
        })
    }

    /// Where a deserialized node was used (for an alias: the alias, not the anchor).
    #[must_use]
    pub fn of<T>(node: &Spanned<T>) -> Option<Self> {
        Self::from_location(node.referenced)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the source, when known.
    pub position: Option<Position>,
    /// Path of the offending node, e.g. `services[1].routes[0].pool`; `None` for syntax errors.
    pub path: Option<String>,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic with a message only.
    #[must_use]
    pub fn new(position: Option<Position>, path: Option<String>, message: String) -> Self {
        Self {
            position,
            path,
            message,
        }
    }
}

impl Diagnostic {
    /// Path and message, with control characters escaped: a message quotes values from the
    /// file, and a newline in one must not start a line that reads like another problem.
    fn write_body(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write_escaped(f, path)?;
            f.write_str(": ")?;
        }
        write_escaped(f, &self.message)
    }
}

/// `text` with control characters (newlines included) written as escapes.
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

impl fmt::Display for Diagnostic {
    /// `LINE:COL: PATH: MESSAGE`, leaving out what is not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(position) = self.position {
            write!(f, "{position}: ")?;
        }
        self.write_body(f)
    }
}

/// Every problem found in one policy file.
///
/// Displays one problem per line as `FILE:LINE:COL: PATH: MESSAGE` (or `FILE: ...` where no
/// position is known), sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    file: String,
    diagnostics: Vec<Diagnostic>,
}

impl PolicyErrors {
    /// Collects diagnostics for `file` (a label: a path or `<stdin>`), ordered by position.
    #[must_use]
    pub fn new(file: impl Into<String>, mut diagnostics: Vec<Diagnostic>) -> Self {
        // Unpositioned ones (file-level problems) go first; the sort is stable, so problems
        // at one node keep the order in which the checks found them.
        diagnostics.sort_by_key(|d| d.position);
        Self {
            file: file.into(),
            diagnostics,
        }
    }

    /// The file label the diagnostics refer to.
    #[must_use]
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The problems, ordered by position.
    #[must_use]
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Number of problems.
    #[must_use]
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    /// True when there are none (never the case for an error returned by this module).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&self.file)?;
            if let Some(position) = diagnostic.position {
                write!(f, ":{position}")?;
            }
            f.write_str(": ")?;
            diagnostic.write_body(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}
