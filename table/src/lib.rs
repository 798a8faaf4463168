//! The shared-memory contract between `switchyard-control` and `switchyard-dataplane`.
#![deny(unsafe_code)]

#[cfg(any(test, feature = "test-support"))]
pub mod builder;
pub mod generation;
pub mod lpm;
#[allow(unsafe_code)]
pub mod shm;
