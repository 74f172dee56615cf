//! lamina-file: the file backend of lamina, one layer above `lamina-core`. It implements the
//! core's backend contract (`lamina_core::io`) on a Linux directory: [`FileStorage`] keeps a
//! log's segments as files written with positioned writes and made durable with `fdatasync`,
//! with a directory fsync after creates and deletes, under an exclusive lock on the directory;
//! [`FileObjects`] keeps named objects (checkpoint manifests and snapshot parts), published
//! atomically by write-to-temp, fsync, rename or link, directory fsync. The std runtime (`lamina`)
//! drives the core's pipeline over these; nothing here knows the record format.
//!
//! Operations are blocking: `submit` does the work at once and queues its completion, which the
//! next `poll_completion` reports. Errors ([`FileError`]) name the operation and the path.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
mod fsutil;
mod lock;
pub mod names;
mod objects;
mod segments;
mod spares;

pub use error::{FileError, Op};
pub use objects::FileObjects;
pub use segments::{FileStorage, Options, Stats};
