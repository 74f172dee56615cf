//! Shared helpers of lamina's cross-crate tests: a deterministic simulated device that loses
//! unsynced writes at a crash, tears sectors and injects faults.

pub mod sim;
