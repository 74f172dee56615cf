//! [`Entry`]: one changelog entry and its wire encoding, the bytes a ring frame carries and a
//! WAL record's payload holds (see `core/FORMAT.md`, "Changelog entry").

use core::fmt;

/// Bytes before the key: the operation (1) and the key length (4, little-endian).
pub const HEADER_LEN: usize = 5;

/// The operation byte of a put.
pub const OP_PUT: u8 = 0;
/// The operation byte of a delete.
pub const OP_DELETE: u8 = 1;
/// The operation byte of a barrier.
pub const OP_BARRIER: u8 = 2;

/// The length of a barrier's value: its epoch, a little-endian `u64`.
const EPOCH_LEN: usize = 8;

/// One mutation of a core's state, or a checkpoint barrier: what replay needs to rebuild the
/// state from the log alone (the key and value bytes themselves, never a reference to memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry<'a> {
    /// `key` now maps to `value`.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// `key` maps to nothing.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Checkpoint epoch `epoch` starts here: the entries before it belong to the epochs before.
    Barrier {
        /// The epoch that starts.
        epoch: u64,
    },
}

/// Why bytes are not a changelog entry. Bytes read back from a log are untrusted: each damage has
/// its own value, never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Truncated {
        /// How many bytes there were.
        len: usize,
    },
    /// An operation byte that is not put, delete or barrier.
    UnknownOp {
        /// The byte.
        op: u8,
    },
    /// The key length runs past the end of the bytes.
    KeyPastEnd {
        /// The key length the header claims.
        key_len: u32,
        /// The bytes after the header.
        available: usize,
    },
    /// A delete with bytes after its key, or a barrier with a key or a value that is not
    /// 8 bytes.
    BadShape {
        /// The operation byte.
        op: u8,
        /// The key length.
        key_len: usize,
        /// The value length.
        value_len: usize,
    },
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EntryError::Truncated { len } => write!(
                f,
                "changelog entry of {len} bytes is shorter than its {HEADER_LEN}-byte header"
            ),
            EntryError::UnknownOp { op } => write!(f, "unknown changelog operation {op}"),
            EntryError::KeyPastEnd { key_len, available } => write!(
                f,
                "changelog key of {key_len} bytes runs past the {available} bytes after the header"
            ),
            EntryError::BadShape {
                op,
                key_len,
                value_len,
            } => write!(
                f,
                "changelog operation {op} cannot have a {key_len}-byte key and a \
                 {value_len}-byte value"
            ),
        }
    }
}

impl core::error::Error for EntryError {}

impl<'a> Entry<'a> {
    /// The operation byte.
    #[must_use]
    pub const fn op(&self) -> u8 {
        match self {
            Entry::Put { .. } => OP_PUT,
            Entry::Delete { .. } => OP_DELETE,
            Entry::Barrier { .. } => OP_BARRIER,
        }
    }

    /// The key bytes (empty for a barrier).
    #[must_use]
    pub const fn key(&self) -> &'a [u8] {
        match *self {
            Entry::Put { key, .. } | Entry::Delete { key } => key,
            Entry::Barrier { .. } => &[],
        }
    }

    /// The encoded length, or `None` if the key is too long for its 32-bit length field or the
    /// total overflows `usize`.
    #[must_use]
    pub fn encoded_len(&self) -> Option<usize> {
        u32::try_from(self.key().len()).ok()?;
        let body = match *self {
            Entry::Put { key, value } => key.len().checked_add(value.len())?,
            Entry::Delete { key } => key.len(),
            Entry::Barrier { .. } => EPOCH_LEN,
        };
        HEADER_LEN.checked_add(body)
    }

    /// Hands the encoding to `write` in pieces, in order: header, key, value. The pieces
    /// concatenated are [`Self::encoded_len`] bytes; the caller checked that length first, so the
    /// key length fits its field (it is written saturated otherwise).
    pub fn emit_pieces(&self, mut write: impl FnMut(&[u8])) {
        let key = self.key();
        let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes();
        let [k0, k1, k2, k3] = key_len;
        write(&[self.op(), k0, k1, k2, k3]);
        match *self {
            Entry::Put { key, value } => {
                write(key);
                write(value);
            }
            Entry::Delete { key } => write(key),
            Entry::Barrier { epoch } => write(&epoch.to_le_bytes()),
        }
    }

    /// Writes the encoding to the front of `buf` and returns its length, or `None` (nothing
    /// meaningful written) if `buf` is too short or the entry cannot be encoded.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.encoded_len()?;
        let mut rest = buf.get_mut(..len)?;
        self.emit_pieces(|piece| {
            // Cannot fail: the pieces add up to `len` bytes.
            if let Some((head, tail)) = core::mem::take(&mut rest).split_at_mut_checked(piece.len())
            {
                head.copy_from_slice(piece);
                rest = tail;
            }
        });
        Some(len)
    }

    /// Parses an encoded entry; the whole of `bytes` is the entry. After `Ok`, the key and value
    /// are views into `bytes`.
    ///
    /// # Errors
    /// An [`EntryError`] for each way the bytes can be malformed.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EntryError> {
        let Some((&[op, k0, k1, k2, k3], rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(EntryError::Truncated { len: bytes.len() });
        };
        let key_len = u32::from_le_bytes([k0, k1, k2, k3]);
        if op > OP_BARRIER {
            return Err(EntryError::UnknownOp { op });
        }
        let Some((key, value)) = usize::try_from(key_len)
            .ok()
            .and_then(|k| rest.split_at_checked(k))
        else {
            return Err(EntryError::KeyPastEnd {
                key_len,
                available: rest.len(),
            });
        };
        let bad_shape = EntryError::BadShape {
            op,
            key_len: key.len(),
            value_len: value.len(),
        };
        match op {
            OP_PUT => Ok(Entry::Put { key, value }),
            OP_DELETE if value.is_empty() => Ok(Entry::Delete { key }),
            OP_BARRIER if key.is_empty() => match <[u8; EPOCH_LEN]>::try_from(value) {
                Ok(epoch) => Ok(Entry::Barrier {
                    epoch: u64::from_le_bytes(epoch),
                }),
                Err(_) => Err(bad_shape),
            },
            _ => Err(bad_shape),
        }
    }
}

impl fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Put { key, value } => {
                write!(f, "put key {} bytes value {} bytes", key.len(), value.len())
            }
            Entry::Delete { key } => write!(f, "delete key {} bytes", key.len()),
            Entry::Barrier { epoch } => write!(f, "barrier epoch {epoch}"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn encode(entry: &Entry<'_>) -> Vec<u8> {
        let mut buf = std::vec![0; entry.encoded_len().unwrap()];
        assert_eq!(entry.emit(&mut buf), Some(buf.len()));
        buf
    }

    #[test]
    fn put_encoding_is_op_key_len_key_value() {
        let bytes = encode(&Entry::Put {
            key: b"ab",
            value: b"xyz",
        });
        assert_eq!(bytes, [0, 2, 0, 0, 0, b'a', b'b', b'x', b'y', b'z']);
    }

    #[test]
    fn barrier_encoding_is_epoch_as_value() {
        let bytes = encode(&Entry::Barrier { epoch: 0x0102 });
        assert_eq!(bytes, [2, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn emit_into_short_buffer_is_none() {
        let entry = Entry::Delete { key: b"key" };
        let mut buf = [0u8; 7];
        assert_eq!(entry.emit(&mut buf), None);
    }

    #[test]
    fn short_bytes_are_truncated() {
        assert_eq!(
            Entry::parse(&[0, 1, 0]),
            Err(EntryError::Truncated { len: 3 })
        );
        assert_eq!(Entry::parse(&[]), Err(EntryError::Truncated { len: 0 }));
    }

    #[test]
    fn unknown_op_is_refused() {
        assert_eq!(
            Entry::parse(&[3, 0, 0, 0, 0]),
            Err(EntryError::UnknownOp { op: 3 })
        );
    }

    #[test]
    fn key_len_past_end_is_refused() {
        assert_eq!(
            Entry::parse(&[0, 0xff, 0xff, 0xff, 0xff, 1]),
            Err(EntryError::KeyPastEnd {
                key_len: u32::MAX,
                available: 1
            })
        );
    }

    #[test]
    fn delete_with_value_bytes_is_bad_shape() {
        assert_eq!(
            Entry::parse(&[1, 1, 0, 0, 0, b'k', b'v']),
            Err(EntryError::BadShape {
                op: 1,
                key_len: 1,
                value_len: 1
            })
        );
    }

    #[test]
    fn barrier_with_short_epoch_or_key_is_bad_shape() {
        assert!(matches!(
            Entry::parse(&[2, 0, 0, 0, 0, 1, 2, 3]),
            Err(EntryError::BadShape { op: 2, .. })
        ));
        assert!(matches!(
            Entry::parse(&[2, 1, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0]),
            Err(EntryError::BadShape { op: 2, .. })
        ));
    }

    fn arb_entry() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>, u64)> {
        (
            0u8..3,
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<u64>(),
        )
    }

    fn build<'a>(op: u8, key: &'a [u8], value: &'a [u8], epoch: u64) -> Entry<'a> {
        match op {
            0 => Entry::Put { key, value },
            1 => Entry::Delete { key },
            _ => Entry::Barrier { epoch },
        }
    }

    // Safe code only: Miri (see scripts/test.sh) skips these.
    proptest! {
        #[cfg_attr(miri, ignore)]
        #[test]
        fn emit_then_parse_round_trips((op, key, value, epoch) in arb_entry()) {
            let entry = build(op, &key, &value, epoch);
            let bytes = encode(&entry);
            prop_assert_eq!(Entry::parse(&bytes), Ok(entry));
        }

        #[cfg_attr(miri, ignore)]
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Whatever parses re-encodes to the same bytes: the encoding is canonical.
            if let Ok(entry) = Entry::parse(&bytes) {
                prop_assert_eq!(encode(&entry), bytes);
            }
        }
    }
}
