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
pub mod capture;
pub mod check;
pub mod control_channel;
pub mod flow;
#[cfg(feature = "dpdk")]
pub mod forward;
#[cfg(feature = "dpdk")]
pub mod launch;
pub mod neighbour;
pub mod pipeline;
#[cfg(feature = "dpdk")]
pub mod poll;
pub mod query;
pub mod settings;
pub mod stats;
pub mod swap;
pub mod talkers;
pub mod telemetry;
