//! lamina-core: the bottom layer of lamina, the durability layer of a streaming engine.
//!
//! It is `#![no_std]` and never allocates: every buffer is the caller's, every capacity is a
//! const generic. It holds pure logic in the sans-I/O style: the on-disk format (record frames and
//! segment headers, see `FORMAT.md`), an incremental decoder that tells a clean end from a torn
//! tail from corruption, the group-commit pipeline as a state machine that asks for I/O and is told
//! when it completes, the backend contract that the I/O crates implement, and a lock-free SPSC
//! queue. The backends (`lamina-file`, `lamina-uring`, `lamina-object-store`) and the std runtime
//! (`lamina`) build on it; nothing here knows a backend.
#![no_std]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![deny(unsafe_code)]

pub mod changelog;
pub mod checkpoint;
pub mod commit;
pub mod crc;
pub mod decode;
pub mod drive;
pub mod eio;
pub mod io;
pub mod lsn;
pub mod manifest;
pub mod part;
pub mod record;
pub mod recover;
pub mod segment;
pub mod spsc;
mod sync;

pub use lsn::{Lsn, SegmentId};
