//! Switchyard data plane: the appliance that owns NIC queues and forwards packets.
//!
//! Only [`dpdk`] calls into DPDK and holds `unsafe` code; everything else is safe Rust that
//! works on byte slices, so the pipeline can be tested and fuzzed without DPDK.
#![deny(unsafe_code)]

#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
pub mod wire;

#[cfg(feature = "dpdk")]
pub mod appliance;
pub mod control_channel;
pub mod flow;
#[cfg(feature = "dpdk")]
pub mod forward;
pub mod pipeline;
pub mod query;
#[cfg(feature = "dpdk")]
pub mod run;
#[cfg(feature = "dpdk")]
pub mod runner;
pub mod settings;
pub mod stats;
pub mod swap;
