//! Shared helpers of lamina's cross-crate tests: a deterministic simulated device that loses
//! unsynced writes at a crash, tears sectors and injects faults, and helpers to drive and
//! recover a log on it.

pub mod harness;
pub mod sim;
