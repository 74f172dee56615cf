//! The Ring 0 changelog: each core's state mutations (puts, deletes) and checkpoint barriers, as
//! variable-length [`Entry`] values queued without allocation in a [`ByteRing`] from the core's
//! thread (Ring 0) to the drainer (Ring 1), which appends each entry's encoding to the core's WAL.
//!
//! ```
//! use lamina_core::changelog::{ByteRing, Entry, PushError};
//!
//! let mut ring: ByteRing<64> = ByteRing::new();
//! let (mut producer, mut consumer) = ring.split();
//! producer.push(&Entry::Put { key: b"k", value: b"v" }).unwrap();
//! producer.push(&Entry::Barrier { epoch: 1 }).unwrap();
//! producer.push(&Entry::Barrier { epoch: 2 }).unwrap();
//! // Full (52 of 64 bytes used): the entry stays with the caller, nothing was queued.
//! let big = [0u8; 10];
//! assert!(matches!(
//!     producer.push(&Entry::Put { key: b"k", value: &big }),
//!     Err(PushError::Full { .. })
//! ));
//! let frame = consumer.peek().unwrap();
//! assert_eq!(frame.entry(), Ok(Entry::Put { key: b"k", value: b"v" }));
//! frame.release();
//! ```

mod entry;
mod ring;

pub use entry::{Entry, EntryError, HEADER_LEN, OP_BARRIER, OP_DELETE, OP_PUT};
pub use ring::{ByteRing, Consumer, Frame, Producer, PushError};

#[cfg(test)]
mod tests;
