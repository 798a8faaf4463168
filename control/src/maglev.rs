//! Maglev consistent-hash lookup tables.
