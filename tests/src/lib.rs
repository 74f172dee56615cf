//! Shared helpers of lamina's cross-crate tests: a deterministic simulated device that loses
//! unsynced writes at a crash, tears sectors and injects faults, helpers to drive and recover a
//! log on it, and a shared form of it ([`shared`]) that readers on other threads see; and a
//! fault-injecting wrapper around a real backend ([`faulty`]) that fails the Nth write or sync and
//! undoes unsynced writes at a simulated power cut.
//!
//! And what the other crates' tests share: the counting allocator of the allocation tests
//! ([`alloc`]), hang guards ([`hang`]), a log's segment files ([`files`]), a backend with a
//! test's hooks around it ([`hook`]), the core's pipeline over a real backend ([`pipeline`]) and
//! the log scenarios each backend's own tests run with it (`backend_log`), and the child
//! processes the SIGKILL tests kill (`kill`); the last two on unix.

pub mod alloc;
#[cfg(unix)]
pub mod backend_log;
pub mod faulty;
pub mod files;
pub mod hang;
pub mod harness;
pub mod hook;
#[cfg(unix)]
pub mod kill;
pub mod pipeline;
pub mod shared;
pub mod sim;
pub mod sim_objects;
