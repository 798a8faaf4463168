//! Switchyard control plane: owns the policy and keeps the data plane's tables current.
//! It never links DPDK; it talks to the data plane only through shared memory.
#![deny(unsafe_code)]

pub mod compile;
pub mod daemon;
pub mod events;
pub mod fleet;
pub mod instance;
pub mod maglev;
pub mod policy;
pub mod publish;
pub mod rollout;
