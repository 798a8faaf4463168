//! Zero-copy packet header views (filled in by the wire work).
