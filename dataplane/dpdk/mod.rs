//! DPDK bindings and safe wrappers.
