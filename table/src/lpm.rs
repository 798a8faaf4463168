//! Longest-prefix match tables.
