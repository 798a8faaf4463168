//! Policy model, parsing and validation.
