//! The shared-memory contract between `switchyard-control` and `switchyard-dataplane`.
#![deny(unsafe_code)]

pub mod generation;
pub mod lpm;
#[allow(unsafe_code)]
pub mod shm;
