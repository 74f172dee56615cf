//! lamina-file: the file backend of lamina, one layer above `lamina-core`. It implements the
//! core's backend contract (`lamina_core::io`) on a Linux directory: [`FileStorage`] keeps a
//! log's segments as files written with positioned writes and made durable with `fdatasync`,
//! with a directory fsync after creates and deletes, under an exclusive lock on the directory;
//! [`FileObjects`] keeps named objects (checkpoint manifests and snapshot parts), published
//! atomically by write-to-temp, fsync, rename or link, directory fsync; [`FileReader`] is a
//! read-only view of a log directory, without the lock, for a reader that follows the log while
//! its owner writes it. The std runtime (`lamina`) drives the core's pipeline over these; nothing
//! here knows the record format.
//!
//! Operations are blocking: `submit` does the work at once and queues its completion, which the
//! next `poll_completion` reports. Errors ([`FileError`]) name the operation and the path.
//!
//! Segments are written by overwriting space that already exists, never by growing a file: a
//! commit that extends a file makes `fdatasync` journal the new size. With
//! [`Options::prepare_size`] each segment is zero-filled before its header; with
//! [`Options::prepare_ahead`] a background thread does that ahead of need into spare files
//! (`spare-{n:016x}.tmp`), which a create takes (the header is written and synced under the
//! spare's name, then the file is renamed to the segment's); with [`Options::recycle`] a deleted
//! segment's file is kept as a spare. A recycled file still holds its old records; the new
//! segment's header has a fresh nonce, and every frame's checksum is seeded with it, so they
//! read as a clean end. [`FileStorage::stats`] counts creates that found no spare ready.
//!
//! Whole pages: a write that ends inside a page of a file whose page is not in the page cache
//! makes the kernel read the page first (measured here, `benches/commit.rs`: the first commit
//! into such a page ~230-240 µs, against ~140-150 µs written whole; a cached page costs the same
//! either way). With [`Options::pad_to_page`] the furthest write into a segment is padded with
//! zeros to its page's end; writes are never widened backwards over bytes already durable.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod direct;
mod error;
mod fsutil;
mod lock;
pub mod names;
mod objects;
mod reader;
mod segments;
mod spares;

pub use error::{FileError, Op, failure_of};
pub use objects::{FileObjects, StagedObject, WholeObject};
pub use reader::FileReader;
pub use segments::{FileStorage, Options, Stats};
